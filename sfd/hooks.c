/*
 * sfd: libvirt-style hooks.
 *
 * HOOKS_DIR/domain is called for domains, HOOKS_DIR/clone for clones:
 *
 *   HOOK NAME OPERATION SUB-OP        (the domain XML on stdin)
 *
 *   prepare begin   before anything is set up; failing aborts the start
 *                   (or fork) and its output is the error message
 *   start   begin   network ready, just before QEMU is spawned; failing
 *                   aborts too
 *   started begin   QEMU runs and answers QMP
 *   stopped end     QEMU has exited
 *   release end     everything of the VM is released (also after a
 *                   failed prepare or start)
 *
 * A hook runs in its own process group with a timeout; when it expires
 * the whole group is killed and the hook counts as failed.  stdout and
 * stderr go to sfd's log.  A missing or non-executable hook file counts
 * as success.  Hooks run asynchronously: the daemon keeps serving while
 * one runs.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <gio/gio.h>

#include "sfd.h"

typedef struct HookRun {
    char *desc;
    GSubprocess *proc;
    GCancellable *cancel;
    guint timer;
    gboolean timed_out;
    pid_t pid;
    int timeout_s;
    SfdHookDone done;
    gpointer opaque;
} HookRun;

typedef struct HookSkip {
    gboolean ok;
    char *msg;
    SfdHookDone done;
    gpointer opaque;
} HookSkip;

static gboolean hook_skip_idle(gpointer data)
{
    HookSkip *s = data;

    s->done(s->ok, s->msg, s->opaque);
    g_free(s->msg);
    g_free(s);
    return G_SOURCE_REMOVE;
}

/* Answer from the loop, never before sfd_hook_run() returns. */
static void hook_answer_later(gboolean ok, const char *msg, SfdHookDone done,
                              gpointer opaque)
{
    HookSkip *s;

    if (!done) {
        return;
    }
    s = g_new0(HookSkip, 1);
    s->ok = ok;
    s->msg = g_strdup(msg);
    s->done = done;
    s->opaque = opaque;
    g_idle_add(hook_skip_idle, s);
}

static void hook_finish(HookRun *h, gboolean ok, const char *msg)
{
    if (h->timer) {
        g_source_remove(h->timer);
    }
    if (h->done) {
        h->done(ok, msg, h->opaque);
    }
    g_clear_object(&h->proc);
    g_clear_object(&h->cancel);
    g_free(h->desc);
    g_free(h);
}

static void hook_setup(gpointer data)
{
    setpgid(0, 0);
    signal(SIGPIPE, SIG_DFL);
}

static gboolean hook_timeout(gpointer data)
{
    HookRun *h = data;

    h->timer = 0;
    h->timed_out = TRUE;
    g_warning("hook %s: timed out after %d s, killing it", h->desc,
              h->timeout_s);
    if (h->pid > 0) {
        kill(-h->pid, SIGKILL); /* its children too */
    }
    g_cancellable_cancel(h->cancel);
    return G_SOURCE_REMOVE;
}

static void hook_wait_done(GObject *src, GAsyncResult *res, gpointer data)
{
    HookRun *h = data;
    g_autoptr(GError) err = NULL;
    g_autofree char *msg = NULL;

    g_subprocess_wait_finish(h->proc, res, &err);
    if (h->timed_out) {
        msg = g_strdup_printf("hook %s timed out after %d s", h->desc,
                              h->timeout_s);
        hook_finish(h, FALSE, msg);
        return;
    }
    if (g_subprocess_get_if_exited(h->proc) &&
        g_subprocess_get_exit_status(h->proc) == 0) {
        hook_finish(h, TRUE, NULL);
        return;
    }
    /* The message of a failed hook is what it printed. */
    msg = g_object_steal_data(G_OBJECT(h->proc), "sfd-output");
    if (!msg || !*g_strstrip(msg)) {
        g_free(msg);
        msg = g_strdup_printf("hook %s failed with status %d", h->desc,
                              g_subprocess_get_if_exited(h->proc)
                                  ? g_subprocess_get_exit_status(h->proc)
                                  : 128 + g_subprocess_get_term_sig(h->proc));
    }
    hook_finish(h, FALSE, msg);
}

static void hook_output_done(GObject *src, GAsyncResult *res, gpointer data)
{
    HookRun *h = data;
    g_autoptr(GBytes) out = NULL;
    g_autoptr(GError) err = NULL;

    g_subprocess_communicate_finish(h->proc, res, &out, NULL, &err);
    if (out && g_bytes_get_size(out)) {
        gsize n;
        const char *d = g_bytes_get_data(out, &n);
        g_autofree char *text = g_utf8_make_valid(d, MIN(n, 64 * 1024));
        g_auto(GStrv) lines = g_strsplit(g_strchomp(text), "\n", -1);
        for (char **l = lines; *l; l++) {
            g_message("hook %s: %s", h->desc, *l);
        }
        g_object_set_data_full(G_OBJECT(h->proc), "sfd-output", g_strdup(text),
                               g_free);
    }
    /* Output ended (or the timeout cancelled it): now the exit. */
    g_subprocess_wait_async(h->proc, NULL, hook_wait_done, h);
}

void sfd_hook_run(const char *object, const char *name, const char *op,
                  const char *subop, SfdDomain *d, SfdHookDone done,
                  gpointer opaque)
{
    g_autofree char *path = g_build_filename(sfd->hooks_dir, object, NULL);
    g_autoptr(GSubprocessLauncher) l = NULL;
    g_autoptr(GError) err = NULL;
    HookRun *h;
    int memfd;

    if ((d && !d->hooks_enabled) || access(path, X_OK) != 0) {
        hook_answer_later(TRUE, NULL, done, opaque);
        return;
    }
    h = g_new0(HookRun, 1);
    h->desc = g_strdup_printf("%s %s %s %s", object, name, op, subop);
    h->done = done;
    h->opaque = opaque;
    h->timeout_s =
        d && d->hook_timeout_s ? d->hook_timeout_s : sfd->hook_timeout_s;
    h->cancel = g_cancellable_new();
    g_info("hook %s", h->desc);

    /* The XML goes in through a memfd, not a pipe: a hook that does not
     * read its stdin cannot block us, and no SIGPIPE either way. */
    memfd = memfd_create("sfd-hook-xml", MFD_CLOEXEC);
    if (memfd >= 0 && d && d->xml) {
        const char *p = d->xml;
        size_t left = strlen(p);
        while (left) {
            ssize_t w = write(memfd, p, left);
            if (w <= 0) {
                break;
            }
            p += w;
            left -= w;
        }
        lseek(memfd, 0, SEEK_SET);
    }
    l = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE |
                                  G_SUBPROCESS_FLAGS_STDERR_MERGE);
    if (memfd >= 0) {
        g_subprocess_launcher_take_stdin_fd(l, memfd);
    }
    g_subprocess_launcher_set_child_setup(l, hook_setup, NULL, NULL);
    g_subprocess_launcher_setenv(l, "SFD_SOCKET", sfd->socket_path, TRUE);
    h->proc = g_subprocess_launcher_spawn(l, &err, path, name, op, subop, NULL);
    if (!h->proc) {
        g_autofree char *m =
            g_strdup_printf("hook %s: %s", h->desc, err->message);
        g_warning("%s", m);
        h->done = NULL;
        hook_answer_later(FALSE, m, done, opaque);
        hook_finish(h, FALSE, m);
        return;
    }
    h->pid = atoi(g_subprocess_get_identifier(h->proc));
    h->timer = g_timeout_add_seconds(h->timeout_s, hook_timeout, h);
    g_subprocess_communicate_async(h->proc, NULL, h->cancel, hook_output_done,
                                   h);
}
