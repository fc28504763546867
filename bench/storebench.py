#!/usr/bin/python3
"""What moving the rows to PostgreSQL costs, beside the embedded default,
in one run: durable 603s per second from kept-alive clients (Python, and
C senders: bench/sessionload.c --messages) on SQLite and on PostgreSQL,
against PostgreSQL's own commit rate on this machine
(pgbench, one 100-byte insert per transaction, synchronous_commit on, as
many clients); registrations per second on both; and the event loop's
latency (a 602 round trip, answered from memory) while every insert sleeps
in PostgreSQL (a trigger with pg_sleep), which must not reach the loop.

The PostgreSQL server is a throw-away one this starts on loopback
(tests/integration/pgserver.py). It only reports; it fails only when a
scenario could not run.

Usage: bench/storebench.py --bin-dir DIR --tmp DIR [--quick]
"""

import argparse
import multiprocessing as mp
import os
import re
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
import msgbench  # noqa: E402
import pgserver  # noqa: E402

H = "127.0.0.1"


def pgbench_rate(pg, db, clients, seconds, tmp):
    """PostgreSQL's own rate: pgbench, one 100-byte insert per transaction."""
    pg.psql("CREATE TABLE ref(id bigserial PRIMARY KEY, a bytea)", db=db)
    script = tmp / "insert.sql"
    script.write_text("INSERT INTO ref(a) VALUES ('\\x%s');\n" % os.urandom(100).hex())
    r = subprocess.run([str(pg.bin / "pgbench"), "-n", "-c", str(clients), "-j", "2",
                        "-T", str(int(seconds)), "-f", str(script), "-h", str(pg.sock),
                        "-p", str(pg.port), "-U", pg.user, db],
                       capture_output=True, text=True, timeout=seconds + 120,
                       env={**os.environ, **pg.env(), "PGOPTIONS": "-c synchronous_commit=on"})
    m = re.search(r"tps = ([0-9.]+)", r.stdout)
    if r.returncode != 0 or not m:
        raise RuntimeError("pgbench: %s %s" % (r.stdout[-500:], r.stderr[-500:]))
    return float(m.group(1))


def registrar(port, prefix, seconds, key, q):
    c = bwmsg.MsgClient(H, port)
    n, end = 0, time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            c.register("%s-%d" % (prefix, n), key=key)
            n += 1
        q.put(("ok", n))
    except Exception as e:  # noqa: BLE001
        q.put(("error", repr(e)))


def registrations(port, clients, seconds, key, tag):
    q = mp.Queue()
    procs = [mp.Process(target=registrar,
                        args=(port, "reg-%s-%d-%d" % (tag, i, os.getpid()), seconds, key, q))
             for i in range(clients)]
    for p in procs:
        p.start()
    res = [q.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    bad = [r for r in res if r[0] != "ok"]
    if bad:
        raise RuntimeError("registrations failed: %r" % bad[:3])
    return sum(r[1] for r in res) / seconds


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100.0 * len(v)))] if v else float("nan")


def latency_while_slow(port, pg, db, key, seconds):
    """602 round trips on one connection while 8 others each send 603s that
    sleep 0.2 s in PostgreSQL: (p50, p99, max) in ms, and the 603s done."""
    pg.psql("CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN PERFORM pg_sleep(0.2); RETURN NEW; END$$; "
            "CREATE TRIGGER slow BEFORE INSERT ON messages FOR EACH ROW "
            "EXECUTE FUNCTION slow()", db=db)
    probe = bwmsg.MsgClient(H, port)
    probe.register("probe-%d" % os.getpid(), key=key)
    stop, sent = threading.Event(), [0]

    def slow_sender(i):
        c = bwmsg.MsgClient(H, port)
        c.register("slow-%d-%d" % (i, os.getpid()), key=key)
        while not stop.is_set():
            c.send(probe.client_id, 3, b"x" * 100)
            sent[0] += 1

    ts = [threading.Thread(target=slow_sender, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    time.sleep(0.5)  # warm-up: every sender waits in PostgreSQL
    rtts, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        probe.public_key(probe.client_id)
        rtts.append((time.perf_counter() - t0) * 1000)
    stop.set()
    for t in ts:
        t.join(30)
    pg.psql("DROP TRIGGER slow ON messages", db=db)
    return pct(rtts, 50), pct(rtts, 99), max(rtts), sent[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", type=Path, required=True)
    ap.add_argument("--tmp", type=Path, required=True)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    a.bin_dir = a.bin_dir.resolve()
    a.tmp.mkdir(parents=True, exist_ok=True)
    q = a.quick
    secs, clients = (2.0, 8) if q else (5.0, 32)
    key = bw.new_rsa_key()
    rows, errors = [], []

    def row(fig, ours, ref="-", target="-"):
        rows.append((fig, ours, ref, target))

    # its own temp dir under /var/tmp: the postgres user must enter it
    pg = pgserver.PgServer().init().start()
    try:
        ref = pgbench_rate(pg, pg.create_db("ref"), clients, secs, a.tmp)
        found = {}
        for backend in ("sqlite", "postgresql"):
            extra = ["--max-queued", "100000000", "--max-reg-per-min", "0"]
            if backend == "postgresql":
                db = pg.create_db("bench")
                extra += ["--db", pg.url(db)]
                os.environ.update(pg.env())
            p, port = msgbench.start_server(a.bin_dir, a.tmp / ("data-" + backend), *extra)
            try:
                msgbench.sends(port, 4, 1.0, True, key)  # warm-up (its own names)
                c0 = msgbench.cpu_s(p.pid)
                rate, _, _ = msgbench.sends(port, clients, secs, False, key)
                c1 = msgbench.cpu_s(p.pid)
                # the same from C senders: the server, not Python, is measured
                crate, ccpu, _, _ = msgbench.c_sends(a.bin_dir, port, p.pid, 2, clients // 2,
                                                     secs, key)
                regs = registrations(port, 8, secs, key, backend)
                found[backend] = (rate, (c1 - c0) / max(rate * secs, 1), regs, crate, ccpu)
                if backend == "postgresql":
                    found["lat"] = latency_while_slow(port, pg, db, key, 2.0 if q else 5.0)
            finally:
                msgbench.stop(p)
        sq, pq = found["sqlite"], found["postgresql"]
        row("durable 603 (100 B), %d kept-alive clients: SQLite" % clients,
            "%.0f msg/s" % sq[0], "-", "(beside)")
        row("  the same on PostgreSQL", "%.0f msg/s" % pq[0],
            "pgbench 1-insert commits %.0f /s (%.2fx)" % (ref, pq[0] / ref),
            ">= 1.0x %s" % ("met" if pq[0] >= ref else "MISSED"))
        row("  server CPU per message: SQLite / PostgreSQL",
            "%.1f / %.1f us" % (sq[1] * 1e6, pq[1] * 1e6))
        row("durable 603, %d kept-alive C senders (sessionload --messages): SQLite / PostgreSQL"
            % clients, "%.0f / %.0f msg/s" % (sq[3], pq[3]),
            "pgbench %.0f /s (PostgreSQL %.2fx)" % (ref, pq[3] / ref), "(beside)")
        row("  server CPU per message: SQLite / PostgreSQL", "%.1f / %.1f us" % (sq[4], pq[4]))
        row("registrations (600), 8 kept-alive clients: SQLite / PostgreSQL",
            "%.0f / %.0f /s" % (sq[2], pq[2]))
        p50, p99, mx, n = found["lat"]
        row("loop latency (602 RTT) while inserts sleep 0.2 s in PostgreSQL",
            "p50 %.2f / p99 %.2f / max %.1f ms" % (p50, p99, mx),
            "%d slow 603s meanwhile" % n, "p99 < 10 ms %s" % ("met" if p99 < 10 else "MISSED"))
    except Exception as e:  # noqa: BLE001
        errors.append(repr(e))
    finally:
        pg.destroy()

    if rows:
        w = [max(len(r[i]) for r in rows) for i in range(4)]
        print("\nBulwark storage benchmark%s, %s" % (" (quick)" if q else "",
                                                    time.strftime("%Y-%m-%d %H:%M UTC",
                                                                  time.gmtime())))
        print("%d cores; load average %.2f; PostgreSQL %s" % (
            os.cpu_count(), os.getloadavg()[0], pg.bin.parent.name))
        for r in rows:
            print(" | ".join(r[i].ljust(w[i]) for i in range(4)))
    for e in errors:
        print("ERROR: " + e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
