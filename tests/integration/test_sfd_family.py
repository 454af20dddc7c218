"""A real fork through sfctl: the clones reach each other and their parent
over the family network, two families cannot reach each other, and sfd
killed with SIGKILL and started again loses nothing and leaks nothing.

Needs root (bridges, taps): fails, rather than skips, without it.  All
traffic is between guests, on bridges sfd made, in 10.77.x.y ranges."""

import os
import re
import subprocess

import pytest

import sfdlib
import sfvm


@pytest.fixture
def sfd():
    sfdlib.need_root_networking()
    d = sfdlib.Sfd().start()
    yield d
    d.close()


def ping(serial, ip, count=2):
    st, out = serial.run(f"ping -c {count} -W 2 {ip}", timeout=60,
                         check=False)
    return st == 0 and f"{count} packets received" in out


def test_family_fork_isolation_restart(sfd, tmp_path):
    c = sfd.client()
    c.cmd("define", xml=sfdlib.domain_xml(
        "alpha", clone="<sf:clone max='4'/>"))
    c.cmd("define", xml=sfdlib.domain_xml(
        "beta", clone="<sf:clone max='4'><sf:network address='10.77.200.0' "
                      "prefix='24'/></sf:clone>"))
    a, sa = sfdlib.start_booted(sfd, c, "alpha")
    b, sb = sfdlib.start_booted(sfd, c, "beta")
    assert a["bridge"] != b["bridge"]
    assert b["ip"] == "10.77.200.1"
    assert re.fullmatch(r"10\.77\.\d+\.1", a["ip"])
    net_a = a["ip"].rsplit(".", 1)[0]

    # Fork through sfctl, as a user would.
    p = sfd.sfctl("fork", "alpha", "2", json_out=True, timeout=300)
    assert p.returncode == 0, p.stderr
    f = p.json
    sfd.pids.add(f["server-pid"])
    sfd.pids |= {cl["pid"] for cl in f["clones"]}
    assert f["granted"] == 2 and f["running"] == 2, f
    clones = {cl["name"]: cl for cl in f["clones"]}
    assert set(clones) == {"alpha-1", "alpha-2"}
    assert clones["alpha-1"]["ip"] == f"{net_a}.2"
    assert clones["alpha-2"]["ip"] == f"{net_a}.3"
    macs = {cl["mac"] for cl in f["clones"]} | {a["mac"]}
    assert len(macs) == 3
    human = sfd.sfctl("clones", "alpha").stdout
    assert "alpha-1" in human and f"{net_a}.3" in human

    s1 = sfvm.Serial(clones["alpha-1"]["serial"]
                     if "serial" in clones["alpha-1"]
                     else c.cmd("info", vm="alpha-1")["serial"])
    s2 = sfvm.Serial(c.cmd("info", vm="alpha-2")["serial"])
    _, out = s1.run("cat /sys/class/net/eth0/address")
    assert out.strip() == clones["alpha-1"]["mac"]

    # Clones reach each other and the parent; the parent reaches them.
    assert ping(s1, a["ip"])
    assert ping(s1, clones["alpha-2"]["ip"])
    assert ping(s2, clones["alpha-1"]["ip"])
    assert ping(sa, clones["alpha-2"]["ip"])

    # Families are isolated: even with an address in beta's range, a clone
    # of alpha cannot reach beta, nor beta alpha.
    s1.run("ip addr add 10.77.200.50/24 dev eth0")
    assert not ping(s1, b["ip"])
    s1.run("ip addr del 10.77.200.50/24 dev eth0")
    sb.run(f"ip addr add {net_a}.99/24 dev eth0")
    assert not ping(sb, a["ip"])
    assert not ping(sb, clones["alpha-1"]["ip"])
    sb.run(f"ip addr del {net_a}.99/24 dev eth0")
    # The host has no address on the family bridges: nothing routes.
    for br in (a["bridge"], b["bridge"]):
        out = subprocess.run(["ip", "-4", "addr", "show", "dev", br],
                             capture_output=True, text=True).stdout
        assert "inet " not in out, out
    for s in (s1, s2, sa, sb):
        s.close()

    # SIGKILL sfd and start it again: the same list, the VMs still run.
    before = sfd.sfctl("list", json_out=True).json
    links_before = sfd.our_links()
    assert len(links_before) == 2 + 4       # 2 bridges, 4 taps
    sfd.kill()
    sfd.start()
    after = sfd.sfctl("list", json_out=True).json
    assert after == before
    assert sfd.our_links() == links_before
    for vm in after:
        assert sfvm.pid_alive(vm["pid"]), vm
    info = sfd.client().cmd("info", vm="alpha-2")
    assert info["adopted"] is True
    s1 = sfvm.Serial(info["serial"].replace("alpha-2", "alpha-1"))
    assert ping(s1, clones["alpha-2"]["ip"])
    s1.close()

    # Events of adopted VMs still arrive; teardown leaves nothing behind.
    ev = sfd.client()
    ev.cmd("subscribe", events=["CLONE_EXITED", "VM_STOPPED"])
    assert sfd.sfctl("kill", "alpha-1").returncode == 0
    assert ev.wait_event("CLONE_EXITED", 30)["data"]["name"] == "alpha-1"
    for name in ("alpha-2", "alpha", "beta"):
        p = sfd.sfctl("destroy", name)
        assert p.returncode == 0, p.stderr
    assert sfd.sfctl("list", json_out=True).json == [
        {"name": n, "kind": "domain", "domain": n, "state": "shut off",
         "pid": 0, "ip": None, "mac": None} for n in ("alpha", "beta")]
    assert sfd.our_links() == set()
    for pid in [vm["pid"] for vm in before] + [f["server-pid"]]:
        assert sfvm.wait_gone(pid, 10), pid
    run = os.path.join(sfd.state, "run")
    assert [n for n in os.listdir(run) if not n.endswith(".log")] == []


def test_quota_and_no_interface_leak_on_failure(sfd):
    c = sfd.client()
    c.cmd("define", xml=sfdlib.domain_xml("q", clone="<sf:clone max='1'/>"))
    links0 = sfd.our_links()
    vm, s = sfdlib.start_booted(sfd, c, "q")
    s.close()
    r = c.cmd("fork", vm="q", count=3, timeout=300)
    sfd.pids.add(r["server-pid"])
    sfd.pids |= {cl["pid"] for cl in r["clones"]}
    assert (r["requested"], r["granted"]) == (3, 1)
    e = c.request("fork", vm="q", count=1)
    assert e["error"]["class"] == "QuotaExceeded", e
    assert sfd.sfctl("fork", "q", "1").returncode == 5
    # A domain whose kernel vanished fails to start without leaking.
    c.cmd("define", xml=sfdlib.domain_xml("gone").replace(
        sfvm.KERNEL, "/nonexistent/vmlinuz"))
    e = c.request("start", vm="gone")
    assert e["error"]["class"] == "Failed" and "nonexistent" in \
        e["error"]["desc"]
    c.cmd("destroy", vm="q-1", timeout=60)
    c.cmd("destroy", vm="q", timeout=60)
    assert sfd.our_links() == links0 == set()
