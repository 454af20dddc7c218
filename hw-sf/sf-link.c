/*
 * snowflock: a clone's network links, held down until its identity is
 * in place.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A clone starts as its parent at the fork instant: the same IP address,
 * ARP cache, TCP connections and timers, and a guest that still uses the
 * parent's MAC until its agent sets the clone's.  Anything it sent then
 * would go out under the parent's identity (a TCP retransmit, an ARP
 * reply, virtio-net's own post-load announce).  sf-clone's link=held
 * takes every NIC's link down before the first instruction: QEMU's net
 * layer then drops whatever the NIC sends or would receive
 * (qemu_send_packet and qemu_deliver_packet test link_down), whatever
 * the guest does, and virtio-net tells the guest its carrier is off.
 *
 * What a NIC's transmit rings hold is another matter: frames the guest
 * queued and QEMU has not sent yet.  At the start those are the parent's,
 * in flight at the fork (its ping, its TCP segment), which the parent
 * sends itself; a clone would send them again with the parent's MAC and
 * address as soon as its link is up (seen here: 6 ms after the release).
 * So a clone drops them, held or not, and a held clone drops again at
 * the release what its guest queued without a kick while the link was
 * down, before its identity was in place.  The guest sees them sent.
 *
 * The links come back up when the guest agent reports the identity the
 * host sent it applied (sf-agent.c, APPLIED), or when the management
 * layer says so with QMP set_link (guests without an agent).  A guest
 * cannot release them before the host has sent it an identity: APPLIED
 * is only honoured for the identity sent.  A guest that reports APPLIED
 * without applying it can then speak with a stale identity, but so can
 * any guest that forges its frames: filtering by MAC and IP at the bridge
 * is what guards a network against a hostile guest; the hold guards it
 * against an honest clone's stale state.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-net.h"
#include "net/announce.h"
#include "net/net.h"
#include "hw/virtio/virtio-net.h"
#include "hw/sf/sf-link.h"
#include "trace.h"

typedef enum {
    SF_LINK_UP,
    SF_LINK_HELD,
    SF_LINK_RELEASED,
} SfLinkState;

static SfLinkState sf_link;
static strList *sf_link_held;          /* NIC names, BQL */
static AnnounceTimer sf_link_announce;

static void sf_link_collect(NICState *nic, void *opaque)
{
    strList ***tail = opaque;

    QAPI_LIST_APPEND(*tail, g_strdup(qemu_get_queue(nic)->name));
}

static int sf_link_drop_tx_one(Object *obj, void *opaque)
{
    VirtIONet *n = (VirtIONet *)object_dynamic_cast(obj, TYPE_VIRTIO_NET);
    VirtIODevice *vdev;
    unsigned int dropped = 0;

    if (!n) {
        return 0;
    }
    vdev = VIRTIO_DEVICE(n);
    for (int i = 0; i < n->max_queue_pairs; i++) {
        VirtQueue *vq = n->vqs[i].tx_vq;
        unsigned int k = vq ? virtqueue_drop_all(vq) : 0;

        if (k) {
            virtio_notify(vdev, vq);
        }
        dropped += k;
    }
    if (dropped) {
        g_autofree char *path = object_get_canonical_path(obj);

        trace_sf_link_drop_tx(path, dropped);
    }
    return 0;
}

/* Frames queued in the transmit rings and not sent yet: dropped. */
static void sf_link_drop_tx(void)
{
    object_child_foreach_recursive(object_get_root(), sf_link_drop_tx_one,
                                   NULL);
}

bool sf_link_start(bool hold, Error **errp)
{
    ERRP_GUARD();
    strList **tail = &sf_link_held;

    assert(sf_link == SF_LINK_UP);
    sf_link_drop_tx();
    if (!hold) {
        return true;
    }
    qemu_foreach_nic(sf_link_collect, &tail);
    for (strList *l = sf_link_held; l; l = l->next) {
        qmp_set_link(l->value, false, errp);
        if (*errp) {
            return false;
        }
        trace_sf_link_hold(l->value);
    }
    sf_link = SF_LINK_HELD;
    return true;
}

bool sf_link_release(void)
{
    /*
     * Three rounds 50, 150, 250 ms apart, as after a migration but
     * fewer: the guest's own gratuitous ARP (virtio-net guest announce)
     * carries the clone's address now that it has it.
     */
    AnnounceParameters params = {
        .initial = 50, .max = 550, .rounds = 3, .step = 100,
        .has_interfaces = true, .interfaces = sf_link_held,
    };

    if (sf_link != SF_LINK_HELD) {
        return false;
    }
    sf_link_drop_tx();
    for (strList *l = sf_link_held; l; l = l->next) {
        Error *err = NULL;

        qmp_set_link(l->value, true, &err);
        if (err) {
            /* A NIC that went away since: nothing left to release. */
            warn_reportf_err(err, "sf-clone: releasing the link of %s: ",
                             l->value);
        }
        trace_sf_link_release(l->value);
    }
    sf_link = SF_LINK_RELEASED;
    if (sf_link_held) {
        qemu_announce_self(&sf_link_announce, &params);
    }
    return true;
}

bool sf_link_is_held(void)
{
    return sf_link == SF_LINK_HELD;
}

/* Whether a held NIC is still down: set_link may have raised it. */
static bool sf_link_still_down(void)
{
    for (strList *l = sf_link_held; l; l = l->next) {
        NetClientState *nc;

        if (qemu_find_net_clients_except(l->value, &nc,
                                         NET_CLIENT_DRIVER__MAX, 1) == 1 &&
            nc->link_down) {
            return true;
        }
    }
    return false;
}

const char *sf_link_state(void)
{
    switch (sf_link) {
    case SF_LINK_HELD:
        return sf_link_still_down() ? "held" : "released";
    case SF_LINK_RELEASED:
        return "released";
    default:
        return "up";
    }
}
