"""TLS session resumption: what it saves, and what it must not change.

The server keeps the sessions of full handshakes (stateful tickets, a
bounded cache) and gives one ticket a session; our client keeps the ticket
per server and identity in ~/.cache/bulwark/tls-sessions (0600) and offers
it next time. A resumed session carries the key the client proved in the
full handshake: it proves the identity again, and nothing else. What is
attacked here: an independent client (Python's ssl, a certificate made by
the openssl command) resuming and acting for its id, a session of one
identity offered for another, a session file that is garbage, a session
for a server that is not the one pinned, and a server that lost them."""

import os
import re
import ssl
import stat
import urllib.request

import bwvault as bw
import ports
from bwd import rsa_key, unique_name
import tlsutil
from bwd import describe
from test_tls_client import (EXIT_KEY, assert_stored, client_env, msg_ok, send_dir, start_tls,
                             trust)

H = "127.0.0.1"
LINE_RE = re.compile(r"^127\.0\.0\.1:(\d+) ([0-9a-f]{64}|-) (\d+) ([0-9a-f]+)$")


def start(start_server, *args, **kw):
    mp = ports.reserve()
    srv = start_tls(start_server, "--metrics-listen", "%s:%d" % (H, mp), *args, **kw)
    srv.metrics_port = mp
    return srv


def counts(srv):
    """(handshakes, resumed) from the server's metrics."""
    with urllib.request.urlopen("http://%s:%d/metrics" % (H, srv.metrics_port), timeout=10) as r:
        text = r.read().decode()
    get = lambda name: int(re.search(r"^%s(?:\{[^}]*\})? (\d+)$" % name, text, re.M).group(1))
    return get("bulwark_tls_handshakes_total"), get("bulwark_tls_resumed_total")


def sessions_file(home):
    return home / ".cache" / "bulwark" / "tls-sessions"


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_a_second_run_resumes_and_still_proves_the_identity(start_server, client_dir,
                                                            tmp_path):
    srv = start(start_server, tls_port=ports.reserve())
    home = tmp_path / "home"
    env = client_env(home)
    d, data = send_dir(client_dir, srv.tls_port)
    r = d.run(env=env)
    assert r.returncode == 0, describe(r)
    assert_stored(srv, d, data)
    path = sessions_file(home)
    got = lines(path)
    assert len(got) == 1 and LINE_RE.match(got[0]), got
    m = LINE_RE.match(got[0])
    assert int(m.group(1)) == srv.tls_port and m.group(2) != "-"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    hs0, res0 = counts(srv)

    # the next runs resume: no full handshake, and the upload is the
    # identity's (the server's check of the proven key still ran)
    for i in range(3):
        data = os.urandom(9_000 + i)
        d.write_file("upload.bin", data)
        r = d.run(env=env)
        assert r.returncode == 0, describe(r)
        assert_stored(srv, d, data)
    hs, res = counts(srv)
    assert hs - hs0 >= 3 and res - res0 == hs - hs0, (hs0, res0, hs, res)
    assert lines(path) == got  # no new ticket after a resumption: the line stays


def test_an_independent_client_resumes_and_acts_only_for_its_own_key(start_server):
    """Python's ssl resumes a session the server gave after the owner proved
    its key; the resumed connection is the owner's. A stranger's resumed
    session (its own key proven) is refused for the owner's id, as its full
    handshake was."""
    srv = start(start_server, tls_port=ports.reserve())
    owner_key = rsa_key(3)
    ctx = tlsutil.client_ctx(key=owner_key)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3

    first = bw.VaultClient(H, srv.tls_port, key=owner_key)
    first.sock = tlsutil.tls_connect(H, srv.tls_port, ctx)
    bw.expect(first.register(unique_name("rs")), bw.REGISTERED, "register")
    bw.expect(first.send_pubkey(), bw.KEY_STORED, "key")
    session = first.sock.session
    assert session is not None and session.has_ticket
    first.close()
    hs0, res0 = counts(srv)

    again = bw.VaultClient(H, srv.tls_port, key=owner_key)
    again.client_id, again.name = first.client_id, first.name
    again.sock = tlsutil.tls_connect(H, srv.tls_port, ctx, session=session)
    assert again.sock.session_reused
    bw.expect(again.reconnect(), bw.RECONNECTED, "1027 on a resumed session")
    again.close()
    assert counts(srv)[1] == res0 + 1

    stranger_ctx = tlsutil.client_ctx(key=rsa_key(21))
    s = bw.VaultClient(H, srv.tls_port, key=rsa_key(21))
    s.sock = tlsutil.tls_connect(H, srv.tls_port, stranger_ctx)
    bw.expect(s.register(unique_name("st")), bw.REGISTERED, "the stranger's own id")
    stolen_id = s.client_id
    st_session = s.sock.session
    s.close()
    s2 = bw.VaultClient(H, srv.tls_port, key=rsa_key(21))
    s2.sock = tlsutil.tls_connect(H, srv.tls_port, stranger_ctx, session=st_session)
    assert s2.sock.session_reused
    s2.client_id, s2.name = first.client_id, first.name  # the owner's id
    resp = s2.reconnect()
    assert resp.code == bw.ERROR and resp.payload == b"", resp
    assert s2.is_closed_by_peer(timeout=5)
    assert stolen_id != first.client_id


def test_a_session_is_offered_only_for_its_identity_and_server(start_server, client_dir,
                                                               tmp_path):
    srv = start(start_server, tls_port=ports.reserve())
    home = tmp_path / "home"
    env = client_env(home)
    a, _ = send_dir(client_dir, srv.tls_port)
    assert a.run(env=env).returncode == 0
    hs0, res0 = counts(srv)
    # another identity in the same HOME: a full handshake of its own (it
    # would otherwise be the first one's proven key, and refused)
    b, data = send_dir(client_dir, srv.tls_port)
    r = b.run(env=env)
    assert r.returncode == 0, describe(r)
    assert_stored(srv, b, data)
    hs, res = counts(srv)
    assert hs == hs0 + 1 and res == res0, (hs0, res0, hs, res)
    assert len(lines(sessions_file(home))) == 2
    # the messenger in the same HOME, with its own identity: its own line
    m = tmp_path / "m"
    msg_ok(m, "-s", "tls://127.0.0.1:%d" % srv.tls_port, "register", unique_name("m"), env=env)
    msg_ok(m, "-s", "tls://127.0.0.1:%d" % srv.tls_port, "list", env=env)
    assert len(lines(sessions_file(home))) == 3
    assert counts(srv)[1] > res


def test_a_garbage_session_file_costs_a_full_handshake_and_is_rewritten(start_server,
                                                                         client_dir, tmp_path):
    srv = start(start_server, tls_port=ports.reserve())
    home = tmp_path / "home"
    env = client_env(home)
    d, _ = send_dir(client_dir, srv.tls_port)
    assert d.run(env=env).returncode == 0
    path = sessions_file(home)
    (line,) = lines(path)
    name, who, ends, hexder = line.split(" ")
    garbage = [
        "%s %s %s %s" % (name, who, ends, hexder[:-7]),             # odd, truncated
        "%s %s %s %s" % (name, who, ends, "00" * 300),              # not a session
        "%s %s %s %s" % (name, who, ends, "zz" * 40),               # not hex
        "%s %s 1 %s" % (name, who, hexder),                         # ended long ago
        "%s %s %s %s" % (name, who, ends, "ab" * 200_000),          # far too long
        "no fields at all", "", "\x00\x01 binary",
    ]
    for bad in garbage:
        path.write_text(bad + "\n")
        hs0, res0 = counts(srv)
        data = os.urandom(5_000)
        d.write_file("upload.bin", data)
        r = d.run(env=env)
        assert r.returncode == 0, (bad[:60], describe(r))
        assert_stored(srv, d, data)
        hs, res = counts(srv)
        assert res == res0 and hs > hs0, (bad[:60], hs0, res0, hs, res)
        got = lines(path)
        assert len(got) == 1 and LINE_RE.match(got[0]), (bad[:60], got)
    # a valid session for this server, under another identity's name: not
    # offered for this one
    path.write_text("%s %s %s %s\n" % (name, "f" * 64, ends, hexder))
    hs0, res0 = counts(srv)
    assert d.run(env=env).returncode == 0
    assert counts(srv)[1] == res0


def test_sessions_can_be_turned_off_and_a_restarted_server_falls_back(start_server,
                                                                      client_dir, tmp_path):
    tp = ports.reserve()
    srv = start(start_server, tls_port=tp)
    home = tmp_path / "home"
    env = dict(client_env(home), BULWARK_TLS_SESSIONS="")
    d, _ = send_dir(client_dir, tp)
    assert d.run(env=env).returncode == 0
    assert d.run(env=env).returncode == 0
    assert not (home / ".cache").exists()
    assert counts(srv)[1] == 0

    # kept elsewhere, then the server restarts (same key, sessions lost):
    # the kept one is refused quietly, a full handshake, a new line
    kept = tmp_path / "elsewhere" / "sessions"
    env = dict(client_env(home), BULWARK_TLS_SESSIONS=str(kept))
    assert d.run(env=env).returncode == 0
    before = lines(kept)
    assert len(before) == 1
    data_dir = srv.data_dir
    srv.stop()
    srv = start(start_server, tls_port=tp, data_dir=data_dir)
    data = os.urandom(7_000)
    d.write_file("upload.bin", data)
    r = d.run(quiet=False, env=env)
    assert r.returncode == 0, describe(r)
    assert b"WARNING" not in r.stderr, describe(r)
    assert_stored(srv, d, data)
    assert counts(srv)[1] == 0
    after = lines(kept)
    assert len(after) == 1 and after != before


def test_trust_server_forgets_the_sessions_of_the_old_key(start_server, client_dir, tmp_path):
    tp = ports.reserve()
    a = start(start_server, tls_port=tp)
    home = tmp_path / "home"
    env = client_env(home)
    d, _ = send_dir(client_dir, tp)
    assert d.run(env=env).returncode == 0
    other = "127.0.0.2:%d %s 99999999999 %s" % (tp, "-", "ab" * 10)
    path = sessions_file(home)
    path.write_text(path.read_text() + other + "\n")
    a.stop()
    b = start(start_server, tls_port=tp)
    r = d.run(env=env)
    assert r.returncode == EXIT_KEY, describe(r)
    r = trust("tls://127.0.0.1:%d" % tp, env, tmp_path)
    assert r.returncode == 0, describe(r)
    assert lines(path) == [other]  # another server's line stays
    data = os.urandom(6_000)
    d.write_file("upload.bin", data)
    # a's server is gone with its id: register again on b
    for n in ("me.info", "priv.key"):
        (d.path / n).unlink()
    r = d.run(env=env)
    assert r.returncode == 0, describe(r)
    assert_stored(b, d, data)
    assert any(LINE_RE.match(ln) for ln in lines(path))
