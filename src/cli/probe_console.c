/* The console's conformance suite (spec/console.md): the hello and its
 * 48-byte greeting, reading replies (a 4-digit length, then that many bytes
 * of UTF-8), each request's cases (unknown ones and EXIT too), and the
 * suite's order; framing, hostile input and the secret are in
 * probe_console_more.c. One greeted session carries the requests; a case
 * whose reply broke the framing closes it and the next one opens another.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bulwark/util.h"
#include "cli/probe_console_int.h"
#include "cli/probe_int.h"

static const char *const spec_requests[] = {"TIME", "NAME", "RAND", "STAT",
					    "USRS", "FILS", "EXIT"};

/* --- the exchange -------------------------------------------------------- */

unsigned
cp_hello_ms(const struct probe *p)
{
	/* a server may make an address that guessed wait for its verdict */
	return p->timeout_ms + (p->secret != NULL ? DELAY_MS : 0);
}

/* "Hi", or "Hi <secret>": its length, 0 when it does not fit. */
size_t
cp_hello_bytes(const struct probe *p, char *b, size_t cap)
{
	int n = p->secret != NULL ? snprintf(b, cap, "Hi %s", p->secret)
				  : snprintf(b, cap, "Hi");

	return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* Opens c and sends the hello in pieces (0: one write), gap_ms apart. */
int
cp_hello(struct probe *p, struct pconn *c, size_t piece, unsigned gap_ms)
{
	char b[300];
	size_t n = cp_hello_bytes(p, b, sizeof(b));

	if (n == 0 || pc_open(p, c) != 0)
		return -1;
	return pc_send_slowly(c, b, n, piece, gap_ms);
}

/* Reads the greeting into g: 0 when 48 bytes came. */
int
cp_greeting(struct pconn *c, char g[GREETING_LEN + 1], size_t *got)
{
	int rc = pc_recv(c, g, GREETING_LEN, cp_hello_ms(c->p), got);

	g[*got] = '\0';
	return rc;
}

int
cp_read_reply(struct pconn *c, struct creply *r, unsigned ms)
{
	size_t got = 0, i;
	int rc;

	r->len = 0;
	r->got = 0;
	r->text[0] = '\0';
	rc = pc_recv(c, r->head, 4, ms, &got);
	r->head[got] = '\0';
	if (rc != 0)
		return r->rc = rc;
	for (i = 0; i < 4; i++) {
		if (r->head[i] < '0' || r->head[i] > '9')
			return r->rc = R_BADLEN;
	}
	r->len = (unsigned)strtoul(r->head, NULL, 10); /* 4 digits */
	rc = pc_recv(c, r->text, r->len, ms, &r->got);
	r->text[r->got] = '\0';
	return r->rc = rc != 0 ? R_SHORT : 0;
}

const char *
cp_reply_str(const struct creply *r, char *b, size_t cap)
{
	if (r->rc == PC_TIMEOUT)
		snprintf(b, cap, "no reply in time");
	else if (r->rc == PC_CLOSED)
		snprintf(b, cap, "the connection closed");
	else if (r->rc == R_BADLEN)
		snprintf(b, cap, "a length that is not 4 digits");
	else if (r->rc == R_SHORT)
		snprintf(b, cap, "%zu bytes of the %u its length said", r->got,
			 r->len);
	else if (r->rc != 0)
		snprintf(b, cap, "an error");
	else
		snprintf(b, cap, "`%.48s`%s", r->text,
			 r->len > 48 ? "..." : "");
	return b;
}

/* The reply's text without one newline at its end. */
const char *
cp_bare(struct creply *r)
{
	size_t n = strlen(r->text);

	if (n > 0 && r->text[n - 1] == '\n')
		r->text[--n] = '\0';
	if (n > 0 && r->text[n - 1] == '\r')
		r->text[--n] = '\0';
	return r->text;
}

static int
utf8_text(const struct creply *r)
{
	return memchr(r->text, '\0', r->len) == NULL && bw_utf8_valid(r->text);
}

/* A greeted session: 0, or -1 with the case skipped. */
int
cp_session(struct crun *cr)
{
	size_t got = 0;

	if (cr->greeted && cr->c.fd >= 0)
		return 0;
	pc_close(&cr->c);
	if (cr->hopeless) {
		probe_skip(cr->p, "no greeting");
		return -1;
	}
	if (cp_hello(cr->p, &cr->c, 0, 0) != 0 ||
	    cp_greeting(&cr->c, cr->greeting, &got) != 0) {
		pc_close(&cr->c);
		cr->hopeless = 1;
		probe_skip(cr->p, "no greeting");
		return -1;
	}
	cr->greeted = 1;
	return 0;
}

/* Sends req on the session and reads a well-formed reply into cr->r: 0,
 * or -1 with the case told (the session is then closed). */
static int
request(struct crun *cr, const char *req)
{
	struct probe *p = cr->p;
	char why[96];

	if (cp_session(cr) != 0)
		return -1;
	if (pc_send(&cr->c, req, 4) != 0 ||
	    cp_read_reply(&cr->c, &cr->r, p->timeout_ms) != 0)
		probe_fail(p, "%s", cp_reply_str(&cr->r, why, sizeof(why)));
	else if (!utf8_text(&cr->r))
		probe_fail(p, "the text is not valid UTF-8");
	else
		return 0;
	pc_close(&cr->c);
	cr->greeted = 0;
	return -1;
}

static void
greeting_case(struct crun *cr)
{
	struct probe *p = cr->p;
	const char *missing = NULL;
	char more[8];
	size_t got = 0, i;

	if (probe_begin(p, "console.hello.greeting", S_EX,
			"`Hi` is answered with exactly 48 bytes listing the "
			"requests, padded with spaces",
			0))
		return;
	if (cp_hello(p, &cr->c, 0, 0) != 0 ||
	    cp_greeting(&cr->c, cr->greeting, &got) != 0) {
		probe_fail(p, "%zu bytes came, 48 expected%s", got,
			   p->secret == NULL && got == 0
				   ? " (does the server want --secret?)"
				   : "");
		pc_close(&cr->c);
		cr->hopeless = 1;
		return;
	}
	cr->greeted = 1;
	for (i = 0; i < GREETING_LEN; i++) {
		if (cr->greeting[i] < 0x20 || cr->greeting[i] > 0x7e) {
			probe_fail(p, "byte %zu is not printable ASCII", i);
			return;
		}
	}
	for (i = 0; i < 7 && missing == NULL; i++) {
		if (strstr(cr->greeting, spec_requests[i]) == NULL)
			missing = spec_requests[i];
	}
	got = 0;
	(void)pc_recv(&cr->c, more, sizeof(more), NOTHING_MS, &got);
	if (got > 0) {
		probe_fail(p, "more than 48 bytes came");
		pc_close(&cr->c);
		cr->greeted = 0;
	} else if (missing != NULL) {
		probe_deviate(p, "it does not list %s", missing);
	} else {
		probe_pass(p, "`%s`", cr->greeting);
	}
}

/* --- requests ------------------------------------------------------------ */

static int
digits(const char **s, int n, int *v)
{
	*v = 0;
	while (n-- > 0) {
		if (**s < '0' || **s > '9')
			return -1;
		*v = *v * 10 + (**s - '0');
		(*s)++;
	}
	return 0;
}

/* Whether s is an ISO 8601 date and time with its zone (extended or
 * basic form): 0 with *t, else -1. */
int
cp_iso8601(const char *s, time_t *t)
{
	int y, mo, d, h, mi, sec, zh = 0, zm = 0, sign = 1, ext;

	if (digits(&s, 4, &y) != 0)
		return -1;
	ext = *s == '-';
	if ((ext && *s++ != '-') || digits(&s, 2, &mo) != 0 ||
	    (ext && *s++ != '-') || digits(&s, 2, &d) != 0 || *s++ != 'T' ||
	    digits(&s, 2, &h) != 0 || (ext && *s++ != ':') ||
	    digits(&s, 2, &mi) != 0 || (ext && *s++ != ':') ||
	    digits(&s, 2, &sec) != 0)
		return -1;
	if (*s == '.' || *s == ',') {
		if (*++s < '0' || *s > '9')
			return -1;
		while (*s >= '0' && *s <= '9')
			s++;
	}
	if (*s == 'Z') {
		s++;
	} else if (*s == '+' || *s == '-') {
		sign = *s++ == '-' ? -1 : 1;
		if (digits(&s, 2, &zh) != 0)
			return -1;
		if (*s == ':')
			s++;
		if (*s != '\0' && digits(&s, 2, &zm) != 0)
			return -1;
	} else {
		return -1; /* no zone */
	}
	if (*s != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 ||
	    mi > 59 || sec > 60 || zh > 14 || zm > 59)
		return -1;
	*t = (time_t)bw_utc_seconds(y, mo, d, h, mi, sec) -
	     sign * (zh * 3600 + zm * 60);
	return 0;
}

static void
time_case(struct crun *cr)
{
	struct probe *p = cr->p;
	time_t t;

	if (probe_begin(p, "console.request.time", S_REQ,
			"TIME: 4 ASCII digits, then that many bytes: the date "
			"and time, ISO 8601 with its zone",
			0) ||
	    request(cr, "TIME") != 0)
		return;
	if (cp_iso8601(cp_bare(&cr->r), &t) != 0)
		probe_fail(p, "`%s` is not ISO 8601 with a zone", cr->r.text);
	else
		probe_pass(p, "`%s`, %lld s from this machine's clock",
			   cr->r.text, (long long)(t - time(NULL)));
}

static void
name_case(struct crun *cr)
{
	struct probe *p = cr->p;

	if (probe_begin(p, "console.request.name", S_REQ,
			"NAME: the server's name and version", 0) ||
	    request(cr, "NAME") != 0)
		return;
	if (cp_bare(&cr->r)[0] == '\0')
		probe_fail(p, "an empty text");
	else if (strncmp(cr->r.text, "ERR", 3) == 0)
		probe_fail(p, "answered as unknown: `%.60s`", cr->r.text);
	else if (strpbrk(cr->r.text, "0123456789") == NULL)
		probe_deviate(p, "`%s` has no version number", cr->r.text);
	else
		probe_pass(p, "`%s`", cr->r.text);
}

static void
rand_case(struct crun *cr)
{
	struct probe *p = cr->p;
	unsigned i, seen = 0, distinct = 0;
	unsigned long v;
	char *end;

	if (probe_begin(p, "console.request.rand", S_REQ,
			"RAND: a random integer from 1 to 10 (asked 30 times)",
			0))
		return;
	for (i = 0; i < 30; i++) {
		if (request(cr, "RAND") != 0)
			return;
		v = strtoul(cp_bare(&cr->r), &end, 10);
		if (cr->r.text[0] < '0' || cr->r.text[0] > '9' ||
		    *end != '\0' || v < 1 || v > 10) {
			probe_fail(p, "reply %u was `%s`", i + 1, cr->r.text);
			return;
		}
		if (!(seen & (1u << v)))
			distinct++;
		seen |= 1u << v;
	}
	if (distinct == 1)
		probe_deviate(p, "30 times the same number");
	else
		probe_pass(p, "%u different numbers in 30", distinct);
}

/* The first of STAT's figures the spec names that its text does not
 * mention (in any case), or NULL. */
static const char *
unsaid(const struct crun *cr, const char *req)
{
	static const char *const figures[] = {"uptime", "connection", "client",
					      "file",	"bytes",      "upload"};
	size_t i;

	for (i = 0; strcmp(req, "STAT") == 0 && i < 6; i++) {
		if (strcasestr(cr->r.text, figures[i]) == NULL)
			return figures[i];
	}
	return NULL;
}

static void
listing(struct crun *cr, const char *id, const char *req, const char *clause)
{
	const char *missing;

	if (probe_begin(cr->p, id, S_REQ, clause, 0) || request(cr, req) != 0)
		return;
	if (strncmp(cr->r.text, "ERR", 3) == 0)
		probe_fail(cr->p, "answered as unknown: `%.60s`", cr->r.text);
	else if ((missing = unsaid(cr, req)) != NULL)
		probe_deviate(cr->p, "%u bytes of UTF-8, no `%s` in them",
			      cr->r.len, missing);
	else
		probe_pass(cr->p, "%u bytes of UTF-8", cr->r.len);
}

/* A request the spec does not have: a reply starting ERR, strict or not
 * (a DEVIATION when not); what follows on the connection is noted. */
static void
refused(struct crun *cr, const char *id, const char *clause, const char *req,
	int strict)
{
	struct probe *p = cr->p;
	const char *then = "";
	int rc;

	if (probe_begin(p, id, S_REQ, clause, 0) || request(cr, req) != 0)
		return;
	if ((rc = pc_closes(&cr->c, NOTHING_MS)) != 0) {
		then = rc == 1 ? " (then the server closed)"
			       : " (then more bytes came)";
		pc_close(&cr->c);
		cr->greeted = 0;
	}
	if (rc == PC_ERROR)
		probe_fail(p, "bytes came after the reply its length said");
	else if (strncmp(cr->r.text, "ERR", 3) == 0)
		probe_pass(p, "`%.60s`%s", cr->r.text, then);
	else if (!strict)
		probe_deviate(p, "answered `%.60s`", cr->r.text);
	else
		probe_fail(p, "`%.60s` does not start with ERR", cr->r.text);
}

static void
exit_case(struct crun *cr)
{
	struct probe *p = cr->p;

	if (probe_begin(p, "console.request.exit", S_REQ,
			"EXIT: `bye`, then the server closes", 0) ||
	    request(cr, "EXIT") != 0)
		return;
	if (strcmp(cp_bare(&cr->r), "bye") != 0)
		probe_fail(p, "`%s`, not `bye`", cr->r.text);
	else if (pc_closes(&cr->c, p->timeout_ms) != 1)
		probe_fail(p, "`bye`, but the connection stayed open");
	else
		probe_pass(p, "`bye`, closed");
	pc_close(&cr->c);
	cr->greeted = 0;
}

static void
request_cases(struct crun *cr)
{
	time_case(cr);
	name_case(cr);
	rand_case(cr);
	listing(cr, "console.request.stat", "STAT",
		"STAT: a well-formed reply (length, at most 9999 bytes of "
		"UTF-8) of uptime, connections, clients, files, bytes, "
		"uploads");
	listing(cr, "console.request.usrs", "USRS",
		"USRS: a well-formed reply (length, at most 9999 bytes of "
		"UTF-8)");
	listing(cr, "console.request.fils", "FILS",
		"FILS: a well-formed reply (length, at most 9999 bytes of "
		"UTF-8)");
	refused(cr, "console.request.unknown",
		"an unknown request (ABCD) gets a reply starting ERR", "ABCD",
		1);
	refused(cr, "console.request.lower_case",
		"requests are upper case: `time` is not TIME", "time", 0);
	refused(cr, "console.request.binary",
		"4 binary bytes get a reply starting ERR, in UTF-8",
		"\x00\xff\x1b\n", 1);
	exit_case(cr);
}

void
probe_console(struct probe *p)
{
	struct crun *cr = calloc(1, sizeof(*cr));

	if (cr == NULL) {
		fprintf(stderr, "bulwark probe: out of memory\n");
		return;
	}
	cr->p = p;
	cr->c.fd = -1;
	greeting_case(cr);
	request_cases(cr);
	cp_more_cases(cr);
	pc_close(&cr->c);
	free(cr);
}
