"""The clients' side of tls:// (bulwark send, msg, chat and trust-server)
against the real bulwarkd's TLS listeners: the data end to end through
TLS 1.3, the server's key pinned on first use in known_servers (where
that file is, its form and its modes), a changed key refused before any
byte of the protocol (exit 7) and accepted again with trust-server, a man
in the middle with a key of its own (a Python TLS-terminating proxy)
refused the same way, and the plain and TLS ports never mistaken for each
other.

Every client runs with an environment of its own: HOME in tmp_path and no
BULWARK_KNOWN_SERVERS or XDG_CONFIG_HOME unless the test sets them, so
nothing is written outside tmp_path. The server-only checks of the TLS
listeners are in test_tls_server.py."""

import os
import re
import select
import shutil
import socket
import ssl
import stat
import subprocess
import threading

import pytest

import bwd
import bwrooms as R
import ports
import tlsutil
from bwd import describe, unique_name
from test_msg_client import blocks

H = "127.0.0.1"
FP = r"SHA256:[A-Za-z0-9+/]{43}"
LOG_FP_RE = re.compile(r"TLS: server key (%s)(?![A-Za-z0-9+/=])" % FP)
EXIT_KEY = 7
# What a request on the vault or the messenger leaves in the log: an event
# line (event=client_registered, upload_started, ...). A TLS session that
# carried nothing leaves only a conn=N "closed: ..." line.
EVENT = "event="


# --------------------------------------------------------------------------
# Helpers


def need_openssl():
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")


def client_env(home, xdg=None, known=None):
    """This process's environment without HOME, the XDG places and
    Bulwark's own, then HOME=home (always: nothing may land in the real
    one) and the others if given."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "BULWARK_KNOWN_SERVERS",
                        "BULWARK_TLS_SESSIONS")}
    env["HOME"] = str(home)
    if xdg is not None:
        env["XDG_CONFIG_HOME"] = str(xdg)
    if known is not None:
        env["BULWARK_KNOWN_SERVERS"] = str(known)
    return env


def only_sessions(home):
    """What a client may leave in a HOME whose config is elsewhere: its
    resumable TLS sessions, in the XDG cache place, private."""
    found = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    if not found:
        return True
    sessions = home / ".cache" / "bulwark" / "tls-sessions"
    return (found == [".cache", ".cache/bulwark", ".cache/bulwark/tls-sessions"]
            and stat.S_IMODE(sessions.stat().st_mode) == 0o600
            and stat.S_IMODE(sessions.parent.stat().st_mode) == 0o700)


def home_known(home):
    return home / ".config" / "bulwark" / "known_servers"


def run_bulwark(*argv, env, cwd=None, timeout=60, stdin=None):
    """bulwark ARGV to its exit, bounded by timeout."""
    bwd.require_file(bwd.BULWARK, "bulwark", "BULWARK")
    try:
        return subprocess.run([str(bwd.BULWARK)] + [str(a) for a in argv], cwd=cwd, env=env,
                              capture_output=True, timeout=timeout,
                              input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("bulwark %s did not exit within %ds; stderr:\n%s"
                             % (" ".join(map(str, argv)), timeout,
                                (e.stderr or b"").decode("utf-8", "replace")))


def msg(d, *args, env, timeout=60):
    d.mkdir(parents=True, exist_ok=True)
    return run_bulwark("msg", "--timeout", "10", *args, env=env, cwd=d, timeout=timeout)


def msg_ok(d, *args, env):
    r = msg(d, *args, env=env)
    assert r.returncode == 0, (args, describe(r))
    return r.stdout.decode()


def trust(addr, env, cwd):
    return run_bulwark("trust-server", "-t", "10", addr, env=env, cwd=cwd)


def start_tls(start_server, *args, tls_port=None, rooms_tls_port=None, rooms=False,
              data_dir=None):
    """bulwarkd with --tls-port tls_port and/or --rooms-tls-port
    rooms_tls_port (reserved ports: a test may stop it and start another on
    the same one), once its log shows those listeners. The log's
    fingerprint in .fp."""
    extra, lines = [], []
    if tls_port is not None:
        extra += ["--tls-port", str(tls_port)]
        lines += ["vault listening on tls://127.0.0.1:%d" % tls_port,
                  "messenger listening on tls://127.0.0.1:%d" % tls_port]
    if rooms_tls_port is not None:
        extra += ["--rooms-tls-port", str(rooms_tls_port)]
        lines += ["rooms listening on tls://127.0.0.1:%d" % rooms_tls_port]
    srv = start_server(*(extra + [str(a) for a in args]), rooms=rooms, data_dir=data_dir)
    bwd.wait_for(lambda: all(ln in srv.log() for ln in lines) or not srv.alive(),
                 bwd.START_TIMEOUT)
    missing = [ln for ln in lines if ln not in srv.log()]
    assert not missing, "bulwarkd did not log %r\n%s" % (missing, srv.log_tail())
    fps = LOG_FP_RE.findall(srv.log())
    assert len(fps) == 1, "want one `TLS: server key` line, got %r\n%s" % (fps, srv.log_tail())
    srv.fp = fps[0]
    srv.tls_port, srv.rooms_tls_port = tls_port, rooms_tls_port
    return srv


def fingerprint_of(data_dir):
    """bulwarkd --fingerprint -d data_dir."""
    r = subprocess.run([str(bwd.BULWARKD), "--fingerprint", "-d", str(data_dir)],
                       capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, describe(r)
    out = r.stdout.decode().strip()
    assert re.fullmatch(FP, out), out
    return out


def fp_by_openssl(cert_path):
    """SHA256:<base64 of the SHA-256 of the certificate's
    SubjectPublicKeyInfo, unpadded>, by the openssl command."""
    cmd = ("set -o pipefail; openssl x509 -in \"$1\" -pubkey -noout | "
           "openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary | base64")
    r = subprocess.run(["bash", "-c", cmd, "fp", str(cert_path)], capture_output=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")
    return "SHA256:" + r.stdout.decode().strip().rstrip("=")


def new_line(prog, port, fp, path):
    return "%s: tls://127.0.0.1:%d is new: its key %s is now pinned in %s" % (prog, port, fp,
                                                                            path)


def events_since(srv, mark):
    return [ln for ln in srv.log()[mark:].splitlines() if EVENT in ln]


def settle(srv, mark, n=1, timeout=10.0):
    """Waits (bounded, not asserted) until bulwarkd's log after mark names
    n connections (conn=N: the end of each, or what it refused on it):
    what a client sent on them was logged by then."""
    bwd.wait_for(lambda: len(set(re.findall(r"\bconn=(\d+)", srv.log()[mark:]))) >= n,
                 timeout)


def dir_names(path):
    return sorted(p.name for p in path.iterdir())


def send_dir(client_dir, port, data=None, name=None, file_name="upload.bin"):
    """A working directory for bulwark send whose transfer.info names
    tls://127.0.0.1:port."""
    d = client_dir()
    data = os.urandom(20_000) if data is None else data
    d.write_file(file_name, data)
    d.write_transfer(port, name or unique_name("tls"), file_name, host="tls://127.0.0.1")
    return d, data


def assert_stored(srv, d, data, file_name="upload.bin"):
    _, cid, _ = d.me_info()
    path = srv.client_dir(cid) / file_name
    assert bwd.wait_for(path.exists, 5), "not stored at %s" % path
    assert path.read_bytes() == data


def assert_changed_key_said(stderr, prog, port, pinned, offered):
    err = stderr.decode("utf-8", "replace")
    assert "%s: WARNING: the key of tls://127.0.0.1:%d has changed!" % (prog, port) in err, err
    assert re.search(r"^\s*pinned:\s+%s\b" % re.escape(pinned), err, re.M), err
    assert re.search(r"^\s*offered:\s+%s\s*$" % re.escape(offered), err, re.M), err
    assert "bulwark trust-server tls://127.0.0.1:%d" % port in err, err


class TlsRoomClient(R.RoomClient):
    """bwrooms' line client over TLS, the server's certificate checked
    against the tls.crt bulwarkd made (host name localhost)."""

    def __init__(self, port, cafile, timeout=10.0):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(cafile))
        raw = socket.create_connection((H, port), timeout=timeout)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        except BaseException:
            raw.close()
            raise
        self.sock.settimeout(timeout)
        self.timeout = timeout
        self.buf = b""
        self.seen = b""
        self.eof = False
        self.reset = False
        self.expect(R.MENU_LAST)


class Proxy:
    """A proxy on 127.0.0.1:port in front of bulwarkd's TLS port upstream.
    mode "pass": every byte relayed as it is (the client's TLS reaches the
    server); mode "mitm": the client's TLS ends here, with a key of the
    proxy's own (cert, key), and the plaintext is relayed over a TLS
    session of the proxy's with the server; mode "end": the client's TLS
    ends here as in "mitm", and the plaintext goes to a plain port upstream,
    as stunnel would relay it. The mode is read at each accept; cut, if
    set, is asked of every piece from the client, and a true answer closes
    the connection there (its end "cut"); edit, if set, is given every
    piece from the server and returns what is relayed instead. stats: one dict per connection, "up" the bytes relayed from
    the client (decrypted, in mitm mode), "down" those from the server,
    "done" once it is closed."""

    def __init__(self, port, upstream, cert=None, key=None):
        self.port, self.upstream = port, upstream
        self.cert, self.key = cert, key
        self.mode = "pass"
        self.cut = self.edit = None
        self.stats = []
        self.errors = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind((H, port))
        self.ls.listen(16)
        self.ls.settimeout(0.2)
        self.threads = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            st = {"mode": self.mode, "up": 0, "down": 0, "handshake": False,
                  "upstream": False, "done": False, "end": None}
            with self.lock:
                self.stats.append(st)
            t = threading.Thread(target=self._serve, args=(conn, st), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, conn, st):
        up = None
        try:
            conn.settimeout(10)
            if st["mode"] in ("mitm", "end"):
                sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                sctx.load_cert_chain(str(self.cert), str(self.key))
                conn = sctx.wrap_socket(conn, server_side=True)
                st["handshake"] = True
            if st["mode"] == "mitm":
                cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                cctx.check_hostname = False
                cctx.verify_mode = ssl.CERT_NONE
                raw = socket.create_connection((H, self.upstream), timeout=10)
                up = cctx.wrap_socket(raw, server_hostname="localhost")
            else:
                up = socket.create_connection((H, self.upstream), timeout=10)
            st["upstream"] = True
            self._relay(conn, up, st)
        except (OSError, ssl.SSLError) as e:
            st["end"] = repr(e)
        except Exception as e:  # a bug of the proxy: reported by the test
            self.errors.append(repr(e))
        finally:
            for s in (conn, up):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass
            st["done"] = True

    def _relay(self, client, server, st):
        socks = [client, server]
        while not self.stopping.is_set():
            ready = [s for s in socks if isinstance(s, ssl.SSLSocket) and s.pending()]
            if not ready:
                ready, _, _ = select.select(socks, [], [], 0.2)
            for s in ready:
                # a short wait: what made the socket readable may be a
                # record with no data (a session ticket)
                s.settimeout(0.05)
                try:
                    data = s.recv(65536)
                except (socket.timeout, ssl.SSLWantReadError):
                    continue
                except (ConnectionError, ssl.SSLError, OSError) as e:
                    st["end"] = repr(e)
                    return
                if not data:
                    st["end"] = "eof from %s" % ("client" if s is client else "server")
                    return
                if s is client and self.cut is not None and self.cut(data):
                    st["end"] = "cut"
                    return
                if s is server and self.edit is not None:
                    data = self.edit(data)
                other = server if s is client else client
                st["up" if s is client else "down"] += len(data)
                other.settimeout(10)
                other.sendall(data)

    def new_since(self, n, timeout=15.0):
        """The stats of the connections after the first n, once they are all
        closed (at most timeout)."""
        bwd.wait_for(lambda: all(st["done"] for st in self.stats[n:]), timeout)
        with self.lock:
            got = list(self.stats[n:])
        assert all(st["done"] for st in got), "proxy connections still open: %r" % got
        return got

    def stop(self):
        self.stopping.set()
        try:
            self.ls.close()
        except OSError:
            pass
        for t in self.threads:
            t.join(timeout=15)


@pytest.fixture
def proxy():
    made = []

    def start(*a, **kw):
        p = Proxy(*a, **kw)
        made.append(p)
        return p

    yield start
    for p in made:
        p.stop()
    errors = [e for p in made for e in p.errors]
    if errors:
        pytest.fail("proxy errors: %r" % errors)


# --------------------------------------------------------------------------
# 1. The data over TLS, end to end


def test_bulwark_help_lists_trust_server():
    r = run_bulwark("--help", env=client_env("/nonexistent-home"))
    assert r.returncode == 0, describe(r)
    assert b"trust-server" in r.stdout, r.stdout
    r = run_bulwark("trust-server", "--help", env=client_env("/nonexistent-home"))
    assert r.returncode == 0 and b"known_servers" in r.stdout, describe(r)


def test_send_over_tls_stores_the_file_and_pins_the_servers_key(start_server, client_dir,
                                                               tmp_path):
    tp = ports.reserve()
    srv = start_tls(start_server, tls_port=tp)
    fp = fingerprint_of(srv.data_dir)
    assert fp == srv.fp
    if shutil.which("openssl") is not None:
        assert fp == fp_by_openssl(srv.data_dir / "tls.crt")
    home = tmp_path / "home"
    env = client_env(home)
    known = home_known(home)
    data = os.urandom(300_000)
    d, _ = send_dir(client_dir, tp, data=data)
    mark = len(srv.log())
    r = d.run(quiet=False, env=env)
    assert r.returncode == 0, describe(r)
    assert_stored(srv, d, data)
    assert events_since(srv, mark), srv.log_tail()
    err = r.stderr.decode()
    assert new_line("bulwark", tp, fp, known) in err, err
    assert err.count("is new") == 1, err
    assert known.read_text() == "127.0.0.1:%d %s\n" % (tp, fp)
    assert stat.S_IMODE(known.stat().st_mode) == 0o600, oct(known.stat().st_mode)
    for dd in (known.parent, known.parent.parent):
        assert stat.S_IMODE(dd.stat().st_mode) == 0o700, (dd, oct(dd.stat().st_mode))

    # the second run reconnects on the pinned key: nothing new said or written
    before = known.read_bytes()
    data2 = os.urandom(50_000)
    d.write_file("upload.bin", data2)
    r = d.run(quiet=False, env=env)
    assert r.returncode == 0, describe(r)
    assert b"is new" not in r.stderr and b"WARNING" not in r.stderr, describe(r)
    assert_stored(srv, d, data2)
    assert known.read_bytes() == before


# --------------------------------------------------------------------------
# 2. The messenger over TLS


def test_msg_over_tls_between_two_users(start_server, tmp_path):
    tp = ports.reserve()
    srv = start_tls(start_server, tls_port=tp)
    home = tmp_path / "home"
    env = client_env(home)
    addr = "tls://127.0.0.1:%d" % tp
    a, b = tmp_path / "a", tmp_path / "b"
    b.mkdir()
    # a names the server with -s, b in server.info
    (b / "server.info").write_text(addr + "\n")
    na, nb = unique_name("alice"), unique_name("bob")
    r = msg(a, "-s", addr, "register", na, env=env)
    assert r.returncode == 0, describe(r)
    assert new_line("bulwark", tp, srv.fp, home_known(home)) in r.stderr.decode(), describe(r)
    r = msg(b, "register", nb, env=env)
    assert r.returncode == 0, describe(r)
    assert b"is new" not in r.stderr, describe(r)  # pinned by a's run
    (a / "server.info").write_text(addr + "\n")
    assert nb in msg_ok(a, "list", env=env).splitlines()
    msg_ok(a, "send-key", nb, env=env)
    msg_ok(a, "send", nb, "hello over TLS, שלום", env=env)
    data = os.urandom(1024 * 1024 + 3)
    (a / "f.bin").write_bytes(data)
    msg_ok(a, "send-file", nb, "f.bin", env=env)
    out_dir = tmp_path / "received"
    out_dir.mkdir()
    got = blocks(msg_ok(b, "-o", str(out_dir), "pull", env=env))
    assert [g[0] for g in got] == [na, na, na], got
    assert got[0][1] == "symmetric key received" and got[1][1] == "hello over TLS, שלום", got
    assert got[2][1].startswith(str(out_dir) + "/from-"), got
    with open(got[2][1], "rb") as f:
        assert f.read() == data
    assert home_known(home).read_text() == "127.0.0.1:%d %s\n" % (tp, srv.fp)
    assert any("service=msg" in ln for ln in events_since(srv, 0)), srv.log_tail()


# --------------------------------------------------------------------------
# 3. The group chat over TLS


def test_chat_over_tls_creates_a_room_a_tls_member_talks_in(start_server, tmp_path):
    rp = ports.reserve()
    srv = start_tls(start_server, rooms_tls_port=rp, rooms=True)
    home = tmp_path / "home"
    env = client_env(home)
    p = R.Proc([str(bwd.BULWARK), "chat", "tls://127.0.0.1:%d" % rp], env=env,
               cwd=str(tmp_path))
    bob = None
    try:
        p.wait_for(R.MENU_LAST, timeout=15)
        p.type("2", pause=0)
        p.wait_for(R.ASK_NAME)
        p.type("alice", pause=0)
        p.wait_for(R.ASK_CREATE_PASS)
        p.type("pw-tls", pause=0)
        p.wait_for("You can start to talk!")
        m = re.search(r"The id of the group is:(\d+)", p.text())
        assert m, p.text()
        room = int(m.group(1))
        bob = TlsRoomClient(rp, srv.data_dir / "tls.crt")
        bob.join("bob", room, "pw-tls")
        p.wait_for(R.joined("bob"))
        p.type("hello from bulwark chat over tls", pause=0)
        bob.expect("alice: hello from bulwark chat over tls")
        bob.line("hi alice")
        p.wait_for("bob: hi alice")
        p.close_input()  # the end of input leaves the room
        bob.expect(R.left("alice"))
        try:
            rc = p.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError("bulwark chat did not exit within 20 s of the end of its "
                                 "input:\n" + p.text())
        assert rc == 0, p.text()
        out = p.text()
        assert new_line("bulwark chat", rp, srv.fp, home_known(home)) in out, out
        assert R.BYE in out, out
        assert home_known(home).read_text() == "127.0.0.1:%d %s\n" % (rp, srv.fp)
    finally:
        p.kill()
        if bob is not None:
            bob.close()
    # -s names the server too; the key is pinned now: nothing new said
    r = run_bulwark("chat", "-s", "tls://127.0.0.1:%d" % rp, env=env, cwd=tmp_path,
                    stdin=b"3\n")
    assert r.returncode == 0, describe(r)
    assert R.MENU in r.stdout.decode(), describe(r)
    assert b"is new" not in r.stderr and b"WARNING" not in r.stderr, describe(r)


# --------------------------------------------------------------------------
# 4. A changed key


def test_a_changed_key_is_refused_before_any_request_until_trust_server(
        start_server, client_dir, tmp_path):
    tp = ports.reserve()
    a = start_tls(start_server, tls_port=tp)
    home = tmp_path / "home"
    env = client_env(home)
    known = home_known(home)
    d, _ = send_dir(client_dir, tp)
    r = d.run(env=env)
    assert r.returncode == 0, describe(r)
    assert known.read_text() == "127.0.0.1:%d %s\n" % (tp, a.fp)
    a.stop()

    # another server (another data directory, so another key) on the same port
    b = start_tls(start_server, tls_port=tp)
    assert b.fp != a.fp and fingerprint_of(b.data_dir) == b.fp
    pinned_before = known.read_bytes()
    mark = len(b.log())

    data = os.urandom(30_000)
    d.write_file("upload.bin", data)
    identity = {n: (d.path / n).read_bytes() for n in ("me.info", "priv.key")}
    r = d.run(quiet=False, env=env)
    assert r.returncode == EXIT_KEY, describe(r)
    assert_changed_key_said(r.stderr, "bulwark", tp, a.fp, b.fp)
    assert b"trying again" not in r.stderr, describe(r)  # tried once, not retried
    assert {n: (d.path / n).read_bytes() for n in identity} == identity
    # a client never registered: no identity (what is staged on the way:
    # test_a_refused_tls_server_leaves_no_staged_identity)
    fresh, _ = send_dir(client_dir, tp)
    r = fresh.run(env=env)
    assert r.returncode == EXIT_KEY, describe(r)
    assert_changed_key_said(r.stderr, "bulwark", tp, a.fp, b.fp)
    assert not (fresh.path / "me.info").exists() and not (fresh.path / "priv.key").exists()
    # the messenger and the chat refuse the same way
    m = tmp_path / "m"
    r = msg(m, "-s", "tls://127.0.0.1:%d" % tp, "register", unique_name("m"), env=env)
    assert r.returncode == EXIT_KEY, describe(r)
    assert_changed_key_said(r.stderr, "bulwark", tp, a.fp, b.fp)
    assert not (m / "me.info").exists(), dir_names(m)
    r = run_bulwark("chat", "tls://127.0.0.1:%d" % tp, env=env, cwd=tmp_path, stdin=b"2\nx\n")
    assert r.returncode == EXIT_KEY, describe(r)
    assert_changed_key_said(r.stderr, "bulwark chat", tp, a.fp, b.fp)
    assert r.stdout == b"", describe(r)

    assert known.read_bytes() == pinned_before
    settle(b, mark, n=4)
    assert events_since(b, mark) == [], b.log()[mark:]
    assert b.stored_files(d.me_info()[1]) == []

    # the operator confirmed B's key: trust-server pins it, keeping nothing else
    r = trust("tls://127.0.0.1:%d" % tp, env, tmp_path)
    assert r.returncode == 0, describe(r)
    assert r.stdout.decode() == "tls://127.0.0.1:%d: pinned %s (was %s) in %s\n" % (
        tp, b.fp, a.fp, known), describe(r)
    assert known.read_text() == "127.0.0.1:%d %s\n" % (tp, b.fp)
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    r = d.run(quiet=False, env=env)
    assert r.returncode == 0, describe(r)
    assert b"WARNING" not in r.stderr and b"is new" not in r.stderr, describe(r)
    assert_stored(b, d, data)
    assert events_since(b, mark), b.log_tail()


# --------------------------------------------------------------------------
# 5. A man in the middle


def test_a_man_in_the_middle_with_its_own_key_gets_no_byte(start_server, client_dir,
                                                           tmp_path, proxy):
    need_openssl()
    mitm_crt, mitm_key = tmp_path / "mitm.crt", tmp_path / "mitm.key"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(mitm_key),
                        "-out", str(mitm_crt), "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")
    mitm_fp = fp_by_openssl(mitm_crt)

    srv = start_tls(start_server, tls_port=ports.reserve())
    assert mitm_fp != srv.fp
    pp = ports.reserve()
    px = proxy(pp, srv.tls_port, cert=mitm_crt, key=mitm_key)
    home = tmp_path / "home"
    env = client_env(home)
    known = home_known(home)

    # through the proxy relaying the bytes as they are, the client pins the
    # real server's key under the proxy's address
    d, data = send_dir(client_dir, pp)
    r = d.run(env=env)
    assert r.returncode == 0, describe(r)
    assert_stored(srv, d, data)
    assert known.read_text() == "127.0.0.1:%d %s\n" % (pp, srv.fp)
    passed = px.new_since(0)
    assert passed and sum(st["up"] for st in passed) > len(data), passed

    # the proxy now ends the client's TLS with its own key
    px.mode = "mitm"
    n0 = len(px.stats)
    mark = len(srv.log())
    d.write_file("upload.bin", os.urandom(10_000))
    r = d.run(quiet=False, env=env)
    assert r.returncode == EXIT_KEY, describe(r)
    assert_changed_key_said(r.stderr, "bulwark", pp, srv.fp, mitm_fp)
    m = tmp_path / "m"
    r = msg(m, "-s", "tls://127.0.0.1:%d" % pp, "register", unique_name("m"), env=env)
    assert r.returncode == EXIT_KEY, describe(r)
    assert_changed_key_said(r.stderr, "bulwark", pp, srv.fp, mitm_fp)
    assert not (m / "me.info").exists()
    got = px.new_since(n0)
    assert len(got) == 2 and all(st["mode"] == "mitm" for st in got), got
    assert [st["up"] for st in got] == [0, 0], got
    assert known.read_text() == "127.0.0.1:%d %s\n" % (pp, srv.fp)
    settle(srv, mark, n=sum(1 for st in got if st["upstream"]))
    assert events_since(srv, mark) == [], srv.log()[mark:]

    # trust on first use has its known weakness: a client that knows no key
    # for that address pins the proxy's. But the proxy cannot prove the
    # client's key to the server: neither a registration nor an upload for
    # the identity registered above goes through it, and nothing is stored
    other = client_env(tmp_path / "home2")
    n1 = len(px.stats)
    mark = len(srv.log())
    d2, data2 = send_dir(client_dir, pp)
    r = d2.run(quiet=False, env=other)
    assert r.returncode != 0, describe(r)
    assert new_line("bulwark", pp, mitm_fp, home_known(tmp_path / "home2")) in \
        r.stderr.decode(), describe(r)
    assert not (d2.path / "me.info").exists()
    d.write_file("upload.bin", os.urandom(10_000))
    r = d.run(quiet=False, env=other)
    assert r.returncode != 0, describe(r)
    assert_stored(srv, d, data)  # the first upload, unchanged
    px.new_since(n1)
    refused = [e for e in events_since(srv, mark) if "event=auth_refused" in e]
    assert refused and all("reason=no_certificate" in e for e in refused), srv.log()[mark:]


def test_ca_file_verifies_the_servers_name_instead_of_pinning(start_server, client_dir,
                                                             tmp_path):
    """--ca-file: a certificate signed for the address by that CA is taken
    without a pin; another CA's, or a self-signed one, is refused before a
    byte of the protocol, with exit 7."""
    from test_tls_server import make_ca_signed
    ca, crt, key = make_ca_signed(tmp_path / "pki")
    other_ca, _, _ = make_ca_signed(tmp_path / "other")
    srv = start_tls(start_server, "--tls-cert", crt, "--tls-key", key,
                    tls_port=ports.reserve())
    home = tmp_path / "home"
    env = client_env(home)
    d, data = send_dir(client_dir, srv.tls_port)
    r = d.run("--ca-file", str(ca), quiet=False, env=env)
    assert r.returncode == 0, describe(r)
    assert_stored(srv, d, data)
    assert not home_known(home).exists(), "a CA-verified key was pinned"
    m = tmp_path / "m"
    r = msg(m, "-s", "tls://127.0.0.1:%d" % srv.tls_port, "--ca-file", str(ca),
            "register", unique_name("ca"), env=env)
    assert r.returncode == 0, describe(r)
    mark = len(srv.log())
    for cafile, port in ((other_ca, srv.tls_port), (ca, None)):
        if port is None:  # a server with the self-signed key it makes
            port = start_tls(start_server, tls_port=ports.reserve()).tls_port
        d2, _ = send_dir(client_dir, port)
        r = d2.run("--ca-file", str(cafile), quiet=False, env=env)
        assert r.returncode == EXIT_KEY, describe(r)
        assert "is not signed for that name by the CA in %s" % cafile in r.stderr.decode(), \
            describe(r)
        assert not (d2.path / "me.info").exists()
    assert not home_known(home).exists()
    assert events_since(srv, mark) == [], srv.log()[mark:]
    r = d.run("--ca-file", str(tmp_path / "none.pem"), env=env)
    assert r.returncode == 2 and b"--ca-file" in r.stderr, describe(r)


def test_the_systems_store_vouches_for_keys_and_a_pinned_key_never_reads_it(
        start_server, client_dir, tmp_path):
    """Without --ca-file, a certificate that chains to the system's store
    for the address (SSL_CERT_FILE, or SSL_CERT_DIR's hashed links) is
    taken without a pin, from a server never seen and from one whose pinned
    key changed; without the CA in the store the changed key is refused. A
    pinned key that did not change is taken without reading the store at
    all: here the store is a FIFO nobody writes, which would hold whoever
    opened it until the run's timeout."""
    need_openssl()
    from test_tls_server import make_ca_signed
    ca, crt, key = make_ca_signed(tmp_path / "pki")
    hashed, empty = tmp_path / "hashed", tmp_path / "empty"
    hashed.mkdir()
    empty.mkdir()
    shutil.copy(ca, hashed / "test-ca.pem")
    r = subprocess.run(["openssl", "rehash", str(hashed)], capture_output=True, timeout=30)
    assert r.returncode == 0 and len(list(hashed.iterdir())) == 2, r.stderr
    fifo = tmp_path / "store.fifo"
    os.mkfifo(fifo)
    home = tmp_path / "home"
    base = client_env(home)
    none = str(tmp_path / "none.pem")
    stores = {"file": dict(base, SSL_CERT_FILE=str(ca), SSL_CERT_DIR=str(empty)),
              "dir": dict(base, SSL_CERT_FILE=none, SSL_CERT_DIR=str(hashed))}
    bare = dict(base, SSL_CERT_FILE=none, SSL_CERT_DIR=str(empty))
    blocking = dict(base, SSL_CERT_FILE=str(fifo), SSL_CERT_DIR=str(empty))
    known = home_known(home)
    tp = ports.reserve()

    # never seen, signed by a CA of the store: taken, nothing pinned
    srv = start_tls(start_server, "--tls-cert", crt, "--tls-key", key, tls_port=tp)
    for how, env in stores.items():
        d, data = send_dir(client_dir, tp)
        r = d.run(quiet=False, env=env)
        assert r.returncode == 0, (how, describe(r))
        assert b"pinned" not in r.stderr and b"WARNING" not in r.stderr, (how, describe(r))
        assert_stored(srv, d, data)
    assert not known.exists(), known.read_text()
    ca_fp = srv.fp
    srv.stop()

    # a self-signed key on that port is pinned; pinned and unchanged, it
    # is taken again without a look at the store (the FIFO)
    a = start_tls(start_server, tls_port=tp)
    d, _ = send_dir(client_dir, tp)
    r = d.run(quiet=False, env=stores["file"])
    assert r.returncode == 0 and b"is now pinned" in r.stderr, describe(r)
    pinned = "127.0.0.1:%d %s\n" % (tp, a.fp)
    assert known.read_text() == pinned
    data = os.urandom(25_000)
    d.write_file("upload.bin", data)
    r = d.run(quiet=False, env=blocking, timeout=30)
    assert r.returncode == 0 and r.stderr == b"", describe(r)
    assert_stored(a, d, data)
    a.stop()

    # the port's key changes to the CA-signed one: the store vouches for
    # it (the pin is left alone); without the CA it is refused
    b = start_tls(start_server, "--tls-cert", crt, "--tls-key", key, tls_port=tp)
    assert b.fp == ca_fp != a.fp
    for how, env in stores.items():
        data = os.urandom(15_000)
        d.write_file("upload.bin", data)
        r = d.run(quiet=False, env=env)
        assert r.returncode == 0, (how, describe(r))
        assert b"WARNING" not in r.stderr and b"pinned" not in r.stderr, (how, describe(r))
        assert_stored(b, d, data)
    r = d.run(quiet=False, env=bare)
    assert r.returncode == EXIT_KEY, describe(r)
    assert_changed_key_said(r.stderr, "bulwark", tp, a.fp, b.fp)
    assert known.read_text() == pinned


def make_chain_signed(directory):
    """A root CA, an issuing CA it signs, and a server certificate for
    127.0.0.1 the issuing CA signs, as public CAs issue them. Returns
    (root, the server's chain file: its certificate then the issuing CA's,
    its key)."""
    root = tlsutil.make_root(directory, "root", "Bulwark Test Root")
    mid = tlsutil.issue(directory, "mid", "Bulwark Test Issuing CA", root,
                        tlsutil.ISSUING_CA_EXT)
    crt, key = tlsutil.issue(directory, "srv", "localhost", mid, tlsutil.SERVER_EXT)
    chain = directory / "chain.pem"
    chain.write_bytes(crt.read_bytes() + mid[0].read_bytes())
    return root[0], chain, key


def test_a_changed_key_an_issuing_ca_vouches_for_is_taken_every_time(start_server,
                                                                     client_dir, tmp_path):
    """A pinned address whose server moves to a certificate from an issuing
    CA under a root of the system's store: taken without a warning, on the
    first command and on every one after (a session resumed from the first
    would show the certificate without its chain, which no store can vouch
    for: none is kept from such a connection), the pin left alone."""
    root, chain, key = make_chain_signed(tmp_path / "pki")
    empty = tmp_path / "empty"
    empty.mkdir()
    env = dict(client_env(tmp_path / "home"), SSL_CERT_FILE=str(root), SSL_CERT_DIR=str(empty))
    known = home_known(tmp_path / "home")
    tp = ports.reserve()
    a = start_tls(start_server, tls_port=tp)
    d, _ = send_dir(client_dir, tp)
    r = d.run(quiet=False, env=env)
    assert r.returncode == 0 and b"is now pinned" in r.stderr, describe(r)
    pinned = known.read_text()
    a.stop()
    b = start_tls(start_server, "--tls-cert", chain, "--tls-key", key, tls_port=tp)
    for i in range(3):
        data = os.urandom(10_000 + i)
        d.write_file("upload.bin", data)
        r = d.run(quiet=False, env=env)
        assert r.returncode == 0, (i, describe(r))
        assert b"WARNING" not in r.stderr, (i, describe(r))
        assert_stored(b, d, data)
    assert known.read_text() == pinned


def test_ls_get_and_rm_give_an_owner_its_files_back(start_server, client_dir, tmp_path):
    """bulwark ls, get (resumed from a .part, checked by SHA-256) and rm,
    with the identity and the server bulwark send used."""
    srv = start_tls(start_server, tls_port=ports.reserve())
    env = client_env(tmp_path / "home")
    data = os.urandom(700_000)
    d, _ = send_dir(client_dir, srv.tls_port, data=data, file_name="photo.jpg")
    r = d.run(env=env)
    assert r.returncode == 0, describe(r)
    r = run_bulwark("ls", "-C", d.path, env=env)
    assert r.returncode == 0, describe(r)
    (line,) = r.stdout.decode().splitlines()
    size, state, day, clock, name = line.split()
    assert (int(size), state, name) == (len(data), "verified", "photo.jpg"), line
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", day) and re.fullmatch(r"\d\d:\d\d:\d\d", clock)

    out = tmp_path / "back"
    out.mkdir()
    r = run_bulwark("get", "-C", d.path, "photo.jpg", "-o", out / "p.jpg", env=env)
    assert r.returncode == 0, describe(r)
    assert (out / "p.jpg").read_bytes() == data
    # an existing destination is not overwritten
    r = run_bulwark("get", "-C", d.path, "photo.jpg", "-o", out / "p.jpg", env=env)
    assert r.returncode == 2 and b"exists" in r.stderr, describe(r)
    # an interrupted get resumes from its .part
    (out / "q.jpg.part").write_bytes(data[:300_001])
    r = run_bulwark("get", "-C", d.path, "photo.jpg", "-o", out / "q.jpg", env=env)
    assert r.returncode == 0, describe(r)
    assert b"resuming" in r.stderr and (out / "q.jpg").read_bytes() == data
    assert not (out / "q.jpg.part").exists()
    # a .part that is not the server's file is caught by the hash, removed
    (out / "w.jpg.part").write_bytes(b"x" * 1000)
    r = run_bulwark("get", "-C", d.path, "photo.jpg", "-o", out / "w.jpg", env=env)
    assert r.returncode == 1 and b"SHA-256" in r.stderr, describe(r)
    assert not (out / "w.jpg.part").exists() and not (out / "w.jpg").exists()
    r = run_bulwark("get", "-C", d.path, "photo.jpg", "-o", out / "w.jpg", env=env)
    assert r.returncode == 0 and (out / "w.jpg").read_bytes() == data, describe(r)

    r = run_bulwark("rm", "-C", d.path, "photo.jpg", env=env)
    assert r.returncode == 0 and b"deleted 'photo.jpg'" in r.stdout, describe(r)
    r = run_bulwark("ls", "-C", d.path, env=env)
    assert r.returncode == 0 and r.stdout == b"", describe(r)
    for cmd in ("get", "rm"):
        r = run_bulwark(cmd, "-C", d.path, "photo.jpg", "-o" if cmd == "get" else "-q",
                        *([out / "z.jpg"] if cmd == "get" else []), env=env)
        assert r.returncode == 6 and b"no file named 'photo.jpg'" in r.stderr, describe(r)
    assert not (out / "z.jpg.part").exists()
    # the plain port is never asked, and an identity is needed
    r = run_bulwark("ls", "-C", d.path, "-s", "127.0.0.1:%d" % srv.port, env=env)
    assert r.returncode == 2 and b"only over TLS" in r.stderr, describe(r)
    empty = tmp_path / "nobody"
    empty.mkdir()
    r = run_bulwark("ls", "-C", empty, "-s", "tls://127.0.0.1:%d" % srv.tls_port, env=env)
    assert r.returncode == 2 and b"no me.info" in r.stderr, describe(r)


def test_tls_only_makes_the_plain_port_refuse_the_identity(start_server, client_dir,
                                                           tmp_path):
    srv = start_tls(start_server, tls_port=ports.reserve())
    env = client_env(tmp_path / "home")
    d, _ = send_dir(client_dir, srv.tls_port)
    assert d.run(env=env).returncode == 0
    plain = "127.0.0.1:%d" % srv.port
    d.write_file("upload.bin", b"before")
    r = d.run("-s", plain, env=env)
    assert r.returncode == 0, describe(r)  # the plain port serves it
    r = run_bulwark("tls-only", "-C", d.path, "-s", plain, env=env)
    assert r.returncode == 2 and b"only over TLS" in r.stderr, describe(r)
    r = run_bulwark("tls-only", "-C", d.path, env=env)
    assert r.returncode == 0 and b"refused on the server's plain ports" in r.stdout, describe(r)
    d.write_file("upload.bin", b"after")
    r = d.run("-s", plain, quiet=False, env=env)
    assert r.returncode != 0, describe(r)
    assert_stored(srv, d, b"before")
    r = d.run(env=env)  # over TLS it goes on
    assert r.returncode == 0, describe(r)
    assert_stored(srv, d, b"after")


# --------------------------------------------------------------------------
# 6. The plain and the TLS ports are never mistaken for each other


def test_tls_addresses_on_plain_ports_fail_and_never_fall_back(start_server, client_dir,
                                                              tmp_path):
    srv = start_server(rooms=True)
    home = tmp_path / "home"
    env = client_env(home)
    mark = len(srv.log())
    words = "does not speak TLS 1.3"

    d, _ = send_dir(client_dir, srv.port)
    r = d.run(env=env)
    assert r.returncode == 1, describe(r)
    assert words.encode() in r.stderr, describe(r)
    assert b"trying again" not in r.stderr, describe(r)
    assert not (d.path / "me.info").exists() and not (d.path / "priv.key").exists()

    m = tmp_path / "m"
    r = msg(m, "-s", "tls://127.0.0.1:%d" % srv.port, "register", unique_name("m"), env=env)
    assert r.returncode == 1 and words.encode() in r.stderr, describe(r)
    assert not (m / "me.info").exists()

    for argv in (["chat", "tls://127.0.0.1:%d" % srv.rooms_port],
                 ["chat", "-s", "tls://127.0.0.1:%d" % srv.port],
                 ["trust-server", "tls://127.0.0.1:%d" % srv.port]):
        r = run_bulwark(*argv, env=env, cwd=tmp_path, stdin=b"2\nname\n")
        assert r.returncode == 1, (argv, describe(r))
        assert words.encode() in r.stderr, (argv, describe(r))
        assert R.MENU_LAST.encode() not in r.stdout, (argv, describe(r))

    # no known_servers was written, no request reached the server in plain.
    # The rooms port may note the ClientHello as a line of text that is not
    # UTF-8 (when its random bytes hold a newline: about one run in ten);
    # that is the server naming junk, not a request served.
    assert not (home / ".config").exists(), list(home.rglob("*"))
    settle(srv, mark, n=5)
    served = [ln for ln in events_since(srv, mark)
              if not ("event=client_deviates" in ln and "kind=text-not-utf8" in ln)]
    assert served == [], srv.log()[mark:]


def test_plain_addresses_on_tls_ports_fail_within_the_timeout(start_server, client_dir,
                                                              tmp_path):
    tp, rp = ports.reserve(), ports.reserve()
    srv = start_tls(start_server, tls_port=tp, rooms_tls_port=rp, rooms=True)
    home = tmp_path / "home"
    env = client_env(home)
    mark = len(srv.log())

    d = client_dir()
    d.write_file("upload.bin", b"x" * 1000)
    d.write_transfer(tp, unique_name("plain"), "upload.bin")
    r = d.run("--timeout", "3", env=env, timeout=90)
    assert r.returncode == 1, describe(r)
    assert b"Fatal" in r.stderr, describe(r)

    r = msg(tmp_path / "m", "--timeout", "3", "-s", "127.0.0.1:%d" % tp, "register",
            unique_name("m"), env=env, timeout=90)
    assert r.returncode == 1, describe(r)
    assert not (tmp_path / "m" / "me.info").exists()

    # the chat waits for a menu that never comes: it ends when the server
    # gives up on the handshake, with no menu shown
    r = run_bulwark("chat", "-t", "3", "127.0.0.1:%d" % rp, env=env, cwd=tmp_path,
                    stdin=b"3\n", timeout=90)
    assert r.returncode in (0, 1), describe(r)
    assert R.MENU_LAST.encode() not in r.stdout, describe(r)

    assert not (home / ".config").exists()
    assert events_since(srv, mark) == [], srv.log()[mark:]
    assert srv.alive()


@pytest.mark.parametrize("cause", ["changed key", "plain port"])
@pytest.mark.parametrize("client", ["send", "msg"])
def test_a_refused_tls_server_leaves_no_staged_identity(start_server, client_dir, tmp_path,
                                                        cause, client):
    """A first registration whose tls:// server is refused before a byte of
    the protocol (its key is not the one pinned, or it speaks no TLS) has
    sent nothing: like a refused connection (test_send_hardening), it
    leaves no identity, and no staged .me.info.tmp-* / .priv.key.tmp-*
    either (no name can have been taken with that key)."""
    if cause == "changed key":
        srv = start_tls(start_server, tls_port=ports.reserve())
        port, want_rc, words = srv.tls_port, EXIT_KEY, b"has changed!"
        known = tmp_path / "known_servers"
        known.write_text("127.0.0.1:%d SHA256:%s\n" % (port, "A" * 43))
        env = client_env(tmp_path / "home", known=known)
    else:
        srv = start_server()
        port, want_rc, words = srv.port, 1, b"does not speak TLS 1.3"
        env = client_env(tmp_path / "home")
    if client == "send":
        d, _ = send_dir(client_dir, port)
        r = d.run(env=env)
        where, before = d.path, ["transfer.info", "upload.bin"]
    else:
        where = tmp_path / "m"
        r = msg(where, "-s", "tls://127.0.0.1:%d" % port, "register", unique_name("m"),
                env=env)
        before = []
    assert r.returncode == want_rc and words in r.stderr, describe(r)
    left = [n for n in dir_names(where) if n != ".bulwark-msg.lock"]
    assert left == before, "left behind in %s: %r\n%s" % (where, left, describe(r))


# --------------------------------------------------------------------------
# 7. Where known_servers is, and what trust-server keeps of it


def test_known_servers_is_under_home_then_xdg_then_the_variable(start_server, client_dir,
                                                                 tmp_path):
    tp, rp = ports.reserve(), ports.reserve()
    srv = start_tls(start_server, tls_port=tp, rooms_tls_port=rp, rooms=True)
    line = "127.0.0.1:%d %s\n" % (tp, srv.fp)

    # HOME alone: ~/.config/bulwark/known_servers, made 0600 in 0700 directories
    home = tmp_path / "h1"
    d, _ = send_dir(client_dir, tp)
    r = d.run(quiet=False, env=client_env(home))
    assert r.returncode == 0, describe(r)
    known = home_known(home)
    assert known.read_text() == line
    assert new_line("bulwark", tp, srv.fp, known) in r.stderr.decode(), describe(r)
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    assert stat.S_IMODE(known.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(known.parent.parent.stat().st_mode) == 0o700

    # XDG_CONFIG_HOME (absolute) wins over HOME; nothing is made under HOME
    home2, xdg = tmp_path / "h2", tmp_path / "xdg"
    home2.mkdir()
    m = tmp_path / "m"
    r = msg(m, "-s", "tls://127.0.0.1:%d" % tp, "register", unique_name("x"),
            env=client_env(home2, xdg=xdg))
    assert r.returncode == 0, describe(r)
    xk = xdg / "bulwark" / "known_servers"
    assert xk.read_text() == line
    assert new_line("bulwark", tp, srv.fp, xk) in r.stderr.decode(), describe(r)
    assert stat.S_IMODE(xk.stat().st_mode) == 0o600
    assert only_sessions(home2), list(home2.rglob("*"))

    # a relative XDG_CONFIG_HOME is ignored (the XDG rule): HOME's place
    home3 = tmp_path / "h3"
    r = trust("127.0.0.1:%d" % tp, client_env(home3, xdg="rel-xdg"), tmp_path)
    assert r.returncode == 0, describe(r)
    assert home_known(home3).read_text() == line
    assert not (tmp_path / "rel-xdg").exists()

    # BULWARK_KNOWN_SERVERS wins over both
    var = tmp_path / "deep" / "er" / "pins"
    home4, xdg4 = tmp_path / "h4", tmp_path / "xdg4"
    home4.mkdir()
    r = run_bulwark("chat", "-s", "tls://127.0.0.1:%d" % rp, env=client_env(
        home4, xdg=xdg4, known=var), cwd=tmp_path, stdin=b"3\n", timeout=60)
    assert r.returncode == 0 and R.MENU in r.stdout.decode(), describe(r)
    assert var.read_text() == "127.0.0.1:%d %s\n" % (rp, srv.fp)
    assert new_line("bulwark chat", rp, srv.fp, var) in r.stderr.decode(), describe(r)
    assert stat.S_IMODE(var.stat().st_mode) == 0o600
    assert only_sessions(home4) and not xdg4.exists(), list(home4.rglob("*"))


def test_known_servers_that_cannot_be_read_or_placed_stops_before_a_request(
        start_server, client_dir, tmp_path):
    """A known_servers that cannot be read (a directory here: root reads
    any file), or no place for one (no HOME, XDG_CONFIG_HOME or
    BULWARK_KNOWN_SERVERS): exit 2 with the reason, and the server sees no
    request."""
    srv = start_tls(start_server, tls_port=ports.reserve())
    mark = len(srv.log())
    unreadable = tmp_path / "known-dir"
    unreadable.mkdir()
    d, _ = send_dir(client_dir, srv.tls_port)
    r = d.run(quiet=False, env=client_env(tmp_path / "home", known=unreadable))
    assert r.returncode == 2, describe(r)
    assert ("cannot read %s" % unreadable) in r.stderr.decode(), describe(r)
    env = client_env(tmp_path / "home")
    del env["HOME"]
    r = d.run(quiet=False, env=env)
    assert r.returncode == 2, describe(r)
    assert b"no place for known_servers" in r.stderr, describe(r)
    assert not (d.path / "me.info").exists()
    settle(srv, mark, n=2)
    assert events_since(srv, mark) == [], srv.log()[mark:]


def test_trust_server_replaces_its_line_and_keeps_every_other(start_server, client_dir,
                                                              tmp_path):
    tp = ports.reserve()
    srv = start_tls(start_server, tls_port=tp)
    known = tmp_path / "pins" / "known_servers"
    known.parent.mkdir()
    stale = "SHA256:" + "A" * 43
    others = ["# pinned by hand",
              "example.org:443 SHA256:" + "B" * 43,
              # a longer name that starts with this one's
              "127.0.0.1:%d0 SHA256:%s" % (tp, "C" * 43),
              "localhost:%d SHA256:%s" % (tp, "D" * 43)]
    text = "%s\n%s\n127.0.0.1:%d %s\n%s\n%s" % (others[0], others[1], tp, stale,
                                                 others[2], others[3])  # no final newline
    known.write_text(text)
    os.chmod(known, 0o644)
    env = client_env(tmp_path / "home", known=known)

    # the stale line is a changed key for send
    d, data = send_dir(client_dir, tp)
    r = d.run(env=env)
    assert r.returncode == EXIT_KEY, describe(r)
    assert_changed_key_said(r.stderr, "bulwark", tp, stale, srv.fp)
    assert known.read_text() == text

    # without tls://: the same
    r = trust("127.0.0.1:%d" % tp, env, tmp_path)
    assert r.returncode == 0, describe(r)
    assert r.stdout.decode() == "tls://127.0.0.1:%d: pinned %s (was %s) in %s\n" % (
        tp, srv.fp, stale, known), describe(r)
    lines = known.read_text().splitlines()
    assert sorted(lines) == sorted(others + ["127.0.0.1:%d %s" % (tp, srv.fp)]), lines
    assert [ln for ln in lines if ln in others] == others, lines  # their order kept
    assert known.read_text().endswith("\n")
    assert stat.S_IMODE(known.stat().st_mode) == 0o600, oct(known.stat().st_mode)

    # the key pinned now is the one send meets: it goes through
    r = d.run(quiet=False, env=env)
    assert r.returncode == 0, describe(r)
    assert b"is new" not in r.stderr and b"WARNING" not in r.stderr, describe(r)
    assert_stored(srv, d, data)

    # trusting the same key again changes nothing and says no "was"
    before = known.read_text()
    r = trust("tls://127.0.0.1:%d" % tp, env, tmp_path)
    assert r.returncode == 0, describe(r)
    assert r.stdout.decode() == "tls://127.0.0.1:%d: pinned %s in %s\n" % (
        tp, srv.fp, known), describe(r)
    assert sorted(known.read_text().splitlines()) == sorted(before.splitlines())
