/* Rooms across nodes, the menu's side (rooms_bus.c has the rest): a room
 * looked up in Redis before its password is asked, created there with its
 * creator, joined there with the member's name claimed in it. Each waits
 * for Redis's answer in R_BUS; a connection that went, or moved on,
 * meanwhile is not answered (a member Redis took for it leaves again).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/log.h"
#include "svc/rooms/rooms_int.h"

/* A reply for rc, which may have gone or moved on meanwhile. */
struct rwait {
	struct bw_rooms *rs;
	uint64_t conn_id;
	unsigned seq;
	uint32_t id;
	uint8_t salt[SALT_LEN], hash[HASH_LEN];
	char member[96];
};

static struct rwait *
wait_new(struct rconn *rc)
{
	struct rwait *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return NULL;
	w->rs = rc->rs;
	w->conn_id = rc->c->id;
	w->seq = ++rc->bus_seq;
	rbus_member_of(rc->rs, rc->c->id, w->member, sizeof(w->member));
	rc->st = R_BUS;
	rc_wait(rc);
	bw_conn_pause(rc->c, 1);
	return w;
}

/* The waiter, if it still waits for this reply. */
static struct rconn *
waiter(const struct rwait *w)
{
	struct bw_conn *c = bw_engine_conn(w->rs->eng, w->conn_id);
	struct rconn *rc;

	if (c == NULL || bw_conn_dead(c) || (rc = RC(c)) == NULL ||
	    rc->st != R_BUS || rc->bus_seq != w->seq)
		return NULL;
	return rc;
}

/* --- join: the room's verifier ---------------------------------------------
 */

static void
looked_up(void *arg, int rc_, const struct bw_bus_reply *r)
{
	struct rwait *w = arg;
	struct rconn *rc = waiter(w);
	const struct bw_bus_reply *s, *h;
	const char *p;
	size_t n;

	if (rc == NULL)
		goto out;
	if (rc_ != 0 || r == NULL || bw_bus_type(r) == BW_BUS_ERR) {
		rbus_unavailable(rc, R_J_ID);
		goto out;
	}
	if (bw_bus_type(r) != BW_BUS_ARR || bw_bus_len(r) != 3) {
		menu_wrong(rc, NO_ID, R_J_ID);
		rc_resume(rc);
		goto out;
	}
	s = bw_bus_at(r, 0);
	h = bw_bus_at(r, 1);
	if ((p = bw_bus_str(s, &n)) == NULL || n != SALT_LEN)
		goto bad;
	memcpy(rc->v_salt, p, SALT_LEN);
	if ((p = bw_bus_str(h, &n)) == NULL || n != HASH_LEN)
		goto bad;
	memcpy(rc->v_hash, p, HASH_LEN);
	rc->v_have = 1;
	rc->room_id = w->id;
	if ((uint64_t)bw_bus_int(bw_bus_at(r, 2)) >= rc->rs->cfg.max_members) {
		(void)rc_say(rc, "This group is full, try again later\n");
		rc_prompt(rc, R_J_ID);
	} else {
		rc_prompt(rc, R_J_PASS);
	}
	rc_resume(rc);
	goto out;
bad:
	bw_warn("rooms: room %u's verifier in Redis is malformed", w->id);
	menu_wrong(rc, NO_ID, R_J_ID);
	rc_resume(rc);
out:
	free(w);
}

void
rbus_lookup(struct rconn *rc, uint32_t id)
{
	struct rwait *w;
	char ids[16];
	const char *argv[1] = {ids};

	rc->v_have = 0;
	if (!rbus_up(rc->rs)) {
		rbus_unavailable(rc, R_J_ID);
		return;
	}
	if ((w = wait_new(rc)) == NULL) {
		rbus_unavailable(rc, R_J_ID);
		return;
	}
	w->id = id;
	snprintf(ids, sizeof(ids), "%u", id);
	if (bw_bus_eval(rc->rs->bus, rbus_lua_lookup, 0, 1, argv, NULL,
			looked_up, w) != 0) {
		rc->st = R_J_ID;
		free(w);
		rbus_unavailable(rc, R_J_ID);
	}
}

/* --- join: the member ------------------------------------------------------
 *
 * The room is made here and its channel subscribed, and Redis has the
 * subscription, before the join is written; the notice is published once
 * the member is in (room_enter). A member of another node who answers it
 * at once so reaches a member already there, on a node already hearing
 * the room (the subscription goes on a connection of its own: its order
 * with the script's is not Redis's to keep without the wait).
 */

/* The join is over (the waiter told, or gone): the room stays only if it
 * has members here or others joining. */
static void
join_done(struct rwait *w)
{
	struct room *room = room_find(w->rs, w->id);

	if (room != NULL) {
		if (room->joining > 0)
			room->joining--;
		room_drop_if_unused(w->rs, room);
	}
	free(w);
}

static void
joined(void *arg, int rc_, const struct bw_bus_reply *r)
{
	struct rwait *w = arg;
	struct rconn *rc = waiter(w);
	long long v = rc_ == 0 && r != NULL ? bw_bus_int(r) : -9;
	struct room *room = room_find(w->rs, w->id);

	if (rc == NULL) {
		if (v == 1)
			rbus_leave_orphan(w->rs, w->id, w->member);
	} else if (rc_ != 0 || r == NULL || bw_bus_type(r) != BW_BUS_INT) {
		rbus_unavailable(rc, R_J_ID);
	} else if (v == 0) {
		(void)rc_sayf(rc,
			      "The name %s is taken in this group, try "
			      "another\n",
			      rc->name);
		rc_prompt(rc, R_J_RENAME);
		rc_resume(rc);
	} else if (v == -1) {
		(void)rc_say(rc, NO_ID);
		rc_prompt(rc, R_J_ID);
		rc_resume(rc);
	} else if (v == -2) {
		(void)rc_say(rc, "This group is full, try again later\n");
		rc_prompt(rc, R_J_ID);
		rc_resume(rc);
	} else if (room == NULL) { /* (held by w: not expected) */
		rbus_leave_orphan(w->rs, w->id, w->member);
		rbus_unavailable(rc, R_MENU);
	} else {
		room_enter(rc, room, 0);
		rc_resume(rc);
	}
	join_done(w);
}

/* The room's channel is in effect in Redis (rc_ 0): the join is written. */
static void
join_heard(void *arg, int rc_)
{
	struct rwait *w = arg;
	struct rconn *rc = waiter(w);
	char ids[16], max[16];
	const char *argv[8];
	size_t lens[8], k;

	if (rc == NULL) {
		join_done(w);
		return;
	}
	if (rc_ != 0)
		goto unavailable;
	snprintf(ids, sizeof(ids), "%u", w->id);
	snprintf(max, sizeof(max), "%u", rc->rs->cfg.max_members);
	argv[0] = ids;
	argv[1] = w->member;
	argv[2] = rc_key(rc);
	argv[3] = rc->name;
	argv[4] = max;
	argv[5] = rc->rs->node;
	argv[6] = (const char *)rc->v_salt; /* what the password matched */
	argv[7] = (const char *)rc->v_hash;
	for (k = 0; k < 6; k++)
		lens[k] = strlen(argv[k]);
	lens[6] = SALT_LEN;
	lens[7] = HASH_LEN;
	if (bw_bus_eval(rc->rs->bus, rbus_lua_join, 0, 8, argv, lens, joined,
			w) == 0)
		return;
unavailable:
	rbus_unavailable(rc, R_J_ID);
	join_done(w);
}

void
rbus_join(struct rconn *rc)
{
	struct rwait *w;
	struct room *room;
	char ch[32];

	if (!rbus_up(rc->rs) || !rc->v_have) {
		rbus_unavailable(rc, R_J_ID);
		return;
	}
	/* NULL: no memory, or this node has a room of that id with another
	 * verifier (Redis lost its data and gave the id again) */
	if ((room = rbus_local_room(rc->rs, rc->room_id, rc->v_salt,
				    rc->v_hash)) == NULL) {
		rbus_unavailable(rc, R_J_ID);
		return;
	}
	if ((w = wait_new(rc)) == NULL) {
		room_drop_if_unused(rc->rs, room);
		rbus_unavailable(rc, R_J_ID);
		return;
	}
	w->id = rc->room_id;
	room->joining++;
	rbus_channel_of(w->id, ch, sizeof(ch));
	if (bw_bus_subscribed(rc->rs->bus, ch, join_heard, w) != 0)
		join_heard(w, BW_EDB);
}

/* --- create ----------------------------------------------------------------
 */

static void
created(void *arg, int rc_, const struct bw_bus_reply *r)
{
	struct rwait *w = arg;
	struct rconn *rc = waiter(w);
	long long v = rc_ == 0 && r != NULL ? bw_bus_int(r) : -9;
	struct room *room;

	if (v > 0 && v <= UINT32_MAX) {
		w->id = (uint32_t)v;
		if (w->id > w->rs->top_id)
			w->rs->top_id = w->id;
	}
	if (rc == NULL) {
		if (v > 0)
			rbus_leave_orphan(w->rs, w->id, w->member);
		free(w);
		return;
	}
	if (v == -1 || v == -2) {
		(void)rc_say(rc, v == -1 ? "There are too many groups, try "
					   "again later\n"
					 : "No group ids are left, try again "
					   "later\n");
		rc_prompt(rc, R_MENU);
		rc_resume(rc);
	} else if (v <= 0 || bw_bus_type(r) != BW_BUS_INT) {
		rbus_unavailable(rc, R_MENU);
	} else if ((room = rbus_local_room(rc->rs, w->id, w->salt, w->hash)) ==
		   NULL) {
		rbus_leave_orphan(w->rs, w->id, w->member);
		rbus_unavailable(rc, R_MENU);
	} else {
		rc->rs->created++;
		room_enter(rc, room, 1);
		rc_resume(rc);
	}
	free(w);
}

void
rbus_create(struct rconn *rc, const uint8_t salt[SALT_LEN],
	    const uint8_t hash[HASH_LEN])
{
	struct rwait *w;
	char max[16];
	const char *argv[7];
	size_t lens[7];

	if (!rbus_up(rc->rs) || (w = wait_new(rc)) == NULL) {
		rbus_unavailable(rc, R_MENU);
		return;
	}
	memcpy(w->salt, salt, SALT_LEN);
	memcpy(w->hash, hash, HASH_LEN);
	snprintf(max, sizeof(max), "%u", rc->rs->cfg.max_rooms);
	argv[0] = (const char *)w->salt;
	lens[0] = SALT_LEN;
	argv[1] = (const char *)w->hash;
	lens[1] = HASH_LEN;
	argv[2] = w->member;
	argv[3] = rc_key(rc);
	argv[4] = rc->name;
	argv[5] = max;
	argv[6] = rc->rs->node;
	for (int i = 2; i < 7; i++)
		lens[i] = strlen(argv[i]);
	if (bw_bus_eval(rc->rs->bus, rbus_lua_create, 0, 7, argv, lens, created,
			w) != 0) {
		rc->st = R_MENU;
		free(w);
		rbus_unavailable(rc, R_MENU);
	}
}
