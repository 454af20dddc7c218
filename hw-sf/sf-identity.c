/*
 * snowflock: a clone's identity on the device side.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qom/object.h"
#include "net/net.h"
#include "hw/virtio/virtio-net.h"
#include "hw/sf/sf-identity.h"
#include "trace.h"

#define SF_MAC_STRIDE 0x9E3779u   /* odd: multiplication is a bijection */

void sf_identity_clone_mac(const uint8_t parent[6], uint64_t fork_id,
                           uint32_t clone_id, uint8_t out[6])
{
    uint32_t tail = (parent[3] << 16) | (parent[4] << 8) | parent[5];
    uint32_t step = fork_id % ((1u << 24) - 256) + clone_id;

    tail = (tail + step * SF_MAC_STRIDE) & 0xffffff;
    memcpy(out, parent, 3);
    out[3] = tail >> 16;
    out[4] = tail >> 8;
    out[5] = tail;
}

typedef struct SfIdentity {
    uint64_t fork_id;
    uint32_t clone_id;
    const uint8_t *mac;          /* for the first NIC, or NULL */
} SfIdentity;

static int sf_identity_nic(Object *obj, void *opaque)
{
    SfIdentity *id = opaque;
    VirtIONet *n = (VirtIONet *)object_dynamic_cast(obj, TYPE_VIRTIO_NET);
    g_autofree char *path = NULL;
    uint8_t mac[6];
    char old_s[18], new_s[18];

    if (!n) {
        return 0;
    }
    if (id->mac) {
        memcpy(mac, id->mac, sizeof(mac));
        id->mac = NULL;
    } else {
        sf_identity_clone_mac(n->mac, id->fork_id, id->clone_id, mac);
    }
    snprintf(old_s, sizeof(old_s), "%02x:%02x:%02x:%02x:%02x:%02x",
             n->mac[0], n->mac[1], n->mac[2], n->mac[3], n->mac[4],
             n->mac[5]);
    snprintf(new_s, sizeof(new_s), "%02x:%02x:%02x:%02x:%02x:%02x",
             mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
    path = object_get_canonical_path(obj);
    trace_sf_identity_mac(path, old_s, new_s);
    memcpy(n->mac, mac, sizeof(mac));
    memcpy(n->nic_conf.macaddr.a, mac, sizeof(mac));
    qemu_format_nic_info_str(qemu_get_queue(n->nic), mac);
    return 0;
}

void sf_identity_apply(uint64_t fork_id, uint32_t clone_id,
                       const uint8_t *mac)
{
    SfIdentity id = { fork_id, clone_id, mac };

    object_child_foreach_recursive(object_get_root(), sf_identity_nic, &id);
}
