/*
 * sfd: the guest operations (see agent.h).
 *
 * The guest is untrusted: every field is checked, each VM's requests
 * pass a token bucket (EAGAIN beyond it), a VM holds a bounded number
 * of unused tickets (which expire) and of checkpoints, and has at most
 * one fork (vm-fork) in flight.  The limits are the domain's
 * <sf:guest> (domain.h); enabled="no" answers EPERM to all but a
 * clone's exit.  A failed reply is logged (at most once per interval
 * per VM, with a count) and never fatal.
 *
 *   ticket n        m = sfd_fork_grant(n); EDQUOT if 0
 *   clone t         sfd_fork(); the parent's result once vm-fork has
 *                   returned, each clone's identity (answering the same
 *                   request) once its QMP is up
 *   kill t          stops the ticket's live clones
 *   exit s how      (a clone) stops it; its parent gets clone-exited
 *   checkpoint      vm-fork {clones: 64, launch: false}, kept (page
 *                   server included) until the parent stops
 *   create cp t     launches t's clones from checkpoint cp; identities
 *                   answer the checkpoint request
 *
 * Ticket and checkpoint ids come from ids.c.  The state survives sfd
 * itself: it is in each VM's record (agent-state.c).
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
#include "agent-state.h"
#include "agent-reply.h"
#include "fork.h"
#include "forkdir.h"
#include "ids.h"
#include "proc.h"
#include "proto.h"
#include "qmp.h"
#include "vm.h"

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

/* ---- ticket ---- */

static void op_ticket(SfdVm *vm, SfdAgent *a, guint32 req, JsonObject *d,
                      gint64 now)
{
    SfdDomain *dom = g_hash_table_lookup(sfd->domains, vm->domain);
    guint64 n = 0, flags = 0;
    int m, err = 0;
    SfdTicket *tk;

    if (vm->clone_id) {
        sfd_agent_answer(vm, req, "ticket", ENOTSUP, 0,
                         0); /* no nested forks */
        return;
    }
    if (get_uint(d, "clones", G_MAXUINT32, &n) != 1 || n < 1 ||
        get_uint(d, "flags", G_MAXUINT32, &flags) < 0 || flags) {
        sfd_agent_answer(vm, req, "ticket", EINVAL, 0, 0);
        return;
    }
    if (!dom) {
        sfd_agent_answer(vm, req, "ticket", EIO, 0, 0);
        return;
    }
    m = sfd_fork_grant(dom, MIN(n, G_MAXINT), NULL);
    if (m <= 0) {
        sfd_agent_answer(vm, req, "ticket", EDQUOT, 0, 0);
        return;
    }
    tk = sfd_tickets_add(&a->tickets, sfd_ids_peek(), m, now, &err);
    if (!tk) {
        sfd_agent_answer(vm, req, "ticket", err, 0, 0);
        return;
    }
    sfd_ids_take();
    sfd_agent_save(vm);
    sfd_agent_answer(vm, req, "ticket", 0, m, tk->id);
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
                         gpointer opaque)
{
    GuestFork *gf = opaque;
    SfdAgent *a = sfd_agent_get(parent);
    SfdTicket *tk = sfd_tickets_find(&a->tickets, gf->ticket);

    gf->forked = TRUE;
    a->busy = FALSE; /* vm-fork is done; launching goes on */
    if (tk) {
        tk->state = SFD_TICKET_USED;
        tk->checkpoint = gf->checkpoint;
    }
    for (guint i = 0; i < clones->len; i++) {
        SfdVm *c = clones->pdata[i];
        SfdAgent *ca = sfd_agent_get(c);
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
        SfdCheckpoint *cp = sfd_agent_checkpoint_find(a, gf->checkpoint);
        if (cp) {
            cp->next_qemu_id += clones->len;
        }
    }
    /* Before any clone's record (clone_launch): a clone on record always
     * has its ticket on record. */
    sfd_agent_save(parent);
    sfd_agent_answer(parent, gf->request, gf->op, 0, clones->len, 0);
}

static void guest_fork_done(JsonNode *ret, const char *cls, const char *err,
                            gpointer opaque)
{
    GuestFork *gf = opaque;
    SfdVm *vm = gf->vm;

    if (!gf->forked && vm->state != SFD_VM_EXITED) {
        SfdAgent *a = sfd_agent_get(vm);
        SfdTicket *tk = sfd_tickets_find(&a->tickets, gf->ticket);
        a->busy = FALSE;
        if (tk && tk->state == SFD_TICKET_FORKING) {
            tk->state = SFD_TICKET_UNUSED; /* may be tried again */
        }
        g_warning("%s: guest %s of ticket %" G_GUINT64_FORMAT " failed: %s",
                  vm->name, gf->op, gf->ticket, err ? err : "?");
        sfd_agent_answer(vm, gf->request, gf->op, sfd_agent_errno_of_class(cls),
                         0, 0);
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
    SfdForkRequest r = { .origin = "guest" };
    SfdTicket *tk = NULL;
    guint64 t = 0;
    int e;

    if (vm->clone_id) {
        sfd_agent_answer(vm, req, "clone", ENOTSUP, 0, 0);
        return;
    }
    if (get_uint(d, "ticket", G_MAXUINT64, &t) != 1) {
        sfd_agent_answer(vm, req, "clone", ENOENT, 0, 0);
        return;
    }
    if ((e = sfd_tickets_claim(&a->tickets, t, now, &tk))) {
        sfd_agent_answer(vm, req, "clone", e, 0, 0);
        return;
    }
    if (a->busy) {
        sfd_agent_answer(vm, req, "clone", EBUSY, 0, 0);
        return;
    }
    tk->state = SFD_TICKET_FORKING;
    a->busy = TRUE;
    r.count = tk->granted;
    r.request = req;
    r.ticket = t;
    r.forked = guest_forked;
    sfd_fork(vm, &r, guest_fork_done, guest_fork_new(vm, req, "clone", t, 0));
}

static void op_create(SfdVm *vm, SfdAgent *a, guint32 req, JsonObject *d,
                      gint64 now)
{
    SfdForkRequest r = { .origin = "guest" };
    SfdCheckpoint *cp = NULL;
    SfdTicket *tk = NULL;
    guint64 t = 0, c = 0;
    int e;

    if (vm->clone_id) {
        sfd_agent_answer(vm, req, "create-clones", ENOTSUP, 0, 0);
        return;
    }
    if (get_uint(d, "checkpoint", G_MAXUINT64, &c) != 1 ||
        !(cp = sfd_agent_checkpoint_find(a, c)) ||
        get_uint(d, "ticket", G_MAXUINT64, &t) != 1) {
        sfd_agent_answer(vm, req, "create-clones", ENOENT, 0, 0);
        return;
    }
    if ((e = sfd_tickets_claim(&a->tickets, t, now, &tk))) {
        sfd_agent_answer(vm, req, "create-clones", e, 0, 0);
        return;
    }
    if (a->busy) {
        sfd_agent_answer(vm, req, "create-clones", EBUSY, 0, 0);
        return;
    }
    if (cp->next_qemu_id + tk->granted - 1 > SFD_MAX_FORK_CLONES) {
        sfd_agent_answer(vm, req, "create-clones", EDQUOT, 0, 0);
        return;
    }
    if (!sfd_forkdir_server_alive(cp->fd)) {
        g_warning("%s: checkpoint %" G_GUINT64_FORMAT ": its page server "
                  "%d is gone",
                  vm->name, cp->id, cp->fd->server_pid);
        sfd_agent_answer(vm, req, "create-clones", EIO, 0, 0);
        return;
    }
    tk->state = SFD_TICKET_FORKING;
    a->busy = TRUE;
    r.count = tk->granted;
    r.request = cp->request;
    r.ticket = t;
    r.from = cp->fd;
    r.first_qemu_id = cp->next_qemu_id;
    r.forked = guest_forked;
    sfd_fork(vm, &r, guest_fork_done,
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
        sfd_agent_answer(vm, req, "kill", ENOTSUP, 0, 0);
        return;
    }
    sfd_tickets_expire(&a->tickets, now);
    if (get_uint(d, "ticket", G_MAXUINT64, &t) != 1 ||
        !(tk = sfd_tickets_find(&a->tickets, t))) {
        sfd_agent_answer(vm, req, "kill", ENOENT, 0, 0);
        return;
    }
    if (tk->state == SFD_TICKET_FORKING) {
        sfd_agent_answer(vm, req, "kill", EBUSY, 0, 0);
        return;
    }
    for (guint i = 0; i < tk->members->len; i++) {
        SfdVm *c = member_vm(vm, tk, tk->members->pdata[i]);
        if (c && c->state == SFD_VM_STARTING) {
            /* Still being launched: not something to stop halfway. */
            sfd_agent_answer(vm, req, "kill", EBUSY, 0, 0);
            return;
        }
    }
    for (guint i = 0; i < tk->members->len; i++) {
        SfdVm *c = member_vm(vm, tk, tk->members->pdata[i]);
        if (c) {
            c->agent->killed = TRUE;
            sfd_agent_save(c);
            sfd_vm_stop(c);
            n++;
        }
    }
    sfd_agent_answer(vm, req, "kill", 0, n, 0);
}

static void op_exit(SfdVm *vm, SfdAgent *a, guint32 req, JsonObject *d)
{
    const char *how = get_str(d, "how");
    guint64 st = 0;
    int h;

    if (!vm->clone_id) {
        sfd_agent_answer(vm, req, "exit", ENOTSUP, 0, 0);
        return;
    }
    if (!how) {
        h = SFD_HOW_EXITED;
    } else if (!strcmp(how, "exited")) {
        h = SFD_HOW_EXITED;
    } else if (!strcmp(how, "signaled")) {
        h = SFD_HOW_SIGNALED;
    } else if (!strcmp(how, "lost")) {
        h = SFD_HOW_LOST;
    } else {
        sfd_agent_answer(vm, req, "exit", EINVAL, 0, 0);
        return;
    }
    JsonNode *sn = json_object_get_member(d, "status");
    if (sn && (!JSON_NODE_HOLDS_VALUE(sn) ||
               json_node_get_value_type(sn) != G_TYPE_INT64 ||
               json_node_get_int(sn) < G_MININT32 ||
               json_node_get_int(sn) > G_MAXINT32)) {
        sfd_agent_answer(vm, req, "exit", EINVAL, 0, 0);
        return;
    }
    st = sn ? json_node_get_int(sn) : 0;
    if (vm->state != SFD_VM_RUNNING || a->exit_set) {
        sfd_agent_answer(vm, req, "exit",
                         vm->state == SFD_VM_STARTING ? EBUSY : EALREADY, 0, 0);
        return;
    }
    a->exit_set = TRUE;
    a->exit_status = (int)(gint64)st;
    a->exit_how = h;
    sfd_agent_save(vm); /* told as asked even if sfd restarts meanwhile */
    g_message("%s: the guest exits (%s %d)", vm->name, sfd_how_name(h),
              a->exit_status);
    sfd_agent_guest_event(vm, req, "exit", 0, 0, 0);
    sfd_vm_stop(vm); /* on success the clone just ends */
}

/* ---- checkpoint ---- */

typedef struct CpOp {
    SfdVm *vm;
    guint32 request;
} CpOp;

static void cp_forked(SfdForkDir *fd, const char *err, gpointer opaque)
{
    CpOp *op = opaque;
    SfdVm *vm = op->vm;
    SfdAgent *a = sfd_agent_get(vm);
    SfdCheckpoint *cp;

    a->busy = FALSE;
    if (!fd) {
        g_warning("%s: checkpoint: %s", vm->name, err);
        if (vm->state != SFD_VM_EXITED) {
            sfd_agent_answer(vm, op->request, "checkpoint", EIO, 0, 0);
        }
    } else if (vm->state == SFD_VM_EXITED) {
        sfd_forkdir_release(fd); /* nobody left to make clones of it */
    } else {
        cp = g_new0(SfdCheckpoint, 1);
        cp->id = sfd_ids_take();
        cp->request = op->request;
        cp->fd = fd; /* the fork's hold is the checkpoint's */
        cp->next_qemu_id = 1;
        g_ptr_array_add(a->checkpoints, cp);
        sfd_agent_save(vm);
        g_message("%s: checkpoint %" G_GUINT64_FORMAT
                  " (fork %" G_GUINT64_FORMAT ", page server %d)",
                  vm->name, cp->id, fd->fork_id, fd->server_pid);
        sfd_agent_answer(vm, op->request, "checkpoint", 0, 0, cp->id);
    }
    sfd_vm_unref(op->vm);
    g_free(op);
}

static void op_checkpoint(SfdVm *vm, SfdAgent *a, guint32 req)
{
    SfdDomain *dom = g_hash_table_lookup(sfd->domains, vm->domain);
    CpOp *op;

    if (vm->clone_id) {
        sfd_agent_answer(vm, req, "checkpoint", ENOTSUP, 0, 0);
        return;
    }
    if (a->busy) {
        sfd_agent_answer(vm, req, "checkpoint", EBUSY, 0, 0);
        return;
    }
    if (a->checkpoints->len >= (guint)a->limits.max_checkpoints) {
        sfd_agent_answer(vm, req, "checkpoint", EDQUOT, 0, 0);
        return;
    }
    if (!dom || sfd_domain_has_writable_disk(dom)) {
        sfd_agent_answer(vm, req, "checkpoint", ENOTSUP, 0, 0);
        return;
    }
    if (vm->state != SFD_VM_RUNNING || !vm->qmp) {
        sfd_agent_answer(vm, req, "checkpoint", EIO, 0, 0);
        return;
    }
    op = g_new0(CpOp, 1);
    op->vm = sfd_vm_ref(vm);
    op->request = req;
    a->busy = TRUE;
    /* No idle timeout: clones may be made from it much later. */
    sfd_forkdir_fork(vm, 'c', SFD_MAX_FORK_CLONES, -1, cp_forked, op);
}

/* ---- the event ---- */

static void note_rate_limited(SfdVm *vm, SfdAgent *a)
{
    guint64 n;

    a->rate_limited++;
    if (!sfd_log_limit(&a->rl_log, &n)) {
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
    SfdAgent *a = sfd_agent_get(vm);
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
        sfd_agent_answer(vm, req, op, EAGAIN, 0, 0);
        return;
    }
    if (vm->state == SFD_VM_EXITED || vm->state == SFD_VM_STOPPING) {
        return; /* ending: nobody to answer */
    }
    if (!a->limits.enabled && !(op && vm->clone_id && !strcmp(op, "exit"))) {
        sfd_agent_answer(vm, req, op, EPERM, 0,
                         0); /* <sf:guest enabled='no'> */
    } else if (!op) {
        sfd_agent_answer(vm, req, op, EPROTO, 0, 0);
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
        sfd_agent_answer(vm, req, op, ENOTSUP, 0, 0);
    }
}

/* ---- a VM ends ---- */

static void clone_ending(SfdVm *vm, SfdAgent *a)
{
    SfdVm *p = a->parent ? sfd_vm_lookup(a->parent) : NULL;
    int how, status = -1;

    if (a->exit_set) {
        how = a->exit_how;
        status = a->exit_status;
    } else if (a->killed || vm->state == SFD_VM_STOPPING) {
        how = SFD_HOW_KILLED;
    } else {
        how = SFD_HOW_CRASHED;
    }
    if (p && p->pid == a->parent_pid && p->agent) {
        SfdTicket *tk = sfd_tickets_find(&p->agent->tickets, a->ticket);
        if (tk && !sfd_ticket_member_ended(tk, a->member, status, how)) {
            return; /* already reported */
        }
        if (tk) {
            sfd_agent_save(p);
        }
        if (p->state == SFD_VM_RUNNING && !p->agent->hold_reports) {
            sfd_agent_report_exit(p, a->ticket, a->member, status, how);
        }
    }
    g_message("%s: clone %d of ticket %" G_GUINT64_FORMAT " of %s ended: "
              "%s %d",
              vm->name, a->member, a->ticket, a->parent ? a->parent : "?",
              sfd_how_name(how), status);
    JsonObject *o = json_object_new();
    JsonNode *n = json_node_alloc();
    json_object_set_string_member(o, "vm", a->parent ? a->parent : "");
    json_object_set_string_member(o, "clone", vm->name);
    json_object_set_int_member(o, "ticket", a->ticket);
    json_object_set_int_member(o, "clone-id", a->member);
    json_object_set_int_member(o, "status", status);
    json_object_set_string_member(o, "how", sfd_how_name(how));
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
    /* A parent's checkpoints go with it; a fork a live clone of it still
     * holds goes with that clone (forkdir.c). */
    if (a->checkpoints->len) {
        g_info("%s: dropping %u checkpoint%s", vm->name, a->checkpoints->len,
               a->checkpoints->len == 1 ? "" : "s");
    }
    g_ptr_array_set_size(a->checkpoints, 0);
    g_ptr_array_set_size(a->tickets.tickets, 0);
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
                sfd_agent_report_exit(vm, tk->id, k + 1, m->status, m->how);
                n++;
            }
        }
    }
    if (n) {
        g_message("%s: %u clone end%s reported after the restart", vm->name, n,
                  n == 1 ? "" : "s");
    }
}
