/*
 * sfd: forks.  A fork request (a client's "fork", or a guest's clone or
 * create-clones request) asks for N clones of a running parent; sfd
 * grants m of them (sfd_fork_grant, the one quota rule), names and
 * prepares them, takes the fork (a new vm-fork, or an existing fork such
 * as a checkpoint), launches every clone and tells each who it is.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_FORK_H
#define SFD_FORK_H

#include "sfd.h"
#include "forkdir.h"

/*
 * How many of want clones domain d may have now: min(want,
 * SFD_MAX_FORK_CLONES, d's <sf:clone max> minus its live clones, the
 * host's --max-clones minus all live clones).  0 or less: none, and
 * *why (when given) says who is full.
 */
int sfd_fork_grant(SfdDomain *d, int want, char **why);

typedef struct SfdForkRequest {
    const char *origin; /* "client" or "guest" */
    int count;
    /* A guest's fork: each clone's identity answers this request (0: an
     * operator's fork, identities on sfd's initiative). */
    guint32 request;
    guint64 ticket;
    /* From an existing fork (a checkpoint's): no vm-fork; QEMU clone ids
     * from first_qemu_id on.  NULL: vm-fork the parent now. */
    SfdForkDir *from;
    int first_qemu_id;
    /* Called once the fork exists, before any clone is launched (the
     * clones have their names and ids); not when the fork fails first. */
    void (*forked)(SfdVm *parent, GPtrArray *clones, guint32 generation,
                   gpointer opaque);
} SfdForkRequest;

/* ret: {vm, fork-id, origin, requested, granted, pause-us, server-pid,
 * clones: [...], running}; or NULL with an error class and message. */
typedef void (*SfdForkDone)(JsonNode *ret, const char *cls, const char *err,
                            gpointer opaque);

/* done (and r->forked) get opaque; done is called once, maybe before
 * this returns when the fork is refused at once. */
void sfd_fork(SfdVm *parent, const SfdForkRequest *r, SfdForkDone done,
              gpointer opaque);

#endif
