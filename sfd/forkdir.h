/*
 * sfd: fork directories.  A fork (QEMU's vm-fork with launch off) lives
 * in a directory under the run directory: its descriptor, its page
 * server's socket, and sfd's note of the page server's pid.  This file
 * creates the directory, calls vm-fork and reads its answer, and keeps
 * one object per directory with a count of what holds it (its clones,
 * a checkpoint, the fork being made).  When the last holder lets go
 * the page server is stopped (it normally exits by itself once its
 * clones hold all their pages; one waiting for a clone that never
 * started would not) and the directory removed.  That count is the one
 * answer to "is this fork still in use".
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_FORKDIR_H
#define SFD_FORKDIR_H

#include "sfd.h"
#include "store.h"

typedef struct SfdForkDir {
    char *path;
    guint64 fork_id;
    pid_t server_pid;
    guint64 server_starttime;
    GStrv clone_args; /* with the clone-id placeholder */
    gint64 pause_us;
    guint32 generation; /* the parent's fork number */
    int holders;
} SfdForkDir;

typedef void (*SfdForkDirDone)(SfdForkDir *fd, const char *err,
                               gpointer opaque);

/*
 * Fork parent into a new directory: vm-fork {clones, launch: false,
 * dir, idle-timeout (0: QEMU's default, -1: never)}.  done gets the fork
 * with one hold for the caller, or NULL and why; kind names the
 * directory (".f" forks, ".c" checkpoints).
 */
void sfd_forkdir_fork(SfdVm *parent, char kind, int clones, int idle_timeout_ms,
                      SfdForkDirDone done, gpointer opaque);
SfdForkDir *sfd_forkdir_hold(SfdForkDir *fd);
/* Let go; the last one stops the page server and removes the fork. */
void sfd_forkdir_release(SfdForkDir *fd);
SfdForkDir *sfd_forkdir_lookup(const char *path);
gboolean sfd_forkdir_in_use(const char *path);
gboolean sfd_forkdir_server_alive(const SfdForkDir *fd);

/* clone is a clone of fd (its fork fields are set): it holds fd until
 * sfd_forkdir_detach_clone(). */
void sfd_forkdir_attach_clone(SfdForkDir *fd, SfdVm *clone);
void sfd_forkdir_detach_clone(SfdVm *clone);
/* Append fd's clone arguments for QEMU clone id n to argv, with props
 * (",mac=...,link=held") added to the sf-clone object. */
void sfd_forkdir_clone_argv(SfdForkDir *fd, int n, const char *props,
                            GPtrArray *argv);

/* A record names a fork directory: the object for it (made when new),
 * held once more; NULL when path is not a fork directory of ours. */
SfdForkDir *sfd_forkdir_adopt(const char *path, guint64 fork_id,
                              pid_t server_pid, guint64 server_starttime,
                              GStrv clone_args);
/* After adoption: remove the fork directories of ours nothing holds. */
void sfd_forkdir_sweep(void);

/* A clone's fork members of its record (store.h). */
extern const SfdRecordSection sfd_forkdir_record;

#endif
