/*
 * snowflock transports: endpoint dispatch and the message layer.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <glib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "sf-transport-int.h"

/* G_DEFINE_QUARK stringifies its first argument as written. */
/* clang-format off */
G_DEFINE_QUARK(sf-transport-error-quark, sf_transport_error)
/* clang-format on */

/*
 * Resolve the quark at load time: the first g_quark lookup takes a GLib
 * global lock, and the page server may first need it in a child fork()ed
 * from a multi-threaded QEMU, where that lock could be stuck.
 */
static void __attribute__((constructor)) sf_transport_init(void)
{
    sf_transport_error_quark();
}

static const SfTransportOps *const transports[] = {
    &sf_transport_unix,
    &sf_transport_tcp,
};

/* Split "scheme:rest"; NULL when there is no known scheme. */
static const SfTransportOps *lookup(const char *endpoint, const char **addr)
{
    const char *colon = endpoint ? strchr(endpoint, ':') : NULL;
    size_t i;

    if (!colon) {
        return NULL;
    }
    for (i = 0; i < G_N_ELEMENTS(transports); i++) {
        const char *scheme = transports[i]->scheme;

        if (strlen(scheme) == (size_t)(colon - endpoint) &&
            !strncmp(endpoint, scheme, colon - endpoint)) {
            *addr = colon + 1;
            return transports[i];
        }
    }
    return NULL;
}

const SfTransportOps *sf_transport_lookup(const char *endpoint)
{
    const char *addr;

    return lookup(endpoint, &addr);
}

SfListener *sf_listen(const char *endpoint, GError **err)
{
    const char *addr;
    const SfTransportOps *t = lookup(endpoint, &addr);

    if (!t) {
        g_set_error(err, SF_TRANSPORT_ERROR, EINVAL,
                    "unknown transport in endpoint '%s' "
                    "(want unix:PATH or tcp:HOST:PORT)",
                    endpoint ? endpoint : "(null)");
        return NULL;
    }
    return t->listen(addr, err);
}

SfConn *sf_accept(SfListener *l, GError **err)
{
    return l->transport->accept(l, err);
}

void sf_listener_close(SfListener *l)
{
    if (!l) {
        return;
    }
    if (l->fd >= 0) {
        close(l->fd);
    }
    if (l->unix_path) {
        unlink(l->unix_path);
    }
    g_free(l->endpoint);
    g_free(l->unix_path);
    g_free(l);
}

SfConn *sf_connect(const char *endpoint, int timeout_ms, GError **err)
{
    const char *addr;
    const SfTransportOps *t = lookup(endpoint, &addr);

    if (!t) {
        g_set_error(err, SF_TRANSPORT_ERROR, EINVAL,
                    "unknown transport in endpoint '%s' "
                    "(want unix:PATH or tcp:HOST:PORT)",
                    endpoint ? endpoint : "(null)");
        return NULL;
    }
    return t->connect(addr, timeout_ms, err);
}

bool sf_endpoint_is_network(const char *endpoint)
{
    return endpoint && !g_str_has_prefix(endpoint, "unix:");
}

void sf_conn_close(SfConn *c)
{
    if (c) {
        c->ops->close(c);
    }
}

/* Message layer */

int sf_msg_send(SfConn *c, SfMsgType type, uint32_t clone_id, uint64_t fork_id,
                const void *body, size_t body_len, const void *payload,
                size_t payload_len, GError **err)
{
    uint8_t hdr[SF_WIRE_HDR_SIZE];
    struct iovec iov[3];
    size_t total = body_len + payload_len;
    int ret;

    if (total > SF_WIRE_MAX_BODY) {
        g_set_error(err, SF_TRANSPORT_ERROR, EMSGSIZE,
                    "%s body of %zu bytes exceeds the wire maximum",
                    sf_wire_type_name(type), total);
        return -1;
    }
    sf_wire_hdr_encode(hdr, type, (uint32_t)total, clone_id, fork_id);
    iov[0].iov_base = hdr;
    iov[0].iov_len = sizeof(hdr);
    iov[1].iov_base = (void *)body;
    iov[1].iov_len = body_len;
    iov[2].iov_base = (void *)payload;
    iov[2].iov_len = payload_len;
    ret = c->ops->sendv(c, iov, 3);
    if (ret < 0) {
        sf_transport_set_error(err, -ret, "send %s to %s",
                               sf_wire_type_name(type), c->peer);
        return -1;
    }
    return 0;
}

SfRecvResult sf_msg_recv_frame(SfConn *c, SfFramer *f, bool wait, GError **err)
{
    for (;;) {
        uint8_t *dst;
        size_t want = sf_framer_want(f, &dst);
        ssize_t n = c->ops->recv(c, dst, want, wait);

        if (n == -EAGAIN && !wait) {
            return SF_RECV_AGAIN;
        }
        if (n == 0) {
            if (sf_framer_idle(f)) {
                return SF_RECV_EOF;
            }
            n = -EPIPE;
        }
        if (n < 0) {
            sf_transport_set_error(err, (int)-n, "receive from %s", c->peer);
            return SF_RECV_ERROR;
        }
        switch (sf_framer_advance(f, n)) {
        case SF_FRAME_PARTIAL:
            break;
        case SF_FRAME_READY:
            return SF_RECV_MSG;
        case SF_FRAME_BAD:
            g_set_error(err, SF_TRANSPORT_ERROR,
                        f->werr == SF_WERR_VERSION ? EPROTONOSUPPORT : EPROTO,
                        "bad message header from %s: %s", c->peer, f->why);
            return SF_RECV_ERROR;
        case SF_FRAME_TOO_BIG:
            g_set_error(err, SF_TRANSPORT_ERROR, EMSGSIZE,
                        "%s of %u bytes from %s exceeds buffer of %zu",
                        sf_wire_type_name(f->hdr.type), f->hdr.length, c->peer,
                        f->body_cap);
            return SF_RECV_ERROR;
        }
    }
}

int sf_msg_recv(SfConn *c, SfWireHdr *hdr, uint8_t *buf, size_t buf_cap,
                GError **err)
{
    SfFramer f;

    sf_framer_init(&f, buf, buf_cap);
    switch (sf_msg_recv_frame(c, &f, true, err)) {
    case SF_RECV_MSG:
        *hdr = f.hdr;
        return 1;
    case SF_RECV_EOF:
        return 0;
    default:
        return -1;
    }
}
