/*
 * snowflock: query-sf, the host probe.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Probe once per call, for real: open a userfaultfd, do the API
 * handshake, and register throwaway mappings in each mode we care about,
 * the way postcopy_ram_supported_by_host() does.  A host without
 * userfaultfd is a result, not an error.
 */

#include "qemu/osdep.h"
#include "qemu/userfaultfd.h"
#include "qemu/memfd.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-sf.h"
#include "qemu/accel.h"
#include "system/kvm.h"
#include "sf-version.h"
#include "sf-clone.h"

#include <sys/syscall.h>

static void sf_probe_register(int fd, void *addr, uint64_t len,
                              uint64_t mode, uint64_t want_ioctls,
                              bool *result)
{
    uint64_t ioctls = 0;

    *result = uffd_register_memory(fd, addr, len, mode, &ioctls) == 0 &&
              (ioctls & want_ioctls) == want_ioctls;
    if (*result || errno != EINVAL) {
        uffd_unregister_memory(fd, addr, len);
    }
}

static SfUffdInfo *sf_probe_uffd(void)
{
    SfUffdInfo *info = g_new0(SfUffdInfo, 1);
    size_t psz = qemu_real_host_page_size();
    uint64_t features = 0;
    int fd;

    /*
     * Open without UFFD_USER_MODE_ONLY: only such a userfaultfd sees faults
     * the kernel takes on guest memory for QEMU (tap, io_uring, vhost).
     * uffd_open() prefers /dev/userfaultfd, which also allows that.
     */
    fd = uffd_open(O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        info->error = g_strdup_printf("cannot open userfaultfd: %s%s",
                                      strerror(errno),
                                      errno == EPERM ?
                                      " (needs root, /dev/userfaultfd access"
                                      " or vm.unprivileged_userfaultfd=1)" :
                                      "");
        return info;
    }
    close(fd);
    info->kernel_faults = true;

    if (uffd_query_features(&features)) {
        info->error = g_strdup("UFFD_API handshake failed");
        return info;
    }
    info->features = features;

    fd = uffd_create_fd(features & (UFFD_FEATURE_PAGEFAULT_FLAG_WP |
                                    UFFD_FEATURE_MINOR_SHMEM), true);
    if (fd < 0) {
        info->error = g_strdup("UFFD_API with the reported features failed");
        return info;
    }
    info->available = true;

    void *anon = mmap(NULL, psz, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (anon != MAP_FAILED) {
        sf_probe_register(fd, anon, psz, UFFDIO_REGISTER_MODE_MISSING,
                          (1ULL << _UFFDIO_COPY) | (1ULL << _UFFDIO_ZEROPAGE),
                          &info->missing);
        if (features & UFFD_FEATURE_PAGEFAULT_FLAG_WP) {
            sf_probe_register(fd, anon, psz, UFFDIO_REGISTER_MODE_WP,
                              1ULL << _UFFDIO_WRITEPROTECT,
                              &info->write_protect);
        }
        munmap(anon, psz);
    }

    if (features & UFFD_FEATURE_MINOR_SHMEM) {
        int mfd = qemu_memfd_create("sf-probe", psz, false, 0, 0, NULL);
        if (mfd >= 0) {
            void *shm = mmap(NULL, psz, PROT_READ | PROT_WRITE, MAP_SHARED,
                             mfd, 0);
            if (shm != MAP_FAILED) {
                sf_probe_register(fd, shm, psz, UFFDIO_REGISTER_MODE_MINOR,
                                  1ULL << _UFFDIO_CONTINUE, &info->minor);
                munmap(shm, psz);
            }
            close(mfd);
        }
    }
    close(fd);

    if (!info->missing) {
        info->error = g_strdup("userfaultfd cannot register missing-page "
                               "faults on anonymous memory; vm-fork clones "
                               "cannot run on this host");
    }
    return info;
}

static char *sf_probe_thp(void)
{
    g_autofree char *text = NULL;
    const char *open_br, *close_br;

    if (!g_file_get_contents("/sys/kernel/mm/transparent_hugepage/enabled",
                             &text, NULL, NULL)) {
        return g_strdup("unavailable");
    }
    /* The selected mode is bracketed: "always [madvise] never". */
    open_br = strchr(text, '[');
    close_br = open_br ? strchr(open_br, ']') : NULL;
    if (!close_br) {
        return g_strdup("unavailable");
    }
    return g_strndup(open_br + 1, close_br - open_br - 1);
}

SfInfo *qmp_query_sf(Error **errp)
{
    SfInfo *info = g_new0(SfInfo, 1);

    info->version = g_strdup(SF_VERSION);
    info->qemu_version = g_strdup(QEMU_VERSION);
    info->userfaultfd = sf_probe_uffd();
    info->accelerator = g_strdup(current_accel_name());
    info->kvm = kvm_enabled();
    info->thp = sf_probe_thp();
    info->host_page_size = qemu_real_host_page_size();
    info->clone = sf_clone_active();
    return info;
}
