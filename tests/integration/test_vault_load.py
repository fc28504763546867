"""Many sessions at once, and one very large upload in bounded memory."""

import hashlib
import random
import threading

import pytest

import bwvault as bw
from bwd import is_true, rsa_key, unique_name

SESSIONS = 100
BIG = 300 << 20
RSS_LIMIT = 64 << 20


def session_sizes(n, seed=4242):
    """Log-uniform between 4 KiB and 1 MiB, plus a few edge sizes."""
    rng = random.Random(seed)
    sizes = [int(4096 * 256 ** rng.random()) for _ in range(n)]
    sizes[:3] = [1 << 20, 4096, 65536 + 16]
    return sizes


def test_hundred_simultaneous_sessions_store_every_file_byte_exact(start_server):
    server = start_server("--max-conns", "1024")
    sizes = session_sizes(SESSIONS)
    keys = [rsa_key(i) for i in range(SESSIONS)]  # from the key pool, made up front
    files = [random.Random(i).randbytes(n) for i, n in enumerate(sizes)]
    barrier = threading.Barrier(SESSIONS, timeout=60)
    results = [None] * SESSIONS
    errors = []

    def run(i):
        try:
            barrier.wait()
            c = bw.full_session("127.0.0.1", server.port, unique_name("load%d" % i), files[i],
                                file_name="f%03d.bin" % i, key=keys[i], timeout=60)
            results[i] = c.client_id
        except Exception as e:  # reported below with the session number
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "sessions still running after 120 s"
    assert errors == [], "%d sessions failed, first: %r" % (len(errors), sorted(errors)[:5])

    assert len(set(results)) == SESSIONS, "client ids are not unique"
    for i, cid in enumerate(results):
        path = server.client_dir(cid) / ("f%03d.bin" % i)
        assert path.is_file(), "session %d: %s missing" % (i, path)
        assert path.read_bytes() == files[i], "session %d: stored bytes differ" % i
    assert server.query("SELECT COUNT(*) FROM clients")[0][0] == SESSIONS
    rows = server.query("SELECT * FROM files")
    assert len(rows) == SESSIONS
    assert all(is_true(r["Verified"]) for r in rows)
    assert server.incoming_files() == []
    assert server.alive()


@pytest.mark.long
@pytest.mark.plain_pass_only("300 MiB through ASan takes minutes; the same streaming runs under ASan in smaller uploads")
def test_300_mib_upload_streams_in_bounded_server_memory(server):
    with server.client(key=rsa_key(0), timeout=120) as c:
        bw.expect(c.register(unique_name("big")), bw.REGISTERED)
        bw.expect(c.send_pubkey(), bw.KEY_STORED)
        res = c.send_file("big.bin", chunks=bw.pseudo_random_chunks(99, BIG), size=BIG)
        bw.expect(res.response, bw.FILE_RECEIVED)
        _, csize, _, crc = bw.parse_file_received(res.response.payload)
        assert csize == bw.encrypted_size(BIG)
        assert crc == res.crc, "server CRC %d, client CRC %d" % (crc, res.crc)
        bw.expect(c.crc_ok("big.bin"), bw.ACK)
    peak = server.rss_peak()

    path = server.client_dir(c.client_id) / "big.bin"
    assert path.stat().st_size == BIG
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for _ in range(BIG // (1 << 20) + 1):
            chunk = f.read(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
    assert digest.hexdigest() == res.sha256, "stored file differs from what was sent"
    assert is_true(server.file_row(c.client_id, "big.bin")["Verified"])
    assert peak < RSS_LIMIT, "bulwarkd peak RSS %.1f MiB during a 300 MiB upload" % (peak / 2**20)
