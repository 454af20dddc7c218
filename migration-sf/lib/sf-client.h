/*
 * snowflock page client: a clone's side of the page server protocol, one
 * connection at a time: connect and authenticate (sealed when the
 * endpoint crosses a network), ask for pages, say done, and fetch the
 * fork's descriptor for a clone on a host without the parent's files.
 * What to ask for and when is sf-fetch.h's; placing pages is the
 * caller's.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SF_CLIENT_H
#define SF_CLIENT_H

#include <glib.h>
#include <stdint.h>

#include "sf-transport.h"
#include "sf-wire.h"

/*
 * Errors of this domain do not get better by trying again: the server
 * refused (wrong secret, unknown clone id, clone id in use: its ERROR
 * code is in the message) or answered with something else than the
 * protocol says.  Anything else (SF_TRANSPORT_ERROR) is the connection's
 * and may.
 */
#define SF_CLIENT_ERROR sf_client_error_quark()
GQuark sf_client_error_quark(void);

typedef enum SfClientError {
    SF_CLIENT_REFUSED = 1,
    SF_CLIENT_PROTOCOL = 2,
    SF_CLIENT_NOT_YET = 3, /* the descriptor is not there yet */
} SfClientError;

/* Who a clone is to its page server. */
typedef struct SfClientId {
    uint8_t secret[SF_WIRE_SECRET_LEN];
    uint64_t fork_id;
    uint32_t clone_id;
} SfClientId;

/*
 * Connect to endpoint within timeout_ms, send HELLO (hello_flags) and
 * read the WELCOME into *w.  NULL with err on failure.
 */
SfConn *sf_client_connect(const char *endpoint, const SfClientId *id,
                          uint32_t hello_flags, int timeout_ms, SfMsgWelcome *w,
                          GError **err);
/* REQUEST [page, page + npages) of block; rates for the server's pacer. */
int sf_client_request(SfConn *c, const SfClientId *id, uint32_t block,
                      uint64_t page, uint32_t npages, uint32_t flags,
                      uint32_t rx_kbps, uint32_t loss_ppm, GError **err);
/* DONE: every page is here. */
int sf_client_done(SfConn *c, const SfClientId *id, GError **err);
/*
 * The fork's descriptor from its page server (HELLO with
 * SF_HELLO_DESC_ONLY, then DESC_GET chunk by chunk), at most max_len
 * bytes; while the server has none yet (the parent writes it just after
 * the fork) it asks again until timeout_ms.
 */
GBytes *sf_client_fetch_descriptor(const char *endpoint, const SfClientId *id,
                                   size_t max_len, int timeout_ms,
                                   GError **err);

#endif
