"""The files an operator gets: the systemd unit (systemd-analyze verify and
a security exposure of 2.0 or lower, the directives the service needs) and
the default configuration file (every option, its defaults as --help says,
the reloadable ones marked, and a daemon that starts and stops with it).
Building the .deb itself is scripts/package."""

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

import bwd
import bwdocs as docs
import bwvault as bw
import ports

UNIT = docs.PACKAGING_DIR / "bulwarkd.service"
CONF = docs.PACKAGING_DIR / "bulwarkd.conf"
MAX_EXPOSURE = 2.0

# "# key = value", the way every option is listed in the configuration file
_CONF_KEY_RE = re.compile(r"^# ([a-z][a-z0-9-]*) = (\S.*)$")


@pytest.fixture(scope="module")
def daemon_help():
    bwd.require_file(bwd.BULWARKD, "bulwarkd", "BULWARKD")
    return docs.run_help([bwd.BULWARKD])


def unit_directives():
    """{key: [values]} of the unit's [Service] and [Unit] lines."""
    out = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


# --- the unit -------------------------------------------------------------

def test_unit_security_exposure():
    sa = docs.require_tool("systemd-analyze", "systemd")
    r = subprocess.run([sa, "security", "--offline=true", "--no-pager", str(UNIT)],
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    out = r.stdout.decode("utf-8", "replace")
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out)
    assert m, "no exposure level in systemd-analyze security's output (exit %d):\n%s%s" % (
        r.returncode, out[-2000:], r.stderr.decode("utf-8", "replace"))
    exposure = float(m.group(1))
    flagged = [ln for ln in out.splitlines() if ln.startswith("✗")]
    assert exposure <= MAX_EXPOSURE, "exposure %.1f > %.1f:\n%s" % (
        exposure, MAX_EXPOSURE, "\n".join(flagged))


def test_unit_verify(tmp_path):
    """systemd-analyze verify on the unit, its ExecStart pointed at the
    bulwarkd under test and its man page at man/ (verify checks that both
    exist)."""
    sa = docs.require_tool("systemd-analyze", "systemd")
    bwd.require_file(bwd.BULWARKD, "bulwarkd", "BULWARKD")
    text = UNIT.read_text()
    assert "ExecStart=/usr/sbin/bulwarkd " in text
    unit = tmp_path / "bulwarkd.service"
    unit.write_text(text.replace("/usr/sbin/bulwarkd", str(bwd.BULWARKD)))
    man8 = tmp_path / "man" / "man8"
    man8.mkdir(parents=True)
    (man8 / "bulwarkd.8").symlink_to(docs.MAN_DIR / "bulwarkd.8")
    e = dict(os.environ, MANPATH=str(tmp_path / "man"), SYSTEMD_LOG_LEVEL="notice")
    args = [sa, "verify", str(unit)]
    if not shutil.which("man"):
        args.insert(2, "--man=no")
    r = subprocess.run(args, capture_output=True, timeout=60, env=e, stdin=subprocess.DEVNULL)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    if "sysinit.target not found" in out or "Failed to initialize manager" in out:
        pytest.skip("systemd-analyze verify cannot run here: %s" % out.strip()[:300])
    assert r.returncode == 0 and out.strip() == "", "systemd-analyze verify:\n" + out


def test_unit_runs_bulwarkd_as_its_user_on_its_state_dir(daemon_help):
    d = unit_directives()
    assert d["User"] == ["bulwark"] and d["Group"] == ["bulwark"]
    assert d["StateDirectory"] == ["bulwark"]
    # everything in the file, the data directory too: `bulwarkd -t
    # --config FILE` checks what the service runs
    assert d["ExecStart"] == ["/usr/sbin/bulwarkd --config /etc/bulwark/bulwarkd.conf"]
    assert re.search(r"^data-dir = /var/lib/bulwark$", CONF.read_text(), re.M)
    assert d["Restart"] == ["on-failure"]
    # systemd knows when it is ready; a reload is checked before the signal
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["ExecReload"] == [
        "/usr/sbin/bulwarkd --check-config --config /etc/bulwark/bulwarkd.conf",
        "/bin/kill -HUP $MAINPID"]
    # SIGTERM's drain must fit inside the stop timeout
    grace = int(docs.help_defaults(daemon_help)["shutdown-grace"])
    assert int(d["TimeoutStopSec"][0]) > grace
    # no capability: every port is >= 1024
    assert d["CapabilityBoundingSet"] == [""]
    # AF_UNIX: the notification's datagram
    assert d["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]


def unit_comments():
    return "\n".join(ln for ln in UNIT.read_text().splitlines() if ln.lstrip().startswith("#"))


def test_unit_explains_each_relaxed_directive():
    """Each directive systemd-analyze still counts against the unit is named
    in a comment that says why."""
    sa = docs.require_tool("systemd-analyze", "systemd")
    r = subprocess.run([sa, "security", "--offline=true", "--no-pager", str(UNIT)],
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    flagged = re.findall(r"^✗ ([A-Za-z]+)=", r.stdout.decode("utf-8", "replace"), re.M)
    assert flagged, "systemd-analyze flagged nothing: its output changed?"
    comments = unit_comments()
    for name in flagged:
        assert name + "=" in comments, "no comment in the unit says why %s= is relaxed" % name


# --- the configuration file ---------------------------------------------------

def conf_entries():
    """[(key, example value, comment block above it)] of the commented
    "# key = value" lines."""
    entries, comment = [], []
    for line in CONF.read_text().splitlines():
        m = _CONF_KEY_RE.match(line)
        if m:
            entries.append((m.group(1), m.group(2), " ".join(comment)))
            comment = []
        elif line.startswith("#"):
            comment.append(line[1:].strip())
        else:
            comment = []
    return entries


def test_conf_lists_every_option_once(daemon_help):
    keys = set(docs.help_options(daemon_help)) - {"help", "version", "config"}
    entries = conf_entries()
    names = [k for k, _, _ in entries]
    assert len(names) == len(set(names)), "an option is listed twice"
    assert sorted(keys - set(names)) == [], "options missing from bulwarkd.conf"
    assert sorted(set(names) - keys) == [], "bulwarkd.conf lists unknown keys"
    for key, _, comment in entries:
        assert comment, "# %s = has no explanation above it" % key


def test_conf_sets_only_the_data_dir_loopback_and_the_tls_ports():
    """The package's own choices, and nothing else: its data directory,
    the unauthenticated listeners on loopback until the operator opens
    them (the console is on loopback by default), and the TLS listeners
    on (documented defaults 1358 and 5556)."""
    live = [ln for ln in CONF.read_text().splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]
    assert live == ["data-dir = /var/lib/bulwark", "listen = 127.0.0.1",
                    "tls-port = 1358", "rooms-tls-port = 5556",
                    "rooms-listen = 127.0.0.1"], live


def test_conf_shows_the_defaults(daemon_help):
    defaults = docs.help_defaults(daemon_help)
    assert len(defaults) > 25, defaults
    shown = {k: v for k, v, _ in conf_entries()}
    for key, value in defaults.items():
        if key in shown:
            assert shown[key] == value, "%s: bulwarkd.conf shows %r, --help says default %r" % (
                key, shown[key], value)
    for flag in ("no-console", "no-rooms"):
        assert shown[flag] == "no"


def test_conf_marks_the_reloadable_options():
    reload = {name for name, r in docs.daemon_opt_table() if r}
    marked = {k for k, _, comment in conf_entries() if comment.startswith("[reload]")}
    assert marked == reload, "missing [reload]: %s; marked but not reloadable: %s" % (
        sorted(reload - marked), sorted(marked - reload))


# the three listeners the packaged configuration runs
LISTENERS = ("vault", "console", "rooms")


def test_default_conf_starts_the_daemon(start_server, tmp_path):
    """bulwarkd --config packaging/bulwarkd.conf --data-dir DIR --port 0
    --rooms-port 0 --console-port 0 serves, and stops with 0 on SIGTERM."""
    data = tmp_path / "data"
    data.mkdir()
    d = start_server(argv=["--config", CONF, "--data-dir", data, "--port", "0",
                           "--rooms-port", "0", "--console-port", "0"],
                     cwd=tmp_path, log_path=tmp_path / "bulwarkd.log", want=LISTENERS)
    try:
        # loopback until the operator opens it
        assert d.addrs["vault"] == d.addrs["rooms"] == d.addrs["console"] == "127.0.0.1", d.addrs
        c = bw.full_session("127.0.0.1", d.ports["vault"], bwd.unique_name("conf"),
                            b"configured\n" * 100, file_name="probe.bin",
                            key=bwd.rsa_key(), timeout=10)
        stored = data / "files" / bytes(c.client_id).hex() / "probe.bin"
        assert bwd.wait_for(stored.exists, 3), "the upload was not stored"
        with socket.create_connection(("127.0.0.1", d.ports["console"]), timeout=5) as s:
            s.sendall(b"Hi")
            assert s.recv(48).startswith(b"bulwarkd")
    finally:
        if d.alive():
            d.stop()
    assert d.proc.returncode == 0


def test_every_example_value_is_accepted(start_server, tmp_path):
    """bulwarkd.conf with every line uncommented (paths and ports moved
    into the test's directory) is a valid configuration."""
    secret = tmp_path / "console.secret"
    secret.write_text("a-console-secret\n")
    text = CONF.read_text()
    text = text.replace("/etc/bulwark/console.secret", str(secret))
    text = text.replace("/etc/bulwark/bus-password", str(secret))
    text = text.replace("/var/log/bulwark/bulwarkd.log", str(tmp_path / "file.log"))
    text = text.replace("/var/lib/bulwark/defensive.db", str(tmp_path / "data" / "defensive.db"))
    text = text.replace("file:/var/lib/bulwark", "file:%s" % (tmp_path / "data"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost",
                    "-keyout", str(tmp_path / "privkey.pem"),
                    "-out", str(tmp_path / "fullchain.pem"), "-days", "2"],
                   check=True, capture_output=True)
    text = text.replace("/etc/letsencrypt/live/bulwark.example", str(tmp_path))
    text = re.sub(r"^# ([a-z][a-z0-9-]* = )", r"\1", text, flags=re.M)
    conf = tmp_path / "all.conf"
    conf.write_text(text)
    data = tmp_path / "data"
    data.mkdir()
    # the command line wins over the file's fixed ports and addresses; the
    # log goes to the file's log-file
    d = start_server(argv=["--config", conf, "--data-dir", data,
                           "--listen", "127.0.0.1", "--port", "0",
                           "--rooms-listen", "127.0.0.1", "--rooms-port", "0",
                           "--console-port", "0", "--metrics-listen",
                           "127.0.0.1:%d" % ports.reserve(),
                           "--tls-port", str(ports.reserve()),
                           "--rooms-tls-port", str(ports.reserve())],
                     cwd=tmp_path, log_path=tmp_path / "stderr.log",
                     log_file=tmp_path / "file.log", want=LISTENERS)
    d.stop()


def test_purging_the_server_package_keeps_its_data(tmp_path):
    """The postrm ran rm -rf /var/lib/bulwark on purge, without asking:
    every stored file, message and key. It is run here on purge in a mount
    namespace of its own (a tmpfs over /var/lib), and the data is still
    there after, with a line that says so."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root for a private /var/lib")
    postrm = Path(__file__).resolve().parents[2] / "debian" / "bulwark-server.postrm"
    script = ("mount -t tmpfs none /var/lib && mkdir /var/lib/bulwark && "
              "echo data > /var/lib/bulwark/defensive.db && sh %s purge && "
              "cat /var/lib/bulwark/defensive.db" % postrm)
    r = subprocess.run([unshare, "-m", "sh", "-c", script], capture_output=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    if r.returncode != 0 and b"mount" in r.stderr and b"permission" in r.stderr.lower():
        pytest.skip("no mount namespace here: %r" % r.stderr)
    assert r.returncode == 0 and r.stdout == b"data\n", (r.stdout, r.stderr)
    assert b"/var/lib/bulwark is kept" in r.stderr


def test_the_server_postinst_makes_the_configuration_group_readable_only():
    """The configuration may hold the console secret: 0640 root:bulwark,
    unless the operator has a dpkg-statoverride of their own."""
    postinst = (Path(__file__).resolve().parents[2] / "debian"
                / "bulwark-server.postinst").read_text()
    assert "chown root:bulwark /etc/bulwark/bulwarkd.conf" in postinst
    assert "chmod 0640 /etc/bulwark/bulwarkd.conf" in postinst
    assert "dpkg-statoverride --list /etc/bulwark/bulwarkd.conf" in postinst
