/*
 * snowflock: starting local clones with the parent's own command line.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A clone needs the parent's machine options (same machine, memory,
 * devices) but its own host resources.  We rerun /proc/self/cmdline with
 * these changes, documented in qapi-sf.json (vm-fork):
 *   - unix socket and file paths in -qmp, -monitor, -serial, -chardev,
 *     -pidfile, -D get the suffix ".fork<F>-clone<N>" (F counts this
 *     VM's forks from 1, so clone N of two forks never collide); -name
 *     gets "-<N>";
 *   - -S, -daemonize, -incoming, -loadvm and an earlier sf-clone object
 *     with its secret object are dropped (the parent may itself be a
 *     clone);
 *   - what cannot be duplicated on one host is refused, naming the option:
 *     tap/bridge/vhost-user networking, listening TCP ports, user-mode
 *     host forwarding, writable disks (clone disks come with sfd);
 *   - the fork's "-object secret,..." and "-object sf-clone,..." are
 *     appended.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "sf-launch.h"

#include <spawn.h>

static const char *const sf_drop_flags[] = { "-S", "-daemonize", NULL };
static const char *const sf_drop_with_arg[] = { "-incoming", "-loadvm",
                                                NULL };
/* Options whose argument holds host paths to rename per clone. */
static const char *const sf_path_opts[] = {
    "-qmp", "-monitor", "-serial", "-chardev", "-mon", "-parallel",
    "-debugcon", NULL
};

static bool sf_str_in(const char *s, const char *const *list)
{
    for (; *list; list++) {
        if (!strcmp(s, *list)) {
            return true;
        }
    }
    return false;
}

char **sf_launch_own_argv(Error **errp)
{
    g_autofree char *cmdline = NULL;
    gsize len;
    GPtrArray *args;

    if (!g_file_get_contents("/proc/self/cmdline", &cmdline, &len, NULL) ||
        !len) {
        error_setg(errp, "cannot read this QEMU's command line");
        return NULL;
    }
    args = g_ptr_array_new();
    for (gsize off = 0; off < len; off += strlen(cmdline + off) + 1) {
        g_ptr_array_add(args, g_strdup(cmdline + off));
    }
    g_ptr_array_add(args, NULL);
    return (char **)g_ptr_array_free(args, false);
}

char *sf_launch_escape(const char *value)
{
    g_auto(GStrv) parts = g_strsplit(value, ",", -1);

    return g_strjoinv(",,", parts);
}

/* The objects vm-fork hands a clone, from an earlier fork of our parent. */
static bool sf_is_fork_object(const char *val)
{
    return g_str_has_prefix(val, "sf-clone,") ||
           g_str_has_prefix(val, "secret,id=" SF_LAUNCH_SECRET_ID_PREFIX);
}

static char *sf_opt_name(const char *arg)
{
    /* QEMU accepts --opt as -opt. */
    return g_strdup(arg[1] == '-' ? arg + 1 : arg);
}

/*
 * Rename paths inside one option value: "unix:P", "file:P" prefixes and
 * "path=P", "logfile=P" keys.  P ends at the next comma.
 */
static char *sf_rename_paths(const char *value, const char *suffix,
                             Error **errp)
{
    g_auto(GStrv) parts = g_strsplit(value, ",", -1);
    static const char *const prefixes[] = { "unix:", "file:", NULL };
    static const char *const keys[] = { "path=", "logfile=", NULL };

    for (char **p = parts; *p; p++) {
        for (const char *const *k = prefixes; *k; k++) {
            if (p == parts && g_str_has_prefix(*p, *k)) {
                char *n = g_strconcat(*p, suffix, NULL);
                g_free(*p);
                *p = n;
            }
        }
        for (const char *const *k = keys; *k; k++) {
            if (g_str_has_prefix(*p, *k)) {
                char *n = g_strconcat(*p, suffix, NULL);
                g_free(*p);
                *p = n;
            }
        }
        if (p == parts && g_str_has_prefix(*p, "tcp:") &&
            (strstr(value, "server") || strstr(value, "listen"))) {
            error_setg(errp, "'%s' listens on a TCP port, which clones on "
                       "this host cannot share", value);
            return NULL;
        }
        if (g_str_has_prefix(*p, "port=") && strstr(value, "server")) {
            error_setg(errp, "'%s' listens on a TCP port, which clones on "
                       "this host cannot share", value);
            return NULL;
        }
    }
    return g_strjoinv(",", parts);
}

static bool sf_check_netdev(const char *value, Error **errp)
{
    static const char *const bad[] = { "tap", "bridge", "vhost-user",
                                       "vhost-vdpa", "l2tpv3", "af-xdp",
                                       "stream", "dgram", NULL };
    g_autofree char *type = g_strndup(value, strcspn(value, ","));

    if (g_str_has_prefix(type, "type=")) {
        memmove(type, type + 5, strlen(type + 5) + 1);
    }
    if (sf_str_in(type, bad) ||
        (!strcmp(type, "socket") && strstr(value, "listen="))) {
        error_setg(errp, "network backend '%s' cannot be duplicated for a "
                   "local clone; start clones with launch=false and their "
                   "own networking (or through sfd)", type);
        return false;
    }
    if (strstr(value, "hostfwd=")) {
        error_setg(errp, "user networking with hostfwd cannot be duplicated "
                   "for a local clone (the host port is taken)");
        return false;
    }
    return true;
}

static bool sf_check_disk(const char *opt, const char *value, Error **errp)
{
    bool has_file = strstr(value, "file=") || strstr(value, "filename=");
    bool ro = strstr(value, "readonly=on") || strstr(value, "read-only=on") ||
              strstr(value, "snapshot=on");

    if (has_file && !ro) {
        error_setg(errp, "%s %s: a writable disk cannot be shared with "
                   "clones; make it readonly=on or start clones yourself "
                   "(launch=false)", opt, value);
        return false;
    }
    return true;
}

GPtrArray *sf_launch_clone_argv(const char *const *parent_argv,
                                unsigned fork_seq, uint32_t clone_id,
                                const char *const *clone_opts, Error **errp)
{
    g_autoptr(GPtrArray) out = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *suffix = g_strdup_printf(".fork%u-clone%u", fork_seq,
                                              clone_id);

    g_ptr_array_add(out, g_strdup(parent_argv[0]));
    for (int i = 1; parent_argv[i]; i++) {
        const char *arg = parent_argv[i];
        const char *val = parent_argv[i + 1];
        g_autofree char *opt = NULL;
        bool has_val;

        if (arg[0] != '-') {
            g_ptr_array_add(out, g_strdup(arg));
            continue;
        }
        opt = sf_opt_name(arg);
        /* An option takes the next word unless that is an option itself. */
        has_val = val && val[0] != '-';

        if (sf_str_in(opt, sf_drop_flags)) {
            continue;
        }
        if (sf_str_in(opt, sf_drop_with_arg) && has_val) {
            i++;
            continue;
        }
        if (!has_val) {
            g_ptr_array_add(out, g_strdup(arg));
            continue;
        }
        i++;
        if (!strcmp(opt, "-object") && sf_is_fork_object(val)) {
            continue;
        }
        g_ptr_array_add(out, g_strdup(arg));
        if (sf_str_in(opt, sf_path_opts)) {
            char *v = sf_rename_paths(val, suffix, errp);
            if (!v) {
                return NULL;
            }
            g_ptr_array_add(out, v);
        } else if (!strcmp(opt, "-pidfile") || !strcmp(opt, "-D")) {
            g_ptr_array_add(out, g_strconcat(val, suffix, NULL));
        } else if (!strcmp(opt, "-name")) {
            const char *rest = strchr(val, ',');
            const char *name = g_str_has_prefix(val, "guest=") ? val + 6 : val;
            int nlen = rest ? rest - name : (int)strlen(name);

            g_ptr_array_add(out, g_strdup_printf("%s%.*s-%u%s",
                                                 name == val ? "" : "guest=",
                                                 nlen, name, clone_id,
                                                 rest ? rest : ""));
        } else if (!strcmp(opt, "-netdev") || !strcmp(opt, "-nic") ||
                   !strcmp(opt, "-net")) {
            if (!sf_check_netdev(val, errp)) {
                return NULL;
            }
            g_ptr_array_add(out, g_strdup(val));
        } else if (!strcmp(opt, "-drive") || !strcmp(opt, "-blockdev")) {
            if (!sf_check_disk(opt, val, errp)) {
                return NULL;
            }
            g_ptr_array_add(out, g_strdup(val));
        } else {
            g_ptr_array_add(out, g_strdup(val));
        }
    }
    for (int i = 0; clone_opts[i]; i++) {
        g_ptr_array_add(out, g_strdup(clone_opts[i]));
    }
    g_ptr_array_add(out, NULL);
    return g_steal_pointer(&out);
}

pid_t sf_launch_spawn(char *const *argv, const char *log_path,
                      bool log_is_ours, Error **errp)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    g_autofree char *exe = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *spawn_env = NULL;
    g_autofree char *log_env = NULL;
    g_autoptr(GPtrArray) envp = g_ptr_array_new();
    pid_t pid;
    int ret;

    if (!exe) {
        error_setg(errp, "cannot find this QEMU's binary");
        return -1;
    }
    /* The clone measures "start to first instruction" from here. */
    spawn_env = g_strdup_printf("SNOWFLOCK_SPAWN_NS=%" PRId64,
                                g_get_monotonic_time() * 1000);
    for (char **e = environ; *e; e++) {
        if (!g_str_has_prefix(*e, "SNOWFLOCK_SPAWN_NS=") &&
            !g_str_has_prefix(*e, "SNOWFLOCK_CLONE_LOG=") &&
            !g_str_has_prefix(*e, "G_SLICE=")) {
            g_ptr_array_add(envp, *e);
        }
    }
    g_ptr_array_add(envp, spawn_env);
    /* The clone removes its log at a clean exit, even after we are gone. */
    if (log_is_ours) {
        log_env = g_strdup_printf("SNOWFLOCK_CLONE_LOG=%s", log_path);
        g_ptr_array_add(envp, log_env);
    }
    /*
     * A clone may be forked in turn: keep GLib < 2.76's slice allocator,
     * whose lock a fork()ed page server could inherit held, out of it.
     */
    g_ptr_array_add(envp, (char *)"G_SLICE=always-malloc");
    g_ptr_array_add(envp, NULL);

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null",
                                     O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log_path,
                                     O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW,
                                     0600);
    posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
    posix_spawnattr_init(&attr);
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    /* Its own session: clones live on when the parent or its tty goes. */
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID |
                             POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    ret = posix_spawn(&pid, exe, &fa, &attr, argv,
                      (char *const *)envp->pdata);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (ret) {
        error_setg_errno(errp, ret, "cannot start clone %s", exe);
        return -1;
    }
    return pid;
}
