/*
 * snowflock working set: the order in which a fork's pages were first
 * asked for, so that later clones get them pushed first.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Clones of one fork touch nearly the same pages in nearly the same order
 * (SnowFlock; REAP, ASPLOS'21).  The page server notes every page a
 * demand request names, once, in the order they come, with the clone that
 * asked first.  A clone that asks for the push (HELLO flag
 * SF_HELLO_WORKSET, clones with background push on) is sent that order
 * ahead of its own push, in runs, from the moment it connects: before and
 * while it resumes, so its vCPUs find those pages present.  The pages a
 * clone noted itself are skipped for it.
 *
 * Bounded (max entries, one bit per page to remember what is noted) and
 * as long-lived as the page server, i.e. the fork and its checkpoints.
 * Pure: no I/O; the unit tests drive it alone.
 */
#ifndef SF_WORKSET_H
#define SF_WORKSET_H

#include <stdbool.h>
#include <stdint.h>

typedef struct SfWorkSet SfWorkSet;

/* npages per block; at most max pages are ever noted. */
SfWorkSet *sf_workset_new(uint32_t nblocks, const uint64_t *npages,
                          uint64_t max);
void sf_workset_free(SfWorkSet *ws);
/* [page, page + n) of block was demanded by clone_id: note those pages
 * not noted yet (range-checked by the caller; out of range is ignored). */
void sf_workset_note(SfWorkSet *ws, uint32_t clone_id, uint32_t block,
                     uint64_t page, uint32_t n);
uint64_t sf_workset_len(const SfWorkSet *ws);
/*
 * The next run for clone_id from *cursor (an index into the order, 0 to
 * start) below end (UINT64_MAX: no end): consecutive entries of one
 * block, ascending and contiguous, that another clone noted, at most
 * max_run pages.  Advances *cursor past it; false when nothing is left
 * (yet: more may be noted later).
 */
bool sf_workset_next(const SfWorkSet *ws, uint64_t *cursor, uint64_t end,
                     uint32_t clone_id, uint32_t max_run, uint32_t *block,
                     uint64_t *page, uint32_t *npages);

#endif
