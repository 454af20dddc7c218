/*
 * snowflock multicast sockets (see sf-mcast.h).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sf-mcast.h"
#include "sf-transport-int.h"
#include "sf-transport.h"

/* Socket buffers: a burst of a few MiB must not be dropped by our own
 * kernel before it reaches the wire (or the receiver). */
#define SF_MCAST_SNDBUF (4 * 1024 * 1024)
#define SF_MCAST_RCVBUF (16 * 1024 * 1024)

bool sf_mcast_parse(const char *s, SfMcastGroup *g, const char **why)
{
    const char *colon = s ? strrchr(s, ':') : NULL;
    char host[INET_ADDRSTRLEN];
    struct in_addr in;
    char *end;
    unsigned long port;

    if (!colon || (size_t)(colon - s) >= sizeof(host)) {
        *why = "want GROUP:PORT";
        return false;
    }
    memcpy(host, s, colon - s);
    host[colon - s] = '\0';
    if (inet_pton(AF_INET, host, &in) != 1) {
        *why = "the group is not an IPv4 address";
        return false;
    }
    if ((ntohl(in.s_addr) >> 28) != 0xe) {
        *why = "the group is not a multicast address (224.0.0.0/4)";
        return false;
    }
    errno = 0;
    port = strtoul(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || port == 0 || port > 65535) {
        *why = "the port is not 1..65535";
        return false;
    }
    g->group = ntohl(in.s_addr);
    g->port = port;
    return true;
}

char *sf_mcast_to_string(uint32_t group, uint16_t port)
{
    char host[INET_ADDRSTRLEN];
    struct in_addr in = { htonl(group) };

    inet_ntop(AF_INET, &in, host, sizeof(host));
    return g_strdup_printf("%s:%u", host, port);
}

static struct sockaddr_in sin_of(uint32_t addr, uint16_t port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };

    sa.sin_addr.s_addr = htonl(addr);
    sa.sin_port = htons(port);
    return sa;
}

unsigned sf_mcast_frags_for_mtu(unsigned mtu)
{
    /* IPv4 and UDP headers, our seal, wire header and FRAG fields. */
    const unsigned over =
        20 + 8 + SF_SEAL_OVERHEAD + SF_WIRE_HDR_SIZE + SF_WIRE_FRAG_LEN;

    if (mtu <= over) {
        return 0;
    }
    for (unsigned n = 1; n <= SF_WIRE_MAX_FRAGS; n++) {
        if (sf_wire_frag_len(0, n) <= mtu - over) {
            return n;
        }
    }
    return 0;
}

int sf_mcast_sender(const SfMcastGroup *g, unsigned *mtu, GError **err)
{
    struct sockaddr_in local = sin_of(g->ifaddr, 0);
    struct sockaddr_in dst = sin_of(g->group, g->port);
    struct in_addr ifa = { htonl(g->ifaddr) };
    int ttl = g->ttl ? g->ttl : 1, loop = 1, buf = SF_MCAST_SNDBUF;
    int pmtu = IP_PMTUDISC_DO, m = 0;
    socklen_t ml = sizeof(m);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    if (fd < 0) {
        sf_transport_set_error(err, errno, "multicast socket");
        return -1;
    }
    /* Loop: clones on the server's own host receive the group too. */
    if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &ifa, sizeof(ifa)) < 0 ||
        setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof(ttl)) < 0 ||
        setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof(loop)) <
            0 ||
        /* Never let IP fragment our datagrams. */
        setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof(pmtu)) < 0 ||
        bind(fd, (struct sockaddr *)&local, sizeof(local)) < 0 ||
        connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 ||
        getsockopt(fd, IPPROTO_IP, IP_MTU, &m, &ml) < 0) {
        g_autofree char *gs = sf_mcast_to_string(g->group, g->port);
        sf_transport_set_error(err, errno, "multicast sender to %s", gs);
        close(fd);
        return -1;
    }
    /* Best effort: a smaller buffer only means more waits.  FORCE
     * passes net.core.wmem_max where we may (CAP_NET_ADMIN). */
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof(buf)) < 0) {
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    }
    *mtu = m;
    return fd;
}

int sf_mcast_receiver(const SfMcastGroup *g, GError **err)
{
    struct sockaddr_in any = sin_of(g->group, g->port);
    struct ip_mreq mr = {
        .imr_multiaddr = { htonl(g->group) },
        .imr_interface = { htonl(g->ifaddr) },
    };
    int one = 1, buf = SF_MCAST_RCVBUF;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    if (fd < 0) {
        sf_transport_set_error(err, errno, "multicast socket");
        return -1;
    }
    /* Bound to the group itself: only its datagrams, not every UDP
     * packet to the port; several clones on one host share it. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&any, sizeof(any)) < 0 ||
        setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mr, sizeof(mr)) < 0) {
        g_autofree char *gs = sf_mcast_to_string(g->group, g->port);
        sf_transport_set_error(err, errno, "joining multicast group %s", gs);
        close(fd);
        return -1;
    }
    /* A burst must wait in the kernel while the fault thread places
     * pages: past net.core.rmem_max where we may (CAP_NET_ADMIN). */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf)) < 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    }
    return fd;
}

int sf_mcast_flush(int fd, SfMcastBatch *b)
{
    struct mmsghdr msgs[SF_MCAST_BATCH];
    struct iovec iov[SF_MCAST_BATCH];
    int sent;

    if (b->n == 0) {
        return 0;
    }
    memset(msgs, 0, sizeof(msgs[0]) * b->n);
    for (unsigned i = 0; i < b->n; i++) {
        iov[i].iov_base = b->buf[i];
        iov[i].iov_len = b->len[i];
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    do {
        sent = sendmmsg(fd, msgs, b->n, 0);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) {
        if (errno == EAGAIN || errno == ENOBUFS) {
            return 0;
        }
        if (errno != EPERM) {
            return -errno;
        }
        /* A local firewall dropped the first: to the receivers that is
         * loss, which they recover from; the rest may pass. */
        b->dropped++;
        sent = 1;
    }
    if ((unsigned)sent < b->n) {
        memmove(b->buf[0], b->buf[sent], (b->n - sent) * sizeof(b->buf[0]));
        memmove(b->len, b->len + sent, (b->n - sent) * sizeof(b->len[0]));
    }
    b->n -= sent;
    return sent;
}
