/*
 * snowflock page server: serves one fork's frozen image to its clones.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Single-threaded poll() loop over a listener and its connections; it never
 * touches QEMU state, so it can run in the process fork()ed from the parent
 * QEMU at the fork instant (where only this thread exists) as well as in a
 * thread of a test or a standalone tool.
 *
 * Lifetime: the image is released (sf_pageserver_run() returns) once every
 * clone id in 1..max_clones has either sent DONE (holds all its pages) or
 * ended (its connection closed and it did not come back within
 * reconnect_grace_ms), or when no clone has been connected for
 * idle_timeout_ms, or on sf_pageserver_stop().
 *
 * Per request: range-checked against the source, then answered with runs
 * of ZERO (pages known or found to be zero, never sent) and DATA messages
 * in address order on the clone's connection, or, with a multicast group,
 * queued once for the group (sf-emitter.h) unless the clone asks for a
 * unicast answer.  A wrong secret or fork id gets ERROR(AUTH) and the
 * connection is closed: a wrong secret gets nothing.  On a network
 * endpoint every message is sealed (sf-seal.h).
 *
 * Files: sf-pageserver.c (the loop, accepting, timers, lifetime),
 * sf-ps-serve.c (what each client message does), sf-ps-conn.c (sending,
 * failing, dropping a connection), sf-ps-stats.c (the log and the stats
 * file); sf-pageserver-int.h is their shared state.
 */
#ifndef SF_PAGESERVER_H
#define SF_PAGESERVER_H

#include <glib.h>
#include <stdint.h>

#include "sf-pagesrc.h"
#include "sf-transport.h"
#include "sf-wire.h"

/*
 * The one configuration of a page server, filled once by whoever starts it
 * (vm-fork in sf-fork.c, the tool, tests) and read in place, never copied:
 * it must outlive the server.
 */
typedef struct SfPageServerConfig {
    uint64_t fork_id;
    uint8_t secret[SF_WIRE_SECRET_LEN];
    uint32_t max_clones;    /* clone ids 1..max_clones are accepted */
    int reconnect_grace_ms; /* default 3000 when 0 */
    int idle_timeout_ms;    /* < 0: never; default 600000 when 0 */
    const char *stats_path; /* JSON stats written atomically, or NULL */
    const char *log_prefix; /* e.g. "sf-pageserver fork=3" */
    /*
     * Multicast (mcast_group 0: none): answers go to this group, one
     * send for every clone, unless a request asks for a unicast answer.
     * mcast_fd is a sender the caller opened (sf_mcast_sender(), which
     * also gives mcast_mtu), so that whoever starts the server hears
     * why a group cannot be used; the server owns it from new() on.
     * Group and port in host byte order, told to clones in WELCOME.
     */
    uint32_t mcast_group;
    uint16_t mcast_port;
    int mcast_fd;
    unsigned mcast_mtu;
    /* The fork's descriptor, handed out with DESC_GET (NULL: none). */
    const char *descriptor_path;
} SfPageServerConfig;

typedef enum SfCloneState {
    SF_CLONE_WAITING = 0, /* not connected yet */
    SF_CLONE_CONNECTED,
    SF_CLONE_DISCONNECTED, /* within the reconnect grace */
    SF_CLONE_DONE,         /* sent DONE: holds every page */
    SF_CLONE_ENDED,        /* gone for good */
} SfCloneState;

typedef struct SfPageServerCloneStats {
    uint32_t clone_id;
    SfCloneState state;
    uint64_t requests;
    uint64_t pages_sent; /* DATA pages */
    uint64_t zero_pages; /* answered with ZERO */
    uint64_t bytes_sent; /* wire bytes, headers included */
    uint32_t connects;
    uint64_t mcast_requests;   /* answered on the group */
    uint64_t unicast_requests; /* asked to be answered on the connection */
    uint64_t pushes_dropped;   /* group pushes dropped for a demand */
    uint64_t workset_pushed;   /* pages pushed from the working set */
} SfPageServerCloneStats;

/* The fork's multicast output, for the stats (sf-emitter.h). */
typedef struct SfPageServerMcastStats {
    bool active; /* answering on the group */
    bool failed; /* its socket failed: given up */
    uint64_t data_pages;
    uint64_t zero_pages;
    uint64_t datagrams;
    uint64_t bytes;
    uint64_t suppressed;
    uint64_t pacer_waits;
    uint64_t dropped;
    double rate;
    int64_t window_us;
    unsigned frags;
} SfPageServerMcastStats;

typedef struct SfPageServer SfPageServer;

/* Takes ownership of l and src; keeps cfg (see SfPageServerConfig). */
SfPageServer *sf_pageserver_new(SfListener *l, SfPageSource *src,
                                const SfPageServerConfig *cfg);
/* Serve until the lifetime rule above says stop.  0, or -errno on a fatal
 * listener error. */
int sf_pageserver_run(SfPageServer *s);
/* Async-signal-safe and thread-safe: make run() return soon. */
void sf_pageserver_stop(SfPageServer *s);
/* Snapshot of per-clone stats (index i is clone id i + 1). */
void sf_pageserver_get_stats(SfPageServer *s, SfPageServerCloneStats *out,
                             uint32_t n);
/* The multicast output's figures (active false: no group). */
void sf_pageserver_mcast_stats(SfPageServer *s, SfPageServerMcastStats *m);
/* Render stats as JSON (caller frees). */
char *sf_pageserver_stats_json(SfPageServer *s);
void sf_pageserver_free(SfPageServer *s);

const char *sf_clone_state_name(SfCloneState st);

#endif
