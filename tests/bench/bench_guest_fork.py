#!/usr/bin/python3
"""A program inside the guest forking its own VM, beside booting the same
number of VMs, in one invocation (sfd, busybox guest, 256 MiB, TCG).

Rows, each the median of --runs runs, timed on the host around one guest
shell command:
  sfclone -n N -- true     ticket + sf_clone + N clones each taking their
                           identity, running `true`, sf_exit + the join
  sf-job                   the C example: 4 clones each summing a quarter
                           of 0..10^6, joined and checked
Baseline: `sfctl start` of N fresh VMs of the same domain, one after the
other, to their serial shell answering (what warm workers replace).
Checks each run's result, so a fast wrong answer is not a row.

    tests/bench/bench_guest_fork.py [--counts 1,4,8] [--runs 3]
"""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import sfdlib  # noqa: E402
from test_guest_api import Family  # noqa: E402


def timed(serial, cmd, check):
    t = time.monotonic()
    st, out = serial.run(cmd, timeout=600, check=False)
    dt = time.monotonic() - t
    if not check(st, out):
        raise AssertionError(f"{cmd!r} went wrong ({st}): {out}")
    return dt


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--counts", default="1,4,8")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    counts = [int(x) for x in args.counts.split(",")]
    top = max(counts)

    fam = Family("b", sfdlib.domain_xml(
        "b", clone=f"<sf:clone max='{top}'/>"))
    rows = []
    try:
        for n in counts:
            times = []
            for _ in range(args.runs):
                times.append(timed(
                    fam.serial, f"sfclone -n {n} -- true",
                    lambda st, out, n=n: st == 0 and all(
                        f"clone {k}: exited 0" in out
                        for k in range(1, n + 1))))
                fam.wait_no_clones()
            rows.append((f"sfclone -n {n} -- true", n, times))
        times = []
        for _ in range(args.runs):
            times.append(timed(fam.serial, "sf-job",
                               lambda st, out: "sf-job: PASS" in out))
            fam.wait_no_clones()
        rows.append(("sf-job (4 clones, C)", 4, times))

        # Baseline: boot N VMs of the same kind, one after the other.
        c = fam.c
        boot = {}
        for n in counts:
            t = time.monotonic()
            for i in range(n):
                name = f"cold{n}x{i}"
                c.cmd("define", xml=sfdlib.domain_xml(name, interface=False))
                sfdlib.start_booted(fam.sfd, c, name)
            boot[n] = time.monotonic() - t
            for i in range(n):
                c.cmd("destroy", vm=f"cold{n}x{i}", timeout=60)
    finally:
        fam.close()

    print("\nsnowflock in-guest fork: busybox guest, 256 MiB, TCG, "
          f"{os.cpu_count()} host cores, median of {args.runs}\n")
    print(f"{'':28} {'clones':>6} {'median':>9} {'min':>9} {'max':>9}"
          f" {'boot N VMs':>11} {'speedup':>8}")
    for name, n, times in rows:
        med = statistics.median(times)
        base = boot.get(n)
        base_s = f"{base * 1000:>9.0f}ms" if base else f"{'':>11}"
        speed = f"{base / med:>7.1f}x" if base else ""
        print(f"{name:28} {n:>6} {med * 1000:>7.0f}ms "
              f"{min(times) * 1000:>7.0f}ms {max(times) * 1000:>7.0f}ms"
              f" {base_s} {speed}")
    print("\nTimes include each clone's whole life: fork, identity (RNG, "
          "clock, MAC, IP, host name),\nits work, sf_exit and the parent's "
          "join.  Booting is to a shell only, no work done.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
