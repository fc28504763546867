"""Hostile and malformed input against bulwarkd. Each test ends with the
server still alive and serving a fresh, normal session.

Error semantics under test (spec/files.md and the server's contract):
  - the whole request was read and is merely invalid -> 2107, connection open
  - framing errors (unknown code, wrong fixed size, oversized payload, bad
    1028 sizes) -> 2107, then the server closes the connection
"""

import os
import random
import select
import socket
import threading
import time

import pytest

import bwvault as bw
from bwd import fault_env, is_true, read_by_peer, rsa_key, unique_name, wait_for

M32 = 0xFFFFFFFF


def keyed(server, key_index=11):
    c = server.client(key=rsa_key(key_index))
    bw.expect(c.register(unique_name("hostile")), bw.REGISTERED)
    bw.expect(c.send_pubkey(), bw.KEY_STORED)
    return c


def expect_error_then_close(c, what=""):
    resp = c.recv_response()
    assert resp.code == bw.ERROR and resp.payload == b"", "%s: got %r" % (what, resp)
    assert c.is_closed_by_peer(timeout=5), "%s: connection left open after a framing error" % what


def expect_error_and_open(c, what=""):
    resp = c.recv_response()
    assert resp.code == bw.ERROR and resp.payload == b"", "%s: got %r" % (what, resp)
    # The connection must still carry requests.
    saved = c.client_id
    resp = c.request(bw.REGISTER, bw.name_field(unique_name("after")), client_id=bw.ZERO_ID)
    assert resp.code == bw.REGISTERED, "%s: connection unusable after 2107: %r" % (what, resp)
    c.client_id = saved


def assert_no_trace(server, client_id, file_name):
    """A failed 1028 leaves no file, no files row, and nothing in .incoming."""
    def clean():
        return (not (server.client_dir(client_id) / file_name).exists()
                and server.file_row(client_id, file_name) is None
                and server.incoming_files() == [])
    ok = wait_for(clean, 5)
    assert ok, "leftovers: stored=%r row=%r incoming=%r" % (
        server.stored_files(client_id), server.file_row(client_id, file_name),
        server.incoming_files())


def request_bytes(code, size, payload=b"", client_id=bw.ZERO_ID):
    return bw.pack_request_header(client_id, code, size) + payload


# --------------------------------------------------------------------------
# Framing


@pytest.mark.stores_nothing("refused at its header, before anything is stored")
@pytest.mark.parametrize("cut", [1, 10, 22])
def test_header_cut_short_then_close_is_harmless(server, cut):
    with server.client() as c:
        c.send_raw(bw.pack_request(bw.ZERO_ID, bw.REGISTER, bw.name_field("cut"))[:cut])
    server.assert_serves()


@pytest.mark.stores_nothing("refused at its header, before anything is stored")
@pytest.mark.parametrize("code", [bw.REGISTER, bw.PUBLIC_KEY, bw.RECONNECT, bw.CRC_OK,
                                  bw.CRC_BAD, bw.CRC_GIVE_UP])
def test_payload_size_ffffffff_on_a_fixed_size_request_is_rejected_and_closed(server, code):
    with server.client() as c:
        c.send_raw(request_bytes(code, M32))
        expect_error_then_close(c, "code %d size 0xFFFFFFFF" % code)
    server.assert_serves()


@pytest.mark.stores_nothing("refused at its header, before anything is stored")
def test_payload_size_ffffffff_on_1028_is_rejected_and_closed(server):
    with keyed(server) as c:
        content = M32 - bw.FILE_PREFIX_SIZE  # not a multiple of 16
        c.send_raw(request_bytes(bw.SEND_FILE, M32, bw.pack_file_prefix(content, "big"),
                                 c.client_id))
        expect_error_then_close(c, "1028 size 0xFFFFFFFF")
    server.assert_serves()


@pytest.mark.stores_nothing("refused at its header, before anything is stored")
def test_1028_sizes_that_only_match_modulo_2_to_32_are_rejected(server):
    with keyed(server) as c:
        content = 0xFFFFFFF0
        size = (content + bw.FILE_PREFIX_SIZE) & M32  # 243: wraps around
        c.send_raw(request_bytes(bw.SEND_FILE, size, bw.pack_file_prefix(content, "wrap"),
                                 c.client_id))
        expect_error_then_close(c, "1028 with wrapped size")
    server.assert_serves()


@pytest.mark.stores_nothing("refused at its header, before anything is stored")
def test_1028_over_the_max_file_size_is_rejected_and_closed(start_server):
    server = start_server("--max-file-size", str(1 << 20))
    with keyed(server) as c:
        content = 2 << 20
        c.send_raw(request_bytes(bw.SEND_FILE, content + bw.FILE_PREFIX_SIZE,
                                 bw.pack_file_prefix(content, "huge.bin"), c.client_id))
        expect_error_then_close(c, "1028 over --max-file-size")
        assert_no_trace(server, c.client_id, "huge.bin")
    server.assert_serves(size=100_000)


def test_a_body_trickling_below_min_rate_is_cut_off_after_the_grace(start_server):
    server = start_server("--timeout", "2", "--min-rate", "20000")
    content = 1 << 20
    with keyed(server) as c:
        c.send_raw(request_bytes(bw.SEND_FILE, content + bw.FILE_PREFIX_SIZE,
                                 bw.pack_file_prefix(content, "trickle.bin"), c.client_id))
        c.sock.settimeout(10)
        closed = False
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:  # ~1 KiB/s: never idle, far too slow
            try:
                c.send_raw(bytes(1024))
            except OSError:
                closed = True
                break
            time.sleep(1.0)  # ~1 KiB/s
        if not closed:
            c.sock.settimeout(3)
            try:
                closed = c.sock.recv(1) == b""
            except OSError:
                closed = True
        assert closed, "a body far below --min-rate must be cut off"
        assert wait_for(lambda: "slower than 20000 bytes/s" in server.log(), 3)
        assert_no_trace(server, c.client_id, "trickle.bin")
    server.assert_serves(size=200_000)


@pytest.mark.files_only("counts the uploads in progress in files/.incoming")
def test_uploads_past_max_uploads_are_refused_until_one_ends(start_server):
    server = start_server("--max-uploads", "2")
    # half of it is a whole first chunk (1 MiB), whose write makes the file
    content = 2 << 20
    started = []
    # two uploads that stay open, half sent: at that rate each would end
    # within --timeout, so neither is a slow holder a newcomer may evict
    # (with 4 KiB sent, one was after a second: a loaded machine gave the
    # third upload a slot)
    for i in range(2):
        c = keyed(server).__enter__()
        c.send_raw(request_bytes(bw.SEND_FILE, content + bw.FILE_PREFIX_SIZE,
                                 bw.pack_file_prefix(content, "slow%d.bin" % i), c.client_id)
                   + bytes(content // 2))
        started.append(c)
    assert wait_for(lambda: server.log().count("event=upload_started ") == 2, 5)
    assert wait_for(lambda: len(server.incoming_files()) == 2, 5)
    with keyed(server) as c:
        c.send_raw(request_bytes(bw.SEND_FILE, content + bw.FILE_PREFIX_SIZE,
                                 bw.pack_file_prefix(content, "third.bin"), c.client_id))
        expect_error_then_close(c, "a third upload with --max-uploads 2")
        assert not (server.client_dir(c.client_id) / "third.bin").exists()
        assert server.file_row(c.client_id, "third.bin") is None
        assert len(server.incoming_files()) == 2, "only the two uploads in progress"
    started.pop().close()  # one slot frees up
    assert wait_for(lambda: "aborted" in server.log(), 5)
    assert wait_for(lambda: len(server.incoming_files()) == 1, 5)
    server.assert_serves(size=100_000)
    for c in started:
        c.close()


@pytest.mark.stores_nothing("refused at its header, before anything is stored")
@pytest.mark.parametrize("code,size", [
    (bw.REGISTER, 254), (bw.REGISTER, 256), (bw.REGISTER, 0),
    (bw.PUBLIC_KEY, 414), (bw.PUBLIC_KEY, 416), (bw.PUBLIC_KEY, 255),
    (bw.RECONNECT, 254), (bw.CRC_OK, 256), (bw.CRC_BAD, 0), (bw.CRC_GIVE_UP, 254)])
def test_fixed_size_request_with_the_wrong_size_is_rejected_and_closed(server, code, size):
    payload = (bw.name_field("wrongsize") + bytes(512))[:size]
    with server.client() as c:
        c.send_raw(request_bytes(code, size, payload))
        expect_error_then_close(c, "code %d with payload_size %d" % (code, size))
    server.assert_serves()


@pytest.mark.stores_nothing("refused at its header, before anything is stored")
@pytest.mark.parametrize("code,size", [(0, 0), (1, 0), (1024, 0), (1032, 255), (2100, 16),
                                       (2107, 0), (65535, 0)])
def test_unknown_request_code_is_rejected_and_closed(server, code, size):
    with server.client() as c:
        c.send_raw(request_bytes(code, size, bytes(size)))
        expect_error_then_close(c, "unknown code %d" % code)
    server.assert_serves()


@pytest.mark.stores_nothing("refused at its header, before anything is stored")
def test_1028_with_payload_size_not_259_plus_content_size_is_rejected_and_closed(server):
    for delta in (16, -16, 1, -1):
        with keyed(server) as c:
            content = 64
            c.send_raw(request_bytes(bw.SEND_FILE, bw.FILE_PREFIX_SIZE + content + delta,
                                     bw.pack_file_prefix(content, "d.bin"), c.client_id))
            expect_error_then_close(c, "1028 size off by %d" % delta)
            assert_no_trace(server, c.client_id, "d.bin")
    server.assert_serves()


@pytest.mark.stores_nothing("refused at its header, before anything is stored")
@pytest.mark.parametrize("content", [0, 1, 15, 17, 1000])
def test_1028_content_size_not_a_positive_multiple_of_16_is_rejected_and_closed(server, content):
    with keyed(server) as c:
        c.send_raw(request_bytes(bw.SEND_FILE, bw.FILE_PREFIX_SIZE + content,
                                 bw.pack_file_prefix(content, "m.bin"), c.client_id))
        expect_error_then_close(c, "1028 content_size %d" % content)
        assert_no_trace(server, c.client_id, "m.bin")
    server.assert_serves()


def test_pipelined_requests_in_one_send_are_all_answered_in_order(server):
    names = [unique_name("pipe") for _ in range(3)]
    burst = b"".join(bw.pack_request(bw.ZERO_ID, bw.REGISTER, bw.name_field(n)) for n in names)
    burst += bw.pack_request(bw.ZERO_ID, bw.REGISTER, bw.name_field(names[0]))
    with server.client() as c:
        c.send_raw(burst)
        codes = [c.recv_response().code for _ in range(4)]
        assert codes == [bw.REGISTERED] * 3 + [bw.NAME_TAKEN]
        assert not c.is_closed_by_peer(timeout=0.3)
    server.assert_serves()


def test_requests_trickled_one_byte_at_a_time_are_served(server):
    key = rsa_key(12)
    name = unique_name("trickle")
    with server.client(key=key) as c:
        def trickle(data):
            for i in range(len(data)):
                c.send_raw(data[i:i + 1])
                wait_for(lambda: read_by_peer(c.sock), 5, 0.001)  # a read per byte
        trickle(bw.pack_request(bw.ZERO_ID, bw.REGISTER, bw.name_field(name)))
        resp = bw.expect(c.recv_response(), bw.REGISTERED)
        cid = resp.client_id
        trickle(bw.pack_request(cid, bw.PUBLIC_KEY, bw.name_field(name) + bw.spki_der(key)))
        resp = bw.expect(c.recv_response(), bw.KEY_STORED)
        aes = bw.unwrap_key(key, resp.payload[16:])
        data = os.urandom(100)
        ct = bw.aes_encrypt(aes, data)
        trickle(bw.pack_request(cid, bw.SEND_FILE, bw.pack_file_prefix(len(ct), "t.bin") + ct))
        resp = bw.expect(c.recv_response(), bw.FILE_RECEIVED)
        assert bw.parse_file_received(resp.payload)[3] == bw.cksum(data)
    assert wait_for(lambda: (server.client_dir(cid) / "t.bin").is_file()
                    and (server.client_dir(cid) / "t.bin").read_bytes() == data, 3)
    server.assert_serves()


# --------------------------------------------------------------------------
# Invalid content in a complete request: 2107, connection stays open


@pytest.mark.stores_nothing("refused at its header, before anything is stored")
def test_name_without_nul_is_rejected_and_the_connection_stays_open(server):
    with server.client() as c:
        c.send_raw(request_bytes(bw.REGISTER, 255, b"A" * 255))
        expect_error_and_open(c, "name without NUL")
    assert not server.query("SELECT * FROM clients WHERE Name LIKE 'AAAA%'")
    server.assert_serves()


@pytest.mark.stores_nothing("refused at its header, before anything is stored")
@pytest.mark.parametrize("raw", [b"bad\x01name", b"tab\tname", b"nl\nname", b"del\x7fname",
                                 b"\x1b[31mred", b"cr\rname"])
def test_name_with_control_characters_is_rejected(server, raw):
    with server.client() as c:
        c.send_raw(request_bytes(bw.REGISTER, 255, bw.raw_field(raw)))
        expect_error_and_open(c, "name %r" % raw)
    assert not server.query("SELECT * FROM clients WHERE Name = ?", (raw.decode("latin-1"),))
    server.assert_serves()


def bad_public_keys():
    from Cryptodome.PublicKey import ECC
    rng = random.Random(1)
    ec = ECC.generate(curve="P-256").public_key().export_key(format="DER")
    good = bw.spki_der(rsa_key(13))
    rsa2048 = bw.RSA.generate(2048, e=17).publickey().export_key("DER")
    wrong_oid = bytearray(good)
    wrong_oid[14] ^= 0x01  # inside the rsaEncryption OID
    return {
        "random": rng.randbytes(160),
        "zeros": bytes(160),
        "ec-p256": ec + bytes(160 - len(ec)),
        "rsa2048-truncated": rsa2048[:160],
        "wrong-oid": bytes(wrong_oid),
        "modulus-cut": good[:100] + bytes(60),
    }


def test_public_key_that_is_not_an_rsa_1024_key_is_rejected(server):
    key = rsa_key(14)
    with server.client(key=key) as c:
        name = unique_name("badkey")
        bw.expect(c.register(name), bw.REGISTERED)
        for label, blob in bad_public_keys().items():
            assert len(blob) == 160
            c.send_request(bw.PUBLIC_KEY, bw.name_field(name) + blob)
            resp = c.recv_response()
            assert resp.code == bw.ERROR, "key %s accepted: %r" % (label, resp)
        assert server.client_row(c.client_id)["PublicKey"] in (None, b"")
        # 1027 now: no public key on record
        resp = c.reconnect(name)
        assert resp.code == bw.RECONNECT_REFUSED, resp
        # the connection is still good for a real key
        bw.expect(c.send_pubkey(name, key), bw.KEY_STORED)
    assert bytes(server.client_row(c.client_id)["PublicKey"]) == bw.spki_der(key)
    server.assert_serves()


def test_public_key_naming_another_client_is_rejected(server):
    with server.client() as a:
        bw.expect(a.register(unique_name("a")), bw.REGISTERED)
    with server.client(key=rsa_key(15)) as b:
        bw.expect(b.register(unique_name("b")), bw.REGISTERED)
        resp = b.send_pubkey(a.name)  # header id is b's
        assert resp.code == bw.ERROR, resp
        expect_open = b.request(bw.REGISTER, bw.name_field(unique_name()), client_id=bw.ZERO_ID)
        assert expect_open.code == bw.REGISTERED
    assert server.client_row(a.client_id)["PublicKey"] in (None, b"")
    assert server.client_row(b.client_id)["PublicKey"] in (None, b"")
    server.assert_serves()


def test_public_key_for_an_unknown_id_is_rejected(server):
    with server.client(key=rsa_key(16)) as c:
        c.client_id = os.urandom(16)
        resp = c.send_pubkey(unique_name("ghost"))
        assert resp.code == bw.ERROR, resp
        assert not c.is_closed_by_peer(timeout=0.3)
    server.assert_serves()


def test_reconnect_for_an_unknown_id_is_refused_and_the_session_goes_on(server):
    with server.client(key=rsa_key(17)) as c:
        ghost = os.urandom(16)
        c.client_id = ghost
        resp = c.reconnect(unique_name("ghost"))
        assert resp.code == bw.RECONNECT_REFUSED and resp.payload == ghost
        c.client_id = bw.ZERO_ID
        bw.expect(c.register(unique_name()), bw.REGISTERED)
    server.assert_serves()


def test_1028_before_any_key_is_rejected_and_leaves_nothing(server):
    with server.client() as c:
        bw.expect(c.register(unique_name("nokey")), bw.REGISTERED)
        res = c.send_file("early.bin", os.urandom(100), aes_key=os.urandom(16))
        assert res.response.code == bw.ERROR, res.response
        assert_no_trace(server, c.client_id, "early.bin")
        expect_open = c.request(bw.REGISTER, bw.name_field(unique_name()), client_id=bw.ZERO_ID)
        assert expect_open.code == bw.REGISTERED
    server.assert_serves()


def test_1028_from_an_unknown_id_is_rejected(server):
    with server.client() as c:
        c.client_id = os.urandom(16)
        res = c.send_file("stranger.bin", os.urandom(100), aes_key=os.urandom(16))
        assert res.response.code == bw.ERROR, res.response
    assert not server.client_dir(c.client_id).exists()
    server.assert_serves()


@pytest.mark.parametrize("size", [32, (1 << 20) + 32])
@pytest.mark.parametrize("last", [0x00, 0x11, 0xFF, "inconsistent"])
def test_1028_with_bad_padding_is_rejected_and_leaves_nothing(server, size, last):
    with keyed(server) as c:
        plain = bytearray(os.urandom(size))
        if last == "inconsistent":
            plain[-4:] = b"\x01\x04\x04\x04"  # claims 4 bytes of padding, one is wrong
        else:
            plain[-1] = last
        ct = bw.aes_encrypt_raw(c.aes_key, bytes(plain))
        c.send_raw(request_bytes(bw.SEND_FILE, bw.FILE_PREFIX_SIZE + len(ct),
                                 bw.pack_file_prefix(len(ct), "padded.bin") + ct, c.client_id))
        resp = c.recv_response()
        assert resp.code == bw.ERROR, "bad padding accepted: %r" % resp
        # no oracle to query at leisure: the server closes the connection
        assert c.is_closed_by_peer(timeout=3)
        assert_no_trace(server, c.client_id, "padded.bin")
    # one failure does not revoke the key: a good 1028 with it works
    with server.client() as c2:
        c2.client_id = c.client_id
        data = os.urandom(500)
        res = c2.send_file("good.bin", data, aes_key=c.aes_key)
        bw.expect(res.response, bw.FILE_RECEIVED)
        assert res.server_crc == res.crc
    server.assert_serves()


def test_bad_padding_does_not_touch_an_earlier_file_of_the_same_name(server):
    with keyed(server) as c:
        old = os.urandom(4000)
        bw.expect(c.send_file("keep.bin", old).response, bw.FILE_RECEIVED)
        bw.expect(c.crc_ok("keep.bin"), bw.ACK)
        ct = bw.aes_encrypt_raw(c.aes_key, os.urandom(63) + b"\x00")
        c.send_raw(request_bytes(bw.SEND_FILE, bw.FILE_PREFIX_SIZE + len(ct),
                                 bw.pack_file_prefix(len(ct), "keep.bin") + ct, c.client_id))
        assert c.recv_response().code == bw.ERROR
    path = server.client_dir(c.client_id) / "keep.bin"
    assert path.read_bytes() == old
    row = server.file_row(c.client_id, "keep.bin")
    assert row is not None and is_true(row["Verified"])
    assert wait_for(lambda: server.incoming_files() == [], 3), server.incoming_files()
    server.assert_serves()


@pytest.mark.parametrize("sent", [0, 16, 512 * 1024])
def test_1028_cut_off_mid_body_leaves_nothing(server, sent):
    with keyed(server) as c:
        content = 1 << 20
        body = bw.aes_encrypt(c.aes_key, os.urandom(content - 1))
        assert len(body) == content
        c.send_raw(request_bytes(bw.SEND_FILE, bw.FILE_PREFIX_SIZE + content,
                                 bw.pack_file_prefix(content, "cut.bin") + body[:sent],
                                 c.client_id))
        cid = c.client_id
    assert_no_trace(server, cid, "cut.bin")
    server.assert_serves()


# --------------------------------------------------------------------------
# File names


def snapshot(root):
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.mark.parametrize("raw,base", [
    ("../../x", "x"), ("/abs/x", "x"), ("a/b", "b"), ("..\\..\\win", "win"),
    ("dir\\sub\\f.txt", "f.txt"), ("./dot", "dot"), ("a/../../../etc/passwd-x", "passwd-x")])
def test_path_like_file_names_are_stored_as_base_names(server, tmp_path, raw, base):
    outside_before = snapshot(tmp_path)
    abs_existed = os.path.exists("/abs/x")
    data = os.urandom(777)
    with keyed(server) as c:
        inside_before = snapshot(server.data_dir)
        res = c.send_file(raw, data)
        bw.expect(res.response, bw.FILE_RECEIVED)
        assert res.server_crc == res.crc
        bw.expect(c.crc_ok(raw), bw.ACK)
    cdir = server.client_dir(c.client_id)
    assert wait_for(lambda: (cdir / base).is_file(), 3), "not stored as %s: %r" % (
        base, server.stored_files(c.client_id))
    assert (cdir / base).read_bytes() == data
    assert server.stored_files(c.client_id) == [base]

    hexid = c.client_id.hex()
    allowed = {"files", "files/.incoming", "files/" + hexid, "files/%s/%s" % (hexid, base)}
    created = {p for p in snapshot(server.data_dir) - inside_before
               if not p.startswith("defensive.db")}
    assert created <= allowed, "unexpected paths in the data dir: %r" % sorted(created - allowed)
    data_rel = server.data_dir.relative_to(tmp_path).as_posix()
    outside = {p for p in snapshot(tmp_path) - outside_before
               if not p.startswith(data_rel + "/") and p != data_rel and not p.endswith(".log")}
    assert outside == set(), "files written outside the data dir: %r" % sorted(outside)
    assert os.path.exists("/abs/x") == abs_existed

    rows = server.file_rows(c.client_id)
    assert len(rows) == 1
    assert os.path.basename(rows[0]["PathName"].replace("\\", "/")) == base
    assert ".." not in rows[0]["PathName"].replace("\\", "/").split("/")
    assert is_true(rows[0]["Verified"]), "1029 with the same name did not verify"
    server.assert_serves()


@pytest.mark.stores_nothing("refused at its header, before anything is stored")
@pytest.mark.parametrize("raw", [b"", b".", b"..", b"a/", b"a/..", b"..\\", b"/", b"x\x01y",
                                 b"x\x7f", b"\t"])
def test_file_name_without_a_usable_base_name_is_rejected(server, raw):
    with keyed(server) as c:
        res = c.send_file(bw.raw_field(raw), os.urandom(64))
        assert res.response.code == bw.ERROR, "file name %r accepted" % raw
        assert server.stored_files(c.client_id) == []
        assert server.file_rows(c.client_id) == []
        data = os.urandom(64)
        res = c.send_file("fine.bin", data)  # connection still open
        bw.expect(res.response, bw.FILE_RECEIVED)
    assert wait_for(lambda: server.incoming_files() == [], 3)
    server.assert_serves()


@pytest.mark.stores_nothing("refused at its header, before anything is stored")
def test_file_name_without_nul_is_rejected(server):
    with keyed(server) as c:
        res = c.send_file(b"F" * 255, os.urandom(64))
        assert res.response.code == bw.ERROR
        assert server.stored_files(c.client_id) == []
        bw.expect(c.send_file("ok.bin", b"ok").response, bw.FILE_RECEIVED)
    server.assert_serves()


# --------------------------------------------------------------------------
# Garbage and resource exhaustion


def garbage_inputs():
    rng = random.Random(20240601)
    blobs = {}
    for i in range(4):
        while True:
            b = rng.randbytes(4096)
            if bw.unpack_request_header(b[:23])[2] not in bw.REQUEST_CODES:
                break
        blobs["random-%d" % i] = b
    blobs["ff"] = b"\xff" * 65536
    blobs["zeros"] = bytes(1024)
    blobs["http"] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    return blobs


@pytest.mark.stores_nothing("refused at its header, before anything is stored")
@pytest.mark.parametrize("label", sorted(garbage_inputs()))
def test_garbage_bytes_get_2107_or_a_close(server, label):
    blob = garbage_inputs()[label]
    with server.client() as c:
        try:
            c.send_raw(blob)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = c.recv_until_eof(limit=1 << 16)
    assert out in (b"", bw.pack_response(bw.ERROR)), "answer to garbage: %r" % out[:64]
    server.assert_serves()


def test_many_idle_connections_do_not_block_a_real_session(start_server):
    server = start_server("--max-conns", "1024")
    idle = []
    try:
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            if i % 3 == 1:
                s.sendall(b"\x00" * 5)  # a partial header
            elif i % 3 == 2:
                s.sendall(bw.pack_request_header(bw.ZERO_ID, bw.REGISTER, 255))  # no payload
            idle.append(s)
        t0 = time.monotonic()
        server.assert_serves(size=50_000, timeout=10)
        # a bound for a stall, not a timing: ASan on a loaded machine
        assert time.monotonic() - t0 < 20, "session took %.1fs with 300 idle connections" % (
            time.monotonic() - t0)
    finally:
        for s in idle:
            s.close()
    server.assert_serves()


def test_slow_loris_does_not_delay_another_session(server):
    stop = threading.Event()
    sent = [0] * 3

    def loris(i):
        req = bw.pack_request(bw.ZERO_ID, bw.REGISTER, bw.name_field(unique_name("loris")))
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
                for b in req:
                    if stop.is_set():
                        return
                    s.sendall(bytes([b]))
                    sent[i] += 1
                    stop.wait(1.0)
        except OSError:
            pass  # the server may cut a slow client off; that is allowed

    threads = [threading.Thread(target=loris, args=(i,), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    try:
        assert wait_for(lambda: min(sent) >= 2, 5), "loris never got going"
        t0 = time.monotonic()
        server.assert_serves(size=20_000, timeout=10)
        assert time.monotonic() - t0 < 20  # a stall's bound (ASan, a loaded machine)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
    server.assert_serves()


def _reset(sock):
    """Close with RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def test_resets_racing_commits_leave_the_server_whole(server):
    # A client that resets the moment its body is sent races the commit
    # that answers it; the commit must not touch the freed connection (the
    # ASan run of this suite catches it). Several clients, same and
    # different names, bounded in count and time.
    owner = keyed(server)
    cid, aes = owner.client_id, owner.aes_key
    owner.close()
    errors = []
    deadline = time.monotonic() + 3.0

    def hammer(t):
        i = 0
        while time.monotonic() < deadline and i < 150:
            i += 1
            data = os.urandom(random.choice([16, 4000, 70000]))
            ct = bw.aes_encrypt(aes, data)
            name = "race-%d.bin" % (i % 3) if t % 2 else "race-%d-%d.bin" % (t, i)
            try:
                s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                s.sendall(request_bytes(bw.SEND_FILE, bw.FILE_PREFIX_SIZE + len(ct),
                                        bw.pack_file_prefix(len(ct), name) + ct, cid))
                if random.random() < 0.5:
                    time.sleep(random.random() / 500)  # a random moment to reset at
                _reset(s)
            except OSError as e:  # refused under load is fine, a hang is not
                errors.append(repr(e))

    threads = [threading.Thread(target=hammer, args=(t,), daemon=True) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    # still serving, and every stored race file is whole (a known size)
    server.assert_serves()
    with server.client() as c:
        c.client_id = cid
        data = os.urandom(1000)
        res = c.send_file("after.bin", data, aes_key=aes)
        bw.expect(res.response, bw.FILE_RECEIVED)
        assert res.server_crc == res.crc
    for p in server.client_dir(cid).iterdir():
        assert p.stat().st_size in (16, 4000, 70000, 1000), p
    assert wait_for(lambda: server.incoming_files() == [], 5), server.incoming_files()


# --------------------------------------------------------------------------
# Path locks


LOCK_WAITERS = 64  # VAULT_LOCK_WAITERS: requests that may wait for one path's lock
LOCK_HOLD_MS = 4000  # the holder's commit: its fsync made this slow


@pytest.mark.files_only("holds a commit in a slowed fsync of the contents' file")
def test_a_verdict_refused_a_busy_path_lock_does_not_release_the_holders_lock(start_server,
                                                                              shim):
    """While an upload of a file is committed (its fsync made slow, the
    path's lock held), 64 1029s for that file wait behind it: as many as
    may. One more 1029 of the file is refused the lock and answered 2107;
    it must not release the lock it never held, which ran the first
    waiting 1029 (and the queue after it) in the middle of the holder's
    commit. No waiting 1029 may be answered before the holder's 2103. (A
    1028 refused the lock did the same; commits now always wait their
    turn: test_vault_attacks.py.)"""
    server = start_server(env=fault_env(
        shim, fault="fsync:1:sleep=%d:files/.incoming/" % LOCK_HOLD_MS))
    doc = "locked.bin"
    holder = keyed(server)
    cid, aes = holder.client_id, holder.aes_key
    waiters = []
    try:
        data = os.urandom(3000)
        ct = bw.aes_encrypt(aes, data)
        holder.send_raw(request_bytes(bw.SEND_FILE, bw.FILE_PREFIX_SIZE + len(ct),
                                      bw.pack_file_prefix(len(ct), doc) + ct, cid))
        assert wait_for(lambda: "bwfault: fsync #1 sleeps" in server.log(), 5), \
            "the holder's commit did not start its slow fsync\n%s" % server.log_tail()
        for _ in range(LOCK_WAITERS):
            w = server.client()
            waiters.append(w)
            w.client_id = cid
            w.send_request(bw.CRC_OK, bw.name_field(doc))
        socks = [w.sock for w in waiters]
        # every 1029 read, so each waits for the path's lock
        assert wait_for(lambda: read_by_peer(*socks), 5), "the 1029s were not all read"
        with server.client() as late:
            late.client_id = cid
            resp = late.request(bw.CRC_OK, bw.name_field(doc))
            assert resp.code == bw.ERROR, \
                "a 1029 past %d waiters got %r" % (LOCK_WAITERS, resp)
        assert not select.select([holder.sock], [], [], 0)[0], (
            "the holder's commit ended before the refused 1029 was answered; "
            "the test did not test anything")
        # until the holder's 2103 comes, no waiter may have an answer
        early = []
        deadline = time.monotonic() + LOCK_HOLD_MS / 1000.0 + 10
        while time.monotonic() < deadline:
            select.select(socks + [holder.sock], [], [], max(0, deadline - time.monotonic()))
            answered = select.select(socks, [], [], 0)[0]  # the waiters first,
            if select.select([holder.sock], [], [], 0)[0]:  # then the holder
                break
            if answered:
                early = answered
                break
        else:
            pytest.fail("the holder's 1028 got no answer within %gs\n%s"
                        % (LOCK_HOLD_MS / 1000.0 + 10, server.log_tail()))
        assert not early, (
            "%d of the %d waiting 1029s (so far) were answered while the holder's commit "
            "still ran: the refused 1029 released a lock it never held\n%s"
            % (len(early), LOCK_WAITERS, server.log_tail()))
        resp = bw.expect(holder.recv_response(), bw.FILE_RECEIVED, "the holder's 1028")
        assert bw.parse_file_received(resp.payload)[3] == bw.cksum(data)
        for w in waiters:
            resp = w.recv_response()
            assert resp.code in (bw.ACK, bw.ERROR), "a waiting 1029 got %r" % resp
        bw.expect(holder.crc_ok(doc), bw.ACK, "the holder's 1029")
    finally:
        for w in waiters:
            w.close()
        holder.close()
    assert (server.client_dir(cid) / doc).read_bytes() == data
    server.assert_serves()
