"""An HTTP proxy between bulwarkd and the S3 store that misbehaves on
request: answers 500, 503 SlowDown or another S3 error in the store's
place, delays answers, or resets the connection, for the requests a rule
matches, a given number of times. Everything else goes through unchanged
(the signature covers the Host header, which passes as it is).

Each request is read whole (Content-Length; an "Expect: 100-continue" is
answered here), sent to the store on a connection of its own with
"Connection: close", and the store's answer relayed as it comes."""

import re
import socket
import threading
import time

HEAD_END = b"\r\n\r\n"
MAX_HEAD = 64 * 1024


class Rule:
    def __init__(self, method=None, path=None, query=None, action=("status", 503, "SlowDown"),
                 times=None, delay=0.0, after=0.0, gate=None, rewrite=None):
        self.method, self.path, self.query = method, path, query
        # rewrite: fn(body) -> body, the store's whole answer changed on
        # its way and sent as a 200 (a store that answers wrongly: a
        # listing that leaves a key out, or is not a listing)
        self.rewrite = rewrite
        self.action, self.times, self.delay = action, times, delay
        # gate: a threading.Event the request waits for (at most 60 s),
        # logged as "held" when it arrives: a store slow for exactly as
        # long as a test needs, however loaded the machine
        self.gate = gate
        # after: the store's whole answer is held this long before it is
        # relayed (what the store said is older than what it holds then)
        self.after = after
        self.hits = 0

    def matches(self, method, path, query):
        if self.times is not None and self.hits >= self.times:
            return False
        return ((self.method is None or self.method == method)
                and (self.path is None or re.search(self.path, path))
                and (self.query is None or re.search(self.query, query)))


def _read_head(sock, buf):
    while HEAD_END not in buf:
        if len(buf) > MAX_HEAD:
            raise ValueError("head too long")
        chunk = sock.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk
    head, rest = buf.split(HEAD_END, 1)
    return head, rest


class _Sink:
    def sendall(self, data):
        pass


def _dechunk(data):
    out, at = b"", 0
    while True:
        eol = data.index(b"\r\n", at)
        n = int(data[at:eol].split(b";")[0], 16)
        if n == 0:
            return out
        out += data[eol + 2:eol + 2 + n]
        at = eol + 2 + n + 2


class FaultProxy:
    def __init__(self, upstream_port, host="127.0.0.1"):
        self.upstream = (host, upstream_port)
        self.rules = []
        self.log = []  # (method, path, query, what happened, body length)
        self.lock = threading.Lock()
        self.lsock = socket.socket()
        self.lsock.bind((host, 0))
        self.lsock.listen(128)
        self.port = self.lsock.getsockname()[1]
        self.endpoint = "http://%s:%d" % (host, self.port)
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def add(self, **kw):
        r = Rule(**kw)
        with self.lock:
            self.rules.append(r)
        return r

    def clear(self):
        with self.lock:
            self.rules = []

    def close(self):
        self.stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass

    def seen(self, method=None, query=None):
        with self.lock:
            return [e for e in self.log if (method is None or e[0] == method)
                    and (query is None or re.search(query, e[2]))]

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _rule(self, method, path, query):
        with self.lock:
            for r in self.rules:
                if r.matches(method, path, query):
                    r.hits += 1
                    return r
        return None

    def _serve(self, c):
        buf = b""
        try:
            c.settimeout(60)
            while True:
                head, buf = _read_head(c, buf)
                if head is None:
                    return
                lines = head.split(b"\r\n")
                method, target, _ = lines[0].decode("latin-1").split(" ", 2)
                path, _, query = target.partition("?")
                hdrs = []
                length, expect = 0, False
                for ln in lines[1:]:
                    name, _, value = ln.partition(b":")
                    lname = name.strip().lower()
                    if lname == b"content-length":
                        length = int(value.strip())
                    if lname == b"expect":
                        expect = True
                        continue
                    if lname == b"connection":
                        continue
                    hdrs.append(ln)
                if expect:
                    c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                while len(buf) < length:
                    chunk = c.recv(1 << 20)
                    if not chunk:
                        return
                    buf += chunk
                body, buf = buf[:length], buf[length:]
                rule = self._rule(method, path, query)
                what = "passed"
                if rule is not None:
                    if rule.gate is not None:
                        with self.lock:
                            self.log.append((method, path, query, "held", len(body)))
                        rule.gate.wait(60)
                    if rule.delay:
                        time.sleep(rule.delay)
                    kind = rule.action[0]
                    if kind == "lose":
                        # the store acts on it; its answer is lost, and
                        # a 503 comes in its place (from a balancer)
                        self._forward(_Sink(), lines[0], hdrs, body)
                        with self.lock:
                            self.log.append((method, path, query, "lost", len(body)))
                        rule = Rule(action=("status", 503, "SlowDown"))
                        kind = "status"
                    if kind == "reset":
                        with self.lock:
                            self.log.append((method, path, query, "reset", len(body)))
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        return
                    if kind == "status":
                        status, code = rule.action[1], rule.action[2]
                        xml = ("<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>%s</Code>"
                               "<Message>injected</Message></Error>" % code).encode()
                        c.sendall(b"HTTP/1.1 %d Injected\r\nContent-Type: application/xml\r\n"
                                  b"Content-Length: %d\r\n\r\n" % (status, len(xml)) + xml)
                        with self.lock:
                            self.log.append((method, path, query, "%d %s" % (status, code),
                                             len(body)))
                        continue
                    what = "delayed"
                with self.lock:
                    self.log.append((method, path, query, what, len(body)))
                self._forward(c, lines[0], hdrs, body, rule.after if rule else 0.0,
                              rule.rewrite if rule else None)
        except (OSError, ValueError):
            pass
        finally:
            c.close()

    def _forward(self, c, first, hdrs, body, after=0.0, rewrite=None):
        up = socket.create_connection(self.upstream, timeout=60)
        try:
            up.sendall(first + b"\r\n" + b"\r\n".join(hdrs) +
                       b"\r\nConnection: close\r\n\r\n" + body)
            # the answer, as it comes, up to the store's close; a 100
            # Continue of the store's own is not passed on
            head, rest = _read_head(up, b"")
            while head is not None and head.startswith(b"HTTP/1.1 100"):
                head, rest = _read_head(up, rest)
            if head is None:
                return
            lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"connection:")]
            if after or rewrite:
                while True:
                    chunk = up.recv(1 << 20)
                    if not chunk:
                        break
                    rest += chunk
                time.sleep(after)
            if rewrite:
                if any(ln.lower().replace(b" ", b"") == b"transfer-encoding:chunked"
                       for ln in lines):
                    rest = _dechunk(rest)
                rest = rewrite(rest)
                lines = [b"HTTP/1.1 200 OK"] + [ln for ln in lines[1:] if not ln.lower().startswith(
                    (b"content-length:", b"transfer-encoding:"))]
                lines.append(b"Content-Length: %d" % len(rest))
            c.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + rest)
            if rewrite:
                return
            while True:
                chunk = up.recv(1 << 20)
                if not chunk:
                    return
                c.sendall(chunk)
        finally:
            up.close()
