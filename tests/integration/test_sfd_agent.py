"""Guest requests through sfd, end to end, with the test playing the
guest agent: the busybox guest boots with sf.noagent, and from its serial
shell the test writes raw frames (hw-sf/sf-agent-proto.h) to the agent
port and reads the answers back with od.

Covered: tickets granted and capped by the domain's quota, bad tickets,
clone (the parent's RESULT after vm-fork, each clone's IDENTITY with its
hostname, MAC and address), exit from a clone (the parent's EXITED with
the status), a crashed clone (how=crashed), kill (how=killed), a request
flood (rate-limited, sfd still quick to answer clients, clones
unaffected), and checkpoint + create-clones; and the domain's
<sf:guest> limits (enabled='no': EPERM; a low rate and burst).

Needs root (bridges, taps), like the other sfd tests."""

import errno
import re
import struct
import threading
import time

import pytest

import sfdlib
import sfvm

MAGIC = 0x47414653
HELLO, TICKET, CLONE, KILL, EXIT, CHECKPOINT, CREATE = range(1, 8)
WELCOME, RESULT, IDENTITY, EXITED = 0x81, 0x82, 0x83, 0x84
HOW_EXITED, HOW_SIGNALED, HOW_LOST, HOW_KILLED, HOW_CRASHED = range(5)
PORT_NAME = "org.snowflock.agent.0"
INBOX = "/tmp/agent.in"


def frame(typ, seq, body=b""):
    return struct.pack("<IBBHII", MAGIC, 1, typ, 0, seq, len(body)) + body


def parse(data):
    """Frames from the host, in order: (type, seq, fields)."""
    out = []
    off = 0
    while off + 16 <= len(data):
        magic, ver, typ, flags, seq, length = struct.unpack_from(
            "<IBBHII", data, off)
        assert magic == MAGIC and ver == 1, data[off:off + 16].hex()
        body = data[off + 16:off + 16 + length]
        if len(body) < length:
            break
        off += 16 + length
        if typ == WELCOME:
            f = dict(zip(("version", "max_pending"),
                         struct.unpack("<II", body)))
        elif typ == RESULT:
            f = dict(zip(("error", "count", "value"),
                         struct.unpack("<iIQ", body)))
        elif typ == IDENTITY:
            (cid, gen, ticket, rt, mac, prefix, _r, ip, _r2, host,
             entropy) = struct.unpack("<IIQq6sBB4sI64s64s", body)
            f = {"clone_id": cid, "generation": gen, "ticket": ticket,
                 "realtime_ns": rt, "mac": ":".join(f"{b:02x}" for b in mac),
                 "prefix": prefix, "ip": ".".join(str(b) for b in ip),
                 "hostname": host.rstrip(b"\0").decode(),
                 "entropy": entropy}
        elif typ == EXITED:
            f = dict(zip(("ticket", "clone_id", "status", "how"),
                         struct.unpack("<QIiII", body)[:4]))
        else:
            f = {"raw": body}
        out.append((typ, seq, f))
    return out


class Agent:
    """The guest agent, played from a VM's serial shell.  The port stays
    open on fd 3 of the shell and a background cat copies everything the
    host sends to INBOX; a clone inherits both, so its INBOX holds its
    parent's frames up to the fork, then its own."""

    _seq = 100

    def __init__(self, serial, setup=True):
        self.s = serial
        if not setup:
            # A clone: its shell may have been forked halfway through a
            # line the test was typing to the parent.  Cancel it.
            self.s.write("\x03\n")
            time.sleep(0.5)
            self.s.run("true", timeout=60)
        else:
            self.s.run(
                "P=; for f in /sys/class/virtio-ports/*; do "
                f"[ \"$(cat $f/name 2>/dev/null)\" = {PORT_NAME} ] && "
                "P=/dev/${f##*/}; done; [ -n \"$P\" ] && exec 3<>$P && "
                f"(cat <&3 > {INBOX} &)", timeout=60)

    def send(self, typ, body=b"", seq=None, wait=True):
        """wait=False: do not wait for the shell (the VM may end)."""
        if seq is None:
            Agent._seq += 1
            seq = Agent._seq
        data = frame(typ, seq, body)
        octal = "".join(f"\\{b:03o}" for b in data)
        if wait:
            self.s.run(f"printf '{octal}' >&3", timeout=60)
        else:
            self.s.write(f"printf '{octal}' >&3\n")
        return seq

    def flood(self, frames):
        """Write frames of one size back to back, one write each, as
        fast as the guest's shell can (built in a file first: the serial
        line would drop a long command)."""
        size = len(frames[0])
        assert all(len(f) == size for f in frames)
        self.s.run("rm -f /tmp/flood")
        for i in range(0, len(frames), 8):
            octal = "".join(f"\\{b:03o}" for b in b"".join(frames[i:i + 8]))
            self.s.run(f"printf '{octal}' >> /tmp/flood", timeout=60)
        self.s.run(f"i=0; while [ $i -lt {len(frames)} ]; do "
                   f"dd if=/tmp/flood bs={size} skip=$i count=1 2>/dev/null "
                   ">&3; i=$((i+1)); done", timeout=300)

    def frames(self):
        _, out = self.s.run(f"echo '@@OD''START@@'; od -An -v -tx1 {INBOX}",
                            timeout=60)
        # Only od's lines: the tty may echo bits of the command too.
        out = out.split("@@ODSTART@@", 1)[1]
        hexl = [ln for ln in out.splitlines()
                if re.fullmatch(r"\s*([0-9a-f]{2}\s*)+", ln)]
        return parse(bytes.fromhex("".join("".join(hexl).split())))

    def wait(self, pred, timeout=120.0, what="frame"):
        deadline = time.monotonic() + timeout
        while True:
            for fr in self.frames():
                if pred(fr):
                    return fr
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} from the host in {timeout} "
                                     f"s: {self.frames()}")
            time.sleep(0.5)

    def result(self, seq, timeout=120.0):
        return self.wait(lambda f: f[0] == RESULT and f[1] == seq, timeout,
                         f"RESULT for {seq}")[2]

    def request(self, typ, body=b"", timeout=120.0):
        return self.result(self.send(typ, body), timeout)

    def exited(self, ticket, clone_id, timeout=120.0):
        return self.wait(lambda f: f[0] == EXITED and
                         f[2]["ticket"] == ticket and
                         f[2]["clone_id"] == clone_id, timeout,
                         f"EXITED {ticket}/{clone_id}")[2]


def ticket_req(n, flags=0):
    return struct.pack("<II", n, flags)


def ref(ticket):
    return struct.pack("<Q", ticket)


@pytest.fixture
def sfd():
    sfdlib.need_root_networking()
    d = sfdlib.Sfd(max_clones=8).start()
    yield d
    d.close()


def wait_running(c, name, timeout=300.0):
    deadline = time.monotonic() + timeout
    while True:
        vm = next((v for v in c.cmd("list") if v["name"] == name), None)
        if vm and vm["state"] == "running":
            return vm
        if vm and vm["state"] in ("failed", "exited"):
            raise AssertionError(f"{name}: {vm}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} not running after {timeout} s: "
                                 f"{vm}")
        time.sleep(0.5)


def wait_gone(c, name, timeout=60.0):
    deadline = time.monotonic() + timeout
    while any(v["name"] == name for v in c.cmd("list")):
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} still listed after {timeout} s")
        time.sleep(0.2)


def test_guest_requests(sfd):
    c = sfd.client()
    ev = sfd.client()
    ev.cmd("subscribe", events=["GUEST_REQUEST", "GUEST_CLONE_EXITED",
                                "GUEST_RATE_LIMITED"])
    xml = sfdlib.domain_xml("ag", clone="<sf:clone max='2'/>").replace(
        sfdlib.CMDLINE, sfdlib.CMDLINE + " sf.noagent")
    c.cmd("define", xml=xml)
    parent, sp = sfdlib.start_booted(sfd, c, "ag")
    net = parent["ip"].rsplit(".", 1)[0]
    pa = Agent(sp)

    # The channel works (the device answers HELLO itself).
    seq = pa.send(HELLO, struct.pack("<II", 1, 0))
    pa.wait(lambda f: f[0] == WELCOME and f[1] == seq, what="WELCOME")

    # Tickets: capped by <sf:clone max='2'/>; bad arguments refused.
    t1 = pa.request(TICKET, ticket_req(5))
    assert t1["error"] == 0 and t1["count"] == 2 and t1["value"] > 0, t1
    t1 = t1["value"]
    assert pa.request(TICKET, ticket_req(1, flags=1))["error"] == \
        errno.EINVAL
    assert pa.request(CLONE, ref(t1 + 1000))["error"] == errno.ENOENT
    assert pa.request(KILL, ref(t1 + 1000))["error"] == errno.ENOENT
    assert pa.request(EXIT, struct.pack("<iI", 0, 0))["error"] == \
        errno.ENOTSUP       # not a clone

    # Clone: RESULT in the parent once vm-fork returned, IDENTITY in each
    # clone answering the same request.
    cseq = pa.send(CLONE, ref(t1))
    r = pa.result(cseq, timeout=300)
    assert r["error"] == 0 and r["count"] == 2, r
    clones = {n: wait_running(c, n) for n in ("ag-1", "ag-2")}
    for n, vm in clones.items():
        sfd.pids.add(vm["pid"])
    info = c.cmd("info", vm="ag-1")
    sfd.pids.add(info["server-pid"])
    assert info["agent"]["ticket"] == t1
    s1 = sfvm.Serial(info["serial"])
    s2 = sfvm.Serial(c.cmd("info", vm="ag-2")["serial"])
    a1, a2 = Agent(s1, setup=False), Agent(s2, setup=False)
    for n, a in (("ag-1", a1), ("ag-2", a2)):
        idf = a.wait(lambda f: f[0] == IDENTITY and f[1] == cseq,
                     what=f"IDENTITY in {n}")[2]
        vm = clones[n]
        assert idf["ticket"] == t1 and idf["generation"] >= 1, idf
        assert idf["hostname"] == n, idf
        assert idf["mac"] == vm["mac"], (idf, vm)
        assert idf["ip"] == vm["ip"] and idf["prefix"] == 24, (idf, vm)
        assert idf["ip"].startswith(net + ".")
        assert idf["realtime_ns"] > 0 and any(idf["entropy"])
        # The clone's own frames: nothing else answered the clone request.
        assert not any(f[0] == RESULT and f[1] == cseq for f in a.frames())
    ids = {a.wait(lambda f: f[0] == IDENTITY and f[1] == cseq)[2]["clone_id"]
           for a in (a1, a2)}
    assert ids == {1, 2}
    id_of = {n: a.wait(lambda f: f[0] == IDENTITY and f[1] == cseq)[2][
        "clone_id"] for n, a in (("ag-1", a1), ("ag-2", a2))}
    # No nested forks; the ticket is spent; the quota is used up.
    assert a1.request(TICKET, ticket_req(1))["error"] == errno.ENOTSUP
    assert pa.request(CLONE, ref(t1))["error"] == errno.EALREADY
    assert pa.request(TICKET, ticket_req(1))["error"] == errno.EDQUOT
    info = c.cmd("info", vm="ag")
    assert info["agent"]["requests"] >= 6
    assert info["agent"]["refused"] >= 4
    assert [t["state"] for t in info["agent"]["tickets"]] == ["used"]

    # exit from ag-2: it stops, the parent hears its status.
    a2.send(EXIT, struct.pack("<iI", 7, HOW_EXITED), wait=False)
    wait_gone(c, "ag-2")
    e = pa.exited(t1, id_of["ag-2"])
    assert (e["status"], e["how"]) == (7, HOW_EXITED), e
    # ag-1's QEMU dies: crashed.
    assert sfd.sfctl("kill", "ag-1").returncode == 0
    wait_gone(c, "ag-1")
    e = pa.exited(t1, id_of["ag-1"])
    assert (e["status"], e["how"]) == (-1, HOW_CRASHED), e
    s1.close()
    s2.close()
    seen = []
    while len(seen) < 2:
        m = ev.wait_event("GUEST_CLONE_EXITED", 30)["data"]
        seen.append((m["clone"], m["how"], m["status"]))
    assert sorted(seen) == [("ag-1", "crashed", -1), ("ag-2", "exited", 7)]

    # A new ticket, one clone; then a flood from the parent.
    t2 = pa.request(TICKET, ticket_req(1))
    assert t2["count"] == 1, t2
    t2 = t2["value"]
    r = pa.request(CLONE, ref(t2), timeout=300)
    assert r == {"error": 0, "count": 1, "value": 0}, r
    k1 = wait_running(c, "ag-1")
    sfd.pids.add(k1["pid"])
    s1 = sfvm.Serial(c.cmd("info", vm="ag-1")["serial"])
    Agent(s1, setup=False)              # its shell answers
    log_before = sfd.log().count("come too fast")
    flood = [frame(TICKET, 5000 + i, ticket_req(1)) for i in range(200)]
    th = threading.Thread(target=pa.flood, args=(flood,))
    th.start()
    # While it lasts, sfd answers its clients quickly and the clone runs.
    slowest = 0.0
    polls = 0
    while th.is_alive() or polls < 3:
        t0 = time.monotonic()
        p = sfd.sfctl("list", json_out=True, timeout=10)
        assert p.returncode == 0, p.stderr
        slowest = max(slowest, time.monotonic() - t0)
        polls += 1
        time.sleep(0.2)
    th.join()
    assert slowest < 2.0, slowest
    s1.run("true", timeout=30)          # the clone is unaffected
    time.sleep(3)
    info = c.cmd("info", vm="ag")
    answers = [f for f in pa.frames() if f[0] == RESULT and
               5000 <= f[1] < 5300]
    errs = {f[2]["error"] for f in answers}
    assert errs <= {0, errno.EAGAIN, errno.EBUSY, errno.EDQUOT}, errs
    assert errno.EAGAIN in errs or errno.EBUSY in errs, errs
    granted = [f for f in answers if f[2]["error"] == 0]
    assert len(granted) <= 4            # at most 4 unused tickets
    assert info["agent"]["tickets-unused"] <= 4
    # sfd's own bucket refused some (QEMU's lets 40 through at once),
    # and said so once, not once per request.
    assert info["agent"]["rate-limited"] > 0, info["agent"]
    assert 1 <= sfd.log().count("come too fast") - log_before <= 2
    rl = ev.wait_event("GUEST_RATE_LIMITED", 10)["data"]
    assert rl["vm"] == "ag" and rl["refused"] >= 1
    assert k1["name"] in [v["name"] for v in c.cmd("list")]

    # kill: the clone of t2 ends, reported as killed.
    time.sleep(2.5)                     # the bucket refills
    r = pa.request(KILL, ref(t2))
    assert r["error"] == 0 and r["count"] == 1, r
    e = pa.exited(t2, 1)
    assert e["how"] == HOW_KILLED, e
    wait_gone(c, "ag-1")
    s1.close()

    # checkpoint, then clones from it: their identity answers the
    # checkpoint request.
    cpseq = pa.send(CHECKPOINT)
    r = pa.result(cpseq, timeout=300)
    assert r["error"] == 0 and r["value"] > 0, r
    cp = r["value"]
    info = c.cmd("info", vm="ag")
    assert info["agent"]["checkpoints"] == 1
    cp_pid = info["agent"]["checkpoint-list"][0]["server-pid"]
    sfd.pids.add(cp_pid)
    # The flood left this VM its 4 unused tickets: no fifth.
    if len(granted) == 4:
        assert pa.request(TICKET, ticket_req(1))["error"] == errno.EDQUOT
        t3 = granted[0][2]["value"]
    else:
        t3 = pa.request(TICKET, ticket_req(1))["value"]
    r = pa.request(CREATE, struct.pack("<QQ", cp, t3), timeout=300)
    assert r["error"] == 0 and r["count"] == 1, r
    k = wait_running(c, "ag-1")
    sfd.pids.add(k["pid"])
    s1 = sfvm.Serial(c.cmd("info", vm="ag-1")["serial"])
    idf = Agent(s1, setup=False).wait(
        lambda f: f[0] == IDENTITY and f[1] == cpseq,
        what="IDENTITY from the checkpoint")[2]
    assert idf["ticket"] == t3 and idf["clone_id"] == 1
    assert idf["hostname"] == "ag-1" and idf["ip"] == k["ip"]
    s1.close()
    assert pa.request(CREATE, struct.pack("<QQ", cp + 1000, t3))["error"] \
        == errno.ENOENT
    # The parent stops: its checkpoint's page server goes once its
    # clone has gone too.
    c.cmd("destroy", vm="ag-1", timeout=60)
    e = pa.exited(t3, 1)
    assert e["how"] == HOW_KILLED, e
    assert sfvm.pid_alive(cp_pid)

    # A client's fork: with an agent listening in the guest, sfd sends
    # each clone its identity on its own (seq 0) instead of typing on
    # its serial console.
    f = c.cmd("fork", vm="ag", count=1, timeout=300)
    sfd.pids.add(f["server-pid"])
    cl = f["clones"][0]
    sfd.pids.add(cl["pid"])
    assert f["running"] == 1, f
    s1 = sfvm.Serial(c.cmd("info", vm=cl["name"])["serial"])
    idf = Agent(s1, setup=False).wait(
        lambda f: f[0] == IDENTITY and f[1] == 0, what="pushed IDENTITY")[2]
    assert (idf["clone_id"], idf["ticket"]) == (1, 0), idf
    assert idf["hostname"] == cl["name"] and idf["mac"] == cl["mac"]
    assert idf["ip"] == cl["ip"]
    assert c.cmd("info", vm=cl["name"])["net-configured"] is True
    s1.close()
    c.cmd("destroy", vm=cl["name"], timeout=60)
    sp.close()
    c.cmd("destroy", vm="ag", timeout=60)
    assert sfvm.wait_gone(cp_pid, 10)
    reqs = []
    while True:
        try:
            reqs.append(ev.wait_event("GUEST_REQUEST", 0.5)["data"])
        except (TimeoutError, OSError):
            break
    assert any(r["op"] == "clone" and r["error"] == 0 for r in reqs), reqs
    # Bounded: the flood's EAGAINs are not events.
    assert len(reqs) < 100, len(reqs)
    log = sfd.log()
    print(log[-4000:])
    assert "sf-agent-reply" not in log or "failed" not in log, log


def test_guest_limits(sfd):
    """<sf:guest>: enabled='no' refuses the guest's requests with EPERM
    (the operator still forks the VM); a low requests-per-second and
    burst limit the guest as configured."""
    c = sfd.client()

    def xml(name, guest, interface=True):
        return sfdlib.domain_xml(
            name, interface=interface,
            clone=f"<sf:clone max='2'>{guest}</sf:clone>").replace(
                sfdlib.CMDLINE, sfdlib.CMDLINE + " sf.noagent")

    c.cmd("define", xml=xml("gn", "<sf:guest enabled='no'/>"))
    _, sp = sfdlib.start_booted(sfd, c, "gn")
    pa = Agent(sp)
    assert pa.request(TICKET, ticket_req(1))["error"] == errno.EPERM
    assert pa.request(CHECKPOINT)["error"] == errno.EPERM
    info = c.cmd("info", vm="gn")
    assert info["agent"]["limits"] == {
        "enabled": False, "requests-per-second": 5, "burst": 10,
        "max-unused-tickets": 4, "ticket-timeout": 60,
        "max-checkpoints": 4}, info["agent"]
    assert info["agent"]["refused"] == 2 and \
        info["agent"]["tickets-unused"] == 0, info["agent"]
    p = sfd.sfctl("info", "gn")
    assert p.returncode == 0 and "requests-per-second" in p.stdout, p
    # The operator still can.
    f = c.cmd("fork", vm="gn", count=1, timeout=300)
    sfd.pids.add(f["server-pid"])
    for cl in f["clones"]:
        sfd.pids.add(cl["pid"])
    assert f["running"] == 1, f
    c.cmd("destroy", vm=f["clones"][0]["name"], timeout=60)
    sp.close()
    c.cmd("destroy", vm="gn", timeout=60)

    # 1 request/s, burst 2: of 8 requests sent back to back, the first
    # two and about one per second after them are answered, the rest
    # are EAGAIN (QEMU's own bucket lets 40 through at once).
    c.cmd("define", xml=xml(
        "gr", "<sf:guest requests-per-second='1' burst='2' "
        "max-unused-tickets='16' ticket-timeout='5' max-checkpoints='1'/>",
        interface=False))
    _, sp = sfdlib.start_booted(sfd, c, "gr")
    pa = Agent(sp)
    lim = c.cmd("info", vm="gr")["agent"]["limits"]
    assert lim == {"enabled": True, "requests-per-second": 1, "burst": 2,
                   "max-unused-tickets": 16, "ticket-timeout": 5,
                   "max-checkpoints": 1}, lim
    flood = [frame(TICKET, 7000 + i, ticket_req(1)) for i in range(8)]
    t0 = time.monotonic()
    pa.flood(flood)
    elapsed = time.monotonic() - t0
    deadline = time.monotonic() + 60
    while True:
        res = [f[2]["error"] for f in pa.frames()
               if f[0] == RESULT and 7000 <= f[1] < 7008]
        if len(res) == 8 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(res) == 8, res
    print("answers", res, "in", round(elapsed, 1), "s")
    ok = res.count(0)
    assert set(res) <= {0, errno.EAGAIN}, res
    assert 2 <= ok <= 2 + int(elapsed) + 1, (res, elapsed)
    assert res.count(errno.EAGAIN) >= 1, (res, elapsed)
    info = c.cmd("info", vm="gr")
    assert info["agent"]["rate-limited"] == res.count(errno.EAGAIN)
    # ticket-timeout='5': the unused tickets are gone after 5 s.
    time.sleep(6)
    assert c.cmd("info", vm="gr")["agent"]["tickets-unused"] == 0
    sp.close()
    c.cmd("destroy", vm="gr", timeout=60)
