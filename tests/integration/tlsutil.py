"""TLS for the independent test clients: contexts, and the certificate a
client proves its identity with.

A client of the TLS listeners proves that it holds the private key
registered for its id (the vault's 1026 key, the messenger's 600 key) by
showing a certificate made from that key: TLS 1.3's CertificateVerify is
signed with it. The certificate is self-signed (the server judges the key,
not a chain), made here by the openssl command from a PyCryptodome RSA key,
independently of the bulwark client, which makes its own in C. The seeds'
keys are RSA-1024: the context's security level goes down to 0 for them,
as AUTH-NOTES says."""

import atexit
import os
import shutil
import socket
import ssl
import subprocess
import tempfile

import pytest

import bwmsg
import bwvault as bw

_dir = None
_made = {}


def need_openssl():
    path = shutil.which("openssl")
    if path is None:
        pytest.skip("the openssl command is not installed")
    return path


def identity_files(key):
    """(certificate, key) PEM files for key, a PyCryptodome RSA key: a
    self-signed client certificate, made once per key and process."""
    global _dir
    k = (key.n, key.e)
    if k in _made:
        return _made[k]
    if _dir is None:
        _dir = tempfile.mkdtemp(prefix="bw-tls-ids-")
        atexit.register(shutil.rmtree, _dir, True)
    i = len(_made)
    kp = os.path.join(_dir, "id%d.key" % i)
    cp = os.path.join(_dir, "id%d.crt" % i)
    with open(kp, "wb") as f:
        f.write(key.export_key(format="PEM", pkcs=8))
    subprocess.run([need_openssl(), "req", "-x509", "-new", "-key", kp, "-out", cp,
                    "-subj", "/CN=bulwark test client", "-days", "2", "-sha256"],
                   check=True, capture_output=True, timeout=30)
    _made[k] = (cp, kp)
    return cp, kp


# --------------------------------------------------------------------------
# Certificates as CAs issue them, made with the openssl command (P-256 keys)

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
SERVER_EXT = ("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
              "basicConstraints=critical,CA:FALSE\n"
              "keyUsage=critical,digitalSignature\n"
              "extendedKeyUsage=serverAuth\n")
ISSUING_CA_EXT = ("basicConstraints=critical,CA:TRUE,pathlen:0\n"
                  "keyUsage=critical,keyCertSign,cRLSign\n")


def openssl(*argv):
    r = subprocess.run([need_openssl()] + [str(a) for a in argv], capture_output=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")


def make_root(directory, stem, cn):
    """A self-signed CA valid 30 days: (certificate, key) files
    directory/stem.crt and .key."""
    directory.mkdir(parents=True, exist_ok=True)
    crt, key = directory / (stem + ".crt"), directory / (stem + ".key")
    openssl("req", "-x509", *EC_KEY, "-subj", "/CN=" + cn, "-keyout", key, "-out", crt,
            "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return crt, key


def issue(directory, stem, cn, ca, ext, days=30):
    """A key and a certificate for cn with the extensions ext (a config
    file's lines), signed by ca, a (certificate, key) pair: (certificate,
    key) files directory/stem.crt and .key."""
    crt, key = directory / (stem + ".crt"), directory / (stem + ".key")
    csr, cnf = directory / (stem + ".csr"), directory / (stem + ".cnf")
    cnf.write_text(ext)
    openssl("req", *EC_KEY, "-subj", "/CN=" + cn, "-keyout", key, "-out", csr)
    openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
            "-out", crt, "-days", str(days), "-extfile", cnf)
    return crt, key


def client_ctx(cafile=None, maximum=None, key=None):
    """A TLS client context: verifying against cafile (host names checked)
    or, without one, taking any certificate; with key (an RSA key), showing
    a certificate made from it when the server asks."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile is not None:
        ctx.load_verify_locations(cafile=str(cafile))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if maximum is not None:
        ctx.maximum_version = maximum
    if key is not None:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # an RSA-1024 identity
        cert, pem = identity_files(key)
        ctx.load_cert_chain(cert, pem)
    return ctx


def tls_connect(host, port, ctx=None, hostname="localhost", timeout=10.0, session=None,
                source=None):
    """A TLS connection (resuming session if given: an SSLSession of a
    connection made with the same ctx), from the address source if given."""
    raw = socket.create_connection((host, port), timeout=timeout,
                                   source_address=None if source is None else (source, 0))
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s = (ctx or client_ctx()).wrap_socket(raw, server_hostname=hostname, session=session)
    except BaseException:
        raw.close()
        raise
    s.settimeout(timeout)
    return s


class TlsVaultClient(bw.VaultClient):
    """bwvault's client over TLS, proving its key (made here if none is
    given) with a certificate unless anonymous."""

    def __init__(self, host, port, cafile=None, hostname="localhost", timeout=10.0, key=None,
                 anonymous=False, source=None):
        super().__init__(host, port, timeout=timeout, key=key or bw.new_rsa_key())
        self.cafile, self.hostname, self.anonymous = cafile, hostname, anonymous
        self.source = source

    def connect(self):
        self.close()
        ctx = client_ctx(self.cafile, key=None if self.anonymous else self.key)
        self.sock = tls_connect(self.host, self.port, ctx, self.hostname, self.timeout,
                                source=self.source)
        return self


class TlsMsgClient(bwmsg.MsgClient):
    """bwmsg's client over TLS (keep-alive, or padded: one connection, and
    so one handshake, per request), proving the key it registers (or is
    given) unless anonymous."""

    def __init__(self, host, port, cafile=None, hostname="localhost", padded=False,
                 timeout=10.0, key=None, anonymous=False):
        super().__init__(host, port, padded=padded, timeout=timeout)
        self.cafile, self.hostname, self.anonymous = cafile, hostname, anonymous
        self.key = key

    def register(self, name, key=None):
        self.key = key or self.key or bw.new_rsa_key()
        return super().register(name, key=self.key)

    def connect(self):
        if self.sock is None:
            ctx = client_ctx(self.cafile, key=None if self.anonymous else self.key)
            self.sock = tls_connect(self.host, self.port, ctx, self.hostname, self.timeout)
        return self.sock
