/* The console's conformance cases past the requests (spec/console.md,
 * "Exchange"): pipelining, a hello and a request in pieces, a client that
 * skips the hello, hostile input the server must survive, and last the
 * secret's refusal (a wrong secret counts against this address).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bulwark/crypto.h"
#include "cli/probe_console_int.h"
#include "cli/probe_int.h"

/* Whether a hello has been greeted: 0, or -1 with the case skipped (a
 * case that needs a greeting tells nothing more when none came). */
static int
greeted(struct crun *cr)
{
	if (!cr->hopeless)
		return 0;
	probe_skip(cr->p, "no greeting");
	return -1;
}

/* --- framing ------------------------------------------------------------- */

static void
pipelined(struct crun *cr)
{
	struct probe *p = cr->p;
	struct pconn c = {NULL, -1};
	char b[320], g[GREETING_LEN + 1], why[96];
	size_t n = cp_hello_bytes(p, b, sizeof(b) - 8), got = 0;
	time_t t;

	if (probe_begin(p, "console.framing.pipelined", S_EX,
			"Hi, TIME and EXIT in one write: the greeting, two "
			"replies, the close",
			0) ||
	    greeted(cr) != 0)
		return;
	memcpy(b + n, "TIMEEXIT", 8);
	if (n == 0 || pc_open(p, &c) != 0 || pc_send(&c, b, n + 8) != 0)
		probe_fail(p, "no connection");
	else if (cp_greeting(&c, g, &got) != 0)
		probe_fail(p, "%zu bytes of the greeting came", got);
	else if (cp_read_reply(&c, &cr->r, p->timeout_ms) != 0 ||
		 cp_iso8601(cp_bare(&cr->r), &t) != 0)
		probe_fail(p, "TIME got %s",
			   cp_reply_str(&cr->r, why, sizeof(why)));
	else if (cp_read_reply(&c, &cr->r, p->timeout_ms) != 0 ||
		 strcmp(cp_bare(&cr->r), "bye") != 0)
		probe_fail(p, "EXIT got %s",
			   cp_reply_str(&cr->r, why, sizeof(why)));
	else if (pc_closes(&c, p->timeout_ms) != 1)
		probe_fail(p, "`bye`, but the connection stayed open");
	else
		probe_pass(p, "greeting, time, bye, closed");
	pc_close(&c);
}

static void
split_hello(struct crun *cr)
{
	struct probe *p = cr->p;
	struct pconn c = {NULL, -1};
	char b[300], g[GREETING_LEN + 1];
	size_t n = cp_hello_bytes(p, b, sizeof(b)), got = 0;

	if (probe_begin(p, "console.framing.split_hello", S_EX,
			"the hello in three pieces, 300 ms apart, gets the "
			"greeting",
			0) ||
	    greeted(cr) != 0)
		return;
	if (cp_hello(p, &c, n < 3 ? 1 : (n + 2) / 3, 300) != 0)
		probe_fail(p, "no connection");
	else if (cp_greeting(&c, g, &got) != 0)
		probe_fail(p, "%zu bytes of the greeting came", got);
	else
		probe_pass(p, "48 bytes");
	pc_close(&c);
}

static void
dribble(struct crun *cr)
{
	struct probe *p = cr->p;
	char why[96];

	if (probe_begin(p, "console.framing.dribble", S_EX,
			"a request sent a byte at a time, 300 ms apart (under "
			"a second), is served",
			0) ||
	    cp_session(cr) != 0)
		return;
	if (pc_send_slowly(&cr->c, "NAME", 4, 1, 300) != 0) {
		/* closed under the dribble: the send failed (a reply of an
		 * earlier request is not this one's) */
		probe_deviate(p, "closed while the request dribbled in: the "
				 "server's request timeout is under a second");
		pc_close(&cr->c);
		cr->greeted = 0;
	} else if (cp_read_reply(&cr->c, &cr->r, p->timeout_ms) != 0) {
		if (cr->r.rc == PC_CLOSED)
			probe_deviate(p, "closed: the server's request "
					 "timeout is under a second");
		else
			probe_fail(p, "%s",
				   cp_reply_str(&cr->r, why, sizeof(why)));
		pc_close(&cr->c);
		cr->greeted = 0;
	} else {
		probe_pass(p, "`%s`", cr->r.text);
	}
}

static void
no_hello(struct crun *cr)
{
	struct probe *p = cr->p;
	struct pconn c = {NULL, -1};
	int rc;

	if (probe_begin(p, "console.hello.missing", S_EX,
			"a client that does not send Hi first (TIME) is "
			"disconnected, with no greeting",
			0))
		return;
	if (pc_open(p, &c) != 0 || pc_send(&c, "TIME", 4) != 0)
		probe_fail(p, "no connection");
	else if ((rc = pc_closes(&c, p->timeout_ms)) == 1)
		probe_pass(p, "closed, nothing said");
	else if (rc == PC_ERROR)
		probe_fail(p, "answered before a Hi");
	else
		probe_deviate(p,
			      "still open after %u ms (the spec gives no "
			      "time)",
			      p->timeout_ms);
	pc_close(&c);
}

/* --- hostile input and the secret ---------------------------------------- */

/* Whether a new session gets its greeting and a TIME; else the run
 * stops. */
static int
serves(struct crun *cr)
{
	struct pconn c = {NULL, -1};
	char g[GREETING_LEN + 1];
	size_t got = 0;
	int ok;

	ok = cp_hello(cr->p, &c, 0, 0) == 0 && cp_greeting(&c, g, &got) == 0 &&
	     pc_send(&c, "TIME", 4) == 0 &&
	     cp_read_reply(&c, &cr->r, cr->p->timeout_ms) == 0;
	pc_close(&c);
	if (!ok)
		cr->p->stopped = 1;
	return ok;
}

/* Opens a connection (greeted when hi), sends n bytes of b, then, when
 * others is set, checks another session is served meanwhile; resets. */
static void
hostile(struct crun *cr, const char *id, const char *clause, int hi,
	const void *b, size_t n, int others)
{
	struct probe *p = cr->p;
	struct pconn c = {NULL, -1};
	char g[GREETING_LEN + 1];
	size_t got = 0;
	int ok = 1;

	if (probe_begin(p, id, S_HOST, clause, P_HOSTILE) || greeted(cr) != 0)
		return;
	if (hi ? cp_hello(p, &c, 0, 0) == 0 && cp_greeting(&c, g, &got) == 0
	       : pc_open(p, &c) == 0)
		(void)pc_send(&c, b, n);
	if (others)
		ok = serves(cr);
	pc_abort(&c);
	if (ok && serves(cr))
		probe_pass(p, "still serving");
	else
		probe_fail(p, "the server no longer greets and answers TIME");
}

static void
hostile_cases(struct crun *cr)
{
	enum { UNREAD = 8000 };
	uint8_t *g = malloc(GARBAGE);
	size_t i;

	if (g == NULL || bw_random(g, GARBAGE) != 0) {
		free(g);
		return;
	}
	hostile(cr, "console.hostile.garbage",
		"64 KiB of random bytes after the greeting, then a reset, "
		"leave the server serving",
		1, g, GARBAGE, 0);
	hostile(cr, "console.hostile.garbage_first",
		"64 KiB of random bytes instead of Hi, then a reset, leave "
		"the server serving",
		0, g, GARBAGE, 0);
	hostile(cr, "console.hostile.half_request",
		"half a request and a reset leave the server serving", 1, "TI",
		2, 0);
	for (i = 0; i < UNREAD; i++)
		memcpy(g + 4 * i, "RAND", 4);
	hostile(cr, "console.hostile.unread",
		"8000 requests whose replies are never read do not stop the "
		"server serving others",
		1, g, 4 * UNREAD, 1);
	free(g);
}

static void
wrong_secret(struct crun *cr)
{
	struct probe *p = cr->p;
	struct pconn c = {NULL, -1};
	char b[300];
	size_t n = cp_hello_bytes(p, b, sizeof(b));
	int rc;

	if (probe_begin(p, "console.secret.wrong", S_SECRET,
			"a wrong secret is refused without detail: no "
			"greeting, the connection closed",
			P_HOSTILE))
		return;
	if (p->secret == NULL || p->secret[0] == '\0' || n == 0) {
		probe_skip(p, "needs --secret");
		return;
	}
	b[n - 1] = b[n - 1] == 'x' ? 'y' : 'x';
	if (pc_open(p, &c) != 0 || pc_send(&c, b, n) != 0)
		probe_fail(p, "no connection");
	else if ((rc = pc_closes(&c, cp_hello_ms(p))) == 1)
		probe_pass(p, "closed, nothing said");
	else if (rc == PC_ERROR)
		probe_fail(p, "bytes came for a wrong secret");
	else
		probe_fail(p, "still open after %u ms", cp_hello_ms(p));
	pc_close(&c);
}

void
cp_more_cases(struct crun *cr)
{
	pipelined(cr);
	split_hello(cr);
	dribble(cr);
	no_hello(cr);
	hostile_cases(cr);
	wrong_secret(cr);
}
