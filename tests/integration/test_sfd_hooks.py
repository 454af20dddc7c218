"""sfd hooks, libvirt style: the order of calls, the domain XML on stdin,
a failing prepare aborting the operation with the hook's message, the
timeout, and clone hooks around a fork.  Domains here have no network
interface, so these tests need no bridges."""

import os
import stat
import subprocess
import time

import pytest

import sfdlib
import sfvm

HOOK = """#!/bin/sh
dir=$(dirname "$0")
cat > "$dir/stdin-$(basename "$0")-$1-$2.xml"
echo "$(basename "$0") $1 $2 $3" >> "$dir/calls"
if [ -e "$dir/fail-$2" ]; then
    echo "refused by policy: $1 $2" ; exit 3
fi
if [ -e "$dir/hang-$2" ]; then
    sleep 60 & echo $! > "$dir/hang.pid"; wait
fi
exit 0
"""


@pytest.fixture
def sfd():
    d = sfdlib.Sfd()
    for obj in ("domain", "clone"):
        path = os.path.join(d.hooks, obj)
        with open(path, "w") as f:
            f.write(HOOK)
        os.chmod(path, stat.S_IRWXU)
    d.start()
    yield d
    d.close()


def calls(sfd):
    try:
        return open(os.path.join(sfd.hooks, "calls")).read().splitlines()
    except FileNotFoundError:
        return []


def wait_calls(sfd, n, timeout=30):
    deadline = time.monotonic() + timeout
    while len(calls(sfd)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return calls(sfd)


def test_order_and_stdin(sfd):
    c = sfd.client()
    xml = sfdlib.domain_xml("hooked", interface=False)
    c.cmd("define", xml=xml)
    c.cmd("subscribe")
    vm = c.cmd("start", vm="hooked")
    sfd.pids.add(vm["pid"])
    assert c.wait_event("VM_STARTED")["data"]["name"] == "hooked"
    wait_calls(sfd, 3)
    c.cmd("stop", vm="hooked", timeout=60)
    ev = c.wait_event("VM_STOPPED")
    assert ev["data"]["pid"] == vm["pid"]
    assert wait_calls(sfd, 5) == [
        "domain hooked prepare begin",
        "domain hooked start begin",
        "domain hooked started begin",
        "domain hooked stopped end",
        "domain hooked release end",
    ]
    for op in ("prepare", "start", "started", "stopped", "release"):
        got = open(os.path.join(sfd.hooks,
                                f"stdin-domain-hooked-{op}.xml")).read()
        assert got == xml, op
    assert not sfvm.pid_alive(vm["pid"])


def test_failing_prepare_aborts(sfd):
    c = sfd.client()
    c.cmd("define", xml=sfdlib.domain_xml("nope", interface=False))
    open(os.path.join(sfd.hooks, "fail-prepare"), "w").close()
    r = c.request("start", vm="nope")
    assert r["error"]["class"] == "HookFailed", r
    assert "refused by policy: nope prepare" in r["error"]["desc"]
    assert wait_calls(sfd, 2) == ["domain nope prepare begin",
                                  "domain nope release end"]
    assert c.cmd("info", vm="nope")["state"] == "shut off"
    assert "hook domain nope prepare begin: refused by policy" in sfd.log()
    # Nothing was started: no QEMU log for it.
    assert not os.path.exists(os.path.join(sfd.state, "run", "nope.json"))


def test_hook_timeout_kills_the_hook(sfd):
    c = sfd.client()
    c.cmd("define", xml=sfdlib.domain_xml(
        "slow", interface=False,
        clone="<sf:clone><sf:hooks timeout='1'/></sf:clone>"))
    open(os.path.join(sfd.hooks, "hang-prepare"), "w").close()
    t = time.monotonic()
    r = c.request("start", vm="slow", timeout=30)
    took = time.monotonic() - t
    assert r["error"]["class"] == "HookFailed", r
    assert "timed out after 1 s" in r["error"]["desc"]
    assert took < 10, took
    # The hook's own child went with it (its process group was killed).
    pid = int(open(os.path.join(sfd.hooks, "hang.pid")).read())
    assert sfvm.wait_gone(pid, 5)
    # The daemon served others meanwhile and still does.
    assert c.cmd("version")["protocol"] == 1


def test_clone_hooks_and_failing_clone_prepare(sfd):
    c = sfd.client()
    c.cmd("define", xml=sfdlib.domain_xml("fam", interface=False))
    vm = c.cmd("start", vm="fam")
    sfd.pids.add(vm["pid"])
    # A failing clone prepare aborts the fork before vm-fork.
    open(os.path.join(sfd.hooks, "fail-prepare"), "w").close()
    r = c.request("fork", vm="fam", count=2)
    assert r["error"]["class"] == "HookFailed", r
    assert "prepare hook of fam-1: refused by policy: fam-1 prepare" \
        in r["error"]["desc"]
    assert c.cmd("clones", vm="fam") == []
    os.unlink(os.path.join(sfd.hooks, "fail-prepare"))
    wait_calls(sfd, 3 + 2)          # the failed clone's release ran
    r = c.cmd("fork", vm="fam", count=1, timeout=120)
    clone = r["clones"][0]
    sfd.pids.add(clone["pid"])
    sfd.pids.add(r["server-pid"])
    assert clone["name"] == "fam-1" and clone["state"] == "running", r
    c.cmd("destroy", vm="fam-1", timeout=60)
    wait_calls(sfd, 3 + 2 + 5)
    got = [x for x in calls(sfd) if x.startswith("clone")]
    assert got == ["clone fam-1 prepare begin", "clone fam-1 release end",
                   "clone fam-1 prepare begin", "clone fam-1 start begin",
                   "clone fam-1 started begin", "clone fam-1 stopped end",
                   "clone fam-1 release end"], got
    c.cmd("destroy", vm="fam", timeout=60)


ORDER_HOOK = """#!/bin/sh
dir=$(dirname "$0")
echo "begin $(basename "$0") $1 $2" >> "$dir/order"
# 0..200 ms: a VM's hooks must not overlap however long each one takes
sleep "$(awk 'BEGIN { srand(); printf "%.3f", rand() * 0.2 }')"
echo "end $(basename "$0") $1 $2" >> "$dir/order"
"""

LIFE = ["prepare", "start", "started", "stopped", "release"]


def test_hooks_in_order_under_load():
    """A VM's hooks run one after the other, in order, each finishing
    before the next begins: 20 clones made and destroyed at once (the
    started hook, which sfd does not wait for, races the stopped one),
    with two CPU-bound processes beside."""
    d = sfdlib.Sfd()
    for obj in ("domain", "clone"):
        path = os.path.join(d.hooks, obj)
        with open(path, "w") as f:
            f.write(ORDER_HOOK)
        os.chmod(path, stat.S_IRWXU)
    burners = [subprocess.Popen(["sh", "-c", "while :; do :; done"])
               for _ in range(2)]
    try:
        d.start()
        c = d.client()
        c.cmd("define", xml=sfdlib.domain_xml("ord", interface=False))
        vm, serial = sfdlib.start_booted(d, c, "ord")
        serial.close()
        rounds = 20
        for i in range(rounds):
            r = c.cmd("fork", vm="ord", count=1, timeout=300)
            d.pids.add(r["server-pid"])
            d.pids.add(r["clones"][0]["pid"])
            assert r["clones"][0]["name"] == "ord-1", r
            c.cmd("destroy", vm="ord-1", timeout=120)
        order = os.path.join(d.hooks, "order")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines = open(order).read().splitlines()
            if sum(x == "end clone ord-1 release" for x in lines) == rounds:
                break
            time.sleep(0.1)
        lines = open(order).read().splitlines()
        clone = [x.split()[0:1] + x.split()[3:] for x in lines
                 if x.split()[1:3] == ["clone", "ord-1"]]
        # begin X, end X, begin Y, end Y ...: never two at once.
        want = [[w, op] for op in LIFE * rounds for w in ("begin", "end")]
        assert clone == want, "\n".join(lines)
        # The parent's hooks (it still runs) are in order too.
        dom = [x.split()[0:1] + x.split()[3:] for x in lines
               if x.split()[1:3] == ["domain", "ord"]]
        assert dom == [[w, op] for op in LIFE[:3] for w in ("begin", "end")]
        c.cmd("destroy", vm="ord", timeout=120)
    finally:
        for b in burners:
            b.kill()
            b.wait()
        d.close()
