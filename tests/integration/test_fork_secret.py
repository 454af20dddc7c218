"""The fork secret is on no command line, in no log, event or answer.

Whoever holds a fork's secret can read the parent's memory from its page
server (over TCP, from anywhere).  /proc/PID/cmdline is readable by every
local user, so the secret travels in a 0600 file that clones read through
a QEMU secret object.
"""

import base64
import os
import re
import stat
import subprocess

import pytest

import sfvm


def secret_forms(secret):
    """Every spelling of the secret a leak could use."""
    return [secret.hex().encode(), secret.hex().upper().encode(),
            base64.b64encode(secret), secret]


def cmdlines_holding(forms):
    """pid -> command line of every process whose argv holds the secret."""
    found = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if any(x in cmd for x in forms):
            found[int(d)] = cmd.replace(b"\0", b" ")[:300]
    return found


def read_secret_file(path):
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    assert st.st_uid == os.geteuid()
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) == 16
    return data


def hand_started_clone(lab, r, clone_id, name, **replace):
    args = [a.replace("@CLONE_ID@", str(clone_id)) for a in r["clone-args"]]
    for old, new in replace.items():
        args = [a.replace(old, new) for a in args]
    vm = sfvm.VM(lab.workdir, name, mem_mib=256, extra_args=args)
    vm.args[vm.args.index("-name") + 1] = name
    return vm


@pytest.fixture
def parent(lab):
    # Trace every snowflock event too: trace output must not carry it.
    vm = lab.vm("p", mem_mib=256, extra_args=["-trace", "sf_*"])
    vm.wait_ready()
    return vm


def test_secret_is_on_no_command_line(lab, parent):
    # No push: the clones stay incomplete, so both page servers (and the
    # logs read below) are still there at the end.
    r, clones = lab.fork(parent, clones=2, listen="tcp:127.0.0.1:0",
                         prefetch=False)
    ext_fork, _ = lab.fork(parent, clones=1, launch=False)
    secret = read_secret_file(r["secret-file"])
    forms = secret_forms(secret) + \
        secret_forms(read_secret_file(ext_fork["secret-file"]))
    assert "secret" not in r
    # clone-args name the file through a secret object, never the bytes.
    assert r["clone-args"][0:3:2] == ["-object", "-object"]
    assert re.fullmatch(r"secret,id=sf-secret-[0-9a-f]{16},file=.*/secret,"
                        r"format=raw", r["clone-args"][1])
    sid = r["clone-args"][1].split(",")[1][len("id="):]
    assert f"secret-id={sid}," in r["clone-args"][3]
    assert r["clone-args"][3].endswith("clone-id=@CLONE_ID@")
    for c in r["launched"]:
        assert not any(x in " ".join(c["argv"]).encode() for x in forms)

    # A clone started by hand on this host, the way another host would.
    ext = hand_started_clone(lab, ext_fork, 1, "ext",
                             **{"clone-id=1": "clone-id=1,prefetch=off"})
    ext.launch()
    lab.vms.append(ext)
    for c in clones:
        c.attach()
    assert ext.cmd("query-sf-clone")["state"] in ("fetching", "complete")
    found = cmdlines_holding(forms)
    assert found == {}, found

    # Nor in any log (with every sf_* trace event on), event or answer.
    for c in clones:
        c.serial.run("true")
    logs = [parent.log_path, ext.log_path,
            os.path.join(r["dir"], "pageserver.log"),
            os.path.join(ext_fork["dir"], "pageserver.log")]
    logs += [c["log"] for c in r["launched"]]
    for path in logs:
        with open(path, "rb") as f:
            text = f.read()
        assert not any(x in text for x in forms), path
    assert b"sf_fork_" in open(parent.log_path, "rb").read()  # traced
    seen = repr(parent.events + parent.cmd("query-sf-forks")).encode()
    assert not any(x in seen for x in forms)


def test_secret_file_goes_with_the_page_server(lab, parent):
    r, _ = lab.fork(parent, clones=1, launch=False,
                    **{"idle-timeout": 1000})
    read_secret_file(r["secret-file"])
    assert sfvm.wait_gone(r["server-pid"], 20)
    # The server removed what its end made pointless: all of its own
    # directory, the secret first.
    assert not os.path.exists(r["secret-file"])
    assert not os.path.exists(r["dir"])


def test_wrong_secret_file_is_refused(lab, parent):
    r, _ = lab.fork(parent, clones=2, launch=False)
    cases = [
        (bytes(16), r"refused clone 1: .*secret"),
        (b"short", r"holds 5 bytes; a fork secret is 16"),
    ]
    for data, expect in cases:
        path = os.path.join(lab.workdir, "wrong-secret")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                          0o600), "wb") as f:
            f.write(data)
        vm = hand_started_clone(lab, r, 1, "wrong",
                                **{r["secret-file"]: path})
        p = subprocess.run(vm.args, capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        assert p.returncode != 0
        assert re.search(expect, p.stderr), p.stderr


def test_secret_property_is_refused_with_a_clear_error(lab, parent):
    r, _ = lab.fork(parent, clones=1, launch=False)
    secret = read_secret_file(r["secret-file"]).hex()
    old_style = re.sub(r"secret-id=[^,]+", f"secret={secret}",
                       r["clone-args"][3]).replace("@CLONE_ID@", "1")
    vm = sfvm.VM(lab.workdir, "old", extra_args=["-object", old_style])
    p = subprocess.run(vm.args, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert p.returncode != 0
    assert "'secret' was removed" in p.stderr, p.stderr
    assert "secret-id=ID" in p.stderr, p.stderr


def test_fork_of_a_clone_carries_only_its_own_secret(lab, parent):
    """A clone forked in turn launches its clones with its own command
    line: the secret and sf-clone objects it was started with are
    replaced by those of the new fork, not added to."""
    import pattern
    r, (child,) = lab.fork(parent, clones=1)
    child.attach()
    if child.cmd("query-sf-clone")["state"] != "complete":
        child.wait_event("SF_CLONE_COMPLETE", timeout=300)
    pattern.start(child.serial, 32, 7)
    r2, (grandchild,) = lab.fork(child, clones=1)
    argv = r2["launched"][0]["argv"]
    objects = [argv[i + 1] for i, a in enumerate(argv) if a == "-object"]
    assert [o.split(",")[0] for o in objects] == ["secret", "sf-clone"], \
        objects
    assert f"file={r2['secret-file']}," in objects[0]
    grandchild.attach()
    assert pattern.verify(grandchild.serial, 7)[1] == 0
    assert grandchild.cmd("query-sf-clone")["fork-id"] == r2["id"]
