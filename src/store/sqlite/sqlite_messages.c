/* The messages table: ids assigned here and recorded in bulwark_meta, so an
 * id is never used twice even in a table made without AUTOINCREMENT; a
 * recipient's queue read in id order a page at a time; deletion up to an
 * id once delivery is proven.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "store/sqlite/sqlite_int.h"

/* The largest id ever seen: the table's, AUTOINCREMENT's sequence, ours. */
int
store_msg_init(struct sq_store *s)
{
	static const char *const sql[] = {
		"SELECT max(ID) FROM messages",
		"SELECT Value FROM bulwark_meta WHERE Key = 'next_message_id'",
		"SELECT seq FROM sqlite_sequence WHERE name = 'messages'",
	};
	sqlite3_stmt *st;
	int64_t v, best = 0;
	size_t i;
	int rc;

	for (i = 0; i < sizeof(sql) / sizeof(sql[0]); i++) {
		st = NULL;
		if (sqlite3_prepare_v2(s->db, sql[i], -1, &st, NULL) !=
		    SQLITE_OK) {
			/* no sqlite_sequence: the table has no AUTOINCREMENT */
			sqlite3_finalize(st);
			continue;
		}
		rc = sqlite3_step(st);
		v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
		sqlite3_finalize(st);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			return store_db_err(s->db, sql[i]);
		if (v > best)
			best = v;
	}
	s->msg_next = best;
	s->msg_kept = best;
	return 0;
}

/* m's row under id. */
static int
insert_as(struct sq_store *s, const struct bw_msg_rec *m, int64_t id)
{
	sqlite3_stmt *st = s->st[ST_MSG_INSERT];
	static const uint8_t empty[1];
	const void *content = m->content != NULL ? m->content : empty;
	int rc, ext;

	if (m->size > INT_MAX && m->path[0] == '\0')
		return BW_ETOOBIG;
	if ((rc = store_bind_blob(st, 2, m->to, BW_ID_LEN)) != 0 ||
	    (rc = store_bind_blob(st, 3, m->from, BW_ID_LEN)) != 0 ||
	    sqlite3_bind_int(st, 4, (int)m->type) != SQLITE_OK ||
	    sqlite3_bind_int64(st, 6, (int64_t)m->size) != SQLITE_OK ||
	    (rc = store_bind_opt_str(st, 7, m->path, sizeof(m->path))) != 0)
		goto bad;
	if (m->path[0] == '\0')
		rc = sqlite3_bind_blob(st, 5, content, (int)m->size,
				       SQLITE_STATIC) == SQLITE_OK
			     ? 0
			     : BW_EDB;
	else
		rc = sqlite3_bind_null(st, 5) == SQLITE_OK ? 0 : BW_EDB;
	if (rc != 0 || sqlite3_bind_int64(st, 1, id) != SQLITE_OK)
		goto bad;
	if (sqlite3_step(st) != SQLITE_DONE) {
		ext = sqlite3_extended_errcode(s->db);
		rc = ext == SQLITE_CONSTRAINT_PRIMARYKEY ||
				     ext == SQLITE_CONSTRAINT_UNIQUE
			     ? BW_EEXIST
			     : store_db_err(s->db, "insert message");
	}
	store_done(st);
	return rc;
bad:
	store_done(st);
	return rc != 0 ? rc : BW_EDB;
}

int
sq_store_msg_insert(struct sq_store *s, struct bw_msg_rec *m)
{
	int rc;

	if (!s->in_tx)
		return BW_EDB; /* the id and the row commit together */
	if (s->msg_next >= BW_META_MSG_ID_MAX)
		return BW_ETOOBIG; /* ids travel as u32 */
	if ((rc = insert_as(s, m, s->msg_next + 1)) != 0)
		return rc == BW_EEXIST ? BW_EDB : rc;
	m->id = ++s->msg_next;
	return 0;
}

int
sq_store_msg_put(struct sq_store *s, const struct bw_msg_rec *m)
{
	int rc;

	if (!s->in_tx)
		return BW_EDB;
	if (m->id <= 0 || m->id > BW_META_MSG_ID_MAX)
		return BW_ETOOBIG;
	if ((rc = insert_as(s, m, m->id)) == 0 && m->id > s->msg_next)
		s->msg_next = m->id;
	return rc;
}

int
sq_store_msg_floor(struct sq_store *s, int64_t id)
{
	if (!s->in_tx)
		return BW_EDB;
	if (id < 0 || id > BW_META_MSG_ID_MAX)
		return BW_ETOOBIG;
	if (id > s->msg_next)
		s->msg_next = id; /* recorded with the commit */
	return 0;
}

int
sq_store_msg_each(struct sq_store *s, const uint8_t to[BW_ID_LEN],
		  int64_t after, int64_t upto, unsigned limit, int content,
		  sq_store_msg_cb cb, void *arg)
{
	enum stmt_id id = content ? ST_MSG_EACH_CONTENT : ST_MSG_EACH;
	sqlite3_stmt *st = s->st[id];
	struct bw_msg_rec m;
	int rc, step;

	if ((rc = store_bind_blob(st, 1, to, BW_ID_LEN)) != 0 ||
	    sqlite3_bind_int64(st, 2, after) != SQLITE_OK ||
	    sqlite3_bind_int64(st, 3, upto > 0 ? upto : INT64_MAX) !=
		    SQLITE_OK ||
	    sqlite3_bind_int64(st, 4, limit > 0 ? (int64_t)limit : -1) !=
		    SQLITE_OK) {
		store_done(st);
		return rc != 0 ? rc : BW_EDB;
	}
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		memset(&m, 0, sizeof(m));
		m.id = sqlite3_column_int64(st, 0);
		memcpy(m.to, to, BW_ID_LEN);
		if (store_column_id(st, 1, m.from) != 0 ||
		    sqlite3_column_int64(st, 3) < 0)
			continue; /* a row no client can have sent */
		m.type = (unsigned)sqlite3_column_int(st, 2);
		m.size = (uint64_t)sqlite3_column_int64(st, 3);
		if (store_column_str(st, 4, m.path, sizeof(m.path)) != 0)
			m.path[0] = '\0';
		if (content && m.path[0] == '\0') {
			m.content = sqlite3_column_blob(st, 5);
			if ((uint64_t)sqlite3_column_bytes(st, 5) != m.size)
				m.size = (uint64_t)sqlite3_column_bytes(st, 5);
		}
		if (cb(arg, &m) != 0)
			break;
	}
	rc = step == SQLITE_ROW || step == SQLITE_DONE
		     ? 0
		     : store_db_err(s->db, "read messages");
	store_done(st);
	return rc;
}

/* Runs inside the caller's transaction. */
static int
delete_upto(struct sq_store *s, const uint8_t to[BW_ID_LEN], int64_t upto,
	    int (*path_cb)(void *, const char *), void *arg, uint64_t *n,
	    uint64_t *bytes)
{
	sqlite3_stmt *sum = s->st[ST_MSG_SUM_UPTO];
	sqlite3_stmt *paths = s->st[ST_MSG_PATHS_UPTO];
	sqlite3_stmt *del = s->st[ST_MSG_DELETE_UPTO];
	char path[BW_PATH_CAP];
	int rc, step;

	if ((rc = store_bind_blob(sum, 1, to, BW_ID_LEN)) != 0 ||
	    sqlite3_bind_int64(sum, 2, upto) != SQLITE_OK ||
	    sqlite3_step(sum) != SQLITE_ROW) {
		rc = rc != 0 ? rc : store_db_err(s->db, "count messages");
		store_done(sum);
		return rc;
	}
	*n = (uint64_t)sqlite3_column_int64(sum, 0);
	*bytes = (uint64_t)sqlite3_column_int64(sum, 1);
	store_done(sum);
	if ((rc = store_bind_blob(paths, 1, to, BW_ID_LEN)) != 0 ||
	    sqlite3_bind_int64(paths, 2, upto) != SQLITE_OK) {
		store_done(paths);
		return rc != 0 ? rc : BW_EDB;
	}
	while (rc == 0 && (step = sqlite3_step(paths)) == SQLITE_ROW) {
		if (store_column_str(paths, 0, path, sizeof(path)) == 0 &&
		    path_cb != NULL)
			rc = path_cb(arg, path);
	}
	if (rc == 0 && step != SQLITE_DONE)
		rc = store_db_err(s->db, "message files");
	store_done(paths);
	if (rc != 0)
		return rc;
	if ((rc = store_bind_blob(del, 1, to, BW_ID_LEN)) != 0 ||
	    sqlite3_bind_int64(del, 2, upto) != SQLITE_OK) {
		store_done(del);
		return rc != 0 ? rc : BW_EDB;
	}
	return store_run(s, ST_MSG_DELETE_UPTO, "delete messages");
}

int
sq_store_msg_delete(struct sq_store *s, const uint8_t to[BW_ID_LEN],
		    int64_t upto, int (*path_cb)(void *, const char *),
		    void *arg, uint64_t *n, uint64_t *bytes)
{
	int rc;

	*n = *bytes = 0;
	if ((rc = store_tx_begin(s)) != 0)
		return rc;
	rc = delete_upto(s, to, upto, path_cb, arg, n, bytes);
	if ((rc = store_tx_end(s, rc)) != 0)
		*n = *bytes = 0;
	return rc;
}

int
sq_store_msg_totals(struct sq_store *s,
		    int (*cb)(void *arg, const uint8_t to[BW_ID_LEN],
			      uint64_t n, uint64_t bytes),
		    void *arg)
{
	sqlite3_stmt *st = s->st[ST_MSG_TOTALS];
	uint8_t to[BW_ID_LEN];
	int rc = 0, step;

	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		if (store_column_id(st, 0, to) != 0)
			continue;
		if ((rc = cb(arg, to, (uint64_t)sqlite3_column_int64(st, 1),
			     (uint64_t)sqlite3_column_int64(st, 2))) != 0)
			break;
	}
	if (rc == 0 && step != SQLITE_ROW && step != SQLITE_DONE)
		rc = store_db_err(s->db, "message totals");
	store_done(st);
	return rc;
}

int
sq_store_msg_files(struct sq_store *s,
		   int (*cb)(void *arg, int64_t id, const char *path),
		   void *arg)
{
	sqlite3_stmt *st = s->st[ST_MSG_ALL_PATHS];
	char path[BW_PATH_CAP];
	int rc = 0, step;

	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		if (store_column_str(st, 1, path, sizeof(path)) != 0)
			continue;
		if ((rc = cb(arg, sqlite3_column_int64(st, 0), path)) != 0)
			break;
	}
	if (rc == 0 && step != SQLITE_ROW && step != SQLITE_DONE)
		rc = store_db_err(s->db, "message files");
	store_done(st);
	return rc;
}

int
sq_store_msg_drop(struct sq_store *s, int64_t id)
{
	sqlite3_stmt *st = s->st[ST_MSG_DROP];

	if (sqlite3_bind_int64(st, 1, id) != SQLITE_OK) {
		store_done(st);
		return BW_EDB;
	}
	return store_run_change(s, ST_MSG_DROP, "drop message");
}

int
sq_store_msg_drop_path(struct sq_store *s, const char *path)
{
	sqlite3_stmt *st = s->st[ST_MSG_DROP_PATH];

	if (sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC) != SQLITE_OK) {
		store_done(st);
		return BW_EDB;
	}
	return store_run_change(s, ST_MSG_DROP_PATH, "drop message");
}
