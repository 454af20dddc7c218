/*
 * sfd: forks (see fork.h).  In order:
 *
 *   1. grant m of the N clones asked for (sfd_fork_grant), reserve m
 *      clone names <vm>-<id> (lowest free ids) and run each clone's
 *      prepare hook; one failing aborts before anything forks
 *   2. the fork: vm-fork {clones: m, launch: false} on the parent into a
 *      fork directory (forkdir.c), or the existing fork a checkpoint
 *      holds
 *   3. per clone, concurrently: tap on the family bridge, start hook,
 *      spawn QEMU with the parent's machine options plus the fork's
 *      clone arguments, QMP, read back the MAC QEMU set (qom-get), tell
 *      the clone who it is (identity.c); started hook
 *   4. answer with every clone's id, pid, MAC, IP and state
 *
 * A clone that fails in step 3 is killed and reported as failed; the
 * others are kept.  The fork directory is held by the fork until every
 * clone is launched, and by each clone for its life.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "sfd.h"
#include "fork.h"
#include "hooks.h"
#include "identity.h"
#include "net.h"
#include "proto.h"
#include "qmp.h"
#include "vm.h"

typedef struct ForkOp {
    SfdVm *parent;
    SfdDomain *d;
    SfdForkRequest r;
    char *origin;
    GPtrArray *clones; /* SfdVm, referenced */
    guint hook_i;      /* prepare hooks started */
    int pending;       /* clones still being launched */
    SfdForkDir *fd;    /* held while launching */
    guint32 generation;
    SfdForkDone done;
    gpointer opaque;
} ForkOp;

typedef struct CloneOp {
    ForkOp *fork;
    SfdVm *clone;
} CloneOp;

int sfd_fork_grant(SfdDomain *d, int want, char **why)
{
    int dom_alive = sfd_vm_clones_alive(d->name);
    int host_alive = sfd_vm_clones_alive(NULL);
    int m = MIN(want, SFD_MAX_FORK_CLONES);

    m = MIN(m, d->max_clones - dom_alive);
    m = MIN(m, sfd->max_clones - host_alive);
    if (m <= 0 && why) {
        *why = g_strdup_printf(
            "no clone granted: %s runs %d of its %d, the host %d of its %d",
            d->name, dom_alive, d->max_clones, host_alive, sfd->max_clones);
    }
    return m;
}

static void fork_free(ForkOp *op)
{
    for (guint i = 0; i < op->clones->len; i++) {
        sfd_vm_unref(op->clones->pdata[i]);
    }
    g_ptr_array_free(op->clones, TRUE);
    sfd_vm_unref(op->parent);
    g_free(op->origin);
    g_free(op);
}

/* Abort before any clone was spawned: release the reservations (a clone
 * whose prepare hook ran is ended, so its release hook runs). */
static void fork_abort(ForkOp *op, const char *cls, const char *err)
{
    for (guint i = 0; i < op->clones->len; i++) {
        SfdVm *c = op->clones->pdata[i];
        if (i < op->hook_i) {
            sfd_vm_end(c, -1);
        } else {
            sfd_vm_detach(c);
        }
    }
    if (op->fd) {
        sfd_forkdir_release(op->fd);
    }
    op->done(NULL, cls, err, op->opaque);
    fork_free(op);
}

static void fork_finish(ForkOp *op)
{
    JsonObject *o = json_object_new();
    JsonArray *a = json_array_new();
    JsonNode *ret = json_node_alloc();
    g_autofree char *fid =
        g_strdup_printf("%" G_GUINT64_FORMAT, op->fd->fork_id);
    int up = 0;

    json_object_set_string_member(o, "vm", op->parent->name);
    /* uint64 as a decimal string: see sfd_vm_to_json */
    json_object_set_string_member(o, "fork-id", fid);
    json_object_set_string_member(o, "origin", op->origin);
    json_object_set_int_member(o, "requested", op->r.count);
    json_object_set_int_member(o, "granted", op->clones->len);
    json_object_set_int_member(o, "pause-us",
                               op->r.from ? 0 : op->fd->pause_us);
    json_object_set_int_member(o, "server-pid", op->fd->server_pid);
    for (guint i = 0; i < op->clones->len; i++) {
        SfdVm *c = op->clones->pdata[i];
        up += c->state == SFD_VM_RUNNING;
        json_array_add_element(a, sfd_vm_to_json(c, FALSE));
    }
    json_object_set_array_member(o, "clones", a);
    json_object_set_int_member(o, "running", up);
    json_node_init_object(ret, o);
    json_object_unref(o);
    sfd_forkdir_release(op->fd); /* the clones hold it now */
    sfd_event("FORK_DONE", json_node_copy(ret));
    op->done(ret, NULL, NULL, op->opaque);
    fork_free(op);
}

static void clone_done(CloneOp *co, const char *err)
{
    ForkOp *op = co->fork;
    SfdVm *c = co->clone;

    if (err) {
        g_warning("%s: %s", c->name, err);
        if (!c->failure) {
            c->failure = g_strdup(err);
        }
        if (c->state != SFD_VM_EXITED &&
            !(c->spawned && sfd_vm_kill(c, SIGKILL) == 0)) {
            sfd_vm_end(c, -1); /* else its child watch ends it */
        }
    } else {
        c->state = SFD_VM_RUNNING;
        sfd_record_save(c);
        sfd_hook_run("clone", c->name, "started", "begin", op->d, NULL, NULL);
        sfd_event("CLONE_STARTED", sfd_vm_to_json(c, FALSE));
    }
    g_free(co);
    if (--op->pending == 0) {
        fork_finish(op);
    }
}

static void clone_told(SfdVm *c, const char *err, gpointer opaque)
{
    clone_done(opaque, err);
}

static void clone_identify(CloneOp *co)
{
    ForkOp *op = co->fork;

    sfd_identity_tell(co->clone, op->r.request, op->r.ticket, op->generation,
                      clone_told, co);
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
    sfd_record_save(c);
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
    g_autofree char *err = NULL, *props = NULL;

    if (!ok) {
        g_autofree char *m = g_strdup_printf("start hook: %s", msg);
        clone_done(co, m);
        return;
    }
    argv = sfd_vm_argv(c, op->parent->machine);
    /*
     * The family decides the clone's MAC, not QEMU's default; and its
     * NICs stay down until it knows who it is (identity.c), so nothing
     * leaves it under its parent's address.
     */
    props = g_strdup_printf("%s%s,link=held", c->family ? ",mac=" : "",
                            c->family ? c->mac : "");
    sfd_forkdir_clone_argv(op->fd, c->qemu_clone_id, props, argv);
    if (sfd_vm_spawn(c, argv, &err) < 0) {
        clone_done(co, err);
        return;
    }
    sfd_record_save(c);
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
    sfd_record_save(c);
    sfd_hook_run("clone", c->name, "start", "begin", op->d,
                 clone_start_hook_done, co);
}

/* The fork exists (vm-fork answered, or a checkpoint's): launch. */
static void fork_launch_all(ForkOp *op, int first_qemu_id)
{
    op->generation = op->fd->generation;
    op->pending = op->clones->len;
    for (guint i = 0; i < op->clones->len; i++) {
        SfdVm *c = op->clones->pdata[i];
        c->qemu_clone_id = first_qemu_id + i;
        c->guest_id = i + 1;
        sfd_forkdir_attach_clone(op->fd, c);
    }
    if (op->r.forked) {
        op->r.forked(op->parent, op->clones, op->generation, op->opaque);
    }
    for (guint i = 0; i < op->clones->len; i++) {
        clone_launch(op, op->clones->pdata[i]);
    }
}

static void fork_forked(SfdForkDir *fd, const char *err, gpointer opaque)
{
    ForkOp *op = opaque;

    if (!fd) {
        fork_abort(op, "Failed", err);
        return;
    }
    op->fd = fd;
    fork_launch_all(op, 1);
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
    if (op->r.from) {
        /* A checkpoint's fork exists, its page server serves. */
        g_message("%s: %u clones from fork %" G_GUINT64_FORMAT
                  ", clone ids from %d",
                  op->parent->name, op->clones->len, op->r.from->fork_id,
                  op->r.first_qemu_id);
        op->fd = sfd_forkdir_hold(op->r.from);
        fork_launch_all(op, op->r.first_qemu_id);
        return;
    }
    sfd_forkdir_fork(op->parent, 'f', op->clones->len, 0, fork_forked, op);
}

/* Reserve m clone names <domain>-<id>, the lowest free ids: NULL, or
 * why (and the error class) none could be had. */
static char *reserve_clones(ForkOp *op, int m, const char **cls)
{
    /* The clone's address .(1+id) must stay below the broadcast. */
    int max_id = op->parent->family
                     ? (1 << (32 - op->parent->family->prefix)) - 3
                     : 64 * 1024;
    int id = 0;

    while ((int)op->clones->len < m) {
        g_autofree char *name = NULL;
        g_autofree char *err = NULL;
        SfdVm *c;

        do {
            g_free(name);
            name = g_strdup_printf("%s-%d", op->d->name, ++id);
        } while (id <= max_id && sfd_vm_lookup(name));
        if (id > max_id) {
            break;
        }
        c = sfd_vm_new(name, op->d->name);
        c->clone_id = id;
        c->state = SFD_VM_STARTING;
        if (!sfd_vm_set_paths(c, &err)) {
            sfd_vm_unref(c);
            *cls = "Failed";
            return g_steal_pointer(&err);
        }
        sfd_vm_add(c);
        g_ptr_array_add(op->clones, c); /* the op's reference */
    }
    if (op->clones->len == 0) {
        *cls = "QuotaExceeded";
        return g_strdup("no free clone address left on the family network");
    }
    return NULL;
}

void sfd_fork(SfdVm *parent, const SfdForkRequest *r, SfdForkDone done,
              gpointer opaque)
{
    SfdDomain *d = g_hash_table_lookup(sfd->domains, parent->domain);
    g_autofree char *why = NULL;
    const char *cls = NULL;
    ForkOp *op;
    int m;

    if (parent->clone_id) {
        done(NULL, "InvalidState",
             "forking a clone is not supported; fork its domain", opaque);
        return;
    }
    if (parent->state != SFD_VM_RUNNING || !parent->qmp || !d) {
        done(NULL, "InvalidState", "the VM is not running", opaque);
        return;
    }
    if (r->count < 1 || r->count > SFD_MAX_FORK_CLONES) {
        g_autofree char *m =
            g_strdup_printf("count must be 1..%d", SFD_MAX_FORK_CLONES);
        done(NULL, "InvalidArgument", m, opaque);
        return;
    }
    if (sfd_domain_has_writable_disk(d)) {
        done(NULL, "InvalidState",
             "the domain has a writable disk: clones would share it; mark "
             "it <readonly/>",
             opaque);
        return;
    }
    if ((m = sfd_fork_grant(d, r->count, &why)) <= 0) {
        done(NULL, "QuotaExceeded", why, opaque);
        return;
    }
    op = g_new0(ForkOp, 1);
    op->parent = sfd_vm_ref(parent);
    op->d = d;
    op->r = *r;
    op->origin = g_strdup(r->origin);
    op->r.origin = op->origin;
    op->clones = g_ptr_array_new();
    op->done = done;
    op->opaque = opaque;
    if ((why = reserve_clones(op, m, &cls))) {
        fork_abort(op, cls, why);
        return;
    }
    g_info("%s: fork of %d requested by %s, %u granted", d->name, r->count,
           r->origin, op->clones->len);
    fork_prepare_next(TRUE, NULL, op);
}
