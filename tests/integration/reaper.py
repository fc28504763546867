"""The servers a test session starts (bulwarkd, PostgreSQL, Swift and its
memcached, Redis, HAProxy) die with it, however it ends.

A session that ends normally stops each one itself. One that is killed
(a CI timeout, ^C twice, SIGKILL) used to leave them running: they held
ports and disk, and broke the next run's unit tests through reused ports.
watch(pid) records a process (its start time too, so that a number given
to another process since is never touched) in a file a small watcher
reads; the watcher, in a session of its own, waits for the test process
to go, then kills what is recorded (each one's process group when it leads
one) and ends. end() (the session's normal end) lets the watcher go with
nothing to do. Only a test session turns this on (enable(), in conftest):
scripts/cluster starts the same servers to outlive it.

Run as a program it is the watcher: reaper.py PARENT_PID PARENT_START LIST_FILE.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time

_list = None  # this process's list file, once the watcher runs
_enabled = False  # only a test session's servers: scripts/cluster's outlive it


def _start_time(pid):
    """The process's start time in clock ticks since boot (None if gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            text = f.read()
    except OSError:
        return None
    # the fields after the command name (which may hold spaces and ')')
    return text[text.rindex(")") + 2:].split()[19]


def _ensure():
    global _list
    if _list is not None:
        return _list
    fd, path = tempfile.mkstemp(prefix="bulwark-reap.", dir="/tmp")
    os.close(fd)
    # this process's start time goes with its number: the watcher may
    # start after this process is gone (a kill soon after, a loaded machine)
    subprocess.Popen([sys.executable, os.path.abspath(__file__), str(os.getpid()),
                      _start_time(os.getpid()), path],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    _list = path
    return path


def enable():
    """From here on, watch() makes what it is given die with this process
    (the test session's conftest turns it on; the helpers are also what
    scripts/cluster starts, to outlive it)."""
    global _enabled
    _enabled = True


def watch(pid):
    """pid dies with this process, should this process die first (once
    enable() was called; else nothing)."""
    if not _enabled:
        return
    st = _start_time(pid)
    if st is None:
        return
    with open(_ensure(), "a") as f:
        f.write("%d %s\n" % (pid, st))


def end():
    """The session ends normally: the watcher goes without killing."""
    global _list
    if _list is not None:
        try:
            os.unlink(_list)
        except OSError:
            pass
        _list = None


def _reap(path):
    try:
        with open(path) as f:
            rows = [ln.split() for ln in f if ln.strip()]
    except OSError:
        return
    for pid_s, st in rows:
        pid = int(pid_s)
        if _start_time(pid) != st:
            continue  # gone, or its number is another process's now
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        os.unlink(path)
    except OSError:
        pass


def _watcher(parent, parent_st, path):
    while os.path.exists(path):
        if _start_time(parent) != parent_st:
            _reap(path)
            return
        time.sleep(0.5)  # a parent's death is noticed within this


if __name__ == "__main__":
    _watcher(int(sys.argv[1]), sys.argv[2], sys.argv[3])
