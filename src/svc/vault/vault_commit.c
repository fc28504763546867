/* Putting uploads in place without ever losing a stored file. A commit runs
 * under its stored path's lock, and every step can be undone until the
 * store says it happened:
 *  - no verified file at the path: the row is written first (unverified),
 *    then the upload is put over the stored object (the old one kept aside
 *    until the end); if that fails, the old object and the row are put
 *    back as they were;
 *  - a verified file at the path: the upload is put aside under
 *    files/.pending/ and named in the row; the file is replaced only by the
 *    CRC ok (1029) that confirms it (move, then row; a failed row undoes
 *    the move), and a CRC retry or fail (1030/1031) throws it away.
 * Rows go through the metadata store's requests, objects through the blob
 * store on the workers. reconcile.c finishes or undoes, at start-up, what a
 * crash interrupted.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/vault/vault_int.h"

/* A commit's steps (struct upload's step: the one under way). Each
 * callback checks that it runs at the step it belongs to.
 *  C_LOCK      waiting for the path's lock (bw_lock)
 *  C_CLAIM     on a shared store, the verdict's claim (vault_owes_take)
 *  C_ROW       no verified file there: the new row, unverified
 *  C_FENCE     the lock still this node's, asked of the store
 *  C_PUT       the object over the stored one, on a worker
 *  C_PEND_PUT  a verified file there: the object aside, on a worker
 *  C_PEND_ROW  that object named in the row as the pending replacement
 *  C_DURABLE   the row on disk: the file OK reply (2103) promises the file
 *  C_UNDO      a step failed: the object and the row put back as they were
 *  C_REPLY     the file OK reply or the general error (2107); the path and
 *              the connection let go */
enum commit_step {
	C_NONE,
	C_LOCK,
	C_CLAIM,
	C_ROW,
	C_FENCE,
	C_PUT,
	C_PEND_PUT,
	C_PEND_ROW,
	C_DURABLE,
	C_UNDO,
	C_REPLY,
};

/* u was at want, and goes on to next. A callback at another step would
 * touch files out of order: said, and stopped before it does. */
static void
step(struct upload *u, enum commit_step want, enum commit_step next)
{
	if (u->step != want) {
		bw_error("vault: a commit's callback for step %d ran at step "
			 "%d: stopping",
			 (int)want, (int)u->step);
		abort();
	}
	u->step = (unsigned char)next;
}

/* --- committing an upload ----------------------------------------------- */

static void
upload_log(struct upload *u, int rc)
{
	char shown[BW_ESC_CAP], val[BW_ESC_CAP];
	uint64_t id = u->conn != NULL ? u->conn->id : 0;

	bw_escape_display(u->rel_path, shown, sizeof(shown));
	if (rc != 0) {
		bw_error("c%llu %u '%s' not stored: %s", ULL(id), u->code,
			 shown, bw_strerror(rc));
		return;
	}
	bw_log_value(val, sizeof(val), shown);
	if (u->conn == NULL) {
		bw_log_event(
			BW_LOG_INFO, "upload_stored",
			"conn=%llu file=%s bytes=%llu cksum=%u "
			"pending=%s ms=%llu commit_ms=%llu client_gone=yes",
			ULL(id), val, ULL(u->plain_len),
			bw_cksum_final(&u->crc), u->pending ? "yes" : "no",
			ULL(bw_now_ms() - u->start_ms),
			ULL(bw_now_ms() - u->body_ms));
		return;
	}
	bw_conn_event(u->conn, BW_LOG_INFO, "upload_stored",
		      "file=%s bytes=%llu cksum=%u pending=%s ms=%llu "
		      "commit_ms=%llu client_gone=%s",
		      val, ULL(u->plain_len), bw_cksum_final(&u->crc),
		      u->pending ? "yes" : "no", ULL(bw_now_ms() - u->start_ms),
		      ULL(bw_now_ms() - u->body_ms),
		      bw_conn_dead(u->conn) ? "yes" : "no");
}

/* Replies, releases the path and the connection, frees the upload. */
static void
commit_reply(struct upload *u, int rc)
{
	struct bw_conn *c = u->conn;
	struct bw_vault *v = u->v;
	struct vfile *f;
	struct bw_file_ack ack;
	uint8_t out[BW_FILE_ACK_LEN];
	struct vault_conn *vc;

	step(u, C_REPLY, C_NONE);
	upload_log(u, rc);
	if (rc == 0) {
		v->stored_n++;
		v->stored_bytes += u->plain_len;
	} else {
		v->err_store++;
	}
	vault_upload_done(u);
	if (rc == 0 && (f = vfile_at(v, u->client_id, u->rel_path)) != NULL) {
		f->acked_s = (uint64_t)bw_time_s();
		f->uploader = bw_conn_dead(c) ? 0 : c->id;
	}
	if (!bw_conn_dead(c)) {
		vc = VC(c);
		vc->st = V_IDLE;
		if (rc == 0) {
			memset(&ack, 0, sizeof(ack));
			memcpy(ack.client_id, u->client_id, BW_ID_LEN);
			ack.content_size = u->content_size;
			ack.cksum = bw_cksum_final(&u->crc);
			bw_vault_file_ack_encode(&ack, u->name_field, out);
			vc->awaiting = 1;
			(void)bw_frame_reply(c, BW_VAULT_RESP_FILE_OK, out,
					     sizeof(out));
		} else {
			(void)bw_frame_error(c, "upload could not be stored");
		}
		bw_frame_done(c);
	}
	if (rc == 0) {
		vault_remove_later(v, u->backup);
		/* the pending file this one replaced goes once the row naming
		 * the new one is durable: until then a failure puts it back */
		if (u->pending && strncmp(u->old_pending, PENDING_DIR,
					  strlen(PENDING_DIR)) == 0)
			vault_remove_later(v, u->old_pending);
	}
	/* a lock refused (too many waiting, no memory) is someone else's */
	if (u->locked)
		bw_unlock(&v->locks, u->rel_path);
	vault_upload_free(u);
	vault_release_and_resume(c);
}

/* --- the hand-over from the upload ----------------------------------------
 * On a worker: the upload's object, with the last chunk the body held back
 * (struct upload's last_held) written to it first, taken from the upload:
 * *w is the commit's to put or abort. On failure the object is gone. */
static int
commit_take_w(struct upload *u, struct bw_blob_w **w)
{
	const struct bw_blobs *b = u->v->blobs;
	int rc;

	*w = NULL;
	if ((rc = vault_upload_w(u)) != 0)
		return rc;
	if (u->last_held) {
		u->last_held = 0;
		rc = bw_blob_write(b, u->w, u->plain_len - u->last_len,
				   u->wbuf[u->last_idx], u->last_len);
	}
	if (rc != 0) {
		bw_blob_abort(b, u->w);
		u->w = NULL;
		return rc;
	}
	*w = u->w;
	u->w = NULL;
	return 0;
}

static void row_restored(void *arg, int rc);

/* The stored upload's row could not be made durable: its general error
 * (2107) must find what was there before, file and row (as a failed CRC ok
 * (1029) is undone), so the object goes back (the one it replaced, or none)
 * on a worker ... */
static void
undo_work(void *arg)
{
	struct upload *u = arg;
	const struct bw_blobs *b = u->v->blobs;

	if (u->pending) {
		(void)bw_blob_remove(b, u->pend_key);
	} else {
		vault_restore_backup(u->v, u->rel_path, u->backup);
		u->backup[0] = '\0';
	}
}

/* ... and then the row, before the general error (2107). */
static void
undo_done(void *arg)
{
	struct upload *u = arg;

	step(u, C_UNDO, C_UNDO);
	if (vfile_set(u->v, u->client_id, u->rel_path,
		      u->had_prev ? &u->prev : NULL, u->prev_size,
		      u->prev_pending_size, row_restored, u) != 0)
		row_restored(u, BW_ENOMEM);
}

static void
commit_durable(struct bw_meta_req *r)
{
	struct upload *u = r->arg;

	if (r->rc == 0) {
		step(u, C_DURABLE, C_REPLY);
		commit_reply(u, 0);
		return;
	}
	step(u, C_DURABLE, C_UNDO);
	bw_error("vault: an upload's row could not be made durable: %s",
		 bw_strerror(r->rc));
	u->rc = r->rc;
	if (bw_loop_submit(u->v->eng->loop, undo_work, undo_done, u) != 0) {
		undo_work(u);
		undo_done(u);
	}
}

/* A stored upload's file OK reply (2103) promises it survives a power cut:
 * its row must be on disk first (the object already is), else start-up
 * reconciliation would find an object no row names. */
static void
commit_finish(struct upload *u, int rc)
{
	if (rc != 0) {
		u->step = C_REPLY; /* from whichever step failed */
		commit_reply(u, rc);
		return;
	}
	u->step = C_DURABLE;
	vault_durable(u->v, &u->sync, commit_durable, u);
}

/* The failed commit's row is back as it was (or could not be). */
static void
row_restored(void *arg, int rc)
{
	struct upload *u = arg;
	char shown[BW_ESC_CAP];

	step(u, C_UNDO, C_UNDO);
	if (rc != 0)
		bw_error("vault: the row of %s could not be put back: %s",
			 bw_escape_display(u->rel_path, shown, sizeof(shown)),
			 bw_strerror(rc));
	commit_finish(u, u->rc);
}

/* Whether what is stored at u's path must be kept aside until the commit
 * is over: an object a row names, or, on a store other daemons share, one
 * this node may not know of yet. A daemon alone on its store knows every
 * row, and an object at a path no row names is a leftover that nothing
 * needs back: the link to keep it would be a lookup that finds nothing
 * on nearly every new upload. */
static int
backup_needed(const struct upload *u)
{
	return u->had_prev || bw_blobs_others_write(u->v->blobs) ||
	       bw_meta_others_write(u->v->meta);
}

static void
direct_work(void *arg)
{
	struct upload *u = arg;
	const struct bw_blobs *b = u->v->blobs;
	struct bw_blob_w *w;

	if ((u->rc = commit_take_w(u, &w)) != 0)
		return;
	if (backup_needed(u) &&
	    (u->rc = vault_keep_backup(u->v, u->rel_path, u->backup)) != 0) {
		bw_blob_abort(b, w);
		return;
	}
	if ((u->rc = bw_blob_put(b, w, u->rel_path, 1)) != 0) {
		vault_restore_backup(u->v, u->rel_path, u->backup);
		u->backup[0] = '\0';
	}
}

static void
direct_done(void *arg)
{
	struct upload *u = arg;

	step(u, C_PUT, u->rc == 0 ? C_PUT : C_UNDO);
	if (u->rc == 0 || vfile_set(u->v, u->client_id, u->rel_path,
				    u->had_prev ? &u->prev : NULL, u->prev_size,
				    u->prev_pending_size, row_restored, u) != 0)
		commit_finish(u, u->rc);
}

/* The object goes over the stored one, the lock on its path still this
 * node's (a lock lost with the store's connection may be another node's
 * now, committing the same path: the commit is given up, and nothing
 * more is touched, the row it wrote included). */
static void
fenced(struct bw_meta_req *r)
{
	struct upload *u = r->arg;
	char shown[BW_ESC_CAP];
	int rc = r->rc;

	step(u, C_FENCE, C_PUT);
	if (rc != 0) {
		bw_error("vault: %s: %s; the upload is given up",
			 bw_escape_display(u->rel_path, shown, sizeof(shown)),
			 rc == BW_EBUSY ? "its lock went with this node's "
					  "connection to the store"
					: bw_strerror(rc));
		commit_finish(u, rc);
		return;
	}
	if ((rc = bw_loop_submit(u->v->eng->loop, direct_work, direct_done,
				 u)) != 0) {
		u->rc = rc;
		direct_done(u);
	}
}

/* The new row (unverified) is in: the object goes over the stored one. */
static void
row_written(void *arg, int rc)
{
	struct upload *u = arg;

	step(u, C_ROW, C_FENCE);
	if (rc != 0) {
		commit_finish(u, rc);
		return;
	}
	u->fence.rc = 0;
	u->fence.arg = u; /* as fenced reads it when nothing was asked */
	if (!bw_lock_fence(&u->v->locks, u->rel_path, &u->fence, fenced, u))
		fenced(&u->fence);
}

static void
pend_work(void *arg)
{
	struct upload *u = arg;
	const struct bw_blobs *b = u->v->blobs;
	struct bw_blob_w *w;

	if ((u->rc = commit_take_w(u, &w)) == 0)
		u->rc = bw_blob_put(b, w, u->pend_key, 0);
}

/* The pending replacement is named in the row: the one it replaces (if
 * any) goes. */
static void
pend_named(void *arg, int rc)
{
	struct upload *u = arg;

	step(u, C_PEND_ROW, C_PEND_ROW);
	if (rc != 0)
		vault_remove_later(u->v, u->pend_key);
	commit_finish(u, rc);
}

static void
pend_done(void *arg)
{
	struct upload *u = arg;
	struct vfile *f = vfile_at(u->v, u->client_id, u->rel_path);
	struct bw_file_rec rec;
	int rc = u->rc;

	step(u, C_PEND_PUT, C_PEND_ROW);
	if (rc == 0 && f == NULL)
		rc = BW_ENOTFOUND;
	if (rc == 0) {
		/* the row as it was, should its change not become durable */
		u->had_prev = 1;
		vfile_rec(f, &u->prev);
		u->prev_size = f->size;
		u->prev_pending_size = f->pending_size;
		vfile_rec(f, &rec);
		snprintf(rec.pending_name, sizeof(rec.pending_name), "%s",
			 u->file_name);
		snprintf(rec.pending_path, sizeof(rec.pending_path), "%s",
			 u->pend_key);
		rec.uploader = u->up_key;
		snprintf(u->old_pending, sizeof(u->old_pending), "%s",
			 f->pending_path);
		rc = vfile_set(u->v, u->client_id, u->rel_path, &rec, f->size,
			       u->plain_len, pend_named, u);
		if (rc == 0)
			return;
	}
	if (u->rc == 0)
		vault_remove_later(u->v, u->pend_key);
	commit_finish(u, rc);
}

/* Whether u's client had an upload fail to decrypt within SUSPECT_MS,
 * under any key: then u may not replace a verified file (said).
 *
 * The protocol proves nothing of the key: anyone who read a client's id
 * and name (both travel in clear) gets a fresh key for it with a reconnect
 * request (1027), sends a send file request (1028) of 16 random bytes (the
 * padding is right once in 256 tries), and would confirm with a CRC ok
 * (1029) the garbage that decrypted. Each wrong try fails to decrypt: the
 * lucky one comes after about 255 failures, and is refused here before it
 * is kept anywhere (refusing its CRC ok instead left it waiting, to be
 * confirmed once the suspicion had passed). Waiting SUSPECT_MS after each
 * try makes the guessing take days. The owner's own replacements are
 * refused as long (a general error, 2107: its client says the upload
 * failed); its new files are not. An upload on a TLS listener is never
 * suspect: the handshake proved the id's key, whatever a stranger tried
 * elsewhere (else one could keep an owner's TLS replacements refused). */
static int
suspect(const struct upload *u)
{
	const struct bw_client *cl = bw_registry_by_id(u->v->reg, u->client_id);
	char shown[BW_ESC_CAP];
	uint64_t ago;

	if (u->proven || cl == NULL || cl->vault.undecryptable == 0 ||
	    (ago = bw_now_ms() - cl->vault.undecryptable_ms) >= SUSPECT_MS)
		return 0;
	bw_warn("c%llu %u %s refused: %u upload(s) of this client failed to "
		"decrypt in the last %u min, the last %llu s ago (someone "
		"without its key may be guessing); the verified file stays",
		ULL(u->conn != NULL ? u->conn->id : 0), u->code,
		bw_escape_display(u->rel_path, shown, sizeof(shown)),
		cl->vault.undecryptable, SUSPECT_MS / 60000u, ULL(ago / 1000u));
	return 1;
}

/* The path is the upload's, and its connection's claim to the verdict is
 * held (on a shared store): the object and its row. */
static void
commit_claimed(struct upload *u)
{
	struct bw_vault *v = u->v;
	struct vfile *f = vfile_at(v, u->client_id, u->rel_path);
	struct bw_file_rec rec;
	int rc;

	if (f != NULL && f->verified) {
		step(u, C_CLAIM, C_PEND_PUT);
		u->pending = 1;
		if (u->pend_hint[0] != '\0') {
			memcpy(u->pend_key, u->pend_hint, sizeof(u->pend_key));
		} else {
			vault_pending_key(u->client_id, u->pend_key,
					  sizeof(u->pend_key));
		}
		rc = bw_loop_submit(v->eng->loop, pend_work, pend_done, u);
		if (rc != 0)
			commit_finish(u, rc);
		return;
	}
	step(u, C_CLAIM, C_ROW);
	if (f != NULL) {
		u->had_prev = 1;
		vfile_rec(f, &u->prev);
		u->prev_size = f->size;
		u->prev_pending_size = f->pending_size;
	}
	memset(&rec, 0, sizeof(rec));
	memcpy(rec.client_id, u->client_id, BW_ID_LEN);
	snprintf(rec.file_name, sizeof(rec.file_name), "%s", u->file_name);
	snprintf(rec.path_name, sizeof(rec.path_name), "%s", u->rel_path);
	rec.uploader = u->up_key;
	if ((rc = vfile_set(v, u->client_id, u->rel_path, &rec, u->plain_len, 0,
			    row_written, u)) != 0)
		commit_finish(u, rc);
}

static void
commit_locked(struct bw_lock_wait *w)
{
	struct upload *u =
		(struct upload *)((char *)w - offsetof(struct upload, wait));
	struct bw_vault *v = u->v;
	struct vfile *f;

	step(u, C_LOCK, C_CLAIM);
	u->locked = 1;
	if (w->refused) { /* another node held the path for too long */
		commit_finish(u, BW_EBUSY);
		return;
	}
	if (bw_registry_by_id(v->reg, u->client_id) == NULL) {
		commit_finish(u, BW_ENOTFOUND);
		return;
	}
	f = vfile_at(v, u->client_id, u->rel_path);
	if (f != NULL && f->verified && suspect(u)) {
		commit_finish(u, -EACCES);
		return;
	}
	vault_owes_take(u, commit_claimed);
}

void
vault_commit(struct bw_conn *c, struct upload *u)
{
	int rc;

	bw_conn_hold(c);
	u->step = C_LOCK;
	u->wait.run = commit_locked;
	u->wait.bounded = 0; /* never refused: its body was read */
	rc = bw_lock(&u->v->locks, u->rel_path, &u->wait);
	if (rc == 1)
		commit_locked(&u->wait);
	else if (rc < 0)
		commit_finish(u, rc);
}
