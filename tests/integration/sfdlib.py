"""Drive sfd in tests: start a daemon on private paths, talk its protocol
raw or through sfctl, and clean up everything it made (QEMU processes,
page servers, bridges, taps) even when a test fails."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import leaks
import sfvm

SFD = os.path.join(sfvm.BUILD, "host", "sfd", "sfd")
SFCTL = os.path.join(sfvm.BUILD, "host", "sfd", "sfctl")
CMDLINE = sfvm.guest_cmdline()


def domain_xml(name, mem_mib=256, interface=True, extra="", clone=""):
    iface = "<interface type='family'/>" if interface else ""
    return f"""<domain type='snowflock' xmlns:sf='urn:snowflock:domain:1'>
  <name>{name}</name>
  <memory unit='MiB'>{mem_mib}</memory>
  <os>
    <kernel>{sfvm.KERNEL}</kernel>
    <initrd>{sfvm.INITRD}</initrd>
    <cmdline>{CMDLINE}</cmdline>
  </os>
  <devices>{iface}</devices>
  {clone}
  {extra}
</domain>
"""


def need_root_networking():
    """Clone networks need root and /dev/net/tun: fail clearly, never skip
    (CI runs as root)."""
    if os.geteuid() != 0:
        raise AssertionError("sfd family-network tests need root "
                             "(bridges and taps)")
    if not os.path.exists("/dev/net/tun"):
        raise AssertionError("sfd family-network tests need /dev/net/tun")


def links():
    return set(os.listdir("/sys/class/net"))


class Client:
    """One protocol connection."""

    def __init__(self, path, timeout=30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.events = []
        self.next_id = 1
        self.greeting = self.recv()

    def send_raw(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def recv(self, timeout=None):
        if timeout is not None:
            self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError("sfd closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def recv_reply(self, timeout=300.0):
        """The next line that is not an event."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.1, deadline - time.monotonic()))
            if "event" in msg:
                self.events.append(msg)
                continue
            return msg

    def request(self, cmd, timeout=300.0, **args):
        i = self.next_id
        self.next_id += 1
        req = {"execute": cmd, "id": i}
        if args:
            req["arguments"] = args
        self.send_raw(json.dumps(req) + "\n")
        r = self.recv_reply(timeout)
        assert r.get("id") == i, r
        return r

    def cmd(self, cmd, timeout=300.0, **args):
        r = self.request(cmd, timeout, **args)
        if "error" in r:
            raise SfdError(r["error"])
        return r["return"]

    def wait_event(self, name, timeout=60.0):
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e["event"] == name:
                    return self.events.pop(i)
            msg = self.recv(max(0.1, deadline - time.monotonic()))
            if "event" in msg:
                self.events.append(msg)

    def close(self):
        self.sock.close()


class SfdError(Exception):
    def __init__(self, err):
        super().__init__(f"{err['class']}: {err['desc']}")
        self.err = err


class Sfd:
    """An sfd on private paths."""

    def __init__(self, workdir=None, max_clones=None, hook_timeout=None):
        self.workdir = workdir or tempfile.mkdtemp(prefix="sfd-")
        self.socket = os.path.join(self.workdir, "sfd.sock")
        self.state = os.path.join(self.workdir, "state")
        self.hooks = os.path.join(self.workdir, "hooks")
        os.makedirs(self.hooks, exist_ok=True)
        self.args = [SFD, "--socket", self.socket, "--state-dir", self.state,
                     "--hooks-dir", self.hooks, "--verbose"]
        if max_clones is not None:
            self.args += ["--max-clones", str(max_clones)]
        if hook_timeout is not None:
            self.args += ["--hook-timeout", str(hook_timeout)]
        self.proc = None
        self.tag = None
        self.pids = set()           # every QEMU and page server seen
        self.clients = []
        self.runs = 0

    @property
    def log_path(self):
        return os.path.join(self.workdir, f"sfd-{self.runs}.log")

    def start(self, timeout=10.0):
        self.runs += 1
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            log = open(self.log_path).read()
            m = re.search(r"interfaces sf\*-([0-9a-f]{4})\*", log)
            if m:
                self.tag = m.group(1)
                leaks.SFD_TAGS.add(self.tag)
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"sfd did not start: {log}")
            time.sleep(0.02)

    def log(self):
        return "".join(open(os.path.join(self.workdir, f"sfd-{i}.log")).read()
                       for i in range(1, self.runs + 1))

    def client(self):
        c = Client(self.socket)
        self.clients.append(c)
        return c

    def sfctl(self, *args, json_out=False, timeout=300, input=None):
        argv = [SFCTL, "--socket", self.socket]
        if json_out:
            argv.append("--json")
        p = subprocess.run(argv + [str(a) for a in args], capture_output=True,
                           text=True, timeout=timeout, input=input)
        if json_out and p.returncode == 0:
            p.json = json.loads(p.stdout)
        return p

    def remember(self):
        """Note every process sfd runs now, to kill them at the end."""
        try:
            c = Client(self.socket, timeout=10)
            for vm in c.cmd("list"):
                if vm["pid"]:
                    self.pids.add(vm["pid"])
                    info = c.cmd("info", vm=vm["name"])
                    if info.get("server-pid"):
                        self.pids.add(info["server-pid"])
            c.close()
        except Exception:
            pass

    def processes_of_workdir(self):
        """Every process whose command line names our work directory: the
        QEMUs sfd started and the page servers they fork()ed (which keep
        QEMU's argv), including a checkpoint's, which sfd lists nowhere a
        test could see once sfd itself is gone."""
        found = set()
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if (self.workdir.rstrip("/") + "/").encode() in f.read():
                        found.add(int(d))
            except OSError:
                pass
        return found

    def our_links(self):
        return {n for n in links()
                if n.startswith(f"sfbr-{self.tag}") or
                n.startswith(f"sft-{self.tag}")}

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        for c in self.clients:
            c.close()
        self.clients = []

    def stop_all(self, timeout=60):
        """Destroy every VM through sfd itself, clones first, so what sfd
        releases (taps, bridges, forks, page servers) is sfd's doing and
        the leak check sees what sfd leaves."""
        try:
            c = Client(self.socket, timeout=10)
            vms = c.cmd("list")
            for vm in sorted(vms, key=lambda v: v["kind"] != "clone"):
                if vm["state"] in ("running", "starting", "stopping"):
                    c.request("destroy", timeout=timeout, vm=vm["name"])
            c.close()
        except Exception:       # noqa: BLE001 - close() cleans up anyway
            pass

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.remember()
            self.stop_all()
            self.kill(signal.SIGTERM)
        self.kill()
        for pid in self.pids | self.processes_of_workdir():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.tag:
            for n in self.our_links():
                subprocess.run(["ip", "link", "del", n],
                               stderr=subprocess.DEVNULL)
        shutil.rmtree(self.workdir, ignore_errors=True)


def wait_shell(serial, timeout=400.0):
    """Wait until a freshly started guest's shell answers.  `serial` is an
    sfvm.Serial connected right after `start` answered (before the guest
    prints its READY line, which is not repeated), or a path to connect
    to now.  Nothing is typed before the guest says it is ready."""
    s = sfvm.Serial(serial, timeout=30) if isinstance(serial, str) else serial
    try:
        s.read_until(r"SNOWFLOCK-GUEST-READY", timeout)
    except TimeoutError:
        s.close()
        raise
    s.run("true", timeout=60)
    return s


def start_booted(sfd, client, name, attempts=3, timeout=90.0):
    """Start a domain and wait for its guest's shell; return (vm, serial).

    Start guests one at a time: under TCG on a loaded 2-core host a guest
    booting beside another sometimes never reaches its console (seen with
    plain sfvm VMs too, not an sfd matter).  A guest silent for `timeout`
    is destroyed and started again, at most `attempts` times."""
    for i in range(attempts):
        vm = client.cmd("start", vm=name)
        sfd.pids.add(vm["pid"])
        serial = sfvm.Serial(vm["serial"])
        try:
            return vm, wait_shell(serial, timeout)
        except TimeoutError:
            client.cmd("destroy", vm=name, timeout=60)
    raise AssertionError(f"{name} did not boot in {attempts} attempts")
