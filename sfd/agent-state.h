/*
 * sfd: a VM's guest-request state (docs/guest-api.md): its limits and
 * token bucket, counters, a parent's tickets and checkpoints, a clone's
 * place in its parent's ticket.  Kept in the VM's record (its "agent"
 * member), shown in its JSON, and restored when sfd adopts the VM.  The
 * operations that change it are in agent.c.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_AGENT_STATE_H
#define SFD_AGENT_STATE_H

#include "sfd.h"
#include "bucket.h"
#include "forkdir.h"
#include "store.h"
#include "tickets.h"

/* Tickets remembered per VM, used ones included (finished ones go
 * first when the table is full); above SFD_GUEST_MAX_UNUSED. */
#define SFD_AGENT_MAX_TICKETS 128
/* Repeated complaints (rate limiting, failed replies) are logged at
 * most once per interval, with a count. */
#define SFD_AGENT_LOG_INTERVAL_US (10 * G_USEC_PER_SEC)

typedef struct SfdCheckpoint {
    guint64 id;
    guint32 request;  /* the checkpoint request (its clones') */
    SfdForkDir *fd;   /* held for the checkpoint's life */
    int next_qemu_id; /* QEMU clone ids 1..64 handed out in order */
} SfdCheckpoint;

/* A repeated complaint: logged at once, then at most once per
 * interval with how many went unsaid. */
typedef struct SfdLogLimit {
    gint64 last_us;
    gboolean logged;
    guint64 unsaid;
} SfdLogLimit;

struct SfdAgent {
    SfdGuestLimits limits; /* the domain's <sf:guest>, when created */
    SfdBucket bucket;
    guint64 requests;     /* SF_AGENT_REQUEST events */
    guint64 refused;      /* answered with an error */
    guint64 rate_limited; /* of which EAGAIN by the bucket */
    guint64 reply_failures;
    SfdLogLimit rl_log, fail_log;
    gboolean busy;          /* a vm-fork of this VM is in flight */
    SfdTicketTable tickets; /* parent */
    GPtrArray *checkpoints; /* parent: SfdCheckpoint */
    /* A clone made from a ticket: */
    char *parent;
    pid_t parent_pid; /* tells this parent from a later one */
    guint64 ticket;
    int member;        /* its clone id within the ticket */
    gboolean exit_set; /* it asked to exit */
    int exit_status, exit_how;
    gboolean killed; /* ended by kill */
    /* Adopted parent: clone-exited replies wait until its QMP is back
     * (sfd_agent_adopted sends what is owed). */
    gboolean hold_reports;
};

/* vm's state, made on first use. */
SfdAgent *sfd_agent_get(SfdVm *vm);
/* Record vm (its record holds this state) if it is still sfd's: an
 * ended VM's record is gone and must stay gone. */
void sfd_agent_save(SfdVm *vm);
SfdCheckpoint *sfd_agent_checkpoint_find(SfdAgent *a, guint64 id);
/* Let go of a checkpoint (its fork goes once no clone holds it). */
void sfd_agent_checkpoint_free(gpointer cp);
/* TRUE when the complaint should be logged now (*n: how many since). */
gboolean sfd_log_limit(SfdLogLimit *l, guint64 *n);

/* The "agent" member of vm's JSON: counters; tickets in detail. */
void sfd_agent_describe(SfdVm *vm, JsonObject *o, gboolean detail);
/* Every record is loaded: ticket members without a clone are crashed. */
void sfd_agent_adopt_check(void);

/* The "agent" member of a VM's record (store.h). */
extern const SfdRecordSection sfd_agent_record;

#endif
