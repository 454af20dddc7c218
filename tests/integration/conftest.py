"""Fixtures for integration tests that start real VMs under our QEMU."""

import os
import shutil
import signal
import tempfile
import time

import pytest

import leaks
import sfvm

# How long a polite stop (SIGTERM) may take before it becomes a SIGKILL.
STOP_TIMEOUT = 15.0
# How long leftovers may take to go by themselves (a page server waits
# 3 s for a clone to come back before it counts it as ended).
LEAK_GRACE = 20.0


def pytest_configure(config):
    for path in (sfvm.QEMU, sfvm.KERNEL, sfvm.INITRD):
        if not os.path.exists(path):
            raise pytest.UsageError(
                f"{path} is missing: run scripts/build.sh first")
    # Every process the tests start inherits a private TMPDIR, so what
    # they leave is ours to see and nobody else's to confuse.
    leaks.TMP = tempfile.mkdtemp(prefix="sf-it-")
    os.environ["TMPDIR"] = leaks.TMP
    tempfile.tempdir = leaks.TMP
    # pytest keeps tmp_path directories for inspection by design: put them
    # where the leak check knows them, and where the session's end
    # removes them.
    config.option.basetemp = os.path.join(leaks.TMP, leaks.PYTEST_DIR)


def pytest_unconfigure(config):
    if leaks.TMP:
        shutil.rmtree(leaks.TMP, ignore_errors=True)


# No process, fork directory, file, socket, interface or namespace that a
# test module started may outlive it.  Hooks, not a fixture: pytest tears
# a module's fixtures down in an order of its own (one the module's last
# test does not use can outlive an autouse fixture), while these run
# before the module's first setup and after its last teardown.
_module_before = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    if item.module not in _module_before:
        _module_before[item.module] = leaks.snapshot()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    if nextitem is not None and nextitem.module is item.module:
        return
    before = _module_before.pop(item.module, None)
    if before is None:
        return
    left = leaks.wait_clean(before, LEAK_GRACE)
    if left:
        leaks.force_clean(left)
        pytest.fail(f"{item.module.__name__} left behind:\n"
                    f"{leaks.describe(left)}", pytrace=False)


def _alive(pid):
    return sfvm.pid_alive(pid)


def stop_processes(pids, timeout=STOP_TIMEOUT):
    """SIGTERM, then SIGKILL whatever is still there after `timeout`.
    Returns the pids that had to be killed."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = [p for p in pids if _alive(p)]
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return killed


class Lab:
    """Everything a test started, torn down even when the test fails."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.vms = []
        self.servers = []         # page server pids

    def vm(self, name="p", **kw):
        vm = sfvm.VM(self.workdir, name, **kw)
        self.vms.append(vm)
        return vm.launch()

    def fork(self, vm, **args):
        """vm-fork and remember every process it created."""
        r = vm.cmd("vm-fork", **args)
        self.servers.append(r["server-pid"])
        clones = []
        for c in r.get("launched", []):
            clone = sfvm.CloneVM(vm, c)
            self.vms.append(clone)
            clones.append(clone)
        return r, clones

    def stop(self, vms):
        """Stop these VMs politely (SIGTERM, SIGKILL after a while) and
        forget them."""
        for v in vms:
            v.close_channels()
        stop_processes([v.pid for v in vms if v.pid])
        for v in vms:
            v.reap()
        self.vms = [v for v in self.vms if v not in vms]

    def close(self):
        """Stop politely, the way an operator would: clones, then their
        parents, then page servers, so each can clean up after itself
        (the leak check then sees whether it did)."""
        self.stop([v for v in self.vms if isinstance(v, sfvm.CloneVM)])
        self.stop(list(self.vms))
        stop_processes(self.servers)


@pytest.fixture
def lab():
    workdir = tempfile.mkdtemp(prefix="sf-test-")
    lab = Lab(workdir)
    yield lab
    lab.close()
    shutil.rmtree(workdir, ignore_errors=True)
