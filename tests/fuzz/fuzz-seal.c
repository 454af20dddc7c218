/*
 * Fuzz target: opening sealed messages (sf-seal.c) as a receiver on the
 * network would.  A crash, a sanitizer report, or any input other than
 * an untouched genuine message opening successfully is a bug: with the
 * key unknown to the fuzzer, a mutated message must never authenticate.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <string.h>
#include "sf-seal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
GPtrArray *sf_fuzz_seeds(void);

static const uint8_t secret[SF_WIRE_SECRET_LEN] = { 7, 7, 7 };
#define FORK 42
static GPtrArray *genuine; /* GBytes: what the seeds sealed */

static SfSealKeys *keys(void)
{
    static SfSealKeys k;
    static gboolean done;

    if (!done) {
        sf_seal_keys_derive(&k, secret, FORK);
        done = TRUE;
    }
    return &k;
}

GPtrArray *sf_fuzz_seeds(void)
{
    static const char *const msgs[] = {
        "",
        "x",
        "a request",
        "a page of guest memory, sealed",
    };
    GPtrArray *seeds =
        g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    SfSealSender *s = sf_seal_sender_new(keys(), SF_SEAL_PAGES);

    genuine = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    for (size_t i = 0; i < G_N_ELEMENTS(msgs); i++) {
        uint8_t out[256];
        size_t n = sf_seal(s, msgs[i], strlen(msgs[i]), out);
        g_ptr_array_add(seeds, g_bytes_new(out, n));
        g_ptr_array_add(genuine, g_bytes_new(out, n));
    }
    sf_seal_sender_free(s);
    return seeds;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    SfSealReceiver *r = sf_seal_receiver_new(keys(), SF_SEAL_PAGES, 4);
    uint8_t *buf = g_memdup2(data, size ? size : 1);
    uint8_t *plain;
    size_t plen;

    if (sf_seal_open(r, buf, size, &plain, &plen) == SF_OPEN_OK) {
        gboolean known = FALSE;

        g_assert(plain >= buf && plain + plen <= buf + size);
        for (guint i = 0; genuine && i < genuine->len; i++) {
            gsize glen;
            const void *g = g_bytes_get_data(genuine->pdata[i], &glen);
            known |= glen == size && !memcmp(g, data, size);
        }
        g_assert(known);
    }
    g_free(buf);
    sf_seal_receiver_free(r);
    return 0;
}
