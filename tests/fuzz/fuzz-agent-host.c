/*
 * Fuzz target: the host's reader of guest agent frames
 * (hw-sf/sf-agent-frame.c), the code the sf-agent-port device runs on
 * every byte a guest writes.  The input is cut into writes of varying
 * sizes as virtio-serial delivers them.  A crash, a sanitizer report, a
 * frame handed out whose header does not check out, an accepted request
 * that does not re-encode to the bytes it came from, a byte that is
 * neither in a frame, dropped, nor still buffered, or a buffer left with
 * no room for the next write is a bug.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <string.h>

#include "sf-agent-frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
GPtrArray *sf_fuzz_seeds(void);

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = v;
    p[1] = v >> 8;
    p[2] = v >> 16;
    p[3] = v >> 24;
}

static void put_le64(uint8_t *p, uint64_t v)
{
    put_le32(p, (uint32_t)v);
    put_le32(p + 4, v >> 32);
}

/* An accepted request is exactly what its fields say, and in range. */
static void check_request(const SfAgentRxItem *it)
{
    SfAgentRequest req;
    uint8_t re[SF_AGENT_MAX_BODY] = { 0 };

    if (sf_agent_decode_request(it->type, it->body, &req)) {
        return;
    }
    switch (it->type) {
    case SF_AGENT_TICKET:
        g_assert(req.clones >= 1 && req.flags == 0);
        put_le32(re, req.clones);
        put_le32(re + 4, req.flags);
        break;
    case SF_AGENT_CLONE:
    case SF_AGENT_KILL:
        g_assert(req.ticket >= 1 && req.ticket <= INT64_MAX);
        put_le64(re, req.ticket);
        break;
    case SF_AGENT_EXIT:
        g_assert(req.how == SF_AGENT_HOW_EXITED ||
                 req.how == SF_AGENT_HOW_LOST ||
                 (req.how == SF_AGENT_HOW_SIGNALED && req.status >= 1));
        put_le32(re, (uint32_t)req.status);
        put_le32(re + 4, req.how);
        break;
    case SF_AGENT_CHECKPOINT:
        break;
    case SF_AGENT_CREATE:
        g_assert(req.checkpoint >= 1 && req.checkpoint <= INT64_MAX);
        g_assert(req.ticket >= 1 && req.ticket <= INT64_MAX);
        put_le64(re, req.checkpoint);
        put_le64(re + 8, req.ticket);
        break;
    default:
        g_assert_not_reached();
    }
    g_assert(memcmp(re, it->body, it->length) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static SfAgentRx rx;
    SfAgentRxItem it;
    size_t off = 0, chunk = size ? 1 + data[0] % 61 : 1;
    uint64_t framed = 0, dropped = 0;

    sf_agent_rx_reset(&rx);
    while (off < size) {
        uint32_t n = MIN(chunk, size - off);
        uint32_t took = sf_agent_rx_feed(&rx, data + off, n);
        SfAgentRxEvent ev;

        g_assert(took > 0);
        off += took;
        while ((ev = sf_agent_rx_next(&rx, &it)) != SF_AGENT_RX_NEED_MORE) {
            switch (ev) {
            case SF_AGENT_RX_FRAME:
                g_assert(it.type >= SF_AGENT_HELLO &&
                         it.type <= SF_AGENT_TIME);
                g_assert((int)it.length == sf_agent_body_len(it.type));
                g_assert(it.seq != 0);
                framed += SF_AGENT_HDR_LEN + it.length;
                if (it.type > SF_AGENT_HELLO && it.type <= SF_AGENT_CREATE) {
                    check_request(&it);
                }
                break;
            case SF_AGENT_RX_MALFORMED:
                g_assert(it.why && it.dropped == 1);
                dropped += it.dropped;
                break;
            case SF_AGENT_RX_DISCARDED:
                g_assert(it.dropped > 0);
                dropped += it.dropped;
                break;
            default:
                g_assert_not_reached();
            }
        }
        /* Less than a frame is left: the next write always has room. */
        g_assert(rx.len < sizeof(rx.buf));
        g_assert(sf_agent_rx_valid(&rx));
        /* Every byte is in a frame, dropped, or waiting. */
        g_assert(framed + dropped + rx.len == off);
    }
    return 0;
}

static void add_frame(GByteArray *a, uint8_t type, uint32_t seq,
                      const void *body, uint32_t len)
{
    uint8_t h[SF_AGENT_HDR_LEN] = { 0 };

    put_le32(h, SF_AGENT_MAGIC);
    h[4] = SF_AGENT_VERSION;
    h[5] = type;
    put_le32(h + 8, seq);
    put_le32(h + 12, len);
    g_byte_array_append(a, h, sizeof(h));
    g_byte_array_append(a, body, len);
}

GPtrArray *sf_fuzz_seeds(void)
{
    GPtrArray *seeds =
        g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    uint8_t b[16] = { 0 };
    GByteArray *a = g_byte_array_new();

    put_le32(b, 1); /* HELLO agent_version 1 */
    add_frame(a, SF_AGENT_HELLO, 1, b, 8);
    put_le32(b, 4); /* TICKET 4 clones */
    add_frame(a, SF_AGENT_TICKET, 2, b, 8);
    put_le64(b, 77); /* CLONE ticket 77 */
    add_frame(a, SF_AGENT_CLONE, 3, b, 8);
    add_frame(a, SF_AGENT_KILL, 4, b, 8);
    put_le32(b, 9); /* EXIT status 9, SIGNALED */
    put_le32(b + 4, SF_AGENT_HOW_SIGNALED);
    add_frame(a, SF_AGENT_EXIT, 5, b, 8);
    add_frame(a, SF_AGENT_CHECKPOINT, 6, b, 0);
    put_le64(b, 5); /* CREATE checkpoint 5, ticket 77 */
    put_le64(b + 8, 77);
    add_frame(a, SF_AGENT_CREATE, 7, b, 16);
    g_ptr_array_add(seeds, g_byte_array_free_to_bytes(a));
    /* Garbage, then a frame the resync must find. */
    a = g_byte_array_new();
    g_byte_array_append(a, (const uint8_t *)"SFAGxxSF", 8);
    add_frame(a, SF_AGENT_CHECKPOINT, 9, b, 0);
    g_ptr_array_add(seeds, g_byte_array_free_to_bytes(a));
    return seeds;
}
