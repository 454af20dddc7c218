/*
 * snowflock multicast pacing.  A multicast page server must not send
 * faster than its slowest active receivers can take, or every clone
 * pays for the loss with re-requests.  Receivers report (piggybacked on
 * their requests) the rate at which they received and the share they
 * lost; the pacer turns that into the server's send rate, as SnowFlock's
 * mcdist did: the rate goes down by a fifth when an active receiver
 * reports loss above SF_PACER_LOSS_PPM, grows by a tenth otherwise, and
 * while the pacer was what limited sending it is capped at 1.5 x the
 * weighted average of the receivers' rates (a lossy receiver weighs
 * more).  Sending is a token bucket at that rate.  Pure: times are
 * passed in (microseconds), rates are bytes per second.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SF_PACER_H
#define SF_PACER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SF_PACER_MAX_RX        64
#define SF_PACER_LOSS_PPM      10000   /* 1 %: above, slow down */
#define SF_PACER_ADJUST_US     50000   /* rate decided at most this often */
#define SF_PACER_REPORT_AGE_US 1000000 /* a receiver is active this long */

typedef struct SfPacerReport {
    uint32_t receiver; /* 0: slot unused */
    double rx_rate;
    uint32_t loss_ppm;
    int64_t at_us;
} SfPacerReport;

typedef struct SfPacer {
    double rate, min_rate, max_rate;
    double tokens, burst;
    int64_t last_us, last_adjust_us;
    bool limited; /* a send had to wait since the last adjustment */
    SfPacerReport rep[SF_PACER_MAX_RX];
    uint64_t waits; /* sends that had to wait */
} SfPacer;

void sf_pacer_init(SfPacer *p, double initial_rate, double min_rate,
                   double max_rate, double burst_bytes, int64_t now_us);
/* 0: send bytes now (the tokens are taken); else wait that long. */
int64_t sf_pacer_delay_us(SfPacer *p, size_t bytes, int64_t now_us);
/* A receiver's report: rx_rate bytes/s received, loss_ppm lost. */
void sf_pacer_report(SfPacer *p, uint32_t receiver, double rx_rate,
                     uint32_t loss_ppm, int64_t now_us);

#endif
