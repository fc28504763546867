/* The shared port's connection: read a header, find its route, check the
 * payload size against the route before reading any of it, buffer the
 * route's head, call the handler, stream the rest; decide from the bytes
 * that follow a request whether the client pads (the replies are
 * frame_reply.c's).
 */
#include <stdlib.h>
#include <string.h>

#include "bulwark/log.h"
#include "bulwark/util.h"
#include "engine/frame_int.h"

void
bw_frame_kick(struct bw_conn *c)
{
	if (bw_conn_dead(c) || FC(c) == NULL)
		return;
	if (FC(c)->st == F_BODY && bw_conn_paused(c))
		frame_body_resumed(c); /* we did not read: a new window */
	bw_conn_pause(c, 0);
	if (!FC(c)->in_input)
		bw_conn_kick(c);
}

/* --- the state machine -------------------------------------------------- */

enum hook { NEXT, DRAINED };

/* Tells every protocol that keeps state on c. */
static void
each_state(struct bw_conn *c, enum hook h)
{
	struct frame_conn *fc = FC(c);
	const struct bw_frame *f = bw_conn_inst(c);
	const struct bw_frame_proto *p;
	unsigned i;

	for (i = 0; i < f->n && !bw_conn_dead(c); i++) {
		p = f->p[i];
		if (fc->state[i] == NULL)
			continue;
		if (h == NEXT && p->on_next != NULL)
			p->on_next(c, f->ctx[i], fc->state[i]);
		else if (h == DRAINED && p->on_drained != NULL)
			p->on_drained(c, f->ctx[i], fc->state[i]);
	}
}

static const struct bw_frame_route *
find_route(const struct bw_frame *f, uint16_t code, unsigned *pi)
{
	unsigned i;
	size_t k;

	for (i = 0; i < f->n; i++) {
		for (k = 0; k < f->p[i]->routes_n; k++) {
			if (f->p[i]->routes[k].code == code) {
				*pi = i;
				return &f->p[i]->routes[k];
			}
		}
	}
	return NULL;
}

/* An unknown code is answered in the protocol whose range holds it, else
 * in the connection's protocol so far, else in the first table's. */
static const struct bw_frame_proto *
owner_of(struct bw_conn *c, uint16_t code)
{
	const struct bw_frame *f = bw_conn_inst(c);
	unsigned i;

	for (i = 0; i < f->n; i++) {
		if (code >= f->p[i]->code_lo && code <= f->p[i]->code_hi)
			return f->p[i];
	}
	return FC(c)->last != NULL ? FC(c)->last : f->p[0];
}

/* A payload size out of the route's bounds that BW_ROUTE_LAX accepts
 * (frame.h): 1 (fc->lax_zero or fc->skip set), 0 a framing error. The
 * header is consumed; c->in holds what followed it. */
static int
lax(struct bw_conn *c, struct bw_frame_req *r)
{
	struct frame_conn *fc = FC(c);
	const struct bw_frame_route *rt = r->route;

	if (!(rt->flags & BW_ROUTE_LAX))
		return 0;
	if (r->hdr.payload_size == 0 && rt->head > 0 && c->in.len > 0 &&
	    (rt->on_body != NULL || rt->min_size == rt->max_size))
		fc->lax_zero = 1;
	else if (rt->on_body == NULL && r->hdr.payload_size > rt->max_size &&
		 r->hdr.payload_size <= BW_ROUTE_LAX_MAX)
		fc->skip = r->hdr.payload_size - rt->head;
	else
		return 0;
	bw_conn_deviates(c, r->hdr.client_id,
			 fc->lax_zero ? BW_DEV_SIZE_ZERO : BW_DEV_SIZE_OVER);
	if (!fc->lax_logged) {
		fc->lax_logged = 1;
		bw_info("c%llu %u: lenient: the header says %u payload bytes; "
			"%s (a widely copied client does this)",
			ULL(c->id), r->hdr.code, r->hdr.payload_size,
			fc->lax_zero ? "the fields follow it"
				     : "the rest of the payload is ignored");
	}
	return 1;
}

static int
on_header(struct bw_conn *c)
{
	struct frame_conn *fc = FC(c);
	const struct bw_frame *f = bw_conn_inst(c);
	struct bw_frame_req *r = &fc->req;
	unsigned pi = 0;

	memset(r, 0, sizeof(*r));
	if (bw_req_hdr_decode(bw_buf_head(&c->in), c->in.len, &r->hdr) < 0)
		return 0;
	each_state(c, NEXT); /* bw_conn_in_offset(c) is the header's */
	if (bw_conn_dead(c))
		return 0;
	bw_buf_consume(&c->in, BW_REQ_HDR_LEN);
	memcpy(fc->last_id, r->hdr.client_id, BW_ID_LEN);
	if ((r->route = find_route(f, r->hdr.code, &pi)) == NULL) {
		r->proto = owner_of(c, r->hdr.code);
		frame_req_refused(c, r->proto, 1);
		return bw_frame_fail(c, "unknown request code");
	}
	r->proto = f->p[pi];
	r->ctx = f->ctx[pi];
	frame_req_start(c);
	fc->lax_zero = 0;
	fc->skip = 0;
	if ((r->hdr.payload_size < r->route->min_size ||
	     r->hdr.payload_size > r->route->max_size) &&
	    !lax(c, r)) {
		frame_req_refused(c, r->proto, 0);
		return bw_frame_fail(c,
				     r->route->on_body != NULL
					     ? "payload size out of bounds "
					       "for the request code"
					     : "payload size is wrong for the "
					       "request code");
	}
	if ((r->state = bw_frame_state(c, r->proto)) == NULL &&
	    r->proto->state_size > 0)
		return BW_ENOMEM;
	fc->st = F_HEAD;
	return 0;
}

/* The prepare hook for the request whose head is p: 1 while it works. */
static int
prepare(struct bw_conn *c, const uint8_t *p)
{
	struct frame_conn *fc = FC(c);
	const struct bw_frame *f = bw_conn_inst(c);

	if (fc->prep == P_DONE) {
		fc->prep = P_NONE;
		return 0;
	}
	if (fc->prep == P_WAIT)
		return 1;
	if (f->prepare == NULL ||
	    f->prepare(f->prepare_arg, c, &fc->req, p) == 0)
		return 0;
	fc->prep = P_WAIT;
	bw_conn_pause(c, 1);
	return 1;
}

/* A request the admit hook refused for now whose body is still on its
 * way: the body is read and thrown away and the error reply follows it,
 * so that the connection stays (a body that cannot be told from the next
 * header otherwise); one too large, or with no slot free, finishes it. */
static int
refuse_body(struct bw_conn *c, const struct bw_frame_req *r, const char *why)
{
	struct bw_frame *f = bw_conn_inst(c);
	uint64_t rest = (uint64_t)r->hdr.payload_size > r->route->head
				? (uint64_t)r->hdr.payload_size - r->route->head
				: 0;

	if (!f->refused_ready) {
		if (bw_slots_init(&f->refused, c->eng) != 0)
			return bw_frame_fail(c, why);
		f->refused.max = FRAME_REFUSED_SLOTS;
		f->refused.per_addr = FRAME_REFUSED_PER_ADDR;
		f->refused_ready = 1;
	}
	return bw_frame_discard(c, rest, &f->refused, NULL, why);
}

/* The admit hook's reason to refuse the request whose head is p, or NULL;
 * *for_now: the refusal is this request's alone. */
static const char *
admit(struct bw_conn *c, const uint8_t *p, int *for_now)
{
	const struct bw_frame *f = bw_conn_inst(c);

	*for_now = 0;
	return f->admit != NULL
		       ? f->admit(f->admit_arg, c, &FC(c)->req, p, for_now)
		       : NULL;
}

/* Returns 1 to wait for more input (padding not decided yet, or the
 * prepare hook at work). */
static int
on_head(struct bw_conn *c)
{
	struct frame_conn *fc = FC(c);
	struct bw_frame_req *r = &fc->req;
	const uint8_t *p = bw_buf_head(&c->in);
	size_t n = r->route->head, whole = n + fc->skip;
	/* what the request takes of c->in: read before the handler, which
	 * may end the request (and clear r) */
	size_t take = r->route->on_body != NULL ? n : whole;
	const char *why;
	int rc, pad, for_now;

	/* Course-sample clients pad the request with zeros: decide before
	 * replying, so the reply is padded too. A streamed payload decides
	 * at its end (bw_frame_body_end). */
	fc->padded = 0;
	if (r->route->on_body == NULL) {
		if ((pad = frame_padding(c, whole,
					 BW_REQ_HDR_LEN + (uint64_t)whole)) < 0)
			return 1;
		fc->padded = pad;
		if (pad)
			bw_conn_deviates(c, r->hdr.client_id, BW_DEV_PADDED);
		if (fc->lax_zero && !pad) {
			/* its fields are not followed by padding: not the
			 * client this lenience is for */
			bw_buf_consume(&c->in, c->in.len);
			return bw_frame_fail(c, "payload size is wrong for "
						"the request code");
		}
	} else if (fc->lax_zero) {
		if (r->route->lax_size == NULL ||
		    (r->hdr.payload_size = r->route->lax_size(p)) <
			    r->route->min_size ||
		    r->hdr.payload_size > r->route->max_size)
			return bw_frame_fail(c, "payload size out of bounds "
						"for the request code");
	}
	if (prepare(c, p))
		return 1;
	fc->requests++;
	bw_conn_request_deadline(c, 0);
	if (bw_engine_stopping(c->eng) && fc->requests == 1 &&
	    !(r->route->flags & BW_ROUTE_DURING_DRAIN)) {
		bw_buf_consume(&c->in, take);
		return bw_frame_fail(c, "shutting down");
	}
	if ((why = admit(c, p, &for_now)) != NULL) {
		bw_buf_consume(&c->in, take);
		if (!for_now)
			return bw_frame_fail(c, why);
		fc->st = F_REQ;
		fc->min_rate = 0;
		if (r->route->on_body != NULL) {
			rc = refuse_body(c, r, why);
			if (!bw_conn_dead(c) && fc->st == F_BODY)
				frame_body_begin(c);
			return rc;
		}
		rc = bw_frame_error(c, why);
		if (!bw_conn_dead(c) && fc->st == F_REQ)
			bw_frame_done(c);
		return rc;
	}
	fc->st = F_REQ;
	fc->min_rate = 0;
	rc = r->route->on_request(c, r, p);
	if (bw_conn_dead(c))
		return rc;
	bw_buf_consume(&c->in, take);
	if (fc->st == F_REQ)
		bw_frame_done(c);
	else if (fc->st == F_BODY)
		frame_body_begin(c);
	return rc;
}

static int
frame_step(struct bw_conn *c)
{
	struct frame_conn *fc = FC(c);
	int rc = 0;

	while (rc == 0 && !bw_conn_dead(c)) {
		switch (fc->st) {
		case F_HDR:
			if (c->in.len == 0)
				return 0;
			if (c->req_deadline_ms == 0)
				bw_conn_request_deadline(
					c, c->lis->cfg.lim.request_ms);
			if (c->in.len < BW_REQ_HDR_LEN || fc->padded)
				return 0; /* a padded client's rest is zeros */
			/* a peer that pipelines requests and does not read
			 * the replies: answer the next once these drain.
			 * Nothing more is read meanwhile (its FIN, read behind
			 * requests not yet answered, would end the connection
			 * before them), and the wait is ours: no request
			 * deadline (blocked output has its own) */
			if (bw_conn_queued(c) >= FRAME_OUT_BUDGET) {
				fc->stalled = 1;
				bw_conn_request_deadline(c, 0);
				bw_conn_pause(c, 1);
				return 0;
			}
			rc = on_header(c);
			break;
		case F_HEAD:
			if (c->in.len < fc->req.route->head + fc->skip)
				return 0;
			if ((rc = on_head(c)) == 1)
				return 0;
			break;
		case F_BODY:
			if (frame_body_slow(c))
				return BW_ETIMEDOUT;
			rc = fc->discarding
				     ? frame_discard_step(c)
				     : fc->req.route->on_body(c, &fc->req);
			if (fc->st == F_BODY)
				return rc;
			break;
		case F_REQ:
		case F_WAIT:
			return 0;
		}
		if (c->flags & BW_CONN_CLOSING)
			break;
	}
	return rc;
}

static int
frame_input(struct bw_conn *c)
{
	struct frame_conn *fc = FC(c);
	int rc;

	if (fc->failed)
		return 0;
	fc->in_input = 1;
	rc = frame_step(c);
	if (!bw_conn_dead(c))
		fc->in_input = 0;
	return rc;
}

static void
frame_drained(struct bw_conn *c)
{
	struct frame_conn *fc = FC(c);

	if (fc == NULL)
		return;
	each_state(c, DRAINED);
	if (fc->stalled && !bw_conn_dead(c)) {
		fc->stalled = 0;
		bw_conn_pause(c, 0);
		if (!fc->in_input)
			bw_conn_kick(c);
	}
}

static int
frame_open(struct bw_conn *c)
{
	if ((c->state = calloc(1, sizeof(struct frame_conn))) == NULL)
		return BW_ENOMEM;
	c->want = CTRL_WANT;
	((struct bw_frame *)bw_conn_inst(c))->conns_none++;
	return 0;
}

static void
frame_close(struct bw_conn *c)
{
	struct frame_conn *fc = FC(c);
	const struct bw_frame *f = bw_conn_inst(c);
	unsigned i;

	if (fc == NULL)
		return;
	if (fc->last != NULL && fc->last->sessions && fc->requests == 1 &&
	    !fc->padded && bw_conn_eof(c))
		bw_conn_deviates(c, fc->last_id, BW_DEV_ONE_REQUEST);
	if ((c->flags & BW_CONN_PEER_RESET) && fc->requests > 0 &&
	    c->out_total > 0)
		bw_conn_deviates(c, fc->last_id, BW_DEV_UNREAD_REPLY);
	frame_discard_end(c);
	(*frame_conns_of(bw_conn_inst(c), fc->last))--;
	for (i = 0; i < f->n; i++) {
		if (fc->state[i] == NULL)
			continue;
		if (f->p[i]->on_close != NULL)
			f->p[i]->on_close(c, f->ctx[i], fc->state[i]);
		free(fc->state[i]);
	}
	if (fc->errors_dropped > 0)
		bw_info("c%llu %u more error replies not logged", ULL(c->id),
			fc->errors_dropped);
	free(fc);
}

/* In progress: a request, bytes of one, a protocol's own work (a session
 * that owes a 1029), or a connection that arrived during the drain and has
 * not had a second to send its request. */
static int
frame_busy(const struct bw_conn *c)
{
	const struct frame_conn *fc = c->state;
	const struct bw_frame *f = bw_conn_inst(c);
	unsigned i;

	if (fc == NULL)
		return 0;
	if (fc->st != F_HDR || c->in.len > 0 ||
	    (fc->requests == 0 && bw_now_ms() - bw_conn_opened_ms(c) < 1000))
		return 1;
	for (i = 0; i < f->n; i++) {
		if (fc->state[i] != NULL && f->p[i]->busy != NULL &&
		    f->p[i]->busy(c, fc->state[i]))
			return 1;
	}
	return 0;
}

static int
frame_draining(void *inst)
{
	const struct bw_frame *f = inst;
	unsigned i;

	for (i = 0; i < f->n; i++) {
		if (f->p[i]->draining != NULL && f->p[i]->draining(f->ctx[i]))
			return 1;
	}
	return 0;
}

const struct bw_service bw_frame_service = {
	.name = "frame",
	.on_open = frame_open,
	.on_input = frame_input,
	.on_drained = frame_drained,
	.on_close = frame_close,
	.busy = frame_busy,
	.draining = frame_draining,
};

void
bw_frame_prepared(struct bw_conn *c)
{
	if (bw_conn_dead(c) || FC(c) == NULL || FC(c)->prep != P_WAIT)
		return;
	FC(c)->prep = P_DONE;
	bw_frame_kick(c);
}
