/*
 * snowflock page server: what each client message does (HELLO, REQUEST,
 * DESC_GET, DONE), and serving queued requests, on the clone's own
 * connection or to the fork's multicast group.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sf-pageserver-int.h"

/* A descriptor-only connection must be done this soon. */
#define SF_PS_DESC_TIMEOUT_MS 60000
/* Push pages waiting for the group above which push requests wait. */
#define SF_PS_PUSH_BACKLOG 4096

/* The descriptor's size, or 0 when there is none (yet). */
static size_t desc_size(SfPageServer *s)
{
    struct stat st;

    if (s->desc) {
        return s->desc_len;
    }
    if (!s->cfg->descriptor_path || stat(s->cfg->descriptor_path, &st) < 0) {
        return 0;
    }
    return st.st_size;
}

/* Read the descriptor once, with plain syscalls (see sf-pageserver.c). */
static bool desc_load(SfPageServer *s)
{
    struct stat st;
    size_t off = 0;
    int fd;

    if (s->desc) {
        return true;
    }
    if (!s->cfg->descriptor_path) {
        return false;
    }
    fd = open(s->cfg->descriptor_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0 || st.st_size <= 0 ||
        st.st_size > 512 * 1024 * 1024) {
        if (fd >= 0) {
            close(fd);
        }
        return false;
    }
    s->desc = g_malloc(st.st_size);
    while (off < (size_t)st.st_size) {
        ssize_t n = read(fd, s->desc + off, st.st_size - off);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            close(fd);
            g_free(s->desc);
            s->desc = NULL;
            return false;
        }
        off += n;
    }
    close(fd);
    s->desc_len = off;
    return true;
}

static void handle_hello(SfPageServer *s, SfPsConn *pc, const SfWireHdr *hdr,
                         const uint8_t *body)
{
    SfMsgHello hello;
    SfMsgWelcome welcome = { 0 };
    uint8_t out[SF_WIRE_WELCOME_LEN];
    const char *why;
    SfPsClone *c;

    if (pc->clone_id) {
        sf_ps_conn_fail(s, pc, SF_WERR_PROTO, "HELLO sent twice");
        return;
    }
    if (sf_wire_hello_decode(body, hdr->length, &hello, &why) < 0) {
        sf_ps_conn_fail(s, pc, SF_WERR_PROTO, why);
        return;
    }
    /* Both checked before anything else is revealed. */
    if (!sf_wire_secret_equal(hello.secret, s->cfg->secret) ||
        hdr->fork_id != s->cfg->fork_id) {
        sf_ps_conn_fail(s, pc, SF_WERR_AUTH, "bad secret or fork id");
        return;
    }
    if (hdr->clone_id == 0) {
        sf_ps_conn_fail(s, pc, SF_WERR_PROTO, "clone id 0 is not a clone");
        return;
    }
    if (hdr->clone_id > s->cfg->max_clones) {
        sf_ps_conn_fail(s, pc, SF_WERR_BUSY, "clone id above max_clones");
        return;
    }
    c = &s->clones[hdr->clone_id - 1];
    welcome.nblocks = sf_image_source(s->image)->nblocks;
    welcome.page_size = SF_WIRE_PAGE_SIZE;
    welcome.total_pages = s->total_pages;
    welcome.desc_len = desc_size(s);
    if (sf_ps_mcast_on(s)) {
        welcome.mcast_group = s->cfg->mcast_group;
        welcome.mcast_port = s->cfg->mcast_port;
        welcome.frag_count = s->frags;
    }
    sf_wire_welcome_encode(out, &welcome);
    if (hello.flags & SF_HELLO_DESC_ONLY) {
        /* Not the clone's own connection: its state does not change. */
        pc->clone_id = hdr->clone_id;
        pc->desc_only = true;
        pc->hello_deadline = sf_ps_now_ms() + SF_PS_DESC_TIMEOUT_MS;
        sf_ps_conn_send(s, pc, SF_MSG_WELCOME, out, sizeof(out), NULL, 0);
        return;
    }
    if (c->conn) {
        sf_ps_conn_fail(s, pc, SF_WERR_BUSY, "clone id already connected");
        return;
    }
    if (c->st.state == SF_CLONE_DONE) {
        sf_ps_conn_fail(s, pc, SF_WERR_PROTO, "clone already sent DONE");
        return;
    }
    /*
     * An ENDED clone is let back in: "ended" only means the server stopped
     * waiting for it, and serving it while the image is still here is
     * better than leaving it without memory.
     */
    pc->clone_id = hdr->clone_id;
    pc->ws_push = hello.flags & SF_HELLO_WORKSET;
    /* A clone on a Unix socket or loopback cannot be in the group. */
    pc->ws_unicast = (hello.flags & SF_HELLO_UNICAST) || !s->sealed ||
                     g_str_has_prefix(pc->conn->peer, "tcp:127.");
    pc->ws_cursor = 0;
    /*
     * Over the group, what is noted from now on was answered on the group
     * while this clone was in it: only what came before is pushed, once
     * (other clones joining at the same time share those pushes too).
     */
    pc->ws_end = sf_ps_mcast_on(s) && !pc->ws_unicast
                     ? sf_workset_len(s->workset)
                     : UINT64_MAX;
    s->npending--;
    s->nbound++;
    c->conn = pc;
    c->st.connects++;
    sf_ps_log(s, "clone %u connected from %s (connect #%u)", pc->clone_id,
              pc->conn->peer, c->st.connects);
    sf_ps_clone_set_state(s, c, SF_CLONE_CONNECTED);
    if (sf_ps_conn_send(s, pc, SF_MSG_WELCOME, out, sizeof(out), NULL, 0)) {
        return;
    }
    /* Before any answer: the clone fills these itself from now on. */
    for (guint i = 0; i < s->zeromap->bodies->len; i++) {
        GBytes *b = g_ptr_array_index(s->zeromap->bodies, i);
        gsize len;
        const void *map = g_bytes_get_data(b, &len);

        if (sf_ps_conn_send(s, pc, SF_MSG_ZEROMAP, map, len, NULL, 0)) {
            return;
        }
    }
}

static void dequeue(SfPsConn *pc, unsigned i)
{
    memmove(&pc->queue[i], &pc->queue[i + 1],
            (pc->queued - i - 1) * sizeof(pc->queue[0]));
    pc->queued--;
}

/*
 * A push request for the group is advisory: the clone tracks it with a
 * deadline and asks again for what does not come (sf-fetch.h, lossy).
 * So a full queue of them does not stop the connection being read: the
 * oldest goes, and a demand request waiting behind it in the stream is
 * read and served first.  (Over a paced group, a clone's push requests
 * can wait longer than their deadlines, and the ones it asks again pile
 * up behind them.)  Anything else is answered, in order.
 */
static int oldest_group_push(const SfPageServer *s, const SfPsConn *pc)
{
    if (!sf_ps_mcast_on(s)) {
        return -1;
    }
    for (unsigned k = 0; k < pc->queued; k++) {
        uint32_t fl = pc->queue[k].flags;

        if ((fl & SF_REQ_PREFETCH) &&
            !(fl & (SF_REQ_UNICAST | SF_REQ_DEMAND))) {
            return (int)k;
        }
    }
    return -1;
}

bool sf_ps_queue_room(const SfPageServer *s, const SfPsConn *pc)
{
    return pc->queued < SF_PS_QUEUE || oldest_group_push(s, pc) >= 0;
}

static void handle_request(SfPageServer *s, SfPsConn *pc, const SfWireHdr *hdr,
                           const uint8_t *body)
{
    SfPsClone *c = &s->clones[pc->clone_id - 1];
    SfMsgRequest req;
    const char *why;

    if (sf_wire_request_decode(body, hdr->length, &req, &why) < 0) {
        sf_ps_conn_fail(s, pc, SF_WERR_PROTO, why);
        return;
    }
    if (!sf_wire_secret_equal(req.secret, s->cfg->secret)) {
        sf_ps_conn_fail(s, pc, SF_WERR_AUTH, "bad secret");
        return;
    }
    if (c->st.state == SF_CLONE_DONE) {
        sf_ps_conn_fail(s, pc, SF_WERR_PROTO, "REQUEST after DONE");
        return;
    }
    if (sf_pagesrc_check_range(sf_image_source(s->image), req.block, req.offset,
                               req.npages, &why) < 0) {
        sf_ps_conn_fail(s, pc, SF_WERR_RANGE, why);
        return;
    }
    if (sf_ps_mcast_on(s) && (req.rx_kbps || req.loss_ppm)) {
        sf_emitter_report(s->emitter, pc->clone_id, req.rx_kbps, req.loss_ppm,
                          g_get_monotonic_time());
    }
    c->st.requests++;
    s->stats_dirty = true;
    if (req.flags & SF_REQ_DEMAND) {
        sf_workset_note(s->workset, pc->clone_id, req.block,
                        req.offset / SF_WIRE_PAGE_SIZE, req.npages);
    }
    if (pc->queued == SF_PS_QUEUE) {
        /* conn_readable() reads on only when there is one to drop. */
        int k = oldest_group_push(s, pc);

        g_assert(k >= 0);
        dequeue(pc, k);
        c->st.pushes_dropped++;
    }
    pc->queue[pc->queued++] = req;
}

static void handle_desc_get(SfPageServer *s, SfPsConn *pc, const SfWireHdr *hdr,
                            const uint8_t *body)
{
    uint8_t fixed[SF_WIRE_DESC_LEN];
    SfMsgDescGet g;
    SfMsgDesc d;
    const char *why;
    size_t n;

    if (sf_wire_desc_get_decode(body, hdr->length, &g, &why) < 0) {
        sf_ps_conn_fail(s, pc, SF_WERR_PROTO, why);
        return;
    }
    if (!sf_wire_secret_equal(g.secret, s->cfg->secret)) {
        sf_ps_conn_fail(s, pc, SF_WERR_AUTH, "bad secret");
        return;
    }
    if (!desc_load(s)) {
        /* The parent writes it just after the fork: ask again shortly. */
        sf_ps_conn_fail(s, pc, SF_WERR_BUSY, "no descriptor (yet)");
        return;
    }
    if (g.offset > s->desc_len) {
        sf_ps_conn_fail(s, pc, SF_WERR_RANGE, "offset beyond the descriptor");
        return;
    }
    n = MIN(s->desc_len - g.offset, SF_WIRE_DESC_CHUNK);
    d.offset = g.offset;
    d.total = s->desc_len;
    sf_wire_desc_encode(fixed, &d);
    sf_ps_conn_send(s, pc, SF_MSG_DESC, fixed, sizeof(fixed),
                    s->desc + g.offset, n);
}

static void handle_done(SfPageServer *s, SfPsConn *pc, const SfWireHdr *hdr,
                        const uint8_t *body)
{
    SfPsClone *c = &s->clones[pc->clone_id - 1];
    SfMsgDone done;
    const char *why;

    if (sf_wire_done_decode(body, hdr->length, &done, &why) < 0) {
        sf_ps_conn_fail(s, pc, SF_WERR_PROTO, why);
        return;
    }
    if (!sf_wire_secret_equal(done.secret, s->cfg->secret)) {
        sf_ps_conn_fail(s, pc, SF_WERR_AUTH, "bad secret");
        return;
    }
    if (c->st.state != SF_CLONE_DONE) {
        sf_ps_log(s,
                  "clone %u done (%" PRIu64 " requests, %" PRIu64
                  " pages sent, %" PRIu64 " zero)",
                  pc->clone_id, c->st.requests, c->st.pages_sent,
                  c->st.zero_pages);
        sf_ps_clone_set_state(s, c, SF_CLONE_DONE);
    }
}

void sf_ps_dispatch(SfPageServer *s, SfPsConn *pc, const SfWireHdr *hdr,
                    const uint8_t *body)
{
    if (!sf_wire_msg_table[hdr->type].from_client) {
        sf_ps_conn_fail(s, pc, SF_WERR_PROTO,
                        "server message sent by a client");
        return;
    }
    if (hdr->type == SF_MSG_HELLO) {
        handle_hello(s, pc, hdr, body);
        return;
    }
    if (!pc->clone_id) {
        sf_ps_conn_fail(s, pc, SF_WERR_PROTO, "expected HELLO first");
        return;
    }
    if (hdr->fork_id != s->cfg->fork_id) {
        sf_ps_conn_fail(s, pc, SF_WERR_AUTH, "wrong fork id");
        return;
    }
    if (hdr->clone_id != pc->clone_id) {
        sf_ps_conn_fail(s, pc, SF_WERR_PROTO, "clone id changed after HELLO");
        return;
    }
    if (pc->desc_only && hdr->type != SF_MSG_DESC_GET) {
        sf_ps_conn_fail(s, pc, SF_WERR_PROTO,
                        "a descriptor connection only asks for it");
        return;
    }
    switch (hdr->type) {
    case SF_MSG_REQUEST:
        handle_request(s, pc, hdr, body);
        break;
    case SF_MSG_DESC_GET:
        handle_desc_get(s, pc, hdr, body);
        break;
    case SF_MSG_DONE:
        handle_done(s, pc, hdr, body);
        break;
    default:
        sf_ps_conn_fail(s, pc, SF_WERR_PROTO, "unexpected message");
        break;
    }
}

const uint8_t *sf_ps_read_page(void *opaque, uint32_t block, uint64_t page,
                               bool *zero)
{
    SfPageServer *s = opaque;

    return sf_image_page(s->image, block, page, zero);
}

/* Answer one validated request with ZERO and DATA runs on its conn. */
static void serve_unicast(SfPageServer *s, SfPsConn *pc, const SfMsgRequest *r)
{
    SfPsClone *c = &s->clones[pc->clone_id - 1];
    bool zero[SF_WIRE_MAX_PAGES];
    const uint8_t *data;
    uint32_t i, j;

    data = sf_image_read(s->image, r->block, r->offset, r->npages, zero);
    if (!data) {
        sf_ps_log(s, "clone %u: cannot read block %u offset 0x%" PRIx64,
                  pc->clone_id, r->block, r->offset);
        sf_ps_conn_fail(s, pc, SF_WERR_INTERNAL, "cannot read image");
        return;
    }
    /*
     * Maximal runs in address order: zero runs cost a 20-byte ZERO, data
     * runs go out straight from the image (sendmsg gathers header, fixed
     * part and the pages: no copy, unless the connection is sealed).
     */
    for (i = 0; i < r->npages; i = j) {
        SfMsgPages pm;
        uint8_t fixed[SF_WIRE_PAGES_LEN];

        for (j = i + 1; j < r->npages && zero[j] == zero[i]; j++) {
            /* extend the run */
        }
        pm.block = r->block;
        pm.npages = j - i;
        pm.offset = r->offset + (uint64_t)i * SF_WIRE_PAGE_SIZE;
        pm.flags = r->flags & ~SF_REQ_UNICAST;
        sf_wire_pages_encode(fixed, &pm);
        if (zero[i]) {
            if (sf_ps_conn_send(s, pc, SF_MSG_ZERO, fixed, sizeof(fixed), NULL,
                                0) < 0) {
                return;
            }
            c->st.zero_pages += pm.npages;
        } else {
            if (sf_ps_conn_send(s, pc, SF_MSG_DATA, fixed, sizeof(fixed),
                                data + (size_t)i * SF_WIRE_PAGE_SIZE,
                                (size_t)pm.npages * SF_WIRE_PAGE_SIZE) < 0) {
                return;
            }
            c->st.pages_sent += pm.npages;
        }
    }
}

static void serve_request(SfPageServer *s, SfPsConn *pc, const SfMsgRequest *r)
{
    SfPsClone *c = &s->clones[pc->clone_id - 1];

    if (sf_ps_mcast_on(s) && !(r->flags & SF_REQ_UNICAST)) {
        /* Once for every clone: pages go when the pacer lets them. */
        c->st.mcast_requests++;
        sf_emitter_queue(s->emitter, r->block, r->offset / SF_WIRE_PAGE_SIZE,
                         r->npages, r->flags, g_get_monotonic_time());
        s->mcast_next = 0;
        return;
    }
    if (r->flags & SF_REQ_UNICAST) {
        c->st.unicast_requests++;
    }
    serve_unicast(s, pc, r);
}

/*
 * Up to SF_PS_WORKSET_TURN pages of the working set to a clone that asked
 * for it, ahead of its own push requests (its demand was served before):
 * true when more may follow.  Over the group every clone gets them (the
 * others drop what they have).  The cursor is the connection's: a clone
 * that reconnects is offered the working set again and drops what it has.
 */
static bool push_workset(SfPageServer *s, SfPsConn *pc)
{
    SfPsClone *c = &s->clones[pc->clone_id - 1];
    uint32_t left = SF_PS_WORKSET_TURN;

    while (left && !pc->dead) {
        SfMsgRequest req = { .flags = SF_REQ_PREFETCH | SF_REQ_WORKSET };
        uint64_t page;

        if (!sf_workset_next(s->workset, &pc->ws_cursor, pc->ws_end,
                             pc->clone_id, MIN(left, SF_WIRE_MAX_PAGES),
                             &req.block, &page, &req.npages)) {
            return false;
        }
        req.offset = page * SF_WIRE_PAGE_SIZE;
        c->st.workset_pushed += req.npages;
        left -= req.npages;
        /* Not the clone's request: counted apart from its requests. */
        if (sf_ps_mcast_on(s) && !pc->ws_unicast) {
            sf_emitter_queue(s->emitter, req.block, page, req.npages, req.flags,
                             g_get_monotonic_time());
            s->mcast_next = 0;
        } else {
            serve_unicast(s, pc, &req);
        }
    }
    return !pc->dead;
}

/*
 * Demand first, across all clones; then one push chunk per clone (for
 * the group: only while it has not too many push pages waiting, so a
 * paced group does not take every clone's push at once), the working
 * set's before the clone's own.
 */
bool sf_ps_serve_queued(SfPageServer *s)
{
    bool more = false;
    guint i;

    for (i = 0; i < s->conns->len; i++) {
        SfPsConn *pc = g_ptr_array_index(s->conns, i);

        for (unsigned k = 0; k < pc->queued && !pc->dead;) {
            if (pc->queue[k].flags & SF_REQ_DEMAND) {
                SfMsgRequest req = pc->queue[k];

                dequeue(pc, k);
                serve_request(s, pc, &req);
            } else {
                k++;
            }
        }
    }
    for (i = 0; i < s->conns->len; i++) {
        SfPsConn *pc = g_ptr_array_index(s->conns, i);
        bool held = sf_ps_mcast_on(s) && pc->queued &&
                    !(pc->queue[0].flags & SF_REQ_UNICAST) &&
                    sf_emitter_push_backlog(s->emitter) > SF_PS_PUSH_BACKLOG;

        if (pc->ws_push && !pc->dead && !held && !pc->desc_only &&
            (!sf_ps_mcast_on(s) ||
             sf_emitter_push_backlog(s->emitter) <= SF_PS_PUSH_BACKLOG) &&
            push_workset(s, pc)) {
            /* The clone's own push waits until the working set is out. */
            more = true;
            continue;
        }
        if (pc->queued && !pc->dead && !held) {
            SfMsgRequest req = pc->queue[0];

            dequeue(pc, 0);
            serve_request(s, pc, &req);
        }
        /* Held requests wait for the emitter, whose deadline wakes us. */
        if (pc->queued && !pc->dead && !held) {
            more = true;
        }
    }
    return more;
}
