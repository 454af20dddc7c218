"""The Debian 12 guest (scripts/build-guest-debian.sh).

Same kernel and busybox initramfs as the other tests; with sf.root=/dev/vda
the initramfs mounts build/guest-debian/rootfs.img (a READ-ONLY virtio-blk
disk) under an overlay whose upper layer is a tmpfs and switch_roots into
Debian's /sbin/sf-init.  Nothing a VM or a clone writes may reach the disk,
which is what lets every clone boot from the same image.
"""

import hashlib
import os
import re

import pytest

import sfvm

OUT = os.path.join(sfvm.BUILD, "guest-debian")
MISSING = os.path.join(OUT, "snowflock-guest.missing")

# scripts/build.sh always builds the image: its absence is a failure.
assert os.path.exists(sfvm.DEBIAN_ROOTFS), \
    f"{sfvm.DEBIAN_ROOTFS} not built (scripts/build-guest-debian.sh)"


def file_md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def mounts(serial):
    """{mount point: (source, fstype, options)} from the guest."""
    _, out = serial.run("cat /proc/mounts")
    table = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 4 and f[1].startswith("/"):
            table[f[1]] = (f[0], f[2], f[3].split(","))
    return table


def assert_overlay_root(serial):
    m = mounts(serial)
    src, fstype, opts = m["/"]
    assert fstype == "overlay", m["/"]
    assert "lowerdir=/run/sfroot/ro" in opts, opts
    assert any(o.startswith("upperdir=/run/sfroot/rw/") for o in opts), opts
    assert m["/run/sfroot/ro"][:2] == ("/dev/vda", "ext4")
    assert "ro" in m["/run/sfroot/ro"][2]
    assert m["/run/sfroot/rw"][1] == "tmpfs"
    # The block device itself is read-only (readonly=on on the host).
    _, out = serial.run("cat /sys/block/vda/ro")
    assert out.split()[-1] == "1", out


@pytest.fixture
def debian(lab):
    vm = lab.vm("deb", debian=True,
                append=sfvm.guest_cmdline("sf.ip=10.0.2.15/24 sf.gw=10.0.2.2"))
    vm.wait_ready(timeout=180)
    return vm


def test_boots_with_python(debian):
    s = debian.serial
    _, out = s.run("python3 -c 'import sys; print(sys.version)'")
    assert re.search(r"^3\.11\.\d+ ", out, re.M), out
    _, out = s.run(". /etc/os-release; echo \"os=$ID-$VERSION_ID\"")
    assert "os=debian-12" in out, out
    _, out = s.run("hostname; cat /proc/1/cmdline | tr '\\0' ' '")
    assert "sfguest" in out and "/sbin/sf-init" in out, out
    # sf.ip / sf.gw are honoured like in the busybox guest.
    _, out = s.run("ip -4 -o addr show dev eth0; ip route show default")
    assert "10.0.2.15/24" in out and "via 10.0.2.2" in out, out
    # The busybox initramfs is gone; /proc etc. were moved, not remounted.
    s.run("test ! -e /init && test -x /usr/bin/apt-get && ps -e >/dev/null")


def test_root_is_tmpfs_overlay_on_readonly_disk(debian):
    s = debian.serial
    before = file_md5(sfvm.DEBIAN_ROOTFS)
    assert_overlay_root(s)
    # Writes anywhere in / land in the tmpfs upper layer.
    s.run("dd if=/dev/urandom of=/etc/sf-write-test bs=1M count=8 2>/dev/null"
          " && echo changed >> /etc/hostname && rm /usr/bin/tail"
          " && sync && echo 3 > /proc/sys/vm/drop_caches")
    _, out = s.run("ls -l /run/sfroot/rw/upper/etc/sf-write-test"
                   " /run/sfroot/ro/usr/bin/tail; test ! -e /usr/bin/tail"
                   " && stat -c %s /etc/sf-write-test")
    assert out.split()[-1] == str(8 << 20), out
    # Neither the file system nor the block device can be written.
    st, out = s.run("touch /run/sfroot/ro/x", check=False)
    assert st != 0 and "Read-only" in out, out
    st, out = s.run("dd if=/dev/zero of=/dev/vda bs=4096 count=1 "
                    "oflag=direct conv=notrunc", check=False)
    assert st != 0, out
    s.run("sync")
    assert file_md5(sfvm.DEBIAN_ROOTFS) == before


def test_snowflock_guest_package_installed(debian):
    if os.path.exists(MISSING) and open(MISSING).read().strip():
        pytest.fail("rootfs.img holds a partial snowflock-guest package "
                    "(SF_GUEST_DEB_PARTIAL=1); its inputs were not built: "
                    + " ".join(open(MISSING).read().split()))
    s = debian.serial
    _, out = s.run("dpkg -s snowflock-guest")
    assert "Status: install ok installed" in out, out
    _, out = s.run("dpkg -L snowflock-guest")
    for path in ("/usr/sbin/sf-agent", "/usr/bin/sfclone", "/usr/include/sf.h",
                 "/usr/lib/x86_64-linux-gnu/libsf.so",
                 "/usr/lib/python3/dist-packages/snowflock/__init__.py"):
        assert path in out, (path, out)
    s.run("test -x /usr/sbin/sf-agent && test -x /usr/bin/sfclone")
    # In the linker cache (dpkg's ldconfig trigger ran); /lib is /usr/lib.
    _, out = s.run("ldconfig -p | grep -F 'libsf.so.1 ('")
    assert re.search(r"=> (/usr)?/lib/x86_64-linux-gnu/libsf\.so\.1\s", out), out
    _, out = s.run("python3 -c 'import snowflock; print(snowflock.__file__)'")
    assert "/usr/lib/python3/dist-packages/snowflock/" in out, out
    # sf-init started the agent (its log is there even if it has exited).
    s.run("test -e /run/sf-agent.log")


def test_fork_debian_guest(lab, debian):
    """vm-fork with launched clones: the read-only root disk is shared."""
    before = file_md5(sfvm.DEBIAN_ROOTFS)
    debian.serial.run("echo parent-wrote > /root/before-fork")
    r, clones = lab.fork(debian, clones=1)
    assert r["clones"] == 1 and len(clones) == 1
    c = clones[0]
    c.attach()
    # Each VM writes to its own tmpfs from the fork on.
    debian.serial.run("echo parent-only > /root/after-fork")
    _, out = c.serial.run("cat /root/before-fork")
    assert "parent-wrote" in out.splitlines()[-1], out
    c.serial.run("test ! -e /root/after-fork && echo clone-only > /root/clone")
    _, out = c.serial.run("python3 -c 'print(6 * 7)'")
    assert out.split()[-1] == "42", out
    assert_overlay_root(c.serial)
    st, _ = debian.serial.run("test -e /root/clone", check=False)
    assert st != 0
    assert c.cmd("query-sf-clone")["clone-id"] == 1
    c.serial.run("sync")
    assert file_md5(sfvm.DEBIAN_ROOTFS) == before
