/* A recipient's queue as a store several daemons share has it: counted
 * again from the store before a send (603) that may find it full
 * (msg_refresh).
 */
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/msg/msg_int.h"

/* On a store several daemons share, this node's count of a recipient's
 * queue knows only its own sends and deliveries: messages pulled through
 * another node stay counted here (and the queue would look full for
 * good), others' sends are missing. Before a send (603) to a recipient
 * this node has no count of yet, or whose count here has passed half a
 * limit, the count is read from the store (once a second at most per
 * recipient).
 */

struct qref {
	struct bw_meta_req req; /* first: the callback's argument */
	struct bw_msg *m;
	void (*done)(void *arg);
	void *arg;
};

static uint64_t
moved(uint64_t total, uint64_t was, uint64_t now)
{
	return total - (was < total ? was : total) + now;
}

static void
queue_read(struct bw_meta_req *req)
{
	struct qref *x = (struct qref *)req;
	struct bw_msg *m = x->m;
	struct mqueue *q;

	if (req->rc == 0 && (q = msg_queue_for(m, req->u.queue.id)) != NULL) {
		m->queued_n = moved(m->queued_n, q->queued_n, req->u.queue.n);
		m->queued_bytes = moved(m->queued_bytes, q->queued_bytes,
					req->u.queue.bytes);
		q->queued_n = req->u.queue.n;
		q->queued_bytes = req->u.queue.bytes;
	} else if (req->rc != 0) {
		bw_debug("messenger: a queue could not be counted again: %s",
			 bw_strerror(req->rc));
	}
	x->done(x->arg);
	free(x);
}

int
msg_refresh(void *inst, const uint8_t id[BW_ID_LEN], const uint8_t *other,
	    uint16_t code, void (*done)(void *arg), void *arg)
{
	struct bw_msg *m = inst;
	struct mqueue *q;
	struct qref *x;
	uint64_t now = bw_now_ms();

	/* the rows were read again: an id no one has gets its error reply
	 * (9000) without a queue made for it (a stranger's random ids would
	 * each hold one for good, and cost a count) */
	if (code != BW_MSG_REQ_SEND || other == NULL ||
	    !bw_meta_others_write(m->meta) ||
	    bw_registry_by_id(m->reg, id) == NULL ||
	    bw_registry_by_id(m->reg, other) == NULL)
		return 0;
	q = msg_queue(m, other);
	if (q != NULL && q->queued_n * 2 < m->cfg.max_queued_n &&
	    q->queued_bytes * 2 < m->cfg.max_queued_bytes)
		return 0;
	/* a count is a scan of the recipient's rows: sends (603) to a full
	 * queue, however many, ask for one a second */
	if ((q = msg_queue_for(m, other)) == NULL ||
	    (q->counted_ms != 0 && now - q->counted_ms < 1000u) ||
	    (x = calloc(1, sizeof(*x))) == NULL)
		return 0;
	q->counted_ms = now;
	x->m = m;
	x->done = done;
	x->arg = arg;
	bw_meta_req_init(&x->req, BW_META_QUEUE, 0, queue_read, x);
	memcpy(x->req.u.queue.id, other, BW_ID_LEN);
	bw_meta_submit(m->meta, &x->req);
	return 1;
}
