/* The operator console (docs/console.md): `Hi` (or `Hi <secret>`), a 48-byte
 * greeting, then 4-byte requests answered with a 4-digit length and UTF-8
 * text (console_req.c). Every answer comes from the running daemon: server
 * counters and the registry in RAM, never from files. Here: the
 * connection's state machine and the service.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bulwark/addrtab.h"
#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/console/console_int.h"

enum cstate {
	C_HELLO, /* waiting for `Hi` / `Hi <secret>` */
	C_REQ,	 /* greeted: serving 4-byte requests */
	C_DONE,	 /* EXIT answered: closing */
};

struct console_conn {
	enum cstate st;
	int stalled; /* requests wait for the output to drain */
	/* its address's earlier wrong secrets delay the verdict: waited
	 * (0 none yet, 1 running, 2 over) on delay_t */
	int delayed;
	struct bw_timer delay_t;
	struct bw_conn *c;
};

#define CC(c) ((struct console_conn *)(c)->state)

static int
reply_send(struct bw_conn *c, struct reply *r)
{
	char digits[LEN_DIGITS + 1];

	snprintf(digits, sizeof(digits), "%04u", (unsigned)r->len);
	memcpy(r->buf, digits, LEN_DIGITS);
	return bw_conn_send(c, r->buf, LEN_DIGITS + r->len);
}

/* --- the state machine ---------------------------------------------------
 */

/* A greeted console is a person at a prompt: the listener's idle timeout
 * (minutes) applies again after each answer. */
static void
extend_idle(struct bw_conn *c)
{
	bw_conn_idle_deadline(c, bw_conn_limits(c)->idle_ms);
}

/* Step results: > 0 consumed input, 0 needs more, < 0 close now. */

/* How long the verdict on a secret from c's address waits: nothing for
 * its first FAIL_FREE wrong ones, then DELAY_MIN_MS doubled with each,
 * at most DELAY_MAX_MS. Its connections at once still guess as many
 * times together, but each waits for its answer; and a connection
 * evicted meanwhile (it has not proven itself) learns nothing. */
static unsigned
verdict_delay(const struct bw_conn *c)
{
	unsigned strikes =
		c->addr != NULL ? bw_addr_strikes(c->addr, bw_now_ms()) : 0;

	if (strikes < FAIL_FREE)
		return 0;
	strikes -= FAIL_FREE;
	return strikes >= 4 ? DELAY_MAX_MS : DELAY_MIN_MS << strikes;
}

static void
on_delay(void *arg)
{
	struct console_conn *cc = arg;

	cc->delayed = 2;
	bw_conn_pause(cc->c, 0);
	bw_conn_kick(cc->c);
}

/* 1 if the verdict waits (c paused until on_delay), else 0. */
static int
verdict_waits(struct bw_conn *c)
{
	struct console_conn *cc = CC(c);
	unsigned ms;

	if (cc->delayed != 0 || (ms = verdict_delay(c)) == 0)
		return cc->delayed == 1;
	if (bw_loop_timer_start(c->eng->loop, &cc->delay_t, ms, on_delay, cc) !=
	    0)
		return 0; /* judged now rather than never */
	cc->delayed = 1;
	/* the wait is ours: not the peer's request time */
	bw_conn_request_deadline(c, 0);
	bw_conn_pause(c, 1);
	return 1;
}

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
		bw_conn_event(c, BW_LOG_INFO, "console_refused",
			      "reason=no_greeting");
		return BW_EPROTO;
	}
	if (c->in.len < need)
		return 0;
	if (slen > 0) {
		if (verdict_waits(c))
			return 0;
		snprintf(want, sizeof(want), "Hi %s", secret);
		ok = bw_ct_equal(p, want, need);
		bw_wipe(want, sizeof(want));
		bw_wipe(p, need);
		if (!ok) {
			if (c->addr != NULL)
				bw_addr_strike(c->addr, bw_now_ms());
			bw_conn_event(
				c, BW_LOG_WARN, "console_refused",
				"reason=wrong_secret strikes=%u window_min=%u",
				c->addr != NULL
					? bw_addr_strikes(c->addr, bw_now_ms())
					: 1u,
				BW_ADDR_STRIKE_KEEP / 60000u);
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
	bw_conn_event(c, BW_LOG_INFO, "console_connected", "secret=%s",
		      slen > 0 ? "yes" : "no");
	return bw_conn_send(c, GREETING, GREETING_LEN) == 0 ? 1 : BW_ECLOSED;
}

static int
request_step(struct bw_conn *c)
{
	uint8_t req[REQ_LEN];
	struct reply r;
	int exiting;

	memcpy(req, bw_buf_head(&c->in), REQ_LEN);
	bw_buf_consume(&c->in, REQ_LEN);
	bw_conn_request_deadline(c, 0);
	bw_conn_proven(c);
	exiting = console_answer(c, req, &r);
	if (reply_send(c, &r) != 0)
		return BW_ECLOSED;
	if (exiting) {
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
			bw_conn_request_deadline(c,
						 bw_conn_limits(c)->request_ms);
		if (cc->st == C_HELLO) {
			rc = hello_step(c);
			continue;
		}
		if (c->in.len < REQ_LEN)
			return 0;
		if (bw_conn_queued(c) >= OUT_BUDGET) {
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
	CC(c)->c = c;
	c->want = CONSOLE_WANT;
	return 0;
}

static void
console_close(struct bw_conn *c)
{
	if (c->state != NULL)
		bw_loop_timer_stop(c->eng->loop, &CC(c)->delay_t);
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
