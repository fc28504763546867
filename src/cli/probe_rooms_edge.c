/* The rooms' conformance cases at the edges (spec/rooms.md, "Room ids",
 * "Lines", "Passwords"): ids never reused, a room deleted while a joiner
 * types its password, a line over 4096 bytes, hostile input the server
 * must survive, and last (they trip the per-address delay) five wrong
 * guesses on one connection, the delay, and a right password not delayed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "bulwark/util.h"
#include "cli/probe_int.h"
#include "cli/probe_rooms_int.h"

#define UNKNOWN_ID "4294967295"

/* --- ids ----------------------------------------------------------------- */

/* c made room m1 (pc its password), w waits at its password question, d
 * made room m2: c leaves, w answers, e makes a room. */
static void
deleted(struct rrun *r, struct rline *l, const char *pc, uint32_t m1,
	uint32_t m2, int ready)
{
	struct probe *p = r->p;
	struct rline *c = &l[0], *d = &l[1], *e = &l[2], *w = &l[3];
	char name[64], why[96];
	uint32_t m3 = 0;

	if (!probe_begin(p, "rooms.join.room_deleted", S_MENU,
			 "a room deleted while its password is typed sends the "
			 "joiner back to the id",
			 0)) {
		rr_leave(c);
		if (!ready)
			probe_skip(p, "the rooms or the walk before failed");
		else if (rl_say(w, pc) != 0 || rl_reply(w, rr_wrong_ms(r)) == 0)
			probe_fail(p, "no answer to the password");
		else if (rl_has(w, T_JOINED))
			probe_fail(p,
				   "joined room #%u, deleted when its last "
				   "member left",
				   m1);
		else if (rl_asks(w, r->q_id) || rl_has(w, T_NO_ID))
			probe_pass(p, "sent back to the id");
		else
			probe_fail(p, "not asked for an id");
	}
	rl_close(w);
	if (!probe_begin(p, "rooms.ids.not_reused", S_IDS,
			 "an id is never given again while the server runs: a "
			 "deleted room's stays unused",
			 0)) {
		rr_leave(c);
		probe_name(p, "erin", name, sizeof(name));
		if (!ready)
			probe_skip(p, "the rooms before failed");
		else if (rr_create(r, e, name, pc, &m3, why, sizeof(why)) != 0)
			probe_fail(p, "%s", why);
		else if (m3 == m1)
			probe_fail(p, "deleted room #%u's id was given again",
				   m1);
		else if (m3 == m2 || (r->a_in && m3 == r->na) ||
			 (r->b_in && m3 == r->nb))
			probe_fail(p,
				   "live room #%u's id was given to a new "
				   "room",
				   m3);
		else
			probe_pass(p, "#%u deleted, #%u live, the new one #%u",
				   m1, m2, m3);
	}
	rr_leave(d);
	rr_leave(e);
}

void
rr_id_cases(struct rrun *r)
{
	struct probe *p = r->p;
	struct rline *l = calloc(4, sizeof(*l));
	char name[64], pc[40], why[96], ids[16];
	uint32_t m1 = 0, m2 = 0;
	int ready, i;

	if (l == NULL)
		return;
	for (i = 0; i < 4; i++)
		rl_init(&l[i]);
	snprintf(pc, sizeof(pc), "pc-%s", p->tag);
	probe_name(p, "carol", name, sizeof(name));
	ready = !p->stopped &&
		rr_create(r, &l[0], name, pc, &m1, why, sizeof(why)) == 0;
	probe_name(p, "dave", name, sizeof(name));
	ready = ready &&
		rr_create(r, &l[1], name, "pd", &m2, why, sizeof(why)) == 0;
	snprintf(ids, sizeof(ids), "%u", m1);
	probe_name(p, "wendy", name, sizeof(name));
	ready = ready && rr_to_pass(r, &l[3], name, ids, why, sizeof(why)) == 0;
	deleted(r, l, pc, m1, m2, ready);
	for (i = 0; i < 4; i++)
		rl_close(&l[i]);
	free(l);
}

/* --- hostile input ------------------------------------------------------- */

/* Whether a new connection still gets the menu; else the run stops. */
static int
serves(struct rrun *r)
{
	if (rl_open(r->p, &r->x) == 0) {
		rl_close(&r->x);
		return 1;
	}
	rl_close(&r->x);
	r->p->stopped = 1;
	return 0;
}

static size_t
lines_in(const struct rline *l)
{
	const char *s = l->buf + l->at;
	size_t n = 0;

	while ((s = strchr(s, '\n')) != NULL) {
		n++;
		s++;
	}
	return n;
}

static void
too_long(struct rrun *r)
{
	struct probe *p = r->p;
	char *b;

	if (probe_begin(
		    p, "rooms.lines.too_long", S_HOST,
		    "a line over 4096 bytes gets a one-line refusal and the "
		    "connection is closed",
		    P_HOSTILE))
		return;
	if ((b = malloc(LINE_MAX_B + 2)) == NULL) {
		probe_skip(p, "out of memory");
		return;
	}
	memset(b, 'x', LINE_MAX_B + 1);
	b[LINE_MAX_B + 1] = '\n';
	if (rl_open(p, &r->x) != 0 || rl_send(&r->x, b, LINE_MAX_B + 2) != 0)
		probe_fail(p, "no menu came");
	else if (rl_reply(&r->x, p->timeout_ms) == 0)
		probe_fail(p, "%s",
			   r->x.eof ? "closed without a refusal"
				    : "no answer to 4097 bytes");
	else if (!rl_closes(&r->x, p->timeout_ms))
		probe_fail(p, "answered, but not closed");
	else if (lines_in(&r->x) != 1)
		probe_fail(p, "%zu lines before the close, one expected",
			   lines_in(&r->x));
	else
		probe_pass(p, "one line, then closed");
	rl_close(&r->x);
	free(b);
}

static void
garbage(struct rrun *r)
{
	enum { GARBAGE = 64 * 1024 };
	struct probe *p = r->p;
	uint8_t *g;

	if (probe_begin(p, "rooms.hostile.garbage", S_HOST,
			"64 KiB of random bytes at the menu, then a reset, "
			"leave the server serving",
			P_HOSTILE))
		return;
	if ((g = malloc(GARBAGE)) == NULL || bw_random(g, GARBAGE) != 0) {
		probe_skip(p, "no random bytes");
		free(g);
		return;
	}
	if (rl_open(p, &r->x) == 0)
		(void)rl_send(&r->x, g, GARBAGE);
	pc_abort(&r->x.c);
	rl_close(&r->x);
	free(g);
	if (serves(r))
		probe_pass(p, "still serving");
	else
		probe_fail(p, "the server no longer shows the menu");
}

static void
reset_hashing(struct rrun *r)
{
	struct probe *p = r->p;
	char b[200], name[64];
	int n;

	if (probe_begin(p, "rooms.hostile.reset_hashing", S_HOST,
			"a create and a join reset while their passwords are "
			"checked leave the server serving",
			P_HOSTILE))
		return;
	probe_name(p, "gone", name, sizeof(name));
	n = snprintf(b, sizeof(b), "2\n%s\npr-%s\n", name, p->tag);
	if (rl_open(p, &r->x) == 0 && n > 0 && (size_t)n < sizeof(b))
		(void)rl_send(&r->x, b, (size_t)n);
	pc_abort(&r->x.c);
	rl_close(&r->x);
	n = snprintf(b, sizeof(b), "1\n%s\n%u\n%s\n", name, r->na, r->pa);
	if (r->a_in && rl_open(p, &r->x) == 0 && n > 0 && (size_t)n < sizeof(b))
		(void)rl_send(&r->x, b, (size_t)n);
	pc_abort(&r->x.c);
	rl_close(&r->x);
	if (serves(r))
		probe_pass(p, "still serving");
	else
		probe_fail(p, "the server no longer shows the menu");
}

void
rr_hostile_cases(struct rrun *r)
{
	too_long(r);
	garbage(r);
	reset_hashing(r);
}

/* --- wrong guesses (last: they trip the per-address delay) --------------- */

/* What guess i (0 to 4) of rooms.guess.limit sends: wrong ids, then,
 * when there is a room to ask, wrong passwords (the two count together). */
static const char *
guess(const struct rrun *r, unsigned i, const char *wrong)
{
	return i < 2 || !r->a_in ? UNKNOWN_ID : wrong;
}

static const char *
refusal(const struct rrun *r, unsigned i)
{
	return i < 2 || !r->a_in ? T_NO_ID : T_NO_PASS;
}

static void
guess_limit(struct rrun *r)
{
	struct probe *p = r->p;
	struct rline *x = &r->x;
	char name[64], wrong[64], ids[16];
	uint64_t t0;
	unsigned i;

	probe_name(p, "guess", name, sizeof(name));
	snprintf(wrong, sizeof(wrong), "guess-%s", p->tag);
	snprintf(ids, sizeof(ids), "%u", r->na);
	if (rl_open(p, x) != 0 || rl_say(x, "1") != 0 ||
	    rl_reply(x, p->timeout_ms) == 0 || rl_say(x, name) != 0 ||
	    rl_reply(x, p->timeout_ms) == 0) {
		probe_fail(p, "no answer to 1 or to a name");
		return;
	}
	for (i = 0; i < 4; i++) {
		if (i == 2 && r->a_in &&
		    (rl_say(x, ids) != 0 || rl_reply(x, rr_wrong_ms(r)) == 0 ||
		     rl_has(x, T_NO_ID))) {
			probe_fail(p, "room #%u's id got no password question",
				   r->na);
			return;
		}
		t0 = bw_now_ms();
		r->guess_before[i] = r->fails;
		if (rl_say(x, guess(r, i, wrong)) != 0 ||
		    !rl_expect(x, refusal(r, i), rr_wrong_ms(r))) {
			probe_fail(p, "wrong guess %u got no `%s`%s", i + 1,
				   refusal(r, i), x->eof ? ": closed" : "");
			return;
		}
		r->guess_ms[i] = (unsigned)(bw_now_ms() - t0);
		r->guesses = i + 1;
		rr_failed(r);
	}
	/* the fifth: timed from its send to the first line of its answer */
	(void)rl_quiet(x, QUIET_MS);
	x->at = x->len;
	t0 = bw_now_ms();
	r->notice_before = r->fails;
	if (rl_say(x, guess(r, 4, wrong)) != 0) {
		probe_fail(p, "closed after 4 wrong guesses");
		return;
	}
	rr_failed(r);
	if (!rl_expect(x, "\n", rr_wrong_ms(r))) {
		probe_fail(p, "no notice after the fifth wrong guess%s",
			   x->eof ? " (closed)" : "");
		return;
	}
	r->notice_ms = (unsigned)(bw_now_ms() - t0);
	r->noticed = 1;
	if (!rl_closes(x, p->timeout_ms))
		probe_fail(p, "still open after 5 wrong guesses");
	else
		probe_pass(p,
			   "a notice, then closed; answers took %u, %u, %u, "
			   "%u, %u ms",
			   r->guess_ms[0], r->guess_ms[1], r->guess_ms[2],
			   r->guess_ms[3], r->notice_ms);
}

static void
guess_delay(struct rrun *r)
{
	struct probe *p = r->p;
	unsigned i, n = 0;

	for (i = 0; i < r->guesses; i++) {
		if (r->guess_before[i] < 3)
			continue;
		n++;
		if (r->guess_ms[i] < 200) {
			probe_fail(
				p,
				"this run's failure %u was answered in %u ms",
				r->guess_before[i] + 1, r->guess_ms[i]);
			return;
		}
	}
	if (n == 0)
		probe_skip(p, "no wrong guess came after 3 failures");
	else
		probe_pass(p,
			   "%u wrong answers after 3 failures waited (%u, "
			   "%u, %u, %u ms)",
			   n, r->guess_ms[0], r->guess_ms[1], r->guess_ms[2],
			   r->guess_ms[3]);
}

static void
right_not_delayed(struct rrun *r)
{
	struct probe *p = r->p;
	char name[64], why[96], ids[16];
	unsigned i, most = 0, took;
	uint32_t got = 0;
	uint64_t t0;

	for (i = 0; i < r->guesses; i++) {
		if (r->guess_ms[i] > most)
			most = r->guess_ms[i];
	}
	probe_name(p, "right", name, sizeof(name));
	snprintf(ids, sizeof(ids), "%u", r->na);
	if (!r->a_in) {
		probe_skip(p, "no room (the create failed)");
		return;
	}
	if (most < 1000) {
		probe_skip(p,
			   "wrong answers waited %u ms at most: too little "
			   "to compare",
			   most);
		return;
	}
	if (rr_to_pass(r, &r->x, name, ids, why, sizeof(why)) != 0) {
		probe_fail(p, "%s", why);
		return;
	}
	t0 = bw_now_ms();
	if (rl_say(&r->x, r->pa) != 0 ||
	    !rl_number(&r->x, T_JOINED, p->timeout_ms + DELAY_MS, &got))
		probe_fail(p, "the right password did not join");
	else if ((took = (unsigned)(bw_now_ms() - t0)) >= most / 2)
		probe_fail(p,
			   "joined after %u ms, when wrong answers waited "
			   "%u ms",
			   took, most);
	else
		probe_pass(p,
			   "joined in %u ms; wrong answers waited up to %u "
			   "ms",
			   took, most);
}

static void
notice_delayed(struct rrun *r)
{
	struct probe *p = r->p;
	unsigned i, waited = 0;

	for (i = 0; i < r->guesses; i++)
		waited |= r->guess_before[i] >= 3 && r->guess_ms[i] >= 200;
	if (!r->noticed || r->notice_before < 3)
		probe_skip(p, "no notice came after 3 failures");
	else if (!waited)
		probe_skip(p, "no wrong answer waited (rooms.guess.delay)");
	else if (r->notice_ms < 200)
		probe_fail(p,
			   "this run's failure %u was answered (the notice) "
			   "in %u ms; the ones before it waited",
			   r->notice_before + 1, r->notice_ms);
	else
		probe_pass(p, "the notice waited %u ms", r->notice_ms);
}

void
rr_guess_cases(struct rrun *r)
{
	struct probe *p = r->p;

	if (!probe_begin(p, "rooms.guess.limit", S_PASS,
			 "5 wrong ids and passwords together (2 + 3) on one "
			 "connection: a one-line notice, then a close",
			 P_HOSTILE))
		guess_limit(r);
	rl_close(&r->x);
	if (!probe_begin(p, "rooms.guess.delay", S_PASS,
			 "after 3 failures from an address in 10 minutes, "
			 "each wrong answer waits (0.25 s doubling to 4 s)",
			 P_HOSTILE))
		guess_delay(r);
	if (!probe_begin(p, "rooms.guess.notice_delayed", S_PASS,
			 "the answer to the guess that ends the connection "
			 "waits too (each attempt past 3 failures)",
			 P_HOSTILE))
		notice_delayed(r);
	if (!probe_begin(p, "rooms.guess.right_not_delayed", S_PASS,
			 "a right password is never delayed, after failures "
			 "too",
			 P_HOSTILE))
		right_not_delayed(r);
	rr_leave(&r->x);
}
