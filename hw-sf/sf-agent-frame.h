/*
 * snowflock: the host's reader of guest agent frames (sf-agent-proto.h).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Plain C, no QEMU headers: sf-agent.c (the sf-agent-port device) reads
 * the guest's byte stream through it, and tests/fuzz/fuzz-agent-host.c
 * links it as is.  Everything here handles bytes a hostile guest wrote:
 *   - a header is checked in full (magic, version, flags, type, the
 *     type's fixed length, seq) before any body byte is looked at, and
 *     the length is only ever compared with the table, never used to
 *     size or index anything;
 *   - a malformed header costs the guest its first byte and a search for
 *     the next magic (resync), so garbage cannot wedge the stream;
 *   - a request body is decoded and checked (sf_agent_decode_request)
 *     before any field of it is used.
 */
#ifndef HW_SF_AGENT_FRAME_H
#define HW_SF_AGENT_FRAME_H

#include <stdbool.h>
#include <stdint.h>

#include "sf-agent-proto.h"

#define SF_AGENT_FRAME_MAX (SF_AGENT_HDR_LEN + SF_AGENT_MAX_BODY)

/*
 * Bytes of a frame not complete yet.  It is device state (it migrates
 * with the device, and a clone inherits its parent's): a frame the guest
 * was writing at a fork or migration completes on the other side.
 * resync: a malformed frame was seen and bytes are dropped until the next
 * magic.
 */
typedef struct SfAgentRx {
    uint32_t len;
    uint8_t buf[SF_AGENT_FRAME_MAX];
    bool resync;
} SfAgentRx;

typedef enum SfAgentRxEvent {
    SF_AGENT_RX_NEED_MORE, /* no whole frame left: feed more bytes */
    SF_AGENT_RX_FRAME,     /* a well-formed frame from the guest */
    SF_AGENT_RX_MALFORMED, /* a bad header; its first byte was dropped */
    SF_AGENT_RX_DISCARDED, /* bytes dropped while looking for a magic */
} SfAgentRxEvent;

typedef struct SfAgentRxItem {
    /* FRAME and MALFORMED: the header, in host byte order. */
    uint8_t type;
    uint32_t seq;
    uint32_t length;
    /* FRAME: its length body bytes (the frame has left the stream). */
    uint8_t body[SF_AGENT_MAX_BODY];
    /* MALFORMED: which check failed ("magic", "length", ...). */
    const char *why;
    /* MALFORMED and DISCARDED: bytes dropped. */
    uint32_t dropped;
} SfAgentRxItem;

/* Append what fits of data; returns how many bytes were taken. */
uint32_t sf_agent_rx_feed(SfAgentRx *rx, const uint8_t *data, uint32_t len);
/*
 * The next thing in the stream.  Call until NEED_MORE; then at most a
 * partial frame is left, so the next feed has room for at least one byte.
 */
SfAgentRxEvent sf_agent_rx_next(SfAgentRx *rx, SfAgentRxItem *it);
/* A new stream (the guest closed the port, or reset). */
void sf_agent_rx_reset(SfAgentRx *rx);
/* Whether restored state (a migration stream) is one rx could be in. */
bool sf_agent_rx_valid(const SfAgentRx *rx);

/* A request other than HELLO, decoded (host byte order). */
typedef struct SfAgentRequest {
    uint8_t type;
    uint32_t clones;     /* TICKET, >= 1 */
    uint32_t flags;      /* TICKET, 0 */
    uint64_t ticket;     /* CLONE, KILL, CREATE: 1..INT64_MAX */
    uint64_t checkpoint; /* CREATE: 1..INT64_MAX */
    int32_t status;      /* EXIT */
    uint32_t how;        /* EXIT: EXITED, SIGNALED (status >= 1) or LOST */
} SfAgentRequest;

/*
 * Decode and check the body of a well-formed request frame of @type
 * (TICKET..CREATE).  NULL on success, else why it is refused (the guest
 * gets EINVAL).
 */
const char *sf_agent_decode_request(uint8_t type, const uint8_t *body,
                                    SfAgentRequest *req);

#endif
