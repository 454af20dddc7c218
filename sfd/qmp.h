/*
 * sfd: a small asynchronous QMP client in the GLib loop.
 *
 * sfd_qmp_connect() retries until the socket answers (QEMU creates it
 * a little after the process starts), reads the greeting, negotiates
 * capabilities, then calls ready.  Commands are answered through their
 * callback in the order QEMU answers them (ids are matched).  When the
 * connection ends every pending command is failed, then closed is
 * called; the owner frees the client afterwards (not from a callback).
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_QMP_H
#define SFD_QMP_H

#include <json-glib/json-glib.h>

typedef struct SfdQmp SfdQmp;

typedef void (*SfdQmpReady)(SfdQmp *q, const char *err, gpointer opaque);
typedef void (*SfdQmpReply)(SfdQmp *q, JsonNode *ret, const char *err,
                            gpointer opaque);
typedef void (*SfdQmpEvent)(SfdQmp *q, const char *name, JsonObject *data,
                            gpointer opaque);
typedef void (*SfdQmpClosed)(SfdQmp *q, gpointer opaque);

SfdQmp *sfd_qmp_connect(const char *path, int timeout_ms, SfdQmpReady ready,
                        SfdQmpEvent event, SfdQmpClosed closed,
                        gpointer opaque);
/* args may be NULL; ownership of args is taken. */
void sfd_qmp_cmd(SfdQmp *q, const char *cmd, JsonObject *args,
                 SfdQmpReply reply, gpointer opaque);
void sfd_qmp_free(SfdQmp *q);

#endif
