/*
 * Fuzz target: sf-agent's reassembly of host->guest frames
 * (guest-agent/agent/channel.c).  The input is cut into reads of varying
 * sizes as a virtio-serial port would deliver it.  A crash, a sanitizer
 * report, or a frame handed out whose header does not check out against
 * sf-agent-proto.h is a bug; so is a reader that stops making progress.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <string.h>

#include "channel.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
GPtrArray *sf_fuzz_seeds(void);

void agent_log(const char *fmt, ...)
{
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ChanReader r;
    uint8_t body[SF_AGENT_MAX_BODY];
    size_t off = 0, chunk = size ? 1 + data[0] % 97 : 1;
    SfAgentHdr h;

    memset(&r, 0, sizeof(r));
    while (off < size) {
        size_t n = MIN(chunk, MIN(size - off, sizeof(r.buf) - r.len));

        memcpy(r.buf + r.len, data + off, n);
        r.len += n;
        off += n;
        while (chan_next_frame(&r, &h, body)) {
            g_assert_cmphex(h.magic, ==, SF_AGENT_MAGIC);
            g_assert_cmpint(h.version, ==, SF_AGENT_VERSION);
            g_assert_cmpint(h.flags, ==, 0);
            g_assert_true(h.type & 0x80);
            g_assert_cmpint(h.length, ==, sf_agent_body_len(h.type));
        }
        /* Whatever is left is a prefix of a frame: never a full buffer. */
        g_assert_cmpuint(r.len, <, sizeof(r.buf));
    }
    return 0;
}

static void add_frame(GByteArray *a, uint8_t type, uint32_t seq,
                      const void *body, size_t len)
{
    uint8_t f[CHAN_FRAME_MAX];

    g_byte_array_append(a, f, chan_encode(f, type, seq, body, len));
}

GPtrArray *sf_fuzz_seeds(void)
{
    GPtrArray *seeds =
        g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    SfAgentResult res = { .count = 2, .value = 7 };
    SfAgentIdentity id = { .clone_id = 1, .generation = 1, .prefix = 24 };
    SfAgentExited ex = { .ticket = 7, .clone_id = 1 };
    SfAgentWelcome w = { SF_AGENT_VERSION, 8 };
    GByteArray *a = g_byte_array_new();

    strcpy(id.hostname, "vm-1");
    add_frame(a, SF_AGENT_WELCOME, 1, &w, sizeof(w));
    add_frame(a, SF_AGENT_RESULT, 2, &res, sizeof(res));
    add_frame(a, SF_AGENT_IDENTITY, 3, &id, sizeof(id));
    add_frame(a, SF_AGENT_EXITED, 0, &ex, sizeof(ex));
    g_ptr_array_add(seeds, g_byte_array_free_to_bytes(a));
    a = g_byte_array_new();
    add_frame(a, SF_AGENT_RESULT, 9, &res, sizeof(res));
    g_ptr_array_add(seeds, g_byte_array_free_to_bytes(a));
    return seeds;
}
