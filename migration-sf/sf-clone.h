/*
 * snowflock: the clone side (sf-clone object) as seen by the rest of QEMU.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef MIGRATION_SF_CLONE_H
#define MIGRATION_SF_CLONE_H

/* True when this QEMU was started as a clone (has an sf-clone object). */
bool sf_clone_active(void);
/*
 * True when this QEMU may be forked itself: not a clone, or a clone that
 * already holds every page (a fork of a clone still fetching would hand
 * its page server holes instead of memory).
 */
bool sf_clone_memory_complete(void);

#endif
