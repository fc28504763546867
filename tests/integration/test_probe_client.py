"""`bulwark probe client`: a recording relay between a vault or messenger
client under test and a real bulwarkd. Our own clients (`bulwark send`,
`bulwark msg`) go through it, then deviant clients written here, one per
kind it knows (src/cli/probe_check.c), each named by its case and only by
it."""

import os
import re
import signal
import socket
import struct
import subprocess

import pytest

import bwd
import bwmsg
import bwvault as bw
import ports
import probe_targets as pt
import reaper
from bwd import rsa_key, unique_name

H = "127.0.0.1"
KINDS = ("client.framing.padded", "client.framing.size_zero", "client.framing.size_wrong",
         "client.framing.one_write", "client.session.one_connection",
         "client.session.orderly_close", "client.content.version",
         "client.content.key_request_empty", "client.content.name_utf8",
         "client.content.name_field", "client.content.known_code")
FAILS = {"client.framing.size_wrong", "client.content.name_field", "client.content.known_code"}
LISTENING = "listening on 127.0.0.1:%d"


# --------------------------------------------------------------------------
# The client probe as a process


class ClientProbe:
    """`bulwark probe client --listen PORT --server 127.0.0.1:SERVER
    --json OPTS` running; PORT reserved (ports.py), started again on
    another if it was taken meanwhile. finish() waits for its end."""

    def __init__(self, tmp_path, server_port, *opts, count=None, duration=120):
        self.tmp_path = tmp_path
        for attempt in range(5):
            self.port = ports.reserve()
            self.argv = [str(bwd.BULWARK), "probe", "client", "--listen", str(self.port),
                         "--server", "%s:%d" % (H, server_port), "--json"] + [str(o) for o in opts]
            if count is not None:
                self.argv += ["--count", str(count)]
            if duration is not None:
                self.argv += ["--duration", str(duration)]
            self.out = tmp_path / ("cprobe-%d-%d.out" % (self.port, attempt))
            self.errf = tmp_path / ("cprobe-%d-%d.err" % (self.port, attempt))
            with open(self.out, "wb") as o, open(self.errf, "wb") as e:
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=o, stderr=e)
            reaper.watch(self.proc.pid)
            ready = bwd.wait_for(lambda: LISTENING % self.port in self.err()
                                 or self.proc.poll() is not None, 10)
            if ready and self.proc.poll() is None:
                return
            self.kill()
            if "cannot listen" not in self.err():
                raise AssertionError("the client probe did not start: %s\n%s" % (self.argv, self.err()))
        raise AssertionError("the client probe found no port to listen on")

    def err(self):
        try:
            return self.errf.read_text("utf-8", "replace")
        except OSError:
            return ""

    def finish(self, timeout=60):
        """Waits for the end (bounded); the run."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("the client probe did not end within %ds\n%s" % (timeout, self.err()))
        return pt.ProbeRun(self.argv, self.proc.returncode, self.out.read_text("utf-8", "replace"),
                           self.err())

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Ends the run by signal once every relayed connection is closed."""
        bwd.wait_for(lambda: not self.open_connections(), 10)
        self.proc.send_signal(sig)
        return self.finish(timeout)

    def open_connections(self):
        return [k for k, v in bwd.tcp_table().items()
                if k[0] == (H, self.port) and v[0] == bwd.TCP_ESTABLISHED]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def client_probe(tmp_path, client_bin):
    """Factory: client_probe(server_port, *opts, count=, duration=) -> a
    started ClientProbe, killed at teardown if still running."""
    made = []

    def start(server_port, *opts, count=None, duration=120):
        p = ClientProbe(tmp_path, server_port, *opts, count=count, duration=duration)
        made.append(p)
        return p

    yield start
    for p in made:
        p.kill()


def check_client_report(run, server_port, conns=None):
    rep = run.report
    assert rep is not None, run.describe()
    assert rep["protocol"] == "client"
    assert rep["server"] == "%s:%d" % (H, server_port)
    assert [c["id"] for c in rep["cases"]] == list(KINDS), [c["id"] for c in rep["cases"]]
    for c in rep["cases"]:
        assert c["section"].strip() and c["clause"].strip() and not c["hostile"], c
        if c["verdict"] == "PASS" and conns is not None:
            assert c["note"] == "never, in %d connections" % conns, c
    for v in pt.VERDICTS:
        assert rep["summary"][v.lower()] == sum(c["verdict"] == v for c in rep["cases"])
    assert [(v, i) for v, i, _ in run.stderr_lines()] == [
        (c["verdict"], c["id"]) for c in rep["cases"]], run.err


def findings(run):
    return {i: c["verdict"] for i, c in run.cases.items() if c["verdict"] != "PASS"}


# --------------------------------------------------------------------------
# Our own clients


@pytest.mark.parametrize("size", [100, 5000])
def test_bulwark_send_through_the_client_probe(server, client_dir, client_probe, size):
    """bulwark send keeps its session on one connection, frames every
    request exactly, with version 3 and well-formed names, closes in order,
    and sends each request in one piece: its header and payload are corked
    together (a 1028's ciphertext too, as the sender thread writes it), so
    a server that recv(1024)s once per request gets it whole. Nothing is
    found."""
    probe = client_probe(server.port, count=2)
    d = client_dir()
    f = d.write_file("data.bin", os.urandom(size))
    d.write_transfer(probe.port, unique_name("psend"), f)
    for _ in range(2):  # a registration, then a reconnection (1027)
        r = d.run()
        assert r.returncode == 0, bwd.describe(r)
    run = probe.finish()
    check_client_report(run, server.port, conns=2)
    assert findings(run) == {}, run.not_passed()
    assert run.rc == 0, run.describe()
    _, cid, _ = d.me_info()
    assert (server.client_dir(cid) / "data.bin").read_bytes() == f.read_bytes()


def msg_cli(d, port, *args):
    r = subprocess.run([str(bwd.BULWARK), "msg", "-C", str(d), "-s", "%s:%d" % (H, port),
                        "--timeout", "10"] + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, bwd.describe(r)
    return r.stdout.decode("utf-8", "replace")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_bulwark_msg_through_the_client_probe(server, tmp_path, client_probe, sig):
    """bulwark msg sends each request on a connection of its own (the
    messenger has no session), in one write, with version 2, closes in
    order after a pull: nothing to report. The run ends at the signal."""
    probe = client_probe(server.port)
    a, b = tmp_path / "alice", tmp_path / "bob"
    a.mkdir()
    b.mkdir()
    na, nb = unique_name("alice"), unique_name("bob")
    msg_cli(a, probe.port, "register", na)
    msg_cli(b, probe.port, "register", nb)
    assert nb in msg_cli(a, probe.port, "list")
    msg_cli(a, probe.port, "key", nb)
    msg_cli(a, probe.port, "request-key", nb)
    msg_cli(a, probe.port, "send-key", nb)
    msg_cli(a, probe.port, "send", nb, "hello through the probe")
    (a / "f.txt").write_bytes(b"a file\n")
    msg_cli(a, probe.port, "send-file", nb, str(a / "f.txt"))
    out = msg_cli(b, probe.port, "pull")
    assert "hello through the probe" in out, out
    run = probe.stop(sig)
    check_client_report(run, server.port)
    assert findings(run) == {}, run.not_passed()
    assert run.rc == 0
    n = int(run.cases["client.framing.padded"]["note"].split()[-2])
    assert n >= 10, run.cases["client.framing.padded"]["note"]


def test_nobody_connected_skips_every_case(server, client_probe, tmp_path):
    probe = client_probe(server.port, "--html", tmp_path / "c.html", duration=1)
    run = probe.finish()
    check_client_report(run, server.port)
    assert set(run.verdicts().values()) == {"SKIP"}, run.verdicts()
    assert all(c["note"] == "no client connected" for c in run.report["cases"])
    assert run.rc == 0
    page = (tmp_path / "c.html").read_text()
    assert all(k in page for k in KINDS)


# --------------------------------------------------------------------------
# Deviant clients, one per kind


def connect(port):
    s = socket.create_connection((H, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def end(s):
    """An orderly close: FIN, then what is left read to the other's close."""
    try:
        s.shutdown(socket.SHUT_WR)
        bw.recv_until_eof(s, limit=1 << 16)
    finally:
        s.close()


def reset(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def exchange(s, data, want=None):
    s.sendall(data)
    r = bw.read_response(s)
    if want is not None:
        assert r.code == want, r
    return r


def padded_reply(s, want):
    """A reply padded to 1024, then the server's close."""
    r = bw.read_response(s)
    assert r.code == want, r
    rest = bw.recv_until_eof(s, limit=2048)
    assert rest == bytes(len(rest)) and (7 + len(r.payload) + len(rest)) % 1024 == 0
    s.close()
    return r


def vreq(cid, code, payload, version=bw.VERSION):
    return bw.pack_request(cid, code, payload, version)


def mreq(cid, code, payload=b""):
    return bwmsg.pack_request(cid, code, payload)


def register_msg(port, name=None):
    """600 on a connection of its own: the new id."""
    s = connect(port)
    r = exchange(s, mreq(bw.ZERO_ID, bwmsg.REGISTER,
                         bw.name_field(name or unique_name("pc")) + bw.spki_der(rsa_key(1))),
                 bwmsg.REGISTERED)
    end(s)
    return r.payload


def c_padded(port):
    """The course sample: every request padded to 1024 bytes, the whole
    buffer in one send(), a connection each."""
    name = unique_name("pad")
    cid = bw.ZERO_ID
    for code, want in ((bw.REGISTER, bw.REGISTERED), (bw.RECONNECT, bw.RECONNECT_REFUSED)):
        s = connect(port)
        s.sendall(bwmsg.pad_to_unit(vreq(cid, code, bw.name_field(name))))
        cid = padded_reply(s, want).payload[:16]  # 2106 to the 1027: no key yet
    return 2


def c_size_zero(port):
    """The C++ course client's 602: payload size 0, the target id after
    the header, padded."""
    me = register_msg(port)
    s = connect(port)
    s.sendall(bwmsg.pad_to_unit(bw.pack_request_header(me, bwmsg.PUBKEY, 0, bwmsg.VERSION) + me))
    padded_reply(s, bwmsg.KEY)
    return 2


def c_size_wrong(port):
    """A 601 announcing 10 payload bytes (it has none)."""
    me = register_msg(port)
    s = connect(port)
    exchange(s, bw.pack_request_header(me, bwmsg.LIST, 10, bwmsg.VERSION) + b"0123456789",
             bwmsg.CLIENTS)
    end(s)
    return 2


def c_one_write(port):
    """A request's header, then (once the relay has read it) its payload:
    two writes."""
    s = connect(port)
    s.sendall(bw.pack_request_header(bw.ZERO_ID, bw.REGISTER, bw.NAME_SIZE))
    assert bwd.wait_for(lambda: bwd.read_by_peer(s), 10), "the relay did not read the header"
    s.sendall(bw.name_field(unique_name("split")))
    assert bw.read_response(s).code == bw.REGISTERED
    exchange(s, vreq(bw.ZERO_ID, bw.REGISTER, bw.name_field(unique_name("split"))), bw.REGISTERED)
    end(s)
    return 1


def c_one_connection(port):
    """A vault session of a connection per request, unpadded."""
    name = unique_name("onereq")
    s = connect(port)
    cid = exchange(s, vreq(bw.ZERO_ID, bw.REGISTER, bw.name_field(name)), bw.REGISTERED).payload
    end(s)
    s = connect(port)
    exchange(s, vreq(cid, bw.RECONNECT, bw.name_field(name)), bw.RECONNECT_REFUSED)
    end(s)
    return 2


def c_reset(port):
    """A reply read, then a reset instead of a close."""
    s = connect(port)
    exchange(s, vreq(bw.ZERO_ID, bw.REGISTER, bw.name_field(unique_name("rst"))), bw.REGISTERED)
    reset(s)
    return 1


def c_version(port):
    """Vault requests with version byte 9."""
    s = connect(port)
    for _ in range(2):
        exchange(s, vreq(bw.ZERO_ID, bw.REGISTER, bw.name_field(unique_name("v9")), version=9),
                 bw.REGISTERED)
    end(s)
    return 1


def c_key_request_content(port):
    """A key request (603 type 1) with content."""
    me = register_msg(port)
    s = connect(port)
    exchange(s, mreq(me, bwmsg.SEND, bwmsg.SEND_PREFIX.pack(me, bwmsg.KEY_REQUEST, 5) + b"hello"),
             bwmsg.STORED)
    exchange(s, mreq(me, bwmsg.PULL), bwmsg.WAITING)
    end(s)
    return 2


def c_name_not_utf8(port):
    """A name in Latin-1, not UTF-8."""
    s = connect(port)
    exchange(s, vreq(bw.ZERO_ID, bw.REGISTER, bw.raw_field(b"caf\xe9-" + os.urandom(4).hex().encode())),
             bw.REGISTERED)
    exchange(s, vreq(bw.ZERO_ID, bw.REGISTER, bw.name_field(unique_name("ascii"))), bw.REGISTERED)
    end(s)
    return 1


def c_name_no_nul(port):
    """A name field of 255 letters, no NUL."""
    s = connect(port)
    exchange(s, vreq(bw.ZERO_ID, bw.REGISTER, bw.name_field(unique_name("ok"))), bw.REGISTERED)
    exchange(s, vreq(bw.ZERO_ID, bw.REGISTER, b"x" * bw.NAME_SIZE), bw.ERROR)
    end(s)
    return 1


def c_unknown_code(port):
    """A request code neither protocol has."""
    s = connect(port)
    for _ in range(2):
        exchange(s, vreq(bw.ZERO_ID, bw.REGISTER, bw.name_field(unique_name("ok"))), bw.REGISTERED)
    exchange(s, vreq(bw.ZERO_ID, 1099, bw.name_field("what")), bw.ERROR)
    end(s)
    return 1


# kind: (client, its connections, {case: (verdict, connections that
# showed it)}, what the main case's example says)
DEVIANTS = {
    "padded": (c_padded, 2, {"client.framing.padded": ("DEVIATION", 2)},
               "1025 padded to 1024 bytes"),
    "size_zero": (c_size_zero, 2, {"client.framing.size_zero": ("DEVIATION", 1),
                                   "client.framing.padded": ("DEVIATION", 1)},
                  "602 with payload size 0"),
    "size_wrong": (c_size_wrong, 2, {"client.framing.size_wrong": ("FAIL", 1)},
                   "601 announcing 10 payload bytes for 0"),
    "one_write": (c_one_write, 1, {"client.framing.one_write": ("DEVIATION", 1)},
                  "1025 in 2 writes"),
    "one_connection": (c_one_connection, 2, {"client.session.one_connection": ("DEVIATION", 2)},
                       "then the connection closed"),
    "reset": (c_reset, 1, {"client.session.orderly_close": ("DEVIATION", 1)}, "a reset after"),
    "version": (c_version, 1, {"client.content.version": ("DEVIATION", 1)},
                "1025 with version 9"),
    "key_request_content": (c_key_request_content, 2,
                            {"client.content.key_request_empty": ("DEVIATION", 1)},
                            "603 type 1 with 5 bytes of content"),
    "name_not_utf8": (c_name_not_utf8, 1, {"client.content.name_utf8": ("DEVIATION", 1)},
                      "a name that is not UTF-8"),
    "name_no_nul": (c_name_no_nul, 1, {"client.content.name_field": ("FAIL", 1)},
                    "no NUL in the name field"),
    "unknown_code": (c_unknown_code, 1, {"client.content.known_code": ("FAIL", 1)}, "code 1099"),
}


@pytest.mark.parametrize("kind", sorted(DEVIANTS))
def test_a_deviant_client_is_named_by_its_case(server, client_probe, kind):
    """The deviant's connections through the probe, relayed to bulwarkd
    (which serves them all): its case, and only it, is not PASS, with the
    verdict of its kind, the number of connections that showed it and an
    example."""
    fn, conns, want, example = DEVIANTS[kind]
    probe = client_probe(server.port, count=conns)
    assert fn(probe.port) == conns
    run = probe.finish()
    check_client_report(run, server.port, conns=conns)
    assert findings(run) == {c: v for c, (v, _) in want.items()}, run.not_passed()
    for case, (_, n) in want.items():
        note = run.cases[case]["note"]
        assert note.startswith("%d of %d connections; connection " % (n, conns)), note
    main = next(iter(want))
    assert example in run.cases[main]["note"], run.cases[main]
    assert run.rc == (1 if set(want) & FAILS else 0), run.describe()
    assert server.alive()


def test_strict_makes_a_deviant_client_exit_1(server, client_probe):
    probe = client_probe(server.port, "--strict", count=1)
    c_version(probe.port)
    run = probe.finish()
    assert findings(run) == {"client.content.version": "DEVIATION"}, run.not_passed()
    assert run.rc == 1, run.describe()


def test_every_kind_at_once_is_counted_per_connection(server, client_probe, tmp_path):
    """Every deviant through one run: each case counts the connections
    that showed it, and the HTML page holds every case."""
    page = tmp_path / "clients.html"
    total = sum(d[1] for d in DEVIANTS.values())
    probe = client_probe(server.port, "-v", "--html", page, count=total)
    for fn, conns, _, _ in DEVIANTS.values():
        assert fn(probe.port) == conns
    run = probe.finish()
    check_client_report(run, server.port)
    assert set(findings(run)) == set(KINDS), run.not_passed()
    expect = {}
    for _, _, want, _ in DEVIANTS.values():
        for case, (_, n) in want.items():
            expect[case] = expect.get(case, 0) + n
    assert expect["client.framing.padded"] == 3  # the padded client's 2, the size-0 602
    for case, n in expect.items():
        assert run.cases[case]["note"].startswith("%d of %d connections;" % (n, total)), (
            case, run.cases[case]["note"])
    assert run.rc == 1
    text = page.read_text()
    assert all(k in text for k in KINDS)
    # -v: each deviation on stderr as it is seen
    assert "framing.padded" in run.err and "content.known_code" in run.err
