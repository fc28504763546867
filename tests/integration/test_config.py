"""bulwarkd's configuration file (--config PATH: `key = value`, keys the long
options), how it ranks against flags and the environment, SIGHUP (reload of
what may change, the log reopened), and the log's key=value lines, which
must never carry a secret. Against the real bulwarkd."""

import base64
import os
import re
import signal
import socket
import subprocess

import pytest

import bwd
import bwmsg
import bwrooms as R
import bwvault as bw
from bwd import rsa_key, unique_name

H = "127.0.0.1"
LOG_LINE_RE = re.compile(
    r'^ts=\S+ level=(debug|info|warn|error) (?:(conn=\d+ )?msg="(?:[^"\\]|\\.)*"'
    r'|event=[a-z_]+(?: [a-z_]+=(?:"(?:[^"\\]|\\.)*"|[^\s"=\\]+))*)'
    r'( suppressed=\d+)?( node=[\w.-]+)?$')


# --------------------------------------------------------------------------
# bulwarkd with a command line of the test's own (start_server's built one
# passes --port 0, --no-console and friends, which would win over any file;
# the files here name port 0 for every listener themselves)


@pytest.fixture
def daemon(start_server, tmp_path):
    """Factory: daemon(*args, env_extra=None, log_file=None, want=("vault",))
    -> conftest's start_server daemon run as `bulwarkd ARGS` in a working
    directory of its own; log_file: the --log-file among args. SIGTERM at
    teardown must give exit 0."""
    made = []

    def start(*args, env_extra=None, log_file=None, want=("vault",)):
        d = start_server(argv=args, cwd=tmp_path / ("d%d" % len(made)), env=env_extra,
                         log_file=log_file, want=want)
        made.append(d)
        return d

    return start


def session(d, size=2000):
    """A whole vault session with d: register, key, upload, CRC ok."""
    data = os.urandom(size)
    return bw.full_session(H, d.port, unique_name("probe"), data,
                           file_name="probe.bin", key=rsa_key(7))


def run(args, tmp_path, timeout=10, env_extra=None):
    """bulwarkd run to its exit (start-up errors)."""
    bwd.require_file(bwd.BULWARKD, "bulwarkd", "BULWARKD")
    e = None if env_extra is None else {**os.environ, **env_extra}
    try:
        return subprocess.run([str(bwd.BULWARKD)] + [str(a) for a in args], capture_output=True,
                              timeout=timeout, cwd=str(tmp_path), stdin=subprocess.DEVNULL, env=e)
    except subprocess.TimeoutExpired:
        raise AssertionError("bulwarkd %s did not exit within %ds" % (args, timeout))


def base_conf(data_dir, console=False, rooms=False):
    """The lines a test daemon needs: its data (made here), loopback,
    ephemeral ports."""
    os.makedirs(data_dir, exist_ok=True)
    lines = ["data-dir = %s" % data_dir, "listen = 127.0.0.1", "port = 0",
             "shutdown-grace = 2", "request-timeout = 2"]
    lines += (["console-listen = 127.0.0.1", "console-port = 0"] if console
              else ["no-console = yes"])
    lines += (["rooms-listen = 127.0.0.1", "rooms-port = 0"] if rooms
              else ["no-rooms = yes"])
    return "\n".join(lines) + "\n"


def write(path, text):
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def console_ok(port, secret):
    """True if `Hi <secret>` is greeted, False if the console closes."""
    with socket.create_connection((H, port), timeout=10) as s:
        s.sendall(b"Hi " + secret.encode() if secret else b"Hi")
        got = b""
        s.settimeout(10)
        try:
            while len(got) < 48:
                data = s.recv(48 - len(got))
                if not data:
                    break
                got += data
        except ConnectionResetError:
            pass
        if len(got) == 48:
            assert got.startswith(b"bulwarkd"), got
            return True
        assert got == b"", got
        return False


def wrong_ids_until_closed(port, source, tries):
    """Wrong room ids at the join prompt: the number of them after which
    the server said goodbye (None if it did not within tries)."""
    c = R.RoomClient(port, source=source)
    try:
        c.line("1", "tester")
        c.expect_seq([R.ASK_NAME, R.ASK_ID])
        for i in range(1, tries + 1):
            c.line("424242")
            ln = c.next_line(timeout=15)
            if ln == R.TOO_MANY:
                c.wait_closed(timeout=10)
                return i
            assert ln == R.NO_ID, ln
            assert c.next_line(timeout=15) == R.ASK_ID
        return None
    finally:
        c.close()


def register(port, name, source=None):
    """One 1025 on a fresh connection (from source): the reply code."""
    c = bw.VaultClient(H, port)
    c.sock = socket.socket()
    c.sock.settimeout(10)
    if source:
        c.sock.bind((source, 0))
    c.sock.connect((H, port))
    try:
        return c.register(name).code
    finally:
        c.close()


# --------------------------------------------------------------------------
# The parser's errors: each exits 2 with FILE:LINE: and the reason


GOOD_LINES = "# a comment\n\n  max-uploads = 3\r\nlog-level = info\n"  # lines 1-4

LINE_ERRORS = [
    ("unknown-key", "foo = 1", "unknown key 'foo'"),
    ("unknown-key-config", "config = /etc/other.conf", "unknown key 'config'"),
    ("unknown-key-help", "help = yes", "unknown key 'help'"),
    ("unknown-key-empty", "= 5", "unknown key ''"),
    ("unknown-key-case", "Max-Uploads = 3", "unknown key 'Max-Uploads'"),
    ("no-equals", "max-uploads 5", 'not "key = value"'),
    ("no-equals-bare-word", "no-console", 'not "key = value"'),
    ("bad-number", "max-uploads = five", "max-uploads needs a number from 1 to 100000, not 'five'"),
    ("bad-number-trailing", "max-uploads = 5x", "max-uploads needs a number from 1 to 100000, not '5x'"),
    ("bad-number-empty", "max-uploads =", "max-uploads needs a value"),
    ("bad-number-negative", "max-uploads = -1", "max-uploads needs a number from 1 to 100000, not '-1'"),
    ("bad-number-hex", "port = 0x50", "port needs a number from 0 to 65535, not '0x50'"),
    ("out-of-range-low", "max-uploads = 0", "max-uploads needs a number from 1 to 100000, not '0'"),
    ("out-of-range-high", "port = 65536", "port needs a number from 0 to 65535, not '65536'"),
    ("out-of-range-seconds", "timeout = 0", "timeout needs a number from 1 to 86400, not '0'"),
    ("out-of-range-workers", "workers = 17", "workers needs a number from 1 to 16, not '17'"),
    ("overflow", "max-clients = 99999999999999999999999",
     "max-clients needs a number from 1 to 4294967295, not '99999999999999999999999'"),
    ("bad-flag", "no-console = maybe", "no-console needs yes or no, not 'maybe'"),
    ("bad-flag-number", "no-rooms = 1", "no-rooms needs yes or no, not '1'"),
    ("bad-flag-empty", "no-rooms =", "no-rooms needs yes or no, not ''"),
    ("bad-level", "log-level = verbose",
     "log-level needs debug, info, warn or error, not 'verbose'"),
    ("bad-hostport", "metrics-listen = localhost",
     "metrics-listen needs PORT or ADDR:PORT (a numeric address), not 'localhost'"),
    ("named-host", "metrics-listen = localhost:9357",
     "metrics-listen needs PORT or ADDR:PORT (a numeric address), not 'localhost:9357'"),
    ("named-listen", "listen = localhost",
     "listen needs a numeric IPv4 or IPv6 address, not 'localhost'"),
    ("empty-dir", "data-dir =", "data-dir needs a value"),
    ("empty-listen", "rooms-listen =", "rooms-listen needs a value"),
    ("empty-secret", "console-secret =   ", "console-secret needs a value"),
    ("too-long-secret", "console-secret = " + "s" * 300, "console-secret is too long"),
    ("too-long-dir", "data-dir = /" + "d" * 5000, "data-dir is too long"),
    ("not-an-addr", "listen = " + "1" * 200, "listen needs a numeric IPv4 or IPv6 address"),
    ("too-long-log-file", "log-file = /" + "l" * 5000, "log-file is too long"),
]


@pytest.mark.parametrize("case,line,why", LINE_ERRORS, ids=[c[0] for c in LINE_ERRORS])
def test_a_bad_line_exits_2_with_file_line_and_reason(tmp_path, case, line, why):
    conf = write(tmp_path / "bulwarkd.conf", GOOD_LINES + line + "\nmax-uploads = 4\n")
    r = run(["--data-dir", tmp_path / "data", "--config", conf], tmp_path)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 2, (r.returncode, err)
    assert "%s:5: %s" % (conf, why) in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert r.stdout == b""
    assert not (tmp_path / "data" / "defensive.db").exists(), "started anyway"


def test_the_line_number_counts_comments_blank_and_crlf_lines(tmp_path):
    conf = write(tmp_path / "c.conf", "# 1\r\n\r\n   # 3\n\t\nmax-uploads = 2\r\n\r\nbogus\r\n")
    r = run(["--config", conf], tmp_path)
    assert r.returncode == 2
    assert ("%s:7: not \"key = value\"" % conf).encode() in r.stderr, r.stderr


def test_every_bad_line_is_reported_in_order(tmp_path):
    """Not only the first: one run names them all; a key near none gets
    no guess ('bar' is not 'bus')."""
    conf = write(tmp_path / "c.conf", "max-uploads = 2\nfoo = 1\nbar = 2\n")
    r = run(["--config", conf], tmp_path)
    assert r.returncode == 2
    assert r.stderr.decode().splitlines() == [
        "bulwarkd: %s:2: unknown key 'foo'" % conf,
        "bulwarkd: %s:3: unknown key 'bar'" % conf], r.stderr


def test_a_missing_file_exits_2_with_its_name(tmp_path):
    missing = tmp_path / "nope.conf"
    r = run(["--config", missing], tmp_path)
    assert r.returncode == 2
    assert ("%s: No such file or directory" % missing).encode() in r.stderr, r.stderr


def test_a_directory_as_the_file_exits_2(tmp_path):
    r = run(["--config", tmp_path], tmp_path)
    assert r.returncode == 2
    assert ("%s: " % tmp_path).encode() in r.stderr, r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file")
def test_an_unreadable_file_exits_2_with_its_name(tmp_path):
    conf = write(tmp_path / "c.conf", "max-uploads = 2\n")
    conf.chmod(0)
    r = run(["--config", conf], tmp_path)
    assert r.returncode == 2
    assert ("%s: Permission denied" % conf).encode() in r.stderr, r.stderr


def test_a_fifo_as_the_file_exits_2_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "c.fifo"
    os.mkfifo(fifo)
    r = run(["--config", fifo], tmp_path, timeout=10)
    assert r.returncode == 2, r
    assert str(fifo).encode() in r.stderr, r.stderr


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_file_with_a_nul_byte_exits_2(tmp_path, where):
    text = {"start": b"\0max-uploads = 2\n",
            "middle": b"max-uploads = 2\nconsole-secret = ab\0cd\n",
            "end": b"max-uploads = 2\n\0"}[where]
    conf = write(tmp_path / "c.conf", text)
    r = run(["--data-dir", tmp_path / "data", "--config", conf], tmp_path)
    assert r.returncode == 2, r
    assert ("%s:" % conf).encode() in r.stderr and b"not a text file" in r.stderr, r.stderr
    assert not (tmp_path / "data" / "defensive.db").exists()


def test_a_file_over_the_size_cap_exits_2(tmp_path):
    conf = write(tmp_path / "c.conf", ("# " + "x" * 1021 + "\n") * 1100)  # 1.1 MiB of comments
    r = run(["--config", conf], tmp_path)
    assert r.returncode == 2, r
    assert ("%s: " % conf).encode() in r.stderr, r.stderr


def test_a_missing_console_secret_file_named_in_the_file(tmp_path):
    conf = write(tmp_path / "c.conf", "max-uploads = 2\nconsole-secret-file = %s\n"
                 % (tmp_path / "none"))
    r = run(["--config", conf], tmp_path)
    assert r.returncode == 2
    assert ("%s:2: console-secret-file %s: No such file" % (conf, tmp_path / "none")).encode() \
        in r.stderr, r.stderr


def test_a_bad_flag_after_a_good_file_names_the_flag(tmp_path):
    conf = write(tmp_path / "c.conf", "max-uploads = 2\n")
    r = run(["--config", conf, "--max-uploads", "0"], tmp_path)
    assert r.returncode == 2
    assert b"--max-uploads needs a number from 1 to 100000, not '0'" in r.stderr, r.stderr


# --------------------------------------------------------------------------
# What the file may hold


def test_comments_blanks_spaces_and_crlf_are_accepted_and_take_effect(daemon, tmp_path):
    secret = "s=e#cr et"  # '=' and '#' inside a value are the value's
    text = ("# bulwarkd.conf\r\n"
            "\r\n"
            "   # an indented comment\r\n"
            "\t\r\n"
            + base_conf(tmp_path / "data", console=True, rooms=True).replace("\n", "\r\n")
            + "rooms-max-attempts\t=\t2   \r\n"
            "log-level=debug\r\n"
            "  console-secret =   " + secret + "  \r\n"
            "no-console = no\n"
            "max-uploads = 7")  # no newline at the end
    conf = write(tmp_path / "c.conf", text)
    d = daemon("--config", conf, want=("vault", "console", "rooms"))
    session(d)
    # the secret, trimmed, with its inner '=', '#' and space
    assert console_ok(d.ports["console"], secret)
    assert not console_ok(d.ports["console"], secret.replace("s", "t", 1))
    # rooms-max-attempts = 2 (the default is 5)
    assert wrong_ids_until_closed(d.ports["rooms"], "127.0.0.61", 5) == 2
    # log-level = debug
    assert "connection from" in d.log()


def test_flags_are_yes_no_true_or_false(daemon, tmp_path):
    conf = write(tmp_path / "c.conf", base_conf(tmp_path / "data").replace(
        "no-console = yes", "no-console = true").replace("no-rooms = yes", "no-rooms = false")
        + "rooms-listen = 127.0.0.1\nrooms-port = 0\n")
    d = daemon("--config", conf, want=("vault", "rooms"))
    assert "console" not in d.ports and "rooms" in d.ports


def test_a_later_line_wins_over_an_earlier_one(daemon, tmp_path):
    conf = write(tmp_path / "c.conf", base_conf(tmp_path / "data", rooms=True)
                 + "rooms-max-attempts = 1\nrooms-max-attempts = 3\n")
    d = daemon("--config", conf, want=("vault", "rooms"))
    assert wrong_ids_until_closed(d.ports["rooms"], "127.0.0.62", 5) == 3


def test_flags_win_over_the_file(daemon, tmp_path):
    conf = write(tmp_path / "c.conf", base_conf(tmp_path / "data", console=True, rooms=True)
                 + "rooms-max-attempts = 1\n"
                 "console-secret = file-secret\n"
                 "log-level = error\n")
    # were the file's log-level in force, no `listening` line would show
    d = daemon("--config", conf, "--rooms-max-attempts", "3", "--console-secret", "flag-secret",
               "--log-level", "info", want=("vault", "console", "rooms"))
    assert wrong_ids_until_closed(d.ports["rooms"], "127.0.0.63", 5) == 3
    assert console_ok(d.ports["console"], "flag-secret")
    assert not console_ok(d.ports["console"], "file-secret")
    # a flag before --config wins as well (a data directory of its own: one
    # daemon per data directory)
    (tmp_path / "data2").mkdir(exist_ok=True)
    d2 = daemon("--rooms-max-attempts", "2", "--config", conf, "--log-level", "info",
                "--data-dir", str(tmp_path / "data2"), want=("vault", "console", "rooms"))
    assert wrong_ids_until_closed(d2.ports["rooms"], "127.0.0.64", 5) == 2
    assert console_ok(d2.ports["console"], "file-secret")


def test_the_file_is_in_force_without_flags(daemon, tmp_path):
    conf = write(tmp_path / "c.conf", base_conf(tmp_path / "data", rooms=True)
                 + "rooms-max-attempts = 1\n")
    d = daemon("--config", conf, want=("vault", "rooms"))
    assert wrong_ids_until_closed(d.ports["rooms"], "127.0.0.65", 5) == 1


def test_the_environment_secret_ranks_below_the_file_and_the_flags(daemon, tmp_path):
    e = {"BULWARK_CONSOLE_SECRET": "env-secret!"}
    plain = write(tmp_path / "plain.conf", base_conf(tmp_path / "data0", console=True))
    d = daemon("--config", plain, env_extra=e, want=("vault", "console"))
    assert console_ok(d.ports["console"], "env-secret!")
    assert not console_ok(d.ports["console"], "")
    with_secret = write(tmp_path / "secret.conf", base_conf(tmp_path / "data1", console=True)
                        + "console-secret = file-secret\n")
    d = daemon("--config", with_secret, env_extra=e, want=("vault", "console"))
    assert console_ok(d.ports["console"], "file-secret")
    assert not console_ok(d.ports["console"], "env-secret!")


def test_port_info_is_honoured_when_neither_file_nor_flag_names_a_port(daemon, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with socket.socket() as s:
        s.bind((H, 0))
        port = s.getsockname()[1]
    (data / "port.info").write_text("%d\n" % port)
    conf = write(tmp_path / "c.conf", re.sub(r"(?m)^port = 0\n", "", base_conf(data)))
    d = daemon("--config", conf)
    assert d.port == port


def test_every_long_option_of_help_is_a_config_key(daemon, tmp_path):
    bwd.require_file(bwd.BULWARKD, "bulwarkd", "BULWARKD")
    helptext = subprocess.run([str(bwd.BULWARKD), "--help"], capture_output=True,
                              timeout=10).stdout.decode()
    names = []
    for m in re.finditer(r"^\s+(?:-\w, )?--([a-z][a-z0-9-]*)", helptext, re.M):
        if m.group(1) not in ("help", "version", "config"):
            names.append(m.group(1))
    assert len(names) >= 30, names
    with socket.socket() as s:
        s.bind((H, 0))
        mport = s.getsockname()[1]
    tls_ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind((H, 0))
            tls_ports.append(s.getsockname()[1])
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost",
                    "-keyout", str(tmp_path / "op.key"), "-out", str(tmp_path / "op.crt"),
                    "-days", "2"], check=True, capture_output=True)
    secret_file = write(tmp_path / "secret", "from-the-file\nsecond line ignored\n")
    log_file = tmp_path / "bulwarkd.log"
    (tmp_path / "data").mkdir()
    values = {
        "data-dir": tmp_path / "data", "db": "sqlite:%s" % (tmp_path / "data" / "defensive.db"),
        "port": "0", "listen": H, "max-conns": "100",
        "max-conns-per-addr": "50", "max-bodies-per-addr": "8", "pull-max-messages": "1000",
        "max-pulls-per-client": "2", "reply-memory": "1048576",
        "max-file-size": "1000000", "max-uploads": "10", "max-uploads-per-addr": "5",
        "min-rate": "0", "key-lifetime": "3600", "key-failures": "3", "max-reg-per-min": "100",
        "max-clients": "1000", "max-message-size": "100000", "max-queued": "100",
        "max-queued-bytes": "1000000", "pull-cap": "65536", "max-bodies": "16", "timeout": "30",
        "request-timeout": "5", "shutdown-grace": "2", "workers": "2", "console-port": "0",
        "console-listen": H, "console-secret": "overridden-below",
        "console-secret-file": secret_file, "no-console": "no", "rooms-port": "0",
        "rooms-listen": H, "rooms-max-conns": "100", "rooms-max-conns-per-addr": "60",
        "rooms-max-rooms": "100",
        "rooms-max-members": "10", "rooms-rate": "20", "rooms-burst": "40",
        "rooms-queue": "262144", "rooms-pause": "150", "rooms-max-attempts": "5", "rooms-menu-timeout": "60",
        "no-rooms": "no", "metrics-listen": "%s:%d" % (H, mport), "log-level": "info",
        "log-file": log_file, "blobs": "file:%s" % (tmp_path / "data"),
        "s3-endpoint": "http://127.0.0.1:9", "s3-region": "eu-west-3",
        "s3-path-style": "yes", "s3-credentials-file": tmp_path / "no-such-file",
        "blob-grace": "600", "s3-timeout": "20", "node-name": "conf-node", "proxy-from": "127.0.0.77, ::1/128",
        "bus": "redis://127.0.0.1:9", "bus-password-file": secret_file,
        "tls-port": str(tls_ports[0]), "rooms-tls-port": str(tls_ports[1]),
        "tls-cert": tmp_path / "op.crt", "tls-key": tmp_path / "op.key", "require-tls": "no",
        "tls-handshakes": "500", "tls-handshakes-per-addr": "50", "tls-bulk-readers": "8",
    }
    missing = [n for n in names if n not in values]
    assert not missing, "options of --help with no value in this test: %r" % missing
    conf = write(tmp_path / "all.conf", "".join("%s = %s\n" % (n, values[n]) for n in names))
    d = daemon("--config", conf, log_file=log_file,
               want=("vault", "messenger", "console", "rooms", "metrics"))
    assert d.ports["metrics"] == mport
    assert d.output() == "", d.output()  # log-file: everything went there
    assert (tmp_path / "data" / "defensive.db").exists()
    session(d)
    assert console_ok(d.ports["console"], "from-the-file")
    assert not console_ok(d.ports["console"], "overridden-below")
    with socket.create_connection((H, mport), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(10)
        got = b""
        while True:
            data = s.recv(65536)
            if not data:
                break
            got += data
    assert got.startswith(b"HTTP/1.1 200"), got[:200]
    # and every one of them is a flag as well
    for n in names:
        assert "--" + n in helptext


# --------------------------------------------------------------------------
# SIGHUP


def test_sighup_applies_a_new_max_reg_per_min(daemon, tmp_path):
    conf = tmp_path / "c.conf"
    base = base_conf(tmp_path / "data")
    write(conf, base + "max-reg-per-min = 1000\n")
    d = daemon("--config", conf)
    src = "127.0.0.71"
    for _ in range(3):
        assert register(d.port, unique_name("hup"), src) == bw.REGISTERED
    write(conf, base + "max-reg-per-min = 1\n")
    d.hup()
    log = d.log()
    assert re.search(r'level=info msg="reload: max-reg-per-min changed"', log), log[-2000:]
    assert "reload: done (%s)" % conf in log
    codes = [register(d.port, unique_name("hup"), src) for _ in range(3)]
    # a fixed one-minute window: at most one may fall into a fresh window
    assert codes.count(bw.ERROR) >= 2, codes
    assert "too many registrations a minute" in d.log()
    # another address has its own count
    assert register(d.port, unique_name("hup"), "127.0.0.72") == bw.REGISTERED
    # and back up
    write(conf, base + "max-reg-per-min = 0\n")
    d.hup()
    assert [register(d.port, unique_name("hup"), src) for _ in range(3)] == [bw.REGISTERED] * 3


@pytest.mark.parametrize("how", ["in-the-file", "secret-file"])
def test_sighup_changes_the_console_secret(daemon, tmp_path, how):
    conf = tmp_path / "c.conf"
    base = base_conf(tmp_path / "data", console=True)
    old, new = "old-secret-AAAA", "new-secret-BBBB"  # one length: a wrong one is refused at once
    sfile = tmp_path / "secret"
    if how == "in-the-file":
        write(conf, base + "console-secret = %s\n" % old)
        args = ("--config", conf)
    else:
        write(conf, base)
        write(sfile, old + "\n")
        args = ("--config", conf, "--console-secret-file", sfile)
    d = daemon(*args, want=("vault", "console"))
    port = d.ports["console"]
    assert console_ok(port, old)
    assert not console_ok(port, new)
    if how == "in-the-file":
        write(conf, base + "console-secret = %s\n" % new)
    else:
        write(sfile, new + "\n")
    d.hup()
    assert 'msg="reload: console-secret changed"' in d.log(), d.log()[-2000:]
    assert console_ok(port, new)
    assert not console_ok(port, old)
    assert console_ok(port, new)
    log = d.log()
    assert old not in log and new not in log
    assert "secret-AAAA" not in log and "secret-BBBB" not in log


def test_sighup_cannot_leave_a_console_off_loopback_without_a_secret(daemon, tmp_path):
    """Deleting the secret from the file and reloading must not open a
    console bound off loopback to anyone: the reload is refused whole."""
    conf = tmp_path / "c.conf"
    base = base_conf(tmp_path / "data", console=True).replace(
        "console-listen = 127.0.0.1", "console-listen = 0.0.0.0")
    secret = "off-loopback-secret"
    write(conf, base + "console-secret = %s\nmax-reg-per-min = 1000\n" % secret)
    d = daemon("--config", conf, want=("vault", "console"))
    port = d.ports["console"]
    assert console_ok(port, secret)
    assert not console_ok(port, None)
    write(conf, base + "max-reg-per-min = 1\n")
    d.hup()
    log = d.log()
    assert re.search(r'level=error msg="reload refused, nothing changed: the console on 0\.0\.0\.0 '
                     r'\(not loopback\) needs --console-secret"', log), log[-2000:]
    assert "reload: console-secret changed" not in log
    assert not console_ok(port, None)
    assert console_ok(port, secret)
    # nothing else of that file was applied either
    src = "127.0.0.75"
    assert [register(d.port, unique_name("off"), src) for _ in range(2)] == [bw.REGISTERED] * 2


def test_sighup_keeps_a_port_and_says_only_a_restart_changes_it(daemon, tmp_path):
    conf = tmp_path / "c.conf"
    base = base_conf(tmp_path / "data", rooms=True)
    write(conf, base + "rooms-max-attempts = 5\n")
    d = daemon("--config", conf, want=("vault", "rooms"))
    old_port, old_rooms = d.port, d.ports["rooms"]
    with socket.socket() as s:
        s.bind((H, 0))
        new_port = s.getsockname()[1]
    # a port (not reloadable) and a limit (reloadable) at once
    write(conf, re.sub(r"(?m)^port = 0$", "port = %d" % new_port, base)
          + "rooms-max-attempts = 2\nworkers = 3\n")
    d.hup()
    log = d.log()
    assert re.search(r'level=warn msg="reload: port changed, but only a restart changes it; '
                     r'kept as it was"', log), log[-2000:]
    assert re.search(r'level=warn msg="reload: workers changed, but only a restart changes it; '
                     r'kept as it was"', log), log[-2000:]
    assert 'level=info msg="reload: rooms-max-attempts changed"' in log
    assert "reload: rooms-port changed" not in log and "reload: data-dir changed" not in log
    # the old port serves; the new one has no listener
    session(d)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((H, new_port), timeout=5).close()
    assert d.port == old_port
    assert wrong_ids_until_closed(old_rooms, "127.0.0.73", 5) == 2
    assert not re.search(r"listening on [0-9.]+:%d\b" % new_port, d.log())


@pytest.mark.parametrize("breakage", ["unknown-key", "bad-number", "missing-file", "nul-byte"])
def test_sighup_with_a_broken_file_changes_nothing(daemon, tmp_path, breakage):
    conf = tmp_path / "c.conf"
    base = base_conf(tmp_path / "data", console=True)
    secret = "keep-me-123"
    good = base + "console-secret = %s\nmax-reg-per-min = 1000\n" % secret
    write(conf, good)
    d = daemon("--config", conf, want=("vault", "console"))
    port = d.ports["console"]
    n_base = len(good.splitlines())
    # every change below would show, were any applied
    changed = base + "console-secret = other-secret\nmax-reg-per-min = 1\n"
    if breakage == "unknown-key":
        write(conf, changed + "no-such-key = 1\n")
        why = "%s:%d: unknown key 'no-such-key'" % (conf, n_base + 1)
    elif breakage == "bad-number":
        write(conf, changed + "max-uploads = lots\n")
        why = "%s:%d: max-uploads needs a number" % (conf, n_base + 1)
    elif breakage == "missing-file":
        conf.unlink()
        why = "%s: No such file or directory" % conf
    else:
        write(conf, changed.encode() + b"\0\n")
        why = "%s: not a text file" % conf
    d.hup()
    log = d.log()
    assert re.search(r'level=error msg="reload refused, nothing changed: %s' % re.escape(why), log), \
        log[-2000:]
    assert "reload: console-secret changed" not in log
    assert "reload: max-reg-per-min changed" not in log
    assert "reload: done" not in log
    assert d.alive()
    assert console_ok(port, secret)
    assert not console_ok(port, "other-secret")
    src = "127.0.0.74"
    assert [register(d.port, unique_name("keep"), src) for _ in range(3)] == [bw.REGISTERED] * 3
    session(d)
    # and a good file afterwards is applied
    write(conf, changed)
    d.hup()
    assert "reload: console-secret changed" in d.log()
    assert console_ok(port, "other-secret")


def test_sighup_with_a_fifo_in_place_of_the_file_keeps_serving(daemon, tmp_path):
    """A reload runs on the loop's thread: a file that blocks on open (a
    FIFO with no writer) must not stop the daemon serving."""
    conf = tmp_path / "c.conf"
    base = base_conf(tmp_path / "data")
    write(conf, base)
    d = daemon("--config", conf)
    session(d)
    conf.unlink()
    os.mkfifo(conf)
    d.proc.send_signal(signal.SIGHUP)
    try:
        # until bulwarkd has taken the signal off its signalfd (no assertion:
        # the answer below is what counts)
        bwd.wait_for(lambda: signal.SIGHUP not in d.pending_signals(), 5)
        try:
            c = bw.VaultClient(H, d.port, timeout=5).connect()
            try:
                code = c.register(unique_name("fifo")).code
            finally:
                c.close()
        except OSError as e:  # socket.timeout included
            code = e
        assert code == bw.REGISTERED, "no answer while reloading from a FIFO: %r" % (code,)
    finally:
        # release a loop blocked in open(): a writer with the old contents
        try:
            fd = os.open(conf, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            fd = None
        if fd is not None:
            os.write(fd, base.encode())
            os.close(fd)


def test_sighup_without_a_config_file_changes_nothing_and_says_so(start_server):
    srv = start_server("--max-reg-per-min", "5")
    srv.proc.send_signal(signal.SIGHUP)
    assert bwd.wait_for(lambda: "reload: done (no configuration file)" in srv.log(), 10), srv.log_tail()
    assert "changed" not in "".join(ln for ln in srv.log().splitlines() if "reload:" in ln)
    srv.assert_serves()


def test_sighup_can_turn_debug_logging_on_and_off(daemon, tmp_path):
    conf = tmp_path / "c.conf"
    base = base_conf(tmp_path / "data")
    write(conf, base + "log-level = info\n")
    d = daemon("--config", conf)
    session(d)
    assert "level=debug" not in d.log()
    write(conf, base + "log-level = debug\n")
    d.hup()
    assert 'msg="reload: log-level changed"' in d.log()
    session(d)
    assert "level=debug" in d.log() and "connection from" in d.log()
    write(conf, base + "log-level = warn\n")
    d.hup(line="reload: log-level changed")  # the last info line before warn
    n = d.log().count("\n")
    session(d)
    after = d.log().splitlines()[n:]
    assert all(" level=warn " in ln or " level=error " in ln for ln in after), after


def test_log_file_is_used_and_reopened_after_a_rotation(daemon, tmp_path):
    log_file = tmp_path / "logs" / "bulwarkd.log"
    log_file.parent.mkdir()
    conf = write(tmp_path / "c.conf", base_conf(tmp_path / "data"))
    d = daemon("--config", conf, "--log-file", log_file, log_file=log_file)
    assert d.output() == "", d.output()
    assert "vault listening on" in log_file.read_text()
    session(d)
    rotated = log_file.with_name("bulwarkd.log.1")
    os.rename(log_file, rotated)
    before = rotated.read_text()
    # a line after the rename and before SIGHUP still lands in the old file
    session(d)
    assert rotated.read_text().count("\n") > before.count("\n")
    assert not log_file.exists()
    d.hup(done_count=0)  # waits for `reload: done` in the new file
    assert log_file.exists()
    old_len = len(rotated.read_text())
    session(d)
    assert bwd.wait_for(lambda: "register" in log_file.read_text(), 5), log_file.read_text()
    new = log_file.read_text()
    assert "reload: done" in new
    assert "reload: done" not in rotated.read_text()
    assert len(rotated.read_text()) == old_len, "lines after SIGHUP went to the rotated file"
    for ln in new.splitlines():
        assert LOG_LINE_RE.match(ln), ln
    assert d.output() == ""
    # a second rotation works too
    os.rename(log_file, log_file.with_name("bulwarkd.log.2"))
    d.hup(done_count=0)
    assert "reload: done" in log_file.read_text()


def test_log_file_that_cannot_be_opened_is_a_start_up_error(tmp_path):
    r = run(["--data-dir", tmp_path, "--no-console", "--no-rooms", "--port", "0",
             "--log-file", tmp_path / "no" / "such" / "dir.log"], tmp_path)
    assert r.returncode == 1, r
    assert b"cannot open the log" in r.stderr, r.stderr


# --------------------------------------------------------------------------
# The log: one key=value line per event, never a secret


def test_every_log_line_is_key_value_and_no_secret_ever_appears(start_server, tmp_path):
    console_secret = "Cs-9f3e1c0b7a6d"
    room_password = "Rp-e2b7c4d1a9f0"
    chat_text = "the launch code is 0451-ZQX"
    srv = start_server("--log-level", "debug", "--console-secret", console_secret,
                       "--request-timeout", "2", console=True, rooms=True)
    # wrong guesses too: a mistyped secret is most of the right one
    secrets = [console_secret, room_password, chat_text, console_secret[::-1],
               room_password[::-1]]

    def add_bytes(b):
        """A binary secret as it could be printed: hex, base64."""
        secrets.extend([b.hex(), b.hex().upper(), base64.b64encode(b).decode(),
                        base64.urlsafe_b64encode(b).decode().rstrip("=")])

    # console: a right and a wrong secret
    assert console_ok(srv.console_port, console_secret)
    assert not console_ok(srv.console_port, console_secret[::-1])
    # vault: a whole session, the AES key and the file's bytes known
    key = rsa_key(11)
    data = os.urandom(3000)
    with srv.client(key=key) as c:
        bw.expect(c.register(unique_name("log")), bw.REGISTERED)
        bw.expect(c.send_pubkey(), bw.KEY_STORED)
        res = c.send_file("secret.bin", data)
        bw.expect(res.response, bw.FILE_RECEIVED)
        bw.expect(c.crc_ok("secret.bin"), bw.ACK)
        add_bytes(c.aes_key)
        # a wrong key for a second file: a decryption failure is logged
        bad = c.send_file("bad.bin", b"x" * 100, aes_key=bw.wrong_key(c.aes_key, b"x" * 100))
        assert bad.response.code == bw.ERROR
    add_bytes(data[:24])
    add_bytes(data[1000:1024])
    priv = bw.private_pkcs8_der(key)
    secrets.append(base64.b64encode(priv).decode()[200:240])
    secrets.append(priv.hex()[400:440])
    secrets.append("%x" % key.d)
    secrets.append(str(key.d)[:40])
    # messenger: a key request, a wrapped key, a text, a file; a pull
    a = bwmsg.MsgClient(H, srv.port)
    a.register(unique_name("la"), key=rsa_key(12))
    b = bwmsg.MsgClient(H, srv.port)
    b.register(unique_name("lb"), key=rsa_key(13))
    sym = os.urandom(16)
    add_bytes(sym)
    a.send_key_request(b.client_id)
    a.send_sym_key(b.client_id, sym)
    plain = b"meet me at the usual place 7741"
    secrets.append(plain.decode())
    ct = bw.aes_encrypt(sym, plain)
    add_bytes(ct[:24])
    a.send(b.client_id, bwmsg.TEXT, ct)
    fbytes = os.urandom(500)
    add_bytes(fbytes[:24])
    a.send(b.client_id, bwmsg.FILE, fbytes)
    got = b.pull()
    assert len(got) == 4
    add_bytes(got[1][3][:24])  # the wrapped key
    b.list()
    with pytest.raises(bwmsg.ServerError):
        b.send(os.urandom(16), bwmsg.TEXT, ct)  # unknown recipient
    a.close()
    b.close()
    # rooms: create, join, a wrong password, chat, leave
    alice, rid = R.creator(srv.rooms_port, "alice", room_password, source="127.0.0.91")
    bob = R.member(srv.rooms_port, "bob", rid, room_password, source="127.0.0.92")
    alice.expect(R.joined("bob"))
    eve = R.RoomClient(srv.rooms_port, source="127.0.0.93")
    eve.line("1", "eve", str(rid), room_password[::-1])
    eve.expect(R.NO_PASS)
    eve.close()
    alice.line(chat_text)
    bob.expect("alice: " + chat_text)
    bob.leave()
    alice.leave()
    # a bad request and an idle peer
    with srv.client() as c:
        c.send_raw(bw.pack_request(bw.ZERO_ID, 1999, b""))
        bw.expect(c.recv_response(), bw.ERROR)
    srv.stop()
    log = srv.log()
    lines = log.splitlines()
    assert len(lines) > 30, log
    bad = [ln for ln in lines if not LOG_LINE_RE.match(ln)]
    assert not bad, "lines not in the key=value format:\n" + "\n".join(bad[:20])
    assert log.endswith("\n")
    levels = {LOG_LINE_RE.match(ln).group(1) for ln in lines}
    assert {"debug", "info", "warn"} <= levels, levels
    # connection events carry conn=
    conn_events = [ln for ln in lines if re.search(
        r'msg="(?:\w+ )?connection from|msg="closed:|msg="closing:|event=', ln)]
    assert len(conn_events) >= 10, conn_events
    for ln in conn_events:
        assert " conn=" in ln, ln
    # every connection seen has an id, and ids grow
    ids = [int(m.group(1)) for m in re.finditer(r" conn=(\d+) ", log)]
    assert len(set(ids)) >= 8
    # no message still starts with a connection id that was not turned into conn=
    assert not [ln for ln in lines if re.search(r'msg="c\d+ ', ln)]
    found = [s for s in secrets if s and s in log]
    assert not found, "secrets in the log: %r" % found


def test_a_bad_option_is_one_line_and_a_hint_not_the_whole_help(tmp_path):
    """An unknown option printed the 150 lines of --help after getopt's
    line; it is getopt's line and "Try 'bulwarkd --help'", exit 2, as
    GNU tools do. -t is --check-config, as nginx -t."""
    r = run(["--bogus"], tmp_path)
    assert r.returncode == 2
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 2 and "'--bogus'" in lines[0], lines
    assert lines[1] == "Try 'bulwarkd --help' for more information."
    d = tmp_path / "d"
    d.mkdir()
    r = run(["-t", "--data-dir", str(d)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().startswith("ok: data directory %s\n" % d), r.stdout


def test_check_config_names_every_problem_in_one_run_and_no_log_line(tmp_path):
    """A file with three mistakes took three runs of -t, one each; an
    unknown key said nothing of the key meant; port.info's absence came
    as a log line among the findings. Now: every problem, one a line, each
    with its file and line, the nearest key for a misspelt one, exit 2;
    the same lines at start-up; and a good file's check is findings only,
    the listeners the service would open among them."""
    d = tmp_path / "d"
    d.mkdir()
    conf = tmp_path / "b.conf"
    conf.write_text("max-upload = 3\nlisten = 127.0.0.1\nmax-uploads = lots\n"
                    "rooms_port = 6000\nzzzzzz-qqqq = 1\n")
    r = run(["-t", "--config", str(conf), "--data-dir", str(d)], tmp_path)
    assert r.returncode == 2
    assert r.stdout.decode().splitlines() == [
        "error: %s:1: unknown key 'max-upload' (did you mean 'max-uploads'?)" % conf,
        "error: %s:3: max-uploads needs a number from 1 to 100000, not 'lots'" % conf,
        "error: %s:4: unknown key 'rooms_port' (did you mean 'rooms-port'?)" % conf,
        "error: %s:5: unknown key 'zzzzzz-qqqq'" % conf], r.stdout
    assert r.stderr == b""
    r = run(["--config", str(conf), "--data-dir", str(d)], tmp_path)
    assert r.returncode == 2
    assert len(r.stderr.decode().splitlines()) == 4, r.stderr
    assert all(ln.startswith("bulwarkd: %s:" % conf) for ln in r.stderr.decode().splitlines())

    conf.write_text("listen = 127.0.0.1\nrooms-port = 6000\n")
    r = run(["-t", "--config", str(conf), "--data-dir", str(d), "--console-port", "0"], tmp_path)
    assert r.returncode == 0, r.stdout
    out = r.stdout.decode().splitlines()
    assert all(ln.startswith("ok: ") for ln in out), out
    assert r.stderr == b"", "a log line among the findings: %r" % r.stderr
    assert "ok: vault and messenger on 127.0.0.1:1357" in out, out
    assert "ok: group chat on 0.0.0.0:6000" in out, out
    assert "ok: console on 127.0.0.1:0 (a free port the kernel picks)" in out, out


def test_the_data_directory_is_named_whole_and_a_missing_one_said_so(start_server, tmp_path):
    """Without --data-dir the log said "data directory ." (and filled the
    current directory silently); a missing directory said "cannot lock
    ...: No such file or directory". The start-up line names the directory
    whole and says it is the current one; a missing one, or a file, is
    said so in one line, exit 1."""
    r = run(["--data-dir", str(tmp_path / "none"), "--port", "0"], tmp_path)
    assert r.returncode == 1
    assert r.stderr.decode().splitlines() == [
        "bulwarkd: the data directory %s does not exist (create it, or name another with "
        "--data-dir)" % (tmp_path / "none")], r.stderr
    (tmp_path / "f").write_text("x")
    r = run(["--data-dir", str(tmp_path / "f"), "--port", "0"], tmp_path)
    assert r.returncode == 1 and b"is not a directory" in r.stderr, r.stderr
    here = tmp_path / "here"
    here.mkdir()
    srv = start_server(argv=["--port", "0", "--no-rooms", "--no-console",
                             "--listen", "127.0.0.1"], cwd=here)
    assert ("data directory %s (the current directory: --data-dir to choose another)"
            % here.resolve()) in srv.log(), srv.log_tail()
    srv.stop()
