/*
 * snowflock transports: connection ops shared by stream sockets.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Unix and TCP connections differ only in how they are set up; once
 * connected both are a blocking stream fd, handled here.  Every send uses
 * MSG_NOSIGNAL: a peer that went away must come back as -EPIPE to the
 * caller, never as a SIGPIPE that kills the page server.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sf-transport-int.h"

/* Enough for our messages (header, body, payload) without allocating. */
#define SF_STREAM_IOV_MAX 8

static int stream_sendv(SfConn *c, const struct iovec *iov, int iovcnt)
{
    struct iovec local[SF_STREAM_IOV_MAX];
    struct iovec *v = local;
    int n = 0;
    int ret = 0;
    int i;

    if (iovcnt > SF_STREAM_IOV_MAX) {
        v = g_new(struct iovec, iovcnt);
    }
    /* Drop empty entries so a partial write can advance simply. */
    for (i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len) {
            v[n++] = iov[i];
        }
    }

    i = 0;
    while (i < n) {
        struct msghdr msg = {
            .msg_iov = &v[i],
            .msg_iovlen = n - i,
        };
        ssize_t done = sendmsg(c->fd, &msg, MSG_NOSIGNAL);

        if (done < 0) {
            if (errno == EINTR) {
                continue;
            }
            /* SO_SNDTIMEO expiry shows up as EAGAIN: report a timeout. */
            ret =
                (errno == EAGAIN || errno == EWOULDBLOCK) ? -ETIMEDOUT : -errno;
            break;
        }
        /* Partial write: skip what went out, resume mid-entry. */
        while (i < n && (size_t)done >= v[i].iov_len) {
            done -= v[i].iov_len;
            i++;
        }
        if (i < n) {
            v[i].iov_base = (uint8_t *)v[i].iov_base + done;
            v[i].iov_len -= done;
        }
    }

    if (v != local) {
        g_free(v);
    }
    return ret;
}

static ssize_t stream_recv(SfConn *c, void *buf, size_t len, bool wait)
{
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, wait ? 0 : MSG_DONTWAIT);

        if (n >= 0) {
            return n;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            /* Blocking: SO_RCVTIMEO expired, a peer stalled mid-message. */
            return wait ? -ETIMEDOUT : -EAGAIN;
        }
        return -errno;
    }
}

static void stream_close(SfConn *c)
{
    if (c->fd >= 0) {
        close(c->fd);
    }
    g_free(c->peer);
    g_free(c);
}

const SfConnOps sf_stream_conn_ops = {
    .sendv = stream_sendv,
    .recv = stream_recv,
    .close = stream_close,
};

SfConn *sf_stream_conn_new(int fd, char *peer)
{
    SfConn *c = g_new0(SfConn, 1);

    c->ops = &sf_stream_conn_ops;
    c->fd = fd;
    c->peer = peer;
    return c;
}

/*
 * The listener fd is non-blocking: a connection that was reset between
 * poll() and accept() must not park the single-threaded page server in
 * accept().  So this never blocks; with nothing pending it fails with
 * code EAGAIN and the caller polls l->fd again.
 */
SfConn *sf_stream_accept(SfListener *l, GError **err)
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

static int set_nonblock(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl < 0) {
        return -errno;
    }
    fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
    if (fcntl(fd, F_SETFL, fl) < 0) {
        return -errno;
    }
    return 0;
}

static int64_t now_ms(void)
{
    return g_get_monotonic_time() / 1000;
}

int sf_stream_connect_fd(int fd, const struct sockaddr *addr, socklen_t addrlen,
                         int timeout_ms)
{
    int64_t deadline;
    int ret;

    if (timeout_ms < 0) {
        do {
            ret = connect(fd, addr, addrlen);
        } while (ret < 0 && errno == EINTR);
        return ret < 0 ? -errno : 0;
    }

    deadline = now_ms() + timeout_ms;
    ret = set_nonblock(fd, true);
    if (ret < 0) {
        return ret;
    }
    for (;;) {
        int64_t left;
        struct pollfd pfd = { .fd = fd, .events = POLLOUT };
        int soerr = 0;
        socklen_t sl = sizeof(soerr);

        if (connect(fd, addr, addrlen) == 0) {
            break;
        }
        if (errno == EAGAIN) {
            /*
             * A unix listener with a full backlog refuses a non-blocking
             * connect with EAGAIN instead of queueing it; there is nothing
             * to poll for, so retry until the deadline.
             */
            left = deadline - now_ms();
            if (left <= 0) {
                return -ETIMEDOUT;
            }
            g_usleep(MIN(left, 10) * 1000);
            continue;
        }
        if (errno != EINPROGRESS && errno != EINTR) {
            return -errno;
        }
        for (;;) {
            left = deadline - now_ms();
            if (left <= 0) {
                return -ETIMEDOUT;
            }
            ret = poll(&pfd, 1, (int)MIN(left, G_MAXINT));
            if (ret < 0 && errno == EINTR) {
                continue;
            }
            if (ret < 0) {
                return -errno;
            }
            if (ret > 0) {
                break;
            }
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) {
            return -errno;
        }
        if (soerr) {
            return -soerr;
        }
        break;
    }
    return set_nonblock(fd, false);
}

char *sf_sockaddr_to_string(const struct sockaddr *sa, socklen_t len)
{
    char host[INET6_ADDRSTRLEN];

    switch (sa->sa_family) {
    case AF_INET: {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        return g_strdup_printf("%s:%u", host, ntohs(sin->sin_port));
    }
    case AF_INET6: {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        return g_strdup_printf("[%s]:%u", host, ntohs(sin6->sin6_port));
    }
    case AF_UNIX: {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
        size_t plen = len > offsetof(struct sockaddr_un, sun_path)
                          ? len - offsetof(struct sockaddr_un, sun_path)
                          : 0;

        /* An accepted unix peer is normally unnamed. */
        if (plen == 0 || sun->sun_path[0] == '\0') {
            return g_strdup("unix:(peer)");
        }
        return g_strdup_printf("unix:%.*s", (int)strnlen(sun->sun_path, plen),
                               sun->sun_path);
    }
    default:
        return g_strdup_printf("(family %d)", sa->sa_family);
    }
}

void sf_transport_set_error(GError **err, int errnum, const char *fmt, ...)
{
    va_list ap;
    char *msg;
    char ebuf[128];

    if (!err) {
        return;
    }
    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    /*
     * strerror_r rather than g_strerror: this runs in the page server
     * fork()ed from a multi-threaded QEMU, where g_strerror's global lock
     * may have been held by another thread at the fork instant.
     */
    g_set_error(err, SF_TRANSPORT_ERROR, errnum, "%s: %s", msg,
                strerror_r(errnum, ebuf, sizeof(ebuf)));
    g_free(msg);
}
