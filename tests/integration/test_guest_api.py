"""The in-guest fork API end to end: programs inside a VM run by sfd fork
the whole VM through libsf (C), the snowflock module (Python) and sfclone
(shell); every clone comes up with its own identity; sf_kill and crashes
reach the parent's sf_join; a hostile guest is contained.

Path under test: guest program -> libsf -> sf-agent -> virtio-serial ->
QEMU sf-agent-port -> SF_AGENT_REQUEST -> sfd -> vm-fork / clones ->
sf-agent-reply -> back.  Needs root (family bridges and taps)."""

import os
import re
import time

import pytest

import sfdlib
import sfvm

def get(serial, cmd, timeout=120.0):
    """The output of a guest command, immune to the tty echoing the typed
    line (a clone's shell may echo it twice) and to job notices."""
    _, out = serial.run(f'echo "@V""@$({cmd})@V""@"', timeout=timeout)
    m = re.search(r"@V@(.*?)@V@", out, re.S)
    assert m, out
    return m.group(1).replace("\r", "").strip()


class Family:
    """sfd with one started domain and its serial shell."""

    def __init__(self, name, xml):
        sfdlib.need_root_networking()
        self.sfd = sfdlib.Sfd().start()
        self.c = self.sfd.client()
        self.c.cmd("define", xml=xml)
        self.name = name
        self.vm, self.serial = sfdlib.start_booted(self.sfd, self.c, name)
        self.wait_agent()

    def wait_agent(self, timeout=60.0):
        """The guest agent has said HELLO on its channel."""
        deadline = time.monotonic() + timeout
        while True:
            st, out = self.serial.run("test -S /run/snowflock/agent.sock",
                                      check=False)
            if st == 0:
                return
            if time.monotonic() > deadline:
                _, log = self.serial.run("cat /run/sf-agent.log", check=False)
                raise AssertionError(f"agent not up: {log}")
            time.sleep(0.5)

    def clones(self):
        return [v for v in self.c.cmd("list")
                if v["kind"] == "clone" and v["domain"] == self.name]

    def live_clones(self):
        return [v for v in self.clones() if v["state"] in
                ("starting", "running", "stopping")]

    def wait_clones(self, n, timeout=120.0):
        deadline = time.monotonic() + timeout
        while True:
            live = [v for v in self.clones() if v["state"] == "running"]
            for v in live:
                self.sfd.pids.add(v["pid"])
            if len(live) >= n:
                return live
            if time.monotonic() > deadline:
                raise AssertionError(f"{n} clones not running: "
                                     f"{self.clones()}\n{self.sfd.log()[-3000:]}")
            time.sleep(0.2)

    def wait_no_clones(self, timeout=60.0):
        deadline = time.monotonic() + timeout
        while self.live_clones():
            if time.monotonic() > deadline:
                raise AssertionError(f"clones left: {self.live_clones()}")
            time.sleep(0.2)

    def wait_identity(self, cs, timeout=60.0):
        """The clone behind serial `cs` has applied its identity."""
        deadline = time.monotonic() + timeout
        while get(cs, "cat /run/snowflock/id 2>/dev/null") == "":
            assert time.monotonic() < deadline, "no /run/snowflock/id"
            time.sleep(0.3)

    def clone_serial(self, name):
        info = self.c.cmd("info", vm=name)
        s = sfvm.Serial(info["serial"])
        s.run("true", timeout=60)
        return s

    def close(self):
        self.sfd.close()


@pytest.fixture(scope="module")
def fam():
    f = Family("g", sfdlib.domain_xml("g", clone="<sf:clone max='6'/>"))
    yield f
    f.close()


def test_c_program_forks_itself(fam):
    st, out = fam.serial.run("sf-job", timeout=300, check=False)
    assert st == 0, out
    assert "sf-job: PASS clones=4" in out, out
    for k in range(1, 5):
        assert re.search(rf"clone {k}: how=0 status=\d+ want=\d+ ok", out), out
    # sf_exit ends each clone's VM.
    fam.wait_no_clones()
    ended = re.findall(r"clone (\d) of ticket \d+ of g ended: exited",
                       fam.sfd.log())
    assert sorted(set(ended)) == ["1", "2", "3", "4"], fam.sfd.log()[-3000:]


def test_sfclone_statuses(fam):
    st, out = fam.serial.run("sfclone -n 3 -- sh -c 'exit 0'", timeout=300,
                             check=False)
    assert st == 0, out
    for k in (1, 2, 3):
        assert f"clone {k}: exited 0" in out, out

    st, out = fam.serial.run(
        "sfclone -n 3 -- sh -c 'exit $((SF_CLONE_ID + 40))'", timeout=300,
        check=False)
    assert st != 0, out
    for k in (1, 2, 3):
        assert f"clone {k}: exited {k + 40}" in out, out
    fam.wait_no_clones()


WAIT_DONE = "while [ ! -e /tmp/release ]; do sleep 0.2; done"


def release(cs):
    """Let the clone behind serial `cs` finish its WAIT_DONE command.  Not
    waited for: the clone's VM may be gone before its shell's prompt makes
    it out of the serial line.  The tty's echo of the line says the guest
    has it (closing the socket earlier could drop it unread)."""
    cs.write("touch /tmp/release\n")
    try:
        cs.read_until(r"touch /tmp/release", 30)
    except EOFError:
        pass
    cs.close()


def guest_time(serial):
    """The guest's wall clock minus the host's, in seconds, to the
    microsecond (busybox's date has no %N; its adjtimex prints tv_usec)."""
    t = get(serial, "date +%s.%N")
    host = time.time()
    if not re.fullmatch(r"\d+\.\d+", t):
        t = get(serial, "adjtimex | awk '/tv_sec/ {s = $2} /tv_usec/ "
                        "{u = $2} END {printf \"%d.%06d\", s, u}'")
        host = time.time()
    return float(t) - host


def check_identity(fam, parent_host="sfguest"):
    """Fork 3 clones with sfclone and check, from each clone's own shell,
    everything the agent did to make it a distinct machine."""
    s = fam.serial
    s.run("mkdir -p /etc/snowflock/post-clone.d && "
          "printf '#!/bin/sh\\necho \"$SF_CLONE_ID $SF_GENERATION "
          "$SF_HOSTNAME $SF_IP\" >> /run/post-clone.log\\n' "
          "> /etc/snowflock/post-clone.d/10-log && "
          "chmod +x /etc/snowflock/post-clone.d/10-log && rm -f /tmp/release")
    parent_rand = get(s, "head -c 32 /dev/urandom | od -An -tx1")
    s.run(f"{{ sfclone -n 3 -- sh -c '{WAIT_DONE}; exit 0' "
          "> /tmp/sfc.out 2>&1 & }")
    clones = fam.wait_clones(3)
    seen = {}
    for v in clones:
        cs = fam.clone_serial(v["name"])
        # The identity is applied before sfclone's child runs; wait for it.
        fam.wait_identity(cs)
        ident = {}
        for key, cmd in (("id", "cat /run/snowflock/id"),
                         ("gen", "cat /run/snowflock/generation"),
                         ("host", "hostname"),
                         ("mac", "cat /sys/class/net/eth0/address"),
                         ("ip", "ip -4 -o addr show dev eth0"),
                         ("rand", "head -c 32 /dev/urandom | od -An -tx1"),
                         ("post", "cat /run/post-clone.log")):
            ident[key] = get(cs, cmd)
        ident["skew"] = abs(guest_time(cs))
        release(cs)
        seen[v["name"]] = (v, ident)

    ids = sorted(int(i["id"]) for _, i in seen.values())
    assert ids == [1, 2, 3], seen
    for name, (v, i) in seen.items():
        assert i["host"] == name, (name, i)
        assert int(i["gen"]) >= 1, i
        assert i["mac"] == v["mac"], (v, i)
        assert f"inet {v['ip']}/" in i["ip"], (v, i)
        # Exactly one run of the post-clone scripts, with the identity.
        lines = i["post"].splitlines()
        assert lines == [f"{i['id']} {i['gen']} {name} {v['ip']}"], i["post"]
        assert i["skew"] <= 1.0, i
    rands = [i["rand"] for _, i in seen.values()] + [parent_rand]
    assert len(set(rands)) == len(rands), rands
    macs = {i["mac"] for _, i in seen.values()}
    ips = {v["ip"] for v, _ in seen.values()}
    assert len(macs) == 3 and len(ips) == 3

    s.run("wait", timeout=120)
    out = get(s, "cat /tmp/sfc.out")
    for k in (1, 2, 3):
        assert f"clone {k}: exited 0" in out, out
    # The parent kept its own identity.
    assert get(s, "hostname") == parent_host
    assert get(s, "cat /run/snowflock/id 2>/dev/null || echo none") \
        in ("none", "0")
    fam.wait_no_clones()


def test_identity(fam):
    check_identity(fam)


def test_kill_and_crash_reach_join(fam):
    st, out = fam.serial.run("sftest kill 3", timeout=300, check=False)
    assert st == 0, out
    assert "sftest: PASS" in out, out
    fam.wait_no_clones()

    # A program that crashes inside a clone: reported with its signal.
    st, out = fam.serial.run("sfclone -n 2 -- sh -c 'kill -SEGV $$'",
                             timeout=300, check=False)
    assert st != 0, out
    for k in (1, 2):
        assert re.search(rf"clone {k}: killed by signal (11|SIGSEGV)", out), out
    fam.wait_no_clones()

    # A clone VM that dies: reported as crashed.
    s = fam.serial
    s.run("rm -f /tmp/release")
    s.run(f"{{ sfclone -n 2 -- sh -c '{WAIT_DONE}' > /tmp/sfc.out 2>&1 & }}")
    clones = fam.wait_clones(2)
    victim = sorted(clones, key=lambda v: v["name"])[0]
    os.kill(victim["pid"], 9)
    other = [v for v in clones if v["name"] != victim["name"]][0]
    cs = fam.clone_serial(other["name"])
    release(cs)
    s.run("wait", timeout=120)
    out = get(s, "cat /tmp/sfc.out")
    assert re.search(r"clone \d: crashed", out), out
    assert re.search(r"clone \d: exited 0", out), out
    fam.wait_no_clones()


def frame(typ, seq, body=b"", magic=0x47414653, version=1, flags=0,
          length=None):
    import struct
    hdr = struct.pack("<IBBHII", magic, version, typ, flags, seq,
                      len(body) if length is None else length)
    return hdr + body


def printf_bytes(data):
    return "".join(f"\\{b:03o}" for b in data)


def put_file(serial, path, data):
    """Write bytes to a guest file in lines short enough for busybox's
    line editor (1024 characters)."""
    serial.run(f": > {path}")
    for i in range(0, len(data), 160):
        serial.run(f"printf '{printf_bytes(data[i:i + 160])}' >> {path}")


def test_hostile_guest_contained(fam):
    """A clone whose agent is replaced by garbage and a flood of requests:
    the host stays up and answers, the other clones run on."""
    import struct
    s = fam.serial
    s.run("rm -f /tmp/release")
    s.run(f"{{ sfclone -n 3 -- sh -c '{WAIT_DONE}' > /tmp/sfc.out 2>&1 & }}")
    clones = sorted(fam.wait_clones(3), key=lambda v: v["name"])
    bad, good = clones[0], clones[1:]
    bs = fam.clone_serial(bad["name"])
    bs.run("killall sf-agent; sleep 0.5")
    port = get(bs, "for p in /sys/class/virtio-ports/*; do "
                   "[ $(cat $p/name) = org.snowflock.agent.0 ] && "
                   "echo /dev/${p##*/}; done")
    assert port.startswith("/dev/vport"), port
    junk = (b"\xff" * 300 + frame(2, 1, length=0x7fffffff) +
            frame(2, 2, struct.pack("<II", 4, 0), version=9) +
            frame(0x55, 3) + frame(2, 4, b"\0" * 3))
    ticket = frame(2, 5, struct.pack("<II", 64, 0))
    put_file(bs, "/tmp/junk", junk)
    put_file(bs, "/tmp/flood", ticket * 20)
    bs.run(f"exec 3<>{port}; {{ cat <&3 >/dev/null & }}; cat /tmp/junk >&3")
    t0 = time.monotonic()
    bs.run("for i in $(seq 100); do cat /tmp/flood >&3; done", timeout=300)
    flood_s = time.monotonic() - t0
    # The host is responsive and limited what reached sfd.
    t = time.monotonic()
    vms = fam.c.cmd("list")
    assert time.monotonic() - t < 2.0
    assert any(v["name"] == bad["name"] for v in vms)
    info = fam.c.cmd("info", vm=bad["name"])
    assert fam.sfd.proc.poll() is None
    # 2000 well-formed requests were written; QEMU's device passes a
    # burst of 40 then 20/s, and sfd answers every one it sees (a clone
    # may not fork: ENOTSUP, or EAGAIN from its own bucket).
    ag = info["agent"]
    limit = 40 + 20 * (time.monotonic() - t0 + 2)
    assert 1 <= ag["requests"] <= min(limit, 2000 - 1), (ag, flood_s)
    assert ag["refused"] + ag["rate-limited"] >= 1, ag
    # The other clones still answer and finish normally.
    for v in good:
        cs = fam.clone_serial(v["name"])
        assert get(cs, "cat /run/snowflock/id") in ("2", "3")
        release(cs)
    fam.c.cmd("destroy", vm=bad["name"], timeout=60)
    s.run("wait", timeout=120)
    out = get(s, "cat /tmp/sfc.out")
    assert len(re.findall(r"clone \d: exited 0", out)) == 2, out
    assert re.search(r"clone \d: (crashed|killed)", out), out
    fam.wait_no_clones()
    # And the parent can still fork.
    st, out = fam.serial.run("sf-job", timeout=300, check=False)
    assert "sf-job: PASS" in out, (out, info, flood_s)
    fam.wait_no_clones()
