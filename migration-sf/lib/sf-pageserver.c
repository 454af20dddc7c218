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
 * with snprintf and written to fd 2 in one write() (ps_log()).
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
 * loop before it is dropped.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "sf-pageserver.h"

#define SF_PS_DEFAULT_GRACE_MS 3000
#define SF_PS_DEFAULT_IDLE_MS  600000
/* A connection must authenticate this soon or it is dropped. */
#define SF_PS_HELLO_TIMEOUT_MS 10000
/* Longest a blocking write to one peer may hold the loop. */
#define SF_PS_IO_TIMEOUT_S 10
/* Connections that have not sent HELLO yet, at most. */
#define SF_PS_MAX_PENDING       64
#define SF_PS_STATS_INTERVAL_MS 1000
/* Client messages are at most a REQUEST; anything bigger is refused. */
#define SF_PS_RECV_BUF 64
/* Requests queued per connection; reading stops while it is full. */
#define SF_PS_QUEUE 16
/*
 * The log is a file in the fork directory: a local user who connects and
 * drops over and over must not be able to fill the disk through it.
 */
#define SF_PS_LOG_MAX (1024 * 1024)

typedef struct SfPsConn {
    SfConn *conn;
    uint32_t clone_id; /* 0 until a HELLO was accepted */
    int64_t hello_deadline;
    bool dead; /* closed; removed after this poll turn */
    /* Reassembly of one incoming message (see conn_readable()). */
    SfFramer framer;
    uint8_t body[SF_PS_RECV_BUF];
    /* Validated requests waiting to be served, in arrival order. */
    SfMsgRequest queue[SF_PS_QUEUE];
    unsigned queued;
} SfPsConn;

typedef struct SfPsClone {
    SfPageServerCloneStats st;
    SfPsConn *conn;         /* live connection, or NULL */
    int64_t grace_deadline; /* valid in SF_CLONE_DISCONNECTED */
} SfPsClone;

struct SfPageServer {
    SfListener *l;
    SfPageSource *src;
    const SfPageServerConfig *cfg; /* the caller's, for our whole life */
    const char *log_prefix;
    int grace_ms; /* cfg's, defaults applied */
    int idle_ms;
    size_t log_bytes; /* written by ps_log() so far */
    int wake_fd;
    uint64_t total_pages;

    /*
     * The image never changes, so whether a page is zero is worked out
     * once and remembered, two bits a page per block: with N clones
     * asking for the same pages each is scanned once, not N times.
     */
    uint64_t **zero_known;
    uint64_t **zero_is;
    uint32_t zero_nblocks;

    GPtrArray *conns;   /* SfPsConn * */
    SfPsClone *clones;  /* index clone_id - 1 */
    uint32_t nbound;    /* connections that passed HELLO */
    uint32_t npending;  /* connections that have not */
    int64_t idle_since; /* when nbound last became 0 */

    bool running;
    bool stats_dirty;
    bool stats_error_logged;
    int64_t stats_written;
};

static int64_t now_ms(void)
{
    return g_get_monotonic_time() / 1000;
}

static void G_GNUC_PRINTF(2, 3) ps_log(SfPageServer *s, const char *fmt, ...)
{
    char buf[768];
    va_list ap;
    int n, m;

    if (s->log_bytes >= SF_PS_LOG_MAX) {
        return;
    }
    n = snprintf(buf, sizeof(buf), "%s: ", s->log_prefix);
    va_start(ap, fmt);
    m = vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
    va_end(ap);
    n = MIN(n + MAX(m, 0), (int)sizeof(buf) - 2);
    if (s->log_bytes + n + 1 >= SF_PS_LOG_MAX) {
        n = snprintf(buf, sizeof(buf),
                     "%s: log limit of %d bytes reached; "
                     "further lines are dropped",
                     s->log_prefix, SF_PS_LOG_MAX);
        s->log_bytes = SF_PS_LOG_MAX;
    }
    buf[n++] = '\n';
    s->log_bytes += n;
    /* One write() so lines from several servers do not interleave. */
    if (write(STDERR_FILENO, buf, n) < 0) {
        /* Nowhere left to report it. */
    }
}

const char *sf_clone_state_name(SfCloneState st)
{
    switch (st) {
    case SF_CLONE_WAITING:
        return "waiting";
    case SF_CLONE_CONNECTED:
        return "connected";
    case SF_CLONE_DISCONNECTED:
        return "disconnected";
    case SF_CLONE_DONE:
        return "done";
    case SF_CLONE_ENDED:
        return "ended";
    }
    return "unknown";
}

SfPageServer *sf_pageserver_new(SfListener *l, SfPageSource *src,
                                const SfPageServerConfig *cfg)
{
    SfPageServer *s = g_new0(SfPageServer, 1);
    uint32_t i;

    s->l = l;
    s->src = src;
    s->cfg = cfg;
    s->grace_ms = cfg->reconnect_grace_ms ? cfg->reconnect_grace_ms
                                          : SF_PS_DEFAULT_GRACE_MS;
    s->idle_ms =
        cfg->idle_timeout_ms ? cfg->idle_timeout_ms : SF_PS_DEFAULT_IDLE_MS;
    s->log_prefix = cfg->log_prefix ? cfg->log_prefix : "sf-pageserver";
    s->total_pages = sf_pagesrc_total_pages(src);
    s->zero_nblocks = src->nblocks;
    s->zero_known = g_new0(uint64_t *, MAX(src->nblocks, 1));
    s->zero_is = g_new0(uint64_t *, MAX(src->nblocks, 1));
    for (i = 0; i < src->nblocks; i++) {
        uint64_t words = (src->blocks[i].length / SF_WIRE_PAGE_SIZE + 63) / 64;

        s->zero_known[i] = g_new0(uint64_t, MAX(words, 1));
        s->zero_is[i] = g_new0(uint64_t, MAX(words, 1));
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

/* Stats */

char *sf_pageserver_stats_json(SfPageServer *s)
{
    GString *j = g_string_new(NULL);
    SfPageServerCloneStats tot = { 0 };
    uint32_t i;

    for (i = 0; i < s->cfg->max_clones; i++) {
        const SfPageServerCloneStats *c = &s->clones[i].st;

        tot.requests += c->requests;
        tot.pages_sent += c->pages_sent;
        tot.zero_pages += c->zero_pages;
        tot.bytes_sent += c->bytes_sent;
        tot.connects += c->connects;
    }
    g_string_append_printf(
        j,
        "{\"fork_id\": %" PRIu64 ", \"max_clones\": %u, "
        "\"running\": %s, \"total_pages\": %" PRIu64 ",\n"
        " \"totals\": {\"requests\": %" PRIu64 ", \"pages_sent\": %" PRIu64
        ", \"zero_pages\": %" PRIu64 ", \"bytes_sent\": %" PRIu64
        ", \"connects\": %u},\n"
        " \"clones\": [",
        s->cfg->fork_id, s->cfg->max_clones, s->running ? "true" : "false",
        s->total_pages, tot.requests, tot.pages_sent, tot.zero_pages,
        tot.bytes_sent, tot.connects);
    for (i = 0; i < s->cfg->max_clones; i++) {
        const SfPageServerCloneStats *c = &s->clones[i].st;

        g_string_append_printf(
            j,
            "%s\n  {\"clone_id\": %u, \"state\": \"%s\", "
            "\"requests\": %" PRIu64 ", \"pages_sent\": %" PRIu64
            ", \"zero_pages\": %" PRIu64 ", \"bytes_sent\": %" PRIu64
            ", \"connects\": %u}",
            i ? "," : "", c->clone_id, sf_clone_state_name(c->state),
            c->requests, c->pages_sent, c->zero_pages, c->bytes_sent,
            c->connects);
    }
    g_string_append(j, "\n ]}\n");
    return g_string_free(j, FALSE);
}

/* Write the stats file atomically: readers see the old or the new one. */
static void stats_write(SfPageServer *s)
{
    char *json, *tmp;
    size_t len, off = 0;
    int fd;

    s->stats_dirty = false;
    s->stats_written = now_ms();
    if (!s->cfg->stats_path) {
        return;
    }
    json = sf_pageserver_stats_json(s);
    len = strlen(json);
    tmp = g_strdup_printf("%s.tmp", s->cfg->stats_path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        goto fail;
    }
    while (off < len) {
        ssize_t n = write(fd, json + off, len - off);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            close(fd);
            unlink(tmp);
            goto fail;
        }
        off += n;
    }
    if (close(fd) < 0 || rename(tmp, s->cfg->stats_path) < 0) {
        unlink(tmp);
        goto fail;
    }
    g_free(tmp);
    g_free(json);
    return;

fail:
    /* Stats are an aid, not a reason to stop serving: log once. */
    if (!s->stats_error_logged) {
        char ebuf[128];

        s->stats_error_logged = true;
        ps_log(s, "cannot write stats to %s: %s", s->cfg->stats_path,
               strerror_r(errno, ebuf, sizeof(ebuf)));
    }
    g_free(tmp);
    g_free(json);
}

static void clone_set_state(SfPageServer *s, SfPsClone *c, SfCloneState st)
{
    c->st.state = st;
    /* State changes are what an operator watches for: write them now. */
    stats_write(s);
}

/* Connections */

static void conn_drop(SfPageServer *s, SfPsConn *pc, const char *why)
{
    if (pc->dead) {
        return;
    }
    pc->dead = true;
    if (pc->clone_id) {
        SfPsClone *c = &s->clones[pc->clone_id - 1];

        ps_log(s, "clone %u disconnected (%s): %s", pc->clone_id,
               pc->conn->peer, why);
        c->conn = NULL;
        if (--s->nbound == 0) {
            s->idle_since = now_ms();
        }
        if (c->st.state == SF_CLONE_CONNECTED) {
            c->grace_deadline = now_ms() + s->grace_ms;
            clone_set_state(s, c, SF_CLONE_DISCONNECTED);
        }
    } else {
        ps_log(s, "connection from %s dropped before HELLO: %s", pc->conn->peer,
               why);
        s->npending--;
    }
    sf_conn_close(pc->conn);
    pc->conn = NULL;
}

static int conn_send(SfPageServer *s, SfPsConn *pc, SfMsgType type,
                     const void *body, size_t body_len, const void *payload,
                     size_t payload_len)
{
    GError *err = NULL;

    if (sf_msg_send(pc->conn, type, pc->clone_id, s->cfg->fork_id, body,
                    body_len, payload, payload_len, &err) < 0) {
        /* EPIPE, ECONNRESET or a send timeout: this client is gone. */
        conn_drop(s, pc, err->message);
        g_error_free(err);
        return -1;
    }
    if (pc->clone_id) {
        s->clones[pc->clone_id - 1].st.bytes_sent +=
            SF_WIRE_HDR_SIZE + body_len + payload_len;
        s->stats_dirty = true;
    }
    return 0;
}

/* Answer ERROR(code) and close: after an error the stream is not trusted. */
static void conn_fail(SfPageServer *s, SfPsConn *pc, SfWireError code,
                      const char *msg)
{
    uint8_t body[4 + SF_WIRE_ERRMSG_MAX];
    size_t len = sf_wire_error_encode(body, code, msg);
    char *why;

    if (conn_send(s, pc, SF_MSG_ERROR, body, len, NULL, 0) < 0) {
        return;
    }
    why = g_strdup_printf("error %u: %s", code, msg);
    conn_drop(s, pc, why);
    g_free(why);
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
        conn_fail(s, pc, SF_WERR_PROTO, "HELLO sent twice");
        return;
    }
    if (sf_wire_hello_decode(body, hdr->length, &hello, &why) < 0) {
        conn_fail(s, pc, SF_WERR_PROTO, why);
        return;
    }
    /* Both checked before anything else is revealed. */
    if (!sf_wire_secret_equal(hello.secret, s->cfg->secret) ||
        hdr->fork_id != s->cfg->fork_id) {
        conn_fail(s, pc, SF_WERR_AUTH, "bad secret or fork id");
        return;
    }
    if (hdr->clone_id == 0) {
        conn_fail(s, pc, SF_WERR_PROTO, "clone id 0 is not a clone");
        return;
    }
    if (hdr->clone_id > s->cfg->max_clones) {
        conn_fail(s, pc, SF_WERR_BUSY, "clone id above max_clones");
        return;
    }
    c = &s->clones[hdr->clone_id - 1];
    if (c->conn) {
        conn_fail(s, pc, SF_WERR_BUSY, "clone id already connected");
        return;
    }
    if (c->st.state == SF_CLONE_DONE) {
        conn_fail(s, pc, SF_WERR_PROTO, "clone already sent DONE");
        return;
    }
    /*
     * An ENDED clone is let back in: "ended" only means the server stopped
     * waiting for it, and serving it while the image is still here is
     * better than leaving it without memory.
     */
    pc->clone_id = hdr->clone_id;
    s->npending--;
    s->nbound++;
    c->conn = pc;
    c->st.connects++;
    ps_log(s, "clone %u connected from %s (connect #%u)", pc->clone_id,
           pc->conn->peer, c->st.connects);
    clone_set_state(s, c, SF_CLONE_CONNECTED);

    welcome.nblocks = s->src->nblocks;
    welcome.page_size = SF_WIRE_PAGE_SIZE;
    welcome.total_pages = s->total_pages;
    sf_wire_welcome_encode(out, &welcome);
    conn_send(s, pc, SF_MSG_WELCOME, out, sizeof(out), NULL, 0);
}

static void handle_request(SfPageServer *s, SfPsConn *pc, const SfWireHdr *hdr,
                           const uint8_t *body)
{
    SfPsClone *c = &s->clones[pc->clone_id - 1];
    SfMsgRequest req;
    const char *why;

    if (sf_wire_request_decode(body, hdr->length, &req, &why) < 0) {
        conn_fail(s, pc, SF_WERR_PROTO, why);
        return;
    }
    if (!sf_wire_secret_equal(req.secret, s->cfg->secret)) {
        conn_fail(s, pc, SF_WERR_AUTH, "bad secret");
        return;
    }
    if (c->st.state == SF_CLONE_DONE) {
        conn_fail(s, pc, SF_WERR_PROTO, "REQUEST after DONE");
        return;
    }
    if (sf_pagesrc_check_range(s->src, req.block, req.offset, req.npages,
                               &why) < 0) {
        conn_fail(s, pc, SF_WERR_RANGE, why);
        return;
    }
    c->st.requests++;
    s->stats_dirty = true;
    /* conn_readable() stops reading before the queue overflows. */
    g_assert(pc->queued < SF_PS_QUEUE);
    pc->queue[pc->queued++] = req;
}

/* Whether the page at (block, off), mapped at p, is zero; see zero_known. */
static bool page_is_zero(SfPageServer *s, uint32_t block, uint64_t off,
                         const uint8_t *p)
{
    const SfPageSourceOps *ops = s->src->ops;
    uint64_t page = off / SF_WIRE_PAGE_SIZE;
    uint64_t bit = 1ull << (page % 64);
    uint64_t *known = &s->zero_known[block][page / 64];
    uint64_t *is = &s->zero_is[block][page / 64];
    bool zero;

    if (*known & bit) {
        return *is & bit;
    }
    zero = (ops->known_zero && ops->known_zero(s->src, block, off)) ||
           sf_page_is_zero(p, SF_WIRE_PAGE_SIZE);
    *known |= bit;
    if (zero) {
        *is |= bit;
    }
    return zero;
}

/* Answer one validated request with ZERO and DATA runs. */
static void serve_request(SfPageServer *s, SfPsConn *pc, const SfMsgRequest *r)
{
    SfPsClone *c = &s->clones[pc->clone_id - 1];
    SfMsgRequest req = *r;
    const SfPageSourceOps *ops = s->src->ops;
    const uint8_t *data;
    bool zero[SF_WIRE_MAX_PAGES];
    GError *err = NULL;
    uint32_t i, j;

    data = ops->map(s->src, req.block, req.offset, req.npages, &err);
    if (!data) {
        ps_log(s, "clone %u: cannot read block %u offset 0x%" PRIx64 ": %s",
               pc->clone_id, req.block, req.offset, err->message);
        g_error_free(err);
        conn_fail(s, pc, SF_WERR_INTERNAL, "cannot read image");
        return;
    }
    for (i = 0; i < req.npages; i++) {
        uint64_t off = req.offset + (uint64_t)i * SF_WIRE_PAGE_SIZE;

        zero[i] = page_is_zero(s, req.block, off,
                               data + (size_t)i * SF_WIRE_PAGE_SIZE);
    }

    /*
     * Maximal runs in address order: zero runs cost a 20-byte ZERO, data
     * runs go out straight from the image (sendmsg gathers header, fixed
     * part and the pages: no copy).
     */
    for (i = 0; i < req.npages; i = j) {
        SfMsgPages pm;
        uint8_t fixed[SF_WIRE_PAGES_LEN];

        for (j = i + 1; j < req.npages && zero[j] == zero[i]; j++) {
            /* extend the run */
        }
        pm.block = req.block;
        pm.npages = j - i;
        pm.offset = req.offset + (uint64_t)i * SF_WIRE_PAGE_SIZE;
        pm.flags = req.flags;
        sf_wire_pages_encode(fixed, &pm);
        if (zero[i]) {
            if (conn_send(s, pc, SF_MSG_ZERO, fixed, sizeof(fixed), NULL, 0) <
                0) {
                return;
            }
            c->st.zero_pages += pm.npages;
        } else {
            if (conn_send(s, pc, SF_MSG_DATA, fixed, sizeof(fixed),
                          data + (size_t)i * SF_WIRE_PAGE_SIZE,
                          (size_t)pm.npages * SF_WIRE_PAGE_SIZE) < 0) {
                return;
            }
            c->st.pages_sent += pm.npages;
        }
    }
}

static void handle_done(SfPageServer *s, SfPsConn *pc, const SfWireHdr *hdr,
                        const uint8_t *body)
{
    SfPsClone *c = &s->clones[pc->clone_id - 1];
    SfMsgDone done;
    const char *why;

    if (sf_wire_done_decode(body, hdr->length, &done, &why) < 0) {
        conn_fail(s, pc, SF_WERR_PROTO, why);
        return;
    }
    if (!sf_wire_secret_equal(done.secret, s->cfg->secret)) {
        conn_fail(s, pc, SF_WERR_AUTH, "bad secret");
        return;
    }
    if (c->st.state != SF_CLONE_DONE) {
        ps_log(s,
               "clone %u done (%" PRIu64 " requests, %" PRIu64
               " pages sent, %" PRIu64 " zero)",
               pc->clone_id, c->st.requests, c->st.pages_sent,
               c->st.zero_pages);
        clone_set_state(s, c, SF_CLONE_DONE);
    }
}

static void dispatch(SfPageServer *s, SfPsConn *pc, const SfWireHdr *hdr,
                     const uint8_t *body)
{
    if (!sf_wire_msg_table[hdr->type].from_client) {
        conn_fail(s, pc, SF_WERR_PROTO, "server message sent by a client");
        return;
    }
    if (hdr->type == SF_MSG_HELLO) {
        handle_hello(s, pc, hdr, body);
        return;
    }
    if (!pc->clone_id) {
        conn_fail(s, pc, SF_WERR_PROTO, "expected HELLO first");
        return;
    }
    if (hdr->fork_id != s->cfg->fork_id) {
        conn_fail(s, pc, SF_WERR_AUTH, "wrong fork id");
        return;
    }
    if (hdr->clone_id != pc->clone_id) {
        conn_fail(s, pc, SF_WERR_PROTO, "clone id changed after HELLO");
        return;
    }
    switch (hdr->type) {
    case SF_MSG_REQUEST:
        handle_request(s, pc, hdr, body);
        break;
    case SF_MSG_DONE:
        handle_done(s, pc, hdr, body);
        break;
    default:
        conn_fail(s, pc, SF_WERR_PROTO, "unexpected message");
        break;
    }
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
            dispatch(s, pc, &pc->framer.hdr, pc->framer.body);
            if (pc->dead || pc->queued == SF_PS_QUEUE) {
                return;
            }
            continue;
        case SF_RECV_AGAIN:
            return;
        case SF_RECV_EOF:
            conn_drop(s, pc, "closed by peer");
            return;
        case SF_RECV_ERROR:
            if (err->code == EPROTO || err->code == EPROTONOSUPPORT ||
                err->code == EMSGSIZE) {
                /* Malformed, or a well-formed DATA, say: never read on. */
                conn_fail(s, pc, pc->framer.werr, pc->framer.why);
            } else {
                conn_drop(s, pc,
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
            ps_log(s, "%s", err->message);
        }
        g_error_free(err);
        return;
    }
    setsockopt(conn->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));

    pc = g_new0(SfPsConn, 1);
    pc->conn = conn;
    sf_framer_init(&pc->framer, pc->body, sizeof(pc->body));
    pc->hello_deadline = now_ms() + SF_PS_HELLO_TIMEOUT_MS;
    g_ptr_array_add(s->conns, pc);
    s->npending++;
    if (s->npending > SF_PS_MAX_PENDING) {
        conn_fail(s, pc, SF_WERR_BUSY,
                  "too many unauthenticated "
                  "connections");
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
    uint32_t i;

    for (i = 0; i < s->cfg->max_clones; i++) {
        SfCloneState st = s->clones[i].st.state;

        if (st != SF_CLONE_DONE && st != SF_CLONE_ENDED) {
            return false;
        }
    }
    return true;
}

/*
 * Expire grace periods and HELLO deadlines; return the next deadline the
 * loop must wake up for (G_MAXINT64 for none).
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
            ps_log(s, "clone %u did not come back within %d ms: ended",
                   c->st.clone_id, s->grace_ms);
            clone_set_state(s, c, SF_CLONE_ENDED);
        } else {
            next = MIN(next, c->grace_deadline);
        }
    }
    for (i = 0; i < s->conns->len; i++) {
        SfPsConn *pc = g_ptr_array_index(s->conns, i);

        if (pc->dead || pc->clone_id) {
            continue;
        }
        if (pc->hello_deadline <= now) {
            conn_drop(s, pc, "no HELLO in time");
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

static void dequeue(SfPsConn *pc, unsigned i)
{
    memmove(&pc->queue[i], &pc->queue[i + 1],
            (pc->queued - i - 1) * sizeof(pc->queue[0]));
    pc->queued--;
}

/*
 * Demand first, across all clones; then one push chunk per clone.
 * Returns true when requests remain queued (poll without sleeping).
 */
static bool serve_queued(SfPageServer *s)
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

        if (pc->queued && !pc->dead) {
            SfMsgRequest req = pc->queue[0];

            dequeue(pc, 0);
            serve_request(s, pc, &req);
        }
        if (pc->queued && !pc->dead) {
            more = true;
        }
    }
    return more;
}

int sf_pageserver_run(SfPageServer *s)
{
    bool backlog = false;
    struct pollfd *pfd = NULL;
    guint pfd_cap = 0;
    const char *reason;
    int ret = 0;
    guint i;

    if (s->wake_fd < 0) {
        ps_log(s, "cannot create wakeup eventfd");
        return -EMFILE;
    }
    s->running = true;
    s->idle_since = now_ms();
    ps_log(s, "serving %u blocks (%" PRIu64 " pages) on %s for %u clones",
           s->src->nblocks, s->total_pages, s->l->endpoint, s->cfg->max_clones);
    stats_write(s);

    for (;;) {
        int64_t now = now_ms();
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
            stats_write(s);
        }

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
                                     pc->queued < SF_PS_QUEUE ? POLLIN : 0 };
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
        backlog = serve_queued(s);
    }

    ps_log(s, "exiting: %s", reason);
    for (i = 0; i < s->conns->len; i++) {
        conn_drop(s, g_ptr_array_index(s->conns, i), "server exiting");
    }
    conns_reap(s);
    s->running = false;
    stats_write(s);
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
    uint32_t i;

    for (i = 0; i < n && i < s->cfg->max_clones; i++) {
        out[i] = s->clones[i].st;
    }
}

void sf_pageserver_free(SfPageServer *s)
{
    guint i;

    if (!s) {
        return;
    }
    for (i = 0; i < s->conns->len; i++) {
        SfPsConn *pc = g_ptr_array_index(s->conns, i);

        if (!pc->dead) {
            sf_conn_close(pc->conn);
        }
        g_free(pc);
    }
    g_ptr_array_free(s->conns, TRUE);
    sf_listener_close(s->l);
    sf_pagesrc_free(s->src);
    if (s->wake_fd >= 0) {
        close(s->wake_fd);
    }
    for (i = 0; i < s->zero_nblocks; i++) {
        g_free(s->zero_known[i]);
        g_free(s->zero_is[i]);
    }
    g_free(s->zero_known);
    g_free(s->zero_is);
    g_free(s->clones);
    g_free(s);
}
