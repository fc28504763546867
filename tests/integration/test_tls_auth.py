"""Clients proven by their registered key on the TLS listeners.

A client shows a certificate made from the key it registered (the vault's
1026 key, the messenger's 600 key); TLS 1.3's CertificateVerify proves it
holds the private key. On the TLS port a request whose header names a
registered client is served only when that proven key is the client's, and
a registration binds the key proven; anything else gets the protocol's
error reply and a close, is logged (event=auth_refused, with the peer's
address and the reason) and counted (bulwark_errors_total{kind="auth_..."}).

The attackers here are the independent clients (bwvault.py, bwmsg.py over
Python's ssl, certificates made by the openssl command): a stranger who
knows a client's id (every 2101 lists them) and proves its own key, one who
proves none, and a registration carrying another key than the one proven.
The plain port is the seed's and stays as it was."""

import os
import re
import socket
import threading
import time
import urllib.request

import pytest

import bwd
import bwmsg
import bwvault as bw
import ports
from bwd import rsa_key, unique_name
import tlsutil
from test_tls_server import start_tls
from tlsutil import TlsMsgClient, TlsVaultClient

H = "127.0.0.1"
REFUSED_RE = re.compile(r"event=auth_refused conn=\d+ peer=(\S+) service=(\S+) code=(\d+) "
                        r"id=([0-9a-f]{32}) reason=(\S+)")


def start(start_server, *args, **kw):
    mp = ports.reserve()
    srv = start_tls(start_server, "--metrics-listen", "%s:%d" % (H, mp), *args, **kw)
    srv.metrics_port = mp
    return srv


def refusals(srv, mark=0):
    """[(peer, service, code, id hex, reason)] logged since mark."""
    return [m.groups() for m in REFUSED_RE.finditer(srv.log()[mark:])]


def wait_refusals(srv, mark, n):
    bwd.wait_for(lambda: len(refusals(srv, mark)) >= n, 5)
    got = refusals(srv, mark)
    assert len(got) == n, "wanted %d refusals, got %r\n%s" % (n, got, srv.log()[mark:])
    return got


def auth_counts(srv):
    with urllib.request.urlopen("http://%s:%d/metrics" % (H, srv.metrics_port), timeout=10) as r:
        text = r.read().decode()
    return {k: int(v) for k, v in
            re.findall(r'^bulwark_errors_total\{[^}]*kind="auth_(\w+)"\} (\d+)$', text, re.M)}


def refused_and_closed(c, resp):
    """The vault's general error, then the server's close."""
    assert resp.code == bw.ERROR and resp.payload == b"", resp
    assert c.is_closed_by_peer(timeout=5), "the connection stayed open"


def vault_owner(srv, key, name=None, source=None):
    c = TlsVaultClient(H, srv.tls_port, key=key, source=source).connect()
    bw.expect(c.register(name or unique_name("owner")), bw.REGISTERED, "register")
    bw.expect(c.send_pubkey(), bw.KEY_STORED, "key")
    return c


def stranger(srv, owner, key=None, anonymous=False):
    """A TLS vault connection naming owner's id, proving key (or none)."""
    s = TlsVaultClient(H, srv.tls_port, key=key or rsa_key(20), anonymous=anonymous).connect()
    s.client_id, s.name = owner.client_id, owner.name
    return s


# --------------------------------------------------------------------------
# The vault


def test_a_stranger_proving_its_own_key_cannot_act_for_a_vault_client(start_server):
    srv = start(start_server)
    owner = vault_owner(srv, rsa_key(0))
    data = b"the owner's bytes " * 500
    try:
        # an upload waiting for its verdict, its uploader still connected:
        # the verdict is the owner's alone
        res = owner.send_file("mine.bin", data)
        bw.expect(res.response, bw.FILE_RECEIVED, "upload")
        mark = len(srv.log())
        hexid = owner.client_id.hex()
        tries = [
            ("1027", lambda s: s.reconnect()),
            ("1029", lambda s: s.crc_ok("mine.bin")),
            ("1030", lambda s: s.request(bw.CRC_BAD, bw.name_field("mine.bin"))),
            ("1031", lambda s: s.giveup("mine.bin")),
            # a key change for the owner's id, carrying the key proven
            ("1026", lambda s: s.send_pubkey(key=s.key)),
            ("1028", lambda s: s.send_file("theirs.bin", b"x" * 1000,
                                           aes_key=bytes(16))),
        ]
        for code, act in tries:
            s = stranger(srv, owner)
            try:
                got = act(s)
                refused_and_closed(s, got.response if code == "1028" else got)
            finally:
                s.close()
        s = stranger(srv, owner, anonymous=True)
        try:
            refused_and_closed(s, s.reconnect())
        finally:
            s.close()
        got = wait_refusals(srv, mark, len(tries) + 1)
        assert [(g[1], g[2], g[3], g[4]) for g in got] == \
            [("vault", c, hexid, "wrong_key") for c, _ in tries] + \
            [("vault", "1027", hexid, "no_certificate")]
        assert all(g[0].startswith("127.0.0.1:") for g in got), got
        counts = auth_counts(srv)
        assert counts["wrong_key"] == len(tries) and counts["no_certificate"] == 1, counts

        # nothing the stranger sent changed a thing: the owner's verdict
        # on its open connection is what counts, its key is still its own
        ack = bw.expect(owner.crc_ok("mine.bin"), bw.ACK, "the owner's verdict")
        assert ack.client_id == owner.client_id
        assert (srv.client_dir(owner.client_id) / "mine.bin").read_bytes() == data
        assert not (srv.client_dir(owner.client_id) / "theirs.bin").exists()
        row = srv.file_row(owner.client_id, "mine.bin")
        assert row is not None and bwd.is_true(row["Verified"]), row
        again = TlsVaultClient(H, srv.tls_port, key=owner.key).connect()
        try:
            again.client_id, again.name = owner.client_id, owner.name
            bw.expect(again.reconnect(), bw.RECONNECTED, "the owner again")
        finally:
            again.close()
    finally:
        owner.close()


def test_a_vault_registration_over_tls_binds_the_key_proven(start_server):
    srv = start(start_server)
    mark = len(srv.log())
    # no certificate: no registration
    a = TlsVaultClient(H, srv.tls_port, anonymous=True).connect()
    try:
        refused_and_closed(a, a.register(unique_name("anon")))
    finally:
        a.close()
    # proving key 1, registering key 2: refused, and key 1 binds later
    c = TlsVaultClient(H, srv.tls_port, key=rsa_key(1)).connect()
    try:
        bw.expect(c.register(unique_name("bind")), bw.REGISTERED, "register")
        cid = c.client_id
        refused_and_closed(c, c.send_pubkey(key=rsa_key(2)))
        # the 1025 bound the key proven: its holder is served at once
        c.key = rsa_key(1)
        c.connect()
        bw.expect(c.reconnect(), bw.RECONNECTED, "the key proven at the 1025")
        c.connect()
        bw.expect(c.send_pubkey(key=rsa_key(1)), bw.KEY_STORED, "the key proven")
        assert c.client_id == cid
    finally:
        c.close()
    got = wait_refusals(srv, mark, 2)
    assert [(g[2], g[4]) for g in got] == [("1025", "no_certificate"),
                                           ("1026", "registration_key")], got
    assert auth_counts(srv)["registration_key"] == 1
    # the key bound is the one proven: key 2 opens nothing, on either port
    p = bw.VaultClient(H, srv.port, key=rsa_key(2)).connect()
    try:
        p.client_id, p.name = cid, c.name
        resp = p.request(bw.RECONNECT, bw.name_field(c.name))
        assert resp.code == bw.RECONNECTED, resp
        with pytest.raises(ValueError):
            bw.unwrap_key(rsa_key(2), resp.payload[bw.ID_SIZE:])
        assert len(bw.unwrap_key(rsa_key(1), resp.payload[bw.ID_SIZE:])) == 16
    finally:
        p.close()


def test_between_a_tls_1025_and_its_1026_no_stranger_binds_the_id(start_server):
    """Ids are listed (601 lists the vault's clients too): a stranger who
    sees a new id and sends its 1026 first, with its own certificate, must
    not take it. Over TLS the 1025 binds the key it proves."""
    srv = start(start_server)
    owner = TlsVaultClient(H, srv.tls_port, key=rsa_key(30)).connect()
    try:
        bw.expect(owner.register(unique_name("racer")), bw.REGISTERED, "register")
        s = stranger(srv, owner, key=rsa_key(31))
        try:
            refused_and_closed(s, s.send_pubkey(key=rsa_key(31)))
        finally:
            s.close()
        owner.connect()
        bw.expect(owner.send_pubkey(), bw.KEY_STORED, "the owner's 1026")
    finally:
        owner.close()


def test_an_identity_registered_on_the_plain_port_proves_itself_over_tls(start_server):
    srv = start(start_server)
    key = rsa_key(3)
    p = bw.VaultClient(H, srv.port, key=key).connect()
    try:
        bw.expect(p.register(unique_name("plain")), bw.REGISTERED, "register")
        bw.expect(p.send_pubkey(), bw.KEY_STORED, "key")
    finally:
        p.close()
    t = TlsVaultClient(H, srv.tls_port, key=key).connect()
    try:
        t.client_id, t.name = p.client_id, p.name
        bw.expect(t.reconnect(), bw.RECONNECTED, "reconnect over TLS")
        res = t.send_file("first-tls.bin", b"z" * 4096)
        bw.expect(res.response, bw.FILE_RECEIVED, "upload over TLS")
        bw.expect(t.crc_ok("first-tls.bin"), bw.ACK, "verdict over TLS")
    finally:
        t.close()
    s = stranger(srv, p, key=rsa_key(4))
    try:
        refused_and_closed(s, s.reconnect())
    finally:
        s.close()


# --------------------------------------------------------------------------
# The messenger


def test_only_the_owner_pulls_its_messages_and_a_603_names_its_real_sender(start_server):
    srv = start(start_server)
    a = TlsMsgClient(H, srv.tls_port, key=rsa_key(5))
    b = TlsMsgClient(H, srv.tls_port, key=rsa_key(6))
    try:
        a.register(unique_name("ma"))
        b.register(unique_name("mb"))
        k = bytes(range(16))
        tid = a.send_text(b.client_id, k, b"for bob only")
        mark = len(srv.log())
        for code, payload in [(bwmsg.PULL, b""), (bwmsg.LIST, b""),
                              (bwmsg.PUBKEY, a.client_id),
                              (bwmsg.SEND, bwmsg.SEND_PREFIX.pack(a.client_id, bwmsg.TEXT, 16)
                               + bytes(16))]:
            for anonymous in (False, True):
                # bob's id, someone else's key (or none): a pull would hand
                # out bob's messages and its close delete them; a 603 would
                # reach alice in bob's name
                e = TlsMsgClient(H, srv.tls_port, key=rsa_key(7), anonymous=anonymous)
                try:
                    e.client_id = b.client_id
                    rcode, body = e.request(code, payload)
                    assert (rcode, body) == (bwmsg.ERROR, b""), (code, rcode)
                    assert e.sock.recv(1) == b"", "not closed after the refusal"
                finally:
                    e.close()
        got = wait_refusals(srv, mark, 8)
        assert [(g[1], g[2], g[4]) for g in got] == [
            ("messenger", str(c), r) for c in (604, 601, 602, 603)
            for r in ("wrong_key", "no_certificate")], got
        assert all(g[3] == b.client_id.hex() for g in got), got
        (r,) = b.pull()
        assert (r[0], r[1]) == (a.client_id, tid)
        assert bw.aes_decrypt(k, r[3]) == b"for bob only"
        assert a.pull() == [], "a 603 in bob's name reached alice"
        counts = auth_counts(srv)
        assert counts["wrong_key"] == 4 and counts["no_certificate"] == 4, counts
    finally:
        a.close()
        b.close()


def test_a_messenger_registration_binds_the_key_proven(start_server):
    srv = start(start_server)
    mark = len(srv.log())
    name = unique_name("mreg")
    for anonymous in (True, False):
        c = TlsMsgClient(H, srv.tls_port, key=rsa_key(8), anonymous=anonymous)
        try:
            # the 600 carries key 9, the handshake proves key 8 (or none)
            rcode, body = c.request(bwmsg.REGISTER,
                                    bw.name_field(name) + bw.spki_der(rsa_key(9)))
            assert (rcode, body) == (bwmsg.ERROR, b"")
        finally:
            c.close()
    got = wait_refusals(srv, mark, 2)
    assert [(g[2], g[4]) for g in got] == [("600", "no_certificate"),
                                           ("600", "registration_key")], got
    # the name was not taken: the key proven registers it
    c = TlsMsgClient(H, srv.tls_port, key=rsa_key(9))
    o = TlsMsgClient(H, srv.tls_port, key=rsa_key(12))
    try:
        c.register(name)
        o.register(unique_name("other"))
        assert (c.client_id, name) in o.list()
        assert o.public_key(c.client_id) == bw.spki_der(rsa_key(9))
    finally:
        c.close()
        o.close()


def test_the_plain_port_still_serves_the_seed_protocol_unproven(start_server):
    """What the TLS port refuses, the plain port serves as the seed says:
    nothing is proven there (docs/security.md says what that allows)."""
    srv = start(start_server)
    b = TlsMsgClient(H, srv.tls_port, key=rsa_key(10))
    a = bwmsg.MsgClient(H, srv.port)
    try:
        b.register(unique_name("pb"))
        a.register(unique_name("pa"), key=rsa_key(11))
        a.send_text(b.client_id, bytes(16), b"plain")
        e = bwmsg.MsgClient(H, srv.port)
        try:
            e.client_id = b.client_id
            assert len(e.pull()) == 1
        finally:
            e.close()
    finally:
        a.close()
        b.close()
    assert refusals(srv) == []


# --------------------------------------------------------------------------
# The handshake budget: a handshake costs the server CPU on its loop


def raw_conn(port, src):
    s = socket.create_connection((H, port), timeout=10, source_address=(src, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def closed_by_server(s, timeout=5.0):
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_one_address_past_its_handshakes_a_second_is_closed_others_are_served(start_server):
    srv = start(start_server, "--tls-handshakes-per-addr", "10", "--tls-handshakes", "0")
    # 60 connections from 127.0.0.2 within a moment: the first 10 of the
    # second are served, the newcomers past them closed before a handshake
    socks = [raw_conn(srv.tls_port, "127.0.0.2") for _ in range(60)]
    try:
        closed = [s for s in socks if closed_by_server(s, 0.5)]
        assert len(closed) >= 60 - 30, "only %d of 60 closed" % len(closed)
        kept = [s for s in socks if s not in closed]
        assert kept, "every connection was closed"
        # one that was kept does its handshake and registers
        ctx = tlsutil.client_ctx(key=rsa_key(13))
        t = ctx.wrap_socket(kept[0], server_hostname="localhost")
        t.sendall(bwmsg.pack_request(bytes(16), bwmsg.REGISTER,
                                     bw.name_field(unique_name("kept"))
                                     + bw.spki_der(rsa_key(13))))
        assert bw.recv_exact(t, bw.RESP_HEADER_SIZE)[1:3] == (2100).to_bytes(2, "little")
        t.close()
    finally:
        for s in socks:
            s.close()
    # another address is served meanwhile, on both kinds of port
    c = TlsVaultClient(H, srv.tls_port, key=rsa_key(14))
    c.sock = tlsutil.tls_connect(H, srv.tls_port, tlsutil.client_ctx(key=rsa_key(14)))
    try:
        bw.expect(c.register(unique_name("other")), bw.REGISTERED, "another address")
    finally:
        c.close()
    p = bw.VaultClient(H, srv.port).connect()
    try:
        bw.expect(p.register(unique_name("plain")), bw.REGISTERED, "the plain port")
    finally:
        p.close()
    assert bwd.wait_for(lambda: "TLS handshakes from 127.0.0.2 over 10 a second" in srv.log(), 5), \
        srv.log_tail()
    assert tls_metric(srv, 'bulwark_errors_total{[^}]*kind="tls_handshake_rate"}') == len(closed)


def tls_metric(srv, pattern):
    with urllib.request.urlopen("http://%s:%d/metrics" % (H, srv.metrics_port), timeout=10) as r:
        text = r.read().decode()
    m = re.search("^" + pattern + r" (\d+)$", text, re.M)
    assert m, "no %s in\n%s" % (pattern, text)
    return int(m.group(1))


def test_past_the_handshakes_a_second_in_all_newcomers_wait_and_are_served(start_server):
    srv = start(start_server, "--tls-handshakes", "5", "--tls-handshakes-per-addr", "0")
    mark = len(srv.log())
    socks = [raw_conn(srv.tls_port, "127.0.0.%d" % (10 + i)) for i in range(16)]
    done = []
    try:
        for i, s in enumerate(socks):
            # each one waits in the backlog, is accepted in a later second,
            # and does its whole handshake then: none is refused
            ctx = tlsutil.client_ctx()
            s.settimeout(20)
            t = ctx.wrap_socket(s, server_hostname="localhost")
            assert t.version() == "TLSv1.3"
            done.append(t)
            if i == 8:
                # while the TLS port waits, the plain one is served at once
                p = bw.VaultClient(H, srv.port).connect()
                try:
                    bw.expect(p.register(unique_name("plain")), bw.REGISTERED, "plain")
                finally:
                    p.close()
    finally:
        for s in done or socks:
            s.close()
    assert len(done) == 16
    assert tls_metric(srv, r"bulwark_tls_accept_paused_total\{[^}]*\}") >= 1
    assert "TLS handshakes began within a second (--tls-handshakes): accepting paused" \
        in srv.log()[mark:], srv.log_tail()
    assert tls_metric(srv, 'bulwark_errors_total{[^}]*kind="tls_handshake"}') == 0


# --------------------------------------------------------------------------
# An owner's choice: its id refused on the plain listeners (1103)


def bulk_readers(srv):
    return tls_metric(srv, r"bulwark_tls_bulk_readers\{[^}]*\}")


def upload_header(c, ct, name):
    return (bw.pack_request_header(c.client_id, bw.SEND_FILE, bw.FILE_PREFIX_SIZE + len(ct))
            + bw.U32.pack(len(ct)) + bw.name_field(name))


def upload_done(srv, c, data, name):
    resp = bw.expect(c.recv_response(), bw.FILE_RECEIVED, "upload")
    assert bw.parse_file_received(resp.payload)[3] == bw.cksum(data)
    bw.expect(c.crc_ok(name), bw.ACK, "crc ok")
    assert (srv.client_dir(c.client_id) / name).read_bytes() == data


def uploads_at_once(srv, owners, name):
    """owners (vault clients) each upload 48 MiB, all at once, and confirm;
    each file is stored whole. The most bulk readers seen meanwhile."""
    ups = []
    for c in owners:
        data = os.urandom(48 << 20)
        ups.append((c, data, bw.aes_encrypt(c.aes_key, data)))
    together = threading.Barrier(len(ups))

    def upload(c, ct):
        together.wait(10)
        c.send_raw(upload_header(c, ct, name) + ct)

    threads = [threading.Thread(target=upload, args=(c, ct)) for c, _, ct in ups]
    for t in threads:
        t.start()
    peak = 0
    while any(t.is_alive() for t in threads):
        peak = max(peak, bulk_readers(srv))
        time.sleep(0.02)
    for t in threads:
        t.join()
    for c, data, _ in ups:
        upload_done(srv, c, data, name)
        c.close()
    return peak


def bulk_refused(srv):
    return tls_metric(srv, r"bulwark_tls_bulk_refused_total\{[^}]*\}")


def test_past_the_bulk_readers_uploads_read_64_kib_at_a_time_and_complete(start_server):
    """--tls-bulk-readers 1: of two uploads sent at once, one holds the
    bulk read and the other is refused it (counted) and reads through the
    loop's 64 KiB; both files are stored whole. A connection gives the read
    back when its input shrinks, though it keeps sending small records, and
    at its close."""
    srv = start(start_server, "--tls-bulk-readers", "1")
    peak = uploads_at_once(srv, [vault_owner(srv, rsa_key(30 + i)) for i in range(2)], "both.bin")
    assert peak <= 1
    assert bulk_refused(srv) >= 1
    assert bwd.wait_for(lambda: bulk_readers(srv) == 0, 5), "closed, and still held"

    # one upload alone takes the read; then, sending a small record every
    # 0.1 s (never a quiet second), it gives it back
    c = vault_owner(srv, rsa_key(32))
    data = os.urandom(12 << 20)
    ct = bw.aes_encrypt(c.aes_key, data)
    sent = 4 << 20
    c.send_raw(upload_header(c, ct, "held.bin") + ct[:sent])
    assert bwd.wait_for(lambda: bulk_readers(srv) == 1, 5), "never read in bulk"
    stop = threading.Event()

    def trickle():
        nonlocal sent
        while not stop.is_set() and sent < len(ct) - 4096:
            c.send_raw(ct[sent:sent + 4096])
            sent += 4096
            stop.wait(0.1)

    t = threading.Thread(target=trickle)
    t.start()
    try:
        assert bwd.wait_for(lambda: bulk_readers(srv) == 0, 5), \
            "a connection sending small records kept its bulk read"
    finally:
        stop.set()
        t.join()
    c.send_raw(ct[sent:])
    upload_done(srv, c, data, "held.bin")
    c.close()
    assert bwd.wait_for(lambda: bulk_readers(srv) == 0, 5)


def test_one_address_holds_at_most_a_quarter_of_the_bulk_reads(start_server):
    """--tls-bulk-readers 4, so one address's share is 1: two addresses
    uploading at once are both read in bulk (nothing refused); two uploads
    at once from one address are not (one refused, counted), and all four
    files are stored whole."""
    srv = start(start_server, "--tls-bulk-readers", "4")
    uploads_at_once(srv, [vault_owner(srv, rsa_key(33 + i), source="127.0.0.%d" % (21 + i))
                          for i in range(2)], "apart.bin")
    assert bulk_refused(srv) == 0
    uploads_at_once(srv, [vault_owner(srv, rsa_key(35 + i), source="127.0.0.23")
                          for i in range(2)], "one.bin")
    assert bulk_refused(srv) >= 1
    assert bwd.wait_for(lambda: bulk_readers(srv) == 0, 5)


def test_an_owner_proven_over_tls_can_have_its_id_refused_on_the_plain_port(start_server):
    from test_console import Console
    srv = start(start_server, console=True)
    b = TlsMsgClient(H, srv.tls_port, key=rsa_key(19))
    a = bwmsg.MsgClient(H, srv.port)
    try:
        b.register(unique_name("tlsonly"))
        a.register(unique_name("plainsender"), key=rsa_key(21))
        k = bytes(16)
        mid = a.send_text(b.client_id, k, b"for b, over whatever port")
        # asked on the plain port it is refused, whoever asks
        p = bw.VaultClient(H, srv.port).connect()
        try:
            p.client_id = b.client_id
            assert p.request(1103, b"").code == bw.ERROR
        finally:
            p.close()
        # the owner, proven on the TLS port: 2114 (twice: it holds)
        o = TlsVaultClient(H, srv.tls_port, key=rsa_key(19)).connect()
        try:
            o.client_id = b.client_id
            for _ in range(2):
                r = o.request(1103, b"")
                assert (r.code, r.payload) == (2114, b""), r
        finally:
            o.close()
        mark = len(srv.log())
        # now b's id on the plain port is refused, each protocol, each
        # request: a 604 would hand out b's message, a 603 speak as b
        for code, payload in [(bwmsg.PULL, b""), (bwmsg.LIST, b""),
                              (bwmsg.SEND, bwmsg.SEND_PREFIX.pack(a.client_id, bwmsg.TEXT, 16)
                               + bytes(16))]:
            e = bwmsg.MsgClient(H, srv.port)
            try:
                e.client_id = b.client_id
                assert e.request(code, payload) == (bwmsg.ERROR, b"")
            finally:
                e.close()
        v = bw.VaultClient(H, srv.port, key=rsa_key(19)).connect()
        try:
            v.client_id, v.name = b.client_id, b.name
            assert v.request(bw.RECONNECT, bw.name_field(b.name)).code == bw.ERROR
        finally:
            v.close()
        got = wait_refusals(srv, mark, 4)
        assert {(g[2], g[4]) for g in got} == {("604", "plain_refused"), ("601", "plain_refused"),
                                               ("603", "plain_refused"),
                                               ("1027", "plain_refused")}, got
        assert auth_counts(srv)["plain_refused"] == 4
        # others on the plain port are served as before, and so is b on TLS
        assert (b.client_id, b.name) in a.list()
        (r,) = b.pull()
        assert r[1] == mid
        with Console(srv.console_port) as c:
            c.hello()
            rows = {ln.split("\t")[0]: ln.split("\t")[5]
                    for ln in c.ask("USRS").splitlines()[1:]}
        assert rows[b.name] == "refused" and rows[a.name] == "served", rows
    finally:
        a.close()
        b.close()
    # it is in the store: a restart keeps it
    srv.stop()
    srv.start()
    e = bwmsg.MsgClient(H, srv.port)
    try:
        e.client_id = b.client_id
        assert e.request(bwmsg.PULL, b"") == (bwmsg.ERROR, b"")
    finally:
        e.close()


def test_a_certificate_chain_over_8_kib_is_refused_and_others_are_served(start_server,
                                                                           tmp_path):
    """A client certificate message is read into memory before it is
    judged, and kept with the session: past 8 KiB the handshake fails, the
    connection closes, the failure is counted; nobody else notices."""
    import ssl
    import subprocess

    srv = start(start_server)
    cert, key = tlsutil.identity_files(rsa_key(27))
    filler = tmp_path / "filler.crt"
    subprocess.run([tlsutil.need_openssl(), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(tmp_path / "filler.key"), "-out", str(filler),
                    "-subj", "/CN=" + "f" * 60, "-days", "2"],
                   check=True, capture_output=True, timeout=60)
    one = filler.read_text()
    chain = tmp_path / "chain.crt"
    chain.write_text(open(cert).read() + one * 16)  # about 14 KiB of DER
    assert chain.stat().st_size > 18 * 1024
    ctx = tlsutil.client_ctx(key=None)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_cert_chain(str(chain), key)
    before = tls_metric(srv, r'bulwark_errors_total\{[^}]*kind="tls_handshake"\}')
    s = socket.create_connection((H, srv.tls_port), timeout=10)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        t = ctx.wrap_socket(s, server_hostname="localhost")
        # TLS 1.3: the client's certificate goes after the server's
        # Finished; the refusal arrives on the first read
        t.sendall(bwmsg.pack_request(bytes(16), bwmsg.LIST, b""))
        assert t.recv(1) == b""
        raise ConnectionError("closed")
    s.close()
    assert bwd.wait_for(lambda: tls_metric(
        srv, r'bulwark_errors_total\{[^}]*kind="tls_handshake"\}') == before + 1, 5)
    assert "excessive message size" in srv.log(), srv.log_tail()
    c = TlsMsgClient(H, srv.tls_port, key=rsa_key(28))
    try:
        c.register(unique_name("after"))
    finally:
        c.close()


def test_a_burst_through_the_balancer_counts_against_the_handshakes_a_second(start_server):
    """Connections from a --proxy-from address name their client only in
    the PROXY header that follows; they used to join the global count only
    then, so a burst of them was accepted whole before any header arrived,
    past --tls-handshakes. Now each counts at its accept: past 5 in a
    second the TLS port pauses, the rest wait in the backlog and are
    accepted in later seconds, none refused."""
    lb = "127.0.0.9"
    srv = start(start_server, "--tls-handshakes", "5", "--tls-handshakes-per-addr", "0",
                "--proxy-from", lb)
    socks = []
    t0 = time.monotonic()
    try:
        for _ in range(30):
            s = socket.socket()
            s.bind((lb, 0))
            s.settimeout(10)
            s.connect((H, srv.tls_port))
            socks.append(s)
        # nothing sent: each waits for its header. Within the first half
        # second at most two seconds' budgets were accepted
        time.sleep(0.5)
        accepted = tls_metric(
            srv, r'bulwark_connections_accepted_total\{[^}]*listener="tls"[^}]*\}')
        # 5 a second, in as many seconds' windows as the test has taken
        # (a loaded machine's connects may span several); before, all 30
        windows = int(time.monotonic() - t0) + 2
        assert accepted <= min(5 * windows, 29), (accepted, windows)
        assert tls_metric(srv, r"bulwark_tls_accept_paused_total\{[^}]*\}") >= 1
    finally:
        for s in socks:
            s.close()
