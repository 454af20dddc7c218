/*
 * Unit tests for the zero map: which pages a frozen image holds as zero
 * (sf-pagemap.c), the ZEROMAP messages that say so (sf-zeromap.c,
 * sf-wire.c), and the memory source that serves them (sf-pagesrc-mem.c).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sf-pagemap.h"
#include "sf-pagesrc.h"
#include "sf-wire.h"
#include "sf-zeromap.h"

#define PAGE 4096u

static inline bool bit(const uint64_t *bits, uint64_t i)
{
    return bits[i / 64] >> (i % 64) & 1;
}

static inline void set(uint64_t *bits, uint64_t i)
{
    bits[i / 64] |= 1ull << (i % 64);
}

/* Decode every body of z back into one bitmap per block. */
static void expand(const SfZeroMap *z, uint32_t nblocks, const uint64_t *npages,
                   uint64_t **out)
{
    uint64_t pages = 0;

    for (guint i = 0; i < z->bodies->len; i++) {
        gsize len;
        const uint8_t *b = g_bytes_get_data(z->bodies->pdata[i], &len);
        const char *why = NULL;
        SfMsgZeroMap m;

        g_assert_cmpint(sf_wire_zeromap_decode(b, len, &m, &why), ==, 0);
        /* Only the last message is flagged LAST. */
        g_assert_cmpuint(m.flags, ==,
                         i + 1 == z->bodies->len ? SF_ZEROMAP_LAST : 0);
        g_assert_cmpuint(m.nruns, <=, SF_WIRE_ZEROMAP_RUNS);
        for (uint32_t r = 0; r < m.nruns; r++) {
            uint64_t p, n;

            g_assert_cmpuint(m.block, <, nblocks);
            sf_wire_zeromap_run(&m, r, &p, &n);
            g_assert_cmpuint(p + n, <=, npages[m.block]);
            for (uint64_t k = p; k < p + n; k++) {
                g_assert_false(bit(out[m.block], k));
                set(out[m.block], k);
            }
            pages += n;
        }
    }
    g_assert_cmpuint(pages, ==, z->pages);
}

/* Random maps of every density, over several blocks: decoding what the
 * builder wrote gives back exactly the bitmap, in maximal runs. */
static void test_build_roundtrip(void)
{
    GRand *r = g_rand_new_with_seed(0x2e70);

    for (int round = 0; round < 200; round++) {
        uint32_t nblocks = g_rand_int_range(r, 1, 4);
        uint64_t npages[4], *bits[4], *got[4];
        const uint64_t *cbits[4];
        uint64_t runs = 0;
        SfZeroMap *z;

        for (uint32_t b = 0; b < nblocks; b++) {
            /* Sizes that are and are not multiples of 64. */
            npages[b] = g_rand_int_range(r, 0, 5000);
            bits[b] = g_new0(uint64_t, npages[b] / 64 + 1);
            got[b] = g_new0(uint64_t, npages[b] / 64 + 1);
            cbits[b] = round % 7 == 3 && b == 0 ? NULL : bits[b];
            if (!cbits[b]) {
                continue;
            }
            /* Runs of random length, some crossing whole words. */
            for (uint64_t p = 0; p < npages[b];) {
                uint64_t len = g_rand_int_range(r, 1, round % 2 ? 300 : 5);
                bool zero = g_rand_boolean(r);

                for (uint64_t k = p; k < MIN(p + len, npages[b]); k++) {
                    if (zero) {
                        set(bits[b], k);
                    }
                }
                p += len;
            }
            for (uint64_t p = 0; p < npages[b]; p++) {
                if (bit(bits[b], p) && (p == 0 || !bit(bits[b], p - 1))) {
                    runs++;
                }
            }
        }
        z = sf_zeromap_build(nblocks, cbits, npages);
        expand(z, nblocks, npages, got);
        g_assert_cmpuint(z->runs, ==, runs);
        for (uint32_t b = 0; b < nblocks; b++) {
            if (cbits[b]) {
                g_assert_cmpmem(got[b], (npages[b] / 64 + 1) * 8, bits[b],
                                (npages[b] / 64 + 1) * 8);
            }
            g_free(bits[b]);
            g_free(got[b]);
        }
        sf_zeromap_free(z);
    }
    g_rand_free(r);
}

/* More runs than one message takes: split, in order, the last LAST. */
static void test_build_split(void)
{
    uint64_t npages = 3 * SF_WIRE_ZEROMAP_RUNS * 2 + 5;
    uint64_t *bits = g_new0(uint64_t, npages / 64 + 1);
    const uint64_t *cbits[1] = { bits };
    SfZeroMap *z;

    for (uint64_t p = 0; p < npages; p += 2) {
        set(bits, p);
    }
    z = sf_zeromap_build(1, cbits, &npages);
    g_assert_cmpuint(z->runs, ==, npages / 2 + 1);
    g_assert_cmpuint(z->bodies->len, ==, 4);
    {
        uint64_t *got = g_new0(uint64_t, npages / 64 + 1);

        expand(z, 1, &npages, &got);
        g_assert_cmpmem(got, (npages / 64 + 1) * 8, bits,
                        (npages / 64 + 1) * 8);
        g_free(got);
    }
    sf_zeromap_free(z);
    g_free(bits);
}

/* Nothing known: one message, no runs, LAST. */
static void test_build_empty(void)
{
    uint64_t npages[2] = { 100, 0 };
    const uint64_t *cbits[2] = { NULL, NULL };
    SfZeroMap *z = sf_zeromap_build(2, cbits, npages);
    gsize len;
    const uint8_t *b = g_bytes_get_data(z->bodies->pdata[0], &len);
    SfMsgZeroMap m;
    const char *why;

    g_assert_cmpuint(z->bodies->len, ==, 1);
    g_assert_cmpuint(z->pages, ==, 0);
    g_assert_cmpint(sf_wire_zeromap_decode(b, len, &m, &why), ==, 0);
    g_assert_cmpuint(m.nruns, ==, 0);
    g_assert_cmpuint(m.flags, ==, SF_ZEROMAP_LAST);
    sf_zeromap_free(z);
}

/* What a receiver must refuse before placing a single page. */
static void test_decode_rejects(void)
{
    static const struct {
        const char *name;
        uint32_t nruns, flags;
        uint32_t runs[6];
        int extra; /* bytes added to the length nruns implies */
    } cases[] = {
        { "ok", 3, 1, { 0, 1, 5, 2, 7, 100 }, 0 },
        { "adjacent-ok", 2, 0, { 0, 4, 4, 4 }, 0 },
        { "unknown-flag", 1, 2, { 0, 1 }, 0 },
        { "empty-run", 1, 0, { 3, 0 }, 0 },
        { "overlap", 2, 0, { 0, 4, 3, 4 }, 0 },
        { "descending", 2, 0, { 10, 1, 2, 1 }, 0 },
        { "past-2^32", 1, 0, { 0xfffffff0u, 0x20 }, 0 },
        { "count-short", 2, 0, { 0, 1, 3, 1 }, -8 },
        { "count-long", 1, 0, { 0, 1 }, 8 },
    };

    for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
        uint8_t buf[SF_WIRE_ZEROMAP_LEN + 8 * 4] = { 0 };
        SfMsgZeroMap m = { .block = 1,
                           .nruns = cases[i].nruns,
                           .flags = cases[i].flags };
        const char *why = NULL;
        size_t len;
        int ret;

        sf_wire_zeromap_encode(buf, &m);
        for (uint32_t r = 0; r < 3; r++) {
            sf_wire_zeromap_put_run(buf + SF_WIRE_ZEROMAP_LEN, r,
                                    cases[i].runs[2 * r],
                                    cases[i].runs[2 * r + 1]);
        }
        len = SF_WIRE_ZEROMAP_LEN + cases[i].nruns * 8 + cases[i].extra;
        ret = sf_wire_zeromap_decode(buf, len, &m, &why);
        g_test_message("%s: %d %s", cases[i].name, ret, why ? why : "");
        if (g_str_has_suffix(cases[i].name, "ok")) {
            g_assert_cmpint(ret, ==, 0);
        } else {
            g_assert_cmpint(ret, ==, -SF_WERR_PROTO);
            g_assert_nonnull(why);
        }
    }
}

/*
 * The scan across a real fork(), as the page server sees the frozen
 * image: pages written before the fork are present in the child, pages
 * never touched, or given back with MADV_DONTNEED (what QEMU does with
 * a range the guest reported free), are absent.  A write by the parent
 * after the fork changes nothing in the child.
 */
static void test_pagemap_across_fork(void)
{
    const uint64_t npages = 4096;
    uint8_t *mem = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int pipefd[2], status;
    pid_t pid;

    g_assert_true(mem != MAP_FAILED);
    /* No huge pages: a write must populate exactly its own page. */
    madvise(mem, npages * PAGE, MADV_NOHUGEPAGE);
    for (uint64_t p = 0; p < npages; p++) {
        if (p % 3 == 0 || (p >= 1000 && p < 1500)) {
            mem[p * PAGE + 17] = 1;
        }
    }
    /* Read, never written: the zero page is mapped, still zero. */
    for (uint64_t p = 3001; p < 3100; p += 3) {
        g_assert_cmpuint(*(volatile uint8_t *)(mem + p * PAGE), ==, 0);
    }
    /* Freed by the "guest": discarded like a reported range. */
    g_assert_cmpint(madvise(mem + 1100 * PAGE, 200 * PAGE, MADV_DONTNEED), ==,
                    0);
    g_assert_cmpint(pipe(pipefd), ==, 0);
    pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        SfBlockInfo bi = { .length = npages * PAGE, .page_size = PAGE };
        void *hosts[1] = { mem };
        SfPageSource *src;
        const uint64_t *bits;
        uint8_t ok = 1;
        int64_t n;

        close(pipefd[0]);
        usleep(100 * 1000); /* let the parent write after the fork */
        src = sf_pagesrc_mem_new(&bi, hosts, 1);
        n = sf_pagesrc_mem_scan_absent(src, 0);
        bits = sf_pagesrc_zero_map(src, 0);
        for (uint64_t p = 0; p < npages && bits; p++) {
            bool written = (p % 3 == 0 || (p >= 1000 && p < 1500)) &&
                           !(p >= 1100 && p < 1300);
            /* Frame numbers (to tell the zero page) need root. */
            bool read_only = p >= 3001 && p < 3100 && p % 3 == 1;

            if (read_only && geteuid() != 0) {
                continue;
            }
            if (bit(bits, p) == written) {
                ok = 0;
            }
        }
        ok = ok && bits && n > 0;
        if (write(pipefd[1], &ok, 1) != 1) {
            _exit(2);
        }
        _exit(0);
    }
    close(pipefd[1]);
    /* The parent runs on and touches everything: the child's view holds. */
    for (uint64_t p = 0; p < npages; p++) {
        mem[p * PAGE + 9] = 2;
    }
    {
        uint8_t ok = 0;

        g_assert_cmpint(read(pipefd[0], &ok, 1), ==, 1);
        g_assert_cmpuint(ok, ==, 1);
    }
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(pipefd[0]);
    munmap(mem, npages * PAGE);
}

static void test_pagemap_unaligned(void)
{
    uint64_t bits[1] = { 0 };
    static uint8_t buf[2 * PAGE];

    g_assert_cmpint(sf_pagemap_absent(buf + 1, 1, bits), ==, -EINVAL);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/zeromap/build/roundtrip", test_build_roundtrip);
    g_test_add_func("/zeromap/build/split", test_build_split);
    g_test_add_func("/zeromap/build/empty", test_build_empty);
    g_test_add_func("/zeromap/decode/rejects", test_decode_rejects);
    g_test_add_func("/zeromap/pagemap/across-fork", test_pagemap_across_fork);
    g_test_add_func("/zeromap/pagemap/unaligned", test_pagemap_unaligned);
    return g_test_run();
}
