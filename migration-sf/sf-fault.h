/*
 * snowflock: test-only failure injection for vm-fork's steps.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef MIGRATION_SF_FAULT_H
#define MIGRATION_SF_FAULT_H

/*
 * True (with errp set, as the step's own failure would) when the test
 * environment asked step @step to fail; see sf-fault.c.
 */
bool sf_fault_inject(const char *step, Error **errp);

#endif
