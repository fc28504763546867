"""The vault benchmark: runs bulwarkd and `bulwark send` from the release
build on 127.0.0.1 and prints every figure next to its reference and target.
bench/run builds, makes the temp dir, starts this and cleans up after it.

It only reports: no timing ever fails the run. It exits 1 when a scenario
could not be measured (an upload failed, a stored file differs from its
source, a process did not start or did not stop cleanly), 130 when stopped.
"""

import argparse
import contextlib
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
import bwvault as bw  # noqa: E402  the independent Python implementation

MiB = 1 << 20
GiB = 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")
LISTEN_RE = re.compile(rb"vault listening on 127\.0\.0\.1:(\d+)")
BENCH_DIR = Path(__file__).resolve().parent
SCP_CIPHER = "aes128-gcm@openssh.com"


class Interrupted(BaseException):
    """A signal or the overall deadline: stop everything and clean up."""


class ScenarioError(Exception):
    """A scenario could not be measured."""


class Unavailable(Exception):
    """An optional reference (scp) cannot run on this machine."""


def say(fmt, *args):
    print("bench: " + (fmt % args if args else fmt), file=sys.stderr, flush=True)


def tail(path, n=15):
    try:
        lines = Path(path).read_bytes().decode("utf-8", "replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n    ".join(lines[-n:]) or "(empty log)"


# --------------------------------------------------------------------------
# Processes


class Procs:
    """Every process the benchmark starts. stop_all() ends those still
    running; their pids also go to a file so that bench/run can end them if
    this program itself is killed."""

    def __init__(self, pid_file):
        self.pid_file = pid_file
        self.live = []
        self.lock = threading.Lock()
        self.closed = False

    def spawn(self, argv, record=True, **kw):
        """Popen; record=False keeps a short, time-bounded run (a small-file
        session) out of the pid file."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        with self.lock:
            if self.closed:
                raise ScenarioError("stopping: not starting %s" % argv[0])
            p = subprocess.Popen([str(a) for a in argv], **kw)
            self.live.append(p)
            if record:
                with open(self.pid_file, "a") as f:
                    f.write("%d\n" % p.pid)
        return p

    def reaped(self, p, status):
        p.returncode = os.waitstatus_to_exitcode(status)
        with self.lock:
            if p in self.live:
                self.live.remove(p)

    def stop(self, p, sig=signal.SIGTERM, wait_s=10.0):
        """Signal p, wait up to wait_s, then SIGKILL. Returns its exit code
        (negative: the signal that ended it)."""
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(wait_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        with self.lock:
            if p in self.live:
                self.live.remove(p)
        return p.returncode

    def stop_all(self):
        """Ends every process still running; no new one starts after this."""
        with self.lock:
            self.closed = True
        for p in reversed(list(self.live)):
            try:
                self.stop(p, signal.SIGTERM, 5.0)
            except (OSError, subprocess.SubprocessError):
                pass


class Run:
    """One finished child: wall time, its own CPU time and peak RSS."""

    __slots__ = ("wall", "cpu", "maxrss_kib", "rc", "timed_out", "log")

    def __init__(self, wall, cpu, maxrss_kib, rc, timed_out, log):
        self.wall = wall
        self.cpu = cpu
        self.maxrss_kib = maxrss_kib
        self.rc = rc
        self.timed_out = timed_out
        self.log = log


# bench/maxrss, compiled by main(): reports a command's own peak RSS
MAXRSS_EXE = None


def timed(procs, argv, timeout_s, log_path, cwd=None, record=True):
    """Runs argv to completion (SIGKILL after timeout_s) and measures it with
    wait4(): wall time from spawn to exit, user+sys CPU; peak RSS through
    bench/maxrss (wait4's own figure would include this Python process's
    memory, folded in when the forked child execs)."""
    rss_file = None
    if MAXRSS_EXE is not None:
        rss_file = Path(str(log_path) + ".rss")
        argv = [MAXRSS_EXE, rss_file] + list(argv)
    lock = threading.Lock()
    state = {"reaped": False, "expired": False}
    with open(log_path, "wb") as log:
        t0 = time.monotonic()
        p = procs.spawn(argv, record, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)

    def expire():
        with lock:
            if not state["reaped"]:
                state["expired"] = True
                try:
                    os.kill(p.pid, signal.SIGKILL)  # not reaped: still ours
                except ProcessLookupError:
                    pass

    timer = threading.Timer(timeout_s, expire)
    timer.daemon = True
    timer.start()
    try:
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        with lock:
            state["reaped"] = True
    finally:
        timer.cancel()
    procs.reaped(p, status)
    maxrss = ru.ru_maxrss
    if rss_file is not None:
        try:
            maxrss = int(rss_file.read_text())
        except (OSError, ValueError):
            pass
    return Run(wall, ru.ru_utime + ru.ru_stime, maxrss, p.returncode,
               state["expired"], log_path)


def run_quiet(argv, timeout_s, what, **kw):
    """A short helper command; its output, or ScenarioError."""
    try:
        r = subprocess.run([str(a) for a in argv], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=timeout_s, **kw)
    except subprocess.TimeoutExpired:
        raise ScenarioError("%s did not finish within %g s" % (what, timeout_s))
    except OSError as e:
        raise ScenarioError("%s: %s" % (what, e))
    if r.returncode != 0:
        raise ScenarioError("%s exited %d: %s" % (
            what, r.returncode, (r.stderr or r.stdout).decode("utf-8", "replace").strip()[-800:]))
    return r.stdout.decode("utf-8", "replace")


def same_file(src, stored):
    """cmp: the stored file must be byte-identical to the source."""
    stored = Path(stored)
    if not stored.is_file():
        raise ScenarioError("%s was not stored (expected %s)" % (src, stored))
    if stored.stat().st_size != Path(src).stat().st_size:
        raise ScenarioError("stored %s has %d bytes, source %s has %d" % (
            stored, stored.stat().st_size, src, Path(src).stat().st_size))
    try:
        r = subprocess.run(["cmp", "-s", str(src), str(stored)], stdin=subprocess.DEVNULL,
                           timeout=300)
    except subprocess.TimeoutExpired:
        raise ScenarioError("cmp of %s took over 300 s" % stored)
    if r.returncode != 0:
        raise ScenarioError("stored %s differs from source %s" % (stored, src))


def make_random_file(path, size):
    """size random bytes, flushed to disk so that writeback does not run
    under the measurements."""
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 4 * MiB)
            f.write(os.urandom(n))
            left -= n
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_line(fd, timeout_s):
    """One line from a pipe, waiting at most timeout_s; '' on EOF or time."""
    deadline = time.monotonic() + timeout_s
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode("utf-8", "replace").strip()


# --------------------------------------------------------------------------
# The vault and its clients


def proc_status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ScenarioError("no %s in /proc/%d/status" % (field, pid))


class Vault:
    """bulwarkd on 127.0.0.1, an ephemeral port, its own data directory."""

    def __init__(self, ctx, name, extra_args, env=None):
        self.ctx = ctx
        self.dir = ctx.tmp / name
        self.data = self.dir / "data"
        self.log_path = self.dir / "bulwarkd.log"
        self.extra_args = list(extra_args)
        self.env = None if env is None else dict(os.environ, **env)
        self.proc = None
        self.port = None
        self._log = None

    def __enter__(self):
        self.data.mkdir(parents=True)
        argv = [self.ctx.bulwarkd, "--data-dir", self.data, "--listen", "127.0.0.1",
                "--port", "0", "--no-console", "--no-rooms", "--shutdown-grace", "2"] + self.extra_args
        self._log = open(self.log_path, "wb")
        self.proc = self.ctx.procs.spawn(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                         cwd=self.dir, env=self.env)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = LISTEN_RE.search(self.log_path.read_bytes())
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self._shutdown()
        raise ScenarioError("bulwarkd did not report `vault listening on` within 10 s "
                            "(exit %r):\n    %s" % (self.proc.returncode, tail(self.log_path)))

    def __exit__(self, exc_type, exc, tb):
        rc = self._shutdown()
        if exc_type is None and rc != 0:
            raise ScenarioError("bulwarkd exited %r on SIGTERM:\n    %s"
                                % (rc, tail(self.log_path)))
        return False

    def _shutdown(self):
        if self.proc is not None and self.proc.returncode is None and self.proc.poll() is not None:
            say("bulwarkd exited on its own with %r", self.proc.returncode)
        rc = self.ctx.procs.stop(self.proc, signal.SIGTERM, 15.0) if self.proc else None
        if self._log is not None:
            self._log.close()
        return rc

    def alive(self):
        if self.proc.poll() is None:
            return
        log = self.log_path.read_bytes()
        m = re.search(rb"signal (\d+): shutting down", log)
        if m:
            raise ScenarioError("bulwarkd was stopped by signal %s, which the benchmark did not "
                                "send (another process on this machine?); exit %r"
                                % (m.group(1).decode(), self.proc.returncode))
        raise ScenarioError("bulwarkd died (exit %r):\n    %s"
                            % (self.proc.returncode, tail(self.log_path)))

    def cpu_s(self):
        """utime + stime of every thread so far."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def thread_cpu_s(self):
        """{tid: (utime, stime)} of each thread now, in seconds."""
        out = {}
        task = "/proc/%d/task" % self.proc.pid
        for tid in os.listdir(task):
            try:
                with open("%s/%s/stat" % (task, tid)) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except FileNotFoundError:  # a thread that ended meanwhile
                continue
            out[int(tid)] = (int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK)
        return out

    def rss_kib(self):
        return proc_status_kib(self.proc.pid, "VmRSS")

    def hwm_kib(self):
        return proc_status_kib(self.proc.pid, "VmHWM")

    def reset_hwm(self):
        """Resets VmHWM to the current RSS (Linux >= 4.0); False if not allowed."""
        try:
            with open("/proc/%d/clear_refs" % self.proc.pid, "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))


class Client:
    """A working directory for `bulwark send` with its own identity."""

    def __init__(self, ctx, vault, name, file_path):
        self.ctx = ctx
        self.vault = vault
        self.name = name
        self.dir = vault.dir / "clients" / name
        self.dir.mkdir(parents=True)
        self.file = None
        self.set_file(file_path)

    def set_file(self, path):
        self.file = Path(path)
        (self.dir / "transfer.info").write_text(
            "127.0.0.1:%d\n%s\n%s\n" % (self.vault.port, self.name, self.file))

    def send(self, timeout_s=60.0, what="upload", record=True):
        """One `bulwark send` session; ScenarioError unless it exits 0."""
        r = timed(self.ctx.procs, [self.ctx.bulwark, "send", "-C", self.dir, "--quiet"],
                  timeout_s, self.dir / "send.log", cwd=self.dir, record=record)
        if r.rc != 0:
            self.vault.alive()
            raise ScenarioError("%s of %s by %s: bulwark send %s after %.2f s:\n    %s" % (
                what, self.file.name, self.name,
                "killed after the %g s limit" % timeout_s if r.timed_out else "exited %d" % r.rc,
                r.wall, tail(r.log)))
        return r

    def client_id_hex(self):
        lines = (self.dir / "me.info").read_text().splitlines()
        if len(lines) < 2:
            raise ScenarioError("%s/me.info has no client id line" % self.dir)
        return lines[1].strip().lower()

    def verify(self):
        """The stored copy of the current file equals the source."""
        same_file(self.file, self.vault.data / "files" / self.client_id_hex() / self.file.name)


# --------------------------------------------------------------------------
# The scp reference


class Sshd:
    """A private sshd on 127.0.0.1 (own host key, own authorized key, a temp
    dir as destination) and scp with aes128-gcm into it."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.dir = ctx.tmp / "sshd"
        self.dest = self.dir / "dest"
        self.proc = None
        self.port = None
        self.made_run_dir = False
        self.tools = {}

    def start(self):
        if os.geteuid() != 0:
            raise Unavailable("sshd must start as root and this is uid %d" % os.geteuid())
        for tool, where in (("sshd", "/usr/sbin/sshd"), ("scp", "scp"), ("ssh-keygen", "ssh-keygen")):
            path = where if os.access(where, os.X_OK) else shutil.which(where)
            if not path:
                raise Unavailable("%s is not installed" % tool)
            self.tools[tool] = path
        self.dest.mkdir(parents=True)
        for key in ("host_key", "client_key"):
            try:
                run_quiet([self.tools["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-C",
                           "bulwark-bench", "-f", self.dir / key], 30, "ssh-keygen")
            except ScenarioError as e:
                raise Unavailable(str(e))
        (self.dir / "authorized_keys").write_bytes((self.dir / "client_key.pub").read_bytes())
        run_dir = Path("/run/sshd")  # sshd's privilege separation directory
        if not run_dir.exists():
            run_dir.mkdir(mode=0o755)
            self.made_run_dir = True
            (self.ctx.tmp / "made-run-sshd").touch()
        log_path = self.dir / "sshd.log"
        for _attempt in range(3):
            self.port = free_port()
            cfg = self.dir / "sshd_config"
            cfg.write_text("\n".join([
                "Port %d" % self.port,
                "ListenAddress 127.0.0.1",
                "HostKey %s" % (self.dir / "host_key"),
                "PidFile none",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "AuthorizedKeysFile %s" % (self.dir / "authorized_keys"),
                "Subsystem sftp internal-sftp",
                "LogLevel INFO", ""]))
            with open(log_path, "wb") as log:
                self.proc = self.ctx.procs.spawn([self.tools["sshd"], "-D", "-f", cfg, "-e"],
                                                 stdout=log, stderr=subprocess.STDOUT)
            ready = b"Server listening on 127.0.0.1 port %d" % self.port
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                if ready in log_path.read_bytes():
                    break
                time.sleep(0.05)
            if self.proc.poll() is None and ready in log_path.read_bytes():
                break
            self.ctx.procs.stop(self.proc, signal.SIGTERM, 5.0)
            self.proc = None
        if self.proc is None:
            raise Unavailable("sshd did not start:\n    %s" % tail(log_path))
        probe = self.dir / "probe.bin"
        probe.write_bytes(os.urandom(4096))
        try:
            self.copy(probe, 30.0)
        except ScenarioError as e:
            raise Unavailable("scp into the private sshd failed: %s" % e)
        return self

    def stop(self):
        if self.proc is not None:
            self.ctx.procs.stop(self.proc, signal.SIGTERM, 5.0)
            self.proc = None
        if self.made_run_dir:
            try:
                os.rmdir("/run/sshd")
            except OSError:
                pass
            self.made_run_dir = False

    def copy(self, src, timeout_s):
        """scp src into the destination dir; then fsync the copy (timed
        separately) and compare it. Returns (scp wall, fsync wall)."""
        dst = self.dest / src.name
        if dst.exists():
            dst.unlink()
        settle()
        argv = [self.tools["scp"], "-q", "-F", "/dev/null", "-c", SCP_CIPHER,
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
                "-i", self.dir / "client_key", "-P", str(self.port),
                src, "%s@127.0.0.1:%s" % (self.ctx.user, dst)]
        r = timed(self.ctx.procs, argv, timeout_s, self.dir / "scp.log")
        if r.rc != 0:
            raise ScenarioError("scp %s %s after %.2f s:\n    %s" % (
                src.name, "killed at the time limit" if r.timed_out else "exited %d" % r.rc,
                r.wall, tail(r.log)))
        t0 = time.monotonic()
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_s = time.monotonic() - t0
        same_file(src, dst)
        return r.wall, fsync_s


# --------------------------------------------------------------------------
# Scenarios


def make_files(ctx):
    """The random sources, on the same disk as the data dirs. Room is needed
    for each large file three or four times over: the source, the stored
    copy (and its replacement while it is written), the scp copy."""
    need = (4 * ctx.size_mib + 3 * ctx.medium_mib + 64) * MiB
    free = shutil.disk_usage(ctx.tmp).free
    if free < need:
        raise ScenarioError("%s has %d MiB free; this run needs about %d MiB"
                            % (ctx.tmp, free // MiB, need // MiB))
    src = ctx.tmp / "src"
    src.mkdir()
    say("making random files: %d MiB and %d MiB in %s", ctx.size_mib, ctx.medium_mib, src)
    medium = src / ("random-%dm.bin" % ctx.medium_mib)
    if ctx.medium_mib == ctx.size_mib:
        medium = src / "random-medium.bin"
    return {
        "big": make_random_file(src / ("random-%dm.bin" % ctx.size_mib), ctx.size_mib * MiB),
        "medium": make_random_file(medium, ctx.medium_mib * MiB),
        "tiny": make_random_file(src / "register.bin", 4096),
        "probe": make_random_file(src / "probe-1m.bin", MiB),
    }


def upload_timeout(size):
    return 60.0 + size / (10 * MiB)


def scenario_aes(ctx, res):
    """openssl speed -evp aes-128-cbc, 16384-byte blocks, one core."""
    out = run_quiet(["openssl", "speed", "-evp", "aes-128-cbc", "-bytes", "16384",
                     "-seconds", str(ctx.aes_seconds), "-mr"],
                    ctx.aes_seconds * 2 + 60, "openssl speed")
    m = re.search(r"^\+F:\d+:[^:]+:([0-9.]+)", out, re.M)
    if not m:
        raise ScenarioError("cannot read the +F line of openssl speed -mr:\n%s" % out[-500:])
    res["aes_kBps"] = float(m.group(1)) / 1000.0
    say("AES-128-CBC (openssl speed, 16384-byte blocks): %.0f kB/s = %.3f s per GiB",
        res["aes_kBps"], GiB / (res["aes_kBps"] * 1000.0))


def direct_write(ctx, src, limit):
    """The disk's half of the floor for src: the file written with O_DIRECT
    in 1 MiB blocks and fsync'd (dd), as the server writes an upload. Run
    right before each timed upload, both after settle(): this disk's speed
    moves by a third from one minute to the next, so a floor measured
    apart from the uploads says little about them."""
    dst = ctx.tmp / "direct-write.bin"
    t0 = time.monotonic()
    run_quiet(["dd", "if=%s" % src, "of=%s" % dst, "bs=1M", "oflag=direct",
               "conv=fsync", "status=none"], limit, "dd oflag=direct")
    wall = time.monotonic() - t0
    dst.unlink()
    return wall


def scenario_crc(ctx, res):
    exe = ctx.tmp / "crc_speed"
    run_quiet(["cc", "-std=c17", "-O3", "-D_GNU_SOURCE", "-I", ctx.repo / "include",
               "-I", ctx.repo / "src", ctx.repo / "bench" / "crc_speed.c",
               ctx.repo / "src" / "core" / "crc.c",
               ctx.repo / "src" / "core" / "crc_table.c", "-o", exe], 120, "compiling bench/crc_speed.c")
    out = run_quiet([exe], 120, "crc_speed")
    res["crc_text"] = out.rstrip()
    for line in out.splitlines():
        m = re.match(r"(\S+)\s+([0-9.]+) GB/s", line)
        if m:
            res["crc_" + m.group(1)] = float(m.group(2))


def settle():
    """Start each timed operation from a quiet system: flush what earlier
    steps left dirty (an scp copy, a replaced file still being freed) so
    that no run pays for the one before it."""
    os.sync()
    time.sleep(0.3)


def measure_uploads(ctx, vault, client, src, sshd):
    """A warm-up reconnect upload, then ctx.runs measured ones, each checked
    with cmp and each after an O_DIRECT write of the same file (its floor);
    the scp copies are interleaved with them."""
    size = src.stat().st_size
    limit = upload_timeout(size)
    client.set_file(src)
    say("%s upload: warm-up", src.name)
    client.send(limit, "warm-up upload")
    client.verify()
    if sshd is not None:
        sshd.copy(src, limit)
    runs = []
    for i in range(ctx.runs):
        settle()
        direct = direct_write(ctx, src, limit)
        settle()
        hwm_reset = vault.reset_hwm()
        cpu0 = vault.cpu_s()
        r = client.send(limit)
        server_cpu = vault.cpu_s() - cpu0
        hwm = vault.hwm_kib()
        client.verify()
        run = {"wall": r.wall, "direct": direct, "client_cpu": r.cpu, "server_cpu": server_cpu,
               "client_rss_kib": r.maxrss_kib, "server_hwm_kib": hwm,
               "hwm_reset": hwm_reset}
        extra = ""
        if sshd is not None:
            run["scp"], run["scp_fsync"] = sshd.copy(src, limit)
            extra = "; scp %.3f s (+ fsync %.3f s)" % (run["scp"], run["scp_fsync"])
        runs.append(run)
        say("%s upload %d/%d: %.3f s (O_DIRECT write just before: %.3f s), CPU client "
            "%.2f s + server %.2f s, peak RSS client %.1f MiB, server %.1f MiB%s", src.name,
            i + 1, ctx.runs, r.wall, direct, r.cpu, server_cpu, r.maxrss_kib / 1024,
            hwm / 1024, extra)
    return runs


def scenario_upload(ctx, res):
    sshd = Sshd(ctx) if ctx.scp != "off" else None
    try:
        if sshd is not None:
            try:
                sshd.start()
                say("scp reference: private sshd on 127.0.0.1:%d", sshd.port)
            except Unavailable as e:
                sshd.stop()
                sshd = None
                if ctx.scp == "required":
                    raise ScenarioError("scp reference: %s" % e)
                res["scp_skipped"] = str(e)
                say("scp reference skipped: %s", e)
        with Vault(ctx, "upload", ["--max-conns", "64", "--timeout", "120"]) as v:
            c = Client(ctx, v, "bench-upload", ctx.files["tiny"])
            c.send(30, "registration")
            c.verify()
            res["big"] = measure_uploads(ctx, v, c, ctx.files["big"], sshd)
            res["medium"] = measure_uploads(ctx, v, c, ctx.files["medium"], None)
            res["server_hwm_start_kib"] = v.hwm_kib()
            v.alive()
    finally:
        if sshd is not None:
            sshd.stop()


# --------------------------------------------------------------------------
# The upload's two halves, each alone


def file_cksum(path):
    out = run_quiet(["cksum", path], 120, "cksum")
    return int(out.split()[0])


class SinkVault:
    """A vault that reads each body and drops it, answering the CRC it was
    told (bwvault.PyServer's sink): what Client needs of a vault."""

    def __init__(self, ctx, src):
        self.dir = ctx.tmp / "sink"
        self.dir.mkdir()
        self.srv = bw.PyServer(timeout=120.0, sink=(src.stat().st_size, file_cksum(src)))
        self.port = None

    def __enter__(self):
        self.srv.start()
        self.port = self.srv.port
        return self

    def __exit__(self, exc_type, exc, tb):
        self.srv.stop()

    def alive(self):
        if self.srv.errors:
            raise ScenarioError("the sink failed: %r" % self.srv.errors[:1])


def client_alone(ctx, src):
    """`bulwark send` into the sink: the client's half of an upload, with a
    server that costs no more than its reads on the other core."""
    limit = upload_timeout(src.stat().st_size)
    runs = []
    with SinkVault(ctx, src) as sink:
        c = Client(ctx, sink, "bench-alone", src)
        c.send(limit, "registration and warm-up into the sink")
        for i in range(ctx.runs):
            settle()
            r = c.send(limit, "upload into the sink")
            sink.alive()
            runs.append({"wall": r.wall, "client_cpu": r.cpu})
            say("%s into a sink %d/%d: %.3f s, CPU client %.2f s", src.name, i + 1, ctx.runs,
                r.wall, r.cpu)
    return runs


def encrypt_file(key, src, dst):
    """src as the client would send it under key (AES-128-CBC, zero IV,
    PKCS#7), written to dst."""
    def chunks():
        with open(src, "rb") as f:
            while True:
                b = f.read(4 * MiB)
                if not b:
                    return
                yield b
    with open(dst, "wb") as out:
        for block in bw.encrypt_stream(key, chunks()):
            out.write(block)


def server_alone(ctx, src):
    """bulwarkd fed by a client that does nothing but sendfile() a body
    encrypted before the clock starts: the server's half of an upload
    (receive, decryption, CRC, the disk), each run after its own O_DIRECT
    floor. Timed from the 1028's header to the 2103."""
    size = src.stat().st_size
    limit = upload_timeout(size)
    crc = file_cksum(src)
    shm = Path("/dev/shm")
    ct = (shm if shm.is_dir() and os.access(shm, os.W_OK) else ctx.tmp) / (
        "bulwark-bench-%d.body" % os.getpid())
    runs = []
    with Vault(ctx, "alone", ["--max-conns", "64", "--timeout", "120"]) as v:
        c = bw.VaultClient("127.0.0.1", v.port, timeout=limit)
        try:
            c.connect()
            bw.expect(c.register("bench-server-alone"), bw.REGISTERED, "register")
            bw.expect(c.send_pubkey(), bw.KEY_STORED, "public key")
            for i in range(ctx.runs + 1):  # the first is a warm-up
                c.close()
                c.connect()
                bw.expect(c.reconnect(), bw.RECONNECTED, "reconnect")
                encrypt_file(c.aes_key, src, ct)
                csize = ct.stat().st_size
                settle()
                direct = direct_write(ctx, src, limit)
                settle()
                t0 = time.monotonic()
                c.send_raw(bw.pack_request_header(c.client_id, bw.SEND_FILE,
                                                  bw.FILE_PREFIX_SIZE + csize)
                           + bw.pack_file_prefix(csize, src.name))
                c.sock.settimeout(None)  # sendfile() wants a blocking socket
                with open(ct, "rb") as f:
                    off = 0
                    while off < csize:
                        off += os.sendfile(c.sock.fileno(), f.fileno(), off, csize - off)
                c.sock.settimeout(limit)
                resp = c.recv_response()
                wall = time.monotonic() - t0
                bw.expect(resp, bw.FILE_RECEIVED, "the body sent with sendfile")
                got = bw.parse_file_received(resp.payload)[3]
                if got != crc:
                    raise ScenarioError("server alone: 2103 carries CRC %d, the file's is %d"
                                        % (got, crc))
                bw.expect(c.crc_ok(src.name), bw.ACK, "1029")
                same_file(src, v.data / "files" / c.client_id.hex() / src.name)
                if i == 0:
                    continue
                runs.append({"wall": wall, "direct": direct})
                say("%s from sendfile %d/%d: %.3f s (O_DIRECT write just before: %.3f s)",
                    src.name, i, ctx.runs, wall, direct)
        except (bw.ProtocolError, OSError) as e:
            raise ScenarioError("server alone: %s" % e)
        finally:
            c.close()
            with contextlib.suppress(FileNotFoundError):
                ct.unlink()
        v.alive()
    return runs


def scenario_halves(ctx, res):
    res["client_alone"] = client_alone(ctx, ctx.files["big"])
    res["server_alone"] = server_alone(ctx, ctx.files["big"])


def scenario_small(ctx, res):
    n = ctx.small_clients
    with Vault(ctx, "small", ["--max-conns", "1024"]) as v:
        src = v.dir / "src"
        src.mkdir()
        clients = [Client(ctx, v, "small-%02d" % i,
                          make_random_file(src / ("small-%02d.bin" % i), 4096))
                   for i in range(n)]
        say("small files: registering %d clients", n)
        run_threads([lambda c=c: c.send(30, "registration", False) for c in clients], 90)
        for c in clients:
            c.verify()
        res["exec"] = exec_reference(ctx, v.dir)
        say("small files: %d clients in parallel for %g s", n, ctx.small_seconds)
        counts = [0] * n
        walls = []
        client_cpu = [0.0]
        lock = threading.Lock()
        cpu0 = v.cpu_s()
        t0 = time.monotonic()
        stop_at = t0 + ctx.small_seconds
        ends = []

        def loop(c, i):
            for _ in range(1000000):
                if time.monotonic() >= stop_at:
                    break
                r = c.send(30, "session", False)
                with lock:
                    counts[i] += 1
                    walls.append(r.wall)
                    client_cpu[0] += r.cpu
            with lock:
                ends.append(time.monotonic())

        run_threads([lambda c=c, i=i: loop(c, i) for i, c in enumerate(clients)],
                    ctx.small_seconds + 60)
        elapsed = max(ends) - t0
        server_cpu = v.cpu_s() - cpu0
        for c in clients:
            c.verify()
        total = sum(counts)
        if total == 0:
            raise ScenarioError("no session completed")
        walls.sort()
        res["small"] = {"sessions": total, "elapsed": elapsed, "rate": total / elapsed,
                        "median": statistics.median(walls),
                        "p95": walls[min(len(walls) - 1, int(len(walls) * 0.95))],
                        "cpu_per": (client_cpu[0] + server_cpu) / total,
                        "server_cpu_per": server_cpu / total,
                        "min_per_client": min(counts)}
        say("small files: %d sessions in %.2f s = %.0f/s", total, elapsed, total / elapsed)
        v.alive()


def scenario_sessions(ctx, res):
    """Full 4 KiB sessions from a few long-lived processes (bench/sessionload.c):
    the server, not a client process per file, is what is measured. A
    warm-up run, then three measured ones (one window varies by 10% from
    run to run on this file system); each field is the median of the
    three. The server's CPU from /proc.

    Beside it, a second server with libbwnosync.so preloaded (every fsync,
    fdatasync and syncfs a no-op): a reference for what a session costs
    when durability costs nothing, so that the target can be set beside
    what this machine's TCP, file system and database cost without it. It
    is a measurement, never a mode. The two servers' windows alternate, so
    that both see the machine as it is at the time (its speed moves by a
    fifth from one minute to the next)."""
    exe = ctx.bin_dir / "sessionload"
    if not exe.exists():
        raise ScenarioError("%s is missing (built with the daemon: target sessionload)" % exe)
    shim = ctx.bin_dir / "libbwnosync.so"
    args = ["--max-conns", "4096"]
    with contextlib.ExitStack() as stack:
        v = stack.enter_context(Vault(ctx, "sessions", args))
        servers = [(v, "")]
        if shim.exists():
            nv = stack.enter_context(Vault(ctx, "sessions-nosync", args,
                                           env={"LD_PRELOAD": str(shim)}))
            servers.append((nv, "no sync, "))
        else:
            res["load_nosync_skipped"] = "%s is missing (target bwnosync)" % shim
        outs = session_windows(ctx, exe, servers)
        for sv, _ in servers:
            sv.alive()
    res["load"] = outs[0]
    if len(outs) > 1:
        m = re.search(rb"bwnosync: (\d+) syncs skipped", nv.log_path.read_bytes())
        if m is None or int(m.group(1)) == 0:
            raise ScenarioError("the no-sync reference server skipped no sync (preload not "
                                "in effect?):\n    %s" % tail(nv.log_path))
        outs[1]["syncs_skipped"] = int(m.group(1))
        # each window against the reference's window right after it
        outs[1]["paired_ratio"] = statistics.median(
            a / b for a, b in zip(outs[0]["cpu_runs"], outs[1]["cpu_runs"]) if b > 0)
        res["load_nosync"] = outs[1]


def session_windows(ctx, exe, servers):
    """sessionload against each (vault, label) in turn: a warm-up each, then
    three measured windows each, alternating; per server, each field the
    median of its three, with the server's split."""
    procs, conns = ctx.load_procs, ctx.load_conns
    secs = max(1, int(ctx.small_seconds))
    runs = [[] for _ in servers]
    for what, t in [("warm-up", 1)] + [("measured %d" % (i + 1), secs) for i in range(3)]:
        for k, (v, label) in enumerate(servers):
            threads0 = v.thread_cpu_s()
            r = subprocess.run([str(exe), "--port", str(v.port), "--procs", str(procs),
                                "--conns", str(conns), "--seconds", str(t),
                                "--server-pid", str(v.proc.pid), "--tag", what[0] + what[-1]],
                               capture_output=True, text=True, timeout=t + 120)
            if r.returncode != 0:
                raise ScenarioError("sessionload (%s%s) exited %d: %s"
                                    % (label, what, r.returncode, r.stderr.strip()[-400:]))
            words = r.stdout.split()
            got = {words[i]: float(words[i + 1]) for i in range(0, len(words) - 1, 2)}
            got.update(thread_split(v.proc.pid, threads0, v.thread_cpu_s(), got["sessions"]))
            say("sessions (%s%s): %s", label, what, r.stdout.strip())
            if what != "warm-up":
                runs[k].append(got)
    outs = []
    for rs in runs:
        out = {k: statistics.median(g[k] for g in rs) for k in rs[0]}
        out["sessions"] = sum(g["sessions"] for g in rs)
        out["errors"] = sum(g["errors"] for g in rs)
        out["cpu_runs"] = [g["server_cpu_ms_per_session"] for g in rs]
        out["procs"], out["conns"] = procs, conns
        outs.append(out)
    return outs


def thread_split(pid, before, after, sessions):
    """Where a session's server CPU went, in ms per session: the loop
    thread's user and kernel time, and the workers' (every other thread:
    the disk's writes and syncs) together."""
    out = {"loop_user_ms": 0.0, "loop_sys_ms": 0.0, "workers_ms": 0.0}
    if sessions <= 0:
        return out
    for tid, (u1, s1) in after.items():
        u0, s0 = before.get(tid, (0.0, 0.0))
        if tid == pid:
            out["loop_user_ms"] = (u1 - u0) * 1e3 / sessions
            out["loop_sys_ms"] = (s1 - s0) * 1e3 / sessions
        else:
            out["workers_ms"] += ((u1 - u0) + (s1 - s0)) * 1e3 / sessions
    return out


def exec_reference(ctx, where):
    """What starting the client alone costs: `bulwark --version`, 20 times
    one after another; (median wall, median CPU)."""
    walls, cpus = [], []
    for _ in range(20):
        r = timed(ctx.procs, [ctx.bulwark, "--version"], 10, where / "version.log", record=False)
        if r.rc != 0:
            raise ScenarioError("bulwark --version exited %d: %s" % (r.rc, tail(r.log)))
        walls.append(r.wall)
        cpus.append(r.cpu)
    return statistics.median(walls), statistics.median(cpus)


def run_threads(fns, limit_s):
    """Runs each fn in its own thread; re-raises the first failure."""
    errors = []

    def wrap(fn):
        try:
            fn()
        except Exception as e:  # collected, re-raised in the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(fn,), daemon=True) for fn in fns]
    for t in threads:
        t.start()
    deadline = time.monotonic() + limit_s
    for t in threads:
        while t.is_alive() and time.monotonic() < deadline:
            t.join(0.2)
    if any(t.is_alive() for t in threads):
        raise ScenarioError("%d threads still running after %g s"
                            % (sum(t.is_alive() for t in threads), limit_s))
    if errors:
        e = errors[0]
        raise e if isinstance(e, ScenarioError) else ScenarioError(repr(e))


def scenario_idle(ctx, res):
    n = ctx.idle
    k = max(1, min(3, ctx.runs))
    # every idle connection comes from 127.0.0.1: no per-address share
    with Vault(ctx, "idle", ["--max-conns", "16000", "--max-conns-per-addr", "16000",
                             "--timeout", "120", "--request-timeout", "120"]) as v:
        c = Client(ctx, v, "bench-idle", ctx.files["probe"])
        c.send(30, "registration")
        c.send(30, "warm-up upload")
        base = [c.send(30).wall for _ in range(k)]
        c.verify()
        rss0, fds0 = v.rss_kib(), v.fd_count()
        say("idle: opening %d connections", n)
        t0 = time.monotonic()
        holder = ctx.procs.spawn([sys.executable, BENCH_DIR / "idle_conns.py", "--port", v.port,
                                  "--count", n, "--hold-seconds", "150", "--tag", ctx.tmp],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            line = read_line(holder.stdout.fileno(), 90)
            if line != "open %d" % n:
                raise ScenarioError("the idle-connection holder said %r" % line)
            deadline = time.monotonic() + 30
            while v.fd_count() < fds0 + n and time.monotonic() < deadline:
                time.sleep(0.05)
            held = v.fd_count() - fds0
            if held < n:
                raise ScenarioError("bulwarkd holds %d of the %d idle connections" % (held, n))
            open_s = time.monotonic() - t0
            rss1 = v.rss_kib()
            say("idle: %d connections open in %.2f s; RSS %d -> %d KiB", n, open_s, rss0, rss1)
            loaded = [c.send(60, "upload with idle connections").wall for _ in range(k)]
            c.verify()
            still = v.fd_count() - fds0
            holder.stdin.close()
            peer_closed = read_line(holder.stdout.fileno(), 30)
            try:
                holder.wait(20)
            except subprocess.TimeoutExpired:
                pass
            rc = ctx.procs.stop(holder, signal.SIGTERM, 5.0)
            if rc != 0:
                raise ScenarioError("the idle-connection holder exited %r" % rc)
        finally:
            if holder.returncode is None:
                ctx.procs.stop(holder, signal.SIGTERM, 5.0)
            holder.stdout.close()
        m = re.match(r"closed-by-peer (\d+)", peer_closed)
        res["idle"] = {"n": n, "base": statistics.median(base), "loaded": statistics.median(loaded),
                       "per_conn_bytes": (rss1 - rss0) * 1024.0 / n, "open_s": open_s,
                       "rss0": rss0, "rss1": rss1,
                       "still_open": min(still, n),
                       "peer_closed": int(m.group(1)) if m else None, "k": k}
        v.alive()


# --------------------------------------------------------------------------
# The table


def fmt_size(size):
    return "%d MiB" % (size // MiB) if size % MiB == 0 else "%d B" % size


def verdict(value, limit):
    return "met" if value <= limit else "MISSED"


def paired_floor(runs, aes_s):
    """(median floor, median of the runs' ratios to their own floor): a
    run's floor is the larger of AES alone and the O_DIRECT write of the
    same file timed just before it."""
    floors = [max(aes_s, r["direct"]) for r in runs]
    return (statistics.median(floors),
            statistics.median(r["wall"] / f for r, f in zip(runs, floors)))


def halves_rows(row, res, aes_s, nruns):
    """Each half of the upload alone: where the time goes when client and
    server do not share the two cores."""
    alone = res.get("client_alone")
    if alone:
        wall = statistics.median(r["wall"] for r in alone)
        row("  the client alone, into a sink (%s)" % nruns, "%.3f s" % wall,
            "AES alone %.3f s" % aes_s, "%.2fx" % (wall / aes_s), "-")
    alone = res.get("server_alone")
    if alone:
        wall = statistics.median(r["wall"] for r in alone)
        row("  the server alone, fed by sendfile (%s)" % nruns, "%.3f s" % wall,
            "O_DIRECT %.3f s" % statistics.median(r["direct"] for r in alone),
            "%.2fx" % statistics.median(r["wall"] / r["direct"] for r in alone), "-")


def build_rows(ctx, res):
    rows = []

    def row(figure, ours="-", ref="-", ratio="-", target="-"):
        rows.append((figure, ours, ref, ratio, target))

    big_size = ctx.files["big"].stat().st_size
    med_size = ctx.files["medium"].stat().st_size
    nruns = "median of %d" % ctx.runs
    aes_s = big_size / (res["aes_kBps"] * 1000.0) if "aes_kBps" in res else None

    big = res.get("big")
    if big:
        wall = statistics.median(r["wall"] for r in big)
        if aes_s:
            # the floor: encryption alone on one core, or the disk alone,
            # each run against the disk as it was just before it
            floor, ratio = paired_floor(big, aes_s)
            row("%s upload, reconnect (%s)" % (fmt_size(big_size), nruns), "%.3f s" % wall,
                "floor %.3f s" % floor, "%.2fx" % ratio,
                "<= 1.15x  %s" % verdict(ratio, 1.15))
            row("  floor: AES-128-CBC alone / O_DIRECT write", "-",
                "%.3f s / %.3f s" % (aes_s, statistics.median(r["direct"] for r in big)),
                "-", "ratio: median of runs")
            halves_rows(row, res, aes_s, nruns)
        else:
            row("%s upload, reconnect (%s)" % (fmt_size(big_size), nruns), "%.3f s" % wall)
        if "scp" in big[0]:
            scp = statistics.median(r["scp"] for r in big)
            scpf = statistics.median(r["scp"] + r["scp_fsync"] for r in big)
            row("  vs scp -c aes128-gcm (as is)", "%.3f s" % wall, "scp %.3f s" % scp,
                "%.2fx" % (wall / scp), "<= 0.50x  %s" % verdict(wall / scp, 0.5))
            row("  vs scp, then fsync of the copy", "%.3f s" % wall, "scp+fsync %.3f s" % scpf,
                "%.2fx" % (wall / scpf), "<= 0.40x  %s" % verdict(wall / scpf, 0.4))
            if aes_s:
                # what no upload that waits for the disk can beat: its floor
                # (each run's own) against the same scp, and scp+fsync
                fa = statistics.median(max(aes_s, r["direct"]) / r["scp"] for r in big)
                ff = statistics.median(max(aes_s, r["direct"]) / (r["scp"] + r["scp_fsync"])
                                       for r in big)
                row("    the floor alone vs scp / scp+fsync", "-", "-",
                    "%.2fx / %.2fx" % (fa, ff), "(bound) %s / %s" % (
                        "0.50x within it" if fa <= 0.5 else "0.50x is below even this",
                        "0.40x within it" if ff <= 0.4 else "0.40x is below even this"))
        else:
            row("  vs scp -c aes128-gcm", "%.3f s" % wall, "skipped", "-", "<= 0.50x  n/a")
        row("  throughput", "%.0f MiB/s" % (big_size / MiB / wall),
            "AES %.0f MiB/s" % (res["aes_kBps"] * 1000.0 / MiB) if aes_s else "-")
        cli = statistics.median(r["client_cpu"] for r in big) * GiB / big_size
        srv = statistics.median(r["server_cpu"] for r in big) * GiB / big_size
        tot = statistics.median((r["client_cpu"] + r["server_cpu"]) for r in big) * GiB / big_size
        row("CPU per GiB, client + server", "%.2f s" % tot, "-", "-",
            "<= 2.50 s  %s" % verdict(tot, 2.5))
        row("  client (user+sys)", "%.2f s" % cli)
        row("  server (user+sys)", "%.2f s" % srv)
        row("peak RSS, client (max of runs)",
            "%.1f MiB" % (max(r["client_rss_kib"] for r in big) / 1024))
        hwm_note = "" if all(r["hwm_reset"] for r in big) else " (no reset: since start)"
        row("peak RSS, server during upload" + hwm_note,
            "%.1f MiB" % (max(r["server_hwm_kib"] for r in big) / 1024))
        row("  server VmHWM since start", "%.1f MiB" % (res["server_hwm_start_kib"] / 1024))
    med = res.get("medium")
    if med:
        wall = statistics.median(r["wall"] for r in med)
        target = ("<= 0.250 s  %s" % verdict(wall, 0.25)) if med_size == 100 * MiB \
            else "n/a (set for 100 MiB)"
        if aes_s:
            floor, ratio = paired_floor(med, med_size / (res["aes_kBps"] * 1000.0))
            row("%s upload, reconnect (%s)" % (fmt_size(med_size), nruns), "%.3f s" % wall,
                "floor %.3f s" % floor, "%.2fx" % ratio, target)
            row("  floor: AES-128-CBC alone / O_DIRECT write", "-", "%.3f s / %.3f s" % (
                med_size / (res["aes_kBps"] * 1000.0),
                statistics.median(r["direct"] for r in med)), "-",
                "(bound) 0.250 s %s" % ("within it" if floor <= 0.25 else "is below even this")
                if med_size == 100 * MiB else "-")
        else:
            row("%s upload, reconnect (%s)" % (fmt_size(med_size), nruns), "%.3f s" % wall,
                "-", "-", target)
    sm = res.get("small")
    if sm:
        row("4 KiB sessions/s, %d client procs, %g s" % (ctx.small_clients, ctx.small_seconds),
            "%.0f /s" % sm["rate"], "%d sessions" % sm["sessions"])
        ex = res.get("exec")
        row("  session wall, median / p95", "%.1f / %.1f ms" % (sm["median"] * 1e3, sm["p95"] * 1e3),
            "bulwark --version %.1f ms" % (ex[0] * 1e3) if ex else "-")
        row("  CPU per session, client + server", "%.2f ms" % (sm["cpu_per"] * 1e3),
            "bulwark --version %.2f ms" % (ex[1] * 1e3) if ex else "-")
        row("  server CPU per session", "%.2f ms" % (sm["server_cpu_per"] * 1e3))
    ld = res.get("load")
    if ld:
        cpu = ld["server_cpu_ms_per_session"]
        cap = 1000.0 / cpu if cpu > 0 else 0.0
        # the generator shares the machine's cores with the server, so the
        # rate it reaches is not the server's capacity: that is one core's
        # worth of the server's CPU per session
        row("4 KiB sessions/s, sessionload %dx%d (median of 3)" % (ld["procs"], ld["conns"]),
            "%.0f /s" % ld["rate"], "%d sessions, %d failed" % (ld["sessions"], ld["errors"]),
            "-", "generator on the same cores")
        row("  server capacity, one core", "%.0f /s" % cap, "1 / server CPU per session", "-",
            ">= 3000 /s  %s" % ("met" if cap >= 3000 else "MISSED"))
        row("  server CPU per session", "%.3f ms" % cpu,
            "runs %s" % " / ".join("%.3f" % c for c in ld["cpu_runs"]), "-",
            "<= 0.300 ms  %s" % ("met" if 0 < cpu <= 0.3 else "MISSED"))
        if "loop_user_ms" in ld:
            row("  of which loop user / loop kernel / workers",
                "%.3f / %.3f / %.3f ms" % (ld["loop_user_ms"], ld["loop_sys_ms"],
                                           ld["workers_ms"]),
                "medians of the runs, from /proc")
        row("  session p50 / p99", "%.1f / %.1f ms" % (ld["p50_ms"], ld["p99_ms"]))
        ns = res.get("load_nosync")
        if ns:
            ncpu = ns["server_cpu_ms_per_session"]
            row("  reference: every sync skipped (not durable)", "%.3f ms" % ncpu,
                "runs %s" % " / ".join("%.3f" % c for c in ns["cpu_runs"]),
                "%.2fx" % ns["paired_ratio"],
                "(bound) 0.300 ms %s" % ("within it" if 0 < ncpu <= 0.3
                                         else "is below even this"))
            row("    loop user / loop kernel / workers",
                "%.3f / %.3f / %.3f ms" % (ns["loop_user_ms"], ns["loop_sys_ms"],
                                           ns["workers_ms"]),
                "%d syncs skipped, %d sessions" % (ns["syncs_skipped"], ns["sessions"]))
        elif "load_nosync_skipped" in res:
            row("  reference: every sync skipped", "skipped", res["load_nosync_skipped"])
    idle = res.get("idle")
    if idle:
        row("session with %d idle conns (median of %d)" % (idle["n"], idle["k"]),
            "%.3f s" % idle["loaded"], "without %.3f s" % idle["base"],
            "%.2fx" % (idle["loaded"] / idle["base"]), "completes  met")
        row("  server memory per idle conn", "%.0f B" % idle["per_conn_bytes"],
            "RSS %.1f -> %.1f MiB" % (idle["rss0"] / 1024, idle["rss1"] / 1024))
        row("  idle conns still open after it", "%d of %d" % (idle["still_open"], idle["n"]),
            "holder saw %s closed" % ("?" if idle["peer_closed"] is None else idle["peer_closed"]),
            "-", "all  %s" % ("met" if idle["still_open"] >= idle["n"] and not idle["peer_closed"]
                              else "MISSED"))
    if "crc_bw_cksum_update" in res:
        row("cksum, bw_cksum_update (256 MiB)", "%.2f GB/s" % res["crc_bw_cksum_update"],
            "slice8 %.2f GB/s" % res["crc_slice8"] if "crc_slice8" in res else "-",
            "%.1fx" % (res["crc_bw_cksum_update"] / res["crc_slice8"])
            if "crc_slice8" in res else "-")
    return rows


def print_table(rows):
    head = ("figure", "ours", "reference", "ratio", "target")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    line = " | ".join("%-*s" % (widths[i], head[i]) for i in range(5))
    print(line.rstrip())
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join("%-*s" % (widths[i], r[i]) for i in range(5)).rstrip())


def host_line(ctx):
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    fs = run_quiet(["stat", "-f", "-c", "%T", ctx.tmp], 10, "stat").strip()
    return "%d cores (%s), Linux %s; temp dir on %s; load average %.2f at start, %.2f at end" % (
        os.cpu_count() or 0, model, platform.release(), fs, ctx.load_start, os.getloadavg()[0])


# --------------------------------------------------------------------------


def on_signal(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def main():
    ap = argparse.ArgumentParser(description="Bulwark vault benchmark (use bench/run)")
    ap.add_argument("--tmp", type=Path, required=True)
    ap.add_argument("--bin-dir", type=Path, required=True)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--medium-mib", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--small-clients", type=int, default=32)
    ap.add_argument("--small-seconds", type=float, default=5.0)
    ap.add_argument("--load-procs", type=int, default=4,
                    help="sessionload processes (default 4)")
    ap.add_argument("--load-conns", type=int, default=16,
                    help="clients (threads) per sessionload process (default 16)")
    ap.add_argument("--aes-seconds", type=int, default=3)
    ap.add_argument("--scp", choices=("required", "optional", "off"), default="required")
    ap.add_argument("--deadline", type=int, default=900, help="overall limit in seconds")
    ap.add_argument("--label", default="")
    ctx = ap.parse_args()
    ctx.repo = BENCH_DIR.parent
    ctx.bulwarkd = ctx.bin_dir / "bulwarkd"
    ctx.bulwark = ctx.bin_dir / "bulwark"
    ctx.procs = Procs(ctx.tmp / "pids")
    try:
        import pwd
        ctx.user = pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        ctx.user = "root"

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):
        signal.signal(sig, on_signal)
    signal.alarm(ctx.deadline)
    started = time.monotonic()
    ctx.load_start = os.getloadavg()[0]
    res = {}
    errors = []
    status = 0
    ctx.files = None
    global MAXRSS_EXE
    try:
        exe = ctx.tmp / "maxrss"
        run_quiet(["cc", "-O2", "-o", exe, BENCH_DIR / "maxrss.c"], 60, "compiling bench/maxrss.c")
        MAXRSS_EXE = exe
    except ScenarioError as e:
        say("peak RSS of the client will include the benchmark's own memory: %s", e)
    try:
        scenarios = (("AES reference", scenario_aes),
                     ("cksum speed", scenario_crc),
                     ("uploads", scenario_upload), ("the upload's halves", scenario_halves),
                     ("small files", scenario_small),
                     ("sessions", scenario_sessions),
                     ("idle connections", scenario_idle))
        try:
            ctx.files = make_files(ctx)
        except (ScenarioError, OSError) as e:
            errors.append("setup: %s" % e)
            scenarios = ()
        for name, fn in scenarios:
            t0 = time.monotonic()
            try:
                fn(ctx, res)
            except ScenarioError as e:
                errors.append("%s: %s" % (name, e))
                say("FAILED %s: %s", name, e)
            except Exception:
                errors.append("%s: %s" % (name, traceback.format_exc().strip()))
                say("FAILED %s:\n%s", name, traceback.format_exc())
            say("%s took %.1f s", name, time.monotonic() - t0)
    except Interrupted as e:
        errors.append("stopped by %s" % ("the %d s deadline" % ctx.deadline
                                         if str(e) == "SIGALRM" else str(e)))
        status = 130
    finally:
        signal.alarm(0)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        ctx.procs.stop_all()

    print()
    print("Bulwark vault benchmark%s, %s" % (" " + ctx.label if ctx.label else "",
                                             time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    try:
        print(host_line(ctx))
    except ScenarioError:
        pass
    if "aes_kBps" in res:
        print("openssl speed -evp aes-128-cbc, 16384-byte blocks: %.0f kB/s (%.3f s per GiB)"
              % (res["aes_kBps"], GiB / (res["aes_kBps"] * 1000.0)))
    if "crc_text" in res:
        print("bench/crc_speed:\n  " + res["crc_text"].replace("\n", "\n  "))
    print()
    if ctx.files is not None:
        try:
            print_table(build_rows(ctx, res))
        except Exception:
            errors.append("table: %s" % traceback.format_exc().strip())
    print()
    print("Notes: uploads are `bulwark send` on the reconnect path (1027) after one warm-up,")
    print("each stored file compared with cmp; the server fsyncs before 2103. scp is timed as is")
    print("(no fsync); the scp+fsync row adds an fsync of the copy. CPU: client from wait4(),")
    print("server from /proc/<pid>/stat. Server peak RSS is VmHWM, reset before each upload.")
    print("A (bound) row puts a target beside what this machine allows at best in the same run:")
    print("the disk's floor alone, or a server whose every sync is skipped (libbwnosync.so,")
    print("preloaded; never durable, never a mode). \"is below even this\": the target is out")
    print("of reach here even with the disk's cost, or the syncs', taken away.")
    print("The halves: the client alone uploads into a Python server that drops the body and")
    print("answers the file's CRC; the server alone gets a body encrypted before the clock")
    print("starts, sent with sendfile() (timed from the 1028 header to 2103, then cmp).")
    if ctx.size_mib != 1024 or ctx.medium_mib != 100:
        print("The targets are set for 1024 MiB and 100 MiB uploads; at these sizes fixed")
        print("per-session costs (process start, RSA, fsync) dominate the ratios.")
    if "scp_skipped" in res:
        print("scp reference skipped: %s" % res["scp_skipped"])
    if errors:
        print()
        print("ERRORS (%d):" % len(errors))
        for e in errors:
            print("  - " + e.replace("\n", "\n    "))
        status = status or 1
    print("total %.1f s" % (time.monotonic() - started))
    return status


if __name__ == "__main__":
    sys.exit(main())
