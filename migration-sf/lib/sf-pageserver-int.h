/*
 * snowflock page server: the state its files share (sf-pageserver.h
 * says which file does what).  Private to sf-pageserver.c and sf-ps-*.c.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SF_PAGESERVER_INT_H
#define SF_PAGESERVER_INT_H

#include "sf-emitter.h"
#include "sf-image.h"
#include "sf-pageserver.h"
#include "sf-seal.h"
#include "sf-workset.h"
#include "sf-zeromap.h"

/* Client messages are at most a REQUEST; anything bigger is refused. */
#define SF_PS_RECV_BUF 64
/* Requests queued per connection; reading stops while it is full. */
#define SF_PS_QUEUE 16
/* Working set: pages remembered (1 GiB), pushed per clone per turn. */
#define SF_PS_WORKSET_MAX  262144
#define SF_PS_WORKSET_TURN 256

typedef struct SfPsConn {
    SfConn *conn;
    uint32_t clone_id; /* 0 until a HELLO was accepted */
    bool desc_only;    /* HELLO for the descriptor: not the clone's own */
    int64_t hello_deadline;
    bool dead; /* closed; removed after this poll turn */
    /* Reassembly of one incoming message (see conn_readable()). */
    SfFramer framer;
    uint8_t body[SF_PS_RECV_BUF];
    /* Validated requests waiting to be served, in arrival order. */
    SfMsgRequest queue[SF_PS_QUEUE];
    unsigned queued;
    /* The working set's push to this clone (HELLO asked for it). */
    bool ws_push;
    bool ws_unicast; /* not in the group: on this connection */
    uint64_t ws_cursor;
    uint64_t ws_end; /* in the group: what was noted before it joined */
} SfPsConn;

typedef struct SfPsClone {
    SfPageServerCloneStats st;
    SfPsConn *conn;         /* live connection, or NULL */
    int64_t grace_deadline; /* valid in SF_CLONE_DISCONNECTED */
} SfPsClone;

struct SfPageServer {
    SfListener *l;
    SfImage *image;
    const SfPageServerConfig *cfg; /* the caller's, for our whole life */
    const char *log_prefix;
    int grace_ms; /* cfg's, defaults applied */
    int idle_ms;
    size_t log_bytes; /* written by ps_log() so far */
    int wake_fd;
    uint64_t total_pages;
    SfZeroMap *zeromap; /* sent to every clone after its WELCOME */
    SfWorkSet *workset; /* pages in the order first demanded */
    bool sealed;        /* a network endpoint: every message sealed */
    SfSealKeys keys;    /* the fork's, when sealed or multicast */

    /* Multicast, when the config names a group. */
    int mcast_fd;
    SfEmitter *emitter;
    unsigned frags;
    int64_t mcast_next; /* when the emitter wants to run again, ms */
    bool mcast_failed;  /* its socket failed: given up */

    /* The descriptor handed out with DESC_GET, read on first use. */
    uint8_t *desc;
    size_t desc_len;

    GPtrArray *conns;   /* SfPsConn * */
    SfPsClone *clones;  /* index clone_id - 1 */
    uint32_t nbound;    /* connections that passed HELLO */
    uint32_t npending;  /* connections that have not */
    int64_t idle_since; /* when nbound last became 0 */

    bool running;
    bool stats_dirty;
    bool stats_error_logged;
    int64_t stats_written;
};

/* Whether answers go to the group (it was opened and has not failed). */
static inline bool sf_ps_mcast_on(const SfPageServer *s)
{
    return s->emitter && !s->mcast_failed;
}

static inline int64_t sf_ps_now_ms(void)
{
    return g_get_monotonic_time() / 1000;
}

/* sf-ps-stats.c: one line to fd 2, bounded in all (SF_PS_LOG_MAX). */
void G_GNUC_PRINTF(2, 3) sf_ps_log(SfPageServer *s, const char *fmt, ...);
void sf_ps_stats_write(SfPageServer *s);

/* sf-ps-conn.c */
void sf_ps_clone_set_state(SfPageServer *s, SfPsClone *c, SfCloneState st);
void sf_ps_conn_drop(SfPageServer *s, SfPsConn *pc, const char *why);
int sf_ps_conn_send(SfPageServer *s, SfPsConn *pc, SfMsgType type,
                    const void *body, size_t body_len, const void *payload,
                    size_t payload_len);
void sf_ps_conn_fail(SfPageServer *s, SfPsConn *pc, SfWireError code,
                     const char *msg);

/* sf-ps-serve.c */
void sf_ps_dispatch(SfPageServer *s, SfPsConn *pc, const SfWireHdr *hdr,
                    const uint8_t *body);
/* Demand first, then push; true when requests remain queued. */
bool sf_ps_serve_queued(SfPageServer *s);
/* Whether pc may be read on: its queue has room, or a request in it
 * that may be dropped for a new one (sf-ps-serve.c). */
bool sf_ps_queue_room(const SfPageServer *s, const SfPsConn *pc);
/* The emitter's page reader (sf-emitter.h). */
const uint8_t *sf_ps_read_page(void *opaque, uint32_t block, uint64_t page,
                               bool *zero);

#endif
