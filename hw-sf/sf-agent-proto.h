/*
 * snowflock guest agent channel: the wire format between the in-guest
 * agent (guest-agent/sf-agent) and QEMU's sf-agent-port device
 * (hw-sf/sf-agent.c), carried on the virtio-serial port named
 * SF_AGENT_PORT_NAME.
 *
 * This header is plain C99 and is shared by both sides; it defines
 * layouts only, no code.  All integers are little endian.  See
 * docs/guest-api.md for the semantics of each message.
 *
 * Every frame is a 16-byte header followed by exactly hdr.length body
 * bytes.  For each type the body length is fixed (sf_agent_body_len());
 * a frame whose length differs, whose magic or version is wrong, or
 * whose type is unknown is malformed.  The host never trusts anything
 * in a guest frame: it is validated in full before any field is used.
 *
 * seq: chosen by the guest for requests (any value but 0); the host
 * echoes it in the one answer to that request.  Messages the host sends
 * on its own (an identity pushed to a clone, a clone's exit reported to
 * its parent) carry seq 0, except FREEZE, whose seq the guest echoes in
 * its FREEZE_STATE report.
 *
 * Guest reports (APPLIED, FREEZE_STATE) are not requests: nobody answers
 * them, and the host acts on one only when it expects it (APPLIED after
 * it has sent this VM an identity, FREEZE_STATE for the FREEZE it sent
 * last), so a guest cannot make the host do anything by sending them.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SF_AGENT_PROTO_H
#define SF_AGENT_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define SF_AGENT_PORT_NAME "org.snowflock.agent.0"
#define SF_AGENT_MAGIC 0x47414653u /* "SFAG" in memory order */
#define SF_AGENT_VERSION 1
#define SF_AGENT_HDR_LEN 16
#define SF_AGENT_MAX_BODY 256 /* no type has a longer body */

typedef struct SfAgentHdr {
    uint32_t magic;
    uint8_t version;
    uint8_t type;     /* SfAgentType */
    uint16_t flags;   /* 0; anything else is malformed */
    uint32_t seq;
    uint32_t length;  /* body bytes that follow */
} SfAgentHdr;

typedef enum SfAgentType {
    /* guest -> host: requests */
    SF_AGENT_HELLO = 0x01,        /* SfAgentHello; answered by the device */
    SF_AGENT_TICKET = 0x02,       /* SfAgentTicketReq */
    SF_AGENT_CLONE = 0x03,        /* SfAgentTicketRef */
    SF_AGENT_KILL = 0x04,         /* SfAgentTicketRef */
    SF_AGENT_EXIT = 0x05,         /* SfAgentExitReq (from a clone) */
    SF_AGENT_CHECKPOINT = 0x06,   /* empty body */
    SF_AGENT_CREATE = 0x07,       /* SfAgentCreateReq */

    /* guest -> host: reports, never answered */
    SF_AGENT_APPLIED = 0x08,      /* SfAgentApplied: identity in place */
    SF_AGENT_FREEZE_STATE = 0x09, /* SfAgentFreezeState: answers FREEZE */

    /* guest -> host: the host's clock, answered by the device (CLOCK) */
    SF_AGENT_TIME = 0x0a,         /* SfAgentTime */

    /* host -> guest */
    SF_AGENT_WELCOME = 0x81,      /* SfAgentWelcome: answers HELLO */
    SF_AGENT_RESULT = 0x82,       /* SfAgentResult: answers a request */
    SF_AGENT_IDENTITY = 0x83,     /* SfAgentIdentity: you are a clone */
    SF_AGENT_EXITED = 0x84,       /* SfAgentExited: a clone has ended */
    SF_AGENT_FREEZE = 0x85,       /* SfAgentFreeze: freeze or thaw */
    SF_AGENT_CLOCK = 0x86,        /* SfAgentClock: answers TIME */
} SfAgentType;

/* How a clone ended (SfAgentExitReq.how, SfAgentExited.how). */
typedef enum SfAgentHow {
    SF_AGENT_HOW_EXITED = 0,      /* status: exit code */
    SF_AGENT_HOW_SIGNALED = 1,    /* status: signal number */
    SF_AGENT_HOW_LOST = 2,        /* its program ended without sf_exit */
    SF_AGENT_HOW_KILLED = 3,      /* sf_kill (host only) */
    SF_AGENT_HOW_CRASHED = 4,     /* the clone VM died (host only) */
} SfAgentHow;

typedef struct SfAgentHello {
    uint32_t agent_version;
    uint32_t features;            /* SF_AGENT_FEATURE_* */
} SfAgentHello;

/* HELLO features: what this agent does beyond version 1's basics. */
/* It answers an identity that asks (SF_AGENT_IDENTITY_REPORT) with
 * APPLIED: a management layer may wait for that report. */
#define SF_AGENT_FEATURE_APPLIED 0x1u

typedef struct SfAgentTicketReq {
    uint32_t clones;              /* n >= 1 */
    uint32_t flags;               /* 0 */
} SfAgentTicketReq;

typedef struct SfAgentTicketRef {
    uint64_t ticket;
} SfAgentTicketRef;

typedef struct SfAgentExitReq {
    int32_t status;
    uint32_t how;                 /* EXITED, SIGNALED or LOST */
} SfAgentExitReq;

typedef struct SfAgentCreateReq {
    uint64_t checkpoint;
    uint64_t ticket;
} SfAgentCreateReq;

typedef struct SfAgentWelcome {
    uint32_t version;             /* SF_AGENT_VERSION */
    uint32_t max_pending;         /* requests the host holds at once */
} SfAgentWelcome;

/*
 * error: 0 or a positive errno value.  count/value by request:
 *   TICKET      value = ticket, count = clones granted (m <= n)
 *   CLONE       in the parent: count = m clones started, value = 0
 *   KILL        count = clones ended
 *   EXIT        error only (on success the clone is stopped instead)
 *   CHECKPOINT  in the parent: value = checkpoint
 *   CREATE      count = clones started
 */
typedef struct SfAgentResult {
    int32_t error;
    uint32_t count;
    uint64_t value;
} SfAgentResult;

#define SF_AGENT_HOSTNAME_LEN 64  /* NUL padded; at most 63 characters */
#define SF_AGENT_ENTROPY_LEN 64

/* SfAgentIdentity.flags */
#define SF_AGENT_IDENTITY_REPORT 0x01 /* answer with APPLIED when done */
#define SF_AGENT_IDENTITY_TIME   0x02 /* the host answers TIME */

/*
 * Sent to a clone: the answer to the CLONE (or CHECKPOINT) request it
 * inherited from its parent, or with seq 0 when the clone was made by
 * the operator rather than by a guest request.  Fields the host does not
 * know are zero (no MAC, no address, empty hostname).  realtime_ns and
 * entropy are filled by QEMU when the frame is sent.  With
 * SF_AGENT_IDENTITY_REPORT the host wants to hear APPLIED once the
 * identity is in place (it may be holding the clone's network link down
 * until then).  With SF_AGENT_IDENTITY_TIME the host answers TIME: the
 * realtime_ns of the frame is as old as the frame's way to the agent, so
 * the agent asks for the host's clock again once it is ready to set it.
 * Other flag bits are reserved, and ignored by the guest.
 */
typedef struct SfAgentIdentity {
    uint32_t clone_id;            /* 1..m */
    uint32_t generation;          /* the parent's fork number, >= 1 */
    uint64_t ticket;              /* 0 when not made from a ticket */
    int64_t realtime_ns;          /* host CLOCK_REALTIME */
    uint8_t mac[6];
    uint8_t prefix;               /* IPv4 prefix length, 0: no address */
    uint8_t flags;                /* SF_AGENT_IDENTITY_* */
    uint8_t ipv4[4];              /* network byte order */
    uint32_t reserved2;
    char hostname[SF_AGENT_HOSTNAME_LEN];
    uint8_t entropy[SF_AGENT_ENTROPY_LEN];
} SfAgentIdentity;

/* Sent to a parent, seq 0: clone clone_id of ticket has ended. */
typedef struct SfAgentExited {
    uint64_t ticket;
    uint32_t clone_id;
    int32_t status;
    uint32_t how;                 /* SfAgentHow */
    uint32_t reserved;
} SfAgentExited;

/*
 * Sent by a clone once the identity it was given (clone_id, generation
 * as in the IDENTITY frame) is in place: RNG reseeded, clock set, MAC,
 * address and host name applied; its post-clone scripts run after.
 * realtime_ns: the guest's CLOCK_REALTIME as it sends this, so the host
 * can tell how far the clock it set is off (the frame reaches QEMU
 * within microseconds).
 */
typedef struct SfAgentApplied {
    uint32_t clone_id;
    uint32_t generation;
    int64_t realtime_ns;
} SfAgentApplied;

/*
 * Sent to the guest: freeze (freeze = 1) or thaw (freeze = 0) the
 * workload cgroup (docs/guest-api.md, "Freezing the workload").  A freeze
 * the host does not follow with a thaw within timeout_ms (1..600000) is
 * thawed by the guest itself.  seq is the host's; the guest echoes it.
 */
typedef struct SfAgentFreeze {
    uint32_t freeze;
    uint32_t timeout_ms;
} SfAgentFreeze;

/*
 * The guest's answer to FREEZE, with the FREEZE frame's seq.  error: 0 or
 * a positive errno value (ENOENT: no workload cgroup; ETIMEDOUT: its
 * tasks did not all freeze in time, nothing is left frozen).  frozen:
 * the cgroup's state now.  tasks: processes in it.  frozen_us: on a
 * thaw, how long it was frozen (guest CLOCK_MONOTONIC).
 */
typedef struct SfAgentFreezeState {
    int32_t error;
    uint32_t frozen;
    uint32_t tasks;
    uint32_t reserved;
    uint64_t frozen_us;
} SfAgentFreezeState;

/*
 * The host's clock, for setting the guest's (Cristian's algorithm): the
 * guest sends TIME with a value of its own (its CLOCK_MONOTONIC), the
 * device answers CLOCK at once with the same value and the host's
 * CLOCK_REALTIME; the guest sets its clock to realtime_ns plus half the
 * round trip, which is also how far off it can be.
 */
typedef struct SfAgentTime {
    uint64_t echo;
} SfAgentTime;

typedef struct SfAgentClock {
    int64_t realtime_ns;
    uint64_t echo;
} SfAgentClock;

#ifdef __cplusplus
#define SF_AGENT_STATIC_ASSERT static_assert
#else
#define SF_AGENT_STATIC_ASSERT _Static_assert
#endif
SF_AGENT_STATIC_ASSERT(sizeof(SfAgentHdr) == 16, "header layout");
SF_AGENT_STATIC_ASSERT(sizeof(SfAgentResult) == 16, "result layout");
SF_AGENT_STATIC_ASSERT(sizeof(SfAgentIdentity) == 168, "identity layout");
SF_AGENT_STATIC_ASSERT(sizeof(SfAgentExited) == 24, "exited layout");
SF_AGENT_STATIC_ASSERT(sizeof(SfAgentCreateReq) == 16, "create layout");
SF_AGENT_STATIC_ASSERT(sizeof(SfAgentApplied) == 16, "applied layout");
SF_AGENT_STATIC_ASSERT(sizeof(SfAgentFreeze) == 8, "freeze layout");
SF_AGENT_STATIC_ASSERT(sizeof(SfAgentFreezeState) == 24, "state layout");
SF_AGENT_STATIC_ASSERT(sizeof(SfAgentClock) == 16, "clock layout");

/* The body length of a type, or -1 for an unknown type. */
static inline int sf_agent_body_len(uint8_t type)
{
    switch (type) {
    case SF_AGENT_HELLO:
        return sizeof(SfAgentHello);
    case SF_AGENT_TICKET:
        return sizeof(SfAgentTicketReq);
    case SF_AGENT_CLONE:
    case SF_AGENT_KILL:
        return sizeof(SfAgentTicketRef);
    case SF_AGENT_EXIT:
        return sizeof(SfAgentExitReq);
    case SF_AGENT_CHECKPOINT:
        return 0;
    case SF_AGENT_CREATE:
        return sizeof(SfAgentCreateReq);
    case SF_AGENT_APPLIED:
        return sizeof(SfAgentApplied);
    case SF_AGENT_FREEZE_STATE:
        return sizeof(SfAgentFreezeState);
    case SF_AGENT_TIME:
        return sizeof(SfAgentTime);
    case SF_AGENT_WELCOME:
        return sizeof(SfAgentWelcome);
    case SF_AGENT_RESULT:
        return sizeof(SfAgentResult);
    case SF_AGENT_IDENTITY:
        return sizeof(SfAgentIdentity);
    case SF_AGENT_EXITED:
        return sizeof(SfAgentExited);
    case SF_AGENT_FREEZE:
        return sizeof(SfAgentFreeze);
    case SF_AGENT_CLOCK:
        return sizeof(SfAgentClock);
    }
    return -1;
}

/*
 * The one rule for a clone's host name, on both sides: 1..63 characters
 * of [A-Za-z0-9.-] within a field of `field` bytes (NUL-terminated in
 * it), not starting with '-' or '.'.
 */
static inline int sf_agent_hostname_valid(const char *name, size_t field)
{
    size_t len = 0;

    while (len < field && name[len]) {
        len++;
    }
    if (len == 0 || len >= field || len >= SF_AGENT_HOSTNAME_LEN ||
        name[0] == '-' || name[0] == '.') {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '.')) {
            return 0;
        }
    }
    return 1;
}

/* A type's name, for logs and trace events. */
static inline const char *sf_agent_type_name(uint8_t type)
{
    switch (type) {
    case SF_AGENT_HELLO:
        return "hello";
    case SF_AGENT_TICKET:
        return "ticket";
    case SF_AGENT_CLONE:
        return "clone";
    case SF_AGENT_KILL:
        return "kill";
    case SF_AGENT_EXIT:
        return "exit";
    case SF_AGENT_CHECKPOINT:
        return "checkpoint";
    case SF_AGENT_CREATE:
        return "create";
    case SF_AGENT_APPLIED:
        return "applied";
    case SF_AGENT_FREEZE_STATE:
        return "freeze-state";
    case SF_AGENT_TIME:
        return "time";
    case SF_AGENT_WELCOME:
        return "welcome";
    case SF_AGENT_RESULT:
        return "result";
    case SF_AGENT_IDENTITY:
        return "identity";
    case SF_AGENT_EXITED:
        return "exited";
    case SF_AGENT_FREEZE:
        return "freeze";
    case SF_AGENT_CLOCK:
        return "clock";
    }
    return "unknown";
}

#endif
