/*
 * sf-agent channel: the port to QEMU's sf-agent-port device.  Finds and
 * opens the virtio-serial port and frames its byte stream both ways
 * (hw-sf/sf-agent-proto.h).  Calls only log.h.
 *
 * The agent is plain C and libc only (no GLib): it is a static binary in
 * a minimal initramfs and in every Debian guest, started before anything
 * else, and must stay small and self-contained.  Error style: functions
 * return 0 / -errno and log once, where the error is consumed.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SF_AGENT_CHANNEL_H
#define SF_AGENT_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sf-agent-proto.h"

/* The wire format is little endian; frames are used in memory order. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "sf-agent assumes a little-endian guest");

#define CHAN_FRAME_MAX (SF_AGENT_HDR_LEN + SF_AGENT_MAX_BODY)

/* Reassembles frames from the byte stream of the port. */
typedef struct ChanReader {
    uint8_t buf[4 * CHAN_FRAME_MAX];
    size_t len;
    uint64_t dropped;    /* bytes skipped while resynchronising */
    uint64_t bad_frames; /* resynchronisations */
} ChanReader;

/*
 * Find the virtio-serial port named SF_AGENT_PORT_NAME under sys_dir
 * (/sys/class/virtio-ports) and store its /dev path.  0 or -ENOENT.
 */
int chan_find_port(const char *sys_dir, char *path, size_t size);

/* Open a char device or connect to a Unix stream socket, non-blocking. */
int chan_open(const char *path);

/*
 * Take the next well-formed host->guest frame out of r: the header is
 * checked against sf_agent_body_len() before the body is looked at; on a
 * bad header one byte is dropped and the reader resynchronises on the
 * next magic.  Returns 1 with *hdr and body filled, 0 when more bytes
 * are needed.
 */
int chan_next_frame(ChanReader *r, SfAgentHdr *hdr, uint8_t *body);

/* Encode a guest->host frame; returns its length. */
size_t chan_encode(uint8_t *out, uint8_t type, uint32_t seq, const void *body,
                   size_t len);

#endif
