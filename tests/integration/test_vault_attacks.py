"""A stranger attacks the real bulwarkd. Everything here goes through the
wire (and, for what the daemon believes, its console, log and database),
the way someone who knows a victim's client id and name could.

  1. a public key that was used cannot be replaced by another 1026; before
     any use, a repeated 1026 (an honest retry) still replaces it
  2. no padding oracle: bad padding -> 2107 and the connection closed;
     three decryption failures revoke the key; keys expire (--key-lifetime)
  3. a stranger's 1027s do not break the key a client got on its own
     connection
  4. a pipelined 1025 (its id is zeros) is not taken for padding; padded
     course-sample requests still get padded replies
  5. SIGTERM: sessions in flight get to finish within --shutdown-grace,
     new ones are refused
  6. two concurrent uploads of one name by one client leave one whole file
     that the registry, the database and the disk agree on
  7. names are escaped in the log and in the console's USRS

Every socket has a timeout; sleeps only let the server get somewhere (a key
expire, a pipelined write split in two), nothing asserts on elapsed time.
"""

import base64
import os
import select
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

import bwd
import bwvault as bw
from bwd import describe, is_true, read_by_peer, rsa_key, unique_name, wait_for

EXIT_TIMEOUT = 20.0


# --------------------------------------------------------------------------
# Helpers


def keyed(server, prefix, key_index):
    """A connected client that registered and sent its public key (2102)."""
    c = server.client(key=rsa_key(key_index))
    bw.expect(c.register(unique_name(prefix)), bw.REGISTERED, "register")
    resp = bw.expect(c.send_pubkey(), bw.KEY_STORED, "public key")
    assert resp.client_id == c.client_id
    return c


def same_client(server, owner, key=None, aes_key=None):
    """A new connection speaking with owner's id and name (a stranger who
    knows them, or the owner itself on another connection)."""
    c = server.client(key=key)
    c.client_id = owner.client_id
    c.name = owner.name
    c.aes_key = aes_key
    return c


def unwraps(key, wrapped):
    """True when key's private half opens the RSA-OAEP wrapped AES key."""
    try:
        return len(bw.unwrap_key(key, wrapped)) == bw.AES_KEY_SIZE
    except (ValueError, TypeError):
        return False


def upload_verified(server, c, file_name, data, aes_key=None):
    """1028 -> 2103 with the right cksum and echoed fields, 1029 -> 2104, and
    the stored file is the plaintext."""
    res = c.send_file(file_name, data, aes_key=aes_key)
    bw.expect(res.response, bw.FILE_RECEIVED, "1028 of %s" % file_name)
    cid, csize, _, crc = bw.parse_file_received(res.response.payload)
    assert cid == c.client_id and csize == res.content_size
    assert crc == bw.cksum(data), "2103 carries cksum %d, the plaintext's is %d" % (
        crc, bw.cksum(data))
    bw.expect(c.crc_ok(file_name), bw.ACK, "1029 of %s" % file_name)
    path = server.client_dir(c.client_id) / file_name
    assert wait_for(path.exists, 5), "%s not stored" % path
    assert path.read_bytes() == data, "the stored file is not the plaintext"


def send_ciphertext(c, file_name, ct):
    c.send_raw(bw.pack_request_header(c.client_id, bw.SEND_FILE, bw.FILE_PREFIX_SIZE + len(ct))
               + bw.pack_file_prefix(len(ct), file_name) + ct)
    return c.recv_response()


def assert_no_trace(server, client_id, file_name):
    def clean():
        return (not (server.client_dir(client_id) / file_name).exists()
                and server.file_row(client_id, file_name) is None
                and server.incoming_files() == [])
    assert wait_for(clean, 5), "a refused upload left: stored=%r row=%r incoming=%r" % (
        server.stored_files(client_id), server.file_row(client_id, file_name),
        server.incoming_files())


def refused_upload(c, file_name, data, aes_key):
    """A 1028 the server must refuse: returns the reply, or raises with what
    happened instead. The server may close before it read the body, so a
    failed send is tolerated as long as the 2107 arrives."""
    try:
        res = c.send_file(file_name, data, aes_key=aes_key)
        return res.response
    except (BrokenPipeError, ConnectionResetError):
        return c.recv_response()


def padded(request):
    """A course-sample request: zero-padded to a multiple of 1024 bytes."""
    pad = -len(request) % 1024
    assert pad, "a request that fills whole units carries no padding to recognise"
    return request + bytes(pad)


def course_exchange(server, request, what, timeout=5.0):
    """One request per connection, padded, in one write; the reply must be
    one 1024-byte unit (zero-padded) followed by the server's close."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(padded(request))
        try:
            raw = bw.recv_until_eof(s, limit=1 << 16)
        except socket.timeout:
            raise AssertionError("%s: the server did not close the connection within %gs "
                                 "after a padded request" % (what, timeout))
    assert len(raw) == 1024, "%s: padded request got %d bytes, not one padded unit: %r" % (
        what, len(raw), raw[:64])
    version, code, size = bw.unpack_response_header(raw[:bw.RESP_HEADER_SIZE])
    end = bw.RESP_HEADER_SIZE + size
    assert end <= 1024 and not any(raw[end:]), "%s: padding is not zeros" % what
    return bw.Response(version, code, raw[bw.RESP_HEADER_SIZE:end])


def course_upload(server, key, name, file_name, data):
    """A course-sample client: 1025, 1026 and 1028, each on its own
    connection, padded; returns the client id once 2103 is in."""
    resp = course_exchange(server, bw.pack_request(bw.ZERO_ID, bw.REGISTER, bw.name_field(name)),
                           "padded 1025")
    cid = bw.expect(resp, bw.REGISTERED, "padded 1025").client_id
    resp = course_exchange(server, bw.pack_request(cid, bw.PUBLIC_KEY,
                                                   bw.name_field(name) + bw.spki_der(key)),
                           "padded 1026")
    wrapped = bw.expect(resp, bw.KEY_STORED, "padded 1026").payload[bw.ID_SIZE:]
    ct = bw.aes_encrypt(bw.unwrap_key(key, wrapped), data)
    resp = course_exchange(server, bw.pack_request(
        cid, bw.SEND_FILE, bw.pack_file_prefix(len(ct), file_name) + ct), "padded 1028")
    bw.expect(resp, bw.FILE_RECEIVED, "padded 1028")
    assert bw.parse_file_received(resp.payload)[3] == bw.cksum(data)
    return cid


def wait_shutting_down(server):
    """After SIGTERM: wait (bounded) until the log says the signal was taken,
    so that what follows happens during the grace, not before it."""
    wait_for(lambda: "shutting down" in server.log() or not server.alive(), 5)


def sigterm(server):
    server.close_dbs()
    server.proc.send_signal(signal.SIGTERM)
    wait_shutting_down(server)


def wait_exit(server, timeout=EXIT_TIMEOUT):
    """The exit that SIGTERM asked for; the fixture then leaves it alone."""
    try:
        rc = server.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.kill()
        raise AssertionError("bulwarkd did not exit within %gs of SIGTERM\n%s"
                             % (timeout, server.log_tail()))
    server.stopped = True
    return rc


def new_request_outcome(server, name):
    """A brand-new 1025 on a new connection: the reply, or a string saying
    how the server refused the connection."""
    try:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    except ConnectionRefusedError:
        return "connection refused"
    with s:
        s.settimeout(10)
        try:
            s.sendall(bw.pack_request(bw.ZERO_ID, bw.REGISTER, bw.name_field(name)))
            return bw.read_response(s)
        except socket.timeout:
            return None  # neither an answer nor a close: not a refusal
        except (ConnectionError, OSError) as e:
            return "connection closed (%s)" % e


def console_ask(server, *requests, timeout=10.0):
    """Hello to the operator console (start_server(console=True)), then each
    4-byte request; returns the raw reply texts (bytes), in order."""
    assert server.console_port, "bulwarkd was started without its console"
    with socket.create_connection(("127.0.0.1", server.console_port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(b"Hi")
        greeting = bw.recv_exact(s, 48)
        assert len(greeting) == 48, "console greeting: %r" % greeting
        replies = []
        for req in requests:
            s.sendall(req.encode("ascii"))
            head = bw.recv_exact(s, 4)
            assert len(head) == 4 and head.isdigit(), "console reply length %r" % head
            body = bw.recv_exact(s, int(head))
            assert len(body) == int(head), "console reply cut short"
            replies.append(body)
        return replies


def fils_sizes(server):
    """{(owner, file): size} from the console's FILS."""
    text = console_ask(server, "FILS")[0].decode("utf-8")
    out = {}
    for line in text.splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) == 4:
            out[(parts[0], parts[1])] = int(parts[2])
    return out


# --------------------------------------------------------------------------
# 1. Key takeover


@pytest.mark.parametrize("use", ["upload", "reconnect"])
def test_a_used_public_key_cannot_be_replaced_by_a_strangers_1026(server, use):
    owner_key, stranger_key = rsa_key(0), rsa_key(1)
    with keyed(server, "owner", 0) as owner:
        if use == "upload":
            res = owner.send_file("first.bin", b"mine " * 100)
            bw.expect(res.response, bw.FILE_RECEIVED, "owner's upload")
            assert res.server_crc == res.crc
        else:
            resp = bw.expect(owner.reconnect(), bw.RECONNECTED, "owner's 1027")
            assert unwraps(owner_key, resp.payload[bw.ID_SIZE:])

    with same_client(server, owner) as stranger:
        resp = stranger.send_pubkey(key=stranger_key)
        assert resp.code == bw.ERROR and resp.payload == b"", (
            "a stranger's 1026 with the owner's id and name, after the key was used, "
            "must get 2107; got %r" % resp)

    row = server.client_row(owner.client_id)
    assert row is not None and bytes(row["PublicKey"]) == bw.spki_der(owner_key), (
        "the public key on record is no longer the owner's")

    with same_client(server, owner, key=owner_key) as again:
        resp = again.request(bw.RECONNECT, bw.name_field(owner.name))
        bw.expect(resp, bw.RECONNECTED, "the owner's 1027 after the takeover attempt")
        wrapped = resp.payload[bw.ID_SIZE:]
        assert unwraps(owner_key, wrapped), "the owner's private key cannot open its 2105"
        assert not unwraps(stranger_key, wrapped), "the stranger's key opens the owner's 2105"
        upload_verified(server, again, "after.bin", os.urandom(5000),
                        aes_key=bw.unwrap_key(owner_key, wrapped))


def test_a_1026_after_a_delivered_key_takes_only_the_same_key(server):
    """Once a 2102 carried an AES key wrapped for the key on record, that
    key is the client's: a 1026 with another key (a stranger who read the
    id in a 2101, or a client that lost its 2102 and made a fresh pair) is
    refused, and the same key sent again (the honest retry) is served."""
    first_key, other_key = rsa_key(2), rsa_key(3)
    with server.client(key=first_key) as c:
        bw.expect(c.register(unique_name("retry")), bw.REGISTERED)
        c.send_request(bw.PUBLIC_KEY, bw.name_field(c.name) + bw.spki_der(first_key))
        bw.expect(c.recv_response(), bw.KEY_STORED, "first 1026")  # "lost" on the way
    with same_client(server, c, key=other_key) as other:
        resp = other.request(bw.PUBLIC_KEY, bw.name_field(c.name) + bw.spki_der(other_key))
        assert resp.code == bw.ERROR, (
            "a 1026 with another key after a key was delivered must be refused: %r" % resp)
    with same_client(server, c, key=first_key) as retry:
        resp = bw.expect(retry.request(bw.PUBLIC_KEY,
                                       bw.name_field(c.name) + bw.spki_der(first_key)),
                         bw.KEY_STORED, "the same key again")
        wrapped = resp.payload[bw.ID_SIZE:]
        assert unwraps(first_key, wrapped) and not unwraps(other_key, wrapped)
        upload_verified(server, retry, "retry.bin", os.urandom(3000),
                        aes_key=bw.unwrap_key(first_key, wrapped))
    row = server.client_row(c.client_id)
    assert bytes(row["PublicKey"]) == bw.spki_der(first_key)


# --------------------------------------------------------------------------
# 2. Padding oracle


def test_bad_padding_gets_2107_and_the_connection_closed(server):
    with keyed(server, "oracle", 4) as c:
        resp = send_ciphertext(c, "oracle.bin", bw.bad_padding_ciphertext(c.aes_key))
        assert resp.code == bw.ERROR and resp.payload == b"", "bad padding: got %r" % resp
        assert c.is_closed_by_peer(timeout=5), (
            "the connection stayed open after a padding failure: a padding oracle")
        assert_no_trace(server, c.client_id, "oracle.bin")
    server.assert_serves()


def test_three_decryption_failures_revoke_the_key(server):
    with keyed(server, "revoke", 5) as owner:
        old_key = owner.aes_key
    for i in range(3):  # a stranger probing, one connection each
        with same_client(server, owner) as s:
            resp = send_ciphertext(s, "probe%d.bin" % i, bw.bad_padding_ciphertext(old_key))
            assert resp.code == bw.ERROR, "probe %d: got %r" % (i, resp)
            assert s.is_closed_by_peer(timeout=5), "probe %d: connection left open" % i

    data = os.urandom(4000)
    with same_client(server, owner) as c:
        resp = refused_upload(c, "late.bin", data, old_key)
        assert resp.code == bw.ERROR and resp.payload == b"", (
            "a correct 1028 with a key revoked after 3 decryption failures must get "
            "2107; got %r" % resp)
    assert_no_trace(server, owner.client_id, "late.bin")

    with same_client(server, owner, key=rsa_key(5)) as c:
        bw.expect(c.reconnect(), bw.RECONNECTED, "1027 after the revocation")
        assert c.aes_key != old_key
        upload_verified(server, c, "fresh.bin", data)


def test_a_stranger_guessing_blind_cannot_replace_a_verified_file(server, client_dir):
    """A stranger who read a client's id and name (both travel in clear)
    gets a fresh key with a 1027 (wrapped for the owner: it cannot open
    it), sends 16 random bytes as a 1028 of the owner's verified file, and
    tries again until the padding happens to be right (once in 256), then
    confirms the garbage with a 1029. That replaced the verified file.
    After an upload of a client failed to decrypt, a 1028 that would
    replace one of its verified files is refused for 10 minutes, before it
    is kept anywhere: the lucky guess gets 2107, nothing waits to be
    confirmed later, and the file is the owner's. The owner's own
    replacement is refused meanwhile, and `bulwark send` says so; its new
    files still go in."""
    data = b"precious verified content\n" * 100
    with keyed(server, "blind", 7) as owner:
        upload_verified(server, owner, "doc.txt", data)
    path = server.client_dir(owner.client_id) / "doc.txt"
    received = 0
    failed = False  # a try has failed to decrypt: the 10 minutes run
    for _ in range(3000):  # P(no lucky padding in 3000) < 1e-5
        with same_client(server, owner) as s:
            r = s.request(bw.RECONNECT, bw.name_field(owner.name))
            assert r.code == bw.RECONNECTED, r
            try:
                r = send_ciphertext(s, "doc.txt", os.urandom(16))
            except (ConnectionError, bw.ProtocolError, OSError):
                failed = True
                continue
            if r.code == bw.FILE_RECEIVED and not failed:
                # the first try of all was the lucky one (1 in 256): no
                # failure has been seen, so nothing tells it from the
                # owner's own replacement (docs/vault-protocol.md: one
                # guess each 10 minutes is what the server can refuse
                # no better). Given up here, not confirmed; the next
                # tries are the test.
                s.crc_bad("doc.txt")
                continue
            if r.code == bw.FILE_RECEIVED:
                received += 1
                bw.expect(s.crc_ok("doc.txt"), bw.ACK, "the stranger's 1029")
            elif r.code == bw.ERROR:
                failed = True
        if "someone without its key may be guessing" in server.log():
            break
    assert "someone without its key may be guessing" in server.log(), \
        "no guess decrypted in 3000 tries"
    assert received == 0, "%d blind guesses were kept (2103)" % received
    assert path.read_bytes() == data, "the verified file was replaced"
    row = server.file_row(owner.client_id, "doc.txt")
    assert row is not None and is_true(row[3]), row
    # the owner's replacement is refused meanwhile, and its client says so
    d = client_dir()
    new = d.write_file("doc.txt", b"the owner's new version\n")
    d.write_transfer(server.port, owner.name, str(new))
    b64 = base64.b64encode(rsa_key(7).export_key("DER", pkcs=8)).decode()
    d.me_path.write_text("%s\n%s\n%s\n" % (owner.name, owner.client_id.hex(), b64))
    before = server.log().count("may be guessing")
    r = d.run()
    assert r.returncode != 0, describe(r)
    assert server.log().count("may be guessing") > before, server.log_tail()
    assert b"verified by the server" not in r.stdout, describe(r)
    assert path.read_bytes() == data
    # its new files still go in
    with same_client(server, owner, key=rsa_key(7)) as c:
        bw.expect(c.reconnect(), bw.RECONNECTED, "the owner's 1027")
        upload_verified(server, c, "fresh.bin", os.urandom(3000))
    assert path.read_bytes() == data
    server.assert_serves()


@pytest.mark.sqlite_only("a slowed fdatasync of defensive.db's WAL holds the path's lock")
def test_strangers_verdicts_do_not_crowd_out_the_owners_upload(start_server, shim, tmp_path):
    """Strangers who know a client's id send 1029s for its verified file:
    each takes the file's lock in turn and waits for a sync. At most 64
    steps waited for one file's lock, commits included: the owner's upload,
    its whole body read, found the queue full and got 2107 ("not stored").
    Only verdicts are turned away past 64; the commit waits its turn."""
    arm = tmp_path / "arm"
    srv = start_server(env=bwd.fault_env(
        shim, fault="fdatasync:1:sleep=4000:defensive.db-wal", arm=arm))
    owner = keyed(srv, "crowded", 8)
    upload_verified(srv, owner, "doc.txt", b"version one\n")
    verdict = bw.pack_request_header(owner.client_id, bw.CRC_OK, 255) + bw.name_field("doc.txt")
    strangers = []
    try:
        arm.write_text("go")
        first = same_client(srv, owner)
        strangers.append(first)
        first.send_raw(verdict)  # holds the file's lock while the sync sleeps
        assert wait_for(lambda: "fdatasync #1 sleeps" in srv.log(), 5), srv.log_tail()
        for _ in range(70):
            s = same_client(srv, owner)
            strangers.append(s)
            s.send_raw(verdict)
        # the queue is full: the ones past it were answered 2107 at once
        assert wait_for(lambda: sum(1 for s in strangers if has_reply(s)) >= 6,
                        3), "the strangers' 1029s did not fill the file's queue"
        data = b"version two\n" * 50
        res = owner.send_file("doc.txt", data)
        bw.expect(res.response, bw.FILE_RECEIVED, "the owner's 1028 behind 64 verdicts")
        bw.expect(owner.crc_ok("doc.txt"), bw.ACK, "the owner's 1029")
        path = srv.client_dir(owner.client_id) / "doc.txt"
        assert wait_for(lambda: path.read_bytes() == data, 5)
    finally:
        for s in strangers:
            s.close()
        owner.close()
    srv.assert_serves()


def has_reply(c):
    """Whether c has a reply waiting (without reading it)."""
    r, _, _ = select.select([c.sock], [], [], 0)
    return bool(r)


@pytest.mark.sqlite_only("a slowed fdatasync of defensive.db's WAL")
def test_the_2102_waits_until_the_public_key_is_on_disk(start_server, shim, tmp_path):
    """The 2102 delivers a key wrapped for the public key on record: from
    then on that key is the client's for good (no other may replace it),
    and the client writes me.info. It went out before the key's row was
    synced: after a power cut the name had no key, the client's 1027 got
    2106, its registration again 2101, for ever. The 2102 now waits for
    the sync (slowed here to 2 s by the shim)."""
    arm = tmp_path / "arm"
    srv = start_server(env=bwd.fault_env(
        shim, fault="fdatasync:1:sleep=2000:defensive.db-wal", arm=arm))
    with srv.client(key=rsa_key(9)) as c:
        bw.expect(c.register(unique_name("durable")), bw.REGISTERED, "register")
        arm.write_text("go")
        resp = bw.expect(c.send_pubkey(), bw.KEY_STORED, "public key")
        assert resp.client_id == c.client_id
        log = srv.log()
        assert "fdatasync #1 woke" in log, (
            "the 2102 came before the key's row was synced:\n%s" % srv.log_tail())
    srv.assert_serves()


def test_two_decryption_failures_do_not_revoke_the_key(server):
    """The count is 3: fewer failures leave the owner's key alone."""
    with keyed(server, "tworevoke", 6) as owner:
        key = owner.aes_key
    for i in range(2):
        with same_client(server, owner) as s:
            resp = send_ciphertext(s, "probe%d.bin" % i, bw.bad_padding_ciphertext(key))
            assert resp.code == bw.ERROR, "probe %d: got %r" % (i, resp)
    with same_client(server, owner, aes_key=key) as c:
        upload_verified(server, c, "still.bin", os.urandom(2000))


def test_an_expired_key_is_refused_and_1027_gives_a_working_one(start_server):
    # 3 s: the fresh key of the 1027 below must still be young when its
    # upload arrives, on a loaded machine too
    server = start_server("--key-lifetime", "3")
    data = os.urandom(1500)
    with keyed(server, "expire", 7) as c:
        old_key = c.aes_key
        time.sleep(4.5)  # past --key-lifetime 3
        resp = refused_upload(c, "old.bin", data, old_key)
        assert resp.code == bw.ERROR, (
            "1028 with a key older than --key-lifetime, on the connection that got it: "
            "%r" % resp)
    with same_client(server, c) as other:
        resp = refused_upload(other, "old.bin", data, old_key)
        assert resp.code == bw.ERROR, (
            "1028 with a key older than --key-lifetime, on another connection: %r" % resp)
    assert_no_trace(server, c.client_id, "old.bin")
    with same_client(server, c, key=rsa_key(7)) as again:
        bw.expect(again.reconnect(), bw.RECONNECTED, "1027 after expiry")
        upload_verified(server, again, "new.bin", data)


# --------------------------------------------------------------------------
# 3. Key rotation denial


def test_a_strangers_1027s_do_not_break_the_key_of_a_clients_own_connection(server):
    owner_key, stranger_key = rsa_key(8), rsa_key(9)
    with keyed(server, "rotate", 8) as c:
        resp = bw.expect(c.reconnect(), bw.RECONNECTED, "honest 1027")
        k = c.aes_key
        assert unwraps(owner_key, resp.payload[bw.ID_SIZE:])
        for i in range(20):
            with same_client(server, c) as s:
                resp = s.request(bw.RECONNECT, bw.name_field(c.name))
                assert resp.code == bw.RECONNECTED, "stranger's 1027 #%d: %r" % (i, resp)
                assert not unwraps(stranger_key, resp.payload[bw.ID_SIZE:])
        data = os.urandom(7000)
        res = c.send_file("kept.bin", data, aes_key=k)
        assert res.response.code == bw.FILE_RECEIVED, (
            "the honest client's 1028 with the key its own connection got, after a "
            "stranger's 20 1027s: %r" % res.response)
        assert res.server_crc == bw.cksum(data)
        bw.expect(c.crc_ok("kept.bin"), bw.ACK)
        path = server.client_dir(c.client_id) / "kept.bin"
        assert wait_for(path.exists, 5) and path.read_bytes() == data
        row = server.file_row(c.client_id, "kept.bin")
        assert row is not None and is_true(row["Verified"])


# --------------------------------------------------------------------------
# 4. Padding detection


def test_a_pipelined_1025_is_not_mistaken_for_padding(server):
    a, b, third = unique_name("pipeA"), unique_name("pipeB"), unique_name("pipeC")
    req_a = bw.pack_request(bw.ZERO_ID, bw.REGISTER, bw.name_field(a))
    req_b = bw.pack_request(bw.ZERO_ID, bw.REGISTER, bw.name_field(b))
    assert not any(req_b[:10]), "the second request must start with zeros"
    with server.client() as c:
        c.send_raw(req_a + req_b[:10])
        wait_for(lambda: read_by_peer(c.sock), 5)  # bulwarkd has read the zeros alone
        c.send_raw(req_b[10:])
        ids = []
        for name in (a, b):
            raw = c.recv_exact(bw.RESP_HEADER_SIZE + bw.ID_SIZE)
            assert len(raw) == bw.RESP_HEADER_SIZE + bw.ID_SIZE, (
                "reply to %s cut short (connection closed?): %r" % (name, raw))
            version, code, size = bw.unpack_response_header(raw[:bw.RESP_HEADER_SIZE])
            assert (version, code, size) == (bw.VERSION, bw.REGISTERED, bw.ID_SIZE), (
                "reply to the 1025 of %s is %r (zeros: a padded reply)" % (name, raw[:16]))
            ids.append(raw[bw.RESP_HEADER_SIZE:])
        resp = c.register(third)
        assert resp.code == bw.REGISTERED, "a third request on the connection: %r" % resp
    assert len({bytes(i) for i in ids + [resp.client_id]}) == 3
    for name, cid in zip((a, b), ids):
        row = server.client_row_by_name(name)
        assert row is not None and bytes(row["ID"]) == cid


def test_a_padded_course_sample_request_still_gets_a_padded_reply_and_a_close(server):
    name = unique_name("course")
    resp = course_exchange(server, bw.pack_request(bw.ZERO_ID, bw.REGISTER, bw.name_field(name)),
                           "padded 1025")
    bw.expect(resp, bw.REGISTERED, "padded 1025")
    assert bytes(server.client_row_by_name(name)["ID"]) == resp.client_id


def test_a_course_sample_session_gets_padded_replies_to_every_request(server):
    """Regression check for the whole course-sample flow, 1028 included."""
    data = os.urandom(3000)
    cid = course_upload(server, rsa_key(16), unique_name("coursefull"), "c.bin", data)
    resp = course_exchange(server, bw.pack_request(cid, bw.CRC_OK, bw.name_field("c.bin")),
                           "padded 1029")
    bw.expect(resp, bw.ACK, "padded 1029")
    assert (server.client_dir(cid) / "c.bin").read_bytes() == data
    row = server.file_row(cid, "c.bin")
    assert row is not None and is_true(row["Verified"])


# --------------------------------------------------------------------------
# 5. SIGTERM grace


def test_sigterm_lets_a_session_in_flight_send_its_1029(start_server):
    server = start_server("--shutdown-grace", "10")
    data = os.urandom(20000)
    with keyed(server, "grace", 10) as c:
        res = c.send_file("inflight.bin", data)
        bw.expect(res.response, bw.FILE_RECEIVED)
        assert res.server_crc == res.crc
        sigterm(server)
        resp = c.crc_ok("inflight.bin")
        assert resp.code == bw.ACK, "1029 on the same connection after SIGTERM: %r" % resp
    rc = wait_exit(server)
    assert rc == 0, "exit code %r after SIGTERM\n%s" % (rc, server.log_tail())
    row = server.file_row(c.client_id, "inflight.bin")
    assert row is not None and is_true(row["Verified"]), "row after shutdown: %r" % (
        dict(row) if row else None)
    assert (server.client_dir(c.client_id) / "inflight.bin").read_bytes() == data


def test_sigterm_lets_a_course_client_send_its_1029_on_a_new_connection(start_server):
    server = start_server("--shutdown-grace", "10")
    cid = course_upload(server, rsa_key(11), unique_name("coursegrace"), "course.bin",
                        os.urandom(3000))
    sigterm(server)
    resp = course_exchange(server, bw.pack_request(cid, bw.CRC_OK, bw.name_field("course.bin")),
                           "1029 after SIGTERM")
    assert resp.code == bw.ACK, "padded 1029 on a new connection after SIGTERM: %r" % resp
    rc = wait_exit(server)
    assert rc == 0, "exit code %r after SIGTERM\n%s" % (rc, server.log_tail())
    row = server.file_row(cid, "course.bin")
    assert row is not None and is_true(row["Verified"]), "row after shutdown: %r" % (
        dict(row) if row else None)


def test_a_new_request_during_the_grace_is_refused(start_server):
    server = start_server("--shutdown-grace", "10")
    with keyed(server, "graceheld", 12) as c:
        # an upload that owes its 1029 keeps the server in its grace
        res = c.send_file("held.bin", os.urandom(1000))
        bw.expect(res.response, bw.FILE_RECEIVED)
        sigterm(server)
        late = unique_name("latecomer")
        outcome = new_request_outcome(server, late)
        assert outcome is not None, "a new connection during the grace got neither a reply " \
                                    "nor a close within 10 s"
        assert isinstance(outcome, str) or outcome.code == bw.ERROR, (
            "a brand-new 1025 during the shutdown grace was served: %r" % outcome)
        bw.expect(c.crc_ok("held.bin"), bw.ACK, "the session in flight")
    assert wait_exit(server) == 0
    assert server.client_row_by_name(late) is None, "the latecomer was registered"


# --------------------------------------------------------------------------
# 6. Concurrent uploads of one name


def _race_upload(c, file_name, data, barrier, results, idx):
    try:
        ct = bw.aes_encrypt(c.aes_key, data)
        c.send_raw(bw.pack_request_header(c.client_id, bw.SEND_FILE,
                                          bw.FILE_PREFIX_SIZE + len(ct))
                   + bw.pack_file_prefix(len(ct), file_name))
        body, tail = ct[:-4096], ct[-4096:]
        for off in range(0, len(body), 64 * 1024):
            c.send_raw(body[off:off + 64 * 1024])
        try:  # both bodies all but complete: finish together, so the commits overlap
            barrier.wait(timeout=10)
        except threading.BrokenBarrierError:
            pass  # the server serialises the bodies: no overlap, still a valid run
        c.send_raw(tail)
        results[idx] = c.recv_response()
    except Exception as e:  # reported by the test
        results[idx] = e


def test_concurrent_uploads_of_one_name_leave_one_whole_file_everyone_agrees_on(start_server):
    server = start_server(console=True)
    with keyed(server, "racer", 13) as owner:
        key = owner.aes_key
    owner_name = owner.name
    hexid = owner.client_id.hex()
    for rnd, (size_a, size_b) in enumerate([(700_001, 1_300_007), (1_300_007, 700_001),
                                            (2_000_003, 999_999)]):
        fname = "race%d.bin" % rnd
        a, b = os.urandom(size_a), os.urandom(size_b)
        conns = [same_client(server, owner, aes_key=key) for _ in range(2)]
        barrier = threading.Barrier(2)
        results = [None, None]
        threads = [threading.Thread(target=_race_upload, args=(conns[i], fname, d, barrier,
                                                               results, i))
                   for i, d in enumerate((a, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for c in conns:
            c.close()
        assert not any(t.is_alive() for t in threads), "round %d: an upload hung" % rnd
        for r in results:
            if isinstance(r, Exception):
                raise AssertionError("round %d: upload failed: %r" % (rnd, r))
        codes = [r.code for r in results]
        assert set(codes) <= {bw.FILE_RECEIVED, bw.ERROR} and bw.FILE_RECEIVED in codes, (
            "round %d: replies %r" % (rnd, results))
        for r, d in zip(results, (a, b)):
            if r.code == bw.FILE_RECEIVED:
                assert bw.parse_file_received(r.payload)[3] == bw.cksum(d)

        path = server.client_dir(owner.client_id) / fname
        assert wait_for(lambda: server.incoming_files() == [], 5), server.incoming_files()
        on_disk = path.read_bytes()
        winners = [d for d, r in zip((a, b), results) if r.code == bw.FILE_RECEIVED]
        assert any(on_disk == d for d in winners), (
            "round %d: the stored file (%d bytes) is neither upload, whole (%d, %d bytes)"
            % (rnd, len(on_disk), size_a, size_b))
        sizes = fils_sizes(server)
        assert sizes.get((owner_name, fname)) == len(on_disk), (
            "round %d: the registry says %r bytes, the file on disk has %d"
            % (rnd, sizes.get((owner_name, fname)), len(on_disk)))
        row = server.file_row(owner.client_id, fname)
        assert row is not None, "round %d: no files row" % rnd
        assert row["PathName"] == "files/%s/%s" % (hexid, fname), dict(row)
        assert server.blobs(row["PathName"]).read_bytes() == on_disk
        assert not is_true(row["Verified"])
    server.assert_serves()


# --------------------------------------------------------------------------
# 7. Names shown raw


RLO = b"\xe2\x80\xae"  # U+202E RIGHT-TO-LEFT OVERRIDE
CSI = b"\xc2\x9b"  # U+009B, the C1 control sequence introducer


def test_bidi_and_c1_controls_in_names_are_escaped_in_the_log_and_the_console(start_server):
    server = start_server(console=True)
    tags = [unique_name("rlo"), unique_name("csi")]
    names = [b"evil-" + RLO + b"gpj.exe-" + tags[0].encode(),
             b"evil-" + CSI + b"2J-" + tags[1].encode()]
    for i, name in enumerate(names):
        key = rsa_key(14 + i)
        with server.client(key=key) as c:
            bw.expect(c.register(name), bw.REGISTERED, "register %r" % name)
            bw.expect(c.send_pubkey(), bw.KEY_STORED, "1026 of %r" % name)
            res = c.send_file("f.bin", b"x" * 100)
            bw.expect(res.response, bw.FILE_RECEIVED)
        with same_client(server, c, key=key) as again:  # 1027 logs the name too
            bw.expect(again.reconnect(), bw.RECONNECTED)
        with server.client() as stranger:  # and a refused one, as sent
            resp = stranger.request(bw.RECONNECT, bw.name_field(name), client_id=bytes(16))
            assert resp.code == bw.RECONNECT_REFUSED
    users = console_ask(server, "USRS")[0]
    with open(server.log_path, "rb") as f:
        log = f.read()
    for tag in tags:
        assert tag.encode() in log, "%s never reached the log: nothing was tested" % tag
        assert tag.encode() in users, "%s is not in USRS: %r" % (tag, users)
    for seq, what in ((RLO, "U+202E"), (CSI, "U+009B")):
        lines = [ln for ln in log.splitlines() if seq in ln]
        assert not lines, "the log holds a raw %s: %r" % (what, lines[:3])
        assert seq not in users, "USRS holds a raw %s: %r" % (what, users)


@pytest.mark.parametrize("case", ["unknown id", "no base name", "malformed name"])
def test_a_padded_1030_refused_at_once_is_closed_at_once(start_server, case):
    """A padded (one request per connection) 1030 gets no reply, and its
    connection is closed once it is handled. One refused before its file
    was looked for (an id no one has, a name with nothing left once
    sanitised, a name field without its NUL) was left open until the
    request deadline (60 s here): the client that waits for the close
    waited that long."""
    srv = start_server("--request-timeout", "60", "--timeout", "60")
    cid = os.urandom(16)
    name = bw.name_field("x.bin")
    if case != "unknown id":
        with srv.client(key=rsa_key(10)) as c:
            bw.expect(c.register(unique_name("pad1030")), bw.REGISTERED, "register")
            cid = c.client_id
        name = bw.name_field("/") if case == "no base name" else b"y" * 255
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(padded(bw.pack_request(cid, bw.CRC_BAD, name)))
        s.settimeout(10)
        try:
            raw = bw.recv_until_eof(s, limit=1 << 16)
        except socket.timeout:
            raise AssertionError("a padded 1030 (%s) was not closed within 10 s" % case)
    assert raw == b"", "a 1030 got a reply: %r" % raw[:64]
    srv.assert_serves()
