/*
 * sfd: a token bucket (pure: the caller passes the time), used to
 * rate-limit each VM's guest requests.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_BUCKET_H
#define SFD_BUCKET_H

#include <glib.h>

typedef struct SfdBucket {
    double tokens;
    double rate;  /* tokens per second */
    double burst; /* most tokens held */
    gint64 last_us;
} SfdBucket;

void sfd_bucket_init(SfdBucket *b, double rate, double burst, gint64 now_us);
/* Take a token: FALSE when there is none (the request is refused). */
gboolean sfd_bucket_take(SfdBucket *b, gint64 now_us);

#endif
