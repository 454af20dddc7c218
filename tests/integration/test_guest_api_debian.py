"""The in-guest fork API on the Debian 12 guest: the snowflock Python
module (ctypes over libsf.so.1 from the snowflock-guest package) and
sfclone running Python in each clone.  Needs root (family networks)."""

import os
import re

import pytest

import sfdlib
import sfvm
from test_guest_api import Family, check_identity

CMDLINE = sfdlib.CMDLINE

def debian_xml(name, max_clones=4):
    return f"""<domain type='snowflock' xmlns:sf='urn:snowflock:domain:1'>
  <name>{name}</name>
  <memory unit='MiB'>1024</memory>
  <os>
    <kernel>{sfvm.KERNEL}</kernel>
    <initrd>{sfvm.INITRD}</initrd>
    <cmdline>{CMDLINE} sf.root=/dev/vda</cmdline>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <source file='{sfvm.DEBIAN_ROOTFS}'/>
      <readonly/>
    </disk>
    <interface type='family'/>
  </devices>
  <sf:clone max='{max_clones}'/>
</domain>
"""


@pytest.fixture(scope="module")
def deb():
    if not os.path.exists(sfvm.DEBIAN_ROOTFS):
        raise AssertionError(f"{sfvm.DEBIAN_ROOTFS} not built "
                             "(scripts/build-guest-debian.sh)")
    f = Family("d", debian_xml("d"))
    yield f
    f.close()


def test_python_program_forks_itself(deb):
    st, out = deb.serial.run(
        "python3 /usr/share/snowflock/examples/sf_job.py", timeout=300,
        check=False)
    assert st == 0, out
    assert "PASS" in out, out
    deb.wait_no_clones()


def test_python_api_errors(deb):
    st, out = deb.serial.run(
        "python3 -c 'import snowflock, errno\n"
        "try:\n"
        "    snowflock.request_ticket(0)\n"
        "except snowflock.Error as e:\n"
        "    print(\"ERR\", e.errno == errno.EINVAL)\n"
        "print(\"ID\", snowflock.id(), snowflock.generation())'",
        timeout=120, check=False)
    assert st == 0, out
    assert "ERR True" in out and "ID 0 0" in out, out


def test_sfclone_in_debian(deb):
    st, out = deb.serial.run(
        "sfclone -n 2 -- python3 -c 'import os, snowflock, sys; "
        "sys.exit(snowflock.id() * 10 if os.environ[\"SF_CLONE_ID\"] == "
        "str(snowflock.id()) else 99)'", timeout=300, check=False)
    assert "clone 1: exited 10" in out and "clone 2: exited 20" in out, out
    assert st != 0
    deb.wait_no_clones()


def test_identity_in_debian(deb):
    check_identity(deb)


CHECKPOINT_PY = """
import snowflock
state = "at the checkpoint"
r, cp = snowflock.checkpoint_parent()
if r:
    # A clone made later from the checkpoint resumes here, in the VM as it
    # was at the checkpoint instant.
    snowflock.exit(r * 10 + (1 if state == "at the checkpoint" else 2))
state = "changed after the checkpoint"
for want in (2, 1):
    t = snowflock.request_ticket(want)
    n = snowflock.create_clones(cp, t)
    st = sorted((s.id, s.how_name, s.status) for s in snowflock.join(t))
    print("ROUND", n, st)
print("PARENT", snowflock.id(), state)
"""


def test_checkpoint_then_clone_later(deb):
    import base64
    b64 = base64.b64encode(CHECKPOINT_PY.encode()).decode()
    deb.serial.run(f"echo {b64} | base64 -d > /tmp/cp.py")
    st, out = deb.serial.run("python3 /tmp/cp.py", timeout=300, check=False)
    assert st == 0, out
    rounds = re.findall(r"ROUND (\d+) (\[.*\])", out)
    assert rounds == [
        ("2", "[(1, 'exited', 11), (2, 'exited', 21)]"),
        ("1", "[(1, 'exited', 11)]")], out
    assert "PARENT 0 changed after the checkpoint" in out, out
    deb.wait_no_clones()
