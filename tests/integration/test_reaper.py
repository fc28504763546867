"""A test process killed outright (a CI timeout, SIGKILL) takes the
servers it started with it; scripts/cluster's, started by the same
helpers without the session's reaper, outlive the script that started
them."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import bwd
import redisserver

HOLDER = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import reaper, redisserver
if sys.argv[2] == "reaped":
    reaper.enable()
r = redisserver.RedisServer().start()
print(r.proc.pid, r.dir, flush=True)
time.sleep(120)
"""


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("mode", ["reaped", "left"])
def test_a_killed_test_process_takes_its_servers_with_it(mode):
    if not redisserver.installed():
        pytest.skip("redis-server is not installed (scripts/deps test)")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(bwd.REPO / "tests" / "integration"),
                               mode], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              start_new_session=True)
    pid, where = None, None
    try:
        pid_s, where = holder.stdout.readline().decode().split()
        pid = int(pid_s)
        assert alive(pid)
        os.kill(holder.pid, signal.SIGKILL)  # no cleanup runs in it
        holder.wait(timeout=10)
        # the watcher looks every 0.5 s (a loaded machine may start it late)
        gone = bwd.wait_for(lambda: not alive(pid), 20 if mode == "reaped" else 2)
        if mode == "reaped":
            assert gone, "redis-server %d outlived the process that started it" % pid
        else:
            time.sleep(1)  # past the watcher's poll, had there been one
            assert alive(pid), "a server started without the reaper was killed"
    finally:
        if holder.poll() is None:
            holder.kill()
        if pid is not None and alive(pid):
            os.killpg(pid, signal.SIGKILL)
        if where is not None:
            shutil.rmtree(where, ignore_errors=True)
