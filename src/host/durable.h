/* Durability without stalling the loop: SQLite commits on the loop thread
 * without syncing (WAL, synchronous=NORMAL), and a reply that promises
 * durability waits for the next fsync of the WAL, run on a worker. Every
 * commit made before bw_durable_after is covered by the fsync its callback
 * follows; callers that arrive while one runs share the next (group
 * commit: one fsync for as many replies as arrive meanwhile).
 */
#ifndef BULWARK_SVC_DURABLE_H
#define BULWARK_SVC_DURABLE_H

#include "bulwark/err.h"
#include "host/store.h"
#include "engine/engine.h"

struct bw_durable;

/* Called on the loop thread with 0 once everything committed before the
 * wait began is on disk, or -errno if the fsync failed. */
typedef void (*bw_durable_fn)(void *arg, int rc);

int bw_durable_new(struct bw_durable **out, struct bw_engine *eng,
		   struct bw_store *store) BW_WUR;
/* After the engine has closed (no job in flight). NULL-safe. */
void bw_durable_free(struct bw_durable *d);
/* Calls fn(arg, rc) after the next fsync that starts from now on. */
int bw_durable_after(struct bw_durable *d, bw_durable_fn fn, void *arg) BW_WUR;
/* fsyncs run so far (each covering one or more waiters). */
uint64_t bw_durable_syncs(const struct bw_durable *d);

#endif
