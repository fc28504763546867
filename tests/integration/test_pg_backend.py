"""bulwarkd on PostgreSQL (--db postgresql://...), against a real server
started here (pgserver.PgServer: initdb, password authentication): the
rows where psql shows them, the password kept out of logs and ps, the
schema's versions, two daemons migrating one database at once, the server
stopped or killed while clients work (every request answered, nothing
acknowledged lost, the daemon back by itself), and the loop serving while a
statement is slow. The rest of the suite runs on PostgreSQL as well
(BULWARK_TEST_DB=postgresql in scripts/check)."""

import os
import secrets
import select
import signal
import socket
import subprocess
import threading
import time
from urllib.parse import quote

import pytest

import bwd
import bwmsg
import bwvault as bw
import pgserver
import tcpproxy
from bwd import rsa_key, unique_name, wait_for

H = "127.0.0.1"


@pytest.fixture
def pg():
    if pgserver.pg_bin() is None:
        if os.environ.get("BULWARK_REQUIRE_BINARIES"):
            pytest.fail("PostgreSQL is not installed (scripts/deps test)")
        pytest.skip("PostgreSQL is not installed")
    srv = pgserver.PgServer().init().start()
    yield srv
    srv.destroy()


def db_name():
    return unique_name("db").replace("-", "_")


def start_on(start_server, pg, *extra, db=None, url=None, env=None, **kw):
    db = db or pg.create_db(db_name())
    return start_server("--db", url or pg.url(db), *extra,
                        env=pg.env() if env is None else env, **kw), db


def test_rows_are_where_psql_shows_them_and_survive_a_restart(start_server, pg, tmp_path):
    srv, db = start_on(start_server, pg)
    a, b = bwmsg.MsgClient(H, srv.port), bwmsg.MsgClient(H, srv.port)
    a.register(unique_name("alice"), key=rsa_key(0))
    b.register(unique_name("bob"), key=rsa_key(1))
    mid = a.send(b.client_id, 3, b"hello")
    rows = pg.psql("SELECT encode(ID, 'hex'), NameText, octet_length(PublicKey) FROM clients "
                   "ORDER BY NameText", db=db).split()
    assert rows == sorted(["%s|%s|160" % (c.client_id.hex(), c.name) for c in (a, b)],
                          key=lambda r: r.split("|")[1])
    assert pg.psql("SELECT ID, encode(ToClient, 'hex'), Type, octet_length(Content) "
                   "FROM messages", db=db).strip() == "%d|%s|3|5" % (mid, b.client_id.hex())
    srv.stop()

    # a new daemon (another data directory) on the same database knows them
    srv2, _ = start_on(start_server, pg, db=db)
    c = bwmsg.MsgClient(H, srv2.port)
    c.client_id = b.client_id
    assert c.public_key(a.client_id) == bw.spki_der(a.key)
    code, _ = bwmsg.MsgClient(H, srv2.port).request(
        bwmsg.REGISTER, bw.name_field(a.name) + bw.spki_der(rsa_key(2)))
    assert code == bwmsg.ERROR, "a name taken on the database is taken"
    recs = c.pull()
    assert [(r[0], r[1], r[3]) for r in recs] == [(a.client_id, mid, b"hello")]
    c.close()  # evidence of delivery
    assert wait_for(lambda: pg.psql("SELECT count(*) FROM messages", db=db).strip() == "0")
    a2 = bwmsg.MsgClient(H, srv2.port)
    a2.client_id = a.client_id
    assert a2.send(b.client_id, 3, b"x") > mid, "ids are never reused"


def test_the_password_is_in_neither_the_log_nor_ps(start_server, pg):
    db = pg.create_db(db_name())
    url = "postgresql://%s:%s@127.0.0.1:%d/%s" % (pg.user, pg.password, pg.port, db)
    srv, _ = start_on(start_server, pg, url=url, env={})
    with open("/proc/%d/cmdline" % srv.proc.pid, "rb") as f:
        cmdline = f.read()
    assert pg.password.encode() not in cmdline
    assert b"--db" in cmdline
    bwmsg.MsgClient(H, srv.port).register(unique_name("u"), key=rsa_key(0))
    srv.stop()
    assert pg.password not in srv.log()
    assert "postgresql://%s:***@127.0.0.1" % pg.user in srv.log()


@pytest.mark.parametrize("form", ["user part", "parameter", "encoded name", "sslpassword"])
def test_a_password_of_any_form_libpq_reads_is_hidden_everywhere(start_server, pg, form):
    """libpq reads the user part's password up to the first '@' or '/'
    ('?' included), and percent-decodes parameter names: each form that
    opens the database is kept out of ps, the log and --check-config's
    output (the maskers once stopped at '?' and knew only "password=")."""
    role = unique_name("r").replace("-", "_")
    token = secrets.token_hex(8)
    secret = "p?" + token
    pg.psql("CREATE ROLE %s LOGIN PASSWORD '%s'" % (role, secret))
    db = pg.create_db(db_name())
    pg.psql('ALTER DATABASE "%s" OWNER TO %s' % (db, role))
    where = "127.0.0.1:%d/%s" % (pg.port, db)
    url = {"user part": "postgresql://%s:%s@%s" % (role, secret, where),
           "parameter": "postgresql://%s@%s?password=%s" % (role, where, quote(secret)),
           "encoded name": "postgresql://%s@%s?sslmode=disable&pass%%77ord=%s"
                           % (role, where, quote(secret)),
           # a key's passphrase: never used here, hidden all the same
           "sslpassword": "postgresql://%s:%s@%s?sslpassword=k%s" % (role, secret, where,
                                                                     token[::-1])}[form]
    srv, _ = start_on(start_server, pg, url=url, env={}, db=db)
    with open("/proc/%d/cmdline" % srv.proc.pid, "rb") as f:
        cmdline = f.read()
    bwmsg.MsgClient(H, srv.port).register(unique_name("u"), key=rsa_key(0))
    srv.stop()
    r = subprocess.run([str(bwd.BULWARKD), "--check-config", "--db", url, "--data-dir", "/tmp"],
                       capture_output=True, text=True, timeout=60, env={})
    assert r.returncode == 0, r.stdout + r.stderr
    for where, text in (("ps", cmdline.decode()), ("the log", srv.log()),
                        ("--check-config", r.stdout + r.stderr)):
        assert token not in text and token[::-1] not in text, (where, text[-2000:])
    assert "@127.0.0.1:%d" % pg.port in srv.log() or "127.0.0.1:%d" % pg.port in srv.log()


def test_a_wrong_password_refuses_to_start_in_one_line(start_server, pg):
    srv, _ = start_on(start_server, pg, env={"PGPASSWORD": "not-" + pg.password}, wait=False)
    rc, log = srv.wait_exit()
    assert rc not in (None, 0)
    lines = [ln for ln in log.splitlines() if "cannot connect to PostgreSQL" in ln]
    assert len(lines) == 1 and "password authentication failed" in lines[0], log
    assert ("not-" + pg.password) not in log


def test_a_schema_newer_than_the_daemon_is_refused(start_server, pg):
    srv, db = start_on(start_server, pg)
    srv.stop()
    pg.psql("INSERT INTO bulwark_schema(version) VALUES (99)", db=db)
    srv2, _ = start_on(start_server, pg, db=db, wait=False)
    rc, log = srv2.wait_exit()
    assert rc not in (None, 0)
    assert "schema is version 99, newer than this bulwarkd knows" in log
    assert pg.psql("SELECT count(*) FROM clients", db=db).strip() == "0", "tables untouched"


def test_two_daemons_starting_at_once_migrate_once(start_server, pg):
    db = pg.create_db(db_name())
    srvs = [start_server("--db", pg.url(db), env=pg.env(), wait=False) for _ in range(3)]
    def listening(s):
        s._take_ports()
        return "vault" in s.ports

    for s in srvs:
        assert wait_for(lambda: listening(s), 20), s.log_tail()
    assert pg.psql("SELECT version FROM bulwark_schema ORDER BY version",
                   db=db).split() == ["1", "2", "3", "4", "5", "6", "7"]
    migrated = sum("schema brought to version 7" in s.log() for s in srvs)
    assert migrated == 1


def test_a_version_1_database_is_brought_up_to_date_with_its_rows(start_server, pg):
    """Version 2 numbers the clients in registration order (Seq: what a
    node of a cluster lists since it last looked), version 3 counts a key's
    decryption failures in its row, version 4 names the lock of a file's
    uploader, version 5 keeps what a name reads as (NameKey, unique; none
    for older rows), version 6 numbers a client's pulls (PullGen), version
    7 keeps an owner's choice of TLS only (TlsOnly, false for older rows).
    A database made by a version 1 daemon keeps its rows and gets them
    numbered; a look-alike of an older name is refused."""
    srv, db = start_on(start_server, pg)
    names = [unique_name("old%d" % i) for i in range(3)]
    for i, n in enumerate(names):
        c = bwmsg.MsgClient(H, srv.port)
        c.register(n, key=rsa_key(i))
        c.close()
    srv.stop()
    # back to what a version 1 daemon left
    pg.psql("ALTER TABLE clients DROP COLUMN Seq; ALTER TABLE clients DROP COLUMN KeyFailures; "
            "ALTER TABLE files DROP COLUMN Uploader; ALTER TABLE clients DROP COLUMN NameKey; "
            "ALTER TABLE clients DROP COLUMN PullGen; ALTER TABLE clients DROP COLUMN TlsOnly; "
            "DELETE FROM bulwark_schema WHERE version > 1", db=db)
    srv2, _ = start_on(start_server, pg, db=db)
    assert "schema brought to version 7" in srv2.log()
    assert pg.psql("SELECT count(*) FROM clients WHERE NOT TlsOnly", db=db).strip() == "3"
    assert pg.psql("SELECT count(*) FROM clients WHERE KeyFailures = 0", db=db).strip() == "3"
    seqs = pg.psql("SELECT Seq FROM clients ORDER BY Seq", db=db).split()
    assert sorted(map(int, seqs)) == [1, 2, 3]
    c = bwmsg.MsgClient(H, srv2.port)
    with pytest.raises(bwmsg.ServerError):
        c.register((names[0] + "\u200b").encode(), key=rsa_key(4))
    c.close()
    c = bwmsg.MsgClient(H, srv2.port)
    c.register(unique_name("new"), key=rsa_key(3))
    assert sorted(n for _, n in c.list()) == sorted(names)
    c.close()
    assert pg.psql("SELECT max(Seq) FROM clients", db=db).strip() == "4"
    assert pg.psql("SELECT count(NameKey) FROM clients", db=db).strip() == "1"


def _traffic(port, stop, results, i):
    """One client: registrations and messages to itself until stop; each
    answer recorded (code, message id or None)."""
    c = bwmsg.MsgClient(H, port, timeout=20)
    while True:
        try:
            c.register(unique_name("t%d" % i), key=rsa_key(i))
            break
        except bwmsg.ServerError:
            time.sleep(0.05)  # the database is down: try again
    results.append(("me", c.client_id))
    n = 0
    while not stop.is_set():
        n += 1
        code, body = c.request(bwmsg.SEND, bwmsg.SEND_PREFIX.pack(c.client_id, 3, 8)
                               + n.to_bytes(8, "little"))
        assert code in (bwmsg.STORED, bwmsg.ERROR), code
        results.append((code, int.from_bytes(body[16:20], "little") if code == bwmsg.STORED
                        else None, n))
        r = bwmsg.MsgClient(H, port, timeout=20)
        name = unique_name("r%d" % i)
        code, body = r.request(bwmsg.REGISTER, bw.name_field(name) + bw.spki_der(rsa_key(i)))
        r.close()
        assert code in (bwmsg.REGISTERED, bwmsg.ERROR), code
        if code == bwmsg.REGISTERED:
            results.append(("registered", name, body[:16]))
    c.close()


def _uploads(port, stop, acked, i):
    """One vault client uploading 20 KiB files until stop, each step on a
    connection of its own (a 2107 may close it); the files whose 2103 had
    the right cksum and whose 1029 got 2104 are recorded (name, bytes)."""
    v = bw.VaultClient(H, port, timeout=20, key=rsa_key(i + 10))
    while True:
        try:
            v.connect()
            if v.register(unique_name("up%d" % i)).code == bw.REGISTERED and \
                    v.send_pubkey().code == bw.KEY_STORED:
                break
        except OSError:
            pass
        finally:
            v.close()
        v.client_id = bw.ZERO_ID
        time.sleep(0.05)  # the database is down: try again
    acked.append(("me", v.client_id))
    n = 0
    while not stop.is_set():
        n += 1
        name, data = "f%d.bin" % n, os.urandom(20000)
        try:
            v.connect()
            if v.reconnect().code != bw.RECONNECTED:
                continue
            res = v.send_file(name, data)
            if res.response.code != bw.FILE_RECEIVED or res.server_crc != res.crc:
                continue
            if v.crc_ok(name).code == bw.ACK:
                acked.append((name, data))
        except OSError:
            pass  # closed after a 2107
        finally:
            v.close()


def metric(srv, name):
    """A sample of the daemon's /metrics (no labels but the node's), as a
    number."""
    import re
    import urllib.request

    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % srv.ports["metrics"],
                                timeout=10) as r:
        text = r.read().decode()
    m = re.search(r'^%s\{node="[\w.-]+"\} (\S+)$' % re.escape(name), text, re.M)
    assert m, "no %s in\n%s" % (name, text)
    return float(m.group(1))


@pytest.mark.contents_too("every acknowledged content")
@pytest.mark.parametrize("how", ["restart", "crash"])
def test_postgresql_lost_mid_traffic_loses_nothing_acknowledged(start_server, pg, how):
    srv, db = start_on(start_server, pg, "--metrics-listen", "127.0.0.1:0",
                       want=("vault", "metrics"))
    assert metric(srv, "bulwark_store_connected") == 1
    stop, threads, results = threading.Event(), [], [[] for _ in range(4)]
    uploads = [[] for _ in range(2)]
    errors = []

    def run(i):
        try:
            _traffic(srv.port, stop, results[i], i)
        except Exception as e:  # a hang or a wrong answer fails the test
            errors.append(repr(e))

    def run_uploads(i):
        try:
            _uploads(srv.port, stop, uploads[i], i)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(repr(e))

    # the uploaders register first: the others' registrations soon use up
    # the address's --max-reg-per-min, and are refused from then on
    for i in range(2):
        threads.append(threading.Thread(target=run_uploads, args=(i,), daemon=True))
        threads[-1].start()
    assert wait_for(lambda: all(u for u in uploads) or errors, 20), (errors, srv.log_tail())
    for i in range(4):
        threads.append(threading.Thread(target=run, args=(i,), daemon=True))
        threads[-1].start()
    assert wait_for(lambda: sum(len(r) for r in results) > 40, 20)
    assert wait_for(lambda: all(len(u) > 3 for u in uploads), 20), \
        (errors, [len(u) for u in uploads], srv.log_tail())
    pg.stop(signal.SIGINT if how == "restart" else signal.SIGKILL)
    n_down = sum(len(r) for r in results)
    assert wait_for(lambda: sum(len(r) for r in results) > n_down + 8, 20), \
        "requests while the database is down are answered (9000), not held"
    pg.start()
    n_up = sum(len(r) for r in results)
    # served again without a restart: stored answers come back
    n_files = [len(u) for u in uploads]
    assert wait_for(lambda: any(x[0] == bwmsg.STORED for r in results for x in r[n_up // 4:]),
                    30), srv.log_tail()
    assert wait_for(lambda: all(len(u) > n for u, n in zip(uploads, n_files)), 30), \
        "uploads are confirmed again after the restart"
    stop.set()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert srv.alive()
    log = srv.log()
    assert log.count("lost the connection to PostgreSQL") == 1, log
    assert "is back" in log
    assert metric(srv, "bulwark_store_connected") == 1
    assert metric(srv, "bulwark_store_reconnects_total") >= 1
    assert any(x[0] == bwmsg.ERROR for r in results for x in r[1:]), "the outage was seen"
    # every acknowledged registration is a row
    names = [x[1] for r in results for x in r if x[0] == "registered"]
    assert names, "no registration was acknowledged"
    rows = pg.psql("SELECT count(*) FROM clients WHERE NameText IN (%s)"
                   % ",".join("'%s'" % n for n in names), db=db).strip()
    assert rows == str(len(names)), (rows, len(names))
    # every upload confirmed (2103, then 2104 to its 1029) is stored, verified
    for up in uploads:
        me, files = up[0][1], up[1:]
        assert files, "no upload went through"
        for name, data in files:
            f = srv.client_dir(me) / name
            assert f.is_file() and f.read_bytes() == data, \
                "confirmed upload %s lost or changed" % name
        verified = pg.psql("SELECT count(*) FROM files WHERE ID = decode('%s', 'hex') "
                           "AND Verified" % me.hex(), db=db).strip()
        assert int(verified) >= len(files), (verified, len(files))
    # every 2103 is kept: its message is pulled
    for r in results:
        me = r[0][1]
        acked = {x[2] for x in r[1:] if x[0] == bwmsg.STORED}
        c = bwmsg.MsgClient(H, srv.port)
        c.client_id = me
        got = {int.from_bytes(rec[3], "little") for rec in c.pull()}
        c.close()
        assert acked <= got, "acknowledged and lost: %s" % sorted(acked - got)[:10]


def test_a_slow_statement_does_not_hold_other_clients(start_server, pg):
    srv, db = start_on(start_server, pg)
    # the insert sleeps 8 s (3 s was too short a window on a loaded
    # machine): its client waits longer than that
    a, b = bwmsg.MsgClient(H, srv.port, timeout=30), bwmsg.MsgClient(H, srv.port)
    a.register(unique_name("a"), key=rsa_key(0))
    b.register(unique_name("b"), key=rsa_key(1))
    pg.psql("CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN PERFORM pg_sleep(8); RETURN NEW; END$$; "
            "CREATE TRIGGER slow BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION slow()",
            db=db)
    done = threading.Event()
    answer = []

    def slow_send():
        answer.append(a.request(bwmsg.SEND, bwmsg.SEND_PREFIX.pack(b.client_id, 3, 1) + b"x"))
        done.set()

    t = threading.Thread(target=slow_send)
    t.start()
    assert wait_for(lambda: pg.psql("SELECT count(*) FROM pg_stat_activity WHERE "
                                    "query LIKE '%messages%' AND wait_event = 'PgSleep'",
                                    db=db).strip() == "1", 10)
    # while the insert sleeps in PostgreSQL, the loop answers others
    assert b.public_key(a.client_id) == bw.spki_der(a.key)
    assert [n for _, n in b.list()] == [a.name]  # the list leaves out the asker
    assert not done.is_set(), "answered before the slow insert ended"
    t.join(30)
    assert answer and answer[0][0] == bwmsg.STORED


class CommitCutter(tcpproxy.TcpProxy):
    """A TCP proxy to PostgreSQL: once armed, the first bytes from the
    daemon that carry a COMMIT after a message's insert (the prepared
    statement bw5, PS_MSG_INSERT in src/store/pg/pg_int.h) are held for
    hold seconds, so that the inserts that come meanwhile wait for the
    next batch; the next such bytes are passed on, and 0.3 s later both
    connections are closed: the server commits that batch, the daemon
    never hears it."""

    def __init__(self, upstream_port, marker=b"bw5\x00", hold=1.5):
        self.marker = marker
        self.hold = hold
        self.held = False
        self.armed = threading.Event()
        self.marked = set()  # the daemon's sockets that sent a message's insert
        self.cutting = set()  # ids of the sockets of a connection being cut
        super().__init__(upstream_port)

    def arm(self):
        self.held = False
        self.armed.set()

    def relay(self, data, src, dst, upstream):
        pair = {id(src), id(dst)}
        if upstream:
            if pair & self.cutting:
                return False  # the server's answer to the cut COMMIT goes nowhere
            dst.sendall(data)
            return True
        if self.armed.is_set() and self.marker in data:
            self.marked.add(id(src))
        if self.armed.is_set() and id(src) in self.marked and b"COMMIT" in data:
            self.marked.discard(id(src))
            if not self.held:  # the rest queue up behind this one
                self.held = True
                time.sleep(self.hold)
                dst.sendall(data)
                return True
            self.armed.clear()
            self.cutting |= pair
            dst.sendall(data)
            time.sleep(0.3)  # the server commits meanwhile
            return False
        dst.sendall(data)
        return True


@pytest.mark.contents_too("the contents of the lost batch are dropped")
def test_a_batch_whose_commit_answer_is_lost_is_dropped_by_its_contents(start_server, pg):
    """The connection to PostgreSQL is lost right after the COMMIT of a
    batch of 603s went out: their rows are committed, and the daemon reads
    a batch's new ids from the answers it lost. It answered 9000 and
    removed their contents, so the recipient's next pull stopped at a row
    whose content was gone (cut short; with S3, every pull until a
    restart). Such a row is now dropped by its content's key once the
    daemon is back (its content kept if that fails): the pulls that follow
    are whole and carry exactly the messages told 2103."""
    db = pg.create_db(db_name())
    cutter = CommitCutter(pg.port)
    url = "postgresql://%s@127.0.0.1:%d/%s?sslmode=disable" % (pg.user, cutter.port, db)
    try:
        srv, _ = start_on(start_server, pg, db=db, url=url)
        b = bwmsg.MsgClient(H, srv.port, timeout=30)
        b.register(unique_name("b"), key=rsa_key(1))
        senders = []
        for i in range(6):
            a = bwmsg.MsgClient(H, srv.port, timeout=30)
            a.register(unique_name("a%d" % i), key=rsa_key(2 + i))
            senders.append(a)
        big = os.urandom(200 * 1024)  # over the 64 KiB kept in the row
        request = bwmsg.SEND_PREFIX.pack(b.client_id, 3, len(big)) + big
        for _ in range(10):
            codes = []

            def send(a):
                try:
                    codes.append(a.request(bwmsg.SEND, request)[0])
                except OSError:
                    codes.append(None)
                a.close()

            cutter.arm()
            threads = [threading.Thread(target=send, args=(a,)) for a in senders]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            cutter.armed.clear()
            got = None
            deadline = time.monotonic() + 30
            while got is None and time.monotonic() < deadline:
                try:
                    got = b.pull()
                except bwmsg.ServerError:  # 9000 until the daemon is back
                    b.close()
                    time.sleep(0.5)
            assert got is not None, "the pull never succeeded\n%s" % srv.log_tail()
            assert len(got) == codes.count(bwmsg.STORED), (len(got), codes)
            assert all(r[3] == big for r in got)
            if "is dropped by its content" in srv.log():
                break
        assert "is dropped by its content" in srv.log(), \
            "no batch met the lost COMMIT in 10 tries: nothing was tested\n%s" % srv.log_tail()
        assert "is gone" not in srv.log(), srv.log_tail()
    finally:
        cutter.close()


def test_603s_to_ids_no_one_has_hold_no_queue(start_server, pg):
    """On a shared store each 603 first counts its recipient's queue
    again if it may be full; the count made a queue in memory for the
    recipient named, registered or not, and kept it for good (and cost
    three round trips): a stranger's 603s to random ids grew the daemon
    without bound. An id no one has gets its 9000 and nothing is kept."""
    srv, _ = start_on(start_server, pg, "--metrics-listen", "127.0.0.1:0",
                      want=("vault", "metrics"))
    a = bwmsg.MsgClient(H, srv.port)
    a.register(unique_name("a"), key=rsa_key(0))
    before = metric(srv, "bulwark_msg_queues")
    for _ in range(300):
        code, _ = a.request(bwmsg.SEND, bwmsg.SEND_PREFIX.pack(os.urandom(16), 3, 1) + b"x")
        assert code == bwmsg.ERROR
    for _ in range(100):  # a sender no one has either
        code, _ = a.request(bwmsg.SEND, bwmsg.SEND_PREFIX.pack(os.urandom(16), 3, 1) + b"x",
                            client_id=os.urandom(16))
        assert code == bwmsg.ERROR
    assert metric(srv, "bulwark_msg_queues") <= before + 2, "a queue kept per id asked"
    assert srv.alive()


def test_names_that_are_not_utf8_are_kept_exactly(start_server, pg):
    """Names are bytes 0x20-0xff: Latin-1 'é' (0xe9) and UTF-8 'é' (c3 a9)
    are two names, both kept byte for byte and loaded again."""
    srv, db = start_on(start_server, pg)
    suffix = unique_name("").encode()
    names = [b"caf\xe9" + suffix, b"caf\xc3\xa9" + suffix]
    ids = []
    with srv.client() as v:
        for n in names:
            bw.expect(v.request(bw.REGISTER, bw.raw_field(n)), bw.REGISTERED)
    for n in names:
        assert pg.psql("SELECT count(*) FROM clients WHERE Name = '\\x%s'::bytea" % n.hex(),
                       db=db).strip() == "1"
    srv.stop()
    srv2, _ = start_on(start_server, pg, db=db)
    c = bwmsg.MsgClient(H, srv2.port)
    c.register(unique_name("lister"), key=rsa_key(3))
    listed = {n for _, n in c.list()}
    for n in names:
        assert bw.parse_name_field(bw.raw_field(n)) in listed
    with srv2.client() as v:
        resp = v.request(bw.REGISTER, bw.raw_field(names[0]))
    assert resp.code == bw.NAME_TAKEN, "the Latin-1 name is still taken after a restart"


@pytest.mark.contents_too("no content is left behind")
def test_uploads_while_postgresql_is_down_get_2107_and_leave_nothing(start_server, pg):
    """A vault upload whose row cannot be written (the server stopped) is
    refused with the protocol's error and leaves neither a row nor a
    stored file; once PostgreSQL is back the same upload is stored and
    verified, without a restart of bulwarkd."""
    srv, db = start_on(start_server, pg)
    doc = os.urandom(20000)
    v = bw.VaultClient(H, srv.port, key=rsa_key(4)).connect()
    bw.expect(v.register(unique_name("up")), bw.REGISTERED)
    bw.expect(v.send_pubkey(), bw.KEY_STORED)
    pg.stop()
    res = v.send_file("doc.bin", doc)
    assert res.response.code == bw.ERROR, res.response
    assert srv.stored_files(v.client_id) == []
    v.close()
    pg.start()
    # the key was issued before the outage: a new connection reconnects
    v2 = bw.VaultClient(H, srv.port, key=rsa_key(4)).connect()
    v2.client_id, v2.name = v.client_id, v.name

    def stored():
        r = v2.reconnect()
        if r.code != bw.RECONNECTED:
            return False
        res = v2.send_file("doc.bin", doc)
        return res.response.code == bw.FILE_RECEIVED

    assert wait_for(stored, 15), srv.log_tail()
    bw.expect(v2.crc_ok("doc.bin"), bw.ACK)
    v2.close()
    assert (srv.client_dir(v.client_id) / "doc.bin").read_bytes() == doc
    assert pg.psql("SELECT Verified FROM files WHERE FileNameText = 'doc.bin'",
                   db=db).strip() == "t"


def test_last_seen_follows_the_requests_of_many_clients(start_server, pg):
    """LastSeen of every client a pass saw, written in one statement."""
    srv, db = start_on(start_server, pg)
    cs = []
    for i in range(5):
        c = bwmsg.MsgClient(H, srv.port)
        c.register(unique_name("seen%d" % i), key=rsa_key(i))
        cs.append(c)

    def seen():
        return pg.psql("SELECT encode(ID, 'hex'), extract(epoch FROM LastSeen)::int8 "
                       "FROM clients", db=db).split()

    before = dict(r.split("|") for r in seen())
    time.sleep(1.1)  # LastSeen has one-second resolution
    for c in cs:
        c.list()

    def moved():
        now = dict(r.split("|") for r in seen())
        return all(int(now[c.client_id.hex()]) > int(before[c.client_id.hex()]) for c in cs)

    assert wait_for(moved, 10), seen()


def lock_table(pg, db, table):
    """psql holding table locked for 8 s in a session of its own, started
    and sleeping: the process, to wait for."""
    holder = subprocess.Popen(
        [str(pg.bin / "psql"), "-X", "-q", "-h", str(pg.sock), "-p", str(pg.port),
         "-U", pg.user, "-d", db, "-c",
         "BEGIN; LOCK TABLE %s IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT" % table],
        env={**os.environ, **pg.env()}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for(lambda: pg.psql("SELECT count(*) FROM pg_stat_activity WHERE "
                                    "wait_event = 'PgSleep'", db=db).strip() == "1", 10)
    return holder


@pytest.mark.parametrize("client", ["stays", "leaves"])
def test_a_pull_waiting_for_postgresql_at_shutdown_ends_cleanly(start_server, pg, client):
    """SIGTERM while a 604's rows are still being read in PostgreSQL (the
    table locked by another session): the daemon waits for the statement,
    then exits 0. The read's end finds its connection gone and the loop
    freed; it must neither crash nor leak (ASan)."""
    srv, db = start_on(start_server, pg)
    a, b = bwmsg.MsgClient(H, srv.port), bwmsg.MsgClient(H, srv.port)
    a.register(unique_name("a"), key=rsa_key(0))
    b.register(unique_name("b"), key=rsa_key(1))
    a.send(b.client_id, 3, b"kept")
    holder = lock_table(pg, db, "messages")
    try:
        b.send_raw(bwmsg.pack_request(b.client_id, bwmsg.PULL))
        assert wait_for(lambda: pg.psql("SELECT count(*) FROM pg_stat_activity WHERE "
                                        "wait_event_type = 'Lock'", db=db).strip() == "1", 10)
        if client == "leaves":
            b.close()
        assert srv.stop(timeout=30) == 0
    finally:
        holder.wait(30)
        a.close()
        b.close()
    # the message was never delivered: it is still there
    srv2, _ = start_on(start_server, pg, db=db)
    c = bwmsg.MsgClient(H, srv2.port)
    c.client_id = b.client_id
    assert [r[3] for r in c.pull()] == [b"kept"]
    c.close()


@pytest.mark.files_only("20,000 rows with no object: in S3 a HEAD for each, per request")
def test_a_clients_thousands_of_rows_are_taken_in_and_one_another_node_removed_goes(
        start_server, pg):
    """On a shared database every vault request first reads the client's
    rows again, since another node may have changed them, and matches them
    to RAM: a file no row names any more goes. With 20,000 rows written
    elsewhere (objects absent) taken in and matched three times, a file
    whose row another node removed is gone here, and the others stay
    confirmable. (The matching is by lookup now, where a scan of the rows
    for each file held the loop 0.75-0.87 s per request at this size:
    measured by hand, not asserted here.)"""
    srv, db = start_on(start_server, pg)
    v = bw.VaultClient(H, srv.port)
    v.connect()
    try:
        bw.expect(v.register(unique_name("many")), bw.REGISTERED, "register")
        bw.expect(v.send_pubkey(), bw.KEY_STORED, "public key")
        for name in ("f0.bin", "f1.bin"):
            bw.expect(v.send_file(name, os.urandom(3000)).response, bw.FILE_RECEIVED, name)
            bw.expect(v.crc_ok(name), bw.ACK, "verdict on " + name)
        hexid = v.client_id.hex()
        pg.psql("INSERT INTO files(ID, FileName, PathName, Verified) "
                "SELECT decode('%s', 'hex'), convert_to('x' || g || '.bin', 'UTF8'), "
                "'files/%s/x' || g || '.bin', true FROM generate_series(1, 20000) g"
                % (hexid, hexid), db=db)
        pg.psql("DELETE FROM files WHERE ID = decode('%s', 'hex') AND FileNameText = 'f1.bin'"
                % hexid, db=db)
        for _ in range(3):  # the rows taken in, then matched against RAM
            bw.expect(v.crc_ok("f0.bin"), bw.ACK, "verdict on a file kept")
        code = v.crc_ok("f1.bin")
        assert code.code == bw.ERROR, "a verdict on a file whose row another node removed: %r" % (
            code,)
    finally:
        v.close()
    assert srv.proc.poll() is None
    srv.assert_serves(size=10_000)


def uncommitted_message(pg, db, frm, to, content):
    """Another writer (a session of our own, as another node would be) that
    has inserted a message under the next id and not committed: (its
    connection, to commit or close, and the id)."""
    import psycopg2
    other = pg.connect(db)
    other.autocommit = False
    cur = other.cursor()
    cur.execute("INSERT INTO messages(ID, ToClient, FromClient, Type, Content, ContentSize, "
                "ContentPath) VALUES (nextval('message_ids'), %s, %s, 3, %s, %s, NULL) "
                "RETURNING ID", (psycopg2.Binary(to), psycopg2.Binary(frm),
                                 psycopg2.Binary(content), len(content)))
    return other, cur.fetchone()[0]


def test_a_lower_id_committed_late_by_another_writer_is_not_deleted_unread(start_server, pg):
    """Daemons sharing the database take message ids from one sequence when
    they insert, and commit in their own time: another writer (here a
    session of our own, as another node would) has taken id N for bob and
    not committed yet, when alice's message to bob is stored under N+1 and
    bob pulls it. N commits before bob's close settles the pull. The
    settle used to delete every id <= N+1, and so N, which bob never got;
    now only the ids the reply carried go, and N comes with the next pull."""
    srv, db = start_on(start_server, pg)
    a, b = bwmsg.MsgClient(H, srv.port), bwmsg.MsgClient(H, srv.port)
    a.register(unique_name("alice"), key=rsa_key(0))
    b.register(unique_name("bob"), key=rsa_key(1))
    other, late = uncommitted_message(pg, db, a.client_id, b.client_id, b"late")
    try:
        mid = a.send(b.client_id, 3, b"now")
        assert mid > late
        recs = b.pull()
        assert [(r[1], r[3]) for r in recs] == [(mid, b"now")]
        other.commit()
    finally:
        other.close()
    b.close()  # evidence of delivery: the pull settles
    assert wait_for(lambda: pg.psql("SELECT count(*) FROM messages WHERE ID = %d" % mid,
                                    db=db).strip() == "0"), "the delivered message stayed"
    assert pg.psql("SELECT count(*) FROM messages WHERE ID = %d" % late, db=db).strip() == "1", \
        "a message nobody received was deleted"
    b2 = bwmsg.MsgClient(H, srv.port)
    b2.client_id = b.client_id
    assert [(r[1], r[3]) for r in b2.pull()] == [(late, b"late")]
    b2.close()
    assert wait_for(lambda: pg.psql("SELECT count(*) FROM messages", db=db).strip() == "0")


def test_a_lower_id_committed_while_a_pull_streams_waits_for_the_next_pull(start_server, pg):
    """The reply is planned (its size is in the 2104's header), then read
    again page by page as bob's window lets it go. A lower id that another
    writer commits in the meantime, between the planned rows, used to be
    streamed too: bytes the header had not counted. It is the next
    pull's now, and this pull's settle leaves it."""
    srv, db = start_on(start_server, pg)
    a, b = bwmsg.MsgClient(H, srv.port), bwmsg.MsgClient(H, srv.port)
    a.register(unique_name("alice"), key=rsa_key(0))
    b.register(unique_name("bob"), key=rsa_key(1))
    big = os.urandom(60000)
    before = [a.send(b.client_id, 3, big) for _ in range(160)]  # far past any window
    other, late = uncommitted_message(pg, db, a.client_id, b.client_id, b"late")
    try:
        after = [a.send(b.client_id, 3, b"tail %d" % i) for i in range(3)]
        p = bwmsg.MsgClient(H, srv.port)
        p.client_id = b.client_id
        sock = p.connect()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(bwmsg.pack_request(b.client_id, bwmsg.PULL, b""))
        # the 2104's header has come: the reply is planned, late not in it
        assert select.select([sock], [], [], 15)[0], "no reply to the 604"
        other.commit()
    finally:
        other.close()
    _, code, payload = p.read_response()
    assert code == bwmsg.WAITING
    recs = bwmsg.parse_records(payload)
    assert [r[1] for r in recs] == before + after
    assert all(r[3] == big for r in recs[:160])
    p.close()  # evidence of delivery
    assert wait_for(lambda: pg.psql("SELECT count(*) FROM messages", db=db).strip() == "1")
    b2 = bwmsg.MsgClient(H, srv.port)
    b2.client_id = b.client_id
    assert [(r[1], r[3]) for r in b2.pull()] == [(late, b"late")]
    b2.close()


def test_a_unique_violation_in_a_batch_acknowledges_nothing_it_rolled_back(start_server, pg):
    """A statement that fails with a unique violation (here raised by a
    trigger, as a row another writer made would) aborts its transaction.
    It was taken for a refusal that changed nothing, and when it was the
    batch's last statement the COMMIT that followed (which PostgreSQL
    answers with the tag ROLLBACK) was taken for a commit: a registration
    queued with it in the same batch got 2100 with no row behind it. The
    batch now runs again request by request; what is acknowledged is in."""
    srv, db = start_on(start_server, pg)
    a, b = bwmsg.MsgClient(H, srv.port, timeout=30), bwmsg.MsgClient(H, srv.port)
    a.register(unique_name("alice"), key=rsa_key(0))
    b.register(unique_name("bob"), key=rsa_key(1))
    v = bw.VaultClient(H, srv.port, key=rsa_key(4), timeout=30).connect()
    bw.expect(v.register(unique_name("up")), bw.REGISTERED)
    bw.expect(v.send_pubkey(), bw.KEY_STORED)
    pg.psql("CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN IF encode(NEW.FileName, 'escape') = 'boom.bin' THEN "
            "RAISE unique_violation; END IF; RETURN NEW; END$$; "
            "CREATE TRIGGER boom BEFORE INSERT OR UPDATE ON files FOR EACH ROW "
            "EXECUTE FUNCTION boom(); "
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN PERFORM pg_sleep(4); RETURN NEW; END$$; "
            "CREATE TRIGGER slow BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION slow()",
            db=db)
    answers = {}

    def run(key, fn):
        try:
            answers[key] = fn()
        except Exception as ex:  # reported by the asserts below
            answers[key] = ex

    # the writer sleeps in the message's insert while the next two queue:
    # a registration, then the upload's row, which fails last in the batch
    busy = threading.Thread(target=run, args=("send", lambda: a.send(b.client_id, 3, b"x")))
    busy.start()
    assert wait_for(lambda: pg.psql("SELECT count(*) FROM pg_stat_activity WHERE "
                                    "wait_event = 'PgSleep'", db=db).strip() == "1", 10)
    r = bwmsg.MsgClient(H, srv.port, timeout=30)
    rname = unique_name("late")
    reg = threading.Thread(target=run, args=("register",
                                             lambda: r.register(rname, key=rsa_key(2))))
    reg.start()
    time.sleep(0.5)  # the registration's insert is queued behind the sleep
    up = threading.Thread(target=run, args=("upload",
                                            lambda: v.send_file("boom.bin", b"b" * 5000)))
    up.start()
    for t in (busy, reg, up):
        t.join(40)
    assert not isinstance(answers.get("upload"), Exception), answers
    assert answers["upload"].response.code == bw.ERROR, answers["upload"].response
    rows = pg.psql("SELECT count(*) FROM clients WHERE NameText = '%s'" % rname, db=db).strip()
    assert not isinstance(answers.get("register"), Exception), answers
    assert rows == "1", "registered (2100) with no row behind it"
    v.close()
    assert srv.proc.poll() is None


def a_603_behind_a_held_lock_fails(srv, pg, db, held_s, mode="ACCESS EXCLUSIVE"):
    """alice's 603 to bob while another session holds messages locked (in
    the given mode, for at most held_s seconds) must get 9000 with a
    statement timeout (57014) logged: (alice, bob), registered."""
    import psycopg2  # noqa: F401  (pg.connect needs it)
    a, b = bwmsg.MsgClient(H, srv.port, timeout=held_s + 20), bwmsg.MsgClient(H, srv.port)
    a.register(unique_name("alice"), key=rsa_key(0))
    b.register(unique_name("bob"), key=rsa_key(1))
    holder = pg.connect(db)
    holder.autocommit = False
    holder.cursor().execute("LOCK TABLE messages IN %s MODE" % mode)
    release = threading.Timer(held_s, holder.rollback)
    release.start()
    try:
        code, _ = a.request(bwmsg.SEND, bwmsg.SEND_PREFIX.pack(b.client_id, 3, 1) + b"x")
        assert code == bwmsg.ERROR, (code, srv.log_tail())
        assert "57014" in srv.log(), srv.log_tail()
    finally:
        release.cancel()
        holder.rollback()
        holder.close()
    return a, b


# It waits 30 s (a lock held by another session): with the other tests,
# not alone. In the ASan pass among three other workers its 603 was once
# answered 2103 where the held lock should have made it wait (2026-11-29,
# not reproduced alone; then it waited 30 s twice, read and insert, and the
# lock went after 130 s): the statement error's C path runs under ASan in
# test_a_statement_timeout_the_site_set_is_kept, so this one does not.
# (Not contents_too: the 30 s wait runs once, in the embedded pass.)
@pytest.mark.long
@pytest.mark.plain_pass_only("waits 30 s; the same C path runs under ASan with a 2 s limit")
def test_a_statement_that_waits_past_30_s_fails_its_request_and_not_the_node(start_server, pg):
    """A session of another program holds a lock on messages and does not
    let go (idle in a transaction). No statement had a time limit: the
    603's insert waited for ever, every write and pull of the node queued
    behind it on the one writer, and a SIGTERM waited for it too. Now a
    statement fails after 30 s (PGOPTIONS, the URL or the server may say
    otherwise), its request gets the protocol's error, and the node goes
    on."""
    srv, db = start_on(start_server, pg)
    # the lock lets the 603's reads by (SHARE), so that only its insert
    # waits its 30 s; it goes after 100 s in any case, for a daemon that
    # would wait for ever
    a, b = a_603_behind_a_held_lock_fails(srv, pg, db, 100, mode="SHARE")
    assert a.send(b.client_id, 3, b"after") > 0
    b2 = bwmsg.MsgClient(H, srv.port)
    b2.client_id = b.client_id  # b's connection was closed as idle meanwhile
    assert [r[3] for r in b2.pull()] == [b"after"]
    srv.stop(timeout=30)


@pytest.mark.contents_too("the verified content stays")
def test_a_1031_whose_row_cannot_be_changed_gets_2107_not_2104(start_server, pg):
    """The client gives up on a replacement of a verified file (1031). The
    row naming the replacement must change before 2104 says it is gone;
    here PostgreSQL refuses the change (a trigger raises). The failure was
    ignored and 2104 sent: the row still named the rejected content, which
    a later 1029 would put in place. Now the 1031 gets 2107, and the
    verified file stays."""
    srv, db = start_on(start_server, pg)
    v = bw.VaultClient(H, srv.port, key=rsa_key(5)).connect()
    bw.expect(v.register(unique_name("giver")), bw.REGISTERED)
    bw.expect(v.send_pubkey(), bw.KEY_STORED)
    first, second = os.urandom(3000), os.urandom(3000)
    bw.expect(v.send_file("doc.bin", first).response, bw.FILE_RECEIVED)
    bw.expect(v.crc_ok("doc.bin"), bw.ACK)
    bw.expect(v.send_file("doc.bin", second).response, bw.FILE_RECEIVED)
    pg.psql("CREATE FUNCTION keep() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN RAISE EXCEPTION 'kept'; END$$; "
            "CREATE TRIGGER keep BEFORE UPDATE OR DELETE ON files FOR EACH ROW "
            "EXECUTE FUNCTION keep()", db=db)
    resp = v.giveup("doc.bin")
    assert resp.code == bw.ERROR, resp
    assert "could not be discarded" in srv.log(), srv.log_tail()
    pg.psql("DROP TRIGGER keep ON files", db=db)
    v.close()
    assert (srv.client_dir(v.client_id) / "doc.bin").read_bytes() == first
    assert srv.proc.poll() is None


def test_a_last_seen_write_asked_for_at_shutdown_does_not_outlive_the_store(start_server, pg):
    """SIGTERM while a LastSeen write waits in PostgreSQL (clients locked by
    another session) and another client was touched meanwhile. The
    write's answer, run as the store closed, asked for the next write on
    the loop; that ran after the store was freed (a use after free, ASan).
    The daemon exits 0."""
    srv, db = start_on(start_server, pg)
    a, b = bwmsg.MsgClient(H, srv.port), bwmsg.MsgClient(H, srv.port)
    a.register(unique_name("a"), key=rsa_key(0))
    b.register(unique_name("b"), key=rsa_key(1))
    time.sleep(1.1)  # LastSeen has one-second resolution: the next touch writes
    holder = lock_table(pg, db, "clients")
    try:
        a.send_raw(bwmsg.pack_request(a.client_id, bwmsg.PULL))
        assert wait_for(lambda: pg.psql("SELECT count(*) FROM pg_stat_activity WHERE "
                                        "wait_event_type = 'Lock'", db=db).strip() == "1", 10)
        time.sleep(1.1)
        b.send_raw(bwmsg.pack_request(b.client_id, bwmsg.PULL))  # touched, not written
        time.sleep(0.3)
        assert srv.stop(timeout=30) == 0
    finally:
        holder.wait(30)
        a.close()
        b.close()


@pytest.mark.files_only("reads the content where the row says, on the local disk")
def test_a_file_name_that_is_not_utf8_is_stored_and_found_again(start_server, pg, tmp_path):
    """File names are bytes like client names: 'caf\\xe9.bin' (Latin-1) is
    one. Its path went into a text column, which PostgreSQL refused (22021):
    every such upload got 2107, and each try ran its whole batch again
    request by request. The path is kept (in hex when it is not UTF-8),
    read back at a restart, and replaced by a later version."""
    d = tmp_path / "d"
    srv, db = start_on(start_server, pg, data_dir=d)
    name = b"caf\xe9" + unique_name("").encode() + b".bin"
    field = bw.name_field(name)
    v = bw.VaultClient(H, srv.port, key=rsa_key(6)).connect()
    bw.expect(v.register(unique_name("latin")), bw.REGISTERED)
    bw.expect(v.send_pubkey(), bw.KEY_STORED)
    first, second = os.urandom(3000), os.urandom(4000)
    bw.expect(v.send_file(field, first).response, bw.FILE_RECEIVED)
    bw.expect(v.request(bw.CRC_OK, field), bw.ACK)
    v.close()
    assert "22021" not in srv.log(), srv.log_tail()
    assert pg.psql("SELECT count(*) FROM files WHERE FileName = '\\x%s'::bytea" % name.hex(),
                   db=db).strip() == "1"
    srv.stop()
    srv2, _ = start_on(start_server, pg, db=db, data_dir=d)
    v2 = bw.VaultClient(H, srv2.port, key=rsa_key(6)).connect()
    v2.client_id, v2.name = v.client_id, v.name
    bw.expect(v2.reconnect(), bw.RECONNECTED)
    bw.expect(v2.send_file(field, second).response, bw.FILE_RECEIVED)
    # a verified version was there: this one waited aside until its 1029
    assert (srv2.client_dir(v.client_id) / os.fsdecode(name)).read_bytes() == first
    bw.expect(v2.request(bw.CRC_OK, field), bw.ACK)
    v2.close()
    assert (srv2.client_dir(v.client_id) / os.fsdecode(name)).read_bytes() == second
    assert "22021" not in srv2.log(), srv2.log_tail()
    srv2.stop()


def test_a_statement_timeout_the_site_set_is_kept(start_server, pg):
    """The daemon's 30 s applies only where the session has none: a site's
    PGOPTIONS (or the URL's options, or the server's configuration) is
    kept, and nothing is sent as a startup parameter (a pooler refuses
    those it does not know). Here PGOPTIONS says 2 s and a lock is held
    for 10: the 603 fails at 2 s instead of waiting the lock out."""
    srv, db = start_on(start_server, pg,
                       env={**pg.env(), "PGOPTIONS": "-c statement_timeout=2s"})
    a, b = a_603_behind_a_held_lock_fails(srv, pg, db, 10)
    a.close()
    b.close()


@pytest.mark.contents_too("a commit's content")
def test_a_commit_whose_path_lock_went_with_the_connection_is_given_up(start_server, pg):
    """The vault's path locks (and the claims of uploaders' connections)
    are advisory locks of the daemon's reading session: if that session
    ends, PostgreSQL frees them while the daemon believes it holds them,
    and another node could commit the same path at once. Here the upload's
    row write waits on a table lock held by psql; meanwhile its session
    holding the path's lock is terminated. Its row change is fenced by the
    lock, checked inside the same transaction: the commit is given up
    (2107) and no row is written, where it was once stored and confirmed
    without the lock."""
    srv, db = start_on(start_server, pg)
    c = bw.VaultClient(H, srv.port)
    c.connect()
    bw.expect(c.register(unique_name("fence")), bw.REGISTERED, "register")
    bw.expect(c.send_pubkey(), bw.KEY_STORED, "public key")
    holder = pg.connect(db)
    holder.autocommit = False
    cur = holder.cursor()
    cur.execute("LOCK TABLE files IN EXCLUSIVE MODE")  # reads go on
    got = []
    th = threading.Thread(target=lambda: got.append(c.send_file("doc.bin", os.urandom(5000))),
                          daemon=True)
    th.start()
    try:
        admin = pg.connect(db)
        acur = admin.cursor()
        where = "locktype = 'advisory' AND granted AND database = " \
                "(SELECT oid FROM pg_database WHERE datname = current_database())"

        def advisory_holders():
            acur.execute("SELECT DISTINCT pid FROM pg_locks WHERE " + where)
            return [r[0] for r in acur.fetchall()]
        assert wait_for(lambda: advisory_holders() != [], 10), srv.log_tail()
        # the session holding the path's lock (and the claim) ends
        pids = advisory_holders()
        assert len(pids) == 1, pids
        acur.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
        assert wait_for(lambda: advisory_holders() == [], 10)
        admin.close()
    finally:
        holder.commit()  # the row write goes on
        holder.close()
    th.join(timeout=30)
    assert got, "no answer to the upload"
    assert got[0].response.code == bw.ERROR, got[0].response
    assert "went with its session to PostgreSQL" in srv.log(), srv.log_tail()
    assert pg.psql("SELECT count(*) FROM files", db=db).strip() == "0"
    # and the daemon serves on: the same upload again is stored
    bw.expect(c.send_file("doc.bin", os.urandom(5000)).response, bw.FILE_RECEIVED, "again")
    bw.expect(c.crc_ok("doc.bin"), bw.ACK, "verdict")
    c.close()
    srv.stop()
