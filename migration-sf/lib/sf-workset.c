/*
 * snowflock working set (see sf-workset.h).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "sf-workset.h"

typedef struct Entry {
    uint64_t page;
    uint32_t block;
    uint32_t clone_id;
} Entry;

struct SfWorkSet {
    uint32_t nblocks;
    uint64_t *npages;
    uint64_t **noted; /* one bit per page */
    GArray *order;    /* Entry, in the order first demanded */
    uint64_t max;
};

SfWorkSet *sf_workset_new(uint32_t nblocks, const uint64_t *npages,
                          uint64_t max)
{
    SfWorkSet *ws = g_new0(SfWorkSet, 1);

    ws->nblocks = nblocks;
    ws->npages = g_memdup2(npages, sizeof(*npages) * MAX(nblocks, 1));
    ws->noted = g_new0(uint64_t *, MAX(nblocks, 1));
    for (uint32_t b = 0; b < nblocks; b++) {
        ws->noted[b] = g_new0(uint64_t, npages[b] / 64 + 1);
    }
    ws->order = g_array_new(false, false, sizeof(Entry));
    ws->max = max;
    return ws;
}

void sf_workset_free(SfWorkSet *ws)
{
    if (!ws) {
        return;
    }
    for (uint32_t b = 0; b < ws->nblocks; b++) {
        g_free(ws->noted[b]);
    }
    g_free(ws->noted);
    g_free(ws->npages);
    g_array_free(ws->order, true);
    g_free(ws);
}

void sf_workset_note(SfWorkSet *ws, uint32_t clone_id, uint32_t block,
                     uint64_t page, uint32_t n)
{
    if (block >= ws->nblocks || page >= ws->npages[block] ||
        n > ws->npages[block] - page) {
        return;
    }
    for (uint64_t p = page; p < page + n && ws->order->len < ws->max; p++) {
        uint64_t *w = &ws->noted[block][p / 64];
        uint64_t bit = 1ull << (p % 64);

        if (!(*w & bit)) {
            Entry e = { .page = p, .block = block, .clone_id = clone_id };

            *w |= bit;
            g_array_append_val(ws->order, e);
        }
    }
}

uint64_t sf_workset_len(const SfWorkSet *ws)
{
    return ws->order->len;
}

bool sf_workset_next(const SfWorkSet *ws, uint64_t *cursor, uint64_t end,
                     uint32_t clone_id, uint32_t max_run, uint32_t *block,
                     uint64_t *page, uint32_t *npages)
{
    const Entry *e = (const Entry *)ws->order->data;
    uint64_t i = *cursor, len = MIN(ws->order->len, end);
    uint32_t n = 1;

    while (i < len && e[i].clone_id == clone_id) {
        i++;
    }
    if (i >= len || max_run == 0) {
        *cursor = i;
        return false;
    }
    while (i + n < len && n < max_run && e[i + n].clone_id != clone_id &&
           e[i + n].block == e[i].block && e[i + n].page == e[i].page + n) {
        n++;
    }
    *block = e[i].block;
    *page = e[i].page;
    *npages = n;
    *cursor = i + n;
    return true;
}
