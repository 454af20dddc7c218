/*
 * snowflock: a clone's VM generation ID, in a QEMU built without the
 * vmgenid device (CONFIG_ACPI_VMGENID off): there is none to renew.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "hw/sf/sf-generation.h"

int sf_generation_new(Error **errp)
{
    return 0;
}
