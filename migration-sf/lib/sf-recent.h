/*
 * snowflock request suppression: when every clone of a fork runs the
 * same code they fault on the same pages at nearly the same time, and a
 * multicast server that answered each request would send each page N
 * times.  The server remembers when it last sent each page and ignores
 * a request for a page sent within the last round-trip window: the
 * asker had not received it yet when it asked.  4 bytes per page (ms
 * since the table was made); pure.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SF_RECENT_H
#define SF_RECENT_H

#include <stdbool.h>
#include <stdint.h>

typedef struct SfRecent SfRecent;

SfRecent *sf_recent_new(uint32_t nblocks, const uint64_t *npages,
                        int64_t now_us);
void sf_recent_free(SfRecent *r);
void sf_recent_sent(SfRecent *r, uint32_t block, uint64_t page, int64_t now_us);
/* Whether (block, page) was sent less than window_us ago. */
bool sf_recent_within(const SfRecent *r, uint32_t block, uint64_t page,
                      int64_t now_us, int64_t window_us);

#endif
