/*
 * snowflock transports: how requests and pages travel.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A transport is a small vtable (SfTransportOps) chosen by the endpoint's
 * scheme: "unix:/path/to/sock" or "tcp:HOST:PORT" today; "mcast:..." (UDP
 * multicast with unicast repair) plugs in behind the same calls.  Nothing
 * above this interface knows how many clones listen to one server: every
 * receiver frames messages with one SfFramer (sf-framer.h), and page
 * messages name their pages, not their receiver.
 *
 * How a datagram transport fits: its listen() binds the group, its
 * accept() hands out, once, the one SfConn every clone's datagrams arrive
 * on (SfConnOps.datagram set), and its recv() delivers one datagram per
 * call into sf_framer_dgram_iov().  There is no connection per clone, so
 * a server keys per-clone state by the clone id of each message, trusted
 * only once the message authenticated, and answers to the fork (the
 * header's clone id 0), not to a connection.
 *
 * Errors are reported as GError (domain SF_TRANSPORT_ERROR, code = errno
 * value when there is one) and logged by whoever consumes them.
 */
#ifndef SF_TRANSPORT_H
#define SF_TRANSPORT_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "sf-framer.h"
#include "sf-seal.h"
#include "sf-wire.h"

#define SF_TRANSPORT_ERROR (sf_transport_error_quark())
GQuark sf_transport_error_quark(void);

typedef struct SfConn SfConn;
typedef struct SfListener SfListener;

typedef struct SfTransportOps {
    const char *scheme; /* "unix", "tcp" */
    /* addr is the endpoint without "scheme:" */
    SfListener *(*listen)(const char *addr, GError **err);
    /* Never blocks: with nothing pending, fails with code EAGAIN. */
    SfConn *(*accept)(SfListener *l, GError **err);
    SfConn *(*connect)(const char *addr, int timeout_ms, GError **err);
} SfTransportOps;

typedef struct SfConnOps {
    /* Send all of iov or fail; blocking.  0 or -errno. */
    int (*sendv)(SfConn *c, const struct iovec *iov, int iovcnt);
    /*
     * Receive up to len bytes.  wait: block until at least one byte (or
     * SO_RCVTIMEO: -ETIMEDOUT); else -EAGAIN when nothing is there.
     * Returns the byte count, 0 at end of stream, or -errno.
     */
    ssize_t (*recv)(SfConn *c, void *buf, size_t len, bool wait);
    void (*close)(SfConn *c);
} SfConnOps;

struct SfConn {
    const SfConnOps *ops;
    int fd;     /* pollable; readable when a message may be waiting */
    char *peer; /* printable peer name for logs */
};

struct SfListener {
    const SfTransportOps *transport;
    int fd;          /* pollable; readable when accept() will not block */
    char *endpoint;  /* full endpoint, with the real port for tcp:...:0 */
    char *unix_path; /* unlinked on close, NULL for tcp */
};

/* Look up a transport by endpoint scheme; NULL if unknown. */
const SfTransportOps *sf_transport_lookup(const char *endpoint);

SfListener *sf_listen(const char *endpoint, GError **err);
/* l->transport->accept: never blocks; poll l->fd first. */
SfConn *sf_accept(SfListener *l, GError **err);
void sf_listener_close(SfListener *l);
/* timeout_ms < 0: block */
SfConn *sf_connect(const char *endpoint, int timeout_ms, GError **err);
void sf_conn_close(SfConn *c);
/*
 * Seal every message on a connected stream (sf-transport-sealed.c):
 * returns a connection that replaces inner (and owns it), or NULL (inner
 * closed) with err set.  server: it sends pages and receives requests.
 * Network transports (tcp) are always sealed; unix sockets are not
 * (they live in the fork's 0700 directory).
 */
SfConn *sf_conn_seal(SfConn *inner, const SfSealKeys *k, bool server,
                     GError **err);
bool sf_conn_is_sealed(const SfConn *c);
/* Whether an endpoint crosses a network (and must be sealed). */
bool sf_endpoint_is_network(const char *endpoint);

/*
 * Message layer shared by every transport.
 *
 * sf_msg_send() writes header + body + optional payload in one sendv.
 *
 * sf_msg_recv_frame() reads from c into f (sf-framer.h) until f holds one
 * whole message: blocking when wait, else returning SF_RECV_AGAIN as soon
 * as c has nothing more, with the partial message kept in f for the next
 * call.  SF_RECV_EOF is a close between messages.  SF_RECV_ERROR sets
 * err; the connection must then be closed (the stream lost alignment):
 * err->code EPROTO bad header, EPROTONOSUPPORT unknown version (f->werr
 * says which wire error to answer), EMSGSIZE a body larger than f's
 * buffer (not read), EPIPE end of stream inside a message, ETIMEDOUT
 * SO_RCVTIMEO expired, else the socket errno.
 *
 * sf_msg_recv() is the blocking form over a framer of its own: the body
 * lands in buf (buf_cap bytes).  1 when a message was read, 0 on clean
 * EOF, -1 with err set (codes as above).
 */
typedef enum SfRecvResult {
    SF_RECV_ERROR = -2,
    SF_RECV_EOF = -1,
    SF_RECV_AGAIN = 0,
    SF_RECV_MSG = 1,
} SfRecvResult;

int sf_msg_send(SfConn *c, SfMsgType type, uint32_t clone_id, uint64_t fork_id,
                const void *body, size_t body_len, const void *payload,
                size_t payload_len, GError **err);
SfRecvResult sf_msg_recv_frame(SfConn *c, SfFramer *f, bool wait, GError **err);
int sf_msg_recv(SfConn *c, SfWireHdr *hdr, uint8_t *buf, size_t buf_cap,
                GError **err);

#endif
