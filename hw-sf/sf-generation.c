/*
 * snowflock: a clone's VM generation ID.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A clone loads its parent's device state, so its vmgenid device holds
 * the parent's GUID (and its post_load writes that same GUID back), and
 * the guest kernel's RNG is the parent's, bit for bit.  Here the clone
 * gets a GUID of its own before its vCPUs run.  Linux's vmgenid driver
 * (drivers/virt/vmgenid.c) answers the notification by mixing the GUID
 * into its input pool and reseeding the CRNG (add_vmfork_randomness());
 * every per-CPU CRNG rekeys on its next use.  The path is GED interrupt
 * (pending at the first instruction) -> the GED's threaded handler runs
 * _EVT -> Notify(\_SB.VGEN) -> kacpi_notify work item -> driver, so a
 * few scheduling steps separate the first instruction from the reseed;
 * docs/guest-api.md gives the window measured and what closes it.
 *
 * The GUID only makes the clones' streams differ from each other and
 * from the parent's.  It is not secret in the VMGenID design (the host
 * can query it), so the agent's reseed with 64 bytes of host entropy
 * that no guest sees remains what makes a clone's stream unpredictable
 * to its siblings.
 */

#include "qemu/osdep.h"
#include "qemu/bswap.h"
#include "qemu/uuid.h"
#include "crypto/random.h"
#include "hw/acpi/vmgenid.h"
#include "hw/sf/sf-generation.h"
#include "trace.h"

int sf_generation_new(Error **errp)
{
    Object *obj = find_vmgenid_dev();
    VmGenIdState *vms;
    QemuUUID guid;
    g_autofree char *str = NULL;

    if (!obj) {
        trace_sf_generation_none("no vmgenid device");
        return 0;
    }
    vms = VMGENID(obj);
    /* Written back by the firmware (linker WRITE_POINTER) at boot. */
    if (!ldq_le_p(vms->vmgenid_addr_le)) {
        trace_sf_generation_none("the firmware never linked its buffer");
        return 0;
    }
    if (qcrypto_random_bytes(guid.data, sizeof(guid.data), errp) < 0) {
        error_prepend(errp, "a new VM generation ID: ");
        return -1;
    }
    /* An RFC 4122 random (version 4) UUID, as guid=auto makes. */
    guid.data[6] = (guid.data[6] & 0x0f) | 0x40;
    guid.data[8] = (guid.data[8] & 0x3f) | 0x80;
    vmgenid_set_guid(vms, &guid);
    str = qemu_uuid_unparse_strdup(&guid);
    trace_sf_generation_new(str);
    return 1;
}
