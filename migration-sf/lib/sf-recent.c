/*
 * snowflock request suppression (see sf-recent.h).  A page's entry is
 * 1 + the milliseconds since the table was made when it was last sent,
 * 0 for never; 32 bits last 49 days.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>

#include "sf-recent.h"

struct SfRecent {
    uint32_t nblocks;
    uint64_t *npages;
    uint32_t **sent;
    int64_t t0_us;
};

SfRecent *sf_recent_new(uint32_t nblocks, const uint64_t *npages,
                        int64_t now_us)
{
    SfRecent *r = g_new0(SfRecent, 1);

    r->nblocks = nblocks;
    r->npages = g_memdup2(npages, sizeof(uint64_t) * MAX(nblocks, 1));
    r->sent = g_new0(uint32_t *, MAX(nblocks, 1));
    for (uint32_t b = 0; b < nblocks; b++) {
        r->sent[b] = g_new0(uint32_t, MAX(npages[b], 1));
    }
    r->t0_us = now_us;
    return r;
}

void sf_recent_free(SfRecent *r)
{
    if (!r) {
        return;
    }
    for (uint32_t b = 0; b < r->nblocks; b++) {
        g_free(r->sent[b]);
    }
    g_free(r->sent);
    g_free(r->npages);
    g_free(r);
}

void sf_recent_sent(SfRecent *r, uint32_t block, uint64_t page, int64_t now_us)
{
    if (block < r->nblocks && page < r->npages[block]) {
        r->sent[block][page] = (uint32_t)((now_us - r->t0_us) / 1000) + 1;
    }
}

bool sf_recent_within(const SfRecent *r, uint32_t block, uint64_t page,
                      int64_t now_us, int64_t window_us)
{
    uint32_t t;

    if (block >= r->nblocks || page >= r->npages[block]) {
        return false;
    }
    t = r->sent[block][page];
    return t && (now_us - r->t0_us) / 1000 + 1 - t < (window_us + 999) / 1000;
}
