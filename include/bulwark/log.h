/* One line per event on stderr: "<UTC time> <level> <message>". Callers put
 * the connection id first in the message ("c12 ..."). Never log secrets.
 */
#ifndef BULWARK_LOG_H
#define BULWARK_LOG_H

enum bw_log_level {
	BW_LOG_DEBUG = 0,
	BW_LOG_INFO = 1,
	BW_LOG_WARN = 2,
	BW_LOG_ERROR = 3,
};

void bw_log_set_level(enum bw_log_level min);
/* On by default: each call site may write 50 lines in a burst, then 10 a
 * second; the next line written says how many were suppressed. */
void bw_log_set_limit(int on);
void bw_log(enum bw_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define bw_debug(...) bw_log(BW_LOG_DEBUG, __VA_ARGS__)
#define bw_info(...)  bw_log(BW_LOG_INFO, __VA_ARGS__)
#define bw_warn(...)  bw_log(BW_LOG_WARN, __VA_ARGS__)
#define bw_error(...) bw_log(BW_LOG_ERROR, __VA_ARGS__)

/* Prints "fatal: <message>" and exits 1. For start-up and broken invariants
 * only, never for anything a peer can cause. */
void bw_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)))
__attribute__((noreturn));

#endif
