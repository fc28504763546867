"""bulwarkd's TLS listeners: --tls-port (the vault and the messenger, the
same bytes as the plain port, inside TLS 1.3), --rooms-tls-port (the group
chat inside TLS 1.3), the self-signed key made at first start and its
fingerprint (--fingerprint, the log, the wire), the operator's own
--tls-cert/--tls-key and what is refused of them, --require-tls, TLS 1.2
refused, SIGHUP re-reading the files, and garbage on either kind of port.

The clients are the independent ones (bwvault.py, bwmsg.py, bwrooms.py)
with their socket wrapped by Python's ssl; certificates are checked
against the tls.crt the daemon made (host name "localhost") where the test
is about the data, and taken unchecked where it is about which key the
server shows. Fingerprints are computed here from the certificate's
SubjectPublicKeyInfo (PyCryptodome) and by the openssl pipeline the
documentation gives."""

import base64
import hashlib
import ipaddress
import json
import os
import re
import selectors
import shutil
import socket
import ssl
import stat
import subprocess
import threading
import time

import pytest
from Cryptodome.PublicKey import ECC, RSA

import bwd
import bwmsg
import bwrooms as R
import bwvault as bw
import ports
import tlsutil
from bwd import rsa_key, unique_name
from tlsutil import TlsMsgClient, TlsVaultClient, client_ctx, need_openssl

H = "127.0.0.1"
FP_RE = re.compile(r"TLS: server key (SHA256:[A-Za-z0-9+/]{43})(?![A-Za-z0-9+/=])")
KEPT = "the old key and certificate are kept"


# --------------------------------------------------------------------------
# Helpers


def start_tls(start_server, *args, tls=True, rooms_tls=False, rooms=False, require=False,
              **kw):
    """bulwarkd with --tls-port and/or --rooms-tls-port on reserved ports
    (tls_port / rooms_tls_port on the returned Daemon), up once the log
    shows every `... listening on tls://` line wanted. require: the plain
    listeners are off (--require-tls), so the vault's plain line is not
    waited for."""
    tp = ports.reserve() if tls else None
    rp = ports.reserve() if rooms_tls else None
    extra = []
    lines = []
    if tp is not None:
        extra += ["--tls-port", str(tp)]
        lines += ["vault listening on tls://127.0.0.1:%d" % tp,
                  "messenger listening on tls://127.0.0.1:%d" % tp]
    if rp is not None:
        extra += ["--rooms-tls-port", str(rp)]
        lines += ["rooms listening on tls://127.0.0.1:%d" % rp]
    if require:
        extra.append("--require-tls")
    srv = start_server(*(extra + [str(a) for a in args]), rooms=rooms, wait=not require, **kw)
    bwd.wait_for(lambda: all(ln in srv.log() for ln in lines) or not srv.alive(),
                 bwd.START_TIMEOUT)
    missing = [ln for ln in lines if ln not in srv.log()]
    assert not missing, "bulwarkd did not log %r (alive: %s)\n%s" % (
        missing, srv.alive(), srv.log_tail())
    srv.tls_port, srv.rooms_tls_port = tp, rp
    return srv


def tls_connect(port, ctx=None, hostname="localhost", timeout=10.0):
    return tlsutil.tls_connect(H, port, ctx, hostname, timeout)


class TlsRoomClient(R.RoomClient):
    """bwrooms' line client over TLS."""

    def __init__(self, port, ctx=None, hostname="localhost", timeout=10.0, greet=True):
        self.sock = tls_connect(port, ctx, hostname, timeout)
        self.timeout = timeout
        self.buf = b""
        self.seen = b""
        self.eof = False
        self.reset = False
        if greet:
            self.expect(R.MENU_LAST)


def fp_of_der(cert_der):
    """SHA256:<base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo,
    unpadded>, computed with PyCryptodome."""
    key = None
    for kind in (ECC, RSA):
        try:
            key = kind.import_key(cert_der)
            break
        except (ValueError, IndexError, TypeError):
            continue
    assert key is not None, "cannot read the certificate's key"
    spki = key.public_key().export_key(format="DER")
    return "SHA256:" + base64.b64encode(hashlib.sha256(spki).digest()).decode().rstrip("=")


def fp_of_sock(s):
    return fp_of_der(s.getpeercert(binary_form=True))


def fp_of_pem_file(path):
    return fp_of_der(ssl.PEM_cert_to_DER_cert(path.read_text()))


def fp_by_openssl(cert_path):
    """The documented pipeline: openssl x509 -pubkey | pkey -outform DER |
    dgst -sha256 -binary | base64, '=' stripped."""
    need_openssl()
    cmd = ("set -o pipefail; openssl x509 -in \"$1\" -pubkey -noout | "
           "openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary | base64")
    r = subprocess.run(["bash", "-c", cmd, "fp", str(cert_path)], capture_output=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")
    return "SHA256:" + r.stdout.decode().strip().rstrip("=")


def log_fps(srv):
    return FP_RE.findall(srv.log())


def fingerprint_cmd(*args):
    """bulwarkd --fingerprint ARGS, run to its exit (no daemon)."""
    bwd.require_file(bwd.BULWARKD, "bulwarkd", "BULWARKD")
    try:
        return subprocess.run([str(bwd.BULWARKD), "--fingerprint"] + [str(a) for a in args],
                              capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise AssertionError("bulwarkd --fingerprint %s did not exit within 30 s" % (args,))


def make_pair(directory, name, kind="ec"):
    """A self-signed certificate for localhost and its key (PEM), by openssl:
    kind "ec" (P-256), "rsa2048" or "rsa1024". Returns (cert, key)."""
    need_openssl()
    directory.mkdir(parents=True, exist_ok=True)
    crt, key = directory / (name + ".crt"), directory / (name + ".key")
    newkey = {"ec": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
              "rsa2048": ["-newkey", "rsa:2048"],
              "rsa1024": ["-newkey", "rsa:1024"]}[kind]
    r = subprocess.run(["openssl", "req", "-x509"] + newkey +
                       ["-nodes", "-keyout", str(key), "-out", str(crt), "-days", "2",
                        "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")
    return crt, key


def install(src_crt, src_key, crt, key):
    """Puts a pair in place the way an operator's tool would: each file
    written beside and renamed over."""
    for src, dst in ((src_crt, crt), (src_key, key)):
        tmp = dst.with_name(dst.name + ".new")
        tmp.write_bytes(src.read_bytes())
        os.chmod(tmp, 0o600)
        os.replace(tmp, dst)


def closed_within(sock, timeout=10.0):
    """Reads until the peer ends the stream (EOF or reset); returns what came
    before. AssertionError if it is still open after timeout seconds."""
    deadline = time.monotonic() + timeout
    got = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("connection still open after %gs; received %r"
                                 % (timeout, got[:200]))
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return got
        except socket.timeout:
            continue
        if not chunk:
            return got
        got += chunk


def vault_works_over_tls(srv, cafile=None, i=3):
    """A fresh TLS connection registers and gets its AES key."""
    c = TlsVaultClient(H, srv.tls_port, cafile, key=rsa_key(i)).connect()
    try:
        bw.expect(c.register(unique_name("probe")), bw.REGISTERED, "register over TLS")
        bw.expect(c.send_pubkey(), bw.KEY_STORED, "key over TLS")
    finally:
        c.close()


def client_hello():
    """The bytes of a TLS ClientHello as Python's ssl sends it."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx().wrap_bio(inc, out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = out.read()
    assert hello[:1] == b"\x16" and hello[5:6] == b"\x01", hello[:16]
    return hello


# --------------------------------------------------------------------------
# 1. The data over TLS, end to end


def test_vault_register_upload_and_crc_verdict_over_tls(start_server):
    srv = start_tls(start_server)
    data = os.urandom(200_000)
    name = unique_name("tls")
    key = rsa_key(0)
    c = TlsVaultClient(H, srv.tls_port, srv.data_dir / "tls.crt", key=key).connect()
    try:
        assert c.sock.version() == "TLSv1.3"
        bw.expect(c.register(name), bw.REGISTERED, "register")
        resp = bw.expect(c.send_pubkey(), bw.KEY_STORED, "public key")
        assert resp.client_id == c.client_id
        res = c.send_file("over-tls.bin", data)
        bw.expect(res.response, bw.FILE_RECEIVED, "send file")
        cid, csize, _, crc = bw.parse_file_received(res.response.payload)
        assert cid == c.client_id and csize == res.content_size
        assert crc == res.crc, "server CRC %d, client CRC %d" % (crc, res.crc)
        ack = bw.expect(c.crc_ok("over-tls.bin"), bw.ACK, "crc ok")
        assert ack.client_id == c.client_id
    finally:
        c.close()
    path = srv.client_dir(c.client_id) / "over-tls.bin"
    assert bwd.wait_for(path.exists, 5), "upload not stored at %s" % path
    assert path.read_bytes() == data
    row = srv.file_row(c.client_id, "over-tls.bin")
    assert row is not None and bwd.is_true(row["Verified"]), row
    # the identity made over TLS is the plain port's too
    p = bw.VaultClient(H, srv.port, key=key).connect()
    try:
        p.client_id, p.name = c.client_id, name
        bw.expect(p.reconnect(), bw.RECONNECTED, "reconnect on the plain port")
    finally:
        p.close()


@pytest.mark.parametrize("padded", [False, True], ids=["keepalive", "padded"])
def test_messenger_register_send_and_pull_between_two_tls_clients(start_server, padded):
    srv = start_tls(start_server)
    ca = srv.data_dir / "tls.crt"
    a = TlsMsgClient(H, srv.tls_port, ca, padded=padded)
    b = TlsMsgClient(H, srv.tls_port, ca, padded=padded)
    try:
        a.register(unique_name("ta"), key=rsa_key(1))
        b.register(unique_name("tb"), key=rsa_key(2))
        assert (b.client_id, b.name) in a.list()
        assert a.public_key(b.client_id) == bw.spki_der(b.key)
        req = a.send_key_request(b.client_id)
        got = b.pull()
        assert [(r[0], r[1], r[2], r[3]) for r in got] == [(a.client_id, req, 1, b"")]
        k = os.urandom(16)
        kid = b.send_sym_key(a.client_id, k)
        got = a.pull()
        assert [(r[0], r[1], r[2]) for r in got] == [(b.client_id, kid, 2)]
        assert bw.unwrap_key(a.key, got[0][3]) == k
        tid = a.send_text(b.client_id, k, b"over TLS, hello bob")
        (r,) = b.pull()
        assert (r[0], r[1], r[2]) == (a.client_id, tid, 3)
        assert bw.aes_decrypt(k, r[3]) == b"over TLS, hello bob"
        # a plain client reaches a TLS one: one messenger behind both ports
        p = bwmsg.MsgClient(H, srv.port)
        try:
            p.register(unique_name("tp"), key=rsa_key(3))
            pid = p.send_text(b.client_id, k, b"from the plain port")
        finally:
            p.close()
        (r,) = b.pull()
        assert r[1] == pid and bw.aes_decrypt(k, r[3]) == b"from the plain port"
        assert b.pull() == []
    finally:
        a.close()
        b.close()


def test_rooms_session_over_tls_reaches_tls_and_plain_members(start_server):
    srv = start_tls(start_server, tls=False, rooms_tls=True, rooms=True)
    assert "vault listening on tls://" not in srv.log()  # no --tls-port: none
    ctx = client_ctx(cafile=srv.data_dir / "tls.crt")
    a = TlsRoomClient(srv.rooms_tls_port, ctx)
    b = c = None
    try:
        assert a.sock.version() == "TLSv1.3"
        assert a.seen.decode() == R.MENU
        room = a.create("alice", "secret")
        b = TlsRoomClient(srv.rooms_tls_port, ctx)
        b.join("bob", room, "secret")
        a.expect(R.joined("bob"))
        a.line("hello over tls")
        b.expect_seq(["alice: hello over tls"])
        b.line("hi alice")
        a.expect_seq(["bob: hi alice"])
        # the plain rooms port stays, into the same rooms
        c = R.member(srv.rooms_port, "carol", room, "secret")
        a.expect(R.joined("carol"))
        b.expect(R.joined("carol"))
        c.line("plain here")
        a.expect_seq(["carol: plain here"])
        b.expect_seq(["carol: plain here"])
        b.line("tls to all")
        c.expect_seq(["bob: tls to all"])
        b.leave()
        a.expect(R.left("bob"))
    finally:
        for x in (a, b, c):
            if x is not None:
                x.close()


def test_a_resumed_session_offers_no_early_data(start_server, tmp_path):
    """No 0-RTT: the server's tickets allow no early data, so a client that
    resumes (openssl s_client, asked to send early data) sends none; the
    session is resumed all the same. (TLS 1.3 has no compression and no
    renegotiation to turn off; TLS 1.2 is refused elsewhere.)"""
    need_openssl()
    srv = start_tls(start_server)
    sess, early = tmp_path / "sess.pem", tmp_path / "early.bin"
    early.write_bytes(bw.pack_request(bw.ZERO_ID, bw.LIMITS, b""))
    base = "sleep 1 | openssl s_client -connect 127.0.0.1:%d -tls1_3 " % srv.tls_port
    r = subprocess.run(["sh", "-c", base + "-sess_out %s" % sess], capture_output=True,
                       timeout=30)
    assert sess.exists(), r.stderr.decode("utf-8", "replace")[-2000:]
    text = subprocess.run(["openssl", "sess_id", "-in", str(sess), "-noout", "-text"],
                          capture_output=True, timeout=30).stdout.decode()
    assert re.search(r"Max Early Data: 0\b", text), text
    r = subprocess.run(["sh", "-c", base + "-sess_in %s -early_data %s" % (sess, early)],
                       capture_output=True, timeout=30)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert "Reused, TLSv1.3" in out, out[-3000:]
    assert "Early data was not sent" in out, out[-3000:]
    assert srv.alive()


def test_openssl_s_client_on_the_rooms_tls_port_shows_the_menu(start_server):
    need_openssl()
    srv = start_tls(start_server, tls=False, rooms_tls=True, rooms=True)
    plain = R.RoomClient(srv.rooms_port)
    plain_first = plain.seen.decode().split("\n")[0]
    plain.close()
    assert plain_first == R.MENU.split("\n")[0]
    proc = subprocess.Popen(["openssl", "s_client", "-quiet", "-connect",
                             "127.0.0.1:%d" % srv.rooms_tls_port],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    out = b""
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 15
        while R.MENU_LAST.encode() not in out and time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
        sel.close()
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    text = out.decode("utf-8", "replace")
    assert text.split("\n")[0] == plain_first, "s_client showed %r\nstderr: %s" % (
        text, err.decode("utf-8", "replace")[-2000:])
    assert text == R.MENU, text


# --------------------------------------------------------------------------
# 2. Keys, certificates and fingerprints


def test_self_signed_key_is_made_once_and_its_fingerprint_agrees_everywhere(start_server):
    srv = start_tls(start_server, rooms_tls=True, rooms=True)
    d = srv.data_dir
    key_path, crt_path = d / "tls.key", d / "tls.crt"
    assert key_path.is_file() and crt_path.is_file(), sorted(os.listdir(d))
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600, oct(os.stat(key_path).st_mode)
    log = srv.log()
    assert "TLS: made a P-256 key (" in log, srv.log_tail()
    assert log.index("TLS: made a P-256 key (") < log.index("TLS: server key SHA256:")
    key = ECC.import_key(key_path.read_text())
    assert key.has_private() and key.curve in ("NIST P-256", "p256", "P-256", "prime256v1",
                                               "secp256r1"), key.curve
    (logged,) = log_fps(srv)

    r = fingerprint_cmd("-d", d)
    assert r.returncode == 0, bwd.describe(r)
    printed = r.stdout.decode().strip()
    assert re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}", printed), printed
    assert printed == logged == fp_by_openssl(crt_path) == fp_of_pem_file(crt_path)

    # on the wire, on both TLS ports, checked against tls.crt by every name
    # its subjectAltName promises
    ctx = client_ctx(cafile=crt_path)
    for port in (srv.tls_port, srv.rooms_tls_port):
        for name in ("localhost", "127.0.0.1", "::1"):
            with tls_connect(port, ctx, hostname=name) as s:
                assert fp_of_sock(s) == logged, (port, name)
                sans = s.getpeercert()["subjectAltName"]
    dns = {v for k, v in sans if k == "DNS"}
    ips = {ipaddress.ip_address(v.strip()) for k, v in sans if k == "IP Address"}
    assert "localhost" in dns, sans
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")} <= ips, sans
    # a name it does not promise is refused by the same check
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_connect(srv.tls_port, ctx, hostname="not-this-host.example").close()

    # a second start keeps the key
    crt_before = crt_path.read_bytes()
    srv.stop()
    srv2 = start_tls(start_server, data_dir=d)
    assert "TLS: made a P-256 key" not in srv2.log(), srv2.log_tail()
    assert log_fps(srv2) == [logged]
    with tls_connect(srv2.tls_port, client_ctx(cafile=crt_path)) as s:
        assert fp_of_sock(s) == logged
    assert crt_path.read_bytes() == crt_before
    r = fingerprint_cmd("-d", d)
    assert r.returncode == 0 and r.stdout.decode().strip() == logged, bwd.describe(r)


def test_fingerprint_without_a_key_yet_exits_1_and_says_it_comes_at_first_start(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    r = fingerprint_cmd("-d", d)
    assert r.returncode == 1, bwd.describe(r)
    assert b"SHA256:" not in r.stdout, bwd.describe(r)
    assert b"first start" in r.stderr, bwd.describe(r)
    assert not (d / "tls.key").exists() and not (d / "tls.crt").exists()


def test_no_tls_listener_and_no_key_unless_asked(start_server):
    srv = start_server(rooms=True)
    assert "tls://" not in srv.log(), srv.log_tail()
    assert not (srv.data_dir / "tls.key").exists()
    assert not (srv.data_dir / "tls.crt").exists()
    srv.assert_serves()


@pytest.mark.parametrize("kind", ["ec", "rsa2048"])
def test_operator_cert_and_key_are_served_and_fingerprinted(start_server, tmp_path, kind):
    crt, key = make_pair(tmp_path / "op", "server", kind)
    want = fp_by_openssl(crt)
    assert fp_of_pem_file(crt) == want
    r = fingerprint_cmd("--tls-cert", crt, "--tls-key", key)
    assert r.returncode == 0 and r.stdout.decode().strip() == want, bwd.describe(r)
    srv = start_tls(start_server, "--tls-cert", crt, "--tls-key", key, rooms_tls=True,
                    rooms=True)
    assert log_fps(srv) == [want], srv.log_tail()
    assert "TLS: made a P-256 key" not in srv.log()
    assert not (srv.data_dir / "tls.key").exists(), "made a key though one was given"
    ctx = client_ctx(cafile=crt)
    with tls_connect(srv.tls_port, ctx) as s:
        assert fp_of_sock(s) == want
    with tls_connect(srv.rooms_tls_port, ctx) as s:
        assert fp_of_sock(s) == want
    vault_works_over_tls(srv, crt)


def test_a_key_weaker_than_112_bits_is_refused_at_start(start_server, tmp_path):
    crt, key = make_pair(tmp_path / "op", "weak", "rsa1024")
    srv = start_server("--tls-port", ports.reserve(), "--tls-cert", crt, "--tls-key", key,
                       wait=False)
    rc, log = srv.wait_exit()
    assert rc not in (0, None), "started with an RSA-1024 key (rc %r)\n%s" % (rc, log)
    assert "too weak" in log, log
    assert "listening on tls://" not in log, log


def test_a_key_that_is_not_the_certificates_is_refused_at_start(start_server, tmp_path):
    crt, _ = make_pair(tmp_path / "op", "one")
    _, other_key = make_pair(tmp_path / "op", "two")
    srv = start_server("--tls-port", ports.reserve(), "--tls-cert", crt,
                       "--tls-key", other_key, wait=False)
    rc, log = srv.wait_exit()
    assert rc not in (0, None), "started with a key not the certificate's (rc %r)\n%s" % (
        rc, log)
    assert "listening on tls://" not in log, log
    assert "is not the key of the certificate" in log, log


@pytest.mark.parametrize("case", ["cert-only", "key-only", "require-no-tls-port",
                                  "require-rooms-no-rooms-tls-port", "tls-port-word",
                                  "tls-port-65536", "rooms-tls-port-negative"])
def test_configuration_errors_exit_2_naming_the_option(start_server, tmp_path, case):
    p = ports.reserve()
    rooms = False
    if case in ("cert-only", "key-only"):
        crt, key = make_pair(tmp_path / "op", "server")
        args = (["--tls-port", p, "--tls-cert", crt] if case == "cert-only"
                else ["--tls-port", p, "--tls-key", key])
        named = "--tls-key" if case == "cert-only" else "--tls-cert"
    elif case == "require-no-tls-port":
        args, named = ["--require-tls"], "--tls-port"
    elif case == "require-rooms-no-rooms-tls-port":
        args, named, rooms = ["--require-tls", "--tls-port", p], "--rooms-tls-port", True
    elif case == "tls-port-word":
        args, named = ["--tls-port", "any"], "--tls-port"
    elif case == "tls-port-65536":
        args, named = ["--tls-port", "65536"], "--tls-port"
    else:
        args, named, rooms = ["--rooms-tls-port", "-1"], "--rooms-tls-port", True
    srv = start_server(*args, rooms=rooms, wait=False)
    rc, log = srv.wait_exit()
    assert rc == 2, "exit %r for %s\n%s" % (rc, args, log)
    assert named in log, log
    assert "listening on" not in log, log


def test_tls_port_0_takes_a_free_port_and_logs_it(start_server):
    """0 = any free port, as for --port (scripts/cluster relies on it)."""
    srv = start_server("--tls-port", "0", "--rooms-tls-port", "0", rooms=True)
    log = srv.log()
    got = {w: int(p) for w, p in re.findall(r"(vault|rooms) listening on tls://[0-9.]+:(\d+)",
                                             log)}
    assert set(got) == {"vault", "rooms"} and 0 not in got.values(), log
    ctx = client_ctx(cafile=srv.data_dir / "tls.crt")
    with tls_connect(got["rooms"], ctx) as s:
        assert s.version() == "TLSv1.3"


# --------------------------------------------------------------------------
# 3. --require-tls and TLS 1.3 only


def test_require_tls_turns_the_plain_ports_off(start_server):
    plain, plain_rooms = ports.reserve(), ports.reserve()
    srv = start_tls(start_server, rooms_tls=True, rooms=True, require=True, port=plain,
                    rooms_port=plain_rooms)
    log = srv.log()
    assert not re.search(r"(shared|vault|messenger|rooms) listening on [0-9.]+:", log), log
    for port in (plain, plain_rooms):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((H, port), timeout=5).close()
    ctx = client_ctx(cafile=srv.data_dir / "tls.crt")
    vault_works_over_tls(srv, srv.data_dir / "tls.crt")
    with TlsRoomClient(srv.rooms_tls_port, ctx) as r:
        assert r.seen.decode() == R.MENU
    assert srv.alive()


def test_require_tls_without_rooms_needs_no_rooms_tls_port(start_server):
    plain = ports.reserve()
    srv = start_tls(start_server, require=True, port=plain)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((H, plain), timeout=5).close()
    vault_works_over_tls(srv)


@pytest.mark.parametrize("which", ["shared", "rooms"])
def test_a_client_limited_to_tls_1_2_fails_the_handshake(start_server, which):
    srv = start_tls(start_server, rooms_tls=True, rooms=True)
    port = srv.tls_port if which == "shared" else srv.rooms_tls_port
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_connect(port, client_ctx(maximum=ssl.TLSVersion.TLSv1_2)).close()
    # the same port, the same client otherwise: TLS 1.3 is what it speaks
    with tls_connect(port, client_ctx()) as s:
        assert s.version() == "TLSv1.3"
    assert srv.alive()


# --------------------------------------------------------------------------
# 4. SIGHUP


def test_sighup_reads_new_files_keeps_open_sessions_and_refuses_broken_ones(start_server,
                                                                            tmp_path):
    op = tmp_path / "op"
    one = make_pair(op, "one")
    two = make_pair(op, "two")
    weak = make_pair(op, "weak", "rsa1024")
    fp1, fp2 = fp_of_pem_file(one[0]), fp_of_pem_file(two[0])
    assert fp1 != fp2
    crt, key = op / "server.crt", op / "server.key"
    install(*one, crt, key)
    srv = start_tls(start_server, "--tls-cert", crt, "--tls-key", key)
    assert log_fps(srv) == [fp1]

    # a session opened before the reload
    old = TlsVaultClient(H, srv.tls_port, key=rsa_key(4)).connect()
    try:
        assert fp_of_sock(old.sock) == fp1
        bw.expect(old.register(unique_name("old")), bw.REGISTERED, "register before HUP")

        install(*two, crt, key)
        srv.hup()
        assert KEPT not in srv.log(), srv.log_tail()
        with tls_connect(srv.tls_port) as s:
            assert fp_of_sock(s) == fp2, "a new connection still gets the old key"
        vault_works_over_tls(srv, two[0])

        # the old session goes on with what it started with
        bw.expect(old.send_pubkey(), bw.KEY_STORED, "public key after HUP")
        data = os.urandom(5000)
        res = old.send_file("after-hup.bin", data)
        bw.expect(res.response, bw.FILE_RECEIVED, "upload after HUP")
        assert res.server_crc == res.crc
        bw.expect(old.crc_ok("after-hup.bin"), bw.ACK, "crc ok after HUP")
        assert fp_of_sock(old.sock) == fp1
    finally:
        old.close()

    # broken files are refused and the key in use stays
    garbage = b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    refusals = [("broken key file", lambda: key.write_bytes(garbage)),
                ("empty certificate", lambda: (install(*two, crt, key), crt.write_bytes(b""))),
                ("RSA-1024 pair", lambda: install(*weak, crt, key)),
                ("key of another certificate", lambda: (install(*two, crt, key),
                                                        key.write_bytes(one[1].read_bytes())))]
    for n, (what, spoil) in enumerate(refusals, 1):
        spoil()
        srv.hup()
        assert srv.log().count(KEPT) == n, "%s: no refusal logged\n%s" % (what, srv.log_tail())
        with tls_connect(srv.tls_port) as s:
            assert fp_of_sock(s) == fp2, "%s: the key changed" % what
        vault_works_over_tls(srv, two[0])
    assert "too weak" in srv.log()

    # and a good pair after the refusals is taken
    install(*one, crt, key)
    srv.hup()
    assert srv.log().count(KEPT) == len(refusals)
    with tls_connect(srv.tls_port, client_ctx(cafile=one[0])) as s:
        assert fp_of_sock(s) == fp1


def test_rotation_under_traffic_fails_no_session_and_no_upload(start_server, tmp_path):
    """The certificate rotated six times by SIGHUP while four clients open
    TLS sessions back to back (each proves its key, asks 1104, closes; at
    least four between reloads) and an upload is half sent before the first
    reload and finished after the last: no session fails, each sees one of
    the two keys, both keys are seen, and the upload is stored whole."""
    op = tmp_path / "op"
    one, two = make_pair(op, "one"), make_pair(op, "two")
    fps = {fp_of_pem_file(one[0]), fp_of_pem_file(two[0])}
    crt, key = op / "server.crt", op / "server.key"
    install(*one, crt, key)
    # full handshakes back to back from one address: past the default
    # budget a second, which is not what this test is about
    srv = start_tls(start_server, "--tls-cert", crt, "--tls-key", key,
                    "--tls-handshakes-per-addr", "0", "--tls-handshakes", "0")
    stop = threading.Event()
    seen, errors, done = set(), [], []
    ctxs = [tlsutil.client_ctx(key=rsa_key(30 + i)) for i in range(4)]

    def sessions(i):
        try:
            while not stop.is_set():
                with tlsutil.tls_connect(H, srv.tls_port, ctxs[i]) as c:
                    seen.add(fp_of_sock(c))
                    c.sendall(bw.pack_request(bw.ZERO_ID, bw.LIMITS, b""))
                    r = bw.read_response(c)
                    assert r.code == bw.LIMITS_REPLY, r
                done.append(i)
        except Exception as e:  # reported below
            errors.append(repr(e))

    up = TlsVaultClient(H, srv.tls_port, key=rsa_key(35)).connect()
    bw.expect(up.register(unique_name("rot")), bw.REGISTERED, "register")
    bw.expect(up.send_pubkey(), bw.KEY_STORED, "key")
    data = os.urandom(4 * 1024 * 1024)

    half, started, reloaded = len(data) // 2, threading.Event(), threading.Event()

    def across():
        """Half the file before the first reload, the rest after the last:
        the upload spans every reload, whatever their pace."""
        yield data[:half]
        started.set()
        reloaded.wait(60)
        yield data[half:]
    result = []
    uploader = threading.Thread(target=lambda: result.append(
        up.send_file("rot.bin", chunks=across(), size=len(data))))
    workers = [threading.Thread(target=sessions, args=(i,)) for i in range(4)]
    for t in workers + [uploader]:
        t.start()
    try:
        assert started.wait(30), "the upload did not start"
        for n in range(6):
            # each reload after more sessions: they meet every key
            want = len(done) + 4
            assert bwd.wait_for(lambda: len(done) >= want or errors, 30), len(done)
            install(*(two if n % 2 == 0 else one), crt, key)
            srv.hup()
    finally:
        reloaded.set()
        uploader.join(60)
        stop.set()
        for t in workers:
            t.join(30)
    assert not errors, errors
    assert seen == fps, (seen, fps)
    assert result, "the upload did not finish"
    bw.expect(result[0].response, bw.FILE_RECEIVED, "upload across the reloads")
    assert result[0].server_crc == result[0].crc
    bw.expect(up.crc_ok("rot.bin"), bw.ACK, "verdict")
    up.close()
    assert (srv.client_dir(up.client_id) / "rot.bin").read_bytes() == data
    assert KEPT not in srv.log() and srv.alive()


# --------------------------------------------------------------------------
# 5. Garbage


GARBAGE = {
    "http": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "plain-vault-register": bw.pack_request(bw.ZERO_ID, bw.REGISTER, bw.name_field("plain")),
    "plain-messenger-list": bwmsg.pack_request(bytes(16), bwmsg.LIST),
    "text-lines": b"garbage\n" * 16,
    # a handshake record whose ClientHello is one byte long
    "broken-client-hello": b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",
}


def _alert_or_nothing(got):
    """What a TLS server may send before it closes on garbage: nothing, or
    an alert record; never the plain protocol's answer."""
    return got == b"" or (got[:1] == b"\x15" and got[1:2] == b"\x03")


@pytest.mark.parametrize("what", sorted(GARBAGE))
def test_garbage_on_the_tls_port_is_closed_and_others_still_served(start_server, what):
    srv = start_tls(start_server)
    before = TlsVaultClient(H, srv.tls_port, key=rsa_key(5)).connect()
    try:
        bw.expect(before.register(unique_name("before")), bw.REGISTERED, "register")
        with socket.create_connection((H, srv.tls_port), timeout=10) as g:
            peer = "peer %s:%d" % g.getsockname()
            g.sendall(GARBAGE[what])
            got = closed_within(g)
        assert _alert_or_nothing(got), "answered %r" % got[:100]
        # a clear line: what failed, and who
        assert bwd.wait_for(lambda: any("TLS handshake unfinished, %s)" % peer in ln
                                        for ln in srv.log().splitlines()), 5), srv.log_tail()
        # the session opened before, and new ones, go on
        bw.expect(before.send_pubkey(), bw.KEY_STORED, "key after the garbage")
    finally:
        before.close()
    vault_works_over_tls(srv)
    assert srv.alive()


@pytest.mark.parametrize("sent", ["nothing", "half-a-hello"])
def test_a_stalled_handshake_is_closed_at_its_deadline_and_logged(start_server, sent):
    """A peer that connects to the TLS port and stalls (sends nothing, or
    half a ClientHello) is closed when the connection's deadline (--timeout
    2) passes, with a line naming its address; others are served while it
    waits."""
    srv = start_tls(start_server, "--timeout", "2")
    hello = client_hello()
    with socket.create_connection((H, srv.tls_port), timeout=10) as g:
        peer = "peer %s:%d" % g.getsockname()
        if sent == "half-a-hello":
            g.sendall(hello[:len(hello) // 2])
        vault_works_over_tls(srv)  # served meanwhile
        got = closed_within(g, timeout=15)
    assert _alert_or_nothing(got), "answered %r" % got[:100]
    line = "closed: timeout (TLS handshake unfinished, %s)" % peer
    assert bwd.wait_for(lambda: line in srv.log(), 5), srv.log_tail()
    assert srv.alive()


@pytest.mark.parametrize("what", ["menu-choice", "http"])
def test_plain_bytes_on_the_rooms_tls_port_are_closed(start_server, what):
    srv = start_tls(start_server, tls=False, rooms_tls=True, rooms=True)
    with socket.create_connection((H, srv.rooms_tls_port), timeout=10) as g:
        # a plain client's menu answers: at least a TLS record header's 5
        # bytes (fewer leave the server waiting for the rest of one)
        g.sendall(b"2\nalice\n" if what == "menu-choice" else GARBAGE["http"])
        got = closed_within(g)
    assert _alert_or_nothing(got), "answered %r" % got[:100]
    with TlsRoomClient(srv.rooms_tls_port) as r:
        assert r.seen.decode() == R.MENU
    assert srv.alive()


def test_a_client_hello_on_the_plain_port_is_answered_as_garbage(start_server):
    srv = start_tls(start_server, rooms_tls=True, rooms=True)
    hello = bytearray(client_hello())
    # bytes 16..22 of the record (the random's 6th to 12th) fall on the
    # plain header's version, code and payload size: fixed here, so that the
    # answer does not hang on chance (a known code with a large size would
    # wait for its payload); the hello stays a well-formed ClientHello
    hello[16:23] = b"\x03\xee\xee\x00\x00\x00\x00"
    with socket.create_connection((H, srv.port), timeout=10) as s:
        s.sendall(bytes(hello))
        s.settimeout(10)
        try:
            head = bw.recv_exact(s, bw.RESP_HEADER_SIZE)
        except ConnectionResetError:
            head = b""
    if head:
        assert len(head) == bw.RESP_HEADER_SIZE, head
        _, code, _ = bw.RESP_HEADER.unpack(head)
        assert code in (bw.ERROR, bwmsg.ERROR), "answered %d" % code
    # a real handshake against the plain port fails (no hang, no TLS)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_connect(srv.port, timeout=20).close()
    # the plain rooms port takes a ClientHello as a menu answer, and goes on
    with R.RoomClient(srv.rooms_port) as r:
        r.send(client_hello())
        r.pump_until(lambda: len(r.seen) > len(R.MENU), 5)
    srv.assert_serves()
    with R.RoomClient(srv.rooms_port) as r:
        assert r.seen.decode() == R.MENU
    vault_works_over_tls(srv)


# --------------------------------------------------------------------------
# testssl.sh against both TLS ports


def make_ca_signed(directory):
    """A test CA and, signed by it for 127.0.0.1 and localhost, a server
    certificate as a public CA issues one (90 days, a CRL and an OCSP
    address). Returns (ca, cert, key)."""
    ca = tlsutil.make_root(directory, "ca", "Bulwark Test CA")
    crt, key = tlsutil.issue(directory, "srv", "localhost", ca, tlsutil.SERVER_EXT
                             + "crlDistributionPoints=URI:http://127.0.0.1:9/ca.crl\n"
                             "authorityInfoAccess=OCSP;URI:http://127.0.0.1:9/ocsp\n", days=90)
    return ca[0], crt, key


# (with the parallel tests, begun first, rather than alone after them: it
# held the serial section 50 s; and under ASan its hellos, odd ones among
# them, now go through the daemon's handshake code too)
@pytest.mark.long
def test_testssl_finds_nothing_above_low_on_either_tls_port(start_server, tmp_path):
    """testssl.sh (Debian's) on the vault's and the rooms' TLS ports, with
    a certificate from a CA it is told to trust: every finding about the
    protocols, ciphers, known attacks and the server's defaults is LOW at
    most. (With the self-signed default, testssl can only report that it
    cannot build a chain of trust: clients pin that key instead.)"""
    testssl = shutil.which("testssl") or shutil.which("testssl.sh")
    if testssl is None:
        if os.environ.get("BULWARK_REQUIRE_BINARIES"):
            pytest.fail("testssl.sh is not installed (scripts/deps test)")
        pytest.skip("testssl.sh is not installed")
    ca, crt, key = make_ca_signed(tmp_path / "ca")
    srv = start_tls(start_server, "--tls-cert", crt, "--tls-key", key, rooms_tls=True,
                    rooms=True)
    runs = {}
    for name, port in (("vault", srv.tls_port), ("rooms", srv.rooms_tls_port)):
        out = tmp_path / ("testssl-%s.json" % name)
        runs[name] = (out, subprocess.Popen(
            [testssl, "--quiet", "--color", "0", "--warnings", "off", "--add-ca", str(ca),
             "--jsonfile-pretty", str(out), "127.0.0.1:%d" % port],
            stdout=open(tmp_path / ("testssl-%s.txt" % name), "wb"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=dict(os.environ, TERM="dumb")))
    problems = []
    for name, (out, proc) in runs.items():
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("testssl on the %s port did not finish in 300 s" % name)
        scan = json.loads(out.read_text())["scanResult"][0]
        found = [f for v in scan.values() if isinstance(v, list) for f in v
                 if isinstance(f, dict) and "severity" in f]
        assert len(found) > 50, "testssl reported too little on %s: %r" % (name, found)
        ids = {f["id"] for f in found}
        # it did look at what matters
        for need in ("TLS1_3", "TLS1_2", "cipherlist_NULL", "cert_chain_of_trust", "heartbleed"):
            assert need in ids, "testssl did not report %s on %s" % (need, name)
        problems += ["%s: %s %s: %s" % (name, f["severity"], f["id"], f.get("finding", ""))
                     for f in found if f["severity"] in ("MEDIUM", "HIGH", "CRITICAL")]
        tls12 = [f for f in found if f["id"] == "TLS1_2"][0]
        assert "not offered" in tls12["finding"], tls12
    assert not problems, "\n".join(problems)
    assert srv.alive()
