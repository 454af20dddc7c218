/*
 * snowflock zero map: runs of known-zero pages as ZEROMAP bodies.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <stdint.h>
#include <string.h>

#include "sf-wire.h"
#include "sf-zeromap.h"

typedef struct Builder {
    SfZeroMap *z;
    uint8_t *buf; /* fixed part + SF_WIRE_ZEROMAP_RUNS runs */
    uint32_t block;
    uint32_t nruns;
} Builder;

static void flush(Builder *b, uint32_t flags)
{
    SfMsgZeroMap m = { .block = b->block, .nruns = b->nruns, .flags = flags };
    size_t len = SF_WIRE_ZEROMAP_LEN + (size_t)b->nruns * 8;

    sf_wire_zeromap_encode(b->buf, &m);
    g_ptr_array_add(b->z->bodies, g_bytes_new(b->buf, len));
    b->nruns = 0;
}

static void add_run(Builder *b, uint32_t block, uint64_t page, uint64_t n)
{
    if (b->nruns && (b->block != block || b->nruns == SF_WIRE_ZEROMAP_RUNS)) {
        flush(b, 0);
    }
    b->block = block;
    sf_wire_zeromap_put_run(b->buf + SF_WIRE_ZEROMAP_LEN, b->nruns++,
                            (uint32_t)page, (uint32_t)n);
    b->z->pages += n;
    b->z->runs++;
}

static inline bool bit(const uint64_t *bits, uint64_t i)
{
    return bits[i / 64] >> (i % 64) & 1;
}

SfZeroMap *sf_zeromap_build(uint32_t nblocks, const uint64_t *const *bits,
                            const uint64_t *npages)
{
    Builder b = { 0 };

    b.z = g_new0(SfZeroMap, 1);
    b.z->bodies = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    b.buf = g_malloc(SF_WIRE_ZEROMAP_LEN + SF_WIRE_ZEROMAP_RUNS * 8);
    for (uint32_t blk = 0; blk < nblocks; blk++) {
        /* Runs name pages with 32 bits: a block of more is left out. */
        uint64_t n = bits[blk] && npages[blk] <= UINT32_MAX ? npages[blk] : 0;
        uint64_t p = 0;

        /* Whole words at a time where they are all one or all the other. */
        while (p < n) {
            uint64_t start;

            if (!bit(bits[blk], p)) {
                p += p % 64 == 0 && bits[blk][p / 64] == 0 ? 64 : 1;
                continue;
            }
            start = p;
            while (p < n && bit(bits[blk], p)) {
                p += p % 64 == 0 && n - p >= 64 && bits[blk][p / 64] == ~0ull
                         ? 64
                         : 1;
            }
            add_run(&b, blk, start, p - start);
        }
    }
    flush(&b, SF_ZEROMAP_LAST);
    g_free(b.buf);
    return b.z;
}

void sf_zeromap_free(SfZeroMap *z)
{
    if (z) {
        g_ptr_array_unref(z->bodies);
        g_free(z);
    }
}
