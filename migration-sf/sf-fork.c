/*
 * snowflock: vm-fork, the parent side.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * qmp_vm_fork():
 *   1. checks (arguments, no migration, private 4 KiB-page RAM, and when
 *      this VM is itself a clone, all of its memory present) and prepares
 *      what needs no pause: directory, page server listener, secret;
 *   2. pauses the guest, saves CPU and device state without RAM
 *      (qemu_save_device_state), records the RAM block table;
 *   3. forks the page server (sf-freeze.c): RAM is frozen copy-on-write;
 *   4. resumes the guest: the pause is steps 2-3;
 *   5. writes the descriptor atomically and starts the local clones.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/rcu.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-sf.h"
#include "qapi/qapi-events-sf.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "qobject/qjson.h"
#include "hw/boards.h"
#include "io/channel-buffer.h"
#include "migration/qemu-file.h"
#include "migration/savevm.h"
#include "exec/ramblock.h"
#include "migration/ram.h"
#include "migration/misc.h"
#include "migration/global_state.h"
#include "system/runstate.h"
#include "system/system.h"
#include "sf-clone.h"
#include "sf-freeze.h"
#include "sf-launch.h"
#include "lib/sf-descriptor.h"
#include "lib/sf-transport.h"
#include "trace.h"

#include <sys/random.h>

#define SF_MAX_CLONES 64

typedef struct SfForkRecord SfForkRecord;

typedef struct SfLaunchedClone {
    SfForkRecord *fork;
    uint32_t clone_id;
    pid_t pid;
} SfLaunchedClone;

struct SfForkRecord {
    uint64_t id;
    char *dir;
    char *server;
    char *stats_path;
    char *unix_path;             /* the server's socket, for cleanup */
    pid_t server_pid;
    bool server_alive;
};

static GList *sf_forks;          /* SfForkRecord, BQL */
static unsigned sf_fork_seq;

static int sf_wait_status(int status)
{
    return WIFEXITED(status) ? WEXITSTATUS(status) :
           WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

static void sf_server_exited(GPid pid, gint status, gpointer opaque)
{
    SfForkRecord *rec = opaque;

    trace_sf_fork_child_exited(pid, status);
    rec->server_alive = false;
    /* A server that was killed could not remove its socket: do it. */
    if (WIFSIGNALED(status) && rec->unix_path) {
        unlink(rec->unix_path);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status)) {
        warn_report("vm-fork: page server of fork %" PRIx64 " (pid %d) "
                    "ended with status 0x%x; see %s/pageserver.log",
                    rec->id, pid, status, rec->dir);
    }
    g_spawn_close_pid(pid);
}

static void sf_clone_exited(GPid pid, gint status, gpointer opaque)
{
    SfLaunchedClone *c = opaque;

    trace_sf_fork_child_exited(pid, status);
    qapi_event_send_sf_clone_exited(c->fork->id, c->clone_id, pid,
                                    sf_wait_status(status));
    g_spawn_close_pid(pid);
    g_free(c);
}

static char **sf_own_argv(Error **errp)
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

/* Record the RAM blocks the page server will serve, in a fixed order. */
static bool sf_collect_blocks(GArray *blocks, GPtrArray *hosts, Error **errp)
{
    RAMBlock *rb;

    RCU_READ_LOCK_GUARD();
    RAMBLOCK_FOREACH_NOT_IGNORED(rb) {
        SfBlockInfo bi = { 0 };

        if (qemu_ram_is_shared(rb)) {
            error_setg(errp, "vm-fork needs private guest RAM: RAM block "
                       "'%s' is shared (share=on), so the parent's writes "
                       "would reach the frozen image", qemu_ram_get_idstr(rb));
            return false;
        }
        if (qemu_ram_pagesize(rb) != qemu_real_host_page_size()) {
            error_setg(errp, "vm-fork does not support huge page backed RAM "
                       "block '%s' yet", qemu_ram_get_idstr(rb));
            return false;
        }
        g_strlcpy(bi.idstr, qemu_ram_get_idstr(rb), sizeof(bi.idstr));
        bi.length = qemu_ram_get_used_length(rb);
        bi.page_size = qemu_ram_pagesize(rb);
        g_array_append_val(blocks, bi);
        g_ptr_array_add(hosts, qemu_ram_get_host_addr(rb));
    }
    return true;
}

static bool sf_save_devices(GByteArray *out, Error **errp)
{
    QIOChannelBuffer *bioc = qio_channel_buffer_new(64 * 1024);
    QEMUFile *f;
    int ret;

    qio_channel_set_name(QIO_CHANNEL(bioc), "sf-fork-devstate");
    f = qemu_file_new_output(QIO_CHANNEL(bioc));
    ret = qemu_save_device_state(f);
    qemu_fflush(f);
    if (ret == 0) {
        ret = qemu_file_get_error(f);
    }
    if (ret == 0) {
        g_byte_array_append(out, bioc->data, bioc->usage);
    } else {
        error_setg(errp, "vm-fork: saving device state failed (%d)", ret);
    }
    qemu_fclose(f);
    object_unref(OBJECT(bioc));
    return ret == 0;
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

SfForkInfo *qmp_vm_fork(bool has_clones, int64_t clones, bool has_launch,
                        bool launch, const char *dir, const char *listen,
                        bool has_prefetch, bool prefetch,
                        bool has_idle_timeout, int64_t idle_timeout,
                        Error **errp)
{
    ERRP_GUARD();
    g_autofree char *fork_dir = NULL;
    g_autofree char *endpoint = NULL;
    g_autofree char *desc_path = NULL;
    g_autofree char *stats_path = NULL;
    g_autofree char *log_path = NULL;
    g_autofree char *log_prefix = NULL;
    g_autofree char *template = NULL;
    g_autoptr(GArray) blocks = g_array_new(false, true, sizeof(SfBlockInfo));
    g_autoptr(GPtrArray) hosts = g_ptr_array_new();
    g_autoptr(GByteArray) devstate = g_byte_array_new();
    g_autoptr(GError) gerr = NULL;
    g_auto(GStrv) own_argv = NULL;
    char secret_hex[2 * SF_WIRE_SECRET_LEN + 1];
    SfListener *listener = NULL;
    SfFreezeArgs fa = { 0 };
    SfForkRecord *rec;
    SfForkInfo *info;
    SfDescriptor desc = { 0 };
    bool was_running;
    int64_t t0, t_saved, t_forked, t_resumed;
    pid_t server_pid;
    int log_fd;
    uint64_t fork_id;

    if (!has_clones) {
        clones = 1;
    }
    if (!has_launch) {
        launch = true;
    }
    if (!has_prefetch) {
        prefetch = true;
    }
    if (clones < 1 || clones > SF_MAX_CLONES) {
        error_setg(errp, "vm-fork: clones must be 1..%d, not %" PRId64,
                   SF_MAX_CLONES, clones);
        return NULL;
    }
    if (has_idle_timeout && (idle_timeout < -1 || idle_timeout == 0 ||
                             idle_timeout > INT_MAX)) {
        error_setg(errp, "vm-fork: idle-timeout must be -1 (never) or "
                   "1..%d ms, not %" PRId64, INT_MAX, idle_timeout);
        return NULL;
    }
    if (migration_is_running()) {
        error_setg(errp, "vm-fork: a migration is running");
        return NULL;
    }
    if (runstate_check(RUN_STATE_INMIGRATE) ||
        runstate_check(RUN_STATE_PRELAUNCH)) {
        error_setg(errp, "vm-fork: the VM has not started yet");
        return NULL;
    }
    if (!sf_clone_memory_complete()) {
        error_setg(errp, "vm-fork: this clone is still fetching its memory; "
                   "fork it once query-sf-clone says \"complete\"");
        return NULL;
    }
    if (launch) {
        own_argv = sf_own_argv(errp);
        if (!own_argv) {
            return NULL;
        }
    }

    if (getrandom(&fork_id, sizeof(fork_id), 0) != sizeof(fork_id) ||
        getrandom(fa.secret, sizeof(fa.secret), 0) != sizeof(fa.secret)) {
        error_setg_errno(errp, errno, "vm-fork: getrandom");
        return NULL;
    }
    sf_wire_secret_format(fa.secret, secret_hex);
    sf_fork_seq++;
    fork_dir = dir ? g_strdup(dir) :
        g_strdup_printf("%s/snowflock-%d/fork-%u", g_get_tmp_dir(), getpid(),
                        sf_fork_seq);
    if (g_mkdir_with_parents(fork_dir, 0700) < 0) {
        error_setg_errno(errp, errno, "vm-fork: cannot create %s", fork_dir);
        return NULL;
    }
    endpoint = listen ? g_strdup(listen) :
        g_strdup_printf("unix:%s/pages.sock", fork_dir);
    desc_path = g_strdup_printf("%s/descriptor", fork_dir);
    stats_path = g_strdup_printf("%s/server-stats.json", fork_dir);
    log_path = g_strdup_printf("%s/pageserver.log", fork_dir);
    log_prefix = g_strdup_printf("sf-pageserver fork=%" PRIx64, fork_id);

    /* Before the pause: nothing here needs the guest stopped. */
    listener = sf_listen(endpoint, &gerr);
    if (!listener) {
        error_setg(errp, "vm-fork: page server endpoint %s: %s", endpoint,
                   gerr->message);
        return NULL;
    }
    /* tcp:HOST:0 picked a port: clones must be told the real one. */
    g_free(endpoint);
    endpoint = g_strdup(listener->endpoint);
    log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        error_setg_errno(errp, errno, "vm-fork: cannot open %s", log_path);
        sf_listener_close(listener);
        return NULL;
    }

    /* --- the pause ------------------------------------------------------ */
    t0 = g_get_monotonic_time();
    was_running = runstate_is_running();
    /* The run state clones see in the "globalstate" section. */
    if (was_running) {
        global_state_store_running();
    } else {
        global_state_store();
    }
    vm_stop(RUN_STATE_SAVE_VM);
    trace_sf_fork_paused(fork_id);

    if (!sf_collect_blocks(blocks, hosts, errp) ||
        !sf_save_devices(devstate, errp)) {
        goto resume_fail;
    }
    t_saved = g_get_monotonic_time();

    fa.fork_id = fork_id;
    fa.max_clones = clones;
    /* < 0: never; 0: the page server's default (10 minutes). */
    fa.idle_timeout_ms = has_idle_timeout ? (int)idle_timeout : 0;
    fa.nblocks = blocks->len;
    fa.blocks = (SfBlockInfo *)blocks->data;
    fa.hosts = hosts->pdata;
    fa.listener = listener;
    fa.log_fd = log_fd;
    fa.stats_path = stats_path;
    fa.log_prefix = log_prefix;
    server_pid = sf_freeze_fork(&fa, errp);
    if (server_pid < 0) {
        goto resume_fail;
    }
    t_forked = g_get_monotonic_time();
    if (was_running) {
        vm_start();
    }
    t_resumed = g_get_monotonic_time();
    /* --- end of the pause ----------------------------------------------- */

    close(log_fd);
    /* The server owns the socket now; do not unlink it here. */
    g_clear_pointer(&listener->unix_path, g_free);
    sf_listener_close(listener);

    rec = g_new0(SfForkRecord, 1);
    rec->id = fork_id;
    rec->dir = g_strdup(fork_dir);
    rec->server = g_strdup(endpoint);
    rec->stats_path = g_strdup(stats_path);
    if (g_str_has_prefix(endpoint, "unix:")) {
        rec->unix_path = g_strdup(endpoint + strlen("unix:"));
    }
    rec->server_pid = server_pid;
    rec->server_alive = true;
    sf_forks = g_list_append(sf_forks, rec);
    g_child_watch_add(server_pid, sf_server_exited, rec);

    desc.version = SF_DESC_VERSION;
    desc.fork_id = fork_id;
    desc.created_ns = g_get_real_time() * 1000;
    desc.page_size = qemu_real_host_page_size();
    desc.machine = (char *)MACHINE_GET_CLASS(current_machine)->name;
    desc.vm_name = (char *)(qemu_name ? qemu_name : "");
    desc.nblocks = blocks->len;
    desc.blocks = (SfBlockInfo *)blocks->data;
    desc.devstate = devstate->data;
    desc.devstate_len = devstate->len;
    if (sf_descriptor_write(desc_path, &desc, &gerr) < 0) {
        error_setg(errp, "vm-fork: writing the descriptor: %s",
                   gerr->message);
        kill(server_pid, SIGTERM);
        return NULL;
    }

    info = g_new0(SfForkInfo, 1);
    info->id = fork_id;
    info->dir = g_strdup(fork_dir);
    info->descriptor = g_strdup(desc_path);
    {
        struct stat st;
        info->descriptor_size = stat(desc_path, &st) == 0 ? st.st_size : 0;
    }
    info->server = g_strdup(endpoint);
    info->server_pid = server_pid;
    info->secret = g_strdup(secret_hex);
    info->clones = clones;
    info->save_us = t_saved - t0;
    info->freeze_us = t_forked - t_saved;
    info->pause_us = t_resumed - t0;

    template = g_strdup_printf(
        "sf-clone,id=sf-clone,descriptor=%s,server=%s,secret=%s,"
        "clone-id=@CLONE_ID@", desc_path, endpoint, secret_hex);
    strList **args_tail = &info->clone_args;
    QAPI_LIST_APPEND(args_tail, g_strdup("-object"));
    QAPI_LIST_APPEND(args_tail, g_strdup(template));

    trace_sf_fork_done(fork_id, server_pid, info->pause_us,
                       info->descriptor_size);

    SfCloneLaunchList **tail = &info->launched;
    for (uint32_t id = 1; launch && id <= clones; id++) {
        g_autofree char *obj = g_strdup_printf(
            "sf-clone,id=sf-clone,descriptor=%s,server=%s,secret=%s,"
            "clone-id=%u,prefetch=%s", desc_path, endpoint, secret_hex, id,
            prefetch ? "on" : "off");
        const char *opts[] = { "-object", obj, NULL };
        g_autoptr(GPtrArray) argv = NULL;
        g_autofree char *clog = g_strdup_printf("%s/clone-%u.log", fork_dir,
                                                id);
        SfLaunchedClone *lc;
        SfCloneLaunch *cl;
        pid_t pid;

        argv = sf_launch_clone_argv((const char *const *)own_argv, sf_fork_seq,
                                    id, opts,
                                    errp);
        if (!argv) {
            /* The fork itself stands; report which clones did start. */
            error_prepend(errp, "vm-fork %" PRIx64 " done, but clone %u "
                          "was not started: ", fork_id, id);
            qapi_free_SfForkInfo(info);
            return NULL;
        }
        pid = sf_launch_spawn((char *const *)argv->pdata, clog, errp);
        if (pid < 0) {
            qapi_free_SfForkInfo(info);
            return NULL;
        }
        trace_sf_fork_clone_spawned(fork_id, id, pid);
        lc = g_new0(SfLaunchedClone, 1);
        lc->fork = rec;
        lc->clone_id = id;
        lc->pid = pid;
        g_child_watch_add(pid, sf_clone_exited, lc);

        cl = g_new0(SfCloneLaunch, 1);
        cl->clone_id = id;
        cl->pid = pid;
        cl->log = g_strdup(clog);
        strList **argv_tail = &cl->argv;
        for (guint i = 0; i + 1 < argv->len; i++) {
            QAPI_LIST_APPEND(argv_tail, g_strdup(argv->pdata[i]));
        }
        QAPI_LIST_APPEND(tail, cl);
    }
    return info;

resume_fail:
    if (was_running) {
        vm_start();
    }
    close(log_fd);
    sf_listener_close(listener);
    return NULL;
}

/* Per-clone figures from the page server's stats file (written by it). */
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
        QAPI_LIST_APPEND(tail, sc);
    }
    qobject_unref(obj);
    return head;
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
        if (g_file_get_contents(rec->stats_path, &json, NULL, NULL)) {
            st->served = sf_fork_parse_served(json);
        }
        QAPI_LIST_APPEND(tail, st);
    }
    return head;
}
