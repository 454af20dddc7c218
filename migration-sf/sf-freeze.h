/*
 * snowflock: freezing a running VM's RAM at the fork instant.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef MIGRATION_SF_FREEZE_H
#define MIGRATION_SF_FREEZE_H

#include "lib/sf-pagesrc.h"
#include "lib/sf-pageserver.h"
#include "lib/sf-transport.h"
#include "sf-forkdir.h"

/*
 * What the page server child is given, recorded before fork(): the page
 * server's configuration (vm-fork's, read in place, not copied) and the
 * resources the child takes over (the listener, and the multicast sender
 * the configuration names).
 */
typedef struct SfFreezeArgs {
    /* The child renumbers the fds it keeps, the group's in here too. */
    SfPageServerConfig *server;
    uint32_t nblocks;
    const SfBlockInfo *blocks;
    void *const *hosts;
    const bool *anon;            /* per block: scan for never-populated pages */
    SfListener *listener;        /* the child serves on it */
    int log_fd;                  /* the child's stdout and stderr */
    int stats_fd;                /* write end: its final figures, at exit */
    const SfForkDir *dir;        /* cleaned up at the child's exit */
} SfFreezeArgs;

/*
 * Fork the page server: the child holds a copy-on-write image of guest
 * RAM as of now and serves it; the parent gets its pid.  Call with the
 * VM stopped and outside any RCU read-side section (fork() runs QEMU's
 * atfork handlers, which take the RCU locks).
 */
pid_t sf_freeze_fork(SfFreezeArgs *a, Error **errp);

#endif
