/*
 * sfctl: the command line over sfd's protocol.
 *
 *   sfctl [--socket PATH] [--json] [--timeout S] COMMAND [ARGS]
 *
 * The socket is --socket, else $SF_SOCKET, else /run/snowflock/sfd.sock.
 * Human output by default; --json prints sfd's "return" (or "error")
 * object as it came, one line, for jq.
 *
 * Exit codes:
 *   0  success
 *   1  sfd refused or the operation failed (Failed, HookFailed, ...)
 *   2  usage error, or sfd found an argument or the XML invalid
 *   3  sfd unreachable, protocol broken, or timed out
 *   4  no such domain, VM or clone
 *   5  wrong state (not running, already running, ...) or quota
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <glib.h>
#include <json-glib/json-glib.h>

enum { EX_OK, EX_FAILED, EX_USAGE, EX_PROTO, EX_NOTFOUND, EX_STATE };

typedef struct Cmd {
    const char *name;
    const char *args;
    const char *help;
    int min, max; /* positional arguments */
} Cmd;

static const Cmd cmds[] = {
    { "define", "FILE.xml",
      "define (or redefine) a domain from an XML "
      "file ('-' reads stdin)",
      1, 1 },
    { "undefine", "VM", "forget a domain that is not running", 1, 1 },
    { "start", "VM", "start a defined domain", 1, 1 },
    { "stop", "VM", "stop a VM or clone (QEMU quits) and wait for it", 1, 1 },
    { "destroy", "VM", "kill a VM or clone at once and wait for it", 1, 1 },
    { "kill", "VM [SIGNAL]",
      "send a signal (default KILL) to a VM or "
      "clone",
      1, 2 },
    { "list", "", "domains, VMs and clones", 0, 0 },
    { "info", "VM", "details of a domain, VM or clone", 1, 1 },
    { "fork", "VM N", "fork a running VM into up to N clones", 2, 2 },
    { "clones", "VM", "the clones of a VM", 1, 1 },
    { "events", "[EVENT...]",
      "print events as they happen (--count N "
      "stops after N)",
      0, 16 },
    { "version", "", "sfd's version and protocol", 0, 0 },
    { NULL },
};

static const char *socket_path;
static gboolean json_out;
static int timeout_s = 600;
static int count_events = -1;
static int sock = -1;
static GString *inbuf;

static void usage(FILE *f, const Cmd *c)
{
    if (c) {
        fprintf(f, "usage: sfctl [OPTIONS] %s %s\n  %s\n", c->name, c->args,
                c->help);
    } else {
        fprintf(f, "usage: sfctl [OPTIONS] COMMAND [ARGS]\n\ncommands:\n");
        for (const Cmd *k = cmds; k->name; k++) {
            fprintf(f, "  %-9s %-12s %s\n", k->name, k->args, k->help);
        }
    }
    fprintf(f, "\noptions:\n"
               "  -s, --socket PATH  sfd's socket (default $SF_SOCKET or "
               "/run/snowflock/sfd.sock)\n"
               "  -j, --json         machine-readable output, one JSON "
               "object\n"
               "  -t, --timeout S    give up waiting after S seconds "
               "(default 600)\n"
               "  -h, --help         this help (sfctl COMMAND --help for "
               "one command)\n"
               "\nexit codes: 0 ok, 1 failed, 2 usage or invalid argument, "
               "3 sfd unreachable,\n  4 not found, 5 wrong state or "
               "quota\n");
}

static void die(int code, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void die(int code, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "sfctl: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(code);
}

static void connect_sfd(void)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };

    if (strlen(socket_path) >= sizeof(sa.sun_path)) {
        die(EX_PROTO, "%s: path too long", socket_path);
    }
    strcpy(sa.sun_path, socket_path);
    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0 || connect(sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        die(EX_PROTO, "cannot connect to sfd at %s: %s", socket_path,
            g_strerror(errno));
    }
    inbuf = g_string_new(NULL);
}

/* One line from sfd (NULL at EOF), waiting until the deadline. */
static char *read_line(gint64 deadline)
{
    for (;;) {
        char *nl = memchr(inbuf->str, '\n', inbuf->len);
        if (nl) {
            char *line = g_strndup(inbuf->str, nl - inbuf->str);
            g_string_erase(inbuf, 0, nl - inbuf->str + 1);
            return line;
        }
        struct pollfd p = { .fd = sock, .events = POLLIN };
        int ms = -1;
        if (deadline) {
            gint64 left = deadline - g_get_monotonic_time();
            if (left <= 0) {
                die(EX_PROTO, "no answer from sfd in %d s", timeout_s);
            }
            ms = left / 1000 + 1;
        }
        int r = poll(&p, 1, ms);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r == 0) {
            continue;
        }
        char buf[65536];
        ssize_t n = read(sock, buf, sizeof(buf));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return NULL;
        }
        g_string_append_len(inbuf, buf, n);
    }
}

static JsonNode *parse(const char *line)
{
    g_autoptr(JsonParser) p = json_parser_new();

    if (!json_parser_load_from_data(p, line, -1, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
        die(EX_PROTO, "sfd sent something that is not a JSON object");
    }
    return json_node_copy(json_parser_get_root(p));
}

static void send_request(const char *cmd, JsonObject *args, int id)
{
    g_autoptr(JsonBuilder) b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "execute");
    json_builder_add_string_value(b, cmd);
    if (args) {
        json_builder_set_member_name(b, "arguments");
        JsonNode *an = json_node_alloc();
        json_node_init_object(an, args);
        json_builder_add_value(b, an);
    }
    json_builder_set_member_name(b, "id");
    json_builder_add_int_value(b, id);
    json_builder_end_object(b);
    g_autoptr(JsonNode) n = json_builder_get_root(b);
    g_autofree char *s = json_to_string(n, FALSE);
    g_autofree char *line = g_strconcat(s, "\n", NULL);
    size_t off = 0, len = strlen(line);
    while (off < len) {
        ssize_t w = write(sock, line + off, len - off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            die(EX_PROTO, "sfd closed the connection");
        }
        off += w;
    }
}

static int error_code(const char *cls)
{
    if (!strcmp(cls, "NotFound")) {
        return EX_NOTFOUND;
    }
    if (!strcmp(cls, "InvalidState") || !strcmp(cls, "QuotaExceeded")) {
        return EX_STATE;
    }
    if (!strcmp(cls, "InvalidArgument") || !strcmp(cls, "InvalidXML") ||
        !strcmp(cls, "CommandNotFound")) {
        return EX_USAGE;
    }
    return EX_FAILED;
}

/* Send a command and wait for its answer; events are skipped.  Returns
 * the answer's "return" node, or exits with the error. */
static JsonNode *call(const char *cmd, JsonObject *args)
{
    static int next_id = 1;
    int id = next_id++;
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_s * 1000000;

    send_request(cmd, args, id);
    for (;;) {
        g_autofree char *line = read_line(deadline);
        if (!line) {
            die(EX_PROTO, "sfd closed the connection");
        }
        g_autoptr(JsonNode) n = parse(line);
        JsonObject *o = json_node_get_object(n);
        if (!json_object_has_member(o, "id") ||
            json_object_get_int_member(o, "id") != id) {
            continue;
        }
        if (json_object_has_member(o, "error")) {
            JsonObject *e = json_object_get_object_member(o, "error");
            const char *cls = json_object_get_string_member_with_default(
                e, "class", "Failed");
            if (json_out) {
                g_autoptr(JsonNode) en = json_node_alloc();
                json_node_init_object(en, e);
                g_autofree char *s = json_to_string(en, FALSE);
                printf("%s\n", s);
            }
            fprintf(stderr, "sfctl: %s: %s\n", cmd,
                    json_object_get_string_member_with_default(e, "desc",
                                                               "failed"));
            exit(error_code(cls));
        }
        return json_node_copy(json_object_get_member(o, "return"));
    }
}

static const char *s_or(JsonObject *o, const char *k, const char *dflt)
{
    JsonNode *n = json_object_get_member(o, k);

    if (!n || JSON_NODE_HOLDS_NULL(n)) {
        return dflt;
    }
    return json_node_get_string(n) ? json_node_get_string(n) : dflt;
}

static void print_table(JsonArray *a)
{
    printf("%-20s %-6s %-9s %-8s %-15s %-17s %s\n", "NAME", "KIND", "STATE",
           "PID", "IP", "MAC", "GUEST-REQ/REFUSED");
    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonObject *o = json_array_get_object_element(a, i);
        gint64 pid = json_object_get_int_member_with_default(o, "pid", 0);
        g_autofree char *pids =
            pid ? g_strdup_printf("%" G_GINT64_FORMAT, pid) : g_strdup("-");
        JsonObject *ag =
            json_object_has_member(o, "agent") &&
                    JSON_NODE_HOLDS_OBJECT(json_object_get_member(o, "agent"))
                ? json_object_get_object_member(o, "agent")
                : NULL;
        g_autofree char *agent =
            ag ? g_strdup_printf(
                     "%" G_GINT64_FORMAT "/%" G_GINT64_FORMAT,
                     json_object_get_int_member_with_default(ag, "requests", 0),
                     json_object_get_int_member_with_default(ag, "refused", 0))
               : g_strdup("-");
        printf("%-20s %-6s %-9s %-8s %-15s %-17s %s\n", s_or(o, "name", "?"),
               s_or(o, "kind", "?"), s_or(o, "state", "?"), pids,
               s_or(o, "ip", "-"), s_or(o, "mac", "-"), agent);
    }
}

static void print_object(JsonObject *o, const char *indent)
{
    g_autoptr(GList) keys = json_object_get_members(o);
    g_autofree char *in2 = g_strconcat(indent, "  ", NULL);

    for (GList *l = keys; l; l = l->next) {
        JsonNode *n = json_object_get_member(o, l->data);
        if (JSON_NODE_HOLDS_ARRAY(n)) {
            JsonArray *a = json_node_get_array(n);
            printf("%s%s: %u\n", indent, (char *)l->data,
                   json_array_get_length(a));
            if (json_array_get_length(a) &&
                JSON_NODE_HOLDS_OBJECT(json_array_get_element(a, 0))) {
                JsonObject *first = json_array_get_object_element(a, 0);
                if (json_object_has_member(first, "kind")) {
                    print_table(a); /* VMs */
                    continue;
                }
                g_autofree char *in4 = g_strconcat(in2, "  ", NULL);
                for (guint i = 0; i < json_array_get_length(a); i++) {
                    printf("%s-\n", in2);
                    print_object(json_array_get_object_element(a, i), in4);
                }
            }
        } else if (JSON_NODE_HOLDS_OBJECT(n)) {
            printf("%s%s:\n", indent, (char *)l->data);
            print_object(json_node_get_object(n), in2);
        } else if (JSON_NODE_HOLDS_NULL(n)) {
            printf("%s%s: -\n", indent, (char *)l->data);
        } else {
            GValue v = G_VALUE_INIT;
            json_node_get_value(n, &v);
            g_autofree char *s = G_VALUE_HOLDS_STRING(&v)
                                     ? g_value_dup_string(&v)
                                     : g_strdup_value_contents(&v);
            printf("%s%s: %s\n", indent, (char *)l->data, s);
            g_value_unset(&v);
        }
    }
}

static void print_json(JsonNode *n)
{
    g_autofree char *s = json_to_string(n, FALSE);

    printf("%s\n", s);
}

static int run_events(char **names, int n)
{
    JsonObject *args = json_object_new();
    g_autoptr(JsonNode) r = NULL;

    if (n) {
        JsonArray *a = json_array_new();
        for (int i = 0; i < n; i++) {
            json_array_add_string_element(a, names[i]);
        }
        json_object_set_array_member(args, "events", a);
    }
    r = call("subscribe", args);
    fflush(stdout);
    for (int seen = 0; count_events < 0 || seen < count_events;) {
        g_autofree char *line = read_line(0);
        if (!line) {
            die(EX_PROTO, "sfd closed the connection");
        }
        g_autoptr(JsonNode) ev = parse(line);
        JsonObject *o = json_node_get_object(ev);
        if (!json_object_has_member(o, "event")) {
            continue;
        }
        seen++;
        if (json_out) {
            printf("%s\n", line);
        } else {
            JsonObject *ts = json_object_get_object_member(o, "timestamp");
            JsonObject *d = json_object_get_object_member(o, "data");
            time_t t = json_object_get_int_member(ts, "seconds");
            char tb[32];
            strftime(tb, sizeof(tb), "%H:%M:%S", localtime(&t));
            printf("%s %s", tb, json_object_get_string_member(o, "event"));
            g_autoptr(GList) keys = d ? json_object_get_members(d) : NULL;
            for (GList *l = keys; l; l = l->next) {
                JsonNode *v = json_object_get_member(d, l->data);
                g_autofree char *s =
                    JSON_NODE_HOLDS_VALUE(v) &&
                            json_node_get_value_type(v) == G_TYPE_STRING
                        ? g_strdup(json_node_get_string(v))
                        : json_to_string(v, FALSE);
                printf(" %s=%s", (char *)l->data, s);
            }
            printf("\n");
        }
        fflush(stdout);
    }
    return EX_OK;
}

int main(int argc, char **argv)
{
    g_autoptr(GPtrArray) pos = g_ptr_array_new();
    gboolean help = FALSE;
    const Cmd *c = NULL;
    g_autoptr(JsonNode) r = NULL;

    socket_path = g_getenv("SF_SOCKET");
    if (!socket_path || !*socket_path) {
        socket_path = "/run/snowflock/sfd.sock";
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help = TRUE;
        } else if (!strcmp(a, "-j") || !strcmp(a, "--json")) {
            json_out = TRUE;
        } else if (!strcmp(a, "-s") || !strcmp(a, "--socket") ||
                   !strcmp(a, "-t") || !strcmp(a, "--timeout") ||
                   !strcmp(a, "--count")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "sfctl: %s needs a value\n", a);
                return EX_USAGE;
            }
            const char *v = argv[++i];
            if (a[1] == 's' || !strcmp(a, "--socket")) {
                socket_path = v;
            } else {
                guint64 x;
                if (!g_ascii_string_to_unsigned(v, 10, 1, 1000000, &x, NULL)) {
                    fprintf(stderr,
                            "sfctl: %s: not a positive number: "
                            "%s\n",
                            a, v);
                    return EX_USAGE;
                }
                if (!strcmp(a, "--count")) {
                    count_events = x;
                } else {
                    timeout_s = x;
                }
            }
        } else if (g_str_has_prefix(a, "--socket=")) {
            socket_path = a + 9;
        } else if (a[0] == '-' && a[1] && strcmp(a, "-") &&
                   !(pos->len == 2 && g_ascii_isdigit(a[1]))) {
            fprintf(stderr, "sfctl: unknown option %s\n", a);
            return EX_USAGE;
        } else {
            g_ptr_array_add(pos, (char *)a);
        }
    }
    if (pos->len == 0) {
        usage(help ? stdout : stderr, NULL);
        return help ? EX_OK : EX_USAGE;
    }
    for (c = cmds; c->name && strcmp(c->name, pos->pdata[0]); c++) {
    }
    if (!c->name) {
        fprintf(stderr, "sfctl: unknown command '%s'\n", (char *)pos->pdata[0]);
        usage(stderr, NULL);
        return EX_USAGE;
    }
    if (help) {
        usage(stdout, c);
        return EX_OK;
    }
    int nargs = pos->len - 1;
    char **args = (char **)pos->pdata + 1;
    if (nargs < c->min || nargs > c->max) {
        usage(stderr, c);
        return EX_USAGE;
    }

    JsonObject *o = json_object_new();
    if (!strcmp(c->name, "define")) {
        g_autofree char *xml = NULL;
        g_autoptr(GError) e = NULL;
        gsize len;
        if (!strcmp(args[0], "-")) {
            GString *s = g_string_new(NULL);
            char buf[65536];
            size_t n;
            while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0) {
                g_string_append_len(s, buf, n);
            }
            xml = g_string_free(s, FALSE);
        } else if (!g_file_get_contents(args[0], &xml, &len, &e)) {
            fprintf(stderr, "sfctl: %s\n", e->message);
            return EX_USAGE;
        }
        if (!g_utf8_validate(xml, -1, NULL)) {
            fprintf(stderr, "sfctl: %s is not UTF-8\n", args[0]);
            return EX_USAGE;
        }
        json_object_set_string_member(o, "xml", xml);
    } else if (!strcmp(c->name, "fork")) {
        gint64 n;
        if (!g_ascii_string_to_signed(args[1], 10, G_MININT32, G_MAXINT32, &n,
                                      NULL)) {
            fprintf(stderr, "sfctl: fork: N must be a number, not '%s'\n",
                    args[1]);
            return EX_USAGE;
        }
        json_object_set_string_member(o, "vm", args[0]);
        json_object_set_int_member(o, "count", n);
    } else if (!strcmp(c->name, "kill")) {
        json_object_set_string_member(o, "vm", args[0]);
        if (nargs > 1) {
            json_object_set_string_member(o, "signal", args[1]);
        }
    } else if (c->min == 1) {
        json_object_set_string_member(o, "vm", args[0]);
    }

    connect_sfd();
    g_autofree char *greeting =
        read_line(g_get_monotonic_time() + (gint64)timeout_s * 1000000);
    if (!greeting || !strstr(greeting, "\"SFD\"")) {
        die(EX_PROTO, "%s does not speak the sfd protocol", socket_path);
    }
    if (!strcmp(c->name, "events")) {
        json_object_unref(o);
        return run_events(args, nargs);
    }
    r = call(c->name, json_object_get_size(o) ? o : NULL);
    if (!json_object_get_size(o)) {
        json_object_unref(o);
    }
    if (json_out) {
        print_json(r);
        return EX_OK;
    }
    JsonObject *ro = JSON_NODE_HOLDS_OBJECT(r) ? json_node_get_object(r) : NULL;
    if (!strcmp(c->name, "list") || !strcmp(c->name, "clones")) {
        print_table(json_node_get_array(r));
    } else if (!strcmp(c->name, "define")) {
        printf("defined %s (uuid %s)\n", s_or(ro, "name", "?"),
               s_or(ro, "uuid", "?"));
    } else if (!strcmp(c->name, "undefine")) {
        printf("undefined %s\n", args[0]);
    } else if (!strcmp(c->name, "start")) {
        printf("started %s: pid %" G_GINT64_FORMAT ", ip %s, mac %s\n",
               s_or(ro, "name", "?"), json_object_get_int_member(ro, "pid"),
               s_or(ro, "ip", "-"), s_or(ro, "mac", "-"));
    } else if (!strcmp(c->name, "stop") || !strcmp(c->name, "destroy")) {
        printf("%s %s\n", c->name[0] == 's' ? "stopped" : "destroyed", args[0]);
    } else if (!strcmp(c->name, "kill")) {
        printf("signal %" G_GINT64_FORMAT " sent to %s (pid %" G_GINT64_FORMAT
               ")\n",
               json_object_get_int_member(ro, "signal"), s_or(ro, "name", "?"),
               json_object_get_int_member(ro, "pid"));
    } else if (!strcmp(c->name, "fork")) {
        printf("%s: fork %s: %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT
               " clones granted, %" G_GINT64_FORMAT
               " running, parent paused %" G_GINT64_FORMAT " us\n",
               s_or(ro, "vm", "?"), s_or(ro, "fork-id", "?"),
               json_object_get_int_member(ro, "granted"),
               json_object_get_int_member(ro, "requested"),
               json_object_get_int_member(ro, "running"),
               json_object_get_int_member(ro, "pause-us"));
        print_table(json_object_get_array_member(ro, "clones"));
        if (json_object_get_int_member(ro, "running") <
            json_object_get_int_member(ro, "granted")) {
            return EX_FAILED;
        }
    } else if (ro) {
        print_object(ro, "");
    } else {
        print_json(r);
    }
    return EX_OK;
}
