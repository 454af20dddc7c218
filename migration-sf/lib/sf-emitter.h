/*
 * snowflock multicast emitter: the page server's output to a fork's
 * group.  Pages asked for by any clone are queued (demand before push),
 * sent once for every clone as sealed datagrams (a zero run as one
 * ZERO, a data page as FRAG fragments), paced to what the receivers
 * report they take (sf-pacer.h), batched with sendmmsg, and a request
 * for a page sent within the last round-trip window is suppressed
 * (sf-recent.h): its asker had not received it yet when it asked.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SF_EMITTER_H
#define SF_EMITTER_H

#include <stdbool.h>
#include <stdint.h>

#include "sf-seal.h"

typedef struct SfEmitterStats {
    uint64_t data_pages; /* pages sent with their data */
    uint64_t zero_pages; /* pages sent as ZERO */
    uint64_t datagrams;
    uint64_t bytes;      /* UDP payload bytes */
    uint64_t suppressed; /* pages asked for within the window */
    uint64_t queued;     /* waiting to go now */
    uint64_t pacer_waits;
    uint64_t dropped; /* datagrams a local firewall refused */
    double rate;      /* bytes per second the pacer allows */
    int64_t window_us;
} SfEmitterStats;

/* A page of the image: its bytes, or NULL with *zero (or an error:
 * NULL, *zero false; the page is then not sent). */
typedef const uint8_t *(*SfEmitterRead)(void *opaque, uint32_t block,
                                        uint64_t page, bool *zero);

typedef struct SfEmitter SfEmitter;

/* fd: a connected multicast sender (sf-mcast.h); keys: the fork's. */
SfEmitter *sf_emitter_new(int fd, unsigned frag_count, const SfSealKeys *k,
                          uint32_t nblocks, const uint64_t *npages,
                          SfEmitterRead read, void *opaque, int64_t now_us);
void sf_emitter_free(SfEmitter *e);
/* Queue [page, page + npages) of block (flags SF_REQ_*): returns how
 * many were queued, the others suppressed or queued already. */
uint32_t sf_emitter_queue(SfEmitter *e, uint32_t block, uint64_t page,
                          uint32_t npages, uint32_t flags, int64_t now_us);
/* Push pages waiting: a server stops taking push requests while many
 * are (demand is always taken). */
uint64_t sf_emitter_push_backlog(const SfEmitter *e);
/* The suppression window: the receivers' measured round trip. */
void sf_emitter_set_window(SfEmitter *e, int64_t window_us);
void sf_emitter_report(SfEmitter *e, uint32_t receiver, uint32_t rx_kbps,
                       uint32_t loss_ppm, int64_t now_us);
/* Send what the pacer allows now: the time to call again (INT64_MAX:
 * nothing waits), or -errno when the socket failed. */
int64_t sf_emitter_pump(SfEmitter *e, int64_t now_us);
void sf_emitter_stats(const SfEmitter *e, SfEmitterStats *st);

#endif
