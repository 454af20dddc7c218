/*
 * sfd: a VM's ticket table (see tickets.h).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <string.h>

#include "sfd.h"
#include "tickets.h"

static const char *const how_names[] = {
    "exited", "signaled", "lost", "killed", "crashed",
};

const char *sfd_how_name(SfdHow how)
{
    return how >= 0 && how < G_N_ELEMENTS(how_names) ? how_names[how] : "?";
}

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
 * most max_total tickets of at most SFD_MAX_FORK_CLONES clones, so the record
 * stays bounded (about 40 bytes a clone). */
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

gboolean sfd_json_int(JsonNode *n, gint64 *out)
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
        if (!sfd_json_int(json_object_get_member(o, "id"), &id) || id <= 0 ||
            sfd_tickets_find(t, id) ||
            !sfd_json_int(json_object_get_member(o, "granted"), &granted) ||
            granted < 1 || granted > SFD_MAX_FORK_CLONES ||
            !sfd_json_int(json_object_get_member(o, "created-at"), &at) ||
            (strcmp(st, "used") && strcmp(st, "unused")) ||
            (json_object_has_member(o, "checkpoint") &&
             (!sfd_json_int(json_object_get_member(o, "checkpoint"), &cp) ||
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
                ok = sfd_json_int(json_array_get_element(e, j + 1), &v[j]);
            }
            const char *name =
                ok ? json_node_get_string(json_array_get_element(e, 0)) : NULL;
            if (!name || v[2] < 0 || v[2] > SFD_HOW_CRASHED ||
                v[1] < G_MININT32 || v[1] > G_MAXINT32) {
                /* Unreadable: its clone is reported as crashed. */
                m->vm = g_strdup("?");
                m->ended = TRUE;
                m->status = -1;
                m->how = SFD_HOW_CRASHED;
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
