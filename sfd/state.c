/*
 * sfd: what survives sfd itself, under the state directory.
 *
 *   domains/NAME.xml    a defined domain, the XML exactly as given
 *   run/NAME.json       a running VM or clone: pid and its start time,
 *                       QMP and serial sockets, tap, MAC, IP, family,
 *                       and its guest requests' state ("agent", agent.c)
 *   agent-ids.json      the guest ticket/checkpoint ids handed out
 *   run/NAME.qmp, .serial, .log   the VM's sockets and QEMU's output
 *   run/DOMAIN.fXXXXXX/ a fork's descriptor and page server socket
 *
 * Every file is written to a temporary name, synced and renamed, so a
 * SIGKILL at any instant leaves the old or the new version, never half.
 * A record is written before sfd answers for the VM, and removed only
 * after the VM is gone and its network released.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "sfd.h"

int sfd_state_write_json(const char *path, JsonNode *node, char **err)
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

JsonNode *sfd_state_read_json(const char *path, char **err)
{
    g_autoptr(JsonParser) p = json_parser_new();
    g_autoptr(GError) e = NULL;

    if (!json_parser_load_from_file(p, path, &e)) {
        *err = g_strdup(e->message);
        return NULL;
    }
    return json_node_copy(json_parser_get_root(p));
}

static char *record_path(const char *name)
{
    g_autofree char *f = g_strconcat(name, ".json", NULL);

    return g_build_filename(sfd->run_dir, f, NULL);
}

void sfd_state_save_vm(SfdVm *vm)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    g_autofree char *path = record_path(vm->name);
    g_autofree char *err = NULL;

    json_builder_begin_object(b);
#define STR(k, v)                                                              \
    if (v) {                                                                   \
        json_builder_set_member_name(b, k);                                    \
        json_builder_add_string_value(b, v);                                   \
    }
#define INT(k, v)                                                              \
    json_builder_set_member_name(b, k);                                        \
    json_builder_add_int_value(b, v);
    STR("name", vm->name);
    STR("domain", vm->domain);
    INT("clone-id", vm->clone_id);
    INT("qemu-clone-id", vm->qemu_clone_id);
    INT("fork-id", vm->fork_id);
    INT("forks", vm->forks);
    INT("guest-id", vm->guest_id);
    INT("pid", vm->pid);
    INT("starttime", vm->starttime);
    INT("server-pid", vm->server_pid);
    INT("server-starttime", vm->server_starttime);
    STR("qmp", vm->qmp_path);
    STR("serial", vm->serial_path);
    STR("log", vm->log_path);
    STR("tap", vm->tap);
    STR("mac", vm->mac);
    STR("ip", vm->ip);
    STR("fork-dir", vm->fork_dir);
    INT("started-at", vm->started_at);
    json_builder_set_member_name(b, "net-configured");
    json_builder_add_boolean_value(b, vm->net_configured);
    if (vm->machine) {
        json_builder_set_member_name(b, "machine");
        json_builder_begin_array(b);
        for (char **a = vm->machine; *a; a++) {
            json_builder_add_string_value(b, *a);
        }
        json_builder_end_array(b);
    }
    if (vm->family) {
        char net[INET_ADDRSTRLEN];
        struct in_addr in = { htonl(vm->family->net) };
        inet_ntop(AF_INET, &in, net, sizeof(net));
        json_builder_set_member_name(b, "family");
        json_builder_begin_object(b);
        INT("index", vm->family->index);
        STR("bridge", vm->family->bridge);
        const char *netp = net;
        STR("net", netp);
        INT("prefix", vm->family->prefix);
        json_builder_end_object(b);
    }
#undef STR
#undef INT
    sfd_agent_save(vm, b); /* tickets, checkpoints, a clone's ticket */
    json_builder_end_object(b);
    g_autoptr(JsonNode) n = json_builder_get_root(b);
    if (sfd_state_write_json(path, n, &err) < 0) {
        g_warning("cannot record %s: %s", vm->name, err);
    }
}

void sfd_state_drop_vm(SfdVm *vm)
{
    g_autofree char *path = record_path(vm->name);

    unlink(path);
}

static char *domain_path(const char *name)
{
    g_autofree char *f = g_strconcat(name, ".xml", NULL);

    return g_build_filename(sfd->domains_dir, f, NULL);
}

int sfd_state_save_domain(SfdDomain *d, char **err)
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

void sfd_state_drop_domain(const char *name)
{
    g_autofree char *path = domain_path(name);

    unlink(path);
}

void sfd_state_load_domains(void)
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
