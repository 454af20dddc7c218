/*
 * Unit tests for the pure parts of the multicast transport: round-trip
 * estimation (sf-rtt), page reassembly from fragments (sf-reasm),
 * pacing from receiver reports (sf-pacer) and request suppression
 * (sf-recent).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <string.h>

#include "sf-pacer.h"
#include "sf-reasm.h"
#include "sf-recent.h"
#include "sf-rtt.h"

static void test_rtt(void)
{
    SfRtt r;

    sf_rtt_init(&r, 200000, 2000, 1000000);
    g_assert_cmpint(sf_rtt_rto_us(&r), ==, 200000); /* no sample yet */
    sf_rtt_sample(&r, 1000);
    /* srtt 1000, rttvar 500: rto 3000 */
    g_assert_cmpint(sf_rtt_rto_us(&r), ==, 3000);
    for (int i = 0; i < 100; i++) {
        sf_rtt_sample(&r, 1000);
    }
    /* Steady 1 ms: the variance decays, the floor holds. */
    g_assert_cmpint(sf_rtt_rto_us(&r), ==, 2000);
    sf_rtt_sample(&r, 50000);
    g_assert_cmpint(sf_rtt_rto_us(&r), >, 20000); /* a spike counts */
    sf_rtt_backoff(&r);
    sf_rtt_backoff(&r);
    int64_t b = sf_rtt_rto_us(&r);
    for (int i = 0; i < 30; i++) {
        sf_rtt_backoff(&r);
    }
    g_assert_cmpint(sf_rtt_rto_us(&r), ==, 1000000); /* the ceiling */
    g_assert_cmpint(b, <=, 1000000);
    sf_rtt_sample(&r, 1000); /* a sample ends the backoff */
    g_assert_cmpint(sf_rtt_rto_us(&r), <, 100000);
    sf_rtt_sample(&r, -5); /* ignored */
}

static void fill(uint8_t *p, uint32_t seed)
{
    for (unsigned i = 0; i < SF_REASM_PAGE; i++) {
        p[i] = (uint8_t)(seed * 31 + i * 7);
    }
}

static void test_reasm_orders(void)
{
    uint8_t page[SF_REASM_PAGE];
    const uint8_t *out = NULL;
    SfReasm *r = sf_reasm_new(8);
    SfReasmStats st;
    const unsigned counts[] = { 1, 2, 3, 4, 7, 32 };

    fill(page, 1);
    for (size_t c = 0; c < G_N_ELEMENTS(counts); c++) {
        unsigned n = counts[c];
        size_t s = (SF_REASM_PAGE + n - 1) / n;
        /* Last fragment first, then the others in reverse: any order. */
        for (unsigned k = 0; k < n; k++) {
            unsigned i = n - 1 - k;
            size_t len = sf_wire_frag_len(i, n);
            SfReasmResult res =
                sf_reasm_add(r, 2, 77 + c, i, n, page + i * s, len, &out);
            g_assert_cmpint(res, ==,
                            k + 1 == n ? SF_REASM_COMPLETE : SF_REASM_MORE);
        }
        g_assert_cmpmem(out, SF_REASM_PAGE, page, SF_REASM_PAGE);
    }
    sf_reasm_stats(r, &st);
    g_assert_cmpuint(st.completed, ==, G_N_ELEMENTS(counts));
    g_assert_cmpuint(st.partial, ==, 0);
    sf_reasm_free(r);
}

static void test_reasm_refuses(void)
{
    uint8_t page[SF_REASM_PAGE];
    const uint8_t *out;
    SfReasm *r = sf_reasm_new(4);
    SfReasmStats st;

    fill(page, 2);
    /* Length, index and count that do not fit. */
    g_assert_cmpint(sf_reasm_add(r, 0, 1, 0, 3, page, 100, &out), ==,
                    SF_REASM_BAD);
    g_assert_cmpint(sf_reasm_add(r, 0, 1, 3, 3, page, 1366, &out), ==,
                    SF_REASM_BAD);
    g_assert_cmpint(sf_reasm_add(r, 0, 1, 0, 0, page, 0, &out), ==,
                    SF_REASM_BAD);
    g_assert_cmpint(sf_reasm_add(r, 0, 1, 0, 33, page, 125, &out), ==,
                    SF_REASM_BAD);
    /* A fragment twice, and a page whose count changes. */
    g_assert_cmpint(sf_reasm_add(r, 0, 1, 0, 3, page, 1366, &out), ==,
                    SF_REASM_MORE);
    g_assert_cmpint(sf_reasm_add(r, 0, 1, 0, 3, page, 1366, &out), ==,
                    SF_REASM_DUP);
    g_assert_cmpint(sf_reasm_add(r, 0, 1, 1, 2, page, 2048, &out), ==,
                    SF_REASM_BAD);
    sf_reasm_stats(r, &st);
    g_assert_cmpuint(st.bad, ==, 5);
    g_assert_cmpuint(st.duplicates, ==, 1);
    sf_reasm_free(r);
}

static void test_reasm_eviction_and_forget(void)
{
    uint8_t page[SF_REASM_PAGE];
    const uint8_t *out;
    SfReasm *r = sf_reasm_new(2);
    SfReasmStats st;

    fill(page, 3);
    for (uint64_t p = 0; p < 3; p++) {
        g_assert_cmpint(sf_reasm_add(r, 0, p, 0, 2, page, 2048, &out), ==,
                        SF_REASM_MORE);
    }
    sf_reasm_stats(r, &st);
    g_assert_cmpuint(st.dropped_partial, ==, 1); /* page 0, the oldest */
    g_assert_cmpuint(st.partial, ==, 2);
    /* Page 0 lost its first half: its second half starts it afresh. */
    g_assert_cmpint(sf_reasm_add(r, 0, 0, 1, 2, page + 2048, 2048, &out), ==,
                    SF_REASM_MORE);
    sf_reasm_forget(r, 0, 2);
    sf_reasm_forget(r, 0, 99); /* unknown: nothing */
    g_assert_cmpint(sf_reasm_add(r, 0, 2, 1, 2, page + 2048, 2048, &out), ==,
                    SF_REASM_MORE);
    g_assert_cmpint(sf_reasm_add(r, 0, 2, 0, 2, page, 2048, &out), ==,
                    SF_REASM_COMPLETE);
    g_assert_cmpmem(out, SF_REASM_PAGE, page, SF_REASM_PAGE);
    sf_reasm_free(r);
}

static void test_pacer(void)
{
    SfPacer p;
    int64_t t = 1000000;
    double r0;

    sf_pacer_init(&p, 10e6, 1e6, 1e9, 64 * 1024, t);
    /* The burst goes at once, then the rate holds. */
    g_assert_cmpint(sf_pacer_delay_us(&p, 64 * 1024, t), ==, 0);
    int64_t d = sf_pacer_delay_us(&p, 10000, t);
    g_assert_cmpint(d, >=, 999);
    g_assert_cmpint(d, <=, 1001); /* 10 kB at 10 MB/s */
    g_assert_cmpint(sf_pacer_delay_us(&p, 10000, t + d), ==, 0);

    /* Lossy receiver: slower. */
    r0 = p.rate;
    t += 100000;
    sf_pacer_report(&p, 1, 5e6, 50000, t);
    sf_pacer_delay_us(&p, 1, t);
    g_assert_cmpfloat(p.rate, <, r0);
    /* No loss: faster again, capped near 1.5 x what they take while the
     * pacer is the limit. */
    for (int i = 0; i < 200; i++) {
        t += 60000;
        sf_pacer_report(&p, 1, 8e6, 0, t);
        sf_pacer_report(&p, 2, 8e6, 0, t);
        while (sf_pacer_delay_us(&p, 100000, t) == 0) {
        }
    }
    g_assert_cmpfloat(p.rate, <=, 12e6 * 1.1 + 1);
    g_assert_cmpfloat(p.rate, >=, 8e6);
    /* Receivers gone quiet: the rate stays as it was. */
    r0 = p.rate;
    t += 5000000;
    sf_pacer_delay_us(&p, 1, t);
    g_assert_cmpfloat(p.rate, ==, r0);
    /* Never below the floor. */
    for (int i = 0; i < 100; i++) {
        t += 60000;
        sf_pacer_report(&p, 3, 1, 900000, t);
        sf_pacer_delay_us(&p, 1, t);
    }
    g_assert_cmpfloat(p.rate, ==, 1e6);
}

/*
 * Send at most `rate` for `us` and return what went: drives the pacer's
 * token bucket as the emitter does, in 64 kB datagrams.
 */
static double send_for(SfPacer *p, int64_t *t, int64_t us)
{
    double sent = 0;
    int64_t end = *t + us;

    while (*t < end) {
        int64_t d = sf_pacer_delay_us(p, 64 * 1024, *t);

        if (d == 0) {
            sent += 64 * 1024;
        } else {
            *t += d < end - *t ? d : end - *t;
        }
    }
    return sent;
}

/* A link that drops a fifth of everything, at any rate: the pacer learns
 * that loss as the receiver's floor instead of going down to min_rate. */
static void test_pacer_random_loss(void)
{
    SfPacer p;
    int64_t t = 1000000;

    sf_pacer_init(&p, 100e6, 1e6, 1e9, 256 * 1024, t);
    for (int i = 0; i < 100; i++) { /* 5 s of 50 ms rounds */
        double sent = send_for(&p, &t, 50000);

        sf_pacer_report(&p, 1, sent * 0.8 * 20, 200000, t);
        sf_pacer_report(&p, 2, sent * 20, 0, t);
    }
    g_assert_cmpuint(p.rep[0].floor_ppm, >=, 150000);
    g_assert_cmpfloat(p.rate, >, 40e6);

    /* Congestion on top of it (the receiver takes 10 MB/s at most): the
     * loss above the floor still slows the group, down to about what it
     * takes. */
    for (int i = 0; i < 200; i++) {
        double sent = send_for(&p, &t, 50000) * 20;
        double got = (sent * 0.8 < 10e6 ? sent * 0.8 : 10e6);

        sf_pacer_report(&p, 1, got, (uint32_t)(1e6 * (1 - got / sent)), t);
    }
    g_assert_cmpfloat(p.rate, <, 25e6);
    g_assert_cmpfloat(p.rate, >, 5e6);
}

static void test_recent(void)
{
    const uint64_t npages[2] = { 16, 4 };
    int64_t t = 5000000;
    SfRecent *r = sf_recent_new(2, npages, t);

    g_assert_false(sf_recent_within(r, 0, 3, t, 10000));
    sf_recent_sent(r, 0, 3, t);
    g_assert_true(sf_recent_within(r, 0, 3, t + 4000, 10000));
    g_assert_false(sf_recent_within(r, 0, 3, t + 12000, 10000));
    g_assert_false(sf_recent_within(r, 1, 3, t, 10000)); /* other block */
    /* Out of range: never "recent", never written. */
    sf_recent_sent(r, 1, 4, t);
    sf_recent_sent(r, 2, 0, t);
    g_assert_false(sf_recent_within(r, 1, 4, t, 10000));
    g_assert_false(sf_recent_within(r, 2, 0, t, 10000));
    sf_recent_free(r);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/mcast/rtt", test_rtt);
    g_test_add_func("/mcast/reasm/orders", test_reasm_orders);
    g_test_add_func("/mcast/reasm/refuses", test_reasm_refuses);
    g_test_add_func("/mcast/reasm/eviction", test_reasm_eviction_and_forget);
    g_test_add_func("/mcast/pacer", test_pacer);
    g_test_add_func("/mcast/pacer/random-loss", test_pacer_random_loss);
    g_test_add_func("/mcast/recent", test_recent);
    return g_test_run();
}
