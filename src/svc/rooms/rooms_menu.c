/* The menu before a room, as seed 004 words it: 1 join (name, id,
 * password), 2 create (name, password), 3 exit. A wrong id or password
 * asks again; five per connection close it, and past three from one
 * address in ten minutes each further wrong answer waits, 0.25 s doubling
 * to 4 s. A right password is never delayed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/log.h"
#include "bulwark/util.h"
#include "proto/rooms_text.h"
#include "proto/text.h"
#include "svc/rooms/rooms_int.h"

/* The line without the blanks around it. */
static const char *
trimmed(const char *line, size_t *n)
{
	while (*n > 0 && (line[*n - 1] == ' ' || line[*n - 1] == '\t'))
		(*n)--;
	while (*n > 0 && (*line == ' ' || *line == '\t')) {
		line++;
		(*n)--;
	}
	return line;
}

/* A room id: decimal digits only, 1 to 4294967295. */
static int
parse_id(const char *line, size_t n, uint32_t *id)
{
	uint64_t v = 0;
	size_t i;

	line = trimmed(line, &n);
	if (n == 0 || n > 10)
		return -1;
	for (i = 0; i < n; i++) {
		if (line[i] < '0' || line[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(line[i] - '0');
	}
	if (v == 0 || v > UINT32_MAX)
		return -1;
	*id = (uint32_t)v;
	return 0;
}

/* A name: cleaned, 1 to NAME_CHARS code points; 0 or -1 (said why). */
static int
take_name(struct rconn *rc, const char *line, size_t n, enum rstate again)
{
	/* cleaned whole (the scratch holds any line), then measured */
	char *name = rc->rs->out;
	size_t chars = 0, len;

	char key[BW_TEXT_KEY_CAP(NAME_CHARS)];
	size_t key_n;

	len = bw_text_clean_name((const uint8_t *)line, n, name,
				 rc->rs->out_cap, &chars);
	if (len == 0 || chars > NAME_CHARS || len >= NAME_CAP ||
	    (key_n = bw_text_name_key(name, len, key, sizeof(key))) == 0) {
		(void)rc_sayf(rc, "A name has 1 to %u characters, try again\n",
			      NAME_CHARS);
		rc_prompt(rc, again);
		return -1;
	}
	memcpy(rc->name, name, len + 1);
	/* names are compared as a reader sees them: by their canonical
	 * decomposition (kept only when it differs from the name) */
	free(rc->key);
	rc->key = NULL;
	if ((key_n != len || memcmp(key, name, len) != 0) &&
	    (rc->key = strdup(key)) == NULL) {
		(void)rc_say(rc, "The server is busy, try again later\n");
		rc_prompt(rc, again);
		return -1;
	}
	return 0;
}

static void on_delay(void *arg);

void
menu_wrong(struct rconn *rc, const char *text, enum rstate next)
{
	struct bw_rooms *rs = rc->rs;
	struct bw_addr *a = rc->c->addr;
	uint64_t now = bw_now_ms();
	unsigned strikes = 0, delay = 0;
	int last;

	rs->refused++;
	last = ++rc->attempts >= rs->cfg.max_attempts;
	if (a != NULL) {
		bw_addr_strike(a, now);
		strikes = bw_addr_strikes(a, now);
	}
	bw_conn_event(rc->c, BW_LOG_INFO, "room_refused",
		      "reason=%s attempts=%u strikes=%u",
		      next == R_J_ID ? "wrong_id" : "wrong_password",
		      rc->attempts, strikes);
	if (strikes > FAIL_FREE) {
		delay = strikes - FAIL_FREE - 1 >= 5
				? DELAY_MAX_MS
				: DELAY_MIN_MS << (strikes - FAIL_FREE - 1);
		if (delay > DELAY_MAX_MS)
			delay = DELAY_MAX_MS;
	}
	/* the last wrong answer's goodbye waits as the others do: sooner, it
	 * would tell a guesser its guess was wrong before the delay */
	if (last)
		text = BW_ROOMS_TOO_MANY "\n";
	if (delay > 0 && bw_loop_timer_start(rc->c->eng->loop, &rc->delay_t,
					     delay, on_delay, rc) == 0) {
		snprintf(rc->delay_text, sizeof(rc->delay_text), "%s", text);
		rc->delay_next = last ? R_GONE : next;
		rc->st = R_DELAY;
		rc_wait(rc);
		bw_conn_pause(rc->c, 1);
		return;
	}
	if (last) {
		rc_bye(rc, text);
		return;
	}
	(void)rc_say(rc, text);
	rc_prompt(rc, next);
}

static void
on_delay(void *arg)
{
	struct rconn *rc = arg;

	if (rc->st == R_GONE)
		return; /* told goodbye meanwhile (a shutdown) */
	if (rc->delay_next == R_GONE) {
		rc_bye(rc, rc->delay_text); /* the last wrong answer */
		return;
	}
	(void)rc_say(rc, rc->delay_text);
	rc_prompt(rc, rc->delay_next);
	rc_resume(rc);
}

/* Join: the id names a room that has room for one more. */
static void
join_id(struct rconn *rc, const char *line, size_t n)
{
	struct room *r;
	uint32_t id;

	if (parse_id(line, n, &id) != 0) {
		menu_wrong(rc, NO_ID, R_J_ID);
		return;
	}
	if (rbus_on(rc->rs)) { /* the cluster's rooms: Redis knows them */
		rbus_lookup(rc, id);
		return;
	}
	if ((r = room_find(rc->rs, id)) == NULL) {
		menu_wrong(rc, NO_ID, R_J_ID);
		return;
	}
	if (r->members_n >= rc->rs->cfg.max_members) {
		(void)rc_say(rc, "This group is full, try again later\n");
		rc_prompt(rc, R_J_ID);
		return;
	}
	rc->room_id = id;
	rc_prompt(rc, R_J_PASS);
}

/* Why no room can be created now, or NULL: checked before a name and a
 * password are asked and hashed for nothing. */
static const char *
cannot_create(const struct bw_rooms *rs)
{
	if (rbus_on(rs)) /* the cluster's count: the bus checks it */
		return rbus_up(rs) ? NULL
				   : "The group chat is unavailable, try "
				     "again later\n";
	if (rs->map.n >= rs->cfg.max_rooms)
		return "There are too many groups, try again later\n";
	if (rs->next_id == 0)
		return "No group ids are left, try again later\n";
	return NULL;
}

static void
password(struct rconn *rc, const char *line, size_t n, int create)
{
	const char *why;

	if (n == 0) { /* asked again: no room's, and no guess either */
		(void)rc_say(rc, "A password cannot be empty, try again\n");
		rc_prompt(rc, create ? R_C_PASS : R_J_PASS);
		return;
	}
	if (create && n > PASS_MAX) {
		(void)rc_sayf(rc,
			      "A password has at most %u bytes, try again\n",
			      PASS_MAX);
		rc_prompt(rc, R_C_PASS);
		return;
	}
	if (!create && !rc->v_have && room_find(rc->rs, rc->room_id) == NULL) {
		/* deleted while the password was typed: back to the id */
		(void)rc_say(rc, NO_ID);
		rc_prompt(rc, R_J_ID);
		return;
	}
	if (!create && n > PASS_MAX) {
		menu_wrong(rc, NO_PASS, R_J_PASS); /* cannot be any room's */
		return;
	}
	if (create && (why = cannot_create(rc->rs)) != NULL) {
		(void)rc_say(rc, why);
		rc_prompt(rc, R_MENU);
		return;
	}
	/* every create costs a hash: a connection has as many as it has
	 * attempts (a wrong password costs one too) */
	if (create && ++rc->creates > rc->rs->cfg.max_attempts) {
		rc_bye(rc, "Too many attempts, goodbye.\n");
		return;
	}
	pass_start(rc, create, line, n);
}

/* The name is free in the room (and the room has room): in. */
static void
join_now(struct rconn *rc, struct room *r)
{
	if (rbus_on(rc->rs)) { /* names and counts are the cluster's */
		rbus_join(rc);
		return;
	}
	if (room_has_name(r, rc_key(rc))) {
		(void)rc_sayf(rc,
			      "The name %s is taken in this group, try "
			      "another\n",
			      rc->name);
		rc_prompt(rc, R_J_RENAME);
		return;
	}
	if (r->members_n >= rc->rs->cfg.max_members) {
		(void)rc_say(rc, "This group is full, try again later\n");
		rc_prompt(rc, R_J_ID);
		return;
	}
	room_enter(rc, r, 0);
}

void
menu_hashed(struct rconn *rc, int create, int ok, const uint8_t salt[SALT_LEN],
	    const uint8_t hash[HASH_LEN])
{
	const char *why = NULL;
	struct room *r;

	if (create) {
		if (!ok) {
			(void)rc_say(rc, "The group could not be created, try "
					 "again later\n");
			rc_prompt(rc, R_MENU);
		} else if (rbus_on(rc->rs)) {
			rbus_create(rc, salt, hash);
		} else if ((r = room_new(rc->rs, salt, hash, &why)) == NULL) {
			(void)rc_say(rc, why);
			rc_prompt(rc, R_MENU);
		} else {
			room_enter(rc, r, 1);
		}
		return;
	}
	if (rbus_on(rc->rs)) {
		if (!ok)
			menu_wrong(rc, NO_PASS, R_J_PASS);
		else
			rbus_join(rc);
		return;
	}
	if ((r = room_find(rc->rs, rc->room_id)) == NULL) {
		/* deleted while its password was being checked */
		(void)rc_say(rc, NO_ID);
		rc_prompt(rc, R_J_ID);
	} else if (!ok) {
		menu_wrong(rc, NO_PASS, R_J_PASS);
	} else {
		join_now(rc, r);
	}
}

void
menu_line(struct rconn *rc, const char *line, size_t n)
{
	const char *w, *why;
	size_t k = n;
	struct room *r;

	switch (rc->st) {
	case R_MENU:
		w = trimmed(line, &k);
		if (k == 1 && w[0] == '1') {
			rc_prompt(rc, R_J_NAME);
		} else if (k == 1 && w[0] == '2') {
			if ((why = cannot_create(rc->rs)) != NULL) {
				(void)rc_say(rc, why);
				rc_prompt(rc, R_MENU);
			} else {
				rc_prompt(rc, R_C_NAME);
			}
		} else if ((k == 1 && w[0] == '3') ||
			   (k == 5 && memcmp(w, "/exit", 5) == 0) ||
			   (k == 4 && memcmp(w, "Exit", 4) == 0)) {
			rc_bye(rc, "Exit the chat\n");
		} else {
			(void)rc_say(rc, "You chose an invalid option...\n");
			rc_prompt(rc, R_MENU);
		}
		break;
	case R_C_NAME:
		if (take_name(rc, line, n, R_C_NAME) == 0)
			rc_prompt(rc, R_C_PASS);
		break;
	case R_J_NAME:
		if (take_name(rc, line, n, R_J_NAME) == 0)
			rc_prompt(rc, R_J_ID);
		break;
	case R_J_RENAME:
		if (take_name(rc, line, n, R_J_RENAME) != 0)
			break;
		if (rbus_on(rc->rs))
			rbus_join(rc);
		else if ((r = room_find(rc->rs, rc->room_id)) == NULL) {
			(void)rc_say(rc, NO_ID);
			rc_prompt(rc, R_J_ID);
		} else {
			join_now(rc, r);
		}
		break;
	case R_J_ID:
		join_id(rc, line, n);
		break;
	case R_C_PASS:
	case R_J_PASS:
		password(rc, line, n, rc->st == R_C_PASS);
		break;
	default:
		break;
	}
}
