/* Rooms and their members: ids that are never reused, entering and
 * leaving with notices to the others, and relaying a member's line to
 * everyone else, queued per member and flushed once per loop pass by the
 * engine. A member whose queue overflows is cut off after the relay, never
 * in the middle of it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/log.h"
#include "bulwark/util.h"
#include "proto/rooms_text.h"
#include "proto/text.h"
#include "svc/rooms/rooms_int.h"

struct room *
room_find(struct bw_rooms *rs, uint32_t id)
{
	return bw_hash_get(&rs->map, &id, sizeof(id));
}

struct room *
room_new(struct bw_rooms *rs, const uint8_t salt[SALT_LEN],
	 const uint8_t hash[HASH_LEN], const char **why)
{
	struct room *r;

	if (rs->map.n >= rs->cfg.max_rooms) {
		*why = "There are too many groups, try again later\n";
		return NULL;
	}
	if (rs->next_id == 0) {
		*why = "No group ids are left, try again later\n";
		return NULL;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		*why = "The server is out of memory, try again later\n";
		return NULL;
	}
	r->id = rs->next_id;
	memcpy(r->salt, salt, SALT_LEN);
	memcpy(r->hash, hash, HASH_LEN);
	if (bw_hash_put(&rs->map, &r->id, sizeof(r->id), r) != 0) {
		free(r);
		*why = "The server is out of memory, try again later\n";
		return NULL;
	}
	/* a 32-bit counter that refuses to wrap: an id names one room for
	 * as long as the server runs */
	rs->next_id = rs->next_id == UINT32_MAX ? 0 : rs->next_id + 1;
	rs->created++;
	return r;
}

struct room *
room_add(struct bw_rooms *rs, uint32_t id, const uint8_t salt[SALT_LEN],
	 const uint8_t hash[HASH_LEN])
{
	struct room *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->id = id;
	memcpy(r->salt, salt, SALT_LEN);
	memcpy(r->hash, hash, HASH_LEN);
	if (bw_hash_put(&rs->map, &r->id, sizeof(r->id), r) != 0) {
		free(r);
		return NULL;
	}
	if (id > rs->top_id)
		rs->top_id = id;
	return r;
}

static void
room_free(struct bw_rooms *rs, struct room *r)
{
	(void)bw_hash_del(&rs->map, &r->id, sizeof(r->id));
	bw_wipe(r, sizeof(*r));
	free(r);
}

void
room_drop_if_unused(struct bw_rooms *rs, struct room *r)
{
	if (r->members_n > 0 || r->joining > 0)
		return;
	rbus_room_gone(rs, r->id);
	room_free(rs, r);
}

int
room_has_name(const struct room *r, const char *key)
{
	const struct rconn *m;

	for (m = r->members; m != NULL; m = m->next) {
		if (strcmp(rc_key(m), key) == 0)
			return 1;
	}
	return 0;
}

void
room_tell(struct room *r, const struct rconn *skip, const char *text, size_t n)
{
	struct rconn *m;
	int rc;

	for (m = r->members; m != NULL; m = m->next) {
		if (m == skip || m->st != R_ROOM)
			continue;
		rc = bw_conn_send(m->c, text, n);
		if (rc == 0)
			m->rs->deliveries++;
		else if (rc == BW_ETOOBIG)
			m->overflow = 1; /* closed after this callback; its
					  * on_close tells the room */
	}
}

/* Tells the others "<name><what>". */
static void
notice(struct rconn *rc, struct room *r, const char *what)
{
	char buf[NAME_CAP + 128];
	int n = snprintf(buf, sizeof(buf), "%s%s", rc->name, what);

	if (n > 0)
		room_tell(r, rc, buf,
			  (size_t)n < sizeof(buf) ? (size_t)n
						  : sizeof(buf) - 1);
}

void
room_enter(struct rconn *rc, struct room *r, int created)
{
	struct bw_rooms *rs = rc->rs;
	char val[BW_ESC_CAP];

	rc->room = r;
	rc->room_id = r->id;
	rc->next = NULL;
	rc->prev = r->tail;
	if (r->tail != NULL)
		r->tail->next = rc;
	else
		r->members = rc;
	r->tail = rc;
	r->members_n++;
	rs->members_n++;
	if (rc->at_menu) {
		rc->at_menu = 0;
		rs->at_menu--;
	}
	rc->st = R_ROOM;
	rc->tokens = (uint64_t)rs->cfg.burst * RATE_SCALE_MS;
	rc->tokens_ms = bw_now_ms();
	bw_conn_request_deadline(rc->c, 0);
	if (created) {
		(void)rc_sayf(rc,
			      BW_ROOMS_CREATED "%u\n" BW_ROOMS_JOINED
					       "%u\n" BW_ROOMS_IN_ROOM "\n",
			      r->id, r->id);
	} else {
		rs->joined++;
		(void)rc_sayf(rc, BW_ROOMS_JOINED "%u\n", r->id);
	}
	bw_conn_event(rc->c, BW_LOG_INFO,
		      created ? "room_created" : "room_joined",
		      "room=%u name=%s members=%u", r->id,
		      bw_log_value(val, sizeof(val), rc->name), r->members_n);
	if (created)
		return;
	/* on the bus, published now that rc is in the room here: whatever
	 * answers it finds rc there (-1: the bus is down, this node's
	 * members are told) */
	if (!rbus_on(rs) || rbus_notice(rc, " has joined the group\n") != 0)
		notice(rc, r, " has joined the group\n");
}

void
room_leave(struct rconn *rc, const char *why)
{
	struct bw_rooms *rs = rc->rs;
	struct room *r = rc->room;

	if (r == NULL)
		return;
	if (rc->prev != NULL)
		rc->prev->next = rc->next;
	else
		r->members = rc->next;
	if (rc->next != NULL)
		rc->next->prev = rc->prev;
	else
		r->tail = rc->prev;
	rc->prev = rc->next = NULL;
	rc->room = NULL;
	r->members_n--;
	rs->members_n--;
	if (rbus_on(rs)) {
		/* the cluster's room: the bus tells everyone, this node's
		 * members too; without it, this node's members hear it */
		if (rbus_leave(rc, r->id, why) != 0 && why != NULL &&
		    !rs->stopping)
			notice(rc, r, why);
		room_drop_if_unused(rs, r);
		return;
	}
	if (why != NULL && !rs->stopping)
		notice(rc, r, why);
	if (r->members_n == 0) {
		bw_info("room %u deleted: its last member left", r->id);
		room_free(rs, r);
	}
}

/* /who: the members, as many as fit in WHO_MAX bytes (a thousand names
 * would take a quarter of the asker's own queue), then how many more. */
#define WHO_MAX 8192u

static void
who(struct rconn *rc, struct room *r)
{
	const struct rconn *m;
	char *buf = rc->rs->out; /* the relay's scratch, free here */
	size_t cap = rc->rs->out_cap < WHO_MAX ? rc->rs->out_cap : WHO_MAX;
	size_t o;
	unsigned shown = 0;

	o = (size_t)snprintf(buf, cap, "Members of group #%u (%u):", r->id,
			     r->members_n);
	for (m = r->members; m != NULL; m = m->next) {
		if (o + strlen(m->name) + 2 + 32 > cap)
			break;
		o += (size_t)snprintf(buf + o, cap - o, "%s %s",
				      shown == 0 ? "" : ",", m->name);
		shown++;
	}
	if (shown < r->members_n)
		o += (size_t)snprintf(buf + o, cap - o, " and %u more",
				      r->members_n - shown);
	buf[o++] = '\n';
	(void)rc_send(rc, buf, o);
}

/* A word, the line's only one: "Exit" as in the seed, or a command. */
static int
is_word(const char *line, size_t n, const char *w)
{
	size_t k = strlen(w);

	while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t'))
		n--;
	while (n > 0 && (*line == ' ' || *line == '\t')) {
		line++;
		n--;
	}
	return n == k && memcmp(line, w, k) == 0;
}

void
room_line(struct rconn *rc, const char *line, size_t n)
{
	struct bw_rooms *rs = rc->rs;
	struct room *r = rc->room;
	size_t name_n, text_n;

	if (is_word(line, n, "Exit") || is_word(line, n, "/exit")) {
		room_leave(rc, " has removed from the group\n");
		rc_bye(rc, "You chose exit so you removed from the group.\n");
		return;
	}
	if (is_word(line, n, "/who")) {
		if (!rbus_on(rs) || rbus_who(rc) != 0)
			who(rc, r);
		return;
	}
	if (is_word(line, n, "/help")) {
		(void)rc_say(rc, "Type a line to say it to the group. "
				 "Commands: /who lists the members, /help "
				 "shows this, /exit (or Exit) leaves.\n");
		return;
	}
	name_n = strlen(rc->name);
	memcpy(rs->out, rc->name, name_n);
	memcpy(rs->out + name_n, ": ", 2);
	text_n = bw_text_clean((const uint8_t *)line, n, rs->out + name_n + 2,
			       rs->out_cap - name_n - 3, NULL);
	if (text_n == 0)
		return; /* nothing to say, as in the seed */
	rs->out[name_n + 2 + text_n] = '\n';
	rs->lines_relayed++;
	if (rbus_on(rs) && rbus_relay(rc, rs->out, name_n + 3 + text_n) == 0)
		return; /* every node delivers it, in Redis's order */
	room_tell(r, rc, rs->out, name_n + 3 + text_n);
}

/* At the end (the loop drained, not freed): a room and the ghosts still in
 * it, their timers disarmed. */
static int
free_one(void *arg, void *val)
{
	struct bw_rooms *rs = arg;
	struct room *r = val;
	struct rconn *m, *next;

	for (m = r->members; m != NULL; m = next) {
		next = m->next;
		if (m->c == NULL) {
			bw_loop_timer_stop(rs->eng->loop, &m->rate_t);
			bw_loop_timer_stop(rs->eng->loop, &m->pause_t);
			bw_buf_fini_wipe(&m->ghost_in);
			free(m->key);
			bw_wipe(m, sizeof(*m));
			free(m);
		}
	}
	bw_wipe(r, sizeof(*r));
	free(r);
	return 0;
}

void
rooms_free_all(struct bw_rooms *rs)
{
	if (rs->map.slots != NULL)
		(void)bw_hash_each(&rs->map, free_one, rs);
	bw_hash_fini(&rs->map);
}

void
rc_note_deviations(struct rconn *rc, const uint8_t *line, size_t n, size_t took,
		   int flush)
{
	struct bw_conn *c = rc->c;

	if (flush && !bw_conn_eof(c) && line[took - 1] != '\n')
		bw_conn_deviates(c, NULL, BW_DEV_LINE_PAUSE);
	if (memchr(line, 0, n) == NULL && !bw_utf8_valid(rc->rs->line))
		bw_conn_deviates(c, NULL, BW_DEV_TEXT_NOT_UTF8);
}
