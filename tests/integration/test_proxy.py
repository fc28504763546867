"""bulwarkd behind a load balancer (--proxy-from): the PROXY header (v1
and v2) names the client, and that address, not the balancer's, is what
every per-address limit counts and the log shows; a balancer's connection
without a valid header, or a header from anyone else, is closed; health
checks (a v2 LOCAL header, or a connect and a reset) are served quietly.
First with headers written here byte by byte, then behind a real HAProxy
(Debian's package) sending send-proxy-v2 and checking the node."""

import os
import socket
import struct
import time

import pytest

import bwd
import bwmsg
import bwrooms as R
import bwvault as bw
import haproxy
from bwd import rsa_key, unique_name, wait_for

H = "127.0.0.1"
LB = "127.0.0.9"  # the balancer's address: --proxy-from
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src, sport=40000, dst="127.0.0.1", dport=1357):
    fam = "TCP6" if ":" in src else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def v2(src, sport=40000, dst="127.0.0.1", dport=1357, local=False, tlv=b""):
    if local:
        return V2_SIG + b"\x20\x00\x00\x00"
    addr = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">HH", sport, dport)
    body = addr + tlv
    return V2_SIG + b"\x21\x11" + struct.pack(">H", len(body)) + body


HEADERS = {"v1": v1, "v2": v2}


def connect(port, source=LB):
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(10)
    s.connect((H, port))
    return s


def register_request(name):
    return bwmsg.pack_request(bytes(16), bwmsg.REGISTER,
                              bw.name_field(name) + bw.spki_der(rsa_key(0)))


def answer(s):
    """The code of the reply on s, or None if it closed without one."""
    try:
        head = bw.recv_exact(s, bw.RESP_HEADER_SIZE)
    except (ConnectionError, AssertionError, EOFError, OSError):
        return None
    if len(head) < bw.RESP_HEADER_SIZE:
        return None
    _, code, size = bw.RESP_HEADER.unpack(head)
    if size:
        bw.recv_exact(s, size)
    return code


def closed(s, timeout=5):
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def metric(srv, name):
    """One sample of the node's /metrics (its labels but the node's in
    name), as a number."""
    import re
    import urllib.request

    with urllib.request.urlopen("http://%s:%d/metrics" % (H, srv.ports["metrics"]),
                                timeout=10) as r:
        text = r.read().decode()
    fam, _, labels = name.partition("{")
    want = r'^%s\{node="[\w.-]+"%s\} (\S+)$' % (
        re.escape(fam), ("," + re.escape(labels[:-1])) if labels else "")
    m = re.search(want, text, re.M)
    assert m, "no %s in\n%s" % (name, text)
    return float(m.group(1))


def register_as(port, header, name):
    with connect(port) as s:
        s.sendall(header + register_request(name))
        return answer(s)


@pytest.fixture
def behind(start_server):
    def start(*extra):
        return start_server("--proxy-from", LB + ", 10.255.0.0/16", *extra, rooms=True)
    return start


@pytest.mark.parametrize("ver", ["v1", "v2"])
def test_the_header_names_the_client_every_limit_counts(behind, ver):
    srv = behind("--max-reg-per-min", "2")
    hdr = HEADERS[ver]
    # two registrations a minute from 10.0.0.1, wherever they come through
    assert register_as(srv.port, hdr("10.0.0.1"), unique_name("a")) == bwmsg.REGISTERED
    assert register_as(srv.port, hdr("10.0.0.1", 40001), unique_name("b")) == bwmsg.REGISTERED
    assert register_as(srv.port, hdr("10.0.0.1", 40002), unique_name("c")) == bwmsg.ERROR
    # another client through the same balancer is not held back by it
    assert register_as(srv.port, hdr("10.0.0.2"), unique_name("d")) == bwmsg.REGISTERED
    # nor is the balancer's own address, or a direct client
    c = bwmsg.MsgClient(H, srv.port)
    c.register(unique_name("direct"), key=rsa_key(1))
    c.close()
    log = srv.log()
    assert "10.0.0.1:40002" in log, log[-3000:]  # the refusal names the client
    assert "PROXY" not in log or "no valid PROXY" not in log


def test_connections_per_address_count_the_named_client(behind):
    srv = behind("--max-conns-per-addr", "2")
    held = [connect(srv.port) for _ in range(2)]
    for i, s in enumerate(held):
        s.sendall(v2("10.0.0.7", 41000 + i))
    third = connect(srv.port)
    third.sendall(v2("10.0.0.7", 41002))
    assert closed(third), "a third connection of 10.0.0.7 was kept"
    assert wait_for(lambda: "connections from 10.0.0.7:41002 at the limit (2)" in srv.log(), 5)
    # another client through the balancer is served: the balancer's own
    # address holds more than two connections now
    other = connect(srv.port)
    other.sendall(v2("10.0.0.8") + register_request(unique_name("o")))
    assert answer(other) == bwmsg.REGISTERED
    for s in held + [third, other]:
        s.close()


def test_one_client_is_one_address_however_its_header_spells_it(behind):
    """A v1 header carries the source as text: '2001:db8::7', '2001:db8:0::7'
    and another host of the same /64 were three addresses, each with its
    own share; and an IPv4 client named as '::ffff:10.0.0.9' by one
    balancer and '10.0.0.9' by another, two. Each is one now."""
    srv = behind("--max-conns-per-addr", "2")

    def served(header):
        s = connect(srv.port)
        s.sendall(header + register_request(unique_name("p")))
        assert answer(s) == bwmsg.REGISTERED, (header, srv.log_tail())
        return s

    socks = [served(v1("2001:db8::7", 41000, "::1")), served(v1("2001:db8:0::7", 41001, "::1"))]
    third = connect(srv.port)
    socks.append(third)
    third.sendall(v1("2001:db8::8", 41002, "::1"))  # the same /64
    assert closed(third), "a third connection of 2001:db8::/64 was kept"
    assert wait_for(lambda: "connections from 2001:db8::8:41002 at the limit (2)" in srv.log(),
                    5), srv.log_tail()
    socks += [served(v1("::ffff:10.0.0.9", 41003, "::1")), served(v1("10.0.0.9", 41004))]
    fourth = connect(srv.port)
    socks.append(fourth)
    fourth.sendall(v2("10.0.0.9", 41005))
    assert closed(fourth), "a third connection of 10.0.0.9 was kept"
    assert wait_for(lambda: "connections from 10.0.0.9:41005 at the limit (2)" in srv.log(),
                    5), srv.log_tail()
    socks.append(served(v1("2001:db8:0:1::7", 41006, "::1")))  # another /64
    for s in socks:
        s.close()


def test_a_header_in_pieces_then_the_request_in_the_same_segment(behind):
    srv = behind()
    name = unique_name("p")
    with connect(srv.port) as s:
        for b in v1("10.255.1.2"):  # a byte at a time
            s.sendall(bytes([b]))
            time.sleep(0.002)
        s.sendall(register_request(name))
        assert answer(s) == bwmsg.REGISTERED
    # v2 with TLVs after the addresses, and the request in the same write
    tlv = b"\x04\x00\x04test" + b"\x03\x00\x04\x00\x00\x00\x00"
    with connect(srv.port) as s:
        s.sendall(v2("10.255.1.3", tlv=tlv) + register_request(unique_name("q")))
        assert answer(s) == bwmsg.REGISTERED


@pytest.mark.parametrize("what", ["no-header", "garbage", "v1-too-long", "v2-udp"])
def test_a_balancers_connection_without_a_valid_header_is_closed(behind, what):
    srv = behind()
    bad = {"no-header": register_request(unique_name("n")),
           "garbage": b"GET / HTTP/1.0\r\n\r\n",
           "v1-too-long": b"PROXY TCP4 " + b"1" * 120 + b"\r\n",
           "v2-udp": V2_SIG + b"\x21\x12\x00\x0c" + bytes(12)}[what]
    with connect(srv.port) as s:
        s.sendall(bad)
        assert answer(s) is None, "a reply without a valid header"
    assert wait_for(lambda: "no valid PROXY header from the proxy %s" % LB in srv.log(), 5)
    assert srv.alive()


@pytest.mark.parametrize("ver", ["v1", "v2"])
def test_a_header_from_anyone_else_is_closed(behind, ver):
    srv = behind()
    with connect(srv.port, source="127.0.0.1") as s:
        s.sendall(HEADERS[ver]("10.0.0.1") + register_request(unique_name("x")))
        assert answer(s) is None, "a client chose the address it is counted under"
    assert wait_for(lambda: "not a --proxy-from address" in srv.log(), 5)
    # the same client without a header is served as usual
    with connect(srv.port, source="127.0.0.1") as s:
        s.sendall(register_request(unique_name("y")))
        assert answer(s) == bwmsg.REGISTERED


def test_health_checks_are_served_quietly(behind):
    srv = behind()
    before = srv.log().count("\n")
    for _ in range(5):
        with connect(srv.port) as s:  # HAProxy's check: LOCAL, then a reset
            s.sendall(v2("", local=True))
            time.sleep(0.02)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with connect(srv.port) as s:  # a connect and a reset, no bytes
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # a LOCAL connection is the balancer's own: served under its address
    with connect(srv.port) as s:
        s.sendall(v2("", local=True) + register_request(unique_name("l")))
        assert answer(s) == bwmsg.REGISTERED
    time.sleep(0.3)
    new = srv.log().splitlines()[before:]
    noisy = [ln for ln in new if "register" not in ln]
    assert noisy == [], "health checks were logged: %r" % noisy


def test_rooms_wait_for_the_header_before_the_menu(behind):
    srv = behind()
    c = R.RoomClient(srv.ports["rooms"], source=LB, greet=False)
    try:
        c.pump(0.3)
        assert c.seen == b"", "the menu came before the header"
        c.send(v1("10.0.3.4", dport=srv.ports["rooms"]))
        c.expect(R.MENU_LAST)
    finally:
        c.close()


def test_a_balancer_that_never_sends_the_header_is_closed_in_time(behind):
    srv = behind("--request-timeout", "1")
    with connect(srv.port) as s:
        s.sendall(b"PROX")
        assert closed(s, timeout=8), "a connection without its header was kept"
    assert "request deadline passed" in srv.log()


def test_behind_haproxy_the_real_address_counts(behind):
    if not haproxy.installed():
        if os.environ.get("BULWARK_REQUIRE_BINARIES"):
            pytest.fail("haproxy is not installed (scripts/deps test)")
        pytest.skip("haproxy is not installed")
    srv = behind("--max-reg-per-min", "1", "--metrics-listen", H + ":0")
    lb = haproxy.HaProxy({"shared": [(H, srv.port)], "rooms": [(H, srv.ports["rooms"])]},
                         source=LB).start()
    try:
        assert wait_for(lambda: lb.servers_up("shared") == 1, 10), lb.admin("show servers state")
        port = lb.ports["shared"]

        def register_from(source):
            with connect(port, source=source) as s:
                s.sendall(register_request(unique_name("h")))
                return answer(s)

        # one registration a minute per client address, seen through HAProxy
        assert register_from("127.0.0.21") == bwmsg.REGISTERED
        assert register_from("127.0.0.21") == bwmsg.ERROR
        assert register_from("127.0.0.22") == bwmsg.REGISTERED
        assert "127.0.0.21:" in srv.log()
        # the whole exchange through the balancer, as a client would
        a, b = bwmsg.MsgClient(H, port), bwmsg.MsgClient(H, port)
        a.sock, b.sock = connect(port, source="127.0.0.23"), connect(port, source="127.0.0.24")
        a.register(unique_name("via"), key=rsa_key(2))
        b.register(unique_name("via"), key=rsa_key(3))
        assert a.name in [n for _, n in b.list()]
        mid = a.send(b.client_id, 3, b"through the balancer")
        assert [(r[1], r[3]) for r in b.pull()] == [(mid, b"through the balancer")]
        a.close()
        b.close()
        r = R.RoomClient(lb.ports["rooms"], source="127.0.0.24")
        r.close()
        # the checks (every 200 ms) kept the node up and left no trace (a
        # wait, not a snapshot: one check late under load shows it down)
        time.sleep(1)
        assert wait_for(lambda: lb.servers_up("shared") == 1 and lb.servers_up("rooms") == 1,
                        10), lb.admin("show servers state")
        checks = metric(srv, "bulwark_proxy_checks_total")
        assert checks >= 2, "the health checks did not reach the node"
        assert metric(srv, "bulwark_proxy_headers_total") >= checks + 5
        assert metric(srv, 'bulwark_errors_total{kind="proxy_header"}') == 0
        log = srv.log()
        assert LB not in log, log[-3000:]  # nothing about the balancer itself
        assert "PROXY header" not in log, log[-3000:]
    finally:
        lb.stop()


def tls_register_as(port, header, name, first=b""):
    """The PROXY header in clear, then (first's bytes in the same segment
    as it, as HAProxy may send them) a TLS 1.3 session carrying a
    registration proving its key; the reply's code."""
    import tlsutil

    ctx = tlsutil.client_ctx(key=rsa_key(0))
    raw = connect(port)
    raw.sendall(header)
    with ctx.wrap_socket(raw) as t:
        assert t.version() == "TLSv1.3"
        t.sendall(register_request(name))
        return answer(t)


def test_behind_a_balancer_the_handshake_budget_counts_the_named_client(behind):
    """--tls-handshakes-per-addr behind HAProxy: the address in the PROXY
    header is the one counted, not the balancer's."""
    import ports as P
    import ssl

    tls_port = P.reserve()
    srv = behind("--max-reg-per-min", "0", "--tls-port", str(tls_port),
                 "--tls-handshakes-per-addr", "2")

    def attempt(client):
        try:
            return tls_register_as(tls_port, v2(client), unique_name("hb"))
        except (ssl.SSLError, ConnectionError, OSError):
            return None  # closed before its handshake

    got = [attempt("10.0.0.7") for _ in range(6)]
    assert got[:2] == [bwmsg.REGISTERED] * 2 and None in got[2:], got
    assert attempt("10.0.0.8") == bwmsg.REGISTERED  # another client behind it
    assert bwd.wait_for(lambda: "TLS handshakes from 10.0.0.7 over 2 a second" in srv.log(),
                        5), srv.log()[-3000:]


def test_behind_a_balancer_the_tls_port_reads_the_header_then_the_handshake(behind):
    """HAProxy in TCP mode passes TLS through: the PROXY header comes in
    clear, the ClientHello after it. The header's client is the one every
    limit counts, and a header in the same segment as the handshake's
    first bytes costs nothing."""
    import ports as P

    tls_port = P.reserve()
    srv = behind("--max-reg-per-min", "1", "--tls-port", str(tls_port))
    assert tls_register_as(tls_port, v2("10.0.0.5"), unique_name("t1")) == bwmsg.REGISTERED
    assert tls_register_as(tls_port, v1("10.0.0.5", 40001), unique_name("t2")) == bwmsg.ERROR
    assert tls_register_as(tls_port, v2("10.0.0.6"), unique_name("t3")) == bwmsg.REGISTERED
    assert "10.0.0.5:40001" in srv.log(), srv.log()[-3000:]
    # a header missing before the handshake: closed, not taken for TLS
    with connect(tls_port) as s:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            ctx.wrap_socket(s)  # the ClientHello is no PROXY header
