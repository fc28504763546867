/* The bus between the nodes of a cluster: Redis, through hiredis's
 * asynchronous API on the loop (the only user of hiredis). Two connections:
 * one for commands (scripts, counters, publishing), one for pub/sub. Lost,
 * they are made again with a backoff, logged once each way; the channels
 * subscribed are subscribed again. While the bus is down, commands fail at
 * once and nothing is published: what only one node's members need goes
 * on without it.
 *
 * More than one service may use it: each channel is subscribed with the
 * callback its messages go to, each watcher of the bus going up and down
 * is told in turn, and a service publishes and runs its scripts through
 * the calls below, never building Redis's commands itself.
 */
#ifndef BULWARK_HOST_BUS_H
#define BULWARK_HOST_BUS_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/err.h"
#include "bulwark/loop.h"
#include "store/stats.h"

struct bw_bus;

/* A reply, read through the accessors below (valid during the callback). */
struct bw_bus_reply;
enum bw_bus_type { BW_BUS_NIL, BW_BUS_INT, BW_BUS_STR, BW_BUS_ARR, BW_BUS_ERR };
enum bw_bus_type bw_bus_type(const struct bw_bus_reply *r);
long long bw_bus_int(const struct bw_bus_reply *r);
/* A string's (or an error's) bytes; NULL for other types. */
const char *bw_bus_str(const struct bw_bus_reply *r, size_t *len);
size_t bw_bus_len(const struct bw_bus_reply *r); /* an array's elements */
const struct bw_bus_reply *bw_bus_at(const struct bw_bus_reply *r, size_t i);

/* A command's answer on the loop: rc 0 and the reply (which may be an
 * error reply), or BW_EDB with r NULL (the connection went first). */
typedef void (*bw_bus_reply_fn)(void *arg, int rc,
				const struct bw_bus_reply *r);
/* A message on a channel subscribed; the bus going up (1) or down (0). */
typedef void (*bw_bus_msg_fn)(void *arg, const char *channel, size_t clen,
			      const uint8_t *p, size_t n);
typedef void (*bw_bus_state_fn)(void *arg, int up);

struct bw_bus_cfg {
	const char *url;      /* redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] */
	const char *password; /* "" or NULL: the URL's, if any */
};

/* Parses the URL and starts connecting (not waiting). BW_ECONFIG with a
 * reason in why for a bad URL. */
int bw_bus_open(struct bw_bus **out, const struct bw_bus_cfg *cfg,
		struct bw_loop *loop, char *why, size_t cap) BW_WUR;
/* Closes both connections now: pending callbacks get BW_EDB (while their
 * owners are still there: shut before the services end), later commands
 * fail at once. */
void bw_bus_shut(struct bw_bus *b);
/* Shuts (if not yet) and frees. */
void bw_bus_close(struct bw_bus *b);

#define BW_BUS_WATCHERS 4 /* watchers of the bus's state at once */

/* fn(arg, up) each time the bus goes up or down, from now on (set before
 * the bus is up to hear the first). 0, or BW_EBUSY if BW_BUS_WATCHERS
 * watch already. */
int bw_bus_watch(struct bw_bus *b, bw_bus_state_fn fn, void *arg) BW_WUR;
/* fn(arg) is told no more. */
void bw_bus_unwatch(struct bw_bus *b, bw_bus_state_fn fn, void *arg);
int bw_bus_up(const struct bw_bus *b);

/* Every command below: 0, or BW_EDB at once if the bus is down (fn is
 * then not called), or BW_ENOMEM; fn (which may be NULL) gets the answer
 * on the loop. A publish or a script may be sent and forgotten. */
/* A command of Redis's (argv with lengths; lens NULL: strlen). */
int bw_bus_cmd(struct bw_bus *b, bw_bus_reply_fn fn, void *arg, int argc,
	       const char **argv, const size_t *lens) BW_WUR;
/* Publishes n bytes of p on channel (its answer: how many nodes had it). */
int bw_bus_publish(struct bw_bus *b, const char *channel, const void *p,
		   size_t n, bw_bus_reply_fn fn, void *arg);
/* Runs a Lua script (the text) atomically on Redis, with its arguments
 * (argc of argv, lens NULL: strlen), the first nkeys of them its keys.
 * At most BW_BUS_ARGS arguments. */
#define BW_BUS_ARGS 16
int bw_bus_eval(struct bw_bus *b, const char *script, int nkeys, int argc,
		const char **argv, const size_t *lens, bw_bus_reply_fn fn,
		void *arg);
/* Receives channel's messages in fn(arg, ...), kept across reconnections:
 * 0, BW_ENOMEM, or BW_EBUSY if another callback has the channel. */
int bw_bus_subscribe(struct bw_bus *b, const char *channel, bw_bus_msg_fn fn,
		     void *arg) BW_WUR;
void bw_bus_unsubscribe(struct bw_bus *b, const char *channel);
/* A subscription goes on a connection of its own, so a script run after
 * bw_bus_subscribe may publish on the channel before Redis has the
 * subscription: what needs every message from some moment on waits for
 * this. fn(arg, 0) once channel's subscription is in effect in Redis (at
 * once, from this call, if it is already), or fn(arg, BW_EDB) if the bus
 * goes down or the channel is unsubscribed first. 0; or BW_EDB (the bus
 * is down), BW_ENOTFOUND (channel not subscribed) or BW_ENOMEM, and fn is
 * not called. */
typedef void (*bw_bus_done_fn)(void *arg, int rc);
int bw_bus_subscribed(struct bw_bus *b, const char *channel, bw_bus_done_fn fn,
		      void *arg) BW_WUR;

/* The bus's figures (bus_up, bus_reconnects_total, ...). */
void bw_bus_stats(const struct bw_bus *b, bw_stat_emit emit, void *arg);

#endif
