"""Fixtures for integration tests that start real VMs under our QEMU."""

import os
import shutil
import signal
import tempfile

import pytest

import sfvm


def pytest_configure(config):
    for path in (sfvm.QEMU, sfvm.KERNEL, sfvm.INITRD):
        if not os.path.exists(path):
            raise pytest.UsageError(
                f"{path} is missing: run scripts/build.sh first")


class Lab:
    """Everything a test started, torn down even when the test fails."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.vms = []
        self.pids = []            # clones and page servers

    def vm(self, name="p", **kw):
        vm = sfvm.VM(self.workdir, name, **kw)
        self.vms.append(vm)
        return vm.launch()

    def fork(self, vm, **args):
        """vm-fork and remember every process it created."""
        r = vm.cmd("vm-fork", **args)
        self.pids.append(r["server-pid"])
        clones = []
        for c in r.get("launched", []):
            self.pids.append(c["pid"])
            clone = sfvm.CloneVM(vm, c)
            self.vms.append(clone)
            clones.append(clone)
        return r, clones

    def close(self):
        for vm in self.vms:
            vm.close()
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def lab():
    workdir = tempfile.mkdtemp(prefix="sf-test-")
    lab = Lab(workdir)
    yield lab
    lab.close()
    shutil.rmtree(workdir, ignore_errors=True)
