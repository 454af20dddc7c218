/*
 * snowflock transports: sealed stream connections.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Anything that crosses a network is sealed (sf-seal.h): a sealed
 * connection wraps a connected stream (TCP) so that each message sent
 * becomes one sealed record, and what is received is opened record by
 * record before its bytes reach the framer.  The framer above still
 * validates the message inside against the wire table; below, a record
 * header is checked (magic, version, length bound) before any of the
 * record is read, and a record that fails to open ends the connection
 * (-EBADMSG): the peer does not know the fork's key, or someone in
 * between changed the stream.
 *
 * Records are read exactly (header, then the announced length), never
 * beyond, so a poll() on the fd still tells the truth about what is
 * waiting; bytes of an opened record not yet handed up are kept here.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <glib.h>
#include <string.h>

#include "sf-seal.h"
#include "sf-transport-int.h"

/* The largest message: a header and the longest body the table allows. */
#define SEALED_MAX_PLAIN (SF_WIRE_HDR_SIZE + SF_WIRE_MAX_BODY)

typedef struct SfSealedConn {
    SfConn base; /* first: an SfConn * is an SfSealedConn * */
    SfConn *inner;
    SfSealSender *tx;
    SfSealReceiver *rx;
    /* The record being read. */
    uint8_t hdr[SF_SEAL_HDR_SIZE];
    size_t hdr_got;
    uint8_t *rec; /* whole record (header copied in), grown on demand */
    size_t rec_cap, rec_len, rec_got;
    /* Plaintext of the last record, being handed up. */
    uint8_t *plain;
    size_t plain_len, plain_off;
    /* Sending: one buffer, grown to the largest message sent. */
    uint8_t *out;
    size_t out_cap;
} SfSealedConn;

static SfSealedConn *sealed(SfConn *c)
{
    return (SfSealedConn *)c;
}

static int sealed_sendv(SfConn *c, const struct iovec *iov, int iovcnt)
{
    SfSealedConn *s = sealed(c);
    size_t len = 0, off = SF_SEAL_HDR_SIZE;
    struct iovec one;

    for (int i = 0; i < iovcnt; i++) {
        len += iov[i].iov_len;
    }
    if (len > SEALED_MAX_PLAIN) {
        return -EMSGSIZE;
    }
    if (len + SF_SEAL_OVERHEAD > s->out_cap) {
        s->out_cap = len + SF_SEAL_OVERHEAD;
        s->out = g_realloc(s->out, s->out_cap);
    }
    for (int i = 0; i < iovcnt; i++) {
        memcpy(s->out + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    one.iov_base = s->out;
    one.iov_len = sf_seal_inplace(s->tx, s->out, len);
    return s->inner->ops->sendv(s->inner, &one, 1);
}

/* Read more of the current record: 1 when it is whole, 0 at end of
 * stream between records, or -errno (-EAGAIN: nothing more now). */
static int record_read(SfSealedConn *s, bool wait)
{
    while (s->hdr_got < SF_SEAL_HDR_SIZE) {
        ssize_t n = s->inner->ops->recv(s->inner, s->hdr + s->hdr_got,
                                        SF_SEAL_HDR_SIZE - s->hdr_got, wait);
        if (n <= 0) {
            return n == 0 ? (s->hdr_got ? -EPIPE : 0) : (int)n;
        }
        s->hdr_got += n;
        if (s->hdr_got == SF_SEAL_HDR_SIZE) {
            int64_t clen = sf_seal_hdr_length(s->hdr);

            /* Bounded before a byte of it is read. */
            if (clen < SF_WIRE_HDR_SIZE || clen > SEALED_MAX_PLAIN) {
                return -EBADMSG;
            }
            s->rec_len = clen + SF_SEAL_OVERHEAD;
            if (s->rec_len > s->rec_cap) {
                s->rec_cap = s->rec_len;
                s->rec = g_realloc(s->rec, s->rec_cap);
            }
            memcpy(s->rec, s->hdr, SF_SEAL_HDR_SIZE);
            s->rec_got = SF_SEAL_HDR_SIZE;
        }
    }
    while (s->rec_got < s->rec_len) {
        ssize_t n = s->inner->ops->recv(s->inner, s->rec + s->rec_got,
                                        s->rec_len - s->rec_got, wait);
        if (n <= 0) {
            return n == 0 ? -EPIPE : (int)n;
        }
        s->rec_got += n;
    }
    return 1;
}

static ssize_t sealed_recv(SfConn *c, void *buf, size_t len, bool wait)
{
    SfSealedConn *s = sealed(c);
    size_t n;

    if (s->plain_off == s->plain_len) {
        int r = record_read(s, wait);
        uint8_t *p;
        size_t plen;

        if (r <= 0) {
            return r;
        }
        s->hdr_got = 0;
        if (sf_seal_open(s->rx, s->rec, s->rec_len, &p, &plen) != SF_OPEN_OK) {
            return -EBADMSG;
        }
        s->plain = p;
        s->plain_len = plen;
        s->plain_off = 0;
    }
    n = MIN(len, s->plain_len - s->plain_off);
    memcpy(buf, s->plain + s->plain_off, n);
    s->plain_off += n;
    return n;
}

static void sealed_close(SfConn *c)
{
    SfSealedConn *s = sealed(c);

    sf_conn_close(s->inner);
    sf_seal_sender_free(s->tx);
    sf_seal_receiver_free(s->rx);
    if (s->rec) {
        memset(s->rec, 0, s->rec_cap);
    }
    g_free(s->rec);
    if (s->out) {
        memset(s->out, 0, s->out_cap);
    }
    g_free(s->out);
    g_free(s->base.peer);
    g_free(s);
}

static const SfConnOps sealed_ops = {
    .sendv = sealed_sendv,
    .recv = sealed_recv,
    .close = sealed_close,
};

SfConn *sf_conn_seal(SfConn *inner, const SfSealKeys *k, bool server,
                     GError **err)
{
    SfSealedConn *s = g_new0(SfSealedConn, 1);

    s->tx = sf_seal_sender_new(k, server ? SF_SEAL_PAGES : SF_SEAL_REQUESTS);
    if (!s->tx) {
        sf_transport_set_error(err, EIO, "no random salt for %s", inner->peer);
        g_free(s);
        sf_conn_close(inner);
        return NULL;
    }
    /* One peer, one session (a reconnect is a new connection). */
    s->rx =
        sf_seal_receiver_new(k, server ? SF_SEAL_REQUESTS : SF_SEAL_PAGES, 1);
    s->inner = inner;
    s->base.ops = &sealed_ops;
    s->base.fd = inner->fd;
    s->base.peer = g_strdup(inner->peer);
    return &s->base;
}

bool sf_conn_is_sealed(const SfConn *c)
{
    return c->ops == &sealed_ops;
}
