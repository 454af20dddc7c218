/*
 * sfd: newline-framed non-blocking I/O (see lineio.h).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <glib-unix.h>

#include "lineio.h"

struct SfdLineIO {
    int fd;
    gsize max_line, max_out;
    GString *in;
    GString *out;
    gboolean discarding; /* inside an overlong line */
    gboolean closed;
    gboolean eof;           /* the peer sends no more */
    gboolean close_flushed; /* close once out is empty */
    guint in_watch, out_watch, hup_watch, close_idle;
    SfdLineFunc on_line;
    SfdLineEofFunc on_eof;
    SfdLineClosedFunc on_closed;
    gpointer opaque;
};

static gboolean lineio_closed_idle(gpointer data)
{
    SfdLineIO *io = data;

    io->close_idle = 0;
    io->on_closed(io, io->opaque);
    return G_SOURCE_REMOVE;
}

void sfd_lineio_close(SfdLineIO *io)
{
    if (io->closed) {
        return;
    }
    io->closed = TRUE;
    if (io->in_watch) {
        g_source_remove(io->in_watch);
        io->in_watch = 0;
    }
    if (io->out_watch) {
        g_source_remove(io->out_watch);
        io->out_watch = 0;
    }
    if (io->hup_watch) {
        g_source_remove(io->hup_watch);
        io->hup_watch = 0;
    }
    io->close_idle = g_idle_add(lineio_closed_idle, io);
}

void sfd_lineio_close_flushed(SfdLineIO *io)
{
    if (io->closed) {
        return;
    }
    if (io->in_watch) {
        g_source_remove(io->in_watch);
        io->in_watch = 0;
    }
    if (io->out->len == 0) {
        sfd_lineio_close(io);
        return;
    }
    /* lineio_writable() closes once the queue is empty. */
    io->close_flushed = TRUE;
}

/* Hand complete lines to the owner.  The owner may close the io from its
 * callback; stop as soon as it does. */
static void lineio_dispatch(SfdLineIO *io)
{
    while (!io->closed) {
        char *nl = memchr(io->in->str, '\n', io->in->len);

        if (!nl) {
            if (io->in->len > io->max_line) {
                if (!io->discarding) {
                    io->discarding = TRUE;
                    io->on_line(io, "", 0, TRUE, io->opaque);
                }
                g_string_truncate(io->in, 0);
            }
            return;
        }
        gsize len = nl - io->in->str;
        *nl = '\0';
        if (io->discarding) {
            io->discarding = FALSE; /* end of the overlong line */
        } else if (len > io->max_line) {
            io->on_line(io, "", 0, TRUE, io->opaque);
        } else {
            if (len && io->in->str[len - 1] == '\r') {
                io->in->str[--len] = '\0';
            }
            io->on_line(io, io->in->str, len, FALSE, io->opaque);
        }
        g_string_erase(io->in, 0, (nl - io->in->str) + 1);
    }
}

/* The peer closed for good (both ways) after its end of input. */
static gboolean lineio_hup(int fd, GIOCondition cond, gpointer data)
{
    SfdLineIO *io = data;

    io->hup_watch = 0;
    sfd_lineio_close(io);
    return G_SOURCE_REMOVE;
}

/*
 * End of input: a last line without its '\n' still counts, then the
 * owner is told.  From here only a hang-up (the peer closed its reading
 * side too) or a failed write closes the io, unless the owner does.
 */
static void lineio_input_ended(SfdLineIO *io)
{
    io->eof = TRUE;
    if (io->in->len && !io->discarding) {
        g_string_append_c(io->in, '\n');
        lineio_dispatch(io);
    }
    if (io->closed) {
        return;
    }
    io->hup_watch = g_unix_fd_add(io->fd, G_IO_HUP | G_IO_ERR, lineio_hup, io);
    io->on_eof(io, io->opaque);
}

static gboolean lineio_readable(int fd, GIOCondition cond, gpointer data)
{
    SfdLineIO *io = data;
    char buf[65536];

    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));

        if (n > 0) {
            g_string_append_len(io->in, buf, n);
            lineio_dispatch(io);
            if (io->closed) {
                return G_SOURCE_REMOVE;
            }
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            return G_SOURCE_CONTINUE;
        }
        io->in_watch = 0; /* EOF or error: this source ends */
        if (n == 0 && io->on_eof) {
            lineio_input_ended(io);
        } else {
            sfd_lineio_close(io);
        }
        return G_SOURCE_REMOVE;
    }
}

static gboolean lineio_flush(SfdLineIO *io)
{
    while (io->out->len) {
        ssize_t n = write(io->fd, io->out->str, io->out->len);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            return TRUE;
        }
        if (n < 0) {
            return FALSE;
        }
        g_string_erase(io->out, 0, n);
    }
    return TRUE;
}

static gboolean lineio_writable(int fd, GIOCondition cond, gpointer data)
{
    SfdLineIO *io = data;

    if (!lineio_flush(io)) {
        io->out_watch = 0;
        sfd_lineio_close(io);
        return G_SOURCE_REMOVE;
    }
    if (io->out->len == 0) {
        io->out_watch = 0;
        if (io->close_flushed) {
            sfd_lineio_close(io);
        }
        return G_SOURCE_REMOVE;
    }
    return G_SOURCE_CONTINUE;
}

int sfd_lineio_write(SfdLineIO *io, const char *data, gsize len)
{
    if (io->closed) {
        return -EPIPE;
    }
    if (io->out->len + len > io->max_out) {
        sfd_lineio_close(io); /* a peer that does not read */
        return -ENOBUFS;
    }
    g_string_append_len(io->out, data, len);
    if (!lineio_flush(io)) {
        sfd_lineio_close(io);
        return -EPIPE;
    }
    if (io->out->len && !io->out_watch) {
        io->out_watch = g_unix_fd_add(io->fd, G_IO_OUT, lineio_writable, io);
    }
    return 0;
}

SfdLineIO *sfd_lineio_new(int fd, gsize max_line, gsize max_out,
                          SfdLineFunc on_line, SfdLineEofFunc on_eof,
                          SfdLineClosedFunc on_closed, gpointer opaque)
{
    SfdLineIO *io = g_new0(SfdLineIO, 1);

    g_unix_set_fd_nonblocking(fd, TRUE, NULL);
    io->fd = fd;
    io->max_line = max_line;
    io->max_out = max_out;
    io->in = g_string_new(NULL);
    io->out = g_string_new(NULL);
    io->on_line = on_line;
    io->on_eof = on_eof;
    io->on_closed = on_closed;
    io->opaque = opaque;
    io->in_watch =
        g_unix_fd_add(fd, G_IO_IN | G_IO_HUP | G_IO_ERR, lineio_readable, io);
    return io;
}

int sfd_lineio_fd(SfdLineIO *io)
{
    return io->fd;
}

void sfd_lineio_free(SfdLineIO *io)
{
    if (!io) {
        return;
    }
    if (io->in_watch) {
        g_source_remove(io->in_watch);
    }
    if (io->out_watch) {
        g_source_remove(io->out_watch);
    }
    if (io->hup_watch) {
        g_source_remove(io->hup_watch);
    }
    if (io->close_idle) {
        g_source_remove(io->close_idle);
    }
    close(io->fd);
    g_string_free(io->in, TRUE);
    g_string_free(io->out, TRUE);
    g_free(io);
}
