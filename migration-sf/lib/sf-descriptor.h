/*
 * snowflock fork descriptor: what travels to a clone up front.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * CPU and device state (QEMU's device-only migration stream, no RAM), the
 * RAM block table the page server addresses pages by, and what a clone
 * must match (machine type).  File layout, all integers big-endian:
 *
 *   magic      8   "SFDESC\r\n"
 *   version    4   SF_DESC_VERSION
 *   flags      4   0
 *   fork_id    8
 *   created_ns 8   CLOCK_REALTIME at the fork instant
 *   page_size  4
 *   nblocks    4   <= SF_DESC_MAX_BLOCKS
 *   name_len   2   machine type, <= 255 bytes
 *   vm_len     2   VM name, <= 255 bytes
 *   devlen     8   device state bytes, <= SF_DESC_MAX_DEVSTATE
 *   machine    name_len bytes
 *   vm_name    vm_len bytes
 *   blocks     nblocks * { idlen:2 idstr:idlen length:8 page_size:4 }
 *   devstate   devlen bytes
 *   sha256     32  over everything above
 *
 * Written to PATH.tmp, fsync'ed and renamed, so a descriptor that exists is
 * whole (an interrupted fork leaves no half descriptor that looks valid).
 * Every field is validated on read before anything is allocated from it.
 */
#ifndef SF_DESCRIPTOR_H
#define SF_DESCRIPTOR_H

#include <glib.h>
#include <stdint.h>

#include "sf-pagesrc.h"

#define SF_DESC_VERSION      1
#define SF_DESC_MAX_BLOCKS   256
#define SF_DESC_MAX_DEVSTATE (256u * 1024 * 1024)

#define SF_DESC_ERROR (sf_desc_error_quark())
GQuark sf_desc_error_quark(void);

/* GError codes in SF_DESC_ERROR */
typedef enum SfDescErrorCode {
    SF_DESC_ERR_IO = 1,    /* open/read/write failed */
    SF_DESC_ERR_MAGIC,     /* not a descriptor at all */
    SF_DESC_ERR_TRUNCATED, /* shorter than its fields say */
    SF_DESC_ERR_CHECKSUM,  /* sha256 mismatch: corrupt */
    SF_DESC_ERR_VERSION,   /* unknown descriptor version */
    SF_DESC_ERR_INVALID,   /* a field outside its bounds */
    SF_DESC_ERR_TRAILING,  /* bytes after the device state */
} SfDescErrorCode;

typedef struct SfDescriptor {
    uint32_t version;
    uint64_t fork_id;
    uint64_t created_ns;
    uint32_t page_size;
    char *machine; /* machine type name, e.g. "microvm" */
    char *vm_name; /* -name of the parent, may be "" */
    uint32_t nblocks;
    SfBlockInfo *blocks;
    uint8_t *devstate;
    uint64_t devstate_len;
} SfDescriptor;

/*
 * Whether d may be written: every field within the bounds the format
 * (and so every reader) accepts.  0, or -1 with err set.  vm-fork checks
 * its descriptor-to-be with it before it pauses the guest.
 */
int sf_descriptor_check(const SfDescriptor *d, GError **err);
/* Encode to a buffer (for tests and fuzzers) and decode from one. */
GBytes *sf_descriptor_encode(const SfDescriptor *d);
SfDescriptor *sf_descriptor_decode(const uint8_t *buf, size_t len,
                                   GError **err);
/* Atomic write (tmp + fsync + rename, mode 0600) and read. */
int sf_descriptor_write(const char *path, const SfDescriptor *d, GError **err);
SfDescriptor *sf_descriptor_read(const char *path, GError **err);
void sf_descriptor_free(SfDescriptor *d);

#endif
