"""Self-test of sfwire.py against the real page server (no QEMU needed).

Runs migration-sf/lib/sf-pageserver-tool from the meson build dir
(SF_BUILD_DIR, default build/host; built on demand if the dir is
configured, skipped if there is none) over unix and tcp, and checks the
Python client against it, hostile cases included.
"""

import json
import os
import select
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sfwire  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("SF_BUILD_DIR", os.path.join(ROOT, "build", "host"))
TOOL_TARGET = "migration-sf/lib/sf-pageserver-tool"
TOOL = os.path.join(BUILD, TOOL_TARGET)

FORK_ID = 77
SECRET = bytes.fromhex("00112233445566778899aabbccddeeff")
NPAGES = 64
PG = sfwire.PAGE_SIZE


def page_is_zero(i):
    return i % 5 in (1, 2) or i == NPAGES - 1


def make_image():
    """NPAGES pages minus a partial tail (the tool pads it with zeros)."""
    out = bytearray()
    for i in range(NPAGES):
        if page_is_zero(i):
            out += bytes(PG)
        else:
            out += bytes(((i * 31 + j) & 0xff) | 1 for j in range(PG))
    return bytes(out[:-100])


IMAGE = make_image()
PADDED = IMAGE + bytes(NPAGES * PG - len(IMAGE))


@pytest.fixture(scope="session")
def tool():
    if not os.path.exists(os.path.join(BUILD, "build.ninja")):
        pytest.skip("no meson build dir at %s (set SF_BUILD_DIR)" % BUILD)
    subprocess.run(["ninja", "-C", BUILD, TOOL_TARGET], check=True,
                   stdout=subprocess.DEVNULL)
    return TOOL


class ToolServer:
    def __init__(self, tool, tmp_path, listen, max_clones=4, extra=()):
        self.image = tmp_path / "image.bin"
        self.image.write_bytes(IMAGE)
        self.stats = tmp_path / "stats.json"
        secret = tmp_path / "secret"
        secret.write_bytes(SECRET)
        secret.chmod(0o600)
        self.log = open(tmp_path / "server.log", "w+")
        self.proc = subprocess.Popen(
            [tool, "--listen", listen, "--image", str(self.image),
             "--fork-id", str(FORK_ID), "--secret-file", str(secret),
             "--max-clones", str(max_clones), "--stats", str(self.stats),
             *extra],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("LISTENING "):
            self.stop()
            raise RuntimeError("tool did not start: %r" % line)
        self.endpoint = line.split(None, 1)[1].strip()

    def client(self, clone_id=1, **kw):
        return sfwire.SfWireClient(self.endpoint, FORK_ID, clone_id, SECRET,
                                   **kw)

    def wait(self, timeout=5):
        return self.proc.wait(timeout=timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        self.log.close()


@pytest.fixture(params=["unix", "tcp"])
def server(request, tool, tmp_path):
    listen = ("unix:%s" % (tmp_path / "ps.sock")
              if request.param == "unix" else "tcp:127.0.0.1:0")
    srv = ToolServer(tool, tmp_path, listen)
    yield srv
    srv.stop()


# Pure codec

def test_codec_roundtrip():
    hdr = sfwire.encode_header(sfwire.REQUEST, 44, 5, 9)
    assert hdr[:4] == b"SFPG"
    assert sfwire.decode_header(hdr) == (sfwire.REQUEST, 44, 5, 9)
    req = sfwire.decode_request(sfwire.encode_request(SECRET, 2, 8192, 3, 1))
    assert (req["block"], req["offset"], req["npages"], req["flags"]) == \
        (2, 8192, 3, 1)
    m = sfwire.decode_pages(sfwire.ZERO, sfwire.encode_pages(1, 4096, 7))
    assert (m["block"], m["offset"], m["npages"]) == (1, 4096, 7)
    assert sfwire.decode_error(sfwire.encode_error(2, "range")) == (2, "range")


@pytest.mark.parametrize("kw", [
    {"magic": 0x12345678}, {"version": 1}, {"msg_type": 99},
    {"msg_type": sfwire.HELLO, "length": 21},
    {"msg_type": sfwire.DATA, "length": sfwire.MAX_BODY + 1},
])
def test_codec_rejects_header(kw):
    args = {"msg_type": sfwire.HELLO, "length": 20}
    args.update(kw)
    with pytest.raises(sfwire.WireError):
        sfwire.decode_header(sfwire.encode_header(**args))


def test_codec_rejects_body():
    with pytest.raises(sfwire.WireError):
        sfwire.decode_request(sfwire.encode_request(SECRET, 0, 100, 1))
    with pytest.raises(sfwire.WireError):
        sfwire.decode_request(sfwire.encode_request(SECRET, 0, 0, 0))
    with pytest.raises(sfwire.WireError):
        sfwire.decode_pages(sfwire.DATA, sfwire.encode_pages(0, 0, 2) +
                            bytes(PG))
    with pytest.raises(sfwire.WireError):
        sfwire.decode_error(b"\0\0\0\1bad\n")


# Against the real server

def test_hello_and_pages(server):
    with server.client(1) as c:
        w = c.hello()
        assert w == {"nblocks": 1, "page_size": PG, "total_pages": NPAGES,
                     "mcast_group": 0, "mcast_port": 0, "frag_count": 0,
                     "desc_len": 0}
        assert c.read_pages(0, 0, NPAGES) == PADDED
        # Runs are maximal and split exactly at zero/non-zero boundaries.
        runs = c.fetch(0, 0, 8)
        expect = [(sfwire.DATA, 1), (sfwire.ZERO, 2), (sfwire.DATA, 3),
                  (sfwire.ZERO, 2)]
        assert [(t, m["npages"]) for t, m in runs] == expect
        c.done()


def test_wrong_secret_gets_auth(server):
    with server.client(1) as c:
        c.send_hello(secret=bytes(16))
        code, msg = c.recv_error()
        assert code == sfwire.ERR_AUTH == 1
        assert msg
        assert c.is_closed()
    # The server lives on for honest clients.
    with server.client(1) as c:
        c.hello()


def test_range_and_proto_errors(server):
    with server.client(2) as c:
        c.hello()
        c.send_request(1, 0, 1)
        assert c.recv_error()[0] == sfwire.ERR_RANGE
        assert c.is_closed()
    with server.client(2) as c:
        c.send_request(0, 0, 1)             # before HELLO
        assert c.recv_error()[0] == sfwire.ERR_PROTO
    with server.client(2) as c:
        c.send_raw(sfwire.encode_header(sfwire.HELLO, 20, 2, FORK_ID,
                                        version=9))
        assert c.recv_error()[0] == sfwire.ERR_VERSION


def test_done_ends_server(tool, tmp_path):
    srv = ToolServer(tool, tmp_path, "unix:%s" % (tmp_path / "s.sock"),
                     max_clones=1)
    try:
        with srv.client(1) as c:
            c.hello()
            c.read_pages(0, 0, 10)
            c.done()
            assert c.is_closed()
        assert srv.wait() == 0
        stats = json.loads(srv.stats.read_text())
        clone = stats["clones"][0]
        assert stats["fork_id"] == FORK_ID
        assert clone["state"] == "done"
        assert clone["requests"] == 1
        assert clone["pages_sent"] == sum(not page_is_zero(i)
                                          for i in range(10))
        assert clone["zero_pages"] == sum(page_is_zero(i) for i in range(10))
    finally:
        srv.stop()


def test_sigterm_stops_server(server):
    with server.client(3) as c:
        c.hello()
        t0 = time.monotonic()
        server.proc.terminate()
        assert server.wait() == 0
        assert time.monotonic() - t0 < 3
        assert c.is_closed()
