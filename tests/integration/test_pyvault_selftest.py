"""Checks of the Python protocol implementation itself (bwvault), so that a
failure elsewhere points at the binaries and not at the test double."""

import os
import shutil
import subprocess

import pytest

import bwd
import bwvault as bw

SPKI_PREFIX = bytes.fromhex("30819d300d06092a864886f70d010101050003818b0030818702818100")


def test_headers_are_little_endian_and_packed():
    cid = bytes(range(16))
    h = bw.pack_request_header(cid, bw.SEND_FILE, 0x01020304)
    assert h == cid + b"\x03" + b"\x04\x04" + b"\x04\x03\x02\x01"
    assert bw.unpack_request_header(h) == (cid, 3, 1028, 0x01020304)
    assert bw.pack_response(bw.ERROR) == b"\x03\x3b\x08\x00\x00\x00\x00"


def test_name_field_is_nul_terminated_and_zero_padded():
    f = bw.name_field("abc")
    assert len(f) == 255 and f[:4] == b"abc\0" and not any(f[3:])
    assert bw.parse_name_field(f) == "abc"
    assert bw.parse_name_field(b"A" * 255) is None
    assert bw.parse_name_field(bw.raw_field(b"a\x01b")) is None
    assert bw.parse_name_field(bw.raw_field(b"a\x7fb")) is None
    with pytest.raises(ValueError):
        bw.name_field("x" * 255)


@pytest.mark.parametrize("data,expected", [
    (b"", 4294967295), (b"a", 1220704766), (b"123456789", 930766865)])
def test_cksum_known_answers(data, expected):
    assert bw.cksum_reference(data) == expected
    assert bw.cksum(data) == expected


@pytest.mark.skipif(shutil.which("cksum") is None, reason="no cksum program")
@pytest.mark.parametrize("size", [1, 15, 16, 17, 255, 256, 65536, 100003])
def test_cksum_fast_path_matches_reference_and_cksum_program(size):
    data = os.urandom(size)
    out = subprocess.run(["cksum"], input=data, capture_output=True, check=True, timeout=30)
    expected = int(out.stdout.split()[0])
    assert bw.cksum_reference(data) == expected
    assert bw.cksum(data) == expected
    c = bw.Cksum()
    for i in range(0, size, 7777):
        c.update(data[i:i + 7777])
    assert c.value() == expected


def test_rsa_e17_spki_is_160_bytes_with_the_spec_prefix():
    key = bwd.rsa_key(0)
    der = bw.spki_der(key)
    assert len(der) == 160
    assert der.startswith(SPKI_PREFIX) and der.endswith(b"\x02\x01\x11")
    aes = os.urandom(16)
    wrapped = bw.wrap_key(der, aes)
    assert len(wrapped) == 128 and bw.unwrap_key(key, wrapped) == aes


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4096, 100000])
def test_stream_encryption_matches_one_shot_and_decrypts(size):
    key = os.urandom(16)
    data = os.urandom(size)
    one = bw.aes_encrypt(key, data)
    assert len(one) == bw.encrypted_size(size)
    chunks = [data[i:i + 1000] for i in range(0, size, 1000)]
    assert b"".join(bw.encrypt_stream(key, chunks)) == one
    dec = bw.StreamDecryptor(key)
    out = b"".join(dec.update(one[i:i + 333]) for i in range(0, len(one), 333)) + dec.finish()
    assert out == data


def test_stream_decryptor_rejects_bad_padding():
    key = os.urandom(16)
    dec = bw.StreamDecryptor(key)
    dec.update(bw.aes_encrypt_raw(key, b"x" * 31 + b"\x00"))
    with pytest.raises(ValueError):
        dec.finish()


def test_pyserver_full_session_stores_the_file(pyserver):
    srv = pyserver()
    data = os.urandom(12345)
    c = bw.full_session("127.0.0.1", srv.port, "alice", data, key=bwd.rsa_key(1))
    f = srv.file(c.client_id, "file.bin")
    assert f.data == data and f.verified
    assert srv.codes() == [1025, 1026, 1028, 1029]


def test_pyserver_sink_drops_the_body_and_answers_the_crc_it_was_given(pyserver):
    data = os.urandom(5 << 20)
    srv = pyserver(sink=(len(data), bw.cksum(data)))
    c = bw.full_session("127.0.0.1", srv.port, "alice", data, key=bwd.rsa_key(1))
    f = srv.file(c.client_id, "file.bin")
    assert f.data is None and f.verified
    # a sink told another CRC answers it: nothing it answers is computed
    srv.sink = (len(data), (bw.cksum(data) + 1) & 0xFFFFFFFF)
    with pytest.raises(bw.ProtocolError, match="server CRC"):
        bw.full_session("127.0.0.1", srv.port, "bob", data, key=bwd.rsa_key(2))


def test_pyserver_reconnect_and_crc_giveup(pyserver):
    srv = pyserver(wrong_crc=-1)
    key = bwd.rsa_key(2)
    with bw.VaultClient("127.0.0.1", srv.port, key=key) as c:
        bw.expect(c.register("bob"), bw.REGISTERED)
        bw.expect(c.send_pubkey(), bw.KEY_STORED)
        cid = c.client_id
    with bw.VaultClient("127.0.0.1", srv.port, key=key) as c:
        c.client_id = cid
        bw.expect(c.reconnect("bob"), bw.RECONNECTED)
        for i in range(4):
            res = c.send_file("f", b"hello")
            bw.expect(res.response, bw.FILE_RECEIVED)
            assert res.server_crc != res.crc
            if i < 3:
                c.crc_bad("f")
        bw.expect(c.giveup("f"), bw.ACK)
    assert srv.codes() == [1025, 1026, 1027] + [1028, 1030] * 3 + [1028, 1031]
    assert not srv.file(cid, "f").verified


def test_pyserver_answers_padded_requests_padded_and_closes(pyserver):
    srv = pyserver()
    with bw.VaultClient("127.0.0.1", srv.port) as c:
        req = bw.pack_request(bw.ZERO_ID, bw.REGISTER, bw.name_field("carol"))
        c.send_raw(req + bytes(1024 - len(req)))
        out = c.recv_until_eof()
    assert len(out) == 1024 and out[:3] == b"\x03\x34\x08" and not any(out[23:])


def test_pyserver_streams_a_large_upload(pyserver):
    srv = pyserver(keep_limit=0)
    size = 20 << 20
    with bw.VaultClient("127.0.0.1", srv.port, key=bwd.rsa_key(3)) as c:
        bw.expect(c.register("dave"), bw.REGISTERED)
        bw.expect(c.send_pubkey(), bw.KEY_STORED)
        res = c.send_file("big", chunks=bw.pseudo_random_chunks(7, size), size=size)
        bw.expect(res.response, bw.FILE_RECEIVED)
        assert res.server_crc == res.crc
    f = srv.file(c.client_id, "big")
    assert f.size == size and f.sha256 == res.sha256 and f.data is None
