/*
 * sfd protocol pieces without a daemon: argument checking against the
 * command table's typed specs, and line framing (split lines, CRLF,
 * blank lines, an overlong line reported once and skipped without
 * losing the next line).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <glib.h>

#include "../sfd.h"
#include "../commands.h"
#include "../lineio.h"
#include "../proto.h"

static const SfdArgSpec spec[] = {
    { "vm", SFD_ARG_STRING, TRUE },
    { "count", SFD_ARG_INT, FALSE },
    { "wait", SFD_ARG_BOOL, FALSE },
    { "events", SFD_ARG_STRLIST, FALSE },
    { NULL },
};

typedef struct ArgCase {
    const char *args;
    const char *error; /* NULL: accepted */
} ArgCase;

static const ArgCase arg_cases[] = {
    { "{\"vm\": \"web\"}", NULL },
    { "{\"vm\": \"web\", \"count\": 4, \"wait\": true, "
      "\"events\": [\"A\", \"B\"]}",
      NULL },
    { "{\"vm\": \"web\", \"events\": []}", NULL },
    { "{}", "missing argument 'vm'" },
    { "{\"count\": 1}", "missing argument 'vm'" },
    { "{\"vm\": 7}", "'vm' must be a string" },
    { "{\"vm\": null}", "'vm' must be a string" },
    { "{\"vm\": [\"web\"]}", "'vm' must be a string" },
    { "{\"vm\": \"web\", \"count\": \"4\"}", "'count' must be an integer" },
    { "{\"vm\": \"web\", \"count\": 4.5}", "'count' must be an integer" },
    { "{\"vm\": \"web\", \"wait\": 1}", "'wait' must be a boolean" },
    { "{\"vm\": \"web\", \"events\": [1]}", "'events' must be a list" },
    { "{\"vm\": \"web\", \"events\": \"A\"}", "'events' must be a list" },
    { "{\"vm\": \"web\", \"colour\": \"red\"}", "unknown argument 'colour'" },
};

static void test_args(void)
{
    for (guint i = 0; i < G_N_ELEMENTS(arg_cases); i++) {
        g_autoptr(JsonParser) p = json_parser_new();
        g_assert_true(
            json_parser_load_from_data(p, arg_cases[i].args, -1, NULL));
        JsonObject *o = json_node_get_object(json_parser_get_root(p));
        g_autofree char *err = sfd_args_check(spec, o);
        if (!arg_cases[i].error) {
            g_assert_null(err);
        } else if (!err || !strstr(err, arg_cases[i].error)) {
            g_error("%s: got '%s', want '%s'", arg_cases[i].args,
                    err ? err : "(accepted)", arg_cases[i].error);
        }
    }
}

/* Every command in the table has a help text and well-formed specs. */
static void test_command_table(void)
{
    int n = 0;

    for (const SfdCommand *c = sfd_commands; c->name; c++, n++) {
        g_assert_nonnull(c->fn);
        g_assert_nonnull(c->help);
        for (const SfdArgSpec *s = c->args; s->name; s++) {
            g_assert_cmpint(s->type, <=, SFD_ARG_STRLIST);
        }
    }
    g_assert_cmpint(n, >=, 12);
}

typedef struct Collect {
    GPtrArray *lines;
    int overlong;
    gboolean closed;
} Collect;

static void on_line(SfdLineIO *io, const char *line, gsize len,
                    gboolean overlong, gpointer opaque)
{
    Collect *c = opaque;

    if (overlong) {
        c->overlong++;
        g_ptr_array_add(c->lines, g_strdup("<overlong>"));
    } else {
        g_assert_cmpuint(strlen(line), ==, len);
        g_ptr_array_add(c->lines, g_strdup(line));
    }
}

static void on_closed(SfdLineIO *io, gpointer opaque)
{
    ((Collect *)opaque)->closed = TRUE;
}

static void test_framing(void)
{
    int sv[2];
    Collect c = { g_ptr_array_new_with_free_func(g_free), 0, FALSE };
    SfdLineIO *io;
    g_autofree char *big = g_strnfill(5000, 'x');
    const char *chunks[] = { "one\n",
                             "tw",
                             "o\r\n",
                             "\n",
                             big,
                             big,
                             "tail of the long line\nthree\n",
                             "four-no-newline" };

    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
    io = sfd_lineio_new(sv[0], 1024, 1 << 20, on_line, NULL, on_closed, &c);
    for (guint i = 0; i < G_N_ELEMENTS(chunks); i++) {
        g_assert_cmpint(write(sv[1], chunks[i], strlen(chunks[i])), ==,
                        (ssize_t)strlen(chunks[i]));
        while (g_main_context_iteration(NULL, FALSE)) {
        }
    }
    close(sv[1]);
    while (!c.closed) {
        g_main_context_iteration(NULL, TRUE);
    }
    /* "four-no-newline" never ended: not a line. */
    g_assert_cmpuint(c.lines->len, ==, 5);
    g_assert_cmpstr(c.lines->pdata[0], ==, "one");
    g_assert_cmpstr(c.lines->pdata[1], ==, "two");
    g_assert_cmpstr(c.lines->pdata[2], ==, "");
    g_assert_cmpstr(c.lines->pdata[3], ==, "<overlong>");
    g_assert_cmpstr(c.lines->pdata[4], ==, "three");
    g_assert_cmpint(c.overlong, ==, 1);
    sfd_lineio_free(io);
    g_ptr_array_free(c.lines, TRUE);
}

/* A peer that never reads is dropped once its output passes max_out. */
static void test_output_limit(void)
{
    int sv[2];
    Collect c = { g_ptr_array_new_with_free_func(g_free), 0, FALSE };
    SfdLineIO *io;
    g_autofree char *line = g_strnfill(4096, 'y');
    int rc = 0;

    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
    io = sfd_lineio_new(sv[0], 1024, 64 * 1024, on_line, NULL, on_closed, &c);
    for (int i = 0; i < 10000 && rc == 0; i++) {
        rc = sfd_lineio_write(io, line, strlen(line));
    }
    g_assert_cmpint(rc, <, 0);
    while (!c.closed) {
        g_main_context_iteration(NULL, TRUE);
    }
    sfd_lineio_free(io);
    close(sv[1]);
    g_ptr_array_free(c.lines, TRUE);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/sfd/proto/args", test_args);
    g_test_add_func("/sfd/proto/command-table", test_command_table);
    g_test_add_func("/sfd/proto/framing", test_framing);
    g_test_add_func("/sfd/proto/output-limit", test_output_limit);
    return g_test_run();
}
