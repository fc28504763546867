/* Delivery evidence: the rows a waiting reply (2104) carried are deleted
 * once the client has shown it received them (msg.c decides when), their
 * contents removed by a worker after the deletion commits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "svc/msg/msg_int.h"

/* --- evidence ------------------------------------------------------------
 */

/* A deletion of delivered rows, and their contents' keys: removed by a
 * worker once the deletion is committed (removing a large file frees its
 * blocks, which can take a while). The queue counts them gone from the
 * moment the evidence arrives, as the request that brought it is answered
 * (a send (603) right after the request that deleted a full queue finds
 * room), and takes them back if the deletion fails. */
struct settle {
	struct bw_meta_req req;
	struct bw_msg *m;
	uint64_t conn_id;
	uint64_t n, bytes; /* counted gone at once */
	size_t keys_n, cap;
	char (*keys)[BW_PATH_CAP];
	int64_t *ids; /* the reply's */
};

static int
settle_key(void *arg, const char *key)
{
	struct settle *s = arg;
	char(*grown)[BW_PATH_CAP];
	size_t cap;

	if (s->keys_n == s->cap) {
		cap = s->cap ? s->cap * 2 : 8;
		if ((grown = realloc(s->keys, cap * sizeof(*s->keys))) == NULL)
			return BW_ENOMEM; /* the delete rolls back */
		s->keys = grown;
		s->cap = cap;
	}
	snprintf(s->keys[s->keys_n++], BW_PATH_CAP, "%s", key);
	return 0;
}

static void
settle_work(void *arg)
{
	struct settle *s = arg;
	const struct bw_blobs *b = s->m->blobs;
	size_t i;

	for (i = 0; i < s->keys_n; i++)
		(void)bw_blob_remove(b, s->keys[i]);
}

static void
settle_free(void *arg)
{
	struct settle *s = arg;

	free(s->keys);
	free(s->ids);
	free(s);
}

/* The queue of to counts n messages and bytes fewer (or more, back). */
static void
count_gone(struct bw_msg *m, const uint8_t to[BW_ID_LEN], uint64_t n,
	   uint64_t bytes, int back)
{
	struct mqueue *q = msg_queue(m, to);

	if (back) {
		if (q != NULL) {
			q->queued_n += n;
			q->queued_bytes += bytes;
		}
		m->queued_n += n;
		m->queued_bytes += bytes;
		return;
	}
	if (q != NULL) {
		q->queued_n -= n < q->queued_n ? n : q->queued_n;
		q->queued_bytes -=
			bytes < q->queued_bytes ? bytes : q->queued_bytes;
	}
	m->queued_n -= n < m->queued_n ? n : m->queued_n;
	m->queued_bytes -= bytes < m->queued_bytes ? bytes : m->queued_bytes;
}

static void
settled(struct bw_meta_req *req)
{
	struct settle *s = req->arg;
	struct bw_msg *m = s->m;
	uint64_t n = req->u.del.n, bytes = req->u.del.bytes;

	if (req->rc != 0) {
		/* not deleted now: delivered again, at least once */
		bw_error("c%llu messages delivered but not deleted: %s",
			 ULL(s->conn_id), bw_strerror(req->rc));
		count_gone(m, req->u.del.to, s->n, s->bytes, 1);
		settle_free(s);
		return;
	}
	/* what went, against what was counted gone at once */
	if (n != s->n || bytes != s->bytes) {
		count_gone(m, req->u.del.to, s->n, s->bytes, 1);
		count_gone(m, req->u.del.to, n, bytes, 0);
	}
	m->delivered += n;
	if (s->keys_n > 0 &&
	    bw_loop_submit(m->eng->loop, settle_work, settle_free, s) == 0)
		return;
	settle_work(s);
	settle_free(s);
}

/* A message whose content is gone (its blob lost; or removed while its row
 * stayed, after a commit whose outcome was unknown): the pull that met it
 * is cut short, and its row goes, so that the recipient's next pull gets
 * past it rather than stop there every time until a restart. */
struct lost {
	struct bw_meta_req req;
	struct bw_msg *m;
	uint8_t to[BW_ID_LEN];
	uint64_t size;
};

static void
lost_dropped(struct bw_meta_req *r)
{
	struct lost *l = r->arg;

	if (r->rc == 0)
		count_gone(l->m, l->to, 1, l->size, 0);
	else if (r->rc != BW_ENOTFOUND)
		bw_error("messenger: message %lld, whose content is gone, is "
			 "not dropped: %s",
			 (long long)r->u.drop, bw_strerror(r->rc));
	free(l);
}

void
msg_drop_lost(struct bw_msg *m, const uint8_t to[BW_ID_LEN], int64_t id,
	      uint64_t size, const char *key)
{
	struct lost *l;

	bw_error("messenger: the content %s of message %lld is gone: the "
		 "message is dropped",
		 key, (long long)id);
	if ((l = calloc(1, sizeof(*l))) == NULL)
		return; /* the next pull meets it again */
	l->m = m;
	memcpy(l->to, to, BW_ID_LEN);
	l->size = size;
	bw_meta_req_init(&l->req, BW_META_MSG_DROP, 0, lost_dropped, l);
	l->req.u.drop = id;
	bw_meta_submit(m->meta, &l->req);
}

void
msg_settle(struct bw_conn *c, struct bw_msg *m, struct msg_conn *mc,
	   int evidence)
{
	struct mqueue *q = msg_queue(m, mc->who);
	struct settle *s;

	if (mc->delivered && evidence && q != NULL && mc->gen == q->pull_gen) {
		if ((s = calloc(1, sizeof(*s))) == NULL) {
			bw_error("c%llu messages delivered but not deleted: %s",
				 ULL(c->id), bw_strerror(BW_ENOMEM));
			mc->delivered = 0;
			free(mc->delivered_ids);
			mc->delivered_ids = NULL;
			return;
		}
		s->m = m;
		s->conn_id = c->id;
		s->n = mc->delivered_n;
		s->bytes = mc->delivered_bytes;
		count_gone(m, mc->who, s->n, s->bytes, 0);
		bw_meta_req_init(&s->req, BW_META_MSG_DELETE, 0, settled, s);
		memcpy(s->req.u.del.to, mc->who, BW_ID_LEN);
		s->req.u.del.upto = mc->delivered_upto;
		s->ids = mc->delivered_ids;
		mc->delivered_ids = NULL;
		s->req.u.del.ids = s->ids;
		s->req.u.del.ids_n = s->ids != NULL ? s->n : 0;
		s->req.u.del.path = settle_key;
		s->req.u.del.path_arg = s;
		s->req.u.del.gen = mc->store_gen;
		bw_meta_submit(m->meta, &s->req);
	}
	mc->delivered = 0;
	free(mc->delivered_ids);
	mc->delivered_ids = NULL;
}
