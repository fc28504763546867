"""`bulwark msg`, the C messenger client: against our bulwarkd (one-shot
commands and the menu through a pipe), and against the minimal Python
server of bwmsg.py, so the client is proven apart from our server: a
server that keeps connections, one that does a single recv(1024) and pads,
one that answers 9000, one that sends garbage, one that delivers twice,
and one that swaps a contact's key."""

import os
import stat
import subprocess

import pytest

import bwd
import bwmsg
import bwvault as bw
from bwd import unique_name

H = "127.0.0.1"

MENU = ("MessageU client at your service.\n110) Register\n120) Request for clients list\n"
        "130) Request for public key\n140) Request for waiting messages\n"
        "150) Send a text message\n151) Send a request for symmetric key\n"
        "152) Send your symmetric key\n153) Send a file\n0) Exit client\n?\n")


class Msg:
    """A working directory for `bulwark msg`."""

    def __init__(self, path, port):
        self.dir = path
        path.mkdir(parents=True, exist_ok=True)
        (path / "server.info").write_text("127.0.0.1:%d\n" % port)

    def run(self, *args, stdin=None, timeout=60, tmp=None):
        e = dict(os.environ)
        if tmp is not None:
            e["TMPDIR"] = str(tmp)
        return subprocess.run([str(bwd.BULWARK), "msg", "--timeout", "10", *args],
                              cwd=self.dir, input=stdin, capture_output=True,
                              timeout=timeout, env=e)

    def ok(self, *args, **kw):
        r = self.run(*args, **kw)
        assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
        return r.stdout.decode()


@pytest.fixture
def pair(server, client_bin, tmp_path):
    a, b = Msg(tmp_path / "a", server.port), Msg(tmp_path / "b", server.port)
    na, nb = unique_name("alice"), unique_name("bob")
    a.ok("register", na)
    b.ok("register", nb)
    return a, na, b, nb


def blocks(out):
    """The messages a 140 printed: [(from, content lines)]."""
    res = []
    for chunk in out.split("-----<EOM>-----\n")[:-1]:
        lines = chunk.strip("\n").split("\n")
        i = max(k for k, ln in enumerate(lines) if ln.startswith("From: "))
        assert lines[i + 1] == "Content:", chunk
        res.append((lines[i][6:], "\n".join(lines[i + 2:])))
    return res


def conversation(a, na, b, nb, tmp_path):
    """Two registered clients: the list, the key pinned, no text before a
    symmetric key, its exchange, text both ways, a 3 MiB file; the path
    the file landed at."""
    assert nb in a.ok("list").splitlines()
    assert "(pinned)" in a.ok("key", nb)
    r = a.run("send", nb, "too early")
    assert r.returncode == 6 and b"no symmetric key" in r.stderr
    a.ok("request-key", nb)
    assert blocks(b.ok("pull")) == [(na, "Request for symmetric key")]
    b.ok("send-key", na)
    assert blocks(a.ok("pull")) == [(nb, "symmetric key received")]
    a.ok("send", nb, "שלום, bob")
    b.ok("send", na, "hi alice\nsecond line")
    assert blocks(b.ok("pull")) == [(na, "שלום, bob")]
    assert blocks(a.ok("pull")) == [(nb, "hi alice\nsecond line")]
    # files stream both ways and land under a name the client chose
    data = os.urandom(3 * 1024 * 1024 + 7)
    (a.dir / "f.bin").write_bytes(data)
    a.ok("send-file", nb, "f.bin")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    got = blocks(b.ok("pull", tmp=tmp))
    assert len(got) == 1 and got[0][1].startswith(str(tmp) + "/from-")
    path = got[0][1]
    assert open(path, "rb").read() == data
    return path


def test_two_c_clients_talk_through_bulwarkd(pair, tmp_path):
    a, na, b, nb = pair
    path = conversation(a, na, b, nb, tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # the messenger keeps no priv.key; contacts.info is private
    assert not (a.dir / "priv.key").exists()
    assert stat.S_IMODE(os.stat(a.dir / "contacts.info").st_mode) == 0o600


def test_a_missing_file_says_file_not_found(pair):
    a, na, b, nb = pair
    b.ok("send-key", na)
    a.ok("pull")
    r = a.run("send-file", nb, "nope.bin")
    assert r.returncode == 2 and b"file not found" in r.stdout
    # and which file, and why (the menu keeps the seed client's one line)
    assert b"bulwark msg: nope.bin: No such file or directory" in r.stderr, r.stderr


def test_a_missing_key_says_which_command_gives_one_not_a_menu_number(pair):
    """"send one (152) or ask for one (151)" named the menu's numbers to
    a user of the one-shot commands."""
    a, na, b, nb = pair
    a.ok("list")
    r = a.run("send", nb, "hi")
    assert r.returncode == 6, r.stderr
    assert b"bulwark msg send-key NAME" in r.stderr and b"(152)" not in r.stderr, r.stderr


def test_the_menu_from_a_pipe(pair):
    a, na, b, nb = pair
    b.ok("send-key", na)
    script = "120\n140\n150\n%s\nhello from the menu\n999\nabc\n0\n" % nb
    r = a.run(stdin=script.encode())
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    assert out.count(MENU) == 6
    assert "%s\n" % nb in out
    assert "From: %s\nContent:\nsymmetric key received\n-----<EOM>-----\n\n" % nb in out
    assert "Enter the recipient's name: Enter the message: message" in out
    assert "invalid choice '999'" in out and "invalid choice 'abc'" in out
    assert blocks(b.ok("pull")) == [(na, "hello from the menu")]


def test_the_menu_transcript_is_the_specs_blocks_and_nothing_else(pair):
    """A pull from the menu prints exactly the spec's menu, its message
    block (which ends with a blank line) and the menu again."""
    a, na, b, nb = pair
    b.ok("send-key", na)
    r = a.run(stdin=b"140\n0\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == (
        MENU + "From: %s\nContent:\nsymmetric key received\n-----<EOM>-----\n\n" % nb + MENU)


def test_end_of_input_exits_0_and_110_refuses_a_second_registration(pair):
    a, na, b, nb = pair
    r = a.run(stdin=b"110\nsomeone\n")
    assert r.returncode == 0
    assert b"registered already" in r.stderr


def test_a_9000_prints_the_spec_line_and_the_menu_goes_on(server, client_bin, tmp_path):
    c = Msg(tmp_path / "c", server.port)
    taken = unique_name("t")
    c.ok("register", taken)
    d = Msg(tmp_path / "d", server.port)
    r = d.run(stdin=("110\n%s\n120\n0\n" % taken).encode())
    out = r.stdout.decode()
    assert r.returncode == 0
    assert "server responded with an error\n" in out
    assert out.count(MENU) == 3
    assert not (d.dir / "me.info").exists()


@pytest.mark.parametrize("mode", ["keepalive", "recv1024"])
def test_the_client_against_other_servers(pyserver_msg, client_bin, tmp_path, mode):
    srv = pyserver_msg(mode=mode)
    a, b = Msg(tmp_path / "a", srv.port), Msg(tmp_path / "b", srv.port)
    a.ok("register", "alice")
    b.ok("register", "bob")
    assert a.ok("list").splitlines() == ["bob"]
    a.ok("send-key", "bob")
    assert blocks(b.ok("pull")) == [("alice", "symmetric key received")]
    b.ok("send", "alice", "hello over %s" % mode)
    assert blocks(a.ok("pull")) == [("bob", "hello over %s" % mode)]
    a.ok("request-key", "bob")
    assert blocks(b.ok("pull")) == [("alice", "Request for symmetric key")]
    # every request arrived whole in one write, type 1 with no content
    assert all(whole for _, _, whole in srv.requests)
    assert (603, 21, True) in srv.requests


def test_a_server_that_answers_9000(pyserver_msg, client_bin, tmp_path):
    srv = pyserver_msg(error_codes=[601, 604])
    a = Msg(tmp_path / "a", srv.port)
    a.ok("register", "alice")
    for cmd in (("list",), ("pull",)):
        r = a.run(*cmd)
        assert r.returncode == 1 and b"server responded with an error" in r.stdout


@pytest.mark.parametrize("garbage,says", [
    (b"", b"timed out"),  # nothing at all, the connection held open
    (b"\x02", b"timed out"),  # a header cut short
    # a code neither protocol has: another protocol (the chat's port?)
    (b"\xff" * 7, b"does not speak the vault and messenger protocol"),
    (b"\x02\x34\x08\xff\xff\xff\xff", b"a 4294967295-byte answer is too large"),
])
def test_a_server_that_sends_garbage(pyserver_msg, client_bin, tmp_path, garbage, says):
    srv = pyserver_msg(garbage=garbage)
    a = Msg(tmp_path / "a", srv.port)
    # (the client's timeout well inside the server's own 10 s per read)
    r = a.run("--timeout", "3", "register", "alice", timeout=30)
    assert r.returncode == 1, r
    assert says in r.stderr.lower(), r.stderr
    assert r.stderr.startswith(b"bulwark msg: "), r.stderr
    if garbage == b"\xff" * 7:  # a whole answer, but not the one asked for
        assert b"server responded with an error" in r.stdout
    assert not (a.dir / "me.info").exists()


def test_a_message_delivered_twice_is_shown_once(pyserver_msg, client_bin, tmp_path):
    srv = pyserver_msg(keep=True)
    a, b = Msg(tmp_path / "a", srv.port), Msg(tmp_path / "b", srv.port)
    a.ok("register", "alice")
    b.ok("register", "bob")
    a.ok("send-key", "bob")
    first = b.ok("pull")
    second = b.ok("pull")
    assert blocks(first) == [("alice", "symmetric key received")]
    assert blocks(second) == []


def test_a_changed_key_is_refused_until_trusted(pyserver_msg, client_bin, tmp_path):
    srv = pyserver_msg()
    a, b = Msg(tmp_path / "a", srv.port), Msg(tmp_path / "b", srv.port)
    a.ok("register", "alice")
    b.ok("register", "bob")
    a.ok("key", "bob")
    # the server now hands out someone else's key for bob
    with srv.lock:
        for cid, v in srv.clients.items():
            if v[0] == "bob":
                v[1] = bw.spki_der(bw.new_rsa_key())
    r = a.run("send-key", "bob")
    assert r.returncode == 5
    assert b"DIFFERENT public key" in r.stderr
    assert not [q for q in srv.requests if q[0] == 603], "no key went out"
    r = a.run("send-key", "bob")
    assert r.returncode == 5
    assert "is now" in a.ok("trust", "bob")
    a.ok("send-key", "bob")


def test_keys_survive_a_restart_of_the_client(pair):
    a, na, b, nb = pair
    a.ok("send-key", nb)
    b.ok("pull")
    # new processes each time: the shared key came from contacts.info
    b.ok("send", na, "after restart")
    assert blocks(a.ok("pull")) == [(nb, "after restart")]


def test_the_vault_client_uses_the_messenger_identity(pair, server):
    a, na, b, nb = pair
    data = os.urandom(10000)
    (a.dir / "v.bin").write_bytes(data)
    (a.dir / "transfer.info").write_text("127.0.0.1:%d\n%s\nv.bin\n" % (server.port, na))
    r = subprocess.run([str(bwd.BULWARK), "send", "--quiet"], cwd=a.dir, capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    rows = server.query("SELECT PathName FROM files")
    assert len(rows) == 1
    assert server.blobs(rows[0][0]).read_bytes() == data


# --------------------------------------------------------------------------
# Delivery: how `bulwark msg pull` ends a pull, and what it remembers


def test_a_pull_ends_with_evidence_so_bulwarkd_deletes(pair, server):
    """After a whole 2104 the client ends with a FIN (not a reset), which
    is bulwarkd's evidence: the messages are gone at once, not only after
    a later request."""
    a, na, b, nb = pair
    b.ok("list")
    a.ok("request-key", nb)
    b.ok("send-key", na)
    a.ok("pull")
    a.ok("send", nb, "one")
    a.ok("send", nb, "two")
    assert blocks(b.ok("pull")) == [(na, "Request for symmetric key"), (na, "one"), (na, "two")]
    assert bwd.wait_for(lambda: server.query("SELECT count(*) FROM messages")[0][0] == 0, 5), \
        "the client's end of the pull was not taken as evidence"
    assert b.ok("pull") == "no waiting messages\n"


def cut_pair(pyserver_msg, tmp_path):
    """alice and bob sharing a key through a PyMsgServer; alice has sent bob
    two texts and the server will cut bob's next pull in the middle of the
    second one's content, then deliver both again on the pull after."""
    srv = pyserver_msg()
    a, b = Msg(tmp_path / "a", srv.port), Msg(tmp_path / "b", srv.port)
    a.ok("register", "alice")
    b.ok("register", "bob")
    b.ok("list")
    a.ok("send-key", "bob")
    assert blocks(b.ok("pull")) == [("alice", "symmetric key received")]
    first, second = "the first message", "the second message, " + "long " * 40
    a.ok("send", "bob", first)
    a.ok("send", "bob", second)
    srv.cut_pulls = 1
    r = b.run("pull")
    assert srv.cut_pulls == 0, "the server did not cut the pull"
    return srv, b, first, second, r


def test_a_message_cut_short_is_shown_whole_on_the_next_pull(pyserver_msg, client_bin, tmp_path):
    srv, b, first, second, r = cut_pair(pyserver_msg, tmp_path)
    assert r.returncode == 1, bwd.describe(r)
    assert b"cut short" in r.stderr
    out1 = r.stdout.decode()
    out2 = b.ok("pull")
    shown = blocks(out1) + blocks(out2)
    # the first exactly once overall; the second once, whole: its id was
    # not remembered when its content was cut
    assert [c for _, c in shown].count(first) == 1, (out1, out2)
    assert [c for _, c in shown].count(second) == 1, (out1, out2)
    assert blocks(out2)[-1] == ("alice", second)
    assert b.ok("pull") == "no waiting messages\n"


def test_a_message_cut_short_is_not_shown_as_a_message(pyserver_msg, client_bin, tmp_path):
    """The pull that was cut shows the first message and nothing claiming
    to be the second (a block saying "can't decrypt message" would tell the
    user something false about a message that arrives whole later)."""
    srv, b, first, second, r = cut_pair(pyserver_msg, tmp_path)
    assert r.returncode == 1, bwd.describe(r)
    assert blocks(r.stdout.decode()) == [("alice", first)], r.stdout.decode()


@pytest.mark.parametrize("mode", ["recv1024", "keepalive"])
def test_the_client_ends_a_pull_with_a_fin_after_reading_everything(
        pyserver_msg, client_bin, tmp_path, mode):
    """The server sends the 2104 (padded to 1024 in recv1024 mode) and then
    watches: the client must end with a FIN (recv gives b'', not a reset)
    once it has acknowledged everything, and must have read the padding
    before its final close (else its close would reset: the socket would
    leave CLOSE_WAIT)."""
    srv = pyserver_msg(mode=mode, watch_end=True)
    a, b = Msg(tmp_path / "a", srv.port), Msg(tmp_path / "b", srv.port)
    a.ok("register", "alice")
    b.ok("register", "bob")
    b.ok("list")
    a.ok("request-key", "bob")
    assert blocks(b.ok("pull")) == [("alice", "Request for symmetric key")]
    # the pull's reply, then the empty one that says the queue is empty
    assert len(srv.ends) == 2
    assert srv.ends == [{"how": "eof", "unacked": 0}] * 2, srv.ends
    state = bwmsg.tcp_state(srv.held[0])
    assert state == bwmsg.TCP_CLOSE_WAIT, \
        "the client's close reset the connection (tcp state %d): padding left unread" % state


@pytest.mark.parametrize("payload,shown", [
    # a record whose size runs past the end of the payload
    (bwmsg.RECORD.pack(bytes(16), 1, 3, 1000) + bytes(10), 0),
    # the same, with a size near 4 GiB
    (bwmsg.RECORD.pack(bytes(16), 1, 4, 0xFFFFFFFF) + bytes(32), 0),
    # a second record that overruns after a good first one
    (bwmsg.RECORD.pack(bytes(16), 1, 1, 0) + bwmsg.RECORD.pack(bytes(16), 2, 3, 17)
     + bytes(16), 1),
    # a payload shorter than a record header
    (bytes(10), 0),
], ids=["past-end", "huge", "second-past-end", "short-header"])
def test_a_malformed_2104_is_an_error_not_a_crash(pyserver_msg, client_bin, tmp_path, payload,
                                                  shown):
    """The server keeps the connection open after the bad reply, so an EOF
    cannot save the client: it must see that the sizes disagree (and not
    wait for bytes past the reply until its --timeout)."""
    srv = pyserver_msg()
    b = Msg(tmp_path / "b", srv.port)
    b.ok("register", "bob")
    srv.pull_reply = bw.pack_response(bwmsg.WAITING, payload, 2)
    r = b.run("--timeout", "5", "pull", timeout=60)
    assert r.returncode == 1, bwd.describe(r)
    assert b"malformed" in r.stderr, bwd.describe(r)
    out = r.stdout.decode()
    assert len(blocks(out)) == shown and out.count("From: ") == shown, bwd.describe(r)


def test_a_file_message_lands_in_a_new_private_file(pyserver_msg, client_bin, tmp_path):
    """Received files landed as /tmp/bulwark-msg-XXXXXX, which no one
    finds. They go to the directory of -o (else $TMPDIR, else /tmp), named
    after the sender and the time they came (UTC), never over a file that
    is there (-2, -3...), mode 0600."""
    import time

    srv = pyserver_msg()
    a, b = Msg(tmp_path / "a", srv.port), Msg(tmp_path / "b", srv.port)
    a.ok("register", "alice")
    b.ok("register", "b/o b")  # a name no file system takes as it is
    a.ok("list")
    b.ok("send-key", "alice")
    assert blocks(a.ok("pull")) == [("b/o b", "symmetric key received")]
    data = os.urandom(200000) + b"\0\n\x1b[31m end"
    (b.dir / "doc.bin").write_bytes(data)
    b.ok("send-file", "alice", "doc.bin")
    b.ok("send-file", "alice", "doc.bin")
    assert [q[0] for q in srv.requests].count(603) == 3
    out = tmp_path / "received"
    out.mkdir()
    # what is there already, under every name the next seconds could give
    now = time.time()
    taken = {time.strftime("from-b_o_b-%Y%m%d-%H%M%S", time.gmtime(now + s))
             for s in range(-1, 30)}
    for n in taken:
        (out / n).write_bytes(b"not this one")
    got = blocks(a.ok("-o", str(out), "pull"))
    assert [g[0] for g in got] == ["b/o b", "b/o b"], got
    paths = [g[1] for g in got]
    for path in paths:
        assert os.path.dirname(path) == str(out), path
        name = os.path.basename(path)
        assert name.rsplit("-", 1)[0] in taken and name not in taken, name
        assert open(path, "rb").read() == data
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(set(paths)) == 2
    assert all((out / n).read_bytes() == b"not this one" for n in taken)
    assert sorted(os.listdir(out)) == sorted(taken | {os.path.basename(p) for p in paths})


def test_a_taken_name_is_said_in_the_same_words_and_code_as_send(server, client_dir, tmp_path):
    """msg register with a taken name said only "server responded with an
    error" and exited 1, where send said the name was taken (2101) and
    exited 3. Neither protocol says why a registration is refused: both
    subcommands now say so in one sentence naming the likely cause, with
    exit status 3."""
    taken = unique_name("taken")
    Msg(tmp_path / "first", server.port).ok("register", taken)
    r = Msg(tmp_path / "second", server.port).run("register", taken)
    words = "127.0.0.1:%d refused to register '%s': the name is taken" % (server.port, taken)
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert words.encode() in r.stderr, r.stderr
    assert not (tmp_path / "second" / "me.info").exists()
    cd = client_dir()
    cd.write_file("doc.bin", b"x" * 100)
    cd.write_transfer(server.port, taken, "doc.bin")
    r = cd.run()
    assert r.returncode == 3 and words.encode() in r.stderr, r.stderr


def test_names_past_ascii_are_shown_with_their_code_points(server, tmp_path):
    """A server of another implementation may still register names that
    read alike ("alice" and "alice" + U+200B): the client shows each code
    point past ASCII after the name, in the list and on a message, so that
    a reader sees what makes two names differ."""
    tail = unique_name("z")
    a, mine = Msg(tmp_path / "a", server.port), unique_name("me")
    a.ok("register", mine)
    c = bwmsg.MsgClient(H, server.port)
    c.register(("zo\u00eb" + tail).encode(), key=bwd.rsa_key(5))
    out = a.ok("list")
    assert "zo\u00eb%s [U+00EB]" % tail in out, out
    me, = [cid for cid, n in c.list() if n == mine]
    c.send(me, bwmsg.KEY_REQUEST, b"")
    out = a.ok("pull")
    assert "From: zo\u00eb%s [U+00EB]" % tail in out, out


def test_your_own_fingerprint_is_shown_and_is_what_your_contacts_pin(server, tmp_path):
    """Nothing printed a client's own fingerprint ("key NAME" as yourself
    said "no client called"), so a pinned key could not be checked out of
    band. register prints it, whoami and key with your own name show it,
    and it is the one a contact pins (checked here against the SHA-256 of
    the public key's DER, in groups of four hex digits)."""
    import hashlib

    a, na = Msg(tmp_path / "a", server.port), unique_name("alice")
    b, nb = Msg(tmp_path / "b", server.port), unique_name("bob")
    out = a.ok("register", na)
    fp = [ln.split(": ", 1)[1] for ln in out.splitlines()
          if ln.startswith("your key's fingerprint: ")]
    assert len(fp) == 1, out
    b.ok("register", nb)
    for args in (("whoami",), ("key", na)):
        out = a.ok(*args)
        assert "you are %s (id " % na in out and "your key's fingerprint: %s" % fp[0] in out, out
    pinned = b.ok("key", na)
    assert fp[0] in pinned, pinned
    _, _, key = bwd.ClientDir(tmp_path / "a").me_info()
    der = bw.spki_der(key)
    h = hashlib.sha256(der).hexdigest()
    assert fp[0] == " ".join(h[i:i + 4] for i in range(0, 64, 4)), (fp[0], h)


def test_pull_goes_on_until_the_queue_is_empty(start_server, tmp_path):
    """A server bounds each 2104 (--pull-cap: a message larger than it
    travels alone), and msg pull stopped after one: a text queued behind a
    large file needed a second pull. It pulls until a reply brings
    nothing (each reply kept, then ended in order, as before)."""
    srv = start_server("--pull-cap", "1024")
    a, na = Msg(tmp_path / "a", srv.port), unique_name("alice")
    a.ok("register", na)
    c = bwmsg.MsgClient(H, srv.port)
    c.register(unique_name("z").encode(), key=bwd.rsa_key(6))
    me, = [cid for cid, n in c.list() if n == na]
    for i in range(3):  # each larger than half the cap: one a reply
        c.send(me, bwmsg.TEXT, bytes([i]) * 800)
    out = a.ok("pull")
    assert out.count("From: ") == 3, out
    assert "no waiting messages" in a.ok("pull")


def test_the_working_directory_is_c_as_for_send(server, tmp_path):
    """send took -C/--dir and msg -d/--dir: msg takes -C too (and -d)."""
    d = tmp_path / "w"
    Msg(d, server.port)  # its server.info
    name = unique_name("cdir")
    r = subprocess.run([str(bwd.BULWARK), "msg", "-C", str(d), "register", name],
                       capture_output=True, timeout=30, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (d / "me.info").read_text().splitlines()[0] == name
    r = subprocess.run([str(bwd.BULWARK), "msg", "-d", str(d), "whoami"],
                       capture_output=True, timeout=30, cwd=tmp_path)
    assert r.returncode == 0 and name.encode() in r.stdout, r.stderr
