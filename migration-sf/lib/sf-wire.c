/*
 * snowflock page-transfer wire format: encode, decode, validate.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Every multi-byte integer is read and written a byte at a time in
 * big-endian order, so nothing here depends on host endianness or on the
 * alignment of the buffer the bytes arrived in.
 */
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "sf-wire.h"

/*
 * Length rules per type, checked by sf_wire_hdr_decode() before any body
 * byte is read.  DATA's exact length depends on npages, so the header
 * check only bounds it (at least one page, at most a full run) and
 * sf_wire_pages_decode() checks the exact total.
 */
const SfWireMsgRule sf_wire_msg_table[SF_MSG__MAX] = {
    [SF_MSG_HELLO] = {
        "HELLO", SF_WIRE_HELLO_LEN, SF_WIRE_HELLO_LEN, true,
    },
    [SF_MSG_WELCOME] = {
        "WELCOME", SF_WIRE_WELCOME_LEN, SF_WIRE_WELCOME_LEN, false,
    },
    [SF_MSG_REQUEST] = {
        "REQUEST", SF_WIRE_REQUEST_LEN, SF_WIRE_REQUEST_LEN, true,
    },
    [SF_MSG_DATA] = {
        "DATA", SF_WIRE_PAGES_LEN + SF_WIRE_PAGE_SIZE, SF_WIRE_MAX_BODY, false,
    },
    [SF_MSG_ZERO] = {
        "ZERO", SF_WIRE_PAGES_LEN, SF_WIRE_PAGES_LEN, false,
    },
    [SF_MSG_DONE] = {
        "DONE", SF_WIRE_DONE_LEN, SF_WIRE_DONE_LEN, true,
    },
    [SF_MSG_ERROR] = {
        "ERROR", 4, 4 + SF_WIRE_ERRMSG_MAX, false,
    },
    [SF_MSG_DESC_GET] = {
        "DESC_GET", SF_WIRE_DESC_GET_LEN, SF_WIRE_DESC_GET_LEN, true,
    },
    [SF_MSG_DESC] = {
        "DESC", SF_WIRE_DESC_LEN, SF_WIRE_DESC_LEN + SF_WIRE_DESC_CHUNK, false,
    },
    [SF_MSG_FRAG] = {
        "FRAG", SF_WIRE_FRAG_LEN + 1, SF_WIRE_FRAG_LEN + SF_WIRE_PAGE_SIZE,
        false,
    },
    [SF_MSG_ZEROMAP] = {
        "ZEROMAP", SF_WIRE_ZEROMAP_LEN,
        SF_WIRE_ZEROMAP_LEN + SF_WIRE_ZEROMAP_RUNS * 8, false,
    },
};

/* Big-endian helpers */

static inline void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = v >> 8;
    p[1] = v;
}

static inline void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

static inline void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, v >> 32);
    put_u32(p + 4, (uint32_t)v);
}

static inline uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

static inline uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

const char *sf_wire_type_name(uint32_t type)
{
    if (type == 0 || type >= SF_MSG__MAX) {
        return "UNKNOWN";
    }
    return sf_wire_msg_table[type].name;
}

/* Header */

void sf_wire_hdr_encode(uint8_t out[SF_WIRE_HDR_SIZE], SfMsgType type,
                        uint32_t length, uint32_t clone_id, uint64_t fork_id)
{
    put_u32(out, SF_WIRE_MAGIC);
    put_u16(out + 4, SF_WIRE_VERSION);
    put_u16(out + 6, type);
    put_u32(out + 8, length);
    put_u32(out + 12, clone_id);
    put_u64(out + 16, fork_id);
}

int sf_wire_hdr_decode(const uint8_t in[SF_WIRE_HDR_SIZE], SfWireHdr *hdr,
                       const char **why)
{
    const SfWireMsgRule *rule;

    hdr->magic = get_u32(in);
    hdr->version = get_u16(in + 4);
    hdr->type = get_u16(in + 6);
    hdr->length = get_u32(in + 8);
    hdr->clone_id = get_u32(in + 12);
    hdr->fork_id = get_u64(in + 16);

    /* Magic first: a peer that speaks something else entirely is PROTO. */
    if (hdr->magic != SF_WIRE_MAGIC) {
        *why = "bad magic";
        return -SF_WERR_PROTO;
    }
    if (hdr->version != SF_WIRE_VERSION) {
        *why = "unsupported protocol version";
        return -SF_WERR_VERSION;
    }
    if (hdr->type == 0 || hdr->type >= SF_MSG__MAX) {
        *why = "unknown message type";
        return -SF_WERR_PROTO;
    }
    rule = &sf_wire_msg_table[hdr->type];
    if (hdr->length < rule->min_len) {
        *why = "message body too short for its type";
        return -SF_WERR_PROTO;
    }
    if (hdr->length > rule->max_len) {
        *why = "message body too long for its type";
        return -SF_WERR_PROTO;
    }
    return 0;
}

/* Bodies */

static int check_len(SfMsgType type, size_t len, const char **why)
{
    const SfWireMsgRule *rule = &sf_wire_msg_table[type];

    if (len < rule->min_len || len > rule->max_len) {
        *why = "body length does not match message type";
        return -SF_WERR_PROTO;
    }
    return 0;
}

size_t sf_wire_hello_encode(uint8_t *out, const SfMsgHello *m)
{
    memcpy(out, m->secret, SF_WIRE_SECRET_LEN);
    put_u32(out + 16, m->flags);
    return SF_WIRE_HELLO_LEN;
}

int sf_wire_hello_decode(const uint8_t *in, size_t len, SfMsgHello *m,
                         const char **why)
{
    if (check_len(SF_MSG_HELLO, len, why) < 0) {
        return -SF_WERR_PROTO;
    }
    memcpy(m->secret, in, SF_WIRE_SECRET_LEN);
    m->flags = get_u32(in + 16);
    if (m->flags & ~SF_HELLO_FLAGS_ALL) {
        *why = "unknown HELLO flags";
        return -SF_WERR_PROTO;
    }
    return 0;
}

size_t sf_wire_welcome_encode(uint8_t *out, const SfMsgWelcome *m)
{
    put_u32(out, m->nblocks);
    put_u32(out + 4, m->page_size);
    put_u64(out + 8, m->total_pages);
    put_u32(out + 16, m->mcast_group);
    put_u16(out + 20, m->mcast_port);
    out[22] = m->frag_count;
    out[23] = 0;
    put_u64(out + 24, m->desc_len);
    return SF_WIRE_WELCOME_LEN;
}

int sf_wire_welcome_decode(const uint8_t *in, size_t len, SfMsgWelcome *m,
                           const char **why)
{
    if (check_len(SF_MSG_WELCOME, len, why) < 0) {
        return -SF_WERR_PROTO;
    }
    m->nblocks = get_u32(in);
    m->page_size = get_u32(in + 4);
    m->total_pages = get_u64(in + 8);
    m->mcast_group = get_u32(in + 16);
    m->mcast_port = get_u16(in + 20);
    m->frag_count = in[22];
    m->desc_len = get_u64(in + 24);
    if (m->page_size != SF_WIRE_PAGE_SIZE) {
        *why = "WELCOME page size is not the wire page size";
        return -SF_WERR_PROTO;
    }
    if (in[23] != 0) {
        *why = "WELCOME padding is not zero";
        return -SF_WERR_PROTO;
    }
    if (m->mcast_group ? (m->mcast_group >> 28) != 0xe || !m->mcast_port ||
                             !m->frag_count || m->frag_count > SF_WIRE_MAX_FRAGS
                       : m->mcast_port || m->frag_count) {
        *why = "WELCOME multicast group, port or fragments out of range";
        return -SF_WERR_PROTO;
    }
    return 0;
}

/* Checks shared by REQUEST, DATA and ZERO. */
static int check_run(uint32_t npages, uint64_t offset, uint32_t flags,
                     const char **why)
{
    if (npages == 0 || npages > SF_WIRE_MAX_PAGES) {
        *why = "npages outside 1..SF_WIRE_MAX_PAGES";
        return -SF_WERR_PROTO;
    }
    if (offset % SF_WIRE_PAGE_SIZE) {
        *why = "offset not page aligned";
        return -SF_WERR_PROTO;
    }
    if (flags & ~SF_REQ_FLAGS_ALL) {
        *why = "unknown flags";
        return -SF_WERR_PROTO;
    }
    return 0;
}

size_t sf_wire_request_encode(uint8_t *out, const SfMsgRequest *m)
{
    memcpy(out, m->secret, SF_WIRE_SECRET_LEN);
    put_u32(out + 16, m->block);
    put_u32(out + 20, m->npages);
    put_u64(out + 24, m->offset);
    put_u32(out + 32, m->flags);
    put_u32(out + 36, m->rx_kbps);
    put_u32(out + 40, m->loss_ppm);
    return SF_WIRE_REQUEST_LEN;
}

int sf_wire_request_decode(const uint8_t *in, size_t len, SfMsgRequest *m,
                           const char **why)
{
    if (check_len(SF_MSG_REQUEST, len, why) < 0) {
        return -SF_WERR_PROTO;
    }
    memcpy(m->secret, in, SF_WIRE_SECRET_LEN);
    m->block = get_u32(in + 16);
    m->npages = get_u32(in + 20);
    m->offset = get_u64(in + 24);
    m->flags = get_u32(in + 32);
    m->rx_kbps = get_u32(in + 36);
    m->loss_ppm = get_u32(in + 40);
    if (m->loss_ppm > 1000000) {
        *why = "loss above a million parts per million";
        return -SF_WERR_PROTO;
    }
    if (m->flags & SF_REQ_WORKSET) {
        *why = "WORKSET is for pages the server pushes, not a request";
        return -SF_WERR_PROTO;
    }
    return check_run(m->npages, m->offset, m->flags, why);
}

size_t sf_wire_pages_encode(uint8_t *out, const SfMsgPages *m)
{
    put_u32(out, m->block);
    put_u32(out + 4, m->npages);
    put_u64(out + 8, m->offset);
    put_u32(out + 16, m->flags);
    return SF_WIRE_PAGES_LEN;
}

int sf_wire_pages_decode(SfMsgType type, const uint8_t *in, size_t len,
                         SfMsgPages *m, const char **why)
{
    int ret;

    if (type != SF_MSG_DATA && type != SF_MSG_ZERO) {
        *why = "not a DATA or ZERO message";
        return -SF_WERR_PROTO;
    }
    if (check_len(type, len, why) < 0) {
        return -SF_WERR_PROTO;
    }
    m->block = get_u32(in);
    m->npages = get_u32(in + 4);
    m->offset = get_u64(in + 8);
    m->flags = get_u32(in + 16);
    ret = check_run(m->npages, m->offset, m->flags, why);
    if (ret < 0) {
        return ret;
    }
    /* npages <= SF_WIRE_MAX_PAGES here, so this cannot overflow. */
    if (type == SF_MSG_DATA &&
        len != SF_WIRE_PAGES_LEN + (size_t)m->npages * SF_WIRE_PAGE_SIZE) {
        *why = "DATA length does not match npages";
        return -SF_WERR_PROTO;
    }
    return 0;
}

size_t sf_wire_done_encode(uint8_t *out, const SfMsgDone *m)
{
    memcpy(out, m->secret, SF_WIRE_SECRET_LEN);
    return SF_WIRE_DONE_LEN;
}

int sf_wire_done_decode(const uint8_t *in, size_t len, SfMsgDone *m,
                        const char **why)
{
    if (check_len(SF_MSG_DONE, len, why) < 0) {
        return -SF_WERR_PROTO;
    }
    memcpy(m->secret, in, SF_WIRE_SECRET_LEN);
    return 0;
}

size_t sf_wire_desc_get_encode(uint8_t *out, const SfMsgDescGet *m)
{
    memcpy(out, m->secret, SF_WIRE_SECRET_LEN);
    put_u64(out + 16, m->offset);
    return SF_WIRE_DESC_GET_LEN;
}

int sf_wire_desc_get_decode(const uint8_t *in, size_t len, SfMsgDescGet *m,
                            const char **why)
{
    if (check_len(SF_MSG_DESC_GET, len, why) < 0) {
        return -SF_WERR_PROTO;
    }
    memcpy(m->secret, in, SF_WIRE_SECRET_LEN);
    m->offset = get_u64(in + 16);
    return 0;
}

size_t sf_wire_desc_encode(uint8_t *out, const SfMsgDesc *m)
{
    put_u64(out, m->offset);
    put_u64(out + 8, m->total);
    return SF_WIRE_DESC_LEN;
}

int sf_wire_desc_decode(const uint8_t *in, size_t len, SfMsgDesc *m,
                        const char **why)
{
    if (check_len(SF_MSG_DESC, len, why) < 0) {
        return -SF_WERR_PROTO;
    }
    m->offset = get_u64(in);
    m->total = get_u64(in + 8);
    /* len - 16 <= SF_WIRE_DESC_CHUNK: no overflow below. */
    if (m->offset > m->total || len - SF_WIRE_DESC_LEN > m->total - m->offset) {
        *why = "DESC data beyond the descriptor's length";
        return -SF_WERR_PROTO;
    }
    return 0;
}

size_t sf_wire_frag_encode(uint8_t *out, const SfMsgFrag *m)
{
    put_u32(out, m->block);
    put_u64(out + 4, m->offset);
    put_u32(out + 12, m->flags);
    out[16] = m->index;
    out[17] = m->count;
    put_u16(out + 18, 0);
    return SF_WIRE_FRAG_LEN;
}

size_t sf_wire_frag_len(unsigned index, unsigned count)
{
    size_t s, start;

    if (count == 0 || count > SF_WIRE_MAX_FRAGS || index >= count) {
        return 0;
    }
    s = (SF_WIRE_PAGE_SIZE + count - 1) / count;
    start = (size_t)index * s;
    return start >= SF_WIRE_PAGE_SIZE ? 0 : MIN(s, SF_WIRE_PAGE_SIZE - start);
}

int sf_wire_frag_decode(const uint8_t *in, size_t len, SfMsgFrag *m,
                        const char **why)
{
    size_t want;

    if (check_len(SF_MSG_FRAG, len, why) < 0) {
        return -SF_WERR_PROTO;
    }
    m->block = get_u32(in);
    m->offset = get_u64(in + 4);
    m->flags = get_u32(in + 12);
    m->index = in[16];
    m->count = in[17];
    if (get_u16(in + 18) != 0) {
        *why = "FRAG padding is not zero";
        return -SF_WERR_PROTO;
    }
    if (check_run(1, m->offset, m->flags, why) < 0) {
        return -SF_WERR_PROTO;
    }
    want = sf_wire_frag_len(m->index, m->count);
    if (!want || len != SF_WIRE_FRAG_LEN + want) {
        *why = "FRAG index, count or length do not fit a page";
        return -SF_WERR_PROTO;
    }
    return 0;
}

size_t sf_wire_zeromap_encode(uint8_t *out, const SfMsgZeroMap *m)
{
    put_u32(out, m->block);
    put_u32(out + 4, m->nruns);
    put_u32(out + 8, m->flags);
    return SF_WIRE_ZEROMAP_LEN;
}

void sf_wire_zeromap_put_run(uint8_t *runs, uint32_t i, uint32_t page,
                             uint32_t npages)
{
    put_u32(runs + (size_t)i * 8, page);
    put_u32(runs + (size_t)i * 8 + 4, npages);
}

void sf_wire_zeromap_run(const SfMsgZeroMap *m, uint32_t i, uint64_t *page,
                         uint64_t *npages)
{
    *page = get_u32(m->runs + (size_t)i * 8);
    *npages = get_u32(m->runs + (size_t)i * 8 + 4);
}

int sf_wire_zeromap_decode(const uint8_t *in, size_t len, SfMsgZeroMap *m,
                           const char **why)
{
    uint64_t end = 0;

    if (check_len(SF_MSG_ZEROMAP, len, why) < 0) {
        return -SF_WERR_PROTO;
    }
    m->block = get_u32(in);
    m->nruns = get_u32(in + 4);
    m->flags = get_u32(in + 8);
    m->runs = in + SF_WIRE_ZEROMAP_LEN;
    if (m->flags & ~SF_ZEROMAP_FLAGS_ALL) {
        *why = "unknown ZEROMAP flags";
        return -SF_WERR_PROTO;
    }
    if (m->nruns > SF_WIRE_ZEROMAP_RUNS ||
        len != SF_WIRE_ZEROMAP_LEN + (size_t)m->nruns * 8) {
        *why = "ZEROMAP length does not match its run count";
        return -SF_WERR_PROTO;
    }
    for (uint32_t i = 0; i < m->nruns; i++) {
        uint64_t page, npages;

        sf_wire_zeromap_run(m, i, &page, &npages);
        if (npages == 0 || page < end) {
            *why = "ZEROMAP runs are empty, out of order or overlap";
            return -SF_WERR_PROTO;
        }
        end = page + npages;
        if (end > UINT32_MAX) {
            *why = "ZEROMAP run ends beyond 2^32 pages";
            return -SF_WERR_PROTO;
        }
    }
    return 0;
}

static inline bool is_printable(uint8_t c)
{
    return c >= 0x20 && c < 0x7f;
}

size_t sf_wire_error_encode(uint8_t *out, uint32_t code, const char *message)
{
    size_t n = message ? strnlen(message, SF_WIRE_ERRMSG_MAX) : 0;
    size_t i;

    put_u32(out, code);
    /*
     * Our own decoder rejects non-printable bytes (they end up in logs), so
     * never produce them: a message built from errno text or a path is
     * sanitised here rather than trusted.
     */
    for (i = 0; i < n; i++) {
        uint8_t c = message[i];
        out[4 + i] = is_printable(c) ? c : '?';
    }
    return 4 + n;
}

int sf_wire_error_decode(const uint8_t *in, size_t len, SfMsgError *m,
                         const char **why)
{
    size_t i, n;

    if (check_len(SF_MSG_ERROR, len, why) < 0) {
        return -SF_WERR_PROTO;
    }
    m->code = get_u32(in);
    n = len - 4;
    for (i = 0; i < n; i++) {
        if (!is_printable(in[4 + i])) {
            *why = "ERROR message has non-printable bytes";
            return -SF_WERR_PROTO;
        }
    }
    memcpy(m->message, in + 4, n);
    m->message[n] = '\0';
    return 0;
}

/* Secrets */

bool sf_wire_secret_equal(const uint8_t a[SF_WIRE_SECRET_LEN],
                          const uint8_t b[SF_WIRE_SECRET_LEN])
{
    /*
     * Accumulate the difference over every byte so the time taken does not
     * tell a guessing peer how many leading bytes were right.
     */
    volatile uint8_t diff = 0;
    size_t i;

    for (i = 0; i < SF_WIRE_SECRET_LEN; i++) {
        diff |= a[i] ^ b[i];
    }
    return diff == 0;
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

bool sf_wire_secret_parse(const char *hex, uint8_t out[SF_WIRE_SECRET_LEN])
{
    uint8_t tmp[SF_WIRE_SECRET_LEN];
    size_t i;

    if (!hex || strlen(hex) != 2 * SF_WIRE_SECRET_LEN) {
        return false;
    }
    for (i = 0; i < SF_WIRE_SECRET_LEN; i++) {
        int hi = hex_val(hex[2 * i]);
        int lo = hex_val(hex[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            return false;
        }
        tmp[i] = (uint8_t)(hi << 4 | lo);
    }
    /* Only touch out on success, so a failed parse leaves it unchanged. */
    memcpy(out, tmp, sizeof(tmp));
    return true;
}

void sf_wire_secret_format(const uint8_t s[SF_WIRE_SECRET_LEN],
                           char out[2 * SF_WIRE_SECRET_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < SF_WIRE_SECRET_LEN; i++) {
        out[2 * i] = digits[s[i] >> 4];
        out[2 * i + 1] = digits[s[i] & 0xf];
    }
    out[2 * SF_WIRE_SECRET_LEN] = '\0';
}
