/*
 * snowflock: the clone side.  "-object sf-clone,..." turns a QEMU started
 * with its parent's machine options into a clone of that parent.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 *   qemu-system-x86_64 <parent's machine options> \
 *       -object secret,id=SID,file=DIR/secret,format=raw \
 *       -object sf-clone,id=sf-clone,[descriptor=PATH,]fork-id=HEX,\
 *               server=ENDPOINT,secret-id=SID,clone-id=N[,prefetch=on|off]
 *               [,multicast=on|off][,retry-ms=MS]
 *               [,mac=52:54:00:xx:xx:xx][,link=up|held]
 *
 * Without descriptor= the clone fetches the descriptor from its page
 * server (a clone on another host has no copy of the parent's files);
 * fork-id then names the fork, and with a descriptor it must match.
 *
 * The fork secret comes from a QEMU secret object (crypto/secret.c), never
 * from the command line: /proc/PID/cmdline is readable by every local
 * user, and the secret lets whoever holds it read the parent's memory.
 *
 * Sequence:
 *   1. complete(): read the secret and the descriptor (a file, or from the
 *      page server) and validate them;
 *      put the VM in the INMIGRATE run state, as -incoming does, so machine
 *      reset does not write ROM images into guest RAM and vl.c does not
 *      start the vCPUs.
 *   2. machine-init-done, then (after reset) a bottom half in the main loop:
 *      match the RAM blocks against the descriptor, arm lazy RAM
 *      (sf-lazyram.c) - before device state loads, because virtio_load()
 *      reads guest RAM -, load CPU and device state, give the clone its
 *      own identity (MACs, VM generation ID; with link=held, NIC links
 *      down until the guest has its identity: hw-sf/sf-link.c), start
 *      the vCPUs.
 *   3. Pages arrive on demand and by background push; SF_CLONE_COMPLETE
 *      when all are present, SF_CLONE_FAILED and exit when one cannot be
 *      had.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/rcu.h"
#include "qapi/error.h"
#include "qapi/visitor.h"
#include "qapi/util.h"
#include "qapi/qapi-commands-sf.h"
#include "qapi/qapi-events-sf.h"
#include "qapi/qapi-types-qom.h"
#include "qom/object_interfaces.h"
#include "crypto/secret_common.h"
#include "hw/boards.h"
#include "io/channel-buffer.h"
#include "migration/qemu-file.h"
#include "migration/savevm.h"
#include "exec/ram_addr.h"
#include "migration/ram.h"
#include "migration/misc.h"
#include "system/runstate.h"
#include "system/system.h"
#include "system/cpus.h"
#include "sf-clone.h"
#include "sf-lazyram.h"
#include "hw/sf/sf-generation.h"
#include "hw/sf/sf-identity.h"
#include "hw/sf/sf-link.h"
#include "lib/sf-client.h"
#include "lib/sf-descriptor.h"
#include "lib/sf-transport.h"
#include "trace.h"

#define TYPE_SF_CLONE "sf-clone"
/* A descriptor holds device state, not RAM: far below this. */
#define SF_CLONE_DESC_MAX (256 * 1024 * 1024)
OBJECT_DECLARE_SIMPLE_TYPE(SfClone, SF_CLONE)

struct SfClone {
    Object parent_obj;

    /*
     * Properties.  Those lazy RAM needs are stored in its configuration
     * directly (server, clone-id, prefetch, retry-ms; the secret and fork
     * id are added by complete()), which it keeps for the clone's life.
     */
    char *descriptor_path;
    char *fork_id_str;
    char *secret_id;
    char *mac_str;
    SfLazyRamConfig cfg;
    SfCloneLink link;

    bool wait;                   /* a clone-to-be: sf-clone-become names the fork */
    bool machine_ready;          /* machine created and reset */
    bool becoming;               /* sf-clone-become went past the checks */

    SfDescriptor *desc;
    uint8_t mac[6];
    SfLazyRam *lazy;
    Notifier machine_done;
    int64_t spawn_ns;            /* when the launcher started us, or 0 */
    int64_t start_to_run_us;
    int64_t load_us;
};

static SfClone *sf_clone_singleton;

bool sf_clone_active(void)
{
    return sf_clone_singleton != NULL;
}

bool sf_clone_memory_complete(void)
{
    SfLazyRamStats st;

    if (!sf_clone_singleton) {
        return true;
    }
    if (!sf_clone_singleton->lazy) {
        return false;
    }
    sf_lazyram_get_stats(sf_clone_singleton->lazy, &st);
    return st.complete;
}

/* Process start time, for "time to first guest instruction". */
static int64_t sf_clone_process_start_ns(SfClone *s)
{
    g_autofree char *stat = NULL;
    unsigned long long start_ticks;
    struct timespec boot;
    int64_t now_boot, age;
    const char *p;

    if (s->spawn_ns) {
        return s->spawn_ns;
    }
    /* Field 22 of /proc/self/stat, in clock ticks since boot (10 ms). */
    if (!g_file_get_contents("/proc/self/stat", &stat, NULL, NULL) ||
        !(p = strrchr(stat, ')'))) {
        return 0;
    }
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u "
               "%*d %*d %*d %*d %*d %*d %llu", &start_ticks) != 1) {
        return 0;
    }
    clock_gettime(CLOCK_BOOTTIME, &boot);
    now_boot = boot.tv_sec * 1000000000LL + boot.tv_nsec;
    age = now_boot -
          (int64_t)start_ticks * (1000000000LL / sysconf(_SC_CLK_TCK));
    return g_get_monotonic_time() * 1000 - age;
}

/* --- failure and completion, called from the fault thread ---------------- */

static void sf_clone_lazy_failed(const char *reason, void *opaque)
{
    SfClone *s = opaque;

    error_report("sf-clone: clone %u of fork %" PRIu64 " stops: %s",
                 s->cfg.clone_id, s->desc->fork_id, reason);
    /*
     * Emitted from the fault thread itself, not from a bottom half: the
     * main loop may be blocked for good behind a vCPU that faulted on a
     * missing page while holding the BQL (a virtio kick reading a vring),
     * and events may be sent from any thread (migration and block jobs
     * do).  The QMP write is synchronous.
     */
    qapi_event_send_sf_clone_failed(s->cfg.clone_id, s->desc->fork_id,
                                    reason);
    /*
     * vCPUs may be blocked on pages that will never come, so an orderly
     * shutdown (which pauses them) cannot finish.  Exit now; the kernel
     * releases the userfaultfd, guest RAM and sockets.
     */
    fflush(stderr);
    _exit(EXIT_FAILURE);
}

static void sf_clone_complete_bh(void *opaque)
{
    SfClone *s = opaque;
    SfLazyRamStats st;

    sf_lazyram_get_stats(s->lazy, &st);
    qapi_event_send_sf_clone_complete(s->cfg.clone_id, s->desc->fork_id,
                                      st.pages_fetched, st.zero_pages);
}

static void sf_clone_lazy_complete(void *opaque)
{
    aio_bh_schedule_oneshot(qemu_get_aio_context(), sf_clone_complete_bh,
                            opaque);
}

/* --- starting the clone ---------------------------------------------------- */

/* Match our RAM blocks to the descriptor's, in its order. */
static SfLazyBlock *sf_clone_match_blocks(SfClone *s, Error **errp)
{
    const SfDescriptor *d = s->desc;
    g_autofree SfLazyBlock *lb = g_new0(SfLazyBlock, d->nblocks);
    RAMBlock *rb;
    uint32_t ours = 0;

    RCU_READ_LOCK_GUARD();
    RAMBLOCK_FOREACH_NOT_IGNORED(rb) {
        ours++;
    }
    if (ours != d->nblocks) {
        error_setg(errp, "this VM has %u RAM blocks, the fork has %u: start "
                   "the clone with the parent's machine options", ours,
                   d->nblocks);
        return NULL;
    }
    for (uint32_t i = 0; i < d->nblocks; i++) {
        const SfBlockInfo *bi = &d->blocks[i];

        rb = qemu_ram_block_by_name(bi->idstr);
        if (!rb || migrate_ram_is_ignored(rb)) {
            error_setg(errp, "RAM block '%s' of the fork does not exist in "
                       "this VM", bi->idstr);
            return NULL;
        }
        if (bi->page_size != qemu_ram_pagesize(rb) ||
            bi->page_size != qemu_real_host_page_size()) {
            error_setg(errp, "RAM block '%s': page size %u, this VM has %zu",
                       bi->idstr, bi->page_size, qemu_ram_pagesize(rb));
            return NULL;
        }
        if (qemu_ram_get_used_length(rb) != bi->length) {
            Error *local_err = NULL;

            /* Resizeable blocks (ACPI tables, fw_cfg) follow the parent. */
            if (!(rb->flags & RAM_RESIZEABLE) ||
                qemu_ram_resize(rb, bi->length, &local_err)) {
                error_setg(errp, "RAM block '%s' is %" PRIu64 " bytes, the "
                           "fork's is %" PRIu64 ": start the clone with the "
                           "parent's -m", bi->idstr,
                           (uint64_t)qemu_ram_get_used_length(rb),
                           bi->length);
                error_free(local_err);
                return NULL;
            }
        }
        lb[i].rb = rb;
        lb[i].host = qemu_ram_get_host_addr(rb);
        lb[i].length = bi->length;
    }
    return g_steal_pointer(&lb);
}

static int sf_clone_load_devices(SfClone *s, Error **errp)
{
    QIOChannelBuffer *bioc = qio_channel_buffer_new(0);
    QEMUFile *f;
    int ret;

    /* The buffer channel reads from our copy; it does not free it. */
    bioc->data = s->desc->devstate;
    bioc->capacity = bioc->usage = s->desc->devstate_len;
    qio_channel_set_name(QIO_CHANNEL(bioc), "sf-clone-devstate");
    f = qemu_file_new_input(QIO_CHANNEL(bioc));

    /* qemu_save_device_state() wrote magic, version, sections, EOF. */
    if (qemu_get_be32(f) != QEMU_VM_FILE_MAGIC ||
        qemu_get_be32(f) != QEMU_VM_FILE_VERSION) {
        error_setg(errp, "descriptor holds no QEMU device state stream");
        ret = -EINVAL;
    } else {
        cpu_synchronize_all_pre_loadvm();
        ret = qemu_load_device_state(f);
        if (ret < 0) {
            error_setg(errp, "loading the parent's device state failed "
                       "(%d); see the messages above", ret);
        }
    }
    qemu_fclose(f);
    bioc->data = NULL;
    object_unref(OBJECT(bioc));
    return ret;
}

static void G_NORETURN sf_clone_start_failed(SfClone *s, Error *err)
{
    error_reportf_err(err, "sf-clone: clone %u of fork %" PRIu64 ": ",
                      s->cfg.clone_id, s->desc->fork_id);
    qapi_event_send_sf_clone_failed(s->cfg.clone_id, s->desc->fork_id,
                                    "clone could not start; see its log");
    exit(EXIT_FAILURE);
}

/* What can be checked against this VM before anything is armed. */
static SfLazyBlock *sf_clone_check_fork(SfClone *s, Error **errp)
{
    MachineClass *mc = MACHINE_GET_CLASS(current_machine);

    if (strcmp(mc->name, s->desc->machine)) {
        error_setg(errp, "the fork is of a '%s' machine, this VM is '%s'",
                   s->desc->machine, mc->name);
        return NULL;
    }
    return sf_clone_match_blocks(s, errp);
}

/*
 * Arm lazy RAM over the blocks: false with errp when the page server
 * cannot be had, with nothing armed (the process is as it was).
 */
static bool sf_clone_arm(SfClone *s, SfLazyBlock *blocks, Error **errp)
{
    s->lazy = sf_lazyram_start(blocks, s->desc->nblocks, &s->cfg, errp);
    return s->lazy != NULL;
}

/* Device state, identity, run: past arming there is no way back. */
static void sf_clone_run(SfClone *s)
{
    Error *err = NULL;
    int64_t t0, start_ns;

    t0 = g_get_monotonic_time();
    if (sf_clone_load_devices(s, &err) < 0) {
        goto fail;
    }
    s->load_us = g_get_monotonic_time() - t0;
    trace_sf_clone_loaded(s->desc->devstate_len, s->load_us);

    sf_identity_apply(s->desc->fork_id, s->cfg.clone_id,
                      s->mac_str ? s->mac : NULL);
    /* Pending at the guest's first instruction: its kernel reseeds. */
    if (sf_generation_new(&err) < 0) {
        goto fail;
    }
    if (!sf_link_start(s->link == SF_CLONE_LINK_HELD, &err)) {
        goto fail;
    }

    if (autostart || s->wait) {
        vm_start();
    } else {
        runstate_set(RUN_STATE_PAUSED);
    }
    start_ns = sf_clone_process_start_ns(s);
    s->start_to_run_us = start_ns ?
        (g_get_monotonic_time() * 1000 - start_ns) / 1000 : 0;
    info_report("sf-clone: clone %u of fork %" PRIu64 " running "
                "(%" PRId64 " us after %s, device state loaded in %"
                PRId64 " us)", s->cfg.clone_id, s->desc->fork_id,
                s->start_to_run_us, s->wait ? "sf-clone-become" : "start",
                s->load_us);
    return;

fail:
    sf_clone_start_failed(s, err);
}

static void sf_clone_start_bh(void *opaque)
{
    SfClone *s = opaque;
    Error *err = NULL;
    g_autofree SfLazyBlock *blocks = sf_clone_check_fork(s, &err);

    if (!blocks || !sf_clone_arm(s, blocks, &err)) {
        sf_clone_start_failed(s, err);
    }
    sf_clone_run(s);
}

static void sf_clone_ready_bh(void *opaque)
{
    SF_CLONE(opaque)->machine_ready = true;
    info_report("sf-clone: waiting for a fork (sf-clone-become)");
}

static void sf_clone_machine_done(Notifier *n, void *data)
{
    SfClone *s = container_of(n, SfClone, machine_done);

    /* Machine reset still follows this notifier; start after it. */
    aio_bh_schedule_oneshot(qemu_get_aio_context(),
                            s->wait ? sf_clone_ready_bh : sf_clone_start_bh,
                            s);
}

/*
 * A clone vm-fork launched into its own directory removes its log at a
 * clean exit (SNOWFLOCK_CLONE_LOG, set by sf-launch.c), and the fork's
 * directories if that empties them: its parent may be gone by then.  A
 * clean exit is a shutdown that was asked for, not a guest panic; a clone
 * that fails (_exit in sf_clone_lazy_failed(), exit() when it cannot
 * start) keeps its log, and its parent says where.
 */
static char *sf_clone_log;
static bool sf_clone_clean_exit;

static void sf_clone_on_shutdown(Notifier *n, void *data)
{
    ShutdownCause *cause = data;

    sf_clone_clean_exit = *cause != SHUTDOWN_CAUSE_GUEST_PANIC;
}

static void sf_clone_on_exit(Notifier *n, void *data)
{
    g_autofree char *dir = NULL;
    g_autofree char *run_dir = NULL;

    if (!sf_clone_clean_exit) {
        return;
    }
    dir = g_path_get_dirname(sf_clone_log);
    run_dir = g_path_get_dirname(dir);
    unlink(sf_clone_log);
    rmdir(dir);
    rmdir(run_dir);
}

static void sf_clone_own_log(void)
{
    static Notifier shutdown = { .notify = sf_clone_on_shutdown };
    static Notifier exit = { .notify = sf_clone_on_exit };
    const char *log = g_getenv("SNOWFLOCK_CLONE_LOG");

    if (log && g_path_is_absolute(log)) {
        sf_clone_log = g_strdup(log);
        qemu_register_shutdown_notifier(&shutdown);
        qemu_add_exit_notifier(&exit);
    }
}

/* --- QOM --------------------------------------------------------------- */

static bool sf_clone_parse_mac(const char *str, uint8_t mac[6])
{
    int end = 0;

    return sscanf(str, "%2hhx:%2hhx:%2hhx:%2hhx:%2hhx:%2hhx%n", &mac[0],
                  &mac[1], &mac[2], &mac[3], &mac[4], &mac[5], &end) == 6 &&
           end == 17 && str[end] == '\0';
}

/* The fork secret, from the secret object named by secret-id. */
static bool sf_clone_read_secret(SfClone *s, Error **errp)
{
    g_autofree uint8_t *data = NULL;
    size_t len = 0;
    bool ok;

    if (qcrypto_secret_lookup(s->secret_id, &data, &len, errp) < 0) {
        error_prepend(errp, "sf-clone: secret-id: ");
        return false;
    }
    ok = len == SF_WIRE_SECRET_LEN;
    if (ok) {
        memcpy(s->cfg.secret, data, SF_WIRE_SECRET_LEN);
    } else {
        error_setg(errp, "sf-clone: secret '%s' holds %zu bytes; a fork "
                   "secret is %d (the file vm-fork wrote, format=raw)",
                   s->secret_id, len, SF_WIRE_SECRET_LEN);
    }
    /* Our copy is in cfg; leave none on the heap. */
    memset(data, 0, len);
    return ok;
}

/*
 * The descriptor from its file, or from the page server (DESC_GET, the
 * secret and fork id authenticating us).  Either way its fork id is the
 * one we were told, and the one lazy RAM asks for pages of.
 */
static bool sf_clone_load_descriptor(SfClone *s, Error **errp)
{
    g_autoptr(GError) gerr = NULL;
    uint64_t fork_id = 0;
    char *end = NULL;

    if (s->fork_id_str) {
        errno = 0;
        fork_id = g_ascii_strtoull(s->fork_id_str, &end, 16);
        if (errno || !*s->fork_id_str || *end) {
            error_setg(errp, "sf-clone: fork-id '%s' is not a hexadecimal "
                       "fork id (vm-fork's \"id\", as clone-args give it)",
                       s->fork_id_str);
            return false;
        }
    }
    if (s->descriptor_path) {
        s->desc = sf_descriptor_read(s->descriptor_path, &gerr);
    } else {
        SfClientId id = { .fork_id = fork_id, .clone_id = s->cfg.clone_id };
        g_autoptr(GBytes) bytes = NULL;

        memcpy(id.secret, s->cfg.secret, sizeof(id.secret));
        bytes = sf_client_fetch_descriptor(s->cfg.server, &id,
                                           SF_CLONE_DESC_MAX,
                                           MAX(s->cfg.retry_ms, 1000), &gerr);
        memset(id.secret, 0, sizeof(id.secret));
        if (bytes) {
            gsize len;
            const uint8_t *p = g_bytes_get_data(bytes, &len);

            s->desc = sf_descriptor_decode(p, len, &gerr);
        }
        if (!s->desc) {
            g_prefix_error(&gerr, "descriptor from %s: ", s->cfg.server);
        }
    }
    if (!s->desc) {
        error_setg(errp, "sf-clone: %s", gerr->message);
        return false;
    }
    if (s->fork_id_str && s->desc->fork_id != fork_id) {
        error_setg(errp, "sf-clone: the descriptor is of fork %016" PRIx64
                   ", not fork-id %016" PRIx64, s->desc->fork_id, fork_id);
        sf_descriptor_free(g_steal_pointer(&s->desc));
        return false;
    }
    s->cfg.fork_id = s->desc->fork_id;
    return true;
}

static bool sf_clone_prepare(SfClone *s, Error **errp);

static void sf_clone_complete(UserCreatable *uc, Error **errp)
{
    SfClone *s = SF_CLONE(uc);
    g_autoptr(GError) gerr = NULL;
    const char *spawn;

    if (sf_clone_singleton) {
        error_setg(errp, "only one sf-clone object is allowed");
        return;
    }
    if (!runstate_check(RUN_STATE_PRELAUNCH)) {
        error_setg(errp, "sf-clone must be given on the command line "
                   "(a running VM cannot become a clone)");
        return;
    }
    if (!s->wait && !sf_clone_prepare(s, errp)) {
        return;
    }
    spawn = g_getenv("SNOWFLOCK_SPAWN_NS");
    if (spawn && !s->wait) {
        s->spawn_ns = g_ascii_strtoll(spawn, NULL, 10);
    }
    sf_clone_own_log();

    /* Like -incoming: no ROM reset into RAM, no vCPU start by vl.c. */
    runstate_set(RUN_STATE_INMIGRATE);
    s->machine_done.notify = sf_clone_machine_done;
    qemu_add_machine_init_done_notifier(&s->machine_done);
    sf_clone_singleton = s;
}

/*
 * The fork's side of the properties: checked, the secret read, the
 * descriptor loaded and checked.  false with errp (nothing kept).
 */
static bool sf_clone_prepare(SfClone *s, Error **errp)
{
    if (!s->cfg.server || !s->secret_id ||
        (!s->descriptor_path && !s->fork_id_str)) {
        error_setg(errp, "sf-clone needs server, secret-id, clone-id, and "
                   "fork-id or descriptor (or both)");
        return false;
    }
    if (s->cfg.clone_id == 0) {
        error_setg(errp, "sf-clone: clone-id must be 1 or more");
        return false;
    }
    if (s->cfg.retry_ms > INT_MAX) {
        error_setg(errp, "sf-clone: retry-ms must be at most %d", INT_MAX);
        return false;
    }
    if (s->mac_str && (!sf_clone_parse_mac(s->mac_str, s->mac) ||
                       (s->mac[0] & 1))) {
        error_setg(errp, "sf-clone: mac '%s' is not a unicast MAC address",
                   s->mac_str);
        return false;
    }
    if (!sf_transport_lookup(s->cfg.server)) {
        error_setg(errp, "sf-clone: server '%s' is not unix:PATH or "
                   "tcp:HOST:PORT", s->cfg.server);
        return false;
    }
    if (!sf_clone_read_secret(s, errp)) {
        return false;
    }
    if (!sf_clone_load_descriptor(s, errp)) {
        return false;
    }
    if (s->desc->page_size != qemu_real_host_page_size()) {
        error_setg(errp, "sf-clone: fork has %u-byte pages, this host %zu",
                   s->desc->page_size, qemu_real_host_page_size());
        sf_descriptor_free(s->desc);
        s->desc = NULL;
        return false;
    }
    return true;
}

static bool sf_clone_can_be_deleted(UserCreatable *uc)
{
    return false;    /* the clone's memory depends on it for its life */
}

#define SF_CLONE_STR_PROP(field)                                            \
    static char *sf_clone_get_##field(Object *obj, Error **errp)            \
    {                                                                       \
        return g_strdup(SF_CLONE(obj)->field);                              \
    }                                                                       \
    static void sf_clone_set_##field(Object *obj, const char *v,            \
                                     Error **errp)                          \
    {                                                                       \
        SfClone *s = SF_CLONE(obj);                                         \
        g_free(s->field);                                                   \
        s->field = g_strdup(v);                                             \
    }

SF_CLONE_STR_PROP(descriptor_path)
SF_CLONE_STR_PROP(fork_id_str)
SF_CLONE_STR_PROP(secret_id)
SF_CLONE_STR_PROP(mac_str)

static char *sf_clone_get_server(Object *obj, Error **errp)
{
    return g_strdup(SF_CLONE(obj)->cfg.server);
}

static void sf_clone_set_server(Object *obj, const char *v, Error **errp)
{
    SfClone *s = SF_CLONE(obj);

    g_free((char *)s->cfg.server);
    s->cfg.server = g_strdup(v);
}

/*
 * The fork secret used to be a property; it is refused by name so that a
 * command line written for that sees why, rather than "not found".
 */
static void sf_clone_set_secret(Object *obj, const char *v, Error **errp)
{
    error_setg(errp, "sf-clone: 'secret' was removed: it put the fork "
               "secret on the command line, readable by every local user. "
               "Give it as -object secret,id=ID,file=PATH,format=raw and "
               "secret-id=ID (vm-fork's clone-args do)");
}

/* One accessor for get and set: the visitor's direction decides. */
static void sf_clone_visit_u32(Object *obj, Visitor *v, const char *name,
                               void *opaque, Error **errp)
{
    uint32_t *field = (uint32_t *)((char *)obj + (uintptr_t)opaque);

    visit_type_uint32(v, name, field, errp);
}

static int sf_clone_get_link(Object *obj, Error **errp)
{
    return SF_CLONE(obj)->link;
}

static void sf_clone_set_link(Object *obj, int v, Error **errp)
{
    SF_CLONE(obj)->link = v;
}

static bool sf_clone_get_prefetch(Object *obj, Error **errp)
{
    return SF_CLONE(obj)->cfg.prefetch;
}

static void sf_clone_set_prefetch(Object *obj, bool v, Error **errp)
{
    SF_CLONE(obj)->cfg.prefetch = v;
}

static bool sf_clone_get_multicast(Object *obj, Error **errp)
{
    return SF_CLONE(obj)->cfg.multicast;
}

static void sf_clone_set_multicast(Object *obj, bool v, Error **errp)
{
    SF_CLONE(obj)->cfg.multicast = v;
}

static bool sf_clone_get_wait(Object *obj, Error **errp)
{
    return SF_CLONE(obj)->wait;
}

static void sf_clone_set_wait(Object *obj, bool v, Error **errp)
{
    SF_CLONE(obj)->wait = v;
}

static void sf_clone_init(Object *obj)
{
    SfClone *s = SF_CLONE(obj);

    s->cfg.prefetch = true;
    s->cfg.multicast = true;
    s->cfg.retry_ms = 5000;
    s->cfg.failed = sf_clone_lazy_failed;
    s->cfg.complete = sf_clone_lazy_complete;
    s->cfg.opaque = s;
}

static void sf_clone_class_init(ObjectClass *oc, void *data)
{
    UserCreatableClass *ucc = USER_CREATABLE_CLASS(oc);

    ucc->complete = sf_clone_complete;
    ucc->can_be_deleted = sf_clone_can_be_deleted;

    object_class_property_add_str(oc, "descriptor",
                                  sf_clone_get_descriptor_path,
                                  sf_clone_set_descriptor_path);
    object_class_property_set_description(oc, "descriptor",
        "path of the fork descriptor (CPU and device state); without it, "
        "it is fetched from the page server");
    object_class_property_add_str(oc, "fork-id", sf_clone_get_fork_id_str,
                                  sf_clone_set_fork_id_str);
    object_class_property_set_description(oc, "fork-id",
        "the fork's id, hexadecimal (vm-fork's id)");
    object_class_property_add_str(oc, "server", sf_clone_get_server,
                                  sf_clone_set_server);
    object_class_property_set_description(oc, "server",
        "page server endpoint, unix:PATH or tcp:HOST:PORT");
    object_class_property_add_str(oc, "secret-id", sf_clone_get_secret_id,
                                  sf_clone_set_secret_id);
    object_class_property_set_description(oc, "secret-id",
        "id of the secret object holding the fork's 16-byte secret");
    object_class_property_add_str(oc, "secret", NULL, sf_clone_set_secret);
    object_class_property_set_description(oc, "secret",
        "removed (it leaked the secret through the command line); "
        "use secret-id");
    object_class_property_add(oc, "clone-id", "uint32", sf_clone_visit_u32,
                              sf_clone_visit_u32, NULL,
                              (void *)offsetof(SfClone, cfg.clone_id));
    object_class_property_set_description(oc, "clone-id",
        "this clone's id, 1..N");
    object_class_property_add(oc, "retry-ms", "uint32", sf_clone_visit_u32,
                              sf_clone_visit_u32, NULL,
                              (void *)offsetof(SfClone, cfg.retry_ms));
    object_class_property_set_description(oc, "retry-ms",
        "how long to retry an unreachable page server before stopping");
    object_class_property_add_str(oc, "mac", sf_clone_get_mac_str,
                                  sf_clone_set_mac_str);
    object_class_property_set_description(oc, "mac",
        "MAC address of the clone's first virtio-net device");
    object_class_property_add_bool(oc, "prefetch", sf_clone_get_prefetch,
                                   sf_clone_set_prefetch);
    object_class_property_set_description(oc, "prefetch",
        "push pages in the background besides demand faults");
    object_class_property_add_bool(oc, "multicast", sf_clone_get_multicast,
                                   sf_clone_set_multicast);
    object_class_property_set_description(oc, "multicast",
        "receive the fork's multicast group when it has one (off: every "
        "answer on this clone's own connection)");
    object_class_property_add_bool(oc, "wait", sf_clone_get_wait,
                                   sf_clone_set_wait);
    object_class_property_set_description(oc, "wait",
        "a clone-to-be: start the machine now, become a clone of the fork "
        "that QMP sf-clone-become names");
    object_class_property_add_enum(oc, "link", "SfCloneLink",
                                   &SfCloneLink_lookup, sf_clone_get_link,
                                   sf_clone_set_link);
    object_class_property_set_description(oc, "link",
        "NIC links at the start: up, or held down until the guest agent "
        "reports the clone's identity applied (or set_link raises them)");
}

static const TypeInfo sf_clone_info = {
    .name = TYPE_SF_CLONE,
    .parent = TYPE_OBJECT,
    .instance_size = sizeof(SfClone),
    .instance_init = sf_clone_init,
    .class_init = sf_clone_class_init,
    .interfaces = (InterfaceInfo[]) {
        { TYPE_USER_CREATABLE },
        { }
    },
};

static void sf_clone_register_types(void)
{
    type_register_static(&sf_clone_info);
}

type_init(sf_clone_register_types);

/* --- QMP --------------------------------------------------------------- */

/*
 * A waiting clone becomes the clone the arguments name.  Everything that
 * can be refused is refused before anything is armed, and the process
 * keeps waiting, usable for another fork: a wrong or missing secret, a
 * descriptor that cannot be read or fails its checksum, a fork of another
 * machine or RAM layout, a page server that refuses or cannot be reached.
 * Once lazy RAM is armed the process is that clone; a failure after it
 * (device state that does not load) ends it, as at a clone's start.
 */
void qmp_sf_clone_become(const char *server, const char *secret_id,
                         uint32_t clone_id, const char *descriptor,
                         const char *fork_id, bool has_prefetch,
                         bool prefetch, bool has_multicast, bool multicast,
                         bool has_retry_ms, uint32_t retry_ms,
                         const char *mac, const char *link, Error **errp)
{
    SfClone *s = sf_clone_singleton;
    g_autofree SfLazyBlock *blocks = NULL;
    int64_t t0 = g_get_monotonic_time();

    if (!s || !s->wait) {
        error_setg(errp, "this QEMU is not a waiting clone (-object "
                   "sf-clone,id=sf-clone,wait=on)");
        return;
    }
    if (s->becoming) {
        error_setg(errp, "this clone already became clone %u of fork %"
                   PRIu64, s->cfg.clone_id, s->desc->fork_id);
        return;
    }
    if (!s->machine_ready) {
        error_setg(errp, "the machine is not ready yet; try again");
        return;
    }
    sf_clone_set_server(OBJECT(s), server, NULL);
    sf_clone_set_secret_id(OBJECT(s), secret_id, NULL);
    sf_clone_set_descriptor_path(OBJECT(s), descriptor, NULL);
    sf_clone_set_fork_id_str(OBJECT(s), fork_id, NULL);
    sf_clone_set_mac_str(OBJECT(s), mac, NULL);
    s->cfg.clone_id = clone_id;
    s->cfg.prefetch = has_prefetch ? prefetch : true;
    s->cfg.multicast = has_multicast ? multicast : true;
    s->cfg.retry_ms = has_retry_ms ? retry_ms : 5000;
    s->link = qapi_enum_parse(&SfCloneLink_lookup, link, SF_CLONE_LINK_UP,
                              errp);
    if (s->link < 0) {
        s->link = SF_CLONE_LINK_UP;
        return;
    }
    if (!sf_clone_prepare(s, errp)) {
        return;
    }
    blocks = sf_clone_check_fork(s, errp);
    if (!blocks || !sf_clone_arm(s, blocks, errp)) {
        sf_descriptor_free(s->desc);
        s->desc = NULL;
        return;
    }
    s->becoming = true;
    /* "Start to run" counts from this command. */
    s->spawn_ns = t0 * 1000;
    sf_clone_run(s);
}

SfCloneStatus *qmp_query_sf_clone(Error **errp)
{
    SfClone *s = sf_clone_singleton;
    SfCloneStatus *r = g_new0(SfCloneStatus, 1);
    SfLazyRamStats st = { 0 };
    SfCloneStats *c;

    if (!s) {
        r->state = SF_CLONE_MEMORY_STATE_NOT_A_CLONE;
        return r;
    }
    if (s->wait && !s->lazy) {
        r->state = SF_CLONE_MEMORY_STATE_WAITING;
        return r;
    }
    if (s->lazy) {
        sf_lazyram_get_stats(s->lazy, &st);
    }
    r->state = st.failed ? SF_CLONE_MEMORY_STATE_FAILED :
               st.complete ? SF_CLONE_MEMORY_STATE_COMPLETE :
               SF_CLONE_MEMORY_STATE_FETCHING;
    /* Every clone branch is an SfCloneStats: fill whichever is active. */
    c = r->state == SF_CLONE_MEMORY_STATE_FAILED ? &r->u.failed :
        r->state == SF_CLONE_MEMORY_STATE_COMPLETE ? &r->u.complete :
        &r->u.fetching;
    c->clone_id = s->cfg.clone_id;
    c->fork_id = s->desc->fork_id;
    c->prefetch = s->cfg.prefetch;
    c->pages_total = st.pages_total;
    c->pages_present = st.pages_present;
    c->pages_fetched = st.pages_fetched;
    c->zero_pages = st.zero_pages;
    c->avoided_pages = st.avoided_pages;
    c->working_set_pages = st.workset_pages;
    c->pushed_pages = st.pushed_pages;
    c->bytes = st.bytes;
    c->faults = st.faults;
    c->fault_p50_us = st.fault_p50_us;
    c->fault_p99_us = st.fault_p99_us;
    c->reconnects = st.reconnects;
    c->start_to_run_us = s->start_to_run_us;
    c->load_us = s->load_us;
    c->link = g_strdup(sf_link_state());
    c->requests = st.requests;
    c->retries = st.retries;
    c->unicast_asks = st.unicast_asks;
    c->unrequested_pages = st.unrequested;
    c->rtt_us = st.rtt_us;
    if (st.mcast) {
        SfCloneMulticast *m = g_new0(SfCloneMulticast, 1);

        m->group = g_strdup(st.mcast_group);
        m->pages = st.mcast_pages;
        m->datagrams = st.mcast_datagrams;
        m->bytes = st.mcast_bytes;
        m->redundant_pages = st.mcast_redundant;
        m->auth_failed = st.mcast_auth_failed;
        m->replayed = st.mcast_replayed;
        m->rejected = st.mcast_rejected;
        m->lost = st.mcast_lost;
        m->loss_ppm = st.mcast_loss_ppm;
        m->rx_kbps = st.mcast_rx_kbps;
        c->multicast = m;
    }
    return r;
}
