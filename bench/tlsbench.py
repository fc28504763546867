#!/usr/bin/python3
"""The TLS listeners' cost, measured: one large upload with `bulwark send`
on the plain port, on the TLS port (as `bulwark send` does it there: the
file as it is, 1106; and with --seed-upload, the seed's AES-CBC 1028 inside
TLS), and through stunnel4 terminating TLS in front of the plain port (what
a user would otherwise deploy); then whole
sessions (connect, handshake, a 4 KiB upload and its verdict) on the TLS
port, for the server's CPU per session: first as `bulwark send` processes,
two at a time (a process per session: the server idles between them and
every upload's sync is its own), then at capacity, from `sessionload`'s
long-lived clients (the core's TLS, as `bulwark` runs it, resuming as it
does), plain and TLS alike.

Prints each figure beside its target (issue: a TLS upload at most 1.35x
the plain one, at least as fast as stunnel; >= 1,000 sessions/s of server
capacity at <= 1 ms of server CPU each). It only reports: the exit status
says whether every scenario ran, not whether a target was met.

  bench/tlsbench.py --bin-dir build/release [--size-mib 1024] [--runs 5]
                    [--sessions 400] [--load-seconds 5] [--tmp DIR]
"""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TICK = os.sysconf("SC_CLK_TCK")
SEED_TLS = "TLS port, seed's 1028"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid):
    """utime + stime of pid, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_port(port, proc, what, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit("tlsbench: %s exited (%s)" % (what, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("tlsbench: %s did not listen on %d" % (what, port))


class Client:
    """A directory with transfer.info for one server address, and its own
    known_servers."""

    def __init__(self, bulwark, root, name, server, src, resume=True, flags=()):
        self.dir = os.path.join(root, name)
        self.flags = list(flags)
        os.makedirs(self.dir)
        self.bulwark = bulwark
        # its own pins and TLS sessions (none kept: every run a full handshake)
        self.env = dict(os.environ, BULWARK_KNOWN_SERVERS=os.path.join(self.dir, "known"),
                        BULWARK_TLS_SESSIONS=os.path.join(self.dir, "sessions") if resume
                        else "")
        os.symlink(src, os.path.join(self.dir, "f.bin"))
        with open(os.path.join(self.dir, "transfer.info"), "w") as f:
            f.write("%s\n%s\nf.bin\n" % (server, name))

    def send(self, timeout, beside=()):
        """One upload; with beside (commands), those run at the same time
        and the time is until all have ended."""
        t0 = time.monotonic()
        others = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL) for cmd in beside]
        r = subprocess.run([self.bulwark, "send", "-q"] + self.flags, cwd=self.dir, env=self.env,
                           capture_output=True, timeout=timeout)
        if any(p.wait(timeout=timeout) != 0 for p in others):
            sys.exit("tlsbench: %s failed" % " ".join(beside[0][:1]))
        if r.returncode != 0:
            sys.exit("tlsbench: bulwark send failed (%d): %s" % (
                r.returncode, r.stderr.decode(errors="replace")[-500:]))
        return time.monotonic() - t0


def sessions(bulwark, tmp, srv, addr, small, n, label, resume=True):
    """n whole sessions (connect, [handshake,] 4 KiB upload, verdict), two
    client processes at a time; bulwarkd's CPU a session, in seconds."""
    clients = [Client(bulwark, tmp, "s%s%d" % (label.split()[-1], i), addr, small, resume)
               for i in range(2)]
    for c in clients:
        c.send(30)
    c0, t0 = cpu_s(srv.pid), time.monotonic()
    running, done = [], 0
    while done < n:
        while len(running) < 2 and done + len(running) < n:
            # a client not running now: two sends in one directory would
            # upload one file name at once, and the second wait its turn
            busy = [c for c, _ in running]
            c = next(x for x in clients if x not in busy)
            running.append((c, subprocess.Popen([bulwark, "send", "-q"], cwd=c.dir, env=c.env,
                                                stdout=subprocess.DEVNULL,
                                                stderr=subprocess.PIPE)))
        _, p = running.pop(0)
        if p.wait(timeout=60) != 0:
            sys.exit("tlsbench: a session failed: %s" % p.stderr.read().decode()[-300:])
        done += 1
    wall = time.monotonic() - t0
    per = (cpu_s(srv.pid) - c0) / n
    print("%-19s %d sessions in %.2f s (%.0f/s, clients on the same cores, each "
          "upload synced): bulwarkd CPU %.3f ms a session, %.0f sessions/s of one core"
          % (label, n, wall, n / wall, per * 1000, 1 / per if per else 0))
    return per


def loaded(bin_dir, srv, plain, tls, seconds, windows, tunnel=None):
    """sessionload 4x16 against the plain port, the TLS port and, with
    tunnel, stunnel4's port in front of the plain one (clients registered on
    the plain port, TLS sessions resumed after each client's first): a
    warm-up window, then the median of `windows` windows. Returns {label:
    (rate, server ms a session, p99 ms)}; the server's CPU is bulwarkd's
    alone (stunnel's own is not in it)."""
    exe = os.path.join(bin_dir, "sessionload")
    out = {}
    targets = [("plain port", []), ("TLS port, resumed", ["--tls-port", str(tls)])]
    if tunnel is not None:
        targets.append(("stunnel4 -> plain", ["--tls-port", str(tunnel)]))
    for label, extra in targets:
        rows = []
        for i in range(windows + 1):
            r = subprocess.run([exe, "--port", str(plain), "--procs", "4", "--conns", "16",
                                "--seconds", str(1 if i == 0 else seconds), "--server-pid",
                                str(srv.pid), "--tag", "w%d%s" % (i, label[0])]
                               + extra, capture_output=True, text=True, timeout=seconds + 120)
            if r.returncode != 0:
                raise RuntimeError("sessionload exited %d: %s" % (r.returncode, r.stderr[-300:]))
            f = r.stdout.split()
            kv = dict(zip(f[0::2], f[1::2]))
            if int(kv["errors"]) > 0:
                raise RuntimeError("sessionload (%s): %s failed sessions" % (label, kv["errors"]))
            if label == "TLS port, resumed" and int(kv["resumed"]) < int(kv["sessions"]) - 64:
                raise RuntimeError("sessionload: only %s of %s sessions resumed"
                                   % (kv["resumed"], kv["sessions"]))
            if i > 0:
                rows.append((float(kv["rate"]), float(kv["server_cpu_ms_per_session"]),
                             float(kv["p99_ms"])))
        rate = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        p99 = statistics.median(r[2] for r in rows)
        out[label] = (rate, cpu, p99)
        print("%-18s %6.0f sessions/s with the clients on the same cores, bulwarkd CPU %.3f ms "
              "a session (%.0f/s of one core), p99 %.1f ms (median of %d windows of %d s)"
              % (label, rate, cpu, 1000 / cpu if cpu > 0 else 0, p99, windows, seconds))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", default="build/release")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sessions", type=int, default=400)
    ap.add_argument("--load-seconds", type=int, default=5)
    ap.add_argument("--tmp", default=None)
    a = ap.parse_args()
    bulwarkd = os.path.abspath(os.path.join(a.bin_dir, "bulwarkd"))
    bulwark = os.path.abspath(os.path.join(a.bin_dir, "bulwark"))
    stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
    tmp = tempfile.mkdtemp(prefix="tlsbench.", dir=a.tmp or "/var/tmp")
    procs = []
    try:
        data = os.path.join(tmp, "data")
        os.makedirs(data)
        plain, tls, tunnel = free_port(), free_port(), free_port()
        srv = subprocess.Popen([bulwarkd, "-d", data, "--port", str(plain), "--tls-port",
                                str(tls), "--no-rooms", "--no-console",
                                "--max-file-size", str((a.size_mib + 16) << 20),
                                # capacity is measured: no handshake budget
                                "--tls-handshakes", "0", "--tls-handshakes-per-addr", "0",
                                "--log-level", "warn"],
                               stdout=subprocess.DEVNULL,
                               stderr=open(os.path.join(tmp, "bulwarkd.log"), "w"))
        procs.append(srv)
        wait_port(tls, srv, "bulwarkd")
        if stunnel:
            pem = os.path.join(tmp, "stunnel.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost",
                            "-keyout", pem, "-out", pem + ".crt", "-days", "2"],
                           check=True, capture_output=True)
            with open(pem, "a") as f, open(pem + ".crt") as c:
                f.write(c.read())
            conf = os.path.join(tmp, "stunnel.conf")
            with open(conf, "w") as f:
                f.write("foreground = yes\npid =\n[bw]\naccept = 127.0.0.1:%d\n"
                        "connect = 127.0.0.1:%d\ncert = %s\nsslVersionMin = TLSv1.3\n"
                        % (tunnel, plain, pem))
            tun = subprocess.Popen([stunnel, conf], stdout=subprocess.DEVNULL,
                                   stderr=open(os.path.join(tmp, "stunnel.log"), "w"))
            procs.append(tun)
            wait_port(tunnel, tun, "stunnel")
        src = os.path.join(tmp, "big.bin")
        with open(src, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(a.size_mib):
                f.write(chunk)
        ways = [("plain port", "127.0.0.1:%d" % plain),
                ("TLS port", "tls://127.0.0.1:%d" % tls),
                (SEED_TLS, "tls://127.0.0.1:%d" % tls)]
        flags = {SEED_TLS: ["--seed-upload"]}
        if stunnel:
            ways.append(("stunnel4 -> plain", "tls://127.0.0.1:%d" % tunnel))
        # The floor: the plain upload with the cipher's work of a TLS one
        # (AES-128-GCM over the size, once encrypting and once decrypting,
        # in TLS records) in two processes beside it, until all three end:
        # what the TLS port could take if its records cost nothing but the
        # cipher on these cores.
        gcmload = os.path.join(a.bin_dir, "gcmload")
        beside = {}
        if os.access(gcmload, os.X_OK):
            ways.append(("plain + cipher", "127.0.0.1:%d" % plain))
            beside["plain + cipher"] = [[gcmload, str(a.size_mib)],
                                        [gcmload, "--decrypt", str(a.size_mib)]]
        timeout = 60 + a.size_mib
        # The ways take turns, round by round, and each upload starts on a
        # synced disk: run in blocks, the later ways ran while the kernel
        # still wrote back the earlier ones' gigabytes (the first cut ran
        # every plain upload first, and TLS paid for their writeback).
        print("== one %d MiB upload (bulwark send), median of %d rounds after a warm-up;"
              " the ways take turns, each on a synced disk" % (a.size_mib, a.runs))
        clients = []
        for label, addr in ways:
            c = Client(bulwark, tmp, "u%d" % len(clients), addr, src, flags=flags.get(label, ()))
            os.sync()
            c.send(timeout)  # registration, pinning, warm-up
            clients.append((label, c))
        walls = {label: [] for label, _ in ways}
        cpus = {label: [] for label, _ in ways}
        for _ in range(a.runs):
            for label, c in clients:
                os.sync()
                c0 = cpu_s(srv.pid) + (cpu_s(procs[1].pid) if len(procs) > 1 else 0)
                walls[label].append(c.send(timeout, beside.get(label, ())))
                c1 = cpu_s(srv.pid) + (cpu_s(procs[1].pid) if len(procs) > 1 else 0)
                cpus[label].append(c1 - c0)
        med = {}
        for label, _ in ways:
            med[label] = statistics.median(walls[label])
            print("%-22s %7.3f s  %7.1f MiB/s  server-side CPU %.2f s (bulwarkd%s)"
                  % (label, med[label], a.size_mib / med[label], statistics.median(cpus[label]),
                     " + stunnel" if len(procs) > 1 else ""))
        paired = [t / p for t, p in zip(walls["TLS port"], walls["plain port"])]
        print("TLS / plain, round by round: %s" % " ".join("%.2f" % r for r in paired))
        ratio = med["TLS port"] / med["plain port"]
        print("TLS / plain: %.2fx (target <= 1.35x: %s)" % (ratio, "met" if ratio <= 1.35
                                                           else "NOT met"))
        r = med[SEED_TLS] / med["plain port"]
        print("TLS with the seed's 1028 / plain: %.2fx (the seed's AES-CBC inside TLS: "
              "`bulwark send --seed-upload`)" % r)
        if "plain + cipher" in med:
            r = med["plain + cipher"] / med["plain port"]
            print("(plain + cipher) / plain: %.2fx: the floor a TLS port's upload could reach "
                  "here, its records costing nothing but AES-128-GCM" % r)
        if stunnel:
            r = med["TLS port"] / med["stunnel4 -> plain"]
            print("TLS / stunnel4: %.2fx (target <= 1.00x: %s)" % (r, "met" if r <= 1.0
                                                                 else "NOT met"))
            r = med[SEED_TLS] / med["stunnel4 -> plain"]
            print("TLS with the seed's 1028 / stunnel4 (both the seed's 1028): %.2fx" % r)
        small = os.path.join(tmp, "small.bin")
        with open(small, "wb") as f:
            f.write(os.urandom(4096))
        # the uploads' gigabytes are still being written back: the
        # sessions' syncs would wait behind them (a figure of the disk,
        # not of the server)
        os.sync()
        per = {}
        runs = [("plain port", ways[0][1], True), ("TLS full handshake", ways[1][1], False),
                ("TLS resumed", ways[1][1], True)]
        for label, addr, resume in runs:
            per[label] = sessions(bulwark, tmp, srv, addr, small, a.sessions, label, resume)
        for label in ("TLS full handshake", "TLS resumed"):
            extra = per[label] - per["plain port"]
            print("TLS's own cost, %s: %.3f ms of bulwarkd CPU a session (%.0f/s of one core "
                  "for TLS alone)" % (label.split(" ", 1)[1], extra * 1000,
                                      1 / extra if extra > 0 else 0))
        os.sync()
        print("== whole 4 KiB sessions at capacity: sessionload 4 processes x 16 clients")
        load = loaded(a.bin_dir, srv, plain, tls, a.load_seconds, 1 if a.sessions < 100 else 3,
                      tunnel if stunnel else None)
        rate, cpu, p99 = load["TLS port, resumed"]
        if stunnel:
            srate, _, sp99 = load["stunnel4 -> plain"]
            print("TLS / stunnel4 under load: %.2fx the sessions/s, p99 %.1f against %.1f ms "
                  "(target: at least as fast, p99 no higher: %s)"
                  % (rate / srate if srate > 0 else 0, p99, sp99,
                     "met" if rate >= srate and p99 <= sp99 else "NOT met"))
        # the server's capacity is what one core of it does (1 / its CPU
        # a session); the rate reached here is also the disk's syncs and
        # the load clients' share of the same two cores
        print("target >= 1,000 sessions/s of server capacity at <= 1 ms server CPU each "
              "(whole session, resumed, under load): %.3f ms each, %.0f/s of one core, %s "
              "(%.0f/s reached with the clients on the same cores)"
              % (cpu, 1000 / cpu if cpu > 0 else 0, "met" if cpu <= 1.0 else "NOT met", rate))
        best = per["TLS resumed"]
        print("(a process per session, two at a time: %.3f ms each, the server idle between "
              "them and each sync its own)" % (best * 1000))
        log = open(os.path.join(tmp, "bulwarkd.log")).read()
        errs = [ln for ln in log.splitlines() if "level=error" in ln]
        if errs:
            print("bulwarkd logged %d error(s), e.g. %s" % (len(errs), errs[0]))
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    # bench/run ends a bench with SIGTERM: the servers are stopped on the
    # way out, not left behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
