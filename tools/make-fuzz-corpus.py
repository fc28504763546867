#!/usr/bin/python3
"""Writes the seed corpus of each fuzz harness into tests/fuzz/corpus/<name>/.

Seeds are small hand-made messages: a valid one of each code, truncated and
over-long ones, and hostile names; for the harnesses that drive a service on
the engine (fuzz_frame, fuzz_console_request, fuzz_metrics_request) whole
exchanges, each prefixed with the byte saying how the harness cuts it into
pieces, and for fuzz_config configuration files. The RSA key they use (1024 bits, e = 17) is
made with the openssl command the first time and read back from the existing
corpus afterwards, so running the script again rewrites the same bytes; pass
--new-key to make a fresh one.

Usage: /usr/bin/python3 tools/make-fuzz-corpus.py [--new-key]
"""
import base64
import os
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
KEY_SEED = os.path.join(CORPUS, "fuzz_identity", "valid-one-line")

NAME_FIELD = 255
CLIENT_ID = bytes(range(0x10, 0x20))


def openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, check=True,
                          capture_output=True).stdout


def new_key():
    pem = openssl("genpkey", "-algorithm", "RSA", "-pkeyopt",
                  "rsa_keygen_bits:1024", "-pkeyopt",
                  "rsa_keygen_pubexp:17")
    return openssl("pkey", "-outform", "DER", data=pem)


def load_key(fresh):
    """PKCS#8 DER of the corpus key."""
    if not fresh and os.path.exists(KEY_SEED):
        with open(KEY_SEED, "rb") as f:
            lines = f.read().split(b"\n")
        return base64.b64decode(b"".join(lines[2:]))
    return new_key()


def spki_of(pkcs8):
    der = openssl("pkey", "-inform", "DER", "-pubout", "-outform", "DER",
                  data=pkcs8)
    if len(der) != 160:
        sys.exit("SPKI is %d bytes, expected 160" % len(der))
    return der


def name_field(name):
    if isinstance(name, str):
        name = name.encode()
    return name[:NAME_FIELD].ljust(NAME_FIELD, b"\0")


def req(code, payload, client_id=CLIENT_ID, version=3, size=None):
    if size is None:
        size = len(payload)
    return client_id + struct.pack("<BHI", version, code, size) + payload


def resp(code, payload, version=3, size=None):
    if size is None:
        size = len(payload)
    return struct.pack("<BHI", version, code, size) + payload


def request_seeds(spki):
    ct = bytes(range(32))
    s = {}
    s["register"] = req(1025, name_field("alice"), client_id=bytes(16))
    s["pubkey"] = req(1026, name_field("alice") + spki)
    s["reconnect"] = req(1027, name_field("alice"))
    s["send-file"] = req(1028, struct.pack("<I", 32) + name_field("notes.txt")
                         + ct)
    s["send-file-prefix-only"] = req(1028, struct.pack("<I", 16) +
                                     name_field("a.bin"), size=259 + 16)
    s["crc-ok"] = req(1029, name_field("notes.txt"))
    s["crc-retry"] = req(1030, name_field("notes.txt"))
    s["crc-fail"] = req(1031, name_field("notes.txt"))
    s["header-22-bytes"] = req(1025, b"")[:22]
    s["header-only"] = req(1025, b"", size=255)
    s["register-254-bytes"] = req(1025, name_field("alice")[:254])
    s["register-256-bytes"] = req(1025, name_field("alice") + b"\0")
    s["pubkey-414-bytes"] = req(1026, (name_field("alice") + spki)[:414])
    s["send-file-258-bytes"] = req(1028, (struct.pack("<I", 0) +
                                          name_field("x"))[:258])
    s["name-dotdot-path"] = req(1029, name_field("../../etc/passwd"))
    s["name-absolute"] = req(1029, name_field("/abs/x"))
    s["name-backslash"] = req(1028, struct.pack("<I", 16) +
                              name_field("..\\..\\win.ini") + bytes(16))
    s["name-dotdot"] = req(1029, name_field(".."))
    s["name-dot"] = req(1029, name_field("."))
    s["name-dir-slash"] = req(1029, name_field("dir/"))
    s["name-three-dots"] = req(1029, name_field("..."))
    s["name-254-chars"] = req(1025, name_field("n" * 254))
    s["name-without-nul"] = req(1025, b"A" * 255)
    s["name-empty"] = req(1025, bytes(255))
    s["name-ctrl-01"] = req(1025, name_field(b"al\x01ice"))
    s["name-ctrl-1f"] = req(1025, name_field(b"al\x1fice"))
    s["name-del-7f"] = req(1025, name_field(b"al\x7fice"))
    s["name-high-bytes"] = req(1025, name_field("caf\u00e9"))
    s["name-bytes-after-nul"] = req(1025, b"bob\0" + b"\xff" * 251)
    s["pubkey-zero-key"] = req(1026, name_field("alice") + bytes(160))
    s["pubkey-trailing-garbage"] = req(1026, name_field("alice") +
                                       spki[:159] + b"\x01")
    s["pubkey-truncated-der"] = req(1026, name_field("alice") + spki[:150]
                                    + bytes(10))
    s["unknown-code"] = req(9999, name_field("alice"))
    s["response-code-in-request"] = req(2100, CLIENT_ID)
    s["version-255"] = req(1025, name_field("alice"), version=255)
    s["payload-size-huge"] = req(1028, struct.pack("<I", 0xfffffef0) +
                                 name_field("big"), size=0xffffffff)
    s["sanitize-short-dotdot"] = b"../x\0"
    s["empty"] = b""
    return s


def response_seeds():
    wrapped = bytes((7 * i) & 0xff for i in range(128))
    ack = CLIENT_ID + struct.pack("<I", 48) + name_field("notes.txt") + \
        struct.pack("<I", 930766865)
    s = {}
    s["registered"] = resp(2100, CLIENT_ID)
    s["reg-failed"] = resp(2101, b"")
    s["pubkey-aes"] = resp(2102, CLIENT_ID + wrapped)
    s["file-ok"] = resp(2103, ack)
    s["ack"] = resp(2104, CLIENT_ID)
    s["reconnect-aes"] = resp(2105, CLIENT_ID + wrapped)
    s["reconnect-denied"] = resp(2106, CLIENT_ID)
    s["error"] = resp(2107, b"")
    s["header-6-bytes"] = resp(2100, CLIENT_ID)[:6]
    s["header-1-byte"] = b"\x03"
    s["empty"] = b""
    s["registered-15-bytes"] = resp(2100, CLIENT_ID[:15])
    s["registered-17-bytes"] = resp(2100, CLIENT_ID + b"\0")
    s["pubkey-aes-143-bytes"] = resp(2102, (CLIENT_ID + wrapped)[:143])
    s["pubkey-aes-145-bytes"] = resp(2102, CLIENT_ID + wrapped + b"\0")
    s["file-ok-278-bytes"] = resp(2103, ack[:278])
    s["file-ok-280-bytes"] = resp(2103, ack + b"\0")
    s["file-ok-name-without-nul"] = resp(2103, CLIENT_ID +
                                         struct.pack("<I", 16) + b"B" * 255 +
                                         struct.pack("<I", 1))
    s["file-ok-name-ctrl"] = resp(2103, CLIENT_ID + struct.pack("<I", 16) +
                                  name_field(b"a\x1fb") + struct.pack("<I", 1))
    s["file-ok-name-empty"] = resp(2103, CLIENT_ID + struct.pack("<I", 16) +
                                   bytes(255) + struct.pack("<I", 1))
    s["file-ok-name-dotdot"] = resp(2103, CLIENT_ID + struct.pack("<I", 16) +
                                    name_field("../../x") +
                                    struct.pack("<I", 1))
    s["unknown-code"] = resp(1234, CLIENT_ID)
    s["size-mismatch"] = resp(2100, CLIENT_ID, size=0xffffffff)
    return s


def wrap(text, width):
    return "\n".join(text[i:i + width] for i in range(0, len(text), width))


def identity_seeds(pkcs8):
    b64 = base64.b64encode(pkcs8).decode()
    hexid = CLIENT_ID.hex()
    s = {}
    s["valid-one-line"] = ("alice\n%s\n%s\n" % (hexid, b64)).encode()
    s["wrapped-64"] = ("alice\n%s\n%s\n" % (hexid, wrap(b64, 64))).encode()
    s["upper-hex-crlf"] = ("alice\r\n%s\r\n%s\r\n" %
                           (hexid.upper(), wrap(b64, 64).replace("\n", "\r\n"))
                           ).encode()
    s["no-newline-at-end"] = ("alice\n%s\n%s" % (hexid, b64)).encode()
    s["spaces-around"] = ("  alice \t\n  %s  \n  %s  \n\n" %
                          (hexid, wrap(b64, 76))).encode()
    s["key-in-priv-key"] = ("alice\n%s\n" % hexid).encode() + b"\0" + \
        b64.encode()
    s["key-in-priv-key-wrapped"] = ("alice\n%s\n\n" % hexid).encode() + \
        b"\0" + wrap(b64, 64).encode() + b"\n"
    s["no-key-no-priv-key"] = ("alice\n%s\n" % hexid).encode()
    s["bad-priv-key"] = ("alice\n%s\n" % hexid).encode() + b"\0!!!!"
    s["bad-hex"] = ("alice\n%sxz\n%s\n" % (hexid[:30], b64)).encode()
    s["short-hex"] = ("alice\n%s\n%s\n" % (hexid[:31], b64)).encode()
    s["long-hex"] = ("alice\n%s0\n%s\n" % (hexid, b64)).encode()
    s["only-name"] = b"alice\n"
    s["empty-name"] = ("\n%s\n%s\n" % (hexid, b64)).encode()
    s["name-255-chars"] = ("%s\n%s\n%s\n" % ("n" * 255, hexid, b64)).encode()
    s["garbage-base64"] = ("alice\n%s\n%s*%s\n" %
                           (hexid, b64[:40], b64[41:])).encode()
    s["truncated-key"] = ("alice\n%s\n%s\n" %
                          (hexid, base64.b64encode(pkcs8[:300]).decode())
                          ).encode()
    s["unpadded-base64"] = ("alice\n%s\n%s\n" % (hexid, b64.rstrip("="))
                            ).encode()
    s["key-is-spki"] = ("alice\n%s\n%s\n" %
                        (hexid, base64.b64encode(spki_of(pkcs8)).decode())
                        ).encode()
    s["b64-one-byte"] = b"QQ=="
    s["b64-two-bytes"] = b"QUI="
    s["b64-spaces"] = b" QU\tJD\r\nRA== "
    s["b64-pad-in-middle"] = b"QQ==QUJD"
    s["empty"] = b""
    return s


# --- the engine harnesses: the first byte says how the input is cut --------
# (tests/fuzz/engine_fuzz.h, ef_cuts): how % 3 + 1 pieces, the first cut
# at ((how >> 2) & 7) + 1 ninths, the second ((how >> 5) & 7) + 1 ninths of
# what is left.

WHOLE = 0


def cut(pieces, first=4, second=4):
    return (pieces - 1) | ((first - 1) << 2) | ((second - 1) << 5)


def padded(b, unit=1024):
    return b + bytes((-len(b)) % unit)


def frame_seeds():
    """The test protocols of fuzz_frame.c: 10 echo, 11 stream, 12 big,
    13 refused, 14 wait, 15 close, 16 error (a); 100 ping (b)."""
    def one(how, b):
        return bytes([how]) + b

    ten = b"0123456789"
    echo = req(10, ten)
    ping = req(100, b"")
    s = {}
    s["empty"] = b""
    s["only-how"] = one(WHOLE, b"")
    s["echo"] = one(WHOLE, echo)
    s["echo-twice"] = one(WHOLE, echo + echo)
    s["echo-in-three"] = one(cut(3, 2, 6), echo + echo)
    s["echo-in-two-mid-header"] = one(cut(2, 2), echo)
    s["echo-padded"] = one(WHOLE, padded(echo))
    s["echo-padded-in-two"] = one(cut(2, 1), padded(echo))
    s["echo-few-zeros"] = one(WHOLE, echo + bytes(5))
    s["echo-few-zeros-then-echo"] = one(cut(2, 8), echo + bytes(5) + echo)
    s["echo-size-9"] = one(WHOLE, req(10, ten[:9]))
    s["echo-size-11"] = one(WHOLE, req(10, ten + b"!"))
    s["echo-size-huge"] = one(WHOLE, req(10, ten, size=0xffffffff))
    s["echo-lax-zero-padded"] = one(WHOLE, padded(req(10, ten, size=0)))
    s["echo-lax-zero-not-padded"] = one(WHOLE, req(10, ten + b"x", size=0))
    s["echo-lax-zero-at-eof"] = one(WHOLE, req(10, ten, size=0))
    s["echo-lax-over"] = one(WHOLE, req(10, ten + b"y" * 30))
    s["echo-lax-over-padded"] = one(WHOLE, padded(req(10, ten + b"y" * 30)))
    s["echo-lax-over-max"] = one(WHOLE, req(10, ten + b"y" * 992))
    body = bytes(range(40))
    s["stream"] = one(WHOLE, req(11, struct.pack("<I", 40) + body) + echo)
    s["stream-in-three"] = one(cut(3, 3, 3), req(11, struct.pack("<I", 40)
                                                 + body))
    s["stream-padded"] = one(WHOLE, padded(req(11, struct.pack("<I", 40) +
                                               body)))
    s["stream-head-only"] = one(WHOLE, req(11, struct.pack("<I", 0)))
    s["stream-lax-zero"] = one(WHOLE, padded(req(11, struct.pack("<I", 40) +
                                                 body, size=0)))
    s["stream-lax-zero-too-big"] = one(WHOLE, padded(
        req(11, struct.pack("<I", 5000) + body, size=0)))
    s["stream-size-3"] = one(WHOLE, req(11, b"abc"))
    s["stream-size-3001"] = one(WHOLE, req(11, struct.pack("<I", 0),
                                           size=3001))
    s["stream-truncated"] = one(WHOLE, req(11, struct.pack("<I", 96) +
                                           body, size=100))
    s["stream-max"] = one(WHOLE, req(11, struct.pack("<I", 2996) +
                                     bytes(2996)))
    for n in (0, 1, 1017, 1018, 5000):
        s["big-%d" % n] = one(WHOLE, req(12, struct.pack("<I", n)))
    s["big-5000-padded"] = one(WHOLE, padded(req(12, struct.pack("<I",
                                                                 5000))))
    s["big-over-the-cap"] = one(WHOLE, req(12, struct.pack("<I", 8999)) * 8)
    s["refused"] = one(WHOLE, req(13, b"z" * 100) + echo)
    s["refused-empty"] = one(WHOLE, req(13, b"") + ping)
    s["refused-padded"] = one(WHOLE, padded(req(13, b"z" * 100)))
    s["refused-in-three"] = one(cut(3, 2, 5), req(13, b"z" * 300) + echo)
    s["refused-over-1mib"] = one(WHOLE, req(13, b"", size=1500000))
    s["refused-truncated"] = one(WHOLE, req(13, b"z" * 10, size=1000))
    s["wait"] = one(WHOLE, req(14, b"ab") + echo)
    s["wait-padded"] = one(WHOLE, padded(req(14, b"ab")))
    s["wait-twice"] = one(cut(2, 5), req(14, b"ab") + req(14, b"cd"))
    s["close"] = one(WHOLE, req(15, b"") + echo)
    s["error-even"] = one(WHOLE, req(16, b"\x02") + echo)
    s["error-odd"] = one(WHOLE, req(16, b"\x01") + echo)
    s["ping"] = one(WHOLE, ping)
    s["ping-echo-ping"] = one(cut(3, 3, 3), ping + echo + ping)
    s["ping-padded"] = one(WHOLE, padded(ping))
    s["ping-size-1"] = one(WHOLE, req(100, b"!"))
    s["unknown-in-a"] = one(WHOLE, req(50, b""))
    s["unknown-in-b"] = one(WHOLE, req(150, b""))
    s["unknown-outside"] = one(WHOLE, req(5000, b""))
    s["unknown-after-ping"] = one(WHOLE, ping + req(5000, b""))
    s["unknown-padded"] = one(WHOLE, padded(req(150, b"")))
    s["header-22-bytes"] = one(WHOLE, echo[:22])
    s["zeros-1024"] = one(WHOLE, bytes(1024))
    s["ff-100"] = one(cut(2), b"\xff" * 100)
    s["response-bytes"] = one(WHOLE, resp(2100, CLIENT_ID) * 4)
    return s


def console_seeds():
    """fuzz_console_request.c: how, then the set-up byte (the secret: 0
    none, 1 "s3cret", 2 "Hi", 3 the long one; files listed: 0, 1, 5, 300 in
    bits 2-3), then the client's bytes."""
    def one(how, secret, files, b):
        return bytes([how, secret | files << 2]) + b

    long_secret = bytes(0x21 + i % 94 for i in range(255))
    every = b"TIMENAMERANDSTATUSRSFILSEXIT"
    s = {}
    s["empty"] = b""
    s["only-set-up"] = one(WHOLE, 0, 0, b"")
    s["h"] = one(WHOLE, 0, 0, b"H")
    s["hi"] = one(WHOLE, 0, 0, b"Hi")
    s["hi-time"] = one(WHOLE, 0, 0, b"HiTIME")
    s["hi-every-request"] = one(WHOLE, 0, 2, b"Hi" + every)
    s["hi-every-request-in-three"] = one(cut(3, 1, 4), 0, 2, b"Hi" + every)
    s["hi-every-request-in-two"] = one(cut(2, 5), 0, 1, b"Hi" + every)
    s["hi-exit-then-more"] = one(WHOLE, 0, 0, b"HiEXITTIMESTAT")
    s["hi-lower-case"] = one(WHOLE, 0, 0, b"Hitimestat")
    s["hi-mixed-case"] = one(WHOLE, 0, 0, b"HiTiMeExIt")
    s["hi-unknown"] = one(WHOLE, 0, 0, b"HiABCDEXIT")
    s["hi-unknown-binary"] = one(WHOLE, 0, 0, b"Hi\x00\xff'\\EXIT")
    s["hi-spaces"] = one(WHOLE, 0, 0, b"Hi    ")
    s["hi-crlf"] = one(WHOLE, 0, 0, b"Hi\r\nTIME\r\n")
    s["hi-partial-request"] = one(WHOLE, 0, 0, b"HiTIMESTA")
    s["stat"] = one(WHOLE, 0, 2, b"HiSTATEXIT")
    s["usrs"] = one(WHOLE, 0, 0, b"HiUSRSEXIT")
    s["fils-none"] = one(WHOLE, 0, 0, b"HiFILSEXIT")
    s["fils-one"] = one(WHOLE, 0, 1, b"HiFILSEXIT")
    s["fils-five"] = one(WHOLE, 0, 2, b"HiFILSEXIT")
    s["fils-too-many"] = one(WHOLE, 0, 3, b"HiFILSEXIT")
    s["over-the-budget"] = one(WHOLE, 0, 3, b"Hi" + b"FILS" * 12 + b"EXIT")
    s["many-stats"] = one(cut(2, 2), 0, 1, b"Hi" + b"STAT" * 200 + b"EXIT")
    s["secret"] = one(WHOLE, 1, 0, b"Hi s3cretTIMEEXIT")
    s["secret-in-three"] = one(cut(3, 2, 2), 1, 0, b"Hi s3cretNAMEEXIT")
    s["secret-wrong"] = one(WHOLE, 1, 0, b"Hi s3creTTIME")
    s["secret-missing"] = one(WHOLE, 1, 0, b"HiTIMEEXIT")
    s["secret-short"] = one(WHOLE, 1, 0, b"Hi s3c")
    s["secret-no-space"] = one(WHOLE, 1, 0, b"His3cretTIME")
    s["secret-hi"] = one(WHOLE, 2, 0, b"Hi HiNAMEEXIT")
    s["secret-long"] = one(WHOLE, 3, 0, b"Hi " + long_secret + b"RANDEXIT")
    s["secret-long-wrong"] = one(WHOLE, 3, 0, b"Hi " + long_secret[:-1] +
                                 b"?RAND")
    s["secret-given-none-wanted"] = one(WHOLE, 0, 0, b"Hi s3cretTIME")
    s["wrong-start-lower"] = one(WHOLE, 0, 0, b"hiTIME")
    s["wrong-start-upper"] = one(WHOLE, 0, 0, b"HITIME")
    s["wrong-start-http"] = one(WHOLE, 0, 0, b"GET / HTTP/1.1\r\n\r\n")
    s["every-byte"] = one(cut(3), 0, 0, b"Hi" + bytes(range(256)))
    return s


def metrics_seeds():
    """fuzz_metrics_request.c: how, then the flags byte (odd: 9000 bytes of
    'x' follow), then the client's bytes."""
    def one(how, filler, b):
        return bytes([how, filler]) + b

    get = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n"
    s = {}
    s["empty"] = b""
    s["only-flags"] = one(WHOLE, 0, b"")
    s["get"] = one(WHOLE, 0, get)
    s["get-in-two"] = one(cut(2, 4), 0, get)
    s["get-in-three"] = one(cut(3, 1, 8), 0, get)
    s["get-split-in-the-empty-line"] = one(cut(2, 9), 0, b"GET /metrics "
                                           b"HTTP/1.1\r\n\r\n")
    s["get-lf-only"] = one(WHOLE, 0, b"GET /metrics HTTP/1.0\n\n")
    s["get-cr-lf-lf"] = one(WHOLE, 0, b"GET /metrics HTTP/1.0\r\n\n")
    s["get-query"] = one(WHOLE, 0, b"GET /metrics?name[]=up HTTP/1.1\r\n"
                         b"\r\n")
    s["get-no-version"] = one(WHOLE, 0, b"GET /metrics\r\n\r\n")
    s["get-twice"] = one(WHOLE, 0, get + get)
    s["get-then-filler"] = one(WHOLE, 1, get)
    s["head"] = one(WHOLE, 0, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    s["head-root"] = one(WHOLE, 0, b"HEAD / HTTP/1.1\r\n\r\n")
    s["get-root"] = one(WHOLE, 0, b"GET / HTTP/1.1\r\n\r\n")
    s["get-metricsx"] = one(WHOLE, 0, b"GET /metricsx HTTP/1.1\r\n\r\n")
    s["get-metric"] = one(WHOLE, 0, b"GET /metric HTTP/1.1\r\n\r\n")
    s["get-absolute-uri"] = one(WHOLE, 0, b"GET http://h/metrics HTTP/1.1"
                                b"\r\n\r\n")
    s["get-nul-in-path"] = one(WHOLE, 0, b"GET /metrics\0 HTTP/1.1\r\n\r\n")
    s["get-lower-case"] = one(WHOLE, 0, b"get /metrics HTTP/1.1\r\n\r\n")
    s["get-two-spaces"] = one(WHOLE, 0, b"GET  /metrics HTTP/1.1\r\n\r\n")
    s["get-tab"] = one(WHOLE, 0, b"GET\t/metrics HTTP/1.1\r\n\r\n")
    s["get-alone"] = one(WHOLE, 0, b"GET\r\n\r\n")
    s["post"] = one(WHOLE, 0, b"POST /metrics HTTP/1.1\r\nContent-Length: "
                    b"3\r\n\r\nabc")
    s["options-star"] = one(WHOLE, 0, b"OPTIONS * HTTP/1.1\r\n\r\n")
    s["no-empty-line"] = one(WHOLE, 0, b"GET /metrics HTTP/1.1\r\nHost: x"
                             b"\r\n")
    s["cr-only"] = one(WHOLE, 0, b"GET /metrics HTTP/1.1\r\r\r\r")
    s["empty-line-first"] = one(WHOLE, 0, b"\r\n\r\nGET /metrics HTTP/1.1"
                                b"\r\n\r\n")
    s["head-too-large"] = one(WHOLE, 1, b"GET /metrics HTTP/1.1\r\nX: ")
    s["end-at-8k"] = one(WHOLE, 0, b"GET /metrics " + b"a" * 8177 +
                         b"\n\n")
    s["end-past-8k"] = one(WHOLE, 0, b"GET /metrics " + b"a" * 8178 +
                           b"\n\n")
    s["every-byte"] = one(cut(3), 0, bytes(range(256)) + b"\n\n")
    return s


def config_seeds():
    """fuzz_config.c: the text of bulwarkd.conf."""
    s = {}
    s["empty"] = b""
    s["comments-and-blanks"] = b"# bulwarkd\n\n   \n\t# indented\n"
    s["every-key"] = b"""data-dir = /var/lib/bulwark
port = 1357
listen = 0.0.0.0
max-conns = 16000
max-conns-per-addr = 4000
max-file-size = 4294967024
max-uploads = 256
max-uploads-per-addr = 128
min-rate = 1024
key-lifetime = 3600
key-failures = 3
max-reg-per-min = 1000
max-clients = 1000000
max-message-size = 1073741824
max-queued = 100000
max-queued-bytes = 4294967296
pull-cap = 67108864
max-bodies = 256
max-bodies-per-addr = 128
pull-max-messages = 10000
max-pulls-per-client = 4
reply-memory = 67108864
timeout = 30
request-timeout = 10
shutdown-grace = 10
workers = 2
console-port = 8820
console-listen = 127.0.0.1
console-secret = s3cret
no-console = no
rooms-port = 5555
rooms-listen = ::
rooms-max-conns = 10000
rooms-max-conns-per-addr = 2500
rooms-max-rooms = 10000
rooms-max-members = 1000
rooms-rate = 20
rooms-burst = 40
rooms-queue = 262144
rooms-pause = 150
rooms-max-attempts = 5
rooms-menu-timeout = 60
no-rooms = false
metrics-listen = 127.0.0.1:9357
log-level = info
log-file = /var/log/bulwarkd.log
"""
    s["crlf"] = b"port = 1357\r\nworkers = 4\r\nno-rooms = yes\r\n"
    s["no-newline-at-end"] = b"timeout = 5"
    s["spaces-and-tabs"] = b" \t port\t=\t 80 \t\nlog-level=debug\n"
    s["flags"] = b"no-console = yes\nno-rooms = true\n"
    s["bounds-min"] = (b"max-file-size = 16\nworkers = 1\npull-cap = 1024\n"
                       b"rooms-pause = 10\nrooms-queue = 4096\n"
                       b"reply-memory = 65536\nshutdown-grace = 0\n")
    s["bounds-max"] = (b"max-file-size = 4294967024\nworkers = 16\n"
                       b"timeout = 86400\nmax-clients = 4294967295\n"
                       b"max-queued-bytes = 9223372036854775807\n"
                       b"rooms-menu-timeout = 3600\n")
    s["over-max"] = b"workers = 17\n"
    s["under-min"] = b"max-file-size = 15\n"
    s["u64-overflow"] = b"max-queued-bytes = 18446744073709551616\n"
    s["negative"] = b"port = -1\n"
    s["hex"] = b"port = 0x50\n"
    s["number-with-junk"] = b"port = 80abc\n"
    s["empty-value"] = b"data-dir =\n"
    s["no-equals"] = b"port 80\n"
    s["equals-alone"] = b"=\n"
    s["unknown-key"] = b"# ok\nportt = 80\n"
    s["config-key"] = b"config = /etc/other.conf\n"
    s["flag-bad-value"] = b"no-console = 1\n"
    s["flag-empty"] = b"no-rooms =\n"
    s["value-with-equals"] = b"console-secret = a=b=c\n"
    s["secret-too-long"] = b"console-secret = " + b"s" * 256 + b"\n"
    s["secret-255"] = b"console-secret = " + b"s" * 255 + b"\n"
    s["secret-file-missing"] = b"console-secret-file = /nonexistent/s\n"
    s["secret-file-dir"] = b"console-secret-file = /\n"
    s["address-name"] = b"listen = localhost\n"
    s["address-v6"] = b"listen = ::1\nconsole-listen = fe80::1\n"
    s["address-too-long"] = b"listen = " + b"1" * 70 + b"\n"
    s["metrics-port"] = b"metrics-listen = 9100\n"
    s["metrics-v6"] = b"metrics-listen = [::1]:9100\n"
    s["metrics-bad"] = b"metrics-listen = host:port\n"
    s["log-level-bad"] = b"log-level = loud\n"
    s["data-dir-long"] = b"data-dir = /" + b"d" * 4200 + b"\n"
    s["bad-on-line-3"] = b"port = 80\n\nworkers = many\nport = 81\n"
    s["nul"] = b"port = 80\n\0\n"
    s["high-bytes"] = b"data-dir = /srv/caf\xc3\xa9\xff\n"
    s["console-off-loopback"] = b"console-listen = 0.0.0.0\n"
    return s


def probe_client_seeds():
    """fuzz_probe_client: the first byte cuts the rest into reads of
    (byte + 1) bytes; 0xff ends a connection (a reset when the next byte is
    odd)."""
    name = name_field("alice")
    key_req = name + bytes(160)
    fname = name_field("f.txt")

    def pad(b):
        return b + bytes((-len(b)) % 1024)

    return {
        "vault-session": bytes([255]) + req(1025, name, bytes(16))
        + req(1026, key_req)
        + req(1028, struct.pack("<I", 16) + fname + bytes(16)) + req(1029, fname),
        "padded": bytes([255]) + pad(req(601, b"", version=2)),
        "size-zero-602": bytes([255]) + req(602, CLIENT_ID, version=2, size=0),
        "split": bytes([0]) + req(600, key_req, version=2),
        "two-conns-reset": bytes([255]) + req(1025, name, bytes(16)) + b"\xff\x01"
        + req(604, b"", version=2),
        "type1-content": bytes([255]) + req(603, bytes(16) + b"\x01" + struct.pack("<I", 3)
                                            + b"abc", version=2),
        "no-nul": bytes([255]) + req(1025, b"x" * 255),
        "unknown-code": bytes([255]) + req(7777, b""),
    }


def write_all(name, seeds):
    d = os.path.join(CORPUS, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    for fname, data in sorted(seeds.items()):
        with open(os.path.join(d, fname), "wb") as f:
            f.write(data)
    print("%s: %d seeds" % (name, len(seeds)))


def main():
    fresh = "--new-key" in sys.argv[1:]
    pkcs8 = load_key(fresh)
    spki = spki_of(pkcs8)
    write_all("fuzz_vault_request", request_seeds(spki))
    write_all("fuzz_vault_response", response_seeds())
    write_all("fuzz_identity", identity_seeds(pkcs8))
    write_all("fuzz_frame", frame_seeds())
    write_all("fuzz_console_request", console_seeds())
    write_all("fuzz_metrics_request", metrics_seeds())
    write_all("fuzz_config", config_seeds())
    write_all("fuzz_probe_client", probe_client_seeds())


if __name__ == "__main__":
    main()
