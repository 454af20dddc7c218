/*
 * sfd: forks.
 *
 * A fork request (from a client's "fork", or a guest's clone or
 * create-clones request through agent.c) asks for N clones; sfd grants
 * m = min(N, the domain's <sf:clone max> minus its live clones, the
 * host limit minus all live clones) and refuses when m is 0.  Then, in order:
 *
 *   1. reserve m clone names <vm>-<id> (lowest free ids) and run each
 *      clone's prepare hook; one failing aborts before anything forks
 *   2. vm-fork {clones: m, launch: false} on the parent, into a fork
 *      directory under the run directory
 *   3. per clone, concurrently: tap on the family bridge, start hook,
 *      spawn QEMU with the parent's machine options plus clone-args,
 *      QMP, read back the MAC QEMU derived (qom-get), tell the guest who
 *      it is: an identity through its agent (answering the guest's
 *      request for a guest fork), else MAC and address through its
 *      serial console; started hook
 *   4. answer with every clone's id, pid, MAC, IP and state
 *
 * A guest fork (SfdForkGuest) is told once step 2 is done (forked), and
 * one from a checkpoint skips step 2: the checkpoint's fork is reused.
 *
 * A clone that fails in step 3 is killed and reported as failed; the
 * others are kept.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "sfd.h"
#include "qmp.h"
#include "lineio.h"

#define SFD_SERIAL_TIMEOUT_S 90

typedef struct ForkOp {
    SfdVm *parent;
    SfdDomain *d;
    int requested;
    char *origin;
    GPtrArray *clones; /* SfdVm, referenced */
    guint hook_i;
    int pending;
    char *dir;
    guint64 fork_id;
    gint64 pause_us;
    pid_t server_pid;
    GStrv clone_args;
    guint32 generation;  /* the parent's fork number */
    SfdForkGuest *guest; /* NULL: a client's fork */
    SfdForkDone done;
    gpointer opaque;
} ForkOp;

typedef struct CloneOp CloneOp;

/* The serial conversation outlives the CloneOp by one loop iteration
 * (a line-I/O object is closed from the loop, not from its callback). */
typedef struct SerialCtx {
    CloneOp *co; /* NULL once answered or abandoned */
    SfdLineIO *io;
} SerialCtx;

struct CloneOp {
    ForkOp *fork;
    SfdVm *clone;
    SerialCtx *serial;
    guint timer;
};

void sfd_fork_answer_parse(JsonObject *o, guint64 *fork_id, pid_t *server_pid,
                           GStrv *clone_args)
{
    JsonArray *a = json_object_has_member(o, "clone-args")
                       ? json_object_get_array_member(o, "clone-args")
                       : NULL;
    guint n = a ? json_array_get_length(a) : 0;

    *fork_id = json_object_get_int_member_with_default(o, "id", 0);
    *server_pid = json_object_get_int_member_with_default(o, "server-pid", 0);
    *clone_args = g_new0(char *, n + 1);
    for (guint i = 0; i < n; i++) {
        (*clone_args)[i] = g_strdup(json_array_get_string_element(a, i));
    }
}

int sfd_clones_alive(const char *domain)
{
    GHashTableIter it;
    gpointer v;
    int n = 0;

    g_hash_table_iter_init(&it, sfd->vms);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        SfdVm *vm = v;
        if (vm->clone_id && vm->state != SFD_VM_EXITED &&
            (!domain || !strcmp(vm->domain, domain))) {
            n++;
        }
    }
    return n;
}

static gboolean clone_id_used(const char *domain, int id)
{
    g_autofree char *name = g_strdup_printf("%s-%d", domain, id);

    return g_hash_table_contains(sfd->vms, name);
}

static void fork_free(ForkOp *op)
{
    for (guint i = 0; i < op->clones->len; i++) {
        sfd_vm_unref(op->clones->pdata[i]);
    }
    g_ptr_array_free(op->clones, TRUE);
    sfd_vm_unref(op->parent);
    g_free(op->origin);
    g_free(op->dir);
    g_strfreev(op->clone_args);
    if (op->guest) {
        g_free(op->guest->dir);
        g_strfreev(op->guest->clone_args);
        g_free(op->guest);
    }
    g_free(op);
}

/* Abort before any clone was spawned: release the reservations. */
static void fork_abort(ForkOp *op, const char *cls, const char *err)
{
    for (guint i = 0; i < op->clones->len; i++) {
        SfdVm *c = op->clones->pdata[i];
        if (i < op->hook_i || op->hook_i == op->clones->len) {
            sfd_vm_exited(c, -1); /* runs its release hook */
        } else if (g_hash_table_lookup(sfd->vms, c->name) == c) {
            c->state = SFD_VM_EXITED;
            g_hash_table_remove(sfd->vms, c->name);
            sfd_vm_unref(c);
        }
    }
    if (op->dir) {
        rmdir(op->dir);
    }
    op->done(NULL, cls, err, op->opaque);
    fork_free(op);
}

static void fork_finish(ForkOp *op)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    int up = 0;

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "vm");
    json_builder_add_string_value(b, op->parent->name);
    g_autofree char *fid = g_strdup_printf("%" G_GUINT64_FORMAT, op->fork_id);
    json_builder_set_member_name(b, "fork-id");
    json_builder_add_string_value(b, fid); /* uint64: see sfd_vm_to_json */
    json_builder_set_member_name(b, "origin");
    json_builder_add_string_value(b, op->origin);
    json_builder_set_member_name(b, "requested");
    json_builder_add_int_value(b, op->requested);
    json_builder_set_member_name(b, "granted");
    json_builder_add_int_value(b, op->clones->len);
    json_builder_set_member_name(b, "pause-us");
    json_builder_add_int_value(b, op->pause_us);
    json_builder_set_member_name(b, "server-pid");
    json_builder_add_int_value(b, op->server_pid);
    json_builder_set_member_name(b, "clones");
    json_builder_begin_array(b);
    for (guint i = 0; i < op->clones->len; i++) {
        SfdVm *c = op->clones->pdata[i];
        up += c->state == SFD_VM_RUNNING;
        json_builder_add_value(b, sfd_vm_to_json(c, FALSE));
    }
    json_builder_end_array(b);
    json_builder_set_member_name(b, "running");
    json_builder_add_int_value(b, up);
    json_builder_end_object(b);
    JsonNode *ret = json_builder_get_root(b);
    sfd_event("FORK_DONE", json_node_copy(ret));
    op->done(ret, NULL, NULL, op->opaque);
    fork_free(op);
}

static void clone_done(CloneOp *co, const char *err)
{
    ForkOp *op = co->fork;
    SfdVm *c = co->clone;

    if (co->timer) {
        g_source_remove(co->timer);
    }
    if (co->serial) {
        co->serial->co = NULL;
        sfd_lineio_close(co->serial->io); /* serial_closed frees it */
    }
    if (err) {
        g_warning("%s: %s", c->name, err);
        if (!c->failure) {
            c->failure = g_strdup(err);
        }
        if (c->state != SFD_VM_EXITED) {
            if (c->spawned && sfd_vm_kill(c, SIGKILL) == 0) {
                /* sfd_vm_exited() follows from the child watch */
            } else {
                sfd_vm_exited(c, -1);
            }
        }
    } else {
        c->state = SFD_VM_RUNNING;
        sfd_state_save_vm(c);
        sfd_hook_run("clone", c->name, "started", "begin", op->d, NULL, NULL);
        sfd_event("CLONE_STARTED", sfd_vm_to_json(c, FALSE));
    }
    g_free(co);
    if (--op->pending == 0) {
        fork_finish(op);
    }
}

static void serial_line(SfdLineIO *io, const char *line, gsize len,
                        gboolean overlong, gpointer opaque)
{
    SerialCtx *sc = opaque;
    CloneOp *co = sc->co;
    const char *m = overlong ? NULL : strstr(line, "@@SFNET ");

    if (!m || !co) {
        return;
    }
    int rc = atoi(m + 8);
    co->clone->net_configured = rc == 0;
    if (rc != 0) {
        g_warning("%s: configuring eth0 in the guest exited %d",
                  co->clone->name, rc);
    }
    clone_done(co, NULL);
}

static void serial_closed(SfdLineIO *io, gpointer opaque)
{
    SerialCtx *sc = opaque;
    CloneOp *co = sc->co;

    sfd_lineio_free(io);
    g_free(sc);
    if (co) {
        /* The console went away before the guest answered. */
        co->serial = NULL;
        clone_done(co, "serial console closed before the guest answered");
    }
}

static gboolean serial_timeout(gpointer data)
{
    CloneOp *co = data;

    co->timer = 0;
    clone_done(co, "the guest did not answer on its serial console");
    return G_SOURCE_REMOVE;
}

/* The busybox guest takes its address only at boot, which a clone does
 * not redo: tell it through the serial shell.  (The guest agent will
 * do this in a later issue.) */
static void clone_configure_guest(CloneOp *co)
{
    SfdVm *c = co->clone;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    g_strlcpy(sa.sun_path, c->serial_path, sizeof(sa.sun_path));
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        g_autofree char *m =
            g_strdup_printf("serial %s: %s", c->serial_path, g_strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        clone_done(co, m);
        return;
    }
    co->serial = g_new0(SerialCtx, 1);
    co->serial->co = co;
    co->serial->io = sfd_lineio_new(fd, 65536, 65536, serial_line,
                                    serial_closed, co->serial);
    /* The marker is split in the typed line so that the tty's echo of
     * the command never matches, only the printed result. */
    g_autofree char *cmd = g_strdup_printf(
        "(ip addr flush dev eth0 && ip link set eth0 address %s && "
        "ip link set eth0 up && ip addr add %s/%d dev eth0); "
        "echo \"@@SF\"\"NET $?@@\"\n",
        c->mac, c->ip, c->family->prefix);
    sfd_lineio_write(co->serial->io, cmd, strlen(cmd));
    co->timer = g_timeout_add_seconds(SFD_SERIAL_TIMEOUT_S, serial_timeout, co);
}

static void clone_identity_done(SfdVm *c, const char *err, gpointer opaque)
{
    CloneOp *co = opaque;

    if (!err) {
        c->net_configured = c->family != NULL;
        clone_done(co, NULL);
        return;
    }
    if (co->fork->guest) {
        /* Its program waits for this answer: without it the clone is
         * of no use. */
        g_autofree char *m = g_strdup_printf("identity: %s", err);
        clone_done(co, m);
        return;
    }
    g_warning("%s: identity through the guest agent failed (%s); "
              "configuring it through its serial console",
              c->name, err);
    if (c->family) {
        clone_configure_guest(co);
    } else {
        clone_done(co, NULL);
    }
}

static void clone_agent_info(SfdQmp *q, JsonNode *ret, const char *err,
                             gpointer opaque)
{
    CloneOp *co = opaque;
    SfdVm *c = co->clone;
    JsonObject *o = !err && ret && JSON_NODE_HOLDS_OBJECT(ret)
                        ? json_node_get_object(ret)
                        : NULL;

    if (o && json_object_get_boolean_member_with_default(o, "present", FALSE) &&
        json_object_get_boolean_member_with_default(o, "guest-connected",
                                                    FALSE)) {
        sfd_agent_send_identity(c, 0, 0, c->guest_id, co->fork->generation,
                                clone_identity_done, co);
        return;
    }
    /* No agent in the guest: the serial console is the fallback. */
    if (c->family) {
        clone_configure_guest(co);
    } else {
        clone_done(co, NULL);
    }
}

/* Tell the clone who it is: through its guest agent (answering the
 * guest's request for a guest fork), else through its serial console. */
static void clone_identify(CloneOp *co)
{
    SfdVm *c = co->clone;
    SfdForkGuest *g = co->fork->guest;

    if (g) {
        sfd_agent_send_identity(c, g->request, g->ticket, c->guest_id,
                                co->fork->generation, clone_identity_done, co);
        return;
    }
    sfd_qmp_cmd(c->qmp, "query-sf-agent", NULL, clone_agent_info, co);
}

static void clone_mac(SfdQmp *q, JsonNode *ret, const char *err,
                      gpointer opaque)
{
    CloneOp *co = opaque;
    SfdVm *c = co->clone;

    if (err || !ret || !JSON_NODE_HOLDS_VALUE(ret)) {
        g_autofree char *m =
            g_strdup_printf("qom-get mac: %s", err ? err : "no value");
        clone_done(co, m);
        return;
    }
    g_free(c->mac);
    c->mac = g_strdup(json_node_get_string(ret));
    sfd_state_save_vm(c);
    clone_identify(co);
}

static void clone_attached(SfdVm *c, const char *err, gpointer opaque)
{
    CloneOp *co = opaque;

    if (err || c->state == SFD_VM_EXITED) {
        g_autofree char *tail = sfd_vm_log_tail(c);
        g_autofree char *m = g_strdup_printf("QEMU did not come up (%s): %s",
                                             err ? err : "exited", tail);
        clone_done(co, m);
        return;
    }
    if (!c->family) {
        clone_identify(co);
        return;
    }
    JsonObject *args = json_object_new();
    json_object_set_string_member(args, "path", "/machine/peripheral/net0");
    json_object_set_string_member(args, "property", "mac");
    sfd_qmp_cmd(c->qmp, "qom-get", args, clone_mac, co);
}

static void clone_start_hook_done(gboolean ok, const char *msg, gpointer opaque)
{
    CloneOp *co = opaque;
    ForkOp *op = co->fork;
    SfdVm *c = co->clone;
    g_autoptr(GPtrArray) argv = NULL;
    g_autofree char *err = NULL;
    g_autofree char *id = NULL;

    if (!ok) {
        g_autofree char *m = g_strdup_printf("start hook: %s", msg);
        clone_done(co, m);
        return;
    }
    argv = sfd_vm_argv(c, op->parent->machine);
    id = g_strdup_printf("%d", c->qemu_clone_id);
    for (char **a = op->clone_args; *a; a++) {
        g_autofree char *x = g_strdup(*a);
        char *at = strstr(x, "@CLONE_ID@");
        if (at) {
            *at = '\0';
            /* The family decides the clone's MAC, not QEMU's default. */
            g_ptr_array_add(argv, g_strconcat(x, id, at + 10,
                                              c->family ? ",mac=" : "",
                                              c->family ? c->mac : "", NULL));
        } else {
            g_ptr_array_add(argv, g_strdup(*a));
        }
    }
    if (sfd_vm_spawn(c, argv, &err) < 0) {
        clone_done(co, err);
        return;
    }
    sfd_state_save_vm(c);
    sfd_vm_attach(c, clone_attached, co);
}

static void clone_launch(ForkOp *op, SfdVm *c)
{
    CloneOp *co = g_new0(CloneOp, 1);
    g_autofree char *err = NULL;

    co->fork = op;
    co->clone = c;
    if (op->parent->family) {
        c->tap = sfd_net_tap_add(op->parent->family, c->clone_id, &err);
        if (!c->tap) {
            clone_done(co, err);
            return;
        }
        c->family = op->parent->family;
        c->ip = sfd_net_ip(c->family, c->clone_id);
        g_free(c->mac);
        c->mac = sfd_net_clone_mac(c->family, c->clone_id);
    }
    sfd_state_save_vm(c);
    sfd_hook_run("clone", c->name, "start", "begin", op->d,
                 clone_start_hook_done, co);
}

/* The fork exists (vm-fork answered, or a checkpoint's): launch. */
static void fork_launch_all(ForkOp *op, int first_qemu_id, const char *fork_dir)
{
    guint64 server_st = sfd_proc_starttime(op->server_pid);

    op->pending = op->clones->len;
    for (guint i = 0; i < op->clones->len; i++) {
        SfdVm *c = op->clones->pdata[i];
        c->qemu_clone_id = first_qemu_id + i;
        c->guest_id = i + 1;
        c->fork_id = op->fork_id;
        c->server_pid = op->server_pid;
        c->server_starttime = server_st;
        c->fork_dir = g_strdup(fork_dir);
    }
    if (op->guest && op->guest->forked) {
        op->guest->forked(op->parent, op->clones, op->generation, NULL, NULL,
                          op->opaque);
    }
    for (guint i = 0; i < op->clones->len; i++) {
        clone_launch(op, op->clones->pdata[i]);
    }
}

static void fork_forked(SfdQmp *q, JsonNode *ret, const char *err,
                        gpointer opaque)
{
    ForkOp *op = opaque;
    JsonObject *o;

    if (err || !ret || !JSON_NODE_HOLDS_OBJECT(ret)) {
        g_autofree char *m =
            g_strdup_printf("vm-fork: %s", err ? err : "bad answer");
        fork_abort(op, "Failed", m);
        return;
    }
    o = json_node_get_object(ret);
    sfd_fork_answer_parse(o, &op->fork_id, &op->server_pid, &op->clone_args);
    op->pause_us = json_object_get_int_member_with_default(o, "pause-us", 0);
    g_message("%s: fork %" G_GUINT64_FORMAT
              ": %u clones, paused %" G_GINT64_FORMAT " us, page server %d",
              op->parent->name, op->fork_id, op->clones->len, op->pause_us,
              op->server_pid);
    fork_launch_all(op, 1, op->dir);
}

static void fork_prepare_next(gboolean ok, const char *msg, gpointer opaque)
{
    ForkOp *op = opaque;

    if (!ok) {
        /* hook_i already counts the clone whose hook failed: it too
         * gets its release hook. */
        SfdVm *c = op->clones->pdata[op->hook_i - 1];
        g_autofree char *m =
            g_strdup_printf("prepare hook of %s: %s", c->name, msg);
        fork_abort(op, "HookFailed", m);
        return;
    }
    if (op->hook_i < op->clones->len) {
        SfdVm *c = op->clones->pdata[op->hook_i++];
        sfd_hook_run("clone", c->name, "prepare", "begin", op->d,
                     fork_prepare_next, op);
        return;
    }
    if (op->parent->state != SFD_VM_RUNNING || !op->parent->qmp) {
        fork_abort(op, "InvalidState", "the parent stopped");
        return;
    }
    if (op->guest && op->guest->clone_args) {
        /* From a checkpoint: its fork exists, its page server serves. */
        SfdForkGuest *g = op->guest;
        op->fork_id = g->fork_id;
        op->server_pid = g->server_pid;
        op->clone_args = g_strdupv(g->clone_args);
        op->generation = g->generation;
        g_message("%s: %u clones from checkpoint fork %" G_GUINT64_FORMAT
                  ", clone ids from %d",
                  op->parent->name, op->clones->len, op->fork_id,
                  g->first_qemu_id);
        fork_launch_all(op, g->first_qemu_id, g->dir);
        return;
    }
    g_autofree char *tmpl =
        g_strdup_printf("%s/%s.fXXXXXX", sfd->run_dir, op->parent->name);
    if (!g_mkdtemp(tmpl)) {
        g_autofree char *m = g_strdup_printf("%s: %s", tmpl, g_strerror(errno));
        fork_abort(op, "Failed", m);
        return;
    }
    op->dir = g_steal_pointer(&tmpl);
    JsonObject *args = json_object_new();
    json_object_set_int_member(args, "clones", op->clones->len);
    json_object_set_boolean_member(args, "launch", FALSE);
    json_object_set_string_member(args, "dir", op->dir);
    op->generation = ++op->parent->forks;
    sfd_state_save_vm(op->parent);
    sfd_qmp_cmd(op->parent->qmp, "vm-fork", args, fork_forked, op);
}

void sfd_fork(SfdVm *parent, int count, const char *origin, SfdForkDone done,
              gpointer opaque)
{
    sfd_fork_ex(parent, count, origin, NULL, done, opaque);
}

void sfd_fork_ex(SfdVm *parent, int count, const char *origin,
                 const SfdForkGuest *guest, SfdForkDone done, gpointer opaque)
{
    SfdDomain *d = g_hash_table_lookup(sfd->domains, parent->domain);
    int vm_left, host_left, m, id = 0;
    guint32 max_id = 64 * 1024;
    ForkOp *op;

    if (parent->clone_id) {
        done(NULL, "InvalidState",
             "forking a clone is not supported; fork "
             "its domain",
             opaque);
        return;
    }
    if (parent->state != SFD_VM_RUNNING || !parent->qmp || !d) {
        done(NULL, "InvalidState", "the VM is not running", opaque);
        return;
    }
    if (count < 1 || count > 64) {
        done(NULL, "InvalidArgument", "count must be 1..64", opaque);
        return;
    }
    if (sfd_domain_has_writable_disk(d)) {
        done(NULL, "InvalidState",
             "the domain has a writable disk: "
             "clones would share it; mark it <readonly/>",
             opaque);
        return;
    }
    vm_left = d->max_clones - sfd_clones_alive(d->name);
    host_left = sfd->max_clones - sfd_clones_alive(NULL);
    m = MIN(count, MIN(vm_left, host_left));
    if (m <= 0) {
        g_autofree char *msg = g_strdup_printf(
            "no clone granted: %s runs %d of its %d, the host %d of its %d",
            d->name, sfd_clones_alive(d->name), d->max_clones,
            sfd_clones_alive(NULL), sfd->max_clones);
        done(NULL, "QuotaExceeded", msg, opaque);
        return;
    }
    if (parent->family) {
        /* The clone's address .(1+id) must stay below the broadcast. */
        max_id = (1u << (32 - parent->family->prefix)) - 3;
    }
    op = g_new0(ForkOp, 1);
    op->parent = sfd_vm_ref(parent);
    op->d = d;
    op->requested = count;
    op->origin = g_strdup(origin);
    op->clones = g_ptr_array_new();
    if (guest) {
        op->guest = g_memdup2(guest, sizeof(*guest));
        op->guest->dir = g_strdup(guest->dir);
        op->guest->clone_args = g_strdupv(guest->clone_args);
    }
    op->done = done;
    op->opaque = opaque;
    while ((int)op->clones->len < m) {
        do {
            id++;
        } while (id <= (int)max_id && clone_id_used(d->name, id));
        if (id > (int)max_id) {
            break;
        }
        g_autofree char *name = g_strdup_printf("%s-%d", d->name, id);
        g_autofree char *err = NULL;
        SfdVm *c = sfd_vm_new(name, d->name);
        c->clone_id = id;
        c->state = SFD_VM_STARTING;
        if (!sfd_vm_set_paths(c, &err)) {
            sfd_vm_unref(c);
            op->hook_i = 0;
            fork_abort(op, "Failed", err);
            return;
        }
        g_hash_table_insert(sfd->vms, c->name, c);
        g_ptr_array_add(op->clones, sfd_vm_ref(c));
    }
    if (op->clones->len == 0) {
        fork_abort(op, "QuotaExceeded",
                   "no free clone address left on the "
                   "family network");
        return;
    }
    g_info("%s: fork of %d requested by %s, %u granted", d->name, count, origin,
           op->clones->len);
    fork_prepare_next(TRUE, NULL, op);
}
