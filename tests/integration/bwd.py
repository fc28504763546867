"""Running the real binaries for the integration tests: bulwarkd in a temp
data dir on an ephemeral port, and `bulwark send` in a temp working dir."""

import base64
import itertools
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import bwvault as bw

REPO = Path(__file__).resolve().parents[2]
BULWARKD = Path(os.environ.get("BULWARKD", REPO / "build" / "dev" / "bulwarkd"))
BULWARK = Path(os.environ.get("BULWARK", REPO / "build" / "dev" / "bulwark"))

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
        time.sleep(interval)


def is_true(v):
    return v in (1, True, "1", "true", "TRUE", "True")


def is_false(v):
    return v in (0, False, None, "0", "false", "FALSE", "False")


class VaultServer:
    """bulwarkd on 127.0.0.1 with an ephemeral port."""

    def __init__(self, data_dir, extra_args=(), log_path=None, env=None, console=False,
                 prefix=None, rooms=False):
        """env: variables added to this process's environment for bulwarkd
        (LD_PRELOAD, BW_FAULT, ...); None runs it with the environment as is.
        console: run the operator console on 127.0.0.1 and an ephemeral port
        (console_port) instead of passing --no-console.
        rooms: run the group chat on 127.0.0.1 and an ephemeral port
        (rooms_port) instead of passing --no-rooms.
        prefix: a command that execs bulwarkd (e.g. ["prlimit", "--nofile=64:256"]);
        it must exec, so that proc.pid is bulwarkd's pid."""
        self.data_dir = Path(data_dir)
        self.prefix = [str(a) for a in (prefix or ())]
        self.console = console
        self.console_port = None
        self.rooms = rooms
        self.rooms_port = None
        self.env = dict(env) if env is not None else None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.extra_args = list(extra_args)
        self.log_path = Path(log_path or self.data_dir.parent / (self.data_dir.name + ".log"))
        self.proc = None
        self.port = None
        self.stopped = False
        self._dbs = []

    # lifecycle ---------------------------------------------------------
    def start(self):
        # a short grace keeps teardown quick when a test leaves a request
        # half-sent; tests of the grace itself pass their own
        console = (["--console-listen", "127.0.0.1", "--console-port", "0"] if self.console
                   else ["--no-console"])
        argv = self.prefix + [str(BULWARKD), "--data-dir", str(self.data_dir),
                              "--listen", "127.0.0.1", "--port", "0"]
        rooms = (["--rooms-listen", "127.0.0.1", "--rooms-port", "0"] if self.rooms
                 else ["--no-rooms"])
        argv += console + rooms + ["--shutdown-grace", "2"] + self.extra_args
        self._log = open(self.log_path, "ab")
        self._log_start = self._log.tell()
        env = None if self.env is None else {**os.environ, **self.env}
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log, cwd=str(self.data_dir), env=env)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            log = self.log()
            m = LISTEN_RE.search(log)
            mc = CONSOLE_LISTEN_RE.search(log) if self.console else None
            mr = ROOMS_LISTEN_RE.search(log) if self.rooms else None
            if m and (mc or not self.console) and (mr or not self.rooms):
                self.port = int(m.group(1))
                self.console_port = int(mc.group(1)) if mc else None
                self.rooms_port = int(mr.group(1)) if mr else None
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        rc = self.proc.poll()
        self.kill()
        raise AssertionError("bulwarkd did not report `vault listening on` within %gs "
                             "(exit code %r); argv %s\n%s" % (START_TIMEOUT, rc, argv, self.log_tail()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=STOP_TIMEOUT, sig=signal.SIGTERM):
        """Graceful shutdown; asserts exit code 0."""
        assert self.alive(), "bulwarkd already exited with %r\n%s" % (
            self.proc.poll(), self.log_tail())
        self.close_dbs()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("bulwarkd did not exit within %gs of %s\n%s"
                                 % (timeout, sig.name, self.log_tail()))
        self.stopped = True  # exited on request: teardown does not report it again
        self._log.close()
        assert rc == 0, "bulwarkd exited with %d after %s\n%s" % (rc, sig.name, self.log_tail())

    def kill(self):
        self.close_dbs()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if not self._log.closed:
            self._log.close()

    # inspection --------------------------------------------------------
    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=40):
        lines = self.log().splitlines()
        return "--- bulwarkd log (last %d lines) ---\n%s" % (n, "\n".join(lines[-n:]))

    def rss_peak(self):
        """Peak resident set size (VmHWM) in bytes."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc/%d/status" % self.proc.pid)

    def db(self):
        """A sqlite3 connection to defensive.db (rows as sqlite3.Row)."""
        path = self.data_dir / "defensive.db"
        assert path.exists(), "no %s" % path
        con = sqlite3.connect(str(path), timeout=10)
        con.row_factory = sqlite3.Row
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

    def client_dir(self, client_id):
        return self.data_dir / "files" / bytes(client_id).hex()

    def incoming_dir(self):
        return self.data_dir / "files" / ".incoming"

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
        return [ln for ln in self.log().splitlines() if SANITIZER_RE.search(ln)]


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


def fault_env(shim, fault=None, log=None, arm=None, clock=None):
    """Environment for bulwarkd with the shim preloaded: fault (BW_FAULT)
    counts calls only once the file arm exists, log records every call,
    clock (seconds) freezes time().
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
    return env
