"""No clone draws its parent's or a sibling's random bytes (issue 20).

sf-randlog draws 8 bytes from the kernel RNG every millisecond in the
guest's workload cgroup and logs each draw with CLOCK_MONOTONIC and
CLOCK_REALTIME; the VM is forked while it runs; the test plays the
management layer (clonerng.py) and compares the logs (randlog.py).  In
the busybox and the Debian guest, forks of 2 and 4 clones, 5 each (tests/bench/bench_clone_rng.py
runs more):

  vmgenid  each clone gets a new VM generation ID before its first
           instruction: its kernel reseeds within a bounded time, and
           the draws shared with another VM are at most VMGENID_BOUND
  freeze   the workload is frozen around the fork: no shared draw at all
  agent    (busybox) the guest's vmgenid driver is off: only the agent's
           reseed, when the identity arrives; more shared draws, and none
           after the reseed

Whatever the mechanism, no draw is shared after the clone's agent has
reseeded its RNG with host entropy.  The clock is measured the same way
(test_clock_*): the clone's CLOCK_REALTIME before and after its identity.

Bounds (docs/guest-api.md, "Guarantees"): measured here under TCG on 2
busy cores, where a clone's first moments are slow (every page it touches
is fetched, every code path translated anew), with room for a busier
machine."""

import shutil
import tempfile
import time

import pytest

import clonerng
import conftest

# Draws a workload drawing every ms may share with another VM when only
# VMGenID protects it.  The kernel reseeds from a work queue, behind the
# GED's threaded IRQ that runs the ACPI method, both competing with the
# workload for a vCPU that, in a clone's first moments, fetches every
# page it touches and translates every code path anew (TCG): measured
# here 0-16 shared draws with 2 clones and 1-42 with 4, the reseed
# 0.1-1.1 s of guest time after the first instruction.  The bound leaves
# room for a busier machine; docs/guest-api.md states it.
VMGENID_BOUND = 96
# The clone's wall clock once the agent has set it from the identity (QEMU
# reads the host's clock as it sends the frame): behind the host by the
# frame's way to the agent's clock_settime.  Measured by QEMU from the
# agent's APPLIED report (SF_AGENT_IDENTITY_APPLIED clock-skew-us).
CLOCK_SKEW_US = 50000
FORKS = 5


@pytest.fixture(scope="module", params=["busybox", "debian"])
def parent(request):
    workdir = tempfile.mkdtemp(prefix="sf-rng-")
    lab = conftest.Lab(workdir)
    debian = request.param == "debian"
    vm = clonerng.boot(lab, "p", debian=debian,
                       mem_mib=512 if debian else 256)
    assert clonerng.driver_bound(vm), \
        clonerng.get(vm.serial, "dmesg | grep -i -E 'acpi|vmgen'")
    yield lab, vm
    lab.close()
    shutil.rmtree(workdir, ignore_errors=True)


def run_forks(lab, vm, n, freeze, forks=FORKS, generation0=1):
    runs = []
    for f in range(forks):
        run = clonerng.ForkRun(lab, vm, n, freeze=freeze,
                               generation=generation0 + f)
        try:
            check_every_run(run, vmgenid=True)
        finally:
            run.close()
        runs.append(run)
    return runs


def check_every_run(run, vmgenid):
    c = run.cmp
    # Every VM drew after the fork, and so did every clone after its
    # identity: the comparison covers both sides of the reseed.
    for name in c.post:
        assert c.draws_after_fork(name) > 20, (name, c.draws_after_fork(name))
    after = run.shared_after_identity()
    assert all(not v for v in after.values()), \
        f"draws shared after the agent's reseed: {after}"
    # The host gave every clone a generation ID of its own ...
    assert len(set(run.guids)) == len(run.guids), run.guids
    # ... and the guest kernel reseeded on it, or (no driver) did not.
    want = "1" if vmgenid else "0"
    assert all(v == want for v in run.reseeded.values()), run.reseeded


def report(title, runs):
    ident = [r.cmp.identical() for r in runs]
    div = sorted(r.cmp.divergence_us(c.name) or 0 for r in runs
                 for c in r.clones)
    print(f"\n{title}: draws shared after the fork, per fork: "
          f"{clonerng.distribution(ident)}; max {max(ident)}")
    print(f"{title}: first draw of its own, guest ms after the fork: "
          f"p50 {div[len(div) // 2] / 1000:.0f}, max {div[-1] / 1000:.0f}")
    return ident


@pytest.mark.parametrize("n", [2, 4])
def test_vmgenid_bounds_shared_draws(parent, n):
    lab, vm = parent
    runs = run_forks(lab, vm, n, freeze=False, generation0=100 * n)
    ident = report(f"vmgenid, {n} clones", runs)
    assert max(ident) <= VMGENID_BOUND, ident


@pytest.mark.parametrize("n", [2, 4])
def test_freeze_leaves_no_shared_draw(parent, n):
    lab, vm = parent
    runs = run_forks(lab, vm, n, freeze=True, generation0=100 * n + 50)
    ident = report(f"vmgenid + freeze, {n} clones", runs)
    assert ident == [0] * len(runs), ident
    pause = sorted(r.pause_us for r in runs)
    frozen = sorted(r.thaw["frozen-us"] for r in runs)
    wall = sorted(r.frozen_wall_us for r in runs)
    print(f"parent: VM pause p50 {pause[len(pause) // 2]} us; workload "
          f"frozen p50 {frozen[len(frozen) // 2]} us guest time (max "
          f"{frozen[-1]}), {wall[len(wall) // 2]} us host time from "
          "sf-agent-freeze to the thaw event")


def test_clock_in_clones(parent):
    """Until its identity, a clone's CLOCK_REALTIME is its parent's at the
    fork instant, running on from there: it lags the parent's by the
    clone's start-up (the guest's clocks do not advance while it is not
    running), on top of whatever the parent's own error is.  The agent's
    clock_settime sets it to the host's, within CLOCK_SKEW_US; with the
    workload frozen, the workload only ever sees that clock."""
    lab, vm = parent
    parent_err = clonerng.wall_error(vm.serial)
    lags, skews = [], []
    for freeze in (False, True):
        for f in range(3):
            run = clonerng.ForkRun(lab, vm, 2, freeze=freeze,
                                   generation=900 + 10 * freeze + f,
                                   measure_clock=True)
            run.close()
            for name, clk in run.clock.items():
                # Before: the parent's error minus the lag; after: skew.
                lags.append(clk["step_us"] / 1e6 + parent_err -
                            clk["skew_us"] / 1e6)
                skews.append(abs(clk["skew_us"]))
                assert abs(clk["skew_us"]) <= CLOCK_SKEW_US, (name, clk)
                if freeze:
                    assert clk["stale_draws"] == 0, (name, clk)
    lags.sort()
    skews.sort()
    print(f"\nclock: the parent's wall clock is off by {parent_err * 1000:+.0f}"
          f" ms; a clone's lagged the parent's by p50 "
          f"{lags[len(lags) // 2] * 1000:.0f} ms, max {lags[-1] * 1000:.0f} "
          f"ms until its identity; after it, off the host's by p50 "
          f"{skews[len(skews) // 2]} us, max {skews[-1]} us")


@pytest.fixture(scope="module")
def no_driver():
    workdir = tempfile.mkdtemp(prefix="sf-rng-")
    lab = conftest.Lab(workdir)
    vm = clonerng.boot(lab, "q", driver=False)
    yield lab, vm
    lab.close()
    shutil.rmtree(workdir, ignore_errors=True)


def test_without_driver_the_agent_reseeds(no_driver):
    """A guest without the vmgenid driver: today's behaviour, the agent's
    reseed only.  Its clones share more draws (until the identity), and
    none after it."""
    lab, vm = no_driver
    assert not clonerng.driver_bound(vm)
    runs = []
    for f in range(3):
        # The identity 0.3 s after the clone is up: a window the workload
        # certainly draws in (VMGenID would have closed it by then).
        run = clonerng.ForkRun(lab, vm, 2, generation=1 + f,
                               identity_delay=0.3)
        try:
            check_every_run(run, vmgenid=False)
        finally:
            run.close()
        runs.append(run)
    ident = report("agent only (no vmgenid driver), 2 clones", runs)
    assert min(ident) > 0, ident


@pytest.fixture(scope="module")
def busybox():
    workdir = tempfile.mkdtemp(prefix="sf-rng-")
    lab = conftest.Lab(workdir)
    vm = clonerng.boot(lab, "g")
    yield lab, vm
    lab.close()
    shutil.rmtree(workdir, ignore_errors=True)


def test_program_freezes_its_workload_itself(busybox):
    """sfclone -F (sf_clone_flags, SF_CLONE_FREEZE) in the workload cgroup:
    the agent freezes the workload before it asks the host to fork; the
    test answers as sfd would.  No draw is shared, and the workload in the
    parent is thawed by the host's answer."""
    lab, vm = busybox
    start = clonerng.start_loop(vm)
    vm.serial.run(f"{{ sh -c 'echo $$ > {clonerng.WORKLOAD}/cgroup.procs && "
                  "exec sfclone -F -n 2 -- true' > /tmp/sfc.out 2>&1 & }")
    ev = vm.wait_event("SF_AGENT_REQUEST", timeout=30)["data"]
    assert ev["op"] == "ticket" and ev["clones"] == 2, ev
    vm.cmd("sf-agent-reply", request=ev["request"], kind="result", count=2,
           value=77)
    ev = vm.wait_event("SF_AGENT_REQUEST", timeout=30)["data"]
    assert ev == {"request": ev["request"], "op": "clone", "ticket": 77}, ev
    rid = ev["request"]
    # Asked only once the workload (sf-randlog and sfclone) is frozen.
    assert clonerng.agent_mono_ms(vm, "freeze: workload frozen (2 tasks)")
    fork = vm.cmd("vm-fork", clones=2)
    lab.servers.append(fork["server-pid"])
    vm.cmd("sf-agent-reply", request=rid, kind="result", count=2)
    clones = []
    for c in fork["launched"]:
        clone = clonerng.sfvm.CloneVM(vm, c)
        lab.vms.append(clone)
        clones.append(clone.attach())
    for c in clones:
        c.cmd("sf-agent-reply", request=rid, kind="identity",
              **{"clone-id": c.clone_id, "generation": 1, "ticket": 77})
    for c in clones:
        ev = c.wait_event("SF_AGENT_REQUEST", timeout=60)["data"]
        assert ev["op"] == "exit" and ev["status"] == 0, ev
        clonerng.stop_loop(c)
    logs = {c.name: clonerng.read_log(c, max(1, start - 2)) for c in clones}
    for c in clones:
        lab.stop([c])
        vm.cmd("sf-agent-reply", kind="clone-exited",
               **{"clone-id": c.clone_id, "ticket": 77, "how": "exited",
                  "status": 0})
    deadline = time.monotonic() + 60
    while "clone 2: exited" not in clonerng.get(vm.serial, "cat /tmp/sfc.out"):
        assert time.monotonic() < deadline, \
            clonerng.get(vm.serial, "cat /tmp/sfc.out /run/sf-agent.log")
        time.sleep(0.3)
    out = clonerng.get(vm.serial, "cat /tmp/sfc.out")
    assert "clone 1: exited 0" in out and "clone 2: exited 0" in out, out
    clonerng.stop_loop(vm)
    logs[vm.name] = clonerng.read_log(vm, max(1, start - 2))
    cmp = clonerng.randlog.Comparison(logs, vm.name)
    print(f"\nsfclone -F: {cmp.identical()} draws shared; clones' first own "
          f"draws {[cmp.divergence_us(c.name) // 1000 for c in clones]} ms "
          "after the fork")
    assert cmp.identical() == 0, cmp.pairs()
    for name in logs:
        assert cmp.draws_after_fork(name) > 20, name
