/*
 * snowflock: a clone's identity on the device side.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef HW_SF_IDENTITY_H
#define HW_SF_IDENTITY_H

/*
 * The MAC clone @clone_id gets for a NIC whose parent had @parent: the low
 * 24 bits are the parent's plus clone_id times an odd constant (mod 2^24),
 * so siblings never collide with each other or with the parent (for fewer
 * than 2^24 clones); the OUI is kept.
 */
void sf_identity_clone_mac(const uint8_t parent[6], uint32_t clone_id,
                           uint8_t out[6]);

/*
 * Give every virtio-net device of this clone its own MAC.  Called after
 * the parent's device state is loaded (which carries the parent's MACs)
 * and before the vCPUs run.  The guest still uses the old address until
 * its agent sets the new one (VIRTIO_NET_CTRL_MAC_ADDR_SET).
 */
void sf_identity_apply(uint32_t clone_id);

#endif
