/*
 * snowflock zero map: the pages a fork's frozen image is known to hold
 * as zero, as the ZEROMAP messages that tell a clone so (sf-wire.h).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Built once per fork by the page server from its source's zero bitmaps
 * (sf-pagesrc.h) and sent, the same bytes, to every clone after its
 * WELCOME.  A clone places those pages as zero itself: neither demand
 * nor push ever asks for them, and the server never reads or sends them.
 * Runs, not a bitmap: free memory comes in large runs (the guest reports
 * free pages in 2 MiB blocks), so a 512 MiB guest with 400 MiB free needs
 * a few hundred runs, a few KiB.
 */
#ifndef SF_ZEROMAP_H
#define SF_ZEROMAP_H

#include <glib.h>
#include <stdint.h>

typedef struct SfZeroMap {
    GPtrArray *bodies; /* GBytes: ZEROMAP bodies, the last flagged LAST */
    uint64_t pages;    /* pages in all runs */
    uint64_t runs;
} SfZeroMap;

/*
 * bits[b] (NULL: nothing known for block b) has one bit per page of
 * npages[b], set when the page is known zero.  Always at least one body
 * (an empty map is one message without runs).
 */
SfZeroMap *sf_zeromap_build(uint32_t nblocks, const uint64_t *const *bits,
                            const uint64_t *npages);
void sf_zeromap_free(SfZeroMap *z);

#endif
