/*
 * snowflock: the guest agent channel's QMP commands in a QEMU built
 * without the sf-agent-port device (CONFIG_SF_DEVICES off): the schema
 * is always there, so the commands are, and say there is no device.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-sf.h"

SfAgentInfo *qmp_query_sf_agent(Error **errp)
{
    return g_new0(SfAgentInfo, 1);
}

void qmp_sf_agent_reply(SfAgentReply *arg, Error **errp)
{
    error_setg(errp, "this QEMU has no sf-agent-port device");
}

void qmp_sf_agent_freeze(bool has_timeout_ms, uint32_t timeout_ms,
                         Error **errp)
{
    error_setg(errp, "this QEMU has no sf-agent-port device");
}

void qmp_sf_agent_thaw(Error **errp)
{
    error_setg(errp, "this QEMU has no sf-agent-port device");
}
