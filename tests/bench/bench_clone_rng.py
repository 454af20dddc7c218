#!/usr/bin/python3
"""A clone's random bytes after a fork, per mechanism, in one invocation.

sf-randlog draws 8 bytes from the guest kernel's RNG every millisecond
in the workload cgroup of a busybox guest; the VM is forked into N
clones, each given its identity as soon as it is up (as sfd does), and
the logs of parent and clones are compared (tests/integration/
clonerng.py, randlog.py).  Mechanisms:

  agent            the guest's vmgenid driver off: the agent's reseed only
  vmgenid          a new VM generation ID before each clone's first
                   instruction; the guest kernel reseeds on it
  vmgenid+freeze   plus the workload frozen around vm-fork

Per mechanism: draws shared between any two of parent and clones after
the fork, the time from the fork to each clone's first draw of its own
(guest time, which does not advance while a VM is paused), the parent's
VM pause, and how long the parent's workload stood still (the VM pause,
plus with the freeze the time it was frozen around it).  This is a
benchmark: it asserts nothing about the figures, only that every fork
was measured.

    tests/bench/bench_clone_rng.py [--forks 5] [--clones 2]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import clonerng  # noqa: E402
import conftest  # noqa: E402


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def measure(lab, vm, name, forks, clones, freeze):
    shared, first, pause, still = [], [], [], []
    for f in range(forks):
        run = clonerng.ForkRun(lab, vm, clones, freeze=freeze,
                               generation=f + 1)
        run.close()
        c = run.cmp
        assert all(c.draws_after_fork(x.name) > 20 for x in run.clones)
        shared.append(c.identical())
        first += [c.divergence_us(x.name) for x in run.clones]
        pause.append(run.pause_us)
        still.append(run.pause_us + (run.thaw["frozen-us"] if freeze else 0))
        print(f"  {name} fork {f + 1}: {c.identical()} shared draws, own "
              f"draws from {[d // 1000 for d in first[-clones:]]} ms",
              flush=True)
    return {"shared": shared, "first": [d for d in first if d is not None],
            "pause": pause, "still": still}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--forks", type=int, default=5)
    ap.add_argument("--clones", type=int, default=2)
    args = ap.parse_args()

    workdir = tempfile.mkdtemp(prefix="sf-bench-rng-")
    lab = conftest.Lab(workdir)
    rows = []
    try:
        plain = clonerng.boot(lab, "nodrv", driver=False)
        assert not clonerng.driver_bound(plain)
        rows.append(("agent", measure(lab, plain, "agent", args.forks,
                                      args.clones, False)))
        plain.close()
        vm = clonerng.boot(lab, "vmgenid")
        assert clonerng.driver_bound(vm)
        rows.append(("vmgenid", measure(lab, vm, "vmgenid", args.forks,
                                        args.clones, False)))
        rows.append(("vmgenid+freeze",
                     measure(lab, vm, "vmgenid+freeze", args.forks,
                             args.clones, True)))
    finally:
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n{args.forks} forks of {args.clones} clones each, busybox "
          f"guest, a draw every 1 ms; TCG on {os.cpu_count()} cores")
    print(f"{'mechanism':<16} {'shared draws':>17} {'first own draw ms':>19} "
          f"{'parent VM pause us':>19} {'workload still us':>18}")
    print(f"{'':<16} {'p50':>8} {'max':>8} {'p50':>9} {'max':>9} "
          f"{'p50':>9} {'max':>9} {'p50':>8} {'max':>9}")
    for name, r in rows:
        print(f"{name:<16} {statistics.median(r['shared']):>8.0f} "
              f"{max(r['shared']):>8} "
              f"{pct(r['first'], 50) / 1000:>9.0f} "
              f"{max(r['first']) / 1000:>9.0f} "
              f"{pct(r['pause'], 50):>9} {max(r['pause']):>9} "
              f"{pct(r['still'], 50):>8} {max(r['still']):>9}")


if __name__ == "__main__":
    main()
