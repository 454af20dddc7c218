/*
 * snowflock: a fork's directory and the files in it.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 *   descriptor          CPU and device state, RAM block table (0600)
 *   secret              the fork's 16-byte secret, raw (0600)
 *   pages.sock          the page server's socket (default endpoint)
 *   server-stats.json   the page server's figures
 *   pageserver.log      the page server's log
 *   clone-<N>.log       launched clone N's stdout and stderr
 *
 * Who removes what, so that nothing is left behind:
 *   - a fork that fails before vm-fork answers: vm-fork, all of it
 *     (sf_forkdir_abandon);
 *   - when the page server ends, everything its end makes pointless: the
 *     secret and the socket always; in vm-fork's own directory also the
 *     descriptor and statistics, and its log unless it failed.  The server
 *     does it itself at its exit; if it was killed, the parent does it
 *     (sf_forkdir_server_ended);
 *   - a launched clone's log: the clone at a clean exit (SNOWFLOCK_CLONE_LOG,
 *     see sf-clone.c) and the parent when it sees it exit 0;
 *   - vm-fork's own directory and $TMPDIR/snowflock-<pid>: whoever of those
 *     is last, by removing them once empty (rmdir is the "last one out"
 *     test), and the parent at its exit.
 * A log of something that failed is kept, and said where, bounded in size
 * and number (sf_forkdir_keep_log).  A directory the caller named is the
 * caller's: only the secret and the socket are removed from it.
 *
 * $TMPDIR/snowflock-<pid> is a predictable name in a shared directory, so
 * an existing one is used only if it is a real directory of ours that no
 * one else can enter.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qapi/error.h"
#include "sf-forkdir.h"

static char *sf_run_dir(void)
{
    static char *run_dir;

    if (!run_dir) {
        run_dir = g_strdup_printf("%s/snowflock-%d", g_get_tmp_dir(),
                                  getpid());
    }
    return run_dir;
}

static bool sf_forkdir_private_dir(const char *path, Error **errp)
{
    struct stat st;

    if (mkdir(path, 0700) == 0) {
        return true;
    }
    if (errno != EEXIST) {
        error_setg_errno(errp, errno, "cannot create %s", path);
        return false;
    }
    if (lstat(path, &st) < 0 || !S_ISDIR(st.st_mode) ||
        st.st_uid != geteuid() || (st.st_mode & 077)) {
        error_setg(errp, "%s exists and is not a private directory of this "
                   "user", path);
        return false;
    }
    return true;
}

SfForkDir *sf_forkdir_create(const char *dir, unsigned seq, Error **errp)
{
    g_autofree char *path = NULL;
    SfForkDir *d;
    bool created;

    if (dir) {
        created = !g_file_test(dir, G_FILE_TEST_EXISTS);
        if (g_mkdir_with_parents(dir, 0700) < 0) {
            error_setg_errno(errp, errno, "cannot create %s", dir);
            return NULL;
        }
        path = g_strdup(dir);
    } else {
        if (!sf_forkdir_private_dir(sf_run_dir(), errp)) {
            return NULL;
        }
        path = g_strdup_printf("%s/fork-%u", sf_run_dir(), seq);
        created = mkdir(path, 0700) == 0;
        if (!created && errno == EEXIST) {
            /* Left by a dead QEMU that had our pid: never reuse it. */
            g_free(path);
            path = g_strdup_printf("%s/fork-%u-XXXXXX", sf_run_dir(), seq);
            created = g_mkdtemp_full(path, 0700) != NULL;
        }
        if (!created) {
            error_setg_errno(errp, errno, "cannot create %s", path);
            rmdir(sf_run_dir());
            return NULL;
        }
    }
    d = g_new0(SfForkDir, 1);
    d->path = g_steal_pointer(&path);
    d->owned = !dir;
    d->created = created;
    d->run_dir = d->owned ? g_strdup(sf_run_dir()) : NULL;
    d->descriptor = g_strdup_printf("%s/descriptor", d->path);
    d->secret = g_strdup_printf("%s/secret", d->path);
    d->stats = g_strdup_printf("%s/server-stats.json", d->path);
    d->stats_tmp = g_strdup_printf("%s.tmp", d->stats);
    d->log = g_strdup_printf("%s/pageserver.log", d->path);
    return d;
}

void sf_forkdir_free(SfForkDir *d)
{
    if (!d) {
        return;
    }
    g_free(d->path);
    g_free(d->run_dir);
    g_free(d->descriptor);
    g_free(d->secret);
    g_free(d->stats);
    g_free(d->stats_tmp);
    g_free(d->log);
    g_free(d->socket);
    g_free(d);
}

bool sf_forkdir_write_secret(SfForkDir *d,
                             const uint8_t secret[SF_WIRE_SECRET_LEN],
                             Error **errp)
{
    int fd = open(d->secret, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
                  O_CLOEXEC, 0600);
    ssize_t n;
    int err;

    if (fd < 0) {
        error_setg_errno(errp, errno, "cannot create %s%s", d->secret,
                         errno == EEXIST ? " (a directory holds one fork)"
                                         : "");
        return false;
    }
    n = write(fd, secret, SF_WIRE_SECRET_LEN);
    err = errno;
    if (close(fd) < 0 && n == SF_WIRE_SECRET_LEN) {
        n = -1;
        err = errno;
    }
    if (n != SF_WIRE_SECRET_LEN) {
        error_setg_errno(errp, n < 0 ? err : EIO, "cannot write %s",
                         d->secret);
        unlink(d->secret);
        return false;
    }
    return true;
}

int sf_forkdir_open_log(SfForkDir *d, Error **errp)
{
    int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW |
                  O_CLOEXEC, 0600);

    if (fd < 0) {
        error_setg_errno(errp, errno, "cannot open %s", d->log);
    }
    return fd;
}

char *sf_forkdir_clone_log(const SfForkDir *d, uint32_t clone_id)
{
    return g_strdup_printf("%s/clone-%u.log", d->path, clone_id);
}

void sf_forkdir_abandon(SfForkDir *d, uint32_t nclones)
{
    g_autofree char *desc_tmp = g_strdup_printf("%s.tmp", d->descriptor);

    unlink(d->secret);
    unlink(d->descriptor);
    unlink(desc_tmp);
    unlink(d->stats);
    unlink(d->stats_tmp);
    unlink(d->log);
    if (d->socket) {
        unlink(d->socket);
    }
    for (uint32_t id = 1; id <= nclones; id++) {
        g_autofree char *clog = sf_forkdir_clone_log(d, id);

        unlink(clog);
    }
    if (d->created) {
        rmdir(d->path);
    }
    if (d->owned) {
        rmdir(d->run_dir);
    }
}

/*
 * Plain system calls on paths recorded before the fork: this runs in the
 * page server child, where QEMU's locks may be held for good.
 */
void sf_forkdir_server_ended(const SfForkDir *d, bool failed)
{
    unlink(d->secret);
    if (d->socket) {
        unlink(d->socket);
    }
    if (d->owned) {
        unlink(d->descriptor);
        unlink(d->stats);
        unlink(d->stats_tmp);
        if (!failed) {
            unlink(d->log);
        }
    }
    sf_forkdir_release(d);
}

void sf_forkdir_release(const SfForkDir *d)
{
    if (d->owned) {
        rmdir(d->path);
        rmdir(d->run_dir);
    }
}

void sf_forkdir_release_run_dir(void)
{
    rmdir(sf_run_dir());
}

/* Keep only the last SF_FORKDIR_KEPT_BYTES of the file at @path. */
static void sf_forkdir_keep_tail(const char *path)
{
    g_autofree char *buf = NULL;
    struct stat st;
    ssize_t n;
    int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0) {
        return;
    }
    if (fstat(fd, &st) == 0 && st.st_size > SF_FORKDIR_KEPT_BYTES) {
        buf = g_malloc(SF_FORKDIR_KEPT_BYTES);
        n = pread(fd, buf, SF_FORKDIR_KEPT_BYTES,
                  st.st_size - SF_FORKDIR_KEPT_BYTES);
        if (n > 0 && pwrite(fd, buf, n, 0) == n) {
            if (ftruncate(fd, n) < 0) {
                warn_report("vm-fork: cannot shorten %s: %s", path,
                            strerror(errno));
            }
        }
    }
    close(fd);
}

void sf_forkdir_keep_log(const SfForkDir *d, const char *path)
{
    static GQueue kept = G_QUEUE_INIT;

    if (!d->owned) {
        return;
    }
    sf_forkdir_keep_tail(path);
    g_queue_push_tail(&kept, g_strdup(path));
    while (g_queue_get_length(&kept) > SF_FORKDIR_KEPT_LOGS) {
        g_autofree char *old = g_queue_pop_head(&kept);
        g_autofree char *dir = g_path_get_dirname(old);

        unlink(old);
        rmdir(dir);
        sf_forkdir_release_run_dir();
    }
}
