/*
 * sf-agent and libsf on the host, without a VM.
 *
 * Each case starts the real sf-agent binary on a socketpair (--port-fd)
 * with a scratch run dir and root and --dry-run, so identity steps are
 * only recorded, and plays the QEMU side itself: it reads the agent's
 * frames and writes answers, well-formed or hostile.  libsf is linked
 * statically and pointed at the scratch dir with SF_RUN_DIR; calls that
 * block run in a thread while the test answers as the host.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sf-agent-proto.h"
#include "sf-local.h"
#include "sf.h"

static const char *agent_bin;
static char *base_dir; /* SF_RUN_DIR is base_dir/run, set before threads */

typedef struct Fx {
    char *dir, *run, *root, *dry, *envfile;
    int host; /* our end of the channel */
    pid_t agent;
    uint8_t buf[4096];
    size_t len;
} Fx;

/* ---- the fake host ---- */

static void host_send(Fx *fx, uint8_t type, uint32_t seq, const void *body,
                      size_t len)
{
    SfAgentHdr h = { .magic = SF_AGENT_MAGIC,
                     .version = SF_AGENT_VERSION,
                     .type = type,
                     .seq = seq,
                     .length = len };
    uint8_t out[512];

    memcpy(out, &h, sizeof(h));
    memcpy(out + sizeof(h), body, len);
    g_assert_cmpint(write(fx->host, out, sizeof(h) + len), ==, sizeof(h) + len);
}

static void host_raw(Fx *fx, const void *bytes, size_t len)
{
    g_assert_cmpint(write(fx->host, bytes, len), ==, len);
}

/* Read one frame from the agent (fails the test after 5 s). */
static void host_recv(Fx *fx, SfAgentHdr *h, void *body)
{
    for (;;) {
        if (fx->len >= sizeof(*h)) {
            memcpy(h, fx->buf, sizeof(*h));
            g_assert_cmphex(h->magic, ==, SF_AGENT_MAGIC);
            g_assert_cmpint(h->length, ==, sf_agent_body_len(h->type));
            if (fx->len >= sizeof(*h) + h->length) {
                size_t total = sizeof(*h) + h->length;

                memcpy(body, fx->buf + sizeof(*h), h->length);
                memmove(fx->buf, fx->buf + total, fx->len - total);
                fx->len -= total;
                return;
            }
        }
        struct pollfd p = { .fd = fx->host, .events = POLLIN };
        g_assert_cmpint(poll(&p, 1, 5000), ==, 1);
        ssize_t n =
            read(fx->host, fx->buf + fx->len, sizeof(fx->buf) - fx->len);
        g_assert_cmpint(n, >, 0);
        fx->len += n;
    }
}

/* Expect a request of a type; returns its seq. */
static uint32_t host_expect(Fx *fx, uint8_t type, void *body)
{
    uint8_t b[SF_AGENT_MAX_BODY];
    SfAgentHdr h;

    host_recv(fx, &h, b);
    g_assert_cmphex(h.type, ==, type);
    g_assert_cmpuint(h.seq, !=, 0);
    if (body) {
        memcpy(body, b, h.length);
    }
    return h.seq;
}

static bool host_quiet(Fx *fx, int ms)
{
    struct pollfd p = { .fd = fx->host, .events = POLLIN };

    return fx->len == 0 && poll(&p, 1, ms) == 0;
}

static void host_result(Fx *fx, uint32_t seq, int err, uint32_t count,
                        uint64_t value)
{
    SfAgentResult r = { .error = err, .count = count, .value = value };

    host_send(fx, SF_AGENT_RESULT, seq, &r, sizeof(r));
}

static void host_exited(Fx *fx, uint64_t t, uint32_t id, uint32_t how,
                        int status)
{
    SfAgentExited e = {
        .ticket = t, .clone_id = id, .how = how, .status = status
    };

    host_send(fx, SF_AGENT_EXITED, 0, &e, sizeof(e));
}

static SfAgentIdentity make_identity(uint32_t id)
{
    SfAgentIdentity ident = {
        .clone_id = id,
        .generation = 1,
        .ticket = 9,
        .realtime_ns = 1700000000123456789ll,
        .mac = { 0x02, 0x53, 0x46, 0, 0, id },
        .prefix = 24,
        .ipv4 = { 10, 1, 2, 2 + id },
    };

    snprintf(ident.hostname, sizeof(ident.hostname), "vm-%u", id);
    for (int i = 0; i < SF_AGENT_ENTROPY_LEN; i++) {
        ident.entropy[i] = i;
    }
    return ident;
}

/* ---- fixture: a fresh agent on a fresh scratch dir ---- */

/* Deadlines short enough for a test (fixture data). */
static const char *const fast_timeouts[] = { "--request-timeout", "0.3",
                                             "--fork-timeout", "0.5", NULL };

/*
 * Start the agent on fx's dirs with extra options (NULL-terminated, or
 * NULL), and be its host until its socket is up.
 */
static void fx_spawn(Fx *fx, const char *const *extra)
{
    char *cg = g_build_filename(fx->dir, "cgroup", NULL);
    const char *argv[32] = { agent_bin,   "--port-fd",     "10",
                             "--run-dir", fx->run,         "--root",
                             fx->root,    "--dry-run",     fx->dry,
                             "--iface",   "eth0",          "--script-timeout",
                             "5",         "--cgroup-root", cg };
    int argc = 15, sv[2];
    char *sock = g_build_filename(fx->run, SF_LOCAL_SOCK_NAME, NULL);

    for (int i = 0; extra && extra[i]; i++) {
        g_assert_cmpint(argc, <, G_N_ELEMENTS(argv) - 1);
        argv[argc++] = extra[i];
    }
    g_unlink(sock);
    fx->len = 0;
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==,
                    0);
    fx->agent = fork();
    g_assert_cmpint(fx->agent, >=, 0);
    if (fx->agent == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(sv[1], 10);
        execv(agent_bin, (char **)argv);
        _exit(127);
    }
    close(sv[1]);
    fx->host = sv[0];

    /* The agent says HELLO first; we are the device and welcome it. */
    SfAgentHello hello;
    uint32_t seq = host_expect(fx, SF_AGENT_HELLO, &hello);
    g_assert_cmpuint(hello.agent_version, ==, SF_AGENT_VERSION);
    SfAgentWelcome w = { .version = SF_AGENT_VERSION, .max_pending = 8 };
    host_send(fx, SF_AGENT_WELCOME, seq, &w, sizeof(w));

    for (int i = 0; i < 500 && !g_file_test(sock, G_FILE_TEST_EXISTS); i++) {
        g_usleep(10000);
    }
    struct stat st;
    g_assert_cmpint(stat(sock, &st), ==, 0);
    g_assert_cmpint(st.st_mode & 0777, ==, 0666);
    g_free(sock);
    g_free(cg);
}

static void fx_setup(Fx *fx, gconstpointer data)
{
    char *d, *script;

    memset(fx, 0, sizeof(*fx));
    fx->dir = g_strdup(base_dir);
    fx->run = g_build_filename(fx->dir, "run", NULL);
    fx->root = g_build_filename(fx->dir, "root", NULL);
    fx->dry = g_build_filename(fx->dir, "dry-run.log", NULL);
    fx->envfile = g_build_filename(fx->dir, "script-env", NULL);
    d = g_build_filename(fx->root, "etc/snowflock/post-clone.d", NULL);
    g_assert_cmpint(g_mkdir_with_parents(d, 0755), ==, 0);
    g_mkdir(fx->run, 0755);

    /* A post-clone script that records its environment. */
    script = g_build_filename(d, "10-env", NULL);
    char *text = g_strdup_printf("#!/bin/sh\nenv | grep '^SF_' | sort > %s\n",
                                 fx->envfile);
    g_assert_true(g_file_set_contents(script, text, -1, NULL));
    g_chmod(script, 0755);
    g_free(text);
    g_free(script);
    /* Not run: not executable, and a name run-parts skips. */
    script = g_build_filename(d, "20-not.executable", NULL);
    g_file_set_contents(script, "#!/bin/sh\nexit 1\n", -1, NULL);
    g_chmod(script, 0755);
    g_free(script);
    g_free(d);

    fx_spawn(fx, data);
}

static void fx_teardown(Fx *fx, gconstpointer data)
{
    int ws;

    kill(fx->agent, SIGTERM);
    waitpid(fx->agent, &ws, 0);
    close(fx->host);
    char *cmd = g_strdup_printf("rm -rf '%s'/*", fx->dir);
    g_assert_cmpint(system(cmd), ==, 0);
    g_free(cmd);
    g_free(fx->dir);
    g_free(fx->run);
    g_free(fx->root);
    g_free(fx->dry);
    g_free(fx->envfile);
}

/* ---- libsf calls in a thread ---- */

typedef enum {
    C_TICKET,
    C_CLONE,
    C_KILL,
    C_JOIN,
    C_EXIT,
    C_CHECKPOINT,
    C_CREATE,
    C_CLONE_FREEZE
} CallOp;

typedef struct Call {
    CallOp op;
    int64_t a, b;
    int64_t ret;
    int err;
    char msg[256];
    sf_status_t st[8];
    GThread *thread;
    int done;
} Call;

static gpointer call_thread(gpointer p)
{
    Call *c = p;
    sf_checkpoint_t cp = 0;

    switch (c->op) {
    case C_TICKET:
        c->ret = sf_request_ticket(c->a, c->b);
        break;
    case C_CLONE:
        c->ret = sf_clone(c->a);
        break;
    case C_KILL:
        c->ret = sf_kill(c->a);
        break;
    case C_JOIN:
        c->ret = sf_join(c->a, c->st, 8);
        break;
    case C_EXIT:
        c->ret = sf_exit(c->a);
        break;
    case C_CHECKPOINT:
        c->ret = sf_checkpoint_parent(&cp);
        c->b = cp;
        break;
    case C_CREATE:
        c->ret = sf_create_clones(c->a, c->b);
        break;
    case C_CLONE_FREEZE:
        c->ret = sf_clone_flags(c->a, SF_CLONE_FREEZE);
        break;
    }
    c->err = c->ret < 0 ? errno : 0;
    g_strlcpy(c->msg, sf_last_error(), sizeof(c->msg));
    g_atomic_int_set(&c->done, 1);
    return NULL;
}

static Call *call_start(CallOp op, int64_t a, int64_t b)
{
    Call *c = g_new0(Call, 1);

    c->op = op;
    c->a = a;
    c->b = b;
    c->thread = g_thread_new("libsf", call_thread, c);
    return c;
}

static void call_finish(Call *c)
{
    g_thread_join(c->thread);
}

/* Run a call that the agent answers without asking the host. */
static Call *call_local(CallOp op, int64_t a, int64_t b)
{
    Call *c = call_start(op, a, b);

    call_finish(c);
    return c;
}

/* ---- a raw local-protocol client, for concurrency and hostility ---- */

static int raw_connect(Fx *fx)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);

    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", fx->run,
             SF_LOCAL_SOCK_NAME);
    g_assert_cmpint(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
    return fd;
}

static void raw_send(int fd, const SfLocalReq *r)
{
    struct {
        SfLocalHdr h;
        SfLocalReq r;
    } m = { { SF_LOCAL_MAGIC, SF_LOCAL_VERSION, SF_LOCAL_REQ, sizeof(*r), 0 },
            *r };

    g_assert_cmpint(send(fd, &m, sizeof(m), 0), ==, sizeof(m));
}

static SfLocalAnswer raw_recv(int fd)
{
    uint8_t buf[SF_LOCAL_MAX_MSG];
    SfLocalAnswer a;
    SfLocalHdr h;
    struct pollfd p = { .fd = fd, .events = POLLIN };

    g_assert_cmpint(poll(&p, 1, 5000), ==, 1);
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    g_assert_cmpint(n, >=, sizeof(h) + sizeof(a));
    memcpy(&h, buf, sizeof(h));
    memcpy(&a, buf + sizeof(h), sizeof(a));
    g_assert_cmphex(h.magic, ==, SF_LOCAL_MAGIC);
    g_assert_cmpint(h.type, ==, SF_LOCAL_ANSWER);
    g_assert_cmpint(h.length, ==, n - sizeof(h));
    return a;
}

/* Nothing arrives on a raw client for ms. */
static bool raw_quiet(int fd, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };

    return poll(&p, 1, ms) == 0;
}

static char *read_text(const char *dir, const char *name)
{
    char *path = g_build_filename(dir, name, NULL), *text = NULL;

    g_file_get_contents(path, &text, NULL, NULL);
    g_free(path);
    return text ? text : g_strdup("");
}

/* ---- cases ---- */

static void test_ticket(Fx *fx, gconstpointer data)
{
    SfAgentTicketReq req;
    Call *c = call_start(C_TICKET, 3, 0);
    uint32_t seq = host_expect(fx, SF_AGENT_TICKET, &req);

    g_assert_cmpuint(req.clones, ==, 3);
    g_assert_cmpuint(req.flags, ==, 0);
    host_result(fx, seq, 0, 2, 42);
    call_finish(c);
    g_assert_cmpint(c->ret, ==, 42);
    g_free(c);

    /* Granted and unknown tickets are answered by the agent. */
    g_assert_cmpint(sf_ticket_granted(42), ==, 2);
    g_assert_cmpint(sf_ticket_granted(43), ==, -1);
    g_assert_cmpint(errno, ==, ENOENT);
    g_assert_true(host_quiet(fx, 50));

    /* Argument errors never reach the host. */
    g_assert_cmpint(sf_request_ticket(0, 0), ==, -1);
    g_assert_cmpint(errno, ==, EINVAL);
    g_assert_cmpstr(sf_last_error(), !=, "");
    g_assert_cmpint(sf_clone(-1), ==, -1);
    g_assert_cmpint(errno, ==, EINVAL);
    g_assert_true(host_quiet(fx, 50));
}

/* Host errors come back as -1 + the same errno, for every request. */
static void test_host_errors(Fx *fx, gconstpointer data)
{
    static const struct {
        CallOp op;
        uint8_t type;
        int err;
    } cases[] = {
        { C_TICKET, SF_AGENT_TICKET, EDQUOT },
        { C_TICKET, SF_AGENT_TICKET, EAGAIN },
        { C_CLONE, SF_AGENT_CLONE, ENOENT },
        { C_CLONE, SF_AGENT_CLONE, EALREADY },
        { C_CLONE, SF_AGENT_CLONE, EIO },
        { C_KILL, SF_AGENT_KILL, ENOENT },
        { C_CHECKPOINT, SF_AGENT_CHECKPOINT, ENOTSUP },
        { C_CREATE, SF_AGENT_CREATE, ENOENT },
        { C_CLONE, SF_AGENT_CLONE, EBUSY },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        Call *c = call_start(cases[i].op, 5, 6);
        uint32_t seq = host_expect(fx, cases[i].type, NULL);

        host_result(fx, seq, cases[i].err, 0, 0);
        call_finish(c);
        g_assert_cmpint(c->ret, ==, -1);
        g_assert_cmpint(c->err, ==, cases[i].err);
        g_assert_cmpstr(c->msg, !=, "");
        g_free(c);
    }
    /* A nonsense error from the host is a protocol error. */
    Call *c = call_start(C_KILL, 5, 0);
    host_result(fx, host_expect(fx, SF_AGENT_KILL, NULL), -7, 0, 0);
    call_finish(c);
    g_assert_cmpint(c->err, ==, EPROTO);
    g_free(c);

    /* sf_exit outside a clone never reaches the host. */
    c = call_local(C_EXIT, 0, 0);
    g_assert_cmpint(c->ret, ==, -1);
    g_assert_cmpint(c->err, ==, ENOTSUP);
    g_free(c);
    g_assert_true(host_quiet(fx, 50));
}

static void test_clone_join_kill(Fx *fx, gconstpointer data)
{
    SfAgentTicketRef ref;
    Call *c;
    uint32_t seq;

    c = call_start(C_TICKET, 4, 0);
    host_result(fx, host_expect(fx, SF_AGENT_TICKET, NULL), 0, 3, 7);
    call_finish(c);
    g_free(c);

    /* Join before any clone is started: EINVAL; unknown ticket: ENOENT. */
    c = call_local(C_JOIN, 7, 0);
    g_assert_cmpint(c->err, ==, EINVAL);
    g_free(c);
    c = call_local(C_JOIN, 99, 0);
    g_assert_cmpint(c->err, ==, ENOENT);
    g_free(c);

    c = call_start(C_CLONE, 7, 0);
    seq = host_expect(fx, SF_AGENT_CLONE, &ref);
    g_assert_cmpuint(ref.ticket, ==, 7);
    host_result(fx, seq, 0, 3, 0);
    call_finish(c);
    g_assert_cmpint(c->ret, ==, 0); /* the parent */
    g_free(c);

    c = call_start(C_JOIN, 7, 0);
    host_exited(fx, 7, 3, SF_AGENT_HOW_EXITED, 30);
    host_exited(fx, 7, 1, SF_AGENT_HOW_EXITED, 10);
    host_exited(fx, 7, 0, SF_AGENT_HOW_EXITED, 0); /* bad id: ignored */
    host_exited(fx, 7, 2, 17, 0);                  /* bad how: ignored */
    g_usleep(100000);
    g_assert_false(g_atomic_int_get(&c->done)); /* still waiting */
    /* Kill the remaining clone. */
    Call *k = call_start(C_KILL, 7, 0);
    seq = host_expect(fx, SF_AGENT_KILL, &ref);
    host_result(fx, seq, 0, 1, 0);
    call_finish(k);
    g_assert_cmpint(k->ret, ==, 1);
    g_free(k);
    host_exited(fx, 7, 2, SF_AGENT_HOW_KILLED, 0);
    call_finish(c);
    g_assert_cmpint(c->ret, ==, 3);
    g_assert_cmpint(c->st[0].id, ==, 1);
    g_assert_cmpint(c->st[0].how, ==, SF_EXITED);
    g_assert_cmpint(c->st[0].status, ==, 10);
    g_assert_cmpint(c->st[1].id, ==, 2);
    g_assert_cmpint(c->st[1].how, ==, SF_KILLED);
    g_assert_cmpint(c->st[2].id, ==, 3);
    g_assert_cmpint(c->st[2].status, ==, 30);
    g_free(c);

    /* Joining again answers at once; max limits what is stored. */
    sf_status_t one[1];
    g_assert_cmpint(sf_join(7, one, 1), ==, 1);
    g_assert_cmpint(one[0].id, ==, 1);
    g_assert_cmpint(sf_join(7, NULL, 0), ==, 0);
    g_assert_cmpint(sf_join(7, NULL, 1), ==, -1);
    g_assert_cmpint(errno, ==, EINVAL);
}

static void test_checkpoint_create(Fx *fx, gconstpointer data)
{
    SfAgentCreateReq cr;
    Call *c = call_start(C_CHECKPOINT, 0, 0);

    host_result(fx, host_expect(fx, SF_AGENT_CHECKPOINT, NULL), 0, 0, 77);
    call_finish(c);
    g_assert_cmpint(c->ret, ==, 0);
    g_assert_cmpint(c->b, ==, 77);
    g_free(c);

    c = call_start(C_TICKET, 2, 0);
    host_result(fx, host_expect(fx, SF_AGENT_TICKET, NULL), 0, 2, 8);
    call_finish(c);
    g_free(c);
    c = call_start(C_CREATE, 77, 8);
    uint32_t seq = host_expect(fx, SF_AGENT_CREATE, &cr);
    g_assert_cmpuint(cr.checkpoint, ==, 77);
    g_assert_cmpuint(cr.ticket, ==, 8);
    host_result(fx, seq, 0, 2, 0);
    call_finish(c);
    g_assert_cmpint(c->ret, ==, 2);
    g_free(c);
    host_exited(fx, 8, 1, SF_AGENT_HOW_CRASHED, 0);
    host_exited(fx, 8, 2, SF_AGENT_HOW_SIGNALED, 9);
    sf_status_t st[4];
    g_assert_cmpint(sf_join(8, st, 4), ==, 2);
    g_assert_cmpint(st[0].how, ==, SF_CRASHED);
    g_assert_cmpint(st[1].how, ==, SF_SIGNALED);
    g_assert_cmpint(st[1].status, ==, 9);
}

/* The clone side: identity recorded (dry run), then sf_exit. */
static void test_identity(Fx *fx, gconstpointer data)
{
    SfAgentIdentity ident = make_identity(2);
    SfAgentExitReq ex;
    char *text;
    Call *c;

    g_assert_cmpint(sf_id(), ==, 0);
    g_assert_cmpint(sf_generation(), ==, 0);

    c = call_start(C_CLONE, 9, 0);
    uint32_t seq = host_expect(fx, SF_AGENT_CLONE, NULL);
    host_send(fx, SF_AGENT_IDENTITY, seq, &ident, sizeof(ident));
    call_finish(c);
    g_assert_cmpint(c->ret, ==, 2); /* the clone */
    g_free(c);

    /* Everything was in place before sf_clone returned. */
    g_assert_cmpint(sf_id(), ==, 2);
    g_assert_cmpint(sf_generation(), ==, 1);
    text = read_text(fx->run, "hostname");
    g_assert_cmpstr(text, ==, "vm-2\n");
    g_free(text);
    text = read_text(fx->run, "ip");
    g_assert_cmpstr(text, ==, "10.1.2.4/24\n");
    g_free(text);
    text = read_text(fx->root, "etc/hostname");
    g_assert_cmpstr(text, ==, "vm-2\n");
    g_free(text);
    text = read_text(fx->dir, "script-env");
    g_assert_cmpstr(text, ==,
                    "SF_CLONE_ID=2\nSF_GENERATION=1\nSF_HOSTNAME=vm-2\n"
                    "SF_IP=10.1.2.4\nSF_PREFIX=24\n");
    g_free(text);

    char *script = g_build_filename(fx->root, "etc/snowflock/post-clone.d",
                                    "10-env", NULL);
    char *want = g_strdup_printf(
        "id 2 generation 1 ticket 9\n"
        "rng add-entropy 64 000102030405060708090a0b0c0d0e0f101112131415161718"
        "191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a"
        "3b3c3d3e3f\n"
        "rng reseed\n"
        "clock 1700000000123456789\n"
        "mac eth0 02:53:46:00:00:02\n"
        "ip eth0 10.1.2.4/24\n"
        "hostname vm-2\n"
        "script %s status 0\n",
        script);
    text = read_text(fx->dir, "dry-run.log");
    g_assert_cmpstr(text, ==, want);
    g_free(text);
    g_free(want);
    g_free(script);

    /* sf_exit is relayed; a refusal comes back as an error. */
    c = call_start(C_EXIT, 5, 0);
    seq = host_expect(fx, SF_AGENT_EXIT, &ex);
    g_assert_cmpint(ex.status, ==, 5);
    g_assert_cmpuint(ex.how, ==, SF_AGENT_HOW_EXITED);
    host_result(fx, seq, EAGAIN, 0, 0);
    call_finish(c);
    g_assert_cmpint(c->ret, ==, -1);
    g_assert_cmpint(c->err, ==, EAGAIN);
    g_free(c);
}

/* An operator fork: identity with seq 0 is applied all the same. */
static void test_identity_unsolicited(Fx *fx, gconstpointer data)
{
    SfAgentIdentity ident = make_identity(5);
    char *text;

    ident.mac[0] = 0x01; /* multicast: skipped */
    ident.prefix = 40;   /* bad: skipped */
    strcpy(ident.hostname, "bad name;rm");
    host_send(fx, SF_AGENT_IDENTITY, 0, &ident, sizeof(ident));
    for (int i = 0; i < 200 && sf_id() != 5; i++) {
        g_usleep(10000);
    }
    g_assert_cmpint(sf_id(), ==, 5);
    g_usleep(100000);
    text = read_text(fx->dir, "dry-run.log");
    g_assert_nonnull(strstr(text, "id 5 generation 1"));
    g_assert_nonnull(strstr(text, "clock "));
    g_assert_null(strstr(text, "mac "));
    g_assert_null(strstr(text, "ip "));
    g_assert_null(strstr(text, "hostname "));
    g_free(text);
}

/* Two clients at once; the host answers out of order. */
static void test_concurrent(Fx *fx, gconstpointer data)
{
    int a = raw_connect(fx), b = raw_connect(fx);
    SfAgentTicketReq ra, rb;
    SfLocalAnswer ans;

    raw_send(a, &(SfLocalReq){ .op = SF_LOCAL_OP_TICKET, .n = 1 });
    uint32_t sa = host_expect(fx, SF_AGENT_TICKET, &ra);
    raw_send(b, &(SfLocalReq){ .op = SF_LOCAL_OP_TICKET, .n = 2 });
    uint32_t sb = host_expect(fx, SF_AGENT_TICKET, &rb);
    g_assert_cmpuint(ra.clones, ==, 1);
    g_assert_cmpuint(rb.clones, ==, 2);
    g_assert_cmpuint(sa, !=, sb);

    /* A second request on a busy connection is refused. */
    raw_send(a, &(SfLocalReq){ .op = SF_LOCAL_OP_TICKET, .n = 1 });
    ans = raw_recv(a);
    g_assert_cmpint(ans.error, ==, EBUSY);

    host_result(fx, sb, 0, 2, 200);
    host_result(fx, sa, 0, 1, 100);
    ans = raw_recv(a);
    g_assert_cmpint(ans.error, ==, 0);
    g_assert_cmpuint(ans.value, ==, 100);
    ans = raw_recv(b);
    g_assert_cmpuint(ans.value, ==, 200);
    g_assert_cmpuint(ans.count, ==, 2);
    close(a);
    close(b);
    g_assert_true(host_quiet(fx, 50));
}

/* A hostile host: garbage, bad headers, bad lengths, unknown seqs. */
static void test_malformed_host(Fx *fx, gconstpointer data)
{
    Call *c = call_start(C_TICKET, 2, 0);
    uint32_t seq = host_expect(fx, SF_AGENT_TICKET, NULL);
    SfAgentResult r = { .error = 0, .count = 2, .value = 666 };
    SfAgentHdr h = { .magic = SF_AGENT_MAGIC,
                     .version = SF_AGENT_VERSION,
                     .type = SF_AGENT_RESULT,
                     .seq = seq,
                     .length = 8 };
    SfAgentIdentity ident = make_identity(3);
    uint8_t junk[300];

    for (size_t i = 0; i < sizeof(junk); i++) {
        junk[i] = i * 7;
    }
    host_raw(fx, junk, sizeof(junk));
    host_raw(fx, &h, sizeof(h)); /* wrong length for RESULT */
    host_raw(fx, &r, 8);
    h.length = sizeof(r);
    h.version = 9; /* wrong version */
    host_raw(fx, &h, sizeof(h));
    host_raw(fx, &r, sizeof(r));
    h.version = SF_AGENT_VERSION;
    h.flags = 1; /* flags must be 0 */
    host_raw(fx, &h, sizeof(h));
    h.flags = 0;
    h.type = SF_AGENT_TICKET; /* a guest->host type */
    host_raw(fx, &h, sizeof(h));
    host_result(fx, seq + 1000, 0, 2, 666); /* unknown seq */
    host_send(fx, SF_AGENT_IDENTITY, seq, &ident, sizeof(ident)); /* no fork */
    ident.clone_id = 0;
    host_send(fx, SF_AGENT_IDENTITY, 0, &ident, sizeof(ident)); /* bad id */
    host_exited(fx, 0, 1, 0, 0);                                /* ticket 0 */
    g_usleep(100000);
    g_assert_false(g_atomic_int_get(&c->done)); /* still waiting */
    host_result(fx, seq, 0, 2, 41);
    call_finish(c);
    g_assert_cmpint(c->ret, ==, 41);
    g_free(c);

    /* A grant larger than asked is a protocol error. */
    c = call_start(C_TICKET, 2, 0);
    host_result(fx, host_expect(fx, SF_AGENT_TICKET, NULL), 0, 3, 43);
    call_finish(c);
    g_assert_cmpint(c->err, ==, EPROTO);
    g_free(c);

    /* Nothing was applied. */
    g_assert_cmpint(sf_id(), ==, 0);
    g_assert_false(g_file_test(fx->dry, G_FILE_TEST_EXISTS));
    g_assert_true(host_quiet(fx, 50));
}

/* A clone's program that goes away without sf_exit is reported lost. */
static void test_lost(Fx *fx, gconstpointer data)
{
    SfAgentIdentity ident = make_identity(1);
    int fd = raw_connect(fx);
    SfLocalAnswer ans;
    SfAgentExitReq ex;

    raw_send(fd, &(SfLocalReq){ .op = SF_LOCAL_OP_CLONE, .ticket = 9 });
    uint32_t seq = host_expect(fx, SF_AGENT_CLONE, NULL);
    host_send(fx, SF_AGENT_IDENTITY, seq, &ident, sizeof(ident));
    ans = raw_recv(fd);
    g_assert_cmpuint(ans.kind, ==, SF_LOCAL_KIND_IDENTITY);
    g_assert_cmpuint(ans.clone_id, ==, 1);
    g_assert_cmpuint(ans.generation, ==, 1);
    close(fd);
    host_expect(fx, SF_AGENT_EXIT, &ex);
    g_assert_cmpuint(ex.how, ==, SF_AGENT_HOW_LOST);

    /* A program that closes before it ever got an identity is not a clone. */
    fd = raw_connect(fx);
    close(fd);
    g_assert_true(host_quiet(fx, 100));
}

/* Requests a clone had outstanding on its parent's channel are cancelled. */
static void test_cancel_on_identity(Fx *fx, gconstpointer data)
{
    SfAgentIdentity ident = make_identity(1);
    int a = raw_connect(fx), b = raw_connect(fx);
    SfLocalAnswer ans;

    raw_send(b, &(SfLocalReq){ .op = SF_LOCAL_OP_TICKET, .n = 1 });
    host_expect(fx, SF_AGENT_TICKET, NULL);
    raw_send(a, &(SfLocalReq){ .op = SF_LOCAL_OP_CLONE, .ticket = 9 });
    uint32_t seq = host_expect(fx, SF_AGENT_CLONE, NULL);
    host_send(fx, SF_AGENT_IDENTITY, seq, &ident, sizeof(ident));
    ans = raw_recv(a);
    g_assert_cmpuint(ans.kind, ==, SF_LOCAL_KIND_IDENTITY);
    ans = raw_recv(b);
    g_assert_cmpint(ans.error, ==, ECANCELED);
    close(b);
    g_assert_true(host_quiet(fx, 50));
    close(a);
    host_expect(fx, SF_AGENT_EXIT, NULL);
}

/* A hostile local client is answered EPROTO and dropped. */
static void test_malformed_client(Fx *fx, gconstpointer data)
{
    int fd = raw_connect(fx);
    char junk[20] = "not a request";
    SfLocalAnswer ans;
    char byte;

    g_assert_cmpint(send(fd, junk, sizeof(junk), 0), ==, sizeof(junk));
    ans = raw_recv(fd);
    g_assert_cmpint(ans.error, ==, EPROTO);
    g_assert_cmpint(recv(fd, &byte, 1, 0), ==, 0);
    close(fd);

    fd = raw_connect(fx);
    raw_send(fd, &(SfLocalReq){ .op = 99 });
    ans = raw_recv(fd);
    g_assert_cmpint(ans.error, ==, EINVAL);
    close(fd);
    g_assert_true(host_quiet(fx, 50));
}

/* A silent host: ETIMEDOUT in time, and the connection stays usable. */
static void test_timeout_silent(Fx *fx, gconstpointer data)
{
    gint64 t0 = g_get_monotonic_time(), took;
    Call *c = call_start(C_TICKET, 2, 0);
    uint32_t seq = host_expect(fx, SF_AGENT_TICKET, NULL);

    call_finish(c); /* the host never answers */
    took = g_get_monotonic_time() - t0;
    g_assert_cmpint(c->ret, ==, -1);
    g_assert_cmpint(c->err, ==, ETIMEDOUT);
    g_assert_cmpint(took, >=, 300000);
    g_assert_cmpint(took, <, 3000000);
    g_assert_cmpstr(c->msg, ==,
                    "sf_request_ticket: the host did not answer the ticket "
                    "request within 0.3 s; is sfd managing this VM?");
    g_free(c);

    /* The answer comes after all: dropped; the next call gets its own. */
    host_result(fx, seq, 0, 2, 42);
    c = call_start(C_KILL, 5, 0);
    seq = host_expect(fx, SF_AGENT_KILL, NULL);
    host_result(fx, seq, 0, 3, 0);
    call_finish(c);
    g_assert_cmpint(c->ret, ==, 3);
    g_free(c);
    g_assert_cmpint(sf_ticket_granted(42), ==, -1); /* not recorded */
    g_assert_cmpint(errno, ==, ENOENT);

    /* A fork request has the longer deadline. */
    c = call_start(C_CHECKPOINT, 0, 0);
    t0 = g_get_monotonic_time();
    host_expect(fx, SF_AGENT_CHECKPOINT, NULL);
    call_finish(c);
    g_assert_cmpint(g_get_monotonic_time() - t0, >=, 400000);
    g_assert_cmpint(c->err, ==, ETIMEDOUT);
    g_assert_nonnull(strstr(c->msg, "the checkpoint request within 0.5 s"));
    g_free(c);
    g_assert_true(host_quiet(fx, 50));
}

/* A late RESULT is dropped: the client sees nothing more. */
static void test_timeout_late_result(Fx *fx, gconstpointer data)
{
    int fd = raw_connect(fx);
    SfLocalAnswer ans;
    uint32_t seq;
    Call *c;

    raw_send(fd, &(SfLocalReq){ .op = SF_LOCAL_OP_TICKET, .n = 1 });
    seq = host_expect(fx, SF_AGENT_TICKET, NULL);
    ans = raw_recv(fd);
    g_assert_cmpint(ans.error, ==, ETIMEDOUT);
    g_assert_cmpuint(ans.value, ==, 300); /* ms */
    g_assert_cmpuint(ans.count, ==, SF_LOCAL_TIMEOUT_UNANSWERED);
    host_result(fx, seq, 0, 1, 55);
    host_result(fx, seq, 0, 1, 56); /* a second one: unknown by now */
    g_assert_true(raw_quiet(fd, 200));

    raw_send(fd, &(SfLocalReq){ .op = SF_LOCAL_OP_KILL, .ticket = 5 });
    host_result(fx, host_expect(fx, SF_AGENT_KILL, NULL), 0, 4, 0);
    ans = raw_recv(fd);
    g_assert_cmpint(ans.error, ==, 0);
    g_assert_cmpuint(ans.count, ==, 4);
    g_assert_true(raw_quiet(fd, 50));
    close(fd);

    /* A late CLONE result still counts its clones for sf_join. */
    c = call_start(C_TICKET, 2, 0);
    host_result(fx, host_expect(fx, SF_AGENT_TICKET, NULL), 0, 2, 7);
    call_finish(c);
    g_free(c);
    c = call_start(C_CLONE, 7, 0);
    seq = host_expect(fx, SF_AGENT_CLONE, NULL);
    call_finish(c);
    g_assert_cmpint(c->err, ==, ETIMEDOUT);
    g_free(c);
    host_result(fx, seq, 0, 2, 0);
    c = call_start(C_JOIN, 7, 0);
    host_exited(fx, 7, 1, SF_AGENT_HOW_EXITED, 0);
    host_exited(fx, 7, 2, SF_AGENT_HOW_EXITED, 0);
    call_finish(c);
    g_assert_cmpint(c->ret, ==, 2);
    g_free(c);
}

/*
 * Timed-out requests the host still holds count against its max_pending
 * (8 here): the next one waits in the agent and times out unsent.
 */
static void test_timeout_queued(Fx *fx, gconstpointer data)
{
    int fd[9];
    uint32_t seq[8];
    SfLocalAnswer ans;

    for (int i = 0; i < 9; i++) {
        fd[i] = raw_connect(fx);
        raw_send(fd[i], &(SfLocalReq){ .op = SF_LOCAL_OP_TICKET, .n = 1 });
        if (i < 8) {
            seq[i] = host_expect(fx, SF_AGENT_TICKET, NULL);
        }
    }
    g_assert_true(host_quiet(fx, 100));
    for (int i = 0; i < 9; i++) {
        ans = raw_recv(fd[i]);
        g_assert_cmpint(ans.error, ==, ETIMEDOUT);
        g_assert_cmpuint(ans.count, ==,
                         i < 8 ? SF_LOCAL_TIMEOUT_UNANSWERED
                               : SF_LOCAL_TIMEOUT_QUEUED);
    }
    Call *c = call_start(C_KILL, 3, 0);
    call_finish(c);
    g_assert_cmpint(c->err, ==, ETIMEDOUT);
    g_assert_nonnull(strstr(c->msg, "never sent"));
    g_free(c);

    /* Still full; a late answer frees a slot and the queue moves. */
    raw_send(fd[0], &(SfLocalReq){ .op = SF_LOCAL_OP_KILL, .ticket = 3 });
    g_assert_true(host_quiet(fx, 100));
    host_result(fx, seq[3], EDQUOT, 0, 0);
    host_result(fx, host_expect(fx, SF_AGENT_KILL, NULL), 0, 1, 0);
    ans = raw_recv(fd[0]);
    g_assert_cmpint(ans.error, ==, 0);
    g_assert_cmpuint(ans.count, ==, 1);

    for (int i = 0; i < 9; i++) {
        close(fd[i]);
    }
}

/*
 * A late IDENTITY: this VM is a clone all the same.  The identity is
 * applied, and since its program was told the fork failed, the clone is
 * reported lost.
 */
static void test_timeout_late_identity(Fx *fx, gconstpointer data)
{
    SfAgentIdentity ident = make_identity(2);
    int fd = raw_connect(fx);
    SfLocalAnswer ans;
    SfAgentExitReq ex;
    char *text;

    raw_send(fd, &(SfLocalReq){ .op = SF_LOCAL_OP_CLONE, .ticket = 9 });
    uint32_t seq = host_expect(fx, SF_AGENT_CLONE, NULL);
    ans = raw_recv(fd);
    g_assert_cmpint(ans.error, ==, ETIMEDOUT);
    g_assert_cmpuint(ans.value, ==, 500);
    g_assert_false(g_file_test(fx->dry, G_FILE_TEST_EXISTS));

    host_send(fx, SF_AGENT_IDENTITY, seq, &ident, sizeof(ident));
    host_expect(fx, SF_AGENT_EXIT, &ex);
    g_assert_cmpuint(ex.how, ==, SF_AGENT_HOW_LOST);
    g_assert_cmpint(sf_id(), ==, 2);
    g_assert_cmpint(sf_generation(), ==, 1);
    text = read_text(fx->dir, "dry-run.log");
    g_assert_true(g_str_has_prefix(text, "id 2 generation 1 ticket 9\n"));
    g_assert_nonnull(strstr(text, "\nrng reseed\n"));
    g_assert_nonnull(strstr(text, "\nclock 1700000000123456789\n"));
    g_assert_nonnull(strstr(text, "\nmac eth0 02:53:46:00:00:02\n"));
    g_assert_nonnull(strstr(text, "\nip eth0 10.1.2.4/24\n"));
    g_assert_nonnull(strstr(text, "\nhostname vm-2\n"));
    g_free(text);
    text = read_text(fx->run, "hostname");
    g_assert_cmpstr(text, ==, "vm-2\n");
    g_free(text);
    g_assert_true(raw_quiet(fd, 100)); /* the caller heard ETIMEDOUT only */

    /* The connection goes on, on the clone's channel. */
    raw_send(fd, &(SfLocalReq){ .op = SF_LOCAL_OP_TICKET, .n = 1 });
    host_result(fx, host_expect(fx, SF_AGENT_TICKET, NULL), 0, 1, 12);
    ans = raw_recv(fd);
    g_assert_cmpint(ans.error, ==, 0);
    g_assert_cmpuint(ans.value, ==, 12);
    close(fd);
    g_assert_true(host_quiet(fx, 100)); /* lost was reported once */
}

/*
 * sf_join has no deadline, but fails when the exits can no longer be
 * reported: the agent goes away while it waits, or a restarted agent
 * lost its table.
 */
static void test_join_agent_restart(Fx *fx, gconstpointer data)
{
    Call *c = call_start(C_TICKET, 2, 0);
    int ws;

    host_result(fx, host_expect(fx, SF_AGENT_TICKET, NULL), 0, 2, 7);
    call_finish(c);
    g_free(c);
    c = call_start(C_CLONE, 7, 0);
    host_result(fx, host_expect(fx, SF_AGENT_CLONE, NULL), 0, 2, 0);
    call_finish(c);
    g_free(c);

    c = call_start(C_JOIN, 7, 0);
    g_usleep(700000); /* longer than any deadline of the fast agent */
    g_assert_false(g_atomic_int_get(&c->done));
    kill(fx->agent, SIGKILL);
    waitpid(fx->agent, &ws, 0);
    call_finish(c);
    g_assert_cmpint(c->ret, ==, -1);
    g_assert_cmpint(c->err, ==, ECONNRESET);
    g_assert_nonnull(strstr(c->msg, "went away"));
    g_free(c);

    close(fx->host);
    fx_spawn(fx, data);
    c = call_local(C_JOIN, 7, 0);
    g_assert_cmpint(c->ret, ==, -1);
    g_assert_cmpint(c->err, ==, ENOENT);
    g_assert_nonnull(strstr(c->msg, "restarted"));
    g_free(c);
}

/* The agent refuses to run against a fake channel without a dry run. */
/* Wait until the dry-run log has `line` (a whole line); false after 5 s. */
static bool dry_has(Fx *fx, const char *line)
{
    char *want = g_strdup_printf("%s\n", line);
    bool found = false;

    for (int i = 0; i < 500 && !found; i++) {
        char *text = read_text(fx->dir, "dry-run.log");

        found = strstr(text, want) != NULL;
        g_free(text);
        if (!found) {
            g_usleep(10000);
        }
    }
    g_free(want);
    return found;
}

static SfAgentFreezeState host_freeze_state(Fx *fx, uint32_t want_seq)
{
    uint8_t b[SF_AGENT_MAX_BODY];
    SfAgentFreezeState st;
    SfAgentHdr h;

    host_recv(fx, &h, b);
    g_assert_cmphex(h.type, ==, SF_AGENT_FREEZE_STATE);
    g_assert_cmpuint(h.seq, ==, want_seq);
    memcpy(&st, b, sizeof(st));
    return st;
}

/*
 * A new host's identity (REPORT | TIME): the agent asks for the host's
 * clock once its steps are done, sets it from the answer, reports the
 * identity applied; a frame that comes while it waits is handled after.
 */
static void test_identity_report_and_clock(Fx *fx, gconstpointer data)
{
    SfAgentIdentity ident = make_identity(3);
    uint8_t b[SF_AGENT_MAX_BODY];
    SfAgentApplied ap;
    SfAgentTime t;
    SfAgentHdr h;
    char *text, line[64];
    struct timespec now;
    SfAgentFreeze thaw = { .freeze = 0 };
    SfAgentClock clk;
    Call *c;

    ident.flags = SF_AGENT_IDENTITY_REPORT | SF_AGENT_IDENTITY_TIME;
    c = call_start(C_CLONE, 9, 0);
    uint32_t seq = host_expect(fx, SF_AGENT_CLONE, NULL);
    host_send(fx, SF_AGENT_IDENTITY, seq, &ident, sizeof(ident));
    uint32_t tseq = host_expect(fx, SF_AGENT_TIME, &t);
    /* Not for clock_sync(): kept, and answered after the identity. */
    host_send(fx, SF_AGENT_FREEZE, 77, &thaw, sizeof(thaw));
    clk =
        (SfAgentClock){ .realtime_ns = 1800000000000000000ll, .echo = t.echo };
    host_send(fx, SF_AGENT_CLOCK, tseq, &clk, sizeof(clk));
    host_recv(fx, &h, b);
    g_assert_cmphex(h.type, ==, SF_AGENT_APPLIED);
    memcpy(&ap, b, sizeof(ap));
    g_assert_cmpuint(ap.clone_id, ==, 3);
    g_assert_cmpuint(ap.generation, ==, 1);
    clock_gettime(CLOCK_REALTIME, &now); /* a dry run sets no clock */
    g_assert_cmpint(
        llabs(ap.realtime_ns - (now.tv_sec * 1000000000ll + now.tv_nsec)), <,
        5000000000ll);
    call_finish(c);
    g_assert_cmpint(c->ret, ==, 3);
    g_free(c);
    SfAgentFreezeState st = host_freeze_state(fx, 77);
    g_assert_cmpint(st.error, ==, 0);
    g_assert_cmpuint(st.frozen, ==, 0);

    /* The identity's clock, then the host's (plus half the round trip). */
    text = read_text(fx->dir, "dry-run.log");
    g_assert_nonnull(strstr(text, "clock 1700000000123456789\n"));
    char *p = strstr(text, "hostname vm-3\nclock 18000000000");
    g_assert_nonnull(p);
    long long set;
    g_assert_cmpint(sscanf(p, "hostname vm-3\nclock %lld", &set), ==, 1);
    g_assert_cmpint(set, >=, clk.realtime_ns);
    g_assert_cmpint(set, <, clk.realtime_ns + 5000000000ll);
    snprintf(line, sizeof(line), "clock %lld\nscript ", set);
    g_assert_nonnull(strstr(text, line)); /* before the scripts */
    g_free(text);
}

/* A host that does not answer TIME: the identity's clock stays. */
static void test_identity_clock_unanswered(Fx *fx, gconstpointer data)
{
    SfAgentIdentity ident = make_identity(4);
    uint8_t b[SF_AGENT_MAX_BODY];
    SfAgentHdr h;
    char *text;

    ident.flags = SF_AGENT_IDENTITY_REPORT | SF_AGENT_IDENTITY_TIME;
    host_send(fx, SF_AGENT_IDENTITY, 0, &ident, sizeof(ident));
    host_expect(fx, SF_AGENT_TIME, NULL);
    host_recv(fx, &h, b); /* after CLOCK_SYNC_MS */
    g_assert_cmphex(h.type, ==, SF_AGENT_APPLIED);
    text = read_text(fx->dir, "dry-run.log");
    g_assert_nonnull(strstr(text, "clock 1700000000123456789\n"));
    g_assert_null(strstr(text, "hostname vm-4\nclock"));
    g_free(text);
}

/* An old host's identity (no flags): no TIME, no APPLIED. */
static void test_identity_old_host(Fx *fx, gconstpointer data)
{
    SfAgentIdentity ident = make_identity(6);

    host_send(fx, SF_AGENT_IDENTITY, 0, &ident, sizeof(ident));
    for (int i = 0; i < 200 && sf_id() != 6; i++) {
        g_usleep(10000);
    }
    g_assert_cmpint(sf_id(), ==, 6);
    g_assert_true(host_quiet(fx, 300));
}

/* The host freezes and thaws the workload; bad and expired freezes. */
static void test_freeze_host(Fx *fx, gconstpointer data)
{
    SfAgentFreeze f = { .freeze = 1, .timeout_ms = 5000 };
    SfAgentFreezeState st;
    char *text;

    host_send(fx, SF_AGENT_FREEZE, 5, &f, sizeof(f));
    st = host_freeze_state(fx, 5);
    g_assert_cmpint(st.error, ==, 0);
    g_assert_cmpuint(st.frozen, ==, 1);
    g_assert_true(dry_has(fx, "freeze 1"));
    g_usleep(20000);
    f.freeze = 0;
    host_send(fx, SF_AGENT_FREEZE, 6, &f, sizeof(f));
    st = host_freeze_state(fx, 6);
    g_assert_cmpint(st.error, ==, 0);
    g_assert_cmpuint(st.frozen, ==, 0);
    g_assert_cmpuint(st.frozen_us, >=, 20000);
    g_assert_true(dry_has(fx, "freeze 0"));

    /* Out of range: refused, nothing frozen. */
    f = (SfAgentFreeze){ .freeze = 1, .timeout_ms = 0 };
    host_send(fx, SF_AGENT_FREEZE, 7, &f, sizeof(f));
    st = host_freeze_state(fx, 7);
    g_assert_cmpint(st.error, ==, EINVAL);
    g_assert_cmpuint(st.frozen, ==, 0);

    /* A host that never thaws: the hold expires. */
    f = (SfAgentFreeze){ .freeze = 1, .timeout_ms = 200 };
    host_send(fx, SF_AGENT_FREEZE, 8, &f, sizeof(f));
    st = host_freeze_state(fx, 8);
    g_assert_cmpuint(st.frozen, ==, 1);
    g_usleep(600000);
    text = read_text(fx->dir, "dry-run.log");
    g_assert_cmpstr(text, ==, "freeze 1\nfreeze 0\nfreeze 1\nfreeze 0\n");
    g_free(text);
    g_assert_true(host_quiet(fx, 50));
}

/*
 * sf_clone_flags(SF_CLONE_FREEZE): the workload is frozen before the host
 * hears of the fork; the parent thaws with the answer, a clone once its
 * identity is in place and before its post-clone scripts.
 */
static void test_freeze_local(Fx *fx, gconstpointer data)
{
    SfAgentIdentity ident = make_identity(2);
    char *text;
    Call *c;

    g_assert_cmpint(sf_clone_flags(9, 0x80), ==, -1);
    g_assert_cmpint(errno, ==, EINVAL);
    g_assert_true(host_quiet(fx, 50));

    c = call_start(C_CLONE_FREEZE, 9, 0);
    uint32_t seq = host_expect(fx, SF_AGENT_CLONE, NULL);
    text = read_text(fx->dir, "dry-run.log");
    g_assert_cmpstr(text, ==, "freeze 1\n");
    g_free(text);
    host_result(fx, seq, 0, 2, 0);
    call_finish(c);
    g_assert_cmpint(c->ret, ==, 0);
    g_free(c);
    text = read_text(fx->dir, "dry-run.log");
    g_assert_cmpstr(text, ==, "freeze 1\nfreeze 0\n");
    g_free(text);

    c = call_start(C_CLONE_FREEZE, 9, 0);
    seq = host_expect(fx, SF_AGENT_CLONE, NULL);
    host_send(fx, SF_AGENT_IDENTITY, seq, &ident, sizeof(ident));
    call_finish(c);
    g_assert_cmpint(c->ret, ==, 2);
    g_free(c);
    text = read_text(fx->dir, "dry-run.log");
    g_assert_nonnull(strstr(text, "hostname vm-2\nfreeze 0\nscript "));
    g_free(text);
}

static void test_safety_options(void)
{
    static const char *bad[][10] = {
        { "--port-fd", "0", NULL },
        { "--port", "/dev/null", "--dry-run", "/tmp/x", NULL }, /* no dirs */
        { "--port-fd", "0", "--dry-run", "/tmp/x", "--run-dir", "/tmp",
          "--root", "/", NULL },
        { "--request-timeout", "0", NULL },
        { "--request-timeout", "soon", NULL },
        { "--fork-timeout", "-1", NULL },
        { "--workload", "../etc", NULL },
        { "--workload", "a/b", NULL },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        const char *argv[10] = { agent_bin };
        int ws;

        for (int j = 0; bad[i][j]; j++) {
            argv[j + 1] = bad[i][j];
        }
        g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL,
                                   G_SPAWN_STDOUT_TO_DEV_NULL |
                                       G_SPAWN_STDERR_TO_DEV_NULL,
                                   NULL, NULL, NULL, NULL, &ws, NULL));
        g_assert_true(WIFEXITED(ws));
        g_assert_cmpint(WEXITSTATUS(ws), ==, 2);
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    signal(SIGPIPE, SIG_IGN);
    agent_bin = g_getenv("SF_AGENT_BIN");
    if (!agent_bin) {
        g_printerr("SF_AGENT_BIN is not set\n");
        return 1;
    }
    base_dir = g_dir_make_tmp("sf-agent-XXXXXX", NULL);
    char *run = g_build_filename(base_dir, "run", NULL);
    g_setenv("SF_RUN_DIR", run, TRUE);
    g_free(run);
#define ADD(name, fn)                                                          \
    g_test_add("/agent/" name, Fx, NULL, fx_setup, fn, fx_teardown)
#define ADD_FAST(name, fn)                                                     \
    g_test_add("/agent/" name, Fx, fast_timeouts, fx_setup, fn, fx_teardown)
    ADD("ticket", test_ticket);
    ADD("host-errors", test_host_errors);
    ADD("clone-join-kill", test_clone_join_kill);
    ADD("checkpoint-create", test_checkpoint_create);
    ADD("identity", test_identity);
    ADD("identity-unsolicited", test_identity_unsolicited);
    ADD("concurrent", test_concurrent);
    ADD("malformed-host", test_malformed_host);
    ADD("lost", test_lost);
    ADD("cancel-on-identity", test_cancel_on_identity);
    ADD("malformed-client", test_malformed_client);
    ADD_FAST("timeout-silent", test_timeout_silent);
    ADD_FAST("timeout-late-result", test_timeout_late_result);
    ADD_FAST("timeout-queued", test_timeout_queued);
    ADD_FAST("timeout-late-identity", test_timeout_late_identity);
    ADD_FAST("join-agent-restart", test_join_agent_restart);
    ADD("identity-report-and-clock", test_identity_report_and_clock);
    ADD("identity-clock-unanswered", test_identity_clock_unanswered);
    ADD("identity-old-host", test_identity_old_host);
    ADD("freeze-host", test_freeze_host);
    ADD("freeze-local", test_freeze_local);
    g_test_add_func("/agent/safety-options", test_safety_options);
    int ret = g_test_run();
    g_rmdir(base_dir);
    return ret;
}
