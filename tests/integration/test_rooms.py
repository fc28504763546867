"""The group chat ("rooms", spec/rooms.md, seed 004) against the real
bulwarkd: the seed's own client, nc-style line clients (bwrooms.py), the
fixes of the seed's defects, the rate limit, `bulwark chat`, SIGTERM and
the console's figures. Attempts and delays, text cleaning, line framing, a
crowd, a slow reader and hostile clients are in test_rooms_hostile.py."""

import re
import socket
import subprocess
import threading
import time

import pytest

import bwd
import bwrooms as R
from bwrooms import RoomClient, chat, console_stat, wrong_count


# --------------------------------------------------------------------------
# 1. The seed's own client


def test_seed_client_creates_joins_talks_and_exits(start_server, tmp_path):
    srv = chat(start_server)
    a = R.seed_client(srv.rooms_port, tmp_path, "a")
    b = c = None
    try:
        a.wait_for("[CLIENT] Started running")
        a.wait_for("3. Exit the server.")
        a.type("2")
        a.wait_for("Enter your name:")
        a.type("alice")
        a.wait_for("Enter password for the group:")
        a.type("12345")
        a.wait_for("You can start to talk!")
        assert "The id of the group is:1" in a.text()
        assert "You're connected to group chat #1" in a.text()

        b = R.seed_client(srv.rooms_port, tmp_path, "b")
        b.wait_for("3. Exit the server.")
        b.type("1")
        b.wait_for("Enter your name:")
        b.type("bob")
        b.wait_for("Enter group ID:")
        b.type("2")  # no such group, as in the seed's example run
        b.wait_for("There is no group id like this,try again")
        b.wait_for("Enter group ID:", count=2)
        b.type("1")
        b.wait_for("Enter password:")
        b.type("123")  # wrong
        b.wait_for("There is no group password like this,try again")
        b.wait_for("Enter password:", count=2)
        b.type("12345")
        b.wait_for("You're connected to group chat #1")
        a.wait_for("bob has joined the group")

        a.type("hello")
        b.wait_for("alice: hello")
        b.type("Hello alice!!!!")
        a.wait_for("bob: Hello alice!!!!")
        assert "alice: hello" not in a.text()  # not echoed to its sender

        b.type("Exit")
        b.wait_for("You chose exit so you removed from the group.")
        a.wait_for("bob has removed from the group")
        a.type("Exit")
        a.wait_for("You chose exit so you removed from the group.")
        assert bwd.wait_for(lambda: "room 1 deleted" in srv.log(), 5), srv.log_tail()

        # option 3, and a new room after the first was deleted gets id 2
        c = R.seed_client(srv.rooms_port, tmp_path, "c")
        c.wait_for("3. Exit the server.")
        c.type("3")
        c.wait_for("Exit the chat")
    finally:
        for p in (a, b, c):
            if p is not None:
                p.kill()
    assert srv.alive()


# --------------------------------------------------------------------------
# 2. nc-style line clients


def test_create_join_relay_who_help_and_both_exits(start_server):
    srv = chat(start_server)
    port = srv.rooms_port
    a = RoomClient(port)
    assert a.seen.decode() == R.MENU  # the greeting, exactly
    a.line("2")
    a.expect_seq([R.ASK_NAME])
    a.line("alice")
    a.expect_seq([R.ASK_CREATE_PASS])
    a.line("pw")
    a.expect_seq(R.created_lines(1))

    b = RoomClient(port)
    b.line("1")
    b.expect_seq([R.ASK_NAME])
    b.line("bob")
    b.expect_seq([R.ASK_ID])
    b.line("1")
    b.expect_seq([R.ASK_PASS])
    b.line("pw")
    b.expect_seq([R.connected(1)])
    a.expect_seq([R.joined("bob")])

    a.line("hello")
    b.expect_seq(["alice: hello"])
    b.line("hi alice, how are you?")
    a.expect_seq(["bob: hi alice, how are you?"])

    # /who and /help answer the asker only
    a.line("/who")
    who = a.next_line()
    assert "alice" in who and "bob" in who and "2" in who, who
    a.line("/help")
    helptext = a.next_line()
    for cmd in ("/who", "/help", "/exit"):
        assert cmd in helptext, helptext
    a.line("marker")
    b.expect_seq(["alice: marker"])  # nothing of /who or /help reached bob

    c = R.member(port, "carol", 1, "pw")
    a.expect_seq([R.joined("carol")])
    b.expect_seq([R.joined("carol")])
    c.line("/who")
    who = c.next_line()
    assert all(n in who for n in ("alice", "bob", "carol")) and "3" in who, who

    b.line("Exit")
    b.expect_seq([R.BYE])
    assert b.wait_closed() == []
    a.expect_seq([R.left("bob")])
    c.expect_seq([R.left("bob")])

    c.line("/exit")
    c.expect_seq([R.BYE])
    assert c.wait_closed() == []
    a.expect_seq([R.left("carol")])
    a.line("/who")
    who = a.next_line()
    assert "alice" in who and "bob" not in who and "carol" not in who, who
    a.leave()

    # option 3 at the menu
    d = RoomClient(port)
    d.line("3")
    assert d.wait_closed() == [R.EXIT_MENU]


def test_empty_room_is_deleted_and_ids_are_never_reused(start_server):
    srv = chat(start_server)
    port = srv.rooms_port
    a, id_a = R.creator(port, "alice", "pa")
    assert id_a == 1
    a.leave()
    assert bwd.wait_for(lambda: "room 1 deleted" in srv.log(), 5), srv.log_tail()

    j = RoomClient(port)
    j.line("1", "joe", "1")
    j.expect_seq([R.ASK_NAME, R.ASK_ID, R.NO_ID, R.ASK_ID])
    j.close()

    b, id_b = R.creator(port, "bob", "pb")
    assert id_b == 2  # 1 is never given again
    c, id_c = R.creator(port, "carol", "pc")
    assert id_c == 3
    b.leave()  # room 2 deleted; the seed would now hand out 2 again
    d, id_d = R.creator(port, "dave", "pd")
    assert id_d == 4
    # room 3 is still carol's: its id and password open it, not dave's
    e = R.member(port, "eve", 3, "pc")
    c.expect_seq([R.joined("eve")])
    d.line("anyone?")
    c.line("carol here")
    e.expect_seq(["carol: carol here"])
    assert d.lines_for(0.3) == []


# --------------------------------------------------------------------------
# 3. The seed's defects, fixed


def test_a_password_opens_only_its_own_room(start_server):
    srv = chat(start_server)
    port = srv.rooms_port
    a, one = R.creator(port, "alice", "a")
    b, two = R.creator(port, "bob", "b")
    assert (one, two) == (1, 2)
    m = RoomClient(port, source="127.0.0.41")
    m.line("1", "mallory", "1", "b")  # room 2's password for room 1
    m.expect_seq([R.ASK_NAME, R.ASK_ID, R.ASK_PASS, R.NO_PASS, R.ASK_PASS])
    m.line("A")  # case matters
    m.expect_seq([R.NO_PASS, R.ASK_PASS])
    m.line("a ")  # so do blanks: a password is any bytes
    m.expect_seq([R.NO_PASS, R.ASK_PASS])
    m.line("a")
    m.expect_seq([R.connected(1)])
    a.expect_seq([R.joined("mallory")])
    assert b.lines_for(0.3) == []
    assert wrong_count(srv, "password", "127.0.0.41") == 3


@pytest.mark.parametrize("bad", [
    ["abc", "", "99999999999"],
    ["-1", "1.5", "0"],
    ["4294967296", "+1", "0x1"],
    ["1 1", "\x001", "\u0661"],  # two numbers, a NUL, an Arabic-Indic one
])
def test_non_numeric_and_huge_ids_are_asked_again(start_server, bad):
    srv = chat(start_server)
    port = srv.rooms_port
    a, rid = R.creator(port, "alice", "pw")
    m = RoomClient(port)
    m.line("1", "bob")
    m.expect_seq([R.ASK_NAME, R.ASK_ID])
    for text in bad:
        m.line(text)
        m.expect_seq([R.NO_ID, R.ASK_ID])
    m.line(" %d " % rid)  # blanks around a good id are fine
    m.expect_seq([R.ASK_PASS])
    m.line("pw")
    m.expect_seq([R.connected(rid)])
    a.expect_seq([R.joined("bob")])
    assert srv.alive()


def test_names_are_unique_within_a_room(start_server):
    srv = chat(start_server)
    port = srv.rooms_port
    a, rid = R.creator(port, "alice", "pw")
    m = RoomClient(port)
    m.line("1", "alice", str(rid), "pw")
    m.expect_seq([R.ASK_NAME, R.ASK_ID, R.ASK_PASS])
    ln = m.next_line()
    assert "alice" in ln and "taken" in ln, ln
    m.expect_seq([R.ASK_NAME])
    # the same name after cleaning (bidi controls, blanks) is still taken
    for same in ("\u202ealice\u2066", "  alice\t", "al\x1bice"):
        m.line(same)
        ln = m.next_line()
        assert "taken" in ln, (same, ln)
        m.expect_seq([R.ASK_NAME])
    m.line("alice2")
    m.expect_seq([R.connected(rid)])
    a.expect_seq([R.joined("alice2")])
    # another room may have its own alice
    c, rid2 = R.creator(port, "alice", "other")
    assert rid2 != rid
    assert a.lines_for(0.2) == []


def test_invalid_menu_choices_get_the_menu_again(start_server):
    srv = chat(start_server)
    m = RoomClient(srv.rooms_port)
    menu = R.MENU.rstrip("\n").split("\n")
    for choice in ("4", "0", "abc", "12", "1 2", "exit", "\x1b[2J", "\xff"):
        m.line(choice)
        m.expect_seq([R.INVALID] + menu)
    m.line("2")
    m.expect_seq([R.ASK_NAME])


def test_names_of_1_to_64_characters_and_passwords_of_1_to_128_bytes(start_server):
    srv = chat(start_server)
    port = srv.rooms_port
    m = RoomClient(port)
    m.line("2")
    m.expect_seq([R.ASK_NAME])
    for bad in ("", "x" * 65, "\x1b\x07\u202e", "   ", "\u00e9" * 65):
        m.line(bad)
        m.expect_seq([R.NAME_AGAIN, R.ASK_NAME])
    long_name = "\u00e9" * 64  # 64 characters, 128 bytes
    m.line(long_name)
    m.expect_seq([R.ASK_CREATE_PASS])
    m.line("")
    m.expect_seq([R.EMPTY_PASS, R.ASK_CREATE_PASS])
    m.line("p" * 129)
    m.expect_seq([R.LONG_PASS, R.ASK_CREATE_PASS])
    pw = "p" * 127 + "!"
    m.line(pw)
    m.expect_seq(R.created_lines(1))

    j = RoomClient(port)
    j.line("1")
    j.expect_seq([R.ASK_NAME])
    j.line("y" * 65)
    j.expect_seq([R.NAME_AGAIN, R.ASK_NAME])
    j.line("x" * 64)
    j.expect_seq([R.ASK_ID])
    j.line("1")
    j.expect_seq([R.ASK_PASS])
    j.line(pw)
    j.expect_seq([R.connected(1)])
    m.expect_seq([R.joined("x" * 64)])
    j.line("hi")
    m.expect_seq(["x" * 64 + ": hi"])
    m.line("hello")
    j.expect_seq([long_name + ": hello"])


def test_a_room_deleted_while_its_password_is_typed_sends_back_to_the_id(start_server):
    srv = chat(start_server)
    port = srv.rooms_port
    a, rid = R.creator(port, "alice", "pw")
    m = RoomClient(port)
    m.line("1", "bob", str(rid))
    m.expect_seq([R.ASK_NAME, R.ASK_ID, R.ASK_PASS])
    a.leave()
    m.line("pw")
    m.expect_seq([R.NO_ID, R.ASK_ID])
    # and the old id stays unknown even with its old password
    m.line(str(rid))
    m.expect_seq([R.NO_ID, R.ASK_ID])


def test_limits_on_members_and_rooms(start_server):
    srv = chat(start_server, "--rooms-max-members", "2", "--rooms-max-rooms", "2")
    port = srv.rooms_port
    a, one = R.creator(port, "alice", "pw")
    b = R.member(port, "bob", one, "pw")
    c = RoomClient(port)
    c.line("1", "carol", str(one))
    c.expect_seq([R.ASK_NAME, R.ASK_ID, R.FULL, R.ASK_ID])
    d, two = R.creator(port, "dave", "pw2")
    e = RoomClient(port)
    # no room can be created: said at once, before a name and a password
    # are asked (and a password hashed) for nothing
    e.line("2")
    e.expect_seq([R.TOO_MANY_ROOMS] + R.MENU.rstrip("\n").split("\n"))
    b.leave()
    c.line(str(one))
    c.expect_seq([R.ASK_PASS])
    c.line("pw")
    c.expect_seq([R.connected(one)])


# --------------------------------------------------------------------------
# 9. The rate limit pauses, never drops


def test_rate_limit_delays_but_delivers_every_line_in_order(start_server):
    srv = chat(start_server, "--rooms-rate", "5", "--rooms-burst", "5")
    port = srv.rooms_port
    a, rid = R.creator(port, "alice", "pw")
    b = R.member(port, "bob", rid, "pw")
    a.expect_seq([R.joined("bob")])
    lines = ["line %02d" % i for i in range(30)]
    t0 = time.monotonic()
    b.line(*lines)
    # lower bound only: at 5 a second after a burst of 5, a second cannot
    # have brought more than about 10 of them
    early = a.lines_for(max(0.0, 1.0 - (time.monotonic() - t0)))
    # measured after the read, so a stalled reader only widens the bound
    assert len(early) <= 5 + 5 * (time.monotonic() - t0) + 2, early
    got = early + [a.next_line(timeout=15) for _ in range(30 - len(early))]
    assert got == ["bob: " + t for t in lines]
    assert a.lines_for(0.3) == []

    # a member that sends and closes at once: its last lines all still go
    # out, in order, then its leave notice
    b.line(*["last %02d" % i for i in range(30)])
    b.sock.shutdown(socket.SHUT_WR)
    got = [a.next_line(timeout=15) for _ in range(31)]
    assert got == ["bob: last %02d" % i for i in range(30)] + [R.left("bob")]


def test_a_throttled_member_that_closes_its_side_has_all_its_lines_relayed(start_server):
    """`printf ... | nc -N`: 30 lines in one write, the last without a
    newline, then shutdown(SHUT_WR), from a member the rate limit holds back
    (5 a second after a burst of 5). The end of its input is read when the
    29th line has just taken the bucket's last token: the unended 30th must
    still be said, not dropped as the connection winds down. Every line
    reaches the others, in order, then the leave notice. (All lines ended:
    the "last" part of the test above.)"""
    srv = chat(start_server, "--rooms-rate", "5", "--rooms-burst", "5")
    port = srv.rooms_port
    a, rid = R.creator(port, "alice", "pw")
    b = R.member(port, "bob", rid, "pw")
    a.expect_seq([R.joined("bob")])
    texts = ["closing %02d" % i for i in range(30)]
    b.send("\n".join(texts))
    b.sock.shutdown(socket.SHUT_WR)
    got = a.expect(R.left("bob"), timeout=15)
    assert got == ["bob: " + t for t in texts] + [R.left("bob")]
    assert a.lines_for(0.3) == []
    assert b.wait_closed(timeout=10) == []


def test_a_throttled_member_that_resets_has_the_lines_it_sent_relayed(start_server):
    """A member sends 30 lines at once and close()s with the server's words
    to it unread, so its kernel answers the next of them with a reset while
    the server still holds most of its lines back (rate 5 a second, burst
    5). What reached the server before the reset is still said, in order
    (a script that sends and exits), then the leave notice."""
    srv = chat(start_server, "--rooms-rate", "5", "--rooms-burst", "5")
    port = srv.rooms_port
    a, rid = R.creator(port, "alice", "pw")
    b = R.member(port, "bob", rid, "pw")
    a.expect_seq([R.joined("bob")])
    texts = ["reset %02d" % i for i in range(30)]
    b.send("".join(t + "\n" for t in texts))
    bwd.wait_for(lambda: bwd.delivered(b.sock), 5)  # the lines are in the server's socket
    b.close()  # with unread data (the join notices): its kernel resets
    a.line("are you there")  # written to bob: his kernel answers RST
    got = a.expect(R.left("bob"), timeout=15)
    assert got == ["bob: " + t for t in texts] + [R.left("bob")], got
    assert "connection error" in srv.log() or "reset" in srv.log().lower(), srv.log_tail()


# --------------------------------------------------------------------------
# 11. bulwark chat


def bulwark_bin():
    bwd.require_file(bwd.BULWARK, "bulwark", "BULWARK")
    return str(bwd.BULWARK)


def test_bulwark_chat_from_a_pipe_creates_talks_and_leaves(start_server):
    srv = chat(start_server)
    port = srv.rooms_port
    p = R.Proc([bulwark_bin(), "chat", "127.0.0.1:%d" % port])
    try:
        for ln in ("2", "alice", "pw"):
            p.type(ln, pause=0)
        p.wait_for("You can start to talk!")
        assert "The id of the group is:1" in p.text()
        b = R.member(port, "bob", 1, "pw")
        p.wait_for("bob has joined the group")
        p.type("hello", pause=0)
        p.close_input()  # the end of input leaves the room
        b.expect_seq(["alice: hello", R.left("alice")])
        rc = p.proc.wait(timeout=15)
        p.t.join(timeout=5)
        assert rc == 0, p.text()
        assert R.BYE in p.text()
    finally:
        p.kill()

    # literally: printf ... | bulwark chat HOST:PORT
    r = subprocess.run(["sh", "-c", "printf '2\\nalice\\npw\\nhello\\n' | \"$0\" chat 127.0.0.1:%d"
                        % port, bulwark_bin()], capture_output=True, timeout=30)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, (r.returncode, out, r.stderr)
    assert "The id of the group is:2" in out and R.BYE in out, out
    assert bwd.wait_for(lambda: "room 2 deleted" in srv.log(), 5), srv.log_tail()


def test_bulwark_chat_help_and_exit_codes(start_server):
    r = subprocess.run([bulwark_bin(), "chat", "--help"], capture_output=True, timeout=10)
    out = r.stdout.decode()
    assert r.returncode == 0
    assert "Exit status" in out and re.search(r"\b0\b", out) and re.search(r"\b1\b", out) \
        and re.search(r"\b2\b", out), out
    # unreachable: a port nobody listens on
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead_port = s.getsockname()[1]
    s.close()
    r = subprocess.run([bulwark_bin(), "chat", "--timeout", "3", "127.0.0.1:%d" % dead_port],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.strip(), "no reason given"
    r = subprocess.run([bulwark_bin(), "chat", "not-a-host-port"], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=10)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)


SEED_SERVER_MENU = ("Hello client, please choose an option: \n "
                    "1. Connect to a group chat. \n 2. Create a group chat. \n "
                    "3. Exit the server. \n ")


def test_bulwark_chat_no_newline_against_the_seed_style_server():
    """A tiny imitation of the seed's server: one recv(1024) is one message."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    ls.settimeout(20)
    port = ls.getsockname()[1]
    got, errors = [], []

    def serve():
        try:
            conn, _ = ls.accept()
            conn.settimeout(20)
            conn.send(SEED_SERVER_MENU.encode())
            msg = conn.recv(1024).decode()
            got.append(msg)
            conn.send("Enter your name: \n".encode())
            got.append(conn.recv(1024).decode())
            conn.send("Enter password for the group: \n".encode())
            got.append(conn.recv(1024).decode())
            conn.send("The id of the group is:1\nYou're connected to group chat #1\n"
                      "You can start to talk!".encode())
            for _ in range(20):
                time.sleep(0.1)  # the seed's handle_conv sleeps 0.1 s; relaying takes time
                msg = conn.recv(1024).decode()
                if msg == "":
                    break
                got.append(msg)
                if msg == "Exit":
                    conn.send("You chose exit so you removed from the group. \n".encode())
                    break
            conn.close()
        except Exception as e:  # reported by the test
            errors.append(repr(e))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    # a gap of 1 s: the server's thread must have taken one message before
    # the next is sent, even on a loaded machine
    argv = [bulwark_bin(), "chat", "--no-newline", "--gap", "1000", "127.0.0.1:%d" % port]
    try:
        r = subprocess.run(argv, input=b"2\nalice\n12345\nhello\nworld\n",
                           capture_output=True, timeout=30)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("bulwark chat --no-newline did not finish within 30 s; the server "
                             "got %r; its output: %r" % (got, e.stdout))
    finally:
        ls.close()
        t.join(timeout=10)
    assert not errors, errors
    assert got == ["2", "alice", "12345", "hello", "world", "Exit"], got
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    out = r.stdout.decode()
    assert "You can start to talk!" in out and "You chose exit so you removed" in out, out


# --------------------------------------------------------------------------
# 12. SIGTERM


def test_sigterm_says_goodbye_to_everyone_and_exits_0(start_server):
    srv = chat(start_server)
    port = srv.rooms_port
    a, one = R.creator(port, "alice", "pw")
    b = R.member(port, "bob", one, "pw")
    a.expect_seq([R.joined("bob")])
    c, two = R.creator(port, "carol", "pw2")
    d = RoomClient(port)  # at the menu
    e = RoomClient(port)
    e.line("1", "eve")  # in the middle of the menu
    e.expect_seq([R.ASK_NAME, R.ASK_ID])
    srv.stop()  # asserts exit status 0
    for who, cl in (("alice", a), ("bob", b), ("carol", c), ("menu", d), ("mid-menu", e)):
        lines = cl.wait_closed(timeout=10)
        assert lines and lines[-1] == R.SHUTDOWN, (who, lines)


# --------------------------------------------------------------------------
# 13. The console's figures


def test_console_stat_counts_rooms_and_members(start_server):
    srv = start_server(console=True, rooms=True)
    port = srv.rooms_port
    f = console_stat(srv.console_port)
    assert (f.get("rooms"), f.get("room members")) == ("0", "0"), f
    a, one = R.creator(port, "alice", "pw")
    b = R.member(port, "bob", one, "pw")
    c, two = R.creator(port, "carol", "pw")
    m = RoomClient(port)  # at the menu: not a member
    f = console_stat(srv.console_port)
    assert (f["rooms"], f["room members"]) == ("2", "3"), f
    m.close()
    b.leave()
    c.leave()

    def settled():
        f = console_stat(srv.console_port)
        return (f["rooms"], f["room members"]) == ("1", "1") and f

    assert bwd.wait_for(settled, 5), console_stat(srv.console_port)
    a.leave()
    assert bwd.wait_for(lambda: console_stat(srv.console_port)["rooms"] == "0", 5)
    assert console_stat(srv.console_port)["room members"] == "0"
