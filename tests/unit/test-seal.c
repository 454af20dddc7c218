/*
 * Unit tests for sealing (sf-seal.c): round trips, every kind of
 * tampering, other forks and directions, replays in and out of the
 * window, out-of-order delivery, forged sessions that must not evict
 * genuine ones, and nonces that never repeat across senders.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <string.h>

#include "sf-seal.h"

static const uint8_t secret_a[SF_WIRE_SECRET_LEN] = {
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
    0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
};
static const uint8_t secret_b[SF_WIRE_SECRET_LEN] = { 1 };

#define FORK 0x1122334455667788ull

typedef struct Msg {
    uint8_t buf[4096 + SF_SEAL_OVERHEAD];
    size_t len;
} Msg;

static void seal_text(SfSealSender *s, const char *text, Msg *m)
{
    m->len = sf_seal(s, text, strlen(text), m->buf);
    g_assert_cmpuint(m->len, ==, strlen(text) + SF_SEAL_OVERHEAD);
}

static SfOpenResult open_copy(SfSealReceiver *r, const Msg *m, char **text)
{
    Msg c = *m;
    uint8_t *p;
    size_t n;
    SfOpenResult res = sf_seal_open(r, c.buf, c.len, &p, &n);

    if (res == SF_OPEN_OK && text) {
        *text = g_strndup((char *)p, n);
    }
    return res;
}

static void test_round_trip(void)
{
    SfSealKeys k;
    SfSealSender *s;
    SfSealReceiver *r;
    Msg m;
    char *got = NULL;

    sf_seal_keys_derive(&k, secret_a, FORK);
    s = sf_seal_sender_new(&k, SF_SEAL_PAGES);
    r = sf_seal_receiver_new(&k, SF_SEAL_PAGES, 4);
    seal_text(s, "a page of guest memory", &m);
    /* The plaintext is not on the wire. */
    g_assert_null(memmem(m.buf, m.len, "guest memory", 12));
    g_assert_cmpint(open_copy(r, &m, &got), ==, SF_OPEN_OK);
    g_assert_cmpstr(got, ==, "a page of guest memory");
    g_free(got);
    g_assert_cmpuint(sf_seal_sender_count(s), ==, 1);
    sf_seal_sender_free(s);
    sf_seal_receiver_free(r);
}

/* Flip every byte in turn: header fields are refused as what they are,
 * anything else fails authentication. */
static void test_tamper_every_byte(void)
{
    SfSealKeys k;
    SfSealSender *s;
    SfSealReceiver *r;
    Msg m;
    SfSealStats st;

    sf_seal_keys_derive(&k, secret_a, FORK);
    s = sf_seal_sender_new(&k, SF_SEAL_REQUESTS);
    r = sf_seal_receiver_new(&k, SF_SEAL_REQUESTS, 4);
    seal_text(s, "REQUEST block 0 offset 4096", &m);
    for (size_t i = 0; i < m.len; i++) {
        Msg t = m;
        SfOpenResult want;

        t.buf[i] ^= 0x40;
        want = i < 6               ? SF_OPEN_MALFORMED
               : i < 16            ? SF_OPEN_OTHER
               : i >= 40 && i < 44 ? SF_OPEN_MALFORMED /* length */
                                   : SF_OPEN_AUTH;
        g_assert_cmpint(open_copy(r, &t, NULL), ==, want);
    }
    /* Truncated, and a lone header. */
    for (size_t n = 0; n < m.len; n += 7) {
        Msg t = m;
        t.len = n;
        g_assert_cmpint(open_copy(r, &t, NULL), !=, SF_OPEN_OK);
    }
    /* The genuine one still opens: no forgery created a session. */
    sf_seal_receiver_stats(r, &st);
    g_assert_cmpuint(st.sessions, ==, 0);
    g_assert_cmpuint(st.opened, ==, 0);
    g_assert_cmpint(open_copy(r, &m, NULL), ==, SF_OPEN_OK);
    sf_seal_sender_free(s);
    sf_seal_receiver_free(r);
}

static void test_other_key_fork_direction(void)
{
    SfSealKeys ka, kb, kf;
    SfSealSender *s;
    SfSealReceiver *rb, *rf, *rdir;
    Msg m;

    sf_seal_keys_derive(&ka, secret_a, FORK);
    sf_seal_keys_derive(&kb, secret_b, FORK);
    sf_seal_keys_derive(&kf, secret_a, FORK + 1);
    s = sf_seal_sender_new(&ka, SF_SEAL_PAGES);
    rb = sf_seal_receiver_new(&kb, SF_SEAL_PAGES, 4);
    rf = sf_seal_receiver_new(&kf, SF_SEAL_PAGES, 4);
    rdir = sf_seal_receiver_new(&ka, SF_SEAL_REQUESTS, 4);
    seal_text(s, "x", &m);
    g_assert_cmpint(open_copy(rb, &m, NULL), ==, SF_OPEN_AUTH);
    g_assert_cmpint(open_copy(rf, &m, NULL), ==, SF_OPEN_OTHER);
    g_assert_cmpint(open_copy(rdir, &m, NULL), ==, SF_OPEN_OTHER);
    /* Keys differ by direction and fork even with one secret. */
    g_assert_false(!memcmp(ka.key[0], ka.key[1], 16));
    g_assert_false(!memcmp(ka.key[0], kf.key[0], 16));
    sf_seal_sender_free(s);
    sf_seal_receiver_free(rb);
    sf_seal_receiver_free(rf);
    sf_seal_receiver_free(rdir);
}

static void test_replay_window(void)
{
    SfSealKeys k;
    SfSealSender *s;
    SfSealReceiver *r;
    Msg *m = g_new(Msg, SF_SEAL_WINDOW + 10);
    SfSealStats st;

    sf_seal_keys_derive(&k, secret_a, FORK);
    s = sf_seal_sender_new(&k, SF_SEAL_PAGES);
    r = sf_seal_receiver_new(&k, SF_SEAL_PAGES, 4);
    for (int i = 0; i < SF_SEAL_WINDOW + 10; i++) {
        seal_text(s, "p", &m[i]);
    }
    /* Out of order: 5, 3, 4, 0 all accepted once. */
    g_assert_cmpint(open_copy(r, &m[5], NULL), ==, SF_OPEN_OK);
    g_assert_cmpint(open_copy(r, &m[3], NULL), ==, SF_OPEN_OK);
    g_assert_cmpint(open_copy(r, &m[4], NULL), ==, SF_OPEN_OK);
    g_assert_cmpint(open_copy(r, &m[0], NULL), ==, SF_OPEN_OK);
    g_assert_cmpint(open_copy(r, &m[4], NULL), ==, SF_OPEN_REPLAY);
    g_assert_cmpint(open_copy(r, &m[5], NULL), ==, SF_OPEN_REPLAY);
    /* Jump ahead: 1 and 2 are now older than the window. */
    g_assert_cmpint(open_copy(r, &m[SF_SEAL_WINDOW + 5], NULL), ==, SF_OPEN_OK);
    g_assert_cmpint(open_copy(r, &m[1], NULL), ==, SF_OPEN_REPLAY);
    g_assert_cmpint(open_copy(r, &m[2], NULL), ==, SF_OPEN_REPLAY);
    /* Inside the window and never seen: accepted. */
    g_assert_cmpint(open_copy(r, &m[SF_SEAL_WINDOW + 1], NULL), ==, SF_OPEN_OK);
    g_assert_cmpint(open_copy(r, &m[10], NULL), ==, SF_OPEN_OK);
    sf_seal_receiver_stats(r, &st);
    g_assert_cmpuint(st.replayed, ==, 4);
    g_assert_cmpuint(st.opened, ==, 7);
    g_free(m);
    sf_seal_sender_free(s);
    sf_seal_receiver_free(r);
}

/* A flood of forgeries with fresh salts cannot push a genuine session
 * out of a small cache (which would forget its replay window). */
static void test_forgeries_do_not_evict(void)
{
    SfSealKeys k, bad;
    SfSealSender *s, *forger;
    SfSealReceiver *r;
    Msg m, f;

    sf_seal_keys_derive(&k, secret_a, FORK);
    sf_seal_keys_derive(&bad, secret_b, FORK);
    s = sf_seal_sender_new(&k, SF_SEAL_PAGES);
    r = sf_seal_receiver_new(&k, SF_SEAL_PAGES, 2);
    seal_text(s, "genuine", &m);
    g_assert_cmpint(open_copy(r, &m, NULL), ==, SF_OPEN_OK);
    for (int i = 0; i < 1000; i++) {
        forger = sf_seal_sender_new(&bad, SF_SEAL_PAGES);
        seal_text(forger, "forged", &f);
        g_assert_cmpint(open_copy(r, &f, NULL), ==, SF_OPEN_AUTH);
        sf_seal_sender_free(forger);
    }
    g_assert_cmpint(open_copy(r, &m, NULL), ==, SF_OPEN_REPLAY);
    sf_seal_sender_free(s);
    sf_seal_receiver_free(r);
}

/* Genuine sessions beyond the cache: the least recently used goes. */
static void test_session_lru(void)
{
    SfSealKeys k;
    SfSealSender *s[3];
    SfSealReceiver *r;
    Msg m[3][2];
    SfSealStats st;

    sf_seal_keys_derive(&k, secret_a, FORK);
    r = sf_seal_receiver_new(&k, SF_SEAL_REQUESTS, 2);
    for (int i = 0; i < 3; i++) {
        s[i] = sf_seal_sender_new(&k, SF_SEAL_REQUESTS);
        seal_text(s[i], "a", &m[i][0]);
        seal_text(s[i], "b", &m[i][1]);
    }
    g_assert_cmpint(open_copy(r, &m[0][0], NULL), ==, SF_OPEN_OK);
    g_assert_cmpint(open_copy(r, &m[1][0], NULL), ==, SF_OPEN_OK);
    g_assert_cmpint(open_copy(r, &m[0][1], NULL), ==, SF_OPEN_OK);
    g_assert_cmpint(open_copy(r, &m[2][0], NULL), ==, SF_OPEN_OK); /* 1 out */
    sf_seal_receiver_stats(r, &st);
    g_assert_cmpuint(st.sessions, ==, 2);
    g_assert_cmpint(open_copy(r, &m[0][0], NULL), ==, SF_OPEN_REPLAY);
    g_assert_cmpint(open_copy(r, &m[2][0], NULL), ==, SF_OPEN_REPLAY);
    for (int i = 0; i < 3; i++) {
        sf_seal_sender_free(s[i]);
    }
    sf_seal_receiver_free(r);
}

/* Two senders of one fork and direction (two clones with one id, a
 * restarted clone): their ciphertexts of the same plaintext differ at
 * the same counter, because their keys do. */
static void test_senders_never_share_a_nonce(void)
{
    SfSealKeys k;
    SfSealSender *a, *b;
    Msg ma, mb;

    sf_seal_keys_derive(&k, secret_a, FORK);
    a = sf_seal_sender_new(&k, SF_SEAL_REQUESTS);
    b = sf_seal_sender_new(&k, SF_SEAL_REQUESTS);
    seal_text(a, "same plaintext, same counter", &ma);
    seal_text(b, "same plaintext, same counter", &mb);
    g_assert_false(!memcmp(ma.buf + 16, mb.buf + 16, SF_SEAL_SALT_SIZE));
    g_assert_cmpmem(ma.buf + 32, 8, mb.buf + 32, 8); /* counter 0 both */
    g_assert_false(!memcmp(ma.buf + SF_SEAL_HDR_SIZE, mb.buf + SF_SEAL_HDR_SIZE,
                           ma.len - SF_SEAL_OVERHEAD));
    sf_seal_sender_free(a);
    sf_seal_sender_free(b);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/seal/round-trip", test_round_trip);
    g_test_add_func("/seal/tamper-every-byte", test_tamper_every_byte);
    g_test_add_func("/seal/other-key-fork-direction",
                    test_other_key_fork_direction);
    g_test_add_func("/seal/replay-window", test_replay_window);
    g_test_add_func("/seal/forgeries-do-not-evict",
                    test_forgeries_do_not_evict);
    g_test_add_func("/seal/session-lru", test_session_lru);
    g_test_add_func("/seal/senders-never-share-a-nonce",
                    test_senders_never_share_a_nonce);
    return g_test_run();
}
