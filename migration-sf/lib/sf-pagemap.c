/*
 * snowflock: which pages of this process's memory were never populated.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sf-pagemap.h"

#define PM_PRESENT (1ull << 63)
#define PM_SWAPPED (1ull << 62)
#define PM_PFN     ((1ull << 55) - 1)
#define HUGE_PAGES 512 /* 4 KiB pages in a 2 MiB huge page */
/* Entries read per pread(): 512 KiB of entries, 2 GiB of memory. */
#define PM_CHUNK 65536

static uint64_t entry_of(int fd, const void *p, long psz)
{
    uint64_t e = 0;

    if (pread(fd, &e, sizeof(e), (uintptr_t)p / psz * sizeof(e)) != sizeof(e)) {
        return 0;
    }
    return e;
}

/*
 * The frames of the kernel's shared zero pages, as this process sees them
 * (0 when it may not see frame numbers: they need CAP_SYS_ADMIN).  A read
 * of memory never written maps the zero page (or, in a THP region, the
 * huge zero page) without populating anything: such a page is present in
 * the page tables and still zero.  Found by reading fresh mappings of our
 * own, then dropping them.
 */
static void zero_frames(int fd, long psz, uint64_t *pfn, uint64_t *huge)
{
    size_t len = 2 * HUGE_PAGES * psz;
    uint8_t *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t *h;
    uint64_t e;

    *pfn = *huge = 0;
    if (m == MAP_FAILED) {
        return;
    }
    h = (uint8_t *)(((uintptr_t)m + HUGE_PAGES * psz - 1) &
                    ~((uintptr_t)HUGE_PAGES * psz - 1));
    madvise(m, len, MADV_NOHUGEPAGE);
    (void)*(volatile uint8_t *)m;
    e = entry_of(fd, m, psz);
    *pfn = e & PM_PRESENT ? e & PM_PFN : 0;
    madvise(m, len, MADV_DONTNEED);
    madvise(h, HUGE_PAGES * psz, MADV_HUGEPAGE);
    (void)*(volatile uint8_t *)h;
    e = entry_of(fd, h, psz);
    /* Only a huge zero page sits 2 MiB aligned and is not the small one. */
    *huge =
        e & PM_PRESENT && (e & PM_PFN) != *pfn && (e & PM_PFN) % HUGE_PAGES == 0
            ? e & PM_PFN
            : 0;
    munmap(m, len);
}

static bool is_zero_frame(uint64_t e, uint64_t pfn, uint64_t huge)
{
    uint64_t f = e & PM_PFN;

    return (e & PM_PRESENT) && f &&
           (f == pfn || (huge && f >= huge && f < huge + HUGE_PAGES));
}

int64_t sf_pagemap_absent(const void *addr, uint64_t npages, uint64_t *bits)
{
    uint64_t zero_pfn, huge_pfn;
    long psz = sysconf(_SC_PAGESIZE);
    uint64_t *ent;
    int64_t absent = 0;
    uint64_t done = 0;
    int fd;

    if ((uintptr_t)addr % psz) {
        return -EINVAL;
    }
    fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    zero_frames(fd, psz, &zero_pfn, &huge_pfn);
    ent = g_new(uint64_t, MIN(npages, PM_CHUNK) + 1);
    while (done < npages) {
        uint64_t n = MIN(npages - done, PM_CHUNK);
        off_t off = ((uintptr_t)addr / psz + done) * sizeof(uint64_t);
        ssize_t got = pread(fd, ent, n * sizeof(uint64_t), off);

        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0 || got % sizeof(uint64_t)) {
            absent = got < 0 ? -errno : -EIO;
            break;
        }
        n = got / sizeof(uint64_t);
        for (uint64_t i = 0; i < n; i++) {
            if (!(ent[i] & (PM_PRESENT | PM_SWAPPED)) ||
                is_zero_frame(ent[i], zero_pfn, huge_pfn)) {
                uint64_t p = done + i;

                bits[p / 64] |= 1ull << (p % 64);
                absent++;
            }
        }
        done += n;
    }
    g_free(ent);
    close(fd);
    return absent;
}
