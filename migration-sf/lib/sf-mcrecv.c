/*
 * snowflock multicast receiver (see sf-mcrecv.h).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <glib.h>
#include <string.h>
#include <sys/socket.h>

#include "sf-mcast.h"
#include "sf-mcrecv.h"
#include "sf-reasm.h"
#include "sf-wire.h"

/* Pages waiting for fragments: a few batches' worth. */
#define MAX_PARTIAL 256
/* Rates are measured over at least this long. */
#define RATE_INTERVAL_US 100000
#define DRAIN_BATCH      32
/* Where a sealed datagram keeps its session salt and counter. */
#define SALT_AT    16
#define COUNTER_AT 32

struct SfMcrecv {
    SfSealReceiver *rx;
    SfReasm *reasm;
    uint64_t fork_id;
    uint32_t nblocks;
    uint64_t *npages;
    SfMcrecvHave have;
    SfMcrecvPlace place;
    void *opaque;
    SfMcrecvStats st;
    /* Loss: counters of the sender's session, per interval. */
    uint8_t salt[SF_SEAL_SALT_SIZE];
    bool have_salt;
    uint64_t base, high, got, bytes;
    int64_t t0;
    /* recvmmsg buffers. */
    uint8_t (*buf)[SF_MCAST_MAX_DGRAM];
};

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

SfMcrecv *sf_mcrecv_new(const SfSealKeys *k, uint32_t nblocks,
                        const uint64_t *npages, SfMcrecvHave have,
                        SfMcrecvPlace place, void *opaque, int64_t now_us)
{
    SfMcrecv *r = g_new0(SfMcrecv, 1);

    /* One page server sends to the group: one session, and room for a
     * second should it ever be restarted. */
    r->rx = sf_seal_receiver_new(k, SF_SEAL_PAGES, 2);
    r->reasm = sf_reasm_new(MAX_PARTIAL);
    r->fork_id = k->fork_id;
    r->nblocks = nblocks;
    r->npages = g_memdup2(npages, sizeof(uint64_t) * MAX(nblocks, 1));
    r->have = have;
    r->place = place;
    r->opaque = opaque;
    r->t0 = now_us;
    r->buf = g_malloc(sizeof(*r->buf) * DRAIN_BATCH);
    return r;
}

void sf_mcrecv_free(SfMcrecv *r)
{
    if (!r) {
        return;
    }
    sf_seal_receiver_free(r->rx);
    sf_reasm_free(r->reasm);
    g_free(r->npages);
    g_free(r->buf);
    g_free(r);
}

/* Count the sender's counter: a gap is loss (or, briefly, reordering). */
static void count(SfMcrecv *r, const uint8_t *dgram)
{
    uint64_t c = be64(dgram + COUNTER_AT);

    if (!r->have_salt || memcmp(r->salt, dgram + SALT_AT, sizeof(r->salt))) {
        memcpy(r->salt, dgram + SALT_AT, sizeof(r->salt));
        r->have_salt = true;
        r->base = c; /* a new sender: what came before is not ours */
        r->high = c;
        r->got = 0;
        return;
    }
    if (c > r->high) {
        r->high = c;
    }
    if (c > r->base) {
        r->got++;
    }
}

static bool in_ram(const SfMcrecv *r, uint32_t block, uint64_t offset,
                   uint64_t npages)
{
    uint64_t page = offset / SF_WIRE_PAGE_SIZE;

    return block < r->nblocks && offset % SF_WIRE_PAGE_SIZE == 0 &&
           page < r->npages[block] && npages <= r->npages[block] - page;
}

static void take_zero(SfMcrecv *r, const uint8_t *body, size_t len)
{
    SfMsgPages m;
    const char *why;

    if (sf_wire_pages_decode(SF_MSG_ZERO, body, len, &m, &why) < 0 ||
        !in_ram(r, m.block, m.offset, m.npages)) {
        r->st.malformed++;
        return;
    }
    for (uint64_t p = m.offset / SF_WIRE_PAGE_SIZE, n = 0; n < m.npages;
         n++, p++) {
        if (r->have(r->opaque, m.block, p)) {
            r->st.redundant++;
            continue;
        }
        sf_reasm_forget(r->reasm, m.block, p);
        r->place(r->opaque, m.block, p, NULL);
        r->st.zero_pages++;
    }
}

static void take_frag(SfMcrecv *r, const uint8_t *body, size_t len)
{
    const uint8_t *page_data;
    SfMsgFrag f;
    const char *why;
    uint64_t page;

    if (sf_wire_frag_decode(body, len, &f, &why) < 0 ||
        !in_ram(r, f.block, f.offset, 1)) {
        r->st.malformed++;
        return;
    }
    page = f.offset / SF_WIRE_PAGE_SIZE;
    if (r->have(r->opaque, f.block, page)) {
        /* Counted once per page, at its first fragment. */
        if (f.index == 0) {
            r->st.redundant++;
        }
        sf_reasm_forget(r->reasm, f.block, page);
        return;
    }
    switch (sf_reasm_add(r->reasm, f.block, page, f.index, f.count,
                         body + SF_WIRE_FRAG_LEN, len - SF_WIRE_FRAG_LEN,
                         &page_data)) {
    case SF_REASM_COMPLETE:
        r->place(r->opaque, f.block, page, page_data);
        r->st.data_pages++;
        break;
    case SF_REASM_BAD:
        r->st.malformed++;
        break;
    case SF_REASM_MORE:
    case SF_REASM_DUP:
        break;
    }
}

void sf_mcrecv_input(SfMcrecv *r, uint8_t *dgram, size_t len, int64_t now_us)
{
    SfWireHdr hdr;
    uint8_t *plain;
    size_t plen;
    const char *why;

    r->st.datagrams++;
    r->st.bytes += len;
    r->bytes += len;
    switch (sf_seal_open(r->rx, dgram, len, &plain, &plen)) {
    case SF_OPEN_OK:
        break;
    case SF_OPEN_AUTH:
        r->st.auth_failed++;
        return;
    case SF_OPEN_REPLAY:
        r->st.replayed++;
        return;
    default:
        r->st.other++;
        return;
    }
    count(r, dgram);
    if (plen < SF_WIRE_HDR_SIZE || sf_wire_hdr_decode(plain, &hdr, &why) < 0 ||
        hdr.length != plen - SF_WIRE_HDR_SIZE || hdr.fork_id != r->fork_id ||
        hdr.clone_id != 0) {
        r->st.malformed++;
        return;
    }
    if (hdr.type == SF_MSG_ZERO) {
        take_zero(r, plain + SF_WIRE_HDR_SIZE, hdr.length);
    } else if (hdr.type == SF_MSG_FRAG) {
        take_frag(r, plain + SF_WIRE_HDR_SIZE, hdr.length);
    } else {
        r->st.malformed++;
    }
}

int sf_mcrecv_drain(SfMcrecv *r, int fd, unsigned max, int64_t now_us)
{
    struct mmsghdr msgs[DRAIN_BATCH];
    struct iovec iov[DRAIN_BATCH];
    unsigned total = 0;

    while (total < max) {
        unsigned want = MIN(max - total, DRAIN_BATCH);
        int n;

        memset(msgs, 0, sizeof(msgs[0]) * want);
        for (unsigned i = 0; i < want; i++) {
            iov[i].iov_base = r->buf[i];
            iov[i].iov_len = sizeof(r->buf[i]);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        n = recvmmsg(fd, msgs, want, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                break;
            }
            return total ? (int)total : -errno;
        }
        for (int i = 0; i < n; i++) {
            /* A datagram larger than any we send was cut: not ours. */
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
                r->st.datagrams++;
                r->st.other++;
                continue;
            }
            sf_mcrecv_input(r, r->buf[i], msgs[i].msg_len, now_us);
        }
        total += n;
        if ((unsigned)n < want) {
            break;
        }
    }
    return total;
}

void sf_mcrecv_rates(SfMcrecv *r, int64_t now_us, uint32_t *rx_kbps,
                     uint32_t *loss_ppm)
{
    int64_t dt = now_us - r->t0;

    if (dt >= RATE_INTERVAL_US) {
        uint64_t expected = r->high - r->base;
        uint64_t got = MIN(r->got, expected);

        r->st.rx_kbps =
            (uint32_t)MIN(r->bytes * 1000000 / dt / 1024, (uint64_t)UINT32_MAX);
        r->st.loss_ppm =
            expected ? (uint32_t)((expected - got) * 1000000 / expected) : 0;
        r->st.lost += expected - got;
        r->base = r->high;
        r->got = 0;
        r->bytes = 0;
        r->t0 = now_us;
    }
    *rx_kbps = r->st.rx_kbps;
    *loss_ppm = r->st.loss_ppm;
}

void sf_mcrecv_stats(const SfMcrecv *r, SfMcrecvStats *st)
{
    SfReasmStats rs;

    *st = r->st;
    sf_reasm_stats(r->reasm, &rs);
    st->partial_dropped = rs.dropped_partial;
}
