/*
 * snowflock: starting local clones with the parent's own command line.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef MIGRATION_SF_LAUNCH_H
#define MIGRATION_SF_LAUNCH_H

/* Ids of the secret objects vm-fork hands clones: this, then the fork id. */
#define SF_LAUNCH_SECRET_ID_PREFIX "sf-secret-"

/* This QEMU's own command line (/proc/self/cmdline), NULL-terminated. */
char **sf_launch_own_argv(Error **errp);

/* @value with its commas doubled, for a QEMU option's value. */
char *sf_launch_escape(const char *value);

/*
 * The command line of local clone @clone_id: @parent_argv rewritten as
 * described in sf-launch.c, then @clone_opts.  NULL-terminated; NULL with
 * errp set when the parent's command line cannot be duplicated.
 */
GPtrArray *sf_launch_clone_argv(const char *const *parent_argv,
                                unsigned fork_seq, uint32_t clone_id,
                                const char *const *clone_opts, Error **errp);

/*
 * posix_spawn this QEMU binary with @argv, output to @log_path.
 * @log_is_ours: the log is in vm-fork's own directory, and the clone may
 * remove it (and the directories above it, if that empties them) at a
 * clean exit.
 */
pid_t sf_launch_spawn(char *const *argv, const char *log_path,
                      bool log_is_ours, Error **errp);

#endif
