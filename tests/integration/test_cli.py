"""The programs' surface: --help and --version, usage errors, port.info,
and the progress bar that `bulwark send` draws only on a terminal."""

import os
import pty
import select
import subprocess
import time

import pytest

import bwd
import ports


def run(*argv, timeout=10):
    return subprocess.run([str(a) for a in argv], capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("binary", [bwd.BULWARKD, bwd.BULWARK])
def test_version_prints_the_version_and_exits_0(binary):
    r = run(binary, "--version")
    assert r.returncode == 0
    assert b"0.1.0" in r.stdout


def test_bulwarkd_help_lists_every_option():
    r = run(bwd.BULWARKD, "--help")
    assert r.returncode == 0
    for opt in (b"--data-dir", b"--port", b"--listen", b"--max-conns",
                b"--max-file-size", b"--max-uploads", b"--min-rate", b"--timeout", b"--request-timeout",
                b"--shutdown-grace", b"--console-port", b"--no-console", b"--no-rooms", b"--rooms-port",
                b"--version"):
        assert opt in r.stdout, opt


def test_send_help_documents_exit_codes():
    r = run(bwd.BULWARK, "send", "--help")
    assert r.returncode == 0
    assert b"Exit status" in r.stdout
    for code in (b"0 stored", b"1 the server", b"2 bad usage", b"3 the server refused", b"4 the CRC"):
        assert code in r.stdout.replace(b"\n", b" "), code


@pytest.mark.parametrize("argv", [
    ["--port", "70000"], ["--port", "12x"], ["--max-conns", "0"],
    ["--timeout", "-1"], ["--log-level", "loud"], ["--bogus"], ["extra"],
])
def test_bulwarkd_bad_usage_exits_2(argv, tmp_path):
    r = run(bwd.BULWARKD, "--data-dir", tmp_path, *argv)
    assert r.returncode == 2, r.stderr


def test_bulwark_unknown_command_exits_2():
    r = run(bwd.BULWARK, "fly")
    assert r.returncode == 2
    assert b"unknown command" in r.stderr


def test_port_info_with_whitespace_is_used(start_server, tmp_path):
    # a free port, then the server must take it from port.info
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    data = tmp_path / "data"
    data.mkdir()
    (data / "port.info").write_text("  %d \n" % port)
    # port=None: no --port, so that port.info decides; the log is standard
    # error alone
    srv = start_server(data_dir=data, port=None, stdout=tmp_path / "stdout")
    line = next(ln for ln in srv.log().splitlines() if "listening" in ln)
    assert ("127.0.0.1:%d" % port) in line
    srv.stop()


@pytest.mark.parametrize("content", [None, "abc\n", "70000", ""])
def test_missing_or_invalid_port_info_warns_and_uses_1357(start_server, tmp_path, content):
    data = tmp_path / "data"
    data.mkdir()
    if content is not None:
        (data / "port.info").write_text(content)
    # the default port is one for every variant: the other xdist worker
    # may be running another at the same time
    ports.hold(1357)
    try:
        srv = start_server(data_dir=data, port=None, stdout=tmp_path / "stdout", wait=False)
        try:
            bwd.wait_for(lambda: "listening" in srv.log() or "cannot" in srv.log(), 10)
            out = srv.log()
            assert "1357" in out and ("no port.info" in out or "does not hold a port" in out)
            assert "listening on 127.0.0.1:1357" in out
        finally:
            srv.stop(check=False)
    finally:
        ports.release(1357)


def _run_on_pty(argv, cwd, timeout=60):
    """Runs argv with stdout and stderr on a pseudo-terminal; returns
    (exit code, everything it wrote)."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.chdir(cwd)
        os.execv(argv[0], argv)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out


def test_progress_bar_is_drawn_on_a_terminal_only(server, client_dir):
    cd = client_dir()
    data = os.urandom(64 * 1024 * 1024)
    cd.write_file("big.bin", data)
    cd.write_transfer(server.port, bwd.unique_name("tty"), "big.bin")
    rc, out = _run_on_pty([str(bwd.BULWARK), "send", "--timeout", "30"], cd.path)
    assert rc == 0, out
    assert b"MiB/s" in out and b"ETA" in out and b"100%" in out
    # not a terminal: no bar; --quiet on a terminal: no bar
    r = cd.run(quiet=False)
    assert r.returncode == 0 and b"MiB/s" not in r.stderr + r.stdout
    rc, out = _run_on_pty([str(bwd.BULWARK), "send", "--quiet", "--timeout", "30"], cd.path)
    assert rc == 0 and b"MiB/s" not in out


def test_msg_send_file_draws_the_progress_bar_on_a_terminal_only(server, tmp_path):
    """bulwark send drew a progress bar and msg send-file did not: it
    draws the same one, on a terminal only."""
    from test_msg_client import Msg

    a, b = Msg(tmp_path / "a", server.port), Msg(tmp_path / "b", server.port)
    na, nb = bwd.unique_name("alice"), bwd.unique_name("bob")
    a.ok("register", na)
    b.ok("register", nb)
    a.ok("list")
    a.ok("send-key", nb)
    (a.dir / "big.bin").write_bytes(os.urandom(32 * 1024 * 1024))
    rc, out = _run_on_pty([str(bwd.BULWARK), "msg", "send-file", nb, "big.bin"], a.dir)
    assert rc == 0, out
    assert b"big.bin" in out and b"MiB/s" in out and b"100%" in out, out[-400:]
    r = a.run("send-file", nb, "big.bin")
    assert r.returncode == 0 and b"MiB/s" not in r.stderr + r.stdout


def test_default_data_directory_is_the_current_directory(start_server, tmp_path):
    cwd = tmp_path / "cwd"
    srv = start_server(argv=["--listen", "127.0.0.1", "--port", "0", "--no-console", "--no-rooms"],
                       cwd=cwd, stdout=tmp_path / "stdout")
    assert "listening" in srv.log()
    assert (cwd / "defensive.db").is_file()
    assert (cwd / "files").is_dir()
    srv.stop()


def test_connections_past_max_conns_are_closed_and_a_slot_frees_up(start_server):
    import socket
    srv = start_server("--max-conns", "5")
    held = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(5)]
    try:
        bwd.wait_for(lambda: srv.conns() == 5, 5)  # bulwarkd has accepted the five
        extra = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        extra.settimeout(5)
        assert extra.recv(1) == b"", "the sixth connection must be closed at once"
        extra.close()
        assert bwd.wait_for(lambda: "connection limit 5 reached" in srv.log(), 3)
        held.pop().close()
        bwd.wait_for(lambda: srv.conns() == 4, 5)  # it has seen the close: a slot is free
        srv.assert_serves()
    finally:
        for s in held:
            s.close()


def test_quiet_prints_nothing_but_errors(server, client_dir):
    """--quiet left the bar out but still printed "registered as",
    "reconnected as" and "sent ... verified" (scp's -q prints nothing but
    errors). Quiet, a success prints nothing at all; without it, it says
    what it did."""
    cd = client_dir()
    cd.write_file("doc.bin", os.urandom(5000))
    cd.write_transfer(server.port, bwd.unique_name("quiet"), "doc.bin")
    for _ in range(2):  # registering, then reconnecting
        r = cd.run()
        assert r.returncode == 0, r.stderr
        assert (r.stdout, r.stderr) == (b"", b""), (r.stdout, r.stderr)
    r = cd.run(quiet=False)
    assert r.returncode == 0 and b"verified by the server" in r.stdout, r.stdout


def test_the_chat_port_given_to_send_and_msg_is_named_once_and_not_retried(start_server,
                                                                            client_dir,
                                                                            tmp_path):
    """The chat's greeting reads as a reply of code 27749 with megabytes of
    payload: send said "the server's reply is too large" four times (with
    its retries), msg "answered 27749 where 2100 was expected". Both now
    say that the port does not speak the protocol, try once, and exit 1."""
    srv = start_server(rooms=True, want=("vault", "rooms"))
    chat = srv.ports["rooms"]
    words = b"127.0.0.1:%d does not speak the vault and messenger protocol" % chat
    cd = client_dir()
    cd.write_file("doc.bin", b"x" * 100)
    cd.write_transfer(chat, bwd.unique_name("port"), "doc.bin")
    r = cd.run()
    assert r.returncode == 1, r.stderr
    # one try: the try's line and the closing Fatal, not four of each
    assert r.stderr.count(words) <= 2 and b"trying again" not in r.stderr, r.stderr
    assert b"too large" not in r.stderr, r.stderr
    d = tmp_path / "msg"
    d.mkdir()
    (d / "server.info").write_text("127.0.0.1:%d\n" % chat)
    r = subprocess.run([str(bwd.BULWARK), "msg", "--timeout", "10", "register", "someone"],
                       cwd=str(d), capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 1 and words in r.stderr, r.stderr
    assert not (d / "me.info").exists()


def test_a_server_down_is_said_in_one_wording_by_every_subcommand(client_dir, tmp_path):
    """Nothing listening: send retried a refused connection for 3.5 s, and
    msg, chat and console each failed in words of their own. All four now
    say "HOST:PORT refuses connections: is bulwarkd running there, on that
    port?", exit 1, and send does not retry a refusal."""
    port = ports.reserve()  # reserved, not listened on
    try:
        words = b"127.0.0.1:%d refuses connections: is bulwarkd running there" % port
        cd = client_dir()
        cd.write_file("doc.bin", b"x" * 100)
        cd.write_transfer(port, bwd.unique_name("down"), "doc.bin")
        r = cd.run()
        assert r.returncode == 1 and words in r.stderr, r.stderr
        assert b"trying again" not in r.stderr, r.stderr
        d = tmp_path / "m"
        d.mkdir()
        (d / "server.info").write_text("127.0.0.1:%d\n" % port)
        for argv, cwd in (([str(bwd.BULWARK), "msg", "register", "someone"], d),
                          ([str(bwd.BULWARK), "chat", "127.0.0.1:%d" % port], tmp_path),
                          ([str(bwd.BULWARK), "console", "127.0.0.1:%d" % port], tmp_path)):
            r = subprocess.run(argv, cwd=str(cwd), capture_output=True, timeout=60,
                               stdin=subprocess.DEVNULL)
            assert r.returncode == 1 and words in r.stderr, (argv, r.returncode, r.stderr)
    finally:
        ports.release(port)
