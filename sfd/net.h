/*
 * sfd: clone family networks: a Linux bridge per family (a domain's
 * parent and its clones), a tap per member, addresses and MACs by
 * member number.  See net.c for the rules.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_NET_H
#define SFD_NET_H

#include "sfd.h"
#include "store.h"

/* The family of domain d, made (with its bridge) if it has none yet. */
SfdFamily *sfd_family_get(SfdDomain *d, char **err);
/* Create a tap for member id (0 = parent) on the family bridge. */
char *sfd_net_tap_add(SfdFamily *f, int member, char **err);
void sfd_net_tap_del(SfdFamily *f, const char *tap);
/* Drop the family (and its bridge) when it has no members left. */
void sfd_family_put(SfdFamily *f);
/* Put families with no member left (after adoption). */
void sfd_family_put_empty(void);
char *sfd_net_ip(SfdFamily *f, int member);
char *sfd_net_parent_mac(SfdFamily *f);
char *sfd_net_clone_mac(SfdFamily *f, int clone_id);
/* Delete interfaces with this sfd's tag that no family or VM claims. */
void sfd_net_sweep(void);
/* Release vm's tap and its hold on the family. */
void sfd_net_release(SfdVm *vm);

/* The "family" member of a VM's record (store.h). */
extern const SfdRecordSection sfd_net_record;

#endif
