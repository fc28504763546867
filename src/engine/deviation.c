/* The deviation table (deviation.h): a fixed array of the clients most
 * recently seen bending a protocol, searched linearly (it is touched once
 * per kind per connection), the least recently seen replaced when full.
 */
#include <stdio.h>
#include <string.h>

#include "bulwark/log.h"
#include "bulwark/util.h"
#include "engine/deviation.h"
#include "engine/engine.h"
#include "engine/engine_int.h"

static const char *const NAMES[BW_DEV_KINDS] = {
	"padded",	"size-zero",	 "size-over",  "one-request",
	"unread-reply", "name-not-utf8", "line-pause", "text-not-utf8"};

const char *
bw_dev_kind_name(enum bw_dev_kind k)
{
	return (unsigned)k < BW_DEV_KINDS ? NAMES[k] : "?";
}

const struct bw_devtab *
bw_engine_devs(const struct bw_engine *e)
{
	return &e->devs;
}

static void
who_of(const struct bw_conn *c, const uint8_t *id, char out[BW_DEV_WHO_CAP])
{
	static const uint8_t zero[BW_ID_LEN];
	char hex[2 * BW_ID_LEN + 1];
	const char *at;

	if (id != NULL && memcmp(id, zero, BW_ID_LEN) != 0) {
		bw_hex_encode(id, BW_ID_LEN, hex);
		snprintf(out, BW_DEV_WHO_CAP, "id:%s", hex);
	} else if (c->addr != NULL) {
		snprintf(out, BW_DEV_WHO_CAP, "addr:%s", c->addr->addr);
	} else {
		/* "host:port" or "[v6]:port": the port is not the client */
		at = strrchr(c->peer, ':');
		snprintf(out, BW_DEV_WHO_CAP, "addr:%.*s",
			 at != NULL ? (int)(at - c->peer)
				    : (int)strlen(c->peer),
			 c->peer);
	}
}

static struct bw_dev_entry *
entry(struct bw_devtab *t, const char *who, int64_t now)
{
	struct bw_dev_entry *e, *oldest = NULL;
	unsigned i;

	for (i = 0; i < t->used; i++) {
		e = &t->e[i];
		if (strcmp(e->who, who) == 0)
			return e;
		if (oldest == NULL || e->last_s < oldest->last_s)
			oldest = e;
	}
	e = t->used < BW_DEV_TABLE ? &t->e[t->used++] : oldest;
	memset(e, 0, sizeof(*e));
	snprintf(e->who, sizeof(e->who), "%s", who);
	e->first_s = now;
	return e;
}

void
bw_conn_deviates(struct bw_conn *c, const uint8_t *id, enum bw_dev_kind kind)
{
	struct bw_devtab *t = &c->eng->devs;
	char who[BW_DEV_WHO_CAP];
	struct bw_dev_entry *e;
	int64_t now = bw_time_s();

	if ((unsigned)kind >= BW_DEV_KINDS || (c->own->devs & (1u << kind)))
		return;
	c->own->devs |= 1u << kind;
	who_of(c, id, who);
	e = entry(t, who, now);
	e->n[kind]++;
	e->last_s = now;
	t->total[kind]++;
	bw_conn_event(c, BW_LOG_INFO, "client_deviates", "client=%s kind=%s",
		      who, NAMES[kind]);
}
