"""Avoidance: memory the parent's guest had freed is never sent.

The parent's guest runs virtio-balloon free page reporting: free memory
it reports is discarded by QEMU, so the fork's frozen image holds it as
never populated.  The page server reads that off its own page tables
(the zero map) and every clone fills those pages with zero itself."""

import os
import struct
import time

import pytest

import pattern
import sfvm
import sfwire

MIB = 256            # pages per MiB
FREED_MIB = 300      # what the workload allocates, fills and frees
PATTERN_MIB = 64     # written just before the fork
FRESH_MIB = 256      # what a clone allocates afterwards


def run_workload(vm, wait_reported=True):
    """Allocate, fill and free FREED_MIB in the guest, as a server's
    memory looks after a burst.  With reporting on, wait until the host
    has taken the freed memory back (the guest reports after ~2 s)."""
    vm.serial.run(f"sfpattern once --mib {FREED_MIB} --seed 7", timeout=300)
    peak = sfvm.rss_mib(vm.pid)
    if wait_reported:
        deadline = time.monotonic() + 30
        while sfvm.rss_mib(vm.pid) > peak - FREED_MIB * 2 // 3:
            assert time.monotonic() < deadline, \
                f"the guest never reported its free memory (RSS {peak} MiB)"
            time.sleep(0.2)
    return peak


def desc_blocks(path):
    """[(idstr, length)] of a fork descriptor (sf-descriptor.h)."""
    with open(path, "rb") as f:
        raw = f.read()
    assert raw[:8] == b"SFDESC\r\n"
    nblocks, name_len, vm_len = struct.unpack_from(">IHH", raw, 36)
    off = 52 + name_len + vm_len
    blocks = []
    for _ in range(nblocks):
        (idlen,) = struct.unpack_from(">H", raw, off)
        idstr = raw[off + 2:off + 2 + idlen].decode()
        (length,) = struct.unpack_from(">Q", raw, off + 2 + idlen)
        blocks.append((idstr, length))
        off += 2 + idlen + 12
    return blocks


def fetched(c):
    return c.cmd("query-sf-clone")["pages-fetched"]


@pytest.fixture
def freed_parent(lab):
    """512 MiB guest that allocated and freed 300 MiB, then wrote a 64 MiB
    pattern of seed 11 right before the fork."""
    vm = lab.vm("p", mem_mib=512)
    vm.wait_ready()
    run_workload(vm)
    pattern.start(vm.serial, PATTERN_MIB, 11)
    return vm


def test_freed_memory_is_never_sent(lab, freed_parent):
    r, clones = lab.fork(freed_parent, clones=2, prefetch=False)
    # The parent runs on and rewrites its pattern.
    pattern.fill(freed_parent.serial, 12)
    forks = freed_parent.cmd("query-sf-forks")
    avoided = forks[0]["avoided-pages"]
    # Most of what was freed (and what was never touched) is in the map.
    assert avoided >= (FREED_MIB - PATTERN_MIB) * MIB * 3 // 4, forks
    for c in clones:
        c.attach()
        pages, bad, line = pattern.verify(c.serial, 11)
        assert pages == PATTERN_MIB * MIB and bad == 0, (c.name, line)
        st = c.cmd("query-sf-clone")
        # The map arrives before any answer: all of it is placed locally.
        assert st["avoided-pages"] == avoided, st
        # Nothing in the map was asked for: what came is what the
        # guest uses, far less than the guest's RAM.
        assert st["pages-fetched"] < 512 * MIB - avoided, st
        # A fresh allocation lands on memory that was free at the fork:
        # zero-filled here, hardly anything fetched for it (INIT_ON_ALLOC
        # zeroes every page it hands out, so each one is touched).
        before = fetched(c)
        c.serial.run(f"sfpattern once --mib {FRESH_MIB} --seed 5",
                     timeout=300)
        fresh = fetched(c) - before
        print(f"{c.name}: avoided {st['avoided-pages']} pages, fetched "
              f"{st['pages-fetched']} to verify, {fresh} for a fresh "
              f"{FRESH_MIB} MiB")
        assert fresh <= FRESH_MIB * MIB // 10, fresh
    served = parent_served(freed_parent)
    for c in clones:
        s = served[c.clone_id]
        assert s["pages-sent"] + s["zero-pages"] <= 512 * MIB - avoided, s


def parent_served(vm):
    forks = vm.cmd("query-sf-forks")
    return {s["clone-id"]: s for s in forks[0]["served"]}


def test_hints_off_and_no_balloon_fork_as_before(lab):
    """Reporting off (the device without it) and no balloon device at
    all: the fork is exactly as correct, only the never-touched memory
    is avoided, and the freed memory is fetched when reused."""
    results = {}
    for mode in ("off", False):
        vm = lab.vm(f"p{mode}", mem_mib=512, balloon=mode)
        vm.wait_ready()
        run_workload(vm, wait_reported=False)
        pattern.start(vm.serial, PATTERN_MIB, 11)
        r, clones = lab.fork(vm, clones=1, prefetch=False)
        c = clones[0]
        c.attach()
        pages, bad, line = pattern.verify(c.serial, 11)
        assert bad == 0, line
        before = fetched(c)
        c.serial.run(f"sfpattern once --mib {FRESH_MIB} --seed 5",
                     timeout=300)
        results[mode] = (c.cmd("query-sf-clone")["avoided-pages"],
                         fetched(c) - before)
        lab.stop([c, vm])
    print(results)
    for mode, (avoided, fresh) in results.items():
        # Freed memory still holds the workload's pattern: not in the map,
        # and fetched when the clone's allocation reuses it.
        assert avoided < (512 - FREED_MIB) * MIB, (mode, avoided)
        assert fresh > FRESH_MIB * MIB // 2, (mode, fresh)


def test_served_image_is_the_parent_at_the_fork(lab, freed_parent):
    """Every page of guest RAM as the page server hands it to a clone is
    the parent's at the fork instant, and every page the zero map names
    is zero there: checked against a dump of the parent, paused across
    the fork so that nothing changes in between."""
    vm = freed_parent
    vm.cmd("stop")
    dump = os.path.join(lab.workdir, "parent.ram")
    vm.cmd("pmemsave", val=0, size=512 << 20, filename=dump)
    r, _ = lab.fork(vm, clones=1, launch=False)
    blocks = desc_blocks(r["descriptor"])
    ram = [i for i, (name, _) in enumerate(blocks) if name == "microvm.ram"]
    assert len(ram) == 1 and blocks[ram[0]][1] == 512 << 20, blocks
    ram = ram[0]
    with open(r["secret-file"], "rb") as f:
        secret = f.read()
    with open(dump, "rb") as f:
        image = f.read()
    zero = bytes(sfwire.PAGE_SIZE)
    with sfwire.SfWireClient(r["server"], r["id"], 1, secret,
                             timeout=30) as c:
        c.hello()
        mapped = [(p, n) for b, p, n in c.zeromap if b == ram]
        assert sum(n for _, n in mapped) >= (FREED_MIB - PATTERN_MIB) * MIB // 2
        in_map = bytearray(512 * MIB)
        # The guest-physical view pmemsave reads has the BIOS ROM over
        # RAM in 0xc0000-0xfffff: not the RAM block's bytes, left out.
        rom = range(0xc0000 // sfwire.PAGE_SIZE, 0x100000 // sfwire.PAGE_SIZE)
        for p, n in mapped:
            in_map[p:p + n] = b"\1" * n
            for k in range(p, p + n):
                if k in rom:
                    continue
                off = k * sfwire.PAGE_SIZE
                assert image[off:off + sfwire.PAGE_SIZE] == zero, \
                    f"page {k} is in the zero map but not zero"
        # Every other page, as served, is the dump's.
        bad = []
        step = sfwire.MAX_PAGES
        for first in range(0, 512 * MIB, step):
            got = c.read_pages(ram, first * sfwire.PAGE_SIZE, step)
            for k in range(step):
                if in_map[first + k] or first + k in rom:
                    continue
                off = (first + k) * sfwire.PAGE_SIZE
                if got[k * sfwire.PAGE_SIZE:(k + 1) * sfwire.PAGE_SIZE] != \
                        image[off:off + sfwire.PAGE_SIZE]:
                    bad.append(first + k)
        assert not bad, f"{len(bad)} pages differ, first {bad[:8]}"
        c.done()
    vm.cmd("cont")


def test_clone_of_clone_and_reporting_in_clones(lab, freed_parent):
    """A clone's own guest keeps reporting: while its memory is lazy
    QEMU ignores the reports (a discarded page would fault again), and
    once complete it takes them again, so a clone forks with a zero map
    of its own."""
    r, clones = lab.fork(freed_parent, clones=1)
    c = clones[0]
    c.attach()
    if c.cmd("query-sf-clone")["state"] != "complete":
        c.wait_event("SF_CLONE_COMPLETE", timeout=180)
    pages, bad, line = pattern.verify(c.serial, 11)
    assert bad == 0, line
    # What the clone's guest frees now is reported and given back.
    c.serial.run("sfpattern once --mib 200 --seed 9", timeout=300)
    peak = sfvm.rss_mib(c.pid)
    deadline = time.monotonic() + 30
    while sfvm.rss_mib(c.pid) > peak - 100:
        assert time.monotonic() < deadline, (peak, sfvm.rss_mib(c.pid))
        time.sleep(0.2)
    pattern.fill(c.serial, 13)
    r2, grand = lab.fork(c, clones=1, prefetch=False)
    g = grand[0]
    g.attach()
    pages, bad, line = pattern.verify(g.serial, 13)
    assert bad == 0, line
    assert g.cmd("query-sf-clone")["avoided-pages"] >= 100 * MIB, \
        g.cmd("query-sf-clone")


def start_clone(lab, r, clone_id):
    """Start clone clone_id of a fork made with launch=False, now."""
    args = [a.replace("@CLONE_ID@", str(clone_id)) for a in r["clone-args"]]
    vm = sfvm.VM(lab.workdir, f"c{clone_id}", mem_mib=512, extra_args=args)
    lab.vms.append(vm)
    vm.launch()
    vm.attach()
    return vm


def test_later_clone_gets_the_working_set_first(lab):
    """The page server remembers what the first clone asked for, in
    order; the second clone of the same fork gets it pushed from the
    moment it connects, and takes far fewer faults running the same
    workload."""
    vm = lab.vm("p", mem_mib=512)
    vm.wait_ready()
    pattern.start(vm.serial, PATTERN_MIB, 11)
    r, _ = lab.fork(vm, clones=2, launch=False)
    faults = {}
    for cid in (1, 2):
        c = start_clone(lab, r, cid)
        pages, bad, line = pattern.verify(c.serial, 11)
        assert bad == 0, line
        st = c.cmd("query-sf-clone")
        faults[cid] = st
        print(f"clone {cid}: {st['faults']} faults, {st['working-set-pages']}"
              f" pages from the working set, p50 {st['fault-p50-us']} us")
    first, second = faults[1], faults[2]
    assert first["working-set-pages"] == 0, first
    assert second["working-set-pages"] > PATTERN_MIB * MIB // 2, second
    # A property with a wide margin, not a timing.
    assert second["faults"] * 4 < first["faults"], (first, second)
    forks = vm.cmd("query-sf-forks")
    assert forks[0]["working-set-pages"] >= second["working-set-pages"]
    served = {s["clone-id"]: s for s in forks[0]["served"]}
    assert served[1]["working-set-pushed"] == 0
    assert served[2]["working-set-pushed"] >= second["working-set-pages"]
