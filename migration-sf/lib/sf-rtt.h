/*
 * snowflock round-trip estimation (RFC 6298's smoothed RTT and variance)
 * for clients that must decide when a request is lost: a datagram
 * transport re-requests a page after the estimator's retransmission
 * timeout, which follows the round trips measured on this path instead
 * of a constant.  Pure: times are passed in, in microseconds.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SF_RTT_H
#define SF_RTT_H

#include <stdbool.h>
#include <stdint.h>

typedef struct SfRtt {
    int64_t srtt_us;   /* smoothed round trip */
    int64_t rttvar_us; /* its mean deviation */
    int64_t min_rto_us, max_rto_us;
    int64_t initial_rto_us; /* until the first sample */
    uint64_t samples;
    int backoff; /* doublings after timeouts, reset by a sample */
} SfRtt;

void sf_rtt_init(SfRtt *r, int64_t initial_rto_us, int64_t min_rto_us,
                 int64_t max_rto_us);
/* A measured round trip (ignore those of re-sent requests: Karn). */
void sf_rtt_sample(SfRtt *r, int64_t rtt_us);
/* A timeout expired: the next timeout doubles (bounded). */
void sf_rtt_backoff(SfRtt *r);
/* How long to wait for an answer before asking again. */
int64_t sf_rtt_rto_us(const SfRtt *r);

#endif
