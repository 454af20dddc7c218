"""Read and compare sf-randlog logs (guest-agent/examples/sf-randlog.c)
of a parent and its clones: which draws after the fork were the same in
two of them, and when each clone's stream left its parent's.

A clone's log is its parent's, byte for byte, up to the fork instant, and
its own after: the fork is where the logs first differ.  A draw that
ended after the fork ended at a different CLOCK_MONOTONIC instant in each
VM, so even a draw with the same bytes does not make a line equal.  A
draw is taken to be "at" its BEGIN time: the kernel served it at or after
that (sf-randlog.c)."""

import collections
import re

LINE = re.compile(r"^(\d+) (\d+) (\d+) (\d+) ([0-9a-f]+)$")

# mono: CLOCK_MONOTONIC when the draw began, end: when it returned
Draw = collections.namedtuple("Draw", "i mono end real value")


def parse(text):
    """Draws in a log (other lines, e.g. a shell's job notices, dropped)."""
    out = []
    for line in text.splitlines():
        m = LINE.match(line.strip())
        if m:
            out.append(Draw(int(m[1]), int(m[2]), int(m[3]), int(m[4]),
                            m[5]))
    return out


class Comparison:
    """logs: {name: [Draw]} of one fork, the parent's under `parent`."""

    def __init__(self, logs, parent):
        self.logs = {n: {d.i: d for d in ds} for n, ds in logs.items()}
        self.parent = parent
        first = max(min(ds) for ds in self.logs.values())
        fork = None
        i = first
        while all(i in ds for ds in self.logs.values()):
            lines = {(ds[i].mono, ds[i].end, ds[i].value)
                     for ds in self.logs.values()}
            if len(lines) > 1:
                fork = i
                break
            i += 1
        assert fork is not None and fork > first, \
            f"logs do not share a prefix ending at the fork: from {first}"
        self.fork = fork                     # index of the first draw after
        self.last_common = self.logs[parent][fork - 1]
        self.post = {n: [ds[k] for k in sorted(ds) if k >= fork]
                     for n, ds in self.logs.items()}
        seen = collections.Counter(v for ds in self.post.values()
                                   for v in {d.value for d in ds})
        self.shared = {v for v, k in seen.items() if k > 1}

    def identical(self):
        """Draws after the fork with the same bytes in two or more VMs."""
        return len(self.shared)

    def pairs(self):
        """{(a, b): draws after the fork a and b both made}."""
        out = {}
        names = sorted(self.post)
        for x, a in enumerate(names):
            va = {d.value for d in self.post[a]}
            for b in names[x + 1:]:
                out[(a, b)] = len(va & {d.value for d in self.post[b]})
        return out

    def divergence_us(self, name):
        """Guest time from the last draw before the fork to the first of
        `name`'s draws that no other VM made (None if there is none)."""
        for d in self.post[name]:
            if d.value not in self.shared:
                return (d.mono - self.last_common.mono) // 1000
        return None

    def shared_after(self, name, mono_ns):
        """`name`'s shared draws that began after CLOCK_MONOTONIC mono_ns."""
        return [d for d in self.post[name]
                if d.mono > mono_ns and d.value in self.shared]

    def draws_after_fork(self, name):
        return len(self.post[name])
