"""Fixtures for the integration tests."""

import os

import pytest

import bwd
import bwmsg
import bwvault as bw
import pgserver
import reaper
from bwd import Daemon

# the servers this session starts die with it, even killed (reaper.py)
reaper.enable()


_require = bwd.require_file


# Modules whose tests touch no stored state (no bulwarkd at all, only the
# group chat, which keeps nothing, or only the daemon's options, its
# console's input, its log's form, its service manager's protocol and the
# package's files), or test a client's own behaviour (its server's storage
# is not what they look at): the pass on PostgreSQL + S3 would repeat them
# unchanged, so they run once, in the embedded pass.
NO_STORAGE = {"test_checksrc", "test_pyvault_selftest", "test_client_vs_pyserver",
              "test_manpages", "test_rooms", "test_rooms_hardening", "test_rooms_hostile",
              "test_chat_client", "test_config", "test_console_hardening", "test_packaging",
              "test_proxy", "test_cli", "test_readme", "test_reaper", "test_systemd",
              "test_log_events", "test_msg_client", "test_msg_client_hardening",
              "test_send_hardening", "test_tls_server", "test_tls_client",
              "test_probe_defects", "test_probe_client", "test_deviations"}
# Modules that run no C of ours that a sanitizer could watch (the source
# checks, the Python implementations' self-test, the reaper, the man
# pages' text): the sanitizer passes (BULWARK_TEST_PASS=sanitizer, set by
# scripts/check for ASan and ThreadSanitizer) skip them, and the tests
# marked plain_pass_only.
NO_C = {"test_checksrc", "test_pyvault_selftest", "test_reaper", "test_manpages"}
SANITIZER_PASS = os.environ.get("BULWARK_TEST_PASS") == "sanitizer"
# modules that start the servers they need themselves (the cluster's nodes
# share a PostgreSQL and an S3 store of the fixture's)
OWN_STORAGE = {"test_cluster", "test_cluster_script", "test_cluster_tls"}
# Modules that start a PostgreSQL of their own in every pass: the embedded
# pass already runs them on PostgreSQL (with the contents in local files),
# so the PostgreSQL + S3 pass runs only their tests marked contents_too
# (where the contents' store is part of what they look at)
OWN_POSTGRESQL = {"test_pg_backend"}


def pytest_sessionfinish(session, exitstatus):
    """The shared PostgreSQL goes while this process still has the time;
    then the watcher that would have killed what was left (reaper.py)."""
    pgserver.end_shared()
    reaper.end()


# last: after -m's deselection, so that the order below is the one run
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """On PostgreSQL (BULWARK_TEST_DB), the tests of defensive.db itself
    are skipped with their reason, and on S3 (BULWARK_TEST_BLOBS) those of
    the local files' own behaviour; on either, the modules that touch no
    stored state (NO_STORAGE); every other test runs as it is."""
    other = bwd.TEST_DB != "sqlite" or bwd.TEST_BLOBS != "file"
    for item in items:
        if SANITIZER_PASS and item.module.__name__ in NO_C:
            item.add_marker(pytest.mark.skip(
                reason="runs no C a sanitizer watches: runs in the plain pass"))
            continue
        if other and item.module.__name__ in NO_STORAGE:
            item.add_marker(pytest.mark.skip(
                reason="touches no stored state: runs in the embedded pass"))
            continue
        if other and item.module.__name__ in OWN_STORAGE:
            item.add_marker(pytest.mark.skip(
                reason="brings its own PostgreSQL and S3: runs in the embedded pass"))
            continue
        if (other and item.module.__name__ in OWN_POSTGRESQL
                and item.get_closest_marker("contents_too") is None):
            item.add_marker(pytest.mark.skip(
                reason="starts its own PostgreSQL: runs on it in the embedded pass"))
            continue
        for marker, on, what in (("sqlite_only", bwd.TEST_DB != "sqlite",
                                  "embedded database only: "),
                                 ("files_only", bwd.TEST_BLOBS != "file",
                                  "contents in local files only: "),
                                 ("stores_nothing", other,
                                  "touches no stored state: runs in the embedded pass: "),
                                 ("plain_pass_only", SANITIZER_PASS, "plain pass only: ")):
            mark = item.get_closest_marker(marker)
            if on and mark is not None:
                item.add_marker(pytest.mark.skip(
                    reason=what + (mark.args[0] if mark.args else "")))
    items[:] = longest_first(items)


def longest_first(items):
    """The tests marked long first, so that no worker of a parallel pass
    begins one last while the others have finished. pytest-xdist (3.1) gives
    each worker a chunk of consecutive tests to begin with (a quarter of its
    share), then more as it goes: each chunk begins with its share of the
    long ones. Everything else keeps its order."""
    longs = [it for it in items if it.get_closest_marker("long") is not None]
    rest = [it for it in items if it.get_closest_marker("long") is None]
    n = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    chunk = max(len(items) // n // 4, 2)
    out = []
    for w in range(n):
        mine = longs[w::n]
        take = max(chunk - len(mine), 0)
        out += mine + rest[:take]
        rest = rest[take:]
    return out + rest


@pytest.fixture
def start_server(tmp_path):
    """Factory: start_server(*extra_args, data_dir=None, log_path=None,
    wait=True, want=None, start_timeout=None, **options) -> a started
    bwd.Daemon: the one way the tests start bulwarkd. data_dir defaults to
    a fresh tmp_path/dataN (none with argv=, which brings its own command
    line; cwd= then, or tmp_path/runN), log_path to tmp_path/bulwarkd-N.log.
    options are Daemon's: env= (extra environment variables), console=True
    (the operator console on an ephemeral port), rooms=True (the group chat
    on one), prefix= (a command that execs bulwarkd, e.g. prlimit),
    argv=, binary=, cwd=, port=, log_file=, stdout=, stdin=. wait, want
    and start_timeout go to Daemon.start (wait=False: started, not waited
    for; see Daemon.wait_exit).

    Every daemon is killed on teardown; one that died on its own (not
    through .stop() or .wait_exit()) or whose log holds a sanitizer report
    fails the test."""
    _require(bwd.BULWARKD, "bulwarkd", "BULWARKD")
    servers = []

    def start(*extra_args, data_dir=None, log_path=None, wait=True, want=None,
              start_timeout=None, **options):
        n = len(servers)
        if options.get("argv") is None:
            data_dir = data_dir if data_dir is not None else tmp_path / ("data%d" % n)
        elif data_dir is None and options.get("cwd") is None:
            options["cwd"] = tmp_path / ("run%d" % n)
        srv = Daemon(data_dir, extra_args,
                     log_path=log_path or tmp_path / ("bulwarkd-%d.log" % n), **options)
        servers.append(srv)
        return srv.start(wait=wait, want=want, timeout=start_timeout)

    yield start
    problems = []
    for srv in servers:
        if srv.proc is not None and not srv.stopped:
            if srv.proc.poll() is not None:
                problems.append("bulwarkd exited on its own with %r\n%s"
                                % (srv.proc.poll(), srv.log_tail()))
            else:
                # Every test ends with a graceful shutdown, so each one also
                # checks that SIGTERM leaves exit 0 (and, under ASan, that
                # LeakSanitizer found nothing) whatever state it left.
                try:
                    srv.stop()
                except AssertionError as e:
                    problems.append("graceful stop at teardown failed: %s" % e)
        srv.kill()
        reports = srv.sanitizer_reports()
        if reports:
            problems.append("sanitizer reports in the bulwarkd log:\n" + "\n".join(reports[:20]))
    if problems:
        pytest.fail("\n\n".join(problems))


@pytest.fixture
def server(start_server):
    """A running bulwarkd with default options."""
    return start_server()


@pytest.fixture
def client_bin():
    _require(bwd.BULWARK, "bulwark", "BULWARK")
    return bwd.BULWARK


@pytest.fixture
def client_dir(tmp_path, client_bin):
    """Factory: a fresh working directory for `bulwark send`."""
    made = []

    def make(name=None):
        d = bwd.ClientDir(tmp_path / (name or "client%d" % len(made)))
        made.append(d)
        return d

    return make


@pytest.fixture
def pyserver():
    """Factory: pyserver(**knobs) -> started bw.PyServer; stopped on
    teardown, and any exception in its handler threads fails the test."""
    servers = []

    def start(**knobs):
        srv = bw.PyServer(**knobs).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()
    errors = [e for srv in servers for e in srv.errors]
    if errors:
        pytest.fail("PyServer handler errors: %r" % errors)


@pytest.fixture
def shim():
    """libbwfault.so from the build directory of $BULWARKD."""
    path = bwd.BULWARKD.parent / "libbwfault.so"
    bwd.require_file(path, "the fault shim (target bwfault)", executable=False)
    return path


@pytest.fixture
def pyserver_msg():
    """Factory: pyserver_msg(**knobs) -> a started bwmsg.PyMsgServer; stopped
    on teardown, and any exception in its threads fails the test."""
    servers = []

    def start(**knobs):
        srv = bwmsg.PyMsgServer(**knobs).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()
    errors = [e for srv in servers for e in srv.errors]
    if errors:
        pytest.fail("PyMsgServer handler errors: %r" % errors)
