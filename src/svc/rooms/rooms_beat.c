/* Rooms across nodes, each node's life in Redis (rooms_bus.c has the
 * rooms' traffic): its heartbeat, the reaping of nodes that stopped beating
 * (in steps of bounded work), and, when the bus comes back or the others
 * took this node for dead, its members written again (its earlier ones
 * forgotten first, in steps too), each checked against Redis's room.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/rooms/rooms_int.h"

/* A node silent for ALIVE_MS is reaped: longer than the bus's watchdog
 * (3 s for a command unanswered) and a beat, so that a pause of Redis
 * short of the watchdog reaps no one */
#define BEAT_MS	   1000u
#define ALIVE_MS_N 5000
#define STR_(x)	   #x
#define STR(x)	   STR_(x)
#define ALIVE_MS   STR(ALIVE_MS_N)
#define GONE	   RBUS_GONE
/* the work of one reap or forget step: members looked at (a script of a
 * few milliseconds; Redis answers everyone else between two) */
#define REAP_WORK "2048"

/* A member written again: if Redis no longer has its place (its name
 * given to someone else, or the room full, while this node was cut off and
 * reaped; or the room's id given to another room after Redis lost its
 * data), it leaves rather than be a second one of that name, one too
 * many, or a member of a stranger's room. */
struct rejoin {
	struct bw_rooms *rs;
	uint32_t id;
	uint64_t conn_id;
};

static const char *
rejoin_refused(long long v)
{
	switch (v) {
	case 0:
		return "Your name was given to someone else while this server "
		       "was cut off, goodbye.\n";
	case -2:
		return "This group filled up while this server was cut off, "
		       "goodbye.\n";
	default:
		return "This group's number was given to another group while "
		       "this server was cut off, goodbye.\n";
	}
}

static void
rejoined(void *arg, int rc_, const struct bw_bus_reply *r)
{
	struct rejoin *j = arg;
	struct room *room = room_find(j->rs, j->id);
	struct rconn *m;
	long long v;

	if (room != NULL && room->rejoining > 0)
		room->rejoining--;
	if (rc_ == 0 && r != NULL && bw_bus_type(r) == BW_BUS_INT &&
	    (v = bw_bus_int(r)) <= 0 && room != NULL) {
		if (v == -3)
			bw_warn("rooms: room %u's id is another room's in "
				"Redis "
				"now (Redis lost its data); its members here "
				"are let go",
				j->id);
		for (m = room->members; m != NULL; m = m->next) {
			if (m->conn_id != j->conn_id || m->st != R_ROOM)
				continue;
			/* out of the room now, not when its connection is
			 * done: until then it would hear the room, and the
			 * room (the id another's) would stay on this node */
			room_leave(m, NULL);
			rc_bye(m, rejoin_refused(v));
			break;
		}
	}
	free(j);
}

static int
rejoin_room(void *arg, void *val)
{
	struct bw_rooms *rs = arg;
	struct room *r = val;
	const struct rconn *m;
	const char *argv[8];
	size_t lens[8], k;
	char ids[16], member[96], max[16];
	struct rejoin *j;

	snprintf(ids, sizeof(ids), "%u", r->id);
	snprintf(max, sizeof(max), "%u", rs->cfg.max_members);
	for (m = r->members; m != NULL; m = m->next) {
		rbus_member_of(rs, m->conn_id, member, sizeof(member));
		argv[0] = ids;
		argv[1] = (const char *)r->salt;
		argv[2] = (const char *)r->hash;
		argv[3] = member;
		argv[4] = rc_key(m);
		argv[5] = m->name;
		argv[6] = rs->node;
		argv[7] = max;
		for (k = 0; k < 8; k++)
			lens[k] = k == 1   ? SALT_LEN
				  : k == 2 ? HASH_LEN
					   : strlen(argv[k]);
		if ((j = calloc(1, sizeof(*j))) != NULL) {
			j->rs = rs;
			j->id = r->id;
			j->conn_id = m->conn_id;
		}
		if (j == NULL || bw_bus_eval(rs->bus, rbus_lua_rejoin, 0, 8,
					     argv, lens, rejoined, j) != 0)
			free(j);
		else
			r->rejoining++;
	}
	return 0;
}

/* Back after an outage (or started with rooms): this node's members, as
 * Redis had them, go quietly, and those it has now are written again. At
 * the first connection, what Redis has under this node's name is an
 * earlier process's (killed, or stopped before its leaves were sent, and
 * back before the others reaped it; a lone node is never reaped): those
 * members leave, with the notice. The forget goes in bounded steps, each
 * sent when the one before is answered; the members are written again
 * once it is done (a forget step after them would take them out). */
static void forget_step(struct bw_rooms *rs, const char *cursor, size_t n);

static void
forgot(void *arg, int rc, const struct bw_bus_reply *r)
{
	struct bw_rooms *rs = arg;
	const char *c;
	size_t n;

	if (rc != 0 || r == NULL || (c = bw_bus_str(r, &n)) == NULL ||
	    bw_bus_type(r) == BW_BUS_ERR || n == 0 || n > 24) {
		rs->forgetting = NULL; /* the bus went: on_state starts over */
		if (rc == 0 && r != NULL)
			bw_warn("rooms: Redis refused to take this node's "
				"earlier members out; they stay until it is "
				"back");
		return;
	}
	if (n == 1 && c[0] == '0') {
		rs->forgetting = NULL;
		(void)bw_hash_each(&rs->map, rejoin_room, rs);
		return;
	}
	forget_step(rs, c, n);
}

static void
forget_step(struct bw_rooms *rs, const char *cursor, size_t n)
{
	const char *argv[4] = {rs->node, rs->forgetting, cursor, REAP_WORK};
	size_t lens[4] = {strlen(rs->node), strlen(rs->forgetting), n,
			  sizeof(REAP_WORK) - 1};

	if (bw_bus_eval(rs->bus, rbus_lua_forget, 0, 4, argv, lens, forgot,
			rs) != 0)
		rs->forgetting = NULL;
}

static void
rejoin_all(struct bw_rooms *rs, int first)
{
	rs->forgetting = first ? GONE : "";
	forget_step(rs, "0", 1);
}

/* Redis's room counter raised to the highest id this node has known. */
static void
raise_floor(struct bw_rooms *rs)
{
	char top[16];
	const char *argv[1] = {top};

	if (rs->top_id == 0)
		return;
	snprintf(top, sizeof(top), "%u", rs->top_id);
	(void)bw_bus_eval(rs->bus, rbus_lua_floor, 0, 1, argv, NULL, NULL,
			  NULL);
}

void
rbus_on_state(void *arg, int up)
{
	struct bw_rooms *rs = arg;

	if (!up) {
		rs->bus_was_down = 1;
		rs->beat_ok_ms = 0;
		return;
	}
	/* the counter first (a Redis that restarted empty), then alive at
	 * once: a node killed before its first beat on the bus would never
	 * be reaped */
	raise_floor(rs);
	rs->beat_alive = 0;
	rbus_beat(rs);
	rejoin_all(rs, !rs->bus_seen);
	rs->bus_seen = 1;
	rs->bus_was_down = 0;
}

static void
counted(void *arg, int rc, const struct bw_bus_reply *r)
{
	struct bw_rooms *rs = arg;
	long long n;

	if (rc != 0 || r == NULL || bw_bus_type(r) != BW_BUS_ARR ||
	    bw_bus_len(r) != 2)
		return;
	rs->cluster_rooms = (uint64_t)bw_bus_int(bw_bus_at(r, 0));
	n = bw_bus_int(bw_bus_at(r, 1));
	rs->cluster_members = n > 0 ? (uint64_t)n : 0;
	rs->cluster_known = 1;
}

/* A heartbeat's answer: a node the others took for dead (reaped, its
 * members out of their rooms, their names free) while it ran writes its
 * members again, as after an outage. The first beat after the bus came up
 * is judged by on_state's rejoin. A beat Redis refuses (full, read-only)
 * is said once, loudly: until beats are taken again for longer than a
 * node may be silent, this node judges no other dead. */
static void
beaten(void *arg, int rc, const struct bw_bus_reply *r)
{
	struct bw_rooms *rs = arg;
	const char *why;
	size_t n;

	if (rc != 0 || r == NULL || bw_bus_type(r) != BW_BUS_INT ||
	    !rbus_up(rs)) {
		if (rc == 0 && r != NULL && bw_bus_type(r) == BW_BUS_ERR &&
		    !rs->beat_refused && (why = bw_bus_str(r, &n)) != NULL) {
			bw_error("rooms: Redis refused this node's heartbeat "
				 "(%.*s): the other nodes may take it for "
				 "dead, and it judges none of them until its "
				 "beats are taken again",
				 (int)(n > 200 ? 200 : n), why);
			rs->beat_refused = 1;
		}
		rs->beat_ok_ms = 0;
		return;
	}
	if (rs->beat_refused) {
		bw_info("rooms: Redis takes this node's heartbeats again");
		rs->beat_refused = 0;
	}
	if (rs->beat_ok_ms == 0)
		rs->beat_ok_ms = bw_now_ms();
	if (bw_bus_int(r) == 0 && rs->beat_alive) {
		bw_warn("rooms: the other nodes took this one for dead (a "
			"pause of %s or of Redis); its members are written "
			"again",
			rs->node);
		/* not forgotten first, as after an outage: the reaper took
		 * them out, and a join or a create under way since is in
		 * Redis and not yet here */
		(void)bw_hash_each(&rs->map, rejoin_room, rs);
	}
	rs->beat_alive = 1;
}

/* A reap step's answer: {reaped, still being reaped}; the next step goes
 * at once while nodes are left (each step's work is bounded), -1 when
 * Redis holds no heartbeat of this node's (it judges no one). */
static void reap(struct bw_rooms *rs);

static void
reaped(void *arg, int rc, const struct bw_bus_reply *r)
{
	struct bw_rooms *rs = arg;

	rs->reaping = 0;
	if (rc != 0 || r == NULL || bw_bus_type(r) != BW_BUS_ARR ||
	    bw_bus_len(r) != 2)
		return;
	if (bw_bus_int(bw_bus_at(r, 0)) > 0)
		bw_info("rooms: %lld node(s) that stopped beating reaped",
			bw_bus_int(bw_bus_at(r, 0)));
	if (bw_bus_int(bw_bus_at(r, 1)) > 0 && rbus_up(rs))
		reap(rs);
}

static void
reap(struct bw_rooms *rs)
{
	const char *argv[3] = {rs->node, GONE, REAP_WORK};

	if (rs->reaping || bw_bus_eval(rs->bus, rbus_lua_reap, 0, 3, argv, NULL,
				       reaped, rs) != 0)
		return;
	rs->reaping = 1;
}

void
rbus_beat(void *arg)
{
	struct bw_rooms *rs = arg;
	const char *me[2] = {rs->node, ALIVE_MS};

	if (rbus_up(rs)) {
		if (bw_bus_eval(rs->bus, rbus_lua_beat, 0, 2, me, NULL, beaten,
				rs) != 0)
			bw_debug("rooms: a heartbeat was not sent");
		/* only a node whose own beats Redis has taken for longer
		 * than a node may be silent judges the others: after Redis
		 * refused every node's beats, the first to be taken again
		 * would take all the others for dead */
		if (rs->beat_ok_ms != 0 &&
		    bw_now_ms() - rs->beat_ok_ms > ALIVE_MS_N)
			reap(rs);
		raise_floor(rs);
		(void)bw_bus_eval(rs->bus, rbus_lua_count, 0, 0, NULL, NULL,
				  counted, rs);
	}
	if (bw_loop_timer_start(rs->eng->loop, &rs->beat_t, BEAT_MS, rbus_beat,
				rs) != 0)
		bw_warn("rooms: the heartbeat stopped");
}
