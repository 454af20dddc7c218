/*
 * sfd: the snowflock host daemon.  The types every part shares and the
 * daemon's configuration; each part's API is in its own header.
 *
 * The parts, from the top down; a file calls only files below it (lower
 * parts report upward through callbacks they are given, never by
 * calling a part above them):
 *
 *   main.c       options, logging, wiring the parts together, the loop
 *   commands.c   the protocol's commands
 *   lifecycle.c  starting a domain, the teardown order when a VM ends,
 *                adoption after a restart; vm.c's observer
 *   agent.c      guest requests (SF_AGENT_REQUEST): the operations
 *   agent-state.c  a VM's guest-request state: record, JSON, adoption
 *   fork.c       forks: the quota rule, clone names, hooks, launch
 *   identity.c   what a clone is told (its agent, or its serial console)
 *   forkdir.c    fork directories: vm-fork, its answer, page servers
 *   vm.c         a QEMU process: argv, spawn, QMP, stop; events upward
 *   hooks.c      libvirt-style hooks, in order per VM
 *   net.c        family networks: a bridge per family, a tap per VM
 *   proto.c      the line protocol: framing, json-glib, typed dispatch
 *   store.c      records under the state directory (each part its
 *                section), domains' XML
 *   ids.c        ticket and checkpoint ids, never reused
 *   tickets.c    a VM's ticket table (pure)
 *   bucket.c     a token bucket (pure)
 *   proc.c       process identity: pid and start time
 *   qmp.c, lineio.c, domain.c   QMP client, line I/O, domain XML
 *   config.c     the daemon's configuration and tables (this header)
 *
 * Errors: functions return 0 / -errno or FALSE with a message for the
 * caller, and the message is logged once, where it is consumed.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_H
#define SFD_H

#include <sys/types.h>
#include <glib.h>
#include <json-glib/json-glib.h>

#include "domain.h"

#define SFD_PROTOCOL_VERSION        1
#define SFD_MAX_HOST_CLONES_DEFAULT 64
/* Most clones one fork makes: QEMU's vm-fork limit (SF_MAX_CLONES). */
#define SFD_MAX_FORK_CLONES 64

typedef struct SfdQmp SfdQmp;
typedef struct SfdVm SfdVm;
typedef struct SfdAgent SfdAgent;

typedef struct SfdFamily {
    char *domain; /* the parent domain's name */
    int index;    /* 1..254, unique on this host's sfd */
    char *bridge;
    guint32 net; /* network address, host byte order */
    int prefix;
    int members; /* VMs with a tap on the bridge */
} SfdFamily;

typedef enum {
    SFD_VM_STARTING,
    SFD_VM_RUNNING,
    SFD_VM_STOPPING,
    SFD_VM_EXITED,
} SfdVmState;

typedef void (*SfdVmDone)(SfdVm *vm, const char *err, gpointer opaque);

struct SfdVm {
    int refs;
    char *name;        /* domain name, or <domain>-<id> for a clone */
    char *domain;      /* the domain (the parent's, for a clone) */
    int clone_id;      /* sfd's clone id, 0 for a parent */
    int qemu_clone_id; /* the id vm-fork granted it (1..N per fork) */
    int guest_id;      /* its sf_id(): 1..m within its fork or ticket */
    guint64 fork_id;
    SfdVmState state;
    pid_t pid;
    guint64 starttime; /* /proc/PID/stat field 22: guards pid reuse */
    char *qmp_path, *serial_path, *log_path;
    char *tap, *mac, *ip;
    gboolean net_configured;
    SfdFamily *family; /* NULL: no interface */
    GStrv machine;     /* parent: machine options shared with clones */
    char *failure;     /* why a clone failed (SF_CLONE_FAILED) */
    gint64 started_at; /* wall clock, seconds */
    gboolean adopted;  /* taken over from a previous sfd */
    gboolean spawned;  /* a QEMU process was started for it */
    int forks;         /* parent: vm-fork calls so far */
    /* A clone's fork (forkdir.c keeps these and holds the directory). */
    char *fork_dir;
    pid_t server_pid;
    guint64 server_starttime;

    /* vm.c's own */
    guint stop_timer;
    SfdVmDone attach_done;
    gpointer attach_opaque;
    SfdQmp *qmp;
    int pidfd;
    guint pidfd_watch;
    guint child_watch;
    GList *exit_waiters;  /* SfdVmExitWaiter, called when the VM ended */
    GList *event_waiters; /* SfdVmEventWaiter, for one QMP event each */

    /* Guest requests (agent-state.c), NULL until used; freed with the
     * VM through agent_free. */
    SfdAgent *agent;
    void (*agent_free)(SfdAgent *a);
};

typedef struct Sfd {
    char *socket_path;
    char *state_dir;
    char *hooks_dir;
    char *run_dir;     /* <state>/run: per-VM records and sockets */
    char *domains_dir; /* <state>/domains: defined XML */
    char *qemu;
    char *tag; /* 4 hex digits naming this sfd's interfaces */
    int hook_timeout_s;
    int max_clones;       /* per host */
    GHashTable *domains;  /* name -> SfdDomain */
    GHashTable *vms;      /* name -> SfdVm, running parents and clones */
    GHashTable *families; /* domain name -> SfdFamily */
    GMainLoop *loop;
} Sfd;

extern Sfd *sfd; /* one daemon per process (config.c) */

/* A fresh configuration with the defaults; main.c fills it in. */
Sfd *sfd_config_new(void);

#endif
