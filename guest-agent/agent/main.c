/*
 * sf-agent: the snowflock guest agent.
 *
 * Owns the virtio-serial port SF_AGENT_PORT_NAME and the Unix socket
 * <run-dir>/agent.sock (libsf's local protocol, libsf/sf-local.h), and
 * relays requests between the two:
 *
 *   libsf client --SfLocalReq--> Pending (our seq) --frame--> host
 *   host --RESULT/IDENTITY(seq)--> Pending --SfLocalAnswer--> client
 *   host --EXITED(seq 0)--> Ticket join table --> waiting sf_join()s
 *
 * One single-threaded poll() loop; no call blocks except the identity
 * steps, which by contract finish before the forking program resumes.
 *
 * Pending requests: at most one per client, plus the agent's own (HELLO,
 * EXIT how=LOST).  Those sent to the host are limited to the host's
 * max_pending (WELCOME); the rest wait here, in arrival order.  A client
 * that goes away leaves its requests detached: their answers are
 * dropped, but a CLONE/CHECKPOINT still makes this VM a clone when its
 * IDENTITY comes, and is then reported as lost.
 *
 * When this VM becomes a clone, requests already sent on the parent's
 * channel will never be answered here: they fail with ECANCELED, and
 * the parent's join tables are dropped (they are not this VM's clones).
 *
 * Freezing the workload (freeze.c): the host's FREEZE frames, and a
 * CLONE or CHECKPOINT asked for with SF_LOCAL_CLONE_FREEZE, hold the
 * workload cgroup frozen; such a request waits here, unsent, until the
 * workload is frozen.  The parent thaws when the fork is answered (the
 * host's thaw, or the RESULT); a clone when its identity is in place,
 * before its post-clone scripts run.  With SF_AGENT_IDENTITY_REPORT the
 * host hears APPLIED at that point too, and releases the clone's link.
 *
 * Deadlines: a client's request the host has not answered in time
 * (--request-timeout, --fork-timeout) is answered ETIMEDOUT, so no libsf
 * call hangs on a host that does not answer (plain QEMU, sfd down).
 * JOIN has no deadline: clones may run for hours.  A timed-out request
 * that was sent stays in the table, detached, for as long as the host
 * holds it: it still counts against max_pending, and a late answer is
 * recognised and dropped, except that a late IDENTITY is applied all
 * the same (this VM is a clone; it must not keep the parent's identity)
 * and the clone is then reported lost, since its program was told the
 * fork failed.  A late successful CLONE/CREATE result still counts its
 * clones for sf_join().  The agent's own requests have no deadline.
 *
 * Files, each calling only those below it:
 *   main.c      this relay, the options and the poll() loop (the top)
 *   identity.c  becoming a clone
 *   freeze.c    the workload cgroup's freezer
 *   channel.c   the port and its framing
 *   log.c       the log; config.h, the options the others read
 *
 * Usage: sf-agent [options], see usage() below.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "channel.h"
#include "config.h"
#include "freeze.h"
#include "identity.h"
#include "log.h"
#include "sf-local.h"

#define MAX_CLIENTS          64
#define MAX_PENDING          (MAX_CLIENTS + 64 + 16) /* + timed out, <= 64 */
#define MAX_TICKETS          64
#define MAX_CLONES           SF_LOCAL_MAX_STATUS /* clone ids we track per ticket */
#define DEFAULT_HOST_PENDING 8
#define OUTBUF_SIZE          (64 * 1024)

typedef struct Client {
    int fd;         /* -1: free slot */
    uint64_t cid;   /* unique, never reused */
    pid_t pid;      /* its process, from SO_PEERCRED (0: unknown) */
    bool busy;      /* a request is outstanding */
    bool join_wait; /* ... and it is a JOIN waiting for exits */
    SfLocalReq req;
    bool got_identity; /* this connection's program is a clone */
    bool exit_sent;    /* its EXIT is on the way or done */
} Client;

typedef struct Pending {
    bool used;
    bool sent;
    bool timed_out; /* its caller got ETIMEDOUT or EIO; kept for late */
    uint32_t seq;
    uint8_t type; /* SF_AGENT_* request type */
    uint64_t cid; /* 0: the agent's own, or the client went away */
    SfLocalReq req;
    uint64_t order;   /* arrival, for queueing; also its freeze holder id */
    int64_t deadline; /* CLOCK_MONOTONIC ms; INT64_MAX: none */
    bool freeze_wait; /* not sent until the workload is frozen */
    size_t flen;
    uint8_t frame[CHAN_FRAME_MAX];
} Pending;

typedef struct Ticket {
    uint64_t id; /* 0: free slot */
    uint32_t granted;
    uint32_t started;  /* clones started from it (CLONE, CREATE) */
    uint32_t cap;      /* entries in st[], indexed by clone id - 1 */
    SfLocalStatus *st; /* id == 0: not ended yet */
    uint64_t used;     /* LRU */
} Ticket;

static AgentConfig cfg = {
    .run_dir = SF_LOCAL_RUN_DIR,
    .root = "/",
    .iface = "eth0",
    .script_timeout = 30,
    .cgroup_root = "/sys/fs/cgroup",
    .workload = "sf-workload",
};
static const char *port_path; /* NULL: find the virtio port */
static int port_fd_arg = -1;
static const char *sock_path;
static const char *sys_dir = "/sys/class/virtio-ports";
/* Deadlines in ms: ticket, kill, exit, create; clone and checkpoint. */
static int64_t request_timeout = 30000;
static int64_t fork_timeout = -1; /* -1: 4 x request_timeout */

static int port_fd = -1;
static ChanReader reader;
static uint8_t outbuf[OUTBUF_SIZE];
static size_t outlen;
static uint32_t host_max_pending = DEFAULT_HOST_PENDING;
static uint32_t next_seq = 1;
static uint64_t next_cid = 1, next_order = 1, lru_clock = 1;
static uint32_t my_clone_id;     /* this VM's id, 0 when not a clone */
static uint32_t host_freeze_seq; /* the host's FREEZE to answer, or 0 */

static int listen_fd = -1;
static Client clients[MAX_CLIENTS];
static Pending pending[MAX_PENDING];
static Ticket tickets[MAX_TICKETS];

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000ll + ts.tv_nsec / 1000000;
}

static int64_t type_timeout(uint8_t type)
{
    return type == SF_AGENT_CLONE || type == SF_AGENT_CHECKPOINT
               ? fork_timeout
               : request_timeout;
}

/* ---- clients ---- */

static Client *client_by_cid(uint64_t cid)
{
    for (int i = 0; cid && i < MAX_CLIENTS; i++) {
        if (clients[i].fd >= 0 && clients[i].cid == cid) {
            return &clients[i];
        }
    }
    return NULL;
}

static void client_answer(Client *c, const SfLocalAnswer *ans,
                          const SfLocalStatus *st, uint32_t nst)
{
    static uint8_t msg[SF_LOCAL_MAX_MSG];
    SfLocalHdr hdr = {
        .magic = SF_LOCAL_MAGIC,
        .version = SF_LOCAL_VERSION,
        .type = SF_LOCAL_ANSWER,
        .length = sizeof(*ans) + nst * sizeof(*st),
    };
    SfLocalAnswer a = *ans;

    a.nstatus = nst;
    memcpy(msg, &hdr, sizeof(hdr));
    memcpy(msg + sizeof(hdr), &a, sizeof(a));
    if (nst) {
        memcpy(msg + sizeof(hdr) + sizeof(a), st, nst * sizeof(*st));
    }
    /* A full socket buffer is impossible with one answer per request. */
    if (send(c->fd, msg, sizeof(hdr) + hdr.length,
             MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        agent_log("client %llu: answer lost: %s", (unsigned long long)c->cid,
                  strerror(errno));
    }
    c->busy = false;
    c->join_wait = false;
}

static void client_error(Client *c, int err)
{
    SfLocalAnswer a = { .error = err };

    client_answer(c, &a, NULL, 0);
}

/* ---- the port ---- */

static void port_flush(void)
{
    while (port_fd >= 0 && outlen) {
        ssize_t n = write(port_fd, outbuf, outlen);

        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                agent_log("port: write: %s", strerror(errno));
                outlen = 0; /* the port is closed on the next poll */
            }
            return;
        }
        memmove(outbuf, outbuf + n, outlen - n);
        outlen -= n;
    }
}

static int count_sent(void)
{
    int n = 0;

    for (int i = 0; i < MAX_PENDING; i++) {
        n += pending[i].used && pending[i].sent;
    }
    return n;
}

/* Move queued requests to the port, oldest first, within the limits. */
static void pump(void)
{
    while (port_fd >= 0 && (uint32_t)count_sent() < host_max_pending) {
        Pending *p = NULL;

        for (int i = 0; i < MAX_PENDING; i++) {
            Pending *q = &pending[i];

            if (q->used && !q->sent && !q->freeze_wait &&
                (!p || q->order < p->order)) {
                p = q;
            }
        }
        if (!p || outlen + p->flen > sizeof(outbuf)) {
            break;
        }
        memcpy(outbuf + outlen, p->frame, p->flen);
        outlen += p->flen;
        p->sent = true;
    }
    port_flush();
}

static bool seq_in_use(uint32_t seq)
{
    for (int i = 0; i < MAX_PENDING; i++) {
        if (pending[i].used && pending[i].seq == seq) {
            return true;
        }
    }
    return false;
}

/*
 * Queue a request to the host; returns it, or NULL when full.  With
 * freeze_wait it is not sent before the workload is frozen (on_frozen).
 */
static Pending *request_queue(uint8_t type, uint64_t cid, const SfLocalReq *req,
                              const void *body, size_t len, bool freeze_wait)
{
    Pending *p = NULL;

    for (int i = 0; i < MAX_PENDING && !p; i++) {
        if (!pending[i].used) {
            p = &pending[i];
        }
    }
    if (!p) {
        return NULL;
    }
    do {
        p->seq = next_seq++;
    } while (p->seq == 0 || seq_in_use(p->seq));
    p->used = true;
    p->sent = false;
    p->timed_out = false;
    p->freeze_wait = freeze_wait;
    p->type = type;
    p->cid = cid;
    p->req = req ? *req : (SfLocalReq){ 0 };
    p->order = next_order++;
    /* The agent's own requests (HELLO, a lost report) wait for the host. */
    p->deadline = cid ? now_ms() + type_timeout(type) : INT64_MAX;
    p->flen = chan_encode(p->frame, type, p->seq, body, len);
    pump();
    return p;
}

static Pending *request(uint8_t type, uint64_t cid, const SfLocalReq *req,
                        const void *body, size_t len)
{
    return request_queue(type, cid, req, body, len, false);
}

/* A seq for a report: reports are not answered, it only has to be set. */
static uint32_t next_report_seq(void)
{
    uint32_t seq;

    do {
        seq = next_seq++;
    } while (seq == 0 || seq_in_use(seq));
    return seq;
}

/* A report to the host (never answered), sent as soon as there is room. */
static void send_report(uint8_t type, uint32_t seq, const void *body,
                        size_t len)
{
    if (port_fd < 0 || outlen + SF_AGENT_HDR_LEN + len > sizeof(outbuf)) {
        agent_log("host: no channel or no room: the %s report is lost",
                  sf_agent_type_name(type));
        return;
    }
    outlen += chan_encode(outbuf + outlen, type, seq, body, len);
    port_flush();
}

static void send_hello(void)
{
    SfAgentHello h = {
        .agent_version = SF_AGENT_VERSION,
        .features = SF_AGENT_FEATURE_APPLIED,
    };

    if (!request(SF_AGENT_HELLO, 0, NULL, &h, sizeof(h))) {
        agent_log("no room for HELLO");
    }
}

static void send_lost(void)
{
    SfAgentExitReq e = { .status = 0, .how = SF_AGENT_HOW_LOST };

    agent_log("clone %u: program ended without sf_exit, reporting lost",
              my_clone_id);
    if (!request(SF_AGENT_EXIT, 0, NULL, &e, sizeof(e))) {
        agent_log("no room to report lost");
    }
}

/*
 * Fail (or drop) every request already sent on the port.  keep_forks:
 * CLONE and CHECKPOINT stay, detached like a timed-out request, because
 * the host still holds them and its IDENTITY must still be applied.
 */
static void fail_sent(int err, bool keep_forks)
{
    for (int i = 0; i < MAX_PENDING; i++) {
        Pending *p = &pending[i];
        Client *c;

        if (!p->used || !p->sent) {
            continue;
        }
        c = client_by_cid(p->cid);
        if (c) {
            if (p->type == SF_AGENT_EXIT) {
                c->exit_sent = false;
            }
            client_error(c, err);
        }
        /* Its program goes on as the parent: thaw what it froze. */
        freeze_drop(p->order);
        if (keep_forks &&
            (p->type == SF_AGENT_CLONE || p->type == SF_AGENT_CHECKPOINT)) {
            p->timed_out = true;
            p->cid = 0;
        } else {
            p->used = false;
        }
    }
}

static time_t port_retry_at; /* CLOCK_MONOTONIC seconds */

static time_t now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

static void port_close(const char *why)
{
    agent_log("port: closed (%s)", why);
    port_retry_at = now_s() + 1;
    close(port_fd);
    port_fd = -1;
    outlen = 0;
    reader.len = 0;
    fail_sent(EIO, true);
}

static void port_try_open(void)
{
    static bool logged;
    char path[PATH_MAX];
    int fd;

    if (now_s() < port_retry_at) {
        return;
    }
    if (port_fd_arg >= 0) {
        /* An inherited channel (tests) cannot be reopened. */
        fd = port_fd_arg;
        port_fd_arg = -2;
        fcntl(fd, F_SETFL, O_NONBLOCK);
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    } else if (port_fd_arg == -2) {
        return;
    } else {
        if (port_path) {
            snprintf(path, sizeof(path), "%s", port_path);
        } else if (chan_find_port(sys_dir, path, sizeof(path)) < 0) {
            port_retry_at = now_s() + 1;
            if (!logged) {
                agent_log("port: no virtio port named %s yet, waiting",
                          SF_AGENT_PORT_NAME);
                logged = true;
            }
            return;
        }
        fd = chan_open(path);
        if (fd < 0) {
            port_retry_at = now_s() + 1;
            if (!logged) {
                agent_log("port: %s: %s, retrying", path, strerror(-fd));
                logged = true;
            }
            return;
        }
    }
    logged = false;
    port_fd = fd;
    host_max_pending = DEFAULT_HOST_PENDING;
    agent_log("port: open");
    send_hello();
}

/* ---- tickets and join tables ---- */

static Ticket *ticket_find(uint64_t id)
{
    for (int i = 0; id && i < MAX_TICKETS; i++) {
        if (tickets[i].id == id) {
            tickets[i].used = lru_clock++;
            return &tickets[i];
        }
    }
    return NULL;
}

static bool client_joining(uint64_t id)
{
    for (int i = 0; i < MAX_CLIENTS; i++) {
        if (clients[i].fd >= 0 && clients[i].join_wait &&
            clients[i].req.ticket == id) {
            return true;
        }
    }
    return false;
}

static Ticket *ticket_add(uint64_t id)
{
    Ticket *t = ticket_find(id), *victim = NULL;

    if (t) {
        return t;
    }
    for (int i = 0; i < MAX_TICKETS; i++) {
        Ticket *c = &tickets[i];

        if (!c->id) {
            victim = c;
            break;
        }
        if (!client_joining(c->id) && (!victim || c->used < victim->used)) {
            victim = c;
        }
    }
    if (!victim) {
        return NULL;
    }
    free(victim->st);
    *victim = (Ticket){ .id = id, .used = lru_clock++ };
    return victim;
}

static void tickets_reset(void)
{
    for (int i = 0; i < MAX_TICKETS; i++) {
        free(tickets[i].st);
        tickets[i] = (Ticket){ 0 };
    }
}

static bool ticket_done(const Ticket *t)
{
    if (!t->started || t->cap < t->started) {
        return false;
    }
    for (uint32_t i = 0; i < t->started; i++) {
        if (!t->st[i].id) {
            return false;
        }
    }
    return true;
}

static void join_answer(Client *c, const Ticket *t)
{
    static SfLocalStatus st[MAX_CLONES];
    SfLocalAnswer a = { .count = t->started };
    uint32_t n = 0;

    for (uint32_t i = 0; i < t->cap && n < c->req.n; i++) {
        if (t->st[i].id) {
            st[n++] = t->st[i];
        }
    }
    client_answer(c, &a, st, n);
}

static void joins_check(const Ticket *t)
{
    if (!ticket_done(t)) {
        return;
    }
    for (int i = 0; i < MAX_CLIENTS; i++) {
        Client *c = &clients[i];

        if (c->fd >= 0 && c->join_wait && c->req.ticket == t->id) {
            join_answer(c, t);
        }
    }
}

static void ticket_record_exit(const SfAgentExited *e)
{
    Ticket *t = ticket_add(e->ticket);

    if (!t) {
        agent_log("no room for ticket %llu", (unsigned long long)e->ticket);
        return;
    }
    if (e->clone_id > t->cap) {
        SfLocalStatus *st = realloc(t->st, e->clone_id * sizeof(*st));

        if (!st) {
            return;
        }
        memset(st + t->cap, 0, (e->clone_id - t->cap) * sizeof(*st));
        t->st = st;
        t->cap = e->clone_id;
    }
    t->st[e->clone_id - 1] = (SfLocalStatus){
        .id = e->clone_id,
        .how = e->how,
        .status = e->status,
    };
    joins_check(t);
}

/* ---- frames from the host ---- */

static Pending *pending_by_seq(uint32_t seq)
{
    for (int i = 0; seq && i < MAX_PENDING; i++) {
        if (pending[i].used && pending[i].sent && pending[i].seq == seq) {
            return &pending[i];
        }
    }
    return NULL;
}

static void on_result(uint32_t seq, const SfAgentResult *r)
{
    Pending *p = pending_by_seq(seq);
    SfLocalAnswer a = { .error = r->error,
                        .count = r->count,
                        .value = r->value };
    Client *c;
    Ticket *t;
    bool late;

    if (!p || p->type == SF_AGENT_HELLO) {
        agent_log("host: result for unknown seq %u ignored", seq);
        return;
    }
    late = p->timed_out;
    /* The parent's side of a frozen fork: its workload runs on. */
    freeze_drop(p->order);
    if (r->error < 0 || r->error > 4095) {
        agent_log("host: bad error %d for seq %u", r->error, seq);
        a.error = EPROTO;
    }
    if (!a.error) {
        switch (p->type) {
        case SF_AGENT_TICKET:
            if (!r->value || r->value > INT64_MAX || !r->count ||
                r->count > p->req.n) {
                a.error = EPROTO;
            } else if (!late && (t = ticket_add(r->value))) {
                t->granted = r->count;
            }
            break;
        case SF_AGENT_CLONE:
        case SF_AGENT_CREATE:
            if (r->count > MAX_CLONES) {
                a.error = EPROTO;
            } else if ((t = ticket_add(p->req.ticket))) {
                t->started += r->count;
                if (t->started > MAX_CLONES) {
                    t->started = MAX_CLONES;
                }
                joins_check(t);
            }
            break;
        case SF_AGENT_CHECKPOINT:
            if (!r->value || r->value > INT64_MAX) {
                a.error = EPROTO;
            }
            break;
        }
    }
    if (late) {
        /* Its caller was told ETIMEDOUT (or EIO); nobody gets this. */
        p->used = false;
        if (!a.error &&
            (p->type == SF_AGENT_CLONE || p->type == SF_AGENT_CREATE) &&
            r->count) {
            agent_log("WARNING: late answer to the timed-out %s request seq "
                      "%u: %u clone(s) of ticket %llu were started although "
                      "the caller was told ETIMEDOUT (sf_join and sf_kill "
                      "on the ticket still work)",
                      sf_agent_type_name(p->type), seq, r->count,
                      (unsigned long long)p->req.ticket);
        } else if (!a.error && p->type == SF_AGENT_CHECKPOINT) {
            agent_log("WARNING: late answer to the timed-out checkpoint "
                      "request seq %u: checkpoint %llu exists although the "
                      "caller was told ETIMEDOUT",
                      seq, (unsigned long long)r->value);
        } else {
            agent_log("host: late answer to the timed-out %s request seq %u "
                      "ignored (%s)",
                      sf_agent_type_name(p->type), seq,
                      a.error ? strerror(a.error) : "success");
        }
        return;
    }
    if (a.error) {
        agent_log("host: request seq %u (type 0x%02x) failed: %s", seq, p->type,
                  strerror(a.error));
    }
    c = client_by_cid(p->cid);
    p->used = false;
    if (!c) {
        return;
    }
    if (p->type == SF_AGENT_EXIT && a.error) {
        c->exit_sent = false;
    }
    client_answer(c, &a, NULL, 0);
}

/* ---- the clone's clock ---- */

#define CLOCK_SYNC_MS 500 /* how long to wait for the host's CLOCK */

/* Frames from the host that came while clock_sync() waited. */
typedef struct Deferred {
    SfAgentHdr h;
    uint8_t body[SF_AGENT_MAX_BODY];
} Deferred;

static Deferred deferred[8];
static int ndeferred;

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/*
 * The identity's realtime_ns is as old as the frame's way here, which in
 * a freshly started clone (every page fetched, every code path run for
 * the first time) can be a large part of a second.  Ask the host for
 * its clock now and set ours to it plus half the round trip (Cristian's
 * algorithm); the error is at most half the round trip.  Blocks for at
 * most CLOCK_SYNC_MS, as the identity steps block; frames that arrive
 * meanwhile are kept in deferred[] for on_frame().  Returns the round
 * trip in ns, or -1 (no answer: the identity's clock stays).
 */
static int64_t clock_sync(void)
{
    uint32_t seq = next_report_seq();
    int64_t t0 = now_ns(), deadline = t0 + CLOCK_SYNC_MS * 1000000ll;
    SfAgentTime t = { .echo = (uint64_t)t0 };

    send_report(SF_AGENT_TIME, seq, &t, sizeof(t));
    while (port_fd >= 0) {
        uint8_t body[SF_AGENT_MAX_BODY];
        struct pollfd pfd = { .fd = port_fd, .events = POLLIN };
        SfAgentHdr h;
        int64_t left;
        ssize_t n;

        while (chan_next_frame(&reader, &h, body)) {
            if (h.seq == seq && h.type == SF_AGENT_CLOCK) {
                SfAgentClock c;
                int64_t t1 = now_ns(), rtt = t1 - t0;

                memcpy(&c, body, sizeof(c));
                if (c.echo != (uint64_t)t0 || c.realtime_ns <= 0) {
                    agent_log("host: bad CLOCK answer ignored");
                    return -1;
                }
                if (identity_set_clock(&cfg, c.realtime_ns + rtt / 2 +
                                                 (now_ns() - t1)) < 0) {
                    return -1;
                }
                return rtt;
            }
            if (h.seq == seq && h.type == SF_AGENT_RESULT) {
                return -1; /* refused (rate limited) */
            }
            if (ndeferred == (int)(sizeof(deferred) / sizeof(deferred[0]))) {
                agent_log("host: %s frame dropped while setting the clock",
                          sf_agent_type_name(h.type));
                continue;
            }
            deferred[ndeferred].h = h;
            memcpy(deferred[ndeferred++].body, body, h.length);
        }
        left = (deadline - now_ns()) / 1000000;
        if (left <= 0) {
            return -1;
        }
        port_flush();
        if (outlen) {
            pfd.events |= POLLOUT;
        }
        if (poll(&pfd, 1, (int)left) <= 0) {
            continue;
        }
        n = read(port_fd, reader.buf + reader.len,
                 sizeof(reader.buf) - reader.len);
        if (n > 0) {
            reader.len += n;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            return -1; /* the next port_read() sees it and closes */
        }
    }
    return -1;
}

static void on_frame(const SfAgentHdr *h, const uint8_t *body);

/* The frames clock_sync() kept, in the order they came. */
static void deferred_dispatch(void)
{
    Deferred d[sizeof(deferred) / sizeof(deferred[0])];
    int n = ndeferred;

    memcpy(d, deferred, n * sizeof(d[0]));
    ndeferred = 0;
    for (int i = 0; i < n; i++) {
        on_frame(&d[i].h, d[i].body);
    }
    explicit_bzero(d, sizeof(d));
}

static void on_identity(uint32_t seq, const SfAgentIdentity *id)
{
    Pending *p = NULL;
    Client *c = NULL;
    char buf[32];

    if (!id->clone_id || !id->generation || id->clone_id > INT32_MAX) {
        agent_log("host: identity with bad id %u/%u ignored", id->clone_id,
                  id->generation);
        return;
    }
    if (seq) {
        p = pending_by_seq(seq);
        if (!p ||
            (p->type != SF_AGENT_CLONE && p->type != SF_AGENT_CHECKPOINT)) {
            agent_log("host: identity for seq %u, which is no fork request, "
                      "ignored",
                      seq);
            return;
        }
        c = client_by_cid(p->cid);
        p->used = false;
        if (p->timed_out) {
            agent_log("WARNING: this VM is clone %u, made by the %s request "
                      "seq %u, whose program was already told it failed "
                      "(timed out, or the port closed) and goes on as if it "
                      "were the parent.  Applying the clone's identity all "
                      "the same and reporting the clone as lost.",
                      id->clone_id, sf_agent_type_name(p->type), seq);
        }
    }

    /* Everything the program may observe is in place before it resumes. */
    identity_apply(&cfg, id);
    my_clone_id = id->clone_id;
    snprintf(buf, sizeof(buf), "%u", id->clone_id);
    if (id->flags & SF_AGENT_IDENTITY_TIME) {
        int64_t rtt = clock_sync();

        if (rtt >= 0) {
            agent_log("identity: clock set from the host's, within %lld us "
                      "(half the round trip)",
                      (long long)(rtt / 2000));
        } else {
            agent_log("identity: no fresh host clock; the identity's stays");
        }
    }
    if (id->flags & SF_AGENT_IDENTITY_REPORT) {
        SfAgentApplied ap = { .clone_id = id->clone_id,
                              .generation = id->generation };
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        ap.realtime_ns = ts.tv_sec * 1000000000ll + ts.tv_nsec;

        /* The host may be holding this clone's link down until now. */
        send_report(SF_AGENT_APPLIED, next_report_seq(), &ap, sizeof(ap));
    }
    /* A workload frozen across the fork resumes only now (freeze.c). */
    freeze_drop_all();
    identity_run_scripts(&cfg, id);

    fail_sent(ECANCELED, false);
    for (int i = 0; i < MAX_CLIENTS; i++) {
        if (clients[i].fd >= 0 && clients[i].join_wait) {
            client_error(&clients[i], ECANCELED);
        }
    }
    tickets_reset();

    if (c) {
        SfLocalAnswer a = { .kind = SF_LOCAL_KIND_IDENTITY,
                            .clone_id = id->clone_id,
                            .generation = id->generation };

        c->got_identity = true;
        c->exit_sent = false;
        client_answer(c, &a, NULL, 0);
    } else if (p) {
        /* The program that forked is gone: nobody will sf_exit. */
        send_lost();
    }
    pump();
    deferred_dispatch();
}

/* ---- freezing the workload ---- */

static void report_freeze(uint32_t seq, int err)
{
    SfAgentFreezeState st = { .error = err,
                              .frozen = freeze_frozen(),
                              .tasks = freeze_tasks() };

    if (!st.frozen && !err) {
        st.frozen_us = freeze_last_us();
    }
    send_report(SF_AGENT_FREEZE_STATE, seq, &st, sizeof(st));
}

static void client_freeze_failed(Client *c, int err)
{
    SfLocalAnswer a = { .error = err, .kind = SF_LOCAL_KIND_FREEZE };

    client_answer(c, &a, NULL, 0);
}

/*
 * FreezeDone: the workload is frozen (err 0), or could not be frozen and
 * nothing is (err > 0).  Requests waiting for it go out, or fail; the
 * host hears about its FREEZE.
 */
static void on_frozen(void *opaque, int err)
{
    for (int i = 0; i < MAX_PENDING; i++) {
        Pending *p = &pending[i];
        Client *c;

        if (!p->used || !p->freeze_wait) {
            continue;
        }
        if (!err) {
            p->freeze_wait = false;
            continue;
        }
        c = client_by_cid(p->cid);
        if (c) {
            client_freeze_failed(c, err);
        }
        p->used = false;
    }
    if (host_freeze_seq) {
        report_freeze(host_freeze_seq, err);
        host_freeze_seq = 0;
    }
    pump();
}

/* FREEZE from the host: freeze (until a thaw or the timeout), or thaw. */
static void on_freeze(uint32_t seq, const SfAgentFreeze *f)
{
    int err;

    if (!f->freeze) {
        /* A thaw also supersedes a freeze still settling. */
        host_freeze_seq = 0;
        freeze_drop(FREEZE_HOLDER_HOST);
        report_freeze(seq, 0);
        return;
    }
    if (f->timeout_ms < 1 || f->timeout_ms > 600000) {
        report_freeze(seq, EINVAL);
        return;
    }
    host_freeze_seq = seq;
    err = freeze_hold(FREEZE_HOLDER_HOST, now_ms() + f->timeout_ms);
    if (err < 0) {
        host_freeze_seq = 0;
        report_freeze(seq, -err);
    }
    /* Otherwise on_frozen() reports, maybe already done. */
}

/*
 * A program may only freeze the workload it is part of: its cgroup
 * (/proc/PID/cgroup, v2 line "0::PATH") must be the workload cgroup or
 * below it.  0 or a positive errno.  Not checked in a dry run, whose
 * clients are the test's own processes.
 */
static int client_may_freeze(const Client *c)
{
    char path[64], line[PATH_MAX + 8], want[PATH_MAX];
    size_t wl;
    int err = EPERM;
    FILE *f;

    if (cfg.dry_run) {
        return 0;
    }
    if (!c->pid) {
        return EPERM;
    }
    snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)c->pid);
    snprintf(want, sizeof(want), "0::/%s", cfg.workload);
    wl = strlen(want);
    f = fopen(path, "re");
    if (!f) {
        return EPERM;
    }
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        if (!strncmp(line, want, wl) && (line[wl] == '\0' || line[wl] == '/')) {
            err = 0;
        }
    }
    fclose(f);
    return err;
}

static void on_frame(const SfAgentHdr *h, const uint8_t *body)
{
    switch (h->type) {
    case SF_AGENT_WELCOME: {
        SfAgentWelcome w;
        Pending *p = pending_by_seq(h->seq);

        memcpy(&w, body, sizeof(w));
        if (!p || p->type != SF_AGENT_HELLO) {
            agent_log("host: unexpected WELCOME seq %u ignored", h->seq);
            return;
        }
        p->used = false;
        if (w.version != SF_AGENT_VERSION) {
            agent_log("host: speaks version %u, we speak %u", w.version,
                      SF_AGENT_VERSION);
        }
        host_max_pending = w.max_pending < 1    ? 1
                           : w.max_pending > 64 ? 64
                                                : w.max_pending;
        agent_log("host: welcome, max_pending %u", host_max_pending);
        break;
    }
    case SF_AGENT_RESULT: {
        SfAgentResult r;

        memcpy(&r, body, sizeof(r));
        on_result(h->seq, &r);
        break;
    }
    case SF_AGENT_IDENTITY: {
        SfAgentIdentity id;

        memcpy(&id, body, sizeof(id));
        on_identity(h->seq, &id);
        explicit_bzero(&id, sizeof(id)); /* the clone's entropy */
        break;
    }
    case SF_AGENT_FREEZE: {
        SfAgentFreeze f;

        memcpy(&f, body, sizeof(f));
        on_freeze(h->seq, &f);
        break;
    }
    case SF_AGENT_EXITED: {
        SfAgentExited e;

        memcpy(&e, body, sizeof(e));
        if (h->seq || !e.ticket || e.ticket > INT64_MAX || !e.clone_id ||
            e.clone_id > MAX_CLONES || e.how > SF_AGENT_HOW_CRASHED) {
            agent_log("host: bad EXITED frame ignored");
            return;
        }
        agent_log("host: ticket %llu clone %u ended (how %u, status %d)",
                  (unsigned long long)e.ticket, e.clone_id, e.how, e.status);
        ticket_record_exit(&e);
        break;
    }
    }
    pump();
}

static void port_read(void)
{
    for (;;) {
        ssize_t n = read(port_fd, reader.buf + reader.len,
                         sizeof(reader.buf) - reader.len);
        uint8_t body[SF_AGENT_MAX_BODY];
        SfAgentHdr h;

        if (n == 0) {
            port_close("end of file");
            return;
        }
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                port_close(strerror(errno));
            }
            return;
        }
        reader.len += n;
        while (chan_next_frame(&reader, &h, body)) {
            on_frame(&h, body);
            explicit_bzero(body, sizeof(body));
            if (port_fd < 0) {
                return;
            }
        }
    }
}

/* ---- deadlines ---- */

static void request_timed_out(Pending *p)
{
    Client *c = client_by_cid(p->cid);
    SfLocalAnswer a = { .error = ETIMEDOUT,
                        .value = type_timeout(p->type),
                        .count = p->sent       ? SF_LOCAL_TIMEOUT_UNANSWERED
                                 : port_fd < 0 ? SF_LOCAL_TIMEOUT_NO_CHANNEL
                                               : SF_LOCAL_TIMEOUT_QUEUED };

    agent_log("host: no answer to the %s request seq %u within %g s (%s); "
              "is sfd managing this VM?",
              sf_agent_type_name(p->type), p->seq,
              type_timeout(p->type) / 1000.0,
              p->sent       ? "sent"
              : port_fd < 0 ? "no channel to the host"
                            : "not sent: the host holds as many "
                              "unanswered requests as it takes");
    if (c) {
        if (p->type == SF_AGENT_EXIT) {
            c->exit_sent = false;
        }
        client_answer(c, &a, NULL, 0);
    }
    freeze_drop(p->order);
    if (p->sent) {
        /* The host still holds it: keep its seq for a late answer. */
        p->timed_out = true;
        p->cid = 0;
    } else {
        p->used = false;
    }
}

/*
 * Answer ETIMEDOUT for the requests whose deadline has passed.  Returns
 * the ms until the next deadline, or -1 for none.
 */
static int pending_expire(void)
{
    int64_t now = now_ms(), next = INT64_MAX;
    bool due = false;

    for (int i = 0; i < MAX_PENDING; i++) {
        due |= pending[i].used && !pending[i].timed_out &&
               pending[i].deadline <= now;
    }
    if (due && port_fd >= 0) {
        /* An answer that has already arrived wins over the deadline. */
        port_read();
        now = now_ms();
    }
    for (int i = 0; i < MAX_PENDING; i++) {
        Pending *p = &pending[i];

        if (!p->used || p->timed_out) {
            continue;
        }
        if (p->deadline <= now) {
            request_timed_out(p);
        } else if (p->deadline < next) {
            next = p->deadline;
        }
    }
    if (next == INT64_MAX) {
        return -1;
    }
    return next - now > INT_MAX ? INT_MAX : (int)(next - now);
}

/* ---- requests from clients ---- */

static void client_request(Client *c, const SfLocalReq *r)
{
    union {
        SfAgentTicketReq ticket;
        SfAgentTicketRef ref;
        SfAgentExitReq exit;
        SfAgentCreateReq create;
    } b;
    uint8_t type;
    size_t len;
    Ticket *t;
    bool freeze = false;
    Pending *p;
    int err;

    if (c->busy) {
        bool join_wait = c->join_wait;

        client_error(c, EBUSY);
        /* The first request is still outstanding. */
        c->busy = true;
        c->join_wait = join_wait;
        return;
    }
    c->busy = true;
    c->req = *r;
    switch (r->op) {
    case SF_LOCAL_OP_TICKET:
        if (r->n < 1 || r->n > MAX_CLONES) {
            client_error(c, EINVAL);
            return;
        }
        b.ticket = (SfAgentTicketReq){ .clones = r->n, .flags = r->flags };
        type = SF_AGENT_TICKET;
        len = sizeof(b.ticket);
        break;
    case SF_LOCAL_OP_GRANTED: {
        t = ticket_find(r->ticket);
        if (!t || !t->granted) {
            client_error(c, ENOENT);
        } else {
            SfLocalAnswer a = { .count = t->granted };

            client_answer(c, &a, NULL, 0);
        }
        return;
    }
    case SF_LOCAL_OP_CLONE:
    case SF_LOCAL_OP_KILL:
        if (!r->ticket || r->ticket > INT64_MAX) {
            client_error(c, EINVAL);
            return;
        }
        b.ref.ticket = r->ticket;
        type = r->op == SF_LOCAL_OP_CLONE ? SF_AGENT_CLONE : SF_AGENT_KILL;
        len = sizeof(b.ref);
        freeze =
            r->op == SF_LOCAL_OP_CLONE && (r->flags & SF_LOCAL_CLONE_FREEZE);
        break;
    case SF_LOCAL_OP_EXIT:
        if (r->how != SF_AGENT_HOW_EXITED && r->how != SF_AGENT_HOW_SIGNALED) {
            client_error(c, EINVAL);
            return;
        }
        if (!my_clone_id) {
            client_error(c, ENOTSUP);
            return;
        }
        b.exit = (SfAgentExitReq){ .status = r->status, .how = r->how };
        type = SF_AGENT_EXIT;
        len = sizeof(b.exit);
        c->exit_sent = true;
        break;
    case SF_LOCAL_OP_CHECKPOINT:
        type = SF_AGENT_CHECKPOINT;
        len = 0;
        freeze = r->flags & SF_LOCAL_CLONE_FREEZE;
        break;
    case SF_LOCAL_OP_CREATE:
        if (!r->ticket || r->ticket > INT64_MAX || !r->checkpoint ||
            r->checkpoint > INT64_MAX) {
            client_error(c, EINVAL);
            return;
        }
        b.create = (SfAgentCreateReq){ .checkpoint = r->checkpoint,
                                       .ticket = r->ticket };
        type = SF_AGENT_CREATE;
        len = sizeof(b.create);
        break;
    case SF_LOCAL_OP_JOIN:
        t = ticket_find(r->ticket);
        if (!t) {
            client_error(c, ENOENT);
        } else if (!t->started) {
            client_error(c, EINVAL);
        } else if (ticket_done(t)) {
            join_answer(c, t);
        } else {
            c->join_wait = true;
        }
        return;
    default:
        client_error(c, EINVAL);
        return;
    }
    if (freeze && (err = client_may_freeze(c))) {
        client_freeze_failed(c, err);
        return;
    }
    p = request_queue(type, c->cid, r, &b, len, freeze);
    if (!p) {
        if (type == SF_AGENT_EXIT) {
            c->exit_sent = false;
        }
        client_error(c, EBUSY);
        return;
    }
    /* Sent once the workload is frozen: on_frozen(), maybe right here. */
    if (freeze && (err = freeze_hold(p->order, p->deadline)) < 0) {
        p->used = false;
        client_freeze_failed(c, -err);
    }
}

static void client_close(Client *c)
{
    if (c->got_identity && !c->exit_sent) {
        send_lost();
    }
    close(c->fd);
    c->fd = -1;
    /* Its pending requests stay, detached (see the top of the file). */
}

static void client_read(Client *c)
{
    uint8_t buf[sizeof(SfLocalHdr) + sizeof(SfLocalReq) + 1];
    SfLocalHdr h;
    SfLocalReq r;
    ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);

    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }
    if (n <= 0) {
        client_close(c);
        return;
    }
    memcpy(&h, buf, n < (ssize_t)sizeof(h) ? 0 : sizeof(h));
    if (n != sizeof(h) + sizeof(r) || h.magic != SF_LOCAL_MAGIC ||
        h.version != SF_LOCAL_VERSION || h.type != SF_LOCAL_REQ ||
        h.length != sizeof(r) || h.reserved) {
        agent_log("client %llu: malformed request, closing",
                  (unsigned long long)c->cid);
        client_error(c, EPROTO);
        client_close(c);
        return;
    }
    memcpy(&r, buf + sizeof(h), sizeof(r));
    client_request(c, &r);
}

static void client_accept(void)
{
    int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

    if (fd < 0) {
        return;
    }
    for (int i = 0; i < MAX_CLIENTS; i++) {
        if (clients[i].fd < 0) {
            struct ucred cred = { 0 };
            socklen_t clen = sizeof(cred);

            getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen);
            clients[i] =
                (Client){ .fd = fd, .cid = next_cid++, .pid = cred.pid };
            return;
        }
    }
    agent_log("too many clients, refusing one");
    close(fd);
}

static int listen_open(void)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(sock_path) >= sizeof(sa.sun_path)) {
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, sock_path);
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return -errno;
    }
    unlink(sock_path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        chmod(sock_path, 0666) < 0 || listen(fd, 16) < 0) {
        int err = errno;

        close(fd);
        return -err;
    }
    return fd;
}

/* ---- main ---- */

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: sf-agent [options]\n"
        "  --port PATH         channel: a char device or a Unix socket\n"
        "                      (default: the virtio port named %s)\n"
        "  --port-fd N         channel: an inherited fd (tests)\n"
        "  --run-dir DIR       default %s\n"
        "  --socket PATH       default RUN-DIR/%s\n"
        "  --root DIR          prefix for /etc (default /)\n"
        "  --iface NAME        default eth0\n"
        "  --script-timeout S  per post-clone script (default 30)\n"
        "  --request-timeout S fail a ticket, kill, exit or create\n"
        "                      request with ETIMEDOUT when the host has\n"
        "                      not answered it in S seconds (default 30;\n"
        "                      fractions allowed)\n"
        "  --fork-timeout S    the same for clone and checkpoint, which\n"
        "                      take longer (default 4 x request-timeout,\n"
        "                      so 120); sf_join has no deadline\n"
        "  --cgroup-root DIR   the cgroup v2 mount (default /sys/fs/cgroup)\n"
        "  --workload NAME     the cgroup under it that freezing the\n"
        "                      workload freezes (default sf-workload;\n"
        "                      created at start)\n"
        "  --dry-run FILE      record the identity steps and freezes in\n"
        "                      FILE instead of applying them; needs\n"
        "                      --run-dir and a --root other than /\n"
        "A channel other than a character device needs --dry-run, so a\n"
        "test never changes the machine it runs on.\n",
        SF_AGENT_PORT_NAME, SF_LOCAL_RUN_DIR, SF_LOCAL_SOCK_NAME);
}

/* Seconds (> 0, fractions allowed) to ms; -1 when not valid. */
static int64_t parse_seconds(const char *arg)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(arg, &end);
    if (errno || end == arg || *end || !(v >= 0.001 && v <= 1e6)) {
        return -1;
    }
    return (int64_t)(v * 1000 + 0.5);
}

static void load_clone_id(void)
{
    char path[PATH_MAX], buf[32] = "";
    FILE *f;

    snprintf(path, sizeof(path), "%s/id", cfg.run_dir);
    f = fopen(path, "re");
    if (f) {
        if (fgets(buf, sizeof(buf), f)) {
            my_clone_id = strtoul(buf, NULL, 10);
        }
        fclose(f);
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "port", required_argument, NULL, 'p' },
        { "port-fd", required_argument, NULL, 'f' },
        { "run-dir", required_argument, NULL, 'r' },
        { "socket", required_argument, NULL, 's' },
        { "root", required_argument, NULL, 'R' },
        { "iface", required_argument, NULL, 'i' },
        { "script-timeout", required_argument, NULL, 't' },
        { "dry-run", required_argument, NULL, 'n' },
        { "request-timeout", required_argument, NULL, 'T' },
        { "fork-timeout", required_argument, NULL, 'F' },
        { "cgroup-root", required_argument, NULL, 'C' },
        { "workload", required_argument, NULL, 'W' },
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    char sock_buf[PATH_MAX];
    bool run_dir_set = false;
    int o;

    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'p':
            port_path = optarg;
            break;
        case 'f':
            port_fd_arg = atoi(optarg);
            break;
        case 'r':
            cfg.run_dir = optarg;
            run_dir_set = true;
            break;
        case 's':
            sock_path = optarg;
            break;
        case 'R':
            cfg.root = optarg;
            break;
        case 'i':
            cfg.iface = optarg;
            break;
        case 't':
            cfg.script_timeout = atoi(optarg);
            break;
        case 'n':
            cfg.dry_run = optarg;
            break;
        case 'T':
            request_timeout = parse_seconds(optarg);
            break;
        case 'C':
            cfg.cgroup_root = optarg;
            break;
        case 'W':
            cfg.workload = optarg;
            break;
        case 'F':
            fork_timeout = parse_seconds(optarg);
            if (fork_timeout < 0) {
                fork_timeout = -2; /* invalid, not "default" */
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (fork_timeout == -1 && request_timeout > 0) {
        fork_timeout = 4 * request_timeout;
    }
    if (optind < argc || cfg.script_timeout < 1 || port_fd_arg < -1 ||
        request_timeout <= 0 || fork_timeout <= 0 ||
        !identity_hostname_ok(cfg.workload, 64) || cfg.workload[0] == '.') {
        usage(stderr);
        return 2;
    }
    if (cfg.dry_run && (!run_dir_set || !strcmp(cfg.root, "/"))) {
        fprintf(stderr, "sf-agent: --dry-run needs --run-dir and --root "
                        "pointing at scratch directories\n");
        return 2;
    }
    if (!cfg.dry_run) {
        struct stat st;

        if (port_fd_arg >= 0 ||
            (port_path && (stat(port_path, &st) < 0 || !S_ISCHR(st.st_mode)))) {
            fprintf(stderr, "sf-agent: a channel that is not a character "
                            "device needs --dry-run\n");
            return 2;
        }
    }
    if (!sock_path) {
        snprintf(sock_buf, sizeof(sock_buf), "%s/%s", cfg.run_dir,
                 SF_LOCAL_SOCK_NAME);
        sock_path = sock_buf;
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stderr, NULL, _IOLBF, 0);
    mkdir(cfg.run_dir, 0755);
    load_clone_id();
    for (int i = 0; i < MAX_CLIENTS; i++) {
        clients[i].fd = -1;
    }
    listen_fd = listen_open();
    if (listen_fd < 0) {
        agent_log("cannot listen on %s: %s", sock_path, strerror(-listen_fd));
        return 1;
    }
    agent_log("listening on %s%s%s", sock_path, my_clone_id ? ", clone " : "",
              my_clone_id ? "(restarted)" : "");

    freeze_init(&cfg, on_frozen, NULL);

    for (;;) {
        struct pollfd pfd[3 + MAX_CLIENTS];
        Client *who[3 + MAX_CLIENTS];
        int n = 0, wait, fwait, ffd = freeze_fd(), fidx = -1;

        if (port_fd < 0) {
            port_try_open();
        }
        wait = pending_expire();
        fwait = freeze_expire();
        if (fwait >= 0 && (wait < 0 || fwait < wait)) {
            wait = fwait;
        }
        if (port_fd < 0 && (wait < 0 || wait > 1000)) {
            wait = 1000;
        }
        pfd[n] = (struct pollfd){ .fd = listen_fd, .events = POLLIN };
        who[n++] = NULL;
        if (port_fd >= 0) {
            pfd[n] =
                (struct pollfd){ .fd = port_fd,
                                 .events = POLLIN | (outlen ? POLLOUT : 0) };
            who[n++] = NULL;
        }
        for (int i = 0; i < MAX_CLIENTS; i++) {
            if (clients[i].fd >= 0) {
                pfd[n] =
                    (struct pollfd){ .fd = clients[i].fd, .events = POLLIN };
                who[n++] = &clients[i];
            }
        }
        if (ffd >= 0) {
            /* cgroup.events: POLLPRI when the workload's state changes. */
            pfd[n] = (struct pollfd){ .fd = ffd, .events = POLLPRI };
            who[fidx = n++] = NULL;
        }
        if (poll(pfd, n, wait) < 0) {
            if (errno == EINTR) {
                continue;
            }
            agent_log("poll: %s", strerror(errno));
            return 1;
        }
        if (pfd[0].revents & POLLIN) {
            client_accept();
        }
        if (port_fd >= 0 && pfd[1].fd == port_fd) {
            if (pfd[1].revents & POLLOUT) {
                port_flush();
            }
            if (pfd[1].revents & (POLLIN | POLLERR)) {
                port_read();
            } else if (pfd[1].revents & POLLHUP) {
                /* virtio-serial: the host side is not connected. */
                port_close("host disconnected");
            }
        }
        for (int i = 0; i < n; i++) {
            if (who[i] && who[i]->fd == pfd[i].fd &&
                (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))) {
                client_read(who[i]);
            }
        }
        if (fidx >= 0 && (pfd[fidx].revents & (POLLPRI | POLLERR))) {
            freeze_event();
        }
        pump();
    }
}
