/* What the rooms' files share: the instance, a room, a connection's state
 * (the menu's steps, then membership), and the functions one file offers
 * the others. Internal to src/svc/rooms/.
 */
#ifndef BULWARK_SVC_ROOMS_INT_H
#define BULWARK_SVC_ROOMS_INT_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/util.h"
#include "bulwark/crypto.h"
#include "bulwark/hash.h"
#include "bulwark/loop.h"
#include "engine/engine.h"
#include "store/bus/bus.h"
#include "svc/rooms/rooms.h"

#define NAME_CHARS    64  /* code points of a name */
#define NAME_CAP      260 /* its bytes (4 per code point) and a NUL */
#define PASS_MAX      128 /* bytes of a password */
#define SALT_LEN      16
#define HASH_MAX      4 /* scrypt hashes at once, at most (16 MiB each) */
#define HASH_LEN      32
#define FAIL_FREE     3	   /* failures from an address before delays */
#define DELAY_MIN_MS  250u /* the first delay, doubled each failure */
#define DELAY_MAX_MS  4000u
#define RATE_SCALE_MS 1000u /* tokens are counted in 1/1000 of a line */
#define MENU_STEPS    10u   /* the whole menu: this many steps' time */
#define NO_ID	      "There is no group id like this,try again\n"
#define NO_PASS	      "There is no group password like this,try again\n"

struct rconn;
struct aq;

struct room {
	uint32_t id;
	uint8_t salt[SALT_LEN], hash[HASH_LEN];
	/* in the order they joined, which is the order a relay is queued
	 * and flushed in (rotating it after each relay, so that no member
	 * was always last, raised everyone's p99 by half: bench/roomsbench) */
	struct rconn *members, *tail;
	unsigned members_n;
	/* its members being written again to Redis (rejoin scripts not yet
	 * answered): until then its lines stay on this node, and what comes
	 * from the others is not given to them (the id may be another
	 * room's now, see rbus_lua_rejoin) */
	unsigned rejoining;
	/* members of this node waiting to join it (rbus_join): the room is
	 * here, its channel heard, before they are in it */
	unsigned joining;
};

struct bw_rooms {
	struct bw_rooms_cfg cfg;
	struct bw_engine *eng;
	struct bw_hash map; /* id (4 bytes, little-endian) -> struct room */
	uint32_t next_id;   /* never reused; 0 once ids ran out */
	int stopping;
	char *line; /* the line being handled (line_max + 1) */
	char *out;  /* a line being relayed ("name: text\n") */
	size_t out_cap;
	/* passwords waiting for a worker, per source address (pass.c), the
	 * addresses taking turns in a ring; and those on a worker */
	struct bw_hash hash_addrs;
	struct aq *ring_head, *ring_tail;
	unsigned hashing, hash_max;
	int addr_slot;	/* its slot of bw_addr.held: passwords in progress */
	int ghost_slot; /* and another: ghosts (at most the address's share) */
	/* figures */
	uint64_t members_n, at_menu, created, joined, refused, cut_off;
	uint64_t lines_relayed, deliveries;
	uint64_t too_long; /* connections closed for a line over line_max */
	uint64_t ghosts;   /* members gone, still saying held lines */
	uint64_t ghost_dropped; /* ghosts whose held lines were dropped */
	/* rooms across nodes (rooms_bus.c): the bus (NULL: this node's rooms
	 * are its own), this node's name, its heartbeat */
	struct bw_bus *bus;
	const char *node;
	struct bw_timer beat_t;
	int bus_was_down;
	int bus_seen;	/* the bus has been up since the start */
	int beat_alive; /* a heartbeat found this node alive since it was up */
	/* since when Redis has taken every heartbeat (monotonic ms; 0: the
	 * last one was refused or not answered): others are judged dead only
	 * after a node has beaten for longer than a node may be silent */
	uint64_t beat_ok_ms;
	int beat_refused;	/* said in the log, until one is taken */
	int reaping;		/* a reap's steps under way */
	const char *forgetting; /* a forget's steps under way: its notice */
	/* the highest room id this node has known: Redis's counter is raised
	 * to it whenever the bus comes (back) and at every beat, so that a
	 * Redis that restarted without its data never gives an id again */
	uint32_t top_id;
	char *bus_buf; /* a line being published */
	size_t bus_buf_cap;
	uint64_t bus_published, bus_received;
	/* the cluster's rooms and members, from Redis at the last beat */
	int cluster_known;
	uint64_t cluster_rooms, cluster_members;
};

enum rstate {
	R_MENU,	    /* the greeting: 1, 2 or 3 */
	R_C_NAME,   /* create: the name */
	R_C_PASS,   /* create: the password */
	R_J_NAME,   /* join: the name */
	R_J_ID,	    /* join: the room's id */
	R_J_PASS,   /* join: the password */
	R_J_RENAME, /* join: the name is taken in the room */
	R_HASH,	    /* a password waits for or is on a worker */
	R_DELAY,    /* a wrong answer waits out the address's delay */
	R_ROOM,	    /* a member */
	R_GHOST,    /* a member gone: its held lines are said at its rate */
	R_GONE,	    /* saying goodbye; nothing more is read */
	R_BUS,	    /* a room's lookup, creation or joining waits for the bus */
};

struct hashjob;

struct rconn {
	struct bw_rooms *rs;
	struct bw_conn *c; /* NULL for a ghost */
	uint64_t conn_id;  /* c's id (a ghost keeps it): its member id */
	unsigned bus_seq;  /* the bus reply it waits for (R_BUS) */
	int v_have;	   /* the room's verifier, from the bus */
	uint8_t v_salt[SALT_LEN], v_hash[HASH_LEN];
	struct bw_buf ghost_in;	    /* a ghost's lines still to say */
	struct bw_addr *ghost_addr; /* whose share of ghosts it takes */
	enum rstate st;
	char name[NAME_CAP];
	char *key; /* its canonical decomposition if not the name; heap */
	uint32_t room_id; /* the room joined, or being joined */
	struct room *room;
	struct rconn *prev, *next; /* the room's members */
	unsigned attempts;	   /* wrong ids and passwords */
	/* menu deadlines: the step being asked (a new step starts its own
	 * deadline, asking the same again does not), when it and the whole
	 * menu end, and since when the server is the one keeping the
	 * connection waiting (a worker, a delay: that time does not count) */
	enum rstate step;
	uint64_t step_end_ms, menu_end_ms, waiting_since_ms;
	uint64_t waited_ms; /* server-side waits credited so far */
	unsigned creates;   /* rooms this connection has asked to create */
	int overflow;	    /* cut off: it did not read */
	int at_menu;	    /* counted in bw_rooms.at_menu */
	/* a password on its way (R_HASH): queued or on a worker */
	struct hashjob *job;
	struct rconn *hash_next;
	int queued;
	/* rate: tokens (RATE_SCALE_MS per line) as of tokens_ms */
	uint64_t tokens, tokens_ms;
	int throttled;
	struct bw_timer pause_t, rate_t, delay_t;
	char delay_text[128];	/* what R_DELAY says when it ends */
	enum rstate delay_next; /* R_GONE: the goodbye of the last one */
};

/* rooms.c */
#define RC(c) ((struct rconn *)(c)->state)
/* Queues text for the peer; a failed send closes it after the callback
 * (engine.h). Returns the send's result. */
int rc_send(struct rconn *rc, const void *p, size_t n);
int rc_say(struct rconn *rc, const char *text);
int rc_sayf(struct rconn *rc, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Enters state st and says its prompt (menu steps start their deadline). */
void rc_prompt(struct rconn *rc, enum rstate st);
/* The server keeps rc waiting (its password on a worker, a delay): the
 * menu's deadlines stop until the next prompt. */
void rc_wait(struct rconn *rc);
/* Says text and closes once it is flushed. */
void rc_bye(struct rconn *rc, const char *text);
/* Input may go on (after a worker or a delay). */
void rc_resume(struct rconn *rc);
/* Frees a ghost (out of its room already). */
void ghost_free(struct rconn *rc);

/* menu.c: one complete line in a menu step */
void menu_line(struct rconn *rc, const char *line, size_t n);
/* A wrong id or password: counts it for the connection and the address,
 * then says text and goes to next, after the address's delay if any. */
void menu_wrong(struct rconn *rc, const char *text, enum rstate next);

/* room.c */
struct room *room_find(struct bw_rooms *rs, uint32_t id);
/* A new room with the hash of its password; NULL when full or ids ran
 * out (why says which). */
struct room *room_new(struct bw_rooms *rs, const uint8_t salt[SALT_LEN],
		      const uint8_t hash[HASH_LEN], const char **why);
/* What names are compared by (proto/text.h, bw_text_name_key). */
static inline const char *
rc_key(const struct rconn *rc)
{
	return rc->key != NULL ? rc->key : rc->name;
}
/* 1 if a name with this key is taken in room. */
int room_has_name(const struct room *r, const char *key);
/* rc enters the room: the greeting for it, the notice to the others. */
void room_enter(struct rconn *rc, struct room *r, int created);
/* rc leaves (why: the notice to the others after its name, NULL: none);
 * an empty room is deleted. */
void room_leave(struct rconn *rc, const char *why);
/* One line from a member: a command or a message to relay. */
void room_line(struct rconn *rc, const char *line, size_t n);
/* What the client bends in a line it sent (took bytes of input, the line
 * n of them; flush: taken by a pause or the end): a line ended by a pause
 * rather than a newline (the seed's own client), or not UTF-8. Counted as
 * the client's deviations (engine/deviation.h). */
void rc_note_deviations(struct rconn *rc, const uint8_t *line, size_t n,
			size_t took, int flush);
/* Queues text to every member of r but skip. */
void room_tell(struct room *r, const struct rconn *skip, const char *text,
	       size_t n);
void rooms_free_all(struct bw_rooms *rs);

/* A room of the bus's with no member here and none joining is deleted
 * here (its channel no longer heard). */
void room_drop_if_unused(struct bw_rooms *rs, struct room *r);
/* A room with this id (from the bus) and verifier; NULL if out of memory. */
struct room *room_add(struct bw_rooms *rs, uint32_t id,
		      const uint8_t salt[SALT_LEN],
		      const uint8_t hash[HASH_LEN]);

/* bus.c: rooms across nodes; each entry point below is used only when
 * rbus_on (a bus configured) */
int rbus_on(const struct bw_rooms *rs);
int rbus_up(const struct bw_rooms *rs);
int rbus_start(struct bw_rooms *rs) BW_WUR;
void rbus_stop(struct bw_rooms *rs);
/* join: the room's verifier from Redis, then the password is asked */
void rbus_lookup(struct rconn *rc, uint32_t id);
/* the password was right: rc joins (its name claimed in the room) */
void rbus_join(struct rconn *rc);
/* a new room with rc in it */
void rbus_create(struct rconn *rc, const uint8_t salt[SALT_LEN],
		 const uint8_t hash[HASH_LEN]);
/* rc left room id (why: the notice, NULL: none); -1 if the bus is down
 * (then the caller tells its own members) */
int rbus_leave(struct rconn *rc, uint32_t id, const char *why);
/* text from rc to its room: 0 published (every node delivers it, this one
 * too), -1 (the bus is down: the caller delivers it here) */
int rbus_relay(struct rconn *rc, const char *text, size_t n);
/* "<rc's name><what>" published to rc's room as rc's (a notice): 0, or -1
 * (the bus is down: the caller tells its own members) */
int rbus_notice(struct rconn *rc, const char *what);
/* /who from Redis: 0, or -1 (the caller answers from here) */
int rbus_who(struct rconn *rc);
/* the room has no members here any more */
void rbus_room_gone(struct bw_rooms *rs, uint32_t id);

/* bus.c, for bus_menu.c */
void rbus_member_of(const struct bw_rooms *rs, uint64_t conn_id, char *out,
		    size_t cap);
void rbus_channel_of(uint32_t id, char *out, size_t cap);
/* A room's channel and key prefix on Redis: "bulwark:room:ID" (see
 * rooms_scripts.c for the keys below it) */
#define RBUS_ROOM_PREFIX     "bulwark:room:"
#define RBUS_ROOM_PREFIX_LEN (sizeof(RBUS_ROOM_PREFIX) - 1)
/* "unavailable, try again later", then next, reading again */
void rbus_unavailable(struct rconn *rc, enum rstate next);
/* a member Redis has that nobody here is any more leaves it */
void rbus_leave_orphan(struct bw_rooms *rs, uint32_t id, const char *member);
/* the local room of the cluster's room id, made (and its channel
 * subscribed) if this node has no member in it yet; NULL: no memory */
struct room *rbus_local_room(struct bw_rooms *rs, uint32_t id,
			     const uint8_t salt[SALT_LEN],
			     const uint8_t hash[HASH_LEN]);

/* the notice of a member gone without a word */
#define RBUS_GONE " has removed from the group\n"
/* a line or notice on a room's channel, told to its members here */
void rbus_on_line(void *arg, const char *channel, size_t clen, const uint8_t *p,
		  size_t n);
/* beat.c: this node's life in Redis; rbus_beat also re-arms its timer */
void rbus_on_state(void *arg, int up);
void rbus_beat(void *arg);

/* scripts.c: the bus's Lua scripts (ARGV as rooms_bus.c passes them) */
extern const char rbus_lua_lookup[], rbus_lua_create[], rbus_lua_join[],
	rbus_lua_leave[], rbus_lua_reap[], rbus_lua_forget[], rbus_lua_rejoin[],
	rbus_lua_floor[], rbus_lua_beat[], rbus_lua_who[], rbus_lua_count[];

/* pass.c: passwords, hashed on the worker pool */
/* create: derives the new room's hash; join: checks against room_id's.
 * rc waits in R_HASH; the answer comes through menu_hashed. */
void pass_start(struct rconn *rc, int create, const char *pw, size_t n);
/* The connection goes away: its job, if any, finishes without it. */
void pass_detach(struct rconn *rc);
/* The queues' memory, at the end. */
void pass_fini(struct bw_rooms *rs);
/* The result: ok (join: the password is right; create: the hash is in
 * salt/hash), or err (the job failed). */
void menu_hashed(struct rconn *rc, int create, int ok,
		 const uint8_t salt[SALT_LEN], const uint8_t hash[HASH_LEN]);

#endif
