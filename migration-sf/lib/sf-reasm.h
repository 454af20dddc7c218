/*
 * snowflock page reassembly: a page sent as several datagrams (a 4 KiB
 * page does not fit a 1500-byte MTU, and IP fragmentation is not used:
 * one lost fragment would lose the whole datagram silently) is put back
 * together here, fragment by fragment, in any order.  Fragment i of n
 * carries what sf_wire_frag_len() says; anything else is refused.  At most
 * max_partial pages wait for their missing fragments; beyond that the oldest is
 * dropped (and will be asked for again).  Pure, not thread-safe.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SF_REASM_H
#define SF_REASM_H

#include <stddef.h>
#include <stdint.h>

#include "sf-wire.h"

#define SF_REASM_PAGE     SF_WIRE_PAGE_SIZE
#define SF_REASM_MAX_FRAG SF_WIRE_MAX_FRAGS

typedef enum SfReasmResult {
    SF_REASM_MORE,     /* kept; the page still lacks fragments */
    SF_REASM_COMPLETE, /* *page_out holds the whole page */
    SF_REASM_DUP,      /* this fragment was already there */
    SF_REASM_BAD,      /* index, count or length do not fit */
} SfReasmResult;

typedef struct SfReasmStats {
    uint64_t completed;
    uint64_t dropped_partial; /* evicted before they were whole */
    uint64_t duplicates;
    uint64_t bad;
    unsigned partial; /* waiting now */
} SfReasmStats;

typedef struct SfReasm SfReasm;

SfReasm *sf_reasm_new(unsigned max_partial);
void sf_reasm_free(SfReasm *r);
/* *page_out is valid until the next call. */
SfReasmResult sf_reasm_add(SfReasm *r, uint32_t block, uint64_t page,
                           unsigned index, unsigned count, const uint8_t *data,
                           size_t len, const uint8_t **page_out);
/* The page arrived by another way (or is not wanted): forget its
 * fragments. */
void sf_reasm_forget(SfReasm *r, uint32_t block, uint64_t page);
void sf_reasm_stats(const SfReasm *r, SfReasmStats *st);

#endif
