/*
 * snowflock: freezing a running VM's RAM at the fork instant.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Why fork(): of the three copy-on-write freezes available (see
 * ../shared notes), fork() of the paused QEMU is the one that
 *   - copies no RAM in the pause: it copies page tables, and guest RAM is
 *     THP-backed (QEMU madvises it), so 512 MiB is ~256 PMD entries;
 *     measured here ~1-3 ms for a 512 MiB TCG guest versus ~23 ms for the
 *     memfd MAP_PRIVATE remap;
 *   - works with any private RAM backend (anonymous, memfd share=off,
 *     file share=off), where the memfd remap needs share=on memfd and
 *     userfaultfd write-protect needs every page populated first and a
 *     copy on each first write done by QEMU;
 *   - gives the page server its own process, so it outlives the parent
 *     QEMU for free, and the kernel frees the image when it exits.
 * The cost is the CoW fault the parent takes on its first write to each
 * page after the fork (the kernel copies 4 KiB; THP are split), and the
 * frozen pages the parent has since written stay in the server until it
 * exits (query-sf-forks reports that footprint).
 *
 * The child is a copy of a multi-threaded process of which only this
 * thread survives: QEMU's locks may be held by threads that no longer
 * exist, so the child never calls into QEMU.  It runs the plain-C page
 * server from lib/ over a block table recorded before fork() and exits.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "sf-freeze.h"
#include "lib/sf-pageserver.h"

#include <sys/prctl.h>

static void G_NORETURN sf_freeze_child(const SfFreezeArgs *a)
{
    sigset_t all;
    SfPageSource *src;
    SfPageServer *srv;
    SfPageServerConfig cfg = {
        .fork_id = a->fork_id,
        .max_clones = a->max_clones,
        .stats_path = a->stats_path,
        .log_prefix = a->log_prefix,
        .idle_timeout_ms = a->idle_timeout_ms,
    };
    int ret;

    /* A session of its own: a terminal's ^C to the parent is not for us. */
    setsid();
    prctl(PR_SET_NAME, "sf-pageserver");
    for (int sig = 1; sig < NSIG; sig++) {
        signal(sig, SIG_DFL);
    }
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);

    /*
     * Keep only the listener and the log: the parent's QMP socket, tap and
     * disk images must not stay open in a process that lives on after it.
     */
    dup2(a->log_fd, STDOUT_FILENO);
    dup2(a->log_fd, STDERR_FILENO);
    if (a->listener->fd != 3) {
        dup2(a->listener->fd, 3);
        a->listener->fd = 3;
    }
    close_range(4, ~0U, 0);
    /* stdin: nothing of the parent's terminal (lands on fd 0 or 4). */
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull > STDIN_FILENO) {
        dup2(devnull, STDIN_FILENO);
        close(devnull);
    }

    memcpy(cfg.secret, a->secret, sizeof(cfg.secret));
    src = sf_pagesrc_mem_new(a->blocks, a->hosts, a->nblocks);
    srv = sf_pageserver_new(a->listener, src, &cfg);
    fprintf(stderr, "%s: serving %u blocks, %" PRIu64 " pages, pid %d\n",
            a->log_prefix, a->nblocks, sf_pagesrc_total_pages(src),
            getpid());
    ret = sf_pageserver_run(srv);
    fprintf(stderr, "%s: done (%d), releasing the frozen image\n",
            a->log_prefix, ret);
    fflush(stderr);
    _exit(ret < 0 ? EXIT_FAILURE : EXIT_SUCCESS);
}

pid_t sf_freeze_fork(const SfFreezeArgs *a, Error **errp)
{
    pid_t pid;

    /*
     * ram_block_add() marks guest RAM MADV_DONTFORK (for KVM without a
     * synchronous MMU, long gone).  The child needs it mapped.
     */
    for (uint32_t i = 0; i < a->nblocks; i++) {
        madvise(a->hosts[i], a->blocks[i].length, MADV_DOFORK);
    }
    pid = fork();
    if (pid == 0) {
        sf_freeze_child(a);
    }
    for (uint32_t i = 0; i < a->nblocks; i++) {
        madvise(a->hosts[i], a->blocks[i].length, MADV_DONTFORK);
    }
    if (pid < 0) {
        error_setg_errno(errp, errno, "vm-fork: fork of the page server");
    }
    return pid;
}
