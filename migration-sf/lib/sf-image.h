/*
 * snowflock served image: a page source (sf-pagesrc.h) as the page
 * server reads it.  The image never changes, so whether a page is zero
 * is worked out once and remembered (two bits a page): with N clones
 * asking for the same pages each is scanned once, not N times.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SF_IMAGE_H
#define SF_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "sf-pagesrc.h"

typedef struct SfImage SfImage;

/* Takes ownership of src. */
SfImage *sf_image_new(SfPageSource *src);
void sf_image_free(SfImage *im);
SfPageSource *sf_image_source(SfImage *im);
/* The pages of an in-range run (checked by the caller), and which of
 * them are zero; NULL when the source cannot read them.  Valid until
 * the next read. */
const uint8_t *sf_image_read(SfImage *im, uint32_t block, uint64_t offset,
                             uint32_t npages, bool *zero);
/* One page: its bytes, or NULL and *zero (NULL, !*zero: unreadable). */
const uint8_t *sf_image_page(SfImage *im, uint32_t block, uint64_t page,
                             bool *zero);

#endif
