/*
 * sfd: libvirt-style hooks.
 *
 * HOOKS_DIR/domain is called for domains, HOOKS_DIR/clone for clones:
 *
 *   HOOK NAME OPERATION SUB-OP        (the domain XML on stdin)
 *
 *   prepare begin   before anything is set up; failing aborts the start
 *                   (or fork) and its output is the error message
 *   start   begin   network ready, just before QEMU is spawned; failing
 *                   aborts too
 *   started begin   QEMU runs and answers QMP
 *   stopped end     QEMU has exited
 *   release end     everything of the VM is released (also after a
 *                   failed prepare or start)
 *
 * Order: the hooks of one VM (object and name) run strictly one after
 * the other, in the order they were asked for, each finishing before
 * the next begins, as libvirt's do; hooks of different VMs run side by
 * side, and sfd keeps serving while any runs.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_HOOKS_H
#define SFD_HOOKS_H

#include "sfd.h"

typedef void (*SfdHookDone)(gboolean ok, const char *msg, gpointer opaque);

/*
 * Run HOOKS_DIR/object NAME OP SUBOP with d's XML on stdin, after every
 * hook asked for earlier for the same object and name.  A missing hook
 * succeeds.  done may be NULL (not awaited: the hook still runs in its
 * turn); it is always called from the main loop, never before this
 * returns.
 */
void sfd_hook_run(const char *object, const char *name, const char *op,
                  const char *subop, SfdDomain *d, SfdHookDone done,
                  gpointer opaque);
/* Hooks queued or running for object/name (for tests and teardown). */
guint sfd_hooks_pending(const char *object, const char *name);

#endif
