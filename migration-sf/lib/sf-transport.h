/*
 * snowflock transports: how requests and pages travel.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A transport is a small vtable (SfTransportOps) chosen by the endpoint's
 * scheme: "unix:/path/to/sock" or "tcp:HOST:PORT" today; "mcast:..." (UDP
 * multicast with unicast repair) plugs in behind the same calls.  Nothing
 * above this interface knows how many clones listen to one server: a
 * connection delivers whole messages, and page messages name their pages,
 * not their receiver.
 *
 * Errors are reported as GError (domain SF_TRANSPORT_ERROR, code = errno
 * value when there is one) and logged by whoever consumes them.
 */
#ifndef SF_TRANSPORT_H
#define SF_TRANSPORT_H

#include <glib.h>
#include <stdint.h>
#include <sys/uio.h>

#include "sf-wire.h"

#define SF_TRANSPORT_ERROR (sf_transport_error_quark())
GQuark sf_transport_error_quark(void);

typedef struct SfConn SfConn;
typedef struct SfListener SfListener;

typedef struct SfTransportOps {
    const char *scheme; /* "unix", "tcp" */
    /* addr is the endpoint without "scheme:" */
    SfListener *(*listen)(const char *addr, GError **err);
    SfConn *(*connect)(const char *addr, int timeout_ms, GError **err);
} SfTransportOps;

typedef struct SfConnOps {
    /* Send all of iov or fail; blocking.  0 or -errno. */
    int (*sendv)(SfConn *c, const struct iovec *iov, int iovcnt);
    /*
     * Receive exactly len bytes; blocking.  Returns len, 0 on a clean EOF
     * before the first byte, or -errno (-EPIPE for EOF in the middle).
     */
    ssize_t (*recv_exact)(SfConn *c, void *buf, size_t len);
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
/* Never blocks (the listener fd is non-blocking): with nothing pending it
 * fails with code EAGAIN; poll l->fd first. */
SfConn *sf_accept(SfListener *l, GError **err);
void sf_listener_close(SfListener *l);
/* timeout_ms < 0: block */
SfConn *sf_connect(const char *endpoint, int timeout_ms, GError **err);
void sf_conn_close(SfConn *c);

/*
 * Message layer shared by every transport.
 *
 * sf_msg_send() writes header + body + optional payload in one sendv.
 * sf_msg_recv() reads a header, validates it (sf_wire_hdr_decode) and only
 * then reads its body into buf (which must hold hdr->length bytes; a body
 * longer than buf_cap is an error, never a partial read).  Returns 1 when
 * a message was read, 0 on clean EOF, or -1 with err set.  On a protocol
 * error the connection must be closed: the stream has lost alignment.
 * err->code: EPROTO bad header, EPROTONOSUPPORT unknown version, EMSGSIZE
 * body larger than buf_cap (not read), EPIPE EOF inside a message,
 * ETIMEDOUT SO_RCVTIMEO expired, else the socket errno.
 */
int sf_msg_send(SfConn *c, SfMsgType type, uint32_t clone_id, uint64_t fork_id,
                const void *body, size_t body_len, const void *payload,
                size_t payload_len, GError **err);
int sf_msg_recv(SfConn *c, SfWireHdr *hdr, uint8_t *buf, size_t buf_cap,
                GError **err);

#endif
