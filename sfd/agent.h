/*
 * sfd: requests from guests (docs/guest-api.md).  Every VM sfd starts
 * has an sf-agent-port; its QEMU turns each request of the guest agent
 * into an SF_AGENT_REQUEST event on QMP, which sfd answers with
 * sf-agent-reply.  The guest is untrusted: see agent.c.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_AGENT_H
#define SFD_AGENT_H

#include "sfd.h"

/* An SF_AGENT_REQUEST event from vm's QEMU. */
void sfd_agent_request(SfdVm *vm, JsonObject *data);
/* vm is ending (first thing in its teardown): a ticket's clone is
 * reported to its parent, a parent's checkpoints are let go. */
void sfd_agent_vm_exiting(SfdVm *vm);
/* An adopted VM's QMP is back (err NULL) or failed: owed reports go. */
void sfd_agent_adopted(SfdVm *vm, const char *err);

#endif
