/*
 * Unit tests for one page's way over the multicast transport, without
 * multicast routing: the page server's emitter (sf-emitter.h) sends on a
 * UDP socket connected to a loopback port, and the clone's receiver
 * (sf-mcrecv.h) reads it there.  Whatever reaches the receiver is placed
 * only if it is the fork's page, byte for byte: lost datagrams, forged
 * or replayed ones, another fork's, and damaged fragments never place a
 * page that differs from the image.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <arpa/inet.h>
#include <glib.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sf-emitter.h"
#include "sf-mcast.h"
#include "sf-mcrecv.h"
#include "sf-seal.h"
#include "sf-wire.h"

#define NBLOCKS 2
#define PAGE    SF_WIRE_PAGE_SIZE
#define FORK_ID 0x5eed5eedull

static const uint64_t npages[NBLOCKS] = { 300, 40 };
static const uint8_t secret[SF_WIRE_SECRET_LEN] = "0123456789abcde";

typedef struct Rig {
    uint8_t *image[NBLOCKS];
    uint8_t *placed[NBLOCKS]; /* the clone's RAM */
    bool *present[NBLOCKS];
    uint64_t place_calls;
    int tx, rx;
    SfSealKeys keys;
    SfEmitter *em;
    SfMcrecv *mr;
} Rig;

/* Every third page zero, the others with bytes of their own; the end of
 * block 1 a run of zero pages (sent as one ZERO). */
static void fill(Rig *r)
{
    for (int b = 0; b < NBLOCKS; b++) {
        r->image[b] = g_malloc0(npages[b] * PAGE);
        r->placed[b] = g_malloc0(npages[b] * PAGE);
        r->present[b] = g_new0(bool, npages[b]);
        for (uint64_t p = 0; p < npages[b]; p++) {
            if (p % 3 == 0 || (b == 1 && p >= 20)) {
                continue;
            }
            for (unsigned i = 0; i < PAGE; i++) {
                r->image[b][p * PAGE + i] = (uint8_t)(b * 131 + p * 7 + i);
            }
        }
    }
}

static const uint8_t *read_page(void *opaque, uint32_t block, uint64_t page,
                                bool *zero)
{
    Rig *r = opaque;
    const uint8_t *p = r->image[block] + page * PAGE;

    *zero = p[0] == 0 && !memcmp(p, p + 1, PAGE - 1);
    return *zero ? NULL : p;
}

static bool have(void *opaque, uint32_t block, uint64_t page)
{
    Rig *r = opaque;

    return r->present[block][page];
}

static void place(void *opaque, uint32_t block, uint64_t page,
                  const uint8_t *data)
{
    Rig *r = opaque;

    g_assert_false(r->present[block][page]);
    if (data) {
        memcpy(r->placed[block] + page * PAGE, data, PAGE);
    } else {
        memset(r->placed[block] + page * PAGE, 0, PAGE);
    }
    r->present[block][page] = true;
    r->place_calls++;
}

static void udp_pair(int *tx, int *rx)
{
    struct sockaddr_in a = { .sin_family = AF_INET };
    socklen_t len = sizeof(a);
    int buf = 8 << 20;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *rx = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    g_assert_cmpint(bind(*rx, (struct sockaddr *)&a, sizeof(a)), ==, 0);
    g_assert_cmpint(getsockname(*rx, (struct sockaddr *)&a, &len), ==, 0);
    setsockopt(*rx, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf));
    *tx = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    g_assert_cmpint(connect(*tx, (struct sockaddr *)&a, sizeof(a)), ==, 0);
}

static Rig *rig_new(unsigned frags)
{
    Rig *r = g_new0(Rig, 1);

    fill(r);
    udp_pair(&r->tx, &r->rx);
    sf_seal_keys_derive(&r->keys, secret, FORK_ID);
    r->em = sf_emitter_new(r->tx, frags, &r->keys, NBLOCKS, npages, read_page,
                           r, g_get_monotonic_time());
    g_assert_nonnull(r->em);
    r->mr = sf_mcrecv_new(&r->keys, NBLOCKS, npages, have, place, r,
                          g_get_monotonic_time());
    return r;
}

static void rig_free(Rig *r)
{
    sf_emitter_free(r->em);
    sf_mcrecv_free(r->mr);
    close(r->tx);
    close(r->rx);
    for (int b = 0; b < NBLOCKS; b++) {
        g_free(r->image[b]);
        g_free(r->placed[b]);
        g_free(r->present[b]);
    }
    g_free(r);
}

/* Pump the emitter until it has nothing left, draining the receiver. */
static void run(Rig *r)
{
    for (int i = 0; i < 100000; i++) {
        int64_t next = sf_emitter_pump(r->em, g_get_monotonic_time());

        g_assert_cmpint(next, >=, 0);
        sf_mcrecv_drain(r->mr, r->rx, 1024, g_get_monotonic_time());
        if (next == INT64_MAX) {
            g_usleep(2000);
            sf_mcrecv_drain(r->mr, r->rx, 1 << 20, g_get_monotonic_time());
            return;
        }
    }
    g_assert_not_reached();
}

/* Every page placed is the image's; returns how many are placed. */
static uint64_t check_placed(Rig *r)
{
    uint64_t n = 0;

    for (int b = 0; b < NBLOCKS; b++) {
        for (uint64_t p = 0; p < npages[b]; p++) {
            if (!r->present[b][p]) {
                continue;
            }
            g_assert_cmpmem(r->placed[b] + p * PAGE, PAGE,
                            r->image[b] + p * PAGE, PAGE);
            n++;
        }
    }
    return n;
}

static void test_all_pages(gconstpointer data)
{
    unsigned frags = GPOINTER_TO_UINT(data);
    Rig *r = rig_new(frags);
    SfMcrecvStats st;
    SfEmitterStats es;

    sf_emitter_set_window(r->em, 200000);

    g_assert_cmpuint(sf_emitter_queue(r->em, 0, 0, npages[0], SF_REQ_PREFETCH,
                                      g_get_monotonic_time()),
                     ==, npages[0]);
    g_assert_cmpuint(sf_emitter_queue(r->em, 1, 0, npages[1], SF_REQ_DEMAND,
                                      g_get_monotonic_time()),
                     ==, npages[1]);
    run(r);
    g_assert_cmpuint(check_placed(r), ==, npages[0] + npages[1]);
    sf_mcrecv_stats(r->mr, &st);
    sf_emitter_stats(r->em, &es);
    g_assert_cmpuint(st.zero_pages, ==, es.zero_pages);
    g_assert_cmpuint(st.data_pages, ==, es.data_pages);
    /* Block 1's zero pages: 0, 3, ..., 18 (7, each alone between data
     * pages), then 20..39 (20, one run): 8 ZERO datagrams. */
    g_assert_cmpuint(es.zero_pages, ==, (npages[0] + 2) / 3 + 7 + 20);
    g_assert_cmpuint(es.datagrams, ==,
                     (npages[0] + 2) / 3 + 7 + 1 + es.data_pages * frags);
    g_assert_cmpuint(st.auth_failed + st.replayed + st.malformed + st.other, ==,
                     0);
    /* Asked again within the window: suppressed, nothing sent twice. */
    g_assert_cmpuint(sf_emitter_queue(r->em, 1, 0, npages[1], SF_REQ_DEMAND,
                                      g_get_monotonic_time()),
                     ==, 0);
    /* Past the window it was lost, or asked for by a late joiner: sent. */
    sf_emitter_set_window(r->em, 1000);
    g_usleep(2000);
    g_assert_cmpuint(sf_emitter_queue(r->em, 1, 0, npages[1], SF_REQ_DEMAND,
                                      g_get_monotonic_time()),
                     ==, npages[1]);
    rig_free(r);
}

/* Datagrams lost on the way (every 7th): no page is placed from a
 * partial one, the loss is measured, and the rest is intact. */
static void test_loss(void)
{
    Rig *r = rig_new(3);
    uint8_t buf[SF_MCAST_MAX_DGRAM];
    uint64_t seen = 0;
    SfMcrecvStats st;
    uint32_t kbps, ppm;

    sf_emitter_queue(r->em, 0, 0, npages[0], SF_REQ_PREFETCH,
                     g_get_monotonic_time());
    for (;;) {
        int64_t next = sf_emitter_pump(r->em, g_get_monotonic_time());
        ssize_t n;

        while ((n = recv(r->rx, buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
            if (++seen % 7 != 0) {
                sf_mcrecv_input(r->mr, buf, n, g_get_monotonic_time());
            }
        }
        if (next == INT64_MAX) {
            break;
        }
    }
    g_usleep(120000);
    sf_mcrecv_rates(r->mr, g_get_monotonic_time(), &kbps, &ppm);
    sf_mcrecv_stats(r->mr, &st);
    g_assert_cmpuint(check_placed(r), ==, st.data_pages + st.zero_pages);
    g_assert_cmpuint(check_placed(r), <, npages[0]);
    g_assert_cmpuint(check_placed(r), >, npages[0] / 2);
    /* 1 in 7 lost: 142857 ppm, give or take the first datagram. */
    g_assert_cmpuint(ppm, >, 130000);
    g_assert_cmpuint(ppm, <, 160000);
    g_assert_cmpuint(kbps, >, 0);
    rig_free(r);
}

/* Capture what the emitter sends for one data page. */
static unsigned capture(Rig *r, uint32_t block, uint64_t page,
                        uint8_t (*out)[SF_MCAST_MAX_DGRAM], size_t *len)
{
    unsigned n = 0;
    ssize_t got;

    sf_emitter_queue(r->em, block, page, 1, SF_REQ_DEMAND,
                     g_get_monotonic_time());
    while (sf_emitter_pump(r->em, g_get_monotonic_time()) != INT64_MAX) {
    }
    while (n < 8 &&
           (got = recv(r->rx, out[n], SF_MCAST_MAX_DGRAM, MSG_DONTWAIT)) > 0) {
        len[n++] = got;
    }
    return n;
}

static void test_hostile(void)
{
    Rig *r = rig_new(2);
    uint8_t d[8][SF_MCAST_MAX_DGRAM], copy[SF_MCAST_MAX_DGRAM];
    size_t len[8];
    SfMcrecvStats st;
    SfSealKeys other;
    SfSealSender *tx;
    uint8_t plain[SF_WIRE_HDR_SIZE + SF_WIRE_FRAG_LEN + PAGE];
    unsigned n = capture(r, 0, 1, d, len);

    g_assert_cmpuint(n, ==, 2);
    /* A bit flipped in each fragment: neither authenticates. */
    for (unsigned i = 0; i < n; i++) {
        memcpy(copy, d[i], len[i]);
        copy[SF_SEAL_HDR_SIZE + 30] ^= 1;
        sf_mcrecv_input(r->mr, copy, len[i], g_get_monotonic_time());
    }
    sf_mcrecv_stats(r->mr, &st);
    g_assert_cmpuint(st.auth_failed, ==, 2);
    g_assert_false(r->present[0][1]);

    /* Another fork's key sealing a page of its own: not ours. */
    sf_seal_keys_derive(&other, secret, FORK_ID + 1);
    tx = sf_seal_sender_new(&other, SF_SEAL_PAGES);
    {
        SfMsgPages z = { 0, 1, 2 * PAGE, SF_REQ_DEMAND };

        sf_wire_hdr_encode(plain, SF_MSG_ZERO, SF_WIRE_PAGES_LEN, 0,
                           FORK_ID + 1);
        sf_wire_pages_encode(plain + SF_WIRE_HDR_SIZE, &z);
        len[7] = sf_seal(tx, plain, SF_WIRE_HDR_SIZE + SF_WIRE_PAGES_LEN, d[7]);
        sf_mcrecv_input(r->mr, d[7], len[7], g_get_monotonic_time());
    }
    sf_seal_sender_free(tx);
    /* The fork's key in the wrong direction (a clone's requests). */
    tx = sf_seal_sender_new(&r->keys, SF_SEAL_REQUESTS);
    {
        SfMsgPages z = { 0, 1, 2 * PAGE, SF_REQ_DEMAND };

        sf_wire_hdr_encode(plain, SF_MSG_ZERO, SF_WIRE_PAGES_LEN, 0, FORK_ID);
        sf_wire_pages_encode(plain + SF_WIRE_HDR_SIZE, &z);
        len[7] = sf_seal(tx, plain, SF_WIRE_HDR_SIZE + SF_WIRE_PAGES_LEN, d[7]);
        sf_mcrecv_input(r->mr, d[7], len[7], g_get_monotonic_time());
    }
    sf_seal_sender_free(tx);
    /* Not sealed at all. */
    sf_mcrecv_input(r->mr, plain, SF_WIRE_HDR_SIZE + SF_WIRE_PAGES_LEN,
                    g_get_monotonic_time());
    sf_mcrecv_stats(r->mr, &st);
    g_assert_cmpuint(st.other, ==, 3);
    g_assert_false(r->present[0][2]);
    g_assert_cmpuint(r->place_calls, ==, 0);

    /* The genuine fragments: the page, as the image has it. */
    for (unsigned i = 0; i < n; i++) {
        memcpy(copy, d[i], len[i]);
        sf_mcrecv_input(r->mr, copy, len[i], g_get_monotonic_time());
    }
    g_assert_true(r->present[0][1]);
    g_assert_cmpuint(check_placed(r), ==, 1);
    /* Played again: replays, nothing placed twice. */
    for (unsigned i = 0; i < n; i++) {
        sf_mcrecv_input(r->mr, d[i], len[i], g_get_monotonic_time());
    }
    sf_mcrecv_stats(r->mr, &st);
    g_assert_cmpuint(st.replayed, ==, 2);
    g_assert_cmpuint(r->place_calls, ==, 1);
    sf_seal_keys_wipe(&other);
    rig_free(r);
}

/* A page already present (placed by the clone's own connection) is
 * counted redundant and not placed again. */
static void test_redundant(void)
{
    Rig *r = rig_new(2);
    SfMcrecvStats st;

    r->present[1][5] = true;
    memcpy(r->placed[1] + 5 * PAGE, r->image[1] + 5 * PAGE, PAGE);
    sf_emitter_queue(r->em, 1, 4, 3, SF_REQ_DEMAND, g_get_monotonic_time());
    run(r);
    sf_mcrecv_stats(r->mr, &st);
    g_assert_cmpuint(st.redundant, ==, 1);
    g_assert_cmpuint(r->place_calls, ==, 2);
    g_assert_cmpuint(check_placed(r), ==, 3);
    rig_free(r);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_data_func("/mcast-path/all-pages/1-frag", GUINT_TO_POINTER(1),
                         test_all_pages);
    g_test_add_data_func("/mcast-path/all-pages/3-frags", GUINT_TO_POINTER(3),
                         test_all_pages);
    g_test_add_data_func("/mcast-path/all-pages/32-frags", GUINT_TO_POINTER(32),
                         test_all_pages);
    g_test_add_func("/mcast-path/loss", test_loss);
    g_test_add_func("/mcast-path/hostile", test_hostile);
    g_test_add_func("/mcast-path/redundant", test_redundant);
    return g_test_run();
}
