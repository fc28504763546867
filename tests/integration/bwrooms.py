"""A small independent client of the rooms protocol (spec/rooms.md) for the
integration tests: line-based, like nc. Every wait is bounded in time; a
wait that ends without what it waited for raises AssertionError showing
what did arrive."""

import os
import re
import selectors
import socket
import subprocess
import threading
import time

# The server's texts (spec/rooms.md, seed 004).
MENU = ("Hello client, please choose an option:\n"
        "1. Connect to a group chat.\n"
        "2. Create a group chat.\n"
        "3. Exit the server.\n")
MENU_LAST = "3. Exit the server."
ASK_NAME = "Enter your name:"
ASK_ID = "Enter group ID:"
ASK_PASS = "Enter password:"
ASK_CREATE_PASS = "Enter password for the group:"
NO_ID = "There is no group id like this,try again"
NO_PASS = "There is no group password like this,try again"
INVALID = "You chose an invalid option..."
EXIT_MENU = "Exit the chat"
BYE = "You chose exit so you removed from the group."
TOO_MANY = "Too many wrong attempts, goodbye."
SHUTDOWN = "The server is shutting down, goodbye."
NAME_AGAIN = "A name has 1 to 64 characters, try again"
EMPTY_PASS = "A password cannot be empty, try again"
LONG_PASS = "A password has at most 128 bytes, try again"
FULL = "This group is full, try again later"
TOO_MANY_ROOMS = "There are too many groups, try again later"
LINE_MAX = 4096
TOO_LONG = "That line is over %d bytes, goodbye." % LINE_MAX
NOT_READING = " was disconnected: not reading"


def chat(start_server, *args, **kw):
    """bulwarkd with the group chat (conftest's start_server factory)."""
    return start_server(*args, rooms=True, **kw)


def wrong_count(srv, what, source):
    """Log lines of wrong ids ("id") or passwords ("password") from source."""
    return len(re.findall(r"event=room_refused conn=\d+ peer=%s:\d+ reason=wrong_%s "
                          % (re.escape(source), what), srv.log()))


def console_stat(console_port):
    """The console's STAT reply (spec/console.md: "Hi", then 4-letter
    requests, replies with a 4-digit length) as {label: value}."""
    with socket.create_connection(("127.0.0.1", console_port), timeout=5) as s:
        s.sendall(b"Hi")
        _recv_exact(s, 48)
        s.sendall(b"STAT")
        n = int(_recv_exact(s, 4))
        text = _recv_exact(s, n).decode()
    fields = {}
    for ln in text.splitlines():
        k, _, v = ln.partition(": ")
        fields[k] = v
    return fields


def _recv_exact(s, n):
    out = b""
    while len(out) < n:
        data = s.recv(n - len(out))
        assert data, "console closed after %d of %d bytes" % (len(out), n)
        out += data
    return out


def joined(name):
    return "%s has joined the group" % name


def left(name):
    return "%s has removed from the group" % name


def created_lines(room_id):
    return ["The id of the group is:%d" % room_id,
            "You're connected to group chat #%d" % room_id,
            "You can start to talk!"]


def connected(room_id):
    return "You're connected to group chat #%d" % room_id


# Code points the server must never relay (spec/rooms.md, "Text").
def removed_cp(cp):
    return ((cp < 0x20 and cp != 0x09) or 0x7F <= cp <= 0x9F
            or 0x202A <= cp <= 0x202E or 0x2066 <= cp <= 0x2069
            or cp in (0x2028, 0x2029))


def expected_clean(raw):
    """What the spec says a line's bytes become: UTF-8 with each invalid
    sequence replaced by U+FFFD (Python's decoder replaces maximal subparts,
    as Unicode recommends), then the forbidden code points removed."""
    text = raw.decode("utf-8", "replace")
    return "".join(ch for ch in text if not removed_cp(ord(ch)))


class Closed(Exception):
    pass


class RoomClient:
    """One connection to the rooms listener. source: the local address to
    bind (e.g. "127.0.0.9": any 127/8 address reaches 127.0.0.1 on Linux), so
    that tests can have their own per-address failure count."""

    def __init__(self, port, host="127.0.0.1", source=None, timeout=10.0, rcvbuf=None,
                 greet=True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:
            self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""       # received, not yet taken as lines
        self.seen = b""      # everything received
        self.eof = False
        self.reset = False
        if greet:
            self.expect(MENU_LAST)

    # raw I/O ------------------------------------------------------------
    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def line(self, *texts):
        """Sends each text as a line ending in \\n, all in one write."""
        self.send("".join(t + "\n" for t in texts))

    def _recv_some(self, timeout):
        """One recv of at most timeout seconds: True if bytes came, False on
        timeout; sets eof/reset at the end of the stream."""
        if self.eof:
            return False
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            self.eof = self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        self.seen += data
        return True

    def pump(self, seconds):
        """Reads whatever arrives within seconds."""
        deadline = time.monotonic() + seconds
        while not self.eof:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                break
            self._recv_some(left_s)

    def pump_until(self, pred, timeout):
        """Reads until pred() is true, the stream ends or timeout seconds
        pass; returns pred()'s last value."""
        deadline = time.monotonic() + timeout
        while not pred() and not self.eof:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                break
            self._recv_some(min(left_s, 0.2))
        return pred()

    # lines --------------------------------------------------------------
    def _take_line(self):
        i = self.buf.find(b"\n")
        if i < 0:
            return None
        raw, self.buf = self.buf[:i], self.buf[i + 1:]
        # strict: the server only ever sends UTF-8
        return raw.decode("utf-8")

    def next_line(self, timeout=None):
        """The next complete line (without \\n); raises Closed at the end of
        the stream, AssertionError on timeout."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            ln = self._take_line()
            if ln is not None:
                return ln
            if self.eof:
                raise Closed("stream ended; unterminated rest %r; all: %r" % (self.buf, self.seen[-2000:]))
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise AssertionError("no line within %gs; partial %r; received so far %r"
                                     % (timeout, self.buf, self.seen[-2000:]))
            self._recv_some(left_s)

    def expect(self, want, timeout=None):
        """Reads lines until one equals want (a str) or satisfies it (a
        callable); returns the lines read before it and it."""
        got = []
        while True:
            try:
                ln = self.next_line(timeout)
            except Closed as e:
                raise AssertionError("closed before %r; lines read: %r (%s)" % (want, got, e))
            except AssertionError as e:
                raise AssertionError("waiting for %r; lines read: %r; %s" % (want, got, e))
            got.append(ln)
            if (want(ln) if callable(want) else ln == want):
                return got

    def expect_seq(self, lines, timeout=None):
        """The next lines are exactly these."""
        got = [self.next_line(timeout) for _ in lines]
        assert got == list(lines), "expected %r, got %r" % (list(lines), got)

    def lines_for(self, seconds):
        """Every complete line that arrives within seconds (no more)."""
        self.pump(seconds)
        out = []
        while True:
            ln = self._take_line()
            if ln is None:
                return out
            out.append(ln)

    def nothing_for(self, seconds):
        """Asserts that no byte arrives within seconds (a lower bound: the
        server must not have answered yet)."""
        before = len(self.seen)
        self.pump(seconds)
        assert len(self.seen) == before and not self.eof, (
            "expected silence, got %r (eof %s)" % (self.seen[before:], self.eof))

    def wait_closed(self, timeout=None):
        """Reads until the server ends the stream (EOF or reset); returns the
        complete lines that came before the end."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not self.eof:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise AssertionError("connection not closed within %gs; received %r"
                                     % (timeout, self.seen[-2000:]))
            self._recv_some(left_s)
        out = []
        while True:
            ln = self._take_line()
            if ln is None:
                return out
            out.append(ln)

    # the menu -----------------------------------------------------------
    def create(self, name, password):
        """2, name, password: returns the new room's id."""
        self.line("2")
        self.expect(ASK_NAME)
        self.line(name)
        self.expect(ASK_CREATE_PASS)
        self.line(password)
        got = self.expect(lambda ln: ln.startswith("The id of the group is:") or ln == MENU_LAST)
        assert got[-1].startswith("The id of the group is:"), got
        room_id = int(got[-1].split(":", 1)[1])
        self.expect_seq(created_lines(room_id)[1:])
        return room_id

    def ask_to_join(self, name, room_id, password):
        """1, name, id, password, each after its prompt; the answer to the
        password is not read."""
        self.line("1")
        self.expect(ASK_NAME)
        self.line(name)
        self.expect(ASK_ID)
        self.line(str(room_id))
        self.expect(ASK_PASS)
        self.line(password)

    def join(self, name, room_id, password):
        """1, name, id, password: asserts the member is in room_id."""
        self.ask_to_join(name, room_id, password)
        self.expect(connected(room_id))

    def leave(self):
        """Exit: the goodbye, then the end of the stream."""
        self.line("Exit")
        self.expect(BYE)
        rest = self.wait_closed()
        assert rest == [], rest


def member(port, name, room_id, password, **kw):
    c = RoomClient(port, **kw)
    c.join(name, room_id, password)
    return c


def creator(port, name, password, **kw):
    c = RoomClient(port, **kw)
    room_id = c.create(name, password)
    return c, room_id


class Crowd:
    """Many raw sockets read together through one selector: each keeps the
    complete lines it received. For tests with hundreds of members."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self.socks = []
        self.bufs = {}
        self.lines = {}
        self.eof = {}

    def add(self, sock):
        sock.setblocking(False)
        self.socks.append(sock)
        self.bufs[sock] = b""
        self.lines[sock] = []
        self.eof[sock] = False
        self.sel.register(sock, selectors.EVENT_READ)
        return sock

    def pump(self, until, timeout):
        """Reads until until() is true or timeout seconds pass; returns
        until()'s last value."""
        deadline = time.monotonic() + timeout
        while True:
            if until():
                return True
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                return until()
            for key, _ in self.sel.select(min(left_s, 0.5)):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except (ConnectionResetError, BrokenPipeError):
                    data = b""
                if not data:
                    self.eof[s] = True
                    self.sel.unregister(s)
                    continue
                b = self.bufs[s] + data
                parts = b.split(b"\n")
                self.bufs[s] = parts.pop()
                self.lines[s].extend(p.decode("utf-8") for p in parts)

    def discard(self, sock):
        """Stops reading sock (the caller closes it)."""
        if not self.eof[sock]:
            self.sel.unregister(sock)
            self.eof[sock] = True
        self.socks.remove(sock)

    def close(self):
        for s in self.socks:
            try:
                if not self.eof[s]:
                    self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        self.sel.close()


# --------------------------------------------------------------------------
# The seed's own client (seed 004, "קוד ה-Client"), as written there; only
# PORT is substituted. It reads input() and sends each line as one write
# with no newline; a thread prints each recv.

SEED_CLIENT = '''\
# Imports
import socket
import threading

# Define constants
import time

HOST = '127.0.0.1' # The server's hostname or IP address
PORT = 5555 # The port used by the server
FORMAT = 'utf-8'
ADDR = (HOST, PORT) # Creating a tuple of IP+PORT

def start_client():
    client_socket.connect(ADDR) # Connecting to server's socket
    # creating a thread:
    thread = threading.Thread(target=receive)
    thread.start()

    while (True):
        # Get the client msg
        msg = input()
        client_socket.send(msg.encode(FORMAT))

def receive(): #Recieve message from server:
    while True:
        # Receive Message From Server
        msg = client_socket.recv(1024).decode(FORMAT)
        if msg:
            print(msg)

if __name__ == "__main__":
    IP = socket.gethostbyname(socket.gethostname())
    client_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    print("[CLIENT] Started running")
    start_client()
    print("Goodbye client:~")
'''


def seed_client_source(port):
    src = SEED_CLIENT.replace("PORT = 5555 #", "PORT = %d #" % port, 1)
    assert src != SEED_CLIENT
    return src


class Proc:
    """A subprocess whose stdout is collected by a thread; input written a
    line at a time. Killed by kill() (the seed's client never exits by
    itself)."""

    def __init__(self, argv, env=None, cwd=None):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env, cwd=cwd)
        self.out = b""
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        while True:
            try:
                data = self.proc.stdout.read1(65536)
            except (OSError, ValueError):
                return
            if not data:
                return
            with self.lock:
                self.out += data

    def text(self):
        with self.lock:
            return self.out.decode("utf-8", "replace")

    def type(self, line, pause=0.4):
        """A human: a pause, then the line and Enter."""
        # a human's pace: the seed's client sends each answer without its
        # newline, so only time between two answers keeps them apart
        time.sleep(pause)
        self.proc.stdin.write(line.encode("utf-8") + b"\n")
        self.proc.stdin.flush()

    def close_input(self):
        self.proc.stdin.close()

    def wait_for(self, text, timeout=10.0, count=1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.text().count(text) >= count:
                return
            time.sleep(0.02)  # poll interval
        raise AssertionError("%r not seen %d time(s) within %gs; output:\n%s"
                             % (text, count, timeout, self.text()))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.t.join(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except (OSError, ValueError, BrokenPipeError):
                pass


def seed_client(port, tmp_path, tag):
    """Starts the seed's client against port; returns a Proc."""
    path = tmp_path / ("seed_client_%s.py" % tag)
    path.write_text(seed_client_source(port))
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # its prints reach us as they happen
    return Proc(["/usr/bin/python3", str(path)], env=env)
