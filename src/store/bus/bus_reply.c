/* The bus's replies as the rest of the daemon reads them, and its URL
 * (bus.h). hiredis is seen only here, in bus.c and in bus_sub.c.
 */
#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "bulwark/util.h"
#include "store/bus/bus_int.h"

/* --- replies ---------------------------------------------------------------
 */

enum bw_bus_type
bw_bus_type(const struct bw_bus_reply *r)
{
	const redisReply *x = (const redisReply *)r;

	switch (x->type) {
	case REDIS_REPLY_INTEGER:
		return BW_BUS_INT;
	case REDIS_REPLY_STRING:
	case REDIS_REPLY_STATUS:
		return BW_BUS_STR;
	case REDIS_REPLY_ARRAY:
		return BW_BUS_ARR;
	case REDIS_REPLY_ERROR:
		return BW_BUS_ERR;
	default:
		return BW_BUS_NIL;
	}
}

long long
bw_bus_int(const struct bw_bus_reply *r)
{
	const redisReply *x = (const redisReply *)r;

	return x->type == REDIS_REPLY_INTEGER ? x->integer : 0;
}

const char *
bw_bus_str(const struct bw_bus_reply *r, size_t *len)
{
	const redisReply *x = (const redisReply *)r;

	if (x->type != REDIS_REPLY_STRING && x->type != REDIS_REPLY_STATUS &&
	    x->type != REDIS_REPLY_ERROR)
		return NULL;
	*len = x->len;
	return x->str;
}

size_t
bw_bus_len(const struct bw_bus_reply *r)
{
	const redisReply *x = (const redisReply *)r;

	return x->type == REDIS_REPLY_ARRAY ? x->elements : 0;
}

const struct bw_bus_reply *
bw_bus_at(const struct bw_bus_reply *r, size_t i)
{
	const redisReply *x = (const redisReply *)r;

	if (x->type != REDIS_REPLY_ARRAY || i >= x->elements)
		return NULL;
	return (const struct bw_bus_reply *)x->element[i];
}

int
bus_parse_url(struct bus_where *b, const char *url, char *why, size_t cap)
{
	const char *p, *at, *slash, *colon;
	uint64_t v;
	char num[16];
	size_t n;

	if (strncmp(url, "redis://", 8) != 0) {
		snprintf(why, cap,
			 "--bus takes redis://[:PASSWORD@]HOST[:PORT]"
			 "[/DB]");
		return BW_ECONFIG;
	}
	p = url + 8;
	slash = strchr(p, '/');
	at = strrchr(p, '@');
	if (at != NULL && (slash == NULL || at < slash)) {
		colon = memchr(p, ':', (size_t)(at - p));
		if (colon == NULL || (size_t)(colon - p) >= sizeof(b->user) ||
		    (size_t)(at - colon - 1) >= sizeof(b->password)) {
			snprintf(why, cap,
				 "--bus: the user part is USER:PASSWORD "
				 "or :PASSWORD");
			return BW_ECONFIG;
		}
		memcpy(b->user, p, (size_t)(colon - p));
		b->user[colon - p] = '\0';
		memcpy(b->password, colon + 1, (size_t)(at - colon - 1));
		b->password[at - colon - 1] = '\0';
		p = at + 1;
	}
	n = slash != NULL ? (size_t)(slash - p) : strlen(p);
	colon = memchr(p, ':', n);
	b->port = 6379;
	if (colon != NULL) {
		if ((size_t)(p + n - colon - 1) >= sizeof(num)) {
			snprintf(why, cap, "--bus: a bad port");
			return BW_ECONFIG;
		}
		memcpy(num, colon + 1, (size_t)(p + n - colon - 1));
		num[p + n - colon - 1] = '\0';
		if (bw_parse_u64(num, 1, 65535, &v) != 0) {
			snprintf(why, cap, "--bus: a bad port");
			return BW_ECONFIG;
		}
		b->port = (int)v;
		n = (size_t)(colon - p);
	}
	if (n == 0 || n >= sizeof(b->host)) {
		snprintf(why, cap, "--bus: no host");
		return BW_ECONFIG;
	}
	memcpy(b->host, p, n);
	b->host[n] = '\0';
	if (slash != NULL && slash[1] != '\0') {
		if (bw_parse_u64(slash + 1, 0, 1000, &v) != 0) {
			snprintf(why, cap, "--bus: a bad database number");
			return BW_ECONFIG;
		}
		b->db = (int)v;
	}
	snprintf(b->shown, sizeof(b->shown), "%s:%d/%d%s", b->host, b->port,
		 b->db, b->password[0] != '\0' ? " (with a password)" : "");
	return 0;
}
