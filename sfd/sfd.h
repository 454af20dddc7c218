/*
 * sfd: the snowflock host daemon.  Shared types and the small APIs the
 * files of sfd/ offer each other:
 *
 *   main.c     options, the loop, logging, sd_notify
 *   proto.c    the line protocol: framing, json-glib, typed dispatch
 *   commands.c the protocol's commands over the objects below
 *   domain.c   domain XML (domain.h)
 *   vm.c       QEMU processes: spawn, adopt after a restart, supervise
 *   qmp.c      a small asynchronous QMP client (qmp.h)
 *   fork.c     vm-fork, launching clones
 *   agent.c    guest requests (SF_AGENT_REQUEST): tickets, forks,
 *              checkpoints, exits (agent.h)
 *   net.c      family networks: a bridge per family, a tap per VM
 *   hooks.c    libvirt-style hooks
 *   state.c    records under the state directory
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

typedef struct SfdQmp SfdQmp;
typedef struct SfdServer SfdServer;
typedef struct SfdRequest SfdRequest;
typedef struct SfdVm SfdVm;
typedef struct SfdAgent SfdAgent;
typedef void (*SfdVmDone)(SfdVm *vm, const char *err, gpointer opaque);

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
    pid_t server_pid;  /* clone: its fork's page server */
    guint64 server_starttime;
    char *qmp_path, *serial_path, *log_path;
    char *tap, *mac, *ip;
    gboolean net_configured;
    SfdFamily *family; /* NULL: no interface */
    GStrv machine;     /* parent: machine options shared with clones */
    char *failure;     /* why a clone failed (SF_CLONE_FAILED) */
    gint64 started_at; /* wall clock, seconds */
    gboolean adopted;  /* taken over from a previous sfd */
    gboolean spawned;  /* a QEMU process was started for it */
    guint stop_timer;
    SfdVmDone attach_done;
    gpointer attach_opaque;

    SfdQmp *qmp;
    int pidfd;
    guint pidfd_watch;
    guint child_watch;
    int forks;           /* parent: vm-fork calls so far */
    char *fork_dir;      /* clone: its fork's directory */
    GList *exit_waiters; /* SfdRequest answered when the VM has exited */
    SfdAgent *agent;     /* guest requests (agent.c), NULL until used */
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
    SfdServer *server;
    GMainLoop *loop;
} Sfd;

extern Sfd *sfd; /* one daemon per process */

/* proto.c */
typedef enum {
    SFD_ARG_STRING,
    SFD_ARG_INT,
    SFD_ARG_BOOL,
    SFD_ARG_STRLIST,
} SfdArgType;

typedef struct SfdArgSpec {
    const char *name;
    SfdArgType type;
    gboolean required;
} SfdArgSpec;

typedef void (*SfdCommandFunc)(SfdRequest *req, JsonObject *args);

typedef struct SfdCommand {
    const char *name;
    SfdCommandFunc fn;
    SfdArgSpec args[6]; /* ends at name == NULL */
    const char *help;
} SfdCommand;

extern const SfdCommand sfd_commands[]; /* commands.c */

SfdServer *sfd_server_new(const char *path, int mode, char **err);
void sfd_server_free(SfdServer *s);
/* Check args against spec: NULL, or an error message. */
char *sfd_args_check(const SfdArgSpec *spec, JsonObject *args);
/* Answer a request (takes ownership of ret); the request is freed.  A
 * request whose client left is answered into the void. */
void sfd_request_return(SfdRequest *req, JsonNode *ret);
void sfd_request_error(SfdRequest *req, const char *cls, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);
void sfd_request_subscribe(SfdRequest *req, GStrv events);
/* Send an event to every subscribed client (takes ownership of data). */
void sfd_event(const char *name, JsonNode *data);

/* vm.c */
SfdVm *sfd_vm_lookup(const char *name);
typedef void (*SfdStartDone)(SfdVm *vm, const char *cls, const char *err,
                             gpointer opaque);
/* Start a defined domain: hooks, network, QEMU, QMP.  done(vm or NULL). */
void sfd_vm_start(SfdDomain *d, SfdStartDone done, gpointer opaque);
/* The last lines of a VM's QEMU log, for error messages. */
char *sfd_vm_log_tail(SfdVm *vm);
/* Set the per-VM paths (sockets, log) under the run directory. */
gboolean sfd_vm_set_paths(SfdVm *vm, char **err);
/* Spawn the QEMU of a prepared SfdVm (name, paths, tap set). */
int sfd_vm_spawn(SfdVm *vm, GPtrArray *argv, char **err);
/* Connect QMP, then call done (err NULL on success). */
void sfd_vm_attach(SfdVm *vm, SfdVmDone done, gpointer opaque);
void sfd_vm_stop(SfdVm *vm); /* QMP quit, SIGTERM fallback */
int sfd_vm_kill(SfdVm *vm, int sig);
SfdVm *sfd_vm_new(const char *name, const char *domain);
SfdVm *sfd_vm_ref(SfdVm *vm);
void sfd_vm_unref(SfdVm *vm);
/* Tear down a VM whose process is gone (hooks, network, record). */
void sfd_vm_exited(SfdVm *vm, int status);
GPtrArray *sfd_vm_argv(SfdVm *vm, GStrv machine);
GStrv sfd_vm_machine(SfdDomain *d, const char *mac, const char *append);
void sfd_vm_adopt_all(void);
JsonNode *sfd_vm_to_json(SfdVm *vm, gboolean detail);
const char *sfd_vm_state_str(SfdVm *vm);
guint64 sfd_proc_starttime(pid_t pid);
gboolean sfd_proc_alive(pid_t pid, guint64 starttime);
/* Remove a fork directory (and stop a checkpoint's page server whose
 * pid it records in "sfd-checkpoint"). */
void sfd_fork_dir_remove(const char *path);

/* fork.c */
typedef void (*SfdForkDone)(JsonNode *ret, const char *cls, const char *err,
                            gpointer opaque);
/* Grant m <= count clones of vm within its and the host's limits, fork
 * and launch them.  origin is "client" or "guest" (a ticket request). */
void sfd_fork(SfdVm *parent, int count, const char *origin, SfdForkDone done,
              gpointer opaque);
int sfd_clones_alive(const char *domain);
/* What a vm-fork answer says about the fork: its id, page server and the
 * arguments that start a clone of it (missing members: 0, 0, empty). */
void sfd_fork_answer_parse(JsonObject *o, guint64 *fork_id, pid_t *server_pid,
                           GStrv *clone_args);

/* A fork a guest asked for (agent.c). */
typedef struct SfdForkGuest {
    guint32 request; /* answered in each clone by its identity */
    guint64 ticket;
    /* From a checkpoint (clone_args != NULL): no vm-fork, launch from
     * this fork with QEMU clone ids first_qemu_id.. */
    guint64 fork_id;
    char *dir;
    pid_t server_pid;
    GStrv clone_args;
    int first_qemu_id;
    guint32 generation;
    /* Called once the fork exists, before any clone is launched (the
     * clones have their ids); not called when the fork fails first. */
    void (*forked)(SfdVm *parent, GPtrArray *clones, guint32 generation,
                   const char *cls, const char *err, gpointer opaque);
} SfdForkGuest;
void sfd_fork_ex(SfdVm *parent, int count, const char *origin,
                 const SfdForkGuest *guest, SfdForkDone done, gpointer opaque);

/* agent.c */
/* An SF_AGENT_REQUEST event from vm's QEMU. */
void sfd_agent_request(SfdVm *vm, JsonObject *data);
/* vm is ending (called first thing in sfd_vm_exited). */
void sfd_agent_vm_exiting(SfdVm *vm);
void sfd_agent_free(SfdAgent *a);
/* The "agent" member of a VM's JSON (counters; tickets in detail). */
JsonNode *sfd_agent_to_json(SfdVm *vm, gboolean detail);
/* Whether a checkpoint still holds this fork directory (and its page
 * server): fork_release must leave it. */
gboolean sfd_agent_holds_fork_dir(const char *dir);
typedef void (*SfdIdentityDone)(SfdVm *c, const char *err, gpointer opaque);
/* sf-agent-reply kind=identity to clone c (request 0: on sfd's own
 * initiative); retried briefly while the guest is not reading. */
void sfd_agent_send_identity(SfdVm *c, guint32 request, guint64 ticket,
                             int clone_id, guint32 generation,
                             SfdIdentityDone done, gpointer opaque);
/* Restart safety: the "agent" member of a VM's record, and back. */
void sfd_agent_save(SfdVm *vm, JsonBuilder *b);
void sfd_agent_restore(SfdVm *vm, JsonObject *record);
/* Before adoption: the id counter; after every record is loaded: mark
 * ticket members without a clone as crashed. */
void sfd_agent_ids_load(void);
void sfd_agent_adopt_check(void);
/* An adopted VM's QMP is back (err NULL) or failed: owed reports go. */
void sfd_agent_adopted(SfdVm *vm, const char *err);

/* net.c */
SfdFamily *sfd_family_get(SfdDomain *d, char **err);
/* Create a tap for member id (0 = parent) on the family bridge. */
char *sfd_net_tap_add(SfdFamily *f, int member, char **err);
void sfd_net_tap_del(SfdFamily *f, const char *tap);
/* Drop the family (and its bridge) when it has no members left. */
void sfd_family_put(SfdFamily *f);
SfdFamily *sfd_family_adopt(const char *domain, int index, const char *bridge,
                            guint32 net, int prefix);
char *sfd_net_ip(SfdFamily *f, int member);
char *sfd_net_parent_mac(SfdFamily *f);
char *sfd_net_clone_mac(SfdFamily *f, int clone_id);
void sfd_net_sweep(void);

/* hooks.c */
typedef void (*SfdHookDone)(gboolean ok, const char *msg, gpointer opaque);
/* Run HOOKS_DIR/object NAME OP SUBOP with xml on stdin.  A missing hook
 * succeeds.  done may be NULL (fire and forget); it is always called
 * from the main loop, never before this returns. */
void sfd_hook_run(const char *object, const char *name, const char *op,
                  const char *subop, SfdDomain *d, SfdHookDone done,
                  gpointer opaque);

/* state.c */
int sfd_state_write_json(const char *path, JsonNode *node, char **err);
JsonNode *sfd_state_read_json(const char *path, char **err);
void sfd_state_save_vm(SfdVm *vm);
void sfd_state_drop_vm(SfdVm *vm);
int sfd_state_save_domain(SfdDomain *d, char **err);
void sfd_state_drop_domain(const char *name);
void sfd_state_load_domains(void);

#endif
