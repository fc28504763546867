/* Putting uploads in place without ever losing a stored file. A commit runs
 * under its stored path's lock, and every step can be undone until the
 * store says it happened:
 *  - no verified file at the path: the row is written first (unverified),
 *    then the upload is put over the stored object (the old one kept aside
 *    until the end); if that fails, the old object and the row are put
 *    back as they were;
 *  - a verified file at the path: the upload is put aside under
 *    files/.pending/ and named in the row; the file is replaced only by the
 *    1029 that confirms it (move, then row; a failed row undoes the move),
 *    and a 1030/1031 throws it away.
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

struct vlock {
	char key[BW_PATH_CAP];
	struct vwait *head, **tail; /* waiting for the path */
	unsigned waiting_n;
	/* on a store other daemons share, the path's lock is theirs too: an
	 * advisory lock of the store's, tried until it is free (granted), or
	 * given up (refused: the waiters run and answer 2107) */
	struct bw_vault *v;
	int granted, refused;
	unsigned tries;
	struct bw_meta_req req;
	struct bw_timer retry_t;
};

#define LOCK_RETRY_MS 20u
#define LOCK_TRIES    500u /* 10 s */

struct remove_job {
	struct bw_vault *v;
	char key[BW_BLOB_KEY_CAP];
};

/* --- locks --------------------------------------------------------------
 * A released lock passes to its next waiter through a queue run by the
 * outermost release, never inside the releasing call: a waiter that ends
 * at once (its connection gone) releases again, and a chain of thousands
 * must not recurse that deep. */

/* The path's name among the daemons' locks (FNV-1a). */
static int64_t
lock_key(const char *path)
{
	uint64_t h = 1469598103934665603ull;

	for (; *path != '\0'; path++)
		h = (h ^ (unsigned char)*path) * 1099511628211ull;
	return (int64_t)h;
}

/* The first waiter takes the lock (granted or refused) and runs. */
static void
pass_first(struct vlock *l)
{
	struct vwait *w = l->head;

	if ((l->head = w->next) == NULL)
		l->tail = &l->head;
	l->waiting_n--;
	w->next = NULL;
	w->refused = l->refused;
	w->run(w);
}

static void lock_ask(void *arg);

static void
lock_answered(struct bw_meta_req *req)
{
	struct vlock *l = req->arg;

	if (req->rc == 0 && req->u.lock.got) {
		l->granted = 1;
		pass_first(l);
		return;
	}
	/* tried again only while another daemon holds it: a store that
	 * cannot answer (down, or closing) fails the step at once, as its
	 * writes would */
	if (req->rc != 0 || ++l->tries >= LOCK_TRIES ||
	    bw_loop_timer_start(l->v->eng->loop, &l->retry_t, LOCK_RETRY_MS,
				lock_ask, l) != 0) {
		if (req->rc != 0)
			bw_warn("vault: %s could not be locked: %s", l->key,
				bw_strerror(req->rc));
		else
			bw_warn("vault: %s is held by another node for too "
				"long",
				l->key);
		l->refused = 1;
		pass_first(l);
	}
}

static void
lock_ask(void *arg)
{
	struct vlock *l = arg;

	bw_meta_req_init(&l->req, BW_META_LOCK, 0, lock_answered, l);
	l->req.u.lock.key = lock_key(l->key);
	bw_meta_submit(l->v->meta, &l->req);
}

struct unlock_req {
	struct bw_meta_req req;
};

static void
unlocked(struct bw_meta_req *req)
{
	free(req); /* a lost connection released it anyway */
}

static void
lock_free(struct bw_vault *v, struct vlock *l)
{
	struct unlock_req *u;

	if (l->granted && (u = calloc(1, sizeof(*u))) != NULL) {
		bw_meta_req_init(&u->req, BW_META_UNLOCK, 0, unlocked, NULL);
		u->req.arg = &u->req;
		u->req.u.lock.key = lock_key(l->key);
		bw_meta_submit(v->meta, &u->req);
	}
	bw_hash_del(&v->locks, l->key, strlen(l->key));
	free(l);
}

void
vault_locks_close(struct bw_vault *v)
{
	struct bw_hash_ent *e, *next;
	size_t i;

	/* at the end nothing waits any more (the store answered every try,
	 * its connection gone): a retry still armed is disarmed */
	for (i = 0; v->locks.slots != NULL && i < v->locks.slots_n; i++) {
		for (e = v->locks.slots[i]; e != NULL; e = next) {
			struct vlock *l = e->val;

			next = e->next;
			if (l->v != NULL)
				bw_loop_timer_stop(l->v->eng->loop,
						   &l->retry_t);
		}
	}
}

int
vault_lock(struct bw_vault *v, const char *path, struct vwait *w)
{
	struct vlock *l = bw_hash_get(&v->locks, path, strlen(path));
	int rc;

	w->next = NULL;
	w->refused = 0;
	if (l != NULL) {
		if (l->waiting_n >= VAULT_LOCK_WAITERS)
			return BW_EBUSY;
		*l->tail = w;
		l->tail = &w->next;
		l->waiting_n++;
		return 0;
	}
	if ((l = calloc(1, sizeof(*l))) == NULL)
		return BW_ENOMEM;
	snprintf(l->key, sizeof(l->key), "%s", path);
	l->tail = &l->head;
	if ((rc = bw_hash_put(&v->locks, l->key, strlen(l->key), l)) != 0) {
		free(l);
		return rc;
	}
	if (!v->meta->be->shared)
		return 1;
	/* the other daemons' turn is asked first; w waits for it */
	l->v = v;
	l->head = w;
	l->tail = &w->next;
	l->waiting_n = 1;
	lock_ask(l);
	return 0;
}

void
vault_unlock(struct bw_vault *v, const char *path)
{
	struct vlock *l = bw_hash_get(&v->locks, path, strlen(path));
	struct vwait *w;

	if (l == NULL)
		return;
	if ((w = l->head) == NULL) {
		lock_free(v, l);
		return;
	}
	if ((l->head = w->next) == NULL)
		l->tail = &l->head;
	l->waiting_n--;
	/* the lock passes to w: run it once the outermost unlock returns */
	w->next = NULL;
	w->refused = l->refused;
	*v->handoff_tail = w;
	v->handoff_tail = &w->next;
	if (v->handing_off)
		return;
	v->handing_off = 1;
	while ((w = v->handoff) != NULL) {
		if ((v->handoff = w->next) == NULL)
			v->handoff_tail = &v->handoff;
		w->next = NULL;
		w->run(w);
	}
	v->handing_off = 0;
}

/* --- small object steps ---------------------------------------------------
 */

static void
remove_work(void *arg)
{
	struct remove_job *j = arg;
	const struct bw_blobs *b = j->v->blobs;

	(void)b->be->remove(b->state, j->key);
}

void
vault_remove_later(struct bw_vault *v, const char *key)
{
	struct remove_job *j;

	if (key[0] == '\0')
		return;
	if ((j = calloc(1, sizeof(*j))) != NULL) {
		j->v = v;
		snprintf(j->key, sizeof(j->key), "%s", key);
		if (bw_loop_submit(v->eng->loop, remove_work, free, j) == 0)
			return;
		free(j);
	}
	(void)v->blobs->be->remove(v->blobs->state, key);
}

int
vault_keep_backup(struct bw_vault *v, const char *key, char *backup)
{
	const struct bw_blobs *b = v->blobs;
	int rc;

	bw_blob_scratch_key(FILES_SPACE, ".old-", backup);
	if ((rc = b->be->copy(b->state, key, backup)) == BW_ENOTFOUND) {
		backup[0] = '\0';
		return 0;
	}
	if (rc != 0)
		backup[0] = '\0';
	return rc;
}

void
vault_restore_backup(struct bw_vault *v, const char *key, const char *backup)
{
	const struct bw_blobs *b = v->blobs;
	char shown[BW_ESC_CAP];
	int rc = backup[0] != '\0' ? b->be->move(b->state, backup, key)
				   : b->be->remove(b->state, key);

	if (rc != 0)
		bw_error("vault: could not undo a replacement of '%s': %s",
			 bw_escape_display(key, shown, sizeof(shown)),
			 bw_strerror(rc));
}

void
vault_durable(struct bw_vault *v, struct bw_meta_req *r, bw_meta_done_fn done,
	      void *arg)
{
	bw_meta_req_init(r, BW_META_SYNC, BW_META_DURABLE, done, arg);
	bw_meta_submit(v->meta, r);
}

/* Drops the hold a commit or an op had on c and lets c go on. Releasing
 * frees a dead c: whether it is dead is read first. */
void
vault_release_and_resume(struct bw_conn *c)
{
	int dead = bw_conn_dead(c);

	bw_conn_release(c);
	if (!dead)
		bw_frame_kick(c);
}

/* --- committing an upload ----------------------------------------------- */

static void
upload_log(struct upload *u, int rc)
{
	char shown[BW_ESC_CAP];
	uint64_t id = u->conn != NULL ? u->conn->id : 0;

	bw_escape_display(u->rel_path, shown, sizeof(shown));
	if (rc != 0) {
		bw_error("c%llu 1028 '%s' not stored: %s", ULL(id), shown,
			 bw_strerror(rc));
		return;
	}
	bw_info("c%llu 1028 stored %s%s: %llu bytes, cksum %u, %llu ms "
		"(fsync+rename %llu ms)%s",
		ULL(id), shown, u->pending ? " (pending its 1029)" : "",
		ULL(u->plain_len), bw_cksum_final(&u->crc),
		ULL(bw_now_ms() - u->start_ms), ULL(bw_now_ms() - u->body_ms),
		bw_conn_dead(u->conn) ? " (client gone)" : "");
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
	vault_unlock(v, u->rel_path);
	vault_upload_free(u);
	vault_release_and_resume(c);
}

static void row_restored(void *arg, int rc);

/* The stored upload's row could not be made durable: its 2107 must find
 * what was there before, file and row (as a failed 1029 is undone), so
 * the object goes back (the one it replaced, or none) on a worker ... */
static void
undo_work(void *arg)
{
	struct upload *u = arg;
	const struct bw_blobs *b = u->v->blobs;

	if (u->pending) {
		(void)b->be->remove(b->state, u->pend_key);
	} else {
		vault_restore_backup(u->v, u->rel_path, u->backup);
		u->backup[0] = '\0';
	}
}

/* ... and then the row, before the 2107. */
static void
undo_done(void *arg)
{
	struct upload *u = arg;

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
		commit_reply(u, 0);
		return;
	}
	bw_error("vault: an upload's row could not be made durable: %s",
		 bw_strerror(r->rc));
	u->rc = r->rc;
	if (bw_loop_submit(u->v->eng->loop, undo_work, undo_done, u) != 0) {
		undo_work(u);
		undo_done(u);
	}
}

/* A stored upload's 2103 promises it survives a power cut: its row must be
 * on disk first (the object already is), else start-up reconciliation
 * would find an object no row names. */
static void
commit_finish(struct upload *u, int rc)
{
	if (rc != 0) {
		commit_reply(u, rc);
		return;
	}
	vault_durable(u->v, &u->sync, commit_durable, u);
}

/* The failed commit's row is back as it was (or could not be). */
static void
row_restored(void *arg, int rc)
{
	struct upload *u = arg;
	char shown[BW_ESC_CAP];

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
	return u->had_prev || u->v->blobs->shared || u->v->meta->be->shared;
}

static void
direct_work(void *arg)
{
	struct upload *u = arg;
	const struct bw_blobs *b = u->v->blobs;
	struct bw_blob_w *w = u->w;

	u->w = NULL; /* put takes it, whatever happens */
	if ((u->rc = vault_write_last(u, w)) != 0 ||
	    (backup_needed(u) &&
	     (u->rc = vault_keep_backup(u->v, u->rel_path, u->backup)) != 0)) {
		b->be->abort(b->state, w);
		return;
	}
	if ((u->rc = b->be->put(b->state, w, u->rel_path, 1)) != 0) {
		vault_restore_backup(u->v, u->rel_path, u->backup);
		u->backup[0] = '\0';
	}
}

static void
direct_done(void *arg)
{
	struct upload *u = arg;

	if (u->rc == 0 || vfile_set(u->v, u->client_id, u->rel_path,
				    u->had_prev ? &u->prev : NULL, u->prev_size,
				    u->prev_pending_size, row_restored, u) != 0)
		commit_finish(u, u->rc);
}

/* The new row (unverified) is in: the object goes over the stored one. */
static void
row_written(void *arg, int rc)
{
	struct upload *u = arg;

	if (rc != 0) {
		commit_finish(u, rc);
		return;
	}
	if ((rc = bw_loop_submit(u->v->eng->loop, direct_work, direct_done,
				 u)) != 0) {
		u->rc = rc;
		direct_done(u);
	}
}

static void
pend_work(void *arg)
{
	struct upload *u = arg;
	const struct bw_blobs *b = u->v->blobs;
	struct bw_blob_w *w = u->w;

	u->w = NULL;
	if ((u->rc = vault_write_last(u, w)) != 0)
		b->be->abort(b->state, w);
	else
		u->rc = b->be->put(b->state, w, u->pend_key, 0);
}

/* The pending replacement is named in the row: the one it replaces (if
 * any) goes. */
static void
pend_named(void *arg, int rc)
{
	struct upload *u = arg;

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

static void
commit_locked(struct vwait *w)
{
	struct upload *u =
		(struct upload *)((char *)w - offsetof(struct upload, wait));
	struct bw_vault *v = u->v;
	struct vfile *f;
	struct bw_file_rec rec;
	int rc;

	if (w->refused) { /* another node held the path for too long */
		commit_finish(u, BW_EBUSY);
		return;
	}
	if (bw_registry_by_id(v->reg, u->client_id) == NULL) {
		commit_finish(u, BW_ENOTFOUND);
		return;
	}
	f = vfile_at(v, u->client_id, u->rel_path);
	if (f != NULL && f->verified) {
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
	if ((rc = vfile_set(v, u->client_id, u->rel_path, &rec, u->plain_len, 0,
			    row_written, u)) != 0)
		commit_finish(u, rc);
}

void
vault_commit(struct bw_conn *c, struct upload *u)
{
	int rc;

	bw_conn_hold(c);
	u->wait.run = commit_locked;
	rc = vault_lock(u->v, u->rel_path, &u->wait);
	if (rc == 1)
		commit_locked(&u->wait);
	else if (rc < 0)
		commit_finish(u, rc);
}
