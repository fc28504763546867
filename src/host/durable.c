/* Group commit: waiters queue while an fsync of the WAL runs on a worker;
 * when it ends, the waiters that were queued before it started are called,
 * and the next fsync starts for the rest.
 */
#include <stdlib.h>

#include "bulwark/log.h"
#include "host/durable.h"

struct waiter {
	struct waiter *next;
	bw_durable_fn fn;
	void *arg;
};

struct bw_durable {
	struct bw_engine *eng;
	struct bw_store *store;
	struct waiter *queued, **queued_tail; /* for the next fsync */
	struct waiter *running;		      /* covered by the one in flight */
	int busy;			      /* an fsync is in flight */
	int scheduled; /* start() deferred to the batch end */
	int rc;
	uint64_t syncs;
};

int
bw_durable_new(struct bw_durable **out, struct bw_engine *eng,
	       struct bw_store *store)
{
	struct bw_durable *d = calloc(1, sizeof(*d));

	if (d == NULL)
		return BW_ENOMEM;
	d->eng = eng;
	d->store = store;
	d->queued_tail = &d->queued;
	*out = d;
	return 0;
}

static void
call_all(struct waiter *w, int rc)
{
	struct waiter *next;

	for (; w != NULL; w = next) {
		next = w->next;
		w->fn(w->arg, rc);
		free(w);
	}
}

void
bw_durable_free(struct bw_durable *d)
{
	if (d == NULL)
		return;
	/* no job runs any more: whoever waits is told the truth */
	call_all(d->running, BW_ECLOSED);
	call_all(d->queued, BW_ECLOSED);
	free(d);
}

static void
sync_work(void *arg)
{
	struct bw_durable *d = arg;

	d->rc = bw_store_sync(d->store);
}

static void start(struct bw_durable *d);

static void
sync_done(void *arg)
{
	struct bw_durable *d = arg;
	struct waiter *w = d->running;

	d->busy = 0;
	d->running = NULL;
	d->syncs++;
	if (d->rc != 0)
		bw_error("durable: fsync of the database journal failed: %s",
			 bw_strerror(d->rc));
	call_all(w, d->rc);
	if (d->queued != NULL)
		start(d);
}

static void
start(struct bw_durable *d)
{
	struct waiter *w;
	int rc;

	if (d->busy || d->queued == NULL)
		return;
	d->running = d->queued;
	d->queued = NULL;
	d->queued_tail = &d->queued;
	d->busy = 1;
	if ((rc = bw_loop_submit(d->eng->loop, sync_work, sync_done, d)) == 0)
		return;
	d->busy = 0;
	w = d->running;
	d->running = NULL;
	call_all(w, rc);
}

/* Starting at the end of the loop's batch lets every reply of the batch
 * share one fsync. */
static void
start_deferred(void *arg)
{
	struct bw_durable *d = arg;

	d->scheduled = 0;
	start(d);
}

int
bw_durable_after(struct bw_durable *d, bw_durable_fn fn, void *arg)
{
	struct waiter *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return BW_ENOMEM;
	w->fn = fn;
	w->arg = arg;
	*d->queued_tail = w;
	d->queued_tail = &w->next;
	if (!d->busy && !d->scheduled) {
		if (bw_loop_defer(d->eng->loop, start_deferred, d) == 0)
			d->scheduled = 1;
		else
			start(d);
	}
	return 0;
}

uint64_t
bw_durable_syncs(const struct bw_durable *d)
{
	return d->syncs;
}
