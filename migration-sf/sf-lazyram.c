/*
 * snowflock: lazy RAM for clones.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Every page of a clone's guest RAM starts missing and is registered with
 * userfaultfd (missing mode).  One fault thread polls the userfaultfd and
 * the page server connection until every page is present; it
 *   - turns faults into REQUEST(DEMAND) messages (the faulting page and a
 *     few following ones not yet asked for),
 *   - places DATA with UFFDIO_COPY and ZERO with UFFDIO_ZEROPAGE, one ioctl
 *     per run, which also wakes every thread blocked on those pages,
 *   - when no fault has come for SF_PUSH_QUIET_MS, pushes the rest of RAM
 *     in the background with REQUEST(PREFETCH) in address order.  The push
 *     chunk grows while no faults come and falls back to 64 KiB on a fault,
 *     so a demand request never waits long behind a big push.  CRIU's
 *     lazy-pages grows its chunk by 64 KiB a step up to 4 MiB; we double
 *     it (64 KiB to 4 MiB in 6 requests), because our server answers a
 *     push run with one message and the pipe must fill fast once the
 *     guest is quiet.  The quiet period keeps
 *     the push off the CPU while the guest is busy faulting in its working
 *     set: on a small host (2 cores, several TCG clones) pushing during
 *     that burst quadrupled the time until every clone's shell answered.
 *
 * Invariants:
 *   - A clone never runs on a page it does not have.  Pages are placed only
 *     with bytes from the page server, or as zero when the server says so
 *     (it read them as zero in the frozen image).  If the server is gone or
 *     refuses, the thread retries for retry_ms, then calls cfg->failed():
 *     the clone stops; the userfaultfd stays armed until the process exits
 *     so no thread ever reads an unfetched page as zero.
 *   - The fault thread never takes the BQL: vCPUs and the main loop fault
 *     while holding it (MMIO, virtio_load() reading vrings).
 *   - The fault thread has no stop path on purpose: it ends when every page
 *     is present or the clone fails; before that, stopping it would leave
 *     threads blocked on pages for good.  QEMU's exit takes it down.
 *   - Guest-initiated discards (balloon, free page reporting) are disabled
 *     while pages are missing: a discarded page would fault again and look
 *     like one we already placed.
 */

#include "qemu/osdep.h"
#include "qemu/userfaultfd.h"
#include "qemu/madvise.h"
#include "qemu/thread.h"
#include "qemu/bitmap.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qapi/error.h"
#include "exec/memory.h"
#include "sf-lazyram.h"
#include "lib/sf-transport.h"
#include "trace.h"

#include <poll.h>
#include <sys/ioctl.h>

/* Demand requests ask for the faulting page and up to this many in all. */
#define SF_DEMAND_RUN_PAGES      8
/* Background push chunk: grows while idle, shrinks on a fault. */
#define SF_PUSH_MIN_PAGES        16            /* 64 KiB */
#define SF_PUSH_MAX_PAGES        SF_WIRE_MAX_PAGES /* 4 MiB */
/* Push requests in flight, so the pipe never runs dry between chunks. */
#define SF_PUSH_DEPTH            2
/* Push only after this long without a demand fault. */
#define SF_PUSH_QUIET_MS         100
#define SF_UFFD_MSGS_PER_READ    64
/* Latency samples kept for p50/p99 (about one per demand fault). */
#define SF_LATENCY_SAMPLES_MAX   (1u << 20)

typedef struct SfLazyBlockState {
    SfLazyBlock b;
    uint64_t npages;
    unsigned long *present;      /* placed in guest RAM */
    unsigned long *requested;    /* asked for and not yet placed */
} SfLazyBlockState;

typedef struct SfPendingFault {
    uint32_t block;
    uint64_t page;
    int64_t t0_ns;
} SfPendingFault;

typedef struct SfPushInFlight {
    uint32_t block;
    uint64_t end_page;           /* exclusive */
} SfPushInFlight;

struct SfLazyRam {
    const SfLazyRamConfig *cfg; /* the caller's, for the clone's life */
    const char *server;         /* cfg->server */
    int uffd;
    SfConn *conn;
    QemuThread thread;
    size_t psz;

    uint32_t nblocks;
    SfLazyBlockState *blocks;
    uint64_t pages_total;

    /* Fault thread only. */
    GArray *pending;             /* SfPendingFault */
    SfPushInFlight push[SF_PUSH_DEPTH];
    unsigned npush;
    uint32_t push_block;
    uint64_t push_page;
    uint32_t push_chunk;
    int64_t last_fault_ns;
    uint8_t *rxbuf;

    /* Read by query-sf-clone from the main thread: atomics. */
    uint64_t pages_present;
    uint64_t pages_fetched;
    uint64_t zero_pages;
    uint64_t pushed_pages;
    uint64_t bytes;
    uint64_t faults;
    uint64_t reconnects;
    bool complete;
    bool failed;

    QemuMutex lat_lock;
    GArray *latency_us;          /* uint32_t, under lat_lock */
};

static int64_t sf_now_ns(void)
{
    return g_get_monotonic_time() * 1000;
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

static bool sf_lazyram_find(SfLazyRam *lr, uint64_t addr, uint32_t *block,
                            uint64_t *page)
{
    for (uint32_t i = 0; i < lr->nblocks; i++) {
        uintptr_t start = (uintptr_t)lr->blocks[i].b.host;

        if (addr >= start && addr - start < lr->blocks[i].b.length) {
            *block = i;
            *page = (addr - start) / lr->psz;
            return true;
        }
    }
    return false;
}

static void sf_lazyram_send_request(SfLazyRam *lr, uint32_t block,
                                    uint64_t page, uint32_t npages,
                                    uint32_t flags)
{
    SfLazyBlockState *bs = &lr->blocks[block];
    uint8_t body[SF_WIRE_REQUEST_LEN];
    SfMsgRequest req = {
        .block = block,
        .npages = npages,
        .offset = page * lr->psz,
        .flags = flags,
    };
    g_autoptr(GError) err = NULL;

    memcpy(req.secret, lr->cfg->secret, sizeof(req.secret));
    sf_wire_request_encode(body, &req);
    bitmap_set(bs->requested, page, npages);
    trace_sf_lazyram_request(block, req.offset, npages, flags);
    if (!lr->conn) {
        return;     /* re-sent after reconnecting */
    }
    if (sf_msg_send(lr->conn, SF_MSG_REQUEST, lr->cfg->clone_id,
                    lr->cfg->fork_id, body, sizeof(body), NULL, 0, &err) < 0) {
        /* The receive side notices the dead connection and reconnects. */
        warn_report("sf-clone: request to %s failed: %s", lr->server,
                    err->message);
    }
}

/* Pages [page, page + n) not present and not requested, from page on. */
static uint32_t sf_lazyram_wanted_run(SfLazyBlockState *bs, uint64_t page,
                                      uint32_t max)
{
    uint32_t n = 0;

    while (n < max && page + n < bs->npages &&
           !test_bit(page + n, bs->present) &&
           !test_bit(page + n, bs->requested)) {
        n++;
    }
    return n;
}

static void sf_lazyram_on_fault(SfLazyRam *lr, uint64_t addr)
{
    uint32_t block;
    uint64_t page;
    SfLazyBlockState *bs;
    bool known = false;

    qatomic_inc(&lr->faults);
    if (!sf_lazyram_find(lr, addr, &block, &page)) {
        /* Registered ranges are exactly our blocks; this cannot happen. */
        sf_lazyram_fail(lr, "fault at 0x%" PRIx64 " outside guest RAM", addr);
    }
    bs = &lr->blocks[block];
    trace_sf_lazyram_fault(addr, block, page * lr->psz);

    if (test_bit(page, bs->present)) {
        /* Placed after the fault was queued; the copy woke it already. */
        uffd_wakeup(lr->uffd, (char *)bs->b.host + page * lr->psz, lr->psz);
        return;
    }

    /* O(pending): at most one fault per vCPU and QEMU thread waits. */
    for (guint i = 0; i < lr->pending->len; i++) {
        SfPendingFault *pf = &g_array_index(lr->pending, SfPendingFault, i);
        if (pf->block == block && pf->page == page) {
            known = true;
            break;
        }
    }
    if (!known) {
        SfPendingFault pf = { block, page, sf_now_ns() };
        g_array_append_val(lr->pending, pf);
    }

    /* A fault means the guest is waiting: keep pushes short for a while. */
    lr->push_chunk = SF_PUSH_MIN_PAGES;
    lr->last_fault_ns = sf_now_ns();
    if (!test_bit(page, bs->requested)) {
        uint32_t n = sf_lazyram_wanted_run(bs, page, SF_DEMAND_RUN_PAGES);
        sf_lazyram_send_request(lr, block, page, n, SF_REQ_DEMAND);
    }
}

static void sf_lazyram_read_faults(SfLazyRam *lr)
{
    struct uffd_msg msgs[SF_UFFD_MSGS_PER_READ];
    int n = uffd_read_events(lr->uffd, msgs, SF_UFFD_MSGS_PER_READ);

    if (n < 0) {
        sf_lazyram_fail(lr, "reading userfaultfd events failed");
    }
    for (int i = 0; i < n; i++) {
        if (msgs[i].event == UFFD_EVENT_PAGEFAULT) {
            sf_lazyram_on_fault(lr, msgs[i].arg.pagefault.address);
        }
    }
}

/*
 * Place a run with UFFDIO_COPY or UFFDIO_ZEROPAGE.  EEXIST means part of
 * the run is already there (placed twice after a reconnect): skip that
 * page and go on.  EAGAIN (mappings changing) is retried.
 */
static void sf_lazyram_place(SfLazyRam *lr, SfLazyBlockState *bs,
                             uint64_t page, uint32_t npages,
                             const uint8_t *data)
{
    uint64_t done = 0, len = (uint64_t)npages * lr->psz;
    char *dst = (char *)bs->b.host + page * lr->psz;

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
                            qemu_ram_get_idstr(bs->b.rb), page * lr->psz,
                            strerror(errno));
        }
    }
}

static void sf_lazyram_account(SfLazyRam *lr, uint32_t block, uint64_t page,
                               uint32_t npages)
{
    SfLazyBlockState *bs = &lr->blocks[block];
    uint64_t newly = 0;
    int64_t now = sf_now_ns();

    for (uint64_t p = page; p < page + npages; p++) {
        if (!test_and_set_bit(p, bs->present)) {
            newly++;
        }
    }
    bitmap_clear(bs->requested, page, npages);
    qatomic_add(&lr->pages_present, newly);

    for (guint i = 0; i < lr->pending->len;) {
        SfPendingFault *pf = &g_array_index(lr->pending, SfPendingFault, i);

        if (pf->block == block && pf->page >= page &&
            pf->page < page + npages) {
            uint32_t us = (now - pf->t0_ns) / 1000;

            qemu_mutex_lock(&lr->lat_lock);
            if (lr->latency_us->len < SF_LATENCY_SAMPLES_MAX) {
                g_array_append_val(lr->latency_us, us);
            }
            qemu_mutex_unlock(&lr->lat_lock);
            g_array_remove_index_fast(lr->pending, i);
        } else {
            i++;
        }
    }
}

static void sf_lazyram_push_done(SfLazyRam *lr, uint32_t block,
                                 uint64_t end_page)
{
    for (unsigned i = 0; i < lr->npush; i++) {
        if (lr->push[i].block == block && end_page >= lr->push[i].end_page) {
            lr->push[i] = lr->push[--lr->npush];
            return;
        }
    }
}

/* Returns false when the connection broke. */
static bool sf_lazyram_read_reply(SfLazyRam *lr)
{
    SfWireHdr hdr;
    g_autoptr(GError) err = NULL;
    const char *why = NULL;
    int ret;

    ret = sf_msg_recv(lr->conn, &hdr, lr->rxbuf, SF_WIRE_MAX_BODY, &err);
    if (ret <= 0) {
        trace_sf_lazyram_reconnect(0, ret == 0 ? "server closed" :
                                   err->message);
        return false;
    }
    if (hdr.fork_id != lr->cfg->fork_id) {
        sf_lazyram_fail(lr, "page server %s answered for fork %" PRIu64
                        ", not %" PRIu64, lr->server, hdr.fork_id,
                        lr->cfg->fork_id);
    }

    switch (hdr.type) {
    case SF_MSG_DATA:
    case SF_MSG_ZERO: {
        SfMsgPages m;
        SfLazyBlockState *bs;
        uint64_t page;

        if (sf_wire_pages_decode(hdr.type, lr->rxbuf, hdr.length, &m,
                                 &why) < 0) {
            sf_lazyram_fail(lr, "bad %s from page server: %s",
                            sf_wire_type_name(hdr.type), why);
        }
        if (m.block >= lr->nblocks) {
            sf_lazyram_fail(lr, "page server sent block %u of %u", m.block,
                            lr->nblocks);
        }
        bs = &lr->blocks[m.block];
        page = m.offset / lr->psz;
        if (m.offset % lr->psz || page + m.npages > bs->npages) {
            sf_lazyram_fail(lr, "page server sent pages beyond block %s",
                            qemu_ram_get_idstr(bs->b.rb));
        }
        trace_sf_lazyram_place(m.block, m.offset, m.npages,
                               hdr.type == SF_MSG_ZERO);
        sf_lazyram_place(lr, bs, page, m.npages,
                         hdr.type == SF_MSG_DATA ?
                         lr->rxbuf + SF_WIRE_PAGES_LEN : NULL);
        sf_lazyram_account(lr, m.block, page, m.npages);
        qatomic_add(&lr->bytes, SF_WIRE_HDR_SIZE + hdr.length);
        if (hdr.type == SF_MSG_DATA) {
            qatomic_add(&lr->pages_fetched, m.npages);
        } else {
            qatomic_add(&lr->zero_pages, m.npages);
        }
        if (m.flags & SF_REQ_PREFETCH) {
            qatomic_add(&lr->pushed_pages, m.npages);
            sf_lazyram_push_done(lr, m.block, page + m.npages);
        }
        return true;
    }
    case SF_MSG_ERROR: {
        SfMsgError e;

        if (sf_wire_error_decode(lr->rxbuf, hdr.length, &e, &why) < 0) {
            sf_lazyram_fail(lr, "page server %s sent a malformed error: %s",
                            lr->server, why);
        }
        sf_lazyram_fail(lr, "page server %s refused: %s (code %u)",
                        lr->server, e.message, e.code);
    }
    default:
        sf_lazyram_fail(lr, "unexpected %s from page server %s",
                        sf_wire_type_name(hdr.type), lr->server);
    }
}

/* Connect and authenticate; NULL with *err on failure. */
static SfConn *sf_lazyram_connect(SfLazyRam *lr, int timeout_ms,
                                  GError **err)
{
    SfConn *c = sf_connect(lr->server, timeout_ms, err);
    uint8_t body[SF_WIRE_HELLO_LEN];
    SfMsgHello hello = { .flags = 0 };
    SfMsgWelcome w;
    SfWireHdr hdr;
    const char *why;
    int ret;

    if (!c) {
        return NULL;
    }
    memcpy(hello.secret, lr->cfg->secret, sizeof(hello.secret));
    sf_wire_hello_encode(body, &hello);
    if (sf_msg_send(c, SF_MSG_HELLO, lr->cfg->clone_id, lr->cfg->fork_id,
                    body, sizeof(body), NULL, 0, err) < 0) {
        sf_conn_close(c);
        return NULL;
    }
    ret = sf_msg_recv(c, &hdr, lr->rxbuf, SF_WIRE_MAX_BODY, err);
    if (ret <= 0) {
        if (ret == 0) {
            g_set_error(err, SF_TRANSPORT_ERROR, EPIPE,
                        "page server closed the connection after HELLO");
        }
        sf_conn_close(c);
        return NULL;
    }
    if (hdr.type == SF_MSG_ERROR) {
        SfMsgError e;

        sf_conn_close(c);
        if (sf_wire_error_decode(lr->rxbuf, hdr.length, &e, &why) < 0) {
            sf_lazyram_fail(lr, "page server %s sent a malformed error: %s",
                            lr->server, why);
        }
        /* A refusal (wrong secret, unknown clone) does not get better. */
        sf_lazyram_fail(lr, "page server %s refused clone %u: %s (code %u)",
                        lr->server, lr->cfg->clone_id, e.message, e.code);
    }
    if (hdr.type != SF_MSG_WELCOME) {
        sf_conn_close(c);
        sf_lazyram_fail(lr, "page server %s answered HELLO with %s",
                        lr->server, sf_wire_type_name(hdr.type));
    }

    if (sf_wire_welcome_decode(lr->rxbuf, hdr.length, &w, &why) < 0 ||
        w.nblocks != lr->nblocks || w.page_size != lr->psz ||
        w.total_pages != lr->pages_total) {
        sf_conn_close(c);
        sf_lazyram_fail(lr, "page server %s serves a different image "
                        "(%u blocks, %" PRIu64 " pages; this clone has %u, %"
                        PRIu64 ")", lr->server, w.nblocks, w.total_pages,
                        lr->nblocks, lr->pages_total);
    }
    return c;
}

/*
 * The server went away.  Forget what was in flight (it may never come),
 * reconnect within retry_ms while still collecting faults, and ask again
 * for every page a thread waits on.
 */
static void sf_lazyram_reconnect(SfLazyRam *lr)
{
    int64_t deadline = sf_now_ns() + (int64_t)lr->cfg->retry_ms * 1000000;
    int attempt = 0, delay_ms = 20;
    g_autoptr(GError) err = NULL;
    struct pollfd pfd = { .fd = lr->uffd, .events = POLLIN };

    sf_conn_close(lr->conn);
    lr->conn = NULL;
    for (uint32_t i = 0; i < lr->nblocks; i++) {
        bitmap_zero(lr->blocks[i].requested, lr->blocks[i].npages);
    }
    /* The push skipped pages then in flight: walk again from the start. */
    lr->npush = 0;
    lr->push_block = 0;
    lr->push_page = 0;

    for (;;) {
        g_clear_error(&err);
        lr->conn = sf_lazyram_connect(lr, 1000, &err);
        if (lr->conn) {
            break;
        }
        trace_sf_lazyram_reconnect(++attempt, err->message);
        if (sf_now_ns() >= deadline) {
            sf_lazyram_fail(lr, "page server %s unreachable for %u ms: %s",
                            lr->server, lr->cfg->retry_ms, err->message);
        }
        /* Keep taking faults while we wait, so none is lost. */
        if (poll(&pfd, 1, delay_ms) > 0) {
            sf_lazyram_read_faults(lr);
        }
        delay_ms = MIN(delay_ms * 2, 250);
    }
    qatomic_inc(&lr->reconnects);
    info_report("sf-clone: clone %u reconnected to page server %s",
                lr->cfg->clone_id, lr->server);
    /*
     * Faults taken while disconnected were marked requested but not sent
     * (there was no connection): forget them too, then ask for every page
     * a thread waits on.
     */
    for (uint32_t i = 0; i < lr->nblocks; i++) {
        bitmap_zero(lr->blocks[i].requested, lr->blocks[i].npages);
    }
    for (guint i = 0; i < lr->pending->len; i++) {
        SfPendingFault *pf = &g_array_index(lr->pending, SfPendingFault, i);
        SfLazyBlockState *bs = &lr->blocks[pf->block];

        if (!test_bit(pf->page, bs->requested)) {
            sf_lazyram_send_request(lr, pf->block, pf->page, 1,
                                    SF_REQ_DEMAND);
        }
    }
}

/* Queue background pushes while no fault waits. */
static void sf_lazyram_push(SfLazyRam *lr)
{
    while (lr->npush < SF_PUSH_DEPTH && lr->pending->len == 0 &&
           lr->push_block < lr->nblocks) {
        SfLazyBlockState *bs = &lr->blocks[lr->push_block];
        uint64_t page = lr->push_page;
        uint32_t n;

        /* Skip what is present or already asked for. */
        while (page < bs->npages && (test_bit(page, bs->present) ||
                                     test_bit(page, bs->requested))) {
            page++;
        }
        if (page >= bs->npages) {
            lr->push_block++;
            lr->push_page = 0;
            continue;
        }
        n = sf_lazyram_wanted_run(bs, page, lr->push_chunk);
        lr->push[lr->npush++] = (SfPushInFlight) { lr->push_block, page + n };
        sf_lazyram_send_request(lr, lr->push_block, page, n,
                                SF_REQ_PREFETCH);
        lr->push_page = page + n;
        lr->push_chunk = MIN(lr->push_chunk * 2, SF_PUSH_MAX_PAGES);
    }
}

static void sf_lazyram_finish(SfLazyRam *lr)
{
    uint8_t body[SF_WIRE_DONE_LEN];
    SfMsgDone done;

    memcpy(done.secret, lr->cfg->secret, sizeof(done.secret));
    sf_wire_done_encode(body, &done);
    /* Best effort: the server also learns from our disconnect. */
    sf_msg_send(lr->conn, SF_MSG_DONE, lr->cfg->clone_id, lr->cfg->fork_id,
                body, sizeof(body), NULL, 0, NULL);
    sf_conn_close(lr->conn);
    lr->conn = NULL;

    /*
     * Every page is present, so no fault can be pending: disarm.  From here
     * on the guest's RAM is ordinary memory (discards allowed, THP back).
     */
    for (uint32_t i = 0; i < lr->nblocks; i++) {
        SfLazyBlockState *bs = &lr->blocks[i];

        uffd_unregister_memory(lr->uffd, bs->b.host, bs->b.length);
        qemu_madvise(bs->b.host, bs->b.length, QEMU_MADV_HUGEPAGE);
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

    while (qatomic_read(&lr->pages_present) < lr->pages_total) {
        struct pollfd pfds[2] = {
            { .fd = lr->uffd, .events = POLLIN },
            { .fd = lr->conn->fd, .events = POLLIN },
        };

        int timeout = -1;

        if (lr->cfg->prefetch && lr->push_block < lr->nblocks) {
            int64_t quiet_ms = (sf_now_ns() - lr->last_fault_ns) / 1000000;

            if (quiet_ms >= SF_PUSH_QUIET_MS) {
                sf_lazyram_push(lr);
            } else {
                timeout = SF_PUSH_QUIET_MS - quiet_ms;
            }
        }
        if (poll(pfds, 2, timeout) < 0) {
            if (errno == EINTR) {
                continue;
            }
            sf_lazyram_fail(lr, "poll failed: %s", strerror(errno));
        }
        /* Faults first: they decide what to ask for next. */
        if (pfds[0].revents & POLLIN) {
            sf_lazyram_read_faults(lr);
        }
        if (pfds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (!sf_lazyram_read_reply(lr)) {
                sf_lazyram_reconnect(lr);
            }
        }
    }
    sf_lazyram_finish(lr);
    return NULL;
}

/* Free what sf_lazyram_start() allocated, on its failure paths. */
static void sf_lazyram_free(SfLazyRam *lr)
{
    for (uint32_t i = 0; i < lr->nblocks; i++) {
        g_free(lr->blocks[i].present);
        g_free(lr->blocks[i].requested);
    }
    g_free(lr->blocks);
    g_array_free(lr->pending, true);
    g_array_free(lr->latency_us, true);
    g_free(lr->rxbuf);
    qemu_mutex_destroy(&lr->lat_lock);
    g_free(lr);
}

SfLazyRam *sf_lazyram_start(const SfLazyBlock *blocks, uint32_t nblocks,
                            const SfLazyRamConfig *cfg, Error **errp)
{
    g_autoptr(GError) err = NULL;
    SfLazyRam *lr = g_new0(SfLazyRam, 1);

    lr->cfg = cfg;
    lr->server = cfg->server;
    lr->psz = qemu_real_host_page_size();
    lr->nblocks = nblocks;
    lr->blocks = g_new0(SfLazyBlockState, nblocks);
    lr->pending = g_array_new(false, false, sizeof(SfPendingFault));
    lr->latency_us = g_array_new(false, false, sizeof(uint32_t));
    lr->rxbuf = g_malloc(SF_WIRE_MAX_BODY);
    lr->push_chunk = SF_PUSH_MIN_PAGES;
    lr->uffd = -1;
    qemu_mutex_init(&lr->lat_lock);

    for (uint32_t i = 0; i < nblocks; i++) {
        SfLazyBlockState *bs = &lr->blocks[i];

        bs->b = blocks[i];
        bs->npages = blocks[i].length / lr->psz;
        bs->present = bitmap_new(bs->npages);
        bs->requested = bitmap_new(bs->npages);
        lr->pages_total += bs->npages;
    }

    /*
     * Connect and authenticate before arming anything: a dead server or a
     * wrong secret stops the clone before it has a single missing page.
     */
    lr->conn = sf_lazyram_connect(lr, cfg->retry_ms, &err);
    if (!lr->conn) {
        error_setg(errp, "sf-clone: cannot reach page server %s: %s",
                   lr->server, err->message);
        goto fail;
    }

    if (ram_block_discard_disable(true)) {
        error_setg(errp, "sf-clone: cannot disable RAM discards (a device "
                   "needs them, e.g. virtio-mem); lazy RAM needs them off");
        goto fail;
    }

    lr->uffd = uffd_create_fd(0, true);
    if (lr->uffd < 0) {
        error_setg(errp, "sf-clone: cannot create userfaultfd (see "
                   "query-sf on a plain QEMU for what this host offers)");
        goto fail_discard;
    }
    for (uint32_t i = 0; i < nblocks; i++) {
        SfLazyBlockState *bs = &lr->blocks[i];
        uint64_t ioctls = 0;

        /*
         * Whatever QEMU put there (ROM images, zeroed RAM) is not the
         * parent's memory at the fork instant: make it all missing.  4 KiB
         * granularity only, as postcopy does: a huge page must not appear
         * where we place small ones.
         */
        if (ram_block_discard_range(bs->b.rb, 0, bs->b.length)) {
            error_setg(errp, "sf-clone: cannot discard RAM block %s",
                       qemu_ram_get_idstr(bs->b.rb));
            goto fail_uffd;
        }
        qemu_madvise(bs->b.host, bs->b.length, QEMU_MADV_NOHUGEPAGE);
        if (uffd_register_memory(lr->uffd, bs->b.host, bs->b.length,
                                 UFFDIO_REGISTER_MODE_MISSING, &ioctls) ||
            !(ioctls & (1ULL << _UFFDIO_COPY)) ||
            !(ioctls & (1ULL << _UFFDIO_ZEROPAGE))) {
            error_setg(errp, "sf-clone: cannot register RAM block %s with "
                       "userfaultfd", qemu_ram_get_idstr(bs->b.rb));
            goto fail_uffd;
        }
    }

    qemu_thread_create(&lr->thread, "sf-lazyram", sf_lazyram_thread, lr,
                       QEMU_THREAD_JOINABLE);
    return lr;

fail_uffd:
    uffd_close_fd(lr->uffd);
fail_discard:
    ram_block_discard_disable(false);
fail:
    sf_conn_close(lr->conn);
    sf_lazyram_free(lr);
    return NULL;
}

static int sf_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

void sf_lazyram_get_stats(SfLazyRam *lr, SfLazyRamStats *st)
{
    g_autoptr(GArray) lat = NULL;

    memset(st, 0, sizeof(*st));
    st->complete = qatomic_read(&lr->complete);
    st->failed = qatomic_read(&lr->failed);
    st->pages_total = lr->pages_total;
    st->pages_present = qatomic_read(&lr->pages_present);
    st->pages_fetched = qatomic_read(&lr->pages_fetched);
    st->zero_pages = qatomic_read(&lr->zero_pages);
    st->pushed_pages = qatomic_read(&lr->pushed_pages);
    st->bytes = qatomic_read(&lr->bytes);
    st->faults = qatomic_read(&lr->faults);
    st->reconnects = qatomic_read(&lr->reconnects);

    qemu_mutex_lock(&lr->lat_lock);
    lat = g_array_sized_new(false, false, sizeof(uint32_t),
                            lr->latency_us->len);
    g_array_append_vals(lat, lr->latency_us->data, lr->latency_us->len);
    qemu_mutex_unlock(&lr->lat_lock);
    if (lat->len) {
        qsort(lat->data, lat->len, sizeof(uint32_t), sf_cmp_u32);
        st->fault_p50_us = g_array_index(lat, uint32_t, lat->len / 2);
        st->fault_p99_us = g_array_index(lat, uint32_t,
                                         MIN(lat->len - 1,
                                             lat->len * 99 / 100));
    }
}
