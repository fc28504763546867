/* The SQLite store behind store.h: opening and migrating defensive.db and
 * preparing every statement once; running statements and transactions for
 * the table files (clients.c, files.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "host/sqlite/store_int.h"

#define SCHEMA_VERSION	1
#define BUSY_TIMEOUT_MS 5000

/* Statements whose text does not depend on the database found at open; the
 * two that name the clients' name column are built in prepare_all(). */
static const char *const fixed_sql[ST_N] = {
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_CLIENT_SET_KEYS] = "UPDATE clients SET PublicKey = "
			       "coalesce(?2, PublicKey), AESKey = ?3, "
			       "LastSeen = ?4 WHERE ID = ?1",
	[ST_CLIENT_SET_KEY] = "UPDATE clients SET PublicKey = "
			      "coalesce(?2, PublicKey), AESKey = ?3, "
			      "KeyIssued = ?4, KeyUsed = ?5, LastSeen = ?6 "
			      "WHERE ID = ?1",
	[ST_CLIENT_TOUCH] = "UPDATE clients SET LastSeen = ?2 WHERE ID = ?1",
	[ST_FILE_LOAD] = "SELECT ID, FileName, PathName, Verified, "
			 "PendingName, PendingPath FROM files",
	[ST_FILE_DROP_SAME_PATH] = "DELETE FROM files WHERE ID = ?1 AND "
				   "PathName = ?2 AND FileName <> ?3",
	[ST_FILE_UPSERT] = "INSERT INTO files(ID, FileName, PathName, "
			   "Verified) VALUES(?1, ?2, ?3, 0) "
			   "ON CONFLICT(ID, FileName) DO UPDATE SET "
			   "PathName = excluded.PathName, Verified = 0",
	[ST_FILE_SET_VERIFIED] = "UPDATE files SET Verified = ?3 "
				 "WHERE ID = ?1 AND FileName = ?2",
	[ST_FILE_DELETE] = "DELETE FROM files WHERE ID = ?1 AND FileName = ?2",
	[ST_FILE_DROP_PATH] = "DELETE FROM files WHERE ID = ?1 AND "
			      "(PathName = ?2 OR FileName = ?3)",
	[ST_FILE_INSERT] = "INSERT INTO files(ID, FileName, PathName, "
			   "Verified, PendingName, PendingPath) "
			   "VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
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
	[ST_META_SET] = "INSERT OR REPLACE INTO bulwark_meta(Key, Value) "
			"VALUES(?1, ?2)",
#undef MSG_SIZE
};

static const char schema_sql[] =
	/* the spec's columns first; ours (also added to older databases by
	 * migrate()) after them */
	"CREATE TABLE IF NOT EXISTS clients("
	"ID BLOB(16) PRIMARY KEY, Name TEXT UNIQUE NOT NULL, "
	"PublicKey BLOB(160), LastSeen TEXT, AESKey BLOB(16), "
	"KeyIssued INTEGER, KeyUsed INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE IF NOT EXISTS files("
	"ID BLOB(16) NOT NULL, FileName TEXT NOT NULL, PathName TEXT NOT NULL, "
	"Verified BOOLEAN NOT NULL DEFAULT 0, PendingName TEXT, "
	"PendingPath TEXT, PRIMARY KEY(ID, FileName));"
	"CREATE TABLE IF NOT EXISTS messages("
	"ID INTEGER PRIMARY KEY AUTOINCREMENT, ToClient BLOB(16) NOT NULL, "
	"FromClient BLOB(16) NOT NULL, Type INTEGER NOT NULL, Content BLOB, "
	"ContentSize INTEGER, ContentPath TEXT);"
	/* ours: a recipient's queue in id order, and the last message id */
	"CREATE INDEX IF NOT EXISTS messages_to ON messages(ToClient, ID);"
	"CREATE TABLE IF NOT EXISTS bulwark_meta(Key TEXT PRIMARY KEY, "
	"Value INTEGER);";

/* Columns an existing database made elsewhere may lack; added if missing so
 * every statement prepares. Rows already there get NULL (or 0). */
static const struct {
	const char *table;
	const char *column;
	const char *sql;
} added_columns[] = {
	{"clients", "PublicKey",
	 "ALTER TABLE clients ADD COLUMN PublicKey BLOB(160)"},
	{"clients", "LastSeen", "ALTER TABLE clients ADD COLUMN LastSeen TEXT"},
	{"clients", "AESKey", "ALTER TABLE clients ADD COLUMN AESKey BLOB(16)"},
	{"files", "Verified",
	 "ALTER TABLE files ADD COLUMN Verified BOOLEAN NOT NULL DEFAULT 0"},
	/* ours, beyond the spec: key hygiene and pending replacements */
	{"clients", "KeyIssued",
	 "ALTER TABLE clients ADD COLUMN KeyIssued INTEGER"},
	{"clients", "KeyUsed",
	 "ALTER TABLE clients ADD COLUMN KeyUsed INTEGER NOT NULL DEFAULT 0"},
	{"files", "PendingName",
	 "ALTER TABLE files ADD COLUMN PendingName TEXT"},
	{"files", "PendingPath",
	 "ALTER TABLE files ADD COLUMN PendingPath TEXT"},
	/* a large message's content lives in a file beside the database */
	{"messages", "ContentSize",
	 "ALTER TABLE messages ADD COLUMN ContentSize INTEGER"},
	{"messages", "ContentPath",
	 "ALTER TABLE messages ADD COLUMN ContentPath TEXT"},
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
store_run(struct bw_store *s, enum stmt_id id, const char *what)
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
query_int(sqlite3 *db, const char *sql, const char *const arg[3], int64_t *out)
{
	sqlite3_stmt *st = NULL;
	int rc, i;

	*out = 0;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		return store_db_err(db, "prepare");
	for (i = 0; arg != NULL && i < 3; i++) {
		if (arg[i] != NULL &&
		    sqlite3_bind_text(st, i + 1, arg[i], -1, SQLITE_STATIC) !=
			    SQLITE_OK) {
			rc = store_db_err(db, "bind");
			goto out;
		}
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(st, 0);
		rc = 0;
	} else if (rc == SQLITE_DONE) {
		rc = 0;
	} else {
		rc = store_db_err(db, sql);
	}
out:
	sqlite3_finalize(st);
	return rc;
}

static int
exec(sqlite3 *db, const char *sql)
{
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
		return store_db_err(db, sql);
	return 0;
}

static int
has_column(sqlite3 *db, const char *table, const char *column, int *found)
{
	const char *const arg[3] = {table, column, NULL};
	int64_t n;
	int rc = query_int(db,
			   "SELECT count(*) FROM pragma_table_info(?1) "
			   "WHERE name = ?2 COLLATE NOCASE",
			   arg, &n);

	*found = n > 0;
	return rc;
}

/* Whether table has a unique index on exactly column (and column2, if not
 * NULL): a PRIMARY KEY or UNIQUE constraint, or a unique index. */
static int
has_unique(sqlite3 *db, const char *table, const char *column,
	   const char *column2, int *found)
{
	const char *const arg[3] = {table, column, column2};
	int64_t n;
	int rc = query_int(
		db,
		"SELECT count(*) FROM pragma_index_list(?1) AS il "
		"WHERE il.\"unique\" AND "
		"(SELECT count(*) FROM pragma_index_info(il.name)) = "
		"(CASE WHEN ?3 IS NULL THEN 1 ELSE 2 END) AND "
		"(SELECT count(*) FROM pragma_index_info(il.name) AS ii "
		"WHERE ii.name = ?2 COLLATE NOCASE OR "
		"ii.name = ?3 COLLATE NOCASE) = "
		"(CASE WHEN ?3 IS NULL THEN 1 ELSE 2 END)",
		arg, &n);

	*found = n > 0;
	return rc;
}

/* Brings tables made by another implementation of the spec up to what the
 * statements need, and finds the clients' name column (Name, or UserName in
 * some messenger databases). Runs inside the open transaction. */
static int
migrate(sqlite3 *db, const char **name_col)
{
	int found, rc;
	size_t i;

	for (i = 0; i < sizeof added_columns / sizeof added_columns[0]; i++) {
		rc = has_column(db, added_columns[i].table,
				added_columns[i].column, &found);
		if (rc != 0)
			return rc;
		if (!found) {
			bw_warn("store: adding missing column %s.%s",
				added_columns[i].table,
				added_columns[i].column);
			if ((rc = exec(db, added_columns[i].sql)) != 0)
				return rc;
		}
	}
	if ((rc = has_column(db, "clients", "ID", &found)) != 0)
		return rc;
	if (!found)
		goto bad;
	if ((rc = has_column(db, "files", "ID", &found)) != 0)
		return rc;
	if (!found)
		goto bad;
	if ((rc = has_column(db, "files", "FileName", &found)) != 0)
		return rc;
	if (!found)
		goto bad;
	if ((rc = has_column(db, "files", "PathName", &found)) != 0)
		return rc;
	if (!found)
		goto bad;
	for (i = 0; i < 4; i++) {
		static const char *const mcols[] = {"ToClient", "FromClient",
						    "Type", "Content"};

		if ((rc = has_column(db, "messages", mcols[i], &found)) != 0)
			return rc;
		if (!found)
			goto bad;
	}
	*name_col = "Name";
	if ((rc = has_column(db, "clients", "Name", &found)) != 0)
		return rc;
	if (!found) {
		*name_col = "UserName";
		if ((rc = has_column(db, "clients", "UserName", &found)) != 0)
			return rc;
		if (!found)
			goto bad;
	}

	/* The upsert names (ID, FileName) as its conflict target, so that pair
	 * must be unique; without it the database cannot be used. */
	if ((rc = has_unique(db, "files", "ID", "FileName", &found)) != 0)
		return rc;
	if (!found) {
		bw_warn("store: files has no key on (ID, FileName); adding "
			"one");
		rc = exec(db, "CREATE UNIQUE INDEX IF NOT EXISTS "
			      "files_id_filename ON files(ID, FileName)");
		if (rc != 0)
			return rc;
	}
	/* Unique ids and names are what makes insert answer BW_EEXIST; an old
	 * database that already holds duplicates still loads. */
	if ((rc = has_unique(db, "clients", "ID", NULL, &found)) != 0)
		return rc;
	if (!found) {
		bw_warn("store: clients has no key on ID; adding one");
		if (exec(db, "CREATE UNIQUE INDEX IF NOT EXISTS clients_id "
			     "ON clients(ID)") != 0)
			bw_warn("store: clients.ID is not unique");
	}
	if ((rc = has_unique(db, "clients", *name_col, NULL, &found)) != 0)
		return rc;
	if (!found) {
		bw_warn("store: clients has no key on %s; adding one",
			*name_col);
		rc = exec(db, strcmp(*name_col, "Name") == 0
				      ? "CREATE UNIQUE INDEX IF NOT EXISTS "
					"clients_name ON clients(Name)"
				      : "CREATE UNIQUE INDEX IF NOT EXISTS "
					"clients_name ON clients(UserName)");
		if (rc != 0)
			bw_warn("store: clients' names are not unique");
	}
	return 0;
bad:
	bw_error("store: the clients, files or messages table lacks a "
		 "required column");
	return BW_EDB;
}

/* Creates the schema if absent, checks the version and migrates, all in one
 * transaction so two processes opening a new database do not race. */
static int
setup_schema(sqlite3 *db, const char **name_col)
{
	int64_t version;
	int rc;

	if ((rc = exec(db, "BEGIN IMMEDIATE")) != 0)
		return rc;
	if ((rc = query_int(db, "PRAGMA user_version", NULL, &version)) != 0)
		goto out;
	if (version > SCHEMA_VERSION || version < 0) {
		bw_error("store: database schema version %lld is not supported",
			 (long long)version);
		rc = BW_EDB;
		goto out;
	}
	if ((rc = exec(db, schema_sql)) != 0)
		goto out;
	if ((rc = migrate(db, name_col)) != 0)
		goto out;
	if (version == 0 && (rc = exec(db, "PRAGMA user_version = 1")) != 0)
		goto out;
	rc = exec(db, "COMMIT");
out:
	if (rc != 0)
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}

static int
prepare_all(struct bw_store *s, const char *name_col)
{
	char load[160], insert[192];
	const char *sql;
	int n, i;

	n = snprintf(load, sizeof load,
		     "SELECT ID, %s, PublicKey, LastSeen, AESKey, KeyIssued, "
		     "KeyUsed FROM clients",
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
 * open time, on the owner's thread, so that bw_store_sync only syncs. */
static int
open_sync_fd(struct bw_store *s)
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
bw_store_open(struct bw_store **out, const char *path)
{
	struct bw_store *s = NULL;
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
	if ((rc = exec(s->db, "PRAGMA foreign_keys = OFF")) != 0)
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
	if (mode == NULL || strcasecmp((const char *)mode, "wal") != 0)
		bw_warn("store: %s: journal mode is %s, not WAL", path,
			mode != NULL ? (const char *)mode : "unknown");
	sqlite3_finalize(st);
	st = NULL;

	if ((rc = exec(s->db, "PRAGMA synchronous = NORMAL")) != 0)
		goto out;
	if ((rc = setup_schema(s->db, &name_col)) != 0)
		goto out;
	if ((rc = prepare_all(s, name_col)) == 0 &&
	    (rc = store_msg_init(s)) == 0)
		rc = open_sync_fd(s);
out:
	sqlite3_finalize(st);
	if (rc != 0) {
		bw_store_close(s);
		return rc;
	}
	*out = s;
	return 0;
}

void
bw_store_close(struct bw_store *s)
{
	int i;

	if (s == NULL)
		return;
	if (s->sync_fd >= 0)
		close(s->sync_fd);
	for (i = 0; i < ST_N; i++)
		sqlite3_finalize(s->st[i]);
	if (s->db != NULL && sqlite3_close(s->db) != SQLITE_OK)
		bw_error("store: close: %s", sqlite3_errmsg(s->db));
	free(s);
}

int
store_finish(struct bw_store *s, int rc)
{
	if (rc == 0)
		rc = store_run(s, ST_COMMIT, "commit");
	if (rc != 0 && !sqlite3_get_autocommit(s->db) &&
	    store_run(s, ST_ROLLBACK, "rollback") != 0)
		bw_error("store: rollback failed");
	return rc;
}

int
bw_store_sync(struct bw_store *s)
{
	if (s->sync_fd < 0)
		return 0;
	return fdatasync(s->sync_fd) == 0 ? 0 : -errno;
}

int
bw_store_begin(struct bw_store *s)
{
	int rc;

	if (s->in_tx)
		return BW_EDB;
	if ((rc = store_run(s, ST_BEGIN, "begin")) != 0)
		return rc;
	s->in_tx = 1;
	s->msg_next_saved = s->msg_next;
	return 0;
}

int
bw_store_commit(struct bw_store *s)
{
	sqlite3_stmt *st = s->st[ST_META_SET];
	int rc = 0;

	if (!s->in_tx)
		return BW_EDB;
	s->in_tx = 0;
	if (s->msg_next != s->msg_next_saved) {
		if (sqlite3_bind_text(st, 1, "next_message_id", -1,
				      SQLITE_STATIC) != SQLITE_OK ||
		    sqlite3_bind_int64(st, 2, s->msg_next) != SQLITE_OK)
			rc = BW_EDB;
		if (rc == 0)
			rc = store_run(s, ST_META_SET, "next message id");
		else
			store_done(st);
	}
	rc = store_finish(s, rc);
	if (rc != 0)
		s->msg_next = s->msg_next_saved;
	return rc;
}
