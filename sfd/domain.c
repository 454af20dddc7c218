/*
 * sfd: domain XML (see domain.h for the accepted document).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <arpa/inet.h>
#include <string.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "domain.h"

typedef struct Parse {
    SfdDomain *d;
    char *err;
} Parse;

static gboolean fail(Parse *p, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static gboolean fail(Parse *p, const char *fmt, ...)
{
    va_list ap;

    if (!p->err) {
        va_start(ap, fmt);
        p->err = g_strdup_vprintf(fmt, ap);
        va_end(ap);
    }
    return FALSE;
}

gboolean sfd_domain_name_valid(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > 32 || name[0] == '.' || name[0] == '-') {
        return FALSE;
    }
    for (size_t i = 0; i < n; i++) {
        if (!g_ascii_isalnum(name[i]) && !strchr("_.-", name[i])) {
            return FALSE;
        }
    }
    return TRUE;
}

static gboolean is_ours(xmlNode *n)
{
    return n->ns == NULL;
}

static gboolean is_sf(xmlNode *n)
{
    return n->ns && n->ns->href &&
           strcmp((const char *)n->ns->href, SFD_DOMAIN_NS) == 0;
}

static const char *elname(xmlNode *n)
{
    return (const char *)n->name;
}

/* The trimmed text of an element with no element children. */
static char *text_of(Parse *p, xmlNode *n, const char *path)
{
    for (xmlNode *c = n->children; c; c = c->next) {
        if (c->type == XML_ELEMENT_NODE) {
            fail(p, "<%s> must hold text, not <%s>", path, elname(c));
            return NULL;
        }
        if (c->type == XML_ENTITY_REF_NODE) {
            fail(p, "<%s>: entity references are not allowed", path);
            return NULL;
        }
    }
    xmlChar *t = xmlNodeGetContent(n);
    char *s = g_strstrip(g_strdup(t ? (const char *)t : ""));
    xmlFree(t);
    if (!*s) {
        fail(p, "<%s> is empty", path);
        g_free(s);
        return NULL;
    }
    return s;
}

static char *attr(xmlNode *n, const char *name)
{
    xmlChar *v = xmlGetNoNsProp(n, (const xmlChar *)name);
    char *s = v ? g_strdup((const char *)v) : NULL;

    xmlFree(v);
    return s;
}

static gboolean parse_uint(const char *s, guint64 max, guint64 *out)
{
    guint64 v;

    if (!g_ascii_string_to_unsigned(s, 10, 0, max, &v, NULL)) {
        return FALSE;
    }
    *out = v;
    return TRUE;
}

static gboolean mac_valid(const char *s)
{
    unsigned b[6];
    int end = 0;

    if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%n", &b[0], &b[1], &b[2], &b[3],
               &b[4], &b[5], &end) != 6 ||
        end != 17 || s[end]) {
        return FALSE;
    }
    return (b[0] & 1) == 0; /* unicast */
}

static gboolean parse_memory(Parse *p, xmlNode *n)
{
    g_autofree char *unit = attr(n, "unit");
    g_autofree char *t = text_of(p, n, "memory");
    guint64 v, shift;

    if (!t) {
        return FALSE;
    }
    if (!unit || !strcmp(unit, "KiB") || !strcmp(unit, "k")) {
        shift = 10; /* libvirt's default unit */
    } else if (!strcmp(unit, "MiB") || !strcmp(unit, "M")) {
        shift = 20;
    } else if (!strcmp(unit, "GiB") || !strcmp(unit, "G")) {
        shift = 30;
    } else {
        return fail(p, "<memory unit='%s'>: unit must be KiB, MiB or GiB",
                    unit);
    }
    if (!parse_uint(t, G_MAXUINT32, &v)) {
        return fail(p, "<memory> is not a number: '%s'", t);
    }
    v <<= shift;
    if (v % (1 << 20)) {
        return fail(p, "<memory> must be a whole number of MiB");
    }
    v >>= 20;
    if (v < 32 || v > 1024 * 1024) {
        return fail(p, "<memory> must be between 32 MiB and 1 TiB");
    }
    p->d->memory_mib = v;
    return TRUE;
}

static gboolean parse_os(Parse *p, xmlNode *os)
{
    SfdDomain *d = p->d;

    for (xmlNode *c = os->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE || !is_ours(c)) {
            continue;
        }
        char **slot;
        if (!strcmp(elname(c), "kernel")) {
            slot = &d->kernel;
        } else if (!strcmp(elname(c), "initrd")) {
            slot = &d->initrd;
        } else if (!strcmp(elname(c), "cmdline")) {
            slot = &d->cmdline;
        } else if (!strcmp(elname(c), "type")) {
            continue; /* <type>hvm</type>, as libvirt */
        } else {
            return fail(p, "unknown element <os/%s>", elname(c));
        }
        if (*slot) {
            return fail(p, "duplicate <os/%s>", elname(c));
        }
        g_autofree char *path = g_strdup_printf("os/%s", elname(c));
        if (!(*slot = text_of(p, c, path))) {
            return FALSE;
        }
        if (slot != &d->cmdline && !g_path_is_absolute(*slot)) {
            return fail(p, "<os/%s> must be an absolute path", elname(c));
        }
    }
    if (!d->kernel) {
        return fail(p, "missing <os/kernel>");
    }
    if (d->cmdline && strstr(d->cmdline, "sf.ip=")) {
        return fail(p, "<os/cmdline> must not set sf.ip=: sfd assigns "
                       "addresses on the family network");
    }
    if (d->cmdline && strchr(d->cmdline, ',')) {
        /* QEMU option syntax would need escaping; refuse plainly. */
        return fail(p, "<os/cmdline> must not contain ','");
    }
    return TRUE;
}

static gboolean parse_disk(Parse *p, xmlNode *n)
{
    g_autofree char *type = attr(n, "type");
    g_autofree char *device = attr(n, "device");
    SfdDisk *disk;

    if (!type || strcmp(type, "file")) {
        return fail(p,
                    "<devices/disk type='%s'>: only type='file' is "
                    "supported",
                    type ? type : "");
    }
    if (device && strcmp(device, "disk")) {
        return fail(p,
                    "<devices/disk device='%s'>: only device='disk' is "
                    "supported",
                    device);
    }
    disk = g_new0(SfdDisk, 1);
    g_ptr_array_add(p->d->disks, disk);
    for (xmlNode *c = n->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE || !is_ours(c)) {
            continue;
        }
        if (!strcmp(elname(c), "source")) {
            g_free(disk->file);
            disk->file = attr(c, "file");
        } else if (!strcmp(elname(c), "readonly")) {
            disk->readonly = TRUE;
        } else if (!strcmp(elname(c), "target") ||
                   !strcmp(elname(c), "driver")) {
            continue; /* always virtio, raw */
        } else {
            return fail(p, "unknown element <devices/disk/%s>", elname(c));
        }
    }
    if (!disk->file || !g_path_is_absolute(disk->file)) {
        return fail(p, "<devices/disk> needs <source file='/absolute/path'/>");
    }
    if (strchr(disk->file, ',')) {
        return fail(p, "<devices/disk/source file>: ',' is not allowed");
    }
    return TRUE;
}

static gboolean parse_interface(Parse *p, xmlNode *n)
{
    g_autofree char *type = attr(n, "type");

    if (p->d->has_interface) {
        return fail(p, "only one <devices/interface> is supported");
    }
    if (!type || strcmp(type, "family")) {
        return fail(p,
                    "<devices/interface type='%s'>: only type='family' "
                    "(the clone family network) is supported",
                    type ? type : "");
    }
    p->d->has_interface = TRUE;
    for (xmlNode *c = n->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE || !is_ours(c)) {
            continue;
        }
        if (!strcmp(elname(c), "mac")) {
            g_free(p->d->mac);
            p->d->mac = attr(c, "address");
            if (!p->d->mac || !mac_valid(p->d->mac)) {
                return fail(p,
                            "<devices/interface/mac address='%s'> is not "
                            "a unicast MAC address",
                            p->d->mac ? p->d->mac : "");
            }
            for (char *s = p->d->mac; *s; s++) {
                *s = g_ascii_tolower(*s);
            }
        } else if (!strcmp(elname(c), "model")) {
            continue; /* always virtio */
        } else {
            return fail(p, "unknown element <devices/interface/%s>", elname(c));
        }
    }
    return TRUE;
}

/*
 * The balloon is there for free page reporting: free memory the guest
 * reports is given back, so a fork's clones never fetch it (the zero map,
 * docs/avoidance.md).  It is never inflated.
 */
static gboolean parse_memballoon(Parse *p, xmlNode *n)
{
    g_autofree char *model = attr(n, "model");
    g_autofree char *fpr = attr(n, "freePageReporting");

    if (model && !strcmp(model, "none") && !fpr) {
        p->d->balloon = SFD_BALLOON_NONE;
        return TRUE;
    }
    if (!model || strcmp(model, "virtio")) {
        return fail(p,
                    "<devices/memballoon model='%s'>: only 'virtio' and "
                    "'none' are supported",
                    model ? model : "");
    }
    if (fpr && strcmp(fpr, "on") && strcmp(fpr, "off")) {
        return fail(p,
                    "<devices/memballoon freePageReporting='%s'>: 'on' or "
                    "'off'",
                    fpr);
    }
    p->d->balloon =
        fpr && !strcmp(fpr, "off") ? SFD_BALLOON_QUIET : SFD_BALLOON_REPORTING;
    for (xmlNode *c = n->children; c; c = c->next) {
        if (c->type == XML_ELEMENT_NODE && is_ours(c)) {
            return fail(p, "unknown element <devices/memballoon/%s>",
                        elname(c));
        }
    }
    return TRUE;
}

static gboolean parse_devices(Parse *p, xmlNode *devs)
{
    for (xmlNode *c = devs->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE || !is_ours(c)) {
            continue;
        }
        if (!strcmp(elname(c), "disk")) {
            if (!parse_disk(p, c)) {
                return FALSE;
            }
        } else if (!strcmp(elname(c), "interface")) {
            if (!parse_interface(p, c)) {
                return FALSE;
            }
        } else if (!strcmp(elname(c), "memballoon")) {
            if (!parse_memballoon(p, c)) {
                return FALSE;
            }
        } else {
            return fail(p, "unknown element <devices/%s>", elname(c));
        }
    }
    return TRUE;
}

static gboolean private_net(guint32 a)
{
    return (a >> 24) == 10 || (a >> 20) == ((172 << 4) | 1) ||
           (a >> 16) == ((192 << 8) | 168);
}

static gboolean parse_network(Parse *p, xmlNode *n)
{
    g_autofree char *addr = attr(n, "address");
    g_autofree char *prefix = attr(n, "prefix");
    struct in_addr in;
    guint64 pfx = 24;

    if (!addr || inet_pton(AF_INET, addr, &in) != 1) {
        return fail(p, "<sf:network address='%s'> is not an IPv4 address",
                    addr ? addr : "");
    }
    if (prefix && (!parse_uint(prefix, 32, &pfx) || pfx < 16 || pfx > 24)) {
        return fail(p, "<sf:network prefix='%s'> must be 16..24", prefix);
    }
    guint32 a = ntohl(in.s_addr);
    if (!private_net(a)) {
        return fail(p,
                    "<sf:network address='%s'> must be in a private "
                    "range (10/8, 172.16/12, 192.168/16)",
                    addr);
    }
    if (a & ((1u << (32 - pfx)) - 1)) {
        return fail(p,
                    "<sf:network address='%s' prefix='%d'> has host bits "
                    "set",
                    addr, (int)pfx);
    }
    p->d->has_network = TRUE;
    p->d->net_addr = a;
    p->d->net_prefix = pfx;
    return TRUE;
}

/* Refuse attributes of n other than those in allowed (NULL-terminated),
 * naming the first one; attributes of foreign namespaces are ignored. */
static gboolean only_attrs(Parse *p, xmlNode *n, const char *path,
                           const char *const *allowed)
{
    for (xmlAttr *a = n->properties; a; a = a->next) {
        const char *name = (const char *)a->name;
        gboolean sf = a->ns && a->ns->href &&
                      !strcmp((const char *)a->ns->href, SFD_DOMAIN_NS);
        gboolean known = FALSE;

        if (a->ns && !sf) {
            continue;
        }
        for (int i = 0; !sf && allowed[i]; i++) {
            known = known || !strcmp(name, allowed[i]);
        }
        if (!known) {
            return fail(p, "<%s>: unknown attribute '%s%s'", path,
                        sf ? "sf:" : "", name);
        }
    }
    return TRUE;
}

void sfd_guest_limits_default(SfdGuestLimits *l)
{
    l->enabled = TRUE;
    l->agent = TRUE;
    l->rate = SFD_GUEST_DEFAULT_RATE;
    l->burst = SFD_GUEST_DEFAULT_BURST;
    l->max_unused_tickets = SFD_GUEST_DEFAULT_MAX_UNUSED;
    l->ticket_timeout_s = SFD_GUEST_DEFAULT_TICKET_TIMEOUT;
    l->max_checkpoints = SFD_GUEST_DEFAULT_MAX_CHECKPOINTS;
}

static gboolean parse_guest(Parse *p, xmlNode *n)
{
    static const char *const names[] = {
        "enabled",
        "agent",
        "requests-per-second",
        "burst",
        "max-unused-tickets",
        "ticket-timeout",
        "max-checkpoints",
        NULL,
    };
    static const struct {
        const char *name;
        guint64 min, max;
        const char *unit;
        size_t off;
    } nums[] = {
        { "requests-per-second", 1, SFD_GUEST_MAX_RATE, "",
          G_STRUCT_OFFSET(SfdGuestLimits, rate) },
        { "burst", 1, SFD_GUEST_MAX_BURST, "",
          G_STRUCT_OFFSET(SfdGuestLimits, burst) },
        { "max-unused-tickets", 1, SFD_GUEST_MAX_UNUSED, "",
          G_STRUCT_OFFSET(SfdGuestLimits, max_unused_tickets) },
        { "ticket-timeout", 1, SFD_GUEST_MAX_TICKET_TIMEOUT, " seconds",
          G_STRUCT_OFFSET(SfdGuestLimits, ticket_timeout_s) },
        { "max-checkpoints", 0, SFD_GUEST_MAX_CHECKPOINTS, "",
          G_STRUCT_OFFSET(SfdGuestLimits, max_checkpoints) },
    };
    SfdGuestLimits *l = &p->d->guest;
    g_autofree char *en = attr(n, "enabled");
    g_autofree char *ag = attr(n, "agent");
    guint64 v;

    if (!only_attrs(p, n, "sf:guest", names)) {
        return FALSE;
    }
    if (en && strcmp(en, "yes") && strcmp(en, "no")) {
        return fail(p, "<sf:guest enabled='%s'> must be yes or no", en);
    }
    l->enabled = !en || !strcmp(en, "yes");
    if (ag && strcmp(ag, "yes") && strcmp(ag, "no")) {
        return fail(p, "<sf:guest agent='%s'> must be yes or no", ag);
    }
    l->agent = !ag || !strcmp(ag, "yes");
    for (size_t i = 0; i < G_N_ELEMENTS(nums); i++) {
        g_autofree char *s = attr(n, nums[i].name);
        if (!s) {
            continue;
        }
        if (!parse_uint(s, nums[i].max, &v) || v < nums[i].min) {
            return fail(p,
                        "<sf:guest %s='%s'> must be %" G_GUINT64_FORMAT
                        "..%" G_GUINT64_FORMAT "%s",
                        nums[i].name, s, nums[i].min, nums[i].max,
                        nums[i].unit);
        }
        G_STRUCT_MEMBER(int, l, nums[i].off) = v;
    }
    return TRUE;
}

static gboolean parse_sf_clone(Parse *p, xmlNode *n)
{
    gboolean seen_guest = FALSE;
    g_autofree char *max = attr(n, "max");
    guint64 v;

    if (max) {
        if (!parse_uint(max, 250, &v)) {
            return fail(p, "<sf:clone max='%s'> must be 0..250", max);
        }
        p->d->max_clones = v;
    }
    for (xmlNode *c = n->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE) {
            continue;
        }
        if (!is_sf(c)) {
            if (is_ours(c)) {
                return fail(p,
                            "unknown element <sf:clone/%s> (children of "
                            "<sf:clone> are in the sf namespace)",
                            elname(c));
            }
            continue;
        }
        if (!strcmp(elname(c), "network")) {
            if (!parse_network(p, c)) {
                return FALSE;
            }
        } else if (!strcmp(elname(c), "hooks")) {
            g_autofree char *en = attr(c, "enabled");
            g_autofree char *to = attr(c, "timeout");
            if (en && strcmp(en, "yes") && strcmp(en, "no")) {
                return fail(p, "<sf:hooks enabled='%s'> must be yes or no", en);
            }
            p->d->hooks_enabled = !en || !strcmp(en, "yes");
            if (to) {
                if (!parse_uint(to, 600, &v) || v == 0) {
                    return fail(p,
                                "<sf:hooks timeout='%s'> must be 1..600 "
                                "seconds",
                                to);
                }
                p->d->hook_timeout_s = v;
            }
        } else if (!strcmp(elname(c), "guest")) {
            if (seen_guest) {
                return fail(p, "duplicate <sf:guest>");
            }
            seen_guest = TRUE;
            if (!parse_guest(p, c)) {
                return FALSE;
            }
        } else {
            return fail(p, "unknown element <sf:%s>", elname(c));
        }
    }
    return TRUE;
}

static gboolean parse_root(Parse *p, xmlNode *root)
{
    SfdDomain *d = p->d;
    gboolean seen_mem = FALSE, seen_vcpu = FALSE, seen_os = FALSE;
    gboolean seen_dev = FALSE, seen_clone = FALSE;

    if (!is_ours(root) || strcmp(elname(root), "domain")) {
        return fail(p, "the root element must be <domain>, not <%s>",
                    elname(root));
    }
    g_autofree char *type = attr(root, "type");
    if (type && strcmp(type, "snowflock") && strcmp(type, "qemu") &&
        strcmp(type, "kvm")) {
        return fail(p, "<domain type='%s'> is not supported", type);
    }
    for (xmlNode *c = root->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE) {
            continue;
        }
        const char *n = elname(c);
        if (is_sf(c)) {
            if (strcmp(n, "clone")) {
                return fail(p, "unknown element <sf:%s>", n);
            }
            if (seen_clone) {
                return fail(p, "duplicate <sf:clone>");
            }
            seen_clone = TRUE;
            if (!parse_sf_clone(p, c)) {
                return FALSE;
            }
            continue;
        }
        if (!is_ours(c)) {
            continue; /* a foreign namespace: not ours */
        }
        if (!strcmp(n, "name")) {
            if (d->name) {
                return fail(p, "duplicate <name>");
            }
            if (!(d->name = text_of(p, c, "name"))) {
                return FALSE;
            }
            if (!sfd_domain_name_valid(d->name)) {
                return fail(p,
                            "<name> '%s' must be 1..32 of "
                            "[A-Za-z0-9_.-], not starting with . or -",
                            d->name);
            }
        } else if (!strcmp(n, "uuid")) {
            if (d->uuid) {
                return fail(p, "duplicate <uuid>");
            }
            if (!(d->uuid = text_of(p, c, "uuid"))) {
                return FALSE;
            }
            if (!g_uuid_string_is_valid(d->uuid)) {
                return fail(p, "<uuid> '%s' is not a UUID", d->uuid);
            }
        } else if (!strcmp(n, "memory")) {
            if (seen_mem) {
                return fail(p, "duplicate <memory>");
            }
            seen_mem = TRUE;
            if (!parse_memory(p, c)) {
                return FALSE;
            }
        } else if (!strcmp(n, "vcpu")) {
            g_autofree char *t = text_of(p, c, "vcpu");
            guint64 v;
            if (seen_vcpu) {
                return fail(p, "duplicate <vcpu>");
            }
            seen_vcpu = TRUE;
            if (!t) {
                return FALSE;
            }
            if (!parse_uint(t, 64, &v) || v == 0) {
                return fail(p, "<vcpu> must be 1..64, not '%s'", t);
            }
            d->vcpu = v;
        } else if (!strcmp(n, "os")) {
            if (seen_os) {
                return fail(p, "duplicate <os>");
            }
            seen_os = TRUE;
            if (!parse_os(p, c)) {
                return FALSE;
            }
        } else if (!strcmp(n, "devices")) {
            if (seen_dev) {
                return fail(p, "duplicate <devices>");
            }
            seen_dev = TRUE;
            if (!parse_devices(p, c)) {
                return FALSE;
            }
        } else if (!strcmp(n, "metadata") || !strcmp(n, "description") ||
                   !strcmp(n, "title") || !strcmp(n, "on_poweroff") ||
                   !strcmp(n, "on_reboot") || !strcmp(n, "on_crash")) {
            continue; /* informational, as in libvirt */
        } else {
            return fail(p, "unknown element <%s>", n);
        }
    }
    if (!d->name) {
        return fail(p, "missing <name>");
    }
    if (!seen_mem) {
        return fail(p, "missing <memory>");
    }
    if (!seen_os) {
        return fail(p, "missing <os>");
    }
    return TRUE;
}

SfdDomain *sfd_domain_parse(const char *xml, gsize len, char **err)
{
    Parse p = { 0 };
    xmlParserCtxtPtr ctxt;
    xmlDocPtr doc;

    *err = NULL;
    if (len > SFD_DOMAIN_MAX_XML) {
        *err = g_strdup_printf("domain XML is %zu bytes, more than the "
                               "%d allowed",
                               len, SFD_DOMAIN_MAX_XML);
        return NULL;
    }
    /* No DTD at all: no entity declarations to expand, nothing external
     * to fetch.  Checked on the raw text before libxml2 sees it. */
    if (g_strstr_len(xml, len, "<!DOCTYPE") ||
        g_strstr_len(xml, len, "<!ENTITY")) {
        *err = g_strdup("domain XML must not contain a DOCTYPE or entity "
                        "declarations");
        return NULL;
    }
    if (memchr(xml, '\0', len)) {
        *err = g_strdup("domain XML contains a NUL byte");
        return NULL;
    }
    ctxt = xmlNewParserCtxt();
    if (!ctxt) {
        *err = g_strdup("out of memory");
        return NULL;
    }
    doc = xmlCtxtReadMemory(ctxt, xml, len, "domain.xml", NULL,
                            XML_PARSE_NONET | XML_PARSE_NOERROR |
                                XML_PARSE_NOWARNING | XML_PARSE_NOCDATA);
    if (!doc) {
        const xmlError *e = xmlCtxtGetLastError(ctxt);
        *err = g_strdup_printf(
            "domain XML is not well-formed: line %d: %s", e ? e->line : 0,
            e && e->message ? g_strstrip(e->message) : "parse error");
        xmlFreeParserCtxt(ctxt);
        return NULL;
    }
    if (doc->intSubset || doc->extSubset) {
        *err = g_strdup("domain XML must not contain a DOCTYPE");
        goto out;
    }
    p.d = g_new0(SfdDomain, 1);
    p.d->disks = g_ptr_array_new();
    p.d->vcpu = 1;
    p.d->max_clones = SFD_DOMAIN_DEFAULT_MAX_CLONES;
    p.d->hooks_enabled = TRUE;
    sfd_guest_limits_default(&p.d->guest);
    if (!parse_root(&p, xmlDocGetRootElement(doc))) {
        *err = p.err;
        sfd_domain_free(p.d);
        p.d = NULL;
        goto out;
    }
    if (!p.d->uuid) {
        p.d->uuid = g_uuid_string_random();
    }
    p.d->xml = g_strndup(xml, len);
out:
    xmlFreeDoc(doc);
    xmlFreeParserCtxt(ctxt);
    return p.d;
}

void sfd_domain_free(SfdDomain *d)
{
    if (!d) {
        return;
    }
    for (guint i = 0; i < d->disks->len; i++) {
        SfdDisk *disk = d->disks->pdata[i];
        g_free(disk->file);
        g_free(disk);
    }
    g_ptr_array_free(d->disks, TRUE);
    g_free(d->name);
    g_free(d->uuid);
    g_free(d->kernel);
    g_free(d->initrd);
    g_free(d->cmdline);
    g_free(d->mac);
    g_free(d->xml);
    g_free(d);
}

gboolean sfd_domain_has_writable_disk(const SfdDomain *d)
{
    for (guint i = 0; i < d->disks->len; i++) {
        if (!((SfdDisk *)d->disks->pdata[i])->readonly) {
            return TRUE;
        }
    }
    return FALSE;
}
