/*
 * snowflock fetch policy (see sf-fetch.h).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * State: two bitmaps per block (present; asked for and not here), the
 * faults waiting (O(waiting) scans: at most one per vCPU and QEMU thread),
 * the requests in flight when answers may be lost (O(in flight): demand
 * runs of 8 pages and two push chunks), and the push cursor.
 */
#include <glib.h>
#include <stdlib.h>
#include <string.h>

#include "sf-fetch.h"
#include "sf-wire.h"

/* Timeouts: before a first round trip, and the bounds. */
#define RTO_INITIAL_US 200000
#define RTO_MIN_US     2000
#define RTO_MAX_US     2000000
/* A push request's pages are given this long each on top of the RTO
 * (4 KiB at ~100 MB/s, what a slow receiver takes). */
#define PUSH_PAGE_US 40

typedef struct Waiting {
    uint32_t block;
    uint64_t page;
    int64_t fault_us; /* for the latency sample */
} Waiting;

typedef struct InFlight {
    uint32_t block;
    uint64_t page;
    uint32_t npages;
    uint32_t flags;
    int64_t sent_us;
    int64_t deadline_us;
    int tries;
    bool answered; /* some of its pages came */
} InFlight;

typedef struct Block {
    uint64_t npages;
    uint64_t *present;
    uint64_t *requested;
} Block;

struct SfFetch {
    SfFetchConfig cfg;
    Block *blocks;
    GArray *waiting;  /* Waiting */
    GArray *inflight; /* InFlight, lossy only */
    GArray *latency;  /* uint32_t us */
    SfRtt rtt;
    unsigned npush; /* push requests in flight */
    uint32_t push_block;
    uint64_t push_page;
    uint32_t push_chunk;
    int64_t last_fault_us;
    bool behind;        /* answers delivered, not read yet */
    int64_t backoff_us; /* when the time-out last backed off */
    SfFetchStats st;
};

static bool bit(const uint64_t *m, uint64_t i)
{
    return m[i / 64] >> (i % 64) & 1;
}

static void bit_set(uint64_t *m, uint64_t i)
{
    m[i / 64] |= 1ull << (i % 64);
}

static void bit_clear(uint64_t *m, uint64_t i)
{
    m[i / 64] &= ~(1ull << (i % 64));
}

SfFetch *sf_fetch_new(const SfFetchConfig *cfg, int64_t now_us)
{
    SfFetch *f = g_new0(SfFetch, 1);

    f->cfg = *cfg;
    f->blocks = g_new0(Block, MAX(cfg->nblocks, 1));
    for (uint32_t b = 0; b < cfg->nblocks; b++) {
        uint64_t words = (cfg->npages[b] + 63) / 64;

        f->blocks[b].npages = cfg->npages[b];
        f->blocks[b].present = g_new0(uint64_t, MAX(words, 1));
        f->blocks[b].requested = g_new0(uint64_t, MAX(words, 1));
        f->st.pages_total += cfg->npages[b];
    }
    f->waiting = g_array_new(FALSE, FALSE, sizeof(Waiting));
    f->inflight = g_array_new(FALSE, FALSE, sizeof(InFlight));
    f->latency = g_array_new(FALSE, FALSE, sizeof(uint32_t));
    sf_rtt_init(&f->rtt, RTO_INITIAL_US, RTO_MIN_US, RTO_MAX_US);
    f->push_chunk = SF_FETCH_PUSH_MIN;
    /* The push waits for a quiet period from the start too. */
    f->last_fault_us = now_us;
    return f;
}

void sf_fetch_free(SfFetch *f)
{
    if (!f) {
        return;
    }
    for (uint32_t b = 0; b < f->cfg.nblocks; b++) {
        g_free(f->blocks[b].present);
        g_free(f->blocks[b].requested);
    }
    g_free(f->blocks);
    g_array_free(f->waiting, TRUE);
    g_array_free(f->inflight, TRUE);
    g_array_free(f->latency, TRUE);
    g_free(f);
}

void sf_fetch_set_lossy(SfFetch *f, bool lossy, uint64_t endgame_pages)
{
    f->cfg.lossy = lossy;
    f->cfg.endgame_pages = endgame_pages;
}

bool sf_fetch_present(const SfFetch *f, uint32_t block, uint64_t page)
{
    return block < f->cfg.nblocks && page < f->blocks[block].npages &&
           bit(f->blocks[block].present, page);
}

bool sf_fetch_requested(const SfFetch *f, uint32_t block, uint64_t page)
{
    return block < f->cfg.nblocks && page < f->blocks[block].npages &&
           bit(f->blocks[block].requested, page);
}

bool sf_fetch_complete(const SfFetch *f)
{
    return f->st.pages_present == f->st.pages_total;
}

static bool endgame(const SfFetch *f)
{
    return f->st.pages_total - f->st.pages_present <= f->cfg.endgame_pages;
}

/* Ask for [page, page + n); flags as the caller wants, plus unicast in
 * the end game or after too many tries. */
static void ask(SfFetch *f, uint32_t block, uint64_t page, uint32_t n,
                uint32_t flags, int tries, int64_t now)
{
    Block *b = &f->blocks[block];

    for (uint64_t p = page; p < page + n; p++) {
        bit_set(b->requested, p);
    }
    if (f->cfg.lossy && (endgame(f) || tries >= SF_FETCH_MCAST_TRIES)) {
        flags |= SF_REQ_UNICAST;
    }
    if (flags & SF_REQ_UNICAST) {
        f->st.unicast_asks++;
    }
    f->st.requests++;
    /*
     * Tracked until all its pages are here: every push request (the push
     * keeps SF_FETCH_PUSH_DEPTH of them going), and with a lossy route
     * every request, with a deadline.  A reliable route answers every
     * request, in order: no deadline there.
     */
    if (f->cfg.lossy || (flags & SF_REQ_PREFETCH)) {
        InFlight r = { block, page, n, flags, now, INT64_MAX, tries, false };

        /* A unicast answer comes on the reliable connection. */
        if (f->cfg.lossy && !(flags & SF_REQ_UNICAST)) {
            r.deadline_us =
                now + sf_rtt_rto_us(&f->rtt) +
                ((flags & SF_REQ_PREFETCH) ? (int64_t)n * PUSH_PAGE_US : 0);
        }
        g_array_append_val(f->inflight, r);
        if (flags & SF_REQ_PREFETCH) {
            f->npush++;
        }
    }
    f->cfg.send(f->cfg.opaque, block, page, n, flags);
}

/* Pages [page, ...) neither present nor asked for, at most max. */
static uint32_t wanted_run(const Block *b, uint64_t page, uint32_t max)
{
    uint32_t n = 0;

    while (n < max && page + n < b->npages && !bit(b->present, page + n) &&
           !bit(b->requested, page + n)) {
        n++;
    }
    return n;
}

/* Whether a demand request in flight covers (block, page). */
static bool demanded(const SfFetch *f, uint32_t block, uint64_t page)
{
    for (guint i = 0; i < f->inflight->len; i++) {
        const InFlight *r = &g_array_index(f->inflight, InFlight, i);
        if (r->block == block && page >= r->page &&
            page < r->page + r->npages && (r->flags & SF_REQ_DEMAND)) {
            return true;
        }
    }
    return false;
}

bool sf_fetch_fault(SfFetch *f, uint32_t block, uint64_t page, int64_t now)
{
    Block *b;
    bool known = false;

    f->st.faults++;
    if (block >= f->cfg.nblocks || page >= f->blocks[block].npages) {
        return false; /* not ours: the caller fails the clone */
    }
    b = &f->blocks[block];
    if (bit(b->present, page)) {
        return false;
    }
    for (guint i = 0; i < f->waiting->len; i++) {
        Waiting *w = &g_array_index(f->waiting, Waiting, i);
        if (w->block == block && w->page == page) {
            known = true;
            break;
        }
    }
    if (!known) {
        Waiting w = { block, page, now };
        g_array_append_val(f->waiting, w);
    }
    /* A fault means the guest is waiting: keep pushes short for a while. */
    f->push_chunk = SF_FETCH_PUSH_MIN;
    f->last_fault_us = now;
    if (!bit(b->requested, page)) {
        ask(f, block, page, wanted_run(b, page, SF_FETCH_DEMAND_RUN),
            SF_REQ_DEMAND, 0, now);
    } else if (f->cfg.lossy && !demanded(f, block, page)) {
        /* Only a push asked for it: a paced multicast push may take a
         * while to get there, a demand request goes first. */
        ask(f, block, page, 1, SF_REQ_DEMAND, 0, now);
    }
    return true;
}

/* A request in flight is over: covered (all arrived) or given up. */
static void inflight_drop(SfFetch *f, guint i)
{
    InFlight *r = &g_array_index(f->inflight, InFlight, i);

    if (r->flags & SF_REQ_PREFETCH) {
        f->npush--;
    }
    g_array_remove_index_fast(f->inflight, i);
}

static bool all_present(const Block *b, uint64_t page, uint32_t n)
{
    for (uint64_t p = page; p < page + n; p++) {
        if (!bit(b->present, p)) {
            return false;
        }
    }
    return true;
}

static uint64_t placed(SfFetch *f, uint32_t block, uint64_t page,
                       uint32_t npages, int64_t now, bool from_server);

uint64_t sf_fetch_arrived(SfFetch *f, uint32_t block, uint64_t page,
                          uint32_t npages, int64_t now)
{
    return placed(f, block, page, npages, now, true);
}

uint64_t sf_fetch_known_zero(SfFetch *f, uint32_t block, uint64_t page,
                             uint32_t npages, int64_t now)
{
    return placed(f, block, page, npages, now, false);
}

static uint64_t placed(SfFetch *f, uint32_t block, uint64_t page,
                       uint32_t npages, int64_t now, bool from_server)
{
    Block *b;
    uint64_t newly = 0;

    if (block >= f->cfg.nblocks || page >= f->blocks[block].npages ||
        npages > f->blocks[block].npages - page) {
        return 0;
    }
    b = &f->blocks[block];
    for (uint64_t p = page; p < page + npages; p++) {
        if (!bit(b->present, p)) {
            if (from_server && !bit(b->requested, p)) {
                f->st.unrequested++;
            }
            bit_set(b->present, p);
            newly++;
        }
        bit_clear(b->requested, p);
    }
    f->st.pages_present += newly;

    for (guint i = 0; i < f->waiting->len;) {
        Waiting *w = &g_array_index(f->waiting, Waiting, i);
        if (w->block == block && w->page >= page && w->page < page + npages) {
            uint32_t us =
                (uint32_t)MIN(now - w->fault_us, (int64_t)G_MAXUINT32);
            if (f->latency->len < SF_FETCH_LATENCY_MAX) {
                g_array_append_val(f->latency, us);
            }
            g_array_remove_index_fast(f->waiting, i);
        } else {
            i++;
        }
    }
    /*
     * Requests this answers: a round-trip sample from the first answer to
     * each that was asked once (Karn: a retried one cannot tell).  The
     * first, not the last: over a lossy group the rest of a run may never
     * come, and the round trip is the same.  Those it completes are over.
     */
    for (guint i = 0; i < f->inflight->len;) {
        InFlight *r = &g_array_index(f->inflight, InFlight, i);
        if (r->block == block && r->page < page + npages &&
            page < r->page + r->npages) {
            if (!r->answered && r->tries == 0 &&
                !(r->flags & SF_REQ_PREFETCH)) {
                sf_rtt_sample(&f->rtt, now - r->sent_us);
            }
            r->answered = true;
            if (all_present(b, r->page, r->npages)) {
                inflight_drop(f, i);
                continue;
            }
        }
        i++;
    }
    return newly;
}

/* Give up on requests past their deadline: their missing pages may be
 * asked again; a waiting fault among them is asked again now. */
static void expire(SfFetch *f, int64_t now)
{
    for (guint i = 0; i < f->inflight->len;) {
        InFlight r = g_array_index(f->inflight, InFlight, i);
        Block *b = &f->blocks[r.block];

        if (r.deadline_us > now || (f->behind && (r.flags & SF_REQ_PREFETCH))) {
            i++;
            continue;
        }
        inflight_drop(f, i);
        /*
         * Back off once for a demand sent since the last back-off that
         * got no answer at all: it was given the longer time-out and
         * still missed it (one that got part of its run was answered in
         * time, the rest was lost).  Not once
         * per request: a lost datagram takes several at a time, and a
         * lossy link loses some in every round trip, which would drive
         * the time-out to its ceiling with the round trip unchanged.  A
         * push request's deadline is the pacing's, not the round trip's.
         */
        if (!(r.flags & SF_REQ_PREFETCH) && !r.answered &&
            r.sent_us >= f->backoff_us) {
            sf_rtt_backoff(&f->rtt);
            f->backoff_us = now;
        }
        for (uint64_t p = r.page; p < r.page + r.npages; p++) {
            if (!bit(b->present, p)) {
                bit_clear(b->requested, p);
            }
        }
        for (guint k = 0; k < f->waiting->len; k++) {
            Waiting *w = &g_array_index(f->waiting, Waiting, k);
            if (w->block == r.block && w->page >= r.page &&
                w->page < r.page + r.npages && !bit(b->requested, w->page)) {
                f->st.retries++;
                ask(f, w->block, w->page, 1, SF_REQ_DEMAND, r.tries + 1, now);
            }
        }
        i = 0; /* ask() may have appended and the drop reordered */
    }
}

static void push(SfFetch *f, int64_t now)
{
    bool wrapped = false; /* one pass at most per call */

    while (f->npush < SF_FETCH_PUSH_DEPTH && f->waiting->len == 0 &&
           !sf_fetch_complete(f)) {
        Block *b;
        uint32_t n;

        if (f->push_block >= f->cfg.nblocks) {
            /* A pass is over with pages missing.  Over a reliable route
             * they are on their way.  Over a lossy one some may have
             * been lost: a new pass asks for those not asked for. */
            f->push_block = 0;
            f->push_page = 0;
            if (!f->cfg.lossy || wrapped) {
                return;
            }
            wrapped = true;
            f->st.push_passes++;
        }
        b = &f->blocks[f->push_block];
        /* Skip what is here or asked for, 64 pages a step where it can:
         * this runs after every arrival once RAM is mostly present. */
        while (f->push_page < b->npages) {
            uint64_t w = f->push_page / 64;
            if (f->push_page % 64 == 0 && f->push_page + 64 <= b->npages &&
                (b->present[w] | b->requested[w]) == UINT64_MAX) {
                f->push_page += 64;
            } else if (bit(b->present, f->push_page) ||
                       bit(b->requested, f->push_page)) {
                f->push_page++;
            } else {
                break;
            }
        }
        if (f->push_page >= b->npages) {
            f->push_block++;
            f->push_page = 0;
            continue;
        }
        n = wanted_run(b, f->push_page, f->push_chunk);
        ask(f, f->push_block, f->push_page, n, SF_REQ_PREFETCH, 0, now);
        f->push_page += n;
        f->push_chunk = MIN(f->push_chunk * 2, SF_FETCH_PUSH_MAX);
    }
}

int64_t sf_fetch_tick(SfFetch *f, int64_t now)
{
    int64_t next = INT64_MAX;

    if (f->cfg.lossy) {
        expire(f, now);
    }
    if (f->cfg.prefetch && !sf_fetch_complete(f)) {
        int64_t quiet = now - f->last_fault_us;

        if (quiet >= SF_FETCH_QUIET_US) {
            if (!f->behind) {
                push(f, now);
            }
        } else {
            next = f->last_fault_us + SF_FETCH_QUIET_US;
        }
    }
    for (guint i = 0; i < f->inflight->len; i++) {
        next = MIN(next, g_array_index(f->inflight, InFlight, i).deadline_us);
    }
    return next;
}

void sf_fetch_set_behind(SfFetch *f, bool behind)
{
    f->behind = behind;
}

void sf_fetch_disconnected(SfFetch *f)
{
    for (uint32_t b = 0; b < f->cfg.nblocks; b++) {
        memset(f->blocks[b].requested, 0,
               sizeof(uint64_t) * MAX((f->blocks[b].npages + 63) / 64, 1));
    }
    g_array_set_size(f->inflight, 0);
    f->npush = 0;
    /* The push skipped pages then in flight: walk again from the start. */
    f->push_block = 0;
    f->push_page = 0;
}

void sf_fetch_resend(SfFetch *f, int64_t now)
{
    for (guint i = 0; i < f->waiting->len; i++) {
        Waiting *w = &g_array_index(f->waiting, Waiting, i);

        if (!bit(f->blocks[w->block].requested, w->page)) {
            ask(f, w->block, w->page, 1, SF_REQ_DEMAND, 0, now);
        }
    }
}

void sf_fetch_stats(const SfFetch *f, SfFetchStats *st)
{
    *st = f->st;
    st->rto_us = sf_rtt_rto_us(&f->rtt);
    st->srtt_us = f->rtt.samples ? f->rtt.srtt_us : 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

void sf_fetch_latency(const SfFetch *f, uint64_t *p50, uint64_t *p99)
{
    g_autofree uint32_t *v = NULL;
    guint n = f->latency->len;

    *p50 = *p99 = 0;
    if (!n) {
        return;
    }
    v = g_memdup2(f->latency->data, n * sizeof(uint32_t));
    qsort(v, n, sizeof(uint32_t), cmp_u32);
    *p50 = v[n / 2];
    *p99 = v[MIN(n - 1, (guint)((uint64_t)n * 99 / 100))];
}
