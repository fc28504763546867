/* The SQLite backend's schema: the tables created if missing, and a
 * database made elsewhere (the spec's columns only, another messenger's
 * names, no unique indexes) brought up to what every statement needs, in one
 * transaction, the version recorded. A database newer than this code is
 * refused.
 */
#include <stdio.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "store/sqlite/sqlite_int.h"

#define SCHEMA_VERSION 1

static const char schema_sql[] =
	/* the spec's columns first; ours (also added to older databases by
	 * migrate()) after them */
	"CREATE TABLE IF NOT EXISTS clients("
	"ID BLOB(16) PRIMARY KEY, Name TEXT UNIQUE NOT NULL, "
	"PublicKey BLOB(160), LastSeen TEXT, AESKey BLOB(16), "
	"KeyIssued INTEGER, KeyUsed INTEGER NOT NULL DEFAULT 0, "
	"TlsOnly INTEGER NOT NULL DEFAULT 0);"
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
	/* ours: a client's row at a path (every upload replaces it) */
	"CREATE INDEX IF NOT EXISTS files_path ON files(ID, PathName);"
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
	/* its owner asked that its id be refused on the plain listeners */
	{"clients", "TlsOnly",
	 "ALTER TABLE clients ADD COLUMN TlsOnly INTEGER NOT NULL DEFAULT 0"},
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

int
store_exec(sqlite3 *db, const char *sql)
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
			if ((rc = store_exec(db, added_columns[i].sql)) != 0)
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
		rc = store_exec(db, "CREATE UNIQUE INDEX IF NOT EXISTS "
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
		if (store_exec(db,
			       "CREATE UNIQUE INDEX IF NOT EXISTS clients_id "
			       "ON clients(ID)") != 0)
			bw_warn("store: clients.ID is not unique");
	}
	if ((rc = has_unique(db, "clients", *name_col, NULL, &found)) != 0)
		return rc;
	if (!found) {
		bw_warn("store: clients has no key on %s; adding one",
			*name_col);
		rc = store_exec(db,
				strcmp(*name_col, "Name") == 0
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
int
store_schema(sqlite3 *db, const char **name_col)
{
	int64_t version;
	int rc;

	if ((rc = store_exec(db, "BEGIN IMMEDIATE")) != 0)
		return rc;
	if ((rc = query_int(db, "PRAGMA user_version", NULL, &version)) != 0)
		goto out;
	if (version > SCHEMA_VERSION || version < 0) {
		bw_error("store: database schema version %lld is not supported",
			 (long long)version);
		rc = BW_EDB;
		goto out;
	}
	if ((rc = store_exec(db, schema_sql)) != 0)
		goto out;
	if ((rc = migrate(db, name_col)) != 0)
		goto out;
	if (version == 0 &&
	    (rc = store_exec(db, "PRAGMA user_version = 1")) != 0)
		goto out;
	rc = store_exec(db, "COMMIT");
out:
	if (rc != 0)
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}
