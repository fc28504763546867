/* The rooms' conformance cases of the menu (spec/rooms.md, "Menu" and
 * "Passwords"): what comes on connect, invalid choices, 3, creating a room
 * (names and passwords at their edges) and joining one (unknown and
 * malformed ids, wrong passwords, another room's password, the notice).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/probe_int.h"
#include "cli/probe_rooms_int.h"

/* --- the menu ------------------------------------------------------------ */

/* Whether a line of t begins with the digit d (blanks before it aside). */
static int
offers(const char *t, char d)
{
	for (;;) {
		while (*t == ' ' || *t == '\t')
			t++;
		if (*t == d)
			return 1;
		if ((t = strchr(t, '\n')) == NULL)
			return 0;
		t++;
	}
}

static void
menu_invalid(struct rrun *r, struct rline *l)
{
	static const char *const tries[] = {"9", "join"};
	unsigned ms = r->p->timeout_ms;
	size_t i;

	for (i = 0; i < 2; i++) {
		if (rl_say(l, tries[i]) != 0 || !rl_expect(l, T_INVALID, ms)) {
			probe_fail(r->p, "`%s` got no `" T_INVALID "`",
				   tries[i]);
			return;
		}
		if (r->menu[0] != '\0' && !rl_expect(l, r->menu, ms)) {
			probe_fail(r->p,
				   "`%s` got `" T_INVALID "`, but not "
				   "the menu again",
				   tries[i]);
			return;
		}
	}
	probe_pass(r->p, "`9` and `join`: the text and the menu again");
}

void
rr_menu_cases(struct rrun *r)
{
	struct probe *p = r->p;
	struct rline *l = &r->x;

	if (!probe_begin(p, "rooms.menu.on_connect", S_MENU,
			 "the server speaks first: the seed's menu, 1 join, 2 "
			 "create, 3 exit",
			 0)) {
		if (rl_open(p, l) == 0)
			snprintf(r->menu, sizeof(r->menu), "%s",
				 l->buf + l->at);
		if (r->menu[0] == '\0') {
			/* nothing to walk: every case after it would wait */
			probe_fail(p, "nothing came within %u ms",
				   p->timeout_ms);
			p->stopped = 1;
		} else if (strcmp(r->menu, T_MENU) == 0)
			probe_pass(p, "the seed's menu");
		else if (offers(r->menu, '1') && offers(r->menu, '2') &&
			 offers(r->menu, '3'))
			probe_deviate(p, "1, 2 and 3 are offered, not in the "
					 "seed's words");
		else
			probe_fail(p, "no menu of 1, 2 and 3 came");
	}
	if (!probe_begin(p, "rooms.menu.invalid", S_MENU,
			 "anything but 1, 2, 3 gets `" T_INVALID
			 "` and the menu again",
			 0)) {
		if (l->eof && rl_open(p, l) != 0)
			probe_fail(p, "no menu came");
		else
			menu_invalid(r, l);
	}
	rl_close(l);
	if (!probe_begin(p, "rooms.menu.exit", S_MENU,
			 "3 at the menu ends the session: the server closes",
			 0)) {
		if (rl_open(p, l) != 0 || rl_say(l, "3") != 0)
			probe_fail(p, "no menu came");
		else if (rl_closes(l, p->timeout_ms))
			probe_pass(p, "closed");
		else
			probe_fail(p, "still open %u ms after 3",
				   p->timeout_ms);
		rl_close(l);
	}
}

/* --- creating ------------------------------------------------------------ */

/* At the creator's name question on x: 0, or -1 (the case is told). */
static int
at_create_name(struct rrun *r)
{
	struct probe *p = r->p;

	if (r->q_cname[0] == '\0' || r->q_cpass[0] == '\0') {
		probe_skip(p, "the questions of a create are not known (the "
			      "create before failed)");
		return -1;
	}
	if (rl_open(p, &r->x) != 0 || rl_say(&r->x, "2") != 0 ||
	    rl_reply(&r->x, p->timeout_ms) == 0) {
		probe_fail(p, "no answer to 2");
		return -1;
	}
	return 0;
}

/* Creates with a password of n bytes (128 or 129): a room must be made
 * for 128 and not for 129. */
static void
passwords(struct rrun *r, size_t n, const char *id, const char *clause)
{
	struct probe *p = r->p;
	struct rline *x = &r->x;
	char name[64], pass[160];
	uint32_t got = 0;

	if (probe_begin(p, id, S_MENU, clause, 0) || at_create_name(r) != 0) {
		rl_close(x);
		return;
	}
	/* spaces, a colon and a two-byte character: any characters */
	memset(pass, 'q', n);
	memcpy(pass, "p w:\xc3\xa9", 6);
	pass[n] = '\0';
	probe_name(p, "pw", name, sizeof(name));
	if (rl_say(x, name) != 0 || rl_reply(x, p->timeout_ms) == 0 ||
	    rl_say(x, pass) != 0 || rl_reply(x, p->timeout_ms) == 0)
		probe_fail(p, "no answer to the name or the password");
	else if (n <= 128 && !rl_number(x, T_CREATED, 0, &got))
		probe_fail(p, "no room was made");
	else if (n <= 128)
		probe_pass(p, "room #%u", got);
	else if (rl_has(x, T_CREATED))
		probe_fail(p, "a room was made");
	else
		probe_pass(p, "no room");
	rr_leave(x);
}

static void
create_edges(struct rrun *r)
{
	struct probe *p = r->p;
	struct rline *x = &r->x;
	char name[200];
	uint32_t id = 0;
	size_t i;

	if (!probe_begin(p, "rooms.create.longest_name", S_MENU,
			 "a name of 64 characters (64 x U+00E9, 128 bytes) is "
			 "taken: the password is asked",
			 0) &&
	    at_create_name(r) == 0) {
		for (i = 0; i < 64; i++)
			memcpy(name + 2 * i, "\xc3\xa9", 2);
		name[128] = '\0';
		if (rl_say(x, name) != 0 || rl_reply(x, p->timeout_ms) == 0)
			probe_fail(p, "no answer to the name");
		else if (rl_asks(x, r->q_cpass))
			probe_pass(p, "asked `%s`", r->q_cpass);
		else
			probe_fail(p, "the name was not taken (no `%s`)",
				   r->q_cpass);
	}
	rl_close(x);
	if (!probe_begin(p, "rooms.create.long_name", S_MENU,
			 "a name of 65 characters asks for a name again", 0) &&
	    at_create_name(r) == 0) {
		memset(name, 'n', 65);
		name[65] = '\0';
		if (rl_say(x, name) != 0 || rl_reply(x, p->timeout_ms) == 0)
			probe_fail(p, "no answer to the name");
		else if (rl_asks(x, r->q_cpass))
			probe_fail(p, "65 characters were taken: `%s`",
				   r->q_cpass);
		else if (rl_asks(x, r->q_cname))
			probe_pass(p, "asked `%s` again", r->q_cname);
		else
			probe_fail(p, "no name asked again");
	}
	rl_close(x);
	if (!probe_begin(p, "rooms.create.empty_name", S_MENU,
			 "a name that is empty after cleaning (ESC BEL) asks "
			 "for a name again",
			 0) &&
	    at_create_name(r) == 0) {
		if (rl_say(x, "\x1b\x07") != 0 ||
		    rl_reply(x, p->timeout_ms) == 0)
			probe_fail(p, "no answer to the name");
		else if (rl_asks(x, r->q_cpass))
			probe_fail(p, "taken: `%s`", r->q_cpass);
		else if (rl_asks(x, r->q_cname))
			probe_pass(p, "asked `%s` again", r->q_cname);
		else
			probe_fail(p, "no name asked again");
	}
	rl_close(x);
	passwords(r, 128, "rooms.create.longest_password",
		  "a password of 128 bytes (the most; any characters) makes "
		  "the room");
	passwords(r, 129, "rooms.create.long_password",
		  "a password of 129 bytes makes no room");
	if (!probe_begin(p, "rooms.create.empty_password", S_MENU,
			 "an empty password asks again; the next one creates "
			 "the room",
			 0) &&
	    at_create_name(r) == 0) {
		probe_name(p, "empty", name, sizeof(name));
		if (rl_say(x, name) != 0 || rl_reply(x, p->timeout_ms) == 0 ||
		    rl_say(x, "") != 0 || rl_reply(x, p->timeout_ms) == 0)
			probe_fail(p, "no answer to the name or the empty "
				      "password");
		else if (rl_has(x, T_CREATED))
			probe_fail(p, "a room was made with an empty password");
		else if (!rl_asks(x, r->q_cpass))
			probe_fail(p, "the password was not asked again");
		else if (rl_say(x, r->pa) != 0 ||
			 !rl_number(x, T_CREATED, p->timeout_ms, &id))
			probe_fail(p, "asked again, but the next password made "
				      "no room");
		else
			probe_pass(p, "asked again; room #%u made", id);
	}
	rr_leave(x);
}

void
rr_create_cases(struct rrun *r)
{
	struct probe *p = r->p;
	char name[64], why[96];

	if (!probe_begin(p, "rooms.create.ok", S_MENU,
			 "2, a name, a password: `" T_CREATED "N`, `" T_JOINED
			 "N`, `" T_TALK "`",
			 0)) {
		probe_name(p, "alice", name, sizeof(name));
		if (rr_create(r, &r->a, name, r->pa, &r->na, why,
			      sizeof(why)) != 0)
			probe_fail(p, "%s", why);
		else
			r->a_in = probe_pass(p, "room #%u", r->na) == 0;
	}
	if (!probe_begin(p, "rooms.create.second", S_IDS,
			 "a second room gets an id of its own", 0)) {
		probe_name(p, "bob", name, sizeof(name));
		if (rr_create(r, &r->b, name, r->pb, &r->nb, why,
			      sizeof(why)) != 0)
			probe_fail(p, "%s", why);
		else if (r->a_in && r->nb == r->na)
			probe_fail(p, "both rooms are #%u", r->na);
		else
			r->b_in = probe_pass(p, "room #%u", r->nb) == 0;
	}
	create_edges(r);
}

/* --- joining ------------------------------------------------------------- */

/* x at the id question (walked there again unless it is): 0, or -1 (the
 * case is told). *at: 0 nowhere, 1 at the id, 2 at the password. */
static int
x_at_id(struct rrun *r, int *at)
{
	struct probe *p = r->p;
	char name[64];

	if (*at == 1 && !r->x.eof)
		return 0;
	*at = 0;
	probe_name(p, "xavier", name, sizeof(name));
	if (rl_open(p, &r->x) != 0 || rl_say(&r->x, "1") != 0 ||
	    rl_reply(&r->x, p->timeout_ms) == 0) {
		probe_fail(p, "no answer to 1");
		return -1;
	}
	rr_learn(r->q_name, sizeof(r->q_name), &r->x);
	if (rl_say(&r->x, name) != 0 || rl_reply(&r->x, p->timeout_ms) == 0) {
		probe_fail(p, "no answer to a name");
		return -1;
	}
	rr_learn(r->q_id, sizeof(r->q_id), &r->x);
	*at = 1;
	return 0;
}

/* Sends what to x (at the id) and checks it is refused as no room's id. */
static void
bad_id(struct rrun *r, int *at, const char *what)
{
	struct probe *p = r->p;

	if (x_at_id(r, at) != 0)
		return;
	if (rl_say(&r->x, what) != 0 || rl_reply(&r->x, rr_wrong_ms(r)) == 0)
		probe_fail(p, "no answer to the id `%s`%s", what,
			   r->x.eof ? ": the connection closed" : "");
	else if (!rl_has(&r->x, T_NO_ID))
		probe_fail(p, "`%s` got no `" T_NO_ID "`", what);
	else {
		rr_failed(r);
		if (r->x.eof)
			probe_fail(p, "`" T_NO_ID "`, then the connection "
				      "closed");
		else
			probe_pass(p, "`" T_NO_ID "`%s",
				   rl_asks(&r->x, r->q_id)
					   ? ", the id asked again"
					   : "");
	}
}

/* Sends pass to x at room na's password question: the reply is read. */
static int
x_password(struct rrun *r, int *at, const char *pass)
{
	struct probe *p = r->p;
	char ids[16];

	if (*at != 2) {
		snprintf(ids, sizeof(ids), "%u", r->na);
		if (x_at_id(r, at) != 0)
			return -1;
		if (rl_say(&r->x, ids) != 0 ||
		    rl_reply(&r->x, p->timeout_ms) == 0 ||
		    rl_has(&r->x, T_NO_ID)) {
			*at = 0;
			probe_fail(p, "room #%u's id got no password question",
				   r->na);
			return -1;
		}
		rr_learn(r->q_pass, sizeof(r->q_pass), &r->x);
		*at = 2;
	}
	if (rl_say(&r->x, pass) != 0 || rl_reply(&r->x, rr_wrong_ms(r)) == 0) {
		*at = 0;
		probe_fail(p, "no answer to the password%s",
			   r->x.eof ? ": the connection closed" : "");
		return -1;
	}
	return 0;
}

static void
refused(struct rrun *r)
{
	rr_failed(r);
	probe_pass(r->p, "`" T_NO_PASS "`");
}

static void
wrong_passwords(struct rrun *r, int *at)
{
	struct probe *p = r->p;
	char wrong[64];

	if (!probe_begin(p, "rooms.join.wrong_password", S_PASS,
			 "a wrong password gets `" T_NO_PASS "`, asked again",
			 0)) {
		snprintf(wrong, sizeof(wrong), "wrong-%s", p->tag);
		if (!r->a_in)
			probe_skip(p, "no room (the create failed)");
		else if (x_password(r, at, wrong) != 0)
			;
		else if (rl_has(&r->x, T_JOINED))
			probe_fail(p, "joined with a wrong password");
		else if (!rl_has(&r->x, T_NO_PASS))
			probe_fail(p, "no `" T_NO_PASS "`");
		else
			refused(r);
	}
	if (!probe_begin(p, "rooms.join.other_password", S_PASS,
			 "another room's password does not open this room (the "
			 "seed's defect)",
			 0)) {
		if (!r->a_in || !r->b_in)
			probe_skip(p, "two rooms are needed (a create failed)");
		else if (x_password(r, at, r->pb) != 0)
			;
		else if (rl_has(&r->x, T_JOINED)) {
			*at = 0;
			probe_fail(p, "room #%u's password opened room #%u",
				   r->nb, r->na);
		} else if (!rl_has(&r->x, T_NO_PASS))
			probe_fail(p, "no `" T_NO_PASS "`");
		else
			refused(r);
	}
	if (!probe_begin(p, "rooms.join.after_wrong", S_PASS,
			 "after wrong passwords the right one, on the same "
			 "connection, joins",
			 0)) {
		if (!r->a_in || *at != 2)
			probe_skip(p, "no connection at the password question");
		else if (x_password(r, at, r->pa) != 0)
			;
		else if (!rl_has(&r->x, T_JOINED))
			probe_fail(p, "not joined");
		else
			probe_pass(p, "joined");
	}
	rr_leave(&r->x);
}

void
rr_join_cases(struct rrun *r)
{
	struct probe *p = r->p;
	char name[64], why[96];
	int at = 0;

	if (!probe_begin(p, "rooms.join.unknown_id", S_MENU,
			 "an unknown id gets `" T_NO_ID "`, asked again", 0))
		bad_id(r, &at, "4294967295");
	if (!probe_begin(p, "rooms.join.non_numeric", S_MENU,
			 "a non-numeric id gets `" T_NO_ID
			 "` and the session goes on",
			 0))
		bad_id(r, &at, "abc");
	wrong_passwords(r, &at);
	if (!probe_begin(p, "rooms.join.ok", S_MENU,
			 "1, a name, the id, its password: `" T_JOINED "N`",
			 0)) {
		probe_name(p, "yvonne", name, sizeof(name));
		if (!r->a_in)
			probe_skip(p, "no room (the create failed)");
		else if (rr_join(r, &r->y, name, r->na, r->pa, why,
				 sizeof(why)) != 0)
			probe_fail(p, "%s", why);
		else
			r->y_in = probe_pass(p, "joined room #%u", r->na) == 0;
	}
	if (!probe_begin(p, "rooms.join.notice", S_ROOM,
			 "the others read `<name>" T_JOINS "`", 0)) {
		snprintf(why, sizeof(why), "%s" T_JOINS, r->y.name);
		if (!r->a_in || !r->y_in)
			probe_skip(p, "two members are needed");
		else if (rl_expect(&r->a, why, p->timeout_ms))
			probe_pass(p, "`%s`", why);
		else
			probe_fail(p, "the creator did not read `%s`", why);
	}
}
