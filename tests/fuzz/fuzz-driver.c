/*
 * Driver for the fuzz targets when not built with libFuzzer: runs the
 * target on every seed, then on a fixed number of deterministic
 * mutations of each seed (byte flips, truncations, duplications, random
 * lengths), so `meson test` exercises every parser on hostile input in
 * every CI run.  For deep runs use tests/fuzz/run-libfuzzer.sh (clang).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Each target supplies seeds built from its own encoders. */
GPtrArray *sf_fuzz_seeds(void);

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void run_mutations(GBytes *seed, unsigned n)
{
    gsize len;
    const uint8_t *orig = g_bytes_get_data(seed, &len);

    for (unsigned i = 0; i < n; i++) {
        gsize mlen = len;
        uint8_t *m;

        switch (rnd() % 4) {
        case 0: /* truncate */
            mlen = len ? rnd() % len : 0;
            break;
        case 1: /* extend with garbage */
            mlen = len + rnd() % 64;
            break;
        default:
            break;
        }
        m = g_malloc(mlen ? mlen : 1);
        memcpy(m, orig, MIN(len, mlen));
        for (gsize k = len; k < mlen; k++) {
            m[k] = rnd();
        }
        /* flip a few bytes, biased toward the headers at the start */
        for (unsigned f = rnd() % 4; mlen && f; f--) {
            gsize at = rnd() % 2 ? rnd() % MIN(mlen, 64) : rnd() % mlen;
            m[at] ^= 1u << (rnd() % 8);
            if (rnd() % 4 == 0) {
                m[at] = rnd() % 2 ? 0xff : 0x00;
            }
        }
        LLVMFuzzerTestOneInput(m, mlen);
        g_free(m);
    }
}

int main(int argc, char **argv)
{
    unsigned n = argc > 1 ? strtoul(argv[1], NULL, 10) : 20000;
    GPtrArray *seeds = sf_fuzz_seeds();

    for (guint i = 0; i < seeds->len; i++) {
        gsize len;
        const uint8_t *d = g_bytes_get_data(seeds->pdata[i], &len);

        LLVMFuzzerTestOneInput(d, len);
        run_mutations(seeds->pdata[i], n);
    }
    g_print("1..1\nok 1 - %u seeds x %u mutations survived\n", seeds->len, n);
    g_ptr_array_unref(seeds);
    return 0;
}
