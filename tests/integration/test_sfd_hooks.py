"""sfd hooks, libvirt style: the order of calls, the domain XML on stdin,
a failing prepare aborting the operation with the hook's message, the
timeout, and clone hooks around a fork.  Domains here have no network
interface, so these tests need no bridges."""

import os
import stat
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
