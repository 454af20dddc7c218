/*
 * Fuzz target: the message framer (sf-framer.c), fed a stream in reads
 * of varying size as a socket would deliver it, and the same bytes as
 * datagrams.  A crash, a sanitizer report, a message handed out whose
 * header does not check out against the wire table, a body larger than
 * the buffer, or a framer that asks for zero bytes is a bug.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <string.h>

#include "sf-framer.h"
#include "sf-wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
GPtrArray *sf_fuzz_seeds(void);

/* Small, as the page server's: big DATA bodies must come back TOO_BIG. */
#define BODY_CAP 64

static void check_ready(const SfFramer *f)
{
    const SfWireMsgRule *rule;

    g_assert(f->hdr.magic == SF_WIRE_MAGIC);
    g_assert(f->hdr.version == SF_WIRE_VERSION);
    g_assert(f->hdr.type > 0 && f->hdr.type < SF_MSG__MAX);
    rule = &sf_wire_msg_table[f->hdr.type];
    g_assert(f->hdr.length >= rule->min_len && f->hdr.length <= rule->max_len);
    g_assert(f->hdr.length <= f->body_cap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t body[BODY_CAP];
    size_t chunk = size ? 1 + data[0] % 31 : 1;
    size_t off = 0;
    SfFramer f;

    sf_framer_init(&f, body, sizeof(body));
    while (off < size) {
        uint8_t *dst;
        size_t want = sf_framer_want(&f, &dst);
        size_t n = MIN(MIN(want, chunk), size - off);
        SfFrameResult r;

        g_assert(want > 0 && want <= SF_WIRE_HDR_SIZE + BODY_CAP);
        memcpy(dst, data + off, n);
        off += n;
        r = sf_framer_advance(&f, n);
        if (r == SF_FRAME_READY) {
            check_ready(&f);
        } else if (r != SF_FRAME_PARTIAL) {
            g_assert(f.why && f.why[0]);
            break; /* the stream is closed */
        }
    }

    /* The same bytes as datagrams of the chunk size. */
    for (off = 0; off < size; off += chunk) {
        struct iovec iov[2];
        size_t len = MIN(chunk * 3, size - off), got = 0;

        sf_framer_dgram_iov(&f, iov);
        for (int i = 0; i < 2 && got < len; i++) {
            size_t n = MIN(iov[i].iov_len, len - got);

            memcpy(iov[i].iov_base, data + off + got, n);
            got += n;
        }
        if (sf_framer_dgram(&f, len) == SF_FRAME_READY) {
            check_ready(&f);
            g_assert(len == SF_WIRE_HDR_SIZE + f.hdr.length);
        }
    }
    return 0;
}

static void add(GByteArray *a, SfMsgType t, const void *body, size_t len)
{
    uint8_t h[SF_WIRE_HDR_SIZE];

    sf_wire_hdr_encode(h, t, len, 1, 42);
    g_byte_array_append(a, h, sizeof(h));
    g_byte_array_append(a, body, len);
}

GPtrArray *sf_fuzz_seeds(void)
{
    GPtrArray *s =
        g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    uint8_t b[SF_WIRE_PAGES_LEN + SF_WIRE_PAGE_SIZE] = { 0 };
    SfMsgHello hello = { .flags = 0 };
    SfMsgRequest r = { .block = 0, .npages = 1, .flags = SF_REQ_DEMAND };
    SfMsgPages p = { .block = 0, .npages = 1 };
    SfMsgDone d = { { 0 } };
    GByteArray *a = g_byte_array_new();

    add(a, SF_MSG_HELLO, b, sf_wire_hello_encode(b, &hello));
    add(a, SF_MSG_REQUEST, b, sf_wire_request_encode(b, &r));
    add(a, SF_MSG_DONE, b, sf_wire_done_encode(b, &d));
    g_ptr_array_add(s, g_byte_array_free_to_bytes(a));
    a = g_byte_array_new();
    sf_wire_pages_encode(b, &p);
    add(a, SF_MSG_DATA, b, sizeof(b));
    add(a, SF_MSG_ZERO, b, sf_wire_pages_encode(b, &p));
    g_ptr_array_add(s, g_byte_array_free_to_bytes(a));
    return s;
}
