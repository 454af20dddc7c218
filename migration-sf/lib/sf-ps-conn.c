/*
 * snowflock page server: a connection's sends, failures and end, and a
 * clone's state as its connection comes and goes.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>
#include <string.h>

#include "sf-pageserver-int.h"

void sf_ps_clone_set_state(SfPageServer *s, SfPsClone *c, SfCloneState st)
{
    c->st.state = st;
    /* State changes are what an operator watches for: write them now. */
    sf_ps_stats_write(s);
}

void sf_ps_conn_drop(SfPageServer *s, SfPsConn *pc, const char *why)
{
    if (pc->dead) {
        return;
    }
    pc->dead = true;
    if (pc->clone_id && !pc->desc_only) {
        SfPsClone *c = &s->clones[pc->clone_id - 1];

        sf_ps_log(s, "clone %u disconnected (%s): %s", pc->clone_id,
                  pc->conn->peer, why);
        c->conn = NULL;
        if (--s->nbound == 0) {
            s->idle_since = sf_ps_now_ms();
        }
        if (c->st.state == SF_CLONE_CONNECTED) {
            c->grace_deadline = sf_ps_now_ms() + s->grace_ms;
            sf_ps_clone_set_state(s, c, SF_CLONE_DISCONNECTED);
        }
    } else {
        if (!pc->desc_only) {
            sf_ps_log(s, "connection from %s dropped before HELLO: %s",
                      pc->conn->peer, why);
        }
        s->npending--;
    }
    sf_conn_close(pc->conn);
    pc->conn = NULL;
}

int sf_ps_conn_send(SfPageServer *s, SfPsConn *pc, SfMsgType type,
                    const void *body, size_t body_len, const void *payload,
                    size_t payload_len)
{
    GError *err = NULL;

    if (sf_msg_send(pc->conn, type, pc->clone_id, s->cfg->fork_id, body,
                    body_len, payload, payload_len, &err) < 0) {
        /* EPIPE, ECONNRESET or a send timeout: this client is gone. */
        sf_ps_conn_drop(s, pc, err->message);
        g_error_free(err);
        return -1;
    }
    if (pc->clone_id && !pc->desc_only) {
        s->clones[pc->clone_id - 1].st.bytes_sent +=
            SF_WIRE_HDR_SIZE + body_len + payload_len;
        s->stats_dirty = true;
    }
    return 0;
}

/* Answer ERROR(code) and close: after an error the stream is not trusted. */
void sf_ps_conn_fail(SfPageServer *s, SfPsConn *pc, SfWireError code,
                     const char *msg)
{
    uint8_t body[4 + SF_WIRE_ERRMSG_MAX];
    size_t len = sf_wire_error_encode(body, code, msg);
    char *why;

    if (sf_ps_conn_send(s, pc, SF_MSG_ERROR, body, len, NULL, 0) < 0) {
        return;
    }
    why = g_strdup_printf("error %u: %s", code, msg);
    sf_ps_conn_drop(s, pc, why);
    g_free(why);
}
