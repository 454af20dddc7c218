/*
 * snowflock fetch policy: what a clone asks its page server for, and
 * when.  Pure (no I/O, no userfaultfd, times passed in, microseconds):
 * sf-lazyram.c feeds it faults and arrivals and sends the requests it
 * emits; the unit tests drive it alone.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Demand.  A fault on a page that is neither present nor asked for asks
 * for it and the few after it (SF_FETCH_DEMAND_RUN pages).  Pending
 * faults are remembered until their page arrives: their latency is a
 * sample, and after a reconnect they are asked for again.
 *
 * Push.  When no fault has come for SF_FETCH_QUIET_US, the rest of RAM
 * is asked for in address order, SF_FETCH_PUSH_DEPTH requests at a time;
 * the chunk doubles from 64 KiB to 4 MiB while no fault comes and drops
 * back on a fault, so a demand request never waits long behind a push.
 * Reaching the end with pages still missing (lost on the way, see
 * below) starts another pass.
 *
 * Loss (only with a lossy route, i.e. the answers come over multicast):
 * a request is given up after a timeout derived from the round trips
 * measured on this clone (sf-rtt.h; a push request of n pages gets n
 * times the per-page transfer time on top); its pages still missing
 * may be asked for again.  A fault still waiting is asked for again at
 * once; after SF_FETCH_MCAST_TRIES tries, or when at most endgame_pages
 * pages are missing in all (the end game), requests ask for a unicast
 * answer, which the page server sends on the clone's own reliable
 * connection.
 */
#ifndef SF_FETCH_H
#define SF_FETCH_H

#include <stdbool.h>
#include <stdint.h>

#include "sf-rtt.h"

#define SF_FETCH_DEMAND_RUN  8
#define SF_FETCH_PUSH_MIN    16   /* pages: 64 KiB */
#define SF_FETCH_PUSH_MAX    1024 /* pages: 4 MiB (SF_WIRE_MAX_PAGES) */
#define SF_FETCH_PUSH_DEPTH  2
#define SF_FETCH_QUIET_US    100000
#define SF_FETCH_MCAST_TRIES 3
#define SF_FETCH_LATENCY_MAX (1u << 20) /* fault latency samples kept */

typedef struct SfFetchConfig {
    uint32_t nblocks;
    const uint64_t *npages; /* per block */
    bool prefetch;          /* push the rest in the background */
    bool lossy;             /* answers may be lost: time requests out */
    uint64_t endgame_pages; /* lossy: missing <= this, ask unicast */
    /* Send a request (flags SF_REQ_*); called from the fetch calls. */
    void (*send)(void *opaque, uint32_t block, uint64_t page, uint32_t npages,
                 uint32_t flags);
    void *opaque;
} SfFetchConfig;

typedef struct SfFetchStats {
    uint64_t pages_total;
    uint64_t pages_present;
    uint64_t faults;
    uint64_t requests;
    uint64_t retries;      /* requests given up on and asked again */
    uint64_t unicast_asks; /* requests for a unicast answer */
    uint64_t unrequested;  /* pages that arrived without being asked */
    uint64_t push_passes;  /* passes of the push over RAM */
    int64_t rto_us;        /* current request timeout */
    int64_t srtt_us;       /* smoothed round trip, 0 before a sample */
} SfFetchStats;

typedef struct SfFetch SfFetch;

SfFetch *sf_fetch_new(const SfFetchConfig *cfg, int64_t now_us);
void sf_fetch_free(SfFetch *f);
/* The answers may be lost from now on (a multicast group joined). */
void sf_fetch_set_lossy(SfFetch *f, bool lossy, uint64_t endgame_pages);

bool sf_fetch_present(const SfFetch *f, uint32_t block, uint64_t page);
/* Whether (block, page) is asked for and not here yet. */
bool sf_fetch_requested(const SfFetch *f, uint32_t block, uint64_t page);
/* A thread faulted on (block, page): false when it is present already
 * (the caller wakes the thread), true when it now waits for it. */
bool sf_fetch_fault(SfFetch *f, uint32_t block, uint64_t page, int64_t now_us);
/*
 * [page, page + npages) of block was placed: returns how many of them
 * were not present before.  Pages already present are the caller's to
 * skip before placing (sf_fetch_present).
 */
uint64_t sf_fetch_arrived(SfFetch *f, uint32_t block, uint64_t page,
                          uint32_t npages, int64_t now_us);
/* The same for pages placed as zero without asking (the fork's zero
 * map): not counted as arrived unrequested. */
uint64_t sf_fetch_known_zero(SfFetch *f, uint32_t block, uint64_t page,
                             uint32_t npages, int64_t now_us);
/* Push and time-outs: call at or after the returned time (INT64_MAX:
 * nothing pending). */
int64_t sf_fetch_tick(SfFetch *f, int64_t now_us);
/*
 * Whether answers already delivered to this clone wait unread (a
 * multicast socket not drained).  While behind, the push asks for
 * nothing and push requests do not time out: the pages it would ask
 * for, or ask for again, may be among those waiting, and every request
 * for a page already sent is one more copy on the group for every
 * clone.  Demand is not held: a fault asks at once, and times out.
 */
void sf_fetch_set_behind(SfFetch *f, bool behind);
/* The connection is gone: nothing is in flight any more.  After a
 * reconnect, sf_fetch_resend() asks again for every waiting fault. */
void sf_fetch_disconnected(SfFetch *f);
void sf_fetch_resend(SfFetch *f, int64_t now_us);
bool sf_fetch_complete(const SfFetch *f);
void sf_fetch_stats(const SfFetch *f, SfFetchStats *st);
/* Fault latencies (us) sampled so far: p50 and p99 (0 when none). */
void sf_fetch_latency(const SfFetch *f, uint64_t *p50, uint64_t *p99);

#endif
