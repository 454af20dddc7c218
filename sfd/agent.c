/*
 * sfd: requests from guests (docs/guest-api.md).
 *
 * Every VM sfd starts has an sf-agent-port; its QEMU turns each request
 * of the guest agent into an SF_AGENT_REQUEST event on QMP, which sfd
 * answers with sf-agent-reply.  The guest is untrusted: every field is
 * checked, each VM's requests pass a token bucket (EAGAIN beyond it),
 * a VM holds a bounded number of unused tickets (which expire) and of
 * checkpoints, and has at most one fork (vm-fork) in flight.  The
 * limits are the domain's <sf:guest> (domain.h); enabled="no" answers
 * EPERM to all but a clone's exit.  A failed reply is logged (at most
 * once per interval per VM, with a count) and never fatal.
 *
 *   ticket n        m = min(n, 64, domain and host quota); EDQUOT if 0
 *   clone t         sfd_fork_ex(); the parent's result once vm-fork has
 *                   returned, each clone's identity (answering the same
 *                   request) once its QMP is up
 *   kill t          stops the ticket's live clones
 *   exit s how      (a clone) stops it; its parent gets clone-exited
 *   checkpoint      vm-fork {clones: 64, launch: false}, kept (page
 *                   server included) until the parent stops
 *   create cp t     launches t's clones from checkpoint cp; identities
 *                   answer the checkpoint request
 *
 * Ticket and checkpoint ids come from one counter per sfd (1, 2, ...),
 * never reused, even across a restart.  The state survives sfd itself:
 * it is in each VM's record, see "surviving an sfd restart" below.
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
#include "agent.h"
#include "qmp.h"

#define IDENTITY_TRIES    40
#define IDENTITY_RETRY_MS 250

enum { HOW_EXITED, HOW_SIGNALED, HOW_LOST, HOW_KILLED, HOW_CRASHED };
static const char *const how_names[] = {
    "exited", "signaled", "lost", "killed", "crashed",
};

/* ---- token bucket ---- */

void sfd_bucket_init(SfdBucket *b, double rate, double burst, gint64 now_us)
{
    b->rate = rate;
    b->burst = burst;
    b->tokens = burst;
    b->last_us = now_us;
}

gboolean sfd_bucket_take(SfdBucket *b, gint64 now_us)
{
    if (now_us > b->last_us) {
        b->tokens = MIN(b->burst, b->tokens + (now_us - b->last_us) * b->rate /
                                                  G_USEC_PER_SEC);
        b->last_us = now_us;
    }
    if (b->tokens < 1.0) {
        return FALSE;
    }
    b->tokens -= 1.0;
    return TRUE;
}

/* ---- ticket table ---- */

static void member_free(gpointer p)
{
    SfdTicketMember *m = p;

    g_free(m->vm);
    g_free(m);
}

static void ticket_free(gpointer p)
{
    SfdTicket *tk = p;

    g_ptr_array_free(tk->members, TRUE);
    g_free(tk);
}

void sfd_tickets_init(SfdTicketTable *t, guint max_unused, guint max_total,
                      gint64 ttl_us)
{
    t->tickets = g_ptr_array_new_with_free_func(ticket_free);
    t->max_unused = max_unused;
    t->max_total = max_total;
    t->ttl_us = ttl_us;
}

void sfd_tickets_clear(SfdTicketTable *t)
{
    if (t->tickets) {
        g_ptr_array_free(t->tickets, TRUE);
        t->tickets = NULL;
    }
}

guint sfd_tickets_expire(SfdTicketTable *t, gint64 now_us)
{
    guint n = 0;

    for (guint i = 0; i < t->tickets->len;) {
        SfdTicket *tk = t->tickets->pdata[i];
        if (tk->state == SFD_TICKET_UNUSED &&
            now_us - tk->created_us >= t->ttl_us) {
            g_ptr_array_remove_index(t->tickets, i);
            n++;
        } else {
            i++;
        }
    }
    return n;
}

guint sfd_tickets_count_unused(SfdTicketTable *t)
{
    guint n = 0;

    for (guint i = 0; i < t->tickets->len; i++) {
        n += ((SfdTicket *)t->tickets->pdata[i])->state == SFD_TICKET_UNUSED;
    }
    return n;
}

gboolean sfd_ticket_finished(SfdTicket *tk)
{
    if (tk->state != SFD_TICKET_USED) {
        return FALSE;
    }
    for (guint i = 0; i < tk->members->len; i++) {
        if (!((SfdTicketMember *)tk->members->pdata[i])->ended) {
            return FALSE;
        }
    }
    return TRUE;
}

SfdTicket *sfd_tickets_add(SfdTicketTable *t, guint64 id, int granted,
                           gint64 now_us, int *error)
{
    SfdTicket *tk;

    sfd_tickets_expire(t, now_us);
    if (sfd_tickets_count_unused(t) >= t->max_unused) {
        *error = EDQUOT;
        return NULL;
    }
    if (t->tickets->len >= t->max_total) {
        /* Make room by forgetting the oldest finished ticket. */
        guint i;
        for (i = 0; i < t->tickets->len; i++) {
            if (sfd_ticket_finished(t->tickets->pdata[i])) {
                break;
            }
        }
        if (i == t->tickets->len) {
            *error = EDQUOT;
            return NULL;
        }
        g_ptr_array_remove_index(t->tickets, i);
    }
    tk = g_new0(SfdTicket, 1);
    tk->id = id;
    tk->granted = granted;
    tk->state = SFD_TICKET_UNUSED;
    tk->created_us = now_us;
    tk->members = g_ptr_array_new_with_free_func(member_free);
    g_ptr_array_add(t->tickets, tk);
    return tk;
}

SfdTicket *sfd_tickets_find(SfdTicketTable *t, guint64 id)
{
    for (guint i = 0; t->tickets && i < t->tickets->len; i++) {
        SfdTicket *tk = t->tickets->pdata[i];
        if (tk->id == id) {
            return tk;
        }
    }
    return NULL;
}

int sfd_tickets_claim(SfdTicketTable *t, guint64 id, gint64 now_us,
                      SfdTicket **out)
{
    SfdTicket *tk;

    sfd_tickets_expire(t, now_us);
    tk = sfd_tickets_find(t, id);
    if (!tk) {
        return ENOENT;
    }
    if (tk->state != SFD_TICKET_UNUSED) {
        return EALREADY;
    }
    *out = tk;
    return 0;
}

void sfd_ticket_add_member(SfdTicket *tk, const char *vm)
{
    SfdTicketMember *m = g_new0(SfdTicketMember, 1);

    m->vm = g_strdup(vm);
    g_ptr_array_add(tk->members, m);
}

gboolean sfd_ticket_member_ended(SfdTicket *tk, int clone_id, int status,
                                 int how)
{
    SfdTicketMember *m;

    if (clone_id < 1 || clone_id > (int)tk->members->len) {
        return FALSE;
    }
    m = tk->members->pdata[clone_id - 1];
    if (m->ended) {
        return FALSE;
    }
    m->ended = TRUE;
    m->status = status;
    m->how = how;
    return TRUE;
}

/* ---- the ticket table in a record ---- */

/* Members are [name, ended, status, how, reported]: a table holds at
 * most max_total tickets of at most 64 clones, so the record stays
 * bounded (about 40 bytes a clone). */
JsonNode *sfd_tickets_to_json(SfdTicketTable *t, gint64 mono_us, gint64 real_us)
{
    JsonArray *a = json_array_new();
    JsonNode *n = json_node_alloc();

    for (guint i = 0; t->tickets && i < t->tickets->len; i++) {
        SfdTicket *tk = t->tickets->pdata[i];
        JsonObject *o = json_object_new();
        JsonArray *ma = json_array_new();

        json_object_set_int_member(o, "id", tk->id);
        json_object_set_int_member(o, "granted", tk->granted);
        /* A clone or create in flight is not resumed: unused again. */
        json_object_set_string_member(
            o, "state", tk->state == SFD_TICKET_USED ? "used" : "unused");
        json_object_set_int_member(o, "created-at",
                                   real_us - (mono_us - tk->created_us));
        if (tk->checkpoint) {
            json_object_set_int_member(o, "checkpoint", tk->checkpoint);
        }
        for (guint k = 0; tk->state == SFD_TICKET_USED && k < tk->members->len;
             k++) {
            SfdTicketMember *m = tk->members->pdata[k];
            JsonArray *e = json_array_new();
            json_array_add_string_element(e, m->vm);
            json_array_add_int_element(e, m->ended);
            json_array_add_int_element(e, m->status);
            json_array_add_int_element(e, m->how);
            json_array_add_int_element(e, m->reported);
            json_array_add_array_element(ma, e);
        }
        json_object_set_array_member(o, "clones", ma);
        json_array_add_object_element(a, o);
    }
    json_node_init_array(n, a);
    json_array_unref(a);
    return n;
}

static gboolean json_int(JsonNode *n, gint64 *out)
{
    if (!n || !JSON_NODE_HOLDS_VALUE(n) ||
        json_node_get_value_type(n) != G_TYPE_INT64) {
        return FALSE;
    }
    *out = json_node_get_int(n);
    return TRUE;
}

void sfd_tickets_from_json(SfdTicketTable *t, JsonArray *a, gint64 mono_us,
                           gint64 real_us)
{
    for (guint i = 0; a && i < json_array_get_length(a); i++) {
        JsonNode *tn = json_array_get_element(a, i);
        JsonObject *o;
        JsonArray *ma;
        gint64 id, granted, at, cp = 0;
        const char *st;
        SfdTicket *tk;

        if (t->tickets->len >= t->max_total || !JSON_NODE_HOLDS_OBJECT(tn)) {
            continue;
        }
        o = json_node_get_object(tn);
        st = json_object_get_string_member_with_default(o, "state", "");
        ma = json_object_has_member(o, "clones") &&
                     JSON_NODE_HOLDS_ARRAY(json_object_get_member(o, "clones"))
                 ? json_object_get_array_member(o, "clones")
                 : NULL;
        if (!json_int(json_object_get_member(o, "id"), &id) || id <= 0 ||
            sfd_tickets_find(t, id) ||
            !json_int(json_object_get_member(o, "granted"), &granted) ||
            granted < 1 || granted > 64 ||
            !json_int(json_object_get_member(o, "created-at"), &at) ||
            (strcmp(st, "used") && strcmp(st, "unused")) ||
            (json_object_has_member(o, "checkpoint") &&
             (!json_int(json_object_get_member(o, "checkpoint"), &cp) ||
              cp < 0)) ||
            (ma && json_array_get_length(ma) > (guint)granted)) {
            g_warning("ticket record %u is malformed (dropped)", i);
            continue;
        }
        tk = g_new0(SfdTicket, 1);
        tk->id = id;
        tk->granted = granted;
        tk->state = strcmp(st, "used") ? SFD_TICKET_UNUSED : SFD_TICKET_USED;
        /* Its age by the wall clock (never negative), as a monotonic
         * time again. */
        tk->created_us = mono_us - MAX(0, real_us - at);
        tk->checkpoint = cp;
        tk->members = g_ptr_array_new_with_free_func(member_free);
        for (guint k = 0; tk->state == SFD_TICKET_USED && ma &&
                          k < json_array_get_length(ma);
             k++) {
            JsonNode *en = json_array_get_element(ma, k);
            JsonArray *e =
                JSON_NODE_HOLDS_ARRAY(en) ? json_node_get_array(en) : NULL;
            SfdTicketMember *m = g_new0(SfdTicketMember, 1);
            gint64 v[4] = { 0, 0, 0, 0 };
            gboolean ok = e && json_array_get_length(e) == 5;

            for (guint j = 0; ok && j < 4; j++) {
                ok = json_int(json_array_get_element(e, j + 1), &v[j]);
            }
            const char *name =
                ok ? json_node_get_string(json_array_get_element(e, 0)) : NULL;
            if (!name || v[2] < 0 || v[2] > HOW_CRASHED || v[1] < G_MININT32 ||
                v[1] > G_MAXINT32) {
                /* Unreadable: its clone is reported as crashed. */
                m->vm = g_strdup("?");
                m->ended = TRUE;
                m->status = -1;
                m->how = HOW_CRASHED;
            } else {
                m->vm = g_strdup(name);
                m->ended = v[0] != 0;
                m->status = v[1];
                m->how = v[2];
                m->reported = v[3] != 0;
            }
            g_ptr_array_add(tk->members, m);
        }
        g_ptr_array_add(t->tickets, tk);
    }
}

/* ---- per-VM state ---- */

typedef struct SfdCheckpoint {
    guint64 id;
    guint32 request; /* the checkpoint request (its clones') */
    guint64 fork_id;
    char *dir;
    pid_t server_pid;
    guint64 server_starttime;
    GStrv clone_args;
    int next_qemu_id; /* QEMU clone ids 1..64 handed out in order */
    guint32 generation;
} SfdCheckpoint;

struct SfdAgent {
    SfdGuestLimits limits; /* the domain's <sf:guest>, when created */
    SfdBucket bucket;
    guint64 requests;     /* SF_AGENT_REQUEST events */
    guint64 refused;      /* answered with an error */
    guint64 rate_limited; /* of which EAGAIN by the bucket */
    guint64 reply_failures;
    gint64 rl_logged_us; /* last rate-limit report */
    gboolean rl_logged;
    guint64 rl_unreported;
    gint64 fail_logged_us;
    gboolean fail_logged;
    guint64 fail_unreported;
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

/* Ticket and checkpoint ids, never reused, even across restarts: ids
 * below handle_reserved are recorded as taken in <state>/agent-ids.json,
 * which is rewritten once every SFD_AGENT_ID_BLOCK ids. */
#define SFD_AGENT_ID_BLOCK 64
static guint64 next_handle = 1;
static guint64 handle_reserved = 0;

static char *ids_path(void)
{
    return g_build_filename(sfd->state_dir, "agent-ids.json", NULL);
}

static guint64 handle_take(void)
{
    if (sfd && next_handle >= handle_reserved) {
        g_autofree char *path = ids_path();
        g_autofree char *err = NULL;
        JsonObject *o = json_object_new();
        g_autoptr(JsonNode) n = json_node_alloc();
        guint64 upto = next_handle + SFD_AGENT_ID_BLOCK;

        json_object_set_int_member(o, "next", upto);
        json_node_init_object(n, o);
        json_object_unref(o);
        if (sfd_state_write_json(path, n, &err) < 0) {
            g_warning("cannot record guest ids: %s", err);
        } else {
            handle_reserved = upto;
        }
    }
    return next_handle++;
}

static void handle_seen(guint64 id)
{
    if (id >= next_handle && id < G_MAXINT64) {
        next_handle = id + 1;
    }
}

void sfd_agent_ids_load(void)
{
    g_autofree char *path = ids_path();
    g_autofree char *err = NULL;
    g_autoptr(JsonNode) n = NULL;

    if (!g_file_test(path, G_FILE_TEST_EXISTS)) {
        return;
    }
    n = sfd_state_read_json(path, &err);
    if (!n || !JSON_NODE_HOLDS_OBJECT(n)) {
        g_warning("%s: %s", path, err ? err : "not an object");
        return;
    }
    gint64 v = json_object_get_int_member_with_default(json_node_get_object(n),
                                                       "next", 0);
    if (v > 0) {
        handle_seen(v - 1);
        /* Everything below was (maybe) handed out: start above it. */
        handle_reserved = next_handle;
    }
}

static void checkpoint_free(gpointer p)
{
    SfdCheckpoint *cp = p;

    g_free(cp->dir);
    g_strfreev(cp->clone_args);
    g_free(cp);
}

/* The VM's limits: its domain's (the parent's, for a clone), which
 * cannot be redefined while the VM runs. */
static void agent_limits(SfdVm *vm, SfdGuestLimits *l)
{
    SfdDomain *dom =
        vm->domain ? g_hash_table_lookup(sfd->domains, vm->domain) : NULL;

    if (dom) {
        *l = dom->guest;
    } else {
        sfd_guest_limits_default(l);
    }
}

static SfdAgent *agent_get(SfdVm *vm)
{
    if (!vm->agent) {
        SfdAgent *a = g_new0(SfdAgent, 1);
        agent_limits(vm, &a->limits);
        sfd_bucket_init(&a->bucket, a->limits.rate, a->limits.burst,
                        g_get_monotonic_time());
        sfd_tickets_init(&a->tickets, a->limits.max_unused_tickets,
                         SFD_AGENT_MAX_TICKETS,
                         (gint64)a->limits.ticket_timeout_s * G_USEC_PER_SEC);
        a->checkpoints = g_ptr_array_new_with_free_func(checkpoint_free);
        vm->agent = a;
    }
    return vm->agent;
}

/* Record a VM's agent state (in its record, state.c) if the VM is still
 * sfd's: an ended VM's record is gone and must stay gone. */
static void agent_save(SfdVm *vm)
{
    if (vm->state != SFD_VM_EXITED && sfd_vm_lookup(vm->name) == vm) {
        sfd_state_save_vm(vm);
    }
}

void sfd_agent_free(SfdAgent *a)
{
    if (!a) {
        return;
    }
    sfd_tickets_clear(&a->tickets);
    g_ptr_array_free(a->checkpoints, TRUE);
    g_free(a->parent);
    g_free(a);
}

static SfdCheckpoint *checkpoint_find(SfdAgent *a, guint64 id)
{
    for (guint i = 0; i < a->checkpoints->len; i++) {
        SfdCheckpoint *cp = a->checkpoints->pdata[i];
        if (cp->id == id) {
            return cp;
        }
    }
    return NULL;
}

gboolean sfd_agent_holds_fork_dir(const char *dir)
{
    GHashTableIter it;
    gpointer v;

    g_hash_table_iter_init(&it, sfd->vms);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        SfdVm *vm = v;
        for (guint i = 0; vm->agent && i < vm->agent->checkpoints->len; i++) {
            SfdCheckpoint *cp = vm->agent->checkpoints->pdata[i];
            if (!strcmp(cp->dir, dir)) {
                return TRUE;
            }
        }
    }
    return FALSE;
}

/* ---- answering ---- */

static const char *errno_name(int e)
{
    switch (e) {
    case 0:
        return "ok";
    case EINVAL:
        return "EINVAL";
    case ENOENT:
        return "ENOENT";
    case EALREADY:
        return "EALREADY";
    case EDQUOT:
        return "EDQUOT";
    case EAGAIN:
        return "EAGAIN";
    case EBUSY:
        return "EBUSY";
    case ENOTSUP:
        return "ENOTSUP";
    case EIO:
        return "EIO";
    case EPROTO:
        return "EPROTO";
    case EPERM:
        return "EPERM";
    }
    return "error";
}

/* A complaint that may repeat: logged at once, then at most once per
 * interval with the number left unsaid. */
static gboolean limited(gint64 *last_us, gboolean *logged, guint64 *unsaid,
                        guint64 *n_out)
{
    gint64 now = g_get_monotonic_time();

    (*unsaid)++;
    if (*logged && now - *last_us < SFD_AGENT_LOG_INTERVAL_US) {
        return FALSE;
    }
    *n_out = *unsaid;
    *unsaid = 0;
    *last_us = now;
    *logged = TRUE;
    return TRUE;
}

typedef struct ReplyCtx {
    char *vm;
    char *what;
} ReplyCtx;

static void reply_failed(const char *name, const char *what, const char *err)
{
    SfdVm *vm = sfd_vm_lookup(name);
    SfdAgent *a = vm ? vm->agent : NULL;
    guint64 n;

    if (!a) {
        g_debug("%s: sf-agent-reply %s: %s", name, what, err);
        return;
    }
    a->reply_failures++;
    if (limited(&a->fail_logged_us, &a->fail_logged, &a->fail_unreported, &n)) {
        g_warning("%s: sf-agent-reply %s failed: %s (%" G_GUINT64_FORMAT
                  " failure%s since the last report, %" G_GUINT64_FORMAT
                  " in all)",
                  name, what, err, n, n == 1 ? "" : "s", a->reply_failures);
    }
}

static void reply_done(SfdQmp *q, JsonNode *ret, const char *err,
                       gpointer opaque)
{
    ReplyCtx *r = opaque;

    if (err) {
        reply_failed(r->vm, r->what, err);
    }
    g_free(r->vm);
    g_free(r->what);
    g_free(r);
}

/* sf-agent-reply (takes args); failures are logged, never fatal. */
static void send_reply(SfdVm *vm, JsonObject *args, const char *what)
{
    ReplyCtx *r;

    if (!vm->qmp || vm->state == SFD_VM_EXITED) {
        json_object_unref(args);
        reply_failed(vm->name, what, "QMP is not connected");
        return;
    }
    r = g_new0(ReplyCtx, 1);
    r->vm = g_strdup(vm->name);
    r->what = g_strdup(what);
    sfd_qmp_cmd(vm->qmp, "sf-agent-reply", args, reply_done, r);
}

static void guest_event(SfdVm *vm, guint32 request, const char *op, int error,
                        guint count, guint64 value)
{
    JsonObject *o = json_object_new();
    JsonNode *n = json_node_alloc();

    json_object_set_string_member(o, "vm", vm->name);
    json_object_set_int_member(o, "request", request);
    json_object_set_string_member(o, "op", op ? op : "?");
    json_object_set_int_member(o, "error", error);
    json_object_set_string_member(o, "result", errno_name(error));
    json_object_set_int_member(o, "count", count);
    json_object_set_int_member(o, "value", value);
    json_node_init_object(n, o);
    json_object_unref(o);
    sfd_event("GUEST_REQUEST", n);
}

/* Answer a request with a result; one GUEST_REQUEST event per answer
 * (never for EAGAIN: those are only counted). */
static void answer(SfdVm *vm, guint32 request, const char *op, int error,
                   guint count, guint64 value)
{
    JsonObject *args = json_object_new();
    SfdAgent *a = agent_get(vm);

    json_object_set_int_member(args, "request", request);
    json_object_set_string_member(args, "kind", "result");
    json_object_set_int_member(args, "error", error);
    json_object_set_int_member(args, "count", count);
    json_object_set_int_member(args, "value", value);
    if (error) {
        a->refused++;
    }
    if (error != EAGAIN) {
        if (error) {
            g_info("%s: guest %s (request %u) refused: %s", vm->name,
                   op ? op : "?", request, errno_name(error));
        } else {
            g_info(
                "%s: guest %s (request %u): count %u, value %" G_GUINT64_FORMAT,
                vm->name, op, request, count, value);
        }
        guest_event(vm, request, op, error, count, value);
    }
    send_reply(vm, args, error == EAGAIN ? "EAGAIN" : op ? op : "result");
}

/* ---- identity ---- */

typedef struct IdentOp {
    SfdVm *c;
    JsonObject *args;
    int tries;
    SfdIdentityDone done;
    gpointer opaque;
} IdentOp;

static void ident_try(IdentOp *io);

static void ident_finish(IdentOp *io, const char *err)
{
    io->done(io->c, err, io->opaque);
    json_object_unref(io->args);
    sfd_vm_unref(io->c);
    g_free(io);
}

static gboolean ident_timer(gpointer data)
{
    ident_try(data);
    return G_SOURCE_REMOVE;
}

static gboolean ident_retry(IdentOp *io)
{
    if (++io->tries >= IDENTITY_TRIES || io->c->state == SFD_VM_EXITED ||
        !io->c->qmp) {
        return FALSE;
    }
    g_timeout_add(IDENTITY_RETRY_MS, ident_timer, io);
    return TRUE;
}

static void ident_reply(SfdQmp *q, JsonNode *ret, const char *err,
                        gpointer opaque)
{
    IdentOp *io = opaque;

    if (!err) {
        g_info("%s: identity sent", io->c->name);
        ident_finish(io, NULL);
        return;
    }
    /* QEMU consumes an answered request even when the guest could not
     * take it: only a message of sfd's own can be sent again. */
    if (!json_object_has_member(io->args, "request") &&
        !g_str_has_prefix(err, "QMP ") && ident_retry(io)) {
        g_debug("%s: identity: %s (retrying)", io->c->name, err);
        return;
    }
    ident_finish(io, err);
}

static void ident_info(SfdQmp *q, JsonNode *ret, const char *err,
                       gpointer opaque)
{
    IdentOp *io = opaque;
    JsonObject *o = !err && ret && JSON_NODE_HOLDS_OBJECT(ret)
                        ? json_node_get_object(ret)
                        : NULL;

    if (err && g_str_has_prefix(err, "QMP ")) {
        ident_finish(io, err);
        return;
    }
    /* Right after a clone starts its guest may not have the port open
     * yet (it has, in the state the clone was forked in). */
    if (o &&
        !json_object_get_boolean_member_with_default(o, "guest-connected",
                                                     FALSE) &&
        ident_retry(io)) {
        return;
    }
    if (io->c->state == SFD_VM_EXITED || !io->c->qmp) {
        ident_finish(io, "the clone has ended");
        return;
    }
    sfd_qmp_cmd(io->c->qmp, "sf-agent-reply", json_object_ref(io->args),
                ident_reply, io);
}

static void ident_try(IdentOp *io)
{
    if (io->c->state == SFD_VM_EXITED || !io->c->qmp) {
        ident_finish(io, "the clone has ended");
        return;
    }
    sfd_qmp_cmd(io->c->qmp, "query-sf-agent", NULL, ident_info, io);
}

/* A host name QEMU accepts: 1..63 of [A-Za-z0-9.-]. */
/* A VM name as a host name the agent accepts (sf_agent_hostname_valid):
 * domain names may hold '_' and start with any of [A-Za-z0-9_.-]. */
static char *hostname_of(const char *name)
{
    char *h = g_strndup(name, 63); /* SF_AGENT_HOSTNAME_LEN - 1 */

    for (char *p = h; *p; p++) {
        if (!g_ascii_isalnum(*p) && *p != '.' && *p != '-') {
            *p = '-';
        }
    }
    if (!g_ascii_isalnum(h[0])) {
        h[0] = 'x';
    }
    return h;
}

void sfd_agent_send_identity(SfdVm *c, guint32 request, guint64 ticket,
                             int clone_id, guint32 generation,
                             SfdIdentityDone done, gpointer opaque)
{
    IdentOp *io = g_new0(IdentOp, 1);
    JsonObject *o = json_object_new();
    g_autofree char *host = hostname_of(c->name);

    if (request) {
        json_object_set_int_member(o, "request", request);
    }
    json_object_set_string_member(o, "kind", "identity");
    json_object_set_int_member(o, "clone-id", MAX(clone_id, 1));
    json_object_set_int_member(o, "generation", MAX(generation, 1));
    json_object_set_int_member(o, "ticket", ticket);
    if (c->mac) {
        json_object_set_string_member(o, "mac", c->mac);
    }
    if (c->ip && c->family) {
        json_object_set_string_member(o, "ip", c->ip);
        json_object_set_int_member(o, "prefix", c->family->prefix);
    }
    json_object_set_string_member(o, "hostname", host);
    io->c = sfd_vm_ref(c);
    io->args = o;
    io->done = done;
    io->opaque = opaque;
    ident_try(io);
}

/* ---- reading a request ---- */

/* 1: *out set; 0: absent; -1: present but not an integer in 0..max. */
static int get_uint(JsonObject *o, const char *k, guint64 max, guint64 *out)
{
    JsonNode *n = json_object_get_member(o, k);

    if (!n) {
        return 0;
    }
    if (!JSON_NODE_HOLDS_VALUE(n) ||
        json_node_get_value_type(n) != G_TYPE_INT64) {
        return -1;
    }
    /* json-glib reads integers as int64: a uint64 above that wraps. */
    guint64 v = (guint64)json_node_get_int(n);
    if (v > max) {
        return -1;
    }
    *out = v;
    return 1;
}

static const char *get_str(JsonObject *o, const char *k)
{
    JsonNode *n = json_object_get_member(o, k);

    if (!n || !JSON_NODE_HOLDS_VALUE(n) ||
        json_node_get_value_type(n) != G_TYPE_STRING) {
        return NULL;
    }
    return json_node_get_string(n);
}

static int errno_of_class(const char *cls)
{
    if (!cls) {
        return EIO;
    }
    if (!strcmp(cls, "QuotaExceeded")) {
        return EDQUOT;
    }
    if (!strcmp(cls, "InvalidState")) {
        return ENOTSUP;
    }
    if (!strcmp(cls, "InvalidArgument")) {
        return EINVAL;
    }
    return EIO;
}

/* ---- ticket ---- */

static void op_ticket(SfdVm *vm, SfdAgent *a, guint32 req, JsonObject *d,
                      gint64 now)
{
    SfdDomain *dom = g_hash_table_lookup(sfd->domains, vm->domain);
    guint64 n = 0, flags = 0;
    int m, err = 0;
    SfdTicket *tk;

    if (vm->clone_id) {
        answer(vm, req, "ticket", ENOTSUP, 0, 0); /* no nested forks */
        return;
    }
    if (get_uint(d, "clones", G_MAXUINT32, &n) != 1 || n < 1 ||
        get_uint(d, "flags", G_MAXUINT32, &flags) < 0 || flags) {
        answer(vm, req, "ticket", EINVAL, 0, 0);
        return;
    }
    if (!dom) {
        answer(vm, req, "ticket", EIO, 0, 0);
        return;
    }
    m = MIN(n, SFD_AGENT_CHECKPOINT_CLONES);
    m = MIN(m, dom->max_clones - sfd_clones_alive(dom->name));
    m = MIN(m, sfd->max_clones - sfd_clones_alive(NULL));
    if (m <= 0) {
        answer(vm, req, "ticket", EDQUOT, 0, 0);
        return;
    }
    tk = sfd_tickets_add(&a->tickets, next_handle, m, now, &err);
    if (!tk) {
        answer(vm, req, "ticket", err, 0, 0);
        return;
    }
    handle_take();
    agent_save(vm);
    answer(vm, req, "ticket", 0, m, tk->id);
}

/* ---- clone, create-clones ---- */

typedef struct GuestFork {
    SfdVm *vm;
    guint32 request; /* the clone or create request */
    const char *op;
    guint64 ticket;
    guint64 checkpoint;
    gboolean forked;
} GuestFork;

static void guest_forked(SfdVm *parent, GPtrArray *clones, guint32 generation,
                         const char *cls, const char *err, gpointer opaque)
{
    GuestFork *gf = opaque;
    SfdAgent *a = agent_get(parent);
    SfdTicket *tk = sfd_tickets_find(&a->tickets, gf->ticket);

    gf->forked = TRUE;
    a->busy = FALSE; /* vm-fork is done; launching goes on */
    if (tk) {
        tk->state = SFD_TICKET_USED;
        tk->checkpoint = gf->checkpoint;
    }
    for (guint i = 0; i < clones->len; i++) {
        SfdVm *c = clones->pdata[i];
        SfdAgent *ca = agent_get(c);
        g_free(ca->parent);
        ca->parent = g_strdup(parent->name);
        ca->parent_pid = parent->pid;
        ca->ticket = gf->ticket;
        ca->member = c->guest_id;
        if (tk) {
            sfd_ticket_add_member(tk, c->name);
        }
    }
    if (gf->checkpoint) {
        SfdCheckpoint *cp = checkpoint_find(a, gf->checkpoint);
        if (cp) {
            cp->next_qemu_id += clones->len;
        }
    }
    /* Before any clone's record (clone_launch): a clone on record always
     * has its ticket on record. */
    agent_save(parent);
    answer(parent, gf->request, gf->op, 0, clones->len, 0);
}

static void guest_fork_done(JsonNode *ret, const char *cls, const char *err,
                            gpointer opaque)
{
    GuestFork *gf = opaque;
    SfdVm *vm = gf->vm;

    if (!gf->forked && vm->state != SFD_VM_EXITED) {
        SfdAgent *a = agent_get(vm);
        SfdTicket *tk = sfd_tickets_find(&a->tickets, gf->ticket);
        a->busy = FALSE;
        if (tk && tk->state == SFD_TICKET_FORKING) {
            tk->state = SFD_TICKET_UNUSED; /* may be tried again */
        }
        g_warning("%s: guest %s of ticket %" G_GUINT64_FORMAT " failed: %s",
                  vm->name, gf->op, gf->ticket, err ? err : "?");
        answer(vm, gf->request, gf->op, errno_of_class(cls), 0, 0);
    } else if (ret) {
        JsonObject *o = json_node_get_object(ret);
        g_info("%s: guest %s of ticket %" G_GUINT64_FORMAT ": %" G_GINT64_FORMAT
               " clones running",
               vm->name, gf->op, gf->ticket,
               json_object_get_int_member_with_default(o, "running", 0));
    }
    if (ret) {
        json_node_unref(ret);
    }
    sfd_vm_unref(gf->vm);
    g_free(gf);
}

static GuestFork *guest_fork_new(SfdVm *vm, guint32 req, const char *op,
                                 guint64 ticket, guint64 checkpoint)
{
    GuestFork *gf = g_new0(GuestFork, 1);

    gf->vm = sfd_vm_ref(vm);
    gf->request = req;
    gf->op = op;
    gf->ticket = ticket;
    gf->checkpoint = checkpoint;
    return gf;
}

static void op_clone(SfdVm *vm, SfdAgent *a, guint32 req, JsonObject *d,
                     gint64 now)
{
    SfdForkGuest g = { 0 };
    SfdTicket *tk = NULL;
    guint64 t = 0;
    int e;

    if (vm->clone_id) {
        answer(vm, req, "clone", ENOTSUP, 0, 0);
        return;
    }
    if (get_uint(d, "ticket", G_MAXUINT64, &t) != 1) {
        answer(vm, req, "clone", ENOENT, 0, 0);
        return;
    }
    if ((e = sfd_tickets_claim(&a->tickets, t, now, &tk))) {
        answer(vm, req, "clone", e, 0, 0);
        return;
    }
    if (a->busy) {
        answer(vm, req, "clone", EBUSY, 0, 0);
        return;
    }
    tk->state = SFD_TICKET_FORKING;
    a->busy = TRUE;
    g.request = req;
    g.ticket = t;
    g.forked = guest_forked;
    sfd_fork_ex(vm, tk->granted, "guest", &g, guest_fork_done,
                guest_fork_new(vm, req, "clone", t, 0));
}

static void op_create(SfdVm *vm, SfdAgent *a, guint32 req, JsonObject *d,
                      gint64 now)
{
    SfdForkGuest g = { 0 };
    SfdCheckpoint *cp = NULL;
    SfdTicket *tk = NULL;
    guint64 t = 0, c = 0;
    int e;

    if (vm->clone_id) {
        answer(vm, req, "create-clones", ENOTSUP, 0, 0);
        return;
    }
    if (get_uint(d, "checkpoint", G_MAXUINT64, &c) != 1 ||
        !(cp = checkpoint_find(a, c)) ||
        get_uint(d, "ticket", G_MAXUINT64, &t) != 1) {
        answer(vm, req, "create-clones", ENOENT, 0, 0);
        return;
    }
    if ((e = sfd_tickets_claim(&a->tickets, t, now, &tk))) {
        answer(vm, req, "create-clones", e, 0, 0);
        return;
    }
    if (a->busy) {
        answer(vm, req, "create-clones", EBUSY, 0, 0);
        return;
    }
    if (cp->next_qemu_id + tk->granted - 1 > SFD_AGENT_CHECKPOINT_CLONES) {
        answer(vm, req, "create-clones", EDQUOT, 0, 0);
        return;
    }
    if (!sfd_proc_alive(cp->server_pid, cp->server_starttime)) {
        g_warning("%s: checkpoint %" G_GUINT64_FORMAT ": its page server "
                  "%d is gone",
                  vm->name, cp->id, cp->server_pid);
        answer(vm, req, "create-clones", EIO, 0, 0);
        return;
    }
    tk->state = SFD_TICKET_FORKING;
    a->busy = TRUE;
    g.request = cp->request;
    g.ticket = t;
    g.fork_id = cp->fork_id;
    g.dir = cp->dir;
    g.server_pid = cp->server_pid;
    g.clone_args = cp->clone_args;
    g.first_qemu_id = cp->next_qemu_id;
    g.generation = cp->generation;
    g.forked = guest_forked;
    sfd_fork_ex(vm, tk->granted, "guest", &g, guest_fork_done,
                guest_fork_new(vm, req, "create-clones", t, cp->id));
}

/* ---- kill, exit ---- */

/* A ticket's clone, if it is still that clone. */
static SfdVm *member_vm(SfdVm *parent, SfdTicket *tk, SfdTicketMember *m)
{
    SfdVm *c = m->ended ? NULL : sfd_vm_lookup(m->vm);

    if (!c || !c->agent || c->agent->ticket != tk->id ||
        c->agent->parent_pid != parent->pid || c->state == SFD_VM_EXITED) {
        return NULL;
    }
    return c;
}

static void op_kill(SfdVm *vm, SfdAgent *a, guint32 req, JsonObject *d,
                    gint64 now)
{
    SfdTicket *tk;
    guint64 t = 0;
    guint n = 0;

    if (vm->clone_id) {
        answer(vm, req, "kill", ENOTSUP, 0, 0);
        return;
    }
    sfd_tickets_expire(&a->tickets, now);
    if (get_uint(d, "ticket", G_MAXUINT64, &t) != 1 ||
        !(tk = sfd_tickets_find(&a->tickets, t))) {
        answer(vm, req, "kill", ENOENT, 0, 0);
        return;
    }
    if (tk->state == SFD_TICKET_FORKING) {
        answer(vm, req, "kill", EBUSY, 0, 0);
        return;
    }
    for (guint i = 0; i < tk->members->len; i++) {
        SfdVm *c = member_vm(vm, tk, tk->members->pdata[i]);
        if (c && c->state == SFD_VM_STARTING) {
            /* Still being launched: not something to stop halfway. */
            answer(vm, req, "kill", EBUSY, 0, 0);
            return;
        }
    }
    for (guint i = 0; i < tk->members->len; i++) {
        SfdVm *c = member_vm(vm, tk, tk->members->pdata[i]);
        if (c) {
            c->agent->killed = TRUE;
            agent_save(c);
            sfd_vm_stop(c);
            n++;
        }
    }
    answer(vm, req, "kill", 0, n, 0);
}

static void op_exit(SfdVm *vm, SfdAgent *a, guint32 req, JsonObject *d)
{
    const char *how = get_str(d, "how");
    guint64 st = 0;
    int h;

    if (!vm->clone_id) {
        answer(vm, req, "exit", ENOTSUP, 0, 0);
        return;
    }
    if (!how) {
        h = HOW_EXITED;
    } else if (!strcmp(how, "exited")) {
        h = HOW_EXITED;
    } else if (!strcmp(how, "signaled")) {
        h = HOW_SIGNALED;
    } else if (!strcmp(how, "lost")) {
        h = HOW_LOST;
    } else {
        answer(vm, req, "exit", EINVAL, 0, 0);
        return;
    }
    JsonNode *sn = json_object_get_member(d, "status");
    if (sn && (!JSON_NODE_HOLDS_VALUE(sn) ||
               json_node_get_value_type(sn) != G_TYPE_INT64 ||
               json_node_get_int(sn) < G_MININT32 ||
               json_node_get_int(sn) > G_MAXINT32)) {
        answer(vm, req, "exit", EINVAL, 0, 0);
        return;
    }
    st = sn ? json_node_get_int(sn) : 0;
    if (vm->state != SFD_VM_RUNNING || a->exit_set) {
        answer(vm, req, "exit", vm->state == SFD_VM_STARTING ? EBUSY : EALREADY,
               0, 0);
        return;
    }
    a->exit_set = TRUE;
    a->exit_status = (int)(gint64)st;
    a->exit_how = h;
    agent_save(vm); /* told as asked even if sfd restarts meanwhile */
    g_message("%s: the guest exits (%s %d)", vm->name, how_names[h],
              a->exit_status);
    guest_event(vm, req, "exit", 0, 0, 0);
    sfd_vm_stop(vm); /* on success the clone just ends */
}

/* ---- checkpoint ---- */

typedef struct CpOp {
    SfdVm *vm;
    guint32 request;
    char *dir;
    guint32 generation;
} CpOp;

/* The checkpoint's fork exists: keep it (NULL when the VM ended). */
static SfdCheckpoint *cp_keep(CpOp *op, JsonObject *o)
{
    SfdCheckpoint *cp = g_new0(SfdCheckpoint, 1);
    g_autofree char *rec = NULL, *recp = NULL;

    cp->request = op->request;
    sfd_fork_answer_parse(o, &cp->fork_id, &cp->server_pid, &cp->clone_args);
    cp->dir = g_strdup(op->dir);
    cp->server_starttime = sfd_proc_starttime(cp->server_pid);
    cp->next_qemu_id = 1;
    cp->generation = op->generation;
    /* Beside the fork: whoever removes the directory stops the server. */
    rec = g_strdup_printf("%d %" G_GUINT64_FORMAT "\n", cp->server_pid,
                          cp->server_starttime);
    recp = g_build_filename(cp->dir, "sfd-checkpoint", NULL);
    if (!g_file_set_contents(recp, rec, -1, NULL)) {
        g_warning("%s: cannot write %s", op->vm->name, recp);
    }
    if (op->vm->state == SFD_VM_EXITED) {
        sfd_fork_dir_remove(cp->dir);
        checkpoint_free(cp);
        return NULL;
    }
    cp->id = handle_take();
    return cp;
}

static void cp_forked(SfdQmp *q, JsonNode *ret, const char *err,
                      gpointer opaque)
{
    CpOp *op = opaque;
    SfdVm *vm = op->vm;
    SfdAgent *a = agent_get(vm);
    JsonObject *o = !err && ret && JSON_NODE_HOLDS_OBJECT(ret)
                        ? json_node_get_object(ret)
                        : NULL;
    SfdCheckpoint *cp;

    a->busy = FALSE;
    if (!o) {
        g_warning("%s: checkpoint: vm-fork: %s", vm->name,
                  err ? err : "bad answer");
        sfd_fork_dir_remove(op->dir);
        if (vm->state != SFD_VM_EXITED) {
            answer(vm, op->request, "checkpoint", EIO, 0, 0);
        }
    } else if ((cp = cp_keep(op, o))) {
        g_ptr_array_add(a->checkpoints, cp);
        agent_save(vm);
        g_message("%s: checkpoint %" G_GUINT64_FORMAT
                  " (fork %" G_GUINT64_FORMAT ", page server %d)",
                  vm->name, cp->id, cp->fork_id, cp->server_pid);
        answer(vm, op->request, "checkpoint", 0, 0, cp->id);
    }
    sfd_vm_unref(op->vm);
    g_free(op->dir);
    g_free(op);
}

static void op_checkpoint(SfdVm *vm, SfdAgent *a, guint32 req)
{
    SfdDomain *dom = g_hash_table_lookup(sfd->domains, vm->domain);

    if (vm->clone_id) {
        answer(vm, req, "checkpoint", ENOTSUP, 0, 0);
        return;
    }
    if (a->busy) {
        answer(vm, req, "checkpoint", EBUSY, 0, 0);
        return;
    }
    if (a->checkpoints->len >= (guint)a->limits.max_checkpoints) {
        answer(vm, req, "checkpoint", EDQUOT, 0, 0);
        return;
    }
    if (!dom || sfd_domain_has_writable_disk(dom)) {
        answer(vm, req, "checkpoint", ENOTSUP, 0, 0);
        return;
    }
    if (vm->state != SFD_VM_RUNNING || !vm->qmp) {
        answer(vm, req, "checkpoint", EIO, 0, 0);
        return;
    }
    g_autofree char *tmpl =
        g_strdup_printf("%s/%s.cXXXXXX", sfd->run_dir, vm->name);
    if (!g_mkdtemp(tmpl)) {
        g_warning("%s: %s", tmpl, g_strerror(errno));
        answer(vm, req, "checkpoint", EIO, 0, 0);
        return;
    }
    CpOp *op = g_new0(CpOp, 1);
    op->vm = sfd_vm_ref(vm);
    op->request = req;
    op->dir = g_steal_pointer(&tmpl);
    op->generation = ++vm->forks;
    sfd_state_save_vm(vm);
    a->busy = TRUE;
    JsonObject *args = json_object_new();
    json_object_set_int_member(args, "clones", SFD_AGENT_CHECKPOINT_CLONES);
    json_object_set_boolean_member(args, "launch", FALSE);
    /* No idle timeout: clones may be made from it much later. */
    json_object_set_int_member(args, "idle-timeout", -1);
    json_object_set_string_member(args, "dir", op->dir);
    sfd_qmp_cmd(vm->qmp, "vm-fork", args, cp_forked, op);
}

/* ---- the event ---- */

static void note_rate_limited(SfdVm *vm, SfdAgent *a)
{
    guint64 n;

    a->rate_limited++;
    if (!limited(&a->rl_logged_us, &a->rl_logged, &a->rl_unreported, &n)) {
        return;
    }
    g_warning("%s: guest requests come too fast: %" G_GUINT64_FORMAT
              " refused (EAGAIN) since the last report, %" G_GUINT64_FORMAT
              " in all",
              vm->name, n, a->rate_limited);
    JsonObject *o = json_object_new();
    JsonNode *node = json_node_alloc();
    json_object_set_string_member(o, "vm", vm->name);
    json_object_set_int_member(o, "refused", n);
    json_object_set_int_member(o, "total", a->rate_limited);
    json_node_init_object(node, o);
    json_object_unref(o);
    sfd_event("GUEST_RATE_LIMITED", node);
}

void sfd_agent_request(SfdVm *vm, JsonObject *data)
{
    SfdAgent *a = agent_get(vm);
    gint64 now = g_get_monotonic_time();
    guint64 req = 0;
    const char *op;

    a->requests++;
    if (get_uint(data, "request", G_MAXUINT32, &req) != 1 || req == 0) {
        a->refused++;
        g_debug("%s: SF_AGENT_REQUEST without a request id", vm->name);
        return;
    }
    op = get_str(data, "op");
    if (!sfd_bucket_take(&a->bucket, now)) {
        note_rate_limited(vm, a);
        answer(vm, req, op, EAGAIN, 0, 0);
        return;
    }
    if (vm->state == SFD_VM_EXITED || vm->state == SFD_VM_STOPPING) {
        return; /* ending: nobody to answer */
    }
    if (!a->limits.enabled && !(op && vm->clone_id && !strcmp(op, "exit"))) {
        answer(vm, req, op, EPERM, 0, 0); /* <sf:guest enabled='no'> */
    } else if (!op) {
        answer(vm, req, op, EPROTO, 0, 0);
    } else if (!strcmp(op, "ticket")) {
        op_ticket(vm, a, req, data, now);
    } else if (!strcmp(op, "clone")) {
        op_clone(vm, a, req, data, now);
    } else if (!strcmp(op, "kill")) {
        op_kill(vm, a, req, data, now);
    } else if (!strcmp(op, "exit")) {
        op_exit(vm, a, req, data);
    } else if (!strcmp(op, "checkpoint")) {
        op_checkpoint(vm, a, req);
    } else if (!strcmp(op, "create-clones")) {
        op_create(vm, a, req, data, now);
    } else {
        answer(vm, req, op, ENOTSUP, 0, 0);
    }
}

/* ---- a VM ends ---- */

static gboolean fork_dir_in_use(const char *dir)
{
    GHashTableIter it;
    gpointer v;

    g_hash_table_iter_init(&it, sfd->vms);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        SfdVm *o = v;
        if (o->fork_dir && o->state != SFD_VM_EXITED &&
            !strcmp(o->fork_dir, dir)) {
            return TRUE;
        }
    }
    return FALSE;
}

typedef struct ExitReport {
    char *parent;
    pid_t parent_pid;
    guint64 ticket;
    int member;
} ExitReport;

static void exit_report_done(SfdQmp *q, JsonNode *ret, const char *err,
                             gpointer opaque)
{
    ExitReport *r = opaque;
    SfdVm *p = sfd_vm_lookup(r->parent);

    if (err) {
        reply_failed(r->parent, "clone-exited", err);
    } else if (p && p->pid == r->parent_pid && p->agent) {
        SfdTicket *tk = sfd_tickets_find(&p->agent->tickets, r->ticket);
        if (tk && r->member >= 1 && r->member <= (int)tk->members->len) {
            SfdTicketMember *m = tk->members->pdata[r->member - 1];
            if (!m->reported) {
                m->reported = TRUE;
                agent_save(p); /* not owed again after a restart */
            }
        }
    }
    g_free(r->parent);
    g_free(r);
}

/* sf-agent-reply kind=clone-exited to parent p; the member is marked
 * reported once QEMU took it. */
static void report_exit(SfdVm *p, guint64 ticket, int member, int status,
                        int how)
{
    JsonObject *o = json_object_new();
    ExitReport *r;

    json_object_set_string_member(o, "kind", "clone-exited");
    json_object_set_int_member(o, "ticket", ticket);
    json_object_set_int_member(o, "clone-id", member);
    json_object_set_int_member(o, "status", status);
    json_object_set_string_member(o, "how", how_names[how]);
    if (!p->qmp || p->state == SFD_VM_EXITED) {
        json_object_unref(o);
        reply_failed(p->name, "clone-exited", "QMP is not connected");
        return;
    }
    r = g_new0(ExitReport, 1);
    r->parent = g_strdup(p->name);
    r->parent_pid = p->pid;
    r->ticket = ticket;
    r->member = member;
    sfd_qmp_cmd(p->qmp, "sf-agent-reply", o, exit_report_done, r);
}

static void clone_ending(SfdVm *vm, SfdAgent *a)
{
    SfdVm *p = a->parent ? sfd_vm_lookup(a->parent) : NULL;
    int how, status = -1;

    if (a->exit_set) {
        how = a->exit_how;
        status = a->exit_status;
    } else if (a->killed || vm->state == SFD_VM_STOPPING) {
        how = HOW_KILLED;
    } else {
        how = HOW_CRASHED;
    }
    if (p && p->pid == a->parent_pid && p->agent) {
        SfdTicket *tk = sfd_tickets_find(&p->agent->tickets, a->ticket);
        if (tk && !sfd_ticket_member_ended(tk, a->member, status, how)) {
            return; /* already reported */
        }
        if (tk) {
            agent_save(p);
        }
        if (p->state == SFD_VM_RUNNING && !p->agent->hold_reports) {
            report_exit(p, a->ticket, a->member, status, how);
        }
    }
    g_message("%s: clone %d of ticket %" G_GUINT64_FORMAT " of %s ended: "
              "%s %d",
              vm->name, a->member, a->ticket, a->parent ? a->parent : "?",
              how_names[how], status);
    JsonObject *o = json_object_new();
    JsonNode *n = json_node_alloc();
    json_object_set_string_member(o, "vm", a->parent ? a->parent : "");
    json_object_set_string_member(o, "clone", vm->name);
    json_object_set_int_member(o, "ticket", a->ticket);
    json_object_set_int_member(o, "clone-id", a->member);
    json_object_set_int_member(o, "status", status);
    json_object_set_string_member(o, "how", how_names[how]);
    json_node_init_object(n, o);
    json_object_unref(o);
    sfd_event("GUEST_CLONE_EXITED", n);
}

void sfd_agent_vm_exiting(SfdVm *vm)
{
    SfdAgent *a = vm->agent;

    if (!a) {
        return;
    }
    if (vm->clone_id && a->ticket) {
        clone_ending(vm, a);
    }
    /* A parent's checkpoints go with it; a page server still serving a
     * live clone is stopped with that clone's fork (fork_release). */
    while (a->checkpoints->len) {
        SfdCheckpoint *cp = g_ptr_array_steal_index(a->checkpoints, 0);
        if (!fork_dir_in_use(cp->dir)) {
            g_info("%s: dropping checkpoint %" G_GUINT64_FORMAT, vm->name,
                   cp->id);
            sfd_fork_dir_remove(cp->dir);
        }
        checkpoint_free(cp);
    }
    g_ptr_array_set_size(a->tickets.tickets, 0);
}

/* ---- reporting ---- */

JsonNode *sfd_agent_to_json(SfdVm *vm, gboolean detail)
{
    SfdAgent *a = vm->agent;
    JsonObject *o = json_object_new();
    JsonNode *n = json_node_alloc();

    json_object_set_int_member(o, "requests", a ? a->requests : 0);
    json_object_set_int_member(o, "refused", a ? a->refused : 0);
    json_object_set_int_member(o, "rate-limited", a ? a->rate_limited : 0);
    if (a && !vm->clone_id) {
        gint64 now = g_get_monotonic_time();
        sfd_tickets_expire(&a->tickets, now);
        json_object_set_int_member(o, "tickets-unused",
                                   sfd_tickets_count_unused(&a->tickets));
        json_object_set_int_member(o, "checkpoints", a->checkpoints->len);
        if (detail) {
            static const char *const states[] = { "unused", "forking", "used" };
            JsonArray *ta = json_array_new();
            for (guint i = 0; i < a->tickets.tickets->len; i++) {
                SfdTicket *tk = a->tickets.tickets->pdata[i];
                JsonObject *to = json_object_new();
                JsonArray *ma = json_array_new();
                json_object_set_int_member(to, "ticket", tk->id);
                json_object_set_int_member(to, "granted", tk->granted);
                json_object_set_string_member(to, "state", states[tk->state]);
                json_object_set_int_member(
                    to, "age-s", (now - tk->created_us) / G_USEC_PER_SEC);
                if (tk->checkpoint) {
                    json_object_set_int_member(to, "checkpoint",
                                               tk->checkpoint);
                }
                for (guint k = 0; k < tk->members->len; k++) {
                    SfdTicketMember *m = tk->members->pdata[k];
                    JsonObject *mo = json_object_new();
                    json_object_set_int_member(mo, "clone-id", k + 1);
                    json_object_set_string_member(mo, "name", m->vm);
                    json_object_set_boolean_member(mo, "ended", m->ended);
                    if (m->ended) {
                        json_object_set_int_member(mo, "status", m->status);
                        json_object_set_string_member(mo, "how",
                                                      how_names[m->how]);
                    }
                    json_array_add_object_element(ma, mo);
                }
                json_object_set_array_member(to, "clones", ma);
                json_array_add_object_element(ta, to);
            }
            json_object_set_array_member(o, "tickets", ta);
            JsonArray *ca = json_array_new();
            for (guint i = 0; i < a->checkpoints->len; i++) {
                SfdCheckpoint *cp = a->checkpoints->pdata[i];
                JsonObject *co = json_object_new();
                g_autofree char *fid =
                    g_strdup_printf("%" G_GUINT64_FORMAT, cp->fork_id);
                json_object_set_int_member(co, "checkpoint", cp->id);
                json_object_set_string_member(co, "fork-id", fid);
                json_object_set_int_member(co, "server-pid", cp->server_pid);
                json_object_set_int_member(co, "clones-left",
                                           SFD_AGENT_CHECKPOINT_CLONES -
                                               cp->next_qemu_id + 1);
                json_array_add_object_element(ca, co);
            }
            json_object_set_array_member(o, "checkpoint-list", ca);
            json_object_set_boolean_member(o, "busy", a->busy);
        }
    }
    if (a && vm->clone_id && a->ticket) {
        json_object_set_string_member(o, "parent", a->parent);
        json_object_set_int_member(o, "ticket", a->ticket);
        json_object_set_int_member(o, "ticket-clone-id", a->member);
    }
    if (a && detail) {
        json_object_set_int_member(o, "reply-failures", a->reply_failures);
    }
    if (detail) {
        SfdGuestLimits l;
        JsonObject *lo = json_object_new();
        if (a) {
            l = a->limits;
        } else {
            agent_limits(vm, &l);
        }
        json_object_set_boolean_member(lo, "enabled", l.enabled);
        json_object_set_int_member(lo, "requests-per-second", l.rate);
        json_object_set_int_member(lo, "burst", l.burst);
        json_object_set_int_member(lo, "max-unused-tickets",
                                   l.max_unused_tickets);
        json_object_set_int_member(lo, "ticket-timeout", l.ticket_timeout_s);
        json_object_set_int_member(lo, "max-checkpoints", l.max_checkpoints);
        json_object_set_object_member(o, "limits", lo);
    }
    json_node_init_object(n, o);
    json_object_unref(o);
    return n;
}

/* ---- surviving an sfd restart ----
 *
 * A VM's agent state is the "agent" member of its record (state.c),
 * rewritten whenever it changes: a parent's tickets (which clone is
 * member k, how each ended and whether the parent was told) and
 * checkpoints; a clone's ticket, parent and how it asked to end.  What
 * is not kept: counters, the token bucket (full again), a fork in flight
 * (busy; its ticket is unused again, its request unanswered: the guest
 * agent times it out) and a checkpoint in flight (its directory is
 * swept). */

void sfd_agent_save(SfdVm *vm, JsonBuilder *b)
{
    SfdAgent *a = vm->agent;

    if (!a) {
        return;
    }
#define INT(k, v)                                                              \
    json_builder_set_member_name(b, k);                                        \
    json_builder_add_int_value(b, v);
    json_builder_set_member_name(b, "agent");
    json_builder_begin_object(b);
    if (!vm->clone_id) {
        json_builder_set_member_name(b, "tickets");
        json_builder_add_value(b, sfd_tickets_to_json(&a->tickets,
                                                      g_get_monotonic_time(),
                                                      g_get_real_time()));
        json_builder_set_member_name(b, "checkpoints");
        json_builder_begin_array(b);
        for (guint i = 0; i < a->checkpoints->len; i++) {
            SfdCheckpoint *cp = a->checkpoints->pdata[i];
            json_builder_begin_object(b);
            INT("id", cp->id);
            INT("request", cp->request);
            INT("fork-id", (gint64)cp->fork_id);
            INT("server-pid", cp->server_pid);
            INT("server-starttime", cp->server_starttime);
            INT("next-qemu-id", cp->next_qemu_id);
            INT("generation", cp->generation);
            json_builder_set_member_name(b, "dir");
            json_builder_add_string_value(b, cp->dir);
            json_builder_set_member_name(b, "clone-args");
            json_builder_begin_array(b);
            for (char **s = cp->clone_args; s && *s; s++) {
                json_builder_add_string_value(b, *s);
            }
            json_builder_end_array(b);
            json_builder_end_object(b);
        }
        json_builder_end_array(b);
    } else if (a->ticket && a->parent) {
        json_builder_set_member_name(b, "parent");
        json_builder_add_string_value(b, a->parent);
        INT("parent-pid", a->parent_pid);
        INT("ticket", a->ticket);
        INT("member", a->member);
        if (a->exit_set) {
            INT("exit-status", a->exit_status);
            INT("exit-how", a->exit_how);
        }
        json_builder_set_member_name(b, "killed");
        json_builder_add_boolean_value(b, a->killed);
    }
#undef INT
    json_builder_end_object(b);
}

static SfdCheckpoint *checkpoint_restore(SfdVm *vm, JsonObject *o)
{
    SfdCheckpoint *cp = g_new0(SfdCheckpoint, 1);
    g_autofree char *parent_dir = NULL;
    JsonArray *ca;
    gint64 id = 0, req = 0, fid = 0, spid = 0, sst = 0, next = 0, gen = 0;

    if (!json_int(json_object_get_member(o, "id"), &id) ||
        !json_int(json_object_get_member(o, "request"), &req) ||
        !json_int(json_object_get_member(o, "fork-id"), &fid) ||
        !json_int(json_object_get_member(o, "server-pid"), &spid) ||
        !json_int(json_object_get_member(o, "server-starttime"), &sst) ||
        !json_int(json_object_get_member(o, "next-qemu-id"), &next) ||
        !json_int(json_object_get_member(o, "generation"), &gen) ||
        !json_object_get_string_member_with_default(o, "dir", NULL) ||
        !json_object_has_member(o, "clone-args") ||
        !JSON_NODE_HOLDS_ARRAY(json_object_get_member(o, "clone-args")) ||
        id <= 0 || req <= 0 || req > G_MAXUINT32 || spid <= 0 ||
        spid > G_MAXINT32 || next < 1 ||
        next > SFD_AGENT_CHECKPOINT_CLONES + 1 || gen < 0 ||
        gen > G_MAXUINT32) {
        g_free(cp);
        g_warning("%s: a checkpoint record is malformed (dropped)", vm->name);
        return NULL;
    }
    cp->id = id;
    cp->request = req;
    cp->fork_id = (guint64)fid;
    cp->server_pid = spid;
    cp->server_starttime = sst;
    cp->next_qemu_id = next;
    cp->generation = gen;
    cp->dir = g_strdup(json_object_get_string_member(o, "dir"));
    ca = json_object_get_array_member(o, "clone-args");
    cp->clone_args = g_new0(char *, json_array_get_length(ca) + 1);
    for (guint i = 0; i < json_array_get_length(ca); i++) {
        const char *v = json_node_get_string(json_array_get_element(ca, i));
        cp->clone_args[i] = g_strdup(v ? v : "");
    }
    handle_seen(cp->id);
    parent_dir = g_path_get_dirname(cp->dir);
    /* Only a fork directory of ours, with its page server alive: a
     * checkpoint without one cannot make clones, and holds a slot. */
    if (strcmp(parent_dir, sfd->run_dir) ||
        !g_file_test(cp->dir, G_FILE_TEST_IS_DIR) ||
        !sfd_proc_alive(cp->server_pid, cp->server_starttime)) {
        g_warning("%s: checkpoint %" G_GUINT64_FORMAT " lost its fork "
                  "directory or page server while sfd was away (dropped)",
                  vm->name, cp->id);
        if (!strcmp(parent_dir, sfd->run_dir)) {
            sfd_fork_dir_remove(cp->dir);
        }
        checkpoint_free(cp);
        return NULL;
    }
    return cp;
}

void sfd_agent_restore(SfdVm *vm, JsonObject *rec)
{
    JsonNode *an = json_object_get_member(rec, "agent");
    JsonObject *o;
    SfdAgent *a;

    if (!an || !JSON_NODE_HOLDS_OBJECT(an)) {
        return;
    }
    o = json_node_get_object(an);
    a = agent_get(vm);
    if (!vm->clone_id) {
        JsonNode *tn = json_object_get_member(o, "tickets");
        JsonNode *cn = json_object_get_member(o, "checkpoints");
        if (tn && JSON_NODE_HOLDS_ARRAY(tn)) {
            sfd_tickets_from_json(&a->tickets, json_node_get_array(tn),
                                  g_get_monotonic_time(), g_get_real_time());
        }
        for (guint i = 0; i < a->tickets.tickets->len; i++) {
            handle_seen(((SfdTicket *)a->tickets.tickets->pdata[i])->id);
        }
        for (guint i = 0; cn && JSON_NODE_HOLDS_ARRAY(cn) &&
                          i < json_array_get_length(json_node_get_array(cn));
             i++) {
            JsonNode *e = json_array_get_element(json_node_get_array(cn), i);
            SfdCheckpoint *cp;
            if (a->checkpoints->len >= (guint)a->limits.max_checkpoints ||
                !JSON_NODE_HOLDS_OBJECT(e)) {
                continue;
            }
            cp = checkpoint_restore(vm, json_node_get_object(e));
            if (cp && checkpoint_find(a, cp->id)) {
                checkpoint_free(cp);
            } else if (cp) {
                g_ptr_array_add(a->checkpoints, cp);
            }
        }
        a->hold_reports = TRUE;
        return;
    }
    gint64 t = 0, member = 0, ppid = 0, st = 0, how = -1;
    const char *parent =
        json_object_get_string_member_with_default(o, "parent", NULL);
    if (!parent || !json_int(json_object_get_member(o, "ticket"), &t) ||
        t <= 0 || !json_int(json_object_get_member(o, "member"), &member) ||
        member < 1 || member > SFD_AGENT_CHECKPOINT_CLONES ||
        !json_int(json_object_get_member(o, "parent-pid"), &ppid)) {
        return; /* not a ticket's clone (or unreadable): nobody to tell */
    }
    g_free(a->parent);
    a->parent = g_strdup(parent);
    a->parent_pid = ppid;
    a->ticket = t;
    a->member = member;
    if (json_int(json_object_get_member(o, "exit-how"), &how) &&
        how >= HOW_EXITED && how <= HOW_CRASHED &&
        json_int(json_object_get_member(o, "exit-status"), &st)) {
        a->exit_set = TRUE;
        a->exit_how = how;
        a->exit_status = (int)st;
    }
    a->killed = json_object_get_boolean_member_with_default(o, "killed", FALSE);
}

/* Every record is loaded: a ticket member whose clone has no record
 * (or another ticket's) ended while sfd was away without a trace. */
void sfd_agent_adopt_check(void)
{
    GHashTableIter it;
    gpointer v;

    g_hash_table_iter_init(&it, sfd->vms);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        SfdVm *p = v;
        SfdAgent *a = p->agent;
        gboolean changed = FALSE;

        for (guint i = 0; a && !p->clone_id && i < a->tickets.tickets->len;
             i++) {
            SfdTicket *tk = a->tickets.tickets->pdata[i];
            for (guint k = 0; k < tk->members->len; k++) {
                SfdTicketMember *m = tk->members->pdata[k];
                SfdVm *c = m->ended ? NULL : sfd_vm_lookup(m->vm);
                if (m->ended ||
                    (c && c->clone_id && c->agent && c->agent->parent &&
                     c->agent->ticket == tk->id &&
                     c->agent->member == (int)k + 1 &&
                     c->agent->parent_pid == p->pid &&
                     !strcmp(c->agent->parent, p->name))) {
                    continue;
                }
                g_message("%s: clone %u of ticket %" G_GUINT64_FORMAT
                          " (%s) is gone without a record: crashed",
                          p->name, k + 1, tk->id, m->vm);
                m->ended = TRUE;
                m->status = -1;
                m->how = HOW_CRASHED;
                changed = TRUE;
            }
        }
        if (changed) {
            sfd_state_save_vm(p);
        }
    }
}

/* An adopted parent's QMP is back (err NULL) or not: send the
 * clone-exited replies it is owed (a repeat is harmless: the guest agent
 * records a clone's end, it does not count them). */
void sfd_agent_adopted(SfdVm *vm, const char *err)
{
    SfdAgent *a = vm->agent;
    guint n = 0;

    if (!a || vm->clone_id) {
        return;
    }
    a->hold_reports = FALSE;
    if (err || vm->state != SFD_VM_RUNNING) {
        return;
    }
    for (guint i = 0; i < a->tickets.tickets->len; i++) {
        SfdTicket *tk = a->tickets.tickets->pdata[i];
        for (guint k = 0; k < tk->members->len; k++) {
            SfdTicketMember *m = tk->members->pdata[k];
            if (m->ended && !m->reported) {
                report_exit(vm, tk->id, k + 1, m->status, m->how);
                n++;
            }
        }
    }
    if (n) {
        g_message("%s: %u clone end%s reported after the restart", vm->name, n,
                  n == 1 ? "" : "s");
    }
}
