/* The rooms' conformance suite (spec/rooms.md): the line connection every
 * case speaks through (what the server sent is kept and searched with a
 * cursor), the menu's walks (create, join, learning the server's questions
 * as they come), and the suite's order. The cases: the menu's in
 * probe_rooms_menu.c, in a room and on text in probe_rooms_more.c, ids,
 * hostile input and wrong guesses in probe_rooms_edge.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/util.h"
#include "cli/probe_int.h"
#include "cli/probe_rooms_int.h"

/* --- a line connection -------------------------------------------------- */

void
rl_init(struct rline *l)
{
	l->c.p = NULL;
	l->c.fd = -1;
	l->len = l->at = l->mark = 0;
	l->buf[0] = '\0';
	l->eof = 1;
	l->name[0] = '\0';
}

int
rl_open(struct probe *p, struct rline *l)
{
	rl_close(l);
	rl_init(l);
	l->eof = 0;
	if (pc_open(p, &l->c) != 0) {
		l->eof = 1;
		return -1;
	}
	return rl_reply(l, p->timeout_ms) > 0 ? 0 : -1;
}

void
rl_close(struct rline *l)
{
	pc_close(&l->c);
	l->eof = 1;
}

int
rl_send(struct rline *l, const void *b, size_t n)
{
	if (l->c.fd < 0)
		return -1;
	return pc_send(&l->c, b, n);
}

int
rl_say(struct rline *l, const char *line)
{
	char b[512];
	int n = snprintf(b, sizeof(b), "%s\n", line);

	if (n < 0 || (size_t)n >= sizeof(b))
		return -1;
	return rl_send(l, b, (size_t)n);
}

/* Makes room for what comes next once l is three quarters full: what was
 * looked at goes, or half of what is kept when that is less. */
static void
make_room(struct rline *l)
{
	size_t drop;

	if (RL_CAP - l->len >= RL_CAP / 4)
		return;
	drop = l->at >= l->len / 2 ? l->at : l->len / 2;
	memmove(l->buf, l->buf + drop, l->len - drop);
	l->len -= drop;
	l->at = l->at > drop ? l->at - drop : 0;
	l->mark = l->mark > drop ? l->mark - drop : 0;
	l->buf[l->len] = '\0';
}

/* One read: up to a '\n' or ms. The count, or -1 once closed. */
static long
fill(struct rline *l, unsigned ms)
{
	int eof = 0;
	long n;

	if (l->c.fd < 0 || l->eof)
		return -1;
	make_room(l);
	n = pc_recv_until(&l->c, l->buf + l->len, RL_CAP + 1 - l->len, "\n", ms,
			  &eof);
	if (n < 0) {
		l->eof = 1;
		return -1;
	}
	l->len += (size_t)n;
	l->buf[l->len] = '\0';
	if (eof)
		l->eof = 1;
	return n;
}

static unsigned
left_ms(uint64_t end)
{
	uint64_t now = bw_now_ms();

	return now >= end ? 0 : (unsigned)(end - now);
}

int
rl_expect(struct rline *l, const char *s, unsigned ms)
{
	uint64_t end = bw_now_ms() + ms;
	size_t k = strlen(s);

	for (;;) {
		const char *f = memmem(l->buf + l->at, l->len - l->at, s, k);

		if (f != NULL) {
			l->at = (size_t)(f - l->buf) + k;
			return 1;
		}
		if (l->eof || left_ms(end) == 0 || fill(l, left_ms(end)) < 0)
			return 0;
	}
}

size_t
rl_reply(struct rline *l, unsigned ms)
{
	uint64_t end = bw_now_ms() + ms;
	size_t got = 0;
	long n;

	l->at = l->len;
	while (!l->eof) {
		if (got > 0 && l->buf[l->len - 1] == '\n') {
			/* a whole line: the reply is over after a quiet */
			if ((n = fill(l, QUIET_MS)) <= 0)
				break;
		} else if (left_ms(end) == 0 ||
			   (n = fill(l, left_ms(end))) < 0) {
			break;
		}
		got += (size_t)n;
	}
	return l->len - l->at;
}

size_t
rl_quiet(struct rline *l, unsigned ms)
{
	uint64_t end = bw_now_ms() + ms;
	size_t got = 0;
	long n;

	while (!l->eof && left_ms(end) > 0 && (n = fill(l, left_ms(end))) >= 0)
		got += (size_t)n;
	return got;
}

int
rl_closes(struct rline *l, unsigned ms)
{
	uint64_t end = bw_now_ms() + ms;

	while (!l->eof && left_ms(end) > 0 && fill(l, left_ms(end)) >= 0)
		;
	return l->eof;
}

int
rl_has(const struct rline *l, const char *s)
{
	return memmem(l->buf + l->at, l->len - l->at, s, strlen(s)) != NULL;
}

int
rl_asks(const struct rline *l, const char *q)
{
	return q[0] != '\0' && rl_has(l, q);
}

int
rl_line_after(struct rline *l, const char *prefix, unsigned ms, char *out,
	      size_t cap)
{
	uint64_t end = bw_now_ms() + ms;
	size_t n;

	if (!rl_expect(l, prefix, ms))
		return 0;
	l->mark = l->at;
	if (!rl_expect(l, "\n", left_ms(end)))
		return 0;
	n = l->at - 1 - l->mark;
	if (n >= cap)
		n = cap - 1;
	memcpy(out, l->buf + l->mark, n);
	out[n] = '\0';
	return 1;
}

int
rl_number(struct rline *l, const char *prefix, unsigned ms, uint32_t *id)
{
	char d[16], *end;
	unsigned long v;
	size_t n, i;

	if (!rl_line_after(l, prefix, ms, d, sizeof(d)))
		return 0;
	n = strlen(d);
	if (n > 0 && d[n - 1] == '\r')
		d[--n] = '\0';
	for (i = 0; i < n; i++) {
		if (d[i] < '0' || d[i] > '9')
			return 0;
	}
	if (n == 0 || n > 10)
		return 0;
	v = strtoul(d, &end, 10);
	if (*end != '\0' || v == 0 || v > UINT32_MAX)
		return 0;
	*id = (uint32_t)v;
	return 1;
}

/* --- the menu's walks ---------------------------------------------------- */

void
rr_learn(char *q, size_t cap, const struct rline *l)
{
	const char *s = l->buf + l->at, *e = l->buf + l->len, *b;

	if (q[0] != '\0')
		return;
	while (e > s && (e[-1] == '\n' || e[-1] == '\r'))
		e--;
	for (b = e; b > s && b[-1] != '\n'; b--)
		;
	if (e > b && (size_t)(e - b) < cap) {
		memcpy(q, b, (size_t)(e - b));
		q[e - b] = '\0';
	}
}

static int
why_is(char *why, size_t cap, const char *s)
{
	snprintf(why, cap, "%s", s);
	return -1;
}

void
rr_failed(struct rrun *r)
{
	if (r->fails++ == 0)
		r->first_fail = bw_now_ms();
}

unsigned
rr_wrong_ms(const struct rrun *r)
{
	return r->p->timeout_ms + DELAY_MS;
}

int
rr_create(struct rrun *r, struct rline *l, const char *name, const char *pass,
	  uint32_t *id, char *why, size_t cap)
{
	unsigned ms = r->p->timeout_ms;
	uint32_t again = 0;

	if (rl_open(r->p, l) != 0)
		return why_is(why, cap, "no menu came");
	snprintf(l->name, sizeof(l->name), "%s", name);
	if (rl_say(l, "2") != 0 || rl_reply(l, ms) == 0)
		return why_is(why, cap, "no answer to 2");
	rr_learn(r->q_cname, sizeof(r->q_cname), l);
	if (rl_say(l, name) != 0 || rl_reply(l, ms) == 0)
		return why_is(why, cap, "no answer to the name");
	rr_learn(r->q_cpass, sizeof(r->q_cpass), l);
	if (rl_say(l, pass) != 0)
		return why_is(why, cap, "the connection closed");
	if (!rl_number(l, T_CREATED, ms, id))
		return why_is(why, cap, "no `" T_CREATED "N`");
	if (!rl_number(l, T_JOINED, ms, &again) || again != *id)
		return why_is(why, cap, "no `" T_JOINED "N` with its id");
	if (!rl_expect(l, T_TALK, ms))
		return why_is(why, cap, "no `" T_TALK "`");
	return 0;
}

int
rr_to_pass(struct rrun *r, struct rline *l, const char *name, const char *id,
	   char *why, size_t cap)
{
	unsigned ms = r->p->timeout_ms;

	if (rl_open(r->p, l) != 0)
		return why_is(why, cap, "no menu came");
	snprintf(l->name, sizeof(l->name), "%s", name);
	if (rl_say(l, "1") != 0 || rl_reply(l, ms) == 0)
		return why_is(why, cap, "no answer to 1");
	rr_learn(r->q_name, sizeof(r->q_name), l);
	if (rl_say(l, name) != 0 || rl_reply(l, ms) == 0)
		return why_is(why, cap, "no answer to the name");
	rr_learn(r->q_id, sizeof(r->q_id), l);
	if (rl_say(l, id) != 0 || rl_reply(l, rr_wrong_ms(r)) == 0)
		return why_is(why, cap, "no answer to the id");
	if (rl_has(l, T_NO_ID)) {
		rr_failed(r);
		return why_is(why, cap, "the room's id was refused");
	}
	rr_learn(r->q_pass, sizeof(r->q_pass), l);
	return 0;
}

int
rr_join(struct rrun *r, struct rline *l, const char *name, uint32_t id,
	const char *pass, char *why, size_t cap)
{
	char ids[16];
	uint32_t got = 0;

	snprintf(ids, sizeof(ids), "%u", id);
	if (rr_to_pass(r, l, name, ids, why, cap) != 0)
		return -1;
	if (rl_say(l, pass) != 0)
		return why_is(why, cap, "the connection closed");
	if (!rl_number(l, T_JOINED, r->p->timeout_ms, &got) || got != id)
		return why_is(why, cap, "no `" T_JOINED "N` with the id");
	return 0;
}

void
rr_leave(struct rline *l)
{
	if (l->c.fd >= 0 && !l->eof && rl_say(l, "Exit") == 0 &&
	    rl_expect(l, T_EXIT, l->c.p->timeout_ms))
		(void)rl_closes(l, l->c.p->timeout_ms);
	rl_close(l);
}

/* --- the suite ----------------------------------------------------------- */

void
probe_rooms(struct probe *p)
{
	struct rrun *r = calloc(1, sizeof(*r));

	if (r == NULL) {
		fprintf(stderr, "bulwark probe: out of memory\n");
		return;
	}
	r->p = p;
	rl_init(&r->a);
	rl_init(&r->b);
	rl_init(&r->y);
	rl_init(&r->x);
	snprintf(r->pa, sizeof(r->pa), "pa-%s", p->tag);
	snprintf(r->pb, sizeof(r->pb), "pb-%s", p->tag);
	rr_menu_cases(r);
	rr_create_cases(r);
	rr_join_cases(r);
	rr_room_cases(r);
	rr_id_cases(r);
	rr_hostile_cases(r);
	rr_guess_cases(r);
	rr_leave(&r->y);
	rr_leave(&r->b);
	rr_leave(&r->a);
	rl_close(&r->x);
	free(r);
}
