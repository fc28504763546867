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

#define PENDING_DIR "files/.pending/"

struct vlock {
	char key[BW_PATH_CAP];
	struct vwait *head, **tail; /* waiting for the path */
};

struct unlink_job {
	int dfd;
	char name[TMP_NAME_CAP];
};

struct crc_op {
	struct vwait wait;
	struct bw_vault *v;
	struct bw_conn *c; /* held until the op ends */
	uint16_t code;
	uint8_t id[BW_ID_LEN];
	char name[BW_NAME_CAP], stored[BW_NAME_CAP], path[BW_PATH_CAP];
	char pend_name[TMP_NAME_CAP], backup[TMP_NAME_CAP];
	uint64_t size;
	int dir_fd, locked, rc;
};

/* --- locks -------------------------------------------------------------- */

int
vault_lock(struct bw_vault *v, const char *path, struct vwait *w)
{
	struct vlock *l = bw_hash_get(&v->locks, path, strlen(path));
	int rc;

	w->next = NULL;
	if (l != NULL) {
		*l->tail = w;
		l->tail = &w->next;
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
	w->run(w); /* the lock passes to w */
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
static void
unlink_later(struct bw_vault *v, int dfd, const char *name)
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
static int
keep_backup(int dir_fd, const char *stored, int incoming_fd, char *backup)
{
	if (linkat(dir_fd, stored, incoming_fd, backup, 0) == 0)
		return 0;
	backup[0] = '\0';
	return errno == ENOENT ? 0 : -errno;
}

/* Puts the backup (or nothing) back at dir/stored. */
static void
restore_backup(int dir_fd, const char *stored, int incoming_fd,
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
static void
release_and_resume(struct bw_conn *c)
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
commit_finish(struct upload *u, int rc)
{
	struct bw_conn *c = u->conn;
	struct bw_vault *v = u->v;
	struct bw_client *cl = bw_registry_by_id(v->reg, u->client_id);
	struct bw_file *f;
	struct bw_file_ack ack;
	uint8_t out[BW_FILE_ACK_LEN];
	struct vault_conn *vc;

	upload_log(u, rc);
	vault_upload_done(u);
	if (rc == 0 && cl != NULL &&
	    (f = bw_registry_file_at(v->reg, cl, u->rel_path)) != NULL)
		f->acked_s = (uint64_t)bw_time_s();
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
		unlink_later(v, v->incoming_fd, u->backup);
	vault_unlock(v, u->rel_path);
	vault_upload_free(u);
	release_and_resume(c);
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
		u->rc = keep_backup(u->dir_fd, u->stored, v->incoming_fd,
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
		restore_backup(u->dir_fd, u->stored, v->incoming_fd, u->backup);
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
			unlink_later(u->v, u->v->pending_fd, u->pend_name);
		else if (strncmp(u->old_pending, PENDING_DIR,
				 strlen(PENDING_DIR)) == 0)
			unlink_later(u->v, u->v->pending_fd,
				     u->old_pending + strlen(PENDING_DIR));
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

/* --- 1029, 1030, 1031 --------------------------------------------------- */

static void
crc_finish(struct crc_op *op, int reply_code)
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
			bw_conn_finish(c); /* 1030: no reply */
		}
		bw_frame_done(c);
	}
	if (op->locked)
		vault_unlock(op->v, op->path);
	if (op->dir_fd >= 0)
		close(op->dir_fd);
	free(op);
	release_and_resume(c);
}

static void
swap_work(void *arg)
{
	struct crc_op *op = arg;
	struct bw_vault *v = op->v;

	op->rc =
		keep_backup(op->dir_fd, op->stored, v->incoming_fd, op->backup);
	if (op->rc == 0 && renameat(v->pending_fd, op->pend_name, op->dir_fd,
				    op->stored) != 0) {
		op->rc = -errno;
		if (op->backup[0] != '\0')
			(void)unlinkat(v->incoming_fd, op->backup, 0);
		return;
	}
	if (op->rc == 0 && fsync(op->dir_fd) != 0) {
		op->rc = -errno;
		(void)linkat(op->dir_fd, op->stored, v->pending_fd,
			     op->pend_name, 0);
		restore_backup(op->dir_fd, op->stored, v->incoming_fd,
			       op->backup);
	}
}

static void
swap_done(void *arg)
{
	struct crc_op *op = arg;
	struct bw_registry *reg = op->v->reg;
	struct bw_client *cl = bw_registry_by_id(reg, op->id);
	struct bw_file_rec rec;
	char shown[BW_ESC_CAP];

	if (op->rc == 0 && cl == NULL)
		op->rc = BW_ENOTFOUND;
	if (op->rc == 0) {
		memset(&rec, 0, sizeof(rec));
		memcpy(rec.client_id, op->id, BW_ID_LEN);
		snprintf(rec.file_name, sizeof(rec.file_name), "%s", op->name);
		snprintf(rec.path_name, sizeof(rec.path_name), "%s", op->path);
		rec.verified = 1;
		op->rc = bw_registry_set_file(reg, cl, op->path, &rec, op->size,
					      0);
		if (op->rc != 0) {
			/* the row still names the pending file: undo */
			(void)linkat(op->dir_fd, op->stored, op->v->pending_fd,
				     op->pend_name, 0);
			restore_backup(op->dir_fd, op->stored,
				       op->v->incoming_fd, op->backup);
		}
	}
	bw_escape_display(op->path, shown, sizeof(shown));
	if (op->rc == 0) {
		bw_info("c%llu 1029 %s verified: the replacement is now "
			"current",
			ULL(op->c->id), shown);
		unlink_later(op->v, op->v->incoming_fd, op->backup);
	} else {
		bw_error("c%llu 1029 %s: the replacement could not be put in "
			 "place: %s",
			 ULL(op->c->id), shown, bw_strerror(op->rc));
	}
	crc_finish(op, op->rc == 0 ? BW_VAULT_RESP_ACK : BW_VAULT_RESP_ERROR);
}

/* Drops the pending replacement of f (a 1030 or 1031 for it). */
static int
drop_pending(struct crc_op *op, struct bw_client *cl, struct bw_file *f)
{
	struct bw_registry *reg = op->v->reg;
	struct bw_file_rec rec;
	char old[BW_PATH_CAP];
	int rc;

	bw_registry_file_rec(f, &rec);
	snprintf(old, sizeof(old), "%s", rec.pending_path);
	rec.pending_name[0] = rec.pending_path[0] = '\0';
	if ((rc = bw_registry_set_file(reg, cl, op->path, &rec, f->size, 0)) !=
	    0)
		return rc;
	if (strncmp(old, PENDING_DIR, strlen(PENDING_DIR)) == 0)
		unlink_later(op->v, op->v->pending_fd,
			     old + strlen(PENDING_DIR));
	return 0;
}

static void
crc_locked(struct vwait *w)
{
	struct crc_op *op =
		(struct crc_op *)((char *)w - offsetof(struct crc_op, wait));
	struct bw_vault *v = op->v;
	struct bw_registry *reg = v->reg;
	struct bw_client *cl = bw_registry_by_id(reg, op->id);
	struct bw_file *f, *pf;
	struct bw_file_rec rec;
	char shown[BW_ESC_CAP];
	int pending, rc;

	op->locked = 1;
	if (cl == NULL || bw_conn_dead(op->c)) {
		crc_finish(op, 0);
		return;
	}
	f = bw_registry_file(reg, cl, op->name);
	pf = bw_registry_file_at(reg, cl, op->path);
	pending = pf != NULL && pf->pending_path[0] != '\0' &&
		  strcmp(pf->pending_name, op->name) == 0 &&
		  strncmp(pf->pending_path, PENDING_DIR, strlen(PENDING_DIR)) ==
			  0;
	bw_escape_display(op->path, shown, sizeof(shown));
	if (op->code == BW_VAULT_REQ_CRC_OK && pending) {
		snprintf(op->pend_name, sizeof(op->pend_name), "%s",
			 pf->pending_path + strlen(PENDING_DIR));
		op->size = pf->pending_size;
		vault_tmp_name(op->v, ".old-", op->backup);
		/* op->rc belongs to the worker once submitted: the submit's
		 * own result goes elsewhere */
		if ((rc = vault_client_dir(op->v, op->id, &op->dir_fd)) != 0 ||
		    (rc = bw_loop_submit(v->eng->loop, swap_work, swap_done,
					 op)) != 0) {
			op->rc = rc;
			crc_finish(op, BW_VAULT_RESP_ERROR);
		}
		return;
	}
	if (op->code == BW_VAULT_REQ_CRC_OK) {
		if (f == NULL) {
			crc_finish(op, BW_VAULT_RESP_ERROR);
			return;
		}
		if (!f->verified) {
			/* set_file frees f: nothing of it may be passed by
			 * reference */
			bw_registry_file_rec(f, &rec);
			rec.verified = 1;
			op->rc = bw_registry_set_file(reg, cl, rec.path_name,
						      &rec, f->size,
						      f->pending_size);
		}
		if (op->rc == 0)
			bw_info("c%llu 1029 %s verified", ULL(op->c->id),
				shown);
		crc_finish(op, op->rc == 0 ? BW_VAULT_RESP_ACK
					   : BW_VAULT_RESP_ERROR);
		return;
	}
	if (pending)
		op->rc = drop_pending(op, cl, pf);
	bw_info("c%llu %u %s CRC mismatch, %s%s", ULL(op->c->id), op->code,
		shown,
		op->code == BW_VAULT_REQ_CRC_RETRY ? "resend follows"
						   : "client gave up",
		pending ? "; its replacement was discarded" : "");
	if (op->code == BW_VAULT_REQ_CRC_FAIL &&
	    (f = bw_registry_file(reg, cl, op->name)) != NULL)
		f->acked_s = 0;
	crc_finish(op,
		   op->code == BW_VAULT_REQ_CRC_FAIL ? BW_VAULT_RESP_ACK : 0);
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
	op->dir_fd = -1;
	memcpy(op->id, cl->id, BW_ID_LEN);
	snprintf(op->name, sizeof(op->name), "%s", name);
	bw_hex_encode(cl->id, BW_ID_LEN, hex);
	if (bw_file_name_sanitize(name, op->stored) != 0 ||
	    snprintf(op->path, sizeof(op->path), "files/%s/%s", hex,
		     op->stored) >= (int)sizeof(op->path)) {
		/* no such stored file can exist */
		free(op);
		if (code == BW_VAULT_REQ_CRC_RETRY)
			return 0;
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
	rc = vault_lock(op->v, op->path, &op->wait);
	if (rc == 1) {
		crc_locked(&op->wait);
	} else if (rc < 0) {
		op->rc = rc;
		crc_finish(op, BW_VAULT_RESP_ERROR);
	}
	return 0;
}
