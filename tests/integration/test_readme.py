"""The README's blocks, typed as a new user types them: "Sending a file"
then "Messages", pasted in order into one shell in an empty directory,
against a running bulwarkd (its address put where the README says
127.0.0.1:1357). They once failed there: both began with mkdir alice,
and the second registered a name the first had taken."""

import os
import re
import subprocess
from pathlib import Path

import bwd
import ports

README = Path(__file__).resolve().parents[2] / "README.md"


def block(section):
    """The first ```sh block under the heading section."""
    text = README.read_text()
    at = text.index("\n## %s\n" % section)
    m = re.compile(r"```sh\n(.*?)```", re.S).search(text, at)
    nxt = text.find("\n## ", at + 1)
    assert m and (nxt < 0 or m.start() < nxt), "no sh block under %s" % section
    return m.group(1)


def test_the_readmes_blocks_run_pasted_in_order(server, client_bin, tmp_path):
    script = "set -e\n" + block("Sending a file") + block("Messages")
    script = script.replace("127.0.0.1:1357", "127.0.0.1:%d" % server.port)
    env = dict(os.environ, PATH="%s:%s" % (Path(bwd.BULWARK).parent, os.environ["PATH"]))
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, "exit %d\n%s\n%s" % (r.returncode, out, r.stderr.decode())
    # what the blocks promise: bob got alice's text and file
    assert "From: alice" in out and "hello" in out, out
    got = [p for p in (tmp_path / "bob").iterdir() if p.name.startswith("from-alice-")]
    assert len(got) == 1 and got[0].read_bytes() == (tmp_path / "alice" / "report.pdf").read_bytes()
    assert "your key's fingerprint: " in out


def test_the_tls_block_runs_pasted_and_pins_the_servers_key(start_server, client_bin, tmp_path):
    """"Over TLS", pasted after a first directory: the upload goes through
    the TLS port, the key pinned is the one bulwarkd --fingerprint prints,
    a second run checks it rather than pinning again, and the file comes
    back (ls, get) and goes (rm)."""
    tls_port = ports.reserve()
    srv = start_server("--tls-port", str(tls_port))
    fp = subprocess.run([str(bwd.BULWARKD), "--fingerprint", "-d", str(srv.data_dir)],
                        capture_output=True, text=True, timeout=30)
    assert fp.returncode == 0, fp.stderr
    script = "set -e\nmkdir first && cd first\n" + block("Over TLS")
    script = script.replace("127.0.0.1:1358", "127.0.0.1:%d" % tls_port)
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home),
               PATH="%s:%s" % (Path(bwd.BULWARK).parent, os.environ["PATH"]))
    env.pop("XDG_CONFIG_HOME", None)
    env.pop("BULWARK_KNOWN_SERVERS", None)
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0, "exit %d\n%s\n%s" % (r.returncode, r.stdout.decode(), err)
    assert err.count("is now pinned") == 1, err
    known = (home / ".config" / "bulwark" / "known_servers").read_text()
    assert known == "127.0.0.1:%d %s\n" % (tls_port, fp.stdout.strip()), known
    # what came back is what went, and rm took it off the server
    carol = tmp_path / "carol"
    assert (carol / "notes-back.txt").read_bytes() == (carol / "notes.txt").read_bytes()
    out = r.stdout.decode(errors="replace")
    assert "notes.txt" in out and "deleted 'notes.txt'" in out, out
    assert bwd.wait_for(lambda: not list(srv.data_dir.glob("files/*/notes.txt")), 5)
