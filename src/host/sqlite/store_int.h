/* Internal to src/host/sqlite/: the connection and its prepared
 * statements, and the helpers every table file binds parameters and reads
 * columns with. With the .c files beside it, the only code that includes
 * sqlite3.h.
 */
#ifndef BULWARK_CORE_STORE_INT_H
#define BULWARK_CORE_STORE_INT_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "host/store.h"
#include "host/sqlite/lastseen.h"

enum stmt_id {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_CLIENT_LOAD,
	ST_CLIENT_INSERT,
	ST_CLIENT_SET_KEYS,
	ST_CLIENT_SET_KEY,
	ST_CLIENT_TOUCH,
	ST_FILE_LOAD,
	ST_FILE_DROP_SAME_PATH,
	ST_FILE_UPSERT,
	ST_FILE_SET_VERIFIED,
	ST_FILE_DELETE,
	ST_FILE_DROP_PATH,
	ST_FILE_INSERT,
	ST_MSG_INSERT,
	ST_MSG_EACH,
	ST_MSG_EACH_CONTENT,
	ST_MSG_PATHS_UPTO,
	ST_MSG_SUM_UPTO,
	ST_MSG_DELETE_UPTO,
	ST_MSG_TOTALS,
	ST_MSG_ALL_PATHS,
	ST_MSG_DROP,
	ST_META_SET,
	ST_N
};

struct bw_store {
	sqlite3 *db;
	sqlite3_stmt *st[ST_N];
	int sync_fd; /* the WAL, opened for bw_store_sync_fd; -1 */
	/* message ids: never reused, whatever the table was made with */
	int64_t msg_next, msg_next_saved;
	int in_tx; /* inside bw_store_begin */
};

/* messages.c: the next message id, from every place it was recorded. */
int store_msg_init(struct bw_store *s) BW_WUR;

/* store.c: statements */
/* Logs the connection's last error and turns it into an error value. */
int store_db_err(sqlite3 *db, const char *what);
/* Resets a statement after use and drops its bindings, so that no pointer
 * bound with SQLITE_STATIC (keys) outlives the call. */
void store_done(sqlite3_stmt *st);
/* Runs a prepared statement that returns no rows. */
int store_run(struct bw_store *s, enum stmt_id id, const char *what);
/* The same for an UPDATE or DELETE: BW_ENOTFOUND if it changed no row. */
int store_run_change(struct bw_store *s, enum stmt_id id, const char *what);
/* Ends a transaction begun with ST_BEGIN: commits if rc is 0, else rolls
 * back. Returns rc, or the commit's error. */
int store_finish(struct bw_store *s, int rc);

/* store.c: parameters (pointers must outlive the step) and columns */
int store_bind_str(sqlite3_stmt *st, int idx, const char *str, size_t cap);
int store_bind_opt_str(sqlite3_stmt *st, int idx, const char *str, size_t cap);
int store_bind_blob(sqlite3_stmt *st, int idx, const void *p, int n);
int store_bind_time(sqlite3_stmt *st, int idx, int64_t t,
		    char buf[BW_LASTSEEN_TEXT + 1]);
int store_column_str(sqlite3_stmt *st, int col, char *out, size_t cap);
int store_column_id(sqlite3_stmt *st, int col, uint8_t out[BW_ID_LEN]);
int store_column_key(sqlite3_stmt *st, int col, uint8_t *out, size_t cap,
		     int exact, int *has);
int store_column_bool(sqlite3_stmt *st, int col);
int store_column_time(sqlite3_stmt *st, int col, int64_t *out);

#endif
