"""vm-fork end to end: clones see the parent's memory at the fork instant."""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

import pattern
import sfvm
import sfwire

PATTERN_MIB = 256


@pytest.fixture
def parent(lab):
    """A 512 MiB guest holding a 256 MiB pattern of seed 1."""
    vm = lab.vm("p", mem_mib=512)
    vm.wait_ready()
    pattern.start(vm.serial, PATTERN_MIB, 1)
    return vm


def clone_mac(vm):
    return vm.cmd("qom-get", path="/machine/peripheral/net0", property="mac")


def test_fork_four_clones_see_fork_instant(lab, parent):
    r, clones = lab.fork(parent, clones=4)
    # The parent runs on and overwrites every page right away.
    pattern.fill(parent.serial, 2)

    assert r["clones"] == 4 and len(clones) == 4
    assert r["pause-us"] > 0 and r["descriptor-size"] > 0
    assert os.path.exists(r["descriptor"])
    assert len(read_secret(r)) == 16

    macs = {clone_mac(parent)}
    for c in clones:
        c.attach()
        pages, bad, line = pattern.verify(c.serial, 1)
        assert pages == PATTERN_MIB * 256 and bad == 0, (c.name, line)
        st = c.cmd("query-sf-clone")
        assert st["clone-id"] == c.clone_id
        assert c.name == f"p-{c.clone_id}"
        assert st["fork-id"] == r["id"]
        assert st["faults"] > 0 and st["pages-fetched"] > 0
        assert st["start-to-run-us"] > 0
        macs.add(clone_mac(c))
    # Every clone has its own MAC, none the parent's.
    assert len(macs) == 5, macs

    pages, bad, line = pattern.verify(parent.serial, 2)
    assert bad == 0, line

    # With prefetch on, every clone ends up holding all of its pages.
    for c in clones:
        if c.cmd("query-sf-clone")["state"] != "complete":
            ev = c.wait_event("SF_CLONE_COMPLETE", timeout=120)
            assert ev["data"]["fork-id"] == r["id"]
        st = c.cmd("query-sf-clone")
        assert st["state"] == "complete"
        assert st["pages-present"] == st["pages-total"]
        assert (st["pages-fetched"] + st["zero-pages"] + st["avoided-pages"]
                == st["pages-total"])
    # ... and the page server, its work done, releases the image.
    assert sfvm.wait_gone(r["server-pid"], 30)
    forks = parent.cmd("query-sf-forks")
    assert len(forks) == 1 and not forks[0]["server-alive"]
    served = {s["clone-id"]: s for s in forks[0]["served"]}
    assert sorted(served) == [1, 2, 3, 4]
    assert all(s["state"] == "done" and s["pages-sent"] > 0
               for s in served.values())


def test_clones_survive_parent_killed(lab, parent):
    r, clones = lab.fork(parent, clones=2, prefetch=False)
    parent.kill(signal.SIGKILL)
    for c in clones:
        c.attach()
        pages, bad, line = pattern.verify(c.serial, 1)
        assert bad == 0, (c.name, line)
        st = c.cmd("query-sf-clone")
        assert st["pushed-pages"] == 0       # demand only
        assert st["prefetch"] is False


def test_fork_again_and_again(lab, parent):
    r1, c1 = lab.fork(parent, clones=1)
    s1 = read_secret(r1)
    pattern.fill(parent.serial, 2)
    r2, c2 = lab.fork(parent, clones=1, listen="tcp:127.0.0.1:0")
    s2 = read_secret(r2)
    pattern.fill(parent.serial, 3)
    assert r1["id"] != r2["id"] and s1 != s2
    assert r2["server"].startswith("tcp:127.0.0.1:")
    for clone, seed in ((c1[0], 1), (c2[0], 2)):
        clone.attach()
        assert pattern.verify(clone.serial, seed)[1] == 0
    assert pattern.verify(parent.serial, 3)[1] == 0
    assert len(parent.cmd("query-sf-forks")) == 2


def test_page_server_killed_clones_fail_closed(lab, parent):
    r, clones = lab.fork(parent, clones=2, prefetch=False)
    for c in clones:
        c.attach()
    os.kill(r["server-pid"], signal.SIGKILL)
    t0 = time.monotonic()
    for c in clones:
        # Touch 256 MiB of pages no clone has yet: the server is gone.
        c.serial.write(f"echo 'verify 1' > {pattern.FIFO}\n")
    failed = {}
    for c in clones:
        # The event comes just before the process exits.
        failed[c.name] = c.wait_event("SF_CLONE_FAILED", timeout=30)
    for c in clones:
        assert sfvm.wait_gone(c.pid, 30), f"{c.name} still runs"
    elapsed = time.monotonic() - t0
    assert elapsed < 25, elapsed        # retry window is 5 s
    for cid in (1, 2):
        log = open(os.path.join(r["dir"], f"clone-{cid}.log")).read()
        assert re.search(r"stops: page server .* unreachable", log), log
        # No clone ever reported a wrong page: it stopped before verifying.
        assert "mismatches=" not in log
    for c in clones:
        ev = failed[c.name]
        assert "unreachable" in ev["data"]["reason"], ev
        assert ev["data"]["clone-id"] == c.clone_id
    # Nothing left behind: no clone or server process, no server socket,
    # no descriptor or secret; only the failed clones' logs, kept where
    # the parent's warning says.
    assert not sfvm.pid_alive(r["server-pid"])
    for _ in clones:
        ev = parent.wait_event("SF_CLONE_EXITED", timeout=10)
        assert ev["data"]["status"] != 0
    assert sorted(os.listdir(r["dir"])) == ["clone-1.log", "clone-2.log",
                                            "pageserver.log"]
    warnings = open(parent.log_path).read()
    for c in clones:
        assert f"its log is kept: {c.log_path}" in warnings, warnings
    # The operator read them; now they may go.
    shutil.rmtree(r["dir"])


def read_secret(r):
    with open(r["secret-file"], "rb") as f:
        return f.read()


def external_clone(lab, parent, r, clone_id, secret=None, name=None):
    """Start a clone ourselves, the way a remote host would; secret: the
    bytes of a secret file to give it instead of the fork's."""
    args = [a.replace("@CLONE_ID@", str(clone_id)) for a in r["clone-args"]]
    if secret is not None:
        path = os.path.join(lab.workdir, f"secret-{clone_id}")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(secret)
        args = [a.replace(r["secret-file"], path) for a in args]
    vm = sfvm.VM(lab.workdir, name or f"ext{clone_id}", mem_mib=512,
                 extra_args=args)
    vm.args[vm.args.index("-name") + 1] = vm.name
    lab.vms.append(vm)
    return vm


def test_external_clone_and_hostile_peers(lab, parent):
    r, clones = lab.fork(parent, clones=3, launch=False)
    assert clones == []
    fork_id, secret = r["id"], read_secret(r)
    ep = r["server"]

    # Wrong secret gets nothing.
    with sfwire.SfWireClient(ep, fork_id, 1, b"\0" * 16) as c:
        c.send_hello()
        code, msg = c.recv_error()
        assert code == sfwire.ERR_AUTH and c.is_closed()
    # A right HELLO, then a REQUEST with the wrong secret.
    with sfwire.SfWireClient(ep, fork_id, 1, secret) as c:
        c.hello()
        c.send_request(0, 0, 1, secret=b"\1" * 16)
        assert c.recv_error()[0] == sfwire.ERR_AUTH
    # Wrong fork id, unknown version, truncated and oversized headers.
    with sfwire.SfWireClient(ep, fork_id + 1, 1, secret) as c:
        c.send_hello()
        assert c.recv_error()[0] == sfwire.ERR_AUTH
    with sfwire.SfWireClient(ep, fork_id, 1, secret) as c:
        hdr = bytearray(sfwire.encode_header(sfwire.HELLO, 20, 1, fork_id))
        hdr[4:6] = (99).to_bytes(2, "big")
        c.send_raw(bytes(hdr) + b"\0" * 20)
        assert c.recv_error()[0] == sfwire.ERR_VERSION
    with sfwire.SfWireClient(ep, fork_id, 1, secret) as c:
        c.send_raw(sfwire.encode_header(sfwire.HELLO, 20, 1, fork_id)[:10])
    with sfwire.SfWireClient(ep, fork_id, 1, secret) as c:
        c.hello()
        c.send_raw(sfwire.encode_header(sfwire.REQUEST, 1 << 30, 1, fork_id))
        assert c.recv_error()[0] == sfwire.ERR_PROTO and c.is_closed()
    with sfwire.SfWireClient(ep, fork_id, 1, secret) as c:
        c.hello()
        c.send_request(1000, 0, 1)
        assert c.recv_error()[0] == sfwire.ERR_RANGE

    # The server is unharmed: a real clone started from outside works.
    good = external_clone(lab, parent, r, 2).launch()
    assert pattern.verify(good.serial, 1)[1] == 0
    st = good.cmd("query-sf-clone")
    assert st["clone-id"] == 2

    # A clone with the wrong secret stops with a clear error.
    bad = external_clone(lab, parent, r, 3, secret=bytes(16), name="bad")
    bad.logf = open(bad.log_path, "wb")
    bad.proc = subprocess.Popen(bad.args, stdout=bad.logf,
                                stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    assert bad.proc.wait(30) != 0
    log = open(bad.log_path).read()
    assert re.search(r"refused clone 3: .*secret", log), log


@pytest.mark.parametrize("mutate, expect", [
    (lambda d: d + b"x", r"trailing|checksum|size"),
    (lambda d: d[:len(d) // 2], r"truncat|short|checksum"),
    (lambda d: d[:20] + bytes([d[20] ^ 0xff]) + d[21:], r"checksum|invalid"),
    (lambda d: b"NOTADESC" + d[8:], r"magic"),
])
def test_corrupt_descriptor_is_refused(lab, parent, mutate, expect):
    r, _ = lab.fork(parent, clones=1, launch=False)
    data = open(r["descriptor"], "rb").read()
    bad_path = os.path.join(lab.workdir, "bad.desc")
    open(bad_path, "wb").write(mutate(data))
    args = [a.replace("@CLONE_ID@", "1").replace(r["descriptor"], bad_path)
            for a in r["clone-args"]]
    vm = sfvm.VM(lab.workdir, "corrupt", extra_args=args)
    p = subprocess.run(vm.args, capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert p.returncode != 0
    assert re.search(expect, p.stderr, re.I), p.stderr


def test_frozen_image_footprint_grows_as_parent_writes(lab, parent):
    r, _ = lab.fork(parent, clones=1, launch=False)
    before = parent.cmd("query-sf-forks")[0]
    assert before["server-alive"]
    pattern.fill(parent.serial, 2)
    after = parent.cmd("query-sf-forks")[0]
    # The server now alone holds the seed-1 copy of every pattern page.
    assert after["footprint-bytes"] >= 0.9 * PATTERN_MIB * 2**20, after
    assert after["footprint-bytes"] > before["footprint-bytes"]


def test_kernel_mode_faults_are_served(lab):
    """QEMU's own syscalls write into clone RAM that is not there yet.

    Reading a virtio-blk disk in the guest makes QEMU preadv() into guest
    page cache pages that the clone has never touched: the kernel, not
    QEMU's code, takes that fault.  A userfaultfd opened user-mode-only
    would fail those reads with EFAULT; ours must serve them.
    """
    disk = os.path.join(lab.workdir, "disk.img")
    with open(disk, "wb") as f:
        f.write(os.urandom(24 * 2**20))
    want = subprocess.run(["md5sum", disk], capture_output=True,
                          text=True).stdout.split()[0]
    vm = lab.vm("p", mem_mib=512, extra_args=[
        "-drive", f"file={disk},format=raw,if=none,id=d0,readonly=on",
        "-device", "virtio-blk-device,drive=d0"])
    vm.wait_ready()
    r, clones = lab.fork(vm, clones=1, prefetch=False)
    c = clones[0]
    c.attach()
    before = c.cmd("query-sf-clone")["pages-present"]
    _, out = c.serial.run("md5sum /dev/vda", timeout=120)
    assert want in out, out
    after = c.cmd("query-sf-clone")
    assert after["pushed-pages"] == 0
    # The page cache that received the disk came through lazy RAM.
    assert after["pages-present"] - before >= (24 * 2**20) // 4096 // 2


def test_shared_guest_ram_is_refused(lab):
    """share=on RAM would carry the parent's writes into the frozen image."""
    vm = lab.vm("shared", mem_mib=256, netdev=False, extra_args=[
        "-object", "memory-backend-memfd,id=ram0,size=256M,share=on",
        "-machine", "memory-backend=ram0"])
    resp = vm.cmd_raw("vm-fork", {"clones": 1})
    assert "error" in resp, resp
    assert re.search(r"private guest RAM.*shared", resp["error"]["desc"])
    # Refused cleanly: the guest runs on and nothing was forked.
    assert vm.cmd("query-status")["status"] == "running"
    assert vm.cmd("query-sf-forks") == []


def test_clone_reconnects_after_connection_loss(lab, parent):
    """A broken connection to a live page server is not a failure."""
    r, clones = lab.fork(parent, clones=1, prefetch=False,
                         listen="tcp:127.0.0.1:0")
    c = clones[0]
    c.attach()
    port = r["server"].rsplit(":", 1)[1]
    # Abort the clone's TCP connection (SOCK_DESTROY, as after a network
    # blip); the server is still there.
    ss = subprocess.run(["ss", "-K", "dst", "127.0.0.1", "dport", "=", port],
                        capture_output=True, text=True)
    assert ss.returncode == 0, ss.stderr
    pages, bad, line = pattern.verify(c.serial, 1)
    assert bad == 0, line
    st = c.cmd("query-sf-clone")
    assert st["reconnects"] >= 1, st
    assert sfvm.pid_alive(c.pid)


def test_page_server_idle_timeout(lab, parent):
    """With no clone connected, a fork's page server exits after
    idle-timeout; -1 keeps it (checkpoints); bad values are refused."""
    for bad in (0, -2, 1 << 31):
        with pytest.raises(sfvm.QMPError, match="idle-timeout"):
            parent.cmd("vm-fork", clones=1, launch=False,
                       **{"idle-timeout": bad})
    short, _ = lab.fork(parent, clones=1, launch=False,
                        **{"idle-timeout": 1500})
    kept, _ = lab.fork(parent, clones=1, launch=False,
                       **{"idle-timeout": -1})
    assert sfvm.wait_gone(short["server-pid"], 15)
    time.sleep(2)
    alive = {f["id"]: f["server-alive"] for f in parent.cmd("query-sf-forks")}
    assert alive[short["id"]] is False and alive[kept["id"]] is True, alive
