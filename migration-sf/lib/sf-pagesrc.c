/*
 * snowflock page sources: helpers shared by every source.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Offsets and npages are in wire pages (SF_WIRE_PAGE_SIZE, 4 KiB) whatever
 * a block's host page size: a hugepage-backed block is simply requested in
 * runs of 512 wire pages.
 */
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "sf-pagesrc.h"
#include "sf-wire.h"

int sf_pagesrc_check_range(const SfPageSource *s, uint32_t block,
                           uint64_t offset, uint32_t npages, const char **why)
{
    uint64_t len;

    if (block >= s->nblocks) {
        *why = "block index out of range";
        return -1;
    }
    if (offset % SF_WIRE_PAGE_SIZE) {
        *why = "offset not page aligned";
        return -1;
    }
    if (npages == 0) {
        *why = "empty page run";
        return -1;
    }
    /*
     * Compare without computing offset + run, which a hostile offset near
     * UINT64_MAX would wrap.
     */
    len = s->blocks[block].length;
    if (offset >= len || (uint64_t)npages * SF_WIRE_PAGE_SIZE > len - offset) {
        *why = "page run ends outside the block";
        return -1;
    }
    return 0;
}

uint64_t sf_pagesrc_total_pages(const SfPageSource *s)
{
    uint64_t total = 0;
    uint32_t i;

    for (i = 0; i < s->nblocks; i++) {
        total += s->blocks[i].length / SF_WIRE_PAGE_SIZE;
    }
    return total;
}

void sf_pagesrc_free(SfPageSource *s)
{
    if (s) {
        s->ops->free(s);
    }
}

bool sf_page_is_zero(const void *p, size_t len)
{
    const uint64_t *w = p;

    if (len < sizeof(uint64_t)) {
        return len == 0;
    }
    /*
     * Most non-zero pages differ in their first word, so test that alone;
     * then the whole rest is zero iff every byte equals the one 8 bytes
     * before it, which memcmp (vectorised by libc) checks at memory speed
     * with no zero buffer to compare against.
     */
    if (w[0] != 0) {
        return false;
    }
    return memcmp(p, (const uint8_t *)p + sizeof(uint64_t),
                  len - sizeof(uint64_t)) == 0;
}

const uint64_t *sf_pagesrc_zero_map(SfPageSource *s, uint32_t block)
{
    return s->ops->zero_map && block < s->nblocks ? s->ops->zero_map(s, block)
                                                  : NULL;
}
