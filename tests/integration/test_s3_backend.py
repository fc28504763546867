"""bulwarkd with its contents in S3 (--blobs s3://BUCKET[/PREFIX]), against
a real object store started here (s3server.S3Server: Swift with s3api,
which checks every SigV4 signature), through a proxy that misbehaves on
request (faultproxy.py) where a test needs faults: each content one
object holding exactly the stored bytes under the prefix, large uploads
in parts, --check-config's one line per fault, the store down, failing or
slow (2107 and nothing visible, retries where a request may be repeated),
the sweep of abandoned uploads and scratch past the grace period (and
never before), a crash mid-upload, and memory bounded while many upload.
The rest of the suite runs on S3 as well (BULWARK_TEST_BLOBS=s3 in
scripts/check)."""

import itertools
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest

import bwd
import bwmsg
import bwvault as bw
import faultproxy
import s3server
import s3sign
from bwd import rsa_key, unique_name, wait_for

H = "127.0.0.1"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def store():
    if not s3server.installed():
        if os.environ.get("BULWARK_REQUIRE_BINARIES"):
            pytest.fail("Swift is not installed (scripts/deps test)")
        pytest.skip("Swift is not installed")
    srv = s3server.S3Server().init().start()
    yield srv
    srv.destroy()


@pytest.fixture
def s3(store):
    """The store, with a bucket of the test's own."""
    if "proxy" not in store.procs:
        store.start()
    store.bucket = store.bucket_for(unique_name("t"))
    yield store
    if "proxy" not in store.procs:
        store.start()


@pytest.fixture
def proxy(s3):
    p = faultproxy.FaultProxy(s3.port)
    yield p
    p.close()


def s3_opts(s3, prefix="node", endpoint=None, extra=()):
    return ["--blobs", "s3://%s/%s" % (s3.bucket, prefix) if prefix else "s3://" + s3.bucket,
            "--s3-endpoint", endpoint or s3.endpoint, "--s3-path-style", *extra]


def start_on(start_server, s3, *extra, prefix="node", endpoint=None, env=None, **kw):
    return start_server(*s3_opts(s3, prefix, endpoint), *extra,
                        env={**s3.env(), **(env or {})}, **kw)


def upload(srv, data, name="f.bin", key=0, timeout=30):
    v = bw.VaultClient(H, srv.port, timeout=timeout, key=rsa_key(key)).connect()
    bw.expect(v.register(unique_name("u")), bw.REGISTERED)
    bw.expect(v.send_pubkey(), bw.KEY_STORED)
    res = v.send_file(name, data)
    return v, res


def upload_fails(srv, data, name, key=0):
    """An upload the server must refuse with 2107. It may refuse before the
    body is all sent (a part failed) and close: the client's send then
    breaks, and the server's log says what it answered."""
    v = bw.VaultClient(H, srv.port, timeout=60, key=rsa_key(key)).connect()
    bw.expect(v.register(unique_name("u")), bw.REGISTERED)
    bw.expect(v.send_pubkey(), bw.KEY_STORED)
    before = srv.log().count("-> 2107")
    try:
        bw.expect(v.send_file(name, data).response, bw.ERROR)
    except OSError:
        assert wait_for(lambda: srv.log().count("-> 2107") > before, 10), srv.log_tail()
    return v


def objects(s3, prefix=""):
    return s3.keys(s3.bucket, prefix)


def test_each_content_is_one_object_of_the_exact_bytes_under_the_prefix(start_server, s3):
    srv = start_on(start_server, s3, prefix="a/b")
    small, big = os.urandom(3000), os.urandom(20 * MiB + 12345)  # 3 parts
    v1, r1 = upload(srv, small, "small.bin")
    bw.expect(r1.response, bw.FILE_RECEIVED)
    bw.expect(v1.crc_ok("small.bin"), bw.ACK)
    v2, r2 = upload(srv, big, "big.bin", key=1)
    bw.expect(r2.response, bw.FILE_RECEIVED)
    bw.expect(v2.crc_ok("big.bin"), bw.ACK)
    # a message too large to keep in the row goes to messages/
    a, b = bwmsg.MsgClient(H, srv.port), bwmsg.MsgClient(H, srv.port)
    a.register(unique_name("alice"), key=rsa_key(2))
    b.register(unique_name("bob"), key=rsa_key(3))
    content = os.urandom(300 * 1024)
    a.send(b.client_id, 3, content)
    keys = objects(s3)
    assert keys["a/b/files/%s/small.bin" % v1.client_id.hex()] == len(small)
    assert keys["a/b/files/%s/big.bin" % v2.client_id.hex()] == len(big)
    spilled = [k for k in keys if k.startswith("a/b/messages/")]
    assert len(spilled) == 1 and keys[spilled[0]] == len(content), keys
    assert all(k.startswith("a/b/") for k in keys), keys
    assert s3.get(s3.bucket, "a/b/files/%s/big.bin" % v2.client_id.hex()) == big
    assert s3.get(s3.bucket, spilled[0]) == content
    # the rows name the same keys, and the contents read back through us
    assert srv.file_row(v2.client_id, "big.bin")["PathName"] == \
        "files/%s/big.bin" % v2.client_id.hex()
    got = b.pull()
    assert [m[3] for m in got] == [content]
    b.close()  # delivered: the object goes with the row
    assert wait_for(lambda: not [k for k in objects(s3) if "/messages/" in k], 10)
    assert s3.uploads(s3.bucket) == [], "a multipart upload was left open"
    srv.stop()
    # a restart finds everything where it was: nothing swept that a row names
    srv = start_on(start_server, s3, prefix="a/b", data_dir=srv.data_dir)
    assert "a/b/files/%s/big.bin" % v2.client_id.hex() in objects(s3)
    v3, r3 = upload(srv, b"again", "again.bin", key=4)
    bw.expect(r3.response, bw.FILE_RECEIVED)
    srv.stop()


def test_a_verified_file_is_replaced_only_by_a_verified_one(start_server, s3):
    srv = start_on(start_server, s3)
    first, second = os.urandom(9 * MiB), os.urandom(10 * MiB)
    v, r = upload(srv, first, "doc.bin")
    bw.expect(r.response, bw.FILE_RECEIVED)
    bw.expect(v.crc_ok("doc.bin"), bw.ACK)
    key = "node/files/%s/doc.bin" % v.client_id.hex()
    bw.expect(v.reconnect(), bw.RECONNECTED)
    bw.expect(v.send_file("doc.bin", second).response, bw.FILE_RECEIVED)
    # pending: the verified one is still what the key holds
    assert s3.get(s3.bucket, key) == first
    bw.expect(v.crc_ok("doc.bin"), bw.ACK)
    assert s3.get(s3.bucket, key) == second
    assert wait_for(lambda: [k for k in objects(s3)] == [key], 10), objects(s3)
    srv.stop()


def check_config(s3, bucket_url, env=None, extra=(), data_dir=None):
    r = subprocess.run([str(bwd.BULWARKD), "--check-config", "--data-dir", str(data_dir),
                        "--blobs", bucket_url, "--s3-endpoint", s3.endpoint,
                        "--s3-path-style", *extra],
                       capture_output=True, text=True, timeout=60,
                       env={**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
                            **(env if env is not None else s3.env())})
    line = [ln for ln in r.stdout.splitlines() if "contents:" in ln]
    return r.returncode, (line[0] if line else r.stdout + r.stderr)


def test_check_config_says_what_is_wrong_in_one_line(s3, tmp_path):
    url = "s3://%s/p" % s3.bucket
    rc, line = check_config(s3, url, data_dir=tmp_path)
    assert rc == 0 and line.startswith("ok: contents: bucket %s" % s3.bucket), line
    rc, line = check_config(s3, url, data_dir=tmp_path,
                            env={**s3.env(), "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert rc == 1 and "refused the signature" in line, line
    rc, line = check_config(s3, "s3://no-such-bucket-here", data_dir=tmp_path)
    assert rc == 1 and "no such bucket no-such-bucket-here" in line, line
    rc, line = check_config(s3, url, data_dir=tmp_path,
                            env={**s3.env(), "AWS_ACCESS_KEY_ID": "nobody:none"})
    assert rc == 1 and ("does not know the access key" in line
                        or "refused" in line), line
    # the real cause, not "invalid configuration"
    rc, line = check_config(s3, url, data_dir=tmp_path, env={})
    assert rc == 1 and "cannot be opened: s3: no credentials: set AWS_ACCESS_KEY_ID" in line, line
    # the AWS shared-credentials file, a profile of it chosen by AWS_PROFILE
    creds = tmp_path / "credentials"
    creds.write_text("[default]\naws_access_key_id = x\naws_secret_access_key = y\n\n"
                     "[profile store]\naws_access_key_id = %s\naws_secret_access_key=%s\n"
                     % (s3.access_key, s3.secret_key))
    creds.chmod(0o600)
    rc, line = check_config(s3, url, data_dir=tmp_path, env={"AWS_PROFILE": "store"},
                            extra=("--s3-credentials-file", str(creds)))
    assert rc == 0, line
    with socket.socket() as s:
        s.bind((H, 0))
        dead = s.getsockname()[1]
    r = subprocess.run([str(bwd.BULWARKD), "--check-config", "--data-dir", str(tmp_path),
                        "--blobs", url, "--s3-endpoint", "http://127.0.0.1:%d" % dead,
                        "--s3-path-style"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, **s3.env()})
    assert r.returncode == 1 and "cannot reach bucket" in r.stdout, r.stdout
    for bad in ("s3://UPPER", "s3://b", "s3://bucket/../x", "s3:bucket"):
        rc, line = check_config(s3, bad, data_dir=tmp_path)
        assert rc == 1, (bad, line)


def test_store_down_gets_2107_nothing_visible_and_serving_resumes(start_server, s3):
    srv = start_on(start_server, s3)
    s3.stop()
    v = upload_fails(srv, os.urandom(12 * MiB), "lost.bin")  # in parts
    assert srv.file_row(v.client_id, "lost.bin") is None
    v = upload_fails(srv, os.urandom(5000), "lost.bin", key=2)  # one PUT
    assert srv.file_row(v.client_id, "lost.bin") is None
    s3.start()
    assert objects(s3) == {} and s3.uploads(s3.bucket) == []
    # the same client, the same name, now stored
    data = os.urandom(12 * MiB)
    v2, r2 = upload(srv, data, "lost.bin", key=1)
    bw.expect(r2.response, bw.FILE_RECEIVED)
    assert s3.get(s3.bucket, "node/files/%s/lost.bin" % v2.client_id.hex()) == data
    log = srv.log()
    assert log.count("does not answer") == 1, log
    assert "answers again" in log
    srv.stop()


def test_slowdown_and_500_are_retried_with_backoff(start_server, s3, proxy):
    srv = start_on(start_server, s3, endpoint=proxy.endpoint)
    proxy.add(method="PUT", query="partNumber=1&", action=("status", 503, "SlowDown"), times=2)
    proxy.add(method="PUT", query="partNumber=2&", action=("status", 500, "InternalError"),
              times=1)
    proxy.add(method="PUT", query="partNumber=3&", action=("reset",), times=1)
    data = os.urandom(20 * MiB)
    v, r = upload(srv, data, "retried.bin")
    bw.expect(r.response, bw.FILE_RECEIVED)
    assert s3.get(s3.bucket, "node/files/%s/retried.bin" % v.client_id.hex()) == data
    assert len(proxy.seen("PUT", "partNumber=1&")) == 3
    assert len(proxy.seen("PUT", "partNumber=2&")) == 2
    assert len(proxy.seen("PUT", "partNumber=3&")) == 2
    srv.stop()


def test_parts_grow_past_the_first_four(start_server, s3, proxy):
    """8 MiB parts for the first four, then 16 MiB (then 32): every part
    but the last exactly its size, and the object whole."""
    srv = start_on(start_server, s3, endpoint=proxy.endpoint)
    data = os.urandom(4 * 8 * MiB + 2 * 16 * MiB + 3 * MiB + 777)
    v, r = upload(srv, data, "grown.bin")
    bw.expect(r.response, bw.FILE_RECEIVED)
    assert s3.get(s3.bucket, "node/files/%s/grown.bin" % v.client_id.hex()) == data
    sizes = {int(re.search(r"partNumber=(\d+)&", e[2]).group(1)): e[4]
             for e in proxy.seen("PUT", "partNumber=") if e[3] == "passed"}
    assert sizes == {1: 8 * MiB, 2: 8 * MiB, 3: 8 * MiB, 4: 8 * MiB, 5: 16 * MiB,
                     6: 16 * MiB, 7: 3 * MiB + 777}, sizes
    srv.stop()


@pytest.mark.parametrize("fault", [("status", 503, "SlowDown"), ("status", 500, "InternalError"),
                                   ("reset",)])
def test_a_store_that_keeps_failing_gets_2107_and_leaves_nothing(start_server, s3, proxy, fault):
    srv = start_on(start_server, s3, endpoint=proxy.endpoint)
    proxy.add(method="PUT", query="partNumber=2&", action=fault)
    v = upload_fails(srv, os.urandom(20 * MiB), "failed.bin")
    assert srv.file_row(v.client_id, "failed.bin") is None
    # the parts sent are aborted with the upload: nothing under any key
    assert wait_for(lambda: s3.uploads(s3.bucket) == [], 10), s3.uploads(s3.bucket)
    assert objects(s3) == {}
    assert len(proxy.seen("PUT", "partNumber=2&")) == 4  # tried, then 3 more
    # a small one (one PUT) that fails the same way
    proxy.clear()
    proxy.add(method="PUT", action=fault)
    upload_fails(srv, b"small", "small.bin", key=1)
    assert objects(s3) == {}
    proxy.clear()
    v3, r3 = upload(srv, b"small", "small.bin", key=2)
    bw.expect(r3.response, bw.FILE_RECEIVED)
    srv.stop()


def test_a_slow_store_does_not_stall_other_clients(start_server, s3, proxy):
    srv = start_on(start_server, s3, endpoint=proxy.endpoint)
    gate = threading.Event()  # every PUT waits until the others are served
    proxy.add(method="PUT", action=("pass",), gate=gate)
    done = {}

    def slow():
        done["v"], done["r"] = upload(srv, os.urandom(10 * MiB), "slow.bin", timeout=60)

    t = threading.Thread(target=slow)
    t.start()
    try:
        assert wait_for(lambda: proxy.seen("PUT"), 10)
        # meanwhile: registrations and messages, which need no object
        a, b = bwmsg.MsgClient(H, srv.port), bwmsg.MsgClient(H, srv.port)
        a.register(unique_name("alice"), key=rsa_key(5))
        b.register(unique_name("bob"), key=rsa_key(6))
        a.send(b.client_id, 3, b"while the store is slow")
        assert [m[3] for m in b.pull()] == [b"while the store is slow"]
        assert t.is_alive(), "the slow upload finished before the others were served"
    finally:
        gate.set()
    t.join(60)
    bw.expect(done["r"].response, bw.FILE_RECEIVED)
    srv.stop()


def held_uploads_at_once(start_server, s3, proxy, n, want, *extra):
    """n small uploads at once while the store holds every PUT (the backup's
    copy attempt, then the object): how many reached the store together
    (once want have, and half a second more), each holding a worker. Then
    the store answers and every one is stored."""
    srv = start_on(start_server, s3, *extra, endpoint=proxy.endpoint)
    gate = threading.Event()
    proxy.add(method="PUT", action=("pass",), gate=gate)
    done = [None] * n

    def held():
        return len([e for e in proxy.seen("PUT") if e[3] == "held"])

    def one(i):
        done[i] = upload(srv, os.urandom(4096), "w%d.bin" % i, timeout=120)[1]

    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    try:
        wait_for(lambda: held() >= want, 30)
        time.sleep(0.5)  # none more arrives while those are held
        at_once = held()
    finally:
        gate.set()
    for t in ts:
        t.join(120)
    for r in done:
        bw.expect(r.response, bw.FILE_RECEIVED)
    srv.stop()
    return at_once


def test_a_daemon_on_s3_has_workers_for_the_round_trips(start_server, s3, proxy):
    """Each of the store's calls holds a worker for a network round trip.
    Two workers (a local disk's) let two uploads reach S3 at a time, the
    rest queued behind them: on a store 50 ms away that was 13 small
    sessions a second. Without --workers, a daemon on S3 has sixteen."""
    assert held_uploads_at_once(start_server, s3, proxy, 6, 6) == 6


def test_workers_given_are_what_reaches_the_store_at_once(start_server, s3, proxy):
    assert held_uploads_at_once(start_server, s3, proxy, 4, 2, "--workers", "2") == 2


def test_sweep_drops_abandoned_uploads_and_scratch_past_the_grace_only(start_server, s3,
                                                                         tmp_path):
    """S3 keeps times to the second (Swift lists them rounded up): the
    grace is 6 s, the old things are made 8.2 s before the start, the young
    one just before (so a start slowed by a loaded machine still finds it
    young: 2 s was too tight)."""
    d = tmp_path / "d"
    srv = start_on(start_server, s3, data_dir=d)
    v, r = upload(srv, b"kept", "kept.bin")
    bw.expect(r.response, bw.FILE_RECEIVED)
    srv.stop()
    mine = "node/files/%s/" % v.client_id.hex()

    def start_upload(key):
        st, _, body = s3.request("POST", "/%s/%s" % (s3.bucket, s3sign.quote_key(key)),
                                 query="uploads=")
        assert st == 200, body

    start_upload(mine + "old.bin")
    s3.request("PUT", "/%s/node/files/.incoming/.w-old" % s3.bucket, body=b"scratch")
    s3.request("PUT", "/%s/%sorphan.bin" % (s3.bucket, mine), body=b"orphan")
    s3.request("PUT", "/%s/other/files/.incoming/x" % s3.bucket, body=b"not ours")
    start_upload("other/files/abc/not-ours.bin")
    time.sleep(8.2)
    start_upload(mine + "young.bin")  # another daemon's, just begun
    srv = start_on(start_server, s3, "--blob-grace", "6", data_dir=d)
    keys = objects(s3)
    assert sorted(keys) == [mine + "kept.bin", "other/files/.incoming/x"], keys
    left = sorted(k for k, _ in s3.uploads(s3.bucket))
    assert left == [mine + "young.bin", "other/files/abc/not-ours.bin"], left
    # the periodic sweep takes the young one once it is past the grace
    assert wait_for(lambda: sorted(k for k, _ in s3.uploads(s3.bucket))
                    == ["other/files/abc/not-ours.bin"], 15), s3.uploads(s3.bucket)
    # its log line comes after the sweep of every space, so a moment later
    assert wait_for(lambda: "swept" in srv.log(), 10), srv.log_tail()
    srv.stop()


def test_an_orphan_left_while_serving_is_swept_once_past_the_grace(start_server, s3):
    """A daemon that crashed between object and row and never came back:
    the others' periodic sweep removes what no row names, only past the
    grace, and nothing a row names nor what is not a client's."""
    srv = start_on(start_server, s3, "--blob-grace", "2")
    v, r = upload(srv, b"kept", "kept.bin")
    bw.expect(r.response, bw.FILE_RECEIVED)
    mine = "node/files/%s/" % v.client_id.hex()
    s3.request("PUT", "/%s/%sorphan.bin" % (s3.bucket, mine), body=b"orphan")
    s3.request("PUT", "/%s/node/files/%s/foreign.bin" % (s3.bucket, "ef" * 16), body=b"x")
    assert wait_for(lambda: mine + "orphan.bin" not in objects(s3), 15), objects(s3)
    keys = objects(s3)
    assert mine + "kept.bin" in keys and "node/files/%s/foreign.bin" % ("ef" * 16) in keys
    assert "sweep: removing %sorphan.bin" % mine[len("node/"):] in srv.log()
    v2, r2 = upload(srv, b"after", "after.bin", key=1)
    bw.expect(r2.response, bw.FILE_RECEIVED)
    srv.stop()


def test_an_orphan_younger_than_the_grace_is_kept(start_server, s3, tmp_path):
    d = tmp_path / "d"
    srv = start_on(start_server, s3, data_dir=d)
    v, r = upload(srv, b"kept", "kept.bin")
    bw.expect(r.response, bw.FILE_RECEIVED)
    srv.stop()
    young = "node/files/%s/young.bin" % v.client_id.hex()
    s3.request("PUT", "/%s/%s" % (s3.bucket, young), body=b"in flight")
    srv = start_on(start_server, s3, data_dir=d)  # grace: an hour
    assert young in objects(s3)
    srv.stop()


def test_a_crash_mid_upload_leaves_nothing_visible_and_the_sweep_aborts_it(start_server, s3,
                                                                           tmp_path):
    d = tmp_path / "d"
    srv = start_on(start_server, s3, "--blob-grace", "1", data_dir=d)
    v = bw.VaultClient(H, srv.port, timeout=30, key=rsa_key(7)).connect()
    bw.expect(v.register(unique_name("u")), bw.REGISTERED)
    bw.expect(v.send_pubkey(), bw.KEY_STORED)
    data = os.urandom(40 * MiB)

    def body():
        try:
            v.send_file("crash.bin", data)
        except OSError:
            pass

    t = threading.Thread(target=body, daemon=True)
    t.start()
    assert wait_for(lambda: s3.uploads(s3.bucket), 20), "no part was sent"
    srv.proc.send_signal(signal.SIGKILL)
    srv.wait_exit()
    t.join(10)
    assert objects(s3) == {}
    time.sleep(1.2)
    srv2 = start_on(start_server, s3, "--blob-grace", "1", data_dir=d)
    assert wait_for(lambda: s3.uploads(s3.bucket) == [], 15), s3.uploads(s3.bucket)
    assert srv2.file_row(v.client_id, "crash.bin") is None
    srv2.stop()


@pytest.mark.parametrize("size,method,query", [(3000, "PUT", None),
                                               (20 * MiB, "POST", "uploadId=")],
                         ids=["one-put", "multipart"])
def test_a_crash_between_the_row_and_its_object_leaves_no_row(start_server, s3, proxy,
                                                               tmp_path, size, method, query):
    """A commit writes the new file's row first, then puts its object (the
    one PUT, or the multipart upload's completion). Killed in between, the
    next start drops the row: no file is listed that nothing holds. On a
    database other daemons share, it does so under the path's lock."""
    d = tmp_path / "d"
    srv = start_on(start_server, s3, data_dir=d, endpoint=proxy.endpoint)
    v = bw.VaultClient(H, srv.port, timeout=30, key=rsa_key(8)).connect()
    bw.expect(v.register(unique_name("u")), bw.REGISTERED)
    bw.expect(v.send_pubkey(), bw.KEY_STORED)
    gate = threading.Event()  # the object's put is held, then reset
    proxy.add(method=method, path=r"/crash\.bin$", query=query, action=("reset",), gate=gate)
    t = threading.Thread(target=lambda: _quiet(v.send_file, "crash.bin", os.urandom(size)),
                         daemon=True)
    t.start()
    try:
        assert wait_for(lambda: [e for e in proxy.seen(method) if e[3] == "held"], 30), \
            proxy.log
        assert srv.file_row(v.client_id, "crash.bin") is not None, "the row comes first"
        srv.proc.send_signal(signal.SIGKILL)
        srv.wait_exit()
    finally:
        gate.set()
    t.join(10)
    assert objects(s3, "node/files/") == {}
    srv2 = start_on(start_server, s3, data_dir=d)
    assert srv2.file_row(v.client_id, "crash.bin") is None, srv2.log_tail()
    assert "dropped the row" in srv2.log(), srv2.log_tail()
    # the name is free for a new upload, which the next start keeps
    v2 = bw.VaultClient(H, srv2.port, timeout=30, key=rsa_key(8)).connect()
    v2.client_id, v2.name = v.client_id, v.name
    bw.expect(v2.send_pubkey(), bw.KEY_STORED)
    data = os.urandom(4000)
    bw.expect(v2.send_file("crash.bin", data).response, bw.FILE_RECEIVED)
    bw.expect(v2.crc_ok("crash.bin"), bw.ACK)
    srv2.stop()
    srv3 = start_on(start_server, s3, data_dir=d)
    assert srv3.file_row(v.client_id, "crash.bin") is not None
    assert s3.get(s3.bucket, "node/files/%s/crash.bin" % bytes(v.client_id).hex()) == data
    srv3.stop()


def test_a_node_starting_beside_a_commit_between_row_and_object_keeps_the_row(
        start_server, s3, proxy, tmp_path):
    """The other side of the test above: on a database two nodes share, a
    row naming no object may be a live commit of the other node's, which
    holds the path's lock until its object is put. The starting node
    leaves that row alone, and the upload is stored whole."""
    import pgserver

    pg = pgserver.shared()
    db = pg.create_db(unique_name("live").replace("-", "_"))
    env = {**pg.env(), **s3.env()}
    a = start_server("--db", pg.url(db), *s3_opts(s3, endpoint=proxy.endpoint),
                     data_dir=tmp_path / "a", env=env)
    v = bw.VaultClient(H, a.port, timeout=60, key=rsa_key(9)).connect()
    bw.expect(v.register(unique_name("u")), bw.REGISTERED)
    bw.expect(v.send_pubkey(), bw.KEY_STORED)
    gate = threading.Event()
    proxy.add(method="PUT", path=r"/live\.bin$", action=("pass",), gate=gate)
    data, got = os.urandom(3000), {}
    t = threading.Thread(target=lambda: got.setdefault("r", v.send_file("live.bin", data)))
    t.start()
    try:
        assert wait_for(lambda: [e for e in proxy.seen("PUT") if e[3] == "held"], 30), proxy.log
        b = start_server("--db", pg.url(db), *s3_opts(s3), data_dir=tmp_path / "b", env=env)
        assert "live.bin names no object; left alone (another daemon holds its lock)" \
            in b.log(), b.log_tail()
    finally:
        gate.set()
    t.join(60)
    bw.expect(got["r"].response, bw.FILE_RECEIVED)
    bw.expect(v.crc_ok("live.bin"), bw.ACK)
    con = bwd.PgCon(pg.connect(db))
    assert con.execute("SELECT Verified FROM files WHERE ID = ? AND FileName = ?",
                       (bytes(v.client_id), "live.bin")).fetchall()[0][0] is True
    assert s3.get(s3.bucket, "node/files/%s/live.bin" % bytes(v.client_id).hex()) == data
    a.stop()
    b.stop()


def _not_a_listing(body):
    return (b"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>SlowDown</Code>"
            b"<Message>Please reduce your request rate.</Message></Error>")


def _cut_short(body):
    return body[:body.index(b"<Contents>") + 5]


def _raw_keys(body):
    body = re.sub(rb"<Key>(.*?)</Key>",
                  lambda m: b"<Key>" + urllib.parse.unquote_to_bytes(m.group(1)) + b"</Key>", body)
    return body.replace(b"<EncodingType>url</EncodingType>", b"")


def _without(name):
    def drop(body):
        return re.sub(rb"<Contents>(?:(?!</Contents>).)*?%s</Key>.*?</Contents>"
                      % re.escape(name.encode()), b"", body, flags=re.S)
    return drop


@pytest.mark.parametrize("answer", [_not_a_listing, _cut_short, _raw_keys, _without("keep.bin")],
                         ids=["error-200", "cut-short", "raw-keys", "key-left-out"])
def test_a_listing_that_is_wrong_at_start_up_loses_no_file(start_server, s3, proxy, tmp_path,
                                                           answer):
    """Start-up lists files/ once for the objects' sizes. A store's 200
    that is not a listing, a listing cut short, keys not url-encoded as
    asked, or a key simply left out made a confirmed file's row look like
    one whose object was gone: the row was dropped and the sweep then
    removed the object. A row is dropped only when the store, asked for
    that object itself, says it is not there; a page that is not a whole
    listing of url-encoded keys is refused."""
    d = tmp_path / "d"
    srv = start_on(start_server, s3, data_dir=d, endpoint=proxy.endpoint)
    v = bw.VaultClient(H, srv.port, timeout=30, key=rsa_key(3)).connect()
    bw.expect(v.register(unique_name("u")), bw.REGISTERED)
    bw.expect(v.send_pubkey(), bw.KEY_STORED)
    data = os.urandom(5000)
    for name in ("keep.bin", "c++ x.bin"):
        bw.expect(v.send_file(name, data).response, bw.FILE_RECEIVED)
        bw.expect(v.crc_ok(name), bw.ACK)
    v.close()
    srv.stop()
    proxy.add(method="GET", query=r"list-type=2&prefix=node%2Ffiles%2F$", action=("pass",),
              rewrite=answer, times=1)
    srv2 = start_on(start_server, s3, "--blob-grace", "1", data_dir=d, endpoint=proxy.endpoint)
    assert [e for e in proxy.seen("GET") if e[3] == "delayed"], "the listing was not answered"
    assert "dropped the row" not in srv2.log(), srv2.log_tail()
    for name in ("keep.bin", "c++ x.bin"):
        assert srv2.file_row(v.client_id, name) is not None, name
    # with their sizes: a key the listing lacks is asked for
    assert "vault: loaded 2 files, 10000 bytes stored" in srv2.log(), srv2.log_tail()
    # and the periodic sweep (every 1.25 s here, past the 1 s grace)
    # removes neither object
    time.sleep(3)
    srv2.stop()
    for name in ("keep.bin", "c++ x.bin"):
        assert s3.get(s3.bucket, "node/files/%s/%s" % (bytes(v.client_id).hex(), name)) == data


def test_a_completion_whose_answer_is_lost_is_known_by_its_etag(start_server, s3, proxy):
    """A multipart upload's completion reaches the store but its answer
    is lost: sent again, it gets NoSuchUpload. The object is ours if its
    ETag is the one our parts make, and the upload is stored."""
    srv = start_on(start_server, s3, endpoint=proxy.endpoint)
    proxy.add(method="POST", query="uploadId=", action=("lose",), times=1)
    # the try again answered as S3 does (Swift would complete it again)
    proxy.add(method="POST", query="uploadId=", action=("status", 404, "NoSuchUpload"),
              times=1)
    data = os.urandom(20 * MiB + 77)
    v, r = upload(srv, data, "lost.bin")
    assert r.response.code == bw.FILE_RECEIVED, srv.log_tail()
    bw.expect(v.crc_ok("lost.bin"), bw.ACK)
    assert [e for e in proxy.seen("POST") if e[3] == "lost"], proxy.log
    assert "was completed by an earlier try (its ETag is ours)" in srv.log(), srv.log_tail()
    assert s3.get(s3.bucket, "node/files/%s/lost.bin" % bytes(v.client_id).hex()) == data
    srv.stop()


def test_a_completion_refused_as_no_such_upload_over_an_older_object_is_not_stored(
        start_server, s3, proxy):
    """NoSuchUpload to a completion (the upload aborted elsewhere: another
    node's sweep, a lifecycle rule) where an older object of the same size
    is: the size alone said "ours", and the client was told its new
    content was stored while the store held the old. 2107, and the older
    object stays."""
    srv = start_on(start_server, s3, endpoint=proxy.endpoint)
    v = bw.VaultClient(H, srv.port, timeout=60, key=rsa_key(4)).connect()
    bw.expect(v.register(unique_name("u")), bw.REGISTERED)
    bw.expect(v.send_pubkey(), bw.KEY_STORED)
    old, new = os.urandom(20 * MiB), os.urandom(20 * MiB)
    bw.expect(v.send_file("x.bin", old).response, bw.FILE_RECEIVED)  # not confirmed
    proxy.add(method="POST", query="uploadId=", action=("status", 404, "NoSuchUpload"))
    try:
        bw.expect(v.send_file("x.bin", new).response, bw.ERROR)
    except OSError:
        pass
    assert "-> 2107" in srv.log(), srv.log_tail()
    assert s3.get(s3.bucket, "node/files/%s/x.bin" % bytes(v.client_id).hex()) == old
    srv.stop()


def test_a_listing_whose_pages_lead_round_in_a_cycle_is_refused(start_server, s3, proxy,
                                                                  tmp_path):
    """A store whose truncated listing pages name, by turns, two
    continuation tokens: start-up asked for page after page for ever, its
    memory growing by the keys of each. A token given twice fails the
    listing, and the start-up stops with a clear line."""
    pages = itertools.count()

    def cycle(body):
        i = next(pages)
        entries = b"".join(b"<Contents><Key>node/files/x%d-%d</Key><LastModified>"
                           b"2020-01-01T00:00:00.000Z</LastModified><Size>1</Size></Contents>"
                           % (i, k) for k in range(100))
        return (b"<?xml version='1.0' encoding='UTF-8'?><ListBucketResult>"
                b"<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>"
                b"<NextContinuationToken>%s</NextContinuationToken>%s</ListBucketResult>"
                % (b"AB"[i % 2:i % 2 + 1], entries))

    proxy.add(method="GET", query=r"list-type=2", action=("pass",), rewrite=cycle)
    srv = start_on(start_server, s3, data_dir=tmp_path / "d", endpoint=proxy.endpoint,
                   wait=False)
    code, log = srv.wait_exit(30)
    assert code not in (None, 0), log
    assert "a truncated page without a new continuation token" in log, log
    assert len(proxy.seen("GET", "list-type=2")) < 20, len(proxy.seen("GET", "list-type=2"))


def verified_then_pending(v, old, new):
    """v registers, stores doc.bin as old and confirms it, then sends new
    over it: new waits as the pending replacement for its 1029."""
    bw.expect(v.register(unique_name("u")), bw.REGISTERED)
    bw.expect(v.send_pubkey(), bw.KEY_STORED)
    bw.expect(v.send_file("doc.bin", old).response, bw.FILE_RECEIVED)
    bw.expect(v.crc_ok("doc.bin"), bw.ACK)
    bw.expect(v.send_file("doc.bin", new).response, bw.FILE_RECEIVED)


def test_a_1029_whose_row_fails_after_a_half_done_move_keeps_the_verified_file(
        start_server, s3, proxy, tmp_path):
    """A 1029 puts the pending replacement over the verified file (S3: a
    copy, then a delete of the pending key) and then writes the row. The
    delete failed (the copy done) and then the row could not be written
    (the database gone): the undo, seeing the pending key still there,
    took the move for one that never happened and removed the backup. The
    client was told 2107 and the verified file was the replacement, its
    old content lost. The move said it was done: the undo puts the old
    content back."""
    import pgserver

    pg = pgserver.PgServer().init().start()
    try:
        db = pg.create_db("undo")
        srv = start_server("--db", pg.url(db), *s3_opts(s3, endpoint=proxy.endpoint),
                           data_dir=tmp_path / "d", env={**pg.env(), **s3.env()})
        old, new = os.urandom(5000), os.urandom(6000)
        v = bw.VaultClient(H, srv.port, timeout=60, key=rsa_key(0)).connect()
        verified_then_pending(v, old, new)
        gate = threading.Event()
        proxy.add(method="DELETE", path=r"/files/\.pending/", gate=gate,
                  action=("status", 500, "InternalError"))
        got = {}
        t = threading.Thread(target=lambda: got.setdefault("r", v.crc_ok("doc.bin")))
        t.start()
        try:
            assert wait_for(lambda: [e for e in proxy.seen("DELETE") if e[3] == "held"], 20), \
                proxy.log
            pg.stop()  # the row's write will fail
        finally:
            gate.set()
        t.join(60)
        assert got["r"].code == bw.ERROR, got
        proxy.clear()
        key = "node/files/%s/doc.bin" % bytes(v.client_id).hex()
        assert s3.get(s3.bucket, key) == old, "the verified file's content was lost"
        srv.kill()
        srv.stopped = True
    finally:
        pg.destroy()


def test_a_sweep_leaves_another_nodes_upload_that_is_still_sending(start_server, s3, tmp_path):
    """Two nodes on one store and database. An upload to a runs longer
    than the grace period (3 s here for an hour), its parts coming every
    second or so. b's periodic sweep aborted it as abandoned, since only
    a knows its own uploads: a's next part got NoSuchUpload and the client
    2107. An upload one of whose parts is younger than the grace is left."""
    import pgserver

    pg = pgserver.shared()
    db = pg.create_db(unique_name("live").replace("-", "_"))
    common = ["--db", pg.url(db), *s3_opts(s3), "--blob-grace", "3"]
    env = {**pg.env(), **s3.env()}
    a = start_server(*common, data_dir=tmp_path / "a", env=env)
    b = start_server(*common, data_dir=tmp_path / "b", env=env)
    v = bw.VaultClient(H, a.port, timeout=60, key=rsa_key(5)).connect()
    bw.expect(v.register(unique_name("u")), bw.REGISTERED)
    bw.expect(v.send_pubkey(), bw.KEY_STORED)
    data = os.urandom(48 * MiB)

    def paced():  # about 6 MiB a second: 8 s in all
        for i in range(0, len(data), MiB):
            yield data[i:i + MiB]
            time.sleep(0.15)

    r = v.send_file("long.bin", chunks=paced(), size=len(data))
    assert r.response.code == bw.FILE_RECEIVED, a.log_tail()
    assert "aborted an upload" not in b.log(), b.log_tail()
    bw.expect(v.crc_ok("long.bin"), bw.ACK)
    assert s3.get(s3.bucket, "node/files/%s/long.bin" % bytes(v.client_id).hex()) == data
    a.stop()
    b.stop()


def test_a_listing_of_uploads_that_leads_round_in_a_cycle_ends(start_server, s3, proxy,
                                                                tmp_path):
    """The sweep's listing of multipart uploads goes on from the last
    upload of each page. A store whose truncated pages end, by turns, on
    two uploads kept the start-up's sweep asking for ever (only a page
    equal to the one before was noticed). A page that leads back to one
    already read ends the listing; the daemon starts."""
    pages = itertools.count()
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())

    def cycle(body):
        k = next(pages) % 2
        return (b"<?xml version='1.0' encoding='UTF-8'?><ListMultipartUploadsResult>"
                b"<IsTruncated>true</IsTruncated><Upload><Key>node/files/x%d</Key>"
                b"<UploadId>u%d</UploadId><Initiated>%s</Initiated></Upload>"
                b"</ListMultipartUploadsResult>" % (k, k, now.encode()))

    proxy.add(method="GET", query=r"uploads=", action=("pass",), rewrite=cycle)
    srv = start_on(start_server, s3, data_dir=tmp_path / "d", endpoint=proxy.endpoint)
    assert "does not advance" in srv.log(), srv.log_tail()
    assert len(proxy.seen("GET", "uploads=")) < 20
    srv.stop()


def test_a_1029_whose_copy_took_effect_unseen_keeps_the_verified_file(start_server, s3,
                                                                       proxy):
    """A 1029's move of the pending replacement over the verified file is,
    on S3, a copy: one that the store did while every answer to it was
    lost (503s in their place) failed the move, and the undo, finding the
    pending key still there, took the file for untouched and removed the
    backup: 2107 to the client, the file replaced all the same, its old
    content gone. The backup now goes back over the file."""
    srv = start_on(start_server, s3, endpoint=proxy.endpoint)
    old, new = os.urandom(5000), os.urandom(6000)
    v = bw.VaultClient(H, srv.port, timeout=60, key=rsa_key(6)).connect()
    verified_then_pending(v, old, new)
    proxy.add(method="PUT", path=r"/doc\.bin$", action=("lose",))
    bw.expect(v.crc_ok("doc.bin"), bw.ERROR)
    assert [e for e in proxy.seen("PUT") if e[3] == "lost"], proxy.log
    proxy.clear()
    key = "node/files/%s/doc.bin" % bytes(v.client_id).hex()
    assert s3.get(s3.bucket, key) == old, "the verified file's content was lost"
    srv.stop()


def test_an_object_whose_key_is_longer_than_any_of_ours_is_passed_over(start_server, s3,
                                                                         tmp_path):
    """Another tool's object under files/ whose name, url-encoded as the
    listing gives it, is longer than any key of ours (400 bytes of UTF-8:
    1,200 characters): the listing passes it over, and the start-up, the
    reconcile and the messenger's go on; the object is left alone."""
    name = "node/files/" + "\u00e9" * 200
    st, _, _ = s3.request("PUT", "/%s/%s" % (s3.bucket, s3sign.quote_key(name)), b"x")
    assert st == 200, st
    srv = start_on(start_server, s3, data_dir=tmp_path / "d")
    v, r = upload(srv, os.urandom(3000), "f.bin")
    bw.expect(r.response, bw.FILE_RECEIVED)
    srv.stop()
    srv = start_on(start_server, s3, data_dir=tmp_path / "d")
    srv.stop()
    assert s3.get(s3.bucket, name) == b"x"


def _quiet(fn, *args):
    try:
        fn(*args)
    except OSError:
        pass


def test_memory_stays_bounded_while_many_upload_at_once(start_server, s3):
    n, size = 24, 24 * MiB
    srv = start_on(start_server, s3, "--max-uploads-per-addr", "100")
    base = srv.rss_peak()
    errors = []

    def one(i):
        try:
            v, r = upload(srv, os.urandom(size), "m%d.bin" % i, key=i, timeout=120)
            if r.response.code != bw.FILE_RECEIVED:
                errors.append(r.response)
            v.close()
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    assert not errors, errors[:3]
    assert len(objects(s3)) == n
    grown = srv.rss_peak() - base
    # the uploads' bytes are 576 MiB; each holds two 1 MiB (or 256 KiB)
    # decryption buffers and no part in memory
    assert grown < 128 * MiB, "RSS grew by %d MiB" % (grown // MiB)
    srv.stop()


def test_migrate_copies_contents_into_the_bucket(start_server, s3, tmp_path):
    import pgserver

    if pgserver.pg_bin() is None:
        pytest.skip("PostgreSQL is not installed")
    from test_pg_migrate import fill_source, tree_digest

    pg = pgserver.shared()
    src, _, (a, b, v, doc, kept, _top) = fill_source(start_server, tmp_path)
    before = tree_digest(src)
    dst = tmp_path / "dst"
    dst.mkdir()
    db = pg.create_db(unique_name("mig").replace("-", "_"))

    def migrate():
        r = subprocess.run([str(bwd.BULWARKD), "migrate", "--from", str(src), "--data-dir",
                            str(dst), "--db", pg.url(db), *s3_opts(s3)],
                           capture_output=True, text=True, timeout=300,
                           env={**os.environ, **pg.env(), **s3.env()})
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    out = migrate()
    assert "contents: 2, 2 copied now" in out, out
    assert tree_digest(src) == before
    assert "nothing was left to do" in migrate()
    assert s3.get(s3.bucket, "node/files/%s/doc.bin" % v.client_id.hex()) == doc
    srv = start_server("--db", pg.url(db), *s3_opts(s3), data_dir=dst,
                       env={**pg.env(), **s3.env()})
    b2 = bwmsg.MsgClient(H, srv.port)
    b2.client_id = b.client_id
    assert [(rec[1], rec[3]) for rec in b2.pull()] == kept
    b2.close()
    srv.stop()


def test_contents_written_in_pieces_keep_their_bytes_across_the_memory_limit(
        start_server, s3, shim, tmp_path):
    """An object is kept in memory up to 64 KiB, then spooled. A migration
    whose reads of the source come 40,000 bytes at a time (the shim) writes
    each content in pieces: sizes around the limit are stored from memory,
    spilled to the spool with what memory held, or spooled from the first
    piece. S3 then holds exactly the source's bytes."""
    src = tmp_path / "src"
    srv = start_server("--db", "sqlite:%s/defensive.db" % src, "--blobs", "file:%s" % src,
                       data_dir=src)
    v = bw.VaultClient(H, srv.port, key=rsa_key(2)).connect()
    bw.expect(v.register(unique_name("pieces")), bw.REGISTERED)
    bw.expect(v.send_pubkey(), bw.KEY_STORED)
    sizes = (1, 40000, 50000, 65536, 65537, 80001, 300000)
    sent = {}
    for n in sizes:
        name = "p%d.bin" % n
        sent[name] = os.urandom(n)
        bw.expect(v.send_file(name, sent[name]).response, bw.FILE_RECEIVED)
        bw.expect(v.crc_ok(name), bw.ACK)
    v.close()
    srv.stop()
    dst = tmp_path / "dst"
    dst.mkdir()
    r = subprocess.run([str(bwd.BULWARKD), "migrate", "--from", str(src), "--data-dir",
                        str(dst), *s3_opts(s3, prefix="pieces")],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, **s3.env(), **bwd.fault_env(shim),
                            "BW_SHORT_READ": "40000"})
    assert r.returncode == 0, r.stdout + r.stderr
    cut = [int(w) for w in r.stderr.split() if w.isdigit()]
    assert "reads cut short" in r.stderr and cut and cut[-1] > 0, r.stderr
    for name, data in sent.items():
        got = s3.get(s3.bucket, "pieces/files/%s/%s" % (v.client_id.hex(), name))
        assert got == data, "%s: %d bytes stored of %d" % (name, len(got or b""), len(data))


def test_a_migration_into_s3_killed_midway_resumes_and_verifies(start_server, s3, proxy,
                                                                  tmp_path):
    import pgserver

    if pgserver.pg_bin() is None:
        pytest.skip("PostgreSQL is not installed")
    from test_pg_migrate import fill_source

    pg = pgserver.shared()
    src, _, (a, b, v, doc, kept, _top) = fill_source(start_server, tmp_path)
    dst = tmp_path / "dst"
    dst.mkdir()
    db = pg.create_db(unique_name("mig").replace("-", "_"))

    def migrate(endpoint):
        return subprocess.Popen([str(bwd.BULWARKD), "migrate", "--from", str(src),
                                 "--data-dir", str(dst), "--db", pg.url(db),
                                 *s3_opts(s3, endpoint=endpoint)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **pg.env(), **s3.env()})

    proxy.add(method="PUT", action=("pass",), delay=3.0)
    m = migrate(proxy.endpoint)
    assert wait_for(lambda: proxy.seen("PUT"), 30), "no content was being copied"
    m.kill()
    m.wait(30)
    out = migrate(s3.endpoint).communicate(timeout=300)[0]
    assert "contents: 2, " in out and "verified" in out, out
    assert "nothing was left to do" in migrate(s3.endpoint).communicate(timeout=300)[0]
    assert s3.get(s3.bucket, "node/files/%s/doc.bin" % v.client_id.hex()) == doc
    assert s3.uploads(s3.bucket) == []


def test_start_up_lists_the_store_once_not_an_object_at_a_time(start_server, s3, tmp_path):
    """A node that joins a cluster must serve without a pause: with 60
    stored files and 30 stored message contents, start-up makes a handful
    of S3 requests (a listing for the sizes, one for the objects no row
    names, per space), not a request or more per object; the sizes it
    loads are the objects' own, and nothing is reconciled away."""
    srv = start_on(start_server, s3, data_dir=tmp_path / "d")
    v = bw.VaultClient(H, srv.port, key=rsa_key(0)).connect()
    bw.expect(v.register(unique_name("many")), bw.REGISTERED)
    bw.expect(v.send_pubkey(), bw.KEY_STORED)
    total = 0
    for i in range(60):
        data = os.urandom(1000 + i)
        total += len(data)
        bw.expect(v.send_file("f%02d.bin" % i, data).response, bw.FILE_RECEIVED)
        bw.expect(v.crc_ok("f%02d.bin" % i), bw.ACK)
    v.close()
    # and 30 messages whose contents are objects of their own
    a, b = bwmsg.MsgClient(H, srv.port), bwmsg.MsgClient(H, srv.port)
    a.register(unique_name("a"), key=rsa_key(1))
    b.register(unique_name("b"), key=rsa_key(2))
    bodies = [os.urandom(200000 + i) for i in range(30)]
    ids = [a.send(b.client_id, 4, body) for body in bodies]
    a.close()
    assert len([k for k in objects(s3, "node/messages/")]) == 30
    srv.stop()
    srv2 = start_on(start_server, s3, data_dir=tmp_path / "d", log_path=tmp_path / "second.log")
    assert "vault: loaded 60 files, %d bytes stored" % total in srv2.log()
    assert "reconcile:" not in srv2.log(), srv2.log_tail()
    b.port = srv2.port
    b.close()
    assert [(r[1], r[3]) for r in b.pull()] == list(zip(ids, bodies))
    srv2.stop()
    import re

    m = re.search(r"s3: (\d+) requests", srv2.log())
    assert m, srv2.log_tail()
    # the start-up's requests, and the 30 contents read by the pull
    assert int(m.group(1)) < 20 + 30, "start-up made %s S3 requests" % m.group(1)


def test_a_node_starting_beside_another_drops_no_message_stored_meanwhile(start_server, s3,
                                                                          proxy, tmp_path):
    """A node starting on a shared store lists messages/ once, then reads
    the rows. A message another node stores in between (its content, then
    its row) has a row the listing does not cover: the content is asked
    for before the row would be dropped, and the message is delivered."""
    import pgserver

    pg = pgserver.shared()
    db = pg.create_db(unique_name("two").replace("-", "_"))
    env = {**pg.env(), **s3.env()}
    a = start_server("--db", pg.url(db), *s3_opts(s3), data_dir=tmp_path / "a", env=env)
    alice = bwmsg.MsgClient(H, a.port, padded=True)
    bob = bwmsg.MsgClient(H, a.port, padded=True)
    alice.register(unique_name("alice"), key=rsa_key(0))
    bob.register(unique_name("bob"), key=rsa_key(1))
    # b's listing of messages/ is answered as the store had it, 4 s later
    listing = r"list-type=2&prefix=[^&]*messages%2F$"
    proxy.add(method="GET", query=listing, action=("pass",), after=4.0, times=1)
    b = start_server("--db", pg.url(db), *s3_opts(s3, endpoint=proxy.endpoint),
                     data_dir=tmp_path / "b", env=env, wait=False)
    assert bwd.wait_for(lambda: proxy.seen("GET", listing), 30), b.log_tail()
    content = os.urandom(300 * 1024)  # past the inline bound: an object of its own
    mid = alice.send(bob.client_id, 4, content)
    assert bwd.wait_for(lambda: (b._take_ports(), b.port is not None)[1], 30), b.log_tail()
    assert "dropped" not in b.log(), b.log_tail()
    got = bwmsg.MsgClient(H, b.port, padded=True)
    got.client_id, got.key, got.name = bob.client_id, bob.key, bob.name
    recs = got.pull()
    assert [(r[1], r[3]) for r in recs] == [(mid, content)]


def test_an_upload_longer_than_the_grace_is_not_swept_from_under_its_sender(start_server, s3,
                                                                          proxy):
    """The periodic sweep aborts multipart uploads older than the grace.
    It took this daemon's own uploads still in progress for abandoned
    ones: a slow sender's (the default --min-rate lets one take hours) got
    NoSuchUpload at its next part, and 2107, again at every try. An upload
    this process has open is left alone, whatever its age."""
    srv = start_on(start_server, s3, "--blob-grace", "4", endpoint=proxy.endpoint)
    proxy.add(method="PUT", query="partNumber=", action=("pass",), delay=3.0)
    data = os.urandom(5 * 8 * MiB + 1234)  # six parts, 3 s each: past the grace
    v, r = upload(srv, data, "slow.bin", timeout=120)
    bw.expect(r.response, bw.FILE_RECEIVED)
    assert s3.get(s3.bucket, "node/files/%s/slow.bin" % v.client_id.hex()) == data
    bw.expect(v.crc_ok("slow.bin"), bw.ACK)
    v.close()
    assert "NoSuchUpload" not in srv.log(), srv.log_tail()
    srv.stop()


def test_a_hung_store_gets_its_2107_within_the_s3_timeout_and_s3_is_in_the_metrics(
        start_server, s3, proxy):
    """A store that takes a request and never answers held the upload for
    two minutes (libcurl's 30 s without progress, four tries) with no way
    to shorten it, and S3's request counts showed only in the log at
    close. --s3-timeout bounds a request, its tries included: the client
    gets 2107 in about that long; and the metrics show the requests, the
    retries and failures, the bytes and the time."""
    hold = threading.Event()
    srv = start_on(start_server, s3, "--s3-timeout", "3", "--metrics-listen", H + ":0",
                   endpoint=proxy.endpoint, want=("vault", "metrics"))
    try:
        proxy.add(method="PUT", path=r"/hung\.bin$", action=("pass",), gate=hold)
        v, res = upload(srv, os.urandom(3000), name="hung.bin", timeout=20)
        assert res.response.code == bw.ERROR, res.response
        assert "(--s3-timeout)" in srv.log() or "Timeout was reached" in srv.log() or \
            "Operation too slow" in srv.log(), srv.log_tail()
        v.close()
    finally:
        hold.set()
    # a store that answers: the figures move
    v, res = upload(srv, os.urandom(3000), name="fine.bin", key=1)
    bw.expect(res.response, bw.FILE_RECEIVED, "upload")
    v.close()
    with urllib.request.urlopen("http://%s:%d/metrics" % (H, srv.ports["metrics"]),
                                timeout=10) as r:
        text = r.read().decode()
    figures = {m.group(1): float(m.group(2)) for m in
               re.finditer(r"^bulwark_(s3_\w+)(?:\{[^}]*\})? (\S+)$", text, re.M)}
    for name in ("s3_requests_total", "s3_failures_total", "s3_sent_bytes_total",
                 "s3_received_bytes_total", "s3_request_milliseconds_total"):
        assert figures.get(name, 0) > 0, (name, sorted(figures))
    assert "s3_retries_total" in figures


def test_a_name_that_is_not_utf8_stores_restarts_and_migrates_on_s3(start_server, s3, tmp_path):
    """The vault takes any name of bytes 0x20-0xff; S3 keys are UTF-8, and
    a Latin-1 name always got 2107 (HTTP 400 InvalidURI), while the
    directory store kept it: a data directory holding one could never be
    migrated into S3. The object's name writes each byte that begins no
    UTF-8 sequence as a backslash and two hex digits (no stored name holds
    a backslash), and is read back so when listed: the file stores,
    survives the start-up's reconciliation, and migrates."""
    names = [b"caf\xe9.txt", "caf\u00e9-utf8.txt".encode(), b"50%\xff off.bin", b"\xc3(\x80.bin"]
    data = {n: os.urandom(3000 + i) for i, n in enumerate(names)}
    srv = start_on(start_server, s3)
    v = bw.VaultClient(H, srv.port, key=rsa_key(4)).connect()
    bw.expect(v.register(unique_name("latin")), bw.REGISTERED)
    bw.expect(v.send_pubkey(), bw.KEY_STORED)
    for n in names:
        bw.expect(v.send_file(n, data[n]).response, bw.FILE_RECEIVED, repr(n))
        bw.expect(v.crc_ok(n), bw.ACK, repr(n))
    v.close()
    hexid = v.client_id.hex()
    assert s3.get(s3.bucket, "node/files/%s/caf\\e9.txt" % hexid) == data[names[0]]
    assert s3.get(s3.bucket, "node/files/%s/caf\u00e9-utf8.txt" % hexid) == data[names[1]]
    srv.stop()
    # the start-up lists the objects and meets the rows: nothing is taken
    # for an orphan, every file is still there
    srv = start_on(start_server, s3, data_dir=srv.data_dir)
    assert "removing" not in srv.log(), srv.log_tail()
    v = bw.VaultClient(H, srv.port, key=rsa_key(4))
    v.client_id = bytes.fromhex(hexid)
    v.connect()
    for n in names:  # verified and still stored: a 1029 again is answered 2104
        bw.expect(v.crc_ok(n), bw.ACK, repr(n))
    v.close()
    srv.stop()

    # a single-machine data directory holding such a name migrates into S3
    src = tmp_path / "src"
    local = start_server("--db", "sqlite:%s/defensive.db" % src, "--blobs", "file:%s" % src,
                         data_dir=src)
    w = bw.VaultClient(H, local.port, key=rsa_key(5)).connect()
    bw.expect(w.register(unique_name("mig")), bw.REGISTERED)
    bw.expect(w.send_pubkey(), bw.KEY_STORED)
    bw.expect(w.send_file(names[0], data[names[0]]).response, bw.FILE_RECEIVED)
    bw.expect(w.crc_ok(names[0]), bw.ACK)
    w.close()
    local.stop()
    dst = tmp_path / "dst"
    dst.mkdir()
    r = subprocess.run([str(bwd.BULWARKD), "migrate", "--from", str(src), "--data-dir",
                        str(dst), *s3_opts(s3, prefix="mig")],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, **s3.env()})
    assert r.returncode == 0, r.stdout + r.stderr
    assert s3.get(s3.bucket, "mig/files/%s/caf\\e9.txt" % w.client_id.hex()) == data[names[0]]


def _uploads_in(segments):
    """The multipart uploads whose parts are in the segments container
    (Swift names a part <key>/<upload id>/<part number>)."""
    return {s.rsplit("/", 2)[0] + "/" + s.rsplit("/", 2)[1] for s in segments}


def test_a_multipart_file_replaced_leaves_none_of_its_parts_behind(start_server, s3):
    """Swift keeps a multipart object's parts in the bucket's segments
    container and frees them only when the object is deleted: an
    overwrite (a 1029's copy over the file, or a new upload completed
    over an unconfirmed one) used to leave 8+ MiB behind for good per
    replacement. Every replacement now leaves only the current object's."""
    srv = start_on(start_server, s3)
    v = bw.VaultClient(H, srv.port, timeout=60, key=rsa_key(7)).connect()
    verified_then_pending(v, os.urandom(9 * MiB), os.urandom(10 * MiB))
    key = "node/files/%s/doc.bin" % bytes(v.client_id).hex()
    assert len(_uploads_in(s3.segments(s3.bucket))) == 2  # the file's and the pending one's
    last = os.urandom(9 * MiB + 5)
    bw.expect(v.crc_ok("doc.bin"), bw.ACK)
    assert s3.segments(s3.bucket) == [], s3.segments(s3.bucket)
    # an upload stored over an unconfirmed one (no 1029 between): the
    # new object is completed where the old one was
    bw.expect(v.send_file("big.bin", os.urandom(9 * MiB)).response, bw.FILE_RECEIVED)
    first = _uploads_in(s3.segments(s3.bucket))
    assert len(first) == 1, first
    bw.expect(v.send_file("big.bin", last).response, bw.FILE_RECEIVED)
    now = _uploads_in(s3.segments(s3.bucket))
    assert len(now) == 1 and now != first, (first, now)
    assert s3.get(s3.bucket, key.replace("doc.bin", "big.bin")) == last
    srv.stop()


def test_a_1029_cut_between_removing_the_file_and_copying_its_replacement_is_finished(
        start_server, s3, tmp_path):
    """On S3 a 1029 deletes the old file before its replacement is copied
    to its key (so that a multipart file's parts go with it); a daemon
    killed between the two left the row naming a missing file beside its
    replacement. The next start-up puts the replacement in place,
    unverified (no 1029 is known to have finished: the client's next one
    confirms it), under the path's lock."""
    srv = start_on(start_server, s3, data_dir=tmp_path / "d")
    old, new = os.urandom(9 * MiB), os.urandom(10 * MiB)
    v = bw.VaultClient(H, srv.port, timeout=60, key=rsa_key(8)).connect()
    verified_then_pending(v, old, new)
    key = "node/files/%s/doc.bin" % bytes(v.client_id).hex()
    pending = [k for k in objects(s3) if "/.pending/" in k]
    assert len(pending) == 1, objects(s3)
    srv.kill()
    srv.stopped = True  # on purpose
    st, _, body = s3.request("DELETE", "/%s/%s" % (s3.bucket, s3sign.quote_key(key)))
    assert st == 204, (st, body)
    srv = start_on(start_server, s3, data_dir=tmp_path / "d")
    assert "its replacement was cut before it took its place" in srv.log()
    assert s3.get(s3.bucket, key) == new
    assert not [k for k in objects(s3) if "/.pending/" in k], objects(s3)
    srv.stop()
