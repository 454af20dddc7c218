/*
 * snowflock multicast pacing (see sf-pacer.h).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "sf-pacer.h"

void sf_pacer_init(SfPacer *p, double initial_rate, double min_rate,
                   double max_rate, double burst_bytes, int64_t now_us)
{
    *p = (SfPacer){
        .rate = initial_rate,
        .min_rate = min_rate,
        .max_rate = max_rate,
        .burst = burst_bytes,
        .tokens = burst_bytes,
        .last_us = now_us,
        .last_adjust_us = now_us,
    };
}

/* Whether r's last report shows loss that sending slower may cure. */
static bool excess_loss(const SfPacerReport *r)
{
    uint32_t margin = r->floor_ppm / 4 > SF_PACER_LOSS_PPM ? r->floor_ppm / 4
                                                           : SF_PACER_LOSS_PPM;

    return r->loss_ppm > r->floor_ppm + margin;
}

/* A cut on r's account: count it, and learn a floor from cuts in a row
 * that did not lower its loss. */
static void count_cut(SfPacerReport *r, int64_t now)
{
    if (r->cuts && (uint64_t)r->loss_ppm * 4 > (uint64_t)r->cut_ppm * 3) {
        r->cuts++;
    } else {
        r->cuts = 1;
        r->cut_ppm = r->loss_ppm;
    }
    if (r->cuts >= SF_PACER_FLOOR_CUTS) {
        r->floor_ppm = r->loss_ppm < SF_PACER_FLOOR_MAX_PPM
                           ? r->loss_ppm
                           : SF_PACER_FLOOR_MAX_PPM;
        r->cuts = 0;
    }
    r->cut_us = now;
}

static void adjust(SfPacer *p, int64_t now)
{
    double wsum = 0, wrate = 0;
    bool cut = false, held = false;

    if (now - p->last_adjust_us < SF_PACER_ADJUST_US) {
        return;
    }
    p->last_adjust_us = now;
    for (int i = 0; i < SF_PACER_MAX_RX; i++) {
        SfPacerReport *r = &p->rep[i];
        double w;

        if (!r->receiver || now - r->at_us > SF_PACER_REPORT_AGE_US) {
            continue;
        }
        w = 1.0 + r->loss_ppm / 1000.0;
        wsum += w;
        wrate += w * r->rx_rate;
        if (!excess_loss(r)) {
            continue;
        }
        if (r->at_us > r->cut_us + SF_PACER_SETTLE_US) {
            count_cut(r, now);
            cut = true;
        } else {
            held = true; /* not heard from since its cut: wait */
        }
    }
    if (wsum == 0) {
        return; /* nobody reports: keep the rate */
    }
    if (cut) {
        p->rate *= 0.8;
    } else if (!held) {
        p->rate *= 1.1;
        if (p->limited && wrate > 0 && p->rate > 1.5 * wrate / wsum) {
            p->rate = 1.5 * wrate / wsum;
        }
    }
    p->rate = p->rate < p->min_rate   ? p->min_rate
              : p->rate > p->max_rate ? p->max_rate
                                      : p->rate;
    p->limited = false;
}

int64_t sf_pacer_delay_us(SfPacer *p, size_t bytes, int64_t now_us)
{
    adjust(p, now_us);
    if (now_us > p->last_us) {
        p->tokens += (now_us - p->last_us) * p->rate / 1e6;
        if (p->tokens > p->burst) {
            p->tokens = p->burst;
        }
        p->last_us = now_us;
    }
    if (p->tokens >= (double)bytes || p->tokens >= p->burst) {
        p->tokens -= bytes;
        return 0;
    }
    p->limited = true;
    p->waits++;
    return (int64_t)(((double)bytes - p->tokens) * 1e6 / p->rate) + 1;
}

void sf_pacer_report(SfPacer *p, uint32_t receiver, double rx_rate,
                     uint32_t loss_ppm, int64_t now_us)
{
    SfPacerReport *r;
    int slot = -1;

    if (!receiver) {
        return;
    }
    for (int i = 0; i < SF_PACER_MAX_RX; i++) {
        if (p->rep[i].receiver == receiver) {
            slot = i;
            break;
        }
        if (slot < 0 && (!p->rep[i].receiver ||
                         now_us - p->rep[i].at_us > SF_PACER_REPORT_AGE_US)) {
            slot = i;
        }
    }
    if (slot < 0) {
        return; /* more active receivers than slots: the rest count too */
    }
    if (p->rep[slot].receiver != receiver) {
        p->rep[slot] = (SfPacerReport){ .receiver = receiver };
    }
    r = &p->rep[slot];
    r->rx_rate = rx_rate;
    r->loss_ppm = loss_ppm;
    r->at_us = now_us;
    /* The floor follows lower loss down, slowly: one report is noisy. */
    if (loss_ppm < r->floor_ppm) {
        r->floor_ppm -= (r->floor_ppm - loss_ppm) / 8;
    }
}
