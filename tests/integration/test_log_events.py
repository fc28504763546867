"""What an operator's tools read in the log: every event a peer causes
(registrations, keys, uploads, verdicts, messages stored and pulled, rooms
created, joined and refused, console sessions) is one line of fields that
names the connection and the peer's address, as fail2ban and a log search
need them; under journald each line carries its syslog priority."""

import os
import re
import socket

import bwd
import bwmsg
import bwrooms as R
import bwvault as bw
from bwd import unique_name
from test_vault_hardening import connect

FIELD = r'[a-z_]+=(?:"(?:[^"\\]|\\.)*"|[^\s"=\\]+)'
EVENT_RE = re.compile(r'^(?:<\d>)?ts=\S+ level=(\w+) event=([a-z_]+)((?: %s)*)$' % FIELD)


def events(log):
    """[(level, event, {field: value})] of the log's event lines."""
    out = []
    for line in log.splitlines():
        m = EVENT_RE.match(line)
        if m:
            fields = dict(f.split("=", 1) for f in re.findall(FIELD, m.group(3)))
            out.append((m.group(1), m.group(2), fields))
    return out


def only(evs, event, **want):
    got = [f for _, e, f in evs if e == event and all(f.get(k) == v for k, v in want.items())]
    assert len(got) == 1, (event, want, evs)
    return got[0]


def test_each_event_names_its_peer_and_its_facts_as_fields(start_server):
    srv = start_server(rooms=True, console=True)
    alice, bob = unique_name("ev-a"), unique_name("ev-b")
    # the vault, from 127.0.0.21
    with connect(srv, source="127.0.0.21") as c:
        bw.expect(c.register(alice), bw.REGISTERED)
        bw.expect(c.send_pubkey(), bw.KEY_STORED)
        bw.expect(c.send_file("a b.txt", b"x" * 100).response, bw.FILE_RECEIVED)
        bw.expect(c.crc_ok("a b.txt"), bw.ACK)
        bw.expect(c.register(alice), bw.NAME_TAKEN)
    # the messenger, from 127.0.0.22
    m = bwmsg.MsgClient("127.0.0.1", srv.port)
    m.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10,
                                      source_address=("127.0.0.22", 0))
    me = m.register(bob)
    mid = m.send(me, 4, b"y" * 32)
    assert len(m.pull()) == 1
    m.close()
    # the rooms, from 127.0.0.23: a wrong password first
    with R.RoomClient(srv.rooms_port, source="127.0.0.23") as r1:
        rid = r1.create("carol", "pw-c")
        with R.RoomClient(srv.rooms_port, source="127.0.0.24") as r2:
            r2.line("1")
            r2.expect(R.ASK_NAME)
            r2.line('dave "the" = one')
            r2.expect(R.ASK_ID)
            r2.line(str(rid))
            r2.expect(R.ASK_PASS)
            r2.line("nope")
            r2.expect(R.NO_PASS)
            r2.line("pw-c")
            r2.expect(R.connected(rid))
    # the console, from 127.0.0.25
    with socket.create_connection(("127.0.0.1", srv.console_port),
                                  source_address=("127.0.0.25", 0)) as s:
        s.sendall(b"Hi")
        assert s.recv(100)
    srv.stop()

    evs = events(srv.log())
    peer = re.compile(r"^127\.0\.0\.(\d+):\d+$")

    def at(fields, last):
        assert peer.match(fields["peer"]) and fields["peer"].split(":")[0] == "127.0.0.%d" % last, \
            fields
        assert fields["conn"].isdigit(), fields

    f = only(evs, "client_registered", service="vault", client=alice)
    at(f, 21)
    assert re.fullmatch(r"[0-9a-f]{32}", f["id"])
    at(only(evs, "key_sent", client=alice, request="1026", reply="2102"), 21)
    f = only(evs, "upload_started", client=alice)
    at(f, 21)
    assert f["file"] == '"a b.txt"' and f["bytes"] == "112", f
    f = only(evs, "upload_stored", bytes="100")
    at(f, 21)
    assert f["file"].endswith('/a b.txt"') and f["pending"] == "no", f
    at(only(evs, "file_verified"), 21)
    at(only(evs, "register_refused", service="vault", reason="name_taken"), 21)

    f = only(evs, "client_registered", service="msg", client=bob)
    at(f, 22)
    f = only(evs, "message_stored", id=str(mid))
    at(f, 22)
    assert f["from"] == f["to"] == me.hex() and f["type"] == "4" and f["bytes"] == "32", f
    f = only(evs, "messages_pulled", client=me.hex())
    at(f, 22)
    assert f["messages"] == "1", f

    at(only(evs, "room_created", room=str(rid), name="carol"), 23)
    at(only(evs, "room_refused", reason="wrong_password"), 24)
    # a name a peer chose is one quoted value: it cannot forge a field
    f = only(evs, "room_joined", room=str(rid))
    at(f, 24)
    assert f["name"] == r'"dave \"the\" = one"', f
    at(only(evs, "console_connected"), 25)


def test_under_journald_each_line_begins_with_its_priority(start_server, tmp_path):
    """JOURNAL_STREAM names stderr's device and inode: each line then
    begins with "<N>" (6 info, 4 warn, 3 error), so that journalctl -p
    filters. A variable naming another stream (a child whose stderr was
    redirected) changes nothing."""
    log = tmp_path / "journal.log"
    log.touch()
    st = os.stat(log)
    srv = start_server("--max-reg-per-min", "1", log_path=log,
                       env={"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)})
    with srv.client() as c:
        bw.expect(c.register(unique_name("j1")), bw.REGISTERED)
    with srv.client() as c:
        bw.expect(c.register(unique_name("j2")), bw.ERROR)
    srv.stop()
    lines = srv.log().splitlines()
    assert lines and all(re.match(r"<[3467]>ts=", ln) for ln in lines), lines
    assert any(ln.startswith("<6>") and "event=client_registered" in ln for ln in lines), lines
    assert any(ln.startswith("<4>") and "event=register_refused" in ln for ln in lines), lines

    other = tmp_path / "other.log"
    srv = start_server(log_path=other, env={"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)})
    srv.stop()
    assert srv.log().startswith("ts="), srv.log()[:200]
