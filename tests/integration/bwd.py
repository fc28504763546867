"""Running the real binaries for the integration tests: bulwarkd (Daemon,
which conftest's start_server fixture makes for every test) in a temp data
dir on ephemeral ports, and `bulwark send` in a temp working dir; and what
a test may wait for instead of sleeping (wait_for on read_by_peer,
delivered, Daemon.conns, Daemon.asleep, Daemon.pending_signals)."""

import base64
import itertools
import os
import re
import signal
import socket
import sqlite3
import struct
import subprocess
import time
from pathlib import Path

import bwvault as bw
import reaper

REPO = Path(__file__).resolve().parents[2]
BULWARKD = Path(os.environ.get("BULWARKD", REPO / "build" / "dev" / "bulwarkd"))
BULWARK = Path(os.environ.get("BULWARK", REPO / "build" / "dev" / "bulwark"))
# "postgresql": every Daemon whose command line is built here keeps its rows
# in a database of its own on pgserver.shared() (--db), not in defensive.db
TEST_DB = os.environ.get("BULWARK_TEST_DB", "sqlite")
# "s3": and its contents in a bucket of s3server.shared() (--blobs, under a
# prefix of its own per data directory), not in files/ and messages/
TEST_BLOBS = os.environ.get("BULWARK_TEST_BLOBS", "file")
S3_TEST_BUCKET = "bulwark-tests"


def s3_args(data_dir):
    """On S3 (BULWARK_TEST_BLOBS): the options and environment that put the
    contents of the bulwarkd of data_dir in the shared store, and where."""
    import hashlib

    import s3server

    srv = s3server.shared()
    if not getattr(srv, "_test_bucket", False):
        srv.create_bucket(S3_TEST_BUCKET)
        srv._test_bucket = True
    prefix = "t-" + hashlib.sha1(str(Path(data_dir).resolve()).encode()).hexdigest()[:16] + "/"
    args = ["--blobs", "s3://%s/%s" % (S3_TEST_BUCKET, prefix.rstrip("/")),
            "--s3-endpoint", srv.endpoint, "--s3-path-style"]
    return srv, prefix, args, srv.env()


def blob_path(data_dir, *parts):
    """Where the contents of the bulwarkd of data_dir are: data_dir/parts
    on files, an S3Path in the bucket on S3."""
    if TEST_BLOBS == "s3":
        import blobview

        srv, prefix, _, _ = s3_args(data_dir)
        return blobview.S3Path(srv, S3_TEST_BUCKET, prefix, "/".join(parts))
    return Path(data_dir).joinpath(*parts)

# `msg="vault listening on 127.0.0.1:40123"`, one line per listener (shared,
# vault, messenger, console, rooms, metrics)
LISTENING_RE = re.compile(r"\b(\w+) listening on (\[[0-9A-Fa-f:.]+\]|[0-9.]+):(\d+)")
LISTEN_RE = re.compile(r"vault listening on [0-9.]+:(\d+)")
CONSOLE_LISTEN_RE = re.compile(r"console listening on [0-9.]+:(\d+)")
ROOMS_LISTEN_RE = re.compile(r"rooms listening on [0-9.]+:(\d+)")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 20.0
SANITIZER_RE = re.compile(r"ERROR: (Address|Leak|Memory|Thread)Sanitizer|runtime error:")

_names = itertools.count(1)


def require_file(path, what, variable=None, executable=True):
    """Skips the test when a built file is missing, or fails it when
    BULWARK_REQUIRE_BINARIES is set (scripts/check sets it: CI must never
    pass with nothing tested)."""
    import pytest

    if path.is_file() and (not executable or os.access(path, os.X_OK)):
        return
    reason = "%s not built: %s missing" % (what, path)
    if variable:
        reason += " (build the dev preset or set %s)" % variable
    if os.environ.get("BULWARK_REQUIRE_BINARIES"):
        pytest.fail(reason)
    pytest.skip(reason)


def need_descriptors(n):
    """Raises this process's soft open-files limit to its hard limit for a
    test that holds n descriptors (a fresh machine's soft limit is often
    1024); fails with a clear message if even the hard limit is lower.
    bulwarkd raises its own the same way at start-up."""
    import resource
    import pytest

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.fail("this test needs %d open files but the hard limit is %d "
                    "(raise it, e.g. ulimit -Hn, or LimitNOFILE=)" % (n, hard))
    if soft != resource.RLIM_INFINITY and soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def unique_name(prefix="user"):
    """A name no other test in this process has used."""
    return "%s-%d-%d" % (prefix, os.getpid(), next(_names))


def wait_for(predicate, timeout=5.0, interval=0.05):
    """Poll predicate until it is truthy or the timeout passes; returns its
    last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)  # poll interval


def is_true(v):
    return v in (1, True, "1", "true", "TRUE", "True")


def is_false(v):
    return v in (0, False, None, "0", "false", "FALSE", "False")


# --------------------------------------------------------------------------
# What the kernel shows of TCP connections (IPv4, /proc/net/tcp)

TCP_ESTABLISHED, TCP_SYN_SENT, TCP_SYN_RECV, TCP_LISTEN = 0x01, 0x02, 0x03, 0x0A


def _proc_addr(text):
    ip, port = text.split(":")
    # the address is the raw 32-bit value printed in this host's byte order
    return socket.inet_ntoa(struct.pack("=I", int(ip, 16))), int(port, 16)


def tcp_table():
    """{(local (ip, port), remote (ip, port)): (state, send queue, receive
    queue, inode)} of every IPv4 TCP socket the kernel shows. The send
    queue is what was written and not yet acknowledged, the receive queue
    what arrived and was not yet read (of a listening socket: connections
    waiting for accept()); inode is 0 for a socket no process has a
    descriptor of (one still on a listen queue, or closed)."""
    rows = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            tx, rx = p[4].split(":")
            rows[(_proc_addr(p[1]), _proc_addr(p[2]))] = (int(p[3], 16), int(tx, 16),
                                                          int(rx, 16), int(p[9]))
    return rows


_SOCK_DIAG_BY_FAMILY, _NLMSG_ERROR, _NETLINK_SOCK_DIAG = 20, 2, 4
_have_diag = []  # [True or False] once known


def _diag_row(local, remote):
    """What tcp_table() holds for the IPv4 TCP socket local -> remote (None
    if there is none), asked of the kernel's sock_diag: one look-up, where
    reading /proc/net/tcp walks every socket (milliseconds)."""
    sockid = (struct.pack("!HH", local[1], remote[1])
              + socket.inet_aton(local[0]) + bytes(12) + socket.inet_aton(remote[0]) + bytes(12)
              + struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF))  # any interface, no cookie
    req = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
    msg = struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY, 1, 1, 0) + req
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.sendto(msg, (0, 0))
        data = nl.recv(65536)
    typ = struct.unpack_from("=H", data, 4)[0]
    if typ == _NLMSG_ERROR:
        errno = -struct.unpack_from("=i", data, 16)[0]
        if errno == 2:  # ENOENT
            return None
        raise OSError(errno, "sock_diag")
    state = data[17]
    rqueue, wqueue, _, inode = struct.unpack_from("=IIII", data, 72)
    return state, wqueue, rqueue, inode


def _tcp_lookup(n):
    """A function (local, remote) -> tcp_table() row for n sockets: one
    sock_diag look-up each for a few, the whole table for many."""
    if n <= 32:
        if not _have_diag:
            try:
                _diag_row(("127.0.0.1", 0), ("127.0.0.1", 0))
                _have_diag.append(True)
            except OSError:  # no sock_diag here
                _have_diag.append(False)
        if _have_diag[0]:
            return _diag_row
    rows = tcp_table()
    return lambda local, remote: rows.get((local, remote))


def read_by_peer(*socks):
    """Whether the process at the other end of each of socks (IPv4 TCP: for
    a client's socket, bulwarkd's end) has accept()ed it and read every
    byte written on it so far, or has closed it. What a test waits for
    where it would sleep "until the server has read that": this end's send
    queue and the other end's receive queue are empty, and the other end
    is no longer on a listen queue."""
    row = _tcp_lookup(len(socks))
    for s in socks:
        try:
            me = s.getsockname()
        except OSError:
            continue  # closed here
        try:
            peer = s.getpeername()
        except OSError:  # not connected: still in the handshake, or refused
            if any(k[0] == me and v[0] == TCP_SYN_SENT for k, v in tcp_table().items()):
                return False
            continue
        mine = row(me, peer)
        if mine is not None and (mine[0] == TCP_SYN_SENT or mine[1]):
            return False
        theirs = row(peer, me)
        if theirs is None:
            continue  # closed (or reset) at the other end
        state, _, unread, inode = theirs
        if state in (TCP_ESTABLISHED, TCP_SYN_RECV) and (inode == 0 or unread):
            return False
    return True


def delivered(*socks):
    """Whether everything written on each of socks (IPv4 TCP) has reached
    the kernel at the other end, read there or not: this end's send queue
    is empty."""
    row = _tcp_lookup(len(socks))
    for s in socks:
        try:
            me, peer = s.getsockname(), s.getpeername()
        except OSError:
            continue  # closed, or not connected
        mine = row(me, peer)
        if mine is not None and (mine[0] == TCP_SYN_SENT or mine[1]):
            return False
    return True


def _not_connections():
    """Inodes of the sockets that are no TCP connection: listening TCP
    sockets, UDP and Unix sockets."""
    out = set()
    for name in ("tcp", "tcp6"):
        try:
            with open("/proc/net/" + name) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if int(p[3], 16) == TCP_LISTEN:
                        out.add(int(p[9]))
        except OSError:
            pass
    for name, col in (("udp", 9), ("udp6", 9), ("unix", 6)):
        try:
            with open("/proc/net/" + name) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if len(p) > col:
                        out.add(int(p[col]))
        except (OSError, ValueError):
            pass
    return out


# --------------------------------------------------------------------------
# bulwarkd


class PgRow:
    """A row of PgCon: by position, or by column name in any case."""

    # names are bytea on PostgreSQL (exact bytes) and TEXT in SQLite: given
    # to the tests as str, as sqlite3 gives them
    TEXT_NAMES = ("name", "filename", "pendingname")

    def __init__(self, names, values):
        self._names = [n.lower() for n in names]
        self._values = [bytes(v) if isinstance(v, memoryview) else v for v in values]
        for i, n in enumerate(self._names):
            if n in self.TEXT_NAMES and isinstance(self._values[i], bytes):
                self._values[i] = self._values[i].decode("utf-8", "surrogateescape")

    def __getitem__(self, k):
        if isinstance(k, str):
            return self._values[self._names.index(k.lower())]
        return self._values[k]

    def __len__(self):
        return len(self._values)

    # the embedded schema's spelling (PostgreSQL folds names to lower case)
    SPELLING = {n.lower(): n for n in (
        "ID", "Name", "PublicKey", "LastSeen", "AESKey", "KeyIssued", "KeyUsed", "NameText",
        "FileName", "PathName", "Verified", "PendingName", "PendingPath", "FileNameText",
        "ToClient", "FromClient", "Type", "Content", "ContentSize", "ContentPath")}

    def keys(self):
        return [self.SPELLING.get(n, n) for n in self._names]


class PgCursor:
    def __init__(self, cur):
        self._cur = cur
        self.rowcount = cur.rowcount

    def _row(self, values):
        return PgRow([d[0] for d in self._cur.description], values)

    def fetchall(self):
        return [self._row(v) for v in self._cur.fetchall()]

    def fetchone(self):
        v = self._cur.fetchone()
        return None if v is None else self._row(v)

    def __iter__(self):
        return iter(self.fetchall())


class PgCon:
    """What the tests use of a sqlite3 connection, on PostgreSQL."""

    def __init__(self, con):
        self._con = con

    def execute(self, sql, args=()):
        import psycopg2

        cur = self._con.cursor()
        if not args:
            cur.execute(sql)  # no parameters: a % is a %
        else:
            cur.execute(sql.replace("%", "%%").replace("?", "%s"),
                        tuple(psycopg2.Binary(a) if isinstance(a, (bytes, bytearray)) else a
                              for a in args))
        return PgCursor(cur)

    def executemany(self, sql, rows):
        for r in rows:
            self.execute(sql, r)

    def commit(self):
        pass  # autocommit

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def close(self):
        self._con.close()


def connect_db(data_dir):
    """A connection to the database of the bulwarkd of data_dir, running or
    stopped: its defensive.db (rows as sqlite3.Row), or on PostgreSQL
    (BULWARK_TEST_DB) a PgCon to the database the Daemon of that directory
    was given."""
    if TEST_DB == "postgresql":
        import pgserver

        pg = pgserver.shared()
        return PgCon(pg.connect(pg.db_for(Path(data_dir).resolve())))
    path = Path(data_dir) / "defensive.db"
    assert path.exists(), "no %s" % path
    con = sqlite3.connect(str(path), timeout=10)
    con.row_factory = sqlite3.Row
    return con


class Daemon:
    """bulwarkd as the integration tests run it. conftest's start_server
    fixture makes every one (and at teardown stops it, which must give exit
    0, and looks for sanitizer reports).

    The command line is built here unless argv is given: --data-dir
    data_dir, --listen 127.0.0.1 --port 0, the console and the group chat
    off (--no-console, --no-rooms) or on 127.0.0.1 and port 0,
    --shutdown-grace 2 (teardown stays quick when a test leaves a request
    half-sent; tests of the grace pass their own), then extra_args, which
    may override any of these (the last occurrence of an option wins).
    Every listener so gets a port the kernel picks: two runs on one
    machine never collide. argv replaces all of it with the test's own
    command line (after the binary); nothing is added, and the test then
    picks a free port for every listener itself.

    bulwarkd's standard output and error go to log_path (appended to;
    log() reads what this start added), or its standard output to a file
    of its own (stdout). A test that passes --log-file names the same file
    as log_file: log() then reads that file, and output() what still
    reached the standard streams."""

    def __init__(self, data_dir=None, extra_args=(), log_path=None, env=None, console=False,
                 prefix=None, rooms=False, argv=None, binary=None, cwd=None, port=0,
                 console_port=0, rooms_port=0, log_file=None, stdout=None,
                 stdin=subprocess.DEVNULL):
        """data_dir: bulwarkd's data directory (made if missing): the one
        db(), client_dir() and the like look in, and the default cwd.
        extra_args: options after the built ones.
        env: variables added to this process's environment for bulwarkd
        (LD_PRELOAD, BW_FAULT, ...); None runs it with the environment as is.
        console / rooms: run the operator console / the group chat on
        127.0.0.1 and console_port / rooms_port (default 0, a port the
        kernel picks) instead of passing --no-console / --no-rooms.
        port: the vault's --port (default 0); None passes no --port, so
        that port.info or the built-in default decides.
        prefix: a command that execs bulwarkd (e.g. ["prlimit", "--nofile=64:256"]);
        it must exec, so that proc.pid is bulwarkd's pid.
        binary: the bulwarkd to run (default $BULWARKD).
        argv: the whole command line after the binary (see the class).
        cwd: bulwarkd's working directory (made if missing); default data_dir.
        log_path: where its output goes; default beside data_dir.
        log_file: the path the test passes as --log-file.
        stdout: a file for its standard output alone.
        stdin: as subprocess.Popen takes it (default /dev/null)."""
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.cwd = Path(cwd) if cwd is not None else self.data_dir
        assert self.cwd is not None, "Daemon needs a data_dir or a cwd"
        for d in (self.data_dir, self.cwd):
            if d is not None:
                d.mkdir(parents=True, exist_ok=True)
        self.binary = Path(binary) if binary is not None else BULWARKD
        self.prefix = [str(a) for a in (prefix or ())]
        self.console = console
        self.rooms = rooms
        self.env = dict(env) if env is not None else None
        self.extra_args = [str(a) for a in extra_args]
        if argv is not None:
            self.argv = [str(a) for a in argv] + self.extra_args
            self.want = ("vault",)
        else:
            assert self.data_dir is not None, "a built command line needs a data_dir"
            self.argv = ["--data-dir", str(self.data_dir), "--listen", "127.0.0.1"]
            if port is not None:
                self.argv += ["--port", str(port)]
            self.argv += (["--console-listen", "127.0.0.1", "--console-port", str(console_port)]
                          if console else ["--no-console"])
            self.argv += (["--rooms-listen", "127.0.0.1", "--rooms-port", str(rooms_port)]
                          if rooms else ["--no-rooms"])
            self.argv += ["--shutdown-grace", "2"]
            if TEST_DB == "postgresql":
                import pgserver

                self.pg = pgserver.shared()
                self.pg_db = self.pg.db_for(self.data_dir.resolve())
                self.argv += ["--db", self.pg.url(self.pg_db)]
                self.env = {**self.pg.env(), **(self.env or {})}
            if TEST_BLOBS == "s3":
                _, _, args, env = s3_args(self.data_dir)
                self.argv += args
                self.env = {**env, **(self.env or {})}
            self.argv += self.extra_args
            self.want = (("vault",) + (("console",) if console else ())
                         + (("rooms",) if rooms else ()))
        # a daemon asked to serve metrics is up once it says where: the
        # line may follow the vault's (a test then found no port to ask)
        if any(a == "--metrics-listen" or a.startswith("--metrics-listen=")
               for a in self.extra_args):
            self.want += ("metrics",)
        if log_path is None:
            base = self.data_dir if self.data_dir is not None else self.cwd
            log_path = base.parent / (base.name + ".log")
        self.log_path = Path(log_path)
        self.log_file = Path(log_file) if log_file is not None else None
        self.stdout_path = Path(stdout) if stdout is not None else None
        self.stdin = stdin
        self.proc = None
        self.ports, self.addrs = {}, {}
        self.port = self.console_port = self.rooms_port = None
        self.stopped = False
        self._log = self._stdout = None
        self._log_start = 0
        self._dbs = []
        if not hasattr(self, "pg_db"):
            self.pg, self.pg_db = None, None

    # lifecycle ---------------------------------------------------------
    def command(self):
        """The whole command line run."""
        return self.prefix + [str(self.binary)] + self.argv

    def start(self, wait=True, want=None, timeout=None):
        """Starts bulwarkd; returns self. wait: return once the log shows a
        listener for each name in want ("vault", "console", "rooms",
        "messenger", "metrics", ...; default the vault's, and the console's
        and the chat's when they are on), their ports then in .ports (and
        .port, .console_port, .rooms_port), their addresses in .addrs; a
        daemon that exits first, or has not shown them all within timeout
        (default START_TIMEOUT), is killed and fails the test. wait=False
        returns once it is started (wait_exit() then serves a daemon that
        must refuse to start)."""
        want = self.want if want is None else tuple(want)
        self._log = open(self.log_path, "ab")
        self._log_start = self._log.tell()
        out = self._log
        if self.stdout_path is not None:
            self._stdout = out = open(self.stdout_path, "ab")
        env = None if self.env is None else {**os.environ, **self.env}
        argv = self.command()
        self.proc = subprocess.Popen(argv, stdin=self.stdin, stdout=out, stderr=self._log,
                                     cwd=str(self.cwd), env=env)
        reaper.watch(self.proc.pid)
        if not wait:
            return self
        timeout = START_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._take_ports()
            if all(w in self.ports for w in want):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)  # poll interval
        rc = self.proc.poll()
        self.kill()
        self.stopped = True  # this failure reports it; teardown does not again
        raise AssertionError("bulwarkd did not report %s listening within %gs "
                             "(exit code %r); argv %s\n%s"
                             % (" and ".join("`%s`" % w for w in want), timeout, rc, argv,
                                self.log_tail()))

    def _take_ports(self):
        ports, addrs = {}, {}
        for m in LISTENING_RE.finditer(self.log()):
            if m.group(1) not in ports:
                ports[m.group(1)] = int(m.group(3))
                addrs[m.group(1)] = m.group(2)
        self.ports, self.addrs = ports, addrs
        self.port = ports.get("vault")
        self.console_port = ports.get("console")
        self.rooms_port = ports.get("rooms")

    def wait_exit(self, timeout=START_TIMEOUT):
        """For a daemon started with wait=False that must refuse to start:
        waits until it exits, or shows a vault listener, or timeout passes.
        Returns (exit code, log). The exit code is None when it did not
        exit by itself; it has then been killed (SIGKILL: nothing it does on
        a graceful way out blurs what its start-up did), and .ports says
        whether it was listening."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._take_ports()
            if "vault" in self.ports:
                break
            time.sleep(0.02)  # poll interval
        rc = self.proc.poll()
        self.kill()
        self._take_ports()
        self.stopped = True  # how it ended is the test's to judge
        return rc, self.log()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=STOP_TIMEOUT, sig=signal.SIGTERM, check=True):
        """Graceful shutdown: sig, then the exit. check (the default):
        bulwarkd must still be running and exit 0. Returns the exit code."""
        if check:
            assert self.alive(), "bulwarkd already exited with %r\n%s" % (
                self.proc.poll(), self.log_tail())
        self.close_dbs()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("bulwarkd did not exit within %gs of %s\n%s"
                                 % (timeout, sig.name, self.log_tail()))
        self.stopped = True  # exited on request: teardown does not report it again
        self._close_files()
        if check:
            assert rc == 0, "bulwarkd exited with %d after %s\n%s" % (
                rc, sig.name, self.log_tail())
        return rc

    def kill(self):
        self.close_dbs()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._close_files()

    def _close_files(self):
        for f in (self._log, self._stdout):
            if f is not None and not f.closed:
                f.close()

    def hup(self, done_count=None, line=None, timeout=10.0):
        """SIGHUP; waits until the log shows one more `reload: done` or
        `reload refused` line (or, given, line), and asserts bulwarkd still
        runs. The log may have moved (rotation): done_count is the count to
        go past in what log() reads after the signal (default: the count
        before it)."""
        def count():
            text = self.log()
            if line is not None:
                return text.count(line)
            return text.count("reload: done") + text.count("reload refused")

        before = count() if done_count is None else done_count
        self.proc.send_signal(signal.SIGHUP)
        ok = wait_for(lambda: count() > before, timeout)
        assert ok, "no reload line after SIGHUP\n" + self.log()[-3000:]
        assert self.alive()

    # inspection --------------------------------------------------------
    def output(self):
        """What bulwarkd wrote to its standard streams since this start (its
        standard output not, if that has a file of its own)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log(self):
        """bulwarkd's log: log_file's contents if it has one, else output()."""
        if self.log_file is None:
            return self.output()
        try:
            return self.log_file.read_text("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=40):
        lines = self.log().splitlines()
        text = "--- bulwarkd log (last %d lines) ---\n%s" % (n, "\n".join(lines[-n:]))
        if self.log_file is not None:
            text += "\n--- standard error ---\n" + self.output()[-3000:]
        return text

    def rss_peak(self):
        """Peak resident set size (VmHWM) in bytes."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc/%d/status" % self.proc.pid)

    def conns(self):
        """How many TCP connections bulwarkd holds open, on all its
        listeners together: its descriptors that are sockets, less
        listening, UDP and Unix sockets (from /proc). A connection its peer
        reset counts until bulwarkd has closed it (the kernel drops it from
        /proc/net/tcp at once), so this shows what bulwarkd has handled."""
        fd_dir = "/proc/%d/fd" % self.proc.pid
        inodes = set()
        for fd in os.listdir(fd_dir):
            try:
                link = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue  # closed meanwhile
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
        return len(inodes - _not_connections())

    def asleep(self):
        """Whether every thread of bulwarkd sleeps (none running, runnable
        or in an uninterruptible wait), or it has exited: it has done the
        work it was given."""
        if self.proc.poll() is not None:
            return True
        task_dir = "/proc/%d/task" % self.proc.pid
        try:
            tids = os.listdir(task_dir)
        except OSError:
            return True  # exited meanwhile
        for tid in tids:
            try:
                with open(os.path.join(task_dir, tid, "stat")) as f:
                    stat = f.read()
            except OSError:
                continue  # the thread ended
            if stat[stat.rindex(")") + 2] != "S":
                return False
        return True

    def pending_signals(self):
        """The signals sent to bulwarkd and not yet taken (it blocks SIGHUP,
        SIGINT and SIGTERM and reads them from a signalfd)."""
        mask = 0
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(("ShdPnd:", "SigPnd:")):
                    mask |= int(line.split()[1], 16)
        out = set()
        for n in range(1, 65):
            if mask >> (n - 1) & 1:
                try:
                    out.add(signal.Signals(n))
                except ValueError:  # a real-time signal
                    out.add(n)
        return out

    def db(self):
        """A connection to the daemon's database: defensive.db (rows as
        sqlite3.Row), or its PostgreSQL database (PgCon: the same calls, ?
        placeholders, rows by column name in any case)."""
        con = connect_db(self.data_dir)
        self._dbs.append(con)
        return con

    def close_dbs(self):
        for con in self._dbs:
            con.close()
        self._dbs = []

    def query(self, sql, args=()):
        con = self.db()
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()
            self._dbs.remove(con)

    def client_row(self, client_id):
        rows = self.query("SELECT * FROM clients WHERE ID = ?", (bytes(client_id),))
        return rows[0] if rows else None

    def client_row_by_name(self, name):
        rows = self.query("SELECT * FROM clients WHERE Name = ?", (name,))
        return rows[0] if rows else None

    def file_rows(self, client_id):
        return self.query("SELECT * FROM files WHERE ID = ?", (bytes(client_id),))

    def file_row(self, client_id, file_name):
        rows = self.query("SELECT * FROM files WHERE ID = ? AND FileName = ?",
                          (bytes(client_id), file_name))
        return rows[0] if rows else None

    def blobs(self, *parts):
        """A place among the stored contents: blob_path."""
        return blob_path(self.data_dir, *parts)

    def client_dir(self, client_id):
        return self.blobs("files", bytes(client_id).hex())

    def incoming_dir(self):
        return self.blobs("files", ".incoming")

    def incoming_files(self):
        d = self.incoming_dir()
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    def stored_files(self, client_id):
        d = self.client_dir(client_id)
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    # clients -----------------------------------------------------------
    def client(self, timeout=10.0, key=None):
        return bw.VaultClient("127.0.0.1", self.port, timeout=timeout, key=key).connect()

    def assert_serves(self, size=3000, timeout=10.0):
        """The server is alive and a fresh session stores a file byte-exact."""
        assert self.alive(), "bulwarkd died (exit code %r)\n%s" % (self.proc.poll(), self.log_tail())
        data = os.urandom(size)
        c = bw.full_session("127.0.0.1", self.port, unique_name("probe"), data,
                            file_name="probe.bin", key=rsa_key(), timeout=timeout)
        path = self.client_dir(c.client_id) / "probe.bin"
        assert wait_for(path.exists, 3), "probe upload not stored at %s" % path
        assert path.read_bytes() == data
        assert self.alive()
        return c

    def sanitizer_reports(self):
        text = self.log() + ("\n" + self.output() if self.log_file is not None else "")
        return [ln for ln in text.splitlines() if SANITIZER_RE.search(ln)]


_key_pool = []


def rsa_key(i=None):
    """An RSA-1024 e=17 key from a small pool: key generation costs ~60 ms
    and a few dozen distinct keys are enough to tell clients apart."""
    if i is None:
        return bw.new_rsa_key()
    while len(_key_pool) <= i % 24:
        _key_pool.append(bw.new_rsa_key())
    return _key_pool[i % 24]




class ClientDir:
    """A working directory for `bulwark send`."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def write_transfer(self, port, name, file_path, host="127.0.0.1"):
        (self.path / "transfer.info").write_text("%s:%d\n%s\n%s\n" % (host, port, name, file_path))

    def write_file(self, name, data):
        p = self.path / name
        p.write_bytes(data)
        return p

    def run(self, *extra, timeout=60, quiet=True, env=None):
        argv = [str(BULWARK), "send", "--dir", str(self.path), "--timeout", "10"]
        if quiet:
            argv.append("--quiet")
        argv += list(extra)
        try:
            return subprocess.run(argv, cwd=str(self.path), stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("bulwark send did not finish within %ds; stderr:\n%s"
                                 % (timeout, (e.stderr or b"").decode("utf-8", "replace")))

    @property
    def me_path(self):
        return self.path / "me.info"

    def me_info(self):
        """(name, client id bytes, RSA private key) from me.info."""
        lines = self.me_path.read_text().splitlines()
        name = lines[0]
        client_id = bytes.fromhex(lines[1].strip())
        b64 = "".join("".join(lines[2:]).split())
        key = bw.RSA.import_key(base64.b64decode(b64, validate=True))
        return name, client_id, key

    def me_b64(self):
        lines = self.me_path.read_text().splitlines()
        return "".join("".join(lines[2:]).split())

    def priv_b64(self):
        return "".join((self.path / "priv.key").read_text().split())


def describe(result):
    return "exit %d\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        result.returncode, result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"))


def fault_env(shim, fault=None, log=None, arm=None, clock=None, wake=None):
    """Environment for bulwarkd with the shim preloaded: fault (BW_FAULT)
    counts calls only once the file arm exists, log records every call,
    clock (seconds) freezes time(), and a sleeping call ends once the file
    wake exists (a test that has seen what it wanted lets it go on rather
    than wait out the sleep).
    Under ASan the shim comes before the ASan runtime, which ASan refuses
    unless told not to check."""
    env = {"LD_PRELOAD": " ".join(filter(None, [str(shim), os.environ.get("LD_PRELOAD")])),
           "ASAN_OPTIONS": ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"),
                                                  "verify_asan_link_order=0"]))}
    if fault is not None:
        env["BW_FAULT"] = fault
    if log is not None:
        env["BW_FAULT_LOG"] = str(log)
    if arm is not None:
        env["BW_FAULT_ARM"] = str(arm)
    if clock is not None:
        env["BW_FAULT_TIME"] = str(int(clock))
    if wake is not None:
        env["BW_FAULT_WAKE"] = str(wake)
    return env
