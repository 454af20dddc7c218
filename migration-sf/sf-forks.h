/*
 * snowflock: this VM's forks after vm-fork answered.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef MIGRATION_SF_FORKS_H
#define MIGRATION_SF_FORKS_H

#include "qapi/qapi-types-sf.h"
#include "sf-forkdir.h"

/*
 * Record fork @id, which vm-fork has answered: watch its page server
 * @server_pid and its @launched clones until they end.  Takes @dir and
 * @stats_fd (the read end of the pipe the server writes its final
 * figures to).
 */
void sf_forks_add(uint64_t id, SfForkDir *dir, const char *server,
                  pid_t server_pid, int stats_fd,
                  const SfCloneLaunchList *launched);

#endif
