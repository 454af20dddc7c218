"""sfd's protocol and sfctl, without VMs: good requests, malformed JSON,
unknown commands, wrong types, huge lines, many clients at once, driven
by a Python client, by plain socat (and jq) and by sfctl."""

import json
import os
import socket
import subprocess
import threading

import pytest

import sfdlib


@pytest.fixture
def sfd():
    d = sfdlib.Sfd().start()
    yield d
    d.close()


def test_greeting_and_version(sfd):
    c = sfd.client()
    g = c.greeting["SFD"]
    assert g["version"]["protocol"] == 1
    assert {"fork", "define", "list", "subscribe"} <= set(g["commands"])
    assert c.cmd("version")["protocol"] == 1
    helps = {h["name"]: h for h in c.cmd("help")}
    assert [a["name"] for a in helps["fork"]["arguments"]] == ["vm", "count"]


BAD = [
    # (line, error class, text in desc, id echoed)
    ("this is not json", "ParseError", "malformed JSON", None),
    ('{"execute": "list"', "ParseError", "malformed JSON", None),
    ("[1, 2]", "InvalidRequest", "JSON object", None),
    ('"list"', "InvalidRequest", "JSON object", None),
    ('{"execute": 5, "id": 1}', "InvalidRequest", "'execute'", 1),
    ('{"arguments": {}, "id": 2}', "InvalidRequest", "'execute'", 2),
    ('{"execute": "list", "bogus": 1, "id": 3}', "InvalidRequest",
     "unknown member 'bogus'", 3),
    ('{"execute": "nope", "id": 4}', "CommandNotFound", "'nope'", 4),
    ('{"execute": "fork", "arguments": {"vm": "x"}, "id": "a"}',
     "InvalidArgument", "missing argument 'count'", "a"),
    ('{"execute": "fork", "arguments": {"vm": "x", "count": "2"}, "id": 5}',
     "InvalidArgument", "'count' must be an integer", 5),
    ('{"execute": "fork", "arguments": {"vm": 1, "count": 2}, "id": 6}',
     "InvalidArgument", "'vm' must be a string", 6),
    ('{"execute": "fork", "arguments": {"vm": "x", "count": 0}, "id": 7}',
     "InvalidArgument", "count must be 1..64", 7),
    ('{"execute": "info", "arguments": [1], "id": 8}', "InvalidArgument",
     "'arguments' must be an object", 8),
    ('{"execute": "info", "arguments": {"vm": "x", "extra": 1}, "id": 9}',
     "InvalidArgument", "unknown argument 'extra'", 9),
    ('{"execute": "info", "arguments": {"vm": "ghost"}, "id": 10}',
     "NotFound", "ghost", 10),
    ('{"execute": "start", "arguments": {"vm": "ghost"}, "id": 11}',
     "NotFound", "ghost", 11),
    ('{"execute": "subscribe", "arguments": {"events": ["NOPE"]}, "id": 12}',
     "InvalidArgument", "unknown event 'NOPE'", 12),
    ('{"execute": "define", "arguments": {"xml": "<domain/>"}, "id": 13}',
     "InvalidXML", "missing <name>", 13),
    ('{"execute": "kill", "arguments": {"vm": "x", "signal": "BOOM"}, '
     '"id": 14}', "InvalidArgument", "unknown signal", 14),
    # Not JSON text: json-glib would stop at the NUL and see nothing.
    ('\0{"execute": "list", "id": 15}', "ParseError", "NUL byte", None),
    ('{"execute": "list", "id": 16}\0', "ParseError", "NUL byte", None),
    ('{"execute": "subscribe", "arguments": {"count": -1}, "id": 17}',
     "InvalidArgument", "count must be", 17),
]


@pytest.mark.parametrize("line, cls, desc, rid", BAD,
                         ids=[b[1] + "-" + str(i) for i, b in enumerate(BAD)])
def test_bad_request_keeps_connection(sfd, line, cls, desc, rid):
    c = sfd.client()
    c.send_raw(line + "\n")
    r = c.recv_reply(10)
    assert r["error"]["class"] == cls, r
    assert desc in r["error"]["desc"], r
    assert r.get("id") == rid
    # The connection is still usable.
    assert c.cmd("version")["protocol"] == 1


def test_not_utf8(sfd):
    c = sfd.client()
    c.send_raw(b'{"execute": "info", "arguments": {"vm": "\xff\xfe"}}\n')
    r = c.recv_reply(10)
    assert r["error"]["class"] == "ParseError", r
    assert "UTF-8" in r["error"]["desc"], r
    assert c.cmd("version")["protocol"] == 1


def test_half_close_still_answered(sfd):
    """End of input means no more requests, not "client gone": every
    request already sent is answered, then sfd closes."""
    c = sfd.client()
    c.send_raw('{"execute": "version", "id": 1}\n{"execute": "list", "id": 2}'
               '\n{"execute": "nope", "id": 3}\n{"execute": "version"}')
    c.sock.shutdown(socket.SHUT_WR)
    got = [c.recv(10) for _ in range(4)]
    assert [g.get("id") for g in got] == [1, 2, 3, None], got
    assert got[2]["error"]["class"] == "CommandNotFound"
    assert got[3]["return"]["protocol"] == 1   # the last line had no \n
    with pytest.raises(EOFError):
        c.recv(10)


def test_half_closed_subscriber_stays(sfd):
    c = sfd.client()
    c.send_raw('{"execute": "subscribe", "id": 1}\n')
    c.sock.shutdown(socket.SHUT_WR)
    assert c.recv(10)["id"] == 1
    # Still connected: nothing arrives, but no end of stream either.
    c.sock.settimeout(1.0)
    with pytest.raises(socket.timeout):
        c.sock.recv(1)
    assert sfd.client().cmd("version")["protocol"] == 1


def test_blank_lines_and_pipelining(sfd):
    c = sfd.client()
    c.send_raw('\n  \n{"execute": "version", "id": 1}\r\n'
               '{"execute": "list", "id": 2}\n')
    assert c.recv_reply(10)["id"] == 1
    r = c.recv_reply(10)
    assert r["id"] == 2 and r["return"] == []


def test_huge_line(sfd):
    c = sfd.client()
    c.send_raw(b'{"execute": "define", "arguments": {"xml": "'
               + b"x" * (6 << 20) + b'"}, "id": 1}\n')
    r = c.recv_reply(30)
    assert r["error"]["class"] == "LineTooLong", r
    assert c.cmd("version")["protocol"] == 1
    # A huge line with no newline yet does not block others.
    c.send_raw(b"y" * (5 << 20))
    r = c.recv_reply(30)
    assert r["error"]["class"] == "LineTooLong"
    c.send_raw(b"\n")
    assert c.cmd("version")["protocol"] == 1
    assert sfd.client().cmd("version")["protocol"] == 1


def test_many_clients_at_once(sfd):
    errors = []

    def one(i):
        try:
            c = sfdlib.Client(sfd.socket)
            for _ in range(5):
                assert c.cmd("version")["protocol"] == 1
                assert c.cmd("list") == []
            c.send_raw("garbage\n")
            assert c.recv_reply(20)["error"]["class"] == "ParseError"
            c.close()
        except Exception as e:      # noqa: BLE001 - reported below
            errors.append(f"client {i}: {e!r}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sfd.proc.poll() is None


def test_client_gone_mid_request(sfd):
    c = sfd.client()
    c.send_raw('{"execute": "list", "id": 1}\n')
    c.close()
    assert sfd.client().cmd("version")["protocol"] == 1


def test_socat_and_jq(sfd):
    """The documented shell usage, verbatim in shape."""
    sh = (f"printf '%s\\n' '{{\"execute\":\"version\",\"id\":1}}' "
          f"'{{\"execute\":\"nope\",\"id\":2}}' "
          f"| socat -t 2 - UNIX-CONNECT:{sfd.socket} "
          f"| jq -c 'select(.id != null)'")
    out = subprocess.run(["sh", "-c", sh], capture_output=True, text=True,
                         timeout=20, check=True).stdout.splitlines()
    r = [json.loads(line) for line in out]
    assert r[0]["return"]["protocol"] == 1
    assert r[1]["error"]["class"] == "CommandNotFound"
    # Define through socat too.
    xml = sfdlib.domain_xml("viasocat", interface=False)
    req = json.dumps({"execute": "define", "arguments": {"xml": xml},
                      "id": 1})
    p = subprocess.run(["socat", "-t", "2", "-", f"UNIX-CONNECT:{sfd.socket}"],
                       input=req + "\n", capture_output=True, text=True,
                       timeout=20)
    last = json.loads(p.stdout.splitlines()[-1])
    assert last["return"]["name"] == "viasocat"


XML_CASES = [
    ("<domain><name>a</name><memory>262144</memory>"
     "<os><kernel>/k</kernel></os><features/></domain>",
     "unknown element <features>"),
    (sfdlib.domain_xml("a", clone="<sf:clone><sf:turbo/></sf:clone>"),
     "unknown element <sf:turbo>"),
    ("<?xml version='1.0'?><!DOCTYPE d [<!ENTITY lol 'lol'>"
     "<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]>"
     "<domain><name>&lol2;</name></domain>", "DOCTYPE"),
    ("<!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/shadow'>]>"
     "<domain><name>&x;</name></domain>", "DOCTYPE"),
    ("<domain><name>a</name><metadata>" + "<x>pad</x>" * 120000
     + "</metadata></domain>", "more than"),
    ("<domain><name>a</name>", "not well-formed"),
    ("<domain><name>a</name><memory>262144</memory>"
     "<os><kernel>/k</kernel></os><devices><memballoon model='xen'/>"
     "</devices></domain>", "only 'virtio' and 'none'"),
    ("<domain><name>a</name><memory>262144</memory>"
     "<os><kernel>/k</kernel></os><devices><memballoon model='virtio' "
     "freePageReporting='maybe'/></devices></domain>", "'on' or 'off'"),
]


@pytest.mark.parametrize("xml, msg", XML_CASES,
                         ids=["unknown", "unknown-sf", "entities",
                              "external-entity", "too-large", "truncated",
                              "balloon-model", "balloon-reporting"])
def test_define_rejects(sfd, tmp_path, xml, msg):
    f = tmp_path / "d.xml"
    f.write_text(xml)
    p = sfd.sfctl("define", f)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert msg in p.stderr
    assert sfd.client().cmd("list") == []


def test_sfctl(sfd, tmp_path):
    for cmd in ["define", "undefine", "start", "stop", "destroy", "kill",
                "list", "info", "fork", "clones", "events", "version"]:
        p = sfd.sfctl(cmd, "--help")
        assert p.returncode == 0 and f"usage: sfctl [OPTIONS] {cmd}" \
            in p.stdout, (cmd, p.stdout, p.stderr)
    p = sfd.sfctl("--help")
    assert p.returncode == 0 and "exit codes" in p.stdout
    assert sfd.sfctl("frobnicate").returncode == 2
    assert sfd.sfctl("fork", "web").returncode == 2          # missing N
    assert sfd.sfctl("fork", "web", "many").returncode == 2
    p = subprocess.run([sfdlib.SFCTL, "list"], capture_output=True,
                       text=True, env=dict(os.environ, SF_SOCKET="/nonexistent"))
    assert p.returncode == 3 and "cannot connect" in p.stderr
    p = subprocess.run([sfdlib.SFCTL, "--json", "list"], capture_output=True,
                       text=True, env=dict(os.environ, SF_SOCKET=sfd.socket))
    assert p.returncode == 0 and json.loads(p.stdout) == []

    f = tmp_path / "web.xml"
    f.write_text(sfdlib.domain_xml("web"))
    p = sfd.sfctl("define", f)
    assert p.returncode == 0 and "defined web" in p.stdout
    p = sfd.sfctl("list", json_out=True)
    assert p.json == [{"name": "web", "kind": "domain", "domain": "web",
                       "state": "shut off", "pid": 0, "ip": None,
                       "mac": None}]
    p = sfd.sfctl("info", "web", json_out=True)
    assert p.json["memory-mib"] == 256 and p.json["clones"] == []
    assert "state: shut off" in sfd.sfctl("info", "web").stdout
    assert sfd.sfctl("info", "ghost").returncode == 4
    assert sfd.sfctl("fork", "web", "2").returncode == 5     # not running
    assert sfd.sfctl("stop", "web").returncode == 5
    assert sfd.sfctl("undefine", "web").returncode == 0
    assert sfd.sfctl("undefine", "web").returncode == 4
    p = sfd.sfctl("define", "-", input=sfdlib.domain_xml("fromstdin"))
    assert p.returncode == 0, p.stderr


def test_definitions_survive_restart(sfd):
    c = sfd.client()
    xml = sfdlib.domain_xml("kept")
    c.cmd("define", xml=xml)
    sfd.kill()
    sfd.start()
    c = sfd.client()
    assert [v["name"] for v in c.cmd("list")] == ["kept"]
    assert c.cmd("info", vm="kept")["state"] == "shut off"
    # A second sfd on the same state directory is refused.
    other = sfdlib.Sfd()
    try:
        other.args[other.args.index("--state-dir") + 1] = sfd.state
        p = subprocess.run(other.args, capture_output=True, text=True,
                           timeout=10)
        assert p.returncode != 0 and "another sfd" in p.stderr
    finally:
        other.close()
