"""No frame leaves a clone under its parent's identity (issue 20).

A family network as sfd makes one: a bridge, a tap per VM.  The parent
holds an open TCP connection to the host and pings it in a loop; it is
forked into 4 clones started with sf-clone link=held (their own taps,
MACs from sfd's plan) plus one control clone with its link up, and every
tap is captured (AF_PACKET) from before the fork.  The test plays the
management layer: each clone gets its identity (MAC, IP, host name) a
second after it starts, as late as sfd may deliver it.

  held clones   send nothing at all until their agent reports the
                identity applied; then never a frame with the parent's
                IP (v4 or v6) or MAC, and a gratuitous ARP for their own
  the control   does send under the parent's IP: what the hold prevents
                (and proof that the capture sees it)
  the parent    keeps its connection; its copies in the clones stay
                silent (the address they were bound to is gone)
"""

import errno
import os
import socket
import struct
import threading
import time

import pytest

import clonerng
import sfdlib
import sfvm

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
HELD = 4                                    # clones with link=held


def mac_bytes(mac):
    return bytes(int(b, 16) for b in mac.split(":"))


def ip_bytes(ip):
    return socket.inet_aton(ip)


def sh(cmd):
    assert os.system(cmd) == 0, cmd


class Capture(threading.Thread):
    """Frames the VM behind a tap sends (received on the tap), timed."""

    def __init__(self, ifname):
        super().__init__(daemon=True)
        self.ifname = ifname
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                  socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, 0))
        self.sock.settimeout(0.2)
        self.frames = []
        self.running = True
        self.start()

    def run(self):
        while self.running:
            try:
                data, addr = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError as e:
                # ENETDOWN: no QEMU holds the tap (not yet, or any more).
                if e.errno != errno.ENETDOWN:
                    raise
                time.sleep(0.05)
                continue
            # Until bind() a raw socket gets every interface's frames.
            if addr[0] == self.ifname and addr[2] != PACKET_OUTGOING:
                self.frames.append((time.time(), data))

    def stop(self):
        self.running = False
        self.join(5)
        self.sock.close()


def parse(frame):
    """(src MAC, kind, sender IPs) of an Ethernet frame."""
    src, etype = frame[6:12], struct.unpack("!H", frame[12:14])[0]
    if etype == 0x0806:
        op = struct.unpack("!H", frame[20:22])[0]
        return src, ("arp", op, frame[28:32], frame[38:42]), [frame[28:32]]
    if etype == 0x0800:
        return src, ("ipv4", frame[23]), [frame[26:30]]
    if etype == 0x86dd:
        return src, ("ipv6",), [frame[22:38]]
    return src, ("other", etype), []


def link_local(mac):
    """The EUI-64 link-local IPv6 address a MAC gives."""
    b = bytearray(mac_bytes(mac))
    b[0] ^= 2
    return b"\xfe\x80" + bytes(6) + bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:])


@pytest.fixture
def family(lab):
    sfdlib.need_root_networking()
    tag = f"{os.getpid() % 10000}"
    net = f"10.{200 + os.getpid() % 50}.{os.getpid() % 250}"
    br = f"sfrbr{tag}"
    taps = [f"sfr{tag}p"] + [f"sfr{tag}c{k}" for k in range(1, HELD + 2)]
    sh(f"ip link add {br} type bridge && ip addr add {net}.1/24 dev {br} "
       f"&& ip link set {br} up")
    try:
        for t in taps:
            sh(f"ip tuntap add mode tap name {t} && "
               f"ip link set {t} master {br} && ip link set {t} up")
        yield net, br, taps
    finally:
        lab.close()
        for t in taps:
            os.system(f"ip link del {t} 2>/dev/null")
        os.system(f"ip link del {br} 2>/dev/null")


def tap_netdev(tap):
    return f"tap,id=n0,ifname={tap},script=no,downscript=no"


def test_clones_silent_until_identity_then_own_address(lab, family):
    net, br, taps = family
    host_ip, parent_ip = f"{net}.1", f"{net}.2"
    parent_mac = "52:54:00:5f:00:02"

    # The host end of the parent's TCP connection.
    srv = socket.socket()
    srv.bind((host_ip, 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    conns = []
    threading.Thread(target=lambda: conns.append(srv.accept()),
                     daemon=True).start()

    vm = lab.vm("p", netdev=False,
                append=sfvm.guest_cmdline(f"sf.ip={parent_ip}/24"),
                extra_args=["-netdev", tap_netdev(taps[0]),
                            "-device", "virtio-net-device,id=net0,netdev=n0,"
                                       f"mac={parent_mac}",
                            "-device", "vmgenid", "-device", "sf-agent-port"])
    try:
        vm.wait_ready()
    except (EOFError, TimeoutError) as e:
        with open(vm.log_path, errors="replace") as f:
            raise AssertionError(f"{e}; QEMU's log: {f.read()[-2000:]}")
    clonerng.boot_wait_agent(vm)
    s = vm.serial
    s.run(f"{{ while true; do echo data; sleep 0.1; done | nc {host_ip} "
          f"{port} >/dev/null 2>&1 & }}")
    s.run(f"{{ ping -i 0.2 {host_ip} >/dev/null 2>&1 & }}")
    deadline = time.monotonic() + 30
    while not conns:
        assert time.monotonic() < deadline, "no TCP connection from the guest"
        time.sleep(0.1)
    conn = conns[0][0]
    conn.settimeout(5)
    assert conn.recv(64).startswith(b"data")

    caps = {t: Capture(t) for t in taps}
    time.sleep(0.5)
    fork = vm.cmd("vm-fork", clones=HELD + 1, launch=False)
    lab.servers.append(fork["server-pid"])
    clones, plan = [], {}
    for k in range(1, HELD + 2):
        held = k <= HELD
        mac = f"52:54:00:5f:01:{k:02x}"
        plan[k] = {"mac": mac, "ip": f"{net}.{10 + k}", "tap": taps[k],
                   "held": held}
        c = sfvm.clone_of(vm, fork, k,
                          obj_extra=f",mac={mac}" + (",link=held" if held
                                                     else ""),
                          replace={"-netdev": tap_netdev(taps[k])})
        lab.vms.append(c)
        clones.append(c)
    for c in clones:
        want = "held" if plan[c.clone_id]["held"] else "up"
        assert c.cmd("query-sf-clone")["link"] == want
    # As late as sfd may deliver an identity: the clones' copies of the
    # parent's stack (TCP retransmits, pings, virtio-net's post-load
    # announce) have had time to try.
    time.sleep(1.0)
    applied = {}
    for c in clones:
        p = plan[c.clone_id]
        c.cmd("sf-agent-reply", kind="identity",
              **{"clone-id": c.clone_id, "generation": 1, "mac": p["mac"],
                 "ip": p["ip"], "prefix": 24, "hostname": f"p-{c.clone_id}"})
    for c in clones:
        ev = c.wait_event("SF_AGENT_IDENTITY_APPLIED", timeout=60)
        applied[c.clone_id] = (ev["timestamp"]["seconds"] +
                               ev["timestamp"]["microseconds"] / 1e6)
        assert ev["data"]["link-released"] is plan[c.clone_id]["held"], ev
        assert c.cmd("query-sf-clone")["link"] == \
            ("released" if plan[c.clone_id]["held"] else "up")
    time.sleep(2.0)
    # The parent's connection lives on; its copies in the clones are
    # bound to an address the clones no longer have.
    assert conn.recv(64)
    tcp = {c.clone_id: clonerng.get(c.serial, "cat /proc/net/tcp | "
                                    "awk 'NR > 1 {print $2, $3, $4}'")
           for c in clones[:1]}
    logs = {c.clone_id: clonerng.get(c.serial, "cat /run/sf-agent.log")
            for c in clones}
    for cap in caps.values():
        cap.stop()
    conn.close()
    srv.close()

    bad_ips = {ip_bytes(parent_ip), link_local(parent_mac)}
    for k, p in plan.items():
        frames = caps[p["tap"]].frames
        mine = mac_bytes(p["mac"])
        leaks = [(t, parse(f)) for t, f in frames
                 if set(parse(f)[2]) & bad_ips or
                 parse(f)[0] == mac_bytes(parent_mac)]
        if not p["held"]:
            # What the hold prevents: the control clone spoke as the parent.
            assert leaks, f"control clone {k}: {len(frames)} frames, none " \
                          "with the parent's identity"
            continue
        assert not leaks, \
            f"clone {k} sent as its parent, ms from its identity: " \
            f"{[(round((t - applied[k]) * 1000, 1), d) for t, d in leaks[:5]]}" \
            f"; its agent: {logs[k]}"
        early = [(t, parse(f)) for t, f in frames if t < applied[k] - 0.005]
        assert not early, f"clone {k} sent before its identity: {early[:5]}"
        garp = [t for t, f in frames if parse(f)[1][:1] == ("arp",) and
                parse(f)[1][2] == parse(f)[1][3] == ip_bytes(p["ip"]) and
                parse(f)[0] == mine]
        assert garp, f"clone {k}: no gratuitous ARP for {p['ip']}; frames: " \
                     f"{[parse(f) for _, f in frames[:10]]}"
        print(f"clone {k}: {len(frames)} frames, first "
              f"{(frames[0][0] - applied[k]) * 1000:+.1f} ms from its "
              f"identity, gratuitous ARP at "
              f"{(garp[0] - applied[k]) * 1000:+.1f} ms")
    # The parent spoke all along (the capture sees it).
    assert [1 for _, f in caps[taps[0]].frames
            if ip_bytes(parent_ip) in parse(f)[2]]
    print(f"clone 1's TCP sockets after its identity (local, remote, "
          f"state): {tcp[1]!r}")
