"""The group chat ("rooms", docs/rooms.md) against attacks on its fairness
and its bounds: a member that floods and resets, forty members whose lines
all land in one loop pass, a flood of room creations from two addresses
ahead of someone else's join, names that look like a member's, a client
that never leaves the menu, a goodbye that is never read, a room password
left readable in the daemon's memory, and a line that wraps on the
`bulwark chat` terminal into what looks like someone else's line.

Clients are bwrooms.py's (and raw sockets through bwrooms.Crowd); servers
conftest's start_server(rooms=True). Every loop is bounded in count and
time; nothing asserts a duration, only what arrives, in which order and how
many."""

import fcntl
import os
import pty
import random
import re
import select
import signal
import socket
import string
import struct
import subprocess
import termios
import threading
import time
import traceback
import unicodedata

import pytest

import bwd
import bwrooms as R
from bwrooms import RoomClient, chat, console_stat


def reset_close(sock):
    """Closes sock with a reset (SO_LINGER 0): whatever is unsent is lost."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def bound_socket(port, source, timeout=10.0):
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def crowd_join(crowd, port, rid, password, names, source=None):
    """Raw sockets that join room rid as names (all piped in one write
    each); returns {name: sock} (the sockets are crowd's)."""
    socks = {}
    for i, name in enumerate(names):
        if source is None:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
        else:
            s = bound_socket(port, source(i) if callable(source) else source)
        s.sendall(("1\n%s\n%d\n%s\n" % (name, rid, password)).encode())
        socks[name] = crowd.add(s)
    return socks


def cut_off_lines(lines):
    return [ln for ln in lines if ln.endswith(R.NOT_READING)]


# --------------------------------------------------------------------------
# 1. A member is cut off only for what it fails to read


def test_a_flooder_that_resets_does_not_get_the_readers_cut_off(start_server):
    """The attack: a member sends 64 KiB of short lines (far past the rate
    limit of 20 lines a second, bursts of 40: the server holds them back)
    and then resets the connection. Its held-back lines are still said
    (docs/rooms.md), and saying them all in one go queues more than the
    256 KiB cap to every other member within one loop pass, so the server
    used to cut off every reader in the room, though each one reads all
    the time. Readers must stay connected, get the flooder's first lines in
    order, and go on receiving the room."""
    srv = chat(start_server)
    port = srv.rooms_port
    a, rid = R.creator(port, "alice", "pw")
    flooder_name = "flooder-" + "f" * 50  # a long name: every relayed line is long
    crowd = R.Crowd()
    try:
        readers = {"alice": crowd.add(a.sock)}
        crowd.bufs[a.sock] = a.buf
        readers.update(crowd_join(crowd, port, rid, "pw", ["bob", "carol"]))
        # the readers are in before the flooder comes: a reader whose
        # password hash finished after the flooder's never sees its join
        assert crowd.pump(lambda: R.joined("bob") in crowd.lines[readers["alice"]]
                          and R.joined("carol") in crowd.lines[readers["alice"]], 20), \
            {n: crowd.lines[s][-3:] for n, s in readers.items()}
        f = R.member(port, flooder_name, rid, "pw")

        def all_joined():
            return (sum(ln.endswith(" has joined the group")
                        for ln in crowd.lines[readers["alice"]]) == 3
                    and R.joined(flooder_name) in crowd.lines[readers["bob"]]
                    and R.joined(flooder_name) in crowd.lines[readers["carol"]])

        assert crowd.pump(all_joined, 20), {n: crowd.lines[s] for n, s in readers.items()}

        said = []
        data = b""
        while len(data) < 64 * 1024:
            said.append("hi %d" % len(said))
            data += (said[-1] + "\n").encode()
        f.sock.settimeout(10)
        f.sock.sendall(data)
        prefix = flooder_name + ": "

        def got(s):
            return [ln[len(prefix):] for ln in crowd.lines[s] if ln.startswith(prefix)]

        # the burst is said at once; the rest is held back by the rate
        assert crowd.pump(lambda: all(len(got(s)) >= 40 for s in readers.values()), 15), \
            {n: len(got(s)) for n, s in readers.items()}
        crowd.pump(lambda: False, 0.3)  # every byte is in the server's socket by now
        reset_close(f.sock)

        # the readers read on; within a few seconds the server has dealt
        # with the reset, whatever it then says
        crowd.pump(lambda: any(crowd.eof[s] for s in readers.values()), 4)
        for name, s in readers.items():
            assert not crowd.eof[s], (
                "%s, a member reading all the time, was disconnected when the flooder "
                "reset; it had %d of the flooder's lines; log:\n%s"
                % (name, len(got(s)), srv.log_tail(15)))
            assert cut_off_lines(crowd.lines[s]) == [], (name, cut_off_lines(crowd.lines[s]))
            mine = got(s)
            assert len(mine) >= 40 and mine == said[:len(mine)], (name, mine[:5], len(mine))

        # and they keep receiving each other
        readers["alice"].sendall(b"still here\n")
        readers["bob"].sendall(b"me too\n")

        def heard():
            return ("alice: still here" in crowd.lines[readers["bob"]]
                    and "alice: still here" in crowd.lines[readers["carol"]]
                    and "bob: me too" in crowd.lines[readers["alice"]]
                    and "bob: me too" in crowd.lines[readers["carol"]])

        assert crowd.pump(heard, 15), {n: crowd.lines[s][-3:] for n, s in readers.items()}
        for name, s in readers.items():
            assert not crowd.eof[s], name
            assert cut_off_lines(crowd.lines[s]) == [], name
    finally:
        crowd.close()
    assert "output over the connection's cap" not in srv.log(), srv.log_tail(20)
    assert srv.alive()


def test_forty_members_reading_all_the_time_each_get_all_39_lines_sent_at_once(start_server):
    """The attack: 40 members of one room each send one line of 4096 bytes
    0xff at the same moment (the daemon is stopped with SIGSTOP while they
    write, so that it reads all forty in one loop pass). Each byte becomes
    U+FFFD, 3 bytes: every member is owed 39 lines of about 12 KiB, 480
    KiB, more than the 256 KiB queue cap, queued within that one pass. The
    server used to cut off all forty though all forty read continuously:
    the cap must count what a member fails to read, not what one pass
    queues."""
    srv = chat(start_server)
    port = srv.rooms_port
    n = 40
    names = ["m%02d" % i for i in range(n)]
    a, rid = R.creator(port, names[0], "pw")
    crowd = R.Crowd()
    stopped = False
    try:
        members = {names[0]: crowd.add(a.sock)}
        crowd.bufs[a.sock] = a.buf
        members.update(crowd_join(crowd, port, rid, "pw", names[1:],
                                  source=lambda i: "127.0.4.%d" % (i + 1)))

        def all_in():
            return (all(R.connected(rid) in crowd.lines[s] for nm, s in members.items()
                        if nm != names[0])
                    and sum(ln.endswith(" has joined the group")
                            for ln in crowd.lines[members[names[0]]]) == n - 1)

        assert crowd.pump(all_in, 60), sum(R.connected(rid) in crowd.lines[s]
                                           for s in members.values())
        crowd.pump(lambda: False, 0.3)  # every joined notice is in
        for s in members.values():
            crowd.lines[s] = []

        line = b"\xff" * 4096 + b"\n"
        os.kill(srv.proc.pid, signal.SIGSTOP)
        stopped = True
        for s in members.values():
            s.setblocking(True)
            s.settimeout(10)
            s.sendall(line)
            s.setblocking(False)
        os.kill(srv.proc.pid, signal.SIGCONT)
        stopped = False

        text = "\ufffd" * 4096
        want = {nm: sorted("%s: %s" % (o, text) for o in names if o != nm) for nm in names}

        def done():
            return all(crowd.eof[s] or len(crowd.lines[s]) >= n - 1 for s in members.values())

        crowd.pump(done, 60)
        crowd.pump(lambda: False, 0.3)
        cut = sorted(nm for nm, s in members.items() if crowd.eof[s])
        assert cut == [], (
            "%d of %d members reading all the time were disconnected: %s; log:\n%s"
            % (len(cut), n, cut[:10], srv.log_tail(10)))
        for nm, s in members.items():
            got = crowd.lines[s]
            assert cut_off_lines(got) == [], (nm, cut_off_lines(got)[:3])
            assert sorted(got) == want[nm], (nm, len(got), [g[:8] for g in got][:5])
    finally:
        if stopped:
            os.kill(srv.proc.pid, signal.SIGCONT)
        crowd.close()
    assert "output over the connection's cap" not in srv.log(), srv.log_tail(20)
    assert srv.alive()


# --------------------------------------------------------------------------
# 2. Password hashing is shared fairly between addresses


@pytest.mark.slow
def test_a_join_from_a_third_address_is_not_queued_behind_two_addresses_creating_rooms(
        start_server):
    """The attack: two addresses (127.0.0.2 and .3) each queue 150 room
    creations (one per connection: a connection has one password hashed at
    a time), each a real scrypt hash. Then someone from a third address
    (127.0.0.4) joins an existing room. With one password per address on a
    worker, the scheduler used to take the next waiting password of a flood
    address whose hash had just finished, ahead of the join, so the join
    waited for nearly all 300. Its answer must come before more than 20 of
    the 300 creations have been answered."""
    srv = chat(start_server)
    port = srv.rooms_port
    owner, rid = R.creator(port, "owner", "right", source="127.0.0.5")
    crowd = R.Crowd()
    try:
        floods = []
        for i in range(150):
            for src in ("127.0.0.2", "127.0.0.3"):
                floods.append(crowd.add(bound_socket(port, src)))
        joiner = crowd.add(bound_socket(port, "127.0.0.4"))
        assert crowd.pump(lambda: all(R.MENU_LAST in crowd.lines[s] for s in crowd.socks), 30), \
            sum(R.MENU_LAST in crowd.lines[s] for s in crowd.socks)
        joiner.sendall(("1\njoiner\n%d\n" % rid).encode())
        assert crowd.pump(lambda: R.ASK_PASS in crowd.lines[joiner], 10), crowd.lines[joiner]

        created = re.compile(r"^The id of the group is:\d+$")

        def answered():
            return sum(1 for s in floods for ln in crowd.lines[s] if created.match(ln))

        for k, s in enumerate(floods):
            s.sendall(("2\nf%03d\npw-%03d\n" % (k, k)).encode())
        # every creation is read and queued long before the first hash is
        # done (a few ms of writes against tens of ms of scrypt)
        assert crowd.pump(lambda: answered() >= 1, 30), srv.log_tail()
        before = answered()
        joiner.sendall(b"right\n")
        crowd.pump(lambda: R.connected(rid) in crowd.lines[joiner] or answered() > 20, 60)
        at_join = answered()
        assert R.connected(rid) in crowd.lines[joiner], (
            "the join from a third address waited behind the flood: %d of its 300 "
            "creations were answered first (%d before the join was sent), and the join "
            "was not; joiner read %r" % (at_join, before, crowd.lines[joiner][-3:]))
        assert at_join <= 20, at_join
    finally:
        crowd.close()
    owner.line("still here")
    assert srv.alive()


# --------------------------------------------------------------------------
# 3. Names that look like a member's are that member's name

TAKEN_RE = re.compile(r"^The name (.*) is taken in this group, try another$")
INVISIBLE = ("\u200b", "\u2060", "\ufeff", "\u200d", "\u00ad")


def try_join_as(port, rid, password, name):
    """Joins rid as name: ("taken", lines) when the server answers that
    the name is taken (and asks for another), ("joined", client) when it
    admits it (the client is left open), ("other", lines) otherwise."""
    c = RoomClient(port)
    c.send(b"1\n" + name.encode("utf-8") + b"\n" + str(rid).encode() + b"\n"
           + password.encode() + b"\n")
    got = c.expect(lambda ln: TAKEN_RE.match(ln) or ln == R.connected(rid)
                   or ln == R.MENU_LAST or ln == R.NAME_AGAIN)
    if got[-1] == R.connected(rid):
        return "joined", c
    if TAKEN_RE.match(got[-1]):
        got.append(c.next_line())
        c.close()
        return "taken", got
    c.close()
    return "other", got


def test_names_that_only_look_like_a_members_name_are_taken(start_server):
    """The attack: with alice in the room, join as "alice" with an
    invisible code point appended or inserted (U+200B ZERO WIDTH SPACE,
    U+2060 WORD JOINER, U+FEFF, U+200D ZERO WIDTH JOINER, U+00AD SOFT
    HYPHEN), or as "e\u0301mile" (e + COMBINING ACUTE) while "\u00e9mile" (the
    precomposed \u00e9) is in: the others see a second alice (or \u00e9mile)
    and take her lines for hers. Default-ignorable code points are removed
    from names and canonically equivalent names are one name, so each is
    answered with the taken-name prompt, never admitted."""
    srv = chat(start_server)
    port = srv.rooms_port
    a, rid = R.creator(port, "alice", "pw")
    e = R.member(port, "\u00e9mile", rid, "pw")
    bob = R.member(port, "bob", rid, "pw")
    a.expect_seq([R.joined("\u00e9mile"), R.joined("bob")])
    bob.pump(0.2)

    variants = []
    for ch in INVISIBLE:
        variants.append(("alice", "alice" + ch))
        variants.append(("alice", "al" + ch + "ice"))
    variants.append(("\u00e9mile", "e\u0301mile"))

    outcomes = {}
    impostors = []
    for real, name in variants:
        what, got = try_join_as(port, rid, "pw", name)
        outcomes[name] = what
        if what == "joined":
            impostors.append((real, name, got))
        else:
            assert what == "taken", (ascii(name), got)
            assert got[-1] == R.ASK_NAME, (ascii(name), got)
    # an impostor that got in says a line as "alice"
    for real, name, c in impostors:
        c.line("I am %s, you are fired" % real)
        c.leave()
    if impostors:
        bob.pump(1.0)
    bob_lines = bob.lines_for(0.3)

    admitted = [ascii(n) for n, w in outcomes.items() if w != "taken"]
    assert admitted == [], (
        "admitted as a second member with a look-alike name: %s; bob read %r"
        % (admitted, bob_lines))

    # what bob sees: no line looks as if from alice or \u00e9mile but theirs
    def shown(ln):
        return unicodedata.normalize("NFC", "".join(
            ch for ch in ln if unicodedata.category(ch) != "Cf" and ch != "\u00ad"))

    a.line("the real alice")
    e.line("the real \u00e9mile")
    bob_lines += [bob.next_line(), bob.next_line()]
    fakes = [ln for ln in bob_lines
             if shown(ln).startswith(("alice: ", "\u00e9mile: "))
             and ln not in ("alice: the real alice", "\u00e9mile: the real \u00e9mile")]
    assert fakes == [], [ascii(f) for f in fakes]
    assert srv.alive()


# --------------------------------------------------------------------------
# 4. Menu deadlines: nonsense, refusals and unread goodbyes end in time


def flood_until_closed(sock, line, seconds):
    """Writes line over and over (a writer thread, ahead of the server: the
    socket always holds more) while a reader thread takes every reply,
    until the server ends the stream or seconds pass. Returns (closed,
    bytes read)."""
    stop = threading.Event()
    state = {"closed": False, "rx": b"", "n": 0}
    chunk = line * max(1, 65536 // len(line))
    sock.settimeout(1.0)

    def reader():
        while not stop.is_set():
            try:
                data = sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                data = b""
            if not data:
                state["closed"] = True
                stop.set()
                return
            state["n"] += len(data)
            if len(state["rx"]) < 4096:
                state["rx"] += data

    def writer():
        while not stop.is_set():
            try:
                sock.sendall(chunk)
            except socket.timeout:
                continue
            except OSError:
                return

    threads = [threading.Thread(target=reader, daemon=True),
               threading.Thread(target=writer, daemon=True)]
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=5)
    return state


@pytest.mark.slow
def test_a_client_flooding_invalid_menu_answers_is_closed_at_the_menu_deadline(start_server):
    """The attack: --rooms-menu-timeout 1. A client answers the menu with
    an invalid option without pause (a line always waiting in its socket)
    while reading every reply. Once the step's second had passed, each
    answer asked again with a deadline 1 ms away, so a client that
    answers faster than that stayed at the menu for ever. An invalid answer
    must not extend the step: the server closes the connection within the
    step's time (and the whole menu's ten), here well within 20 s."""
    srv = chat(start_server, "--rooms-menu-timeout", "1")
    m = RoomClient(srv.rooms_port)
    # an invalid option (not 1, 2 or 3) on a line of 4000 bytes: one per read
    state = flood_until_closed(m.sock, b"9" * 3999 + b"\n", 20)
    assert R.INVALID.encode() in state["rx"], state["rx"][:300]  # they were read and answered
    assert state["closed"], (
        "still at the menu after 20 s of invalid answers (%d bytes of replies); log:\n%s"
        % (state["n"], srv.log_tail(5)))
    m.close()
    # the server serves others as before
    RoomClient(srv.rooms_port).close()
    assert srv.alive()


def keep_choosing_2(port, seconds, name="nobody", password="pw"):
    """A client that chooses 2 (create) again and again, answering a name
    or password prompt if asked, until the server closes it or seconds
    pass. Returns (closed, how many times it chose 2, last lines)."""
    c = RoomClient(port)
    chose = 0
    lines = []
    deadline = time.monotonic() + seconds
    try:
        c.line("2")
        chose += 1
        while time.monotonic() < deadline and not c.eof:
            try:
                ln = c.next_line(timeout=max(0.05, min(2.0, deadline - time.monotonic())))
            except R.Closed:
                break
            except AssertionError:
                continue
            lines = (lines + [ln])[-8:]
            try:
                if ln == R.MENU_LAST:
                    c.line("2")
                    chose += 1
                elif ln == R.ASK_NAME:
                    c.line(name)
                elif ln == R.ASK_CREATE_PASS:
                    c.line(password)
            except OSError:
                break
        if not c.eof:
            c.pump(0.2)
        return c.eof, chose, lines
    finally:
        c.close()


def test_too_many_rooms_is_said_before_a_name_and_password_and_does_not_hold_the_menu(
        start_server):
    """The attack: --rooms-max-rooms 1 and a room exists. Choosing 2 used
    to ask a name and a password, hash the password (a worker's 60 ms)
    and only then say "There are too many groups": each try costs the
    server a hash, and since time spent hashing does not count against the
    menu's deadlines, a client choosing 2 again and again stayed at the
    menu for minutes. Now 2 is answered at once with "too many groups" and
    the menu (no name, no password asked), and a client that keeps choosing
    2 is closed (--rooms-menu-timeout 1: within 20 s)."""
    srv = chat(start_server, "--rooms-max-rooms", "1", "--rooms-menu-timeout", "1")
    port = srv.rooms_port
    a, rid = R.creator(port, "alice", "pw")
    c = RoomClient(port)
    c.line("2")
    first = c.next_line()
    assert first == R.TOO_MANY_ROOMS, (
        "choosing 2 with no room left was answered %r (the name asked first)" % first)
    c.expect_seq(R.MENU.rstrip("\n").split("\n"))
    c.close()

    closed, chose, lines = keep_choosing_2(port, 20)
    assert closed, "still at the menu after choosing 2 %d times in 20 s; last lines %r" % (
        chose, lines)
    assert chose >= 2, (chose, lines)
    # the room and its member are unharmed
    b = R.member(port, "bob", rid, "pw")
    a.expect_seq([R.joined("bob")])
    b.line("hi")
    a.expect_seq(["bob: hi"])
    assert srv.alive()


def tcp_queues(local_port, remote_port):
    """(state, tx_queue, rx_queue) of the TCP socket local_port ->
    remote_port on 127.0.0.1 from /proc/net/tcp, or None if there is none.
    tx_queue: bytes written and not yet acknowledged (ss's Send-Q);
    rx_queue: bytes received and not yet read (Recv-Q)."""
    want_l = "0100007F:%04X" % local_port
    want_r = "0100007F:%04X" % remote_port
    with open("/proc/net/tcp") as f:
        next(f)
        for row in f:
            p = row.split()
            if p[1] == want_l and p[2] == want_r:
                tx, rx = p[4].split(":")
                return int(p[3], 16), int(tx, 16), int(rx, 16)
    return None


TCP_ESTABLISHED = 1


def rooms_conns(srv):
    fields = console_stat(srv.console_port)
    m = re.search(r"\brooms (\d+)", fields["connections"])
    assert m, fields["connections"]
    return int(m.group(1))


@pytest.mark.slow
@pytest.mark.parametrize("goodbye", [b"3\n", b"n" * 5000 + b"\n"], ids=["exit", "long_line"])
def test_a_goodbye_that_is_never_read_does_not_hold_the_connection(start_server, goodbye):
    """The attack: a client at the menu sends invalid options and never
    reads, until the server's replies fill both kernel buffers and start to
    wait in the server; then it says goodbye (3, or a line over 4096
    bytes). The server answers with its last words and closes once they
    are sent, which is never: it used to hold the connection for the idle
    time of a member (24 h). It must let it go within about 10 s. (Seen
    from the server: the console's count of rooms connections.)"""
    srv = chat(start_server, console=True)
    port = srv.rooms_port
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    try:
        lport = s.getsockname()[1]
        assert bwd.wait_for(lambda: rooms_conns(srv) == 1, 5)
        # invalid options of 64 bytes: the server reads 64 at a time, about
        # 9 KiB of replies, far below its 256 KiB queue cap
        line = b"9" * 63 + b"\n"
        reply = len((R.INVALID + "\n" + R.MENU).encode())
        sent = 0
        state = {"gone": False}

        def queues():
            """(server's unacknowledged, replies still in the server) once
            it has read everything sent; None once it let go."""
            q = srv_q = None
            for _ in range(200):
                srv_q = tcp_queues(port, lport)
                q = tcp_queues(lport, port)
                if srv_q is None or srv_q[0] != TCP_ESTABLISHED:
                    state["gone"] = True
                    return None
                if srv_q[2] == 0:
                    break
                time.sleep(0.01)  # poll interval
            else:
                pytest.fail("the server stopped reading: %r" % (srv_q,))
            # read and answered: the answers are queued (nothing shows when
            # the server has written the last of them: a few ms for it to)
            time.sleep(0.005)
            srv_q = tcp_queues(port, lport)
            if srv_q is None:
                state["gone"] = True
                return None
            held = len(R.MENU) + sent * reply - srv_q[1] - (q[2] if q else 0)
            return srv_q[1], held

        # while the kernel takes every reply, in big steps; then in small
        # ones until what the server's socket holds stops growing (it grows
        # as it is written, up to net.ipv4.tcp_wmem's maximum: past a first
        # pause at a few KiB)
        seen = []
        for _ in range(2000):
            q = queues()
            if q is None:
                break
            seen.append(q)
            if len(seen) >= 6 and q[1] > 0 and q[0] >= 256 * 1024 and \
                    len({x[0] for x in seen[-6:]}) == 1:
                break  # full, and replies wait in the server
            n = 256 if q[1] == 0 else 8
            s.sendall(line * n)
            sent += n
            if q[1] > 0:
                # small steps apart in time: the server's socket buffer grows
                # as it is written
                time.sleep(0.02)
        else:
            pytest.fail("the server's socket buffer never filled: %r" % seen[-5:])
        if not state["gone"]:
            assert seen[-1][1] < 200 * 1024, seen[-3:]  # below the cap: not cut off for it
            s.sendall(goodbye)

            def let_go():
                return rooms_conns(srv) == 0

            assert bwd.wait_for(let_go, 15, interval=0.5), (
                "the server still holds a connection whose goodbye was not read, 15 s "
                "later (its socket holds %d bytes, %d more wait in the server); its log "
                "lines:\n%s" % (seen[-1][0], seen[-1][1],
                                 "\n".join(ln for ln in srv.log().splitlines()
                                           if "console" not in ln)[-1500:]))
    finally:
        s.close()
    assert srv.alive()


# --------------------------------------------------------------------------
# 5. A room's password is not left in the daemon's memory


def rw_regions(pid, cap=256 << 20):
    """(start, end, name) of the process's writable mappings of at most
    cap bytes (the huge reserved ones of a sanitizer are skipped)."""
    out = []
    with open("/proc/%d/maps" % pid) as f:
        for row in f:
            p = row.split()
            lo, hi = (int(x, 16) for x in p[0].split("-"))
            name = p[5] if len(p) > 5 else ""
            if not p[1].startswith("rw") or name in ("[vvar]", "[vsyscall]", "[vvar_vclock]"):
                continue
            if hi - lo > cap:
                continue
            out.append((lo, hi, name))
    return out


def find_in_memory(pid, needle):
    """Where needle occurs in the writable memory of pid: [(address, mapping)]."""
    hits = []
    step = 1 << 20
    with open("/proc/%d/mem" % pid, "rb", buffering=0) as mem:
        for lo, hi, name in rw_regions(pid):
            at = lo
            while at < hi:
                n = min(step + len(needle) - 1, hi - at)
                try:
                    mem.seek(at)
                    data = mem.read(n)
                except (OSError, ValueError, OverflowError):
                    break
                k = data.find(needle)
                while k >= 0:
                    hits.append((hex(at + k), name or "anonymous"))
                    k = data.find(needle, k + 1)
                at += step
    return sorted(set(hits))


def test_a_room_password_is_not_left_readable_in_the_daemons_memory(start_server):
    """The attack: someone who can read the daemon's memory (a core dump,
    swap, a debugger, a memory disclosure bug) while a room is in use.
    Only the scrypt hash of a room's password is meant to be kept; the
    password itself stayed in the connections' input buffers and in the
    scratch line it was handled in. With a creator and a member in the
    room, the password's bytes must appear nowhere in the daemon's
    writable memory."""
    srv = chat(start_server)
    port = srv.rooms_port
    rng = random.SystemRandom()
    password = "Pw-" + "".join(rng.choice(string.ascii_letters) for _ in range(24))
    a, rid = R.creator(port, "alice", password)
    b = R.member(port, "bob", rid, password)
    a.expect_seq([R.joined("bob")])
    # the room works while its password is gone from memory
    b.line("hello")
    a.expect_seq(["bob: hello"])
    bwd.wait_for(srv.asleep, 5)  # the workers are done with it
    hits = find_in_memory(srv.proc.pid, password.encode())
    assert hits == [], "the room password is readable in bulwarkd's memory at %r" % hits[:10]
    # (the search does find what is there: the member's name)
    assert find_in_memory(srv.proc.pid, b"alice"), "the memory search found nothing at all"
    a.line("bye")
    b.expect_seq(["alice: bye"])


# --------------------------------------------------------------------------
# 6. The chat client: a line wider than the terminal


CSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def terminal_rows(raw, cols):
    """What a terminal of cols columns shows, row by row: the text without
    escape sequences, split at line ends and carriage returns, and each
    piece wider than the terminal wrapped onto the next rows (as a
    terminal with autowrap does)."""
    text = CSI_RE.sub("", raw.decode("utf-8", "replace"))
    rows = []
    for piece in re.split(r"\r\n|\n|\r", text):
        row, width = "", 0
        for ch in piece:
            w = 2 if unicodedata.east_asian_width(ch) in ("W", "F") else (
                0 if unicodedata.combining(ch) else 1)
            if width + w > cols:
                rows.append(row)
                row, width = "", 0
            row += ch
            width += w
        rows.append(row)
    return rows


def test_the_chat_client_wraps_a_long_line_so_no_row_starts_as_someone_else(tmp_path):
    """The attack: a member named mallory says 71 x's and then "alice: you
    are fired". On an 80-column terminal "mallory: " and the x's fill the
    row exactly, and the terminal wraps "alice: you are fired" onto a row
    of its own, where it reads as alice's line. `bulwark chat` wraps lines
    wider than the terminal itself and indents the rows that continue a
    line, so no row starts with "alice:"."""
    bwd.require_file(bwd.BULWARK, "bulwark", "BULWARK")
    cols = 80
    spoof = "mallory: " + "x" * 71 + "alice: you are fired"
    assert len("mallory: " + "x" * 71) == cols
    errors = []
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    ls.settimeout(15)
    done = threading.Event()

    def serve():
        try:
            conn, _ = ls.accept()
            with conn:
                conn.sendall(R.MENU.encode())
                conn.sendall((spoof + "\n").encode())
                conn.sendall(b"bob: the end\n")
                done.wait(15)
        except Exception:
            errors.append(traceback.format_exc())
        finally:
            ls.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    proc = subprocess.Popen([str(bwd.BULWARK), "chat", "127.0.0.1:%d" % ls.getsockname()[1]],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 10
        quiet_since = None
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    break
                if not data:
                    break
                out += data
                quiet_since = None
            elif b"bob: the end" in out:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= 0.3:
                    break
    finally:
        done.set()
        proc.kill()
        proc.wait(timeout=10)
        os.close(master)
        t.join(timeout=10)
    assert not errors, errors
    assert b"bob: the end" in out, out[-500:]
    rows = terminal_rows(out, cols)
    assert any("mallory: " in r for r in rows), rows
    # the whole of mallory's text is shown ...
    shown = "".join(r.strip() for r in rows)
    assert "you are fired" in shown, rows
    # ... but no row starts as if alice said it
    fake = [r for r in rows if r.startswith("alice:")]
    assert fake == [], "a row reads as alice's line: %r; rows %r" % (fake, rows[-6:])


# --------------------------------------------------------------------------
# Ghosts (members gone with lines held back) and one address's share


def reset(client):
    """Closes client's connection with a reset (SO_LINGER 0)."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def test_a_member_gone_with_an_over_long_line_held_leaves_and_its_room_goes(start_server):
    """bob sends 8 lines past his burst of 5, then a 5,000-byte line (over
    the 4 KiB cap), and resets: the server holds the rest back, and what
    reached it is said by a ghost at his rate. The ghost used to stop at
    the long line without leaving: it stayed a member for ever, so the
    room (and its name and id) was never freed, and one could fill
    --rooms-max-rooms that way. Now the long line goes and bob leaves."""
    srv = chat(start_server, "--rooms-rate", "5", "--rooms-burst", "5")
    port = srv.rooms_port
    a, rid = R.creator(port, "alice", "pw")
    b = R.member(port, "bob", rid, "pw")
    a.expect_seq([R.joined("bob")])
    texts = ["held %02d" % i for i in range(8)]
    b.send("".join(t + "\n" for t in texts) + "x" * 5000 + "\n")
    assert bwd.wait_for(lambda: bwd.delivered(b.sock), 5)
    reset(b)
    got = a.expect(R.left("bob"), timeout=15)
    assert got == ["bob: " + t for t in texts] + [R.left("bob")], got
    a.line("Exit")
    a.expect(R.BYE)
    assert bwd.wait_for(lambda: "room %d deleted" % rid in srv.log(), 5), srv.log_tail()
    assert srv.alive()


def test_no_more_ghosts_than_chat_connections(start_server):
    """--rooms-max-conns 3: three members that reset with lines held back
    go on saying them (at one line a second), a fourth finds every ghost's
    place taken: what it held is dropped and it leaves at once, long
    before the first three are done; theirs are all said."""
    srv = chat(start_server, "--rooms-max-conns", "3", "--rooms-rate", "1",
               "--rooms-burst", "1")
    port = srv.rooms_port
    a, rid = R.creator(port, "alice", "pw")
    names = ["bob%d" % i for i in range(4)]
    # every line alice reads (a ghost says its next line while the next
    # member joins: on a loaded machine, before alice sees that join)
    heard = []
    for n in names:
        m = R.member(port, n, rid, "pw")
        heard += a.expect(R.joined(n), timeout=15)
        m.line(*["%s line %d" % (n, k) for k in range(8)])
        assert bwd.wait_for(lambda: bwd.delivered(m.sock), 5)
        heard += a.expect("%s: %s line 0" % (n, n), timeout=10)  # its burst: one line
        reset(m)
    got = a.expect(R.left("bob3"), timeout=15)
    assert "bob3: bob3 line 1" not in heard + got, got
    assert not any(ln.startswith("bob0: bob0 line 7") for ln in got), got
    rest = heard + got
    for n in names[:3]:
        if R.left(n) not in rest:
            rest += a.expect(R.left(n), timeout=20)
    for n in names[:3]:
        said = [ln for ln in rest if ln.startswith(n + ": ")]
        assert said[-7:] == ["%s: %s line %d" % (n, n, k) for k in range(1, 8)], (n, rest)
    assert srv.alive()


@pytest.mark.long
def test_one_address_has_no_more_ghosts_than_its_share_of_connections(start_server):
    """--rooms-max-conns-per-addr 3: three members from one address that
    reset with lines held back go on saying them; a fourth from that
    address leaves at once, its held lines dropped, although ghosts have
    room (--rooms-max-conns 16). A member from another address still gets
    a ghost. One host resetting members in a loop used to take every
    ghost's place, and with it the last lines of everyone else."""
    srv = chat(start_server, "--rooms-max-conns", "16", "--rooms-max-conns-per-addr", "3",
               "--rooms-rate", "1", "--rooms-burst", "1")
    port = srv.rooms_port
    a, rid = R.creator(port, "alice", "pw")

    # every line alice reads (a ghost says its next line while the next
    # member joins: on a loaded machine, before alice sees that join)
    heard = []

    def leave_with_lines_held(name, source):
        m = R.member(port, name, rid, "pw", source=source)
        heard.extend(a.expect(R.joined(name), timeout=15))
        m.line(*["%s line %d" % (name, k) for k in range(16)])
        assert bwd.wait_for(lambda: bwd.delivered(m.sock), 5)
        heard.extend(a.expect("%s: %s line 0" % (name, name), timeout=10))  # its burst: one line
        reset(m)

    names = ["bob%d" % i for i in range(4)]
    for n in names:
        leave_with_lines_held(n, "127.0.0.43")
    got = a.expect(R.left("bob3"), timeout=15)
    assert "bob3: bob3 line 1" not in heard + got, got
    assert not any(ln.startswith("bob0: bob0 line 15") for ln in got), got
    assert bwd.wait_for(lambda: "member from 127.0.0.43 left with lines held back" in srv.log(), 5), \
        srv.log_tail()
    leave_with_lines_held("carol", "127.0.0.44")
    rest = heard + got
    for n in names[:3] + ["carol"]:
        if R.left(n) not in rest:
            rest += a.expect(R.left(n), timeout=30)
    for n in names[:3] + ["carol"]:
        said = [ln for ln in rest if ln.startswith(n + ": ")]
        assert said[-15:] == ["%s: %s line %d" % (n, n, k) for k in range(1, 16)], (n, rest)
    assert srv.alive()


def test_one_address_holds_at_most_its_share_of_the_chat_port(start_server):
    """--rooms-max-conns-per-addr 3: a fourth connection from one address is
    closed without a word, while another address is served; and by
    default one address may hold a quarter of --rooms-max-conns (at least
    1,024), so a single host cannot take every place."""
    srv = chat(start_server, "--rooms-max-conns", "8", "--rooms-max-conns-per-addr", "3")
    port = srv.rooms_port
    mine = [RoomClient(port, source="127.0.0.31") for _ in range(3)]
    extra = RoomClient(port, source="127.0.0.31", greet=False)
    other = None
    try:
        assert extra.wait_closed(timeout=10) == []
        assert extra.seen == b"", extra.seen
        other = RoomClient(port, source="127.0.0.32")
        assert "connections from one address at the limit (3)" in srv.log(), srv.log_tail()
        mine[0].line("x")
        mine[0].expect(R.INVALID)
    finally:
        for x in mine + [extra] + ([other] if other else []):
            x.close()


def test_by_default_one_address_holds_a_quarter_of_the_chat_port(start_server):
    srv = chat(start_server, "--rooms-max-conns", "4200")  # a quarter: 1,050
    port = srv.rooms_port
    socks = []
    try:
        for _ in range(1050):
            s = socket.socket()
            s.bind(("127.0.0.33", 0))
            s.connect(("127.0.0.1", port))
            socks.append(s)
        late = RoomClient(port, source="127.0.0.33", greet=False)
        socks.append(late.sock)
        assert late.wait_closed(timeout=20) == []
        assert late.seen == b"", late.seen
        RoomClient(port, source="127.0.0.34").close()  # greeted
        assert "connections from one address at the limit (1050)" in srv.log(), srv.log_tail()
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------
# The menu's answers: an empty password


def test_an_empty_password_at_join_asks_again_and_is_no_wrong_guess(start_server):
    """docs/rooms.md: a password is 1 to 128 bytes, an empty one asks
    again. At join an empty line was a wrong password: five of them closed
    the connection, and each was a strike against the address (delaying
    its later answers, the console's too)."""
    srv = chat(start_server)
    port = srv.rooms_port
    alice, rid = R.creator(port, "alice", "right")
    c = RoomClient(port)
    c.send(("1\nbob\n%d\n" % rid).encode())
    c.expect(R.ASK_PASS)
    for _ in range(6):
        c.line("")
        c.expect_seq([R.EMPTY_PASS, R.ASK_PASS])
    c.line("right")
    c.expect(R.connected(rid))
    assert R.wrong_count(srv, "password", "127.0.0.1") == 0, srv.log_tail()
    c.close()
    alice.close()
    srv.stop()


def test_a_member_who_only_reads_a_talking_room_is_not_idle(start_server, shim, tmp_path):
    """docs/rooms.md: a member may be silent for a day, and reading the
    room counts as activity. A member who read every line but typed
    nothing was closed 24 hours after it last typed ("timeout"), the room
    told it had left. The daemon's clock is moved on an hour at a time
    (the fault shim's BW_FAULT_MONO) while alice talks: bob, who only
    reads, is still there after 30 hours."""
    offset = tmp_path / "mono"
    offset.write_text("0")
    srv = chat(start_server, env={**bwd.fault_env(shim), "BW_FAULT_MONO": str(offset)})
    port = srv.rooms_port
    alice, rid = R.creator(port, "alice", "pw")
    bob = R.member(port, "bob", rid, "pw")
    alice.expect(R.joined("bob"))
    for hour in range(1, 31):
        (tmp_path / "mono.new").write_text(str(hour * 3600 * 1000))
        os.replace(tmp_path / "mono.new", offset)  # never seen half written
        time.sleep(0.3)  # the file is read again, and a tick passes
        alice.line("hour %d" % hour)
        bob.expect("alice: hour %d" % hour)
    assert "timeout" not in srv.log(), srv.log_tail()
    alice.line("still there?")
    bob.expect("alice: still there?")
    for c in (alice, bob):
        c.close()
    srv.stop()
