/*
 * snowflock local protocol: libsf <-> sf-agent over the Unix socket
 * /run/snowflock/agent.sock (SOCK_SEQPACKET, so every send() is one
 * message and message boundaries are kept by the kernel).
 *
 * Both ends run in the same guest, so integers are in host byte order.
 * Every message is an SfLocalHdr followed by exactly hdr.length body
 * bytes; a message whose size, magic, version or type is wrong is
 * rejected (the agent answers EPROTO and closes the connection).
 *
 *   client -> agent   SF_LOCAL_REQ     SfLocalReq (fixed size)
 *   agent -> client   SF_LOCAL_ANSWER  SfLocalAnswer + nstatus * SfLocalStatus
 *
 * A connection has at most one request outstanding: the agent answers a
 * second one with EBUSY.  Requests (op, the fields it uses):
 *
 *   TICKET      n = clones wanted, flags      -> value = ticket, count = m
 *   GRANTED     ticket                        -> count = m (agent's table)
 *   CLONE       ticket, flags                 -> parent: kind RESULT,
 *                                                count = clones started;
 *                                                clone: kind IDENTITY
 *   KILL        ticket                        -> count = clones ended
 *   EXIT        status, how                   -> error only (on success
 *                                                the VM is stopped and no
 *                                                answer comes)
 *   CHECKPOINT  flags                         -> parent: value = checkpoint;
 *                                                clone: kind IDENTITY
 *   CREATE      checkpoint, ticket            -> count = clones started
 *   JOIN        ticket, n = max statuses      -> answered once every clone
 *                                                started from the ticket has
 *                                                ended: nstatus statuses,
 *                                                sorted by clone id
 *
 * An answer with kind IDENTITY carries clone_id and generation; the agent
 * sends it only after the clone's identity steps are done.
 *
 * CLONE and CHECKPOINT with SF_LOCAL_CLONE_FREEZE: the agent freezes the
 * workload cgroup before it asks the host, thaws it in the parent when
 * the answer comes and in each clone once the identity is in place.  The
 * caller must be in the workload cgroup.  If the freeze fails, the answer
 * has kind FREEZE and error EPERM (caller not in the workload cgroup),
 * ENOENT (no workload cgroup) or ETIMEDOUT (its processes did not all
 * freeze), and nothing was asked of the host.  A connection
 * that got an IDENTITY and closes without a successful EXIT makes the
 * agent report the clone as lost (EXIT how=LOST) to the host.
 *
 * error is 0 or a positive errno value (see docs/guest-api.md); the
 * agent adds ECANCELED for a request that can no longer be answered
 * because this VM became a clone while it was outstanding, and
 * ETIMEDOUT for a request the host did not answer before its deadline
 * (every request but JOIN, which waits as long as the clones run); an
 * ETIMEDOUT answer carries value = the deadline in milliseconds and
 * count = SF_LOCAL_TIMEOUT_*, why it passed.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SF_LOCAL_H
#define SF_LOCAL_H

#include <stdint.h>

#define SF_LOCAL_SOCK_NAME  "agent.sock"
#define SF_LOCAL_RUN_DIR    "/run/snowflock"
#define SF_LOCAL_MAGIC      0x434c4653u /* "SFLC" in memory order */
#define SF_LOCAL_VERSION    1
#define SF_LOCAL_MAX_STATUS 4096 /* statuses in one JOIN answer */

typedef struct SfLocalHdr {
    uint32_t magic;
    uint16_t version;
    uint16_t type;     /* SfLocalType */
    uint32_t length;   /* body bytes that follow */
    uint32_t reserved; /* 0 */
} SfLocalHdr;

typedef enum SfLocalType {
    SF_LOCAL_REQ = 1,
    SF_LOCAL_ANSWER = 0x81,
} SfLocalType;

typedef enum SfLocalOp {
    SF_LOCAL_OP_TICKET = 1,
    SF_LOCAL_OP_GRANTED = 2,
    SF_LOCAL_OP_CLONE = 3,
    SF_LOCAL_OP_KILL = 4,
    SF_LOCAL_OP_EXIT = 5,
    SF_LOCAL_OP_CHECKPOINT = 6,
    SF_LOCAL_OP_CREATE = 7,
    SF_LOCAL_OP_JOIN = 8,
} SfLocalOp;

typedef struct SfLocalReq {
    uint32_t op;       /* SfLocalOp */
    uint32_t n;        /* TICKET: clones; JOIN: max statuses */
    uint32_t flags;    /* TICKET: flags; CLONE, CHECKPOINT: SF_LOCAL_CLONE_* */
    int32_t status;    /* EXIT */
    uint32_t how;      /* EXIT: SF_AGENT_HOW_* */
    uint32_t reserved; /* 0 */
    uint64_t ticket;
    uint64_t checkpoint;
} SfLocalReq;

#define SF_LOCAL_CLONE_FREEZE 0x1 /* freeze the workload around the fork */

typedef enum SfLocalKind {
    SF_LOCAL_KIND_RESULT = 0,
    SF_LOCAL_KIND_IDENTITY = 1,
    SF_LOCAL_KIND_FREEZE = 2, /* error: the workload could not be frozen */
} SfLocalKind;

/* SfLocalAnswer.count of an ETIMEDOUT answer. */
typedef enum SfLocalTimeout {
    SF_LOCAL_TIMEOUT_UNANSWERED = 0, /* sent; the host never answered */
    SF_LOCAL_TIMEOUT_QUEUED = 1,     /* not sent: the host still holds as
                                        many unanswered requests as it
                                        takes */
    SF_LOCAL_TIMEOUT_NO_CHANNEL = 2, /* not sent: the port is not open */
} SfLocalTimeout;

typedef struct SfLocalAnswer {
    int32_t error; /* 0 or a positive errno */
    uint32_t kind; /* SfLocalKind */
    uint32_t count;
    uint32_t clone_id; /* IDENTITY */
    uint64_t value;
    uint32_t generation; /* IDENTITY */
    uint32_t nstatus;    /* SfLocalStatus entries that follow */
} SfLocalAnswer;

typedef struct SfLocalStatus {
    int32_t id;
    int32_t how; /* SF_AGENT_HOW_* == SF_EXITED.. in sf.h */
    int32_t status;
    int32_t reserved;
} SfLocalStatus;

#define SF_LOCAL_MAX_MSG                                                       \
    (sizeof(SfLocalHdr) + sizeof(SfLocalAnswer) +                              \
     SF_LOCAL_MAX_STATUS * sizeof(SfLocalStatus))

_Static_assert(sizeof(SfLocalHdr) == 16, "local header layout");
_Static_assert(sizeof(SfLocalReq) == 40, "local request layout");
_Static_assert(sizeof(SfLocalAnswer) == 32, "local answer layout");
_Static_assert(sizeof(SfLocalStatus) == 16, "local status layout");

#endif
