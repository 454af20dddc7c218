"""Test hosts: network namespaces on a bridge (scripts/test-hosts.sh),
with everything started in them removed on exit.

    with hosts.Rig(4) as rig:
        rig.addr(0)            # the host itself on the rig's bridge
        rig.addr(2)            # host 2's eth0
        rig.popen(2, argv)     # a process inside host 2
        rig.loss(2, 5)         # 5 % of UDP reaching host 2 dropped
"""

import os
import subprocess

import sfvm

SCRIPT = os.path.join(sfvm.REPO, "scripts", "test-hosts.sh")


class Rig:
    def __init__(self, n, mtu=1500):
        self.n = n
        self.mtu = mtu
        self.name = None
        self.procs = []

    def __enter__(self):
        out = subprocess.run([SCRIPT, "up", str(self.n), "--mtu",
                              str(self.mtu)], capture_output=True, text=True,
                             check=True)
        self.name = out.stdout.split()[-1]
        with open(f"/run/snowflock-test-hosts/{self.name}/subnet") as f:
            self.subnet = int(f.read())
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        if self.name:
            subprocess.run([SCRIPT, "down", self.name], check=False)
            self.name = None
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass

    @property
    def bridge(self):
        return f"sfhb-{self.name}"

    def netns(self, k):
        return f"sfh-{self.name}-{k}"

    def addr(self, k):
        """Host k's address; 0 is this host on the rig's bridge."""
        return f"10.99.{self.subnet}.{254 if k == 0 else k}"

    def wrap(self, k, argv):
        return list(argv) if k == 0 else \
            ["ip", "netns", "exec", self.netns(k)] + list(argv)

    def popen(self, k, argv, **kw):
        p = subprocess.Popen(self.wrap(k, argv), **kw)
        self.procs.append(p)
        return p

    def run(self, k, argv, **kw):
        return subprocess.run(self.wrap(k, argv), **kw)

    def loss(self, k, percent, port=None):
        argv = [SCRIPT, "loss", self.name, str(k), str(percent)]
        subprocess.run(argv + ([str(port)] if port else []), check=True)

    def noloss(self, k):
        subprocess.run([SCRIPT, "noloss", self.name, str(k)], check=True)

    def cut(self, k):
        subprocess.run([SCRIPT, "cut", self.name, str(k)], check=True)

    def uncut(self, k):
        subprocess.run([SCRIPT, "uncut", self.name, str(k)], check=True)
