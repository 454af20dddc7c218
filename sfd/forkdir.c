/*
 * sfd: fork directories (see forkdir.h).
 *
 *   run/<vm>.fXXXXXX/   a fork; .cXXXXXX for a checkpoint
 *     descriptor, pages.sock, server-stats.json, ...   QEMU's
 *     sfd-fork          "PID STARTTIME" of its page server, written as
 *                       soon as vm-fork answered, so whoever removes
 *                       the directory stops the server, even after an
 *                       sfd restart that lost the records naming it
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sfd.h"
#include "forkdir.h"
#include "proc.h"
#include "qmp.h"
#include "vm.h"
/* vm-fork's clone-args contract (migration-sf/lib, shared with QEMU). */
#include "sf-clone-args.h"

#define SFD_FORKDIR_PIDFILE "sfd-fork"
/* A page server told to stop (SIGTERM) is killed after this long. */
#define SFD_SERVER_STOP_MS 5000

static GHashTable *forkdirs; /* path -> SfdForkDir */

static SfdForkDir *forkdir_new(const char *path)
{
    SfdForkDir *fd = g_new0(SfdForkDir, 1);

    if (!forkdirs) {
        forkdirs = g_hash_table_new(g_str_hash, g_str_equal);
    }
    fd->path = g_strdup(path);
    fd->clone_args = g_new0(char *, 1);
    g_hash_table_insert(forkdirs, fd->path, fd);
    return fd;
}

SfdForkDir *sfd_forkdir_lookup(const char *path)
{
    return forkdirs && path ? g_hash_table_lookup(forkdirs, path) : NULL;
}

gboolean sfd_forkdir_in_use(const char *path)
{
    SfdForkDir *fd = sfd_forkdir_lookup(path);

    return fd && fd->holders > 0;
}

gboolean sfd_forkdir_server_alive(const SfdForkDir *fd)
{
    return fd->server_pid > 0 &&
           sfd_proc_alive(fd->server_pid, fd->server_starttime);
}

SfdForkDir *sfd_forkdir_hold(SfdForkDir *fd)
{
    fd->holders++;
    return fd;
}

/* Stop the page server a pid file names, if it is still that process. */
static void stop_recorded_server(const char *path)
{
    g_autofree char *pf = g_build_filename(path, SFD_FORKDIR_PIDFILE, NULL);
    g_autofree char *rec = NULL;
    pid_t pid = 0;
    guint64 st = 0;

    if (g_file_get_contents(pf, &rec, NULL, NULL) &&
        sscanf(rec, "%d %" G_GUINT64_FORMAT, &pid, &st) == 2 && st &&
        sfd_proc_kill(pid, st, SIGKILL) == 0) {
        g_info("%s: stopped its page server %d", path, pid);
    }
}

static void remove_dir(const char *path)
{
    g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
    const char *f;

    stop_recorded_server(path);
    while (dir && (f = g_dir_read_name(dir))) {
        g_autofree char *p = g_build_filename(path, f, NULL);
        unlink(p);
    }
    rmdir(path);
}

/* A page server asked to stop: removed once it has (it cleans up after
 * itself on SIGTERM), or killed after SFD_SERVER_STOP_MS. */
typedef struct Stopping {
    char *path;
    pid_t pid;
    guint64 starttime;
    gint64 deadline_us;
} Stopping;

static gboolean stopping_check(gpointer data)
{
    Stopping *s = data;

    if (sfd_proc_alive(s->pid, s->starttime) &&
        g_get_monotonic_time() < s->deadline_us) {
        return G_SOURCE_CONTINUE;
    }
    if (sfd_proc_kill(s->pid, s->starttime, SIGKILL) == 0) {
        g_warning("%s: page server %d did not stop in %d ms: killed", s->path,
                  s->pid, SFD_SERVER_STOP_MS);
    }
    remove_dir(s->path);
    g_free(s->path);
    g_free(s);
    return G_SOURCE_REMOVE;
}

void sfd_forkdir_release(SfdForkDir *fd)
{
    if (--fd->holders > 0) {
        return;
    }
    g_hash_table_remove(forkdirs, fd->path);
    if (sfd_proc_kill(fd->server_pid, fd->server_starttime, SIGTERM) == 0) {
        Stopping *s = g_new0(Stopping, 1);

        g_info("%s: stopping page server %d", fd->path, fd->server_pid);
        s->path = g_steal_pointer(&fd->path);
        s->pid = fd->server_pid;
        s->starttime = fd->server_starttime;
        s->deadline_us = g_get_monotonic_time() + SFD_SERVER_STOP_MS * 1000;
        g_timeout_add(50, stopping_check, s);
    } else {
        remove_dir(fd->path);
    }
    g_free(fd->path);
    g_strfreev(fd->clone_args);
    g_free(fd);
}

void sfd_forkdir_attach_clone(SfdForkDir *fd, SfdVm *clone)
{
    g_free(clone->fork_dir);
    clone->fork_dir = g_strdup(fd->path);
    clone->fork_id = fd->fork_id;
    clone->server_pid = fd->server_pid;
    clone->server_starttime = fd->server_starttime;
    sfd_forkdir_hold(fd);
}

void sfd_forkdir_detach_clone(SfdVm *clone)
{
    SfdForkDir *fd = sfd_forkdir_lookup(clone->fork_dir);

    if (fd) {
        g_clear_pointer(&clone->fork_dir, g_free);
        sfd_forkdir_release(fd);
    }
}

void sfd_forkdir_clone_argv(SfdForkDir *fd, int n, const char *props,
                            GPtrArray *argv)
{
    g_autofree char *id = g_strdup_printf("%d", n);

    for (char **a = fd->clone_args; *a; a++) {
        const char *at = strstr(*a, SF_CLONE_ID_PLACEHOLDER);
        if (at) {
            g_autofree char *before = g_strndup(*a, at - *a);
            g_ptr_array_add(argv, g_strconcat(before, id,
                                              at + SF_CLONE_ID_PLACEHOLDER_LEN,
                                              props ?: "", NULL));
        } else {
            g_ptr_array_add(argv, g_strdup(*a));
        }
    }
}

/* ---- vm-fork ---- */

typedef struct ForkCall {
    SfdVm *parent;
    char *path;
    guint32 generation;
    SfdForkDirDone done;
    gpointer opaque;
} ForkCall;

static void fork_answered(SfdQmp *q, JsonNode *ret, const char *err,
                          gpointer opaque)
{
    ForkCall *fc = opaque;
    JsonObject *o = !err && ret && JSON_NODE_HOLDS_OBJECT(ret)
                        ? json_node_get_object(ret)
                        : NULL;
    JsonArray *a;
    SfdForkDir *fd;

    if (!o) {
        g_autofree char *m =
            g_strdup_printf("vm-fork: %s", err ? err : "bad answer");
        remove_dir(fc->path);
        fc->done(NULL, m, fc->opaque);
        goto out;
    }
    fd = forkdir_new(fc->path);
    fd->generation = fc->generation;
    fd->fork_id = json_object_get_int_member_with_default(o, "id", 0);
    fd->server_pid =
        json_object_get_int_member_with_default(o, "server-pid", 0);
    fd->server_starttime = sfd_proc_starttime(fd->server_pid);
    fd->pause_us = json_object_get_int_member_with_default(o, "pause-us", 0);
    a = json_object_has_member(o, "clone-args")
            ? json_object_get_array_member(o, "clone-args")
            : NULL;
    g_strfreev(fd->clone_args);
    fd->clone_args = g_new0(char *, (a ? json_array_get_length(a) : 0) + 1);
    for (guint i = 0; a && i < json_array_get_length(a); i++) {
        fd->clone_args[i] = g_strdup(json_array_get_string_element(a, i));
    }
    {
        g_autofree char *pf =
            g_build_filename(fd->path, SFD_FORKDIR_PIDFILE, NULL);
        g_autofree char *rec = g_strdup_printf(
            "%d %" G_GUINT64_FORMAT "\n", fd->server_pid, fd->server_starttime);
        if (!g_file_set_contents(pf, rec, -1, NULL)) {
            g_warning("%s: cannot write %s", fc->parent->name, pf);
        }
    }
    g_message("%s: fork %" G_GUINT64_FORMAT ", paused %" G_GINT64_FORMAT
              " us, page server %d",
              fc->parent->name, fd->fork_id, fd->pause_us, fd->server_pid);
    fc->done(sfd_forkdir_hold(fd), NULL, fc->opaque);
out:
    sfd_vm_unref(fc->parent);
    g_free(fc->path);
    g_free(fc);
}

void sfd_forkdir_fork(SfdVm *parent, char kind, int clones, int idle_timeout_ms,
                      SfdForkDirDone done, gpointer opaque)
{
    g_autofree char *tmpl =
        g_strdup_printf("%s/%s.%cXXXXXX", sfd->run_dir, parent->name, kind);
    JsonObject *args;
    ForkCall *fc;

    if (parent->state != SFD_VM_RUNNING || !parent->qmp) {
        done(NULL, "the VM is not running", opaque);
        return;
    }
    if (!g_mkdtemp(tmpl)) {
        g_autofree char *m = g_strdup_printf("%s: %s", tmpl, g_strerror(errno));
        done(NULL, m, opaque);
        return;
    }
    fc = g_new0(ForkCall, 1);
    fc->parent = sfd_vm_ref(parent);
    fc->path = g_steal_pointer(&tmpl);
    fc->done = done;
    fc->opaque = opaque;
    /* The fork number: a clone's generation, checkpoints included. */
    fc->generation = ++parent->forks;
    sfd_record_save(parent);
    args = json_object_new();
    json_object_set_int_member(args, "clones", clones);
    json_object_set_boolean_member(args, "launch", FALSE);
    json_object_set_string_member(args, "dir", fc->path);
    if (idle_timeout_ms) {
        json_object_set_int_member(args, "idle-timeout", idle_timeout_ms);
    }
    sfd_qmp_cmd(parent->qmp, "vm-fork", args, fork_answered, fc);
}

/* ---- adoption ---- */

static gboolean ours(const char *path)
{
    g_autofree char *parent = path ? g_path_get_dirname(path) : NULL;

    return parent && !strcmp(parent, sfd->run_dir) &&
           g_file_test(path, G_FILE_TEST_IS_DIR);
}

SfdForkDir *sfd_forkdir_adopt(const char *path, guint64 fork_id,
                              pid_t server_pid, guint64 server_starttime,
                              GStrv clone_args)
{
    SfdForkDir *fd = sfd_forkdir_lookup(path);

    if (!fd) {
        if (!ours(path)) {
            return NULL;
        }
        fd = forkdir_new(path);
        fd->fork_id = fork_id;
        fd->server_pid = server_pid;
        fd->server_starttime = server_starttime;
    }
    if (clone_args && !fd->clone_args[0]) {
        g_strfreev(fd->clone_args);
        fd->clone_args = g_strdupv(clone_args);
    }
    return sfd_forkdir_hold(fd);
}

void sfd_forkdir_sweep(void)
{
    g_autoptr(GDir) dir = g_dir_open(sfd->run_dir, 0, NULL);
    const char *f;

    while (dir && (f = g_dir_read_name(dir))) {
        g_autofree char *p = g_build_filename(sfd->run_dir, f, NULL);

        if (g_file_test(p, G_FILE_TEST_IS_DIR) && !sfd_forkdir_in_use(p)) {
            g_info("%s: a fork nothing holds (removed)", p);
            remove_dir(p);
        }
    }
}

/* ---- a clone's record ---- */

static void forkdir_record_save(SfdVm *vm, JsonBuilder *b)
{
    if (!vm->fork_dir) {
        return;
    }
    json_builder_set_member_name(b, "fork-dir");
    json_builder_add_string_value(b, vm->fork_dir);
    json_builder_set_member_name(b, "server-pid");
    json_builder_add_int_value(b, vm->server_pid);
    json_builder_set_member_name(b, "server-starttime");
    json_builder_add_int_value(b, vm->server_starttime);
}

static void forkdir_record_load(SfdVm *vm, JsonObject *o)
{
    const char *dir =
        json_object_get_string_member_with_default(o, "fork-dir", NULL);

    if (!dir) {
        return;
    }
    vm->server_pid =
        json_object_get_int_member_with_default(o, "server-pid", 0);
    vm->server_starttime =
        json_object_get_int_member_with_default(o, "server-starttime", 0);
    if (sfd_forkdir_adopt(dir, vm->fork_id, vm->server_pid,
                          vm->server_starttime, NULL)) {
        vm->fork_dir = g_strdup(dir);
    }
}

const SfdRecordSection sfd_forkdir_record = {
    .name = "fork",
    .save = forkdir_record_save,
    .load = forkdir_record_load,
};
