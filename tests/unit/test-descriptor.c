/*
 * Unit tests for the snowflock fork descriptor (sf-descriptor.c).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Corrupt descriptors are built by an independent raw writer that follows
 * the layout comment in sf-descriptor.h and re-seals the sha256, so each
 * case reaches the field check it is aimed at instead of stopping at the
 * checksum.
 */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sf-descriptor.h"

/* Raw descriptor: every length field can disagree with the bytes. */
typedef struct RawBlock {
    uint16_t idlen;
    char id[300];
    uint64_t length;
    uint32_t page_size;
} RawBlock;

typedef struct RawDesc {
    char magic[9];
    uint32_t version;
    uint32_t flags;
    uint64_t fork_id;
    uint64_t created_ns;
    uint32_t page_size;
    uint32_t nblocks;         /* field value */
    uint32_t nblocks_written; /* blocks actually written */
    uint16_t name_len;
    uint16_t vm_len;
    uint64_t devlen;
    size_t dev_written;
    char machine[600];
    size_t machine_written;
    char vm[600];
    size_t vm_written;
    RawBlock blocks[4];
    size_t trailing;
} RawDesc;

static void raw_default(RawDesc *r)
{
    memset(r, 0, sizeof(*r));
    memcpy(r->magic, "SFDESC\r\n", 8);
    r->version = SF_DESC_VERSION;
    r->fork_id = 42;
    r->created_ns = 1700000000123456789ull;
    r->page_size = 4096;
    r->nblocks = r->nblocks_written = 2;
    strcpy(r->machine, "microvm");
    r->name_len = r->machine_written = 7;
    strcpy(r->vm, "parent-vm");
    r->vm_len = r->vm_written = 9;
    r->devlen = r->dev_written = 1000;
    strcpy(r->blocks[0].id, "pc.ram");
    r->blocks[0].idlen = 6;
    r->blocks[0].length = 256ull << 20;
    r->blocks[0].page_size = 4096;
    strcpy(r->blocks[1].id, "/rom@etc/acpi/tables");
    r->blocks[1].idlen = strlen(r->blocks[1].id);
    r->blocks[1].length = 2ull << 20;
    r->blocks[1].page_size = 2 << 20;
}

static void w16(GByteArray *b, uint16_t v)
{
    uint8_t p[2] = { v >> 8, v };

    g_byte_array_append(b, p, 2);
}

static void w32(GByteArray *b, uint32_t v)
{
    uint8_t p[4] = { v >> 24, v >> 16, v >> 8, v };

    g_byte_array_append(b, p, 4);
}

static void w64(GByteArray *b, uint64_t v)
{
    w32(b, v >> 32);
    w32(b, (uint32_t)v);
}

static GByteArray *raw_encode(const RawDesc *r)
{
    GByteArray *b = g_byte_array_new();
    GChecksum *ck = g_checksum_new(G_CHECKSUM_SHA256);
    uint8_t sum[32];
    gsize sl = sizeof(sum);
    uint32_t i;
    size_t j;

    g_byte_array_append(b, (const uint8_t *)r->magic, 8);
    w32(b, r->version);
    w32(b, r->flags);
    w64(b, r->fork_id);
    w64(b, r->created_ns);
    w32(b, r->page_size);
    w32(b, r->nblocks);
    w16(b, r->name_len);
    w16(b, r->vm_len);
    w64(b, r->devlen);
    g_byte_array_append(b, (const uint8_t *)r->machine, r->machine_written);
    g_byte_array_append(b, (const uint8_t *)r->vm, r->vm_written);
    for (i = 0; i < r->nblocks_written; i++) {
        const RawBlock *bl = &r->blocks[i];

        w16(b, bl->idlen);
        g_byte_array_append(b, (const uint8_t *)bl->id,
                            MIN(bl->idlen, sizeof(bl->id)));
        w64(b, bl->length);
        w32(b, bl->page_size);
    }
    for (j = 0; j < r->dev_written; j++) {
        uint8_t c = (uint8_t)(j * 7 + 1);

        g_byte_array_append(b, &c, 1);
    }
    for (j = 0; j < r->trailing; j++) {
        uint8_t c = 0xee;

        g_byte_array_append(b, &c, 1);
    }
    g_checksum_update(ck, b->data, b->len);
    g_checksum_get_digest(ck, sum, &sl);
    g_checksum_free(ck);
    g_byte_array_append(b, sum, sizeof(sum));
    return b;
}

static uint8_t *memdup(const void *p, size_t n)
{
    uint8_t *q = g_malloc(MAX(n, 1));

    memcpy(q, p, n);
    return q;
}

/* A descriptor built through the API, matching raw_default(). */
static SfDescriptor *make_desc(void)
{
    SfDescriptor *d = g_new0(SfDescriptor, 1);
    size_t i;

    d->version = SF_DESC_VERSION;
    d->fork_id = 42;
    d->created_ns = 1700000000123456789ull;
    d->page_size = 4096;
    d->machine = g_strdup("microvm");
    d->vm_name = g_strdup("parent-vm");
    d->nblocks = 2;
    d->blocks = g_new0(SfBlockInfo, 2);
    strcpy(d->blocks[0].idstr, "pc.ram");
    d->blocks[0].length = 256ull << 20;
    d->blocks[0].page_size = 4096;
    strcpy(d->blocks[1].idstr, "/rom@etc/acpi/tables");
    d->blocks[1].length = 2ull << 20;
    d->blocks[1].page_size = 2 << 20;
    d->devstate_len = 1000;
    d->devstate = g_malloc(1000);
    for (i = 0; i < 1000; i++) {
        d->devstate[i] = (uint8_t)(i * 7 + 1);
    }
    return d;
}

static void assert_desc_equal(const SfDescriptor *a, const SfDescriptor *b)
{
    uint32_t i;

    g_assert_cmpuint(a->version, ==, b->version);
    g_assert_cmpuint(a->fork_id, ==, b->fork_id);
    g_assert_cmpuint(a->created_ns, ==, b->created_ns);
    g_assert_cmpuint(a->page_size, ==, b->page_size);
    g_assert_cmpstr(a->machine, ==, b->machine);
    g_assert_cmpstr(a->vm_name, ==, b->vm_name);
    g_assert_cmpuint(a->nblocks, ==, b->nblocks);
    for (i = 0; i < a->nblocks; i++) {
        g_assert_cmpstr(a->blocks[i].idstr, ==, b->blocks[i].idstr);
        g_assert_cmpuint(a->blocks[i].length, ==, b->blocks[i].length);
        g_assert_cmpuint(a->blocks[i].page_size, ==, b->blocks[i].page_size);
    }
    g_assert_cmpmem(a->devstate, a->devstate_len, b->devstate, b->devstate_len);
}

static void test_roundtrip(void)
{
    SfDescriptor *d = make_desc(), *back;
    GByteArray *raw;
    GBytes *enc;
    GError *err = NULL;
    gsize len;
    const uint8_t *p;
    RawDesc r;

    enc = sf_descriptor_encode(d);
    g_assert_nonnull(enc);
    p = g_bytes_get_data(enc, &len);

    /* The independent raw writer produces the very same bytes. */
    raw_default(&r);
    raw = raw_encode(&r);
    g_assert_cmpmem(p, len, raw->data, raw->len);
    g_byte_array_free(raw, TRUE);

    back = sf_descriptor_decode(p, len, &err);
    g_assert_no_error(err);
    assert_desc_equal(d, back);
    sf_descriptor_free(back);

    /* Empty VM name and no device state are legal. */
    g_free(d->vm_name);
    d->vm_name = g_strdup("");
    g_free(d->devstate);
    d->devstate = NULL;
    d->devstate_len = 0;
    g_bytes_unref(enc);
    enc = sf_descriptor_encode(d);
    p = g_bytes_get_data(enc, &len);
    back = sf_descriptor_decode(p, len, &err);
    g_assert_no_error(err);
    g_assert_cmpstr(back->vm_name, ==, "");
    g_assert_cmpuint(back->devstate_len, ==, 0);
    g_assert_null(back->devstate);
    sf_descriptor_free(back);
    g_bytes_unref(enc);
    sf_descriptor_free(d);
}

/* Flip every byte in turn: always a clean error, never a descriptor. */
static void test_flip_every_byte(void)
{
    SfDescriptor *d = make_desc();
    GBytes *enc = sf_descriptor_encode(d);
    gsize len, i;
    uint8_t *buf = g_bytes_unref_to_data(enc, &len);

    for (i = 0; i < len; i++) {
        GError *err = NULL;

        buf[i] ^= 0x20;
        g_assert_null(sf_descriptor_decode(buf, len, &err));
        g_assert_error(err, SF_DESC_ERROR,
                       (i < 8 ? SF_DESC_ERR_MAGIC : SF_DESC_ERR_CHECKSUM));
        g_error_free(err);
        buf[i] ^= 0x20;
    }
    g_free(buf);
    sf_descriptor_free(d);
}

static void test_truncate_every_prefix(void)
{
    SfDescriptor *d = make_desc();
    GBytes *enc = sf_descriptor_encode(d);
    gsize len, i;
    const uint8_t *buf = g_bytes_get_data(enc, &len);

    for (i = 0; i < len; i++) {
        GError *err = NULL;
        /* A heap copy of exactly i bytes lets ASan catch any overread. */
        uint8_t *copy = memdup(buf, i);

        g_assert_null(sf_descriptor_decode(copy, i, &err));
        g_assert_nonnull(err);
        g_assert_true(err->domain == SF_DESC_ERROR);
        g_assert_true(err->code == SF_DESC_ERR_TRUNCATED ||
                      err->code == SF_DESC_ERR_CHECKSUM);
        g_error_free(err);
        g_free(copy);
    }
    g_bytes_unref(enc);
    sf_descriptor_free(d);
}

/* Semantic corruption with a valid checksum. */
typedef struct CorruptCase {
    const char *name;
    void (*mutate)(RawDesc *r);
    int code; /* 0: must decode */
} CorruptCase;

static void m_none(RawDesc *r)
{
}
static void m_version(RawDesc *r)
{
    r->version = 2;
}
static void m_version0(RawDesc *r)
{
    r->version = 0;
}
static void m_flags(RawDesc *r)
{
    r->flags = 1;
}
static void m_page0(RawDesc *r)
{
    r->page_size = 0;
}
static void m_page512(RawDesc *r)
{
    r->page_size = 512;
}
static void m_page4095(RawDesc *r)
{
    r->page_size = 4095;
}
static void m_page_not_pow2(RawDesc *r)
{
    r->page_size = 12288;
}
static void m_page_2g(RawDesc *r)
{
    r->page_size = 0x80000000u;
}
static void m_page_1g(RawDesc *r)
{
    r->page_size = 1u << 30;
}
static void m_nblocks0(RawDesc *r)
{
    r->nblocks = r->nblocks_written = 0;
}
static void m_nblocks_max(RawDesc *r)
{
    r->nblocks = SF_DESC_MAX_BLOCKS + 1;
}
static void m_nblocks_huge(RawDesc *r)
{
    r->nblocks = 0xffffffffu;
}
static void m_nblocks_more(RawDesc *r)
{
    /* No device state, so the missing block runs into the checksum. */
    r->nblocks = 3;
    r->devlen = r->dev_written = 0;
}
static void m_nblocks_less(RawDesc *r)
{
    r->nblocks = 1;
}
static void m_name0(RawDesc *r)
{
    r->name_len = r->machine_written = 0;
}

static void m_name256(RawDesc *r)
{
    memset(r->machine, 'm', 256);
    r->name_len = r->machine_written = 256;
}

static void m_name255(RawDesc *r)
{
    memset(r->machine, 'm', 255);
    r->name_len = r->machine_written = 255;
}

static void m_name_huge(RawDesc *r)
{
    r->name_len = 0xffff;
}
static void m_name_past_end(RawDesc *r)
{
    r->name_len = 255;
    r->devlen = r->dev_written = 0;
}
static void m_name_nul(RawDesc *r)
{
    r->machine[3] = '\0';
}
static void m_vm_nul(RawDesc *r)
{
    r->vm[0] = '\0';
}

static void m_vm300(RawDesc *r)
{
    memset(r->vm, 'v', 300);
    r->vm_len = r->vm_written = 300;
}

static void m_dev_max(RawDesc *r)
{
    r->devlen = SF_DESC_MAX_DEVSTATE + 1ull;
}
static void m_dev_huge(RawDesc *r)
{
    r->devlen = ~0ull;
}
static void m_dev_past_end(RawDesc *r)
{
    r->devlen = 1 << 20;
}
static void m_dev_short(RawDesc *r)
{
    r->devlen = 999;
}
static void m_trailing(RawDesc *r)
{
    r->trailing = 1;
}
static void m_trailing_many(RawDesc *r)
{
    r->trailing = 4096;
}
static void m_idlen0(RawDesc *r)
{
    r->blocks[0].idlen = 0;
}

static void m_idlen256(RawDesc *r)
{
    memset(r->blocks[1].id, 'i', 256);
    r->blocks[1].idlen = 256;
}

static void m_idlen255(RawDesc *r)
{
    memset(r->blocks[1].id, 'i', 255);
    r->blocks[1].idlen = 255;
}

static void m_idlen_huge(RawDesc *r)
{
    r->blocks[0].idlen = 0xffff;
}
static void m_id_nul(RawDesc *r)
{
    r->blocks[0].id[2] = '\0';
}

static void m_id_dup(RawDesc *r)
{
    strcpy(r->blocks[1].id, r->blocks[0].id);
    r->blocks[1].idlen = r->blocks[0].idlen;
}

static void m_blen0(RawDesc *r)
{
    r->blocks[0].length = 0;
}
static void m_blen_odd(RawDesc *r)
{
    r->blocks[0].length = 4096 * 3 + 1;
}
static void m_blen_vs_huge(RawDesc *r)
{
    r->blocks[1].length = 4096 * 3;
}
static void m_blen_huge(RawDesc *r)
{
    r->blocks[0].length = 1ull << 62;
}
static void m_bpage_bad(RawDesc *r)
{
    r->blocks[0].page_size = 8000;
}
static void m_bpage0(RawDesc *r)
{
    r->blocks[0].page_size = 0;
}

static const CorruptCase corrupt_cases[] = {
    { "control", m_none, 0 },
    { "version-2", m_version, SF_DESC_ERR_VERSION },
    { "version-0", m_version0, SF_DESC_ERR_VERSION },
    { "flags", m_flags, SF_DESC_ERR_INVALID },
    { "page-size-0", m_page0, SF_DESC_ERR_INVALID },
    { "page-size-512", m_page512, SF_DESC_ERR_INVALID },
    { "page-size-4095", m_page4095, SF_DESC_ERR_INVALID },
    { "page-size-not-pow2", m_page_not_pow2, SF_DESC_ERR_INVALID },
    { "page-size-2g", m_page_2g, SF_DESC_ERR_INVALID },
    { "page-size-1g", m_page_1g, 0 },
    { "nblocks-0", m_nblocks0, SF_DESC_ERR_INVALID },
    { "nblocks-over-max", m_nblocks_max, SF_DESC_ERR_INVALID },
    { "nblocks-huge", m_nblocks_huge, SF_DESC_ERR_INVALID },
    { "nblocks-more-than-written", m_nblocks_more, SF_DESC_ERR_TRUNCATED },
    { "nblocks-less-than-written", m_nblocks_less, SF_DESC_ERR_TRAILING },
    { "machine-empty", m_name0, SF_DESC_ERR_INVALID },
    { "machine-255", m_name255, 0 },
    { "machine-256", m_name256, SF_DESC_ERR_INVALID },
    { "machine-len-huge", m_name_huge, SF_DESC_ERR_INVALID },
    { "machine-past-end", m_name_past_end, SF_DESC_ERR_TRUNCATED },
    { "machine-nul", m_name_nul, SF_DESC_ERR_INVALID },
    { "vm-name-nul", m_vm_nul, SF_DESC_ERR_INVALID },
    { "vm-name-300", m_vm300, SF_DESC_ERR_INVALID },
    { "devlen-over-max", m_dev_max, SF_DESC_ERR_INVALID },
    { "devlen-huge", m_dev_huge, SF_DESC_ERR_INVALID },
    { "devlen-past-end", m_dev_past_end, SF_DESC_ERR_TRUNCATED },
    { "devlen-short", m_dev_short, SF_DESC_ERR_TRAILING },
    { "trailing-1", m_trailing, SF_DESC_ERR_TRAILING },
    { "trailing-4096", m_trailing_many, SF_DESC_ERR_TRAILING },
    { "idlen-0", m_idlen0, SF_DESC_ERR_INVALID },
    { "idlen-255", m_idlen255, 0 },
    { "idlen-256", m_idlen256, SF_DESC_ERR_INVALID },
    { "idlen-huge", m_idlen_huge, SF_DESC_ERR_INVALID },
    { "idstr-nul", m_id_nul, SF_DESC_ERR_INVALID },
    { "idstr-duplicate", m_id_dup, SF_DESC_ERR_INVALID },
    { "block-length-0", m_blen0, SF_DESC_ERR_INVALID },
    { "block-length-unaligned", m_blen_odd, SF_DESC_ERR_INVALID },
    { "block-length-vs-hugepage", m_blen_vs_huge, SF_DESC_ERR_INVALID },
    { "block-length-huge", m_blen_huge, SF_DESC_ERR_INVALID },
    { "block-page-size-bad", m_bpage_bad, SF_DESC_ERR_INVALID },
    { "block-page-size-0", m_bpage0, SF_DESC_ERR_INVALID },
};

static void test_corrupt_case(gconstpointer data)
{
    const CorruptCase *c = data;
    RawDesc r;
    GByteArray *raw;
    GError *err = NULL;
    SfDescriptor *d;
    uint8_t *copy;

    raw_default(&r);
    c->mutate(&r);
    raw = raw_encode(&r);
    /* Exact-size heap copy: an overread is an ASan error. */
    copy = memdup(raw->data, raw->len);
    d = sf_descriptor_decode(copy, raw->len, &err);
    if (c->code == 0) {
        g_assert_no_error(err);
        g_assert_nonnull(d);
        /* What decodes must re-encode to the same bytes. */
        {
            GBytes *again = sf_descriptor_encode(d);
            gsize len;
            const uint8_t *p = g_bytes_get_data(again, &len);

            g_assert_cmpmem(p, len, raw->data, raw->len);
            g_bytes_unref(again);
        }
        sf_descriptor_free(d);
    } else {
        g_assert_null(d);
        g_assert_error(err, SF_DESC_ERROR, c->code);
        g_test_message("%s: %s", c->name, err->message);
        g_error_free(err);
    }
    g_free(copy);
    g_byte_array_free(raw, TRUE);
}

/* Invalid descriptors are refused on the way out too. */
static void test_encode_refuses_invalid(void)
{
    SfDescriptor *d = make_desc();
    char *dir = g_dir_make_tmp("sfdesc-XXXXXX", NULL);
    char *path = g_build_filename(dir, "bad.desc", NULL);
    GError *err = NULL;

    d->blocks[1].length = 12345;
    g_assert_null(sf_descriptor_encode(d));
    g_assert_cmpint(sf_descriptor_write(path, d, &err), <, 0);
    g_assert_error(err, SF_DESC_ERROR, SF_DESC_ERR_INVALID);
    g_clear_error(&err);
    g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));

    d->blocks[1].length = 2ull << 20;
    d->page_size = 3000;
    g_assert_null(sf_descriptor_encode(d));
    d->page_size = 4096;
    d->nblocks = SF_DESC_MAX_BLOCKS + 1;
    g_assert_null(sf_descriptor_encode(d));
    d->nblocks = 2;
    g_assert_nonnull(d->machine);
    d->machine[0] = '\0';
    g_assert_null(sf_descriptor_encode(d));

    g_rmdir(dir);
    g_free(path);
    g_free(dir);
    sf_descriptor_free(d);
}

static void test_file_roundtrip(void)
{
    SfDescriptor *d = make_desc(), *back;
    char *dir = g_dir_make_tmp("sfdesc-XXXXXX", NULL);
    char *path = g_build_filename(dir, "fork.desc", NULL);
    char *tmp = g_strdup_printf("%s.tmp", path);
    GError *err = NULL;
    struct stat st;
    GDir *gd;
    int fd, n = 0;

    /* Replace an existing world-readable file: the result is 0600. */
    fd = open(path, O_WRONLY | O_CREAT, 0644);
    g_assert_cmpint(fd, >=, 0);
    fchmod(fd, 0644);
    close(fd);

    g_assert_cmpint(sf_descriptor_write(path, d, &err), ==, 0);
    g_assert_no_error(err);
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_mode & 0777, ==, 0600);
    g_assert_false(g_file_test(tmp, G_FILE_TEST_EXISTS));
    gd = g_dir_open(dir, 0, NULL);
    while (g_dir_read_name(gd)) {
        n++;
    }
    g_dir_close(gd);
    g_assert_cmpint(n, ==, 1);

    back = sf_descriptor_read(path, &err);
    g_assert_no_error(err);
    assert_desc_equal(d, back);
    sf_descriptor_free(back);

    /* A stale tmp from a crashed writer does not matter either. */
    g_assert_true(g_file_set_contents(tmp, "junk", 4, NULL));
    g_chmod(tmp, 0666);
    g_assert_cmpint(sf_descriptor_write(path, d, &err), ==, 0);
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_mode & 0777, ==, 0600);
    g_assert_false(g_file_test(tmp, G_FILE_TEST_EXISTS));

    g_unlink(path);
    g_rmdir(dir);
    g_free(tmp);
    g_free(path);
    g_free(dir);
    sf_descriptor_free(d);
}

static void test_read_errors(void)
{
    char *dir = g_dir_make_tmp("sfdesc-XXXXXX", NULL);
    char *missing = g_build_filename(dir, "missing.desc", NULL);
    char *big = g_build_filename(dir, "big.desc", NULL);
    char *empty = g_build_filename(dir, "empty.desc", NULL);
    GError *err = NULL;
    int fd;

    g_assert_null(sf_descriptor_read(missing, &err));
    g_assert_error(err, SF_DESC_ERROR, SF_DESC_ERR_IO);
    g_clear_error(&err);

    g_assert_null(sf_descriptor_read(dir, &err));
    g_assert_error(err, SF_DESC_ERROR, SF_DESC_ERR_IO);
    g_clear_error(&err);

    g_assert_true(g_file_set_contents(empty, "", 0, NULL));
    g_assert_null(sf_descriptor_read(empty, &err));
    g_assert_error(err, SF_DESC_ERROR, SF_DESC_ERR_TRUNCATED);
    g_clear_error(&err);

    /* A sparse 1 GiB file is refused from its size, before reading. */
    fd = open(big, O_WRONLY | O_CREAT, 0600);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, 1ll << 30), ==, 0);
    close(fd);
    g_assert_null(sf_descriptor_read(big, &err));
    g_assert_error(err, SF_DESC_ERROR, SF_DESC_ERR_INVALID);
    g_clear_error(&err);

    g_unlink(big);
    g_unlink(empty);
    g_rmdir(dir);
    g_free(missing);
    g_free(big);
    g_free(empty);
    g_free(dir);
}

int main(int argc, char **argv)
{
    size_t i;

    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/descriptor/roundtrip", test_roundtrip);
    g_test_add_func("/descriptor/flip-every-byte", test_flip_every_byte);
    g_test_add_func("/descriptor/truncate-every-prefix",
                    test_truncate_every_prefix);
    for (i = 0; i < G_N_ELEMENTS(corrupt_cases); i++) {
        char *path =
            g_strdup_printf("/descriptor/field/%s", corrupt_cases[i].name);

        g_test_add_data_func(path, &corrupt_cases[i], test_corrupt_case);
        g_free(path);
    }
    g_test_add_func("/descriptor/encode-refuses-invalid",
                    test_encode_refuses_invalid);
    g_test_add_func("/descriptor/file/roundtrip", test_file_roundtrip);
    g_test_add_func("/descriptor/file/errors", test_read_errors);
    return g_test_run();
}
