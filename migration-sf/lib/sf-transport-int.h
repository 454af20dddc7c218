/*
 * snowflock transports: what the transport implementations share.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Private to sf-transport*.c; users of transports include sf-transport.h.
 */
#ifndef SF_TRANSPORT_INT_H
#define SF_TRANSPORT_INT_H

#include <sys/socket.h>

#include "sf-transport.h"

extern const SfTransportOps sf_transport_unix;
extern const SfTransportOps sf_transport_tcp;

/* Stream sockets (unix, tcp): the shared SfConnOps. */
extern const SfConnOps sf_stream_conn_ops;

/* Wrap a connected stream socket; takes ownership of fd and peer. */
SfConn *sf_stream_conn_new(int fd, char *peer);
/* SfTransportOps.accept of stream listeners (unix, tcp). */
SfConn *sf_stream_accept(SfListener *l, GError **err);

/*
 * connect() fd (a fresh socket) to addr, giving up after timeout_ms
 * (< 0: block).  0 or -errno (-ETIMEDOUT on timeout).  fd is left
 * blocking on success.
 */
int sf_stream_connect_fd(int fd, const struct sockaddr *addr, socklen_t addrlen,
                         int timeout_ms);

/* Printable "host:port" / "unix:path" for a socket address. */
char *sf_sockaddr_to_string(const struct sockaddr *sa, socklen_t len);

/* Set the errno-coded GError used by every transport. */
void sf_transport_set_error(GError **err, int errnum, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

#endif
