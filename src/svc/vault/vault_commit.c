/* Putting uploads in place without ever losing a stored file. A commit runs
 * under its stored path's lock, and every step can be undone until the
 * database says it happened:
 *  - no verified file at the path: the row is written first (unverified),
 *    then the upload is fsync'd and renamed over the file; if the rename
 *    fails the row is put back as it was;
 *  - a verified file at the path: the upload is kept aside in files/.pending
 *    and named in the row; the file is replaced only by the 1029 that
 *    confirms it (rename, then row; a failed row undoes the rename), and a
 *    1030/1031 throws it away.
 * reconcile.c finishes or undoes, at start-up, what a crash interrupted.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/vault/vault_int.h"

struct vlock {
	char key[BW_PATH_CAP];
	struct vwait *head, **tail; /* waiting for the path */
	unsigned waiting_n;
};

struct unlink_job {
	int dfd;
	char name[TMP_NAME_CAP];
};

/* --- locks --------------------------------------------------------------
 * A released lock passes to its next waiter through a queue run by the
 * outermost release, never inside the releasing call: a waiter that ends
 * at once (its connection gone) releases again, and a chain of thousands
 * must not recurse that deep. */

int
vault_lock(struct bw_vault *v, const char *path, struct vwait *w)
{
	struct vlock *l = bw_hash_get(&v->locks, path, strlen(path));
	int rc;

	w->next = NULL;
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
	return 1;
}

void
vault_unlock(struct bw_vault *v, const char *path)
{
	struct vlock *l = bw_hash_get(&v->locks, path, strlen(path));
	struct vwait *w;

	if (l == NULL)
		return;
	if ((w = l->head) == NULL) {
		bw_hash_del(&v->locks, l->key, strlen(l->key));
		free(l);
		return;
	}
	if ((l->head = w->next) == NULL)
		l->tail = &l->head;
	l->waiting_n--;
	/* the lock passes to w: run it once the outermost unlock returns */
	w->next = NULL;
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

/* --- small file steps --------------------------------------------------- */

static void
unlink_work(void *arg)
{
	struct unlink_job *j = arg;

	(void)unlinkat(j->dfd, j->name, 0);
}

/* Removes dfd/name on a worker (freeing a big file's blocks takes time),
 * or here if that cannot be arranged. */
void
vault_unlink_later(struct bw_vault *v, int dfd, const char *name)
{
	struct unlink_job *j;

	if (name[0] == '\0')
		return;
	if ((j = calloc(1, sizeof(*j))) != NULL) {
		j->dfd = dfd;
		snprintf(j->name, sizeof(j->name), "%s", name);
		if (bw_loop_submit(v->eng->loop, unlink_work, free, j) == 0)
			return;
		free(j);
	}
	(void)unlinkat(dfd, name, 0);
}

static int
fsync_close(int fd)
{
	int rc = fsync(fd) != 0 ? -errno : 0;

	if (close(fd) != 0 && rc == 0)
		rc = -errno;
	return rc;
}

/* Keeps the file being replaced alive under a second name: the rename does
 * not pay for freeing its blocks, and it can be put back. ENOENT: none. */
int
vault_keep_backup(int dir_fd, const char *stored, int incoming_fd, char *backup)
{
	if (linkat(dir_fd, stored, incoming_fd, backup, 0) == 0)
		return 0;
	backup[0] = '\0';
	return errno == ENOENT ? 0 : -errno;
}

/* Puts the backup (or nothing) back at dir/stored. */
void
vault_restore_backup(int dir_fd, const char *stored, int incoming_fd,
		     const char *backup)
{
	int rc = backup[0] != '\0'
			 ? renameat(incoming_fd, backup, dir_fd, stored)
			 : unlinkat(dir_fd, stored, 0);
	char shown[BW_ESC_CAP];

	if (rc != 0 || fsync(dir_fd) != 0)
		bw_error("vault: could not undo a replacement of '%s': %s",
			 bw_escape_display(stored, shown, sizeof(shown)),
			 strerror(errno));
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
	struct bw_client *cl = bw_registry_by_id(v->reg, u->client_id);
	struct bw_file *f;
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
	if (rc == 0 && cl != NULL &&
	    (f = bw_registry_file_at(v->reg, cl, u->rel_path)) != NULL) {
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
	if (rc == 0)
		vault_unlink_later(v, v->incoming_fd, u->backup);
	vault_unlock(v, u->rel_path);
	vault_upload_free(u);
	vault_release_and_resume(c);
}

static void
commit_durable(void *arg, int rc)
{
	struct upload *u = arg;

	if (rc != 0)
		bw_error("vault: an upload's row could not be made durable: %s",
			 bw_strerror(rc));
	commit_reply(u, rc);
}

/* A stored upload's 2103 promises it survives a power cut: its row's
 * commit must be on disk first (the file is already, fsync'd and
 * renamed), else start-up reconciliation would find a file no row names.
 * It waits for the store's next group fsync. */
static void
commit_finish(struct upload *u, int rc)
{
	if (rc == 0 && u->v->durable != NULL &&
	    bw_durable_after(u->v->durable, commit_durable, u) == 0)
		return;
	commit_reply(u, rc);
}

static void
direct_work(void *arg)
{
	struct upload *u = arg;
	struct bw_vault *v = u->v;

	if (u->fd_tail != u->fd)
		close(u->fd_tail);
	u->fd_tail = -1;
	u->rc = fsync_close(u->fd);
	u->fd = -1;
	if (u->rc == 0)
		u->rc = vault_keep_backup(u->dir_fd, u->stored, v->incoming_fd,
					  u->backup);
	if (u->rc == 0 &&
	    renameat(v->incoming_fd, u->tmp_name, u->dir_fd, u->stored) != 0) {
		u->rc = -errno;
		if (u->backup[0] != '\0')
			(void)unlinkat(v->incoming_fd, u->backup, 0);
	}
	if (u->rc != 0) {
		(void)unlinkat(v->incoming_fd, u->tmp_name, 0);
		return;
	}
	if (fsync(u->dir_fd) != 0) {
		u->rc = -errno;
		vault_restore_backup(u->dir_fd, u->stored, v->incoming_fd,
				     u->backup);
	}
}

static void
direct_done(void *arg)
{
	struct upload *u = arg;
	struct bw_vault *v = u->v;
	struct bw_client *cl = bw_registry_by_id(v->reg, u->client_id);
	char shown[BW_ESC_CAP];
	int rc;

	if (u->rc != 0 && cl != NULL &&
	    (rc = bw_registry_set_file(
		     v->reg, cl, u->rel_path, u->had_prev ? &u->prev : NULL,
		     u->prev_size, u->prev_pending_size)) != 0)
		bw_error("vault: the row of %s could not be put back: %s",
			 bw_escape_display(u->rel_path, shown, sizeof(shown)),
			 bw_strerror(rc));
	commit_finish(u, u->rc);
}

static void
pend_work(void *arg)
{
	struct upload *u = arg;
	struct bw_vault *v = u->v;

	if (u->fd_tail != u->fd)
		close(u->fd_tail);
	u->fd_tail = -1;
	u->rc = fsync_close(u->fd);
	u->fd = -1;
	if (u->rc == 0 && renameat(v->incoming_fd, u->tmp_name, v->pending_fd,
				   u->pend_name) != 0)
		u->rc = -errno;
	if (u->rc != 0) {
		(void)unlinkat(v->incoming_fd, u->tmp_name, 0);
		return;
	}
	if (fsync(v->pending_fd) != 0) {
		u->rc = -errno;
		(void)unlinkat(v->pending_fd, u->pend_name, 0);
	}
}

static void
pend_done(void *arg)
{
	struct upload *u = arg;
	struct bw_registry *reg = u->v->reg;
	struct bw_client *cl = bw_registry_by_id(reg, u->client_id);
	struct bw_file *f =
		cl != NULL ? bw_registry_file_at(reg, cl, u->rel_path) : NULL;
	struct bw_file_rec rec;
	int rc = u->rc;

	if (rc == 0 && f == NULL)
		rc = BW_ENOTFOUND;
	if (rc == 0) {
		bw_registry_file_rec(f, &rec);
		snprintf(rec.pending_name, sizeof(rec.pending_name), "%s",
			 u->file_name);
		if (snprintf(rec.pending_path, sizeof(rec.pending_path),
			     PENDING_DIR "%s",
			     u->pend_name) >= (int)sizeof(rec.pending_path))
			rc = BW_ETOOBIG;
		snprintf(u->old_pending, sizeof(u->old_pending), "%s",
			 f->pending_path);
		if (rc == 0)
			rc = bw_registry_set_file(reg, cl, u->rel_path, &rec,
						  f->size, u->plain_len);
		if (rc != 0)
			vault_unlink_later(u->v, u->v->pending_fd,
					   u->pend_name);
		else if (strncmp(u->old_pending, PENDING_DIR,
				 strlen(PENDING_DIR)) == 0)
			vault_unlink_later(u->v, u->v->pending_fd,
					   u->old_pending +
						   strlen(PENDING_DIR));
	}
	commit_finish(u, rc);
}

static void
commit_locked(struct vwait *w)
{
	struct upload *u =
		(struct upload *)((char *)w - offsetof(struct upload, wait));
	struct bw_vault *v = u->v;
	struct bw_client *cl = bw_registry_by_id(v->reg, u->client_id);
	struct bw_file *f;
	struct bw_file_rec rec;
	int rc;

	if (cl == NULL) {
		commit_finish(u, BW_ENOTFOUND);
		return;
	}
	f = bw_registry_file_at(v->reg, cl, u->rel_path);
	if (f != NULL && f->verified) {
		u->pending = 1;
		vault_tmp_name(u->v, "", u->pend_name);
		rc = bw_loop_submit(v->eng->loop, pend_work, pend_done, u);
		if (rc != 0)
			commit_finish(u, rc);
		return;
	}
	vault_tmp_name(u->v, ".old-", u->backup);
	if (f != NULL) {
		u->had_prev = 1;
		bw_registry_file_rec(f, &u->prev);
		u->prev_size = f->size;
		u->prev_pending_size = f->pending_size;
	}
	memset(&rec, 0, sizeof(rec));
	memcpy(rec.client_id, u->client_id, BW_ID_LEN);
	snprintf(rec.file_name, sizeof(rec.file_name), "%s", u->file_name);
	snprintf(rec.path_name, sizeof(rec.path_name), "%s", u->rel_path);
	if ((rc = bw_registry_set_file(v->reg, cl, u->rel_path, &rec,
				       u->plain_len, 0)) != 0) {
		commit_finish(u, rc);
		return;
	}
	if ((rc = bw_loop_submit(v->eng->loop, direct_work, direct_done, u)) !=
	    0) {
		u->rc = rc;
		direct_done(u);
	}
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
