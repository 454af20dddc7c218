/*
 * sf-agent identity: turn a freshly forked VM into clone <id> (run-dir
 * files, RNG, clock, MAC, IPv4, hostname, post-clone scripts).  Calls
 * only log.h and reads config.h.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SF_AGENT_IDENTITY_H
#define SF_AGENT_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "sf-agent-proto.h"

/*
 * Apply a validated identity: run-dir files, RNG, clock, MAC, IPv4,
 * hostname, post-clone scripts (docs/guest-api.md, "Identity").  Steps
 * that fail are logged and skipped; the clone is a clone all the same.
 */
void identity_apply(const AgentConfig *cfg, const SfAgentIdentity *id);

/* Hostname check: 1..63 of [A-Za-z0-9.-], NUL terminated in the field. */
bool identity_hostname_ok(const char *name, size_t field);

#endif
