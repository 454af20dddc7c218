/*
 * snowflock: a clone's VM generation ID.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef HW_SF_GENERATION_H
#define HW_SF_GENERATION_H

#include "qapi/error.h"

/*
 * Give this VM a new VM generation ID: a GUID from the host's RNG in the
 * guest's vmgenid buffer, and the device's ACPI notification raised.
 * Called by a clone after its parent's device state is loaded and before
 * its vCPUs first run, so the notification is pending at the guest's
 * first instruction.  Returns 1 when the guest has been given a new
 * generation, 0 when there is nothing to give it one with (no vmgenid
 * device, or its firmware never linked the GUID buffer), -1 with @errp
 * set when the host's RNG failed.
 */
int sf_generation_new(Error **errp);

#endif
