/* 601 and 604: replies streamed in bounded memory. A 2101 walks the
 * registry in the order clients were added; a 2104 is planned first (rows
 * up to the cap, so its size is known) and then read from the store a page
 * at a time, large contents from their files, as the socket drains. The
 * rows a 2104 carried are deleted only on evidence that they arrived.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/msg/msg_int.h"

#define PAGE_ROWS  64u
#define FILE_CHUNK (64u * 1024u)

/* --- 601 ----------------------------------------------------------------- */

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

/* --- 604: the plan ------------------------------------------------------- */

void
pull_uncount(struct bw_msg *m, struct msg_conn *mc)
{
	struct bw_client *cl;

	if (!mc->pull_counted)
		return;
	mc->pull_counted = 0;
	if ((cl = bw_registry_by_id(m->reg, mc->who)) != NULL &&
	    cl->pulls_n > 0)
		cl->pulls_n--;
}

struct plan {
	uint64_t cap, total;
	int64_t upto;
	uint64_t rows, max_rows;
	int64_t synced; /* rows above are not on disk yet */
};

/* Rows in id order until the cap; the first always fits (a message larger
 * than the cap travels alone). */
static int
plan_row(void *arg, const struct bw_msg_rec *r)
{
	struct plan *pl = arg;
	uint64_t need = BW_MSG_RECORD_HDR + r->size;

	if (r->id > pl->synced || pl->rows >= pl->max_rows)
		return 1;
	if (pl->rows > 0 &&
	    (pl->total + need > pl->cap || pl->total + need > UINT32_MAX))
		return 1;
	pl->total += need;
	pl->upto = r->id;
	pl->rows++;
	return 0;
}

static int
pull_start(struct bw_conn *c, struct bw_msg *m, struct msg_conn *mc)
{
	/* the plan reads at most --pull-max-messages rows on the loop */
	struct plan pl = {m->cfg.pull_cap,   0,	       0, 0,
			  m->cfg.pull_max_n, INT64_MAX};
	int rc;

	/* rows still waiting for their fsync are left for a later pull */
	if (m->unsynced_n > 0)
		pl.synced = m->synced_upto;
	rc = bw_store_msg_each(m->store, mc->who, 0, 0, 0, 0, plan_row, &pl);
	if (rc != 0) {
		mc->st = M_IDLE;
		pull_uncount(m, mc);
		msg_settle(c, m, mc, 0);
		(void)bw_frame_error(c, bw_strerror(rc));
		bw_frame_done(c);
		bw_frame_kick(c);
		return 0;
	}
	bw_conn_note_arrivals(c); /* for the evidence of delivery */
	mc->cursor = 0;
	mc->upto = pl.upto;
	mc->reply_left = pl.total;
	(void)bw_frame_reply_begin(c, BW_MSG_RESP_WAITING, (uint32_t)pl.total);
	mc->st = M_PULL;
	msg_stream_begin(c, m, mc);
	bw_debug("c%llu 604: %llu messages, %llu bytes", ULL(c->id),
		 ULL(pl.rows), ULL(pl.total));
	msg_stream_more(c, m, mc);
	return 0;
}

int
msg_on_pull(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	struct bw_msg *m = r->ctx;
	struct msg_conn *mc = r->state;
	struct bw_client *me;

	(void)p;
	if ((me = msg_requester(m, r)) == NULL)
		return bw_frame_error(c, "unknown client id");
	/* one client's pulls on many connections cannot take the loop */
	if (me->pulls_n >= m->cfg.max_pulls)
		return bw_frame_error(c, "too many pulls of this client at "
					 "once (--max-pulls-per-client)");
	memcpy(mc->who, me->id, BW_ID_LEN);
	me->pulls_n++;
	mc->pull_counted = 1;
	/* this pull is the client's latest: an earlier one, on another
	 * connection, no longer deletes what it delivered (its rows are in
	 * this reply too) */
	mc->gen = ++me->pull_gen;
	bw_frame_wait(c);
	return pull_start(c, m, mc);
}

/* --- 604: streaming ------------------------------------------------------ */

struct page {
	struct bw_conn *c;
	struct bw_msg *m;
	struct msg_conn *mc;
	unsigned rows;
	int err;
};

static int
page_row(void *arg, const struct bw_msg_rec *r)
{
	struct page *pg = arg;
	struct msg_conn *mc = pg->mc;
	struct bw_msg_record h;
	uint8_t hdr[BW_MSG_RECORD_HDR];
	const char *name;

	pg->rows++;
	memcpy(h.from, r->from, BW_ID_LEN);
	h.id = (uint32_t)r->id;
	h.type = (uint8_t)r->type;
	h.size = (uint32_t)r->size;
	bw_msg_record_encode(&h, hdr);
	if (bw_frame_reply_add(pg->c, hdr, sizeof(hdr)) != 0) {
		pg->err = BW_ECLOSED;
		return 1;
	}
	mc->cursor = r->id;
	mc->reply_left -= sizeof(hdr) + r->size;
	if (r->path[0] != '\0') {
		name = r->path + sizeof(MSG_SPILL_DIR);
		mc->file_fd = openat(pg->m->dir_fd, name,
				     O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (mc->file_fd >= 0) {
			mc->file_open = 1;
		} else {
			bw_error("messenger: message %lld: cannot open its "
				 "content %s: %s",
				 (long long)r->id, r->path, strerror(errno));
			pg->err = -errno;
		}
		mc->file_left = r->size;
		return 1; /* the file streams before the next row */
	}
	if (r->size > 0 &&
	    bw_frame_reply_add(pg->c, r->content, (size_t)r->size) != 0) {
		pg->err = BW_ECLOSED;
		return 1;
	}
	return bw_conn_queued(pg->c) >= MSG_STREAM_CHUNK;
}

static int
file_more(struct bw_conn *c, struct msg_conn *mc)
{
	uint8_t buf[FILE_CHUNK];
	size_t want = mc->file_left < sizeof(buf) ? (size_t)mc->file_left
						  : sizeof(buf);
	ssize_t n = read(mc->file_fd, buf, want);

	if (n <= 0)
		return n < 0 ? -errno : BW_ESIZE; /* shorter than its row */
	if (bw_frame_reply_add(c, buf, (size_t)n) != 0)
		return BW_ECLOSED;
	mc->file_left -= (uint64_t)n;
	if (mc->file_left == 0) {
		close(mc->file_fd);
		mc->file_open = 0;
	}
	return 0;
}

void
msg_stream_more(struct bw_conn *c, struct bw_msg *m, struct msg_conn *mc)
{
	struct page pg = {c, m, mc, 0, 0};
	int rc = 0;

	if (mc->st == M_LIST) {
		list_more(c, m, mc);
		return;
	}
	while (rc == 0 && (mc->reply_left > 0 || mc->file_open) &&
	       msg_stream_room(c, m, mc)) {
		if (mc->file_open) {
			rc = file_more(c, mc);
			continue;
		}
		pg.rows = 0;
		rc = bw_store_msg_each(m->store, mc->who, mc->cursor, mc->upto,
				       PAGE_ROWS, 1, page_row, &pg);
		if (rc == 0 && pg.err != 0)
			rc = pg.err;
		if (rc == 0 && pg.rows == 0)
			rc = BW_ESIZE; /* rows gone from under the plan */
	}
	msg_stream_account(c, m, mc);
	if (rc != 0) {
		bw_error("c%llu 2104 cut short: %s", ULL(c->id),
			 bw_strerror(rc));
		if (rc != BW_ECLOSED)
			m->err_pull++;
		bw_conn_close_later(c, NULL);
		return;
	}
	if (mc->reply_left > 0 || mc->file_open)
		return; /* on_drained, or room, brings us back */
	(void)bw_frame_reply_end(c);
	mc->st = M_IDLE;
	msg_stream_end(m, mc);
	pull_uncount(m, mc);
	/* a client that closed its side before the reply was complete has
	 * shown nothing: it may never read what it half-closed on */
	mc->delivered = mc->upto > 0 && !bw_conn_peer_shut(c);
	mc->delivered_upto = mc->upto;
	mc->sent_total = c->out_total;
	bw_frame_done(c);
	bw_frame_kick(c);
}

/* --- evidence ------------------------------------------------------------
 */

/* Delivered contents' files, removed on a worker: unlinking a large file
 * frees its blocks, which can take a while (and stall every connection if
 * done on the loop thread). */
struct gone {
	int dir_fd;
	size_t n, cap;
	char (*names)[BW_PATH_CAP];
};

static int
gone_add(void *arg, const char *path)
{
	struct gone *g = arg;
	char(*grown)[BW_PATH_CAP];
	size_t cap;

	if (g->n == g->cap) {
		cap = g->cap ? g->cap * 2 : 8;
		if ((grown = realloc(g->names, cap * sizeof(*g->names))) ==
		    NULL)
			return BW_ENOMEM; /* the delete rolls back */
		g->names = grown;
		g->cap = cap;
	}
	snprintf(g->names[g->n++], BW_PATH_CAP, "%s",
		 path + sizeof(MSG_SPILL_DIR));
	return 0;
}

static void
gone_work(void *arg)
{
	struct gone *g = arg;
	size_t i;

	for (i = 0; i < g->n; i++)
		(void)unlinkat(g->dir_fd, g->names[i], 0);
}

static void
gone_free(void *arg)
{
	struct gone *g = arg;

	free(g->names);
	free(g);
}

/* The rows are deleted (committed 0): their files go; else they stay. */
static void
gone_submit(struct bw_msg *m, struct gone *g, int committed)
{
	if (committed != 0 || g->n == 0) {
		gone_free(g);
		return;
	}
	if (bw_loop_submit(m->eng->loop, gone_work, gone_free, g) == 0)
		return;
	gone_work(g);
	gone_free(g);
}

void
msg_settle(struct bw_conn *c, struct bw_msg *m, struct msg_conn *mc,
	   int evidence)
{
	struct bw_client *cl = bw_registry_by_id(m->reg, mc->who);
	struct gone *g;
	uint64_t n = 0, bytes = 0;
	int rc;

	if (mc->delivered && evidence && cl != NULL &&
	    mc->gen == cl->pull_gen) {
		if ((g = calloc(1, sizeof(*g))) == NULL) {
			/* not deleted now: delivered again, at least once */
			bw_error("c%llu messages delivered but not deleted: %s",
				 ULL(c->id), bw_strerror(BW_ENOMEM));
			mc->delivered = 0;
			return;
		}
		g->dir_fd = m->dir_fd;
		rc = bw_store_msg_delete(m->store, mc->who, mc->delivered_upto,
					 gone_add, g, &n, &bytes);
		gone_submit(m, g, rc);
		if (rc != 0)
			bw_error("c%llu messages delivered but not deleted: %s",
				 ULL(c->id), bw_strerror(rc));
		if (cl != NULL) {
			cl->queued_n -= n < cl->queued_n ? n : cl->queued_n;
			cl->queued_bytes -= bytes < cl->queued_bytes
						    ? bytes
						    : cl->queued_bytes;
		}
		m->queued_n -= n < m->queued_n ? n : m->queued_n;
		m->queued_bytes -=
			bytes < m->queued_bytes ? bytes : m->queued_bytes;
		m->delivered += n;
	}
	mc->delivered = 0;
}

/* --- start-up ------------------------------------------------------------
 */

static int
add_totals(void *arg, const uint8_t to[BW_ID_LEN], uint64_t n, uint64_t bytes)
{
	struct bw_msg *m = arg;
	struct bw_client *cl = bw_registry_by_id(m->reg, to);

	if (cl != NULL) {
		cl->queued_n = n;
		cl->queued_bytes = bytes;
	}
	m->queued_n += n;
	m->queued_bytes += bytes;
	return 0;
}

int
msg_load_totals(struct bw_msg *m)
{
	return bw_store_msg_totals(m->store, add_totals, m);
}
