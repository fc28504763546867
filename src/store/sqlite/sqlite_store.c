/* The SQLite backend's store: opening defensive.db (its schema is
 * sqlite_schema.c's), preparing every statement once, and running
 * statements and transactions for the table files (sqlite_clients.c,
 * sqlite_files.c, sqlite_messages.c) and the table of requests
 * (sqlite_meta.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "store/sqlite/sqlite_int.h"

#define BUSY_TIMEOUT_MS 5000

/* Statements whose text does not depend on the database found at open; the
 * two that name the clients' name column are built in prepare_all(). */
static const char *const fixed_sql[ST_N] = {
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_SAVEPOINT] = "SAVEPOINT unit",
	[ST_RELEASE] = "RELEASE unit",
	[ST_ROLLBACK_TO] = "ROLLBACK TO unit",
	[ST_CLIENT_SET_KEY] = "UPDATE clients SET PublicKey = "
			      "coalesce(?2, PublicKey), AESKey = ?3, "
			      "KeyIssued = ?4, KeyUsed = ?5, LastSeen = ?6 "
			      "WHERE ID = ?1",
	[ST_CLIENT_TOUCH] = "UPDATE clients SET LastSeen = ?2 WHERE ID = ?1",
	[ST_CLIENT_TLS_ONLY] = "UPDATE clients SET TlsOnly = 1 WHERE ID = ?1",
	[ST_FILE_LOAD] = "SELECT ID, FileName, PathName, Verified, "
			 "PendingName, PendingPath FROM files",
	/* two statements, not one with an OR: each is one index search
	 * (files_path, the key), where the OR made SQLite walk every row of
	 * the client's */
	[ST_FILE_DROP_PATH] = "DELETE FROM files WHERE ID = ?1 AND "
			      "PathName = ?2",
	[ST_FILE_DROP_NAME] = "DELETE FROM files WHERE ID = ?1 AND "
			      "FileName = ?2",
	[ST_FILE_INSERT] = "INSERT INTO files(ID, FileName, PathName, "
			   "Verified, PendingName, PendingPath) "
			   "VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
	/* the row kept in place when its name and path stay (a 1029, a
	 * replacement under the same name): one page changes, where a
	 * delete and an insert change the table's two leaves and both
	 * indexes'. Byte for byte: a database made elsewhere may compare
	 * its columns without case, and then the row must be rewritten */
	[ST_FILE_UPDATE] = "UPDATE files SET Verified = ?4, PendingName = ?5, "
			   "PendingPath = ?6 WHERE ID = ?1 AND "
			   "FileName = ?2 COLLATE BINARY AND "
			   "PathName = ?3 COLLATE BINARY",
	[ST_FILE_DROP_OTHERS] = "DELETE FROM files WHERE ID = ?1 AND "
				"PathName = ?2 AND FileName IS NOT ?3",
	[ST_MSG_INSERT] = "INSERT INTO messages(ID, ToClient, FromClient, "
			  "Type, Content, ContentSize, ContentPath) "
			  "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
#define MSG_SIZE "coalesce(ContentSize, length(Content), 0)"
	[ST_MSG_EACH] = "SELECT ID, FromClient, Type, " MSG_SIZE
			", ContentPath, NULL FROM messages WHERE ToClient = ?1 "
			"AND ID > ?2 AND ID <= ?3 ORDER BY ID LIMIT ?4",
	[ST_MSG_EACH_CONTENT] = "SELECT ID, FromClient, Type, " MSG_SIZE
				", ContentPath, Content FROM messages WHERE "
				"ToClient = ?1 AND ID > ?2 AND ID <= ?3 "
				"ORDER BY ID LIMIT ?4",
	[ST_MSG_PATHS_UPTO] = "SELECT ContentPath FROM messages WHERE "
			      "ToClient = ?1 AND ID <= ?2 AND ContentPath IS "
			      "NOT NULL",
	[ST_MSG_SUM_UPTO] = "SELECT count(*), coalesce(sum(" MSG_SIZE
			    "), 0) FROM messages WHERE ToClient = ?1 AND ID <= "
			    "?2",
	[ST_MSG_DELETE_UPTO] = "DELETE FROM messages WHERE ToClient = ?1 AND "
			       "ID <= ?2",
	[ST_MSG_TOTALS] = "SELECT ToClient, count(*), sum(" MSG_SIZE
			  ") FROM messages GROUP BY ToClient",
	[ST_MSG_ALL_PATHS] = "SELECT ID, ContentPath FROM messages WHERE "
			     "ContentPath IS NOT NULL",
	[ST_MSG_DROP] = "DELETE FROM messages WHERE ID = ?1",
	[ST_MSG_DROP_PATH] = "DELETE FROM messages WHERE ContentPath = ?1",
	[ST_META_SET] = "INSERT OR REPLACE INTO bulwark_meta(Key, Value) "
			"VALUES(?1, ?2)",
#undef MSG_SIZE
};

/* Logs the connection's last error and turns it into an error value. */
int
store_db_err(sqlite3 *db, const char *what)
{
	int ext = sqlite3_extended_errcode(db);

	if ((ext & 0xff) == SQLITE_NOMEM)
		return BW_ENOMEM;
	bw_error("store: %s: %s (sqlite %d)", what, sqlite3_errmsg(db), ext);
	return BW_EDB;
}

/* Resets a statement after use and drops its bindings, so that no pointer
 * bound with SQLITE_STATIC (keys) outlives the call. */
void
store_done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

/* Runs a statement that returns no rows. */
int
store_run(struct sq_store *s, enum stmt_id id, const char *what)
{
	int rc = sqlite3_step(s->st[id]) == SQLITE_DONE
			 ? 0
			 : store_db_err(s->db, what);

	store_done(s->st[id]);
	return rc;
}

/* Runs a one-off statement at open that returns at most one integer; the
 * non-NULL strings of arg[3] are bound to ?1..?3. */
static int
prepare_all(struct sq_store *s, const char *name_col)
{
	char load[160], insert[192];
	const char *sql;
	int n, i;

	n = snprintf(load, sizeof load,
		     "SELECT ID, %s, PublicKey, LastSeen, AESKey, KeyIssued, "
		     "KeyUsed, TlsOnly FROM clients",
		     name_col);
	if (n < 0 || (size_t)n >= sizeof load)
		return BW_EDB;
	n = snprintf(insert, sizeof insert,
		     "INSERT INTO clients(ID, %s, PublicKey, LastSeen, AESKey, "
		     "KeyUsed) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
		     name_col);
	if (n < 0 || (size_t)n >= sizeof insert)
		return BW_EDB;
	for (i = 0; i < ST_N; i++) {
		if (i == ST_CLIENT_LOAD)
			sql = load;
		else if (i == ST_CLIENT_INSERT)
			sql = insert;
		else
			sql = fixed_sql[i];
		if (sqlite3_prepare_v3(s->db, sql, -1,
				       SQLITE_PREPARE_PERSISTENT, &s->st[i],
				       NULL) != SQLITE_OK)
			return store_db_err(s->db, sql);
	}
	return 0;
}

/* Creates a new database file readable by its owner only (it holds AES
 * keys); SQLite gives the -wal and -shm files the same mode. */
static int
create_private(const char *path)
{
	int fd, err;

	if (strcmp(path, ":memory:") == 0 || path[0] == '\0')
		return 0;
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd >= 0 && close(fd) == 0)
		return 0;
	err = errno;
	if (fd < 0 && err == EEXIST)
		return 0;
	bw_error("store: cannot create %s: %s", path, bw_strerror(-err));
	return -err;
}

/* The WAL holds every commit not yet checkpointed (a checkpoint syncs the
 * database file itself), so its fdatasync makes them all durable. Opened at
 * open time, on the owner's thread, so that sq_store_sync only syncs. */
static int
open_sync_fd(struct sq_store *s)
{
	const char *db = sqlite3_db_filename(s->db, "main");
	char path[4096 + 8];
	int n;

	if (db == NULL || db[0] == '\0')
		return 0; /* in memory: nothing to sync */
	n = snprintf(path, sizeof(path), "%s-wal", db);
	if (n < 0 || (size_t)n >= sizeof(path))
		return BW_ETOOBIG;
	s->sync_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (s->sync_fd < 0 && errno == ENOENT) /* not in WAL mode */
		s->sync_fd = open(db, O_RDONLY | O_CLOEXEC);
	return s->sync_fd < 0 ? -errno : 0;
}

int
sq_store_open(struct sq_store **out, const char *path)
{
	struct sq_store *s = NULL;
	const char *name_col = "Name";
	sqlite3_stmt *st = NULL;
	const unsigned char *mode;
	int rc, err;

	*out = NULL;
	if ((rc = create_private(path)) != 0)
		return rc;
	if ((s = calloc(1, sizeof *s)) == NULL)
		return BW_ENOMEM;
	s->sync_fd = -1;
	pthread_mutex_init(&s->db_mu, NULL);
	rc = sqlite3_open_v2(path, &s->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				     SQLITE_OPEN_NOMUTEX,
			     NULL);
	if (rc != SQLITE_OK) {
		if (s->db == NULL) {
			rc = BW_ENOMEM;
		} else if ((err = sqlite3_system_errno(s->db)) != 0) {
			bw_error("store: cannot open %s: %s", path,
				 bw_strerror(-err));
			rc = -err;
		} else {
			rc = store_db_err(s->db, "open");
		}
		goto out;
	}
	sqlite3_extended_result_codes(s->db, 1);
	sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
	if ((rc = store_exec(s->db, "PRAGMA foreign_keys = OFF")) != 0)
		goto out;

	/* Reading the journal mode is the first read of the file: a file that
	 * is not a database fails here. */
	if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st,
			       NULL) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW) {
		rc = store_db_err(s->db, path);
		goto out;
	}
	mode = sqlite3_column_text(st, 0);
	s->wal = mode != NULL && strcasecmp((const char *)mode, "wal") == 0;
	if (!s->wal)
		bw_warn("store: %s: journal mode is %s, not WAL", path,
			mode != NULL ? (const char *)mode : "unknown");
	sqlite3_finalize(st);
	st = NULL;

	if ((rc = store_exec(s->db, "PRAGMA synchronous = NORMAL")) != 0)
		goto out;
	/* The WAL starts over once a checkpoint has copied all of it, but
	 * its file keeps the size of its longest run: a burst while a
	 * checkpoint waited on the disk would hold that space for good. The
	 * first commit after a restart cuts it back to 8 MiB, twice what a
	 * checkpoint is asked for at (sqlite_meta.c's CKPT_PAGES of 4 KiB),
	 * so a steady load never pays for the cut. */
	if ((rc = store_exec(s->db, "PRAGMA journal_size_limit = 8388608")) !=
	    0)
		goto out;
	if ((rc = store_schema(s->db, &name_col)) != 0)
		goto out;
	if ((rc = prepare_all(s, name_col)) == 0 &&
	    (rc = store_msg_init(s)) == 0)
		rc = open_sync_fd(s);
out:
	sqlite3_finalize(st);
	if (rc != 0) {
		sq_store_close(s);
		return rc;
	}
	*out = s;
	return 0;
}

void
sq_store_close(struct sq_store *s)
{
	int i;

	if (s == NULL)
		return;
	if (s->sync_fd >= 0)
		close(s->sync_fd);
	/* before db: the last connection to close checkpoints, and it is
	 * the owner's, on the owner's thread, as the store ends */
	if (s->ckpt_db != NULL && sqlite3_close(s->ckpt_db) != SQLITE_OK)
		bw_error("store: close: %s", sqlite3_errmsg(s->ckpt_db));
	for (i = 0; i < ST_N; i++)
		sqlite3_finalize(s->st[i]);
	if (s->db != NULL && sqlite3_close(s->db) != SQLITE_OK)
		bw_error("store: close: %s", sqlite3_errmsg(s->db));
	pthread_mutex_destroy(&s->db_mu);
	free(s);
}

int
store_finish(struct sq_store *s, int rc)
{
	if (rc == 0)
		rc = store_run(s, ST_COMMIT, "commit");
	if (rc != 0 && !sqlite3_get_autocommit(s->db) &&
	    store_run(s, ST_ROLLBACK, "rollback") != 0)
		bw_error("store: rollback failed");
	return rc;
}

int
store_tx_begin(struct sq_store *s)
{
	int rc;

	if (s->in_tx || s->depth > 0)
		rc = store_run(s, ST_SAVEPOINT, "savepoint");
	else
		rc = store_run(s, ST_BEGIN, "begin");
	if (rc == 0)
		s->depth++;
	return rc;
}

int
store_tx_end(struct sq_store *s, int rc)
{
	if (s->depth == 0)
		return rc != 0 ? rc : BW_EDB;
	if (--s->depth > 0 || s->in_tx) {
		if (rc != 0 && store_run(s, ST_ROLLBACK_TO, "rollback to") != 0)
			bw_error("store: rollback to a savepoint failed");
		if (store_run(s, ST_RELEASE, "release") != 0 && rc == 0)
			rc = BW_EDB;
		return rc;
	}
	return store_finish(s, rc);
}

int
sq_store_sync(struct sq_store *s)
{
	if (s->sync_fd < 0)
		return 0;
	return fdatasync(s->sync_fd) == 0 ? 0 : -errno;
}

static int
wal_committed(void *arg, sqlite3 *db, const char *name, int pages)
{
	struct sq_store *s = arg;

	(void)db;
	(void)name;
	s->wal_pages = pages;
	/* the restart's commit, on a worker: small, and not the owner's */
	if (s->restarting)
		return SQLITE_OK;
	if (pages > 0 && (unsigned)pages >= s->ckpt_pages)
		s->ckpt_due(s->ckpt_arg);
	return SQLITE_OK;
}

int
sq_store_ckpt_open(struct sq_store *s, unsigned pages, void (*due)(void *arg),
		   void *arg)
{
	const char *path = sqlite3_db_filename(s->db, "main");
	int rc;

	if (!s->wal || s->sync_fd < 0 || path == NULL || path[0] == '\0' ||
	    s->ckpt_db != NULL)
		return 0;
	rc = sqlite3_open_v2(path, &s->ckpt_db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_extended_result_codes(s->ckpt_db, 1);
		sqlite3_busy_timeout(s->ckpt_db, BUSY_TIMEOUT_MS);
		/* the checkpoint's syncs are its connection's: the WAL before
		 * the copy, the file after it, as NORMAL does; and a first
		 * read, so that the connection has the WAL open */
		if ((rc = store_exec(s->ckpt_db,
				     "PRAGMA synchronous = NORMAL")) == 0 &&
		    (rc = store_exec(s->ckpt_db, "PRAGMA journal_size_limit "
						 "= 8388608")) == 0 &&
		    (rc = store_exec(s->ckpt_db,
				     "SELECT count(*) FROM sqlite_master")) ==
			    0) {
			s->ckpt_pages = pages > 0 ? pages : 1;
			s->ckpt_due = due;
			s->ckpt_arg = arg;
			/* replaces the automatic checkpoint */
			sqlite3_wal_hook(s->db, wal_committed, s);
			return 0;
		}
	} else {
		rc = s->ckpt_db != NULL ? store_db_err(s->ckpt_db, "open")
					: BW_ENOMEM;
	}
	sqlite3_close(s->ckpt_db);
	s->ckpt_db = NULL;
	return rc;
}

int
sq_store_checkpoint(struct sq_store *s, int *copied_pages)
{
	int rc;

	*copied_pages = 0;
	if (s->ckpt_db == NULL)
		return 0;
	rc = sqlite3_wal_checkpoint_v2(s->ckpt_db, "main",
				       SQLITE_CHECKPOINT_PASSIVE, NULL,
				       copied_pages);
	/* busy: another checkpoint was running; the next one goes on */
	if (rc == SQLITE_OK || (rc & 0xff) == SQLITE_BUSY)
		return 0;
	snprintf(s->ckpt_err, sizeof(s->ckpt_err), "%s (%d)",
		 sqlite3_errmsg(s->ckpt_db), rc);
	return BW_EDB;
}

int
sq_store_wal_restart(struct sq_store *s)
{
	int rc;

	if (s->ckpt_db == NULL)
		return 0;
	pthread_mutex_lock(&s->db_mu);
	if (!sqlite3_get_autocommit(s->db)) {
		/* not ours to commit: the owner's next commit restarts it */
		snprintf(s->ckpt_err, sizeof(s->ckpt_err),
			 "a transaction is open");
		pthread_mutex_unlock(&s->db_mu);
		return BW_EDB;
	}
	/* the owner's batches are held meanwhile: a writer from outside
	 * (none is ours) is not waited for */
	sqlite3_busy_timeout(s->db, 0);
	s->restarting = 1;
	/* a row whose value changes: an unchanged one writes no page */
	rc = sqlite3_exec(s->db,
			  "INSERT INTO bulwark_meta(Key, Value) "
			  "VALUES('wal_restarts', 1) ON CONFLICT(Key) DO "
			  "UPDATE SET Value = Value + 1",
			  NULL, NULL, NULL);
	s->restarting = 0;
	sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
	if (rc != SQLITE_OK)
		snprintf(s->ckpt_err, sizeof(s->ckpt_err), "%s (%d)",
			 sqlite3_errmsg(s->db), rc);
	pthread_mutex_unlock(&s->db_mu);
	return rc == SQLITE_OK ? 0 : BW_EDB;
}

void
sq_store_lock(struct sq_store *s)
{
	pthread_mutex_lock(&s->db_mu);
}

void
sq_store_unlock(struct sq_store *s)
{
	pthread_mutex_unlock(&s->db_mu);
}

int
sq_store_begin(struct sq_store *s)
{
	int rc;

	if (s->in_tx)
		return BW_EDB;
	if ((rc = store_run(s, ST_BEGIN, "begin")) != 0)
		return rc;
	s->in_tx = 1;
	return 0;
}

int
sq_store_rollback(struct sq_store *s, int rc)
{
	if (!s->in_tx)
		return rc;
	s->in_tx = 0;
	return store_finish(s, rc != 0 ? rc : BW_EDB);
}

int
sq_store_commit(struct sq_store *s)
{
	sqlite3_stmt *st = s->st[ST_META_SET];
	int rc = 0;

	if (!s->in_tx)
		return BW_EDB;
	s->in_tx = 0;
	if (s->msg_next != s->msg_kept) {
		if (sqlite3_bind_text(st, 1, "next_message_id", -1,
				      SQLITE_STATIC) != SQLITE_OK ||
		    sqlite3_bind_int64(st, 2, s->msg_next) != SQLITE_OK)
			rc = BW_EDB;
		if (rc == 0)
			rc = store_run(s, ST_META_SET, "next message id");
		else
			store_done(st);
	}
	if ((rc = store_finish(s, rc)) == 0)
		s->msg_kept = s->msg_next;
	return rc;
}
