/*
 * snowflock: this VM's forks after vm-fork answered.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A fork's page server and launched clones end on their own.  This file
 * reaps them, keeps the logs of those that failed and removes the fork's
 * directory once nothing in it is needed (sf-forkdir.c), emits
 * SF_CLONE_EXITED, and answers query-sf-forks, with the page server's
 * final figures once it has ended (it hands them over through a pipe).
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-sf.h"
#include "qapi/qapi-events-sf.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "qobject/qjson.h"
#include "system/system.h"
#include "sf-forks.h"
#include "trace.h"

typedef struct SfForkRecord {
    uint64_t id;
    SfForkDir *dir;
    char *server;
    pid_t server_pid;
    bool server_alive;
    int stats_fd;                /* read end: the server's last figures */
    char *final_stats;           /* those figures, once it has ended */
    GList *clones;               /* SfLaunchedClone */
} SfForkRecord;

typedef struct SfLaunchedClone {
    SfForkRecord *fork;
    uint32_t clone_id;
    pid_t pid;
    bool running;
    char *log;
} SfLaunchedClone;

static GList *sf_forks;          /* SfForkRecord, BQL */
/* In the exit notifier: monitors are gone, so no events. */
static bool sf_forks_exiting;

static int sf_wait_status(int status)
{
    return WIFEXITED(status) ? WEXITSTATUS(status) :
           WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

/*
 * An end that was asked for: exit 0, or SIGTERM (which kills a QEMU that
 * has not installed its handlers yet, early in its start).  Anything else
 * is a failure whose log is kept.
 */
static bool sf_wait_clean(int status)
{
    return (WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
           (WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
}

static void sf_fork_read_final_stats(SfForkRecord *rec)
{
    g_autoptr(GString) json = g_string_new(NULL);
    char buf[4096];
    ssize_t n;

    /* The server has exited: what it wrote is all there is. */
    fcntl(rec->stats_fd, F_SETFL, O_NONBLOCK);
    while ((n = read(rec->stats_fd, buf, sizeof(buf))) > 0) {
        g_string_append_len(json, buf, n);
    }
    close(rec->stats_fd);
    rec->stats_fd = -1;
    if (json->len) {
        rec->final_stats = g_string_free(g_steal_pointer(&json), false);
    } else {
        /* Killed before it could say: its last stats file, if any. */
        g_file_get_contents(rec->dir->stats, &rec->final_stats, NULL, NULL);
    }
}

static void sf_server_exited(GPid pid, gint status, gpointer opaque)
{
    SfForkRecord *rec = opaque;
    bool failed = !sf_wait_clean(status);

    if (!rec->server_alive) {
        return;                  /* reaped at exit already */
    }
    trace_sf_fork_child_exited(pid, status);
    rec->server_alive = false;
    sf_fork_read_final_stats(rec);
    if (WIFSIGNALED(status)) {
        /* Killed: it could not clean up after itself. */
        sf_forkdir_server_ended(rec->dir, failed);
    }
    if (failed) {
        warn_report("vm-fork: page server of fork %" PRIx64 " (pid %d) "
                    "ended with status 0x%x; its log is kept: %s",
                    rec->id, pid, status, rec->dir->log);
        sf_forkdir_keep_log(rec->dir, rec->dir->log);
    }
    sf_forkdir_release(rec->dir);
    g_spawn_close_pid(pid);
}

static void sf_clone_exited(GPid pid, gint status, gpointer opaque)
{
    SfLaunchedClone *c = opaque;
    const SfForkDir *dir = c->fork->dir;
    int code = sf_wait_status(status);

    if (!c->running) {
        return;                  /* reaped at exit already */
    }
    c->running = false;
    trace_sf_fork_child_exited(pid, status);
    if (!sf_forks_exiting) {
        qapi_event_send_sf_clone_exited(c->fork->id, c->clone_id, pid, code);
    }
    if (sf_wait_clean(status)) {
        if (dir->owned) {
            unlink(c->log);
        }
    } else {
        warn_report("vm-fork: clone %u of fork %" PRIx64 " (pid %d) ended "
                    "with status %d; its log is kept: %s", c->clone_id,
                    c->fork->id, pid, code, c->log);
        sf_forkdir_keep_log(dir, c->log);
    }
    sf_forkdir_release(dir);
    g_spawn_close_pid(pid);
}

/* The child watch may not have run yet for a process that has ended. */
static void sf_fork_reap(pid_t pid, GChildWatchFunc fn, gpointer opaque)
{
    int status;

    if (waitpid(pid, &status, WNOHANG) == pid) {
        fn(pid, status, opaque);
    }
}

/*
 * At exit: handle what has ended and the main loop has not seen yet, so
 * its files go now (what still runs cleans up after itself), and remove
 * this QEMU's run directory if its forks left it empty.
 */
static void sf_fork_at_exit(Notifier *n, void *data)
{
    sf_forks_exiting = true;
    for (GList *l = sf_forks; l; l = l->next) {
        SfForkRecord *rec = l->data;

        for (GList *c = rec->clones; c; c = c->next) {
            SfLaunchedClone *lc = c->data;

            if (lc->running) {
                sf_fork_reap(lc->pid, sf_clone_exited, lc);
            }
        }
        if (rec->server_alive) {
            sf_fork_reap(rec->server_pid, sf_server_exited, rec);
        }
        sf_forkdir_release(rec->dir);
    }
    sf_forkdir_release_run_dir();
}

void sf_forks_add(uint64_t id, SfForkDir *dir, const char *server,
                  pid_t server_pid, int stats_fd,
                  const SfCloneLaunchList *launched)
{
    static Notifier exit_notifier = { .notify = sf_fork_at_exit };
    SfForkRecord *rec = g_new0(SfForkRecord, 1);

    if (!sf_forks) {
        qemu_add_exit_notifier(&exit_notifier);
    }
    rec->id = id;
    rec->dir = dir;
    rec->server = g_strdup(server);
    rec->server_pid = server_pid;
    rec->server_alive = true;
    rec->stats_fd = stats_fd;
    sf_forks = g_list_append(sf_forks, rec);
    g_child_watch_add(rec->server_pid, sf_server_exited, rec);

    for (const SfCloneLaunchList *l = launched; l; l = l->next) {
        SfLaunchedClone *lc = g_new0(SfLaunchedClone, 1);

        lc->fork = rec;
        lc->clone_id = l->value->clone_id;
        lc->pid = l->value->pid;
        lc->running = true;
        lc->log = g_strdup(l->value->log);
        rec->clones = g_list_append(rec->clones, lc);
        g_child_watch_add(lc->pid, sf_clone_exited, lc);
    }
}

/* Private_* of the server: frozen pages this VM no longer shares. */
static int64_t sf_server_footprint(pid_t pid, bool *alive)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/smaps_rollup", pid);
    g_autofree char *text = NULL;
    int64_t kb = 0;
    const char *p;

    *alive = g_file_get_contents(path, &text, NULL, NULL);
    if (!*alive) {
        return 0;
    }
    for (p = text; (p = strstr(p, "Private_")); p++) {
        const char *colon = strchr(p, ':');
        if (colon) {
            kb += g_ascii_strtoll(colon + 1, NULL, 10);
        }
    }
    return kb * 1024;
}

/* Per-clone figures from the page server's stats (written by it). */
static SfServedCloneList *sf_fork_parse_served(const char *json)
{
    SfServedCloneList *head = NULL, **tail = &head;
    QObject *obj = qobject_from_json(json, NULL);
    QDict *root = qobject_to(QDict, obj);
    QList *clones = root ? qdict_get_qlist(root, "clones") : NULL;
    QListEntry *e;

    if (!clones) {
        qobject_unref(obj);
        return NULL;
    }
    QLIST_FOREACH_ENTRY(clones, e) {
        QDict *c = qobject_to(QDict, qlist_entry_obj(e));
        SfServedClone *sc;

        if (!c) {
            continue;
        }
        sc = g_new0(SfServedClone, 1);
        sc->clone_id = qdict_get_try_int(c, "clone_id", 0);
        sc->state = g_strdup(qdict_get_try_str(c, "state") ?: "unknown");
        sc->requests = qdict_get_try_int(c, "requests", 0);
        sc->pages_sent = qdict_get_try_int(c, "pages_sent", 0);
        sc->zero_pages = qdict_get_try_int(c, "zero_pages", 0);
        sc->bytes_sent = qdict_get_try_int(c, "bytes_sent", 0);
        sc->multicast_requests = qdict_get_try_int(c, "mcast_requests", 0);
        sc->unicast_requests = qdict_get_try_int(c, "unicast_requests", 0);
        sc->pushes_dropped = qdict_get_try_int(c, "pushes_dropped", 0);
        sc->working_set_pushed = qdict_get_try_int(c, "workset_pushed", 0);
        QAPI_LIST_APPEND(tail, sc);
    }
    qobject_unref(obj);
    return head;
}

/* The group's figures from the same stats, when the fork has one. */
static SfServedMulticast *sf_fork_parse_multicast(const char *json)
{
    QObject *obj = qobject_from_json(json, NULL);
    QDict *root = qobject_to(QDict, obj);
    QDict *m = root ? qdict_get_qdict(root, "multicast") : NULL;
    SfServedMulticast *sm = NULL;

    if (m && (qdict_get_try_bool(m, "active", false) ||
              qdict_get_try_bool(m, "failed", false))) {
        sm = g_new0(SfServedMulticast, 1);
        sm->active = qdict_get_try_bool(m, "active", false);
        sm->data_pages = qdict_get_try_int(m, "data_pages", 0);
        sm->zero_pages = qdict_get_try_int(m, "zero_pages", 0);
        sm->datagrams = qdict_get_try_int(m, "datagrams", 0);
        sm->bytes = qdict_get_try_int(m, "bytes", 0);
        sm->suppressed = qdict_get_try_int(m, "suppressed", 0);
        sm->pacer_waits = qdict_get_try_int(m, "pacer_waits", 0);
        sm->dropped = qdict_get_try_int(m, "dropped", 0);
        sm->rate = qdict_get_try_int(m, "rate", 0);
        sm->fragments = qdict_get_try_int(m, "fragments", 0);
    }
    qobject_unref(obj);
    return sm;
}

/* "pages" of one section of the same stats (zero_map, workset); -1 when
 * absent. */
static int64_t sf_fork_parse_pages(const char *json, const char *section)
{
    QObject *obj = qobject_from_json(json, NULL);
    QDict *root = qobject_to(QDict, obj);
    QDict *z = root ? qdict_get_qdict(root, section) : NULL;
    int64_t pages = z ? qdict_get_try_int(z, "pages", -1) : -1;

    qobject_unref(obj);
    return pages;
}

SfForkStatusList *qmp_query_sf_forks(Error **errp)
{
    SfForkStatusList *head = NULL, **tail = &head;

    for (GList *l = sf_forks; l; l = l->next) {
        SfForkRecord *rec = l->data;
        SfForkStatus *st = g_new0(SfForkStatus, 1);
        g_autofree char *json = NULL;
        bool alive = false;

        st->id = rec->id;
        st->server = g_strdup(rec->server);
        st->server_pid = rec->server_pid;
        st->footprint_bytes = rec->server_alive ?
            sf_server_footprint(rec->server_pid, &alive) : 0;
        st->server_alive = rec->server_alive && alive;
        if (rec->server_alive) {
            g_file_get_contents(rec->dir->stats, &json, NULL, NULL);
        }
        if (json || rec->final_stats) {
            const char *j = json ?: rec->final_stats;

            st->avoided_pages = sf_fork_parse_pages(j, "zero_map");
            st->has_avoided_pages = st->avoided_pages >= 0;
            st->working_set_pages = sf_fork_parse_pages(j, "workset");
            st->has_working_set_pages = st->working_set_pages >= 0;
            st->served = sf_fork_parse_served(j);
            st->multicast = sf_fork_parse_multicast(j);
        }
        QAPI_LIST_APPEND(tail, st);
    }
    return head;
}
