"""The Python binding, sfclone and sf-job against sf-agent and a fake host.

Like test-agent.c: the real sf-agent runs on a socketpair with --dry-run
and scratch dirs; this file plays QEMU's side of the channel.  Paths come
from the environment (meson sets them): SF_AGENT_BIN, SF_LIBSF,
SFCLONE_BIN, SF_JOB_BIN, and PYTHONPATH for the snowflock module.
"""
import errno
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

BUILD = os.environ.get("SF_BUILD_DIR", os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "h2"))
AGENT = os.environ.get("SF_AGENT_BIN", BUILD + "/guest-agent/sf-agent")
LIBSF = os.environ.get("SF_LIBSF", BUILD + "/guest-agent/libsf.so.1")
SFCLONE = os.environ.get("SFCLONE_BIN", BUILD + "/guest-agent/sfclone")
SF_JOB = os.environ.get("SF_JOB_BIN", BUILD + "/guest-agent/examples/sf-job")
os.environ["SF_LIBSF"] = LIBSF
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "guest-agent", "python"))
import snowflock  # noqa: E402

MAGIC, VERSION = 0x47414653, 1
HELLO, TICKET, CLONE, KILL, EXIT = 1, 2, 3, 4, 5
WELCOME, RESULT, IDENTITY, EXITED = 0x81, 0x82, 0x83, 0x84
HDR = struct.Struct("<IBBHII")


class FakeHost:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def send(self, type_, seq, body):
        self.sock.sendall(HDR.pack(MAGIC, VERSION, type_, 0, seq, len(body))
                          + body)

    def recv(self, timeout=5):
        while True:
            if len(self.buf) >= HDR.size:
                magic, ver, type_, flags, seq, length = HDR.unpack_from(self.buf)
                assert magic == MAGIC and ver == VERSION and flags == 0
                if len(self.buf) >= HDR.size + length:
                    body = self.buf[HDR.size:HDR.size + length]
                    self.buf = self.buf[HDR.size + length:]
                    return type_, seq, body
            r, _, _ = select.select([self.sock], [], [], timeout)
            assert r, "agent sent nothing"
            data = self.sock.recv(4096)
            assert data, "agent closed the channel"
            self.buf += data

    def expect(self, type_):
        t, seq, body = self.recv()
        assert t == type_, "got type 0x%x, want 0x%x" % (t, type_)
        return seq, body

    def result(self, seq, error=0, count=0, value=0):
        self.send(RESULT, seq, struct.pack("<iIQ", error, count, value))

    def exited(self, ticket, clone_id, how, status=0):
        self.send(EXITED, 0, struct.pack("<QIiII", ticket, clone_id, status,
                                         how, 0))


@pytest.fixture
def host_args():
    """Extra sf-agent options; a test overrides it with parametrize."""
    return []


@pytest.fixture
def host(tmp_path, host_args):
    run, root = tmp_path / "run", tmp_path / "root"
    run.mkdir()
    root.mkdir()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    agent = subprocess.Popen(
        [AGENT, "--port-fd", str(theirs.fileno()), "--run-dir", str(run),
         "--root", str(root), "--dry-run", str(tmp_path / "dry-run.log")]
        + host_args,
        pass_fds=[theirs.fileno()])
    theirs.close()
    os.environ["SF_RUN_DIR"] = str(run)
    h = FakeHost(ours)
    h.dry_run = tmp_path / "dry-run.log"
    seq, _ = h.expect(HELLO)
    h.send(WELCOME, seq, struct.pack("<II", VERSION, 8))
    for _ in range(500):
        if (run / "agent.sock").exists():
            break
        time.sleep(0.01)
    h.env = dict(os.environ)
    yield h
    agent.kill()
    agent.wait()
    ours.close()


def in_thread(fn, *args):
    out = {}

    def run():
        try:
            out["ret"] = fn(*args)
        except Exception as e:  # noqa: BLE001 - handed to the test
            out["exc"] = e
    t = threading.Thread(target=run)
    t.start()
    out["thread"] = t
    return out


def finish(call):
    call["thread"].join(5)
    assert not call["thread"].is_alive()
    if "exc" in call:
        raise call["exc"]
    return call["ret"]


def test_python_binding(host):
    call = in_thread(snowflock.request_ticket, 3)
    seq, body = host.expect(TICKET)
    assert struct.unpack("<II", body) == (3, 0)
    host.result(seq, count=2, value=11)
    ticket = finish(call)
    assert (ticket.id, ticket.granted) == (11, 2)

    call = in_thread(snowflock.clone, ticket)
    seq, body = host.expect(CLONE)
    assert struct.unpack("<Q", body) == (11,)
    host.result(seq, count=2)
    assert finish(call) == 0

    host.exited(11, 2, snowflock.SIGNALED, 9)
    host.exited(11, 1, snowflock.EXITED, 3)
    statuses = snowflock.join(ticket)
    assert statuses == [(1, snowflock.EXITED, 3), (2, snowflock.SIGNALED, 9)]
    assert statuses[1].how_name == "signaled"
    assert snowflock.id() == 0 and snowflock.generation() == 0

    # freeze=True: the workload cgroup is frozen before the host hears
    # of the fork and thawed when it has answered (a dry run records it).
    call = in_thread(snowflock.clone, 12, True)
    seq, body = host.expect(CLONE)
    assert struct.unpack("<Q", body) == (12,)
    assert host.dry_run.read_text() == "freeze 1\n"
    host.result(seq, count=1)
    assert finish(call) == 0
    assert host.dry_run.read_text() == "freeze 1\nfreeze 0\n"


@pytest.mark.parametrize("err", [errno.EDQUOT, errno.EAGAIN, errno.EBUSY])
def test_python_errors(host, err):
    call = in_thread(snowflock.request_ticket, 2)
    seq, _ = host.expect(TICKET)
    host.result(seq, error=err)
    with pytest.raises(snowflock.Error) as e:
        finish(call)
    assert isinstance(e.value, OSError)
    assert e.value.errno == err
    assert "sf_request_ticket" in e.value.strerror
    with pytest.raises(snowflock.Error) as e:
        snowflock.join(12345)
    assert e.value.errno == errno.ENOENT
    with pytest.raises(snowflock.Error) as e:
        snowflock.exit(0)           # not a clone
    assert e.value.errno == errno.ENOTSUP


@pytest.mark.parametrize("host_args", [["--request-timeout", "0.2"]])
def test_python_timeout(host):
    call = in_thread(snowflock.request_ticket, 2)
    seq, _ = host.expect(TICKET)    # and never answered in time
    with pytest.raises(snowflock.Error) as e:
        finish(call)
    assert e.value.errno == errno.ETIMEDOUT
    assert ("the host did not answer the ticket request within 0.2 s; "
            "is sfd managing this VM?") in e.value.strerror
    host.result(seq, count=2, value=5)      # late: dropped
    call = in_thread(snowflock.request_ticket, 1)
    seq, _ = host.expect(TICKET)
    host.result(seq, count=1, value=6)
    assert finish(call).id == 6


def run_tool(host, argv):
    return subprocess.Popen(argv, env=host.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sfclone_parent(host):
    p = run_tool(host, [SFCLONE, "-n", "3", "--", "true"])
    seq, _ = host.expect(TICKET)
    host.result(seq, count=2, value=5)
    seq, _ = host.expect(CLONE)
    host.result(seq, count=2)
    host.exited(5, 1, snowflock.EXITED, 0)
    host.exited(5, 2, snowflock.SIGNALED, 9)
    out, err = p.communicate(timeout=5)
    assert p.returncode == 1, err
    assert out.splitlines() == [
        "sfclone: note: granted 2 of 3 clones",
        "clone 1: exited 0",
        "clone 2: killed by signal 9",
    ]


def test_sfclone_codes(host):
    p = run_tool(host, [SFCLONE, "-n", "0", "--", "true"])
    p.communicate(timeout=5)
    assert p.returncode == 2
    p = run_tool(host, [SFCLONE, "--", "true"])
    seq, _ = host.expect(TICKET)
    host.result(seq, error=errno.EDQUOT)
    _, err = p.communicate(timeout=5)
    assert p.returncode == 3
    assert "quota" in err
    p = run_tool(host, [SFCLONE, "-q", "-n", "2", "--", "true"])
    seq, _ = host.expect(TICKET)
    host.result(seq, count=2, value=6)
    seq, _ = host.expect(CLONE)
    host.result(seq, count=2)
    host.exited(6, 1, snowflock.EXITED, 0)
    host.exited(6, 2, snowflock.CRASHED, 0)
    out, _ = p.communicate(timeout=5)
    assert p.returncode == 1
    assert out.splitlines() == ["clone 2: crashed"]


def share_status(k, m, n=1000000):
    lo, hi = (k - 1) * n // m, k * n // m
    return k * 1000 + (lo + hi - 1) * (hi - lo) // 2 % 1000


@pytest.mark.parametrize("corrupt", [False, True])
def test_sf_job_parent(host, corrupt):
    p = run_tool(host, [SF_JOB])
    seq, _ = host.expect(TICKET)
    host.result(seq, count=4, value=9)
    seq, _ = host.expect(CLONE)
    host.result(seq, count=4)
    for k in range(1, 5):
        host.exited(9, k, snowflock.EXITED,
                    share_status(k, 4) + (1 if corrupt and k == 3 else 0))
    out, _ = p.communicate(timeout=5)
    assert p.returncode == (1 if corrupt else 0), out
    assert out.splitlines()[-1] == (
        "sf-job: FAIL clones=4 bad=1" if corrupt else "sf-job: PASS clones=4")
