/* The rooms' conformance cases in a room (spec/rooms.md, "Lines", "Text",
 * "Names", "In a room"): relaying, lines ended by a pause or by "\r\n",
 * controls and invalid UTF-8 cleaned, the longest line, /who and /help,
 * taken names, and leaving with Exit and /exit. The room is the creator's
 * (a) with one member who joined (y).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/util.h"
#include "cli/probe_int.h"
#include "cli/probe_rooms_int.h"

/* Sends a then b in one write. */
static int
speak(struct rline *l, const char *a, size_t an, const char *b, size_t bn)
{
	char *s = malloc(an + bn + 1);
	int rc;

	if (s == NULL)
		return -1;
	memcpy(s, a, an);
	memcpy(s + an, b, bn);
	rc = rl_send(l, s, an + bn);
	free(s);
	return rc;
}

/* Waits for from's line that begins with mark, relayed to to: 1 with the
 * rest of it in rest (a '\r' at its end dropped when chomp), else 0. */
static int
heard_as(struct rrun *r, struct rline *to, const struct rline *from,
	 const char *mark, char *rest, size_t cap, int chomp)
{
	char prefix[160];
	size_t n;

	snprintf(prefix, sizeof(prefix), "%s: %s", from->name, mark);
	if (!rl_line_after(to, prefix, r->p->timeout_ms, rest, cap))
		return 0;
	n = strlen(rest);
	if (chomp && n > 0 && rest[n - 1] == '\r')
		rest[n - 1] = '\0';
	return 1;
}

static int
heard(struct rrun *r, struct rline *to, const struct rline *from,
      const char *mark, char *rest, size_t cap)
{
	return heard_as(r, to, from, mark, rest, cap, 1);
}

/* Whether two members are in the room: else the case is skipped. */
static int
two(struct rrun *r)
{
	if (r->a_in && r->y_in)
		return 1;
	probe_skip(r->p, "two members are needed (a create or join failed)");
	return 0;
}

static void
relay(struct rrun *r)
{
	struct probe *p = r->p;
	char mark[64], rest[256];

	if (probe_begin(p, "rooms.room.relay", S_ROOM,
			"a member's line is relayed to the others as `name: "
			"text`",
			0) ||
	    !two(r))
		return;
	snprintf(mark, sizeof(mark), "relay:%s hello", p->tag);
	if (rl_say(&r->y, mark) != 0)
		probe_fail(p, "the member's connection is gone");
	else if (!heard(r, &r->a, &r->y, mark, rest, sizeof(rest)))
		probe_fail(p, "the creator did not read `%s: %s`", r->y.name,
			   mark);
	else if (rest[0] != '\0')
		probe_fail(p, "relayed with `%s` after it", rest);
	else
		probe_pass(p, "`%s: %s`", r->y.name, mark);
}

static void
pause_line(struct rrun *r)
{
	struct probe *p = r->p;
	char mark[64], next[64], rest[256];
	uint64_t t0 = bw_now_ms(), took;

	if (probe_begin(p, "rooms.lines.pause", S_LINES,
			"a partial line followed by a pause (150 ms by "
			"default) is a line: relayed, apart from the next",
			0) ||
	    !two(r))
		return;
	snprintf(mark, sizeof(mark), "pause:%s", p->tag);
	snprintf(next, sizeof(next), "next:%s", p->tag);
	if (rl_send(&r->a, mark, strlen(mark)) != 0) {
		probe_fail(p, "the creator's connection is gone");
		return;
	}
	if (!heard(r, &r->y, &r->a, mark, rest, sizeof(rest))) {
		probe_fail(p,
			   "`%s` with no newline was not relayed within "
			   "%u ms",
			   mark, p->timeout_ms);
		(void)rl_send(&r->a, "\n", 1); /* ended: no later line's */
		return;
	}
	took = bw_now_ms() - t0;
	if (rest[0] != '\0')
		probe_fail(p, "relayed with `%s` after it", rest);
	else if (rl_say(&r->a, next) != 0 ||
		 !heard(r, &r->y, &r->a, next, rest, sizeof(rest)))
		probe_fail(p, "the line after it was not relayed on its own");
	else
		probe_pass(p, "relayed %llu ms after it was sent", ULL(took));
}

static void
pause_last_byte(struct rrun *r)
{
	struct probe *p = r->p;
	char mark[64], want[96], rest[256];
	const char *tail = " one line\n";

	if (probe_begin(p, "rooms.lines.pause_from_last", S_LINES,
			"the pause is measured from the last byte: a line sent "
			"in pieces 50 ms apart is one line",
			0) ||
	    !two(r))
		return;
	snprintf(mark, sizeof(mark), "dribble:%s", p->tag);
	snprintf(want, sizeof(want), "%s one line", mark);
	/* heard by its first piece, "dr": a line cut after it shows */
	if (pc_send_slowly(&r->a.c, mark, strlen(mark), 2, 50) != 0 ||
	    rl_send(&r->a, tail, strlen(tail)) != 0)
		probe_fail(p, "the creator's connection is gone");
	else if (!heard(r, &r->y, &r->a, "dr", rest, sizeof(rest)))
		probe_fail(p, "not relayed");
	else if (strcmp(rest, want + 2) != 0)
		probe_fail(p, "cut: relayed as `dr%s`", rest);
	else
		probe_pass(p, "%zu pieces, one line", (strlen(mark) + 1) / 2);
}

static void
crlf(struct rrun *r)
{
	struct probe *p = r->p;
	char mark[64], rest[256];
	const char *tail = " ends\r\n";

	if (probe_begin(p, "rooms.lines.crlf", S_LINES,
			"a '\\r' just before the '\\n' is dropped", 0) ||
	    !two(r))
		return;
	snprintf(mark, sizeof(mark), "crlf:%s", p->tag);
	if (speak(&r->a, mark, strlen(mark), tail, strlen(tail)) != 0)
		probe_fail(p, "the creator's connection is gone");
	else if (!heard_as(r, &r->y, &r->a, mark, rest, sizeof(rest), 0))
		probe_fail(p, "`%s ends\\r\\n` was not relayed", mark);
	else if (strcmp(rest, " ends") == 0 ||
		 (strcmp(rest, " ends\r") == 0 && strstr(r->menu, "\r\n")))
		probe_pass(p, "`%s ends`", mark);
	else
		probe_fail(p, "relayed as `%s%s`%s", mark, rest,
			   strchr(rest, '\r') ? " (the \\r kept)" : "");
}

/* The first byte sequence of s the spec's cleaning removes: its offset,
 * or -1. Tab is kept. */
static long
control_at(const char *s)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i;

	for (i = 0; u[i] != '\0'; i++) {
		if ((u[i] < 0x20 && u[i] != '\t') || u[i] == 0x7f ||
		    (u[i] == 0xc2 && u[i + 1] >= 0x80 && u[i + 1] <= 0x9f) ||
		    (u[i] == 0xe2 && u[i + 1] == 0x80 && u[i + 2] >= 0xaa &&
		     u[i + 2] <= 0xae) ||
		    (u[i] == 0xe2 && u[i + 1] == 0x81 && u[i + 2] >= 0xa6 &&
		     u[i + 2] <= 0xa9))
			return (long)i;
	}
	return -1;
}

static void
controls(struct rrun *r)
{
	struct probe *p = r->p;
	static const char sent[] = " k1\x1b[2Jk2\x07k3\rk4\x7fk5\xc2\x9bk6"
				   "\xe2\x80\xaek7\xe2\x81\xa6k8\x08k9\tk10\n";
	static const char want[] = " k1[2Jk2k3k4k5k6k7k8k9\tk10";
	char mark[64], rest[256];
	long at;

	if (probe_begin(
		    p, "rooms.text.controls", S_TEXT,
		    "C0 controls but tab, DEL, C1 and the bidi controls are "
		    "removed before a line is relayed",
		    0) ||
	    !two(r))
		return;
	snprintf(mark, sizeof(mark), "ctl:%s", p->tag);
	if (speak(&r->a, mark, strlen(mark), sent, sizeof(sent) - 1) != 0)
		probe_fail(p, "the creator's connection is gone");
	else if (!heard(r, &r->y, &r->a, mark, rest, sizeof(rest)))
		probe_fail(p, "the line was not relayed");
	else if (strcmp(rest, want) == 0)
		probe_pass(p, "ESC, BEL, CR, DEL, BS, U+009B, U+202E, U+2066 "
			      "removed; tab kept");
	else if ((at = control_at(rest)) >= 0)
		probe_fail(p, "byte 0x%02x passed (at %ld of the text)",
			   (unsigned char)rest[at], at);
	else if (strchr(rest, '\t') == NULL)
		probe_deviate(p, "the tab was removed too");
	else
		probe_fail(p,
			   "not removed but changed: the text after the "
			   "mark is %zu bytes, %zu expected",
			   strlen(rest), strlen(want));
}

static void
invalid_utf8(struct rrun *r)
{
	struct probe *p = r->p;
	static const char sent[] =
		" u1\xffu2\xc3u3\x80u4 \xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80\n";
	static const char want[] =
		" u1\xef\xbf\xbdu2\xef\xbf\xbdu3\xef\xbf"
		"\xbdu4 \xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80";
	char mark[64], rest[256];

	if (probe_begin(p, "rooms.text.utf8", S_TEXT,
			"invalid UTF-8 becomes U+FFFD (EF BF BD); valid text "
			"passes whole",
			0) ||
	    !two(r))
		return;
	snprintf(mark, sizeof(mark), "utf:%s", p->tag);
	if (speak(&r->a, mark, strlen(mark), sent, sizeof(sent) - 1) != 0)
		probe_fail(p, "the creator's connection is gone");
	else if (!heard(r, &r->y, &r->a, mark, rest, sizeof(rest)))
		probe_fail(p, "the line was not relayed");
	else if (strcmp(rest, want) == 0)
		probe_pass(p, "FF, C3 cut short and a stray 80: one U+FFFD "
			      "each");
	else if (!bw_utf8_valid(rest))
		probe_fail(p, "the relayed line is not valid UTF-8");
	else if (strstr(rest, "\xef\xbf\xbd") == NULL)
		probe_fail(p, "no U+FFFD in the relayed line");
	else if (strstr(rest, "u4 \xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80") ==
		 NULL)
		probe_fail(p, "the valid text after the invalid was changed");
	else
		probe_deviate(p, "U+FFFD in other places or numbers than one "
				 "per bad byte here");
}

/* /who or /help from y: the reply, or NULL (the case is told). */
static const char *
ask(struct rrun *r, const char *cmd)
{
	if (rl_say(&r->y, cmd) != 0 || rl_reply(&r->y, r->p->timeout_ms) == 0) {
		probe_fail(r->p, "no answer to %s", cmd);
		return NULL;
	}
	return r->y.buf + r->y.at;
}

static void
who_help(struct rrun *r)
{
	struct probe *p = r->p;
	const char *t;

	if (!probe_begin(p, "rooms.room.who", S_ROOM,
			 "/who lists the room's members", 0) &&
	    two(r) && (t = ask(r, "/who")) != NULL) {
		if (strstr(t, r->a.name) && strstr(t, r->y.name))
			probe_pass(p, "both members listed");
		else
			probe_fail(p, "the answer does not name both members");
	}
	if (!probe_begin(p, "rooms.room.help", S_ROOM,
			 "/help lists the commands", 0) &&
	    two(r) && (t = ask(r, "/help")) != NULL) {
		if (strstr(t, "/who") != NULL)
			probe_pass(p, "it names /who");
		else
			probe_deviate(p, "an answer that does not name /who");
	}
}

/* Joins as name (taken in the room) on x, then as a fresh name when a
 * name is asked again. */
static void
taken(struct rrun *r, const char *id, const char *clause, const char *name)
{
	struct probe *p = r->p;
	struct rline *x = &r->x;
	char fresh[64], why[96], ids[16];
	int renamed = 0, passed = 0, joined = 0, i;

	if (probe_begin(p, id, S_NAMES, clause, 0) || !two(r))
		return;
	probe_name(p, "zoe", fresh, sizeof(fresh));
	snprintf(ids, sizeof(ids), "%u", r->na);
	if (rr_to_pass(r, x, name, ids, why, sizeof(why)) != 0) {
		probe_fail(p, "%s", why);
		rl_close(x);
		return;
	}
	/* the name may be asked again before the password or after it */
	for (i = 0; i < 4 && !joined; i++) {
		if (rl_has(x, T_JOINED))
			joined = 1;
		else if (!renamed && rl_asks(x, r->q_name))
			renamed = rl_say(x, fresh) == 0;
		else if (!passed && rl_asks(x, r->q_pass))
			passed = rl_say(x, r->pa) == 0;
		else
			break;
		if (!joined)
			(void)rl_reply(x, p->timeout_ms);
	}
	snprintf(x->name, sizeof(x->name), "%s", fresh);
	if (joined && !renamed)
		probe_fail(p, "joined under a name a member has");
	else if (joined)
		probe_pass(p, "a name asked again; joined as %s", fresh);
	else if (!renamed)
		probe_fail(p, "no name was asked again");
	else
		probe_fail(p, "asked again, but the fresh name was not joined");
	rr_leave(x);
}

static void
exits(struct rrun *r)
{
	struct probe *p = r->p;
	char name[64], why[96];
	int left = 0;

	if (!probe_begin(p, "rooms.room.slash_exit", S_ROOM,
			 "/exit leaves: `" T_EXIT "`, then the server closes",
			 0) &&
	    two(r)) {
		probe_name(p, "walt", name, sizeof(name));
		if (rr_join(r, &r->x, name, r->na, r->pa, why, sizeof(why)) !=
		    0)
			probe_fail(p, "%s", why);
		else if (rl_say(&r->x, "/exit") != 0 ||
			 !rl_expect(&r->x, T_EXIT, p->timeout_ms))
			probe_fail(p, "no `" T_EXIT "`");
		else if (!rl_closes(&r->x, p->timeout_ms))
			probe_fail(p, "`" T_EXIT "`, but still open");
		else
			probe_pass(p, "told, and closed");
		rl_close(&r->x);
	}
	if (!probe_begin(p, "rooms.room.exit", S_ROOM,
			 "Exit leaves: `" T_EXIT "`, then the server closes",
			 0) &&
	    two(r)) {
		if (rl_say(&r->y, "Exit") != 0 ||
		    !rl_expect(&r->y, T_EXIT, p->timeout_ms))
			probe_fail(p, "no `" T_EXIT "`");
		else if (!rl_closes(&r->y, p->timeout_ms))
			probe_fail(p, "`" T_EXIT "`, but still open");
		else
			probe_pass(p, "told, and closed");
		r->y_in = 0;
		left = 1;
		rl_close(&r->y);
	}
	if (!probe_begin(p, "rooms.room.leave_notice", S_ROOM,
			 "the others read `<name>" T_LEAVES "`", 0)) {
		snprintf(why, sizeof(why), "%s" T_LEAVES, r->y.name);
		if (!left || !r->a_in)
			probe_skip(p, "no member left (Exit failed)");
		else if (rl_expect(&r->a, why, p->timeout_ms))
			probe_pass(p, "`%s`", why);
		else
			probe_fail(p, "the creator did not read `%s`", why);
	}
}

static void
longest(struct rrun *r)
{
	struct probe *p = r->p;
	char mark[64], rest[LINE_MAX_B + 64], *fill;
	size_t n, i;

	if (probe_begin(
		    p, "rooms.lines.longest", S_LINES,
		    "a line of 4096 bytes (and its \\r\\n) is relayed whole",
		    0) ||
	    !two(r))
		return;
	snprintf(mark, sizeof(mark), "long:%s:", p->tag);
	n = LINE_MAX_B - strlen(mark);
	if ((fill = malloc(n + 2)) == NULL) {
		probe_skip(p, "out of memory");
		return;
	}
	memset(fill, 'y', n);
	memcpy(fill + n, "\r\n", 2);
	if (speak(&r->a, mark, strlen(mark), fill, n + 2) != 0)
		probe_fail(p, "the creator's connection is gone");
	else if (!heard(r, &r->y, &r->a, mark, rest, sizeof(rest))) {
		r->a_in = !rl_closes(&r->a, 0);
		probe_fail(p, "not relayed%s",
			   r->a_in ? "" : ": the creator was closed");
	} else {
		for (i = 0; rest[i] == 'y'; i++)
			;
		if (i == n && rest[i] == '\0')
			probe_pass(p, "4096 bytes relayed");
		else
			probe_fail(p,
				   "relayed as %zu bytes of text after the "
				   "mark, %zu sent",
				   strlen(rest), n);
	}
	free(fill);
}

static void
name_cleaned(struct rrun *r)
{
	struct probe *p = r->p;
	char name[80], plain[64], want[128], why[96];

	if (probe_begin(p, "rooms.text.name", S_TEXT,
			"a name is cleaned too: the others read it without its "
			"controls",
			0) ||
	    !two(r))
		return;
	probe_name(p, "nick", plain, sizeof(plain));
	snprintf(name, sizeof(name), "\x1b[1m%s\xe2\x80\xae", plain);
	snprintf(want, sizeof(want), "[1m%s" T_JOINS, plain);
	if (rr_join(r, &r->x, name, r->na, r->pa, why, sizeof(why)) != 0)
		probe_fail(p, "%s", why);
	else if (rl_expect(&r->a, want, p->timeout_ms))
		probe_pass(p, "`%s`", want);
	else
		probe_fail(p, "no `%s` (ESC and U+202E removed)", want);
	rr_leave(&r->x);
}

void
rr_room_cases(struct rrun *r)
{
	char name[80];

	relay(r);
	pause_line(r);
	pause_last_byte(r);
	crlf(r);
	controls(r);
	invalid_utf8(r);
	name_cleaned(r);
	who_help(r);
	taken(r, "rooms.names.taken",
	      "a name taken in the room asks for a name again", r->y.name);
	snprintf(name, sizeof(name), "\x1b%s\x07", r->y.name);
	taken(r, "rooms.names.taken_cleaned",
	      "names are compared after cleaning: ESC + a member's name + "
	      "BEL is taken",
	      name);
	longest(r);
	exits(r);
}
