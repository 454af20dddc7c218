/*
 * sfd: a token bucket (see bucket.h).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "bucket.h"

void sfd_bucket_init(SfdBucket *b, double rate, double burst, gint64 now_us)
{
    b->rate = rate;
    b->burst = burst;
    b->tokens = burst;
    b->last_us = now_us;
}

gboolean sfd_bucket_take(SfdBucket *b, gint64 now_us)
{
    if (now_us > b->last_us) {
        b->tokens = MIN(b->burst, b->tokens + (now_us - b->last_us) * b->rate /
                                                  G_USEC_PER_SEC);
        b->last_us = now_us;
    }
    if (b->tokens < 1.0) {
        return FALSE;
    }
    b->tokens -= 1.0;
    return TRUE;
}
