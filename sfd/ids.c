/*
 * sfd: guest ticket and checkpoint ids (see ids.h).
 *
 * Ids below `reserved` are recorded as taken in <state>/agent-ids.json,
 * which is rewritten once every SFD_IDS_BLOCK ids: a restart resumes
 * above the last block written, so it may skip ids but never repeats
 * one.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "sfd.h"
#include "ids.h"
#include "store.h"

#define SFD_IDS_BLOCK 64

static guint64 next_id = 1;
static guint64 reserved = 0;

static char *ids_path(void)
{
    return g_build_filename(sfd->state_dir, "agent-ids.json", NULL);
}

guint64 sfd_ids_peek(void)
{
    return next_id;
}

guint64 sfd_ids_take(void)
{
    if (sfd && next_id >= reserved) {
        g_autofree char *path = ids_path();
        g_autofree char *err = NULL;
        JsonObject *o = json_object_new();
        g_autoptr(JsonNode) n = json_node_alloc();
        guint64 upto = next_id + SFD_IDS_BLOCK;

        json_object_set_int_member(o, "next", upto);
        json_node_init_object(n, o);
        json_object_unref(o);
        if (sfd_store_write_json(path, n, &err) < 0) {
            g_warning("cannot record guest ids: %s", err);
        } else {
            reserved = upto;
        }
    }
    return next_id++;
}

void sfd_ids_seen(guint64 id)
{
    if (id >= next_id && id < G_MAXINT64) {
        next_id = id + 1;
    }
}

void sfd_ids_load(void)
{
    g_autofree char *path = ids_path();
    g_autofree char *err = NULL;
    g_autoptr(JsonNode) n = NULL;

    if (!g_file_test(path, G_FILE_TEST_EXISTS)) {
        return;
    }
    n = sfd_store_read_json(path, &err);
    if (!n || !JSON_NODE_HOLDS_OBJECT(n)) {
        g_warning("%s: %s", path, err ? err : "not an object");
        return;
    }
    gint64 v = json_object_get_int_member_with_default(json_node_get_object(n),
                                                       "next", 0);
    if (v > 0) {
        sfd_ids_seen(v - 1);
        /* Everything below was (maybe) handed out: start above it. */
        reserved = next_id;
    }
}
