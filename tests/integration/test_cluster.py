"""Several bulwarkd nodes sharing one PostgreSQL and one S3 store behind a
real HAProxy (send-proxy-v2, health checks on): any request on any node.
A course-style client opens one connection per request, so its steps land
on different nodes in turn (round robin); what one node did must hold on
the others at once."""

import os

import pytest

import bwd
import bwmsg
import bwvault as bw
import haproxy
import pgserver
import s3server
from bwd import rsa_key, unique_name

H = "127.0.0.1"
LB = "127.0.0.9"


class Cluster:
    def __init__(self, start_server, tmp_path, n=3):
        self.pg = pgserver.shared()
        self.db = self.pg.create_db(unique_name("cl").replace("-", "_"))
        s3 = s3server.shared()
        if not getattr(s3, "_test_bucket", False):
            s3.create_bucket(bwd.S3_TEST_BUCKET)
            s3._test_bucket = True
        prefix = unique_name("cl")
        self.common = ["--db", self.pg.url(self.db),
                       "--blobs", "s3://%s/%s" % (bwd.S3_TEST_BUCKET, prefix),
                       "--s3-endpoint", s3.endpoint, "--s3-path-style",
                       "--proxy-from", LB]
        self.env = {**self.pg.env(), **s3.env()}
        self.nodes = []
        for i in range(n):
            self.nodes.append(start_server(*self.common, "--node-name", "n%d" % (i + 1),
                                           "--metrics-listen", H + ":0",
                                           data_dir=tmp_path / ("node%d" % (i + 1)),
                                           env=self.env, rooms=True))
        self.lb = haproxy.HaProxy({"shared": [(H, s.port) for s in self.nodes]},
                                  source=LB).start()
        assert bwd.wait_for(lambda: self.lb.servers_up("shared") == n, 10)
        self.port = self.lb.ports["shared"]

    def stop(self):
        self.lb.stop()


@pytest.fixture
def cluster(start_server, tmp_path):
    for what, ok in (("haproxy", haproxy.installed()), ("PostgreSQL", pgserver.pg_bin()),
                     ("Swift", s3server.installed())):
        if not ok:
            if os.environ.get("BULWARK_REQUIRE_BINARIES"):
                pytest.fail("%s is not installed (scripts/deps test)" % what)
            pytest.skip("%s is not installed" % what)
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


def test_every_node_sees_the_requests_round_robin(cluster):
    """The premise of the other tests: per-request connections land on
    every node in turn, each node's log naming its own requests."""
    c = bwmsg.MsgClient(H, cluster.port, padded=True)
    c.register(unique_name("rr"), key=rsa_key(0))
    for _ in range(6):
        c.list()
    lists = [requests(s, 601) for s in cluster.nodes]
    assert lists == [2, 2, 2], lists


def requests(node, code):
    """How many requests of code node answered (its /metrics)."""
    import re
    import urllib.request

    with urllib.request.urlopen("http://%s:%d/metrics" % (H, node.ports["metrics"]),
                                timeout=10) as r:
        text = r.read().decode()
    return sum(int(float(m)) for m in re.findall(
        r'^bulwark_requests_total\{[^}]*code="%d"[^}]*\} (\S+)$' % code, text, re.M))
