/*
 * snowflock: the contract of vm-fork's "clone-args", between QEMU and
 * whoever starts clones from them (sfd, scripts, other hosts).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Plain C, no code: QEMU (migration-sf/sf-fork.c) and sfd include it.
 *
 * vm-fork answers clone-args, the options to append to the parent's own
 * machine options to start clone N of the fork:
 *
 *   -object secret,id=sf-secret-<fork id>,file=<dir>/secret,format=raw
 *   -object sf-clone,id=sf-clone,descriptor=<dir>/descriptor,
 *           server=<endpoint>,secret-id=sf-secret-<fork id>,
 *           clone-id=@CLONE_ID@
 *
 * (the sf-clone object is one argument).  The secret is in a 0600 file,
 * never in an argument: /proc/PID/cmdline is readable by every local
 * user.  Commas in paths are doubled, as QEMU's option syntax wants.
 *
 * SF_CLONE_ID_PLACEHOLDER occurs exactly once in the list, at the very end
 * of its argument: replace it with N (1..clones), and append further
 * sf-clone properties after it if needed (",mac=52:54:00:..").  Every
 * other argument is passed as it is.
 */
#ifndef SF_CLONE_ARGS_H
#define SF_CLONE_ARGS_H

#define SF_CLONE_ID_PLACEHOLDER     "@CLONE_ID@"
#define SF_CLONE_ID_PLACEHOLDER_LEN (sizeof(SF_CLONE_ID_PLACEHOLDER) - 1)

#endif
