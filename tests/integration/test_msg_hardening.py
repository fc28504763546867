"""Hardening of the messenger of the real bulwarkd, driven by the
independent client of bwmsg.py and raw sockets:

1. interop lenience for a widely copied course C++ client that pads every
   request to 1024 bytes and gets payload_size wrong (0 for 600, 602 and
   603, a stray payload for 601 and 604), while a client that does not pad
   keeps strict framing;
2. a 603 that announces a large content and then trickles it reserves only
   the bytes it has delivered in its recipient's queue, and the queue limit
   is checked again when a body ends;
3. one source address holds at most --max-bodies-per-addr body slots;
4. when every body slot is held, a newcomer evicts the holder that would
   take longest to finish;
5. one 604 carries at most --pull-max-messages messages, and a client has
   at most --max-pulls-per-client 604s answered at once;
6. 2101/2104 replies that are never read share one memory budget
   (--reply-memory): the stalest is closed, its messages stay queued.

Source addresses: all of 127.0.0.0/8 is loopback, so client sockets bound
to 127.0.0.2, 127.0.0.3 act as different peers of a server listening on
127.0.0.1."""

import os
import re
import resource
import select
import socket
import sqlite3
import struct
import threading
import time

import pytest

import bwd
import bwmsg
import bwvault as bw
from bwd import rsa_key, unique_name

H = "127.0.0.1"
KiB = 1 << 10
MiB = 1 << 20
PAD = 1024
V = bwmsg.VERSION


# --------------------------------------------------------------------------
# Helpers


def user(srv, i=None, prefix="hd"):
    """A registered keep-alive client."""
    c = bwmsg.MsgClient(H, srv.port)
    c.register(unique_name(prefix), key=rsa_key(i))
    return c


def connect(srv, src=None, rcvbuf=None, timeout=10.0):
    """A raw connection to bulwarkd, from source address src (127.0.0.x),
    with a small receive buffer if rcvbuf is given (set before connect, so
    the window the server sees is small from the start)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if src is not None:
        s.bind((src, 0))
    s.settimeout(timeout)
    s.connect((H, srv.port))
    return s


def header(client_id, code, payload_size):
    return bw.pack_request_header(client_id, code, payload_size, V)


def padded(data):
    return bwmsg.pad_to_unit(data)


def read_reply(sock, max_payload=1 << 30):
    """A whole response: (code, payload); asserts it is whole."""
    head = bw.recv_exact(sock, bw.RESP_HEADER_SIZE)
    assert len(head) == bw.RESP_HEADER_SIZE, \
        "connection closed after %d bytes of a response header" % len(head)
    version, code, size = bw.RESP_HEADER.unpack(head)
    assert version == V, "response version %d" % version
    assert size <= max_payload, "response %d with payload_size %d" % (code, size)
    body = bw.recv_exact(sock, size)
    assert len(body) == size, "response %d cut short: %d of %d bytes" % (code, len(body), size)
    return code, body


def read_until_close(sock, limit=16 * MiB):
    """Everything until bulwarkd closes; fails if it does not close within
    the socket's timeout."""
    try:
        return bw.recv_until_eof(sock, limit=limit)
    except socket.timeout:
        raise AssertionError("bulwarkd did not close the connection after its reply")


def padded_exchange(srv, request, timeout=10.0):
    """One request on its own connection, as the course client does:
    returns (code, payload, whole reply) once bulwarkd has closed, after
    checking the reply is zero-padded to a multiple of 1024."""
    s = connect(srv, timeout=timeout)
    try:
        s.sendall(request)
        data = read_until_close(s)
    finally:
        s.close()
    assert len(data) >= bw.RESP_HEADER_SIZE, "reply of %d bytes: %r" % (len(data), data)
    _, code, size = bw.RESP_HEADER.unpack_from(data)
    payload = data[bw.RESP_HEADER_SIZE:bw.RESP_HEADER_SIZE + size]
    return code, payload, data


def assert_padded_reply(data, code, want_code, want_len=PAD):
    assert code == want_code, "answered %d, wanted %d (reply %d bytes)" % (
        code, want_code, len(data))
    assert len(data) == want_len, "reply of %d bytes, wanted %d (zero-padded)" % (
        len(data), want_len)
    _, _, size = bw.RESP_HEADER.unpack_from(data)
    assert data[bw.RESP_HEADER_SIZE + size:] == bytes(len(data) - bw.RESP_HEADER_SIZE - size), \
        "padding is not zeros"


def lenient_lines(srv):
    return [ln for ln in srv.log().splitlines() if "lenient" in ln]


def send_603(srv, sender, to, content, src=None, typ=3, timeout=10.0):
    """A whole 603 on a fresh connection (from src): the reply's code."""
    s = connect(srv, src=src, timeout=timeout)
    try:
        s.sendall(header(sender, bwmsg.SEND, bwmsg.SEND_PREFIX.size + len(content))
                  + bwmsg.SEND_PREFIX.pack(to, typ, len(content)) + content)
        code, body = read_reply(s)
        if code == bwmsg.STORED:
            assert body[:16] == to
        return code
    finally:
        s.close()


def start_603(srv, sender, to, content_size, first, src=None, typ=4):
    """A 603 announcing content_size bytes, of which only `first` are sent."""
    s = connect(srv, src=src)
    s.sendall(header(sender, bwmsg.SEND, bwmsg.SEND_PREFIX.size + content_size)
              + bwmsg.SEND_PREFIX.pack(to, typ, content_size) + first)
    return s


def finish_603(sock, rest):
    """The rest of a 603's content, then its reply's code (None if bulwarkd
    closed without one). A refusal may come before the content is all
    sent: a send that fails is not an error here."""
    try:
        sock.sendall(rest)
    except OSError:
        pass
    try:
        return read_reply(sock)[0]
    except (AssertionError, OSError):
        return None


def has_input(sock, timeout=0.0):
    r, _, _ = select.select([sock], [], [], timeout)
    return bool(r)


def answered_or_closed(sock):
    """Whether bulwarkd has answered on sock (any bytes) or closed it."""
    if not has_input(sock):
        return False
    try:
        sock.recv(64, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True  # reset
    return True


class Tricklers:
    """603 bodies kept in progress: every `every` seconds, `chunk` more
    bytes on each connection, never finishing. Bounded: at most
    `limit_s` seconds of trickling. A connection bulwarkd closed (a send
    fails) is noted in .dead."""

    def __init__(self, chunk, every=0.5, limit_s=60.0):
        self.chunk, self.every, self.limit_s = chunk, every, limit_s
        self.socks = []
        self.dead = set()
        self.stop_ev = threading.Event()
        self.thread = None

    def add(self, sock):
        self.socks.append(sock)
        return sock

    def start(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        t0 = time.monotonic()
        while not self.stop_ev.wait(self.every) and time.monotonic() - t0 < self.limit_s:
            for i, s in enumerate(list(self.socks)):
                if i in self.dead:
                    continue
                try:
                    s.sendall(self.chunk)
                except OSError:
                    self.dead.add(i)

    def close(self):
        self.stop_ev.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        for s in self.socks:
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def vm_rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/%d/status" % pid)


def ro_query(srv, sql, args=()):
    con = bwd.connect_db(srv.data_dir)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def queued_for(srv, client_id):
    return ro_query(srv, "SELECT count(*) FROM messages WHERE ToClient = ?",
                    (bytes(client_id),))[0][0]


def register_then_stop(start_server, n, prefix="pre"):
    """A fresh bulwarkd makes its schema and registers n clients through the
    protocol (one keep-alive connection), then stops: returns (data dir,
    [client ids])."""
    srv = start_server()
    c = bwmsg.MsgClient(H, srv.port)
    ids = []
    for i in range(n):
        c.register(unique_name(prefix), key=rsa_key(i))
        ids.append(c.client_id)
    c.close()
    srv.stop()
    return srv.data_dir, ids


def insert_messages(data_dir, rows):
    """Rows (to, from, type, content, content_size, content_path) appended
    to the messages table of a stopped bulwarkd, ids after every id used,
    and bulwark_meta's last id moved past them. Returns the new ids."""
    if bwd.TEST_DB == "postgresql":
        con = bwd.connect_db(data_dir)
        try:
            ids = []
            # a thousand rows a statement, one transaction: 25,000 commits
            # of a row each took 40 s
            con.execute("BEGIN")
            for k in range(0, len(rows), 1000):
                chunk = rows[k:k + 1000]
                cur = con.execute(
                    "INSERT INTO messages(ID, ToClient, FromClient, Type, Content, ContentSize, "
                    "ContentPath) VALUES " +
                    ",".join(["(nextval('message_ids'), ?, ?, ?, ?, ?, ?)"] * len(chunk)) +
                    " RETURNING ID", tuple(v for r in chunk for v in r))
                ids += sorted(row[0] for row in cur.fetchall())
            con.execute("COMMIT")
        finally:
            con.close()
        return ids
    con = sqlite3.connect(str(data_dir / "defensive.db"), timeout=10)
    try:
        with con:
            before = con.execute("SELECT coalesce(max(ID), 0) FROM messages").fetchone()[0]
            meta = con.execute("SELECT Value FROM bulwark_meta WHERE Key = 'next_message_id'"
                               ).fetchone()
            start = max(before, meta[0] if meta else 0) + 1
            ids = list(range(start, start + len(rows)))
            con.executemany(
                "INSERT INTO messages(ID, ToClient, FromClient, Type, Content, ContentSize, "
                "ContentPath) VALUES(?, ?, ?, ?, ?, ?, ?)",
                [(i,) + tuple(r) for i, r in zip(ids, rows)])
            con.execute("INSERT OR REPLACE INTO bulwark_meta(Key, Value) "
                        "VALUES('next_message_id', ?)", (ids[-1] if ids else start - 1,))
    finally:
        con.close()
    return ids


def queue_big_message_each(data_dir, to_ids, from_id, size, name="hard"):
    """One message of `size` bytes (a spilled content under messages/) for
    each of to_ids, all of them hard links to one file: megabytes queued
    for hundreds of clients cost the disk one copy. Returns (the content,
    the messages' ids in the order of to_ids)."""
    content = os.urandom(size)
    first = data_dir / "messages" / ("%s-0" % name)
    first.write_bytes(content)
    rows = []
    for i, to in enumerate(to_ids):
        fname = "%s-%d" % (name, i)
        if i > 0:
            os.link(first, data_dir / "messages" / fname)
        rows.append((to, from_id, bwmsg.FILE, None, size, "messages/" + fname))
    return content, insert_messages(data_dir, rows)


def raise_nofile(need):
    """Soft RLIMIT_NOFILE raised to the hard limit (bulwarkd, started after,
    inherits it); skips when even that is below `need`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip("RLIMIT_NOFILE hard limit %d is below the %d descriptors this test "
                    "needs (test process and bulwarkd each)" % (hard, need))
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pull_on(sock, client_id):
    """A 604 on sock, read whole: the records."""
    sock.sendall(bwmsg.pack_request(client_id, bwmsg.PULL))
    code, body = read_reply(sock)
    assert code == bwmsg.WAITING, "604 -> %d" % code
    return bwmsg.parse_records(body)


def pull_when_allowed(srv, client_id, timeout=10.0):
    """A reading 604 for client_id, retried while bulwarkd answers 9000
    (its earlier pulls, just closed, may still count): the records."""
    s = connect(srv, timeout=30)
    try:
        deadline = time.monotonic() + timeout
        while True:
            s.sendall(bwmsg.pack_request(client_id, bwmsg.PULL))
            code, body = read_reply(s)
            if code == bwmsg.WAITING:
                return bwmsg.parse_records(body)
            assert code == bwmsg.ERROR, "604 -> %d" % code
            assert time.monotonic() < deadline, "604 still refused after %gs" % timeout
            time.sleep(0.2)  # between tries
    finally:
        s.close()


# --------------------------------------------------------------------------
# 1. Interop lenience: the course C++ client


def test_padded_602_with_zero_payload_size_gets_its_key(server):
    """The course client's 602: payload_size 0 in the header, the 16-byte
    target after it anyway, zeros to 1024, one connection per request. It
    gets the 2102 (target id + key) zero-padded to 1024 and a close; the
    deviation is logged once per connection ("lenient")."""
    a, b = user(server, 0), user(server, 1)
    req = padded(header(a.client_id, bwmsg.PUBKEY, 0) + b.client_id)
    assert len(req) == PAD
    for _ in range(2):
        code, payload, data = padded_exchange(server, req)
        assert_padded_reply(data, code, bwmsg.KEY)
        assert payload == b.client_id + bw.spki_der(b.key)
    assert len(lenient_lines(server)) == 2, \
        "wanted one 'lenient' line per lenient connection:\n%s" % "\n".join(lenient_lines(server))


def test_padded_600_with_zero_payload_size_registers(server):
    """The course client's 600: payload_size 0, then name[255] and the
    160-byte key anyway, zeros to 1024. It is registered (2100 + its id,
    padded to 1024, then a close), under that name and with that key."""
    a = user(server, 0)
    name = unique_name("course")
    key = rsa_key(5)
    req = padded(header(bytes(16), bwmsg.REGISTER, 0) + bw.name_field(name) + bw.spki_der(key))
    assert len(req) == PAD
    code, payload, data = padded_exchange(server, req)
    assert_padded_reply(data, code, bwmsg.REGISTERED)
    assert len(payload) == 16
    assert (payload, name) in a.list()
    assert a.public_key(payload) == bw.spki_der(key)
    assert lenient_lines(server), "the deviation is not logged"


@pytest.mark.parametrize("size", [200, 3000])
def test_padded_603_with_zero_payload_size_is_stored_with_its_content_intact(server, size):
    """The course client's 603: payload_size 0, then the 21-byte prefix (to,
    type, content_size) and the content anyway, zeros to a multiple of 1024.
    It gets a 2103 padded to 1024 and a close, and the recipient pulls the
    content byte for byte (its own trailing zeros are content, not
    padding: content_size says where it ends)."""
    a, b = user(server, 0), user(server, 1)
    content = os.urandom(size - 8) + bytes(8)
    req = padded(header(a.client_id, bwmsg.SEND, 0)
                 + bwmsg.SEND_PREFIX.pack(b.client_id, bwmsg.TEXT, size) + content)
    assert len(req) % PAD == 0
    code, payload, data = padded_exchange(server, req)
    assert_padded_reply(data, code, bwmsg.STORED)
    assert payload[:16] == b.client_id
    mid = struct.unpack("<I", payload[16:20])[0]
    assert b.pull() == [(a.client_id, mid, bwmsg.TEXT, content)]
    assert lenient_lines(server), "the deviation is not logged"


@pytest.mark.parametrize("code,size", [(601, 16), (601, 415), (604, 16), (604, 415)])
def test_padded_601_and_604_with_a_stray_payload_read_it_and_answer(server, code, size):
    """The course client sends 601 and 604 with a nonzero payload_size and
    that many bytes of whatever after the header, zeros to 1024. The payload
    is read and ignored: the 2101 / 2104 comes padded to a multiple of 1024,
    then a close."""
    a, b = user(server, 0), user(server, 1)
    content = os.urandom(100)
    mid = b.send(a.client_id, bwmsg.TEXT, content)
    req = padded(header(a.client_id, code, size) + os.urandom(size))
    assert len(req) == PAD
    rcode, payload, data = padded_exchange(server, req)
    if code == 601:
        assert_padded_reply(data, rcode, bwmsg.CLIENTS)
        assert payload == b.client_id + bw.name_field(b.name)
    else:
        assert_padded_reply(data, rcode, bwmsg.WAITING)
        assert bwmsg.parse_records(payload) == [(b.client_id, mid, bwmsg.TEXT, content)]
    assert lenient_lines(server), "the deviation is not logged"


def test_padded_602_with_payload_415_uses_its_first_16_bytes_as_the_target(server):
    """The course client's 602 in another variant: payload_size 415 (a
    register's size) whose first 16 bytes are the target, zeros to 1024.
    Answered 2102 for that target, padded, then a close."""
    a, b = user(server, 0), user(server, 1)
    req = padded(header(a.client_id, bwmsg.PUBKEY, 415) + b.client_id + os.urandom(399))
    assert len(req) == PAD
    code, payload, data = padded_exchange(server, req)
    assert_padded_reply(data, code, bwmsg.KEY)
    assert payload == b.client_id + bw.spki_der(b.key)
    assert lenient_lines(server), "the deviation is not logged"


def test_unpadded_602_with_zero_payload_size_is_still_refused_and_closed(start_server):
    """Strict framing stays for a client that does not pad: a 602 header with
    payload_size 0 and nothing after it is 9000 and a close (this passes
    before the lenience lands and must keep passing after)."""
    srv = start_server("--request-timeout", "3")
    a, b = user(srv, 0), user(srv, 1)
    s = connect(srv, timeout=15)
    try:
        s.sendall(header(a.client_id, bwmsg.PUBKEY, 0))
        code, body = read_reply(s)
        assert (code, body) == (bwmsg.ERROR, b"")
        assert read_until_close(s) == b""
    finally:
        s.close()
    assert a.public_key(b.client_id) == bw.spki_der(b.key)  # still serving


# --------------------------------------------------------------------------
# 2. Slow bodies do not fill a queue by announcement


QUEUE_LIMIT = ("--max-queued-bytes", str(MiB), "--max-message-size", str(4 * MiB))


def test_trickled_bodies_reserve_only_what_they_delivered_in_the_queue(start_server):
    """Four connections announce 1 MiB contents to bob (the whole of his
    queue limit, 4 MiB together), send 1 KiB and then trickle a few bytes
    every 0.5 s, never finishing: a queue-filling attack for the price of
    four headers. Another client's 100-byte 603 to bob is still stored
    (2103); the tricklers are not refused either (they delivered only a few
    KiB). A content larger than the whole limit is refused at once."""
    srv = start_server(*QUEUE_LIMIT)
    a, b, c = user(srv, 0), user(srv, 1), user(srv, 2)
    with Tricklers(b"\x5a" * 16) as tr:
        for i in range(4):  # each from its own address: no per-address cap applies
            tr.add(start_603(srv, a.client_id, b.client_id, MiB, os.urandom(KiB),
                             src="127.0.0.%d" % (10 + i)))
        tr.start()
        bwd.wait_for(lambda: bwd.read_by_peer(*tr.socks), 5)  # every announcement has been read
        code = send_603(srv, c.client_id, b.client_id, os.urandom(100), src="127.0.0.3")
        assert code == bwmsg.STORED, \
            "a 100-byte 603 to bob -> %d while 4 MiB are only announced to him" % code
        assert not tr.dead and not any(answered_or_closed(s) for s in tr.socks), \
            "a trickler (a few KiB delivered) was refused or closed"
        # larger than bob's whole limit: refused before any content
        s = connect(srv)
        try:
            s.sendall(header(c.client_id, bwmsg.SEND, 21 + 2 * MiB)
                      + bwmsg.SEND_PREFIX.pack(b.client_id, 4, 2 * MiB))
            assert read_reply(s) == (bwmsg.ERROR, b"")
        finally:
            s.close()
        assert [(r[0], r[2]) for r in b.pull()] == [(c.client_id, bwmsg.TEXT)]


def test_the_queue_limit_is_checked_when_a_body_ends(start_server):
    """Two 700 KiB messages to bob (limit 1 MiB) arrive in parallel: A is
    announced first, B second, and B finishes first. Both are accepted while
    in progress; at its end B finds room (2103), then A does not (9000).
    Exactly one is stored: bob pulls B's content only. (Refusing B at its
    announcement, as if A's unsent bytes were already queued, gets this
    order wrong.)"""
    srv = start_server(*QUEUE_LIMIT)
    a, b = user(srv, 0), user(srv, 1)
    size = 700 * KiB
    ca, cb = os.urandom(size), os.urandom(size)
    sa = start_603(srv, a.client_id, b.client_id, size, ca[:KiB], src="127.0.0.2")
    sb = None
    try:
        bwd.wait_for(lambda: bwd.read_by_peer(sa), 5)  # A's announcement is read before B's
        sb = start_603(srv, a.client_id, b.client_id, size, cb[:KiB], src="127.0.0.3")
        bwd.wait_for(lambda: bwd.read_by_peer(sb), 5)
        assert not answered_or_closed(sa) and not answered_or_closed(sb)
        code_b = finish_603(sb, cb[KiB:])
        code_a = finish_603(sa, ca[KiB:])
    finally:
        sa.close()
        if sb is not None:
            sb.close()
    assert {code_a, code_b} == {bwmsg.STORED, bwmsg.ERROR}, \
        "wanted one 2103 and one 9000, got %r and %r" % (code_b, code_a)
    assert (code_b, code_a) == (bwmsg.STORED, bwmsg.ERROR), \
        "the body that ended first got %r, the one that ended last %r" % (code_b, code_a)
    assert [r[3] for r in b.pull()] == [cb]


# --------------------------------------------------------------------------
# 3. Body slots per source address


def test_one_address_holds_at_most_max_bodies_per_addr(start_server):
    """From 127.0.0.2, four 603 bodies trickle (holding 4 of the 8 body
    slots, the per-address cap): a fifth 603 from 127.0.0.2, even by another
    client, is refused (9000), while one from 127.0.0.3 is stored (2103).
    One address cannot take every slot."""
    srv = start_server("--max-bodies", "8", "--max-bodies-per-addr", "4")
    a, b, d = user(srv, 0), user(srv, 1), user(srv, 3)
    # On a shared store the first 603 to a recipient the node holds no
    # count for waits for the store's count before it takes a slot (the
    # next ones, within a second, do not): "read by the server" would not
    # yet mean "holding a slot". One message first gives the node bob's
    # count, so every trickler takes its slot as soon as it is read.
    # The same holds for the tricklers' sender: a node takes a 603's
    # requester from RAM only if it read its row in the last 2 s (its
    # owner may have chosen TLS only through another node), so alice sends
    # one first too.
    assert send_603(srv, d.client_id, b.client_id, os.urandom(100),
                    src="127.0.0.3") == bwmsg.STORED
    assert send_603(srv, a.client_id, b.client_id, os.urandom(100),
                    src="127.0.0.3") == bwmsg.STORED
    with Tricklers(b"\x5a" * 16) as tr:
        for _ in range(4):
            tr.add(start_603(srv, a.client_id, b.client_id, MiB, os.urandom(KiB),
                             src="127.0.0.2"))
        tr.start()
        bwd.wait_for(lambda: bwd.read_by_peer(*tr.socks), 5)  # the four hold their slots
        assert send_603(srv, d.client_id, b.client_id, os.urandom(100),
                        src="127.0.0.2") == bwmsg.ERROR
        assert send_603(srv, d.client_id, b.client_id, os.urandom(100),
                        src="127.0.0.3") == bwmsg.STORED
        assert not tr.dead and not any(answered_or_closed(s) for s in tr.socks)
    assert len(b.pull()) == 3  # the two first ones and 127.0.0.3's


# --------------------------------------------------------------------------
# 4. A newcomer evicts the slowest holder


def test_when_every_body_slot_is_held_a_newcomer_evicts_one_below_the_minimum_rate(
        start_server):
    """Four 603s from 127.0.0.2 announce 64 MiB each, send 16 KiB and then
    1 KiB every 0.5 s (2 KiB/s, below --min-rate 4096): they hold every
    body slot (--max-bodies 4). Once their first burst is out of the last
    few seconds a 100-byte 603 from 127.0.0.3 is stored (2103), and at
    least one trickler has been answered 9000 or closed."""
    srv = start_server("--max-bodies", "4", "--max-bodies-per-addr", "4",
                       "--max-message-size", str(64 * MiB), "--min-rate", "4096")
    a, b, c = user(srv, 0), user(srv, 1), user(srv, 2)
    # On a shared store a node first reads bob's count and alice's row
    # before a 603 takes its slot (see the test above): one message from
    # each first, so that the tricklers hold their slots, and their rates
    # begin, when the server has read their first burst.
    for sender in (a, c):
        assert send_603(srv, sender.client_id, b.client_id, os.urandom(100),
                        src="127.0.0.3") == bwmsg.STORED
    assert len(b.pull()) == 2
    with Tricklers(b"\x5a" * KiB) as tr:
        for _ in range(4):
            tr.add(start_603(srv, a.client_id, b.client_id, 64 * MiB, os.urandom(16 * KiB),
                             src="127.0.0.2"))
        bwd.wait_for(lambda: bwd.read_by_peer(*tr.socks), 5)  # the four hold their slots
        tr.start()
        # A holder's rate is taken between two marks that move when a
        # chunk comes at least 2 s after the last move (every 2 to 2.5 s):
        # from the second move on, its first burst is out of that span.
        time.sleep(6.0)
        code = send_603(srv, c.client_id, b.client_id, os.urandom(100), src="127.0.0.3",
                        timeout=15)
        assert code == bwmsg.STORED, "the newcomer's 603 -> %d" % code
        evicted = bwd.wait_for(
            lambda: len(tr.dead | {i for i, s in enumerate(tr.socks) if answered_or_closed(s)}),
            timeout=5)
        assert evicted >= 1, "no trickler was refused or closed"
        for i, s in enumerate(tr.socks):
            if i not in tr.dead and has_input(s):
                try:
                    data = s.recv(7, socket.MSG_DONTWAIT)
                except OSError:
                    continue
                assert data in (b"", bw.RESP_HEADER.pack(V, bwmsg.ERROR, 0)), \
                    "an evicted trickler got %r" % data
    assert [r[0] for r in b.pull()] == [c.client_id]


# --------------------------------------------------------------------------
# 5. Pull work is bounded


@pytest.mark.long
@pytest.mark.parametrize("args", [(), ("--pull-max-messages", "10000")],
                         ids=["default", "explicit"])
def test_one_pull_carries_at_most_pull_max_messages_oldest_first(start_server, args):
    """25,000 small messages wait for alice (written into defensive.db while
    bulwarkd is stopped). One 604 carries exactly the 10,000 oldest, in id
    order, not all of them in one reply (the work of one pull is bounded
    by count, not only by bytes); after it, the next 604 carries the next
    10,000."""
    data_dir, (alice, bob) = register_then_stop(start_server, 2)
    n = 25000
    contents = [b"m%05d" % i for i in range(n)]
    ids = insert_messages(data_dir, [(alice, bob, bwmsg.TEXT, c, len(c), None)
                                     for c in contents])
    srv = start_server(*args, data_dir=data_dir)
    s = connect(srv, timeout=30)
    try:
        first = pull_on(s, alice)
        assert len(first) == 10000, "one 604 carried %d messages" % len(first)
        assert [r[1] for r in first] == ids[:10000]
        assert [r[3] for r in first] == contents[:10000]
        second = pull_on(s, alice)  # also shows the first arrived
        assert [r[1] for r in second] == ids[10000:20000]
    finally:
        s.close()


def test_a_client_has_at_most_max_pulls_per_client_answered_at_once(start_server):
    """Alice opens two connections that send 604 for her 8 MiB queue and
    never read (each holding a reply the socket buffers cannot take). A
    third 604 from her gets 9000 and the connection stays open (its next
    request is served); bob's 604 meanwhile gets his 2104. Once the two
    are gone, alice's queue is all there."""
    srv = start_server("--max-pulls-per-client", "2")
    a, b = user(srv, 0), user(srv, 1)
    big = [os.urandom(MiB) for _ in range(8)]
    for content in big:
        b.send(a.client_id, bwmsg.FILE, content)
    note = os.urandom(100)
    to_bob = a.send(b.client_id, bwmsg.TEXT, note)
    hogs = []
    third = None
    try:
        for _ in range(2):
            h = connect(srv, rcvbuf=4096)
            h.sendall(bwmsg.pack_request(a.client_id, bwmsg.PULL))
            hogs.append(h)
        # both 604s are being answered: their replies have begun to arrive
        bwd.wait_for(lambda: all(has_input(h) for h in hogs), 5)
        third = connect(srv)
        third.sendall(bwmsg.pack_request(a.client_id, bwmsg.PULL))
        assert read_reply(third) == (bwmsg.ERROR, b""), "a third 604 of alice's was answered"
        third.sendall(bwmsg.pack_request(a.client_id, bwmsg.LIST))  # connection kept
        code, body = read_reply(third)
        assert code == bwmsg.CLIENTS and body == b.client_id + bw.name_field(b.name)
        assert b.pull() == [(a.client_id, to_bob, bwmsg.TEXT, note)]
    finally:
        for h in hogs:
            h.close()
        if third is not None:
            third.close()
    assert [r[3] for r in pull_when_allowed(srv, a.client_id)] == big


# --------------------------------------------------------------------------
# 6. Unread replies share one memory budget


def non_readers(srv, client_ids, per_client, rcvbuf=4096):
    """per_client connections for each client that send 604 and never read."""
    socks = []
    try:
        for _ in range(per_client):
            for cid in client_ids:
                s = connect(srv, rcvbuf=rcvbuf, timeout=30)
                socks.append(s)
                s.sendall(bwmsg.pack_request(cid, bwmsg.PULL))
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def test_pipelined_requests_whose_replies_are_never_read_hold_little_memory(start_server, shim):
    """100 connections each pipeline 602s (39 bytes, each answered with 176)
    as fast as the socket takes them and never read: bulwarkd's sockets
    have a small send buffer (the shim's BW_SNDBUF), so the replies wait in
    its own memory. It answered every request read until 256 KiB of
    replies waited on a connection, and read more in the meantime: about
    400 KiB each, 1.6 GiB from one address at the defaults. The next
    request now waits until 32 KiB of replies drain: VmRSS grows by less
    than 16 MiB, and the connections are answered once they read."""
    e = bwd.fault_env(shim)
    e["BW_SNDBUF"] = "4096"
    srv = start_server(env=e)
    a, b = user(srv, 0), user(srv, 1)
    base = vm_rss(srv.proc.pid)
    req = header(a.client_id, bwmsg.PUBKEY, 16) + b.client_id
    burst = req * 4096  # 156 KiB of requests
    socks = []
    try:
        for _ in range(100):
            s = connect(srv, rcvbuf=4096)
            s.setblocking(False)
            sent = 0
            for _ in range(64):  # at most 10 MiB a connection
                try:
                    sent += s.send(burst)
                except BlockingIOError:
                    break
            socks.append(s)
        deadline = time.monotonic() + 10
        peak, last_change, t0 = 0, time.monotonic(), time.monotonic()
        while time.monotonic() < deadline:  # until 2 s without 1 MiB more
            grown = vm_rss(srv.proc.pid) - base
            if grown > peak + MiB:
                last_change = time.monotonic()
            peak = max(peak, grown)
            if time.monotonic() - t0 > 2 and time.monotonic() - last_change > 2:
                break
            time.sleep(0.25)
        assert peak < 16 * MiB, "VmRSS grew by %.0f MiB for 100 connections that do not " \
            "read" % (peak / MiB)
        # one that starts reading gets its replies, whole and in order
        s = socks[0]
        s.setblocking(True)
        s.settimeout(10)
        for _ in range(300):
            code, payload = read_reply(s)
            assert code == bwmsg.KEY and payload[:16] == b.client_id, code
        assert srv.alive()
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("n, fin", [(240, True), (260, True), (1000, True), (1000, False)])
def test_pipelined_requests_held_for_their_replies_are_all_answered(start_server, shim, n, fin):
    """n 602s pipelined in one write (then the sender's FIN, or not), read
    only after 4 s, with bulwarkd's send buffer small: the next request
    waits while 32 KiB of replies wait. A FIN read behind requests not yet
    answered ended the connection at the next drain (232 of 240 to 270
    answered); and the request deadline (2 s here) ran while the server
    held the requests, cutting a reader of 1000. Every request gets its
    reply, in order."""
    e = bwd.fault_env(shim)
    e["BW_SNDBUF"] = "4096"
    srv = start_server("--request-timeout", "2", env=e)
    a, b = user(srv, 0), user(srv, 1)
    req = header(a.client_id, bwmsg.PUBKEY, 16) + b.client_id
    s = connect(srv, rcvbuf=4096, timeout=30)
    try:
        s.sendall(req * n)
        if fin:
            s.shutdown(socket.SHUT_WR)
        time.sleep(4.0)
        for i in range(n):
            code, payload = read_reply(s)
            assert code == bwmsg.KEY and payload[:16] == b.client_id, (i, code)
    finally:
        s.close()
    assert "request deadline passed" not in srv.log(), srv.log_tail()
    assert srv.alive()


def test_a_reset_while_requests_wait_for_their_replies_to_drain_is_noticed_at_once(
        start_server, shim):
    """A peer pipelines 602s and reads nothing: its replies back up and its
    next request waits for them to drain (the frame's stalled state), its
    input full. Its reset must close it at once, not at the request
    deadline (60 s here)."""
    e = bwd.fault_env(shim)
    e["BW_SNDBUF"] = "4096"
    srv = start_server("--request-timeout", "60", env=e)
    a, b = user(srv, 0), user(srv, 1)
    req = header(a.client_id, bwmsg.PUBKEY, 16) + b.client_id
    s = connect(srv, rcvbuf=4096)
    s.setblocking(False)
    for _ in range(64):
        try:
            s.send(req * 4096)
        except BlockingIOError:
            break
    time.sleep(1.0)  # the replies back up, the input fills
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    assert bwd.wait_for(lambda: re.search(r"connection error|reset by peer",
                                          srv.log()), 10), srv.log_tail()
    assert "request deadline passed" not in srv.log()
    assert srv.alive()


@pytest.mark.slow
@pytest.mark.files_only("plants the contents' files as hard links")
def test_600_unread_pulls_grow_the_server_by_less_than_100_mib(start_server, shim):
    """600 connections (150 clients x 4) each send 604 for a client with
    8 MiB queued and never read. bulwarkd's sockets get a small send buffer
    (BW_SNDBUF in the fault shim) so the replies wait in its own memory,
    not the kernel's. Without a global bound each stream holds its batch
    (~270 KiB each, ~160 MiB in all); with --reply-memory's default
    (64 MiB) VmRSS grows by less than 100 MiB."""
    raise_nofile(600 + 200)
    data_dir, ids = register_then_stop(start_server, 151)
    sender, clients = ids[0], ids[1:]
    queue_big_message_each(data_dir, clients, sender, 8 * MiB)
    e = bwd.fault_env(shim)
    e["BW_SNDBUF"] = "65536"
    srv = start_server(env=e, data_dir=data_dir)
    base = vm_rss(srv.proc.pid)
    socks = non_readers(srv, clients, 4)
    try:
        assert len(socks) == 600
        # until it stops growing (2 s without 1 MiB more), or passes the bound
        deadline = time.monotonic() + 20
        peak, last_change = 0, time.monotonic()
        t0 = time.monotonic()
        while time.monotonic() < deadline:
            grown = vm_rss(srv.proc.pid) - base
            if grown > peak + MiB:
                last_change = time.monotonic()
            peak = max(peak, grown)
            if peak >= 100 * MiB:
                break
            if time.monotonic() - t0 > 3 and time.monotonic() - last_change > 2:
                break
            time.sleep(0.25)  # a sample every 0.25 s
        assert peak < 100 * MiB, \
            "VmRSS grew by %.0f MiB for 600 unread pulls" % (peak / MiB)
        assert srv.alive()
    finally:
        for s in socks:
            s.close()
    assert queued_for(srv, clients[0]) == 1


@pytest.mark.slow
@pytest.mark.files_only("plants the contents' files as hard links")
def test_the_stalest_unread_reply_is_closed_when_reply_memory_runs_out(start_server, shim):
    """With --reply-memory 4 MiB, 100 connections (25 clients x 4) send 604
    for 8 MiB queues and never read: together they would hold more than the
    budget. An honest client's 604 (8 MiB too, read as it comes), sent once
    they have been stuck for over a second, still completes with all its
    messages; the non-readers'
    messages are not lost (still queued, and a later reading pull returns
    them)."""
    raise_nofile(100 + 200)
    data_dir, ids = register_then_stop(start_server, 27)
    sender, honest, clients = ids[0], ids[1], ids[2:]
    # the honest client's queue: 8 MiB too, then three small messages
    content, big_ids = queue_big_message_each(data_dir, clients + [honest], sender, 8 * MiB)
    mine = [os.urandom(100), os.urandom(10 * KiB), os.urandom(60 * KiB)]
    mine_ids = insert_messages(data_dir, [(honest, sender, bwmsg.TEXT, c, len(c), None)
                                          for c in mine])
    e = bwd.fault_env(shim)
    e["BW_SNDBUF"] = "65536"
    srv = start_server("--reply-memory", str(4 * MiB), env=e, data_dir=data_dir)
    socks = non_readers(srv, clients, 4)
    try:
        time.sleep(1.5)  # no progress for over a second
        s = connect(srv, timeout=20)
        try:
            got = pull_on(s, honest)
        finally:
            s.close()
        assert [r[1] for r in got] == [big_ids[-1]] + mine_ids
        assert [r[3] for r in got] == [content] + mine
        assert srv.alive()
    finally:
        for s in socks:
            s.close()
    assert all(queued_for(srv, cid) == 1 for cid in clients)
    for cid in (clients[0], clients[-1]):
        assert [r[3] for r in pull_when_allowed(srv, cid)] == [content]


@pytest.mark.files_only("plants the contents' files as hard links")
def test_an_honest_slow_reader_keeps_its_pull_when_non_readers_fill_reply_memory(
        start_server, shim):
    """A reader counted as stalled when it had not taken a whole 64 KiB
    chunk for a second: any reader below 64 KiB/s was closed first when
    others filled --reply-memory with pulls they never read (its last whole
    chunk was older than their start). An honest pull read at about
    20 KiB/s keeps going; the non-readers are the ones closed."""
    raise_nofile(40 + 200)
    data_dir, ids = register_then_stop(start_server, 12)
    sender, honest, clients = ids[0], ids[1], ids[2:]
    queue_big_message_each(data_dir, clients + [honest], sender, 8 * MiB)
    e = bwd.fault_env(shim)
    e["BW_SNDBUF"] = "65536"
    srv = start_server("--reply-memory", str(MiB), env=e, data_dir=data_dir)
    reader = connect(srv, rcvbuf=4096, timeout=30)
    got, ended = [0], []
    stop = threading.Event()

    def read_slowly():  # 4 KiB every 0.2 s
        reader.sendall(bwmsg.pack_request(honest, bwmsg.PULL))
        while not stop.wait(0.2):
            try:
                data = reader.recv(4096)
            except OSError as err:
                ended.append(repr(err))
                return
            if not data:
                ended.append("closed")
                return
            got[0] += len(data)

    th = threading.Thread(target=read_slowly, daemon=True)
    th.start()
    socks = []
    try:
        time.sleep(1.5)  # its pull streams, at its reader's pace
        socks = non_readers(srv, clients, 4)
        assert bwd.wait_for(lambda: "took nothing of its reply" in srv.log(), 10), \
            srv.log_tail()
        time.sleep(3.0)  # and more pressure while it reads on
        # its connection is this daemon's first (c1); once closed it would
        # still read for seconds what its socket holds before the end
        assert "c1: its reader took nothing" not in srv.log(), srv.log_tail()
        assert ended == [], "the honest slow reader was closed: %r\n%s" % (ended,
                                                                           srv.log_tail())
        assert got[0] > 40 * KiB
        assert srv.alive()
    finally:
        stop.set()
        th.join(timeout=5)
        reader.close()
        for s in socks:
            s.close()
    assert queued_for(srv, honest) == 1  # nothing was lost


def test_a_pull_whose_reader_stops_reading_is_closed_after_the_timeout(start_server):
    """A 604 whose client never reads: the reply streams until the socket
    takes no more. The tick passed over a connection held by its pull (or
    paused), and the stream keeps less than the output cap queued, so
    nothing ever closed it: each such connection stayed for good. Its
    deadline now moves only when the peer takes bytes; past it the
    connection goes, and the messages stay queued."""
    srv = start_server("--timeout", "2")
    a, b = user(srv, 0), user(srv, 1)
    big = [os.urandom(MiB) for _ in range(4)]
    for content in big:
        b.send(a.client_id, bwmsg.FILE, content)
    hog = connect(srv, rcvbuf=4096)
    try:
        hog.sendall(bwmsg.pack_request(a.client_id, bwmsg.PULL))
        bwd.wait_for(lambda: has_input(hog), 5)
        assert bwd.wait_for(lambda: "closed: the peer does not read" in srv.log(), 20), \
            srv.log_tail()
    finally:
        hog.close()
    assert [r[3] for r in pull_when_allowed(srv, a.client_id)] == big


def _registers(port, name, key=3):
    """Whether the messenger registers name (bytes)."""
    c = bwmsg.MsgClient(H, port)
    try:
        c.register(name, key=rsa_key(key))
        return True
    except bwmsg.ServerError:  # its 9000
        return False
    finally:
        c.close()


def test_names_that_read_alike_are_one_name_on_both_protocols(server):
    """Registration compared names byte by byte: "alice" + U+200B beside
    "alice", "jose" + U+0301 beside "josé" were accepted, and a reader of
    "From: alice" could not tell them apart. A name is now compared as it
    reads (the rooms' rule: invisible code points and the blanks around it
    left out, canonical equivalents one), on the messenger and the vault
    alike (one registry); a name of invisible code points alone is
    refused. Names in another encoding than UTF-8 are compared by their
    bytes: two Latin-1 names are two names."""
    base = unique_name("al")
    assert _registers(server.port, base.encode())
    for alike in (base + "\u200b", "\u2060" + base, " " + base, base + "\t",
                  base[:2] + "\u00ad" + base[2:]):
        assert not _registers(server.port, alike.encode()), repr(alike)
        if "\t" in alike:
            continue  # a control byte: the vault refuses it as malformed
        v = bw.VaultClient(H, server.port).connect()
        bw.expect(v.register(alike.encode()), bw.NAME_TAKEN)
        v.close()
    tail = unique_name("x")
    assert _registers(server.port, ("jos\u00e9" + tail).encode())
    assert not _registers(server.port, ("jose\u0301" + tail).encode())
    # marks of other classes in either order are one name
    assert _registers(server.port, ("a\u0323\u0302" + tail).encode())
    assert not _registers(server.port, ("a\u0302\u0323" + tail).encode())
    assert not _registers(server.port, "\u200b\u200b".encode())
    assert _registers(server.port, b"caf\xe9" + tail.encode())
    assert _registers(server.port, b"caf\xe8" + tail.encode())
    # the log says why
    log = server.log()
    assert re.search(r"event=register_refused conn=\d+ peer=\S+ service=msg client=\S+ "
                     r"reason=name_taken", log), log[-2000:]
    assert re.search(r"event=register_refused .* reason=no_visible_character", log), log[-2000:]
