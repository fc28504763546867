/* The files table: loading every row at start-up and the one primitive the
 * vault's commits use (sq_store_file_set), plus single-row updates.
 */
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "store/sqlite/sqlite_int.h"

int
sq_store_load_files(struct sq_store *s, sq_store_file_cb cb, void *arg)
{
	sqlite3_stmt *st = s->st[ST_FILE_LOAD];
	struct bw_file_rec f;
	unsigned skipped = 0;
	int rc = 0, step;

	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		memset(&f, 0, sizeof f);
		if (store_column_id(st, 0, f.client_id) != 0 ||
		    store_column_str(st, 1, f.file_name, sizeof f.file_name) !=
			    0 ||
		    store_column_str(st, 2, f.path_name, sizeof f.path_name) !=
			    0) {
			skipped++;
			memset(&f, 0, sizeof f);
			f.unreadable = 1;
			if ((rc = cb(arg, &f)) != 0)
				break;
			continue;
		}
		f.verified = store_column_bool(st, 3);
		if (store_column_str(st, 4, f.pending_name,
				     sizeof f.pending_name) != 0 ||
		    store_column_str(st, 5, f.pending_path,
				     sizeof f.pending_path) != 0)
			f.pending_name[0] = f.pending_path[0] = '\0';
		if ((rc = cb(arg, &f)) != 0)
			break;
	}
	if (rc == 0 && step != SQLITE_DONE)
		rc = store_db_err(s->db, "load files");
	store_done(st);
	if (skipped > 0)
		bw_warn("store: skipped %u unreadable files row(s)", skipped);
	return rc;
}

/* Binds rec's columns to st: ?1 the client, ?2 FileName, ?3 PathName,
 * ?4 Verified, ?5 PendingName, ?6 PendingPath. */
static int
bind_rec(sqlite3_stmt *st, const uint8_t id[BW_ID_LEN],
	 const struct bw_file_rec *rec)
{
	int rc;

	if ((rc = store_bind_blob(st, 1, id, BW_ID_LEN)) != 0 ||
	    (rc = store_bind_str(st, 2, rec->file_name,
				 sizeof rec->file_name)) != 0 ||
	    (rc = store_bind_str(st, 3, rec->path_name,
				 sizeof rec->path_name)) != 0 ||
	    sqlite3_bind_int(st, 4, rec->verified != 0) != SQLITE_OK ||
	    (rc = store_bind_opt_str(st, 5, rec->pending_name,
				     sizeof rec->pending_name)) != 0 ||
	    (rc = store_bind_opt_str(st, 6, rec->pending_path,
				     sizeof rec->pending_path)) != 0) {
		store_done(st);
		return rc != 0 ? rc : BW_EDB;
	}
	return 0;
}

/* rec in place of the row with its name, when that row is at path already
 * (and so is rec): 1 if done, 0 if there is no such row. The other rows at
 * path go, as in the general case. */
static int
file_update(struct sq_store *s, const uint8_t id[BW_ID_LEN], const char *path,
	    const struct bw_file_rec *rec)
{
	sqlite3_stmt *others = s->st[ST_FILE_DROP_OTHERS];
	int rc;

	if (strcmp(path, rec->path_name) != 0)
		return 0;
	if ((rc = bind_rec(s->st[ST_FILE_UPDATE], id, rec)) != 0 ||
	    (rc = store_run_change(s, ST_FILE_UPDATE, "set file")) != 0)
		return rc == BW_ENOTFOUND ? 0 : rc;
	if ((rc = store_bind_blob(others, 1, id, BW_ID_LEN)) != 0 ||
	    (rc = store_bind_str(others, 2, path, BW_PATH_CAP)) != 0 ||
	    (rc = store_bind_str(others, 3, rec->file_name,
				 sizeof rec->file_name)) != 0) {
		store_done(others);
		return rc;
	}
	if ((rc = store_run(s, ST_FILE_DROP_OTHERS, "set file")) != 0)
		return rc;
	return 1;
}

int
sq_store_file_set(struct sq_store *s, const uint8_t id[BW_ID_LEN],
		  const char *path, const struct bw_file_rec *rec)
{
	sqlite3_stmt *drop = s->st[ST_FILE_DROP_PATH];
	sqlite3_stmt *drop_name = s->st[ST_FILE_DROP_NAME];
	int rc;

	if ((rc = store_tx_begin(s)) != 0)
		return rc;
	if (rec != NULL && (rc = file_update(s, id, path, rec)) != 0) {
		rc = rc == 1 ? 0 : rc;
		goto out;
	}
	/* the rows at path, and the one with the new row's name */
	if ((rc = store_bind_blob(drop, 1, id, BW_ID_LEN)) != 0 ||
	    (rc = store_bind_str(drop, 2, path, BW_PATH_CAP)) != 0) {
		store_done(drop);
		goto out;
	}
	if ((rc = store_run(s, ST_FILE_DROP_PATH, "set file")) != 0)
		goto out;
	if (rec != NULL &&
	    ((rc = store_bind_blob(drop_name, 1, id, BW_ID_LEN)) != 0 ||
	     (rc = store_bind_str(drop_name, 2, rec->file_name,
				  sizeof rec->file_name)) != 0)) {
		store_done(drop_name);
		goto out;
	}
	if (rec != NULL &&
	    (rc = store_run(s, ST_FILE_DROP_NAME, "set file")) != 0)
		goto out;
	if (rec != NULL &&
	    ((rc = bind_rec(s->st[ST_FILE_INSERT], id, rec)) != 0 ||
	     (rc = store_run(s, ST_FILE_INSERT, "set file")) != 0))
		goto out;
out:
	return store_tx_end(s, rc);
}
