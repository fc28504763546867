"""Clients proven by their key across the nodes of a cluster: two bulwarkd
on one PostgreSQL and one S3 store (the cluster of test_cluster.py), each
with its TLS port. What one node recorded (a client's key, its owner's
choice of TLS only) is the rule on the other: each node judges against the
row the store has, never its own RAM alone."""

import os
import re
import time

import bwd
import bwmsg
import bwvault as bw
import pgserver
import s3server
import tcpproxy
from bwd import rsa_key, unique_name
from test_cluster import Cluster, need_cluster
from tlsutil import TlsMsgClient, TlsVaultClient

H = "127.0.0.1"
TLS_RE = re.compile(r"vault listening on tls://127\.0\.0\.1:(\d+)")


def tls_port(node):
    m = bwd.wait_for(lambda: TLS_RE.search(node.log()), 10)
    assert m, node.log_tail()
    return int(m.group(1))


def test_a_key_and_a_tls_only_choice_made_on_one_node_hold_on_the_other(start_server,
                                                                          tmp_path):
    need_cluster()
    c = Cluster(start_server, tmp_path, n=2, extra=("--tls-port", "0"))
    try:
        n1, n2 = c.nodes
        t1, t2 = tls_port(n1), tls_port(n2)
        # the messenger: registered on n1, proven on n2 at its first visit
        owner = TlsMsgClient(H, t1, key=rsa_key(22))
        owner.register(unique_name("cto"))
        sender = bwmsg.MsgClient(H, n2.port)
        sender.register(unique_name("cts"), key=rsa_key(23))
        mid = sender.send_text(owner.client_id, bytes(16), b"through n2")
        sender.close()
        thief = TlsMsgClient(H, t2, key=rsa_key(24))
        thief.client_id = owner.client_id
        assert thief.request(bwmsg.PULL, b"") == (bwmsg.ERROR, b"")
        thief.close()
        o2 = TlsMsgClient(H, t2, key=rsa_key(22))
        o2.client_id = owner.client_id
        (r,) = o2.pull()
        assert r[1] == mid
        o2.close()
        owner.close()
        # the vault: a key given on n1 is the one n2 checks
        v1 = TlsVaultClient(H, t1, key=rsa_key(25)).connect()
        bw.expect(v1.register(unique_name("ctv")), bw.REGISTERED, "register on n1")
        bw.expect(v1.send_pubkey(), bw.KEY_STORED, "key on n1")
        v1.close()
        s2 = TlsVaultClient(H, t2, key=rsa_key(26)).connect()
        s2.client_id, s2.name = v1.client_id, v1.name
        assert s2.request(bw.RECONNECT, bw.name_field(v1.name)).code == bw.ERROR
        s2.close()
        o2 = TlsVaultClient(H, t2, key=rsa_key(25)).connect()
        o2.client_id, o2.name = v1.client_id, v1.name
        bw.expect(o2.reconnect(), bw.RECONNECTED, "the owner on n2")
        o2.close()

        # TLS only, asked on n1: n2's plain port refuses the id. A 1027
        # reads the row first at once; a 604, whose requester n2 read a
        # moment ago, within the two seconds its row is taken from RAM
        p2 = bwmsg.MsgClient(H, n2.port)
        p2.client_id = v1.client_id
        assert p2.request(bwmsg.PULL, b"")[0] == bwmsg.WAITING  # served: not yet
        p2.close()
        a1 = TlsVaultClient(H, t1, key=rsa_key(25)).connect()
        a1.client_id = v1.client_id
        assert a1.request(1103, b"").code == 2114
        a1.close()
        v2 = bw.VaultClient(H, n2.port, key=rsa_key(25)).connect()
        v2.client_id, v2.name = v1.client_id, v1.name
        assert v2.request(bw.RECONNECT, bw.name_field(v1.name)).code == bw.ERROR
        v2.close()
        time.sleep(2.1)  # the documented bound, not a measurement
        p2 = bwmsg.MsgClient(H, n2.port)
        p2.client_id = v1.client_id
        assert p2.request(bwmsg.PULL, b"") == (bwmsg.ERROR, b"")
        p2.close()
        assert "reason=plain_refused" in n2.log()
        # still served over TLS on either node
        for port in (t1, t2):
            o = TlsVaultClient(H, port, key=rsa_key(25)).connect()
            o.client_id, o.name = v1.client_id, v1.name
            bw.expect(o.reconnect(), bw.RECONNECTED, "over TLS")
            o.close()
    finally:
        c.stop()


def test_a_node_that_cannot_read_a_clients_row_refuses_rather_than_guess(start_server,
                                                                         tmp_path):
    """n2 reaches PostgreSQL through a proxy the test cuts. Before the cut
    n2 read the client's row (not TLS-only then); the owner then chose TLS
    only through n1. With n2's reads failing, a plain request for that id
    on n2 was judged on n2's RAM, which still said "plain is fine": it is
    now refused (event=auth_refused reason=row_unread, counted), a 603's
    content thrown away so that its connection stays, and so is a TLS
    request, whose key n2 cannot check against the store either. Once
    the proxy is mended, the next read gives the store's answer: plain
    refused as TLS only, TLS served."""
    need_cluster()
    pg = pgserver.shared()
    db = pg.create_db(unique_name("cut").replace("-", "_"))
    s3 = s3server.shared()
    bucket = s3.bucket_for("cut")
    proxy = tcpproxy.TcpProxy(pg.port)
    common = ["--blobs", "s3://%s" % bucket, "--s3-endpoint", s3.endpoint,
              "--s3-path-style", "--tls-port", "0", "--metrics-listen", H + ":0"]
    env = {**pg.env(), **s3.env()}
    n1 = start_server("--db", pg.url(db, tcp=True), *common, "--node-name", "n1",
                      data_dir=tmp_path / "n1", env=env)
    through = pg.url(db, tcp=True).replace(":%d/" % pg.port, ":%d/" % proxy.port)
    n2 = start_server("--db", through, *common, "--node-name", "n2",
                      data_dir=tmp_path / "n2", env=env)
    try:
        t1, t2 = tls_port(n1), tls_port(n2)
        key = rsa_key(27)
        v1 = TlsVaultClient(H, t1, key=key).connect()
        bw.expect(v1.register(unique_name("cut")), bw.REGISTERED, "register on n1")
        bw.expect(v1.send_pubkey(), bw.KEY_STORED, "key on n1")
        v1.close()
        # n2 reads the row: a plain request is served there
        p2 = bwmsg.MsgClient(H, n2.port)
        p2.client_id = v1.client_id
        assert p2.request(bwmsg.PULL, b"")[0] == bwmsg.WAITING
        p2.close()
        a1 = TlsVaultClient(H, t1, key=key).connect()
        a1.client_id = v1.client_id
        assert a1.request(1103, b"").code == 2114
        a1.close()

        proxy.cut()
        time.sleep(2.1)  # past the 2 s a 604's requester row is taken from RAM
        mark = len(n2.log())
        p2 = bwmsg.MsgClient(H, n2.port)
        p2.client_id = v1.client_id
        assert p2.request(bwmsg.PULL, b"") == (bwmsg.ERROR, b"")
        # a 603's content is on its way behind the refused head: it is
        # read and thrown away, and the connection stays in step (the
        # second 603 on it is answered as the first)
        send = bwmsg.SEND_PREFIX.pack(v1.client_id, 3, 1000) + os.urandom(1000)
        assert p2.request(bwmsg.SEND, send) == (bwmsg.ERROR, b"")
        assert p2.request(bwmsg.SEND, send) == (bwmsg.ERROR, b"")
        p2.close()
        o2 = TlsVaultClient(H, t2, key=key).connect()
        o2.client_id, o2.name = v1.client_id, v1.name
        assert o2.request(bw.RECONNECT, bw.name_field(v1.name)).code == bw.ERROR
        o2.close()
        assert bwd.wait_for(lambda: n2.log()[mark:].count("reason=row_unread") == 4, 10), \
            n2.log()[mark:]
        assert "reason=plain_refused" not in n2.log()[mark:]

        proxy.mend()
        mark = len(n2.log())

        def plain_refused():
            p = bwmsg.MsgClient(H, n2.port)
            p.client_id = v1.client_id
            try:
                return p.request(bwmsg.PULL, b"") == (bwmsg.ERROR, b"") and \
                    "reason=plain_refused" in n2.log()[mark:]
            finally:
                p.close()
        # the store's connection comes back on its own schedule
        assert bwd.wait_for(plain_refused, 30), n2.log()[mark:]
        o2 = TlsVaultClient(H, t2, key=key).connect()
        o2.client_id, o2.name = v1.client_id, v1.name
        bw.expect(o2.reconnect(), bw.RECONNECTED, "over TLS on n2, the row read again")
        o2.close()
    finally:
        proxy.close()
