/*
 * sfd: the protocol's commands (commands.h).  Each validates its
 * (already type-checked) arguments and the objects' states, then calls
 * the part that does the work; those that take time answer later
 * through their SfdRequest.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <signal.h>
#include <string.h>

#include "sfd.h"
#include "commands.h"
#include "fork.h"
#include "lifecycle.h"
#include "proto.h"
#include "store.h"
#include "vm.h"

static const char *const event_names[] = {
    "VM_STARTED",         "VM_STOPPED",   "FORK_DONE",     "CLONE_STARTED",
    "CLONE_EXITED",       "CLONE_FAILED", "GUEST_REQUEST", "GUEST_RATE_LIMITED",
    "GUEST_CLONE_EXITED", NULL,
};

static const char *arg_str(JsonObject *args, const char *name)
{
    return json_object_get_string_member_with_default(args, name, NULL);
}

static JsonNode *obj_node(JsonObject *o)
{
    JsonNode *n = json_node_alloc();

    json_node_init_object(n, o);
    json_object_unref(o);
    return n;
}

/* A running VM or clone by name, or an error answered. */
static SfdVm *need_vm(SfdRequest *req, const char *name)
{
    SfdVm *vm = sfd_vm_lookup(name);

    if (!vm) {
        if (g_hash_table_contains(sfd->domains, name)) {
            sfd_request_error(req, "InvalidState", "%s is not running", name);
        } else {
            sfd_request_error(req, "NotFound", "no VM or clone named '%s'",
                              name);
        }
    }
    return vm;
}

static void cmd_help(SfdRequest *req, JsonObject *args)
{
    static const char *const types[] = { "string", "int", "bool",
                                         "list of strings" };
    JsonArray *a = json_array_new();
    JsonNode *n = json_node_alloc();

    for (const SfdCommand *c = sfd_commands; c->name; c++) {
        JsonObject *o = json_object_new();
        JsonArray *as = json_array_new();
        json_object_set_string_member(o, "name", c->name);
        json_object_set_string_member(o, "help", c->help);
        for (const SfdArgSpec *s = c->args; s->name; s++) {
            JsonObject *ao = json_object_new();
            json_object_set_string_member(ao, "name", s->name);
            json_object_set_string_member(ao, "type", types[s->type]);
            json_object_set_boolean_member(ao, "required", s->required);
            json_array_add_object_element(as, ao);
        }
        json_object_set_array_member(o, "arguments", as);
        json_array_add_object_element(a, o);
    }
    json_node_init_array(n, a);
    json_array_unref(a);
    sfd_request_return(req, n);
}

static void cmd_version(SfdRequest *req, JsonObject *args)
{
    JsonObject *o = json_object_new();

    json_object_set_int_member(o, "protocol", SFD_PROTOCOL_VERSION);
    json_object_set_string_member(o, "sfd", SFD_VERSION);
    sfd_request_return(req, obj_node(o));
}

static gboolean family_alive(const char *name)
{
    return g_hash_table_contains(sfd->families, name) ||
           g_hash_table_contains(sfd->vms, name) ||
           sfd_vm_clones_alive(name) > 0;
}

static void cmd_define(SfdRequest *req, JsonObject *args)
{
    const char *xml = arg_str(args, "xml");
    g_autofree char *err = NULL;
    SfdDomain *d = sfd_domain_parse(xml, strlen(xml), &err);

    if (!d) {
        sfd_request_error(req, "InvalidXML", "%s", err);
        return;
    }
    if (family_alive(d->name)) {
        sfd_request_error(req, "InvalidState",
                          "%s or its clones are "
                          "running: stop them before redefining it",
                          d->name);
        sfd_domain_free(d);
        return;
    }
    /* A clone's name is <domain>-<id>: keep domains out of that space. */
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, sfd->vms);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        if (!strcmp(((SfdVm *)v)->name, d->name)) {
            sfd_request_error(req, "InvalidState", "a clone is named %s",
                              d->name);
            sfd_domain_free(d);
            return;
        }
    }
    if (sfd_store_save_domain(d, &err) < 0) {
        sfd_request_error(req, "Failed", "%s", err);
        sfd_domain_free(d);
        return;
    }
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "name", d->name);
    json_object_set_string_member(o, "uuid", d->uuid);
    json_object_set_boolean_member(
        o, "replaced", g_hash_table_contains(sfd->domains, d->name));
    g_hash_table_replace(sfd->domains, g_strdup(d->name), d);
    g_message("defined %s", d->name);
    sfd_request_return(req, obj_node(o));
}

static void cmd_undefine(SfdRequest *req, JsonObject *args)
{
    const char *name = arg_str(args, "vm");

    if (!g_hash_table_contains(sfd->domains, name)) {
        sfd_request_error(req, "NotFound", "no domain named '%s'", name);
        return;
    }
    if (family_alive(name)) {
        sfd_request_error(req, "InvalidState",
                          "%s or its clones are "
                          "running",
                          name);
        return;
    }
    sfd_store_drop_domain(name);
    g_hash_table_remove(sfd->domains, name);
    g_message("undefined %s", name);
    sfd_request_return(req, NULL);
}

static void start_done(SfdVm *vm, const char *cls, const char *err,
                       gpointer opaque)
{
    SfdRequest *req = opaque;

    if (!vm) {
        sfd_request_error(req, cls, "%s", err);
        return;
    }
    sfd_request_return(req, sfd_vm_to_json(vm, TRUE));
}

static void cmd_start(SfdRequest *req, JsonObject *args)
{
    const char *name = arg_str(args, "vm");
    SfdDomain *d = g_hash_table_lookup(sfd->domains, name);

    if (!d) {
        sfd_request_error(req, "NotFound", "no domain named '%s'", name);
        return;
    }
    sfd_lifecycle_start(d, start_done, req);
}

static void exit_answer(SfdVm *vm, JsonNode *exit, gpointer opaque)
{
    sfd_request_return(opaque, exit ? json_node_copy(exit) : NULL);
}

static void wait_exit(SfdRequest *req, SfdVm *vm)
{
    sfd_vm_wait_exit(vm, exit_answer, req);
}

static void cmd_stop(SfdRequest *req, JsonObject *args)
{
    SfdVm *vm = need_vm(req, arg_str(args, "vm"));

    if (!vm) {
        return;
    }
    if (vm->state == SFD_VM_STARTING) {
        sfd_request_error(req, "InvalidState", "%s is still starting",
                          vm->name);
        return;
    }
    wait_exit(req, vm);
    sfd_vm_stop(vm);
}

static void cmd_destroy(SfdRequest *req, JsonObject *args)
{
    SfdVm *vm = need_vm(req, arg_str(args, "vm"));

    if (!vm) {
        return;
    }
    if (vm->state == SFD_VM_STARTING) {
        sfd_request_error(req, "InvalidState", "%s is still starting",
                          vm->name);
        return;
    }
    vm->state = SFD_VM_STOPPING;
    wait_exit(req, vm);
    if (sfd_vm_kill(vm, SIGKILL) < 0) {
        sfd_vm_end(vm, -1); /* already gone */
    }
}

static void cmd_kill(SfdRequest *req, JsonObject *args)
{
    static const struct {
        const char *name;
        int sig;
    } sigs[] = {
        { "KILL", SIGKILL }, { "TERM", SIGTERM }, { "INT", SIGINT },
        { "HUP", SIGHUP },   { "USR1", SIGUSR1 }, { "USR2", SIGUSR2 },
        { "STOP", SIGSTOP }, { "CONT", SIGCONT },
    };
    const char *signame = arg_str(args, "signal");
    SfdVm *vm;
    int sig = -1;

    if (!signame) {
        signame = "KILL";
    }
    for (guint i = 0; i < G_N_ELEMENTS(sigs); i++) {
        if (!g_ascii_strcasecmp(signame, sigs[i].name) ||
            (!g_ascii_strncasecmp(signame, "SIG", 3) &&
             !g_ascii_strcasecmp(signame + 3, sigs[i].name))) {
            sig = sigs[i].sig;
        }
    }
    if (sig < 0) {
        sfd_request_error(req, "InvalidArgument",
                          "kill: unknown signal "
                          "'%s' (KILL, TERM, INT, HUP, USR1, USR2, STOP, "
                          "CONT)",
                          signame);
        return;
    }
    if (!(vm = need_vm(req, arg_str(args, "vm")))) {
        return;
    }
    if (sfd_vm_kill(vm, sig) < 0) {
        sfd_request_error(req, "Failed", "%s: no process to signal", vm->name);
        return;
    }
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "name", vm->name);
    json_object_set_int_member(o, "pid", vm->pid);
    json_object_set_int_member(o, "signal", sig);
    sfd_request_return(req, obj_node(o));
}

static gint by_name(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char **)a, *(const char **)b);
}

static void cmd_list(SfdRequest *req, JsonObject *args)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new();
    JsonArray *a = json_array_new();
    JsonNode *n = json_node_alloc();
    GHashTableIter it;
    gpointer k;

    g_hash_table_iter_init(&it, sfd->domains);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        g_ptr_array_add(names, k);
    }
    g_hash_table_iter_init(&it, sfd->vms);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        if (!g_hash_table_contains(sfd->domains, k)) {
            g_ptr_array_add(names, k);
        }
    }
    g_ptr_array_sort(names, by_name);
    for (guint i = 0; i < names->len; i++) {
        SfdVm *vm = sfd_vm_lookup(names->pdata[i]);
        if (vm) {
            json_array_add_element(a, sfd_vm_to_json(vm, FALSE));
            continue;
        }
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "name", names->pdata[i]);
        json_object_set_string_member(o, "kind", "domain");
        json_object_set_string_member(o, "domain", names->pdata[i]);
        json_object_set_string_member(o, "state", "shut off");
        json_object_set_int_member(o, "pid", 0);
        json_object_set_null_member(o, "ip");
        json_object_set_null_member(o, "mac");
        json_array_add_object_element(a, o);
    }
    json_node_init_array(n, a);
    json_array_unref(a);
    sfd_request_return(req, n);
}

static JsonArray *clones_of(const char *domain)
{
    g_autoptr(GPtrArray) vms = g_ptr_array_new();
    JsonArray *a = json_array_new();
    GHashTableIter it;
    gpointer v;

    g_hash_table_iter_init(&it, sfd->vms);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        SfdVm *vm = v;
        if (vm->clone_id && !strcmp(vm->domain, domain)) {
            g_ptr_array_add(vms, vm);
        }
    }
    g_ptr_array_sort(vms, by_name); /* name is the first member */
    for (guint i = 0; i < vms->len; i++) {
        json_array_add_element(a, sfd_vm_to_json(vms->pdata[i], TRUE));
    }
    return a;
}

static void cmd_info(SfdRequest *req, JsonObject *args)
{
    const char *name = arg_str(args, "vm");
    SfdDomain *d = g_hash_table_lookup(sfd->domains, name);
    SfdVm *vm = sfd_vm_lookup(name);
    JsonNode *n;
    JsonObject *o;

    if (!d && !vm) {
        sfd_request_error(req, "NotFound", "no VM or clone named '%s'", name);
        return;
    }
    if (vm) {
        n = sfd_vm_to_json(vm, TRUE);
    } else {
        n = json_node_init_object(json_node_alloc(), json_object_new());
        o = json_node_get_object(n);
        json_object_set_string_member(o, "name", name);
        json_object_set_string_member(o, "kind", "domain");
        json_object_set_string_member(o, "state", "shut off");
    }
    o = json_node_get_object(n);
    if (d && (!vm || !vm->clone_id)) {
        json_object_set_string_member(o, "uuid", d->uuid);
        json_object_set_int_member(o, "memory-mib", d->memory_mib);
        json_object_set_int_member(o, "vcpu", d->vcpu);
        json_object_set_int_member(o, "max-clones", d->max_clones);
        json_object_set_array_member(o, "clones", clones_of(name));
    }
    sfd_request_return(req, n);
}

static void fork_done(JsonNode *ret, const char *cls, const char *err,
                      gpointer opaque)
{
    SfdRequest *req = opaque;

    if (!ret) {
        sfd_request_error(req, cls, "%s", err);
        return;
    }
    sfd_request_return(req, ret);
}

static void cmd_fork(SfdRequest *req, JsonObject *args)
{
    const char *name = arg_str(args, "vm");
    gint64 count = json_object_get_int_member(args, "count");
    SfdVm *vm;

    SfdForkRequest r = { .origin = "client" };

    if (count < 1 || count > SFD_MAX_FORK_CLONES) {
        sfd_request_error(req, "InvalidArgument",
                          "fork: count must be 1..%d, not %" G_GINT64_FORMAT,
                          SFD_MAX_FORK_CLONES, count);
        return;
    }
    if (!(vm = need_vm(req, name))) {
        return;
    }
    r.count = count;
    sfd_fork(vm, &r, fork_done, req);
}

static void cmd_clones(SfdRequest *req, JsonObject *args)
{
    const char *name = arg_str(args, "vm");
    JsonNode *n;

    if (!g_hash_table_contains(sfd->domains, name) && !sfd_vm_lookup(name)) {
        sfd_request_error(req, "NotFound", "no VM named '%s'", name);
        return;
    }
    n = json_node_alloc();
    JsonArray *a = clones_of(name);
    json_node_init_array(n, a);
    json_array_unref(a);
    sfd_request_return(req, n);
}

static void cmd_subscribe(SfdRequest *req, JsonObject *args)
{
    g_autoptr(GStrvBuilder) sb = g_strv_builder_new();
    g_auto(GStrv) events = NULL;
    gint64 count = json_object_get_int_member_with_default(args, "count", 0);

    if (json_object_has_member(args, "events")) {
        JsonArray *a = json_object_get_array_member(args, "events");
        for (guint i = 0; i < json_array_get_length(a); i++) {
            const char *e = json_array_get_string_element(a, i);
            if (!g_strv_contains(event_names, e)) {
                g_autofree char *all = g_strjoinv(", ", (char **)event_names);
                sfd_request_error(req, "InvalidArgument",
                                  "subscribe: "
                                  "unknown event '%s' (%s)",
                                  e, all);
                return;
            }
            g_strv_builder_add(sb, e);
        }
    }
    if (count < 0 || count > G_MAXINT) {
        sfd_request_error(req, "InvalidArgument",
                          "subscribe: count must be 1 or more (0: no end)");
        return;
    }
    events = g_strv_builder_end(sb);
    sfd_request_subscribe(req, events, count);
    JsonObject *o = json_object_new();
    JsonArray *a = json_array_new();
    for (const char *const *e = event_names; *e; e++) {
        if (!events[0] || g_strv_contains((const char *const *)events, *e)) {
            json_array_add_string_element(a, *e);
        }
    }
    json_object_set_array_member(o, "events", a);
    sfd_request_return(req, obj_node(o));
}

#define VM_ARG                                                                 \
    {                                                                          \
        "vm", SFD_ARG_STRING, TRUE                                             \
    }

const SfdCommand sfd_commands[] = {
    { "help", cmd_help, { { 0 } }, "list the commands and their arguments" },
    { "version", cmd_version, { { 0 } }, "protocol and sfd version" },
    { "define",
      cmd_define,
      { { "xml", SFD_ARG_STRING, TRUE }, { 0 } },
      "define (or redefine) a domain from its XML" },
    { "undefine",
      cmd_undefine,
      { VM_ARG, { 0 } },
      "forget a domain that is not running" },
    { "start",
      cmd_start,
      { VM_ARG, { 0 } },
      "start a defined domain; answers once QEMU runs" },
    { "stop",
      cmd_stop,
      { VM_ARG, { 0 } },
      "stop a VM or clone (QEMU quits); answers once it has exited" },
    { "destroy",
      cmd_destroy,
      { VM_ARG, { 0 } },
      "kill a VM or clone at once; answers once it has exited" },
    { "kill",
      cmd_kill,
      { VM_ARG, { "signal", SFD_ARG_STRING, FALSE }, { 0 } },
      "send a signal (default KILL) to a VM's or clone's QEMU" },
    { "list", cmd_list, { { 0 } }, "domains, VMs and clones" },
    { "info", cmd_info, { VM_ARG, { 0 } }, "details of a VM or clone" },
    { "fork",
      cmd_fork,
      { VM_ARG, { "count", SFD_ARG_INT, TRUE }, { 0 } },
      "fork a running VM into up to count clones <vm>-<id>" },
    { "clones", cmd_clones, { VM_ARG, { 0 } }, "the clones of a VM" },
    { "subscribe",
      cmd_subscribe,
      { { "events", SFD_ARG_STRLIST, FALSE },
        { "count", SFD_ARG_INT, FALSE },
        { 0 } },
      "receive events on this connection (all, or those listed; count: "
      "that many, then the subscription ends)" },
    { NULL },
};
