"""The daemon logs one line per event and never a key or file content."""

import base64
import os
import re

import bwvault as bw
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
    assert b"1025 register" in log and b"1028" in log and b"1029" in log
    line_re = re.compile(rb'^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z '
                         rb'level=(debug|info|warn|error) (conn=\d+ )?'
                         rb'msg="([^"\\]|\\.)*"( suppressed=\d+)?( node=[\w.-]+)?$')
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
