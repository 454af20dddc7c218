#!/usr/bin/env python3
"""sf_job.py - sf-job.c in Python: split a known job across 4 clones.

Clone k of m sums i over [(k-1)*N/m, k*N/m) and exits with
k * 1000 + share % 1000; the parent checks every clone's status.
Prints one line per clone and "sf_job.py: PASS clones=M" (exit 0) or
"sf_job.py: FAIL ..." (exit 1).
"""
import sys

import snowflock

JOB_N = 1_000_000
WANT = 4


def share(k, m):
    lo, hi = (k - 1) * JOB_N // m, k * JOB_N // m
    return (lo + hi - 1) * (hi - lo) // 2   # sum(range(lo, hi))


def expected_status(k, m):
    return k * 1000 + share(k, m) % 1000


def main():
    try:
        ticket = snowflock.request_ticket(WANT)
        me = snowflock.clone(ticket)
    except snowflock.Error as e:
        print("sf_job.py: %s" % e.strerror, file=sys.stderr)
        return 1
    if me:
        sys.stdout.flush()
        snowflock.exit(expected_status(me, ticket.granted))

    statuses = snowflock.join(ticket)
    bad = ticket.granted - len(statuses)
    for s in statuses:
        want = expected_status(s.id, ticket.granted)
        ok = s.how == snowflock.EXITED and s.status == want
        bad += not ok
        print("clone %d: %s %d want %d %s"
              % (s.id, s.how_name, s.status, want, "ok" if ok else "BAD"))
    print("sf_job.py: %s clones=%d%s" % ("FAIL" if bad else "PASS",
                                        ticket.granted,
                                        " bad=%d" % bad if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
