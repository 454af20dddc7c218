/*
 * sfd: clone family networks.
 *
 * A family is a domain's parent VM and all its clones.  It gets one
 * Linux bridge, sfbr-<tag><ff> (tag: 4 hex digits naming this sfd
 * instance, ff: the family index in hex), and each member a persistent
 * tap, sft-<tag><ff>-<member> (member 0 is the parent, else the clone's
 * id in hex), enslaved to the bridge.  The bridge has no address and no
 * uplink and IPv6 is off on it and the taps, so the host neither routes
 * nor talks on it: traffic stays between the family's VMs, and two
 * families, on two bridges, never see each other's frames.
 *
 * Addresses: the family's network is <sf:network> from the domain, or
 * 10.77.<index>.0/24; the parent is .1, clone N is .(1+N).
 *
 * The taps and the bridge are deleted when the last member is gone.
 * At start-up sfd deletes any interface with its tag that no record
 * claims (left by a crash between creating it and recording it).
 *
 * `ip` is run synchronously: each call takes a few milliseconds.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "sfd.h"
#include "net.h"
#include "store.h"

static gboolean run_ip(char **err, const char *first, ...)
{
    GPtrArray *argv = g_ptr_array_new();
    g_autofree char *out = NULL;
    g_autoptr(GError) e = NULL;
    int status;
    va_list ap;

    g_ptr_array_add(argv, (char *)"ip");
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *)) {
        g_ptr_array_add(argv, (char *)a);
    }
    va_end(ap);
    g_ptr_array_add(argv, NULL);
    gboolean ok = g_spawn_sync(NULL, (char **)argv->pdata, NULL,
                               G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL,
                               NULL, NULL, NULL, &out, &status, &e) &&
                  g_spawn_check_wait_status(status, NULL);
    if (!ok && err) {
        g_autofree char *cmd = g_strjoinv(" ", (char **)argv->pdata);
        *err = g_strdup_printf("%s: %s", cmd,
                               e ? e->message : g_strstrip(out ? out : ""));
    }
    g_ptr_array_free(argv, TRUE);
    return ok;
}

static void no_ipv6(const char *ifname)
{
    g_autofree char *p = g_strdup_printf("/proc/sys/net/ipv6/conf/%s/"
                                         "disable_ipv6",
                                         ifname);

    g_file_set_contents(p, "1", 1, NULL);
}

static gboolean link_exists(const char *ifname)
{
    g_autofree char *p = g_strdup_printf("/sys/class/net/%s", ifname);

    return g_file_test(p, G_FILE_TEST_EXISTS);
}

static gboolean index_used(int index)
{
    GHashTableIter it;
    gpointer v;

    g_hash_table_iter_init(&it, sfd->families);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        if (((SfdFamily *)v)->index == index) {
            return TRUE;
        }
    }
    return FALSE;
}

static SfdFamily *family_adopt(const char *domain, int index,
                               const char *bridge, guint32 net, int prefix)
{
    SfdFamily *f = g_hash_table_lookup(sfd->families, domain);

    if (f) {
        return f;
    }
    f = g_new0(SfdFamily, 1);
    f->domain = g_strdup(domain);
    f->index = index;
    f->bridge = g_strdup(bridge);
    f->net = net;
    f->prefix = prefix;
    g_hash_table_insert(sfd->families, f->domain, f);
    return f;
}

SfdFamily *sfd_family_get(SfdDomain *d, char **err)
{
    SfdFamily *f = g_hash_table_lookup(sfd->families, d->name);
    g_autofree char *bridge = NULL;
    int index;

    if (f) {
        return f;
    }
    for (index = 1; index < 255 && index_used(index); index++) {
    }
    if (index == 255) {
        *err = g_strdup("no free family index (254 families running)");
        return NULL;
    }
    bridge = g_strdup_printf("sfbr-%s%02x", sfd->tag, index);
    if (link_exists(bridge)) {
        run_ip(NULL, "link", "del", bridge, NULL);
    }
    if (!run_ip(err, "link", "add", bridge, "type", "bridge", NULL)) {
        return NULL;
    }
    no_ipv6(bridge);
    if (!run_ip(err, "link", "set", bridge, "up", NULL)) {
        run_ip(NULL, "link", "del", bridge, NULL);
        return NULL;
    }
    g_info("family %s: bridge %s", d->name, bridge);
    return family_adopt(d->name, index, bridge,
                        d->has_network
                            ? d->net_addr
                            : (10u << 24 | 77u << 16 | (guint32)index << 8),
                        d->has_network ? d->net_prefix : 24);
}

char *sfd_net_tap_add(SfdFamily *f, int member, char **err)
{
    char *tap = g_strdup_printf("sft-%s%02x-%x", sfd->tag, f->index, member);

    if (link_exists(tap)) {
        run_ip(NULL, "link", "del", tap, NULL);
    }
    if (!run_ip(err, "tuntap", "add", "dev", tap, "mode", "tap", NULL)) {
        g_free(tap);
        return NULL;
    }
    no_ipv6(tap);
    if (!run_ip(err, "link", "set", tap, "master", f->bridge, NULL) ||
        !run_ip(err, "link", "set", tap, "up", NULL)) {
        run_ip(NULL, "link", "del", tap, NULL);
        g_free(tap);
        return NULL;
    }
    f->members++;
    return tap;
}

void sfd_net_tap_del(SfdFamily *f, const char *tap)
{
    g_autofree char *err = NULL;

    if (tap && link_exists(tap) && !run_ip(&err, "link", "del", tap, NULL)) {
        g_warning("%s", err);
    }
    f->members--;
}

void sfd_family_put(SfdFamily *f)
{
    g_autofree char *err = NULL;

    if (f->members > 0) {
        return;
    }
    g_info("family %s: deleting bridge %s", f->domain, f->bridge);
    if (link_exists(f->bridge) &&
        !run_ip(&err, "link", "del", f->bridge, NULL)) {
        g_warning("%s", err);
    }
    g_hash_table_remove(sfd->families, f->domain);
    g_free(f->bridge);
    g_free(f->domain);
    g_free(f);
}

char *sfd_net_ip(SfdFamily *f, int member)
{
    char buf[INET_ADDRSTRLEN];
    struct in_addr in = { htonl(f->net + 1 + member) };

    inet_ntop(AF_INET, &in, buf, sizeof(buf));
    return g_strdup(buf);
}

char *sfd_net_parent_mac(SfdFamily *f)
{
    /* Locally administered, unicast; the tag's first byte and the
     * family index keep parents apart; clones get the same prefix
     * (sfd_net_clone_mac()). */
    return g_strdup_printf("02:5f:%.2s:%02x:00:01", sfd->tag, f->index);
}

/*
 * Clone N of a family: the parent's address with the member number
 * N + 1 (the parent is member 1) in the low two bytes, so no two members
 * of a family, and no two families, share a MAC.  Handed to QEMU as
 * sf-clone's mac= so forks of one parent never collide.
 */
char *sfd_net_clone_mac(SfdFamily *f, int clone_id)
{
    int member = clone_id + 1;

    return g_strdup_printf("02:5f:%.2s:%02x:%02x:%02x", sfd->tag, f->index,
                           (member >> 8) & 0xff, member & 0xff);
}

/* Delete interfaces with our tag that no family claims. */
void sfd_net_sweep(void)
{
    g_autoptr(GDir) dir = g_dir_open("/sys/class/net", 0, NULL);
    g_autofree char *br = g_strdup_printf("sfbr-%s", sfd->tag);
    g_autofree char *tp = g_strdup_printf("sft-%s", sfd->tag);
    const char *n;

    while (dir && (n = g_dir_read_name(dir))) {
        gboolean claimed = FALSE;
        GHashTableIter it;
        gpointer v;

        if (!g_str_has_prefix(n, br) && !g_str_has_prefix(n, tp)) {
            continue;
        }
        g_hash_table_iter_init(&it, sfd->families);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
            SfdFamily *f = v;
            g_autofree char *tprefix =
                g_strdup_printf("sft-%s%02x-", sfd->tag, f->index);
            if (!strcmp(n, f->bridge)) {
                claimed = TRUE;
            } else if (g_str_has_prefix(n, tprefix)) {
                /* A tap of a live family: claimed if a VM has it. */
                GHashTableIter vi;
                gpointer vv;
                g_hash_table_iter_init(&vi, sfd->vms);
                while (g_hash_table_iter_next(&vi, NULL, &vv)) {
                    SfdVm *vm = vv;
                    if (vm->tap && !strcmp(vm->tap, n)) {
                        claimed = TRUE;
                    }
                }
            }
        }
        if (!claimed) {
            g_message("deleting leftover interface %s", n);
            run_ip(NULL, "link", "del", n, NULL);
        }
    }
}

void sfd_family_put_empty(void)
{
    GHashTableIter it;
    gpointer v;
    GList *empty = NULL;

    g_hash_table_iter_init(&it, sfd->families);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        if (((SfdFamily *)v)->members <= 0) {
            empty = g_list_prepend(empty, v);
        }
    }
    for (GList *l = empty; l; l = l->next) {
        sfd_family_put(l->data);
    }
    g_list_free(empty);
}

void sfd_net_release(SfdVm *vm)
{
    if (vm->family) {
        sfd_net_tap_del(vm->family, vm->tap);
        sfd_family_put(vm->family);
        vm->family = NULL;
    }
}

static void net_record_save(SfdVm *vm, JsonBuilder *b)
{
    char net[INET_ADDRSTRLEN];
    struct in_addr in;

    if (!vm->family) {
        return;
    }
    in.s_addr = htonl(vm->family->net);
    inet_ntop(AF_INET, &in, net, sizeof(net));
    json_builder_set_member_name(b, "family");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "index");
    json_builder_add_int_value(b, vm->family->index);
    json_builder_set_member_name(b, "bridge");
    json_builder_add_string_value(b, vm->family->bridge);
    json_builder_set_member_name(b, "net");
    json_builder_add_string_value(b, net);
    json_builder_set_member_name(b, "prefix");
    json_builder_add_int_value(b, vm->family->prefix);
    json_builder_end_object(b);
}

static void net_record_load(SfdVm *vm, JsonObject *o)
{
    JsonNode *fn = json_object_get_member(o, "family");
    JsonObject *f;
    struct in_addr in = { 0 };

    if (!fn || !JSON_NODE_HOLDS_OBJECT(fn)) {
        return;
    }
    f = json_node_get_object(fn);
    inet_pton(AF_INET,
              json_object_get_string_member_with_default(f, "net", "0.0.0.0"),
              &in);
    vm->family = family_adopt(
        vm->domain, json_object_get_int_member_with_default(f, "index", 0),
        json_object_get_string_member_with_default(f, "bridge", ""),
        ntohl(in.s_addr),
        json_object_get_int_member_with_default(f, "prefix", 24));
    if (vm->tap) {
        vm->family->members++;
    }
}

const SfdRecordSection sfd_net_record = {
    .name = "family",
    .save = net_record_save,
    .load = net_record_load,
};
