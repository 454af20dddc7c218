/*
 * Fuzz target: the descriptor decoder (a clone reads descriptors that
 * may come from another host).  A decoded descriptor must re-encode to
 * the same bytes: nothing was accepted that the format does not say.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <string.h>
#include "sf-descriptor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
GPtrArray *sf_fuzz_seeds(void);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    GError *err = NULL;
    SfDescriptor *d = sf_descriptor_decode(data, size, &err);

    if (!d) {
        g_assert(err && err->message[0]);
        g_error_free(err);
        return 0;
    }
    GBytes *re = sf_descriptor_encode(d);
    g_assert(g_bytes_get_size(re) == size);
    g_assert(memcmp(g_bytes_get_data(re, NULL), data, size) == 0);
    g_bytes_unref(re);
    sf_descriptor_free(d);
    return 0;
}

GPtrArray *sf_fuzz_seeds(void)
{
    GPtrArray *s =
        g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    SfBlockInfo blocks[2] = {
        { .idstr = "pc.ram", .length = 64 * 4096, .page_size = 4096 },
        { .idstr = "/rom@etc/acpi/tables", .length = 4096, .page_size = 4096 },
    };
    uint8_t dev[300];
    SfDescriptor d = {
        .version = SF_DESC_VERSION,
        .fork_id = 0x1234,
        .created_ns = 1,
        .page_size = 4096,
        .machine = (char *)"microvm",
        .vm_name = (char *)"web",
        .nblocks = 2,
        .blocks = blocks,
        .devstate = dev,
        .devstate_len = sizeof(dev),
    };

    for (size_t i = 0; i < sizeof(dev); i++) {
        dev[i] = i * 7;
    }
    g_ptr_array_add(s, sf_descriptor_encode(&d));
    d.nblocks = 1;
    d.devstate_len = 0;
    d.vm_name = (char *)"";
    g_ptr_array_add(s, sf_descriptor_encode(&d));
    return s;
}
