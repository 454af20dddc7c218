/*
 * snowflock transports: tcp:HOST:PORT (IPv4 and IPv6).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * HOST is a name, an IPv4 literal or a bracketed IPv6 literal
 * ("tcp:[::1]:7000"); an empty HOST listens on every address.  PORT 0
 * listens on an ephemeral port, and the listener's endpoint then names the
 * real one so it can be handed to clones.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <glib.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sf-transport-int.h"

/* Split "HOST:PORT" into a host (brackets removed) and a numeric port. */
static int tcp_parse(const char *addr, char **host, char **port, GError **err)
{
    const char *colon = strrchr(addr, ':');
    const char *p;
    char *h;
    char *end;
    unsigned long pn;

    if (!colon || colon[1] == '\0') {
        g_set_error(err, SF_TRANSPORT_ERROR, EINVAL,
                    "tcp endpoint '%s' needs HOST:PORT", addr);
        return -1;
    }
    for (p = colon + 1; *p; p++) {
        if (!g_ascii_isdigit(*p)) {
            break;
        }
    }
    errno = 0;
    pn = strtoul(colon + 1, &end, 10);
    if (*p || *end || errno || pn > 65535) {
        g_set_error(err, SF_TRANSPORT_ERROR, EINVAL,
                    "bad port in tcp endpoint '%s'", addr);
        return -1;
    }

    h = g_strndup(addr, colon - addr);
    if (h[0] == '[') {
        size_t n = strlen(h);

        if (n < 2 || h[n - 1] != ']') {
            g_set_error(err, SF_TRANSPORT_ERROR, EINVAL,
                        "unbalanced brackets in tcp endpoint '%s'", addr);
            g_free(h);
            return -1;
        }
        memmove(h, h + 1, n - 2);
        h[n - 2] = '\0';
    } else if (strchr(h, ':')) {
        g_set_error(err, SF_TRANSPORT_ERROR, EINVAL,
                    "IPv6 address in tcp endpoint '%s' needs brackets "
                    "(tcp:[ADDR]:PORT)",
                    addr);
        g_free(h);
        return -1;
    }
    *host = h;
    *port = g_strdup_printf("%lu", pn);
    return 0;
}

static struct addrinfo *tcp_resolve(const char *addr, bool passive,
                                    GError **err)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0),
    };
    struct addrinfo *res = NULL;
    char *host, *port;
    int ret;

    if (tcp_parse(addr, &host, &port, err) < 0) {
        return NULL;
    }
    if (!host[0] && !passive) {
        g_set_error(err, SF_TRANSPORT_ERROR, EINVAL,
                    "tcp endpoint '%s' needs a host to connect to", addr);
        g_free(host);
        g_free(port);
        return NULL;
    }
    ret = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (ret != 0) {
        g_set_error(
            err, SF_TRANSPORT_ERROR, ret == EAI_SYSTEM ? errno : EADDRNOTAVAIL,
            "cannot resolve tcp endpoint '%s': %s", addr, gai_strerror(ret));
        res = NULL;
    }
    g_free(host);
    g_free(port);
    return res;
}

static SfListener *tcp_listen(const char *addr, GError **err)
{
    struct addrinfo *res = tcp_resolve(addr, true, err);
    struct addrinfo *ai;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    SfListener *l;
    char *name;
    int fd = -1;
    int last_err = EADDRNOTAVAIL;

    if (!res) {
        return NULL;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        int one = 1;

        fd = socket(ai->ai_family,
                    ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    ai->ai_protocol);
        if (fd < 0) {
            last_err = errno;
            continue;
        }
        /* A restarted server must not wait out TIME_WAIT on its port. */
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            listen(fd, SOMAXCONN) == 0) {
            break;
        }
        last_err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        sf_transport_set_error(err, last_err, "listen on tcp:%s", addr);
        return NULL;
    }
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
        sf_transport_set_error(err, errno, "getsockname for tcp:%s", addr);
        close(fd);
        return NULL;
    }

    /* Name the bound address and real port (PORT 0 means ephemeral). */
    name = sf_sockaddr_to_string((struct sockaddr *)&ss, sl);
    l = g_new0(SfListener, 1);
    l->transport = &sf_transport_tcp;
    l->fd = fd;
    l->endpoint = g_strdup_printf("tcp:%s", name);
    g_free(name);
    return l;
}

static SfConn *tcp_connect(const char *addr, int timeout_ms, GError **err)
{
    struct addrinfo *res = tcp_resolve(addr, false, err);
    struct addrinfo *ai;
    int64_t deadline = g_get_monotonic_time() / 1000 + timeout_ms;
    int last_err = EADDRNOTAVAIL;
    int fd = -1;

    if (!res) {
        return NULL;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        int left = timeout_ms;
        int ret;

        if (timeout_ms >= 0) {
            /* All addresses share one deadline. */
            left = MAX(0, (int)(deadline - g_get_monotonic_time() / 1000));
            if (left == 0) {
                last_err = ETIMEDOUT;
                break;
            }
        }
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            last_err = errno;
            continue;
        }
        ret = sf_stream_connect_fd(fd, ai->ai_addr, ai->ai_addrlen, left);
        if (ret == 0) {
            int one = 1;
            char *name = sf_sockaddr_to_string(ai->ai_addr, ai->ai_addrlen);
            char *peer = g_strdup_printf("tcp:%s", name);

            g_free(name);
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            freeaddrinfo(res);
            return sf_stream_conn_new(fd, peer);
        }
        last_err = -ret;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    sf_transport_set_error(err, last_err, "connect to tcp:%s", addr);
    return NULL;
}

const SfTransportOps sf_transport_tcp = {
    .scheme = "tcp",
    .listen = tcp_listen,
    .accept = sf_stream_accept,
    .connect = tcp_connect,
};
