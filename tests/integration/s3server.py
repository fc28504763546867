"""A throw-away S3 object store for the tests: OpenStack Swift from the
Debian packages (account, container and object servers, one replica on
one device in a temp dir, and the proxy with the s3api middleware, which
checks SigV4 signatures as S3 does), memcached for tempauth's tokens, all
on free loopback ports. The user is test:tester (tempauth), the secret
random; buckets are made with our own signed requests (s3sign.py).

stop()/start() take the proxy away and back for the fault tests; the
storage servers keep running."""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ports
import reaper
import s3sign


def installed():
    return shutil.which("swift-proxy-server") is not None and \
        shutil.which("memcached") is not None


RING_SERVERS = ("account", "container", "object")

STORAGE_CONF = """[DEFAULT]
devices = {devices}
mount_check = false
disable_fallocate = true
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
user = {user}
log_facility = LOG_LOCAL2
log_address = {log_sock}
swift_dir = {swift_dir}
log_name = bulwark-test-{kind}
eventlet_debug = false

[pipeline:main]
pipeline = healthcheck {kind}-server

[filter:healthcheck]
use = egg:swift#healthcheck

[app:{kind}-server]
use = egg:swift#{kind}
{extra}
"""

PROXY_CONF = """[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = {workers}
user = {user}
swift_dir = {swift_dir}
log_address = {log_sock}
log_name = bulwark-test-proxy
client_timeout = 60

[pipeline:main]
pipeline = catch_errors gatekeeper proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true

[filter:s3api]
use = egg:swift#s3api
location = us-east-1
allow_multipart_uploads = true
max_upload_part_num = 10000
check_bucket_owner = false

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = {secret} .admin
user_test_other = {other_secret} .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{mc_port}

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:proxy-logging]
use = egg:swift#proxy_logging
# its access log ignores log_address: it would go to /dev/log or, where
# there is none, over UDP from a socket bound to every address. Nothing
# listens there either, so it is silenced rather than lost.
access_log_level = CRITICAL

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo
"""


# A syslog for the store alone: datagrams on a Unix socket, appended to a
# file (argv: socket path, log path); it ends on SIGTERM with the servers.
SYSLOG_DRAIN = """
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1] + ".new")
os.rename(sys.argv[1] + ".new", sys.argv[1])
with open(sys.argv[2], "ab", buffering=0) as f:
    while True:
        f.write(s.recv(65536).rstrip(b"\\0") + b"\\n")
"""


class S3Server:
    """One Swift cluster with s3api. endpoint is http://127.0.0.1:PORT,
    env() the credentials the AWS way."""

    def __init__(self, parent="/var/tmp", proxy_workers=1):
        assert installed(), "Swift or memcached is not installed (scripts/deps test)"
        self.base = Path(tempfile.mkdtemp(prefix="bulwark-s3.", dir=parent))
        self.devices = self.base / "srv"
        self.swift_dir = self.base / "etc"
        self.access_key = "test:tester"
        self.secret_key = secrets.token_hex(16)
        self.other_secret = secrets.token_hex(16)
        self.region = "us-east-1"
        self.user = "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
        self.ports = {k: ports.reserve() for k in RING_SERVERS}
        self.port = ports.reserve()
        self.mc_port = ports.reserve()
        self.proxy_workers = proxy_workers
        self.procs = {}
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_sock = self.base / "log.sock"

    def _write_conf(self):
        (self.devices / "d1").mkdir(parents=True)
        self.swift_dir.mkdir()
        for kind in RING_SERVERS:
            extra = ""
            if kind == "object":
                extra = "mb_per_sync = 512\nkeep_cache_size = 0\n"
            (self.swift_dir / f"{kind}-server.conf").write_text(STORAGE_CONF.format(
                devices=self.devices, port=self.ports[kind], user=self.user,
                swift_dir=self.swift_dir, kind=kind, extra=extra,
                log_sock=self.log_sock))
            builder = str(self.swift_dir / f"{kind}.builder")
            for args in (["create", "6", "1", "0"],
                         ["add", f"r1z1-127.0.0.1:{self.ports[kind]}/d1", "1"],
                         ["rebalance"]):
                r = subprocess.run(["swift-ring-builder", builder, *args],
                                   capture_output=True, timeout=60)
                # rebalance exits 1 on warnings (one device, one zone)
                assert r.returncode in (0, 1), r.stdout + r.stderr
        (self.swift_dir / "proxy-server.conf").write_text(PROXY_CONF.format(
            port=self.port, user=self.user, swift_dir=self.swift_dir,
            secret=self.secret_key, other_secret=self.other_secret,
            mc_port=self.mc_port, workers=self.proxy_workers, log_sock=self.log_sock))

    def _spawn(self, name, argv):
        log = open(self.base / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT,
                                            start_new_session=True)
        reaper.watch(self.procs[name].pid)
        log.close()

    def _start_syslog(self, timeout=10):
        """Swift logs to syslog: to /dev/log where there is one, else over
        UDP from a socket bound to every address. Give it a syslog socket of
        its own in the store's directory, drained into syslog.log (a small
        process in its own session, stopped with the servers): nothing the
        store starts listens or sends beyond this machine's loopback."""
        self._spawn("syslog", [sys.executable, "-c", SYSLOG_DRAIN, str(self.log_sock),
                               str(self.base / "swift.log")])
        deadline = time.monotonic() + timeout
        while not self.log_sock.exists():
            assert self.procs["syslog"].poll() is None, self.log_tail("syslog")
            assert time.monotonic() < deadline, "the store's syslog did not start"
            time.sleep(0.02)

    def init(self):
        self._write_conf()
        self._start_syslog()
        self._spawn("memcached", ["memcached", "-l", "127.0.0.1", "-p", str(self.mc_port),
                                  "-U", "0", "-m", "64", "-u", "nobody"])
        for kind in RING_SERVERS:
            self._spawn(kind, [f"swift-{kind}-server",
                               str(self.swift_dir / f"{kind}-server.conf")])
        return self

    def _healthy(self, port):
        """The Swift server we started answers on port: its healthcheck
        says OK (anything else there would not)."""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET /healthcheck HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                s.settimeout(2)
                reply = b""
                while len(reply) < 4096:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
        except OSError:
            return False
        return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0] \
            and reply.endswith(b"\r\n\r\nOK")

    def start(self, timeout=60):
        self._spawn("proxy", ["swift-proxy-server",
                              str(self.swift_dir / "proxy-server.conf")])
        deadline = time.monotonic() + timeout
        # the proxy only answers once the account server does; the
        # container and object servers are checked on their own ports
        waiting = set(RING_SERVERS)
        while True:
            waiting = {k for k in waiting if not self._healthy(self.ports[k])}
            try:
                st, _, _ = self.request("GET", "/")
                if st == 200 and not waiting:
                    return self
            except OSError:
                pass
            for name, p in self.procs.items():
                assert p.poll() is None, f"{name} exited: {self.log_tail(name)}"
            assert time.monotonic() < deadline, "Swift did not start: " + \
                self.log_tail("proxy")
            time.sleep(0.2)

    def stop(self, name="proxy", sig=signal.SIGTERM, timeout=30):
        p = self.procs.pop(name, None)
        if p is None:
            return
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout)

    def destroy(self):
        for name in list(self.procs):
            self.stop(name)
        shutil.rmtree(self.base, ignore_errors=True)
        for port in (*self.ports.values(), self.port, self.mc_port):
            ports.release(port)

    def log_tail(self, name="proxy", n=30):
        try:
            lines = (self.base / f"{name}.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def env(self):
        return {"AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": self.region}

    def request(self, method, path, body=b"", headers=None, query="", secret=None):
        return s3sign.request(self.endpoint, self.region, self.access_key,
                              secret or self.secret_key, method, path, body,
                              headers or {}, query)

    def create_bucket(self, name, timeout=30):
        # right after start the storage servers may still be coming up:
        # the proxy answers 503 meanwhile
        deadline = time.monotonic() + timeout
        while True:
            st, _, body = self.request("PUT", "/" + name)
            if st != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert st == 200, (st, body)
        return name

    def bucket_for(self, key):
        """A fresh bucket for one test (S3 names: lower case, digits, -)."""
        return self.create_bucket("bw-" + secrets.token_hex(6) + "-" +
                                  "".join(c for c in key.lower() if c.isalnum())[:20])

    def keys(self, bucket, prefix=""):
        """Every key in the bucket under prefix, with its size."""
        return s3sign.list_keys(self, bucket, prefix)

    def get(self, bucket, key):
        st, _, body = self.request("GET", f"/{bucket}/{s3sign.quote_key(key)}")
        return body if st == 200 else None

    def uploads(self, bucket):
        """The multipart uploads not completed nor aborted."""
        return s3sign.list_uploads(self, bucket)

    def segments(self, bucket):
        """The names in the container where Swift keeps the parts of
        bucket's multipart objects (bucket+segments), which the S3 API
        does not show: through Swift's own API (tempauth)."""
        import json
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.endpoint + "/auth/v1.0", headers={
            "X-Auth-User": self.access_key, "X-Auth-Key": self.secret_key})
        with urllib.request.urlopen(req, timeout=10) as r:
            url, token = r.headers["X-Storage-Url"], r.headers["X-Auth-Token"]
        req = urllib.request.Request(url + "/" + bucket + "+segments?format=json",
                                     headers={"X-Auth-Token": token})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return [o["name"] for o in json.loads(r.read() or b"[]")]
        except urllib.error.HTTPError as e:
            if e.code == 404:  # no multipart object was ever made
                return []
            raise


_shared = None


def shared():
    """One store for the whole test session, stopped at exit."""
    global _shared
    if _shared is None:
        import atexit
        _shared = S3Server().init().start()
        atexit.register(_shared.destroy)
    return _shared
