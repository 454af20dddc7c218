/*
 * snowflock: lazy RAM for clones.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Every page of a clone's guest RAM starts missing and is registered with
 * userfaultfd (missing mode).  One fault thread polls the userfaultfd, the
 * page server connection and, when the fork has one, its multicast group,
 * until every page is present.  What to ask for and when is the fetch
 * policy's (lib/sf-fetch.h: demand runs on faults, a background push in
 * address order once the guest is quiet, time-outs and unicast retries
 * when answers come over the lossy group); this file turns faults into
 * its input, sends the requests it emits (lib/sf-client.h), and places
 * what arrives: DATA with UFFDIO_COPY and ZERO with UFFDIO_ZEROPAGE, one
 * ioctl per run of missing pages, which also wakes every thread blocked
 * on them.
 *
 * Where pages come from.  On a unix endpoint, or when the server has no
 * group, every answer comes on the connection, in order.  Over a network
 * with a group, the clone joins it on the address its connection leaves
 * from (lib/sf-mcrecv.h): one page sent there serves every clone that
 * needs it, including pages this clone has not asked for yet, which it
 * places as they pass.  A clone on the server's own host (a loopback
 * connection) asks for unicast answers: it costs no network traffic.
 *
 * Invariants:
 *   - A clone never runs on a page it does not have.  Pages are placed only
 *     with bytes from the page server - on the connection, or from the
 *     group sealed with the fork's key (lib/sf-seal.h), so no one else can
 *     have made them - or as zero when the server says so (it read them as
 *     zero in the frozen image).  If the server is gone or refuses, the
 *     thread retries for retry_ms, then calls cfg->failed(): the clone
 *     stops; the userfaultfd stays armed until the process exits so no
 *     thread ever reads an unfetched page as zero.
 *   - The fault thread never takes the BQL: vCPUs and the main loop fault
 *     while holding it (MMIO, virtio_load() reading vrings).  Its own lock
 *     only keeps query-sf-clone's view of the fetch state consistent; it
 *     is never held across poll().
 *   - The fault thread has no stop path on purpose: it ends when every page
 *     is present or the clone fails; before that, stopping it would leave
 *     threads blocked on pages for good.  QEMU's exit takes it down.
 *   - Guest-initiated discards (balloon, free page reporting) are disabled
 *     while pages are missing: a discarded page would fault again and look
 *     like one we already placed.
 */

#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "qemu/userfaultfd.h"
#include "qemu/madvise.h"
#include "qemu/thread.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qapi/error.h"
#include "exec/memory.h"
#include "sf-lazyram.h"
#include "lib/sf-client.h"
#include "lib/sf-fetch.h"
#include "lib/sf-framer.h"
#include "lib/sf-mcast.h"
#include "lib/sf-mcrecv.h"
#include "lib/sf-seal.h"
#include "lib/sf-transport.h"
#include "trace.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/ioctl.h>

#define SF_UFFD_MSGS_PER_READ    64
/* Messages or datagrams taken per turn before faults are looked at. */
#define SF_CONN_MSGS_PER_TURN    16
#define SF_MCAST_DGRAMS_PER_TURN 256
/* With a group: this few pages missing, ask for unicast answers. */
#define SF_ENDGAME_PAGES         256

struct SfLazyRam {
    const SfLazyRamConfig *cfg; /* the caller's, for the clone's life */
    const char *server;         /* cfg->server */
    SfClientId id;
    int uffd;
    SfConn *conn;
    bool unicast_only;          /* a group we could not join */
    bool send_warned;
    SfFramer framer;
    uint8_t *rxbuf;
    QemuThread thread;
    size_t psz;

    uint32_t nblocks;
    SfLazyBlock *blocks;
    uint64_t *npages;
    uint64_t pages_total;

    /* Fetch state, under lock (the fault thread, and query-sf-clone). */
    QemuMutex lock;
    SfFetch *fetch;
    SfMcrecv *mcrecv;
    int mcast_fd;
    char mcast_group[32];

    /* Read by query-sf-clone from the main thread: atomics. */
    uint64_t pages_fetched;
    uint64_t zero_pages;
    uint64_t avoided_pages;
    uint64_t workset_pages;
    uint64_t pushed_pages;
    uint64_t mcast_pages;
    uint64_t bytes;
    uint64_t reconnects;
    bool complete;
    bool failed;
};

static int64_t sf_now_us(void)
{
    return g_get_monotonic_time();
}

/* Fatal for this clone: report once and never place anything again. */
static void G_NORETURN sf_lazyram_fail(SfLazyRam *lr, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);

static void sf_lazyram_fail(SfLazyRam *lr, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *reason = NULL;

    va_start(ap, fmt);
    reason = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    qatomic_set(&lr->failed, true);
    lr->cfg->failed(reason, lr->cfg->opaque);
    /*
     * failed() ends the process.  Should it return, park here: the
     * userfaultfd must stay open, or blocked threads would read zeros.
     */
    for (;;) {
        pause();
    }
}

/* --- requests --------------------------------------------------------- */

/* SfFetchConfig.send: called from sf_fetch_*() under lr->lock. */
static void sf_lazyram_send(void *opaque, uint32_t block, uint64_t page,
                            uint32_t npages, uint32_t flags)
{
    SfLazyRam *lr = opaque;
    uint32_t kbps = 0, ppm = 0;
    g_autoptr(GError) err = NULL;

    if (lr->unicast_only) {
        flags |= SF_REQ_UNICAST;
    }
    trace_sf_lazyram_request(block, page * lr->psz, npages, flags);
    if (!lr->conn) {
        return; /* asked again after reconnecting */
    }
    if (lr->mcrecv) {
        sf_mcrecv_rates(lr->mcrecv, sf_now_us(), &kbps, &ppm);
    }
    if (sf_client_request(lr->conn, &lr->id, block, page, npages, flags, kbps,
                          ppm, &err) < 0 && !lr->send_warned) {
        /* The receive side notices the dead connection and reconnects. */
        warn_report("sf-clone: request to %s failed: %s", lr->server,
                    err->message);
        lr->send_warned = true;
    }
}

/* --- placing ---------------------------------------------------------- */

/*
 * Place a run of missing pages with UFFDIO_COPY or UFFDIO_ZEROPAGE.
 * EEXIST cannot happen for pages the fetch state says are missing, but a
 * page the kernel has is never overwritten: skip it.  EAGAIN (mappings
 * changing) is retried.
 */
static void sf_lazyram_place_run(SfLazyRam *lr, uint32_t block, uint64_t page,
                                 uint32_t npages, const uint8_t *data)
{
    SfLazyBlock *b = &lr->blocks[block];
    uint64_t done = 0, len = (uint64_t)npages * lr->psz;
    char *dst = (char *)b->host + page * lr->psz;

    trace_sf_lazyram_place(block, page * lr->psz, npages, !data);
    while (done < len) {
        int64_t moved;
        int ret;

        if (data) {
            struct uffdio_copy c = {
                .dst = (uintptr_t)dst + done,
                .src = (uintptr_t)data + done,
                .len = len - done,
            };
            ret = ioctl(lr->uffd, UFFDIO_COPY, &c);
            moved = c.copy;
        } else {
            struct uffdio_zeropage z = {
                .range = { .start = (uintptr_t)dst + done,
                           .len = len - done },
            };
            ret = ioctl(lr->uffd, UFFDIO_ZEROPAGE, &z);
            moved = z.zeropage;
        }
        if (ret == 0) {
            break;
        }
        if (moved > 0) {
            done += moved;
        }
        if (errno == EEXIST) {
            done += lr->psz;
        } else if (errno != EAGAIN) {
            sf_lazyram_fail(lr, "%s of %u pages at block %s offset 0x%"
                            PRIx64 " failed: %s",
                            data ? "UFFDIO_COPY" : "UFFDIO_ZEROPAGE", npages,
                            qemu_ram_get_idstr(b->rb), page * lr->psz,
                            strerror(errno));
        }
    }
}

/*
 * Place those of [page, page + n) of block still missing (data, or NULL:
 * zero), in runs, and tell the fetch policy: returns how many were placed.
 */
static uint64_t sf_lazyram_place_missing(SfLazyRam *lr, uint32_t block,
                                         uint64_t page, uint32_t n,
                                         const uint8_t *data, bool asked)
{
    uint32_t i, j;

    for (i = 0; i < n; i = j) {
        if (sf_fetch_present(lr->fetch, block, page + i)) {
            j = i + 1;
            continue;
        }
        for (j = i + 1;
             j < n && !sf_fetch_present(lr->fetch, block, page + j); j++) {
            /* extend the run of missing pages */
        }
        sf_lazyram_place_run(lr, block, page + i, j - i,
                             data ? data + (uint64_t)i * lr->psz : NULL);
    }
    return asked ? sf_fetch_arrived(lr->fetch, block, page, n, sf_now_us())
                 : sf_fetch_known_zero(lr->fetch, block, page, n, sf_now_us());
}

/* Pages [page, page + n) of block arrived from the server. */
static void sf_lazyram_take(SfLazyRam *lr, uint32_t block, uint64_t page,
                            uint32_t n, const uint8_t *data, uint32_t flags,
                            bool from_group)
{
    uint64_t newly = sf_lazyram_place_missing(lr, block, page, n, data,
                                              true);

    qatomic_add(data ? &lr->pages_fetched : &lr->zero_pages, newly);
    if (flags & SF_REQ_PREFETCH) {
        qatomic_add(&lr->pushed_pages, newly);
    }
    if (flags & SF_REQ_WORKSET) {
        qatomic_add(&lr->workset_pages, newly);
    }
    if (from_group) {
        qatomic_add(&lr->mcast_pages, newly);
    }
}

/*
 * The fork's zero map: pages the frozen image holds as zero because its
 * process never populated them (never written, or discarded when the
 * guest reported them free).  Zero is their content at the fork instant,
 * so placing zero is exact, and it is done here, without a round trip;
 * nothing ever asks for them.  A run that reaches beyond our RAM means a
 * server that does not serve our image: fail rather than guess.
 */
static void sf_lazyram_take_zeromap(SfLazyRam *lr, const uint8_t *body,
                                    uint32_t len)
{
    const char *why = NULL;
    SfMsgZeroMap m;

    if (sf_wire_zeromap_decode(body, len, &m, &why) < 0) {
        sf_lazyram_fail(lr, "bad ZEROMAP from page server: %s", why);
    }
    if (m.nruns && m.block >= lr->nblocks) {
        sf_lazyram_fail(lr, "page server's zero map names block %u of %u",
                        m.block, lr->nblocks);
    }
    for (uint32_t i = 0; i < m.nruns; i++) {
        uint64_t page, n;

        sf_wire_zeromap_run(&m, i, &page, &n);
        if (page >= lr->npages[m.block] || n > lr->npages[m.block] - page) {
            sf_lazyram_fail(lr, "page server's zero map runs beyond RAM "
                            "(block %u page %" PRIu64 ", %" PRIu64 " pages)",
                            m.block, page, n);
        }
        trace_sf_lazyram_zeromap(m.block, page, n);
        qatomic_add(&lr->avoided_pages,
                    sf_lazyram_place_missing(lr, m.block, page, n, NULL,
                                             false));
    }
}

/* SfMcrecv callbacks: the group's pages, one at a time. */
static bool sf_lazyram_have(void *opaque, uint32_t block, uint64_t page)
{
    SfLazyRam *lr = opaque;

    return sf_fetch_present(lr->fetch, block, page);
}

static void sf_lazyram_place_one(void *opaque, uint32_t block, uint64_t page,
                                 const uint8_t *data)
{
    sf_lazyram_take(opaque, block, page, 1, data, 0, true);
}

/* --- faults ----------------------------------------------------------- */

static bool sf_lazyram_find(SfLazyRam *lr, uint64_t addr, uint32_t *block,
                            uint64_t *page)
{
    for (uint32_t i = 0; i < lr->nblocks; i++) {
        uintptr_t start = (uintptr_t)lr->blocks[i].host;

        if (addr >= start && addr - start < lr->blocks[i].length) {
            *block = i;
            *page = (addr - start) / lr->psz;
            return true;
        }
    }
    return false;
}

static void sf_lazyram_read_faults(SfLazyRam *lr)
{
    struct uffd_msg msgs[SF_UFFD_MSGS_PER_READ];
    int n = uffd_read_events(lr->uffd, msgs, SF_UFFD_MSGS_PER_READ);

    if (n < 0) {
        sf_lazyram_fail(lr, "reading userfaultfd events failed");
    }
    for (int i = 0; i < n; i++) {
        uint64_t addr = msgs[i].arg.pagefault.address;
        uint32_t block;
        uint64_t page;

        if (msgs[i].event != UFFD_EVENT_PAGEFAULT) {
            continue;
        }
        if (!sf_lazyram_find(lr, addr, &block, &page)) {
            /* Registered ranges are exactly our blocks. */
            sf_lazyram_fail(lr, "fault at 0x%" PRIx64 " outside guest RAM",
                            addr);
        }
        trace_sf_lazyram_fault(addr, block, page * lr->psz);
        if (!sf_fetch_fault(lr->fetch, block, page, sf_now_us())) {
            /* Placed after the fault was queued; the copy woke it. */
            uffd_wakeup(lr->uffd,
                        (char *)lr->blocks[block].host + page * lr->psz,
                        lr->psz);
        }
    }
}

/* --- the connection --------------------------------------------------- */

static void sf_lazyram_on_message(SfLazyRam *lr, const SfWireHdr *hdr,
                                  const uint8_t *body)
{
    const char *why = NULL;

    if (hdr->fork_id != lr->cfg->fork_id) {
        sf_lazyram_fail(lr, "page server %s answered for fork %" PRIu64
                        ", not %" PRIu64, lr->server, hdr->fork_id,
                        lr->cfg->fork_id);
    }
    switch (hdr->type) {
    case SF_MSG_DATA:
    case SF_MSG_ZERO: {
        SfMsgPages m;
        uint64_t page;

        if (sf_wire_pages_decode(hdr->type, body, hdr->length, &m,
                                 &why) < 0) {
            sf_lazyram_fail(lr, "bad %s from page server: %s",
                            sf_wire_type_name(hdr->type), why);
        }
        page = m.offset / lr->psz;
        if (m.block >= lr->nblocks || m.offset % lr->psz ||
            page >= lr->npages[m.block] ||
            m.npages > lr->npages[m.block] - page) {
            sf_lazyram_fail(lr, "page server sent pages beyond RAM (block "
                            "%u offset 0x%" PRIx64 ", %u pages)", m.block,
                            m.offset, m.npages);
        }
        qatomic_add(&lr->bytes, SF_WIRE_HDR_SIZE + hdr->length);
        sf_lazyram_take(lr, m.block, page, m.npages,
                        hdr->type == SF_MSG_DATA ? body + SF_WIRE_PAGES_LEN
                                                 : NULL,
                        m.flags, false);
        return;
    }
    case SF_MSG_ZEROMAP:
        qatomic_add(&lr->bytes, SF_WIRE_HDR_SIZE + hdr->length);
        sf_lazyram_take_zeromap(lr, body, hdr->length);
        return;
    case SF_MSG_ERROR: {
        SfMsgError e;

        if (sf_wire_error_decode(body, hdr->length, &e, &why) < 0) {
            sf_lazyram_fail(lr, "page server %s sent a malformed error: %s",
                            lr->server, why);
        }
        sf_lazyram_fail(lr, "page server %s refused: %s (code %u)",
                        lr->server, e.message, e.code);
    }
    default:
        sf_lazyram_fail(lr, "unexpected %s from page server %s",
                        sf_wire_type_name(hdr->type), lr->server);
    }
}

/* Take what the connection has, without blocking; false when it broke. */
static bool sf_lazyram_read_conn(SfLazyRam *lr)
{
    for (int i = 0; i < SF_CONN_MSGS_PER_TURN; i++) {
        g_autoptr(GError) err = NULL;

        switch (sf_msg_recv_frame(lr->conn, &lr->framer, false, &err)) {
        case SF_RECV_AGAIN:
            return true;
        case SF_RECV_MSG:
            sf_lazyram_on_message(lr, &lr->framer.hdr, lr->framer.body);
            break;
        case SF_RECV_EOF:
            trace_sf_lazyram_reconnect(0, "server closed");
            return false;
        case SF_RECV_ERROR:
            trace_sf_lazyram_reconnect(0, err->message);
            return false;
        }
    }
    return true;
}

/* A WELCOME must describe our RAM: a different image is never served. */
static void sf_lazyram_check_welcome(SfLazyRam *lr, const SfMsgWelcome *w)
{
    if (w->nblocks != lr->nblocks || w->page_size != lr->psz ||
        w->total_pages != lr->pages_total) {
        sf_lazyram_fail(lr, "page server %s serves a different image "
                        "(%u blocks, %" PRIu64 " pages; this clone has %u, %"
                        PRIu64 ")", lr->server, w->nblocks, w->total_pages,
                        lr->nblocks, lr->pages_total);
    }
}

/*
 * With background push on, the fork's working set comes first: pages
 * earlier clones asked for, in their order, before we fault on them.
 */
static uint32_t sf_lazyram_hello(SfLazyRam *lr)
{
    if (!lr->cfg->prefetch) {
        return 0;
    }
    return SF_HELLO_WORKSET | (lr->cfg->multicast ? 0 : SF_HELLO_UNICAST);
}

/* Connect and authenticate; NULL with *err when it may work later. */
static SfConn *sf_lazyram_connect(SfLazyRam *lr, int timeout_ms,
                                  SfMsgWelcome *w, GError **err)
{
    SfConn *c = sf_client_connect(lr->server, &lr->id, sf_lazyram_hello(lr),
                                  timeout_ms, w, err);

    if (!c && (*err)->domain == SF_CLIENT_ERROR) {
        /* A refusal (wrong secret, unknown clone) does not get better. */
        sf_lazyram_fail(lr, "%s", (*err)->message);
    }
    if (c) {
        sf_lazyram_check_welcome(lr, w);
        sf_framer_init(&lr->framer, lr->rxbuf, SF_WIRE_MAX_BODY);
    }
    return c;
}

/*
 * The server went away.  Forget what was in flight (it may never come),
 * reconnect within retry_ms while still taking faults and the group's
 * pages, and ask again for every page a thread waits on.  Called and
 * returns with lr->lock held; drops it while waiting.
 */
static void sf_lazyram_reconnect(SfLazyRam *lr)
{
    int64_t deadline = sf_now_us() + (int64_t)lr->cfg->retry_ms * 1000;
    int attempt = 0, delay_ms = 20;
    g_autoptr(GError) err = NULL;
    SfMsgWelcome w;

    sf_conn_close(lr->conn);
    lr->conn = NULL;
    sf_fetch_disconnected(lr->fetch);
    for (;;) {
        struct pollfd pfd[2] = {
            { .fd = lr->uffd, .events = POLLIN },
            { .fd = lr->mcast_fd, .events = POLLIN },
        };

        g_clear_error(&err);
        lr->conn = sf_lazyram_connect(lr, 1000, &w, &err);
        if (lr->conn) {
            break;
        }
        trace_sf_lazyram_reconnect(++attempt, err->message);
        if (sf_now_us() >= deadline) {
            sf_lazyram_fail(lr, "page server %s unreachable for %u ms: %s",
                            lr->server, lr->cfg->retry_ms, err->message);
        }
        /* Keep taking faults while we wait, so none is lost. */
        qemu_mutex_unlock(&lr->lock);
        poll(pfd, lr->mcast_fd >= 0 ? 2 : 1, delay_ms);
        qemu_mutex_lock(&lr->lock);
        if (pfd[0].revents & POLLIN) {
            sf_lazyram_read_faults(lr);
        }
        if (lr->mcrecv && (pfd[1].revents & POLLIN)) {
            sf_mcrecv_drain(lr->mcrecv, lr->mcast_fd,
                            SF_MCAST_DGRAMS_PER_TURN, sf_now_us());
        }
        delay_ms = MIN(delay_ms * 2, 250);
    }
    qatomic_inc(&lr->reconnects);
    lr->send_warned = false;
    info_report("sf-clone: clone %u reconnected to page server %s",
                lr->cfg->clone_id, lr->server);
    /*
     * Faults taken while disconnected were marked asked for but not sent
     * (there was no connection): forget them too, then ask for every page
     * a thread waits on.
     */
    sf_fetch_disconnected(lr->fetch);
    sf_fetch_resend(lr->fetch, sf_now_us());
}

/* --- the group -------------------------------------------------------- */

/*
 * Join the fork's group on the address our connection leaves from: that
 * interface reaches the server.  A clone that cannot join asks for every
 * answer on its connection instead (never waits for a group it is not
 * in).
 */
static void sf_lazyram_join(SfLazyRam *lr, const SfMsgWelcome *w)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    SfMcastGroup g = { .group = w->mcast_group, .port = w->mcast_port };
    g_autofree char *gs = sf_mcast_to_string(w->mcast_group, w->mcast_port);
    g_autoptr(GError) err = NULL;
    SfSealKeys k;

    if (!w->mcast_group) {
        return;
    }
    if (getsockname(lr->conn->fd, (struct sockaddr *)&ss, &sl) < 0 ||
        ss.ss_family != AF_INET || !lr->cfg->multicast) {
        lr->unicast_only = true;
        return;
    }
    g.ifaddr = ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr);
    if ((g.ifaddr >> 24) == 127) {
        lr->unicast_only = true;
        return;
    }
    lr->mcast_fd = sf_mcast_receiver(&g, &err);
    if (lr->mcast_fd < 0) {
        warn_report("sf-clone: cannot receive the fork's group %s, asking "
                    "for unicast answers: %s", gs, err->message);
        lr->unicast_only = true;
        return;
    }
    sf_seal_keys_derive(&k, lr->cfg->secret, lr->cfg->fork_id);
    lr->mcrecv = sf_mcrecv_new(&k, lr->nblocks, lr->npages, sf_lazyram_have,
                               sf_lazyram_place_one, lr, sf_now_us());
    sf_seal_keys_wipe(&k);
    sf_fetch_set_lossy(lr->fetch, true, SF_ENDGAME_PAGES);
    pstrcpy(lr->mcast_group, sizeof(lr->mcast_group), gs);
}

/* --- the thread ------------------------------------------------------- */

static void sf_lazyram_finish(SfLazyRam *lr)
{
    /* Best effort: the server also learns from our disconnect. */
    sf_client_done(lr->conn, &lr->id, NULL);
    sf_conn_close(lr->conn);
    lr->conn = NULL;
    if (lr->mcast_fd >= 0) {
        close(lr->mcast_fd); /* leaves the group */
        lr->mcast_fd = -1;
    }

    /*
     * Every page is present, so no fault can be pending: disarm.  From here
     * on the guest's RAM is ordinary memory (discards allowed, THP back).
     */
    for (uint32_t i = 0; i < lr->nblocks; i++) {
        SfLazyBlock *b = &lr->blocks[i];

        uffd_unregister_memory(lr->uffd, b->host, b->length);
        qemu_madvise(b->host, b->length, QEMU_MADV_HUGEPAGE);
    }
    uffd_close_fd(lr->uffd);
    lr->uffd = -1;
    ram_block_discard_disable(false);
    trace_sf_lazyram_complete(lr->pages_total);
    qatomic_set(&lr->complete, true);
    lr->cfg->complete(lr->cfg->opaque);
}

static void *sf_lazyram_thread(void *opaque)
{
    SfLazyRam *lr = opaque;

    qemu_mutex_lock(&lr->lock);
    while (!sf_fetch_complete(lr->fetch)) {
        int64_t now = sf_now_us();
        int64_t next = sf_fetch_tick(lr->fetch, now);
        struct pollfd pfds[3] = {
            { .fd = lr->uffd, .events = POLLIN },
            { .fd = lr->conn->fd, .events = POLLIN },
            { .fd = lr->mcast_fd, .events = POLLIN },
        };
        int timeout = next == INT64_MAX ? -1 :
                      (int)MIN(MAX((next - now + 999) / 1000, 0), INT_MAX);

        qemu_mutex_unlock(&lr->lock);
        if (poll(pfds, lr->mcast_fd >= 0 ? 3 : 2, timeout) < 0 &&
            errno != EINTR) {
            sf_lazyram_fail(lr, "poll failed: %s", strerror(errno));
        }
        qemu_mutex_lock(&lr->lock);
        /* Faults first: they decide what to ask for next. */
        if (pfds[0].revents & POLLIN) {
            sf_lazyram_read_faults(lr);
        }
        if (lr->mcrecv) {
            int n = 0;

            if (pfds[2].revents & POLLIN) {
                n = sf_mcrecv_drain(lr->mcrecv, lr->mcast_fd,
                                    SF_MCAST_DGRAMS_PER_TURN, sf_now_us());
            }
            /* A full turn's worth: more wait, the push holds. */
            sf_fetch_set_behind(lr->fetch, n >= SF_MCAST_DGRAMS_PER_TURN);
        }
        if ((pfds[1].revents & (POLLIN | POLLHUP | POLLERR)) &&
            !sf_lazyram_read_conn(lr)) {
            sf_lazyram_reconnect(lr);
        }
    }
    qemu_mutex_unlock(&lr->lock);
    sf_lazyram_finish(lr);
    return NULL;
}

/* --- start ------------------------------------------------------------ */

/* Free what sf_lazyram_start() allocated, on its failure paths. */
static void sf_lazyram_free(SfLazyRam *lr)
{
    sf_conn_close(lr->conn);
    sf_mcrecv_free(lr->mcrecv);
    if (lr->mcast_fd >= 0) {
        close(lr->mcast_fd);
    }
    sf_fetch_free(lr->fetch);
    g_free(lr->blocks);
    g_free(lr->npages);
    g_free(lr->rxbuf);
    qemu_mutex_destroy(&lr->lock);
    memset(&lr->id, 0, sizeof(lr->id));
    g_free(lr);
}

static bool sf_lazyram_arm(SfLazyRam *lr, Error **errp)
{
    lr->uffd = uffd_create_fd(0, true);
    if (lr->uffd < 0) {
        error_setg(errp, "sf-clone: cannot create userfaultfd (see "
                   "query-sf on a plain QEMU for what this host offers)");
        return false;
    }
    for (uint32_t i = 0; i < lr->nblocks; i++) {
        SfLazyBlock *b = &lr->blocks[i];
        uint64_t ioctls = 0;

        /*
         * Whatever QEMU put there (ROM images, zeroed RAM) is not the
         * parent's memory at the fork instant: make it all missing.  4 KiB
         * granularity only, as postcopy does: a huge page must not appear
         * where we place small ones.
         */
        if (ram_block_discard_range(b->rb, 0, b->length)) {
            error_setg(errp, "sf-clone: cannot discard RAM block %s",
                       qemu_ram_get_idstr(b->rb));
            return false;
        }
        qemu_madvise(b->host, b->length, QEMU_MADV_NOHUGEPAGE);
        if (uffd_register_memory(lr->uffd, b->host, b->length,
                                 UFFDIO_REGISTER_MODE_MISSING, &ioctls) ||
            !(ioctls & (1ULL << _UFFDIO_COPY)) ||
            !(ioctls & (1ULL << _UFFDIO_ZEROPAGE))) {
            error_setg(errp, "sf-clone: cannot register RAM block %s with "
                       "userfaultfd", qemu_ram_get_idstr(b->rb));
            return false;
        }
    }
    return true;
}

SfLazyRam *sf_lazyram_start(const SfLazyBlock *blocks, uint32_t nblocks,
                            const SfLazyRamConfig *cfg, Error **errp)
{
    g_autoptr(GError) err = NULL;
    SfLazyRam *lr = g_new0(SfLazyRam, 1);
    SfFetchConfig fc = {
        .nblocks = nblocks,
        .prefetch = cfg->prefetch,
        .send = sf_lazyram_send,
        .opaque = lr,
    };
    SfMsgWelcome w;

    lr->cfg = cfg;
    lr->server = cfg->server;
    memcpy(lr->id.secret, cfg->secret, sizeof(lr->id.secret));
    lr->id.fork_id = cfg->fork_id;
    lr->id.clone_id = cfg->clone_id;
    lr->psz = qemu_real_host_page_size();
    lr->nblocks = nblocks;
    lr->blocks = g_memdup2(blocks, sizeof(*blocks) * nblocks);
    lr->npages = g_new0(uint64_t, MAX(nblocks, 1));
    lr->rxbuf = g_malloc(SF_WIRE_MAX_BODY);
    lr->uffd = -1;
    lr->mcast_fd = -1;
    qemu_mutex_init(&lr->lock);
    for (uint32_t i = 0; i < nblocks; i++) {
        lr->npages[i] = blocks[i].length / lr->psz;
        lr->pages_total += lr->npages[i];
    }
    fc.npages = lr->npages;
    lr->fetch = sf_fetch_new(&fc, sf_now_us());

    /*
     * Connect and authenticate before arming anything: a dead server or a
     * wrong secret stops the clone before it has a single missing page.
     */
    lr->conn = sf_client_connect(cfg->server, &lr->id, sf_lazyram_hello(lr),
                                 cfg->retry_ms, &w,
                                 &err);
    if (!lr->conn) {
        error_setg(errp, "sf-clone: cannot reach page server %s: %s",
                   lr->server, err->message);
        goto fail;
    }
    if (w.nblocks != nblocks || w.page_size != lr->psz ||
        w.total_pages != lr->pages_total) {
        error_setg(errp, "sf-clone: page server %s serves a different image "
                   "(%u blocks, %" PRIu64 " pages; this clone has %u, %"
                   PRIu64 ")", lr->server, w.nblocks, w.total_pages, nblocks,
                   lr->pages_total);
        goto fail;
    }
    sf_framer_init(&lr->framer, lr->rxbuf, SF_WIRE_MAX_BODY);
    sf_lazyram_join(lr, &w);

    if (ram_block_discard_disable(true)) {
        error_setg(errp, "sf-clone: cannot disable RAM discards (a device "
                   "needs them, e.g. virtio-mem); lazy RAM needs them off");
        goto fail;
    }
    if (!sf_lazyram_arm(lr, errp)) {
        if (lr->uffd >= 0) {
            uffd_close_fd(lr->uffd);
        }
        ram_block_discard_disable(false);
        goto fail;
    }
    qemu_thread_create(&lr->thread, "sf-lazyram", sf_lazyram_thread, lr,
                       QEMU_THREAD_JOINABLE);
    return lr;

fail:
    sf_lazyram_free(lr);
    return NULL;
}

/* --- figures ---------------------------------------------------------- */

void sf_lazyram_get_stats(SfLazyRam *lr, SfLazyRamStats *st)
{
    SfFetchStats fs;

    memset(st, 0, sizeof(*st));
    st->complete = qatomic_read(&lr->complete);
    st->failed = qatomic_read(&lr->failed);
    st->pages_total = lr->pages_total;
    st->pages_fetched = qatomic_read(&lr->pages_fetched);
    st->zero_pages = qatomic_read(&lr->zero_pages);
    st->avoided_pages = qatomic_read(&lr->avoided_pages);
    st->workset_pages = qatomic_read(&lr->workset_pages);
    st->pushed_pages = qatomic_read(&lr->pushed_pages);
    st->mcast_pages = qatomic_read(&lr->mcast_pages);
    st->bytes = qatomic_read(&lr->bytes);
    st->reconnects = qatomic_read(&lr->reconnects);

    qemu_mutex_lock(&lr->lock);
    sf_fetch_stats(lr->fetch, &fs);
    sf_fetch_latency(lr->fetch, &st->fault_p50_us, &st->fault_p99_us);
    if (lr->mcrecv) {
        SfMcrecvStats ms;

        sf_mcrecv_stats(lr->mcrecv, &ms);
        st->mcast = true;
        pstrcpy(st->mcast_group, sizeof(st->mcast_group), lr->mcast_group);
        st->mcast_datagrams = ms.datagrams;
        st->mcast_bytes = ms.bytes;
        st->mcast_redundant = ms.redundant;
        st->mcast_auth_failed = ms.auth_failed;
        st->mcast_replayed = ms.replayed;
        st->mcast_rejected = ms.other + ms.malformed;
        st->mcast_lost = ms.lost;
        st->mcast_loss_ppm = ms.loss_ppm;
        st->mcast_rx_kbps = ms.rx_kbps;
    }
    qemu_mutex_unlock(&lr->lock);
    st->pages_present = fs.pages_present;
    st->faults = fs.faults;
    st->requests = fs.requests;
    st->retries = fs.retries;
    st->unicast_asks = fs.unicast_asks;
    st->unrequested = fs.unrequested;
    st->rtt_us = fs.srtt_us;
}
