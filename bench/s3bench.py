#!/usr/bin/python3
"""What keeping the contents in S3 costs, in one run, against a real object
store started here on loopback (tests/integration/s3server.py: Swift with
its S3 API, which checks signatures):

- a large vault upload through bulwarkd (`bulwark send`, reconnect path,
  the 2103 after CompleteMultipartUpload) against one plain signed
  PutObject of the same bytes to the same endpoint (Python: hashlib for the
  payload's SHA-256 and http.client, as boto3 would), medians: target
  <= 1.3x;
- the server's peak RSS while many upload at once (64 x 256 MiB in a full
  run): target <= 512 MiB, the spool keeping the parts out of memory;
- the event loop's latency (a 602 round trip, answered from memory) while
  every S3 PUT waits 0.5 s in a proxy (tests/integration/faultproxy.py):
  target p99 < 10 ms;
- 4 KiB vault sessions per second on the embedded default and on
  PostgreSQL + S3 (a throw-away PostgreSQL too), bulwarkd's CPU each;
- the same sessions on a store 50 ms away (every S3 request delayed in the
  proxy): the default workers (16 on S3) beside --workers 2, the local
  disk's default, which let only two requests reach the store at once.

It only reports; it fails only when a scenario could not run.

Usage: bench/s3bench.py --bin-dir DIR --tmp DIR [--quick] [--size-mib N]
"""

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))
sys.path.insert(0, str(HERE))
import bwmsg  # noqa: E402
import bwvault as bw  # noqa: E402
import faultproxy  # noqa: E402
import msgbench  # noqa: E402
import s3server  # noqa: E402

H = "127.0.0.1"
MiB = 1024 * 1024


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100.0 * len(v)))] if v else float("nan")


class Sender:
    """A working directory for `bulwark send` with its own identity."""

    def __init__(self, bin_dir, d, port, name, path):
        self.bin, self.dir = bin_dir / "bulwark", d
        d.mkdir(parents=True, exist_ok=True)
        (d / "transfer.info").write_text("%s:%d\n%s\n%s\n" % (H, port, name, path))

    def send(self, timeout=600):
        t0 = time.perf_counter()
        r = subprocess.run([str(self.bin), "send", "-C", str(self.dir), "--quiet"],
                           cwd=self.dir, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("bulwark send exited %d: %s" % (r.returncode, r.stderr[-500:]))
        return time.perf_counter() - t0

    def start(self):
        return subprocess.Popen([str(self.bin), "send", "-C", str(self.dir), "--quiet"],
                                cwd=self.dir, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)


def make_file(path, size):
    with open(path, "wb") as f:
        left = size
        block = os.urandom(MiB)
        while left > 0:
            n = min(left, MiB)
            f.write(block[:n])
            left -= n
            block = block[1:] + block[:1]  # no two blocks alike


def reference_put(s3, bucket, path, i):
    """One signed PutObject of the file's bytes, timed from reading them."""
    t0 = time.perf_counter()
    data = path.read_bytes()
    st, _, body = s3.request("PUT", "/%s/ref/%d" % (bucket, i), body=data)
    dt = time.perf_counter() - t0
    if st != 200:
        raise RuntimeError("reference PUT: %d %s" % (st, body[:200]))
    return dt


def big_upload(a, s3, bucket, tmp, rows):
    """Each run stores a new name (a hard link to the same bytes): the
    upload itself. Then the same name again: a replacement of a verified
    file, which waits for its 1029 under .pending/ and then takes its
    place, two server-side copies on S3 (the backup of the old one, the
    pending one to its key), where the file backend renames."""
    path = tmp / "big.bin"
    make_file(path, a.size_mib * MiB)
    p, port = msgbench.start_server(a.bin_dir, tmp / "data-big", "--blobs",
                                    "s3://%s/node" % bucket, "--s3-endpoint", s3.endpoint,
                                    "--s3-path-style")

    def named(i):
        q = tmp / ("big-%d.bin" % i)
        if not q.exists():
            os.link(path, q)
        return Sender(a.bin_dir, tmp / "sender", port, "bench-big", q)

    try:
        named(0).send()  # the warm-up registers; the runs reconnect (1027)
        reference_put(s3, bucket, path, 0)
        ours, ref = [], []
        for i in range(a.runs):  # alternating, so that drift hits both
            ours.append(named(i + 1).send())
            ref.append(reference_put(s3, bucket, path, i + 1))
        again = named(a.runs).send()
        rss = msgbench.rss_kib(p.pid, "VmHWM")
    finally:
        msgbench.stop(p)
    o, r = statistics.median(ours), statistics.median(ref)
    rows.append(("%d MiB upload to S3 (bulwark send, 2103 after completion), median of %d"
                 % (a.size_mib, a.runs),
                 "%.2f s (%.0f MiB/s)" % (o, a.size_mib / o),
                 "signed PutObject of the same bytes %.2f s (%.2fx)" % (r, o / r),
                 "<= 1.3x %s" % ("met" if o <= 1.3 * r else "MISSED")))
    rows.append(("  the same name again: replacing a verified file, to its 1029",
                 "%.2f s" % again, "2 server-side copies of %d MiB" % a.size_mib, "-"))
    rows.append(("  server peak RSS during them", "%.0f MiB" % (rss / 1024), "-", "-"))


def many_uploads(a, s3, bucket, tmp, rows):
    path = tmp / "each.bin"
    make_file(path, a.mem_mib * MiB)
    p, port = msgbench.start_server(a.bin_dir, tmp / "data-many", "--blobs",
                                    "s3://%s/many" % bucket, "--s3-endpoint", s3.endpoint,
                                    "--s3-path-style", "--max-uploads-per-addr", "1000",
                                    "--max-uploads", "1000")
    try:
        base = msgbench.rss_kib(p.pid, "VmRSS")
        senders = [Sender(a.bin_dir, tmp / ("m%d" % i), port, "bench-m%d" % i, path)
                   for i in range(a.mem_uploads)]
        t0 = time.perf_counter()
        procs = [s.start() for s in senders]
        bad = [pr.stderr.read().decode()[-300:] for pr in procs if pr.wait(3600) != 0]
        wall = time.perf_counter() - t0
        peak = msgbench.rss_kib(p.pid, "VmHWM")
    finally:
        msgbench.stop(p)
    if bad:
        raise RuntimeError("%d of the concurrent uploads failed: %s" % (len(bad), bad[0]))
    rows.append(("%d concurrent %d MiB uploads to S3: server peak RSS"
                 % (a.mem_uploads, a.mem_mib),
                 "%.0f MiB (%.0f at start)" % (peak / 1024, base / 1024),
                 "%.0f MiB uploaded in %.1f s" % (a.mem_uploads * a.mem_mib, wall),
                 "<= 512 MiB %s" % ("met" if peak <= 512 * 1024 else "MISSED")))


def latency_while_slow(a, s3, bucket, tmp, rows):
    proxy = faultproxy.FaultProxy(s3.port)
    proxy.add(method="PUT", action=("pass",), delay=0.5)
    path = tmp / "slow.bin"
    make_file(path, 32 * MiB)
    p, port = msgbench.start_server(a.bin_dir, tmp / "data-slow", "--blobs",
                                    "s3://%s/slow" % bucket, "--s3-endpoint", proxy.endpoint,
                                    "--s3-path-style")
    try:
        key = bw.new_rsa_key()
        probe = bwmsg.MsgClient(H, port)
        probe.register("probe-%d" % os.getpid(), key=key)
        senders = [Sender(a.bin_dir, tmp / ("s%d" % i), port, "bench-s%d" % i, path)
                   for i in range(4)]
        stop = threading.Event()

        def again(s):
            while not stop.is_set():
                s.send()

        ts = [threading.Thread(target=again, args=(s,)) for s in senders]
        for t in ts:
            t.start()
        time.sleep(1.0)
        rtts, end = [], time.monotonic() + (2.0 if a.quick else 5.0)
        while time.monotonic() < end:
            t0 = time.perf_counter()
            probe.public_key(probe.client_id)
            rtts.append((time.perf_counter() - t0) * 1000)
        stop.set()
        for t in ts:
            t.join(300)
        puts = len(proxy.seen("PUT"))
    finally:
        msgbench.stop(p)
        proxy.close()
    p99 = pct(rtts, 99)
    rows.append(("loop latency (602 RTT) while every S3 PUT waits 0.5 s, 4 uploading",
                 "p50 %.2f / p99 %.2f / max %.1f ms" % (pct(rtts, 50), p99, max(rtts)),
                 "%d delayed PUTs meanwhile" % puts,
                 "p99 < 10 ms %s" % ("met" if p99 < 10 else "MISSED")))


def sessions(a, s3, bucket, tmp, rows):
    """4 KiB vault sessions (bulwark send: 1027, 1028, 1029; a new name
    each time) from 16 processes at once, on the embedded default and on
    PostgreSQL + S3, in one run: sessions/s and bulwarkd's CPU each."""
    import pgserver

    secs, procs = (2.0, 8) if a.quick else (5.0, 16)
    pg = pgserver.PgServer().init().start()
    try:
        db = pg.create_db("sessions")
        os.environ.update(pg.env())
        found = {}
        for label, extra in (("SQLite + files", []),
                             ("PostgreSQL + S3", ["--db", pg.url(db), "--blobs",
                                                  "s3://%s/sessions" % bucket,
                                                  "--s3-endpoint", s3.endpoint,
                                                  "--s3-path-style"])):
            d = tmp / ("sessions-" + label.split()[0])
            p, port = msgbench.start_server(a.bin_dir, d, "--max-reg-per-min", "0",
                                            "--max-uploads-per-addr", "1000", *extra)
            try:
                files = d / "src"
                files.mkdir()
                senders = []
                for i in range(procs):
                    f = files / ("s%d-0.bin" % i)
                    f.write_bytes(os.urandom(4096))
                    senders.append(Sender(a.bin_dir, d / ("c%d" % i), port,
                                          "sess-%s-%d" % (label.split()[0].lower(), i), f))
                for snd in senders:  # registrations, then warm
                    snd.send()
                count, stop = [0], threading.Event()

                def loop(i, snd):
                    n = 1
                    while not stop.is_set():
                        f = files / ("s%d-%d.bin" % (i, n))
                        os.link(files / ("s%d-0.bin" % i), f)
                        (snd.dir / "transfer.info").write_text(
                            "%s:%d\nsess-%s-%d\n%s\n" % (H, port, label.split()[0].lower(),
                                                         i, f))
                        snd.send()
                        count[0] += 1
                        n += 1

                c0 = msgbench.cpu_s(p.pid)
                ts = [threading.Thread(target=loop, args=(i, snd))
                      for i, snd in enumerate(senders)]
                t0 = time.perf_counter()
                for t in ts:
                    t.start()
                time.sleep(secs)
                stop.set()
                for t in ts:
                    t.join(120)
                wall = time.perf_counter() - t0
                cpu = msgbench.cpu_s(p.pid) - c0
                found[label] = (count[0] / wall, cpu / max(count[0], 1))
                # the same sessions from long-lived processes
                # (bench/sessionload.c): the server is what is measured
                load = a.bin_dir / "sessionload"
                if load.exists():
                    r = subprocess.run([str(load), "--port", str(port), "--procs", "4",
                                        "--conns", "8", "--seconds", str(int(secs)),
                                        "--server-pid", str(p.pid)],
                                       capture_output=True, text=True, timeout=secs + 120)
                    w = r.stdout.split()
                    if r.returncode == 0 and len(w) >= 14:
                        v = {w[i]: float(w[i + 1]) for i in range(0, len(w) - 1, 2)}
                        found[label + " load"] = (v["rate"], v["server_cpu_ms_per_session"])
            finally:
                msgbench.stop(p)
    finally:
        pg.destroy()
    (sq, sq_cpu), (ps, ps_cpu) = found["SQLite + files"], found["PostgreSQL + S3"]
    rows.append(("4 KiB sessions/s (bulwark send), %d processes: SQLite + files" % procs,
                 "%.0f /s" % sq, "bulwarkd CPU %.2f ms each" % (sq_cpu * 1000), "(beside)"))
    rows.append(("  the same on PostgreSQL + S3", "%.0f /s" % ps,
                 "bulwarkd CPU %.2f ms each" % (ps_cpu * 1000), "-"))
    for label in ("SQLite + files", "PostgreSQL + S3"):
        if label + " load" in found:
            rate, cpu = found[label + " load"]
            rows.append(("4 KiB sessions/s (sessionload 4x8): %s" % label, "%.0f /s" % rate,
                         "bulwarkd CPU %.3f ms each" % cpu, "-"))


def sessions_far(a, s3, bucket, tmp, rows):
    """4 KiB sessions (sessionload 4x8) on S3 50 ms away: every request
    waits in the proxy, as on a bucket in another building. Each of the
    store's calls holds a worker for its round trips: the default (16 on
    S3) beside --workers 2, the local disk's default."""
    load = a.bin_dir / "sessionload"
    if not load.exists():
        return
    secs = 2 if a.quick else 5
    proxy = faultproxy.FaultProxy(s3.port)
    proxy.add(action=("pass",), delay=0.05)
    found = {}
    try:
        for label, extra in (("default workers", []), ("--workers 2", ["--workers", "2"])):
            d = tmp / ("far-" + label.replace(" ", "").replace("-", ""))
            p, port = msgbench.start_server(a.bin_dir, d, "--max-reg-per-min", "0",
                                            "--max-uploads-per-addr", "1000", "--blobs",
                                            "s3://%s/far" % bucket, "--s3-endpoint",
                                            proxy.endpoint, "--s3-path-style", *extra)
            try:
                r = subprocess.run([str(load), "--port", str(port), "--procs", "4", "--conns",
                                    "8", "--seconds", str(secs), "--server-pid", str(p.pid)],
                                   capture_output=True, text=True, timeout=secs + 300)
                w = r.stdout.split()
                if r.returncode != 0 or len(w) < 14:
                    raise RuntimeError("sessionload: %s %s" % (r.stdout[-300:], r.stderr[-300:]))
                found[label] = {w[i]: float(w[i + 1]) for i in range(0, len(w) - 1, 2)}
            finally:
                msgbench.stop(p)
    finally:
        proxy.close()
    ours, two = found["default workers"], found["--workers 2"]
    rows.append(("4 KiB sessions/s (sessionload 4x8), S3 50 ms away: default workers",
                 "%.0f /s" % ours["rate"], "p50 %.0f ms, --workers 2: %.0f /s, p50 %.0f ms" % (
                     ours["p50_ms"], two["rate"], two["p50_ms"]),
                 "%.1fx" % (ours["rate"] / max(two["rate"], 1e-9))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", type=Path, required=True)
    ap.add_argument("--tmp", type=Path, required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--size-mib", type=int)
    ap.add_argument("--runs", type=int)
    ap.add_argument("--mem-uploads", type=int)
    ap.add_argument("--mem-mib", type=int)
    ap.add_argument("--only", default="big,many,slow,sessions,far",
                    help="some of big,many,slow,sessions,far (default: all five)")
    a = ap.parse_args()
    a.bin_dir = a.bin_dir.resolve()
    a.tmp.mkdir(parents=True, exist_ok=True)
    q = a.quick
    a.size_mib = a.size_mib or (16 if q else 1024)
    a.runs = a.runs or (1 if q else 3)
    a.mem_uploads = a.mem_uploads or (8 if q else 64)
    a.mem_mib = a.mem_mib or (16 if q else 256)
    rows, errors = [], []
    s3 = s3server.S3Server(parent=str(a.tmp), proxy_workers=2).init().start()
    os.environ.update(s3.env())
    try:
        bucket = s3.create_bucket("bench-%d" % os.getpid())
        chosen = {"big": big_upload, "many": many_uploads, "slow": latency_while_slow,
                  "sessions": sessions, "far": sessions_far}
        for name in a.only.split(","):
            scenario = chosen[name]
            try:
                scenario(a, s3, bucket, a.tmp, rows)
            except Exception as e:  # noqa: BLE001 (reported, and the rest runs)
                errors.append("%s: %r" % (scenario.__name__, e))
    finally:
        s3.destroy()
    if rows:
        w = [max(len(r[i]) for r in rows) for i in range(4)]
        print("\nBulwark S3 benchmark%s, %s" % (" (quick)" if q else "",
                                               time.strftime("%Y-%m-%d %H:%M UTC",
                                                             time.gmtime())))
        print("%d cores; load average %.2f; Swift %s with s3api on loopback, parts of 8 to 32 MiB" % (
            os.cpu_count(), os.getloadavg()[0],
            subprocess.run(["dpkg-query", "-W", "-f=${Version}", "swift-proxy"],
                           capture_output=True, text=True).stdout or "?"))
        for r in rows:
            print(" | ".join(r[i].ljust(w[i]) for i in range(4)))
    for e in errors:
        print("ERROR: " + e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
