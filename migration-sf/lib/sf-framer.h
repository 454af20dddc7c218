/*
 * snowflock page-transfer messages: the one reassembler every receiver uses.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A framer turns what a transport delivers into whole, header-checked
 * messages (sf-wire.h).  It does no I/O itself, so the same state machine
 * serves
 *   - a stream read non-blocking by the page server's poll() loop: bytes
 *     come in any split, a peer may stop half way through a header, and
 *     the loop must never wait for it;
 *   - a stream read blocking by a clone's fault thread (sf_msg_recv());
 *   - a datagram transport (UDP multicast, later), where one datagram is
 *     one message and there is no connection to reassemble on.
 *
 * Stream use: sf_framer_want() says where the next bytes go and how many
 * the current message still lacks (never more, so a read never takes
 * bytes of the next message); after reading n of them call
 * sf_framer_advance(n).  Datagram use: receive into sf_framer_dgram_iov()
 * and call sf_framer_dgram() with the datagram's full length.
 *
 * Guarantees, whichever way it is fed:
 *   - the header is validated against sf_wire_msg_table[] as soon as its
 *     24th byte is in, before a single body byte is asked for;
 *   - a body longer than the buffer the owner gave is refused, never read
 *     (receivers of tiny client messages give a tiny buffer);
 *   - memory is the owner's: a framer allocates nothing.
 * After SF_FRAME_BAD or SF_FRAME_TOO_BIG a stream has lost alignment and
 * must be closed; a datagram is simply dropped.
 */
#ifndef SF_FRAMER_H
#define SF_FRAMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "sf-wire.h"

typedef enum SfFrameResult {
    SF_FRAME_PARTIAL = 0, /* feed it more */
    SF_FRAME_READY,       /* f->hdr and f->body hold one whole message */
    SF_FRAME_BAD,         /* malformed header: f->werr, f->why */
    SF_FRAME_TOO_BIG,     /* valid header, body larger than the buffer */
} SfFrameResult;

typedef struct SfFramer {
    /* The owner's buffer for bodies, and its size. */
    uint8_t *body;
    size_t body_cap;

    /* Valid once a header is in (and while READY). */
    SfWireHdr hdr;
    /* After BAD: SF_WERR_PROTO or SF_WERR_VERSION, and a static reason. */
    uint32_t werr;
    const char *why;

    /* Private. */
    uint8_t raw[SF_WIRE_HDR_SIZE];
    size_t got; /* bytes of the current message, header included */
    bool have_hdr;
    bool ready;
} SfFramer;

void sf_framer_init(SfFramer *f, uint8_t *body, size_t body_cap);

/*
 * Stream: where the next bytes of the current message go (*dst) and how
 * many it still lacks (> 0).  After a READY message this starts the next.
 */
size_t sf_framer_want(SfFramer *f, uint8_t **dst);
/* Stream: n (1..want) bytes were written at *dst. */
SfFrameResult sf_framer_advance(SfFramer *f, size_t n);
/*
 * True between messages: end of stream here is a clean close, anywhere
 * else it cuts a message.
 */
bool sf_framer_idle(const SfFramer *f);

/*
 * Datagram: the two places a datagram is received into (header, body).
 * sf_framer_dgram() then takes its full length (MSG_TRUNC's, so a
 * datagram longer than the buffer is TOO_BIG, not silently cut): it is
 * READY only if it holds exactly one message.
 */
void sf_framer_dgram_iov(SfFramer *f, struct iovec iov[2]);
SfFrameResult sf_framer_dgram(SfFramer *f, size_t len);

#endif
