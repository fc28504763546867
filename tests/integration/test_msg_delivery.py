"""Delivery of messages by the real bulwarkd, driven by the independent
client of bwmsg.py: when a pulled message may be deleted (the client's next
request on that connection, or an orderly close after the whole 2104 was
acknowledged, never a FIN that came too early), pulls of one client on
several connections, messages whose fsync failed or is still running, the
--max-message-size limit, and a kill -9 in the middle of a 2104.

The state of the store is read from data_dir/defensive.db through a
read-only sqlite3 connection; the server's own view of its connections
comes from the console's STAT."""

import fcntl
import os
import signal
import socket
import sqlite3
import struct
import termios
import threading
import time

import pytest

import bwd
import bwmsg
import bwvault as bw
from bwd import rsa_key, unique_name, wait_for

H = "127.0.0.1"
MiB = 1 << 20


# --------------------------------------------------------------------------
# Helpers


def user(srv, i=None):
    c = bwmsg.MsgClient(H, srv.port)
    c.register(unique_name("d"), key=rsa_key(i))
    return c


def same_user(srv, c):
    """Another connection of the client c."""
    other = bwmsg.MsgClient(H, srv.port)
    other.client_id = c.client_id
    return other


def ids_of(records):
    return [r[1] for r in records]


def ro_query(srv, sql, args=()):
    """Rows of the daemon's database."""
    con = bwd.connect_db(srv.data_dir)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def queued(srv, to=None):
    if to is None:
        return ro_query(srv, "SELECT count(*) FROM messages")[0][0]
    return ro_query(srv, "SELECT count(*) FROM messages WHERE ToClient = ?", (bytes(to),))[0][0]


def wait_deleted(srv, to):
    """Waits for the rows the evidence deleted to be gone from the table.
    bulwarkd counts them gone at once (a pull no longer returns them) and
    commits the deletion asynchronously: on PostgreSQL it can land after
    the connection that brought the evidence is closed."""
    assert bwd.wait_for(lambda: queued(srv, to) == 0, 5), \
        "%d rows still queued 5 s after the evidence" % queued(srv, to)


def stat(srv):
    """The console's STAT as {field: value}."""
    s = socket.create_connection((H, srv.console_port), timeout=5)
    try:
        s.sendall(b"Hi")
        bw.recv_exact(s, 48)
        s.sendall(b"STAT")
        n = int(bw.recv_exact(s, 4))
        text = bw.recv_exact(s, n).decode()
    finally:
        s.close()
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def shared_conns(srv):
    """Connections open on the vault/messenger port, as bulwarkd counts them."""
    for part in stat(srv)["connections"].split(","):
        name, n = part.split()
        if name == "shared":
            return int(n)
    raise AssertionError("no shared listener in STAT: %r" % stat(srv))


def wait_conns(srv, n, timeout=5):
    """Waits until bulwarkd has closed all but n connections (so it has
    handled whatever ended the others; a deletion they caused may still be
    committing: wait_deleted)."""
    assert bwd.wait_for(lambda: shared_conns(srv) == n, timeout), \
        "bulwarkd still has %d connections open, expected %d" % (shared_conns(srv), n)


def server_rchar(srv):
    """Bytes bulwarkd has read with read()/pread() (not recv) since it started."""
    with open("/proc/%d/io" % srv.proc.pid) as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise AssertionError("no rchar in /proc/%d/io" % srv.proc.pid)


def inq(sock):
    """Bytes waiting in sock's receive queue (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def drain_nonblocking(sock):
    """Reads what is readable now; returns (bytes read, saw EOF)."""
    got = 0
    timeout = sock.gettimeout()
    sock.setblocking(False)  # a timeout would turn EAGAIN into a wait
    try:
        while True:
            try:
                chunk = sock.recv(MiB, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return got, False
            if not chunk:
                return got, True
            got += len(chunk)
    finally:
        sock.settimeout(timeout)


def read_reply(sock):
    """A whole response: (code, payload)."""
    head = bw.recv_exact(sock, 7)
    assert len(head) == 7, "connection closed before a response header"
    _, code, size = bw.RESP_HEADER.unpack(head)
    body = bw.recv_exact(sock, size)
    assert len(body) == size, "response cut short: %d of %d bytes" % (len(body), size)
    return code, body


def end_in_order(sock):
    """Ends a connection as a careful client does once it has the whole
    reply: a FIN (shutdown), then waits for bulwarkd's own FIN. bulwarkd
    sends that before it has finished with the connection: wait_conns
    tells when it has."""
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(10)
    assert bw.recv_until_eof(sock, limit=1 << 16) == b"", "data after the reply"
    sock.close()


def pull_all(srv, c, limit=20):
    """Pulls c's queue until a pull is empty, showing receipt after each
    pull with the next request; returns every record."""
    got = []
    for _ in range(limit):
        recs = c.pull()
        if not recs:
            return got
        got += recs
    raise AssertionError("still messages after %d pulls" % limit)


# --------------------------------------------------------------------------
# 1. Evidence: what a FIN proves and what it does not


@pytest.mark.files_only("watches the server read the contents from disk (/proc/PID/io)")
def test_a_fin_before_the_whole_2104_arrived_deletes_nothing(start_server, shim):
    """The client reads most of a 40 MiB 2104, empties its receive buffer
    and closes (a FIN, not a reset) while the tail of the reply is still in
    bulwarkd's buffer. bulwarkd has by then queued the whole reply (it read
    every content byte from disk), so only the acknowledgement check stands
    between that FIN and the deletion: nothing may be deleted.

    To hold the tail on bulwarkd's side deterministically, its sockets get a
    small send buffer (BW_SNDBUF in the shim) and it is SIGSTOPped while the
    client empties its receive buffer: the kernel delivers what it holds,
    the rest waits in the stopped process."""
    e = bwd.fault_env(shim)
    e["BW_SNDBUF"] = "32768"
    srv = start_server(env=e, console=True)
    a, b = user(srv, 0), user(srv, 1)
    n = 40
    ids = [a.send(b.client_id, 4, bytes([i]) * MiB) for i in range(n)]
    a.close()
    b.close()
    content_bytes = n * MiB

    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    s.settimeout(10)
    s.connect((H, srv.port))
    r0 = server_rchar(srv)
    s.sendall(bwmsg.pack_request(b.client_id, bwmsg.PULL))
    head = bw.recv_exact(s, 7)
    _, code, total = bw.RESP_HEADER.unpack(head)
    assert code == bwmsg.WAITING and total == n * (bwmsg.RECORD.size + MiB)
    got = 0
    while total - got > MiB:  # most of it at full speed
        chunk = s.recv(min(MiB, total - got - MiB))
        assert chunk, "bulwarkd closed in the middle of the 2104"
        got += len(chunk)
    # then slowly, until bulwarkd has read the last content from disk: the
    # whole 2104 is queued on its side
    deadline = time.monotonic() + 10
    for _ in range(5000):
        if server_rchar(srv) - r0 >= content_bytes:
            break
        assert time.monotonic() < deadline, "bulwarkd never read the whole reply from disk"
        chunk = s.recv(16384)
        assert chunk
        got += len(chunk)
        time.sleep(0.005)  # a slow reader
    else:
        pytest.fail("bulwarkd never read the whole reply from disk")

    os.kill(srv.proc.pid, signal.SIGSTOP)
    try:
        quiet = 0
        for _ in range(200):  # until the kernel has nothing more for us
            k, eof = drain_nonblocking(s)
            assert not eof
            got += k
            quiet = quiet + 1 if k == 0 else 0
            if quiet == 3:
                break
            time.sleep(0.02)  # nothing more for three looks 20 ms apart: quiet
        missing = total - got
        assert missing > 0, "the whole reply arrived: the test could not hold its tail back"
        assert inq(s) == 0
        s.close()  # an empty receive buffer: this is a FIN
    finally:
        os.kill(srv.proc.pid, signal.SIGCONT)
    wait_conns(srv, 0)  # bulwarkd has seen the FIN and closed

    assert queued(srv, b.client_id) == n, \
        "a FIN %d bytes before the end deleted messages" % missing
    b2 = same_user(srv, b)
    # a small window here too: against bulwarkd's small send buffer, a
    # large one makes every segment wait for a delayed ACK
    b2.sock = socket.socket()
    b2.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    b2.sock.settimeout(10)
    b2.sock.connect((H, srv.port))
    got_recs = b2.pull()
    assert ids_of(got_recs) == ids, "every message exactly once, in id order"
    assert [r[3] == bytes([i]) * MiB for i, r in enumerate(got_recs)] == [True] * n
    b2.list()  # and the next request does delete them
    wait_deleted(srv, b.client_id)
    assert b2.pull() == []


@pytest.mark.long
def test_a_half_close_right_after_the_604_is_no_evidence(start_server):
    """A client that shuts its side down right after sending its 604, then
    reads the whole reply and closes, had half-closed before the reply: no
    evidence (messenger-protocol.md: "and had not half-closed before it")."""
    srv = start_server(console=True)
    a, b = user(srv, 0), user(srv, 1)
    ids = [a.send(b.client_id, 3, bytes([i]) * 16) for i in range(3)]
    a.close()
    b.close()
    s = socket.create_connection((H, srv.port), timeout=10)
    # corked, the request waits for the shutdown and leaves in one segment
    # with its FIN: else a client descheduled between the two (a loaded
    # machine) sends its FIN after the reply arrived, which no server can
    # tell from a client that read the reply first
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    s.sendall(bwmsg.pack_request(b.client_id, bwmsg.PULL))
    s.shutdown(socket.SHUT_WR)
    code, body = read_reply(s)
    assert code == bwmsg.WAITING and ids_of(bwmsg.parse_records(body)) == ids
    assert bw.recv_until_eof(s, limit=1 << 16) == b""  # bulwarkd closes after the reply
    s.close()
    wait_conns(srv, 0)
    assert queued(srv, b.client_id) == 3, "a half-close before the reply counted as evidence"
    assert ids_of(same_user(srv, b).pull()) == ids


def test_a_half_close_in_the_middle_of_the_2104_is_no_evidence(start_server):
    """The FIN comes while the 2104 is still streaming; the client then
    reads the rest and closes. The FIN was not sent after the whole reply:
    nothing is deleted, even though the reply completes."""
    srv = start_server(console=True)
    a, b = user(srv, 0), user(srv, 1)
    n = 12
    ids = [a.send(b.client_id, 4, bytes([i]) * MiB) for i in range(n)]
    a.close()
    b.close()
    s = socket.create_connection((H, srv.port), timeout=10)
    s.sendall(bwmsg.pack_request(b.client_id, bwmsg.PULL))
    head = bw.recv_exact(s, 7)
    assert bw.RESP_HEADER.unpack(head)[1:] == (bwmsg.WAITING, n * (bwmsg.RECORD.size + MiB))
    first = bw.recv_exact(s, MiB)
    s.shutdown(socket.SHUT_WR)
    rest = bw.recv_until_eof(s, limit=n * MiB)  # the rest, then bulwarkd's close
    recs = bwmsg.parse_records(first + rest)
    assert ids_of(recs) == ids, "the reply went on to its end after the FIN"
    s.close()
    wait_conns(srv, 0)
    assert queued(srv, b.client_id) == n, "a FIN in the middle of the 2104 counted as evidence"
    assert ids_of(same_user(srv, b).pull()) == ids


@pytest.mark.parametrize("how", ["shutdown", "close"])
def test_an_orderly_close_after_the_whole_2104_deletes(start_server, how):
    """The positive side of the evidence: the whole 2104 read, then a FIN
    (a shutdown waiting for bulwarkd's close, or a plain close)."""
    srv = start_server(console=True)
    a, b = user(srv, 0), user(srv, 1)
    ids = [a.send(b.client_id, 3, bytes([i]) * 16) for i in range(3)]
    ids.append(a.send(b.client_id, 4, os.urandom(200000)))  # one from a file
    a.close()
    b.close()
    s = socket.create_connection((H, srv.port), timeout=10)
    s.sendall(bwmsg.pack_request(b.client_id, bwmsg.PULL))
    code, body = read_reply(s)
    assert ids_of(bwmsg.parse_records(body)) == ids
    if how == "shutdown":
        end_in_order(s)
    else:
        s.close()
    wait_conns(srv, 0)
    wait_deleted(srv, b.client_id)
    # the contents go once the deletion is committed
    assert bwd.wait_for(
        lambda: not [p for p in srv.blobs("messages").iterdir() if p.is_file()], 5)
    assert same_user(srv, b).pull() == []


def test_a_close_right_after_reading_the_2104_deletes_also_after_other_requests(start_server):
    """The client reads the whole 2104 and closes at once, on a connection
    that sent 603s before its 604: the close is evidence however fast it
    comes. (The end of the reply was once judged a pass late, after its
    last byte had been written: a client quick enough to read it all and
    close before that pass lost its evidence, and got everything again.)"""
    srv = start_server()
    a, b = user(srv, 0), user(srv, 1)
    for k in range(12):
        a.send(b.client_id, 3, b"first")  # a 603 on the same connection
        ids = [b.send(a.client_id, 3, bytes([k]) * 8) for _ in range(3)]
        assert ids_of(a.pull()) == ids
        a.close()
        assert wait_for(lambda: queued(srv, a.client_id) == 0), "round %d" % k
    b.close()


# --------------------------------------------------------------------------
# 2. One client, several connections


def test_a_request_pipelined_behind_the_604_is_no_evidence(start_server):
    """A client that sends its next request in the same write as the 604
    has not read the 2104 when it sends it: that request proves nothing.
    The client then resets without reading: the messages must wait for the
    next pull."""
    srv = start_server()
    a, b = user(srv, 0), user(srv, 1)
    ids = [a.send(b.client_id, 3, bytes([i]) * 40) for i in range(5)]
    s = socket.create_connection((H, srv.port), timeout=10)
    s.sendall(bwmsg.pack_request(b.client_id, bwmsg.PULL) +
              bwmsg.pack_request(b.client_id, bwmsg.LIST))
    code, body = read_reply(s)  # read, but it could as well be lost
    assert code == bwmsg.WAITING and ids_of(bwmsg.parse_records(body)) == ids
    code, _ = read_reply(s)
    assert code == bwmsg.CLIENTS  # the 601 was served: the server saw it
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    held = srv.conns()
    s.close()  # a reset
    bwd.wait_for(lambda: srv.conns() == held - 1, 5)  # bulwarkd has closed it
    assert queued(srv, b.client_id) == 5, "deleted on a pipelined request"
    b2 = same_user(srv, b)
    assert ids_of(b2.pull()) == ids
    b2.list()  # a request sent after the reply was read: evidence
    assert b2.pull() == []
    wait_deleted(srv, b.client_id)


def test_a_slow_reader_gets_a_large_2104_whole_past_the_idle_time(start_server):
    """--timeout closes connections that say nothing; a client still
    reading a large 2104 is not one of them, whether the server still holds
    the rest or the kernel does. 8 MiB read in sips over about three times
    the idle time, then the next request deletes them."""
    srv = start_server("--timeout", "1")
    a, b = user(srv, 0), user(srv, 1)
    blobs = [bytes([i]) * (2 * MiB) for i in range(4)]
    ids = [a.send(b.client_id, 4, x) for x in blobs]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.settimeout(10)
    s.connect((H, srv.port))
    s.sendall(bwmsg.pack_request(b.client_id, bwmsg.PULL))
    head = bw.recv_exact(s, 7)
    _, code, total = bw.RESP_HEADER.unpack(head)
    assert code == bwmsg.WAITING and total == sum(len(x) + 25 for x in blobs)
    body = bytearray()
    start = time.monotonic()
    while len(body) < total:
        chunk = s.recv(min(64 * 1024, total - len(body)))
        assert chunk, "closed after %d of %d bytes, %.1f s in" % (
            len(body), total, time.monotonic() - start)
        body += chunk
        time.sleep(0.025)  # sips: the reading spans the idle time
    assert time.monotonic() - start > 2.0, "read too fast to span the idle time"
    recs = bwmsg.parse_records(bytes(body))
    assert ids_of(recs) == ids and [r[3] for r in recs] == blobs
    s.sendall(bwmsg.pack_request(b.client_id, bwmsg.LIST))
    code, _ = read_reply(s)
    assert code == bwmsg.CLIENTS
    s.close()
    wait_deleted(srv, b.client_id)


def test_a_reader_that_took_a_large_2104_long_ago_gets_one_idle_time(
        start_server):
    """The idle look gives more time to a peer still taking output, judged
    by what it took since its last sign of life. One that took a large
    2104 whole, then asked something and went quiet, is closed one idle
    time after its request, not two (what a stale mark gave it)."""
    srv = start_server("--timeout", "2")
    a, b = user(srv, 0), user(srv, 1)
    blobs = [bytes([i]) * (2 * MiB) for i in range(2)]
    for x in blobs:
        a.send(b.client_id, 4, x)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.settimeout(15)
    s.connect((H, srv.port))
    s.sendall(bwmsg.pack_request(b.client_id, bwmsg.PULL))
    _, code, total = bw.RESP_HEADER.unpack(bw.recv_exact(s, 7))
    assert code == bwmsg.WAITING
    time.sleep(0.3)  # the server fills what the kernel takes, and blocks
    assert len(bw.recv_exact(s, total)) == total
    s.sendall(bwmsg.pack_request(b.client_id, bwmsg.LIST))
    asked = time.monotonic()
    code, _ = read_reply(s)
    assert code == bwmsg.CLIENTS
    try:
        rest = s.recv(1)
    except ConnectionResetError:
        rest = b""
    quiet = time.monotonic() - asked
    s.close()
    assert rest == b"", "the server said more after the reply"
    # the look runs every 0.2 s: one idle time is 2.0-2.2 s, two are 4.0+
    # (the slack above is a loaded machine's, ASan and another worker)
    assert 1.8 < quiet < 3.9, "closed %.2f s after the last request" % quiet


@pytest.mark.parametrize("evidence", ["next-request", "orderly-close"])
def test_pulls_on_several_connections_never_wait_and_only_the_latest_deletes(
        start_server, evidence):
    srv = start_server(console=True)
    a, b1 = user(srv, 0), user(srv, 1)
    ids = [a.send(b1.client_id, 3, bytes([i]) * 16) for i in range(3)]
    b2, b3 = same_user(srv, b1), same_user(srv, b1)
    # connection 1 pulls, reads all and keeps the connection
    assert ids_of(b1.pull()) == ids
    # connection 2 is answered at once with the same messages
    b2.timeout = 5
    assert ids_of(b2.pull()) == ids
    # connection 1's evidence no longer deletes: its pull is not the latest
    b1.list()
    assert queued(srv, b1.client_id) == 3, "an older pull's evidence deleted"
    # connection 3 still gets all three
    assert ids_of(b3.pull()) == ids
    # connection 2's evidence is stale now too, whether a request or a close
    b2.list()
    b2.close()
    b1.close()
    wait_conns(srv, 2)  # a's and b3's remain
    assert queued(srv, b1.client_id) == 3, "an older pull's evidence deleted"
    # connection 3's evidence deletes
    if evidence == "next-request":
        b3.list()
    else:
        b3.close()
        wait_conns(srv, 1)
    wait_deleted(srv, b1.client_id)
    assert same_user(srv, b1).pull() == []


# --------------------------------------------------------------------------
# 3. and 4. Durability before delivery


@pytest.mark.sqlite_only("a failing fdatasync of defensive.db's WAL")
@pytest.mark.parametrize("size", [16, 100000], ids=["inline", "spilled"])
def test_a_message_whose_fsync_failed_is_answered_9000_and_never_delivered(
        start_server, shim, tmp_path, size):
    arm = tmp_path / "arm"
    dd = tmp_path / "d"
    srv = start_server(data_dir=dd, env=bwd.fault_env(
        shim, fault="fdatasync:1:EIO:defensive.db-wal", arm=arm))
    a, b = user(srv, 0), user(srv, 1)
    arm.write_text("go")
    content = os.urandom(size)
    code, body = a.request(603, bwmsg.SEND_PREFIX.pack(b.client_id, 3, size) + content)
    assert (code, body) == (bwmsg.ERROR, b"")
    assert "fdatasync #1 failed" in srv.log()
    # removed: no row, no content file, nothing to pull
    assert queued(srv) == 0, "the refused message is still in the messages table"
    assert not [p for p in bwd.blob_path(dd, "messages").iterdir() if p.is_file()]
    assert b.pull() == []
    b.list()
    # a later fsync that succeeds does not cover what the failed one
    # dropped (Linux may have discarded those pages): until a restart,
    # no message is acknowledged as stored
    code, body = a.request(603, bwmsg.SEND_PREFIX.pack(b.client_id, 3, 5) + b"later")
    assert (code, body) == (bwmsg.ERROR, b""), "a 603 after a failed fsync was acknowledged"
    assert b.pull() == []
    a.close()
    b.close()
    srv.stop()
    # after a restart, messages are stored again, and the refused rows did
    # not come back: the next one is the only one delivered
    srv2 = start_server(data_dir=dd)
    a2 = same_user(srv2, a)
    mid = a2.send(b.client_id, 3, b"after" * 4)
    a2.close()
    assert [(r[1], r[3]) for r in same_user(srv2, b).pull()] == [(mid, b"after" * 4)]


@pytest.mark.sqlite_only("a slowed fdatasync of defensive.db's WAL holds the 2103")
def test_a_2104_never_carries_a_message_before_its_2103(start_server, shim, tmp_path):
    """While the fsync that covers A's message is running (made slow by the
    shim: 6 s, so a loaded machine still fits the pulls in it), its row is
    committed but B's pulls must not carry it."""
    arm = tmp_path / "arm"
    srv = start_server(env=bwd.fault_env(
        shim, fault="fdatasync:1:sleep=6000:defensive.db-wal", arm=arm))
    a, b = user(srv, 0), user(srv, 1)
    arm.write_text("go")
    result = {}

    def send():
        try:
            result["id"] = a.send(b.client_id, 3, b"slow disk" + bytes(7))
        except Exception as e:  # noqa: BLE001 - reported below
            result["error"] = repr(e)

    t = threading.Thread(target=send)
    t.start()
    try:
        # the row is in the table (committed), its fsync is sleeping
        assert bwd.wait_for(lambda: queued(srv, b.client_id) == 1, 5), \
            "the row was never committed"
        assert bwd.wait_for(lambda: "fdatasync #1 sleeps" in srv.log(), 5)
        assert b.pull() == [], "a 2104 carried a message whose 2103 had not been sent"
        b.list()
        assert b.pull() == []
        assert t.is_alive() and not result, \
            "the 2103 came before the pulls: the test did not test the pending fsync"
    finally:
        t.join(15)
    assert "error" not in result, result
    got = b.pull()
    assert [(r[0], r[1], r[3]) for r in got] == \
        [(a.client_id, result["id"], b"slow disk" + bytes(7))]


def wal_bytes(dd):
    wal = dd / "defensive.db-wal"
    return wal.stat().st_size if wal.exists() else 0


# slow: it times every 603 (none may wait 10 s), which other tests' disk
# writes beside it would stretch (seen at four workers under ASan)
@pytest.mark.slow
@pytest.mark.sqlite_only("the journal of defensive.db")
def test_the_journal_starts_over_on_a_worker_never_on_the_loop(start_server, shim, tmp_path):
    """Once a checkpoint has copied the whole journal, the next commit
    starts it over from its beginning, and writes and syncs its header
    first: on a busy disk, milliseconds or more. That commit must not be
    the loop's. Every sync of the journal on the loop thread is made to
    take 15 s here, while 600 messages of 60 KB (in the rows: 9 cycles
    of the journal) are sent: none may happen, and every message is
    stored and delivered."""
    arm = tmp_path / "arm"
    dd = tmp_path / "d"
    srv = start_server(data_dir=dd, env=bwd.fault_env(
        shim, arm=arm,
        fault="fdatasync@main:1:sleep=15000:/defensive.db-wal,"
              "fsync@main:1:sleep=15000:/defensive.db-wal"))
    a, b = user(srv, 0), user(srv, 1)
    body = os.urandom(60_000)  # a row, not a file
    arm.write_text("go")
    ids = []
    try:
        for _ in range(600):
            ids.append(a.send(b.client_id, 3, body))
    except socket.timeout:
        pytest.fail("a 603 waited 10 s after %d: the journal was synced on the loop\n%s"
                    % (len(ids), srv.log_tail()))
    assert "sleeps" not in srv.log(), srv.log_tail()
    # the WAL's header counts its restarts (its checkpoint sequence)
    with open(dd / "defensive.db-wal", "rb") as f:
        restarts = struct.unpack(">I", f.read(16)[12:16])[0]
    assert restarts >= 3, \
        "the journal started over %d times: the test did not test it" % restarts
    got = []
    while len(got) < len(ids):
        recs = b.pull()
        assert recs, "%d of %d delivered" % (len(got), len(ids))
        got += [r[1] for r in recs if r[3] == body]
    assert got == ids
    # a stop syncs the journal on the loop, rightly (nothing else runs),
    # and would sleep: the rows are durable, so no stop is needed
    srv.proc.kill()
    srv.proc.wait(timeout=10)
    srv.stopped = True


@pytest.mark.sqlite_only("a slowed fdatasync of defensive.db itself: the checkpoint's")
def test_a_checkpoint_of_the_journal_holds_up_no_one(start_server, shim, tmp_path):
    """Past 1,000 pages (4 MB) the journal is copied into defensive.db,
    which is then fsync'd. That fsync is made to take 20 s: it must run
    off the loop, so that meanwhile another connection's 602 is answered
    (a 10 s timeout). The 603s sent meanwhile may wait for it (the
    store's writes pause for the checkpoint's last pass), but are stored.
    Once it is over, the journal starts again from its beginning rather
    than growing, and its file is cut back to 8 MiB should it have grown
    meanwhile (when the sleeping pass is a first one, no batch waits for
    it); every message is delivered once, in order."""
    arm = tmp_path / "arm"
    dd = tmp_path / "d"
    wake = tmp_path / "wake"
    srv = start_server(data_dir=dd, env=bwd.fault_env(
        shim, fault="fdatasync:1:sleep=20000:/defensive.db$", arm=arm, wake=wake))
    a, b = user(srv, 0), user(srv, 1)
    a.close()  # its next connection: a 603 may wait for the checkpoint's fsync
    a.timeout = 60
    probe = same_user(srv, b)
    key_b = probe.public_key(b.client_id)
    body = os.urandom(2000)  # a row, not a file
    ids, failed = [], []
    stop = threading.Event()

    def send(n):
        for i in range(n):
            if stop.is_set():
                return
            try:
                ids.append(a.send(b.client_id, 3, body))
            except Exception as e:  # noqa: BLE001 - reported below
                failed.append(repr(e))
                return

    arm.write_text("go")
    t = threading.Thread(target=send, args=(5000,))  # at most 10 MB
    t.start()
    try:
        assert wait_for(lambda: "fdatasync #1 sleeps" in srv.log() or not t.is_alive(), 120)
        assert "fdatasync #1 sleeps" in srv.log(), \
            "no checkpoint fsync'd defensive.db after %d messages (%s)" % (len(ids), failed)
        # the checkpoint's fsync is sleeping now
        try:
            assert probe.public_key(b.client_id) == key_b
        except socket.timeout:
            pytest.fail("a 602 waited 10 s while the checkpoint's fsync slept: "
                        "it runs on the loop")
        assert "fdatasync #1 woke" not in srv.log(), \
            "the fsync ended before the 602: the test did not test it"
        wake.write_text("go")  # seen: no need to wait out the 20 s
        assert wait_for(lambda: "fdatasync #1 woke" in srv.log(), 60)
    finally:
        stop.set()
        t.join(120)
    assert not failed, failed
    # three times the journal's limit again: it must start over, not grow
    start = wal_bytes(dd)
    stop.clear()
    send(1500)
    assert not failed, failed
    assert wal_bytes(dd) < 10 * 1000 * 1000, \
        "the journal grew from %d to %d bytes: no checkpoint caught up" % (start, wal_bytes(dd))
    assert ro_query(srv, "SELECT count(*) FROM messages")[0][0] == len(ids)
    got = []
    while len(got) < len(ids):
        more = b.pull()
        assert more, "%d of %d messages delivered" % (len(got), len(ids))
        got += more
        b.list()
    assert [(r[1], r[3]) for r in got] == [(i, body) for i in ids]
    assert "checkpoint of the database journal failed" not in srv.log()


SLOW_CREATE_MS = 15000


@pytest.mark.files_only("slows the creation of a content's file")
def test_a_slow_creation_of_a_large_contents_file_holds_up_no_one(start_server, shim,
                                                                    tmp_path):
    """A content over 64 KiB goes to a file of its own, made in
    messages/.incoming. Making it takes 15 s here (a busy disk): meanwhile
    another connection's 602 is answered (10 s timeout), and the 603 then
    ends stored and is delivered whole."""
    arm = tmp_path / "arm"
    wake = tmp_path / "wake"
    srv = start_server(env=bwd.fault_env(
        shim, fault="openat:1:sleep=%d:messages/.incoming/" % SLOW_CREATE_MS, arm=arm,
        wake=wake))
    a, b = user(srv, 0), user(srv, 1)
    a.close()
    a.timeout = SLOW_CREATE_MS / 1000.0 + 10
    probe = same_user(srv, b)
    key_b = probe.public_key(b.client_id)
    body = os.urandom(300_000)
    got = {}

    def send():
        try:
            got["id"] = a.send(b.client_id, 3, body)
        except Exception as e:  # noqa: BLE001 - reported below
            got["err"] = repr(e)

    arm.write_text("go")
    t = threading.Thread(target=send)
    t.start()
    try:
        assert wait_for(lambda: "bwfault: openat #1 sleeps" in srv.log(), 10), \
            "no file was made for the content: the test did not test anything\n%s" % (
                srv.log_tail())
        try:
            assert probe.public_key(b.client_id) == key_b
        except socket.timeout:
            pytest.fail("a 602 waited 10 s while a content's file was made: "
                        "it is made on the loop")
        assert "bwfault: openat #1 woke" not in srv.log(), \
            "the creation ended before the 602: the test did not test it"
    finally:
        wake.write_text("go")  # seen: the rest of the sleep need not pass
        t.join(SLOW_CREATE_MS / 1000.0 + 20)
    assert "id" in got, got
    recs = b.pull()
    assert [(r[1], r[3]) for r in recs] == [(got["id"], body)]
    assert not list(srv.blobs("messages", ".incoming").iterdir())


SLOW_UNLINK_MS = 15000


@pytest.mark.files_only("slows the removal of a content's file")
def test_a_slow_removal_of_a_dropped_contents_file_holds_up_no_one(start_server, shim,
                                                                     tmp_path):
    """Attack: a sender starts a large 603 and hangs up half-way, as often
    as it likes. The content's file in messages/.incoming is removed, and
    removing a file frees its blocks (slow on a busy disk). The removal
    takes 15 s here: meanwhile another connection's 602 is answered (10 s
    timeout). Then the file is gone, and nothing was delivered."""
    arm = tmp_path / "arm"
    wake = tmp_path / "wake"
    srv = start_server(env=bwd.fault_env(
        shim, fault="unlinkat:1:sleep=%d:messages/.incoming/" % SLOW_UNLINK_MS, arm=arm,
        wake=wake))
    a, b = user(srv, 0), user(srv, 1)
    probe = same_user(srv, b)
    key_b = probe.public_key(b.client_id)
    size = 2 << 20
    a.connect()
    try:
        prefix = bwmsg.SEND_PREFIX.pack(b.client_id, 3, size)
        a.send_raw(bw.pack_request_header(a.client_id, bwmsg.SEND, len(prefix) + size)
                   + prefix + os.urandom(size // 2))
        assert wait_for(lambda: list(srv.blobs("messages", ".incoming").iterdir()), 10), \
            "the 603 made no file: the test did not test anything\n%s" % srv.log_tail()
        arm.write_text("go")
    finally:
        a.close()
    assert wait_for(lambda: "bwfault: unlinkat #1 sleeps" in srv.log(), 10), \
        "the dropped content's file was not removed\n%s" % srv.log_tail()
    try:
        assert probe.public_key(b.client_id) == key_b
    except socket.timeout:
        pytest.fail("a 602 waited 10 s while a dropped content's file was removed: "
                    "it is removed on the loop")
    assert "bwfault: unlinkat #1 woke" not in srv.log(), \
        "the removal ended before the 602: the test did not test it"
    wake.write_text("go")  # seen: the rest of the sleep need not pass
    assert wait_for(lambda: not list(srv.blobs("messages", ".incoming").iterdir()),
                    SLOW_UNLINK_MS / 1000.0 + 10)
    assert b.pull() == []


SLOW_CLOSE_MS = 15000


@pytest.mark.files_only("slows the close of a content's file")
def test_a_slow_close_of_a_pulled_contents_file_holds_up_no_one(start_server, shim, tmp_path):
    """A pull reads a large content from its file and closes it. When
    another pull of the same mailbox has settled that content meanwhile,
    this close is the file's last, and frees its blocks: slow on a busy
    disk. Here the close itself is made to take 15 s (whether or not it
    is the last): meanwhile another connection's 602 is answered (10 s
    timeout), and the pull itself ends whole."""
    arm = tmp_path / "arm"
    wake = tmp_path / "wake"
    srv = start_server(env=bwd.fault_env(
        shim, fault="close:1:sleep=%d:/messages/" % SLOW_CLOSE_MS, arm=arm, wake=wake))
    a, b = user(srv, 0), user(srv, 1)
    probe = same_user(srv, a)
    key_a = probe.public_key(a.client_id)
    body = os.urandom(300_000)
    mid = a.send(b.client_id, 3, body)
    assert [p.name for p in srv.blobs("messages").iterdir() if p.is_file()], \
        "the content has no file: the test would not test anything"
    b.connect().settimeout(SLOW_CLOSE_MS / 1000.0 + 10)
    got = {}

    def pull():
        try:
            got["recs"] = b.pull()
        except Exception as e:  # noqa: BLE001 - reported below
            got["err"] = repr(e)

    arm.write_text("go")
    t = threading.Thread(target=pull)
    t.start()
    try:
        assert wait_for(lambda: "bwfault: close #1 sleeps" in srv.log(), 10), \
            "the content's file was not closed: the test did not test anything\n%s" % (
                srv.log_tail())
        try:
            assert probe.public_key(a.client_id) == key_a
        except socket.timeout:
            pytest.fail("a 602 waited 10 s while a content's file was closed: "
                        "it is closed on the loop")
        assert "bwfault: close #1 woke" not in srv.log(), \
            "the close ended before the 602: the test did not test it"
    finally:
        wake.write_text("go")  # seen: the rest of the sleep need not pass
        t.join(SLOW_CLOSE_MS / 1000.0 + 20)
    assert "recs" in got, got
    assert [(r[1], r[3]) for r in got["recs"]] == [(mid, body)]


# --------------------------------------------------------------------------
# 5. --max-message-size


def expect_9000_then_close(s):
    head = bw.recv_exact(s, 7)
    assert bw.RESP_HEADER.unpack(head) == (2, bwmsg.ERROR, 0), head
    assert bw.recv_until_eof(s, limit=1 << 16) == b""


@pytest.mark.parametrize("limit", [1000, 100000])
def test_max_message_size_refuses_over_and_stores_up_to(start_server, limit):
    srv = start_server("--max-message-size", str(limit))
    a, b = user(srv, 0), user(srv, 1)
    # over the limit: 9000 as soon as the prefix is in, and a close
    for over in (limit + 1, limit + 65536):
        s = socket.create_connection((H, srv.port), timeout=10)
        s.sendall(bw.pack_request_header(a.client_id, 603, 21 + over, 2)
                  + bwmsg.SEND_PREFIX.pack(b.client_id, 4, over))
        expect_9000_then_close(s)
        s.close()
    assert queued(srv) == 0
    # at and under the limit: stored and delivered whole
    blobs = [os.urandom(limit), os.urandom(limit - 1), b""]
    ids = [a.send(b.client_id, 4, x) for x in blobs]
    got = b.pull()
    assert [(r[1], r[3]) for r in got] == list(zip(ids, blobs))


# --------------------------------------------------------------------------
# 6. kill -9 in the middle of a 2104


def test_kill_9_while_a_2104_streams_then_a_restart_delivers_each_once(start_server, tmp_path):
    dd = tmp_path / "d"
    srv = start_server(data_dir=dd)
    a, b = user(srv, 0), user(srv, 1)
    blobs = []
    for i in range(24):
        blobs.append(bytes([i]) * (MiB if i % 3 else 3000))  # files and rows
    ids = [a.send(b.client_id, 4 if len(x) > 3000 else 3, x) for x in blobs]
    s = socket.create_connection((H, srv.port), timeout=10)
    s.sendall(bwmsg.pack_request(b.client_id, bwmsg.PULL))
    _, code, total = bw.RESP_HEADER.unpack(bw.recv_exact(s, 7))
    assert code == bwmsg.WAITING
    got = 0
    for _ in range(40):  # a slow reader: a few 64 KiB sips
        chunk = s.recv(65536)
        assert chunk
        got += len(chunk)
        time.sleep(0.01)  # a slow reader
    assert got < total, "the whole reply was read before the kill"
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)
    srv.stopped = True
    s.close()
    srv2 = start_server(data_dir=dd)
    b2 = same_user(srv2, b)
    recs = pull_all(srv2, b2)
    assert ids_of(recs) == ids, "every message exactly once, in id order"
    assert [r[3] for r in recs] == blobs
    a2 = same_user(srv2, a)
    assert a2.send(b.client_id, 1) > ids[-1], "ids are never reused"


@pytest.mark.files_only("removes a content's file under messages/")
def test_a_message_whose_content_is_gone_stops_one_pull_not_every_pull(start_server, tmp_path):
    """bob has a spilled message (its content a file under messages/) and a
    small one after it; the content's file is lost (a disk, a hand, or a
    commit whose outcome was unknown and whose content went). The pull
    that meets it is cut short (its header promised those bytes), and the
    message goes with it: the next pull brings the small one, rather than
    stop at the same row every time until a restart."""
    dd = tmp_path / "d"
    srv = start_server(data_dir=dd)
    a, b = user(srv, 0), user(srv, 1)
    big = a.send(b.client_id, 3, os.urandom(100000))
    small = a.send(b.client_id, 3, b"after the lost one")
    a.close()
    files = [p for p in bwd.blob_path(dd, "messages").iterdir() if p.is_file()]
    assert len(files) == 1, files
    files[0].unlink()
    first = same_user(srv, b)
    with pytest.raises((AssertionError, OSError, EOFError)):
        first.pull()  # cut short
    first.close()
    assert bwd.wait_for(lambda: "content" in srv.log() and "is gone" in srv.log(), 5), \
        srv.log_tail()
    assert bwd.wait_for(lambda: queued(srv, b.client_id) == 1, 5), queued(srv, b.client_id)
    second = same_user(srv, b)
    assert [(r[1], r[3]) for r in second.pull()] == [(small, b"after the lost one")]
    second.close()
    assert big < small
    wait_deleted(srv, b.client_id)
