/*
 * snowflock: test-only failure injection for vm-fork's steps.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * SNOWFLOCK_TEST_FORK_FAIL=STEP in QEMU's environment makes vm-fork fail
 * at STEP (one of sf_fault_steps[]) as if that step's own system call had
 * failed, so tests can prove that a fork failing anywhere leaves no page
 * server, directory, socket or query-sf-forks entry behind.
 *
 * Why an environment variable: it is set by whoever starts QEMU and by
 * nobody else - not by a guest, not over QMP - and it is read once, at the
 * first vm-fork, so it cannot change under a running fork.  (qtest's
 * accelerator would need a test QEMU; our tests run real VMs.)  QEMU warns
 * when it is set, so it is never on by accident, and refuses an unknown
 * step name rather than failing nowhere.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qapi/error.h"
#include "sf-fault.h"

#define SF_FAULT_ENV "SNOWFLOCK_TEST_FORK_FAIL"

/* vm-fork's steps that act (see sf-fork.c), in the order they run. */
static const char *const sf_fault_steps[] = {
    "directory", "secret", "log", "listen", "save", "freeze",
    "descriptor", "launch", NULL,
};

static const char *sf_fault_step(void)
{
    static bool read;
    static const char *step;
    const char *env;

    if (read) {
        return step;
    }
    read = true;
    env = g_getenv(SF_FAULT_ENV);
    if (!env || !*env) {
        return NULL;
    }
    if (!g_strv_contains(sf_fault_steps, env)) {
        g_autofree char *all = g_strjoinv(", ", (char **)sf_fault_steps);

        warn_report("%s=%s is not a vm-fork step (%s); ignored", SF_FAULT_ENV,
                    env, all);
        return NULL;
    }
    step = env;
    warn_report("%s=%s: every vm-fork will fail at step '%s' (for tests "
                "only)", SF_FAULT_ENV, env, env);
    return step;
}

bool sf_fault_inject(const char *step, Error **errp)
{
    const char *want = sf_fault_step();

    assert(g_strv_contains(sf_fault_steps, step));
    if (!want || strcmp(want, step)) {
        return false;
    }
    error_setg(errp, "injected failure (%s=%s)", SF_FAULT_ENV, step);
    return true;
}
