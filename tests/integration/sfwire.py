"""Pure-Python codec and client for the snowflock page-transfer wire format.

Mirrors migration-sf/lib/sf-wire.h (the contract): a 24-byte big-endian
header followed by a body whose length the header states.  Integration
tests use it to talk to, and to attack, the real page server.

    with SfWireClient("unix:/tmp/sf.sock", fork_id=3, clone_id=1,
                      secret=bytes.fromhex("00" * 16)) as c:
        welcome = c.hello()
        runs = c.fetch(block=0, offset=0, npages=16)   # [(type, pages)]
        c.done()

Everything here is deliberately permissive on the *sending* side (raw
headers, wrong lengths, bad versions) and strict on the *receiving* side
(a malformed reply from the server raises WireError).

On a network endpoint (tcp:) every message is sealed, as sf-seal.h says:
one record per message, AES-128-GCM under a session key derived (HKDF)
from the fork's direction key and a random salt of the session.  The
crypto is python3-cryptography's; Sealer/Opener mirror sf-seal.c so the
tests can be a clone, or an attacker who has or lacks the key.
"""

import os
import socket
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = 0x53465047
VERSION = 3
HDR_SIZE = 24
SECRET_LEN = 16
PAGE_SIZE = 4096
MAX_PAGES = 1024
ERRMSG_MAX = 256

(HELLO, WELCOME, REQUEST, DATA, ZERO, DONE, ERROR, DESC_GET, DESC, FRAG,
 ZEROMAP) = range(1, 12)
TYPE_NAMES = {HELLO: "HELLO", WELCOME: "WELCOME", REQUEST: "REQUEST",
              DATA: "DATA", ZERO: "ZERO", DONE: "DONE", ERROR: "ERROR",
              DESC_GET: "DESC_GET", DESC: "DESC", FRAG: "FRAG",
              ZEROMAP: "ZEROMAP"}

REQ_DEMAND = 0x1
REQ_PREFETCH = 0x2
REQ_UNICAST = 0x4
REQ_WORKSET = 0x8
REQ_FLAGS_ALL = REQ_DEMAND | REQ_PREFETCH | REQ_UNICAST | REQ_WORKSET
HELLO_DESC_ONLY = 0x1
MAX_FRAGS = 32
DESC_CHUNK = 1024 * 1024

# ERROR codes
ERR_AUTH, ERR_RANGE, ERR_PROTO, ERR_VERSION, ERR_BUSY, ERR_INTERNAL = \
    range(1, 7)

HELLO_LEN = 20
WELCOME_LEN = 32
REQUEST_LEN = 44
PAGES_LEN = 20
DONE_LEN = 16
DESC_GET_LEN = 24
DESC_LEN = 16
FRAG_LEN = 20
ZEROMAP_LEN = 12
ZEROMAP_RUNS = 8192
ZEROMAP_LAST = 0x1
MAX_BODY = PAGES_LEN + MAX_PAGES * PAGE_SIZE

# type -> (min body length, max body length), as sf_wire_msg_table[]
LENGTHS = {
    HELLO: (HELLO_LEN, HELLO_LEN),
    WELCOME: (WELCOME_LEN, WELCOME_LEN),
    REQUEST: (REQUEST_LEN, REQUEST_LEN),
    DATA: (PAGES_LEN + PAGE_SIZE, MAX_BODY),
    ZERO: (PAGES_LEN, PAGES_LEN),
    DONE: (DONE_LEN, DONE_LEN),
    ERROR: (4, 4 + ERRMSG_MAX),
    DESC_GET: (DESC_GET_LEN, DESC_GET_LEN),
    DESC: (DESC_LEN, DESC_LEN + DESC_CHUNK),
    FRAG: (FRAG_LEN + 1, FRAG_LEN + PAGE_SIZE),
    ZEROMAP: (ZEROMAP_LEN, ZEROMAP_LEN + ZEROMAP_RUNS * 8),
}

_HDR = struct.Struct(">IHHIIQ")
_HELLO = struct.Struct(">16sI")
_WELCOME = struct.Struct(">IIQIHBBQ")
_REQUEST = struct.Struct(">16sIIQIII")
_DESC_GET = struct.Struct(">16sQ")
_DESC = struct.Struct(">QQ")
_FRAG = struct.Struct(">IQIBBH")
_PAGES = struct.Struct(">IIQI")
_ZEROMAP = struct.Struct(">III")
_RUN = struct.Struct(">II")


class WireError(Exception):
    """A message that violates the wire format."""


class ServerError(Exception):
    """The server answered with an ERROR message."""

    def __init__(self, code, message):
        super().__init__("server error %d: %s" % (code, message))
        self.code = code
        self.message = message


# Encoders (no validation: tests must be able to send anything)

def encode_header(msg_type, length, clone_id=0, fork_id=0,
                  magic=MAGIC, version=VERSION):
    return _HDR.pack(magic, version, msg_type, length, clone_id, fork_id)


def encode_hello(secret, flags=0):
    return _HELLO.pack(bytes(secret), flags)


def encode_welcome(nblocks, page_size, total_pages, mcast_group=0,
                   mcast_port=0, frag_count=0, desc_len=0):
    return _WELCOME.pack(nblocks, page_size, total_pages, mcast_group,
                         mcast_port, frag_count, 0, desc_len)


def encode_request(secret, block, offset, npages, flags=0, rx_kbps=0,
                   loss_ppm=0):
    return _REQUEST.pack(bytes(secret), block, npages, offset, flags,
                         rx_kbps, loss_ppm)


def encode_desc_get(secret, offset):
    return _DESC_GET.pack(bytes(secret), offset)


def encode_frag(block, offset, index, count, flags=0):
    return _FRAG.pack(block, offset, flags, index, count, 0)


def frag_len(index, count):
    """Bytes fragment index of count carries (sf_wire_frag_len)."""
    if not 0 < count <= MAX_FRAGS or index >= count:
        return 0
    s = (PAGE_SIZE + count - 1) // count
    start = index * s
    return 0 if start >= PAGE_SIZE else min(s, PAGE_SIZE - start)


def encode_pages(block, offset, npages, flags=0):
    return _PAGES.pack(block, npages, offset, flags)


def encode_done(secret):
    return bytes(secret)


def encode_error(code, message=""):
    raw = message.encode("ascii", "replace")[:ERRMSG_MAX]
    return struct.pack(">I", code) + raw


def encode_message(msg_type, body=b"", clone_id=0, fork_id=0, payload=b""):
    return (encode_header(msg_type, len(body) + len(payload), clone_id,
                          fork_id) + body + payload)


# Decoders (strict, as the C side)

def decode_header(raw):
    """Return (type, length, clone_id, fork_id) or raise WireError."""
    if len(raw) != HDR_SIZE:
        raise WireError("header is %d bytes" % len(raw))
    magic, version, msg_type, length, clone_id, fork_id = _HDR.unpack(raw)
    if magic != MAGIC:
        raise WireError("bad magic 0x%08x" % magic)
    if version != VERSION:
        raise WireError("unsupported version %d" % version)
    if msg_type not in LENGTHS:
        raise WireError("unknown message type %d" % msg_type)
    lo, hi = LENGTHS[msg_type]
    if not lo <= length <= hi:
        raise WireError("%s body of %d bytes outside %d..%d"
                        % (TYPE_NAMES[msg_type], length, lo, hi))
    return msg_type, length, clone_id, fork_id


def _check_run(npages, offset, flags):
    if not 1 <= npages <= MAX_PAGES:
        raise WireError("npages %d outside 1..%d" % (npages, MAX_PAGES))
    if offset % PAGE_SIZE:
        raise WireError("offset 0x%x not page aligned" % offset)
    if flags & ~REQ_FLAGS_ALL:
        raise WireError("unknown flags 0x%x" % flags)


def decode_welcome(body):
    if len(body) != WELCOME_LEN:
        raise WireError("WELCOME of %d bytes" % len(body))
    (nblocks, page_size, total_pages, group, port, frags, pad,
     desc_len) = _WELCOME.unpack(body)
    if page_size != PAGE_SIZE or pad:
        raise WireError("WELCOME page size %d, padding %d" % (page_size, pad))
    return {"nblocks": nblocks, "page_size": page_size,
            "total_pages": total_pages, "mcast_group": group,
            "mcast_port": port, "frag_count": frags, "desc_len": desc_len}


def decode_request(body):
    if len(body) != REQUEST_LEN:
        raise WireError("REQUEST of %d bytes" % len(body))
    (secret, block, npages, offset, flags, rx_kbps,
     loss_ppm) = _REQUEST.unpack(body)
    _check_run(npages, offset, flags)
    return {"secret": secret, "block": block, "npages": npages,
            "offset": offset, "flags": flags, "rx_kbps": rx_kbps,
            "loss_ppm": loss_ppm}


def decode_desc(body):
    if len(body) < DESC_LEN:
        raise WireError("DESC of %d bytes" % len(body))
    offset, total = _DESC.unpack(body[:DESC_LEN])
    data = body[DESC_LEN:]
    if offset > total or len(data) > total - offset:
        raise WireError("DESC data beyond the descriptor")
    return {"offset": offset, "total": total, "data": data}


def decode_frag(body):
    if len(body) < FRAG_LEN:
        raise WireError("FRAG of %d bytes" % len(body))
    block, offset, flags, index, count, pad = _FRAG.unpack(body[:FRAG_LEN])
    _check_run(1, offset, flags)
    data = body[FRAG_LEN:]
    if pad or not frag_len(index, count) or \
            len(data) != frag_len(index, count):
        raise WireError("FRAG %d/%d of %d bytes" % (index, count, len(data)))
    return {"block": block, "offset": offset, "flags": flags,
            "index": index, "count": count, "data": data}


def decode_pages(msg_type, body):
    """DATA/ZERO -> dict with block, offset, npages, flags, data."""
    if msg_type not in (DATA, ZERO):
        raise WireError("not a page message: %d" % msg_type)
    if len(body) < PAGES_LEN:
        raise WireError("page message of %d bytes" % len(body))
    block, npages, offset, flags = _PAGES.unpack(body[:PAGES_LEN])
    _check_run(npages, offset, flags)
    data = body[PAGES_LEN:]
    want = npages * PAGE_SIZE if msg_type == DATA else 0
    if len(data) != want:
        raise WireError("%s payload of %d bytes for %d pages"
                        % (TYPE_NAMES[msg_type], len(data), npages))
    return {"block": block, "npages": npages, "offset": offset,
            "flags": flags, "data": data if msg_type == DATA else None}


def decode_zeromap(body):
    """(block, flags, [(page, npages), ...]) of a ZEROMAP."""
    if len(body) < ZEROMAP_LEN:
        raise WireError("ZEROMAP of %d bytes" % len(body))
    block, nruns, flags = _ZEROMAP.unpack_from(body)
    if len(body) != ZEROMAP_LEN + nruns * _RUN.size or flags & ~ZEROMAP_LAST:
        raise WireError("ZEROMAP length or flags")
    runs = [_RUN.unpack_from(body, ZEROMAP_LEN + i * _RUN.size)
            for i in range(nruns)]
    return block, flags, runs


def decode_error(body):
    if not 4 <= len(body) <= 4 + ERRMSG_MAX:
        raise WireError("ERROR of %d bytes" % len(body))
    (code,) = struct.unpack(">I", body[:4])
    text = body[4:]
    if any(c < 0x20 or c >= 0x7f for c in text):
        raise WireError("ERROR message has non-printable bytes")
    return code, text.decode("ascii")


# Sealing (sf-seal.h)

SEAL_MAGIC = 0x5346534C
SEAL_VERSION = 1
SEAL_HDR_SIZE = 44
SEAL_TAG_SIZE = 16
SEAL_OVERHEAD = SEAL_HDR_SIZE + SEAL_TAG_SIZE
SEAL_PAGES, SEAL_REQUESTS = 0, 1
_SEAL_HDR = struct.Struct(">IHHQ16sQI")


def _hkdf(salt, ikm, info):
    return HKDF(algorithm=hashes.SHA256(), length=16, salt=salt,
                info=info.encode()).derive(ikm)


def direction_key(secret, fork_id, direction):
    info = ("snowflock pages v1", "snowflock requests v1")[direction]
    return _hkdf(struct.pack(">Q", fork_id), bytes(secret), info)


def _session(dir_key, salt):
    return AESGCM(_hkdf(salt, dir_key, "snowflock session v1"))


def _nonce(counter):
    return b"\0" * 4 + struct.pack(">Q", counter)


class Sealer:
    """One sending session (a salt of its own, counters from 0)."""

    def __init__(self, secret, fork_id, direction=SEAL_REQUESTS, salt=None):
        self.fork_id = fork_id
        self.direction = direction
        self.salt = salt or os.urandom(16)
        self.aead = _session(direction_key(secret, fork_id, direction),
                             self.salt)
        self.counter = 0

    def seal(self, plain, counter=None):
        c = self.counter if counter is None else counter
        if counter is None:
            self.counter += 1
        hdr = _SEAL_HDR.pack(SEAL_MAGIC, SEAL_VERSION, self.direction,
                             self.fork_id, self.salt, c, len(plain))
        return hdr + self.aead.encrypt(_nonce(c), bytes(plain), hdr)


class Opener:
    """Opens what the other side sealed (any session of the fork)."""

    def __init__(self, secret, fork_id, direction=SEAL_PAGES):
        self.fork_id = fork_id
        self.direction = direction
        self.key = direction_key(secret, fork_id, direction)
        self.sessions = {}

    @staticmethod
    def record_length(hdr):
        magic, version, _, _, _, _, n = _SEAL_HDR.unpack(hdr)
        if magic != SEAL_MAGIC or version != SEAL_VERSION:
            raise WireError("not a sealed record (magic 0x%08x)" % magic)
        return n

    def open(self, rec):
        hdr = rec[:SEAL_HDR_SIZE]
        magic, version, direction, fork_id, salt, counter, n = \
            _SEAL_HDR.unpack(hdr)
        if (magic, version, direction, fork_id) != \
                (SEAL_MAGIC, SEAL_VERSION, self.direction, self.fork_id) or \
                n != len(rec) - SEAL_OVERHEAD:
            raise WireError("sealed record of another fork or direction")
        aead = self.sessions.get(salt) or _session(self.key, salt)
        self.sessions[salt] = aead
        return aead.decrypt(_nonce(counter), rec[SEAL_HDR_SIZE:], hdr)


def is_network(endpoint):
    return endpoint.startswith("tcp:")


def parse_secret(hexstr):
    if len(hexstr) != 2 * SECRET_LEN:
        raise ValueError("secret must be %d hex digits" % (2 * SECRET_LEN))
    return bytes.fromhex(hexstr)


# Client

def _open_socket(endpoint, timeout):
    scheme, _, addr = endpoint.partition(":")
    if scheme == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(addr)
        return s
    if scheme == "tcp":
        host, _, port = addr.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        s = socket.create_connection((host, int(port)), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s
    raise ValueError("unknown endpoint scheme in %r" % endpoint)


class SfWireClient:
    """One connection to a page server, speaking as clone `clone_id`."""

    def __init__(self, endpoint, fork_id, clone_id, secret, timeout=5.0,
                 seal_key=None):
        """On a tcp: endpoint the connection is sealed with the fork's key
        (from seal_key, a (secret, fork_id) pair, when the test plays a
        peer with another key than the one it claims)."""
        self.endpoint = endpoint
        self.fork_id = fork_id
        self.clone_id = clone_id
        self.secret = bytes(secret)
        self.sock = _open_socket(endpoint, timeout)
        self.sealer = self.opener = None
        self.plain = b""
        if is_network(endpoint):
            ks, kf = seal_key or (self.secret, fork_id)
            self.sealer = Sealer(ks, kf)
            self.opener = Opener(ks, kf)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # sending

    def send_raw(self, data):
        """data as the peer's stream carries it: one sealed record on a
        network endpoint (the server's framer sees data), as is on a
        local one."""
        self.sock.sendall(self.sealer.seal(data) if self.sealer else data)

    def send_unsealed(self, data):
        """data under any sealing: what someone without the key sends."""
        self.sock.sendall(data)

    def send(self, msg_type, body=b"", clone_id=None, fork_id=None):
        self.send_raw(encode_message(
            msg_type, body,
            self.clone_id if clone_id is None else clone_id,
            self.fork_id if fork_id is None else fork_id))

    def send_hello(self, secret=None, flags=0, **kw):
        self.send(HELLO, encode_hello(secret or self.secret, flags), **kw)

    def send_request(self, block, offset, npages, flags=0, secret=None,
                     **kw):
        self.send(REQUEST, encode_request(secret or self.secret, block,
                                          offset, npages, flags), **kw)

    def send_desc_get(self, offset, secret=None, **kw):
        self.send(DESC_GET, encode_desc_get(secret or self.secret, offset),
                  **kw)

    def send_done(self, secret=None, **kw):
        self.send(DONE, encode_done(secret or self.secret), **kw)

    # receiving

    def _sock_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                if not buf:
                    return None
                raise WireError("EOF after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return bytes(buf)

    def _recv_exact(self, n):
        if not self.opener:
            return self._sock_exact(n)
        while len(self.plain) < n:
            hdr = self._sock_exact(SEAL_HDR_SIZE)
            if hdr is None:
                if not self.plain:
                    return None
                raise WireError("EOF inside a message")
            rest = self._sock_exact(Opener.record_length(hdr) +
                                    SEAL_TAG_SIZE)
            if rest is None:
                raise WireError("EOF inside a sealed record")
            self.plain += self.opener.open(hdr + rest)
        out, self.plain = self.plain[:n], self.plain[n:]
        return out

    def recv(self):
        """Next message as (type, hdr dict, body bytes), or None on EOF.

        A connection reset counts as EOF: the server may close with data
        of ours still unread after it sent an ERROR.
        """
        try:
            raw = self._recv_exact(HDR_SIZE)
        except ConnectionResetError:
            return None
        if raw is None:
            return None
        msg_type, length, clone_id, fork_id = decode_header(raw)
        body = self._recv_exact(length) if length else b""
        if body is None:
            raise WireError("EOF before %s body" % TYPE_NAMES[msg_type])
        return msg_type, {"clone_id": clone_id, "fork_id": fork_id}, body

    def recv_expect(self, msg_type):
        msg = self.recv()
        if msg is None:
            raise WireError("EOF, expected %s" % TYPE_NAMES[msg_type])
        got, hdr, body = msg
        if got == ERROR and msg_type != ERROR:
            raise ServerError(*decode_error(body))
        if got != msg_type:
            raise WireError("got %s, expected %s"
                            % (TYPE_NAMES[got], TYPE_NAMES[msg_type]))
        return hdr, body

    def recv_error(self):
        """Expect ERROR; return (code, message)."""
        _, body = self.recv_expect(ERROR)
        return decode_error(body)

    def is_closed(self):
        """True when the server has closed the connection."""
        return self.recv() is None

    # conversations

    def hello(self):
        """HELLO, then the WELCOME and the zero map that follows it (kept
        in self.zeromap as (block, page, npages) runs)."""
        self.send_hello()
        hdr, body = self.recv_expect(WELCOME)
        if hdr["clone_id"] != self.clone_id or hdr["fork_id"] != self.fork_id:
            raise WireError("WELCOME addressed to clone %d fork %d"
                            % (hdr["clone_id"], hdr["fork_id"]))
        welcome = decode_welcome(body)
        self.zeromap = []
        while True:
            _, body = self.recv_expect(ZEROMAP)
            block, flags, runs = decode_zeromap(body)
            self.zeromap += [(block, p, n) for p, n in runs]
            if flags & ZEROMAP_LAST:
                return welcome

    def fetch(self, block, offset, npages, flags=0):
        """REQUEST and collect replies: list of (type, msg dict)."""
        self.send_request(block, offset, npages, flags)
        return self.collect(block, offset, npages)

    def collect(self, block, offset, npages):
        """Read the replies covering one request, checking their order."""
        runs = []
        cursor, end = offset, offset + npages * PAGE_SIZE
        while cursor < end:
            msg = self.recv()
            if msg is None:
                raise WireError("EOF inside a reply")
            msg_type, _, body = msg
            if msg_type == ERROR:
                raise ServerError(*decode_error(body))
            m = decode_pages(msg_type, body)
            if m["block"] != block or m["offset"] != cursor:
                raise WireError("reply for block %d offset 0x%x, expected "
                                "block %d offset 0x%x"
                                % (m["block"], m["offset"], block, cursor))
            cursor += m["npages"] * PAGE_SIZE
            if cursor > end:
                raise WireError("reply runs past the request")
            runs.append((msg_type, m))
        return runs

    def read_pages(self, block, offset, npages, flags=0):
        """Fetch and assemble: bytes of npages pages (zeros filled in)."""
        out = bytearray()
        for msg_type, m in self.fetch(block, offset, npages, flags):
            if msg_type == DATA:
                out += m["data"]
            else:
                out += bytes(m["npages"] * PAGE_SIZE)
        return bytes(out)

    def done(self):
        self.send_done()
