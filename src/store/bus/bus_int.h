/* Between the bus's files: where Redis is (bus_reply.c parses the URL into
 * it, bus.c connects there), and the bus itself (bus.c, bus_sub.c).
 * Internal to src/host/bus/.
 */
#ifndef BULWARK_HOST_BUS_INT_H
#define BULWARK_HOST_BUS_INT_H

#include <stddef.h>

#include <hiredis/async.h>

#include "bulwark/hash.h"
#include "bulwark/loop.h"
#include "store/bus/bus.h"

struct bus_where {
	char host[256], user[128], password[256], shown[320];
	int port, db;
};

/* A connection to Redis: commands, or pub/sub. */
struct link {
	struct bw_bus *b;
	redisAsyncContext *ac;
	struct bw_watch w;
	int watching;
	unsigned ev;
	int up;	 /* connected (and authenticated, the database chosen) */
	int sub; /* the pub/sub connection */
	uint64_t began_ms; /* when it began connecting */
};

struct chan {
	bw_bus_msg_fn fn; /* where its messages go */
	void *arg;
	/* its SUBSCRIBE's place among those sent on the pub/sub connection
	 * now (bw_bus.sub_sent then), 0 if not sent on it: in effect in
	 * Redis once sub_done has come that far */
	uint64_t seq;
	size_t n;
	char name[]; /* the hash's key */
};

struct bw_bus {
	struct bw_loop *loop;
	struct bus_where where;
	struct link cmd, sub;
	struct bw_timer retry_t, watch_t;
	unsigned backoff_ms;
	/* commands sent and not answered yet, and when the oldest of them
	 * was sent or the last answer came, whichever is later */
	uint64_t waiting, waited_since_ms;
	int up, down_logged, ever_up, closing, losing;
	/* SUBSCRIBEs sent again on a new pub/sub connection, not confirmed
	 * yet: the bus is up once Redis has them all, so that no line
	 * published after "back" misses a node still subscribing */
	size_t resub_left;
	/* (UN)SUBSCRIBEs sent on the pub/sub connection now, and Redis's
	 * confirmations of them (one each, in the order sent) */
	uint64_t sub_sent, sub_done;
	/* when the oldest unconfirmed was sent, or the last confirmation
	 * came, whichever is later */
	uint64_t sub_since_ms;
	struct bus_ready *ready; /* waiting for a channel to be in effect */
	struct bus_lookup *resolving; /* the host's address being looked up */
	struct bw_hash chans; /* subscribed, kept across reconnections */
	struct {
		bw_bus_state_fn fn;
		void *arg;
	} watch[BW_BUS_WATCHERS]; /* told of up and down, in turn */
	unsigned watch_n;
	uint64_t reconnects, commands, failed, messages;
};

/* bus.c: whether the bus is up now, told once per change (log, watchers). */
void bus_state(struct bw_bus *b);
/* bus_sub.c: every channel subscribed again, on a new pub/sub connection
 * (each counted in resub_left until Redis confirms it). */
void bus_subscribe_all(struct bw_bus *b);
/* bus_sub.c: those waiting for a subscription told BW_EDB (the bus was
 * lost or shut): the counts start again with the next connection. */
void bus_ready_fail_all(struct bw_bus *b);

/* redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] into b: 0, or BW_ECONFIG
 * with a reason (naming --bus) in why. */
int bus_parse_url(struct bus_where *b, const char *url, char *why,
		  size_t cap) BW_WUR;

/* bus_lookup.c: the host's address, looked up on a worker of loop (not by
 * hiredis, on the loop); done(arg, addr, NULL) or done(arg, NULL, why)
 * follows on the loop, unless cancelled first. */
struct bw_loop;
struct bus_lookup;
typedef void (*bus_lookup_fn)(void *arg, const char *addr, const char *why);
/* Whether host is an address already (IPv4 or IPv6), not a name. */
int bus_host_numeric(const char *host);
int bus_lookup_start(struct bw_loop *loop, const char *host, bus_lookup_fn done,
		     void *arg, struct bus_lookup **out) BW_WUR;
/* done will not be called; l is freed when its job ends. NULL-safe. */
void bus_lookup_cancel(struct bus_lookup *l);

#endif
