/*
 * Unit tests for the fetch policy (sf-fetch.c) without a VM: demand
 * runs, waiting faults, the background push and its chunk, and with a
 * lossy route time-outs, retries, unicast after repeated misses and in
 * the end game, round-trip samples, reconnects.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <string.h>

#include "sf-fetch.h"
#include "sf-wire.h"

typedef struct Req {
    uint32_t block;
    uint64_t page;
    uint32_t npages;
    uint32_t flags;
} Req;

typedef struct Rig {
    GArray *sent; /* Req */
    SfFetch *f;
    uint64_t npages[2];
} Rig;

static void on_send(void *opaque, uint32_t block, uint64_t page,
                    uint32_t npages, uint32_t flags)
{
    Rig *r = opaque;
    Req q = { block, page, npages, flags };

    g_array_append_val(r->sent, q);
}

static void rig_init(Rig *r, uint64_t p0, uint64_t p1, bool prefetch,
                     bool lossy)
{
    SfFetchConfig cfg = {
        .nblocks = 2,
        .prefetch = prefetch,
        .lossy = lossy,
        .endgame_pages = 0,
        .send = on_send,
        .opaque = r,
    };

    r->npages[0] = p0;
    r->npages[1] = p1;
    cfg.npages = r->npages;
    r->sent = g_array_new(FALSE, FALSE, sizeof(Req));
    r->f = sf_fetch_new(&cfg, 0);
}

static void rig_free(Rig *r)
{
    sf_fetch_free(r->f);
    g_array_free(r->sent, TRUE);
}

static Req *last(Rig *r)
{
    g_assert_cmpuint(r->sent->len, >, 0);
    return &g_array_index(r->sent, Req, r->sent->len - 1);
}

static void test_demand(void)
{
    Rig r;
    SfFetchStats st;
    uint64_t p50, p99;

    rig_init(&r, 100, 5, false, false);
    g_assert_true(sf_fetch_fault(r.f, 0, 10, 1000));
    g_assert_cmpuint(r.sent->len, ==, 1);
    g_assert_cmpuint(last(&r)->page, ==, 10);
    g_assert_cmpuint(last(&r)->npages, ==, SF_FETCH_DEMAND_RUN);
    g_assert_cmphex(last(&r)->flags, ==, SF_REQ_DEMAND);
    /* A second thread on the same page, one on a page already asked
     * for: nothing more is sent. */
    g_assert_true(sf_fetch_fault(r.f, 0, 10, 1100));
    g_assert_true(sf_fetch_fault(r.f, 0, 12, 1200));
    g_assert_cmpuint(r.sent->len, ==, 1);
    /* The run stops at pages asked for already. */
    g_assert_true(sf_fetch_fault(r.f, 0, 6, 1300));
    g_assert_cmpuint(last(&r)->page, ==, 6);
    g_assert_cmpuint(last(&r)->npages, ==, 4);
    /* ... and at the block's end. */
    g_assert_true(sf_fetch_fault(r.f, 1, 3, 1400));
    g_assert_cmpuint(last(&r)->npages, ==, 2);
    /* Arrival: newly present counted once; waiting faults answered. */
    g_assert_cmpuint(sf_fetch_arrived(r.f, 0, 10, 8, 3000), ==, 8);
    g_assert_cmpuint(sf_fetch_arrived(r.f, 0, 10, 8, 3000), ==, 0);
    g_assert_false(sf_fetch_fault(r.f, 0, 12, 3100)); /* present now */
    g_assert_true(sf_fetch_present(r.f, 0, 17));
    g_assert_false(sf_fetch_requested(r.f, 0, 17));
    sf_fetch_latency(r.f, &p50, &p99);
    g_assert_cmpuint(p99, ==, 2000); /* page 10 waited 1000..3000 */
    /* Out of range: refused, nothing sent. */
    g_assert_false(sf_fetch_fault(r.f, 2, 0, 3200));
    g_assert_false(sf_fetch_fault(r.f, 1, 5, 3200));
    g_assert_cmpuint(sf_fetch_arrived(r.f, 1, 4, 2, 3200), ==, 0);
    sf_fetch_stats(r.f, &st);
    g_assert_cmpuint(st.pages_present, ==, 8);
    g_assert_cmpuint(st.requests, ==, 3);
    g_assert_false(sf_fetch_complete(r.f));
    rig_free(&r);
}

static void test_push(void)
{
    Rig r;
    int64_t t = 0;

    rig_init(&r, 3000, 16, true, false);
    /* Not before a quiet period. */
    g_assert_cmpint(sf_fetch_tick(r.f, 50000), ==, SF_FETCH_QUIET_US);
    g_assert_cmpuint(r.sent->len, ==, 0);
    t = SF_FETCH_QUIET_US;
    sf_fetch_tick(r.f, t);
    /* Two in flight, the chunk doubling. */
    g_assert_cmpuint(r.sent->len, ==, 2);
    g_assert_cmpuint(g_array_index(r.sent, Req, 0).npages, ==, 16);
    g_assert_cmpuint(g_array_index(r.sent, Req, 1).page, ==, 16);
    g_assert_cmpuint(g_array_index(r.sent, Req, 1).npages, ==, 32);
    g_assert_cmphex(last(&r)->flags, ==, SF_REQ_PREFETCH);
    sf_fetch_tick(r.f, t + 10);
    g_assert_cmpuint(r.sent->len, ==, 2); /* depth 2 */
    /* The first answered: the next goes, bigger. */
    sf_fetch_arrived(r.f, 0, 0, 16, t + 20);
    sf_fetch_tick(r.f, t + 20);
    g_assert_cmpuint(r.sent->len, ==, 3);
    g_assert_cmpuint(last(&r)->page, ==, 48);
    g_assert_cmpuint(last(&r)->npages, ==, 64);
    /* A fault: demand first, and the chunk is small again. */
    sf_fetch_fault(r.f, 0, 2000, t + 30);
    g_assert_cmphex(last(&r)->flags, ==, SF_REQ_DEMAND);
    sf_fetch_arrived(r.f, 0, 16, 32, t + 40);
    sf_fetch_arrived(r.f, 0, 2000, 8, t + 40);
    sf_fetch_tick(r.f, t + 50);
    g_assert_cmphex(last(&r)->flags, ==, SF_REQ_DEMAND); /* not quiet */
    t += 30 + SF_FETCH_QUIET_US;
    sf_fetch_tick(r.f, t);
    g_assert_cmpuint(last(&r)->npages, ==, 16);
    /* Everything arrives: complete, no more requests. */
    sf_fetch_arrived(r.f, 0, 0, 3000, t + 1);
    sf_fetch_arrived(r.f, 1, 0, 16, t + 1);
    g_assert_true(sf_fetch_complete(r.f));
    guint n = r.sent->len;
    g_assert_cmpint(sf_fetch_tick(r.f, t + SF_FETCH_QUIET_US * 10), ==,
                    INT64_MAX);
    g_assert_cmpuint(r.sent->len, ==, n);
    rig_free(&r);
}

static void test_lossy_retries_and_unicast(void)
{
    Rig r;
    SfFetchStats st;
    int64_t t = 1000, next;

    rig_init(&r, 1000, 1, false, true);
    sf_fetch_fault(r.f, 0, 5, t);
    g_assert_cmphex(last(&r)->flags, ==, SF_REQ_DEMAND);
    /* Before any round trip the timeout is the initial one. */
    next = sf_fetch_tick(r.f, t);
    g_assert_cmpint(next, ==, t + 200000);
    /* Lost: asked again, once per timeout, then for a unicast answer. */
    for (int i = 1; i <= SF_FETCH_MCAST_TRIES; i++) {
        t = sf_fetch_tick(r.f, t);
        sf_fetch_tick(r.f, t);
        g_assert_cmpuint(r.sent->len, ==, (guint)i + 1);
        g_assert_cmpuint(last(&r)->page, ==, 5);
        g_assert_cmpuint(last(&r)->npages, ==, 1);
        if (i < SF_FETCH_MCAST_TRIES) {
            g_assert_cmphex(last(&r)->flags, ==, SF_REQ_DEMAND);
        } else {
            g_assert_cmphex(last(&r)->flags, ==,
                            SF_REQ_DEMAND | SF_REQ_UNICAST);
        }
    }
    /* A unicast answer has no deadline. */
    g_assert_cmpint(sf_fetch_tick(r.f, t + 10), ==, INT64_MAX);
    sf_fetch_stats(r.f, &st);
    g_assert_cmpuint(st.retries, ==, SF_FETCH_MCAST_TRIES);
    g_assert_cmpuint(st.unicast_asks, ==, 1);
    sf_fetch_arrived(r.f, 0, 5, 1, t + 20);
    /* Pages that came without being asked for. */
    sf_fetch_arrived(r.f, 0, 100, 10, t + 30);
    sf_fetch_stats(r.f, &st);
    g_assert_cmpuint(st.unrequested, ==, 10);
    rig_free(&r);
}

static void test_lossy_rtt(void)
{
    Rig r;
    SfFetchStats st;
    int64_t t = 0;

    rig_init(&r, 1000, 1, false, true);
    /* Answers in 1 ms: the timeout shrinks to the floor's order. */
    for (int i = 0; i < 50; i++) {
        sf_fetch_fault(r.f, 0, i * 10, t);
        sf_fetch_arrived(r.f, 0, i * 10, SF_FETCH_DEMAND_RUN, t + 1000);
        t += 5000;
    }
    sf_fetch_stats(r.f, &st);
    g_assert_cmpint(st.srtt_us, ==, 1000);
    g_assert_cmpint(st.rto_us, <, 5000);
    /* The next request times out in a few ms, not 200. */
    sf_fetch_fault(r.f, 0, 900, t);
    g_assert_cmpint(sf_fetch_tick(r.f, t), <, t + 5000);
    rig_free(&r);
}

/* Many requests lost at once (one datagram, or a lossy link in every
 * round trip): the time-out backs off once, not once per request. */
static void test_lossy_backoff_once(void)
{
    Rig r;
    SfFetchStats st;
    int64_t t = 0, rto;

    rig_init(&r, 1000, 1, false, true);
    for (int i = 0; i < 50; i++) {
        sf_fetch_fault(r.f, 0, i * 10, t);
        sf_fetch_arrived(r.f, 0, i * 10, SF_FETCH_DEMAND_RUN, t + 1000);
        t += 5000;
    }
    sf_fetch_stats(r.f, &st);
    rto = st.rto_us;
    for (int i = 0; i < 10; i++) {
        sf_fetch_fault(r.f, 0, 600 + i * 10, t);
    }
    t += rto + 1;
    sf_fetch_tick(r.f, t); /* all ten expire, and are asked again */
    sf_fetch_stats(r.f, &st);
    g_assert_cmpuint(st.retries, ==, 10);
    g_assert_cmpint(st.rto_us, ==, 2 * rto);
    /* The retries, sent with the longer time-out, miss it too: once
     * more. */
    t += 2 * rto + 1;
    sf_fetch_tick(r.f, t);
    sf_fetch_stats(r.f, &st);
    g_assert_cmpint(st.rto_us, ==, 4 * rto);
    /* An answer at the first try brings it back. */
    sf_fetch_fault(r.f, 0, 900, t);
    sf_fetch_arrived(r.f, 0, 900, SF_FETCH_DEMAND_RUN, t + 1000);
    sf_fetch_stats(r.f, &st);
    g_assert_cmpint(st.rto_us, ==, rto);
    /* Part of a run came (the faulting page), the rest was lost: the
     * request was answered in time, no back-off. */
    sf_fetch_arrived(r.f, 0, 600, 100, t + 2000); /* the ten above */
    t += 10000;
    sf_fetch_fault(r.f, 0, 950, t);
    sf_fetch_arrived(r.f, 0, 950, 1, t + 1000);
    t += rto + 1;
    sf_fetch_tick(r.f, t);
    sf_fetch_stats(r.f, &st);
    g_assert_cmpint(st.rto_us, ==, rto);
    rig_free(&r);
}

/* Answers waiting unread (behind): the push asks for nothing more and its
 * requests do not time out; a fault still asks at once. */
static void test_behind(void)
{
    Rig r;
    guint n;

    rig_init(&r, 4096, 1, true, true);
    sf_fetch_tick(r.f, 1000000); /* quiet: the push starts */
    n = r.sent->len;
    g_assert_cmpuint(n, >, 0);
    g_assert_cmphex(last(&r)->flags, ==, SF_REQ_PREFETCH);
    sf_fetch_set_behind(r.f, true);
    sf_fetch_tick(r.f, 60000000); /* long past every push deadline */
    g_assert_cmpuint(r.sent->len, ==, n);
    sf_fetch_fault(r.f, 0, 4000, 60000001);
    g_assert_cmpuint(r.sent->len, ==, n + 1);
    g_assert_cmphex(last(&r)->flags, ==, SF_REQ_DEMAND);
    /* Caught up: expired push requests are asked again. */
    sf_fetch_set_behind(r.f, false);
    sf_fetch_tick(r.f, 120000000);
    g_assert_cmpuint(r.sent->len, >, n + 1);
    rig_free(&r);
}

static void test_endgame(void)
{
    Rig r;
    SfFetchConfig dummy;

    (void)dummy;
    rig_init(&r, 100, 1, false, true);
    sf_fetch_set_lossy(r.f, true, 20);
    sf_fetch_fault(r.f, 0, 0, 0);
    g_assert_cmphex(last(&r)->flags, ==, SF_REQ_DEMAND); /* 101 missing */
    sf_fetch_arrived(r.f, 0, 0, 90, 10);
    sf_fetch_fault(r.f, 0, 95, 20); /* 11 missing */
    g_assert_cmphex(last(&r)->flags, ==, SF_REQ_DEMAND | SF_REQ_UNICAST);
    rig_free(&r);
}

static void test_lossy_push_passes(void)
{
    Rig r;
    SfFetchStats st;
    int64_t t = SF_FETCH_QUIET_US;

    rig_init(&r, 40, 1, true, true);
    sf_fetch_tick(r.f, t);
    g_assert_cmpuint(r.sent->len, ==, 2); /* 0..15, 16..39 */
    /* Half of the first chunk arrives, the rest is lost. */
    sf_fetch_arrived(r.f, 0, 0, 8, t + 100);
    g_assert_cmpint(sf_fetch_tick(r.f, t + 100), <, t + 300000);
    /* Past every deadline: both expire; the push goes on with block 1,
     * then a second pass over block 0. */
    t += 1000000;
    sf_fetch_tick(r.f, t);
    sf_fetch_arrived(r.f, 1, 0, 1, t + 1);
    sf_fetch_tick(r.f, t + 1);
    /* Expired: a new pass asks for what is still missing. */
    sf_fetch_stats(r.f, &st);
    g_assert_cmpuint(st.push_passes, >=, 1);
    g_assert_false(sf_fetch_requested(r.f, 0, 7));
    g_assert_true(sf_fetch_requested(r.f, 0, 8));
    g_assert_cmpuint(last(&r)->flags & SF_REQ_PREFETCH, !=, 0);
    /* A fault on a page only the push asked for: a demand goes too. */
    guint n = r.sent->len;
    sf_fetch_fault(r.f, 0, 8, t + 2);
    g_assert_cmpuint(r.sent->len, ==, n + 1);
    g_assert_cmphex(last(&r)->flags, ==, SF_REQ_DEMAND);
    g_assert_cmpuint(last(&r)->page, ==, 8);
    rig_free(&r);
}

static void test_disconnect_resend(void)
{
    Rig r;

    rig_init(&r, 100, 1, false, false);
    sf_fetch_fault(r.f, 0, 10, 0);
    sf_fetch_fault(r.f, 0, 50, 0);
    g_assert_cmpuint(r.sent->len, ==, 2);
    sf_fetch_disconnected(r.f);
    g_assert_false(sf_fetch_requested(r.f, 0, 10));
    sf_fetch_resend(r.f, 10);
    g_assert_cmpuint(r.sent->len, ==, 4);
    g_assert_cmpuint(g_array_index(r.sent, Req, 2).page, ==, 10);
    g_assert_cmpuint(g_array_index(r.sent, Req, 3).page, ==, 50);
    g_assert_cmpuint(last(&r)->npages, ==, 1);
    rig_free(&r);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/fetch/demand", test_demand);
    g_test_add_func("/fetch/push", test_push);
    g_test_add_func("/fetch/lossy/retries-unicast",
                    test_lossy_retries_and_unicast);
    g_test_add_func("/fetch/lossy/rtt", test_lossy_rtt);
    g_test_add_func("/fetch/lossy/endgame", test_endgame);
    g_test_add_func("/fetch/lossy/backoff-once", test_lossy_backoff_once);
    g_test_add_func("/fetch/lossy/behind", test_behind);
    g_test_add_func("/fetch/lossy/push-passes", test_lossy_push_passes);
    g_test_add_func("/fetch/disconnect-resend", test_disconnect_resend);
    return g_test_run();
}
