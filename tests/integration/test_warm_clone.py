"""Warm clones: a QEMU started before any fork (sf-clone wait=on) becomes
a clone when QMP sf-clone-become names the fork."""

import os
import time

import pytest

import pattern
import sfvm

PATTERN_MIB = 64


def clone_props(r, clone_id):
    """vm-fork's clone-args as (secret object props, sf-clone props)."""
    args = [a.replace("@CLONE_ID@", str(clone_id)) for a in r["clone-args"]]
    objs = [args[i + 1] for i, a in enumerate(args) if a == "-object"]
    parsed = []
    for o in objs:
        kind, _, rest = o.partition(",")
        parsed.append((kind, dict(kv.split("=", 1) for kv in rest.split(","))))
    secret = next(p for k, p in parsed if k == "secret")
    clone = next(p for k, p in parsed if k == "sf-clone")
    return secret, clone


def become_args(clone, **override):
    args = {"server": clone["server"], "secret-id": clone["secret-id"],
            "clone-id": int(clone["clone-id"])}
    for k in ("descriptor", "fork-id"):
        if k in clone:
            args[k] = clone[k]
    if clone.get("prefetch") == "off":
        args["prefetch"] = False
    args.update(override)
    return args


def waiting(lab, name, mem_mib=512):
    vm = lab.vm(name, mem_mib=mem_mib,
                extra_args=["-object", "sf-clone,id=sf-clone,wait=on"])
    deadline = time.monotonic() + 30
    while vm.cmd("query-sf-clone")["state"] != "waiting":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # Ready means the machine is made: become refuses until then.
    while True:
        try:
            vm.cmd("sf-clone-become", server="unix:/nonexistent",
                   **{"secret-id": "none", "clone-id": 1})
        except sfvm.QMPError as e:
            if "not ready" not in str(e):
                break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return vm


def add_secret(vm, sid, path):
    vm.cmd("object-add", **{"qom-type": "secret", "id": sid, "file": path,
                            "format": "raw"})


@pytest.fixture
def parent(lab):
    vm = lab.vm("p", mem_mib=512)
    vm.wait_ready()
    pattern.start(vm.serial, PATTERN_MIB, 11)
    return vm


def test_waiting_clone_refuses_then_becomes_the_fork(lab, parent):
    w = waiting(lab, "w1")
    r, _ = lab.fork(parent, clones=2, launch=False)
    pattern.fill(parent.serial, 12)       # the parent runs on
    secret, clone = clone_props(r, 1)

    def refused(expect, **override):
        with pytest.raises(sfvm.QMPError) as e:
            w.cmd("sf-clone-become", **become_args(clone, **override))
        assert expect in str(e.value), str(e.value)
        # ... and it goes on waiting, usable.
        assert w.cmd("query-sf-clone")["state"] == "waiting"
        return str(e.value)

    # No such secret object.
    refused("secret")
    # A secret object with the wrong secret: the page server refuses.
    bad = os.path.join(lab.workdir, "bad-secret")
    with open(os.open(bad, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
        f.write(b"\x55" * 16)
    add_secret(w, "wrong", bad)
    refused("secret", **{"secret-id": "wrong"})
    # A corrupt descriptor.
    add_secret(w, secret["id"], secret["file"])
    with open(clone["descriptor"], "rb") as f:
        raw = bytearray(f.read())
    raw[len(raw) // 2] ^= 0xff
    corrupt = os.path.join(lab.workdir, "corrupt-descriptor")
    with open(corrupt, "wb") as f:
        f.write(raw)
    refused("checksum", descriptor=corrupt)
    # A page server that is not there.
    refused("page server", server="unix:" + os.path.join(lab.workdir, "no"))

    # Then the fork's own: it runs as clone 1, on the fork-instant memory.
    t0 = time.monotonic()
    w.cmd("sf-clone-become", **become_args(clone))
    took_ms = (time.monotonic() - t0) * 1000
    st = w.cmd("query-sf-clone")
    assert st["state"] in ("fetching", "complete"), st
    assert st["clone-id"] == 1 and st["fork-id"] == r["id"]
    print(f"sf-clone-become took {took_ms:.1f} ms; running "
          f"{st['start-to-run-us']} us after the command")
    assert 0 < st["start-to-run-us"] < 5_000_000
    pages, bad_pages, line = pattern.verify(w.serial, 11)
    assert pages == PATTERN_MIB * 256 and bad_pages == 0, line
    # Once is enough.
    with pytest.raises(sfvm.QMPError) as e:
        w.cmd("sf-clone-become", **become_args(clone))
    assert "already became" in str(e.value)
    # The parent's page server counted it as its clone 1 (its figures
    # are written once a second).
    deadline = time.monotonic() + 10
    while True:
        served = {s["clone-id"]: s for s in
                  parent.cmd("query-sf-forks")[0]["served"]}
        if served[1]["requests"] > 0:
            break
        assert time.monotonic() < deadline, served
        time.sleep(0.2)
    assert served[2]["requests"] == 0


def test_waiting_clone_of_another_shape_refuses(lab, parent):
    """A clone-to-be started with other machine options (here less RAM)
    refuses a fork whose RAM it cannot hold, before anything is armed."""
    w = waiting(lab, "w2", mem_mib=256)
    r, _ = lab.fork(parent, clones=1, launch=False)
    secret, clone = clone_props(r, 1)
    add_secret(w, secret["id"], secret["file"])
    with pytest.raises(sfvm.QMPError) as e:
        w.cmd("sf-clone-become", **become_args(clone))
    assert "RAM" in str(e.value) or "block" in str(e.value), str(e.value)
    assert w.cmd("query-sf-clone")["state"] == "waiting"


def test_plain_qemu_is_not_a_waiting_clone(lab):
    vm = lab.vm("plain", mem_mib=256)
    with pytest.raises(sfvm.QMPError) as e:
        vm.cmd("sf-clone-become", server="unix:/x",
               **{"secret-id": "s", "clone-id": 1})
    assert "not a waiting clone" in str(e.value)
