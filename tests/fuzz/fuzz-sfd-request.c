/*
 * Fuzz target: sfd's request decoding, JSON line -> command and typed
 * arguments: sfd_request_decode() (sfd/proto.c), the very function the
 * protocol server's line handler calls, with the real command table.
 *
 * A crash, a sanitizer report, an error without a class or message, or
 * arguments accepted that the command's spec does not allow (an unknown
 * member, a wrong type, a required one missing) is a bug.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdint.h>
#include <string.h>

#include "sfd.h"
#include "commands.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
GPtrArray *sf_fuzz_seeds(void);

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
    g_autoptr(JsonObject) args = NULL;
    g_autoptr(JsonNode) id = NULL;
    g_autofree char *cls = NULL, *err = NULL;
    const SfdCommand *cmd = NULL;

    /* sfd hands over one line, without its newline. */
    if (memchr(data, '\n', size)) {
        return 0;
    }
    if (sfd_request_decode(sfd_commands, (const char *)data, size, &cmd, &args,
                           &id, &cls, &err)) {
        g_assert(cmd && cmd->name && args && !cls && !err);
        check_accepted(cmd, args);
    } else {
        g_assert(cls && cls[0] && err && err[0]);
        g_assert(!args);
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
