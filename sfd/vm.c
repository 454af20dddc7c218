/*
 * sfd: QEMU processes.  A VM (a domain's parent, or a clone) is one
 * QEMU, spawned by sfd in its own session so it outlives sfd, with its
 * QMP and serial consoles as unix sockets under the run directory and
 * its output in a log there.
 *
 * Supervision: a QEMU sfd spawned is its child (g_child_watch gives the
 * exit status); one adopted after a restart is not, and is watched
 * through a pidfd (exit status unknown, reported as -1).  A pid is only
 * trusted together with its start time from /proc, so a recycled pid
 * is never adopted or signalled.
 *
 * Every way a VM ends goes through sfd_vm_exited(): events, the exit
 * waiters' answers, network release, the record, hooks (stopped, then
 * release), in that order.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <glib-unix.h>

#include "sfd.h"
#include "qmp.h"

#define SFD_DEFAULT_CMDLINE                                                    \
    "console=ttyS0 quiet nokaslr no_timer_check panic=-1"
#define SFD_STOP_GRACE_S   15
#define SFD_QMP_TIMEOUT_MS 30000

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
    sfd_agent_free(vm->agent);
    g_free(vm);
}

SfdVm *sfd_vm_lookup(const char *name)
{
    return g_hash_table_lookup(sfd->vms, name);
}

guint64 sfd_proc_starttime(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", pid);
    g_autofree char *s = NULL;
    g_auto(GStrv) f = NULL;
    char *p;

    if (pid <= 0 || !g_file_get_contents(path, &s, NULL, NULL) ||
        !(p = strrchr(s, ')'))) {
        return 0;
    }
    f = g_strsplit(p + 2, " ", 0);
    /* f[0] is field 3 (state); starttime is field 22. */
    if (g_strv_length(f) < 20 || f[0][0] == 'Z' || f[0][0] == 'X') {
        return 0;
    }
    return g_ascii_strtoull(f[19], NULL, 10);
}

gboolean sfd_proc_alive(pid_t pid, guint64 starttime)
{
    guint64 st = sfd_proc_starttime(pid);

    return st && (!starttime || st == starttime);
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
    g_autoptr(JsonBuilder) b = json_builder_new();

    json_builder_begin_object(b);
#define STR(k, v)                                                              \
    json_builder_set_member_name(b, k);                                        \
    if (v) {                                                                   \
        json_builder_add_string_value(b, v);                                   \
    } else {                                                                   \
        json_builder_add_null_value(b);                                        \
    }
#define INT(k, v)                                                              \
    json_builder_set_member_name(b, k);                                        \
    json_builder_add_int_value(b, v);
    STR("name", vm->name);
    STR("kind", vm->clone_id ? "clone" : "domain");
    STR("domain", vm->domain);
    STR("state", sfd_vm_state_str(vm));
    INT("pid", vm->pid);
    STR("ip", vm->ip);
    STR("mac", vm->mac);
    if (vm->clone_id) {
        INT("clone-id", vm->clone_id);
        /* QEMU's fork ids are 64-bit unsigned: JSON integers here are
         * signed 64-bit, so the id travels as a decimal string. */
        g_autofree char *fid =
            g_strdup_printf("%" G_GUINT64_FORMAT, vm->fork_id);
        STR("fork-id", fid);
    }
    if (vm->failure) {
        STR("error", vm->failure);
    }
    if (vm->state != SFD_VM_EXITED) {
        json_builder_set_member_name(b, "agent");
        json_builder_add_value(b, sfd_agent_to_json(vm, detail));
    }
    if (detail) {
        STR("tap", vm->tap);
        STR("bridge", vm->family ? vm->family->bridge : NULL);
        STR("qmp", vm->qmp_path);
        STR("serial", vm->serial_path);
        STR("log", vm->log_path);
        INT("started-at", vm->started_at);
        json_builder_set_member_name(b, "adopted");
        json_builder_add_boolean_value(b, vm->adopted);
        if (vm->clone_id) {
            INT("qemu-clone-id", vm->qemu_clone_id);
            INT("server-pid", vm->server_pid);
            json_builder_set_member_name(b, "net-configured");
            json_builder_add_boolean_value(b, vm->net_configured);
        }
    }
#undef STR
#undef INT
    json_builder_end_object(b);
    return json_builder_get_root(b);
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

/* Machine options: what a clone shares with its parent, exactly. */
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
    /* sf-agent-port: the guest agent's channel (docs/guest-api.md). */
    ADD("-append", append, "-device", "virtio-serial-device", "-device",
        "sf-agent-port");
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

/* The full command line: QEMU, the machine, then what is this VM's own. */
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
    sfd_vm_exited(vm, st);
}

static gboolean vm_pidfd_ready(int fd, GIOCondition cond, gpointer data)
{
    SfdVm *vm = data;

    vm->pidfd_watch = 0;
    sfd_vm_exited(vm, -1);
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

static void vm_qmp_event(SfdQmp *q, const char *name, JsonObject *data,
                         gpointer opaque)
{
    SfdVm *vm = opaque;

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
    } else if (!strcmp(name, "SF_AGENT_REQUEST") && data) {
        sfd_agent_request(vm, data);
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
    if (!vm->pid || !sfd_proc_alive(vm->pid, vm->starttime)) {
        return -ESRCH;
    }
    return kill(vm->pid, sig) < 0 ? -errno : 0;
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

void sfd_fork_dir_remove(const char *path)
{
    g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
    g_autofree char *cp = g_build_filename(path, "sfd-checkpoint", NULL);
    g_autofree char *rec = NULL;
    const char *f;

    /* A checkpoint's page server waits for clones that may never come:
     * its pid (and start time) is kept beside it so that it is never
     * left behind, even across an sfd restart. */
    if (g_file_get_contents(cp, &rec, NULL, NULL)) {
        pid_t pid = 0;
        guint64 st = 0;
        if (sscanf(rec, "%d %" G_GUINT64_FORMAT, &pid, &st) == 2 && pid > 0 &&
            st && sfd_proc_alive(pid, st)) {
            g_info("%s: stopping checkpoint page server %d", path, pid);
            kill(pid, SIGKILL);
        }
    }

    while (dir && (f = g_dir_read_name(dir))) {
        g_autofree char *p = g_build_filename(path, f, NULL);
        unlink(p);
    }
    rmdir(path);
}

/* The last clone of a fork is gone: its page server has nobody to
 * serve (it normally exits by itself; one waiting for a clone that
 * never started would not). */
static void fork_release(SfdVm *clone)
{
    GHashTableIter it;
    gpointer v;

    if (!clone->fork_dir || sfd_agent_holds_fork_dir(clone->fork_dir)) {
        return;
    }
    g_hash_table_iter_init(&it, sfd->vms);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        SfdVm *o = v;
        if (o != clone && o->fork_dir &&
            !strcmp(o->fork_dir, clone->fork_dir)) {
            return;
        }
    }
    if (clone->server_pid &&
        sfd_proc_alive(clone->server_pid, clone->server_starttime)) {
        g_info("%s: stopping page server %d", clone->name, clone->server_pid);
        kill(clone->server_pid, SIGKILL);
    }
    sfd_fork_dir_remove(clone->fork_dir);
}

static void vm_release_hook(gboolean ok, const char *msg, gpointer opaque)
{
    SfdVm *vm = opaque;
    SfdDomain *d = g_hash_table_lookup(sfd->domains, vm->domain);

    sfd_hook_run(vm->clone_id ? "clone" : "domain", vm->name, "release", "end",
                 d, NULL, NULL);
    sfd_vm_unref(vm);
}

void sfd_vm_exited(SfdVm *vm, int status)
{
    SfdDomain *d = g_hash_table_lookup(sfd->domains, vm->domain);
    const char *obj = vm->clone_id ? "clone" : "domain";
    SfdQmp *q = vm->qmp;

    if (vm->state == SFD_VM_EXITED) {
        return;
    }
    sfd_agent_vm_exiting(vm);
    vm->state = SFD_VM_EXITED;
    sfd_vm_ref(vm); /* until the release hook ran */
    if (vm->spawned) {
        g_message("%s: QEMU %d exited with status %d", vm->name, vm->pid,
                  status);
    }
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
    if (g_hash_table_lookup(sfd->vms, vm->name) == vm) {
        g_hash_table_remove(sfd->vms, vm->name);
        sfd_vm_unref(vm); /* the table's reference */
    }
    if (vm->family) {
        sfd_net_tap_del(vm->family, vm->tap);
        sfd_family_put(vm->family);
        vm->family = NULL;
    }
    fork_release(vm);
    sfd_state_drop_vm(vm);

    if (vm->spawned) {
        g_autoptr(JsonBuilder) b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "name");
        json_builder_add_string_value(b, vm->name);
        json_builder_set_member_name(b, "domain");
        json_builder_add_string_value(b, vm->domain);
        json_builder_set_member_name(b, "pid");
        json_builder_add_int_value(b, vm->pid);
        json_builder_set_member_name(b, "status");
        json_builder_add_int_value(b, status);
        if (vm->clone_id) {
            json_builder_set_member_name(b, "clone-id");
            json_builder_add_int_value(b, vm->clone_id);
        }
        if (vm->failure) {
            json_builder_set_member_name(b, "reason");
            json_builder_add_string_value(b, vm->failure);
        }
        json_builder_end_object(b);
        JsonNode *data = json_builder_get_root(b);
        while (vm->exit_waiters) {
            SfdRequest *req = vm->exit_waiters->data;
            vm->exit_waiters =
                g_list_delete_link(vm->exit_waiters, vm->exit_waiters);
            sfd_request_return(req, json_node_copy(data));
        }
        sfd_event(!vm->clone_id ? "VM_STOPPED"
                  : vm->failure ? "CLONE_FAILED"
                                : "CLONE_EXITED",
                  data);
        sfd_hook_run(obj, vm->name, "stopped", "end", d, vm_release_hook, vm);
    } else {
        while (vm->exit_waiters) {
            SfdRequest *req = vm->exit_waiters->data;
            vm->exit_waiters =
                g_list_delete_link(vm->exit_waiters, vm->exit_waiters);
            sfd_request_return(req, NULL);
        }
        vm_release_hook(TRUE, NULL, vm);
    }
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
    if (op->vm->state != SFD_VM_EXITED) {
        if (op->vm->spawned) {
            sfd_vm_kill(op->vm, SIGKILL); /* sfd_vm_exited follows */
        } else {
            sfd_vm_exited(op->vm, -1);
        }
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
            g_strdup_printf("%s: QEMU did not come up (%s): "
                            "%s",
                            vm->name, err ? err : "exited", tail);
        start_fail(op, "Failed", m);
        return;
    }
    vm->state = SFD_VM_RUNNING;
    sfd_state_save_vm(vm);
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
    sfd_state_save_vm(vm);
    sfd_vm_attach(vm, start_attached, op);
}

static void start_prepared(gboolean ok, const char *msg, gpointer opaque)
{
    StartOp *op = opaque;
    SfdVm *vm = op->vm;
    SfdDomain *d = op->d;
    g_autofree char *err = NULL;
    g_autofree char *append = NULL;

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
        append = g_strdup_printf("%s sf.ip=%s/%d",
                                 d->cmdline ? d->cmdline : SFD_DEFAULT_CMDLINE,
                                 vm->ip, f->prefix);
    } else {
        append = g_strdup(d->cmdline ? d->cmdline : SFD_DEFAULT_CMDLINE);
    }
    vm->machine = sfd_vm_machine(d, vm->mac, append);
    sfd_hook_run("domain", vm->name, "start", "begin", d, start_hook_done, op);
}

void sfd_vm_start(SfdDomain *d, SfdStartDone done, gpointer opaque)
{
    StartOp *op;
    g_autofree char *err = NULL;
    SfdVm *vm;

    if (g_hash_table_contains(sfd->vms, d->name)) {
        g_autofree char *m = g_strdup_printf("%s is already running", d->name);
        done(NULL, "InvalidState", m, opaque);
        return;
    }
    const char *files[] = { d->kernel, d->initrd };
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
    g_hash_table_insert(sfd->vms, vm->name, vm); /* holds the ref */
    op = g_new0(StartOp, 1);
    op->d = d;
    op->vm = sfd_vm_ref(vm);
    op->done = done;
    op->opaque = opaque;
    sfd_hook_run("domain", vm->name, "prepare", "begin", d, start_prepared, op);
}

/* ---- adoption after a restart ---- */

static char *jstr(JsonObject *o, const char *k)
{
    const char *s = json_object_get_string_member_with_default(o, k, NULL);

    return s ? g_strdup(s) : NULL;
}

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
    g_autoptr(JsonNode) n = sfd_state_read_json(path, &err);
    JsonObject *o;
    SfdVm *vm;

    if (!n || !JSON_NODE_HOLDS_OBJECT(n)) {
        g_warning("%s: %s (removed)", path, err ? err : "not an object");
        unlink(path);
        return;
    }
    o = json_node_get_object(n);
    g_autofree char *name = jstr(o, "name");
    g_autofree char *domain = jstr(o, "domain");
    if (!name || !domain) {
        g_warning("%s: incomplete record (removed)", path);
        unlink(path);
        return;
    }
    vm = sfd_vm_new(name, domain);
    vm->clone_id = json_object_get_int_member_with_default(o, "clone-id", 0);
    vm->qemu_clone_id =
        json_object_get_int_member_with_default(o, "qemu-clone-id", 0);
    vm->fork_id = json_object_get_int_member_with_default(o, "fork-id", 0);
    vm->pid = json_object_get_int_member_with_default(o, "pid", 0);
    vm->starttime = json_object_get_int_member_with_default(o, "starttime", 0);
    vm->server_pid =
        json_object_get_int_member_with_default(o, "server-pid", 0);
    vm->server_starttime =
        json_object_get_int_member_with_default(o, "server-starttime", 0);
    vm->qmp_path = jstr(o, "qmp");
    vm->serial_path = jstr(o, "serial");
    vm->log_path = jstr(o, "log");
    vm->tap = jstr(o, "tap");
    vm->mac = jstr(o, "mac");
    vm->ip = jstr(o, "ip");
    vm->fork_dir = jstr(o, "fork-dir");
    vm->started_at =
        json_object_get_int_member_with_default(o, "started-at", 0);
    vm->forks = json_object_get_int_member_with_default(o, "forks", 0);
    vm->guest_id = json_object_get_int_member_with_default(o, "guest-id", 0);
    vm->net_configured =
        json_object_get_boolean_member_with_default(o, "net-configured", FALSE);
    if (json_object_has_member(o, "machine")) {
        JsonArray *a = json_object_get_array_member(o, "machine");
        vm->machine = g_new0(char *, json_array_get_length(a) + 1);
        for (guint i = 0; i < json_array_get_length(a); i++) {
            vm->machine[i] = g_strdup(json_array_get_string_element(a, i));
        }
    }
    if (json_object_has_member(o, "family")) {
        JsonObject *f = json_object_get_object_member(o, "family");
        struct in_addr in = { 0 };
        inet_pton(
            AF_INET,
            json_object_get_string_member_with_default(f, "net", "0.0.0.0"),
            &in);
        vm->family = sfd_family_adopt(
            domain, json_object_get_int_member_with_default(f, "index", 0),
            json_object_get_string_member_with_default(f, "bridge", ""),
            ntohl(in.s_addr),
            json_object_get_int_member_with_default(f, "prefix", 24));
        if (vm->tap) {
            vm->family->members++;
        }
    }
    sfd_agent_restore(vm, o);
    vm->spawned = TRUE;
    vm->adopted = TRUE;
    g_hash_table_insert(sfd->vms, vm->name, vm);
}

/* Watch an adopted VM, or release it when it ended while sfd was away. */
static void adopt_watch(SfdVm *vm)
{
    if (!sfd_proc_alive(vm->pid, vm->starttime)) {
        g_message("%s: QEMU %d ended while sfd was away", vm->name, vm->pid);
        sfd_vm_exited(vm, -1);
        return;
    }
    vm->state = SFD_VM_RUNNING;
    vm->pidfd = syscall(SYS_pidfd_open, vm->pid, 0);
    if (vm->pidfd < 0 || !sfd_proc_alive(vm->pid, vm->starttime)) {
        g_warning("%s: cannot watch pid %d: %s", vm->name, vm->pid,
                  g_strerror(errno));
        sfd_vm_exited(vm, -1);
        return;
    }
    vm->pidfd_watch = g_unix_fd_add(vm->pidfd, G_IO_IN, vm_pidfd_ready, vm);
    g_message("%s: adopted QEMU %d", vm->name, vm->pid);
    sfd_vm_attach(vm, adopt_attached, NULL);
}

void sfd_vm_adopt_all(void)
{
    g_autoptr(GDir) dir = g_dir_open(sfd->run_dir, 0, NULL);
    g_autoptr(GPtrArray) records = g_ptr_array_new_with_free_func(g_free);
    const char *f;
    GHashTableIter it;
    gpointer v;
    GList *empty = NULL;

    while (dir && (f = g_dir_read_name(dir))) {
        if (g_str_has_suffix(f, ".json")) {
            g_ptr_array_add(records, g_build_filename(sfd->run_dir, f, NULL));
        }
    }
    sfd_agent_ids_load();
    /* Load every record before releasing any: a dead clone's page
     * server may still serve a live sibling not loaded yet. */
    for (guint i = 0; i < records->len; i++) {
        adopt_one(records->pdata[i]);
    }
    sfd_agent_adopt_check();
    {
        /* Parents first: a clone that ended while sfd was away is then
         * recorded in its running parent's ticket (and reported once the
         * parent's QMP is back). */
        g_autoptr(GList) vms = g_hash_table_get_values(sfd->vms);
        GList *order = NULL;
        for (GList *l = vms; l; l = l->next) {
            SfdVm *vm = l->data;
            sfd_vm_ref(vm);
            order = vm->clone_id ? g_list_append(order, vm)
                                 : g_list_prepend(order, vm);
        }
        for (GList *l = order; l; l = l->next) {
            adopt_watch(l->data);
            sfd_vm_unref(l->data);
        }
        g_list_free(order);
    }
    g_hash_table_iter_init(&it, sfd->families);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        if (((SfdFamily *)v)->members <= 0) {
            empty = g_list_prepend(empty, v);
        }
    }
    for (GList *l = empty; l; l = l->next) {
        sfd_family_put(l->data);
    }
    g_list_free(empty);
    sfd_net_sweep();
    /* Fork directories no live clone refers to. */
    g_dir_rewind(dir);
    while (dir && (f = g_dir_read_name(dir))) {
        g_autofree char *p = g_build_filename(sfd->run_dir, f, NULL);
        gboolean used = FALSE;
        if (!g_file_test(p, G_FILE_TEST_IS_DIR)) {
            continue;
        }
        g_hash_table_iter_init(&it, sfd->vms);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
            SfdVm *vm = v;
            if (vm->fork_dir && !strcmp(vm->fork_dir, p)) {
                used = TRUE;
            }
        }
        if (!used && !sfd_agent_holds_fork_dir(p)) {
            sfd_fork_dir_remove(p);
        }
    }
}
