"""Fork a VM while sf-randlog draws from its kernel RNG, and compare what
the parent and its clones drew after the fork (issue 20).

The test plays the management layer, as sfd does: it forks with vm-fork,
sends each clone its identity with sf-agent-reply (kind identity, no
request: "unsolicited", as for an operator's fork) and waits for the
agent's SF_AGENT_IDENTITY_APPLIED.  Used by test_clone_rng.py and
tests/bench/bench_clone_rng.py.

Mechanisms, each one parent VM (vmgenid device, sf-agent-port, the agent):
  agent    the guest's vmgenid driver is off (initcall_blacklist): only
           the agent's reseed, when the clone's identity arrives
  vmgenid  each clone gets a new VM generation ID before its first
           instruction; its kernel reseeds from the ACPI notification
  freeze   vmgenid, plus the workload frozen around vm-fork
           (sf-agent-freeze / sf-agent-thaw on the parent); each clone's
           agent thaws it once the identity is applied
"""

import os
import re
import signal
import time

import randlog
import sfvm

LOG = "/run/sf-randlog.log"
WORKLOAD = "/sys/fs/cgroup/sf-workload"
NO_DRIVER = "initcall_blacklist=vmgenid_driver_init"


def get(serial, cmd, timeout=120.0):
    """One command's output, immune to the tty's echo and job notices."""
    _, out = serial.run(f'echo "@V""@$({cmd})@V""@"', timeout=timeout)
    m = re.search(r"@V@(.*?)@V@", out, re.S)
    assert m, out
    return m.group(1).replace("\r", "").strip()


def boot(lab, name, debian=False, driver=True, mem_mib=None):
    """A parent: vmgenid device, agent port, the agent running."""
    append = sfvm.guest_cmdline("" if driver else NO_DRIVER)
    vm = lab.vm(name, debian=debian, append=append, mem_mib=mem_mib,
                extra_args=["-device", "vmgenid", "-device", "sf-agent-port"])
    vm.wait_ready(timeout=240 if debian else 120)
    boot_wait_agent(vm)
    return vm


def boot_wait_agent(vm, timeout=60.0):
    """The guest agent is up (its socket exists)."""
    deadline = time.monotonic() + timeout
    while get(vm.serial, "test -S /run/snowflock/agent.sock && echo up") \
            != "up":
        assert time.monotonic() < deadline, \
            get(vm.serial, "cat /run/sf-agent.log")
        time.sleep(0.3)


def driver_bound(vm):
    """Whether the guest's vmgenid driver has bound to the device."""
    return get(vm.serial, "ls /sys/bus/acpi/drivers/vmgenid 2>/dev/null "
                          "| grep -c QEMUVGID") == "1"


def start_loop(vm, lines=100, timeout=60.0):
    """sf-randlog in the workload cgroup, until `lines` draws are logged
    (its first draw waits for the kernel CRNG to be ready).  Returns the
    number of lines then: the fork comes after them."""
    vm.serial.run(f"rm -f {LOG}; {{ sh -c 'echo $$ > {WORKLOAD}/cgroup.procs"
                  f" && exec sf-randlog -o {LOG}' >/dev/null 2>&1 & }}")
    deadline = time.monotonic() + timeout
    while True:
        n = int(get(vm.serial, f"cat {LOG} 2>/dev/null | wc -l") or 0)
        if n >= lines:
            return n
        assert time.monotonic() < deadline, f"sf-randlog logged {n} lines"
        time.sleep(0.2)


def stop_loop(vm):
    vm.serial.run(f"kill $(cat {WORKLOAD}/cgroup.procs) 2>/dev/null; "
                  "sleep 0.1", check=False)


def read_log(vm, from_line):
    return randlog.parse(get(vm.serial, f"tail -n +{from_line} {LOG}"))


def agent_mono_ms(vm, what):
    """CLOCK_MONOTONIC ms of the agent's last log line containing `what`
    (sf-agent[SEC.MSEC]: ...), or None."""
    t = None
    for line in get(vm.serial, "cat /run/sf-agent.log").splitlines():
        m = re.match(r"sf-agent\[(\d+)\.(\d{3})\]: (.*)", line)
        if m and what in m[3]:
            t = int(m[1]) * 1000 + int(m[2])
    return t


class ForkRun:
    """One fork of `parent` into n clones under a mechanism, measured."""

    def __init__(self, lab, parent, n, freeze=False, generation=1,
                 identity_delay=0.0, settle=0.5, measure_clock=False):
        self.lab = lab
        self.n = n
        self.freeze = freeze
        self.parent = parent
        start = start_loop(parent)
        t0 = time.monotonic()
        if freeze:
            parent.cmd("sf-agent-freeze", **{"timeout-ms": 20000})
            ev = parent.wait_event("SF_AGENT_FREEZE", timeout=30)["data"]
            assert ev["state"] == "frozen" and ev["tasks"] >= 1, ev
        self.fork = parent.cmd("vm-fork", clones=n)
        lab.servers.append(self.fork["server-pid"])
        self.thaw = None
        if freeze:
            parent.cmd("sf-agent-thaw")
            self.thaw = parent.wait_event("SF_AGENT_FREEZE",
                                          timeout=30)["data"]
            assert self.thaw["state"] == "thawed", self.thaw
        # The workload's pause in the parent: the VM's pause, plus (with
        # freeze) the time it was frozen around it, host wall clock.
        self.pause_us = self.fork["pause-us"]
        self.frozen_wall_us = int((time.monotonic() - t0) * 1e6) \
            if freeze else 0
        self.clones = []
        for c in self.fork["launched"]:
            clone = sfvm.CloneVM(parent, c)
            lab.vms.append(clone)
            self.clones.append(clone)
        try:
            for c in self.clones:
                c.attach()
            if identity_delay:
                time.sleep(identity_delay)
            for c in self.clones:
                c.cmd("sf-agent-reply", kind="identity",
                      **{"clone-id": c.clone_id, "generation": generation,
                         "hostname": f"{parent.name}-{c.clone_id}"})
            self.applied = {}
            for c in self.clones:
                ev = c.wait_event("SF_AGENT_IDENTITY_APPLIED", timeout=60)
                assert ev["data"]["clone-id"] == c.clone_id, ev
                self.applied[c.name] = ev["data"]
            # Let every VM draw a while with its identity in place.
            time.sleep(settle)
            for vm in [parent] + self.clones:
                stop_loop(vm)
            self.identity_ms = {
                c.name: agent_mono_ms(c, "identity: RNG reseeded")
                for c in self.clones}
            self.reseeded = {c.name: get(c.serial, "dmesg | grep -c "
                                         "'crng reseeded due to virtual "
                                         "machine fork' || true")
                             for c in self.clones}
            self.guids = [vm.cmd("query-vm-generation-id")["guid"]
                          for vm in [parent] + self.clones]
            logs = {vm.name: read_log(vm, max(1, start - 2))
                    for vm in [parent] + self.clones}
            self.cmp = randlog.Comparison(logs, parent.name)
            if measure_clock:
                self.clock = {c.name: self._clock(c.name)
                              for c in self.clones}
        except BaseException:
            # Its clones go now, not when the module's parent does:
            # a failed fork must not load the machine for the next.
            self.close()
            raise

    def _clock(self, name):
        """What a clone's CLOCK_REALTIME did, from its draws: real - mono
        is the parent's at the fork (stale) until the agent's
        clock_settime, the host's after; the step between the two is how
        far the agent moved it.  skew_us: guest minus host wall clock
        after it, from the agent's APPLIED report (QEMU compares the
        guest's clock in it with its own as it arrives)."""
        stale = self.cmp.last_common.real - self.cmp.last_common.mono
        draws = self.cmp.post[name]
        fixed = draws[-1].real - draws[-1].mono
        n_stale = sum(1 for d in draws
                      if abs(d.real - d.mono - stale) <
                      abs(d.real - d.mono - fixed))
        return {"step_us": (fixed - stale) // 1000,
                "stale_draws": n_stale,
                "skew_us": self.applied[name]["clock-skew-us"]}

    def shared_after_identity(self):
        """Draws a clone shared with another VM after its agent applied
        its identity: none, whatever the mechanism."""
        out = {}
        for c in self.clones:
            t = self.identity_ms[c.name]
            assert t is not None, f"{c.name}: the agent never reseeded"
            # The log line's ms are truncated: start at the next ms.
            out[c.name] = self.cmp.shared_after(c.name, (t + 1) * 10**6)
        return out

    def close(self):
        # SIGTERM, as sfd stops a VM: a clone that exits cleanly removes
        # its log from the fork's directory; a SIGKILLed one keeps it.
        self.lab.stop(self.clones)
        try:
            os.kill(self.fork["server-pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass


def wall_error(serial):
    """The guest's wall clock minus the host's, in seconds, to within the
    serial line's latency (busybox's date has no %N; its adjtimex prints
    tv_usec)."""
    t = get(serial, "date +%s.%N")
    host = time.time()
    if not re.fullmatch(r"\d+\.\d+", t):
        t = get(serial, "adjtimex | awk '/tv_sec/ {s = $2} /tv_usec/ "
                        "{u = $2} END {printf \"%d.%06d\", s, u}'")
        host = time.time()
    return float(t) - host


def distribution(values):
    """'0 x7, 1 x3' for a list of small integers."""
    counts = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return ", ".join(f"{k} x{counts[k]}" for k in sorted(counts))
