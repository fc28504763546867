"""A TCP proxy on loopback for the tests that put faults between bulwarkd
and a server it uses (Redis, PostgreSQL): each connection is relayed both
ways by a thread per direction. A subclass's relay() sees each piece of
data and decides what becomes of it; cut() ends every connection and
closes each new one at once until mend()."""

import socket
import threading

H = "127.0.0.1"


class TcpProxy:
    def __init__(self, target_port):
        self.target = target_port
        self.lock = threading.Lock()
        self.cut_off = False
        self.sock = socket.socket()
        self.sock.bind((H, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def relay(self, data, src, dst, upstream):
        """Passes data on (upstream: it came from the target); False ends
        this connection."""
        dst.sendall(data)
        return True

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:  # not cut between this look and the list
                if self.cut_off:
                    c.close()
                    continue
                try:
                    r = socket.create_connection((H, self.target), timeout=5)
                except OSError:
                    c.close()
                    continue
                r.settimeout(None)
                self.conns += [c, r]
            threading.Thread(target=self._pump, args=(c, r, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(r, c, True), daemon=True).start()

    def _pump(self, src, dst, upstream):
        try:
            while True:
                data = src.recv(65536)
                if not data or not self.relay(data, src, dst, upstream):
                    break
        except OSError:
            pass
        _shut(src, dst)

    def cut(self):
        with self.lock:
            self.cut_off = True
            _shut(*self.conns)

    def mend(self):
        with self.lock:
            self.cut_off = False

    def close(self):
        self.sock.close()
        for x in self.conns:
            x.close()


def _shut(*socks):
    for x in socks:
        try:
            x.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
