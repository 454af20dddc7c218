/*
 * snowflock page server: serves one fork's frozen image to its clones.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * This normally runs in a child fork()ed from a multi-threaded QEMU, where
 * only this thread exists and any lock another thread held at the fork
 * instant stays held forever.  So it uses plain syscalls and GLib memory
 * functions only (glibc makes malloc safe in the child): no GMainLoop, no
 * GThread primitives, no GLib logging, and no stdio streams, whose locks
 * are among those: log lines go to stderr, but formatted on the stack
 * with snprintf and written to fd 2 in one write() (sf_ps_log()).  Crypto
 * is nettle's, which keeps no global state.
 *
 * One poll() loop.  Each turn reads every whole message the readable
 * connections have (up to a small queue per connection) and then serves:
 * first every DEMAND request of every clone - a vCPU is blocked on those -
 * then at most one PREFETCH request per clone, so a clone's background
 * push never delays another clone's (or its own, queued later) faults by
 * more than one chunk, and a busy clone cannot starve the others.  Input
 * is read non-blocking into a framer per connection (sf-framer.h, the one
 * the clones read with too); replies are written blocking, and
 * SO_SNDTIMEO bounds how long a peer that stopped reading can hold the
 * loop before it is dropped.  With a multicast group the emitter
 * (sf-emitter.h) sends queued pages as far as its pacer allows each turn,
 * and the loop wakes for it when it wants to send more.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "sf-mcast.h"
#include "sf-pageserver-int.h"

#define SF_PS_DEFAULT_GRACE_MS 3000
#define SF_PS_DEFAULT_IDLE_MS  600000
/* A connection must authenticate this soon or it is dropped. */
#define SF_PS_HELLO_TIMEOUT_MS 10000
/* Longest a blocking write to one peer may hold the loop. */
#define SF_PS_IO_TIMEOUT_S 10
/* Connections that have not sent HELLO yet, at most. */
#define SF_PS_MAX_PENDING       64
#define SF_PS_STATS_INTERVAL_MS 1000

/* Send to the fork's group on the caller's socket: false (logged)
 * when its path MTU is too small or no salt could be had. */
static bool mcast_start(SfPageServer *s)
{
    SfPageSource *src = sf_image_source(s->image);
    g_autofree uint64_t *npages = g_new0(uint64_t, MAX(src->nblocks, 1));

    s->mcast_fd = s->cfg->mcast_fd;
    s->frags = sf_mcast_frags_for_mtu(s->cfg->mcast_mtu);
    if (!s->frags) {
        sf_ps_log(s, "no multicast: an MTU of %u is too small",
                  s->cfg->mcast_mtu);
        return false;
    }
    for (uint32_t b = 0; b < src->nblocks; b++) {
        npages[b] = src->blocks[b].length / SF_WIRE_PAGE_SIZE;
    }
    s->emitter =
        sf_emitter_new(s->mcast_fd, s->frags, &s->keys, src->nblocks, npages,
                       sf_ps_read_page, s, g_get_monotonic_time());
    if (!s->emitter) {
        sf_ps_log(s, "no multicast: no random salt");
        return false;
    }
    return true;
}

/* The source's zero bitmaps as the ZEROMAP messages every clone gets. */
static SfZeroMap *zeromap_build(SfPageSource *src)
{
    const uint64_t **bits = g_new0(const uint64_t *, MAX(src->nblocks, 1));
    uint64_t *npages = g_new0(uint64_t, MAX(src->nblocks, 1));
    SfZeroMap *z;

    for (uint32_t i = 0; i < src->nblocks; i++) {
        bits[i] = sf_pagesrc_zero_map(src, i);
        npages[i] = src->blocks[i].length / SF_WIRE_PAGE_SIZE;
    }
    z = sf_zeromap_build(src->nblocks, bits, npages);
    g_free(bits);
    g_free(npages);
    return z;
}

static SfWorkSet *workset_new(SfPageSource *src)
{
    uint64_t *npages = g_new0(uint64_t, MAX(src->nblocks, 1));
    SfWorkSet *ws;

    for (uint32_t i = 0; i < src->nblocks; i++) {
        npages[i] = src->blocks[i].length / SF_WIRE_PAGE_SIZE;
    }
    ws = sf_workset_new(src->nblocks, npages, SF_PS_WORKSET_MAX);
    g_free(npages);
    return ws;
}

SfPageServer *sf_pageserver_new(SfListener *l, SfPageSource *src,
                                const SfPageServerConfig *cfg)
{
    SfPageServer *s = g_new0(SfPageServer, 1);
    uint32_t i;

    s->l = l;
    s->image = sf_image_new(src);
    s->cfg = cfg;
    s->grace_ms = cfg->reconnect_grace_ms ? cfg->reconnect_grace_ms
                                          : SF_PS_DEFAULT_GRACE_MS;
    s->idle_ms =
        cfg->idle_timeout_ms ? cfg->idle_timeout_ms : SF_PS_DEFAULT_IDLE_MS;
    s->log_prefix = cfg->log_prefix ? cfg->log_prefix : "sf-pageserver";
    s->total_pages = sf_pagesrc_total_pages(src);
    s->zeromap = zeromap_build(src);
    s->workset = workset_new(src);
    s->sealed = sf_endpoint_is_network(l->endpoint);
    s->mcast_fd = -1;
    sf_seal_keys_derive(&s->keys, cfg->secret, cfg->fork_id);
    if (cfg->mcast_group && !mcast_start(s)) {
        /* Clones are told there is no group and ask on their own
         * connections: slower, never wrong. */
        sf_emitter_free(g_steal_pointer(&s->emitter));
    }
    /* Created here so sf_pageserver_stop() works even before run(). */
    s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    s->conns = g_ptr_array_new();
    s->clones = g_new0(SfPsClone, MAX(cfg->max_clones, 1));
    for (i = 0; i < cfg->max_clones; i++) {
        s->clones[i].st.clone_id = i + 1;
        s->clones[i].st.state = SF_CLONE_WAITING;
    }
    return s;
}

/*
 * Read what a readable connection has and act on each message once it is
 * whole.  Reads never block: a peer that sends half a header and stalls
 * must not freeze the loop every clone's page faults wait on.  (It is
 * dropped by the HELLO deadline instead, or, after HELLO, only stalls
 * itself.)  The framer validates the header before a single body byte is
 * read, and client messages are tiny, so its buffer is SF_PS_RECV_BUF.
 */
static void conn_readable(SfPageServer *s, SfPsConn *pc)
{
    for (;;) {
        GError *err = NULL;
        SfRecvResult r = sf_msg_recv_frame(pc->conn, &pc->framer, false, &err);

        switch (r) {
        case SF_RECV_MSG:
            sf_ps_dispatch(s, pc, &pc->framer.hdr, pc->framer.body);
            if (pc->dead || !sf_ps_queue_room(s, pc)) {
                return;
            }
            continue;
        case SF_RECV_AGAIN:
            return;
        case SF_RECV_EOF:
            sf_ps_conn_drop(s, pc, "closed by peer");
            return;
        case SF_RECV_ERROR:
            if (err->code == EPROTO || err->code == EPROTONOSUPPORT ||
                err->code == EMSGSIZE) {
                /* Malformed, or a well-formed DATA, say: never read on. */
                sf_ps_conn_fail(s, pc, pc->framer.werr, pc->framer.why);
            } else {
                /* A sealed record that does not open (EBADMSG) is not
                 * answered: the peer does not hold the fork's key. */
                sf_ps_conn_drop(s, pc,
                                err->code == EPIPE
                                    ? "closed in the middle of a message"
                                    : err->message);
            }
            g_error_free(err);
            return;
        }
    }
}

static void listener_readable(SfPageServer *s)
{
    struct timeval tv = { .tv_sec = SF_PS_IO_TIMEOUT_S };
    GError *err = NULL;
    SfPsConn *pc;
    SfConn *conn;

    conn = sf_accept(s->l, &err);
    if (!conn) {
        /* Gone between poll and accept, or out of fds: not fatal. */
        if (err->code != EAGAIN && err->code != ECONNABORTED) {
            sf_ps_log(s, "%s", err->message);
        }
        g_error_free(err);
        return;
    }
    setsockopt(conn->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (s->sealed) {
        conn = sf_conn_seal(conn, &s->keys, true, &err);
        if (!conn) {
            sf_ps_log(s, "%s", err->message);
            g_error_free(err);
            return;
        }
    }

    pc = g_new0(SfPsConn, 1);
    pc->conn = conn;
    sf_framer_init(&pc->framer, pc->body, sizeof(pc->body));
    pc->hello_deadline = sf_ps_now_ms() + SF_PS_HELLO_TIMEOUT_MS;
    g_ptr_array_add(s->conns, pc);
    s->npending++;
    if (s->npending > SF_PS_MAX_PENDING) {
        sf_ps_conn_fail(s, pc, SF_WERR_BUSY,
                        "too many unauthenticated connections");
    }
}

/* Remove connections closed during the last turn. */
static void conns_reap(SfPageServer *s)
{
    guint i = 0;

    while (i < s->conns->len) {
        SfPsConn *pc = g_ptr_array_index(s->conns, i);

        if (pc->dead) {
            g_ptr_array_remove_index_fast(s->conns, i);
            g_free(pc);
        } else {
            i++;
        }
    }
}

static bool all_clones_finished(SfPageServer *s)
{
    for (uint32_t i = 0; i < s->cfg->max_clones; i++) {
        SfCloneState st = s->clones[i].st.state;

        if (st != SF_CLONE_DONE && st != SF_CLONE_ENDED) {
            return false;
        }
    }
    return true;
}

/*
 * The multicast suppression window: a request for a page multicast less
 * than a round trip ago was sent before its asker got the page.  Taken
 * from the kernel's estimate of each clone's TCP round trip (srtt plus
 * twice its variation, the slowest clone's).
 */
static void mcast_window(SfPageServer *s)
{
    int64_t w = 0;

    for (guint i = 0; i < s->conns->len; i++) {
        SfPsConn *pc = g_ptr_array_index(s->conns, i);
        struct tcp_info ti;
        socklen_t len = sizeof(ti);

        if (pc->dead || !pc->clone_id || pc->desc_only ||
            getsockopt(pc->conn->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0) {
            continue;
        }
        w = MAX(w, (int64_t)ti.tcpi_rtt + 2 * (int64_t)ti.tcpi_rttvar);
    }
    if (w) {
        sf_emitter_set_window(s->emitter, w);
    }
}

/*
 * Expire grace periods and HELLO deadlines; return the next deadline the
 * loop must wake up for (G_MAXINT64 for none).  O(clones + connections):
 * both are small, and it runs once a turn.
 */
static int64_t timers_run(SfPageServer *s, int64_t now)
{
    int64_t next = G_MAXINT64;
    uint32_t i;

    for (i = 0; i < s->cfg->max_clones; i++) {
        SfPsClone *c = &s->clones[i];

        if (c->st.state != SF_CLONE_DISCONNECTED) {
            continue;
        }
        if (c->grace_deadline <= now) {
            sf_ps_log(s, "clone %u did not come back within %d ms: ended",
                      c->st.clone_id, s->grace_ms);
            sf_ps_clone_set_state(s, c, SF_CLONE_ENDED);
        } else {
            next = MIN(next, c->grace_deadline);
        }
    }
    for (i = 0; i < s->conns->len; i++) {
        SfPsConn *pc = g_ptr_array_index(s->conns, i);

        if (pc->dead || (pc->clone_id && !pc->desc_only)) {
            continue;
        }
        if (pc->hello_deadline <= now) {
            sf_ps_conn_drop(s, pc,
                            pc->desc_only ? "descriptor fetch too slow"
                                          : "no HELLO in time");
        } else {
            next = MIN(next, pc->hello_deadline);
        }
    }
    if (s->nbound == 0 && s->idle_ms >= 0) {
        next = MIN(next, s->idle_since + s->idle_ms);
    }
    if (s->stats_dirty) {
        next = MIN(next, s->stats_written + SF_PS_STATS_INTERVAL_MS);
    }
    return next;
}

/*
 * Send what the group's pacer allows.  A group whose socket fails is
 * given up: requests are answered on each clone's connection from then
 * on, and the requests whose answers were lost with it time out in the
 * clones and are asked again (sf-fetch.h), unicast after a few tries.
 */
static void mcast_pump(SfPageServer *s, int64_t now_ms)
{
    int64_t next;

    if (!sf_ps_mcast_on(s) || s->mcast_next > now_ms) {
        return;
    }
    next = sf_emitter_pump(s->emitter, g_get_monotonic_time());
    if (next < 0) {
        char ebuf[128];

        sf_ps_log(s, "multicast send failed, answering on connections: %s",
                  strerror_r(-next, ebuf, sizeof(ebuf)));
        s->mcast_failed = true;
        s->mcast_next = G_MAXINT64;
        return;
    }
    s->mcast_next = next == INT64_MAX ? G_MAXINT64 : (next + 999) / 1000;
}

int sf_pageserver_run(SfPageServer *s)
{
    bool backlog = false;
    struct pollfd *pfd = NULL;
    guint pfd_cap = 0;
    const char *reason;
    int64_t window_at = 0;
    int ret = 0;
    guint i;

    if (s->wake_fd < 0) {
        sf_ps_log(s, "cannot create wakeup eventfd");
        return -EMFILE;
    }
    s->running = true;
    s->idle_since = sf_ps_now_ms();
    s->mcast_next = G_MAXINT64;
    sf_ps_log(s, "serving %u blocks (%" PRIu64 " pages) on %s for %u clones%s",
              sf_image_source(s->image)->nblocks, s->total_pages,
              s->l->endpoint, s->cfg->max_clones,
              s->emitter ? ", multicast" : "");
    sf_ps_stats_write(s);

    for (;;) {
        int64_t now = sf_ps_now_ms();
        int64_t next;
        int timeout, n;
        guint nconns;

        next = timers_run(s, now);
        conns_reap(s);
        if (all_clones_finished(s)) {
            reason = "every clone is done or ended";
            break;
        }
        if (s->nbound == 0 && s->idle_ms >= 0 &&
            now - s->idle_since >= s->idle_ms) {
            reason = "idle timeout";
            break;
        }
        if (s->stats_dirty &&
            now - s->stats_written >= SF_PS_STATS_INTERVAL_MS) {
            sf_ps_stats_write(s);
        }
        if (sf_ps_mcast_on(s) && now >= window_at) {
            mcast_window(s);
            window_at = now + SF_PS_STATS_INTERVAL_MS;
        }
        mcast_pump(s, now);
        next = MIN(next, s->mcast_next);

        timeout = backlog              ? 0
                  : next == G_MAXINT64 ? -1
                                       : (int)CLAMP(next - now, 0, G_MAXINT);
        nconns = s->conns->len;
        if (nconns + 2 > pfd_cap) {
            pfd_cap = (nconns + 2) * 2;
            pfd = g_renew(struct pollfd, pfd, pfd_cap);
        }
        pfd[0] = (struct pollfd){ .fd = s->wake_fd, .events = POLLIN };
        pfd[1] = (struct pollfd){ .fd = s->l->fd, .events = POLLIN };
        for (i = 0; i < nconns; i++) {
            SfPsConn *pc = g_ptr_array_index(s->conns, i);

            /* A full queue is flow control: read on once served. */
            pfd[i + 2] =
                (struct pollfd){ .fd = pc->conn->fd,
                                 .events =
                                     sf_ps_queue_room(s, pc) ? POLLIN : 0 };
        }
        n = poll(pfd, nconns + 2, timeout);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            ret = -errno;
            reason = "poll failed";
            break;
        }
        if (pfd[0].revents) {
            reason = "stopped";
            break;
        }
        /* Connections first: accepting appends to s->conns. */
        for (i = 0; i < nconns; i++) {
            SfPsConn *pc = g_ptr_array_index(s->conns, i);

            if (pfd[i + 2].revents && !pc->dead) {
                conn_readable(s, pc);
            }
        }
        if (pfd[1].revents & (POLLERR | POLLNVAL)) {
            ret = -EIO;
            reason = "listener failed";
            break;
        }
        if (pfd[1].revents & POLLIN) {
            listener_readable(s);
        }
        backlog = sf_ps_serve_queued(s);
    }

    sf_ps_log(s, "exiting: %s", reason);
    for (i = 0; i < s->conns->len; i++) {
        sf_ps_conn_drop(s, g_ptr_array_index(s->conns, i), "server exiting");
    }
    conns_reap(s);
    s->running = false;
    sf_ps_stats_write(s);
    g_free(pfd);
    return ret;
}

void sf_pageserver_stop(SfPageServer *s)
{
    uint64_t one = 1;

    /* write() on an eventfd: async-signal-safe and thread-safe. */
    if (write(s->wake_fd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is already non-zero, run() will wake. */
    }
}

/*
 * Reads the counters without locking: call from the thread running
 * sf_pageserver_run(), or after it returned.
 */
void sf_pageserver_get_stats(SfPageServer *s, SfPageServerCloneStats *out,
                             uint32_t n)
{
    for (uint32_t i = 0; i < n && i < s->cfg->max_clones; i++) {
        out[i] = s->clones[i].st;
    }
}

void sf_pageserver_free(SfPageServer *s)
{
    if (!s) {
        return;
    }
    for (guint i = 0; i < s->conns->len; i++) {
        SfPsConn *pc = g_ptr_array_index(s->conns, i);

        if (!pc->dead) {
            sf_conn_close(pc->conn);
        }
        g_free(pc);
    }
    g_ptr_array_free(s->conns, TRUE);
    sf_listener_close(s->l);
    sf_image_free(s->image);
    sf_zeromap_free(s->zeromap);
    sf_workset_free(s->workset);
    sf_emitter_free(s->emitter);
    if (s->mcast_fd >= 0) {
        close(s->mcast_fd);
    }
    if (s->wake_fd >= 0) {
        close(s->wake_fd);
    }
    sf_seal_keys_wipe(&s->keys);
    g_free(s->desc);
    g_free(s->clones);
    g_free(s);
}
