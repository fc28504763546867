"""A throw-away Redis (Debian's redis-server) on loopback and a free port,
with a password, no persistence (unless asked for an append-only file), started and stopped by the tests; stop
and start again keep its port (a restart), kill is a crash."""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import ports
import reaper

BIN = "/usr/bin/redis-server"


def installed():
    return os.access(BIN, os.X_OK)


class RedisServer:
    def __init__(self, parent=None, appendonly=False):
        self.appendonly = appendonly  # its append-only file (else none)
        self.dir = Path(tempfile.mkdtemp(prefix="bulwark-redis.", dir=parent))
        self.port = ports.reserve()
        self.password = secrets.token_hex(12)
        self.proc = None

    def url(self):
        """--bus's URL, the password left out (given by env())."""
        return "redis://127.0.0.1:%d" % self.port

    def env(self):
        return {"REDISCLI_AUTH": self.password}

    def start(self, timeout=10):
        self.proc = subprocess.Popen(
            [BIN, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.dir), "--requirepass", self.password,
             "--daemonize", "no", "--logfile", str(self.dir / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        reaper.watch(self.proc.pid)
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, "redis-server exited"
            try:
                if self.cmd("PING") == "+PONG":
                    return self
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def cmd(self, *args):
        """One command over RESP; the first line of the answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            def enc(parts):
                out = b"*%d\r\n" % len(parts)
                for p in parts:
                    p = p if isinstance(p, bytes) else str(p).encode()
                    out += b"$%d\r\n%s\r\n" % (len(p), p)
                return out
            s.sendall(enc(["AUTH", self.password]) + enc(list(args)))
            data = b""
            while data.count(b"\r\n") < 2:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data.split(b"\r\n")[1].decode()

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        ports.release(self.port)
