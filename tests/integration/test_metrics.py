"""The Prometheus endpoint (--metrics-listen HOST:PORT, GET /metrics) of the
real bulwarkd: every figure moves when its event happens, the text format is
what Prometheus parses, and the small HTTP server behind it holds up (404,
405, HEAD, 431, a request deadline, parallel scrapes). Scraped with a raw
socket, so that every byte of the answer is checked."""

import os
import re
import socket
import ssl
import threading
import time

import pytest

import bwd
import bwmsg
import bwrooms as R
import bwvault as bw
import ports
from bwd import rsa_key, unique_name

H = "127.0.0.1"
# the version bulwark_build_info names: the project's
BUILD_VERSION = re.search(
    r"^project\(bulwark VERSION (\S+) ",
    (bwd.Path(__file__).resolve().parents[2] / "CMakeLists.txt").read_text(), re.M).group(1)
METRICS_LISTEN_RE = re.compile(r"metrics listening on ([0-9.]+):(\d+)")

# The text exposition format 0.0.4 (the Prometheus data model's names).
METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
SAMPLE_RE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
    r'(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*)?,?)\})?'
    r' (?P<value>[-+]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?'
    r'|NaN|[+-]?Inf))(?: -?[0-9]+)?$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
HELP_RE = re.compile(r"^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$")
TYPE_RE = re.compile(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$")


# --------------------------------------------------------------------------
# bulwarkd with its metrics endpoint


@pytest.fixture
def start_metrics(start_server):
    """Factory: start_metrics(*extra_args, rooms=False, console=False,
    environ=None) -> conftest's start_server daemon with .metrics_port;
    environ: variables added to bulwarkd's environment (e.g.
    bwd.fault_env's). The metrics endpoint gets a reserved port
    (ports.reserve; the test sees it in the `metrics listening on` line it
    checks), and the start is retried if the port was taken meanwhile."""
    def start(*extra_args, rooms=False, console=False, environ=None):
        last = None
        for _ in range(5):
            port = ports.reserve()
            try:
                srv = start_server("--metrics-listen", "%s:%d" % (H, port), *extra_args,
                                   console=console, rooms=rooms, env=environ)
            except AssertionError as e:
                if "in use" not in str(e):
                    raise
                last = e
                continue
            m = bwd.wait_for(lambda: METRICS_LISTEN_RE.search(srv.log()), 5)
            assert m, "no `metrics listening on` line\n" + srv.log_tail()
            assert (m.group(1), int(m.group(2))) == (H, port), m.group(0)
            srv.metrics_port = port
            return srv
        raise last

    return start


# --------------------------------------------------------------------------
# HTTP by hand


class Answer:
    def __init__(self, raw):
        self.raw = raw
        head, sep, self.body = raw.partition(b"\r\n\r\n")
        assert sep, "no end of the response head in %r" % raw[:300]
        lines = head.decode("latin-1").split("\r\n")
        m = re.fullmatch(r"HTTP/1\.[01] (\d{3}) (.*)", lines[0])
        assert m, "bad status line %r" % lines[0]
        self.status = int(m.group(1))
        self.headers = {}
        for ln in lines[1:]:
            k, colon, v = ln.partition(":")
            assert colon, "bad header line %r" % ln
            self.headers[k.strip().lower()] = v.strip()

    @property
    def text(self):
        return self.body.decode("utf-8")


def recv_all(s, timeout=10.0, limit=16 << 20):
    """Everything until the server closes (bounded in time and size)."""
    deadline = time.monotonic() + timeout
    out = b""
    while len(out) < limit:
        left = deadline - time.monotonic()
        assert left > 0, "the server did not close within %gs; got %r" % (timeout, out[:300])
        s.settimeout(left)
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        out += data
    return out


def http(port, head, timeout=10.0):
    """Sends head (bytes: the whole request) and reads the answer to the close."""
    with socket.create_connection((H, port), timeout=timeout) as s:
        s.sendall(head)
        return Answer(recv_all(s, timeout))


def get(port, path="/metrics", method="GET", extra=b""):
    return http(port, b"%s %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/plain\r\n%s\r\n"
                % (method.encode(), path.encode(), H.encode(), port, extra))


class Scrape:
    """A parsed /metrics body: samples as {(name, ((label, value), ...)): value}."""

    def __init__(self, text):
        self.text = text
        self.samples = {}
        for ln in text.splitlines():
            if ln.startswith("#") or not ln:
                continue
            m = SAMPLE_RE.match(ln)
            assert m, "not a sample line: %r" % ln
            labels = dict(LABEL_RE.findall(m.group("labels") or ""))
            # every sample names the node (--node-name, else the host's)
            assert "node" in labels, "no node label: %r" % ln
            self.node = labels.pop("node")
            labels = tuple(sorted(labels.items()))
            key = (m.group("name"), labels)
            assert key not in self.samples, "sample twice: %r" % ln
            self.samples[key] = float(m.group("value"))

    def get(self, name, **labels):
        key = (name, tuple(sorted(labels.items())))
        assert key in self.samples, "no sample %s%r in\n%s" % (name, labels, self.text)
        return self.samples[key]

    def family(self, name):
        """{labels dict as tuple: value} of every sample named name."""
        return {k[1]: v for k, v in self.samples.items() if k[0] == name}


def scrape(srv):
    a = get(srv.metrics_port)
    assert a.status == 200, a.raw[:500]
    assert a.headers.get("content-type", "").startswith("text/plain"), a.headers
    assert int(a.headers["content-length"]) == len(a.body), (a.headers, len(a.body))
    return Scrape(a.text)


def shared(srv, s, fam="bulwark_connections"):
    return s.get(fam, listener="shared", port=str(srv.port))


def req(s, proto, code, result):
    return s.get("bulwark_requests_total", protocol=proto, request=str(code), result=result)


def wait_metric(srv, pred, timeout=5.0):
    """Scrapes until pred(scrape) holds (bounded); returns the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        s = scrape(srv)
        if pred(s) or time.monotonic() >= deadline:
            return s
        time.sleep(0.05)  # poll interval


def err(s, kind):
    return s.get("bulwark_errors_total", kind=kind)


def by_protocol(s):
    """bulwark_shared_connections as {protocol: value}."""
    return {dict(k)["protocol"]: v for k, v in s.family("bulwark_shared_connections").items()}


def closed_by_peer(sock, timeout=10.0):
    """Reads until the peer closes (EOF or reset) within timeout; returns
    what came before the close."""
    return recv_all(sock, timeout)


# --------------------------------------------------------------------------
# On and off


def test_metrics_are_off_by_default(start_server):
    srv = start_server()
    srv.assert_serves()
    assert "metrics listening" not in srv.log()
    assert "metrics" not in " ".join(ln for ln in srv.log().splitlines() if "listening on" in ln)


def test_metrics_listen_accepts_port_zero(start_server):
    """Port 0 (any free port), as --port, --console-port and --rooms-port take,
    with the port chosen reported in the `metrics listening on` line."""
    srv = start_server("--metrics-listen", "127.0.0.1:0")
    m = bwd.wait_for(lambda: METRICS_LISTEN_RE.search(srv.log()), 5)
    assert m, srv.log_tail()
    port = int(m.group(2))
    assert port != 0
    srv.metrics_port = port
    assert scrape(srv).get("bulwark_build_info", version=BUILD_VERSION, vault_protocol="3",
                              messenger_protocol="2") == 1
    srv.stop()


def test_metrics_listen_needs_host_and_port(tmp_path):
    bwd.require_file(bwd.BULWARKD, "bulwarkd", "BULWARKD")
    import subprocess
    for bad in ("127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:x"):
        r = subprocess.run([str(bwd.BULWARKD), "--data-dir", str(tmp_path), "--no-console",
                            "--no-rooms", "--port", "0", "--metrics-listen", bad],
                           capture_output=True, timeout=10, cwd=str(tmp_path))
        assert r.returncode == 2, (bad, r)
        assert b"metrics-listen" in r.stderr and bad.encode() in r.stderr, (bad, r.stderr)


# --------------------------------------------------------------------------
# The format


@pytest.mark.parametrize("listeners", ["plain", "proxy-and-tls"])
def test_every_line_is_in_the_text_format_and_every_family_has_help_and_type(start_metrics,
                                                                              listeners):
    # the engine's own families (PROXY headers, TLS handshakes) come only
    # with their listeners: their error kinds must not split the errors
    extra = []
    if listeners == "proxy-and-tls":
        extra = ["--proxy-from", "127.0.0.77", "--tls-port", str(ports.reserve())]
    srv = start_metrics(*extra, rooms=True, console=True)
    srv.assert_serves()  # something in the histograms
    if extra:
        tls_port = int(re.search(r"vault listening on tls://[^:]+:(\d+)", srv.log()).group(1))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection((H, tls_port), timeout=10) as raw:
            with ctx.wrap_socket(raw) as t:
                assert t.version() == "TLSv1.3"
        with socket.create_connection((H, tls_port), timeout=10) as raw:
            raw.sendall(b"not a ClientHello" * 10)
            raw.settimeout(10)
            while raw.recv(4096):
                pass
        assert err(wait_metric(srv, lambda s: err(s, "tls_handshake") >= 1), "tls_handshake") >= 1
    a = get(srv.metrics_port)
    assert a.status == 200
    assert a.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8", a.headers
    text = a.text
    assert text.endswith("\n") and "\r" not in text
    helps, types, order, sampled = {}, {}, [], []
    for ln in text.split("\n")[:-1]:
        assert ln, "an empty line"
        if ln.startswith("#"):
            h, t = HELP_RE.match(ln), TYPE_RE.match(ln)
            assert h or t, "a comment that is neither HELP nor TYPE: %r" % ln
            if h:
                assert h.group(1) not in helps, "HELP twice for %s" % h.group(1)
                assert h.group(2).strip(), "empty HELP for %s" % h.group(1)
                helps[h.group(1)] = h.group(2)
            else:
                assert t.group(1) not in types, "TYPE twice for %s" % t.group(1)
                assert t.group(1) not in sampled, "TYPE of %s after its samples" % t.group(1)
                types[t.group(1)] = t.group(2)
                order.append(t.group(1))
            continue
        m = SAMPLE_RE.match(ln)
        assert m, "not `name{labels} value` or `name value`: %r" % ln
        name = m.group("name")
        assert METRIC_NAME_RE.match(name), name
        for lname, _ in LABEL_RE.findall(m.group("labels") or ""):
            assert LABEL_NAME_RE.match(lname) and not lname.startswith("__"), ln
        fam = name
        if fam not in types:
            for suffix in ("_bucket", "_sum", "_count"):
                if name.endswith(suffix) and types.get(name[:-len(suffix)]) == "histogram":
                    fam = name[:-len(suffix)]
        assert fam in types, "sample of %s with no TYPE before it: %r" % (name, ln)
        assert fam in helps, "sample of %s with no HELP: %r" % (name, ln)
        # a family's samples are together: no other family's lines between
        assert fam == order[-1], "sample of %s after the family %s began: %r" % (fam, order[-1], ln)
        sampled.append(fam)
        value = float(m.group("value"))
        if types[fam] == "counter":
            assert name.endswith("_total"), "counter %s without _total" % name
            assert value >= 0, ln
    assert set(helps) == set(types), set(helps) ^ set(types)
    for fam in types:
        assert fam.startswith("bulwark_") or fam.startswith("process_"), fam
        assert fam in sampled, "family %s with no sample" % fam
    # Prometheus makes `up` itself; units last; the process figures every
    # client library exports
    assert "bulwark_up" not in types and "bulwark_bytes_stored" not in types
    for need in ("bulwark_stored_bytes", "bulwark_build_info", "process_cpu_seconds_total",
                 "process_resident_memory_bytes", "process_virtual_memory_bytes",
                 "process_open_fds", "process_max_fds", "process_start_time_seconds",
                 "bulwark_vault_uploads_cut_total"):
        assert need in types, "no family %s" % need
    for need in ("bulwark_connections", "bulwark_connections_accepted_total",
                 "bulwark_requests_total", "bulwark_request_seconds", "bulwark_errors_total",
                 "bulwark_vault_uploads_total", "bulwark_vault_upload_bytes_total",
                 "bulwark_msg_stored_total", "bulwark_msg_bytes_total", "bulwark_msg_queued",
                 "bulwark_msg_delivered_total", "bulwark_rooms", "bulwark_rooms_members",
                 "bulwark_rooms_lines_total", "bulwark_rooms_deliveries_total",
                 "bulwark_rooms_wrong_attempts_total"):
        assert need in types, "no family %s" % need
    assert types["bulwark_request_seconds"] == "histogram"
    if extra:
        for need in ("bulwark_proxy_headers_total", "bulwark_tls_handshakes_total"):
            assert need in types, "no family %s" % need
        assert re.search(r"^bulwark_tls_handshakes_total(\{[^}]*\})? [1-9]", text, re.M), text
    else:
        assert "bulwark_tls_handshakes_total" not in types
    Scrape(text)  # no sample twice


def test_histogram_buckets_are_cumulative_and_end_with_inf_equal_to_count(start_metrics):
    srv = start_metrics()
    before = scrape(srv)
    small = dict(size="small")
    n0 = before.get("bulwark_request_seconds_count", protocol="vault", **small)
    b0 = before.get("bulwark_request_seconds_count", protocol="vault", size="bulk")
    with srv.client() as c:
        bw.expect(c.register(unique_name("h")), bw.REGISTERED)
        bw.expect(c.send_pubkey(key=rsa_key(0)), bw.KEY_STORED)
        # a bulk transfer is timed apart: its time holds the body's
        bw.expect(c.send_file("big.bin", b"b" * 100000).response, bw.FILE_RECEIVED)
        bw.expect(c.crc_ok("big.bin"), bw.ACK)
    m = bwmsg.MsgClient(H, srv.port)
    m.register(unique_name("hm"), key=rsa_key(1))
    m.list()
    m.close()
    s = wait_metric(srv, lambda s: s.get("bulwark_request_seconds_count", protocol="vault",
                                         **small) >= n0 + 3
                    and s.get("bulwark_request_seconds_count", protocol="messenger", **small) >= 2)
    assert s.get("bulwark_request_seconds_count", protocol="vault", size="bulk") == b0 + 1
    assert s.get("bulwark_request_seconds_count", protocol="messenger", size="bulk") == 0
    for proto, want in (("vault", n0 + 3), ("messenger", 2)):
        count = s.get("bulwark_request_seconds_count", protocol=proto, **small)
        assert count == want, (proto, count)
        buckets = [(dict(k)["le"], v) for k, v in s.family("bulwark_request_seconds_bucket").items()
                   if dict(k)["protocol"] == proto and dict(k)["size"] == "small"]
        les = [le for le, _ in buckets]
        assert les[-1] == "+Inf", les
        bounds = [float(le) for le in les[:-1]]
        assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), les
        # in the order of the text
        text_order = [dict(LABEL_RE.findall(ln[ln.index("{"):]))["le"]
                      for ln in s.text.splitlines()
                      if ln.startswith("bulwark_request_seconds_bucket{")
                      and 'protocol="%s",size="small"' % proto in ln]
        assert text_order == les or text_order == [le for le, _ in sorted(
            buckets, key=lambda b: float("inf") if b[0] == "+Inf" else float(b[0]))], text_order
        values = [v for _, v in sorted(buckets, key=lambda b: float("inf") if b[0] == "+Inf"
                                       else float(b[0]))]
        assert values == sorted(values), "buckets not cumulative: %r" % buckets
        assert values[-1] == count, "+Inf %r != count %r" % (values[-1], count)
        assert s.get("bulwark_request_seconds_sum", protocol=proto, **small) >= 0


# --------------------------------------------------------------------------
# Connections and the engine's closes


def test_connections_gauge_and_accepted_total(start_metrics):
    srv = start_metrics()
    s0 = scrape(srv)
    assert shared(srv, s0) == 0
    acc0 = shared(srv, s0, "bulwark_connections_accepted_total")
    clients = [srv.client() for _ in range(3)]
    try:
        for i, c in enumerate(clients):
            bw.expect(c.register(unique_name("g")), bw.REGISTERED)
        s1 = scrape(srv)
        assert shared(srv, s1) == 3
        assert shared(srv, s1, "bulwark_connections_accepted_total") == acc0 + 3
        assert s1.get("bulwark_clients") == s0.get("bulwark_clients") + 3
        # the scrape's own connection is open while it is answered
        assert s1.get("bulwark_connections", listener="metrics", port=str(srv.metrics_port)) == 1
        assert s1.get("bulwark_connections_accepted_total", listener="metrics",
                      port=str(srv.metrics_port)) >= 2
        assert s1.get("bulwark_scrapes_total") == s0.get("bulwark_scrapes_total") + 1
    finally:
        for c in clients:
            c.close()
    s2 = wait_metric(srv, lambda s: shared(srv, s) == 0)
    assert shared(srv, s2) == 0
    assert shared(srv, s2, "bulwark_connections_accepted_total") == acc0 + 3


def test_idle_timeout_counts_in_errors_total(start_metrics):
    srv = start_metrics("--timeout", "1")
    k0 = scrape(srv).get("bulwark_errors_total", kind="idle_timeout")
    with socket.create_connection((H, srv.port), timeout=10) as s:
        s.settimeout(10)
        try:
            data = s.recv(1)
        except ConnectionResetError:
            data = b""
        assert data == b"", "the server sent %r to a silent client" % data
    s1 = wait_metric(srv, lambda s: s.get("bulwark_errors_total", kind="idle_timeout") > k0)
    assert s1.get("bulwark_errors_total", kind="idle_timeout") == k0 + 1
    assert s1.get("bulwark_errors_total", kind="request_deadline") == 0


def test_connections_per_listener_for_console_and_rooms(start_metrics):
    srv = start_metrics(rooms=True, console=True)
    s0 = scrape(srv)
    cp, rp = str(srv.console_port), str(srv.rooms_port)
    assert s0.get("bulwark_connections", listener="console", port=cp) == 0
    assert s0.get("bulwark_connections", listener="rooms", port=rp) == 0
    with socket.create_connection((H, srv.console_port), timeout=5) as con, \
            R.RoomClient(srv.rooms_port) as room:
        assert room.seen  # at the menu
        con.sendall(b"Hi")
        assert len(bw.recv_exact(con, 48)) == 48
        s1 = scrape(srv)
        assert s1.get("bulwark_connections", listener="console", port=cp) == 1
        assert s1.get("bulwark_connections", listener="rooms", port=rp) == 1
        assert s1.get("bulwark_connections_accepted_total", listener="console", port=cp) == 1
        assert s1.get("bulwark_connections_accepted_total", listener="rooms", port=rp) == 1
        assert s1.get("bulwark_rooms_at_menu") == 1
    s2 = wait_metric(srv, lambda s: s.get("bulwark_connections", listener="rooms", port=rp) == 0
                     and s.get("bulwark_connections", listener="console", port=cp) == 0)
    assert s2.get("bulwark_connections", listener="rooms", port=rp) == 0
    assert s2.get("bulwark_connections", listener="console", port=cp) == 0


def test_shared_connections_by_the_protocol_of_their_last_request(start_metrics):
    """A connection counts as "none" until a request of it is answered, then
    as the protocol of its last answered request; closes take it off."""
    srv = start_metrics()
    zero = {"vault": 0, "messenger": 0, "none": 0}
    assert by_protocol(scrape(srv)) == zero
    raw = socket.create_connection((H, srv.port), timeout=10)
    v = srv.client()
    m = bwmsg.MsgClient(H, srv.port)
    try:
        m.connect()
        s = wait_metric(srv, lambda s: by_protocol(s)["none"] >= 3)
        assert by_protocol(s) == {"vault": 0, "messenger": 0, "none": 3}
        bw.expect(v.register(unique_name("sc")), bw.REGISTERED)
        assert by_protocol(scrape(srv)) == {"vault": 1, "messenger": 0, "none": 2}
        m.register(unique_name("scm"), key=rsa_key(10))
        assert by_protocol(scrape(srv)) == {"vault": 1, "messenger": 1, "none": 1}
        m.list()  # another request of the same protocol moves nothing
        assert by_protocol(scrape(srv)) == {"vault": 1, "messenger": 1, "none": 1}
        # the vault connection's next request is a messenger one (a 601 of
        # an unknown id, answered 9000): it is a messenger connection now
        v.send_raw(bwmsg.pack_request(bytes(16), bwmsg.LIST))
        assert bw.read_response(v.sock).code == bwmsg.ERROR
        assert by_protocol(scrape(srv)) == {"vault": 0, "messenger": 2, "none": 1}
        bw.expect(v.register(unique_name("sc")), bw.REGISTERED)
        assert by_protocol(scrape(srv)) == {"vault": 1, "messenger": 1, "none": 1}
        v.close()
        s = wait_metric(srv, lambda s: by_protocol(s)["vault"] == 0)
        assert by_protocol(s) == {"vault": 0, "messenger": 1, "none": 1}
        m.close()
        s = wait_metric(srv, lambda s: by_protocol(s)["messenger"] == 0)
        assert by_protocol(s) == {"vault": 0, "messenger": 0, "none": 1}
        raw.close()
        s = wait_metric(srv, lambda s: by_protocol(s) == zero)
        assert by_protocol(s) == zero
        assert shared(srv, s) == 0
    finally:
        raw.close()
        v.close()
        m.close()


def test_connections_refused_at_the_listeners_cap(start_metrics):
    srv = start_metrics("--max-conns", "2")
    refused = lambda s: shared(srv, s, "bulwark_connections_refused_total")
    s0 = scrape(srv)
    assert refused(s0) == 0
    acc0 = shared(srv, s0, "bulwark_connections_accepted_total")
    a, b = srv.client(), srv.client()
    try:
        for c in (a, b):
            bw.expect(c.register(unique_name("cap")), bw.REGISTERED)
        s1 = scrape(srv)
        assert shared(srv, s1) == 2 and refused(s1) == 0
        with socket.create_connection((H, srv.port), timeout=10) as third:
            assert closed_by_peer(third) == b"", "the third connection was not closed at once"
        s2 = wait_metric(srv, lambda s: refused(s) >= 1)
        assert refused(s2) == 1
        assert shared(srv, s2) == 2
        assert shared(srv, s2, "bulwark_connections_accepted_total") == acc0 + 2
        assert s2.get("bulwark_connections_refused_total", listener="metrics",
                      port=str(srv.metrics_port)) == 0
    finally:
        a.close()
        b.close()
    wait_metric(srv, lambda s: shared(srv, s) == 0)
    # below the cap again: the next one is served, and nothing more refused
    with srv.client() as c:
        bw.expect(c.register(unique_name("cap")), bw.REGISTERED)
    s3 = scrape(srv)
    assert refused(s3) == 1
    assert shared(srv, s3, "bulwark_connections_accepted_total") == acc0 + 3


def test_start_time_is_when_bulwarkd_started_and_worker_jobs_is_a_gauge(start_metrics):
    t0 = time.time()
    srv = start_metrics()
    t1 = time.time()
    a = get(srv.metrics_port)
    assert "# TYPE bulwark_start_time_seconds gauge\n" in a.text
    assert "# TYPE bulwark_worker_jobs gauge\n" in a.text
    s = Scrape(a.text)
    started = s.get("bulwark_start_time_seconds")
    assert started == int(started), started
    assert int(t0) - 1 <= started <= t1 + 1, (t0, started, t1)
    jobs = s.get("bulwark_worker_jobs")
    assert jobs == int(jobs) and jobs == 0, jobs  # nothing submitted yet
    time.sleep(1.1)  # a clock would have moved
    s2 = scrape(srv)
    assert s2.get("bulwark_start_time_seconds") == started
    assert s2.get("bulwark_worker_jobs") == 0


# --------------------------------------------------------------------------
# Requests by code and result


def test_registration_counts_ok_and_a_refused_one_error(start_metrics):
    srv = start_metrics("--max-reg-per-min", "2")
    s0 = scrape(srv)
    assert req(s0, "vault", 1025, "ok") == 0 and req(s0, "vault", 1025, "error") == 0
    with srv.client() as c:
        bw.expect(c.register(unique_name("r")), bw.REGISTERED)
    s1 = scrape(srv)
    assert req(s1, "vault", 1025, "ok") == 1
    assert req(s1, "vault", 1025, "error") == 0
    with srv.client() as c:
        bw.expect(c.register(unique_name("r")), bw.REGISTERED)
        # the third from this address within the minute: refused with 2107
        bw.expect(c.register(unique_name("r")), bw.ERROR)
    s2 = scrape(srv)
    assert req(s2, "vault", 1025, "ok") == 2
    assert req(s2, "vault", 1025, "error") == 1
    # nothing else moved
    assert req(s2, "vault", 1026, "ok") == 0 and req(s2, "messenger", 600, "ok") == 0


def test_a_malformed_registration_counts_as_error(start_metrics):
    srv = start_metrics()
    with srv.client() as c:
        # a name field with no NUL: the protocol's general error
        bw.expect(c.request(bw.REGISTER, b"x" * bw.NAME_SIZE, client_id=bw.ZERO_ID), bw.ERROR)
    s = scrape(srv)
    assert req(s, "vault", 1025, "error") == 1 and req(s, "vault", 1025, "ok") == 0


def test_a_registration_refused_for_a_taken_name_counts_as_error(start_metrics):
    """2101 is the vault's "registration failed" (spec/files.md): a refused
    registration, not a successful one."""
    srv = start_metrics()
    name = unique_name("taken")
    with srv.client() as c:
        bw.expect(c.register(name), bw.REGISTERED)
    with srv.client() as c:
        bw.expect(c.register(name), bw.NAME_TAKEN)
    s = scrape(srv)
    assert req(s, "vault", 1025, "ok") == 1, s.family("bulwark_requests_total")
    assert req(s, "vault", 1025, "error") == 1, s.family("bulwark_requests_total")


def test_messenger_requests_by_code_and_result(start_metrics):
    srv = start_metrics()
    name = unique_name("mm")
    a = bwmsg.MsgClient(H, srv.port)
    a.register(name, key=rsa_key(2))
    b = bwmsg.MsgClient(H, srv.port)
    with pytest.raises(bwmsg.ServerError):  # 600 with a taken name -> 9000
        b.register(name, key=rsa_key(3))
    a.list()
    with pytest.raises(bwmsg.ServerError):  # 602 for an unknown target
        a.public_key(os.urandom(16))
    a.close()
    b.close()
    s = scrape(srv)
    assert req(s, "messenger", 600, "ok") == 1
    assert req(s, "messenger", 600, "error") == 1
    assert req(s, "messenger", 601, "ok") == 1
    assert req(s, "messenger", 602, "error") == 1 and req(s, "messenger", 602, "ok") == 0


def test_unknown_code_and_bad_size(start_metrics):
    srv = start_metrics()
    s0 = scrape(srv)
    assert req(s0, "vault", "unknown", "error") == 0
    assert req(s0, "vault", "bad_size", "error") == 0
    # a code in the vault's range that no route has
    with srv.client() as c:
        c.send_raw(bw.pack_request(bw.ZERO_ID, 1500, b""))
        bw.expect(c.recv_response(), bw.ERROR)
    s1 = wait_metric(srv, lambda s: req(s, "vault", "unknown", "error") >= 1)
    assert req(s1, "vault", "unknown", "error") == 1
    # a 1025 whose payload is not the 255-byte name field
    with srv.client() as c:
        c.send_raw(bw.pack_request(bw.ZERO_ID, bw.REGISTER, b"abc"))
        bw.expect(c.recv_response(), bw.ERROR)
    s2 = wait_metric(srv, lambda s: req(s, "vault", "bad_size", "error") >= 1)
    assert req(s2, "vault", "bad_size", "error") == 1
    assert req(s2, "vault", "unknown", "error") == 1
    # the size refusal is no 1025 answered
    assert req(s2, "vault", 1025, "ok") == 0
    # and a messenger one: a code in its range
    with socket.create_connection((H, srv.port), timeout=10) as s:
        s.sendall(bwmsg.pack_request(bytes(16), 650, b""))
        bw.read_response(s)
    s3 = wait_metric(srv, lambda s: req(s, "messenger", "unknown", "error") >= 1)
    assert req(s3, "messenger", "unknown", "error") == 1


# --------------------------------------------------------------------------
# The vault's uploads


def test_upload_counts_files_and_plaintext_bytes(start_metrics):
    srv = start_metrics()
    s0 = scrape(srv)
    assert s0.get("bulwark_vault_uploads_total") == 0
    assert s0.get("bulwark_vault_upload_bytes_total") == 0
    sizes = (1000, 70001)
    for i, size in enumerate(sizes):
        bw.full_session(H, srv.port, unique_name("up"), os.urandom(size),
                        file_name="f%d.bin" % i, key=rsa_key(i))
    s1 = wait_metric(srv, lambda s: s.get("bulwark_vault_uploads_total") >= 2)
    assert s1.get("bulwark_vault_uploads_total") == 2
    assert s1.get("bulwark_vault_upload_bytes_total") == sum(sizes)
    assert s1.get("bulwark_files") == 2
    assert s1.get("bulwark_vault_uploads_active") == 0
    assert req(s1, "vault", 1028, "ok") == 2
    assert req(s1, "vault", 1029, "ok") == 2


def test_upload_in_progress_is_a_gauge(start_metrics):
    """uploads_active while a body is coming in; upload_bytes_active moves by
    whole decrypted chunks (upload.c: up to 1 MiB each), so more than one
    chunk is sent: it is above 0 and at most what was sent."""
    srv = start_metrics()
    c = srv.client()
    size = 4 << 20
    sent = (3 << 20) // 2
    try:
        bw.expect(c.register(unique_name("act")), bw.REGISTERED)
        bw.expect(c.send_pubkey(key=rsa_key(4)), bw.KEY_STORED)
        content = bw.encrypted_size(size)
        c.send_raw(bw.pack_request_header(c.client_id, bw.SEND_FILE, bw.FILE_PREFIX_SIZE + content)
                   + bw.pack_file_prefix(content, "half.bin"))
        c.send_raw(bw.aes_encrypt_raw(c.aes_key, os.urandom(sent)))
        s = wait_metric(srv, lambda s: s.get("bulwark_vault_upload_bytes_active") > 0)
        assert s.get("bulwark_vault_uploads_active") == 1
        active = s.get("bulwark_vault_upload_bytes_active")
        assert 0 < active <= sent, active
    finally:
        c.close()
    s = wait_metric(srv, lambda s: s.get("bulwark_vault_uploads_active") == 0)
    assert s.get("bulwark_vault_uploads_active") == 0
    assert s.get("bulwark_vault_upload_bytes_active") == 0
    assert s.get("bulwark_vault_uploads_total") == 0
    assert s.get("bulwark_vault_upload_bytes_total") == 0


def file_head(client_id, content_size, file_name):
    """Header and fixed prefix of a 1028, without the ciphertext."""
    return (bw.pack_request_header(client_id, bw.SEND_FILE, bw.FILE_PREFIX_SIZE + content_size)
            + bw.pack_file_prefix(content_size, file_name))


def undecryptable_1028(srv, client_id, aes_key, file_name):
    """A 1028 of client_id on a connection of its own whose body does not
    decrypt under aes_key: asserts the 2107 and the close."""
    with srv.client() as c:
        ct = bw.bad_padding_ciphertext(aes_key, blocks=4)
        c.send_raw(file_head(client_id, len(ct), file_name) + ct)
        resp = c.recv_response()
        assert resp.code == bw.ERROR and resp.payload == b"", resp
        assert c.is_closed_by_peer(timeout=5), "open after a padding failure"


def test_vault_decrypt_and_key_revoked_errors_and_1026_1027_results(start_metrics):
    srv = start_metrics("--key-failures", "2")
    s0 = scrape(srv)
    for kind in ("vault_decrypt", "vault_key_revoked", "vault_store"):
        assert err(s0, kind) == 0, kind
    assert req(s0, "vault", 1026, "ok") == 0
    with srv.client(key=rsa_key(11)) as c:
        bw.expect(c.register(unique_name("dec")), bw.REGISTERED)
        bw.expect(c.send_pubkey(), bw.KEY_STORED)
    owner, name, key = c.client_id, c.name, c.aes_key
    s1 = scrape(srv)
    assert req(s1, "vault", 1026, "ok") == 1 and req(s1, "vault", 1026, "error") == 0

    undecryptable_1028(srv, owner, key, "bad1.bin")
    s2 = wait_metric(srv, lambda s: err(s, "vault_decrypt") >= 1)
    assert err(s2, "vault_decrypt") == 1
    assert err(s2, "vault_key_revoked") == 0  # one failure of the two
    assert req(s2, "vault", 1028, "error") == 1 and req(s2, "vault", 1028, "ok") == 0

    undecryptable_1028(srv, owner, key, "bad2.bin")
    s3 = wait_metric(srv, lambda s: err(s, "vault_decrypt") >= 2)
    assert err(s3, "vault_decrypt") == 2
    assert err(s3, "vault_key_revoked") == 1
    assert req(s3, "vault", 1028, "error") == 2

    with srv.client(key=rsa_key(11)) as c:
        c.client_id = owner
        bw.expect(c.reconnect(name + "x"), bw.RECONNECT_REFUSED)  # not the id's name
        s4 = scrape(srv)
        assert req(s4, "vault", 1027, "error") == 1 and req(s4, "vault", 1027, "ok") == 0
        bw.expect(c.reconnect(name), bw.RECONNECTED)
        assert c.aes_key != key
        res = c.send_file("good.bin", os.urandom(3000))
        bw.expect(res.response, bw.FILE_RECEIVED)
        bw.expect(c.crc_ok("good.bin"), bw.ACK)
    s5 = scrape(srv)
    assert req(s5, "vault", 1027, "ok") == 1 and req(s5, "vault", 1027, "error") == 1
    assert req(s5, "vault", 1028, "ok") == 1 and req(s5, "vault", 1028, "error") == 2
    # a good upload is no error of any kind
    assert err(s5, "vault_decrypt") == 2
    assert err(s5, "vault_key_revoked") == 1
    assert err(s5, "vault_store") == 0


def test_crc_verdicts_1030_and_1031_count_by_code_and_result(start_metrics):
    srv = start_metrics()
    data = os.urandom(2000)
    with srv.client(key=rsa_key(12)) as c:
        bw.expect(c.register(unique_name("crc")), bw.REGISTERED)
        bw.expect(c.send_pubkey(), bw.KEY_STORED)
        bw.expect(c.send_file("v.bin", data).response, bw.FILE_RECEIVED)
        c.crc_bad("v.bin")  # 1030: no answer; the resend's answer orders it
        bw.expect(c.send_file("v.bin", data).response, bw.FILE_RECEIVED)
        s1 = scrape(srv)
        assert req(s1, "vault", 1030, "ok") == 1 and req(s1, "vault", 1030, "error") == 0
        assert req(s1, "vault", 1031, "ok") == 0
        bw.expect(c.giveup("v.bin"), bw.ACK)
        s2 = scrape(srv)
        assert req(s2, "vault", 1031, "ok") == 1 and req(s2, "vault", 1031, "error") == 0
        # a 1031 of an unknown id: 2107
        resp = c.request(bw.CRC_GIVE_UP, bw.name_field("v.bin"), client_id=os.urandom(16))
        bw.expect(resp, bw.ERROR)
    s3 = scrape(srv)
    assert req(s3, "vault", 1031, "ok") == 1 and req(s3, "vault", 1031, "error") == 1
    assert req(s3, "vault", 1030, "ok") == 1 and req(s3, "vault", 1030, "error") == 0
    assert req(s3, "vault", 1028, "ok") == 2 and req(s3, "vault", 1029, "ok") == 0


def test_refused_1028_bodies_being_discarded_are_a_gauge(start_metrics):
    """A 1028 of an unknown id is refused at its header; its body (under
    1 MiB) is read and thrown away before the 2107, on a connection that
    stays usable. vault_refused_bodies counts those being thrown away."""
    srv = start_metrics()
    content, first = 256 * 1024, 16 * 1024
    gauge = lambda s: s.get("bulwark_vault_refused_bodies")
    assert gauge(scrape(srv)) == 0
    a, b = srv.client(), srv.client()
    try:
        a.send_raw(file_head(os.urandom(16), content, "junk-a.bin") + bytes(first))
        s1 = wait_metric(srv, lambda s: gauge(s) >= 1)
        assert gauge(s1) == 1
        assert s1.get("bulwark_vault_uploads_active") == 0
        assert req(s1, "vault", 1028, "error") == 0  # not answered yet
        b.send_raw(file_head(os.urandom(16), content, "junk-b.bin") + bytes(first))
        s2 = wait_metric(srv, lambda s: gauge(s) >= 2)
        assert gauge(s2) == 2
        # a's body ends: 2107, and it is no longer being discarded
        a.send_raw(bytes(content - first))
        bw.expect(a.recv_response(), bw.ERROR)
        s3 = wait_metric(srv, lambda s: gauge(s) <= 1)
        assert gauge(s3) == 1
        assert req(s3, "vault", 1028, "error") == 1
        bw.expect(a.register(unique_name("after")), bw.REGISTERED)
        # b goes away in the middle of its body
        b.close()
        s4 = wait_metric(srv, lambda s: gauge(s) == 0)
        assert gauge(s4) == 0
        assert req(s4, "vault", 1028, "error") == 1
        assert s4.get("bulwark_vault_uploads_total") == 0
    finally:
        a.close()
        b.close()


@pytest.mark.files_only("fails the contents' file write with the fault shim (S3: test_s3_backend's faults)")
def test_an_upload_that_cannot_be_stored_counts_vault_store(start_metrics, shim):
    """The rename that puts the upload in place fails (EIO, by the fault
    shim): 2107, vault_store moves; the next upload of the name is stored."""
    srv = start_metrics(environ=bwd.fault_env(shim, fault="renameat:1:EIO:nostore.bin"))
    with srv.client(key=rsa_key(13)) as c:
        bw.expect(c.register(unique_name("store")), bw.REGISTERED)
        bw.expect(c.send_pubkey(), bw.KEY_STORED)
        s0 = scrape(srv)
        assert err(s0, "vault_store") == 0
        res = c.send_file("nostore.bin", os.urandom(3000))
        bw.expect(res.response, bw.ERROR)
        assert "bwfault: renameat #1" in srv.log(), srv.log_tail()
        s1 = scrape(srv)
        assert err(s1, "vault_store") == 1
        assert req(s1, "vault", 1028, "error") == 1 and req(s1, "vault", 1028, "ok") == 0
        assert s1.get("bulwark_vault_uploads_total") == 0
        assert err(s1, "vault_decrypt") == 0
        data = os.urandom(3000)
        res = c.send_file("nostore.bin", data)
        bw.expect(res.response, bw.FILE_RECEIVED)
        bw.expect(c.crc_ok("nostore.bin"), bw.ACK)
    s2 = scrape(srv)
    assert err(s2, "vault_store") == 1
    assert s2.get("bulwark_vault_uploads_total") == 1
    assert req(s2, "vault", 1028, "ok") == 1 and req(s2, "vault", 1028, "error") == 1


# --------------------------------------------------------------------------
# The messenger's messages


def test_messages_stored_queued_and_delivered(start_metrics):
    srv = start_metrics()
    a = bwmsg.MsgClient(H, srv.port)
    a.register(unique_name("ma"), key=rsa_key(5))
    b = bwmsg.MsgClient(H, srv.port)
    b.register(unique_name("mb"), key=rsa_key(6))
    s0 = scrape(srv)
    for k in ("bulwark_msg_stored_total", "bulwark_msg_bytes_total", "bulwark_msg_queued",
              "bulwark_msg_queued_bytes", "bulwark_msg_delivered_total"):
        assert s0.get(k) == 0, k
    key = os.urandom(16)
    contents = [b"", bw.aes_encrypt(key, b"hello bob"), os.urandom(3000)]
    a.send_key_request(b.client_id)
    a.send(b.client_id, bwmsg.TEXT, contents[1])
    a.send(b.client_id, bwmsg.FILE, contents[2])
    total = sum(len(x) for x in contents)
    s1 = scrape(srv)
    assert s1.get("bulwark_msg_stored_total") == 3
    assert s1.get("bulwark_msg_bytes_total") == total
    assert s1.get("bulwark_msg_queued") == 3
    assert s1.get("bulwark_msg_queued_bytes") == total
    assert s1.get("bulwark_msg_delivered_total") == 0
    assert req(s1, "messenger", 603, "ok") == 3
    got = b.pull()
    assert [r[3] for r in got] == contents
    # the next request on the connection is the evidence of delivery
    b.list()
    s2 = wait_metric(srv, lambda s: s.get("bulwark_msg_delivered_total") >= 3)
    assert s2.get("bulwark_msg_delivered_total") == 3
    assert s2.get("bulwark_msg_queued") == 0
    assert s2.get("bulwark_msg_queued_bytes") == 0
    assert s2.get("bulwark_msg_stored_total") == 3
    assert s2.get("bulwark_msg_bytes_total") == total
    assert req(s2, "messenger", 604, "ok") == 1
    a.close()
    b.close()


@pytest.mark.sqlite_only("fsyncs of defensive.db's WAL on the workers, slowed and failed by the shim")
def test_msg_syncs_store_errors_worker_jobs_and_603_604_errors(start_metrics, shim, tmp_path):
    """With the fault shim, the first fsync of the journal after arming
    takes a second (a job on a worker all along) and the second fails."""
    arm = tmp_path / "arm"
    srv = start_metrics(environ=bwd.fault_env(
        shim, fault="fdatasync:1:sleep=1000:defensive.db-wal,fdatasync:2:EIO:defensive.db-wal",
        arm=arm))
    a = bwmsg.MsgClient(H, srv.port)
    a.register(unique_name("sa"), key=rsa_key(14))
    b = bwmsg.MsgClient(H, srv.port)
    b.register(unique_name("sb"), key=rsa_key(15))
    try:
        s0 = scrape(srv)
        syncs0 = s0.get("bulwark_msg_syncs_total")
        assert syncs0 >= 1  # the registrations were made durable
        assert s0.get("bulwark_worker_jobs") == 0
        assert err(s0, "msg_store") == 0
        arm.write_text("go")
        result = {}

        def send():
            try:
                result["id"] = a.send(b.client_id, bwmsg.TEXT, b"slow disk")
            except Exception as e:  # noqa: BLE001 - reported below
                result["error"] = repr(e)

        t = threading.Thread(target=send)
        t.start()
        try:
            s1 = wait_metric(srv, lambda s: s.get("bulwark_worker_jobs") > 0, timeout=3)
        finally:
            t.join(10)
        # while the fsync ran: one job, and the sync not counted yet
        assert s1.get("bulwark_worker_jobs") == 1, "no job seen while the fsync slept"
        assert s1.get("bulwark_msg_syncs_total") == syncs0
        assert s1.get("bulwark_msg_stored_total") == 0 and req(s1, "messenger", 603, "ok") == 0
        assert "id" in result, result
        s2 = scrape(srv)
        assert s2.get("bulwark_worker_jobs") == 0
        assert s2.get("bulwark_msg_syncs_total") == syncs0 + 1
        assert s2.get("bulwark_msg_stored_total") == 1
        assert req(s2, "messenger", 603, "ok") == 1 and req(s2, "messenger", 603, "error") == 0
        # the next fsync fails: 9000, msg_store
        code, body = a.request(bwmsg.SEND, bwmsg.SEND_PREFIX.pack(b.client_id, bwmsg.TEXT, 5)
                               + b"lost!")
        assert (code, body) == (bwmsg.ERROR, b"")
        assert "fdatasync #2 failed" in srv.log(), srv.log_tail()
        s3 = scrape(srv)
        assert err(s3, "msg_store") == 1
        assert req(s3, "messenger", 603, "error") == 1 and req(s3, "messenger", 603, "ok") == 1
        assert s3.get("bulwark_msg_syncs_total") == syncs0 + 2  # a failed sync is one too
        assert s3.get("bulwark_msg_stored_total") == 1
        # a 603 to no one: an error, but not one of storing
        with pytest.raises(bwmsg.ServerError):
            a.send(os.urandom(16), bwmsg.TEXT, b"nobody")
        # a 604 of an unknown id
        code, body = a.request(bwmsg.PULL, client_id=os.urandom(16))
        assert (code, body) == (bwmsg.ERROR, b"")
        s4 = scrape(srv)
        assert req(s4, "messenger", 603, "error") == 2
        assert err(s4, "msg_store") == 1
        assert req(s4, "messenger", 604, "error") == 1 and req(s4, "messenger", 604, "ok") == 0
        assert s4.get("bulwark_msg_syncs_total") == syncs0 + 2
        assert err(s4, "msg_pull") == 0
    finally:
        a.close()
        b.close()


def test_a_pull_cut_short_by_a_missing_content_file_counts_msg_pull(start_metrics):
    """A content over 64 KiB is kept in a file of its own under messages/;
    with that file gone, the 2104 carrying it is cut short and closed, and
    the message (which can never be delivered) is dropped: no longer
    counted as queued. In S3 (where a 404 may also be a bucket gone) it
    stays queued, for a restart's reconcile to judge."""
    srv = start_metrics()
    a = bwmsg.MsgClient(H, srv.port)
    a.register(unique_name("pa"), key=rsa_key(16))
    b = bwmsg.MsgClient(H, srv.port)
    b.register(unique_name("pb"), key=rsa_key(17))
    try:
        size = 70000
        a.send(b.client_id, bwmsg.FILE, os.urandom(size))
        files = [p for p in srv.blobs("messages").iterdir() if p.is_file()]
        assert len(files) == 1, files
        files[0].unlink()
        s0 = scrape(srv)
        assert err(s0, "msg_pull") == 0
        b.send_raw(bwmsg.pack_request(b.client_id, bwmsg.PULL))
        got = closed_by_peer(b.sock)
        # what came (the server may drop what it had queued) is a proper
        # prefix of the 2104 announced
        whole = bw.RESP_HEADER_SIZE + bwmsg.RECORD.size + size
        assert len(got) < whole, "the whole 2104 came with its content file gone"
        if len(got) >= bw.RESP_HEADER_SIZE:
            _, code, total = bw.RESP_HEADER.unpack(got[:bw.RESP_HEADER_SIZE])
            assert (code, total) == (bwmsg.WAITING, bwmsg.RECORD.size + size), (code, total)
        left = 1 if bwd.TEST_BLOBS == "s3" else 0
        s1 = wait_metric(srv, lambda s: err(s, "msg_pull") >= 1
                         and s.get("bulwark_msg_queued") == left)
        assert err(s1, "msg_pull") == 1
        assert s1.get("bulwark_msg_queued") == left
        assert s1.get("bulwark_msg_delivered_total") == 0
        assert err(s1, "msg_store") == 0
    finally:
        a.close()
        b.close()


# --------------------------------------------------------------------------
# Rooms


def test_rooms_members_lines_deliveries_and_wrong_attempts(start_metrics):
    srv = start_metrics(rooms=True)
    port = srv.rooms_port
    s0 = scrape(srv)
    assert s0.get("bulwark_rooms") == 0 and s0.get("bulwark_rooms_members") == 0
    a, rid = R.creator(port, "alice", "pw-a", source="127.0.0.81")
    s1 = scrape(srv)
    assert s1.get("bulwark_rooms") == 1 and s1.get("bulwark_rooms_members") == 1
    b = R.member(port, "bob", rid, "pw-a", source="127.0.0.82")
    a.expect(R.joined("bob"))
    c = R.member(port, "carol", rid, "pw-a", source="127.0.0.83")
    a.expect(R.joined("carol"))
    b.expect(R.joined("carol"))
    s2 = scrape(srv)
    assert s2.get("bulwark_rooms") == 1 and s2.get("bulwark_rooms_members") == 3
    d, rid2 = R.creator(port, "dave", "pw-d", source="127.0.0.84")
    s3 = scrape(srv)
    assert s3.get("bulwark_rooms") == 2 and s3.get("bulwark_rooms_members") == 4
    lines0 = s3.get("bulwark_rooms_lines_total")
    del0 = s3.get("bulwark_rooms_deliveries_total")
    c.line("hello from carol")
    a.expect("carol: hello from carol")
    b.expect("carol: hello from carol")
    s4 = scrape(srv)
    assert s4.get("bulwark_rooms_lines_total") == lines0 + 1
    assert s4.get("bulwark_rooms_deliveries_total") == del0 + 2  # alice and bob
    d.line("alone")  # a line with no one to hear it
    s5 = wait_metric(srv, lambda s: s.get("bulwark_rooms_lines_total") >= lines0 + 2)
    assert s5.get("bulwark_rooms_lines_total") == lines0 + 2
    assert s5.get("bulwark_rooms_deliveries_total") == del0 + 2
    # wrong ids and passwords
    w0 = s5.get("bulwark_rooms_wrong_attempts_total")
    e = R.RoomClient(port, source="127.0.0.85")
    e.line("1", "eve")
    e.expect_seq([R.ASK_NAME, R.ASK_ID])
    e.line("999")
    e.expect_seq([R.NO_ID, R.ASK_ID])
    e.line(str(rid))
    e.expect_seq([R.ASK_PASS])
    e.line("wrong")
    e.expect_seq([R.NO_PASS, R.ASK_PASS])
    s6 = wait_metric(srv, lambda s: s.get("bulwark_rooms_wrong_attempts_total") >= w0 + 2)
    assert s6.get("bulwark_rooms_wrong_attempts_total") == w0 + 2
    e.close()
    for x in (a, b, c, d):
        x.leave()
    s7 = wait_metric(srv, lambda s: s.get("bulwark_rooms") == 0 and s.get("bulwark_rooms_members") == 0)
    assert s7.get("bulwark_rooms") == 0 and s7.get("bulwark_rooms_members") == 0


def test_rooms_errors_by_kind_and_a_member_cut_off(start_metrics):
    """rooms_line_too_long, rooms_wrong_attempt, and a member that does not
    read while another talks (--rooms-queue 4096): rooms_cut_off_total and
    the engine's output_overflow, once each (and no rooms kind of error a
    second time: the kinds of bulwark_errors_total add up)."""
    srv = start_metrics("--rooms-queue", "4096", "--rooms-rate", "0", rooms=True)
    port = srv.rooms_port
    kinds = ("rooms_line_too_long", "rooms_wrong_attempt", "output_overflow")

    def errors(s):
        return {k: err(s, k) for k in kinds}

    s0 = scrape(srv)
    assert errors(s0) == dict.fromkeys(kinds, 0)
    assert s0.get("bulwark_rooms_cut_off_total") == 0
    # a line over 4096 bytes at the menu
    with R.RoomClient(port, source="127.0.0.91") as x:
        x.send(b"y" * (R.LINE_MAX + 100))
        assert R.TOO_LONG in x.wait_closed()
    s1 = wait_metric(srv, lambda s: err(s, "rooms_line_too_long") >= 1)
    assert errors(s1) == dict(errors(s0), rooms_line_too_long=1)
    # a wrong room id
    a, rid = R.creator(port, "alice", "pw", source="127.0.0.92")
    with R.RoomClient(port, source="127.0.0.93") as e:
        e.line("1", "eve")
        e.expect_seq([R.ASK_NAME, R.ASK_ID])
        e.line("999")
        e.expect_seq([R.NO_ID, R.ASK_ID])
    s2 = wait_metric(srv, lambda s: err(s, "rooms_wrong_attempt") >= 1)
    assert errors(s2) == dict(errors(s1), rooms_wrong_attempt=1)
    assert s2.get("bulwark_rooms_wrong_attempts_total") == 1
    # a member that does not read
    slow = R.member(port, "slow", rid, "pw", source="127.0.0.94", rcvbuf=4096)
    try:
        a.expect(R.joined("slow"))
        batch = ("z" * 1000 + "\n") * 64
        deadline = time.monotonic() + 10
        sent = 0
        while time.monotonic() < deadline:
            a.send(batch)
            sent += 1
            if scrape(srv).get("bulwark_rooms_cut_off_total") > 0:
                break
        a.expect("slow" + R.NOT_READING)
        s3 = scrape(srv)
        assert s3.get("bulwark_rooms_cut_off_total") == 1, "not cut off after %d KB" % (sent * 64)
        assert errors(s3) == dict(errors(s2), output_overflow=1)
        assert 'kind="rooms_not_reading"' not in s3.text
        assert s3.get("bulwark_rooms_members") == 1
        a.line("still here")  # alice talks on; nothing more is cut off
        a.leave()
        s4 = wait_metric(srv, lambda s: s.get("bulwark_rooms_members") == 0)
        assert errors(s4) == errors(s3)
        assert s4.get("bulwark_rooms_cut_off_total") == 1
    finally:
        slow.close()
        a.close()


def scrape_while_rooms_are_made(srv, n):
    """n rooms created at once (each password hashed with scrypt, tens of ms)
    from n addresses, scraped every 10 ms until all are made and nothing is
    hashed: (passwords being hashed, worker jobs) of each scrape."""
    clients = []
    try:
        for i in range(n):
            clients.append(R.RoomClient(srv.rooms_port, source="127.0.2.%d" % (i + 1)))
        for i, c in enumerate(clients):
            c.line("2", "u%d" % i, "pw%d" % i)  # create: the choice, a name, a password
        seen = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            s = scrape(srv)
            seen.append((s.get("bulwark_rooms_hashing"), s.get("bulwark_worker_jobs")))
            if s.get("bulwark_rooms") == n and seen[-1] == (0, 0):
                break
            time.sleep(0.01)
        assert s.get("bulwark_rooms") == n, "%d rooms after 20 s" % s.get("bulwark_rooms")
        assert seen[-1] == (0, 0)
        for c in clients:
            c.expect("You can start to talk!")
        return seen
    finally:
        for c in clients:
            c.close()


def test_rooms_hashing_and_worker_jobs_while_passwords_are_hashed(start_metrics):
    """With one worker, room passwords are hashed one at a time: twelve
    creations at once keep the worker busy long enough for scrapes to see
    it, and every scrape sees as many worker jobs as passwords being hashed
    (at most 1)."""
    seen = scrape_while_rooms_are_made(start_metrics("--workers", "1", rooms=True), 12)
    busy = [x for x in seen if x[0] > 0]
    assert busy, "no scrape of %d saw a password being hashed" % len(seen)
    assert all(h == 1 for h, _ in busy), busy
    assert all(h == j for h, j in seen), seen


def test_many_workers_hash_at_most_four_passwords_at_once(start_metrics):
    """Each hash holds 16 MiB: sixteen workers (a daemon on S3 has them for
    the store's round trips) still hash at most four passwords at once, and
    the other workers stay free for the store."""
    seen = scrape_while_rooms_are_made(start_metrics("--workers", "16", rooms=True), 24)
    busy = [h for h, _ in seen if h > 0]
    assert busy, "no scrape of %d saw a password being hashed" % len(seen)
    assert max(busy) <= 4, seen


# --------------------------------------------------------------------------
# HTTP


def test_other_paths_are_404(start_metrics):
    srv = start_metrics()
    for path in ("/", "/metric", "/metricsx", "/metrics/", "/favicon.ico", "/METRICS"):
        a = get(srv.metrics_port, path)
        assert a.status == 404, (path, a.raw[:200])
        assert int(a.headers["content-length"]) == len(a.body)
    a = get(srv.metrics_port, "/metrics?name[]=x")
    assert a.status == 200


def test_post_and_other_methods_are_405(start_metrics):
    srv = start_metrics()
    a = http(srv.metrics_port, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert a.status == 405, a.raw[:200]
    for m in ("PUT", "DELETE", "OPTIONS", "get"):
        a = get(srv.metrics_port, method=m)
        assert a.status == 405, (m, a.raw[:200])
    assert srv.alive()


def test_head_gives_the_headers_and_no_body(start_metrics):
    srv = start_metrics()
    a = get(srv.metrics_port, method="HEAD")
    assert a.status == 200, a.raw[:300]
    assert a.body == b""
    assert int(a.headers["content-length"]) > 100
    assert a.headers["content-type"].startswith("text/plain")


def test_a_request_head_over_8k_gets_431(start_metrics):
    srv = start_metrics()
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (9 * 1024) + b"\r\n\r\n"
    a = http(srv.metrics_port, head)
    assert a.status == 431, a.raw[:300]
    # and one line of 8 KiB without an end
    with socket.create_connection((H, srv.metrics_port), timeout=10) as s:
        s.sendall(b"GET /" + b"m" * 8200)
        a = Answer(recv_all(s))
    assert a.status == 431, a.raw[:300]
    assert scrape(srv).get("bulwark_build_info", version=BUILD_VERSION, vault_protocol="3",
                              messenger_protocol="2") == 1


@pytest.mark.stores_nothing("a request that never arrives whole: nothing is stored")
def test_a_silent_or_slow_client_is_closed_at_the_request_deadline(start_metrics):
    srv = start_metrics()
    s0 = scrape(srv)
    d0 = s0.get("bulwark_errors_total", kind="request_deadline")
    i0 = s0.get("bulwark_errors_total", kind="idle_timeout")
    silent = socket.create_connection((H, srv.metrics_port), timeout=5)
    slow = socket.create_connection((H, srv.metrics_port), timeout=5)
    drip = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 200 + b"\r\n"
    closed = {}
    deadline = time.monotonic() + 30
    try:
        i = 0
        while time.monotonic() < deadline and len(closed) < 2:
            if "slow" not in closed:
                try:
                    slow.sendall(drip[i:i + 1])
                    i += 1
                except (BrokenPipeError, ConnectionResetError):
                    closed["slow"] = b""
            for name, s in (("silent", silent), ("slow", slow)):
                if name in closed:
                    continue
                s.settimeout(0.3 if name == "silent" else 0.001)
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    data = b""
                closed[name] = data
            time.sleep(0.2)  # the slow client's pace: a byte every 0.2 s
        assert i < len(drip), "the slow client's head was sent whole"
        assert set(closed) == {"silent", "slow"}, "still open after 30 s: %r" % (
            {"silent", "slow"} - set(closed))
        assert closed["silent"] == b"", closed
        assert not closed["slow"].startswith(b"HTTP/1.1 200"), closed
    finally:
        silent.close()
        slow.close()
    # the slow one passed its request deadline while never idle; the silent
    # one passed both at once (the metrics listener's idle and request
    # limits are both 10 s), and either name is fair for it
    both = lambda s: (s.get("bulwark_errors_total", kind="request_deadline")
                      + s.get("bulwark_errors_total", kind="idle_timeout"))
    s = wait_metric(srv, lambda s: both(s) >= d0 + i0 + 2)
    assert both(s) == d0 + i0 + 2
    assert s.get("bulwark_errors_total", kind="request_deadline") >= d0 + 1
    assert s.get("bulwark_build_info", version=BUILD_VERSION, vault_protocol="3",
                 messenger_protocol="2") == 1


def test_twenty_parallel_scrapes_all_succeed(start_metrics):
    srv = start_metrics()
    n = 20
    socks = [socket.create_connection((H, srv.metrics_port), timeout=10) for _ in range(n)]
    results = [None] * n
    barrier = threading.Barrier(n)

    def one(i):
        try:
            barrier.wait(10)
            socks[i].sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            results[i] = Answer(recv_all(socks[i]))
        except Exception as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for s in socks:
        s.close()
    bad = [(i, r if isinstance(r, Exception) else r.raw[:80]) for i, r in enumerate(results)
           if not isinstance(r, Answer) or r.status != 200]
    assert not bad, "%d of %d scrapes failed: %r\n%s" % (
        len(bad), n, bad[:5],
        "\n".join(ln for ln in srv.log().splitlines() if "metrics" in ln))
    for r in results:
        Scrape(r.text).get("bulwark_start_time_seconds")


def test_twenty_scrapes_in_threads_connecting_on_their_own(start_metrics):
    """The usual case of many scrapers: each connects, asks and reads."""
    srv = start_metrics()
    n = 20
    results = [None] * n
    barrier = threading.Barrier(n)

    def one(i):
        try:
            barrier.wait(10)
            results[i] = get(srv.metrics_port)
        except Exception as e:
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    bad = [(i, r) for i, r in enumerate(results) if not isinstance(r, Answer) or r.status != 200]
    assert not bad, "%d of %d scrapes failed: %r" % (len(bad), n, bad[:5])


def test_process_figures_stored_bytes_and_uploads_cut_by_their_client(start_metrics):
    """process_* as every client library has them, read from the kernel;
    bulwark_stored_bytes (the unit last); an upload whose client closes
    mid-body is counted as cut, one the server stores is not."""
    srv = start_metrics()
    s = scrape(srv)
    assert s.get("process_resident_memory_bytes") > 1 << 20
    assert s.get("process_virtual_memory_bytes") >= s.get("process_resident_memory_bytes")
    assert 3 <= s.get("process_open_fds") <= s.get("process_max_fds")
    assert s.get("process_cpu_seconds_total") >= 0
    assert s.get("process_start_time_seconds") == s.get("bulwark_start_time_seconds")
    assert abs(s.get("process_start_time_seconds") - time.time()) < 600
    # descriptors the daemon opens show
    socks = [socket.create_connection((H, srv.port)) for _ in range(20)]
    try:
        s2 = wait_metric(srv, lambda s2: s2.get("process_open_fds")
                         >= s.get("process_open_fds") + 20)
        assert s2.get("process_open_fds") >= s.get("process_open_fds") + 20
    finally:
        for k in socks:
            k.close()

    assert s.get("bulwark_stored_bytes") == 0 and s.get("bulwark_vault_uploads_cut_total") == 0
    with srv.client() as c:
        bw.expect(c.register(unique_name("cut")), bw.REGISTERED)
        bw.expect(c.send_pubkey(key=rsa_key(0)), bw.KEY_STORED)
        bw.expect(c.send_file("whole.bin", b"w" * 5000).response, bw.FILE_RECEIVED)
        bw.expect(c.crc_ok("whole.bin"), bw.ACK)
        body = bw.aes_encrypt(c.aes_key, os.urandom(200000))
        c.send_raw(bw.pack_request_header(c.client_id, bw.SEND_FILE,
                                          bw.FILE_PREFIX_SIZE + len(body))
                   + bw.pack_file_prefix(len(body), "cut.bin") + body[:50000])
        assert bwd.wait_for(lambda: "event=upload_started" in srv.log()
                            and "file=cut.bin" in srv.log(), 5)
    s = wait_metric(srv, lambda s2: s2.get("bulwark_vault_uploads_cut_total") == 1)
    assert s.get("bulwark_vault_uploads_cut_total") == 1
    assert s.get("bulwark_stored_bytes") == 5000
    assert re.search(r"event=upload_aborted .* file=\S*cut\.bin\S* .*reason=\"the client closed",
                     srv.log()), srv.log_tail()
