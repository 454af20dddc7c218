/*
 * sfd: the life of a VM as a whole: starting a defined domain (hooks,
 * network, QEMU, QMP), the order things are released in when any VM
 * ends, and adopting the VMs a previous sfd left running.  It is vm.c's
 * observer, so a QEMU that ends or sends an event reaches the parts
 * above vm.c through here.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_LIFECYCLE_H
#define SFD_LIFECYCLE_H

#include "sfd.h"

/* Register the record sections and become vm.c's observer. */
void sfd_lifecycle_init(void);

typedef void (*SfdStartDone)(SfdVm *vm, const char *cls, const char *err,
                             gpointer opaque);
/* Start a defined domain: hooks, network, QEMU, QMP.  done(vm or NULL). */
void sfd_lifecycle_start(SfdDomain *d, SfdStartDone done, gpointer opaque);
/* After a restart: adopt what runs, release what ended while sfd was
 * away, sweep interfaces and fork directories nothing claims. */
void sfd_lifecycle_adopt_all(void);

#endif
