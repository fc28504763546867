"""A throw-away HAProxy (Debian's haproxy package) in TCP mode in front of
bulwarkd nodes, on loopback and free ports, started and stopped by the
tests: each backend server line sends the PROXY header (v2 by default) from
a source address of its own, and health-checks the node with a v2 LOCAL
header (check-send-proxy), as a production configuration would."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import ports
import reaper

BIN = "/usr/sbin/haproxy"


def installed():
    return os.access(BIN, os.X_OK)


class HaProxy:
    """frontends: {name: [(host, port), ...]} the nodes of each frontend;
    source: the address HAProxy connects to them from (what --proxy-from
    names); proxy: "send-proxy-v2" or "send-proxy" (v1); dir: where its
    configuration and log go (made here; by default a new temporary
    directory). ports[name] is the frontend's port once started."""

    def __init__(self, frontends, source="127.0.0.9", proxy="send-proxy-v2",
                 check_ms=200, dir=None):
        self.frontends = frontends
        self.source = source
        self.proxy = proxy
        self.check_ms = check_ms
        self.ports = {}
        if dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="bulwark-haproxy."))
        else:  # a directory of the caller's, made here
            self.dir = Path(dir)
            self.dir.mkdir(mode=0o700)
        self.proc = None
        self.log = self.dir / "haproxy.log"

    def config(self):
        out = ["global",
               "    maxconn 4000",
               # a port someone else holds must fail, not be shared
               "    noreuseport",
               "    stats socket %s mode 600 level admin" % (self.dir / "admin.sock"),
               "defaults",
               "    mode tcp",
               # a connection refused by a node that just died goes to
               # another one (the checks take a moment to see it down)
               "    retries 3",
               "    option redispatch",
               "    timeout connect 5s",
               "    timeout client 120s",
               "    timeout server 120s",
               "    timeout check 2s"]
        for name, nodes in self.frontends.items():
            out += ["frontend %s" % name,
                    "    bind 127.0.0.1:%d" % self.ports[name],
                    "    default_backend %s_nodes" % name,
                    "backend %s_nodes" % name,
                    "    balance roundrobin"]
            for i, (host, port) in enumerate(nodes):
                out.append("    server n%d %s:%d %s check check-send-proxy inter %dms "
                           "fall 2 rise 1 source %s" % (i + 1, host, port, self.proxy,
                                                         self.check_ms, self.source))
        return "\n".join(out) + "\n"

    def start(self):
        for attempt in range(3):
            for name in self.frontends:
                self.ports[name] = ports.reserve()
            cfg = self.dir / "haproxy.cfg"
            cfg.write_text(self.config())
            check = subprocess.run([BIN, "-c", "-f", str(cfg)], capture_output=True, text=True)
            assert check.returncode == 0, check.stdout + check.stderr
            self.proc = subprocess.Popen([BIN, "-db", "-f", str(cfg)],
                                         stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
            reaper.watch(self.proc.pid)
            try:
                self._wait_ready()
                return self
            except BaseException:
                died = self.proc.poll() is not None
                if not died:  # no HAProxy left behind by a start that failed
                    self.proc.kill()
                self.proc.wait(10)
                self.proc = None
                lost_port = died and "cannot bind" in self.log.read_text()
                if not lost_port or attempt == 2:
                    shutil.rmtree(self.dir, ignore_errors=True)
                    raise
                # a free port taken by another test between the pick and
                # the bind (noreuseport makes that fail): new ports

    def _wait_ready(self):
        deadline = time.monotonic() + 10
        for port in self.ports.values():
            while True:
                assert self.proc.poll() is None, self.log.read_text()
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "haproxy did not listen"
                    time.sleep(0.05)
        # the stats socket is made apart from the frontends, and can come
        # after them: the tests ask it at once
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                self.admin("show info")
                break
            except OSError:
                assert time.monotonic() < deadline, "haproxy's stats socket did not answer"
                time.sleep(0.05)

    def admin(self, command):
        """A command on the stats socket ("show servers state", ...)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.dir / "admin.sock"))
            s.sendall(command.encode() + b"\n")
            out = b""
            while True:
                data = s.recv(65536)
                if not data:
                    return out.decode()
                out += data

    def servers_up(self, frontend):
        """How many of frontend's servers the health checks see up."""
        lines = self.admin("show servers state %s_nodes" % frontend).splitlines()
        # columns: be_id be_name srv_id srv_name srv_addr srv_op_state ...
        return sum(1 for ln in lines[2:] if ln.split() and ln.split()[5] == "2")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)  # soft stop
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
        for port in self.ports.values():
            ports.release(port)
