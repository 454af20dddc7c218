/*
 * sf.h - fork the whole snowflock VM from a program inside it.
 *
 * libsf talks to the guest agent (sf-agent) over the Unix socket
 * /run/snowflock/agent.sock (the directory can be changed with the
 * environment variable SF_RUN_DIR, for tests).  See docs/guest-api.md.
 *
 * Conventions for every function: on failure it returns -1, sets errno
 * and a message for sf_last_error(); no function aborts or exits the
 * program, except sf_exit()/sf_exit_wait() on success.  Calls are
 * thread safe; one call at a time talks to the agent per process.
 *
 * Errors (errno): EINVAL bad argument, ENOENT unknown ticket or
 * checkpoint, EALREADY ticket already used, EDQUOT quota exhausted,
 * EAGAIN rate limited, EBUSY too many requests pending, ENOTSUP not
 * available (e.g. forking a clone, sf_exit outside a clone), EIO the fork
 * failed on the host, EPROTO protocol error, ECANCELED this VM became a
 * clone while the request was outstanding, ETIMEDOUT the host did not
 * answer in time (no management layer answering this VM's requests;
 * every call but sf_join() has a deadline, see sf-agent --help),
 * ECONNREFUSED / ENOENT no agent.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SF_H
#define SF_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int64_t sf_ticket_t;     /* > 0 */
typedef int64_t sf_checkpoint_t; /* > 0 */

/* One ended clone, as reported by sf_join(). */
typedef struct sf_status {
    int id;     /* clone id, 1..m */
    int how;    /* SF_EXITED, ... */
    int status; /* SF_EXITED: exit status; SF_SIGNALED: signal; else 0 */
} sf_status_t;

/* How a clone ended (same values as the agent wire protocol). */
enum { SF_EXITED, SF_SIGNALED, SF_LOST, SF_KILLED, SF_CRASHED };

/*
 * sf_request_ticket - reserve up to n clones.
 *
 * Asks the management layer for permission to make n (>= 1) clones;
 * flags must be 0.  The host may grant fewer (see sf_ticket_granted()).
 * Returns the ticket (> 0), or -1: EINVAL, EDQUOT (nothing granted),
 * EAGAIN, EBUSY.
 */
sf_ticket_t sf_request_ticket(int n, unsigned flags);

/*
 * sf_ticket_granted - the number of clones m a ticket was granted.
 *
 * Returns m >= 1, or -1: ENOENT (the agent does not know the ticket).
 */
int sf_ticket_granted(sf_ticket_t t);

/*
 * sf_clone - fork the VM into the ticket's m clones.
 *
 * Returns twice, like fork(): 0 in the parent VM once the clones are
 * started, and the clone id (1..m) in each clone, after the clone's
 * identity (id, RNG, clock, network, hostname, post-clone scripts) is in
 * place.  Returns -1: ENOENT, EALREADY, ENOTSUP, EIO, EBUSY, EAGAIN.
 */
int sf_clone(sf_ticket_t t);

/* sf_clone_flags() flags */
#define SF_CLONE_FREEZE 0x1u

/*
 * sf_clone_flags - sf_clone() with flags.
 *
 * SF_CLONE_FREEZE: freeze the workload cgroup (/sys/fs/cgroup/sf-workload,
 * which the calling program must be in) before the fork; in the parent
 * it is thawed when the fork is done, in each clone only once the
 * clone's identity (RNG, clock, network) is in place, so no process of
 * the workload runs in a clone with its parent's RNG state, clock or
 * address.  Besides sf_clone()'s errors it returns -1 with EPERM (the
 * caller is not in the workload cgroup), ENOENT (the guest has no
 * workload cgroup) or ETIMEDOUT (the workload's processes did not all
 * freeze), having asked nothing of the host.
 */
int sf_clone_flags(sf_ticket_t t, unsigned flags);

/*
 * sf_exit - end this clone with an exit status.
 *
 * Reports status to the parent (sf_join() shows SF_EXITED, status) and
 * stops the clone VM: on success it does not return (if the host
 * acknowledges instead of stopping the VM, the program _exit()s).
 * Returns -1: ENOTSUP (not a clone), EBUSY, EAGAIN.
 */
int sf_exit(int status);

/*
 * sf_exit_wait - like sf_exit(), from a waitpid() status.
 *
 * A normally exited child is reported as SF_EXITED with its exit code,
 * one killed by a signal as SF_SIGNALED with the signal number.
 * Returns -1: EINVAL (wstatus is neither), or as sf_exit().
 */
int sf_exit_wait(int wstatus);

/*
 * sf_join - wait for every clone started from a ticket to end.
 *
 * Blocks until all clones started from t (by sf_clone() or
 * sf_create_clones()) have ended, then stores up to max statuses into
 * st, sorted by clone id.  Returns the number stored (pass max >=
 * sf_ticket_granted(t) to get all), or -1: ENOENT (unknown ticket),
 * EINVAL (no clone started from t, max < 0, or st NULL with max > 0),
 * ECANCELED, ECONNRESET (the agent went away while waiting).  It has no
 * deadline.  May be called again; it then returns at once.
 */
int sf_join(sf_ticket_t t, sf_status_t *st, int max);

/*
 * sf_kill - stop the live clones of a ticket.
 *
 * Each stopped clone is reported to sf_join() as SF_KILLED.
 * Returns the number of clones stopped, or -1: ENOENT.
 */
int sf_kill(sf_ticket_t t);

/*
 * sf_checkpoint_parent - freeze a fork point to create clones from later.
 *
 * Returns 0 in the parent, with the checkpoint in *cp; clones made from
 * the checkpoint by sf_create_clones() return here with their id
 * (1..m; *cp is set to 0 there).  Returns -1: EINVAL (cp NULL), ENOTSUP,
 * EIO, EBUSY, EAGAIN.
 */
int sf_checkpoint_parent(sf_checkpoint_t *cp);

/*
 * sf_create_clones - launch a ticket's clones from a checkpoint.
 *
 * Returns the number of clones started (m), or -1: ENOENT (unknown
 * checkpoint or ticket), EALREADY, EIO.  sf_join(t, ...) waits for them.
 */
int sf_create_clones(sf_checkpoint_t cp, sf_ticket_t t);

/*
 * sf_id - this VM's clone id: 0 in a VM that is not a clone, else 1..m.
 * Reads /run/snowflock/id.  Returns -1 only if the file is unreadable.
 */
int sf_id(void);

/*
 * sf_generation - the fork number that made this clone (0: not a clone).
 * Reads /run/snowflock/generation.
 */
int sf_generation(void);

/*
 * sf_last_error - a message for the calling thread's last failed call.
 * Never NULL; "" before any failure.  Valid until the thread's next call.
 */
const char *sf_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
