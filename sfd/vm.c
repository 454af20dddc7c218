/*
 * sfd: QEMU processes (see vm.h).  A VM's QMP and serial consoles are
 * unix sockets under the run directory and its output a log there.
 *
 * Supervision: a QEMU sfd spawned is its child (g_child_watch gives the
 * exit status); one adopted after a restart is not, and is watched
 * through a pidfd (exit status unknown, reported as -1).  A pid is only
 * trusted together with its start time (proc.h), so a recycled pid is
 * never adopted or signalled.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <glib-unix.h>

#include "sfd.h"
#include "vm.h"
#include "proc.h"
#include "qmp.h"

#define SFD_STOP_GRACE_S   15
#define SFD_QMP_TIMEOUT_MS 30000

typedef struct SfdVmExitWaiter {
    SfdVmExitFunc fn;
    gpointer opaque;
} SfdVmExitWaiter;

typedef struct SfdVmEventWaiter {
    SfdVm *vm;
    char *name;
    guint timer;
    SfdVmEventFunc fn;
    gpointer opaque;
} SfdVmEventWaiter;

static const SfdVmObserver *observer;

void sfd_vm_set_observer(const SfdVmObserver *o)
{
    observer = o;
}

SfdVm *sfd_vm_new(const char *name, const char *domain)
{
    SfdVm *vm = g_new0(SfdVm, 1);

    vm->refs = 1;
    vm->name = g_strdup(name);
    vm->domain = g_strdup(domain);
    vm->pidfd = -1;
    return vm;
}

SfdVm *sfd_vm_ref(SfdVm *vm)
{
    vm->refs++;
    return vm;
}

void sfd_vm_unref(SfdVm *vm)
{
    if (!vm || --vm->refs > 0) {
        return;
    }
    g_free(vm->name);
    g_free(vm->domain);
    g_free(vm->qmp_path);
    g_free(vm->serial_path);
    g_free(vm->log_path);
    g_free(vm->tap);
    g_free(vm->mac);
    g_free(vm->ip);
    g_free(vm->failure);
    g_free(vm->fork_dir);
    g_strfreev(vm->machine);
    if (vm->agent && vm->agent_free) {
        vm->agent_free(vm->agent);
    }
    g_free(vm);
}

SfdVm *sfd_vm_lookup(const char *name)
{
    return g_hash_table_lookup(sfd->vms, name);
}

void sfd_vm_add(SfdVm *vm)
{
    g_hash_table_insert(sfd->vms, vm->name, sfd_vm_ref(vm));
}

int sfd_vm_clones_alive(const char *domain)
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

const char *sfd_vm_state_str(SfdVm *vm)
{
    switch (vm->state) {
    case SFD_VM_STARTING:
        return "starting";
    case SFD_VM_RUNNING:
        return "running";
    case SFD_VM_STOPPING:
        return "stopping";
    case SFD_VM_EXITED:
        return vm->failure ? "failed" : "exited";
    }
    return "?";
}

JsonNode *sfd_vm_to_json(SfdVm *vm, gboolean detail)
{
    JsonObject *o = json_object_new();
    JsonNode *n = json_node_alloc();

#define STR(k, v)                                                              \
    if (v) {                                                                   \
        json_object_set_string_member(o, k, v);                                \
    } else {                                                                   \
        json_object_set_null_member(o, k);                                     \
    }
    STR("name", vm->name);
    STR("kind", vm->clone_id ? "clone" : "domain");
    STR("domain", vm->domain);
    STR("state", sfd_vm_state_str(vm));
    json_object_set_int_member(o, "pid", vm->pid);
    STR("ip", vm->ip);
    STR("mac", vm->mac);
    if (vm->clone_id) {
        json_object_set_int_member(o, "clone-id", vm->clone_id);
        /* QEMU's fork ids are 64-bit unsigned: JSON integers here are
         * signed 64-bit, so the id travels as a decimal string. */
        g_autofree char *fid =
            g_strdup_printf("%" G_GUINT64_FORMAT, vm->fork_id);
        STR("fork-id", fid);
    }
    if (vm->failure) {
        STR("error", vm->failure);
    }
    if (observer && observer->describe) {
        observer->describe(vm, o, detail);
    }
    if (detail) {
        STR("tap", vm->tap);
        STR("bridge", vm->family ? vm->family->bridge : NULL);
        STR("qmp", vm->qmp_path);
        STR("serial", vm->serial_path);
        STR("log", vm->log_path);
        json_object_set_int_member(o, "started-at", vm->started_at);
        json_object_set_boolean_member(o, "adopted", vm->adopted);
        if (vm->clone_id) {
            json_object_set_int_member(o, "qemu-clone-id", vm->qemu_clone_id);
            json_object_set_int_member(o, "server-pid", vm->server_pid);
            json_object_set_boolean_member(o, "net-configured",
                                           vm->net_configured);
        }
    }
#undef STR
    json_node_init_object(n, o);
    json_object_unref(o);
    return n;
}

char *sfd_vm_log_tail(SfdVm *vm)
{
    g_autofree char *s = NULL;
    gsize n;

    if (!vm->log_path || !g_file_get_contents(vm->log_path, &s, &n, NULL) ||
        n == 0) {
        return g_strdup("(no output)");
    }
    const char *t = n > 600 ? s + n - 600 : s;
    return g_strstrip(g_utf8_make_valid(t, -1));
}

gboolean sfd_vm_set_paths(SfdVm *vm, char **err)
{
    struct sockaddr_un sa;

    g_free(vm->qmp_path);
    g_free(vm->serial_path);
    g_free(vm->log_path);
    vm->qmp_path = g_strdup_printf("%s/%s.qmp", sfd->run_dir, vm->name);
    vm->serial_path = g_strdup_printf("%s/%s.serial", sfd->run_dir, vm->name);
    vm->log_path = g_strdup_printf("%s/%s.log", sfd->run_dir, vm->name);
    if (strlen(vm->serial_path) >= sizeof(sa.sun_path)) {
        *err = g_strdup_printf("%s: the state directory's path is too long "
                               "for unix sockets",
                               vm->serial_path);
        return FALSE;
    }
    return TRUE;
}

GStrv sfd_vm_machine(SfdDomain *d, const char *mac, const char *append)
{
    GPtrArray *a = g_ptr_array_new();

#define ADD(...)                                                               \
    do {                                                                       \
        const char *_v[] = { __VA_ARGS__ };                                    \
        for (size_t _i = 0; _i < G_N_ELEMENTS(_v); _i++) {                     \
            g_ptr_array_add(a, g_strdup(_v[_i]));                              \
        }                                                                      \
    } while (0)
    ADD("-M", "microvm");
    g_ptr_array_add(a, g_strdup("-m"));
    g_ptr_array_add(a, g_strdup_printf("%" G_GUINT64_FORMAT, d->memory_mib));
    g_ptr_array_add(a, g_strdup("-smp"));
    g_ptr_array_add(a, g_strdup_printf("%d", d->vcpu));
    ADD("-L", "/usr/share/seabios", "-L", "/usr/share/qemu", "-nodefaults",
        "-no-user-config", "-display", "none", "-global",
        "virtio-mmio.force-legacy=false", "-kernel", d->kernel);
    if (d->initrd) {
        ADD("-initrd", d->initrd);
    }
    /* sf-agent-port: the guest agent's channel (docs/guest-api.md);
     * vmgenid: every clone gets a new generation ID before its first
     * instruction, and its kernel reseeds its RNG. */
    ADD("-append", append, "-device", "virtio-serial-device", "-device",
        "sf-agent-port", "-device", "vmgenid");
    if (d->balloon != SFD_BALLOON_NONE) {
        ADD("-device", d->balloon == SFD_BALLOON_REPORTING
                           ? "virtio-balloon-device,free-page-reporting=on"
                           : "virtio-balloon-device");
    }
    for (guint i = 0; i < d->disks->len; i++) {
        SfdDisk *disk = d->disks->pdata[i];
        g_ptr_array_add(a, g_strdup("-drive"));
        g_ptr_array_add(
            a, g_strdup_printf("file=%s,if=none,id=disk%u,format=raw%s",
                               disk->file, i,
                               disk->readonly ? ",readonly=on" : ""));
        g_ptr_array_add(a, g_strdup("-device"));
        g_ptr_array_add(a,
                        g_strdup_printf("virtio-blk-device,drive=disk%u", i));
    }
    if (mac) {
        g_ptr_array_add(a, g_strdup("-device"));
        g_ptr_array_add(
            a,
            g_strdup_printf("virtio-net-device,id=net0,netdev=n0,mac=%s", mac));
    }
#undef ADD
    g_ptr_array_add(a, NULL);
    return (GStrv)g_ptr_array_free(a, FALSE);
}

GPtrArray *sfd_vm_argv(SfdVm *vm, GStrv machine)
{
    GPtrArray *a = g_ptr_array_new_with_free_func(g_free);

    g_ptr_array_add(a, g_strdup(sfd->qemu));
    for (char **m = machine; *m; m++) {
        g_ptr_array_add(a, g_strdup(*m));
    }
    g_ptr_array_add(a, g_strdup("-name"));
    g_ptr_array_add(a, g_strdup(vm->name));
    g_ptr_array_add(a, g_strdup("-qmp"));
    g_ptr_array_add(
        a, g_strdup_printf("unix:%s,server=on,wait=off", vm->qmp_path));
    g_ptr_array_add(a, g_strdup("-chardev"));
    g_ptr_array_add(a, g_strdup_printf("socket,id=ser0,path=%s,server=on,"
                                       "wait=off",
                                       vm->serial_path));
    g_ptr_array_add(a, g_strdup("-serial"));
    g_ptr_array_add(a, g_strdup("chardev:ser0"));
    if (vm->tap) {
        g_ptr_array_add(a, g_strdup("-netdev"));
        g_ptr_array_add(a, g_strdup_printf("tap,id=n0,ifname=%s,script=no,"
                                           "downscript=no",
                                           vm->tap));
    }
    return a;
}

static void vm_child_exited(GPid pid, gint status, gpointer data)
{
    SfdVm *vm = data;
    int st = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);

    vm->child_watch = 0;
    g_spawn_close_pid(pid);
    sfd_vm_end(vm, st);
}

static gboolean vm_pidfd_ready(int fd, GIOCondition cond, gpointer data)
{
    SfdVm *vm = data;

    vm->pidfd_watch = 0;
    sfd_vm_end(vm, -1);
    return G_SOURCE_REMOVE;
}

static void vm_child_setup(gpointer data)
{
    setsid(); /* outlive sfd, and its terminal */
}

int sfd_vm_spawn(SfdVm *vm, GPtrArray *argv, char **err)
{
    g_autoptr(GError) e = NULL;
    g_auto(GStrv) env =
        g_environ_setenv(g_get_environ(), "G_SLICE", "always-malloc", TRUE);
    int logfd;
    GPid pid;

    unlink(vm->qmp_path);
    unlink(vm->serial_path);
    logfd = open(vm->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (logfd < 0) {
        *err = g_strdup_printf("%s: %s", vm->log_path, g_strerror(errno));
        return -errno;
    }
    if (argv->len == 0 || argv->pdata[argv->len - 1] != NULL) {
        g_ptr_array_add(argv, NULL);
    }
    if (!g_spawn_async_with_pipes_and_fds(
            NULL, (const char *const *)argv->pdata, (const char *const *)env,
            G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDIN_FROM_DEV_NULL,
            vm_child_setup, NULL, -1, logfd, logfd, NULL, NULL, 0, &pid, NULL,
            NULL, NULL, &e)) {
        close(logfd);
        *err = g_strdup_printf("cannot start %s: %s", sfd->qemu, e->message);
        return -ENOEXEC;
    }
    close(logfd);
    vm->pid = pid;
    vm->spawned = TRUE;
    vm->starttime = sfd_proc_starttime(pid);
    vm->started_at = g_get_real_time() / G_USEC_PER_SEC;
    vm->child_watch = g_child_watch_add(pid, vm_child_exited, vm);
    g_info("%s: QEMU pid %d", vm->name, pid);
    return 0;
}

gboolean sfd_vm_watch_adopted(SfdVm *vm)
{
    if (!sfd_proc_alive(vm->pid, vm->starttime)) {
        return FALSE;
    }
    vm->pidfd = syscall(SYS_pidfd_open, vm->pid, 0);
    /* Alive again after the open: the pidfd is of that very process. */
    if (vm->pidfd < 0 || !sfd_proc_alive(vm->pid, vm->starttime)) {
        g_warning("%s: cannot watch pid %d: %s", vm->name, vm->pid,
                  vm->pidfd < 0 ? g_strerror(errno) : "it ended");
        return FALSE;
    }
    vm->pidfd_watch = g_unix_fd_add(vm->pidfd, G_IO_IN, vm_pidfd_ready, vm);
    return TRUE;
}

/* Remove w from its VM and call it (data NULL: timed out or ended). */
static void event_waiter_fire(SfdVmEventWaiter *w, JsonObject *data,
                              gboolean ended)
{
    SfdVm *vm = w->vm;

    vm->event_waiters = g_list_remove(vm->event_waiters, w);
    if (w->timer) {
        g_source_remove(w->timer);
    }
    w->fn(vm, data, ended, w->opaque);
    g_free(w->name);
    g_free(w);
    sfd_vm_unref(vm);
}

static gboolean event_waiter_timeout(gpointer data)
{
    SfdVmEventWaiter *w = data;

    w->timer = 0;
    event_waiter_fire(w, NULL, FALSE);
    return G_SOURCE_REMOVE;
}

void sfd_vm_wait_event(SfdVm *vm, const char *name, guint timeout_ms,
                       SfdVmEventFunc fn, gpointer opaque)
{
    SfdVmEventWaiter *w = g_new0(SfdVmEventWaiter, 1);

    w->vm = sfd_vm_ref(vm);
    w->name = g_strdup(name);
    w->fn = fn;
    w->opaque = opaque;
    /* An ended VM's waiter times out at once: still from the loop. */
    w->timer = g_timeout_add(vm->state == SFD_VM_EXITED ? 0 : timeout_ms,
                             event_waiter_timeout, w);
    vm->event_waiters = g_list_append(vm->event_waiters, w);
}

static void vm_qmp_event(SfdQmp *q, const char *name, JsonObject *data,
                         gpointer opaque)
{
    SfdVm *vm = opaque;

    /* The waiters for it, taken first: a waiter's callback may end the
     * VM, which fires (and frees) all the others. */
    g_autoptr(GList) hits = NULL;
    for (GList *l = vm->event_waiters; l; l = l->next) {
        if (!strcmp(((SfdVmEventWaiter *)l->data)->name, name)) {
            hits = g_list_append(hits, l->data);
        }
    }
    for (GList *l = hits; l; l = l->next) {
        if (g_list_find(vm->event_waiters, l->data)) {
            event_waiter_fire(l->data, data, FALSE);
        }
    }

    if (strcmp(name, "SF_AGENT_REQUEST")) {
        /* Guest requests are counted and logged by agent.c instead:
         * a guest must not be able to fill the log. */
        g_debug("%s: QMP event %s", vm->name, name);
    }
    if (!strcmp(name, "SF_CLONE_FAILED") && data) {
        g_free(vm->failure);
        vm->failure = g_strdup(json_object_get_string_member_with_default(
            data, "reason", "clone failed"));
        g_warning("%s: %s", vm->name, vm->failure);
    } else if (!strcmp(name, "SF_CLONE_COMPLETE")) {
        g_info("%s: every page present", vm->name);
    }
    if (observer && observer->event) {
        observer->event(vm, name, data);
    }
}

static void vm_qmp_closed(SfdQmp *q, gpointer opaque)
{
    SfdVm *vm = opaque;

    g_debug("%s: QMP closed", vm->name);
}

static void vm_qmp_ready(SfdQmp *q, const char *err, gpointer opaque)
{
    SfdVm *vm = opaque;
    SfdVmDone done = vm->attach_done;

    vm->attach_done = NULL;
    if (done) {
        done(vm, err, vm->attach_opaque);
    } else if (err) {
        g_warning("%s: %s", vm->name, err);
    }
}

void sfd_vm_attach(SfdVm *vm, SfdVmDone done, gpointer opaque)
{
    vm->attach_done = done;
    vm->attach_opaque = opaque;
    vm->qmp = sfd_qmp_connect(vm->qmp_path, SFD_QMP_TIMEOUT_MS, vm_qmp_ready,
                              vm_qmp_event, vm_qmp_closed, vm);
}

int sfd_vm_kill(SfdVm *vm, int sig)
{
    return sfd_proc_kill(vm->pid, vm->starttime, sig);
}

static gboolean vm_stop_timeout(gpointer data)
{
    SfdVm *vm = data;

    vm->stop_timer = 0;
    if (vm->state != SFD_VM_EXITED) {
        g_warning("%s: did not stop in %d s, killing it", vm->name,
                  SFD_STOP_GRACE_S);
        sfd_vm_kill(vm, SIGKILL);
    }
    return G_SOURCE_REMOVE;
}

static void vm_quit_done(SfdQmp *q, JsonNode *ret, const char *err,
                         gpointer opaque)
{
    /* QEMU may close before answering: its exit is what counts. */
}

void sfd_vm_stop(SfdVm *vm)
{
    if (vm->state == SFD_VM_EXITED) {
        return;
    }
    vm->state = SFD_VM_STOPPING;
    if (vm->qmp) {
        sfd_qmp_cmd(vm->qmp, "quit", NULL, vm_quit_done, NULL);
    } else {
        sfd_vm_kill(vm, SIGTERM);
    }
    if (!vm->stop_timer) {
        vm->stop_timer =
            g_timeout_add_seconds(SFD_STOP_GRACE_S, vm_stop_timeout, vm);
    }
}

void sfd_vm_end(SfdVm *vm, int status)
{
    if (vm->state == SFD_VM_EXITED) {
        return;
    }
    if (vm->spawned) {
        g_message("%s: QEMU %d exited with status %d", vm->name, vm->pid,
                  status);
    }
    sfd_vm_ref(vm);
    if (observer && observer->ended) {
        observer->ended(vm, status);
    }
    sfd_vm_detach(vm); /* in case the observer did not */
    sfd_vm_unref(vm);
}

void sfd_vm_detach(SfdVm *vm)
{
    SfdQmp *q = vm->qmp;

    if (vm->state == SFD_VM_EXITED) {
        return;
    }
    vm->state = SFD_VM_EXITED;
    if (vm->child_watch) {
        g_source_remove(vm->child_watch);
        vm->child_watch = 0;
    }
    if (vm->pidfd_watch) {
        g_source_remove(vm->pidfd_watch);
        vm->pidfd_watch = 0;
    }
    if (vm->pidfd >= 0) {
        close(vm->pidfd);
        vm->pidfd = -1;
    }
    if (vm->stop_timer) {
        g_source_remove(vm->stop_timer);
        vm->stop_timer = 0;
    }
    vm->qmp = NULL;
    sfd_qmp_free(q); /* fails what waited on QMP */
    if (vm->qmp_path) {
        unlink(vm->qmp_path);
        unlink(vm->serial_path);
    }
    while (vm->event_waiters) {
        event_waiter_fire(vm->event_waiters->data, NULL, TRUE);
    }
    if (g_hash_table_lookup(sfd->vms, vm->name) == vm) {
        g_hash_table_remove(sfd->vms, vm->name);
        sfd_vm_unref(vm); /* the table's reference */
    }
}

void sfd_vm_wait_exit(SfdVm *vm, SfdVmExitFunc fn, gpointer opaque)
{
    SfdVmExitWaiter *w = g_new0(SfdVmExitWaiter, 1);

    w->fn = fn;
    w->opaque = opaque;
    vm->exit_waiters = g_list_append(vm->exit_waiters, w);
}

void sfd_vm_answer_exit_waiters(SfdVm *vm, JsonNode *exit)
{
    while (vm->exit_waiters) {
        SfdVmExitWaiter *w = vm->exit_waiters->data;
        vm->exit_waiters =
            g_list_delete_link(vm->exit_waiters, vm->exit_waiters);
        w->fn(vm, exit, w->opaque);
        g_free(w);
    }
}

JsonNode *sfd_vm_exit_json(SfdVm *vm, int status)
{
    JsonObject *o = json_object_new();
    JsonNode *n = json_node_alloc();

    json_object_set_string_member(o, "name", vm->name);
    json_object_set_string_member(o, "domain", vm->domain);
    json_object_set_int_member(o, "pid", vm->pid);
    json_object_set_int_member(o, "status", status);
    if (vm->clone_id) {
        json_object_set_int_member(o, "clone-id", vm->clone_id);
    }
    if (vm->failure) {
        json_object_set_string_member(o, "reason", vm->failure);
    }
    json_node_init_object(n, o);
    json_object_unref(o);
    return n;
}

/* ---- the record ---- */

static void vm_record_save(SfdVm *vm, JsonBuilder *b)
{
#define STR(k, v)                                                              \
    if (v) {                                                                   \
        json_builder_set_member_name(b, k);                                    \
        json_builder_add_string_value(b, v);                                   \
    }
#define INT(k, v)                                                              \
    json_builder_set_member_name(b, k);                                        \
    json_builder_add_int_value(b, v);
    STR("name", vm->name);
    STR("domain", vm->domain);
    INT("clone-id", vm->clone_id);
    INT("qemu-clone-id", vm->qemu_clone_id);
    INT("fork-id", vm->fork_id);
    INT("forks", vm->forks);
    INT("guest-id", vm->guest_id);
    INT("pid", vm->pid);
    INT("starttime", vm->starttime);
    STR("qmp", vm->qmp_path);
    STR("serial", vm->serial_path);
    STR("log", vm->log_path);
    STR("tap", vm->tap);
    STR("mac", vm->mac);
    STR("ip", vm->ip);
    INT("started-at", vm->started_at);
    json_builder_set_member_name(b, "net-configured");
    json_builder_add_boolean_value(b, vm->net_configured);
    if (vm->machine) {
        json_builder_set_member_name(b, "machine");
        json_builder_begin_array(b);
        for (char **a = vm->machine; *a; a++) {
            json_builder_add_string_value(b, *a);
        }
        json_builder_end_array(b);
    }
#undef STR
#undef INT
}

static char *jstr(JsonObject *o, const char *k)
{
    const char *s = json_object_get_string_member_with_default(o, k, NULL);

    return s ? g_strdup(s) : NULL;
}

/* name and domain were read by whoever made vm from the record. */
static void vm_record_load(SfdVm *vm, JsonObject *o)
{
    vm->clone_id = json_object_get_int_member_with_default(o, "clone-id", 0);
    vm->qemu_clone_id =
        json_object_get_int_member_with_default(o, "qemu-clone-id", 0);
    vm->fork_id = json_object_get_int_member_with_default(o, "fork-id", 0);
    vm->pid = json_object_get_int_member_with_default(o, "pid", 0);
    vm->starttime = json_object_get_int_member_with_default(o, "starttime", 0);
    vm->qmp_path = jstr(o, "qmp");
    vm->serial_path = jstr(o, "serial");
    vm->log_path = jstr(o, "log");
    vm->tap = jstr(o, "tap");
    vm->mac = jstr(o, "mac");
    vm->ip = jstr(o, "ip");
    vm->started_at =
        json_object_get_int_member_with_default(o, "started-at", 0);
    vm->forks = json_object_get_int_member_with_default(o, "forks", 0);
    vm->guest_id = json_object_get_int_member_with_default(o, "guest-id", 0);
    vm->net_configured =
        json_object_get_boolean_member_with_default(o, "net-configured", FALSE);
    if (json_object_has_member(o, "machine") &&
        JSON_NODE_HOLDS_ARRAY(json_object_get_member(o, "machine"))) {
        JsonArray *a = json_object_get_array_member(o, "machine");
        vm->machine = g_new0(char *, json_array_get_length(a) + 1);
        for (guint i = 0; i < json_array_get_length(a); i++) {
            const char *s = json_array_get_string_element(a, i);
            vm->machine[i] = g_strdup(s ? s : "");
        }
    }
}

const SfdRecordSection sfd_vm_record = {
    .name = "vm",
    .save = vm_record_save,
    .load = vm_record_load,
};
