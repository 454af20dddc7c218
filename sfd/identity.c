/*
 * sfd: telling a clone who it is (see identity.h).
 *
 * Through the agent: QEMU takes an sf-agent-reply only while the
 * guest has its port open, and right after a clone starts its guest may
 * not have (it had, in the state the clone was forked in, but the port
 * reopens): query-sf-agent is asked first and the reply retried for a
 * while (IDENTITY_REOPEN_S).  A reply answering a guest request is not
 * retried once QEMU has consumed the request, only a message of sfd's
 * own.  A clone whose parent had no agent running at the fork instant
 * (its agent-version, which the clone inherits, is 0) was most likely
 * forked while booting: its agent comes up when its boot is done, so sfd
 * waits for it (IDENTITY_BOOT_WAIT_S), and only then types on the
 * console.  A domain whose guest runs no agent (<sf:guest agent='no'>)
 * goes to the console at once.
 *
 * Through the serial console: the busybox guest takes its address only
 * at boot, which a clone does not redo, so the shell is told to set the
 * MAC and the address; the answer is a marker line.
 *
 * A clone is told only once it is in place: the agent reports the
 * identity applied (SF_AGENT_IDENTITY_APPLIED), which is also when QEMU
 * raises the clone's held link; without a report, sfd raises it.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "sfd.h"
#include "identity.h"
#include "lineio.h"
#include "qmp.h"
#include "vm.h"
/* SF_AGENT_FEATURE_*: what an agent's HELLO may say it does. */
#include "sf-agent-proto.h"

#define IDENTITY_RETRY_MS    250
#define IDENTITY_REOPEN_S    10
#define IDENTITY_BOOT_WAIT_S 120
/* From the identity sent to the agent's report that it is in place. */
#define IDENTITY_APPLIED_S   60
#define SFD_SERIAL_TIMEOUT_S 90

typedef struct TellOp TellOp;

/* The serial conversation outlives the TellOp by one loop iteration
 * (a line-I/O object is closed from the loop, not from its callback). */
typedef struct SerialCtx {
    TellOp *op; /* NULL once answered or abandoned */
    SfdLineIO *io;
} SerialCtx;

struct TellOp {
    SfdVm *c;
    guint32 request;
    JsonObject *args;   /* the identity */
    gint64 deadline_us; /* of waiting for the agent; 0: not asked yet */
    gint64 features;    /* the agent's, from its HELLO (query-sf-agent) */
    SerialCtx *serial;
    guint timer;
    SfdIdentityDone done;
    gpointer opaque;
};

static void tell_finish(TellOp *op, const char *err)
{
    if (op->timer) {
        g_source_remove(op->timer);
    }
    if (op->serial) {
        op->serial->op = NULL;
        sfd_lineio_close(op->serial->io); /* serial_closed frees it */
    }
    op->done(op->c, err, op->opaque);
    json_object_unref(op->args);
    sfd_vm_unref(op->c);
    g_free(op);
}

/* ---- the held link ---- */

/*
 * sfd starts every clone with link=held: its NICs stay down until its
 * agent reports its identity applied (QEMU then raises them and the
 * guest announces its new address).  When no report can come (a guest
 * configured through its serial console, an agent older than the
 * report) sfd raises the link itself and has QEMU announce the clone.
 */
static void link_announced(SfdQmp *q, JsonNode *ret, const char *err,
                           gpointer opaque)
{
    TellOp *op = opaque;

    if (err) {
        g_warning("%s: announce-self: %s", op->c->name, err);
    }
    tell_finish(op, NULL);
}

static void link_raised(SfdQmp *q, JsonNode *ret, const char *err,
                        gpointer opaque)
{
    TellOp *op = opaque;
    JsonObject *a;

    if (err) {
        g_autofree char *m = g_strdup_printf("set_link: %s", err);
        tell_finish(op, m);
        return;
    }
    a = json_object_new();
    json_object_set_int_member(a, "initial", 50);
    json_object_set_int_member(a, "max", 550);
    json_object_set_int_member(a, "rounds", 3);
    json_object_set_int_member(a, "step", 100);
    sfd_qmp_cmd(op->c->qmp, "announce-self", a, link_announced, op);
}

static void link_release(TellOp *op)
{
    JsonObject *a;

    if (!op->c->family || !op->c->qmp || op->c->state == SFD_VM_EXITED) {
        tell_finish(op, NULL); /* no NIC to raise */
        return;
    }
    a = json_object_new();
    json_object_set_string_member(a, "name", "net0");
    json_object_set_boolean_member(a, "up", TRUE);
    sfd_qmp_cmd(op->c->qmp, "set_link", a, link_raised, op);
}

/* ---- the serial console ---- */

static void serial_line(SfdLineIO *io, const char *line, gsize len,
                        gboolean overlong, gpointer opaque)
{
    SerialCtx *sc = opaque;
    TellOp *op = sc->op;
    const char *m = overlong ? NULL : strstr(line, "@@SFNET ");

    if (!m || !op) {
        return;
    }
    int rc = atoi(m + 8);
    op->c->net_configured = rc == 0;
    if (rc != 0) {
        g_warning("%s: configuring eth0 in the guest exited %d", op->c->name,
                  rc);
    }
    /* Its address is its own now: let it speak. */
    op->serial->op = NULL;
    sfd_lineio_close(op->serial->io); /* serial_closed frees it */
    op->serial = NULL;
    if (op->timer) {
        g_source_remove(op->timer);
        op->timer = 0;
    }
    link_release(op);
}

static void serial_closed(SfdLineIO *io, gpointer opaque)
{
    SerialCtx *sc = opaque;
    TellOp *op = sc->op;

    sfd_lineio_free(io);
    g_free(sc);
    if (op) {
        /* The console went away before the guest answered. */
        op->serial = NULL;
        tell_finish(op, "serial console closed before the guest answered");
    }
}

static gboolean serial_timeout(gpointer data)
{
    TellOp *op = data;

    op->timer = 0;
    tell_finish(op, "the guest did not answer on its serial console");
    return G_SOURCE_REMOVE;
}

static void tell_serial(TellOp *op)
{
    SfdVm *c = op->c;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    if (!c->family) {
        tell_finish(op, NULL); /* nothing to tell without a network */
        return;
    }
    g_strlcpy(sa.sun_path, c->serial_path, sizeof(sa.sun_path));
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        g_autofree char *m =
            g_strdup_printf("serial %s: %s", c->serial_path, g_strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        tell_finish(op, m);
        return;
    }
    op->serial = g_new0(SerialCtx, 1);
    op->serial->op = op;
    op->serial->io = sfd_lineio_new(fd, 65536, 65536, serial_line, NULL,
                                    serial_closed, op->serial);
    /* The marker is split in the typed line so that the tty's echo of
     * the command never matches, only the printed result. */
    g_autofree char *cmd = g_strdup_printf(
        "(ip addr flush dev eth0 && ip link set eth0 address %s && "
        "ip link set eth0 up && ip addr add %s/%d dev eth0); "
        "echo \"@@SF\"\"NET $?@@\"\n",
        c->mac, c->ip, c->family->prefix);
    sfd_lineio_write(op->serial->io, cmd, strlen(cmd));
    op->timer = g_timeout_add_seconds(SFD_SERIAL_TIMEOUT_S, serial_timeout, op);
}

/* ---- the agent ---- */

static void agent_try(TellOp *op);

/* Delivering through the agent failed: a guest fork's clone is of no
 * use without it; an operator's falls back to the serial console. */
static void agent_failed(TellOp *op, const char *err)
{
    if (op->request) {
        g_autofree char *m = g_strdup_printf("identity: %s", err);
        tell_finish(op, m);
        return;
    }
    g_warning("%s: identity through the guest agent failed (%s); "
              "configuring it through its serial console",
              op->c->name, err);
    tell_serial(op);
}

static gboolean agent_timer(gpointer data)
{
    TellOp *op = data;

    op->timer = 0;
    agent_try(op);
    return G_SOURCE_REMOVE;
}

static gboolean agent_retry(TellOp *op)
{
    if (g_get_monotonic_time() >= op->deadline_us ||
        op->c->state == SFD_VM_EXITED || !op->c->qmp) {
        return FALSE;
    }
    op->timer = g_timeout_add(IDENTITY_RETRY_MS, agent_timer, op);
    return TRUE;
}

/* The agent applied the identity (or gave no sign within the time). */
static void agent_applied(SfdVm *c, JsonObject *data, gboolean ended,
                          gpointer opaque)
{
    TellOp *op = opaque;

    if (ended) {
        tell_finish(op, "the clone has ended");
        return;
    }
    if (!data) {
        /* It said it would report, and did not. */
        g_warning("%s: its agent did not report the identity applied in "
                  "%d s; raising its link",
                  c->name, IDENTITY_APPLIED_S);
        c->net_configured = c->family != NULL;
        link_release(op);
        return;
    }
    g_info("%s: identity applied (clock %+" G_GINT64_FORMAT " us)", c->name,
           json_object_get_int_member_with_default(data, "clock-skew-us", 0));
    c->net_configured = c->family != NULL;
    if (!json_object_get_boolean_member_with_default(data, "link-released",
                                                     TRUE)) {
        link_release(op);
        return;
    }
    tell_finish(op, NULL);
}

static void agent_replied(SfdQmp *q, JsonNode *ret, const char *err,
                          gpointer opaque)
{
    TellOp *op = opaque;

    if (!err) {
        /*
         * QMP answers in order: the report, which the guest can only send
         * after this identity reached it, comes after this reply.
         */
        g_info("%s: identity sent", op->c->name);
        if (!(op->features & SF_AGENT_FEATURE_APPLIED)) {
            /* Its agent never reports: raise the link now. */
            op->c->net_configured = op->c->family != NULL;
            link_release(op);
            return;
        }
        sfd_vm_wait_event(op->c, "SF_AGENT_IDENTITY_APPLIED",
                          IDENTITY_APPLIED_S * 1000, agent_applied, op);
        return;
    }
    /* QEMU consumes an answered request even when the guest could not
     * take it: only a message of sfd's own can be sent again. */
    if (!op->request && !g_str_has_prefix(err, "QMP ") && agent_retry(op)) {
        g_debug("%s: identity: %s (retrying)", op->c->name, err);
        return;
    }
    agent_failed(op, err);
}

/* How long to wait for the clone's agent, asked once, before the reply
 * is sent (or the console used): 0 for "go to the console now". */
static gint64 agent_wait_us(TellOp *op, JsonObject *o)
{
    SfdDomain *d = g_hash_table_lookup(sfd->domains, op->c->domain);
    gint64 version =
        o ? json_object_get_int_member_with_default(o, "agent-version", 0) : 0;

    if (op->request) {
        return IDENTITY_REOPEN_S * G_USEC_PER_SEC; /* its agent asked */
    }
    if (!o || (d && !d->guest.agent)) {
        return 0;
    }
    if (version > 0) {
        return IDENTITY_REOPEN_S * G_USEC_PER_SEC;
    }
    g_info("%s: its parent had no agent running when it was forked: "
           "waiting up to %d s for the clone's agent",
           op->c->name, IDENTITY_BOOT_WAIT_S);
    return IDENTITY_BOOT_WAIT_S * G_USEC_PER_SEC;
}

static void agent_info(SfdQmp *q, JsonNode *ret, const char *err,
                       gpointer opaque)
{
    TellOp *op = opaque;
    JsonObject *o = !err && ret && JSON_NODE_HOLDS_OBJECT(ret)
                        ? json_node_get_object(ret)
                        : NULL;
    gboolean present =
        o && json_object_get_boolean_member_with_default(o, "present", FALSE);
    gboolean connected = o && json_object_get_boolean_member_with_default(
                                  o, "guest-connected", FALSE);

    if (err && g_str_has_prefix(err, "QMP ")) {
        agent_failed(op, err);
        return;
    }
    if (op->c->state == SFD_VM_EXITED || !op->c->qmp) {
        tell_finish(op, "the clone has ended");
        return;
    }
    if (o) {
        op->features = json_object_get_int_member_with_default(
            o, "agent-features", 0);
    }
    if (!op->deadline_us) {
        gint64 wait = connected ? IDENTITY_REOPEN_S * G_USEC_PER_SEC
                                : agent_wait_us(op, o);
        if (!wait) {
            tell_serial(op); /* no agent to wait for */
            return;
        }
        op->deadline_us = g_get_monotonic_time() + wait;
    }
    if (present && !connected && agent_retry(op)) {
        return;
    }
    if (!connected && !op->request) {
        agent_failed(op, "the guest agent did not connect");
        return;
    }
    sfd_qmp_cmd(op->c->qmp, "sf-agent-reply", json_object_ref(op->args),
                agent_replied, op);
}

static void agent_try(TellOp *op)
{
    if (op->c->state == SFD_VM_EXITED || !op->c->qmp) {
        tell_finish(op, "the clone has ended");
        return;
    }
    sfd_qmp_cmd(op->c->qmp, "query-sf-agent", NULL, agent_info, op);
}

char *sfd_identity_hostname(const char *name)
{
    char *h = g_strndup(name, 63); /* SF_AGENT_HOSTNAME_LEN - 1 */

    /* Domain names may hold '_' and start with any of [A-Za-z0-9_.-];
     * a host name is [A-Za-z0-9.-] and starts with a letter or digit. */
    for (char *p = h; *p; p++) {
        if (!g_ascii_isalnum(*p) && *p != '.' && *p != '-') {
            *p = '-';
        }
    }
    if (!g_ascii_isalnum(h[0])) {
        h[0] = 'x';
    }
    return h;
}

void sfd_identity_tell(SfdVm *c, guint32 request, guint64 ticket,
                       guint32 generation, SfdIdentityDone done,
                       gpointer opaque)
{
    TellOp *op = g_new0(TellOp, 1);
    JsonObject *o = json_object_new();
    g_autofree char *host = sfd_identity_hostname(c->name);

    if (request) {
        json_object_set_int_member(o, "request", request);
    }
    json_object_set_string_member(o, "kind", "identity");
    json_object_set_int_member(o, "clone-id", MAX(c->guest_id, 1));
    json_object_set_int_member(o, "generation", MAX(generation, 1));
    json_object_set_int_member(o, "ticket", ticket);
    if (c->mac) {
        json_object_set_string_member(o, "mac", c->mac);
    }
    if (c->ip && c->family) {
        json_object_set_string_member(o, "ip", c->ip);
        json_object_set_int_member(o, "prefix", c->family->prefix);
    }
    json_object_set_string_member(o, "hostname", host);
    op->c = sfd_vm_ref(c);
    op->request = request;
    op->args = o;
    op->done = done;
    op->opaque = opaque;
    agent_try(op);
}
