/* The SQLite backend of the metadata table (host/meta.h). Requests queue
 * as they are submitted and run at the end of the loop's pass, all of them
 * in one transaction (each in a savepoint of its own, so one that fails
 * undoes only itself), on the loop thread: statements on a local file are
 * short. Commits are not synced (WAL, synchronous=NORMAL); a durable
 * request waits for the next fdatasync of the WAL, run on a worker and
 * shared by every request that arrives meanwhile (group commit): while
 * one runs, the batches that would need the next are held and run as one
 * when it ends. A read of
 * messages stops before the first message whose insert is committed but
 * not yet synced: nothing a crash could take back is ever delivered. Once
 * an fdatasync has failed, every later one counts as failed too, until a
 * restart: what the failed writeback dropped no later sync covers.
 *
 * Checkpoints (the WAL copied into the database file, with an fsync of
 * each) run on a worker too, on a second connection, one at a time: a
 * commit that leaves the WAL past CKPT_PAGES asks for one. On the loop,
 * SQLite's own would stall every connection for the two fsyncs. But the
 * WAL starts over only once a checkpoint has copied all of it, and the
 * loop commits while one runs: so when the first pass leaves some behind,
 * batches are held (as for a sync) while a second pass copies the rest,
 * which the first pass's time wrote, and starts the WAL over with a
 * commit of its own on the loop's connection. Only the store's requests
 * wait, for that short pass; the loop goes on.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/fsutil.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "store/sqlite/sqlite_int.h"

#define CKPT_PAGES	1000u /* SQLite's own default */
#define CKPT_BACKOFF_MS 1000u /* after a failed checkpoint */

struct sq {
	struct sq_store *s;
	struct bw_loop *loop;
	struct bw_meta_req *queued, **queued_tail; /* to run */
	int queued_durable;			   /* one of them is */
	struct bw_call run_call;
	/* durable requests: waiting for the next fsync to start, and those
	 * the one in flight covers */
	struct bw_meta_req *waiting, **waiting_tail;
	struct bw_meta_req *covered;
	int syncing, sync_rc, closing;
	/* the first failed sync's error, for good: Linux may drop the pages
	 * a failed writeback left, and a later fdatasync that succeeds does
	 * not cover them, so nothing committed since can be promised */
	int sync_broken;
	uint64_t syncs;
	/* messages committed and not yet synced: from the lowest such id on,
	 * reads stop (0: none); ids committed while a sync runs are not
	 * covered by it */
	int64_t unsynced_from, after_start_from;
	/* the checkpoint: one in flight at most; its result for the loop */
	int ckpt_running, ckpt_rc, ckpt_copied;
	int ckpt_holding;	/* the second pass runs: batches wait for it */
	uint64_t ckpt_retry_ms; /* none before this, after a failure */
};

static void start_sync(struct sq *q);

/* Message id was inserted (committed with its batch, not synced): reads
 * stop before it until a sync that started after it ends. */
static void
unsynced(struct sq *q, int64_t id)
{
	if (q->unsynced_from == 0)
		q->unsynced_from = id;
	if (q->syncing && q->after_start_from == 0)
		q->after_start_from = id;
}

/* --- one request ---------------------------------------------------------
 */

static int
run_one(struct sq *q, struct bw_meta_req *r)
{
	struct sq_store *s = q->s;
	size_t i;
	int64_t upto, cap;
	int rc = 0;

	switch (r->op) {
	case BW_META_CLIENT_INSERT:
		return sq_store_client_insert(s, r->u.client);
	case BW_META_CLIENT_KEY:
		return sq_store_client_set_key(
			s, r->u.key.id, r->u.key.pubkey, r->u.key.aes,
			r->u.key.issued, r->u.key.used, r->u.key.last_seen);
	case BW_META_CLIENT_TLS_ONLY:
		return sq_store_client_tls_only(s, r->u.key.id);
	case BW_META_CLIENT_TOUCH:
		for (i = 0; i < r->u.touch.n && rc == 0; i++) {
			rc = sq_store_client_touch(s, r->u.touch.v[i].id,
						   r->u.touch.v[i].last_seen);
			if (rc == BW_ENOTFOUND)
				rc = 0; /* a client dropped meanwhile */
		}
		return rc;
	case BW_META_FILE_SET:
		return sq_store_file_set(s, r->u.file.id, r->u.file.path,
					 r->u.file.rec);
	case BW_META_MSG_INSERT:
		if ((rc = sq_store_msg_insert(s, r->u.msg)) == 0)
			unsynced(q, r->u.msg->id);
		return rc;
	case BW_META_MSG_PUT:
		if ((rc = sq_store_msg_put(s, r->u.msg)) == 0)
			unsynced(q, r->u.msg->id);
		return rc;
	case BW_META_MSG_FLOOR:
		return sq_store_msg_floor(s, r->u.drop);
	case BW_META_MSG_DROP:
		return sq_store_msg_drop(s, r->u.drop);
	case BW_META_MSG_DROP_PATH:
		return sq_store_msg_drop_path(s, r->u.drop_path);
	case BW_META_MSG_DELETE:
		return sq_store_msg_delete(s, r->u.del.to, r->u.del.upto,
					   r->u.del.path, r->u.del.path_arg,
					   &r->u.del.n, &r->u.del.bytes);
	case BW_META_MSG_READ:
		upto = r->u.read.upto;
		if (q->unsynced_from > 0) {
			cap = q->unsynced_from - 1;
			if (cap <= r->u.read.after)
				return 0; /* nothing durable in range */
			if (upto == 0 || upto > cap)
				upto = cap;
		}
		return sq_store_msg_each(s, r->u.read.to, r->u.read.after, upto,
					 r->u.read.limit, r->u.read.content,
					 r->u.read.row, r->u.read.row_arg);
	case BW_META_SYNC:
		return 0;
	case BW_META_CLIENT_GET: /* one daemon owns the file: RAM is true */
	case BW_META_FILE_GET:
	case BW_META_CLIENT_SINCE:
	case BW_META_CLIENT_FAIL:
	case BW_META_TOTALS:
	case BW_META_QUEUE:
	case BW_META_LOCK:
	case BW_META_UNLOCK:
	case BW_META_FENCE:
	case BW_META_MSG_PULL_GEN:
		return BW_ECONFIG;
	}
	return BW_ECONFIG;
}

/* (bw_meta_op_traits says which operations write) */
static int
is_write(const struct bw_meta_req *r)
{
	return bw_meta_op_writes(r->op);
}

/* --- completion ----------------------------------------------------------
 */

static void
complete(void *arg)
{
	struct bw_meta_req *r = arg;

	r->done(r);
}

/* r's result is known: its done runs after the current batch of events
 * (never inside the call that submitted it), or after the next sync. */
static void
finish(struct sq *q, struct bw_meta_req *r)
{
	if (q->closing) {
		/* the loop is gone: a durable request that could not be
		 * synced was not made durable */
		if ((r->flags & BW_META_DURABLE) && r->rc == 0)
			r->rc = sq_store_sync(q->s);
		r->done(r);
		return;
	}
	if ((r->flags & BW_META_DURABLE) && r->rc == 0) {
		r->next = NULL;
		*q->waiting_tail = r;
		q->waiting_tail = &r->next;
		return;
	}
	bw_loop_call(q->loop, &r->call, complete, r);
}

/* --- the batch ------------------------------------------------------------
 */

static void
run_batch(void *arg)
{
	struct sq *q = arg;
	struct bw_meta_req *list = q->queued, *r, *next;
	int rc, tx = 0;

	/* while a sync is in flight, a batch with a durable request in it
	 * waits for the sync to end (sync_done runs it), gathering what
	 * arrives meanwhile: it could not be synced sooner anyway, and one
	 * transaction per sync costs less than one per pass. Requests run
	 * in the order they came, so the whole batch waits. */
	if (q->syncing && !q->closing && q->queued_durable)
		return;
	if (q->ckpt_holding && !q->closing)
		return; /* ckpt_done runs it */
	q->queued = NULL;
	q->queued_durable = 0;
	q->queued_tail = &q->queued;
	for (r = list; r != NULL && !tx; r = r->next)
		tx = is_write(r);
	if (tx && (rc = sq_store_begin(q->s)) != 0) {
		for (r = list; r != NULL; r = next) {
			next = r->next;
			r->rc = rc;
			finish(q, r);
		}
		return;
	}
	for (r = list; r != NULL; r = r->next) {
		if (tx && is_write(r)) {
			if ((r->rc = store_tx_begin(q->s)) == 0)
				r->rc = store_tx_end(q->s, run_one(q, r));
		} else {
			r->rc = run_one(q, r);
		}
	}
	if (tx && (rc = sq_store_commit(q->s)) != 0) {
		for (r = list; r != NULL; r = r->next) {
			if (is_write(r) && r->rc == 0)
				r->rc = rc;
		}
	}
	for (r = list; r != NULL; r = next) {
		next = r->next;
		finish(q, r);
	}
	start_sync(q);
}

static void
sq_submit(void *state, struct bw_meta_req *r)
{
	struct sq *q = state;

	r->rc = 0;
	r->next = NULL;
	if (q->closing) {
		r->rc = BW_ECLOSED;
		r->done(r);
		return;
	}
	*q->queued_tail = r;
	q->queued_tail = &r->next;
	if (r->flags & BW_META_DURABLE)
		q->queued_durable = 1;
	/* at the end of the pass: every request of the pass in one batch */
	bw_loop_call(q->loop, &q->run_call, run_batch, q);
}

/* --- group sync -----------------------------------------------------------
 */

static void
sync_work(void *arg)
{
	struct sq *q = arg;

	/* after a failure the answer is that failure anyway (sync_done): no
	 * fdatasync for it (set on the loop before this job was queued) */
	q->sync_rc = q->sync_broken != 0 ? q->sync_broken : sq_store_sync(q->s);
}

static void
call_all(struct sq *q, struct bw_meta_req *list, int rc)
{
	struct bw_meta_req *r, *next;

	for (r = list; r != NULL; r = next) {
		next = r->next;
		r->rc = rc;
		if (q->closing)
			r->done(r); /* the loop is gone */
		else
			bw_loop_call(q->loop, &r->call, complete, r);
	}
}

static void
sync_done(void *arg)
{
	struct sq *q = arg;
	struct bw_meta_req *list = q->covered;

	q->syncing = 0;
	q->covered = NULL;
	q->syncs++;
	if (q->sync_rc != 0 && q->sync_broken == 0) {
		q->sync_broken = q->sync_rc;
		bw_error(
			"store: fsync of the database journal failed: %s; "
			"nothing written from now on is acknowledged as "
			"durable until bulwarkd restarts (SQLite then recovers "
			"the journal from what reached the disk)",
			bw_strerror(q->sync_rc));
	}
	if (q->sync_broken != 0)
		q->sync_rc = q->sync_broken;
	else
		q->unsynced_from = q->after_start_from;
	q->after_start_from = 0;
	call_all(q, list, q->sync_rc);
	if (q->queued != NULL)
		run_batch(q); /* held for this sync; starts the next one */
	else
		start_sync(q);
}

static void
start_sync(struct sq *q)
{
	int rc;

	if (q->syncing || q->waiting == NULL)
		return;
	q->covered = q->waiting;
	q->waiting = NULL;
	q->waiting_tail = &q->waiting;
	q->syncing = 1;
	q->after_start_from = 0;
	if ((rc = bw_loop_submit(q->loop, sync_work, sync_done, q)) == 0)
		return;
	/* no worker (the loop is winding down): sync here */
	sync_work(q);
	sync_done(q);
}

/* --- checkpoints -----------------------------------------------------------
 */

static void
ckpt_work(void *arg)
{
	struct sq *q = arg;

	/* a second pass after a first that copied all has nothing to copy */
	if (!q->ckpt_holding || q->ckpt_copied < q->s->wal_pages)
		q->ckpt_rc = sq_store_checkpoint(q->s, &q->ckpt_copied);
	/* the second pass, nothing committing beside it: the WAL, all
	 * copied, starts over here, with its header's sync, rather than in
	 * the loop's next commit; on the loop's own connection, which keeps
	 * its page cache (the loop runs none of the store's requests while
	 * this pass holds them) */
	if (q->ckpt_rc == 0 && q->ckpt_holding &&
	    q->ckpt_copied >= q->s->wal_pages &&
	    sq_store_wal_restart(q->s) != 0)
		bw_debug("store: the journal was not started over on a "
			 "worker: %s",
			 q->s->ckpt_err);
}

/* The WAL grows meanwhile, and every commit is still durable through the
 * WAL's own sync: a failing checkpoint costs space, not data. */
static void
ckpt_failed(struct sq *q)
{
	q->ckpt_retry_ms = bw_now_ms() + CKPT_BACKOFF_MS;
	bw_error("store: checkpoint of the database journal failed: %s; the "
		 "journal (%d pages) is copied into the database at the next "
		 "try",
		 q->s->ckpt_err, q->s->wal_pages);
}

static void
ckpt_done(void *arg)
{
	struct sq *q = arg;
	int second = q->ckpt_holding;

	q->ckpt_running = 0;
	q->ckpt_holding = 0;
	if (q->ckpt_rc != 0) {
		ckpt_failed(q);
	} else if (!second && !q->closing) {
		/* what was committed meanwhile, with no commit beside it, and
		 * the WAL started over (above) */
		q->ckpt_running = q->ckpt_holding = 1;
		if (bw_loop_submit(q->loop, ckpt_work, ckpt_done, q) == 0)
			return;
		q->ckpt_running = q->ckpt_holding = 0;
	}
	if (second && q->queued != NULL)
		run_batch(q);
}

/* From a commit, on the loop: the WAL is past CKPT_PAGES. */
static void
ckpt_due(void *arg)
{
	struct sq *q = arg;
	int copied;

	if (q->ckpt_running || q->closing ||
	    (q->ckpt_retry_ms != 0 && bw_now_ms() < q->ckpt_retry_ms))
		return;
	q->ckpt_running = 1;
	if (bw_loop_submit(q->loop, ckpt_work, ckpt_done, q) == 0)
		return;
	q->ckpt_running = 0;
	/* no worker (a loop without them, or one winding down): here, as
	 * SQLite's own would, with nothing committing beside it */
	if (sq_store_checkpoint(q->s, &copied) != 0)
		ckpt_failed(q);
}

/* --- the table ------------------------------------------------------------
 */

static int
sq_run(void *state, struct bw_meta_req *r)
{
	struct sq *q = state;
	int own = r->op == BW_META_MSG_INSERT || r->op == BW_META_MSG_PUT ||
		  r->op == BW_META_MSG_FLOOR;
	int tx = is_write(r) && !own;

	/* a restart may be on a worker (the loads need no lock: they run
	 * before the loop does, and a restart starts from the loop) */
	sq_store_lock(q->s);
	if (own) {
		/* an id and its row commit together */
		if ((r->rc = sq_store_begin(q->s)) == 0) {
			r->rc = run_one(q, r);
			if (r->rc == 0)
				r->rc = sq_store_commit(q->s);
			else
				(void)sq_store_rollback(q->s, r->rc);
		}
	} else {
		r->rc = tx ? store_tx_begin(q->s) : 0;
		if (r->rc == 0)
			r->rc = tx ? store_tx_end(q->s, run_one(q, r))
				   : run_one(q, r);
	}
	sq_store_unlock(q->s);
	if (r->rc == 0 && (r->flags & BW_META_DURABLE))
		r->rc = sq_store_sync(q->s);
	return r->rc;
}

static int
sq_open(const char *where, struct bw_loop *loop, void **state)
{
	struct sq *q = calloc(1, sizeof(*q));
	int rc;

	if (q == NULL)
		return BW_ENOMEM;
	if ((rc = sq_store_open(&q->s, where)) != 0) {
		free(q);
		return rc;
	}
	q->loop = loop;
	q->queued_tail = &q->queued;
	q->waiting_tail = &q->waiting;
	if ((rc = sq_store_ckpt_open(q->s, CKPT_PAGES, ckpt_due, q)) != 0) {
		sq_store_close(q->s);
		free(q);
		return rc;
	}
	*state = q;
	return 0;
}

static void
sq_close(void *state)
{
	struct sq *q = state;
	struct bw_meta_req *r;

	if (q == NULL)
		return;
	/* a checkpoint still on a worker (its done has q) ends first: the
	 * daemon drains the loop before it closes the store, and so must
	 * anyone who closes it while the loop still has workers */
	if (q->ckpt_running)
		bw_loop_drain(q->loop);
	/* the loop is gone (its last deferred calls ran what was queued):
	 * whoever still waits is told the truth */
	q->closing = 1;
	if (q->queued != NULL)
		run_batch(q);
	call_all(q, q->covered, BW_ECLOSED);
	q->covered = NULL;
	r = q->waiting;
	q->waiting = NULL;
	call_all(q, r, BW_ECLOSED);
	sq_store_close(q->s);
	free(q);
}

static int
sq_load_clients(void *state, bw_meta_client_cb cb, void *arg)
{
	return sq_store_load_clients(((struct sq *)state)->s, cb, arg);
}

static int
sq_load_files(void *state, bw_meta_file_cb cb, void *arg)
{
	return sq_store_load_files(((struct sq *)state)->s, cb, arg);
}

static int
sq_msg_totals(void *state, bw_meta_totals_cb cb, void *arg)
{
	return sq_store_msg_totals(((struct sq *)state)->s, cb, arg);
}

static int
sq_msg_blobs(void *state, bw_meta_blobs_cb cb, void *arg)
{
	return sq_store_msg_files(((struct sq *)state)->s, cb, arg);
}

static uint64_t
sq_syncs(const void *state)
{
	return ((const struct sq *)state)->syncs;
}

/* Read only: the file opened without creating or changing it. */
static int
sq_check(const char *where, char *msg, size_t cap)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	long long n = -1;
	int rc;

	rc = sqlite3_open_v2(where, &db, SQLITE_OPEN_READONLY, NULL);
	if (rc == SQLITE_CANTOPEN) {
		sqlite3_close(db);
		if (bw_fs_parent_writable(where)) {
			snprintf(msg, cap,
				 "SQLite %s: not there yet, created at the "
				 "first start",
				 where);
			return 0;
		}
		snprintf(msg, cap,
			 "SQLite %s: missing, and its directory cannot be "
			 "written",
			 where);
		return BW_ECONFIG;
	}
	if (rc == SQLITE_OK &&
	    sqlite3_prepare_v2(db, "SELECT count(*) FROM clients", -1, &st,
			       NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	if (n < 0)
		snprintf(msg, cap, "SQLite %s: %s", where,
			 db != NULL ? sqlite3_errmsg(db) : "out of memory");
	else
		snprintf(msg, cap, "SQLite %s: %lld clients", where, n);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n < 0 ? BW_EDB : 0;
}

static int
sq_msg_last_id(void *state, int64_t *out)
{
	*out = ((struct sq *)state)->s->msg_next;
	return 0;
}

const struct bw_meta_backend bw_meta_sqlite = {
	.scheme = "sqlite",
	.open = sq_open,
	.close = sq_close,
	.submit = sq_submit,
	.run = sq_run,
	.load_clients = sq_load_clients,
	.load_files = sq_load_files,
	.msg_totals = sq_msg_totals,
	.msg_blobs = sq_msg_blobs,
	.syncs = sq_syncs,
	.check = sq_check,
	.msg_last_id = sq_msg_last_id,
};
