/* CRC ok (1029), CRC retry (1030) and CRC fail (1031): the client's verdict
 * on a stored upload. A CRC ok marks it verified, or swaps a pending
 * replacement into place (move, then row; a failed row undoes the move); a
 * CRC retry or fail throws a pending replacement away. Each runs under the
 * stored path's lock, like a commit: rows through the metadata store's
 * requests, objects on the workers.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/vault/vault_int.h"

struct crc_op {
	struct bw_lock_wait wait;
	struct bw_vault *v;
	struct bw_conn *c; /* held until the op ends */
	uint16_t code;
	uint8_t id[BW_ID_LEN];
	char name[BW_NAME_CAP], stored[BW_NAME_CAP], path[BW_PATH_CAP];
	char pend_key[BW_PATH_CAP], backup[BW_BLOB_KEY_CAP];
	uint64_t size;
	int locked, rc;
	/* a swap: the row before it, to put back (with the file) if its row
	 * cannot be made durable */
	int swapped, restore_row;
	int moved; /* the replacement's move to path said it was done */
	struct bw_file_rec prev;
	uint64_t prev_size, prev_pending_size;
	struct bw_meta_req sync;
	struct bw_meta_req fence; /* the file's lock asked before the swap */
	/* the uploader's connection, on another node, was open: asked
	 * again after a while (owed_t armed while owed_waiting) */
	struct bw_timer owed_t;
	unsigned owed_tries;
	int owed_waiting;
};

/* An uploader's connection on another node that is still open may be one
 * the client is closing (a client that opens a connection per request
 * sends its verdict on a new one as soon as it has the file OK reply):
 * asked again every OWED_RETRY_MS for up to OWED_TRIES times. The file's
 * lock is given up meanwhile, and taken again for each try, so that a
 * stranger's verdict never holds up the uploader's own, on any node. */
#define OWED_RETRY_MS 50u
#define OWED_TRIES    40u

static void
crc_reply(struct crc_op *op, int reply_code)
{
	struct bw_conn *c = op->c;
	struct vault_conn *vc;

	if (!bw_conn_dead(c)) {
		vc = VC(c);
		vc->op = NULL;
		vc->st = V_IDLE;
		if (reply_code == BW_VAULT_RESP_ACK) {
			vc->awaiting = 0;
			(void)bw_frame_reply(c, BW_VAULT_RESP_ACK, op->id,
					     BW_ID_LEN);
		} else if (reply_code == BW_VAULT_RESP_ERROR) {
			(void)bw_frame_error(c, op->rc != 0
							? bw_strerror(op->rc)
							: "no such file");
		} else if (bw_frame_padded(c)) {
			bw_conn_finish(c); /* CRC retry (1030): no reply */
		}
		bw_frame_done(c);
	}
	if (op->locked)
		bw_unlock(&op->v->locks, op->path);
	free(op);
	vault_release_and_resume(c);
}

/* --- undoing a swap -------------------------------------------------------
 * A swap whose row could not be written, or made durable, is undone, file
 * and row, so that the client's general error (2107) and what it finds
 * later agree: the replacement waits again for a CRC ok (1029). */

static void
row_restored(void *arg, int rc)
{
	struct crc_op *op = arg;
	char shown[BW_ESC_CAP];

	if (rc != 0)
		bw_error("vault: the row of %s could not be put back",
			 bw_escape_display(op->path, shown, sizeof(shown)));
	crc_reply(op, BW_VAULT_RESP_ERROR);
}

/* Worker side: the stored object goes back under its pending key (if the
 * move took it from there) and the backup back in place. */
static void
unswap_files(struct crc_op *op)
{
	const struct bw_blobs *b = op->v->blobs;
	uint64_t size;

	/* A move that failed with its pending key still there: a local
	 * rename that failed did nothing, and only the backup is extra; S3's
	 * move is a copy whose success can be lost, then a delete: the backup
	 * goes back over the file, which changes nothing if the copy never
	 * happened, and the replacement waits where it was. A move that said
	 * it was done, or whose pending key is gone (a rename whose
	 * directory's sync failed after it), is undone whole: the
	 * replacement back aside first. */
	if (!op->moved &&
	    bw_blob_size(b, op->pend_key, &size) != BW_ENOTFOUND) {
		if (!bw_blobs_others_write(b))
			(void)bw_blob_remove(b, op->backup);
		else if (op->backup[0] != '\0')
			vault_restore_backup(op->v, op->path, op->backup);
		return;
	}
	if (bw_blob_copy(b, op->path, op->pend_key) != 0)
		bw_error("vault: the replacement of %s could not be put back "
			 "aside",
			 op->path);
	vault_restore_backup(op->v, op->path, op->backup);
}

static void
unswap_work(void *arg)
{
	unswap_files(arg);
}

static void
unswap_done(void *arg)
{
	struct crc_op *op = arg;

	if (!op->restore_row ||
	    vfile_set(op->v, op->id, op->path, &op->prev, op->prev_size,
		      op->prev_pending_size, row_restored, op) != 0)
		row_restored(op, op->restore_row ? BW_ENOMEM : 0);
}

static void
unswap(struct crc_op *op, int restore_row)
{
	op->restore_row = restore_row;
	if (bw_loop_submit(op->v->eng->loop, unswap_work, unswap_done, op) == 0)
		return;
	unswap_files(op);
	unswap_done(op);
}

/* --- the reply ------------------------------------------------------------
 */

static void
crc_durable(struct bw_meta_req *r)
{
	struct crc_op *op = r->arg;

	if (r->rc != 0) {
		op->rc = r->rc;
		bw_error("vault: a verdict's row could not be made durable: %s",
			 bw_strerror(r->rc));
		if (op->swapped) {
			unswap(op, 1);
			return;
		}
	} else if (op->swapped) {
		vault_remove_later(op->v, op->backup);
	}
	crc_reply(op, r->rc == 0 ? BW_VAULT_RESP_ACK : BW_VAULT_RESP_ERROR);
}

/* An ack (2104) to a CRC ok (1029) promises the file is verified (or the
 * replacement in place) for good, and one to a CRC fail (1031) that the
 * replacement is gone: each waits until its row is durable. */
static void
crc_finish(struct crc_op *op, int reply_code)
{
	if (reply_code != BW_VAULT_RESP_ACK) {
		crc_reply(op, reply_code);
		return;
	}
	vault_durable(op->v, &op->sync, crc_durable, op);
}

/* While the connection that uploaded the version of op's path waiting for
 * a verdict is open (and may still send requests: a padded client's is
 * finished with its file OK reply, 2103), the verdict is its own: another
 * connection with the same client id (who read the id in the messenger's
 * list reply, 2101) cannot confirm a version the uploader will reject, or
 * discard one it will confirm. */
static int
stranger(const struct crc_op *op, const struct vfile *f)
{
	const struct bw_conn *up;

	if (f == NULL || f->uploader == 0 || f->uploader == op->c->id)
		return 0;
	up = bw_engine_conn(op->v->eng, f->uploader);
	return up != NULL && bw_conn_serving(up);
}

/* --- a CRC ok (1029) of a pending replacement: the swap -------------------
 */

static void
swap_row_done(void *arg, int rc)
{
	struct crc_op *op = arg;
	char shown[BW_ESC_CAP], val[BW_ESC_CAP];

	bw_escape_display(op->path, shown, sizeof(shown));
	if (rc != 0) {
		op->rc = rc;
		bw_error("c%llu 1029 %s: the replacement could not be put in "
			 "place: %s",
			 ULL(op->c->id), shown, bw_strerror(rc));
		unswap(op, 0); /* the row still names the pending file */
		return;
	}
	bw_conn_event(op->c, BW_LOG_INFO, "file_verified",
		      "file=%s replaced=yes",
		      bw_log_value(val, sizeof(val), shown));
	op->swapped = 1; /* the backup goes once the row is durable */
	crc_finish(op, BW_VAULT_RESP_ACK);
}

static void
swap_work(void *arg)
{
	struct crc_op *op = arg;
	const struct bw_blobs *b = op->v->blobs;

	if ((op->rc = vault_keep_backup(op->v, op->path, op->backup)) != 0)
		return;
	if ((op->rc = bw_blob_move(b, op->pend_key, op->path)) != 0)
		unswap_files(op);
	else
		op->moved = 1;
}

static void
swap_done(void *arg)
{
	struct crc_op *op = arg;
	struct bw_file_rec rec;
	char shown[BW_ESC_CAP];
	int rc;

	if (op->rc == 0) {
		memset(&rec, 0, sizeof(rec));
		memcpy(rec.client_id, op->id, BW_ID_LEN);
		snprintf(rec.file_name, sizeof(rec.file_name), "%s", op->name);
		snprintf(rec.path_name, sizeof(rec.path_name), "%s", op->path);
		rec.verified = 1;
		if ((rc = vfile_set(op->v, op->id, op->path, &rec, op->size, 0,
				    swap_row_done, op)) != 0)
			swap_row_done(op, rc);
		return;
	}
	bw_error("c%llu 1029 %s: the replacement could not be put in place: "
		 "%s",
		 ULL(op->c->id),
		 bw_escape_display(op->path, shown, sizeof(shown)),
		 bw_strerror(op->rc));
	crc_finish(op, BW_VAULT_RESP_ERROR);
}

/* --- the other verdicts ---------------------------------------------------
 */

static void
verified_done(void *arg, int rc)
{
	struct crc_op *op = arg;
	char shown[BW_ESC_CAP], val[BW_ESC_CAP];

	op->rc = rc;
	if (rc == 0) {
		bw_escape_display(op->path, shown, sizeof(shown));
		bw_conn_event(op->c, BW_LOG_INFO, "file_verified", "file=%s",
			      bw_log_value(val, sizeof(val), shown));
	}
	crc_finish(op, rc == 0 ? BW_VAULT_RESP_ACK : BW_VAULT_RESP_ERROR);
}

/* A CRC retry or fail (1030/1031) is answered (a CRC fail with an ack
 * (2104), a CRC retry with nothing), its replacement discarded or not (rc).
 * A CRC fail whose row could not be changed gets a general error (2107):
 * the row still names the replacement, which a later CRC ok (1029) could
 * take for the current file, so nothing was given up. */
static void
mismatch_done(void *arg, int rc)
{
	struct crc_op *op = arg;
	struct vfile *f;
	char shown[BW_ESC_CAP], val[BW_ESC_CAP];
	int had = op->pend_key[0] != '\0';

	op->rc = rc;
	if (had && rc == 0 &&
	    strncmp(op->pend_key, PENDING_DIR, strlen(PENDING_DIR)) == 0)
		vault_remove_later(op->v, op->pend_key);
	bw_escape_display(op->path, shown, sizeof(shown));
	if (rc != 0) {
		bw_error("c%llu %u %s CRC mismatch: the replacement could not "
			 "be discarded: %s",
			 ULL(op->c->id), op->code, shown, bw_strerror(rc));
		crc_finish(op, op->code == BW_VAULT_REQ_CRC_RETRY
				       ? 0
				       : BW_VAULT_RESP_ERROR);
		return;
	}
	bw_conn_event(op->c, BW_LOG_INFO, "crc_mismatch",
		      "file=%s request=%u next=%s replacement_discarded=%s",
		      bw_log_value(val, sizeof(val), shown), op->code,
		      op->code == BW_VAULT_REQ_CRC_RETRY ? "resend" : "gave_up",
		      had ? "yes" : "no");
	if (op->code == BW_VAULT_REQ_CRC_FAIL &&
	    (f = vfile_by_name(op->v, op->id, op->name)) != NULL)
		f->acked_s = 0;
	crc_finish(op,
		   op->code == BW_VAULT_REQ_CRC_FAIL ? BW_VAULT_RESP_ACK : 0);
}

/* The swap's move, the path's lock still this node's (a lock lost with the
 * store's connection may be another node's now: the verdict is given up,
 * and nothing touched). */
static void
swap_fenced(struct bw_meta_req *r)
{
	struct crc_op *op = r->arg;
	int rc = r->rc;

	if (rc != 0) {
		bw_error("c%llu 1029: %s; the verdict is given up",
			 ULL(op->c->id),
			 rc == BW_EBUSY ? "the file's lock went with this "
					  "node's connection to the store"
					: bw_strerror(rc));
		op->rc = rc;
		crc_finish(op, BW_VAULT_RESP_ERROR);
		return;
	}
	/* op->rc belongs to the worker once submitted: the submit's own
	 * result goes elsewhere */
	if ((rc = bw_loop_submit(op->v->eng->loop, swap_work, swap_done, op)) !=
	    0) {
		op->rc = rc;
		crc_finish(op, BW_VAULT_RESP_ERROR);
	}
}

/* The verdict is not op's to give (or whose it is cannot be told): a CRC
 * retry (1030) goes unanswered, a CRC ok or fail (1029/1031) gets a general
 * error (2107). */
static void
crc_refused(struct crc_op *op, int rc)
{
	op->rc = rc;
	crc_finish(op, op->code == BW_VAULT_REQ_CRC_RETRY
			       ? 0
			       : BW_VAULT_RESP_ERROR);
}

static void crc_decide(struct crc_op *op);
static void crc_check(struct crc_op *op);

static void crc_locked(struct bw_lock_wait *w);

/* The wait is over: the file's lock again, then the check. */
static void
owed_again(void *arg)
{
	struct crc_op *op = arg;
	int rc;

	op->owed_waiting = 0;
	op->wait.run = crc_locked;
	rc = bw_lock(&op->v->locks, op->path, &op->wait);
	if (rc == 1)
		crc_locked(&op->wait);
	else if (rc < 0)
		crc_refused(op, rc);
}

void
vault_crc_closed(struct crc_op *op)
{
	/* its connection is gone: no wait for it (the check sees it) */
	if (op->owed_waiting) {
		bw_loop_timer_stop(op->v->eng->loop, &op->owed_t);
		owed_again(op);
	}
}

/* The store's answer on the row's uploader, another node's connection. */
static void
crc_owed(void *arg, int open)
{
	struct crc_op *op = arg;

	if (open == 0) {
		crc_decide(op);
		return;
	}
	if (open > 0 && op->owed_tries < OWED_TRIES && !bw_conn_dead(op->c) &&
	    bw_loop_timer_start(op->v->eng->loop, &op->owed_t, OWED_RETRY_MS,
				owed_again, op) == 0) {
		op->owed_tries++;
		op->owed_waiting = 1;
		op->locked = 0;
		bw_unlock(&op->v->locks, op->path);
		return;
	}
	if (open > 0)
		bw_info("c%llu %u refused: the connection that uploaded it, "
			"on another node, is open and owes the verdict",
			ULL(op->c->id), op->code);
	else
		bw_warn("c%llu %u refused: whether its uploader's connection "
			"on another node is open cannot be told (%s)",
			ULL(op->c->id), op->code, bw_strerror(open));
	crc_refused(op, open > 0 ? BW_EBUSY : open);
}

static void
crc_locked(struct bw_lock_wait *w)
{
	struct crc_op *op =
		(struct crc_op *)((char *)w - offsetof(struct crc_op, wait));
	op->locked = 1;
	if (w->refused) { /* another node held the file for too long */
		crc_refused(op, BW_EBUSY);
		return;
	}
	crc_check(op);
}

/* Under the file's lock: whether op may decide, and who owes it. */
static void
crc_check(struct crc_op *op)
{
	struct bw_vault *v = op->v;
	struct vfile *pf;

	if (bw_registry_by_id(v->reg, op->id) == NULL || bw_conn_dead(op->c)) {
		crc_finish(op, 0);
		return;
	}
	pf = vfile_at(v, op->id, op->path);
	if (stranger(op, pf)) {
		bw_info("c%llu %u refused: the uploader's connection (c%llu) "
			"is open and owes the verdict",
			ULL(op->c->id), op->code, ULL(pf->uploader));
		crc_refused(op, BW_EBUSY);
		return;
	}
	/* on a shared store the row names the uploader's claim, whichever
	 * node holds it (this node's RAM knows only its own connections) */
	if (pf != NULL && pf->up_key != 0 &&
	    pf->up_key != vault_owes_key(v, op->c)) {
		vault_owes_probe(v, pf->up_key, crc_owed, op);
		return;
	}
	crc_decide(op);
}

/* op may decide: the verdict, on the path's rows as they are now. */
static void
crc_decide(struct crc_op *op)
{
	struct bw_vault *v = op->v;
	struct vfile *f, *pf;
	struct bw_file_rec rec;
	int pending, rc;

	if (bw_conn_dead(op->c)) {
		crc_finish(op, 0);
		return;
	}
	f = vfile_by_name(v, op->id, op->name);
	pf = vfile_at(v, op->id, op->path);
	pending = pf != NULL && pf->pending_path[0] != '\0' &&
		  strcmp(pf->pending_name, op->name) == 0 &&
		  strncmp(pf->pending_path, PENDING_DIR, strlen(PENDING_DIR)) ==
			  0;
	if (pending)
		snprintf(op->pend_key, sizeof(op->pend_key), "%s",
			 pf->pending_path);
	if (op->code == BW_VAULT_REQ_CRC_OK && pending) {
		op->size = pf->pending_size;
		vfile_rec(pf, &op->prev);
		op->prev_size = pf->size;
		op->prev_pending_size = pf->pending_size;
		op->fence.rc = 0;
		op->fence.arg = op; /* as swap_fenced reads it */
		if (!bw_lock_fence(&v->locks, op->path, &op->fence, swap_fenced,
				   op))
			swap_fenced(&op->fence);
		return;
	}
	if (op->code == BW_VAULT_REQ_CRC_OK) {
		if (f == NULL) {
			crc_finish(op, BW_VAULT_RESP_ERROR);
			return;
		}
		if (f->verified) {
			verified_done(op, 0);
			return;
		}
		/* set frees f: nothing of it may be passed by reference */
		vfile_rec(f, &rec);
		rec.verified = 1;
		if ((rc = vfile_set(v, op->id, rec.path_name, &rec, f->size,
				    f->pending_size, verified_done, op)) != 0)
			verified_done(op, rc);
		return;
	}
	if (!pending) {
		mismatch_done(op, 0);
		return;
	}
	vfile_rec(pf, &rec);
	rec.pending_name[0] = rec.pending_path[0] = '\0';
	if ((rc = vfile_set(v, op->id, op->path, &rec, pf->size, 0,
			    mismatch_done, op)) != 0)
		mismatch_done(op, rc);
}

int
vault_no_reply(struct bw_conn *c)
{
	if (bw_frame_padded(c))
		bw_conn_finish(c);
	return 0;
}

int
vault_crc_request(struct bw_conn *c, struct bw_vault *v, uint16_t code,
		  struct bw_client *cl, const char *name)
{
	struct vault_conn *vc = VC(c);
	char hex[2 * BW_ID_LEN + 1];
	struct crc_op *op;
	int rc;

	if ((op = calloc(1, sizeof(*op))) == NULL)
		return bw_frame_error(c, bw_strerror(BW_ENOMEM));
	op->v = v;
	op->c = c;
	op->code = code;
	memcpy(op->id, cl->id, BW_ID_LEN);
	snprintf(op->name, sizeof(op->name), "%s", name);
	bw_hex_encode(cl->id, BW_ID_LEN, hex);
	if (bw_file_name_sanitize(name, op->stored) != 0 ||
	    snprintf(op->path, sizeof(op->path), FILES_SPACE "%s/%s", hex,
		     op->stored) >= (int)sizeof(op->path)) {
		/* no such stored file can exist */
		free(op);
		if (code == BW_VAULT_REQ_CRC_RETRY)
			return vault_no_reply(c);
		if (code == BW_VAULT_REQ_CRC_FAIL)
			return bw_frame_reply(c, BW_VAULT_RESP_ACK, cl->id,
					      BW_ID_LEN);
		return bw_frame_error(c, "no such file");
	}
	bw_conn_hold(c);
	vc->op = op;
	vc->st = V_CRC;
	bw_frame_wait(c);
	op->wait.run = crc_locked;
	op->wait.bounded = 1;
	rc = bw_lock(&op->v->locks, op->path, &op->wait);
	if (rc == 1) {
		crc_locked(&op->wait);
	} else if (rc < 0) {
		/* too many verdicts wait for this file: a CRC retry (1030, no
		 * reply) is dropped, a CRC ok or fail (1029/1031) answered with
		 * a general error (2107) */
		op->rc = rc;
		crc_finish(op, code == BW_VAULT_REQ_CRC_RETRY
				       ? 0
				       : BW_VAULT_RESP_ERROR);
	}
	return 0;
}
