/* What the console's conformance cases share across their two files: the
 * run (its greeted session and the last reply), the hello, reading a reply
 * (a 4-digit length and that many bytes) and checking a time.
 */
#ifndef BULWARK_CLI_PROBE_CONSOLE_INT_H
#define BULWARK_CLI_PROBE_CONSOLE_INT_H

#include <stddef.h>
#include <time.h>

#include "cli/probe_int.h"

#define GREETING_LEN 48u
#define TEXT_MAX     9999u
#define NOTHING_MS   300u  /* "nothing (more) arrives" */
#define DELAY_MS     4000u /* an address's wrong secrets delay a verdict */
#define GARBAGE	     (64u * 1024u)

#define S_EX	 "Exchange"
#define S_REQ	 "Requests"
#define S_SECRET "Secret"
#define S_HOST	 "Hostile input"

/* A reply: rc 0, PC_CLOSED / PC_TIMEOUT / PC_ERROR before the length came
 * whole, R_BADLEN (not 4 digits) or R_SHORT (fewer bytes than said). */
enum { R_BADLEN = -10, R_SHORT = -11 };

struct creply {
	int rc;
	char head[5];
	unsigned len;
	size_t got;
	char text[TEXT_MAX + 1];
};

struct crun {
	struct probe *p;
	struct pconn c; /* the greeted session */
	int greeted;
	int hopeless; /* a hello got no greeting: the cases that need one skip
		       */
	char greeting[GREETING_LEN + 1];
	struct creply r;
};

/* How long a greeting may take: the timeout, and with a secret the
 * longest wait a server may put on an address's verdict. */
unsigned cp_hello_ms(const struct probe *p);
/* "Hi", or "Hi <secret>", in b: its length, 0 when it does not fit. */
size_t cp_hello_bytes(const struct probe *p, char *b, size_t cap);
/* Opens c and sends the hello in pieces of piece bytes (0: one write),
 * gap_ms apart: 0 or -1. */
int cp_hello(struct probe *p, struct pconn *c, size_t piece, unsigned gap_ms);
/* Reads the greeting into g (NUL-terminated): 0 when 48 bytes came, else
 * pc_recv's code; *got says how many. */
int cp_greeting(struct pconn *c, char g[GREETING_LEN + 1], size_t *got);
/* Reads one reply within ms into r: r->rc, 0 when whole. */
int cp_read_reply(struct pconn *c, struct creply *r, unsigned ms);
/* "no reply in time", "`text`"...: what r was, in b. */
const char *cp_reply_str(const struct creply *r, char *b, size_t cap);
/* The reply's text without one newline at its end. */
const char *cp_bare(struct creply *r);
/* A greeted session on cr->c: 0, or -1 with the running case skipped. */
int cp_session(struct crun *cr);
/* Whether s is an ISO 8601 date and time with its zone (extended or basic
 * form): 0 with *t, else -1. */
int cp_iso8601(const char *s, time_t *t);

/* The framing, hostile and secret cases (probe_console_more.c). */
void cp_more_cases(struct crun *cr);

#endif
