/*
 * sfd: the pure pieces of guest-request handling (agent.c), kept apart
 * so the unit tests can drive them without a daemon: a token bucket and
 * a VM's ticket table.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_AGENT_H
#define SFD_AGENT_H

#include <glib.h>
#include <json-glib/json-glib.h>

/* The per-VM limits on guest requests (rate and burst, unused tickets
 * and how long they last, checkpoints, each keeping a page server and a
 * frozen image) are the domain's <sf:guest>: SfdGuestLimits, domain.h.
 * QEMU limits the guest first. */
/* Tickets remembered per VM, used ones included (finished ones go
 * first when the table is full); above SFD_GUEST_MAX_UNUSED. */
#define SFD_AGENT_MAX_TICKETS       128
#define SFD_AGENT_CHECKPOINT_CLONES 64 /* QEMU's most per fork */
/* Repeated complaints (rate limiting, failed replies) are logged at
 * most once per interval, with a count. */
#define SFD_AGENT_LOG_INTERVAL_US (10 * G_USEC_PER_SEC)

typedef struct SfdBucket {
    double tokens;
    double rate;  /* tokens per second */
    double burst; /* most tokens held */
    gint64 last_us;
} SfdBucket;

void sfd_bucket_init(SfdBucket *b, double rate, double burst, gint64 now_us);
/* Take a token: FALSE when there is none (the request is refused). */
gboolean sfd_bucket_take(SfdBucket *b, gint64 now_us);

typedef enum {
    SFD_TICKET_UNUSED,
    SFD_TICKET_FORKING, /* its clone/create request is in flight */
    SFD_TICKET_USED,
} SfdTicketState;

typedef struct SfdTicketMember {
    char *vm; /* the clone's sfd name */
    gboolean ended;
    int status;
    int how;           /* SfAgentHow */
    gboolean reported; /* the parent's QEMU took the clone-exited reply */
} SfdTicketMember;

typedef struct SfdTicket {
    guint64 id;
    int granted;
    SfdTicketState state;
    gint64 created_us;
    guint64 checkpoint; /* used through create-clones, else 0 */
    GPtrArray *members; /* SfdTicketMember; [k-1] is clone-id k */
} SfdTicket;

typedef struct SfdTicketTable {
    GPtrArray *tickets; /* SfdTicket, oldest first */
    guint max_unused;
    guint max_total;
    gint64 ttl_us;
} SfdTicketTable;

void sfd_tickets_init(SfdTicketTable *t, guint max_unused, guint max_total,
                      gint64 ttl_us);
void sfd_tickets_clear(SfdTicketTable *t);
/* Forget unused tickets older than the TTL; returns how many. */
guint sfd_tickets_expire(SfdTicketTable *t, gint64 now_us);
guint sfd_tickets_count_unused(SfdTicketTable *t);
/* Add a ticket, or NULL (EDQUOT in *error) when the VM holds too many. */
SfdTicket *sfd_tickets_add(SfdTicketTable *t, guint64 id, int granted,
                           gint64 now_us, int *error);
SfdTicket *sfd_tickets_find(SfdTicketTable *t, guint64 id);
/* Whether ticket id can be used for clones now: 0 (and the ticket),
 * ENOENT (unknown or expired) or EALREADY (used or in use). */
int sfd_tickets_claim(SfdTicketTable *t, guint64 id, gint64 now_us,
                      SfdTicket **out);
/* Add clone k's member record (k = members->len + 1). */
void sfd_ticket_add_member(SfdTicket *tk, const char *vm);
/* A member ended: FALSE when it had already been reported. */
gboolean sfd_ticket_member_ended(SfdTicket *tk, int clone_id, int status,
                                 int how);
/* Used and every member ended. */
gboolean sfd_ticket_finished(SfdTicket *tk);

/* The table as JSON for the VM's record (created times as wall clock,
 * real_us), and back: tickets whose clone or create request was in
 * flight are unused again; malformed entries are skipped.  Both take
 * the current monotonic and real times. */
JsonNode *sfd_tickets_to_json(SfdTicketTable *t, gint64 mono_us,
                              gint64 real_us);
void sfd_tickets_from_json(SfdTicketTable *t, JsonArray *a, gint64 mono_us,
                           gint64 real_us);

#endif
