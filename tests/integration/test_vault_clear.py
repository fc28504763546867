"""The clear upload (1106, docs/vault-protocol.md, "Bulwark extensions"): on
a TLS listener a proven owner sends a file as it is, the 1028's layout with
no AES key and no padding, and the seed's verdicts (1029, 1030, 1031) follow
as after a 1028. Off TLS, to a stranger, or with sizes that disagree it is
refused, and nothing is stored. 2115 says where it is served.

The client here is written from the document (bwvault.send_clear)."""

import hashlib
import os
import socket
import struct

import bwd
import bwvault as bw
from bwd import rsa_key, unique_name
from test_tls_auth import start
from test_vault_ext import FILE, ext_get, ext_list, owner
from tlsutil import TlsVaultClient

H = "127.0.0.1"


def clear(c, name, data, verdict=True):
    res = c.send_clear(name, data)
    r = bw.expect(res.response, bw.FILE_RECEIVED, "clear upload")
    cid, size, field, crc = struct.unpack("<16sI255sI", r.payload)
    assert (cid, size, bw.parse_name_field(field)) == (c.client_id, len(data), name), r
    assert crc == bw.cksum(data) == res.crc, (crc, res.crc)
    if verdict:
        bw.expect(c.crc_ok(name), bw.ACK, "verdict")
    return crc


def stored(srv, c, name):
    path = srv.client_dir(c.client_id) / name
    return path.read_bytes() if path.exists() else None


def test_an_owner_sends_files_as_they_are_and_gets_them_back(start_server):
    srv = start(start_server)
    c = owner(srv, 21)
    files = {"one.bin": b"x", "odd.bin": os.urandom(100_003),
             "big.bin": os.urandom(3 * 1024 * 1024 + 5)}  # several chunks
    try:
        for name, data in files.items():
            clear(c, name, data)
            assert stored(srv, c, name) == data, name
            code, size, off, ver, got, digest = ext_get(c, name)
            assert (code, size, off, ver, got) == (FILE, len(data), 0, 1, data)
            assert digest == hashlib.sha256(data).digest()
        assert {n: v[:2] for n, v in ext_list(c).items()} == \
            {n: (len(d), 1) for n, d in files.items()}

        # a replacement waits for its verdict, as after a 1028
        new = os.urandom(70_000)
        clear(c, "odd.bin", new, verdict=False)
        assert ext_get(c, "odd.bin")[4] == files["odd.bin"]
        c.crc_bad("odd.bin")  # 1030: discarded, and the resend follows
        assert ext_get(c, "odd.bin")[4] == files["odd.bin"]
        clear(c, "odd.bin", new)
        assert ext_get(c, "odd.bin")[4] == new and stored(srv, c, "odd.bin") == new
        # 1031 after a clear upload: acknowledged, the file unverified
        clear(c, "last.bin", b"given up", verdict=False)
        bw.expect(c.giveup("last.bin"), bw.ACK, "give up")
        assert ext_list(c)["last.bin"][:2] == (8, 0)
        # and the seed's 1028 still works on the same connection
        bw.expect(c.send_file("seed.bin", b"seed").response, bw.FILE_RECEIVED, "1028")
    finally:
        c.close()
    assert srv.alive()


def test_an_identity_registered_on_the_plain_port_needs_no_aes_key(start_server):
    """A 1106 needs no 1027 first: the handshake proved the id's key."""
    srv = start(start_server)
    key = rsa_key(22)
    p = bw.VaultClient(H, srv.port, key=key).connect()
    bw.expect(p.register(unique_name("pl")), bw.REGISTERED, "register")
    bw.expect(p.send_pubkey(), bw.KEY_STORED, "key")
    p.close()
    c = TlsVaultClient(H, srv.tls_port, key=key).connect()
    c.client_id, c.name = p.client_id, p.name
    data = os.urandom(40_000)
    clear(c, "k.bin", data)
    assert stored(srv, c, "k.bin") == data
    c.close()


def refused_and_closed(c, res):
    assert res.response.code == bw.ERROR and res.response.payload == b"", res.response
    assert c.is_closed_by_peer(timeout=5)


def test_a_clear_upload_is_refused_off_tls_to_strangers_and_when_sizes_lie(start_server):
    srv = start(start_server, "--max-file-size", "200000")
    c = owner(srv, 23)
    cid = c.client_id
    data = os.urandom(5000)

    # the plain port never takes it, not even from the owner's id
    p = bw.VaultClient(H, srv.port).connect()
    p.client_id = cid
    refused_and_closed(p, p.send_clear("plain.bin", data))
    # another key naming the owner's id: the handshake proved someone else
    s = TlsVaultClient(H, srv.tls_port, key=rsa_key(24)).connect()
    s.client_id = cid
    s.send_raw(bw.pack_request_header(cid, bw.SEND_CLEAR, bw.FILE_PREFIX_SIZE + 16)
               + struct.pack("<I", 16) + bw.name_field("stranger.bin"))
    r = s.recv_response()
    assert (r.code, r.payload) == (bw.ERROR, b""), r
    assert s.is_closed_by_peer(timeout=5)
    # an id nobody registered: 2107 after the body, the connection kept
    u = TlsVaultClient(H, srv.tls_port, key=rsa_key(25)).connect()
    u.client_id = os.urandom(16)
    res = u.send_clear("nobody.bin", data)
    assert (res.response.code, res.response.payload) == (bw.ERROR, b"")
    assert u.request(bw.LIMITS, b"").code == bw.LIMITS_REPLY
    u.close()
    # sizes: zero, over the limit, a prefix that disagrees with the header
    for size, body in ((0, b""), (200_001, b"")):
        o = TlsVaultClient(H, srv.tls_port, key=rsa_key(23)).connect()
        o.client_id = cid
        o.send_raw(bw.pack_request_header(cid, bw.SEND_CLEAR, bw.FILE_PREFIX_SIZE + size)
                   + struct.pack("<I", size) + bw.name_field("size.bin") + body)
        r = o.recv_response()
        assert (r.code, r.payload) == (bw.ERROR, b""), (size, r)
        assert o.is_closed_by_peer(timeout=5), size
    o = TlsVaultClient(H, srv.tls_port, key=rsa_key(23)).connect()
    o.client_id = cid
    o.send_raw(bw.pack_request_header(cid, bw.SEND_CLEAR, bw.FILE_PREFIX_SIZE + 100)
               + struct.pack("<I", 99) + bw.name_field("lie.bin"))
    r = o.recv_response()
    assert (r.code, r.payload) == (bw.ERROR, b""), r
    assert o.is_closed_by_peer(timeout=5)

    # a body cut short: nothing visible, the owner's connection unharmed
    o = TlsVaultClient(H, srv.tls_port, key=rsa_key(23)).connect()
    o.client_id = cid
    o.send_raw(bw.pack_request_header(cid, bw.SEND_CLEAR, bw.FILE_PREFIX_SIZE + 150_000)
               + struct.pack("<I", 150_000) + bw.name_field("cut.bin") + data)
    o.sock.shutdown(socket.SHUT_RDWR)
    o.close()
    assert bwd.wait_for(lambda: "connection closed" in srv.log()
                        or "closed its connection" in srv.log(), 5), srv.log_tail()
    assert ext_list(c) == {}, "something was stored"
    for name in ("plain.bin", "stranger.bin", "nobody.bin", "size.bin", "lie.bin", "cut.bin"):
        assert stored(srv, c, name) is None, name
    assert bwd.wait_for(lambda: not srv.incoming_files(), 5), srv.incoming_files()
    c.close()
    assert srv.alive()


def test_2115_says_the_clear_upload_is_served_on_tls_only(start_server):
    srv = start(start_server)
    for port, tls, want in ((srv.port, False, 0), (srv.tls_port, True, bw.FEATURE_CLEAR)):
        c = (TlsVaultClient(H, port) if tls else bw.VaultClient(H, port)).connect()
        r = c.request(bw.LIMITS, b"", client_id=bw.ZERO_ID)
        assert r.code == bw.LIMITS_REPLY and len(r.payload) >= 12, r
        assert struct.unpack_from("<I", r.payload, 8)[0] & bw.FEATURE_CLEAR == want, (tls, r)
        c.close()

