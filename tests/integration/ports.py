"""Ports for the servers the tests start themselves (Swift, memcached,
PostgreSQL, Redis, HAProxy).

Binding port 0 and closing the socket is not enough for a server that
binds a second later: the kernel hands out the same range
(ip_local_port_range) to every bind(0), so to every bulwarkd on --port 0,
and to every outgoing connection, and another test may hold the port by
then. Most servers then fail to start, which is loud; Swift's storage
servers retry their bind for 30 s while the proxy sends their requests to
whoever holds the port. A CI run saw this: one worker's S3 store answered
400 and 500 to most requests for its whole pass.

So reserve() picks a port below the ephemeral range, where neither bind(0)
nor a connection lands, that is free now, and holds an exclusive lock on
it until this process exits (or release()), so that no other process using
this module (the other xdist worker, another run, a bench) picks it too."""

import fcntl
import os
import random
import socket
import tempfile

LOCK_DIR = os.path.join(tempfile.gettempdir(), "bulwark-ports")
LOWEST = 20000

_held = {}


def _span():
    """[low, high): ports outside the kernel's ephemeral range, 20000 and
    up below it on a default system (32768-60999), else above it, else
    (a range that covers nearly everything) what is left of 10000-65535,
    where the locks still keep our own runs apart."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split()[:2])
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    if lo - LOWEST >= 2000:
        return LOWEST, lo
    if 65536 - (hi + 1) >= 2000:
        return hi + 1, 65536
    return 10000, 65536


def _free(host, port):
    """Nothing is bound to host:port now (not even a socket in TIME-WAIT)."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _lock_dir():
    try:
        os.mkdir(LOCK_DIR)
        os.chmod(LOCK_DIR, 0o1777)  # shared by every user's runs
    except FileExistsError:
        pass
    return LOCK_DIR


def reserve(host="127.0.0.1"):
    """A free port on host, reserved for this process until it exits."""
    low, top = _span()
    d = _lock_dir()
    for _ in range(500):
        port = random.randrange(low, top)
        if port in _held:
            continue
        try:
            fd = os.open(os.path.join(d, str(port)), os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # another user's lock file
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another process holds it
            os.close(fd)
            continue
        if _free(host, port):
            _held[port] = fd
            return port
        os.close(fd)
    raise RuntimeError("no free port between %d and %d after 500 tries" % (low, top))


def hold(port, timeout=60.0):
    """Waits (at most timeout seconds) until no other process using this
    module holds port, then holds it: for a test that needs one fixed port
    (the daemon's default), which the other xdist worker may need too."""
    import time
    fd = os.open(os.path.join(_lock_dir(), str(port)), os.O_RDWR | os.O_CREAT, 0o666)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise RuntimeError("port %d held by another process for %gs" % (port, timeout))
            time.sleep(0.1)
    _held[port] = fd
    return port


def release(port):
    """Let other processes reserve port again (its server is gone)."""
    fd = _held.pop(port, None)
    if fd is not None:
        os.close(fd)
