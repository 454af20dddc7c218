"""vm-fork checks before it acts, and a failure at any step leaves nothing.

Each acting step of vm-fork is made to fail on purpose through the
test-only SNOWFLOCK_TEST_FORK_FAIL (migration-sf/sf-fault.c); afterwards
the guest runs, and there is no page server, clone, fork directory,
socket or query-sf-forks entry, and the error names the step.  The VMs
need not boot: vm-fork works on a guest in any state, so none waits for
its shell.
"""

import os
import re
import subprocess

import pytest

import sfvm

# In the order vm-fork runs them (sf-fault.c).
STEPS = ["directory", "secret", "log", "listen", "save", "freeze",
         "descriptor", "launch"]


def children(pid):
    """Processes whose parent is pid, zombies included (a fork that
    failed must have reaped what it started)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(d))
    return out


def unix_sockets_under(path):
    with open("/proc/net/unix") as f:
        return [line.split()[7] for line in f
                if len(line.split()) >= 8 and
                line.split()[7].startswith(path + "/")]


def run_dir(vm):
    return os.path.join(os.environ["TMPDIR"], f"snowflock-{vm.pid}")


def assert_nothing_left(vm):
    assert vm.cmd("query-status")["status"] == "running"
    assert vm.cmd("query-sf-forks") == []
    assert children(vm.pid) == []
    assert not os.path.exists(run_dir(vm))
    # Its own QMP and serial sockets are all a failed fork leaves bound.
    assert set(unix_sockets_under(vm.workdir)) <= {vm.qmp_path,
                                                   vm.serial_path}


@pytest.mark.parametrize("step", STEPS)
def test_failure_at_each_step_leaves_nothing(lab, step, monkeypatch):
    monkeypatch.setenv("SNOWFLOCK_TEST_FORK_FAIL", step)
    vm = lab.vm(f"s-{step}", mem_mib=128)
    new_dir = os.path.join(lab.workdir, "new")
    old_dir = os.path.join(lab.workdir, "old")
    os.mkdir(old_dir, 0o700)
    cases = [
        {"clones": 2},
        {"clones": 2, "dir": new_dir},      # created by the fork: goes
        {"clones": 2, "dir": old_dir},      # the caller's: stays, empty
        {"clones": 1, "launch": False, "listen": "tcp:127.0.0.1:0"},
    ]
    for args in cases:
        if step == "launch" and args.get("launch") is False:
            continue
        resp = vm.cmd_raw("vm-fork", args)
        assert "error" in resp, (args, resp)
        assert re.match(rf"vm-fork: {step}: (clone 2: )?injected failure",
                        resp["error"]["desc"]), resp
        assert_nothing_left(vm)
        assert not os.path.exists(new_dir)
        assert os.listdir(old_dir) == []
    # The warning that the injection is on went to the log, once.
    with open(vm.log_path) as f:
        assert f.read().count("SNOWFLOCK_TEST_FORK_FAIL") == 1


def test_without_injection_the_same_fork_works(lab):
    """The cases above fail only because they were told to."""
    vm = lab.vm("s-ok", mem_mib=128)
    r, clones = lab.fork(vm, clones=2)
    assert len(clones) == 2 and sfvm.pid_alive(r["server-pid"])
    assert sorted(children(vm.pid)) == sorted(
        [r["server-pid"]] + [c.pid for c in clones])


def test_checks_come_before_the_pause(lab):
    """What can be known without acting is refused without acting: the
    guest is never paused (no STOP event), nothing is created."""
    vm = lab.vm("chk", mem_mib=128)
    cases = [
        ({"clones": 0}, r"clones must be 1..64"),
        ({"clones": 65}, r"clones must be 1..64"),
        ({"idle-timeout": 0}, r"idle-timeout"),
        ({"listen": "udp:1.2.3.4:5"}, r"endpoint 'udp:1.2.3.4:5' is not"),
    ]
    vm.events.clear()
    for args, expect in cases:
        resp = vm.cmd_raw("vm-fork", args)
        assert "error" in resp and re.search(expect, resp["error"]["desc"]), \
            resp
    assert not [e for e in vm.events + vm.qmp.get_events(wait=False)
                if e["event"] in ("STOP", "RESUME")]
    assert_nothing_left(vm)


def test_clone_command_line_checked_before_the_pause(lab):
    """A parent whose command line cannot be duplicated (a TCP listener)
    is refused launching clones before anything happens; with
    launch=false the same VM forks."""
    vm = lab.vm("lst", mem_mib=128, extra_args=[
        "-chardev", "socket,id=mon1,host=127.0.0.1,port=0,server=on,"
                    "wait=off",
        "-mon", "chardev=mon1"])
    vm.events.clear()
    resp = vm.cmd_raw("vm-fork", {"clones": 1})
    assert "error" in resp
    assert "cannot launch clones" in resp["error"]["desc"], resp
    assert "TCP port" in resp["error"]["desc"], resp
    assert not [e for e in vm.events + vm.qmp.get_events(wait=False)
                if e["event"] in ("STOP", "RESUME")]
    assert_nothing_left(vm)
    r, _ = lab.fork(vm, clones=1, launch=False)
    assert r["clones"] == 1


def test_machine_none_is_refused_before_pausing(lab):
    """qmp-cmd-test's setting: no guest RAM, so nothing to fork; refused
    before the (non-existent) guest is paused or anything created."""
    qmp = os.path.join(lab.workdir, "none.qmp")
    log = open(os.path.join(lab.workdir, "none.log"), "wb")
    proc = subprocess.Popen([sfvm.QEMU, "-machine", "none", "-nodefaults",
                             "-display", "none",
                             "-qmp", f"unix:{qmp},server=on,wait=off"],
                            stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT)
    vm = sfvm.VM(lab.workdir, "none")
    vm.proc, vm.pid, vm.logf = proc, proc.pid, log
    vm.qmp_path = qmp
    lab.vms.append(vm)
    sfvm.wait_for_path(qmp)
    vm.qmp = sfvm.QEMUMonitorProtocol(qmp)
    vm.qmp.connect()
    status = vm.cmd("query-status")["status"]
    resp = vm.cmd_raw("vm-fork", {})
    assert "error" in resp
    assert "no guest RAM to fork (machine 'none')" in resp["error"]["desc"]
    assert vm.cmd("query-status")["status"] == status
    assert vm.cmd("query-sf-forks") == []
    assert children(vm.pid) == []
    assert not os.path.exists(run_dir(vm))
    assert vm.cmd("query-sf-clone") == {"state": "not-a-clone"}
