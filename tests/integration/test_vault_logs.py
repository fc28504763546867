"""The daemon logs one line per event and never a key or file content."""

import base64
import os

import bwvault as bw
from vaultenv import unique_name


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
    # events are there, one per line, with connection ids
    assert b"1025 register" in log and b"1028" in log and b"1029" in log
    for line in log.splitlines():
        if b" info " in line or b" debug " in line:
            assert b" c" in line or b"listening" in line or b"loaded" in line \
                or b"starting" in line or b"signal" in line or b"stopped" in line, line
    # nothing secret, in any encoding we could have printed it in
    _, _, c_key = d.me_info()
    secrets = [first_aes, second_aes, key.export_key("DER"),
               key.export_key("DER", pkcs=8), c_key.export_key("DER", pkcs=8)]
    for s in secrets:
        for form in (s.hex().encode(), s.hex().upper().encode(), base64.b64encode(s)):
            assert form[:40] not in log
    assert marker not in log
