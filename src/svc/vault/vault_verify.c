/* 1029, 1030 and 1031: the client's verdict on a stored upload. A 1029
 * marks it verified, or swaps a pending replacement into place (rename,
 * then row; a failed row undoes the rename); a 1030/1031 throws a pending
 * replacement away. Each runs under the stored path's lock, like a commit.
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
	/* a swap done, waiting for its row to be durable: the row before it,
	 * to put back (with the file) if that fails */
	int swapped;
	struct bw_file_rec prev;
	uint64_t prev_size, prev_pending_size;
};

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
			bw_conn_finish(c); /* 1030: no reply */
		}
		bw_frame_done(c);
	}
	if (op->locked)
		vault_unlock(op->v, op->path);
	if (op->dir_fd >= 0)
		close(op->dir_fd);
	free(op);
	vault_release_and_resume(c);
}

/* A swap whose row could not be made durable is undone, file and row, so
 * that the client's 2107 and what it finds later agree: the replacement
 * waits again for a 1029. */
static void
swap_undo(struct crc_op *op)
{
	struct bw_client *cl = bw_registry_by_id(op->v->reg, op->id);
	char shown[BW_ESC_CAP];
	int rc;

	(void)linkat(op->dir_fd, op->stored, op->v->pending_fd, op->pend_name,
		     0);
	vault_restore_backup(op->dir_fd, op->stored, op->v->incoming_fd,
			     op->backup);
	if (cl == NULL || (rc = bw_registry_set_file(
				   op->v->reg, cl, op->path, &op->prev,
				   op->prev_size, op->prev_pending_size)) != 0)
		bw_error("vault: the row of %s could not be put back",
			 bw_escape_display(op->path, shown, sizeof(shown)));
}

static void
crc_durable(void *arg, int rc)
{
	struct crc_op *op = arg;

	if (rc != 0) {
		op->rc = rc;
		bw_error("vault: a verdict's row could not be made durable: %s",
			 bw_strerror(rc));
		if (op->swapped)
			swap_undo(op);
	} else if (op->swapped) {
		vault_unlink_later(op->v, op->v->incoming_fd, op->backup);
	}
	crc_reply(op, rc == 0 ? BW_VAULT_RESP_ACK : BW_VAULT_RESP_ERROR);
}

/* A 2104 to a 1029 promises the file is verified (or the replacement in
 * place) for good, and one to a 1031 that the replacement is gone: each
 * waits for the fsync that covers its row. */
static void
crc_finish(struct crc_op *op, int reply_code)
{
	if (reply_code == BW_VAULT_RESP_ACK && op->v->durable != NULL &&
	    bw_durable_after(op->v->durable, crc_durable, op) == 0)
		return;
	crc_reply(op, reply_code);
}

/* While the connection that uploaded the version of op's path waiting for
 * a verdict is open (and may still send requests: a padded client's is
 * finished with its 2103), the verdict is its own: another connection with
 * the same client id (who read the id in a 2101) cannot confirm a version
 * the uploader will reject, or discard one it will confirm. */
static int
stranger(const struct crc_op *op, const struct bw_file *f)
{
	const struct bw_conn *up;

	if (f == NULL || f->uploader == 0 || f->uploader == op->c->id)
		return 0;
	up = bw_engine_conn(op->v->eng, f->uploader);
	return up != NULL && bw_conn_serving(up);
}

static void
swap_work(void *arg)
{
	struct crc_op *op = arg;
	struct bw_vault *v = op->v;

	op->rc = vault_keep_backup(op->dir_fd, op->stored, v->incoming_fd,
				   op->backup);
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
		vault_restore_backup(op->dir_fd, op->stored, v->incoming_fd,
				     op->backup);
	}
}

static void
swap_done(void *arg)
{
	struct crc_op *op = arg;
	struct bw_registry *reg = op->v->reg;
	struct bw_client *cl = bw_registry_by_id(reg, op->id);
	struct bw_file *f;
	struct bw_file_rec rec;
	char shown[BW_ESC_CAP];

	if (op->rc == 0 && cl == NULL)
		op->rc = BW_ENOTFOUND;
	if (op->rc == 0 &&
	    (f = bw_registry_file_at(reg, cl, op->path)) != NULL) {
		bw_registry_file_rec(f, &op->prev);
		op->prev_size = f->size;
		op->prev_pending_size = f->pending_size;
	} else if (op->rc == 0) {
		op->rc = BW_ENOTFOUND;
	}
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
			vault_restore_backup(op->dir_fd, op->stored,
					     op->v->incoming_fd, op->backup);
		}
	}
	bw_escape_display(op->path, shown, sizeof(shown));
	if (op->rc == 0) {
		bw_info("c%llu 1029 %s verified: the replacement is now "
			"current",
			ULL(op->c->id), shown);
		op->swapped = 1; /* the backup goes once the row is durable */
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
		vault_unlink_later(op->v, op->v->pending_fd,
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
	if (stranger(op, pf)) {
		bw_info("c%llu %u refused: the uploader's connection (c%llu) "
			"is open and owes the verdict",
			ULL(op->c->id), op->code, ULL(pf->uploader));
		op->rc = BW_EBUSY;
		crc_finish(op, op->code == BW_VAULT_REQ_CRC_RETRY
				       ? 0
				       : BW_VAULT_RESP_ERROR);
		return;
	}
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
		/* too many verdicts wait for this file: a 1030 (no reply)
		 * is dropped, a 1029/1031 answered 2107 */
		op->rc = rc;
		crc_finish(op, code == BW_VAULT_REQ_CRC_RETRY
				       ? 0
				       : BW_VAULT_RESP_ERROR);
	}
	return 0;
}
