"""scripts/cluster: up starts PostgreSQL, an S3 store, Redis, HAProxy and
the nodes, and says where they are; the cluster serves through HAProxy; status
sees each part; a second up is refused; down stops every process up
started and removes its directory."""

import ipaddress
import json
import signal
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

import bwd
import bwvault as bw
import haproxy
import pgserver
import redisserver
import s3server
from bwd import unique_name

SCRIPT = bwd.REPO / "scripts" / "cluster"


def run(*args, env, timeout=300):
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path("/proc/%d/stat" % pid).read_text().split()[2] != "Z"
    except OSError:
        return False


def session_of(pid):
    try:
        # after the name: state ppid pgrp session
        return int(Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[3])
    except OSError:
        return None


def processes_in_sessions(sids):
    return [int(d.name) for d in Path("/proc").iterdir()
            if d.name.isdigit() and session_of(int(d.name)) in sids]


def bound_sockets():
    """inode -> (protocol, local address, port) of every TCP and UDP socket
    bound to a port, from /proc/net."""
    out = {}
    for proto in ("tcp", "udp", "tcp6", "udp6"):
        for line in Path("/proc/net/" + proto).read_text().splitlines()[1:]:
            f = line.split()
            addr, port = f[1].split(":")
            if int(port, 16) == 0:
                continue  # made, never bound
            raw = bytes.fromhex(addr)
            # each 32-bit word is in the host's (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(raw)
            if ip.version == 6 and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            out[f[9]] = (proto, ip, int(port, 16))
    return out


def sessions_bound_beyond_loopback(sids):
    """The sockets of every process of these sessions bound to an address
    other than loopback (0.0.0.0 and :: included)."""
    socks, bad = bound_sockets(), []
    for pid in processes_in_sessions(sids):
        try:
            fds = list(Path("/proc/%d/fd" % pid).iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            m = re.fullmatch(r"socket:\[(\d+)\]", target)
            if m and m.group(1) in socks and not socks[m.group(1)][1].is_loopback:
                try:
                    cmd = Path("/proc/%d/cmdline" % pid).read_bytes().replace(b"\0", b" ")
                except OSError:
                    cmd = b"?"
                bad.append((pid, cmd.decode(errors="replace")[:80], socks[m.group(1)]))
    return bad


@pytest.mark.long
@pytest.mark.plain_pass_only("starts a whole cluster; its nodes' C runs under ASan in test_cluster")
def test_up_status_serve_down(tmp_path):
    for what, ok in (("haproxy", haproxy.installed()), ("PostgreSQL", pgserver.pg_bin()),
                     ("Swift", s3server.installed()), ("Redis", redisserver.installed())):
        if not ok:
            if os.environ.get("BULWARK_REQUIRE_BINARIES"):
                pytest.fail("%s is not installed (scripts/deps test)" % what)
            pytest.skip("%s is not installed" % what)
    # the postgres user enters it: not under the test's private tmp_path
    where = Path(tempfile.mkdtemp(prefix="bulwark-cluster-test.", dir="/var/tmp")) / "c"
    os.chmod(where.parent, 0o711)
    # without what a developer's shell adds (PYTHONUNBUFFERED hid that up
    # printed nothing into a pipe)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
           "BULWARK_CLUSTER_DIR": str(where),
           "BULWARKD": str(bwd.BULWARKD), "BULWARK": str(bwd.BULWARK)}
    try:
        r = run("up", "2", env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        m = re.search(r"clients connect to 127\.0\.0\.1:(\d+) \(vault, messenger\) and "
                      r"127\.0\.0\.1:(\d+) \(rooms\)", r.stdout)
        assert m, r.stdout
        port = int(m.group(1))
        assert r.stdout.count(" running ") == 6, r.stdout  # pg, s3, redis, haproxy, 2 nodes
        state = json.loads((where / "state.json").read_text())
        assert oct((where / "state.json").stat().st_mode & 0o777) == "0o600"
        pids = ([n["pid"] for n in state["nodes"]] + [state["pg"]["pid"], state["haproxy"]["pid"],
                                                      state["redis"]["pid"]]
                + list(state["s3"]["pids"].values()))
        # a course-style session through the balancer, a request per connection
        c = bw.VaultClient("127.0.0.1", port)
        for step, want in ((lambda: c.register(unique_name("cs")), bw.REGISTERED),
                           (c.send_pubkey, bw.KEY_STORED)):
            c.connect()
            bw.expect(step(), want)
            c.close()
        c.connect()
        res = c.send_file("f.bin", os.urandom(100000))
        bw.expect(res.response, bw.FILE_RECEIVED)
        c.close()
        c.connect()
        bw.expect(c.crc_ok("f.bin"), bw.ACK)
        c.close()
        # a room through the rooms frontend, spanning the nodes
        from bwrooms import RoomClient
        rooms = int(m.group(2))
        a = RoomClient(rooms)
        room = a.create("a", "pw")
        b = RoomClient(rooms)
        b.join("b", room, "pw")
        a.expect("b has joined the group")
        b.line("hello")
        a.expect("b: hello")
        a.close()
        b.close()
        # the TLS frontend passes TLS through to a node, which reads the
        # PROXY header and then the handshake; the client pins the
        # cluster's one key whichever node answers
        t = re.search(r"send -s tls://127\.0\.0\.1:(\d+) -n NAME", r.stdout)
        assert t, r.stdout
        work = tmp_path / "tlsclient"
        work.mkdir()
        (work / "f.bin").write_bytes(os.urandom(50000))
        cenv = dict(env, BULWARK_KNOWN_SERVERS=str(work / "known"))
        for _ in range(2):  # two connections: round robin reaches both nodes
            sent = subprocess.run([str(bwd.BULWARK), "send", "-s",
                                   "tls://127.0.0.1:%s" % t.group(1), "-n", "tlsuser",
                                   "-f", "f.bin", "-C", str(work)],
                                  env=cenv, capture_output=True, text=True, timeout=60)
            assert sent.returncode == 0, sent.stdout + sent.stderr
        fp = subprocess.run([str(bwd.BULWARKD), "--fingerprint", "--tls-cert",
                             state["tls"]["cert"], "--tls-key", state["tls"]["key"]],
                            capture_output=True, text=True, timeout=30)
        assert (work / "known").read_text() == "127.0.0.1:%s %s\n" % (
            t.group(1), fp.stdout.strip()), fp.stderr
        s = run("status", env=env)
        assert s.returncode == 0 and s.stdout.count(" running ") == 6, s.stdout
        # everything up started, having served, listens and sends on
        # loopback only (Swift's syslog fallback sent from sockets bound to
        # every address)
        sessions = {session_of(p) for p in pids}
        assert sessions_bound_beyond_loopback(sessions) == []
        # the node's own view, and the whole store's (read from the
        # database every 5 s), each named
        assert "files (this node's) " in s.stdout, s.stdout
        assert bwd.wait_for(lambda: "files (the store's) 2" in run("status", env=env).stdout,
                            15), run("status", env=env).stdout
        again = run("up", env=env)
        assert again.returncode != 0 and "up already" in again.stderr + again.stdout
        # ... and the cluster that is up was left as it was
        assert all(alive(p) for p in pids), [p for p in pids if not alive(p)]
        assert run("status", env=env).stdout.count(" running ") == 6
        # a pid whose process is no longer the one up started (its number
        # given to another since): down leaves it alone. Played here by
        # recording another start time for HAProxy's.
        lb_pid = state["haproxy"]["pid"]
        assert all(state["started"].get(str(p)) for p in pids), state.get("started")
        state["started"][str(lb_pid)] = "1"
        (where / "state.json").write_text(json.dumps(state))
        d = run("down", env=env)
        assert d.returncode == 0, d.stdout + d.stderr
        assert "pid %d is another process now; left alone" % lb_pid in d.stdout, d.stdout
        # down says what it stops
        for part in ("HAProxy (pid %d)" % lb_pid, "Redis (pid ", "PostgreSQL (pid ", "S3 (Swift "):
            assert part in d.stdout, (part, d.stdout)
        assert d.stdout.count("  bulwarkd ") == len(state["nodes"]), d.stdout
        assert not where.exists()
        assert alive(lb_pid)
        os.kill(lb_pid, signal.SIGKILL)
        left = [p for p in pids if p != lb_pid and alive(p)]
        assert left == [], "still running after down: %r" % left
        assert "none is up" in run("status", env=env).stdout
    finally:
        if where.exists():
            run("down", env=env)
        os.rmdir(where.parent)


def test_the_default_directory_is_one_per_user():
    """Two users of one machine each get their own cluster: the default
    directory names the user, and status says which it looked in."""
    import pwd

    env = {k: v for k, v in os.environ.items() if k != "BULWARK_CLUSTER_DIR"}
    user = pwd.getpwuid(os.getuid()).pw_name
    where = Path("/var/tmp/bulwark-cluster-%s" % user)
    if where.exists():
        pytest.skip("a cluster of this user's is up in %s" % where)
    r = run("status", env=env, timeout=60)
    assert "none is up in %s " % where in r.stdout, r.stdout + r.stderr
