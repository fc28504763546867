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
import time

import bwd
import bwvault as bw
from bwd import describe, rsa_key, unique_name
from test_tls_auth import start
from test_tls_client import Proxy, assert_stored, client_env, send_dir
import ports
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
    """A 1106 needs no live AES key (no 1027 first): the handshake proved
    the id's key. Its AES key has expired (--key-lifetime 1): a 1028 with
    it is refused, the 1106 is served."""
    srv = start(start_server, "--key-lifetime", "1")
    key = rsa_key(22)
    p = bw.VaultClient(H, srv.port, key=key).connect()
    bw.expect(p.register(unique_name("pl")), bw.REGISTERED, "register")
    bw.expect(p.send_pubkey(), bw.KEY_STORED, "key")
    p.close()
    time.sleep(2.5)  # the key's lifetime is the rule: past it by a second
    c = TlsVaultClient(H, srv.tls_port, key=key).connect()
    c.client_id, c.name, c.aes_key = p.client_id, p.name, p.aes_key
    data = os.urandom(40_000)
    clear(c, "k.bin", data)
    assert stored(srv, c, "k.bin") == data
    r = c.send_file("seed.bin", b"0123456789abcdef").response
    assert (r.code, r.payload) == (bw.ERROR, b""), r
    assert "AES key has expired" in srv.log(), srv.log_tail()
    c.close()


def test_a_strangers_failed_guesses_do_not_hold_up_the_owners_tls_uploads(start_server):
    """A 1028 of the owner's id that fails to decrypt (a stranger guessing
    on the plain port) makes the server refuse that client's replacements
    for 10 minutes, since nothing proves who sent them; on a TLS listener
    the handshake proved the owner, and its replacements, 1106 or 1028, are
    taken."""
    srv = start(start_server)
    c = owner(srv, 26)
    clear(c, "doc.bin", b"first version")
    clear(c, "seed.bin", b"first seed version")
    with srv.client() as s:
        ct = bw.bad_padding_ciphertext(c.aes_key, blocks=4)
        s.send_raw(bw.pack_request_header(c.client_id, bw.SEND_FILE, bw.FILE_PREFIX_SIZE + len(ct))
                   + bw.pack_file_prefix(len(ct), "doc.bin") + ct)
        r = s.recv_response()
        assert (r.code, r.payload) == (bw.ERROR, b""), r
    clear(c, "doc.bin", b"second version")
    assert ext_get(c, "doc.bin")[4] == b"second version"
    res = c.send_file("seed.bin", b"second seed version")
    bw.expect(res.response, bw.FILE_RECEIVED, "1028 over TLS")
    bw.expect(c.crc_ok("seed.bin"), bw.ACK, "verdict")
    assert ext_get(c, "seed.bin")[4] == b"second seed version"
    assert "may be guessing" not in srv.log(), srv.log_tail()
    c.close()


def by_hand(srv, cid, key, size, name, declared=None, body=b""):
    """A 1106 written by hand over TLS: the header announcing 259 + size
    (or declared), the prefix saying size."""
    c = TlsVaultClient(H, srv.tls_port, key=key).connect()
    c.client_id = cid
    c.send_raw(bw.pack_request_header(
        cid, bw.SEND_CLEAR, bw.FILE_PREFIX_SIZE + (size if declared is None else declared))
        + struct.pack("<I", size) + bw.name_field(name) + body)
    return c


def refused(c, what):
    r = c.recv_response()
    assert (r.code, r.payload) == (bw.ERROR, b""), (what, r)
    assert c.is_closed_by_peer(timeout=5), what


def test_a_clear_upload_is_refused_off_tls_to_strangers_and_when_sizes_lie(start_server):
    srv = start(start_server, "--max-file-size", "200000")
    c = owner(srv, 23)
    cid = c.client_id
    data = os.urandom(5000)

    # the plain port never takes it, not even from the owner's id, and
    # refuses it before its content: nothing of it is sent here
    p = bw.VaultClient(H, srv.port).connect()
    p.send_raw(bw.pack_request_header(cid, bw.SEND_CLEAR, bw.FILE_PREFIX_SIZE + 150_000)
               + struct.pack("<I", 150_000) + bw.name_field("plain.bin"))
    refused(p, "the plain port")
    # another key naming the owner's id: the handshake proved someone else
    refused(by_hand(srv, cid, rsa_key(24), 16, "stranger.bin"), "another key")
    # an id nobody registered: 2107 after the body, the connection kept
    u = TlsVaultClient(H, srv.tls_port, key=rsa_key(25)).connect()
    u.client_id = os.urandom(16)
    res = u.send_clear("nobody.bin", data)
    assert (res.response.code, res.response.payload) == (bw.ERROR, b"")
    assert u.request(bw.LIMITS, b"").code == bw.LIMITS_REPLY
    u.close()
    # sizes: zero, over the limit, a prefix that disagrees with the header
    refused(by_hand(srv, cid, rsa_key(23), 0, "size.bin"), "zero")
    refused(by_hand(srv, cid, rsa_key(23), 200_001, "size.bin"), "over the limit")
    refused(by_hand(srv, cid, rsa_key(23), 99, "lie.bin", declared=100), "disagreeing sizes")

    # a body cut short: nothing visible, the owner's connection unharmed
    mark = len(srv.log())
    o = by_hand(srv, cid, rsa_key(23), 150_000, "cut.bin", body=data)
    o.sock.shutdown(socket.SHUT_RDWR)
    o.close()
    # (its close is logged however far it got: on a shared store the
    # header may still wait for the client's rows to be read)
    assert bwd.wait_for(lambda: "closed" in srv.log()[mark:], 5), srv.log_tail()
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


# --------------------------------------------------------------------------
# bulwark send: a 1106 over TLS when the server offers it, the seed's 1028
# otherwise


def uploads_since(srv, mark):
    """The upload_started lines logged since mark: 1 for each with clear=1,
    0 for each without."""
    return [int(" clear=1" in ln) for ln in srv.log()[mark:].splitlines()
            if "event=upload_started" in ln]


def test_bulwark_send_over_tls_sends_the_file_as_it_is(start_server, client_dir, tmp_path):
    srv = start(start_server)
    env = client_env(tmp_path / "home")
    for data, flags, want in ((os.urandom(2 * 1024 * 1024 + 7), (), [1]),
                              (b"z", (), [1]),
                              (b"", (), [0]),  # an empty file goes as a 1028
                              (os.urandom(30_000), ("--seed-upload",), [0])):
        d, _ = send_dir(client_dir, srv.tls_port, data=data)
        mark = len(srv.log())
        r = d.run(*flags, env=env)
        assert r.returncode == 0, describe(r)
        assert_stored(srv, d, data)
        assert bwd.wait_for(lambda: uploads_since(srv, mark) == want, 5), \
            (len(data), flags, uploads_since(srv, mark))
    # the plain port: the seed's 1028, and 1104 is not even asked
    d = client_dir()
    data = os.urandom(10_000)
    d.write_file("upload.bin", data)
    d.write_transfer(srv.port, unique_name("pl"), "upload.bin")
    mark = len(srv.log())
    r = d.run(env=env)
    assert r.returncode == 0, describe(r)
    assert_stored(srv, d, data)
    assert uploads_since(srv, mark) == [0]


def seed_upload_through(srv, port, client_dir, env, size):
    """bulwark send of size random bytes to tls://127.0.0.1:port, which
    must succeed with the file stored by a 1028: (its result, what srv
    logged meanwhile)."""
    data = os.urandom(size)
    d, _ = send_dir(client_dir, port, data=data)
    mark = len(srv.log())
    r = d.run(env=env)
    assert r.returncode == 0, describe(r)
    assert_stored(srv, d, data)
    log = srv.log()[mark:]
    assert uploads_since(srv, mark) == [0], log
    return r, log


def test_a_tls_server_that_does_not_offer_1106_gets_the_seeds_1028(start_server, client_dir,
                                                                  tmp_path):
    """TLS ended in front of the plain port, as stunnel would: 2115 without
    the feature. Then the same, closing a connection whose client asks 1104,
    as a server that does not know the code may."""
    srv = start(start_server)
    env = client_env(tmp_path / "home")
    t = Proxy(ports.reserve(), srv.port, cert=srv.data_dir / "tls.crt",
              key=srv.data_dir / "tls.key")
    t.mode = "end"
    try:
        for cut in (None, lambda data: len(data) >= 23 and
                    struct.unpack_from("<H", data, 17)[0] == bw.LIMITS):
            t.cut = cut
            n = len(t.stats)
            r, _ = seed_upload_through(srv, t.port, client_dir, env, 300_000)
            ends = [st["end"] for st in t.new_since(n)]
            if cut is not None:  # the upload went on a new connection
                assert ends.count("cut") == 1 and len(ends) >= 2, ends
                assert b"trying again" not in r.stderr, describe(r)
    finally:
        t.stop()
    assert not t.errors, t.errors


def test_a_node_that_refuses_the_1106_it_offered_gets_the_seeds_1028(start_server, client_dir,
                                                                     tmp_path):
    """Behind one address, a node that does not serve 1106 after all (here
    the plain port behind a TLS terminator whose 2115 says it does): the
    2107 sends the client back to the seed's 1028, with a fresh key on a
    new connection, and the file lands."""
    srv = start(start_server)
    env = client_env(tmp_path / "home")

    def offer(data):
        if len(data) >= 19 and struct.unpack_from("<H", data, 1)[0] == bw.LIMITS_REPLY:
            data = data[:15] + struct.pack("<I", bw.FEATURE_CLEAR) + data[19:]
        return data
    t = Proxy(ports.reserve(), srv.port, cert=srv.data_dir / "tls.crt",
              key=srv.data_dir / "tls.key")
    t.mode, t.edit = "end", offer
    try:
        r, log = seed_upload_through(srv, t.port, client_dir, env, 200_000)
        assert "served on a TLS listener only" in log, log
        assert r.stderr.count(b"trying again") == 1, describe(r)
    finally:
        t.stop()
    assert not t.errors, t.errors


def test_a_file_over_the_limit_is_said_once_over_tls(start_server, client_dir, tmp_path):
    """The size limit a 1106 meets is the file's own size (no padding)."""
    srv = start(start_server, "--max-file-size", "100000")
    env = client_env(tmp_path / "home")
    d, _ = send_dir(client_dir, srv.tls_port, data=os.urandom(100_000))
    r = d.run(env=env)
    assert r.returncode == 0, describe(r)  # exactly the limit: taken
    d, _ = send_dir(client_dir, srv.tls_port, data=os.urandom(100_001))
    r = d.run(env=env)
    assert r.returncode == 5, describe(r)
    assert b"the server takes files up to 100000 bytes; this one has 100001" in r.stderr, \
        describe(r)
