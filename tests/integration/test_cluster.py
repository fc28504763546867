"""Several bulwarkd nodes sharing one PostgreSQL and one S3 store behind a
real HAProxy (send-proxy-v2, health checks on): any request on any node.
A course-style client opens one connection per request, so its steps land
on different nodes in turn (round robin); what one node did must hold on
the others at once."""

import hashlib
import os
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

import bwd
import bwmsg
import bwvault as bw
import haproxy
import pgserver
import redisserver
import s3server
import tcpproxy
from bwrooms import ASK_ID, ASK_NAME, NO_ID, RoomClient, joined, left
from bwd import rsa_key, unique_name

H = "127.0.0.1"
LB = "127.0.0.9"


class Cluster:
    def __init__(self, start_server, tmp_path, n=3, extra=(), console=False):
        self.pg = pgserver.shared()
        self.db = self.pg.create_db(unique_name("cl").replace("-", "_"))
        self.s3 = s3 = s3server.shared()
        self.bucket = s3.bucket_for("cluster")  # its uploads are the test's
        self.common = ["--db", self.pg.url(self.db),
                       "--blobs", "s3://%s" % self.bucket,
                       "--s3-endpoint", s3.endpoint, "--s3-path-style",
                       "--blob-grace", "2", "--proxy-from", LB, *extra]
        self.redis = redisserver.RedisServer().start()
        self.lb = None
        try:
            self.common += ["--bus", self.redis.url()]
            self.env = {**self.pg.env(), **s3.env(), **self.redis.env()}
            self.nodes = []
            for i in range(n):
                self.nodes.append(start_server(*self.common, "--node-name", "n%d" % (i + 1),
                                               "--metrics-listen", H + ":0",
                                               data_dir=tmp_path / ("node%d" % (i + 1)),
                                               env=self.env, rooms=True, console=console))
            self.lb = haproxy.HaProxy({"shared": [(H, s.port) for s in self.nodes]},
                                      source=LB)
            self.lb.start()
            assert bwd.wait_for(lambda: self.lb.servers_up("shared") == n, 10)
            self.port = self.lb.ports["shared"]
        except BaseException:
            self.stop()  # a set-up that failed leaves no HAProxy or Redis behind
            raise

    def stop(self):
        if self.lb is not None:
            self.lb.stop()
        self.redis.destroy()


def need_cluster():
    for what, ok in (("haproxy", haproxy.installed()), ("PostgreSQL", pgserver.pg_bin()),
                     ("Swift", s3server.installed()), ("Redis", redisserver.installed())):
        if not ok:
            if os.environ.get("BULWARK_REQUIRE_BINARIES"):
                pytest.fail("%s is not installed (scripts/deps test)" % what)
            pytest.skip("%s is not installed" % what)


@pytest.fixture
def cluster(start_server, tmp_path):
    need_cluster()
    c = Cluster(start_server, tmp_path)
    yield c
    c.stop()


def per_request(c, step, *args):
    """One step of a course-style client: a connection of its own."""
    c.connect()
    try:
        return step(*args)
    finally:
        c.close()


def test_a_vault_session_one_connection_per_request_across_nodes(cluster):
    data = os.urandom(300000)
    c = bw.VaultClient(H, cluster.port)
    bw.expect(per_request(c, c.register, unique_name("v")), bw.REGISTERED, "register")
    bw.expect(per_request(c, c.send_pubkey), bw.KEY_STORED, "public key")
    res = per_request(c, c.send_file, "f.bin", data)
    bw.expect(res.response, bw.FILE_RECEIVED, "file")
    assert res.server_crc == res.crc
    bw.expect(per_request(c, c.crc_ok, "f.bin"), bw.ACK, "verdict")
    # and again after a reconnect, through whichever node comes next
    bw.expect(per_request(c, c.reconnect), bw.RECONNECTED, "reconnect")
    res = per_request(c, c.send_file, "f.bin", data[::-1])
    bw.expect(res.response, bw.FILE_RECEIVED, "replacement")
    bw.expect(per_request(c, c.crc_ok, "f.bin"), bw.ACK, "verdict on the replacement")


def test_messages_sent_through_one_node_are_pulled_through_another(cluster):
    a = bwmsg.MsgClient(H, cluster.port, padded=True)
    b = bwmsg.MsgClient(H, cluster.port, padded=True)
    a.register(unique_name("a"), key=rsa_key(0))
    b.register(unique_name("b"), key=rsa_key(1))
    assert b.public_key(a.client_id) == bw.spki_der(a.key)
    # every node lists a, whichever registered it (round robin: three
    # lists are one on each node)
    for _ in range(len(cluster.nodes)):
        assert a.name in [n for _, n in b.list()]
    ids = [a.send(b.client_id, 3, b"m%d" % i) for i in range(6)]
    got = b.pull()
    assert [(r[1], r[3]) for r in got] == [(m, b"m%d" % i) for i, m in enumerate(ids)]


def test_a_name_registered_on_one_node_is_taken_on_all_at_once(cluster):
    name = unique_name("once")
    c = bwmsg.MsgClient(H, cluster.port, padded=True)
    c.register(name, key=rsa_key(0))
    for _ in range(len(cluster.nodes)):  # the next three land on each node
        v = bw.VaultClient(H, cluster.port)
        bw.expect(per_request(v, v.register, name), bw.NAME_TAKEN, "the same name again")
    ids = cluster.pg.psql("SELECT count(*) FROM clients WHERE NameText = '%s'" % name,
                          db=cluster.db).strip()
    assert ids == "1"


def test_names_that_read_alike_registered_at_once_on_every_node_make_one_client(cluster):
    """Look-alikes of one name ("x", "x" + U+200B, U+2060 + "x", ...)
    registered at the same moment through every node: no node's RAM knows
    the others' registrations in flight, and the store's key of each name
    (clients.NameKey, unique) lets one through."""
    base = unique_name("alike")
    names = [base, base + "\u200b", "\u2060" + base, " " + base, base + " ",
             base[:2] + "\u00ad" + base[2:]]
    go, won = threading.Barrier(len(names)), []

    def register(name):
        c = bwmsg.MsgClient(H, cluster.port, padded=True)
        c.connect()
        go.wait(10)
        try:
            c.register(name.encode(), key=rsa_key(0))
            won.append(name)
        except bwmsg.ServerError:
            pass
        finally:
            c.close()

    ts = [threading.Thread(target=register, args=(n,)) for n in names]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert len(won) == 1, won
    assert cluster.pg.psql("SELECT count(*) FROM clients WHERE NameText LIKE '%%%s%%'"
                           % base[2:], db=cluster.db).strip() == "1"


def test_every_node_sees_the_requests_round_robin(cluster):
    """The premise of the other tests: per-request connections reach every
    node, each node counting its own requests. Not a fixed rotation: a
    health check late under load makes HAProxy skip a node for a moment."""
    c = bwmsg.MsgClient(H, cluster.port, padded=True)
    c.register(unique_name("rr"), key=rsa_key(0))
    for k in range(1, 31):
        c.list()
        lists = [requests(s, 601) for s in cluster.nodes]
        if all(lists):
            break
    assert all(lists) and sum(lists) == k, lists


def metrics(node):
    import urllib.request

    with urllib.request.urlopen("http://%s:%d/metrics" % (H, node.ports["metrics"]),
                                timeout=10) as r:
        return r.read().decode()


def open_conns(node):
    """The node's open connections on the shared port."""
    import re

    m = re.search(r'^bulwark_connections\{[^}]*listener="shared"[^}]*\} (\S+)$',
                  metrics(node), re.M)
    return int(float(m.group(1))) if m else 0


def requests(node, code):
    """How many requests of code node answered (its /metrics)."""
    import re
    import urllib.request

    with urllib.request.urlopen("http://%s:%d/metrics" % (H, node.ports["metrics"]),
                                timeout=10) as r:
        text = r.read().decode()
    return sum(int(float(m)) for m in re.findall(
        r'^bulwark_requests_total\{[^}]*request="%d"[^}]*\} (\S+)$' % code, text, re.M))


def node_of(cluster, text):
    """The node whose log holds text (None if none yet)."""
    for n in cluster.nodes:
        if text in n.log():
            return n
    return None


def kill(node):
    node.kill()
    node.stopped = True  # on purpose: the teardown does not report it


def test_a_node_killed_mid_upload_the_client_finishes_through_another(cluster, tmp_path):
    """kill -9 of the node an upload streams into: bulwark send loses the
    connection, asks a fresh key through another node (1027) and sends the
    file again; it ends stored byte for byte and verified, and the
    multipart upload the dead node had begun is swept by the others."""
    data = os.urandom(192 << 20)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    work = tmp_path / "client"
    work.mkdir()
    name = unique_name("kill")
    proc = subprocess.Popen([str(bwd.BULWARK), "send", "-C", str(work), "-q", "-t", "20",
                             "-s", "%s:%d" % (H, cluster.port), "-n", name, "-f", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        victim = None
        deadline = time.monotonic() + 30
        while victim is None and time.monotonic() < deadline and proc.poll() is None:
            victim = node_of(cluster, "client=%s file=big.bin bytes=" % name)
            time.sleep(0.01)
        assert victim is not None, "the upload never started"
        # once S3 holds a part of it: the worst moment for the store
        assert bwd.wait_for(lambda: cluster.s3.uploads(cluster.bucket), 30)
        kill(victim)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out.decode(errors="replace")
    row = cluster.pg.psql("SELECT f.PathName, f.Verified FROM files f JOIN clients c "
                          "ON c.ID = f.ID WHERE c.NameText = '%s'" % name,
                          db=cluster.db).split("|")
    assert [x.strip() for x in row] == [row[0].strip(), "t"], row
    stored = cluster.s3.get(cluster.bucket, row[0].strip())
    assert stored is not None and hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
    # the dead node's multipart upload: aborted by the sweep of the others
    assert bwd.wait_for(lambda: cluster.s3.uploads(cluster.bucket) == [], 30), \
        cluster.s3.uploads(cluster.bucket)


def test_a_node_killed_mid_pull_loses_no_message(cluster):
    """A pull streams from one node; that node is killed before the client
    has the whole reply: nothing was delivered, and the next pull through
    another node brings every message."""
    a = bwmsg.MsgClient(H, cluster.port, padded=True)
    b = bwmsg.MsgClient(H, cluster.port, padded=True)
    a.register(unique_name("a"), key=rsa_key(0))
    b.register(unique_name("b"), key=rsa_key(1))
    body = os.urandom(4 << 20)
    ids = [a.send(b.client_id, 4, body + bytes([i])) for i in range(6)]
    # a pull that reads a little, then waits: its node holds the reply
    s = b.connect()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(bwmsg.pad_to_unit(bwmsg.pack_request(b.client_id, bwmsg.PULL)))
    head = bw.recv_exact(s, 7)
    assert bw.RESP_HEADER.unpack(head)[1] == bwmsg.WAITING
    s.recv(1000)
    # the node streaming it: the one that answered a pull (its count
    # moves before the header read above; connection counts would also
    # see HAProxy's health checks)
    victim, = [n for n in cluster.nodes if requests(n, bwmsg.PULL) == 1]
    kill(victim)
    b.close()
    got = b.pull()
    assert [(r[1], r[3]) for r in got] == [(m, body + bytes([i])) for i, m in enumerate(ids)]


@pytest.mark.long
def test_a_pull_through_a_healthy_node_is_not_cut_by_an_earlier_pulls_deletion(cluster):
    """500 messages of 64 KiB; one pull read whole (its connection still
    open: no evidence of delivery yet), a second one's node killed -9 after
    1 MiB, a third through the last node: once its 2104 was announced, the
    first connection ended in order, and its node deleted what it had
    delivered, rows the third had planned: the third was cut after 64-128
    KiB ("2104 cut short: sizes disagree"). The rule that a client's
    latest pull decides lived in each node's RAM; the pulls are now
    numbered in the store (clients.PullGen), and a deletion goes only
    while its pull is the latest. The third pull is whole; the messages
    come twice (at least once), none is lost."""
    a = bwmsg.MsgClient(H, cluster.port, padded=True)
    b = bwmsg.MsgClient(H, cluster.port, padded=True)
    a.register(unique_name("a"), key=rsa_key(0))
    b.register(unique_name("b"), key=rsa_key(1))
    ids = [a.send(b.client_id, 4, os.urandom(64 << 10)) for _ in range(500)]

    def pull_on(sock):
        sock.sendall(bwmsg.pad_to_unit(bwmsg.pack_request(b.client_id, bwmsg.PULL)))
        _, code, size = bw.RESP_HEADER.unpack(bw.recv_exact(sock, 7))
        assert code == bwmsg.WAITING
        return size

    first = socket.create_connection((H, cluster.port), timeout=30)
    size = pull_on(first)
    bw.recv_exact(first, size + (-(7 + size)) % 1024)  # the reply and its padding
    x, = [n for n in cluster.nodes if requests(n, bwmsg.PULL) == 1]
    second = socket.create_connection((H, cluster.port), timeout=30)
    second.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    pull_on(second)
    bw.recv_exact(second, 1 << 20)
    victim, = [n for n in cluster.nodes if n is not x and requests(n, bwmsg.PULL) == 1]
    kill(victim)
    second.close()
    third = socket.create_connection((H, cluster.port), timeout=30)
    third.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    size = pull_on(third)
    first.shutdown(socket.SHUT_WR)  # the evidence: the first pull arrived
    assert first.recv(10) == b""
    first.close()
    time.sleep(1)  # its node's deletion, as the third one streams
    got = bwmsg.parse_records(bw.recv_exact(third, size))
    third.close()
    assert [r[1] for r in got] == ids
    assert not [n for n in cluster.nodes if n is not victim and "cut short" in n.log()]


def test_two_pulls_of_one_mailbox_through_two_nodes_lose_nothing(cluster):
    """At least once: whatever one pull delivered and deleted, the other
    delivered too or a later pull brings. One of the two may be cut short
    (its connection closed before the whole 2104) when the other deleted
    rows both had planned: that is no loss, the next pull has the rest."""
    a = bwmsg.MsgClient(H, cluster.port, padded=True)
    b = bwmsg.MsgClient(H, cluster.port, padded=True)
    a.register(unique_name("a"), key=rsa_key(0))
    b.register(unique_name("b"), key=rsa_key(1))
    sent = [a.send(b.client_id, 3, b"m%d" % i) for i in range(200)]
    got, errors, cut = [], [], []

    def pull():
        try:
            c = bwmsg.MsgClient(H, cluster.port, padded=True)
            c.client_id = b.client_id
            got.extend(r[1] for r in c.pull())
        except AssertionError as e:  # a reply cut short (see above)
            cut.append(e)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    ts = [threading.Thread(target=pull) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors
    assert len(cut) < 2, cut  # one of the two pulls was complete
    # at least once: whatever one pull delivered and deleted, the other
    # had or a third one has now. The two pulls' deletions (on evidence of
    # their delivery, after the clients closed) may still be running on
    # their nodes: a pull through another node meanwhile is cut short when
    # rows it planned go (as above), and a client pulls again.
    for attempt in range(5):
        try:
            got += [r[1] for r in b.pull()]
            break
        except AssertionError:
            b.close()
            time.sleep(0.5)
    else:
        pytest.fail("every later pull was cut short")
    assert set(sent) <= set(got), sorted(set(sent) - set(got))[:10]


def test_decryption_failures_through_three_nodes_revoke_the_key(cluster):
    """--key-failures (3) counts a key's failures in its row: three uploads
    that do not decrypt, each straight to another node (the balancer's
    rotation is not fixed under load), revoke the key on every node; a
    reconnect (1027) then issues a new one, through the balancer."""
    data = os.urandom(5000)
    c = bw.VaultClient(H, cluster.port)
    bw.expect(per_request(c, c.register, unique_name("kf")), bw.REGISTERED, "register")
    bw.expect(per_request(c, c.send_pubkey), bw.KEY_STORED, "public key")
    failed_on = set()
    for node in cluster.nodes:
        before = [n.log().count("event=upload_aborted ") for n in cluster.nodes]
        c.port = node.port  # from 127.0.0.1, served without a PROXY header
        try:
            res = per_request(c, c.send_file, "x.bin", data, None, None,
                              bw.wrong_key(c.aes_key, data))
        finally:
            c.port = cluster.port
        assert res.response.code == bw.ERROR, res.response
        after = [n.log().count("event=upload_aborted ") for n in cluster.nodes]
        failed_on |= {i for i, (a, b) in enumerate(zip(before, after)) if b > a}
    assert len(failed_on) == 3, "the failures were not spread: %r" % failed_on
    assert bwd.wait_for(lambda: any("AES key revoked after 3 decryption failures" in n.log()
                                    for n in cluster.nodes), 5)
    assert cluster.pg.psql("SELECT AESKey IS NULL FROM clients WHERE NameText = '%s'" % c.name,
                           db=cluster.db).strip() == "t"
    # the right key now fails on whichever node: it is revoked everywhere
    for _ in range(len(cluster.nodes)):
        res = per_request(c, c.send_file, "x.bin", data)
        assert res.response.code == bw.ERROR, res.response
    bw.expect(per_request(c, c.reconnect), bw.RECONNECTED, "reconnect")
    res = per_request(c, c.send_file, "x.bin", data)
    bw.expect(res.response, bw.FILE_RECEIVED, "with the new key")


def gauge(node, name):
    import re

    m = re.search(r"^%s\{[^}]*\} (\S+)$" % name, metrics(node), re.M)
    return int(float(m.group(1))) if m else None


def test_every_node_shows_the_clusters_figures_beside_its_own(cluster):
    """The cluster's clients, files and queued messages come from the
    database: the same on every node within a few seconds, whichever node
    each request went through."""
    clients = [bwmsg.MsgClient(H, cluster.port, padded=True) for _ in range(3)]
    for i, c in enumerate(clients):
        c.register(unique_name("f%d" % i), key=rsa_key(i))
    clients[0].send(clients[1].client_id, 3, b"x" * 100)
    v = bw.VaultClient(H, cluster.port)
    bw.expect(per_request(v, v.register, unique_name("fv")), bw.REGISTERED)
    bw.expect(per_request(v, v.send_pubkey), bw.KEY_STORED)
    bw.expect(per_request(v, v.send_file, "a.bin", b"y" * 1000).response, bw.FILE_RECEIVED)
    want = {"bulwark_cluster_clients": 4, "bulwark_cluster_files": 1,
            "bulwark_cluster_messages_queued": 1, "bulwark_cluster_message_bytes_queued": 100}
    for n in cluster.nodes:
        assert bwd.wait_for(lambda: {k: gauge(n, k) for k in want} == want, 12), \
            {k: gauge(n, k) for k in want}


# --------------------------------------------------------------------------
# Rooms across nodes (--bus)


def rooms_port(node):
    return node.ports["rooms"]


def test_a_room_spans_the_nodes_one_order_for_everyone(cluster):
    """Created through one node, joined through the others with its
    password (a wrong one refused there too): every line reaches every
    member on every node, and all members see the room's lines in one
    order."""
    n1, n2, n3 = cluster.nodes
    alice = RoomClient(rooms_port(n1))
    room = alice.create("alice", "s3cret")
    bob = RoomClient(rooms_port(n2))
    bob.join("bob", room, "s3cret")
    alice.expect("bob has joined the group")
    wrong = RoomClient(rooms_port(n3))
    wrong.line("1")
    wrong.expect("Enter your name:")
    wrong.line("mallory")
    wrong.expect("Enter group ID:")
    wrong.line(str(room))
    wrong.expect("Enter password:")
    wrong.line("guess")
    wrong.expect("There is no group password like this,try again")
    wrong.close()
    carol = RoomClient(rooms_port(n3))
    carol.join("carol", room, "s3cret")
    alice.expect("carol has joined the group")
    bob.expect("carol has joined the group")
    # a second member on alice's node: its lines and another node's reach
    # two members on other nodes, so "one order" is a claim that can fail
    # (a node that gave its own members' lines to them before Redis
    # ordered them would show it)
    dave = RoomClient(rooms_port(n1))
    dave.join("dave", room, "s3cret")
    for c in (alice, bob, carol):
        c.expect("dave has joined the group")
    members = {"alice": alice, "bob": bob, "carol": carol, "dave": dave}
    # every node shows the cluster's rooms and members (Redis) beside its own
    for n, here in zip(cluster.nodes, (2, 1, 1)):
        assert bwd.wait_for(lambda: (gauge(n, "bulwark_rooms_cluster"),
                                     gauge(n, "bulwark_rooms_cluster_members")) == (1, 4), 15), n
        assert gauge(n, "bulwark_rooms_members") == here
    for i in range(20):  # everyone talks at once
        for name, c in members.items():
            c.line("%s %d" % (name, i))
    seen = {}
    for name, c in members.items():
        want = {"%s: %s %d" % (o, o, i) for o in members if o != name for i in range(20)}
        got = []
        while len(got) < len(want):
            got.append(c.next_line(timeout=10))
        assert set(got) == want, (name, sorted(set(want) - set(got))[:5])
        seen[name] = got
    # one order: any two lines two members both saw come in the same order
    # (each pair shares the lines of two senders, 40 lines, interleaved)
    for a in members:
        for b in members:
            if a < b:
                common = [ln for ln in seen[a] if ln in set(seen[b])]
                assert len(common) == 40
                assert common == [ln for ln in seen[b] if ln in set(seen[a])], (a, b)
    for c in members.values():
        c.close()


def test_room_ids_and_names_are_the_clusters(cluster):
    n1, n2, n3 = cluster.nodes
    a = RoomClient(rooms_port(n1))
    first = a.create("ann", "pw")
    # a name is taken in the room across nodes
    b = RoomClient(rooms_port(n2))
    b.line("1")
    b.expect("Enter your name:")
    b.line("ann")
    b.expect("Enter group ID:")
    b.line(str(first))
    b.expect("Enter password:")
    b.line("pw")
    b.expect("The name ann is taken in this group, try another")
    b.line("ann2")
    b.expect("You're connected to group chat #%d" % first)
    a.leave()
    b.leave()
    # the room went with its last member; its id is never given again
    c = RoomClient(rooms_port(n3))
    second = c.create("cid", "pw")
    assert second > first
    d = RoomClient(rooms_port(n1))
    d.line("1")
    d.expect("Enter your name:")
    d.line("dee")
    d.expect("Enter group ID:")
    d.line(str(first))
    d.expect("There is no group id like this,try again")
    c.close()
    d.close()


def test_a_killed_nodes_members_leave_and_an_emptied_room_goes(cluster):
    n1, n2, n3 = cluster.nodes
    alice = RoomClient(rooms_port(n1))
    room = alice.create("alice", "pw")
    bob = RoomClient(rooms_port(n2))
    bob.join("bob", room, "pw")
    carol = RoomClient(rooms_port(n3))
    carol.join("carol", room, "pw")
    alice.expect("carol has joined the group")
    kill(n2)
    # the others hear of it within a few seconds (heartbeats every 1 s,
    # a node missing for 5 s is reaped)
    alice.expect("bob has removed from the group", timeout=10)
    carol.expect("bob has removed from the group", timeout=10)
    alice.line("still here")
    carol.expect("alice: still here")
    assert bwd.wait_for(lambda: gauge(n3, "bulwark_rooms_cluster_members") == 2, 15)
    # the room goes when its last member anywhere leaves: carol, then
    # alice's node killed
    carol.leave()
    kill(n1)
    assert bwd.wait_for(lambda: cluster.redis.cmd("EXISTS", "bulwark:room:%d" % room) == ":0",
                        10), "the room outlived its last member"
    d = RoomClient(rooms_port(n3))
    d.line("1")
    d.expect("Enter your name:")
    d.line("dee")
    d.expect("Enter group ID:")
    d.line(str(room))
    d.expect("There is no group id like this,try again")
    d.close()


def bus_node(start_server, r, name, data_dir, url=None):
    """A node on the bus of Redis r alone (no PostgreSQL, S3 or balancer),
    named name (--node-name), once the bus is up on it: what it does at its
    first connection to Redis is queued by then, ahead of any client's.
    url: where it reaches r (a proxy's), r's own if None."""
    n = start_server("--bus", url or r.url(), "--node-name", name, "--metrics-listen", H + ":0",
                     data_dir=data_dir, rooms=True, want=("vault", "rooms", "metrics"),
                     env=r.env())
    assert bwd.wait_for(lambda: gauge(n, "bulwark_bus_up") == 1, 10), n.log_tail()
    return n


def alice_then_bob(alice_node, bob_node):
    """alice creates a room through alice_node, bob joins it through
    bob_node, and alice sees him come: (alice, bob, room)."""
    alice = RoomClient(rooms_port(alice_node))
    room = alice.create("alice", "pw")
    bob = RoomClient(rooms_port(bob_node))
    bob.join("bob", room, "pw")
    alice.expect(joined("bob"))
    return alice, bob, room


def alice_and_bob_on_two_nodes(start_server, r, tmp_path):
    """Nodes n1 and n2 on Redis r; alice creates a room through n1 and bob
    joins it through n2: (n1, n2, alice, bob, room)."""
    n1 = bus_node(start_server, r, "n1", tmp_path / "n1")
    n2 = bus_node(start_server, r, "n2", tmp_path / "n2")
    alice, bob, room = alice_then_bob(n1, n2)
    return n1, n2, alice, bob, room


def resp(*parts):
    """A command in RESP, as redisserver sends them."""
    out = b"*%d\r\n" % len(parts)
    for p in parts:
        p = p if isinstance(p, bytes) else str(p).encode()
        out += b"$%d\r\n%s\r\n" % (len(p), p)
    return out


def test_a_lone_node_restarted_at_once_takes_its_earlier_members_out(start_server, tmp_path):
    """A node never reaps itself, and a lone node has no other to reap it:
    killed with members and started again at once under the same
    --node-name, it takes out at its first connection to Redis what Redis
    still holds under its name (its earlier process's members), with the
    usual notice. Their room goes with them: its id is unknown to a new
    client, and Redis holds no room and no member (none left to count
    against --max-rooms, to hold a name, or to meet the new process's
    connection ids, which begin at 1 again)."""
    if not redisserver.installed():
        need_cluster()
    r = redisserver.RedisServer().start()
    sub = None
    try:
        n1 = bus_node(start_server, r, "n1", tmp_path / "n1")
        alice, bob, room = alice_then_bob(n1, n1)
        assert r.cmd("HLEN", "bulwark:room:%d:m" % room) == ":2"
        # a listener on the room's channel, as another node would be
        sub = socket.create_connection((H, r.port), timeout=5)
        sub.sendall(resp("AUTH", r.password) + resp("SUBSCRIBE", "bulwark:room:%d" % room))
        heard = [b""]

        def hear(want, timeout):
            """Reads until want is heard (None: for all of timeout)."""
            deadline = time.monotonic() + timeout
            while (want is None or want not in heard[0]) and time.monotonic() < deadline:
                sub.settimeout(max(0.01, min(0.2, deadline - time.monotonic())))
                try:
                    data = sub.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                heard[0] += data
            return want is not None and want in heard[0]

        assert hear(b"subscribe\r\n", 5), heard[0]
        kill(n1)
        for c in (alice, bob):
            c.close()
        n1 = bus_node(start_server, r, "n1", tmp_path / "n1")
        d = RoomClient(rooms_port(n1))
        d.line("1")
        d.expect(ASK_NAME)
        d.line("dee")
        d.expect(ASK_ID)
        d.line(str(room))
        got = d.next_line()
        assert got == NO_ID, ("room %d outlived the process its members were on: %r\n%s"
                              % (room, got, n1.log_tail()))
        d.close()
        state = lambda: [r.cmd("SCARD", "bulwark:rooms"),  # noqa: E731
                         r.cmd("EXISTS", "bulwark:room:%d" % room),
                         r.cmd("EXISTS", "bulwark:room:%d:m" % room),
                         r.cmd("EXISTS", "bulwark:room:%d:n" % room),
                         r.cmd("EXISTS", "bulwark:node:n1:rooms"),
                         r.cmd("EVAL", "return tonumber(redis.call('GET','bulwark:members') "
                               "or '0')", "0")]
        assert bwd.wait_for(lambda: state() == [":0"] * 6, 5), state()
        # each went with the notice, once
        for name in ("alice", "bob"):
            notice = ("%s has removed from the group" % name).encode()
            assert hear(notice, 5), heard[0]
        hear(None, 0.5)  # and nothing more
        for name in ("alice", "bob"):
            notice = ("%s has removed from the group" % name).encode()
            assert heard[0].count(notice) == 1, heard[0]
    finally:
        if sub is not None:
            sub.close()
        r.destroy()


def test_a_node_restarted_before_it_is_reaped_takes_its_members_out_once(start_server,
                                                                        tmp_path):
    """n1 killed and started again at once under the same --node-name,
    before n2 reaps it (a node silent for 5 s): the new n1 takes out its
    earlier process's members when it first reaches Redis. bob on n2 hears
    alice leave promptly, and once (n2's reaper, had n1 come back too
    late, would have taken her out itself: either way one notice). The
    room lives on with bob, and a member through the new n1 joins it."""
    if not redisserver.installed():
        need_cluster()
    r = redisserver.RedisServer().start()
    try:
        n1, n2, alice, bob, room = alice_and_bob_on_two_nodes(start_server, r, tmp_path)
        kill(n1)
        killed = time.monotonic()
        alice.close()
        n1 = bus_node(start_server, r, "n1", tmp_path / "n1")
        back = time.monotonic() - killed
        before = bob.expect(left("alice"), timeout=10)
        # exactly once: n2 could reap n1 only within 5 s of its last beat
        # (at most 1 s before the kill), and beats every second
        rest = bob.lines_for(max(0.5, killed + 7.5 - time.monotonic()))
        assert (before + rest).count(left("alice")) == 1, (back, before, rest)
        assert r.cmd("HLEN", "bulwark:room:%d:m" % room) == ":1"
        # the new n1's connection ids begin at 1 again: carol's is alice's
        # old one, and she is a member beside bob
        carol = RoomClient(rooms_port(n1))
        carol.join("carol", room, "pw")
        bob.expect(joined("carol"))
        carol.line("hello")
        bob.expect("carol: hello")
        bob.line("hi")
        carol.expect("bob: hi")
        assert r.cmd("HLEN", "bulwark:room:%d:m" % room) == ":2"
        for c in (bob, carol):
            c.close()
    finally:
        r.destroy()


def two_on_n1_one_on_n2(cluster):
    """A room: alice (who made it) and ann on the first node, bob on the
    second."""
    n1, n2, _ = cluster.nodes
    alice = RoomClient(rooms_port(n1))
    room = alice.create("alice", "pw")
    ann = RoomClient(rooms_port(n1))
    ann.join("ann", room, "pw")
    bob = RoomClient(rooms_port(n2))
    bob.join("bob", room, "pw")
    alice.expect("bob has joined the group")
    return alice, ann, bob


class HoldingProxy(tcpproxy.TcpProxy):
    """Between a node and Redis, on loopback: forwards both ways, and while
    hold (seconds) is set, holds each piece of Redis's answers that carries
    a SUBSCRIBE's confirmation that long (holding is set when one is).
    cut() ends every connection through it and closes each new one at once
    (Redis out of the node's reach, and only that node's), until mend()."""

    def __init__(self, target_port):
        self.hold = 0.0
        self.holding = threading.Event()
        super().__init__(target_port)

    def relay(self, data, src, dst, upstream):
        if upstream and self.hold and b"subscribe\r\n" in data:
            self.holding.set()
            time.sleep(self.hold)
        dst.sendall(data)
        return True


def test_the_bus_is_back_only_once_redis_has_every_subscription(start_server):
    """After Redis comes back, a node says the bus is back (log, gauge) only
    once Redis has confirmed its subscriptions again: a line sent at that
    moment reaches the node's members. n2 reaches Redis through a proxy
    that holds the confirmations 2 s; meanwhile n2 is not back."""
    if not redisserver.installed():
        need_cluster()
    r = redisserver.RedisServer().start()
    proxy = HoldingProxy(r.port)
    try:
        n1 = start_server("--bus", r.url(), "--node-name", "n1", "--metrics-listen", H + ":0",
                          rooms=True, want=("vault", "rooms", "metrics"), env=r.env())
        n2 = start_server("--bus", "redis://%s:%d" % (H, proxy.port), "--node-name", "n2",
                          "--metrics-listen", H + ":0",
                          rooms=True, want=("vault", "rooms", "metrics"), env=r.env())
        for n in (n1, n2):
            assert bwd.wait_for(lambda: gauge(n, "bulwark_bus_up") == 1, 10), n.log_tail()
        alice = RoomClient(rooms_port(n1))
        room = alice.create("alice", "pw")
        bob = RoomClient(rooms_port(n2))
        bob.join("bob", room, "pw")
        alice.expect("bob has joined the group")
        proxy.hold = 2.0
        r.stop()
        r.start()
        assert proxy.holding.wait(15), "n2 never subscribed again: the test tested nothing"
        # its confirmation is held (2 s, within the watchdog's 3 s): for
        # 1.2 s of it, n2 must not call itself back (the previous binary
        # did within milliseconds, once its other connection's PING was
        # answered)
        assert not bwd.wait_for(lambda: gauge(n2, "bulwark_bus_up") == 1 or
                                "is back; relays between nodes go on" in n2.log(), 1.2), \
            n2.log_tail()
        assert bwd.wait_for(lambda: "is back; relays between nodes go on" in n2.log(), 15)
        assert bwd.wait_for(lambda: "is back; relays between nodes go on" in n1.log(), 15)
        alice.line("right after")
        bob.expect("alice: right after", timeout=10)
        for c in (alice, bob):
            c.close()
    finally:
        proxy.close()
        r.destroy()


class DelayingProxy(tcpproxy.TcpProxy):
    """Between a node and Redis: forwards both ways, and while sub_delay
    (seconds) is set, holds each piece of the node's commands that carries
    a SUBSCRIBE that long; while reply_delay is set, each piece of Redis's
    answers on the node's command connection (the one that sends EVALs).
    delayed is set when anything is held."""

    def __init__(self, target_port):
        self.sub_delay = 0.0
        self.reply_delay = 0.0
        self.delayed = threading.Event()
        self.commands = set()  # the Redis side of each command connection
        super().__init__(target_port)

    def relay(self, data, src, dst, upstream):
        if not upstream and b"EVAL\r\n" in data:
            self.commands.add(dst)
        if not upstream and self.sub_delay and b"SUBSCRIBE\r\n" in data:
            self.delayed.set()
            time.sleep(self.sub_delay)
        elif upstream and self.reply_delay and src in self.commands:
            self.delayed.set()
            time.sleep(self.reply_delay)
        dst.sendall(data)
        return True


def alice_on_n1_and_n2_behind(start_server, tmp_path):
    """Redis, n1 on it and n2 behind a DelayingProxy, and a room alice
    created through n1: (r, proxy, n1, n2, alice, room)."""
    if not redisserver.installed():
        need_cluster()
    r = redisserver.RedisServer().start()
    proxy = DelayingProxy(r.port)
    n1 = bus_node(start_server, r, "n1", tmp_path / "n1")
    n2 = bus_node(start_server, r, "n2", tmp_path / "n2",
                  url="redis://%s:%d" % (H, proxy.port))
    alice = RoomClient(rooms_port(n1))
    room = alice.create("alice", "pw")
    return r, proxy, n1, n2, alice, room


def subscribers(r, room):
    return r.cmd("EVAL", "return redis.call('PUBSUB','NUMSUB',KEYS[1])[2]", "1",
                 "bulwark:room:%d" % room)


def test_a_member_joining_through_another_node_hears_the_line_that_answers_its_notice(
        start_server, tmp_path):
    """A member who joins through a node with no one in the room yet hears
    every line sent once the others see it come: its node subscribes to the
    room's channel, and waits for Redis to have the subscription, before it
    writes the join. n2 reaches Redis through a proxy that holds each
    SUBSCRIBE 1 s: n2 used to subscribe after the join's answer, and
    alice's line, sent the moment she saw bob come, reached Redis first and
    never reached bob (a loaded machine opened the same gap by chance). A
    join refused leaves nothing subscribed."""
    r, proxy, n1, n2, alice, room = alice_on_n1_and_n2_behind(start_server, tmp_path)
    try:
        proxy.sub_delay = 1.0
        # refused (alice's name is taken): n2 lets the room go again
        dup = RoomClient(rooms_port(n2))
        dup.ask_to_join("alice", room, "pw")
        dup.expect("The name alice is taken in this group, try another")
        assert gauge(n2, "bulwark_rooms") == 0
        assert bwd.wait_for(lambda: subscribers(r, room) == ":1", 10)  # n1's alone
        dup.close()
        proxy.delayed.clear()
        bob = RoomClient(rooms_port(n2))
        bob.join("bob", room, "pw")
        alice.expect(joined("bob"))
        alice.line("welcome")
        assert proxy.delayed.wait(5), "n2 sent no SUBSCRIBE: the test tested nothing"
        bob.expect("alice: welcome", timeout=10)
        # a second member through n2 finds the room heard already
        carol = RoomClient(rooms_port(n2))
        carol.join("carol", room, "pw")
        alice.expect(joined("carol"))
        alice.line("and you")
        carol.expect("alice: and you", timeout=10)
        bob.expect("alice: and you", timeout=10)
        for c in (bob, carol):
            c.leave()
        assert bwd.wait_for(lambda: gauge(n2, "bulwark_rooms") == 0, 10), n2.log_tail()
        assert bwd.wait_for(lambda: subscribers(r, room) == ":1", 10)
        alice.close()
    finally:
        proxy.close()
        r.destroy()


def test_a_join_notice_comes_from_the_members_node_once_it_is_in_the_room(
        start_server, tmp_path):
    """The joining member's node publishes its notice once the member is in
    the room there. n2 reaches Redis through a proxy that holds Redis's
    answers on n2's command connection 0.5 s: when the join's script
    published the notice itself, alice answered it at once, her line came
    to n2 on its other connection before the script's answer had put bob
    in the room, and bob never had it."""
    r, proxy, n1, n2, alice, room = alice_on_n1_and_n2_behind(start_server, tmp_path)
    try:
        # (n2's heartbeats are scripts: its command connection is known)
        assert bwd.wait_for(lambda: proxy.commands, 5), "n2 sent no EVAL"
        proxy.reply_delay = 0.5
        bob = RoomClient(rooms_port(n2))
        bob.ask_to_join("bob", room, "pw")
        # alice answers the notice at once, whether or not bob has been
        # told he is in
        alice.expect(joined("bob"))
        alice.line("welcome")
        bob.expect("You're connected to group chat #%d" % room, timeout=10)
        bob.expect("alice: welcome", timeout=10)
        proxy.reply_delay = 0.0
        bob.line("thanks")
        alice.expect("bob: thanks", timeout=10)
        for c in (alice, bob):
            c.close()
    finally:
        proxy.close()
        r.destroy()


def test_a_member_gone_before_its_join_is_answered_leaves_without_a_word(
        start_server, tmp_path):
    """bob's join through n2 is taken in Redis, and bob resets his
    connection before the answer reaches n2 (held 1 s by the proxy): the
    member Redis took for him leaves again, and alice hears neither his
    coming nor his going (the leave used to publish " has removed from the
    group" with no name before it)."""
    r, proxy, n1, n2, alice, room = alice_on_n1_and_n2_behind(start_server, tmp_path)
    try:
        assert bwd.wait_for(lambda: proxy.commands, 5), "n2 sent no EVAL"
        proxy.reply_delay = 1.0
        bob = RoomClient(rooms_port(n2))
        bob.ask_to_join("bob", room, "pw")
        assert bwd.wait_for(lambda: ("n2", "bob") in room_members(r, room), 10), \
            room_members(r, room)
        # reset while n2 waits for the join's answer (a connection paused
        # for an answer reads nothing, so a plain close would only be seen
        # after it: bob in, then out, each said)
        bob.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        bob.close()
        assert bwd.wait_for(lambda: room_members(r, room) == [("n1", "alice")], 10), \
            room_members(r, room)
        proxy.reply_delay = 0.0
        carol = RoomClient(rooms_port(n1))
        carol.join("carol", room, "pw")
        heard = alice.expect(joined("carol"))
        assert heard == [joined("carol")], heard
        carol.close()
        alice.close()
    finally:
        proxy.close()
        r.destroy()


def room_members(r, room):
    """Redis's members of room, as sorted (node, name) pairs (its hash
    bulwark:room:ID:m: "node/connection id" -> "name key\\nname")."""
    got = r.cmd("EVAL", "local t=redis.call('HGETALL',KEYS[1]) local o={} "
                "for i=1,#t,2 do local v=t[i+1] "
                "o[#o+1]=t[i]..'='..string.sub(v,string.find(v,'\\n',1,true)+1) end "
                "return redis.status_reply(table.concat(o,','))",
                "1", "bulwark:room:%d:m" % room)
    assert got.startswith("+"), got
    return sorted((m.split("/", 1)[0], m.split("=", 1)[1]) for m in got[1:].split(",") if m)


GIVEN_AWAY = "Your name was given to someone else while this server was cut off, goodbye."


def proxied_and_direct(start_server, r, proxy, tmp_path):
    """n1 on Redis r through proxy (which can cut it off alone), n2 on r
    directly: (n1, n2)."""
    n1 = bus_node(start_server, r, "n1", tmp_path / "n1",
                  url="redis://%s:%d" % (H, proxy.port))
    n2 = bus_node(start_server, r, "n2", tmp_path / "n2")
    return n1, n2


def test_a_name_given_away_while_a_node_was_cut_off_is_not_taken_back(start_server,
                                                                     tmp_path):
    """n1, cut off from Redis (its proxy ends its connections and refuses
    new ones; n1 beats and serves on), is reaped by n2: alice, on n1,
    leaves the room for bob on n2, and her name is free there. A new alice
    joins through n2. When n1 reaches Redis again it writes its members
    back, and the name is no longer hers: she is told so and let go,
    rather than be a second alice in the room (either could then speak as
    the other). Redis's room holds one alice, n2's, and bob hears no
    second alice come, nor one go."""
    if not redisserver.installed():
        need_cluster()
    r = redisserver.RedisServer().start()
    proxy = HoldingProxy(r.port)
    try:
        n1, n2 = proxied_and_direct(start_server, r, proxy, tmp_path)
        alice, bob, room = alice_then_bob(n1, n2)
        assert room_members(r, room) == [("n1", "alice"), ("n2", "bob")]
        proxy.cut()
        assert bwd.wait_for(lambda: "bus: lost Redis" in n1.log(), 10), n1.log_tail()
        # n1's heartbeat lapses (5 s): n2 reaps it, and alice's name is free
        bob.expect(left("alice"), timeout=15)
        assert room_members(r, room) == [("n2", "bob")]
        other = RoomClient(rooms_port(n2))
        other.join("alice", room, "pw")
        bob.expect(joined("alice"))
        assert "is back; relays between nodes go on" not in n1.log()  # still cut off
        proxy.mend()
        assert bwd.wait_for(lambda: "is back; relays between nodes go on" in n1.log(), 15), \
            n1.log_tail()
        alice.expect(GIVEN_AWAY, timeout=15)
        rest = alice.wait_closed(timeout=15)
        assert rest == [], rest
        assert room_members(r, room) == [("n2", "alice"), ("n2", "bob")]
        assert r.cmd("HLEN", "bulwark:room:%d:n" % room) == ":2"
        # no second alice came, and the one that went took no one with her
        heard = bob.lines_for(1.0)
        assert heard == [], heard
        other.line("it is me")
        bob.expect("alice: it is me")
        bob.line("hi alice")
        other.expect("bob: hi alice")
        for c in (bob, other):
            c.close()
    finally:
        proxy.close()
        r.destroy()


def test_a_node_taken_for_dead_while_it_ran_writes_its_members_again(start_server, tmp_path):
    """n1 stops for longer than a node may be silent (SIGSTOP: a stalled
    VM, a long pause) and n2 reaps it: alice, on n1, is out of Redis's
    room and her name is free. n1 never lost its connection to Redis, so
    nothing told it: it beat on, its members missing for good, a new
    "alice" could join through n2 as a second alice, and the room's cap
    no longer counted n1's members. Its next heartbeat now finds it was
    taken for dead, and it writes its members again."""
    if not redisserver.installed():
        need_cluster()
    r = redisserver.RedisServer().start()
    try:
        n1, n2, alice, bob, room = alice_and_bob_on_two_nodes(start_server, r, tmp_path)
        n1.proc.send_signal(signal.SIGSTOP)
        try:
            bob.expect(left("alice"), timeout=20)  # n2 reaped n1
            assert room_members(r, room) == [("n2", "bob")]
        finally:
            n1.proc.send_signal(signal.SIGCONT)
        assert bwd.wait_for(lambda: room_members(r, room) == [("n1", "alice"), ("n2", "bob")],
                            10), room_members(r, room)
        assert "took this one for dead" in n1.log(), n1.log_tail()
        # her name is hers again: a second alice is refused through n2
        got = RoomClient(rooms_port(n2))
        got.send(("1\nalice\n%d\npw\n" % room).encode())
        got.expect(lambda ln: ln.startswith("The name alice is taken"))
        got.close()
        alice.line("still here")
        bob.expect("alice: still here")
        for c in (alice, bob):
            c.close()
    finally:
        r.destroy()


def test_a_room_id_given_again_after_redis_lost_its_data_never_merges_two_rooms(start_server,
                                                                               tmp_path):
    """Redis restarts empty while n1, which holds bob's room, is cut off
    from it; n2 comes back first and, knowing nothing of bob's room, gives
    its id to eve's. When n1 writes bob back, the id is another room's: the
    verifiers differ, so bob is told and let go (he was once added to eve's
    room without a password: each read the other's lines, and /who listed
    them together). Eve's room is hers alone."""
    if not redisserver.installed():
        need_cluster()
    r = redisserver.RedisServer().start()
    proxy = HoldingProxy(r.port)
    try:
        n1, n2 = proxied_and_direct(start_server, r, proxy, tmp_path)
        bob = RoomClient(rooms_port(n1))
        room = bob.create("bob", "bob-secret")
        proxy.cut()
        assert bwd.wait_for(lambda: "bus: lost Redis" in n1.log(), 10), n1.log_tail()
        r.stop()
        r.start()
        assert bwd.wait_for(lambda: "is back; relays between nodes go on" in n2.log(), 15)
        eve = RoomClient(rooms_port(n2))
        assert eve.create("eve", "eve-pw") == room, "the id was not given again: nothing tested"
        proxy.mend()
        bob.expect("This group's number was given to another group while this server was "
                   "cut off, goodbye.", timeout=15)
        assert bob.wait_closed(timeout=15) == []
        assert "its members here are let go" in n1.log(), n1.log_tail()
        assert room_members(r, room) == [("n2", "eve")]
        eve.line("/who")
        eve.expect(lambda ln: ln.startswith("Members of group #%d (1): eve" % room))
        eve.line("for eve's room only")
        heard = eve.lines_for(1.0)
        assert not any("bob" in ln for ln in heard), heard
        # a join through n1 by eve's password is eve's room, and bob's
        # stale room on n1 is not where it lands
        dee = RoomClient(rooms_port(n1))
        dee.join("dee", room, "eve-pw")
        eve.expect(joined("dee"))
        dee.line("hello eve")
        eve.expect("dee: hello eve")
        for c in (eve, dee):
            c.close()
    finally:
        proxy.close()
        r.destroy()


@pytest.mark.long
def test_a_full_redis_makes_no_node_reap_another(start_server, tmp_path):
    """At maxmemory (no eviction) Redis refuses every node's heartbeat but
    still runs the reaper: each node took the others for dead, told their
    members that the others left, and deleted them from the room while
    they went on talking; the refused beats were not even logged. A node
    whose own beat Redis does not hold judges no one, says so, and after
    Redis takes beats again waits a node's silence before it judges."""
    if not redisserver.installed():
        need_cluster()
    r = redisserver.RedisServer().start()
    try:
        n1, n2, alice, bob, room = alice_and_bob_on_two_nodes(start_server, r, tmp_path)
        assert r.cmd("CONFIG", "SET", "maxmemory", "1") == "+OK"
        try:
            for n in (n1, n2):
                assert bwd.wait_for(lambda: "Redis refused this node's heartbeat" in n.log(),
                                    10), n.log_tail()
            # past a node's 5 s of silence: every heartbeat key has lapsed
            heard = alice.lines_for(7.0) + bob.lines_for(0.5)
            assert not any("has removed from the group" in ln for ln in heard), heard
            assert room_members(r, room) == [("n1", "alice"), ("n2", "bob")]
        finally:
            assert r.cmd("CONFIG", "SET", "maxmemory", "0") == "+OK"
        for n in (n1, n2):
            assert bwd.wait_for(lambda: "takes this node's heartbeats again" in n.log(),
                                10), n.log_tail()
            assert n.log().count("Redis refused this node's heartbeat") == 1, n.log_tail()
        heard = alice.lines_for(7.0) + bob.lines_for(0.5)
        assert not any("has removed from the group" in ln for ln in heard), heard
        assert room_members(r, room) == [("n1", "alice"), ("n2", "bob")]
        alice.line("still here")
        bob.expect("alice: still here")
        for c in (alice, bob):
            c.close()
    finally:
        r.destroy()


def test_a_nodes_rooms_in_redis_are_its_live_ones_and_a_big_one_is_reaped_in_steps(
        start_server, tmp_path):
    """The set of a node's rooms only grew (every room ever created or
    joined through it: 40 MB of Redis per million), and reaping a node
    with a million blocked Redis for seconds. A node's rooms in Redis are
    the rooms it has members in now; a dead node is reaped in steps of
    bounded work, so that the rooms go a slice at a time (the count is
    seen between steps) and Redis answers others meanwhile."""
    if not redisserver.installed():
        need_cluster()
    r = redisserver.RedisServer().start()
    try:
        n1 = bus_node(start_server, r, "n1", tmp_path / "n1")
        for i in range(20):
            c = RoomClient(rooms_port(n1))
            c.create("x%d" % i, "pw")
            c.close()
        alice = RoomClient(rooms_port(n1))
        room = alice.create("alice", "pw")
        ann = RoomClient(rooms_port(n1))
        ann.join("ann", room, "pw")
        alice.expect(joined("ann"))
        assert bwd.wait_for(lambda: r.cmd("SCARD", "bulwark:rooms") == ":1", 10)
        assert r.cmd("EXISTS", "bulwark:node:n1:rooms") == ":0"
        assert r.cmd("HLEN", "bulwark:node:n1:in") == ":1"
        assert r.cmd("EVAL", "return tonumber(redis.call('HGET',KEYS[1],ARGV[1]))", "1",
                     "bulwark:node:n1:in", str(room)) == ":2"
        ann.close()
        alice.expect(left("ann"))
        assert r.cmd("EVAL", "return tonumber(redis.call('HGET',KEYS[1],ARGV[1]))", "1",
                     "bulwark:node:n1:in", str(room)) == ":1"

        # a dead node "ghost" with 20,000 rooms of one member each, as an
        # earlier binary would have left it too (its :rooms set)
        ghost = 20000
        assert r.cmd("EVAL", "for i=1,tonumber(ARGV[1]) do local id=1000000+i "
                     "redis.call('HSET','bulwark:room:'..id,'salt','s','hash','h') "
                     "redis.call('HSET','bulwark:room:'..id..':m','ghost/'..i,'k'..i..'\\ng') "
                     "redis.call('HSET','bulwark:room:'..id..':n','k'..i,'ghost/'..i) "
                     "redis.call('SADD','bulwark:rooms',id) "
                     "redis.call('HSET','bulwark:node:ghost:in',id,1) "
                     "redis.call('SADD','bulwark:node:ghost:rooms',id) end "
                     "redis.call('INCRBY','bulwark:members',tonumber(ARGV[1])) "
                     "redis.call('SADD','bulwark:nodes','ghost') return 0",
                     "0", str(ghost)) == ":0"
        seen = set()
        deadline = time.monotonic() + 60
        while True:
            n = int(r.cmd("SCARD", "bulwark:rooms")[1:])
            seen.add(n)
            if n == 1 or time.monotonic() > deadline:
                break
        assert n == 1, "the ghost's rooms are not all gone: %d left" % n
        between = sorted(x for x in seen if 1 < x < ghost + 1)
        assert len(between) >= 2, "reaped in one go: %r" % sorted(seen)
        for key in ("bulwark:node:ghost:in", "bulwark:node:ghost:rooms",
                    "bulwark:node:ghost:reap"):
            assert r.cmd("EXISTS", key) == ":0", key
        assert r.cmd("SCARD", "bulwark:reaping") == ":0"
        assert r.cmd("EVAL", "return tonumber(redis.call('GET','bulwark:members'))",
                     "0") == ":1"
        alice.line("/who")
        alice.expect(lambda ln: ln.startswith("Members of group #%d (1): alice" % room))
        alice.close()
    finally:
        r.destroy()


def test_redis_lost_pauses_relays_between_nodes_not_within_one(cluster):
    n1, n2, _ = cluster.nodes
    alice, ann, bob = two_on_n1_one_on_n2(cluster)
    cluster.redis.stop()
    assert bwd.wait_for(lambda: "bus: lost Redis" in n1.log(), 10)
    alice.line("local only")
    ann.expect("alice: local only")  # within the node: never stops
    assert "alice: local only" not in bob.lines_for(1.0)
    cluster.redis.start()
    assert bwd.wait_for(lambda: "is back; relays between nodes go on" in n1.log() and
                        "is back; relays between nodes go on" in n2.log(), 15)
    # "back" is said once Redis has confirmed every subscription again:
    # the first line after it crosses, no probe needed
    alice.line("across again")
    bob.expect("alice: across again", timeout=10)
    ann.expect("alice: across again")
    bob.line("and back")
    alice.expect("bob: and back")
    assert n1.log().count("bus: lost Redis") == 1
    for c in (alice, ann, bob):
        c.close()


def test_postgresql_and_s3_lost_on_every_node_at_once(cluster):
    """The shared servers go away under three nodes: every node answers
    with the protocol's error (nothing half-done), and every node serves
    again by itself once they are back."""
    def session(name):
        c = bw.VaultClient(H, cluster.port)
        for step, want in ((lambda: c.register(name), bw.REGISTERED),
                           (c.send_pubkey, bw.KEY_STORED)):
            resp = per_request(c, step)
            if resp.code != want:
                return resp.code
        res = per_request(c, c.send_file, "f.bin", b"z" * 20000)
        return res.response.code

    assert session(unique_name("before")) == bw.FILE_RECEIVED
    cluster.pg.stop()
    try:
        # a registration through each node: refused, not half-done
        for i in range(len(cluster.nodes)):
            c = bw.VaultClient(H, cluster.port)
            resp = per_request(c, c.register, unique_name("down%d" % i))
            assert resp.code == bw.ERROR, resp
    finally:
        cluster.pg.start()
    assert bwd.wait_for(lambda: session(unique_name("back")) == bw.FILE_RECEIVED, 15)
    # every node reconnected: a session through each, one after the other
    for i in range(len(cluster.nodes)):
        assert session(unique_name("each%d" % i)) == bw.FILE_RECEIVED
    # each node noticed (its registration was refused), and said so once
    assert [n.log().count("lost the connection to PostgreSQL") for n in cluster.nodes] == \
        [1] * len(cluster.nodes)
    cluster.s3.stop()
    try:
        codes = [session(unique_name("nos3%d" % i)) for i in range(len(cluster.nodes))]
        assert codes == [bw.ERROR] * len(cluster.nodes), codes
    finally:
        cluster.s3.start()
    assert bwd.wait_for(lambda: session(unique_name("s3back")) == bw.FILE_RECEIVED, 30)
    rows = cluster.pg.psql("SELECT count(*) FROM files f JOIN clients c ON c.ID = f.ID "
                           "WHERE c.NameText LIKE 'nos3%%'", db=cluster.db).strip()
    assert rows == "0", "an upload S3 refused left a row"


def fnv1a64(text):
    h = 1469598103934665603
    for b in text.encode():
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h - (1 << 64) if h >= 1 << 63 else h


def test_a_paths_commit_lock_is_the_clusters(cluster):
    """The per-path commit lock is a PostgreSQL advisory lock on a shared
    store: while another session (another node, here psql) holds a file's
    path, a commit of it through any node waits, and goes on when it is
    released."""
    c = bw.VaultClient(H, cluster.port)
    bw.expect(per_request(c, c.register, unique_name("lk")), bw.REGISTERED)
    bw.expect(per_request(c, c.send_pubkey), bw.KEY_STORED)
    path = "files/%s/f.bin" % c.client_id.hex()
    holder = subprocess.Popen(
        [str(cluster.pg.bin / "psql"), "-X", "-q", "-h", str(cluster.pg.sock),
         "-p", str(cluster.pg.port), "-U", cluster.pg.user, "-d", cluster.db, "-c",
         "SELECT pg_advisory_lock(%d); SELECT pg_sleep(60)" % fnv1a64(path)],
        env={**os.environ, **cluster.pg.env()}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    answer = []
    try:
        assert bwd.wait_for(lambda: cluster.pg.psql(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
            db=cluster.db).strip() == "1", 10)
        t = threading.Thread(target=lambda: answer.append(
            per_request(c, c.send_file, "f.bin", b"q" * 50000)))
        t.start()
        assert bwd.wait_for(lambda: node_of(cluster, "file=f.bin bytes=50016 "),
                            10)
        time.sleep(0.5)
        assert not answer, "committed while another session held the path"
    finally:
        # the other session ends (a node gone), and its lock with it
        cluster.pg.psql("SELECT pg_terminate_backend(pid) FROM pg_locks "
                        "WHERE locktype = 'advisory' AND granted", db=cluster.db)
        holder.wait(10)
    t.join(30)
    assert answer and answer[0].response.code == bw.FILE_RECEIVED, answer
    bw.expect(per_request(c, c.crc_ok, "f.bin"), bw.ACK)
    # released after the commit: nothing of ours is left held
    assert bwd.wait_for(lambda: cluster.pg.psql(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'", db=cluster.db).strip()
        == "0", 10)


def test_a_verdict_is_its_uploaders_on_every_node(cluster):
    """Two nodes on one database and bucket. The owner's connection to n1
    uploads a replacement and owes its verdict. A stranger who knows only
    the client id sends through n2 a 1029 (to put the replacement the owner
    is about to reject in place) and a 1030 (to throw away the one it is
    about to confirm): the rule "only the uploader's connection decides
    while it is open" lived in n1's RAM, so n2 gave 2104 and the owner was
    then told its own verdict had worked while the confirmed data was lost.
    The rule is in the store now (the row names the lock the uploader's
    connection holds): n2 refuses both while that connection is open, and
    takes a verdict once it has closed."""
    n1, n2, _ = cluster.nodes
    owner = bw.VaultClient(H, n1.port)  # straight to n1, no balancer
    owner.connect()
    bw.expect(owner.register(unique_name("own")), bw.REGISTERED, "register")
    bw.expect(owner.send_pubkey(), bw.KEY_STORED, "public key")
    v1, v2, v3 = os.urandom(5000), os.urandom(6000), os.urandom(7000)
    bw.expect(owner.send_file("doc.bin", v1).response, bw.FILE_RECEIVED, "v1")
    bw.expect(owner.crc_ok("doc.bin"), bw.ACK, "v1's verdict")
    row = lambda: cluster.pg.psql(  # noqa: E731
        "SELECT f.Verified, coalesce(f.PendingPath, ''), f.PathName FROM files f "
        "JOIN clients c ON c.ID = f.ID WHERE c.NameText = '%s'" % owner.name,
        db=cluster.db).strip().split("|")
    stored = lambda: cluster.s3.get(cluster.bucket, row()[2])  # noqa: E731

    def stranger(step):
        s = bw.VaultClient(H, n2.port)
        s.client_id = owner.client_id
        s.connect()
        try:
            return step(s)
        finally:
            s.close()

    # 1029 through n2 for the replacement the owner will reject
    bw.expect(owner.send_file("doc.bin", v2).response, bw.FILE_RECEIVED, "v2")
    assert row()[1], "v2 is not pending: %r" % row()
    got = stranger(lambda s: s.crc_ok("doc.bin"))
    assert got.code == bw.ERROR, "n2 took a stranger's 1029: stored is %s" % (
        "v2" if stored() == v2 else "v1")
    assert "on another node, is open and owes the verdict" in n2.log(), n2.log_tail()
    bw.expect(owner.giveup("doc.bin"), bw.ACK, "the owner's 1031")
    assert row()[0] == "t" and not row()[1] and stored() == v1

    # 1030 through n2 against the replacement the owner will confirm
    bw.expect(owner.send_file("doc.bin", v3).response, bw.FILE_RECEIVED, "v3")

    def retry_then_barrier(s):
        s.crc_bad("doc.bin")  # no reply
        # requests on one connection are handled in order
        return s.request(bw.REGISTER, bw.name_field(unique_name("barrier")),
                         client_id=bw.ZERO_ID)
    bw.expect(stranger(retry_then_barrier), bw.REGISTERED, "the barrier")
    assert row()[1], "a stranger's 1030 through n2 threw the owner's v3 away"
    bw.expect(owner.crc_ok("doc.bin"), bw.ACK, "the owner's 1029")
    assert row()[0] == "t" and not row()[1] and stored() == v3

    # once the uploader's connection is gone, the verdict is anyone's
    # with the id (course clients open a connection per request)
    v4 = os.urandom(4000)
    bw.expect(owner.send_file("doc.bin", v4).response, bw.FILE_RECEIVED, "v4")
    owner.close()
    assert bwd.wait_for(lambda: stranger(lambda s: s.crc_ok("doc.bin")).code == bw.ACK, 10)
    assert stored() == v4


def test_a_verdict_through_another_node_waits_for_the_uploaders_close(cluster):
    """A client that opens a connection per request sends its 1029 on a new
    connection as soon as it has the 2103; through a balancer that one
    lands on another node, which may ask the store before the uploading
    node has seen the first connection close (a loaded node: seen in the
    sanitizer pass). n2 asks again for up to 2 s instead of answering 2107
    at once: the uploader's connection to n1 closes once n2 has read the
    1029 sent through it, and the 1029 gets 2104 with the new version in
    place. While it waits n2 does not hold the file's lock: the owner's
    own 1031 on n1 is answered meanwhile (a stranger's 1029 cannot hold up
    the uploader's verdict)."""
    n1, n2, _ = cluster.nodes
    owner = bw.VaultClient(H, n1.port)
    owner.connect()
    bw.expect(owner.register(unique_name("pr")), bw.REGISTERED, "register")
    bw.expect(owner.send_pubkey(), bw.KEY_STORED, "public key")
    v1, v2, v3 = os.urandom(3000), os.urandom(4000), os.urandom(5000)
    bw.expect(owner.send_file("f.bin", v1).response, bw.FILE_RECEIVED, "v1")
    bw.expect(owner.crc_ok("f.bin"), bw.ACK, "v1's verdict")
    stored = lambda: cluster.s3.get(cluster.bucket, cluster.pg.psql(  # noqa: E731
        "SELECT f.PathName FROM files f JOIN clients c ON c.ID = f.ID "
        "WHERE c.NameText = '%s'" % owner.name, db=cluster.db).strip())

    def through_n2(result, socks):
        s = bw.VaultClient(H, n2.port, timeout=20)
        s.client_id = owner.client_id
        s.connect()
        socks.append(s.sock)
        try:
            result.append((s.crc_ok("f.bin"), time.monotonic()))
        finally:
            s.close()

    def start_n2():
        """The 1029 through n2, once n2 has read it."""
        got, socks = [], []
        t = threading.Thread(target=through_n2, args=(got, socks))
        t.start()
        assert bwd.wait_for(lambda: socks and bwd.read_by_peer(socks[0]), 10)
        return t, got

    # the owner's connection stays open and decides for itself meanwhile:
    # its answer comes first (n2 let go of the file's lock while it waits)
    bw.expect(owner.send_file("f.bin", v2).response, bw.FILE_RECEIVED, "v2")
    t, got = start_n2()
    bw.expect(owner.giveup("f.bin"), bw.ACK, "the owner's 1031 while n2 waits")
    owner_done = time.monotonic()
    t.join(30)
    assert got and got[0][0].code == bw.ERROR, got
    assert owner_done < got[0][1], "the owner's verdict waited for the stranger's"
    assert stored() == v1
    # the owner closes once n2 has the 1029
    bw.expect(owner.send_file("f.bin", v3).response, bw.FILE_RECEIVED, "v3")
    t, got = start_n2()
    owner.close()
    t.join(30)
    assert got, "n2 did not answer"
    bw.expect(got[0][0], bw.ACK, "the 1029 through n2 once the uploader closed")
    assert stored() == v3


def test_a_claim_lost_with_its_session_is_taken_again(cluster):
    """The uploader's claim to its verdicts is an advisory lock of its
    node's reader session; PostgreSQL frees it when that session ends.
    Until the uploader's connection closed, another node then took a
    stranger's 1029 for the owner's. The node now makes the session again
    within a second and takes its claims back there."""
    n1, n2, _ = cluster.nodes
    owner = bw.VaultClient(H, n1.port)  # straight to n1
    owner.connect()
    bw.expect(owner.register(unique_name("own")), bw.REGISTERED, "register")
    bw.expect(owner.send_pubkey(), bw.KEY_STORED, "public key")
    bw.expect(owner.send_file("doc.bin", os.urandom(5000)).response, bw.FILE_RECEIVED, "v1")
    bw.expect(owner.crc_ok("doc.bin"), bw.ACK, "v1's verdict")
    bw.expect(owner.send_file("doc.bin", os.urandom(6000)).response, bw.FILE_RECEIVED, "v2")
    ended = cluster.pg.psql(
        "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l JOIN pg_stat_activity a "
        "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND a.datname = current_database()",
        db=cluster.db).strip()
    assert ended == "1", ended  # n1's reader, holding the owner's claim
    bwd.wait_for(lambda: "claims taken again" in n1.log(), 10)
    s = bw.VaultClient(H, n2.port)
    s.client_id = owner.client_id
    s.connect()
    got = s.crc_ok("doc.bin")
    s.close()
    assert got.code == bw.ERROR, "n2 took a stranger's 1029 after n1's session was lost"
    bw.expect(owner.giveup("doc.bin"), bw.ACK, "the owner's 1031")
    assert "claims taken again" in n1.log()


def test_a_nodes_sweep_never_removes_what_another_node_stored(cluster):
    """Every node's periodic sweep judges the objects under files/ against
    the rows; the rows another node wrote since this one last read them
    are in the database, not in its RAM. A client that talks to one node
    only (its files stored, a replacement pending) keeps both objects
    through many sweeps of the others, which know the client (they listed
    it) but never read its files; an object no row names under the same
    client's directory is removed by them."""
    n1, others = cluster.nodes[0], cluster.nodes[1:]
    v = bw.VaultClient(H, n1.port)  # straight to n1, no balancer
    v.connect()
    bw.expect(v.register(unique_name("sw")), bw.REGISTERED, "register")
    bw.expect(v.send_pubkey(), bw.KEY_STORED, "public key")
    first, second = os.urandom(70000), os.urandom(90000)
    bw.expect(v.send_file("kept.bin", first).response, bw.FILE_RECEIVED, "file")
    bw.expect(v.crc_ok("kept.bin"), bw.ACK, "verdict")
    stored = lambda: set(cluster.s3.keys(cluster.bucket, "files/"))  # noqa: E731
    before = stored()
    bw.expect(v.send_file("kept.bin", second).response, bw.FILE_RECEIVED, "replacement")
    pending = {k for k in stored() - before if k.startswith("files/.pending/")}
    # the others learn of the client (a 601 reads the new clients), not
    # of its files
    for i, node in enumerate(others):
        m = bwmsg.MsgClient(H, node.port, padded=True)
        m.register(unique_name("look"), key=rsa_key(i + 2))
        assert v.name in [n for _, n in m.list()]
    mine = "files/%s/" % v.client_id.hex()
    kept = {k for k in stored() if k.startswith(mine)} | pending
    assert len(kept) == 2, stored()  # the verified file and the pending one
    orphan = mine + "orphan.bin"
    st, _, body = cluster.s3.request("PUT", "/%s/%s" % (cluster.bucket, orphan), b"x" * 100)
    assert st == 200, (st, body)
    # a sweep has run past the grace (2 s) once the orphan is gone ...
    assert bwd.wait_for(lambda: orphan not in stored(), 30), stored()
    # ... and a few more rounds on every node (every 1.5 s)
    time.sleep(4)
    assert kept <= stored(), (kept, stored())
    for node in others:
        assert "sweep: removing files/%s/kept" % v.client_id.hex() not in node.log()
    # the replacement is still confirmable, and is then the stored file
    bw.expect(v.crc_ok("kept.bin"), bw.ACK, "verdict on the replacement")
    v.close()
    row = cluster.pg.psql("SELECT f.PathName FROM files f JOIN clients c ON c.ID = f.ID "
                          "WHERE c.NameText = '%s'" % v.name, db=cluster.db).strip()
    assert cluster.s3.get(cluster.bucket, row) == second


def test_room_ids_are_never_given_again_after_redis_restarts_empty(cluster):
    """Redis here keeps nothing across a restart (no persistence), so its
    counter of room ids begins at 0 again. Every node raises it to the
    highest id it has known as soon as it is back: a room created after
    the restart gets an id no room had, neither a live one (rejoined by
    its node) nor one that ended before."""
    n1, n2, n3 = cluster.nodes
    alice = RoomClient(rooms_port(n1))
    live = alice.create("alice", "pw")
    ended = []
    for i in range(3):
        c = RoomClient(rooms_port(n2))
        ended.append(c.create("x%d" % i, "pw"))
        c.close()
    cluster.redis.stop()
    cluster.redis.start()
    assert bwd.wait_for(lambda: all("is back; relays between nodes go on" in n.log()
                                    for n in cluster.nodes), 15)
    # a node logs that it is back when its raise of the counter is queued,
    # not done: n3 (which made no room) must not create before the nodes
    # that know the ids have raised it (see docs/scaling.md on that window)
    top = max([live] + ended)
    assert bwd.wait_for(lambda: cluster.redis.cmd(
        "EVAL", "return tonumber(redis.call('GET','bulwark:rooms:next') or '0')", "0")
        == ":%d" % top, 15)
    dee = RoomClient(rooms_port(n3))
    new = dee.create("dee", "other")
    assert new > max([live] + ended), (new, live, ended)
    # and alice's room is hers alone still
    dee.line("hello from dee")
    alice.line("hello from alice")
    assert not any("dee" in ln for ln in alice.lines_for(1.0))
    for c in (alice, dee):
        c.close()


def test_a_hung_redis_is_lost_and_no_line_within_a_node_is(cluster):
    """A Redis that stops answering without closing (stopped, or a network
    that drops silently) is noticed by the nodes within a few seconds (a
    command unanswered for 3 s), and then as after a clean loss: relays
    within a node go on. A line published while Redis hung, never ordered
    by it, still reaches the members of its sender's node."""
    import signal

    n1, n2, _ = cluster.nodes
    alice, ann, bob = two_on_n1_one_on_n2(cluster)
    pid = cluster.redis.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        alice.line("while it hangs")
        ann.expect("alice: while it hangs", timeout=15)
        assert bwd.wait_for(lambda: "no answer for 3 s" in n1.log(), 10), n1.log_tail()
        assert gauge(n1, "bulwark_bus_up") == 0
        alice.line("after it was lost")
        ann.expect("alice: after it was lost", timeout=5)
    finally:
        os.kill(pid, signal.SIGCONT)
    # n2 lost the bus during the hang too, and may come back later
    assert bwd.wait_for(lambda: all(gauge(n, "bulwark_bus_up") == 1 for n in (n1, n2)),
                        20), (n1.log_tail(), n2.log_tail())
    alice.line("across again")
    bob.expect("alice: across again", timeout=10)
    for c in (alice, ann, bob):
        c.close()


def test_a_queue_emptied_through_another_node_is_not_full_here(start_server, tmp_path):
    """Each node counts a recipient's queue from its own sends and
    deliveries; on a shared store the count is read again from the
    database before a 603 once it passes half a limit, so a queue that
    filled through one node and was pulled through another takes
    messages through the first again (and one truly full is refused on
    every node)."""
    need_cluster()
    cl = Cluster(start_server, tmp_path, extra=("--max-queued", "10"))
    try:
        n1, n2, n3 = cl.nodes
        a = bwmsg.MsgClient(H, n1.port, padded=True)
        a.register(unique_name("a"), key=rsa_key(0))
        b = bwmsg.MsgClient(H, n2.port, padded=True)
        b.register(unique_name("b"), key=rsa_key(1))
        for i in range(10):
            a.send(b.client_id, 3, b"m%d" % i)
        with pytest.raises(bwmsg.ServerError):
            a.send(b.client_id, 3, b"one too many")  # full: refused
        assert len(b.pull()) == 10  # through n2
        # n1 counted 10 queued; the store has none left once the pull's
        # deletion is done
        assert bwd.wait_for(lambda: cl.pg.psql(
            "SELECT count(*) FROM messages", db=cl.db).strip() == "0", 10)
        time.sleep(1.1)  # a queue is counted again at most once a second
        for i in range(10):
            a.send(b.client_id, 3, b"again %d" % i)  # through n1 again
        c = bwmsg.MsgClient(H, n3.port, padded=True)  # and n3 knows it full
        c.register(unique_name("c"), key=rsa_key(2))
        with pytest.raises(bwmsg.ServerError):
            c.send(b.client_id, 3, b"over the limit")
        assert [r[3] for r in b.pull()] == [b"again %d" % i for i in range(10)]
    finally:
        cl.stop()


@pytest.mark.long
@pytest.mark.plain_pass_only("its C paths run under ASan in other tests (CI's time)")
def test_a_slow_member_is_cut_off_by_its_own_node_and_the_others_go_on(start_server,
                                                                       tmp_path):
    """A member that stops reading, on one node, is cut off by that node
    once its queue (--rooms-queue) stays full; members on the other nodes
    get every line, in order, and the usual notice of its going."""
    need_cluster()
    cl = Cluster(start_server, tmp_path, extra=("--rooms-queue", "16384", "--rooms-rate", "0"))
    try:
        n1, n2, n3 = cl.nodes
        alice = RoomClient(rooms_port(n1))
        room = alice.create("alice", "pw")
        slow = RoomClient(rooms_port(n2), rcvbuf=4096)
        slow.join("slow", room, "pw")
        carol = RoomClient(rooms_port(n3))
        carol.join("carol", room, "pw")
        alice.expect("carol has joined the group")
        # slow reads nothing more from here on; alice sends batches of
        # 32 KB, each waited for on carol's side, until slow's node cuts
        # it off (the kernel's buffers take a few MB first)
        got = {"n": 0, "cut": False, "order": True, "want": None}

        def read_carol():
            # the notice comes from slow's node, alice's lines from hers:
            # the rest of a batch may reach carol after the notice, so
            # she reads on until she has every line sent
            # (until the sender is done: a loaded machine's batches can
            # take it past any fixed deadline; stop ends it in any case)
            while not stop.is_set():
                if got["cut"] and got["want"] is not None and got["n"] >= got["want"]:
                    return
                try:
                    ln = carol.next_line(timeout=1)
                except AssertionError:
                    continue
                if ln.startswith("alice: "):
                    got["order"] &= ln.startswith("alice: %06d " % got["n"])
                    got["n"] += 1
                elif ln == "slow was disconnected: not reading":
                    got["cut"] = True

        stop = threading.Event()
        t = threading.Thread(target=read_carol, daemon=True)
        t.start()
        try:
            sent, batch = 0, 32
            while sent < 600 and not got["cut"]:
                alice.sock.sendall("".join("%06d %s\n" % (sent * batch + i, "z" * 1000)
                                           for i in range(batch)).encode())
                sent += 1
                # (30 s: the first batch once waited more than 10 s while another
                # test's Swift started beside it on the same two cores)
                assert bwd.wait_for(lambda: got["n"] >= sent * batch or got["cut"], 30), \
                    (sent, got)
            got["want"] = sent * batch
            t.join(15)
        finally:
            stop.set()  # the reader ends, whatever failed above
        assert got["cut"], "slow was never cut off after %d KB" % (sent * batch)
        assert got["order"] and got["n"] == sent * batch, (got, sent * batch)
        alice.expect("slow was disconnected: not reading", timeout=10)
        assert gauge(n2, "bulwark_rooms_cut_off_total") == 1
        assert gauge(n1, "bulwark_rooms_cut_off_total") == 0
        alice.line("still here")
        carol.expect("alice: still here")
        for c in (alice, slow, carol):
            c.close()
    finally:
        cl.stop()


@pytest.mark.long
@pytest.mark.plain_pass_only("its C paths run under ASan in other tests (CI's time)")
def test_a_node_started_while_others_serve_joins_and_nothing_stops(start_server, tmp_path):
    """A fourth node started on the same stores while three serve: requests
    through the others go on being answered the whole time, and the new
    node serves a client registered through another (and its files) as
    soon as it listens."""
    need_cluster()
    cl = Cluster(start_server, tmp_path)
    try:
        n1 = cl.nodes[0]
        data = os.urandom(50000)
        v = bw.VaultClient(H, n1.port)
        v.connect()
        bw.expect(v.register(unique_name("j")), bw.REGISTERED, "register")
        bw.expect(v.send_pubkey(), bw.KEY_STORED, "public key")
        bw.expect(v.send_file("j.bin", data).response, bw.FILE_RECEIVED, "file")
        bw.expect(v.crc_ok("j.bin"), bw.ACK, "verdict")
        v.close()
        stop, answers, errors = threading.Event(), [], []

        def busy():
            m = bwmsg.MsgClient(H, cl.port, padded=True)
            try:
                m.register(unique_name("busy"), key=rsa_key(3))
                while not stop.is_set():
                    m.list()
                    answers.append(time.monotonic())
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(repr(e))

        t = threading.Thread(target=busy)
        t.start()
        assert bwd.wait_for(lambda: len(answers) > 20, 10)
        n4 = start_server(*cl.common, "--node-name", "n4", data_dir=tmp_path / "node4",
                          env=cl.env, rooms=True)
        # the new node: the file stored through n1 is there, and a session
        # through it goes on from where n1 left off
        w = bw.VaultClient(H, n4.port, key=v.key)
        w.client_id, w.name = v.client_id, v.name
        before = len(answers)
        w.connect()
        bw.expect(w.reconnect(), bw.RECONNECTED, "reconnect through the new node")
        bw.expect(w.send_file("j.bin", data[::-1]).response, bw.FILE_RECEIVED, "replacement")
        bw.expect(w.crc_ok("j.bin"), bw.ACK, "verdict through the new node")
        w.close()
        row = cl.pg.psql("SELECT f.PathName FROM files f JOIN clients c ON c.ID = f.ID "
                         "WHERE c.NameText = '%s' AND f.Verified" % v.name, db=cl.db).strip()
        assert cl.s3.get(cl.bucket, row) == data[::-1]
        assert bwd.wait_for(lambda: len(answers) > before + 20, 10)
        stop.set()
        t.join(30)
        assert not errors, errors
    finally:
        cl.stop()


@pytest.mark.parametrize("how", ["url", "file", "env", "wrong"])
def test_the_bus_password_comes_from_the_url_a_file_or_the_environment(start_server, tmp_path,
                                                                      how):
    """--bus's password, each way it can be given, against a Redis that
    requires it (a wrong one: the node says so once and serves its own
    rooms, never the password itself)."""
    if not redisserver.installed():
        need_cluster()
    r = redisserver.RedisServer().start()
    try:
        url, env, extra = r.url(), {}, []
        pw = r.password if how != "wrong" else "not-" + r.password
        if how in ("url", "wrong"):
            url = "redis://:%s@127.0.0.1:%d" % (pw, r.port)
        elif how == "file":
            f = tmp_path / "bus-password"
            f.write_text(pw + "\n")
            f.chmod(0o600)
            extra = ["--bus-password-file", str(f)]
        else:
            env = {"REDISCLI_AUTH": pw}
        srv = start_server("--bus", url, *extra, "--metrics-listen", H + ":0", env=env,
                           rooms=True, want=("vault", "rooms", "metrics"))
        if how == "wrong":
            assert bwd.wait_for(lambda: "bus: cannot reach Redis" in srv.log(), 10), \
                srv.log_tail()
            assert gauge(srv, "bulwark_bus_up") == 0
            a = RoomClient(srv.ports["rooms"])
            a.line("2")  # no room can be made without the bus
            a.expect("The group chat is unavailable, try again later", timeout=10)
            a.close()
        else:
            assert bwd.wait_for(lambda: gauge(srv, "bulwark_bus_up") == 1, 10), srv.log_tail()
            a = RoomClient(srv.ports["rooms"])
            room = a.create("alice", "pw")
            assert bwd.wait_for(
                lambda: r.cmd("EXISTS", "bulwark:room:%d" % room) == ":1", 5)
            a.close()
        assert r.password not in srv.log() and pw not in srv.log()
    finally:
        r.destroy()


SLOW_LOOKUP_MS = 15000


def test_a_slow_lookup_of_redis_name_holds_up_no_one(start_server, shim, tmp_path):
    """Accident: Redis goes away, and the resolver with it (one incident).
    The bus connects again to the name in --bus, and looking it up takes
    15 s here. It must not take the node with it: meanwhile a vault client
    registers (10 s timeout). hiredis would look the name up itself, on
    the loop, at every retry."""
    if not redisserver.installed():
        need_cluster()
    r = redisserver.RedisServer().start()
    arm = tmp_path / "arm"
    try:
        srv = start_server("--bus", "redis://:%s@localhost:%d" % (r.password, r.port),
                           "--metrics-listen", H + ":0", rooms=True,
                           want=("vault", "rooms", "metrics"),
                           env=bwd.fault_env(shim, arm=arm, fault="getaddrinfo:1:sleep=%d:localhost"
                                             % SLOW_LOOKUP_MS))
        assert bwd.wait_for(lambda: gauge(srv, "bulwark_bus_up") == 1, 10), srv.log_tail()
        arm.write_text("go")
        r.stop()
        assert bwd.wait_for(lambda: "bwfault: getaddrinfo #1 sleeps" in srv.log(), 10), \
            "the bus did not look Redis up again: the test did not test anything\n%s" % (
                srv.log_tail())
        c = bw.VaultClient(H, srv.port, timeout=10)
        try:
            c.connect()
            bw.expect(c.register(unique_name("dns")), bw.REGISTERED, "register")
        except socket.timeout:
            pytest.fail("a 1025 waited 10 s while the bus looked Redis up: "
                        "it is looked up on the loop")
        finally:
            c.close()
        assert "bwfault: getaddrinfo #1 woke" not in srv.log(), \
            "the lookup ended before the 1025: the test did not test it"
    finally:
        r.destroy()


@pytest.mark.parametrize("appendonly", [False, True], ids=["none", "appendonly"])
def test_a_redis_that_forgets_its_data_on_restart_is_named_in_the_log(start_server, appendonly):
    """Room ids can be given twice after Redis restarts empty (the window in
    docs/scaling.md): a node says so when it connects to a Redis without
    an append-only file, and says nothing when Redis has one."""
    if not redisserver.installed():
        need_cluster()
    r = redisserver.RedisServer(appendonly=appendonly).start()
    try:
        srv = start_server("--bus", r.url(), "--metrics-listen", H + ":0", rooms=True,
                           want=("vault", "rooms", "metrics"), env=r.env())
        assert bwd.wait_for(lambda: gauge(srv, "bulwark_bus_up") == 1, 10), srv.log_tail()
        # a room's creation goes after the question on the same connection:
        # once it is answered, so was the question
        c = RoomClient(rooms_port(srv))
        c.create("alice", "pw")
        c.close()
        warned = "keeps no append-only file (appendonly no)" in srv.log()
        assert warned == (not appendonly), srv.log_tail()
    finally:
        r.destroy()


@pytest.mark.plain_pass_only("its C paths run under ASan in other tests (CI's time)")
def test_stat_shows_the_nodes_figures_and_the_clusters(start_server, tmp_path):
    """The console's STAT on one node: its own clients and rooms, and the
    cluster's (clients, files, queued messages from PostgreSQL; rooms and
    members from Redis), whichever node took them."""
    from test_console import open_console

    need_cluster()
    cl = Cluster(start_server, tmp_path, console=True)
    try:
        n1, n2, n3 = cl.nodes
        a = bwmsg.MsgClient(H, n2.port, padded=True)
        a.register(unique_name("a"), key=rsa_key(0))
        b = bwmsg.MsgClient(H, n3.port, padded=True)
        b.register(unique_name("b"), key=rsa_key(1))
        for i in range(3):
            a.send(b.client_id, 3, b"q%d" % i)
        v = bw.VaultClient(H, n3.port)
        v.connect()
        bw.expect(v.register(unique_name("v")), bw.REGISTERED, "register")
        bw.expect(v.send_pubkey(), bw.KEY_STORED, "public key")
        bw.expect(v.send_file("s.bin", b"s" * 5000).response, bw.FILE_RECEIVED, "file")
        v.close()
        alice = RoomClient(rooms_port(n2))
        room = alice.create("alice", "pw")
        bob = RoomClient(rooms_port(n3))
        bob.join("bob", room, "pw")

        def stat():
            with open_console(n1) as c:
                c.hello()
                return c.ask("STAT")

        want = ("cluster clients: 3\n", "cluster files: 1\n", "cluster messages queued: 3\n",
                "rooms of the whole cluster (Redis): 1\n",
                "room members of the whole cluster (Redis): 2\n")
        assert bwd.wait_for(lambda: all(w in stat() for w in want), 15), stat()
        text = stat()
        assert "\nroom members: 0\n" in text  # n1's own: none of the room's are here
        assert text.endswith("node: n1\n")
        # FILS on n1, which stored nothing: not "no files", as if the store
        # were empty, but what this node has and what the store holds
        with open_console(n1) as c:
            c.hello()
            fils = c.ask("FILS")
        assert fils.startswith("no files on this node\n"), fils
        assert ("(node n1 lists the files it has loaded or served; the shared store held 1 "
                "at its last count)") in fils, fils
        for c in (alice, bob):
            c.close()
    finally:
        cl.stop()


@pytest.mark.plain_pass_only("its C paths run under ASan in other tests (CI's time)")
def test_per_address_limits_see_each_clients_own_address_through_the_balancer(start_server,
                                                                              tmp_path):
    """--max-reg-per-min 1 on three nodes behind HAProxy (send-proxy-v2):
    each node counts the address the PROXY header names, not the
    balancer's. One client address gets one registration a minute per node,
    and another address is not held by it.

    Which node serves a connection is read from the nodes' logs (each
    registration names a name no other uses), not assumed from the
    balancer's rotation: a health check that is late under load makes
    HAProxy skip a node for a moment, and the rotation with it."""
    from test_proxy import answer, connect, register_request

    need_cluster()
    cl = Cluster(start_server, tmp_path, extra=("--max-reg-per-min", "1"))
    try:
        def node_of(name):
            where = []

            def found():
                where[:] = [i for i, n in enumerate(cl.nodes) if "client=%s " % name in n.log()]
                return where

            assert bwd.wait_for(found, 10), "no node logged %s" % name
            assert len(where) == 1, (name, where)
            return where[0]

        taken = set()  # (address, node): that node has registered one from it

        def register_from(source):
            name = unique_name("pa")
            with connect(cl.port, source=source) as s:
                s.sendall(register_request(name))
                got = answer(s)
            node = node_of(name)
            want = bwmsg.ERROR if (source, node) in taken else bwmsg.REGISTERED
            assert got == want, (source, "n%d" % (node + 1), sorted(taken))
            taken.add((source, node))
            return got, node

        # one address until a node refuses it (the rotation's fourth, or
        # sooner if a node was skipped)
        seen = [register_from("127.0.0.31") for _ in range(3)]
        for _ in range(6):
            if bwmsg.ERROR in [g for g, _ in seen]:
                break
            seen.append(register_from("127.0.0.31"))
        assert bwmsg.ERROR in [g for g, _ in seen], seen
        # another address, through a node that already took the first's
        # one: registered there
        held = {n for _, n in seen}
        for _ in range(6):
            got, node = register_from("127.0.0.32")
            if node in held:
                assert got == bwmsg.REGISTERED
                break
        else:
            pytest.fail("no registration from 127.0.0.32 reached nodes %s" % sorted(held))
        # the refusal names the client's address; no node names the balancer
        assert any("127.0.0.31:" in n.log() for n in cl.nodes)
        assert not any(LB + ":" in n.log() for n in cl.nodes)
    finally:
        cl.stop()


@pytest.mark.plain_pass_only("its C paths run under ASan in other tests (CI's time)")
def test_our_messenger_client_through_the_balancer(cluster, tmp_path):
    """`bulwark msg`, one process a command, so each lands on the next
    node: registration, the list, keys, the symmetric key's exchange, text
    both ways and a 3 MiB file (its content in S3), pulled through
    whichever node comes."""
    from test_msg_client import Msg, conversation

    a, b = Msg(tmp_path / "ma", cluster.port), Msg(tmp_path / "mb", cluster.port)
    na, nb = unique_name("alice"), unique_name("bob")
    a.ok("register", na)
    b.ok("register", nb)
    conversation(a, na, b, nb, tmp_path)
