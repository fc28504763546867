/* The bus's subscriptions (bus.h): a node's channels, kept across
 * reconnections and sent again on each new pub/sub connection, and the
 * messages that come on them. bus.c has the connections and commands.
 */
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "bulwark/hash.h"
#include "store/bus/bus_int.h"

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
	if (strcmp(r->element[0]->str, "subscribe") == 0) {
		/* confirmations come in the order of the SUBSCRIBEs, and those
		 * sent again on connecting went first */
		if (b->resub_left > 0 && --b->resub_left == 0)
			bus_state(b);
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

/* Whether the command was queued. */
static int
send_sub(struct bw_bus *b, const char *verb, const char *name, size_t n)
{
	const char *argv[2] = {verb, name};
	const size_t lens[2] = {strlen(verb), n};

	return b->sub.ac != NULL && b->sub.up &&
	       redisAsyncCommandArgv(b->sub.ac, on_sub_reply, b, 2, argv,
				     lens) == REDIS_OK;
}

static int
resub(void *arg, void *val)
{
	struct bw_bus *b = arg;
	const struct chan *c = val;

	if (send_sub(b, "SUBSCRIBE", c->name, c->n))
		b->resub_left++;
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
	c->n = n;
	memcpy(c->name, channel, n + 1);
	if (bw_hash_put(&b->chans, c->name, n, c) != 0) {
		free(c);
		return BW_ENOMEM;
	}
	(void)send_sub(b, "SUBSCRIBE", c->name, n);
	return 0;
}

void
bw_bus_unsubscribe(struct bw_bus *b, const char *channel)
{
	size_t n = strlen(channel);
	struct chan *c = bw_hash_del(&b->chans, channel, n);

	if (c == NULL)
		return;
	(void)send_sub(b, "UNSUBSCRIBE", channel, n);
	free(c);
}
