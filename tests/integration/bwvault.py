"""Independent implementation of the Bulwark file vault protocol (spec/files.md).

Written from the specification only, for the integration tests: codecs, the
cksum CRC, the cryptography, a client (VaultClient) and a small threaded
server (PyServer) that can be told to misbehave.

Everything is little-endian and packed:

    request header   client_id[16] | version u8 | code u16 | payload_size u32
    response header  version u8 | code u16 | payload_size u32
"""

import hashlib
import os
import socket
import struct
import threading
import time
import traceback
import zlib

from Cryptodome.Cipher import AES, PKCS1_OAEP
from Cryptodome.PublicKey import RSA
from Cryptodome.Util.Padding import pad, unpad

VERSION = 3

REQ_HEADER = struct.Struct("<16sBHI")
RESP_HEADER = struct.Struct("<BHI")
REQ_HEADER_SIZE = REQ_HEADER.size  # 23
RESP_HEADER_SIZE = RESP_HEADER.size  # 7
assert REQ_HEADER_SIZE == 23 and RESP_HEADER_SIZE == 7

NAME_SIZE = 255
PUBKEY_SIZE = 160
ID_SIZE = 16
AES_KEY_SIZE = 16
WRAPPED_KEY_SIZE = 128
FILE_PREFIX_SIZE = 4 + NAME_SIZE  # content_size + file_name

# Request codes.
REGISTER = 1025
PUBLIC_KEY = 1026
RECONNECT = 1027
SEND_FILE = 1028
CRC_OK = 1029
CRC_BAD = 1030
CRC_GIVE_UP = 1031

# Response codes.
REGISTERED = 2100
NAME_TAKEN = 2101
KEY_STORED = 2102
FILE_RECEIVED = 2103
ACK = 2104
RECONNECTED = 2105
RECONNECT_REFUSED = 2106
ERROR = 2107
# Bulwark's extension any client may use: the server's limits
LIMITS = 1104
LIMITS_REPLY = 2115
SEND_CLEAR = 1106  # a 1028 whose content is the file as it is (TLS only)
FEATURE_CLEAR = 1  # 2115's u32 after the u64: 1106 is served here

REQUEST_CODES = (REGISTER, PUBLIC_KEY, RECONNECT, SEND_FILE, CRC_OK, CRC_BAD,
                 CRC_GIVE_UP)

# payload_size of every fixed-size request.
FIXED_PAYLOAD = {
    REGISTER: NAME_SIZE,
    PUBLIC_KEY: NAME_SIZE + PUBKEY_SIZE,
    RECONNECT: NAME_SIZE,
    CRC_OK: NAME_SIZE,
    CRC_BAD: NAME_SIZE,
    CRC_GIVE_UP: NAME_SIZE,
}

# payload_size of every response.
RESPONSE_PAYLOAD = {
    REGISTERED: ID_SIZE,
    NAME_TAKEN: 0,
    KEY_STORED: ID_SIZE + WRAPPED_KEY_SIZE,
    FILE_RECEIVED: ID_SIZE + 4 + NAME_SIZE + 4,
    ACK: ID_SIZE,
    RECONNECTED: ID_SIZE + WRAPPED_KEY_SIZE,
    RECONNECT_REFUSED: ID_SIZE,
    ERROR: 0,
}

ZERO_ID = bytes(ID_SIZE)
ZERO_IV = bytes(16)
MASK32 = 0xFFFFFFFF
U32 = struct.Struct("<I")


class ProtocolError(Exception):
    """The peer sent something the protocol does not allow."""


# --------------------------------------------------------------------------
# Codecs


def pack_request_header(client_id, code, payload_size, version=VERSION):
    return REQ_HEADER.pack(bytes(client_id), version, code, payload_size)


def pack_request(client_id, code, payload, version=VERSION):
    return pack_request_header(client_id, code, len(payload), version) + payload


def unpack_request_header(data):
    client_id, version, code, size = REQ_HEADER.unpack(data)
    return client_id, version, code, size


def pack_response(code, payload=b"", version=VERSION):
    return RESP_HEADER.pack(version, code, len(payload)) + payload


def unpack_response_header(data):
    return RESP_HEADER.unpack(data)


def name_field(name):
    """A 255-byte NUL-terminated, zero-padded field (at most 254 chars)."""
    raw = name.encode("ascii") if isinstance(name, str) else bytes(name)
    if len(raw) > NAME_SIZE - 1:
        raise ValueError("name longer than 254 bytes")
    return raw + bytes(NAME_SIZE - len(raw))


def raw_field(raw):
    """Exactly 255 bytes taken as given (no NUL added); for hostile tests."""
    raw = bytes(raw)
    if len(raw) > NAME_SIZE:
        raise ValueError("field longer than 255 bytes")
    return raw + bytes(NAME_SIZE - len(raw))


def parse_name_field(field):
    """The text before the NUL, or None if the field is malformed."""
    if len(field) != NAME_SIZE:
        return None
    end = field.find(b"\0")
    if end < 0:
        return None
    text = field[:end]
    if any(b < 0x20 or b == 0x7F for b in text):
        return None
    try:
        return text.decode("ascii")
    except UnicodeDecodeError:
        return None


def encrypted_size(plain_size):
    return 16 * (plain_size // 16 + 1)


def pack_file_prefix(content_size, file_name):
    fn = file_name if len(file_name) == NAME_SIZE and isinstance(
        file_name, (bytes, bytearray)) else name_field(file_name)
    return U32.pack(content_size) + fn


def parse_file_received(payload):
    """2103 payload -> (client_id, content_size, file_name_field, crc)."""
    if len(payload) != RESPONSE_PAYLOAD[FILE_RECEIVED]:
        raise ProtocolError("2103 payload of %d bytes" % len(payload))
    client_id = payload[:16]
    (content_size,) = U32.unpack_from(payload, 16)
    file_name = payload[20:20 + NAME_SIZE]
    (crc,) = U32.unpack_from(payload, 20 + NAME_SIZE)
    return client_id, content_size, file_name, crc


# --------------------------------------------------------------------------
# cksum (POSIX): CRC-32, polynomial 0x04C11DB7, MSB first, initial 0, the
# length appended as little-endian bytes until it is zero, then inverted.

CKSUM_POLY = 0x04C11DB7


def _make_cksum_table():
    table = []
    for i in range(256):
        c = i << 24
        for _ in range(8):
            c = ((c << 1) ^ CKSUM_POLY) if c & 0x80000000 else (c << 1)
            c &= MASK32
        table.append(c)
    return table


CKSUM_TABLE = _make_cksum_table()


def cksum_reference(data):
    """Table-driven, MSB-first; slow but obviously the definition."""
    crc = 0
    table = CKSUM_TABLE
    for b in data:
        crc = ((crc << 8) & MASK32) ^ table[(crc >> 24) ^ b]
    n = len(data)
    while n:
        crc = ((crc << 8) & MASK32) ^ table[(crc >> 24) ^ (n & 0xFF)]
        n >>= 8
    return ~crc & MASK32


def _bitrev8(b):
    r = 0
    for i in range(8):
        if b & (1 << i):
            r |= 1 << (7 - i)
    return r


_REV8 = bytes(_bitrev8(b) for b in range(256))


def _bitrev32(x):
    return int.from_bytes(x.to_bytes(4, "little").translate(_REV8), "big")


class Cksum:
    """Streaming cksum.

    Fast path: an MSB-first CRC over some bytes is the bit-reversal of the
    reflected CRC (zlib's, polynomial 0xEDB88320) over the bit-reversed
    bytes, with the initial register bit-reversed too. zlib.crc32 presets
    and inverts its register, so the raw register r is carried as
    crc32(data, r ^ M) ^ M. Checked against cksum_reference and the cksum
    program by the self-tests.
    """

    def __init__(self):
        self._reg = 0  # reflected register
        self.length = 0

    def update(self, data):
        self._reg = zlib.crc32(bytes(data).translate(_REV8), self._reg ^ MASK32) ^ MASK32
        self.length += len(data)
        return self

    def value(self):
        n = self.length
        tail = bytearray()
        while n:
            tail.append(n & 0xFF)
            n >>= 8
        reg = zlib.crc32(bytes(tail).translate(_REV8), self._reg ^ MASK32) ^ MASK32
        return ~_bitrev32(reg) & MASK32


def cksum(data):
    return Cksum().update(data).value()


# --------------------------------------------------------------------------
# Cryptography


def new_rsa_key():
    """RSA-1024 with e = 17, so the SPKI DER is exactly 160 bytes."""
    key = RSA.generate(1024, e=17)
    return key


def spki_der(key):
    der = key.publickey().export_key("DER")
    if len(der) != PUBKEY_SIZE:
        raise ValueError("SPKI is %d bytes, not 160" % len(der))
    return der


def private_pkcs8_der(key):
    return key.export_key("DER", pkcs=8)


def wrap_key(spki, aes_key):
    """RSA-OAEP (SHA-1, MGF1-SHA-1, empty label) of the AES key."""
    pub = RSA.import_key(spki)
    return PKCS1_OAEP.new(pub).encrypt(aes_key)


def unwrap_key(key, wrapped):
    return PKCS1_OAEP.new(key).decrypt(wrapped)


def aes_encrypt(aes_key, data):
    return AES.new(aes_key, AES.MODE_CBC, iv=ZERO_IV).encrypt(pad(bytes(data), 16))


def aes_decrypt(aes_key, data):
    return unpad(AES.new(aes_key, AES.MODE_CBC, iv=ZERO_IV).decrypt(bytes(data)), 16)


def aes_encrypt_raw(aes_key, data):
    """CBC without padding; the caller supplies whole blocks (bad padding)."""
    return AES.new(aes_key, AES.MODE_CBC, iv=ZERO_IV).encrypt(bytes(data))


def encrypt_stream(aes_key, chunks):
    """Yield AES-128-CBC (zero IV, PKCS#7) ciphertext of the chunks."""
    cipher = AES.new(aes_key, AES.MODE_CBC, iv=ZERO_IV)
    carry = b""
    for chunk in chunks:
        buf = carry + bytes(chunk)
        cut = len(buf) - len(buf) % 16
        carry = buf[cut:]
        if cut:
            yield cipher.encrypt(buf[:cut])
    yield cipher.encrypt(pad(carry, 16))


def pads_badly(aes_key, ct):
    """Whether ct, decrypted with aes_key, ends in a byte that is no PKCS#7
    pad length (1-16): bad padding under any check, strict or lax."""
    prev = ct[-32:-16] if len(ct) >= 32 else ZERO_IV
    last = AES.new(aes_key, AES.MODE_CBC, iv=prev).decrypt(ct[-16:])[-1]
    return not 1 <= last <= 16


def wrong_key(right_key, data):
    """A key other than right_key whose encryption of data fails the
    padding check under right_key. Padding is all a server can check: a
    random wrong key passes it about once in 256 (a lax check, one in 16),
    and the server then rightly stores the (garbled) file, so a test that
    wants the failure must choose its wrong key."""
    for _ in range(1000):
        key = os.urandom(16)
        if key != right_key and pads_badly(right_key, b"".join(encrypt_stream(key, [data]))):
            return key
    raise AssertionError("no failing wrong key in 1000 tries")


def bad_padding_ciphertext(aes_key, blocks=8):
    """Random ciphertext (what a stranger without the key sends) that pads
    badly under aes_key."""
    for _ in range(1000):
        ct = os.urandom(16 * blocks)
        if pads_badly(aes_key, ct):
            return ct
    raise AssertionError("no bad-padding ciphertext in 1000 tries")


class StreamDecryptor:
    """Decrypts CBC ciphertext chunk by chunk, unpads at the end."""

    def __init__(self, aes_key):
        self._cipher = AES.new(aes_key, AES.MODE_CBC, iv=ZERO_IV)
        self._carry = b""
        self._last = b""

    def update(self, chunk):
        """Returns plaintext that is certainly not padding."""
        buf = self._carry + bytes(chunk)
        cut = len(buf) - len(buf) % 16
        self._carry = buf[cut:]
        if not cut:
            return b""
        plain = self._last + self._cipher.decrypt(buf[:cut])
        self._last = plain[-16:]
        return plain[:-16]

    def finish(self):
        """The last plaintext bytes; raises ValueError on bad padding."""
        if self._carry or len(self._last) != 16:
            raise ValueError("ciphertext is not a whole number of blocks")
        return unpad(self._last, 16)


def pseudo_random_chunks(seed, total, chunk=1 << 20):
    """Deterministic pseudo-random bytes, produced a chunk at a time."""
    import random

    rng = random.Random(seed)
    left = total
    while left > 0:
        n = min(chunk, left)
        yield rng.randbytes(n)
        left -= n


# --------------------------------------------------------------------------
# Socket helpers


def recv_exact(sock, n):
    """n bytes, or fewer if the peer closed first."""
    parts = []
    got = 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def recv_until_eof(sock, limit=1 << 20):
    """Everything until the peer closes (at most limit bytes). A reset
    counts as a close: on loopback, bytes sent before it are still read."""
    parts = []
    got = 0
    while got <= limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        got += len(chunk)
    raise ProtocolError("more than %d bytes without a close" % limit)


class Response:
    __slots__ = ("version", "code", "payload")

    def __init__(self, version, code, payload):
        self.version = version
        self.code = code
        self.payload = payload

    @property
    def client_id(self):
        return self.payload[:ID_SIZE]

    def __repr__(self):
        return "Response(version=%d, code=%d, payload=%d bytes)" % (
            self.version, self.code, len(self.payload))


def read_response(sock, max_payload=1 << 16):
    head = recv_exact(sock, RESP_HEADER_SIZE)
    if len(head) < RESP_HEADER_SIZE:
        raise ConnectionError("connection closed after %d header bytes" % len(head))
    version, code, size = unpack_response_header(head)
    if size > max_payload:
        raise ProtocolError("response %d with payload_size %d" % (code, size))
    payload = recv_exact(sock, size)
    if len(payload) < size:
        raise ConnectionError("connection closed inside the payload of %d" % code)
    return Response(version, code, payload)


# --------------------------------------------------------------------------
# Client


class FileResult:
    """What a 1028 produced: the response and what the client computed."""

    __slots__ = ("response", "crc", "content_size", "plain_size", "sha256")

    def __init__(self, response, crc, content_size, plain_size, sha256):
        self.response = response
        self.crc = crc
        self.content_size = content_size
        self.plain_size = plain_size
        self.sha256 = sha256

    @property
    def server_crc(self):
        return parse_file_received(self.response.payload)[3]


class VaultClient:
    """One TCP session with a vault server. Every socket op has a timeout."""

    def __init__(self, host, port, timeout=10.0, key=None):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.sock = None
        self.client_id = ZERO_ID
        self.name = None
        self.key = key
        self.aes_key = None

    # connection -------------------------------------------------------
    def connect(self):
        self.close()
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock.settimeout(self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def __enter__(self):
        if self.sock is None:
            self.connect()
        return self

    def __exit__(self, *exc):
        self.close()

    # raw helpers -------------------------------------------------------
    def send_raw(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        return recv_exact(self.sock, n)

    def recv_response(self):
        return read_response(self.sock)

    def recv_until_eof(self, limit=1 << 20):
        return recv_until_eof(self.sock, limit)

    def is_closed_by_peer(self, timeout=None):
        """True when the peer closed (EOF or reset) within the timeout;
        raises if data arrives instead."""
        old = self.sock.gettimeout()
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(1)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(old)
        if data:
            raise ProtocolError("unexpected byte %r where a close was expected" % data)
        return True

    def send_request(self, code, payload, client_id=None):
        cid = self.client_id if client_id is None else client_id
        self.send_raw(pack_request(cid, code, payload))

    def request(self, code, payload, client_id=None):
        self.send_request(code, payload, client_id)
        return self.recv_response()

    # protocol steps ----------------------------------------------------
    def register(self, name):
        resp = self.request(REGISTER, name_field(name), client_id=ZERO_ID)
        if resp.code == REGISTERED:
            self.client_id = resp.payload[:ID_SIZE]
            self.name = name
        return resp

    def send_pubkey(self, name=None, key=None):
        name = self.name if name is None else name
        if key is not None:
            self.key = key
        if self.key is None:
            self.key = new_rsa_key()
        resp = self.request(PUBLIC_KEY, name_field(name) + spki_der(self.key))
        if resp.code == KEY_STORED:
            self.aes_key = unwrap_key(self.key, resp.payload[ID_SIZE:])
        return resp

    def reconnect(self, name=None):
        name = self.name if name is None else name
        resp = self.request(RECONNECT, name_field(name))
        if resp.code == RECONNECTED:
            self.name = name
            self.aes_key = unwrap_key(self.key, resp.payload[ID_SIZE:])
        return resp

    def send_file(self, file_name, data=None, chunks=None, size=None, aes_key=None):
        """1028 with the file, read the answer. Either data (bytes) or chunks
        (an iterable of bytes) with size (the plaintext length)."""
        key = self.aes_key if aes_key is None else aes_key
        if data is not None:
            data = bytes(data)
            chunks = [data]
            size = len(data)
        content_size = encrypted_size(size)
        fn = file_name if isinstance(file_name, (bytes, bytearray)) and len(
            file_name) == NAME_SIZE else name_field(file_name)
        self.send_raw(pack_request_header(self.client_id, SEND_FILE, FILE_PREFIX_SIZE + content_size)
                      + U32.pack(content_size) + fn)
        crc = Cksum()
        digest = hashlib.sha256()

        def plain():
            for chunk in chunks:
                crc.update(chunk)
                digest.update(chunk)
                yield chunk

        sent = 0
        for block in encrypt_stream(key, plain()):
            self.send_raw(block)
            sent += len(block)
        if sent != content_size or crc.length != size:
            raise ValueError("file was %d bytes, not the %d announced" % (crc.length, size))
        resp = self.recv_response()
        return FileResult(resp, crc.value(), content_size, size, digest.hexdigest())

    def send_clear(self, file_name, data, content_size=None):
        """1106: the 1028's layout with the file as it is (no AES key, no
        padding), read the answer. content_size other than len(data) sends a
        lie in the prefix."""
        data = bytes(data)
        size = len(data) if content_size is None else content_size
        self.send_raw(pack_request_header(self.client_id, SEND_CLEAR, FILE_PREFIX_SIZE + size)
                      + U32.pack(size) + name_field(file_name))
        for at in range(0, len(data), 1 << 20):
            self.send_raw(data[at:at + (1 << 20)])
        resp = self.recv_response()
        return FileResult(resp, cksum(data), size, len(data), hashlib.sha256(data).hexdigest())

    def crc_ok(self, file_name):
        return self.request(CRC_OK, name_field(file_name))

    def crc_bad(self, file_name):
        """1030 has no response."""
        self.send_request(CRC_BAD, name_field(file_name))

    def giveup(self, file_name):
        return self.request(CRC_GIVE_UP, name_field(file_name))


def expect(resp, code, what=""):
    if resp.code != code:
        raise ProtocolError("%sexpected %d, got %r" % (what and what + ": ", code, resp))
    if resp.code in RESPONSE_PAYLOAD and len(resp.payload) != RESPONSE_PAYLOAD[code]:
        raise ProtocolError("response %d with %d payload bytes" % (code, len(resp.payload)))
    return resp


def full_session(host, port, name, data, file_name="file.bin", key=None, timeout=10.0):
    """Register, send the key, upload, check the CRC, confirm with 1029.
    Returns the client (closed) for its id and keys."""
    with VaultClient(host, port, timeout=timeout, key=key) as c:
        expect(c.register(name), REGISTERED, "register")
        resp = expect(c.send_pubkey(), KEY_STORED, "public key")
        if resp.client_id != c.client_id:
            raise ProtocolError("2102 carries another client id")
        res = c.send_file(file_name, data)
        expect(res.response, FILE_RECEIVED, "send file")
        cid, csize, _, crc = parse_file_received(res.response.payload)
        if cid != c.client_id or csize != res.content_size:
            raise ProtocolError("2103 echoes id %s size %d" % (cid.hex(), csize))
        if crc != res.crc:
            raise ProtocolError("server CRC %d, client CRC %d" % (crc, res.crc))
        ack = expect(c.crc_ok(file_name), ACK, "crc ok")
        if ack.client_id != c.client_id:
            raise ProtocolError("2104 carries another client id")
    return c


# --------------------------------------------------------------------------
# Server test double


class StoredFile:
    __slots__ = ("data", "size", "sha256", "crc", "verified")

    def __init__(self, data, size, sha256, crc):
        self.data = data
        self.size = size
        self.sha256 = sha256
        self.crc = crc
        self.verified = False


class ClientRecord:
    __slots__ = ("client_id", "name", "pubkey", "aes_key")

    def __init__(self, client_id, name):
        self.client_id = client_id
        self.name = name
        self.pubkey = None
        self.aes_key = None


class RequestRecord:
    __slots__ = ("code", "client_id", "payload_size", "name", "conn")

    def __init__(self, code, client_id, payload_size, name, conn):
        self.code = code
        self.client_id = client_id
        self.payload_size = payload_size
        self.name = name
        self.conn = conn

    def __repr__(self):
        return "<%d %s %r conn=%d>" % (self.code, self.client_id.hex(), self.name, self.conn)


class _Close(Exception):
    pass


class PyServer:
    """A small in-memory vault server, one thread per connection.

    Misbehaviour knobs (all counters are decremented under a lock):
      error_always     answer every request with 2107 (after reading it whole)
      error_times      {code: n}: answer the first n requests of code with 2107
      wrong_crc        number of 2103s that carry a wrong CRC (-1: all)
      refuse_reconnect answer 2106 to every 1027
      name_taken       answer 2101 to every 1025
      close_mid        {code: n}: for the first n requests of code, send part
                       of the response and close the connection
      drip             seconds to wait after each byte of every response
                       (0: send responses whole)
      refuse_upload    number of 1028s (-1: all) answered 2107 right after
                       the header, the connection then closed with the body
                       unread (a server out of room or over capacity)
      revoke_on_upload number of 1028s (-1: all) after whose body the
                       client's AES key is revoked, 2107 sent and the
                       connection closed; the next 1028 needs a key from a
                       later 1026/1027
      sink             (plain_size, crc): read every 1028 body and drop it,
                       answering 2103 with that size and CRC, nothing
                       decrypted or kept: a server that costs no more than
                       its reads (bench/vaultbench.py's client alone)
    """

    def __init__(self, host="127.0.0.1", *, error_always=False, error_times=None,
                 wrong_crc=0, refuse_reconnect=False, name_taken=False,
                 close_mid=None, drip=0.0, refuse_upload=0, revoke_on_upload=0,
                 keep_limit=64 << 20, timeout=30.0, sink=None):
        self.host = host
        self.error_always = error_always
        self.error_times = dict(error_times or {})
        self.wrong_crc = wrong_crc
        self.refuse_reconnect = refuse_reconnect
        self.name_taken = name_taken
        self.close_mid = dict(close_mid or {})
        self.drip = drip
        self.refuse_upload = refuse_upload
        self.revoke_on_upload = revoke_on_upload
        self.keep_limit = keep_limit
        self.timeout = timeout
        self.sink = sink
        # seconds to wait after each received chunk of a 1028 body: makes a
        # sender block, so a test can act while it is mid-upload
        self.body_delay = 0.0
        self.body_started = threading.Event()
        self.clients = {}  # id -> ClientRecord
        self.names = {}  # name -> id
        self.files = {}  # (id, name) -> StoredFile
        self.requests = []
        self.errors = []  # exceptions raised in handler threads
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._conn_seq = 0
        self._lsock = None
        self.port = None

    # lifecycle ---------------------------------------------------------
    def start(self):
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((self.host, 0))
        self._lsock.listen(128)
        self._lsock.settimeout(0.1)
        self.port = self._lsock.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name="pyserver-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        for t in list(self._threads):
            t.join(timeout=5)
        if self._lsock is not None:
            self._lsock.close()
            self._lsock = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def codes(self):
        with self.lock:
            return [r.code for r in self.requests]

    def file(self, client_id, name):
        with self.lock:
            return self.files.get((bytes(client_id), name))

    # plumbing ----------------------------------------------------------
    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self._conn_seq += 1
                seq = self._conn_seq
            t = threading.Thread(target=self._serve, args=(conn, seq),
                                 name="pyserver-conn-%d" % seq, daemon=True)
            t.start()
            with self.lock:
                self._threads = [x for x in self._threads if x.is_alive()]
                self._threads.append(t)

    def _take_count(self, attr):
        """True while the counter attr (n > 0 left, or -1 for always) says
        the knob applies; decrements it."""
        with self.lock:
            n = getattr(self, attr)
            if n > 0:
                setattr(self, attr, n - 1)
            return n != 0

    def _send_dripping(self, conn, resp):
        for i in range(len(resp)):
            if self._stop.is_set():
                raise _Close()
            conn.sendall(resp[i:i + 1])
            time.sleep(self.drip)  # the knob: a slow server, a byte every drip seconds

    def _take(self, table, code):
        with self.lock:
            n = table.get(code, 0)
            if n:
                table[code] = n - 1
                return True
            return False

    def _serve(self, conn, seq):
        conn.settimeout(self.timeout)
        try:
            for _ in range(100000):
                if self._stop.is_set():
                    return
                head = recv_exact(conn, REQ_HEADER_SIZE)
                if len(head) < REQ_HEADER_SIZE:
                    return
                cid, _version, code, size = unpack_request_header(head)
                try:
                    resp = self._handle(conn, seq, cid, code, size)
                except _Close:
                    return
                if resp is None:
                    continue
                if self._take(self.close_mid, code):
                    conn.sendall(resp[: max(1, len(resp) // 2)])
                    return
                if self._zero_padding_waiting(conn):
                    self._drain(conn)
                    conn.sendall(resp + bytes(-len(resp) % 1024))
                    conn.shutdown(socket.SHUT_WR)
                    self._drain(conn, wait=0.5)
                    return
                if self.drip:
                    self._send_dripping(conn, resp)
                    continue
                conn.sendall(resp)
        except (ConnectionError, socket.timeout):
            pass
        except Exception:  # recorded for the tests to see
            if not self._stop.is_set():
                with self.lock:
                    self.errors.append(traceback.format_exc())
        finally:
            conn.close()

    @staticmethod
    def _zero_padding_waiting(conn):
        old = conn.gettimeout()
        conn.setblocking(False)
        try:
            data = conn.recv(4096, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return False
        finally:
            conn.settimeout(old)
        return bool(data) and not any(data)

    @staticmethod
    def _drain(conn, wait=0.0):
        """Read what is waiting (so that close sends FIN, not RST)."""
        old = conn.gettimeout()
        conn.settimeout(wait if wait else None)
        if not wait:
            conn.setblocking(False)
        try:
            for _ in range(1024):
                if not conn.recv(65536):
                    break
        except (BlockingIOError, InterruptedError, socket.timeout, ConnectionError):
            pass
        finally:
            conn.settimeout(old)

    def _error_close(self, conn):
        try:
            conn.sendall(pack_response(ERROR))
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        raise _Close()

    def _handle(self, conn, seq, cid, code, size):
        if code not in REQUEST_CODES:
            self._error_close(conn)
        body = None
        if code == SEND_FILE and self._take_count("refuse_upload"):
            with self.lock:
                self.requests.append(RequestRecord(code, cid, size, None, seq))
            self._error_close(conn)
        if code == SEND_FILE:
            prefix = recv_exact(conn, FILE_PREFIX_SIZE) if size >= FILE_PREFIX_SIZE else b""
            if len(prefix) < FILE_PREFIX_SIZE:
                self._error_close(conn)
            (content_size,) = U32.unpack_from(prefix)
            if size != FILE_PREFIX_SIZE + content_size or content_size == 0 or content_size % 16:
                self._error_close(conn)
            fname = prefix[4:]
            body = self._receive_file(conn, cid, content_size)
            payload = prefix
        else:
            if size != FIXED_PAYLOAD[code]:
                self._error_close(conn)
            payload = recv_exact(conn, size)
            if len(payload) < size:
                raise _Close()
            fname = payload[:NAME_SIZE]
        name = parse_name_field(payload[-NAME_SIZE:] if code == SEND_FILE else payload[:NAME_SIZE])
        with self.lock:
            self.requests.append(RequestRecord(code, cid, size, name, seq))
        if code == SEND_FILE and self._take_count("revoke_on_upload"):
            with self.lock:
                rec = self.clients.get(cid)
                if rec is not None:
                    rec.aes_key = None
            self._error_close(conn)
        if self.error_always or self._take(self.error_times, code):
            return pack_response(ERROR)
        return self._dispatch(cid, code, payload, fname, name, body)

    def _receive_file(self, conn, cid, content_size):
        """Stream the ciphertext: decrypt, CRC and hash on the fly. Returns
        (data or None, size, sha256, crc) or the string 'error'."""
        if self.sink is not None:
            return self._drop_file(conn, content_size)
        with self.lock:
            rec = self.clients.get(cid)
            aes_key = rec.aes_key if rec else None
        keep = content_size <= self.keep_limit
        dec = StreamDecryptor(aes_key) if aes_key else None
        crc = Cksum()
        digest = hashlib.sha256()
        parts = [] if keep else None
        left = content_size
        while left:
            chunk = conn.recv(min(left, 1 << 18))
            if not chunk:
                raise _Close()
            left -= len(chunk)
            self.body_started.set()
            if self.body_delay:
                time.sleep(self.body_delay)  # the knob: a server slow to read a body
            if dec:
                plain = dec.update(chunk)
                crc.update(plain)
                digest.update(plain)
                if keep:
                    parts.append(plain)
        if not dec:
            return "error"
        try:
            plain = dec.finish()
        except ValueError:
            return "error"
        crc.update(plain)
        digest.update(plain)
        if keep:
            parts.append(plain)
        return (b"".join(parts) if keep else None, crc.length, digest.hexdigest(), crc.value())

    def _drop_file(self, conn, content_size):
        """The sink: the body read into one buffer and dropped."""
        view = memoryview(bytearray(4 << 20))
        left = content_size
        while left:
            n = conn.recv_into(view, min(left, len(view)))
            if n == 0:
                raise _Close()
            left -= n
        plain_size, crc = self.sink
        return (None, plain_size, "", crc)

    def _dispatch(self, cid, code, payload, fname, name, body):
        if name is None:
            return pack_response(ERROR)
        with self.lock:
            rec = self.clients.get(cid)
            if code == REGISTER:
                if self.name_taken or name in self.names:
                    return pack_response(NAME_TAKEN)
                new_id = os.urandom(ID_SIZE)
                self.clients[new_id] = ClientRecord(new_id, name)
                self.names[name] = new_id
                return pack_response(REGISTERED, new_id)
            if code == PUBLIC_KEY:
                if rec is None or rec.name != name:
                    return pack_response(ERROR)
                spki = payload[NAME_SIZE:]
                try:
                    pub = RSA.import_key(spki)
                except (ValueError, IndexError, TypeError):
                    return pack_response(ERROR)
                if pub.has_private() or pub.size_in_bytes() != 128:
                    return pack_response(ERROR)
                rec.pubkey = spki
                rec.aes_key = os.urandom(AES_KEY_SIZE)
                return pack_response(KEY_STORED, cid + wrap_key(spki, rec.aes_key))
            if code == RECONNECT:
                if (self.refuse_reconnect or rec is None or rec.name != name
                        or rec.pubkey is None):
                    return pack_response(RECONNECT_REFUSED, cid)
                rec.aes_key = os.urandom(AES_KEY_SIZE)
                return pack_response(RECONNECTED, cid + wrap_key(rec.pubkey, rec.aes_key))
            if rec is None:
                return pack_response(ERROR)
            if code == SEND_FILE:
                if body == "error":
                    return pack_response(ERROR)
                data, size, sha, crc = body
                self.files[(cid, name)] = StoredFile(data, size, sha, crc)
                if self.wrong_crc:
                    if self.wrong_crc > 0:
                        self.wrong_crc -= 1
                    crc = (crc + 1) & MASK32
                return pack_response(FILE_RECEIVED, cid + U32.pack(encrypted_size(size))
                                     + fname + U32.pack(crc))
            stored = self.files.get((cid, name))
            if stored is None:
                return pack_response(ERROR)
            if code == CRC_OK:
                stored.verified = True
                return pack_response(ACK, cid)
            if code == CRC_BAD:
                return None
            if code == CRC_GIVE_UP:
                return pack_response(ACK, cid)
        return pack_response(ERROR)
