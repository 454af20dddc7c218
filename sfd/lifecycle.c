/*
 * sfd: the life of a VM (see lifecycle.h).
 *
 * Every way a VM ends goes through vm_ended(), in this order: its guest
 * requests (a clone's end reported to its parent), the process side
 * (QMP, sockets, out of the table), its tap, its fork (the page server
 * goes with the fork's last clone), its record, then the exit waiters'
 * answers, the event, and the hooks stopped and release (hooks.c runs
 * them after the VM's earlier hooks, in order).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "sfd.h"
#include "lifecycle.h"
#include "agent.h"
#include "agent-state.h"
#include "forkdir.h"
#include "hooks.h"
#include "ids.h"
#include "net.h"
#include "proto.h"
#include "store.h"
#include "vm.h"

#define SFD_DEFAULT_CMDLINE                                                    \
    "console=ttyS0 quiet nokaslr no_timer_check panic=-1"

/* ---- vm.c's observer ---- */

static void vm_ended(SfdVm *vm, int status)
{
    SfdDomain *d = g_hash_table_lookup(sfd->domains, vm->domain);
    const char *obj = vm->clone_id ? "clone" : "domain";

    sfd_agent_vm_exiting(vm);
    sfd_vm_detach(vm);
    sfd_net_release(vm);
    sfd_forkdir_detach_clone(vm);
    sfd_record_drop(vm);
    if (vm->spawned) {
        JsonNode *data = sfd_vm_exit_json(vm, status);
        sfd_vm_answer_exit_waiters(vm, data);
        sfd_event(!vm->clone_id ? "VM_STOPPED"
                  : vm->failure ? "CLONE_FAILED"
                                : "CLONE_EXITED",
                  data);
        sfd_hook_run(obj, vm->name, "stopped", "end", d, NULL, NULL);
    } else {
        sfd_vm_answer_exit_waiters(vm, NULL);
    }
    sfd_hook_run(obj, vm->name, "release", "end", d, NULL, NULL);
}

static void vm_event(SfdVm *vm, const char *name, JsonObject *data)
{
    if (!strcmp(name, "SF_AGENT_REQUEST") && data) {
        sfd_agent_request(vm, data);
    }
}

static const SfdVmObserver observer = {
    .ended = vm_ended,
    .event = vm_event,
    .describe = sfd_agent_describe,
};

void sfd_lifecycle_init(void)
{
    /* In this order: the family and the fork read what vm's loaded. */
    sfd_record_register(&sfd_vm_record);
    sfd_record_register(&sfd_forkdir_record);
    sfd_record_register(&sfd_net_record);
    sfd_record_register(&sfd_agent_record);
    sfd_vm_set_observer(&observer);
}

/* ---- starting a domain ---- */

typedef struct StartOp {
    SfdDomain *d;
    SfdVm *vm;
    SfdStartDone done;
    gpointer opaque;
} StartOp;

static void start_fail(StartOp *op, const char *cls, const char *err)
{
    if (op->vm->state != SFD_VM_EXITED &&
        !(op->vm->spawned && sfd_vm_kill(op->vm, SIGKILL) == 0)) {
        sfd_vm_end(op->vm, -1); /* else its child watch ends it */
    }
    op->done(NULL, cls, err, op->opaque);
    sfd_vm_unref(op->vm);
    g_free(op);
}

static void start_attached(SfdVm *vm, const char *err, gpointer opaque)
{
    StartOp *op = opaque;

    if (err || vm->state == SFD_VM_EXITED) {
        g_autofree char *tail = sfd_vm_log_tail(vm);
        g_autofree char *m =
            g_strdup_printf("%s: QEMU did not come up (%s): %s", vm->name,
                            err ? err : "exited", tail);
        start_fail(op, "Failed", m);
        return;
    }
    vm->state = SFD_VM_RUNNING;
    sfd_record_save(vm);
    sfd_hook_run("domain", vm->name, "started", "begin", op->d, NULL, NULL);
    sfd_event("VM_STARTED", sfd_vm_to_json(vm, FALSE));
    op->done(vm, NULL, NULL, op->opaque);
    sfd_vm_unref(op->vm);
    g_free(op);
}

static void start_hook_done(gboolean ok, const char *msg, gpointer opaque)
{
    StartOp *op = opaque;
    SfdVm *vm = op->vm;
    g_autoptr(GPtrArray) argv = NULL;
    g_autofree char *err = NULL;

    if (!ok) {
        g_autofree char *m = g_strdup_printf("start hook: %s", msg);
        start_fail(op, "HookFailed", m);
        return;
    }
    argv = sfd_vm_argv(vm, vm->machine);
    if (sfd_vm_spawn(vm, argv, &err) < 0) {
        start_fail(op, "Failed", err);
        return;
    }
    sfd_record_save(vm);
    sfd_vm_attach(vm, start_attached, op);
}

static void start_prepared(gboolean ok, const char *msg, gpointer opaque)
{
    StartOp *op = opaque;
    SfdVm *vm = op->vm;
    SfdDomain *d = op->d;
    g_autofree char *err = NULL;
    g_autofree char *append = NULL;
    const char *cmdline = d->cmdline ? d->cmdline : SFD_DEFAULT_CMDLINE;

    if (!ok) {
        g_autofree char *m = g_strdup_printf("prepare hook: %s", msg);
        start_fail(op, "HookFailed", m);
        return;
    }
    if (d->has_interface) {
        SfdFamily *f = sfd_family_get(d, &err);
        if (!f) {
            start_fail(op, "Failed", err);
            return;
        }
        vm->tap = sfd_net_tap_add(f, 0, &err);
        if (!vm->tap) {
            sfd_family_put(f);
            start_fail(op, "Failed", err);
            return;
        }
        vm->family = f;
        vm->ip = sfd_net_ip(f, 0);
        vm->mac = d->mac ? g_strdup(d->mac) : sfd_net_parent_mac(f);
        append = g_strdup_printf("%s sf.ip=%s/%d", cmdline, vm->ip, f->prefix);
    } else {
        append = g_strdup(cmdline);
    }
    vm->machine = sfd_vm_machine(d, vm->mac, append);
    sfd_hook_run("domain", vm->name, "start", "begin", d, start_hook_done, op);
}

void sfd_lifecycle_start(SfdDomain *d, SfdStartDone done, gpointer opaque)
{
    const char *files[] = { d->kernel, d->initrd };
    g_autofree char *err = NULL;
    StartOp *op;
    SfdVm *vm;

    if (g_hash_table_contains(sfd->vms, d->name)) {
        g_autofree char *m = g_strdup_printf("%s is already running", d->name);
        done(NULL, "InvalidState", m, opaque);
        return;
    }
    for (guint i = 0; i < G_N_ELEMENTS(files); i++) {
        if (files[i] && access(files[i], R_OK) != 0) {
            g_autofree char *m =
                g_strdup_printf("%s: %s", files[i], g_strerror(errno));
            done(NULL, "Failed", m, opaque);
            return;
        }
    }
    for (guint i = 0; i < d->disks->len; i++) {
        SfdDisk *disk = d->disks->pdata[i];
        if (access(disk->file, disk->readonly ? R_OK : R_OK | W_OK) != 0) {
            g_autofree char *m =
                g_strdup_printf("disk %s: %s", disk->file, g_strerror(errno));
            done(NULL, "Failed", m, opaque);
            return;
        }
    }
    vm = sfd_vm_new(d->name, d->name);
    if (!sfd_vm_set_paths(vm, &err)) {
        done(NULL, "Failed", err, opaque);
        sfd_vm_unref(vm);
        return;
    }
    vm->state = SFD_VM_STARTING;
    sfd_vm_add(vm);
    op = g_new0(StartOp, 1);
    op->d = d;
    op->vm = vm; /* our reference; the table has its own */
    op->done = done;
    op->opaque = opaque;
    sfd_hook_run("domain", vm->name, "prepare", "begin", d, start_prepared, op);
}

/* ---- adoption after a restart ---- */

static void adopt_attached(SfdVm *vm, const char *err, gpointer opaque)
{
    if (err) {
        g_warning("%s: adopted without QMP: %s", vm->name, err);
    } else {
        g_info("%s: QMP reattached", vm->name);
    }
    sfd_agent_adopted(vm, err);
}

static void adopt_one(const char *path)
{
    g_autofree char *err = NULL;
    g_autoptr(JsonNode) n = sfd_store_read_json(path, &err);
    JsonObject *o;
    const char *name, *domain;
    SfdVm *vm;

    if (!n || !JSON_NODE_HOLDS_OBJECT(n)) {
        g_warning("%s: %s (removed)", path, err ? err : "not an object");
        unlink(path);
        return;
    }
    o = json_node_get_object(n);
    name = json_object_get_string_member_with_default(o, "name", NULL);
    domain = json_object_get_string_member_with_default(o, "domain", NULL);
    if (!name || !domain) {
        g_warning("%s: incomplete record (removed)", path);
        unlink(path);
        return;
    }
    vm = sfd_vm_new(name, domain);
    sfd_record_load(vm, o);
    vm->spawned = TRUE;
    vm->adopted = TRUE;
    sfd_vm_add(vm);
    sfd_vm_unref(vm);
}

/* Watch an adopted VM, or release it when it ended while sfd was away. */
static void adopt_watch(SfdVm *vm)
{
    if (!sfd_vm_watch_adopted(vm)) {
        g_message("%s: QEMU %d ended while sfd was away", vm->name, vm->pid);
        sfd_vm_end(vm, -1);
        return;
    }
    vm->state = SFD_VM_RUNNING;
    g_message("%s: adopted QEMU %d", vm->name, vm->pid);
    sfd_vm_attach(vm, adopt_attached, NULL);
}

void sfd_lifecycle_adopt_all(void)
{
    g_autoptr(GPtrArray) records = sfd_record_paths();
    g_autoptr(GList) vms = NULL;
    GList *order = NULL;

    sfd_ids_load();
    /* Load every record before releasing any: a dead clone's page
     * server may still serve a live sibling not loaded yet. */
    for (guint i = 0; i < records->len; i++) {
        adopt_one(records->pdata[i]);
    }
    sfd_agent_adopt_check();
    /* Parents first: a clone that ended while sfd was away is then
     * recorded in its running parent's ticket (and reported once the
     * parent's QMP is back). */
    vms = g_hash_table_get_values(sfd->vms);
    for (GList *l = vms; l; l = l->next) {
        SfdVm *vm = sfd_vm_ref(l->data);
        order =
            vm->clone_id ? g_list_append(order, vm) : g_list_prepend(order, vm);
    }
    for (GList *l = order; l; l = l->next) {
        adopt_watch(l->data);
        sfd_vm_unref(l->data);
    }
    g_list_free(order);
    sfd_family_put_empty();
    sfd_net_sweep();
    sfd_forkdir_sweep();
}
