/* Bulwark's vault extensions, the owner's changes (docs/vault-protocol.md,
 * "Bulwark extensions"): delete a file (1102) under its path's lock, and
 * have its id refused on the plain listeners from then on (1103). TLS
 * listeners only, as the rest of the extensions (vault_ext.c).
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "svc/vault/vault_int.h"

/* --- the delete request (1102) --------------------------------------------
 */

struct vdel {
	struct bw_lock_wait wait;
	struct bw_vault *v;
	struct bw_conn *c; /* held */
	uint8_t id[BW_ID_LEN], field[BW_NAME_FIELD];
	char name[BW_NAME_CAP], path[BW_PATH_CAP], pending[BW_PATH_CAP];
	int locked;
	struct bw_meta_req fence; /* the path's lock still this node's */
};

static void
del_end(struct vdel *d, int rc, int found)
{
	struct bw_conn *c = d->c;
	char shown[BW_ESC_CAP], val[BW_ESC_CAP];

	if (!bw_conn_dead(c)) {
		if (rc != 0)
			(void)bw_frame_error(c, bw_strerror(rc));
		else if (!found)
			(void)vault_no_such_file(c, d->field);
		else {
			bw_conn_event(
				c, BW_LOG_INFO, "file_deleted", "file=%s",
				bw_log_value(val, sizeof(val),
					     bw_escape_display(d->path, shown,
							       sizeof(shown))));
			(void)bw_frame_reply(c, BW_VAULT_RESP_DELETED, d->field,
					     BW_NAME_FIELD);
		}
		bw_frame_done(c);
	}
	if (d->locked)
		bw_unlock(&d->v->locks, d->path);
	bw_conn_release(c);
	free(d);
}

/* A worker: the objects go while the path is still locked, so that an
 * upload of the same name waiting for the lock is never the one removed. */
static void
del_remove_work(void *arg)
{
	struct vdel *d = arg;

	(void)bw_blob_remove(d->v->blobs, d->path);
	if (strncmp(d->pending, PENDING_DIR, strlen(PENDING_DIR)) == 0)
		(void)bw_blob_remove(d->v->blobs, d->pending);
}

static void
del_removed(void *arg)
{
	del_end(arg, 0, 1);
}

/* The row is gone (a leftover object is the sweep's if a removal fails). */
static void
del_row_done(void *arg, int rc)
{
	struct vdel *d = arg;

	if (rc != 0) {
		del_end(d, rc, 1);
		return;
	}
	if (bw_loop_submit(d->v->eng->loop, del_remove_work, del_removed, d) !=
	    0) {
		del_remove_work(d);
		del_removed(d);
	}
}

/* The row's removal, the path's lock still this node's (on a shared store
 * the lock may have gone with the store's connection). */
static void
del_fenced(struct bw_meta_req *r)
{
	struct vdel *d = r->arg;
	int rc;

	if (r->rc != 0) {
		del_end(d, r->rc, 1);
		return;
	}
	if ((rc = vfile_set(d->v, d->id, d->path, NULL, 0, 0, del_row_done,
			    d)) != 0)
		del_end(d, rc, 1);
}

static void
del_locked(struct bw_lock_wait *w)
{
	struct vdel *d =
		(struct vdel *)((char *)w - offsetof(struct vdel, wait));
	const struct vfile *f;

	d->locked = 1;
	if (w->refused) {
		del_end(d, BW_EBUSY, 1);
		return;
	}
	if (bw_conn_dead(d->c)) {
		del_end(d, 0, 0);
		return;
	}
	if ((f = vfile_at(d->v, d->id, d->path)) == NULL ||
	    strcmp(f->file_name, d->name) != 0) {
		del_end(d, 0, 0);
		return;
	}
	snprintf(d->pending, sizeof(d->pending), "%s", f->pending_path);
	d->fence.rc = 0;
	d->fence.arg = d; /* as del_fenced reads it */
	if (!bw_lock_fence(&d->v->locks, d->path, &d->fence, del_fenced, d))
		del_fenced(&d->fence);
}

int
vault_on_delete(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	struct bw_vault *v = r->ctx;
	char name[BW_NAME_CAP];
	const struct vfile *f;
	struct bw_client *cl;
	struct vdel *d;
	int rc;

	if ((f = vault_ext_file(c, r, p, name, &cl, &rc)) == NULL)
		return rc;
	if ((d = calloc(1, sizeof(*d))) == NULL)
		return bw_frame_error(c, bw_strerror(BW_ENOMEM));
	d->v = v;
	d->c = c;
	memcpy(d->id, cl->id, BW_ID_LEN);
	memcpy(d->field, p, BW_NAME_FIELD);
	snprintf(d->name, sizeof(d->name), "%s", name);
	snprintf(d->path, sizeof(d->path), "%s", f->path_name);
	bw_conn_hold(c);
	bw_frame_wait(c);
	d->wait.run = del_locked;
	rc = bw_lock(&v->locks, d->path, &d->wait);
	if (rc == 1)
		del_locked(&d->wait);
	else if (rc < 0)
		del_end(d, rc, 1);
	return 0;
}

/* --- the TLS only request (1103): no plain listener from now on -------- */

static void
tls_only_done(void *arg, int rc, struct bw_client *cl)
{
	struct bw_conn *c = arg;
	char hex[2 * BW_ID_LEN + 1];

	if (!bw_conn_dead(c)) {
		if (rc != 0) {
			(void)bw_frame_error(c, bw_strerror(rc));
		} else {
			bw_hex_encode(cl->id, BW_ID_LEN, hex);
			bw_conn_event(c, BW_LOG_INFO, "client_tls_only",
				      "id=%s", hex);
			(void)bw_frame_reply(c, BW_VAULT_RESP_TLS_ONLY, NULL,
					     0);
		}
		bw_frame_done(c);
	}
	bw_conn_release(c);
}

int
vault_on_tls_only(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	struct bw_vault *v = r->ctx;
	struct bw_client *cl;

	(void)p;
	if ((cl = vault_ext_client(c, r)) == NULL)
		return 0;
	if (cl->tls_only)
		return bw_frame_reply(c, BW_VAULT_RESP_TLS_ONLY, NULL, 0);
	/* the store may answer at once (closing, out of memory): the wait
	 * starts first */
	bw_conn_hold(c);
	bw_frame_wait(c);
	if (bw_registry_set_tls_only(v->reg, cl, tls_only_done, c) != 0) {
		(void)bw_frame_error(c, bw_strerror(BW_ENOMEM));
		bw_frame_done(c);
		bw_conn_release(c);
	}
	return 0;
}
