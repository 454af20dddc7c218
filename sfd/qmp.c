/*
 * sfd: asynchronous QMP client (see qmp.h).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "qmp.h"
#include "lineio.h"

#define QMP_MAX_LINE (8 * 1024 * 1024)
#define QMP_RETRY_MS 50

typedef struct Pending {
    gint64 id;
    SfdQmpReply reply;
    gpointer opaque;
} Pending;

struct SfdQmp {
    char *path;
    gint64 deadline;
    guint retry;
    SfdLineIO *io;
    gboolean ready_sent, closed;
    gint64 next_id;
    GQueue pending;
    SfdQmpReady ready;
    SfdQmpEvent event;
    SfdQmpClosed on_closed;
    gpointer opaque;
};

static void qmp_send(SfdQmp *q, const char *cmd, JsonObject *args,
                     SfdQmpReply reply, gpointer opaque)
{
    g_autoptr(JsonNode) n = json_node_new(JSON_NODE_OBJECT);
    JsonObject *o = json_object_new();
    Pending *p = g_new0(Pending, 1);

    p->id = q->next_id++;
    p->reply = reply;
    p->opaque = opaque;
    json_object_set_string_member(o, "execute", cmd);
    if (args) {
        json_object_set_object_member(o, "arguments", args);
    }
    json_object_set_int_member(o, "id", p->id);
    json_node_take_object(n, o);
    g_autofree char *s = json_to_string(n, FALSE);
    g_autofree char *line = g_strconcat(s, "\n", NULL);
    g_queue_push_tail(&q->pending, p);
    sfd_lineio_write(q->io, line, strlen(line));
}

void sfd_qmp_cmd(SfdQmp *q, const char *cmd, JsonObject *args,
                 SfdQmpReply reply, gpointer opaque)
{
    if (!q->io || q->closed) {
        if (args) {
            json_object_unref(args);
        }
        reply(q, NULL, "QMP is not connected", opaque);
        return;
    }
    qmp_send(q, cmd, args, reply, opaque);
}

static void caps_done(SfdQmp *q, JsonNode *ret, const char *err,
                      gpointer opaque)
{
    if (!q->ready_sent && !q->closed) {
        q->ready_sent = TRUE;
        q->ready(q, err, q->opaque);
    }
}

static void qmp_line(SfdLineIO *io, const char *line, gsize len,
                     gboolean overlong, gpointer opaque)
{
    SfdQmp *q = opaque;
    g_autoptr(JsonParser) parser = json_parser_new_immutable();
    JsonObject *o;

    if (overlong || !json_parser_load_from_data(parser, line, len, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser))) {
        g_warning("QMP %s: unparsable line from QEMU", q->path);
        return;
    }
    o = json_node_get_object(json_parser_get_root(parser));
    if (json_object_has_member(o, "QMP")) {
        qmp_send(q, "qmp_capabilities", NULL, caps_done, NULL);
        return;
    }
    if (json_object_has_member(o, "event")) {
        JsonObject *data = json_object_has_member(o, "data")
                               ? json_object_get_object_member(o, "data")
                               : NULL;
        if (q->event) {
            q->event(q, json_object_get_string_member(o, "event"), data,
                     q->opaque);
        }
        return;
    }
    /* An answer: QEMU answers in order, but match the id anyway. */
    gint64 id = json_object_has_member(o, "id")
                    ? json_object_get_int_member(o, "id")
                    : -1;
    for (GList *l = q->pending.head; l; l = l->next) {
        Pending *p = l->data;
        if (p->id != id) {
            continue;
        }
        g_queue_delete_link(&q->pending, l);
        if (json_object_has_member(o, "error")) {
            JsonObject *e = json_object_get_object_member(o, "error");
            p->reply(q, NULL,
                     json_object_get_string_member_with_default(e, "desc",
                                                                "QMP error"),
                     p->opaque);
        } else {
            p->reply(q, json_object_get_member(o, "return"), NULL, p->opaque);
        }
        g_free(p);
        return;
    }
}

static void qmp_closed(SfdLineIO *io, gpointer opaque)
{
    SfdQmp *q = opaque;
    Pending *p;

    q->closed = TRUE;
    while ((p = g_queue_pop_head(&q->pending))) {
        if (p->reply) {
            p->reply(q, NULL, "QMP connection closed", p->opaque);
        }
        g_free(p);
    }
    if (!q->ready_sent) {
        q->ready_sent = TRUE;
        q->ready(q, "QMP connection closed before it was ready", q->opaque);
        return;
    }
    if (q->on_closed) {
        q->on_closed(q, q->opaque);
    }
}

static gboolean qmp_try_connect(gpointer data)
{
    SfdQmp *q = data;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    g_strlcpy(sa.sun_path, q->path, sizeof(sa.sun_path));
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        q->retry = 0;
        q->io = sfd_lineio_new(fd, QMP_MAX_LINE, QMP_MAX_LINE, qmp_line, NULL,
                               qmp_closed, q);
        return G_SOURCE_REMOVE;
    }
    int e = errno;
    if (fd >= 0) {
        close(fd);
    }
    if (g_get_monotonic_time() > q->deadline) {
        g_autofree char *m =
            g_strdup_printf("QMP %s: %s", q->path, g_strerror(e));
        q->retry = 0;
        q->ready_sent = TRUE;
        q->closed = TRUE;
        q->ready(q, m, q->opaque);
        return G_SOURCE_REMOVE;
    }
    return G_SOURCE_CONTINUE;
}

SfdQmp *sfd_qmp_connect(const char *path, int timeout_ms, SfdQmpReady ready,
                        SfdQmpEvent event, SfdQmpClosed closed, gpointer opaque)
{
    SfdQmp *q = g_new0(SfdQmp, 1);

    q->path = g_strdup(path);
    q->deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    q->next_id = 1;
    q->ready = ready;
    q->event = event;
    q->on_closed = closed;
    q->opaque = opaque;
    g_queue_init(&q->pending);
    q->retry = g_timeout_add(QMP_RETRY_MS, qmp_try_connect, q);
    return q;
}

void sfd_qmp_free(SfdQmp *q)
{
    Pending *p;

    if (!q) {
        return;
    }
    if (q->retry) {
        g_source_remove(q->retry);
    }
    q->closed = TRUE;
    if (!q->ready_sent) {
        q->ready_sent = TRUE;
        q->ready(q, "QMP connection closed before it was ready", q->opaque);
    }
    /* Fail what is still pending: its owners may be waiting for it. */
    while ((p = g_queue_pop_head(&q->pending))) {
        if (p->reply) {
            p->reply(q, NULL, "QMP connection closed", p->opaque);
        }
        g_free(p);
    }
    sfd_lineio_free(q->io);
    g_free(q->path);
    g_free(q);
}
