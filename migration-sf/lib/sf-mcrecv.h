/*
 * snowflock multicast receiver: a clone's input from its fork's group.
 * Every datagram is opened (sf-seal.h: only the fork's page server can
 * have sealed it), its message checked against the wire table and the
 * clone's RAM layout, a page's fragments put back together
 * (sf-reasm.h), and each whole page the clone does not have yet handed
 * to the caller to place.  Pages that arrive already present are
 * counted and dropped.  The sender's message counter, which every
 * sealed datagram carries, gives the loss and the receive rate the
 * clone reports to the server's pacer.  Not thread-safe.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SF_MCRECV_H
#define SF_MCRECV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sf-seal.h"

typedef struct SfMcrecvStats {
    uint64_t datagrams; /* received, before any check */
    uint64_t bytes;
    uint64_t data_pages;  /* whole pages handed over */
    uint64_t zero_pages;  /* ZERO pages handed over */
    uint64_t redundant;   /* pages that were present already */
    uint64_t malformed;   /* opened, but not a page of this clone's RAM */
    uint64_t auth_failed; /* did not authenticate: forged or damaged */
    uint64_t replayed;
    uint64_t other;           /* another fork's, or not sealed at all */
    uint64_t partial_dropped; /* pages whose fragments never all came */
    uint64_t lost;            /* sender counters never seen */
    uint32_t rx_kbps;         /* the last interval's */
    uint32_t loss_ppm;
} SfMcrecvStats;

/* Whether the clone has (block, page) already. */
typedef bool (*SfMcrecvHave)(void *opaque, uint32_t block, uint64_t page);
/* Place one page: data, or NULL for a page the server read as zero. */
typedef void (*SfMcrecvPlace)(void *opaque, uint32_t block, uint64_t page,
                              const uint8_t *data);

typedef struct SfMcrecv SfMcrecv;

SfMcrecv *sf_mcrecv_new(const SfSealKeys *k, uint32_t nblocks,
                        const uint64_t *npages, SfMcrecvHave have,
                        SfMcrecvPlace place, void *opaque, int64_t now_us);
void sf_mcrecv_free(SfMcrecv *r);
/* One datagram (opened in place). */
void sf_mcrecv_input(SfMcrecv *r, uint8_t *dgram, size_t len, int64_t now_us);
/* Read and take up to max datagrams waiting on fd (non-blocking):
 * how many, or -errno. */
int sf_mcrecv_drain(SfMcrecv *r, int fd, unsigned max, int64_t now_us);
/* Rates over the last interval, for REQUEST's rx_kbps and loss_ppm. */
void sf_mcrecv_rates(SfMcrecv *r, int64_t now_us, uint32_t *rx_kbps,
                     uint32_t *loss_ppm);
void sf_mcrecv_stats(const SfMcrecv *r, SfMcrecvStats *st);

#endif
