/*
 * snowflock: a clone's network links, held down until its identity is
 * in place.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef HW_SF_LINK_H
#define HW_SF_LINK_H

#include "qapi/error.h"

/*
 * Called by a clone before its vCPUs first run: drop the frames its
 * virtio-net transmit rings hold (its parent's, in flight at the fork),
 * and with @hold take the link of every NIC down, as QMP set_link does,
 * and remember them as held.
 */
bool sf_link_start(bool hold, Error **errp);

/*
 * Drop what the transmit rings hold again (queued before the identity),
 * bring the held links up and announce the clone's addresses (a RARP
 * from QEMU with the NIC's MAC, and the guest's own gratuitous ARP
 * through virtio-net's guest announce).  Returns true if links were
 * held, false (doing nothing) otherwise.
 */
bool sf_link_release(void);

/* Whether sf_link_release() would release anything. */
bool sf_link_is_held(void);

/* "up" (never held), "held" or "released", for query-sf-clone. */
const char *sf_link_state(void);

#endif
