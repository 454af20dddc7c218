/*
 * snowflock sealing: authenticated encryption of page-transfer messages
 * on network transports (TCP, UDP multicast), with a per-fork key.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Crypto is nettle's (AES-128-GCM, HKDF-SHA256, constant-time compare);
 * nothing here is hand-rolled.  nettle keeps no global state and takes
 * no locks, so this also runs in the page server fork()ed from a
 * multi-threaded QEMU.  AES-128-GCM was measured at ~1.7 us per 4 KiB
 * page here (AES-NI), ChaCha20-Poly1305 at ~10.6 us.
 *
 * Keys.  The fork's 16-byte secret and its fork id give, by HKDF, one
 * key per direction: pages (server to clones) and requests (clones to
 * server).  A sender never uses a direction key directly: it picks a
 * random 16-byte salt for its session (one per process and direction)
 * and seals with HKDF(direction key, salt).
 *
 * Nonces never repeat: a nonce is the session's 64-bit message counter
 * (starting at 0, incremented for every message, never reset) under a
 * key that belongs to that session alone.  Two sessions share a key only
 * if their random salts collide (2^-128), so two clones started with the
 * same clone id, a clone restarted, or a second page server of the same
 * fork never reuse a (key, nonce) pair.
 *
 * A sealed message is
 *
 *   offset size
 *   0      4    magic "SFSL"
 *   4      2    version SF_SEAL_VERSION
 *   6      2    direction (0 pages, 1 requests)
 *   8      8    fork id
 *   16     16   session salt
 *   32     8    counter
 *   40     4    n, the ciphertext's length (a stream reader knows how
 *                 much to read before any of it is decrypted)
 *   44     n    ciphertext of the inner message (sf-wire header + body)
 *   44+n   16   GCM tag over bytes 0..43 (additional data) and the
 *                 ciphertext
 *
 * Receivers: a packet whose magic, version, direction or fork id is not
 * theirs is dropped before any crypto; one that fails authentication is
 * dropped and counted, and never creates or evicts a session (a session
 * is remembered only once a packet of it authenticated, so forged
 * packets cannot push genuine sessions out); one whose counter was seen
 * already, or is older than the session's window, is a replay: dropped
 * and counted.  Datagrams arrive out of order: the window accepts any
 * counter not seen among the last SF_SEAL_WINDOW.
 */
#ifndef SF_SEAL_H
#define SF_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sf-wire.h"

#define SF_SEAL_MAGIC     0x5346534cu /* "SFSL" */
#define SF_SEAL_VERSION   1
#define SF_SEAL_HDR_SIZE  44
#define SF_SEAL_TAG_SIZE  16
#define SF_SEAL_OVERHEAD  (SF_SEAL_HDR_SIZE + SF_SEAL_TAG_SIZE)
#define SF_SEAL_KEY_SIZE  16
#define SF_SEAL_SALT_SIZE 16
/* Counters remembered per session for replay detection. */
#define SF_SEAL_WINDOW 4096

typedef enum SfSealDir {
    SF_SEAL_PAGES = 0,    /* server to clones */
    SF_SEAL_REQUESTS = 1, /* clones to server */
} SfSealDir;

/* The fork's two direction keys. */
typedef struct SfSealKeys {
    uint64_t fork_id;
    uint8_t key[2][SF_SEAL_KEY_SIZE];
} SfSealKeys;

void sf_seal_keys_derive(SfSealKeys *k,
                         const uint8_t secret[SF_WIRE_SECRET_LEN],
                         uint64_t fork_id);
/* Wipe keys from memory (secrets do not linger). */
void sf_seal_keys_wipe(SfSealKeys *k);

/* One sending session: a salt of its own and a counter.  Not shared
 * between threads without a lock, never copied between processes. */
typedef struct SfSealSender SfSealSender;

/* NULL when no random salt could be had (getrandom failed). */
SfSealSender *sf_seal_sender_new(const SfSealKeys *k, SfSealDir dir);
void sf_seal_sender_free(SfSealSender *s);
/* Seal len bytes of in into out (len + SF_SEAL_OVERHEAD bytes, may not
 * overlap in); returns the sealed length. */
/* The ciphertext length a sealed header announces, after checking magic
 * and version (-1 when it is not a sealed header at all). */
int64_t sf_seal_hdr_length(const uint8_t hdr[SF_SEAL_HDR_SIZE]);
size_t sf_seal(SfSealSender *s, const void *in, size_t len, uint8_t *out);
/* The same, in place: buf holds len plaintext bytes at
 * buf + SF_SEAL_HDR_SIZE and has room for SF_SEAL_OVERHEAD more. */
size_t sf_seal_inplace(SfSealSender *s, uint8_t *buf, size_t len);
/* Messages sealed so far (the next counter). */
uint64_t sf_seal_sender_count(const SfSealSender *s);

typedef enum SfOpenResult {
    SF_OPEN_OK = 0,
    SF_OPEN_MALFORMED = -1, /* bad magic, version or length */
    SF_OPEN_OTHER = -2,     /* another fork or direction */
    SF_OPEN_AUTH = -3,      /* failed authentication */
    SF_OPEN_REPLAY = -4,    /* counter seen before or too old */
} SfOpenResult;

typedef struct SfSealStats {
    uint64_t opened;
    uint64_t malformed;
    uint64_t other_fork;
    uint64_t auth_failed;
    uint64_t replayed;
    uint64_t sessions; /* currently remembered */
} SfSealStats;

typedef struct SfSealReceiver SfSealReceiver;

/* Opens what senders of direction dir sealed; remembers at most
 * max_sessions sessions (least recently used forgotten first). */
SfSealReceiver *sf_seal_receiver_new(const SfSealKeys *k, SfSealDir dir,
                                     unsigned max_sessions);
void sf_seal_receiver_free(SfSealReceiver *r);
/*
 * Authenticate and decrypt a sealed message: on SF_OPEN_OK the
 * plaintext is at *plain (inside buf, decrypted in place), *plain_len
 * bytes long.  Every other result leaves nothing usable and is counted.
 */
SfOpenResult sf_seal_open(SfSealReceiver *r, uint8_t *buf, size_t len,
                          uint8_t **plain, size_t *plain_len);
void sf_seal_receiver_stats(const SfSealReceiver *r, SfSealStats *st);
const char *sf_open_result_name(SfOpenResult r);

#endif
