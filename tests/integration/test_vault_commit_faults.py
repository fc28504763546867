"""A stored file is never lost or corrupted by a commit that fails part way.

A verified file is replaced only by a verified one: a second upload under the
same name becomes current at its 1029, and a 1030/1031, an I/O error at any
step of the commit, or a kill -9 there leaves the verified file as it was.
The steps are found by recording, with the LD_PRELOAD shim libbwfault.so
(tests/fault/faultshim.c, BW_FAULT_LOG), every file operation bulwarkd makes
during a clean replacement; each one is then failed (EIO, ENOSPC) or turned
into a SIGKILL (BW_FAULT) in a fresh server holding the same data, counting
calls from the moment the client has reconnected (BW_FAULT_ARM), and the
data is checked before and after a restart without the fault. Start-up
reconciliation of rows and files that disagree is checked directly.
"""

import copy
import hashlib
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

import bwd
import bwvault as bw
from bwd import is_true, rsa_key, unique_name, wait_for

DOC = "doc.bin"
CLIENT_TIMEOUT = 5.0
MAX_STEPS = 40
# The wall clock's second, frozen (the shim's BW_FAULT_TIME) in a recorded
# run and in the faulted runs that count its calls: LastSeen is written only
# when its second changes, so with a moving clock the same requests could
# make a different number of database writes from run to run.
CLOCK = int(time.time())
# the stable start of a temporary name: ".up-", ".old-", ".tmp-"; the rest
# (a sequence number, random characters) differs from run to run
TMP_PREFIX_RE = re.compile(r"\.?[A-Za-z]+[-.]")


# --------------------------------------------------------------------------
# Helpers


class Ident:
    """A registered client: name, id and RSA key, to reconnect with."""

    def __init__(self, name, client_id, key):
        self.name = name
        self.client_id = client_id
        self.key = key

    @property
    def hex(self):
        return self.client_id.hex()


def register(srv, key_index=7):
    key = rsa_key(key_index)
    name = unique_name("fault")
    with srv.client(key=key, timeout=CLIENT_TIMEOUT) as c:
        bw.expect(c.register(name), bw.REGISTERED, "register")
        bw.expect(c.send_pubkey(), bw.KEY_STORED, "public key")
    return Ident(name, c.client_id, key)


def reconnected(srv, ident):
    c = srv.client(key=ident.key, timeout=CLIENT_TIMEOUT)
    c.client_id = ident.client_id
    try:
        bw.expect(c.reconnect(ident.name), bw.RECONNECTED, "reconnect")
    except BaseException:
        c.close()
        raise
    return c


def upload_verified(srv, ident, data, file_name=DOC):
    with reconnected(srv, ident) as c:
        res = c.send_file(file_name, data)
        bw.expect(res.response, bw.FILE_RECEIVED, "send file")
        assert res.server_crc == res.crc
        bw.expect(c.crc_ok(file_name), bw.ACK, "crc ok")


def sha(data):
    return hashlib.sha256(data).hexdigest()[:12] if data is not None else None


def other_path(srv, ident):
    return srv.client_dir(ident.client_id) / "other.bin"


def doc_path(srv, ident):
    return srv.client_dir(ident.client_id) / DOC


def read_or_none(path):
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def describe_content(data, named):
    if data is None:
        return "no file"
    for label, value in named.items():
        if data == value:
            return label
    return "%d bytes of something else (sha256 %s)" % (len(data), sha(data))


def file_rows(db_path):
    """Every files row as a dict, read from db_path (of a stopped server)."""
    con = sqlite3.connect(str(db_path), timeout=10)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM files ORDER BY ID, FileName")]
    finally:
        con.close()


def rows_offline(data_dir, scratch):
    """The files rows of a data dir whose server was killed, read from a copy
    so that neither SQLite's recovery nor a checkpoint on close changes what
    the restarted server will find."""
    scratch = Path(scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        p = Path(data_dir) / ("defensive.db" + suffix)
        if p.exists():
            shutil.copy2(p, scratch / p.name)
    return file_rows(scratch / "defensive.db")


def tree(data_dir):
    """{path relative to files/: sha256} of every regular file under files/
    (every object under files/ when the suite runs on S3)."""
    if bwd.TEST_BLOBS == "s3":
        s3, prefix, _, _ = bwd.s3_args(data_dir)
        base = prefix + "files/"
        return {k[len(base):]: hashlib.sha256(s3.get(bwd.S3_TEST_BUCKET, k)).hexdigest()
                for k in s3.keys(bwd.S3_TEST_BUCKET, base)}
    root = Path(data_dir) / "files"
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if p.is_file() and not p.is_symlink():
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def referenced_paths(rows):
    """Every text value in the rows that looks like a path under files/."""
    return {v for r in rows for v in r.values()
            if isinstance(v, str) and v.startswith("files/")}


def orphans(srv):
    """Files under files/ that no row names (files/.incoming is left to the
    daemon's own clean-up at start-up)."""
    rows = [dict(r) for r in srv.query("SELECT * FROM files")]
    named = referenced_paths(rows)
    return sorted("files/" + p for p in tree(srv.data_dir)
                  if not p.startswith(".incoming/") and "files/" + p not in named)


def check_doc(srv, ident, allowed, named, when):
    """The row of doc.bin says Verified=1, names a file that exists, and the
    file holds one of the allowed contents; nothing else is in files/<hex>/.
    Returns a list of problems."""
    problems = []
    row = srv.file_row(ident.client_id, DOC)
    data = read_or_none(doc_path(srv, ident))
    got = describe_content(data, named)
    if row is None:
        problems.append("%s: no files row for %s (file on disk: %s)" % (when, DOC, got))
    else:
        if not is_true(row["Verified"]):
            problems.append("%s: row Verified=%r (file on disk: %s)" % (when, row["Verified"], got))
        target = srv.blobs(row["PathName"])
        if os.path.basename(row["PathName"]) != DOC:
            problems.append("%s: row PathName is %r" % (when, row["PathName"]))
        elif not target.is_file():
            problems.append("%s: the row points at %s, which is missing" % (when, row["PathName"]))
    if data is None or not any(data == named[a] for a in allowed):
        problems.append("%s: %s holds %s, expected %s" % (when, DOC, got, " or ".join(allowed)))
    listing = srv.stored_files(ident.client_id)
    if listing != [DOC]:
        problems.append("%s: files/%s/ holds %s, expected only %s" % (when, ident.hex, listing, DOC))
    return problems


def restart_checks(srv, ident):
    """Checks of a server started on data left by a failed or killed commit:
    the database is intact, no temporary files were left in view."""
    problems = []
    ic = [r[0] for r in srv.query("PRAGMA integrity_check")]
    if ic != ["ok"]:
        problems.append("after restart: PRAGMA integrity_check says %s" % ic)
    inc = srv.incoming_files()
    if inc:
        problems.append("after restart: files/.incoming still holds %s" % inc)
    if not wait_for(lambda: not orphans(srv), 2):
        problems.append("after restart: files no row names: %s" % orphans(srv))
    return problems


def still_serves(srv, ident, v2):
    """The client whose commit failed can replace its file now, and a fresh
    client can store and verify one."""
    problems = []
    try:
        upload_verified(srv, ident, v2)
        problems += check_doc(srv, ident, ["v2"], {"v2": v2}, "after restart, v2 uploaded again")
    except (AssertionError, bw.ProtocolError, OSError) as e:
        problems.append("after restart: the same client could not replace %s: %s" % (DOC, e))
    try:
        data = os.urandom(2000)
        c = bw.full_session("127.0.0.1", srv.port, unique_name("probe"), data,
                            file_name="probe.bin", key=rsa_key(8), timeout=CLIENT_TIMEOUT)
        row = srv.file_row(c.client_id, "probe.bin")
        if read_or_none(srv.client_dir(c.client_id) / "probe.bin") != data or row is None \
                or not is_true(row["Verified"]):
            problems.append("after restart: a fresh client's upload was not stored and verified")
    except (AssertionError, bw.ProtocolError, OSError) as e:
        problems.append("after restart: a fresh client could not upload: %s" % e)
    return problems


# --------------------------------------------------------------------------
# One replacement (or first upload) as a client sees it


class Outcome:
    def __init__(self):
        self.got_2103 = False
        self.sent_1029 = False
        self.got_2104 = False
        self.error_at = None  # the request answered 2107
        self.dropped_at = None  # the request during which the connection went
        self.other = None  # anything the protocol does not allow

    @property
    def succeeded(self):
        return self.got_2104

    def __str__(self):
        if self.got_2104:
            return "2103 then 2104"
        if self.error_at:
            return "2107 to %s" % self.error_at
        if self.dropped_at:
            return "connection dropped during %s" % self.dropped_at
        return self.other or "nothing"


def mark(call_log, text):
    if call_log is not None:
        with open(call_log, "a") as f:
            f.write("#### %s\n" % text)


def replace_doc(srv, ident, data, call_log=None, arm=None):
    """Reconnect, 1028 doc.bin, 1029; what the client saw. Once reconnected,
    creates the file arm (the shim's faults count calls from there on);
    with call_log, marks the phases in the shim's log of calls."""
    out = Outcome()
    step = "1027"
    try:
        with reconnected(srv, ident) as c:
            if arm is not None:
                Path(arm).touch()
            mark(call_log, "1028")
            step = "1028"
            res = c.send_file(DOC, data)
            if res.response.code == bw.ERROR:
                out.error_at = "1028"
                return out
            bw.expect(res.response, bw.FILE_RECEIVED, "send file")
            if res.server_crc != res.crc:
                out.other = "2103 with cksum %d, expected %d" % (res.server_crc, res.crc)
                return out
            out.got_2103 = True
            # let the work done after the reply settle, so that the
            # recording puts it in the right phase
            wait_for(srv.asleep, 5, 0.01)
            mark(call_log, "1029")
            step = "1029"
            out.sent_1029 = True
            resp = c.crc_ok(DOC)
            if resp.code == bw.ERROR:
                out.error_at = "1029"
                return out
            bw.expect(resp, bw.ACK, "crc ok")
            out.got_2104 = True
            wait_for(srv.asleep, 5, 0.01)
            mark(call_log, "end")
    except socket.timeout:
        out.other = "no answer to %s within %gs" % (step, CLIENT_TIMEOUT)
    except (ConnectionError, OSError) as e:
        out.dropped_at = step
        out.other = str(e)
    except bw.ProtocolError as e:
        out.other = "%s: %s" % (step, e)
    return out


# --------------------------------------------------------------------------
# Recording the steps of a commit


class Step:
    def __init__(self, index, op, path, phase, key, substr, n, which):
        self.index = index
        self.op = op
        self.path = path
        self.phase = phase
        self.key = key
        self.substr = substr
        self.n = n
        self.which = which

    def fault(self, action):
        return "%s:%d:%s:%s" % (self.op, self.n, action, self.substr)

    def __str__(self):
        return "%s step %s (%s of the phase), BW_FAULT=%s" % (
            self.phase, self.key, self.which, self.fault("<action>"))


def read_calls(call_log):
    """[(op, path, phase)] in order; phase is the last mark before the call."""
    calls = []
    phase = "start-up"
    for line in Path(call_log).read_text(errors="replace").splitlines():
        if line.startswith("#### "):
            phase = line[5:]
            continue
        op, _, path = line.partition(" ")
        calls.append((op, path, phase))
    return calls


def our_part(path, data_dir):
    """The first path in path (one, or "old new") under data_dir, relative to
    it; None if there is none."""
    dd = str(data_dir)
    for p in path.split(" "):
        if p == dd:
            return ""
        if p.startswith(dd + "/"):
            return p[len(dd) + 1:]
    return None


def stable_part(rel):
    """rel (relative to the data dir) without what changes from run to run:
    the data dir's own files and files/<dir> are kept whole, so is doc.bin;
    any other name below files/<dir>/ is a temporary one, cut after its
    prefix (".up-", ".tmp-", ...). Returns (substring, blurred)."""
    parts = rel.split("/")
    if len(parts) <= 2 or parts[-1] == DOC:
        return rel, rel
    m = TMP_PREFIX_RE.match(parts[-1])
    stem = "/".join(parts[:-1]) + "/" + (m.group(0) if m else "")
    return stem, stem + "*"


def blur(path, data_dir):
    """path (one, or "old new") as a step key: $D for the data dir, temporary
    names blurred."""
    out = []
    for p in path.split(" "):
        rel = our_part(p, data_dir)
        if rel is None:
            out.append(p)
        elif rel == "":
            out.append("$D")
        else:
            out.append("$D/" + stable_part(rel)[1])
    return " ".join(out)


def commit_steps(call_log, data_dir, phases=("1028", "1029")):
    """The file operations under data_dir during the given phases, deduped on
    (phase, op, path with temporary names blurred): the first and the last of
    each. Each step carries the shim substring and count that hit the same
    call in a server started on a copy of the same data and armed at the
    first mark."""
    calls = read_calls(call_log)
    seen = {}
    order = []
    for i, (op, path, phase) in enumerate(calls):
        if phase not in phases:
            continue
        rel = our_part(path, data_dir)
        if rel is None:
            continue
        key = (phase, "%s %s" % (op, blur(path, data_dir)))
        if key not in seen:
            seen[key] = [i, i]
            order.append(key)
        else:
            seen[key][1] = i
    steps = []
    for key in order:
        first, last = seen[key]
        for which, i in (("first", first), ("last", last)):
            if which == "last" and last == first:
                continue
            op, path, phase = calls[i]
            substr = stable_part(our_part(path, data_dir))[0]
            n = sum(1 for o, p, ph in calls[:i + 1]
                    if ph != "start-up" and o == op and substr in p)
            steps.append(Step(i, op, path, phase, key[1], substr, n, which))
    return steps[:MAX_STEPS]


def record(start_server, shim, prepared, workdir, action):
    """Runs action(srv) on a copy of prepared with the shim logging; returns
    (call log, data dir used)."""
    dd = workdir / "record"
    shutil.copytree(prepared, dd)
    call_log = workdir / "calls.log"
    srv = start_server(data_dir=dd, env=bwd.fault_env(shim, log=call_log, clock=CLOCK))
    action(srv, call_log)
    srv.stop()
    return call_log, dd


def calls_reached(call_log, step):
    """How many of the step's calls (op on a path holding its substring) a
    faulted run made from its 1028 on, as logged by the shim."""
    n = 0
    for op, path, phase in read_calls(call_log):
        if phase != "start-up" and op == step.op and step.substr in path:
            n += 1
    return n


def fired_in(call_log, step):
    """The phase in which a faulted run made the step's call (its n-th of
    the kind from its 1028 on), or None if it made fewer."""
    n = 0
    for op, path, phase in read_calls(call_log):
        if phase != "start-up" and op == step.op and step.substr in path:
            n += 1
            if n == step.n:
                return phase
    return None


def reached_in_phase(call_log, step):
    """How many of the step's calls a run had made by the end of the step's
    phase (0 when it made none there)."""
    n = 0
    last = 0
    for op, path, phase in read_calls(call_log):
        if phase != "start-up" and op == step.op and step.substr in path:
            n += 1
            if phase == step.phase:
                last = n
    return last


def replayed(run_once, step, tag, workdir, *args):
    """Runs run_once(step, tag, workdir, *args) -> (problems, diverged) until
    its run reached the step's call (at most three times): the metadata store
    joins the requests of one loop pass in one transaction, so how many
    pages, and so how many writes of the journal, a commit takes depends on
    what else that pass held. The last call of a phase is a step of its own:
    when the recording made more of them than three runs do, the fourth run
    faults the last one those runs made in the phase. A run that never
    reached the step is a problem itself; what each run found besides is
    reported."""
    problems = []
    reached = []
    for attempt in range(3):
        run_tag = tag if attempt == 0 else "%s-again%d" % (tag, attempt)
        found, diverged = run_once(step, run_tag, workdir, *args)
        problems += found
        if not diverged:
            return problems
        reached.append(reached_in_phase(workdir / (run_tag + ".calls"), step))
    if step.which == "last" and reached and 0 < min(reached) < step.n:
        again = copy.copy(step)
        again.n = min(reached)
        again.which = "last as the runs made it (%d, recorded %d)" % (again.n, step.n)
        found, diverged = run_once(again, "%s-last" % tag, workdir, *args)
        if not diverged:
            return problems + found
    return problems + ["%s: in 3 runs the calls never reached the recorded count (they reached %s)"
                       % (step, reached)]


def fired(srv, step, action):
    text = srv.log()
    if action == "kill":
        return "bwfault: kill at %s #%d" % (step.op, step.n) in text
    return "bwfault: %s #%d failed" % (step.op, step.n) in text


def wait_killed(srv):
    """None once bulwarkd died of SIGKILL, else what happened instead."""
    try:
        rc = srv.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return "bulwarkd is still running"
    srv.stopped = True  # it exited: teardown need not report it again
    srv.kill()
    return None if rc == -signal.SIGKILL else "bulwarkd exited with %r" % rc


# --------------------------------------------------------------------------
# Replacing a verified file, no faults


def stored_v1(start_server, v1):
    """A server holding v1 of doc.bin, verified."""
    srv = start_server()
    ident = register(srv)
    upload_verified(srv, ident, v1)
    assert doc_path(srv, ident).read_bytes() == v1
    row = srv.file_row(ident.client_id, DOC)
    assert row is not None and is_true(row["Verified"]), dict(row) if row else None
    return srv, ident


def test_replacement_becomes_current_only_at_its_1029(start_server):
    v1, v2 = os.urandom(3000), os.urandom(5000)
    srv, ident = stored_v1(start_server, v1)
    named = {"v1": v1, "v2": v2}
    with reconnected(srv, ident) as c:
        res = c.send_file(DOC, v2)
        bw.expect(res.response, bw.FILE_RECEIVED)
        assert res.server_crc == res.crc
        problems = check_doc(srv, ident, ["v1"], named, "after 2103 for v2, before its 1029")
        assert not problems, "\n".join(problems)
        bw.expect(c.crc_ok(DOC), bw.ACK)
    problems = check_doc(srv, ident, ["v2"], named, "after 2104 for v2")
    assert not problems, "\n".join(problems)
    assert wait_for(lambda: not orphans(srv), 2), "files no row names: %s" % orphans(srv)


@pytest.mark.parametrize("code", [bw.CRC_BAD, bw.CRC_GIVE_UP])
def test_crc_mismatch_keeps_the_verified_file(start_server, code):
    v1, v2, v3 = os.urandom(3000), os.urandom(5000), os.urandom(4100)
    srv, ident = stored_v1(start_server, v1)
    named = {"v1": v1, "v2": v2, "v3": v3}
    with reconnected(srv, ident) as c:
        bw.expect(c.send_file(DOC, v2).response, bw.FILE_RECEIVED)
        if code == bw.CRC_BAD:
            c.crc_bad(DOC)  # no reply; the resend follows
            res = c.send_file(DOC, v3)
            bw.expect(res.response, bw.FILE_RECEIVED, "resend after 1030")
            problems = check_doc(srv, ident, ["v1"], named, "after 1030 and a resend")
            assert not problems, "\n".join(problems)
            bw.expect(c.giveup(DOC), bw.ACK, "1031")
        else:
            bw.expect(c.giveup(DOC), bw.ACK, "1031")
    problems = check_doc(srv, ident, ["v1"], named, "after %d" % code)
    assert not problems, "\n".join(problems)
    assert wait_for(lambda: not orphans(srv), 2), \
        "the discarded upload is still on disk: %s" % orphans(srv)
    srv.stop()


def test_resend_after_1030_becomes_current_at_its_1029(start_server):
    v1, v2, v3 = os.urandom(3000), os.urandom(5000), os.urandom(4100)
    srv, ident = stored_v1(start_server, v1)
    named = {"v1": v1, "v2": v2, "v3": v3}
    with reconnected(srv, ident) as c:
        bw.expect(c.send_file(DOC, v2).response, bw.FILE_RECEIVED)
        c.crc_bad(DOC)
        bw.expect(c.send_file(DOC, v3).response, bw.FILE_RECEIVED)
        bw.expect(c.crc_ok(DOC), bw.ACK)
    problems = check_doc(srv, ident, ["v3"], named, "after 1030, resend, 1029")
    assert not problems, "\n".join(problems)
    assert wait_for(lambda: not orphans(srv), 2), "files no row names: %s" % orphans(srv)


SWAP_TRIES = 15  # the shim takes 16 faults


@pytest.mark.parametrize("op", ["linkat", "renameat"])
@pytest.mark.files_only("fails the swap's link or rename with the fault shim")
def test_a_1029_whose_swap_fails_is_never_acknowledged(start_server, shim, tmp_path, op):
    """The 1029 that puts a replacement in place fails at its first file step
    (linking the old file aside, or the rename) again and again: every one
    is answered 2107 and leaves v1 current and the replacement pending. A
    failure reported by the worker must not be lost on the way back (a
    result written over by the submitting thread shows up as a 2104 in some
    of the tries, the replacement then dropped at the next start)."""
    v1, v2 = os.urandom(3000), os.urandom(5000)
    arm = tmp_path / "armed"
    srv = start_server()
    ident = register(srv)
    srv.stop()
    where = "files/%s/%s" % (ident.hex, DOC)  # only the 1029 swap names it
    faults = ",".join("%s:%d:EIO:%s" % (op, k, where) for k in range(1, SWAP_TRIES + 1))
    srv = start_server(data_dir=srv.data_dir, env=bwd.fault_env(shim, fault=faults, arm=arm))
    upload_verified(srv, ident, v1)
    arm.touch()
    named = {"v1": v1, "v2": v2}
    problems = []
    for k in range(1, SWAP_TRIES + 1):
        out = replace_doc(srv, ident, v2)
        if not out.sent_1029:
            problems.append("try %d: the 1028 did not get its 2103: %s" % (k, out))
            continue
        if out.error_at != "1029":
            problems.append("try %d: the failed swap was answered %s; %s holds %s" % (
                k, out, DOC, describe_content(read_or_none(doc_path(srv, ident)), named)))
        problems += check_doc(srv, ident, ["v1"], named, "try %d (client saw %s)" % (k, out))
    fired_n = srv.log().count("bwfault: %s #" % op)
    assert fired_n == SWAP_TRIES, "the fault fired %d times, not %d" % (fired_n, SWAP_TRIES)
    srv.stop()
    assert not problems, "%d problem(s) in %d failed swaps:\n%s\n%s" % (
        len(problems), SWAP_TRIES, "\n".join(problems), srv.log_tail(12))


# --------------------------------------------------------------------------
# A fault at each step of a replacement


def prepare_v1(start_server, workdir, v1):
    """A stopped server's data dir holding v1 of doc.bin, verified."""
    srv, ident = stored_v1(start_server, v1)
    srv.stop()
    prepared = workdir / "prepared"
    shutil.copytree(srv.data_dir, prepared)
    return prepared, ident


def replacement_steps(start_server, shim, prepared, ident, workdir, v2):
    def action(srv, call_log):
        out = replace_doc(srv, ident, v2, call_log)
        assert out.succeeded, "the clean replacement did not succeed: %s\n%s" % (
            out, srv.log_tail())

    call_log, dd = record(start_server, shim, prepared, workdir, action)
    steps = commit_steps(call_log, dd)
    ours = [s for s in steps if "files/" in s.path]
    assert ours, ("the shim recorded no file operation under files/ during the "
                  "replacement; is it preloaded?\n%s" % Path(call_log).read_text()[-3000:])
    return steps


def run_fault(start_server, shim, prepared, ident, workdir, step, action, v1, v2, tag):
    """One step failed with action; returns problems, each naming the step."""
    return replayed(run_fault_once, step, tag, workdir, start_server, shim, prepared, ident,
                    action, v1, v2)


def run_fault_once(step, tag, workdir, start_server, shim, prepared, ident, action, v1, v2):
    named = {"v1": v1, "v2": v2}
    dd = workdir / tag
    shutil.copytree(prepared, dd)
    problems = []
    diverged = False
    arm = workdir / (tag + ".arm")
    calls = workdir / (tag + ".calls")
    srv = start_server(data_dir=dd, env=bwd.fault_env(shim, fault=step.fault(action), arm=arm,
                                                      clock=CLOCK, log=calls))
    out = replace_doc(srv, ident, v2, calls, arm=arm)
    if action == "kill":
        why = wait_killed(srv)
        if why:
            diverged = calls_reached(calls, step) < step.n
            if not diverged:
                problems.append("the kill did not happen: %s; client saw %s" % (why, out))
            if srv.alive():
                srv.stop()
        allowed = ["v2"] if out.got_2104 else (["v1", "v2"] if out.sent_1029 else ["v1"])
        if out.other and not out.dropped_at:
            problems.append("client: %s" % out)
    else:
        if not fired(srv, step, action):
            diverged = calls_reached(calls, step) < step.n
            if not diverged:
                problems.append("the fault did not fire; client saw %s" % out)
        if out.other and not out.dropped_at:
            problems.append("client: %s" % out)
        allowed = ["v2"] if out.succeeded else ["v1"]
        if srv.alive():
            problems += check_doc(srv, ident, allowed, named,
                                  "after the fault (client saw %s)" % out)
            try:
                # the path is not left locked or half-replaced: another
                # upload of the name goes through and is given up on; after
                # a failed fsync of the journal nothing is acknowledged as
                # durable until a restart (still_serves below checks that)
                with reconnected(srv, ident) as c:
                    if step.op == "fdatasync" and "defensive.db-wal" in step.path:
                        bw.expect(c.send_file(DOC, os.urandom(100)).response,
                                  bw.ERROR, "upload after a failed journal fsync")
                    else:
                        bw.expect(c.send_file(DOC, os.urandom(100)).response,
                                  bw.FILE_RECEIVED, "upload after the fault")
                        bw.expect(c.giveup(DOC), bw.ACK, "1031 after the fault")
            except (AssertionError, bw.ProtocolError, OSError) as e:
                problems.append("after the fault, the name is stuck: %s" % e)
            problems += check_doc(srv, ident, allowed, named,
                                  "after the fault and a 1028+1031")
            try:
                srv.stop()
            except AssertionError as e:
                problems.append("SIGTERM after the fault: %s" % str(e).splitlines()[0])
        else:
            problems.append("bulwarkd died after the fault (exit %r)" % srv.proc.poll())
            srv.stopped = True
            srv.kill()

    before_tree = tree(dd)
    before_rows = rows_offline(dd, workdir / (tag + "-rows"))
    srv2 = start_server(data_dir=dd)
    problems += check_doc(srv2, ident, allowed, named,
                          "after restart (client saw %s)" % out)
    problems += restart_checks(srv2, ident)
    after_tree = tree(dd)
    changed = [p for p in set(before_tree) | set(after_tree)
               if not p.startswith(".incoming/") and before_tree.get(p) != after_tree.get(p)]
    rows_now = [dict(r) for r in srv2.query("SELECT * FROM files ORDER BY ID, FileName")]
    if (changed or rows_now != before_rows) and "reconcile" not in srv2.log():
        problems.append("start-up changed %s without a 'reconcile' log line"
                        % (sorted(changed) or "the files rows"))
    problems += still_serves(srv2, ident, v2)
    try:
        srv2.stop()
    except AssertionError as e:
        problems.append("SIGTERM after restart: %s" % str(e).splitlines()[0])
    # the phase's calls were fewer this time (a transaction joined other
    # work, or did not): the count reached the step in a later phase, and
    # what failed there is not this step's. Run again.
    where = fired_in(calls, step)
    if where is not None and where != step.phase:
        return [], True
    return (["%s [%s]: %s\n    logs: %s, %s" % (step, action, p, srv.log_path, srv2.log_path)
             for p in problems], diverged)


def actions_for(step, base):
    if base == "kill":
        return ["kill"]
    return ["EIO", "ENOSPC"] if step.op in ("write", "pwrite") else ["EIO"]


def run_replacement_faults(start_server, shim, tmp_path, base):
    v1, v2 = os.urandom(3000), os.urandom(5000)
    prepared, ident = prepare_v1(start_server, tmp_path, v1)
    steps = replacement_steps(start_server, shim, prepared, ident, tmp_path, v2)
    problems = []
    runs = 0
    for k, step in enumerate(steps):
        for action in actions_for(step, base):
            runs += 1
            problems += run_fault(start_server, shim, prepared, ident, tmp_path, step,
                                  action, v1, v2, "step%02d-%s" % (k, action))
    if problems:
        pytest.fail("%d problem(s) in %d faulted replacements of a verified file:\n%s"
                    % (len(problems), runs, "\n".join(problems)))


@pytest.mark.sqlite_only("copies the data directory, defensive.db included, between the recorded and the faulted runs")
@pytest.mark.slow
def test_io_error_at_any_step_of_a_replacement_keeps_the_verified_file(start_server, shim,
                                                                       tmp_path):
    run_replacement_faults(start_server, shim, tmp_path, "errno")


@pytest.mark.sqlite_only("copies the data directory, defensive.db included, between the recorded and the faulted runs")
@pytest.mark.slow
def test_kill_at_any_step_of_a_replacement_keeps_a_verified_file(start_server, shim,
                                                                 tmp_path):
    run_replacement_faults(start_server, shim, tmp_path, "kill")


# --------------------------------------------------------------------------
# A fault at each step of a first upload


def check_first(srv, ident, v1, out, when):
    """No row and no file, or a row and the complete file; Verified only if
    the client confirmed, and certainly if the server acknowledged that."""
    problems = []
    row = srv.file_row(ident.client_id, DOC)
    data = read_or_none(doc_path(srv, ident))
    listing = srv.stored_files(ident.client_id)
    extra = [n for n in listing if n != DOC]
    if extra:
        problems.append("%s: files/%s/ holds %s" % (when, ident.hex, listing))
    if row is None:
        if data is not None:
            problems.append("%s: %s on disk (%s) without a row"
                            % (when, DOC, describe_content(data, {"v1": v1})))
        if out.got_2104:
            problems.append("%s: the 1029 was acknowledged but the row is gone" % when)
        return problems
    if data is None:
        problems.append("%s: a row (Verified=%r) for a missing file" % (when, row["Verified"]))
    elif data != v1:
        problems.append("%s: the row names a file holding %s"
                        % (when, describe_content(data, {"v1": v1})))
    if not srv.blobs(row["PathName"]).is_file():
        problems.append("%s: the row points at %s, which is missing" % (when, row["PathName"]))
    if is_true(row["Verified"]) and not out.sent_1029:
        problems.append("%s: Verified=1 although no 1029 was sent" % when)
    if out.got_2104 and not is_true(row["Verified"]):
        problems.append("%s: 2104 was sent but Verified=%r" % (when, row["Verified"]))
    return problems


def run_first_fault(start_server, shim, prepared, ident, workdir, step, action, v1, tag):
    return replayed(run_first_fault_once, step, tag, workdir, start_server, shim, prepared,
                    ident, action, v1)


def run_first_fault_once(step, tag, workdir, start_server, shim, prepared, ident, action, v1):
    dd = workdir / tag
    shutil.copytree(prepared, dd)
    problems = []
    diverged = False
    arm = workdir / (tag + ".arm")
    calls = workdir / (tag + ".calls")
    srv = start_server(data_dir=dd, env=bwd.fault_env(shim, fault=step.fault(action), arm=arm,
                                                      clock=CLOCK, log=calls))
    out = replace_doc(srv, ident, v1, calls, arm=arm)
    if out.other and not out.dropped_at:
        problems.append("client: %s" % out)
    if action == "kill":
        why = wait_killed(srv)
        if why:
            diverged = calls_reached(calls, step) < step.n
            if not diverged:
                problems.append("the kill did not happen: %s; client saw %s" % (why, out))
            if srv.alive():
                srv.stop()
    else:
        if not fired(srv, step, action):
            diverged = calls_reached(calls, step) < step.n
            if not diverged:
                problems.append("the fault did not fire; client saw %s" % out)
        if srv.alive():
            problems += check_first(srv, ident, v1, out, "after the fault (client saw %s)" % out)
            try:
                srv.stop()
            except AssertionError as e:
                problems.append("SIGTERM after the fault: %s" % str(e).splitlines()[0])
        else:
            problems.append("bulwarkd died after the fault (exit %r)" % srv.proc.poll())
            srv.stopped = True
            srv.kill()
    srv2 = start_server(data_dir=dd)
    problems += check_first(srv2, ident, v1, out, "after restart (client saw %s)" % out)
    problems += restart_checks(srv2, ident)
    problems += still_serves(srv2, ident, os.urandom(3500))
    try:
        srv2.stop()
    except AssertionError as e:
        problems.append("SIGTERM after restart: %s" % str(e).splitlines()[0])
    return (["%s [%s]: %s\n    logs: %s, %s" % (step, action, p, srv.log_path, srv2.log_path)
             for p in problems], diverged)


@pytest.mark.sqlite_only("copies the data directory, defensive.db included, between the recorded and the faulted runs")
@pytest.mark.slow
@pytest.mark.parametrize("base", ["errno", "kill"])
def test_first_upload_failing_at_any_step_leaves_a_row_only_with_its_whole_file(
        start_server, shim, tmp_path, base):
    v1 = os.urandom(3000)
    srv = start_server()
    ident = register(srv)
    srv.stop()
    prepared = tmp_path / "prepared"
    shutil.copytree(srv.data_dir, prepared)

    def action(rec, call_log):
        out = replace_doc(rec, ident, v1, call_log)
        assert out.succeeded, "the clean upload did not succeed: %s\n%s" % (out, rec.log_tail())

    call_log, dd = record(start_server, shim, prepared, tmp_path, action)
    steps = commit_steps(call_log, dd)
    assert any("files/" in s.path for s in steps), \
        "the shim recorded no file operation under files/ during the upload"
    problems = []
    runs = 0
    for k, step in enumerate(steps):
        for act in actions_for(step, base):
            runs += 1
            problems += run_first_fault(start_server, shim, prepared, ident, tmp_path, step,
                                        act, v1, "step%02d-%s" % (k, act))
    if problems:
        pytest.fail("%d problem(s) in %d faulted first uploads:\n%s"
                    % (len(problems), runs, "\n".join(problems)))


# --------------------------------------------------------------------------
# Start-up reconciliation


def reconcile_lines(srv):
    return [ln for ln in srv.log().splitlines() if "reconcile" in ln]


def test_startup_drops_the_row_of_a_missing_file(start_server):
    """Start-up drops the row of a file that is gone. On a database other
    daemons share, it does so under the path's lock across the daemons (a
    commit on another node writes its row before its object, and holds
    that lock until its object is put: test_s3_backend's node starting
    beside such a commit); an upload of the name stores it again."""
    keep, doc = os.urandom(1500), os.urandom(2500)
    srv = start_server()
    ident = register(srv)
    upload_verified(srv, ident, keep, file_name="keep.bin")
    upload_verified(srv, ident, doc)
    srv.stop()
    doc_path(srv, ident).unlink()

    srv2 = start_server(data_dir=srv.data_dir)
    lines = reconcile_lines(srv2)
    assert any(DOC in ln for ln in lines), \
        "no 'reconcile' line names %s:\n%s" % (DOC, srv2.log_tail())
    assert srv2.file_row(ident.client_id, DOC) is None, \
        "the row of the missing file is still there"
    row = srv2.file_row(ident.client_id, "keep.bin")
    assert row is not None and is_true(row["Verified"])
    assert (srv2.client_dir(ident.client_id) / "keep.bin").read_bytes() == keep
    # the name can be stored again
    upload_verified(srv2, ident, doc)
    assert doc_path(srv2, ident).read_bytes() == doc
    srv2.stop()


@pytest.mark.files_only("plants a stray file and compares inodes; on S3 an orphan goes only past the grace period (test_s3_backend)")
def test_startup_removes_a_file_no_row_names_and_touches_nothing_else(start_server):
    doc, stray = os.urandom(2500), os.urandom(700)
    srv = start_server()
    ident = register(srv)
    other = register(srv, key_index=9)
    upload_verified(srv, ident, doc)
    upload_verified(srv, other, doc)
    srv.stop()
    stray_path = srv.client_dir(ident.client_id) / "stray.bin"
    stray_path.write_bytes(stray)
    before = {p: (st.st_ino, st.st_mtime_ns, st.st_size)
              for p in (doc_path(srv, ident), doc_path(srv, other))
              for st in [p.stat()]}
    rows_before = [{k: r[k] for k in r.keys()}
                   for r in srv.query("SELECT * FROM files ORDER BY ID, FileName")]

    srv2 = start_server(data_dir=srv.data_dir)
    lines = reconcile_lines(srv2)
    assert any("stray.bin" in ln for ln in lines), \
        "no 'reconcile' line names stray.bin:\n%s" % srv2.log_tail()
    assert srv2.stored_files(ident.client_id) == [DOC], \
        "files/%s/ holds %s" % (ident.hex, srv2.stored_files(ident.client_id))
    assert srv2.stored_files(other.client_id) == [DOC]
    for p, (ino, mtime, size) in before.items():
        st = p.stat()
        assert (st.st_ino, st.st_mtime_ns, st.st_size) == (ino, mtime, size), "%s was touched" % p
        assert p.read_bytes() == doc
    assert [{k: r[k] for k in r.keys()}
            for r in srv2.query("SELECT * FROM files ORDER BY ID, FileName")] == rows_before
    srv2.stop()


@pytest.mark.files_only("reads the calls on the contents' directories")
def test_a_new_clients_directory_is_synced_into_files_before_its_first_2103(
        start_server, shim, tmp_path):
    """A client's first upload makes files/<id>/. Its file and the
    directory itself were synced, but not files/, which holds the new
    directory's entry: after a power cut a file system without an ordered
    journal may lose the entry, and with it a file whose 2103 said it was
    stored. files/ is synced after the directory is made, before the
    2103."""
    call_log = tmp_path / "calls.log"
    srv = start_server(env=bwd.fault_env(shim, log=call_log))
    ident = register(srv)
    out = replace_doc(srv, ident, os.urandom(2000), call_log)
    assert out.succeeded, out
    files = str((srv.data_dir / "files").resolve())
    mine = files + "/" + ident.hex
    calls = [(op, path) for op, path, _ in read_calls(call_log)]
    made = [i for i, (op, path) in enumerate(calls)
            if op.startswith("mkdir") and path == mine]
    assert made, "no mkdir of %s in the calls:\n%s" % (mine, calls[-40:])
    synced = [i for i, (op, path) in enumerate(calls) if op == "fsync" and path == files]
    assert any(i > made[0] for i in synced), \
        "files/ was not synced after %s was made:\n%s" % (mine, calls[made[0]:made[0] + 30])
    srv.stop()


# --------------------------------------------------------------------------
# Durability of the answers: a 2103 or a 2104 promises the row is on disk


@pytest.mark.sqlite_only("a slowed and failed fdatasync of defensive.db's WAL")
def test_a_2103_waits_for_the_journal_fsync_and_a_failed_one_is_2107(start_server, shim,
                                                                     tmp_path):
    """The database commits without syncing (WAL); a 2103 promises the
    upload survives a power cut, so it waits for the fsync of the journal
    that covers its row: while that fsync takes 1.5 s, no 2103 (the file
    itself is already on disk then), and when it fails, 2107. After a failed
    fsync nothing is acknowledged as durable until a restart: Linux may
    have dropped the pages the failed writeback left, and a later fsync's
    success does not cover them. A 1029 that swaps a replacement in is
    undone when its row cannot be made durable, so the client's 2107 and
    the file it finds agree."""
    arm = tmp_path / "arm"
    dd = tmp_path / "d"
    srv = start_server(data_dir=dd, env=bwd.fault_env(
        shim, arm=arm,
        fault="fdatasync:1:sleep=1500:defensive.db-wal,fdatasync:2:EIO:defensive.db-wal"))
    ident = register(srv)
    v1, v2 = os.urandom(3000), os.urandom(4000)
    with reconnected(srv, ident) as c:
        arm.write_text("go")
        t0 = time.monotonic()
        res = c.send_file(DOC, v1)  # fdatasync #1: slow
        waited = time.monotonic() - t0
        bw.expect(res.response, bw.FILE_RECEIVED, "send file")
        assert waited >= 1.4, "2103 after %.2f s, before the journal's fsync ended" % waited
        res = c.send_file("other.bin", v2)  # fdatasync #2: fails
        bw.expect(res.response, bw.ERROR, "send file whose row is not durable")
    assert "could not be made durable" in srv.log()
    with reconnected(srv, ident) as c:
        # fdatasync #3 succeeds, but does not cover what #2 may have lost
        bw.expect(c.crc_ok(DOC), bw.ERROR, "a 1029 after a failed fsync")
    assert "fdatasync #3" not in srv.log(), "the shim failed a third fsync: nothing was tested"
    srv.stop()
    arm2 = tmp_path / "arm2"
    srv = start_server(data_dir=dd, env=bwd.fault_env(
        shim, arm=arm2, fault="fdatasync:3:EIO:defensive.db-wal"))
    assert srv.file_row(ident.client_id, DOC) is not None
    assert other_path(srv, ident).exists() is False
    with reconnected(srv, ident) as c:
        arm2.write_text("go")
        bw.expect(c.crc_ok(DOC), bw.ACK, "crc ok")  # fdatasync #1
        res = c.send_file(DOC, v2)  # a replacement, pending its 1029 (#2)
        bw.expect(res.response, bw.FILE_RECEIVED, "replacement")
        bw.expect(c.crc_ok(DOC), bw.ERROR, "1029 whose swap is not durable")  # #3: fails
    # the swap was undone: v1 is current, v2 still waits for its 1029
    assert doc_path(srv, ident).read_bytes() == v1
    row = srv.file_row(ident.client_id, DOC)
    assert is_true(row["Verified"]) and row["PendingPath"], dict(row)
    srv.stop()
    srv2 = start_server(data_dir=dd)
    with reconnected(srv2, ident) as c:
        bw.expect(c.crc_ok(DOC), bw.ACK, "1029 again, after a restart")
    assert doc_path(srv2, ident).read_bytes() == v2
    srv2.stop()
    srv3 = start_server(data_dir=dd)
    assert doc_path(srv3, ident).read_bytes() == v2
    assert is_true(srv3.file_row(ident.client_id, DOC)["Verified"])


@pytest.mark.sqlite_only("a failed fdatasync of defensive.db's WAL")
@pytest.mark.parametrize("before", ["unverified", "pending"])
def test_a_1028_whose_row_is_not_durable_leaves_what_was_there(start_server, shim, tmp_path,
                                                               before):
    """A 2107 to a 1028 leaves no file and no row behind, and the file stored
    under that name untouched: when the journal's fsync that was to cover
    the new row fails, the upload is undone. Over an unverified v1, v1 is
    back in place with its row, and no copy of it is left aside; over a
    verified v1 whose replacement v2 waits for its 1029, v2 still waits
    (the row names it, its file is there), and after a restart its 1029
    puts v2 in place."""
    arm = tmp_path / "arm"
    dd = tmp_path / "d"
    srv = start_server(data_dir=dd, env=bwd.fault_env(
        shim, arm=arm, fault="fdatasync:1:EIO:defensive.db-wal"))
    ident = register(srv)
    v1, v2, v3 = os.urandom(3000), os.urandom(4000), os.urandom(5000)
    with reconnected(srv, ident) as c:
        bw.expect(c.send_file(DOC, v1).response, bw.FILE_RECEIVED, "v1")
        if before == "pending":
            bw.expect(c.crc_ok(DOC), bw.ACK, "1029 of v1")
            bw.expect(c.send_file(DOC, v2).response, bw.FILE_RECEIVED, "v2, pending")
        row0 = dict(srv.file_row(ident.client_id, DOC))
        tree0 = tree(dd)
        arm.write_text("go")
        res = c.send_file(DOC, v3)
        assert "bwfault: fdatasync #1 failed" in srv.log(), "the fault did not fire"
        bw.expect(res.response, bw.ERROR, "a 1028 whose row is not durable")
        # the request was read whole: the connection stays
        assert not c.is_closed_by_peer(0.5), "the connection was closed after the commit's 2107"
        assert dict(srv.file_row(ident.client_id, DOC)) == row0, "the row was not put back"
        assert tree(dd) == tree0, "files/ is not as it was before the failed 1028"
    assert doc_path(srv, ident).read_bytes() == v1
    assert orphans(srv) == []
    srv.stop()
    # after a failed fsync nothing is durable until a restart
    srv2 = start_server(data_dir=dd)
    assert restart_checks(srv2, ident) == []
    assert dict(srv2.file_row(ident.client_id, DOC)) == row0
    if before == "pending":
        with reconnected(srv2, ident) as c:
            bw.expect(c.crc_ok(DOC), bw.ACK, "1029 of v2")
    assert doc_path(srv2, ident).read_bytes() == (v2 if before == "pending" else v1)
