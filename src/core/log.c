/* Logging: one line per event on stderr with a UTC timestamp and a level.
 * Lines are written with a single write() so concurrent writers do not
 * interleave. Each call site (format string) has a token bucket, so a peer
 * that makes the daemon repeat one line cannot flood the log: what is
 * dropped is counted and reported on the next line of that kind.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "bulwark/log.h"

static enum bw_log_level min_level = BW_LOG_INFO;

#define KINDS	    256 /* buckets, by format string address */
#define BURST	    50	/* lines of one kind in a burst */
#define PER_SECOND  10	/* then this many a second */
#define TOKEN_SCALE 1000u

struct kind {
	const char *fmt;
	uint64_t tokens; /* in 1/TOKEN_SCALE lines */
	uint64_t last_ms;
	unsigned long long suppressed;
};

static struct kind kinds[KINDS];
static int limited = 1;
static pthread_mutex_t kinds_mu = PTHREAD_MUTEX_INITIALIZER;

void
bw_log_set_limit(int on)
{
	limited = on;
}

static uint64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* 1 if a line of this kind may be written now; *dropped is how many of
 * its kind were dropped since the last one written. */
static int
take_token(const char *fmt, unsigned long long *dropped)
{
	struct kind *k;
	uint64_t now = mono_ms(), add;
	int ok;

	*dropped = 0;
	if (!limited)
		return 1;
	k = &kinds[((uintptr_t)fmt >> 3) % KINDS];
	pthread_mutex_lock(&kinds_mu);
	if (k->fmt != fmt) { /* a new kind takes the bucket over */
		k->fmt = fmt;
		k->tokens = (uint64_t)BURST * TOKEN_SCALE;
		k->last_ms = now;
		k->suppressed = 0;
	}
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
bw_log_set_level(enum bw_log_level min)
{
	min_level = min;
}

static void vlog(enum bw_log_level level, unsigned long long dropped,
		 const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

static void
vlog(enum bw_log_level level, unsigned long long dropped, const char *fmt,
     va_list ap)
{
	static const char *names[] = {"debug", "info", "warn", "error"};
	char line[1024];
	struct timeval tv;
	struct tm tm;
	int n, m;
	size_t len;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = snprintf(
		line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s ",
		tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000), names[level]);
	if (n < 0)
		return;
	m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	if (m < 0)
		return;
	len = (size_t)n + (size_t)m;
	if (len > sizeof(line) - 80)
		len = sizeof(line) - 80;
	if (dropped > 0) {
		m = snprintf(line + len, sizeof(line) - len,
			     " (%llu similar lines suppressed)", dropped);
		if (m > 0)
			len += (size_t)m;
	}
	line[len++] = '\n';
	(void)!write(STDERR_FILENO, line, len);
}

void
bw_log(enum bw_log_level level, const char *fmt, ...)
{
	unsigned long long dropped;
	va_list ap;

	if (level < min_level || !take_token(fmt, &dropped))
		return;
	va_start(ap, fmt);
	vlog(level, dropped, fmt, ap);
	va_end(ap);
}

void
bw_fatal(const char *fmt, ...)
{
	va_list ap;

	fputs("fatal: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}
