"""For the tests of `bulwark probe` (test_probe.py, test_probe_defects.py,
test_probe_client.py, test_deviations.py): running the probe and reading
its report, and small threaded servers of the four protocols that keep
their spec except for one defect each, chosen by name (defect=None:
none), so that a test can check that the probe names that defect, and
only it.

    VaultTarget   the vault (bwvault.PyServer with framing and payload
                  defects)
    MsgTarget     the messenger, deleting a pulled message only on the
                  evidence docs/messenger-protocol.md names (the next
                  request, or an orderly close); a reset keeps it
    RoomsTarget   the rooms' line protocol (docs/rooms.md), without the
                  per-address delays (its tests run the probe --polite)
    ConsoleTarget the operator console (docs/console.md)

Every server listens on 127.0.0.1 on a port the kernel picks, records an
unexpected exception of its threads in .errors, and is stopped by stop().
"""

import datetime
import json
import os
import random
import re
import socket
import struct
import subprocess
import threading
import time
import traceback

import bwd
import bwmsg
import bwrooms
import bwvault as bw

H = "127.0.0.1"
VERDICTS = ("PASS", "FAIL", "DEVIATION", "SKIP")
# `PASS      vault.register.fresh: 2100`: the verdict padded to 9, the id, the note
CASE_LINE_RE = re.compile(r"^(PASS|FAIL|DEVIATION|SKIP) {1,6}([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+): (.*)$")
PROBE_TIMEOUT = 240.0


# --------------------------------------------------------------------------
# Running the probe


class ProbeRun:
    """A finished `bulwark probe`: its exit code, standard output and
    error, and (with --json) the report."""

    def __init__(self, argv, rc, out, err):
        self.argv, self.rc, self.out, self.err = argv, rc, out, err
        self.report = None
        if "--json" in argv and out.strip():
            self.report = json.loads(out)

    @property
    def cases(self):
        """{id: case} of the JSON report."""
        assert self.report is not None, self.describe()
        return {c["id"]: c for c in self.report["cases"]}

    def verdict(self, case_id):
        cases = self.cases
        assert case_id in cases, "no case %s in the report\n%s" % (case_id, self.describe())
        return cases[case_id]["verdict"]

    def verdicts(self):
        return {i: c["verdict"] for i, c in self.cases.items()}

    def not_passed(self):
        """{id: (verdict, note)} of every case that did not PASS."""
        return {i: (c["verdict"], c["note"]) for i, c in self.cases.items()
                if c["verdict"] != "PASS"}

    def stderr_lines(self):
        """[(verdict, id, note)] of the case lines on standard error, in
        their order."""
        out = []
        for ln in self.err.splitlines():
            m = CASE_LINE_RE.match(ln)
            if m:
                out.append((m.group(1), m.group(2), m.group(3)))
        return out

    def describe(self):
        return "argv %s\nexit %r\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
            self.argv, self.rc, self.out[-6000:], self.err[-6000:])


def run_probe(proto, port, *opts, host=H, timeout=PROBE_TIMEOUT, json_report=True, env=None):
    """Runs `bulwark probe PROTO OPTS [--json] HOST:PORT` to its end
    (bounded by timeout); returns a ProbeRun."""
    bwd.require_file(bwd.BULWARK, "bulwark", "BULWARK")
    argv = [str(bwd.BULWARK), "probe", proto] + [str(o) for o in opts]
    if json_report:
        argv.append("--json")
    argv.append("%s:%d" % (host, port))
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout, env=None if env is None else {**os.environ, **env})
    except subprocess.TimeoutExpired as e:
        raise AssertionError("%s did not end within %gs\n--- stderr ---\n%s" % (
            argv, timeout, (e.stderr or b"").decode("utf-8", "replace")[-4000:]))
    return ProbeRun(argv, r.returncode, r.stdout.decode("utf-8", "replace"),
                    r.stderr.decode("utf-8", "replace"))


# --------------------------------------------------------------------------
# Plumbing the servers share


class _Server:
    """A listening socket on 127.0.0.1, a thread per connection."""

    name = "target"

    def __init__(self):
        self.errors = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._lsock = socket.socket()
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((H, 0))
        self._lsock.listen(128)
        self._lsock.settimeout(0.1)
        self.port = self._lsock.getsockname()[1]
        self.conns = 0
        self._open = set()  # connections being served, shut by stop()

    def start(self):
        t = threading.Thread(target=self._accept, name=self.name + "-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        with self.lock:
            left = list(self._open)
        for c in left:  # a thread blocked reading one ends now
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            t.join(timeout=5)
        self._lsock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, peer = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.conns += 1
            t = threading.Thread(target=self._run, args=(conn, peer), daemon=True,
                                 name="%s-%d" % (self.name, self.conns))
            t.start()
            with self.lock:
                self._threads = [x for x in self._threads if x.is_alive()]
                self._threads.append(t)

    def _run(self, conn, peer):
        with self.lock:
            self._open.add(conn)
        try:
            self.serve(conn, peer)
        except (ConnectionError, socket.timeout, BrokenPipeError, _Closed):
            pass
        except Exception:  # recorded for the test to see
            if not self._stop.is_set():
                with self.lock:
                    self.errors.append(traceback.format_exc())
        finally:
            with self.lock:
                self._open.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def serve(self, conn, peer):
        raise NotImplementedError


class _Closed(Exception):
    """The connection is done with."""


def zeros_waiting(conn):
    """Bytes already received that are all zeros (a course-sample client's
    padding), looked at without taking them."""
    old = conn.gettimeout()
    conn.setblocking(False)
    try:
        data = conn.recv(4096, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return False
    except ConnectionError:
        return False
    finally:
        conn.settimeout(old)
    return bool(data) and not any(data)


def drain(conn, wait=0.0):
    """Reads what is waiting (and, with wait, what comes within wait
    seconds, up to the peer's close), so that a close sends FIN, not RST.
    Returns True when the peer closed in order, False on a reset or when
    it did not close."""
    old = conn.gettimeout()
    if wait:
        conn.settimeout(wait)
    else:
        conn.setblocking(False)
    try:
        for _ in range(1024):
            if not conn.recv(65536):
                return True
    except (BlockingIOError, InterruptedError, socket.timeout):
        return False
    except ConnectionError:
        return False
    finally:
        try:
            conn.settimeout(old)
        except OSError:
            pass
    return False


def pad_reply(resp):
    return resp + bytes(-len(resp) % 1024)


def padded_reply_then_close(conn, resp):
    """The course sample's way: the padding read, the reply padded to
    1024, our side shut; True when the client then closed in order."""
    drain(conn)
    conn.sendall(pad_reply(resp))
    return shut(conn)


def reply_then_close(conn, resp):
    conn.sendall(resp)
    return shut(conn)


def shut(conn):
    """Shuts our side, then reads to the peer's close (2 s at most): True
    when it closed in order."""
    try:
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        return False  # reset meanwhile
    return drain(conn, wait=2.0)


# --------------------------------------------------------------------------
# The vault


class VaultTarget(bw.PyServer):
    """bwvault.PyServer (which keeps the vault's spec, as the probe sees
    it) with one defect:

      close_after_reply  closes the connection after every reply
      pad_always         pads every reply to 1024 bytes and closes (a
                         course-sample server: one request per connection)
      never_pad          answers a padded request unpadded (and closes)
      pad_keep_open      answers a padded request padded, and keeps the
                         connection open
      ignore_unknown     reads an unknown request code's payload and
                         answers nothing, the connection kept
      wrong_cksum        the first 2103 carries a cksum off by one
      same_aes           1027 hands back the AES key already on record
      taken_payload      2101 carries the id that holds the name (16 bytes)
      answer_1030        1030 is answered 2104
    """

    DEFECTS = ("close_after_reply", "pad_always", "never_pad", "pad_keep_open",
               "ignore_unknown", "wrong_cksum", "same_aes", "taken_payload", "answer_1030")

    def __init__(self, defect=None, **knobs):
        assert defect is None or defect in self.DEFECTS, defect
        if defect == "wrong_cksum":
            knobs.setdefault("wrong_crc", 1)
        knobs.setdefault("timeout", 15.0)
        super().__init__(**knobs)
        self.defect = defect

    def _serve(self, conn, seq):
        conn.settimeout(self.timeout)
        d = self.defect
        try:
            while not self._stop.is_set():
                head = bw.recv_exact(conn, bw.REQ_HEADER_SIZE)
                if len(head) < bw.REQ_HEADER_SIZE:
                    return
                cid, _version, code, size = bw.unpack_request_header(head)
                if d == "ignore_unknown" and code not in bw.REQUEST_CODES:
                    if size > 1024 or len(bw.recv_exact(conn, size)) < size:
                        return
                    continue
                try:
                    resp = self._handle(conn, seq, cid, code, size)
                except bw._Close:
                    return
                if resp is None:
                    continue  # 1030
                padded = zeros_waiting(conn)
                if padded and d == "never_pad":
                    drain(conn)
                    reply_then_close(conn, resp)
                    return
                if padded and d == "pad_keep_open":
                    rest = -(bw.REQ_HEADER_SIZE + size) % 1024
                    if len(bw.recv_exact(conn, rest)) < rest:
                        return
                    conn.sendall(pad_reply(resp))
                    continue
                if padded or d == "pad_always":
                    padded_reply_then_close(conn, resp)
                    return
                if d == "close_after_reply":
                    reply_then_close(conn, resp)
                    return
                conn.sendall(resp)
        except (ConnectionError, socket.timeout):
            pass
        except Exception:  # recorded for the tests to see
            if not self._stop.is_set():
                with self.lock:
                    self.errors.append(traceback.format_exc())
        finally:
            conn.close()

    def _dispatch(self, cid, code, payload, fname, name, body):
        d = self.defect
        if d == "answer_1030" and code == bw.CRC_BAD:
            return bw.pack_response(bw.ACK, cid)
        if d == "same_aes" and code == bw.RECONNECT and name is not None:
            with self.lock:
                rec = self.clients.get(cid)
                if (rec is not None and rec.name == name and rec.pubkey is not None
                        and rec.aes_key is not None):
                    return bw.pack_response(bw.RECONNECTED,
                                            cid + bw.wrap_key(rec.pubkey, rec.aes_key))
        resp = super()._dispatch(cid, code, payload, fname, name, body)
        if d == "taken_payload" and code == bw.REGISTER:
            _, rcode, _ = bw.unpack_response_header(resp[:bw.RESP_HEADER_SIZE])
            if rcode == bw.NAME_TAKEN:
                with self.lock:
                    holder = self.names.get(name, bytes(16))
                return bw.pack_response(bw.NAME_TAKEN, holder)
        return resp


# --------------------------------------------------------------------------
# The messenger


class MsgTarget(_Server):
    """A messenger server (docs/messenger-protocol.md): 600-604 with their
    checks, 9000 for what it refuses, the padded style answered padded and
    closed, and a pulled message deleted only on evidence: the next
    request on the connection, or an orderly close after the reply; a
    reset keeps it. One defect at most:

      delete_on_send     a pulled message is deleted as the 2104 leaves
      list_self          601 lists the requester too
      refuse_version     a request whose version byte is not 2 gets 9000
      close_after_reply  closes the connection after every reply
      pad_always         pads every reply to 1024 bytes and closes
      never_pad          answers a padded request unpadded (and closes)
      pad_keep_open      answers a padded request padded, the connection kept
    """

    name = "msgtarget"
    DEFECTS = ("delete_on_send", "list_self", "refuse_version", "close_after_reply",
               "pad_always", "never_pad", "pad_keep_open")
    CONTENT_MAX = 1 << 20

    def __init__(self, defect=None):
        assert defect is None or defect in self.DEFECTS, defect
        super().__init__()
        self.defect = defect
        self.clients = {}  # id -> (name bytes, spki), in registration order
        self.queues = {}  # id -> [(from, message id, type, content)]
        self.next_id = 1
        self.requests = []  # (code, version, payload size)
        # client -> events of pulls answered on connections we close, set
        # once the client's close said whether they were delivered: its
        # next request (on a new connection) waits for them
        self._deciding = {}

    @staticmethod
    def _resp(code, payload=b""):
        return bw.pack_response(code, payload, bwmsg.VERSION)

    def _answer_and_close(self, conn, resp, pulled, padded):
        """The reply (padded or not), our side shut, the client's close
        awaited: an orderly one delivers what a pull carried."""
        ev = None
        if pulled is not None:
            ev = threading.Event()
            with self.lock:
                self._deciding.setdefault(pulled[0], []).append(ev)
        try:
            if padded:
                orderly = padded_reply_then_close(conn, resp)
            else:
                orderly = reply_then_close(conn, resp)
            if orderly and pulled is not None:
                self._delete(*pulled)
        finally:
            if ev is not None:
                with self.lock:
                    self._deciding[pulled[0]].remove(ev)
                ev.set()

    def _await_decisions(self, cid):
        with self.lock:
            evs = list(self._deciding.get(cid, ()))
        for ev in evs:
            ev.wait(5)

    def _delete(self, cid, ids):
        with self.lock:
            q = self.queues.get(cid)
            if q is not None:
                self.queues[cid] = [m for m in q if m[1] not in ids]

    def queued(self, cid):
        with self.lock:
            return list(self.queues.get(cid, ()))

    def serve(self, conn, peer):
        conn.settimeout(30)
        delivered = None  # (client, ids) the last 2104 carried
        while not self._stop.is_set():
            try:
                head = bw.recv_exact(conn, bw.REQ_HEADER_SIZE)
            except ConnectionResetError:
                return  # a reset shows nothing: what was pulled stays
            if len(head) < bw.REQ_HEADER_SIZE:
                if not head and delivered is not None:
                    self._delete(*delivered)  # closed in order after the reply
                return
            if delivered is not None:
                self._delete(*delivered)  # the next request is the evidence
                delivered = None
            cid, version, code, size = bw.unpack_request_header(head)
            with self.lock:
                self.requests.append((code, version, size))
            self._await_decisions(cid)
            resp, pulled = self._request(conn, cid, version, code, size)
            padded = zeros_waiting(conn)
            d = self.defect
            if pulled is not None and d == "delete_on_send":
                self._delete(*pulled)
                pulled = None
            if padded and d == "never_pad":
                drain(conn)
                self._answer_and_close(conn, resp, pulled, False)
                return
            if padded and d == "pad_keep_open":
                rest = -(bw.REQ_HEADER_SIZE + size) % 1024
                if len(bw.recv_exact(conn, rest)) < rest:
                    return
                conn.sendall(pad_reply(resp))
                delivered = pulled
                continue
            if padded or d == "pad_always":
                self._answer_and_close(conn, resp, pulled, True)
                return
            if d == "close_after_reply":
                self._answer_and_close(conn, resp, pulled, False)
                return
            conn.sendall(resp)
            delivered = pulled

    def _refuse_and_close(self, conn, code=bwmsg.ERROR):
        reply_then_close(conn, self._resp(code))
        raise _Closed()

    def _request(self, conn, cid, version, code, size):
        """Reads the request's payload and answers it: (reply, (client,
        ids) of a 2104's messages or None)."""
        if not 600 <= code <= 604:
            self._refuse_and_close(conn, bwmsg.ERROR if 600 <= code <= 699 else bw.ERROR)
        fixed = {bwmsg.REGISTER: 255 + 160, bwmsg.PUBKEY: 16}
        if code in fixed and size != fixed[code]:
            self._refuse_and_close(conn)
        if code in (bwmsg.LIST, bwmsg.PULL) and size > 1001:
            self._refuse_and_close(conn)
        if code == bwmsg.SEND:
            if size < bwmsg.SEND_PREFIX.size:
                self._refuse_and_close(conn)
            prefix = bw.recv_exact(conn, bwmsg.SEND_PREFIX.size)
            if len(prefix) < bwmsg.SEND_PREFIX.size:
                raise _Closed()
            to, typ, csize = bwmsg.SEND_PREFIX.unpack(prefix)
            if size != bwmsg.SEND_PREFIX.size + csize or csize > self.CONTENT_MAX:
                self._refuse_and_close(conn)
            payload = prefix + bw.recv_exact(conn, csize)
        else:
            payload = bw.recv_exact(conn, size)
        if len(payload) < size:
            raise _Closed()
        if self.defect == "refuse_version" and version != bwmsg.VERSION:
            return self._resp(bwmsg.ERROR), None
        with self.lock:
            if code == bwmsg.REGISTER:
                field = payload[:255]
                end = field.find(b"\0")
                name = field[:end] if end > 0 else None
                if (name is None or any(b < 0x20 or b == 0x7F for b in name)
                        or any(v[0] == name for v in self.clients.values())):
                    return self._resp(bwmsg.ERROR), None
                new = os.urandom(16)
                self.clients[new] = (name, payload[255:415])
                self.queues[new] = []
                return self._resp(bwmsg.REGISTERED, new), None
            if cid not in self.clients:
                return self._resp(bwmsg.ERROR), None
            if code == bwmsg.LIST:
                listed = [(i, v) for i, v in self.clients.items()
                          if i != cid or self.defect == "list_self"]
                return self._resp(bwmsg.CLIENTS, b"".join(
                    i + v[0] + bytes(255 - len(v[0])) for i, v in listed)), None
            if code == bwmsg.PUBKEY:
                if payload not in self.clients:
                    return self._resp(bwmsg.ERROR), None
                return self._resp(bwmsg.KEY, payload + self.clients[payload][1]), None
            if code == bwmsg.SEND:
                to, typ, csize = bwmsg.SEND_PREFIX.unpack_from(payload)
                if to not in self.clients or typ not in (1, 2, 3, 4):
                    return self._resp(bwmsg.ERROR), None
                mid = self.next_id
                self.next_id += 1
                self.queues[to].append((cid, mid, typ, payload[bwmsg.SEND_PREFIX.size:]))
                return self._resp(bwmsg.STORED, to + struct.pack("<I", mid)), None
            q = list(self.queues[cid])  # 604
            body = b"".join(bwmsg.RECORD.pack(f, i, t, len(c)) + c for f, i, t, c in q)
            return self._resp(bwmsg.WAITING, body), (cid, {m[1] for m in q})


# --------------------------------------------------------------------------
# The rooms


MENU = bwrooms.MENU.encode()
JOINS, LEAVES = " has joined the group", " has removed from the group"
HELP_TEXT = "/who lists the members of the room, /exit (or Exit) leaves it"


def clean(raw):
    """docs/rooms.md "Text": invalid UTF-8 becomes U+FFFD, then C0 but tab,
    DEL, C1, the bidi controls and U+2028/U+2029 go."""
    return bwrooms.expected_clean(raw)


class _Member:
    def __init__(self, conn, name):
        self.conn, self.name = conn, name
        self.wlock = threading.Lock()

    def say(self, text):
        with self.wlock:
            try:
                self.conn.sendall(text.encode("utf-8"))
            except OSError:
                pass


class _Lines:
    """A connection's lines: ended by '\\n' (a '\\r' before it dropped) or
    by a pause of `pause` seconds after a partial line."""

    def __init__(self, conn, pause):
        self.conn, self.pause = conn, pause
        self.buf = b""

    def read(self, idle=120.0):
        """The next line (bytes), None at the end; raises _TooLong."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 1:]
                if line.endswith(b"\r"):
                    line = line[:-1]
                if len(line) > bwrooms.LINE_MAX:
                    raise _TooLong()
                return line
            if len(self.buf) > bwrooms.LINE_MAX + 1:
                raise _TooLong()
            self.conn.settimeout(self.pause if self.buf else idle)
            try:
                data = self.conn.recv(65536)
            except socket.timeout:
                if not self.buf:
                    return None
                line, self.buf = self.buf, b""
                return line
            except ConnectionError:
                data = b""
            if not data:
                if self.buf:
                    line, self.buf = self.buf, b""
                    return line
                return None
            self.buf += data


class _TooLong(Exception):
    pass


class RoomsTarget(_Server):
    """The rooms' line protocol (docs/rooms.md): the seed's menu and words,
    rooms created and joined with their own password, ids never reused,
    names unique in a room (compared cleaned), lines relayed cleaned as
    `name: text`, join and leave notices, /who, /help, Exit and /exit,
    lines ended by a pause, 4096 bytes at most, five wrong guesses per
    connection. (No per-address delay: run the probe --polite.) One defect
    at most:

      other_password     a password opens any room whose password it is
                         (the seed's defect)
      strip_tab          tabs are removed from lines too
      help_without_who   /help does not name /who
      menu_words         the menu offers 1, 2 and 3 in words of its own
      fffd_twice         each invalid UTF-8 sequence becomes two U+FFFD

    who_flood: that many lines, 10 ms apart, before /who's answer (a
    reply long enough to fill a case's transcript).
    """

    name = "roomstarget"
    DEFECTS = ("other_password", "strip_tab", "help_without_who", "menu_words", "fffd_twice")
    OWN_MENU = ("Welcome to the chat server!\n"
                "  1) join a room\n"
                "  2) make a room\n"
                "  3) leave\n").encode()

    def __init__(self, defect=None, pause=0.15, who_flood=0):
        assert defect is None or defect in self.DEFECTS, defect
        super().__init__()
        self.defect, self.pause, self.who_flood = defect, pause, who_flood
        self.menu = self.OWN_MENU if defect == "menu_words" else MENU
        self.rooms = {}  # id -> {"password": bytes, "members": [_Member]}
        self.next_room = 1

    def _send(self, conn, *lines):
        conn.sendall("".join(ln + "\n" for ln in lines).encode("utf-8"))

    def serve(self, conn, peer):
        lines = _Lines(conn, self.pause)
        fails = [0]
        conn.sendall(self.menu)
        try:
            while True:
                choice = lines.read()
                if choice is None:
                    return
                choice = clean(choice).strip()
                if choice == "1":
                    member = self._join(conn, lines, fails)
                elif choice == "2":
                    member = self._create(conn, lines)
                elif choice in ("3", "Exit", "/exit"):
                    self._send(conn, bwrooms.EXIT_MENU)
                    shut(conn)
                    return
                else:
                    self._send(conn, bwrooms.INVALID)
                    conn.sendall(self.menu)
                    continue
                if member is None:
                    return
                self._talk(conn, lines, *member)
                return
        except _TooLong:
            self._send(conn, bwrooms.TOO_LONG)
            shut(conn)

    def _ask_name(self, conn, lines):
        while True:
            self._send(conn, bwrooms.ASK_NAME)
            raw = lines.read()
            if raw is None:
                return None
            name = clean(raw).strip()
            if 1 <= len(name) <= 64:
                return name
            self._send(conn, bwrooms.NAME_AGAIN)

    def _ask_password(self, conn, lines, question):
        while True:
            self._send(conn, question)
            raw = lines.read()
            if raw is None:
                return None
            if 1 <= len(raw) <= 128:
                return raw
            self._send(conn, bwrooms.EMPTY_PASS if not raw else bwrooms.LONG_PASS)

    def _create(self, conn, lines):
        name = self._ask_name(conn, lines)
        if name is None:
            return None
        password = self._ask_password(conn, lines, bwrooms.ASK_CREATE_PASS)
        if password is None:
            return None
        m = _Member(conn, name)
        with self.lock:
            rid = self.next_room
            self.next_room += 1
            self.rooms[rid] = {"password": password, "members": [m]}
        with m.wlock:
            self._send(conn, *bwrooms.created_lines(rid))
        return rid, m

    @staticmethod
    def _key(name):
        return name.strip()

    def _wrong(self, conn, fails, text):
        fails[0] += 1
        if fails[0] >= 5:
            self._send(conn, bwrooms.TOO_MANY)
            shut(conn)
            raise _Closed()
        self._send(conn, text)

    def _join(self, conn, lines, fails):
        name = self._ask_name(conn, lines)
        if name is None:
            return None
        while True:  # the id
            self._send(conn, bwrooms.ASK_ID)
            raw = lines.read()
            if raw is None:
                return None
            text = clean(raw).strip()
            with self.lock:
                rid = int(text) if text.isdigit() and len(text) < 11 else None
                known = rid in self.rooms
            if not known:
                self._wrong(conn, fails, bwrooms.NO_ID)
                continue
            while True:  # the password
                password = self._ask_password(conn, lines, bwrooms.ASK_PASS)
                if password is None:
                    return None
                with self.lock:
                    room = self.rooms.get(rid)
                    if room is None:
                        ok = None
                    elif self.defect == "other_password":
                        ok = any(r["password"] == password for r in self.rooms.values())
                    else:
                        ok = room["password"] == password
                if ok is None:  # deleted while the password was typed
                    self._send(conn, bwrooms.NO_ID)
                    break
                if not ok:
                    self._wrong(conn, fails, bwrooms.NO_PASS)
                    continue
                while True:  # right: the name must be free in the room
                    with self.lock:
                        room = self.rooms.get(rid)
                        if room is None:
                            taken = None
                        else:
                            taken = any(self._key(x.name) == self._key(name)
                                        for x in room["members"])
                            if not taken:
                                m = _Member(conn, name)
                                others = list(room["members"])
                                room["members"].append(m)
                    if taken is None:
                        self._send(conn, bwrooms.NO_ID)
                        break
                    if taken:
                        self._send(conn, "The name %s is taken in this group, try another" % name)
                        name = self._ask_name(conn, lines)
                        if name is None:
                            return None
                        continue
                    with m.wlock:
                        self._send(conn, bwrooms.connected(rid))
                    for o in others:
                        o.say(name + JOINS + "\n")
                    return rid, m
                break  # back to the id

    def _members(self, rid, but=None):
        with self.lock:
            room = self.rooms.get(rid)
            return [m for m in (room["members"] if room else ()) if m is not but]

    def _leave(self, rid, m):
        with self.lock:
            room = self.rooms.get(rid)
            if room is None or m not in room["members"]:
                return
            room["members"].remove(m)
            others = list(room["members"])
            if not others:
                del self.rooms[rid]
        for o in others:
            o.say(m.name + LEAVES + "\n")

    def _talk(self, conn, lines, rid, m):
        try:
            while True:
                try:
                    raw = lines.read(idle=600.0)
                except _TooLong:
                    m.say(bwrooms.TOO_LONG + "\n")
                    return
                if raw is None:
                    return
                text = clean(raw)
                if self.defect == "strip_tab":
                    text = text.replace("\t", "")
                if self.defect == "fffd_twice":
                    text = text.replace("\ufffd", "\ufffd\ufffd")
                word = text.strip()
                if word in ("Exit", "/exit"):
                    self._leave(rid, m)
                    m.say(bwrooms.BYE + "\n")
                    shut(conn)
                    return
                if word == "/who":
                    for i in range(self.who_flood):
                        m.say("a line of the member list that is not the list yet: %d\n" % i)
                        time.sleep(0.01)  # each its own read at the other end
                    m.say("members: " + ", ".join(x.name for x in self._members(rid)) + "\n")
                    continue
                if word == "/help":
                    m.say(("commands: /exit (or Exit) leaves the room"
                           if self.defect == "help_without_who" else HELP_TEXT) + "\n")
                    continue
                if not text:
                    continue
                for o in self._members(rid, but=m):
                    o.say("%s: %s\n" % (m.name, text))
        finally:
            self._leave(rid, m)


# --------------------------------------------------------------------------
# The console


GREETING = b"bulwarkd 3: TIME NAME RAND STAT USRS FILS EXIT  "
assert len(GREETING) == 48


class ConsoleTarget(_Server):
    """The operator console (docs/console.md): `Hi` (or `Hi SECRET`), the
    48-byte greeting, 4-byte requests answered with 4 ASCII digits and
    the text, ERR for an unknown request, EXIT answered `bye` and closed,
    requests pipelined; anything but `Hi` first is closed without a
    reply. One defect at most:

      short_greeting     the greeting is 47 bytes (a space short)
      long_greeting      the greeting is 50 bytes
      greeting_no_fils   48 bytes, but FILS is not listed
      name_no_version    NAME has no version number
      rand_constant      RAND is always 4
      lower_case         `time` is served as TIME
      exit_open          EXIT is answered `bye`, the connection kept
      impatient          a request must be whole within 0.2 s of its first byte
      no_hi_kept_open    a first request that is not Hi is ignored, the
                         connection kept
      stat_no_uploads    STAT says nothing of uploads
    name_text: NAME's text (default "pyconsole 0.1").
    """

    name = "consoletarget"
    DEFECTS = ("short_greeting", "long_greeting", "greeting_no_fils", "name_no_version",
               "rand_constant", "lower_case", "exit_open", "impatient", "no_hi_kept_open",
               "stat_no_uploads")

    def __init__(self, defect=None, secret=None, name_text="pyconsole 0.1"):
        assert defect is None or defect in self.DEFECTS, defect
        super().__init__()
        self.defect, self.secret, self.name_text = defect, secret, name_text
        self.started = time.time()

    def _greeting(self):
        if self.defect == "short_greeting":
            return GREETING[:47]
        if self.defect == "long_greeting":
            return GREETING + b"  "
        if self.defect == "greeting_no_fils":
            return GREETING.replace(b"FILS ", b"")[:48].ljust(48)
        return GREETING

    def _text(self, req):
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        if self.defect == "lower_case":
            req = req.upper()
        if req == b"TIME":
            return now.isoformat()
        if req == b"NAME":
            return "pyconsole" if self.defect == "name_no_version" else self.name_text
        if req == b"RAND":
            if self.defect == "rand_constant":
                return "4"
            return str(random.SystemRandom().randint(1, 10))
        if req == b"STAT":
            up = int(time.time() - self.started)
            text = ("uptime: %d s\nconnections: console 1\nclients: 0\nfiles: 0\n"
                    "bytes stored: 0\nuploads in progress: 0\n" % up)
            if self.defect == "stat_no_uploads":
                text = text.replace("uploads in progress: 0\n", "")
            return text
        if req == b"USRS":
            return "no clients\n"
        if req == b"FILS":
            return "no files\n"
        shown = "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else "\\x%02x" % b for b in req)
        return "ERR unknown request '%s'; try TIME NAME RAND STAT USRS FILS EXIT" % shown

    def serve(self, conn, peer):
        conn.settimeout(10)
        hello = b"Hi" if self.secret is None else b"Hi " + self.secret.encode()
        got = b""
        while len(got) < len(hello):
            data = conn.recv(len(hello) - len(got))
            if not data:
                return
            got += data
            if not hello.startswith(got[:len(hello)]):
                if self.defect == "no_hi_kept_open":
                    drain(conn, wait=8.0)  # ignored, not closed
                return  # not Hi: closed without a reply
        conn.sendall(self._greeting())
        conn.settimeout(300)
        while True:
            req = self._request(conn)
            if req is None:
                return
            if req in (b"EXIT", b"QUIT"):
                conn.sendall(b"0003bye")
                if self.defect == "exit_open":
                    continue
                shut(conn)
                return
            text = self._text(req).encode("utf-8")[:9999]
            conn.sendall(b"%04d" % len(text) + text)

    def _request(self, conn):
        """The next 4 bytes (None at the end, or when the impatient one's
        0.2 s pass after the first byte)."""
        first = conn.recv(4)
        if not first:
            return None
        req = first
        if len(req) < 4 and self.defect == "impatient":
            conn.settimeout(0.2)
        try:
            while len(req) < 4:
                data = conn.recv(4 - len(req))
                if not data:
                    return None
                req += data
        except socket.timeout:
            return None
        finally:
            conn.settimeout(300)
        return req
