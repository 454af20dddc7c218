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
 *     </sf:clone>
 *     <metadata>...</metadata>              ignored, as are foreign namespaces
 *   </domain>
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

typedef struct SfdDisk {
    char *file;
    gboolean readonly;
} SfdDisk;

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
    int max_clones;
    gboolean has_network; /* <sf:network> given */
    guint32 net_addr;     /* host byte order */
    int net_prefix;
    gboolean hooks_enabled;
    int hook_timeout_s; /* 0: the daemon's default */
    char *xml;          /* the document exactly as the user wrote it */
} SfdDomain;

/* Parse and validate; NULL with *err set to a message naming the part. */
SfdDomain *sfd_domain_parse(const char *xml, gsize len, char **err);
void sfd_domain_free(SfdDomain *d);
gboolean sfd_domain_name_valid(const char *name);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SfdDomain, sfd_domain_free)

#endif
