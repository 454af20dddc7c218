/*
 * sf-agent freeze: the workload cgroup's freezer (cgroup v2).
 *
 * Freezing is asynchronous in the kernel: writing 1 to cgroup.freeze
 * asks every task to stop at its next return to user space (a task
 * sleeping interruptibly is woken for it), and cgroup.events says
 * "frozen 1" once all have.  The agent waits for that without blocking:
 * freeze_fd() is cgroup.events, which the kernel marks POLLPRI when it
 * changes.  A workload that does not settle within FREEZE_SETTLE_MS (a
 * task stuck in uninterruptible sleep) is thawed again and the freeze
 * fails with ETIMEDOUT: a half-frozen workload guarantees nothing.
 *
 * Dry run (--dry-run): nothing is frozen; "freeze 1" / "freeze 0" lines
 * are recorded and a freeze settles at once.
 *
 * Cost: holders are a small array scanned linearly (at most
 * FREEZE_MAX_HOLDERS, one per fork request in flight).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "freeze.h"
#include "log.h"

#define FREEZE_MAX_HOLDERS 16
#define FREEZE_SETTLE_MS   2000

typedef enum { THAWED, SETTLING, FROZEN } FreezeState;

typedef struct Hold {
    bool used;
    uint64_t holder;
    int64_t deadline; /* CLOCK_MONOTONIC ms */
} Hold;

static const AgentConfig *cfg;
static FreezeDone done_cb;
static void *done_opaque;
static char dir[PATH_MAX];
static bool available;
static FreezeState state;
static Hold holds[FREEZE_MAX_HOLDERS];
static int events_fd = -1;
static int64_t settle_deadline;
static int64_t frozen_since_us;
static uint64_t last_us;

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000ll + ts.tv_nsec / 1000;
}

static void record(const char *fmt, int v)
{
    FILE *f = fopen(cfg->dry_run, "ae");

    if (f) {
        fprintf(f, fmt, v);
        fclose(f);
    }
}

/* Write 1 or 0 to cgroup.freeze.  0 or -errno. */
static int set_freeze(bool on)
{
    char path[PATH_MAX + 16];
    int fd, ret = 0;

    if (cfg->dry_run) {
        record("freeze %d\n", on);
        return 0;
    }
    snprintf(path, sizeof(path), "%s/cgroup.freeze", dir);
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    if (write(fd, on ? "1" : "0", 1) != 1) {
        ret = -errno;
    }
    close(fd);
    return ret;
}

/* 1 if cgroup.events says frozen, 0 if not, -errno. */
static int read_frozen(void)
{
    char buf[256];
    ssize_t n;
    const char *p;

    if (cfg->dry_run) {
        return 1;
    }
    n = pread(events_fd, buf, sizeof(buf) - 1, 0);
    if (n < 0) {
        return -errno;
    }
    buf[n] = '\0';
    p = strstr(buf, "frozen ");
    return p && p[7] == '1';
}

static int nholds(void)
{
    int n = 0;

    for (int i = 0; i < FREEZE_MAX_HOLDERS; i++) {
        n += holds[i].used;
    }
    return n;
}

static void thaw(void)
{
    int err;

    if (state == THAWED) {
        return;
    }
    err = set_freeze(false);
    if (err < 0) {
        /* Nothing better to do than say so: the tasks stay frozen. */
        agent_log("freeze: thawing %s: %s", dir, strerror(-err));
    }
    if (state == FROZEN) {
        last_us = now_us() - frozen_since_us;
        agent_log("freeze: workload thawed after %llu us",
                  (unsigned long long)last_us);
    }
    if (events_fd >= 0) {
        close(events_fd);
        events_fd = -1;
    }
    state = THAWED;
}

/* A freeze that cannot settle: thaw, forget every hold, say why. */
static void fail(int err)
{
    thaw();
    memset(holds, 0, sizeof(holds));
    done_cb(done_opaque, err);
}

int freeze_init(const AgentConfig *c, FreezeDone done, void *opaque)
{
    char path[PATH_MAX + 32];
    struct stat st;

    cfg = c;
    done_cb = done;
    done_opaque = opaque;
    snprintf(dir, sizeof(dir), "%s/%s", cfg->cgroup_root, cfg->workload);
    if (cfg->dry_run) {
        available = true;
        return 0;
    }
    snprintf(path, sizeof(path), "%s/cgroup.controllers", cfg->cgroup_root);
    if (stat(path, &st) < 0) {
        agent_log("freeze: no cgroup v2 at %s; the workload cannot be frozen",
                  cfg->cgroup_root);
        return -ENOENT;
    }
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        int err = errno;

        agent_log("freeze: cannot create %s: %s", dir, strerror(err));
        return -err;
    }
    snprintf(path, sizeof(path), "%s/cgroup.freeze", dir);
    if (stat(path, &st) < 0) {
        agent_log("freeze: %s has no cgroup.freeze (kernel older than 5.2?)",
                  dir);
        return -ENOENT;
    }
    available = true;
    return 0;
}

int freeze_hold(uint64_t holder, int64_t deadline_ms)
{
    char path[PATH_MAX + 16];
    Hold *h = NULL;
    int err, fz;

    if (!available) {
        return -ENOENT;
    }
    for (int i = 0; i < FREEZE_MAX_HOLDERS && !h; i++) {
        if (holds[i].used && holds[i].holder == holder) {
            h = &holds[i];
        }
    }
    for (int i = 0; i < FREEZE_MAX_HOLDERS && !h; i++) {
        if (!holds[i].used) {
            h = &holds[i];
        }
    }
    if (!h) {
        return -EBUSY;
    }
    *h = (Hold){ .used = true, .holder = holder, .deadline = deadline_ms };
    if (state == FROZEN) {
        done_cb(done_opaque, 0);
        return 0;
    }
    if (state == SETTLING) {
        return 0;
    }
    if (!cfg->dry_run) {
        snprintf(path, sizeof(path), "%s/cgroup.events", dir);
        events_fd = open(path, O_RDONLY | O_CLOEXEC);
        if (events_fd < 0) {
            err = -errno;
            h->used = false;
            return err;
        }
    }
    err = set_freeze(true);
    if (err < 0) {
        h->used = false;
        if (events_fd >= 0) {
            close(events_fd);
            events_fd = -1;
        }
        return err;
    }
    state = SETTLING;
    settle_deadline = now_us() / 1000 + FREEZE_SETTLE_MS;
    fz = read_frozen();
    if (fz == 1) {
        freeze_event();
    }
    return 0;
}

void freeze_event(void)
{
    int fz;

    if (state != SETTLING) {
        return;
    }
    fz = read_frozen();
    if (fz < 0) {
        agent_log("freeze: reading %s/cgroup.events: %s", dir, strerror(-fz));
        fail(-fz);
        return;
    }
    if (fz == 1) {
        state = FROZEN;
        frozen_since_us = now_us();
        close(events_fd);
        events_fd = -1;
        agent_log("freeze: workload frozen (%u tasks)", freeze_tasks());
        done_cb(done_opaque, 0);
    }
}

void freeze_drop(uint64_t holder)
{
    for (int i = 0; i < FREEZE_MAX_HOLDERS; i++) {
        if (holds[i].used && holds[i].holder == holder) {
            holds[i].used = false;
        }
    }
    if (!nholds()) {
        thaw();
    }
}

void freeze_drop_all(void)
{
    memset(holds, 0, sizeof(holds));
    thaw();
}

bool freeze_held(uint64_t holder)
{
    for (int i = 0; i < FREEZE_MAX_HOLDERS; i++) {
        if (holds[i].used && holds[i].holder == holder) {
            return true;
        }
    }
    return false;
}

bool freeze_frozen(void)
{
    return state == FROZEN;
}

uint32_t freeze_tasks(void)
{
    char path[PATH_MAX + 16], line[64];
    uint32_t n = 0;
    FILE *f;

    snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
    f = fopen(path, "re");
    if (!f) {
        return 0;
    }
    while (fgets(line, sizeof(line), f)) {
        n++;
    }
    fclose(f);
    return n;
}

uint64_t freeze_last_us(void)
{
    return last_us;
}

int freeze_fd(void)
{
    return state == SETTLING ? events_fd : -1;
}

int freeze_expire(void)
{
    int64_t now = now_us() / 1000, next = INT64_MAX;

    if (state == SETTLING && now >= settle_deadline) {
        agent_log("freeze: the workload did not freeze within %d ms; "
                  "thawing it",
                  FREEZE_SETTLE_MS);
        fail(ETIMEDOUT);
    }
    for (int i = 0; i < FREEZE_MAX_HOLDERS; i++) {
        if (!holds[i].used) {
            continue;
        }
        if (holds[i].deadline <= now) {
            agent_log("freeze: the hold of %s expired",
                      holds[i].holder == FREEZE_HOLDER_HOST ? "the host"
                                                            : "a fork request");
            freeze_drop(holds[i].holder);
        } else if (holds[i].deadline < next) {
            next = holds[i].deadline;
        }
    }
    if (state == SETTLING && settle_deadline < next) {
        next = settle_deadline;
    }
    if (next == INT64_MAX) {
        return -1;
    }
    return next - now > INT_MAX ? INT_MAX : (int)(next - now);
}
