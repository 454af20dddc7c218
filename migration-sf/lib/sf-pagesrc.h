/*
 * snowflock page sources: where frozen pages come from.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A live parent's frozen image (memory of the forked page-server process),
 * later a saved fork or prebaked snapshot file and a deduplicated chunk
 * store.  Pages are addressed by (block index, byte offset) where blocks
 * are the parent's RAM blocks in descriptor order.
 */
#ifndef SF_PAGESRC_H
#define SF_PAGESRC_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#define SF_BLOCK_IDSTR_MAX 256

typedef struct SfBlockInfo {
    char idstr[SF_BLOCK_IDSTR_MAX]; /* QEMU RAMBlock idstr, NUL-terminated */
    uint64_t length;                /* bytes, multiple of page_size */
    uint32_t page_size;             /* host page size of the block */
} SfBlockInfo;

typedef struct SfPageSource SfPageSource;

typedef struct SfPageSourceOps {
    /*
     * Return a pointer to npages contiguous pages at (block, offset), valid
     * until the next call on this source, or NULL with err set.  The caller
     * has already range-checked with sf_pagesrc_check_range().
     */
    const void *(*map)(SfPageSource *s, uint32_t block, uint64_t offset,
                       uint32_t npages, GError **err);
    /*
     * Optional: the pages of block known to be zero without reading them
     * (never populated, given back by free page reporting, a hole in a
     * file), one bit per page, set when known zero; NULL when nothing is
     * known (then pages are read and compared).  Valid for the source's
     * life.  A set bit is a promise: the page server never reads the page
     * and clones fill it with zero themselves (sf-zeromap.h).
     */
    const uint64_t *(*zero_map)(SfPageSource *s, uint32_t block);
    void (*free)(SfPageSource *s);
} SfPageSourceOps;

struct SfPageSource {
    const SfPageSourceOps *ops;
    uint32_t nblocks;
    SfBlockInfo *blocks; /* owned by the source */
};

/* 0 when block < nblocks, offset page aligned, npages >= 1 and the run
 * ends inside the block; otherwise -1 with *why set. */
int sf_pagesrc_check_range(const SfPageSource *s, uint32_t block,
                           uint64_t offset, uint32_t npages, const char **why);
uint64_t sf_pagesrc_total_pages(const SfPageSource *s);
void sf_pagesrc_free(SfPageSource *s);

/*
 * Memory source: blocks live at hosts[i] in this process (the page server
 * is a fork() of the parent QEMU, so this is the frozen guest RAM).  The
 * pointers are borrowed; blocks are copied.
 */
SfPageSource *sf_pagesrc_mem_new(const SfBlockInfo *blocks, void *const *hosts,
                                 uint32_t nblocks);

/*
 * Memory source only: mark the pages of block that this process never
 * populated (sf-pagemap.h) as known zero.  Only for private anonymous
 * memory, where such a page reads as zero; the caller knows which blocks
 * are.  Returns the number of pages marked, or -errno.
 */
int64_t sf_pagesrc_mem_scan_absent(SfPageSource *s, uint32_t block);
/* A source's zero bitmap for block, or NULL (no zero_map op or none). */
const uint64_t *sf_pagesrc_zero_map(SfPageSource *s, uint32_t block);

/* True when len bytes at p are all zero (len a multiple of 8). */
bool sf_page_is_zero(const void *p, size_t len);

#endif
