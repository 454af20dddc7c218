#!/usr/bin/python3
"""Clones on other hosts: unicast against the fork's multicast group, in
one invocation.

A parent on this host (256 MiB, busybox, a 96 MiB pattern written before
the fork) is forked over TCP, once per row, without a group (every clone
fetches on its own connection) and with one (tests/integration/mcrig.py);
its N clones start together in H test hosts (network namespaces on a
bridge, hosts.Rig), each reads the whole pattern back (sfpattern verify,
the workload) and fetches the rest of its memory in the background.

Per row: the page server's egress (its group's bytes and every
connection's, as it counts them, and what the kernel counted going onto
the bridge) against one copy of the fork's data pages; the time from
starting the clones until every one has verified its memory, and until
every one holds all of it; the clones' fault latency (median of their
p50, worst p99).  This is a benchmark: it asserts only that every clone
verified the parent's memory, not the figures.

    tests/bench/bench_mcast.py [--clones 1,4,8] [--hosts 4]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import conftest  # noqa: E402
import hosts  # noqa: E402
import mcrig  # noqa: E402
import pattern  # noqa: E402

PATTERN_MIB = 96
MEM_MIB = 256


def run(lab, parent, rig, n, nhosts, multicast):
    r = mcrig.fork(parent, rig, clones=n, multicast=multicast)
    lab.servers.append(r["server-pid"])
    wire0 = mcrig.wire_bytes(rig)
    t0 = time.monotonic()
    clones = mcrig.start_clones(lab, parent, r,
                                {k: (k - 1) % nhosts + 1
                                 for k in range(1, n + 1)}, rig)
    for c in clones:
        pages, bad, line = pattern.verify(c.serial, 1)
        assert pages == PATTERN_MIB * 256 and bad == 0, (c.name, line)
    verified = time.monotonic() - t0
    mcrig.wait_complete(clones)
    complete = time.monotonic() - t0
    wire = mcrig.wire_bytes(rig) - wire0
    st = mcrig.clone_stats(clones)
    server = mcrig.server_stats(parent, r["id"])
    lab.stop(clones)
    group, unicast = mcrig.egress(server)
    pages = next(iter(st.values()))["pages-fetched"]
    return {
        "clones": n, "hosts": nhosts,
        "mode": "multicast" if multicast else "unicast",
        "egress": group + unicast, "group": group, "wire": wire,
        "copies": (group + unicast) / (pages * 4096),
        "verified": verified, "complete": complete,
        "p50": statistics.median(s["fault-p50-us"] for s in st.values()),
        "p99": max(s["fault-p99-us"] for s in st.values()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clones", default="1,4,8",
                    help="clone counts, comma-separated")
    ap.add_argument("--hosts", type=int, default=4,
                    help="test hosts (at most this many, one per clone)")
    args = ap.parse_args()
    counts = [int(x) for x in args.clones.split(",")]

    workdir = tempfile.mkdtemp(prefix="sf-bench-mcast-")
    lab = conftest.Lab(workdir)
    rows = []
    try:
        parent = lab.vm("p", mem_mib=MEM_MIB)
        parent.wait_ready()
        pattern.start(parent.serial, PATTERN_MIB, 1)
        with hosts.Rig(args.hosts) as rig:
            for n in counts:
                for multicast in (False, True):
                    row = run(lab, parent, rig, n, min(n, args.hosts),
                              multicast)
                    rows.append(row)
                    print(f"  {n} clones {row['mode']}: "
                          f"{row['egress'] / 2**20:.0f} MiB out, verified "
                          f"in {row['verified']:.1f} s", flush=True)
    finally:
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nParent {MEM_MIB} MiB, {PATTERN_MIB} MiB pattern; clones on "
          f"test hosts over a bridge; TCG on {os.cpu_count()} cores")
    print(f"{'clones':>6} {'hosts':>5} {'mode':<9} {'egress MiB':>10} "
          f"{'copies':>6} {'wire MiB':>8} {'verified s':>10} {'complete s':>10} "
          f"{'fault p50 us':>12} {'p99 us':>8}")
    for r in rows:
        print(f"{r['clones']:>6} {r['hosts']:>5} {r['mode']:<9} "
              f"{r['egress'] / 2**20:>10.0f} {r['copies']:>6.2f} "
              f"{r['wire'] / 2**20:>8.0f} "
              f"{r['verified']:>10.1f} {r['complete']:>10.1f} "
              f"{r['p50']:>12.0f} {r['p99']:>8.0f}")
    base = next(r for r in rows if r["clones"] == min(counts)
                and r["mode"] == "unicast")
    print(f"\ncopies: egress / one copy of the fork's data pages; "
          f"baseline {base['clones']} clone unicast "
          f"{base['egress'] / 2**20:.0f} MiB, complete in "
          f"{base['complete']:.1f} s")


if __name__ == "__main__":
    main()
