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
 *   WELCOME  s->c  nblocks:u32 page_size:u32 total_pages:u64
 *                  mcast_group:u32 mcast_port:u16 frag_count:u8
 *                  pad:u8 desc_len:u64                           = 32
 *   REQUEST  c->s  secret[16] block:u32 npages:u32 offset:u64
 *                  flags:u32 rx_kbps:u32 loss_ppm:u32            = 44
 *   DATA     s->c  block:u32 npages:u32 offset:u64 flags:u32     = 20
 *                  + npages * page_size bytes of page data
 *   ZERO     s->c  block:u32 npages:u32 offset:u64 flags:u32     = 20
 *   DONE     c->s  secret[16]                                    = 16
 *   ERROR    s->c  code:u32 message (0..SF_WIRE_ERRMSG_MAX bytes,
 *                  not NUL-terminated on the wire)
 *   DESC_GET c->s  secret[16] offset:u64                         = 24
 *   DESC     s->c  offset:u64 total:u64                          = 16
 *                  + 0..SF_WIRE_DESC_CHUNK bytes of the descriptor
 *   FRAG     s->g  block:u32 offset:u64 flags:u32 index:u8 count:u8
 *                  pad:u16                                       = 20
 *                  + one fragment of one page (sf-reasm.h)
 *   ZEROMAP  s->c  block:u32 nruns:u32 flags:u32                 = 12
 *                  + nruns * (page:u32 npages:u32), ascending,
 *                  disjoint, npages >= 1 (sf-zeromap.h)
 *
 * A DATA, ZERO or FRAG message names pages by (block index, byte offset)
 * only, never by connection: any clone that receives it, over multicast
 * (s->g: to the fork's group, FRAG and ZERO), can place it.  That is
 * what lets one page sent serve every clone.
 *
 * HELLO flags: SF_HELLO_DESC_ONLY (the connection only fetches the
 * descriptor; the clone is not counted as connected); SF_HELLO_WORKSET
 * (push the fork's working set to this clone: DATA and ZERO flagged
 * PREFETCH | WORKSET it did not ask for); SF_HELLO_UNICAST (the clone
 * will not receive the fork's group: that push comes on the connection).
 * WELCOME: mcast_group 0 when the fork has no multicast group; then mcast_port
 * and frag_count are 0 too.  desc_len is the size of the descriptor the
 * server hands out (DESC_GET), 0 when it has none.  REQUEST: rx_kbps and
 * loss_ppm are the clone's receive rate (KiB/s) and loss (parts per
 * million) over multicast, for the server's pacing; UNICAST asks for the
 * answer on this connection rather than the group.  ZEROMAP follows
 * WELCOME on a clone's own connection: runs of pages the frozen image is
 * known to hold as zero (never written, or given back by the guest's
 * free page reporting), which the clone fills itself without asking;
 * SF_ZEROMAP_LAST marks the map's last message (a map may be empty: one
 * message, no runs, LAST).
 */
#ifndef SF_WIRE_H
#define SF_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SF_WIRE_MAGIC      0x53465047u
#define SF_WIRE_VERSION    3
#define SF_WIRE_HDR_SIZE   24
#define SF_WIRE_SECRET_LEN 16
#define SF_WIRE_PAGE_SIZE  4096u
/* Largest run of pages in one REQUEST/DATA/ZERO: 4 MiB. */
#define SF_WIRE_MAX_PAGES 1024u
/* Most datagrams one page is cut into (FRAG), down to a 576-byte MTU. */
#define SF_WIRE_MAX_FRAGS  32u
#define SF_WIRE_ERRMSG_MAX 256u

#define SF_WIRE_HELLO_LEN    20
#define SF_WIRE_WELCOME_LEN  32
#define SF_WIRE_REQUEST_LEN  44
#define SF_WIRE_PAGES_LEN    20
#define SF_WIRE_DONE_LEN     16
#define SF_WIRE_DESC_GET_LEN 24
#define SF_WIRE_DESC_LEN     16
#define SF_WIRE_FRAG_LEN     20
#define SF_WIRE_ZEROMAP_LEN  12
/* Most runs in one ZEROMAP (64 KiB of runs). */
#define SF_WIRE_ZEROMAP_RUNS 8192u
/* Most descriptor bytes in one DESC. */
#define SF_WIRE_DESC_CHUNK (1024u * 1024)
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
    SF_MSG_DESC_GET = 8,
    SF_MSG_DESC = 9,
    SF_MSG_FRAG = 10,
    SF_MSG_ZEROMAP = 11,
    SF_MSG__MAX
} SfMsgType;

/* REQUEST/DATA/ZERO/FRAG flags */
#define SF_REQ_DEMAND   0x1u /* a vCPU or QEMU thread is blocked on it */
#define SF_REQ_PREFETCH 0x2u /* background push */
#define SF_REQ_UNICAST  0x4u /* answer on this connection, not the group */
/* DATA/ZERO only: pushed from the fork's working set (sf-workset.h). */
#define SF_REQ_WORKSET 0x8u
#define SF_REQ_FLAGS_ALL                                                       \
    (SF_REQ_DEMAND | SF_REQ_PREFETCH | SF_REQ_UNICAST | SF_REQ_WORKSET)

/* HELLO flags */
#define SF_HELLO_DESC_ONLY 0x1u
/* Push the fork's working set to this clone (sf-workset.h). */
#define SF_HELLO_WORKSET 0x2u
/* This clone does not receive the fork's group: push on the connection. */
#define SF_HELLO_UNICAST 0x4u
#define SF_HELLO_FLAGS_ALL                                                     \
    (SF_HELLO_DESC_ONLY | SF_HELLO_WORKSET | SF_HELLO_UNICAST)

/* ZEROMAP flags */
#define SF_ZEROMAP_LAST      0x1u
#define SF_ZEROMAP_FLAGS_ALL SF_ZEROMAP_LAST

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
    uint32_t mcast_group; /* IPv4, host byte order; 0: none */
    uint16_t mcast_port;
    uint8_t frag_count; /* datagrams per page on the group */
    uint64_t desc_len;
} SfMsgWelcome;

typedef struct SfMsgRequest {
    uint8_t secret[SF_WIRE_SECRET_LEN];
    uint32_t block;
    uint32_t npages;
    uint64_t offset;
    uint32_t flags;
    uint32_t rx_kbps;
    uint32_t loss_ppm;
} SfMsgRequest;

typedef struct SfMsgDescGet {
    uint8_t secret[SF_WIRE_SECRET_LEN];
    uint64_t offset;
} SfMsgDescGet;

/* Fixed part of DESC. */
typedef struct SfMsgDesc {
    uint64_t offset;
    uint64_t total;
} SfMsgDesc;

/* Fixed part of FRAG. */
typedef struct SfMsgFrag {
    uint32_t block;
    uint64_t offset;
    uint32_t flags;
    uint8_t index;
    uint8_t count;
} SfMsgFrag;

/* Fixed part of DATA and ZERO. */
typedef struct SfMsgPages {
    uint32_t block;
    uint32_t npages;
    uint64_t offset;
    uint32_t flags;
} SfMsgPages;

/* Fixed part of ZEROMAP; runs points into the decoded body. */
typedef struct SfMsgZeroMap {
    uint32_t block;
    uint32_t nruns;
    uint32_t flags;
    const uint8_t *runs; /* nruns * 8 bytes, read with sf_wire_zeromap_run */
} SfMsgZeroMap;

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
size_t sf_wire_desc_get_encode(uint8_t *out, const SfMsgDescGet *m);
int sf_wire_desc_get_decode(const uint8_t *in, size_t len, SfMsgDescGet *m,
                            const char **why);
/* The data follows the fixed part; decode checks offset + data <= total. */
size_t sf_wire_desc_encode(uint8_t *out, const SfMsgDesc *m);
int sf_wire_desc_decode(const uint8_t *in, size_t len, SfMsgDesc *m,
                        const char **why);
/* The fragment follows; decode checks index < count, the page offset and
 * that the length is what fragment index of count carries. */
size_t sf_wire_frag_encode(uint8_t *out, const SfMsgFrag *m);
int sf_wire_frag_decode(const uint8_t *in, size_t len, SfMsgFrag *m,
                        const char **why);
/* Bytes fragment index of count carries: [index * s, min(page,
 * (index + 1) * s)) of its page, s = ceil(page / count); 0 if none. */
size_t sf_wire_frag_len(unsigned index, unsigned count);
/* The runs follow the fixed part; decode checks the length, the flags
 * and that the runs ascend, are disjoint, non-empty and end below 2^32
 * pages (the block's own size is the receiver's to check). */
size_t sf_wire_zeromap_encode(uint8_t *out, const SfMsgZeroMap *m);
int sf_wire_zeromap_decode(const uint8_t *in, size_t len, SfMsgZeroMap *m,
                           const char **why);
/* Run i (< m->nruns) of a decoded ZEROMAP; put_run writes one. */
void sf_wire_zeromap_run(const SfMsgZeroMap *m, uint32_t i, uint64_t *page,
                         uint64_t *npages);
void sf_wire_zeromap_put_run(uint8_t *runs, uint32_t i, uint32_t page,
                             uint32_t npages);
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
