/*
 * sfd: what a clone is told about itself, and how.  A clone is a copy
 * of its parent: its guest still believes it has the parent's address,
 * host name and ids.  Through the guest agent (sf-agent-reply
 * kind=identity) it learns its clone id, generation, ticket, MAC,
 * address on the family network and host name; a guest without an agent
 * gets its MAC and address through its serial console instead.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_IDENTITY_H
#define SFD_IDENTITY_H

#include "sfd.h"

typedef void (*SfdIdentityDone)(SfdVm *c, const char *err, gpointer opaque);

/*
 * Tell clone c who it is (its id is c->guest_id).  request != 0 is the
 * guest request (the parent's clone or checkpoint request) the identity
 * answers in the clone: its program waits for it, so not delivering it
 * is an error.  request 0 (an operator's fork): through the agent when
 * one listens, else through the serial console; err is set only when
 * neither worked.  done is called once, from the loop.
 */
void sfd_identity_tell(SfdVm *c, guint32 request, guint64 ticket,
                       guint32 generation, SfdIdentityDone done,
                       gpointer opaque);
/* A VM name as a host name the agent accepts (sf_agent_hostname_valid). */
char *sfd_identity_hostname(const char *name);

#endif
