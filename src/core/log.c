/* Logging: one line per event, key=value, on stderr (journald) or a file
 * reopened on request (SIGHUP after a rotation). Lines are written with a
 * single write() so concurrent writers do not interleave. Each call site
 * (format string) has a token bucket, so a peer that makes the daemon repeat
 * one line cannot flood the log: what is dropped is counted and reported on the
 * next line of that kind.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "bulwark/log.h"

static enum bw_log_level min_level = BW_LOG_INFO;
static int log_fd = STDERR_FILENO;
static char node[64];
static char log_path[4096]; /* "" while logging to stderr */
/* stderr is journald's stream (JOURNAL_STREAM names it): each line begins
 * with its syslog priority, "<6>", so that journalctl -p filters */
static int log_journal;
/* bw_log_never_wait: stderr is a socket (1, sent with MSG_DONTWAIT) or a
 * pipe (2, written through a non-blocking descriptor of our own); 0:
 * writes wait (a file, a terminal). Set once, before threads log. */
static int log_nowait;
/* while log_nowait: one line out at a time (a line cut short is finished
 * or ended before the next), and what the reader had no room for */
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned long long log_dropped;
static int log_cut;    /* the last line was cut off: a newline first */
#define CUT_WAIT_MS 10 /* for the rest of a line begun */

#define KINDS	    512 /* buckets, by format string address */
#define PROBES	    8	/* places a kind may take, from its own */
#define BURST	    50	/* lines of one kind in a burst */
#define PER_SECOND  10	/* then this many a second */
#define TOKEN_SCALE 1000u

struct kind {
	const char *fmt; /* NULL: free */
	uint64_t tokens; /* in 1/TOKEN_SCALE lines */
	uint64_t last_ms;
	unsigned long long suppressed;
};

static struct kind kinds[KINDS];
static pthread_mutex_t kinds_mu = PTHREAD_MUTEX_INITIALIZER;

static uint64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* fmt's bucket: its own, or a free one near its place (taken for good:
 * there are fewer call sites than buckets). Should none be free, kinds
 * share their place's bucket, and its budget: a kind never starts over
 * with a full bucket by taking another's, so two kinds that alternate
 * are limited as one, not unlimited. */
static struct kind *
kind_of(const char *fmt, uint64_t now)
{
	size_t home =
		(size_t)(((uintptr_t)fmt >> 3) * 0x9e3779b97f4a7c15u >> 32) %
		KINDS;
	size_t i;
	struct kind *k;

	for (i = 0; i < PROBES; i++) {
		k = &kinds[(home + i) % KINDS];
		if (k->fmt == fmt)
			return k;
		if (k->fmt == NULL) {
			k->fmt = fmt;
			k->tokens = (uint64_t)BURST * TOKEN_SCALE;
			k->last_ms = now;
			return k;
		}
	}
	return &kinds[home];
}

/* 1 if a line of this kind may be written now; *dropped is how many of
 * its kind (or of the kinds sharing its bucket) were dropped since the
 * last one written. */
static int
take_token(const char *fmt, unsigned long long *dropped)
{
	struct kind *k;
	uint64_t now = mono_ms(), add;
	int ok;

	*dropped = 0;
	pthread_mutex_lock(&kinds_mu);
	k = kind_of(fmt, now);
	add = (now - k->last_ms) * PER_SECOND;
	k->last_ms = now;
	k->tokens += add;
	if (k->tokens > (uint64_t)BURST * TOKEN_SCALE)
		k->tokens = (uint64_t)BURST * TOKEN_SCALE;
	ok = k->tokens >= TOKEN_SCALE;
	if (ok) {
		k->tokens -= TOKEN_SCALE;
		*dropped = k->suppressed;
		k->suppressed = 0;
	} else {
		k->suppressed++;
	}
	pthread_mutex_unlock(&kinds_mu);
	return ok;
}

void
bw_log_set_node(const char *name)
{
	size_t i, n = 0;

	/* a node's name is a word: anything else would break the line's
	 * key=value fields */
	for (i = 0; name != NULL && name[i] != '\0' && n + 1 < sizeof(node);
	     i++)
		if ((unsigned char)name[i] > 0x20 && name[i] != '"' &&
		    name[i] != '=' && (unsigned char)name[i] < 0x7f)
			node[n++] = name[i];
	node[n] = '\0';
}

void
bw_log_set_level(enum bw_log_level min)
{
	min_level = min;
}

void
bw_log_detect_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	char end;

	log_journal = 0;
	if (js == NULL || fstat(STDERR_FILENO, &st) != 0 ||
	    sscanf(js, "%llu:%llu%c", &dev, &ino, &end) != 2)
		return;
	/* only stderr itself: a child whose stderr was redirected keeps the
	 * variable but not the stream */
	log_journal = (unsigned long long)st.st_dev == dev &&
		      (unsigned long long)st.st_ino == ino;
}

int
bw_log_open(const char *path)
{
	int fd;

	if (strlen(path) >= sizeof(log_path))
		return -ENAMETOOLONG;
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY,
		  0640);
	if (fd < 0)
		return -errno;
	if (log_fd != STDERR_FILENO) {
		/* the new file takes the old descriptor's number in one step:
		 * a worker logging meanwhile writes to one file or the other,
		 * never to a closed or reused descriptor */
		if (dup3(fd, log_fd, O_CLOEXEC) < 0) {
			close(fd);
			return -errno;
		}
		close(fd);
	} else {
		log_fd = fd;
	}
	memcpy(log_path, path, strlen(path) + 1);
	return 0;
}

void
bw_log_never_wait(void)
{
	struct stat st;
	int fd;

	if (log_path[0] != '\0' || fstat(log_fd, &st) != 0)
		return;
	if (S_ISSOCK(st.st_mode)) {
		log_nowait = 1;
	} else if (S_ISFIFO(st.st_mode)) {
		/* a descriptor of our own, non-blocking: O_NONBLOCK set on
		 * stderr's would be shared with whoever else writes the pipe
		 * (a shell's 2>&1, the next command of a pipeline) */
		fd = open("/proc/self/fd/2",
			  O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
		if (fd < 0)
			return; /* no /proc: lines wait, as before */
		if (log_fd == STDERR_FILENO)
			log_fd = fd;
		log_nowait = 2;
	}
}

/* The line, whole, without waiting for a reader that takes nothing: 1 if
 * written, 0 if dropped. Under out_mu when log_nowait. */
static int
put_line(const char *line, size_t len)
{
	size_t off = 0;
	ssize_t n;
	int waited = 0;
	struct pollfd p;

	while (off < len) {
		if (log_nowait == 1)
			n = send(log_fd, line + off, len - off,
				 MSG_DONTWAIT | MSG_NOSIGNAL);
		else
			n = write(log_fd, line + off, len - off);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) &&
		    off > 0 && waited < CUT_WAIT_MS) {
			/* a line begun: its reader is there, and may take the
			 * rest in a moment */
			p.fd = log_fd;
			p.events = POLLOUT;
			p.revents = 0;
			(void)poll(&p, 1, 1);
			waited++;
			continue;
		}
		break;
	}
	if (off > 0 && off < len)
		log_cut = 1; /* the next line starts anew */
	return off == len;
}

/* Appends " field" (when it fits in cap) to line. */
static size_t
field(char *line, size_t len, size_t cap, const char *name, const char *value)
{
	int m = snprintf(line + len, cap - len, " %s=%s", name, value);

	return m > 0 && (size_t)m < cap - len ? len + (size_t)m : len;
}

/* Ends the line (log_dropped=N while lines are dropped, node=, the
 * newline: cap leaves room for it) and writes it; while log_nowait,
 * drops it rather than wait for the reader, and counts it. */
static void
out(char *line, size_t len, size_t cap)
{
	char n[24];

	if (log_nowait == 0) {
		if (node[0] != '\0')
			len = field(line, len, cap, "node", node);
		line[len++] = '\n';
		(void)!write(log_fd, line, len);
		return;
	}
	pthread_mutex_lock(&out_mu);
	if (log_dropped > 0) {
		snprintf(n, sizeof(n), "%llu", log_dropped);
		len = field(line, len, cap, "log_dropped", n);
	}
	if (node[0] != '\0')
		len = field(line, len, cap, "node", node);
	line[len++] = '\n';
	if (log_cut && put_line("\n", 1))
		log_cut = 0;
	if (!log_cut && put_line(line, len))
		log_dropped = 0;
	else
		log_dropped++;
	pthread_mutex_unlock(&out_mu);
}

int
bw_log_reopen(void)
{
	char path[sizeof(log_path)];

	if (log_path[0] == '\0')
		return 0;
	memcpy(path, log_path, sizeof(path));
	return bw_log_open(path);
}

/* The message as a quoted value: backslash and quote escaped, control
 * bytes as \xNN (callers escape what peers send; this keeps the line one
 * line whatever reaches it). */
static size_t
quote(char *out, size_t cap, const char *msg)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	unsigned char ch;

	if (cap < 3)
		return 0;
	out[o++] = '"';
	for (; *msg != '\0' && o + 5 < cap; msg++) {
		ch = (unsigned char)*msg;
		if (ch == '"' || ch == '\\') {
			out[o++] = '\\';
			out[o++] = (char)ch;
		} else if (ch < 0x20 || ch == 0x7f) {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[ch >> 4];
			out[o++] = hex[ch & 15];
		} else {
			out[o++] = (char)ch;
		}
	}
	out[o++] = '"';
	return o;
}

/* "<6>ts=... level=info ": the priority only for journald */
static int
line_start(char *line, size_t cap, enum bw_log_level level)
{
	static const char *names[] = {"debug", "info", "warn", "error"};
	static const char prio[] = {'7', '6', '4', '3'};
	struct timeval tv;
	struct tm tm;
	int n = 0;

	if (log_journal && log_path[0] == '\0') {
		line[0] = '<';
		line[1] = prio[level];
		line[2] = '>';
		n = 3;
	}
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	return n + snprintf(line + n, cap - (size_t)n,
			    "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s ",
			    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			    tm.tm_hour, tm.tm_min, tm.tm_sec,
			    (int)(tv.tv_usec / 1000), names[level]);
}

/* Appends " suppressed=N" (lines of its kind the limit dropped) to line. */
static size_t
suppressed(char *line, size_t len, size_t cap, unsigned long long dropped)
{
	int m;

	if (dropped == 0)
		return len;
	m = snprintf(line + len, cap - len, " suppressed=%llu", dropped);
	return m > 0 && (size_t)m < cap - len ? len + (size_t)m : len;
}

static void vlog(enum bw_log_level level, unsigned long long dropped,
		 const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

static void
vlog(enum bw_log_level level, unsigned long long dropped, const char *fmt,
     va_list ap)
{
	char msg[1024], line[2048];
	const char *text = msg, *p;
	int n, m;
	size_t len;

	if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
		return;
	if ((n = line_start(line, sizeof(line), level)) < 0)
		return;
	len = (size_t)n;
	/* "c12 ..." names the connection: conn=12 */
	if (msg[0] == 'c' && msg[1] >= '0' && msg[1] <= '9') {
		for (p = msg + 1; *p >= '0' && *p <= '9'; p++)
			;
		if (*p == ' ' && p - msg <= 21) {
			m = snprintf(line + len, sizeof(line) - len,
				     "conn=%.*s ", (int)(p - msg - 1), msg + 1);
			if (m > 0)
				len += (size_t)m;
			text = p + 1;
		}
	}
	memcpy(line + len, "msg=", 4);
	len += 4;
	/* room after it for suppressed=, log_dropped= (20 digits each), node=
	 * (63 bytes) and the newline */
	len += quote(line + len, sizeof(line) - len - 192, text);
	out(line, suppressed(line, len, sizeof(line), dropped),
	    sizeof(line) - 1);
}

/* the last error's message, logged or not (bw_log_take_error) */
static pthread_mutex_t last_mu = PTHREAD_MUTEX_INITIALIZER;
static char last_error[512];

void
bw_log_take_error(char *out, size_t cap)
{
	pthread_mutex_lock(&last_mu);
	if (cap > 0)
		snprintf(out, cap, "%s", last_error);
	last_error[0] = '\0';
	pthread_mutex_unlock(&last_mu);
}

void
bw_log(enum bw_log_level level, const char *fmt, ...)
{
	unsigned long long dropped;
	va_list ap;

	if (level == BW_LOG_ERROR) {
		pthread_mutex_lock(&last_mu);
		va_start(ap, fmt);
		(void)vsnprintf(last_error, sizeof(last_error), fmt, ap);
		va_end(ap);
		pthread_mutex_unlock(&last_mu);
	}
	if (level < min_level || !take_token(fmt, &dropped))
		return;
	va_start(ap, fmt);
	vlog(level, dropped, fmt, ap);
	va_end(ap);
}

const char *
bw_log_value(char *dst, size_t cap, const char *s)
{
	const char *p;
	size_t n;

	for (p = s; *p != '\0'; p++)
		if ((unsigned char)*p <= 0x20 || *p == '"' || *p == '=' ||
		    *p == '\\' || (unsigned char)*p == 0x7f)
			break;
	if (*p == '\0' && p != s && (n = (size_t)(p - s)) < cap) {
		memcpy(dst, s, n + 1);
		return dst;
	}
	n = quote(dst, cap, s);
	if (n < cap)
		dst[n] = '\0';
	else if (cap > 0)
		dst[0] = '\0';
	return dst;
}

void
bw_log_vevent(enum bw_log_level level, const char *event, const char *prefix,
	      const char *fmt, va_list ap)
{
	unsigned long long dropped;
	char fields[1024], line[2048];
	size_t len, i;
	int n, m;

	if (level < min_level || !take_token(fmt, &dropped))
		return;
	if (vsnprintf(fields, sizeof(fields), fmt, ap) < 0)
		return;
	/* one line whatever a caller let through */
	for (i = 0; fields[i] != '\0'; i++)
		if ((unsigned char)fields[i] < 0x20 ||
		    (unsigned char)fields[i] == 0x7f)
			fields[i] = '?';
	if ((n = line_start(line, sizeof(line), level)) < 0)
		return;
	len = (size_t)n;
	/* room after it as in vlog */
	m = snprintf(line + len, sizeof(line) - len - 192, "event=%s%s%s%s%s",
		     event, prefix[0] != '\0' ? " " : "", prefix,
		     fields[0] != '\0' ? " " : "", fields);
	if (m < 0)
		return;
	len += (size_t)m < sizeof(line) - len - 192 ? (size_t)m
						    : sizeof(line) - len - 193;
	out(line, suppressed(line, len, sizeof(line), dropped),
	    sizeof(line) - 1);
}

void
bw_log_event(enum bw_log_level level, const char *event, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	bw_log_vevent(level, event, "", fmt, ap);
	va_end(ap);
}
