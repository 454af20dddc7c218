/*
 * snowflock multicast pacing.  A multicast page server must not send
 * faster than its slowest active receivers can take, or every clone
 * pays for the loss with re-requests.  Receivers report (piggybacked on
 * their requests) the rate at which they received and the share they
 * lost; the pacer turns that into the server's send rate, as SnowFlock's
 * mcdist did: the rate goes down by a fifth when an active receiver
 * reports loss above its floor (below), grows by a tenth otherwise, and
 * while the pacer was what limited sending it is capped at 1.5 x the
 * weighted average of the receivers' rates (a lossy receiver weighs
 * more).  Sending is a token bucket at that rate.
 *
 * Only loss that sending slower cures is a reason to send slower: a
 * receiver behind a link that drops a share of all it carries (a bad
 * cable, a wireless hop, nftables in the tests) loses as much at any
 * rate, and would otherwise drag the group down to min_rate for every
 * clone.  So each receiver has a loss floor, 0 at first.  A cut counts
 * against a receiver only on a report made after the previous cut (a
 * report is one receiver's view of one moment: it does not cut twice,
 * and shows a cut only SF_PACER_SETTLE_US after it); when
 * SF_PACER_FLOOR_CUTS cuts in a row left its loss where it was
 * (above 3/4 of it), that loss is its floor, and only loss above the
 * floor by SF_PACER_LOSS_PPM (or a quarter of the floor) cuts again.
 * The floor follows lower loss down, and is at most 30 %: a receiver
 * losing more than that holds the group back (and gets what it lost
 * unicast, sf-fetch.h).  Pure: times are
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
#define SF_PACER_LOSS_PPM      10000   /* 1 % above the floor: slow down */
#define SF_PACER_FLOOR_CUTS    3       /* cuts without effect: a floor */
#define SF_PACER_FLOOR_MAX_PPM 300000  /* more is never taken as given */
/* A receiver measures over 100 ms (sf-mcrecv.c): its reports show a cut
 * this long after it. */
#define SF_PACER_SETTLE_US     150000
#define SF_PACER_ADJUST_US     50000   /* rate decided at most this often */
#define SF_PACER_REPORT_AGE_US 1000000 /* a receiver is active this long */

typedef struct SfPacerReport {
    uint32_t receiver; /* 0: slot unused */
    double rx_rate;
    uint32_t loss_ppm;
    int64_t at_us;
    /* Loss that does not depend on the rate (see above). */
    uint32_t floor_ppm;
    uint32_t cut_ppm; /* its loss at the first of the cuts in a row */
    uint32_t cuts;    /* cuts in a row its loss did not answer */
    int64_t cut_us;   /* the last cut on its account */
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
