/*
 * Fuzz target: sfd's domain XML parser (user and hook supplied XML).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <stdint.h>
#include <string.h>
#include "domain.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
GPtrArray *sf_fuzz_seeds(void);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *err = NULL;
    SfdDomain *d = sfd_domain_parse((const char *)data, size, &err);

    if (d) {
        g_assert(sfd_domain_name_valid(d->name));
        sfd_domain_free(d);
    } else {
        g_assert(err && err[0]);
    }
    g_free(err);
    return 0;
}

GPtrArray *sf_fuzz_seeds(void)
{
    GPtrArray *s =
        g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    static const char *const docs[] = {
        "<domain type=\"snowflock\" xmlns:sf=\"urn:snowflock:domain:1\"> "
        "<name>web</name> <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid> "
        "<memory unit=\"MiB\">512</memory> <vcpu>1</vcpu> <os> "
        "<kernel>/srv/guest/vmlinuz</kernel> "
        "<initrd>/srv/guest/initrd.img</initrd> <cmdline>console=ttyS0 quiet "
        "panic=-1 tsc_early_khz=2596134</cmdline> </os> <devices> <disk "
        "type=\"file\" device=\"disk\"> <source file=\"/srv/guest/data.img\"/> "
        "<readonly/> </disk> <interface type=\"family\"> <mac "
        "address=\"52:54:00:12:34:56\"/> </interface> </devices> <sf:clone "
        "max=\"8\"> <sf:network address=\"10.77.9.0\" prefix=\"24\"/> "
        "<sf:hooks enabled=\"yes\" timeout=\"10\"/> <sf:guest "
        "requests-per-second=\"5\" burst=\"10\" max-unused-tickets=\"4\" "
        "ticket-timeout=\"60\" max-checkpoints=\"4\" enabled=\"yes\"/> "
        "</sf:clone> </domain>",
        "<domain xmlns:sf=\"urn:snowflock:domain:1\"><name>g</name>"
        "<memory>262144</memory><os><kernel>/k</kernel></os><sf:clone>"
        "<sf:guest enabled=\"no\" burst=\"0\" rate=\"1\"/></sf:clone>"
        "</domain>",
        "<?xml version='1.0'?><!DOCTYPE d [<!ENTITY x "
        "'y'>]><domain>&x;</domain>",
        "<domain><name>a</name></domain>",
    };

    for (size_t i = 0; i < G_N_ELEMENTS(docs); i++) {
        g_ptr_array_add(s, g_bytes_new(docs[i], strlen(docs[i])));
    }
    return s;
}
