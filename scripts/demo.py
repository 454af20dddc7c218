#!/usr/bin/python3
"""snowflock demo: boot a VM, fill guest memory, vm-fork it into clones.

Every clone proves it holds the parent's memory as of the fork instant
(the parent overwrites its own right after the fork), and the per-clone
figures say how that memory arrived.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests", "integration"))
import conftest  # noqa: E402  (the Lab that cleans up after itself)
import pattern  # noqa: E402
import sfvm  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clones", type=int, default=4)
    ap.add_argument("--mib", type=int, default=128,
                    help="guest memory filled with a pattern before the fork")
    ap.add_argument("--no-prefetch", action="store_true")
    args = ap.parse_args()

    workdir = tempfile.mkdtemp(prefix="sf-demo-")
    lab = conftest.Lab(workdir)
    try:
        t0 = time.monotonic()
        parent = lab.vm("demo", mem_mib=512)
        parent.wait_ready()
        print(f"parent: booted to its shell in "
              f"{time.monotonic() - t0:.1f} s (TCG, 512 MiB)")
        print(f"parent: {parent.cmd('query-sf')['userfaultfd']}")
        # A burst that allocates and frees memory, as a server's looks
        # after a while: the guest reports it free (virtio-balloon free
        # page reporting) and QEMU gives it back to the host.
        parent.serial.run("sfpattern once --mib 256 --seed 9", timeout=300)
        peak = sfvm.rss_mib(parent.pid)
        deadline = time.monotonic() + 20
        while sfvm.rss_mib(parent.pid) > peak - 128 and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        print(f"parent: a workload used and freed 256 MiB; its guest "
              f"reported it free: QEMU RSS {peak} -> "
              f"{sfvm.rss_mib(parent.pid)} MiB")
        line = pattern.start(parent.serial, args.mib, 1)
        print(f"parent: wrote a {args.mib} MiB pattern (seed 1): {line}")

        t = time.monotonic()
        r, clones = lab.fork(parent, clones=args.clones,
                             prefetch=not args.no_prefetch)
        print(f"\nvm-fork: {args.clones} clones in "
              f"{(time.monotonic() - t) * 1000:.0f} ms (QMP round trip)")
        print(f"  parent paused {r['pause-us']} us (device state "
              f"{r['save-us']} us, RAM freeze {r['freeze-us']} us)")
        print(f"  descriptor {r['descriptor-size']} bytes: {r['descriptor']}")
        print(f"  page server pid {r['server-pid']} on {r['server']}")
        pattern.fill(parent.serial, 2)
        print("parent: runs on, and has overwritten all of it (seed 2)")

        print(f"\n{'clone':>6} {'first insn':>11} {'shell':>7} "
              f"{'verify':>22} {'faults':>7} {'p50':>6} {'p99':>7} "
              f"{'fetched':>8} {'zero':>6} {'avoided':>8} {'pushed':>8} "
              f"{'w-set':>6}  MAC")
        for c in clones:
            t = time.monotonic()
            c.attach()
            c.serial.run("true")
            shell_s = time.monotonic() - t
            pages, bad, _ = pattern.verify(c.serial, 1)
            st = c.cmd("query-sf-clone")
            mac = c.cmd("qom-get", path="/machine/peripheral/net0",
                        property="mac")
            print(f"{c.name:>6} {st['start-to-run-us'] / 1000:>9.0f}ms "
                  f"{shell_s:>6.2f}s "
                  f"{f'{pages - bad}/{pages} pages ok':>22} "
                  f"{st['faults']:>7} {st['fault-p50-us']:>4}us "
                  f"{st['fault-p99-us']:>5}us {st['pages-fetched']:>8} "
                  f"{st['zero-pages']:>6} {st['avoided-pages']:>8} "
                  f"{st['pushed-pages']:>8} {st['working-set-pages']:>6}  "
                  f"{mac}")
            if bad:
                print(f"{c.name}: MEMORY MISMATCH ({bad} pages)")
                return 1
        pages, bad, _ = pattern.verify(parent.serial, 2)
        print(f"\nparent: its own new pattern verifies: {pages - bad}/"
              f"{pages} pages ok")
        for f in parent.cmd("query-sf-forks"):
            print(f"fork {f['id']:x}: server alive={f['server-alive']} "
                  f"footprint={f['footprint-bytes'] // 1024} KiB")
            if "avoided-pages" in f:
                print(f"  zero map: {f['avoided-pages']} pages "
                      f"({f['avoided-pages'] // 256} MiB) every clone filled "
                      f"itself, never sent; working set: "
                      f"{f.get('working-set-pages', 0)} pages in the order "
                      f"first asked for, pushed first to later clones")
            for s in f["served"]:
                print(f"  served clone {s['clone-id']}: {s['state']}, "
                      f"{s['pages-sent']} pages sent, {s['zero-pages']} "
                      f"zero, {s['bytes-sent'] // 1024} KiB, "
                      f"{s['working-set-pushed']} from the working set")
        return 0
    finally:
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
