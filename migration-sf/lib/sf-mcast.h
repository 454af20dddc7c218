/*
 * snowflock multicast sockets: plain IPv4 UDP multicast, as SnowFlock's
 * mcdist used: unreliable and unordered; what is lost is asked for
 * again (sf-fetch.h).  A sender names its interface by address
 * (IP_MULTICAST_IF), so no multicast route is needed; a receiver joins
 * on its interface's address.  Datagrams never exceed the path MTU:
 * pages are cut into fragments by us (FRAG, sf-wire.h), never by IP,
 * which would lose a whole datagram for one lost fragment, silently.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SF_MCAST_H
#define SF_MCAST_H

#include <glib.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sf-seal.h"
#include "sf-wire.h"

#define SF_MCAST_BATCH 64
/* The largest datagram we make: a whole page in one FRAG, sealed. */
#define SF_MCAST_MAX_DGRAM                                                     \
    (SF_SEAL_OVERHEAD + SF_WIRE_HDR_SIZE + SF_WIRE_FRAG_LEN + SF_WIRE_PAGE_SIZE)

/* A fork's group: all in host byte order. */
typedef struct SfMcastGroup {
    uint32_t group; /* 224.0.0.0/4 */
    uint16_t port;
    uint32_t ifaddr; /* the local interface's address (0: any) */
    uint8_t ttl;     /* 1: this segment only */
} SfMcastGroup;

/* "GROUP:PORT": false (with *why) when it is not a multicast group. */
bool sf_mcast_parse(const char *s, SfMcastGroup *g, const char **why);
/* Printable "239.1.2.3:7000". */
char *sf_mcast_to_string(uint32_t group, uint16_t port);

/*
 * A non-blocking socket sending to g (connected to it), with a large
 * send buffer; *mtu is the path MTU towards the group.  -1 with err.
 */
int sf_mcast_sender(const SfMcastGroup *g, unsigned *mtu, GError **err);
/* A non-blocking socket receiving g's datagrams on ifaddr, with a large
 * receive buffer.  -1 with err. */
int sf_mcast_receiver(const SfMcastGroup *g, GError **err);
/* Fragments per page so that a sealed FRAG fits mtu (0: it cannot). */
unsigned sf_mcast_frags_for_mtu(unsigned mtu);

/* Datagrams gathered for one sendmmsg(). */
typedef struct SfMcastBatch {
    unsigned n;
    uint64_t dropped; /* refused by a local firewall (EPERM) */
    size_t len[SF_MCAST_BATCH];
    uint8_t buf[SF_MCAST_BATCH][SF_MCAST_MAX_DGRAM];
} SfMcastBatch;

/* The next free datagram buffer, or NULL when the batch is full. */
static inline uint8_t *sf_mcast_batch_next(SfMcastBatch *b)
{
    return b->n < SF_MCAST_BATCH ? b->buf[b->n] : NULL;
}

/*
 * Send the batch on fd (a connected sender): returns how many went (the
 * rest stay at the front of the batch, moved), or -errno.  A full socket
 * buffer sends fewer, not an error; a datagram a local firewall refuses
 * (EPERM) is dropped and counted, as the network would lose it.
 */
int sf_mcast_flush(int fd, SfMcastBatch *b);

#endif
