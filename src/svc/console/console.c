/* The operator console (docs/console.md): `Hi` (or `Hi <secret>`), a 48-byte
 * greeting, then 4-byte requests answered with a 4-digit length and UTF-8
 * text. Every answer comes from the running daemon: server counters and the
 * registry in RAM, never from files.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
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

_Static_assert(sizeof(GREETING) - 1 == GREETING_LEN,
	       "the greeting is exactly 48 bytes");
_Static_assert(BW_CONSOLE_SECRET_CAP + 3 <= CONSOLE_WANT,
	       "Hi <secret> fits the input buffer");

struct bw_console {
	struct bw_console_cfg cfg;
	struct bw_host view; /* what it reads */
};

enum cstate {
	C_HELLO, /* waiting for `Hi` / `Hi <secret>` */
	C_REQ,	 /* greeted: serving 4-byte requests */
	C_DONE,	 /* EXIT answered: closing */
};

struct console_conn {
	enum cstate st;
	int stalled; /* requests wait for the output to drain */
};

#define CC(c)  ((struct console_conn *)(c)->state)
#define ULL(x) ((unsigned long long)(x))

/* --- reply text ----------------------------------------------------------
 */

/* The length prefix and at most TEXT_MAX bytes of text, built in place. */
struct reply {
	char buf[LEN_DIGITS + TEXT_MAX + 1];
	size_t len; /* text bytes, after the prefix */
};

static char *
reply_text(struct reply *r)
{
	return r->buf + LEN_DIGITS;
}

/* Appends formatted text whole, or nothing: BW_ETOOBIG if the text would
 * pass limit bytes. */
static int __attribute__((format(printf, 3, 4)))
reply_addf(struct reply *r, size_t limit, const char *fmt, ...)
{
	size_t room = TEXT_MAX + 1 - r->len;
	va_list ap;
	int n;

	if (limit > TEXT_MAX)
		limit = TEXT_MAX;
	va_start(ap, fmt);
	n = vsnprintf(reply_text(r) + r->len, room, fmt, ap);
	va_end(ap);
	if (n < 0 || r->len + (size_t)n > limit) {
		reply_text(r)[r->len] = '\0';
		return BW_ETOOBIG;
	}
	r->len += (size_t)n;
	return 0;
}

static int
reply_send(struct bw_conn *c, struct reply *r)
{
	char digits[LEN_DIGITS + 1];

	snprintf(digits, sizeof(digits), "%04u", (unsigned)r->len);
	memcpy(r->buf, digits, LEN_DIGITS);
	return bw_conn_send(c, r->buf, LEN_DIGITS + r->len);
}

/* ISO 8601 in the daemon's time zone, e.g. 2026-11-21T05:00:00+00:00. */
static void
iso_time(int64_t t, char out[32])
{
	time_t tt = (time_t)t;
	struct tm tm;
	long off;

	if (localtime_r(&tt, &tm) == NULL || tm.tm_year < -1900 ||
	    tm.tm_year > 9999 - 1900 ||
	    strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
		snprintf(out, 32, "%s", "0000-00-00T00:00:00+00:00");
		return;
	}
	off = tm.tm_gmtoff / 60;
	snprintf(out + strlen(out), 32 - strlen(out), "%c%02ld:%02ld",
		 off < 0 ? '-' : '+', (off < 0 ? -off : off) / 60,
		 (off < 0 ? -off : off) % 60);
}

/* --- requests ------------------------------------------------------------
 */

static int
do_time(struct bw_conn *c, struct reply *r)
{
	char t[32];

	(void)c;
	iso_time(bw_time_s(), t);
	return reply_addf(r, TEXT_MAX, "%s", t);
}

static int
do_name(struct bw_conn *c, struct reply *r)
{
	(void)c;
	return reply_addf(r, TEXT_MAX, "bulwarkd %s", BW_VERSION);
}

static int
do_rand(struct bw_conn *c, struct reply *r)
{
	uint8_t b;

	(void)c;
	do { /* 250 = 25 * 10: rejecting the rest keeps 1..10 uniform */
		if (bw_random(&b, 1) != 0)
			return reply_addf(r, TEXT_MAX,
					  "ERR no random numbers available");
	} while (b >= 250);
	return reply_addf(r, TEXT_MAX, "%u", b % 10u + 1u);
}

struct stat_out {
	struct reply *r;
	int rc;
};

static void
add_stat(void *arg, const char *key, const char *label, uint64_t value)
{
	struct stat_out *o = arg;

	(void)key;
	if (o->rc == 0)
		o->rc = reply_addf(o->r, TEXT_MAX, "%s: %llu\n", label,
				   ULL(value));
}

static int
do_stat(struct bw_conn *c, struct reply *r)
{
	const struct bw_console *cs = bw_conn_inst(c);
	const struct bw_engine *e = cs->view.eng;
	const struct bw_registry *reg = cs->view.reg;
	int64_t now = bw_time_s(), up = now - cs->view.started_s;
	struct stat_out o = {r, 0};
	char since[32];
	unsigned i;
	int rc;

	if (up < 0)
		up = 0;
	iso_time(cs->view.started_s, since);
	rc = reply_addf(r, TEXT_MAX,
			"uptime: %lldd %02lldh %02lldm %02llds (%lld s, since "
			"%s)\nconnections:",
			(long long)(up / 86400), (long long)(up / 3600 % 24),
			(long long)(up / 60 % 60), (long long)(up % 60),
			(long long)up, since);
	for (i = 0; rc == 0 && i < e->lis_n; i++)
		rc = reply_addf(r, TEXT_MAX, "%s %s %u", i ? "," : "",
				e->lis[i].name, e->lis[i].conns_n);
	if (rc == 0)
		rc = reply_addf(r, TEXT_MAX,
				"\nclients: %llu\nfiles: %llu\n"
				"bytes stored: %llu\n",
				ULL(reg->clients_n), ULL(reg->files_n),
				ULL(reg->bytes_stored));
	if (rc == 0 && cs->view.stats != NULL) {
		cs->view.stats(cs->view.stats_arg, add_stat, &o);
		rc = o.rc;
	}
	return rc;
}

struct list_walk {
	struct reply *r;
	uint64_t shown;
	int full;
};

static int
add_client(void *arg, void *val)
{
	struct list_walk *w = arg;
	const struct bw_client *cl = val;
	char name[BW_ESC_CAP], hex[2 * BW_ID_LEN + 1], seen[32];

	bw_escape_display(cl->name, name, sizeof(name));
	bw_hex_encode(cl->id, BW_ID_LEN, hex);
	iso_time(cl->last_seen, seen);
	if (reply_addf(w->r, TEXT_MAX - LEFT_OUT_MAX,
		       "%s\t%s\t%s\t%llu\t%llu\n", name, hex, seen,
		       ULL(cl->queued_n), ULL(cl->queued_bytes)) != 0) {
		w->full = 1;
		return 1;
	}
	w->shown++;
	return 0;
}

static int
add_file(void *arg, void *val)
{
	struct list_walk *w = arg;
	const struct bw_file *f = val;
	char owner[BW_ESC_CAP], name[BW_ESC_CAP];

	bw_escape_display(f->owner->name, owner, sizeof(owner));
	bw_escape_display(f->file_name, name, sizeof(name));
	if (reply_addf(w->r, TEXT_MAX - LEFT_OUT_MAX, "%s\t%s\t%llu\t%s\n",
		       owner, name, ULL(f->size),
		       f->verified ? "yes" : "no") != 0) {
		w->full = 1;
		return 1;
	}
	w->shown++;
	return 0;
}

/* Ends a list: a line with how many entries did not fit, if any. */
static int
list_end(struct list_walk *w, uint64_t total, const char *what)
{
	if (total == 0)
		return reply_addf(w->r, TEXT_MAX, "no %s\n", what);
	if (!w->full || total <= w->shown)
		return 0;
	return reply_addf(w->r, TEXT_MAX,
			  "%llu more %s left out (a reply holds at most %u "
			  "bytes)\n",
			  ULL(total - w->shown), what, TEXT_MAX);
}

static int
do_usrs(struct bw_conn *c, struct reply *r)
{
	const struct bw_registry *reg =
		((const struct bw_console *)bw_conn_inst(c))->view.reg;
	struct list_walk w = {r, 0, 0};

	if (reg->clients_n > 0 &&
	    reply_addf(r, TEXT_MAX,
		       "name\tid\tlast seen\tqueued\tqueued bytes\n") != 0)
		return BW_ETOOBIG;
	(void)bw_registry_each_client(reg, add_client, &w);
	return list_end(&w, reg->clients_n, "clients");
}

static int
do_fils(struct bw_conn *c, struct reply *r)
{
	const struct bw_registry *reg =
		((const struct bw_console *)bw_conn_inst(c))->view.reg;
	struct list_walk w = {r, 0, 0};

	if (reg->files_n > 0 &&
	    reply_addf(r, TEXT_MAX, "owner\tfile\tsize\tverified\n") != 0)
		return BW_ETOOBIG;
	(void)bw_registry_each_file(reg, add_file, &w);
	return list_end(&w, reg->files_n, "files");
}

static int
do_exit(struct bw_conn *c, struct reply *r)
{
	(void)c;
	return reply_addf(r, TEXT_MAX, "bye");
}

static const struct {
	char req[REQ_LEN + 1];
	int (*fn)(struct bw_conn *c, struct reply *r);
} requests[] = {
	{"TIME", do_time}, {"NAME", do_name}, {"RAND", do_rand},
	{"STAT", do_stat}, {"USRS", do_usrs}, {"FILS", do_fils},
	{"EXIT", do_exit},
};

#define REQUESTS_N (sizeof(requests) / sizeof(requests[0]))

static int
do_unknown(const uint8_t *p, struct reply *r)
{
	char shown[4 * REQ_LEN + 1], upper[REQ_LEN + 1];
	size_t i, o = 0, k;
	int lower = 0;

	for (i = 0; i < REQ_LEN; i++) {
		if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\'' && p[i] != '\\')
			shown[o++] = (char)p[i];
		else
			o += (size_t)snprintf(shown + o, sizeof(shown) - o,
					      "\\x%02x", p[i]);
		upper[i] =
			(char)(p[i] >= 'a' && p[i] <= 'z' ? p[i] - 32 : p[i]);
		lower |= p[i] >= 'a' && p[i] <= 'z';
	}
	shown[o] = '\0';
	upper[REQ_LEN] = '\0';
	for (k = 0; lower && k < REQUESTS_N; k++) {
		if (memcmp(upper, requests[k].req, REQ_LEN) == 0)
			return reply_addf(r, TEXT_MAX,
					  "ERR unknown request '%s'; requests "
					  "are upper case: try '%s'",
					  shown, requests[k].req);
	}
	return reply_addf(r, TEXT_MAX,
			  "ERR unknown request '%s'; try TIME NAME RAND STAT "
			  "USRS FILS EXIT",
			  shown);
}

/* --- the state machine ---------------------------------------------------
 */

/* A greeted console is a person at a prompt: the listener's idle timeout
 * (minutes) applies again after each answer. */
static void
extend_idle(struct bw_conn *c)
{
	bw_conn_idle_deadline(c, c->lis->cfg.lim.idle_ms);
}

/* Step results: > 0 consumed input, 0 needs more, < 0 close now. */

static int
hello_step(struct bw_conn *c)
{
	const char *secret =
		((const struct bw_console *)bw_conn_inst(c))->cfg.secret;
	size_t slen = strlen(secret), need = slen ? 3 + slen : 2;
	size_t plen = slen ? 3 : 2, n = c->in.len < plen ? c->in.len : plen;
	uint8_t *p = bw_buf_head(&c->in);
	char want[3 + BW_CONSOLE_SECRET_CAP];
	int ok;

	/* "Hi" (and the space) is not secret: refuse a wrong start early */
	if (memcmp(p, "Hi ", n) != 0) {
		bw_info("c%llu console: %s did not start with '%s', "
			"disconnecting",
			ULL(c->id), c->peer, slen ? "Hi <secret>" : HI);
		return BW_EPROTO;
	}
	if (c->in.len < need)
		return 0;
	if (slen > 0) {
		snprintf(want, sizeof(want), "Hi %s", secret);
		ok = bw_ct_equal(p, want, need);
		bw_wipe(want, sizeof(want));
		bw_wipe(p, need);
		if (!ok) {
			bw_warn("c%llu console: wrong secret from %s, "
				"disconnecting",
				ULL(c->id), c->peer);
			return BW_EPROTO;
		}
	}
	bw_buf_consume(&c->in, need);
	bw_conn_request_deadline(c, 0);
	bw_conn_idle_deadline(c, FIRST_REQUEST_MS);
	/* with a secret, knowing it proves an operator; without one, a
	 * complete request does (request_step): until then a full console
	 * closes this connection first for a newcomer */
	if (slen > 0)
		bw_conn_proven(c);
	CC(c)->st = C_REQ;
	bw_info("c%llu console: operator connected from %s", ULL(c->id),
		c->peer);
	return bw_conn_send(c, GREETING, GREETING_LEN) == 0 ? 1 : BW_ECLOSED;
}

static int
request_step(struct bw_conn *c)
{
	uint8_t req[REQ_LEN];
	struct reply r;
	size_t k;

	memcpy(req, bw_buf_head(&c->in), REQ_LEN);
	bw_buf_consume(&c->in, REQ_LEN);
	bw_conn_request_deadline(c, 0);
	bw_conn_proven(c);
	r.len = 0;
	reply_text(&r)[0] = '\0';
	for (k = 0; k < REQUESTS_N; k++) {
		if (memcmp(req, requests[k].req, REQ_LEN) == 0)
			break;
	}
	if (k < REQUESTS_N) {
		bw_debug("c%llu console %s", ULL(c->id), requests[k].req);
		if (requests[k].fn(c, &r) != 0) {
			/* only a list overruns, and it has room kept */
			r.len = 0;
			(void)reply_addf(&r, TEXT_MAX, "ERR reply too long");
		}
	} else {
		bw_debug("c%llu console: unknown request", ULL(c->id));
		(void)do_unknown(req, &r);
	}
	if (reply_send(c, &r) != 0)
		return BW_ECLOSED;
	if (k < REQUESTS_N && requests[k].fn == do_exit) {
		CC(c)->st = C_DONE;
		bw_conn_finish(c);
	} else {
		extend_idle(c);
	}
	return 1;
}

static int
console_input(struct bw_conn *c)
{
	struct console_conn *cc = CC(c);
	int rc = 1;

	cc->stalled = 0;
	while (rc > 0 && cc->st != C_DONE && !bw_conn_dead(c)) {
		if (c->in.len == 0) {
			if (cc->st == C_REQ)
				bw_conn_request_deadline(c, 0);
			return 0;
		}
		/* the first byte of a request starts its deadline (the
		 * engine started the one for `Hi` at accept) */
		if (c->req_deadline_ms == 0)
			bw_conn_request_deadline(c, c->lis->cfg.lim.request_ms);
		if (cc->st == C_HELLO) {
			rc = hello_step(c);
			continue;
		}
		if (c->in.len < REQ_LEN)
			return 0;
		if (c->out.len >= OUT_BUDGET) {
			cc->stalled = 1; /* resumed by console_drained */
			return 0;
		}
		rc = request_step(c);
	}
	return rc < 0 ? rc : 0;
}

static void
console_drained(struct bw_conn *c)
{
	struct console_conn *cc = CC(c);

	if (cc != NULL && cc->stalled && !bw_conn_dead(c)) {
		cc->stalled = 0;
		bw_conn_kick(c);
	}
}

static int
console_open(struct bw_conn *c)
{
	if ((c->state = calloc(1, sizeof(struct console_conn))) == NULL)
		return BW_ENOMEM;
	c->want = CONSOLE_WANT;
	return 0;
}

static void
console_close(struct bw_conn *c)
{
	bw_buf_fini_wipe(&c->in); /* may hold a secret being typed */
	free(c->state);
}

static int
console_busy(const struct bw_conn *c)
{
	const struct console_conn *cc = c->state;

	return cc != NULL && cc->st == C_REQ && c->in.len > 0;
}

void
bw_console_cfg_defaults(struct bw_console_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	/* 4-letter requests; replies up to TEXT_MAX; an operator at a prompt
	 * may stay 5 minutes */
	cfg->limits = (struct bw_conn_limits){4096, 64u * 1024u,
					      5u * 60u * 1000u, 10000};
}

static int
console_new(const struct bw_host *h, const void *cfg, void **out)
{
	struct bw_console *cs;

	if ((cs = calloc(1, sizeof(*cs))) == NULL)
		return BW_ENOMEM;
	cs->cfg = *(const struct bw_console_cfg *)cfg;
	cs->view = *h;
	*out = cs;
	return 0;
}

static void
console_free(void *inst)
{
	struct bw_console *cs = inst;

	if (cs == NULL)
		return;
	bw_wipe(cs->cfg.secret, sizeof(cs->cfg.secret));
	free(cs);
}

static const struct bw_service console_service = {
	.name = "console",
	.on_open = console_open,
	.on_input = console_input,
	.on_drained = console_drained,
	.on_close = console_close,
	.busy = console_busy,
};

static void
console_reload(void *inst, const void *cfg)
{
	struct bw_console *cs = inst;

	bw_wipe(cs->cfg.secret, sizeof(cs->cfg.secret));
	cs->cfg = *(const struct bw_console_cfg *)cfg; /* the next greeting */
}

const struct bw_module bw_console_module = {
	.name = "console",
	.init = console_new,
	.fini = console_free,
	.reload = console_reload,
	.service = &console_service,
};
