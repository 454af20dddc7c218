/*
 * sfd domain XML: a table of documents, each accepted with the values
 * expected or refused with a message naming the part.  Hostile input
 * (entities, DTDs, huge and deep documents, NUL bytes) is refused
 * without being expanded.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <string.h>
#include <glib.h>

#include "../sfd.h"

#define NS "xmlns:sf='urn:snowflock:domain:1'"
#define OS                                                                     \
    "<os><kernel>/k</kernel><initrd>/i</initrd>"                               \
    "<cmdline>console=ttyS0</cmdline></os>"
#define MIN_DOMAIN(extra)                                                      \
    "<domain type='snowflock' " NS "><name>web</name>"                         \
    "<memory unit='MiB'>256</memory>" OS extra "</domain>"

typedef struct Case {
    const char *name;
    const char *xml;
    const char *error; /* NULL: must parse */
} Case;

static const Case cases[] = {
    { "minimal", MIN_DOMAIN(""), NULL },
    { "full",
      "<domain type='snowflock' " NS ">"
      "<name>web-1.a_b</name><uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>"
      "<memory unit='GiB'>1</memory><vcpu>2</vcpu>" OS
      "<devices><disk type='file' device='disk'><source file='/d.img'/>"
      "<target dev='vda'/><readonly/></disk>"
      "<interface type='family'><mac address='52:54:00:AA:bb:01'/>"
      "<model type='virtio'/></interface></devices>"
      "<sf:clone max='8'><sf:network address='10.77.9.0' prefix='24'/>"
      "<sf:hooks enabled='yes' timeout='5'/></sf:clone>"
      "<metadata><x:y xmlns:x='urn:other'/></metadata>"
      "<x:z xmlns:x='urn:other'>foreign, ignored</x:z></domain>",
      NULL },
    { "memory in KiB by default",
      "<domain><name>a</name><memory>262144</memory>" OS "</domain>", NULL },
    { "missing name", "<domain><memory>262144</memory>" OS "</domain>",
      "missing <name>" },
    { "missing memory", "<domain><name>a</name>" OS "</domain>",
      "missing <memory>" },
    { "missing os",
      "<domain><name>a</name><memory>262144</memory>"
      "</domain>",
      "missing <os>" },
    { "missing kernel",
      "<domain><name>a</name><memory>262144</memory>"
      "<os><initrd>/i</initrd></os></domain>",
      "missing <os/kernel>" },
    { "empty name",
      "<domain><name> </name><memory>262144</memory>" OS "</domain>",
      "<name> is empty" },
    { "bad name",
      "<domain><name>a/b</name><memory>262144</memory>" OS "</domain>",
      "<name> 'a/b'" },
    { "long name",
      "<domain><name>aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa</name>"
      "<memory>262144</memory>" OS "</domain>",
      "<name>" },
    { "bad memory",
      "<domain><name>a</name><memory>lots</memory>" OS "</domain>",
      "<memory> is not a number" },
    { "tiny memory",
      "<domain><name>a</name><memory>1024</memory>" OS "</domain>",
      "between 32 MiB" },
    { "bad memory unit",
      "<domain><name>a</name><memory unit='TB'>1</memory>" OS "</domain>",
      "unit must be" },
    { "unknown element", MIN_DOMAIN("<features/>"),
      "unknown element "
      "<features>" },
    { "unknown os element",
      "<domain><name>a</name><memory>262144</memory>"
      "<os><kernel>/k</kernel><loader>/x</loader></os></domain>",
      "unknown element <os/loader>" },
    { "unknown device", MIN_DOMAIN("<devices><graphics/></devices>"),
      "unknown element <devices/graphics>" },
    { "unknown sf element", MIN_DOMAIN("<sf:clone><sf:turbo/></sf:clone>"),
      "unknown element <sf:turbo>" },
    { "unknown sf top element", MIN_DOMAIN("<sf:snapshot/>"),
      "unknown element <sf:snapshot>" },
    { "bridge interface",
      MIN_DOMAIN("<devices><interface type='bridge'/>"
                 "</devices>"),
      "type='family'" },
    { "two interfaces",
      MIN_DOMAIN("<devices><interface type='family'/>"
                 "<interface type='family'/></devices>"),
      "only one <devices/interface>" },
    { "multicast mac",
      MIN_DOMAIN("<devices><interface type='family'>"
                 "<mac address='01:00:5e:00:00:01'/>"
                 "</interface></devices>"),
      "not a unicast MAC" },
    { "public network",
      MIN_DOMAIN("<sf:clone><sf:network address='8.8.8.0'"
                 "/></sf:clone>"),
      "private range" },
    { "host bits",
      MIN_DOMAIN("<sf:clone><sf:network address='10.0.0.1'/>"
                 "</sf:clone>"),
      "host bits" },
    { "bad prefix",
      MIN_DOMAIN("<sf:clone><sf:network address='10.0.0.0' "
                 "prefix='30'/></sf:clone>"),
      "prefix" },
    { "bad max", MIN_DOMAIN("<sf:clone max='-1'/>"), "<sf:clone max" },
    { "bad hook timeout",
      MIN_DOMAIN("<sf:clone><sf:hooks timeout='0'/>"
                 "</sf:clone>"),
      "<sf:hooks timeout" },
    { "guest limits",
      MIN_DOMAIN("<sf:clone><sf:guest enabled='no' requests-per-second='2' "
                 "burst='3' max-unused-tickets='1' ticket-timeout='600' "
                 "max-checkpoints='0' x:note='foreign, ignored' "
                 "xmlns:x='urn:other'/></sf:clone>"),
      NULL },
    { "guest limits at their bounds",
      MIN_DOMAIN("<sf:clone><sf:guest requests-per-second='1000' "
                 "burst='1000' max-unused-tickets='64' "
                 "ticket-timeout='3600' max-checkpoints='16'/></sf:clone>"),
      NULL },
    { "guest bad enabled",
      MIN_DOMAIN("<sf:clone><sf:guest enabled='true'/></sf:clone>"),
      "<sf:guest enabled='true'> must be yes or no" },
    { "guest zero rate",
      MIN_DOMAIN("<sf:clone><sf:guest requests-per-second='0'/></sf:clone>"),
      "<sf:guest requests-per-second='0'> must be 1..1000" },
    { "guest huge rate",
      MIN_DOMAIN("<sf:clone><sf:guest requests-per-second='1001'/>"
                 "</sf:clone>"),
      "<sf:guest requests-per-second='1001'>" },
    { "guest fractional rate",
      MIN_DOMAIN("<sf:clone><sf:guest requests-per-second='0.5'/>"
                 "</sf:clone>"),
      "<sf:guest requests-per-second='0.5'>" },
    { "guest zero burst",
      MIN_DOMAIN("<sf:clone><sf:guest burst='0'/></sf:clone>"),
      "<sf:guest burst='0'> must be 1..1000" },
    { "guest negative burst",
      MIN_DOMAIN("<sf:clone><sf:guest burst='-1'/></sf:clone>"),
      "<sf:guest burst='-1'>" },
    { "guest zero unused tickets",
      MIN_DOMAIN("<sf:clone><sf:guest max-unused-tickets='0'/></sf:clone>"),
      "<sf:guest max-unused-tickets='0'> must be 1..64" },
    { "guest many unused tickets",
      MIN_DOMAIN("<sf:clone><sf:guest max-unused-tickets='65'/></sf:clone>"),
      "<sf:guest max-unused-tickets='65'>" },
    { "guest zero ticket timeout",
      MIN_DOMAIN("<sf:clone><sf:guest ticket-timeout='0'/></sf:clone>"),
      "<sf:guest ticket-timeout='0'> must be 1..3600 seconds" },
    { "guest long ticket timeout",
      MIN_DOMAIN("<sf:clone><sf:guest ticket-timeout='3601'/></sf:clone>"),
      "<sf:guest ticket-timeout='3601'>" },
    { "guest empty ticket timeout",
      MIN_DOMAIN("<sf:clone><sf:guest ticket-timeout=''/></sf:clone>"),
      "<sf:guest ticket-timeout=''>" },
    { "guest many checkpoints",
      MIN_DOMAIN("<sf:clone><sf:guest max-checkpoints='17'/></sf:clone>"),
      "<sf:guest max-checkpoints='17'> must be 0..16" },
    { "guest text checkpoints",
      MIN_DOMAIN("<sf:clone><sf:guest max-checkpoints='four'/></sf:clone>"),
      "<sf:guest max-checkpoints='four'>" },
    { "guest unknown attribute",
      MIN_DOMAIN("<sf:clone><sf:guest rate='5'/></sf:clone>"),
      "<sf:guest>: unknown attribute 'rate'" },
    { "guest sf attribute",
      MIN_DOMAIN("<sf:clone><sf:guest sf:burst='5'/></sf:clone>"),
      "<sf:guest>: unknown attribute 'sf:burst'" },
    { "duplicate guest",
      MIN_DOMAIN("<sf:clone><sf:guest/><sf:guest/></sf:clone>"),
      "duplicate <sf:guest>" },
    { "guest outside clone", MIN_DOMAIN("<sf:guest/>"),
      "unknown element <sf:guest>" },
    { "relative kernel",
      "<domain><name>a</name><memory>262144</memory>"
      "<os><kernel>k</kernel></os></domain>",
      "absolute path" },
    { "sf.ip in cmdline",
      "<domain><name>a</name><memory>262144</memory>"
      "<os><kernel>/k</kernel><cmdline>sf.ip=1.2.3.4/24</cmdline></os>"
      "</domain>",
      "sf.ip" },
    { "comma in cmdline",
      "<domain><name>a</name><memory>262144</memory>"
      "<os><kernel>/k</kernel><cmdline>a,b</cmdline></os></domain>",
      "','" },
    { "duplicate memory", MIN_DOMAIN("<memory>1</memory>"),
      "duplicate <memory>" },
    { "wrong root", "<vm><name>a</name></vm>",
      "root element must be "
      "<domain>" },
    { "bad uuid", MIN_DOMAIN("<uuid>xyz</uuid>"), "<uuid> 'xyz'" },
    { "writable disk ok",
      MIN_DOMAIN("<devices><disk type='file'>"
                 "<source file='/d'/></disk></devices>"),
      NULL },
    { "network disk",
      MIN_DOMAIN("<devices><disk type='network'/>"
                 "</devices>"),
      "type='file'" },
    { "not xml", "this is not xml", "not well-formed" },
    { "truncated", "<domain><name>a</name>", "not well-formed" },
    { "empty", "", "not well-formed" },
    { "internal entity",
      "<?xml version='1.0'?><!DOCTYPE domain [<!ENTITY n 'web'>]>"
      "<domain><name>&n;</name></domain>",
      "DOCTYPE" },
    { "billion laughs",
      "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
      "<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>"
      "<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>]>"
      "<domain><name>&lol3;</name></domain>",
      "DOCTYPE" },
    { "external entity",
      "<!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"
      "<domain><name>&x;</name></domain>",
      "DOCTYPE" },
    { "external dtd",
      "<!DOCTYPE domain SYSTEM 'http://example.com/d.dtd'>"
      "<domain/>",
      "DOCTYPE" },
    { "undeclared entity", "<domain><name>&x;</name></domain>",
      "not well-formed" },
    { "element in name", "<domain><name><b>a</b></name></domain>",
      "<name> must hold text" },
};

static void test_case(gconstpointer data)
{
    const Case *c = data;
    g_autofree char *err = NULL;
    SfdDomain *d = sfd_domain_parse(c->xml, strlen(c->xml), &err);

    if (!c->error) {
        g_assert_null(err);
        g_assert_nonnull(d);
        g_assert_cmpstr(d->xml, ==, c->xml); /* kept for the hooks */
        g_assert_true(g_uuid_string_is_valid(d->uuid));
    } else {
        g_assert_null(d);
        g_assert_nonnull(err);
        if (!strstr(err, c->error)) {
            g_error("%s: error '%s' does not mention '%s'", c->name, err,
                    c->error);
        }
    }
    sfd_domain_free(d);
}

static void test_values(void)
{
    g_autofree char *err = NULL;
    const char *xml = cases[1].xml;
    g_autoptr(SfdDomain) d = sfd_domain_parse(xml, strlen(xml), &err);

    g_assert_nonnull(d);
    g_assert_cmpstr(d->name, ==, "web-1.a_b");
    g_assert_cmpstr(d->uuid, ==, "4dea22b3-1d52-d8f3-2516-782e98ab3fa0");
    g_assert_cmpuint(d->memory_mib, ==, 1024);
    g_assert_cmpint(d->vcpu, ==, 2);
    g_assert_cmpstr(d->kernel, ==, "/k");
    g_assert_cmpstr(d->initrd, ==, "/i");
    g_assert_cmpstr(d->cmdline, ==, "console=ttyS0");
    g_assert_cmpuint(d->disks->len, ==, 1);
    g_assert_true(((SfdDisk *)d->disks->pdata[0])->readonly);
    g_assert_true(d->has_interface);
    g_assert_cmpstr(d->mac, ==, "52:54:00:aa:bb:01");
    g_assert_cmpint(d->max_clones, ==, 8);
    g_assert_true(d->has_network);
    g_assert_cmphex(d->net_addr, ==, 0x0a4d0900);
    g_assert_cmpint(d->net_prefix, ==, 24);
    g_assert_cmpint(d->hook_timeout_s, ==, 5);
}

static void test_guest_limits(void)
{
    g_autofree char *err = NULL, *err2 = NULL;
    const char *xml = MIN_DOMAIN("");
    g_autoptr(SfdDomain) d = sfd_domain_parse(xml, strlen(xml), &err);
    g_autoptr(SfdDomain) g = NULL;

    /* Absent: today's constants. */
    g_assert_nonnull(d);
    g_assert_true(d->guest.enabled);
    g_assert_cmpint(d->guest.rate, ==, 5);
    g_assert_cmpint(d->guest.burst, ==, 10);
    g_assert_cmpint(d->guest.max_unused_tickets, ==, 4);
    g_assert_cmpint(d->guest.ticket_timeout_s, ==, 60);
    g_assert_cmpint(d->guest.max_checkpoints, ==, 4);
    /* The full domain has no <sf:guest> either. */
    g_autofree char *err3 = NULL;
    g_autoptr(SfdDomain) f =
        sfd_domain_parse(cases[1].xml, strlen(cases[1].xml), &err3);
    g_assert_nonnull(f);
    g_assert_cmpmem(&f->guest, sizeof(f->guest), &d->guest, sizeof(d->guest));

    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        if (!strcmp(cases[i].name, "guest limits")) {
            xml = cases[i].xml;
        }
    }
    g = sfd_domain_parse(xml, strlen(xml), &err2);
    g_assert_nonnull(g);
    g_assert_false(g->guest.enabled);
    g_assert_cmpint(g->guest.rate, ==, 2);
    g_assert_cmpint(g->guest.burst, ==, 3);
    g_assert_cmpint(g->guest.max_unused_tickets, ==, 1);
    g_assert_cmpint(g->guest.ticket_timeout_s, ==, 600);
    g_assert_cmpint(g->guest.max_checkpoints, ==, 0);
    g_assert_cmpint(g->max_clones, ==, SFD_DOMAIN_DEFAULT_MAX_CLONES);

    /* Some attributes: the others keep their defaults. */
    g_autofree char *err4 = NULL;
    xml = MIN_DOMAIN("<sf:clone max='3'><sf:guest burst='20'/></sf:clone>");
    g_autoptr(SfdDomain) s = sfd_domain_parse(xml, strlen(xml), &err4);
    g_assert_nonnull(s);
    g_assert_true(s->guest.enabled);
    g_assert_cmpint(s->guest.rate, ==, 5);
    g_assert_cmpint(s->guest.burst, ==, 20);
    g_assert_cmpint(s->guest.max_unused_tickets, ==, 4);
    g_assert_cmpint(s->guest.ticket_timeout_s, ==, 60);
    g_assert_cmpint(s->guest.max_checkpoints, ==, 4);
    g_assert_cmpint(s->max_clones, ==, 3);
}

static void test_too_large(void)
{
    GString *s = g_string_new("<domain><name>a</name><metadata>");
    g_autofree char *err = NULL;

    while (s->len <= SFD_DOMAIN_MAX_XML) {
        g_string_append(s, "<x>padding padding padding</x>");
    }
    g_string_append(s, "</metadata></domain>");
    g_assert_null(sfd_domain_parse(s->str, s->len, &err));
    g_assert_nonnull(strstr(err, "more than"));
    g_string_free(s, TRUE);
}

static void test_deep(void)
{
    GString *s = g_string_new("<domain><name>a</name><metadata>");
    g_autofree char *err = NULL;

    for (int i = 0; i < 100000; i++) {
        g_string_append(s, "<a>");
    }
    g_assert_null(sfd_domain_parse(s->str, s->len, &err));
    g_assert_nonnull(err);
    g_string_free(s, TRUE);
}

static void test_nul(void)
{
    static const char xml[] = "<domain><name>a\0b</name></domain>";
    g_autofree char *err = NULL;

    g_assert_null(sfd_domain_parse(xml, sizeof(xml) - 1, &err));
    g_assert_nonnull(strstr(err, "NUL"));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        if (!cases[i].xml) {
            continue;
        }
        g_autofree char *path =
            g_strdup_printf("/sfd/domain/%s", cases[i].name);
        for (char *p = path; *p; p++) {
            if (*p == ' ') {
                *p = '-';
            }
        }
        g_test_add_data_func(path, &cases[i], test_case);
    }
    g_test_add_func("/sfd/domain/values", test_values);
    g_test_add_func("/sfd/domain/guest-values", test_guest_limits);
    g_test_add_func("/sfd/domain/too-large", test_too_large);
    g_test_add_func("/sfd/domain/deep", test_deep);
    g_test_add_func("/sfd/domain/nul", test_nul);
    return g_test_run();
}
