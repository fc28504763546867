"""bulwarkd under systemd's Type=notify: READY=1 once every listener takes
connections, RELOADING=1 and READY=1 around each SIGHUP with a STATUS= that
says when a reload was refused (systemctl status shows it), STOPPING=1 at
SIGTERM. The manager's socket is played by a datagram socket of the
test's own, as NOTIFY_SOCKET names it (a path, or an abstract name)."""

import os
import signal
import socket

import pytest


def notifications(sock, timeout=10.0):
    sock.settimeout(timeout)
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n") if line)


@pytest.mark.parametrize("where", ["path", "abstract"])
def test_ready_reloading_and_stopping_are_told_to_the_manager(start_server, tmp_path, where):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if where == "path":
        name = str(tmp_path / "notify")
        sock.bind(name)
    else:
        name = "@bulwark-test-notify-%d-%d" % (os.getpid(), id(sock))
        sock.bind("\0" + name[1:])
    conf = tmp_path / "bulwarkd.conf"
    conf.write_text("max-reg-per-min = 5\n")
    srv = start_server("--config", conf, rooms=True, env={"NOTIFY_SOCKET": name})
    try:
        n = notifications(sock)
        assert n.get("READY") == "1" and n.get("MAINPID") == str(srv.proc.pid), n
        assert n.get("STATUS") == "serving", n
        # ready means every listener takes connections
        for port in (srv.port, srv.rooms_port):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()

        srv.hup()
        n = notifications(sock)
        assert n.get("RELOADING") == "1" and int(n["MONOTONIC_USEC"]) > 0, n
        n = notifications(sock)
        assert n.get("READY") == "1" and "applied" in n.get("STATUS", ""), n

        conf.write_text("max-reg-per-min = 5\nno-such-key = 1\n")
        srv.hup()
        assert notifications(sock).get("RELOADING") == "1"
        n = notifications(sock)
        assert n.get("READY") == "1", n
        assert n.get("STATUS", "").startswith("reload refused, nothing changed: "), n
        assert "no-such-key" in n["STATUS"], n

        srv.proc.send_signal(signal.SIGTERM)
        assert notifications(sock).get("STOPPING") == "1"
        srv.stop()  # the exit status must be 0
    finally:
        sock.close()


def test_without_a_manager_nothing_is_sent_and_a_bad_socket_harms_nothing(start_server, tmp_path):
    """NOTIFY_SOCKET naming nothing that listens (a manager gone): the
    daemon serves as ever."""
    srv = start_server(env={"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    srv.assert_serves()
    srv.hup()
    srv.assert_serves()
