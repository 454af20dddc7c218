/*
 * libsf: the in-guest fork API (sf.h) as a client of sf-agent.
 *
 * Plain C and libc only (no GLib): libsf is linked into arbitrary guest
 * programs, statically into sfclone and the examples, and loaded by
 * Python through ctypes, so it must not drag a runtime along.
 *
 * One connection per process, opened on first use, close-on-exec, and
 * reopened in a child after fork() (the agent tells connections apart,
 * and a clone's "lost" report depends on the connection that received
 * the identity staying open for the life of the program).  The
 * connection survives a VM fork: the whole VM, agent included, is
 * cloned, so the request that forked is answered in the parent with a
 * RESULT and in each clone with an IDENTITY.  A mutex keeps one request
 * outstanding per connection, as the local protocol requires.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "sf.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sf-agent-proto.h"
#include "sf-local.h"

#define SF_PUBLIC __attribute__((visibility("default")))

static pthread_mutex_t sf_lock = PTHREAD_MUTEX_INITIALIZER;
static int sf_fd = -1;
static pthread_once_t sf_atfork_once = PTHREAD_ONCE_INIT;

/*
 * A process fork()ed while another thread sat in sf_call() (a fork of the
 * VM can take minutes) would inherit sf_lock held, and its first call
 * would deadlock.  The child has one thread and none of the parent's
 * calls in flight: a fresh lock, and its own connection on first use.
 */
static void sf_atfork_child(void)
{
    pthread_mutex_init(&sf_lock, NULL);
    if (sf_fd >= 0) {
        close(sf_fd); /* the child's copy; the parent keeps its own */
        sf_fd = -1;
    }
}

static void sf_atfork_register(void)
{
    pthread_atfork(NULL, NULL, sf_atfork_child);
}
static pid_t sf_fd_pid;
static __thread char sf_err[256];

static const char *sf_run_dir(void)
{
    const char *d = secure_getenv("SF_RUN_DIR");

    return d && *d ? d : SF_LOCAL_RUN_DIR;
}

/* What an errno means for this API (docs/guest-api.md). */
static const char *sf_errno_text(int err)
{
    switch (err) {
    case EINVAL:
        return "invalid argument";
    case ENOENT:
        return "unknown ticket or checkpoint";
    case EALREADY:
        return "ticket already used";
    case EDQUOT:
        return "clone quota exhausted";
    case EAGAIN:
        return "rate limited, try again later";
    case EBUSY:
        return "too many requests pending";
    case ENOTSUP:
        return "not available here";
    case EIO:
        return "the fork failed on the host";
    case EPROTO:
        return "protocol error";
    case ECANCELED:
        return "this VM became a clone while the request was outstanding";
    case ETIMEDOUT:
        return "the host did not answer in time";
    default:
        return strerror(err);
    }
}

static int sf_fail(int err, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(sf_err, sizeof(sf_err), fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof(sf_err)) {
        snprintf(sf_err + n, sizeof(sf_err) - n, ": %s", sf_errno_text(err));
    }
    errno = err;
    return -1;
}

static void sf_disconnect_locked(void)
{
    if (sf_fd >= 0) {
        close(sf_fd);
        sf_fd = -1;
    }
}

/* A new connection to the agent: an fd, or -errno. */
static int sf_open_conn(void)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int n, fd;

    n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", sf_run_dir(),
                 SF_LOCAL_SOCK_NAME);
    if (n < 0 || (size_t)n >= sizeof(sa.sun_path)) {
        return -ENAMETOOLONG;
    }
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int err = errno;

        close(fd);
        return -err;
    }
    return fd;
}

static int sf_connect_locked(void)
{
    int fd;

    if (sf_fd >= 0 && sf_fd_pid == getpid()) {
        return 0;
    }
    /* Inherited from the parent process by fork(): leave it to the parent. */
    sf_disconnect_locked();
    fd = sf_open_conn();
    if (fd < 0) {
        return fd;
    }
    sf_fd = fd;
    sf_fd_pid = getpid();
    return 0;
}

/*
 * Send one request on fd and receive its answer into buf; -errno.
 * *sent says whether the request left (a failure after that is not safe
 * to retry: the agent may have acted on it).
 */
static int sf_exchange(int fd, const void *msg, size_t len, void *buf,
                       size_t cap, ssize_t *got, bool *sent)
{
    ssize_t n;

    *sent = false;
    do {
        n = send(fd, msg, len, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)len) {
        return n < 0 ? -errno : -EPROTO;
    }
    *sent = true;
    do {
        n = recv(fd, buf, cap, MSG_TRUNC);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        return n < 0 ? -errno : -ECONNRESET;
    }
    *got = n;
    return 0;
}

/*
 * Send one request and wait for its answer.  Statuses of a JOIN answer
 * go to st (up to max_st; *nst is the number stored).  Returns 0 with
 * *ans filled (ans->error may be set), or -errno for a local failure.
 *
 * JOIN, which may block for as long as the clones run and never makes
 * this program a clone, goes on a connection of its own, so sf_kill()
 * and the rest stay usable from other threads meanwhile.
 */
static int sf_call(const SfLocalReq *req, SfLocalAnswer *ans, sf_status_t *st,
                   int max_st, int *nst)
{
    struct {
        SfLocalHdr hdr;
        SfLocalReq req;
    } msg = {
        .hdr = { .magic = SF_LOCAL_MAGIC,
                 .version = SF_LOCAL_VERSION,
                 .type = SF_LOCAL_REQ,
                 .length = sizeof(SfLocalReq) },
        .req = *req,
    };
    size_t cap = sizeof(SfLocalHdr) + sizeof(SfLocalAnswer) +
                 (size_t)max_st * sizeof(SfLocalStatus);
    bool own = req->op == SF_LOCAL_OP_JOIN, sent;
    unsigned char *buf;
    SfLocalHdr hdr;
    ssize_t n = 0;
    int ret, fd = -1;

    pthread_once(&sf_atfork_once, sf_atfork_register);
    buf = malloc(cap);
    if (!buf) {
        return -ENOMEM;
    }
    if (own) {
        fd = sf_open_conn();
        ret = fd < 0 ? fd
                     : sf_exchange(fd, &msg, sizeof(msg), buf, cap, &n, &sent);
    } else {
        pthread_mutex_lock(&sf_lock);
        for (int attempt = 0;; attempt++) {
            bool cached = sf_fd >= 0 && sf_fd_pid == getpid();

            ret = sf_connect_locked();
            if (ret < 0) {
                break;
            }
            ret = sf_exchange(sf_fd, &msg, sizeof(msg), buf, cap, &n, &sent);
            /*
             * The agent restarted since our last call and the send failed:
             * the request never reached anyone, so it is safe to send it
             * again on a new connection.  Once sent, never again (a ticket
             * could be granted twice).
             */
            if (ret < 0) {
                sf_disconnect_locked();
                if (cached && attempt == 0 && !sent &&
                    (ret == -EPIPE || ret == -ECONNRESET || ret == -ENOTCONN)) {
                    continue;
                }
            }
            break;
        }
    }
    if (ret < 0) {
        goto out;
    }
    ret = -EPROTO;
    if ((size_t)n > cap || (size_t)n < sizeof(hdr) + sizeof(*ans)) {
        goto out_desync;
    }
    memcpy(&hdr, buf, sizeof(hdr));
    memcpy(ans, buf + sizeof(hdr), sizeof(*ans));
    if (hdr.magic != SF_LOCAL_MAGIC || hdr.version != SF_LOCAL_VERSION ||
        hdr.type != SF_LOCAL_ANSWER || hdr.length != n - sizeof(hdr) ||
        ans->nstatus > (uint32_t)max_st ||
        hdr.length != sizeof(*ans) + ans->nstatus * sizeof(SfLocalStatus) ||
        ans->error < 0 || ans->error > 4095) {
        goto out_desync;
    }
    if (nst) {
        const unsigned char *p = buf + sizeof(hdr) + sizeof(*ans);

        for (uint32_t i = 0; i < ans->nstatus; i++) {
            SfLocalStatus s;

            memcpy(&s, p + i * sizeof(s), sizeof(s));
            st[i] =
                (sf_status_t){ .id = s.id, .how = s.how, .status = s.status };
        }
        *nst = ans->nstatus;
    }
    ret = 0;
    goto out;

out_desync:
    /* The stream can no longer be trusted; a new call reconnects. */
    if (!own) {
        sf_disconnect_locked();
    }
out:
    if (own) {
        if (fd >= 0) {
            close(fd);
        }
    } else {
        pthread_mutex_unlock(&sf_lock);
    }
    free(buf);
    return ret;
}

/* The agent's ETIMEDOUT answer (sf-local.h) as a message. */
static int sf_fail_timeout(const char *what, const SfLocalReq *req,
                           const SfLocalAnswer *ans)
{
    static const char *const ops[] = {
        [SF_LOCAL_OP_TICKET] = "ticket",
        [SF_LOCAL_OP_CLONE] = "clone",
        [SF_LOCAL_OP_KILL] = "kill",
        [SF_LOCAL_OP_EXIT] = "exit",
        [SF_LOCAL_OP_CHECKPOINT] = "checkpoint",
        [SF_LOCAL_OP_CREATE] = "create",
    };
    const char *op = req->op < sizeof(ops) / sizeof(ops[0]) && ops[req->op]
                         ? ops[req->op]
                         : "?";
    const char *why = ans->count == SF_LOCAL_TIMEOUT_QUEUED
                          ? " (it was never sent: the host still holds as "
                            "many unanswered requests as it takes)"
                      : ans->count == SF_LOCAL_TIMEOUT_NO_CHANNEL
                          ? " (it was never sent: the agent has no channel "
                            "to the host)"
                          : "";

    snprintf(sf_err, sizeof(sf_err),
             "%s: the host did not answer the %s request within %g s%s; is "
             "sfd managing this VM?",
             what, op, ans->value / 1000.0, why);
    errno = ETIMEDOUT;
    return -1;
}

/* sf_call() for requests without statuses; -1 + errno on any error. */
static int sf_simple(const char *what, const SfLocalReq *req,
                     SfLocalAnswer *ans)
{
    int ret = sf_call(req, ans, NULL, 0, NULL);

    if (ret < 0) {
        return sf_fail(-ret, "%s: cannot talk to the snowflock agent (%s/%s)",
                       what, sf_run_dir(), SF_LOCAL_SOCK_NAME);
    }
    if (ans->error && ans->kind == SF_LOCAL_KIND_FREEZE) {
        errno = ans->error;
        snprintf(sf_err, sizeof(sf_err),
                 "%s: the workload could not be frozen: %s", what,
                 ans->error == EPERM
                     ? "this program is not in the workload cgroup"
                 : ans->error == ENOENT
                     ? "the guest has no workload cgroup (cgroup v2)"
                 : ans->error == ETIMEDOUT
                     ? "its processes did not all freeze in time"
                     : strerror(ans->error));
        return -1;
    }
    if (ans->error == ETIMEDOUT) {
        return sf_fail_timeout(what, req, ans);
    }
    if (ans->error) {
        return sf_fail(ans->error, "%s", what);
    }
    return 0;
}

SF_PUBLIC sf_ticket_t sf_request_ticket(int n, unsigned flags)
{
    SfLocalReq req = { .op = SF_LOCAL_OP_TICKET, .n = n, .flags = flags };
    SfLocalAnswer ans;

    if (n < 1) {
        return sf_fail(EINVAL, "sf_request_ticket: n=%d must be >= 1", n);
    }
    if (sf_simple("sf_request_ticket", &req, &ans) < 0) {
        return -1;
    }
    if (ans.value == 0 || ans.value > INT64_MAX) {
        return sf_fail(EPROTO, "sf_request_ticket: bad ticket from agent");
    }
    return (sf_ticket_t)ans.value;
}

SF_PUBLIC int sf_ticket_granted(sf_ticket_t t)
{
    SfLocalReq req = { .op = SF_LOCAL_OP_GRANTED, .ticket = t };
    SfLocalAnswer ans;

    if (t <= 0) {
        return sf_fail(EINVAL, "sf_ticket_granted: bad ticket %lld",
                       (long long)t);
    }
    if (sf_simple("sf_ticket_granted", &req, &ans) < 0) {
        return -1;
    }
    return ans.count > INT_MAX ? INT_MAX : (int)ans.count;
}

/* CLONE and CHECKPOINT: 0 in the parent, the clone id in a clone. */
static int sf_fork_answer(const char *what, const SfLocalAnswer *ans)
{
    if (ans->kind == SF_LOCAL_KIND_IDENTITY) {
        if (ans->clone_id < 1 || ans->clone_id > INT_MAX) {
            return sf_fail(EPROTO, "%s: bad clone id", what);
        }
        return (int)ans->clone_id;
    }
    if (ans->kind != SF_LOCAL_KIND_RESULT) {
        return sf_fail(EPROTO, "%s: bad answer kind %u", what, ans->kind);
    }
    return 0;
}

SF_PUBLIC int sf_clone_flags(sf_ticket_t t, unsigned flags)
{
    SfLocalReq req = { .op = SF_LOCAL_OP_CLONE, .ticket = t };
    SfLocalAnswer ans;

    if (t <= 0) {
        return sf_fail(EINVAL, "sf_clone: bad ticket %lld", (long long)t);
    }
    if (flags & ~SF_CLONE_FREEZE) {
        return sf_fail(EINVAL, "sf_clone: unknown flags 0x%x", flags);
    }
    if (flags & SF_CLONE_FREEZE) {
        req.flags = SF_LOCAL_CLONE_FREEZE;
    }
    if (sf_simple("sf_clone", &req, &ans) < 0) {
        return -1;
    }
    return sf_fork_answer("sf_clone", &ans);
}

SF_PUBLIC int sf_clone(sf_ticket_t t)
{
    return sf_clone_flags(t, 0);
}

static int sf_exit_how(int how, int status)
{
    SfLocalReq req = { .op = SF_LOCAL_OP_EXIT, .status = status, .how = how };
    SfLocalAnswer ans;

    if (sf_simple("sf_exit", &req, &ans) < 0) {
        return -1;
    }
    /* Acknowledged rather than stopped: the clone is over all the same. */
    _exit(how == SF_EXITED ? status & 0xff : 128 + (status & 0x7f));
}

SF_PUBLIC int sf_exit(int status)
{
    return sf_exit_how(SF_EXITED, status);
}

SF_PUBLIC int sf_exit_wait(int wstatus)
{
    if (WIFEXITED(wstatus)) {
        return sf_exit_how(SF_EXITED, WEXITSTATUS(wstatus));
    }
    if (WIFSIGNALED(wstatus)) {
        return sf_exit_how(SF_SIGNALED, WTERMSIG(wstatus));
    }
    return sf_fail(EINVAL, "sf_exit_wait: status 0x%x is not an exit", wstatus);
}

SF_PUBLIC int sf_join(sf_ticket_t t, sf_status_t *st, int max)
{
    SfLocalReq req = { .op = SF_LOCAL_OP_JOIN, .ticket = t };
    SfLocalAnswer ans;
    int ret, nst = 0;

    if (t <= 0 || max < 0 || (max > 0 && !st)) {
        return sf_fail(EINVAL, "sf_join: bad arguments");
    }
    if (max > SF_LOCAL_MAX_STATUS) {
        max = SF_LOCAL_MAX_STATUS;
    }
    req.n = max;
    /* No deadline: the clones may run for hours. */
    ret = sf_call(&req, &ans, st, max, &nst);
    if (ret == -ECONNRESET) {
        return sf_fail(ECONNRESET,
                       "sf_join: ticket %lld: the snowflock agent went away "
                       "while waiting (restarted?); the exits of the "
                       "ticket's clones can no longer be reported",
                       (long long)t);
    }
    if (ret < 0) {
        return sf_fail(-ret, "sf_join: cannot talk to the snowflock agent");
    }
    if (ans.error == ENOENT) {
        return sf_fail(ENOENT,
                       "sf_join: ticket %lld: the agent knows no clones of "
                       "it (a ticket of another VM, or the agent restarted "
                       "and lost its table)",
                       (long long)t);
    }
    if (ans.error) {
        return sf_fail(ans.error, "sf_join: ticket %lld", (long long)t);
    }
    return nst;
}

SF_PUBLIC int sf_kill(sf_ticket_t t)
{
    SfLocalReq req = { .op = SF_LOCAL_OP_KILL, .ticket = t };
    SfLocalAnswer ans;

    if (t <= 0) {
        return sf_fail(EINVAL, "sf_kill: bad ticket %lld", (long long)t);
    }
    if (sf_simple("sf_kill", &req, &ans) < 0) {
        return -1;
    }
    return ans.count > INT_MAX ? INT_MAX : (int)ans.count;
}

SF_PUBLIC int sf_checkpoint_parent(sf_checkpoint_t *cp)
{
    SfLocalReq req = { .op = SF_LOCAL_OP_CHECKPOINT };
    SfLocalAnswer ans;
    int ret;

    if (!cp) {
        return sf_fail(EINVAL, "sf_checkpoint_parent: cp is NULL");
    }
    if (sf_simple("sf_checkpoint_parent", &req, &ans) < 0) {
        return -1;
    }
    ret = sf_fork_answer("sf_checkpoint_parent", &ans);
    if (ret == 0 && (ans.value == 0 || ans.value > INT64_MAX)) {
        return sf_fail(EPROTO, "sf_checkpoint_parent: bad checkpoint");
    }
    if (ret >= 0) {
        *cp = ret == 0 ? (sf_checkpoint_t)ans.value : 0;
    }
    return ret;
}

SF_PUBLIC int sf_create_clones(sf_checkpoint_t cp, sf_ticket_t t)
{
    SfLocalReq req = { .op = SF_LOCAL_OP_CREATE,
                       .checkpoint = cp,
                       .ticket = t };
    SfLocalAnswer ans;

    if (cp <= 0 || t <= 0) {
        return sf_fail(EINVAL, "sf_create_clones: bad checkpoint or ticket");
    }
    if (sf_simple("sf_create_clones", &req, &ans) < 0) {
        return -1;
    }
    return ans.count > INT_MAX ? INT_MAX : (int)ans.count;
}

static int sf_read_number(const char *name)
{
    char path[PATH_MAX], buf[32], *end;
    FILE *f;
    long v;
    size_t n;

    snprintf(path, sizeof(path), "%s/%s", sf_run_dir(), name);
    f = fopen(path, "re");
    if (!f) {
        if (errno == ENOENT) {
            return 0;
        }
        return sf_fail(errno, "cannot open %s", path);
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    errno = 0;
    v = strtol(buf, &end, 10);
    if (end == buf || errno || v < 0 || v > INT_MAX || (*end && *end != '\n')) {
        return sf_fail(EINVAL, "%s: not a number", path);
    }
    return (int)v;
}

SF_PUBLIC int sf_id(void)
{
    return sf_read_number("id");
}

SF_PUBLIC int sf_generation(void)
{
    return sf_read_number("generation");
}

SF_PUBLIC const char *sf_last_error(void)
{
    return sf_err;
}
