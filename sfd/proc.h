/*
 * sfd: process identity.  A pid alone may be recycled; a pid together
 * with its start time (/proc/PID/stat field 22) names one process, so
 * sfd never adopts or signals a process that merely took an old pid.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_PROC_H
#define SFD_PROC_H

#include <sys/types.h>
#include <glib.h>

/* The start time of a live (not zombie) process, or 0. */
guint64 sfd_proc_starttime(pid_t pid);
/* Whether pid runs and, when starttime is not 0, started then. */
gboolean sfd_proc_alive(pid_t pid, guint64 starttime);
/* Signal pid if it is still that process: 0 or -errno (-ESRCH). */
int sfd_proc_kill(pid_t pid, guint64 starttime, int sig);

#endif
