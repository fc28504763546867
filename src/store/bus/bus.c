/* The bus (bus.h): hiredis's asynchronous contexts driven by the loop's
 * epoll through their event hooks, as hiredis's own adapters for libev or
 * libuv do: hiredis says when it wants to read or write, the loop says when
 * the socket is ready. The connections are made again after a loss, with a
 * backoff; the subscriptions with them (bus_sub.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "bulwark/crypto.h"
#include "bulwark/hash.h"
#include "bulwark/log.h"
#include "bulwark/loop.h"
#include "bulwark/util.h"
#include "store/bus/bus_int.h"

#define BACKOFF_MIN_MS 100u
#define BACKOFF_MAX_MS 2000u
/* A Redis that stops answering (stopped, or a network that drops without
 * a reset) is lost once a command has waited this long, or a connection
 * has not become ready this long after it began; looked at this often. */
#define ANSWER_MS   3000u
#define WATCHDOG_MS 500u

/* --- the loop's side of hiredis --------------------------------------------
 */

static void
on_io(void *arg, unsigned events)
{
	struct link *k = arg;

	if (k->ac != NULL && (events & (BW_EV_READ | BW_EV_ERROR)))
		redisAsyncHandleRead(k->ac);
	if (k->ac != NULL && (events & BW_EV_WRITE))
		redisAsyncHandleWrite(k->ac);
}

static void
want(struct link *k, unsigned ev)
{
	if (ev == k->ev && k->watching)
		return;
	k->ev = ev;
	if (!k->watching) {
		if (bw_loop_watch(k->b->loop, &k->w, k->ac->c.fd, ev, on_io,
				  k) == 0)
			k->watching = 1;
		return;
	}
	(void)bw_loop_update(k->b->loop, &k->w, ev);
}

static void
add_read(void *arg)
{
	struct link *k = arg;

	want(k, k->ev | BW_EV_READ);
}

static void
del_read(void *arg)
{
	struct link *k = arg;

	want(k, k->ev & ~(unsigned)BW_EV_READ);
}

static void
add_write(void *arg)
{
	struct link *k = arg;

	want(k, k->ev | BW_EV_WRITE);
}

static void
del_write(void *arg)
{
	struct link *k = arg;

	want(k, k->ev & ~(unsigned)BW_EV_WRITE);
}

static void
cleanup(void *arg)
{
	struct link *k = arg;

	if (k->watching)
		bw_loop_unwatch(k->b->loop, &k->w);
	k->watching = 0;
	k->ev = 0;
}

/* --- connections -----------------------------------------------------------
 */

static void connect_all(void *arg);

void
bus_state(struct bw_bus *b)
{
	int up = b->cmd.up && b->sub.up && b->resub_left == 0;
	unsigned i;

	if (up == b->up)
		return;
	b->up = up;
	if (up) {
		b->backoff_ms = 0;
		if (b->ever_up)
			bw_info("bus: Redis at %s is back; relays between "
				"nodes go on",
				b->where.shown);
		else
			bw_info("bus: Redis at %s", b->where.shown);
		b->ever_up = 1;
		b->down_logged = 0;
	}
	for (i = 0; i < b->watch_n; i++)
		b->watch[i].fn(b->watch[i].arg, up);
}

/* Both connections go (one lost is both lost: the bus is one thing), and
 * are made again after the backoff. */
static void
lost(struct bw_bus *b, const char *why)
{
	if (b->losing)
		return; /* the other connection's end, freed from here */
	if (!b->down_logged && !b->closing) {
		bw_error("bus: %s Redis at %s: %s; relays between nodes pause "
			 "until it is back",
			 b->ever_up ? "lost" : "cannot reach", b->where.shown,
			 why);
		b->down_logged = 1;
	}
	b->losing = 1;
	if (b->cmd.ac != NULL)
		redisAsyncFree(b->cmd.ac);
	if (b->sub.ac != NULL)
		redisAsyncFree(b->sub.ac);
	b->cmd.ac = b->sub.ac = NULL; /* (freed, or once this callback ends) */
	b->losing = 0;
	b->waiting = 0;
	b->resub_left = 0;
	b->cmd.up = b->sub.up = 0;
	bus_state(b);
	bus_ready_fail_all(b); /* (the bus down: none can wait again) */
	if (b->closing)
		return;
	b->backoff_ms = b->backoff_ms == 0 ? BACKOFF_MIN_MS
			: b->backoff_ms * 2 > BACKOFF_MAX_MS
				? BACKOFF_MAX_MS
				: b->backoff_ms * 2;
	if (bw_loop_timer_start(b->loop, &b->retry_t, b->backoff_ms,
				connect_all, b) != 0)
		bw_error("bus: cannot schedule a reconnection");
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
	struct link *k = ac->data;
	struct bw_bus *b = k->b;

	(void)status;
	k->ac = NULL; /* hiredis frees it after this (its cleanup hook,
		       * before this one, has unwatched it) */
	k->up = 0;
	if (!b->closing)
		lost(b, ac->errstr[0] != '\0' ? ac->errstr : "closed");
}

/* Redis without an append-only file starts empty after a restart, its
 * room counter with it: every node raises the counter again when it is
 * back, but a room made through one node before another is back can be
 * given an id that node's live room has (docs/scaling.md). Said at each
 * connection, where an operator reads it; a Redis that refuses CONFIG (a
 * managed one, the command renamed) is not judged. */
static void
on_persistence(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct bw_bus *b = privdata;
	redisReply *r = reply;

	(void)ac;
	if (r == NULL)
		return; /* going away */
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[1]->type == REDIS_REPLY_STRING &&
	    strcmp(r->element[1]->str, "no") == 0)
		bw_warn("bus: Redis at %s keeps no append-only file "
			"(appendonly no): if it restarts without its data, a "
			"room made before every node is back can be given the "
			"id of a live room; set appendonly yes",
			b->where.shown);
	else if (r->type == REDIS_REPLY_ERROR)
		bw_debug("bus: CONFIG GET appendonly: %s", r->str);
}

/* The answer to the first command on a connection (AUTH, SELECT, or a
 * PING): the connection is ready once it comes back without an error. */
static void
on_ready(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct link *k = privdata;
	redisReply *r = reply;

	(void)ac;
	if (r == NULL)
		return; /* going away */
	if (r->type == REDIS_REPLY_ERROR) {
		lost(k->b, r->str);
		return;
	}
	k->up = 1;
	if (k->sub)
		bus_subscribe_all(k->b);
	else
		(void)redisAsyncCommand(ac, on_persistence, k->b,
					"CONFIG GET appendonly");
	bus_state(k->b);
}

static void
on_connect(const redisAsyncContext *ac, int status)
{
	struct link *k = ac->data;

	if (status != REDIS_OK) {
		k->ac = NULL; /* hiredis frees it after this, unwatching it
			       * through the cleanup hook */
		lost(k->b, ac->errstr);
		return;
	}
	/* the kernel's probes end a connection whose peer went silently */
	(void)redisEnableKeepAlive((redisContext *)&ac->c);
}

/* addr: a numeric address (hiredis would resolve a name on this thread) */
static int
open_link(struct bw_bus *b, struct link *k, const char *addr)
{
	redisAsyncContext *ac = redisAsyncConnect(addr, b->where.port);
	char db[16];

	if (ac == NULL)
		return BW_ENOMEM;
	if (ac->err) {
		bw_debug("bus: %s", ac->errstr);
		redisAsyncFree(ac);
		return BW_EDB;
	}
	k->ac = ac;
	k->ev = 0;
	k->watching = 0;
	k->began_ms = bw_now_ms();
	ac->data = k;
	ac->ev.data = k;
	ac->ev.addRead = add_read;
	ac->ev.delRead = del_read;
	ac->ev.addWrite = add_write;
	ac->ev.delWrite = del_write;
	ac->ev.cleanup = cleanup;
	(void)redisAsyncSetConnectCallback(ac, on_connect);
	(void)redisAsyncSetDisconnectCallback(ac, on_disconnect);
	/* the first commands wait for the connection in hiredis's buffer */
	if (b->where.password[0] != '\0' && b->where.user[0] != '\0')
		(void)redisAsyncCommand(ac, NULL, NULL, "AUTH %s %s",
					b->where.user, b->where.password);
	else if (b->where.password[0] != '\0')
		(void)redisAsyncCommand(ac, NULL, NULL, "AUTH %s",
					b->where.password);
	snprintf(db, sizeof(db), "%d", b->where.db);
	if (b->where.db != 0)
		(void)redisAsyncCommand(ac, NULL, NULL, "SELECT %s", db);
	/* an error above (a wrong password) fails this one too */
	(void)redisAsyncCommand(ac, on_ready, k, "PING");
	return 0;
}

static void
connect_to(struct bw_bus *b, const char *addr)
{
	if ((b->cmd.ac == NULL && open_link(b, &b->cmd, addr) != 0) ||
	    (b->sub.ac == NULL && open_link(b, &b->sub, addr) != 0))
		lost(b, "cannot connect");
}

/* A name is looked up on a worker at each connection (bus_lookup.c), and
 * hiredis is given the address. */
static void
looked_up(void *arg, const char *addr, const char *why)
{
	struct bw_bus *b = arg;

	b->resolving = NULL;
	if (b->closing)
		return;
	if (addr == NULL)
		lost(b, why);
	else
		connect_to(b, addr);
}

static void
connect_all(void *arg)
{
	struct bw_bus *b = arg;

	if (b->closing || b->resolving != NULL)
		return;
	if (b->ever_up)
		b->reconnects++;
	if (bus_host_numeric(b->where.host))
		connect_to(b, b->where.host);
	else if (bus_lookup_start(b->loop, b->where.host, looked_up, b,
				  &b->resolving) != 0)
		lost(b, "cannot look its address up");
}

/* --- commands --------------------------------------------------------------
 */

struct pending {
	struct bw_bus *b;
	bw_bus_reply_fn fn;
	void *arg;
};

static void
on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct pending *p = privdata;

	(void)ac;
	if (reply == NULL) {
		p->b->failed++;
	} else if (p->b->waiting > 0) {
		p->b->waiting--;
		p->b->waited_since_ms = bw_now_ms();
	}
	if (p->fn != NULL)
		p->fn(p->arg, reply != NULL ? 0 : BW_EDB,
		      (const struct bw_bus_reply *)reply);
	free(p);
}

int
bw_bus_cmd(struct bw_bus *b, bw_bus_reply_fn fn, void *arg, int argc,
	   const char **argv, const size_t *lens)
{
	struct pending *p;

	if (!b->up || b->cmd.ac == NULL)
		return BW_EDB;
	if ((p = malloc(sizeof(*p))) == NULL)
		return BW_ENOMEM;
	p->b = b;
	p->fn = fn;
	p->arg = arg;
	if (redisAsyncCommandArgv(b->cmd.ac, on_reply, p, argc, argv, lens) !=
	    REDIS_OK) {
		free(p);
		return BW_EDB;
	}
	b->commands++;
	if (b->waiting++ == 0)
		b->waited_since_ms = bw_now_ms();
	return 0;
}

int
bw_bus_publish(struct bw_bus *b, const char *channel, const void *p, size_t n,
	       bw_bus_reply_fn fn, void *arg)
{
	const char *argv[3] = {"PUBLISH", channel, p};
	const size_t lens[3] = {7, strlen(channel), n};

	return bw_bus_cmd(b, fn, arg, 3, argv, lens);
}

int
bw_bus_eval(struct bw_bus *b, const char *script, int nkeys, int argc,
	    const char **argv, const size_t *lens, bw_bus_reply_fn fn,
	    void *arg)
{
	const char *a[3 + BW_BUS_ARGS];
	size_t l[3 + BW_BUS_ARGS];
	char keys[16];
	int i;

	if (argc < 0 || argc > BW_BUS_ARGS || nkeys < 0 || nkeys > argc)
		return argc > BW_BUS_ARGS ? BW_ETOOBIG : BW_ESIZE;
	snprintf(keys, sizeof(keys), "%d", nkeys);
	a[0] = "EVAL";
	l[0] = 4;
	a[1] = script;
	l[1] = strlen(script);
	a[2] = keys;
	l[2] = strlen(keys);
	for (i = 0; i < argc; i++) {
		a[3 + i] = argv[i];
		l[3 + i] = lens != NULL ? lens[i] : strlen(argv[i]);
	}
	return bw_bus_cmd(b, fn, arg, 3 + argc, a, l);
}

/* Every WATCHDOG_MS: a command unanswered for ANSWER_MS (or a
 * subscription unconfirmed: a member joining waits for it), or a connection
 * not ready ANSWER_MS after it began (the pub/sub one: its subscriptions
 * not all confirmed), is a lost Redis (a hung one never closes its end). */
static void
watchdog(void *arg)
{
	struct bw_bus *b = arg;
	uint64_t now = bw_now_ms();

	if (b->closing)
		return;
	if (b->up && b->waiting > 0 && now - b->waited_since_ms > ANSWER_MS)
		lost(b, "no answer for 3 s");
	else if (b->up && b->sub_done < b->sub_sent &&
		 now - b->sub_since_ms > ANSWER_MS)
		lost(b, "no subscription confirmed for 3 s");
	else if (!b->up &&
		 ((b->cmd.ac != NULL && !b->cmd.up &&
		   now - b->cmd.began_ms > ANSWER_MS) ||
		  (b->sub.ac != NULL && (!b->sub.up || b->resub_left > 0) &&
		   now - b->sub.began_ms > ANSWER_MS)))
		lost(b, "not ready within 3 s");
	if (bw_loop_timer_start(b->loop, &b->watch_t, WATCHDOG_MS, watchdog,
				b) != 0)
		bw_error("bus: the watchdog stopped: no memory for its timer");
}

/* --- the URL, open and close -----------------------------------------------
 */

int
bw_bus_open(struct bw_bus **out, const struct bw_bus_cfg *cfg,
	    struct bw_loop *loop, char *why, size_t cap)
{
	struct bw_bus *b = calloc(1, sizeof(*b));
	int rc;

	*out = NULL;
	if (b == NULL)
		return BW_ENOMEM;
	b->loop = loop;
	b->cmd.b = b->sub.b = b;
	b->sub.sub = 1;
	if ((rc = bus_parse_url(&b->where, cfg->url, why, cap)) != 0 ||
	    (rc = bw_hash_init(&b->chans)) != 0) {
		bw_wipe(b, sizeof(*b));
		free(b);
		return rc;
	}
	if (cfg->password != NULL && cfg->password[0] != '\0')
		snprintf(b->where.password, sizeof(b->where.password), "%s",
			 cfg->password);
	connect_all(b);
	watchdog(b);
	*out = b;
	return 0;
}

static int
free_chan(void *arg, void *val)
{
	(void)arg;
	free(val);
	return 0;
}

void
bw_bus_shut(struct bw_bus *b)
{
	if (b == NULL || b->closing)
		return;
	b->closing = 1;
	b->up = 0; /* commands the callbacks below send fail at once */
	bw_loop_timer_stop(b->loop, &b->retry_t);
	bw_loop_timer_stop(b->loop, &b->watch_t);
	if (b->cmd.ac != NULL)
		redisAsyncFree(b->cmd.ac);
	if (b->sub.ac != NULL)
		redisAsyncFree(b->sub.ac);
	b->cmd.ac = b->sub.ac = NULL;
	b->sub.up = 0;
	bus_ready_fail_all(b);
}

void
bw_bus_close(struct bw_bus *b)
{
	if (b == NULL)
		return;
	bw_bus_shut(b);
	bus_lookup_cancel(b->resolving);
	b->resolving = NULL;
	(void)bw_hash_each(&b->chans, free_chan, NULL);
	bw_hash_fini(&b->chans);
	bw_wipe(b, sizeof(*b));
	free(b);
}

int
bw_bus_watch(struct bw_bus *b, bw_bus_state_fn fn, void *arg)
{
	if (b->watch_n == BW_BUS_WATCHERS)
		return BW_EBUSY;
	b->watch[b->watch_n].fn = fn;
	b->watch[b->watch_n].arg = arg;
	b->watch_n++;
	return 0;
}

void
bw_bus_unwatch(struct bw_bus *b, bw_bus_state_fn fn, void *arg)
{
	unsigned i;

	for (i = 0; i < b->watch_n; i++) {
		if (b->watch[i].fn != fn || b->watch[i].arg != arg)
			continue;
		memmove(&b->watch[i], &b->watch[i + 1],
			(b->watch_n - i - 1) * sizeof(b->watch[0]));
		b->watch_n--;
		return;
	}
}

int
bw_bus_up(const struct bw_bus *b)
{
	return b != NULL && b->up;
}

void
bw_bus_stats(const struct bw_bus *b, bw_stat_emit emit, void *arg)
{
	emit(arg, "bus_up", "connected to Redis (1) or not (0)",
	     (uint64_t)b->up);
	emit(arg, "bus_reconnects_total",
	     "attempts to connect to Redis again after a loss", b->reconnects);
	emit(arg, "bus_commands_total", "commands sent to Redis", b->commands);
	emit(arg, "bus_failed_total", "commands lost with a connection",
	     b->failed);
	emit(arg, "bus_messages_total", "messages received on the bus",
	     b->messages);
}
