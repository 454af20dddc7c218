/*
 * snowflock: freezing a running VM's RAM at the fork instant.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Why fork(): of the three copy-on-write freezes available (fork(), a
 * memfd remapped MAP_PRIVATE, userfaultfd write-protect as background
 * snapshots do), fork() of the paused QEMU is the one that
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
 * server from lib/ over a block table recorded before fork(), with the
 * configuration vm-fork filled (read in place), then hands its final
 * figures to the parent through a pipe, removes what its end makes
 * pointless (sf-forkdir.c) and exits.  SIGTERM ends it the same way.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "sf-freeze.h"
#include "lib/sf-pageserver.h"

#include <sys/prctl.h>

/* The child's fds: 0 /dev/null, 1-2 the log, then these. */
#define SF_FREEZE_LISTEN_FD 3
#define SF_FREEZE_STATS_FD  4
#define SF_FREEZE_MCAST_FD  5

static SfPageServer *sf_freeze_server;

/*
 * One log line, formatted on the stack and written in one write(): no
 * stdio stream, whose lock another thread may have held at fork().
 */
static void G_GNUC_PRINTF(1, 2) sf_freeze_log(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
    va_end(ap);
    n = MIN(MAX(n, 0), (int)sizeof(buf) - 2);
    buf[n++] = '\n';
    if (write(STDERR_FILENO, buf, n) < 0) {
        /* Nowhere left to report it. */
    }
}

static void sf_freeze_on_sigterm(int sig)
{
    /* An eventfd write: async-signal-safe. */
    sf_pageserver_stop(sf_freeze_server);
}

/*
 * Put the fds the child keeps at fixed numbers and close the rest: the
 * parent's QMP socket, tap and disk images must not stay open in a
 * process that lives on after it.  Going through high numbers first means
 * no dup2() can clobber a source that already sits on a target.
 */
static void sf_freeze_child_fds(SfFreezeArgs *a)
{
    int listen_fd = fcntl(a->listener->fd, F_DUPFD, 100);
    int stats_fd = fcntl(a->stats_fd, F_DUPFD, 100);
    int log_fd = fcntl(a->log_fd, F_DUPFD, 100);
    int mcast_fd = a->server->mcast_group ?
                   fcntl(a->server->mcast_fd, F_DUPFD, 100) : -1;
    int devnull = open("/dev/null", O_RDONLY);

    dup2(devnull, STDIN_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    dup2(listen_fd, SF_FREEZE_LISTEN_FD);
    dup2(stats_fd, SF_FREEZE_STATS_FD);
    if (mcast_fd >= 0) {
        dup2(mcast_fd, SF_FREEZE_MCAST_FD);
        a->server->mcast_fd = SF_FREEZE_MCAST_FD;
    }
    close_range(mcast_fd >= 0 ? SF_FREEZE_MCAST_FD + 1 : SF_FREEZE_STATS_FD + 1,
                ~0U, 0);
    a->listener->fd = SF_FREEZE_LISTEN_FD;
}

/* Best effort: a parent that is gone or does not read loses nothing. */
static void sf_freeze_send_stats(SfPageServer *srv)
{
    g_autofree char *json = sf_pageserver_stats_json(srv);
    size_t len = strlen(json), off = 0;

    fcntl(SF_FREEZE_STATS_FD, F_SETFL, O_NONBLOCK);
    while (off < len) {
        ssize_t n = write(SF_FREEZE_STATS_FD, json + off, len - off);

        if (n <= 0) {
            break;
        }
        off += n;
    }
    close(SF_FREEZE_STATS_FD);
}

/*
 * The zero map, read here rather than in the pause: pages of private
 * anonymous RAM this frozen image never populated (guest memory never
 * touched, or discarded when the guest's free page reporting gave it
 * back) read as zero, so clones fill them themselves.  ~1 ms per GiB;
 * a block that cannot be scanned is simply served page by page.
 */
static void sf_freeze_scan_zero(SfFreezeArgs *a, SfPageSource *src)
{
    int64_t t0 = g_get_monotonic_time();
    uint64_t total = 0;

    for (uint32_t i = 0; i < a->nblocks; i++) {
        int64_t n;

        if (!a->anon[i]) {
            continue;
        }
        n = sf_pagesrc_mem_scan_absent(src, i);
        if (n < 0) {
            sf_freeze_log("%s: no zero map for block %s: %s",
                          a->server->log_prefix, a->blocks[i].idstr,
                          strerror(-n));
            continue;
        }
        total += n;
    }
    sf_freeze_log("%s: zero map: %" PRIu64 " pages never populated "
                  "(%" PRId64 " us)", a->server->log_prefix, total,
                  g_get_monotonic_time() - t0);
}

static void G_NORETURN sf_freeze_child(SfFreezeArgs *a)
{
    struct sigaction sa = { 0 };
    sigset_t all;
    SfPageSource *src;
    int ret;

    /* A session of its own: a terminal's ^C to the parent is not for us. */
    setsid();
    prctl(PR_SET_NAME, "sf-pageserver");
    sa.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++) {
        sigaction(sig, &sa, NULL);
    }
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sf_freeze_child_fds(a);

    src = sf_pagesrc_mem_new(a->blocks, a->hosts, a->nblocks);
    sf_freeze_scan_zero(a, src);
    sf_freeze_server = sf_pageserver_new(a->listener, src, a->server);
    sa.sa_handler = sf_freeze_on_sigterm;
    sigaction(SIGTERM, &sa, NULL);
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    sf_freeze_log("%s: serving %u blocks, %" PRIu64 " pages, pid %d",
                  a->server->log_prefix, a->nblocks,
                  sf_pagesrc_total_pages(src), getpid());
    ret = sf_pageserver_run(sf_freeze_server);
    sf_freeze_send_stats(sf_freeze_server);
    sf_freeze_log("%s: done (%d), releasing the frozen image",
                  a->server->log_prefix, ret);
    sf_forkdir_server_ended(a->dir, ret < 0);
    _exit(ret < 0 ? EXIT_FAILURE : EXIT_SUCCESS);
}

pid_t sf_freeze_fork(SfFreezeArgs *a, Error **errp)
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
        error_setg_errno(errp, errno, "fork of the page server");
    }
    return pid;
}
