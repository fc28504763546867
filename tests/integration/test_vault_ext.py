"""The vault's extensions (docs/vault-protocol.md, "Bulwark extensions"):
an owner proven on a TLS listener lists its files (1100 -> 2110), gets one
back from an offset (1101 -> 2111, SHA-256 of the whole file after the
bytes) and deletes one (1102 -> 2112); a name it does not have gets 2113.
On the plain port none of them is served, to anyone.

The client here is written from the document (struct layouts below), over
Python's ssl with a certificate the openssl command makes from the
client's RSA key (tlsutil)."""

import hashlib
import os
import struct
import time

import bwd
import bwvault as bw
from bwd import rsa_key, unique_name
from test_tls_auth import refusals, start, wait_refusals
from tlsutil import TlsVaultClient

H = "127.0.0.1"
LIST, GET, DELETE = 1100, 1101, 1102
LISTED, FILE, DELETED, NO_SUCH = 2110, 2111, 2112, 2113
ENTRY = struct.Struct("<255sQBqB")  # name, size, verified, stored, pending
FILE_HEAD = struct.Struct("<QQB")  # size, offset, verified


def ext_list(c):
    r = c.request(LIST, b"")
    assert r.code == LISTED, r
    (n,) = struct.unpack_from("<I", r.payload)
    assert len(r.payload) == 4 + n * ENTRY.size, (n, len(r.payload))
    out = {}
    for i in range(n):
        name, size, ver, stored, pend = ENTRY.unpack_from(r.payload, 4 + i * ENTRY.size)
        out[bw.parse_name_field(name)] = (size, ver, stored, pend)
    return out


def ext_get(c, name, offset=0):
    """(code, size, offset, verified, data, sha256) of a 1101; the reply
    read by its header, the body as it comes."""
    c.send_request(GET, bw.name_field(name) + struct.pack("<Q", offset))
    head = bw.recv_exact(c.sock, bw.RESP_HEADER_SIZE)
    _, code, plen = bw.RESP_HEADER.unpack(head)
    body = bw.recv_exact(c.sock, plen)
    assert len(body) == plen, "cut at %d of %d" % (len(body), plen)
    if code != FILE:
        return code, body
    size, off, ver = FILE_HEAD.unpack_from(body)
    data = body[FILE_HEAD.size:-32]
    assert len(data) == size - off
    return code, size, off, ver, data, body[-32:]


def owner(srv, i):
    c = TlsVaultClient(H, srv.tls_port, key=rsa_key(i)).connect()
    bw.expect(c.register(unique_name("own")), bw.REGISTERED, "register")
    bw.expect(c.send_pubkey(), bw.KEY_STORED, "key")
    return c


def upload(c, name, data, verdict=True):
    res = c.send_file(name, data)
    bw.expect(res.response, bw.FILE_RECEIVED, "upload")
    if verdict:
        bw.expect(c.crc_ok(name), bw.ACK, "verdict")


def test_an_owner_lists_gets_back_and_deletes_its_files(start_server):
    srv = start(start_server)
    c = owner(srv, 15)
    a = os.urandom(1_500_000)  # several chunks of the server's reads
    b = b"unverified " * 100
    try:
        upload(c, "a.bin", a)
        upload(c, "b.txt", b, verdict=False)
        got = ext_list(c)
        assert set(got) == {"a.bin", "b.txt"}, got
        assert got["a.bin"][:2] == (len(a), 1) and got["b.txt"][:2] == (len(b), 0), got
        for name in got:
            st = (srv.client_dir(c.client_id) / name).stat()
            # the object's time (a file's mtime; an S3 view shows none)
            when = getattr(st, "st_mtime", None) or time.time()
            assert abs(got[name][2] - int(when)) <= (1 if hasattr(st, "st_mtime") else 600), \
                (got[name], when)
            assert got[name][3] == 0

        code, size, off, ver, data, digest = ext_get(c, "a.bin")
        assert (code, size, off, ver) == (FILE, len(a), 0, 1)
        assert data == a and digest == hashlib.sha256(a).digest()
        # resumed from an offset: the rest, and the whole file's hash
        for off in (1, 262_144, 700_001, len(a) - 1, len(a)):
            code, size, o, _, data, digest = ext_get(c, "a.bin", off)
            assert (code, size, o) == (FILE, len(a), off)
            assert data == a[off:] and digest == hashlib.sha256(a).digest()
        code, size, _, ver, data, _ = ext_get(c, "b.txt")
        assert (code, ver, data) == (FILE, 0, b)
        # past the end, and a name it does not have
        code, body = ext_get(c, "a.bin", len(a) + 1)
        assert (code, body) == (bw.ERROR, b"")
        c.connect()  # 2107 keeps the connection, but start clean
        c.client_id = c.client_id
        code, body = ext_get(c, "nothing.bin")
        assert (code, body) == (NO_SUCH, bw.name_field("nothing.bin"))

        r = c.request(DELETE, bw.name_field("a.bin"))
        assert (r.code, r.payload) == (DELETED, bw.name_field("a.bin"))
        assert set(ext_list(c)) == {"b.txt"}
        path = srv.client_dir(c.client_id) / "a.bin"
        assert bwd.wait_for(lambda: not path.exists(), 5), "the object stayed"
        assert srv.file_row(c.client_id, "a.bin") is None
        assert ext_get(c, "a.bin")[0] == NO_SUCH
        r = c.request(DELETE, bw.name_field("a.bin"))
        assert (r.code, r.payload) == (NO_SUCH, bw.name_field("a.bin"))
        # the name is free again: a new upload of it is a first one
        upload(c, "a.bin", b"second life")
        assert ext_get(c, "a.bin")[4] == b"second life"
    finally:
        c.close()


def test_the_extensions_are_not_served_on_the_plain_port_nor_to_a_stranger(start_server):
    srv = start(start_server)
    c = owner(srv, 16)
    try:
        upload(c, "keep.bin", b"keep me")
    finally:
        c.close()
    p = bw.VaultClient(H, srv.port, key=rsa_key(16)).connect()
    try:
        p.client_id, p.name = c.client_id, c.name
        for code, payload in ((LIST, b""),
                              (GET, bw.name_field("keep.bin") + bytes(8)),
                              (DELETE, bw.name_field("keep.bin"))):
            r = p.request(code, payload)
            assert (r.code, r.payload) == (bw.ERROR, b""), (code, r)
    finally:
        p.close()
    mark = len(srv.log())
    s = TlsVaultClient(H, srv.tls_port, key=rsa_key(17)).connect()
    try:
        s.client_id = c.client_id
        r = s.request(DELETE, bw.name_field("keep.bin"))
        assert (r.code, r.payload) == (bw.ERROR, b"")
    finally:
        s.close()
    assert [g[2] for g in wait_refusals(srv, mark, 1)] == ["1102"]
    assert (srv.client_dir(c.client_id) / "keep.bin").read_bytes() == b"keep me"
    o = TlsVaultClient(H, srv.tls_port, key=rsa_key(16)).connect()
    try:
        o.client_id = c.client_id
        assert set(ext_list(o)) == {"keep.bin"}
    finally:
        o.close()


def test_a_reader_that_goes_mid_file_frees_its_get_and_others_go_on(start_server):
    srv = start(start_server)
    c = owner(srv, 18)
    big = os.urandom(6_000_000)
    try:
        upload(c, "big.bin", big)
    finally:
        c.close()
    for _ in range(3):
        r = TlsVaultClient(H, srv.tls_port, key=rsa_key(18)).connect()
        r.client_id = c.client_id
        r.send_request(GET, bw.name_field("big.bin") + bytes(8))
        assert len(bw.recv_exact(r.sock, 100_000)) == 100_000
        r.close()  # most of it unread
    time.sleep(0.2)
    o = TlsVaultClient(H, srv.tls_port, key=rsa_key(18)).connect()
    try:
        o.client_id = c.client_id
        got = ext_get(o, "big.bin", 5_000_000)
        assert got[4] == big[5_000_000:] and got[5] == hashlib.sha256(big).digest()
    finally:
        o.close()
    assert refusals(srv) == []
    assert "level=error" not in srv.log(), srv.log_tail()


def test_one_address_holds_at_most_eight_gets_others_are_served(start_server):
    """Gets are a shared budget (64 at once): one address holds at most 8
    of them, its ninth gets 2107; another address is served meanwhile."""
    import socket
    import tlsutil

    srv = start(start_server)
    c = owner(srv, 29)
    big = os.urandom(24_000_000)  # more than the socket buffers hold
    try:
        upload(c, "big.bin", big)
    finally:
        c.close()
    ctx = tlsutil.client_ctx(key=rsa_key(29))
    held = []
    try:
        for _ in range(9):
            raw = socket.create_connection((H, srv.tls_port), timeout=10,
                                           source_address=("127.0.0.5", 0))
            s = ctx.wrap_socket(raw, server_hostname="localhost")
            s.sendall(bw.pack_request(c.client_id, GET, bw.name_field("big.bin") + bytes(8)))
            held.append(s)
        # the first eight stream (and stall, unread); the ninth is refused
        for s in held[:8]:
            head = bw.recv_exact(s, bw.RESP_HEADER_SIZE)
            assert bw.RESP_HEADER.unpack(head)[1] == FILE
        head = bw.recv_exact(held[8], bw.RESP_HEADER_SIZE)
        assert bw.RESP_HEADER.unpack(head)[1:] == (bw.ERROR, 0)
        o = TlsVaultClient(H, srv.tls_port, key=rsa_key(29)).connect()
        try:
            o.client_id = c.client_id
            got = ext_get(o, "big.bin", len(big) - 10)
            assert got[4] == big[-10:] and got[5] == hashlib.sha256(big).digest()
        finally:
            o.close()
    finally:
        for s in held:
            s.close()
    # once they are gone, the address is served again
    r = TlsVaultClient(H, srv.tls_port, key=rsa_key(29))
    raw = socket.create_connection((H, srv.tls_port), timeout=10,
                                   source_address=("127.0.0.5", 0))
    r.sock = ctx.wrap_socket(raw, server_hostname="localhost")
    r.client_id = c.client_id
    try:
        def served():
            code = ext_get(r, "big.bin", len(big))[0]
            return code == FILE
        assert bwd.wait_for(served, 5)
    finally:
        r.close()
