/*
 * snowflock: the host's reader of guest agent frames (sf-agent-proto.h).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Integers on the channel are little endian; they are read a byte at a
 * time, so nothing depends on the host's byte order or on alignment.
 */
#include <string.h>

#include "sf-agent-frame.h"

static uint16_t get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
    return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* Whatever a guest may send: requests, reports, and TIME. */
static bool is_from_guest(uint8_t type)
{
    return type >= SF_AGENT_HELLO && type <= SF_AGENT_TIME;
}

/* Field offsets in the 16-byte header (see SfAgentHdr). */
#define HDR_MAGIC   0
#define HDR_VERSION 4
#define HDR_TYPE    5
#define HDR_FLAGS   6
#define HDR_SEQ     8
#define HDR_LENGTH  12

/* NULL if the header at p is good, else the name of the failed check. */
static const char *check_hdr(const uint8_t *p)
{
    uint8_t type = p[HDR_TYPE];

    if (get_le32(p + HDR_MAGIC) != SF_AGENT_MAGIC) {
        return "magic";
    }
    if (p[HDR_VERSION] != SF_AGENT_VERSION) {
        return "version";
    }
    if (get_le16(p + HDR_FLAGS) != 0) {
        return "flags";
    }
    if (!is_from_guest(type)) {
        return "type";
    }
    if (get_le32(p + HDR_LENGTH) != (uint32_t)sf_agent_body_len(type)) {
        return "length";
    }
    if (get_le32(p + HDR_SEQ) == 0) {
        /* 0 marks the host's unsolicited messages. */
        return "seq";
    }
    return NULL;
}

static void drop(SfAgentRx *rx, uint32_t n)
{
    memmove(rx->buf, rx->buf + n, rx->len - n);
    rx->len -= n;
}

uint32_t sf_agent_rx_feed(SfAgentRx *rx, const uint8_t *data, uint32_t len)
{
    uint32_t n = sizeof(rx->buf) - rx->len;

    if (n > len) {
        n = len;
    }
    memcpy(rx->buf + rx->len, data, n);
    rx->len += n;
    return n;
}

/* Bytes before the next possible magic (a partial one at the end counts). */
static uint32_t junk_before_magic(const SfAgentRx *rx)
{
    uint8_t magic[4] = {
        SF_AGENT_MAGIC & 0xff,
        SF_AGENT_MAGIC >> 8 & 0xff,
        SF_AGENT_MAGIC >> 16 & 0xff,
        SF_AGENT_MAGIC >> 24,
    };
    uint32_t i;

    for (i = 0; i < rx->len; i++) {
        uint32_t n = rx->len - i < 4 ? rx->len - i : 4;

        if (!memcmp(rx->buf + i, magic, n)) {
            break;
        }
    }
    return i;
}

SfAgentRxEvent sf_agent_rx_next(SfAgentRx *rx, SfAgentRxItem *it)
{
    const char *bad;
    uint32_t len;

    it->type = 0;
    it->seq = it->length = it->dropped = 0;
    it->why = NULL;
    if (rx->resync) {
        uint32_t n = junk_before_magic(rx);

        /* Until 4 bytes are in, a partial magic may still be junk. */
        rx->resync = rx->len - n < 4;
        if (n) {
            drop(rx, n);
            it->dropped = n;
            return SF_AGENT_RX_DISCARDED;
        }
        if (rx->resync) {
            return SF_AGENT_RX_NEED_MORE;
        }
    }
    if (rx->len < SF_AGENT_HDR_LEN) {
        return SF_AGENT_RX_NEED_MORE;
    }
    it->type = rx->buf[HDR_TYPE];
    it->seq = get_le32(rx->buf + HDR_SEQ);
    it->length = get_le32(rx->buf + HDR_LENGTH);
    bad = check_hdr(rx->buf);
    if (bad) {
        /* At least the first byte goes, so the search moves on. */
        it->why = bad;
        it->dropped = 1;
        drop(rx, 1);
        rx->resync = true;
        return SF_AGENT_RX_MALFORMED;
    }
    len = it->length;
    if (rx->len < SF_AGENT_HDR_LEN + len) {
        return SF_AGENT_RX_NEED_MORE;
    }
    /* The body is the caller's now; the frame leaves the stream. */
    memcpy(it->body, rx->buf + SF_AGENT_HDR_LEN, len);
    drop(rx, SF_AGENT_HDR_LEN + len);
    return SF_AGENT_RX_FRAME;
}

void sf_agent_rx_reset(SfAgentRx *rx)
{
    rx->len = 0;
    rx->resync = false;
}

bool sf_agent_rx_valid(const SfAgentRx *rx)
{
    return rx->len <= sizeof(rx->buf);
}

static bool ticket_ok(uint64_t t)
{
    /* libsf's tickets and checkpoints are int64_t > 0. */
    return t != 0 && t <= INT64_MAX;
}

const char *sf_agent_decode_request(uint8_t type, const uint8_t *body,
                                    SfAgentRequest *req)
{
    memset(req, 0, sizeof(*req));
    req->type = type;
    switch (type) {
    case SF_AGENT_TICKET:
        req->clones = get_le32(body);
        req->flags = get_le32(body + 4);
        return req->clones < 1 || req->flags ? "bad ticket request" : NULL;
    case SF_AGENT_CLONE:
    case SF_AGENT_KILL:
        req->ticket = get_le64(body);
        return ticket_ok(req->ticket) ? NULL : "bad ticket";
    case SF_AGENT_EXIT:
        req->status = (int32_t)get_le32(body);
        req->how = get_le32(body + 4);
        if (req->how != SF_AGENT_HOW_EXITED &&
            req->how != SF_AGENT_HOW_SIGNALED &&
            req->how != SF_AGENT_HOW_LOST) {
            return "bad exit";
        }
        return req->how == SF_AGENT_HOW_SIGNALED && req->status < 1 ? "bad exit"
                                                                    : NULL;
    case SF_AGENT_CHECKPOINT:
        return NULL;
    case SF_AGENT_CREATE:
        req->checkpoint = get_le64(body);
        req->ticket = get_le64(body + 8);
        return ticket_ok(req->checkpoint) && ticket_ok(req->ticket)
                   ? NULL
                   : "bad create request";
    }
    return "not a request";
}
