"""bulwarkd's count of how its clients bend the protocols (docs/console.md
"DEVS", docs/conformance.md): each kind once per connection that shows
it, per client (the id in the requests' headers, else the address), in
the console's DEVS (most recently seen first, the registered name beside
an id, the totals since start), in the metrics'
bulwark_client_deviations_total{kind=...} and in an event=client_deviates
log line each.

Clients are told apart by source address: all of 127.0.0.0/8 reaches
127.0.0.1, so a client bound to 127.0.0.5 is addr:127.0.0.5."""

import re
import socket
import struct
import time

import pytest

import bwd
import bwmsg
import bwrooms
import bwvault as bw
import ports
import probe_targets as pt
from bwd import rsa_key, unique_name

H = "127.0.0.1"
KINDS = ("padded", "size-zero", "size-over", "one-request", "unread-reply", "name-not-utf8",
         "line-pause", "text-not-utf8")
METRIC_RE = re.compile(r'^bulwark_client_deviations_total\{([^}]*)\} (\d+)$', re.M)
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")


# --------------------------------------------------------------------------
# bulwarkd with its console, its rooms and its metrics


@pytest.fixture
def dsrv(start_server):
    """bulwarkd with the console, the rooms and the metrics (on a reserved
    port, started again on another if it was taken meanwhile)."""
    last = None
    for _ in range(5):
        port = ports.reserve()
        try:
            srv = start_server("--metrics-listen", "%s:%d" % (H, port), console=True, rooms=True)
        except AssertionError as e:
            if "in use" not in str(e):
                raise
            last = e
            continue
        srv.metrics_port = port
        return srv
    raise last


def console_request(srv, req=b"DEVS"):
    """One request on the console (Hi, the greeting, the reply, EXIT)."""
    with socket.create_connection((H, srv.console_port), timeout=10) as s:
        s.sendall(b"Hi" + req + b"EXIT")
        g = bw.recv_exact(s, 48)
        assert len(g) == 48, g
        n = bw.recv_exact(s, 4)
        assert re.fullmatch(rb"\d{4}", n), n
        text = bw.recv_exact(s, int(n))
        assert len(text) == int(n)
        assert bw.recv_exact(s, 7) == b"0003bye"
    return text.decode("utf-8")


class Devs:
    """DEVS parsed: totals {kind: n}, rows [(who, name, {kind: n}, last
    seen)] in their order."""

    def __init__(self, text):
        self.text = text
        lines = text.split("\n")
        assert lines[-1] == "", "no newline at the end: %r" % text
        lines = lines[:-1]
        m = re.fullmatch(r"since start: (.*)", lines[0])
        assert m, text
        self.totals = {} if m.group(1) == "none" else kinds(m.group(1))
        self.rows = []
        if len(lines) == 1:
            assert m.group(1) == "none", text
            return
        assert lines[1] == "client\tname\tkinds (connections)\tlast seen", text
        for ln in lines[2:]:
            f = ln.split("\t")
            assert len(f) == 4, ln
            assert re.fullmatch(r"id:[0-9a-f]{32}|addr:[0-9a-f.:]+", f[0]), ln
            assert ISO_RE.match(f[3]), ln
            self.rows.append((f[0], f[1], kinds(f[2]), f[3]))

    def row(self, who):
        rows = [r for r in self.rows if r[0] == who]
        assert len(rows) <= 1, rows
        return rows[0] if rows else None

    def whos(self):
        return [r[0] for r in self.rows]


def kinds(text):
    out = {}
    for item in text.split(" "):
        k, eq, n = item.partition("=")
        assert eq and k in KINDS and n.isdigit() and int(n) > 0, text
        assert k not in out, text
        out[k] = int(n)
    assert list(out) == [k for k in KINDS if k in out], "kinds not in their order: %r" % text
    return out


def devs(srv):
    return Devs(console_request(srv))


def metrics(srv):
    """{kind: value} of bulwark_client_deviations_total."""
    with socket.create_connection((H, srv.metrics_port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        body = bw.recv_until_eof(s, limit=8 << 20).decode("utf-8", "replace")
    out = {}
    for labels, value in METRIC_RE.findall(body):
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        assert "node" in lab and lab["kind"] not in out, labels
        out[lab["kind"]] = int(value)
    return out


def log_counts(srv):
    """{(client, kind): lines} of the event=client_deviates lines."""
    out = {}
    for who, kind in re.findall(r"event=client_deviates .*?client=(\S+) kind=(\S+)", srv.log()):
        out[(who, kind)] = out.get((who, kind), 0) + 1
    return out


# --------------------------------------------------------------------------
# Clients


def connect(srv, src=None, port=None):
    s = socket.socket()
    if src is not None:
        s.bind((src, 0))
    s.settimeout(10)
    s.connect((H, port or srv.port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def end(s):
    """Closes in order, what is left read: a FIN, never a reset."""
    try:
        s.shutdown(socket.SHUT_WR)
        bw.recv_until_eof(s, limit=1 << 16)
    finally:
        s.close()


def padded_reply(s, want):
    r = bw.read_response(s)
    assert r.code == want, r
    rest = bw.recv_until_eof(s, limit=4096)
    assert rest == bytes(len(rest))
    s.close()
    return r


def vault_user(srv, src=None):
    """A vault client registered with a key on one connection (two
    requests: nothing bent). (name, id)."""
    name = unique_name("dv")
    c = bw.VaultClient(H, srv.port, key=rsa_key(2))
    if src is not None:
        c.sock = connect(srv, src)
    else:
        c.connect()
    bw.expect(c.register(name), bw.REGISTERED)
    bw.expect(c.send_pubkey(), bw.KEY_STORED)
    end(c.sock)
    return name, c.client_id


def msg_user(srv, src=None, raw_name=None):
    """A messenger client registered by a 600 on a connection of its own
    (the messenger has no session: nothing bent). (name, id)."""
    name = raw_name if raw_name is not None else unique_name("dm").encode()
    s = connect(srv, src)
    s.sendall(bwmsg.pack_request(bw.ZERO_ID, bwmsg.REGISTER,
                                 bw.raw_field(name + b"\0") + bw.spki_der(rsa_key(3))))
    r = bw.read_response(s)
    assert r.code == bwmsg.REGISTERED, r
    end(s)
    return name, r.payload


def vreq(cid, code, payload):
    return bw.pack_request(cid, code, payload)


def mhead(cid, code, size):
    return bw.pack_request_header(cid, code, size, bwmsg.VERSION)


# --------------------------------------------------------------------------
# Tests


def test_no_deviation_yet_says_none(dsrv):
    assert console_request(dsrv) == "since start: none\n"
    assert metrics(dsrv) == {k: 0 for k in KINDS}
    # clients that bend nothing leave it so
    vault_user(dsrv)
    msg_user(dsrv)
    with bwrooms.RoomClient(dsrv.rooms_port) as c:
        c.create(unique_name("r"), "pw")
        c.leave()
    assert console_request(dsrv) == "since start: none\n"
    assert metrics(dsrv) == {k: 0 for k in KINDS}
    assert "event=client_deviates" not in dsrv.log()


def test_devs_lists_each_client_with_its_kinds(dsrv):
    srv = dsrv
    want = {}  # who -> {kind: connections}

    def saw(who, kind, n=1):
        want.setdefault(who, {})
        want[who][kind] = want[who].get(kind, 0) + n

    # padded, from 127.0.0.2 (a 1025 has no id), a connection each (the
    # padded style ends the connection after its reply: two padded
    # requests are two connections)
    for _ in range(2):
        s = connect(srv, "127.0.0.2")
        s.sendall(bwmsg.pad_to_unit(vreq(bw.ZERO_ID, bw.REGISTER,
                                         bw.name_field(unique_name("p2")))))
        padded_reply(s, bw.REGISTERED)
    saw("addr:127.0.0.2", "padded", 2)

    # padded, with an id: the registered client's name beside it
    p_name, p_id = vault_user(srv)
    s = connect(srv)
    s.sendall(bwmsg.pad_to_unit(vreq(p_id, bw.RECONNECT, bw.name_field(p_name))))
    padded_reply(s, bw.RECONNECTED)
    saw("id:" + p_id.hex(), "padded")

    # size-zero: the C++ course client's 602 (size 0, the id, padding),
    # then two 603s of size 0 on one kept connection: once per connection,
    # one more
    s_name, s_id = msg_user(srv)
    s = connect(srv)
    s.sendall(bwmsg.pad_to_unit(mhead(s_id, bwmsg.PUBKEY, 0) + s_id))
    padded_reply(s, bwmsg.KEY)
    s = connect(srv)
    for _ in range(2):
        s.sendall(mhead(s_id, bwmsg.SEND, 0) + bwmsg.SEND_PREFIX.pack(s_id, 3, 16) + b"x" * 16)
        assert bw.read_response(s).code == bwmsg.STORED
    s.sendall(mhead(s_id, bwmsg.PULL, 0))
    assert bw.read_response(s).code == bwmsg.WAITING
    end(s)
    saw("id:" + s_id.hex(), "padded")
    saw("id:" + s_id.hex(), "size-zero", 2)

    # size-over: 601 with a payload, twice on one connection; a 604 with
    # one on another
    o_name, o_id = msg_user(srv)
    s = connect(srv)
    for _ in range(2):
        s.sendall(mhead(o_id, bwmsg.LIST, 10) + b"0123456789")
        assert bw.read_response(s, max_payload=1 << 24).code == bwmsg.CLIENTS
    end(s)
    s = connect(srv)
    s.sendall(mhead(o_id, bwmsg.PULL, 5) + b"abcde")
    assert bw.read_response(s).code == bwmsg.WAITING
    end(s)
    saw("id:" + o_id.hex(), "size-over", 2)

    # one-request: a 1025 alone on its connection (from 127.0.0.4), and a
    # registered client's 1027 alone
    s = connect(srv, "127.0.0.4")
    s.sendall(vreq(bw.ZERO_ID, bw.REGISTER, bw.name_field(unique_name("one"))))
    assert bw.read_response(s).code == bw.REGISTERED
    end(s)
    saw("addr:127.0.0.4", "one-request")
    q_name, q_id = vault_user(srv)
    s = connect(srv)
    s.sendall(vreq(q_id, bw.RECONNECT, bw.name_field(q_name)))
    assert bw.read_response(s).code == bw.RECONNECTED
    end(s)
    saw("id:" + q_id.hex(), "one-request")

    # unread-reply: a pull read whole, then a reset (once bulwarkd has done
    # with the request: test_unread_reply_* below is about the moment)
    r_name, r_id = msg_user(srv)
    s = connect(srv)
    s.sendall(bwmsg.pack_request(r_id, bwmsg.SEND, bwmsg.SEND_PREFIX.pack(r_id, 3, 16) + b"y" * 16))
    assert bw.read_response(s).code == bwmsg.STORED
    end(s)
    s = connect(srv)
    s.sendall(bwmsg.pack_request(r_id, bwmsg.PULL))
    r = bw.read_response(s)
    assert r.code == bwmsg.WAITING and len(bwmsg.parse_records(r.payload)) == 1
    assert bwd.wait_for(srv.asleep, 10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    saw("id:" + r_id.hex(), "unread-reply")

    # name-not-utf8: a Latin-1 name in a 600 (from 127.0.0.5: a 600 has
    # no id); then that client, by its id, bends a size: its name shown
    # escaped
    n_raw = b"caf\xe9-" + unique_name("l1").encode()
    _, n_id = msg_user(srv, "127.0.0.5", raw_name=n_raw)
    saw("addr:127.0.0.5", "name-not-utf8")
    s = connect(srv)
    s.sendall(mhead(n_id, bwmsg.LIST, 3) + b"abc")
    assert bw.read_response(s, max_payload=1 << 24).code == bwmsg.CLIENTS
    end(s)
    saw("id:" + n_id.hex(), "size-over")

    # the rooms: a line ended by a pause (the seed's client), a line that
    # is not UTF-8
    with bwrooms.RoomClient(srv.rooms_port, source="127.0.0.6") as c:
        c.send("3")  # no newline: the pause ends it
        assert c.wait_closed() == [bwrooms.EXIT_MENU]
    saw("addr:127.0.0.6", "line-pause")
    with bwrooms.RoomClient(srv.rooms_port, source="127.0.0.7") as c:
        c.send(b"\xff\xfe\n")
        c.expect(bwrooms.MENU_LAST)
        c.line("3")
        c.wait_closed()
    saw("addr:127.0.0.7", "text-not-utf8")

    # and clients that bend nothing, from 127.0.0.8
    _, c_id = vault_user(srv, "127.0.0.8")
    _, m_id = msg_user(srv, "127.0.0.8")
    with bwrooms.RoomClient(srv.rooms_port, source="127.0.0.8") as c:
        c.create(unique_name("r"), "pw")
        c.line("a line")
        c.leave()

    assert bwd.wait_for(lambda: len(devs(srv).rows) == len(want), 10), devs(srv).text
    d = devs(srv)
    got = {who: k for who, _, k, _ in d.rows}
    assert got == want, d.text
    for absent in ("addr:127.0.0.8", "id:" + c_id.hex(), "id:" + m_id.hex(), "addr:127.0.0.1"):
        assert d.row(absent) is None, d.text

    # names: an id's registered name (a name not UTF-8 escaped), an
    # address's "-"
    names = {who: name for who, name, _, _ in d.rows}
    assert names["id:" + p_id.hex()] == p_name
    assert names["id:" + s_id.hex()] == s_name.decode()
    assert names["id:" + o_id.hex()] == o_name.decode()
    assert names["id:" + q_id.hex()] == q_name
    assert names["id:" + r_id.hex()] == r_name.decode()
    assert names["id:" + n_id.hex()] == "caf\\xe9-" + n_raw[5:].decode()
    assert all(names[w] == "-" for w in names if w.startswith("addr:")), names

    # most recently seen first
    seen = [r[3] for r in d.rows]
    assert seen == sorted(seen, reverse=True), d.text

    # the totals since start, the metrics and the log agree with the rows
    totals = {}
    for k in want.values():
        for kind, n in k.items():
            totals[kind] = totals.get(kind, 0) + n
    assert set(totals) == set(KINDS)
    assert d.totals == totals, d.text
    assert metrics(srv) == totals
    logged = log_counts(srv)
    assert logged == {(who, kind): n for who, k in want.items() for kind, n in k.items()}, logged


def test_a_client_seen_again_moves_to_the_top(dsrv):
    """Most recently seen first: last seen has a resolution of a second,
    so each deviation here waits for the next second."""
    def one_request(src):
        s = connect(dsrv, src)
        s.sendall(vreq(bw.ZERO_ID, bw.REGISTER, bw.name_field(unique_name("top"))))
        assert bw.read_response(s).code == bw.REGISTERED
        end(s)

    def next_second():
        t = int(time.time())
        assert bwd.wait_for(lambda: int(time.time()) > t, 3)

    order = []
    for src in ("127.0.0.21", "127.0.0.22", "127.0.0.21"):
        one_request(src)
        order.append(src)
        assert bwd.wait_for(lambda: (devs(dsrv).row("addr:" + src) or (0, 0, {}))[2].get(
            "one-request", 0) == order.count(src), 10), devs(dsrv).text
        next_second()
        d = devs(dsrv)
        assert d.whos()[0] == "addr:" + src, d.text
    d = devs(dsrv)
    assert d.whos() == ["addr:127.0.0.21", "addr:127.0.0.22"], d.text
    assert d.row("addr:127.0.0.21")[2] == {"one-request": 2}
    assert d.totals == {"one-request": 3}


def test_unread_reply_counted_when_the_probe_resets_after_its_pull(dsrv):
    """msg.pull.reset_keeps: the probe pulls on a connection of its own,
    reads the 2104 and resets at once. That reset is an unread-reply of
    the probe's second user (whose messages stay queued), whatever
    bulwarkd was still doing with the pull when it came. Three runs: one
    that counts it by luck of timing is not enough."""
    for _ in range(3):
        run = pt.run_probe("msg", dsrv.port)
        assert run.verdict("msg.pull.reset_keeps") == "PASS", run.describe()
        tag = run.report["run"]
        d = devs(dsrv)
        peers = [r for r in d.rows if r[1].startswith("peer") and tag in r[1]]
        assert len(peers) == 1, "the probe's second user (peer...%s) is not listed:\n%s\n%s" % (
            tag, d.text, "\n".join(ln for ln in dsrv.log().splitlines()
                                   if "closed: connection error" in ln)[-2000:])
        assert peers[0][2].get("unread-reply") == 1, (peers, d.text)


def test_the_probe_itself_shows_in_devs(dsrv):
    """The vault suite's one-request-per-connection cases and its padded
    case are deviations by design: bulwarkd counts them under the probe's
    address and users, and the totals are the metrics'."""
    run = pt.run_probe("vault", dsrv.port)
    assert run.rc == 0, run.describe()
    d = devs(dsrv)
    assert d.totals.get("one-request", 0) > 0 and d.totals.get("padded", 0) >= 1, d.text
    row = d.row("addr:127.0.0.1")
    assert row is not None and row[2].get("one-request", 0) > 0, d.text
    assert metrics(dsrv) == {k: d.totals.get(k, 0) for k in KINDS}
    assert sum(sum(r[2].values()) for r in d.rows) == sum(d.totals.values()), d.text
