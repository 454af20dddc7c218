#!/usr/bin/python3
"""Warm clones: vm-fork to a clone running, pooled against spawned, beside
stock QEMU postcopy's switch-over and a cold boot, in one invocation.

A parent (512 MiB, busybox, TCG, a 64 MiB pattern) is forked into N
clones three ways:
  spawned  vm-fork launches them (a process each, started after the fork);
  pooled   N QEMUs started beforehand with -object sf-clone,wait=on and
           the parent's machine options; after vm-fork (launch off) each
           gets object-add secret + sf-clone-become;
and, as the baseline, stock QEMU postcopy: a destination started
beforehand with -incoming defer, `migrate` then `migrate-start-postcopy`
at once, time until the destination runs.  Per clone: vm-fork's return
to its first guest instruction (QEMU's own start-to-run figure, plus
the time before its sf-clone-become for pooled ones) and to its shell
answering.  A benchmark: it asserts only that every clone verified the
parent's memory.

    tests/bench/bench_warm.py [--clones 1,4]
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import conftest  # noqa: E402
import pattern  # noqa: E402
import sfvm  # noqa: E402
import test_warm_clone as warm  # noqa: E402

MEM_MIB = 512
PATTERN_MIB = 64


def shell_ms(c, t0):
    c.serial.run("true")
    return (time.monotonic() - t0) * 1000


def spawned(lab, parent, n):
    t = time.monotonic()
    r, clones = lab.fork(parent, clones=n)
    t0 = time.monotonic()
    fork_ms = (t0 - t) * 1000
    rows = []
    for c in clones:
        c.attach()
        sh = shell_ms(c, t0)
        st = c.cmd("query-sf-clone")
        # start-to-run counts from the spawn, which vm-fork did before
        # it returned: a lower bound of run after the return.
        rows.append((max(st["start-to-run-us"] / 1000 - fork_ms, 0), sh))
    for c in clones:
        pattern.verify(c.serial, 11)
    lab.stop(clones)
    return rows


class RawQmp:
    """A second QMP monitor of one VM, on a plain socket: one per thread
    (the test's QMP client shares one asyncio loop between VMs)."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.f = self.s.makefile("rwb")
        self.f.readline()                       # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args})
                     .encode() + b"\n")
        self.f.flush()
        while True:
            msg = json.loads(self.f.readline())
            if "return" in msg:
                return msg["return"]
            if "error" in msg:
                raise RuntimeError(msg["error"])


def pooled(lab, parent, n, seq):
    pool, raw = [], []
    for i in range(n):
        path = os.path.join(lab.workdir, f"w{seq}-{i}.qmp2")
        w = lab.vm(f"w{seq}-{i}", mem_mib=MEM_MIB, extra_args=[
            "-object", "sf-clone,id=sf-clone,wait=on",
            "-qmp", f"unix:{path},server=on,wait=off"])
        pool.append(w)
        sfvm.wait_for_path(path, 30)
        raw.append(path)
    for w in pool:
        while w.cmd("query-sf-clone")["state"] != "waiting":
            time.sleep(0.05)
    time.sleep(0.5)                             # machines made and reset
    raw = [RawQmp(p) for p in raw]
    r, _ = lab.fork(parent, clones=n, launch=False)
    t0 = time.monotonic()
    rows = [[None, None] for _ in pool]

    def hand_off(i, q):
        # Each over its own QMP socket, all at once, as a pool would.
        secret, clone = warm.clone_props(r, i + 1)
        q.cmd("object-add", **{"qom-type": "secret", "id": secret["id"],
                               "file": secret["file"], "format": "raw"})
        before = (time.monotonic() - t0) * 1000
        q.cmd("sf-clone-become", **warm.become_args(clone))
        st = q.cmd("query-sf-clone")
        rows[i][0] = before + st["start-to-run-us"] / 1000

    threads = [threading.Thread(target=hand_off, args=(i, q))
               for i, q in enumerate(raw)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, w in enumerate(pool):
        rows[i][1] = shell_ms(w, t0)
    for w in pool:
        pages, bad, line = pattern.verify(w.serial, 11)
        assert bad == 0, line
    lab.stop(pool)
    return rows


def postcopy(lab):
    src = lab.vm("pc-src", mem_mib=MEM_MIB, balloon=False)
    src.wait_ready()
    dst = lab.vm("pc-dst", mem_mib=MEM_MIB, balloon=False,
                 extra_args=["-incoming", "defer"])
    uri = "unix:" + os.path.join(lab.workdir, "mig.sock")
    caps = [{"capability": "postcopy-ram", "state": True}]
    for vm in (src, dst):
        vm.cmd("migrate-set-capabilities", capabilities=caps)
    dst.cmd("migrate-incoming", uri=uri)
    t0 = time.monotonic()
    src.cmd("migrate", uri=uri)
    src.cmd("migrate-start-postcopy")
    while dst.cmd("query-status")["status"] != "running":
        time.sleep(0.0005)
    run_ms = (time.monotonic() - t0) * 1000
    dst.serial.run("true")
    sh = (time.monotonic() - t0) * 1000
    lab.stop([src, dst])
    return run_ms, sh


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clones", default="1,4")
    args = ap.parse_args()
    ns = [int(x) for x in args.clones.split(",")]
    workdir = tempfile.mkdtemp(prefix="sf-bench-warm-")
    lab = conftest.Lab(workdir)
    results = []
    try:
        t = time.monotonic()
        parent = lab.vm("p", mem_mib=MEM_MIB)
        parent.wait_ready()
        boot_ms = (time.monotonic() - t) * 1000
        pattern.start(parent.serial, PATTERN_MIB, 11)
        for seq, n in enumerate(ns):
            results.append(("spawned", n, spawned(lab, parent, n)))
            results.append(("pooled", n, pooled(lab, parent, n, seq)))
        pc_run, pc_shell = postcopy(lab)
    finally:
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{'how':<10} {'clones':>6} {'to running ms':>14} "
          f"{'(max)':>7} {'to shell ms':>12} {'(max)':>7}")
    for how, n, rows in results:
        run = [r[0] for r in rows]
        sh = [r[1] for r in rows]
        print(f"{how:<10} {n:>6} {statistics.median(run):>14.1f} "
              f"{max(run):>7.1f} {statistics.median(sh):>12.1f} "
              f"{max(sh):>7.1f}")
    print(f"{'postcopy':<10} {1:>6} {pc_run:>14.1f} {'':>7} "
          f"{pc_shell:>12.1f}   (stock QEMU, -incoming defer, migrate + "
          "migrate-start-postcopy)")
    print(f"{'cold boot':<10} {1:>6} {'':>14} {'':>7} {boot_ms:>12.0f}")


if __name__ == "__main__":
    main()
