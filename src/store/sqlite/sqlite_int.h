/* Internal to src/host/sqlite/: the connection and its prepared
 * statements, and the helpers every table file binds parameters and reads
 * columns with. With the .c files beside it, the only code that includes
 * sqlite3.h.
 */
#ifndef BULWARK_HOST_SQLITE_INT_H
#define BULWARK_HOST_SQLITE_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "store/meta.h"
#include "store/sqlite/lastseen.h"

/* --- the store: synchronous, on the owner's thread ------------------- */

struct sq_store;

/* Opens (creating if absent) the database at path: WAL, foreign keys off,
 * tables created if missing. */
int sq_store_open(struct sq_store **out, const char *path) BW_WUR;
void sq_store_close(struct sq_store *s);

/* Calls cb for every row; a non-zero return from cb stops and is returned. */
typedef int (*sq_store_client_cb)(void *arg, const struct bw_client_rec *c);
typedef int (*sq_store_file_cb)(void *arg, const struct bw_file_rec *f);
int sq_store_load_clients(struct sq_store *s, sq_store_client_cb cb,
			  void *arg) BW_WUR;
int sq_store_load_files(struct sq_store *s, sq_store_file_cb cb,
			void *arg) BW_WUR;

/* Inserts a new client; BW_EEXIST if the name or id is taken. */
int sq_store_client_insert(struct sq_store *s,
			   const struct bw_client_rec *c) BW_WUR;
/* Sets the public key (if pubkey is not NULL), the AES key (NULL revokes
 * it), when it was issued, whether the public key has been used, and
 * LastSeen, in one statement. */
int sq_store_client_tls_only(struct sq_store *s,
			     const uint8_t id[BW_ID_LEN]) BW_WUR;
int sq_store_client_set_key(struct sq_store *s, const uint8_t id[BW_ID_LEN],
			    const uint8_t *pubkey, const uint8_t *aes_key,
			    int64_t issued, int used, int64_t last_seen) BW_WUR;
int sq_store_client_touch(struct sq_store *s, const uint8_t id[BW_ID_LEN],
			  int64_t last_seen) BW_WUR;

/* In one transaction: removes every row of client id whose PathName is path
 * or whose FileName is rec->file_name, then inserts rec (if not NULL). The
 * one primitive of the vault's commits: each step of a commit, and each
 * undo, replaces the one row that owns a stored path. */
int sq_store_file_set(struct sq_store *s, const uint8_t id[BW_ID_LEN],
		      const char *path, const struct bw_file_rec *rec) BW_WUR;

/* ---- transactions and durability ----
 * Commits need not be durable when they return (SQLite: WAL with
 * synchronous=NORMAL): a caller that promises durability calls
 * sq_store_sync after its commit, off the loop thread. */
int sq_store_begin(struct sq_store *s) BW_WUR;
/* Commits, or rolls back and returns the error. */
int sq_store_commit(struct sq_store *s) BW_WUR;
/* Rolls back what sq_store_begin began (rc: why; returned). */
int sq_store_rollback(struct sq_store *s, int rc);
/* Makes every commit made so far durable: 0 or -errno. It blocks (an
 * fsync), so it runs on a worker, and it is the one call that may run on
 * another thread while the owner goes on using the store. A backend whose
 * commits are durable when they return makes it a no-op. */
int sq_store_sync(struct sq_store *s) BW_WUR;

/* ---- checkpoints off the owner's thread ----
 * By default a commit that leaves the WAL at 1,000 pages or more copies it
 * into the database file there and then, with two fsyncs, on the thread
 * that committed (the loop). After this call no commit does: once one
 * leaves the WAL at pages or more, due(arg) is called (on the owner's
 * thread, inside the commit; it must not use the store), and the owner
 * runs sq_store_checkpoint on a worker. Opens a second connection to the
 * file for it. A store in memory has no WAL: then nothing changes. */
int sq_store_ckpt_open(struct sq_store *s, unsigned pages,
		       void (*due)(void *arg), void *arg) BW_WUR;
/* A passive checkpoint, as far as readers allow, on the second connection:
 * with sq_store_sync, the calls that may run on another thread while the
 * owner goes on, one at a time. *copied_pages: the WAL's frames now in
 * the file (the WAL's own count is s->wal_pages, from the last commit).
 * 0, or BW_EDB with s->ckpt_err set. */
int sq_store_checkpoint(struct sq_store *s, int *copied_pages) BW_WUR;
/* After a checkpoint that copied all of the WAL, and while the owner
 * commits nothing: one small commit, so that it, not the owner's next
 * commit, starts the WAL over, which writes and syncs the WAL's header
 * (and cuts the file back). It runs on a worker, but on the owner's
 * connection, under db_mu: a write by another connection would make the
 * owner's connection drop its whole page cache at its next read (SQLite
 * sees the WAL changed under it), and the owner's reads then go back to
 * the file, page by page. Best effort: 0, or BW_EDB with s->ckpt_err set
 * (the owner's next commit then starts it over); a transaction of the
 * owner's still open is left alone. */
int sq_store_wal_restart(struct sq_store *s) BW_WUR;
/* The owner's hold on db against a restart on a worker. */
void sq_store_lock(struct sq_store *s);
void sq_store_unlock(struct sq_store *s);

/* ---- messages ---- */

/* Inserts m with a fresh id (never one used before, also after deletes)
 * and sets m->id. Inside sq_store_begin/commit, so ids and rows commit
 * together. */
int sq_store_msg_insert(struct sq_store *s, struct bw_msg_rec *m) BW_WUR;
/* m under its own id (a migration): BW_EEXIST if taken; later ids are
 * higher. Inside sq_store_begin/commit. */
int sq_store_msg_put(struct sq_store *s, const struct bw_msg_rec *m) BW_WUR;
/* Later ids are higher than id. Inside sq_store_begin/commit. */
int sq_store_msg_floor(struct sq_store *s, int64_t id) BW_WUR;
typedef int (*sq_store_msg_cb)(void *arg, const struct bw_msg_rec *m);
/* to's messages with after < id <= upto (upto 0: no bound), in id order,
 * at most limit (0: no limit). With content set, m->content points at an
 * inline content, valid during the call. A non-zero return from cb stops
 * the walk (and is not an error). */
int sq_store_msg_each(struct sq_store *s, const uint8_t to[BW_ID_LEN],
		      int64_t after, int64_t upto, unsigned limit, int content,
		      sq_store_msg_cb cb, void *arg) BW_WUR;
/* Deletes to's messages with id <= upto, in one transaction, and reports
 * how many and their content bytes. path_cb gets each content file's path
 * before the deletion commits: the caller removes the files only if this
 * returns 0 (committed); a non-zero return from path_cb rolls it back and
 * is returned. */
int sq_store_msg_delete(struct sq_store *s, const uint8_t to[BW_ID_LEN],
			int64_t upto, int (*path_cb)(void *, const char *),
			void *arg, uint64_t *n, uint64_t *bytes) BW_WUR;
/* Per recipient: messages and content bytes waiting. */
int sq_store_msg_totals(struct sq_store *s,
			int (*cb)(void *arg, const uint8_t to[BW_ID_LEN],
				  uint64_t n, uint64_t bytes),
			void *arg) BW_WUR;
/* Every message whose content is a file: cb(arg, id, path); a non-zero
 * return stops. */
int sq_store_msg_files(struct sq_store *s,
		       int (*cb)(void *arg, int64_t id, const char *path),
		       void *arg) BW_WUR;
/* Removes one message (its content file is the caller's). */
int sq_store_msg_drop(struct sq_store *s, int64_t id) BW_WUR;
int sq_store_msg_drop_path(struct sq_store *s, const char *path) BW_WUR;

/* --- its insides -------------------------------------------------------- */

enum stmt_id {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_SAVEPOINT,
	ST_RELEASE,
	ST_ROLLBACK_TO,
	ST_CLIENT_LOAD,
	ST_CLIENT_INSERT,
	ST_CLIENT_SET_KEY,
	ST_CLIENT_TOUCH,
	ST_CLIENT_TLS_ONLY,
	ST_FILE_LOAD,
	ST_FILE_DROP_PATH,
	ST_FILE_DROP_NAME,
	ST_FILE_INSERT,
	ST_FILE_UPDATE,
	ST_FILE_DROP_OTHERS,
	ST_MSG_INSERT,
	ST_MSG_EACH,
	ST_MSG_EACH_CONTENT,
	ST_MSG_PATHS_UPTO,
	ST_MSG_SUM_UPTO,
	ST_MSG_DELETE_UPTO,
	ST_MSG_TOTALS,
	ST_MSG_ALL_PATHS,
	ST_MSG_DROP,
	ST_MSG_DROP_PATH,
	ST_META_SET,
	ST_N
};

struct sq_store {
	sqlite3 *db;
	sqlite3_stmt *st[ST_N];
	int sync_fd; /* the WAL, opened for sq_store_sync_fd; -1 */
	/* a second connection to the same file, for checkpoints on a worker
	 * (sq_store_ckpt_open); NULL: db checkpoints itself, on commit */
	sqlite3 *ckpt_db;
	unsigned ckpt_pages;
	int wal_pages; /* the WAL's frames after the last commit */
	/* db between the owner and a worker's sq_store_wal_restart: the
	 * owner takes it to use db while a restart may run (sq_store_lock),
	 * or holds its requests back, as sqlite_meta.c does */
	pthread_mutex_t db_mu;
	int restarting; /* the worker's commit, for the WAL hook */
	void (*ckpt_due)(void *arg);
	void *ckpt_arg;
	char ckpt_err[160]; /* the last checkpoint's error, for the owner */
	/* message ids: never reused, whatever the table was made with, nor
	 * after a transaction that failed (its ids may still be named in a
	 * drop of what it may have stored); msg_kept is what the database
	 * has recorded */
	int64_t msg_next, msg_kept;
	int wal;   /* the journal mode is WAL */
	int in_tx; /* inside sq_store_begin */
	int depth; /* store_tx_begin's nesting */
};

/* messages.c: the next message id, from every place it was recorded. */
int store_msg_init(struct sq_store *s) BW_WUR;

/* schema.c: the tables, created or brought up to date (*name_col: the
 * clients' name column it found); runs sql with no rows (logged). */
int store_schema(sqlite3 *db, const char **name_col) BW_WUR;
int store_exec(sqlite3 *db, const char *sql) BW_WUR;

/* store.c: statements */
/* Logs the connection's last error and turns it into an error value. */
int store_db_err(sqlite3 *db, const char *what);
/* Resets a statement after use and drops its bindings, so that no pointer
 * bound with SQLITE_STATIC (keys) outlives the call. */
void store_done(sqlite3_stmt *st);
/* Runs a prepared statement that returns no rows. */
int store_run(struct sq_store *s, enum stmt_id id, const char *what);
/* The same for an UPDATE or DELETE: BW_ENOTFOUND if it changed no row. */
int store_run_change(struct sq_store *s, enum stmt_id id, const char *what);
/* Ends a transaction begun with ST_BEGIN: commits if rc is 0, else rolls
 * back. Returns rc, or the commit's error. */
int store_finish(struct sq_store *s, int rc);
/* A unit of work that may run alone or inside a batch: a transaction of
 * its own outside one, a savepoint inside (whose failure undoes only it).
 * store_tx_end commits or releases if rc is 0, else rolls it back; it
 * returns rc, or the commit's error. */
int store_tx_begin(struct sq_store *s) BW_WUR;
int store_tx_end(struct sq_store *s, int rc);

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
