/*
 * snowflock sealing (see sf-seal.h).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <glib.h>
#include <string.h>
#include <sys/random.h>

#include <nettle/gcm.h>
#include <nettle/hkdf.h>
#include <nettle/hmac.h>
#include <nettle/memops.h>

#include "sf-seal.h"

#define NONCE_SIZE 12

struct SfSealSender {
    SfSealDir dir;
    uint64_t fork_id;
    uint8_t salt[SF_SEAL_SALT_SIZE];
    uint64_t counter;
    struct gcm_aes128_ctx gcm;
};

typedef struct SfSealSession {
    bool used;
    uint8_t salt[SF_SEAL_SALT_SIZE];
    struct gcm_aes128_ctx gcm;
    uint64_t highest; /* valid once any counter was accepted */
    bool any;
    uint64_t seen[SF_SEAL_WINDOW / 64]; /* bit c % WINDOW: c accepted */
    uint64_t last_use;
} SfSealSession;

struct SfSealReceiver {
    SfSealDir dir;
    SfSealKeys keys;
    unsigned max;
    SfSealSession *sessions;
    unsigned last_hit;
    uint64_t clock; /* for least-recently-used eviction */
    SfSealStats st;
};

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = v >> 8;
    p[1] = v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    put_be16(p, v >> 16);
    put_be16(p + 2, v);
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, v >> 32);
    put_be32(p + 4, v);
}

static uint16_t get_be16(const uint8_t *p)
{
    return (uint16_t)p[0] << 8 | p[1];
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)get_be16(p) << 16 | get_be16(p + 2);
}

static uint64_t get_be64(const uint8_t *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

static void hkdf_sha256(const uint8_t *salt, size_t salt_len,
                        const uint8_t *ikm, size_t ikm_len, const char *info,
                        uint8_t *out, size_t out_len)
{
    struct hmac_sha256_ctx h;
    uint8_t prk[SHA256_DIGEST_SIZE];

    hmac_sha256_set_key(&h, salt_len, salt);
    hkdf_extract(&h, (nettle_hash_update_func *)hmac_sha256_update,
                 (nettle_hash_digest_func *)hmac_sha256_digest,
                 SHA256_DIGEST_SIZE, ikm_len, ikm, prk);
    hmac_sha256_set_key(&h, sizeof(prk), prk);
    hkdf_expand(&h, (nettle_hash_update_func *)hmac_sha256_update,
                (nettle_hash_digest_func *)hmac_sha256_digest,
                SHA256_DIGEST_SIZE, strlen(info), (const uint8_t *)info,
                out_len, out);
    memset(prk, 0, sizeof(prk));
    memset(&h, 0, sizeof(h));
}

void sf_seal_keys_derive(SfSealKeys *k,
                         const uint8_t secret[SF_WIRE_SECRET_LEN],
                         uint64_t fork_id)
{
    static const char *const info[2] = { "snowflock pages v1",
                                         "snowflock requests v1" };
    uint8_t salt[8];

    put_be64(salt, fork_id);
    k->fork_id = fork_id;
    for (int d = 0; d < 2; d++) {
        hkdf_sha256(salt, sizeof(salt), secret, SF_WIRE_SECRET_LEN, info[d],
                    k->key[d], SF_SEAL_KEY_SIZE);
    }
}

void sf_seal_keys_wipe(SfSealKeys *k)
{
    /* A volatile write is not optimised away. */
    volatile uint8_t *p = (volatile uint8_t *)k;

    for (size_t i = 0; i < sizeof(*k); i++) {
        p[i] = 0;
    }
}

static void session_key(const SfSealKeys *k, SfSealDir dir,
                        const uint8_t salt[SF_SEAL_SALT_SIZE],
                        struct gcm_aes128_ctx *gcm)
{
    uint8_t key[SF_SEAL_KEY_SIZE];

    hkdf_sha256(salt, SF_SEAL_SALT_SIZE, k->key[dir], SF_SEAL_KEY_SIZE,
                "snowflock session v1", key, sizeof(key));
    gcm_aes128_set_key(gcm, key);
    memset(key, 0, sizeof(key));
}

static void nonce_of(uint64_t counter, uint8_t nonce[NONCE_SIZE])
{
    memset(nonce, 0, NONCE_SIZE);
    put_be64(nonce + 4, counter);
}

SfSealSender *sf_seal_sender_new(const SfSealKeys *k, SfSealDir dir)
{
    SfSealSender *s = g_new0(SfSealSender, 1);
    size_t got = 0;

    while (got < sizeof(s->salt)) {
        ssize_t n = getrandom(s->salt + got, sizeof(s->salt) - got, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            g_free(s);
            return NULL;
        }
        got += n;
    }
    s->dir = dir;
    s->fork_id = k->fork_id;
    session_key(k, dir, s->salt, &s->gcm);
    return s;
}

void sf_seal_sender_free(SfSealSender *s)
{
    if (s) {
        memset(s, 0, sizeof(*s));
        g_free(s);
    }
}

uint64_t sf_seal_sender_count(const SfSealSender *s)
{
    return s->counter;
}

size_t sf_seal(SfSealSender *s, const void *in, size_t len, uint8_t *out)
{
    memcpy(out + SF_SEAL_HDR_SIZE, in, len);
    return sf_seal_inplace(s, out, len);
}

size_t sf_seal_inplace(SfSealSender *s, uint8_t *out, size_t len)
{
    uint8_t nonce[NONCE_SIZE];

    put_be32(out, SF_SEAL_MAGIC);
    put_be16(out + 4, SF_SEAL_VERSION);
    put_be16(out + 6, s->dir);
    put_be64(out + 8, s->fork_id);
    memcpy(out + 16, s->salt, SF_SEAL_SALT_SIZE);
    put_be64(out + 32, s->counter);
    put_be32(out + 40, (uint32_t)len);
    nonce_of(s->counter, nonce);
    s->counter++;
    gcm_aes128_set_iv(&s->gcm, sizeof(nonce), nonce);
    gcm_aes128_update(&s->gcm, SF_SEAL_HDR_SIZE, out);
    gcm_aes128_encrypt(&s->gcm, len, out + SF_SEAL_HDR_SIZE,
                       out + SF_SEAL_HDR_SIZE);
    gcm_aes128_digest(&s->gcm, SF_SEAL_TAG_SIZE, out + SF_SEAL_HDR_SIZE + len);
    return len + SF_SEAL_OVERHEAD;
}

int64_t sf_seal_hdr_length(const uint8_t hdr[SF_SEAL_HDR_SIZE])
{
    if (get_be32(hdr) != SF_SEAL_MAGIC ||
        get_be16(hdr + 4) != SF_SEAL_VERSION) {
        return -1;
    }
    return get_be32(hdr + 40);
}

SfSealReceiver *sf_seal_receiver_new(const SfSealKeys *k, SfSealDir dir,
                                     unsigned max_sessions)
{
    SfSealReceiver *r = g_new0(SfSealReceiver, 1);

    r->dir = dir;
    r->keys = *k;
    r->max = MAX(max_sessions, 1);
    r->sessions = g_new0(SfSealSession, r->max);
    return r;
}

void sf_seal_receiver_free(SfSealReceiver *r)
{
    if (r) {
        sf_seal_keys_wipe(&r->keys);
        memset(r->sessions, 0, sizeof(SfSealSession) * r->max);
        g_free(r->sessions);
        g_free(r);
    }
}

void sf_seal_receiver_stats(const SfSealReceiver *r, SfSealStats *st)
{
    *st = r->st;
}

const char *sf_open_result_name(SfOpenResult r)
{
    switch (r) {
    case SF_OPEN_OK:
        return "ok";
    case SF_OPEN_MALFORMED:
        return "malformed";
    case SF_OPEN_OTHER:
        return "another fork";
    case SF_OPEN_AUTH:
        return "failed authentication";
    case SF_OPEN_REPLAY:
        return "replayed";
    }
    return "?";
}

/* The remembered session with this salt, or NULL.  O(sessions), with
 * the last one hit first: the pages direction has one sender (the page
 * server), the requests direction one per clone. */
static SfSealSession *session_find(SfSealReceiver *r, const uint8_t *salt)
{
    SfSealSession *s = &r->sessions[r->last_hit];

    if (s->used && !memcmp(s->salt, salt, SF_SEAL_SALT_SIZE)) {
        return s;
    }
    for (unsigned i = 0; i < r->max; i++) {
        s = &r->sessions[i];
        if (s->used && !memcmp(s->salt, salt, SF_SEAL_SALT_SIZE)) {
            r->last_hit = i;
            return s;
        }
    }
    return NULL;
}

/* A slot for a new session: a free one, else the least recently used. */
static SfSealSession *session_slot(SfSealReceiver *r)
{
    unsigned best = 0;

    for (unsigned i = 0; i < r->max; i++) {
        if (!r->sessions[i].used) {
            return &r->sessions[i];
        }
        if (r->sessions[i].last_use < r->sessions[best].last_use) {
            best = i;
        }
    }
    r->st.sessions--;
    return &r->sessions[best];
}

static bool window_seen(const SfSealSession *s, uint64_t c)
{
    if (!s->any || c > s->highest) {
        return false;
    }
    if (s->highest - c >= SF_SEAL_WINDOW) {
        return true; /* too old to tell: treated as seen */
    }
    return s->seen[(c % SF_SEAL_WINDOW) / 64] & (1ull << (c % 64));
}

static void window_mark(SfSealSession *s, uint64_t c)
{
    if (!s->any) {
        memset(s->seen, 0, sizeof(s->seen));
        s->highest = c;
        s->any = true;
    } else if (c > s->highest) {
        if (c - s->highest >= SF_SEAL_WINDOW) {
            memset(s->seen, 0, sizeof(s->seen));
        } else {
            for (uint64_t x = s->highest + 1; x <= c; x++) {
                s->seen[(x % SF_SEAL_WINDOW) / 64] &= ~(1ull << (x % 64));
            }
        }
        s->highest = c;
    }
    s->seen[(c % SF_SEAL_WINDOW) / 64] |= 1ull << (c % 64);
}

static bool decrypt(struct gcm_aes128_ctx *gcm, uint8_t *buf, size_t len,
                    uint64_t counter)
{
    uint8_t nonce[NONCE_SIZE], tag[SF_SEAL_TAG_SIZE];
    size_t clen = len - SF_SEAL_OVERHEAD;

    nonce_of(counter, nonce);
    gcm_aes128_set_iv(gcm, sizeof(nonce), nonce);
    gcm_aes128_update(gcm, SF_SEAL_HDR_SIZE, buf);
    gcm_aes128_decrypt(gcm, clen, buf + SF_SEAL_HDR_SIZE,
                       buf + SF_SEAL_HDR_SIZE);
    gcm_aes128_digest(gcm, sizeof(tag), tag);
    if (!memeql_sec(tag, buf + SF_SEAL_HDR_SIZE + clen, sizeof(tag))) {
        /* Leave nothing of an unauthenticated plaintext behind. */
        memset(buf + SF_SEAL_HDR_SIZE, 0, clen);
        return false;
    }
    return true;
}

SfOpenResult sf_seal_open(SfSealReceiver *r, uint8_t *buf, size_t len,
                          uint8_t **plain, size_t *plain_len)
{
    SfSealSession *s;
    struct gcm_aes128_ctx fresh;
    uint64_t counter;

    if (len < SF_SEAL_OVERHEAD || get_be32(buf) != SF_SEAL_MAGIC ||
        get_be16(buf + 4) != SF_SEAL_VERSION ||
        get_be32(buf + 40) != len - SF_SEAL_OVERHEAD) {
        r->st.malformed++;
        return SF_OPEN_MALFORMED;
    }
    if (get_be16(buf + 6) != r->dir || get_be64(buf + 8) != r->keys.fork_id) {
        r->st.other_fork++;
        return SF_OPEN_OTHER;
    }
    counter = get_be64(buf + 32);
    s = session_find(r, buf + 16);
    if (s) {
        /* Checked before any crypto: a replay costs nothing. */
        if (window_seen(s, counter)) {
            r->st.replayed++;
            return SF_OPEN_REPLAY;
        }
        if (!decrypt(&s->gcm, buf, len, counter)) {
            r->st.auth_failed++;
            return SF_OPEN_AUTH;
        }
    } else {
        /* Remembered only once authentic: forgeries evict nothing. */
        session_key(&r->keys, r->dir, buf + 16, &fresh);
        if (!decrypt(&fresh, buf, len, counter)) {
            memset(&fresh, 0, sizeof(fresh));
            r->st.auth_failed++;
            return SF_OPEN_AUTH;
        }
        s = session_slot(r);
        memset(s, 0, sizeof(*s));
        s->used = true;
        memcpy(s->salt, buf + 16, SF_SEAL_SALT_SIZE);
        s->gcm = fresh;
        memset(&fresh, 0, sizeof(fresh));
        r->st.sessions++;
    }
    window_mark(s, counter);
    s->last_use = ++r->clock;
    r->st.opened++;
    *plain = buf + SF_SEAL_HDR_SIZE;
    *plain_len = len - SF_SEAL_OVERHEAD;
    return SF_OPEN_OK;
}
