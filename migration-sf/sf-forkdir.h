/*
 * snowflock: a fork's directory and the files in it.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef MIGRATION_SF_FORKDIR_H
#define MIGRATION_SF_FORKDIR_H

#include "lib/sf-wire.h"

typedef struct SfForkDir {
    char *path;
    /*
     * vm-fork chose the place ($TMPDIR/snowflock-<pid>/fork-<n>): every
     * file in it is ours, and so are it and run_dir.  Otherwise the
     * caller owns the directory and what it keeps there; we remove only
     * what must not outlive the fork (the secret, the socket).
     */
    bool owned;
    bool created;            /* did not exist before this fork */
    char *run_dir;           /* owned: $TMPDIR/snowflock-<pid> */
    char *descriptor;
    char *secret;
    char *stats;
    char *stats_tmp;         /* the page server writes here, then renames */
    char *log;               /* the page server's */
    char *socket;            /* the page server's unix socket, or NULL */
} SfForkDir;

/*
 * @dir, or the default place for this QEMU's fork number @seq; created
 * mode 0700.
 */
SfForkDir *sf_forkdir_create(const char *dir, unsigned seq, Error **errp);
void sf_forkdir_free(SfForkDir *d);

/* The secret file, mode 0600 from the start (O_EXCL: never an old one). */
bool sf_forkdir_write_secret(SfForkDir *d,
                             const uint8_t secret[SF_WIRE_SECRET_LEN],
                             Error **errp);
/* The page server's log, for appending; -1 with errp set. */
int sf_forkdir_open_log(SfForkDir *d, Error **errp);
/* Where launched clone @clone_id logs (caller frees). */
char *sf_forkdir_clone_log(const SfForkDir *d, uint32_t clone_id);

/*
 * A fork that failed before vm-fork answered: remove every file it made
 * and the directory if this fork created it.
 */
void sf_forkdir_abandon(SfForkDir *d, uint32_t nclones);
/*
 * The page server has ended: remove what its end makes pointless (see
 * sf-forkdir.c).  Runs in the page server child at its exit, so plain
 * system calls only; and in the parent for a server that was killed.
 */
void sf_forkdir_server_ended(const SfForkDir *d, bool failed);
/* Remove the directory, and this QEMU's run directory, if now empty. */
void sf_forkdir_release(const SfForkDir *d);
/* This QEMU's run directory, if empty (at exit). */
void sf_forkdir_release_run_dir(void);

/*
 * Keep the log of something that failed: its last SF_FORKDIR_KEPT_BYTES
 * stay, and of all the logs this QEMU kept, only the newest
 * SF_FORKDIR_KEPT_LOGS do (older ones are removed, with their directory
 * if that empties it).  Only for logs in a directory vm-fork owns.
 */
#define SF_FORKDIR_KEPT_LOGS 8
#define SF_FORKDIR_KEPT_BYTES (256 * 1024)
void sf_forkdir_keep_log(const SfForkDir *d, const char *path);

#endif
