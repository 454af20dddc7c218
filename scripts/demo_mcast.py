#!/usr/bin/python3
"""Demo part 3: clones on other hosts, fed by the fork's multicast group.

Two test hosts (network namespaces on a bridge, scripts/test-hosts.sh)
each run two clones of a VM on this host.  The VM is forked twice over
TCP: without a group (every clone fetches its own copy) and with one
(each page sent once for all four).  Every clone verifies the parent's
memory at the fork instant; the page server's egress is printed beside
the unicast figure, as the server and the kernel counted it."""

import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests", "integration"))
import conftest  # noqa: E402
import hosts  # noqa: E402
import mcrig  # noqa: E402
import pattern  # noqa: E402

CLONES, HOSTS, MIB = 4, 2, 64


def one_fork(lab, parent, rig, multicast):
    r = mcrig.fork(parent, rig, clones=CLONES, multicast=multicast)
    lab.servers.append(r["server-pid"])
    wire0, t0 = mcrig.wire_bytes(rig), time.monotonic()
    clones = mcrig.start_clones(lab, parent, r,
                                {k: (k - 1) % HOSTS + 1
                                 for k in range(1, CLONES + 1)}, rig)
    for c in clones:
        pages, bad, _ = pattern.verify(c.serial, 1)
        host = (c.clone_id - 1) % HOSTS + 1
        print(f"  {c.name} on host {host} ({rig.addr(host)}): "
              f"{pages}/{MIB * 256} pages of the fork instant, {bad} wrong",
              flush=True)
        if bad or pages != MIB * 256:
            raise SystemExit(f"demo: {c.name} does not hold the parent's "
                             "memory")
    mcrig.wait_complete(clones)
    took = time.monotonic() - t0
    st = mcrig.clone_stats(clones)
    server = mcrig.server_stats(parent, r["id"])
    lab.stop(clones)
    group, unicast = mcrig.egress(server)
    return {"group": group, "unicast": unicast, "took": took,
            "wire": mcrig.wire_bytes(rig) - wire0,
            "from_group": sum(s.get("multicast", {}).get("pages", 0)
                              for s in st.values()),
            # What had to travel: the zero map's pages never do.
            "pages": sum(s["pages-total"] - s["avoided-pages"]
                         for s in st.values())}


def main():
    workdir = tempfile.mkdtemp(prefix="sf-demo-mcast-")
    lab = conftest.Lab(workdir)
    try:
        parent = lab.vm("demo", mem_mib=256)
        parent.wait_ready()
        pattern.start(parent.serial, MIB, 1)
        with hosts.Rig(HOSTS) as rig:
            print(f"{CLONES} clones on {HOSTS} hosts, over unicast:")
            uni = one_fork(lab, parent, rig, multicast=False)
            print(f"{CLONES} clones on {HOSTS} hosts, over the fork's "
                  f"group {mcrig.group_of(rig)}:")
            mc = one_fork(lab, parent, rig, multicast=True)
    finally:
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{'':<10} {'page server out':>15} {'on the wire':>12} "
          f"{'all memory in':>13} {'pages via group':>16}")
    for name, r in (("unicast", uni), ("multicast", mc)):
        print(f"{name:<10} {(r['group'] + r['unicast']) / 2**20:>11.0f} MiB "
              f"{r['wire'] / 2**20:>8.0f} MiB {r['took']:>11.1f} s "
              f"{r['from_group']:>9}/{r['pages']}")
    print(f"multicast sent {(mc['group'] + mc['unicast']) / 2**20:.0f} MiB "
          f"where unicast sent {(uni['group'] + uni['unicast']) / 2**20:.0f}"
          f" MiB for the same {CLONES} clones")


if __name__ == "__main__":
    main()
