"""Hostile input at the messenger of the real bulwarkd: cut headers, sizes
that disagree, huge sizes, unknown codes, names without NUL, floods, idle
hordes, and a failing fsync. Every case ends with the server serving a
real session, and with nothing half-stored."""

import os
import re
import socket
import time

import pytest

import bwd
import bwmsg
import bwvault as bw
from bwd import rsa_key, unique_name

H = "127.0.0.1"


def user(srv, i=None):
    c = bwmsg.MsgClient(H, srv.port)
    c.register(unique_name("h"), key=rsa_key(i))
    return c


def raw(srv):
    return socket.create_connection((H, srv.port), timeout=10)


def expect_9000_then_close(s):
    head = bw.recv_exact(s, 7)
    assert bw.RESP_HEADER.unpack(head) == (2, bwmsg.ERROR, 0), head
    assert bw.recv_until_eof(s, limit=1 << 16) == b""


def assert_serves(srv):
    a, b = user(srv, 20), user(srv, 21)
    mid = a.send(b.client_id, 3, b"ping" * 4)
    assert [r[1] for r in b.pull()] == [mid]


def queued(srv):
    return srv.query("SELECT count(*) FROM messages")[0][0]


@pytest.mark.parametrize("cut", [1, 10, 22])
def test_a_header_cut_short_is_closed_on_timeout_without_a_reply(start_server, cut):
    srv = start_server("--request-timeout", "1")
    s = raw(srv)
    s.sendall(bwmsg.pack_request(bytes(16), 601)[:cut])
    s.settimeout(5)
    t0 = time.monotonic()
    assert s.recv(100) == b""
    assert time.monotonic() - t0 < 4
    assert_serves(srv)


@pytest.mark.parametrize("delta", [-1, 1, 16, -21])
def test_603_whose_sizes_disagree_is_refused_and_closed(server, delta):
    a, b = user(server, 0), user(server, 1)
    content = bytes(32)
    prefix = bwmsg.SEND_PREFIX.pack(b.client_id, 3, len(content))
    size = len(prefix) + len(content) + delta
    s = raw(server)
    s.sendall(bw.pack_request_header(a.client_id, 603, max(size, 0), 2) + prefix + content)
    expect_9000_then_close(s)
    assert queued(server) == 0
    assert_serves(server)


def test_huge_sizes_are_refused_before_any_body(server):
    a, b = user(server, 0), user(server, 1)
    for size, content_size in ((0xFFFFFFFF, 0xFFFFFFFF - 21), (0xFFFFFFFF, 5),
                               (21 + (1 << 31), 1 << 31)):
        s = raw(server)
        s.sendall(bw.pack_request_header(a.client_id, 603, size, 2)
                  + bwmsg.SEND_PREFIX.pack(b.client_id, 4, content_size))
        expect_9000_then_close(s)
    for code in (600, 601, 602, 604):
        s = raw(server)
        s.sendall(bw.pack_request_header(a.client_id, code, 0xFFFFFFFF, 2))
        expect_9000_then_close(s)
    assert queued(server) == 0
    assert_serves(server)


@pytest.mark.parametrize("code", [605, 650, 699])
def test_unknown_codes_near_the_messengers_get_9000_and_a_close(server, code):
    s = raw(server)
    s.sendall(bw.pack_request_header(bytes(16), code, 0, 2))
    expect_9000_then_close(s)
    assert_serves(server)


def test_names_without_nul_or_with_controls_are_refused(server):
    c = bwmsg.MsgClient(H, server.port)
    key = bw.spki_der(rsa_key(3))
    for field in (b"x" * 255, b"\x01name" + bytes(250), bytes(255), b"a\nb" + bytes(252)):
        assert c.request(600, field + key) == (bwmsg.ERROR, b"")
    assert server.query("SELECT count(*) FROM clients")[0][0] == 0
    assert_serves(server)


def test_a_refused_603_body_is_discarded_and_the_stream_stays_in_step(server):
    a = user(server, 0)
    body = os.urandom(5000)
    code, _ = a.request(603, bwmsg.SEND_PREFIX.pack(os.urandom(16), 3, len(body)) + body)
    assert code == bwmsg.ERROR
    assert a.list() is not None  # the next request is read as a request


def test_a_vanishing_sender_leaves_nothing_behind(server):
    a, b = user(server, 0), user(server, 1)
    s = raw(server)
    s.sendall(bw.pack_request_header(a.client_id, 603, 21 + 500000, 2)
              + bwmsg.SEND_PREFIX.pack(b.client_id, 4, 500000) + os.urandom(100000))
    bwd.wait_for(lambda: bwd.read_by_peer(s), 5)  # bulwarkd has begun the body
    s.close()
    assert bwd.wait_for(lambda: not list(server.blobs("messages", ".incoming").iterdir()), 5)
    assert queued(server) == 0
    assert b.pull() == []


def test_a_registration_flood_hits_its_limit(start_server):
    srv = start_server("--max-reg-per-min", "20")
    c = bwmsg.MsgClient(H, srv.port)
    key = bw.spki_der(rsa_key(4))
    results = [c.request(600, bw.name_field(unique_name("flood")) + key)[0] for _ in range(30)]
    assert results.count(bwmsg.REGISTERED) == 20
    assert results.count(bwmsg.ERROR) == 10
    assert re.search(r"event=register_refused conn=\d+ peer=127\.0\.0\.1:\d+ service=msg "
                     r"client=\S+ reason=", srv.log()), srv.log_tail()


def test_hundreds_of_idle_connections_while_a_session_completes(server):
    idle = [raw(server) for _ in range(300)]
    try:
        t0 = time.monotonic()
        assert_serves(server)
        # far below the 30 s an idle connection may hold a slot: they did
        # not make the session wait for them (20 s: ASan, a loaded machine)
        assert time.monotonic() - t0 < 20
    finally:
        for s in idle:
            s.close()


@pytest.mark.sqlite_only("a failing fdatasync of defensive.db's WAL")
def test_a_failing_fsync_never_answers_2103(start_server, shim, tmp_path):
    """With the WAL's fdatasync failing, a 603 gets 9000, never a 2103 it
    cannot keep; nor does any 603 after it until a restart (a later fsync
    that succeeds does not cover what the failed one may have lost)."""
    arm = tmp_path / "arm"
    dd = tmp_path / "d"
    srv = start_server(data_dir=dd, env=bwd.fault_env(shim, fault="fdatasync:1:EIO", arm=arm))
    a, b = user(srv, 0), user(srv, 1)
    arm.write_text("go")
    code, _ = a.request(603, bwmsg.SEND_PREFIX.pack(b.client_id, 3, 16) + bytes(16))
    assert code == bwmsg.ERROR
    assert "fsync of the database journal failed" in srv.log()
    code, _ = a.request(603, bwmsg.SEND_PREFIX.pack(b.client_id, 3, 16) + bytes(16))
    assert code == bwmsg.ERROR, "a 603 was acknowledged after a failed fsync"
    a.close()
    b.close()
    srv.stop()
    # after a restart the next one is durable again and answered
    srv = start_server(data_dir=dd)
    a2 = bwmsg.MsgClient(H, srv.port)
    a2.client_id = a.client_id
    assert a2.send(b.client_id, 3, bytes(16)) > 0
    a2.close()
