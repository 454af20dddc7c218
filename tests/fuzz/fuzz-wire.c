/*
 * Fuzz target: every wire decoder, on a header + body as a peer would
 * send them.  A crash, a sanitizer report or an accepted message that
 * does not re-encode to the same bytes is a bug.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <string.h>
#include "sf-wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
GPtrArray *sf_fuzz_seeds(void);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    SfWireHdr h;
    const char *why;
    const uint8_t *body;
    size_t blen;
    uint8_t re[SF_WIRE_WELCOME_LEN + SF_WIRE_REQUEST_LEN + SF_WIRE_ERRMSG_MAX];

    if (size < SF_WIRE_HDR_SIZE || sf_wire_hdr_decode(data, &h, &why) < 0) {
        return 0;
    }
    g_assert(h.type > 0 && h.type < SF_MSG__MAX);
    g_assert(h.length >= sf_wire_msg_table[h.type].min_len &&
             h.length <= sf_wire_msg_table[h.type].max_len);
    body = data + SF_WIRE_HDR_SIZE;
    blen = MIN(size - SF_WIRE_HDR_SIZE, h.length);

    switch (h.type) {
    case SF_MSG_HELLO: {
        SfMsgHello m;
        if (sf_wire_hello_decode(body, blen, &m, &why) == 0) {
            g_assert(sf_wire_hello_encode(re, &m) == blen);
            g_assert(memcmp(re, body, blen) == 0);
        }
        break;
    }
    case SF_MSG_WELCOME: {
        SfMsgWelcome m;
        if (sf_wire_welcome_decode(body, blen, &m, &why) == 0) {
            g_assert(sf_wire_welcome_encode(re, &m) == blen);
            g_assert(memcmp(re, body, blen) == 0);
            g_assert(m.frag_count <= SF_WIRE_MAX_FRAGS);
        }
        break;
    }
    case SF_MSG_DESC_GET: {
        SfMsgDescGet m;
        if (sf_wire_desc_get_decode(body, blen, &m, &why) == 0) {
            g_assert(sf_wire_desc_get_encode(re, &m) == blen);
            g_assert(memcmp(re, body, blen) == 0);
        }
        break;
    }
    case SF_MSG_DESC: {
        SfMsgDesc m;
        if (sf_wire_desc_decode(body, blen, &m, &why) == 0) {
            g_assert(m.offset <= m.total);
            g_assert(blen - SF_WIRE_DESC_LEN <= m.total - m.offset);
            g_assert(sf_wire_desc_encode(re, &m) == SF_WIRE_DESC_LEN);
            g_assert(memcmp(re, body, SF_WIRE_DESC_LEN) == 0);
        }
        break;
    }
    case SF_MSG_FRAG: {
        SfMsgFrag m;
        if (sf_wire_frag_decode(body, blen, &m, &why) == 0) {
            g_assert(m.index < m.count && m.count <= SF_WIRE_MAX_FRAGS);
            g_assert(blen ==
                     SF_WIRE_FRAG_LEN + sf_wire_frag_len(m.index, m.count));
            g_assert(sf_wire_frag_encode(re, &m) == SF_WIRE_FRAG_LEN);
            g_assert(memcmp(re, body, SF_WIRE_FRAG_LEN) == 0);
        }
        break;
    }
    case SF_MSG_ZEROMAP: {
        SfMsgZeroMap m;
        if (sf_wire_zeromap_decode(body, blen, &m, &why) == 0) {
            uint64_t end = 0;

            g_assert(blen == SF_WIRE_ZEROMAP_LEN + (size_t)m.nruns * 8);
            for (uint32_t i = 0; i < m.nruns; i++) {
                uint64_t p, n;

                sf_wire_zeromap_run(&m, i, &p, &n);
                g_assert(n >= 1 && p >= end && p + n <= UINT32_MAX);
                end = p + n;
            }
            g_assert(sf_wire_zeromap_encode(re, &m) == SF_WIRE_ZEROMAP_LEN);
            g_assert(memcmp(re, body, SF_WIRE_ZEROMAP_LEN) == 0);
        }
        break;
    }
    case SF_MSG_REQUEST: {
        SfMsgRequest m;
        if (sf_wire_request_decode(body, blen, &m, &why) == 0) {
            g_assert(m.npages >= 1 && m.npages <= SF_WIRE_MAX_PAGES);
            g_assert(m.offset % SF_WIRE_PAGE_SIZE == 0);
            g_assert(sf_wire_request_encode(re, &m) == blen);
            g_assert(memcmp(re, body, blen) == 0);
        }
        break;
    }
    case SF_MSG_DATA:
    case SF_MSG_ZERO: {
        SfMsgPages m;
        if (sf_wire_pages_decode(h.type, body, blen, &m, &why) == 0) {
            g_assert(m.npages >= 1 && m.npages <= SF_WIRE_MAX_PAGES);
            g_assert(h.type == SF_MSG_ZERO ||
                     blen == SF_WIRE_PAGES_LEN +
                                 (size_t)m.npages * SF_WIRE_PAGE_SIZE);
        }
        break;
    }
    case SF_MSG_DONE: {
        SfMsgDone m;
        sf_wire_done_decode(body, blen, &m, &why);
        break;
    }
    case SF_MSG_ERROR: {
        SfMsgError m;
        if (sf_wire_error_decode(body, blen, &m, &why) == 0) {
            g_assert(strlen(m.message) <= SF_WIRE_ERRMSG_MAX);
        }
        break;
    }
    }
    return 0;
}

static GBytes *msg(SfMsgType t, const void *body, size_t len)
{
    uint8_t *b = g_malloc(SF_WIRE_HDR_SIZE + len);

    sf_wire_hdr_encode(b, t, len, 1, 42);
    memcpy(b + SF_WIRE_HDR_SIZE, body, len);
    return g_bytes_new_take(b, SF_WIRE_HDR_SIZE + len);
}

GPtrArray *sf_fuzz_seeds(void)
{
    GPtrArray *s =
        g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    uint8_t b[SF_WIRE_PAGES_LEN + 2 * SF_WIRE_PAGE_SIZE] = { 0 };
    SfMsgHello hello = { .flags = 0 };
    SfMsgWelcome w = { .nblocks = 3,
                       .page_size = SF_WIRE_PAGE_SIZE,
                       .total_pages = 1000,
                       .mcast_group = 0xef4d0101u,
                       .mcast_port = 7000,
                       .frag_count = 3,
                       .desc_len = 5000 };
    SfMsgDescGet dg = { .offset = 4096 };
    SfMsgDesc de = { .offset = 4096, .total = 5000 };
    SfMsgFrag fr = { .block = 1, .offset = 8192, .index = 1, .count = 3 };
    SfMsgRequest r = {
        .block = 1, .npages = 2, .offset = 8192, .flags = SF_REQ_DEMAND
    };
    SfMsgPages p = {
        .block = 1, .npages = 2, .offset = 8192, .flags = SF_REQ_PREFETCH
    };
    SfMsgDone d;

    memset(hello.secret, 0xab, sizeof(hello.secret));
    memset(r.secret, 0xab, sizeof(r.secret));
    memset(d.secret, 0xab, sizeof(d.secret));
    g_ptr_array_add(s, msg(SF_MSG_HELLO, b, sf_wire_hello_encode(b, &hello)));
    g_ptr_array_add(s, msg(SF_MSG_WELCOME, b, sf_wire_welcome_encode(b, &w)));
    g_ptr_array_add(s, msg(SF_MSG_REQUEST, b, sf_wire_request_encode(b, &r)));
    g_ptr_array_add(s, msg(SF_MSG_ZERO, b, sf_wire_pages_encode(b, &p)));
    sf_wire_pages_encode(b, &p);
    memset(b + SF_WIRE_PAGES_LEN, 0x5a, 2 * SF_WIRE_PAGE_SIZE);
    g_ptr_array_add(s, msg(SF_MSG_DATA, b, sizeof(b)));
    g_ptr_array_add(s, msg(SF_MSG_DONE, b, sf_wire_done_encode(b, &d)));
    g_ptr_array_add(s,
                    msg(SF_MSG_ERROR, b,
                        sf_wire_error_encode(b, SF_WERR_AUTH, "bad secret")));
    memset(dg.secret, 0xab, sizeof(dg.secret));
    g_ptr_array_add(s,
                    msg(SF_MSG_DESC_GET, b, sf_wire_desc_get_encode(b, &dg)));
    sf_wire_desc_encode(b, &de);
    g_ptr_array_add(s, msg(SF_MSG_DESC, b, SF_WIRE_DESC_LEN + 904));
    sf_wire_frag_encode(b, &fr);
    g_ptr_array_add(
        s, msg(SF_MSG_FRAG, b, SF_WIRE_FRAG_LEN + sf_wire_frag_len(1, 3)));
    return s;
}
