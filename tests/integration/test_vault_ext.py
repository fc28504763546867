"""The vault's extensions (docs/vault-protocol.md, "Bulwark extensions"):
an owner proven on a TLS listener lists its files (1100 -> 2110), gets one
back from an offset (1101 -> 2111, SHA-256 of the whole file after the
bytes) and deletes one (1102 -> 2112); a name it does not have gets 2113.
On the plain port none of them is served, to anyone.

The client here is written from the document (struct layouts below), over
Python's ssl with a certificate the openssl command makes from the
client's RSA key (tlsutil)."""

import base64
import hashlib
import os
import struct
import threading
import time

import pytest

import bwd
import bwvault as bw
from bwd import rsa_key, unique_name
from bwd import describe
from test_tls_auth import refusals, start, wait_refusals
from test_tls_client import client_env, run_bulwark
from tlsutil import TlsVaultClient

H = "127.0.0.1"
LIST, GET, DELETE, LIST_AFTER = 1100, 1101, 1102, 1105
PAGE = 2048
LISTED, FILE, DELETED, NO_SUCH = 2110, 2111, 2112, 2113
ENTRY = struct.Struct("<255sQBqB")  # name, size, verified, stored, pending
FILE_HEAD = struct.Struct("<QQB")  # size, offset, verified


def list_page(c, after=None):
    """One page: ([(name, size, verified, stored, pending)], more, mark)."""
    if after is None:
        c.send_request(LIST, b"")
    else:
        c.send_request(LIST_AFTER, bw.name_field(after[0]) + struct.pack("<Q", after[1]))
    r = bw.read_response(c.sock, max_payload=1 << 20)  # a page: about 560 KB
    assert r.code == LISTED, r
    (n,) = struct.unpack_from("<I", r.payload)
    assert n <= PAGE and len(r.payload) == 4 + n * ENTRY.size + 9, (n, len(r.payload))
    more, mark = struct.unpack_from("<BQ", r.payload, 4 + n * ENTRY.size)
    assert more in (0, 1) and (n > 0 or not more), (n, more)
    rows = []
    for i in range(n):
        name, size, ver, stored, pend = ENTRY.unpack_from(r.payload, 4 + i * ENTRY.size)
        rows.append((bw.parse_name_field(name), size, ver, stored, pend))
    return rows, more, mark


def ext_list(c):
    """{name: (size, verified, stored, pending)}, every page read; no name
    twice."""
    out, after = {}, None
    while True:
        rows, more, mark = list_page(c, after)
        for name, *rest in rows:
            assert name not in out, "%r listed twice" % name
            out[name] = tuple(rest)
        if not more:
            return out
        after = (rows[-1][0], mark)


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


@pytest.mark.long
def test_a_listing_comes_in_pages_each_file_once_whatever_changes_between(start_server,
                                                                         tmp_path):
    """An owner with more files than a page (2048, about 560 KB of reply):
    1100 gives the newest page and says more, 1105 goes on after the last
    entry. A file removed or replaced between pages (the page's last one
    among them, so that the server finds its place by the mark) and one
    added between them: every file present throughout is listed exactly
    once. bulwark ls reads every page."""
    srv = start(start_server)
    key = rsa_key(18)
    c = owner(srv, 18)
    n = PAGE + 300

    def put(lo, hi):
        w = TlsVaultClient(H, srv.tls_port, key=key).connect()
        w.client_id, w.name = c.client_id, c.name
        bw.expect(w.reconnect(), bw.RECONNECTED, "reconnect")
        try:
            for i in range(lo, hi):
                # the oldest waits for its verdict, given between pages
                upload(w, "f%05d" % i, b"%d" % i, verdict=i != 0)
        finally:
            w.close()

    step = (n + 7) // 8
    threads = [threading.Thread(target=put, args=(i, min(n, i + step)))
               for i in range(0, n, step)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    # the uploads may outlast the idle timeout (PostgreSQL + S3): list
    # on a connection of its own
    cid, cname = c.client_id, c.name
    c.connect()
    c.client_id, c.name = cid, cname
    bw.expect(c.reconnect(), bw.RECONNECTED, "reconnect")
    try:
        names = {"f%05d" % i for i in range(n)}
        assert set(ext_list(c)) == names

        rows, more, mark = list_page(c)
        assert len(rows) == PAGE and more == 1
        last = rows[-1][0]
        gone = rows[5][0]
        # between the pages: the page's last entry and another removed, one
        # replaced (a new version: a new place in the list), one added, and
        # the oldest, on the next page, verified (its row changes, its
        # place does not)
        assert "f00000" not in {r[0] for r in rows}
        bw.expect(c.crc_ok("f00000"), bw.ACK, "the oldest's verdict")
        for name in (last, gone):
            r = c.request(DELETE, bw.name_field(name))
            assert r.code == DELETED, r
        replaced = sorted(names - {r[0] for r in rows})[0]
        upload(c, replaced, b"new version")
        upload(c, "zz-new", b"added")
        rest, more2, _ = list_page(c, (last, mark))
        assert more2 == 0
        seen = [r[0] for r in rows] + [r[0] for r in rest]
        assert len(seen) == len(set(seen)), "a file listed twice"
        steady = names - {last, gone, replaced}
        assert steady <= set(seen), sorted(steady - set(seen))[:5]
        assert [r[2] for r in rest if r[0] == "f00000"] == [1]  # verified, listed once

        # bulwark ls, with this owner's identity written as the client
        # keeps it: every page, each file once
        d = tmp_path / "owner"
        d.mkdir()
        der = base64.b64encode(key.export_key(format="DER", pkcs=8)).decode()
        (d / "me.info").write_text("%s\n%s\n%s\n" % (c.name, c.client_id.hex(), der))
        (d / "priv.key").write_text(der + "\n")
        (d / "transfer.info").write_text("tls://%s:%d\n%s\nx\n" % (H, srv.tls_port, c.name))
        now = set(ext_list(c))
        r = run_bulwark("ls", "-C", d, env=client_env(tmp_path / "home"), timeout=120)
        assert r.returncode == 0, describe(r)
        lines = r.stdout.decode().splitlines()
        shown = [ln.split()[-1] for ln in lines]
        assert len(shown) == len(now) and set(shown) == now, (len(shown), len(now))
        assert ("%d files" % len(now)).encode() in r.stderr, describe(r)
    finally:
        c.close()


def test_when_every_get_is_held_a_stalled_reader_gives_its_place(start_server):
    """Eight addresses holding eight gets each (64, every slot) and reading
    nothing kept every other owner from its files: a newcomer got 2107 for
    as long as they stayed. Gets are now slots as uploads are: when all are
    taken, a holder that has read nothing lately (or less than --min-rate)
    past its first second gives its place, its connection closed."""
    import socket
    import tlsutil

    srv = start(start_server)
    c = owner(srv, 30)
    big = os.urandom(24_000_000)  # more than the socket buffers hold
    try:
        upload(c, "big.bin", big)
    finally:
        c.close()
    ctx = tlsutil.client_ctx(key=rsa_key(30))
    held = []
    try:
        for a in range(8):
            for _ in range(8):
                raw = socket.create_connection((H, srv.tls_port), timeout=10,
                                               source_address=("127.0.0.%d" % (60 + a), 0))
                s = ctx.wrap_socket(raw, server_hostname="localhost")
                s.sendall(bw.pack_request(c.client_id, GET,
                                          bw.name_field("big.bin") + bytes(8)))
                held.append(s)
        for s in held:
            head = bw.recv_exact(s, bw.RESP_HEADER_SIZE)
            assert bw.RESP_HEADER.unpack(head)[1] == FILE

        def newcomer_served():
            o = TlsVaultClient(H, srv.tls_port, key=rsa_key(30))
            # on S3 under load the get's read of the store may wait
            # seconds behind the 64 held ones: a generous timeout
            raw = socket.create_connection((H, srv.tls_port), timeout=30,
                                           source_address=("127.0.0.99", 0))
            o.sock = ctx.wrap_socket(raw, server_hostname="localhost")
            o.client_id = c.client_id
            try:
                got = ext_get(o, "big.bin", len(big) - 10)
                return got[0] == FILE and got[4] == big[-10:]
            finally:
                o.close()
        # a holder keeps its slot for its first second
        assert bwd.wait_for(newcomer_served, 30), srv.log_tail()
        assert "its slot went to a newcomer" in srv.log(), srv.log_tail()
    finally:
        for s in held:
            s.close()
