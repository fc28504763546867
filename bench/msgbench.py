#!/usr/bin/python3
"""The messenger's benchmark: durable sends from many clients (kept-alive,
from Python and from C senders, and one-request-per-connection), a pull of 10,000 waiting messages, a 100 MiB
file message end to end with both sides' peak RSS and the event loop's
latency while it passes (a 602 asked over and over on another connection;
the content is written to and read from disk on the loop thread, so this is
what that costs everyone else), and the server's RSS with 1,000,000
messages queued. Each figure is printed beside its reference from
the same run (SQLite's own insert rate with an fsync per commit). It only
reports; it fails only when a scenario could not run.

Usage: bench/msgbench.py --bin-dir DIR --tmp DIR [--quick]
"""

import argparse
import multiprocessing as mp
import os
import re
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
import bwmsg  # noqa: E402
import bwvault as bw  # noqa: E402

H = "127.0.0.1"


def start_server(bin_dir, data, *args):
    data.mkdir(parents=True, exist_ok=True)
    log = open(data / "bulwarkd.log", "wb")
    p = subprocess.Popen([str(bin_dir / "bulwarkd"), "--data-dir", str(data), "--listen", H,
                          "--port", "0", "--no-console", "--no-rooms", *args], stdout=log, stderr=log)
    for _ in range(500):
        m = re.search(rb"vault listening on [0-9.]+:(\d+)", (data / "bulwarkd.log").read_bytes())
        if m:
            return p, int(m.group(1))
        time.sleep(0.02)
    raise RuntimeError("bulwarkd did not start")


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(30)


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid, key="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def register(port, name, key):
    c = bwmsg.MsgClient(H, port)
    c.register(name, key=key)
    return c.client_id


def sender(port, me, to, seconds, padded, q):
    """Sends 100-byte texts as fast as the replies come; reports the count."""
    body = bwmsg.SEND_PREFIX.pack(to, 3, 100) + os.urandom(100)
    req = bwmsg.pack_request(me, 603, body)
    if padded:
        req = bwmsg.pad_to_unit(req)
    n, end = 0, time.monotonic() + seconds
    s = None
    while time.monotonic() < end:
        if s is None or padded:
            if s is not None:
                s.close()
            s = socket.create_connection((H, port), timeout=30)
        s.sendall(req)
        head = bw.recv_exact(s, 7)
        _, code, size = bw.RESP_HEADER.unpack(head)
        bw.recv_exact(s, size)
        if code != 2103:
            q.put(("error", code))
            return
        n += 1
    if s is not None:
        s.close()
    q.put(("ok", n))


def sends(port, clients, seconds, padded, key):
    to = register(port, "sink-%d-%d" % (padded, os.getpid()), key)
    ids = [register(port, "src-%d-%d-%d" % (padded, i, os.getpid()), key) for i in range(clients)]
    q = mp.Queue()
    procs = [mp.Process(target=sender, args=(port, me, to, seconds, padded, q)) for me in ids]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    res = [q.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    wall = time.monotonic() - t0
    bad = [r for r in res if r[0] != "ok"]
    if bad:
        raise RuntimeError("sends failed: %r" % bad[:3])
    return sum(r[1] for r in res) / seconds, wall, to


def c_sends(bin_dir, port, pid, procs, conns, seconds, key):
    """The same kept-alive 603s from C senders (bench/sessionload.c
    --messages: procs processes of conns threads, a sink per process),
    so that the server, not the Python clients sharing its cores, is what
    is measured; after a one-second warm-up. Meanwhile a Probe measures
    the loop's latency: the journal's checkpoints come several times a
    second at this rate. (rate, server CPU us/msg, p99 ms, (probe p50,
    p99, max ms))."""
    exe = bin_dir / "sessionload"
    if not exe.exists():
        raise RuntimeError("%s is missing (built with the daemon: target sessionload)" % exe)
    base = [str(exe), "--messages", "--port", str(port), "--procs", str(procs),
            "--conns", str(conns)]
    w = subprocess.run(base + ["--seconds", "1"], capture_output=True, text=True, timeout=120)
    if w.returncode != 0:
        raise RuntimeError("sessionload --messages (warm-up) exited %d: %s"
                           % (w.returncode, w.stderr[-300:]))
    me = register(port, "probe-c-%d" % os.getpid(), key)
    r, *lat = Probe(port, me, me).measure(lambda: subprocess.run(
        base + ["--seconds", str(int(seconds)), "--server-pid", str(pid)],
        capture_output=True, text=True, timeout=seconds + 120))
    if r.returncode != 0:
        raise RuntimeError("sessionload --messages exited %d: %s" % (r.returncode, r.stderr[-300:]))
    w = r.stdout.split()
    out = {w[k]: float(w[k + 1]) for k in range(0, len(w) - 1, 2)}
    if out["errors"] > 0:
        raise RuntimeError("sessionload --messages: %d failed sends" % out["errors"])
    return out["rate"], out["server_cpu_us_per_message"], out["p99_ms"], lat


def sqlite_fsync_rate(tmp, seconds=2.0):
    """SQLite's own rate: one 100-byte insert per transaction, each synced
    (WAL, synchronous=FULL), the reference for durable messages."""
    path = tmp / "ref.db"
    con = sqlite3.connect(str(path), isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE m(ID INTEGER PRIMARY KEY AUTOINCREMENT, ToClient BLOB, "
                "FromClient BLOB, Type INTEGER, Content BLOB)")
    row = (os.urandom(16), os.urandom(16), 3, os.urandom(100))
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        con.execute("BEGIN")
        con.execute("INSERT INTO m(ToClient, FromClient, Type, Content) VALUES(?,?,?,?)", row)
        con.execute("COMMIT")
        n += 1
    con.close()
    return n / seconds


def pull_time(port, pid, n, key):
    a = bwmsg.MsgClient(H, port)
    a.register("pull-src-%d" % os.getpid(), key=key)
    b = bwmsg.MsgClient(H, port)
    b.register("pull-dst-%d" % os.getpid(), key=key)
    body = bwmsg.SEND_PREFIX.pack(b.client_id, 3, 100) + os.urandom(100)
    s = a.connect()
    req = bwmsg.pack_request(a.client_id, 603, body)
    for _ in range(n):  # pipelined: the replies are read after
        s.sendall(req)
    for _ in range(n):
        bw.recv_exact(s, 7 + 20)
    c0 = cpu_s(pid)
    t0 = time.monotonic()
    recs = b.pull()
    wall = time.monotonic() - t0
    c1 = cpu_s(pid)
    assert len(recs) == n, len(recs)
    return wall, c1 - c0


def maxrss_tool(tmp):
    exe = tmp / "maxrss"
    if not exe.exists():
        subprocess.run(["cc", "-O2", "-o", str(exe),
                        str(Path(__file__).resolve().parent / "maxrss.c")], check=True)
    return exe


def measured(tmp, cwd, args, env=None):
    """Runs args with its own peak RSS recorded: (seconds, KiB)."""
    out = tmp / "rss.txt"
    t0 = time.monotonic()
    subprocess.run([str(maxrss_tool(tmp)), str(out), *args], cwd=cwd, capture_output=True,
                   check=True, timeout=900, env=env)
    return time.monotonic() - t0, int(out.read_text())


class Probe:
    """A 602 asked again and again on one kept-alive connection, its round
    trips recorded: the server loop's latency for everyone else."""

    def __init__(self, port, me, target):
        import threading
        self.c = bwmsg.MsgClient(H, port)
        self.c.client_id = me
        self.target = target
        self.rtts = []
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop_ev.is_set():
            t0 = time.perf_counter()
            self.c.public_key(self.target)
            self.rtts.append(time.perf_counter() - t0)
            time.sleep(0.001)

    def measure(self, fn):
        """Runs fn() while probing; returns (fn's result, p50, p99, max) in ms."""
        self.rtts = []
        self.stop_ev.clear()
        self.t = type(self.t)(target=self._run, daemon=True)
        self.t.start()
        try:
            res = fn()
        finally:
            self.stop_ev.set()
            self.t.join(10)
        r = sorted(self.rtts) or [0.0]
        q = lambda f: 1000 * r[min(len(r) - 1, int(f * len(r)))]  # noqa: E731
        return res, q(0.5), q(0.99), 1000 * r[-1]


def big_file(bin_dir, port, tmp, mib, key):
    dirs = [tmp / "fa", tmp / "fb"]
    for d in dirs:
        d.mkdir(exist_ok=True)
        (d / "server.info").write_text("%s:%d\n" % (H, port))
    exe = str(bin_dir / "bulwark")
    na, nb = "big-a-%d" % os.getpid(), "big-b-%d" % os.getpid()
    for d, n in ((dirs[0], na), (dirs[1], nb)):
        subprocess.run([exe, "msg", "register", n], cwd=d, check=True, capture_output=True)
    subprocess.run([exe, "msg", "send-key", nb], cwd=dirs[0], check=True, capture_output=True)
    subprocess.run([exe, "msg", "pull"], cwd=dirs[1], check=True, capture_output=True)
    data = tmp / "big.bin"
    with open(data, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    me = register(port, "probe-%d" % os.getpid(), key)
    probe = Probe(port, me, me)
    _, *idle = probe.measure(lambda: time.sleep(1.0))
    (up, rss_up), *lat_up = probe.measure(
        lambda: measured(tmp, dirs[0], [exe, "msg", "send-file", nb, str(data)]))
    recv = tmp / "recv"
    recv.mkdir(exist_ok=True)
    (down, rss_down), *lat_down = probe.measure(
        lambda: measured(tmp, dirs[1], [exe, "msg", "pull"],
                         env=dict(os.environ, TMPDIR=str(recv))))
    out = list(recv.iterdir())
    same = len(out) == 1 and subprocess.run(["cmp", "-s", str(out[0]), str(data)]).returncode == 0
    for f in out + [data]:
        f.unlink()
    return up, down, rss_up, rss_down, same, (idle, lat_up, lat_down)


def queued_rss(bin_dir, tmp, n, key):
    """Fills a database with n queued messages directly (the server's own
    schema, made by a first start), then measures a fresh server's RSS."""
    data = tmp / "million"
    p, port = start_server(bin_dir, data)
    to = register(port, "deep-%d" % os.getpid(), key)
    frm = register(port, "deep-src-%d" % os.getpid(), key)
    stop(p)
    con = sqlite3.connect(str(data / "defensive.db"))
    content = os.urandom(100)
    con.execute("BEGIN")
    con.executemany("INSERT INTO messages(ToClient, FromClient, Type, Content, ContentSize) "
                    "VALUES(?,?,3,?,100)", ((to, frm, content) for _ in range(n)))
    con.execute("COMMIT")
    con.close()
    p, port = start_server(bin_dir, data, "--max-queued", str(n + 10))
    time.sleep(0.5)
    rss = rss_kib(p.pid)
    # and it still serves: one send, and a pull of the first 2104 (up to
    # the 64 MiB cap), which streams from the store in pages
    c = bwmsg.MsgClient(H, port)
    c.client_id = frm
    c.send(to, 3, b"x" * 16)
    r = bwmsg.MsgClient(H, port)
    r.client_id = to
    got = len(r.pull())
    r.close()  # a reset, not evidence: nothing is deleted
    rss_after = rss_kib(p.pid, "VmHWM")
    stop(p)
    return rss, rss_after, got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", type=Path, required=True)
    ap.add_argument("--tmp", type=Path, required=True)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    a.bin_dir = a.bin_dir.resolve()  # clients run in their own directories
    q = a.quick
    secs, clients = (2.0, 8) if q else (5.0, 32)
    pull_n = 1000 if q else 10000
    big_mib = 8 if q else 100
    deep_n = 20000 if q else 1000000
    key = bw.new_rsa_key()
    rows, errors = [], []

    def row(fig, ours, ref="-", target="-"):
        rows.append((fig, ours, ref, target))

    ref = sqlite_fsync_rate(a.tmp, 1.0 if q else 2.0)
    # the C senders on a server of their own, so that their rows in the
    # database do not weigh on the pull and the file message measured below
    procs = 2 if clients % 2 == 0 else 1
    c_res = None
    p, port = start_server(a.bin_dir, a.tmp / "data-c", "--max-queued", "100000000")
    try:
        c_res = c_sends(a.bin_dir, port, p.pid, procs, clients // procs, secs, key)
    except Exception as e:  # noqa: BLE001
        errors.append("C senders: %r" % e)
    finally:
        stop(p)
    # every send goes to one recipient: lift its queue cap for the run
    p, port = start_server(a.bin_dir, a.tmp / "data", "--max-queued", "100000000")
    try:
        c0 = cpu_s(p.pid)
        rate, _, _ = sends(port, clients, secs, False, key)
        c1 = cpu_s(p.pid)
        row("durable 603 (100 B), %d kept-alive clients" % clients, "%.0f msg/s" % rate,
            "SQLite fsync/commit %.0f /s" % ref, ">= 10000 /s %s" % ("met" if rate >= 10000 else "MISSED"))
        row("  server CPU per message", "%.1f us" % (1e6 * (c1 - c0) / max(rate * secs, 1)))
        if c_res is not None:
            crate, ccpu, cp99, clat = c_res
            row("durable 603 (100 B), %d kept-alive C senders (sessionload --messages %dx%d)"
                % (clients, procs, clients // procs), "%.0f msg/s" % crate,
                "SQLite fsync/commit %.0f /s" % ref,
                ">= 20000 /s %s" % ("met" if crate >= 20000 else "MISSED"))
            row("  server CPU per message; p99 round trip", "%.1f us; %.2f ms" % (ccpu, cp99))
            row("  loop latency (602 RTT) p50/p99/max meanwhile", "%.2f / %.2f / %.1f ms" % tuple(clat),
                "journal checkpoints on a worker", "(report)")
        rate_p, _, _ = sends(port, clients, secs, True, key)
        row("durable 603, %d padded one-per-connection" % clients, "%.0f msg/s" % rate_p, "-", "(report)")
        wall, cpu = pull_time(port, p.pid, pull_n, key)
        row("pull of %d queued 100-byte messages" % pull_n, "%.1f ms" % (wall * 1000),
            "server CPU %.1f ms" % (cpu * 1000),
            "<= 50 ms %s" % ("met" if wall <= 0.05 else "MISSED (wall, client included)"))
        try:
            up, down, rss_up, rss_down, same, lat = big_file(a.bin_dir, port, a.tmp, big_mib,
                                                              key)
            row("%d MiB file message: send / pull" % big_mib, "%.2f s / %.2f s" % (up, down),
                "byte-exact" if same else "DIFFERENT")
            idle, lup, ldown = lat
            row("  loop latency (602 RTT) p50/p99/max: send", "%.2f / %.2f / %.1f ms" % tuple(lup),
                "idle %.2f / %.2f / %.1f ms" % tuple(idle), "(report)")
            row("  ... during the pull", "%.2f / %.2f / %.1f ms" % tuple(ldown))
            row("  client peak RSS: sender / receiver", "%.1f / %.1f MiB" % (rss_up / 1024, rss_down / 1024))
            row("  server peak RSS", "%.1f MiB" % (rss_kib(p.pid, "VmHWM") / 1024))
            if not same:
                errors.append("the file message arrived different")
        except Exception as e:  # noqa: BLE001
            errors.append("file message: %r" % e)
    finally:
        stop(p)
    try:
        rss, hwm, got = queued_rss(a.bin_dir, a.tmp, deep_n, key)
        row("server RSS with %d messages queued" % deep_n, "%.1f MiB" % (rss / 1024),
            "peak after a send and a %d-message pull %.1f MiB" % (got, hwm / 1024),
            "<= 64 MiB %s" % ("met" if hwm <= 65536 else "MISSED"))
    except Exception as e:  # noqa: BLE001
        errors.append("queued RSS: %r" % e)

    w = [max(len(r[i]) for r in rows) for i in range(4)]
    print("\nBulwark messenger benchmark%s, %s" % (" (quick)" if q else "",
                                                  time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    print("%d cores; load average %.2f" % (os.cpu_count(), os.getloadavg()[0]))
    for r in rows:
        print(" | ".join(r[i].ljust(w[i]) for i in range(4)))
    for e in errors:
        print("ERROR: " + e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
