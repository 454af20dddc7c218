/*
 * Unit tests for transports and the page server, over every transport.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * One table of cases, run over unix, tcp (IPv4) and tcp (IPv6, skipped when
 * the host has no ::1): a page server runs in a GThread over a memory
 * source of two blocks mixing zero and patterned pages, and each case is a
 * client, often a hostile one.  Every reply is checked against the
 * reference pattern: exact bytes for DATA, and runs split exactly at
 * zero/non-zero boundaries.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "sf-pageserver.h"
#include "sf-pagesrc.h"
#include "sf-seal.h"
#include "sf-transport.h"
#include "sf-wire.h"

#define FORK_ID ((uint64_t)0x5eedf00d)
#define PAGE    SF_WIRE_PAGE_SIZE
/* Block 0 is longer than one maximal run. */
static const uint64_t block_pages[2] = { SF_WIRE_MAX_PAGES + 40, 300 };
static uint8_t *block_mem[2];

static const uint8_t secret[SF_WIRE_SECRET_LEN] = {
    0xde, 0xad, 0xbe, 0xef, 0x01, 0x23, 0x45, 0x67,
    0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98,
};
static const uint8_t bad_secret[SF_WIRE_SECRET_LEN] = {
    0xde, 0xad, 0xbe, 0xef, 0x01, 0x23, 0x45, 0x67,
    0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x99,
};

/* Reference pattern */

static bool ref_zero(uint32_t b, uint64_t p)
{
    /* Runs of three zero pages every 12, plus scattered single ones. */
    return (p / 3) % 4 == 1 || p % 17 == 5;
}

static void fill_page(uint8_t *page, uint32_t b, uint64_t p)
{
    uint64_t *w = (uint64_t *)page;
    size_t i;

    memset(page, 0, PAGE);
    if (ref_zero(b, p)) {
        return;
    }
    /* Pages that are zero but for one byte keep sf_page_is_zero honest. */
    if (p % 13 == 12) {
        page[PAGE - 1] = b + 1;
        return;
    }
    if (p % 19 == 7) {
        page[0] = b + 1;
        return;
    }
    if (p % 23 == 4) {
        page[2049] = 0x80;
        return;
    }
    for (i = 0; i < PAGE / 8; i++) {
        w[i] = (b + 1) * 0x9e3779b97f4a7c15ull ^ (p << 20) ^ i;
    }
    page[0] = 0xa5;
}

static void pattern_init(void)
{
    uint32_t b;
    uint64_t p;

    for (b = 0; b < 2; b++) {
        block_mem[b] = g_malloc(block_pages[b] * PAGE);
        for (p = 0; p < block_pages[b]; p++) {
            fill_page(block_mem[b] + p * PAGE, b, p);
        }
    }
}

/* Transports */

typedef struct Transport {
    const char *name;
    const char *listen; /* NULL: unix socket in a temp dir */
} Transport;

static const Transport transports[] = {
    { "unix", NULL },
    { "tcp", "tcp:127.0.0.1:0" },
    { "tcp6", "tcp:[::1]:0" },
};

/* Server fixture */

typedef struct Server {
    SfPageServer *ps;
    SfPageServerConfig cfg; /* the server reads it in place */
    GThread *thread;
    char *endpoint;
    char *dir;
    char *stats_path;
    int rc;
    gint finished;
} Server;

static gpointer server_thread(gpointer opaque)
{
    Server *s = opaque;

    s->rc = sf_pageserver_run(s->ps);
    g_atomic_int_set(&s->finished, 1);
    return NULL;
}

/* NULL (and the test skipped) when the transport is unavailable. */
static Server *server_start(const Transport *t, uint32_t max_clones,
                            int grace_ms, int idle_ms)
{
    Server *s = g_new0(Server, 1);
    SfBlockInfo blocks[2] = {
        { "pc.ram", 0, 0 },
        { "vga.vram", 0, 0 },
    };
    void *hosts[2] = { block_mem[0], block_mem[1] };
    SfPageServerConfig *cfg = &s->cfg;
    GError *err = NULL;
    SfListener *l;
    char *ep;
    uint32_t b;

    s->dir = g_dir_make_tmp("sftransport-XXXXXX", NULL);
    g_assert_nonnull(s->dir);
    s->stats_path = g_build_filename(s->dir, "stats.json", NULL);
    ep = t->listen ? g_strdup(t->listen)
                   : g_strdup_printf("unix:%s/ps.sock", s->dir);
    l = sf_listen(ep, &err);
    g_free(ep);
    if (!l) {
        g_test_skip_printf("%s unavailable: %s", t->name, err->message);
        g_error_free(err);
        g_rmdir(s->dir);
        g_free(s->dir);
        g_free(s->stats_path);
        g_free(s);
        return NULL;
    }
    s->endpoint = g_strdup(l->endpoint);

    for (b = 0; b < 2; b++) {
        blocks[b].length = block_pages[b] * PAGE;
        blocks[b].page_size = PAGE;
    }
    cfg->fork_id = FORK_ID;
    cfg->max_clones = max_clones;
    cfg->reconnect_grace_ms = grace_ms;
    cfg->idle_timeout_ms = idle_ms;
    memcpy(cfg->secret, secret, sizeof(secret));
    cfg->stats_path = s->stats_path;
    cfg->log_prefix = "test-pageserver";
    s->ps = sf_pageserver_new(l, sf_pagesrc_mem_new(blocks, hosts, 2), cfg);
    s->thread = g_thread_new("pageserver", server_thread, s);
    return s;
}

/* Wait for run() to return on its own. */
static bool server_wait(Server *s, int timeout_ms)
{
    gint64 end = g_get_monotonic_time() + timeout_ms * 1000ll;

    while (!g_atomic_int_get(&s->finished)) {
        if (g_get_monotonic_time() > end) {
            return false;
        }
        g_usleep(5000);
    }
    return true;
}

static void server_free(Server *s)
{
    if (!s) {
        return;
    }
    sf_pageserver_stop(s->ps);
    g_thread_join(s->thread);
    g_assert_cmpint(s->rc, ==, 0);
    sf_pageserver_free(s->ps);
    g_unlink(s->stats_path);
    g_rmdir(s->dir);
    g_free(s->stats_path);
    g_free(s->dir);
    g_free(s->endpoint);
    g_free(s);
}

/* Client helpers */

typedef struct Client {
    SfConn *c;
    uint32_t clone_id;
    uint8_t *buf;
    SfWireHdr hdr;
} Client;

static Client *client_new(Server *s, uint32_t clone_id)
{
    Client *cl = g_new0(Client, 1);
    struct timeval tv = { .tv_sec = 5 };
    GError *err = NULL;

    cl->c = sf_connect(s->endpoint, 2000, &err);
    g_assert_no_error(err);
    g_assert_nonnull(cl->c);
    if (sf_endpoint_is_network(s->endpoint)) {
        /* As a clone does: the fork's keys, so that the server's own
         * checks (secret, fork id, ranges) are what is under test. */
        SfSealKeys k;

        sf_seal_keys_derive(&k, secret, FORK_ID);
        cl->c = sf_conn_seal(cl->c, &k, false, &err);
        sf_seal_keys_wipe(&k);
        g_assert_no_error(err);
    }
    /* A server bug must fail the test, not hang it. */
    setsockopt(cl->c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    cl->clone_id = clone_id;
    cl->buf = g_malloc(SF_WIRE_MAX_BODY);
    return cl;
}

static void client_free(Client *cl)
{
    sf_conn_close(cl->c);
    g_free(cl->buf);
    g_free(cl);
}

static void client_send(Client *cl, SfMsgType type, uint64_t fork_id,
                        const void *body, size_t len)
{
    GError *err = NULL;

    g_assert_cmpint(sf_msg_send(cl->c, type, cl->clone_id, fork_id, body, len,
                                NULL, 0, &err),
                    ==, 0);
    g_assert_no_error(err);
}

static void send_raw(Client *cl, const void *p, size_t len)
{
    struct iovec iov = { (void *)p, len };

    g_assert_cmpint(cl->c->ops->sendv(cl->c, &iov, 1), ==, 0);
}

static void send_hello(Client *cl, const uint8_t *sec, uint64_t fork_id)
{
    SfMsgHello h = { .flags = 0 };
    uint8_t body[SF_WIRE_HELLO_LEN];

    memcpy(h.secret, sec, SF_WIRE_SECRET_LEN);
    sf_wire_hello_encode(body, &h);
    client_send(cl, SF_MSG_HELLO, fork_id, body, sizeof(body));
}

static void send_request(Client *cl, const uint8_t *sec, uint32_t block,
                         uint64_t offset, uint32_t npages, uint32_t flags)
{
    SfMsgRequest r = {
        .block = block, .npages = npages, .offset = offset, .flags = flags
    };
    uint8_t body[SF_WIRE_REQUEST_LEN];

    memcpy(r.secret, sec, SF_WIRE_SECRET_LEN);
    sf_wire_request_encode(body, &r);
    client_send(cl, SF_MSG_REQUEST, FORK_ID, body, sizeof(body));
}

static void send_done(Client *cl)
{
    SfMsgDone d;
    uint8_t body[SF_WIRE_DONE_LEN];

    memcpy(d.secret, secret, SF_WIRE_SECRET_LEN);
    sf_wire_done_encode(body, &d);
    client_send(cl, SF_MSG_DONE, FORK_ID, body, sizeof(body));
}

/* 1: message in cl->hdr/cl->buf, 0: EOF, -1: error (err code returned). */
static int client_recv(Client *cl, int *code)
{
    GError *err = NULL;
    int ret = sf_msg_recv(cl->c, &cl->hdr, cl->buf, SF_WIRE_MAX_BODY, &err);

    if (ret < 0) {
        if (code) {
            *code = err->code;
        }
        g_test_message("recv: %s", err->message);
        g_error_free(err);
    }
    return ret;
}

static void expect_welcome(Client *cl)
{
    SfMsgWelcome w;
    const char *why;

    g_assert_cmpint(client_recv(cl, NULL), ==, 1);
    g_assert_cmpstr(sf_wire_type_name(cl->hdr.type), ==, "WELCOME");
    g_assert_cmpuint(cl->hdr.clone_id, ==, cl->clone_id);
    g_assert_cmphex(cl->hdr.fork_id, ==, FORK_ID);
    g_assert_cmpint(sf_wire_welcome_decode(cl->buf, cl->hdr.length, &w, &why),
                    ==, 0);
    g_assert_cmpuint(w.nblocks, ==, 2);
    g_assert_cmpuint(w.page_size, ==, PAGE);
    g_assert_cmpuint(w.total_pages, ==, block_pages[0] + block_pages[1]);
    /* Then the zero map: empty here (the memory source was not scanned). */
    {
        SfMsgZeroMap z;

        g_assert_cmpint(client_recv(cl, NULL), ==, 1);
        g_assert_cmpstr(sf_wire_type_name(cl->hdr.type), ==, "ZEROMAP");
        g_assert_cmpint(
            sf_wire_zeromap_decode(cl->buf, cl->hdr.length, &z, &why), ==, 0);
        g_assert_cmpuint(z.nruns, ==, 0);
        g_assert_cmpuint(z.flags, ==, SF_ZEROMAP_LAST);
    }
}

static Client *client_hello(Server *s, uint32_t clone_id)
{
    Client *cl = client_new(s, clone_id);

    send_hello(cl, secret, FORK_ID);
    expect_welcome(cl);
    return cl;
}

/* The server closes after an ERROR: EOF, or a reset if it had unread data. */
static void expect_closed(Client *cl)
{
    int code = 0;
    int ret = client_recv(cl, &code);

    if (ret < 0) {
        g_assert_cmpint(code, ==, ECONNRESET);
    } else {
        g_assert_cmpint(ret, ==, 0);
    }
}

static void expect_error(Client *cl, SfWireError code)
{
    SfMsgError e;
    const char *why;

    g_assert_cmpint(client_recv(cl, NULL), ==, 1);
    g_assert_cmpstr(sf_wire_type_name(cl->hdr.type), ==, "ERROR");
    g_assert_cmpint(sf_wire_error_decode(cl->buf, cl->hdr.length, &e, &why), ==,
                    0);
    g_test_message("server said: error %u: %s", e.code, e.message);
    g_assert_cmpuint(e.code, ==, code);
    expect_closed(cl);
}

/*
 * Read the replies to one REQUEST and check them against the pattern:
 * address order, exact bytes, and maximal runs (neighbouring messages
 * alternate between ZERO and DATA).
 */
static void expect_pages(Client *cl, uint32_t block, uint64_t offset,
                         uint32_t npages, uint32_t flags, uint64_t *data_pages,
                         uint64_t *zero_pages)
{
    uint64_t cursor = offset;
    uint64_t end = offset + (uint64_t)npages * PAGE;
    int last_type = 0;

    while (cursor < end) {
        SfMsgPages m;
        const char *why = NULL;
        uint64_t p0, i;
        bool zero;

        g_assert_cmpint(client_recv(cl, NULL), ==, 1);
        g_assert_true(cl->hdr.type == SF_MSG_DATA ||
                      cl->hdr.type == SF_MSG_ZERO);
        g_assert_cmpint(sf_wire_pages_decode(cl->hdr.type, cl->buf,
                                             cl->hdr.length, &m, &why),
                        ==, 0);
        g_assert_cmpuint(m.block, ==, block);
        g_assert_cmphex(m.offset, ==, cursor);
        g_assert_cmphex(m.flags, ==, flags);
        g_assert_cmpuint(cursor + (uint64_t)m.npages * PAGE, <=, end);
        g_assert_cmpint(cl->hdr.type, !=, last_type);
        last_type = cl->hdr.type;

        zero = cl->hdr.type == SF_MSG_ZERO;
        p0 = cursor / PAGE;
        for (i = 0; i < m.npages; i++) {
            g_assert_cmpint(zero, ==, ref_zero(block, p0 + i));
        }
        if (!zero) {
            g_assert_cmpmem(cl->buf + SF_WIRE_PAGES_LEN,
                            (size_t)m.npages * PAGE, block_mem[block] + cursor,
                            (size_t)m.npages * PAGE);
            *data_pages += m.npages;
        } else {
            *zero_pages += m.npages;
        }
        cursor += (uint64_t)m.npages * PAGE;
    }
}

static void count_ref(uint32_t block, uint64_t offset, uint32_t npages,
                      uint64_t *data_pages, uint64_t *zero_pages)
{
    uint32_t i;

    for (i = 0; i < npages; i++) {
        if (ref_zero(block, offset / PAGE + i)) {
            (*zero_pages)++;
        } else {
            (*data_pages)++;
        }
    }
}

static void assert_server_alive(Server *s, uint32_t clone_id)
{
    Client *cl = client_hello(s, clone_id);
    uint64_t d = 0, z = 0;

    send_request(cl, secret, 1, 0, 8, SF_REQ_DEMAND);
    expect_pages(cl, 1, 0, 8, SF_REQ_DEMAND, &d, &z);
    client_free(cl);
}

/* Cases */

static void case_hello(Server *s)
{
    Client *cl = client_hello(s, 1);

    client_free(cl);
}

static void case_single_pages(Server *s)
{
    Client *cl = client_hello(s, 1);
    uint32_t b;
    uint64_t p;

    for (b = 0; b < 2; b++) {
        for (p = 0; p < 64; p++) {
            uint64_t d = 0, z = 0;

            send_request(cl, secret, b, p * PAGE, 1, SF_REQ_DEMAND);
            expect_pages(cl, b, p * PAGE, 1, SF_REQ_DEMAND, &d, &z);
            g_assert_cmpuint(d + z, ==, 1);
            g_assert_cmpuint(z, ==, ref_zero(b, p));
        }
        /* And the block's last page. */
        {
            uint64_t d = 0, z = 0, last = block_pages[b] - 1;

            send_request(cl, secret, b, last * PAGE, 1, 0);
            expect_pages(cl, b, last * PAGE, 1, 0, &d, &z);
        }
    }
    client_free(cl);
}

typedef struct Run {
    uint32_t block;
    uint64_t page;
    uint32_t npages;
} Run;

static const Run runs[] = {
    { 0, 0, 12 }, /* data, zero run, data */
    { 0, 3, 3 },  /* exactly one zero run */
    { 0, 2, 5 },  /* starts on data, crosses into and out of zeros */
    { 0, 5, 2 },  /* ends exactly at a boundary */
    { 1, 100, 77 },  { 1, 299, 1 }, { 1, 0, 300 }, /* whole block */
    { 0, 1000, 64 },                               /* crossing page 1024 */
};

static void case_runs(Server *s)
{
    Client *cl = client_hello(s, 2);
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(runs); i++) {
        uint64_t d = 0, z = 0, rd = 0, rz = 0;

        send_request(cl, secret, runs[i].block, runs[i].page * PAGE,
                     runs[i].npages, SF_REQ_PREFETCH);
        expect_pages(cl, runs[i].block, runs[i].page * PAGE, runs[i].npages,
                     SF_REQ_PREFETCH, &d, &z);
        count_ref(runs[i].block, runs[i].page * PAGE, runs[i].npages, &rd, &rz);
        g_assert_cmpuint(d, ==, rd);
        g_assert_cmpuint(z, ==, rz);
    }
    client_free(cl);
}

static void case_max_run(Server *s)
{
    Client *cl = client_hello(s, 1);
    uint64_t d = 0, z = 0;

    send_request(cl, secret, 0, 0, SF_WIRE_MAX_PAGES, SF_REQ_DEMAND);
    expect_pages(cl, 0, 0, SF_WIRE_MAX_PAGES, SF_REQ_DEMAND, &d, &z);
    g_assert_cmpuint(d + z, ==, SF_WIRE_MAX_PAGES);
    d = z = 0;
    send_request(cl, secret, 0, 40 * PAGE, SF_WIRE_MAX_PAGES, 0);
    expect_pages(cl, 0, 40 * PAGE, SF_WIRE_MAX_PAGES, 0, &d, &z);
    client_free(cl);

    /* One page more than a run is malformed, not a range error. */
    cl = client_hello(s, 1);
    send_request(cl, secret, 0, 0, SF_WIRE_MAX_PAGES + 1, 0);
    expect_error(cl, SF_WERR_PROTO);
    client_free(cl);
}

/* Requests sent back to back are answered in order. */
static void case_pipelined(Server *s)
{
    Client *cl = client_hello(s, 3);
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(runs); i++) {
        send_request(cl, secret, runs[i].block, runs[i].page * PAGE,
                     runs[i].npages, 0);
    }
    for (i = 0; i < G_N_ELEMENTS(runs); i++) {
        uint64_t d = 0, z = 0;

        expect_pages(cl, runs[i].block, runs[i].page * PAGE, runs[i].npages, 0,
                     &d, &z);
    }
    client_free(cl);
}

static void case_wrong_secret(Server *s)
{
    Client *cl = client_new(s, 1);

    send_hello(cl, bad_secret, FORK_ID);
    expect_error(cl, SF_WERR_AUTH);
    client_free(cl);
    assert_server_alive(s, 1);
}

static void case_wrong_fork_id(Server *s)
{
    Client *cl = client_new(s, 1);

    send_hello(cl, secret, FORK_ID + 1);
    expect_error(cl, SF_WERR_AUTH);
    client_free(cl);
    assert_server_alive(s, 1);
}

static void case_clone_id_zero(Server *s)
{
    Client *cl = client_new(s, 0);

    send_hello(cl, secret, FORK_ID);
    expect_error(cl, SF_WERR_PROTO);
    client_free(cl);
}

static void case_clone_id_too_big(Server *s)
{
    Client *cl = client_new(s, 5); /* max_clones is 4 */

    send_hello(cl, secret, FORK_ID);
    expect_error(cl, SF_WERR_BUSY);
    client_free(cl);
    cl = client_new(s, 0xffffffff);
    send_hello(cl, secret, FORK_ID);
    expect_error(cl, SF_WERR_BUSY);
    client_free(cl);
    assert_server_alive(s, 4);
}

static void case_request_before_hello(Server *s)
{
    Client *cl = client_new(s, 1);

    send_request(cl, secret, 0, 0, 1, 0);
    expect_error(cl, SF_WERR_PROTO);
    client_free(cl);
}

static void case_done_before_hello(Server *s)
{
    Client *cl = client_new(s, 1);

    send_done(cl);
    expect_error(cl, SF_WERR_PROTO);
    client_free(cl);
    assert_server_alive(s, 1);
}

static void case_hello_twice(Server *s)
{
    Client *cl = client_hello(s, 1);

    send_hello(cl, secret, FORK_ID);
    expect_error(cl, SF_WERR_PROTO);
    client_free(cl);
}

/*
 * On a sealed (network) transport the unit a peer can truncate is a
 * sealed record: raw bytes written under the sealed connection, sealed
 * by a session of their own (one record per connection, so the server's
 * one session per connection is that one).
 */
static size_t seal_message(SfMsgType type, uint32_t clone_id, const void *body,
                           size_t len, uint8_t *out)
{
    uint8_t plain[SF_WIRE_HDR_SIZE + SF_WIRE_HELLO_LEN];
    SfSealKeys k;
    SfSealSender *tx;
    size_t n;

    g_assert_cmpuint(len, <=, SF_WIRE_HELLO_LEN);
    sf_wire_hdr_encode(plain, type, len, clone_id, FORK_ID);
    memcpy(plain + SF_WIRE_HDR_SIZE, body, len);
    sf_seal_keys_derive(&k, secret, FORK_ID);
    tx = sf_seal_sender_new(&k, SF_SEAL_REQUESTS);
    n = sf_seal(tx, plain, SF_WIRE_HDR_SIZE + len, out);
    sf_seal_sender_free(tx);
    sf_seal_keys_wipe(&k);
    return n;
}

static void write_under(Client *cl, const void *p, size_t len)
{
    g_assert_cmpint(write(cl->c->fd, p, len), ==, (ssize_t)len);
}

/* The stream's unit: a message header in the clear, a record sealed. */
static size_t hello_unit(Server *s, Client *cl, uint8_t *out, size_t *hdr_len)
{
    uint8_t body[SF_WIRE_HELLO_LEN];
    SfMsgHello h = { .flags = 0 };

    memcpy(h.secret, secret, sizeof(secret));
    sf_wire_hello_encode(body, &h);
    if (sf_endpoint_is_network(s->endpoint)) {
        *hdr_len = SF_SEAL_HDR_SIZE;
        return seal_message(SF_MSG_HELLO, cl->clone_id, body, sizeof(body),
                            out);
    }
    *hdr_len = SF_WIRE_HDR_SIZE;
    sf_wire_hdr_encode(out, SF_MSG_HELLO, sizeof(body), cl->clone_id, FORK_ID);
    memcpy(out + SF_WIRE_HDR_SIZE, body, sizeof(body));
    return SF_WIRE_HDR_SIZE + sizeof(body);
}

static void case_truncated_header(Server *s)
{
    uint8_t unit[SF_SEAL_OVERHEAD + SF_WIRE_HDR_SIZE + SF_WIRE_HELLO_LEN];
    size_t hdr_len;
    Client *cl = client_new(s, 1);

    hello_unit(s, cl, unit, &hdr_len);
    write_under(cl, unit, 10);
    client_free(cl);

    /* And a truncated body after a good header. */
    cl = client_new(s, 1);
    hello_unit(s, cl, unit, &hdr_len);
    write_under(cl, unit, hdr_len + 7);
    client_free(cl);
    assert_server_alive(s, 1);
}

/* Half a header, then silence: nobody else may wait for it. */
static void case_stalled_header(Server *s)
{
    uint8_t stall[SF_SEAL_OVERHEAD + SF_WIRE_HDR_SIZE + SF_WIRE_HELLO_LEN];
    uint8_t half[sizeof(stall)];
    size_t stall_len, hdr_len;
    Client *staller = client_new(s, 1);
    Client *halfbody = client_new(s, 2);
    gint64 t0;

    stall_len = hello_unit(s, staller, stall, &hdr_len);
    hello_unit(s, halfbody, half, &hdr_len);
    write_under(staller, stall, 10);
    write_under(halfbody, half, hdr_len + 5);
    g_usleep(50 * 1000);
    t0 = g_get_monotonic_time();
    assert_server_alive(s, 3);
    g_assert_cmpint(g_get_monotonic_time() - t0, <, G_USEC_PER_SEC / 2);
    /* The staller finishing its HELLO later is still served. */
    write_under(staller, stall + 10, stall_len - 10);
    expect_welcome(staller);
    client_free(staller);
    client_free(halfbody);
}

/*
 * Whoever does not hold the fork's key gets nothing at all over a
 * network: not an ERROR, not a WELCOME; the connection just ends, and
 * the server serves others.  Three ways: the plain protocol with the
 * right secret inside, a record sealed with another fork's key, and a
 * record with one bit of its ciphertext changed.
 */
static void expect_nothing(Client *cl)
{
    uint8_t b;
    ssize_t n = read(cl->c->fd, &b, 1);

    g_assert_cmpint(n <= 0 ? 0 : 1, ==, 0);
}

static void case_sealed_outsiders(Server *s)
{
    uint8_t unit[SF_SEAL_OVERHEAD + SF_WIRE_HDR_SIZE + SF_WIRE_HELLO_LEN];
    uint8_t body[SF_WIRE_HELLO_LEN];
    uint8_t other[SF_WIRE_SECRET_LEN];
    SfMsgHello h = { .flags = 0 };
    size_t hdr_len, len;
    SfSealKeys k;
    SfSealSender *tx;
    Client *cl;

    if (!sf_endpoint_is_network(s->endpoint)) {
        g_test_skip("a local endpoint is not sealed");
        return;
    }
    memcpy(h.secret, secret, sizeof(secret));
    sf_wire_hello_encode(body, &h);

    cl = client_new(s, 1);
    sf_wire_hdr_encode(unit, SF_MSG_HELLO, sizeof(body), 1, FORK_ID);
    memcpy(unit + SF_WIRE_HDR_SIZE, body, sizeof(body));
    write_under(cl, unit, SF_WIRE_HDR_SIZE + sizeof(body));
    expect_nothing(cl);
    client_free(cl);

    cl = client_new(s, 1);
    memcpy(other, secret, sizeof(other));
    other[0] ^= 1;
    sf_seal_keys_derive(&k, other, FORK_ID);
    tx = sf_seal_sender_new(&k, SF_SEAL_REQUESTS);
    {
        uint8_t plain[SF_WIRE_HDR_SIZE + SF_WIRE_HELLO_LEN];

        sf_wire_hdr_encode(plain, SF_MSG_HELLO, sizeof(body), 1, FORK_ID);
        memcpy(plain + SF_WIRE_HDR_SIZE, body, sizeof(body));
        len = sf_seal(tx, plain, sizeof(plain), unit);
    }
    sf_seal_sender_free(tx);
    sf_seal_keys_wipe(&k);
    write_under(cl, unit, len);
    expect_nothing(cl);
    client_free(cl);

    cl = client_new(s, 1);
    len = hello_unit(s, cl, unit, &hdr_len);
    unit[hdr_len + 3] ^= 0x20;
    write_under(cl, unit, len);
    expect_nothing(cl);
    client_free(cl);

    assert_server_alive(s, 1);
}

/* Oversized bodies are refused from the header: the body is never sent,
 * so a server that tried to read it would stall here for 10 s. */
static void case_oversized_length(Server *s)
{
    static const struct {
        uint16_t type;
        uint32_t length;
    } hdrs[] = {
        { SF_MSG_REQUEST, 0x7fffffff },
        { SF_MSG_HELLO, SF_WIRE_MAX_BODY },
        { SF_MSG_DATA, SF_WIRE_MAX_BODY }, /* valid header, wrong way */
        { SF_MSG_ERROR, 0xffffffff },
    };
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(hdrs); i++) {
        uint8_t hdr[SF_WIRE_HDR_SIZE];
        Client *cl = client_new(s, 1);
        gint64 t0 = g_get_monotonic_time();

        sf_wire_hdr_encode(hdr, hdrs[i].type, hdrs[i].length, 1, FORK_ID);
        send_raw(cl, hdr, sizeof(hdr));
        expect_error(cl, SF_WERR_PROTO);
        g_assert_cmpint(g_get_monotonic_time() - t0, <, 2 * G_USEC_PER_SEC);
        client_free(cl);
    }
    assert_server_alive(s, 1);
}

static void case_bad_version(Server *s)
{
    uint8_t hdr[SF_WIRE_HDR_SIZE];
    Client *cl = client_new(s, 1);

    sf_wire_hdr_encode(hdr, SF_MSG_HELLO, SF_WIRE_HELLO_LEN, 1, FORK_ID);
    hdr[5] = SF_WIRE_VERSION + 1;
    send_raw(cl, hdr, sizeof(hdr));
    expect_error(cl, SF_WERR_VERSION);
    client_free(cl);
}

static void case_bad_magic(Server *s)
{
    Client *cl = client_new(s, 1);

    send_raw(cl, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
    expect_error(cl, SF_WERR_PROTO);
    client_free(cl);
}

typedef struct RangeCase {
    uint32_t block;
    uint64_t offset;
    uint32_t npages;
    SfWireError code;
} RangeCase;

static void case_range(Server *s)
{
    const RangeCase cases[] = {
        { 2, 0, 1, SF_WERR_RANGE },
        { 0xffffffff, 0, 1, SF_WERR_RANGE },
        { 0, block_pages[0] * PAGE, 1, SF_WERR_RANGE },
        { 1, (block_pages[1] - 1) * PAGE, 2, SF_WERR_RANGE },
        { 1, 0, 301, SF_WERR_RANGE },
        { 0, 0xfffffffffffff000ull, 1, SF_WERR_RANGE },
        { 0, 0xfffffffffffff000ull, SF_WIRE_MAX_PAGES, SF_WERR_RANGE },
        { 0, 100, 1, SF_WERR_PROTO },
        { 0, 0, 0, SF_WERR_PROTO },
    };
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(cases); i++) {
        Client *cl = client_hello(s, 1);

        g_test_message("range case %zu", i);
        send_request(cl, secret, cases[i].block, cases[i].offset,
                     cases[i].npages, 0);
        expect_error(cl, cases[i].code);
        client_free(cl);
    }
    assert_server_alive(s, 1);
}

static void case_bad_request_fields(Server *s)
{
    Client *cl;

    /* Wrong secret on a REQUEST after a good HELLO. */
    cl = client_hello(s, 1);
    send_request(cl, bad_secret, 0, 0, 1, 0);
    expect_error(cl, SF_WERR_AUTH);
    client_free(cl);

    /* Unknown flags. */
    cl = client_hello(s, 1);
    send_request(cl, secret, 0, 0, 1, 0x100);
    expect_error(cl, SF_WERR_PROTO);
    client_free(cl);

    /* Another clone's id after HELLO. */
    cl = client_hello(s, 1);
    cl->clone_id = 2;
    send_request(cl, secret, 0, 0, 1, 0);
    expect_error(cl, SF_WERR_PROTO);
    client_free(cl);

    /* Another fork's id after HELLO. */
    cl = client_hello(s, 1);
    {
        SfMsgRequest r = { .npages = 1 };
        uint8_t body[SF_WIRE_REQUEST_LEN];

        memcpy(r.secret, secret, sizeof(secret));
        sf_wire_request_encode(body, &r);
        client_send(cl, SF_MSG_REQUEST, FORK_ID ^ 1, body, sizeof(body));
    }
    expect_error(cl, SF_WERR_AUTH);
    client_free(cl);

    /* A server-to-client message from a client. */
    cl = client_hello(s, 1);
    {
        SfMsgPages m = { .npages = 1 };
        uint8_t body[SF_WIRE_PAGES_LEN];

        sf_wire_pages_encode(body, &m);
        client_send(cl, SF_MSG_ZERO, FORK_ID, body, sizeof(body));
    }
    expect_error(cl, SF_WERR_PROTO);
    client_free(cl);
    assert_server_alive(s, 1);
}

static void case_duplicate_clone(Server *s)
{
    Client *first = client_hello(s, 2);
    Client *second = client_new(s, 2);
    uint64_t d = 0, z = 0;

    send_hello(second, secret, FORK_ID);
    expect_error(second, SF_WERR_BUSY);
    client_free(second);

    /* The first connection is unaffected. */
    send_request(first, secret, 0, 0, 12, 0);
    expect_pages(first, 0, 0, 12, 0, &d, &z);
    client_free(first);
}

/* Many clones at once, each verifying what it gets. */
typedef struct Worker {
    Server *s;
    uint32_t clone_id;
    uint64_t data_pages;
    uint64_t zero_pages;
    uint64_t requests;
} Worker;

static gpointer worker_main(gpointer opaque)
{
    Worker *w = opaque;
    Client *cl = client_hello(w->s, w->clone_id);
    GRand *r = g_rand_new_with_seed(w->clone_id);
    int i;

    for (i = 0; i < 40; i++) {
        uint32_t b = g_rand_int_range(r, 0, 2);
        uint32_t n = g_rand_int_range(r, 1, 65);
        uint64_t p = g_rand_int_range(r, 0, block_pages[b] - n + 1);

        send_request(cl, secret, b, p * PAGE, n, SF_REQ_DEMAND);
        expect_pages(cl, b, p * PAGE, n, SF_REQ_DEMAND, &w->data_pages,
                     &w->zero_pages);
        w->requests++;
    }
    send_done(cl);
    client_free(cl);
    g_rand_free(r);
    return NULL;
}

#define NWORKERS 16

static void case_many_clients(Server *s)
{
    Worker w[NWORKERS];
    GThread *th[NWORKERS];
    SfPageServerCloneStats st[NWORKERS];
    int i;

    for (i = 0; i < NWORKERS; i++) {
        w[i] = (Worker){ .s = s, .clone_id = i + 1 };
        th[i] = g_thread_new("clone", worker_main, &w[i]);
    }
    for (i = 0; i < NWORKERS; i++) {
        g_thread_join(th[i]);
    }
    /* Every clone sent DONE: the server releases the image by itself. */
    g_assert_true(server_wait(s, 5000));
    sf_pageserver_get_stats(s->ps, st, NWORKERS);
    for (i = 0; i < NWORKERS; i++) {
        g_assert_cmpuint(st[i].clone_id, ==, i + 1);
        g_assert_cmpint(st[i].state, ==, SF_CLONE_DONE);
        g_assert_cmpuint(st[i].requests, ==, w[i].requests);
        g_assert_cmpuint(st[i].pages_sent, ==, w[i].data_pages);
        g_assert_cmpuint(st[i].zero_pages, ==, w[i].zero_pages);
        g_assert_cmpuint(st[i].connects, ==, 1);
    }
}

static void case_done_all(Server *s)
{
    Client *a = client_hello(s, 1);
    Client *b = client_hello(s, 2);

    send_done(a);
    g_usleep(100 * 1000);
    /* One clone still owes its DONE. */
    g_assert_false(g_atomic_int_get(&s->finished));
    send_done(b);
    g_assert_true(server_wait(s, 3000));
    /* The server closed its end. */
    expect_closed(a);
    client_free(a);
    client_free(b);
}

static void case_done_then_request(Server *s)
{
    Client *cl = client_hello(s, 1);

    send_done(cl);
    send_request(cl, secret, 0, 0, 1, 0);
    expect_error(cl, SF_WERR_PROTO);
    client_free(cl);

    /* A DONE clone does not come back. */
    cl = client_new(s, 1);
    send_hello(cl, secret, FORK_ID);
    expect_error(cl, SF_WERR_PROTO);
    client_free(cl);
}

/* grace is 300 ms for the lifetime cases */
static void case_grace_expires(Server *s)
{
    Client *cl = client_hello(s, 1);
    gint64 t0;
    SfPageServerCloneStats st;

    client_free(cl);
    t0 = g_get_monotonic_time();
    g_assert_true(server_wait(s, 3000));
    /* Not before the grace ran out. */
    g_assert_cmpint(g_get_monotonic_time() - t0, >=, 250 * 1000);
    sf_pageserver_get_stats(s->ps, &st, 1);
    g_assert_cmpint(st.state, ==, SF_CLONE_ENDED);
}

static void case_grace_reconnect(Server *s)
{
    Client *cl = client_hello(s, 1);
    SfPageServerCloneStats st;
    uint64_t d = 0, z = 0;

    client_free(cl);
    g_usleep(100 * 1000);
    cl = client_hello(s, 1);
    g_usleep(400 * 1000);
    /* Came back within the grace: still being served. */
    g_assert_false(g_atomic_int_get(&s->finished));
    send_request(cl, secret, 0, 0, 4, 0);
    expect_pages(cl, 0, 0, 4, 0, &d, &z);
    send_done(cl);
    g_assert_true(server_wait(s, 3000));
    sf_pageserver_get_stats(s->ps, &st, 1);
    g_assert_cmpint(st.state, ==, SF_CLONE_DONE);
    g_assert_cmpuint(st.connects, ==, 2);
    client_free(cl);
}

static void case_idle_timeout(Server *s)
{
    /* idle timeout is 300 ms and nobody comes. */
    g_assert_true(server_wait(s, 3000));
}

/* An unauthenticated connection does not keep the server alive. */
static void case_idle_with_silent_peer(Server *s)
{
    Client *cl = client_new(s, 1);

    g_assert_true(server_wait(s, 3000));
    client_free(cl);
}

static void case_stop(Server *s)
{
    Client *cl = client_hello(s, 1);

    sf_pageserver_stop(s->ps);
    g_assert_true(server_wait(s, 2000));
    expect_closed(cl);
    client_free(cl);
}

static void case_stats(Server *s)
{
    Client *a = client_hello(s, 1);
    Client *b = client_hello(s, 2);
    uint64_t ad = 0, az = 0, bd = 0, bz = 0;
    uint64_t rd = 0, rz = 0;
    SfPageServerCloneStats st[2];
    char *json = NULL, *want;

    send_request(a, secret, 0, 0, 100, 0);
    expect_pages(a, 0, 0, 100, 0, &ad, &az);
    send_request(a, secret, 1, 8 * PAGE, 3, 0);
    expect_pages(a, 1, 8 * PAGE, 3, 0, &ad, &az);
    count_ref(0, 0, 100, &rd, &rz);
    count_ref(1, 8 * PAGE, 3, &rd, &rz);
    g_assert_cmpuint(ad, ==, rd);
    g_assert_cmpuint(az, ==, rz);
    send_request(b, secret, 1, 0, 300, 0);
    expect_pages(b, 1, 0, 300, 0, &bd, &bz);
    send_done(a);
    send_done(b);
    g_assert_true(server_wait(s, 3000));

    sf_pageserver_get_stats(s->ps, st, 2);
    g_assert_cmpuint(st[0].pages_sent, ==, ad);
    g_assert_cmpuint(st[0].zero_pages, ==, az);
    g_assert_cmpuint(st[0].requests, ==, 2);
    g_assert_cmpuint(st[1].pages_sent, ==, bd);
    g_assert_cmpuint(st[1].zero_pages, ==, bz);
    g_assert_cmpuint(st[1].requests, ==, 1);
    /* Wire bytes: WELCOME plus every page message, headers included. */
    g_assert_cmpuint(st[1].bytes_sent, >, bd * PAGE);
    g_assert_cmpuint(st[1].bytes_sent, <, bd * PAGE + 300 * 44 + 100);

    /* The file written at exit says the same. */
    g_assert_true(g_file_get_contents(s->stats_path, &json, NULL, NULL));
    g_test_message("%s", json);
    want = g_strdup_printf("{\"clone_id\": 1, \"state\": \"done\", "
                           "\"requests\": 2, \"pages_sent\": %" G_GUINT64_FORMAT
                           ", \"zero_pages\": %" G_GUINT64_FORMAT ", ",
                           ad, az);
    g_assert_nonnull(strstr(json, want));
    g_free(want);
    want = g_strdup_printf("{\"clone_id\": 2, \"state\": \"done\", "
                           "\"requests\": 1, \"pages_sent\": %" G_GUINT64_FORMAT
                           ", \"zero_pages\": %" G_GUINT64_FORMAT ", ",
                           bd, bz);
    g_assert_nonnull(strstr(json, want));
    g_free(want);
    want = g_strdup_printf("\"fork_id\": %" G_GUINT64_FORMAT, FORK_ID);
    g_assert_nonnull(strstr(json, want));
    g_free(want);
    want = g_strdup_printf("\"pages_sent\": %" G_GUINT64_FORMAT
                           ", \"zero_pages\": %" G_GUINT64_FORMAT,
                           ad + bd, az + bz);
    g_assert_nonnull(strstr(json, want));
    g_free(want);
    g_assert_nonnull(strstr(json, "\"running\": false"));
    g_free(json);
    client_free(a);
    client_free(b);
}

/* Stats are rewritten on every state change, not only at exit. */
static void case_stats_live(Server *s)
{
    Client *cl = client_hello(s, 3);
    char *json = NULL;
    char *tmp = g_strdup_printf("%s.tmp", s->stats_path);

    g_assert_true(g_file_get_contents(s->stats_path, &json, NULL, NULL));
    g_assert_nonnull(strstr(json, "{\"clone_id\": 3, \"state\": "
                                  "\"connected\""));
    g_assert_nonnull(strstr(json, "\"running\": true"));
    g_assert_false(g_file_test(tmp, G_FILE_TEST_EXISTS));
    g_free(json);
    g_free(tmp);
    client_free(cl);
}

/* Case table */

typedef struct Case {
    const char *name;
    void (*fn)(Server *s);
    uint32_t max_clones;
    int grace_ms;
    int idle_ms;
} Case;

static const Case cases[] = {
    { "hello", case_hello, 4, 0, -1 },
    { "single-pages", case_single_pages, 4, 0, -1 },
    { "runs", case_runs, 4, 0, -1 },
    { "max-run", case_max_run, 4, 0, -1 },
    { "pipelined", case_pipelined, 4, 0, -1 },
    { "hostile/wrong-secret", case_wrong_secret, 4, 0, -1 },
    { "hostile/wrong-fork-id", case_wrong_fork_id, 4, 0, -1 },
    { "hostile/clone-id-zero", case_clone_id_zero, 4, 0, -1 },
    { "hostile/clone-id-too-big", case_clone_id_too_big, 4, 0, -1 },
    { "hostile/request-before-hello", case_request_before_hello, 4, 0, -1 },
    { "hostile/done-before-hello", case_done_before_hello, 4, 0, -1 },
    { "hostile/hello-twice", case_hello_twice, 4, 0, -1 },
    { "hostile/truncated-header", case_truncated_header, 4, 0, -1 },
    { "hostile/oversized-length", case_oversized_length, 4, 0, -1 },
    { "hostile/stalled-header", case_stalled_header, 4, 0, -1 },
    { "hostile/bad-version", case_bad_version, 4, 0, -1 },
    { "hostile/bad-magic", case_bad_magic, 4, 0, -1 },
    { "hostile/range", case_range, 4, 0, -1 },
    { "hostile/bad-request-fields", case_bad_request_fields, 4, 0, -1 },
    { "hostile/duplicate-clone-id", case_duplicate_clone, 4, 0, -1 },
    { "hostile/sealed-outsiders", case_sealed_outsiders, 4, 0, -1 },
    { "many-clients", case_many_clients, NWORKERS, 0, -1 },
    { "lifetime/done-all", case_done_all, 2, 0, -1 },
    { "lifetime/done-then-request", case_done_then_request, 2, 0, -1 },
    { "lifetime/grace-expires", case_grace_expires, 1, 300, -1 },
    { "lifetime/grace-reconnect", case_grace_reconnect, 1, 300, -1 },
    { "lifetime/idle-timeout", case_idle_timeout, 2, 0, 300 },
    { "lifetime/idle-silent-peer", case_idle_with_silent_peer, 2, 0, 300 },
    { "lifetime/stop", case_stop, 2, 0, -1 },
    { "stats/final", case_stats, 2, 0, -1 },
    { "stats/live", case_stats_live, 4, 0, -1 },
};

typedef struct CaseRun {
    const Transport *t;
    const Case *c;
} CaseRun;

static void run_case(gconstpointer data)
{
    const CaseRun *cr = data;
    Server *s =
        server_start(cr->t, cr->c->max_clones, cr->c->grace_ms, cr->c->idle_ms);

    if (!s) {
        return;
    }
    cr->c->fn(s);
    server_free(s);
}

/* Transport-level cases that need no page server. */

static void test_dead_endpoint(gconstpointer data)
{
    const Transport *t = data;
    char *dir = g_dir_make_tmp("sfdead-XXXXXX", NULL);
    char *ep;
    GError *err = NULL;
    gint64 t0;
    int fd;

    if (!t->listen) {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };

        /* No such file. */
        ep = g_strdup_printf("unix:%s/none.sock", dir);
        g_assert_null(sf_connect(ep, 500, &err));
        g_assert_error(err, SF_TRANSPORT_ERROR, ENOENT);
        g_test_message("%s", err->message);
        g_clear_error(&err);
        g_free(ep);

        /* A socket file nobody listens on. */
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/dead.sock", dir);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        g_assert_cmpint(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), ==, 0);
        close(fd);
        ep = g_strdup_printf("unix:%s", sun.sun_path);
    } else {
        SfListener *l = sf_listen(t->listen, &err);

        if (!l) {
            g_test_skip_printf("%s unavailable", t->name);
            g_clear_error(&err);
            g_rmdir(dir);
            g_free(dir);
            return;
        }
        /* A port that was just free: nothing listens on it now. */
        ep = g_strdup(l->endpoint);
        sf_listener_close(l);
    }
    t0 = g_get_monotonic_time();
    g_assert_null(sf_connect(ep, 1000, &err));
    g_assert_error(err, SF_TRANSPORT_ERROR, ECONNREFUSED);
    g_assert_nonnull(
        strstr(err->message, ep + strlen(t->listen ? "tcp:" : "unix:")));
    g_test_message("%s", err->message);
    g_assert_cmpint(g_get_monotonic_time() - t0, <, G_USEC_PER_SEC);
    g_clear_error(&err);
    if (!t->listen) {
        g_unlink(ep + 5);
    }
    g_free(ep);
    g_rmdir(dir);
    g_free(dir);
}

/*
 * A listener whose backlog is full answers nothing (TCP drops the SYN,
 * unix refuses with EAGAIN): connect must give up at its timeout.
 */
static void test_connect_timeout(gconstpointer data)
{
    const Transport *t = data;
    char *dir = g_dir_make_tmp("sftimeout-XXXXXX", NULL);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int lfd, fillers[4];
    char *ep;
    GError *err = NULL;
    gint64 t0, dt;
    int i;

    if (!t->listen) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&ss;

        memset(sun, 0, sizeof(*sun));
        sun->sun_family = AF_UNIX;
        snprintf(sun->sun_path, sizeof(sun->sun_path), "%s/full.sock", dir);
        sl = sizeof(*sun);
        lfd = socket(AF_UNIX, SOCK_STREAM, 0);
        ep = g_strdup_printf("unix:%s", sun->sun_path);
    } else {
        bool v6 = strchr(t->listen, '[') != NULL;

        memset(&ss, 0, sizeof(ss));
        if (v6) {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

            sin6->sin6_family = AF_INET6;
            sin6->sin6_addr = in6addr_loopback;
            sl = sizeof(*sin6);
        } else {
            struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

            sin->sin_family = AF_INET;
            sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            sl = sizeof(*sin);
        }
        lfd = socket(ss.ss_family, SOCK_STREAM, 0);
        ep = NULL;
    }
    g_assert_cmpint(lfd, >=, 0);
    if (bind(lfd, (struct sockaddr *)&ss, sl) < 0) {
        g_test_skip_printf("%s unavailable", t->name);
        close(lfd);
        g_rmdir(dir);
        g_free(dir);
        g_free(ep);
        return;
    }
    g_assert_cmpint(listen(lfd, 0), ==, 0);
    g_assert_cmpint(getsockname(lfd, (struct sockaddr *)&ss, &sl), ==, 0);
    if (!ep) {
        char host[64];

        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

            inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
            ep = g_strdup_printf("tcp:[%s]:%u", host, ntohs(sin6->sin6_port));
        } else {
            struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

            inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
            ep = g_strdup_printf("tcp:%s:%u", host, ntohs(sin->sin_port));
        }
    }
    /* Fill the backlog with connections nobody accepts. */
    for (i = 0; i < (int)G_N_ELEMENTS(fillers); i++) {
        fillers[i] = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fillers[i], (struct sockaddr *)&ss, sl);
    }
    g_usleep(50 * 1000);

    t0 = g_get_monotonic_time();
    g_assert_null(sf_connect(ep, 300, &err));
    dt = g_get_monotonic_time() - t0;
    g_assert_error(err, SF_TRANSPORT_ERROR, ETIMEDOUT);
    g_test_message("%s after %" G_GINT64_FORMAT " ms", err->message, dt / 1000);
    g_assert_cmpint(dt, >=, 250 * 1000);
    g_assert_cmpint(dt, <, 1500 * 1000);
    g_clear_error(&err);

    for (i = 0; i < (int)G_N_ELEMENTS(fillers); i++) {
        close(fillers[i]);
    }
    close(lfd);
    if (!t->listen) {
        g_unlink(ep + 5);
    }
    g_free(ep);
    g_rmdir(dir);
    g_free(dir);
}

static void test_bad_endpoints(void)
{
    static const char *const bad[] = {
        "",
        "nope",
        "udp:1.2.3.4:5",
        "unix:",
        "tcp:",
        "tcp:host",
        "tcp:host:",
        "tcp:host:port",
        "tcp:host:65536",
        "tcp:host:-1",
        "tcp:::1:80",
        "tcp:[::1:80",
        "tcp::80",
    };
    size_t i;

    g_assert_null(sf_transport_lookup("mcast:1.2.3.4:5"));
    g_assert_nonnull(sf_transport_lookup("unix:/x"));
    g_assert_nonnull(sf_transport_lookup("tcp:x:1"));
    for (i = 0; i < G_N_ELEMENTS(bad); i++) {
        GError *err = NULL;

        g_test_message("endpoint '%s'", bad[i]);
        g_assert_null(sf_connect(bad[i], 100, &err));
        g_assert_nonnull(err);
        g_assert_true(err->domain == SF_TRANSPORT_ERROR);
        g_clear_error(&err);
    }
}

static void test_tcp_ephemeral_port(void)
{
    GError *err = NULL;
    SfListener *l = sf_listen("tcp:127.0.0.1:0", &err);
    const char *port;

    g_assert_no_error(err);
    g_assert_true(g_str_has_prefix(l->endpoint, "tcp:127.0.0.1:"));
    port = strrchr(l->endpoint, ':') + 1;
    g_assert_cmpint(atoi(port), >, 0);
    g_assert_null(l->unix_path);
    sf_listener_close(l);
}

/* unix: mode 0600, a live listener's path is never stolen, a stale one is
 * replaced, and a non-socket file is never removed. */
static void test_unix_listen_rules(void)
{
    char *dir = g_dir_make_tmp("sfunix-XXXXXX", NULL);
    char *path = g_build_filename(dir, "s.sock", NULL);
    char *file = g_build_filename(dir, "regular", NULL);
    char *ep = g_strdup_printf("unix:%s", path);
    char *fep = g_strdup_printf("unix:%s", file);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    GError *err = NULL;
    SfListener *l, *l2;
    struct stat st;
    int fd;

    l = sf_listen(ep, &err);
    g_assert_no_error(err);
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_true(S_ISSOCK(st.st_mode));
    g_assert_cmpint(st.st_mode & 0777, ==, 0600);

    g_assert_null(sf_listen(ep, &err));
    g_assert_error(err, SF_TRANSPORT_ERROR, EADDRINUSE);
    g_clear_error(&err);
    g_assert_true(g_file_test(path, G_FILE_TEST_EXISTS));
    sf_listener_close(l);
    g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));

    /* Stale: bound, never listened, closed. */
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    g_assert_cmpint(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), ==, 0);
    close(fd);
    l2 = sf_listen(ep, &err);
    g_assert_no_error(err);
    sf_listener_close(l2);

    g_assert_true(g_file_set_contents(file, "keep me", -1, NULL));
    g_assert_null(sf_listen(fep, &err));
    g_assert_error(err, SF_TRANSPORT_ERROR, EEXIST);
    g_clear_error(&err);
    g_assert_true(g_file_test(file, G_FILE_TEST_IS_REGULAR));
    g_unlink(file);

    g_rmdir(dir);
    g_free(fep);
    g_free(ep);
    g_free(file);
    g_free(path);
    g_free(dir);
}

/* sf_page_is_zero agrees with a byte loop, including the tail bytes. */
static void test_page_is_zero(void)
{
    uint8_t *page = g_malloc0(PAGE);
    size_t i;

    g_assert_true(sf_page_is_zero(page, PAGE));
    g_assert_true(sf_page_is_zero(page, 0));
    g_assert_true(sf_page_is_zero(page, 8));
    for (i = 0; i < PAGE; i += 37) {
        page[i] = 1;
        g_assert_false(sf_page_is_zero(page, PAGE));
        page[i] = 0;
    }
    page[PAGE - 1] = 0x80;
    g_assert_false(sf_page_is_zero(page, PAGE));
    g_assert_true(sf_page_is_zero(page, PAGE - 8));
    g_free(page);
}

/* Range checks on the source itself, including wrap-around. */
static void test_check_range(void)
{
    SfBlockInfo blocks[1] = { { "b", 8 * PAGE, PAGE } };
    void *hosts[1] = { block_mem[1] };
    SfPageSource *src = sf_pagesrc_mem_new(blocks, hosts, 1);
    const char *why;

    g_assert_cmpuint(sf_pagesrc_total_pages(src), ==, 8);
    g_assert_cmpint(sf_pagesrc_check_range(src, 0, 0, 8, &why), ==, 0);
    g_assert_cmpint(sf_pagesrc_check_range(src, 0, 7 * PAGE, 1, &why), ==, 0);
    g_assert_cmpint(sf_pagesrc_check_range(src, 0, 7 * PAGE, 2, &why), ==, -1);
    g_assert_cmpint(sf_pagesrc_check_range(src, 0, 8 * PAGE, 1, &why), ==, -1);
    g_assert_cmpint(sf_pagesrc_check_range(src, 1, 0, 1, &why), ==, -1);
    g_assert_cmpint(sf_pagesrc_check_range(src, 0, 1, 1, &why), ==, -1);
    g_assert_cmpint(sf_pagesrc_check_range(src, 0, 0, 0, &why), ==, -1);
    g_assert_cmpint(sf_pagesrc_check_range(src, 0, ~0ull << 12, 1024, &why), ==,
                    -1);
    sf_pagesrc_free(src);
}

int main(int argc, char **argv)
{
    CaseRun *runs_all;
    size_t t, c, n = 0;
    int ret;

    g_test_init(&argc, &argv, NULL);
    pattern_init();

    runs_all = g_new(CaseRun, G_N_ELEMENTS(transports) * G_N_ELEMENTS(cases));
    for (t = 0; t < G_N_ELEMENTS(transports); t++) {
        char *path;

        for (c = 0; c < G_N_ELEMENTS(cases); c++) {
            runs_all[n] = (CaseRun){ &transports[t], &cases[c] };
            path = g_strdup_printf("/transport/%s/%s", transports[t].name,
                                   cases[c].name);
            g_test_add_data_func(path, &runs_all[n], run_case);
            g_free(path);
            n++;
        }
        path = g_strdup_printf("/transport/%s/connect/dead-endpoint",
                               transports[t].name);
        g_test_add_data_func(path, &transports[t], test_dead_endpoint);
        g_free(path);
        path = g_strdup_printf("/transport/%s/connect/timeout",
                               transports[t].name);
        g_test_add_data_func(path, &transports[t], test_connect_timeout);
        g_free(path);
    }
    g_test_add_func("/transport/endpoints/bad", test_bad_endpoints);
    g_test_add_func("/transport/endpoints/tcp-ephemeral-port",
                    test_tcp_ephemeral_port);
    g_test_add_func("/transport/endpoints/unix-listen-rules",
                    test_unix_listen_rules);
    g_test_add_func("/pagesrc/page-is-zero", test_page_is_zero);
    g_test_add_func("/pagesrc/check-range", test_check_range);

    ret = g_test_run();
    g_free(runs_all);
    g_free(block_mem[0]);
    g_free(block_mem[1]);
    return ret;
}
