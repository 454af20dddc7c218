/*
 * sfd: the daemon's configuration and its tables of domains, VMs and
 * families (sfd.h), created here so every part can reach them without
 * calling up into main.c.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "sfd.h"

Sfd *sfd;

Sfd *sfd_config_new(void)
{
    Sfd *s = g_new0(Sfd, 1);

    s->max_clones = SFD_MAX_HOST_CLONES_DEFAULT;
    s->hook_timeout_s = 30;
    s->domains = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                       (GDestroyNotify)sfd_domain_free);
    s->vms = g_hash_table_new(g_str_hash, g_str_equal);
    s->families = g_hash_table_new(g_str_hash, g_str_equal);
    return s;
}
