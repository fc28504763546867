/* Logging: one line per event on stderr with a UTC timestamp and a level.
 * Lines are written with a single write() so concurrent writers do not
 * interleave.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "bulwark/log.h"

static enum bw_log_level min_level = BW_LOG_INFO;

void
bw_log_set_level(enum bw_log_level min)
{
	min_level = min;
}

static void vlog(enum bw_log_level level, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

static void
vlog(enum bw_log_level level, const char *fmt, va_list ap)
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
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	(void)!write(STDERR_FILENO, line, len);
}

void
bw_log(enum bw_log_level level, const char *fmt, ...)
{
	va_list ap;

	if (level < min_level)
		return;
	va_start(ap, fmt);
	vlog(level, fmt, ap);
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
