/*
 * sfd: the protocol server (see proto.h).
 *
 * Every bad line gets one error line and the connection stays usable:
 * a line over SFD_MAX_LINE bytes (its rest is discarded up to the next
 * newline), a line that is not JSON text (a NUL byte included),
 * malformed JSON, a non-object, a missing or unknown command, a
 * missing, unknown or mistyped argument.  Commands may answer later
 * (fork, start); answers carry the request's id, so a client may have
 * several requests in flight.
 *
 * End of input only means "no more requests": every request already
 * read is still answered, and a subscribed client still gets its
 * events; the connection is closed once nothing is owed (`echo ... |
 * socat` shuts down its sending side right after the request).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <glib-unix.h>

#include "sfd.h"
#include "proto.h"
#include "lineio.h"

#define SFD_MAX_LINE    (4 * 1024 * 1024)
#define SFD_MAX_OUT     (16 * 1024 * 1024)
#define SFD_MAX_CLIENTS 256

typedef struct SfdClient {
    int refs;
    gboolean gone;
    SfdLineIO *io;
    GStrv events; /* subscribed events; NULL for all */
    gboolean subscribed;
    int events_left;      /* subscribed: events until it ends, -1: no end */
    gboolean input_ended; /* the client sends no more requests */
    guint pending;        /* requests read and not answered yet */
} SfdClient;

struct SfdRequest {
    SfdClient *client;
    JsonNode *id; /* NULL when the request had none */
    char *command;
};

struct SfdServer {
    int fd;
    guint watch;
    char *path;
    const SfdCommand *commands;
    GList *clients;
};

static SfdServer *server;

static void client_unref(SfdClient *c)
{
    if (--c->refs == 0) {
        sfd_lineio_free(c->io);
        g_strfreev(c->events);
        g_free(c);
    }
}

static void send_node(SfdClient *c, JsonNode *node)
{
    g_autofree char *s = json_to_string(node, FALSE);
    g_autofree char *line = g_strconcat(s, "\n", NULL);

    if (!c->gone) {
        sfd_lineio_write(c->io, line, strlen(line));
    }
}

static JsonNode *error_node(const char *cls, const char *desc, JsonNode *id)
{
    g_autoptr(JsonBuilder) b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "error");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "class");
    json_builder_add_string_value(b, cls);
    json_builder_set_member_name(b, "desc");
    json_builder_add_string_value(b, desc);
    json_builder_end_object(b);
    if (id) {
        json_builder_set_member_name(b, "id");
        json_builder_add_value(b, json_node_copy(id));
    }
    json_builder_end_object(b);
    return json_builder_get_root(b);
}

static void send_error(SfdClient *c, const char *cls, const char *desc,
                       JsonNode *id)
{
    g_autoptr(JsonNode) n = error_node(cls, desc, id);

    send_node(c, n);
}

/* Close a client whose input ended once it is owed nothing more. */
static void client_maybe_finish(SfdClient *c)
{
    if (!c->gone && c->input_ended && c->pending == 0 && !c->subscribed) {
        sfd_lineio_close_flushed(c->io);
    }
}

static void request_free(SfdRequest *req)
{
    SfdClient *c = req->client;

    c->pending--;
    client_maybe_finish(c);
    client_unref(c);
    if (req->id) {
        json_node_unref(req->id);
    }
    g_free(req->command);
    g_free(req);
}

void sfd_request_return(SfdRequest *req, JsonNode *ret)
{
    JsonObject *o = json_object_new();
    g_autoptr(JsonNode) n = json_node_new(JSON_NODE_OBJECT);

    if (!ret) {
        ret = json_node_init_object(json_node_alloc(), json_object_new());
    }
    json_object_set_member(o, "return", ret);
    if (req->id) {
        json_object_set_member(o, "id", json_node_copy(req->id));
    }
    json_node_take_object(n, o);
    send_node(req->client, n);
    request_free(req);
}

void sfd_request_error(SfdRequest *req, const char *cls, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *desc = NULL;

    va_start(ap, fmt);
    desc = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_info("%s: %s: %s", req->command, cls, desc);
    send_error(req->client, cls, desc, req->id);
    request_free(req);
}

void sfd_request_subscribe(SfdRequest *req, GStrv events, int count)
{
    SfdClient *c = req->client;

    g_strfreev(c->events);
    c->events = events && events[0] ? g_strdupv(events) : NULL;
    c->subscribed = TRUE;
    c->events_left = count > 0 ? count : -1;
}

void sfd_event(const char *name, JsonNode *data)
{
    JsonObject *o = json_object_new();
    JsonObject *ts = json_object_new();
    g_autoptr(JsonNode) n = json_node_new(JSON_NODE_OBJECT);
    gint64 now = g_get_real_time();

    g_info("event %s", name);
    json_object_set_string_member(o, "event", name);
    json_object_set_member(
        o, "data",
        data ? data
             : json_node_init_object(json_node_alloc(), json_object_new()));
    json_object_set_int_member(ts, "seconds", now / G_USEC_PER_SEC);
    json_object_set_int_member(ts, "microseconds", now % G_USEC_PER_SEC);
    json_object_set_object_member(o, "timestamp", ts);
    json_node_take_object(n, o);
    if (!server) {
        return;
    }
    for (GList *l = server->clients; l; l = l->next) {
        SfdClient *c = l->data;
        if (c->subscribed &&
            (!c->events ||
             g_strv_contains((const char *const *)c->events, name))) {
            send_node(c, n);
            if (c->events_left > 0 && --c->events_left == 0) {
                c->subscribed = FALSE; /* it asked for that many */
                client_maybe_finish(c);
            }
        }
    }
}

const char *sfd_arg_type_name(SfdArgType t)
{
    switch (t) {
    case SFD_ARG_STRING:
        return "a string";
    case SFD_ARG_INT:
        return "an integer";
    case SFD_ARG_BOOL:
        return "a boolean";
    case SFD_ARG_STRLIST:
        return "a list of strings";
    }
    return "?";
}

static gboolean node_has_type(JsonNode *n, SfdArgType t)
{
    if (t == SFD_ARG_STRLIST) {
        if (!JSON_NODE_HOLDS_ARRAY(n)) {
            return FALSE;
        }
        JsonArray *a = json_node_get_array(n);
        for (guint i = 0; i < json_array_get_length(a); i++) {
            JsonNode *e = json_array_get_element(a, i);
            if (!JSON_NODE_HOLDS_VALUE(e) ||
                json_node_get_value_type(e) != G_TYPE_STRING) {
                return FALSE;
            }
        }
        return TRUE;
    }
    if (!JSON_NODE_HOLDS_VALUE(n)) {
        return FALSE;
    }
    GType vt = json_node_get_value_type(n);
    switch (t) {
    case SFD_ARG_STRING:
        return vt == G_TYPE_STRING;
    case SFD_ARG_INT:
        return vt == G_TYPE_INT64;
    case SFD_ARG_BOOL:
        return vt == G_TYPE_BOOLEAN;
    default:
        return FALSE;
    }
}

char *sfd_args_check(const SfdArgSpec *spec, JsonObject *args)
{
    g_autoptr(GList) names = json_object_get_members(args);

    for (GList *l = names; l; l = l->next) {
        const SfdArgSpec *s = spec;
        while (s->name && strcmp(s->name, l->data)) {
            s++;
        }
        if (!s->name) {
            return g_strdup_printf("unknown argument '%s'", (char *)l->data);
        }
        if (!node_has_type(json_object_get_member(args, l->data), s->type)) {
            return g_strdup_printf("argument '%s' must be %s", s->name,
                                   sfd_arg_type_name(s->type));
        }
    }
    for (const SfdArgSpec *s = spec; s->name; s++) {
        if (s->required && !json_object_has_member(args, s->name)) {
            return g_strdup_printf("missing argument '%s' (%s)", s->name,
                                   sfd_arg_type_name(s->type));
        }
    }
    return NULL;
}

gboolean sfd_request_decode(const SfdCommand *commands, const char *line,
                            gsize len, const SfdCommand **cmd_out,
                            JsonObject **args_out, JsonNode **id_out,
                            char **cls, char **err)
{
    g_autoptr(JsonParser) parser = NULL;
    g_autoptr(GError) e = NULL;
    g_autoptr(GList) names = NULL;
    const SfdCommand *cmd;
    JsonObject *o;
    JsonNode *root, *id, *exec, *argn;
    g_autofree char *bad = NULL;

    *id_out = NULL;
#define FAIL(c, ...)                                                           \
    do {                                                                       \
        *cls = g_strdup(c);                                                    \
        *err = g_strdup_printf(__VA_ARGS__);                                   \
        return FALSE;                                                          \
    } while (0)
    /* json-glib stops at a NUL: the line would be judged by its start. */
    if (memchr(line, '\0', len)) {
        FAIL("ParseError", "malformed JSON: the line holds a NUL byte");
    }
    if (!g_utf8_validate(line, len, NULL)) {
        FAIL("ParseError", "malformed JSON: the line is not UTF-8");
    }
    parser = json_parser_new_immutable();
    if (!json_parser_load_from_data(parser, line, len, &e)) {
        FAIL("ParseError", "malformed JSON: %s", e->message);
    }
    root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        FAIL("InvalidRequest", "a request must be a JSON object");
    }
    o = json_node_get_object(root);
    id = json_object_get_member(o, "id");
    if (id) {
        *id_out = json_node_copy(id);
    }
    names = json_object_get_members(o);
    for (GList *l = names; l; l = l->next) {
        if (strcmp(l->data, "execute") && strcmp(l->data, "arguments") &&
            strcmp(l->data, "id")) {
            FAIL("InvalidRequest",
                 "unknown member '%s' in request (expected execute, "
                 "arguments, id)",
                 (char *)l->data);
        }
    }
    exec = json_object_get_member(o, "execute");
    if (!exec || !JSON_NODE_HOLDS_VALUE(exec) ||
        json_node_get_value_type(exec) != G_TYPE_STRING) {
        FAIL("InvalidRequest", "'execute' must be present and a string");
    }
    for (cmd = commands; cmd->name; cmd++) {
        if (!strcmp(cmd->name, json_node_get_string(exec))) {
            break;
        }
    }
    if (!cmd->name) {
        FAIL("CommandNotFound", "unknown command '%s' (try 'help')",
             json_node_get_string(exec));
    }
    argn = json_object_get_member(o, "arguments");
    if (argn && !JSON_NODE_HOLDS_OBJECT(argn)) {
        FAIL("InvalidArgument", "'arguments' must be an object");
    }
    g_autoptr(JsonObject) args =
        argn ? json_object_ref(json_node_get_object(argn)) : json_object_new();
    if ((bad = sfd_args_check(cmd->args, args))) {
        FAIL("InvalidArgument", "%s: %s", cmd->name, bad);
    }
#undef FAIL
    *cmd_out = cmd;
    *args_out = g_steal_pointer(&args);
    return TRUE;
}

static void client_line(SfdLineIO *io, const char *line, gsize len,
                        gboolean overlong, gpointer opaque)
{
    SfdClient *c = opaque;
    const SfdCommand *cmd;
    g_autoptr(JsonObject) args = NULL;
    g_autoptr(JsonNode) id = NULL;
    g_autofree char *cls = NULL, *err = NULL;
    SfdRequest *req;

    if (overlong) {
        g_autofree char *m = g_strdup_printf("line longer than %d bytes: "
                                             "discarded",
                                             SFD_MAX_LINE);
        send_error(c, "LineTooLong", m, NULL);
        return;
    }
    /* Blank lines are skipped (whitespace between objects, as QMP). */
    gsize i;
    for (i = 0; i < len && g_ascii_isspace(line[i]); i++) {
    }
    if (i == len) {
        return;
    }
    if (!sfd_request_decode(server->commands, line, len, &cmd, &args, &id, &cls,
                            &err)) {
        send_error(c, cls, err, id);
        return;
    }
    req = g_new0(SfdRequest, 1);
    req->client = c;
    c->refs++;
    c->pending++;
    req->id = g_steal_pointer(&id);
    req->command = g_strdup(cmd->name);
    g_debug("request %s", cmd->name);
    cmd->fn(req, args);
}

static void client_eof(SfdLineIO *io, gpointer opaque)
{
    SfdClient *c = opaque;

    g_debug("client's input ended (%u answers owed%s)", c->pending,
            c->subscribed ? ", subscribed" : "");
    c->input_ended = TRUE;
    client_maybe_finish(c);
}

static void client_closed(SfdLineIO *io, gpointer opaque)
{
    SfdClient *c = opaque;

    g_debug("client left");
    c->gone = TRUE;
    server->clients = g_list_remove(server->clients, c);
    client_unref(c);
}

static void send_greeting(SfdClient *c)
{
    g_autoptr(JsonBuilder) b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "SFD");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "version");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "protocol");
    json_builder_add_int_value(b, SFD_PROTOCOL_VERSION);
    json_builder_set_member_name(b, "sfd");
    json_builder_add_string_value(b, SFD_VERSION);
    json_builder_end_object(b);
    json_builder_set_member_name(b, "commands");
    json_builder_begin_array(b);
    for (const SfdCommand *cmd = server->commands; cmd->name; cmd++) {
        json_builder_add_string_value(b, cmd->name);
    }
    json_builder_end_array(b);
    json_builder_end_object(b);
    json_builder_end_object(b);
    g_autoptr(JsonNode) n = json_builder_get_root(b);
    send_node(c, n);
}

static gboolean server_accept(int fd, GIOCondition cond, gpointer data)
{
    int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    SfdClient *c;

    if (cfd < 0) {
        if (errno != EAGAIN && errno != EINTR) {
            g_warning("accept: %s", g_strerror(errno));
        }
        return G_SOURCE_CONTINUE;
    }
    if (g_list_length(server->clients) >= SFD_MAX_CLIENTS) {
        static const char busy[] = "{\"error\": {\"class\": \"TooManyClients\","
                                   " \"desc\": \"too many clients\"}}\n";
        if (write(cfd, busy, sizeof(busy) - 1) < 0) {
            /* nothing more to tell it */
        }
        close(cfd);
        return G_SOURCE_CONTINUE;
    }
    c = g_new0(SfdClient, 1);
    c->refs = 1;
    c->io = sfd_lineio_new(cfd, SFD_MAX_LINE, SFD_MAX_OUT, client_line,
                           client_eof, client_closed, c);
    server->clients = g_list_prepend(server->clients, c);
    g_debug("client connected");
    send_greeting(c);
    return G_SOURCE_CONTINUE;
}

SfdServer *sfd_server_new(const char *path, int mode,
                          const SfdCommand *commands, char **err)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        *err = g_strdup_printf("socket path %s is too long", path);
        return NULL;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        *err = g_strdup_printf("socket: %s", g_strerror(errno));
        return NULL;
    }
    /* A socket file nobody answers on is a leftover: replace it.  One
     * that answers belongs to a running sfd. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        *err = g_strdup_printf("%s: another sfd is listening there", path);
        close(fd);
        return NULL;
    }
    close(fd);
    unlink(path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        chmod(path, mode) < 0 || listen(fd, 64) < 0) {
        *err = g_strdup_printf("%s: %s", path, g_strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    server = g_new0(SfdServer, 1);
    server->fd = fd;
    server->path = g_strdup(path);
    server->commands = commands;
    server->watch = g_unix_fd_add(fd, G_IO_IN, server_accept, server);
    return server;
}

void sfd_server_free(SfdServer *s)
{
    if (!s) {
        return;
    }
    g_source_remove(s->watch);
    close(s->fd);
    unlink(s->path);
    while (s->clients) {
        SfdClient *c = s->clients->data;
        s->clients = g_list_remove(s->clients, c);
        c->gone = TRUE;
        client_unref(c);
    }
    g_free(s->path);
    g_free(s);
    server = NULL;
}
