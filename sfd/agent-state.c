/*
 * sfd: a VM's guest-request state (see agent-state.h).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <string.h>

#include "sfd.h"
#include "agent-state.h"
#include "ids.h"
#include "vm.h"

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

static void agent_free(SfdAgent *a)
{
    sfd_tickets_clear(&a->tickets);
    g_ptr_array_free(a->checkpoints, TRUE);
    g_free(a->parent);
    g_free(a);
}

SfdAgent *sfd_agent_get(SfdVm *vm)
{
    if (!vm->agent) {
        SfdAgent *a = g_new0(SfdAgent, 1);
        agent_limits(vm, &a->limits);
        sfd_bucket_init(&a->bucket, a->limits.rate, a->limits.burst,
                        g_get_monotonic_time());
        sfd_tickets_init(&a->tickets, a->limits.max_unused_tickets,
                         SFD_AGENT_MAX_TICKETS,
                         (gint64)a->limits.ticket_timeout_s * G_USEC_PER_SEC);
        a->checkpoints =
            g_ptr_array_new_with_free_func(sfd_agent_checkpoint_free);
        vm->agent = a;
        vm->agent_free = agent_free;
    }
    return vm->agent;
}

void sfd_agent_save(SfdVm *vm)
{
    if (vm->state != SFD_VM_EXITED && sfd_vm_lookup(vm->name) == vm) {
        sfd_record_save(vm);
    }
}

SfdCheckpoint *sfd_agent_checkpoint_find(SfdAgent *a, guint64 id)
{
    for (guint i = 0; i < a->checkpoints->len; i++) {
        SfdCheckpoint *cp = a->checkpoints->pdata[i];
        if (cp->id == id) {
            return cp;
        }
    }
    return NULL;
}

void sfd_agent_checkpoint_free(gpointer p)
{
    SfdCheckpoint *cp = p;

    if (cp->fd) {
        sfd_forkdir_release(cp->fd);
    }
    g_free(cp);
}

gboolean sfd_log_limit(SfdLogLimit *l, guint64 *n)
{
    gint64 now = g_get_monotonic_time();

    l->unsaid++;
    if (l->logged && now - l->last_us < SFD_AGENT_LOG_INTERVAL_US) {
        return FALSE;
    }
    *n = l->unsaid;
    l->unsaid = 0;
    l->last_us = now;
    l->logged = TRUE;
    return TRUE;
}

/* ---- reporting ---- */

void sfd_agent_describe(SfdVm *vm, JsonObject *parent, gboolean detail)
{
    SfdAgent *a = vm->agent;
    JsonObject *o;

    if (vm->state == SFD_VM_EXITED) {
        return;
    }
    o = json_object_new();

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
                                                      sfd_how_name(m->how));
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
                    g_strdup_printf("%" G_GUINT64_FORMAT, cp->fd->fork_id);
                json_object_set_int_member(co, "checkpoint", cp->id);
                json_object_set_string_member(co, "fork-id", fid);
                json_object_set_int_member(co, "server-pid",
                                           cp->fd->server_pid);
                json_object_set_int_member(co, "clones-left",
                                           SFD_MAX_FORK_CLONES -
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
    json_object_set_object_member(parent, "agent", o);
}

/* ---- surviving an sfd restart ----
 *
 * A VM's agent state is the "agent" member of its record (store.h),
 * rewritten whenever it changes: a parent's tickets (which clone is
 * member k, how each ended and whether the parent was told) and
 * checkpoints; a clone's ticket, parent and how it asked to end.  What
 * is not kept: counters, the token bucket (full again), a fork in flight
 * (busy; its ticket is unused again, its request unanswered: the guest
 * agent times it out) and a checkpoint in flight (its directory is
 * swept). */

static void agent_record_save(SfdVm *vm, JsonBuilder *b)
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
            INT("fork-id", (gint64)cp->fd->fork_id);
            INT("server-pid", cp->fd->server_pid);
            INT("server-starttime", cp->fd->server_starttime);
            INT("next-qemu-id", cp->next_qemu_id);
            INT("generation", cp->fd->generation);
            json_builder_set_member_name(b, "dir");
            json_builder_add_string_value(b, cp->fd->path);
            json_builder_set_member_name(b, "clone-args");
            json_builder_begin_array(b);
            for (char **s = cp->fd->clone_args; s && *s; s++) {
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
    g_auto(GStrv) clone_args = NULL;
    SfdCheckpoint *cp;
    SfdForkDir *fd;
    const char *dir;
    JsonArray *ca;
    gint64 id = 0, req = 0, fid = 0, spid = 0, sst = 0, next = 0, gen = 0;

    if (!sfd_json_int(json_object_get_member(o, "id"), &id) ||
        !sfd_json_int(json_object_get_member(o, "request"), &req) ||
        !sfd_json_int(json_object_get_member(o, "fork-id"), &fid) ||
        !sfd_json_int(json_object_get_member(o, "server-pid"), &spid) ||
        !sfd_json_int(json_object_get_member(o, "server-starttime"), &sst) ||
        !sfd_json_int(json_object_get_member(o, "next-qemu-id"), &next) ||
        !sfd_json_int(json_object_get_member(o, "generation"), &gen) ||
        !(dir = json_object_get_string_member_with_default(o, "dir", NULL)) ||
        !json_object_has_member(o, "clone-args") ||
        !JSON_NODE_HOLDS_ARRAY(json_object_get_member(o, "clone-args")) ||
        id <= 0 || req <= 0 || req > G_MAXUINT32 || spid <= 0 ||
        spid > G_MAXINT32 || next < 1 || next > SFD_MAX_FORK_CLONES + 1 ||
        gen < 0 || gen > G_MAXUINT32) {
        g_warning("%s: a checkpoint record is malformed (dropped)", vm->name);
        return NULL;
    }
    ca = json_object_get_array_member(o, "clone-args");
    clone_args = g_new0(char *, json_array_get_length(ca) + 1);
    for (guint i = 0; i < json_array_get_length(ca); i++) {
        const char *v = json_node_get_string(json_array_get_element(ca, i));
        clone_args[i] = g_strdup(v ? v : "");
    }
    sfd_ids_seen(id);
    /* Only a fork directory of ours, with its page server alive: a
     * checkpoint without one cannot make clones, and holds a slot. */
    fd = sfd_forkdir_adopt(dir, (guint64)fid, spid, sst, clone_args);
    if (!fd || !sfd_forkdir_server_alive(fd)) {
        g_warning("%s: checkpoint %" G_GINT64_FORMAT " lost its fork "
                  "directory or page server while sfd was away (dropped)",
                  vm->name, id);
        if (fd) {
            sfd_forkdir_release(fd);
        }
        return NULL;
    }
    fd->generation = gen;
    cp = g_new0(SfdCheckpoint, 1);
    cp->id = id;
    cp->request = req;
    cp->fd = fd;
    cp->next_qemu_id = next;
    return cp;
}

static void agent_record_load(SfdVm *vm, JsonObject *rec)
{
    JsonNode *an = json_object_get_member(rec, "agent");
    JsonObject *o;
    SfdAgent *a;

    if (!an || !JSON_NODE_HOLDS_OBJECT(an)) {
        return;
    }
    o = json_node_get_object(an);
    a = sfd_agent_get(vm);
    if (!vm->clone_id) {
        JsonNode *tn = json_object_get_member(o, "tickets");
        JsonNode *cn = json_object_get_member(o, "checkpoints");
        JsonArray *ca =
            cn && JSON_NODE_HOLDS_ARRAY(cn) ? json_node_get_array(cn) : NULL;
        if (tn && JSON_NODE_HOLDS_ARRAY(tn)) {
            sfd_tickets_from_json(&a->tickets, json_node_get_array(tn),
                                  g_get_monotonic_time(), g_get_real_time());
        }
        for (guint i = 0; i < a->tickets.tickets->len; i++) {
            sfd_ids_seen(((SfdTicket *)a->tickets.tickets->pdata[i])->id);
        }
        for (guint i = 0; ca && i < json_array_get_length(ca); i++) {
            JsonNode *e = json_array_get_element(ca, i);
            SfdCheckpoint *cp;
            if (a->checkpoints->len >= (guint)a->limits.max_checkpoints ||
                !JSON_NODE_HOLDS_OBJECT(e)) {
                continue;
            }
            cp = checkpoint_restore(vm, json_node_get_object(e));
            if (cp && sfd_agent_checkpoint_find(a, cp->id)) {
                sfd_agent_checkpoint_free(cp);
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
    if (!parent || !sfd_json_int(json_object_get_member(o, "ticket"), &t) ||
        t <= 0 || !sfd_json_int(json_object_get_member(o, "member"), &member) ||
        member < 1 || member > SFD_MAX_FORK_CLONES ||
        !sfd_json_int(json_object_get_member(o, "parent-pid"), &ppid)) {
        return; /* not a ticket's clone (or unreadable): nobody to tell */
    }
    g_free(a->parent);
    a->parent = g_strdup(parent);
    a->parent_pid = ppid;
    a->ticket = t;
    a->member = member;
    if (sfd_json_int(json_object_get_member(o, "exit-how"), &how) &&
        how >= SFD_HOW_EXITED && how <= SFD_HOW_CRASHED &&
        sfd_json_int(json_object_get_member(o, "exit-status"), &st)) {
        a->exit_set = TRUE;
        a->exit_how = how;
        a->exit_status = (int)st;
    }
    a->killed = json_object_get_boolean_member_with_default(o, "killed", FALSE);
}

const SfdRecordSection sfd_agent_record = {
    .name = "agent",
    .save = agent_record_save,
    .load = agent_record_load,
};

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
                m->how = SFD_HOW_CRASHED;
                changed = TRUE;
            }
        }
        if (changed) {
            sfd_record_save(p);
        }
    }
}
