"""The operator console and the metrics endpoint against peers that would
lock the operator out by holding every slot (connections that trickle a
wrong `Hi`, or just connect and wait, or send half an HTTP request), and
`bulwark console` against a server whose replies carry C1 controls and
bidi overrides. Servers are conftest's start_server(console=True); the
console protocol is spoken by hand (docs/console.md). Every loop is
bounded in count and time; nothing asserts a duration."""

import re
import selectors
import socket
import subprocess
import threading
import time
import traceback

import pytest

import bwd

GREETING_LEN = 48
SECRET = "op-" + "s3cr3t" * 10  # 63 bytes: `Hi <secret>` is 66, a trickle takes long
CONSOLE_CAP = 128
METRICS_LISTEN_RE = re.compile(r"metrics listening on ([0-9.]+):(\d+)")


def recv_exact(sock, n):
    out = b""
    while len(out) < n:
        data = sock.recv(n - len(out))
        if not data:
            break
        out += data
    return out


def ask_time(port, secret=None, timeout=5.0):
    """A real operator: connects, sends `Hi` (or `Hi <secret>`) and TIME in
    one write, reads the greeting and the reply. Returns the reply's text,
    or None with why when the answer is not complete."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            hi = b"Hi" if secret is None else b"Hi " + secret.encode()
            s.sendall(hi + b"TIME")
            g = recv_exact(s, GREETING_LEN)
            if not g.startswith(b"bulwarkd 3: "):
                return None, "greeting %r" % g
            head = recv_exact(s, 4)
            if not re.fullmatch(rb"\d{4}", head):
                return None, "length %r" % head
            text = recv_exact(s, int(head))
            if len(text) != int(head):
                return None, "text cut at %d of %s" % (len(text), head)
            return text.decode(), None
    except OSError as e:
        return None, repr(e)


def stat_connections(port, secret=None):
    text = None
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        hi = b"Hi" if secret is None else b"Hi " + secret.encode()
        s.sendall(hi + b"STAT")
        recv_exact(s, GREETING_LEN)
        n = int(recv_exact(s, 4))
        text = recv_exact(s, n).decode()
    m = re.search(r"^connections: (.*)$", text, re.M)
    return {k: int(v) for k, v in (p.split() for p in m.group(1).split(","))}


def open_idle(port, n):
    """n connections that send nothing."""
    out = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        out.append(s)
    return out


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


class Tricklers:
    """n connections that send `Hi ` and then a wrong secret one byte every
    period seconds, and connect again whenever the server closes them. One
    thread, one selector; stop() ends it (bounded)."""

    def __init__(self, port, n, period=0.4):
        self.port = port
        self.n = n
        self.period = period
        self.stream = b"Hi " + b"x" * 4096
        self.stop_ev = threading.Event()
        self.errors = []
        self.connects = 0
        self.t = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.t.start()
        return self

    def _open(self, sel, slots, i, now):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            slots[i] = None
            return
        self.connects += 1
        # the first byte at once, then one every period (spread out)
        slots[i] = {"s": s, "sent": 0, "next": now}
        sel.register(s, selectors.EVENT_READ, i)

    def _drop(self, sel, slots, i):
        s = slots[i]["s"]
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()
        slots[i] = None

    def _run(self):
        sel = selectors.DefaultSelector()
        slots = [None] * self.n
        try:
            t0 = time.monotonic()
            for i in range(self.n):
                self._open(sel, slots, i, t0 + self.period * i / self.n)
            while not self.stop_ev.is_set():
                now = time.monotonic()
                for i in range(self.n):
                    sl = slots[i]
                    if sl is None:
                        self._open(sel, slots, i, now + self.period)
                        continue
                    if now >= sl["next"]:
                        try:
                            sl["s"].send(self.stream[sl["sent"]:sl["sent"] + 1])
                            sl["sent"] += 1
                            sl["next"] = now + self.period
                        except BlockingIOError:
                            sl["next"] = now + 0.05  # not connected yet
                        except OSError:
                            self._drop(sel, slots, i)
                for key, _ in sel.select(0.05):
                    i = key.data
                    try:
                        data = key.fileobj.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:  # closed by the server: again
                        self._drop(sel, slots, i)
        except Exception:
            self.errors.append(traceback.format_exc())
        finally:
            for sl in slots:
                if sl is not None:
                    sl["s"].close()
            sel.close()

    def stop(self):
        self.stop_ev.set()
        self.t.join(timeout=10)
        assert not self.t.is_alive(), "the trickling thread did not stop"
        assert not self.errors, self.errors


# --------------------------------------------------------------------------
# 7. The console's slots


@pytest.mark.slow
def test_the_operator_gets_in_past_trickling_and_idle_connections(start_server):
    """The attack: with --console-secret, 140 connections trickle `Hi `
    and a wrong secret one byte every 0.4 s (connecting again whenever
    they are closed), and 128 more connect and send nothing; all 128
    slots are taken. A full console used to admit a newcomer only by
    closing a connection idle for over a second, and none is: the operator
    was refused every time. A newcomer must take the slot of the oldest
    connection that has not authenticated yet: the operator, `Hi <secret>`
    then TIME, gets a complete answer 10 times out of 10."""
    srv = start_server("--console-secret", SECRET, console=True)
    port = srv.console_port
    trick = Tricklers(port, 140).start()
    results = []
    idle = []
    try:
        # every trickler has connected and is sending
        assert bwd.wait_for(lambda: trick.connects >= 140, 10), trick.connects
        # trickling for over a second, so that none of them is idle for a
        # second (the rule that locked the operator out) only because time
        # has not passed
        time.sleep(1.0)
        for _ in range(10):
            idle = open_idle(port, CONSOLE_CAP)  # opened within the last second
            bwd.wait_for(lambda: bwd.read_by_peer(*idle), 5)  # each taken (or let go)
            results.append(ask_time(port, SECRET))
            close_all(idle)
            idle = []
    finally:
        close_all(idle)
        trick.stop()
    ok = [text for text, _ in results if text is not None]
    assert len(ok) == 10, "the operator got a complete answer %d times out of 10: %r" % (
        len(ok), [why for _, why in results if why][:3])
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", t) for t in ok), ok
    assert srv.alive()


def test_idle_consoles_just_opened_do_not_keep_a_real_console_out(start_server):
    """The attack, without a secret: 128 connections that say nothing,
    opened less than a second before a real console connects. None had
    been idle for over a second, so a full console refused the real one.
    A connection that has not completed a request yet must give its slot to
    a newcomer: `Hi` then TIME is answered, each of three times."""
    srv = start_server(console=True)
    port = srv.console_port
    results = []
    idle = []
    try:
        for _ in range(3):
            # the previous round's connections are gone
            assert bwd.wait_for(lambda: stat_connections(port)["console"] == 1, 10)
            idle = open_idle(port, CONSOLE_CAP)
            bwd.wait_for(lambda: bwd.read_by_peer(*idle), 5)  # each taken (or let go)
            results.append(ask_time(port))
            close_all(idle)
            idle = []
    finally:
        close_all(idle)
    ok = [text for text, _ in results if text is not None]
    assert len(ok) == 3, "a real console was answered %d times out of 3: %r" % (
        len(ok), [why for _, why in results if why])
    assert srv.alive()


# --------------------------------------------------------------------------
# 8. The metrics endpoint's slots


def test_a_scrape_gets_through_seventy_half_sent_requests(start_server):
    """The attack: 70 connections to --metrics-listen each send "G" (the
    first byte of a GET) and wait. The endpoint takes 64 connections and
    used to refuse every newcomer once full, so Prometheus could not
    scrape until the requests' deadline. A newcomer must take the slot of
    the oldest connection whose request is incomplete: a full GET /metrics
    is answered 200 with the figures, each of three times."""
    srv = start_server("--metrics-listen", "127.0.0.1:0")
    m = bwd.wait_for(lambda: METRICS_LISTEN_RE.search(srv.log()), 5)
    assert m, srv.log_tail()
    port = int(m.group(2))
    half = []
    answers = []
    try:
        for _ in range(70):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"G")
            half.append(s)
        bwd.wait_for(lambda: bwd.read_by_peer(*half), 5)  # each "G" read (or let go)
        for _ in range(3):
            raw = b""
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline and len(raw) < 16 << 20:
                        data = s.recv(65536)
                        if not data:
                            break
                        raw += data
            except OSError as e:
                raw += b" [%r]" % e
            answers.append(raw)
    finally:
        close_all(half)
    for raw in answers:
        assert raw.startswith(b"HTTP/1.1 200 "), (
            "the scrape was not answered past 70 half-sent requests: %r" % raw[:200])
        head, _, body = raw.partition(b"\r\n\r\n")
        m = re.search(rb"(?im)^content-length: *(\d+)", head)
        assert m and int(m.group(1)) == len(body), (head, len(body))
        assert re.search(rb'\nbulwark_build_info\{node="[\w.-]+",version=', body), body[:300]
    assert srv.alive()


# --------------------------------------------------------------------------
# 9. `bulwark console` shows C1 controls and bidi overrides as "?"


def test_the_console_client_shows_c1_controls_and_bidi_overrides_as_question_marks(tmp_path):
    """The attack: a hostile (or compromised) console server replies to
    NAME with U+009B (CSI: a terminal that takes 8-bit controls starts an
    escape sequence there), U+009D (OSC) and U+202E (RIGHT-TO-LEFT
    OVERRIDE: what follows is shown reversed). `bulwark console` replaced
    only C0 controls and DEL; each of these must also be shown as "?", and
    none of the three reach its output."""
    bwd.require_file(bwd.BULWARK, "bulwark", "BULWARK")
    name_text = "bulwarkd A\u009bB\u009dC\u202eD [31m"
    errors = []
    got = []
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    ls.settimeout(15)

    def reply(conn, text):
        data = text.encode("utf-8")
        conn.sendall(b"%04d" % len(data) + data)

    def serve():
        try:
            conn, _ = ls.accept()
            with conn:
                conn.settimeout(15)
                got.append(recv_exact(conn, 2))
                conn.sendall(b"bulwarkd 3: TIME NAME RAND STAT USRS FILS EXIT  ")
                while True:
                    req = recv_exact(conn, 4)
                    if len(req) < 4:
                        return
                    got.append(req)
                    if req == b"NAME":
                        reply(conn, name_text)
                    elif req == b"TIME":
                        reply(conn, "2026-11-21T05:00:00+00:00 \u202eevil\u009b2J")
                    elif req == b"EXIT":
                        reply(conn, "bye")
                        return
                    else:
                        reply(conn, "ERR unknown request")
        except Exception:
            errors.append(traceback.format_exc())
        finally:
            ls.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    r = subprocess.run([str(bwd.BULWARK), "console", "127.0.0.1:%d" % ls.getsockname()[1]],
                       input=b"name\ntime\n", capture_output=True, timeout=20)
    t.join(timeout=10)
    assert not errors, errors
    assert got == [b"Hi", b"NAME", b"TIME", b"EXIT"], got
    assert r.returncode == 0, (r.returncode, r.stderr)
    out = r.stdout
    for bad in ("\u009b", "\u009d", "\u202e"):
        assert bad.encode("utf-8") not in out, (ascii(bad), out)
    assert b"\x9b" not in out and b"\x9d" not in out, out
    text = out.decode("utf-8")  # and what is left is UTF-8
    assert "bulwarkd A?B?C?D [31m" in text, text
    assert "2026-11-21T05:00:00+00:00 ?evil?2J" in text, text
    assert text.splitlines()[-1] == "bye", text
