/*
 * snowflock served image (see sf-image.h).  Runs in the page server,
 * which may be a child fork()ed from QEMU: no GLib locks (a failed map's
 * GError is freed at once, and the sources used there never fail).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <string.h>

#include "sf-image.h"
#include "sf-wire.h"

struct SfImage {
    SfPageSource *src;
    uint64_t **known; /* bit: whether the page was looked at */
    uint64_t **is;    /* bit: and it is zero */
};

SfImage *sf_image_new(SfPageSource *src)
{
    SfImage *im = g_new0(SfImage, 1);

    im->src = src;
    im->known = g_new0(uint64_t *, MAX(src->nblocks, 1));
    im->is = g_new0(uint64_t *, MAX(src->nblocks, 1));
    for (uint32_t i = 0; i < src->nblocks; i++) {
        uint64_t words = (src->blocks[i].length / SF_WIRE_PAGE_SIZE + 63) / 64;

        const uint64_t *zero = sf_pagesrc_zero_map(src, i);

        im->known[i] = g_new0(uint64_t, MAX(words, 1));
        im->is[i] = g_new0(uint64_t, MAX(words, 1));
        if (zero) {
            /* Known zero: never read (a clone does not even ask). */
            memcpy(im->known[i], zero, words * sizeof(uint64_t));
            memcpy(im->is[i], zero, words * sizeof(uint64_t));
        }
    }
    return im;
}

void sf_image_free(SfImage *im)
{
    if (!im) {
        return;
    }
    for (uint32_t i = 0; i < im->src->nblocks; i++) {
        g_free(im->known[i]);
        g_free(im->is[i]);
    }
    g_free(im->known);
    g_free(im->is);
    sf_pagesrc_free(im->src);
    g_free(im);
}

SfPageSource *sf_image_source(SfImage *im)
{
    return im->src;
}

static bool page_is_zero(SfImage *im, uint32_t block, uint64_t page,
                         const uint8_t *p)
{
    uint64_t bit = 1ull << (page % 64);
    uint64_t *known = &im->known[block][page / 64];
    uint64_t *is = &im->is[block][page / 64];
    bool zero;

    if (*known & bit) {
        return *is & bit;
    }
    zero = sf_page_is_zero(p, SF_WIRE_PAGE_SIZE);
    *known |= bit;
    if (zero) {
        *is |= bit;
    }
    return zero;
}

const uint8_t *sf_image_read(SfImage *im, uint32_t block, uint64_t offset,
                             uint32_t npages, bool *zero)
{
    GError *err = NULL;
    const uint8_t *data =
        im->src->ops->map(im->src, block, offset, npages, &err);

    if (!data) {
        g_error_free(err);
        return NULL;
    }
    for (uint32_t i = 0; i < npages; i++) {
        zero[i] = page_is_zero(im, block, offset / SF_WIRE_PAGE_SIZE + i,
                               data + (size_t)i * SF_WIRE_PAGE_SIZE);
    }
    return data;
}

const uint8_t *sf_image_page(SfImage *im, uint32_t block, uint64_t page,
                             bool *zero)
{
    const uint8_t *p;

    *zero = false;
    if (sf_pagesrc_check_range(im->src, block, page * SF_WIRE_PAGE_SIZE, 1,
                               &(const char *){ NULL }) < 0) {
        return NULL;
    }
    p = sf_image_read(im, block, page * SF_WIRE_PAGE_SIZE, 1, zero);
    return p && !*zero ? p : NULL;
}
