/*
 * snowflock: freezing a running VM's RAM at the fork instant.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef MIGRATION_SF_FREEZE_H
#define MIGRATION_SF_FREEZE_H

#include "lib/sf-pagesrc.h"
#include "lib/sf-transport.h"

/* Everything the page server child needs, recorded before fork(). */
typedef struct SfFreezeArgs {
    uint64_t fork_id;
    uint8_t secret[SF_WIRE_SECRET_LEN];
    uint32_t max_clones;
    int idle_timeout_ms;
    uint32_t nblocks;
    const SfBlockInfo *blocks;
    void *const *hosts;
    SfListener *listener;        /* the child serves on it */
    int log_fd;                  /* the child's stdout and stderr */
    const char *stats_path;
    const char *log_prefix;
} SfFreezeArgs;

/*
 * Fork the page server: the child holds a copy-on-write image of guest
 * RAM as of now and serves it; the parent gets its pid.  Call with the
 * VM stopped and outside any RCU read-side section (fork() runs QEMU's
 * atfork handlers, which take the RCU locks).
 */
pid_t sf_freeze_fork(const SfFreezeArgs *a, Error **errp);

#endif
