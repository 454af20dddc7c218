/*
 * snowflock: a clone's identity on the device side.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef HW_SF_IDENTITY_H
#define HW_SF_IDENTITY_H

/*
 * The MAC clone @clone_id of fork @fork_id gets for a NIC whose parent had
 * @parent.  The OUI is kept; the low 24 bits are the parent's plus
 * (f + clone_id) times an odd constant, mod 2^24, where f is the fork id
 * mod (2^24 - 256).  Multiplying by an odd number is a bijection and
 * 0 < f + clone_id < 2^24 for clone ids below 256, so a clone never gets
 * its parent's MAC and siblings never share one; clones of two forks of
 * one parent collide only if their f are within the clone count of each
 * other (sfd, which knows every family, passes explicit MACs instead).
 */
void sf_identity_clone_mac(const uint8_t parent[6], uint64_t fork_id,
                           uint32_t clone_id, uint8_t out[6]);

/*
 * Give every virtio-net device of this clone its own MAC: @mac (if not
 * NULL) for the first one, derived ones for the others.  Called after the
 * parent's device state is loaded (which carries the parent's MACs) and
 * before the vCPUs run.  The guest still uses the old address until its
 * agent sets the new one (VIRTIO_NET_CTRL_MAC_ADDR_SET).
 */
void sf_identity_apply(uint64_t fork_id, uint32_t clone_id,
                       const uint8_t *mac);

#endif
