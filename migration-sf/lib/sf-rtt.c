/*
 * snowflock round-trip estimation (see sf-rtt.h).  RFC 6298 section 2:
 * the first sample sets srtt and rttvar = rtt / 2; later ones
 * rttvar = 3/4 rttvar + 1/4 |srtt - rtt|, srtt = 7/8 srtt + 1/8 rtt;
 * rto = srtt + 4 rttvar, within [min, max], doubled per timeout.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "sf-rtt.h"

void sf_rtt_init(SfRtt *r, int64_t initial_rto_us, int64_t min_rto_us,
                 int64_t max_rto_us)
{
    *r = (SfRtt){
        .min_rto_us = min_rto_us,
        .max_rto_us = max_rto_us,
        .initial_rto_us = initial_rto_us,
    };
}

void sf_rtt_sample(SfRtt *r, int64_t rtt_us)
{
    if (rtt_us < 0) {
        return;
    }
    if (r->samples == 0) {
        r->srtt_us = rtt_us;
        r->rttvar_us = rtt_us / 2;
    } else {
        int64_t d =
            r->srtt_us > rtt_us ? r->srtt_us - rtt_us : rtt_us - r->srtt_us;
        r->rttvar_us = (3 * r->rttvar_us + d) / 4;
        r->srtt_us = (7 * r->srtt_us + rtt_us) / 8;
    }
    r->samples++;
    r->backoff = 0;
}

void sf_rtt_backoff(SfRtt *r)
{
    if (r->backoff < 16) {
        r->backoff++;
    }
}

int64_t sf_rtt_rto_us(const SfRtt *r)
{
    int64_t rto =
        r->samples ? r->srtt_us + 4 * r->rttvar_us : r->initial_rto_us;

    if (rto < r->min_rto_us) {
        rto = r->min_rto_us;
    }
    for (int i = 0; i < r->backoff && rto < r->max_rto_us; i++) {
        rto *= 2;
    }
    return rto > r->max_rto_us ? r->max_rto_us : rto;
}
