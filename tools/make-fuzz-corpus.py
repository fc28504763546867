#!/usr/bin/python3
"""Writes the seed corpus of each fuzz harness into tests/fuzz/corpus/<name>/.

Seeds are small hand-made messages: a valid one of each code, truncated and
over-long ones, and hostile names. The RSA key they use (1024 bits, e = 17) is
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


if __name__ == "__main__":
    main()
