"""Every shell example of docs/sfd.md ("From a shell"), run exactly as the
document writes it, from bash, against a real sfd with real guests.

The examples are read out of the document at test time, so a change to
the document is a change to the test.  Only the first line (S=...) is
replaced, to point at this test's sfd; web.xml is written beside them.
Each example pipes its request through socat, which shuts down its
sending side right after: these are the half-close cases too."""

import json
import os
import re
import select
import signal
import subprocess
import time

import pytest

import sfdlib

DOC = os.path.join(sfdlib.sfvm.REPO, "docs", "sfd.md")


def shell_examples():
    """{comment: command text} from the doc's "From a shell" block."""
    text = open(DOC).read()
    sec = text[text.index("### From a shell"):]
    block = re.search(r"```sh\n(.*?)```", sec, re.S).group(1)
    lines = block.splitlines()
    assert lines[0].startswith("S="), lines[0]
    examples, name, cmd = {}, None, []
    for line in lines[1:] + [""]:
        if line.startswith("#") or not line.strip():
            if name and cmd:
                examples[name] = "\n".join(cmd)
            cmd = []
            if line.startswith("#"):
                name = line[1:].strip()
            continue
        cmd.append(line)
    return examples


EXAMPLES = shell_examples()


def need(title):
    for k, v in EXAMPLES.items():
        if k.startswith(title):
            return v
    raise AssertionError(f"docs/sfd.md has no example '{title}...': "
                         f"{list(EXAMPLES)}")


@pytest.fixture
def sfd():
    sfdlib.need_root_networking()
    d = sfdlib.Sfd().start()
    yield d
    d.close()


def sh(sfd, script, timeout):
    return subprocess.run(["bash", "-c", script], cwd=sfd.workdir,
                          env=dict(os.environ, S=sfd.socket),
                          capture_output=True, text=True, timeout=timeout)


def background(sfd, script):
    return subprocess.Popen(["bash", "-c", script], cwd=sfd.workdir,
                            env=dict(os.environ, S=sfd.socket),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def test_every_shell_example(sfd):
    assert len(EXAMPLES) == 5, EXAMPLES      # each one is run below
    p = sh(sfd, need("one request"), 30)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == []

    with open(os.path.join(sfd.workdir, "web.xml"), "w") as f:
        f.write(sfdlib.domain_xml("web"))
    p = sh(sfd, need("define from a file"), 30)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["return"]["name"] == "web"

    watch4 = background(sfd, need("the next 4 clones"))
    forever = background(sfd, need("watch events forever"))
    try:
        time.sleep(1)           # both subscribed before anything happens
        t = time.monotonic()
        p = sh(sfd, need("start, then fork 4"), 300)
        took = time.monotonic() - t
        assert p.returncode == 0, p.stderr
        out = p.stdout.splitlines()
        start = json.loads(out[0])
        assert start["id"] == 1 and start["return"]["state"] == "running", out
        sfd.pids.add(start["return"]["pid"])
        clones = [line.split() for line in out[1:]]
        assert len(clones) == 4, out
        for name, pid, mac, ip, state in clones:
            sfd.pids.add(int(pid))
            assert state == "running" and name.startswith("web-"), out
        # sfd closed each connection once it had answered: socat did not
        # sit out its -t 60 and -t 120.
        assert took < 120, took

        # The counted subscription ended by itself after 4 events.
        names, err = watch4.communicate(timeout=60)
        assert watch4.returncode == 0, err
        assert sorted(names.decode().split()) == sorted(c[0] for c in clones)

        # The endless one is still there and sees what happens next.
        c = sfd.client()
        c.cmd("destroy", vm="web-1", timeout=60)
        deadline = time.monotonic() + 30
        out, fd = b"", forever.stdout.fileno()
        while b"CLONE_EXITED" not in out and time.monotonic() < deadline:
            if select.select([fd], [], [], 1)[0]:
                data = os.read(fd, 65536)
                if not data:
                    break
                out += data
        seen = [json.loads(x)["event"] for x in out.decode().splitlines()]
        assert "CLONE_STARTED" in seen and "CLONE_EXITED" in seen, seen
        assert forever.poll() is None
    finally:
        for proc in (watch4, forever):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
