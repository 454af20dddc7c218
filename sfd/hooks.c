/*
 * sfd: the hook runner (see hooks.h).
 *
 * A hook runs in its own process group with a timeout; when it expires
 * the whole group is killed and the hook counts as failed.  stdout and
 * stderr go to sfd's log.  A missing or non-executable hook file counts
 * as success.
 *
 * Order is kept by a queue per VM (object/name): the head of the queue
 * is the hook running now; when it has finished and its caller was
 * told, the next one starts.  A job carries a copy of what it needs
 * (the XML, whether hooks are enabled, the timeout): the domain may be
 * redefined before a queued release hook runs.
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
#include "hooks.h"

typedef struct HookJob {
    char *key; /* object/name: the queue it waits in */
    char *object, *name, *op, *subop;
    char *desc;
    char *xml;
    gboolean enabled;
    int timeout_s;
    SfdHookDone done;
    gpointer opaque;
    /* While it runs: */
    GSubprocess *proc;
    GCancellable *cancel;
    guint timer;
    gboolean timed_out;
    gboolean skip_ok;
    char *skip_msg;
    pid_t pid;
} HookJob;

static GHashTable *queues; /* key -> GQueue of HookJob, head running */

static void job_start(HookJob *h);

static void job_free(HookJob *h)
{
    g_clear_object(&h->proc);
    g_clear_object(&h->cancel);
    g_free(h->key);
    g_free(h->object);
    g_free(h->name);
    g_free(h->op);
    g_free(h->subop);
    g_free(h->desc);
    g_free(h->xml);
    g_free(h->skip_msg);
    g_free(h);
}

guint sfd_hooks_pending(const char *object, const char *name)
{
    g_autofree char *key = g_strdup_printf("%s/%s", object, name);
    GQueue *q = queues ? g_hash_table_lookup(queues, key) : NULL;

    return q ? q->length : 0;
}

/* The running job is done: tell its caller, then start the next one. */
static void job_done(HookJob *h, gboolean ok, const char *msg)
{
    GQueue *q = g_hash_table_lookup(queues, h->key);
    g_autofree char *key = g_strdup(h->key);

    g_assert(q && g_queue_peek_head(q) == h);
    if (h->timer) {
        g_source_remove(h->timer);
        h->timer = 0;
    }
    if (h->done) {
        h->done(ok, msg, h->opaque);
    }
    /* done() may have queued more for this VM: they wait their turn. */
    g_queue_pop_head(q);
    job_free(h);
    if (g_queue_is_empty(q)) {
        g_hash_table_remove(queues, key);
    } else {
        job_start(g_queue_peek_head(q));
    }
}

/* A job that runs no process still finishes from the loop. */
static gboolean job_skip_idle(gpointer data)
{
    HookJob *h = data;

    job_done(h, h->skip_ok, h->skip_msg);
    return G_SOURCE_REMOVE;
}

static void job_finish_later(HookJob *h, gboolean ok, const char *msg)
{
    h->skip_ok = ok;
    h->skip_msg = g_strdup(msg);
    g_idle_add(job_skip_idle, h);
}

static void hook_setup(gpointer data)
{
    setpgid(0, 0);
    signal(SIGPIPE, SIG_DFL);
}

static gboolean hook_timeout(gpointer data)
{
    HookJob *h = data;

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
    HookJob *h = data;
    g_autoptr(GError) err = NULL;
    g_autofree char *msg = NULL;

    g_subprocess_wait_finish(h->proc, res, &err);
    if (h->timed_out) {
        msg = g_strdup_printf("hook %s timed out after %d s", h->desc,
                              h->timeout_s);
        job_done(h, FALSE, msg);
        return;
    }
    if (g_subprocess_get_if_exited(h->proc) &&
        g_subprocess_get_exit_status(h->proc) == 0) {
        job_done(h, TRUE, NULL);
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
    job_done(h, FALSE, msg);
}

static void hook_output_done(GObject *src, GAsyncResult *res, gpointer data)
{
    HookJob *h = data;
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

/* The XML goes in through a memfd, not a pipe: a hook that does not
 * read its stdin cannot block us, and no SIGPIPE either way. */
static int xml_memfd(const char *xml)
{
    int memfd = memfd_create("sfd-hook-xml", MFD_CLOEXEC);
    const char *p = xml;
    size_t left = xml ? strlen(xml) : 0;

    if (memfd < 0) {
        return -1;
    }
    while (left) {
        ssize_t w = write(memfd, p, left);
        if (w <= 0) {
            break;
        }
        p += w;
        left -= w;
    }
    lseek(memfd, 0, SEEK_SET);
    return memfd;
}

static void job_start(HookJob *h)
{
    g_autofree char *path = g_build_filename(sfd->hooks_dir, h->object, NULL);
    g_autoptr(GSubprocessLauncher) l = NULL;
    g_autoptr(GError) err = NULL;
    int memfd;

    if (!h->enabled || access(path, X_OK) != 0) {
        job_finish_later(h, TRUE, NULL);
        return;
    }
    g_info("hook %s", h->desc);
    h->cancel = g_cancellable_new();
    memfd = xml_memfd(h->xml);
    l = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE |
                                  G_SUBPROCESS_FLAGS_STDERR_MERGE);
    if (memfd >= 0) {
        g_subprocess_launcher_take_stdin_fd(l, memfd);
    }
    g_subprocess_launcher_set_child_setup(l, hook_setup, NULL, NULL);
    g_subprocess_launcher_setenv(l, "SFD_SOCKET", sfd->socket_path, TRUE);
    h->proc = g_subprocess_launcher_spawn(l, &err, path, h->name, h->op,
                                          h->subop, NULL);
    if (!h->proc) {
        g_autofree char *m =
            g_strdup_printf("hook %s: %s", h->desc, err->message);
        g_warning("%s", m);
        job_finish_later(h, FALSE, m);
        return;
    }
    h->pid = atoi(g_subprocess_get_identifier(h->proc));
    h->timer = g_timeout_add_seconds(h->timeout_s, hook_timeout, h);
    g_subprocess_communicate_async(h->proc, NULL, h->cancel, hook_output_done,
                                   h);
}

void sfd_hook_run(const char *object, const char *name, const char *op,
                  const char *subop, SfdDomain *d, SfdHookDone done,
                  gpointer opaque)
{
    HookJob *h = g_new0(HookJob, 1);
    GQueue *q;

    h->key = g_strdup_printf("%s/%s", object, name);
    h->object = g_strdup(object);
    h->name = g_strdup(name);
    h->op = g_strdup(op);
    h->subop = g_strdup(subop);
    h->desc = g_strdup_printf("%s %s %s %s", object, name, op, subop);
    h->xml = g_strdup(d ? d->xml : NULL);
    h->enabled = !d || d->hooks_enabled;
    h->timeout_s =
        d && d->hook_timeout_s ? d->hook_timeout_s : sfd->hook_timeout_s;
    h->done = done;
    h->opaque = opaque;

    if (!queues) {
        queues = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                       (GDestroyNotify)g_queue_free);
    }
    q = g_hash_table_lookup(queues, h->key);
    if (!q) {
        q = g_queue_new();
        g_hash_table_insert(queues, g_strdup(h->key), q);
    }
    g_queue_push_tail(q, h);
    if (q->length == 1) {
        job_start(h);
    }
}
