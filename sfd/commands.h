/*
 * sfd: the protocol's commands: the typed table proto.c serves.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_COMMANDS_H
#define SFD_COMMANDS_H

#include "proto.h"

extern const SfdCommand sfd_commands[]; /* ends at name == NULL */

#endif
