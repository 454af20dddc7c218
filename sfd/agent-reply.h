/*
 * sfd: how sfd answers a guest: sf-agent-reply results (with one
 * GUEST_REQUEST event each), clone-exited reports to a parent, and the
 * logging of replies that fail (a guest that stopped reading), which is
 * bounded and never fatal.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_AGENT_REPLY_H
#define SFD_AGENT_REPLY_H

#include "sfd.h"

/* Answer vm's request with a result; one GUEST_REQUEST event per answer
 * (never for EAGAIN: those are only counted). */
void sfd_agent_answer(SfdVm *vm, guint32 request, const char *op, int error,
                      guint count, guint64 value);
/* The GUEST_REQUEST event alone (an exit is not answered). */
void sfd_agent_guest_event(SfdVm *vm, guint32 request, const char *op,
                           int error, guint count, guint64 value);
/* sf-agent-reply kind=clone-exited to parent p; the ticket member is
 * marked reported (and recorded) once QEMU took it. */
void sfd_agent_report_exit(SfdVm *p, guint64 ticket, int member, int status,
                           int how);
/* The errno a guest is told for an sfd error class. */
int sfd_agent_errno_of_class(const char *cls);

#endif
