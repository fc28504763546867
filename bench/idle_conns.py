"""Holds idle TCP connections open to a server, for the vault benchmark.

Opens --count connections to --host:--port one after another, prints
`open N` on standard output, then sends nothing and waits until its standard
input closes (or --hold-seconds pass). Before closing them it prints
`closed-by-peer K`: how many the server had closed meanwhile. Exits 1, after
printing `error: ...`, when a connection cannot be opened in time.
"""

import argparse
import resource
import select
import socket
import sys
import time


def open_all(host, port, count, budget_s, connect_timeout_s):
    socks = []
    deadline = time.monotonic() + budget_s
    try:
        for i in range(count):
            if time.monotonic() > deadline:
                raise OSError("only %d of %d connections open after %gs"
                              % (i, count, budget_s))
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.settimeout(connect_timeout_s)
            s.connect((host, port))
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks


def closed_by_peer(socks):
    """Sockets that are readable now: with nothing ever sent to the server,
    that is an EOF or a reset."""
    poller = select.poll()
    for s in socks:
        poller.register(s.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
    return len(poller.poll(0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--hold-seconds", type=float, default=120.0)
    ap.add_argument("--open-budget", type=float, default=60.0,
                    help="seconds allowed for opening them all")
    ap.add_argument("--tag", default="", help="ignored; names the run")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.count + 64
    if soft < need and (hard == resource.RLIM_INFINITY or hard >= need):
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))

    try:
        socks = open_all(args.host, args.port, args.count, args.open_budget, 10.0)
    except OSError as e:
        print("error: %s" % e, flush=True)
        return 1
    print("open %d" % len(socks), flush=True)
    try:
        select.select([sys.stdin], [], [], args.hold_seconds)
        print("closed-by-peer %d" % closed_by_peer(socks), flush=True)
    finally:
        for s in socks:
            s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
