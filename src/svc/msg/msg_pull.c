/* The list request (601) and the pull (604): replies streamed in bounded
 * memory. A list reply (2101) walks the registry in the order clients were
 * added; a waiting reply (2104) is planned first (rows up to the cap, so
 * its size is known) and then read from the store a page at a time, large
 * contents from the blob store by a worker, as the socket drains: one read
 * in flight per pull. The rows a waiting reply carried are deleted only on
 * evidence that they arrived.
 */
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/msg/msg_int.h"

#define PAGE_ROWS  256u
#define FILE_CHUNK (64u * 1024u)

/* --- the list request (601) ---------------------------------------------- */

static void
list_more(struct bw_conn *c, struct bw_msg *m, struct msg_conn *mc)
{
	uint8_t e[BW_MSG_LIST_ENTRY_LEN];

	while (mc->list_left > 0 && mc->list_at != NULL &&
	       msg_stream_room(c, m, mc)) {
		if (memcmp(mc->list_at->id, mc->who, BW_ID_LEN) != 0) {
			bw_msg_list_entry_encode(mc->list_at->id,
						 mc->list_at->name, e);
			if (bw_frame_reply_add(c, e, sizeof(e)) != 0)
				return; /* closing */
			mc->list_left--;
		}
		mc->list_at = mc->list_at->added_next;
	}
	msg_stream_account(c, m, mc);
	if (mc->list_left > 0 && mc->list_at == NULL) {
		bw_conn_close_later(c, "client list shorter than announced");
		return;
	}
	if (mc->list_left > 0)
		return; /* on_drained, or room, brings us back */
	(void)bw_frame_reply_end(c);
	mc->st = M_IDLE;
	msg_stream_end(m, mc);
	bw_frame_done(c);
	bw_frame_kick(c);
}

int
msg_on_list(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	struct bw_msg *m = r->ctx;
	struct msg_conn *mc = r->state;
	const struct bw_client *me;
	uint64_t n;

	(void)p;
	if ((me = msg_requester(m, r)) == NULL)
		return bw_frame_error(c, "unknown client id");
	n = m->reg->clients_n - 1;
	if (n * BW_MSG_LIST_ENTRY_LEN > UINT32_MAX)
		n = UINT32_MAX / BW_MSG_LIST_ENTRY_LEN;
	memcpy(mc->who, me->id, BW_ID_LEN);
	mc->list_at = m->reg->first_added;
	mc->list_left = n;
	(void)bw_frame_reply_begin(c, BW_MSG_RESP_LIST,
				   (uint32_t)(n * BW_MSG_LIST_ENTRY_LEN));
	mc->st = M_LIST;
	msg_stream_begin(c, m, mc);
	bw_frame_wait(c);
	list_more(c, m, mc);
	return 0;
}

/* --- the pull (604): reads in flight ----------------------------------------
 * A pull's reads (its plan, its pages, its contents' chunks) go one at a
 * time through a struct pull_read that holds the connection: when the
 * connection goes meanwhile, the read ends without it and frees itself. */

struct plan {
	uint64_t cap, total;
	int64_t upto;
	uint64_t rows, max_rows;
	/* the rows' ids, in order: the pages stream those and only those (a
	 * row that commits later under a lower id, on a store shared by
	 * several writers, is the next pull's), and the settle deletes them */
	int64_t *ids;
	size_t ids_cap, next; /* next: the one the pages wait for */
};

struct pull_read {
	struct bw_meta_req req;
	/* on a shared store: the pull's number across the nodes, asked for
	 * before its plan (-1: none could be had) */
	struct bw_meta_req gen_req;
	int64_t gen;
	struct bw_msg *m;
	struct bw_conn *c;
	struct msg_conn *mc; /* NULL once c is gone */
	int busy;	     /* a request or a worker job is in flight */
	struct plan pl;
	unsigned rows; /* of the page just read */
	int err;
	/* a content: its key, its reader, and the chunk a worker read */
	char key[BW_PATH_CAP];
	struct bw_blob_r *r;
	uint8_t *buf;
	size_t want;
	ssize_t got;
};

static void
read_free(struct pull_read *pr)
{
	struct bw_conn *c = pr->c;

	/* the last descriptor of a content settled meanwhile frees its
	 * blocks: not on the loop */
	bw_blobs_read_close_later(pr->m->blobs, pr->m->eng->loop, pr->r);
	free(pr->buf);
	free(pr->pl.ids);
	free(pr);
	bw_conn_release(c);
}

void
msg_pull_abort(struct msg_conn *mc)
{
	struct pull_read *pr = mc->read;

	if (pr == NULL)
		return;
	mc->read = NULL;
	mc->file_open = 0;
	mc->reading = 0;
	pr->mc = NULL;
	if (!pr->busy)
		read_free(pr);
}

/* A read is over: 1 if its pull goes on, 0 if the connection went (and
 * the read is freed). */
static int
read_over(struct pull_read *pr)
{
	pr->busy = 0;
	if (pr->mc != NULL)
		pr->mc->reading = 0;
	if (pr->mc != NULL && !bw_conn_dead(pr->c))
		return 1;
	if (pr->mc != NULL)
		msg_pull_abort(pr->mc);
	else
		read_free(pr);
	return 0;
}

/* --- the pull (604): the plan -------------------------------------------- */

void
pull_uncount(struct bw_msg *m, struct msg_conn *mc)
{
	struct mqueue *q;

	if (!mc->pull_counted)
		return;
	mc->pull_counted = 0;
	if ((q = msg_queue(m, mc->who)) != NULL && q->pulls_n > 0)
		q->pulls_n--;
}

/* Rows in id order until the cap; the first always fits (a message larger
 * than the cap travels alone). */
static int
plan_row(void *arg, const struct bw_msg_rec *r)
{
	struct plan *pl = arg;
	uint64_t need = BW_MSG_RECORD_HDR + r->size;

	if (pl->rows >= pl->max_rows)
		return 1;
	if (pl->rows > 0 &&
	    (pl->total + need > pl->cap || pl->total + need > UINT32_MAX))
		return 1;
	if (pl->rows == pl->ids_cap) {
		size_t cap = pl->ids_cap != 0 ? pl->ids_cap * 2 : 64;
		int64_t *grown = realloc(pl->ids, cap * sizeof(*grown));

		if (grown == NULL)
			return 1; /* the reply ends here */
		pl->ids = grown;
		pl->ids_cap = cap;
	}
	pl->ids[pl->rows] = r->id;
	pl->total += need;
	pl->upto = r->id;
	pl->rows++;
	return 0;
}

static void
planned(struct bw_meta_req *req)
{
	struct pull_read *pr = req->arg;
	struct bw_conn *c = pr->c;
	struct bw_msg *m = pr->m;
	struct msg_conn *mc = pr->mc;
	char hex[2 * BW_ID_LEN + 1];

	if (!read_over(pr))
		return;
	if (req->rc != 0) {
		mc->st = M_IDLE;
		pull_uncount(m, mc);
		msg_pull_abort(mc);
		msg_settle(c, m, mc, 0);
		(void)bw_frame_error(c, bw_strerror(req->rc));
		bw_frame_done(c);
		bw_frame_kick(c);
		return;
	}
	bw_conn_note_arrivals(c); /* for the evidence of delivery */
	mc->cursor = 0;
	mc->store_gen = pr->gen;
	mc->upto = pr->pl.upto;
	mc->planned_n = pr->pl.rows;
	mc->planned_bytes = pr->pl.total - pr->pl.rows * BW_MSG_RECORD_HDR;
	mc->reply_left = pr->pl.total;
	mc->end_shut = mc->end_seen = 0;
	(void)bw_frame_reply_begin(c, BW_MSG_RESP_WAITING,
				   (uint32_t)pr->pl.total);
	mc->st = M_PULL;
	msg_stream_begin(c, m, mc);
	bw_hex_encode(mc->who, BW_ID_LEN, hex);
	bw_conn_event(c, BW_LOG_INFO, "messages_pulled",
		      "client=%s messages=%llu bytes=%llu", hex,
		      ULL(pr->pl.rows), ULL(pr->pl.total));
	msg_stream_more(c, m, mc);
}

/* The rows this pull carries: every durable one of the client's, in id
 * order, up to --pull-max-bytes and --pull-max-messages. */
static void
plan(struct pull_read *pr)
{
	struct msg_conn *mc = pr->mc;

	pr->busy = 1;
	bw_meta_req_init(&pr->req, BW_META_MSG_READ, 0, planned, pr);
	memcpy(pr->req.u.read.to, mc->who, BW_ID_LEN);
	pr->req.u.read.row = plan_row;
	pr->req.u.read.row_arg = &pr->pl;
	bw_meta_submit(pr->m->meta, &pr->req);
}

/* On a shared store another node may still delete what an earlier pull of
 * the client delivered: that deletion goes only if no later pull was
 * numbered (msg_settle.c), and this one is numbered before it plans. */
static void
numbered(struct bw_meta_req *req)
{
	struct pull_read *pr = req->arg;

	pr->gen = req->rc == 0 ? req->u.pull.gen : -1;
	if (req->rc != 0)
		bw_error("c%llu 604: the pull could not be numbered: %s; what "
			 "it delivers stays queued",
			 ULL(pr->c->id), bw_strerror(req->rc));
	if (read_over(pr))
		plan(pr);
}

static int
pull_start(struct bw_conn *c, struct bw_msg *m, struct msg_conn *mc)
{
	struct pull_read *pr = calloc(1, sizeof(*pr));

	if (pr == NULL)
		return BW_ENOMEM;
	pr->m = m;
	pr->c = c;
	pr->mc = mc;
	pr->pl.cap = m->cfg.pull_cap;
	pr->pl.max_rows = m->cfg.pull_max_n;
	bw_conn_hold(c);
	mc->read = pr;
	if (!bw_meta_others_write(m->meta)) {
		plan(pr);
		return 0;
	}
	pr->busy = 1;
	bw_meta_req_init(&pr->gen_req, BW_META_MSG_PULL_GEN, 0, numbered, pr);
	memcpy(pr->gen_req.u.pull.id, mc->who, BW_ID_LEN);
	bw_meta_submit(m->meta, &pr->gen_req);
	return 0;
}

int
msg_on_pull(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	struct bw_msg *m = r->ctx;
	struct msg_conn *mc = r->state;
	struct bw_client *me;
	struct mqueue *q;
	int rc;

	(void)p;
	if ((me = msg_requester(m, r)) == NULL)
		return bw_frame_error(c, "unknown client id");
	if ((q = msg_queue_for(m, me->id)) == NULL)
		return bw_frame_error(c, bw_strerror(BW_ENOMEM));
	/* one client's pulls on many connections cannot take the loop */
	if (q->pulls_n >= m->cfg.max_pulls)
		return bw_frame_error(c, "too many pulls of this client at "
					 "once (--max-pulls-per-client)");
	memcpy(mc->who, me->id, BW_ID_LEN);
	if ((rc = pull_start(c, m, mc)) != 0)
		return bw_frame_error(c, bw_strerror(rc));
	q->pulls_n++;
	mc->pull_counted = 1;
	/* this pull is the client's latest: an earlier one, on another
	 * connection, no longer deletes what it delivered (its rows are in
	 * this reply too) */
	mc->gen = ++q->pull_gen;
	mc->st = M_PULL;
	bw_frame_wait(c);
	return 0;
}

/* --- the pull (604): streaming ------------------------------------------- */

/* Right after queueing bytes of the waiting reply (2104), in the same call
 * (they cannot have been written yet): once they are its last, whether the
 * peer has already shut its side. A FIN then came before the client could
 * have the whole reply; one that comes later may not have, and the close
 * decides (msg.c, msg_conn_close). */
static void
note_end(struct bw_conn *c, struct msg_conn *mc)
{
	if (!mc->end_seen && mc->reply_left == 0 && !mc->file_open) {
		mc->end_seen = 1;
		mc->end_shut = bw_conn_peer_shut(c);
	}
}

static int
page_row(void *arg, const struct bw_msg_rec *r)
{
	struct pull_read *pr = arg;
	struct msg_conn *mc = pr->mc;
	struct bw_msg_record h;
	uint8_t hdr[BW_MSG_RECORD_HDR];

	if (mc == NULL || bw_conn_dead(pr->c)) {
		pr->err = BW_ECLOSED;
		return 1;
	}
	pr->rows++;
	mc->cursor = r->id;
	if (pr->pl.next < pr->pl.rows && r->id > pr->pl.ids[pr->pl.next]) {
		pr->err = BW_ESIZE; /* a planned row went from under the plan */
		return 1;
	}
	if (pr->pl.next >= pr->pl.rows || r->id != pr->pl.ids[pr->pl.next])
		return 0; /* committed after the plan: the next pull's */
	pr->pl.next++;
	memcpy(h.from, r->from, BW_ID_LEN);
	h.id = (uint32_t)r->id;
	h.type = (uint8_t)r->type;
	h.size = (uint32_t)r->size;
	bw_msg_record_encode(&h, hdr);
	if (bw_frame_reply_add(pr->c, hdr, sizeof(hdr)) != 0) {
		pr->err = BW_ECLOSED;
		return 1;
	}
	mc->reply_left -= sizeof(hdr) + r->size;
	if (r->path[0] != '\0') {
		snprintf(mc->file_key, sizeof(mc->file_key), "%s", r->path);
		mc->file_open = 1;
		mc->file_left = mc->file_size = r->size;
		return 1; /* the content streams before the next row */
	}
	if (r->size > 0 &&
	    bw_frame_reply_add(pr->c, r->content, (size_t)r->size) != 0) {
		pr->err = BW_ECLOSED;
		return 1;
	}
	note_end(pr->c, mc);
	return bw_conn_queued(pr->c) >= MSG_STREAM_CHUNK;
}

static void
page_read(struct bw_meta_req *req)
{
	struct pull_read *pr = req->arg;
	int rc = req->rc;

	if (!read_over(pr))
		return;
	if (rc == 0 && pr->err != 0)
		rc = pr->err;
	if (rc == 0 && pr->rows == 0)
		rc = BW_ESIZE; /* rows gone from under the plan */
	pr->err = rc;
	msg_stream_more(pr->c, pr->m, pr->mc);
}

static void
chunk_work(void *arg)
{
	struct pull_read *pr = arg;
	const struct bw_blobs *b = pr->m->blobs;
	int rc;

	if (pr->r == NULL &&
	    (rc = bw_blob_read_open(b, pr->key, &pr->r)) != 0) {
		pr->got = rc;
		return;
	}
	pr->got = bw_blob_read(b, pr->r, pr->buf, pr->want);
}

static void
chunk_read(void *arg)
{
	struct pull_read *pr = arg;
	struct msg_conn *mc = pr->mc;

	if (!read_over(pr))
		return;
	if (pr->got <= 0) {
		/* a file surely gone; not S3's 404, which a bucket gone or
		 * misnamed also gives (every pull would drop one): a
		 * restart's reconcile judges those from a listing */
		if (pr->got == BW_ENOTFOUND &&
		    !bw_blobs_others_write(pr->m->blobs))
			msg_drop_lost(pr->m, mc->who, mc->cursor, mc->file_size,
				      mc->file_key);
		else if (pr->got < 0)
			bw_error("messenger: cannot read the content %s: %s",
				 mc->file_key, bw_strerror((int)pr->got));
		pr->err = pr->got < 0 ? (int)pr->got
				      : BW_ESIZE; /* shorter than its row */
	} else if (bw_frame_reply_add(pr->c, pr->buf, (size_t)pr->got) != 0) {
		pr->err = BW_ECLOSED;
	} else {
		mc->file_left -= (uint64_t)pr->got;
	}
	if (pr->err != 0 || mc->file_left == 0) {
		bw_blobs_read_close_later(pr->m->blobs, pr->m->eng->loop,
					  pr->r);
		pr->r = NULL;
		mc->file_open = 0;
		if (pr->err == 0)
			note_end(pr->c, mc);
	}
	msg_stream_more(pr->c, pr->m, mc);
}

/* The next read of the pull: a chunk of the content being streamed, or the
 * next page of rows. */
static int
read_next(struct bw_msg *m, struct msg_conn *mc, struct pull_read *pr)
{
	int rc;

	pr->rows = 0;
	if (mc->file_open) {
		if (pr->buf == NULL && (pr->buf = malloc(FILE_CHUNK)) == NULL)
			return BW_ENOMEM;
		pr->want = mc->file_left < FILE_CHUNK ? (size_t)mc->file_left
						      : FILE_CHUNK;
		memcpy(pr->key, mc->file_key, sizeof(pr->key));
		if ((rc = bw_loop_submit(m->eng->loop, chunk_work, chunk_read,
					 pr)) != 0)
			return rc;
		pr->busy = mc->reading = 1;
		return 0;
	}
	bw_meta_req_init(&pr->req, BW_META_MSG_READ, 0, page_read, pr);
	memcpy(pr->req.u.read.to, mc->who, BW_ID_LEN);
	pr->req.u.read.after = mc->cursor;
	pr->req.u.read.upto = mc->upto;
	pr->req.u.read.limit = PAGE_ROWS;
	pr->req.u.read.content = 1;
	pr->req.u.read.row = page_row;
	pr->req.u.read.row_arg = pr;
	pr->busy = mc->reading = 1;
	bw_meta_submit(m->meta, &pr->req);
	return 0;
}

void
msg_stream_more(struct bw_conn *c, struct bw_msg *m, struct msg_conn *mc)
{
	struct pull_read *pr = mc->read;
	int rc = 0;

	if (mc->st == M_LIST) {
		list_more(c, m, mc);
		return;
	}
	if (pr == NULL || pr->busy)
		return; /* the read in flight brings us back */
	rc = pr->err;
	if (rc == 0 && (mc->reply_left > 0 || mc->file_open) &&
	    msg_stream_room(c, m, mc))
		rc = read_next(m, mc, pr);
	msg_stream_account(c, m, mc);
	if (rc != 0) {
		bw_error("c%llu 2104 cut short: %s", ULL(c->id),
			 bw_strerror(rc));
		if (rc != BW_ECLOSED)
			m->err_pull++;
		bw_conn_close_later(c, NULL);
		return;
	}
	if (pr->busy || mc->reply_left > 0 || mc->file_open)
		return; /* the read, on_drained, or room brings us back */
	(void)bw_frame_reply_end(c);
	mc->st = M_IDLE;
	/* a client that closed its side before the reply was complete has
	 * shown nothing: it may never read what it half-closed on */
	mc->delivered = mc->upto > 0 && mc->end_seen && !mc->end_shut;
	/* the reply's ids, for the settle (taken before the read goes) */
	free(mc->delivered_ids);
	mc->delivered_ids = NULL;
	if (mc->delivered) {
		mc->delivered_ids = pr->pl.ids;
		pr->pl.ids = NULL;
	}
	msg_pull_abort(mc);
	msg_stream_end(m, mc);
	pull_uncount(m, mc);
	mc->delivered_upto = mc->upto;
	mc->delivered_n = mc->planned_n;
	mc->delivered_bytes = mc->planned_bytes;
	mc->sent_total = c->out_total;
	bw_frame_done(c);
	bw_frame_kick(c);
}

/* --- start-up ------------------------------------------------------------
 */

static int
add_totals(void *arg, const uint8_t to[BW_ID_LEN], uint64_t n, uint64_t bytes)
{
	struct bw_msg *m = arg;
	struct mqueue *q;

	if (bw_registry_by_id(m->reg, to) != NULL &&
	    (q = msg_queue_for(m, to)) != NULL) {
		q->queued_n = n;
		q->queued_bytes = bytes;
	}
	m->queued_n += n;
	m->queued_bytes += bytes;
	return 0;
}

int
msg_load_totals(struct bw_msg *m)
{
	return m->meta->be->msg_totals(m->meta->state, add_totals, m);
}
