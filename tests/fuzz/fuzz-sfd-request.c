/*
 * Fuzz target: sfd's request decoding, JSON line -> command and typed
 * arguments, with the real command table (sfd_commands) and the real
 * argument check (sfd_args_check, sfd/proto.c).  The line is parsed with
 * json-glib and taken apart in the order sfd/proto.c's client_line()
 * does (an object; only execute, arguments, id; execute a string naming a
 * command; arguments an object); client_line() itself is static, so this
 * mirrors its steps rather than calling it.
 *
 * A crash, a sanitizer report, an error without a message, or arguments
 * accepted that the command's spec does not allow (an unknown member, a
 * wrong type, a required one missing) is a bug.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdint.h>
#include <string.h>

#include "sfd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
GPtrArray *sf_fuzz_seeds(void);

/* Defined by sfd's main.c; decoding never reaches a command function. */
Sfd *sfd;

/* The oracle: what a member of this type must look like. */
static gboolean holds(JsonNode *n, SfdArgType t)
{
    if (t == SFD_ARG_STRLIST) {
        JsonArray *a;

        if (!JSON_NODE_HOLDS_ARRAY(n)) {
            return FALSE;
        }
        a = json_node_get_array(n);
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
    switch (t) {
    case SFD_ARG_STRING:
        return json_node_get_value_type(n) == G_TYPE_STRING;
    case SFD_ARG_INT:
        return json_node_get_value_type(n) == G_TYPE_INT64;
    case SFD_ARG_BOOL:
        return json_node_get_value_type(n) == G_TYPE_BOOLEAN;
    default:
        return FALSE;
    }
}

static void check_accepted(const SfdCommand *cmd, JsonObject *args)
{
    g_autoptr(GList) names = json_object_get_members(args);

    for (GList *l = names; l; l = l->next) {
        const SfdArgSpec *s = cmd->args;

        while (s->name && strcmp(s->name, l->data)) {
            s++;
        }
        g_assert(s->name);
        g_assert(holds(json_object_get_member(args, l->data), s->type));
    }
    for (const SfdArgSpec *s = cmd->args; s->name; s++) {
        g_assert(!s->required || json_object_has_member(args, s->name));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(JsonParser) parser = json_parser_new_immutable();
    g_autoptr(JsonObject) args = NULL;
    g_autofree char *line = g_strndup((const char *)data, size);
    g_autofree char *bad = NULL;
    const SfdCommand *cmd;
    JsonNode *root, *exec, *argn;
    JsonObject *o;

    /* sfd reads lines: a NUL or newline ends what it sees of one. */
    if (!json_parser_load_from_data(parser, line, -1, NULL)) {
        return 0;
    }
    root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        return 0;
    }
    o = json_node_get_object(root);
    exec = json_object_get_member(o, "execute");
    if (!exec || !JSON_NODE_HOLDS_VALUE(exec) ||
        json_node_get_value_type(exec) != G_TYPE_STRING) {
        return 0;
    }
    for (cmd = sfd_commands; cmd->name; cmd++) {
        if (!strcmp(cmd->name, json_node_get_string(exec))) {
            break;
        }
    }
    if (!cmd->name) {
        return 0;
    }
    argn = json_object_get_member(o, "arguments");
    if (argn && !JSON_NODE_HOLDS_OBJECT(argn)) {
        return 0;
    }
    args =
        argn ? json_object_ref(json_node_get_object(argn)) : json_object_new();
    bad = sfd_args_check(cmd->args, args);
    if (bad) {
        g_assert(bad[0]);
    } else {
        check_accepted(cmd, args);
    }
    return 0;
}

GPtrArray *sf_fuzz_seeds(void)
{
    GPtrArray *s =
        g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    /* docs/sfd.md's examples, and one of each argument type. */
    static const char *const lines[] = {
        "{\"execute\":\"define\",\"arguments\":{\"xml\":\"<domain/>\"},"
        "\"id\":1}",
        "{\"execute\":\"start\",\"arguments\":{\"vm\":\"web\"},\"id\":2}",
        "{\"execute\":\"fork\",\"arguments\":{\"vm\":\"web\",\"count\":4},"
        "\"id\":3}",
        "{\"execute\":\"list\",\"id\":1}",
        "{\"execute\":\"subscribe\",\"arguments\":{\"events\":"
        "[\"FORK_DONE\",\"CLONE_EXITED\"]}}",
        "{\"execute\":\"kill\",\"arguments\":{\"vm\":\"web-1\","
        "\"signal\":\"TERM\"},\"id\":\"x\"}",
        "{\"execute\":\"help\"}",
    };

    for (size_t i = 0; i < G_N_ELEMENTS(lines); i++) {
        g_ptr_array_add(s, g_bytes_new(lines[i], strlen(lines[i])));
    }
    return s;
}
