"""`bulwark send` against servers that fail it on the way: the identity files
are kept until a new identity is complete (a first one once its name is
taken), --timeout bounds each exchange,
a refusal mid-upload is reported as a refusal, a FIFO is refused at once,
me.info's name needs no repeating, and an upload whose connection was lost
gets a fresh key (1027) before it is resent."""

import os
import struct
import threading
import time

import pytest

import bwd
import bwvault as bw
from bwd import describe, unique_name

NEW_CLIENT = [bw.REGISTER, bw.PUBLIC_KEY, bw.SEND_FILE, bw.CRC_OK]
# Both of a 1026 that fails for good: 2107 on every try (the connection
# stays open), or the connection lost in the middle of every 2102.
KEY_EXCHANGE_FAILURES = {
    "2107": {"error_times": {bw.PUBLIC_KEY: 100}},
    "close": {"close_mid": {bw.PUBLIC_KEY: 100}},
}


def prepare(client_dir, srv, data=None, name=None):
    d = client_dir()
    data = os.urandom(40_000) if data is None else data
    path = d.write_file("upload.bin", data)
    name = name or unique_name("hard")
    d.write_transfer(srv.port, name, str(path))
    return d, name, data


def fatal_lines(stderr):
    return [line for line in stderr.splitlines() if line.lstrip().startswith(b"Fatal:")]


def identity_files(d):
    return {n: (d.path / n).read_bytes() for n in ("me.info", "priv.key")
            if (d.path / n).exists()}


def only_file(srv):
    assert len(srv.files) == 1, "server holds %r" % list(srv.files)
    (cid, fname), stored = next(iter(srv.files.items()))
    return cid, fname, stored


# --- 1. me.info and priv.key change only after a complete key exchange ------

@pytest.mark.parametrize("failure", sorted(KEY_EXCHANGE_FAILURES))
def test_failed_reregistration_leaves_me_info_and_priv_key_byte_identical(
        pyserver, client_dir, failure):
    first = pyserver()
    d, name, _ = prepare(client_dir, first)
    assert d.run().returncode == 0
    before = identity_files(d)
    assert set(before) == {"me.info", "priv.key"}

    # 2106 to the 1027, 2100 to the 1025, then a 1026 that never succeeds.
    second = pyserver(refuse_reconnect=True, **KEY_EXCHANGE_FAILURES[failure])
    d.write_transfer(second.port, name, str(d.path / "upload.bin"))
    r = d.run()
    assert r.returncode == 1, describe(r)
    assert fatal_lines(r.stderr), describe(r)
    assert second.codes() == [bw.RECONNECT, bw.REGISTER] + [bw.PUBLIC_KEY] * 4
    assert identity_files(d) == before
    assert sorted(p.name for p in d.path.iterdir()) == ["me.info", "priv.key",
                                                        "transfer.info", "upload.bin"]

    # The old identity still works where it is known: no "name taken".
    d.write_transfer(first.port, name, str(d.path / "upload.bin"))
    r = d.run()
    assert r.returncode == 0, describe(r)
    assert first.codes()[len(NEW_CLIENT):] == [bw.RECONNECT, bw.SEND_FILE, bw.CRC_OK]
    assert identity_files(d) == before


def test_first_registration_writes_no_identity_when_its_key_is_refused(pyserver,
                                                                      client_dir):
    srv = pyserver(**KEY_EXCHANGE_FAILURES["2107"])
    d, _, _ = prepare(client_dir, srv)
    r = d.run()
    assert r.returncode == 1, describe(r)
    assert fatal_lines(r.stderr), describe(r)
    assert srv.codes() == [bw.REGISTER] + [bw.PUBLIC_KEY] * 4
    assert identity_files(d) == {}
    assert sorted(p.name for p in d.path.iterdir()) == ["transfer.info", "upload.bin"]


def test_a_first_registration_whose_key_answer_is_lost_keeps_the_name_it_took(
        pyserver, client_dir):
    """The 2100 came, then the answer to every 1026 was cut: the server may
    well hold the name for that id with this key. Deleting the staged key
    (as the client did) left a name nobody could use again (2101 to every
    later registration). The identity is put in place, and the next run
    reconnects with it."""
    srv = pyserver(close_mid={bw.PUBLIC_KEY: 4})
    d, name, data = prepare(client_dir, srv)
    r = d.run()
    assert r.returncode == 1, describe(r)
    assert fatal_lines(r.stderr), describe(r)
    assert b"kept in me.info" in r.stderr, describe(r)
    assert srv.codes() == [bw.REGISTER] + [bw.PUBLIC_KEY] * 4
    me_name, me_id, key = d.me_info()
    assert me_name == name and me_id in srv.clients
    assert d.me_b64() == d.priv_b64()
    r = d.run()
    assert r.returncode == 0, describe(r)
    assert srv.codes()[5:] == [bw.RECONNECT, bw.SEND_FILE, bw.CRC_OK]
    cid, _, stored = only_file(srv)
    assert cid == me_id and stored.data == data


def test_a_first_registration_keeps_its_identity_if_any_1026_went_unanswered(
        pyserver, client_dir):
    """The first 1026's answer is cut, the three resends get 2107: the first
    may have reached the server with this key. Only the last failure was
    looked at (a reply), and the identity was deleted."""
    srv = pyserver(close_mid={bw.PUBLIC_KEY: 1}, error_times={bw.PUBLIC_KEY: 4})
    d, name, _ = prepare(client_dir, srv)
    r = d.run()
    assert r.returncode == 1, describe(r)
    assert b"kept in me.info" in r.stderr, describe(r)
    assert srv.codes() == [bw.REGISTER] + [bw.PUBLIC_KEY] * 4
    me_name, me_id, _ = d.me_info()
    assert me_name == name and me_id in srv.clients


def test_a_first_registration_does_not_overwrite_a_me_info_written_meanwhile(
        pyserver, client_dir, shim, tmp_path):
    """Two clients register in one directory at once (a `bulwark msg
    register` and a cron's first `bulwark send`): whichever renamed its
    me.info last won, and the other's only private key was gone while the
    server kept its name. A first registration puts me.info in place only
    if none is there: the one written meanwhile stays, and this one's
    identity is kept aside, its place said."""
    srv = pyserver()
    d, name, _ = prepare(client_dir, srv)
    log = tmp_path / "calls"
    env = {**os.environ, **bwd.fault_env(
        shim, fault="rename:1:sleep=3000:me.info,renameat2:1:sleep=3000:me.info", log=log)}
    result = {}
    t = threading.Thread(target=lambda: result.update(r=d.run(env=env)))
    t.start()
    try:
        assert bwd.wait_for(lambda: log.exists() and "me.info" in "".join(
            ln for ln in log.read_text().splitlines() if ln.startswith("rename")), 20), \
            "the client never put its me.info in place"
        other = b"someone\n" + b"ab" * 16 + b"\nTHEIR-KEY\n"
        (d.path / "me.info").write_bytes(other)
    finally:
        t.join(30)
    r = result["r"]
    assert r.returncode != 0, describe(r)
    assert (d.path / "me.info").read_bytes() == other, "the other client's me.info was replaced"
    assert b"the identity is in" in r.stderr, describe(r)
    kept = [p for p in d.path.iterdir() if p.name.startswith(".me.info")]
    assert kept, "this registration's identity was not kept: %r" % list(d.path.iterdir())
    assert name.encode() in kept[0].read_bytes()


def test_identity_is_written_once_the_key_exchange_succeeds_after_retries(
        pyserver, client_dir):
    srv = pyserver(error_times={bw.SEND_FILE: 100})
    d, name, _ = prepare(client_dir, srv)
    r = d.run()
    assert r.returncode == 1, describe(r)
    me_name, me_id, key = d.me_info()
    assert me_name == name and me_id in srv.clients
    assert srv.clients[me_id].pubkey == bw.spki_der(key)
    assert d.me_b64() == d.priv_b64()


# --- 2. --timeout bounds a whole exchange ------------------------------------

def test_timeout_bounds_the_whole_exchange_against_a_dripping_server(pyserver, client_dir):
    # One byte every 0.5 s: each read makes progress well within --timeout 2,
    # the 23-byte 2100 alone takes 11 s.
    srv = pyserver(drip=0.5)
    d, _, _ = prepare(client_dir, srv)
    start = time.monotonic()
    r = d.run("--timeout", "2", timeout=60)
    elapsed = time.monotonic() - start
    assert r.returncode == 1, describe(r)
    # 4 tries of at most 2 s and 3.5 s of pauses, with plenty of room
    assert elapsed < 30, "took %.1f s\n%s" % (elapsed, describe(r))
    assert b"timed out" in r.stderr, describe(r)
    fatal = fatal_lines(r.stderr)
    assert len(fatal) == 1 and b"timed out" in fatal[0], describe(r)
    assert srv.codes() == [bw.REGISTER] * 4
    assert identity_files(d) == {}


# --- 3. a refusal mid-upload is reported as the server's refusal ------------

def test_upload_refused_mid_body_reports_the_refusal_not_broken_pipe(pyserver, client_dir):
    # 2107 right after the 1028's header, then a close with the body unread:
    # the client's writes fail (EPIPE / ECONNRESET) with the reply waiting.
    srv = pyserver(refuse_upload=-1)
    d, _, _ = prepare(client_dir, srv, data=os.urandom(16 << 20))
    start = time.monotonic()
    r = d.run()
    elapsed = time.monotonic() - start
    # refused before its content twice: not a chance event (exit 5)
    assert r.returncode == 5, describe(r)
    assert b"Broken pipe" not in r.stderr, describe(r)
    assert b"Connection reset" not in r.stderr, describe(r)
    fatal = fatal_lines(r.stderr)
    assert len(fatal) == 1, describe(r)
    assert fatal[0].lstrip().startswith(b"Fatal:")
    assert b"refused the file (%d bytes) before reading its content, twice" % (16 << 20) \
        in fatal[0], describe(r)
    assert srv.codes().count(bw.SEND_FILE) == 2
    assert not srv.files
    # the pause between the tries (0.5 s) is a lower bound
    assert elapsed >= 0.5, elapsed


def test_send_help_documents_the_pauses_between_retries(client_bin):
    import subprocess

    r = subprocess.run([str(client_bin), "send", "--help"], capture_output=True, timeout=10)
    assert r.returncode == 0
    text = b" ".join(r.stdout.split())
    assert b"0.5, 1 and 2 s" in text
    assert b"--timeout" in text and b"whole reply" in text


# --- 4. a FIFO is refused without blocking -----------------------------------

def test_fifo_is_refused_at_once_with_exit_2(pyserver, client_dir):
    srv = pyserver()
    d, _, _ = prepare(client_dir, srv)
    fifo = d.path / "pipe"
    os.mkfifo(fifo)
    r = d.run("--file", str(fifo), timeout=15)
    assert r.returncode == 2, describe(r)
    fatal = fatal_lines(r.stderr)
    assert len(fatal) == 1 and b"not a regular file" in fatal[0], describe(r)
    assert srv.codes() == []


# --- 5. me.info's name is enough ---------------------------------------------

@pytest.mark.parametrize("layout", ["empty-name-line", "one-line", "no-transfer-info"])
def test_me_info_name_is_used_when_no_name_is_given(server, client_dir, layout):
    d = client_dir()
    path = d.write_file("upload.bin", os.urandom(3000))
    name = unique_name("named")
    d.write_transfer(server.port, name, str(path))
    r = d.run()
    assert r.returncode == 0, describe(r)
    before = identity_files(d)

    d.write_file("upload.bin", os.urandom(5000))
    extra = []
    if layout == "empty-name-line":
        (d.path / "transfer.info").write_text("127.0.0.1:%d\n\n%s\n" % (server.port, path))
    elif layout == "one-line":
        (d.path / "transfer.info").write_text("127.0.0.1:%d\n" % server.port)
        extra = ["--file", str(path)]
    else:
        (d.path / "transfer.info").unlink()
        extra = ["--server", "127.0.0.1:%d" % server.port, "--file", str(path)]
    r = d.run(*extra, quiet=False)
    assert r.returncode == 0, describe(r)
    assert ("reconnected as '%s'" % name).encode() in r.stdout, describe(r)
    assert identity_files(d) == before


# --- 6. an upload whose connection was lost gets a fresh key -----------------

def test_revoked_key_is_replaced_with_1027_before_the_resend(pyserver, client_dir):
    srv = pyserver(revoke_on_upload=1)
    d, _, data = prepare(client_dir, srv)
    r = d.run()
    assert r.returncode == 0, describe(r)
    assert srv.codes() == [bw.REGISTER, bw.PUBLIC_KEY, bw.SEND_FILE, bw.RECONNECT,
                           bw.SEND_FILE, bw.CRC_OK]
    stored = only_file(srv)[2]
    assert stored.data == data and stored.verified


def test_revoked_key_on_the_reconnect_path_is_replaced_too(pyserver, client_dir):
    srv = pyserver()
    d, _, _ = prepare(client_dir, srv)
    assert d.run().returncode == 0
    srv.revoke_on_upload = 1
    data = d.write_file("upload.bin", os.urandom(7000)).read_bytes()
    r = d.run()
    assert r.returncode == 0, describe(r)
    assert srv.codes()[len(NEW_CLIENT):] == [bw.RECONNECT, bw.SEND_FILE, bw.RECONNECT,
                                             bw.SEND_FILE, bw.CRC_OK]
    assert only_file(srv)[2].data == data


def test_connection_lost_mid_reply_to_1028_gets_a_fresh_key(pyserver, client_dir):
    srv = pyserver(close_mid={bw.SEND_FILE: 1})
    d, _, data = prepare(client_dir, srv)
    r = d.run()
    assert r.returncode == 0, describe(r)
    assert srv.codes() == [bw.REGISTER, bw.PUBLIC_KEY, bw.SEND_FILE, bw.RECONNECT,
                           bw.SEND_FILE, bw.CRC_OK]
    assert only_file(srv)[2].data == data


def test_fresh_keys_do_not_stretch_the_limit_of_three_resends(pyserver, client_dir):
    srv = pyserver(revoke_on_upload=-1)
    d, _, _ = prepare(client_dir, srv)
    r = d.run()
    assert r.returncode == 1, describe(r)
    assert fatal_lines(r.stderr), describe(r)
    assert srv.codes() == ([bw.REGISTER, bw.PUBLIC_KEY, bw.SEND_FILE]
                           + [bw.RECONNECT, bw.SEND_FILE] * 3)


def test_2107_on_an_open_connection_is_resent_as_is(pyserver, client_dir):
    """The spec's rule for a server that keeps the connection: the same
    1028 again, no 1027 in between."""
    srv = pyserver(error_times={bw.SEND_FILE: 1})
    d, _, _ = prepare(client_dir, srv)
    r = d.run()
    assert r.returncode == 0, describe(r)
    assert srv.codes() == [bw.REGISTER, bw.PUBLIC_KEY, bw.SEND_FILE, bw.SEND_FILE,
                           bw.CRC_OK]


@pytest.mark.parametrize("size,limit", [(5_000, 1_000), (32 << 20, 100_000)])
def test_a_file_over_the_servers_size_limit_is_tried_once_and_the_limit_said(
        start_server, client_dir, size, limit):
    """Over --max-file-size bulwarkd answers 2107 at the header and closes
    without reading the content. The client printed "2107 general error"
    four times, then Fatal, exit 1 (a file small enough to be buffered
    whole before the refusal), or tried twice (a large one). Now, after a
    1028's 2107, it asks the server's limit (1104, a Bulwark extension
    answered on every listener) and, when the file is over it, stops at
    once: one Fatal line with the largest file the server takes, exit 5."""
    srv = start_server("--max-file-size", str(limit))
    d, name, _ = prepare(client_dir, srv, data=os.urandom(size))
    r = d.run()
    assert r.returncode == 5, describe(r)
    fatal = fatal_lines(r.stderr)
    assert len(fatal) == 1, describe(r)
    # the most content the server takes, less its padding's last byte
    most = limit // 16 * 16 - 1
    assert (b"the server takes files up to %d bytes; this one has %d" % (most, size)) \
        in fatal[0], describe(r)
    assert b"trying again" not in r.stderr, describe(r)
    assert srv.log().count("1028 -> 2107: file over the size limit") == 1, srv.log_tail()
    # the largest file it takes, from the same identity, goes through
    d.write_file("upload.bin", os.urandom(most))
    r = d.run()
    assert r.returncode == 0, describe(r)
    d.write_file("upload.bin", os.urandom(most + 1))
    r = d.run()
    assert r.returncode == 5, describe(r)
    assert b"up to %d bytes; this one has %d" % (most, most + 1) in r.stderr, describe(r)


def test_a_server_that_does_not_say_its_limit_gets_the_seeds_resends(pyserver, client_dir):
    """Another implementation answers the limit's request (1104) with 2107:
    the client asks once a run and goes on as the seed says (three
    resends, exit 1)."""
    srv = pyserver(error_times={bw.SEND_FILE: 4})
    d, _, _ = prepare(client_dir, srv)
    r = d.run()
    assert r.returncode == 1, describe(r)
    assert r.stderr.count(b"trying again") == 3, describe(r)
    assert srv.codes().count(bw.SEND_FILE) == 4, srv.codes()


def test_the_limit_is_told_to_anyone_on_every_listener(start_server):
    """1104 names nobody: with the zero id, an unknown id or a client's own,
    on the plain port and on TLS, 2115 carries --max-file-size as a u64 and
    the connection goes on. On TLS the usual rule still holds: a request
    naming a registered id from another key is refused."""
    import tlsutil
    from test_tls_client import start_tls
    import ports
    srv = start_tls(start_server, "--max-file-size", "123456", tls_port=ports.reserve())
    key = bwd.rsa_key(7)
    owner = bw.VaultClient("127.0.0.1", srv.port, key=key).connect()
    bw.expect(owner.register(unique_name("lim")), bw.REGISTERED, "register")
    bw.expect(owner.send_pubkey(), bw.KEY_STORED, "key")
    for tls in (False, True):
        c = (tlsutil.TlsVaultClient("127.0.0.1", srv.tls_port, key=key) if tls
             else bw.VaultClient("127.0.0.1", srv.port)).connect()
        for cid in (bw.ZERO_ID, os.urandom(16), owner.client_id):
            resp = c.request(bw.LIMITS, b"", client_id=cid)
            assert resp.code == bw.LIMITS_REPLY and len(resp.payload) >= 8, (tls, resp)
            assert struct.unpack_from("<Q", resp.payload)[0] == 123456
        c.close()
    stranger = tlsutil.TlsVaultClient("127.0.0.1", srv.tls_port, key=bwd.rsa_key(8)).connect()
    resp = stranger.request(bw.LIMITS, b"", client_id=owner.client_id)
    assert resp.code == bw.ERROR and resp.payload == b"", resp
    assert stranger.is_closed_by_peer(timeout=5)
    owner.close()


def test_a_2107_after_the_content_is_still_tried_three_times(pyserver, client_dir):
    srv = pyserver(error_always=True)
    d, _, _ = prepare(client_dir, srv)
    r = d.run()
    assert r.returncode == 1, describe(r)
    assert r.stderr.count(b"trying again") == 3, describe(r)
    assert len(fatal_lines(r.stderr)) == 1, describe(r)
