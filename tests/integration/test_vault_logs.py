"""The daemon logs one line per event and never a key or file content."""

import base64
import fcntl
import os
import re
import socket
import subprocess
import time

import pytest

import bwd
import bwvault as bw
import ports
from bwd import unique_name


def test_log_holds_events_but_no_key_or_content(start_server, client_dir):
    server = start_server("--log-level", "debug")
    marker = b"CONTENT-MARKER-%d-" % os.getpid()
    data = marker * 1000
    key = bw.RSA.generate(1024, e=17)
    with server.client(key=key) as c:
        bw.expect(c.register(unique_name("logs")), bw.REGISTERED)
        bw.expect(c.send_pubkey(), bw.KEY_STORED)
        first_aes = c.aes_key
        res = c.send_file("secret.txt", data)
        bw.expect(res.response, bw.FILE_RECEIVED)
        bw.expect(c.crc_ok("secret.txt"), bw.ACK)
        bw.expect(c.reconnect(), bw.RECONNECTED)
        second_aes = c.aes_key

    # the C client too: its private key must not reach the server's log
    d = client_dir()
    d.write_file("f.bin", data)
    d.write_transfer(server.port, unique_name("logs-c"), "f.bin")
    assert d.run().returncode == 0
    server.stop()

    log = server.log().encode()
    # events are there, one per line, key=value, with connection ids
    for event in (b"client_registered", b"key_sent", b"upload_started", b"upload_stored",
                  b"file_verified"):
        assert re.search(rb"event=%s conn=\d+ peer=127\.0\.0\.1:\d+ " % event, log), event
    line_re = re.compile(rb'^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z '
                         rb'level=(debug|info|warn|error) (?:(conn=\d+ )?'
                         rb'msg="([^"\\]|\\.)*"|event=[a-z_]+(?: [a-z_]+=(?:"(?:[^"\\]|\\.)*"'
                         rb'|[^\s"=\\]+))*)( suppressed=\d+)?( node=[\w.-]+)?$')
    with_conn = 0
    for line in log.splitlines():
        if line.startswith(b"bwfault"):
            continue
        assert line_re.match(line), line
        if b" conn=" in line:
            with_conn += 1
        elif b"level=info" in line or b"level=debug" in line:
            assert any(w in line for w in (b"listening", b"loaded", b"starting", b"signal",
                                           b"stopped", b"shutting", b"reconcile",
                                           b"store: ", b"s3: ")), line
    assert with_conn >= 5
    # nothing secret, in any encoding we could have printed it in
    _, _, c_key = d.me_info()
    secrets = [first_aes, second_aes, key.export_key("DER"),
               key.export_key("DER", pkcs=8), c_key.export_key("DER", pkcs=8)]
    for s in secrets:
        for form in (s.hex().encode(), s.hex().upper().encode(), base64.b64encode(s)):
            assert form[:40] not in log
    assert marker not in log


@pytest.mark.parametrize("how", ["pipe", "socket"])
def test_a_log_reader_that_stops_reading_holds_up_no_one(tmp_path, how):
    """journald (a stream socket) or a pipe stops reading: the daemon's
    lines find no room. The loop must not wait for them: 100 clients
    register meanwhile (10 s timeouts each), their lines are dropped, and
    the first line read afterwards says how many went."""
    port = ports.reserve()
    if how == "pipe":
        r, w = os.pipe()
        fcntl.fcntl(w, 1031, 4096)  # F_SETPIPE_SZ: one page
    else:
        ours, theirs = socket.socketpair()
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        r, w = ours.fileno(), theirs.fileno()
    data = tmp_path / "d"
    data.mkdir()
    proc = subprocess.Popen([str(bwd.BULWARKD), "--data-dir", str(data), "--listen", "127.0.0.1",
                             "--port", str(port), "--no-console", "--no-rooms"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=w)
    if how == "pipe":
        os.close(w)
    else:
        theirs.close()
    try:
        assert bwd.wait_for(lambda: _accepts(port), 10), "bulwarkd did not start"
        for i in range(100):
            c = bw.VaultClient("127.0.0.1", port, timeout=10)
            try:
                c.connect()
                bw.expect(c.register(unique_name("quiet")), bw.REGISTERED, "register")
            except socket.timeout:
                pytest.fail("the %dth 1025 waited 10 s while the log's reader read nothing: "
                            "the loop waits for its log" % (i + 1))
            finally:
                c.close()
        assert proc.poll() is None
        os.set_blocking(r, False)
        seen = b""
        deadline = time.monotonic() + 10
        while b"log_dropped=" not in seen and time.monotonic() < deadline:
            try:
                chunk = os.read(r, 65536)
            except BlockingIOError:
                chunk = b""
            seen += chunk
            if not chunk:  # room again: a line that says what went
                c = bw.VaultClient("127.0.0.1", port, timeout=10)
                c.connect()
                bw.expect(c.register(unique_name("heard")), bw.REGISTERED, "register")
                c.close()
                time.sleep(0.05)
        assert re.search(rb"log_dropped=[1-9]", seen), seen[-2000:]
        assert all(line.startswith(b"ts=") for line in seen.split(b"\n")[1:-1] if line), \
            "a line was cut and the next ran on in it"
    finally:
        proc.kill()
        proc.wait(10)
        if how == "pipe":
            os.close(r)
        else:
            ours.close()
        ports.release(port)


def _accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
