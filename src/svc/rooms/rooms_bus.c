/* Rooms across the nodes of a cluster, over the bus (--bus: Redis).
 *
 * Redis holds what every node must agree on, each change one script (so
 * atomic): the next room id (never reused), each room's password verifier,
 * its members (node/connection -> name) and their names, the rooms each
 * node has members in, and each node's heartbeat. A room's lines and
 * notices are published on its channel, bulwark:room:ID; every node with
 * members in it subscribes and delivers what comes, its own members' lines
 * included, to its members but the sender: every member sees a room's
 * lines in the one order Redis published them.
 *
 * A node that stops beating (killed) is reaped by any other within a few
 * seconds: its members leave with the usual notice, and a room left empty
 * is deleted. While the bus is down, a node's own members go on talking
 * among themselves; rooms are neither created nor joined from elsewhere,
 * and when it is back the node's members are written again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/log.h"
#include "bulwark/util.h"
#include "proto/text.h"
#include "svc/rooms/rooms_int.h"

/* --- helpers ---------------------------------------------------------------
 */

int
rbus_on(const struct bw_rooms *rs)
{
	return rs->bus != NULL;
}

int
rbus_up(const struct bw_rooms *rs)
{
	return rs->bus != NULL && bw_bus_up(rs->bus);
}

void
rbus_member_of(const struct bw_rooms *rs, uint64_t conn_id, char *out,
	       size_t cap)
{
	snprintf(out, cap, "%s/%llu", rs->node, ULL(conn_id));
}

void
rbus_channel_of(uint32_t id, char *out, size_t cap)
{
	snprintf(out, cap, RBUS_ROOM_PREFIX "%u", id);
}

void
rbus_unavailable(struct rconn *rc, enum rstate next)
{
	(void)rc_say(rc, "The group chat is unavailable, try again later\n");
	rc_prompt(rc, next);
	rc_resume(rc);
}

/* A member Redis took for a connection gone before it entered the room
 * here: it leaves without a word (no one was told of its coming; and the
 * notice this sent, RBUS_GONE alone, had no name before it). */
void
rbus_leave_orphan(struct bw_rooms *rs, uint32_t id, const char *member)
{
	char ids[16];
	const char *argv[3] = {ids, member, ""};

	snprintf(ids, sizeof(ids), "%u", id);
	(void)bw_bus_eval(rs->bus, rbus_lua_leave, 0, 3, argv, NULL, NULL,
			  NULL);
}

/* --- the local room of a room of the cluster ------------------------------ */

struct room *
rbus_local_room(struct bw_rooms *rs, uint32_t id, const uint8_t salt[SALT_LEN],
		const uint8_t hash[HASH_LEN])
{
	struct room *r = room_find(rs, id);
	char ch[32];

	if (r != NULL) /* the same room, not one that had its id before */
		return memcmp(r->salt, salt, SALT_LEN) == 0 &&
				       memcmp(r->hash, hash, HASH_LEN) == 0
			       ? r
			       : NULL;
	if ((r = room_add(rs, id, salt, hash)) == NULL)
		return NULL;
	rbus_channel_of(id, ch, sizeof(ch));
	if (bw_bus_subscribe(rs->bus, ch, rbus_on_line, rs) != 0)
		bw_warn("rooms: cannot subscribe to room %u", id);
	return r;
}

void
rbus_room_gone(struct bw_rooms *rs, uint32_t id)
{
	char ch[32];

	if (rs->bus == NULL)
		return;
	rbus_channel_of(id, ch, sizeof(ch));
	bw_bus_unsubscribe(rs->bus, ch);
}

/* --- leave, lines, /who ----------------------------------------------------
 */

int
rbus_leave(struct rconn *rc, uint32_t id, const char *why)
{
	char member[96];

	if (!rbus_up(rc->rs))
		return -1;
	rbus_member_of(rc->rs, rc->conn_id, member, sizeof(member));
	{
		char ids[16], notice[NAME_CAP + 128];
		const char *argv[3] = {ids, member, notice};

		snprintf(ids, sizeof(ids), "%u", id);
		if (why != NULL)
			snprintf(notice, sizeof(notice), "%s%s", rc->name, why);
		else
			notice[0] = '\0';
		if (bw_bus_eval(rc->rs->bus, rbus_lua_leave, 0, 3, argv, NULL,
				NULL, NULL) != 0)
			return -1;
	}
	return 0;
}

/* A line published and not answered yet: if the bus is lost before Redis
 * answers, Redis may never have ordered it, and this node's own members
 * would never get it; they are given it here instead (the other nodes'
 * members may miss it: relays between nodes pause with the bus). */
struct unsent {
	struct bw_rooms *rs;
	uint32_t id;
	uint64_t from; /* the sender's member id */
	size_t n;
	char text[];
};

static void
published(void *arg, int rc_, const struct bw_bus_reply *r)
{
	struct unsent *u = arg;
	struct room *room;
	struct rconn *m;
	int rc;

	(void)r;
	if (rc_ != 0 && (room = room_find(u->rs, u->id)) != NULL) {
		for (m = room->members; m != NULL; m = m->next) {
			if (m->st != R_ROOM || m->conn_id == u->from)
				continue;
			rc = bw_conn_send(m->c, u->text, u->n);
			if (rc == 0)
				u->rs->deliveries++;
			else if (rc == BW_ETOOBIG)
				m->overflow = 1;
		}
	}
	free(u);
}

int
rbus_relay(struct rconn *rc, const char *text, size_t n)
{
	struct bw_rooms *rs = rc->rs;
	struct unsent *u;
	char ch[32], *msg;
	size_t m;

	if (!rbus_up(rs) || rc->room == NULL || rc->room->rejoining > 0 ||
	    rs->forgetting != NULL)
		return -1;
	rbus_channel_of(rc->room->id, ch, sizeof(ch));
	m = (size_t)snprintf(rs->bus_buf, 96, "%s/%llu\n", rs->node,
			     ULL(rc->conn_id));
	if (m + n > rs->bus_buf_cap || (u = malloc(sizeof(*u) + n)) == NULL)
		return -1;
	u->rs = rs;
	u->id = rc->room->id;
	u->from = rc->conn_id;
	u->n = n;
	memcpy(u->text, text, n);
	msg = rs->bus_buf;
	memcpy(msg + m, text, n);
	if (bw_bus_publish(rs->bus, ch, msg, m + n, published, u) != 0) {
		free(u);
		return -1;
	}
	rs->bus_published++;
	return 0;
}

int
rbus_notice(struct rconn *rc, const char *what)
{
	char buf[NAME_CAP + 128];
	int n = snprintf(buf, sizeof(buf), "%s%s", rc->name, what);

	if (n <= 0 || (size_t)n >= sizeof(buf))
		return -1;
	return rbus_relay(rc, buf, (size_t)n);
}

struct whow {
	struct bw_rooms *rs;
	uint64_t conn_id;
	uint32_t id;
};

static void
whod(void *arg, int rc_, const struct bw_bus_reply *r)
{
	struct whow *w = arg;
	struct bw_conn *c = bw_engine_conn(w->rs->eng, w->conn_id);
	struct rconn *rc;
	char *buf = w->rs->out;
	size_t cap = w->rs->out_cap < 8192 ? w->rs->out_cap : 8192, o, i, n,
	       total;
	const char *v, *nl;
	unsigned shown = 0;

	if (c == NULL || bw_conn_dead(c) || (rc = RC(c)) == NULL ||
	    rc->st != R_ROOM || rc->room == NULL || rc->room->id != w->id ||
	    rc_ != 0 || r == NULL || bw_bus_type(r) != BW_BUS_ARR) {
		free(w);
		return;
	}
	total = bw_bus_len(r);
	o = (size_t)snprintf(buf, cap, "Members of group #%u (%zu):", w->id,
			     total);
	for (i = 0; i < total; i++) {
		if ((v = bw_bus_str(bw_bus_at(r, i), &n)) == NULL ||
		    (nl = memchr(v, '\n', n)) == NULL)
			continue;
		n -= (size_t)(nl + 1 - v);
		if (o + n + 2 + 32 > cap)
			break;
		o += (size_t)snprintf(buf + o, cap - o, "%s %.*s",
				      shown == 0 ? "" : ",", (int)n, nl + 1);
		shown++;
	}
	if (shown < total)
		o += (size_t)snprintf(buf + o, cap - o, " and %zu more",
				      total - shown);
	buf[o++] = '\n';
	(void)rc_send(rc, buf, o);
	free(w);
}

int
rbus_who(struct rconn *rc)
{
	struct whow *w;
	char ids[16];
	const char *argv[1] = {ids};

	if (!rbus_up(rc->rs) || rc->room == NULL ||
	    (w = calloc(1, sizeof(*w))) == NULL)
		return -1;
	w->rs = rc->rs;
	w->conn_id = rc->conn_id;
	w->id = rc->room->id;
	snprintf(ids, sizeof(ids), "%u", w->id);
	if (bw_bus_eval(rc->rs->bus, rbus_lua_who, 0, 1, argv, NULL, whod, w) !=
	    0) {
		free(w);
		return -1;
	}
	return 0;
}

/* --- what the bus brings ---------------------------------------------------
 */

void
rbus_on_line(void *arg, const char *channel, size_t clen, const uint8_t *p,
	     size_t n)
{
	struct bw_rooms *rs = arg;
	const uint8_t *nl = memchr(p, '\n', n);
	char name[32];
	uint64_t id, conn;
	struct room *r;
	const struct rconn *m, *skip;
	size_t sl, node_n;

	if (clen <= RBUS_ROOM_PREFIX_LEN ||
	    clen - RBUS_ROOM_PREFIX_LEN >= sizeof(name) || nl == NULL ||
	    memcmp(channel, RBUS_ROOM_PREFIX, RBUS_ROOM_PREFIX_LEN) != 0)
		return;
	memcpy(name, channel + RBUS_ROOM_PREFIX_LEN,
	       clen - RBUS_ROOM_PREFIX_LEN);
	name[clen - RBUS_ROOM_PREFIX_LEN] = '\0';
	if (bw_parse_u64(name, 1, UINT32_MAX, &id) != 0 ||
	    (r = room_find(rs, (uint32_t)id)) == NULL || r->rejoining > 0 ||
	    rs->forgetting != NULL)
		return;
	rs->bus_received++;
	/* the sender ("NODE/CONN"), read once: one of ours is not told its
	 * own line, or its own notice */
	sl = (size_t)(nl - p);
	node_n = strlen(rs->node);
	skip = NULL;
	if (sl > node_n + 1 && sl - node_n - 1 < sizeof(name) &&
	    memcmp(p, rs->node, node_n) == 0 && p[node_n] == '/') {
		memcpy(name, p + node_n + 1, sl - node_n - 1);
		name[sl - node_n - 1] = '\0';
		if (bw_parse_u64(name, 0, UINT64_MAX, &conn) == 0)
			for (m = r->members; m != NULL && skip == NULL;
			     m = m->next)
				if (m->conn_id == conn)
					skip = m;
	}
	room_tell(r, skip, (const char *)nl + 1, n - sl - 1);
}

int
rbus_start(struct bw_rooms *rs)
{
	rs->bus_buf_cap = 96 + NAME_CAP + 4 + BW_TEXT_CAP(rs->cfg.line_max);
	if ((rs->bus_buf = malloc(rs->bus_buf_cap)) == NULL)
		return BW_ENOMEM;
	if (bw_bus_watch(rs->bus, rbus_on_state, rs) != 0) {
		free(rs->bus_buf);
		rs->bus_buf = NULL;
		return BW_EBUSY;
	}
	rbus_beat(rs);
	return 0;
}

void
rbus_stop(struct bw_rooms *rs)
{
	if (rs->bus == NULL)
		return;
	bw_loop_timer_stop(rs->eng->loop, &rs->beat_t);
	bw_bus_unwatch(rs->bus, rbus_on_state, rs);
	free(rs->bus_buf);
	rs->bus_buf = NULL;
}
