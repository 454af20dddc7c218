/*
 * sf-agent channel: find and open the virtio-serial port, and frame the
 * byte stream both ways (hw-sf/sf-agent-proto.h).  Calls only log.c.
 *
 * The port is a byte stream, so a frame may arrive in pieces and several
 * frames in one read.  Frames from the host are checked like the device
 * checks ours: magic, version, flags, a known host->guest type and the
 * exact body length of that type, before the body is used.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "channel.h"
#include "log.h"

int chan_find_port(const char *sys_dir, char *path, size_t size)
{
    DIR *d = opendir(sys_dir);
    struct dirent *e;
    int ret = -ENOENT;

    if (!d) {
        return -ENOENT;
    }
    while ((e = readdir(d))) {
        char name_path[512], name[128];
        FILE *f;

        if (e->d_name[0] == '.') {
            continue;
        }
        snprintf(name_path, sizeof(name_path), "%s/%s/name", sys_dir,
                 e->d_name);
        f = fopen(name_path, "re");
        if (!f) {
            continue;
        }
        if (fgets(name, sizeof(name), f)) {
            name[strcspn(name, "\n")] = '\0';
            if (!strcmp(name, SF_AGENT_PORT_NAME)) {
                snprintf(path, size, "/dev/%s", e->d_name);
                ret = 0;
            }
        }
        fclose(f);
        if (!ret) {
            break;
        }
    }
    closedir(d);
    return ret;
}

int chan_open(const char *path)
{
    struct stat st;
    int fd;

    if (stat(path, &st) < 0) {
        return -errno;
    }
    if (S_ISSOCK(st.st_mode)) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        if (strlen(path) >= sizeof(sa.sun_path)) {
            return -ENAMETOOLONG;
        }
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            return -errno;
        }
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
            fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
            int err = errno;

            close(fd);
            return -err;
        }
        return fd;
    }
    fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    return fd < 0 ? -errno : fd;
}

static bool chan_hdr_ok(const SfAgentHdr *h)
{
    int len;

    if (h->magic != SF_AGENT_MAGIC || h->version != SF_AGENT_VERSION ||
        h->flags != 0 || !(h->type & 0x80)) {
        return false;
    }
    len = sf_agent_body_len(h->type);
    return len >= 0 && h->length == (uint32_t)len;
}

int chan_next_frame(ChanReader *r, SfAgentHdr *hdr, uint8_t *body)
{
    for (;;) {
        if (r->len < SF_AGENT_HDR_LEN) {
            return 0;
        }
        memcpy(hdr, r->buf, sizeof(*hdr));
        if (chan_hdr_ok(hdr)) {
            size_t total = SF_AGENT_HDR_LEN + hdr->length;

            if (r->len < total) {
                return 0;
            }
            memcpy(body, r->buf + SF_AGENT_HDR_LEN, hdr->length);
            memmove(r->buf, r->buf + total, r->len - total);
            r->len -= total;
            /* No stale copy of a frame (a clone's entropy) stays behind. */
            explicit_bzero(r->buf + r->len, total);
            return 1;
        }
        /* Resynchronise: drop bytes up to the next possible magic. */
        {
            static const uint32_t magic = SF_AGENT_MAGIC;
            size_t skip = 1;

            while (skip < r->len &&
                   memcmp(r->buf + skip, &magic,
                          r->len - skip < 4 ? r->len - skip : 4)) {
                skip++;
            }
            r->bad_frames++;
            if (r->bad_frames <= 20 || r->bad_frames % 1000 == 0) {
                agent_log("malformed frame from host (type 0x%02x, "
                          "length %u), resynchronising (%llu so far)",
                          hdr->type, hdr->length,
                          (unsigned long long)r->bad_frames);
            }
            r->dropped += skip;
            memmove(r->buf, r->buf + skip, r->len - skip);
            r->len -= skip;
        }
    }
}

size_t chan_encode(uint8_t *out, uint8_t type, uint32_t seq, const void *body,
                   size_t len)
{
    SfAgentHdr h = {
        .magic = SF_AGENT_MAGIC,
        .version = SF_AGENT_VERSION,
        .type = type,
        .seq = seq,
        .length = len,
    };

    memcpy(out, &h, sizeof(h));
    if (len) {
        memcpy(out + sizeof(h), body, len);
    }
    return sizeof(h) + len;
}
