/*
 * sf-agent identity: turn a freshly forked VM into clone <id> (run-dir
 * files, RNG, clock, MAC, IPv4, hostname; then the post-clone scripts).
 * Calls only log.h and reads config.h.
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
 * Apply a validated identity, steps 1-4 of docs/guest-api.md, "Identity":
 * run-dir files, RNG, clock, MAC, IPv4, hostname.  Steps that fail are
 * logged and skipped; the clone is a clone all the same.
 */
void identity_apply(const AgentConfig *cfg, const SfAgentIdentity *id);

/*
 * Set the wall clock again, to a fresher host time than the identity's
 * (main.c asks the host for it once the identity's steps are done).
 * 0 or -errno.
 */
int identity_set_clock(const AgentConfig *cfg, int64_t realtime_ns);

/* Step 5: the post-clone scripts, once the identity is in place. */
void identity_run_scripts(const AgentConfig *cfg, const SfAgentIdentity *id);

/* Hostname check: 1..63 of [A-Za-z0-9.-], NUL terminated in the field. */
bool identity_hostname_ok(const char *name, size_t field);

#endif
