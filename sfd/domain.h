/*
 * sfd: domains in libvirt-style XML.
 *
 *   <domain type="snowflock" xmlns:sf="urn:snowflock:domain:1">
 *     <name>web</name>                      required, [A-Za-z0-9_.-]{1,32}
 *     <uuid>...</uuid>                      optional, generated when absent
 *     <memory unit="MiB">512</memory>       required (unit KiB, MiB, GiB)
 *     <vcpu>1</vcpu>                        optional, default 1
 *     <os>                                  required
 *       <kernel>/path/vmlinuz</kernel>      required
 *       <initrd>/path/initrd.img</initrd>   optional
 *       <cmdline>console=ttyS0</cmdline>    optional
 *     </os>
 *     <devices>                             optional
 *       <disk type="file" device="disk">    virtio-blk; <readonly/> allowed
 *         <source file="/path"/>
 *       </disk>
 *       <interface type="family">           at most one: the family network
 *         <mac address="52:54:00:..."/>     optional
 *       </interface>
 *     </devices>
 *     <sf:clone max="8">                    optional
 *       <sf:network address="10.77.9.0" prefix="24"/>
 *       <sf:hooks enabled="yes" timeout="10"/>
 *       <sf:guest enabled="yes"            requests from programs in the
 *                 agent="yes"              (no: it runs no agent)
 *                 requests-per-second="5"  guest (docs/guest-api.md);
 *                 burst="10"               every attribute optional,
 *                 max-unused-tickets="4"   defaults as shown
 *                 ticket-timeout="60"
 *                 max-checkpoints="4"/>
 *     </sf:clone>
 *     <metadata>...</metadata>              ignored, as are foreign namespaces
 *   </domain>
 *
 * <sf:guest> sets the limits sfd applies to guest requests, per VM of
 * the domain (parent and clones alike): a token bucket of
 * requests-per-second (1..1000) with burst (1..1000) requests, at most
 * max-unused-tickets (1..64) tickets granted and not used yet, each
 * expiring after ticket-timeout (1..3600) seconds, and at most
 * max-checkpoints (0..16) checkpoints.  enabled="no" refuses every guest
 * request with EPERM but a clone's exit (its operator can still fork it
 * with sfctl fork).  agent="no" says the guest runs no guest agent: a
 * clone is then told its address through its serial console at once,
 * instead of waiting for its agent.  Unknown attributes are refused,
 * naming them.
 *
 * Parsing never loads external entities or DTDs and never substitutes
 * entities: a document with a DOCTYPE is refused outright.  Unknown
 * elements in the domain's own or the sf namespace are refused, naming
 * the element.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_DOMAIN_H
#define SFD_DOMAIN_H

#include <glib.h>

#define SFD_DOMAIN_NS                 "urn:snowflock:domain:1"
#define SFD_DOMAIN_MAX_XML            (1024 * 1024)
#define SFD_DOMAIN_DEFAULT_MAX_CLONES 16

/* <sf:guest> defaults and ranges (ticket-timeout in seconds). */
#define SFD_GUEST_DEFAULT_RATE            5
#define SFD_GUEST_DEFAULT_BURST           10
#define SFD_GUEST_DEFAULT_MAX_UNUSED      4
#define SFD_GUEST_DEFAULT_TICKET_TIMEOUT  60
#define SFD_GUEST_DEFAULT_MAX_CHECKPOINTS 4
#define SFD_GUEST_MAX_RATE                1000
#define SFD_GUEST_MAX_BURST               1000
#define SFD_GUEST_MAX_UNUSED              64
#define SFD_GUEST_MAX_TICKET_TIMEOUT      3600
#define SFD_GUEST_MAX_CHECKPOINTS         16

typedef struct SfdGuestLimits {
    gboolean enabled; /* FALSE: guest requests get EPERM */
    gboolean agent;   /* FALSE: the guest runs no agent (serial console) */
    int rate;         /* requests per second */
    int burst;
    int max_unused_tickets;
    int ticket_timeout_s;
    int max_checkpoints;
} SfdGuestLimits;

typedef struct SfdDisk {
    char *file;
    gboolean readonly;
} SfdDisk;

/* <devices/memballoon>: libvirt's element, reporting on by default. */
typedef enum SfdBalloon {
    SFD_BALLOON_REPORTING = 0, /* model='virtio' freePageReporting='on' */
    SFD_BALLOON_QUIET,         /* model='virtio' freePageReporting='off' */
    SFD_BALLOON_NONE,          /* model='none' */
} SfdBalloon;

typedef struct SfdDomain {
    char *name;
    char *uuid;
    guint64 memory_mib;
    int vcpu;
    char *kernel;
    char *initrd;
    char *cmdline;
    GPtrArray *disks; /* SfdDisk */
    gboolean has_interface;
    char *mac; /* NULL: derived by sfd */
    SfdBalloon balloon;
    int max_clones;
    gboolean has_network; /* <sf:network> given */
    guint32 net_addr;     /* host byte order */
    int net_prefix;
    gboolean hooks_enabled;
    int hook_timeout_s;   /* 0: the daemon's default */
    SfdGuestLimits guest; /* <sf:guest>, defaults when absent */
    char *xml;            /* the document exactly as the user wrote it */
} SfdDomain;

/* Parse and validate; NULL with *err set to a message naming the part. */
SfdDomain *sfd_domain_parse(const char *xml, gsize len, char **err);
void sfd_domain_free(SfdDomain *d);
gboolean sfd_domain_name_valid(const char *name);
/* Whether a disk is writable (its VM cannot be forked: clones would
 * share it). */
gboolean sfd_domain_has_writable_disk(const SfdDomain *d);
/* The defaults of <sf:guest> (for a VM whose domain is gone, too). */
void sfd_guest_limits_default(SfdGuestLimits *l);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SfdDomain, sfd_domain_free)

#endif
