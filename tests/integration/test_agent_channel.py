"""The sf-agent-port device (hw-sf/sf-agent.c) against a real guest.

The guest boots with sf.noagent so the test owns the port: it opens
/dev/vportXpY once on the serial shell's fd 3 (a virtio-serial port has
one opener), keeps a `cat` appending everything QEMU sends to /tmp/rx,
and writes frames built here with busybox printf.  Frames follow
hw-sf/sf-agent-proto.h.
"""

import re
import struct
import time

import pytest

import sfvm

PORT_NAME = "org.snowflock.agent.0"
MAGIC = 0x47414653
HDR = struct.Struct("<IBBHII")

HELLO, TICKET, CLONE, KILL, EXIT, CHECKPOINT, CREATE = range(1, 8)
APPLIED, FREEZE_STATE, TIME = 0x08, 0x09, 0x0a
WELCOME, RESULT, IDENTITY, EXITED = 0x81, 0x82, 0x83, 0x84
FREEZE, CLOCK = 0x85, 0x86
BODY_LEN = {HELLO: 8, TICKET: 8, CLONE: 8, KILL: 8, EXIT: 8, CHECKPOINT: 0,
            CREATE: 16, WELCOME: 8, RESULT: 16, IDENTITY: 168, EXITED: 24,
            FREEZE: 8, CLOCK: 16}
IDENTITY_REPORT, IDENTITY_TIME = 0x01, 0x02
EINVAL, EAGAIN, EBUSY = 22, 11, 16
MAX_PENDING = 8


def frame(ftype, seq, body=b"", *, magic=MAGIC, version=1, flags=0,
          length=None):
    if length is None:
        length = len(body)
    return HDR.pack(magic, version, ftype, flags, seq, length) + body


def hello(seq, agent_version=1):
    return frame(HELLO, seq, struct.pack("<II", agent_version, 0))


def ticket(seq, clones, flags=0):
    return frame(TICKET, seq, struct.pack("<II", clones, flags))


def ticket_ref(ftype, seq, t):
    return frame(ftype, seq, struct.pack("<Q", t))


def parse_frames(data):
    """Host->guest frames; the stream must hold whole, valid frames only."""
    out = []
    while data:
        assert len(data) >= HDR.size, data.hex()
        magic, version, ftype, flags, seq, length = HDR.unpack_from(data)
        assert (magic, version, flags) == (MAGIC, 1, 0), data[:16].hex()
        assert length == BODY_LEN[ftype], (hex(ftype), length)
        body = data[HDR.size:HDR.size + length]
        assert len(body) == length, data.hex()
        out.append((ftype, seq, body))
        data = data[HDR.size + length:]
    return out


def decode(ftype, body):
    if ftype == WELCOME:
        return dict(zip(("version", "max_pending"), struct.unpack("<II", body)))
    if ftype == RESULT:
        return dict(zip(("error", "count", "value"),
                        struct.unpack("<iIQ", body)))
    if ftype == EXITED:
        return dict(zip(("ticket", "clone_id", "status", "how", "reserved"),
                        struct.unpack("<QIiII", body)))
    if ftype == IDENTITY:
        (clone_id, gen, tkt, rt, mac, prefix, flags, ip, _r2, host,
         entropy) = struct.unpack("<IIQq6sBB4sI64s64s", body)
        return {"clone_id": clone_id, "generation": gen, "ticket": tkt,
                "realtime_ns": rt, "mac": ":".join(f"{b:02x}" for b in mac),
                "prefix": prefix, "ip": ".".join(str(b) for b in ip),
                "hostname": host.rstrip(b"\0").decode(),
                "host_raw": host, "entropy": entropy, "flags": flags}
    if ftype == FREEZE:
        return dict(zip(("freeze", "timeout_ms"), struct.unpack("<II", body)))
    if ftype == CLOCK:
        return dict(zip(("realtime_ns", "echo"), struct.unpack("<qQ", body)))
    raise AssertionError(hex(ftype))


class Port:
    """The guest end of the agent port, driven over the serial shell."""

    def __init__(self, vm, rx_off=0):
        self.vm = vm
        self.rx_off = rx_off           # bytes of /tmp/rx already taken

    def open(self):
        _, out = self.vm.serial.run(
            "for d in /sys/class/virtio-ports/*; do "
            f"[ \"$(cat $d/name)\" = {PORT_NAME} ] && echo PORT=/dev/${{d##*/}}; "
            "done")
        m = re.search(r"PORT=(/dev/vport\d+p\d+)", out)
        assert m, f"no {PORT_NAME} in the guest: {out!r}"
        self.path = m.group(1)
        self.vm.serial.run(f"exec 3<>{self.path}")
        self.vm.serial.run(": > /tmp/rx; cat <&3 >> /tmp/rx & "
                           "echo $! > /tmp/rx.pid")
        return self

    def close(self):
        self.vm.serial.run("kill $(cat /tmp/rx.pid); exec 3>&-")

    def send(self, data, chunk=120):
        """Write data to the port in one write(); printf octal escapes."""
        self.vm.serial.run(": > /tmp/tx")
        for i in range(0, len(data), chunk):
            esc = "".join(f"\\{b:03o}" for b in data[i:i + chunk])
            self.vm.serial.run(f"printf '{esc}' >> /tmp/tx")
        self.vm.serial.run("cat /tmp/tx >&3")

    def send_split(self, data, at):
        """Write data in two write()s, split at byte `at`."""
        self.send(data[:at])
        self.send(data[at:])

    def read_raw(self):
        _, out = self.vm.serial.run(
            f"od -An -v -tx1 -j {self.rx_off} /tmp/rx")
        hexs = re.findall(r"\b[0-9a-f]{2}\b",
                          "\n".join(l for l in out.splitlines()
                                    if re.fullmatch(r"[0-9a-f ]+", l.strip())))
        return bytes(int(h, 16) for h in hexs)

    def recv(self, nframes, timeout=20.0):
        """Wait for exactly nframes more frames from QEMU."""
        deadline = time.monotonic() + timeout
        while True:
            data = self.read_raw()
            frames = parse_frames(data) if self._whole(data) else None
            if frames is not None and len(frames) >= nframes:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"wanted {nframes} frames, have "
                                     f"{data.hex()}")
            time.sleep(0.2)
        assert len(frames) == nframes, frames
        self.rx_off += len(data)
        return frames

    @staticmethod
    def _whole(data):
        while data:
            if len(data) < HDR.size:
                return False
            length = HDR.unpack_from(data)[5]
            if len(data) < HDR.size + min(length, 256):
                return False
            data = data[HDR.size + length:]
        return True

    def size(self):
        _, out = self.vm.serial.run("wc -c < /tmp/rx")
        return int(re.findall(r"^\s*(\d+)\s*$", out, re.M)[-1])

    def skip_all(self, quiet=1.0, timeout=60.0):
        """Take everything QEMU sent so far, once the stream is quiet."""
        deadline = time.monotonic() + timeout
        last = self.size()
        while True:
            time.sleep(quiet)
            now = self.size()
            if now == last:
                break
            assert time.monotonic() < deadline, "the port never goes quiet"
            last = now
        self.rx_off = now

    def expect_nothing(self, wait=1.0):
        time.sleep(wait)
        assert self.read_raw() == b""


def agent_vm(lab, name="p", mem_mib=256, device=True):
    extra = ["-device", "sf-agent-port"] if device else []
    vm = lab.vm(name, mem_mib=mem_mib, extra_args=extra,
                append=sfvm.guest_cmdline("sf.noagent"))
    vm.wait_ready()
    return vm


def info(vm):
    return vm.cmd("query-sf-agent")


def request_event(vm, timeout=20):
    return vm.wait_event("SF_AGENT_REQUEST", timeout=timeout)["data"]


def no_event(vm, name="SF_AGENT_REQUEST", wait=1.0):
    time.sleep(wait)
    vm.events += vm.qmp.get_events(wait=False)
    assert not [e for e in vm.events if e["event"] == name], vm.events


def reply(vm, **args):
    return vm.cmd("sf-agent-reply",
                  **{k.replace("_", "-"): v for k, v in args.items()})


@pytest.fixture
def guest(lab):
    vm = agent_vm(lab)
    port = Port(vm).open()
    return vm, port


def test_hello_ticket_result(guest):
    vm, port = guest
    st = info(vm)
    assert st["present"] and st["guest-connected"]
    assert st["agent-version"] == 0 and st["requests"] == 0

    port.send(hello(0x11, agent_version=7))
    [(t, seq, body)] = port.recv(1)
    assert (t, seq) == (WELCOME, 0x11)
    assert decode(t, body) == {"version": 1, "max_pending": MAX_PENDING}
    assert info(vm)["agent-version"] == 7
    no_event(vm, wait=0.1)              # HELLO never reaches sfd

    # A frame split over two writes is reassembled.
    port.send_split(hello(0x12, agent_version=8), 7)
    [(t, seq, _)] = port.recv(1)
    assert (t, seq) == (WELCOME, 0x12)
    assert info(vm)["agent-version"] == 8

    port.send(ticket(0x1234, 3))
    ev = request_event(vm)
    rid = ev["request"]
    assert rid != 0
    assert ev == {"request": rid, "op": "ticket", "clones": 3, "flags": 0}
    st = info(vm)
    assert st["pending"] == 1 and st["requests"] == 1
    port.expect_nothing(0.5)            # only sfd answers a ticket

    reply(vm, request=rid, kind="result", count=3, value=1001)
    [(t, seq, body)] = port.recv(1)
    assert (t, seq) == (RESULT, 0x1234)
    assert decode(t, body) == {"error": 0, "count": 3, "value": 1001}
    st = info(vm)
    assert st["pending"] == 0 and st["replies"] == 3
    with pytest.raises(sfvm.QMPError, match="not pending"):
        reply(vm, request=rid, kind="result")

    # Several requests merged in one write; ids are QEMU's, increasing.
    port.send(ticket_ref(CLONE, 0x21, 1001) + ticket_ref(KILL, 0x22, 1001)
              + frame(EXIT, 0x23, struct.pack("<iI", 3, 0))
              + frame(CHECKPOINT, 0x24)
              + frame(CREATE, 0x25, struct.pack("<QQ", 5, 1001)))
    evs = [request_event(vm) for _ in range(5)]
    ids = [e["request"] for e in evs]
    assert ids == sorted(ids) and len(set(ids)) == 5 and ids[0] > rid
    assert [{k: v for k, v in e.items() if k != "request"} for e in evs] == [
        {"op": "clone", "ticket": 1001},
        {"op": "kill", "ticket": 1001},
        {"op": "exit", "status": 3, "how": "exited"},
        {"op": "checkpoint"},
        {"op": "create-clones", "checkpoint": 5, "ticket": 1001}]
    assert info(vm)["pending"] == 5
    # Answers carry each request's own seq, in the order given.
    for e, err in zip(reversed(evs), (0, 2, 0, 0, 17)):
        reply(vm, request=e["request"], kind="result", error=err, count=1)
    got = port.recv(5)
    assert [(t, s) for t, s, _ in got] == [(RESULT, s) for s in
                                           (0x25, 0x24, 0x23, 0x22, 0x21)]
    assert [decode(t, b)["error"] for t, _, b in got] == [0, 2, 0, 0, 17]
    assert info(vm)["pending"] == 0

    # Well-formed but invalid requests: EINVAL at once, no event.
    before = info(vm)["requests"]
    bad = [ticket(0x31, 0), ticket(0x32, 2, flags=1),
           ticket_ref(CLONE, 0x33, 0), ticket_ref(KILL, 0x34, 1 << 63),
           frame(EXIT, 0x35, struct.pack("<iI", 0, 3)),   # how=killed
           frame(EXIT, 0x36, struct.pack("<iI", 0, 9)),
           frame(EXIT, 0x37, struct.pack("<iI", 0, 1)),   # signal 0
           frame(CREATE, 0x38, struct.pack("<QQ", 0, 1))]
    port.send(b"".join(bad))
    got = port.recv(len(bad))
    assert [(t, s, decode(t, b)["error"]) for t, s, b in got] == \
        [(RESULT, 0x31 + i, EINVAL) for i in range(len(bad))]
    no_event(vm, wait=0.2)
    st = info(vm)
    assert st["requests"] == before and st["pending"] == 0
    assert st["malformed"] == 0 and st["discarded-bytes"] == 0


# Malformed input, each sent together with a good HELLO behind it.
# (name, bytes, discarded): the device drops exactly the bad frame.
MALFORMED = [
    ("bad magic", b"XXXX" + bytes(12), 16),
    ("wrong length", frame(HELLO, 1, bytes(4)), 20),
    ("unknown type", frame(0x09, 1), 16),
    ("type host->guest", frame(RESULT, 1, bytes(16)), 32),
    ("flags", frame(HELLO, 1, bytes(8), flags=1), 24),
    ("version", frame(HELLO, 1, bytes(8), version=2), 24),
    ("seq 0", frame(HELLO, 0, bytes(8)), 24),
    ("oversized", frame(HELLO, 1, bytes(8), length=0x7fffffff), 24),
    ("huge length", frame(TICKET, 1, b"\xff" * 8, length=0xffffffff), 24),
    ("garbage", bytes(range(1, 251)) * 2, 500),
]


def test_malformed_frames_resync(guest):
    vm, port = guest
    malformed = discarded = 0
    for i, (name, junk, drop) in enumerate(MALFORMED):
        seq = 0x100 + i
        port.send(junk + hello(seq, agent_version=seq))
        malformed += 1
        discarded += drop
        got = port.recv(1)
        assert [(t, s) for t, s, _ in got] == [(WELCOME, seq)], name
        st = info(vm)
        assert (st["malformed"], st["discarded-bytes"]) == \
            (malformed, discarded), (name, st)
        assert st["agent-version"] == seq, name
    # A truncated header, then the rest of a frame starting afresh: the
    # half header is garbage once the next bytes show no magic.
    port.send(hello(0x200)[:10])
    port.send(hello(0x201))
    got = port.recv(1)
    assert [(t, s) for t, s, _ in got] == [(WELCOME, 0x201)]
    st = info(vm)
    assert st["malformed"] == malformed + 1
    assert st["discarded-bytes"] == discarded + 10
    assert st["requests"] == 0 and st["pending"] == 0


def test_flood_is_rate_limited(guest):
    vm, port = guest
    n = 100
    port.send(b"".join(ticket(1000 + i, 1) for i in range(n)))
    got = port.recv(n - MAX_PENDING, timeout=60)
    st = info(vm)
    assert st["requests"] == MAX_PENDING and st["pending"] == MAX_PENDING
    assert st["busy"] + st["rate-limited"] == n - MAX_PENDING
    # Burst 40: 8 accepted, the other 32 find the table full; the rest
    # come faster than 20/s.
    assert st["busy"] >= 25 and st["rate-limited"] >= 50, st
    assert st["dropped-replies"] == 0
    refused = {s: decode(t, b)["error"] for t, s, b in got}
    assert all(t == RESULT for t, _, _ in got)
    assert sorted(refused) == list(range(1000 + MAX_PENDING, 1000 + n))
    assert sorted(set(refused.values())) == [EAGAIN, EBUSY]
    assert list(refused.values()).count(EBUSY) == st["busy"]
    evs = [request_event(vm) for _ in range(MAX_PENDING)]
    assert all(e["op"] == "ticket" for e in evs)

    # A sustained flood from the guest while QMP stays prompt.
    vm.serial.run("cp /tmp/tx /tmp/flood; (i=0; while [ $i -lt 30 ]; do "
                  "cat /tmp/flood >&3; i=$((i+1)); done; echo FLOODDONE "
                  "> /tmp/flood.done) & true")
    worst = 0
    t_end = time.monotonic() + 60
    while time.monotonic() < t_end:
        t0 = time.monotonic()
        st = info(vm)
        worst = max(worst, time.monotonic() - t0)
        _, out = vm.serial.run("cat /tmp/flood.done 2>/dev/null; true")
        if "FLOODDONE" in out:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the guest's flood did not finish")
    assert worst < 2.0, worst
    st = info(vm)
    assert st["pending"] == MAX_PENDING
    assert st["busy"] + st["rate-limited"] == 31 * n - MAX_PENDING

    # Pending requests are still answerable, and the limit recovers.
    port.skip_all()
    for e in evs:
        reply(vm, request=e["request"], kind="result", count=1)
    got = port.recv(MAX_PENDING)
    assert sorted(s for _, s, _ in got) == list(range(1000, 1000 + MAX_PENDING))
    assert info(vm)["pending"] == 0
    vm.events.clear()
    time.sleep(2.5)                      # 40 tokens at 20/s
    port.send(ticket(5000, 1))
    ev = request_event(vm)
    assert ev["op"] == "ticket" and ev["request"] > evs[-1]["request"]


# Which argument goes with which kind is the QAPI union's to check
# (sf-agent-reply is boxed on SfAgentReply): its errors name the member.
REPLY_ERRORS = [
    ({"kind": "result"}, "Parameter 'request' is missing"),
    ({"request": 999999, "kind": "result"}, "not pending"),
    ({"request": "@T", "kind": "clone-exited", "clone_id": 1,
      "how": "exited"}, "Parameter 'request' is unexpected"),
    ({"request": "@T", "kind": "result", "error": -1}, "positive errno"),
    ({"request": "@T", "kind": "result", "hostname": "x"},
     "Parameter 'hostname' is unexpected"),
    ({"kind": "bogus"}, "'kind'"),
    ({"request": "@T", "kind": "identity", "clone_id": 1, "generation": 1},
     "answers clone or checkpoint"),
    ({"kind": "identity", "generation": 1}, "Parameter 'clone-id' is missing"),
    ({"kind": "identity", "clone_id": 0, "generation": 1}, "'clone-id'"),
    ({"kind": "identity", "clone_id": 1}, "Parameter 'generation' is missing"),
    ({"kind": "identity", "clone_id": 1, "generation": 0}, "'generation'"),
    ({"kind": "identity", "clone_id": 1, "generation": 1,
      "hostname": "bad_name"}, "'hostname'"),
    ({"kind": "identity", "clone_id": 1, "generation": 1,
      "hostname": "a" * 64}, "'hostname'"),
    ({"kind": "identity", "clone_id": 1, "generation": 1, "hostname": ""},
     "'hostname'"),
    ({"kind": "identity", "clone_id": 1, "generation": 1,
      "mac": "52:54:00:12:34"}, "'mac'"),
    ({"kind": "identity", "clone_id": 1, "generation": 1,
      "mac": "52:54:00:12:34:zz"}, "'mac'"),
    ({"kind": "identity", "clone_id": 1, "generation": 1,
      "mac": "01:00:5e:00:00:01"}, "'mac'"),
    ({"kind": "identity", "clone_id": 1, "generation": 1, "ip": "10.0.2",
      "prefix": 24}, "'ip'"),
    ({"kind": "identity", "clone_id": 1, "generation": 1,
      "ip": "10.0.2.15"}, "go together"),
    ({"kind": "identity", "clone_id": 1, "generation": 1, "ip": "10.0.2.15",
      "prefix": 33}, "'prefix'"),
    ({"kind": "identity", "clone_id": 1, "generation": 1, "ip": "10.0.2.15",
      "prefix": 0}, "'prefix'"),
    ({"kind": "identity", "clone_id": 1, "generation": 1, "count": 1},
     "Parameter 'count' is unexpected"),
    ({"kind": "clone-exited", "clone_id": 1}, "Parameter 'how' is missing"),
    ({"kind": "clone-exited", "how": "lost"},
     "Parameter 'clone-id' is missing"),
    ({"kind": "clone-exited", "clone_id": 0, "how": "lost"}, "'clone-id'"),
    ({"kind": "clone-exited", "clone_id": 1, "how": "lost", "ip": "1.2.3.4"},
     "Parameter 'ip' is unexpected"),
]


def test_reply_argument_errors(lab, guest):
    vm, port = guest
    port.send(ticket(0x77, 2))
    rid = request_event(vm)["request"]
    for args, msg in REPLY_ERRORS:
        args = {k: (rid if v == "@T" else v) for k, v in args.items()}
        with pytest.raises(sfvm.QMPError, match=re.escape(msg)):
            reply(vm, **args)
    # No refused reply consumed the request or reached the guest.
    st = info(vm)
    assert st["pending"] == 1 and st["replies"] == 0
    port.expect_nothing(0.2)
    reply(vm, request=rid, kind="result", value=9)
    [(t, s, b)] = port.recv(1)
    assert (t, s, decode(t, b)["value"]) == (RESULT, 0x77, 9)

    # Messages on the host's own initiative carry seq 0.
    reply(vm, kind="clone-exited", ticket=9, clone_id=2, status=15,
          how="signaled")
    reply(vm, kind="identity", clone_id=3, generation=4)
    (t1, s1, b1), (t2, s2, b2) = port.recv(2)
    assert (t1, s1, t2, s2) == (EXITED, 0, IDENTITY, 0)
    assert decode(t1, b1) == {"ticket": 9, "clone_id": 2, "status": 15,
                              "how": 1, "reserved": 0}
    ident = decode(t2, b2)
    assert (ident["clone_id"], ident["generation"], ident["ticket"]) == \
        (3, 4, 0)
    assert ident["mac"] == "00:00:00:00:00:00" and ident["prefix"] == 0
    assert ident["hostname"] == "" and ident["entropy"] != bytes(64)

    # A guest that has the port closed: the reply fails, nothing blocks.
    port.close()
    deadline = time.monotonic() + 10
    while info(vm)["guest-connected"]:
        assert time.monotonic() < deadline, "guest still has the port open"
        time.sleep(0.1)
    with pytest.raises(sfvm.QMPError, match="does not have port"):
        reply(vm, kind="identity", clone_id=1, generation=1)
    assert info(vm)["dropped-replies"] == 1

    # Without the device, the commands say so.
    bare = lab.vm("bare", mem_mib=128)
    st = bare.cmd("query-sf-agent")
    assert st["present"] is False and st["requests"] == 0
    with pytest.raises(sfvm.QMPError, match="no sf-agent-port"):
        bare.cmd("sf-agent-reply", kind="identity", **{"clone-id": 1,
                                                        "generation": 1})


def test_fork_clone_request_answered_in_each_vm(lab, guest):
    parent, port = guest
    port.send(hello(1, agent_version=5))
    port.recv(1)
    port.send(ticket_ref(CLONE, 0xC10E, 77))
    ev = request_event(parent)
    rid = ev["request"]
    assert ev == {"request": rid, "op": "clone", "ticket": 77}
    # Another request in flight at the fork: the parent's to answer; a
    # clone drops it once it has its identity.
    port.send(ticket_ref(KILL, 0x5151, 78))
    kill_rid = request_event(parent)["request"]
    # Half a frame in flight at the fork: each VM completes its own copy.
    half = ticket(0x7777, 1)
    port.send(half[:10])
    fork_off = port.rx_off

    r, clones = lab.fork(parent, clones=2)
    assert len(clones) == 2

    # The parent answers with a result ...
    assert info(parent)["pending"] == 2
    reply(parent, request=rid, kind="result", count=2)
    [(t, s, b)] = port.recv(1)
    assert (t, s) == (RESULT, 0xC10E)
    assert decode(t, b) == {"error": 0, "count": 2, "value": 0}
    reply(parent, request=kill_rid, kind="result", count=0)
    [(t, s, b)] = port.recv(1)
    assert (t, s) == (RESULT, 0x5151)
    assert info(parent)["pending"] == 0

    # ... each clone with its identity, for the same request id.
    entropies = []
    for c in clones:
        c.attach()
        cport = Port(c, rx_off=fork_off)
        st = info(c)
        assert st["present"] and st["guest-connected"], st
        assert st["pending"] == 2 and st["agent-version"] == 5, st
        k = c.clone_id
        mac = f"52:54:00:aa:00:{k:02x}"
        t_host = time.time_ns()
        reply(c, request=rid, kind="identity", clone_id=k, generation=1,
              ticket=77, mac=mac, ip=f"10.0.2.{100 + k}", prefix=24,
              hostname=f"p-{k}")
        [(t, s, b)] = cport.recv(1, timeout=60)
        assert (t, s) == (IDENTITY, 0xC10E), c.name
        ident = decode(t, b)
        assert (ident["clone_id"], ident["generation"], ident["ticket"]) == \
            (k, 1, 77)
        assert ident["mac"] == mac
        assert (ident["ip"], ident["prefix"]) == (f"10.0.2.{100 + k}", 24)
        assert ident["hostname"] == f"p-{k}"
        assert ident["host_raw"] == f"p-{k}".encode().ljust(64, b"\0")
        assert abs(ident["realtime_ns"] - t_host) < 5 * 10**9, \
            (ident["realtime_ns"], t_host)
        assert ident["entropy"] != bytes(64)
        entropies.append(ident["entropy"])
        # The inherited kill went with the identity: the slots are free.
        assert info(c)["pending"] == 0
        for r_id in (rid, kill_rid):
            with pytest.raises(sfvm.QMPError, match="not pending"):
                reply(c, request=r_id, kind="result")

        # The restored channel goes on: the half frame completes, and the
        # request id counter continued from the parent's.
        cport.send(half[10:])
        cev = request_event(c)
        assert cev == {"request": kill_rid + 1, "op": "ticket", "clones": 1,
                       "flags": 0}
        reply(c, request=kill_rid + 1, kind="result", error=EBUSY)
        [(t, s, b)] = cport.recv(1)
        assert (t, s, decode(t, b)["error"]) == (RESULT, 0x7777, EBUSY)
    assert entropies[0] != entropies[1]


def applied(seq, clone_id, generation, realtime_ns=None):
    if realtime_ns is None:
        realtime_ns = time.time_ns()
    return frame(APPLIED, seq, struct.pack("<IIq", clone_id, generation,
                                           realtime_ns))


def freeze_state(seq, error=0, frozen=1, tasks=3, frozen_us=0):
    return frame(FREEZE_STATE, seq,
                 struct.pack("<iIIIQ", error, frozen, tasks, 0, frozen_us))


def test_guest_reports_answer_only_what_the_host_sent(guest):
    """APPLIED and FREEZE_STATE act once, for what this device sent; the
    rest is counted and ignored.  TIME is answered by the device."""
    vm, port = guest

    # No identity was sent: an APPLIED is nobody's answer.
    port.send(applied(0x21, 1, 1))
    no_event(vm, "SF_AGENT_IDENTITY_APPLIED", wait=0.5)
    assert info(vm)["reports-ignored"] == 1

    # Freeze: the FREEZE frame carries the host's seq, the state echoes it.
    with pytest.raises(sfvm.QMPError, match="timeout-ms"):
        vm.cmd("sf-agent-freeze", **{"timeout-ms": 0})
    vm.cmd("sf-agent-freeze", **{"timeout-ms": 4000})
    [(t, fseq, body)] = port.recv(1)
    assert t == FREEZE and fseq != 0
    assert decode(t, body) == {"freeze": 1, "timeout_ms": 4000}
    port.send(freeze_state(fseq + 1))                  # not that one
    port.send(freeze_state(fseq, error=-5))            # not a state
    no_event(vm, "SF_AGENT_FREEZE", wait=0.5)
    port.send(freeze_state(fseq, tasks=3))
    ev = vm.wait_event("SF_AGENT_FREEZE", timeout=10)["data"]
    assert ev == {"state": "frozen", "error": 0, "tasks": 3, "frozen-us": 0}
    port.send(freeze_state(fseq))                      # answered already
    vm.cmd("sf-agent-thaw")
    [(t, tseq, body)] = port.recv(1)
    assert t == FREEZE and tseq != fseq and decode(t, body)["freeze"] == 0
    port.send(freeze_state(tseq, frozen=0, frozen_us=1234))
    ev = vm.wait_event("SF_AGENT_FREEZE", timeout=10)["data"]
    assert ev == {"state": "thawed", "error": 0, "tasks": 3,
                  "frozen-us": 1234}
    vm.cmd("sf-agent-freeze")
    [(t, seq, _)] = port.recv(1)
    port.send(freeze_state(seq, error=2, frozen=0, tasks=0))   # ENOENT
    ev = vm.wait_event("SF_AGENT_FREEZE", timeout=10)["data"]
    assert ev["state"] == "failed" and ev["error"] == 2
    assert info(vm)["reports-ignored"] == 4

    # TIME: the device answers with its clock, echoing the guest's value.
    port.send(frame(TIME, 0x31, struct.pack("<Q", 0xfeedface)))
    t0 = time.time_ns()
    [(t, seq, body)] = port.recv(1)
    clk = decode(t, body)
    assert (t, seq, clk["echo"]) == (CLOCK, 0x31, 0xfeedface)
    assert abs(clk["realtime_ns"] - t0) < 30 * 10**9

    # An identity: REPORT and TIME set; only its own APPLIED counts, once.
    reply(vm, kind="identity", clone_id=3, generation=2)
    [(t, seq, body)] = port.recv(1)
    assert t == IDENTITY and seq == 0
    assert decode(t, body)["flags"] == IDENTITY_REPORT | IDENTITY_TIME
    port.send(applied(0x41, 3, 1))                     # other generation
    no_event(vm, "SF_AGENT_IDENTITY_APPLIED", wait=0.5)
    port.send(applied(0x42, 3, 2, realtime_ns=time.time_ns() - 10**9))
    ev = vm.wait_event("SF_AGENT_IDENTITY_APPLIED", timeout=10)["data"]
    assert ev["clone-id"] == 3 and ev["generation"] == 2
    assert ev["link-released"] is False     # not a clone: nothing held
    assert -2 * 10**6 < ev["clock-skew-us"] < -0.9 * 10**6, ev
    port.send(applied(0x43, 3, 2))
    no_event(vm, "SF_AGENT_IDENTITY_APPLIED", wait=0.5)
    assert info(vm)["reports-ignored"] == 6
    assert info(vm)["malformed"] == 0
