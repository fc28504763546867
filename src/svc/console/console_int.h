/* What the console's files share: the instance, the reply being built,
 * and the answer to one request. Internal to src/svc/console/.
 */
#ifndef BULWARK_SVC_CONSOLE_INT_H
#define BULWARK_SVC_CONSOLE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/util.h"
#include "svc/console/console.h"

#define GREETING     "bulwarkd 3: TIME NAME RAND STAT USRS FILS EXIT  "
#define GREETING_LEN 48
#define HI	     "Hi"
#define REQ_LEN	     4
#define LEN_DIGITS   4
#define TEXT_MAX     9999u	   /* a reply's text never exceeds this */
#define LEFT_OUT_MAX 96u	   /* room kept for the "left out" line */
#define CONSOLE_WANT 512u	   /* input buffered ahead: > "Hi " + 255 */
#define OUT_BUDGET   (32u * 1024u) /* stop answering until this drains */
/* A connection that greets and never asks anything is closed soon:
 * idle consoles must not hold the slots the operator needs. */
#define FIRST_REQUEST_MS (10u * 1000u)
/* Wrong secrets from one address: that many are judged at once; after
 * them, every `Hi <secret>` from it (right or wrong: the answer must not
 * tell which) is judged only after a delay, doubled with each failure. */
#define FAIL_FREE    3
#define DELAY_MIN_MS 250u
#define DELAY_MAX_MS 4000u

_Static_assert(sizeof(GREETING) - 1 == GREETING_LEN,
	       "the greeting is exactly 48 bytes");
_Static_assert(BW_CONSOLE_SECRET_CAP + 3 <= CONSOLE_WANT,
	       "Hi <secret> fits the input buffer");

struct bw_console {
	struct bw_console_cfg cfg;
	struct bw_host view; /* what it reads */
};

/* The length prefix and at most TEXT_MAX bytes of text, built in place. */
struct reply {
	char buf[LEN_DIGITS + TEXT_MAX + 1];
	size_t len; /* text bytes, after the prefix */
};

/* req.c */
/* The reply's text, after its prefix. */
char *console_reply_text(struct reply *r);
/* Appends formatted text whole, or nothing: BW_ETOOBIG if the text would
 * pass limit bytes. */
int console_reply_addf(struct reply *r, size_t limit, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The answer to the 4-byte request req into r (known or not): 1 if it was
 * EXIT (the connection finishes), else 0. */
int console_answer(struct bw_conn *c, const uint8_t req[REQ_LEN],
		   struct reply *r);
/* ISO 8601 in the daemon's time zone, into out[32]. */
void console_iso_time(int64_t t, char out[32]);

/* devs.c */
/* DEVS: the clients seen bending a protocol, most recent first. */
int console_do_devs(struct bw_conn *c, struct reply *r);

#endif
