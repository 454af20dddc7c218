/*
 * snowflock page client (see sf-client.h).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <string.h>

#include "sf-client.h"
#include "sf-seal.h"

/* Answers to HELLO and DESC_GET's fixed part: WELCOME, ERROR, DESC. */
#define SF_CLIENT_SMALL_BUF (SF_WIRE_HDR_SIZE + SF_WIRE_ERRMSG_MAX + 64)
/* Between two asks for a descriptor that is not there yet. */
#define SF_CLIENT_DESC_RETRY_MS 20

G_DEFINE_QUARK(sf - client - error - quark, sf_client_error)

/* An ERROR answer as a GError of ours: the server refused. */
static void refused(GError **err, const char *endpoint, uint32_t clone_id,
                    const uint8_t *body, uint32_t len)
{
    SfMsgError e;
    const char *why;

    if (sf_wire_error_decode(body, len, &e, &why) < 0) {
        g_set_error(err, SF_CLIENT_ERROR, SF_CLIENT_PROTOCOL,
                    "page server %s sent a malformed error: %s", endpoint, why);
        return;
    }
    /* The descriptor is written just after the fork: a race, not a no. */
    g_set_error(err, SF_CLIENT_ERROR,
                e.code == SF_WERR_BUSY && strstr(e.message, "(yet)")
                    ? SF_CLIENT_NOT_YET
                    : SF_CLIENT_REFUSED,
                "page server %s refused clone %u: %s (code %u)", endpoint,
                clone_id, e.message, e.code);
}

/* One answer: 1 with *hdr, or 0 with err (EOF counts as an error). */
static int recv_answer(SfConn *c, const char *endpoint, const char *after,
                       SfWireHdr *hdr, uint8_t *buf, size_t cap, GError **err)
{
    int ret = sf_msg_recv(c, hdr, buf, cap, err);

    if (ret == 0) {
        g_set_error(err, SF_TRANSPORT_ERROR, EPIPE,
                    "page server %s closed the connection after %s", endpoint,
                    after);
    }
    return ret == 1;
}

SfConn *sf_client_connect(const char *endpoint, const SfClientId *id,
                          uint32_t hello_flags, int timeout_ms, SfMsgWelcome *w,
                          GError **err)
{
    SfConn *c = sf_connect(endpoint, timeout_ms, err);
    uint8_t body[SF_WIRE_HELLO_LEN];
    uint8_t buf[SF_CLIENT_SMALL_BUF];
    SfMsgHello hello = { .flags = hello_flags };
    SfWireHdr hdr;
    const char *why;

    if (!c) {
        return NULL;
    }
    if (sf_endpoint_is_network(endpoint)) {
        SfSealKeys k;

        sf_seal_keys_derive(&k, id->secret, id->fork_id);
        c = sf_conn_seal(c, &k, false, err);
        sf_seal_keys_wipe(&k);
        if (!c) {
            return NULL;
        }
    }
    memcpy(hello.secret, id->secret, sizeof(hello.secret));
    sf_wire_hello_encode(body, &hello);
    memset(hello.secret, 0, sizeof(hello.secret));
    if (sf_msg_send(c, SF_MSG_HELLO, id->clone_id, id->fork_id, body,
                    sizeof(body), NULL, 0, err) < 0 ||
        !recv_answer(c, endpoint, "HELLO", &hdr, buf, sizeof(buf), err)) {
        goto fail;
    }
    if (hdr.type == SF_MSG_ERROR) {
        refused(err, endpoint, id->clone_id, buf, hdr.length);
        goto fail;
    }
    if (hdr.type != SF_MSG_WELCOME || hdr.fork_id != id->fork_id ||
        sf_wire_welcome_decode(buf, hdr.length, w, &why) < 0) {
        g_set_error(err, SF_CLIENT_ERROR, SF_CLIENT_PROTOCOL,
                    "page server %s answered HELLO with %s for fork "
                    "%016" G_GINT64_MODIFIER "x",
                    endpoint, sf_wire_type_name(hdr.type), hdr.fork_id);
        goto fail;
    }
    return c;

fail:
    memset(body, 0, sizeof(body));
    sf_conn_close(c);
    return NULL;
}

int sf_client_request(SfConn *c, const SfClientId *id, uint32_t block,
                      uint64_t page, uint32_t npages, uint32_t flags,
                      uint32_t rx_kbps, uint32_t loss_ppm, GError **err)
{
    uint8_t body[SF_WIRE_REQUEST_LEN];
    SfMsgRequest r = {
        .block = block,
        .npages = npages,
        .offset = page * SF_WIRE_PAGE_SIZE,
        .flags = flags,
        .rx_kbps = rx_kbps,
        .loss_ppm = loss_ppm,
    };
    int ret;

    memcpy(r.secret, id->secret, sizeof(r.secret));
    sf_wire_request_encode(body, &r);
    ret = sf_msg_send(c, SF_MSG_REQUEST, id->clone_id, id->fork_id, body,
                      sizeof(body), NULL, 0, err);
    memset(body, 0, sizeof(body));
    memset(r.secret, 0, sizeof(r.secret));
    return ret;
}

int sf_client_done(SfConn *c, const SfClientId *id, GError **err)
{
    uint8_t body[SF_WIRE_DONE_LEN];
    SfMsgDone d;
    int ret;

    memcpy(d.secret, id->secret, sizeof(d.secret));
    sf_wire_done_encode(body, &d);
    ret = sf_msg_send(c, SF_MSG_DONE, id->clone_id, id->fork_id, body,
                      sizeof(body), NULL, 0, err);
    memset(body, 0, sizeof(body));
    memset(d.secret, 0, sizeof(d.secret));
    return ret;
}

/* Fetch [0, total) over one connection into out; false with err. */
static bool fetch_chunks(SfConn *c, const char *endpoint, const SfClientId *id,
                         size_t max_len, GByteArray *out, GError **err)
{
    g_autofree uint8_t *buf = g_malloc(SF_WIRE_DESC_LEN + SF_WIRE_DESC_CHUNK);
    uint64_t total = UINT64_MAX;

    while (out->len < total) {
        uint8_t body[SF_WIRE_DESC_GET_LEN];
        SfMsgDescGet g = { .offset = out->len };
        SfMsgDesc d;
        SfWireHdr hdr;
        const char *why;
        size_t n;

        memcpy(g.secret, id->secret, sizeof(g.secret));
        sf_wire_desc_get_encode(body, &g);
        memset(g.secret, 0, sizeof(g.secret));
        if (sf_msg_send(c, SF_MSG_DESC_GET, id->clone_id, id->fork_id, body,
                        sizeof(body), NULL, 0, err) < 0 ||
            !recv_answer(c, endpoint, "DESC_GET", &hdr, buf,
                         SF_WIRE_DESC_LEN + SF_WIRE_DESC_CHUNK, err)) {
            return false;
        }
        if (hdr.type == SF_MSG_ERROR) {
            refused(err, endpoint, id->clone_id, buf, hdr.length);
            return false;
        }
        if (hdr.type != SF_MSG_DESC || hdr.fork_id != id->fork_id ||
            sf_wire_desc_decode(buf, hdr.length, &d, &why) < 0) {
            g_set_error(err, SF_CLIENT_ERROR, SF_CLIENT_PROTOCOL,
                        "page server %s answered DESC_GET with %s", endpoint,
                        sf_wire_type_name(hdr.type));
            return false;
        }
        n = hdr.length - SF_WIRE_DESC_LEN;
        /* The size may not change under us, nor exceed what we take. */
        if ((total != UINT64_MAX && d.total != total) || d.total > max_len ||
            d.offset != out->len || (n == 0 && out->len < d.total)) {
            g_set_error(
                err, SF_CLIENT_ERROR, SF_CLIENT_PROTOCOL,
                "page server %s sent descriptor bytes %" G_GUINT64_FORMAT
                "+%zu of %" G_GUINT64_FORMAT " (asked for %u, at "
                "most %zu)",
                endpoint, d.offset, n, d.total, out->len, max_len);
            return false;
        }
        total = d.total;
        g_byte_array_append(out, buf + SF_WIRE_DESC_LEN, n);
    }
    return true;
}

GBytes *sf_client_fetch_descriptor(const char *endpoint, const SfClientId *id,
                                   size_t max_len, int timeout_ms, GError **err)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;

    for (;;) {
        g_autoptr(GByteArray) out = g_byte_array_new();
        GError *local = NULL;
        SfMsgWelcome w;
        SfConn *c;
        int left = (int)MAX((deadline - g_get_monotonic_time()) / 1000, 1);
        bool ok;

        c = sf_client_connect(endpoint, id, SF_HELLO_DESC_ONLY, left, &w,
                              &local);
        if (!c) {
            g_propagate_error(err, local);
            return NULL;
        }
        ok = fetch_chunks(c, endpoint, id, max_len, out, &local);
        sf_conn_close(c);
        if (ok) {
            return g_byte_array_free_to_bytes(g_steal_pointer(&out));
        }
        if (!g_error_matches(local, SF_CLIENT_ERROR, SF_CLIENT_NOT_YET) ||
            g_get_monotonic_time() >= deadline) {
            g_propagate_error(err, local);
            return NULL;
        }
        g_error_free(local);
        g_usleep(SF_CLIENT_DESC_RETRY_MS * 1000);
    }
}
