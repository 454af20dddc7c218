/*
 * snowflock page-transfer messages: the one reassembler every receiver uses.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * No I/O, no allocation, no locks: safe in the page server fork()ed from a
 * multi-threaded QEMU and in the clone's fault thread alike.
 */
#include <string.h>

#include "sf-framer.h"

void sf_framer_init(SfFramer *f, uint8_t *body, size_t body_cap)
{
    memset(f, 0, sizeof(*f));
    f->body = body;
    f->body_cap = body_cap;
}

static void start_next(SfFramer *f)
{
    f->ready = false;
    f->have_hdr = false;
    f->got = 0;
}

bool sf_framer_idle(const SfFramer *f)
{
    return f->ready || f->got == 0;
}

/* A whole header is in f->raw: check it before any body byte is asked for. */
static SfFrameResult check_hdr(SfFramer *f, size_t total_len, bool dgram)
{
    const char *why = NULL;
    int ret = sf_wire_hdr_decode(f->raw, &f->hdr, &why);

    if (ret < 0) {
        f->werr = -ret;
        f->why = why;
        return SF_FRAME_BAD;
    }
    if (f->hdr.length > f->body_cap) {
        f->werr = SF_WERR_PROTO;
        f->why = "message too long for this receiver";
        return SF_FRAME_TOO_BIG;
    }
    if (dgram && total_len != SF_WIRE_HDR_SIZE + f->hdr.length) {
        f->werr = SF_WERR_PROTO;
        f->why = "datagram length does not match its header";
        return SF_FRAME_BAD;
    }
    f->have_hdr = true;
    return SF_FRAME_PARTIAL;
}

size_t sf_framer_want(SfFramer *f, uint8_t **dst)
{
    if (f->ready) {
        start_next(f);
    }
    if (!f->have_hdr) {
        *dst = f->raw + f->got;
        return SF_WIRE_HDR_SIZE - f->got;
    }
    *dst = f->body + (f->got - SF_WIRE_HDR_SIZE);
    return SF_WIRE_HDR_SIZE + f->hdr.length - f->got;
}

SfFrameResult sf_framer_advance(SfFramer *f, size_t n)
{
    SfFrameResult r;

    f->got += n;
    if (!f->have_hdr) {
        if (f->got < SF_WIRE_HDR_SIZE) {
            return SF_FRAME_PARTIAL;
        }
        r = check_hdr(f, 0, false);
        if (r != SF_FRAME_PARTIAL) {
            return r;
        }
    }
    if (f->got < SF_WIRE_HDR_SIZE + f->hdr.length) {
        return SF_FRAME_PARTIAL;
    }
    f->ready = true;
    return SF_FRAME_READY;
}

void sf_framer_dgram_iov(SfFramer *f, struct iovec iov[2])
{
    start_next(f);
    iov[0].iov_base = f->raw;
    iov[0].iov_len = SF_WIRE_HDR_SIZE;
    iov[1].iov_base = f->body;
    iov[1].iov_len = f->body_cap;
}

SfFrameResult sf_framer_dgram(SfFramer *f, size_t len)
{
    SfFrameResult r;

    start_next(f);
    if (len < SF_WIRE_HDR_SIZE) {
        f->werr = SF_WERR_PROTO;
        f->why = "datagram shorter than a header";
        return SF_FRAME_BAD;
    }
    r = check_hdr(f, len, true);
    if (r != SF_FRAME_PARTIAL) {
        f->have_hdr = false;
        return r;
    }
    f->got = len;
    f->ready = true;
    return SF_FRAME_READY;
}
