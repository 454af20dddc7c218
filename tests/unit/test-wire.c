/*
 * Unit tests for the snowflock wire format (sf-wire.c).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <string.h>

#include "sf-wire.h"

static const uint8_t secret_a[SF_WIRE_SECRET_LEN] = {
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
    0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
};

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, v >> 32);
    put32(p + 4, (uint32_t)v);
}

/* Header: the byte layout is the contract, so check bytes, not just the
 * round trip. */
static void test_hdr_layout(void)
{
    static const uint8_t want[SF_WIRE_HDR_SIZE] = {
        0x53, 0x46, 0x50, 0x47, /* magic "SFPG" */
        0x00, 0x03,             /* version */
        0x00, 0x03,             /* REQUEST */
        0x00, 0x00, 0x00, 0x2c, /* length 44 */
        0x00, 0x00, 0x01, 0x02, /* clone 258 */
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
    };
    uint8_t out[SF_WIRE_HDR_SIZE];
    SfWireHdr h;
    const char *why = NULL;

    sf_wire_hdr_encode(out, SF_MSG_REQUEST, 44, 258, 0x0102030405060708ull);
    g_assert_cmpmem(out, sizeof(out), want, sizeof(want));
    g_assert_cmpint(sf_wire_hdr_decode(out, &h, &why), ==, 0);
    g_assert_cmphex(h.magic, ==, SF_WIRE_MAGIC);
    g_assert_cmpuint(h.version, ==, SF_WIRE_VERSION);
    g_assert_cmpuint(h.type, ==, SF_MSG_REQUEST);
    g_assert_cmpuint(h.length, ==, 44);
    g_assert_cmpuint(h.clone_id, ==, 258);
    g_assert_cmphex(h.fork_id, ==, 0x0102030405060708ull);
}

typedef struct HdrCase {
    const char *name;
    uint32_t magic;
    uint16_t version;
    uint16_t type;
    uint32_t length;
    int expect;
} HdrCase;

#define V SF_WIRE_VERSION
static const HdrCase hdr_cases[] = {
    { "hello-ok", SF_WIRE_MAGIC, V, SF_MSG_HELLO, 20, 0 },
    { "welcome-ok", SF_WIRE_MAGIC, V, SF_MSG_WELCOME, 32, 0 },
    { "request-ok", SF_WIRE_MAGIC, V, SF_MSG_REQUEST, 44, 0 },
    { "data-one-page", SF_WIRE_MAGIC, V, SF_MSG_DATA, 20 + 4096, 0 },
    { "data-max", SF_WIRE_MAGIC, V, SF_MSG_DATA, SF_WIRE_MAX_BODY, 0 },
    { "zero-ok", SF_WIRE_MAGIC, V, SF_MSG_ZERO, 20, 0 },
    { "done-ok", SF_WIRE_MAGIC, V, SF_MSG_DONE, 16, 0 },
    { "error-min", SF_WIRE_MAGIC, V, SF_MSG_ERROR, 4, 0 },
    { "error-max", SF_WIRE_MAGIC, V, SF_MSG_ERROR, 4 + 256, 0 },
    { "desc-get-ok", SF_WIRE_MAGIC, V, SF_MSG_DESC_GET, 24, 0 },
    { "desc-empty", SF_WIRE_MAGIC, V, SF_MSG_DESC, 16, 0 },
    { "desc-max", SF_WIRE_MAGIC, V, SF_MSG_DESC, 16 + SF_WIRE_DESC_CHUNK, 0 },
    { "frag-min", SF_WIRE_MAGIC, V, SF_MSG_FRAG, 21, 0 },
    { "frag-page", SF_WIRE_MAGIC, V, SF_MSG_FRAG, 20 + 4096, 0 },
    { "zeromap-empty", SF_WIRE_MAGIC, V, SF_MSG_ZEROMAP, 12, 0 },
    { "zeromap-max", SF_WIRE_MAGIC, V, SF_MSG_ZEROMAP, 12 + 8192 * 8, 0 },
    { "bad-magic", 0x47504653, V, SF_MSG_HELLO, 20, -SF_WERR_PROTO },
    { "zero-magic", 0, V, SF_MSG_HELLO, 20, -SF_WERR_PROTO },
    { "version-0", SF_WIRE_MAGIC, 0, SF_MSG_HELLO, 20, -SF_WERR_VERSION },
    { "version-1", SF_WIRE_MAGIC, 1, SF_MSG_HELLO, 20, -SF_WERR_VERSION },
    { "version-2", SF_WIRE_MAGIC, 2, SF_MSG_HELLO, 20, -SF_WERR_VERSION },
    { "version-4", SF_WIRE_MAGIC, 4, SF_MSG_HELLO, 20, -SF_WERR_VERSION },
    { "version-ffff", SF_WIRE_MAGIC, 0xffff, SF_MSG_HELLO, 20,
      -SF_WERR_VERSION },
    { "type-0", SF_WIRE_MAGIC, V, 0, 20, -SF_WERR_PROTO },
    { "type-max", SF_WIRE_MAGIC, V, SF_MSG__MAX, 20, -SF_WERR_PROTO },
    { "type-ffff", SF_WIRE_MAGIC, V, 0xffff, 20, -SF_WERR_PROTO },
    { "hello-short", SF_WIRE_MAGIC, V, SF_MSG_HELLO, 19, -SF_WERR_PROTO },
    { "hello-long", SF_WIRE_MAGIC, V, SF_MSG_HELLO, 21, -SF_WERR_PROTO },
    { "welcome-v1", SF_WIRE_MAGIC, V, SF_MSG_WELCOME, 16, -SF_WERR_PROTO },
    { "request-v1", SF_WIRE_MAGIC, V, SF_MSG_REQUEST, 36, -SF_WERR_PROTO },
    { "request-short", SF_WIRE_MAGIC, V, SF_MSG_REQUEST, 43, -SF_WERR_PROTO },
    { "request-huge", SF_WIRE_MAGIC, V, SF_MSG_REQUEST, 0xffffffff,
      -SF_WERR_PROTO },
    { "data-no-page", SF_WIRE_MAGIC, V, SF_MSG_DATA, 20, -SF_WERR_PROTO },
    { "data-over-max", SF_WIRE_MAGIC, V, SF_MSG_DATA, SF_WIRE_MAX_BODY + 1,
      -SF_WERR_PROTO },
    { "zero-long", SF_WIRE_MAGIC, V, SF_MSG_ZERO, 24, -SF_WERR_PROTO },
    { "done-empty", SF_WIRE_MAGIC, V, SF_MSG_DONE, 0, -SF_WERR_PROTO },
    { "error-short", SF_WIRE_MAGIC, V, SF_MSG_ERROR, 3, -SF_WERR_PROTO },
    { "error-long", SF_WIRE_MAGIC, V, SF_MSG_ERROR, 4 + 257, -SF_WERR_PROTO },
    { "desc-get-long", SF_WIRE_MAGIC, V, SF_MSG_DESC_GET, 25, -SF_WERR_PROTO },
    { "desc-over", SF_WIRE_MAGIC, V, SF_MSG_DESC, 17 + SF_WIRE_DESC_CHUNK,
      -SF_WERR_PROTO },
    { "frag-empty", SF_WIRE_MAGIC, V, SF_MSG_FRAG, 20, -SF_WERR_PROTO },
    { "frag-over-page", SF_WIRE_MAGIC, V, SF_MSG_FRAG, 20 + 4097,
      -SF_WERR_PROTO },
    { "zeromap-short", SF_WIRE_MAGIC, V, SF_MSG_ZEROMAP, 11, -SF_WERR_PROTO },
    { "zeromap-over", SF_WIRE_MAGIC, V, SF_MSG_ZEROMAP, 12 + 8192 * 8 + 8,
      -SF_WERR_PROTO },
};

static void test_hdr_case(gconstpointer data)
{
    const HdrCase *c = data;
    uint8_t raw[SF_WIRE_HDR_SIZE] = { 0 };
    SfWireHdr h;
    const char *why = NULL;
    int ret;

    put32(raw, c->magic);
    raw[4] = c->version >> 8;
    raw[5] = c->version;
    raw[6] = c->type >> 8;
    raw[7] = c->type;
    put32(raw + 8, c->length);
    put32(raw + 12, 5);
    put64(raw + 16, 9);
    ret = sf_wire_hdr_decode(raw, &h, &why);
    g_assert_cmpint(ret, ==, c->expect);
    if (ret < 0) {
        g_assert_nonnull(why);
        g_assert_cmpstr(why, !=, "");
    }
}

/* Round trips of every message type. */
static void test_roundtrip_hello(void)
{
    SfMsgHello in = { .flags = 0 }, out;
    uint8_t buf[SF_WIRE_HELLO_LEN];
    const char *why;

    memcpy(in.secret, secret_a, sizeof(secret_a));
    g_assert_cmpuint(sf_wire_hello_encode(buf, &in), ==, SF_WIRE_HELLO_LEN);
    g_assert_cmpint(sf_wire_hello_decode(buf, sizeof(buf), &out, &why), ==, 0);
    g_assert_cmpmem(out.secret, 16, secret_a, 16);
    g_assert_cmpuint(out.flags, ==, 0);
}

static void test_roundtrip_welcome(void)
{
    SfMsgWelcome in = {
        .nblocks = 7,
        .page_size = SF_WIRE_PAGE_SIZE,
        .total_pages = 0x123456789aull,
        .mcast_group = 0xef4d0101u, /* 239.77.1.1 */
        .mcast_port = 7001,
        .frag_count = 3,
        .desc_len = 0x10203,
    }, out;
    SfMsgWelcome none = { .nblocks = 1, .page_size = SF_WIRE_PAGE_SIZE };
    uint8_t buf[SF_WIRE_WELCOME_LEN];
    const char *why;

    g_assert_cmpuint(sf_wire_welcome_encode(buf, &in), ==, SF_WIRE_WELCOME_LEN);
    g_assert_cmpuint(be32(buf), ==, 7);
    g_assert_cmpuint(be32(buf + 16), ==, 0xef4d0101u);
    g_assert_cmpuint(buf[22], ==, 3);
    g_assert_cmpint(sf_wire_welcome_decode(buf, sizeof(buf), &out, &why), ==,
                    0);
    g_assert_cmpuint(out.nblocks, ==, 7);
    g_assert_cmpuint(out.page_size, ==, SF_WIRE_PAGE_SIZE);
    g_assert_cmphex(out.total_pages, ==, 0x123456789aull);
    g_assert_cmphex(out.mcast_group, ==, 0xef4d0101u);
    g_assert_cmpuint(out.mcast_port, ==, 7001);
    g_assert_cmpuint(out.frag_count, ==, 3);
    g_assert_cmphex(out.desc_len, ==, 0x10203);
    /* No group: port and fragments must be 0 too. */
    sf_wire_welcome_encode(buf, &none);
    g_assert_cmpint(sf_wire_welcome_decode(buf, sizeof(buf), &out, &why), ==,
                    0);
    buf[22] = 1;
    g_assert_cmpint(sf_wire_welcome_decode(buf, sizeof(buf), &out, &why), ==,
                    -SF_WERR_PROTO);
    /* A group that is not multicast, too many fragments, padding. */
    in.mcast_group = 0x0a000001u;
    sf_wire_welcome_encode(buf, &in);
    g_assert_cmpint(sf_wire_welcome_decode(buf, sizeof(buf), &out, &why), ==,
                    -SF_WERR_PROTO);
    in.mcast_group = 0xef4d0101u;
    in.frag_count = SF_WIRE_MAX_FRAGS + 1;
    sf_wire_welcome_encode(buf, &in);
    g_assert_cmpint(sf_wire_welcome_decode(buf, sizeof(buf), &out, &why), ==,
                    -SF_WERR_PROTO);
    in.frag_count = 3;
    sf_wire_welcome_encode(buf, &in);
    buf[23] = 1;
    g_assert_cmpint(sf_wire_welcome_decode(buf, sizeof(buf), &out, &why), ==,
                    -SF_WERR_PROTO);
}

static void test_roundtrip_desc(void)
{
    SfMsgDescGet gin = { .offset = 0x1000 }, gout;
    SfMsgDesc din = { .offset = 100, .total = 300 }, dout;
    uint8_t buf[SF_WIRE_DESC_LEN + 300];
    const char *why;

    memcpy(gin.secret, secret_a, sizeof(secret_a));
    g_assert_cmpuint(sf_wire_desc_get_encode(buf, &gin), ==,
                     SF_WIRE_DESC_GET_LEN);
    g_assert_cmpint(
        sf_wire_desc_get_decode(buf, SF_WIRE_DESC_GET_LEN, &gout, &why), ==, 0);
    g_assert_cmpmem(gout.secret, 16, secret_a, 16);
    g_assert_cmphex(gout.offset, ==, 0x1000);
    g_assert_cmpuint(sf_wire_desc_encode(buf, &din), ==, SF_WIRE_DESC_LEN);
    /* 200 bytes from offset 100 of 300: fits exactly; one more does not. */
    g_assert_cmpint(
        sf_wire_desc_decode(buf, SF_WIRE_DESC_LEN + 200, &dout, &why), ==, 0);
    g_assert_cmpuint(dout.offset, ==, 100);
    g_assert_cmpuint(dout.total, ==, 300);
    g_assert_cmpint(
        sf_wire_desc_decode(buf, SF_WIRE_DESC_LEN + 201, &dout, &why), ==,
        -SF_WERR_PROTO);
    din.offset = 301;
    sf_wire_desc_encode(buf, &din);
    g_assert_cmpint(sf_wire_desc_decode(buf, SF_WIRE_DESC_LEN, &dout, &why), ==,
                    -SF_WERR_PROTO);
    /* Offsets near the top of the range cannot wrap the check. */
    din.offset = UINT64_MAX - 10;
    din.total = UINT64_MAX;
    sf_wire_desc_encode(buf, &din);
    g_assert_cmpint(
        sf_wire_desc_decode(buf, SF_WIRE_DESC_LEN + 20, &dout, &why), ==,
        -SF_WERR_PROTO);
}

static void test_roundtrip_frag(void)
{
    SfMsgFrag in = { .block = 2,
                     .offset = 0x3000,
                     .flags = SF_REQ_DEMAND,
                     .index = 2,
                     .count = 3 },
              out;
    uint8_t buf[SF_WIRE_FRAG_LEN + SF_WIRE_PAGE_SIZE];
    size_t last = sf_wire_frag_len(2, 3);
    const char *why;

    /* 4096 in 3: 1366, 1366 and 1364 bytes. */
    g_assert_cmpuint(sf_wire_frag_len(0, 3), ==, 1366);
    g_assert_cmpuint(last, ==, 1364);
    g_assert_cmpuint(sf_wire_frag_len(0, 1), ==, 4096);
    g_assert_cmpuint(sf_wire_frag_len(31, 32), ==, 128);
    g_assert_cmpuint(sf_wire_frag_len(3, 3), ==, 0);
    g_assert_cmpuint(sf_wire_frag_len(0, 33), ==, 0);
    g_assert_cmpuint(sf_wire_frag_encode(buf, &in), ==, SF_WIRE_FRAG_LEN);
    g_assert_cmpint(
        sf_wire_frag_decode(buf, SF_WIRE_FRAG_LEN + last, &out, &why), ==, 0);
    g_assert_cmpuint(out.block, ==, 2);
    g_assert_cmphex(out.offset, ==, 0x3000);
    g_assert_cmpuint(out.index, ==, 2);
    g_assert_cmpuint(out.count, ==, 3);
    g_assert_cmphex(out.flags, ==, SF_REQ_DEMAND);
    /* A length that is not this fragment's, an index past the count,
     * an unaligned page, unknown flags. */
    g_assert_cmpint(
        sf_wire_frag_decode(buf, SF_WIRE_FRAG_LEN + 1366, &out, &why), ==,
        -SF_WERR_PROTO);
    in.index = 3;
    sf_wire_frag_encode(buf, &in);
    g_assert_cmpint(
        sf_wire_frag_decode(buf, SF_WIRE_FRAG_LEN + last, &out, &why), ==,
        -SF_WERR_PROTO);
    in.index = 2;
    in.offset = 0x3001;
    sf_wire_frag_encode(buf, &in);
    g_assert_cmpint(
        sf_wire_frag_decode(buf, SF_WIRE_FRAG_LEN + last, &out, &why), ==,
        -SF_WERR_PROTO);
    in.offset = 0x3000;
    in.flags = 0x100;
    sf_wire_frag_encode(buf, &in);
    g_assert_cmpint(
        sf_wire_frag_decode(buf, SF_WIRE_FRAG_LEN + last, &out, &why), ==,
        -SF_WERR_PROTO);
}

static void test_roundtrip_request(void)
{
    SfMsgRequest in = {
        .block = 3, .npages = SF_WIRE_MAX_PAGES,
        .offset = 0xfffff000ull << 12, .flags = SF_REQ_FLAGS_ALL & ~SF_REQ_WORKSET,
        .rx_kbps = 123456, .loss_ppm = 50000,
    }, out;
    uint8_t buf[SF_WIRE_REQUEST_LEN];
    const char *why;

    memcpy(in.secret, secret_a, sizeof(secret_a));
    g_assert_cmpuint(sf_wire_request_encode(buf, &in), ==, SF_WIRE_REQUEST_LEN);
    g_assert_cmpint(sf_wire_request_decode(buf, sizeof(buf), &out, &why), ==,
                    0);
    g_assert_cmpmem(out.secret, 16, secret_a, 16);
    g_assert_cmpuint(out.block, ==, 3);
    g_assert_cmpuint(out.npages, ==, SF_WIRE_MAX_PAGES);
    g_assert_cmphex(out.offset, ==, in.offset);
    g_assert_cmphex(out.flags, ==, in.flags);
    g_assert_cmpuint(out.rx_kbps, ==, 123456);
    g_assert_cmpuint(out.loss_ppm, ==, 50000);
    /* Loss is a share: above 100 % is refused. */
    in.loss_ppm = 1000001;
    sf_wire_request_encode(buf, &in);
    g_assert_cmpint(sf_wire_request_decode(buf, sizeof(buf), &out, &why), ==,
                    -SF_WERR_PROTO);
}

static void test_roundtrip_pages(void)
{
    static const SfMsgType types[] = { SF_MSG_DATA, SF_MSG_ZERO };
    size_t t;

    for (t = 0; t < G_N_ELEMENTS(types); t++) {
        SfMsgPages in = { 1, 5, 0x40000, SF_REQ_DEMAND }, out;
        size_t len = SF_WIRE_PAGES_LEN +
                     (types[t] == SF_MSG_DATA ? 5 * SF_WIRE_PAGE_SIZE : 0);
        uint8_t *buf = g_malloc0(len);
        const char *why;

        g_assert_cmpuint(sf_wire_pages_encode(buf, &in), ==, SF_WIRE_PAGES_LEN);
        g_assert_cmpint(sf_wire_pages_decode(types[t], buf, len, &out, &why),
                        ==, 0);
        g_assert_cmpuint(out.block, ==, 1);
        g_assert_cmpuint(out.npages, ==, 5);
        g_assert_cmphex(out.offset, ==, 0x40000);
        g_assert_cmphex(out.flags, ==, SF_REQ_DEMAND);
        g_free(buf);
    }
}

static void test_roundtrip_done(void)
{
    SfMsgDone in, out;
    uint8_t buf[SF_WIRE_DONE_LEN];
    const char *why;

    memcpy(in.secret, secret_a, sizeof(secret_a));
    g_assert_cmpuint(sf_wire_done_encode(buf, &in), ==, SF_WIRE_DONE_LEN);
    g_assert_cmpint(sf_wire_done_decode(buf, sizeof(buf), &out, &why), ==, 0);
    g_assert_cmpmem(out.secret, 16, secret_a, 16);
}

static void test_roundtrip_error(void)
{
    uint8_t buf[4 + SF_WIRE_ERRMSG_MAX];
    char *long_msg = g_strnfill(SF_WIRE_ERRMSG_MAX + 50, 'x');
    SfMsgError out;
    const char *why;
    size_t len;

    len = sf_wire_error_encode(buf, SF_WERR_RANGE, "block 9 out of range");
    g_assert_cmpuint(len, ==, 4 + strlen("block 9 out of range"));
    g_assert_cmpint(sf_wire_error_decode(buf, len, &out, &why), ==, 0);
    g_assert_cmpuint(out.code, ==, SF_WERR_RANGE);
    g_assert_cmpstr(out.message, ==, "block 9 out of range");

    /* Long messages are truncated to the maximum, not rejected. */
    len = sf_wire_error_encode(buf, SF_WERR_PROTO, long_msg);
    g_assert_cmpuint(len, ==, 4 + SF_WIRE_ERRMSG_MAX);
    g_assert_cmpint(sf_wire_error_decode(buf, len, &out, &why), ==, 0);
    g_assert_cmpuint(strlen(out.message), ==, SF_WIRE_ERRMSG_MAX);

    /* Empty and NULL messages are fine. */
    len = sf_wire_error_encode(buf, SF_WERR_BUSY, NULL);
    g_assert_cmpuint(len, ==, 4);
    g_assert_cmpint(sf_wire_error_decode(buf, len, &out, &why), ==, 0);
    g_assert_cmpstr(out.message, ==, "");

    /* Our encoder never emits what our decoder would reject. */
    len = sf_wire_error_encode(buf, SF_WERR_PROTO, "tab\there\nnl\x7f");
    g_assert_cmpint(sf_wire_error_decode(buf, len, &out, &why), ==, 0);
    g_assert_cmpstr(out.message, ==, "tab?here?nl?");
    g_free(long_msg);
}

/* Body decoders: every check that does not need context. */
typedef enum BodyKind {
    BODY_HELLO,
    BODY_WELCOME,
    BODY_REQUEST,
    BODY_DATA,
    BODY_ZERO,
    BODY_DONE,
    BODY_ERROR,
} BodyKind;

typedef struct BodyCase {
    const char *name;
    BodyKind kind;
    size_t len;      /* body length handed to decode */
    uint32_t npages; /* REQUEST/DATA/ZERO */
    uint64_t offset;
    uint32_t flags;     /* HELLO/REQUEST/DATA/ZERO */
    const char *errmsg; /* ERROR body text (raw bytes) */
    size_t errmsg_len;
    int expect;
} BodyCase;

static const BodyCase body_cases[] = {
    { "request-ok", BODY_REQUEST, 44, 1, 0, SF_REQ_DEMAND, NULL, 0, 0 },
    { "request-npages-0", BODY_REQUEST, 44, 0, 0, 0, NULL, 0, -SF_WERR_PROTO },
    { "request-npages-max", BODY_REQUEST, 44, SF_WIRE_MAX_PAGES, 0, 0, NULL, 0,
      0 },
    { "request-npages-over", BODY_REQUEST, 44, SF_WIRE_MAX_PAGES + 1, 0, 0,
      NULL, 0, -SF_WERR_PROTO },
    { "request-npages-huge", BODY_REQUEST, 44, 0xffffffff, 0, 0, NULL, 0,
      -SF_WERR_PROTO },
    { "request-unaligned", BODY_REQUEST, 44, 1, 4095, 0, NULL, 0,
      -SF_WERR_PROTO },
    { "request-unaligned-high", BODY_REQUEST, 44, 1, (1ull << 40) + 512, 0,
      NULL, 0, -SF_WERR_PROTO },
    { "request-unicast", BODY_REQUEST, 44, 1, 0, SF_REQ_UNICAST, NULL, 0, 0 },
    { "request-flags", BODY_REQUEST, 44, 1, 0, 0x8, NULL, 0, -SF_WERR_PROTO },
    { "request-flags-high", BODY_REQUEST, 44, 1, 0, 0x80000000u, NULL, 0,
      -SF_WERR_PROTO },
    { "request-short", BODY_REQUEST, 43, 1, 0, 0, NULL, 0, -SF_WERR_PROTO },
    { "request-v1", BODY_REQUEST, 36, 1, 0, 0, NULL, 0, -SF_WERR_PROTO },
    { "data-ok", BODY_DATA, 20 + 2 * 4096, 2, 8192, 0, NULL, 0, 0 },
    { "data-len-short", BODY_DATA, 20 + 4096, 2, 0, 0, NULL, 0,
      -SF_WERR_PROTO },
    { "data-len-long", BODY_DATA, 20 + 3 * 4096, 2, 0, 0, NULL, 0,
      -SF_WERR_PROTO },
    { "data-len-odd", BODY_DATA, 20 + 2 * 4096 + 1, 2, 0, 0, NULL, 0,
      -SF_WERR_PROTO },
    { "data-npages-0", BODY_DATA, 20 + 4096, 0, 0, 0, NULL, 0, -SF_WERR_PROTO },
    { "data-npages-over", BODY_DATA, SF_WIRE_MAX_BODY, SF_WIRE_MAX_PAGES + 1, 0,
      0, NULL, 0, -SF_WERR_PROTO },
    { "data-unaligned", BODY_DATA, 20 + 4096, 1, 100, 0, NULL, 0,
      -SF_WERR_PROTO },
    { "data-flags", BODY_DATA, 20 + 4096, 1, 0, 0x10, NULL, 0, -SF_WERR_PROTO },
    { "zero-ok", BODY_ZERO, 20, 1024, 0, SF_REQ_PREFETCH, NULL, 0, 0 },
    { "zero-npages-0", BODY_ZERO, 20, 0, 0, 0, NULL, 0, -SF_WERR_PROTO },
    { "zero-with-payload", BODY_ZERO, 20 + 4096, 1, 0, 0, NULL, 0,
      -SF_WERR_PROTO },
    { "hello-ok", BODY_HELLO, 20, 0, 0, 0, NULL, 0, 0 },
    { "hello-desc-only", BODY_HELLO, 20, 0, 0, SF_HELLO_DESC_ONLY, NULL, 0, 0 },
    { "hello-flags", BODY_HELLO, 20, 0, 0, 8, NULL, 0, -SF_WERR_PROTO },
    { "hello-workset", BODY_HELLO, 20, 0, 0, SF_HELLO_WORKSET, NULL, 0, 0 },
    { "hello-short", BODY_HELLO, 16, 0, 0, 0, NULL, 0, -SF_WERR_PROTO },
    { "welcome-ok", BODY_WELCOME, 32, 0, 0, 0, NULL, 0, 0 },
    { "welcome-long", BODY_WELCOME, 33, 0, 0, 0, NULL, 0, -SF_WERR_PROTO },
    { "welcome-v1", BODY_WELCOME, 16, 0, 0, 0, NULL, 0, -SF_WERR_PROTO },
    { "done-ok", BODY_DONE, 16, 0, 0, 0, NULL, 0, 0 },
    { "done-long", BODY_DONE, 20, 0, 0, 0, NULL, 0, -SF_WERR_PROTO },
    { "error-ok", BODY_ERROR, 0, 0, 0, 0, "fine", 4, 0 },
    { "error-nul", BODY_ERROR, 0, 0, 0, 0, "a\0b", 3, -SF_WERR_PROTO },
    { "error-newline", BODY_ERROR, 0, 0, 0, 0, "a\nb", 3, -SF_WERR_PROTO },
    { "error-escape", BODY_ERROR, 0, 0, 0, 0, "\x1b[2J", 4, -SF_WERR_PROTO },
    { "error-high-bit", BODY_ERROR, 0, 0, 0, 0, "caf\xc3\xa9", 5,
      -SF_WERR_PROTO },
    { "error-del", BODY_ERROR, 0, 0, 0, 0, "x\x7f", 2, -SF_WERR_PROTO },
};

static void test_body_case(gconstpointer data)
{
    const BodyCase *c = data;
    size_t cap = MAX(c->len, 4 + SF_WIRE_ERRMSG_MAX) + 16;
    uint8_t *buf = g_malloc0(cap);
    const char *why = NULL;
    size_t len = c->len;
    int ret = 1;

    switch (c->kind) {
    case BODY_HELLO: {
        SfMsgHello m;

        put32(buf + 16, c->flags);
        ret = sf_wire_hello_decode(buf, len, &m, &why);
        break;
    }
    case BODY_WELCOME: {
        SfMsgWelcome m;

        put32(buf + 4, SF_WIRE_PAGE_SIZE);
        ret = sf_wire_welcome_decode(buf, len, &m, &why);
        break;
    }
    case BODY_REQUEST: {
        SfMsgRequest m;

        put32(buf + 16, 0);
        put32(buf + 20, c->npages);
        put64(buf + 24, c->offset);
        put32(buf + 32, c->flags);
        ret = sf_wire_request_decode(buf, len, &m, &why);
        break;
    }
    case BODY_DATA:
    case BODY_ZERO: {
        SfMsgPages m;

        put32(buf + 4, c->npages);
        put64(buf + 8, c->offset);
        put32(buf + 16, c->flags);
        ret = sf_wire_pages_decode(c->kind == BODY_DATA ? SF_MSG_DATA
                                                        : SF_MSG_ZERO,
                                   buf, len, &m, &why);
        break;
    }
    case BODY_DONE: {
        SfMsgDone m;

        ret = sf_wire_done_decode(buf, len, &m, &why);
        break;
    }
    case BODY_ERROR: {
        SfMsgError m;

        put32(buf, SF_WERR_PROTO);
        memcpy(buf + 4, c->errmsg, c->errmsg_len);
        len = 4 + c->errmsg_len;
        ret = sf_wire_error_decode(buf, len, &m, &why);
        if (ret == 0) {
            g_assert_cmpmem(m.message, strlen(m.message), c->errmsg,
                            c->errmsg_len);
        }
        break;
    }
    }
    g_assert_cmpint(ret, ==, c->expect);
    if (ret < 0) {
        g_assert_nonnull(why);
    }
    g_free(buf);
}

/* A DATA/ZERO decoder must refuse the wrong type outright. */
static void test_pages_wrong_type(void)
{
    uint8_t buf[SF_WIRE_PAGES_LEN] = { 0 };
    SfMsgPages m;
    const char *why = NULL;

    put32(buf + 4, 1);
    g_assert_cmpint(
        sf_wire_pages_decode(SF_MSG_REQUEST, buf, sizeof(buf), &m, &why), ==,
        -SF_WERR_PROTO);
    g_assert_nonnull(why);
}

typedef struct SecretCase {
    const char *hex;
    bool ok;
} SecretCase;

static const SecretCase secret_cases[] = {
    { "00112233445566778899aabbccddeeff", true },
    { "00112233445566778899AABBCCDDEEFF", true },
    { "00112233445566778899aAbBcCdDeEfF", true },
    { "", false },
    { "0011223344556677", false },
    { "00112233445566778899aabbccddeef", false },   /* 31 */
    { "00112233445566778899aabbccddeeff0", false }, /* 33 */
    { "00112233445566778899aabbccddeefg", false },
    { "0x112233445566778899aabbccddeeff", false },
    { " 0112233445566778899aabbccddeeff", false },
    { "00112233445566778899aabbccddeef ", false },
    { "0011223344556677-899aabbccddeeff", false },
};

static void test_secret_parse(void)
{
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(secret_cases); i++) {
        uint8_t out[SF_WIRE_SECRET_LEN];
        char back[2 * SF_WIRE_SECRET_LEN + 1];

        memset(out, 0x5a, sizeof(out));
        g_test_message("secret case %zu: '%s'", i, secret_cases[i].hex);
        g_assert_cmpint(sf_wire_secret_parse(secret_cases[i].hex, out), ==,
                        secret_cases[i].ok);
        if (secret_cases[i].ok) {
            g_assert_cmpmem(out, sizeof(out), secret_a, sizeof(secret_a));
            sf_wire_secret_format(out, back);
            g_assert_cmpstr(back, ==, "00112233445566778899aabbccddeeff");
        } else {
            /* A failed parse must not leave a half-written secret. */
            uint8_t untouched[SF_WIRE_SECRET_LEN];

            memset(untouched, 0x5a, sizeof(untouched));
            g_assert_cmpmem(out, sizeof(out), untouched, sizeof(untouched));
        }
    }
    g_assert_false(sf_wire_secret_parse(NULL, (uint8_t[16]){ 0 }));
}

static void test_secret_equal(void)
{
    uint8_t b[SF_WIRE_SECRET_LEN];
    size_t i;

    memcpy(b, secret_a, sizeof(b));
    g_assert_true(sf_wire_secret_equal(secret_a, b));
    for (i = 0; i < SF_WIRE_SECRET_LEN; i++) {
        memcpy(b, secret_a, sizeof(b));
        b[i] ^= 0x01;
        g_assert_false(sf_wire_secret_equal(secret_a, b));
        b[i] ^= 0x81;
        g_assert_false(sf_wire_secret_equal(secret_a, b));
    }
}

static void test_type_names(void)
{
    g_assert_cmpstr(sf_wire_type_name(SF_MSG_HELLO), ==, "HELLO");
    g_assert_cmpstr(sf_wire_type_name(SF_MSG_ERROR), ==, "ERROR");
    g_assert_cmpstr(sf_wire_type_name(0), ==, "UNKNOWN");
    g_assert_cmpstr(sf_wire_type_name(SF_MSG__MAX), ==, "UNKNOWN");
    g_assert_cmpstr(sf_wire_type_name(0xffffffff), ==, "UNKNOWN");
}

/*
 * Random headers and bodies: decoders never crash, and whatever they
 * accept obeys the table.  (A cheap stand-in for the fuzzer.)
 */
static void test_random_input(void)
{
    GRand *r = g_rand_new_with_seed(0x5f5f);
    uint8_t buf[64];
    int i;

    for (i = 0; i < 200000; i++) {
        SfWireHdr h;
        const char *why = NULL;
        size_t j, len = g_rand_int_range(r, 0, sizeof(buf) + 1);

        for (j = 0; j < sizeof(buf); j++) {
            buf[j] = g_rand_int(r);
        }
        /* Bias towards valid magic/version so deeper checks run. */
        if (i & 1) {
            put32(buf, SF_WIRE_MAGIC);
            buf[4] = 0;
            buf[5] = SF_WIRE_VERSION;
            buf[6] = 0;
            buf[7] %= SF_MSG__MAX + 1;
            put32(buf + 8, g_rand_int_range(r, 0, 300));
        }
        if (sf_wire_hdr_decode(buf, &h, &why) == 0) {
            g_assert_cmpuint(h.type, >, 0);
            g_assert_cmpuint(h.type, <, SF_MSG__MAX);
            g_assert_cmpuint(h.length, >=, sf_wire_msg_table[h.type].min_len);
            g_assert_cmpuint(h.length, <=, sf_wire_msg_table[h.type].max_len);
        } else {
            g_assert_nonnull(why);
        }
        {
            SfMsgRequest rq;
            SfMsgError er;
            SfMsgPages pg;
            SfMsgHello he;

            if (sf_wire_request_decode(buf, len, &rq, &why) == 0) {
                g_assert_cmpuint(len, ==, SF_WIRE_REQUEST_LEN);
                g_assert_cmpuint(rq.npages, >=, 1);
                g_assert_cmpuint(rq.npages, <=, SF_WIRE_MAX_PAGES);
                g_assert_cmpuint(rq.offset % SF_WIRE_PAGE_SIZE, ==, 0);
            }
            if (sf_wire_error_decode(buf, len, &er, &why) == 0) {
                g_assert_cmpuint(strlen(er.message), ==, len - 4);
            }
            g_assert_cmpint(
                sf_wire_pages_decode(SF_MSG_ZERO, buf, len, &pg, &why) == 0
                    ? (int)len
                    : SF_WIRE_PAGES_LEN,
                ==, SF_WIRE_PAGES_LEN);
            sf_wire_hello_decode(buf, len, &he, &why);
        }
    }
    g_rand_free(r);
}

int main(int argc, char **argv)
{
    size_t i;

    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/wire/hdr/layout", test_hdr_layout);
    for (i = 0; i < G_N_ELEMENTS(hdr_cases); i++) {
        char *path = g_strdup_printf("/wire/hdr/%s", hdr_cases[i].name);

        g_test_add_data_func(path, &hdr_cases[i], test_hdr_case);
        g_free(path);
    }
    g_test_add_func("/wire/roundtrip/hello", test_roundtrip_hello);
    g_test_add_func("/wire/roundtrip/welcome", test_roundtrip_welcome);
    g_test_add_func("/wire/roundtrip/request", test_roundtrip_request);
    g_test_add_func("/wire/roundtrip/desc", test_roundtrip_desc);
    g_test_add_func("/wire/roundtrip/frag", test_roundtrip_frag);
    g_test_add_func("/wire/roundtrip/data-zero", test_roundtrip_pages);
    g_test_add_func("/wire/roundtrip/done", test_roundtrip_done);
    g_test_add_func("/wire/roundtrip/error", test_roundtrip_error);
    for (i = 0; i < G_N_ELEMENTS(body_cases); i++) {
        char *path = g_strdup_printf("/wire/body/%s", body_cases[i].name);

        g_test_add_data_func(path, &body_cases[i], test_body_case);
        g_free(path);
    }
    g_test_add_func("/wire/body/pages-wrong-type", test_pages_wrong_type);
    g_test_add_func("/wire/secret/parse", test_secret_parse);
    g_test_add_func("/wire/secret/equal", test_secret_equal);
    g_test_add_func("/wire/type-names", test_type_names);
    g_test_add_func("/wire/random-input", test_random_input);
    return g_test_run();
}
