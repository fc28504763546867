"""An independent implementation of the messenger protocol (spec/messages.md)
in Python with PyCryptodome, written from the spec: a client for the
integration tests (keep-alive, or one padded request per connection as the
course's sample clients do) and a minimal server to test the C client
apart from ours."""

import fcntl
import os
import socket
import struct
import termios
import threading

import bwvault as bw

VERSION = 2
REGISTER, LIST, PUBKEY, SEND, PULL = 600, 601, 602, 603, 604
REGISTERED, CLIENTS, KEY, STORED, WAITING, ERROR = 2100, 2101, 2102, 2103, 2104, 9000
KEY_REQUEST, SYM_KEY, TEXT, FILE = 1, 2, 3, 4
SEND_PREFIX = struct.Struct("<16sBI")
RECORD = struct.Struct("<16sIBI")
LIST_ENTRY = 16 + 255
PAD = 1024


class ServerError(Exception):
    """The server answered 9000."""


def pad_to_unit(data):
    return data + bytes((-len(data)) % PAD)


def pack_request(client_id, code, payload=b"", version=VERSION):
    return bw.pack_request_header(client_id, code, len(payload), version) + payload


def parse_records(payload):
    """[(from, id, type, content)] from a 2104 payload; asserts it is whole."""
    out, off = [], 0
    while off < len(payload):
        assert len(payload) - off >= RECORD.size, "partial record header"
        frm, mid, typ, size = RECORD.unpack_from(payload, off)
        off += RECORD.size
        assert len(payload) - off >= size, "record content overruns the payload"
        out.append((frm, mid, typ, payload[off:off + size]))
        off += size
    return out


class MsgClient:
    """One user of the messenger. padded=True: one connection per request,
    requests zero-padded to 1024, responses read to the end of the padding."""

    def __init__(self, host, port, padded=False, timeout=10.0):
        self.host, self.port, self.padded, self.timeout = host, port, padded, timeout
        self.sock = None
        self.client_id = bytes(16)
        self.key = None
        self.name = None

    # transport ---------------------------------------------------------
    def connect(self):
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        return self.sock

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send_raw(self, data):
        self.connect().sendall(data)

    def read_response(self, max_payload=1 << 30):
        s = self.sock
        head = bw.recv_exact(s, bw.RESP_HEADER_SIZE)
        version, code, size = bw.RESP_HEADER.unpack(head)
        assert size <= max_payload, "payload of %d bytes" % size
        payload = bw.recv_exact(s, size) if size else b""
        if self.padded:
            rest = bw.recv_until_eof(s, limit=PAD)
            assert (len(head) + len(payload) + len(rest)) % PAD == 0, \
                "padded response not a multiple of 1024"
            assert rest == bytes(len(rest)), "padding not zeros"
            self.close()
        return version, code, payload

    def request(self, code, payload=b"", client_id=None, version=VERSION):
        cid = self.client_id if client_id is None else client_id
        msg = pack_request(cid, code, payload, version)
        if self.padded:
            self.close()
            msg = pad_to_unit(msg)
        self.connect().sendall(msg)  # one write: header and payload
        version, rcode, body = self.read_response()
        assert version == VERSION, "server version %d" % version
        return rcode, body

    def ok(self, code, payload, want, want_len=None):
        rcode, body = self.request(code, payload)
        if rcode == ERROR:
            assert body == b""
            raise ServerError("%d -> 9000" % code)
        assert rcode == want, "%d -> %d, wanted %d" % (code, rcode, want)
        if want_len is not None:
            assert len(body) == want_len, "%d: %d payload bytes" % (rcode, len(body))
        return body

    # requests ----------------------------------------------------------
    def register(self, name, key=None):
        self.key = key or bw.new_rsa_key()
        self.name = name
        body = self.ok(REGISTER, bw.name_field(name) + bw.spki_der(self.key), REGISTERED, 16)
        self.client_id = body
        return body

    def list(self):
        body = self.ok(LIST, b"", CLIENTS)
        assert len(body) % LIST_ENTRY == 0
        return [(body[i:i + 16], bw.parse_name_field(body[i + 16:i + LIST_ENTRY]))
                for i in range(0, len(body), LIST_ENTRY)]

    def public_key(self, target):
        body = self.ok(PUBKEY, target, KEY, 176)
        assert body[:16] == target
        return body[16:]

    def send(self, to, typ, content=b""):
        body = self.ok(SEND, SEND_PREFIX.pack(to, typ, len(content)) + content, STORED, 20)
        assert body[:16] == to
        return struct.unpack("<I", body[16:])[0]

    def pull(self):
        return parse_records(self.ok(PULL, b"", WAITING))

    # the conversation of the spec --------------------------------------
    def send_key_request(self, to):
        return self.send(to, KEY_REQUEST)

    def send_sym_key(self, to, aes_key):
        return self.send(to, SYM_KEY, bw.wrap_key(self.public_key(to), aes_key))

    def send_text(self, to, aes_key, text):
        return self.send(to, TEXT, bw.aes_encrypt(aes_key, text))


class PyMsgServer:
    """A minimal messenger server written from the spec, to test the C client
    apart from bulwarkd. Knobs: mode 'keepalive' (serves many requests per
    connection, no padding) or 'recv1024' (one recv(1024) per connection,
    response padded to 1024, then close); error_codes: request codes always
    answered 9000; garbage: bytes sent instead of any response; keep: pulls
    never delete (every pull delivers everything again).

    Pull knobs (attributes, may be changed while it runs): cut_pulls: that
    many next pulls send the 2104's header and its payload up to the middle
    of record cut_record's content (0-based), then close the connection
    (FIN), deleting nothing; pull_reply: bytes sent as the whole response to
    every 604 (its padding too in recv1024 mode); watch_end: after a 2104,
    the connection is kept and the client's way of ending it recorded in
    .ends as {"how": "eof" | "reset" | "data" | "timeout", "unacked":
    bytes the client had not acknowledged when it ended}; the socket stays
    open in .held (closed by stop()) so a test can see what came after.

    Lost answers (attributes, sets of request codes, may be changed while it
    runs): lost_answers: the request is carried out (a 600 registers, a 603
    is queued), then the connection closes with no answer at all; dropped:
    the connection closes on the request, nothing done. list_reply: bytes
    sent as the whole response to every 601, then the connection closes."""

    def __init__(self, mode="keepalive", error_codes=(), garbage=None, keep=False,
                 cut_pulls=0, cut_record=1, pull_reply=None, watch_end=False,
                 lost_answers=(), dropped=(), list_reply=None):
        self.mode, self.error_codes, self.garbage = mode, set(error_codes), garbage
        self.lost_answers, self.dropped = set(lost_answers), set(dropped)
        self.list_reply = list_reply
        self.keep = keep
        self.cut_pulls, self.cut_record = cut_pulls, cut_record
        self.pull_reply, self.watch_end = pull_reply, watch_end
        self.ends = []
        self.held = []
        self.clients = {}  # id -> [name, spki]
        self.queues = {}  # id -> [(from, id, type, content)]
        self.next_id = 1
        self.errors = []
        self.requests = []  # (code, payload length, one write?)
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stopping = False

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass
        for h in self.held:
            h.close()
        self.held = []

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            with conn:
                conn.settimeout(10)
                if self.mode == "recv1024":
                    data = conn.recv(1024)
                    if len(data) < bw.REQ_HEADER_SIZE:
                        return
                    cid, _, code, size = bw.REQ_HEADER.unpack_from(data)
                    payload = data[bw.REQ_HEADER_SIZE:bw.REQ_HEADER_SIZE + size]
                    with self.lock:
                        self.requests.append((code, size, len(payload) == size))
                    if len(payload) != size:
                        return  # the request did not come in one write
                    if self._unanswered(conn, cid, code, payload):
                        return
                    resp = self._answer(cid, code, payload)
                    if isinstance(resp, _Cut):
                        conn.sendall(resp.data)
                        return
                    if code == PULL and self.pull_reply is not None:
                        conn.sendall(self.pull_reply)
                        return
                    conn.sendall(pad_to_unit(resp))
                    if code == PULL and self.watch_end:
                        self._watch(conn)
                    return
                while True:
                    try:
                        head = bw.recv_exact(conn, bw.REQ_HEADER_SIZE)
                    except (EOFError, ConnectionError, OSError):
                        return
                    if len(head) < bw.REQ_HEADER_SIZE:
                        return  # the client closed: one request per connection
                    cid, _, code, size = bw.REQ_HEADER.unpack(head)
                    payload = bw.recv_exact(conn, size) if size else b""
                    with self.lock:
                        self.requests.append((code, size, True))
                    if self._unanswered(conn, cid, code, payload):
                        return  # closed with no (whole) answer
                    resp = self._answer(cid, code, payload)
                    if isinstance(resp, _Cut):
                        conn.sendall(resp.data)
                        return  # closed in the middle of the reply
                    if code == PULL and self.pull_reply is not None:
                        conn.sendall(self.pull_reply)
                        continue
                    conn.sendall(resp)
                    if code == PULL and self.watch_end:
                        self._watch(conn)
                        return
        except Exception as e:  # noqa: BLE001 - reported to the test
            self.errors.append(repr(e))

    def _unanswered(self, conn, cid, code, payload):
        """The knobs that close the connection with no answer (or with
        list_reply): True when the request was handled so."""
        if code in self.dropped:
            return True
        if code in self.lost_answers:
            self._answer(cid, code, payload)
            return True
        if code == LIST and self.list_reply is not None:
            conn.sendall(self.list_reply)
            return True
        return False

    def _watch(self, conn):
        """How the client ends the connection after a 2104."""
        end = {"how": "timeout", "unacked": None}
        try:
            data = conn.recv(1)
            end["how"] = "data" if data else "eof"
        except ConnectionResetError:
            end["how"] = "reset"
        except socket.timeout:
            pass
        try:
            end["unacked"] = unacked(conn)
        except OSError:
            pass
        with self.lock:
            self.ends.append(end)
            self.held.append(conn.dup())

    def _resp(self, code, payload=b""):
        return bw.pack_response(code, payload, VERSION)

    def _answer(self, cid, code, payload):
        if self.garbage is not None:
            return self.garbage
        if code in self.error_codes:
            return self._resp(ERROR)
        with self.lock:
            if code == REGISTER:
                name = bw.parse_name_field(payload[:255])
                if any(v[0] == name for v in self.clients.values()):
                    return self._resp(ERROR)
                new = os.urandom(16)
                self.clients[new] = [name, payload[255:415]]
                self.queues[new] = []
                return self._resp(REGISTERED, new)
            if cid not in self.clients:
                return self._resp(ERROR)
            if code == LIST:
                return self._resp(CLIENTS, b"".join(
                    i + bw.name_field(v[0]) for i, v in self.clients.items() if i != cid))
            if code == PUBKEY:
                if payload not in self.clients:
                    return self._resp(ERROR)
                return self._resp(KEY, payload + self.clients[payload][1])
            if code == SEND:
                to, typ, size = SEND_PREFIX.unpack_from(payload)
                if to not in self.clients:
                    return self._resp(ERROR)
                mid = self.next_id
                self.next_id += 1
                self.queues[to].append((cid, mid, typ, payload[SEND_PREFIX.size:]))
                return self._resp(STORED, to + struct.pack("<I", mid))
            if code == PULL:
                q = self.queues[cid]
                body = self._resp(WAITING, b"".join(
                    RECORD.pack(f, i, t, len(c)) + c for f, i, t, c in q))
                if self.cut_pulls > 0 and len(q) > self.cut_record:
                    self.cut_pulls -= 1
                    at = bw.RESP_HEADER_SIZE + sum(RECORD.size + len(r[3])
                                                   for r in q[:self.cut_record])
                    at += RECORD.size + len(q[self.cut_record][3]) // 2
                    return _Cut(body[:at])
                if not self.keep:
                    self.queues[cid] = []
                return body
        return self._resp(ERROR)


class _Cut:
    """A response cut short: these bytes, then the connection closes."""

    def __init__(self, data):
        self.data = data


TCP_CLOSE_WAIT, TCP_CLOSE = 8, 7


def unacked(sock):
    """Bytes sent on sock that the peer has not acknowledged (SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ,
                                          b"\0" * 4))[0]


def tcp_state(sock):
    """The kernel's TCP state of sock (tcpi_state: TCP_CLOSE_WAIT, ...)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
