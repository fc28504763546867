/* The bus's subscriptions (bus.h): a node's channels, kept across
 * reconnections and sent again on each new pub/sub connection, and the
 * messages that come on them. bus.c has the connections and commands.
 */
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "bulwark/hash.h"
#include "bulwark/util.h"
#include "store/bus/bus_int.h"

/* One waiting for a channel's subscription to be in effect in Redis. */
struct bus_ready {
	struct bus_ready *next;
	const struct chan *c;
	bw_bus_done_fn fn;
	void *arg;
};

static int
in_effect(const struct bw_bus *b, const struct chan *c)
{
	return b->sub.up && c->seq != 0 && b->sub_done >= c->seq;
}

/* Those waiting for c (every one if c is NULL), or whose channel is in
 * effect (ok), are told, one at a time and the list looked at again after
 * each: a callback may subscribe, unsubscribe (telling those waiting for
 * that channel) or wait again. */
static void
ready_tell(struct bw_bus *b, const struct chan *c, int ok)
{
	struct bus_ready **pp, *r;

	for (;;) {
		for (pp = &b->ready; (r = *pp) != NULL; pp = &r->next)
			if (ok ? in_effect(b, r->c) : c == NULL || r->c == c)
				break;
		if (r == NULL)
			return;
		*pp = r->next;
		r->fn(r->arg, ok ? 0 : BW_EDB);
		free(r);
	}
}

void
bus_ready_fail_all(struct bw_bus *b)
{
	b->sub_sent = b->sub_done = 0;
	ready_tell(b, NULL, 0);
}

/* --- pub/sub ---------------------------------------------------------------
 */

static void
on_sub_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct bw_bus *b = privdata;
	redisReply *r = reply;
	const struct chan *c;

	(void)ac;
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
	    r->element[0]->type != REDIS_REPLY_STRING)
		return;
	if (strcmp(r->element[0]->str, "unsubscribe") == 0) {
		b->sub_done++;
		b->sub_since_ms = bw_now_ms();
		return;
	}
	if (strcmp(r->element[0]->str, "subscribe") == 0) {
		/* confirmations come in the order of the SUBSCRIBEs, and those
		 * sent again on connecting went first */
		b->sub_done++;
		b->sub_since_ms = bw_now_ms();
		if (b->resub_left > 0 && --b->resub_left == 0)
			bus_state(b);
		if (b->ready != NULL)
			ready_tell(b, NULL, 1);
		return;
	}
	if (strcmp(r->element[0]->str, "message") != 0 ||
	    r->element[1]->type != REDIS_REPLY_STRING ||
	    r->element[2]->type != REDIS_REPLY_STRING)
		return;
	b->messages++;
	/* one unsubscribed a moment ago may still bring one: dropped */
	if ((c = bw_hash_get(&b->chans, r->element[1]->str,
			     r->element[1]->len)) != NULL)
		c->fn(c->arg, r->element[1]->str, r->element[1]->len,
		      (const uint8_t *)r->element[2]->str, r->element[2]->len);
}

/* Whether the command was queued (each is confirmed once: counted). */
static int
send_sub(struct bw_bus *b, const char *verb, const char *name, size_t n)
{
	const char *argv[2] = {verb, name};
	const size_t lens[2] = {strlen(verb), n};

	if (b->sub.ac == NULL || !b->sub.up ||
	    redisAsyncCommandArgv(b->sub.ac, on_sub_reply, b, 2, argv, lens) !=
		    REDIS_OK)
		return 0;
	if (b->sub_done == b->sub_sent) /* the watchdog times the oldest */
		b->sub_since_ms = bw_now_ms();
	b->sub_sent++;
	return 1;
}

static int
resub(void *arg, void *val)
{
	struct bw_bus *b = arg;
	struct chan *c = val;

	c->seq = 0;
	if (send_sub(b, "SUBSCRIBE", c->name, c->n)) {
		b->resub_left++;
		c->seq = b->sub_sent;
	}
	return 0;
}

void
bus_subscribe_all(struct bw_bus *b)
{
	(void)bw_hash_each(&b->chans, resub, b);
}

int
bw_bus_subscribe(struct bw_bus *b, const char *channel, bw_bus_msg_fn fn,
		 void *arg)
{
	size_t n = strlen(channel);
	struct chan *c;

	if ((c = bw_hash_get(&b->chans, channel, n)) != NULL)
		return c->fn == fn && c->arg == arg ? 0 : BW_EBUSY;
	if ((c = malloc(sizeof(*c) + n + 1)) == NULL)
		return BW_ENOMEM;
	c->fn = fn;
	c->arg = arg;
	c->seq = 0;
	c->n = n;
	memcpy(c->name, channel, n + 1);
	if (bw_hash_put(&b->chans, c->name, n, c) != 0) {
		free(c);
		return BW_ENOMEM;
	}
	if (send_sub(b, "SUBSCRIBE", c->name, n))
		c->seq = b->sub_sent;
	return 0;
}

int
bw_bus_subscribed(struct bw_bus *b, const char *channel, bw_bus_done_fn fn,
		  void *arg)
{
	const struct chan *c = bw_hash_get(&b->chans, channel, strlen(channel));
	struct bus_ready *r, **pp;

	if (!b->up || !b->sub.up)
		return BW_EDB;
	if (c == NULL)
		return BW_ENOTFOUND;
	if (in_effect(b, c)) {
		fn(arg, 0);
		return 0;
	}
	if (c->seq == 0) /* its SUBSCRIBE could not be sent: none will come */
		return BW_EDB;
	if ((r = malloc(sizeof(*r))) == NULL)
		return BW_ENOMEM;
	r->next = NULL;
	r->c = c;
	r->fn = fn;
	r->arg = arg;
	for (pp = &b->ready; *pp != NULL; pp = &(*pp)->next)
		;
	*pp = r;
	return 0;
}

void
bw_bus_unsubscribe(struct bw_bus *b, const char *channel)
{
	size_t n = strlen(channel);
	struct chan *c = bw_hash_del(&b->chans, channel, n);

	if (c == NULL)
		return;
	/* (one never sent on this connection has no confirmation to come:
	 * hiredis would have no callback for its answer) */
	if (c->seq != 0)
		(void)send_sub(b, "UNSUBSCRIBE", channel, n);
	ready_tell(b, c, 0);
	free(c);
}
