"""What a test module may leave behind, snapshotted and compared.

Everything the integration tests start runs with TMPDIR set to one
private directory for the session (conftest.py), so a fork directory,
log, socket or work directory left by anyone shows up there, and other
users of the machine's /tmp never confuse the comparison.  Besides
files: processes running one of our binaries, unix sockets bound under
that directory (a socket whose file was removed but is still open
counts), network interfaces of the sfd instances the module ran, and
network namespaces named sf-* (the tests' convention) or sfh-* (the test
hosts of scripts/test-hosts.sh, with their bridges and veths).
"""

import os
import signal
import subprocess
import time

import sfvm

TMP = None          # the session's TMPDIR, set by conftest.py
PYTEST_DIR = "pytest"  # pytest's own tmp_path directories, under TMP
SFD_TAGS = set()    # interface tags of every sfd the tests started


def _our_processes():
    """pid -> command line of processes running a binary of our build."""
    build = os.path.realpath(sfvm.BUILD).rstrip("/") + "/"
    found = {}
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            exe = os.readlink(f"/proc/{d}/exe")
            if not exe.startswith(build):
                continue
            with open(f"/proc/{d}/stat") as f:
                if f.read().rsplit(") ", 1)[1][0] in "ZX":
                    continue
            with open(f"/proc/{d}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found[int(d)] = f"[{comm}] {cmd[:200]}"
    return found


def _files():
    out = set()
    for root, dirs, files in os.walk(TMP):
        if root == TMP and PYTEST_DIR in dirs:
            dirs.remove(PYTEST_DIR)
        for n in dirs + files:
            out.add(os.path.relpath(os.path.join(root, n), TMP))
    return out


def _sockets():
    """Unix sockets bound to a path under TMP."""
    out = set()
    try:
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                parts = line.split()
                if len(parts) >= 8 and parts[7].startswith(TMP + "/"):
                    out.add(parts[7])
    except OSError:
        pass
    return out


def _links():
    """sfd's bridges and taps, and the test hosts' bridges and veths
    (scripts/test-hosts.sh)."""
    return {n for n in os.listdir("/sys/class/net")
            if n.startswith(("sfhb-", "sfhv")) or
            any(n.startswith((f"sfbr-{t}", f"sft-{t}")) for t in SFD_TAGS)}


def _netns():
    p = subprocess.run(["ip", "netns", "list"], capture_output=True,
                       text=True)
    return {line.split()[0] for line in p.stdout.splitlines()
            if line.startswith(("sf-", "sfh-"))}


def snapshot():
    return {
        "processes": _our_processes(),
        "files": _files(),
        "sockets": _sockets(),
        "links": _links(),
        "netns": _netns(),
    }


def new_since(before, now):
    """What `now` has that `before` did not, by kind."""
    out = {}
    for kind, items in now.items():
        old = before.get(kind, {})
        extra = {k: v for k, v in items.items() if k not in old} \
            if isinstance(items, dict) else items - old
        if extra:
            out[kind] = extra
    return out


def wait_clean(before, timeout):
    """Leftovers of what started after `before`, waiting up to `timeout`
    for what ends by itself (a page server's grace period, say)."""
    deadline = time.monotonic() + timeout
    while True:
        left = new_since(before, snapshot())
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def describe(left):
    lines = []
    for kind, items in sorted(left.items()):
        lines.append(f"{kind}:")
        if isinstance(items, dict):
            lines += [f"  {k}: {v}" for k, v in sorted(items.items())]
        else:
            lines += [f"  {k}" for k in sorted(items)]
    return "\n".join(lines)


def force_clean(left):
    """Remove leftovers so the next module starts clean."""
    for pid in left.get("processes", {}):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for n in left.get("links", ()):
        subprocess.run(["ip", "link", "del", n], stderr=subprocess.DEVNULL)
    for n in left.get("netns", ()):
        subprocess.run(["ip", "netns", "del", n], stderr=subprocess.DEVNULL)
    for rel in sorted(left.get("files", ()), key=len, reverse=True):
        path = os.path.join(TMP, rel)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            else:
                os.unlink(path)
        except OSError:
            pass
