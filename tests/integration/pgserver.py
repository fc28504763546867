"""A throw-away PostgreSQL server for the tests: initdb in a temp dir, the
server on a free loopback port and a Unix socket of its own, password
authentication (scram-sha-256) for the one role, a database per data
directory, and stop (fast, or a crash) and start again for the fault tests.
Everything runs from the Debian package's binaries; as root, as the
postgres user (initdb refuses root)."""

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import ports
import reaper


def pg_bin():
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return dirs[-1].parent if dirs else None


class PgServer:
    """One PostgreSQL server. url(db) is what bulwarkd's --db takes (over
    the Unix socket unless tcp), env() the password the libpq way."""

    def __init__(self, parent="/var/tmp"):
        self.bin = pg_bin()
        assert self.bin is not None, "PostgreSQL is not installed (scripts/deps test)"
        self.base = Path(tempfile.mkdtemp(prefix="bulwark-pg.", dir=parent))
        os.chmod(self.base, 0o755)  # the postgres user enters it
        self.data = self.base / "data"
        self.sock = self.base / "sock"
        self.log_path = self.base / "postgres.log"
        self.user = "bulwark"
        self.password = secrets.token_hex(12)
        self.port = ports.reserve()
        self.proc = None
        self._run_as = None
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            self._run_as = (pw.pw_uid, pw.pw_gid)
        self._dbs = {}

    # as the postgres user when we are root
    def _popen_kw(self):
        if self._run_as is None:
            return {}
        return {"user": self._run_as[0], "group": self._run_as[1], "extra_groups": []}

    def _own(self, path):
        if self._run_as is not None:
            os.chown(path, *self._run_as)

    def init(self):
        for d in (self.data, self.sock):
            d.mkdir(mode=0o700)
            self._own(d)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chmod(pwfile, 0o600)
        self._own(pwfile)
        try:
            subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user,
                            "--pwfile", str(pwfile), "--auth=scram-sha-256", "-E", "UTF8",
                            "--locale=C", "--no-sync"],
                           check=True, capture_output=True, timeout=120, **self._popen_kw())
        finally:
            pwfile.unlink()
        return self

    def start(self, timeout=30):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-k", str(self.sock), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on",
             "-c", "synchronous_commit=on", "-c", "max_connections=200",
             "-c", "shared_buffers=32MB", "-c", "log_min_messages=warning"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, **self._popen_kw())
        reaper.watch(self.proc.pid)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("postgres exited with %r\n%s"
                                     % (self.proc.returncode, self.log_tail()))
            r = subprocess.run([str(self.bin / "pg_isready"), "-q", "-h", str(self.sock),
                                "-p", str(self.port)], timeout=10)
            if r.returncode == 0:
                return self
            time.sleep(0.05)  # poll interval
        raise AssertionError("postgres not ready within %ds\n%s" % (timeout, self.log_tail()))

    def stop(self, sig=signal.SIGINT, timeout=30):
        """SIGINT: a fast shutdown (sessions ended, a checkpoint); SIGKILL:
        a crash (the next start replays the log)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if sig == signal.SIGKILL:
            # the postmaster's children outlive it: end them before a restart
            subprocess.run(["pkill", "-KILL", "-f", "postgres: .*%s" % self.port], check=False)
            pid_file = self.data / "postmaster.pid"
            if pid_file.exists():
                pid_file.unlink()

    def destroy(self):
        """Ends the server without a checkpoint (SIGQUIT, an immediate
        shutdown: its data goes next) and removes its directory. A fast
        shutdown first writes every dirty buffer, which on a slow disk
        outlasts the 10 s pytest-xdist gives a worker to exit: the worker
        was killed before the rmtree, and each run left its servers'
        gigabytes in /var/tmp."""
        self.stop(signal.SIGQUIT)
        shutil.rmtree(self.base, ignore_errors=True)
        ports.release(self.port)

    def log_tail(self, n=30):
        try:
            return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""

    # clients -------------------------------------------------------------
    def env(self):
        return {"PGPASSWORD": self.password}

    def url(self, db, tcp=False):
        if tcp:
            return "postgresql://%s@127.0.0.1:%d/%s" % (self.user, self.port, db)
        return "postgresql://%s@/%s?host=%s&port=%d" % (self.user, db, self.sock, self.port)

    def psql(self, sql, db="postgres"):
        r = subprocess.run([str(self.bin / "psql"), "-X", "-q", "-A", "-t",
                            "-v", "ON_ERROR_STOP=1", "-h", str(self.sock), "-p", str(self.port),
                            "-U", self.user, "-d", db, "-c", sql],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, **self.env()})
        if r.returncode != 0:
            raise AssertionError("psql %r: %s" % (sql, r.stderr))
        return r.stdout

    def create_db(self, name):
        self.psql('CREATE DATABASE "%s"' % name)
        return name

    def db_for(self, key):
        """The database of one data directory (made the first time)."""
        key = str(key)
        if key not in self._dbs:
            self._dbs[key] = self.create_db("bw_%d_%d" % (os.getpid(), len(self._dbs) + 1))
        return self._dbs[key]

    def connect(self, db):
        """A psycopg2 connection to db (autocommit)."""
        import psycopg2

        con = psycopg2.connect(host=str(self.sock), port=self.port, user=self.user,
                               password=self.password, dbname=db)
        con.autocommit = True
        return con


_shared = []


def shared():
    """The one server of this test process, started at first use and ended
    by end_shared() at the end of the session (conftest), or at exit."""
    if not _shared:
        import atexit

        srv = PgServer().init().start()
        atexit.register(end_shared)
        _shared.append(srv)
    return _shared[0]


def end_shared():
    """Ends the shared server and removes its directory. Called at the end
    of the test session, before a pytest-xdist worker reports that it has
    finished: the 10 s the controller then gives the worker to exit are not
    enough to remove the tens of thousands of files a long run leaves."""
    while _shared:
        _shared.pop().destroy()
