/*
 * Unit tests for the message framer (migration-sf/lib/sf-framer.c): the
 * one reassembler the page server (non-blocking) and the clones (blocking)
 * read with, and a datagram transport will.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <string.h>

#include "sf-framer.h"
#include "sf-wire.h"

#define FORK_ID 0x1122334455667788ull

/* A stream of three messages: HELLO, REQUEST, DATA of 2 pages. */
static GByteArray *three_messages(void)
{
    GByteArray *a = g_byte_array_new();
    uint8_t hdr[SF_WIRE_HDR_SIZE];
    uint8_t body[SF_WIRE_PAGES_LEN + 2 * SF_WIRE_PAGE_SIZE];
    SfMsgHello hello = { .flags = 0 };
    SfMsgRequest req = { .block = 1, .npages = 2, .offset = 8192 };
    SfMsgPages pages = { .block = 1, .npages = 2, .offset = 8192 };
    size_t n;

    memset(hello.secret, 0xab, sizeof(hello.secret));
    memset(req.secret, 0xab, sizeof(req.secret));
    n = sf_wire_hello_encode(body, &hello);
    sf_wire_hdr_encode(hdr, SF_MSG_HELLO, n, 1, FORK_ID);
    g_byte_array_append(a, hdr, sizeof(hdr));
    g_byte_array_append(a, body, n);
    n = sf_wire_request_encode(body, &req);
    sf_wire_hdr_encode(hdr, SF_MSG_REQUEST, n, 1, FORK_ID);
    g_byte_array_append(a, hdr, sizeof(hdr));
    g_byte_array_append(a, body, n);
    n = sf_wire_pages_encode(body, &pages);
    for (size_t i = n; i < sizeof(body); i++) {
        body[i] = i * 13;
    }
    sf_wire_hdr_encode(hdr, SF_MSG_DATA, sizeof(body), 0, FORK_ID);
    g_byte_array_append(a, hdr, sizeof(hdr));
    g_byte_array_append(a, body, sizeof(body));
    return a;
}

/*
 * Feed a in reads of at most `chunk` bytes, each asking only for what the
 * framer wants; return the message types seen, checking every body.
 */
static GString *feed_stream(const GByteArray *a, size_t chunk)
{
    static uint8_t buf[SF_WIRE_MAX_BODY];
    GString *types = g_string_new(NULL);
    SfFramer f;
    size_t off = 0;

    sf_framer_init(&f, buf, sizeof(buf));
    g_assert_true(sf_framer_idle(&f));
    while (off < a->len) {
        uint8_t *dst;
        size_t want = sf_framer_want(&f, &dst);
        size_t n = MIN(MIN(want, chunk), a->len - off);
        SfFrameResult r;

        g_assert_cmpuint(want, >, 0);
        memcpy(dst, a->data + off, n);
        off += n;
        r = sf_framer_advance(&f, n);
        g_assert_cmpint(r == SF_FRAME_READY || r == SF_FRAME_PARTIAL, ==, TRUE);
        if (r == SF_FRAME_READY) {
            /* The body is exactly the bytes after this header. */
            g_assert_cmpmem(f.body, f.hdr.length, a->data + off - f.hdr.length,
                            f.hdr.length);
            g_assert_cmpuint(f.hdr.fork_id, ==, FORK_ID);
            g_string_append_c(types, '0' + f.hdr.type);
            g_assert_true(sf_framer_idle(&f));
        } else {
            g_assert_false(sf_framer_idle(&f));
        }
    }
    return types;
}

/* Every read size gives the same messages, and never reads ahead. */
static void test_stream_any_split(void)
{
    g_autoptr(GByteArray) a = three_messages();
    static const size_t chunks[] = { 1, 2, 3, 7, 23, 24, 25, 4096, 1 << 20 };

    for (size_t i = 0; i < G_N_ELEMENTS(chunks); i++) {
        g_autoptr(GString) t = feed_stream(a, chunks[i]);

        g_assert_cmpstr(t->str, ==, "134");
    }
}

/* A bad header is refused at its 24th byte: no body byte is asked for. */
static void test_stream_bad_header_before_body(void)
{
    uint8_t hdr[SF_WIRE_HDR_SIZE];
    uint8_t body[64];
    uint8_t *dst;
    SfFramer f;
    static const struct {
        const char *name;
        int offset;
        uint8_t value;
        SfFrameResult want;
        uint32_t werr;
    } cases[] = {
        { "magic", 0, 0x00, SF_FRAME_BAD, SF_WERR_PROTO },
        { "version", 5, 99, SF_FRAME_BAD, SF_WERR_VERSION },
        { "type", 7, 0x42, SF_FRAME_BAD, SF_WERR_PROTO },
        { "length over the type's maximum", 9, 0x01, SF_FRAME_BAD,
          SF_WERR_PROTO },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        sf_wire_hdr_encode(hdr, SF_MSG_REQUEST, SF_WIRE_REQUEST_LEN, 1,
                           FORK_ID);
        hdr[cases[i].offset] = cases[i].value;
        sf_framer_init(&f, body, sizeof(body));
        for (size_t k = 0; k < sizeof(hdr); k++) {
            g_assert_cmpuint(sf_framer_want(&f, &dst), ==, sizeof(hdr) - k);
            *dst = hdr[k];
            if (k + 1 < sizeof(hdr)) {
                g_assert_cmpint(sf_framer_advance(&f, 1), ==, SF_FRAME_PARTIAL);
            }
        }
        g_test_message("%s", cases[i].name);
        g_assert_cmpint(sf_framer_advance(&f, 1), ==, cases[i].want);
        g_assert_cmpuint(f.werr, ==, cases[i].werr);
        g_assert_nonnull(f.why);
    }
}

/* A valid header whose body would not fit is refused, not read. */
static void test_stream_too_big(void)
{
    uint8_t hdr[SF_WIRE_HDR_SIZE];
    uint8_t body[64];
    uint8_t *dst;
    SfFramer f;

    sf_wire_hdr_encode(hdr, SF_MSG_DATA, SF_WIRE_PAGES_LEN + SF_WIRE_PAGE_SIZE,
                       0, FORK_ID);
    sf_framer_init(&f, body, sizeof(body));
    g_assert_cmpuint(sf_framer_want(&f, &dst), ==, sizeof(hdr));
    memcpy(dst, hdr, sizeof(hdr));
    g_assert_cmpint(sf_framer_advance(&f, sizeof(hdr)), ==, SF_FRAME_TOO_BIG);
    g_assert_cmpuint(f.hdr.type, ==, SF_MSG_DATA);
    g_assert_cmpuint(f.werr, ==, SF_WERR_PROTO);
}

static size_t dgram_recv(SfFramer *f, const uint8_t *d, size_t len)
{
    struct iovec iov[2];
    size_t off = 0;

    /* What recvmsg() would scatter, reporting the full length. */
    sf_framer_dgram_iov(f, iov);
    for (int i = 0; i < 2 && off < len; i++) {
        size_t n = MIN(iov[i].iov_len, len - off);

        memcpy(iov[i].iov_base, d + off, n);
        off += n;
    }
    return len;
}

static void test_datagram(void)
{
    g_autoptr(GByteArray) a = three_messages();
    static uint8_t buf[SF_WIRE_MAX_BODY];
    uint8_t small[64];
    size_t hello_len = SF_WIRE_HDR_SIZE + SF_WIRE_HELLO_LEN;
    size_t req_len = SF_WIRE_HDR_SIZE + SF_WIRE_REQUEST_LEN;
    const uint8_t *data_msg = a->data + hello_len + req_len;
    size_t data_len = a->len - hello_len - req_len;
    SfFramer f;

    sf_framer_init(&f, buf, sizeof(buf));
    /* One datagram, one message. */
    g_assert_cmpint(sf_framer_dgram(&f, dgram_recv(&f, a->data, hello_len)), ==,
                    SF_FRAME_READY);
    g_assert_cmpuint(f.hdr.type, ==, SF_MSG_HELLO);
    g_assert_cmpint(sf_framer_dgram(&f, dgram_recv(&f, data_msg, data_len)), ==,
                    SF_FRAME_READY);
    g_assert_cmpuint(f.hdr.type, ==, SF_MSG_DATA);
    g_assert_cmpmem(f.body, f.hdr.length, data_msg + SF_WIRE_HDR_SIZE,
                    data_len - SF_WIRE_HDR_SIZE);
    /* Two messages in one datagram, half a message, less than a header. */
    g_assert_cmpint(
        sf_framer_dgram(&f, dgram_recv(&f, a->data, hello_len + req_len)), ==,
        SF_FRAME_BAD);
    g_assert_cmpint(sf_framer_dgram(&f, dgram_recv(&f, a->data, hello_len - 1)),
                    ==, SF_FRAME_BAD);
    g_assert_cmpint(sf_framer_dgram(&f, dgram_recv(&f, a->data, 10)), ==,
                    SF_FRAME_BAD);
    /* Bigger than the receiver's buffer. */
    sf_framer_init(&f, small, sizeof(small));
    g_assert_cmpint(sf_framer_dgram(&f, dgram_recv(&f, data_msg, data_len)), ==,
                    SF_FRAME_TOO_BIG);
    /* The buffer still takes a datagram that fits. */
    g_assert_cmpint(sf_framer_dgram(&f, dgram_recv(&f, a->data, hello_len)), ==,
                    SF_FRAME_READY);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/framer/stream/any-split", test_stream_any_split);
    g_test_add_func("/framer/stream/bad-header-before-body",
                    test_stream_bad_header_before_body);
    g_test_add_func("/framer/stream/too-big", test_stream_too_big);
    g_test_add_func("/framer/datagram", test_datagram);
    return g_test_run();
}
