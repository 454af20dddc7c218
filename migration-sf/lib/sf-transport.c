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
#include <netinet/in.h>
#include <netinet/tcp.h>
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

/*
 * The listener fd is non-blocking: a connection that was reset between
 * poll() and accept() must not park the single-threaded page server in
 * accept().  So this never blocks; with nothing pending it fails with
 * code EAGAIN and the caller polls l->fd again.
 */
SfConn *sf_accept(SfListener *l, GError **err)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd;

    do {
        len = sizeof(ss);
        fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        sf_transport_set_error(err, errno, "accept on %s", l->endpoint);
        return NULL;
    }
    if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
        int one = 1;

        /* Requests are small and latency bound: never wait for Nagle. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (ss.ss_family == AF_UNIX) {
        struct ucred cred;
        socklen_t cl = sizeof(cred);

        /* Unix peers are unnamed; their pid is what identifies them. */
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0) {
            return sf_stream_conn_new(
                fd, g_strdup_printf("unix:pid=%d", (int)cred.pid));
        }
    }
    return sf_stream_conn_new(
        fd, sf_sockaddr_to_string((struct sockaddr *)&ss, len));
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

/*
 * Error codes (GError code in SF_TRANSPORT_ERROR): EPROTO for a malformed
 * header, EPROTONOSUPPORT for an unknown version (the page server answers
 * ERROR(VERSION) for that one), EMSGSIZE for a valid header whose body
 * exceeds buf_cap, EPIPE for EOF inside a message, or the socket's errno.
 */
int sf_msg_recv(SfConn *c, SfWireHdr *hdr, uint8_t *buf, size_t buf_cap,
                GError **err)
{
    uint8_t raw[SF_WIRE_HDR_SIZE];
    const char *why = NULL;
    ssize_t n;
    int ret;

    n = c->ops->recv_exact(c, raw, sizeof(raw));
    if (n == 0) {
        return 0;
    }
    if (n < 0) {
        sf_transport_set_error(err, (int)-n, "receive header from %s", c->peer);
        return -1;
    }
    ret = sf_wire_hdr_decode(raw, hdr, &why);
    if (ret < 0) {
        g_set_error(err, SF_TRANSPORT_ERROR,
                    ret == -SF_WERR_VERSION ? EPROTONOSUPPORT : EPROTO,
                    "bad message header from %s: %s", c->peer, why);
        return -1;
    }
    /* The header is sane; still never read a body we cannot hold. */
    if (hdr->length > buf_cap) {
        g_set_error(err, SF_TRANSPORT_ERROR, EMSGSIZE,
                    "%s of %u bytes from %s exceeds buffer of %zu",
                    sf_wire_type_name(hdr->type), hdr->length, c->peer,
                    buf_cap);
        return -1;
    }
    if (hdr->length == 0) {
        return 1;
    }
    n = c->ops->recv_exact(c, buf, hdr->length);
    if (n == 0) {
        n = -EPIPE;
    }
    if (n < 0) {
        sf_transport_set_error(err, (int)-n, "receive %s body from %s",
                               sf_wire_type_name(hdr->type), c->peer);
        return -1;
    }
    return 1;
}
