"""bulwarkd migrate --from DATA_DIR into PostgreSQL (and another data
directory for the contents), and bulwarkd --check-config, against a real
PostgreSQL server started here: everything a single-machine daemon kept
(clients and keys, a verified file, queued messages inline and spilled,
the message ids) is served by a daemon on the target; the source is not
touched; an interrupted run resumes; a second run finds nothing to do."""

import hashlib
import os
import signal
import sqlite3
import subprocess

import pytest

import bwd
import bwmsg
import bwvault as bw
import pgserver
from bwd import rsa_key, unique_name, wait_for
from test_pg_backend import db_name, pg  # noqa: F401 (the fixture)

H = "127.0.0.1"


def tree_digest(d):
    """{relative path: sha256} of every file under d (the lock file aside)."""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            if f == "bulwarkd.lock":
                continue
            with open(p, "rb") as fh:
                out[os.path.relpath(p, d)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def migrate(pg, src, dst, db, env_extra=None, check=True):
    """bulwarkd migrate into db, and into the bucket the daemons of dst
    use when the suite runs on S3."""
    blobs, s3env = [], {}
    if bwd.TEST_BLOBS == "s3":
        _, _, blobs, s3env = bwd.s3_args(dst)
    r = subprocess.run([str(bwd.BULWARKD), "migrate", "--from", str(src), "--data-dir",
                        str(dst), "--db", pg.url(db), *blobs],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, **pg.env(), **s3env, **(env_extra or {})})
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def fill_source(start_server, tmp_path):
    """A single-machine daemon (SQLite, contents in its data dir) with two
    clients, a verified file, and messages: some delivered (so that the
    highest id ever issued is above every queued one), three queued for
    bob, one of them spilled to a file."""
    src = tmp_path / "src"
    srv = start_server("--db", "sqlite:%s/defensive.db" % src, "--blobs", "file:%s" % src,
                       "--log-level", "debug", data_dir=src)
    a, b = bwmsg.MsgClient(H, srv.port), bwmsg.MsgClient(H, srv.port)
    a.register(unique_name("alice"), key=rsa_key(0))
    b.register(unique_name("bob"), key=rsa_key(1))
    doc = os.urandom(5000)
    v = bw.VaultClient(H, srv.port, key=rsa_key(2)).connect()
    bw.expect(v.register(unique_name("vault")), bw.REGISTERED)
    bw.expect(v.send_pubkey(), bw.KEY_STORED)
    bw.expect(v.send_file("doc.bin", doc).response, bw.FILE_RECEIVED)
    bw.expect(v.crc_ok("doc.bin"), bw.ACK)
    v.close()
    big = os.urandom(200 * 1024)  # over the 64 KiB kept inline
    kept = [(a.send(b.client_id, 3, b"one"), b"one"), (a.send(b.client_id, 3, big), big)]
    kept.append((b.send(b.client_id, 3, b"to myself"), b"to myself"))
    # the last ids issued: to alice, delivered and deleted (no row names
    # them; the target must still issue above them)
    top = max(b.send(a.client_id, 3, b"gone") for _ in range(3))
    assert len(a.pull()) == 3
    a.close()  # the evidence of delivery: they go

    def queued():
        con = sqlite3.connect("file:%s?mode=ro" % (src / "defensive.db"), uri=True, timeout=10)
        try:
            return con.execute("SELECT count(*) FROM messages").fetchone()[0]
        finally:
            con.close()

    assert wait_for(lambda: queued() == 3, 45), "%d queued\n%s" % (queued(), srv.log_tail(30))
    srv.stop()
    return src, srv, (a, b, v, doc, kept, top)


def test_migrate_moves_everything_and_a_second_run_finds_nothing(start_server, pg, tmp_path):
    src, _, (a, b, v, doc, kept, top) = fill_source(start_server, tmp_path)
    before = tree_digest(src)
    dst = tmp_path / "dst"
    dst.mkdir()
    db = pg.create_db(db_name())

    r = migrate(pg, src, dst, db)
    assert "migrate: clients: 3 in the source, 3 copied now" in r.stdout, r.stdout
    assert "messages: 3 queued, 3 copied now" in r.stdout, r.stdout
    assert "verified" in r.stdout
    # the source is the truth of a run: the user is told not to run it
    # again once the target has been served
    assert "do not run migrate into it again" in r.stdout, r.stdout
    assert tree_digest(src) == before, "the source was changed"
    r2 = migrate(pg, src, dst, db)
    assert "nothing was left to do" in r2.stdout, r2.stdout
    assert tree_digest(src) == before
    # a content changed in the target since (same size, one byte): the
    # next run's CRC finds it and copies it again
    row = pg.psql("SELECT PathName FROM files WHERE ID = '\\x%s'::bytea" % v.client_id.hex(),
                  db=db).strip()
    target = bwd.blob_path(dst, row)
    bad = bytearray(target.read_bytes())
    bad[100] ^= 1
    target.write_bytes(bytes(bad))
    r3 = migrate(pg, src, dst, db)
    assert "nothing was left to do" not in r3.stdout and "verified" in r3.stdout, r3.stdout
    assert target.read_bytes() == doc

    srv = start_server("--db", pg.url(db), data_dir=dst, env=pg.env())
    # the vault's client reconnects; its verified file is where the row says
    v2 = bw.VaultClient(H, srv.port, key=rsa_key(2)).connect()
    v2.client_id, v2.name = v.client_id, v.name
    bw.expect(v2.reconnect(), bw.RECONNECTED)
    v2.close()
    row = pg.psql("SELECT PathName, Verified FROM files WHERE ID = '\\x%s'::bytea "
                  "AND FileNameText = 'doc.bin'" % v.client_id.hex(), db=db).strip()
    path, verified = row.split("|")
    assert verified == "t"
    assert bwd.blob_path(dst, path).read_bytes() == doc
    # bob's queue: the same ids, the same contents, the spilled one too
    b2 = bwmsg.MsgClient(H, srv.port)
    b2.client_id = b.client_id
    got = [(rec[1], rec[3]) for rec in b2.pull()]
    assert got == kept
    b2.close()
    # ids go on above every id the source ever issued (the delivered ones too)
    a2 = bwmsg.MsgClient(H, srv.port)
    a2.client_id = a.client_id
    assert top > max(i for i, _ in kept)  # the highest id was a deleted one
    assert a2.send(b.client_id, 3, b"new") > top
    srv.stop()


@pytest.mark.files_only("kills the migration at a rename into the target's messages/")
def test_an_interrupted_migration_resumes_and_verifies(start_server, pg, tmp_path, shim):
    src, _, (a, b, v, doc, kept, top) = fill_source(start_server, tmp_path)
    dst = tmp_path / "dst"
    dst.mkdir()
    db = pg.create_db(db_name())
    tmp = tmp_path / "tmp"  # where the source's database is copied aside
    tmp.mkdir()
    # killed while putting the spilled message's content in the target
    r = migrate(pg, src, dst, db, check=False,
                env_extra={"TMPDIR": str(tmp),
                           **bwd.fault_env(shim, fault="renameat:1:kill:%s/messages" % dst)})
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    assert pg.psql("SELECT count(*) FROM messages", db=db).strip() != "3"
    left = [p.name for p in tmp.iterdir()]
    assert len(left) == 1 and left[0].startswith("bulwark-migrate."), left
    assert (tmp / left[0] / "defensive.db").stat().st_size > 0
    r = migrate(pg, src, dst, db, env_extra={"TMPDIR": str(tmp)})
    assert "verified" in r.stdout
    # the killed run's copy is gone, and so is this run's own
    assert "migrate: removed %s/%s, the copy aside" % (tmp, left[0]) in r.stdout, r.stdout
    assert list(tmp.iterdir()) == []
    assert pg.psql("SELECT count(*) FROM messages", db=db).strip() == "3", (
        r.stdout + pg.psql("SELECT ID, encode(ToClient, 'hex'), ContentPath FROM messages", db=db))
    assert "nothing was left to do" in migrate(pg, src, dst, db).stdout


def test_migrate_stops_at_a_files_row_it_cannot_read(start_server, pg, tmp_path):
    """A files row of the source whose PathName is longer than the daemon
    reads (a database made elsewhere) was skipped with a warning, and the
    run verified and said the move was complete: the file was left behind.
    The run stops and names the row's trouble; the source is untouched."""
    src, _, (_, _, v, doc, _, _) = fill_source(start_server, tmp_path)
    con = sqlite3.connect(str(src / "defensive.db"), timeout=10)
    try:
        with con:
            n = con.execute("UPDATE files SET PathName = ? WHERE FileName = 'doc.bin'",
                            ("/." * 400 + "/files/x/doc.bin",)).rowcount
    finally:
        con.close()
    assert n == 1
    dst = tmp_path / "dst"
    dst.mkdir()
    r = migrate(pg, src, dst, pg.create_db(db_name()), check=False)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "a files row of the source cannot be read" in r.stderr, r.stdout + r.stderr
    assert (src / "files" / v.client_id.hex() / "doc.bin").read_bytes() == doc


def test_migrate_refuses_a_source_a_daemon_serves(start_server, pg, tmp_path):
    src = tmp_path / "src"
    start_server("--db", "sqlite:%s/defensive.db" % src, data_dir=src)
    dst = tmp_path / "dst"
    dst.mkdir()
    r = migrate(pg, src, dst, pg.create_db(db_name()), check=False)
    assert r.returncode == 1 and "a bulwarkd is using it" in r.stderr


def check_config(pg, url, env=None, data_dir=None):
    return subprocess.run([str(bwd.BULWARKD), "--check-config", "--db", url,
                           "--data-dir", str(data_dir or "/tmp")],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(pg.env() if env is None else env)})


def test_check_config_says_what_is_wrong_in_one_line(pg, tmp_path):
    db = pg.create_db(db_name())
    r = check_config(pg, pg.url(db))
    assert r.returncode == 0, r.stdout
    assert "ok: database: PostgreSQL" in r.stdout and "no tables yet" in r.stdout
    r = check_config(pg, pg.url(db).replace("postgresql://", "postgres://"))
    assert r.returncode == 0, "libpq's other spelling: " + r.stdout

    r = check_config(pg, pg.url(db), env={"PGPASSWORD": "wrong"})
    assert r.returncode == 1
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("error: database")]
    assert len(line) == 1 and "password authentication failed" in line[0], r.stdout

    r = check_config(pg, pg.url("no_such_db"))
    assert r.returncode == 1 and 'database "no_such_db" does not exist' in r.stdout

    pg.psql("CREATE TABLE bulwark_schema(version integer NOT NULL, "
            "applied timestamptz NOT NULL DEFAULT now()); "
            "INSERT INTO bulwark_schema(version) VALUES (99)", db=db)
    r = check_config(pg, pg.url(db))
    assert r.returncode == 1 and "schema version 99 is newer" in r.stdout

    r = check_config(pg, "sqlite:%s/defensive.db" % tmp_path, data_dir=tmp_path)
    assert r.returncode == 0 and "created at the first start" in r.stdout
    assert not (tmp_path / "defensive.db").exists(), "--check-config changes nothing"
