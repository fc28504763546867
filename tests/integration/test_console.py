"""The operator console (spec/console.md, docs/console.md) against the real
bulwarkd, through an independent Python client that checks the framing byte
for byte, and the `bulwark console` client driven through a pipe."""

import datetime
import os
import re
import socket
import struct
import subprocess
import time

import pytest

import bwd
import bwvault as bw

GREETING_LEN = 48
TEXT_MAX = 9999
REQUESTS = ("TIME", "NAME", "RAND", "STAT", "USRS", "FILS", "EXIT")
LEFT_OUT_RE = re.compile(r"^(\d+) more (clients|files) left out\b")


# --------------------------------------------------------------------------
# bulwarkd with its console on an ephemeral port


@pytest.fixture
def start_console_server(start_server):
    """Factory: start_console_server(*extra_args) -> conftest's start_server
    daemon with the vault and the console on ephemeral ports (and the group
    chat off)."""
    def start(*extra_args):
        return start_server(*extra_args, console=True)

    return start


@pytest.fixture
def csrv(start_console_server):
    return start_console_server()


def open_console(srv, timeout=5.0):
    """A Console connected to srv's console port."""
    return Console(srv.console_port, timeout=timeout)


# --------------------------------------------------------------------------
# An independent client of spec/console.md


class Console:
    def __init__(self, port, host="127.0.0.1", timeout=5.0, source=None):
        self.sock = socket.create_connection(
            (host, port), timeout=timeout,
            source_address=(source, 0) if source is not None else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        return bw.recv_exact(self.sock, n)

    def hello(self, secret=None):
        self.send(b"Hi" if secret is None else b"Hi " + secret)
        return self.read_greeting()

    def read_greeting(self):
        g = self.recv_exact(GREETING_LEN)
        assert len(g) == GREETING_LEN, "greeting of %d bytes: %r" % (len(g), g)
        return g

    def read_reply(self):
        head = self.recv_exact(4)
        assert len(head) == 4, "connection closed inside a length: %r" % head
        assert re.fullmatch(rb"[0-9]{4}", head), "length is not 4 ASCII digits: %r" % head
        n = int(head)
        assert n <= TEXT_MAX
        body = self.recv_exact(n)
        assert len(body) == n, "announced %d bytes, got %d" % (n, len(body))
        return body.decode("utf-8")  # strict: replies are UTF-8

    def ask(self, req):
        if isinstance(req, str):
            req = req.encode()
        assert len(req) == 4
        self.send(req)
        return self.read_reply()

    def closed(self, timeout=5.0):
        """True if the server closes (EOF or reset) within timeout without
        sending anything; raises if it sends bytes."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        if data:
            raise AssertionError("server sent %r where a close was expected" % data)
        return True


def stat_fields(text):
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        fields[key] = value
    return fields


def connections(stat):
    """{"shared": 0, "console": 1} from a STAT reply."""
    out = {}
    for part in stat_fields(stat)["connections"].split(","):
        name, n = part.split()
        out[name] = int(n)
    return out


def list_rows(text):
    """Rows of a USRS/FILS reply without the header and 'left out' line."""
    lines = text.splitlines()
    assert lines, "empty list reply"
    return [ln.split("\t") for ln in lines[1:] if not LEFT_OUT_RE.match(ln)]


def upload(srv, name, files, key_index=0):
    """Registers name and stores {file_name: bytes}; returns the client."""
    with srv.client(key=bwd.rsa_key(key_index)) as c:
        bw.expect(c.register(name), bw.REGISTERED)
        bw.expect(c.send_pubkey(), bw.KEY_STORED)
        for fname, data in files.items():
            res = c.send_file(fname, data)
            bw.expect(res.response, bw.FILE_RECEIVED)
            bw.expect(c.crc_ok(fname), bw.ACK)
    return c


# --------------------------------------------------------------------------
# Greeting and every request


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_greeting_is_exactly_48_bytes_and_lists_every_request(csrv):
    with open_console(csrv) as c:
        g = c.hello()
        assert len(g) == 48
        text = g.decode("ascii")
        assert text == text.rstrip(" ").ljust(48)
        assert text.split(":")[0].startswith("bulwarkd")
        assert text.split()[2:] == list(REQUESTS)


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_time_is_iso8601_with_zone_and_now(csrv):
    with open_console(csrv) as c:
        c.hello()
        t = c.ask("TIME")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", t), t
    when = datetime.datetime.fromisoformat(t)
    assert when.tzinfo is not None
    assert abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) < 5


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_name_is_server_name_and_version(csrv):
    with open_console(csrv) as c:
        c.hello()
        assert re.fullmatch(r"bulwarkd \d+\.\d+\.\d+", c.ask("NAME"))


def test_a_node_name_is_in_name_stat_every_log_line_and_metric(start_console_server):
    """--node-name: NAME says which node answers, STAT ends with it, every
    log line ends with node=NAME and every sample at /metrics carries it.
    Without it, NAME answers as one daemon always has and the host name
    marks the rest."""
    import socket as sk
    import urllib.request

    srv = start_console_server("--node-name", "n-7.b_c", "--metrics-listen", "127.0.0.1:0")
    with open_console(srv) as c:
        c.hello()
        assert c.ask("NAME") == "bulwarkd 0.1.0 (node n-7.b_c)"
        assert c.ask("STAT").endswith("\nnode: n-7.b_c\n")
    lines = srv.log().splitlines()
    assert lines and all(ln.endswith(" node=n-7.b_c") for ln in lines), lines[:5]
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % srv.ports["metrics"],
                                timeout=10) as r:
        samples = [ln for ln in r.read().decode().splitlines() if ln and ln[0] != "#"]
    assert len(samples) > 20
    assert all('{node="n-7.b_c"' in ln for ln in samples), \
        [ln for ln in samples if 'node="n-7.b_c"' not in ln][:5]
    srv.stop()
    host = start_console_server()
    with open_console(host) as c:
        c.hello()
        assert re.fullmatch(r"bulwarkd \d+\.\d+\.\d+", c.ask("NAME"))
        assert "\nnode: " in c.ask("STAT")
    assert all(ln.split(" node=")[-1] == "".join(
        ch if ch.isalnum() or ch in "._" else "-" for ch in sk.gethostname())
        for ln in host.log().splitlines())


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
@pytest.mark.parametrize("bad", ["two words", "a=b", "x\"y", "n" * 64])
def test_a_node_name_that_is_not_a_word_is_refused(start_server, bad):
    srv = start_server("--node-name", bad, wait=False)
    rc, out = srv.wait_exit(10)
    assert rc == 2 and out.startswith("bulwarkd: --node-name "), out


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_rand_is_an_integer_from_1_to_10(csrv):
    seen = set()
    with open_console(csrv) as c:
        c.hello()
        for _ in range(300):
            r = c.ask("RAND")
            assert re.fullmatch(r"[0-9]+", r), r
            assert 1 <= int(r) <= 10
            seen.add(int(r))
    assert seen == set(range(1, 11))  # 300 draws miss a value with p < 1e-12


def test_stat_reports_the_live_daemon(csrv):
    with open_console(csrv) as c:
        c.hello()
        s = c.ask("STAT")
    f = stat_fields(s)
    assert re.match(r"\d+d \d\dh \d\dm \d\ds \(\d+ s, since ", f["uptime"])
    assert connections(s) == {"shared": 0, "console": 1}
    assert f["clients"] == "0" and f["files"] == "0" and f["bytes stored"] == "0"
    assert f["uploads in progress"] == "0"
    assert f["bytes received by uploads in progress"] == "0"


def test_empty_lists_say_so(csrv):
    with open_console(csrv) as c:
        c.hello()
        assert c.ask("USRS") == "no clients\n"
        assert c.ask("FILS") == "no files\n"


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_exit_says_bye_then_closes(csrv):
    with open_console(csrv) as c:
        c.hello()
        assert c.ask("EXIT") == "bye"
        assert c.closed()
    with open_console(csrv) as c:  # and the server keeps serving
        c.hello()
        assert c.ask("NAME").startswith("bulwarkd")


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_pipelined_requests_in_one_write_are_framed_exactly(csrv):
    with open_console(csrv) as c:
        c.send(b"HiTIMENAMERANDSTATUSRSFILSEXIT")
        stream = bw.recv_until_eof(c.sock)
    assert len(stream) >= GREETING_LEN
    pos = GREETING_LEN
    replies = []
    while pos < len(stream):
        n = int(stream[pos:pos + 4].decode("ascii"))
        replies.append(stream[pos + 4:pos + 4 + n].decode("utf-8"))
        pos += 4 + n
    assert pos == len(stream), "trailing bytes after the last reply"
    assert len(replies) == 7 and replies[-1] == "bye"


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_requests_sent_one_byte_at_a_time(csrv):
    with open_console(csrv) as c:
        for b in b"Hi":
            c.send(bytes([b]))
            bwd.wait_for(lambda: bwd.read_by_peer(c.sock), 5, 0.001)  # a read per byte
        c.read_greeting()
        for b in b"NAME":
            c.send(bytes([b]))
            bwd.wait_for(lambda: bwd.read_by_peer(c.sock), 5, 0.001)
        assert c.read_reply().startswith("bulwarkd")


# --------------------------------------------------------------------------
# Figures change with the registry and with uploads in flight


def test_stat_usrs_fils_change_after_an_upload(csrv):
    name = bwd.unique_name("alice")
    data = os.urandom(3000)
    with open_console(csrv) as c:
        c.hello()
        before = stat_fields(c.ask("STAT"))
        cl = upload(csrv, name, {"notes.txt": data})
        s = c.ask("STAT")
        users = c.ask("USRS")
        files = c.ask("FILS")
    after = stat_fields(s)
    assert (before["clients"], before["files"]) == ("0", "0")
    assert (after["clients"], after["files"]) == ("1", "1")
    assert after["bytes stored"] == "3000"
    rows = list_rows(users)
    assert users.splitlines()[0] == "name\tid\tlast seen\tqueued\tqueued bytes\tplain"
    assert len(rows) == 1
    uname, uid, seen, queued, queued_bytes, plain = rows[0]
    assert plain == "served"
    assert (queued, queued_bytes) == ("0", "0")
    assert uname == name and uid == bytes(cl.client_id).hex()
    assert datetime.datetime.fromisoformat(seen).tzinfo is not None
    assert files.splitlines()[0] == "owner\tfile\tsize\tverified"
    assert list_rows(files) == [[name, "notes.txt", "3000", "yes"]]


def test_unverified_file_shows_no(csrv):
    name = bwd.unique_name("bob")
    with csrv.client(key=bwd.rsa_key(1)) as v:
        bw.expect(v.register(name), bw.REGISTERED)
        bw.expect(v.send_pubkey(), bw.KEY_STORED)
        bw.expect(v.send_file("draft.bin", b"x" * 100).response, bw.FILE_RECEIVED)
    with open_console(csrv) as c:
        c.hello()
        assert list_rows(c.ask("FILS")) == [[name, "draft.bin", "100", "no"]]


def test_stat_shows_an_upload_in_progress(csrv):
    total = 4 << 20
    sent_plain = 1 << 20
    with csrv.client(key=bwd.rsa_key(2)) as v:
        bw.expect(v.register(bwd.unique_name("slow")), bw.REGISTERED)
        bw.expect(v.send_pubkey(), bw.KEY_STORED)
        content = bw.encrypted_size(total)
        v.send_raw(bw.pack_request_header(v.client_id, bw.SEND_FILE, bw.FILE_PREFIX_SIZE + content)
                   + bw.U32.pack(content) + bw.name_field("big.bin"))
        v.send_raw(bw.aes_encrypt_raw(v.aes_key, os.urandom(sent_plain)))  # first blocks only
        with open_console(csrv) as c:
            c.hello()

            def in_progress():
                f = stat_fields(c.ask("STAT"))
                n = int(f["uploads in progress"])
                got = int(f["bytes received by uploads in progress"])
                return n == 1 and got > 0 and got

            got = bwd.wait_for(in_progress, timeout=5)
            assert got, c.ask("STAT")
            assert 0 < got <= sent_plain
            assert connections(c.ask("STAT")) == {"shared": 1, "console": 1}
        # the body stops: the client goes away mid-upload
    with open_console(csrv) as c:
        c.hello()
        assert bwd.wait_for(lambda: stat_fields(c.ask("STAT"))["uploads in progress"]
                            == "0", timeout=5)
        assert stat_fields(c.ask("STAT"))["files"] == "0"


# --------------------------------------------------------------------------
# Hostile and careless clients


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
@pytest.mark.parametrize("first", [b"TIME", b"hi", b"HI", b"\x00\x00", b"GET / HTTP/1.0\r\n\r\n"])
def test_no_hi_first_is_disconnected_without_a_reply(csrv, first):
    with open_console(csrv) as c:
        c.send(first)
        assert c.closed(timeout=3)
    with open_console(csrv) as c:
        c.hello()


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_silence_before_hi_is_disconnected_after_the_deadline(start_console_server):
    srv = start_console_server("--request-timeout", "1")
    with open_console(srv) as c:
        t0 = time.monotonic()
        assert c.closed(timeout=5)
        assert time.monotonic() - t0 < 4


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_half_a_request_then_silence_is_disconnected(start_console_server):
    srv = start_console_server("--request-timeout", "1")
    with open_console(srv) as c:
        c.hello()
        assert c.ask("TIME")
        time.sleep(1.5)  # idle past --request-timeout between requests is fine (no deadline runs)
        assert c.ask("NAME").startswith("bulwarkd")
        c.send(b"ST")
        t0 = time.monotonic()
        assert c.closed(timeout=5)
        assert time.monotonic() - t0 < 4
    assert "request deadline passed" in srv.log()
    with open_console(srv) as c:
        c.hello()
        assert c.ask("NAME")


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_a_greeted_console_may_stay_idle_longer_than_timeout(start_console_server):
    srv = start_console_server("--timeout", "1", "--request-timeout", "1")
    with open_console(srv) as idle, open_console(srv) as silent:
        idle.hello()
        time.sleep(2.5)  # past --timeout, within the console's idle allowance
        assert silent.closed(timeout=5)  # never said Hi: cut long ago
        assert idle.ask("NAME").startswith("bulwarkd")


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_lower_case_request_gets_err_with_a_hint(csrv):
    with open_console(csrv) as c:
        c.hello()
        r = c.ask("time")
        assert r.startswith("ERR") and "TIME" in r
        assert c.ask("Stat").startswith("ERR")
        assert re.fullmatch(r"\d{4}-.*", c.ask("TIME"))  # still usable


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
@pytest.mark.parametrize("req", [b"ABCD", b"TIM ", b"    ", b"\x00\xff\r\n", b"\xc3\xa9\xc3\xa9"])
def test_unknown_request_gets_err_and_the_connection_stays(csrv, req):
    with open_console(csrv) as c:
        c.hello()
        r = c.ask(req)
        assert r.startswith("ERR unknown request"), r
        assert r.isprintable()
        assert c.ask("NAME").startswith("bulwarkd")


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_peer_closing_after_a_request_still_gets_the_reply(csrv):
    with open_console(csrv) as c:
        c.send(b"HiNAME")
        c.sock.shutdown(socket.SHUT_WR)
        c.read_greeting()
        assert c.read_reply().startswith("bulwarkd")
        assert c.closed()


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_a_client_that_never_reads_does_not_grow_the_server(csrv):
    """Thousands of pipelined requests whose replies are never read: the
    server stops answering when its output backs up, and stays usable."""
    with open_console(csrv) as hog:
        hog.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.send(b"Hi")
        hog.sock.settimeout(0.5)
        try:
            for _ in range(2000):
                hog.sock.sendall(b"STAT" * 64)
        except (socket.timeout, BlockingIOError, ConnectionError):
            pass
        with open_console(csrv) as c:
            c.hello()
            assert connections(c.ask("STAT"))["console"] == 2


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_hundred_consoles_at_once(csrv):
    consoles = [open_console(csrv, timeout=10) for _ in range(100)]
    try:
        for c in consoles:
            c.send(b"Hi")
        for c in consoles:
            assert c.read_greeting().startswith(b"bulwarkd")
        for c in consoles:
            c.send(b"STAT")
        for c in consoles:
            assert connections(c.read_reply())["console"] == 100
        for c in consoles:
            c.send(b"RANDEXIT")
        for c in consoles:
            assert 1 <= int(c.read_reply()) <= 10
            assert c.read_reply() == "bye"
    finally:
        for c in consoles:
            c.close()


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_a_console_past_the_cap_of_128_takes_the_place_of_the_oldest_unproven(csrv):
    """128 consoles that greeted and asked nothing hold every slot: a new
    one is admitted, and the oldest of them (none has proven itself with a
    complete request) is closed for it, so the operator always gets in."""
    consoles = [open_console(csrv, timeout=10) for _ in range(128)]
    try:
        for c in consoles:
            c.hello()
        with open_console(csrv) as c:
            assert c.hello().startswith(b"bulwarkd")
            assert c.ask("NAME").startswith("bulwarkd")
        assert consoles[0].closed(timeout=5)
        assert "closed to admit a new connection" in csrv.log()
        assert not consoles[-1].closed(timeout=0.2)
        assert bwd.wait_for(lambda: connections(consoles[-1].ask("STAT"))["console"] == 127)
    finally:
        for c in consoles:
            c.close()


# --------------------------------------------------------------------------
# The secret


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_secret_off_loopback(start_console_server):
    srv = start_console_server("--console-listen", "0.0.0.0", "--console-secret", "s3cret",
                               "--request-timeout", "1")
    assert srv.addrs["console"] == "0.0.0.0"
    with open_console(srv) as c:
        assert c.hello(b"s3cret").startswith(b"bulwarkd")
        assert c.ask("NAME").startswith("bulwarkd")
    for wrong in (b"Hi wrong!", b"Hi s3creT", b"Hi s3cret"[:-1] + b"\x00", b"Hi  s3cre", b"Hx s3cret"):
        with open_console(srv) as c:
            c.send(wrong)
            assert c.closed(timeout=3), wrong
    with open_console(srv) as c:  # plain Hi: never completes, cut at the deadline
        c.send(b"Hi")
        assert c.closed(timeout=5)
    log = srv.log()
    assert "reason=wrong_secret" in log
    assert "s3cre" not in log  # never logged


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_secret_is_required_on_loopback_when_configured(start_console_server):
    srv = start_console_server("--console-secret", "top", "--request-timeout", "1")
    with open_console(srv) as c:
        c.send(b"Hi")
        assert c.closed(timeout=5)
    with open_console(srv) as c:
        c.send(b"HiTIME")  # "Hi" + 4 bytes: "TIME" is not " top"
        assert c.closed(timeout=3)
    with open_console(srv) as c:
        c.hello(b"top")
        assert c.ask("EXIT") == "bye"


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_wrong_secrets_from_one_address_delay_its_next_verdicts(start_console_server):
    """Guessing the secret: after three wrong secrets from an address,
    every verdict on a secret from it waits (0.25 s, then doubled each
    time), the right secret's too, so that a guess learns nothing sooner.
    Another address is still judged at once and gets in. A guess used to
    be answered at once, as fast as connections could be opened."""
    srv = start_console_server("--console-secret", "s3cret")
    port = srv.console_port
    src = "127.0.0.93"

    def wrong(secret, source=src):
        with Console(port, source=source, timeout=10) as c:
            t0 = time.monotonic()
            c.send(b"Hi " + secret)
            assert c.closed(timeout=10), secret
            return time.monotonic() - t0

    for guess in (b"secre1", b"secre2", b"secre3"):  # three free
        wrong(guess)
    waited = wrong(b"secre4")
    assert waited >= 0.9 * 0.25, "the fourth wrong secret was answered after %.3f s" % waited
    assert re.search(r"event=console_refused conn=\d+ peer=127\.0\.0\.93:\d+ "
                     r"reason=wrong_secret strikes=4 ", srv.log()), srv.log_tail()
    # one that resets while its verdict waits is let go (its timer too)
    c = Console(port, source=src)
    c.send(b"Hi secre5")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    # the right secret from that address waits too (0.5 s now), then gets in
    with Console(port, source=src, timeout=10) as c:
        t0 = time.monotonic()
        assert c.hello(b"s3cret").startswith(b"bulwarkd 3: ")
        waited = time.monotonic() - t0
        assert waited >= 0.9 * 0.5, "the right secret was answered after %.3f s" % waited
        assert c.ask("NAME").startswith("bulwarkd")
    # another address: its own count
    with Console(port, source="127.0.0.94") as c:
        assert c.hello(b"s3cret").startswith(b"bulwarkd 3: ")
        assert c.ask("EXIT") == "bye"
    assert srv.alive()


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_refuses_to_start_off_loopback_without_secret(start_server, tmp_path):
    srv = start_server("--console-listen", "0.0.0.0", console=True,
                       stdout=tmp_path / "stdout", wait=False)
    rc, err = srv.wait_exit(20)  # err: its standard error
    assert rc == 2
    assert "--console-secret" in err and "0.0.0.0" in err


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_no_console_turns_it_off(start_server):
    srv = start_server()  # passes --no-console
    assert "console listening" not in srv.log()
    srv.stop()


# --------------------------------------------------------------------------
# Long lists


def test_usrs_and_fils_are_cut_at_9999_bytes_with_a_left_out_line(csrv):
    n_clients = 150
    prefix = bwd.unique_name("u") + "-"
    with csrv.client() as v:
        for i in range(n_clients):
            name = (prefix + "%04d-" % i).ljust(230, "n")
            bw.expect(v.register(name), bw.REGISTERED)
    n_files = 60
    owner = bwd.unique_name("owner")
    files = {("f%03d-" % i).ljust(240, "x"): b"%d" % i for i in range(n_files)}
    upload(csrv, owner, files, key_index=3)
    with open_console(csrv) as c:
        c.hello()
        users = c.ask("USRS")
        fl = c.ask("FILS")
        s = stat_fields(c.ask("STAT"))
    for text, total, what in ((users, n_clients + 1, "clients"), (fl, n_files, "files")):
        assert len(text.encode()) <= TEXT_MAX
        assert len(text.encode()) > TEXT_MAX - 400, "a list that does not fit should fill the reply"
        last = text.splitlines()[-1]
        m = LEFT_OUT_RE.match(last)
        assert m and m.group(2) == what, last
        shown = len(list_rows(text))
        assert shown + int(m.group(1)) == total
    assert s["clients"] == str(n_clients + 1) and s["files"] == str(n_files)


def test_names_are_sent_as_valid_utf8(csrv):
    """Names are bytes 0x20-0xff on the vault side; the console replies in
    UTF-8, showing bytes that are not UTF-8 (and C1 or bidi controls) as
    \\xNN."""
    good = "zoë-" + bwd.unique_name()
    with csrv.client() as v:
        bw.expect(v.register(good.encode("utf-8")), bw.REGISTERED)
        resp = v.request(bw.REGISTER, bw.raw_field(b"bad-\xff\xfe-" + bwd.unique_name().encode()))
        bw.expect(resp, bw.REGISTERED)
    with open_console(csrv) as c:
        c.hello()
        names = {row[0] for row in list_rows(c.ask("USRS"))}
    assert good in names
    assert any(n.startswith("bad-\\xff\\xfe-") for n in names), names


# --------------------------------------------------------------------------
# The C client


def run_client(args, stdin, timeout=20, env_extra=None):
    e = dict(os.environ)
    e.pop("BULWARK_CONSOLE_SECRET", None)
    e.update(env_extra or {})
    return subprocess.run([str(bwd.BULWARK), "console"] + list(args), input=stdin,
                          capture_output=True, timeout=timeout, env=e)


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_c_client_through_a_pipe(csrv, client_bin):
    r = run_client(["127.0.0.1:%d" % csrv.console_port], b"time\nstat\n")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    lines = out.splitlines()
    assert lines[0] == "bulwarkd 3: TIME NAME RAND STAT USRS FILS EXIT"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", lines[1])
    assert lines[2].startswith("uptime: ")
    assert "connections: shared 0, console 1" in out
    assert lines[-1] == "bye"  # end of input sends EXIT


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_c_client_keeps_four_characters_pads_and_skips_blank_lines(csrv, client_bin):
    r = run_client(["127.0.0.1:%d" % csrv.console_port], b"names please\n\nab\nexit\ntime\n")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[1].startswith("bulwarkd ")  # "name" of "names please"
    assert lines[2] == ("ERR unknown request 'AB  '; try TIME NAME RAND STAT USRS FILS EXIT, "
                        "or HELP")
    assert lines[3] == "bye"
    assert len(lines) == 4  # nothing after EXIT


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_c_client_with_secret(start_console_server, client_bin):
    srv = start_console_server("--console-secret", "s3cret")
    addr = "127.0.0.1:%d" % srv.console_port
    r = run_client(["--secret", "s3cret", addr], b"name\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines()[1].startswith("bulwarkd")
    r = run_client([addr], b"name\n", env_extra={"BULWARK_CONSOLE_SECRET": "s3cret"})
    assert r.returncode == 0, r.stderr
    r = run_client(["--secret", "nope!!", addr], b"name\n")
    assert r.returncode == 1 and r.stderr.startswith(b"Fatal: ")


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_c_client_network_errors_are_fatal(client_bin):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    r = run_client(["127.0.0.1:%d" % port], b"time\n")
    assert r.returncode == 1
    assert r.stderr.startswith(b"Fatal: ")


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_c_client_usage(client_bin):
    r = run_client(["--help"], b"")
    assert r.returncode == 0 and b"Usage: bulwark console" in r.stdout
    r = run_client(["not-an-address"], b"")
    assert r.returncode == 2
    r = run_client(["--bogus"], b"")
    assert r.returncode == 2


@pytest.mark.stores_nothing("the console's own protocol: reads nothing stored")
def test_help_says_what_each_request_does_and_quit_is_exit(csrv, client_bin):
    """An operator at nc or telnet had nothing but the greeting to go by,
    and QUIT (what SMTP, FTP and POP3 users type) was an unknown request.
    HELP lists each request with what it does; QUIT is answered as EXIT,
    on the server and, sent as EXIT, by our client."""
    with open_console(csrv) as c:
        c.hello()
        text = c.ask("HELP")
        for req in ("TIME", "NAME", "RAND", "STAT", "USRS", "FILS", "HELP", "EXIT"):
            assert ("\n" + req + "  ") in "\n" + text, (req, text)
        assert "QUIT" in text
        assert c.ask("QUIT") == "bye"
        assert c.closed()  # as after EXIT
    r = run_client(["127.0.0.1:%d" % csrv.console_port], b"help\nquit\ntime\n")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert any(ln.startswith("TIME  ") for ln in lines), lines
    assert lines[-1] == "bye" and not any(re.match(r"\d{4}-", ln) for ln in lines), lines
