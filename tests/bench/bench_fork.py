#!/usr/bin/python3
"""vm-fork beside its baselines, in one invocation, on a 512 MiB guest.

Baselines: a cold boot to the same ready point (the serial shell answers),
and stock QEMU 10.0 snapshot/restore of the same VM (migrate to a file,
restore with -incoming file:).  Then vm-fork with N = 1, 4, 8 clones with
background push, and N = 4 demand-only.  Prints one table; asserts nothing
about speed (this is a benchmark, not a test), but does check that every
clone holds the fork-instant memory, so a fast wrong answer is not a row.

    tests/bench/bench_fork.py [--mib 256] [--counts 1,4,8]
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
import pattern  # noqa: E402
import sfvm  # noqa: E402


def ms(s):
    return f"{s * 1000:.0f}"


def cold_boot(lab):
    t = time.monotonic()
    vm = lab.vm("cold", mem_mib=512)
    vm.wait_ready()
    ready = time.monotonic() - t
    lab.stop([vm])
    return ready


def snapshot_restore(lab, parent, mig):
    """Stock QEMU: migrate the running VM to a file, restore it."""
    t = time.monotonic()
    parent.cmd("migrate", uri=f"file:{mig}")
    while parent.cmd("query-migrate").get("status") not in ("completed",
                                                           "failed"):
        time.sleep(0.01)
    save = time.monotonic() - t
    status = parent.cmd("query-migrate")
    size = os.path.getsize(mig)
    t = time.monotonic()
    vm = sfvm.VM(lab.workdir, "restored", mem_mib=512,
                 extra_args=["-incoming", f"file:{mig}"])
    lab.vms.append(vm)
    vm.launch()
    while vm.cmd("query-status")["status"] != "running":
        time.sleep(0.005)
    running = time.monotonic() - t
    vm.serial.run("true")
    answers = time.monotonic() - t
    pages, bad, _ = pattern.verify(vm.serial, 1)
    assert bad == 0, "restored VM lost its memory"
    lab.stop([vm])
    return save, size, running, answers, status.get("status")


def fork_row(lab, parent, n, prefetch, seed):
    t0 = time.monotonic()
    r, clones = lab.fork(parent, clones=n, prefetch=prefetch)
    ret = time.monotonic() - t0
    for c in clones:
        c.attach()
    for c in clones:
        c.serial.run("true")
    all_answer = time.monotonic() - t0
    at_shell = [c.cmd("query-sf-clone") for c in clones]
    t = time.monotonic()
    for c in clones:
        pages, bad, _ = pattern.verify(c.serial, seed)
        assert bad == 0, f"{c.name}: {bad} pages differ from the fork instant"
    verify_s = (time.monotonic() - t) / n
    stats = [c.cmd("query-sf-clone") for c in clones]
    row = {
        "n": n, "prefetch": prefetch,
        "pause_us": r["pause-us"], "desc": r["descriptor-size"],
        "qmp_ms": ret * 1000,
        "first_insn_ms": statistics.mean(s["start-to-run-us"]
                                         for s in at_shell) / 1000,
        "all_answer_ms": all_answer * 1000,
        "fetched_at_shell": statistics.mean(s["pages-fetched"]
                                            for s in at_shell),
        "fetched": statistics.mean(s["pages-fetched"] for s in stats),
        "faults": statistics.mean(s["faults"] for s in stats),
        "p50": statistics.median(s["fault-p50-us"] for s in stats),
        "p99": max(s["fault-p99-us"] for s in stats),
        "verify_s": verify_s,
    }
    lab.stop(clones)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=int, default=256,
                    help="pattern written in the guest before forking")
    ap.add_argument("--counts", default="1,4,8")
    args = ap.parse_args()
    counts = [int(x) for x in args.counts.split(",")]

    workdir = tempfile.mkdtemp(prefix="sf-bench-")
    lab = conftest.Lab(workdir)
    try:
        boot_s = cold_boot(lab)
        parent = lab.vm("p", mem_mib=512)
        parent.wait_ready()
        pattern.start(parent.serial, args.mib, 1)
        t = time.monotonic()
        pattern.verify(parent.serial, 1)
        parent_verify_s = time.monotonic() - t

        rows = []
        for n in counts:
            rows.append(fork_row(lab, parent, n, True, 1))
        rows.append(fork_row(lab, parent, 4 if 4 in counts else counts[0],
                             False, 1))
        save, size, running, answers, st = snapshot_restore(
            lab, parent, os.path.join(workdir, "vm.mig"))

        print(f"\nsnowflock vm-fork benchmark: 512 MiB microvm guest, TCG, "
              f"{os.cpu_count()} host cores, {args.mib} MiB pattern in use")
        print("\nbaselines")
        print(f"  cold boot to shell answering:          {ms(boot_s):>7} ms")
        print(f"  stock snapshot (migrate to file):      {ms(save):>7} ms "
              f"pause, {size / 2**20:.0f} MiB written ({st})")
        print(f"  stock restore (-incoming file:) run:   {ms(running):>7} ms,"
              f" shell answering at {ms(answers)} ms")
        print(f"  parent verifying {args.mib} MiB itself:        "
              f"{ms(parent_verify_s):>7} ms")
        print("\nvm-fork")
        hdr = (f"{'N':>3} {'push':>5} {'pause':>8} {'desc':>8} {'qmp':>6} "
               f"{'1st insn':>9} {'all shells':>11} {'fetched@sh':>11} "
               f"{'fetched':>8} {'faults':>7} {'p50':>7} {'p99':>8} "
               f"{'verify/clone':>12}")
        print(hdr)
        for r in rows:
            print(f"{r['n']:>3} {'on' if r['prefetch'] else 'off':>5} "
                  f"{r['pause_us'] / 1000:>6.2f}ms {r['desc']:>8} "
                  f"{r['qmp_ms']:>4.0f}ms {r['first_insn_ms']:>7.0f}ms "
                  f"{r['all_answer_ms']:>9.0f}ms "
                  f"{r['fetched_at_shell']:>11.0f} {r['fetched']:>8.0f} "
                  f"{r['faults']:>7.0f} {r['p50']:>5}us {r['p99']:>6}us "
                  f"{r['verify_s'] * 1000:>10.0f}ms")
        print("\ncolumns: pause = parent guest paused; desc = descriptor "
              "bytes; qmp = vm-fork round trip;\n1st insn = clone process "
              "spawn to first guest instruction (mean); all shells = "
              "vm-fork\ncall to every clone's serial shell answering; "
              "fetched@sh / fetched = pages with data per clone\nat that "
              "point / after verifying the pattern; faults, p50, p99 = "
              "demand faults and their\nservice time; verify/clone = time "
              "for a clone to verify the whole pattern (lazy fetch).")
        return 0
    finally:
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
