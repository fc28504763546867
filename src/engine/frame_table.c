/* The shared port's tables: the protocols added (each route checked as it
 * goes in), the limits a listener needs to serve them all, each protocol's
 * state on a connection, the connections counted by the protocol they last
 * spoke, and the hook run before each request (bw_frame_set_prepare).
 */
#include <stdlib.h>
#include <string.h>

#include "bulwark/log.h"
#include "engine/frame_int.h"

int
bw_frame_new(struct bw_frame **out)
{
	return (*out = calloc(1, sizeof(**out))) != NULL ? 0 : BW_ENOMEM;
}

void
bw_frame_free(struct bw_frame *f)
{
	if (f == NULL)
		return;
	frame_stats_fini(f);
	free(f);
}

/* The invariants frame_step relies on: a route's head is buffered whole
 * (so it fits the input a connection keeps between requests), and a route
 * without a streamed body is exactly its head (nothing of its payload is
 * left to be read as the next header). */
static int
routes_valid(const struct bw_frame_proto *p)
{
	const struct bw_frame_route *r;
	size_t i;

	for (i = 0; i < p->routes_n; i++) {
		r = &p->routes[i];
		if (r->head > r->min_size || r->min_size > r->max_size ||
		    r->head > CTRL_WANT || r->on_request == NULL ||
		    (r->on_body == NULL && r->head != r->max_size) ||
		    (r->lax_size != NULL && r->on_body == NULL))
			return 0;
	}
	return 1;
}

int
bw_frame_add(struct bw_frame *f, const struct bw_frame_proto *p, void *ctx,
	     const struct bw_conn_limits *lim)
{
	int rc;

	if (f->n >= BW_FRAME_PROTOS_MAX)
		return BW_ETOOBIG;
	if (!routes_valid(p)) {
		bw_error("frame: protocol %s has an invalid route", p->name);
		return BW_ECONFIG;
	}
	if ((rc = frame_stats_init(f, f->n)) != 0)
		return rc;
	f->p[f->n] = p;
	f->ctx[f->n] = ctx;
	if (lim != NULL)
		f->lim[f->n] = *lim;
	f->n++;
	return 0;
}

#define MAX(a, b) ((a) > (b) ? (a) : (b))

void
bw_frame_limits(const struct bw_frame *f, struct bw_conn_limits *out)
{
	unsigned i;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < f->n; i++) {
		out->in_max = MAX(out->in_max, f->lim[i].in_max);
		out->out_max = MAX(out->out_max, f->lim[i].out_max);
		out->idle_ms = MAX(out->idle_ms, f->lim[i].idle_ms);
		out->request_ms = MAX(out->request_ms, f->lim[i].request_ms);
	}
}

void *
bw_frame_state(struct bw_conn *c, const struct bw_frame_proto *p)
{
	struct frame_conn *fc = FC(c);
	int i = frame_proto_index(bw_conn_inst(c), p);

	if (fc == NULL || i < 0)
		return NULL;
	if (fc->state[i] == NULL && p->state_size > 0)
		fc->state[i] = calloc(1, p->state_size);
	return fc->state[i];
}

uint64_t *
frame_conns_of(struct bw_frame *f, const struct bw_frame_proto *p)
{
	int i = p != NULL ? frame_proto_index(f, p) : -1;

	return i >= 0 ? &f->conns[i] : &f->conns_none;
}

/* --- the prepare hook (frame.h) ------------------------------------------ */

void
bw_frame_set_prepare(struct bw_frame *f, bw_frame_prepare_fn fn, void *arg)
{
	f->prepare = fn;
	f->prepare_arg = arg;
}

void
bw_frame_set_admit(struct bw_frame *f, bw_frame_admit_fn fn, void *arg)
{
	f->admit = fn;
	f->admit_arg = arg;
}
