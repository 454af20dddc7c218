"""Drive real snowflock VMs: start QEMU, talk QMP, use the serial shell.

QMP goes through QEMU's own Python client (qemu.qmp, from the pinned
source tree the build unpacked).  The serial console is a unix socket
chardev; commands are run in the guest's busybox shell and their output
is delimited by markers, so a test reads exactly one command's output.
"""

import asyncio
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("BUILD_DIR", os.path.join(REPO, "build"))
QEMU = os.path.join(BUILD, "qemu", "qemu-system-x86_64")
KERNEL = os.path.join(BUILD, "guest", "vmlinuz")
INITRD = os.path.join(BUILD, "guest", "initrd.img")
# The Debian 12 guest (scripts/build-guest-debian.sh): same kernel and
# initramfs, root on this read-only disk under a tmpfs overlay (sf.root=).
DEBIAN_ROOTFS = os.path.join(BUILD, "guest-debian", "rootfs.img")

sys.path.insert(0, os.path.join(BUILD, "src-qemu", "python"))
from qemu.qmp.legacy import QEMUMonitorProtocol  # noqa: E402
from qemu.qmp.protocol import ConnectError  # noqa: E402

_marker = itertools.count(1)


def host_tsc_khz():
    """The host's TSC rate, which a TCG guest's TSC runs at."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                return int(float(line.split(":")[1]) * 1000)
    return None


def guest_cmdline(extra=""):
    """Kernel command line for our guest image.

    Under TCG the guest's TSC is the host's, but the kernel calibrates it
    against the emulated PIT, and when the host is busy that calibration
    fails ("Unable to calibrate against PIT"); with no HPET or PM timer on
    microvm the kernel then marks the TSC unstable and early boot can stall
    waiting for jiffies.  Seen in 9 of 15 boots three at a time here;
    handing the kernel the rate (tsc_early_khz) took that to 0 of 15.

    tsc=reliable: the only other clocksource a microvm guest has is
    jiffies, and its watchdog compares the TSC against jiffies, which lag
    whenever the host is busy (a TCG vCPU thread that is not scheduled
    takes its timer interrupts late).  Seen here: with three VMs on two
    busy cores the watchdog found a 76 ms skew over 0.5 s and switched the
    guest to refined-jiffies, whose clocks have 4 ms steps and run slow.
    Under TCG the guest TSC is the host's, which is stable.
    """
    khz = host_tsc_khz()
    tsc = f" tsc_early_khz={khz} tsc=reliable" if khz else ""
    return f"console=ttyS0 quiet panic=-1{tsc} {extra}".strip()


def wait_for_path(path, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear in {timeout} s")
        time.sleep(0.02)


class Serial:
    """The guest's serial console over a unix socket chardev."""

    def __init__(self, path, timeout=30.0):
        wait_for_path(path, timeout)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(path)
                break
            except (ConnectionRefusedError, FileNotFoundError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.buf = b""
        self.log = b""

    def read_until(self, pattern, timeout=60.0):
        """Read until regex `pattern` matches the unread output."""
        rx = re.compile(pattern.encode() if isinstance(pattern, str)
                        else pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.buf)
            if m:
                out, self.buf = self.buf[:m.end()], self.buf[m.end():]
                return out.decode(errors="replace"), m
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"no {pattern!r} on serial within {timeout} s; got "
                    f"{self.buf[-2000:].decode(errors='replace')!r}")
            self.sock.settimeout(min(left, 1.0))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise EOFError("serial console closed: "
                               + self.buf[-2000:].decode(errors="replace"))
            self.buf += data
            self.log += data

    def write(self, text):
        self.sock.sendall(text.encode())

    def run(self, cmd, timeout=120.0, check=True):
        """Run a shell command in the guest; return (status, output)."""
        n = next(_marker)
        # Markers are split in the typed line so the tty echo of the
        # command never matches; only the printed ones do.  The output is
        # what lies between the two printed markers, whatever the echo
        # looked like (a shell may echo typed-ahead text twice).
        self.write(f"echo \"@@SF\"\"BEGIN{n}@@\"; {cmd}; "
                   f"echo \"@@SF\"\"DONE{n} $?@@\"\n")
        out, m = self.read_until(rf"@@SFDONE{n} (\d+)@@", timeout)
        status = int(m.group(1).decode())
        begin = out.rfind(f"@@SFBEGIN{n}@@", 0, m.start())
        body = out[begin:m.start()] if begin >= 0 else out[:m.start()]
        # Drop the begin marker's line.
        body = body.split("\n", 1)[1] if "\n" in body else ""
        if check and status != 0:
            raise AssertionError(f"guest command {cmd!r} exited {status}: "
                                 f"{body[-2000:]}")
        return status, body

    def close(self):
        self.sock.close()


class VM:
    """One QEMU process (a parent or a clone) with QMP and a serial socket."""

    def __init__(self, workdir, name="vm", mem_mib=None, extra_args=(),
                 append=None, netdev=True, debian=False, balloon=True):
        """debian=True boots the Debian guest: its rootfs.img as a
        read-only virtio-blk disk (the root drive, /dev/vda) and
        sf.root=/dev/vda; RAM defaults to 1 GiB instead of 512 MiB."""
        if mem_mib is None:
            mem_mib = 1024 if debian else 512
        if debian:
            append = append or guest_cmdline()
            if "sf.root=" not in append:
                append += " sf.root=/dev/vda"
        self.workdir = workdir
        self.name = name
        self.qmp_path = os.path.join(workdir, f"{name}.qmp")
        self.serial_path = os.path.join(workdir, f"{name}.serial")
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.args = [
            QEMU, "-M", "microvm", "-m", str(mem_mib), "-smp", "1",
            "-name", name,
            "-L", "/usr/share/seabios", "-L", "/usr/share/qemu",
            "-nodefaults", "-no-user-config", "-display", "none",
            "-global", "virtio-mmio.force-legacy=false",
            "-kernel", KERNEL, "-initrd", INITRD,
            "-append", append or guest_cmdline(),
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-chardev", f"socket,id=ser0,path={self.serial_path},"
                        "server=on,wait=off",
            "-serial", "chardev:ser0",
            "-device", "virtio-serial-device",
        ]
        if debian:
            self.args += ["-drive", f"file={DEBIAN_ROOTFS},format=raw,"
                                    "if=none,readonly=on,id=root",
                          "-device", "virtio-blk-device,drive=root"]
        if netdev:
            self.args += ["-netdev", "user,id=n0",
                          "-device", "virtio-net-device,id=net0,netdev=n0,"
                                     "mac=52:54:00:12:34:56"]
        if balloon:
            # Free page reporting: the guest gives free memory back, so a
            # fork's frozen image holds it as never populated and clones
            # fill it with zero themselves (the zero map).  balloon=False
            # is a guest without the device; "off" has it, not reporting.
            self.args += ["-device", "virtio-balloon-device,"
                          f"free-page-reporting={'off' if balloon == 'off' else 'on'}"]
        self.args += list(extra_args)
        # Debugging aid: more QEMU options for every VM a test starts
        # (e.g. SF_TEST_QEMU_ARGS="-trace sf_lazyram_*").
        self.args += os.environ.get("SF_TEST_QEMU_ARGS", "").split()
        # Run inside another network namespace (hosts.Rig.wrap(k, [])).
        self.prefix = []
        self.proc = None
        self.pid = None
        self.qmp = None
        self.serial = None
        self.events = []

    def launch(self, attach=True):
        """Start QEMU and (attach) connect to it; attach later to start
        several at once."""
        self.logf = open(self.log_path, "wb")
        # GLib < 2.76 slice allocator: see sf-launch.c.
        env = dict(os.environ, G_SLICE="always-malloc")
        self.proc = subprocess.Popen(self.prefix + self.args,
                                     stdin=subprocess.DEVNULL,
                                     env=env,
                                     stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        if attach:
            self.attach()
        return self

    def attach(self, timeout=30.0):
        """Connect QMP and serial of a QEMU started by us or by vm-fork."""
        try:
            wait_for_path(self.qmp_path, timeout)
        except TimeoutError as e:
            raise TimeoutError(f"{e}; {self.name}: {self.log_tail()}")
        self.qmp = QEMUMonitorProtocol(self.qmp_path)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.qmp.connect()
                break
            except (ConnectError, ConnectionRefusedError, FileNotFoundError,
                    OSError):
                # The socket exists from QEMU's bind(), before its listen():
                # refused (qemu.qmp wraps it in ConnectError) until then.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                self.qmp = QEMUMonitorProtocol(self.qmp_path)
        self.serial = Serial(self.serial_path, timeout)
        return self

    def cmd(self, name, **args):
        """QMP command; returns 'return' or raises with the error."""
        resp = self.qmp.cmd_raw(name, args or None)
        self.events += self.qmp.get_events(wait=False)
        if "error" in resp:
            raise QMPError(resp["error"])
        return resp["return"]

    def cmd_raw(self, name, args=None):
        return self.qmp.cmd_raw(name, args)

    def wait_event(self, name, timeout=60.0):
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name:
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {name} event in {timeout} s")
            try:
                ev = self.qmp.pull_event(wait=float(min(left, 1.0)))
            except (asyncio.TimeoutError, asyncio.CancelledError):
                ev = None
            if ev:
                self.events.append(ev)

    def wait_ready(self, timeout=120.0):
        try:
            self.serial.read_until(r"SNOWFLOCK-GUEST-READY", timeout)
        except TimeoutError as e:
            try:
                diag = self.cmd("human-monitor-command",
                                **{"command-line": "info registers"})
                diag += json.dumps(self.cmd("query-status"))
            except Exception as e2:
                diag = f"(no QMP: {e2})"
            raise TimeoutError(f"{e}; guest state: {diag[:1500]}") from e
        # Let the shell print its first prompt, then sync.
        self.serial.run("true", timeout=timeout)

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def log_tail(self, size=2000):
        """The end of this QEMU's log, or why there is none."""
        try:
            with open(self.log_path, errors="replace") as f:
                return "QEMU's log: " + f.read()[-size:]
        except OSError as e:
            return f"no log ({e})"

    def close_channels(self):
        for c in (self.serial, self.qmp):
            try:
                if c:
                    c.close()
            except Exception:
                pass
        self.serial = self.qmp = None

    def reap(self):
        """After the process ended: collect it and close its log."""
        if self.proc:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if getattr(self, "logf", None):
            self.logf.close()
            self.logf = None

    def close(self):
        self.close_channels()
        self.kill()
        self.reap()


def clone_of(parent, fork, clone_id, name=None, obj_extra="", replace=None,
             prefix=(), attach=True):
    """A clone started by the test from vm-fork's clone-args (launch=false),
    as sfd starts its clones: the parent's command line with the clone's
    own -name, QMP and serial sockets, plus `-object sf-clone,...` with
    obj_extra appended (",link=held").  replace: {option: new value} for
    other options of the parent's that the clone must not share (its
    -netdev).  prefix: the command it runs under (another host's
    namespace).  Returns the VM, launched and attached."""
    name = name or f"{parent.name}-{clone_id}"
    vm = VM(parent.workdir, name, netdev=False)
    vm.prefix = list(prefix)
    own = {"-name": name,
           "-qmp": f"unix:{vm.qmp_path},server=on,wait=off"}
    own.update(replace or {})
    args, it = [], iter(parent.args)
    for a in it:
        if a in own:
            args += [a, own[a]]
            next(it)
        elif a == "-chardev":
            v = next(it)
            if v.startswith("socket,id=ser0,"):
                v = f"socket,id=ser0,path={vm.serial_path},server=on,wait=off"
            args += [a, v]
        else:
            args.append(a)
    # clone-args: the fork's secret object, then sf-clone naming it.
    for a in fork["clone-args"]:
        a = a.replace("@CLONE_ID@", str(clone_id))
        args.append(a + obj_extra if a.startswith("sf-clone,") else a)
    vm.args = args
    vm.clone_id = clone_id
    return vm.launch(attach)


class CloneVM(VM):
    """A clone started by vm-fork, found through its launch command line."""

    def __init__(self, parent, launched):
        argv = launched["argv"]
        self.workdir = parent.workdir
        self.clone_id = launched["clone-id"]
        self.name = argv[argv.index("-name") + 1]
        qmp = argv[argv.index("-qmp") + 1]
        self.qmp_path = qmp[len("unix:"):].split(",")[0]
        chardev = [a for a in argv if a.startswith("socket,id=ser0,")][0]
        self.serial_path = re.search(r"path=([^,]+)", chardev).group(1)
        self.pid = launched["pid"]
        self.log_path = launched["log"]
        self.proc = None
        self.qmp = None
        self.serial = None
        self.events = []

    def alive(self):
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        # A zombie of ours counts as gone.
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().split(") ")[1][0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


class QMPError(Exception):
    def __init__(self, err):
        super().__init__(f"{err.get('class')}: {err.get('desc')}")
        self.err = err


def rss_mib(pid):
    """A process's resident memory, MiB (a QEMU's: what its guest holds)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    raise AssertionError(f"no VmRSS for {pid}")


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] not in "ZX"
    except (FileNotFoundError, ProcessLookupError):
        # ESRCH: reading the stat of a process that is exiting.
        return False


def wait_gone(pid, timeout=20.0):
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
