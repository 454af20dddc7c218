/*
 * sfd: how sfd answers a guest (see agent-reply.h).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <string.h>

#include "sfd.h"
#include "agent-reply.h"
#include "agent-state.h"
#include "proto.h"
#include "qmp.h"
#include "vm.h"

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
    if (sfd_log_limit(&a->fail_log, &n)) {
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

void sfd_agent_guest_event(SfdVm *vm, guint32 request, const char *op,
                           int error, guint count, guint64 value)
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
void sfd_agent_answer(SfdVm *vm, guint32 request, const char *op, int error,
                      guint count, guint64 value)
{
    JsonObject *args = json_object_new();
    SfdAgent *a = sfd_agent_get(vm);

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
        sfd_agent_guest_event(vm, request, op, error, count, value);
    }
    send_reply(vm, args, error == EAGAIN ? "EAGAIN" : op ? op : "result");
}

int sfd_agent_errno_of_class(const char *cls)
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
                sfd_agent_save(p); /* not owed again after a restart */
            }
        }
    }
    g_free(r->parent);
    g_free(r);
}

/* sf-agent-reply kind=clone-exited to parent p; the member is marked
 * reported once QEMU took it. */
void sfd_agent_report_exit(SfdVm *p, guint64 ticket, int member, int status,
                           int how)
{
    JsonObject *o = json_object_new();
    ExitReport *r;

    json_object_set_string_member(o, "kind", "clone-exited");
    json_object_set_int_member(o, "ticket", ticket);
    json_object_set_int_member(o, "clone-id", member);
    json_object_set_int_member(o, "status", status);
    json_object_set_string_member(o, "how", sfd_how_name(how));
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
