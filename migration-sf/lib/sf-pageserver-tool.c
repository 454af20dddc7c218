/*
 * sf-pageserver-tool: serve a file of raw bytes as one RAM block.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The real page server without QEMU, for integration tests and for poking
 * at the protocol by hand:
 *
 *   sf-pageserver-tool --listen unix:/tmp/sf.sock --image ram.bin \
 *       --fork-id 7 --secret-file secret --max-clones 2
 *   sf-pageserver-tool --listen tcp:10.99.1.1:0 --image ram.bin \
 *       --fork-id 7 --secret-file secret --max-clones 8 \
 *       --multicast 239.77.0.1:7000 --interface 10.99.1.1 \
 *       --descriptor desc.bin
 *
 * The secret file holds the fork's 16 raw bytes, as vm-fork writes it: a
 * secret on the command line would be readable by every local user.
 *
 * prints "LISTENING <endpoint>" (with the real port for tcp:HOST:0) on
 * stdout once clients may connect, serves until the page server's lifetime
 * rule ends it (or SIGTERM/SIGINT), and exits 0.  The image is padded with
 * zeros to a whole number of 4 KiB pages; its block is named "image".
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sf-mcast.h"
#include "sf-pageserver.h"
#include "sf-pagesrc.h"
#include "sf-transport.h"
#include "sf-wire.h"

static SfPageServer *server;

static void on_signal(int sig G_GNUC_UNUSED)
{
    /* sf_pageserver_stop() is async-signal-safe (an eventfd write). */
    if (server) {
        sf_pageserver_stop(server);
    }
}

int main(int argc, char **argv)
{
    char *listen_ep = NULL, *image = NULL, *secret_file = NULL;
    char *stats = NULL, *mcast = NULL, *ifaddr = NULL, *descriptor = NULL;
    gint64 fork_id = 1;
    gint max_clones = 1, grace_ms = 0, idle_ms = 0;
    GOptionEntry entries[] = {
        { "listen", 'l', 0, G_OPTION_ARG_STRING, &listen_ep,
          "endpoint to listen on (unix:PATH, tcp:HOST:PORT)", "ENDPOINT" },
        { "image", 'i', 0, G_OPTION_ARG_FILENAME, &image,
          "file served as block 0", "FILE" },
        { "fork-id", 'f', 0, G_OPTION_ARG_INT64, &fork_id,
          "fork id clients must name", "N" },
        { "secret-file", 's', 0, G_OPTION_ARG_FILENAME, &secret_file,
          "file holding the fork secret (16 raw bytes)", "FILE" },
        { "max-clones", 'n', 0, G_OPTION_ARG_INT, &max_clones,
          "clone ids 1..N are served", "N" },
        { "grace-ms", 0, 0, G_OPTION_ARG_INT, &grace_ms,
          "reconnect grace (0: default)", "MS" },
        { "idle-ms", 0, 0, G_OPTION_ARG_INT, &idle_ms,
          "idle timeout (0: default, <0: never)", "MS" },
        { "stats", 0, 0, G_OPTION_ARG_FILENAME, &stats, "write JSON stats here",
          "FILE" },
        { "multicast", 0, 0, G_OPTION_ARG_STRING, &mcast,
          "answer on this multicast group (needs a tcp endpoint)",
          "GROUP:PORT" },
        { "interface", 0, 0, G_OPTION_ARG_STRING, &ifaddr,
          "IPv4 address to send the group's datagrams from", "ADDR" },
        { "descriptor", 0, 0, G_OPTION_ARG_FILENAME, &descriptor,
          "file handed out with DESC_GET", "FILE" },
        { NULL }
    };
    GOptionContext *ctx;
    GError *err = NULL;
    SfPageServerConfig cfg = { 0 };
    SfBlockInfo block = { 0 };
    SfListener *l;
    SfPageSource *src;
    gchar *contents = NULL;
    gsize len = 0;
    gchar *secret = NULL;
    gsize secret_len = 0;
    uint8_t *ram;
    void *hosts[1];
    size_t padded;
    struct sigaction sa;
    int ret;

    ctx = g_option_context_new("- serve a file through the snowflock "
                               "page server");
    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
        fprintf(stderr, "sf-pageserver-tool: %s\n", err->message);
        return 2;
    }
    g_option_context_free(ctx);
    if (!listen_ep || !image || !secret_file) {
        fprintf(stderr, "sf-pageserver-tool: --listen, --image and "
                        "--secret-file are required\n");
        return 2;
    }
    if (!g_file_get_contents(secret_file, &secret, &secret_len, &err)) {
        fprintf(stderr, "sf-pageserver-tool: %s\n", err->message);
        return 2;
    }
    if (secret_len != SF_WIRE_SECRET_LEN) {
        fprintf(stderr,
                "sf-pageserver-tool: %s holds %zu bytes, not the %d of a "
                "fork secret\n",
                secret_file, (size_t)secret_len, SF_WIRE_SECRET_LEN);
        return 2;
    }
    memcpy(cfg.secret, secret, SF_WIRE_SECRET_LEN);
    memset(secret, 0, secret_len);
    g_free(secret);
    if (max_clones < 1 || fork_id < 0) {
        fprintf(stderr, "sf-pageserver-tool: --max-clones must be >= 1 "
                        "and --fork-id >= 0\n");
        return 2;
    }
    if (!g_file_get_contents(image, &contents, &len, &err)) {
        fprintf(stderr, "sf-pageserver-tool: %s\n", err->message);
        return 1;
    }
    if (len == 0) {
        fprintf(stderr, "sf-pageserver-tool: image %s is empty\n", image);
        return 1;
    }
    padded =
        (len + SF_WIRE_PAGE_SIZE - 1) / SF_WIRE_PAGE_SIZE * SF_WIRE_PAGE_SIZE;
    ram = g_malloc0(padded);
    memcpy(ram, contents, len);
    g_free(contents);

    g_strlcpy(block.idstr, "image", sizeof(block.idstr));
    block.length = padded;
    block.page_size = SF_WIRE_PAGE_SIZE;
    hosts[0] = ram;
    src = sf_pagesrc_mem_new(&block, hosts, 1);

    l = sf_listen(listen_ep, &err);
    if (!l) {
        fprintf(stderr, "sf-pageserver-tool: %s\n", err->message);
        return 1;
    }
    cfg.fork_id = fork_id;
    cfg.max_clones = max_clones;
    cfg.reconnect_grace_ms = grace_ms;
    cfg.idle_timeout_ms = idle_ms;
    cfg.stats_path = stats;
    cfg.log_prefix = "sf-pageserver-tool";
    cfg.descriptor_path = descriptor;
    if (mcast) {
        SfMcastGroup g = { .ttl = 1 };
        const char *why;
        struct in_addr ia;
        unsigned mtu = 0;

        if (!sf_mcast_parse(mcast, &g, &why)) {
            fprintf(stderr, "sf-pageserver-tool: --multicast %s: %s\n", mcast,
                    why);
            return 2;
        }
        if (ifaddr) {
            if (inet_pton(AF_INET, ifaddr, &ia) != 1) {
                fprintf(stderr,
                        "sf-pageserver-tool: --interface %s is not "
                        "an IPv4 address\n",
                        ifaddr);
                return 2;
            }
            g.ifaddr = ntohl(ia.s_addr);
        }
        cfg.mcast_fd = sf_mcast_sender(&g, &mtu, &err);
        if (cfg.mcast_fd < 0) {
            fprintf(stderr, "sf-pageserver-tool: %s\n", err->message);
            return 1;
        }
        cfg.mcast_group = g.group;
        cfg.mcast_port = g.port;
        cfg.mcast_mtu = mtu;
    }
    printf("LISTENING %s\n", l->endpoint);
    fflush(stdout);

    server = sf_pageserver_new(l, src, &cfg);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    ret = sf_pageserver_run(server);
    {
        SfPageServer *s = server;

        /* No signal may reach a freed server. */
        server = NULL;
        sf_pageserver_free(s);
    }
    g_free(ram);
    g_free(listen_ep);
    g_free(image);
    g_free(secret_file);
    g_free(stats);
    g_free(mcast);
    g_free(ifaddr);
    g_free(descriptor);
    return ret < 0 ? 1 : 0;
}
