/*
 * sfd: a VM's ticket table (pure: no daemon state, times passed in), so
 * the unit tests drive it alone.  A ticket is a guest's permission to
 * make up to `granted` clones; once used it remembers how each of its
 * clones ended, for the parent's sf_join.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_TICKETS_H
#define SFD_TICKETS_H

#include <glib.h>
#include <json-glib/json-glib.h>

/* How a ticket's clone ended (SfExitHow in QEMU's schema). */
typedef enum {
    SFD_HOW_EXITED,
    SFD_HOW_SIGNALED,
    SFD_HOW_LOST,
    SFD_HOW_KILLED,
    SFD_HOW_CRASHED,
} SfdHow;

/* "exited", ... by SfdHow. */
const char *sfd_how_name(SfdHow how);

typedef enum {
    SFD_TICKET_UNUSED,
    SFD_TICKET_FORKING, /* its clone/create request is in flight */
    SFD_TICKET_USED,
} SfdTicketState;

typedef struct SfdTicketMember {
    char *vm; /* the clone's sfd name */
    gboolean ended;
    int status;
    int how;           /* SfdHow */
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
/* An integer member of a record: FALSE when absent or not an integer. */
gboolean sfd_json_int(JsonNode *n, gint64 *out);

#endif
