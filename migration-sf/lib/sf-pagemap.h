/*
 * snowflock: which pages of this process's memory were never populated.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Read from /proc/self/pagemap (one 64-bit entry per page; bit 63
 * present, bit 62 swapped).  In the page server, fork()ed from the
 * parent QEMU, private anonymous guest RAM keeps the parent's page
 * tables, so a page that is neither present nor swapped here was never
 * written since it was last given back to the kernel: guest memory never
 * touched, or discarded because the guest's free page reporting said it
 * was free.  Either way it reads as zero.  Not true of file or shared
 * mappings, whose pages may be in the page cache without being mapped:
 * the caller only asks about private anonymous memory.  A page mapped to
 * the kernel's (huge) zero page, as a read of never-written memory leaves
 * it, counts as never populated too, when this process may see frame
 * numbers (root); otherwise it is served, as zero, page by page.
 */
#ifndef SF_PAGEMAP_H
#define SF_PAGEMAP_H

#include <stdint.h>

/*
 * For each of the npages host pages from addr (page aligned) that is
 * neither present nor swapped, or maps a zero page, set its bit in bits (bit i
 * of word i / 64; other bits are left alone).  Returns how many were set, or
 * -errno. No GError and no GLib lock: it runs in the page server fork()ed from
 * a multi-threaded QEMU, where a lock another thread held stays held.
 */
int64_t sf_pagemap_absent(const void *addr, uint64_t npages, uint64_t *bits);

#endif
