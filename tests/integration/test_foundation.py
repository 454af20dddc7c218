"""The build has our code, the guest boots under it, bad QMP gets an error."""

import ctypes
import os
import re


import pattern
import sfvm

SYS_userfaultfd = 323          # x86_64
UFFD_USER_MODE_ONLY = 1


def host_uffd_opens():
    """Probe userfaultfd ourselves, independently of QEMU."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(SYS_userfaultfd, os.O_CLOEXEC | os.O_NONBLOCK)
    if fd < 0 and os.path.exists("/dev/userfaultfd"):
        return True
    if fd >= 0:
        os.close(fd)
        return True
    return False


def host_thp():
    try:
        text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except FileNotFoundError:
        return "unavailable"
    return re.search(r"\[(\w+)\]", text).group(1)


def test_query_sf_reports_real_probes(lab):
    vm = lab.vm(netdev=False)
    info = vm.cmd("query-sf")
    version = open(os.path.join(sfvm.REPO, "VERSION")).read().strip()
    assert info["version"] == version
    assert info["qemu-version"].startswith("10.0.")
    assert info["accelerator"] == ("kvm" if info["kvm"] else "tcg")
    assert info["kvm"] == (os.path.exists("/dev/kvm") and info["kvm"])
    assert info["thp"] == host_thp()
    assert info["host-page-size"] == os.sysconf("SC_PAGE_SIZE")
    assert info["clone"] is False
    uffd = info["userfaultfd"]
    assert uffd["available"] == host_uffd_opens()
    if uffd["available"]:
        # Missing-mode faults are what clones need; the kernel here has them.
        assert uffd["missing"], uffd
        assert uffd["features"] != 0
        assert uffd["kernel-faults"]
    else:
        assert "error" in uffd


def test_bad_qmp_arguments_get_clear_errors(lab):
    vm = lab.vm(netdev=False)
    cases = [
        ("query-sf", {"bogus": 1}, r"bogus"),
        ("vm-fork", {"clones": "four"}, r"clones.*integer|integer.*clones"),
        ("vm-fork", {"clones": 0}, r"clones must be 1\.\.64"),
        ("vm-fork", {"clones": 65}, r"clones must be 1\.\.64"),
        ("vm-fork", {"listen": "carrier-pigeon:x"}, r"endpoint"),
        ("vm-fork", {"dir": "/proc/sf-no-such/dir"},
         r"vm-fork: directory: cannot create"),
        ("vm-fork", {"nonsense": True}, r"nonsense"),
        ("query-sf-clone", {"nonsense": True}, r"nonsense"),
    ]
    for name, args, rx in cases:
        resp = vm.cmd_raw(name, args)
        assert "error" in resp, (name, args, resp)
        assert re.search(rx, resp["error"]["desc"]), (name, args, resp)
    # Nothing was left half-done: the VM is still fine and has no forks.
    assert vm.cmd("query-sf-forks") == []
    # A query, not an error, on a VM that is not a clone.
    assert vm.cmd("query-sf-clone") == {"state": "not-a-clone"}
    assert vm.cmd("query-status")["status"] in ("running", "prelaunch",
                                                 "paused")


def test_guest_boots_and_pattern_verifies_256mib(lab):
    vm = lab.vm(mem_mib=512)
    vm.wait_ready()
    st, out = vm.serial.run("sfpattern once --mib 256 --seed 11",
                            timeout=300)
    assert re.search(r"verify seed=11 pages=65536 mismatches=0", out), out
    # The checker can fail: one flipped byte is one mismatch on that page.
    st, out = vm.serial.run("sfpattern once --mib 8 --seed 5 "
                            "--selftest-corrupt 77", check=False)
    assert st != 0
    assert re.search(r"mismatches=1\b", out), out
    assert re.search(r"bad-pages 77\b", out), out


def test_pattern_server_tracks_generations(lab):
    vm = lab.vm(mem_mib=256, netdev=False)
    vm.wait_ready()
    pattern.start(vm.serial, 32, 1)
    assert pattern.verify(vm.serial, 1)[1] == 0
    pattern.fill(vm.serial, 2)
    pages, bad, _ = pattern.verify(vm.serial, 1)
    assert bad == pages          # every page moved on to seed 2
    assert pattern.verify(vm.serial, 2)[1] == 0
