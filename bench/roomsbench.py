#!/usr/bin/python3
"""The group chat benchmark: one room of N members on 127.0.0.1, members in
separate client processes, 100-byte messages from S senders at rising
offered loads; bulwarkd's rooms service against an ngircd channel of the
same shape (IRC PRIVMSG), same client harness (bench/chatload.c), in the
same run, one server after the other.

Flood limits are off or raised on both sides so that the servers are
measured: bulwarkd runs with --rooms-rate 0 and its default --rooms-queue;
ngircd with MaxPenaltyTime 0 (no penalty time), no connection limits, and
its senders become IRC operators and set user mode +F (ngircd's "relaxed
flood protection": 10 commands a pass instead of 3, never throttled).
What cannot be changed in ngircd is compiled in: a 32 KiB write buffer per
client and a 2 KiB read buffer (a client past it is disconnected).

For each server: start it, record its RSS, join the members (all member
processes at once, a few joins in flight per process: bulwarkd hashes each
room password with scrypt on its worker threads), record the RSS again
(memory per member), then for each load level run the senders for a fixed
time, wait until the deliveries stop, and collect every member's counts:
deliveries per second (received while the load ran), latency p50/p99
(send time in the message, CLOCK_MONOTONIC, same machine), server CPU per
1,000 deliveries (utime+stime from /proc/PID/stat, from the first send to
the last delivery), members dropped, order violations per sender.

It only reports: it exits 1 only when a scenario could not run (a server
did not start, no member joined, the senders could not join, the harness
did not build), 130 when stopped. Levels above one a server fell badly
behind at are not run for that server.

Each pair of runs is repeated (--repeats, default 3), the servers taking
turns to go first, and each level's figures are those of its median run
by p99, with the p99 of every run shown beside them: one 5 s sample on a
2-core machine shared with 11 client processes moves by more than the gap
between two good servers.

Usage: bench/roomsbench.py [--quick] [--members N] [--member-procs N]
       [--senders N] [--levels 200,1000,2000,4000] [--seconds S]
       [--repeats R] [--no-ngircd] [--bin-dir DIR] [--json PATH]
"""

import argparse
import json
import os
import platform
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
PASSWORD = "bench-room-pw"
OPER = ("bench", "bench-oper-pw")


class Interrupted(BaseException):
    """A signal or the overall deadline."""


class ScenarioError(Exception):
    """A scenario could not run."""


def say(fmt, *args):
    print("roomsbench: " + (fmt % args if args else fmt), file=sys.stderr, flush=True)


def tail(path, n=12):
    try:
        lines = Path(path).read_bytes().decode("utf-8", "replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n    ".join(lines[-n:]) or "(empty log)"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def proc_cpu_s(pid):
    """utime + stime of every thread of pid so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ScenarioError("no VmRSS in /proc/%d/status" % pid)


# --------------------------------------------------------------------------
# Processes


class Procs:
    """Every process this benchmark starts; stop_all() ends the ones still
    running (each by its own pid)."""

    def __init__(self):
        self.live = []
        self.lock = threading.Lock()
        self.closed = False

    def spawn(self, argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        with self.lock:
            if self.closed:
                raise ScenarioError("stopping: not starting %s" % argv[0])
            p = subprocess.Popen([str(a) for a in argv], **kw)
            self.live.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, wait_s=10.0):
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(wait_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        with self.lock:
            if p in self.live:
                self.live.remove(p)
        return p.returncode

    def stop_all(self):
        with self.lock:
            self.closed = True
        for p in reversed(list(self.live)):
            try:
                self.stop(p, signal.SIGTERM, 5.0)
            except (OSError, subprocess.SubprocessError):
                pass


class Child:
    """A chatload process: stdout lines arrive on a queue (a reader thread);
    on_line, if set, sees each line first, in the reader thread."""

    def __init__(self, procs, argv, log_path, stdin_pipe, on_line=None):
        self.log = open(log_path, "wb")
        self.log_path = log_path
        self.lines = queue.Queue()
        self.on_line = on_line
        self.p = procs.spawn(argv, stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=self.log)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for raw in self.p.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if self.on_line is not None:
                try:
                    self.on_line(line)
                except Exception:  # a hook must never stop the reader
                    pass
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, prefix, timeout_s, what):
        """The next line starting with prefix (others are skipped)."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ScenarioError("%s: no `%s` line within %g s (pid %d):\n    %s"
                                    % (what, prefix, timeout_s, self.p.pid, tail(self.log_path)))
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                self.lines.put(None)
                raise ScenarioError("%s: the process ended (exit %r) before `%s`:\n    %s"
                                    % (what, self.p.wait(), prefix, tail(self.log_path)))
            if line.startswith(prefix):
                return line

    def tell(self, cmd):
        try:
            self.p.stdin.write((cmd + "\n").encode())
            self.p.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def close(self, procs, wait_s=10.0):
        if self.p.stdin is not None:
            try:
                self.p.stdin.close()
            except OSError:
                pass
        try:
            self.p.wait(wait_s)
        except subprocess.TimeoutExpired:
            pass
        procs.stop(self.p, signal.SIGTERM, 5.0)
        self.t.join(2)
        self.log.close()


# --------------------------------------------------------------------------
# The servers


class Server:
    label = "?"
    proto = "?"

    def __init__(self, ctx):
        self.ctx = ctx
        self.proc = None
        self.port = None
        self._log = None
        self.log_path = None

    def alive(self):
        if self.proc.poll() is not None:
            raise ScenarioError("%s died (exit %r):\n    %s"
                                % (self.label, self.proc.returncode, tail(self.log_path)))

    def cpu_s(self):
        return proc_cpu_s(self.proc.pid)

    def rss_kib(self):
        return proc_rss_kib(self.proc.pid)

    def _wait_ready(self, pattern, timeout_s=10.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log_path.read_bytes())
            if m:
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        return None

    def stop(self):
        if self.proc is None:
            return None
        rc = self.ctx.procs.stop(self.proc, signal.SIGTERM, 15.0)
        if self._log is not None:
            self._log.close()
            self._log = None
        return rc

    def port_for(self, i):
        """The port client process i connects to."""
        return self.port


class Bulwark(Server):
    label = "bulwarkd rooms"
    proto = "rooms"
    name = "bulwarkd"  # its directory under the run's
    extra = ()         # more options (a node of a cluster: --bus ...)
    env = None

    def start(self):
        d = self.ctx.run_tmp / self.name
        (d / "data").mkdir(parents=True)
        self.log_path = d / "bulwarkd.log"
        self._log = open(self.log_path, "wb")
        max_members = max(1000, self.ctx.members + 4 * self.ctx.senders + 100)
        argv = [self.ctx.bulwarkd, "--data-dir", d / "data", "--listen", HOST, "--port", "0",
                "--no-console", "--rooms-listen", HOST, "--rooms-port", "0",
                "--rooms-rate", "0", "--rooms-queue", str(self.ctx.rooms_queue),
                "--rooms-max-members", str(max_members),
                "--rooms-max-conns", str(min(15000, self.ctx.members + 4 * self.ctx.senders + 200)),
                "--rooms-max-conns-per-addr", "15000",
                "--shutdown-grace", "2", "--metrics-listen", HOST + ":0", *self.extra]
        self.proc = self.ctx.procs.spawn(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=d,
                                         env=self.env)
        m = self._wait_ready(rb"rooms listening on 127\.0\.0\.1:(\d+)")
        if not m:
            self.stop()
            raise ScenarioError("bulwarkd did not report `rooms listening on` within 10 s "
                                "(exit %r):\n    %s" % (self.proc.returncode, tail(self.log_path)))
        self.port = int(m.group(1))
        m = self._wait_ready(rb"metrics listening on 127\.0\.0\.1:(\d+)")
        self.metrics_port = int(m.group(1)) if m else None
        say("bulwarkd %s: rooms on %s:%d, pid %d", self.ctx.bulwarkd, HOST, self.port,
            self.proc.pid)
        return self

    def stat(self, name):
        """One figure from the metrics endpoint (0 if it cannot be read)."""
        if self.metrics_port is None:
            return 0
        try:
            with urllib.request.urlopen("http://%s:%d/metrics" % (HOST, self.metrics_port),
                                        timeout=10) as r:
                for line in r.read().decode().splitlines():
                    # every sample carries the node's label
                    if line.split("{")[0].split(" ")[0] == "bulwark_%s" % name:
                        return int(line.split()[-1])
        except OSError:
            pass
        return 0

    def stop_checked(self):
        rc = self.stop()
        if rc not in (0, None):
            raise ScenarioError("bulwarkd exited %r on SIGTERM:\n    %s" % (rc, tail(self.log_path)))

    def notes(self):
        """What the server logged about cut-off members (not reading)."""
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return []
        out = []
        n = text.count("output over the connection's cap")
        if n:
            out.append("bulwarkd cut off %d connection(s): output over the connection's cap" % n)
        for lvl in ("warn ", "error"):
            k = len(re.findall(r"^\S+ %s" % lvl, text, re.M))
            if k:
                out.append("bulwarkd logged %d %s line(s), e.g. %s" % (
                    k, lvl.strip(), re.search(r"^\S+ %s.*$" % lvl, text, re.M).group(0)[:160]))
        return out


class BulwarkTls(Bulwark):
    """The same bulwarkd, its members and senders on --rooms-tls-port:
    every line through TLS 1.3 (chatload --tls)."""
    label = "bulwarkd rooms over TLS"
    name = "bulwarkd-tls"
    # every member, sender and wrong-password try comes from 127.0.0.1:
    # the handshake budget (which would close most of them) is off, as
    # --rooms-rate is
    extra = ("--rooms-tls-port", "0", "--tls-handshakes", "0",
             "--tls-handshakes-per-addr", "0")
    tls = True

    def start(self):
        super().start()
        m = self._wait_ready(rb"rooms listening on tls://127\.0\.0\.1:(\d+)")
        if not m:
            self.stop()
            raise ScenarioError("bulwarkd did not report its rooms TLS port:\n    %s"
                                % tail(self.log_path))
        self.port = int(m.group(1))
        return self


class BulwarkCluster(Server):
    """N bulwarkd nodes sharing one room over Redis (--bus): members and
    senders spread over them, CPU and RSS summed over the nodes and Redis."""
    label = "bulwarkd rooms over Redis"
    proto = "rooms"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.label = "bulwarkd rooms, %d nodes over Redis" % ctx.cluster
        self.nodes = []
        self.redis = None

    def start(self):
        sys.path.insert(0, str(REPO / "tests" / "integration"))
        import redisserver

        self.redis = redisserver.RedisServer(parent=str(self.ctx.run_tmp)).start()
        env = {**os.environ, **self.redis.env()}
        for i in range(self.ctx.cluster):
            node = Bulwark(self.ctx)
            node.name = "node%d" % (i + 1)
            node.extra = ("--bus", self.redis.url(), "--node-name", node.name)
            node.env = env
            self.nodes.append(node.start())
        self.port = self.nodes[0].port
        self.proc = self.nodes[0].proc
        self.log_path = self.nodes[0].log_path
        say("%s: rooms on ports %s, Redis on %d", self.label,
            ", ".join(str(n.port) for n in self.nodes), self.redis.port)
        return self

    def port_for(self, i):
        return self.nodes[i % len(self.nodes)].port

    def alive(self):
        for n in self.nodes:
            n.alive()

    def cpu_s(self):
        return sum(n.cpu_s() for n in self.nodes) + proc_cpu_s(self.redis.proc.pid)

    def rss_kib(self):
        return sum(n.rss_kib() for n in self.nodes) + proc_rss_kib(self.redis.proc.pid)

    def stat(self, name):
        return sum(n.stat(name) for n in self.nodes)

    def stop(self):
        rc = None
        for n in self.nodes:
            r = n.stop()
            rc = r if r not in (0, None) else rc
        if self.redis is not None:
            self.redis.destroy()
            self.redis = None
        return rc

    def stop_checked(self):
        rc = self.stop()
        if rc not in (0, None):
            raise ScenarioError("a node exited %r on SIGTERM" % rc)

    def notes(self):
        return [x for n in self.nodes for x in n.notes()]


class Ngircd(Server):
    label = "ngircd"
    proto = "irc"

    def start(self):
        d = self.ctx.run_tmp / "ngircd"
        d.mkdir(parents=True)
        os.chmod(d, 0o755)
        self.log_path = d / "ngircd.log"
        for _attempt in range(3):
            self.port = free_port()
            conf = d / "ngircd.conf"
            conf.write_text("\n".join([
                "[Global]",
                "\tName = bench.irc.local",
                "\tInfo = bulwark rooms benchmark reference",
                "\tAdminInfo1 = bench", "\tAdminInfo2 = bench", "\tAdminEMail = bench@localhost",
                "\tListen = %s" % HOST,
                "\tPorts = %d" % self.port,
                "\tMotdPhrase = bench",
                "[Limits]",
                "\tMaxConnections = 0",
                "\tMaxConnectionsIP = 0",
                "\tMaxJoins = 0",
                "\tMaxNickLength = 30",
                "\tMaxPenaltyTime = 0",
                "\tPingTimeout = 3600",
                "\tPongTimeout = 3600",
                "[Options]",
                "\tDNS = no",
                "\tIdent = no",
                "\tPAM = no",
                "[Operator]",
                "\tName = %s" % OPER[0],
                "\tPassword = %s" % OPER[1],
                ""]))
            os.chmod(conf, 0o644)
            self._log = open(self.log_path, "ab")
            self.proc = self.ctx.procs.spawn([self.ctx.ngircd, "-n", "-f", conf],
                                             stdout=self._log, stderr=subprocess.STDOUT, cwd=d)
            m = self._wait_ready(rb"Now listening on \[127\.0\.0\.1\]:%d" % self.port)
            if m and self.proc.poll() is None:
                say("ngircd %s: %s:%d, pid %d", self.ctx.ngircd, HOST, self.port, self.proc.pid)
                return self
            self.stop()
        raise ScenarioError("ngircd did not start:\n    %s" % tail(self.log_path))

    def stop_checked(self):
        self.stop()  # ngircd's exit status on SIGTERM is not ours to judge

    def notes(self):
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return []
        out = []
        for what in ("Write buffer space exhausted", "Receive buffer space exhausted",
                     "Request too long", "Ping timeout", "Throttling"):
            n = text.count(what)
            if n:
                out.append("ngircd logged %r %d time(s)" % (what, n))
        return out


# --------------------------------------------------------------------------
# Histograms


def hist_edges(base_us, per_oct, nb):
    """(low, high) in µs of each bucket: 0 is [0, base), b >= 1 is
    [base*2^((b-1)/per_oct), base*2^(b/per_oct)), the last open-ended."""
    edges = [(0.0, base_us)]
    for b in range(1, nb):
        edges.append((base_us * 2 ** ((b - 1) / per_oct), base_us * 2 ** (b / per_oct)))
    return edges


def quantile_us(hist, edges, q):
    total = sum(hist)
    if total == 0:
        return None
    want = q * total
    acc = 0
    for b, n in enumerate(hist):
        if n and acc + n >= want:
            lo, hi = edges[b]
            return lo + (hi - lo) * (want - acc) / n
        acc += n
    return edges[-1][1]


# --------------------------------------------------------------------------
# One server's run


class Run:
    """The members, then the levels, on one server."""

    def __init__(self, ctx, server):
        self.ctx = ctx
        self.srv = server
        self.members = []
        self.room = None
        self.res = {"server": server.label, "levels": [], "problems": []}

    def member_argv(self, i, count, create):
        a = [self.ctx.chatload, "--mode", "member", "--proto", self.srv.proto, "--host", HOST,
             "--port", self.srv.port_for(i), "--count", count, "--proc", i,
             "--parallel", self.ctx.parallel, "--join-timeout", self.ctx.join_timeout,
             "--max-seconds", self.ctx.deadline + 60]
        if self.srv.proto == "rooms":
            a += ["--password", PASSWORD] + (["--create"] if create else ["--room", self.room])
        if getattr(self.srv, "tls", False):
            a.append("--tls")
        return a

    def join_members(self):
        """All members join, in two waves of member processes: the RSS
        before, between and after gives the raw growth per member and the
        marginal one (second wave only: fixed costs such as the password
        hash's memory on the worker threads are paid in the first)."""
        ctx = self.ctx
        n, procs = ctx.members, ctx.member_procs
        counts = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        counts = [c for c in counts if c > 0]
        waves = [range(0, (len(counts) + 1) // 2), range((len(counts) + 1) // 2, len(counts))]
        self.res["rss0_kib"] = self.srv.rss_kib()
        tmp = ctx.run_tmp / ("clients-" + self.srv.proto)
        tmp.mkdir(exist_ok=True)
        joined = failed = 0
        join_s = 0.0
        rss = [self.res["rss0_kib"]]
        wave_joined = []
        for wave in waves:
            if not wave:
                continue
            t0 = time.monotonic()
            new = []
            for i in wave:
                create = self.srv.proto == "rooms" and i == 0
                m = Child(ctx.procs, self.member_argv(i, counts[i], create),
                          tmp / ("member%d.log" % i), True)
                self.members.append(m)
                new.append(m)
                if create:
                    line = m.expect("room ", 60, "creating the room")
                    self.room = int(line.split()[1])
            got = 0
            for m in new:
                parts = m.expect("joined ", ctx.join_timeout + 30, "joining members").split()
                got += int(parts[1])
                failed += int(parts[3])
            join_s += time.monotonic() - t0
            self.srv.alive()
            joined += got
            wave_joined.append(got)
            time.sleep(1.0)  # the last join notices reach everyone
            rss.append(self.srv.rss_kib())
        if joined == 0:
            raise ScenarioError("no member joined %s" % self.srv.label)
        self.res.update(joined=joined, join_failed=failed, join_s=join_s, rss1_kib=rss[-1],
                        rss_waves_kib=rss, wave_joined=wave_joined)
        self.res["rss_per_member_b"] = (rss[-1] - rss[0]) * 1024.0 / joined
        if len(wave_joined) == 2 and wave_joined[1] > 0:
            self.res["rss_marginal_b"] = (rss[2] - rss[1]) * 1024.0 / wave_joined[1]
        say("%s: %d members joined (%d failed) in %.1f s; RSS %s KiB after each wave",
            self.srv.label, joined, failed, join_s, " -> ".join(str(x) for x in rss))
        # a first report: the join phase's counters restart, the reasons of
        # failed joins, the members' CPU so far
        reasons = []
        self.member_cpu = 0.0
        for m in self.members:
            m.tell("report")
        for m in self.members:
            r = json.loads(m.expect("{", 15, "member report"))
            self.member_cpu += r["cpu_s"]
            for why in r.get("reasons", []):
                if why not in reasons:
                    reasons.append(why)
        if failed:
            self.res["problems"].append("%d of %d members could not join: %s"
                                        % (failed, n, "; ".join(reasons[:3])))

    def stats(self):
        """(deliveries since the last report, dropped, still joined) over all members."""
        for m in self.members:
            m.tell("stat")
        d = dr = live = 0
        for m in self.members:
            parts = m.expect("stat ", 10, "member stat").split()
            d += int(parts[1])
            dr += int(parts[2])
            live += int(parts[3])
        return d, dr, live

    def level(self, li, rate):
        ctx = self.ctx
        _, dropped0, live0 = self.stats()
        stamp = {}

        def on_sender_line(line):
            if line.startswith("sending "):
                stamp["cpu0"] = self.srv.cpu_s()
                stamp["mono0"] = time.monotonic_ns()

        argv = [ctx.chatload, "--mode", "sender", "--proto", self.srv.proto, "--host", HOST,
                "--port", self.srv.port_for(li), "--count", ctx.senders, "--rate", rate,
                "--duration", ctx.seconds, "--sid-base", 1000 * (li + 1), "--proc", li,
                "--parallel", ctx.senders, "--join-timeout", 60,
                "--drain-timeout", ctx.drain_timeout,
                "--max-seconds", 60 + ctx.seconds + ctx.drain_timeout + 30]
        if getattr(self.srv, "tls", False):
            argv.append("--tls")
        if self.srv.proto == "rooms":
            argv += ["--room", self.room, "--password", PASSWORD]
        elif ctx.irc_oper:
            argv += ["--oper", "%s:%s" % OPER]
        tmp = ctx.run_tmp / ("clients-" + self.srv.proto)
        sender = Child(ctx.procs, argv, tmp / ("sender%d.log" % li), False, on_sender_line)
        try:
            sline = sender.expect("{", 60 + ctx.seconds + ctx.drain_timeout + 40, "senders")
        finally:
            sender.close(ctx.procs)
        s = json.loads(sline)
        if s["join_failed"] or "cpu0" not in stamp:
            raise ScenarioError("the %d senders could not join %s: %s"
                                % (ctx.senders, self.srv.label, "; ".join(s["reasons"][:3])))
        expected = s["sent"] * live0
        # wait until the deliveries stop (or all arrived)
        deadline = time.monotonic() + ctx.drain_timeout
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            d, _, _ = self.stats()
            if d >= expected:
                break
            if d != last:
                last, last_change = d, time.monotonic()
            elif time.monotonic() - last_change > 1.5:
                break
            time.sleep(0.2)
        cpu1 = self.srv.cpu_s()
        mono1 = time.monotonic_ns()
        self.srv.alive()
        for m in self.members:
            m.tell("report")
        reps = [json.loads(m.expect("{", 15, "member report")) for m in self.members]
        return self.summarize(rate, s, reps, expected, live0, dropped0,
                              cpu1 - stamp["cpu0"], (mono1 - stamp["mono0"]) / 1e9)

    def summarize(self, rate, s, reps, expected, live0, dropped0, cpu, wall):
        hist = None
        slots = {}
        delivered = order = dups = missing = dropped = 0
        lat_max = 0.0
        reasons = []
        for r in reps:
            h = r["hist"]
            hist = h if hist is None else [a + b for a, b in zip(hist, h)]
            delivered += r["deliveries"]
            order += r["order_violations"]
            dups += r["duplicates"]
            missing += r["missing"]
            dropped += r["dropped"]
            lat_max = max(lat_max, r["lat_max_us"])
            for k, n in enumerate(r["tl"]):
                slots[r["tl_base"] + k] = slots.get(r["tl_base"] + k, 0) + n
            for why in r["reasons"]:
                if why not in reasons:
                    reasons.append(why)
        r0 = reps[0]
        edges = hist_edges(r0["hist_base_us"], r0["hist_per_octave"], len(hist))
        slot_ns = r0["tl_slot_ns"]
        # deliveries received while the load ran: whole slots inside it
        first = -(-s["t_start"] // slot_ns)
        end = s["t_end"] // slot_ns
        in_window = sum(n for k, n in slots.items() if first <= k < end)
        window_s = max(end - first, 1) * slot_ns / 1e9
        last_slot = max(slots) if slots else None
        tail_s = ((last_slot + 1) * slot_ns - s["t_end"]) / 1e9 if last_slot is not None else None
        per_sender_sent = s["per_sender"]
        per_sender_got = {}
        for r in reps:
            for sid, n in r["per_sender"].items():
                per_sender_got[sid] = per_sender_got.get(sid, 0) + n
        short = {sid: live0 * n - per_sender_got.get(sid, 0) for sid, n in per_sender_sent.items()
                 if live0 * n > per_sender_got.get(sid, 0)}
        lv = {
            "rate": rate, "members": live0, "sent": s["sent"], "skipped": s["skipped"],
            "sender_lag_max_ms": s["lag_max_ms"], "senders_dropped": s["dropped"],
            "sender_reasons": s["reasons"], "oper_failed": s.get("oper_failed", 0),
            "senders_not_drained": s["not_drained"],
            "drain_s": (s["t_drained"] - s["t_end"]) / 1e9 if s["t_drained"] else None,
            "expected": expected, "delivered": delivered, "in_window": in_window,
            "window_s": window_s, "rate_in_window": in_window / window_s,
            "offered_deliveries": rate * live0,
            "p50_us": quantile_us(hist, edges, 0.50), "p99_us": quantile_us(hist, edges, 0.99),
            "max_us": lat_max, "tail_s": tail_s,
            "order_violations": order, "duplicates": dups, "missing_gaps": missing,
            "members_dropped": dropped - dropped0, "member_reasons": reasons,
            "short_senders": len(short),
            "server_cpu_s": cpu, "cpu_wall_s": wall,
            "cpu_per_1000_ms": cpu / delivered * 1e6 if delivered else None,
            "harness_cpu_s": s["cpu_s"] + sum(r["cpu_s"] for r in reps) - self.member_cpu,
            # by member process, in join order (process 0 joined first)
            "proc_p50_us": [quantile_us(r["hist"], edges, 0.5) for r in reps],
            "proc_p99_us": [quantile_us(r["hist"], edges, 0.99) for r in reps],
        }
        self.member_cpu = sum(r["cpu_s"] for r in reps)
        return lv

    def fell_behind(self, lv):
        why = []
        if lv["delivered"] < 0.95 * lv["expected"]:
            why.append("delivered %.1f%% of the expected" % (100.0 * lv["delivered"] / max(lv["expected"], 1)))
        if lv["p99_us"] is not None and lv["p99_us"] > self.ctx.behind_p99_ms * 1000:
            why.append("p99 %.0f ms" % (lv["p99_us"] / 1000))
        if lv["members_dropped"] or lv["senders_dropped"]:
            why.append("%d members and %d senders dropped" % (lv["members_dropped"], lv["senders_dropped"]))
        if lv["rate_in_window"] < 0.8 * lv["offered_deliveries"]:
            why.append("%.0f%% of the offered deliveries/s" % (100.0 * lv["rate_in_window"] / lv["offered_deliveries"]))
        return why

    def run(self):
        ctx = self.ctx
        self.srv.start()
        try:
            self.join_members()
            for li, rate in enumerate(ctx.levels):
                if self.members_live() == 0:
                    self.res["problems"].append("no member left before %d msg/s" % rate)
                    break
                say("%s: %d msg/s from %d senders for %g s", self.srv.label, rate, ctx.senders,
                    ctx.seconds)
                lv = self.level(li, rate)
                self.res["levels"].append(lv)
                say("%s: %d msg/s -> %.0f deliveries/s (offered %.0f), %d of %d delivered, "
                    "p50 %s p99 %s, server CPU %.2f s, %d members dropped, %d out of order",
                    self.srv.label, rate, lv["rate_in_window"], lv["offered_deliveries"],
                    lv["delivered"], lv["expected"], fmt_ms(lv["p50_us"]), fmt_ms(lv["p99_us"]),
                    lv["server_cpu_s"], lv["members_dropped"], lv["order_violations"])
                why = self.fell_behind(lv)
                if why:
                    lv["behind"] = why
                    if li + 1 < len(ctx.levels):
                        self.res["stopped_at"] = rate
                        say("%s fell behind at %d msg/s (%s): not raising the load further",
                            self.srv.label, rate, ", ".join(why))
                        break
            if self.srv.proto == "rooms" and ctx.burst > 0 and self.members_live() > 0:
                self.res["burst"] = self.join_burst()
            self.res["rss_end_kib"] = self.srv.rss_kib()
        finally:
            for m in self.members:
                m.tell("quit")
            for m in self.members:
                m.close(ctx.procs)
            try:
                self.res["notes"] = self.srv.notes()
            finally:
                self.srv.stop_checked()
        return self.res

    def members_live(self):
        return self.stats()[2]

    def join_burst(self):
        """The first level again while ctx.burst connections try wrong
        passwords at once: every try is a scrypt on the worker pool, none
        on the loop thread, so the room's latency should hardly move."""
        ctx = self.ctx
        rate = ctx.levels[0]
        argv = [ctx.chatload, "--mode", "member", "--proto", "rooms", "--host", HOST,
                "--port", self.srv.port, "--count", ctx.burst, "--proc", 99,
                "--parallel", ctx.burst, "--join-timeout", ctx.seconds + 30,
                "--max-seconds", ctx.seconds + 90, "--room", self.room,
                "--password", "not-" + PASSWORD]
        if getattr(self.srv, "tls", False):
            argv.append("--tls")
        say("%s: %d msg/s again while %d connections try wrong passwords", self.srv.label,
            rate, ctx.burst)
        hashes0 = self.srv.stat("rooms_wrong_attempts_total")
        burst = Child(ctx.procs, argv, ctx.run_tmp / "clients-rooms" / "burst.log", True)
        try:
            lv = self.level(len(ctx.levels), rate)
        finally:
            burst.tell("quit")
            burst.close(ctx.procs)
        lv["burst"] = ctx.burst
        lv["wrong_tries"] = self.srv.stat("rooms_wrong_attempts_total") - hashes0
        return lv


# --------------------------------------------------------------------------
# The table


def fmt_ms(us):
    if us is None:
        return "-"
    if us >= 100000:
        return "%.0f ms" % (us / 1000)
    if us >= 10000:
        return "%.1f ms" % (us / 1000)
    return "%.2f ms" % (us / 1000)


def fmt_rate(x):
    if x is None:
        return "-"
    return "{:,.0f}/s".format(x)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return "%.2fx" % (a / b)


def sustained(res, p99_ms):
    """The largest deliveries/s at a level with p99 under p99_ms, nothing
    dropped, and (nearly) everything delivered."""
    best = None
    for lv in res.get("levels", []):
        ok = (lv["p99_us"] is not None and lv["p99_us"] < p99_ms * 1000
              and not lv["members_dropped"] and not lv["senders_dropped"]
              and lv["delivered"] >= 0.999 * lv["expected"])
        if ok and (best is None or lv["rate_in_window"] > best["rate_in_window"]):
            best = lv
    return best


def combine(runs):
    """One server's runs as one result: for each level the run with the
    median p99 (its figures all from that run), with every run's p99, p50
    and deliveries/s beside it; the rest from the first run."""
    runs = [r for r in runs if r]
    if not runs:
        return None
    if len(runs) == 1:
        return runs[0]
    out = dict(runs[0])
    levels = []
    for rate in [lv["rate"] for lv in runs[0].get("levels", [])]:
        got = [lv for r in runs for lv in r.get("levels", []) if lv["rate"] == rate]
        timed = sorted((lv for lv in got if lv["p99_us"] is not None), key=lambda lv: lv["p99_us"])
        pick = dict(timed[(len(timed) - 1) // 2] if timed else got[0])
        pick["p99_runs"] = [lv["p99_us"] for lv in got]
        pick["p50_runs"] = [lv["p50_us"] for lv in got]
        pick["rate_runs"] = [lv["rate_in_window"] for lv in got]
        levels.append(pick)
    out["levels"] = levels
    bursts = [r["burst"] for r in runs if r.get("burst")]
    if bursts:
        bursts.sort(key=lambda b: b["p99_us"] if b["p99_us"] is not None else float("inf"))
        out["burst"] = bursts[(len(bursts) - 1) // 2]
    return out


def build_rows(ctx, ours, ref):
    rows = []

    def row(figure, a="-", b="-", r="-", target="-"):
        rows.append((figure, a, b, r, target))

    def both(key):
        return (ours.get(key) if ours else None), (ref.get(key) if ref else None)

    a, b = both("joined")
    ja, jb = both("join_s")
    row("members joined (%d in %d procs)" % (ctx.members, ctx.member_procs),
        "%d in %.1f s" % (a, ja) if a is not None else "-",
        "%d in %.1f s" % (b, jb) if b is not None else "-", "-", "(info: scrypt per join)")
    a, b = both("rss_marginal_b")
    row("server memory per member (2nd half of joins)",
        "%.1f KiB" % (a / 1024) if a is not None else "-",
        "%.1f KiB" % (b / 1024) if b is not None else "-", ratio(a, b), "(report)")
    a, b = both("rss_per_member_b")
    row("  RSS growth / members, all joins",
        "%.1f KiB" % (a / 1024) if a is not None else "-",
        "%.1f KiB" % (b / 1024) if b is not None else "-", ratio(a, b))
    wa, wb = both("rss_waves_kib")

    def waves(w):
        return " -> ".join("%.1f" % (x / 1024) for x in w) + " MiB" if w else "-"
    row("  server RSS: start, 1st half, all", waves(wa), waves(wb))
    la = {lv["rate"]: lv for lv in (ours or {}).get("levels", [])}
    lb = {lv["rate"]: lv for lv in (ref or {}).get("levels", [])}
    for rate in ctx.levels:
        x, y = la.get(rate), lb.get(rate)
        if x is None and y is None:
            continue
        members = (x or y)["members"]
        row("%s msg/s x %d members offered" % ("{:,}".format(rate), members),
            fmt_rate(x["offered_deliveries"]) if x else "not run",
            fmt_rate(y["offered_deliveries"]) if y else ("not run" if ref else "skipped"))
        dv = ratio(x and x["rate_in_window"], y and y["rate_in_window"])
        verdict = "-"
        if x and y and ctx.cluster:
            verdict = "(report)"
        elif x and y and ctx.tls:
            # the target is the other way round: TLS (y) at least half of plain (x)
            verdict = "TLS >= 0.5x plain  %s" % (
                "met" if y["rate_in_window"] >= 0.5 * x["rate_in_window"] else "MISSED")
        elif x and y:
            verdict = ">= %s  %s" % (ctx.ref_name, "met" if x["rate_in_window"] >= 0.99 * y["rate_in_window"] else "MISSED")
        row("  deliveries/s while sending", fmt_rate(x and x["rate_in_window"]),
            fmt_rate(y and y["rate_in_window"]), dv, verdict)
        verdict = "-"
        if ctx.cluster or ctx.tls:
            verdict = "(report)"
        elif x and y and x["p99_us"] is not None and y["p99_us"] is not None:
            verdict = "p99 <= %s  %s" % (ctx.ref_name, "met" if x["p99_us"] <= y["p99_us"] else "MISSED")
        row("  latency p50 / p99",
            "%s / %s" % (fmt_ms(x["p50_us"]), fmt_ms(x["p99_us"])) if x else "-",
            "%s / %s" % (fmt_ms(y["p50_us"]), fmt_ms(y["p99_us"])) if y else "-",
            ratio(x and x["p99_us"], y and y["p99_us"]), verdict)
        if (x and x.get("p99_runs")) or (y and y.get("p99_runs")):
            def runs(lv):
                if not lv or not lv.get("p99_runs"):
                    return "-"
                return " ".join(fmt_ms(v) for v in sorted(lv["p99_runs"], key=lambda v: v or 0))
            row("  p99 of each run, sorted", runs(x), runs(y))
        row("  latency max", fmt_ms(x and x["max_us"]), fmt_ms(y and y["max_us"]))
        row("  server CPU per 1,000 deliveries",
            "%.3f ms" % x["cpu_per_1000_ms"] if x and x["cpu_per_1000_ms"] else "-",
            "%.3f ms" % y["cpu_per_1000_ms"] if y and y["cpu_per_1000_ms"] else "-",
            ratio(x and x["cpu_per_1000_ms"], y and y["cpu_per_1000_ms"]), "(report)")

        def integrity(lv):
            if not lv:
                return "-"
            return "%.2f%%, %d+%d dropped, %d disorder" % (
                100.0 * lv["delivered"] / max(lv["expected"], 1), lv["members_dropped"],
                lv["senders_dropped"], lv["order_violations"] + lv["duplicates"])
        row("  delivered, members+senders dropped, order", integrity(x), integrity(y), "-",
            "100%, 0, 0")
    bu = (ours or {}).get("burst")
    first = la.get(ctx.levels[0])
    if bu and first:
        row("%s msg/s again, %d wrong passwords hashing" % ("{:,}".format(ctx.levels[0]),
                                                           bu["burst"]),
            "p50 %s / p99 %s" % (fmt_ms(bu["p50_us"]), fmt_ms(bu["p99_us"])),
            "without: %s / %s" % (fmt_ms(first["p50_us"]), fmt_ms(first["p99_us"])),
            ratio(bu["p99_us"], first["p99_us"]), "(report: hashing off the loop)")
        row("  wrong tries answered meanwhile, deliveries/s", "%d, %s" % (
            bu["wrong_tries"], fmt_rate(bu["rate_in_window"])))
    best_a = sustained(ours or {}, ctx.p99_ms)
    best_b = sustained(ref or {}, ctx.p99_ms)
    row("max deliveries/s with p99 < %g ms" % ctx.p99_ms,
        fmt_rate(best_a["rate_in_window"]) if best_a else "none",
        fmt_rate(best_b["rate_in_window"]) if best_b else ("none" if ref else "skipped"),
        ratio(best_a and best_a["rate_in_window"], best_b and best_b["rate_in_window"]),
        "(report)" if ctx.cluster else ">= %s  %s" % (ctx.ref_name, "met" if best_a and (not best_b or best_a["rate_in_window"]
                                                  >= 0.99 * best_b["rate_in_window"]) else "MISSED")
        if ref else "-")
    return rows


def print_table(rows, ctx):
    head = ("figure", "ours (1 node)" if ctx.cluster else "ours",
            "reference (%s)" % ctx.ref_name, "ratio", "target")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    print(" | ".join("%-*s" % (widths[i], head[i]) for i in range(5)).rstrip())
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join("%-*s" % (widths[i], r[i]) for i in range(5)).rstrip())


def print_details(name, res):
    if not res:
        return
    print("%s:" % name)
    for lv in res.get("levels", []):
        print("  %5d msg/s: sent %d (skipped %d, sender lag max %.0f ms), delivered %d of %d, "
              "in-window %.0f/s over %.2f s, last delivery %.2f s after the last send, "
              "server CPU %.2f s in %.1f s, harness CPU %.1f s%s%s" % (
                  lv["rate"], lv["sent"], lv["skipped"], lv["sender_lag_max_ms"], lv["delivered"],
                  lv["expected"], lv["rate_in_window"], lv["window_s"],
                  lv["tail_s"] if lv["tail_s"] is not None else float("nan"),
                  lv["server_cpu_s"], lv["cpu_wall_s"], lv["harness_cpu_s"],
                  ", oper/+F refused %d" % lv["oper_failed"] if lv["oper_failed"] else "",
                  "; fell behind: " + ", ".join(lv["behind"]) if lv.get("behind") else ""))
        print("         p50 / p99 by member process in join order: %s" % "  ".join(
            "%s/%s" % (fmt_ms(a).replace(" ms", ""), fmt_ms(b).replace(" ms", ""))
            for a, b in zip(lv["proc_p50_us"], lv["proc_p99_us"])))
        for why in lv["member_reasons"][:3] + lv["sender_reasons"][:3]:
            print("         dropped: %s" % why)
    for p in res.get("problems", []) + res.get("notes", []):
        print("  note: %s" % p)


def host_line(ctx):
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "%d cores (%s), Linux %s; load average %.2f at start, %.2f at end" % (
        os.cpu_count() or 0, model, platform.release(), ctx.load_start, os.getloadavg()[0])


# --------------------------------------------------------------------------
# Setup


def find_bulwarkd(ctx):
    exe = ctx.bin_dir / "bulwarkd"
    if exe.is_file() and os.access(exe, os.X_OK):
        return exe
    if ctx.bin_dir != REPO / "build" / "release":
        raise ScenarioError("%s is missing" % exe)
    say("building the release preset (build/release/bulwarkd is missing)")
    log = ctx.tmp / "build.log"
    with open(log, "wb") as f:
        rc = subprocess.call("cmake --preset release && cmake --build build/release",
                             shell=True, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
    if rc != 0 or not exe.is_file():
        raise ScenarioError("the release build failed:\n    %s" % tail(log, 30))
    return exe


def find_ngircd(ctx):
    path = shutil.which("ngircd") or ("/usr/sbin/ngircd" if os.access("/usr/sbin/ngircd", os.X_OK) else None)
    if path:
        return path
    say("ngircd is missing: installing it with apt-get (DEBIAN_FRONTEND=noninteractive)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log = ctx.tmp / "apt.log"
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "ngircd"]
    with open(log, "wb") as f:
        rc = subprocess.call(cmd, env=env, stdout=f, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, timeout=300)
        if rc != 0:
            say("apt-get install failed; running apt-get update and trying once more")
            subprocess.call(["apt-get", "update"], env=env, stdout=f, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, timeout=300)
            subprocess.call(cmd, env=env, stdout=f, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, timeout=300)
    path = shutil.which("ngircd") or ("/usr/sbin/ngircd" if os.access("/usr/sbin/ngircd", os.X_OK) else None)
    if not path:
        raise ScenarioError("ngircd could not be installed:\n    %s" % tail(log))
    return path


def build_chatload(ctx):
    exe = ctx.tmp / "chatload"
    r = subprocess.run(["cc", "-O2", "-o", str(exe), str(BENCH_DIR / "chatload.c"), "-lm",
                        "-lssl", "-lcrypto"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    if r.returncode != 0:
        raise ScenarioError("compiling bench/chatload.c failed:\n%s"
                            % r.stderr.decode("utf-8", "replace")[-2000:])
    return exe


def on_signal(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def main():
    ap = argparse.ArgumentParser(description="Group chat benchmark: bulwarkd rooms vs ngircd")
    ap.add_argument("--quick", action="store_true",
                    help="tiny run for CI: 50 members in 2 procs, one level of 200 msg/s, 1.5 s")
    ap.add_argument("--members", type=int, help="members in the room (default 500; quick 50)")
    ap.add_argument("--member-procs", type=int, help="member processes (default 10; quick 2)")
    ap.add_argument("--senders", type=int, default=10, help="senders (default 10)")
    ap.add_argument("--levels", help="offered messages/s from all senders together, comma "
                    "separated (default 200,1000,2000,4000; quick 200)")
    ap.add_argument("--seconds", type=float, help="sending time per level (default 5; quick 1.5)")
    ap.add_argument("--repeats", type=int, help="runs of each server, taking turns to go first "
                    "(default 3; quick 1)")
    ap.add_argument("--p99-ms", type=float, default=100.0,
                    help="p99 bound of the 'max deliveries/s' figure (default 100)")
    ap.add_argument("--behind-p99-ms", type=float, default=1000.0,
                    help="a level with a p99 above this is 'fell behind': no higher level "
                    "for that server (default 1000)")
    ap.add_argument("--parallel", type=int, default=8, help="joins in flight per member process")
    ap.add_argument("--join-timeout", type=float, default=None,
                    help="seconds for all members to join (default 60 + 0.25 per member)")
    ap.add_argument("--drain-timeout", type=float, default=20.0,
                    help="seconds to wait for deliveries after the last send (default 20)")
    ap.add_argument("--rooms-queue", type=int, default=262144,
                    help="bulwarkd --rooms-queue (default 262144, the server's own)")
    ap.add_argument("--no-irc-oper", dest="irc_oper", action="store_false",
                    help="ngircd senders stay plain users (flood protection on)")
    ap.add_argument("--no-ngircd", action="store_true", help="skip the ngircd reference")
    ap.add_argument("--cluster", type=int, default=0, metavar="N",
                    help="the reference is the same room over N bulwarkd nodes and Redis "
                    "(--bus), members and senders spread over them, instead of ngircd")
    ap.add_argument("--tls", action="store_true",
                    help="the reference is the same bulwarkd with every member and sender "
                    "on its rooms TLS port (--rooms-tls-port), instead of ngircd")
    ap.add_argument("--burst", type=int, default=None,
                    help="connections trying wrong passwords at once during a repeat of "
                    "the first level (ours only; default 200, quick 0)")
    ap.add_argument("--only-ngircd", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bin-dir", type=Path, default=REPO / "build" / "release",
                    help="where bulwarkd is (default build/release, built if missing)")
    ap.add_argument("--tmp", type=Path, help="parent of the temp dir (default $TMPDIR or /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--deadline", type=int, default=None, help="overall limit in seconds")
    ctx = ap.parse_args()
    ctx.bin_dir = ctx.bin_dir.resolve()  # the server runs in its own directory
    q = ctx.quick
    ctx.members = ctx.members or (50 if q else 500)
    ctx.member_procs = ctx.member_procs or (2 if q else 10)
    ctx.member_procs = max(1, min(ctx.member_procs, ctx.members))
    ctx.levels = [int(x) for x in (ctx.levels or ("200" if q else "200,1000,2000,4000")).split(",") if x]
    ctx.seconds = ctx.seconds or (1.5 if q else 5.0)
    ctx.repeats = ctx.repeats or (1 if q else 3)
    ctx.burst = ctx.burst if ctx.burst is not None else (0 if q else 200)
    if ctx.join_timeout is None:
        ctx.join_timeout = 60 + 0.25 * ctx.members
    if ctx.deadline is None:
        ctx.deadline = 170 if q else int(2 * ctx.repeats * (
            ctx.join_timeout + 60 + len(ctx.levels) * (ctx.seconds + ctx.drain_timeout + 30)))
    if (ctx.members < 1 or ctx.senders < 1 or not ctx.levels or min(ctx.levels) < 1
            or ctx.seconds <= 0 or ctx.members + ctx.senders > 15000 or ctx.repeats < 1):
        ap.error("bad sizes")
    if ctx.members // ctx.member_procs + 64 > 20000:
        ap.error("too many members per process for the open-file limit")
    if ctx.cluster:
        if ctx.cluster < 2 or ctx.cluster > 8:
            ap.error("--cluster takes 2 to 8 nodes")
        ctx.no_ngircd = True  # the reference is the cluster
    if ctx.tls:
        if ctx.cluster:
            ap.error("--tls or --cluster, not both")
        ctx.no_ngircd = True  # the reference is the same server over TLS
    ctx.ref_name = (("%d nodes" % ctx.cluster) if ctx.cluster else
                    "TLS" if ctx.tls else "ngircd")
    ctx.procs = Procs()
    ctx.load_start = os.getloadavg()[0]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):
        signal.signal(sig, on_signal)
    signal.alarm(ctx.deadline)
    started = time.monotonic()
    parent = ctx.tmp or Path(os.environ.get("TMPDIR", "/tmp"))
    ctx.tmp = Path(tempfile.mkdtemp(prefix="bulwark-roomsbench.", dir=str(parent)))
    errors = []
    results = {}
    status = 0
    try:
        try:
            ctx.chatload = build_chatload(ctx)
            if not ctx.only_ngircd:
                ctx.bulwarkd = find_bulwarkd(ctx)
            if not ctx.no_ngircd:
                ctx.ngircd = find_ngircd(ctx)
        except ScenarioError as e:
            errors.append("setup: %s" % e)
        else:
            plan = []
            if not ctx.only_ngircd:
                plan.append(("ours", Bulwark))
            if not ctx.no_ngircd:
                plan.append(("ngircd", Ngircd))
            if ctx.cluster:
                plan.append(("ref", BulwarkCluster))
            if ctx.tls:
                plan.append(("ref", BulwarkTls))
            every = {key: [] for key, _ in plan}
            for rep in range(ctx.repeats):
                # each run in a directory of its own
                ctx.run_tmp = ctx.tmp / ("run%d" % (rep + 1))
                ctx.run_tmp.mkdir()
                # the servers take turns to go first
                for key, cls in (plan if rep % 2 == 0 else plan[::-1]):
                    t0 = time.monotonic()
                    try:
                        every[key].append(Run(ctx, cls(ctx)).run())
                    except ScenarioError as e:
                        errors.append("%s: %s" % (cls.label, e))
                        say("FAILED %s: %s", cls.label, e)
                    except Exception:
                        errors.append("%s: %s" % (cls.label, traceback.format_exc().strip()))
                        say("FAILED %s:\n%s", cls.label, traceback.format_exc())
                    say("%s run %d of %d took %.1f s", cls.label, rep + 1, ctx.repeats,
                        time.monotonic() - t0)
            for key in every:
                if every[key]:
                    results[key] = combine(every[key])
    except Interrupted as e:
        errors.append("stopped by %s" % ("the %d s deadline" % ctx.deadline
                                         if str(e) == "SIGALRM" else str(e)))
        status = 130
    finally:
        signal.alarm(0)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        ctx.procs.stop_all()

    print()
    print("Bulwark rooms benchmark (%s), %s" % (
        "quick" if q else "%d members in %d procs, %d senders, %g s a level, %d runs each, "
        "figures of the median run by p99"
        % (ctx.members, ctx.member_procs, ctx.senders, ctx.seconds, ctx.repeats),
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    print(host_line(ctx))
    print()
    if results:
        try:
            print_table(build_rows(ctx, results.get("ours"),
                                   results.get("ref") if ctx.cluster or ctx.tls else
                                   None if ctx.no_ngircd else results.get("ngircd")), ctx)
        except Exception:
            errors.append("table: %s" % traceback.format_exc().strip())
        print()
        print_details("bulwarkd rooms", results.get("ours"))
        print_details("ngircd", results.get("ngircd"))
        if ctx.cluster:
            print_details("%d nodes over Redis" % ctx.cluster, results.get("ref"))
        if ctx.tls:
            print_details("bulwarkd rooms over TLS", results.get("ref"))
    print()
    print("Notes: one room (#bench) of N members; %d senders share the offered rate, round robin, "
          "%d-byte texts" % (ctx.senders, 100))
    print("carrying their CLOCK_MONOTONIC send time; deliveries/s counts what members received")
    print("while the senders ran (whole 50 ms slots); latency is send to receipt, histogram of")
    print("20 buckets a doubling (+-2%). CPU is the server's utime+stime from the first send to the last")
    print("delivery. Both servers also deliver each message to the other senders. bulwarkd:")
    print("--rooms-rate 0, --rooms-queue %d. ngircd: MaxPenaltyTime 0, no connection limits, %s."
          % (ctx.rooms_queue, "senders are operators with user mode +F" if ctx.irc_oper
             else "senders are plain users"))
    print("Memory per member: the RSS growth over the second half of the joins, divided by its")
    print("members (the first joins also pay fixed costs, e.g. password-hash memory the allocator")
    print("keeps); the raw growth over all joins is the row below it. The %d client processes"
          % (ctx.member_procs + 1))
    print("share the machine's %d cores with the server (harness CPU per level in the details)."
          % (os.cpu_count() or 0))
    if ctx.json:
        try:
            ctx.json.write_text(json.dumps(results, indent=1, default=str))
        except OSError as e:
            errors.append("writing %s: %s" % (ctx.json, e))
    if errors:
        print()
        print("ERRORS (%d):" % len(errors))
        for e in errors:
            print("  - " + e.replace("\n", "\n    "))
        status = status or 1
    print("total %.1f s%s" % (time.monotonic() - started,
                              ", logs kept in %s" % ctx.tmp if ctx.keep else ""))
    if not ctx.keep:
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
