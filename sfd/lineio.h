/*
 * sfd: newline-framed I/O over a non-blocking stream fd in the GLib loop.
 *
 * Used three ways: the protocol server's clients, the QMP client of each
 * QEMU, and the short serial-console conversation that configures a
 * clone's address.  Input is split at '\n'; a line longer than max_line
 * is not buffered: the reader is told once (overlong=TRUE, line empty)
 * and the rest of it is discarded up to the next '\n', so one huge line
 * cannot grow memory nor desynchronise the stream.  Output is queued and
 * flushed when the fd is writable; a peer that lets more than max_out
 * bytes pile up is closed.
 *
 * End of input: an owner that gives on_eof is told when the peer has
 * shut down its sending side (a last line without '\n' is handed over
 * first); output still flows, and the owner closes when it has said all
 * it has to say (sfd_lineio_close_flushed()).  Without on_eof, end of
 * input closes the io.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_LINEIO_H
#define SFD_LINEIO_H

#include <glib.h>

typedef struct SfdLineIO SfdLineIO;

/* One complete line, without its '\n' (NUL-terminated for convenience). */
typedef void (*SfdLineFunc)(SfdLineIO *io, const char *line, gsize len,
                            gboolean overlong, gpointer opaque);
/* The peer closed, an I/O error happened, or the output overflowed.
 * Called once; the owner frees the SfdLineIO (not from inside a
 * SfdLineFunc: use sfd_lineio_close() there). */
typedef void (*SfdLineClosedFunc)(SfdLineIO *io, gpointer opaque);
/* The peer will send nothing more (it may still read). */
typedef void (*SfdLineEofFunc)(SfdLineIO *io, gpointer opaque);

/* on_eof may be NULL: end of input then closes the io. */
SfdLineIO *sfd_lineio_new(int fd, gsize max_line, gsize max_out,
                          SfdLineFunc on_line, SfdLineEofFunc on_eof,
                          SfdLineClosedFunc on_closed, gpointer opaque);
/* Queue data (a line should end with '\n').  0 or -errno. */
int sfd_lineio_write(SfdLineIO *io, const char *data, gsize len);
/* Stop reading and report closed from an idle callback. */
void sfd_lineio_close(SfdLineIO *io);
/* Stop reading, write out what is queued, then close as above. */
void sfd_lineio_close_flushed(SfdLineIO *io);
int sfd_lineio_fd(SfdLineIO *io);
/* Closes the fd; safe on NULL. */
void sfd_lineio_free(SfdLineIO *io);

#endif
