/*
 * sfd: a VM is one QEMU process (a domain's parent, or a clone): its
 * command line, spawning it in its own session so it outlives sfd, its
 * QMP connection, stopping it, and watching it end.  What happens when
 * it ends, or when its QEMU sends an event, is for the observer
 * (lifecycle.c) to decide: this file reports, it does not call up.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_VM_H
#define SFD_VM_H

#include "sfd.h"
#include "store.h"

typedef struct SfdVmObserver {
    /* vm's QEMU is gone (or was never started): tear it down, which
     * includes sfd_vm_detach().  vm->state is still what it was. */
    void (*ended)(SfdVm *vm, int status);
    /* A QMP event from vm's QEMU. */
    void (*event)(SfdVm *vm, const char *name, JsonObject *data);
    /* Add members to vm's JSON (sfd_vm_to_json). */
    void (*describe)(SfdVm *vm, JsonObject *o, gboolean detail);
} SfdVmObserver;

void sfd_vm_set_observer(const SfdVmObserver *o);

SfdVm *sfd_vm_new(const char *name, const char *domain);
SfdVm *sfd_vm_ref(SfdVm *vm);
void sfd_vm_unref(SfdVm *vm);
SfdVm *sfd_vm_lookup(const char *name);
/* Enter vm in sfd->vms (which holds a reference). */
void sfd_vm_add(SfdVm *vm);
/* Live (not exited) clones of domain, of every domain when NULL. */
int sfd_vm_clones_alive(const char *domain);

/* Set the per-VM paths (sockets, log) under the run directory. */
gboolean sfd_vm_set_paths(SfdVm *vm, char **err);
/* Machine options: what a clone shares with its parent, exactly. */
GStrv sfd_vm_machine(SfdDomain *d, const char *mac, const char *append);
/* The full command line: QEMU, the machine, then what is vm's own. */
GPtrArray *sfd_vm_argv(SfdVm *vm, GStrv machine);
/* Spawn the QEMU of a prepared SfdVm (name, paths, tap set). */
int sfd_vm_spawn(SfdVm *vm, GPtrArray *argv, char **err);
/* Watch an adopted QEMU (not our child) through a pidfd; FALSE when
 * it cannot be watched (it is gone). */
gboolean sfd_vm_watch_adopted(SfdVm *vm);
/* Connect QMP, then call done (err NULL on success). */
void sfd_vm_attach(SfdVm *vm, SfdVmDone done, gpointer opaque);
void sfd_vm_stop(SfdVm *vm); /* QMP quit, SIGTERM fallback */
int sfd_vm_kill(SfdVm *vm, int sig);
/* vm's QEMU is gone, or will never run: the observer tears it down.
 * Once only; status -1 when unknown. */
void sfd_vm_end(SfdVm *vm, int status);
/* The process side of the teardown: state EXITED, watches, QMP,
 * sockets, out of sfd->vms. */
void sfd_vm_detach(SfdVm *vm);

/*
 * Wait once for QMP event `name` from vm: fn gets its data, or NULL when
 * timeout_ms passed first or vm ended (ended tells which).  Called from
 * the loop, never before this returns; the observer sees the event too.
 */
typedef void (*SfdVmEventFunc)(SfdVm *vm, JsonObject *data, gboolean ended,
                               gpointer opaque);
void sfd_vm_wait_event(SfdVm *vm, const char *name, guint timeout_ms,
                       SfdVmEventFunc fn, gpointer opaque);

typedef void (*SfdVmExitFunc)(SfdVm *vm, JsonNode *exit, gpointer opaque);
/* Call fn with sfd_vm_exit_json() (NULL when vm never ran) once vm has
 * ended and been torn down. */
void sfd_vm_wait_exit(SfdVm *vm, SfdVmExitFunc fn, gpointer opaque);
void sfd_vm_answer_exit_waiters(SfdVm *vm, JsonNode *exit);
/* {name, domain, pid, status, clone-id?, reason?} */
JsonNode *sfd_vm_exit_json(SfdVm *vm, int status);

JsonNode *sfd_vm_to_json(SfdVm *vm, gboolean detail);
const char *sfd_vm_state_str(SfdVm *vm);
/* The last lines of a VM's QEMU log, for error messages. */
char *sfd_vm_log_tail(SfdVm *vm);

/* The VM's own members of its record (store.h). */
extern const SfdRecordSection sfd_vm_record;

#endif
