"""The in-guest fork API across an sfd restart: sfd is SIGKILLed while a
guest's clones run and started again on the same state directory; the
clones' ends (also those while no sfd ran) still reach the parent's
sf_join (sfclone's wait), a checkpoint taken before the restart makes
clones after it, and ids handed out later are new ones.  Real guests with
the real agent: busybox, and Debian for the checkpoint (busybox has no
program that checkpoints: sftest has no such mode, and no Python).
Needs root (family bridges and taps)."""

import json
import os
import re
import time

import pytest

import sfdlib
import sfvm
from test_guest_api import WAIT_DONE, Family, get, release


@pytest.fixture(scope="module")
def fam():
    f = Family("gr", sfdlib.domain_xml("gr", clone="<sf:clone max='4'/>"))
    yield f
    f.close()


def tickets(fam):
    return fam.c.cmd("info", vm=fam.name)["agent"]["tickets"]


def test_clone_ends_reach_join_after_restart(fam):
    s = fam.serial
    s.run("rm -f /tmp/release /tmp/sfc.out")
    s.run(f"{{ sfclone -n 2 -- sh -c '{WAIT_DONE}; exit $SF_CLONE_ID' "
          "> /tmp/sfc.out 2>&1 & }")
    clones = fam.wait_clones(2)
    # Each clone knows who it is before sfd goes away (its identity
    # answered its request), so nothing is in flight.
    for v in clones:
        cs = fam.clone_serial(v["name"])
        fam.wait_identity(cs)
        cs.close()
    before = tickets(fam)
    assert len(before) == 1 and before[0]["state"] == "used", before
    tid = before[0]["ticket"]
    names = sorted(v["name"] for v in clones)
    assert sorted(m["name"] for m in before[0]["clones"]) == names
    rec = json.load(open(os.path.join(fam.sfd.state, "run", "gr.json")))
    assert rec["agent"]["tickets"][0]["id"] == tid, rec

    # SIGKILL sfd and start it again on the same state directory.
    listed = fam.sfd.sfctl("list", json_out=True).json
    fam.sfd.kill()
    fam.sfd.start()
    fam.c = fam.sfd.client()
    after = fam.sfd.sfctl("list", json_out=True).json
    strip = lambda vms: [{k: v for k, v in vm.items() if k != "agent"}
                         for vm in vms]
    assert strip(after) == strip(listed)
    for vm in after:
        assert sfvm.pid_alive(vm["pid"]), vm
    # The ticket and who its members are came back with the parent, the
    # link to it with each clone.
    restored = tickets(fam)
    assert [(t["ticket"], t["state"]) for t in restored] == [(tid, "used")]
    assert [m["name"] for m in restored[0]["clones"]] == \
        [m["name"] for m in before[0]["clones"]]
    by_id = {m["clone-id"]: m["name"] for m in restored[0]["clones"]}
    for k, name in by_id.items():
        info = fam.c.cmd("info", vm=name)
        assert info["adopted"] is True
        assert (info["agent"]["parent"], info["agent"]["ticket"],
                info["agent"]["ticket-clone-id"]) == ("gr", tid, k), info

    # Clone 1 finishes normally; clone 2's QEMU dies.
    released, victim = by_id[1], by_id[2]
    cs = fam.clone_serial(released)
    release(cs)
    os.kill([v for v in clones if v["name"] == victim][0]["pid"], 9)
    s.run("wait", timeout=120)
    out = get(s, "cat /tmp/sfc.out")
    assert "clone 1: exited 1" in out, out
    assert re.search(r"clone 2: crashed", out), out
    fam.wait_no_clones()
    members = {m["clone-id"]: m for m in tickets(fam)[0]["clones"]}
    assert (members[1]["how"], members[1]["status"]) == ("exited", 1)
    assert members[2]["how"] == "crashed", members

    # Ids handed out after the restart are new ones.
    st, out = s.run("sfclone -n 1 -- sh -c 'exit 0'", timeout=300,
                    check=False)
    assert st == 0 and "clone 1: exited 0" in out, out
    ids = [t["ticket"] for t in tickets(fam)]
    assert len(ids) == 2 and ids[1] > tid, ids
    fam.wait_no_clones()


def test_clone_ended_while_sfd_was_away(fam):
    """Clones whose QEMU dies while no sfd runs: the next sfd finds them
    gone and tells the parent once its QMP is back."""
    s = fam.serial
    s.run("rm -f /tmp/release /tmp/sfc.out")
    s.run(f"{{ sfclone -n 2 -- sh -c '{WAIT_DONE}; exit 7' "
          "> /tmp/sfc.out 2>&1 & }")
    clones = sorted(fam.wait_clones(2), key=lambda v: v["name"])
    for v in clones:
        cs = fam.clone_serial(v["name"])
        fam.wait_identity(cs)
        cs.close()
    fam.sfd.kill()
    # Without sfd, a clone's exit request cannot be answered: it stays
    # up; its QEMU dying is what sfd finds.
    for v in clones:
        os.kill(v["pid"], 9)
        assert sfvm.wait_gone(v["pid"], 10)
    fam.sfd.start()
    fam.c = fam.sfd.client()
    s.run("wait", timeout=120)
    out = get(s, "cat /tmp/sfc.out")
    assert re.search(r"clone 1: crashed", out), out
    assert re.search(r"clone 2: crashed", out), out
    assert fam.live_clones() == []
    assert "2 clone ends reported after the restart" in fam.sfd.log()


CHECKPOINT_PY = """
import os, time
import snowflock
state = "at the checkpoint"
r, cp = snowflock.checkpoint_parent()
if r:
    snowflock.exit(r * 10 + (1 if state == "at the checkpoint" else 2))
state = "changed after the checkpoint"
print("CHECKPOINT", cp, flush=True)
while not os.path.exists("/tmp/go"):
    time.sleep(0.2)
t = snowflock.request_ticket(2)
n = snowflock.create_clones(cp, t)
st = sorted((s.id, s.how_name, s.status) for s in snowflock.join(t))
print("ROUND", t, n, st, flush=True)
"""


def test_checkpoint_survives_restart():
    """A checkpoint taken before the restart makes clones after it (the
    Debian guest: its Python module can checkpoint, busybox's tools
    cannot)."""
    import base64
    from test_guest_api_debian import debian_xml
    assert os.path.exists(sfvm.DEBIAN_ROOTFS), \
        f"{sfvm.DEBIAN_ROOTFS} not built (scripts/build.sh builds it)"
    f = Family("dr", debian_xml("dr"))
    try:
        s = f.serial
        b64 = base64.b64encode(CHECKPOINT_PY.encode()).decode()
        s.run(f"echo {b64} | base64 -d > /tmp/cp.py; rm -f /tmp/go")
        s.run("{ python3 /tmp/cp.py > /tmp/cp.out 2>&1 & }")
        deadline = time.monotonic() + 120
        while "CHECKPOINT" not in (out := get(s, "cat /tmp/cp.out")):
            assert time.monotonic() < deadline, out
            time.sleep(0.5)
        cp = int(re.search(r"CHECKPOINT (\d+)", out).group(1))
        info = f.c.cmd("info", vm="dr")["agent"]
        [before] = info["checkpoint-list"]
        assert before["checkpoint"] == cp
        f.sfd.pids.add(before["server-pid"])

        f.sfd.kill()
        f.sfd.start()
        f.c = f.sfd.client()
        [after] = f.c.cmd("info", vm="dr")["agent"]["checkpoint-list"]
        assert after == before
        assert sfvm.pid_alive(after["server-pid"])

        s.run("touch /tmp/go")
        s.run("wait", timeout=300)
        out = get(s, "cat /tmp/cp.out")
        m = re.search(r"ROUND Ticket\((\d+)\D[^)]*\) (\d+) (\[.*\])", out)
        assert m, out
        # A new id (above the checkpoint's), both clones from the
        # checkpoint's instant.
        assert int(m.group(1)) > cp, out
        assert m.group(2, 3) == (
            "2", "[(1, 'exited', 11), (2, 'exited', 21)]"), out
        f.wait_no_clones()
    finally:
        f.close()
