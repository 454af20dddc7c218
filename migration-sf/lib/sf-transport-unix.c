/*
 * snowflock transports: unix:PATH (local stream sockets).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <glib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "sf-transport-int.h"

/* How long to probe an existing socket file for a live listener. */
#define SF_UNIX_PROBE_MS 500

static int unix_addr(const char *path, struct sockaddr_un *sun, GError **err)
{
    size_t len = strlen(path);

    if (len == 0) {
        g_set_error(err, SF_TRANSPORT_ERROR, EINVAL,
                    "unix endpoint needs a path (unix:/path/to/sock)");
        return -1;
    }
    if (len >= sizeof(sun->sun_path)) {
        sf_transport_set_error(err, ENAMETOOLONG, "unix socket path '%s'",
                               path);
        return -1;
    }
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, len + 1);
    return 0;
}

/*
 * A socket file left behind by a dead server makes bind() fail with
 * EADDRINUSE.  Remove it, but only when connecting to it is refused: if
 * somebody is listening there, stealing the path would silently cut their
 * clients off.  Anything that is not a socket is never removed.
 */
static int remove_stale_socket(const char *path, const struct sockaddr_un *sun,
                               GError **err)
{
    struct stat st;
    int fd, ret;

    if (lstat(path, &st) < 0) {
        if (errno == ENOENT) {
            return 0;
        }
        sf_transport_set_error(err, errno, "stat '%s'", path);
        return -1;
    }
    if (!S_ISSOCK(st.st_mode)) {
        sf_transport_set_error(err, EEXIST, "'%s' exists and is not a socket",
                               path);
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        sf_transport_set_error(err, errno, "socket");
        return -1;
    }
    ret = sf_stream_connect_fd(fd, (const struct sockaddr *)sun, sizeof(*sun),
                               SF_UNIX_PROBE_MS);
    close(fd);
    if (ret == -ECONNREFUSED) {
        if (unlink(path) < 0 && errno != ENOENT) {
            sf_transport_set_error(err, errno, "remove stale socket '%s'",
                                   path);
            return -1;
        }
        return 0;
    }
    /* Connected, or a full backlog (timeout): somebody is serving it. */
    sf_transport_set_error(err, EADDRINUSE,
                           "a server is already listening on '%s'", path);
    return -1;
}

static SfListener *unix_listen(const char *path, GError **err)
{
    struct sockaddr_un sun;
    SfListener *l;
    int fd;

    if (unix_addr(path, &sun, err) < 0) {
        return NULL;
    }
    if (remove_stale_socket(path, &sun, err) < 0) {
        return NULL;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        sf_transport_set_error(err, errno, "socket");
        return NULL;
    }
    /*
     * Linux creates the socket file with the socket inode's mode masked by
     * the umask, so fchmod before bind closes the window in which another
     * user could connect; the chmod after bind covers other kernels.  The
     * fork secret is still what authenticates a clone.  A failing fchmod
     * is not fatal for the same reason.
     */
    fchmod(fd, 0600);
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        sf_transport_set_error(err, errno, "bind '%s'", path);
        close(fd);
        return NULL;
    }
    if (chmod(path, 0600) < 0 || listen(fd, SOMAXCONN) < 0) {
        sf_transport_set_error(err, errno, "listen on '%s'", path);
        close(fd);
        unlink(path);
        return NULL;
    }

    l = g_new0(SfListener, 1);
    l->transport = &sf_transport_unix;
    l->fd = fd;
    l->endpoint = g_strdup_printf("unix:%s", path);
    l->unix_path = g_strdup(path);
    return l;
}

static SfConn *unix_connect(const char *path, int timeout_ms, GError **err)
{
    struct sockaddr_un sun;
    int fd, ret;

    if (unix_addr(path, &sun, err) < 0) {
        return NULL;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        sf_transport_set_error(err, errno, "socket");
        return NULL;
    }
    ret = sf_stream_connect_fd(fd, (struct sockaddr *)&sun, sizeof(sun),
                               timeout_ms);
    if (ret < 0) {
        sf_transport_set_error(err, -ret, "connect to unix:%s", path);
        close(fd);
        return NULL;
    }
    return sf_stream_conn_new(fd, g_strdup_printf("unix:%s", path));
}

const SfTransportOps sf_transport_unix = {
    .scheme = "unix",
    .listen = unix_listen,
    .accept = sf_stream_accept,
    .connect = unix_connect,
};
