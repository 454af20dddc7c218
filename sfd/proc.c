/*
 * sfd: process identity (see proc.h).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "proc.h"

guint64 sfd_proc_starttime(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", pid);
    g_autofree char *s = NULL;
    g_auto(GStrv) f = NULL;
    char *p;

    if (pid <= 0 || !g_file_get_contents(path, &s, NULL, NULL) ||
        !(p = strrchr(s, ')'))) {
        return 0;
    }
    f = g_strsplit(p + 2, " ", 0);
    /* f[0] is field 3 (state); starttime is field 22. */
    if (g_strv_length(f) < 20 || f[0][0] == 'Z' || f[0][0] == 'X') {
        return 0;
    }
    return g_ascii_strtoull(f[19], NULL, 10);
}

gboolean sfd_proc_alive(pid_t pid, guint64 starttime)
{
    guint64 st = sfd_proc_starttime(pid);

    return st && (!starttime || st == starttime);
}

int sfd_proc_kill(pid_t pid, guint64 starttime, int sig)
{
    if (pid <= 0 || !sfd_proc_alive(pid, starttime)) {
        return -ESRCH;
    }
    return kill(pid, sig) < 0 ? -errno : 0;
}
