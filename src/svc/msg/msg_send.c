/* A send (603): a message arrives and becomes durable before its stored
 * reply (2103). A small content is buffered; a large one streams into a
 * new object of the blob store, a chunk at a time written by a worker, and
 * is put under messages/ once complete. Its row goes through the metadata
 * store (many in one transaction), and the stored reply leaves once the
 * row is durable.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/msg/msg_int.h"

#define BODY_WANT (256u * 1024u)

/* p's content brought its received bytes to n: what it counts against
 * its recipient's queue follows. */
static void
inbound_grow(struct pending *p, uint64_t n)
{
	struct mqueue *q = msg_queue(p->m, p->rec.to);

	if (q != NULL && p->inbound == 1)
		q->inbound_bytes += n - p->inbound_bytes;
	p->inbound_bytes = n;
}

/* p no longer counts as on its way to its recipient (its row is counted
 * as queued now, or it was refused). */
static void
inbound_end(struct pending *p)
{
	struct mqueue *q;

	if (!p->inbound)
		return;
	if ((q = msg_queue(p->m, p->rec.to)) != NULL) {
		q->inbound_n--;
		if (p->inbound == 1)
			q->inbound_bytes -= p->inbound_bytes;
		else
			q->reserved_bytes -= p->rec.size;
	}
	p->inbound = 0;
}

/* p's content is all in: it counts whole against its recipient's queue,
 * if the queue has room for it now (durable rows and contents already
 * in; not contents still arriving), else 0 and it is refused. */
static int
inbound_reserve(struct pending *p)
{
	struct mqueue *q = msg_queue(p->m, p->rec.to);
	const struct bw_msg_cfg *cfg = &p->m->cfg;

	if (q == NULL || p->inbound != 1)
		return 0;
	if (q->queued_bytes + q->reserved_bytes + p->rec.size >
	    cfg->max_queued_bytes)
		return 0;
	q->inbound_bytes -= p->inbound_bytes;
	q->reserved_bytes += p->rec.size;
	p->inbound = 2;
	return 1;
}

void
pending_free(struct pending *p)
{
	if (p == NULL)
		return;
	inbound_end(p);
	bw_slots_release(&p->m->slots, &p->slot);
	/* an unlink frees the file's blocks: not on the loop */
	bw_blobs_abort_later(p->m->blobs, p->m->eng->loop, p->w);
	if (p->wbuf != NULL)
		bw_secure_free(p->wbuf, MSG_FILE_CHUNK);
	if (p->content != NULL)
		bw_secure_free(p->content, p->rec.size);
	free(p);
}

/* The connection goes away while its send (603) is in progress: a body
 * being received is dropped (once a write in flight is over); one waiting
 * for the store goes on without it. */
void
msg_send_abort(struct bw_conn *c, struct msg_conn *mc)
{
	struct pending *p = mc->p;

	(void)c;
	if (p == NULL)
		return;
	mc->p = NULL;
	if (mc->st != M_BODY)
		return; /* the insert goes on and, finding c dead, does not
			 * reply */
	p->conn = NULL;
	if (!p->writing) {
		pending_free(p);
		return;
	}
	p->aborted = 1; /* the write's end frees it */
	inbound_end(p);
	bw_slots_release(&p->m->slots, &p->slot);
}

/* --- the reply ----------------------------------------------------------- */

static void reply_stored(struct pending *p, int rc);

static void
content_work(void *arg)
{
	struct pending *p = arg;

	(void)bw_blob_remove(p->m->blobs, p->rec.path);
}

static void
content_dropped(void *arg)
{
	struct pending *p = arg;

	reply_stored(p, p->fail);
}

/* The refused message's content, if it has one, goes before the error
 * reply (9000). */
static void
drop_content(struct pending *p)
{
	if (p->rec.path[0] == '\0' ||
	    bw_loop_submit(p->m->eng->loop, content_work, content_dropped, p) !=
		    0) {
		if (p->rec.path[0] != '\0')
			content_work(p);
		reply_stored(p, p->fail);
	}
}

/* A commit went unanswered (BW_EDOUBT) and its row could not be dropped
 * (or has no key to be dropped by): the row may be there, and with its
 * content removed every pull of the recipient would stop at it (S3) or
 * lose it. The content stays: the message may be delivered although its
 * sender got an error reply (9000) and may send it again (a duplicate
 * rather than a loss), and a content no row names goes at the next start's
 * reconcile. */
static void
keep_content(struct pending *p)
{
	bw_warn("messenger: a message's commit went unanswered: stored or "
		"not, its content %s is kept; its sender is told 9000",
		p->rec.path[0] != '\0' ? p->rec.path : "(in its row)");
	reply_stored(p, p->fail);
}

static void
row_dropped(struct bw_meta_req *r)
{
	struct pending *p = r->arg;

	/* in doubt, only a row found and dropped frees the content: none
	 * found may be one whose COMMIT the server is still finishing on the
	 * connection that was lost */
	if (p->fail == BW_EDOUBT && r->rc != 0) {
		keep_content(p);
		return;
	}
	if (r->rc != 0 && r->rc != BW_ENOTFOUND)
		bw_error("messenger: message %lld refused but not removed: %s",
			 (long long)p->rec.id, bw_strerror(r->rc));
	drop_content(p);
}

/* The store answered p's insert (durable, or not). A row inserted whose
 * sender gets an error reply (9000), as it could not be made durable, goes,
 * and its content, before the reply: it never reaches the recipient after
 * its sender was told it was not stored. */
static void
inserted(struct bw_meta_req *r)
{
	struct pending *p = r->arg;
	int64_t id = p->rec.id;

	if (r->rc == 0) {
		reply_stored(p, 0);
		return;
	}
	p->fail = r->rc;
	if (r->rc == BW_EDOUBT && id <= 0) {
		/* its row may be there, its id unknown: a content of its
		 * own names it; one in its row cannot be dropped */
		if (p->rec.path[0] == '\0') {
			keep_content(p);
			return;
		}
		bw_warn("messenger: a message's commit went unanswered: its "
			"row, if it is there, is dropped by its content %s",
			p->rec.path);
		bw_meta_req_init(&p->req, BW_META_MSG_DROP_PATH, 0, row_dropped,
				 p);
		p->req.u.drop_path = p->rec.path;
		bw_meta_submit(p->m->meta, &p->req);
		return;
	}
	bw_error("messenger: a message could not be stored: %s%s",
		 bw_strerror(r->rc),
		 r->rc == BW_ETOOBIG ? " (message ids are used up)" : "");
	if (id <= 0) {
		drop_content(p);
		return;
	}
	bw_meta_req_init(&p->req, BW_META_MSG_DROP, 0, row_dropped, p);
	p->req.u.drop = id;
	bw_meta_submit(p->m->meta, &p->req);
}

/* The reply: a stored reply (2103; rc 0: the row is durable and counted)
 * or an error reply (9000). */
static void
reply_stored(struct pending *p, int rc)
{
	struct bw_msg *m = p->m;
	struct bw_conn *c = p->conn;
	struct mqueue *q;
	uint8_t out[BW_MSG_STORED_LEN];
	char from[2 * BW_ID_LEN + 1], to[2 * BW_ID_LEN + 1];
	int alive = c != NULL && !bw_conn_dead(c);

	if (rc == 0) {
		inbound_end(p);
		if ((q = msg_queue(m, p->rec.to)) != NULL) {
			q->queued_n++;
			q->queued_bytes += p->rec.size;
		}
		m->queued_n++;
		m->queued_bytes += p->rec.size;
		m->stored++;
		m->stored_bytes += p->rec.size;
	} else {
		m->err_store++;
	}
	if (alive) {
		MC(c)->st = M_IDLE;
		MC(c)->p = NULL;
		if (rc == 0) {
			bw_hex_encode(p->rec.from, BW_ID_LEN, from);
			bw_hex_encode(p->rec.to, BW_ID_LEN, to);
			bw_conn_event(
				c, BW_LOG_INFO, "message_stored",
				"from=%s to=%s type=%u bytes=%llu id=%lld",
				from, to, p->rec.type, ULL(p->rec.size),
				(long long)p->rec.id);
			bw_msg_stored_encode(p->rec.to, (uint32_t)p->rec.id,
					     out);
			(void)bw_frame_reply(c, BW_MSG_RESP_STORED, out,
					     sizeof(out));
		} else {
			(void)bw_frame_error(
				c, p->rc != 0 ? bw_strerror(p->rc)
					      : "message not durable");
		}
		bw_frame_done(c);
	}
	pending_free(p);
	if (c != NULL) {
		bw_conn_release(c);
		if (alive)
			bw_frame_kick(c);
	}
}

/* The row, once the content is where it names. */
static void
insert(struct bw_msg *m, struct pending *p)
{
	bw_meta_req_init(&p->req, BW_META_MSG_INSERT, BW_META_DURABLE, inserted,
			 p);
	p->req.u.msg = &p->rec;
	bw_meta_submit(m->meta, &p->req);
}

/* On a worker (one job at a time holds p): a large content's object, made
 * the first time. Making a file writes its directory, which the loop must
 * not wait for. */
static int
spill_w(struct pending *p)
{
	const struct bw_blobs *b = p->m->blobs;

	if (p->w != NULL)
		return 0;
	return bw_blob_create(b, MSG_SPACE, p->rec.path, &p->w);
}

/* A large content: put under its key (never over another message's) before
 * its row can exist. */
static void
spill_work(void *arg)
{
	struct pending *p = arg;
	struct bw_blob_w *w;

	if ((p->rc = spill_w(p)) != 0)
		return;
	w = p->w;
	p->w = NULL; /* put takes it, whatever happens */
	p->rc = bw_blob_put(p->m->blobs, w, p->rec.path, 0);
}

static void
spill_done(void *arg)
{
	struct pending *p = arg;

	if (p->rc != 0) {
		bw_error("messenger: cannot store a message's content: %s",
			 bw_strerror(p->rc));
		reply_stored(p, p->rc);
		return;
	}
	insert(p->m, p);
}

/* --- a content's chunks ---------------------------------------------------
 */

static void
write_work(void *arg)
{
	struct pending *p = arg;

	if ((p->rc = spill_w(p)) == 0)
		p->rc = bw_blob_write(p->m->blobs, p->w, p->woff, p->wbuf,
				      p->wlen);
}

static void
write_done(void *arg)
{
	struct pending *p = arg;

	p->writing = 0;
	p->woff += p->wlen;
	p->wlen = 0;
	if (p->aborted) {
		pending_free(p);
		return;
	}
	bw_frame_kick(p->conn); /* unpauses */
}

/* Hands the buffered chunk to a worker; the body reads on once it is
 * written. */
static int
write_chunk(struct pending *p)
{
	int rc;

	if ((rc = bw_loop_submit(p->m->eng->loop, write_work, write_done, p)) !=
	    0)
		return rc;
	p->writing = 1;
	bw_conn_pause(p->conn, 1);
	return 0;
}

/* --- the request -------------------------------------------------------- */

/* A refused send (603): its content is read and discarded so the error
 * reply (9000) comes in step (a large one is answered at once and the
 * connection closed). */
static int
refuse(struct bw_conn *c, struct msg_conn *mc, uint64_t size, const char *why)
{
	return bw_frame_discard(c, size, &mc->m->slots, NULL, why);
}

/* A large content's buffer, and the key it will have. Its object is made
 * by the first write (spill_w), on a worker. */
static int
open_spill(struct pending *p)
{
	char name[MSG_TMP_CAP];

	if ((p->wbuf = malloc(MSG_FILE_CHUNK)) == NULL)
		return BW_ENOMEM;
	bw_unique_name("", name, sizeof(name));
	snprintf(p->rec.path, sizeof(p->rec.path), MSG_SPACE "%s", name);
	return 0;
}

/* A newcomer needs the slot of this content, which trickles: an error
 * reply (9000), and the connection closes. */
static void
evict_body(struct bw_slot *s)
{
	struct bw_conn *c = s->c;

	msg_send_abort(c, MC(c));
	MC(c)->st = M_IDLE;
	(void)bw_frame_fail(c, "message too slow for a busy server");
}

int
msg_on_send(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	struct bw_msg *m = r->ctx;
	struct msg_conn *mc = r->state;
	struct bw_msg_send s;
	struct bw_client *from, *to;
	struct mqueue *q;
	struct pending *pd;
	char shown[BW_ESC_CAP];
	const char *why;
	int rc;

	if (bw_msg_send_decode(p, BW_MSG_SEND_PREFIX, &s) != 0 ||
	    (uint64_t)r->hdr.payload_size !=
		    (uint64_t)BW_MSG_SEND_PREFIX + s.content_size)
		return bw_frame_fail(c, "payload size and content size "
					"disagree");
	if (s.content_size > m->cfg.max_content)
		return bw_frame_fail(c, "content over the size limit");
	mc->m = m;
	bw_frame_body_rate(c, m->cfg.min_rate, m->cfg.window_ms);
	m->slots.max = m->cfg.max_bodies;
	m->slots.per_addr = m->cfg.max_bodies_per_addr;
	m->slots.min_rate = m->cfg.min_rate;
	if ((from = msg_requester(m, r)) == NULL)
		return refuse(c, mc, s.content_size, "unknown client id");
	if (!bw_msg_type_known(s.type))
		return refuse(c, mc, s.content_size, "unknown message type");
	if ((to = bw_registry_by_id(m->reg, s.to)) == NULL)
		return refuse(c, mc, s.content_size, "unknown recipient");
	if ((q = msg_queue_for(m, to->id)) == NULL)
		return refuse(c, mc, s.content_size, "out of memory");
	/* contents still arriving count by what they brought so far: four
	 * that announce a gigabyte and trickle hold only what they sent */
	if (q->queued_n + q->inbound_n >= m->cfg.max_queued_n ||
	    q->queued_bytes + q->reserved_bytes + q->inbound_bytes +
			    s.content_size >
		    m->cfg.max_queued_bytes) {
		bw_warn("c%llu 603 refused: the queue of '%s' is full (%llu "
			"messages, %llu bytes, %llu more arriving)",
			ULL(c->id),
			bw_escape_display(to->name, shown, sizeof(shown)),
			ULL(q->queued_n), ULL(q->queued_bytes),
			ULL(q->inbound_n));
		return refuse(c, mc, s.content_size, "recipient's queue full");
	}
	if ((pd = calloc(1, sizeof(*pd))) == NULL)
		return BW_ENOMEM;
	pd->m = m;
	pd->conn = c;
	if (bw_slots_take(&m->slots, &pd->slot, c, s.content_size, evict_body,
			  &why) != 0) {
		free(pd);
		bw_warn("c%llu 603 refused: %s (%u arriving, --max-bodies, "
			"--max-bodies-per-addr)",
			ULL(c->id), why, m->slots.n);
		return refuse(c, mc, s.content_size, why);
	}
	memcpy(pd->rec.to, s.to, BW_ID_LEN);
	memcpy(pd->rec.from, from->id, BW_ID_LEN);
	pd->rec.type = s.type;
	pd->rec.size = s.content_size;
	pd->inbound = 1;
	q->inbound_n++;
	if (s.content_size <= m->cfg.inline_max) {
		if (s.content_size > 0 &&
		    (pd->content = malloc(s.content_size)) == NULL) {
			pending_free(pd);
			return BW_ENOMEM;
		}
		pd->rec.content = pd->content;
	} else if ((rc = open_spill(pd)) != 0) {
		bw_error("c%llu 603: no buffer for the content: %s", ULL(c->id),
			 bw_strerror(rc));
		pending_free(pd);
		return refuse(c, mc, s.content_size, "cannot store it");
	}
	mc->p = pd;
	mc->st = M_BODY;
	mc->left = s.content_size;
	c->want = BODY_WANT;
	bw_frame_stream(c);
	return 0;
}

int
msg_on_send_body(struct bw_conn *c, struct bw_frame_req *r)
{
	struct bw_msg *m = r->ctx;
	struct msg_conn *mc = r->state;
	struct pending *p = mc->p;
	size_t k = c->in.len < mc->left ? c->in.len : (size_t)mc->left;
	int rc;

	if (p->writing)
		return 0; /* write_done brings us back */
	if (p->rc != 0) {
		bw_error("c%llu 603: cannot write the content: %s", ULL(c->id),
			 bw_strerror(p->rc));
		msg_send_abort(c, mc);
		mc->st = M_IDLE;
		return bw_frame_fail(c, "cannot store the content");
	}
	if (p->wbuf != NULL && k > MSG_FILE_CHUNK - p->wlen)
		k = MSG_FILE_CHUNK - p->wlen;
	if (k > 0) {
		if (p->wbuf == NULL)
			memcpy(p->content + (p->rec.size - mc->left),
			       bw_buf_head(&c->in), k);
		else
			memcpy(p->wbuf + p->wlen, bw_buf_head(&c->in), k);
		p->wlen += p->wbuf != NULL ? k : 0;
	}
	bw_buf_consume(&c->in, k);
	mc->left -= k;
	inbound_grow(p, p->rec.size - mc->left);
	bw_slot_progress(&p->slot,
			 mc->left > c->in.len ? mc->left - c->in.len : 0);
	if (p->wbuf != NULL && p->wlen > 0 &&
	    (p->wlen == MSG_FILE_CHUNK || mc->left == 0)) {
		if ((rc = write_chunk(p)) != 0) {
			msg_send_abort(c, mc);
			mc->st = M_IDLE;
			return bw_frame_fail(c, bw_strerror(rc));
		}
		return 0;
	}
	if (mc->left > 0 || !bw_frame_body_end(c))
		return 0;
	bw_slots_release(&m->slots, &p->slot);
	if (!inbound_reserve(p)) {
		/* others' messages filled the queue while this one came */
		bw_warn("c%llu 603 refused at its end: the recipient's queue "
			"is full",
			ULL(c->id));
		msg_send_abort(c, mc);
		mc->st = M_IDLE;
		rc = bw_frame_error(c, "recipient's queue full");
		bw_frame_done(c);
		return rc;
	}
	/* the body is in: off to the store; the reply waits for it */
	mc->st = M_STORE;
	bw_conn_hold(c);
	bw_frame_wait(c);
	if (p->wbuf == NULL) {
		insert(m, p);
		return 0;
	}
	if ((rc = bw_loop_submit(m->eng->loop, spill_work, spill_done, p)) !=
	    0) {
		p->rc = rc;
		spill_done(p);
	}
	return 0;
}
