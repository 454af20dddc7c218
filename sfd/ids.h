/*
 * sfd: guest ticket and checkpoint ids.  One counter per sfd (1, 2,
 * ...); an id is never handed out twice, even across restarts.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_IDS_H
#define SFD_IDS_H

#include <glib.h>

/* The id sfd_ids_take() will return next. */
guint64 sfd_ids_peek(void);
guint64 sfd_ids_take(void);
/* An id found in a record: later ids are above it. */
void sfd_ids_seen(guint64 id);
/* Before adoption: where the previous sfd got to. */
void sfd_ids_load(void);

#endif
