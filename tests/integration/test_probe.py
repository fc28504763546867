"""`bulwark probe vault|msg|rooms|console`, the conformance suites
(docs/conformance.md), against the real bulwarkd: every suite passes it
with nothing failed and nothing deviating, its reports (the case lines on
standard error, --json, --html, -v) agree and hold every case, --polite
leaves every hostile case out, --restart-cmd runs the cases that need a
restart, --strict and the exit status. The servers that keep their spec
but for one defect each are in test_probe_defects.py; the client probe in
test_probe_client.py; bulwarkd's own count of its clients' deviations in
test_deviations.py."""

import os
import re
import shlex
import signal
import subprocess
import textwrap

import pytest

import bwd
import bwmsg
import bwvault as bw
import probe_targets as pt
import reaper
from bwd import rsa_key, unique_name

H = "127.0.0.1"
# the rooms and the console store nothing: their suites run in the
# embedded pass only
SUITES = ("vault", "msg",
          pytest.param("rooms", marks=pytest.mark.stores_nothing("the rooms store nothing")),
          pytest.param("console", marks=pytest.mark.stores_nothing("the console stores nothing")))
SECTIONS_MIN = {"vault": 5, "msg": 5, "rooms": 4, "console": 2}
RESTART_CASES = {"vault": "vault.restart.registration", "msg": "msg.restart.queued"}
TAG_RE = re.compile(r"^[0-9a-f]{8}$")


# --------------------------------------------------------------------------
# Helpers


def start_for(start_server, suite, *extra):
    """bulwarkd with what suite needs (the console or the rooms on their
    ports); returns (daemon, the port the suite is pointed at)."""
    if suite == "console":
        srv = start_server(*extra, console=True)
        return srv, srv.console_port
    if suite == "rooms":
        srv = start_server(*extra, rooms=True)
        return srv, srv.rooms_port
    srv = start_server(*extra)
    return srv, srv.port


def check_report(run, suite, port):
    """What every report holds, whatever its verdicts: the JSON's shape,
    ids unique and named after the suite, each case's section, clause and
    verdict, a summary that counts the cases, and one line per case on
    standard error, in the report's order, with the same verdict."""
    rep = run.report
    assert rep is not None, run.describe()
    assert rep["protocol"] == suite
    assert rep["server"] == "%s:%d" % (H, port)
    assert TAG_RE.match(rep["run"]), rep["run"]
    assert set(rep["summary"]) == {"pass", "fail", "deviation", "skip"}
    cases = rep["cases"]
    assert cases, "no case at all\n" + run.describe()
    ids = [c["id"] for c in cases]
    assert len(ids) == len(set(ids)), "ids twice: %r" % sorted(
        i for i in set(ids) if ids.count(i) > 1)
    for c in cases:
        assert set(c) >= {"id", "section", "clause", "verdict", "hostile", "note", "transcript"}, c
        assert c["id"].startswith(suite + "."), c["id"]
        assert re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)+", c["id"]), c["id"]
        assert c["section"].strip() and c["clause"].strip(), c
        assert c["verdict"] in pt.VERDICTS, c
        assert isinstance(c["hostile"], bool), c
        assert isinstance(c["note"], str) and isinstance(c["transcript"], str), c
    for v in pt.VERDICTS:
        assert rep["summary"][v.lower()] == sum(c["verdict"] == v for c in cases), (
            v, rep["summary"])
    lines = run.stderr_lines()
    assert [(v, i) for v, i, _ in lines] == [(c["verdict"], c["id"]) for c in cases], (
        "the case lines on stderr are not the report's cases\n" + run.err[-3000:])
    for (v, i, note), c in zip(lines, cases):
        if c["note"].isascii():
            assert note == c["note"], (i, note, c["note"])
    # `PASS      vault.register.fresh: 2100`: the verdict padded to 9
    raw = [ln for ln in run.err.splitlines() if pt.CASE_LINE_RE.match(ln)]
    for ln, c in zip(raw, cases):
        assert ln.startswith("%-9s %s: " % (c["verdict"], c["id"])), ln
    # every section holds cases of its own
    assert len({c["section"] for c in cases}) >= SECTIONS_MIN[suite], sorted(
        {c["section"] for c in cases})


def assert_clean(run):
    """Nothing failed, nothing deviated, exit 0."""
    rep = run.report
    bad = run.not_passed()
    bad = {i: vn for i, vn in bad.items() if vn[0] != "SKIP"}
    assert run.rc == 0 and rep["summary"]["fail"] == 0 and rep["summary"]["deviation"] == 0, (
        "not clean: %r\n%s" % (bad, run.describe()))


EXTERNAL_RES = (
    re.compile(r"<\s*link\b", re.I),
    re.compile(r"<\s*script\b[^>]*\bsrc\s*=", re.I),
    re.compile(r"<\s*(img|iframe|embed|object|source|audio|video)\b", re.I),
    re.compile(r"\b(src|href)\s*=\s*[\"']?\s*(https?:)?//", re.I),
    re.compile(r"url\(\s*[\"']?\s*(https?:)?//", re.I),
    re.compile(r"@import", re.I),
)


def check_html(path, run):
    """One self-contained page that holds every case id and verdict."""
    assert path.is_file(), "no %s\n%s" % (path, run.describe())
    page = path.read_text("utf-8")
    assert page.lstrip().lower().startswith("<!doctype html"), page[:200]
    assert page.rstrip().endswith("</html>"), page[-200:]
    for c in run.report["cases"]:
        assert c["id"] in page, "%s is not in the HTML page" % c["id"]
    for rx in EXTERNAL_RES:
        m = rx.search(page)
        assert m is None, "an external asset in the page: %r" % page[max(0, m.start() - 80):m.end() + 80]
    for section in {c["section"] for c in run.report["cases"]}:
        esc = section.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert esc in page, section
    return page


def transcript_blocks(err):
    """{case id: the lines printed under its case line} of a -v run."""
    blocks, cur = {}, None
    for ln in err.splitlines():
        m = pt.CASE_LINE_RE.match(ln)
        if m:
            cur = m.group(2)
            blocks[cur] = []
        elif cur is not None:
            blocks[cur].append(ln)
    return blocks


def check_verbose(run):
    """-v: under each case line its transcript, as in the JSON; the bytes
    sent are there as `  > N bytes: ...` lines."""
    blocks = transcript_blocks(run.err)
    sent = 0
    for c in run.report["cases"]:
        want = c["transcript"].splitlines()
        assert blocks.get(c["id"], []) == want, (
            "the -v transcript of %s is not the JSON's:\n%r\n%r" % (c["id"], blocks.get(c["id"]), want))
        for k, ln in enumerate(want):
            m = re.match(r"^  > (\d+) bytes: (.*)$", ln)
            if m is None:
                continue
            sent += 1
            n, shown = int(m.group(1)), m.group(2)
            if n > 64:
                assert shown.endswith(" ..."), ln
                shown = shown[:-4]
            shown = re.sub(r"\\x[0-9a-f]{2}", "x", shown)
            if k < len(want) - 1 or c["transcript"].endswith("\n"):
                assert len(shown) == min(n, 64), ln
    ran = [c for c in run.report["cases"] if c["verdict"] != "SKIP"]
    with_sends = [c for c in ran if re.search(r"^  > \d+ bytes: ", c["transcript"], re.M)]
    assert sent > 0 and len(with_sends) >= len(ran) // 2, (
        "few cases show what they sent: %d of %d" % (len(with_sends), len(ran)))
    return blocks


# --------------------------------------------------------------------------
# Usage


@pytest.mark.parametrize("args", [
    [],
    ["vault"],
    ["nosuch", "127.0.0.1:1"],
    ["vault", "127.0.0.1"],
    ["vault", "127.0.0.1:1", "127.0.0.1:2"],
    ["vault", "--bogus", "127.0.0.1:1"],
    ["client"],
    ["client", "--listen", "0", "--server", "127.0.0.1:1"],
    ["client", "--listen", "4000"],
])
def test_bad_usage_exits_2(client_bin, args):
    r = subprocess.run([str(client_bin), "probe"] + args, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=30)
    assert r.returncode == 2, bwd.describe(r)
    assert b"Usage: bulwark probe" in r.stderr or b"probe" in r.stderr, bwd.describe(r)


def test_help_exits_0(client_bin):
    r = subprocess.run([str(client_bin), "probe", "--help"], capture_output=True, timeout=30)
    assert r.returncode == 0, bwd.describe(r)
    for opt in (b"--polite", b"--strict", b"--json", b"--html", b"--restart-cmd", b"--secret",
                b"--listen", b"--server", b"--count", b"--duration"):
        assert opt in r.stdout + r.stderr, opt


# --------------------------------------------------------------------------
# Each suite against bulwarkd


@pytest.mark.long
@pytest.mark.parametrize("suite", SUITES)
def test_suite_passes_against_bulwarkd(start_server, tmp_path, suite):
    """bulwarkd keeps the spec the way the probe reads it: exit 0 even
    --strict, nothing failed or deviating; the hostile cases ran and the
    server survived them; the HTML page and the -v transcripts hold what
    the JSON holds."""
    srv, port = start_for(start_server, suite)
    page = tmp_path / ("%s.html" % suite)
    run = pt.run_probe(suite, port, "--strict", "-v", "--html", page)
    check_report(run, suite, port)
    assert_clean(run)
    cases = run.cases
    hostile = [c for c in cases.values() if c["hostile"]]
    assert hostile and all(c["verdict"] == "PASS" or (".secret." in c["id"] and c["note"] == "needs --secret")
                           for c in hostile), [(c["id"], c["verdict"], c["note"]) for c in hostile]
    skipped = {i: c["note"] for i, c in cases.items() if c["verdict"] == "SKIP"}
    restart = RESTART_CASES.get(suite)
    if restart is not None:
        assert skipped == {restart: "needs --restart-cmd"}, skipped
    elif suite == "console":
        # the secret's case needs --secret; nothing else is left out
        assert set(skipped) <= {i for i in cases if ".secret." in i}, skipped
    else:
        assert skipped == {}, skipped
    check_html(page, run)
    check_verbose(run)
    assert srv.alive()


@pytest.mark.stores_nothing("the console stores nothing")
def test_console_suite_with_a_secret(start_server):
    """--secret S: the probe says `Hi S`, and a wrong secret is refused."""
    secret = "s3cr3t-" + os.urandom(4).hex()
    srv = start_server("--console-secret", secret, console=True)
    run = pt.run_probe("console", srv.console_port, "--secret", secret)
    check_report(run, "console", srv.console_port)
    assert_clean(run)
    wrong = [c for c in run.report["cases"] if ".secret." in c["id"]]
    assert wrong and all(c["verdict"] == "PASS" for c in wrong), wrong
    assert not [c for c in run.report["cases"] if c["verdict"] == "SKIP"], run.not_passed()
    # without it nothing is greeted: the greeting fails, what needs it is skipped
    bare = pt.run_probe("console", srv.console_port, "--polite", "-t", "2")
    assert bare.rc == 1, bare.describe()
    assert any("greeting" in i and v == "FAIL" for i, v in bare.verdicts().items()), bare.not_passed()


@pytest.mark.parametrize("suite", ("vault", "msg"))
def test_probe_runs_again_against_the_same_server(server, suite):
    """Each run registers its own users under names with its own tag: a
    second run against the same server passes as the first."""
    first = pt.run_probe(suite, server.port)
    second = pt.run_probe(suite, server.port)
    for run in (first, second):
        check_report(run, suite, server.port)
        assert_clean(run)
    assert first.report["run"] != second.report["run"]


def test_the_default_report_is_a_table_per_section(server):
    run = pt.run_probe("vault", server.port, json_report=False)
    assert run.rc == 0, run.describe()
    out = run.out
    assert "vault conformance of %s:%d" % (H, server.port) in out, out
    assert re.search(r"^section\s+PASS\s+FAIL\s+DEVIATION\s+SKIP$", out, re.M), out
    m = re.search(r"^total\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", out, re.M)
    assert m, out
    passed, failed, deviated, skipped = (int(x) for x in m.groups())
    lines = run.stderr_lines()
    assert (passed, failed, deviated, skipped) == tuple(
        sum(v == w for v, _, _ in lines) for w in pt.VERDICTS), (m.group(0), lines)
    assert failed == deviated == 0 and passed > 20


def test_html_escapes_what_the_server_sent(server, tmp_path):
    """A name another client registered travels in the 601 reply the probe
    records: in the page it is text, never markup."""
    evil = '<img src="http://127.0.0.1:9/x.png" onerror=alert(1)>'
    c = bwmsg.MsgClient(H, server.port)
    c.register(evil, key=rsa_key(0))
    c.close()
    page_path = tmp_path / "msg.html"
    run = pt.run_probe("msg", server.port, "--html", page_path)
    assert_clean(run)
    assert any(evil[:20] in c["transcript"] for c in run.report["cases"]), (
        "the name is in no transcript: the test shows nothing")
    page = check_html(page_path, run)
    assert "<img" not in page
    assert "&lt;img src=&quot;http://127.0.0.1:9/x.png&quot;" in page


# --------------------------------------------------------------------------
# --polite, --strict


@pytest.mark.long
@pytest.mark.parametrize("suite", SUITES)
def test_polite_skips_every_hostile_case_and_only_those(start_server, suite):
    srv, port = start_for(start_server, suite)
    run = pt.run_probe(suite, port, "--polite")
    check_report(run, suite, port)
    assert_clean(run)
    hostile = [c for c in run.report["cases"] if c["hostile"]]
    assert hostile, "no hostile case in the %s suite" % suite
    for c in hostile:
        assert c["verdict"] == "SKIP" and c["note"] == "hostile (--polite)", c
        assert c["transcript"] == "", c  # nothing was sent
    for c in run.report["cases"]:
        if not c["hostile"] and c["id"] != RESTART_CASES.get(suite) and ".secret." not in c["id"]:
            assert c["verdict"] == "PASS", c
    assert srv.alive()


@pytest.mark.parametrize("target,defect,case", [
    (pt.VaultTarget, "never_pad", "vault.framing.padded"),
    (pt.MsgTarget, "delete_on_send", "msg.pull.reset_keeps"),
], ids=["vault", "msg"])
def test_strict_makes_a_deviation_exit_1(target, defect, case):
    """A server whose only fault is a deviation: exit 0, and 1 with
    --strict."""
    suite = "vault" if target is pt.VaultTarget else "msg"
    with target(defect=defect) as srv:
        lax = pt.run_probe(suite, srv.port, "-t", "3")
        strict = pt.run_probe(suite, srv.port, "-t", "3", "--strict")
    assert not srv.errors, srv.errors
    for run in (lax, strict):
        check_report(run, suite, srv.port)
        assert run.verdict(case) == "DEVIATION", run.describe()
        assert run.report["summary"]["fail"] == 0, run.not_passed()
        assert run.report["summary"]["deviation"] == 1, run.not_passed()
    assert lax.rc == 0, lax.describe()
    assert strict.rc == 1, strict.describe()


# --------------------------------------------------------------------------
# --restart-cmd


def restart_command(srv, tmp_path):
    """A shell script for --restart-cmd: SIGTERM to the bulwarkd whose pid
    is in a file, a wait until it is gone (bounded), and a new bulwarkd on
    the same data directory and port, detached (its output to a log of
    its own), its pid written to the file. Returns (command, pid file,
    log)."""
    pidfile = tmp_path / "bulwarkd.pid"
    pidfile.write_text("%d\n" % srv.proc.pid)
    log = tmp_path / "restarted.log"
    argv = " ".join(shlex.quote(a) for a in srv.command() + ["--port", str(srv.port)])
    script = tmp_path / "restart.sh"
    script.write_text(textwrap.dedent("""\
        #!/bin/sh
        # stop the bulwarkd of PIDFILE, wait until it is gone (a zombie is
        # gone: its parent, the test, reaps it later), start another
        pidfile=%(pidfile)s
        pid=$(cat "$pidfile") || exit 1
        kill -TERM "$pid" || exit 1
        n=0
        while [ -d /proc/"$pid" ] && ! grep -q '^State:[[:space:]]*Z' /proc/"$pid"/status 2>/dev/null; do
            n=$((n + 1))
            [ "$n" -le 400 ] || exit 1
            sleep 0.05
        done
        %(argv)s >>%(log)s 2>&1 </dev/null &
        echo $! >"$pidfile"
        """) % {"pidfile": shlex.quote(str(pidfile)), "argv": argv,
                "log": shlex.quote(str(log))})
    return "sh " + shlex.quote(str(script)), pidfile, log


def gone(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            return any(ln.startswith("State:") and "Z" in ln.split()[1] for ln in f)
    except OSError:
        return True


def end_restarted(pid):
    """SIGTERM to a bulwarkd the script started (not our child), then its
    end (bounded), then SIGKILL if it did not go."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not bwd.wait_for(lambda: gone(pid), 20):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        bwd.wait_for(lambda: gone(pid), 10)
        raise AssertionError("the restarted bulwarkd %d did not stop on SIGTERM" % pid)


@pytest.mark.parametrize("suite", ("vault", "msg"))
def test_restart_cases_pass_with_restart_cmd(start_server, tmp_path, suite):
    srv = start_server()
    first_pid = srv.proc.pid
    cmd, pidfile, log = restart_command(srv, tmp_path)
    new_pid = None
    try:
        run = pt.run_probe(suite, srv.port, "--restart-cmd", cmd, "--strict", "-v",
                           env=srv.env or {})
        new_pid = int(pidfile.read_text())
        if new_pid != first_pid:
            reaper.watch(new_pid)
        check_report(run, suite, srv.port)
        case = run.cases[RESTART_CASES[suite]]
        assert case["verdict"] == "PASS", run.describe()
        assert "restart: sh -c" in case["transcript"], case
        assert_clean(run)
        assert not [c for c in run.report["cases"] if c["verdict"] == "SKIP"], run.not_passed()
        # the first daemon was stopped by the script, gracefully; another serves
        assert srv.proc.wait(timeout=20) == 0, srv.log_tail()
        srv.stopped = True
        assert new_pid != first_pid and not gone(new_pid)
        assert "listening on %s:%d" % (H, srv.port) in log.read_text()
        # and what the probe stored went through the restart
        srv2 = bw.VaultClient(H, srv.port).connect()
        try:
            assert bw.expect(srv2.register(unique_name("after")), bw.REGISTERED).code == bw.REGISTERED
        finally:
            srv2.close()
    finally:
        if srv.proc.poll() is None:
            srv.proc.send_signal(signal.SIGTERM)
            srv.proc.wait(timeout=20)
            srv.stopped = True
        if new_pid is None and pidfile.exists():
            new_pid = int(pidfile.read_text())
        if new_pid is not None and new_pid != first_pid:
            end_restarted(new_pid)
    text = log.read_text("utf-8", "replace") if log.exists() else ""
    assert not [ln for ln in text.splitlines() if bwd.SANITIZER_RE.search(ln)], text[-3000:]


def test_a_restart_cmd_that_fails_fails_the_restart_case(server):
    run = pt.run_probe("vault", server.port, "--restart-cmd", "exit 3")
    check_report(run, "vault", server.port)
    case = run.cases["vault.restart.registration"]
    assert case["verdict"] == "FAIL", case
    assert "the command failed" in case["transcript"], case
    assert run.rc == 1
    assert server.alive()
