/* One line per event, in a stable key=value form:
 *
 *   ts=2026-11-23T09:32:15.947Z level=info conn=12 msg="1028 upload of ..."
 *
 * conn= is there when the message starts with the connection id ("c12 ..."),
 * as callers write it; suppressed=N follows when the rate limit dropped
 * lines of the same kind. To stderr (journald) unless bw_log_open names a
 * file. Never log secrets.
 */
#ifndef BULWARK_LOG_H
#define BULWARK_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum bw_log_level {
	BW_LOG_DEBUG = 0,
	BW_LOG_INFO = 1,
	BW_LOG_WARN = 2,
	BW_LOG_ERROR = 3,
	BW_LOG_NONE = 4, /* as a minimum: nothing (a command's own output) */
};

void bw_log_set_level(enum bw_log_level min);
/* Every line names the node (node=NAME, its last field); "" or NULL: no
 * node field. Set once, before threads log. */
void bw_log_set_node(const char *name);
/* Logs to the file at path (appended, created 0640) instead of stderr:
 * 0 or -errno. */
int bw_log_open(const char *path);
/* Reopens that file (after a rotation); nothing when logging to stderr. */
int bw_log_reopen(void);
/* A daemon's log never waits for its reader: while logging to stderr and
 * stderr is a socket (journald's stream) or a pipe, a line that finds it
 * full is dropped rather than holding the thread that logs (the loop),
 * and the next line written says how many went (log_dropped=N). A line
 * begun is finished if its reader takes it within 10 ms. Call once,
 * before threads log. */
void bw_log_never_wait(void);
/* Each call site may write 50 lines in a burst, then 10 a second; the
 * next line written says how many were suppressed. */
void bw_log(enum bw_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* An event whose facts are fields, for fail2ban and log search rather
 * than for reading:
 *
 *   ts=... level=info event=client_registered conn=12 peer=10.0.0.7:40112
 *   service=vault client=alice
 *
 * fmt formats the fields ("client=%s bytes=%llu"); a value a peer chose goes
 * through bw_log_value. Rate-limited by fmt as bw_log is. bw_log_vevent puts
 * prefix (fields already formatted: the engine's conn= and peer=) first. */
void bw_log_event(enum bw_log_level level, const char *event, const char *fmt,
		  ...) __attribute__((format(printf, 3, 4)));
void bw_log_vevent(enum bw_log_level level, const char *event,
		   const char *prefix, const char *fmt, va_list ap)
	__attribute__((format(printf, 4, 0)));
/* s as a field's value in dst: as it is when it is one word of printable
 * ASCII without '"', '=' or '\\', else quoted with those and control bytes
 * escaped (cut short to fit cap). Returns dst. */
const char *bw_log_value(char *dst, size_t cap, const char *s);
/* Under systemd, stderr is journald's stream when JOURNAL_STREAM names it:
 * lines then begin with their priority ("<4>" for warn) so that
 * journalctl -p filters them. Call once, before threads log. */
void bw_log_detect_journal(void);
/* The message of the last error-level line, whether the level let it
 * through or not ("" if none since the last call), into out; then
 * forgotten. For a command that reports a cause itself (--check-config)
 * with the log silenced. */
void bw_log_take_error(char *out, size_t cap);

#define bw_debug(...) bw_log(BW_LOG_DEBUG, __VA_ARGS__)
#define bw_info(...)  bw_log(BW_LOG_INFO, __VA_ARGS__)
#define bw_warn(...)  bw_log(BW_LOG_WARN, __VA_ARGS__)
#define bw_error(...) bw_log(BW_LOG_ERROR, __VA_ARGS__)

#endif
