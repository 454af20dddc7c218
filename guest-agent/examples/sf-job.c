/*
 * sf-job - split a known job across clones of this VM and check it.
 *
 * The job: the sum of i for i in [0, JOB_N).  The parent asks for 4
 * clones; clone k of m sums its share [(k-1)*JOB_N/m, k*JOB_N/m) and
 * ends with sf_exit(status) where status = k * 1000 + share % 1000, so
 * the parent can check both who answered and what it computed.
 *
 * Output: one line per clone, then
 *   sf-job: PASS clones=M
 *   sf-job: FAIL clones=M bad=B
 * Exit status 0 on PASS, 1 on FAIL or error.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stdint.h>
#include <stdio.h>

#include "sf.h"

#define JOB_N 1000000ull
#define WANT  4

static uint64_t share(int k, int m)
{
    uint64_t lo = (k - 1) * JOB_N / m, hi = k * JOB_N / m, sum = 0;

    for (uint64_t i = lo; i < hi; i++) {
        sum += i;
    }
    return sum;
}

static int expected_status(int k, int m)
{
    return k * 1000 + (int)(share(k, m) % 1000);
}

int main(void)
{
    sf_status_t st[WANT];
    sf_ticket_t t;
    int m, id, n, bad = 0;

    t = sf_request_ticket(WANT, 0);
    if (t < 0 || (m = sf_ticket_granted(t)) < 0) {
        fprintf(stderr, "sf-job: %s\n", sf_last_error());
        return 1;
    }
    fflush(stdout);
    id = sf_clone(t);
    if (id < 0) {
        fprintf(stderr, "sf-job: %s\n", sf_last_error());
        return 1;
    }
    if (id > 0) {
        /* A clone: compute our share and report it. */
        sf_exit(expected_status(id, m));
        fprintf(stderr, "sf-job: clone %d: %s\n", id, sf_last_error());
        return 1;
    }

    n = sf_join(t, st, WANT);
    if (n < 0) {
        fprintf(stderr, "sf-job: %s\n", sf_last_error());
        return 1;
    }
    for (int i = 0; i < n; i++) {
        int want = expected_status(st[i].id, m);
        int ok = st[i].how == SF_EXITED && st[i].status == want;

        printf("clone %d: how=%d status=%d want=%d %s\n", st[i].id, st[i].how,
               st[i].status, want, ok ? "ok" : "BAD");
        bad += !ok;
    }
    bad += m - n;
    printf("sf-job: %s clones=%d", bad ? "FAIL" : "PASS", m);
    if (bad) {
        printf(" bad=%d", bad);
    }
    printf("\n");
    return bad ? 1 : 0;
}
