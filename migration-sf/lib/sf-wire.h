/*
 * snowflock page-transfer wire format.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Plain C (GLib only, no QEMU headers): linked into QEMU (parent page
 * server, clone fetcher) and into standalone tools, tests and fuzzers.
 *
 * Every message is a fixed 24-byte header followed by a body:
 *
 *   offset size field
 *   0      4    magic     0x53465047 ("SFPG")
 *   4      2    version   SF_WIRE_VERSION
 *   6      2    type      SfMsgType
 *   8      4    length    body length in bytes (header excluded)
 *   12     4    clone_id  sender's clone id (server: addressee, 0 = all)
 *   16     8    fork_id   the fork this message belongs to
 *
 * All integers are big-endian on the wire and decoded explicitly.  The
 * header is validated against sf_wire_msg_table[] (known type, body length
 * within that type's [min, max]) before a single byte of body is read, so a
 * peer can never make us allocate or read more than the table allows.
 *
 * Bodies (client -> server messages start with the 16-byte fork secret; a
 * wrong secret gets an ERROR and the connection is closed):
 *
 *   HELLO    c->s  secret[16] flags:u32                          = 20
 *   WELCOME  s->c  nblocks:u32 page_size:u32 total_pages:u64     = 16
 *   REQUEST  c->s  secret[16] block:u32 npages:u32 offset:u64
 *                  flags:u32                                     = 36
 *   DATA     s->c  block:u32 npages:u32 offset:u64 flags:u32     = 20
 *                  + npages * page_size bytes of page data
 *   ZERO     s->c  block:u32 npages:u32 offset:u64 flags:u32     = 20
 *   DONE     c->s  secret[16]                                    = 16
 *   ERROR    s->c  code:u32 message (0..SF_WIRE_ERRMSG_MAX bytes,
 *                  not NUL-terminated on the wire)
 *
 * A DATA or ZERO message names pages by (block index, byte offset) only,
 * never by connection: any clone that receives it (later: over multicast)
 * can place it.  That is what lets one page sent serve every clone.
 */
#ifndef SF_WIRE_H
#define SF_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SF_WIRE_MAGIC      0x53465047u
#define SF_WIRE_VERSION    1
#define SF_WIRE_HDR_SIZE   24
#define SF_WIRE_SECRET_LEN 16
#define SF_WIRE_PAGE_SIZE  4096u
/* Largest run of pages in one REQUEST/DATA/ZERO: 4 MiB. */
#define SF_WIRE_MAX_PAGES  1024u
#define SF_WIRE_ERRMSG_MAX 256u

#define SF_WIRE_HELLO_LEN   20
#define SF_WIRE_WELCOME_LEN 16
#define SF_WIRE_REQUEST_LEN 36
#define SF_WIRE_PAGES_LEN   20
#define SF_WIRE_DONE_LEN    16
/* Largest body any message may have (a full DATA run). */
#define SF_WIRE_MAX_BODY                                                       \
    (SF_WIRE_PAGES_LEN + SF_WIRE_MAX_PAGES * SF_WIRE_PAGE_SIZE)

typedef enum SfMsgType {
    SF_MSG_HELLO = 1,
    SF_MSG_WELCOME = 2,
    SF_MSG_REQUEST = 3,
    SF_MSG_DATA = 4,
    SF_MSG_ZERO = 5,
    SF_MSG_DONE = 6,
    SF_MSG_ERROR = 7,
    SF_MSG__MAX
} SfMsgType;

/* REQUEST/DATA/ZERO flags */
#define SF_REQ_DEMAND    0x1u /* a vCPU or QEMU thread is blocked on it */
#define SF_REQ_PREFETCH  0x2u /* background push */
#define SF_REQ_FLAGS_ALL (SF_REQ_DEMAND | SF_REQ_PREFETCH)

/* ERROR codes */
typedef enum SfWireError {
    SF_WERR_AUTH = 1,     /* wrong secret or fork id */
    SF_WERR_RANGE = 2,    /* block/offset/npages outside the image */
    SF_WERR_PROTO = 3,    /* malformed or unexpected message */
    SF_WERR_VERSION = 4,  /* unsupported protocol version */
    SF_WERR_BUSY = 5,     /* too many clients / clone id in use */
    SF_WERR_INTERNAL = 6, /* server could not read its image */
} SfWireError;

typedef struct SfWireHdr {
    uint32_t magic;
    uint16_t version;
    uint16_t type;
    uint32_t length;
    uint32_t clone_id;
    uint64_t fork_id;
} SfWireHdr;

/* Per-type rules, indexed by SfMsgType. */
typedef struct SfWireMsgRule {
    const char *name;
    uint32_t min_len;
    uint32_t max_len;
    bool from_client; /* true: c->s (carries the secret) */
} SfWireMsgRule;

extern const SfWireMsgRule sf_wire_msg_table[SF_MSG__MAX];

typedef struct SfMsgHello {
    uint8_t secret[SF_WIRE_SECRET_LEN];
    uint32_t flags;
} SfMsgHello;

typedef struct SfMsgWelcome {
    uint32_t nblocks;
    uint32_t page_size;
    uint64_t total_pages;
} SfMsgWelcome;

typedef struct SfMsgRequest {
    uint8_t secret[SF_WIRE_SECRET_LEN];
    uint32_t block;
    uint32_t npages;
    uint64_t offset;
    uint32_t flags;
} SfMsgRequest;

/* Fixed part of DATA and ZERO. */
typedef struct SfMsgPages {
    uint32_t block;
    uint32_t npages;
    uint64_t offset;
    uint32_t flags;
} SfMsgPages;

typedef struct SfMsgDone {
    uint8_t secret[SF_WIRE_SECRET_LEN];
} SfMsgDone;

typedef struct SfMsgError {
    uint32_t code;
    char message[SF_WIRE_ERRMSG_MAX + 1]; /* NUL-terminated after decode */
} SfMsgError;

/* Header */
void sf_wire_hdr_encode(uint8_t out[SF_WIRE_HDR_SIZE], SfMsgType type,
                        uint32_t length, uint32_t clone_id, uint64_t fork_id);
/*
 * Decode and validate a header: magic, version, type known, length within
 * the type's bounds.  Returns 0 or a negative SfWireError-style code
 * (-SF_WERR_PROTO, -SF_WERR_VERSION) with *why set to a static string.
 */
int sf_wire_hdr_decode(const uint8_t in[SF_WIRE_HDR_SIZE], SfWireHdr *hdr,
                       const char **why);

/*
 * Bodies.  encode() writes exactly the fixed length and returns it.
 * decode() checks the length against the type and every field that can be
 * checked without context (npages in 1..SF_WIRE_MAX_PAGES, offset page
 * aligned, flags known, DATA length == fixed + npages * page size, ERROR
 * message printable) and returns 0 or -SF_WERR_PROTO with *why set.
 */
size_t sf_wire_hello_encode(uint8_t *out, const SfMsgHello *m);
int sf_wire_hello_decode(const uint8_t *in, size_t len, SfMsgHello *m,
                         const char **why);
size_t sf_wire_welcome_encode(uint8_t *out, const SfMsgWelcome *m);
int sf_wire_welcome_decode(const uint8_t *in, size_t len, SfMsgWelcome *m,
                           const char **why);
size_t sf_wire_request_encode(uint8_t *out, const SfMsgRequest *m);
int sf_wire_request_decode(const uint8_t *in, size_t len, SfMsgRequest *m,
                           const char **why);
/* For DATA the payload follows the fixed part; decode checks the total. */
size_t sf_wire_pages_encode(uint8_t *out, const SfMsgPages *m);
int sf_wire_pages_decode(SfMsgType type, const uint8_t *in, size_t len,
                         SfMsgPages *m, const char **why);
size_t sf_wire_done_encode(uint8_t *out, const SfMsgDone *m);
int sf_wire_done_decode(const uint8_t *in, size_t len, SfMsgDone *m,
                        const char **why);
/* Returns body length; message is truncated to SF_WIRE_ERRMSG_MAX. */
size_t sf_wire_error_encode(uint8_t *out, uint32_t code, const char *message);
int sf_wire_error_decode(const uint8_t *in, size_t len, SfMsgError *m,
                         const char **why);

/* Constant-time secret comparison. */
bool sf_wire_secret_equal(const uint8_t a[SF_WIRE_SECRET_LEN],
                          const uint8_t b[SF_WIRE_SECRET_LEN]);
/* Hex (32 chars) <-> secret; parse returns false on bad input. */
bool sf_wire_secret_parse(const char *hex, uint8_t out[SF_WIRE_SECRET_LEN]);
void sf_wire_secret_format(const uint8_t s[SF_WIRE_SECRET_LEN],
                           char out[2 * SF_WIRE_SECRET_LEN + 1]);

const char *sf_wire_type_name(uint32_t type);

#endif
