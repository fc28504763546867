"""The messenger on the real bulwarkd, driven by an independent client
written from spec/messages.md (bwmsg.py): registration, lists, keys, the
key exchange and text both ways, files, pulls; the error replies; padded
one-request-per-connection clients beside keep-alive ones; one identity
shared with the vault; restarts, resets and kill -9 with messages queued."""

import os
import signal
import socket
import struct
import threading

import pytest

import bwd
import bwmsg
import bwvault as bw
import ports
from bwd import rsa_key, unique_name

H = "127.0.0.1"


def user(srv, i=None, padded=False, name=None):
    c = bwmsg.MsgClient(H, srv.port, padded=padded)
    c.register(name or unique_name("m"), key=rsa_key(i))
    return c


def ids_of(records):
    return [r[1] for r in records]


@pytest.mark.parametrize("padded", [False, True], ids=["keepalive", "padded"])
def test_the_whole_conversation_of_the_spec(server, padded):
    a = user(server, 0, padded)
    b = user(server, 1, padded)
    # 120: lists show everyone but the asker
    assert (b.client_id, b.name) in a.list()
    assert all(i != a.client_id for i, _ in a.list())
    # 130: public keys as registered
    assert a.public_key(b.client_id) == bw.spki_der(b.key)
    # 151 / 152: A asks B for a key; B answers with a key wrapped for A
    req = a.send_key_request(b.client_id)
    got = b.pull()
    assert [(r[0], r[1], r[2], r[3]) for r in got] == [(a.client_id, req, 1, b"")]
    k = os.urandom(16)
    kid = b.send_sym_key(a.client_id, k)
    got = a.pull()
    assert [(r[0], r[1], r[2]) for r in got] == [(b.client_id, kid, 2)]
    assert bw.unwrap_key(a.key, got[0][3]) == k
    # 150: text both ways with the shared key
    t1 = a.send_text(b.client_id, k, "שלום, bob".encode())
    t2 = b.send_text(a.client_id, k, b"hi alice")
    assert t2 > t1 > kid > req, "ids grow and are never reused"
    (r,) = b.pull()
    assert r[1] == t1 and bw.aes_decrypt(k, r[3]) == "שלום, bob".encode()
    (r,) = a.pull()
    assert r[1] == t2 and bw.aes_decrypt(k, r[3]) == b"hi alice"
    # delivered once: nothing left after the next request showed receipt
    a.list()
    b.list()
    assert a.pull() == [] and b.pull() == []


def test_messages_come_in_arrival_order_with_the_ids_of_their_2103(server):
    a, b = user(server, 0), user(server, 1)
    c = user(server, 2)
    sent = []
    for i in range(30):
        s = a if i % 3 else c
        sent.append((s.client_id, s.send(b.client_id, 3, bytes([i]) * 16)))
    got = b.pull()
    assert [(r[0], r[1]) for r in got] == sent
    assert [r[3][0] for r in got] == list(range(30))


def test_errors_are_9000_and_the_connection_serves_on(server):
    a, b = user(server, 0), user(server, 1)
    stranger = bwmsg.MsgClient(H, server.port)
    stranger.client_id = os.urandom(16)
    for code, payload in ((601, b""), (602, b.client_id), (604, b""),
                          (603, bwmsg.SEND_PREFIX.pack(b.client_id, 3, 16) + bytes(16))):
        assert stranger.request(code, payload) == (bwmsg.ERROR, b""), "unknown id, %d" % code
    # unknown target and recipient, an unknown type, a taken name, a bad key
    assert a.request(602, os.urandom(16)) == (bwmsg.ERROR, b"")
    assert a.request(603, bwmsg.SEND_PREFIX.pack(os.urandom(16), 3, 16) + bytes(16)) \
        == (bwmsg.ERROR, b"")
    for typ in (0, 5, 255):
        assert a.request(603, bwmsg.SEND_PREFIX.pack(b.client_id, typ, 4) + b"abcd") \
            == (bwmsg.ERROR, b""), "type %d" % typ
    assert a.request(600, bw.name_field(b.name) + bw.spki_der(rsa_key(5))) == (bwmsg.ERROR, b"")
    bad_keys = [bytes(160), os.urandom(160), bw.spki_der(rsa_key(6))[:-1] + b"\x00"]
    for k in bad_keys:
        assert a.request(600, bw.name_field(unique_name("k")) + k) == (bwmsg.ERROR, b"")
    # and the same connection still works
    assert a.send(b.client_id, 3, bytes(32)) > 0
    assert len(b.pull()) == 1


def test_the_version_byte_is_never_a_reason_to_refuse(server):
    a, b = user(server, 0), user(server, 1)
    for v in (0, 1, 2, 3, 200, 255):
        code, body = a.request(603, bwmsg.SEND_PREFIX.pack(b.client_id, 1, 0), version=v)
        assert code == bwmsg.STORED, "version %d" % v
    assert len(b.pull()) == 6


def test_type_1_with_content_and_empty_texts_are_stored_as_sent(server):
    a, b = user(server, 0), user(server, 1)
    a.send(b.client_id, 1, b"")
    a.send(b.client_id, 1, b"not empty")
    a.send(b.client_id, 3, b"")
    assert [(r[2], r[3]) for r in b.pull()] == [(1, b""), (1, b"not empty"), (3, b"")]


def test_one_identity_for_messenger_and_vault(server):
    m = user(server, 0)
    # a messenger user reconnects to the vault with its id and name and
    # gets an AES key wrapped with the key it registered
    v = bw.VaultClient(H, server.port, key=m.key).connect()
    v.client_id, v.name = m.client_id, m.name
    resp = v.request(bw.RECONNECT, bw.name_field(m.name))
    assert resp.code == bw.RECONNECTED
    v.aes_key = bw.unwrap_key(m.key, resp.payload[16:])
    res = v.send_file("from-messenger.bin", b"x" * 5000)
    assert res.server_crc == bw.cksum(b"x" * 5000)
    v.close()
    # a vault user appears in 601 lists and can be written to
    vu = server.client(key=rsa_key(3))
    vid = bw.expect(vu.register(unique_name("vault-user")), bw.REGISTERED).payload
    assert any(i == vid for i, _ in m.list())
    mid = m.send(vid, 3, bytes(16))
    r = bwmsg.MsgClient(H, server.port)
    r.client_id = vid
    assert ids_of(r.pull()) == [mid]
    # the vault client has no public key on record until its 1026
    assert m.request(602, vid) == (bwmsg.ERROR, b"")
    vu.close()


def test_a_messenger_key_is_never_replaced_through_the_vault(server):
    m = user(server, 0)
    v = bw.VaultClient(H, server.port, key=rsa_key(9)).connect()
    v.client_id, v.name = m.client_id, m.name
    resp = v.request(bw.PUBLIC_KEY, bw.name_field(m.name) + bw.spki_der(rsa_key(9)))
    assert resp.code == bw.ERROR
    v.close()
    assert m.public_key(m.client_id) == bw.spki_der(m.key)


def test_large_contents_stream_through_files_beside_the_database(server):
    a, b = user(server, 0), user(server, 1)
    k = os.urandom(16)
    sizes = [65535, 65536, 65537, 3 * 1024 * 1024 + 5]
    blobs = [os.urandom(n) for n in sizes]
    ids = [a.send(b.client_id, 4, bw.aes_encrypt(k, x)) for x in blobs]
    spilled = [p for p in server.blobs("messages").iterdir() if p.is_file()]
    assert len(spilled) == 3, "contents over 64 KiB live in files"
    got = b.pull()
    assert ids_of(got) == ids
    assert [bw.aes_decrypt(k, r[3]) for r in got] == blobs
    b.list()  # evidence: the files go with the rows
    assert bwd.wait_for(lambda: not [p for p in server.blobs("messages").iterdir()
                                     if p.is_file()], 5)


@pytest.mark.long
@pytest.mark.plain_pass_only("100 MiB through ASan takes minutes; the same streaming runs under ASan in smaller messages")
def test_a_100_mib_file_message_in_bounded_memory(server):
    a, b = user(server, 0), user(server, 1)
    k = os.urandom(16)
    size = 100 * 1024 * 1024
    plain = os.urandom(size)
    ct = bw.aes_encrypt(k, plain)
    rss0 = server.rss_peak()
    mid = a.send(b.client_id, 4, ct)
    b.sock = None
    b.connect()
    b.sock.sendall(bwmsg.pack_request(b.client_id, 604))
    head = bw.recv_exact(b.sock, 7)
    _, code, total = bw.RESP_HEADER.unpack(head)
    assert code == bwmsg.WAITING and total == bwmsg.RECORD.size + len(ct)
    frm, got_id, typ, n = bwmsg.RECORD.unpack(bw.recv_exact(b.sock, bwmsg.RECORD.size))
    assert (frm, got_id, typ, n) == (a.client_id, mid, 4, len(ct))
    dec = bw.StreamDecryptor(k)
    left, out = n, []
    while left:
        chunk = b.sock.recv(min(left, 1 << 20))
        assert chunk
        left -= len(chunk)
        out.append(dec.update(chunk))
    out.append(dec.finish())
    assert b"".join(out) == plain
    assert server.rss_peak() - rss0 < 48 * 1024 * 1024, "the server held the message in RAM"


def test_restart_keeps_every_queued_message(start_server, tmp_path):
    srv = start_server(data_dir=tmp_path / "d")
    a, b = user(srv, 0), user(srv, 1)
    ids = [a.send(b.client_id, 3, bytes([i]) * 16) for i in range(5)]
    ids.append(a.send(b.client_id, 4, os.urandom(100000)))
    srv.stop()
    srv2 = start_server(data_dir=tmp_path / "d")
    b2 = bwmsg.MsgClient(H, srv2.port)
    b2.client_id = b.client_id
    assert ids_of(b2.pull()) == ids
    # new ids continue after the old ones
    a2 = bwmsg.MsgClient(H, srv2.port)
    a2.client_id = a.client_id
    assert a2.send(b.client_id, 1) > ids[-1]


def pull_and_reset(port, client_id, read_bytes):
    """Asks 604, reads read_bytes of the reply, then resets the connection."""
    s = socket.create_connection((H, port), timeout=10)
    s.sendall(bwmsg.pack_request(client_id, 604))
    got = b""
    while len(got) < read_bytes:
        chunk = s.recv(read_bytes - len(got))
        assert chunk
        got += chunk
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST: no evidence of delivery
    return got


def test_a_pull_cut_off_by_a_reset_loses_nothing(server):
    a, b = user(server, 0), user(server, 1)
    ids = [a.send(b.client_id, 3, os.urandom(4096)) for _ in range(40)]
    held = server.conns()
    pull_and_reset(server.port, b.client_id, 7 + 1000)
    bwd.wait_for(lambda: server.conns() == held, 5)  # bulwarkd has closed the reset one
    # a whole pull, read fully and then closed: every message exactly once
    got = b.pull()
    assert ids_of(got) == ids
    b.close()  # orderly close after the whole reply: evidence
    assert bwd.wait_for(lambda: b.pull() == [], 5)


def test_a_pull_read_whole_but_reset_is_delivered_again(server):
    a, b = user(server, 0), user(server, 1)
    ids = [a.send(b.client_id, 3, bytes(16)) for _ in range(3)]
    total = 7 + 3 * (bwmsg.RECORD.size + 16)
    held = server.conns()
    pull_and_reset(server.port, b.client_id, total)
    bwd.wait_for(lambda: server.conns() == held, 5)  # bulwarkd has closed the reset one
    assert ids_of(b.pull()) == ids, "a reset is no evidence: at least once"


def test_kill_9_before_evidence_keeps_the_messages(start_server, tmp_path):
    srv = start_server(data_dir=tmp_path / "d")
    a, b = user(srv, 0), user(srv, 1)
    ids = [a.send(b.client_id, 3, bytes(16)) for _ in range(10)]
    assert ids_of(b.pull()) == ids  # received, but no next request yet
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)
    srv.stopped = True
    srv2 = start_server(data_dir=tmp_path / "d")
    b2 = bwmsg.MsgClient(H, srv2.port)
    b2.client_id = b.client_id
    got = b2.pull()
    assert ids_of(got) == ids, "exactly once more, none lost, none doubled"
    b2.list()
    assert b2.pull() == []


def test_a_pull_never_exceeds_the_cap_and_the_rest_waits(start_server):
    srv = start_server("--pull-cap", "4096")
    a, b = user(srv, 0), user(srv, 1)
    ids = [a.send(b.client_id, 3, bytes(1000)) for _ in range(10)]
    big = a.send(b.client_id, 4, bytes(10000))
    seen = []
    for _ in range(10):
        code, body = b.request(604)
        assert code == bwmsg.WAITING
        recs = bwmsg.parse_records(body)
        if not recs:
            break
        assert len(body) <= 4096 or len(recs) == 1, "over the cap with %d records" % len(recs)
        seen += ids_of(recs)
    assert seen == ids + [big]


def test_queue_limits_refuse_with_9000_and_a_log_line(start_server):
    srv = start_server("--max-queued", "3", "--max-queued-bytes", "100000")
    a, b = user(srv, 0), user(srv, 1)
    for _ in range(3):
        a.send(b.client_id, 3, bytes(16))
    assert a.request(603, bwmsg.SEND_PREFIX.pack(b.client_id, 3, 16) + bytes(16)) \
        == (bwmsg.ERROR, b"")
    assert "queue of" in srv.log() and "is full" in srv.log()
    b.pull()
    b.list()
    assert a.send(b.client_id, 3, bytes(16)) > 0, "room again once delivered"
    c = user(srv, 2)
    assert c.request(603, bwmsg.SEND_PREFIX.pack(b.client_id, 4, 200000) + bytes(200000)) \
        == (bwmsg.ERROR, b""), "over the recipient's bytes"
    assert c.send(b.client_id, 3, bytes(16)) > 0


def test_two_connections_of_one_client_pull_at_once_and_only_the_latest_deletes(server):
    a, b = user(server, 0), user(server, 1)
    ids = [a.send(b.client_id, 3, bytes(16)) for _ in range(20)]
    b2 = bwmsg.MsgClient(H, server.port)
    b2.client_id = b.client_id
    first = b.pull()
    # the second is answered at once, with the same messages: the first's
    # are not deleted before evidence, and it no longer can delete them
    second = b2.pull()
    assert ids_of(first) == ids
    assert ids_of(second) == ids
    more = a.send(b.client_id, 3, bytes(16))
    b.list()  # the first pull's evidence: stale, deletes nothing
    b3 = bwmsg.MsgClient(H, server.port)
    b3.client_id = b.client_id
    assert ids_of(b3.pull()) == ids + [more]
    b3.list()  # the latest pull's evidence
    assert b3.pull() == []


def test_stat_shows_the_messenger(start_server):
    srv = start_server(console=True)
    a, b = user(srv, 0), user(srv, 1)
    for _ in range(4):
        a.send(b.client_id, 3, bytes(32))
    s = socket.create_connection((H, srv.console_port), timeout=5)
    s.sendall(b"Hi")
    bw.recv_exact(s, 48)
    s.sendall(b"STAT")
    n = int(bw.recv_exact(s, 4))
    text = bw.recv_exact(s, n).decode()
    s.close()
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    assert fields["messages queued"] == "4"
    assert fields["message bytes queued"] == "128"
    s = socket.create_connection((H, srv.console_port), timeout=5)
    s.sendall(b"Hi")
    bw.recv_exact(s, 48)
    s.sendall(b"USRS")
    text = bw.recv_exact(s, int(bw.recv_exact(s, 4))).decode()
    s.close()
    assert text.splitlines()[0] == "name\tid\tlast seen\tqueued\tqueued bytes\tplain"
    queued = {row.split("\t")[0]: tuple(row.split("\t")[3:5]) for row in text.splitlines()[1:]}
    assert queued[b.name] == ("4", "128") and queued[a.name] == ("0", "0")


def test_a_hundred_clients_send_and_pull_at_once(server):
    hub = user(server, 0)
    n = 100
    peers = [bwmsg.MsgClient(H, server.port, padded=(i % 2 == 1)) for i in range(n)]
    for i, p in enumerate(peers):
        p.register(unique_name("crowd"), key=rsa_key(i))
    errors = []
    # each peer sends to the hub and to its neighbour, and pulls its own
    # queue between sends: deliveries and deletions race with new rows
    sent = {i: {} for i in range(n)}  # recipient -> {id: content}
    received = {i: [] for i in range(n)}
    lock = threading.Lock()

    def run(i, p):
        try:
            to = (i + 1) % n
            for k in range(5):
                assert p.send(hub.client_id, 3, bytes([i % 256]) * 16) > 0
                body = b"%d>%d:%d" % (i, to, k)
                mid = p.send(peers[to].client_id, 3, body)
                with lock:
                    sent[to][mid] = body
                received[i].extend(p.pull())
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    ts = [threading.Thread(target=run, args=(i, p)) for i, p in enumerate(peers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert errors == []
    for i, p in enumerate(peers):  # what is left, and the last evidence
        while True:
            if not p.padded:
                p.list()
            recs = p.pull()
            if not recs:
                break
            received[i].extend(recs)
    for i in range(n):
        got = {r[1]: r[3] for r in received[i]}
        assert len(got) == len(received[i]), "peer %d got a message twice" % i
        assert got == sent[i], "peer %d: sent %r, got %r" % (i, sent[i], got)
        assert all(r[0] == peers[(i - 1) % n].client_id for r in received[i])
    got = []
    while True:
        recs = hub.pull()
        if not recs:
            break
        got += recs
        hub.list()
    assert len(got) == 5 * n
    assert len(set(ids_of(got))) == 5 * n
    assert ids_of(got) == sorted(ids_of(got))


def test_port_info_and_myport_info_naming_two_ports_serve_both_on_both(start_server, tmp_path):
    p1, p2 = ports.reserve(), ports.reserve()
    data = tmp_path / "data"
    data.mkdir()
    (data / "port.info").write_text("%d\n" % p1)
    (data / "myport.info").write_text(" %d \n" % p2)
    # port=None: no --port, so that port.info and myport.info decide
    srv = start_server(data_dir=data, port=None)
    assert bwd.wait_for(lambda: srv.log().count("messenger listening on") == 2, 10), srv.log()
    a = bwmsg.MsgClient(H, p1)
    a.register(unique_name("p1"), key=rsa_key(0))
    b = bwmsg.MsgClient(H, p2)
    b.register(unique_name("p2"), key=rsa_key(1))
    mid = a.send(b.client_id, 3, bytes(16))
    assert ids_of(b.pull()) == [mid]
    # and the vault on the messenger's port
    v = bw.VaultClient(H, p2, key=rsa_key(2)).connect()
    assert v.register(unique_name("v")).code == bw.REGISTERED
    v.close()
    srv.stop()
