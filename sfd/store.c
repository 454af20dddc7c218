/*
 * sfd: records and domains under the state directory (see store.h).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "store.h"

static GPtrArray *sections; /* const SfdRecordSection * */

int sfd_store_write_json(const char *path, JsonNode *node, char **err)
{
    g_autofree char *s = json_to_string(node, TRUE);
    g_autoptr(GError) e = NULL;

    if (!g_file_set_contents_full(path, s, -1,
                                  G_FILE_SET_CONTENTS_CONSISTENT |
                                      G_FILE_SET_CONTENTS_DURABLE,
                                  0600, &e)) {
        *err = g_strdup(e->message);
        return -EIO;
    }
    return 0;
}

JsonNode *sfd_store_read_json(const char *path, char **err)
{
    g_autoptr(JsonParser) p = json_parser_new();
    g_autoptr(GError) e = NULL;

    if (!json_parser_load_from_file(p, path, &e)) {
        *err = g_strdup(e->message);
        return NULL;
    }
    return json_node_copy(json_parser_get_root(p));
}

void sfd_record_register(const SfdRecordSection *s)
{
    if (!sections) {
        sections = g_ptr_array_new();
    }
    g_ptr_array_add(sections, (gpointer)s);
}

static char *record_path(const char *name)
{
    g_autofree char *f = g_strconcat(name, ".json", NULL);

    return g_build_filename(sfd->run_dir, f, NULL);
}

void sfd_record_save(SfdVm *vm)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    g_autofree char *path = record_path(vm->name);
    g_autofree char *err = NULL;

    json_builder_begin_object(b);
    for (guint i = 0; sections && i < sections->len; i++) {
        const SfdRecordSection *s = sections->pdata[i];
        s->save(vm, b);
    }
    json_builder_end_object(b);
    g_autoptr(JsonNode) n = json_builder_get_root(b);
    if (sfd_store_write_json(path, n, &err) < 0) {
        g_warning("cannot record %s: %s", vm->name, err);
    }
}

void sfd_record_drop(SfdVm *vm)
{
    g_autofree char *path = record_path(vm->name);

    unlink(path);
}

void sfd_record_load(SfdVm *vm, JsonObject *rec)
{
    for (guint i = 0; sections && i < sections->len; i++) {
        const SfdRecordSection *s = sections->pdata[i];
        s->load(vm, rec);
    }
}

GPtrArray *sfd_record_paths(void)
{
    g_autoptr(GDir) dir = g_dir_open(sfd->run_dir, 0, NULL);
    GPtrArray *paths = g_ptr_array_new_with_free_func(g_free);
    const char *f;

    while (dir && (f = g_dir_read_name(dir))) {
        if (g_str_has_suffix(f, ".json")) {
            g_ptr_array_add(paths, g_build_filename(sfd->run_dir, f, NULL));
        }
    }
    return paths;
}

static char *domain_path(const char *name)
{
    g_autofree char *f = g_strconcat(name, ".xml", NULL);

    return g_build_filename(sfd->domains_dir, f, NULL);
}

int sfd_store_save_domain(SfdDomain *d, char **err)
{
    g_autofree char *path = domain_path(d->name);
    g_autoptr(GError) e = NULL;

    if (!g_file_set_contents_full(path, d->xml, -1,
                                  G_FILE_SET_CONTENTS_CONSISTENT |
                                      G_FILE_SET_CONTENTS_DURABLE,
                                  0600, &e)) {
        *err = g_strdup(e->message);
        return -EIO;
    }
    return 0;
}

void sfd_store_drop_domain(const char *name)
{
    g_autofree char *path = domain_path(name);

    unlink(path);
}

void sfd_store_load_domains(void)
{
    g_autoptr(GDir) dir = g_dir_open(sfd->domains_dir, 0, NULL);
    const char *f;

    while (dir && (f = g_dir_read_name(dir))) {
        g_autofree char *path = NULL, *xml = NULL, *err = NULL;
        gsize len;
        SfdDomain *d;

        if (!g_str_has_suffix(f, ".xml")) {
            continue;
        }
        path = g_build_filename(sfd->domains_dir, f, NULL);
        if (!g_file_get_contents(path, &xml, &len, NULL)) {
            continue;
        }
        d = sfd_domain_parse(xml, len, &err);
        if (!d) {
            g_warning("%s: %s (ignored)", path, err);
            continue;
        }
        g_hash_table_replace(sfd->domains, g_strdup(d->name), d);
    }
}
