/* The ways clients bend the protocols that the engine and the services
 * accept (docs/conformance.md): each kind is counted once per connection
 * that shows it, per client (the id in the request's header when there is
 * one, else the peer's address) in a table of the most recently seen, and
 * in a total per kind that never goes down (the metrics' counter).
 */
#ifndef BULWARK_ENGINE_DEVIATION_H
#define BULWARK_ENGINE_DEVIATION_H

#include <stdint.h>

#include "bulwark/ids.h"

struct bw_conn;
struct bw_engine;

enum bw_dev_kind {
	BW_DEV_PADDED,	      /* requests zero-padded to 1024 bytes */
	BW_DEV_SIZE_ZERO,     /* payload size 0, the fields following */
	BW_DEV_SIZE_OVER,     /* payload size past a fixed request's */
	BW_DEV_ONE_REQUEST,   /* one request, then the connection closed */
	BW_DEV_UNREAD_REPLY,  /* reset before the reply was all taken */
	BW_DEV_NAME_NOT_UTF8, /* a client name that is not UTF-8 */
	BW_DEV_LINE_PAUSE,    /* rooms: lines ended by a pause, no newline */
	BW_DEV_TEXT_NOT_UTF8, /* rooms: a line that is not UTF-8 */
	BW_DEV_KINDS
};

#define BW_DEV_WHO_CAP 72
#define BW_DEV_TABLE   256 /* clients remembered; the least recent goes */

struct bw_dev_entry {
	char who[BW_DEV_WHO_CAP]; /* "id:<32 hex>" or "addr:<address>" */
	uint64_t n[BW_DEV_KINDS]; /* connections that showed each kind */
	int64_t first_s, last_s;
};

struct bw_devtab {
	struct bw_dev_entry e[BW_DEV_TABLE];
	unsigned used;
	uint64_t total[BW_DEV_KINDS];
};

/* "padded", "size-zero", "size-over", "one-request", "unread-reply",
 * "name-not-utf8", "line-pause", "text-not-utf8". */
const char *bw_dev_kind_name(enum bw_dev_kind k);
/* Counts kind for c's client, once per connection: id is the request
 * header's client id (NULL or all zeros: the peer's address names the
 * client). Logged at the first of each kind on the connection. */
void bw_conn_deviates(struct bw_conn *c, const uint8_t *id,
		      enum bw_dev_kind kind);
/* The engine's table, for the console and the metrics. */
const struct bw_devtab *bw_engine_devs(const struct bw_engine *e);

#endif
