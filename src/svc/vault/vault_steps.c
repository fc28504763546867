/* The small steps the vault's commits and verdicts share
 * (svc/vault/vault_int.h): an object removed on a worker, kept aside and
 * put back, the store's journal synced, a connection let go on.
 */
#include <stdio.h>
#include <stdlib.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/vault/vault_int.h"

struct remove_job {
	struct bw_vault *v;
	char key[BW_BLOB_KEY_CAP];
};

static void
remove_work(void *arg)
{
	struct remove_job *j = arg;
	const struct bw_blobs *b = j->v->blobs;

	(void)bw_blob_remove(b, j->key);
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
	(void)bw_blob_remove(v->blobs, key);
}

int
vault_keep_backup(struct bw_vault *v, const char *key, char *backup)
{
	const struct bw_blobs *b = v->blobs;
	int rc;

	bw_blob_scratch_key(FILES_SPACE, ".old-", backup);
	if ((rc = bw_blob_copy(b, key, backup)) == BW_ENOTFOUND) {
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
	int rc = backup[0] != '\0' ? bw_blob_move(b, backup, key)
				   : bw_blob_remove(b, key);

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
