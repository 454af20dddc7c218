/*
 * snowflock: sf-agent-port, the host end of the guest agent channel.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 *   -device virtio-serial-device -device sf-agent-port
 *
 * A virtio-serial port named SF_AGENT_PORT_NAME.  The guest agent writes
 * request frames (hw/sf/sf-agent-proto.h) as a byte stream; this device
 * reassembles them and validates each one in full (sf-agent-frame.c,
 * plain C so that it is fuzzed as it is), answers HELLO itself and
 * refuses what is malformed, too fast (EAGAIN), too many (EBUSY) or
 * invalid (EINVAL).  Every other request gets a QEMU request id, a slot
 * in the pending table and an SF_AGENT_REQUEST event; the management
 * layer answers it with sf-agent-reply, which builds the frame to the
 * guest.  A guest can only ask: nothing it sends makes the host act on
 * its own, allocate memory or block.
 *
 * The pending table migrates with the device.  vm-fork's clones load
 * the parent's device state, so a clone holds the CLONE (or CHECKPOINT)
 * request its parent made and the management layer answers it on the
 * clone's QMP with kind=identity, with the same request id it answers
 * with kind=result on the parent's.
 *
 * Two guest reports are not requests (see the end of the file): APPLIED,
 * the identity this device sent is in place, which releases a clone's
 * held network link (sf-link.c); and FREEZE_STATE, the guest's answer to
 * the workload freeze or thaw sf-agent-freeze / sf-agent-thaw sent.
 * Each is acted on at most once per message the host sent, so no guest
 * can make the host do more by sending them.
 *
 * Everything here runs under the BQL: have_data() from the vCPU thread
 * (virtio notify), the QMP commands from the main loop.
 */

#include "qemu/osdep.h"
#include "qemu/bswap.h"
#include "qemu/cutils.h"
#include "qemu/timer.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-sf.h"
#include "qapi/qapi-events-sf.h"
#include "crypto/random.h"
#include "migration/vmstate.h"
#include "hw/qdev-core.h"
#include "hw/virtio/virtio-serial.h"
#include "hw/sf/sf-agent-proto.h"
#include "hw/sf/sf-agent-frame.h"
#include "hw/sf/sf-link.h"
#include "trace.h"

#include <arpa/inet.h>

#define TYPE_SF_AGENT_PORT "sf-agent-port"
OBJECT_DECLARE_SIMPLE_TYPE(SfAgentPort, SF_AGENT_PORT)

/*
 * sf-agent-freeze: the guest thaws by itself if no thaw follows in time
 * (the management layer may have died between its freeze and its fork).
 */
#define SF_AGENT_FREEZE_TIMEOUT_MS 10000
#define SF_AGENT_FREEZE_TIMEOUT_MAX_MS 600000

/* Told to the guest in WELCOME; the guest must not need more. */
#define SF_AGENT_MAX_PENDING 8

/*
 * Token bucket for requests: a burst of SF_AGENT_BURST, then
 * SF_AGENT_RATE per second.  Generous for a program that forks (sfd has
 * its own, per-domain limits); it is there so a hostile guest cannot
 * make QEMU emit events as fast as it can write.
 */
#define SF_AGENT_BURST 40.0
#define SF_AGENT_RATE 20.0

typedef struct SfAgentPending {
    uint32_t request;     /* 0: slot free */
    uint32_t seq;         /* the guest's, echoed in the answer */
    uint8_t type;         /* SfAgentType of the request */
    bool inherited;       /* loaded with the device state (not migrated) */
} SfAgentPending;

struct SfAgentPort {
    VirtIOSerialPort parent_obj;

    /* Migrated */
    uint32_t next_request;
    uint32_t agent_version;
    uint32_t agent_features; /* SF_AGENT_FEATURE_* of its last HELLO */
    SfAgentPending pending[SF_AGENT_MAX_PENDING];
    SfAgentRx rx;              /* see sf-agent-frame.h */

    /* Per QEMU process */
    double tokens;
    int64_t tokens_ns;
    uint64_t requests;
    uint64_t replies;
    uint64_t malformed;
    uint64_t discarded;
    uint64_t rate_limited;
    uint64_t busy;
    uint64_t dropped;

    /* Per QEMU process: what the guest's reports answer. */
    bool identity_sent;          /* an identity went to this VM */
    bool identity_applied;       /* ... and the guest said APPLIED */
    uint32_t identity_clone_id;
    uint32_t identity_generation;
    uint32_t freeze_seq;         /* the FREEZE awaiting its state, or 0 */
    uint32_t next_freeze_seq;
    uint64_t reports_ignored;
};

/* At most one per VM: the QMP commands have no device argument. */
static SfAgentPort *sf_agent_port;

static bool sf_agent_is_request(uint8_t type)
{
    return type >= SF_AGENT_HELLO && type <= SF_AGENT_CREATE;
}

static bool sf_agent_is_report(uint8_t type)
{
    return type == SF_AGENT_APPLIED || type == SF_AGENT_FREEZE_STATE;
}

static void sf_agent_report(SfAgentPort *s, uint8_t type, uint32_t seq,
                            const uint8_t *body);
static void sf_agent_time(SfAgentPort *s, uint32_t seq, const uint8_t *body);

static SfAgentPending *sf_agent_find(SfAgentPort *s, uint32_t request)
{
    for (int i = 0; i < SF_AGENT_MAX_PENDING; i++) {
        if (request && s->pending[i].request == request) {
            return &s->pending[i];
        }
    }
    return NULL;
}

static uint32_t sf_agent_npending(SfAgentPort *s)
{
    uint32_t n = 0;

    for (int i = 0; i < SF_AGENT_MAX_PENDING; i++) {
        n += s->pending[i].request != 0;
    }
    return n;
}

/*
 * Write one frame to the guest, whole or not at all: a partial frame
 * would desynchronise the guest's reader, and waiting for room would let
 * a guest that does not read stall whoever answers it.
 */
static bool sf_agent_send(SfAgentPort *s, uint8_t type, uint32_t seq,
                          const void *body, uint32_t len, Error **errp)
{
    VirtIOSerialPort *port = VIRTIO_SERIAL_PORT(s);
    uint8_t frame[SF_AGENT_FRAME_MAX];
    SfAgentHdr hdr = {
        .magic = cpu_to_le32(SF_AGENT_MAGIC),
        .version = SF_AGENT_VERSION,
        .type = type,
        .flags = 0,
        .seq = cpu_to_le32(seq),
        .length = cpu_to_le32(len),
    };
    size_t total = SF_AGENT_HDR_LEN + len;
    ssize_t ret;

    assert(len <= SF_AGENT_MAX_BODY && sf_agent_body_len(type) == len);
    memcpy(frame, &hdr, SF_AGENT_HDR_LEN);
    memcpy(frame + SF_AGENT_HDR_LEN, body, len);

    if (!port->guest_connected) {
        s->dropped++;
        trace_sf_agent_drop(sf_agent_type_name(type), seq, "not open");
        error_setg(errp, "the guest does not have port %s open",
                   SF_AGENT_PORT_NAME);
        return false;
    }
    if (virtio_serial_guest_ready(port) < total) {
        s->dropped++;
        trace_sf_agent_drop(sf_agent_type_name(type), seq, "no room");
        error_setg(errp, "the guest is not reading port %s (no room for "
                   "%zu bytes)", SF_AGENT_PORT_NAME, total);
        return false;
    }
    ret = virtio_serial_write(port, frame, total);
    if (ret < 0 || (size_t)ret != total) {
        /* guest_ready() said there was room; count it all the same. */
        s->dropped++;
        trace_sf_agent_drop(sf_agent_type_name(type), seq, "short write");
        error_setg(errp, "short write to port %s (%zd of %zu bytes)",
                   SF_AGENT_PORT_NAME, ret, total);
        return false;
    }
    s->replies++;
    trace_sf_agent_frame_out(sf_agent_type_name(type), seq, len);
    return true;
}

/* Answers the device gives on its own: a failure is counted, not raised. */
static void sf_agent_send_result(SfAgentPort *s, uint32_t seq, int32_t error,
                                 uint32_t count, uint64_t value)
{
    SfAgentResult r = {
        .error = cpu_to_le32(error),
        .count = cpu_to_le32(count),
        .value = cpu_to_le64(value),
    };

    sf_agent_send(s, SF_AGENT_RESULT, seq, &r, sizeof(r), NULL);
}

static void sf_agent_refuse(SfAgentPort *s, uint8_t type, uint32_t seq,
                            int32_t error, const char *why)
{
    trace_sf_agent_refuse(sf_agent_type_name(type), seq, why);
    sf_agent_send_result(s, seq, error, 0, 0);
}

static bool sf_agent_take_token(SfAgentPort *s)
{
    int64_t now = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);

    s->tokens = MIN(SF_AGENT_BURST,
                    s->tokens + (now - s->tokens_ns) * SF_AGENT_RATE / 1e9);
    s->tokens_ns = now;
    if (s->tokens < 1.0) {
        return false;
    }
    s->tokens -= 1.0;
    return true;
}

static void sf_agent_hello(SfAgentPort *s, uint32_t seq, const uint8_t *body)
{
    SfAgentHello h;
    SfAgentWelcome w = {
        .version = cpu_to_le32(SF_AGENT_VERSION),
        .max_pending = cpu_to_le32(SF_AGENT_MAX_PENDING),
    };

    memcpy(&h, body, sizeof(h));
    /* Bits we do not know are kept and reported, not refused. */
    s->agent_version = le32_to_cpu(h.agent_version);
    s->agent_features = le32_to_cpu(h.features);
    sf_agent_send(s, SF_AGENT_WELCOME, seq, &w, sizeof(w), NULL);
}

/* A well-formed request other than HELLO. */
static void sf_agent_request(SfAgentPort *s, uint8_t type, uint32_t seq,
                             const uint8_t *body)
{
    SfAgentPending *slot = NULL;
    SfAgentRequest req;
    const char *bad;
    uint32_t id;

    if (!sf_agent_take_token(s)) {
        s->rate_limited++;
        sf_agent_refuse(s, type, seq, EAGAIN, "rate limited");
        return;
    }
    for (int i = 0; i < SF_AGENT_MAX_PENDING; i++) {
        if (!s->pending[i].request) {
            slot = &s->pending[i];
            break;
        }
    }
    if (!slot) {
        s->busy++;
        sf_agent_refuse(s, type, seq, EBUSY, "too many pending");
        return;
    }
    bad = sf_agent_decode_request(type, body, &req);
    if (bad) {
        sf_agent_refuse(s, type, seq, EINVAL, bad);
        return;
    }

    /* Skip 0 (no request) and, after a wrap, ids still pending. */
    do {
        id = s->next_request++;
    } while (!id || sf_agent_find(s, id));
    slot->request = id;
    slot->seq = seq;
    slot->type = type;
    s->requests++;
    trace_sf_agent_request(id, sf_agent_type_name(type), seq);

    switch (type) {
    case SF_AGENT_TICKET:
        qapi_event_send_sf_agent_request(id, SF_AGENT_OP_TICKET,
                                         true, req.clones, true, req.flags,
                                         false, 0, false, 0, false, 0,
                                         false, 0);
        break;
    case SF_AGENT_CLONE:
    case SF_AGENT_KILL:
        qapi_event_send_sf_agent_request(id, type == SF_AGENT_CLONE ?
                                         SF_AGENT_OP_CLONE : SF_AGENT_OP_KILL,
                                         false, 0, false, 0,
                                         true, req.ticket, false, 0,
                                         false, 0, false, 0);
        break;
    case SF_AGENT_EXIT:
        qapi_event_send_sf_agent_request(id, SF_AGENT_OP_EXIT,
                                         false, 0, false, 0, false, 0,
                                         false, 0, true, req.status,
                                         true, (SfExitHow)req.how);
        break;
    case SF_AGENT_CHECKPOINT:
        qapi_event_send_sf_agent_request(id, SF_AGENT_OP_CHECKPOINT,
                                         false, 0, false, 0, false, 0,
                                         false, 0, false, 0, false, 0);
        break;
    case SF_AGENT_CREATE:
        qapi_event_send_sf_agent_request(id, SF_AGENT_OP_CREATE_CLONES,
                                         false, 0, false, 0,
                                         true, req.ticket,
                                         true, req.checkpoint,
                                         false, 0, false, 0);
        break;
    }
}

/* Handle every complete frame in rx. */
static void sf_agent_parse(SfAgentPort *s)
{
    SfAgentRxItem it;

    for (;;) {
        switch (sf_agent_rx_next(&s->rx, &it)) {
        case SF_AGENT_RX_NEED_MORE:
            return;
        case SF_AGENT_RX_DISCARDED:
            s->discarded += it.dropped;
            trace_sf_agent_discard(it.dropped);
            break;
        case SF_AGENT_RX_MALFORMED:
            s->malformed++;
            s->discarded += it.dropped;
            trace_sf_agent_malformed(it.why, it.type, it.length);
            break;
        case SF_AGENT_RX_FRAME:
            trace_sf_agent_frame_in(sf_agent_type_name(it.type), it.seq,
                                    it.length);
            if (it.type == SF_AGENT_HELLO) {
                sf_agent_hello(s, it.seq, it.body);
            } else if (sf_agent_is_report(it.type)) {
                sf_agent_report(s, it.type, it.seq, it.body);
            } else if (it.type == SF_AGENT_TIME) {
                sf_agent_time(s, it.seq, it.body);
            } else {
                sf_agent_request(s, it.type, it.seq, it.body);
            }
            break;
        }
    }
}

static ssize_t sf_agent_have_data(VirtIOSerialPort *port, const uint8_t *buf,
                                  ssize_t len)
{
    SfAgentPort *s = SF_AGENT_PORT(port);
    ssize_t done = 0;

    /* Everything is consumed: the port is never throttled. */
    while (done < len) {
        done += sf_agent_rx_feed(&s->rx, buf + done, len - done);
        sf_agent_parse(s);
        /* parse() leaves less than a frame, so the next feed has room. */
        assert(s->rx.len < sizeof(s->rx.buf));
    }
    return len;
}

static void sf_agent_set_guest_connected(VirtIOSerialPort *port,
                                         int connected)
{
    SfAgentPort *s = SF_AGENT_PORT(port);

    trace_sf_agent_guest_connected(connected);
    /*
     * A new open is a new stream: drop a partial frame of the old one.
     * Only on close, because after a migration or fork virtio-serial
     * reports the restored "connected" again and the partial frame that
     * came along must survive.  Pending requests stay: the management
     * layer answers them and a reopened agent ignores seqs it does not
     * know.
     */
    if (!connected) {
        sf_agent_rx_reset(&s->rx);
    }
}

static void sf_agent_reset(DeviceState *dev)
{
    SfAgentPort *s = SF_AGENT_PORT(dev);

    /*
     * A rebooted guest has no agent and no requests.  next_request is
     * kept so an id the management layer saw is never reused.
     */
    memset(s->pending, 0, sizeof(s->pending));
    s->agent_version = 0;
    s->agent_features = 0;
    sf_agent_rx_reset(&s->rx);
    s->freeze_seq = 0;
}

static void sf_agent_realize(DeviceState *dev, Error **errp)
{
    SfAgentPort *s = SF_AGENT_PORT(dev);
    VirtIOSerialPort *port = VIRTIO_SERIAL_PORT(dev);

    if (!port->name || strcmp(port->name, SF_AGENT_PORT_NAME)) {
        error_setg(errp, "%s: the port name is always %s, not '%s'",
                   TYPE_SF_AGENT_PORT, SF_AGENT_PORT_NAME,
                   port->name ?: "");
        return;
    }
    if (sf_agent_port) {
        error_setg(errp, "%s: a VM has at most one", TYPE_SF_AGENT_PORT);
        return;
    }
    s->next_request = 1;
    s->tokens = SF_AGENT_BURST;
    s->tokens_ns = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    sf_agent_port = s;
    /* The host end is always open; the guest sees the port as ready. */
    virtio_serial_open(port);
}

static void sf_agent_unrealize(DeviceState *dev)
{
    if (sf_agent_port == SF_AGENT_PORT(dev)) {
        sf_agent_port = NULL;
    }
}

static void sf_agent_instance_init(Object *obj)
{
    VirtIOSerialPort *port = VIRTIO_SERIAL_PORT(obj);

    /* The "name" property setter frees this if the user sets one. */
    port->name = g_strdup(SF_AGENT_PORT_NAME);
}

static int sf_agent_post_load(void *opaque, int version_id)
{
    SfAgentPort *s = opaque;

    if (!sf_agent_rx_valid(&s->rx) || !s->next_request) {
        return -EINVAL;
    }
    for (int i = 0; i < SF_AGENT_MAX_PENDING; i++) {
        SfAgentPending *p = &s->pending[i];

        if (!p->request) {
            continue;
        }
        if (!sf_agent_is_request(p->type) || p->type == SF_AGENT_HELLO ||
            sf_agent_find(s, p->request) != p) {
            return -EINVAL;
        }
        p->inherited = true;
    }
    return 0;
}

static const VMStateDescription vmstate_sf_agent_pending = {
    .name = "sf-agent-port/pending",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT32(request, SfAgentPending),
        VMSTATE_UINT32(seq, SfAgentPending),
        VMSTATE_UINT8(type, SfAgentPending),
        VMSTATE_END_OF_LIST()
    },
};

static const VMStateDescription vmstate_sf_agent = {
    .name = TYPE_SF_AGENT_PORT,
    .version_id = 1,
    .minimum_version_id = 1,
    .post_load = sf_agent_post_load,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT32(next_request, SfAgentPort),
        VMSTATE_UINT32(agent_version, SfAgentPort),
        VMSTATE_UINT32(agent_features, SfAgentPort),
        VMSTATE_STRUCT_ARRAY(pending, SfAgentPort, SF_AGENT_MAX_PENDING, 1,
                             vmstate_sf_agent_pending, SfAgentPending),
        VMSTATE_UINT32(rx.len, SfAgentPort),
        VMSTATE_BUFFER(rx.buf, SfAgentPort),
        VMSTATE_BOOL(rx.resync, SfAgentPort),
        VMSTATE_END_OF_LIST()
    },
};

static void sf_agent_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    VirtIOSerialPortClass *k = VIRTIO_SERIAL_PORT_CLASS(klass);

    k->realize = sf_agent_realize;
    k->unrealize = sf_agent_unrealize;
    k->have_data = sf_agent_have_data;
    k->set_guest_connected = sf_agent_set_guest_connected;
    dc->vmsd = &vmstate_sf_agent;
    dc->desc = "snowflock guest agent channel";
    device_class_set_legacy_reset(dc, sf_agent_reset);
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
}

static const TypeInfo sf_agent_info = {
    .name = TYPE_SF_AGENT_PORT,
    .parent = TYPE_VIRTIO_SERIAL_PORT,
    .instance_size = sizeof(SfAgentPort),
    .instance_init = sf_agent_instance_init,
    .class_init = sf_agent_class_init,
};

static void sf_agent_register_types(void)
{
    type_register_static(&sf_agent_info);
}

type_init(sf_agent_register_types)

/* QMP */

SfAgentInfo *qmp_query_sf_agent(Error **errp)
{
    SfAgentPort *s = sf_agent_port;
    SfAgentInfo *info = g_new0(SfAgentInfo, 1);

    if (!s) {
        return info;
    }
    info->present = true;
    info->guest_connected = VIRTIO_SERIAL_PORT(s)->guest_connected;
    info->agent_version = s->agent_version;
    info->agent_features = s->agent_features;
    info->requests = s->requests;
    info->pending = sf_agent_npending(s);
    info->replies = s->replies;
    info->malformed = s->malformed;
    info->discarded_bytes = s->discarded;
    info->rate_limited = s->rate_limited;
    info->busy = s->busy;
    info->dropped_replies = s->dropped;
    info->reports_ignored = s->reports_ignored;
    return info;
}

/* "52:54:00:12:34:56", exactly; a unicast address. */
static bool sf_agent_parse_mac(const char *str, uint8_t mac[6])
{
    if (strlen(str) != 17) {
        return false;
    }
    for (int i = 0; i < 6; i++) {
        const char *p = str + 3 * i;

        if (!g_ascii_isxdigit(p[0]) || !g_ascii_isxdigit(p[1]) ||
            (i < 5 && p[2] != ':')) {
            return false;
        }
        mac[i] = g_ascii_xdigit_value(p[0]) << 4 | g_ascii_xdigit_value(p[1]);
    }
    return !(mac[0] & 1) && (mac[0] | mac[1] | mac[2] | mac[3] | mac[4] |
                             mac[5]);
}

static bool sf_agent_hostname_ok(const char *name)
{
    return sf_agent_hostname_valid(name, SF_AGENT_HOSTNAME_LEN);
}

/*
 * An identity makes this VM a clone.  Every other request it still holds
 * from its device state was its parent's, in flight at the fork; the
 * parent is the one answered for those (the agent fails them locally
 * with ECANCELED).  Free their slots so the clone has all of its own.
 */
static void sf_agent_drop_inherited(SfAgentPort *s)
{
    for (int i = 0; i < SF_AGENT_MAX_PENDING; i++) {
        SfAgentPending *p = &s->pending[i];

        if (p->request && p->inherited) {
            trace_sf_agent_drop_inherited(p->request,
                                          sf_agent_type_name(p->type),
                                          p->seq);
            memset(p, 0, sizeof(*p));
        }
    }
}

/* The APPLIED report that may follow is for this identity only. */
static void sf_agent_identity_sent(SfAgentPort *s, uint32_t clone_id,
                                   uint32_t generation)
{
    s->identity_sent = true;
    s->identity_applied = false;
    s->identity_clone_id = clone_id;
    s->identity_generation = generation;
}

/* Take the pending request @request answers, or set errp. */
static SfAgentPending *sf_agent_pending_for(SfAgentPort *s, uint32_t request,
                                            Error **errp)
{
    SfAgentPending *p = sf_agent_find(s, request);

    if (!p) {
        error_setg(errp, "sf-agent-reply: request %" PRIu32 " is not "
                   "pending", request);
    }
    return p;
}

static void sf_agent_reply_result(SfAgentPort *s,
                                  const SfAgentReplyResult *a, Error **errp)
{
    SfAgentPending *p = sf_agent_pending_for(s, a->request, errp);
    SfAgentResult r;
    uint32_t seq;

    if (!p) {
        return;
    }
    if (a->has_error && a->error < 0) {
        error_setg(errp, "sf-agent-reply: 'error' must be 0 or a "
                   "positive errno value");
        return;
    }
    r.error = cpu_to_le32(a->has_error ? a->error : 0);
    r.count = cpu_to_le32(a->count);
    r.value = cpu_to_le64(a->value);
    seq = p->seq;
    /*
     * The request is answered even if the guest cannot take the answer:
     * otherwise a guest that never reads would keep its pending slots
     * forever.
     */
    memset(p, 0, sizeof(*p));
    sf_agent_send(s, SF_AGENT_RESULT, seq, &r, sizeof(r), errp);
}

static void sf_agent_reply_identity(SfAgentPort *s,
                                    const SfAgentReplyIdentity *a,
                                    Error **errp)
{
    ERRP_GUARD();
    SfAgentIdentity id = { 0 };
    SfAgentPending *p = NULL;
    uint8_t macb[6];
    struct in_addr addr;
    uint32_t seq = 0;

    if (a->has_request) {
        p = sf_agent_pending_for(s, a->request, errp);
        if (!p) {
            return;
        }
        if (p->type != SF_AGENT_CLONE && p->type != SF_AGENT_CHECKPOINT) {
            error_setg(errp, "sf-agent-reply: request %" PRIu32 " is a "
                       "%s request; an identity answers clone or "
                       "checkpoint", a->request, sf_agent_type_name(p->type));
            return;
        }
        seq = p->seq;
    }
    if (a->clone_id < 1) {
        error_setg(errp, "sf-agent-reply: 'clone-id' must be 1 or more");
        return;
    }
    if (a->generation < 1) {
        error_setg(errp, "sf-agent-reply: 'generation' must be 1 or more");
        return;
    }
    if (a->mac && !sf_agent_parse_mac(a->mac, macb)) {
        error_setg(errp, "sf-agent-reply: 'mac' must be a unicast "
                   "address like 52:54:00:12:34:56, not '%s'", a->mac);
        return;
    }
    if (!a->ip != !a->has_prefix) {
        error_setg(errp, "sf-agent-reply: 'ip' and 'prefix' go together");
        return;
    }
    if (a->ip && inet_pton(AF_INET, a->ip, &addr) != 1) {
        error_setg(errp, "sf-agent-reply: 'ip' must be an IPv4 "
                   "address like 10.0.2.15, not '%s'", a->ip);
        return;
    }
    if (a->has_prefix && (a->prefix < 1 || a->prefix > 32)) {
        error_setg(errp, "sf-agent-reply: 'prefix' must be 1 to 32");
        return;
    }
    if (a->hostname && !sf_agent_hostname_ok(a->hostname)) {
        error_setg(errp, "sf-agent-reply: 'hostname' must be 1 to %d "
                   "of A-Z a-z 0-9 . -", SF_AGENT_HOSTNAME_LEN - 1);
        return;
    }
    id.clone_id = cpu_to_le32(a->clone_id);
    id.generation = cpu_to_le32(a->generation);
    id.ticket = cpu_to_le64(a->ticket);
    if (a->mac) {
        memcpy(id.mac, macb, sizeof(id.mac));
    }
    if (a->ip) {
        memcpy(id.ipv4, &addr, sizeof(id.ipv4));
        id.prefix = a->prefix;
    }
    if (a->hostname) {
        memcpy(id.hostname, a->hostname, strlen(a->hostname));
    }
    /* Report when applied, and ask for the host's clock afresh then. */
    id.flags = SF_AGENT_IDENTITY_REPORT | SF_AGENT_IDENTITY_TIME;
    /*
     * From the host, not from the guest's RNG: a clone's RNG state is its
     * parent's (and with -seed, every run's), which is exactly what this
     * entropy is there to break.
     */
    if (qcrypto_random_bytes(id.entropy, sizeof(id.entropy), errp)) {
        error_prepend(errp, "sf-agent-reply: ");
        return;
    }
    id.realtime_ns = cpu_to_le64(g_get_real_time() * 1000);
    if (p) {
        memset(p, 0, sizeof(*p));
    }
    sf_agent_drop_inherited(s);
    if (sf_agent_send(s, SF_AGENT_IDENTITY, seq, &id, sizeof(id), errp)) {
        sf_agent_identity_sent(s, a->clone_id, a->generation);
    }
}

static void sf_agent_reply_clone_exited(SfAgentPort *s,
                                        const SfAgentReplyCloneExited *a,
                                        Error **errp)
{
    SfAgentExited ex = { 0 };

    if (a->clone_id < 1) {
        error_setg(errp, "sf-agent-reply: 'clone-id' must be 1 or more");
        return;
    }
    ex.ticket = cpu_to_le64(a->ticket);
    ex.clone_id = cpu_to_le32(a->clone_id);
    ex.status = cpu_to_le32(a->status);
    ex.how = cpu_to_le32(a->how);
    sf_agent_send(s, SF_AGENT_EXITED, 0, &ex, sizeof(ex), errp);
}

/*
 * Which members go with which kind is the schema's business (a union on
 * kind): here only values are checked.
 */
void qmp_sf_agent_reply(SfAgentReply *arg, Error **errp)
{
    SfAgentPort *s = sf_agent_port;

    if (!s) {
        error_setg(errp, "this VM has no %s", TYPE_SF_AGENT_PORT);
        return;
    }
    switch (arg->kind) {
    case SF_AGENT_REPLY_KIND_RESULT:
        sf_agent_reply_result(s, &arg->u.result, errp);
        break;
    case SF_AGENT_REPLY_KIND_IDENTITY:
        sf_agent_reply_identity(s, &arg->u.identity, errp);
        break;
    case SF_AGENT_REPLY_KIND_CLONE_EXITED:
        sf_agent_reply_clone_exited(s, &arg->u.clone_exited, errp);
        break;
    default:
        g_assert_not_reached();
    }
}

/* SfExitHow and the wire's SfAgentHow are cast into each other. */
QEMU_BUILD_BUG_ON((int)SF_EXIT_HOW_EXITED != (int)SF_AGENT_HOW_EXITED ||
                  (int)SF_EXIT_HOW_SIGNALED != (int)SF_AGENT_HOW_SIGNALED ||
                  (int)SF_EXIT_HOW_LOST != (int)SF_AGENT_HOW_LOST ||
                  (int)SF_EXIT_HOW_KILLED != (int)SF_AGENT_HOW_KILLED ||
                  (int)SF_EXIT_HOW_CRASHED != (int)SF_AGENT_HOW_CRASHED);

/* Guest reports: APPLIED and FREEZE_STATE */

static void sf_agent_ignore(SfAgentPort *s, uint8_t type, uint32_t seq,
                            const char *why)
{
    s->reports_ignored++;
    trace_sf_agent_report_ignored(sf_agent_type_name(type), seq, why);
}

/*
 * The identity is in place in the guest: the clone may speak on its
 * network from now on.  Only for the identity this device sent, once.
 */
static void sf_agent_applied(SfAgentPort *s, uint32_t seq,
                             const uint8_t *body)
{
    int64_t now_ns = g_get_real_time() * 1000;
    SfAgentApplied a;
    bool released;

    memcpy(&a, body, sizeof(a));
    a.clone_id = le32_to_cpu(a.clone_id);
    a.generation = le32_to_cpu(a.generation);
    a.realtime_ns = le64_to_cpu(a.realtime_ns);
    if (!s->identity_sent) {
        sf_agent_ignore(s, SF_AGENT_APPLIED, seq, "no identity was sent");
        return;
    }
    if (a.clone_id != s->identity_clone_id ||
        a.generation != s->identity_generation) {
        sf_agent_ignore(s, SF_AGENT_APPLIED, seq, "not the identity sent");
        return;
    }
    if (s->identity_applied) {
        sf_agent_ignore(s, SF_AGENT_APPLIED, seq, "already applied");
        return;
    }
    s->identity_applied = true;
    released = sf_link_is_held();
    trace_sf_agent_applied(a.clone_id, a.generation, released);
    /*
     * Before the release, so that nothing the clone sends once its link
     * is up (QEMU's own announce first) precedes the event.  The guest
     * read its clock microseconds ago: a skew, not a latency; in us
     * before subtracting, so no guest value can overflow it.
     */
    qapi_event_send_sf_agent_identity_applied(a.clone_id, a.generation,
                                              released,
                                              (int64_t)a.realtime_ns / 1000 -
                                              now_ns / 1000);
    sf_link_release();
}

/* The guest's answer to the FREEZE this device sent last. */
static void sf_agent_freeze_state(SfAgentPort *s, uint32_t seq,
                                  const uint8_t *body)
{
    SfAgentFreezeState st;
    SfAgentFreezeStatus status;

    memcpy(&st, body, sizeof(st));
    st.error = le32_to_cpu(st.error);
    st.frozen = le32_to_cpu(st.frozen);
    st.tasks = le32_to_cpu(st.tasks);
    st.frozen_us = le64_to_cpu(st.frozen_us);
    if (!s->freeze_seq || seq != s->freeze_seq) {
        sf_agent_ignore(s, SF_AGENT_FREEZE_STATE, seq,
                        "no freeze or thaw with this seq is outstanding");
        return;
    }
    if (st.error < 0 || st.error > 4095 || st.frozen > 1) {
        sf_agent_ignore(s, SF_AGENT_FREEZE_STATE, seq, "bad state");
        return;
    }
    s->freeze_seq = 0;
    status = st.error ? SF_AGENT_FREEZE_STATUS_FAILED :
             st.frozen ? SF_AGENT_FREEZE_STATUS_FROZEN :
             SF_AGENT_FREEZE_STATUS_THAWED;
    trace_sf_agent_freeze_state(seq, SfAgentFreezeStatus_str(status),
                                st.error, st.tasks, st.frozen_us);
    qapi_event_send_sf_agent_freeze(status, st.error, st.tasks, st.frozen_us);
}

static void sf_agent_report(SfAgentPort *s, uint8_t type, uint32_t seq,
                            const uint8_t *body)
{
    if (type == SF_AGENT_APPLIED) {
        sf_agent_applied(s, seq, body);
    } else {
        sf_agent_freeze_state(s, seq, body);
    }
}

/*
 * TIME: the host's clock, at once, for the agent to set the guest's.  A
 * request the device answers itself, under the same rate limit as those
 * it passes on, so a guest asking in a loop costs it no more.
 */
static void sf_agent_time(SfAgentPort *s, uint32_t seq, const uint8_t *body)
{
    SfAgentTime t;
    SfAgentClock c;

    memcpy(&t, body, sizeof(t));
    if (!sf_agent_take_token(s)) {
        s->rate_limited++;
        sf_agent_refuse(s, SF_AGENT_TIME, seq, EAGAIN, "rate limited");
        return;
    }
    c.echo = t.echo;
    c.realtime_ns = cpu_to_le64(g_get_real_time() * 1000);
    sf_agent_send(s, SF_AGENT_CLOCK, seq, &c, sizeof(c), NULL);
}

/* QMP: freezing the guest's workload around a fork */

static void sf_agent_send_freeze(bool freeze, uint32_t timeout_ms,
                                 Error **errp)
{
    SfAgentPort *s = sf_agent_port;
    SfAgentFreeze f = {
        .freeze = cpu_to_le32(freeze),
        .timeout_ms = cpu_to_le32(timeout_ms),
    };
    uint32_t seq;

    if (!s) {
        error_setg(errp, "this VM has no %s", TYPE_SF_AGENT_PORT);
        return;
    }
    /* A newer freeze or thaw supersedes one still unanswered. */
    seq = ++s->next_freeze_seq ?: ++s->next_freeze_seq;
    if (sf_agent_send(s, SF_AGENT_FREEZE, seq, &f, sizeof(f), errp)) {
        s->freeze_seq = seq;
    }
}

void qmp_sf_agent_freeze(bool has_timeout_ms, uint32_t timeout_ms,
                         Error **errp)
{
    if (!has_timeout_ms) {
        timeout_ms = SF_AGENT_FREEZE_TIMEOUT_MS;
    }
    if (timeout_ms < 1 || timeout_ms > SF_AGENT_FREEZE_TIMEOUT_MAX_MS) {
        error_setg(errp, "sf-agent-freeze: 'timeout-ms' must be 1 to %d",
                   SF_AGENT_FREEZE_TIMEOUT_MAX_MS);
        return;
    }
    sf_agent_send_freeze(true, timeout_ms, errp);
}

void qmp_sf_agent_thaw(Error **errp)
{
    sf_agent_send_freeze(false, 0, errp);
}
