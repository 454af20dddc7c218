/*
 * snowflock: lazy RAM for clones (userfaultfd fault thread and placement).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef MIGRATION_SF_LAZYRAM_H
#define MIGRATION_SF_LAZYRAM_H

#include "exec/cpu-common.h"
#include "lib/sf-wire.h"

typedef struct SfLazyRam SfLazyRam;

/* One guest RAM block, in descriptor order (the page server's order). */
typedef struct SfLazyBlock {
    RAMBlock *rb;
    void *host;
    uint64_t length;
} SfLazyBlock;

/*
 * The one configuration of a clone's lazy RAM: the sf-clone object's
 * properties are stored here directly, and sf_lazyram_start() keeps a
 * pointer to it, so it must live as long as the clone.
 */
typedef struct SfLazyRamConfig {
    const char *server;                  /* page server endpoint */
    uint8_t secret[SF_WIRE_SECRET_LEN];
    uint64_t fork_id;
    uint32_t clone_id;
    bool prefetch;                       /* background push on */
    bool multicast;                      /* join the fork's group if any */
    uint32_t retry_ms;                   /* give up on the server after */
    /*
     * Called from the fault thread, which never takes the BQL: once when
     * a page cannot be had (the clone must stop), once when every page is
     * present.
     */
    void (*failed)(const char *reason, void *opaque);
    void (*complete)(void *opaque);
    void *opaque;
} SfLazyRamConfig;

typedef struct SfLazyRamStats {
    bool complete;
    bool failed;
    uint64_t pages_total;
    uint64_t pages_present;
    uint64_t pages_fetched;   /* placed with data, by either way */
    uint64_t zero_pages;      /* placed as zero */
    uint64_t avoided_pages;   /* placed as zero from the fork's zero map */
    uint64_t workset_pages;   /* placed from the working set's push */
    uint64_t pushed_pages;    /* arrived by the background push */
    uint64_t bytes;           /* on the connection */
    uint64_t faults;
    uint64_t reconnects;
    uint64_t fault_p50_us;
    uint64_t fault_p99_us;
    uint64_t requests;
    uint64_t retries;         /* requests given up on and asked again */
    uint64_t unicast_asks;    /* asked to be answered on the connection */
    uint64_t unrequested;     /* pages that came without being asked */
    int64_t rtt_us;           /* smoothed request round trip (0: none) */
    /* The fork's multicast group, when this clone receives it. */
    bool mcast;
    char mcast_group[32];
    uint64_t mcast_pages;     /* placed from the group */
    uint64_t mcast_datagrams;
    uint64_t mcast_bytes;
    uint64_t mcast_redundant; /* pages it sent that were here already */
    uint64_t mcast_auth_failed;
    uint64_t mcast_replayed;
    uint64_t mcast_rejected;  /* not sealed for this fork, or malformed */
    uint64_t mcast_lost;      /* datagrams of the server never seen */
    uint32_t mcast_loss_ppm;
    uint32_t mcast_rx_kbps;
} SfLazyRamStats;

/*
 * Make every page of @blocks missing, register them with userfaultfd,
 * connect to the page server and start the fault thread.  Must be called
 * before anything reads guest RAM (device state loading does: virtio
 * reads vring indices).  Guest RAM discards are disabled until complete.
 * Keeps @cfg (see SfLazyRamConfig).
 */
SfLazyRam *sf_lazyram_start(const SfLazyBlock *blocks, uint32_t nblocks,
                            const SfLazyRamConfig *cfg, Error **errp);
void sf_lazyram_get_stats(SfLazyRam *lr, SfLazyRamStats *st);

#endif
