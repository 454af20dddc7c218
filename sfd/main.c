/*
 * sfd: the snowflock host daemon (see sfd.h for the parts): options,
 * logging, wiring the parts together, and the main loop.
 *
 *   sfd [--socket PATH] [--state-dir DIR] [--hooks-dir DIR] [--qemu PATH]
 *       [--max-clones N] [--hook-timeout S] [--verbose]
 *
 * Runs in the foreground and logs to stderr.  Under systemd
 * (Type=notify) it says READY=1 once its socket listens and the VMs of
 * a previous run are adopted again.  SIGTERM and SIGINT stop sfd, not
 * the VMs: they keep running and the next sfd adopts them.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <glib-unix.h>

#include "sfd.h"
#include "commands.h"
#include "lifecycle.h"
#include "proto.h"
#include "store.h"

static gboolean verbose;

static GLogWriterOutput log_writer(GLogLevelFlags level,
                                   const GLogField *fields, gsize n,
                                   gpointer data)
{
    const char *msg = NULL, *lv;

    if ((level & G_LOG_LEVEL_DEBUG) && !verbose) {
        return G_LOG_WRITER_HANDLED;
    }
    for (gsize i = 0; i < n; i++) {
        if (!strcmp(fields[i].key, "MESSAGE")) {
            msg = fields[i].value;
        }
    }
    lv = level & G_LOG_LEVEL_ERROR      ? "error"
         : level & G_LOG_LEVEL_CRITICAL ? "critical"
         : level & G_LOG_LEVEL_WARNING  ? "warning"
         : level & G_LOG_LEVEL_MESSAGE  ? "notice"
         : level & G_LOG_LEVEL_INFO     ? "info"
                                        : "debug";
    fprintf(stderr, "sfd: %s: %s\n", lv, msg ? msg : "");
    return G_LOG_WRITER_HANDLED;
}

/* The sd_notify datagram protocol, without libsystemd. */
static void sd_notify(const char *state)
{
    const char *path = g_getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    socklen_t len;
    int fd;

    if (!path || !*path || strlen(path) >= sizeof(sa.sun_path)) {
        return;
    }
    if (path[0] != '/' && path[0] != '@') {
        return;
    }
    strcpy(sa.sun_path, path);
    if (path[0] == '@') {
        sa.sun_path[0] = '\0'; /* abstract namespace */
    }
    len = offsetof(struct sockaddr_un, sun_path) + strlen(path);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return;
    }
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa,
               len) < 0) {
        g_warning("sd_notify: %s", g_strerror(errno));
    }
    close(fd);
}

static gboolean on_quit_signal(gpointer data)
{
    g_message("stopping (the VMs keep running)");
    sd_notify("STOPPING=1");
    g_main_loop_quit(sfd->loop);
    return G_SOURCE_CONTINUE;
}

static int mkdirs(const char *path, int mode, char **err)
{
    if (g_mkdir_with_parents(path, mode) < 0) {
        *err = g_strdup_printf("%s: %s", path, g_strerror(errno));
        return -errno;
    }
    return 0;
}

int main(int argc, char **argv)
{
    g_autofree char *socket_path = NULL, *state_dir = NULL;
    g_autofree char *hooks_dir = NULL, *qemu = NULL;
    int max_clones = SFD_MAX_HOST_CLONES_DEFAULT, hook_timeout = 30;
    g_autoptr(GError) gerr = NULL;
    g_autofree char *err = NULL;
    g_autofree char *sockdir = NULL, *lock_path = NULL;
    GOptionEntry entries[] = {
        { "socket", 's', 0, G_OPTION_ARG_FILENAME, &socket_path,
          "the protocol socket (default /run/snowflock/sfd.sock)", "PATH" },
        { "state-dir", 'd', 0, G_OPTION_ARG_FILENAME, &state_dir,
          "domains and run records (default /var/lib/snowflock)", "DIR" },
        { "hooks-dir", 'k', 0, G_OPTION_ARG_FILENAME, &hooks_dir,
          "hook executables (default /etc/snowflock/hooks)", "DIR" },
        { "qemu", 'q', 0, G_OPTION_ARG_FILENAME, &qemu,
          "the snowflock QEMU (default " SFD_DEFAULT_QEMU ")", "PATH" },
        { "max-clones", 0, 0, G_OPTION_ARG_INT, &max_clones,
          "live clones allowed on this host (default 64)", "N" },
        { "hook-timeout", 0, 0, G_OPTION_ARG_INT, &hook_timeout,
          "seconds a hook may run (default 30)", "S" },
        { "verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "debug messages too",
          NULL },
        { NULL },
    };
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("- the snowflock host daemon");
    SfdServer *server;
    int lockfd;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &gerr)) {
        fprintf(stderr, "sfd: %s\n", gerr->message);
        return 2;
    }
    if (max_clones < 0 || hook_timeout < 1) {
        fprintf(stderr, "sfd: --max-clones must be >= 0 and --hook-timeout "
                        ">= 1\n");
        return 2;
    }
    g_log_set_writer_func(log_writer, NULL, NULL);
    signal(SIGPIPE, SIG_IGN);

    sfd = sfd_config_new();
    sfd->socket_path =
        g_strdup(socket_path ? socket_path : "/run/snowflock/sfd.sock");
    sfd->state_dir = g_strdup(state_dir ? state_dir : "/var/lib/snowflock");
    sfd->hooks_dir = g_strdup(hooks_dir ? hooks_dir : "/etc/snowflock/hooks");
    sfd->qemu = g_strdup(qemu ? qemu : g_getenv("SFD_QEMU") ?: SFD_DEFAULT_QEMU);
    sfd->max_clones = max_clones;
    sfd->hook_timeout_s = hook_timeout;
    sfd->run_dir = g_build_filename(sfd->state_dir, "run", NULL);
    sfd->domains_dir = g_build_filename(sfd->state_dir, "domains", NULL);
    /* Names this instance's interfaces: two sfds with different state
     * directories never touch each other's bridges. */
    sfd->tag = g_strdup_printf("%04x", g_str_hash(sfd->state_dir) & 0xffff);
    sfd->loop = g_main_loop_new(NULL, FALSE);

    sockdir = g_path_get_dirname(sfd->socket_path);
    if (mkdirs(sockdir, 0755, &err) < 0 ||
        mkdirs(sfd->run_dir, 0700, &err) < 0 ||
        mkdirs(sfd->domains_dir, 0700, &err) < 0) {
        g_critical("%s", err);
        return 1;
    }
    if (!g_file_test(sfd->qemu, G_FILE_TEST_IS_EXECUTABLE)) {
        g_warning("%s is not executable: starting VMs will fail", sfd->qemu);
    }
    /* One sfd per state directory. */
    lock_path = g_build_filename(sfd->state_dir, "sfd.lock", NULL);
    lockfd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB) < 0) {
        g_critical("%s: %s", lock_path,
                   errno == EWOULDBLOCK ? "another sfd uses this state "
                                          "directory"
                                        : g_strerror(errno));
        return 1;
    }

    sfd_lifecycle_init();
    sfd_store_load_domains();
    sfd_lifecycle_adopt_all();
    server = sfd_server_new(sfd->socket_path, 0660, sfd_commands, &err);
    if (!server) {
        g_critical("%s", err);
        return 1;
    }
    g_unix_signal_add(SIGTERM, on_quit_signal, NULL);
    g_unix_signal_add(SIGINT, on_quit_signal, NULL);
    g_message("sfd %s listening on %s (state %s, hooks %s, %u domains, "
              "%u VMs adopted, interfaces sf*-%s*)",
              SFD_VERSION, sfd->socket_path, sfd->state_dir, sfd->hooks_dir,
              g_hash_table_size(sfd->domains), g_hash_table_size(sfd->vms),
              sfd->tag);
    sd_notify("READY=1");
    g_main_loop_run(sfd->loop);

    sfd_server_free(server);
    close(lockfd);
    return 0;
}
