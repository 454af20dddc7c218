/*
 * snowflock page sources: memory of this process.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * In the page server fork()ed from the parent QEMU, the guest RAM mapped
 * here is the frozen image (copy-on-write since the fork instant), so
 * serving a page is handing out a pointer: no copy, no read.
 */
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "sf-pagemap.h"
#include "sf-pagesrc.h"
#include "sf-wire.h"

typedef struct SfMemSource {
    SfPageSource base;
    uint8_t **hosts;
    uint64_t **zero; /* per block: bitmap of absent pages, or NULL */
} SfMemSource;

static const void *mem_map(SfPageSource *s, uint32_t block, uint64_t offset,
                           uint32_t npages G_GNUC_UNUSED,
                           GError **err G_GNUC_UNUSED)
{
    SfMemSource *m = (SfMemSource *)s;

    return m->hosts[block] + offset;
}

static const uint64_t *mem_zero_map(SfPageSource *s, uint32_t block)
{
    SfMemSource *m = (SfMemSource *)s;

    return block < s->nblocks ? m->zero[block] : NULL;
}

static void mem_free(SfPageSource *s)
{
    SfMemSource *m = (SfMemSource *)s;

    for (uint32_t i = 0; i < s->nblocks; i++) {
        g_free(m->zero[i]);
    }
    g_free(m->zero);
    g_free(m->hosts);
    g_free(m->base.blocks);
    g_free(m);
}

static const SfPageSourceOps mem_ops = {
    .map = mem_map,
    .zero_map = mem_zero_map,
    .free = mem_free,
};

SfPageSource *sf_pagesrc_mem_new(const SfBlockInfo *blocks, void *const *hosts,
                                 uint32_t nblocks)
{
    SfMemSource *m = g_new0(SfMemSource, 1);
    uint32_t i;

    m->base.ops = &mem_ops;
    m->base.nblocks = nblocks;
    m->base.blocks = g_new0(SfBlockInfo, MAX(nblocks, 1));
    memcpy(m->base.blocks, blocks, nblocks * sizeof(*blocks));
    m->hosts = g_new0(uint8_t *, MAX(nblocks, 1));
    m->zero = g_new0(uint64_t *, MAX(nblocks, 1));
    for (i = 0; i < nblocks; i++) {
        m->hosts[i] = hosts[i];
        /* Guarantee NUL termination whatever the caller passed. */
        m->base.blocks[i].idstr[SF_BLOCK_IDSTR_MAX - 1] = '\0';
    }
    return &m->base;
}

int64_t sf_pagesrc_mem_scan_absent(SfPageSource *s, uint32_t block)
{
    SfMemSource *m = (SfMemSource *)s;
    uint64_t npages, *bits;
    int64_t n;

    g_assert(s->ops == &mem_ops && block < s->nblocks);
    npages = s->blocks[block].length / SF_WIRE_PAGE_SIZE;
    bits = g_new0(uint64_t, MAX((npages + 63) / 64, 1));
    n = sf_pagemap_absent(m->hosts[block], npages, bits);
    if (n < 0) {
        g_free(bits);
        return -1;
    }
    g_free(m->zero[block]);
    m->zero[block] = bits;
    return n;
}
