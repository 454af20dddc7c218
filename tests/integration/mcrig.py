"""A parent on this host and its clones on other hosts (hosts.Rig), for
the multicast tests and benchmarks: fork over TCP with or without the
fork's group, start clones in the hosts' namespaces from the fork's
clone-args (no descriptor path: they fetch it from the page server),
wait for their memory, and read both sides' figures."""

import time

import sfvm


def group_of(rig):
    """A group and port of the rig's own: rigs never hear each other."""
    return f"239.77.{rig.subnet}.1:{7000 + rig.subnet}"


def fork(parent, rig, clones, multicast=True, prefetch=True):
    args = {"clones": clones, "launch": False, "prefetch": prefetch,
            "listen": f"tcp:{rig.addr(0)}:0"}
    if multicast:
        args["multicast"] = {"group": group_of(rig),
                             "interface": rig.addr(0)}
    return parent.cmd("vm-fork", **args)


def start_clone(lab, parent, fork_info, clone_id, host, rig, extra=""):
    """Clone clone_id of the fork, inside test host `host`; extra: more
    sf-clone properties (",prefetch=off,multicast=off")."""
    return start_clones(lab, parent, fork_info, {clone_id: host}, rig,
                        extra)[0]


def start_clones(lab, parent, fork_info, placement, rig, extra=""):
    """Clones {clone id: host} started together, as a management layer
    starts a fork's clones: every process first, then connected to.
    (One by one, the first clones' push would send most of RAM before
    the last ones joined the group, and it would go again for them.)"""
    clones = []
    for clone_id, host in placement.items():
        c = sfvm.clone_of(parent, fork_info, clone_id, obj_extra=extra,
                          prefix=rig.wrap(host, []), attach=False)
        lab.vms.append(c)
        clones.append(c)
    for c in clones:
        c.attach()
    return clones


def wait_complete(clones, timeout=300):
    deadline = time.monotonic() + timeout
    pending = list(clones)
    while pending:
        c = pending[0]
        st = c.cmd("query-sf-clone")
        assert st["state"] != "failed", (c.name, st)
        if st["state"] == "complete":
            pending.pop(0)
            continue
        assert time.monotonic() < deadline, (c.name, st)
        time.sleep(0.1)


def clone_stats(clones):
    return {c.name: c.cmd("query-sf-clone") for c in clones}


def server_stats(parent, fork_id, timeout=15):
    """The fork's figures once its page server is done (every clone
    complete, so it ends): while it runs, its stats file is rewritten only
    once a second, and may not count the last pages yet."""
    deadline = time.monotonic() + timeout
    while True:
        forks = [f for f in parent.cmd("query-sf-forks") if f["id"] == fork_id]
        assert forks, f"fork {fork_id} not in query-sf-forks"
        done = not forks[0]["server-alive"] and forks[0].get("served")
        if done or time.monotonic() > deadline:
            return forks[0]
        time.sleep(0.1)


def egress(server):
    """Bytes the page server sent: its group's and every connection's."""
    unicast = sum(s["bytes-sent"] for s in server["served"])
    group = server.get("multicast", {}).get("bytes", 0)
    return group, unicast


def wire_bytes(rig):
    """What this host put on the rig's bridge: the page server's egress
    as the kernel counted it (IP and Ethernet headers, fragments, TCP
    acks and all)."""
    with open(f"/sys/class/net/{rig.bridge}/statistics/tx_bytes") as f:
        return int(f.read())
