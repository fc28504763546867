/* 603: a message arrives and becomes durable before its 2103. A small
 * content is buffered; a large one streams into a file under
 * messages/.incoming, fsync'd and renamed into messages/ on a worker. Rows
 * are written at the end of the loop's batch, many in one transaction, and
 * every 2103 leaves after the fsync that covers its row (svc/durable.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/msg/msg_int.h"

#define SWALLOW_WANT (16u * 1024u)
#define BODY_WANT    (256u * 1024u)

/* p's content brought its received bytes to n: what it counts against
 * its recipient's queue follows. */
static void
inbound_grow(struct pending *p, uint64_t n)
{
	struct bw_client *to = bw_registry_by_id(p->m->reg, p->rec.to);

	if (to != NULL && p->inbound == 1)
		to->inbound_bytes += n - p->inbound_bytes;
	p->inbound_bytes = n;
}

/* p no longer counts as on its way to its recipient (its row is counted
 * as queued now, or it was refused). */
static void
inbound_end(struct pending *p)
{
	struct bw_client *to;

	if (!p->inbound)
		return;
	if ((to = bw_registry_by_id(p->m->reg, p->rec.to)) != NULL) {
		to->inbound_n--;
		if (p->inbound == 1)
			to->inbound_bytes -= p->inbound_bytes;
		else
			to->reserved_bytes -= p->rec.size;
	}
	p->inbound = 0;
}

/* p's content is all in: it counts whole against its recipient's queue,
 * if the queue has room for it now (committed rows and contents already
 * in; not contents still arriving), else 0 and it is refused. */
static int
inbound_reserve(struct pending *p)
{
	struct bw_client *to = bw_registry_by_id(p->m->reg, p->rec.to);
	const struct bw_msg_cfg *cfg = &p->m->cfg;

	if (to == NULL || p->inbound != 1)
		return 0;
	if (to->queued_bytes + to->reserved_bytes + p->rec.size >
	    cfg->max_queued_bytes)
		return 0;
	to->inbound_bytes -= p->inbound_bytes;
	to->reserved_bytes += p->rec.size;
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
	if (p->fd >= 0) {
		close(p->fd);
		(void)unlinkat(p->m->incoming_fd, p->tmp, 0);
	}
	if (p->content != NULL)
		bw_secure_free(p->content, p->rec.size);
	free(p);
}

/* The connection goes away while its 603 is in progress: a body being
 * received is dropped; one waiting for the disk goes on without it. */
void
msg_send_abort(struct bw_conn *c, struct msg_conn *mc)
{
	struct pending *p = mc->p;

	(void)c;
	if (p == NULL)
		return;
	mc->p = NULL;
	if (mc->st == M_BODY)
		pending_free(p);
	/* else the commit goes on and, finding c dead, does not reply */
}

/* The discarded content's slot is free (it ended, or c goes). */
void
msg_swallow_end(struct bw_msg *m, struct msg_conn *mc)
{
	bw_slots_release(&m->slots, &mc->swallow_slot);
}

/* --- the reply ----------------------------------------------------------- */

/* The row of p is in the table (and counted) but not known to be on disk. */
static void
row_unsynced(struct bw_msg *m, struct pending *p)
{
	struct bw_client *to = bw_registry_by_id(m->reg, p->rec.to);

	inbound_end(p);
	if (m->unsynced_n++ == 0)
		m->synced_upto = p->rec.id - 1; /* every earlier row is */
	if (to != NULL) {
		to->queued_n++;
		to->queued_bytes += p->rec.size;
	}
	m->queued_n++;
	m->queued_bytes += p->rec.size;
}

/* Its fsync is over: on success the row may be delivered; on failure the
 * sender is told 9000, so the row goes (it must not reach the recipient
 * after its sender was told it was not stored). */
static void
row_synced(struct bw_msg *m, struct pending *p, int ok)
{
	struct bw_client *to;
	int rc;

	m->unsynced_n--;
	if (ok) {
		if (p->rec.id > m->synced_upto)
			m->synced_upto = p->rec.id;
		return;
	}
	if ((rc = bw_store_msg_drop(m->store, p->rec.id)) != 0) {
		bw_error("messenger: message %lld refused but not removed: %s",
			 (long long)p->rec.id, bw_strerror(rc));
		return;
	}
	if (p->rec.path[0] != '\0')
		(void)unlinkat(m->dir_fd, p->rec.path + sizeof(MSG_SPILL_DIR),
			       0);
	if ((to = bw_registry_by_id(m->reg, p->rec.to)) != NULL) {
		to->queued_n--;
		to->queued_bytes -= p->rec.size;
	}
	m->queued_n--;
	m->queued_bytes -= p->rec.size;
}

static void
stored_durable(void *arg, int rc)
{
	struct pending *p = arg;
	struct bw_conn *c = p->conn;
	uint8_t out[BW_MSG_STORED_LEN];
	int alive = c != NULL && !bw_conn_dead(c);

	if (p->counted)
		row_synced(p->m, p, rc == 0);
	if (rc == 0 && p->rc == 0) {
		p->m->stored++;
		p->m->stored_bytes += p->rec.size;
	} else {
		p->m->err_store++;
	}
	if (alive) {
		MC(c)->st = M_IDLE;
		MC(c)->p = NULL;
		if (rc == 0 && p->rc == 0) {
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
	p->fd = -1; /* the file, if any, is the row's now */
	pending_free(p);
	if (c != NULL) {
		bw_conn_release(c);
		if (alive)
			bw_frame_kick(c);
	}
}

/* Rows for every 603 of the batch, in one transaction. */
static void
write_batch(void *arg)
{
	struct bw_msg *m = arg;
	struct pending *p, *list = m->batch;
	int rc;

	m->batch = NULL;
	m->batch_tail = &m->batch;
	m->batch_scheduled = 0;
	rc = bw_store_begin(m->store);
	for (p = list; rc == 0 && p != NULL; p = p->next) {
		p->rc = bw_store_msg_insert(m->store, &p->rec);
		if (p->rc == 0 && p->rec.id > (int64_t)UINT32_MAX) {
			/* ids are u32 on the wire: refused, and not kept */
			p->rc = BW_ETOOBIG;
			if (bw_store_msg_drop(m->store, p->rec.id) != 0)
				bw_error("messenger: message %lld over the "
					 "u32 ids not removed",
					 (long long)p->rec.id);
		}
	}
	if (rc == 0)
		rc = bw_store_commit(m->store);
	for (p = list; p != NULL; p = p->next) {
		if (rc != 0 && p->rc == 0)
			p->rc = rc;
		if (p->rc == 0) {
			p->counted = 1;
			row_unsynced(m, p);
		}
	}
	while ((p = list) != NULL) {
		list = p->next;
		p->next = NULL;
		if (p->rc != 0 && p->rec.path[0] != '\0')
			(void)unlinkat(m->dir_fd,
				       p->rec.path + sizeof(MSG_SPILL_DIR), 0);
		if (bw_durable_after(m->durable, stored_durable, p) != 0)
			stored_durable(p, BW_ENOMEM);
	}
}

static void
enqueue(struct bw_msg *m, struct pending *p)
{
	*m->batch_tail = p;
	m->batch_tail = &p->next;
	if (!m->batch_scheduled) {
		if (bw_loop_defer(m->eng->loop, write_batch, m) == 0)
			m->batch_scheduled = 1;
		else
			write_batch(m);
	}
}

/* A large content's file: fsync'd, renamed into messages/ and the
 * directory fsync'd before its row can exist. */
static void
spill_work(void *arg)
{
	struct pending *p = arg;
	struct bw_msg *m = p->m;
	const char *name = p->rec.path + sizeof(MSG_SPILL_DIR);

	p->rc = fsync(p->fd) == 0 ? 0 : -errno;
	if (close(p->fd) != 0 && p->rc == 0)
		p->rc = -errno;
	p->fd = -1;
	/* a link, not a rename: it never replaces another message's file
	 * (EEXIST refuses this one instead) */
	if (p->rc == 0 &&
	    linkat(m->incoming_fd, p->tmp, m->dir_fd, name, 0) != 0)
		p->rc = -errno;
	if (p->rc == 0 && fsync(m->dir_fd) != 0) {
		p->rc = -errno;
		(void)unlinkat(m->dir_fd, name, 0);
	}
	(void)unlinkat(m->incoming_fd, p->tmp, 0);
}

static void
spill_done(void *arg)
{
	struct pending *p = arg;

	if (p->rc != 0) {
		bw_error("messenger: cannot store a message's content: %s",
			 bw_strerror(p->rc));
		p->rec.path[0] = '\0';
		stored_durable(p, 0); /* p->rc says what failed */
		return;
	}
	enqueue(p->m, p);
}

/* --- the request -------------------------------------------------------- */

/* A refused 603: a small body is read and discarded so the 9000 comes in
 * step, a large one is answered at once and the connection closed. */
static void
evict_swallow(struct bw_slot *s)
{
	struct bw_conn *c = s->c;
	struct msg_conn *mc = MC(c);

	msg_swallow_end(mc->m, mc);
	mc->st = M_IDLE;
	(void)bw_frame_fail(c, "refused content too slow for a busy server");
}

static int
refuse(struct bw_conn *c, struct msg_conn *mc, uint64_t size, const char *why)
{
	const char *slot_why;

	if (size > MSG_SWALLOW_MAX)
		return bw_frame_fail(c, why);
	/* a content read only to be discarded holds a slot too */
	if (bw_slots_take(&mc->m->slots, &mc->swallow_slot, c, size,
			  evict_swallow, &slot_why) != 0)
		return bw_frame_fail(c, slot_why);
	bw_info("c%llu 603 refused, discarding %llu bytes: %s", ULL(c->id),
		ULL(size), why);
	mc->st = M_SWALLOW;
	mc->left = size;
	mc->win_start_ms = bw_now_ms();
	mc->win_left = size;
	c->want = SWALLOW_WANT;
	bw_frame_stream(c);
	return 0;
}

static int
open_spill(struct bw_msg *m, struct pending *p)
{
	char name[MSG_TMP_CAP];
	int tries;

	for (tries = 0; tries < 4; tries++) {
		msg_tmp_name(m, ".in-", p->tmp);
		p->fd = openat(m->incoming_fd, p->tmp,
			       O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
				       O_CLOEXEC,
			       0600);
		if (p->fd >= 0 || errno != EEXIST)
			break;
	}
	if (p->fd < 0)
		return -errno;
	msg_tmp_name(m, "", name);
	snprintf(p->rec.path, sizeof(p->rec.path), MSG_SPILL_DIR "/%s", name);
	return 0;
}

/* A newcomer needs the slot of this content, which trickles: 9000, and
 * the connection closes. */
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
	m->slots.max = m->cfg.max_bodies;
	m->slots.per_addr = m->cfg.max_bodies_per_addr;
	m->slots.window_ms = m->cfg.window_ms;
	if ((from = msg_requester(m, r)) == NULL)
		return refuse(c, mc, s.content_size, "unknown client id");
	if (!bw_msg_type_known(s.type))
		return refuse(c, mc, s.content_size, "unknown message type");
	if ((to = bw_registry_by_id(m->reg, s.to)) == NULL)
		return refuse(c, mc, s.content_size, "unknown recipient");
	/* contents still arriving count by what they brought so far: four
	 * that announce a gigabyte and trickle hold only what they sent */
	if (to->queued_n + to->inbound_n >= m->cfg.max_queued_n ||
	    to->queued_bytes + to->reserved_bytes + to->inbound_bytes +
			    s.content_size >
		    m->cfg.max_queued_bytes) {
		bw_warn("c%llu 603 refused: the queue of '%s' is full (%llu "
			"messages, %llu bytes, %llu more arriving)",
			ULL(c->id),
			bw_escape_display(to->name, shown, sizeof(shown)),
			ULL(to->queued_n), ULL(to->queued_bytes),
			ULL(to->inbound_n));
		return refuse(c, mc, s.content_size, "recipient's queue full");
	}
	if ((pd = calloc(1, sizeof(*pd))) == NULL)
		return BW_ENOMEM;
	pd->m = m;
	pd->fd = -1;
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
	to->inbound_n++;
	if (s.content_size <= m->cfg.inline_max) {
		if (s.content_size > 0 &&
		    (pd->content = malloc(s.content_size)) == NULL) {
			free(pd);
			return BW_ENOMEM;
		}
		pd->rec.content = pd->content;
	} else if ((rc = open_spill(m, pd)) != 0) {
		bw_error("c%llu 603: cannot open a file for the content: %s",
			 ULL(c->id), bw_strerror(rc));
		pending_free(pd);
		return refuse(c, mc, s.content_size, "cannot store it");
	}
	mc->p = pd;
	mc->st = M_BODY;
	mc->left = s.content_size;
	mc->win_start_ms = bw_now_ms();
	mc->win_left = s.content_size;
	c->want = BODY_WANT;
	bw_frame_stream(c);
	return 0;
}

static int
write_full(int fd, const uint8_t *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Each window of --timeout must bring --min-rate bytes a second. */
static int
too_slow(struct bw_conn *c, struct bw_msg *m, struct msg_conn *mc)
{
	uint64_t now = bw_now_ms(), elapsed = now - mc->win_start_ms, left;

	if (m->cfg.min_rate == 0 || elapsed < m->cfg.window_ms)
		return 0;
	left = mc->left > c->in.len ? mc->left - c->in.len : 0;
	if ((mc->win_left - left) * 1000u < (uint64_t)m->cfg.min_rate * elapsed)
		return 1;
	mc->win_start_ms = now;
	mc->win_left = left;
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

	if (too_slow(c, m, mc)) {
		bw_info("c%llu 603 body slower than %u bytes/s", ULL(c->id),
			m->cfg.min_rate);
		return BW_ETIMEDOUT;
	}
	if (mc->st == M_BODY && k > 0) {
		if (p->fd < 0)
			memcpy(p->content + (p->rec.size - mc->left),
			       bw_buf_head(&c->in), k);
		else if ((rc = write_full(p->fd, bw_buf_head(&c->in), k)) !=
			 0) {
			bw_error("c%llu 603: cannot write the content: %s",
				 ULL(c->id), bw_strerror(rc));
			msg_send_abort(c, mc);
			mc->st = M_IDLE;
			return bw_frame_fail(c, "cannot store the content");
		}
	}
	bw_buf_consume(&c->in, k);
	mc->left -= k;
	if (mc->st == M_BODY) {
		inbound_grow(p, p->rec.size - mc->left);
		bw_slot_progress(&p->slot, mc->left > c->in.len
						   ? mc->left - c->in.len
						   : 0);
	} else {
		bw_slot_progress(&mc->swallow_slot, mc->left);
	}
	if (mc->left > 0 || !bw_frame_body_end(c))
		return 0;
	if (mc->st == M_SWALLOW) {
		mc->st = M_IDLE;
		msg_swallow_end(m, mc);
		rc = bw_frame_error(c, "message refused");
		bw_frame_done(c);
		return rc;
	}
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
	/* the body is in: off to the disk; the reply waits for it */
	mc->st = M_STORE;
	p->conn = c;
	bw_conn_hold(c);
	bw_frame_wait(c);
	if (p->fd < 0) {
		enqueue(m, p);
		return 0;
	}
	if ((rc = bw_loop_submit(m->eng->loop, spill_work, spill_done, p)) !=
	    0) {
		p->rc = rc;
		close(p->fd);
		p->fd = -1;
		(void)unlinkat(m->incoming_fd, p->tmp, 0);
		spill_done(p);
	}
	return 0;
}
