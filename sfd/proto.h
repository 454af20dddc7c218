/*
 * sfd: the protocol server.  One JSON object per line each way, shaped
 * like QMP (docs/sfd.md):
 *
 *   <- {"SFD": {"version": {"protocol": 1, "sfd": "0.1.0"}, "commands": [...]}}
 *   -> {"execute": "fork", "arguments": {"vm": "web", "count": 4}, "id": 7}
 *   <- {"return": {...}, "id": 7}
 *   <- {"error": {"class": "InvalidArgument", "desc": "..."}, "id": 7}
 *   <- {"event": "CLONE_EXITED", "data": {...}, "timestamp": {...}}
 *
 * The server knows nothing of the commands: it is given a typed table
 * and checks each request against it before calling the command.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_PROTO_H
#define SFD_PROTO_H

#include <glib.h>
#include <json-glib/json-glib.h>

typedef struct SfdServer SfdServer;
typedef struct SfdRequest SfdRequest;

typedef enum {
    SFD_ARG_STRING,
    SFD_ARG_INT,
    SFD_ARG_BOOL,
    SFD_ARG_STRLIST,
} SfdArgType;

typedef struct SfdArgSpec {
    const char *name;
    SfdArgType type;
    gboolean required;
} SfdArgSpec;

typedef void (*SfdCommandFunc)(SfdRequest *req, JsonObject *args);

typedef struct SfdCommand {
    const char *name;
    SfdCommandFunc fn;
    SfdArgSpec args[6]; /* ends at name == NULL */
    const char *help;
} SfdCommand;

/* "a string", "an integer", ... */
const char *sfd_arg_type_name(SfdArgType t);

/* Listen on path (mode); commands ends at name == NULL. */
SfdServer *sfd_server_new(const char *path, int mode,
                          const SfdCommand *commands, char **err);
void sfd_server_free(SfdServer *s);

/*
 * Decode one request line against commands: TRUE with the command, its
 * arguments (type-checked against its spec) and the request's id (NULL
 * when it had none; both to be unreffed), or FALSE with the error's
 * class and message (and the id when the line had one).  Pure: the
 * server's line handler and the fuzz target share it.
 */
gboolean sfd_request_decode(const SfdCommand *commands, const char *line,
                            gsize len, const SfdCommand **cmd,
                            JsonObject **args, JsonNode **id, char **cls,
                            char **err);
/* Check args against spec: NULL, or an error message. */
char *sfd_args_check(const SfdArgSpec *spec, JsonObject *args);

/* Answer a request (takes ownership of ret); the request is freed.  A
 * request whose client left is answered into the void. */
void sfd_request_return(SfdRequest *req, JsonNode *ret);
void sfd_request_error(SfdRequest *req, const char *cls, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);
/* Events (all, or those named) follow on the request's connection;
 * count > 0 ends the subscription after that many. */
void sfd_request_subscribe(SfdRequest *req, GStrv events, int count);
/* Send an event to every subscribed client (takes ownership of data). */
void sfd_event(const char *name, JsonNode *data);

#endif
