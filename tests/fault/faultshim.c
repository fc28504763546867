/* Fault injection for the integration tests (libbwfault.so, LD_PRELOAD): owns
 * the wrappers of the calls that put a file on disk (open/openat with O_CREAT,
 * write, pwrite, fsync, fdatasync, rename*, link*, unlink*, mkdir*), which
 * can fail the n-th matching call with an errno or SIGKILL the process there.
 *
 *   BW_FAULT=op:n[:action[:substr]][,op:n[:action[:substr]]...]
 *	on the n-th call (1-based) of op whose path contains substr (empty:
 *	any path; ending in '$': whose path ends with the rest) do action:
 *	an errno name (EIO, ENOSPC, EDQUOT, EACCES, ...; default EIO) makes
 *	the call return -1 with that errno without doing it, "kill" raises
 *	SIGKILL before it, "sleep=MS" sleeps MS milliseconds (1 to 600000)
 *	and then does the call (a slow disk; "woke" is said when the sleep
 *	ends). Ops: fsync fdatasync rename renameat renameat2 link linkat
 *	unlink unlinkat write pwrite (pwrite64 too) open (open64, creat)
 *	openat (openat64) mkdir mkdirat; and, looked at only when a fault
 *	names them, close (the last close of a removed file frees its
 *	blocks), getaddrinfo (its "path" is the name looked up) and mmap
 *	(of a file: a file that cannot be mapped). "op@main"
 *	counts only the calls made on the main thread (a daemon's loop). A
 *	malformed BW_FAULT aborts the process so that a typo cannot pass for
 *	"nothing failed".
 *   BW_FAULT_ARM=/path
 *	faults count only the calls made once /path exists (it is looked for
 *	until it is first seen), so a test can arm them at a chosen moment,
 *	e.g. after the start-up and the requests that precede the one tested.
 *   BW_FAULT_WAKE=/path
 *	a "sleep=MS" ends early once /path exists (looked for every 10 ms):
 *	a test that has checked what it wanted while the call slept lets it
 *	go on instead of waiting out the rest (MS stays the longest sleep).
 *   BW_FAULT_LOG=/path
 *	appends "op path\n" for every intercepted call, before it is done,
 *	armed or not.
 *   BW_SNDBUF=N
 *	every socket accept() or accept4() returns gets SO_SNDBUF N (the
 *	kernel doubles it): a reply then waits in the process's own buffers
 *	rather than in the kernel's (which autotune to megabytes on loopback).
 *   BW_SHORT_READ=N
 *	read() of a regular file returns at most N bytes at a time (a short
 *	read, which a reader must take as it comes): what the daemon copies
 *	from files (a migration's contents) then reaches its writes in pieces.
 *   BW_FAULT_MONO=/path
 *	CLOCK_MONOTONIC runs ahead by the milliseconds written in /path (read
 *	again at most every 50 ms; none or unreadable: 0), so that a test can
 *	move a daemon's clock a day on without waiting for it.
 *   BW_FAULT_TIME=SECONDS
 *	time() returns SECONDS, always: what depends on the wall clock's
 *	second (LastSeen is written only when its second changes) is the same
 *	in a recorded run and in the faulted run that counts its calls.
 *
 * A path is made absolute: *at calls resolve their directory descriptor and
 * fd calls their descriptor through /proc/self/fd; calls with two paths
 * (rename, link) show "old new", and substr may match either. Fired faults
 * are reported on stderr as "bwfault: ...". Counters are atomics: the daemon
 * calls these from worker threads. Nothing here calls a wrapped function:
 * the log and the report are written with the real write().
 */
#undef _FORTIFY_SOURCE
#undef _FILE_OFFSET_BITS
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <netdb.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

enum op {
	OP_FSYNC,
	OP_FDATASYNC,
	OP_RENAME,
	OP_RENAMEAT,
	OP_RENAMEAT2,
	OP_LINK,
	OP_LINKAT,
	OP_UNLINK,
	OP_UNLINKAT,
	OP_WRITE,
	OP_PWRITE,
	OP_OPEN,
	OP_OPENAT,
	OP_MKDIR,
	OP_MKDIRAT,
	OP_CLOSE,
	OP_GETADDRINFO,
	OP_MMAP,
	OP_N
};

static const char *const op_names[OP_N] = {
	[OP_FSYNC] = "fsync",
	[OP_FDATASYNC] = "fdatasync",
	[OP_RENAME] = "rename",
	[OP_RENAMEAT] = "renameat",
	[OP_RENAMEAT2] = "renameat2",
	[OP_LINK] = "link",
	[OP_LINKAT] = "linkat",
	[OP_UNLINK] = "unlink",
	[OP_UNLINKAT] = "unlinkat",
	[OP_WRITE] = "write",
	[OP_PWRITE] = "pwrite",
	[OP_OPEN] = "open",
	[OP_OPENAT] = "openat",
	[OP_MKDIR] = "mkdir",
	[OP_MKDIRAT] = "mkdirat",
	[OP_CLOSE] = "close",
	[OP_GETADDRINFO] = "getaddrinfo",
	[OP_MMAP] = "mmap",
};

static const struct {
	const char *name;
	int value;
} errnos[] = {
	{"EIO", EIO},	    {"ENOSPC", ENOSPC}, {"EDQUOT", EDQUOT},
	{"EACCES", EACCES}, {"EPERM", EPERM},	{"EROFS", EROFS},
	{"ENOENT", ENOENT}, {"EEXIST", EEXIST}, {"EXDEV", EXDEV},
	{"EINTR", EINTR},   {"ENOMEM", ENOMEM}, {"EMFILE", EMFILE},
	{"EBADF", EBADF},   {"EFBIG", EFBIG},	{"ENODEV", ENODEV},
};

#define MAX_FAULTS   16
#define SUBSTR_CAP   512
#define ACTION_KILL  (-1)
#define ACTION_SLEEP (-2) /* sleep_ms, then the real call */
#define SLEEP_MAX_MS 600000ul
#define ONE_PATH     (PATH_MAX + 64)
#define TWO_PATHS    (2 * ONE_PATH + 2)

struct fault {
	int op;
	unsigned long n;
	int action;		/* errno, ACTION_KILL or ACTION_SLEEP */
	unsigned long sleep_ms; /* ACTION_SLEEP */
	char substr[SUBSTR_CAP];
	int at_end;	   /* substr ended in '$': the path must end with it */
	int main_only;	   /* "op@main": calls on the main thread only */
	atomic_ulong seen; /* matching calls so far */
};

static struct fault faults[MAX_FAULTS];
static int faults_n;
static unsigned op_armed; /* bit per op with a fault */
static int init_done;	  /* init() has ended: op_armed is set */
static int log_fd = -1;
static const char *arm_path;
static const char *wake_path; /* BW_FAULT_WAKE: a sleep ends once it exists */
static atomic_int armed_seen;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_rename)(const char *, const char *);
static int (*real_renameat)(int, const char *, int, const char *);
static int (*real_renameat2)(int, const char *, int, const char *, unsigned);
static int (*real_link)(const char *, const char *);
static int (*real_linkat)(int, const char *, int, const char *, int);
static int (*real_unlink)(const char *);
static int (*real_unlinkat)(int, const char *, int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_creat)(const char *, mode_t);
static int (*real_mkdir)(const char *, mode_t);
static int (*real_mkdirat)(int, const char *, mode_t);
static int (*real_close)(int);
static int (*real_getaddrinfo)(const char *, const char *,
			       const struct addrinfo *, struct addrinfo **);
static int (*real_accept)(int, struct sockaddr *, socklen_t *);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
static ssize_t (*real_read)(int, void *, size_t);
static size_t short_read;      /* BW_SHORT_READ */
static atomic_ulong reads_cut; /* reads it cut short */
static int sndbuf_size;	       /* BW_SNDBUF, 0: unset */
static time_t frozen_time;     /* BW_FAULT_TIME, 0: unset */

/* --- set-up -------------------------------------------------------------- */

static void
say(const char *msg)
{
	size_t len = strlen(msg);

	if (real_write != NULL)
		(void)!real_write(STDERR_FILENO, msg, len);
}

static void
bad_config(const char *why, const char *spec)
{
	char line[1024];

	snprintf(line, sizeof(line), "bwfault: BW_FAULT: %s in '%s'\n", why,
		 spec);
	say(line);
	abort();
}

static int
op_by_name(const char *name, size_t len)
{
	int i;

	for (i = 0; i < OP_N; i++) {
		if (strlen(op_names[i]) == len &&
		    strncmp(op_names[i], name, len) == 0)
			return i;
	}
	return -1;
}

static int
action_by_name(const char *name, size_t len, unsigned long *sleep_ms)
{
	char *end, num[32];
	unsigned long v;
	size_t i;

	if (len == 0)
		return EIO;
	if (len == 4 && strncmp(name, "kill", 4) == 0)
		return ACTION_KILL;
	if (len > 6 && strncmp(name, "sleep=", 6) == 0) {
		if (len - 6 >= sizeof(num) || name[6] < '0' || name[6] > '9')
			return 0;
		memcpy(num, name + 6, len - 6);
		num[len - 6] = '\0';
		errno = 0;
		v = strtoul(num, &end, 10);
		if (errno != 0 || *end != '\0' || v == 0 || v > SLEEP_MAX_MS)
			return 0;
		*sleep_ms = v;
		return ACTION_SLEEP;
	}
	for (i = 0; i < sizeof(errnos) / sizeof(errnos[0]); i++) {
		if (strlen(errnos[i].name) == len &&
		    strncmp(errnos[i].name, name, len) == 0)
			return errnos[i].value;
	}
	errno = 0;
	v = strtoul(name, &end, 10);
	if (errno == 0 && end == name + len && v > 0 && v < 4096)
		return (int)v;
	return 0;
}

/* Parses one "op:n[:action[:substr]]" of len bytes at s into f. */
static void
parse_fault(const char *s, size_t len, struct fault *f, const char *all)
{
	const char *end = s + len, *c1, *c2, *c3;
	char num[32];
	char *nend;
	size_t alen;

	if ((c1 = memchr(s, ':', len)) == NULL)
		bad_config("no ':n' after the op", all);
	alen = (size_t)(c1 - s);
	if (alen > 5 && memcmp(c1 - 5, "@main", 5) == 0) {
		f->main_only = 1;
		alen -= 5;
	}
	if ((f->op = op_by_name(s, alen)) < 0)
		bad_config("unknown op", all);
	c2 = memchr(c1 + 1, ':', (size_t)(end - c1 - 1));
	if (c2 == NULL)
		c2 = end;
	if ((size_t)(c2 - c1 - 1) == 0 || (size_t)(c2 - c1 - 1) >= sizeof(num))
		bad_config("bad count", all);
	memcpy(num, c1 + 1, (size_t)(c2 - c1 - 1));
	num[c2 - c1 - 1] = '\0';
	errno = 0;
	f->n = strtoul(num, &nend, 10);
	if (errno != 0 || *nend != '\0' || f->n == 0 || num[0] == '-')
		bad_config("count is not a number >= 1", all);
	f->action = EIO;
	if (c2 == end)
		return;
	c3 = memchr(c2 + 1, ':', (size_t)(end - c2 - 1));
	alen = (size_t)((c3 != NULL ? c3 : end) - c2 - 1);
	if ((f->action = action_by_name(c2 + 1, alen, &f->sleep_ms)) == 0)
		bad_config("unknown action", all);
	if (c3 == NULL)
		return;
	if ((size_t)(end - c3 - 1) >= sizeof(f->substr))
		bad_config("substring too long", all);
	memcpy(f->substr, c3 + 1, (size_t)(end - c3 - 1));
	f->substr[end - c3 - 1] = '\0';
	if (end - c3 - 1 > 0 && end[-1] == '$') {
		f->at_end = 1;
		f->substr[end - c3 - 2] = '\0';
	}
}

/* Whether path is one f names. */
static int
matches(const struct fault *f, const char *path)
{
	size_t n = strlen(f->substr), len = strlen(path);

	if (f->at_end)
		return len >= n && memcmp(path + len - n, f->substr, n) == 0;
	return f->substr[0] == '\0' || strstr(path, f->substr) != NULL;
}

static void
parse_faults(const char *spec)
{
	const char *s = spec, *comma;
	size_t len;

	while (*s != '\0') {
		comma = strchr(s, ',');
		len = comma != NULL ? (size_t)(comma - s) : strlen(s);
		if (len > 0) {
			if (faults_n == MAX_FAULTS)
				bad_config("too many faults", spec);
			parse_fault(s, len, &faults[faults_n], spec);
			op_armed |= 1u << faults[faults_n].op;
			faults_n++;
		}
		if (comma == NULL)
			break;
		s = comma + 1;
	}
}

#define RESOLVE(var, name) (*(void **)&(var) = dlsym(RTLD_NEXT, name))

/* The size (1 to 2^30) in the environment variable name, 0 if it is unset;
 * a malformed one aborts, so that a typo cannot pass for "not asked". */
static long
env_size(const char *name)
{
	const char *spec = getenv(name);
	char *end;
	long v;

	if (spec == NULL || spec[0] == '\0')
		return 0;
	errno = 0;
	v = strtol(spec, &end, 10);
	if (errno != 0 || *end != '\0' || v <= 0 || v > (1L << 30)) {
		say("bwfault: ");
		say(name);
		say(" is not a size\n");
		abort();
	}
	return v;
}

static void
init(void)
{
	const char *spec, *log_path;

	RESOLVE(real_fsync, "fsync");
	RESOLVE(real_fdatasync, "fdatasync");
	RESOLVE(real_rename, "rename");
	RESOLVE(real_renameat, "renameat");
	RESOLVE(real_renameat2, "renameat2");
	RESOLVE(real_link, "link");
	RESOLVE(real_linkat, "linkat");
	RESOLVE(real_unlink, "unlink");
	RESOLVE(real_unlinkat, "unlinkat");
	RESOLVE(real_write, "write");
	RESOLVE(real_pwrite, "pwrite");
	RESOLVE(real_pwrite64, "pwrite64");
	RESOLVE(real_open, "open");
	RESOLVE(real_open64, "open64");
	RESOLVE(real_openat, "openat");
	RESOLVE(real_openat64, "openat64");
	RESOLVE(real_creat, "creat");
	RESOLVE(real_mkdir, "mkdir");
	RESOLVE(real_mkdirat, "mkdirat");
	RESOLVE(real_close, "close");
	RESOLVE(real_getaddrinfo, "getaddrinfo");
	RESOLVE(real_accept, "accept");
	RESOLVE(real_accept4, "accept4");
	RESOLVE(real_read, "read");
	if ((spec = getenv("BW_FAULT")) != NULL)
		parse_faults(spec);
	sndbuf_size = (int)env_size("BW_SNDBUF");
	short_read = (size_t)env_size("BW_SHORT_READ");
	if ((spec = getenv("BW_FAULT_TIME")) != NULL && spec[0] != '\0') {
		char *end;
		long long v;

		errno = 0;
		v = strtoll(spec, &end, 10);
		if (errno != 0 || *end != '\0' || v <= 0) {
			say("bwfault: BW_FAULT_TIME is not a time\n");
			abort();
		}
		frozen_time = (time_t)v;
	}
	wake_path = getenv("BW_FAULT_WAKE");
	if (wake_path != NULL && wake_path[0] == '\0')
		wake_path = NULL;
	arm_path = getenv("BW_FAULT_ARM");
	if (arm_path != NULL && arm_path[0] == '\0')
		arm_path = NULL;
	log_path = getenv("BW_FAULT_LOG");
	if (log_path != NULL && log_path[0] != '\0' && real_open != NULL)
		log_fd = real_open(log_path,
				   O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
				   0644);
	__atomic_store_n(&init_done, 1, __ATOMIC_RELEASE);
}

__attribute__((constructor)) static void
shim_load(void)
{
	(void)pthread_once(&once, init);
}

/* --- paths -----------------------------------------------------------------
 */

/* The path behind fd into out (at most cap bytes with the NUL). */
static void
fd_path(int fd, char *out, size_t cap)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, out, cap - 1);
	if (n < 0)
		snprintf(out, cap, "fd:%d", fd);
	else
		out[n] = '\0';
}

/* dir/path made absolute where it can be. */
static void
at_path(int dir, const char *path, char *out, size_t cap)
{
	char base[ONE_PATH];

	if (path == NULL) {
		snprintf(out, cap, "(null)");
		return;
	}
	if (path[0] == '/') {
		snprintf(out, cap, "%s", path);
		return;
	}
	if (dir == AT_FDCWD) {
		if (getcwd(base, sizeof(base)) == NULL)
			snprintf(base, sizeof(base), ".");
	} else {
		fd_path(dir, base, sizeof(base));
	}
	/* a path too long for out is cut: its start still matches */
	if (snprintf(out, cap, "%s%s%s", base, path[0] != '\0' ? "/" : "",
		     path) < 0)
		snprintf(out, cap, "?");
}

/* --- the decision ----------------------------------------------------------
 */

static int
wanted(int op)
{
	(void)pthread_once(&once, init);
	return log_fd >= 0 || (op_armed & (1u << op)) != 0;
}

static void
log_call(int op, const char *path)
{
	char line[TWO_PATHS + 32];
	int n;

	if (log_fd < 0)
		return;
	n = snprintf(line, sizeof(line), "%s %s\n", op_names[op], path);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = (int)sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	(void)!real_write(log_fd, line, (size_t)n);
}

/* ms milliseconds, or less once BW_FAULT_WAKE's file exists. */
static void
sleep_or_wake(unsigned long ms)
{
	struct timespec ts;
	unsigned long step;

	while (ms > 0) {
		if (wake_path != NULL && access(wake_path, F_OK) == 0)
			return;
		step = wake_path != NULL && ms > 10 ? 10 : ms;
		ts.tv_sec = (time_t)(step / 1000);
		ts.tv_nsec = (long)(step % 1000) * 1000000L;
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
		ms -= step;
	}
}

/* Whether faults count calls yet (see BW_FAULT_ARM). */
static int
armed(void)
{
	struct stat st;

	if (arm_path == NULL || atomic_load(&armed_seen))
		return 1;
	if (stat(arm_path, &st) != 0)
		return 0;
	atomic_store(&armed_seen, 1);
	return 1;
}

/* Logs the call and counts it against every fault on op; returns 0 to go
 * on, or the errno to fail with. Does not return on "kill". */
static int
decide(int op, const char *path)
{
	char line[TWO_PATHS + 96];
	struct fault *f;
	int i, err = 0;

	log_call(op, path);
	if ((op_armed & (1u << op)) == 0 || !armed())
		return 0;
	for (i = 0; i < faults_n; i++) {
		f = &faults[i];
		if (f->op != op || !matches(f, path) ||
		    (f->main_only && gettid() != getpid()))
			continue;
		if (atomic_fetch_add(&f->seen, 1) + 1 != f->n || err != 0)
			continue;
		if (f->action == ACTION_SLEEP) {
			snprintf(line, sizeof(line),
				 "bwfault: %s #%lu sleeps %lu ms: %s\n",
				 op_names[op], f->n, f->sleep_ms, path);
			say(line);
			sleep_or_wake(f->sleep_ms);
			snprintf(line, sizeof(line),
				 "bwfault: %s #%lu woke: %s\n", op_names[op],
				 f->n, path);
			say(line);
			continue;
		}
		if (f->action == ACTION_KILL) {
			snprintf(line, sizeof(line),
				 "bwfault: kill at %s #%lu: %s\n", op_names[op],
				 f->n, path);
			say(line);
			raise(SIGKILL);
			_exit(137); /* not reached */
		}
		snprintf(line, sizeof(line),
			 "bwfault: %s #%lu failed with %s: %s\n", op_names[op],
			 f->n, strerror(f->action), path);
		say(line);
		err = f->action;
	}
	return err;
}

static int
fail(int err)
{
	errno = err;
	return -1;
}

static int
check_fd(int op, int fd)
{
	char path[ONE_PATH];

	if (!wanted(op))
		return 0;
	fd_path(fd, path, sizeof(path));
	return decide(op, path);
}

static int
check_at(int op, int dir, const char *p)
{
	char path[ONE_PATH];

	if (!wanted(op))
		return 0;
	at_path(dir, p, path, sizeof(path));
	return decide(op, path);
}

static int
check_at2(int op, int d1, const char *p1, int d2, const char *p2)
{
	char a[ONE_PATH], b[ONE_PATH], both[TWO_PATHS];

	if (!wanted(op))
		return 0;
	at_path(d1, p1, a, sizeof(a));
	at_path(d2, p2, b, sizeof(b));
	snprintf(both, sizeof(both), "%s %s", a, b);
	return decide(op, both);
}

static int
creates(int flags)
{
	return (flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE;
}

/* --- the wrappers ----------------------------------------------------------
 */

int
fsync(int fd)
{
	int err = check_fd(OP_FSYNC, fd);

	if (err != 0 || real_fsync == NULL)
		return fail(err != 0 ? err : ENOSYS);
	return real_fsync(fd);
}

int
fdatasync(int fd)
{
	int err = check_fd(OP_FDATASYNC, fd);

	if (err != 0 || real_fdatasync == NULL)
		return fail(err != 0 ? err : ENOSYS);
	return real_fdatasync(fd);
}

ssize_t
write(int fd, const void *buf, size_t n)
{
	int err = check_fd(OP_WRITE, fd);

	if (err != 0 || real_write == NULL)
		return fail(err != 0 ? err : ENOSYS);
	return real_write(fd, buf, n);
}

ssize_t
pwrite(int fd, const void *buf, size_t n, off_t off)
{
	int err = check_fd(OP_PWRITE, fd);

	if (err != 0 || real_pwrite == NULL)
		return fail(err != 0 ? err : ENOSYS);
	return real_pwrite(fd, buf, n, off);
}

ssize_t
pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
	int err = check_fd(OP_PWRITE, fd);

	if (err != 0 || real_pwrite64 == NULL)
		return fail(err != 0 ? err : ENOSYS);
	return real_pwrite64(fd, buf, n, off);
}

int
rename(const char *from, const char *to)
{
	int err = check_at2(OP_RENAME, AT_FDCWD, from, AT_FDCWD, to);

	if (err != 0 || real_rename == NULL)
		return fail(err != 0 ? err : ENOSYS);
	return real_rename(from, to);
}

int
renameat(int fd1, const char *from, int fd2, const char *to)
{
	int err = check_at2(OP_RENAMEAT, fd1, from, fd2, to);

	if (err != 0 || real_renameat == NULL)
		return fail(err != 0 ? err : ENOSYS);
	return real_renameat(fd1, from, fd2, to);
}

int
renameat2(int fd1, const char *from, int fd2, const char *to, unsigned flags)
{
	int err = check_at2(OP_RENAMEAT2, fd1, from, fd2, to);

	if (err != 0 || real_renameat2 == NULL)
		return fail(err != 0 ? err : ENOSYS);
	return real_renameat2(fd1, from, fd2, to, flags);
}

int
link(const char *from, const char *to)
{
	int err = check_at2(OP_LINK, AT_FDCWD, from, AT_FDCWD, to);

	if (err != 0 || real_link == NULL)
		return fail(err != 0 ? err : ENOSYS);
	return real_link(from, to);
}

int
linkat(int fd1, const char *from, int fd2, const char *to, int flags)
{
	int err = check_at2(OP_LINKAT, fd1, from, fd2, to);

	if (err != 0 || real_linkat == NULL)
		return fail(err != 0 ? err : ENOSYS);
	return real_linkat(fd1, from, fd2, to, flags);
}

int
unlink(const char *path)
{
	int err = check_at(OP_UNLINK, AT_FDCWD, path);

	if (err != 0 || real_unlink == NULL)
		return fail(err != 0 ? err : ENOSYS);
	return real_unlink(path);
}

int
unlinkat(int dir, const char *path, int flags)
{
	int err = check_at(OP_UNLINKAT, dir, path);

	if (err != 0 || real_unlinkat == NULL)
		return fail(err != 0 ? err : ENOSYS);
	return real_unlinkat(dir, path, flags);
}

int
mkdir(const char *path, mode_t mode)
{
	int err = check_at(OP_MKDIR, AT_FDCWD, path);

	if (err != 0 || real_mkdir == NULL)
		return fail(err != 0 ? err : ENOSYS);
	return real_mkdir(path, mode);
}

int
mkdirat(int dir, const char *path, mode_t mode)
{
	int err = check_at(OP_MKDIRAT, dir, path);

	if (err != 0 || real_mkdirat == NULL)
		return fail(err != 0 ? err : ENOSYS);
	return real_mkdirat(dir, path, mode);
}

/* The open family: only a call that may create a file is a step. */

static mode_t
mode_arg(int flags, va_list ap)
{
	return creates(flags) ? (mode_t)va_arg(ap, unsigned) : 0;
}

int
open(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;
	int err = 0;

	va_start(ap, flags);
	mode = mode_arg(flags, ap);
	va_end(ap);
	if (creates(flags))
		err = check_at(OP_OPEN, AT_FDCWD, path);
	else
		(void)pthread_once(&once, init);
	if (err != 0 || real_open == NULL)
		return fail(err != 0 ? err : ENOSYS);
	return real_open(path, flags, mode);
}

int
open64(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;
	int err = 0;

	va_start(ap, flags);
	mode = mode_arg(flags, ap);
	va_end(ap);
	if (creates(flags))
		err = check_at(OP_OPEN, AT_FDCWD, path);
	else
		(void)pthread_once(&once, init);
	if (err != 0 || real_open64 == NULL)
		return fail(err != 0 ? err : ENOSYS);
	return real_open64(path, flags, mode);
}

int
creat(const char *path, mode_t mode)
{
	int err = check_at(OP_OPEN, AT_FDCWD, path);

	if (err != 0 || real_creat == NULL)
		return fail(err != 0 ? err : ENOSYS);
	return real_creat(path, mode);
}

int
openat(int dir, const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;
	int err = 0;

	va_start(ap, flags);
	mode = mode_arg(flags, ap);
	va_end(ap);
	if (creates(flags))
		err = check_at(OP_OPENAT, dir, path);
	else
		(void)pthread_once(&once, init);
	if (err != 0 || real_openat == NULL)
		return fail(err != 0 ? err : ENOSYS);
	return real_openat(dir, path, flags, mode);
}

int
openat64(int dir, const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;
	int err = 0;

	va_start(ap, flags);
	mode = mode_arg(flags, ap);
	va_end(ap);
	if (creates(flags))
		err = check_at(OP_OPENAT, dir, path);
	else
		(void)pthread_once(&once, init);
	if (err != 0 || real_openat64 == NULL)
		return fail(err != 0 ? err : ENOSYS);
	return real_openat64(dir, path, flags, mode);
}

/* Accepted sockets: SO_SNDBUF from BW_SNDBUF. */

static int
accepted(int fd)
{
	if (fd >= 0 && sndbuf_size > 0 &&
	    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf_size,
		       sizeof(sndbuf_size)) != 0)
		say("bwfault: setsockopt SO_SNDBUF failed\n");
	return fd;
}

int
accept(int lfd, struct sockaddr *addr, socklen_t *len)
{
	(void)pthread_once(&once, init);
	if (real_accept == NULL)
		return fail(ENOSYS);
	return accepted(real_accept(lfd, addr, len));
}

int
accept4(int lfd, struct sockaddr *addr, socklen_t *len, int flags)
{
	(void)pthread_once(&once, init);
	if (real_accept4 == NULL)
		return fail(ENOSYS);
	return accepted(real_accept4(lfd, addr, len, flags));
}

/* Reads of regular files cut short by BW_SHORT_READ. */

ssize_t
read(int fd, void *buf, size_t n)
{
	struct stat st;

	(void)pthread_once(&once, init);
	if (real_read == NULL) {
		errno = ENOSYS;
		return -1;
	}
	if (short_read > 0 && n > short_read && fstat(fd, &st) == 0 &&
	    S_ISREG(st.st_mode)) {
		n = short_read;
		atomic_fetch_add(&reads_cut, 1);
	}
	return real_read(fd, buf, n);
}

/* At the exit, how many reads were cut short: a test can tell that the
 * shim did cut (and so that what it tests was reached). */
__attribute__((destructor)) static void
report_short_reads(void)
{
	char line[80];

	if (short_read == 0)
		return;
	snprintf(line, sizeof(line), "bwfault: %lu reads cut short\n",
		 atomic_load(&reads_cut));
	say(line);
}

/* CLOCK_MONOTONIC moved on by BW_FAULT_MONO's file. Read with raw system
 * calls: the wrappers here may not be resolved yet, and must not log it. */

static long long
mono_offset_ms(long long now_ms)
{
	static _Atomic long long off_ms, checked_ms = -1000;
	static const char *path;
	static int looked;
	char buf[32];
	long fd, n;

	if (!looked) {
		path = getenv("BW_FAULT_MONO");
		looked = 1;
	}
	if (path == NULL)
		return 0;
	if (now_ms - atomic_load(&checked_ms) >= 50) {
		atomic_store(&checked_ms, now_ms);
		fd = syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			n = syscall(SYS_read, (int)fd, buf, sizeof(buf) - 1);
			syscall(SYS_close, (int)fd);
			if (n > 0) { /* empty: being written; the last holds */
				buf[n] = '\0';
				atomic_store(&off_ms, atoll(buf));
			}
		}
	}
	return atomic_load(&off_ms);
}

int
clock_gettime(clockid_t id, struct timespec *ts)
{
	static int (*real)(clockid_t, struct timespec *);
	long long ms, off;
	int r;

	if (real == NULL)
		real = (int (*)(clockid_t, struct timespec *))dlsym(
			RTLD_NEXT, "clock_gettime");
	if (real == NULL)
		return (int)syscall(SYS_clock_gettime, id, ts);
	if ((r = real(id, ts)) != 0 || id != CLOCK_MONOTONIC)
		return r;
	ms = (long long)ts->tv_sec * 1000 + ts->tv_nsec / 1000000;
	if ((off = mono_offset_ms(ms)) != 0) {
		ms = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec +
		     off * 1000000LL;
		ts->tv_sec = (time_t)(ms / 1000000000LL);
		ts->tv_nsec = (long)(ms % 1000000000LL);
	}
	return 0;
}

/* The wall clock's seconds, frozen by BW_FAULT_TIME. */

time_t
time(time_t *t)
{
	struct timespec ts;
	time_t now;

	(void)pthread_once(&once, init);
	if (frozen_time != 0) {
		now = frozen_time;
	} else {
		clock_gettime(CLOCK_REALTIME, &ts);
		now = ts.tv_sec;
	}
	if (t != NULL)
		*t = now;
	return now;
}

/* Every descriptor is closed here, sockets too: only with a fault on
 * close is its path looked at (and logged), never for the log alone. */
int
close(int fd)
{
	int err = 0;

	(void)pthread_once(&once, init);
	if ((op_armed & (1u << OP_CLOSE)) != 0)
		err = check_fd(OP_CLOSE, fd);
	if (real_close == NULL)
		return fail(ENOSYS);
	/* the descriptor goes even when the close reports an error */
	if (real_close(fd) != 0 && err == 0)
		return -1;
	return err != 0 ? fail(err) : 0;
}

/* A name looked up (the node's name is its "path"): only with a fault on
 * getaddrinfo is it looked at, so that a slow resolver can be played. */
int
getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
	    struct addrinfo **res)
{
	int err = 0;

	(void)pthread_once(&once, init);
	if ((op_armed & (1u << OP_GETADDRINFO)) != 0)
		err = decide(OP_GETADDRINFO, node != NULL ? node : "");
	if (err != 0)
		return EAI_FAIL;
	if (real_getaddrinfo == NULL)
		return EAI_SYSTEM;
	return real_getaddrinfo(node, service, hints, res);
}

/* A file mapped (fd >= 0): only with a fault on mmap is its path looked at,
 * so that a file that cannot be mapped can be played. Sanitizer runtimes
 * map memory through here before anything is set up, so this neither
 * starts init() nor asks dlsym() for the real call: it looks at the faults
 * only once another wrapper has set them up (a file is opened before it is
 * mapped), and maps with the system call itself. */
void *
mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	int err = 0;

	if (fd >= 0 && (flags & MAP_ANONYMOUS) == 0 &&
	    __atomic_load_n(&init_done, __ATOMIC_ACQUIRE) &&
	    (op_armed & (1u << OP_MMAP)) != 0)
		err = check_fd(OP_MMAP, fd);
	if (err != 0) {
		errno = err;
		return MAP_FAILED;
	}
	/* syscall() takes each argument as a long (x86-64's six registers) */
	return (void *)syscall(SYS_mmap, addr, len, (long)prot, (long)flags,
			       (long)fd, (long)off);
}
