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
 * in address order.  A wrong secret or fork id gets ERROR(AUTH) and the
 * connection is closed: a wrong secret gets nothing.
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
} SfPageServerCloneStats;

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
/* Render stats as JSON (caller frees). */
char *sf_pageserver_stats_json(SfPageServer *s);
void sf_pageserver_free(SfPageServer *s);

const char *sf_clone_state_name(SfCloneState st);

#endif
