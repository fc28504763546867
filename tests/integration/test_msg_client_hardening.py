"""`bulwark msg` (and `bulwark send`) when the local side fails, and against
hostile servers.

The rule these tests hold the client to: nothing is confirmed to the server
(no evidence of delivery: no orderly end of a pull) until what was received
has been written and synced locally. On a local failure the client says so
on stderr, exits 2, and the messages stay queued on the server. An identity
file is written before the server is told about the identity, so a client
that cannot keep its identity never takes a name it cannot use.

Local writes are made to fail with RLIMIT_FSIZE (`prlimit --fsize=N`: the
client ignores SIGXFSZ and gets EFBIG) or by writing stdout to /dev/full;
the tests run as root, so file modes would not stop a write."""

import base64
import fcntl
import hashlib
import os
import re
import select
import shlex
import signal
import socket
import struct
import subprocess
import time

import pytest

import bwd
import tcpproxy
import bwmsg
import bwvault as bw
from bwd import unique_name

H = "127.0.0.1"
ERROR_LINE = b"server responded with an error"


def limited(fsize):
    """A command prefix that runs the client with files capped at fsize
    bytes (and no core file, should a client still die of SIGXFSZ)."""
    return ["prlimit", "--fsize=%d" % fsize, "--core=0"]


class Msg:
    """A working directory for `bulwark msg`."""

    def __init__(self, path, port):
        self.dir = path
        path.mkdir(parents=True, exist_ok=True)
        (path / "server.info").write_text("%s:%d\n" % (H, port))

    def run(self, *args, prefix=(), stdout=subprocess.PIPE, tmp=None, timeout=60):
        e = dict(os.environ)
        if tmp is not None:
            e["TMPDIR"] = str(tmp)
        argv = [*prefix, str(bwd.BULWARK), "msg", "--dir", str(self.dir), "--timeout", "10",
                *args]
        try:
            return subprocess.run(argv, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=stdout,
                                  stderr=subprocess.PIPE, timeout=timeout, env=e)
        except subprocess.TimeoutExpired as ex:
            raise AssertionError("bulwark msg %s did not finish within %ds; stderr:\n%s"
                                 % (" ".join(args), timeout,
                                    (ex.stderr or b"").decode("utf-8", "replace")))

    def ok(self, *args, **kw):
        r = self.run(*args, **kw)
        assert r.returncode == 0, (args, describe(r))
        return r.stdout.decode()


def blocks(out):
    """The messages a pull printed: [(from, content)]."""
    res = []
    for chunk in out.split("-----<EOM>-----\n")[:-1]:
        lines = chunk.strip("\n").split("\n")
        i = max(k for k, ln in enumerate(lines) if ln.startswith("From: "))
        assert lines[i + 1] == "Content:", chunk
        res.append((lines[i][6:], "\n".join(lines[i + 2:])))
    return res


def fingerprint(spki):
    """The client's fingerprint: SHA-256 of the SPKI, hex in groups of 4."""
    h = hashlib.sha256(spki).hexdigest()
    return " ".join(h[i:i + 4] for i in range(0, len(h), 4))


def describe(r):
    """Exit status and output of a run (stdout may have gone elsewhere)."""
    out = r.stdout if r.stdout is not None else b"(not captured)"
    return "exit %d\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        r.returncode, out.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace"))


def exited(r):
    """The client exited on its own (not killed by a signal such as SIGXFSZ)."""
    return r.returncode >= 0


@pytest.fixture
def keyed_pair(server, client_bin, tmp_path):
    """alice and bob on bulwarkd sharing a symmetric key (alice sent it);
    each knows the other's name."""
    a, b = Msg(tmp_path / "a", server.port), Msg(tmp_path / "b", server.port)
    na, nb = unique_name("alice"), unique_name("bob")
    a.ok("register", na)
    b.ok("register", nb)
    b.ok("list")
    a.ok("send-key", nb)
    assert blocks(b.ok("pull")) == [(na, "symmetric key received")]
    return a, na, b, nb


# --------------------------------------------------------------------------
# Nothing is confirmed to the server before it is kept locally


def test_a_pull_whose_output_cannot_be_written_exits_2_and_leaves_the_messages_queued(
        keyed_pair):
    """`bulwark msg pull > /dev/full`: every write to stdout fails. A client
    that ends the pull in order anyway tells the server the messages arrived
    (it deletes them) although the user never saw them, and exits 0."""
    a, na, b, nb = keyed_pair
    a.ok("send", nb, "first, never shown")
    a.ok("send", nb, "second, never shown")
    with open("/dev/full", "wb") as full:
        r = b.run("pull", stdout=full)
    assert exited(r) and r.returncode == 2, describe(r)
    assert re.search(rb"(?i)no space left|stdout|standard output|write", r.stderr), describe(r)
    assert blocks(b.ok("pull")) == [(na, "first, never shown"), (na, "second, never shown")]


def wchan(pid):
    try:
        with open("/proc/%d/wchan" % pid) as f:
            return f.read()
    except OSError:
        return ""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_pull_killed_while_it_shows_the_last_message_leaves_it_queued(keyed_pair, sig):
    """`bulwark msg pull | less`, then Ctrl-C (or the terminal goes): the
    client has read the whole reply and is blocked writing the last
    message to the pipe. Dying, it closed its socket in order (a FIN with
    everything read), which the server takes as the evidence of delivery:
    the messages were deleted although the user never saw them, and a key
    among them was never kept. The socket must close with a reset."""
    a, na, b, nb = keyed_pair
    big = "x" * 100000  # more than a pipe holds
    a.ok("send", nb, "first")
    a.ok("send", nb, big)
    argv = [str(bwd.BULWARK), "msg", "--dir", str(b.dir), "--timeout", "10", "pull"]
    # as at a terminal: the signal's default action (a test run in the
    # background, or under nohup, passes SIGINT or SIGHUP on ignored)
    p = subprocess.Popen(argv, cwd=b.dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
    try:
        assert bwd.wait_for(lambda: "pipe" in wchan(p.pid), 20), wchan(p.pid)
        p.send_signal(sig)
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()
    assert p.returncode != 0
    assert blocks(b.ok("pull")) == [(na, "first"), (na, big)]


def test_a_received_file_that_cannot_be_written_stays_queued(keyed_pair, tmp_path):
    """A 64 KiB file arrives while the receiver cannot write more than 4 KiB
    to any file. The client must say it cannot write the file, exit 2,
    leave no partial file, and leave the message queued (not
    show "can't decrypt message" and let the server delete it)."""
    a, na, b, nb = keyed_pair
    data = os.urandom(64 * 1024)
    (a.dir / "f.bin").write_bytes(data)
    a.ok("send-file", nb, "f.bin")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    r = b.run("pull", prefix=limited(4096), tmp=tmp)
    assert exited(r) and r.returncode == 2, describe(r)
    assert re.search(rb"(?i)write|too large", r.stderr), describe(r)
    assert os.listdir(tmp) == [], \
        "a partial received file was left: %r" % os.listdir(tmp)
    got = blocks(b.ok("pull", tmp=tmp))
    assert len(got) == 1 and got[0][0] == na, got
    path = got[0][1]
    assert os.path.dirname(path) == str(tmp) and \
        os.path.basename(path).startswith("from-"), got
    assert open(path, "rb").read() == data


class StallingProxy(tcpproxy.TcpProxy):
    """Relays the server's replies up to a point, then holds the rest."""

    def __init__(self, port, limit):
        super().__init__(port)
        self.limit, self.relayed = limit, 0

    def relay(self, data, src, dst, upstream):
        if upstream:
            if self.relayed >= self.limit:
                return True  # held: the client waits for the rest
            data = data[:self.limit - self.relayed]
            self.relayed += len(data)
        dst.sendall(data)
        return True

    def reset_server_side(self):
        """Resets the connections to the server (the proxy would pass the
        killed client's reset on as a FIN, which tells the server the
        reply arrived)."""
        with self.lock:
            for r in self.conns[1::2]:
                r.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                r.close()


def open_in(pid, d):
    """The sizes of the files process pid has open under directory d (a
    file made with O_TMPFILE shows as "d/#inode (deleted)")."""
    sizes = []
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            p = "/proc/%d/fd/%s" % (pid, fd)
            try:
                if os.readlink(p).startswith(str(d) + "/"):
                    sizes.append(os.stat(p).st_size)
            except OSError:
                pass
    except OSError:
        pass
    return sizes


def test_a_pull_killed_in_the_middle_of_a_file_leaves_none_of_it(keyed_pair, tmp_path):
    """A received file is decrypted into TMPDIR as it arrives. A client
    killed in the middle (the connection stalled, the user gave up) left
    the plaintext read so far under a name of its own, where nothing
    would ever remove it. It is written unnamed, and named once whole."""
    a, na, b, nb = keyed_pair
    data = os.urandom(3 * 1024 * 1024)
    (a.dir / "f.bin").write_bytes(data)
    a.ok("send-file", nb, "f.bin")
    port = int((b.dir / "server.info").read_text().strip().rsplit(":", 1)[1])
    proxy = StallingProxy(port, 1024 * 1024)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    (b.dir / "server.info").write_text("%s:%d\n" % (H, proxy.port))
    e = dict(os.environ, TMPDIR=str(tmp))
    p = subprocess.Popen([str(bwd.BULWARK), "msg", "--dir", str(b.dir), "--timeout", "30",
                          "pull"], cwd=b.dir, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=e)
    try:
        assert bwd.wait_for(lambda: any(n > 0 for n in open_in(p.pid, tmp)), 20), \
            "no part of the file was written"
        proxy.reset_server_side()
        p.kill()
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        proxy.close()
    assert os.listdir(tmp) == [], "the plaintext read so far was left behind"
    (b.dir / "server.info").write_text("%s:%d\n" % (H, port))
    [(who, path)] = blocks(b.ok("pull", tmp=tmp))
    assert who == na and open(path, "rb").read() == data
    assert os.listdir(tmp) == [os.path.basename(path)]


def test_a_symmetric_key_that_cannot_be_saved_stays_queued(server, client_bin, tmp_path):
    """A type-2 key arrives while contacts.info cannot grow: the key lives
    only in memory, so a client that confirms the pull loses it for good
    and every later text from the sender is "can't decrypt message". It
    must exit 2 with the key still queued, and take it on the next pull."""
    a, b = Msg(tmp_path / "a", server.port), Msg(tmp_path / "b", server.port)
    na, nb = unique_name("alice"), unique_name("bob")
    a.ok("register", na)
    b.ok("register", nb)
    b.ok("list")
    a.ok("send-key", nb)
    # the limit lets contacts.info be rewritten as it is (the pull lists
    # the names first), but not grow by the key
    size = (b.dir / "contacts.info").stat().st_size
    assert size < 4096, size
    r = b.run("pull", prefix=limited(size))
    assert exited(r) and r.returncode == 2, describe(r)
    assert b"contacts.info" in r.stderr, describe(r)
    assert blocks(b.ok("pull")) == [(na, "symmetric key received")]
    a.ok("send", nb, "after the key")
    assert blocks(b.ok("pull")) == [(na, "after the key")]


def test_register_that_cannot_write_me_info_does_not_take_the_name(server, client_bin,
                                                                  tmp_path):
    """`bulwark msg register` registered on the server first and wrote
    me.info after: when me.info cannot be written the name is taken on the
    server by an identity whose private key is gone, and can never be
    registered again. me.info must be written before anything is sent."""
    a = Msg(tmp_path / "a", server.port)
    name = unique_name("alice")
    r = a.run("register", name, prefix=limited(100))
    assert exited(r) and r.returncode != 0, describe(r)
    assert r.stderr.strip(), describe(r)
    assert server.client_row_by_name(name) is None, "the name was registered on the server"
    a.ok("register", name)
    row = server.client_row_by_name(name)
    assert row is not None
    lines = (a.dir / "me.info").read_text().splitlines()
    assert lines[0] == name and bytes.fromhex(lines[1].strip()) == bytes(row["ID"])
    other = Msg(tmp_path / "o", server.port)
    other.ok("register", unique_name("other"))
    assert name in other.ok("list").splitlines()
    a.ok("list")  # the identity written loads


def test_send_that_cannot_write_me_info_does_not_take_the_name(server, client_dir):
    """`bulwark send` registers (1025, 1026) and writes me.info and priv.key
    after: when they cannot be written the name is lost on the server and
    every later run gets "name taken" (exit 3). A run that cannot keep its
    identity must fail before the server hears of it."""
    d = client_dir()
    data = os.urandom(20000)
    path = d.write_file("upload.bin", data)
    name = unique_name("sender")
    d.write_transfer(server.port, name, str(path))
    argv = [str(bwd.BULWARK), "send", "--dir", str(d.path), "--timeout", "10", "--quiet"]
    r = subprocess.run(limited(100) + argv, cwd=str(d.path), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60)
    assert exited(r) and r.returncode != 0, describe(r)
    assert r.stderr.strip(), describe(r)
    assert server.client_row_by_name(name) is None, "the name was registered on the server"
    r = d.run()
    assert r.returncode == 0, describe(r)
    me_name, me_id, _ = d.me_info()
    assert me_name == name
    row = server.client_row_by_name(name)
    assert row is not None and bytes(row["ID"]) == me_id
    stored = server.client_dir(me_id) / "upload.bin"
    assert bwd.wait_for(stored.exists, 5), "no %s" % stored
    assert stored.read_bytes() == data


# --------------------------------------------------------------------------
# Hostile servers


def test_a_name_given_to_another_id_is_a_key_change_not_a_first_use(pyserver_msg, client_bin,
                                                                     tmp_path):
    """TOFU bypass by renaming: bob's key K1 is pinned under his id ID1.
    The server then lists ID1 as "robert" and gives the name "bob" to a new
    id ID2 with its own key K2. A client that pins per id sees a new contact
    "bob" and pins K2 as a first use, sending bob's symmetric key to the
    impostor. It must warn, exit 5 and send nothing until the user trusts
    the new key; then the key goes to ID2."""
    srv = pyserver_msg()
    a = Msg(tmp_path / "a", srv.port)
    a.ok("register", "alice")
    k1, k2 = bw.new_rsa_key(), bw.new_rsa_key()
    bob = bwmsg.MsgClient(H, srv.port)
    id1 = bob.register("bob", key=k1)
    bob.close()
    out = a.ok("key", "bob")
    assert fingerprint(bw.spki_der(k1)) in out and "(pinned)" in out
    id2 = os.urandom(16)
    with srv.lock:
        srv.clients[id1][0] = "robert"
        srv.clients[id2] = ["bob", bw.spki_der(k2)]
        srv.queues[id2] = []
        sent_before = [q for q in srv.requests if q[0] == bwmsg.SEND]
    assert sent_before == []
    r = a.run("list")  # the user refreshes the names, as a pull would
    assert exited(r) and r.returncode in (0, 5), describe(r)
    r = a.run("send-key", "bob")
    assert r.returncode == 5, describe(r)
    assert b"WARNING" in r.stderr, describe(r)
    with srv.lock:
        assert [q for q in srv.requests if q[0] == bwmsg.SEND] == [], "a 603 went out"
        assert srv.queues[id1] == [] and srv.queues[id2] == []
    a.ok("trust", "bob")
    a.ok("send-key", "bob")
    with srv.lock:
        assert srv.queues[id1] == [], "the key went to robert (ID1)"
        q = list(srv.queues[id2])
    assert len(q) == 1 and q[0][2] == bwmsg.SYM_KEY, q
    assert len(bw.unwrap_key(k2, q[0][3])) == 16, "not wrapped with K2"


def test_send_file_of_a_fifo_is_refused_not_waited_for(keyed_pair, tmp_path):
    """`send-file bob FIFO`: open() without O_NONBLOCK waited for a writer
    for ever, holding the directory's lock; it is not a file: refused."""
    a, na, b, nb = keyed_pair
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = a.run("send-file", nb, str(fifo), timeout=20)
    assert exited(r) and r.returncode != 0, describe(r)
    assert b"file not found" in r.stdout, describe(r)
    a.ok("send", nb, "still fine")


def alice_with_bob_pinned(pyserver_msg, tmp_path, bob_name="bob"):
    """A PyMsgServer, alice's `bulwark msg` directory registered on it, and
    the id of bob, whose public key alice has pinned."""
    srv = pyserver_msg()
    a = Msg(tmp_path / "a", srv.port)
    a.ok("register", "alice")
    bob = bwmsg.MsgClient(H, srv.port)
    bob_id = bob.register(bob_name, key=bw.new_rsa_key())
    bob.close()
    a.ok("key", bob_name)
    return srv, a, bob_id


def impostor_key(srv, victim_name, sender_id):
    """The server queues for victim_name a symmetric key of its own choice
    as if sender_id sent it (the protocol signs nothing): wrapped with the
    victim's public key, which the server has. Returns the key."""
    aes = os.urandom(16)
    with srv.lock:
        vid = next(i for i, v in srv.clients.items() if v[0] == victim_name)
        mid = srv.next_id
        srv.next_id += 1
        srv.queues[vid].append((sender_id, mid, bwmsg.SYM_KEY,
                                bw.wrap_key(srv.clients[vid][1], aes)))
    return aes


def sent_texts(srv, aes):
    """The contents of the 603s the server received that aes opens."""
    out = []
    with srv.lock:
        for q in srv.queues.values():
            for _, _, typ, content in q:
                if typ in (bwmsg.TEXT, bwmsg.FILE):
                    try:
                        out.append(bw.aes_decrypt(aes, content))
                    except ValueError:
                        pass
    return out


def test_keys_from_unknown_ids_make_contacts_only_if_they_open_and_not_without_bound(
        pyserver_msg, client_bin, tmp_path):
    """A server can deliver key messages "from" as many ids as it likes:
    each made a contact for good, even when its key did not open, so
    memory and contacts.info grew without bound (200,000 records: 222 MB
    of RSS) until every command failed. A key from an unknown id makes a
    contact only if it opens, and one pull makes at most 1024 of them: it
    stops there, unconfirmed, and the next pull goes on."""
    srv = pyserver_msg()
    a = Msg(tmp_path / "a", srv.port)
    a.ok("register", "alice")
    garbage = 300
    senders = [os.urandom(16) for _ in range(1100)]
    with srv.lock:
        aid = next(i for i, v in srv.clients.items() if v[0] == "alice")
        spki = srv.clients[aid][1]
        for _ in range(garbage):  # keys that do not open: no contact
            srv.queues[aid].append((os.urandom(16), srv.next_id, bwmsg.SYM_KEY, os.urandom(128)))
            srv.next_id += 1
        for sid in senders:
            srv.queues[aid].append((sid, srv.next_id, bwmsg.SYM_KEY,
                                    bw.wrap_key(spki, os.urandom(16))))
            srv.next_id += 1
        srv.keep = True  # the queue stays: the client's seen ids skip what it showed

    def contacts():
        text = (a.dir / "contacts.info").read_text()
        return sum(1 for ln in text.splitlines() if ln.startswith("c "))

    r = a.run("pull")
    assert r.returncode == 2, describe(r)
    assert b"more than 1024 new senders in one pull" in r.stderr, describe(r)
    assert contacts() == 1024
    r = a.run("pull")
    assert r.returncode == 0, describe(r)
    assert contacts() == 1100
    text = (a.dir / "contacts.info").read_text()
    assert all(sid.hex() in text for sid in senders)


def test_a_key_received_over_another_says_so(keyed_pair):
    """A type 2 replaces the key shared with its sender, and nothing says
    who sent it: anyone able to send as that contact could set the pair's
    key. The pull now says when a key received replaces another."""
    a, na, b, nb = keyed_pair
    a.ok("send-key", nb)  # a second, different key
    r = b.run("pull")
    assert r.returncode == 0, describe(r)
    assert blocks(r.stdout.decode()) == [(na, "symmetric key received")]
    assert ("the key shared with %s is replaced" % na).encode() in r.stderr, describe(r)
    a.ok("send", nb, "under the new key")
    assert blocks(b.ok("pull")) == [(na, "under the new key")]


def test_nothing_is_sealed_for_a_name_that_moved_to_another_id(pyserver_msg, client_bin,
                                                                  tmp_path):
    """bob's key is pinned; the server gives the name "bob" to a new id and
    delivers a symmetric key "from" that id (its own, wrapped with alice's
    public key). The client warned only on send-key: `send bob` and
    `send-file bob` sealed the user's words with the server's key. Both
    must warn and exit 5, sending nothing, until the user trusts."""
    srv, a, id1 = alice_with_bob_pinned(pyserver_msg, tmp_path)
    id2 = os.urandom(16)
    with srv.lock:
        srv.clients[id1][0] = "robert"
        srv.clients[id2] = ["bob", bw.spki_der(bw.new_rsa_key())]
        srv.queues[id2] = []
    aes = impostor_key(srv, "alice", id2)
    r = a.run("pull")
    assert exited(r) and r.returncode in (0, 5), describe(r)
    secret = tmp_path / "plan.txt"
    secret.write_bytes(b"the plan\n")
    for args in (("send", "bob", "the launch code is 1234"), ("send-file", "bob", str(secret))):
        r = a.run(*args)
        assert r.returncode == 5, (args, describe(r))
        assert b"WARNING" in r.stderr and b"bulwark msg trust 'bob'" in r.stderr, describe(r)
    assert sent_texts(srv, aes) == [], "the server can read what was sent"
    with srv.lock:
        assert [q for q in srv.requests if q[0] == bwmsg.SEND] == [], "a 603 went out"
    a.ok("trust", "bob")  # the user checked with bob: the new id is his
    a.ok("send", "bob", "now it goes")
    assert sent_texts(srv, aes) == [b"now it goes"]


def test_nothing_is_sealed_for_a_contact_whose_key_the_server_changed(pyserver_msg,
                                                                       client_bin, tmp_path):
    """bob's key is pinned; the server then offers another key for bob's id
    (the client warns) and delivers a symmetric key of its own "from" bob.
    `send bob` must warn and exit 5, not seal the text with that key."""
    srv, a, id1 = alice_with_bob_pinned(pyserver_msg, tmp_path)
    with srv.lock:
        srv.clients[id1][1] = bw.spki_der(bw.new_rsa_key())
    r = a.run("key", "bob")
    assert r.returncode == 5 and b"DIFFERENT public key" in r.stderr, describe(r)
    aes = impostor_key(srv, "alice", id1)
    a.ok("pull")
    r = a.run("send", "bob", "the launch code is 1234")
    assert r.returncode == 5, describe(r)
    assert b"DIFFERENT public key" in r.stderr, describe(r)
    assert sent_texts(srv, aes) == []


def test_the_suggested_trust_command_quotes_a_name_with_a_quote(pyserver_msg, client_bin,
                                                                 tmp_path):
    """The warning suggests `bulwark msg trust 'NAME'` to paste; a name with
    a ' in it (O'Brien, or one made to break out of the quotes) was put
    between quotes as it was, so the pasted command ran the rest."""
    name = "x'; touch pwned; '"
    srv, a, id1 = alice_with_bob_pinned(pyserver_msg, tmp_path, name)
    with srv.lock:
        srv.clients[id1][1] = bw.spki_der(bw.new_rsa_key())
    r = a.run("key", name)
    assert r.returncode == 5, describe(r)
    m = re.search(rb"  bulwark msg trust (.*)\n", r.stderr)
    assert m, describe(r)
    assert shlex.split(m.group(1).decode()) == [name], m.group(1)


@pytest.mark.slow
def test_a_list_of_150000_clients_is_not_cut_at_100000(pyserver_msg, client_bin, tmp_path):
    """The contact table had a cap of 100,000: a server listing more made
    every client past it unreachable ("no client called"). The list of
    150,000 must be taken whole, and in less than quadratic time (bounded
    here only by the run's own timeout)."""
    srv = pyserver_msg()
    a = Msg(tmp_path / "a", srv.port)
    a.ok("register", "alice")
    spki = bw.spki_der(bw.new_rsa_key())
    with srv.lock:
        for i in range(150000):
            cid = b"u" + i.to_bytes(15, "big")
            srv.clients[cid] = ["user%d" % i, spki]
            srv.queues[cid] = []
    r = a.run("key", "user149999", timeout=60)
    assert r.returncode == 0, describe(r)
    assert "public key of user149999: %s" % fingerprint(spki) in r.stdout.decode(), describe(r)
    # the contacts.info it saved loads whole: the next run finds the
    # contact (and its pinned key) without a cap on loading either
    r = a.run("key", "user149999", timeout=60)
    assert r.returncode == 0, describe(r)
    assert "public key of user149999: %s" % fingerprint(spki) in r.stdout.decode(), describe(r)


def test_a_file_over_the_servers_limit_gets_the_error_line_not_broken_pipe(
        start_server, client_bin, tmp_path):
    """bulwarkd refuses a 603 whose content is over --max-message-size at
    once (9000) and closes while the client is still streaming the file:
    the client must read the 9000 and print the spec's error line (exit 1),
    not fail on the write with "Broken pipe"."""
    srv = start_server("--max-message-size", "65536")
    a, b = Msg(tmp_path / "a", srv.port), Msg(tmp_path / "b", srv.port)
    na, nb = unique_name("alice"), unique_name("bob")
    a.ok("register", na)
    b.ok("register", nb)
    a.ok("send-key", nb)
    (a.dir / "big.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    r = a.run("send-file", nb, "big.bin")
    assert r.returncode == 1, describe(r)
    assert ERROR_LINE in r.stdout, describe(r)
    assert b"Broken pipe" not in r.stdout + r.stderr, describe(r)


# --------------------------------------------------------------------------
# Answers that never come, and a list too large to take


def staged(d):
    """The staged me.info files left in the directory d."""
    return sorted(d / p for p in os.listdir(d) if p.startswith(".me.info.tmp-"))


def identity_key(text):
    """The RSA key of an identity file's text (line 3, base64 PKCS#8)."""
    return bw.RSA.import_key(base64.b64decode(text.splitlines()[2], validate=True))


def py_user(srv, name):
    """A user of PyMsgServer srv registered by the Python client: (id, key)."""
    u = bwmsg.MsgClient(H, srv.port)
    try:
        return u.register(name), u.key
    finally:
        u.close()


def queued(srv, to):
    """The messages srv holds for the id to: [(from, id, type, content)]."""
    with srv.lock:
        return list(srv.queues[to])


def test_a_register_whose_answer_is_lost_keeps_the_new_key(pyserver_msg, client_bin,
                                                            tmp_path):
    """The server registers the name, then the connection closes with no
    2100. The staged identity is the only copy of the private key the
    server now holds for that name: a client that deletes it leaves a name
    nobody can ever use. Without an id the client cannot ask the server
    (a 601 from an unknown id is answered 9000), so whether the name was
    taken cannot be told: the client fails, writes no me.info and keeps
    the staged file, named on stderr, with that key; filled in with the id
    it is the identity."""
    srv = pyserver_msg(lost_answers={bwmsg.REGISTER})
    a = Msg(tmp_path / "a", srv.port)
    r = a.run("register", "alice")
    assert exited(r) and r.returncode != 0, describe(r)
    with srv.lock:
        [(cid, (name, spki))] = srv.clients.items()
    assert name == "alice"
    assert not (a.dir / "me.info").exists()
    kept = staged(a.dir)
    assert len(kept) == 1, "the staged identity was not kept: %r" % os.listdir(a.dir)
    assert str(kept[0]).encode() in r.stderr, describe(r)
    text = kept[0].read_text()
    assert text.splitlines()[0] == "alice"
    assert bw.spki_der(identity_key(text)) == spki, "not the key the server registered"
    lines = text.splitlines()
    lines[1] = cid.hex()
    (a.dir / "me.info").write_text("\n".join(lines) + "\n")
    srv.lost_answers = set()
    py_user(srv, "bob")
    assert a.ok("list").splitlines() == ["bob"]


def test_a_register_refused_or_never_sent_leaves_nothing(pyserver_msg, client_bin, tmp_path):
    """A 600 answered 9000 (the name taken), or one that never left (no
    server there), registered nothing: no me.info and no staged file, and
    the name can be registered next time."""
    srv = pyserver_msg(error_codes={bwmsg.REGISTER})
    a = Msg(tmp_path / "a", srv.port)
    r = a.run("register", "alice")
    assert exited(r) and r.returncode != 0, describe(r)
    assert not (a.dir / "me.info").exists()
    assert staged(a.dir) == [], os.listdir(a.dir)
    with socket.socket() as closed:
        closed.bind((H, 0))  # a port with nobody listening
        b = Msg(tmp_path / "b", closed.getsockname()[1])
        r = b.run("register", "alice")
    assert exited(r) and r.returncode != 0, describe(r)
    assert not (b.dir / "me.info").exists()
    assert staged(b.dir) == [], os.listdir(b.dir)
    srv.error_codes = set()
    a.ok("register", "alice")
    with srv.lock:
        [cid] = srv.clients
    assert (a.dir / "me.info").read_text().splitlines()[:2] == ["alice", cid.hex()]


def test_a_symmetric_key_that_cannot_be_saved_is_not_sent(pyserver_msg, client_bin, tmp_path):
    """`send-key` while contacts.info cannot grow by the new key: a client
    that sends first and saves after has the server store a key for the
    peer that it does not keep itself, so the peer cannot read what it
    sends after. It must exit 2 naming contacts.info, with no 603 sent and
    contacts.info as it was; a later send-key works."""
    srv = pyserver_msg()
    bob, bob_key = py_user(srv, "bob")
    a = Msg(tmp_path / "a", srv.port)
    a.ok("register", "alice")
    a.ok("key", "bob")  # listed and pinned: the send-key's own saves fit
    before = (a.dir / "contacts.info").read_bytes()
    assert len(before) < 4096, len(before)
    r = a.run("send-key", "bob", prefix=limited(len(before)))
    assert exited(r) and r.returncode == 2, describe(r)
    assert b"contacts.info" in r.stderr, describe(r)
    with srv.lock:
        assert [q for q in srv.requests if q[0] == bwmsg.SEND] == [], "a 603 went out"
    assert queued(srv, bob) == []
    assert (a.dir / "contacts.info").read_bytes() == before
    a.ok("send-key", "bob")
    a.ok("send", "bob", "after the key")
    [(_, _, t1, wrapped), (_, _, t2, ct)] = queued(srv, bob)
    assert (t1, t2) == (bwmsg.SYM_KEY, bwmsg.TEXT)
    assert bw.aes_decrypt(bw.unwrap_key(bob_key, wrapped), ct) == b"after the key"


def test_a_refused_symmetric_key_leaves_the_one_before(pyserver_msg, client_bin, tmp_path):
    """The new key is saved before the 603 leaves; the server then refuses
    it (9000): the peer never gets it, so the key before must be back in
    contacts.info (byte for byte) and the next text readable with it."""
    srv = pyserver_msg()
    bob, bob_key = py_user(srv, "bob")
    a = Msg(tmp_path / "a", srv.port)
    a.ok("register", "alice")
    a.ok("send-key", "bob")
    [(_, _, _, wrapped)] = queued(srv, bob)
    first = bw.unwrap_key(bob_key, wrapped)
    before = (a.dir / "contacts.info").read_bytes()
    srv.error_codes = {bwmsg.SEND}
    r = a.run("send-key", "bob")
    assert r.returncode == 1, describe(r)
    assert ERROR_LINE in r.stdout, describe(r)
    assert (a.dir / "contacts.info").read_bytes() == before
    srv.error_codes = set()
    a.ok("send", "bob", "with the first key")
    q = queued(srv, bob)
    assert len(q) == 2 and q[1][2] == bwmsg.TEXT, q
    assert bw.aes_decrypt(first, q[1][3]) == b"with the first key"


def test_a_symmetric_key_whose_answer_is_lost_is_kept(pyserver_msg, client_bin, tmp_path):
    """The server stores the new key for the peer and the connection closes
    with no 2103: the peer will take that key, so the client must keep it
    (and say the outcome is not known): a text sent after is readable with
    the new key, not the one before."""
    srv = pyserver_msg()
    bob, bob_key = py_user(srv, "bob")
    a = Msg(tmp_path / "a", srv.port)
    a.ok("register", "alice")
    a.ok("send-key", "bob")
    srv.lost_answers = {bwmsg.SEND}
    r = a.run("send-key", "bob")
    assert exited(r) and r.returncode != 0, describe(r)
    assert re.search(rb"(?i)no answer|kept", r.stderr), describe(r)
    srv.lost_answers = set()
    a.ok("send", "bob", "with the second key")
    q = queued(srv, bob)
    assert [m[2] for m in q] == [bwmsg.SYM_KEY, bwmsg.SYM_KEY, bwmsg.TEXT], q
    first, second = (bw.unwrap_key(bob_key, m[3]) for m in q[:2])
    assert first != second
    assert bw.aes_decrypt(second, q[2][3]) == b"with the second key"


def test_a_list_too_large_for_the_client_does_not_stop_the_pull(pyserver_msg, client_bin,
                                                                tmp_path):
    """Anyone can register names: ~250,000 of them make the 2101 larger
    than the client's 64 MiB cap. A pull that gives up when the names
    cannot be had lets anyone keep every user from their messages. The
    server here announces a 2101 of 0x7FFFFFFF bytes and closes: the pull
    must say senders are shown by id, show bob's key and text with his id
    as the sender, take them off the server and exit 0."""
    srv = pyserver_msg(list_reply=bw.RESP_HEADER.pack(bwmsg.VERSION, bwmsg.CLIENTS,
                                                      0x7FFFFFFF))
    a = Msg(tmp_path / "a", srv.port)
    a.ok("register", "alice")
    me = bytes.fromhex((a.dir / "me.info").read_text().splitlines()[1])
    bob = bwmsg.MsgClient(H, srv.port)
    bob_id = bob.register("bob")
    aes = os.urandom(16)
    bob.send_sym_key(me, aes)
    bob.send_text(me, aes, b"read without the names")
    bob.close()
    r = a.run("pull")
    assert r.returncode == 0, describe(r)
    assert b"shown by id" in r.stderr, describe(r)
    assert blocks(r.stdout.decode()) == [(bob_id.hex(), "symmetric key received"),
                                         (bob_id.hex(), "read without the names")], describe(r)
    assert queued(srv, me) == []
    with srv.lock:
        assert any(q[0] == bwmsg.LIST for q in srv.requests)


def test_a_received_file_is_in_its_directory_before_the_server_forgets_it(pyserver_msg,
                                                                           client_bin,
                                                                           tmp_path, shim):
    """A file sent to alice is written under a name of its own in TMPDIR
    and synced, then the pull's close tells the server it arrived and the
    server forgets it. Its data was synced, not the directory that names
    it: after a power cut the file could be gone while the server had let
    it go. The directory is synced too, after the file's and before the
    client is done."""
    srv = pyserver_msg()
    bob, _ = py_user(srv, "bob")
    a = Msg(tmp_path / "a", srv.port)
    a.ok("register", "alice")
    me = bytes.fromhex((a.dir / "me.info").read_text().splitlines()[1])
    b = bwmsg.MsgClient(H, srv.port)
    b.client_id = bob
    aes = os.urandom(16)
    b.send_sym_key(me, aes)
    b.send(me, bwmsg.FILE, bw.aes_encrypt(aes, os.urandom(5000)))
    b.close()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    log = tmp_path / "calls.log"
    e = bwd.fault_env(shim, log=log)
    r = a.run("pull", tmp=tmp, prefix=["env"] + ["%s=%s" % kv for kv in e.items()])
    assert r.returncode == 0, describe(r)
    [(_, path)] = [x for x in blocks(r.stdout.decode()) if x[1].startswith(str(tmp))]
    calls = [ln.split(" ", 1) for ln in log.read_text().splitlines() if " " in ln]
    # the file is written unnamed (O_TMPFILE: "TMPDIR/#inode (deleted)"),
    # synced, then named (linkat)
    file_sync = [i for i, (op, p) in enumerate(calls)
                 if op == "fsync" and (p == path or p.startswith(str(tmp) + "/#"))]
    named = [i for i, (op, p) in enumerate(calls) if op == "linkat" and p.endswith(" " + path)]
    dir_sync = [i for i, (op, p) in enumerate(calls) if op == "fsync" and p == str(tmp)]
    assert file_sync, calls[-20:]
    if named:  # else a file system without O_TMPFILE: made under its name
        assert named[0] > file_sync[0], calls[-20:]
    after = named[0] if named else file_sync[0]
    assert any(i > after for i in dir_sync), "TMPDIR not synced after %s" % path


def test_a_received_file_that_cannot_be_linked_is_copied_under_its_name(keyed_pair,
                                                                          tmp_path, shim):
    """The received file is written unnamed and then linked to its name
    through /proc/self/fd; where that link fails (a /proc of another
    namespace), its bytes are copied into a named file instead, and the
    message is shown, not left queued for ever."""
    a, na, b, nb = keyed_pair
    data = os.urandom(200000)
    (a.dir / "f.bin").write_bytes(data)
    a.ok("send-file", nb, "f.bin")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    e = bwd.fault_env(shim, fault="linkat:1:EPERM")
    r = b.run("pull", tmp=tmp, prefix=["env"] + ["%s=%s" % kv for kv in e.items()])
    assert r.returncode == 0, describe(r)
    assert b"bwfault:" in r.stderr, describe(r)  # the link did fail
    [(who, path)] = blocks(r.stdout.decode())
    assert who == na and open(path, "rb").read() == data
    assert os.listdir(tmp) == [os.path.basename(path)]


# --------------------------------------------------------------------------
# Two clients on one directory


def read_until(proc, marker, timeout=20):
    """Reads proc's stdout until marker has come; what came."""
    got = b""
    deadline = time.monotonic() + timeout
    while marker not in got:
        left = deadline - time.monotonic()
        assert left > 0, "no %r within %ds; got %r" % (marker, timeout, got[-300:])
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, "stdout closed before %r; got %r" % (marker, got[-300:])
            got += chunk
    return got


def test_a_menu_left_open_does_not_undo_what_another_client_saved(keyed_pair):
    """bob's menu is open (it read contacts.info when it started) while a
    pull in another process receives alice's new symmetric key and saves
    it. A menu that then saves what it read at its start drops that key,
    and every message alice sends after it is unreadable. Each action
    starts from the files as they are."""
    a, na, b, nb = keyed_pair
    menu = subprocess.Popen([str(bwd.BULWARK), "msg", "--dir", str(b.dir), "--timeout", "10"],
                            cwd=b.dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        read_until(menu, b"0) Exit client\n?\n")
        a.ok("send-key", nb)
        assert blocks(b.ok("pull")) == [(na, "symmetric key received")]
        menu.stdin.write(b"120\n0\n")  # the list saves contacts.info
        out, err = menu.communicate(timeout=30)
        assert menu.returncode == 0, (out, err)
    finally:
        if menu.poll() is None:
            menu.kill()
            menu.wait()
    a.ok("send", nb, "sent under the second key")
    assert blocks(b.ok("pull")) == [(na, "sent under the second key")]


def test_a_second_client_on_the_same_directory_waits_for_the_first(keyed_pair):
    """While one client acts in a directory, another waits (and says so)
    instead of reading files the first is about to rewrite."""
    a, na, b, nb = keyed_pair
    a.ok("send", nb, "waited for")
    with open(b.dir / ".bulwark-msg.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        pull = subprocess.Popen([str(bwd.BULWARK), "msg", "--dir", str(b.dir), "--timeout",
                                 "10", "pull"], cwd=b.dir, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            line = pull.stderr.readline()
            assert b"waiting for another bulwark msg using" in line, line
            assert pull.poll() is None
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
        out, err = pull.communicate(timeout=30)
    assert pull.returncode == 0, (out, err)
    assert blocks(out.decode()) == [(na, "waited for")]


def test_the_menus_yes_trusts_only_the_key_it_showed(pyserver_msg, client_bin, tmp_path):
    """The menu shows a changed key's fingerprint and asks; the answer is
    acted on under the directory's lock, from the files as they are then.
    If another client stored yet another offered key meanwhile, the yes
    pinned that one, which the person never saw. Now nothing is trusted
    and the menu says why."""
    srv = pyserver_msg()
    a = Msg(tmp_path / "a", srv.port)
    a.ok("register", "alice")
    py_user(srv, "bob")
    a.ok("key", "bob")

    def offer_new_key():
        with srv.lock:
            for cid, v in srv.clients.items():
                if v[0] == "bob":
                    v[1] = bw.spki_der(bw.new_rsa_key())

    offer_new_key()
    master, slave = os.openpty()
    menu = subprocess.Popen([str(bwd.BULWARK), "msg", "--dir", str(a.dir), "--timeout", "10"],
                            cwd=a.dir, stdin=slave, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    os.close(slave)
    try:
        os.write(master, b"130\nbob\n")
        read_until(menu, b"Type yes to accept: ")
        offer_new_key()  # and another client of alice's stores it
        assert a.run("key", "bob").returncode == 5
        os.write(master, b"yes\n0\n")
        out, err = menu.communicate(timeout=30)
    finally:
        os.close(master)
        if menu.poll() is None:
            menu.kill()
            menu.wait()
    assert b"changed since it was shown: nothing trusted" in err, err
    r = a.run("send-key", "bob")
    assert r.returncode == 5, describe(r)  # still to be accepted


def test_a_client_waits_for_the_directory_no_longer_than_its_timeout(keyed_pair):
    a, na, b, nb = keyed_pair
    with open(b.dir / ".bulwark-msg.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        r = subprocess.run([str(bwd.BULWARK), "msg", "--dir", str(b.dir), "--timeout", "1",
                            "pull"], cwd=b.dir, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=30)
    assert r.returncode == 2, describe(r)
    assert b"giving up" in r.stderr, describe(r)
