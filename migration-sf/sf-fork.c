/*
 * snowflock: vm-fork, the parent side.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * qmp_vm_fork() takes one SfForkJob through its steps, a function each:
 *
 *   check       arguments, run state, guest RAM, the descriptor-to-be, the
 *               command line launched clones get: all that can be known
 *               without acting, so a refusal costs nothing
 *   directory, secret, log, listen
 *               what needs no pause
 *   save        pause the guest, save CPU and device state without RAM
 *               (qemu_save_device_state), record the RAM block table
 *   freeze      fork the page server (sf-freeze.c): RAM is frozen
 *               copy-on-write; then resume: the pause is save + freeze
 *   descriptor  written atomically
 *   launch      the local clones, all of them or none
 *
 * then records the fork (sf-forks.c: its processes' ends, query-sf-forks)
 * and answers.  A failure at any step undoes every earlier one
 * (sf_fork_job_undo): no page server, clone, file, socket or record is
 * left, and the error names the step.  Tests make each acting step fail
 * on purpose (sf-fault.c) to prove it.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/rcu.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-sf.h"
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
#include "sf-fault.h"
#include "sf-forkdir.h"
#include "sf-forks.h"
#include "sf-freeze.h"
#include "sf-launch.h"
#include "lib/sf-clone-args.h"
#include "lib/sf-descriptor.h"
#include "lib/sf-mcast.h"
#include "lib/sf-transport.h"
#include "trace.h"

#include <arpa/inet.h>
#include <sys/random.h>

#define SF_MAX_CLONES 64

/* One vm-fork call, from its arguments to its answer. */
typedef struct SfForkJob {
    /* Arguments, defaults applied. */
    int64_t clones;
    bool launch;
    bool prefetch;
    int idle_timeout_ms;         /* < 0 never, 0 the page server's default */
    const char *dir_arg;
    const char *listen_arg;
    SfForkMulticast *mcast_arg;
    SfMcastGroup mcast;          /* parsed from mcast_arg */

    char **own_argv;             /* when launching */
    unsigned seq;                /* this QEMU's fork number */
    /* The page server's configuration: it reads this copy, in the child. */
    SfPageServerConfig ps;
    char *log_prefix;
    char *secret_id;
    SfForkDir *dir;
    SfListener *listener;
    char *endpoint;              /* the listener's, with the real port */
    int mcast_fd;                /* the group's sender, until the server has it */
    int log_fd;
    int stats_pipe[2];
    GArray *blocks;              /* SfBlockInfo, descriptor order */
    GPtrArray *hosts;            /* their host addresses */
    GArray *anon;                /* bool: private anonymous memory */
    GByteArray *devstate;
    bool was_running;
    pid_t server_pid;
    int64_t t0, t_saved, t_forked, t_resumed;
    GArray *clone_pids;          /* pid_t of the clones launched so far */
    SfCloneLaunchList *launched;
    SfCloneLaunchList **launched_tail;
} SfForkJob;

/* This QEMU's forks so far (BQL): fork-<n> directories, clone suffixes. */
static unsigned sf_fork_seq;

/* --- the job ------------------------------------------------------------- */

static SfForkJob *sf_fork_job_new(void)
{
    SfForkJob *job = g_new0(SfForkJob, 1);

    job->log_fd = -1;
    job->mcast_fd = -1;
    job->stats_pipe[0] = job->stats_pipe[1] = -1;
    job->blocks = g_array_new(false, true, sizeof(SfBlockInfo));
    job->hosts = g_ptr_array_new();
    job->anon = g_array_new(false, true, sizeof(bool));
    job->devstate = g_byte_array_new();
    job->clone_pids = g_array_new(false, false, sizeof(pid_t));
    job->launched_tail = &job->launched;
    return job;
}

static void sf_fork_job_free(SfForkJob *job)
{
    /* The secret leaves no copy behind on the heap. */
    memset(job->ps.secret, 0, sizeof(job->ps.secret));
    g_strfreev(job->own_argv);
    g_free(job->log_prefix);
    g_free(job->secret_id);
    sf_forkdir_free(job->dir);
    sf_listener_close(job->listener);
    g_free(job->endpoint);
    for (int i = 0; i < 2; i++) {
        if (job->stats_pipe[i] >= 0) {
            close(job->stats_pipe[i]);
        }
    }
    if (job->log_fd >= 0) {
        close(job->log_fd);
    }
    if (job->mcast_fd >= 0) {
        close(job->mcast_fd);
    }
    g_array_free(job->blocks, true);
    g_ptr_array_free(job->hosts, true);
    g_array_free(job->anon, true);
    g_byte_array_free(job->devstate, true);
    g_array_free(job->clone_pids, true);
    qapi_free_SfCloneLaunchList(job->launched);
    g_free(job);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(SfForkJob, sf_fork_job_free)

static void sf_fork_kill(pid_t pid)
{
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        /* retry */
    }
}

/* A step failed: take back every earlier one. */
static void sf_fork_job_undo(SfForkJob *job)
{
    for (guint i = 0; i < job->clone_pids->len; i++) {
        sf_fork_kill(g_array_index(job->clone_pids, pid_t, i));
    }
    if (job->server_pid > 0) {
        sf_fork_kill(job->server_pid);
    }
    g_clear_pointer(&job->listener, sf_listener_close);
    if (job->dir) {
        sf_forkdir_abandon(job->dir, job->clone_pids->len);
    }
}

/* --- check: everything that can be known before acting ----------------- */

/* The RAM blocks the page server will serve, in a fixed order. */
static bool sf_fork_collect_blocks(GArray *blocks, GPtrArray *hosts,
                                   GArray *anon, Error **errp)
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
        if (anon) {
            /* No file behind it: a page never populated reads as zero. */
            bool is_anon = qemu_ram_get_fd(rb) < 0;

            g_array_append_val(anon, is_anon);
        }
    }
    return true;
}

static void sf_fork_fill_descriptor(SfForkJob *job, SfDescriptor *desc)
{
    memset(desc, 0, sizeof(*desc));
    desc->version = SF_DESC_VERSION;
    desc->fork_id = job->ps.fork_id;
    desc->created_ns = g_get_real_time() * 1000;
    desc->page_size = qemu_real_host_page_size();
    desc->machine = (char *)MACHINE_GET_CLASS(current_machine)->name;
    desc->vm_name = (char *)(qemu_name ? qemu_name : "");
    desc->nblocks = job->blocks->len;
    desc->blocks = (SfBlockInfo *)job->blocks->data;
    desc->devstate = job->devstate->data;
    desc->devstate_len = job->devstate->len;
}

static bool sf_fork_check_ram(SfForkJob *job, Error **errp)
{
    g_autoptr(GError) gerr = NULL;
    SfDescriptor desc;

    if (!sf_fork_collect_blocks(job->blocks, job->hosts, job->anon, errp)) {
        return false;
    }
    if (!job->blocks->len) {
        error_setg(errp, "vm-fork: this VM has no guest RAM to fork "
                   "(machine '%s')",
                   MACHINE_GET_CLASS(current_machine)->name);
        return false;
    }
    /* Everything the descriptor will hold but the device state. */
    sf_fork_fill_descriptor(job, &desc);
    if (sf_descriptor_check(&desc, &gerr) < 0) {
        error_setg(errp, "vm-fork: this VM cannot be described to clones: "
                   "%s", gerr->message);
        return false;
    }
    return true;
}

static bool sf_fork_check_launch(SfForkJob *job, Error **errp)
{
    const char *none[] = { NULL };
    g_autoptr(GPtrArray) argv = NULL;

    job->own_argv = sf_launch_own_argv(errp);
    if (!job->own_argv) {
        return false;
    }
    /* Only the per-clone suffixes differ between clones: one says all. */
    argv = sf_launch_clone_argv((const char *const *)job->own_argv,
                                sf_fork_seq + 1, 1, none, errp);
    if (!argv) {
        error_prepend(errp, "vm-fork: cannot launch clones: ");
        return false;
    }
    return true;
}

/* A group needs a network endpoint: clones on this host's unix socket
 * never join it. */
static bool sf_fork_check_multicast(SfForkJob *job, Error **errp)
{
    SfForkMulticast *m = job->mcast_arg;
    const char *why;
    struct in_addr ifa;

    if (!sf_mcast_parse(m->group, &job->mcast, &why)) {
        error_setg(errp, "vm-fork: multicast group '%s': %s", m->group, why);
        return false;
    }
    if (!job->listen_arg || !sf_endpoint_is_network(job->listen_arg)) {
        error_setg(errp, "vm-fork: a multicast group needs a tcp:HOST:PORT "
                   "listen endpoint (clones on other hosts)");
        return false;
    }
    if (m->interface && inet_pton(AF_INET, m->interface, &ifa) != 1) {
        error_setg(errp, "vm-fork: multicast interface '%s' is not an IPv4 "
                   "address", m->interface);
        return false;
    }
    job->mcast.ifaddr = m->interface ? ntohl(ifa.s_addr) : 0;
    job->mcast.ttl = m->has_ttl ? m->ttl : 1;
    if (job->mcast.ttl == 0) {
        error_setg(errp, "vm-fork: multicast ttl must be 1..255");
        return false;
    }
    return true;
}

static bool sf_fork_check(SfForkJob *job, Error **errp)
{
    if (job->clones < 1 || job->clones > SF_MAX_CLONES) {
        error_setg(errp, "vm-fork: clones must be 1..%d, not %" PRId64,
                   SF_MAX_CLONES, job->clones);
        return false;
    }
    if (job->listen_arg && !sf_transport_lookup(job->listen_arg)) {
        error_setg(errp, "vm-fork: page server endpoint '%s' is not "
                   "unix:PATH or tcp:HOST:PORT", job->listen_arg);
        return false;
    }
    if (job->mcast_arg && !sf_fork_check_multicast(job, errp)) {
        return false;
    }
    if (migration_is_running()) {
        error_setg(errp, "vm-fork: a migration is running");
        return false;
    }
    if (runstate_check(RUN_STATE_INMIGRATE) ||
        runstate_check(RUN_STATE_PRELAUNCH)) {
        error_setg(errp, "vm-fork: the VM has not started yet");
        return false;
    }
    if (!sf_clone_memory_complete()) {
        error_setg(errp, "vm-fork: this clone is still fetching its memory; "
                   "fork it once query-sf-clone says \"complete\"");
        return false;
    }
    return sf_fork_check_ram(job, errp) &&
           (!job->launch || sf_fork_check_launch(job, errp));
}

/* --- directory, secret, log, listen: what needs no pause --------------- */

static bool sf_fork_prepare(SfForkJob *job, Error **errp)
{
    ERRP_GUARD();
    SfPageServerConfig *ps = &job->ps;
    g_autoptr(GError) gerr = NULL;
    g_autofree char *endpoint = NULL;

    if (getrandom(&ps->fork_id, sizeof(ps->fork_id), 0) !=
            sizeof(ps->fork_id) ||
        getrandom(ps->secret, sizeof(ps->secret), 0) != sizeof(ps->secret)) {
        error_setg_errno(errp, errno, "vm-fork: getrandom");
        return false;
    }
    job->seq = ++sf_fork_seq;
    job->log_prefix = g_strdup_printf("sf-pageserver fork=%" PRIx64,
                                      ps->fork_id);
    job->secret_id = g_strdup_printf(SF_LAUNCH_SECRET_ID_PREFIX "%016" PRIx64,
                                     ps->fork_id);

    if (!sf_fault_inject("directory", errp)) {
        job->dir = sf_forkdir_create(job->dir_arg, job->seq, errp);
    }
    if (!job->dir) {
        error_prepend(errp, "vm-fork: directory: ");
        return false;
    }
    if (sf_fault_inject("secret", errp) ||
        !sf_forkdir_write_secret(job->dir, ps->secret, errp)) {
        error_prepend(errp, "vm-fork: secret: ");
        return false;
    }
    if (!sf_fault_inject("log", errp)) {
        job->log_fd = sf_forkdir_open_log(job->dir, errp);
    }
    if (job->log_fd < 0) {
        error_prepend(errp, "vm-fork: log: ");
        return false;
    }
    if (pipe2(job->stats_pipe, O_CLOEXEC) < 0) {
        error_setg_errno(errp, errno, "vm-fork: log: pipe");
        return false;
    }

    endpoint = job->listen_arg ? g_strdup(job->listen_arg) :
        g_strdup_printf("unix:%s/pages.sock", job->dir->path);
    if (sf_fault_inject("listen", errp)) {
        error_prepend(errp, "vm-fork: listen: ");
        return false;
    }
    job->listener = sf_listen(endpoint, &gerr);
    if (!job->listener) {
        error_setg(errp, "vm-fork: listen: page server endpoint %s: %s",
                   endpoint, gerr->message);
        return false;
    }
    /* tcp:HOST:0 picked a port: clones must be told the real one. */
    job->endpoint = g_strdup(job->listener->endpoint);
    job->dir->socket = g_strdup(job->listener->unix_path);

    if (job->mcast_arg) {
        unsigned mtu = 0;

        g_clear_error(&gerr);
        job->mcast_fd = sf_mcast_sender(&job->mcast, &mtu, &gerr);
        if (job->mcast_fd < 0) {
            error_setg(errp, "vm-fork: listen: %s", gerr->message);
            return false;
        }
        if (!sf_mcast_frags_for_mtu(mtu)) {
            error_setg(errp, "vm-fork: listen: the path MTU to %s is %u "
                       "bytes, too small for a page in %u datagrams",
                       job->mcast_arg->group, mtu, SF_WIRE_MAX_FRAGS);
            return false;
        }
        ps->mcast_group = job->mcast.group;
        ps->mcast_port = job->mcast.port;
        ps->mcast_fd = job->mcast_fd;
        ps->mcast_mtu = mtu;
    }

    ps->max_clones = job->clones;
    ps->idle_timeout_ms = job->idle_timeout_ms;
    ps->stats_path = job->dir->stats;
    ps->log_prefix = job->log_prefix;
    /* Handed to clones that have no copy of it (DESC_GET). */
    ps->descriptor_path = job->dir->descriptor;
    return true;
}

/* --- save, freeze: the pause -------------------------------------------- */

static bool sf_fork_save_devices(GByteArray *out, Error **errp)
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
        error_setg(errp, "saving device state failed (%d)", ret);
    }
    qemu_fclose(f);
    object_unref(OBJECT(bioc));
    return ret == 0;
}

/*
 * The RAM block table as of the pause.  It was checked before, under the
 * BQL; vm_stop() lets go of the BQL while vCPUs stop, so make sure
 * nothing changed meanwhile rather than assume it.
 */
static bool sf_fork_recheck_blocks(SfForkJob *job, Error **errp)
{
    g_autoptr(GArray) now = g_array_new(false, true, sizeof(SfBlockInfo));
    g_autoptr(GPtrArray) hosts = g_ptr_array_new();

    if (!sf_fork_collect_blocks(now, hosts, NULL, errp)) {
        return false;
    }
    for (guint i = 0; i < MAX(now->len, job->blocks->len); i++) {
        const SfBlockInfo *a = &g_array_index(now, SfBlockInfo, i);
        const SfBlockInfo *b = &g_array_index(job->blocks, SfBlockInfo, i);

        if (i >= now->len || i >= job->blocks->len ||
            strcmp(a->idstr, b->idstr) || a->length != b->length ||
            a->page_size != b->page_size ||
            hosts->pdata[i] != job->hosts->pdata[i]) {
            error_setg(errp, "guest RAM blocks changed while the guest was "
                       "being paused");
            return false;
        }
    }
    return true;
}

static bool sf_fork_save(SfForkJob *job, Error **errp)
{
    if (sf_fault_inject("save", errp) ||
        !sf_fork_recheck_blocks(job, errp) ||
        !sf_fork_save_devices(job->devstate, errp)) {
        error_prepend(errp, "vm-fork: save: ");
        return false;
    }
    job->t_saved = g_get_monotonic_time();
    return true;
}

static bool sf_fork_freeze(SfForkJob *job, Error **errp)
{
    SfFreezeArgs fa = {
        .server = &job->ps,
        .nblocks = job->blocks->len,
        .blocks = (SfBlockInfo *)job->blocks->data,
        .hosts = job->hosts->pdata,
        .anon = (bool *)job->anon->data,
        .listener = job->listener,
        .log_fd = job->log_fd,
        .stats_fd = job->stats_pipe[1],
        .dir = job->dir,
    };

    if (!sf_fault_inject("freeze", errp)) {
        job->server_pid = sf_freeze_fork(&fa, errp);
    }
    if (job->server_pid <= 0) {
        error_prepend(errp, "vm-fork: freeze: ");
        job->server_pid = 0;
        return false;
    }
    job->t_forked = g_get_monotonic_time();
    /*
     * The server has its copies now.  It owns the socket, so ours is
     * closed without unlinking it (sf_fork_job_undo() removes it through
     * the fork directory if a later step fails).
     */
    g_clear_pointer(&job->listener->unix_path, g_free);
    g_clear_pointer(&job->listener, sf_listener_close);
    close(job->log_fd);
    job->log_fd = -1;
    close(job->stats_pipe[1]);
    job->stats_pipe[1] = -1;
    if (job->mcast_fd >= 0) {
        close(job->mcast_fd);
        job->mcast_fd = -1;
    }
    return true;
}

static bool sf_fork_pause(SfForkJob *job, Error **errp)
{
    bool ok;

    job->t0 = g_get_monotonic_time();
    job->was_running = runstate_is_running();
    /* The run state clones see in the "globalstate" section. */
    if (job->was_running) {
        global_state_store_running();
    } else {
        global_state_store();
    }
    vm_stop(RUN_STATE_SAVE_VM);
    trace_sf_fork_paused(job->ps.fork_id);
    ok = sf_fork_save(job, errp) && sf_fork_freeze(job, errp);
    if (job->was_running) {
        vm_start();
    }
    job->t_resumed = g_get_monotonic_time();
    return ok;
}

/* --- descriptor, launch ------------------------------------------------- */

static bool sf_fork_write_descriptor(SfForkJob *job, Error **errp)
{
    g_autoptr(GError) gerr = NULL;
    SfDescriptor desc;

    if (sf_fault_inject("descriptor", errp)) {
        error_prepend(errp, "vm-fork: descriptor: ");
        return false;
    }
    sf_fork_fill_descriptor(job, &desc);
    if (sf_descriptor_write(job->dir->descriptor, &desc, &gerr) < 0) {
        error_setg(errp, "vm-fork: descriptor: %s", gerr->message);
        return false;
    }
    return true;
}

/*
 * The options that make a QEMU with the parent's machine options clone
 * @clone_id (see lib/sf-clone-args.h): -object secret, -object sf-clone.
 * Without @descriptor the clone fetches it from the page server (a clone
 * on another host has no copy of the fork's directory); the fork id
 * names the fork either way.
 */
static GPtrArray *sf_fork_clone_opts(SfForkJob *job, const char *clone_id,
                                     bool descriptor, const char *extra)
{
    GPtrArray *opts = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *secret = sf_launch_escape(job->dir->secret);
    g_autofree char *desc = sf_launch_escape(job->dir->descriptor);
    g_autofree char *server = sf_launch_escape(job->endpoint);
    g_autofree char *desc_opt = descriptor ?
        g_strdup_printf("descriptor=%s,", desc) : g_strdup("");

    g_ptr_array_add(opts, g_strdup("-object"));
    g_ptr_array_add(opts, g_strdup_printf("secret,id=%s,file=%s,format=raw",
                                          job->secret_id, secret));
    g_ptr_array_add(opts, g_strdup("-object"));
    g_ptr_array_add(opts, g_strdup_printf("sf-clone,id=sf-clone,%s"
                                          "fork-id=%016" PRIx64 ",server=%s,"
                                          "secret-id=%s%s,clone-id=%s",
                                          desc_opt, job->ps.fork_id, server,
                                          job->secret_id, extra, clone_id));
    return opts;
}

static bool sf_fork_launch_one(SfForkJob *job, uint32_t id, Error **errp)
{
    g_autofree char *cid = g_strdup_printf("%u", id);
    g_autoptr(GPtrArray) opts =
        sf_fork_clone_opts(job, cid, true, job->prefetch ? ",prefetch=on" :
                                                           ",prefetch=off");
    g_autoptr(GPtrArray) argv = NULL;
    g_autofree char *log = sf_forkdir_clone_log(job->dir, id);
    SfCloneLaunch *cl;
    strList **argv_tail;
    pid_t pid;

    g_ptr_array_add(opts, NULL);
    argv = sf_launch_clone_argv((const char *const *)job->own_argv, job->seq,
                                id, (const char *const *)opts->pdata, errp);
    if (!argv) {
        return false;
    }
    pid = sf_launch_spawn((char *const *)argv->pdata, log, job->dir->owned,
                          errp);
    if (pid < 0) {
        return false;
    }
    g_array_append_val(job->clone_pids, pid);
    trace_sf_fork_clone_spawned(job->ps.fork_id, id, pid);

    cl = g_new0(SfCloneLaunch, 1);
    cl->clone_id = id;
    cl->pid = pid;
    cl->log = g_steal_pointer(&log);
    argv_tail = &cl->argv;
    for (guint i = 0; i + 1 < argv->len; i++) {
        QAPI_LIST_APPEND(argv_tail, g_strdup(argv->pdata[i]));
    }
    QAPI_LIST_APPEND(job->launched_tail, cl);
    return true;
}

static bool sf_fork_launch(SfForkJob *job, Error **errp)
{
    for (uint32_t id = 1; job->launch && id <= job->clones; id++) {
        /* Injected at the last clone, so that earlier ones must go too. */
        if ((id == job->clones && sf_fault_inject("launch", errp)) ||
            !sf_fork_launch_one(job, id, errp)) {
            error_prepend(errp, "vm-fork: launch: clone %u: ", id);
            return false;
        }
    }
    return true;
}

static SfForkInfo *sf_fork_answer(SfForkJob *job)
{
    SfForkInfo *info = g_new0(SfForkInfo, 1);
    /* Portable over a network: no path only this host has. */
    g_autoptr(GPtrArray) opts =
        sf_fork_clone_opts(job, SF_CLONE_ID_PLACEHOLDER,
                           !sf_endpoint_is_network(job->endpoint),
                           job->prefetch ? "" : ",prefetch=off");
    strList **args_tail = &info->clone_args;
    struct stat st;

    info->id = job->ps.fork_id;
    info->dir = g_strdup(job->dir->path);
    info->descriptor = g_strdup(job->dir->descriptor);
    info->descriptor_size = stat(job->dir->descriptor, &st) == 0 ?
                            st.st_size : 0;
    info->server = g_strdup(job->endpoint);
    info->server_pid = job->server_pid;
    info->secret_file = g_strdup(job->dir->secret);
    info->clones = job->clones;
    info->save_us = job->t_saved - job->t0;
    info->freeze_us = job->t_forked - job->t_saved;
    info->pause_us = job->t_resumed - job->t0;
    if (job->mcast_arg) {
        info->multicast = sf_mcast_to_string(job->mcast.group,
                                             job->mcast.port);
    }
    for (guint i = 0; i < opts->len; i++) {
        QAPI_LIST_APPEND(args_tail, g_strdup(opts->pdata[i]));
    }
    return info;
}

SfForkInfo *qmp_vm_fork(bool has_clones, int64_t clones, bool has_launch,
                        bool launch, const char *dir, const char *listen,
                        bool has_prefetch, bool prefetch,
                        bool has_idle_timeout, int64_t idle_timeout,
                        SfForkMulticast *multicast, Error **errp)
{
    g_autoptr(SfForkJob) job = sf_fork_job_new();
    SfForkInfo *info;

    if (has_idle_timeout && (idle_timeout < -1 || idle_timeout == 0 ||
                             idle_timeout > INT_MAX)) {
        error_setg(errp, "vm-fork: idle-timeout must be -1 (never) or "
                   "1..%d ms, not %" PRId64, INT_MAX, idle_timeout);
        return NULL;
    }
    job->clones = has_clones ? clones : 1;
    job->launch = has_launch ? launch : true;
    job->prefetch = has_prefetch ? prefetch : true;
    job->idle_timeout_ms = has_idle_timeout ? idle_timeout : 0;
    job->dir_arg = dir;
    job->listen_arg = listen;
    job->mcast_arg = multicast;

    if (!sf_fork_check(job, errp)) {
        return NULL;
    }
    if (!sf_fork_prepare(job, errp) || !sf_fork_pause(job, errp) ||
        !sf_fork_write_descriptor(job, errp) || !sf_fork_launch(job, errp)) {
        sf_fork_job_undo(job);
        return NULL;
    }
    info = sf_fork_answer(job);
    trace_sf_fork_done(info->id, info->server_pid, info->pause_us,
                       info->descriptor_size);
    sf_forks_add(job->ps.fork_id, g_steal_pointer(&job->dir), job->endpoint,
                 job->server_pid, job->stats_pipe[0], job->launched);
    job->stats_pipe[0] = -1;
    info->launched = g_steal_pointer(&job->launched);
    return info;
}

