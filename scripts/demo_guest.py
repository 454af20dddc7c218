#!/usr/bin/python3
"""snowflock demo, part 2: a program inside a VM forks its own VM.

sfd runs a VM; inside it, `sf-job` (guest-agent/examples/sf-job.c) asks
for a ticket of 4 clones, calls sf_clone(), and each clone computes its
share of a sum and ends with sf_exit(); the parent joins and checks every
share.  Then `sfclone` does the same from the shell.  What sfd saw is
printed as a timeline.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests", "integration"))
import sfdlib  # noqa: E402


def timeline(events, t0):
    for e in events:
        ts = e["timestamp"]["seconds"] + e["timestamp"]["microseconds"] / 1e6
        d = e.get("data", {})
        what = e["event"]
        if what == "GUEST_REQUEST":
            detail = (f"{d['vm']}: guest asked '{d['op']}' -> {d['result']}"
                      f" count={d['count']}")
        elif what == "FORK_DONE":
            detail = (f"vm-fork of {d.get('vm', '?')}: {d.get('granted')} "
                      f"clones")
        elif what == "CLONE_STARTED":
            detail = f"{d['name']} running, {d['mac']} {d['ip']}"
        elif what == "GUEST_CLONE_EXITED":
            detail = (f"{d['clone']} (clone {d['clone-id']}) ended: "
                      f"{d['how']} {d['status']}")
        elif what in ("VM_STOPPED", "CLONE_EXITED"):
            detail = d.get("name", "")
        else:
            continue
        print(f"  {(ts - t0) * 1000:8.0f} ms  {what:<20} {detail}")


def drain(client, quiet=0.5):
    events = []
    while True:
        try:
            msg = client.recv(quiet)
        except (TimeoutError, OSError):
            return events
        if "event" in msg:
            events.append(msg)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.parse_args()
    sfdlib.need_root_networking()
    sfd = sfdlib.Sfd().start()
    try:
        c = sfd.client()
        c.cmd("define", xml=sfdlib.domain_xml(
            "demo", clone="<sf:clone max='8'/>"))
        t = time.monotonic()
        vm, serial = sfdlib.start_booted(sfd, c, "demo")
        print(f"\nsfd: VM 'demo' booted to its shell in "
              f"{time.monotonic() - t:.1f} s ({vm['ip']}, {vm['mac']})")
        for _ in range(120):
            if serial.run("test -S /run/snowflock/agent.sock",
                          check=False)[0] == 0:
                break
            time.sleep(0.5)
        ev = sfd.client()
        ev.cmd("subscribe")

        print("\nguest# sf-job        (C: request 4 clones, sf_clone, "
              "sf_exit, sf_join)")
        t0 = time.time()
        st, out = serial.run("sf-job", timeout=600, check=False)
        print("".join(f"  | {line}\n" for line in out.strip().splitlines()),
              end="")
        print(f"  exit status {st}, {time.time() - t0:.2f} s in all; "
              f"what sfd saw:")
        timeline(drain(ev), t0)
        ok = st == 0

        cmd = ("sfclone -n 4 -- sh -c 'echo \"$(hostname) has id "
               "$SF_CLONE_ID\"; exit $SF_CLONE_ID'")
        print(f"\nguest# {cmd}")
        t0 = time.time()
        st, out = serial.run(cmd, timeout=600, check=False)
        print("".join(f"  | {line}\n" for line in out.strip().splitlines()),
              end="")
        print(f"  exit status {st} (nonzero: clones exited 1..4), "
              f"{time.time() - t0:.2f} s; what sfd saw:")
        timeline(drain(ev), t0)
        ok = ok and st != 0 and all(f"clone {k}: exited {k}" in out
                                    for k in range(1, 5))

        _, host = serial.run("hostname")
        st, _ = serial.run("test -e /run/snowflock/id", check=False)
        print(f"\nparent after both jobs: host name {host.strip()}, "
              f"{'a clone?!' if st == 0 else 'still the parent (no clone id)'}")
        print("\nresult:", "OK" if ok else "FAILED")
        return 0 if ok else 1
    finally:
        sfd.close()


if __name__ == "__main__":
    sys.exit(main())
