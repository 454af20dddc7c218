/*
 * snowflock fork descriptor: encode, decode, atomic write.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Decoding order: magic (is this a descriptor at all), minimum size, the
 * trailing sha256 (so a flipped byte anywhere reads as corruption, not as
 * a strange field value), then every field in file order, each bounded by
 * its limit and by the bytes that remain before anything is allocated
 * from it, and finally no bytes left over.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sf-descriptor.h"

#define SF_DESC_MAGIC     "SFDESC\r\n"
#define SF_DESC_MAGIC_LEN 8
#define SF_DESC_SHA_LEN   32
/* magic .. devlen */
#define SF_DESC_FIXED_LEN (8 + 4 + 4 + 8 + 8 + 4 + 4 + 2 + 2 + 8)
#define SF_DESC_NAME_MAX  255
#define SF_DESC_IDLEN_MAX (SF_BLOCK_IDSTR_MAX - 1)
#define SF_DESC_PAGE_MIN  4096u
#define SF_DESC_PAGE_MAX  (1u << 30)
/* No RAM block is bigger than this (64 TiB); also keeps sums far from
 * overflowing. */
#define SF_DESC_BLOCK_MAX (1ull << 46)
/* Largest well-formed descriptor; bigger files are refused unread. */
#define SF_DESC_FILE_MAX                                                       \
    ((uint64_t)SF_DESC_FIXED_LEN + 2 * SF_DESC_NAME_MAX +                      \
     SF_DESC_MAX_BLOCKS * (2 + SF_DESC_IDLEN_MAX + 8 + 4) +                    \
     SF_DESC_MAX_DEVSTATE + SF_DESC_SHA_LEN)

/* G_DEFINE_QUARK stringifies its first argument as written. */
/* clang-format off */
G_DEFINE_QUARK(sf-desc-error-quark, sf_desc_error)
/* clang-format on */

/* Reader: a cursor that fails instead of running past the end. */
typedef struct DescReader {
    const uint8_t *p;
    size_t left;
} DescReader;

static bool rd_bytes(DescReader *r, const uint8_t **out, size_t n)
{
    if (n > r->left) {
        return false;
    }
    *out = r->p;
    r->p += n;
    r->left -= n;
    return true;
}

static bool rd_u16(DescReader *r, uint16_t *v)
{
    const uint8_t *p;

    if (!rd_bytes(r, &p, 2)) {
        return false;
    }
    *v = (uint16_t)(p[0] << 8 | p[1]);
    return true;
}

static bool rd_u32(DescReader *r, uint32_t *v)
{
    const uint8_t *p;

    if (!rd_bytes(r, &p, 4)) {
        return false;
    }
    *v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
    return true;
}

static bool rd_u64(DescReader *r, uint64_t *v)
{
    uint32_t hi, lo;

    if (!rd_u32(r, &hi) || !rd_u32(r, &lo)) {
        return false;
    }
    *v = (uint64_t)hi << 32 | lo;
    return true;
}

static void wr_u16(GByteArray *b, uint16_t v)
{
    uint8_t p[2] = { v >> 8, v };

    g_byte_array_append(b, p, sizeof(p));
}

static void wr_u32(GByteArray *b, uint32_t v)
{
    uint8_t p[4] = { v >> 24, v >> 16, v >> 8, v };

    g_byte_array_append(b, p, sizeof(p));
}

static void wr_u64(GByteArray *b, uint64_t v)
{
    wr_u32(b, v >> 32);
    wr_u32(b, (uint32_t)v);
}

static bool page_size_ok(uint32_t ps)
{
    return ps >= SF_DESC_PAGE_MIN && ps <= SF_DESC_PAGE_MAX &&
           (ps & (ps - 1)) == 0;
}

static bool has_nul(const void *p, size_t n)
{
    return memchr(p, '\0', n) != NULL;
}

static void sha256(const uint8_t *buf, size_t len, uint8_t out[SF_DESC_SHA_LEN])
{
    GChecksum *ck = g_checksum_new(G_CHECKSUM_SHA256);
    gsize outlen = SF_DESC_SHA_LEN;

    g_checksum_update(ck, buf, len);
    g_checksum_get_digest(ck, out, &outlen);
    g_checksum_free(ck);
}

/*
 * Field rules shared by encode (refuse to write what we would not read)
 * and decode.
 */
static int check_block(uint32_t i, const char *idstr, size_t idlen,
                       uint64_t length, uint32_t page_size, GError **err)
{
    if (idlen == 0 || idlen > SF_DESC_IDLEN_MAX || has_nul(idstr, idlen)) {
        g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_INVALID,
                    "block %u: idstr must be 1..%d bytes without NUL", i,
                    SF_DESC_IDLEN_MAX);
        return -1;
    }
    if (!page_size_ok(page_size)) {
        g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_INVALID,
                    "block %u (%.*s): bad page size %u", i, (int)idlen, idstr,
                    page_size);
        return -1;
    }
    if (length == 0 || length > SF_DESC_BLOCK_MAX || length % page_size) {
        g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_INVALID,
                    "block %u (%.*s): bad length %" G_GUINT64_FORMAT
                    " (want a non-zero multiple of its page size %u, at"
                    " most 64 TiB)",
                    i, (int)idlen, idstr, length, page_size);
        return -1;
    }
    return 0;
}

static int check_header(uint32_t page_size, uint32_t nblocks, size_t name_len,
                        size_t vm_len, uint64_t devlen, GError **err)
{
    if (!page_size_ok(page_size)) {
        g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_INVALID,
                    "bad page size %u (want a power of two in 4 KiB..1 GiB)",
                    page_size);
        return -1;
    }
    if (nblocks == 0 || nblocks > SF_DESC_MAX_BLOCKS) {
        g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_INVALID,
                    "%u RAM blocks (want 1..%d)", nblocks, SF_DESC_MAX_BLOCKS);
        return -1;
    }
    if (name_len == 0 || name_len > SF_DESC_NAME_MAX) {
        g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_INVALID,
                    "machine type name of %zu bytes (want 1..%d)", name_len,
                    SF_DESC_NAME_MAX);
        return -1;
    }
    if (vm_len > SF_DESC_NAME_MAX) {
        g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_INVALID,
                    "VM name of %zu bytes (want at most %d)", vm_len,
                    SF_DESC_NAME_MAX);
        return -1;
    }
    if (devlen > SF_DESC_MAX_DEVSTATE) {
        g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_INVALID,
                    "device state of %" G_GUINT64_FORMAT " bytes exceeds %u",
                    devlen, SF_DESC_MAX_DEVSTATE);
        return -1;
    }
    return 0;
}

int sf_descriptor_check(const SfDescriptor *d, GError **err)
{
    uint32_t i;

    /* 0 means "current": writers need not fill it in. */
    if (d->version != 0 && d->version != SF_DESC_VERSION) {
        g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_VERSION,
                    "descriptor version %u (this build knows %d)", d->version,
                    SF_DESC_VERSION);
        return -1;
    }
    if (!d->machine || (d->nblocks && !d->blocks) ||
        (d->devstate_len && !d->devstate)) {
        g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_INVALID,
                    "descriptor is missing a field");
        return -1;
    }
    if (check_header(d->page_size, d->nblocks, strlen(d->machine),
                     d->vm_name ? strlen(d->vm_name) : 0, d->devstate_len,
                     err) < 0) {
        return -1;
    }
    for (i = 0; i < d->nblocks; i++) {
        const SfBlockInfo *b = &d->blocks[i];

        if (check_block(i, b->idstr, strnlen(b->idstr, SF_BLOCK_IDSTR_MAX),
                        b->length, b->page_size, err) < 0) {
            return -1;
        }
    }
    return 0;
}

GBytes *sf_descriptor_encode(const SfDescriptor *d)
{
    GByteArray *b;
    uint8_t sum[SF_DESC_SHA_LEN];
    size_t name_len, vm_len;
    uint32_t i;

    if (sf_descriptor_check(d, NULL) < 0) {
        return NULL;
    }
    name_len = strlen(d->machine);
    vm_len = d->vm_name ? strlen(d->vm_name) : 0;

    b = g_byte_array_sized_new(SF_DESC_FIXED_LEN + d->devstate_len + 4096);
    g_byte_array_append(b, (const uint8_t *)SF_DESC_MAGIC, SF_DESC_MAGIC_LEN);
    wr_u32(b, SF_DESC_VERSION);
    wr_u32(b, 0);
    wr_u64(b, d->fork_id);
    wr_u64(b, d->created_ns);
    wr_u32(b, d->page_size);
    wr_u32(b, d->nblocks);
    wr_u16(b, name_len);
    wr_u16(b, vm_len);
    wr_u64(b, d->devstate_len);
    g_byte_array_append(b, (const uint8_t *)d->machine, name_len);
    if (vm_len) {
        g_byte_array_append(b, (const uint8_t *)d->vm_name, vm_len);
    }
    for (i = 0; i < d->nblocks; i++) {
        const SfBlockInfo *bl = &d->blocks[i];
        size_t idlen = strnlen(bl->idstr, SF_BLOCK_IDSTR_MAX);

        wr_u16(b, idlen);
        g_byte_array_append(b, (const uint8_t *)bl->idstr, idlen);
        wr_u64(b, bl->length);
        wr_u32(b, bl->page_size);
    }
    if (d->devstate_len) {
        g_byte_array_append(b, d->devstate, d->devstate_len);
    }
    sha256(b->data, b->len, sum);
    g_byte_array_append(b, sum, sizeof(sum));
    return g_byte_array_free_to_bytes(b);
}

static SfDescriptor *decode_fail(SfDescriptor *d, GError **err, int code,
                                 const char *what)
{
    g_set_error(err, SF_DESC_ERROR, code, "%s", what);
    sf_descriptor_free(d);
    return NULL;
}

SfDescriptor *sf_descriptor_decode(const uint8_t *buf, size_t len, GError **err)
{
    DescReader r;
    SfDescriptor *d = NULL;
    uint8_t sum[SF_DESC_SHA_LEN];
    uint32_t version, flags, page_size, nblocks, i;
    uint64_t fork_id, created_ns, devlen;
    uint16_t name_len, vm_len;
    const uint8_t *p;

    if (len < SF_DESC_MAGIC_LEN) {
        return decode_fail(NULL, err, SF_DESC_ERR_TRUNCATED,
                           "too short to be a snowflock fork descriptor");
    }
    if (memcmp(buf, SF_DESC_MAGIC, SF_DESC_MAGIC_LEN)) {
        return decode_fail(NULL, err, SF_DESC_ERR_MAGIC,
                           "not a snowflock fork descriptor (bad magic)");
    }
    if (len < SF_DESC_FIXED_LEN + SF_DESC_SHA_LEN) {
        return decode_fail(NULL, err, SF_DESC_ERR_TRUNCATED,
                           "descriptor truncated (shorter than its header)");
    }
    sha256(buf, len - SF_DESC_SHA_LEN, sum);
    if (memcmp(sum, buf + len - SF_DESC_SHA_LEN, SF_DESC_SHA_LEN)) {
        return decode_fail(NULL, err, SF_DESC_ERR_CHECKSUM,
                           "descriptor checksum mismatch (corrupt or "
                           "truncated)");
    }

    /* The checksum is good; now validate what it covers, field by field. */
    r.p = buf + SF_DESC_MAGIC_LEN;
    r.left = len - SF_DESC_MAGIC_LEN - SF_DESC_SHA_LEN;
    if (!rd_u32(&r, &version) || !rd_u32(&r, &flags) || !rd_u64(&r, &fork_id) ||
        !rd_u64(&r, &created_ns) || !rd_u32(&r, &page_size) ||
        !rd_u32(&r, &nblocks) || !rd_u16(&r, &name_len) ||
        !rd_u16(&r, &vm_len) || !rd_u64(&r, &devlen)) {
        return decode_fail(NULL, err, SF_DESC_ERR_TRUNCATED,
                           "descriptor header truncated");
    }
    if (version != SF_DESC_VERSION) {
        g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_VERSION,
                    "descriptor version %u (this build knows %d)", version,
                    SF_DESC_VERSION);
        return NULL;
    }
    if (flags != 0) {
        g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_INVALID,
                    "unknown descriptor flags 0x%x", flags);
        return NULL;
    }
    if (check_header(page_size, nblocks, name_len, vm_len, devlen, err) < 0) {
        return NULL;
    }

    d = g_new0(SfDescriptor, 1);
    d->version = version;
    d->fork_id = fork_id;
    d->created_ns = created_ns;
    d->page_size = page_size;

    if (!rd_bytes(&r, &p, name_len)) {
        return decode_fail(d, err, SF_DESC_ERR_TRUNCATED,
                           "descriptor truncated in machine type");
    }
    if (has_nul(p, name_len)) {
        return decode_fail(d, err, SF_DESC_ERR_INVALID,
                           "machine type contains a NUL byte");
    }
    d->machine = g_strndup((const char *)p, name_len);
    if (!rd_bytes(&r, &p, vm_len)) {
        return decode_fail(d, err, SF_DESC_ERR_TRUNCATED,
                           "descriptor truncated in VM name");
    }
    if (has_nul(p, vm_len)) {
        return decode_fail(d, err, SF_DESC_ERR_INVALID,
                           "VM name contains a NUL byte");
    }
    d->vm_name = g_strndup((const char *)p, vm_len);

    /* nblocks <= SF_DESC_MAX_BLOCKS was checked above. */
    d->nblocks = nblocks;
    d->blocks = g_new0(SfBlockInfo, nblocks);
    for (i = 0; i < nblocks; i++) {
        SfBlockInfo *b = &d->blocks[i];
        uint16_t idlen;
        uint32_t j;

        if (!rd_u16(&r, &idlen)) {
            return decode_fail(d, err, SF_DESC_ERR_TRUNCATED,
                               "descriptor truncated in RAM block table");
        }
        /* Bound idlen before trusting it to size a read. */
        if (idlen == 0 || idlen > SF_DESC_IDLEN_MAX) {
            g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_INVALID,
                        "block %u: idstr of %u bytes (want 1..%d)", i, idlen,
                        SF_DESC_IDLEN_MAX);
            sf_descriptor_free(d);
            return NULL;
        }
        if (!rd_bytes(&r, &p, idlen) || !rd_u64(&r, &b->length) ||
            !rd_u32(&r, &b->page_size)) {
            return decode_fail(d, err, SF_DESC_ERR_TRUNCATED,
                               "descriptor truncated in RAM block table");
        }
        if (check_block(i, (const char *)p, idlen, b->length, b->page_size,
                        err) < 0) {
            sf_descriptor_free(d);
            return NULL;
        }
        memcpy(b->idstr, p, idlen);
        b->idstr[idlen] = '\0';
        /* Clones find blocks by idstr: two with one name is ambiguous. */
        for (j = 0; j < i; j++) {
            if (!strcmp(d->blocks[j].idstr, b->idstr)) {
                g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_INVALID,
                            "RAM block '%s' listed twice", b->idstr);
                sf_descriptor_free(d);
                return NULL;
            }
        }
    }

    if (!rd_bytes(&r, &p, devlen)) {
        return decode_fail(d, err, SF_DESC_ERR_TRUNCATED,
                           "descriptor truncated in device state");
    }
    if (r.left) {
        g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_TRAILING,
                    "%zu bytes of trailing garbage after device state", r.left);
        sf_descriptor_free(d);
        return NULL;
    }
    d->devstate_len = devlen;
    if (devlen) {
        d->devstate = g_malloc(devlen);
        memcpy(d->devstate, p, devlen);
    }
    return d;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -errno;
        }
        p += n;
        len -= n;
    }
    return 0;
}

int sf_descriptor_write(const char *path, const SfDescriptor *d, GError **err)
{
    GBytes *bytes;
    char *tmp = NULL;
    char *dir;
    const uint8_t *data;
    gsize len;
    int fd, dfd, ret = 0;

    if (sf_descriptor_check(d, err) < 0) {
        return -EINVAL;
    }
    bytes = sf_descriptor_encode(d);
    data = g_bytes_get_data(bytes, &len);

    tmp = g_strdup_printf("%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        ret = -errno;
        goto fail;
    }
    /* O_CREAT's mode does not apply to a leftover tmp file: force it. */
    if (fchmod(fd, 0600) < 0 || (ret = write_all(fd, data, len)) < 0 ||
        fsync(fd) < 0) {
        ret = ret < 0 ? ret : -errno;
        close(fd);
        unlink(tmp);
        goto fail;
    }
    if (close(fd) < 0 || rename(tmp, path) < 0) {
        ret = -errno;
        unlink(tmp);
        goto fail;
    }
    /* Make the rename itself durable; failing that is not fatal. */
    dir = g_path_get_dirname(path);
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    g_free(dir);
    g_free(tmp);
    g_bytes_unref(bytes);
    return 0;

fail:
    g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_IO,
                "cannot write descriptor %s: %s", path, g_strerror(-ret));
    g_free(tmp);
    g_bytes_unref(bytes);
    return ret;
}

SfDescriptor *sf_descriptor_read(const char *path, GError **err)
{
    struct stat st;
    uint8_t *buf;
    size_t off = 0;
    SfDescriptor *d;
    int fd;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_IO,
                    "cannot open descriptor %s: %s", path, g_strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_IO,
                    "descriptor %s is not a regular file", path);
        close(fd);
        return NULL;
    }
    /* Refuse before allocating: no valid descriptor is this big. */
    if ((uint64_t)st.st_size > SF_DESC_FILE_MAX) {
        g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_INVALID,
                    "descriptor %s is too large (%" G_GUINT64_FORMAT " bytes)",
                    path, (guint64)st.st_size);
        close(fd);
        return NULL;
    }
    buf = g_malloc(MAX(st.st_size, 1));
    while (off < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + off, st.st_size - off);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            g_set_error(err, SF_DESC_ERROR, SF_DESC_ERR_IO,
                        "cannot read descriptor %s: %s", path,
                        n < 0 ? g_strerror(errno) : "file shrank");
            g_free(buf);
            close(fd);
            return NULL;
        }
        off += n;
    }
    close(fd);
    d = sf_descriptor_decode(buf, off, err);
    if (!d) {
        g_prefix_error(err, "%s: ", path);
    }
    g_free(buf);
    return d;
}

void sf_descriptor_free(SfDescriptor *d)
{
    if (!d) {
        return;
    }
    g_free(d->machine);
    g_free(d->vm_name);
    g_free(d->blocks);
    g_free(d->devstate);
    g_free(d);
}
