/*
 * sf-agent freeze: hold the workload (every process of the workload
 * cgroup, cgroup v2 freezer) frozen while the VM forks, so that nothing
 * in it runs in a clone before the clone's identity is in place.  Calls
 * only log.h and reads config.h; reports up through a callback.
 *
 * Holders: the host (FREEZE frames) and local fork requests (sf_clone
 * with SF_CLONE_FREEZE) each hold the freeze under an id of their own;
 * the cgroup is frozen while anyone holds it, and thawed when the last
 * hold is dropped or expires.  A hold that expires is the safety net for
 * a holder that never comes back (a host that died between its freeze
 * and its thaw).
 *
 * The state is in the agent's memory, so a clone inherits it: a clone's
 * workload stays frozen until its agent applies the identity and drops
 * every hold (freeze_drop_all).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SF_AGENT_FREEZE_H
#define SF_AGENT_FREEZE_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

#define FREEZE_HOLDER_HOST 0 /* the host's FREEZE; local holders are > 0 */

/*
 * Called once per freeze that was asked for and not yet reported: err 0
 * when the whole workload is frozen, else a positive errno (ENOENT: no
 * workload cgroup; ETIMEDOUT: its processes did not all freeze in time),
 * after which nothing is left frozen and every hold is gone.
 */
typedef void (*FreezeDone)(void *opaque, int err);

/* Find (or make) the workload cgroup.  0, or -errno (logged). */
int freeze_init(const AgentConfig *cfg, FreezeDone done, void *opaque);

/*
 * Hold the freeze for holder until deadline (CLOCK_MONOTONIC ms); a
 * second hold by the same holder moves its deadline.  done() follows,
 * at once if the workload is already frozen.  0 or -errno.
 */
int freeze_hold(uint64_t holder, int64_t deadline_ms);

/* Drop holder's hold; thaws when it was the last.  Unknown: a no-op. */
void freeze_drop(uint64_t holder);

/* Drop every hold and thaw (a clone whose identity is in place). */
void freeze_drop_all(void);

bool freeze_held(uint64_t holder);
bool freeze_frozen(void);

/* Processes in the workload cgroup, and how long the last freeze lasted. */
uint32_t freeze_tasks(void);
uint64_t freeze_last_us(void);

/* While a freeze is settling: an fd to poll for POLLPRI, else -1. */
int freeze_fd(void);

/* freeze_fd() is ready: see whether the workload has frozen. */
void freeze_event(void);

/*
 * Drop expired holds and fail a freeze that does not settle.  Returns
 * the ms until the next deadline, or -1 for none.
 */
int freeze_expire(void);

#endif
