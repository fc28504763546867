/* The messenger service (requests 600-604): its routing table, the small
 * requests (600 register, 602 public key), its queue table, the evidence
 * hooks that decide when delivered messages may be deleted, and the
 * instance.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/msg/msg_int.h"

struct bw_client *
msg_requester(struct bw_msg *m, struct bw_frame_req *r)
{
	return bw_registry_seen(m->reg, r->hdr.client_id);
}

struct mqueue *
msg_queue(const struct bw_msg *m, const uint8_t id[BW_ID_LEN])
{
	return bw_hash_get(&m->queues, id, BW_ID_LEN);
}

struct mqueue *
msg_queue_for(struct bw_msg *m, const uint8_t id[BW_ID_LEN])
{
	struct mqueue *q = msg_queue(m, id);

	if (q != NULL)
		return q;
	if ((q = calloc(1, sizeof(*q))) == NULL)
		return NULL;
	memcpy(q->id, id, BW_ID_LEN);
	if (bw_hash_put(&m->queues, q->id, BW_ID_LEN, q) != 0) {
		free(q);
		return NULL;
	}
	return q;
}

/* --- the register request (600) ------------------------------------------
 * The registered reply (2100) promises the client exists: it leaves once
 * the row is durable.
 */

struct reg_reply {
	struct bw_msg *m;
	struct bw_conn *c;
};

static void
registered(void *arg, int rc, struct bw_client *cl)
{
	struct reg_reply *d = arg;
	struct bw_conn *c = d->c;
	int dead = bw_conn_dead(c);
	char shown[BW_ESC_CAP], val[BW_ESC_CAP], hex[2 * BW_ID_LEN + 1];

	if (rc != 0 && rc != BW_EEXIST)
		d->m->err_store++;
	if (!dead) {
		MC(c)->st = M_IDLE;
		if (rc == 0 && cl != NULL) {
			bw_hex_encode(cl->id, BW_ID_LEN, hex);
			bw_escape_display(cl->name, shown, sizeof(shown));
			bw_conn_event(c, BW_LOG_INFO, "client_registered",
				      "service=msg client=%s id=%s",
				      bw_log_value(val, sizeof(val), shown),
				      hex);
			(void)bw_frame_reply(c, BW_MSG_RESP_REGISTERED, cl->id,
					     BW_ID_LEN);
		} else {
			bw_conn_event(c, BW_LOG_INFO, "register_refused",
				      "service=msg reason=%s",
				      rc == BW_EEXIST ? "name_taken"
						      : "not_durable");
			(void)bw_frame_error(c, "registration not durable");
		}
		bw_frame_done(c);
	}
	free(d);
	bw_conn_release(c);
	if (!dead)
		bw_frame_kick(c);
}

static int
on_register(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	struct bw_msg *m = r->ctx;
	char name[BW_NAME_CAP], shown[BW_ESC_CAP], val[BW_ESC_CAP], w[256];
	const uint8_t *key;
	struct bw_rsa *rsa = NULL;
	struct reg_reply *d;
	const char *why;
	int rc;

	if (bw_msg_register_decode(p, BW_MSG_REGISTER_LEN, name, &key) != 0)
		return bw_frame_error(c, "malformed name");
	if (!bw_utf8_valid(name))
		bw_conn_deviates(c, NULL, BW_DEV_NAME_NOT_UTF8);
	bw_log_value(val, sizeof(val),
		     bw_escape_display(name, shown, sizeof(shown)));
	if (bw_rsa_from_spki(&rsa, key, BW_RSA_PUB_LEN) != 0)
		return bw_frame_error(c, "not an RSA-1024 public key");
	bw_rsa_free(rsa);
	if (bw_registry_admit(m->reg, c->addr, bw_now_ms(), &why) != 0) {
		bw_conn_event(c, BW_LOG_WARN, "register_refused",
			      "service=msg client=%s reason=%s", val,
			      bw_log_value(w, sizeof(w), why));
		return bw_frame_error(c, "registration refused");
	}
	if ((d = calloc(1, sizeof(*d))) == NULL)
		return bw_frame_error(c, bw_strerror(BW_ENOMEM));
	d->m = m;
	d->c = c;
	rc = bw_registry_add(m->reg, name, key, registered, d);
	if (rc != 0) {
		free(d);
		bw_conn_event(
			c, BW_LOG_INFO, "register_refused",
			"service=msg client=%s reason=%s", val,
			rc == BW_EEXIST ? "name_taken"
			: rc == BW_EPROTO
				? "no_visible_character"
				: bw_log_value(w, sizeof(w), bw_strerror(rc)));
		return bw_frame_reply(c, BW_MSG_RESP_ERROR, NULL, 0);
	}
	MC(c)->st = M_STORE;
	bw_conn_hold(c);
	bw_frame_wait(c);
	return 0;
}

/* --- the public key request (602): a client's public key --------------- */

static int
on_pubkey(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	struct bw_msg *m = r->ctx;
	const struct bw_client *t;
	uint8_t out[BW_MSG_PUBKEY_LEN];

	if (msg_requester(m, r) == NULL)
		return bw_frame_error(c, "unknown client id");
	if ((t = bw_registry_by_id(m->reg, p)) == NULL)
		return bw_frame_error(c, "unknown target");
	if (!t->has_pubkey)
		return bw_frame_error(c, "the target has no public key");
	memcpy(out, t->id, BW_ID_LEN);
	memcpy(out + BW_ID_LEN, t->pubkey, BW_RSA_PUB_LEN);
	return bw_frame_reply(c, BW_MSG_RESP_PUBKEY, out, sizeof(out));
}

/* --- evidence ------------------------------------------------------------
 */

/* A request after a waiting reply (2104) shows the client received it, if
 * it was sent after the client could have had the whole reply: one that
 * was already here when the reply's last byte was written was pipelined
 * behind the pull (604), and shows nothing (the messages stay queued for
 * the next pull). */
static void
msg_conn_next(struct bw_conn *c, void *ctx, void *state)
{
	struct msg_conn *mc = state;

	if (mc->delivered)
		msg_settle(c, ctx, mc,
			   bw_conn_arrived_after(c, bw_conn_in_offset(c),
						 mc->sent_total));
}

static void
msg_conn_drained(struct bw_conn *c, void *ctx, void *state)
{
	struct msg_conn *mc = state;

	if (mc->st == M_LIST || mc->st == M_PULL)
		msg_stream_drained(c, ctx, mc);
}

/* An orderly close is evidence when the peer's FIN came after it had
 * acknowledged the whole waiting reply (2104; engine.h, BW_CONN_EOF_ACKED);
 * a FIN before that, a reset, a timeout or a shutdown is not, and the
 * messages wait for the next pull. */
static void
msg_conn_close(struct bw_conn *c, void *ctx, void *state)
{
	struct msg_conn *mc = state;
	int evidence = mc->delivered && bw_conn_eof_acked(c) &&
		       c->out_acked_total >= mc->sent_total;

	msg_send_abort(c, mc);
	msg_pull_abort(mc);
	msg_stream_end(ctx, mc);
	pull_uncount(ctx, mc);
	mc->st = M_IDLE;
	msg_settle(c, ctx, mc, evidence);
}

static int
msg_conn_busy(const struct bw_conn *c, const void *state)
{
	const struct msg_conn *mc = state;

	(void)c;
	return mc->st != M_IDLE;
}

static void
msg_stats(const void *inst, bw_stat_emit emit, void *arg)
{
	const struct bw_msg *m = inst;

	emit(arg, "msg_queued", "messages queued", m->queued_n);
	emit(arg, "msg_queued_bytes", "message bytes queued", m->queued_bytes);
	emit(arg, "msg_queues",
	     "recipients whose queue this node keeps count of", m->queues.n);
	emit(arg, "msg_stored_total", "messages stored since start", m->stored);
	emit(arg, "msg_bytes_total", "message bytes stored since start",
	     m->stored_bytes);
	emit(arg, "msg_delivered_total", "messages delivered since start",
	     m->delivered);
	emit(arg, "msg_syncs_total",
	     "fsyncs of the database journal (messages, uploads and their "
	     "verdicts)",
	     m->meta->be->syncs(m->meta->state));
}

static void
msg_client_queue(const void *inst, const uint8_t id[BW_ID_LEN], uint64_t *n,
		 uint64_t *bytes)
{
	const struct mqueue *q = msg_queue(inst, id);

	*n = q != NULL ? q->queued_n : 0;
	*bytes = q != NULL ? q->queued_bytes : 0;
}

static void
msg_errors(const void *inst, bw_stat_emit emit, void *arg)
{
	const struct bw_msg *m = inst;

	emit(arg, "msg_store",
	     "messages and registrations not made durable (9000)",
	     m->err_store);
	emit(arg, "msg_pull", "pulls cut short by a content not readable",
	     m->err_pull);
}

/* The payload size of a send (603) as its prefix says (a header that
 * said 0). */
static uint32_t
send_size(const uint8_t *head)
{
	struct bw_msg_send s;

	if (bw_msg_send_decode(head, BW_MSG_SEND_PREFIX, &s) != 0 ||
	    s.content_size > UINT32_MAX - BW_MSG_SEND_PREFIX)
		return 0;
	return BW_MSG_SEND_PREFIX + s.content_size;
}

/* The send (603) and the pull (604) have their own files; the register
 * (600) and public key (602) requests are here. Every route is lenient
 * about the header's payload size the way peers reading fixed fields are
 * (frame.h, BW_ROUTE_LAX; docs/messenger-protocol.md). */
#define LAX BW_ROUTE_LAX
static const struct bw_frame_route routes[] = {
	{BW_MSG_REQ_REGISTER, LAX, BW_MSG_REGISTER_LEN, BW_MSG_REGISTER_LEN,
	 BW_MSG_REGISTER_LEN, on_register, NULL, NULL},
	{BW_MSG_REQ_LIST, LAX, 0, 0, 0, msg_on_list, NULL, NULL},
	{BW_MSG_REQ_PUBKEY, LAX, BW_ID_LEN, BW_ID_LEN, BW_ID_LEN, on_pubkey,
	 NULL, NULL},
	{BW_MSG_REQ_SEND, LAX, BW_MSG_SEND_PREFIX, UINT32_MAX,
	 BW_MSG_SEND_PREFIX, msg_on_send, msg_on_send_body, send_size},
	{BW_MSG_REQ_PULL, LAX, 0, 0, 0, msg_on_pull, NULL, NULL},
};

const struct bw_frame_proto bw_msg_proto = {
	.name = "messenger",
	.version = BW_MSG_VERSION,
	.err_code = BW_MSG_RESP_ERROR,
	.code_lo = 600, /* unknown codes near ours get an error reply (9000) */
	.code_hi = 699,
	.routes = routes,
	.routes_n = sizeof(routes) / sizeof(routes[0]),
	.state_size = sizeof(struct msg_conn),
	.on_next = msg_conn_next,
	.on_drained = msg_conn_drained,
	.on_close = msg_conn_close,
	.busy = msg_conn_busy,
};

/* --- the instance -------------------------------------------------------- */

void
bw_msg_cfg_defaults(struct bw_msg_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	/* input: the body of a send (603) arrives 256 KiB at a time; output:
	 * a list reply (2101) or a waiting reply (2104) is queued
	 * MSG_STREAM_CHUNK (plus one row or file chunk) at a time as the
	 * socket drains, all of them within reply_memory */
	cfg->limits = (struct bw_conn_limits){1024u * 1024u, 1024u * 1024u,
					      30000, 10000};
	cfg->max_content = 1024u * 1024u * 1024u;
	cfg->max_queued_n = 100000;
	cfg->max_queued_bytes = 4ull * 1024u * 1024u * 1024u;
	cfg->pull_cap = 64u * 1024u * 1024u;
	cfg->inline_max = 64u * 1024u;
	/* each holds up to inline_max of content and a 1 MiB input buffer */
	cfg->max_bodies = 256;
	cfg->max_bodies_per_addr = 128;
	cfg->pull_max_n = 10000;
	cfg->max_pulls = 4;
	cfg->reply_memory = 64u * 1024u * 1024u;
	cfg->window_ms = 30000;
	cfg->min_rate = 1024;
}

static void msg_close(void *inst);

static int
msg_open(const struct bw_host *h, const void *cfg, void **out)
{
	struct bw_msg *m;
	int rc;

	*out = NULL;
	if ((m = calloc(1, sizeof(*m))) == NULL)
		return BW_ENOMEM;
	m->cfg = *(const struct bw_msg_cfg *)cfg;
	m->eng = h->eng;
	m->reg = h->reg;
	m->meta = h->meta;
	m->blobs = h->blobs;
	if ((rc = bw_slots_init(&m->slots, h->eng)) != 0) {
		free(m);
		return rc;
	}
	if ((rc = bw_hash_init(&m->queues)) != 0 ||
	    (rc = msg_reconcile(m)) != 0 || (rc = msg_load_totals(m)) != 0) {
		msg_close(m);
		return rc;
	}
	*out = m;
	return 0;
}

static int
free_queue(void *arg, void *val)
{
	(void)arg;
	free(val);
	return 0;
}

static void
msg_close(void *inst)
{
	struct bw_msg *m = inst;

	if (m == NULL)
		return;
	bw_loop_timer_stop(m->eng->loop, &m->stall_t);
	if (m->queues.slots != NULL)
		(void)bw_hash_each(&m->queues, free_queue, NULL);
	bw_hash_fini(&m->queues);
	free(m);
}

static void
msg_reload(void *inst, const void *cfg)
{
	struct bw_msg *m = inst;

	m->cfg = *(const struct bw_msg_cfg *)cfg; /* read per request */
}

const struct bw_module bw_msg_module = {
	.name = "messenger",
	.init = msg_open,
	.fini = msg_close,
	.reload = msg_reload,
	.stats = msg_stats,
	.errors = msg_errors,
	.client_queue = msg_client_queue,
	.proto = &bw_msg_proto,
	.refresh = msg_refresh,
};
