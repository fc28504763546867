/* The registry's LastSeen (the clients seen during a loop pass, written at
 * its end in one request) and the walk of every client (host/registry.h).
 */
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "host/registry.h"

/* --- LastSeen -------------------------------------------------------------
 */

static void touch_flush(void *arg);

static void
touch_written(struct bw_meta_req *req)
{
	struct bw_registry *r = req->arg;

	if (req->rc != 0)
		bw_warn("registry: LastSeen not saved: %s",
			bw_strerror(req->rc));
	r->touch_busy = 0;
	if (r->touched != NULL)
		bw_loop_call(r->loop, &r->touch_call, touch_flush, r);
}

/* Writes the LastSeen of every client touched since the last write, in
 * one request. */
static void
touch_flush(void *arg)
{
	struct bw_registry *r = arg;
	struct bw_client *c, *next;
	struct bw_meta_touch *v;
	size_t n = 0, cap;

	if (r->touch_busy || r->touched == NULL)
		return;
	for (c = r->touched; c != NULL; c = c->touch_next)
		n++;
	if (n > r->touch_cap) {
		cap = n + n / 2;
		if ((v = realloc(r->touch_v, cap * sizeof(*v))) == NULL) {
			bw_warn("registry: LastSeen not saved: %s",
				bw_strerror(BW_ENOMEM));
			n = 0; /* dropped: LastSeen is the next touch's */
		} else {
			r->touch_v = v;
			r->touch_cap = cap;
		}
	}
	r->touch_n = 0;
	for (c = r->touched; c != NULL; c = next) {
		next = c->touch_next;
		c->touch_next = NULL;
		c->touched = 0;
		if (r->touch_n < n) {
			memcpy(r->touch_v[r->touch_n].id, c->id, BW_ID_LEN);
			r->touch_v[r->touch_n++].last_seen = c->last_seen;
		}
	}
	r->touched = NULL;
	if (r->touch_n == 0)
		return;
	r->touch_busy = 1;
	bw_meta_req_init(&r->touch_req, BW_META_CLIENT_TOUCH, 0, touch_written,
			 r);
	r->touch_req.u.touch.v = r->touch_v;
	r->touch_req.u.touch.n = r->touch_n;
	bw_meta_submit(r->meta, &r->touch_req);
}

void
bw_registry_touch(struct bw_registry *r, struct bw_client *c)
{
	int64_t now = bw_time_s();

	if (c->last_seen == now)
		return; /* LastSeen has one-second resolution */
	c->last_seen = now;
	if (c->touched)
		return;
	c->touched = 1;
	c->touch_next = r->touched;
	r->touched = c;
	if (!r->touch_busy)
		bw_loop_call(r->loop, &r->touch_call, touch_flush, r);
}

struct bw_client *
bw_registry_seen(struct bw_registry *r, const uint8_t id[BW_ID_LEN])
{
	struct bw_client *c = bw_registry_by_id(r, id);

	if (c != NULL)
		bw_registry_touch(r, c);
	return c;
}

int
bw_registry_each_client(const struct bw_registry *r,
			int (*fn)(void *arg, void *client), void *arg)
{
	return bw_hash_each(&r->by_id, fn, arg);
}

/* --- the owner's choice: TLS only -----------------------------------------
 */

struct tls_only {
	struct bw_meta_req req;
	struct bw_client *c; /* clients are never removed while running */
	bw_registry_fn done;
	void *arg;
};

static void
tls_only_written(struct bw_meta_req *req)
{
	struct tls_only *t = (struct tls_only *)req;

	if (req->rc == 0)
		t->c->tls_only = 1;
	t->done(t->arg, req->rc, t->c);
	free(t);
}

int
bw_registry_set_tls_only(struct bw_registry *r, struct bw_client *c,
			 bw_registry_fn done, void *arg)
{
	struct tls_only *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return BW_ENOMEM;
	t->c = c;
	t->done = done;
	t->arg = arg;
	bw_meta_req_init(&t->req, BW_META_CLIENT_TLS_ONLY, BW_META_DURABLE,
			 tls_only_written, t);
	memcpy(t->req.u.key.id, c->id, BW_ID_LEN);
	bw_meta_submit(r->meta, &t->req);
	return 0;
}
