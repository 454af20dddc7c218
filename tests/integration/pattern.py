"""The guest memory pattern tool (guest-agent/sfpattern.c), driven over
the serial console.  `sfpattern serve` keeps its region alive in the guest
and takes commands on a FIFO; results are appended to a file we grep."""

import re

OUT = "/run/sfpattern.out"
FIFO = "/run/sfpattern.fifo"


def start(serial, mib, seed, timeout=300):
    serial.run(f"rm -f {OUT}; (sfpattern serve --mib {mib} --seed {seed} "
               f"--fifo {FIFO} >> {OUT} 2>&1 &)")
    return wait_line(serial, rf"SFPATTERN ready seed={seed} ", timeout)


def wait_line(serial, regex, timeout=300):
    """Wait until OUT has a line matching regex; return that line."""
    _, out = serial.run(
        f"i=0; until grep -E '{regex}' {OUT}; do sleep 0.2; "
        f"i=$((i+1)); [ $i -gt {int(timeout * 5)} ] && break; done",
        timeout=timeout + 30, check=False)
    lines = [l for l in out.splitlines() if re.search(regex, l)]
    if not lines:
        raise AssertionError(f"no {regex!r} from sfpattern: {out!r}")
    return lines[-1]


def command(serial, cmd, expect, timeout=300):
    """Send one command, wait for its result line (fresh output only)."""
    serial.run(f": > {OUT}; echo '{cmd}' > {FIFO}")
    return wait_line(serial, expect, timeout)


def verify(serial, seed, timeout=300):
    line = command(serial, f"verify {seed}",
                   rf"SFPATTERN verify seed={seed} ", timeout)
    m = re.search(r"pages=(\d+) mismatches=(\d+)", line)
    assert m, line
    return int(m.group(1)), int(m.group(2)), line


def fill(serial, seed, timeout=300):
    return command(serial, f"fill {seed}", rf"SFPATTERN filled seed={seed} ",
                   timeout)
