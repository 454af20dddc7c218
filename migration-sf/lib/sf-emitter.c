/*
 * snowflock multicast emitter (see sf-emitter.h).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Two FIFOs of pages, demand and push; a page is in a queue at most once
 * (one bit per page for each).  pump() takes demand first, cuts each
 * page into sealed datagrams in a sendmmsg batch, and sends when the
 * batch is full, the queues are empty or the pacer says wait.  A page
 * popped that went out within the window since it was queued (both
 * queues held it) is not sent twice.  Runs in the page server's single
 * thread; it allocates only when a queue grows.
 */
#include <errno.h>
#include <glib.h>
#include <string.h>

#include "sf-emitter.h"
#include "sf-mcast.h"
#include "sf-pacer.h"
#include "sf-recent.h"
#include "sf-wire.h"

/* Pacing: where to start, the bounds, and the burst. */
#define RATE_INITIAL (100.0 * 1024 * 1024)
#define RATE_MIN     (1.0 * 1024 * 1024)
#define RATE_MAX     (4096.0 * 1024 * 1024)
#define RATE_BURST   (256.0 * 1024)
/* The window before a round trip was measured, and its bounds. */
#define WINDOW_DEFAULT_US 5000
#define WINDOW_MIN_US     1000
#define WINDOW_MAX_US     200000
/* A full socket buffer: try again this soon. */
#define RETRY_US 500

typedef struct Entry {
    uint32_t block;
    uint64_t page;
    uint32_t flags;
} Entry;

struct SfEmitter {
    int fd;
    unsigned frags;
    SfSealSender *seal;
    uint64_t fork_id;
    uint32_t nblocks;
    uint64_t **in_demand, **in_push; /* one bit a page: queued there */
    uint64_t *npages;
    GQueue demand, push; /* Entry * */
    SfRecent *recent;
    SfPacer pacer;
    int64_t window_us;
    SfEmitterRead read;
    void *opaque;
    SfMcastBatch batch;
    SfEmitterStats st;
};

static bool bit(uint64_t *m, uint64_t i)
{
    return m[i / 64] >> (i % 64) & 1;
}

static void bit_put(uint64_t *m, uint64_t i, bool v)
{
    if (v) {
        m[i / 64] |= 1ull << (i % 64);
    } else {
        m[i / 64] &= ~(1ull << (i % 64));
    }
}

SfEmitter *sf_emitter_new(int fd, unsigned frag_count, const SfSealKeys *k,
                          uint32_t nblocks, const uint64_t *npages,
                          SfEmitterRead read, void *opaque, int64_t now_us)
{
    SfEmitter *e = g_new0(SfEmitter, 1);

    e->seal = sf_seal_sender_new(k, SF_SEAL_PAGES);
    if (!e->seal) {
        g_free(e);
        return NULL;
    }
    e->fd = fd;
    e->frags = frag_count;
    e->fork_id = k->fork_id;
    e->nblocks = nblocks;
    e->npages = g_memdup2(npages, sizeof(uint64_t) * MAX(nblocks, 1));
    e->in_demand = g_new0(uint64_t *, MAX(nblocks, 1));
    e->in_push = g_new0(uint64_t *, MAX(nblocks, 1));
    for (uint32_t b = 0; b < nblocks; b++) {
        uint64_t words = MAX((npages[b] + 63) / 64, 1);

        e->in_demand[b] = g_new0(uint64_t, words);
        e->in_push[b] = g_new0(uint64_t, words);
    }
    g_queue_init(&e->demand);
    g_queue_init(&e->push);
    e->recent = sf_recent_new(nblocks, npages, now_us);
    sf_pacer_init(&e->pacer, RATE_INITIAL, RATE_MIN, RATE_MAX, RATE_BURST,
                  now_us);
    e->window_us = WINDOW_DEFAULT_US;
    e->read = read;
    e->opaque = opaque;
    return e;
}

void sf_emitter_free(SfEmitter *e)
{
    if (!e) {
        return;
    }
    g_queue_clear_full(&e->demand, g_free);
    g_queue_clear_full(&e->push, g_free);
    for (uint32_t b = 0; b < e->nblocks; b++) {
        g_free(e->in_demand[b]);
        g_free(e->in_push[b]);
    }
    g_free(e->in_demand);
    g_free(e->in_push);
    g_free(e->npages);
    sf_recent_free(e->recent);
    sf_seal_sender_free(e->seal);
    g_free(e);
}

uint32_t sf_emitter_queue(SfEmitter *e, uint32_t block, uint64_t page,
                          uint32_t npages, uint32_t flags, int64_t now)
{
    bool demand = flags & SF_REQ_DEMAND;
    uint32_t queued = 0;

    if (block >= e->nblocks || page >= e->npages[block] ||
        npages > e->npages[block] - page) {
        return 0; /* the caller range-checked; never trust it twice */
    }
    for (uint64_t p = page; p < page + npages; p++) {
        uint64_t *mine = demand ? e->in_demand[block] : e->in_push[block];
        Entry *x;

        if (bit(mine, p) || (!demand && bit(e->in_demand[block], p)) ||
            sf_recent_within(e->recent, block, p, now, e->window_us)) {
            e->st.suppressed++;
            continue;
        }
        bit_put(mine, p, true);
        x = g_new(Entry, 1);
        *x = (Entry){ block, p, flags & (SF_REQ_DEMAND | SF_REQ_PREFETCH) };
        g_queue_push_tail(demand ? &e->demand : &e->push, x);
        queued++;
    }
    return queued;
}

uint64_t sf_emitter_push_backlog(const SfEmitter *e)
{
    return e->push.length;
}

void sf_emitter_set_window(SfEmitter *e, int64_t window_us)
{
    e->window_us = CLAMP(window_us, WINDOW_MIN_US, WINDOW_MAX_US);
}

void sf_emitter_report(SfEmitter *e, uint32_t receiver, uint32_t rx_kbps,
                       uint32_t loss_ppm, int64_t now)
{
    sf_pacer_report(&e->pacer, receiver, rx_kbps * 1024.0, loss_ppm, now);
}

/* Seal one message (wire header + fixed part + data) into the batch. */
static void add_datagram(SfEmitter *e, SfMsgType type, const uint8_t *fixed,
                         size_t flen, const uint8_t *data, size_t dlen)
{
    uint8_t *out = sf_mcast_batch_next(&e->batch);
    uint8_t *p = out + SF_SEAL_HDR_SIZE;

    sf_wire_hdr_encode(p, type, flen + dlen, 0, e->fork_id);
    memcpy(p + SF_WIRE_HDR_SIZE, fixed, flen);
    if (dlen) {
        memcpy(p + SF_WIRE_HDR_SIZE + flen, data, dlen);
    }
    e->batch.len[e->batch.n] =
        sf_seal_inplace(e->seal, out, SF_WIRE_HDR_SIZE + flen + dlen);
    e->st.bytes += e->batch.len[e->batch.n];
    e->st.datagrams++;
    e->batch.n++;
}

/* The datagrams of one page: its fragments; or one ZERO for a run of
 * nzero zero pages from it. */
static void add_page(SfEmitter *e, const Entry *x, const uint8_t *data,
                     uint32_t nzero)
{
    uint8_t fixed[SF_WIRE_PAGES_LEN];

    if (!data) {
        SfMsgPages z = { x->block, nzero, x->page * SF_WIRE_PAGE_SIZE,
                         x->flags };

        sf_wire_pages_encode(fixed, &z);
        add_datagram(e, SF_MSG_ZERO, fixed, SF_WIRE_PAGES_LEN, NULL, 0);
        e->st.zero_pages += nzero;
        return;
    }
    for (unsigned i = 0; i < e->frags; i++) {
        size_t s = (SF_WIRE_PAGE_SIZE + e->frags - 1) / e->frags;
        SfMsgFrag f = { x->block, x->page * SF_WIRE_PAGE_SIZE, x->flags, i,
                        e->frags };

        sf_wire_frag_encode(fixed, &f);
        add_datagram(e, SF_MSG_FRAG, fixed, SF_WIRE_FRAG_LEN, data + i * s,
                     sf_wire_frag_len(i, e->frags));
    }
    e->st.data_pages++;
}

/*
 * Zero pages queued right after x, in the same queue, block and address
 * order, not sent within the window: a ZERO run costs what one does.
 * Returns the run's length, x included.
 */
static uint32_t zero_run(SfEmitter *e, GQueue *q, const Entry *x, int64_t now)
{
    uint32_t n = 1;

    for (GList *l = q->head->next; l && n < SF_WIRE_MAX_PAGES; l = l->next) {
        const Entry *y = l->data;
        bool zero = false;

        if (y->block != x->block || y->page != x->page + n ||
            sf_recent_within(e->recent, y->block, y->page, now, e->window_us) ||
            e->read(e->opaque, y->block, y->page, &zero) || !zero) {
            break;
        }
        n++;
    }
    return n;
}

/* What a page puts on the wire: its datagrams' UDP payloads. */
static size_t page_bytes(const SfEmitter *e, const uint8_t *data)
{
    if (!data) {
        return SF_SEAL_OVERHEAD + SF_WIRE_HDR_SIZE + SF_WIRE_PAGES_LEN;
    }
    return (size_t)e->frags *
               (SF_SEAL_OVERHEAD + SF_WIRE_HDR_SIZE + SF_WIRE_FRAG_LEN) +
           SF_WIRE_PAGE_SIZE;
}

/* Send the batch: false when the socket is full for now (-errno in *err
 * when it failed). */
static bool flush(SfEmitter *e, int *err)
{
    int n = sf_mcast_flush(e->fd, &e->batch);

    if (n < 0) {
        *err = n;
        return false;
    }
    return e->batch.n == 0;
}

int64_t sf_emitter_pump(SfEmitter *e, int64_t now)
{
    int err = 0;

    for (;;) {
        GQueue *q = e->demand.length ? &e->demand : &e->push;
        Entry *x = g_queue_peek_head(q);
        const uint8_t *data;
        bool zero = false;
        uint32_t nzero;
        int64_t wait;

        if (!x) {
            break;
        }
        /* Room for a whole page in the batch, or send what is in it. */
        if (SF_MCAST_BATCH - e->batch.n < e->frags && !flush(e, &err)) {
            return err ? err : now + RETRY_US;
        }
        if (sf_recent_within(e->recent, x->block, x->page, now, e->window_us)) {
            /* Went out from the other queue meanwhile. */
            e->st.suppressed++;
            goto drop;
        }
        data = e->read(e->opaque, x->block, x->page, &zero);
        if (!data && !zero) {
            goto drop; /* unreadable: the asker times out, asks again */
        }
        wait = sf_pacer_delay_us(&e->pacer, page_bytes(e, data), now);
        if (wait > 0) {
            e->st.pacer_waits++;
            if (!flush(e, &err) && err) {
                return err;
            }
            return now + wait;
        }
        nzero = data ? 1 : zero_run(e, q, x, now);
        add_page(e, x, data, nzero);
        for (uint32_t i = 1; i < nzero; i++) {
            Entry *y = g_queue_pop_nth(q, 1);

            sf_recent_sent(e->recent, y->block, y->page, now);
            bit_put(q == &e->demand ? e->in_demand[y->block]
                                    : e->in_push[y->block],
                    y->page, false);
            g_free(y);
        }
        sf_recent_sent(e->recent, x->block, x->page, now);
    drop:
        bit_put(q == &e->demand ? e->in_demand[x->block] : e->in_push[x->block],
                x->page, false);
        g_free(g_queue_pop_head(q));
    }
    if (!flush(e, &err)) {
        return err ? err : now + RETRY_US;
    }
    return INT64_MAX;
}

void sf_emitter_stats(const SfEmitter *e, SfEmitterStats *st)
{
    *st = e->st;
    st->queued = e->demand.length + e->push.length;
    st->dropped = e->batch.dropped;
    st->rate = e->pacer.rate;
    st->window_us = e->window_us;
}
