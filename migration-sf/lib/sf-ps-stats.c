/*
 * snowflock page server: its log and its stats file.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Both run in a child fork()ed from QEMU (see sf-pageserver.c): log lines
 * are formatted on the stack and written with one write(), never through
 * stdio, whose locks another thread may have held at the fork instant.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sf-pageserver-int.h"

/*
 * The log is a file in the fork directory: a local user who connects and
 * drops over and over must not be able to fill the disk through it.
 */
#define SF_PS_LOG_MAX (1024 * 1024)

void sf_ps_log(SfPageServer *s, const char *fmt, ...)
{
    char buf[768];
    va_list ap;
    int n, m;

    if (s->log_bytes >= SF_PS_LOG_MAX) {
        return;
    }
    n = snprintf(buf, sizeof(buf), "%s: ", s->log_prefix);
    va_start(ap, fmt);
    m = vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
    va_end(ap);
    n = MIN(n + MAX(m, 0), (int)sizeof(buf) - 2);
    if (s->log_bytes + n + 1 >= SF_PS_LOG_MAX) {
        n = snprintf(buf, sizeof(buf),
                     "%s: log limit of %d bytes reached; "
                     "further lines are dropped",
                     s->log_prefix, SF_PS_LOG_MAX);
        s->log_bytes = SF_PS_LOG_MAX;
    }
    buf[n++] = '\n';
    s->log_bytes += n;
    /* One write() so lines from several servers do not interleave. */
    if (write(STDERR_FILENO, buf, n) < 0) {
        /* Nowhere left to report it. */
    }
}

const char *sf_clone_state_name(SfCloneState st)
{
    switch (st) {
    case SF_CLONE_WAITING:
        return "waiting";
    case SF_CLONE_CONNECTED:
        return "connected";
    case SF_CLONE_DISCONNECTED:
        return "disconnected";
    case SF_CLONE_DONE:
        return "done";
    case SF_CLONE_ENDED:
        return "ended";
    }
    return "unknown";
}

void sf_pageserver_mcast_stats(SfPageServer *s, SfPageServerMcastStats *m)
{
    SfEmitterStats e;

    memset(m, 0, sizeof(*m));
    if (!s->emitter) {
        return;
    }
    sf_emitter_stats(s->emitter, &e);
    m->active = !s->mcast_failed;
    m->failed = s->mcast_failed;
    m->data_pages = e.data_pages;
    m->zero_pages = e.zero_pages;
    m->datagrams = e.datagrams;
    m->bytes = e.bytes;
    m->suppressed = e.suppressed;
    m->pacer_waits = e.pacer_waits;
    m->dropped = e.dropped;
    m->rate = e.rate;
    m->window_us = e.window_us;
    m->frags = s->frags;
}

char *sf_pageserver_stats_json(SfPageServer *s)
{
    GString *j = g_string_new(NULL);
    SfPageServerCloneStats tot = { 0 };
    SfPageServerMcastStats m;
    uint32_t i;

    for (i = 0; i < s->cfg->max_clones; i++) {
        const SfPageServerCloneStats *c = &s->clones[i].st;

        tot.requests += c->requests;
        tot.pages_sent += c->pages_sent;
        tot.zero_pages += c->zero_pages;
        tot.bytes_sent += c->bytes_sent;
        tot.connects += c->connects;
    }
    sf_pageserver_mcast_stats(s, &m);
    g_string_append_printf(
        j,
        "{\"fork_id\": %" PRIu64 ", \"max_clones\": %u, "
        "\"running\": %s, \"total_pages\": %" PRIu64 ",\n"
        " \"zero_map\": {\"pages\": %" PRIu64 ", \"runs\": %" PRIu64
        ", \"messages\": %u},\n"
        " \"workset\": {\"pages\": %" PRIu64 "},\n"
        " \"totals\": {\"requests\": %" PRIu64 ", \"pages_sent\": %" PRIu64
        ", \"zero_pages\": %" PRIu64 ", \"bytes_sent\": %" PRIu64
        ", \"connects\": %u},\n"
        " \"multicast\": {\"active\": %s, \"failed\": %s, \"data_pages\": "
        "%" PRIu64 ", \"zero_pages\": %" PRIu64 ", \"datagrams\": %" PRIu64
        ", \"bytes\": %" PRIu64 ", \"suppressed\": %" PRIu64
        ", \"pacer_waits\": %" PRIu64 ", \"dropped\": %" PRIu64
        ", \"rate\": %.0f, \"window_us\": %" PRId64 ", \"fragments\": %u},\n"
        " \"clones\": [",
        s->cfg->fork_id, s->cfg->max_clones, s->running ? "true" : "false",
        s->total_pages, s->zeromap->pages, s->zeromap->runs,
        s->zeromap->bodies->len, sf_workset_len(s->workset), tot.requests,
        tot.pages_sent, tot.zero_pages, tot.bytes_sent, tot.connects,
        m.active ? "true" : "false", m.failed ? "true" : "false", m.data_pages,
        m.zero_pages, m.datagrams, m.bytes, m.suppressed, m.pacer_waits,
        m.dropped, m.rate, m.window_us, m.frags);
    for (i = 0; i < s->cfg->max_clones; i++) {
        const SfPageServerCloneStats *c = &s->clones[i].st;

        g_string_append_printf(
            j,
            "%s\n  {\"clone_id\": %u, \"state\": \"%s\", "
            "\"requests\": %" PRIu64 ", \"pages_sent\": %" PRIu64
            ", \"zero_pages\": %" PRIu64 ", \"bytes_sent\": %" PRIu64
            ", \"connects\": %u, \"mcast_requests\": %" PRIu64
            ", \"unicast_requests\": %" PRIu64 ", \"pushes_dropped\": %" PRIu64
            ", \"workset_pushed\": %" PRIu64 "}",
            i ? "," : "", c->clone_id, sf_clone_state_name(c->state),
            c->requests, c->pages_sent, c->zero_pages, c->bytes_sent,
            c->connects, c->mcast_requests, c->unicast_requests,
            c->pushes_dropped, c->workset_pushed);
    }
    g_string_append(j, "\n ]}\n");
    return g_string_free(j, FALSE);
}

/* Write the stats file atomically: readers see the old or the new one. */
void sf_ps_stats_write(SfPageServer *s)
{
    char *json, *tmp;
    size_t len, off = 0;
    int fd;

    s->stats_dirty = false;
    s->stats_written = sf_ps_now_ms();
    if (!s->cfg->stats_path) {
        return;
    }
    json = sf_pageserver_stats_json(s);
    len = strlen(json);
    tmp = g_strdup_printf("%s.tmp", s->cfg->stats_path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        goto fail;
    }
    while (off < len) {
        ssize_t n = write(fd, json + off, len - off);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            close(fd);
            unlink(tmp);
            goto fail;
        }
        off += n;
    }
    if (close(fd) < 0 || rename(tmp, s->cfg->stats_path) < 0) {
        unlink(tmp);
        goto fail;
    }
    g_free(tmp);
    g_free(json);
    return;

fail:
    /* Stats are an aid, not a reason to stop serving: log once. */
    if (!s->stats_error_logged) {
        char ebuf[128];

        s->stats_error_logged = true;
        sf_ps_log(s, "cannot write stats to %s: %s", s->cfg->stats_path,
                  strerror_r(errno, ebuf, sizeof(ebuf)));
    }
    g_free(tmp);
    g_free(json);
}
