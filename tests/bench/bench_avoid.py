#!/usr/bin/python3
"""Avoidance and the working set, beside their baselines, in one run.

A 512 MiB parent (busybox, TCG) runs a workload that allocates, fills and
frees 400 MiB, as a long-running server's memory looks, then writes a
64 MiB pattern; it is forked once with free page reporting off (the
balloon device without it: today's behaviour) and once with it on.  Per
fork, clones with background push off, so that only what they touch
travels:
  (a) one sits at its shell for 2 s,
  (b) the same clone then allocates and fills 256 MiB,
  (c) another verifies the 64 MiB pattern;
figures: pages fetched with data and MiB received, faults, time from launch to
ready (shell answered, or the verify done).  Then, reporting on, a fork
with push on: its first clone runs (c) with no working set yet, the
second after it gets the first's working set pushed first.  Cold boot to
the shell is the baseline for time to ready.  A benchmark: it asserts only
that every clone verified the parent's memory.

    tests/bench/bench_avoid.py [--freed-mib 400] [--pattern-mib 64]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import conftest  # noqa: E402
import pattern  # noqa: E402
import sfvm  # noqa: E402

MEM_MIB = 512
FRESH_MIB = 256


def guest_used_mib(vm):
    _, out = vm.serial.run("free -m | awk '/^Mem:/ {print $3}'")
    return int(out.strip().splitlines()[-1])


def parent(lab, name, reporting, freed, pat):
    t0 = time.monotonic()
    vm = lab.vm(name, mem_mib=MEM_MIB, balloon=True if reporting else "off")
    vm.wait_ready()
    boot = time.monotonic() - t0
    vm.serial.run(f"sfpattern once --mib {freed} --seed 7", timeout=600)
    if reporting:
        peak = sfvm.rss_mib(vm.pid)
        deadline = time.monotonic() + 30
        while sfvm.rss_mib(vm.pid) > peak - freed * 2 // 3 and \
                time.monotonic() < deadline:
            time.sleep(0.2)
    pattern.start(vm.serial, pat, 11)
    return vm, boot


def start_clone(lab, r, cid):
    args = [a.replace("@CLONE_ID@", str(cid)) for a in r["clone-args"]]
    c = sfvm.VM(lab.workdir, f"{r['id'] % 10000}-{cid}", mem_mib=MEM_MIB,
                extra_args=args)
    lab.vms.append(c)
    t0 = time.monotonic()
    c.launch()
    c.attach()
    return c, t0


def verify(c, pat):
    pages, bad, line = pattern.verify(c.serial, 11)
    assert pages == pat * 256 and bad == 0, (c.name, line)


def row(label, vm, c, cid, t0, before=None):
    # The clone's own counters: the server's stats file lags up to 1 s.
    st = c.cmd("query-sf-clone")
    pages, nbytes, faults = st["pages-fetched"], st["bytes"], st["faults"]
    if before:
        pages -= before[0]
        nbytes -= before[1]
        faults -= before[2]
    return {"label": label, "pages": pages, "mib": nbytes / 2**20,
            "faults": faults, "ready": time.monotonic() - t0,
            "raw": (st["pages-fetched"], st["bytes"], st["faults"]),
            "avoided": st["avoided-pages"], "ws": st["working-set-pages"]}


def avoid_fork(lab, reporting, freed, pat):
    vm, boot = parent(lab, f"p{int(reporting)}", reporting, freed, pat)
    used = guest_used_mib(vm)
    r, _ = lab.fork(vm, clones=2, launch=False, prefetch=False)
    rows = []
    c, t0 = start_clone(lab, r, 1)
    c.serial.run("true")
    ready = time.monotonic() - t0
    time.sleep(2)
    a = row("(a) at its shell", vm, c, 1, t0)
    a["ready"] = ready
    rows.append(a)
    t0 = time.monotonic()
    c.serial.run(f"sfpattern once --mib {FRESH_MIB} --seed 5", timeout=600)
    rows.append(row(f"(b) fresh {FRESH_MIB} MiB", vm, c, 1, t0, a["raw"]))
    c2, t0 = start_clone(lab, r, 2)
    verify(c2, pat)
    rows.append(row(f"(c) verify {pat} MiB", vm, c2, 2, t0))
    avoided = vm.cmd("query-sf-forks")[-1].get("avoided-pages", 0)
    lab.stop([c, c2, vm])
    return rows, used, boot, avoided


def workset_fork(lab, freed, pat):
    vm, _ = parent(lab, "pws", True, freed, pat)
    r, _ = lab.fork(vm, clones=2, launch=False, prefetch=True)
    rows = []
    for cid, label in ((1, "first clone (no working set yet)"),
                       (2, "second clone (working set first)")):
        c, t0 = start_clone(lab, r, cid)
        verify(c, pat)
        rows.append(row(f"(c) {label}", vm, c, cid, t0))
        lab.stop([c])
    lab.stop([vm])
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--freed-mib", type=int, default=400)
    ap.add_argument("--pattern-mib", type=int, default=64)
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="sf-bench-avoid-")
    lab = conftest.Lab(workdir)
    try:
        results = {}
        for reporting in (False, True):
            results[reporting] = avoid_fork(lab, reporting, args.freed_mib,
                                            args.pattern_mib)
        ws = workset_fork(lab, args.freed_mib, args.pattern_mib)
    finally:
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nparent {MEM_MIB} MiB, a workload allocated and freed "
          f"{args.freed_mib} MiB, then a {args.pattern_mib} MiB pattern; "
          "clones with push off")
    print(f"{'reporting':<10} {'clone':<24} {'pages sent':>10} "
          f"{'MiB sent':>9} {'faults':>7} {'ready s':>8} {'avoided':>8}")
    for reporting, (rows, used, boot, avoided) in results.items():
        for r in rows:
            print(f"{'on' if reporting else 'off':<10} {r['label']:<24} "
                  f"{r['pages']:>10} {r['mib']:>9.1f} {r['faults']:>7} "
                  f"{r['ready']:>8.2f} {r['avoided']:>8}")
    for reporting, (rows, used, boot, avoided) in results.items():
        print(f"reporting {'on' if reporting else 'off'}: guest used "
              f"{used} MiB at the fork; zero map {avoided} pages "
              f"({avoided // 256} MiB); (a) sent "
              f"{100 * rows[0]['pages'] / (used * 256):.1f}% of used RAM; "
              f"(b) {rows[1]['pages']} pages for a fresh {FRESH_MIB} MiB; "
              f"cold boot to shell {boot:.2f} s")
    print(f"\nworking set (reporting on, push on), {args.pattern_mib} MiB "
          "verify:")
    print(f"{'clone':<42} {'faults':>7} {'ready s':>8} {'w-set pages':>12} "
          f"{'MiB sent':>9}")
    for r in ws:
        print(f"{r['label']:<42} {r['faults']:>7} {r['ready']:>8.2f} "
              f"{r['ws']:>12} {r['mib']:>9.1f}")
    first, second = ws
    print(f"second clone: {first['faults'] / max(second['faults'], 1):.0f}x "
          f"fewer faults, ready in {second['ready'] / first['ready']:.2f} of "
          "the first's time")


if __name__ == "__main__":
    main()
