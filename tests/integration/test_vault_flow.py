"""The vault protocol flows against the real bulwarkd, driven by the Python
client, and `bulwark send` against bulwarkd."""

import base64
import os
import signal
import sqlite3
import stat
import time

import pytest

import blobview
import bwvault as bw
from bwd import describe, is_false, is_true, rsa_key, unique_name, wait_for


def keyed_client(server, name=None, key_index=0):
    """A connected client that has registered and received its AES key."""
    c = server.client(key=rsa_key(key_index))
    bw.expect(c.register(name or unique_name()), bw.REGISTERED, "register")
    bw.expect(c.send_pubkey(), bw.KEY_STORED, "public key")
    return c


def stored_path(server, client_id, name):
    return server.client_dir(client_id) / name


def wait_file(server, client_id, name, data, timeout=3.0):
    path = stored_path(server, client_id, name)
    ok = wait_for(lambda: path.is_file() and path.read_bytes() == data, timeout)
    if not ok:
        got = path.read_bytes() if path.is_file() else None
        raise AssertionError("%s: expected %d bytes, found %s" % (
            path, len(data), "nothing" if got is None else "%d other bytes" % len(got)))


# --------------------------------------------------------------------------
# Python client against bulwarkd


def test_new_client_upload_is_stored_byte_exact_and_verified(server):
    name = unique_name()
    data = os.urandom(100_003)
    key = rsa_key(1)
    with server.client(key=key) as c:
        reg = bw.expect(c.register(name), bw.REGISTERED)
        assert reg.version == 3
        assert c.client_id != bw.ZERO_ID
        kr = bw.expect(c.send_pubkey(), bw.KEY_STORED)
        assert kr.client_id == c.client_id
        assert len(c.aes_key) == 16
        res = c.send_file("report.pdf", data)
        bw.expect(res.response, bw.FILE_RECEIVED)
        cid, csize, fname, crc = bw.parse_file_received(res.response.payload)
        assert cid == c.client_id
        assert csize == bw.encrypted_size(len(data)) == res.content_size
        assert bw.parse_name_field(fname) == "report.pdf"
        assert crc == res.crc == bw.cksum(data)
        ack = bw.expect(c.crc_ok("report.pdf"), bw.ACK)
        assert ack.client_id == c.client_id

    row = server.client_row(c.client_id)
    assert row is not None, "no clients row for %s" % c.client_id.hex()
    assert row["Name"] == name
    assert bytes(row["PublicKey"]) == bw.spki_der(key)
    assert bytes(row["AESKey"]) == c.aes_key
    assert row["LastSeen"] is not None

    wait_file(server, c.client_id, "report.pdf", data)
    frow = wait_for(lambda: server.file_row(c.client_id, "report.pdf"), 3)
    assert frow is not None, "no files row"
    assert bytes(frow["ID"]) == c.client_id
    assert os.path.basename(frow["PathName"]) == "report.pdf"
    assert is_true(frow["Verified"]), "Verified is %r after 2104" % (frow["Verified"],)
    assert server.incoming_files() == []


def round_trip(server, size):
    """A file of `size` random bytes: padded size, CRC, 2104 and the copy."""
    data = os.urandom(size)
    with keyed_client(server) as c:
        res = c.send_file("edge.bin", data)
        bw.expect(res.response, bw.FILE_RECEIVED)
        assert bw.parse_file_received(res.response.payload)[1] == 16 * (size // 16 + 1)
        assert res.server_crc == bw.cksum(data)
        bw.expect(c.crc_ok("edge.bin"), bw.ACK)
    wait_file(server, c.client_id, "edge.bin", data)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4096])
def test_small_and_block_aligned_files_round_trip(server, size):
    round_trip(server, size)


# The server decrypts and CRCs an upload in 64 KiB pieces of 1 MiB chunks,
# holding the body's last block out of the CRC until its padding is known.
# Sizes whose ciphertext ends on, just past or just short of a piece or a
# chunk boundary; the CRC is the independent cksum of the plaintext.
PIECE = 64 * 1024
CHUNK = 1 << 20


@pytest.mark.parametrize("size", [
    PIECE - 17, PIECE - 16, PIECE - 1, PIECE, PIECE + 15, 3 * PIECE - 1,
    CHUNK - PIECE, CHUNK - 17, CHUNK - 1, CHUNK, CHUNK + PIECE - 1,
    2 * CHUNK + 100])
def test_files_around_piece_and_chunk_boundaries_round_trip(server, size):
    round_trip(server, size)


def test_several_files_in_one_session(server):
    files = {"one.txt": os.urandom(10), "two.txt": os.urandom(20_000), "three": b""}
    with keyed_client(server) as c:
        for fname, data in files.items():
            res = c.send_file(fname, data)
            bw.expect(res.response, bw.FILE_RECEIVED)
            assert res.server_crc == res.crc
            bw.expect(c.crc_ok(fname), bw.ACK)
    for fname, data in files.items():
        wait_file(server, c.client_id, fname, data)
    assert sorted(r["FileName"] for r in server.file_rows(c.client_id)) == sorted(files)
    assert server.stored_files(c.client_id) == sorted(files)


def test_reconnect_after_server_restart_gets_a_new_key_and_uploads(start_server):
    srv = start_server()
    name = unique_name()
    key = rsa_key(2)
    first = os.urandom(5000)
    c = bw.full_session("127.0.0.1", srv.port, name, first, file_name="a.bin", key=key)
    cid = c.client_id
    old_aes = c.aes_key
    srv.stop()

    srv2 = start_server(data_dir=srv.data_dir)
    second = os.urandom(7000)
    with srv2.client(key=key) as c2:
        c2.client_id = cid
        resp = bw.expect(c2.reconnect(name), bw.RECONNECTED, "reconnect")
        assert resp.client_id == cid
        assert c2.aes_key != old_aes, "1027 did not make a fresh AES key"
        res = c2.send_file("b.bin", second)
        bw.expect(res.response, bw.FILE_RECEIVED)
        assert res.server_crc == res.crc
        bw.expect(c2.crc_ok("b.bin"), bw.ACK)
    wait_file(srv2, cid, "a.bin", first)
    wait_file(srv2, cid, "b.bin", second)
    assert bytes(srv2.client_row(cid)["AESKey"]) == c2.aes_key

    # The files known before the restart are known after it: the same name
    # replaces the one row instead of adding another, once its 1029 comes
    # (a.bin was verified: until then the verified version stays current).
    third = os.urandom(300)
    with srv2.client() as c3:
        c3.client_id = cid
        res = c3.send_file("a.bin", third, aes_key=c2.aes_key)
        bw.expect(res.response, bw.FILE_RECEIVED)
        wait_file(srv2, cid, "a.bin", first)
        assert is_true(srv2.file_row(cid, "a.bin")["Verified"])
        bw.expect(c3.crc_ok("a.bin"), bw.ACK)
    wait_file(srv2, cid, "a.bin", third)
    assert sorted(r["FileName"] for r in srv2.file_rows(cid)) == ["a.bin", "b.bin"]
    assert is_true(srv2.file_row(cid, "a.bin")["Verified"])
    assert len(srv2.query("SELECT * FROM clients WHERE Name = ?", (name,))) == 1


def test_register_with_a_taken_name_is_refused_with_2101(server):
    name = unique_name()
    with server.client() as c:
        bw.expect(c.register(name), bw.REGISTERED)
    with server.client() as c2:
        resp = c2.register(name)
        assert resp.code == bw.NAME_TAKEN and resp.payload == b""
        # the session goes on
        bw.expect(c2.register(unique_name()), bw.REGISTERED)
    assert len(server.query("SELECT * FROM clients WHERE Name = ?", (name,))) == 1


def test_reconnect_with_unknown_id_is_refused_with_2106_echoing_the_id(server):
    unknown = os.urandom(16)
    with server.client(key=rsa_key(3)) as c:
        c.client_id = unknown
        resp = c.reconnect(unique_name())
        assert resp.code == bw.RECONNECT_REFUSED
        assert resp.payload == unknown


def test_reconnect_without_a_public_key_on_record_is_refused_with_2106(server):
    name = unique_name()
    with server.client(key=rsa_key(4)) as c:
        bw.expect(c.register(name), bw.REGISTERED)
        cid = c.client_id
    with server.client(key=rsa_key(4)) as c:
        c.client_id = cid
        resp = c.reconnect(name)
        assert resp.code == bw.RECONNECT_REFUSED and resp.payload == cid


def test_reconnect_with_id_and_name_of_different_clients_is_refused(server):
    a = keyed_client(server, key_index=5)
    b = keyed_client(server, key_index=6)
    a.close()
    b.close()
    with server.client(key=rsa_key(5)) as c:
        c.client_id = a.client_id
        resp = c.reconnect(b.name)
        assert resp.code == bw.RECONNECT_REFUSED and resp.payload == a.client_id
        # and the right pair still works on the same connection
        bw.expect(c.reconnect(a.name), bw.RECONNECTED)


def test_crc_mismatch_reported_four_times_ends_with_1031_and_stays_unverified(server):
    data = os.urandom(3000)
    with keyed_client(server) as c:
        for attempt in range(4):
            res = c.send_file("flaky.bin", data)
            bw.expect(res.response, bw.FILE_RECEIVED, "send %d" % (attempt + 1))
            assert res.server_crc == res.crc
            if attempt < 3:
                # 1030 has no response: the next thing read must be the
                # 2103 for the following 1028.
                c.crc_bad("flaky.bin")
        ack = bw.expect(c.giveup("flaky.bin"), bw.ACK, "give up")
        assert ack.client_id == c.client_id
        # the session is still usable
        res = c.send_file("after.bin", b"after")
        bw.expect(res.response, bw.FILE_RECEIVED)
    row = wait_for(lambda: server.file_row(c.client_id, "flaky.bin"), 3)
    assert row is not None, "no files row after the 1028s"
    assert is_false(row["Verified"]), "Verified is %r after 1031" % (row["Verified"],)
    assert len(server.file_rows(c.client_id)) == 2


def test_same_name_upload_replaces_a_verified_file_only_after_its_1029(server):
    first, second, third = os.urandom(8000), os.urandom(3000), os.urandom(100)
    with keyed_client(server) as c:
        bw.expect(c.send_file("same.txt", first).response, bw.FILE_RECEIVED)
        bw.expect(c.crc_ok("same.txt"), bw.ACK)
        wait_file(server, c.client_id, "same.txt", first)
        assert is_true(wait_for(lambda: server.file_row(c.client_id, "same.txt")["Verified"], 3))

        # A replacement is kept aside until confirmed: the verified file stays.
        res = c.send_file("same.txt", second)
        bw.expect(res.response, bw.FILE_RECEIVED)
        assert res.server_crc == bw.cksum(second)
        wait_file(server, c.client_id, "same.txt", first)
        assert is_true(server.file_row(c.client_id, "same.txt")["Verified"])

        # A mismatch (1031) throws the replacement away.
        bw.expect(c.giveup("same.txt"), bw.ACK)
        res = c.send_file("same.txt", third)
        bw.expect(res.response, bw.FILE_RECEIVED)
        wait_file(server, c.client_id, "same.txt", first)

        bw.expect(c.crc_ok("same.txt"), bw.ACK)
        wait_file(server, c.client_id, "same.txt", third)
    assert is_true(wait_for(lambda: server.file_row(c.client_id, "same.txt")["Verified"], 3))
    assert len(server.file_rows(c.client_id)) == 1
    assert server.stored_files(c.client_id) == ["same.txt"]
    assert blobview.listdir(server.blobs("files", ".pending")) == []


def test_aes_key_is_kept_for_a_later_connection(server):
    c = keyed_client(server, key_index=7)
    c.close()
    data = os.urandom(2048)
    with server.client() as c2:
        c2.client_id = c.client_id
        res = c2.send_file("later.bin", data, aes_key=c.aes_key)
        bw.expect(res.response, bw.FILE_RECEIVED)
        assert res.server_crc == res.crc
        bw.expect(c2.crc_ok("later.bin"), bw.ACK)
    wait_file(server, c.client_id, "later.bin", data)


def test_every_public_key_request_makes_a_fresh_aes_key(server):
    with keyed_client(server, key_index=8) as c:
        first = c.aes_key
        bw.expect(c.send_pubkey(), bw.KEY_STORED)
        assert c.aes_key != first
        res = c.send_file("k.bin", b"fresh key")
        bw.expect(res.response, bw.FILE_RECEIVED)
        assert res.server_crc == res.crc


# --------------------------------------------------------------------------
# One request per connection, zero-padded to 1024 (course-sample clients)


def padded_exchange(server, request):
    padded = request + bytes(-len(request) % 1024 or 1024)
    assert len(padded) % 1024 == 0 and len(padded) > len(request)
    with server.client() as c:
        c.send_raw(padded)
        out = c.recv_until_eof()
    assert len(out) >= 1024 and len(out) % 1024 == 0, (
        "padded request got %d response bytes before the close" % len(out))
    version, code, size = bw.unpack_response_header(out[:7])
    payload = out[7:7 + size]
    assert not any(out[7 + size:]), "response padding is not zero"
    return bw.Response(version, code, payload)


def test_padded_one_request_per_connection_session(server):
    name = unique_name("sample")
    key = rsa_key(9)
    resp = padded_exchange(server, bw.pack_request(bw.ZERO_ID, bw.REGISTER, bw.name_field(name)))
    bw.expect(resp, bw.REGISTERED)
    cid = resp.client_id

    resp = padded_exchange(server, bw.pack_request(
        cid, bw.PUBLIC_KEY, bw.name_field(name) + bw.spki_der(key)))
    bw.expect(resp, bw.KEY_STORED)
    aes = bw.unwrap_key(key, resp.payload[16:])

    data = os.urandom(3000)
    ct = bw.aes_encrypt(aes, data)
    resp = padded_exchange(server, bw.pack_request(
        cid, bw.SEND_FILE, bw.pack_file_prefix(len(ct), "sample.txt") + ct))
    bw.expect(resp, bw.FILE_RECEIVED)
    assert bw.parse_file_received(resp.payload)[3] == bw.cksum(data)

    resp = padded_exchange(server, bw.pack_request(cid, bw.CRC_OK, bw.name_field("sample.txt")))
    bw.expect(resp, bw.ACK)
    assert resp.client_id == cid

    wait_file(server, cid, "sample.txt", data)
    assert is_true(wait_for(lambda: server.file_row(cid, "sample.txt")["Verified"], 3))


def test_unpadded_request_keeps_the_connection_open(server):
    with server.client() as c:
        bw.expect(c.register(unique_name()), bw.REGISTERED)
        assert not c.is_closed_by_peer(timeout=0.3)
        bw.expect(c.register(unique_name()), bw.REGISTERED)


# --------------------------------------------------------------------------
# bulwark send against bulwarkd


def prepare_client(client_dir, server, name=None, data=None, file_name="upload.bin"):
    d = client_dir()
    data = os.urandom(50_000) if data is None else data
    path = d.write_file(file_name, data)
    name = name or unique_name("cli")
    d.write_transfer(server.port, name, str(path))
    return d, name, data


def check_stored_by_client(server, d, name, data, file_name="upload.bin"):
    me_name, cid, key = d.me_info()
    assert me_name == name
    row = server.client_row(cid)
    assert row is not None, "me.info id %s is not in the clients table" % cid.hex()
    assert row["Name"] == name
    assert bytes(row["PublicKey"]) == bw.spki_der(key)
    wait_file(server, cid, file_name, data)
    frow = wait_for(lambda: server.file_row(cid, file_name), 3)
    assert frow is not None and is_true(frow["Verified"])
    return cid


def test_client_first_run_registers_writes_me_info_and_stores_the_file(server, client_dir):
    d, name, data = prepare_client(client_dir, server)
    r = d.run()
    assert r.returncode == 0, describe(r)
    assert d.me_path.is_file() and (d.path / "priv.key").is_file()
    assert stat.S_IMODE(d.me_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((d.path / "priv.key").stat().st_mode) & 0o077 == 0
    lines = d.me_path.read_text().splitlines()
    assert len(lines) == 3, "me.info should be name, id, one line of base64"
    assert len(lines[1]) == 32 and all(ch in "0123456789abcdefABCDEF" for ch in lines[1])
    assert d.me_b64() == d.priv_b64()
    key = d.me_info()[2]
    assert key.has_private() and key.size_in_bits() == 1024 and key.e == 17
    check_stored_by_client(server, d, name, data)


def test_client_second_run_reconnects_and_updates_last_seen(server, client_dir):
    d, name, data = prepare_client(client_dir, server)
    r = d.run()
    assert r.returncode == 0, describe(r)
    cid = check_stored_by_client(server, d, name, data)
    me_before = d.me_path.read_bytes()
    seen_before = server.client_row(cid)["LastSeen"]
    assert seen_before is not None

    time.sleep(1.1)  # LastSeen may have one-second resolution
    new_data = os.urandom(20_000)
    d.write_file("upload.bin", new_data)
    r = d.run()
    assert r.returncode == 0, describe(r)
    assert d.me_path.read_bytes() == me_before, "reconnect rewrote me.info"
    check_stored_by_client(server, d, name, new_data)
    assert len(server.query("SELECT * FROM clients WHERE Name = ?", (name,))) == 1
    assert server.query("SELECT COUNT(*) FROM clients")[0][0] == 1
    seen_after = server.client_row(cid)["LastSeen"]
    assert seen_after != seen_before, "LastSeen not updated (%r)" % (seen_after,)


def test_client_accepts_me_info_with_wrapped_base64_and_upper_case_hex(server, client_dir):
    d, name, data = prepare_client(client_dir, server)
    r = d.run()
    assert r.returncode == 0, describe(r)
    _, cid, _ = d.me_info()
    b64 = d.me_b64()
    wrapped = "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
    d.me_path.write_text("%s\n%s\n%s\n" % (name, cid.hex().upper(), wrapped))
    os.chmod(d.me_path, 0o600)

    new_data = os.urandom(1000)
    d.write_file("upload.bin", new_data)
    r = d.run()
    assert r.returncode == 0, describe(r)
    assert d.me_info()[1] == cid
    check_stored_by_client(server, d, name, new_data)
    assert server.query("SELECT COUNT(*) FROM clients")[0][0] == 1


def test_client_with_unknown_id_in_me_info_registers_again(server, client_dir):
    d, name, data = prepare_client(client_dir, server)
    old_key = rsa_key(10)
    stale = os.urandom(16)
    b64 = base64.b64encode(bw.private_pkcs8_der(old_key)).decode()
    d.me_path.write_text("%s\n%s\n%s\n" % (name, stale.hex(), b64))
    (d.path / "priv.key").write_text(b64 + "\n")
    os.chmod(d.me_path, 0o600)
    r = d.run()
    assert r.returncode == 0, describe(r)
    _, cid, key = d.me_info()
    assert cid != stale
    assert bw.spki_der(key) != bw.spki_der(old_key), "re-registration kept the old key pair"
    assert d.me_b64() == d.priv_b64()
    check_stored_by_client(server, d, name, data)


def test_client_exits_3_when_the_name_is_taken(server, client_dir):
    name = unique_name("taken")
    with server.client() as c:
        bw.expect(c.register(name), bw.REGISTERED)
    d, _, _ = prepare_client(client_dir, server, name=name)
    r = d.run()
    assert r.returncode == 3, describe(r)
    assert not d.me_path.exists()


def test_client_exits_1_with_fatal_when_nothing_listens(client_dir, tmp_path):
    import socket as _s
    probe = _s.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens on port now
    d = client_dir()
    path = d.write_file("x.bin", b"x")
    d.write_transfer(port, unique_name(), str(path))
    r = d.run()
    assert r.returncode == 1, describe(r)
    assert b"Fatal:" in r.stderr


# --------------------------------------------------------------------------
# Shutdown


def test_sigterm_when_idle_exits_0(start_server):
    start_server().stop()


def test_sigint_after_a_session_exits_0(start_server):
    import signal
    srv = start_server()
    srv.assert_serves()
    srv.stop(sig=signal.SIGINT)


def test_sigterm_with_an_idle_connection_exits_0_within_the_grace(start_server):
    srv = start_server("--shutdown-grace", "1")
    with srv.client() as c:
        bw.expect(c.register(unique_name()), bw.REGISTERED)
        srv.stop(timeout=10)
        assert c.is_closed_by_peer(timeout=5)


def test_sigterm_during_an_upload_leaves_no_partial_file(start_server):
    srv = start_server("--shutdown-grace", "1")
    c = keyed_client(srv)
    content = 1 << 20
    body = bw.aes_encrypt(c.aes_key, os.urandom(content - 1))
    c.send_raw(bw.pack_request_header(c.client_id, bw.SEND_FILE, bw.FILE_PREFIX_SIZE + content)
               + bw.pack_file_prefix(content, "partial.bin") + body[:content // 2])
    srv.stop(timeout=10)
    c.close()
    srv2 = start_server(data_dir=srv.data_dir)
    assert not (srv2.client_dir(c.client_id) / "partial.bin").exists()
    assert srv2.file_row(c.client_id, "partial.bin") is None
    assert srv2.incoming_files() == []
    srv2.assert_serves()


def test_sigterm_lets_an_upload_in_progress_finish_within_the_grace(start_server):
    srv = start_server("--shutdown-grace", "10")
    c = keyed_client(srv)
    data = os.urandom((1 << 20) + 5)
    body = bw.aes_encrypt(c.aes_key, data)
    c.send_raw(bw.pack_request_header(c.client_id, bw.SEND_FILE, bw.FILE_PREFIX_SIZE + len(body))
               + bw.pack_file_prefix(len(body), "late.bin") + body[:len(body) // 2])
    assert wait_for(lambda: "event=upload_started " in srv.log(), 5)
    srv.proc.send_signal(signal.SIGTERM)
    assert wait_for(lambda: "shutting down" in srv.log(), 5)
    # no new connections once shutting down, but this upload may finish
    c.send_raw(body[len(body) // 2:])
    resp = bw.expect(c.recv_response(), bw.FILE_RECEIVED)
    assert bw.parse_file_received(resp.payload)[3] == bw.cksum(data)
    c.close()
    assert srv.proc.wait(timeout=15) == 0
    srv.stopped = True
    srv2 = start_server(data_dir=srv.data_dir)
    assert (srv2.client_dir(c.client_id) / "late.bin").read_bytes() == data
    row = srv2.file_row(c.client_id, "late.bin")
    assert row is not None and is_false(row["Verified"])
    assert srv2.incoming_files() == []


@pytest.mark.files_only("looks at the partial upload in files/.incoming (S3: test_s3_backend's crash)")
def test_sigkill_mid_upload_loses_nothing_that_was_stored(start_server):
    srv = start_server()
    c = keyed_client(srv)
    kept = os.urandom(300_000)
    res = c.send_file("kept.bin", kept)
    bw.expect(res.response, bw.FILE_RECEIVED)
    bw.expect(c.crc_ok("kept.bin"), bw.ACK)
    # a second version of the same name, cut off by a crash half-way
    body = bw.aes_encrypt(c.aes_key, os.urandom(4 << 20))
    c.send_raw(bw.pack_request_header(c.client_id, bw.SEND_FILE, bw.FILE_PREFIX_SIZE + len(body))
               + bw.pack_file_prefix(len(body), "kept.bin") + body[:len(body) // 2])
    assert wait_for(lambda: srv.log().count("event=upload_started ") == 2, 5)
    # the object is made by its first chunk's write, on a worker
    assert wait_for(srv.incoming_files, 5), "no partial upload to crash in"
    srv.proc.kill()
    srv.proc.wait(timeout=10)
    srv.stopped = True
    c.close()
    assert srv.incoming_files(), "the crash should have left a partial upload"

    srv2 = start_server(data_dir=srv.data_dir)
    assert srv2.incoming_files() == [], "start-up clears unfinished uploads"
    assert (srv2.client_dir(c.client_id) / "kept.bin").read_bytes() == kept
    row = srv2.file_row(c.client_id, "kept.bin")
    assert row is not None and is_true(row["Verified"])
    db = sqlite3.connect(str(srv2.data_dir / "defensive.db"))
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    # and the client carries on where it was
    with srv2.client(key=c.key) as c2:
        c2.client_id = c.client_id
        c2.name = c.name
        bw.expect(c2.reconnect(), bw.RECONNECTED)
