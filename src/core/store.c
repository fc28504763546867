/* The SQLite store behind store.h: opening and migrating defensive.db, the
 * clients and files tables, every statement prepared once at open. The only
 * file that includes sqlite3.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/store.h"

#define SCHEMA_VERSION	1
#define BUSY_TIMEOUT_MS 5000
#define TIME_TEXT_LEN	19 /* "YYYY-MM-DD HH:MM:SS" */

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
	ST_N
};

struct bw_store {
	sqlite3 *db;
	sqlite3_stmt *st[ST_N];
};

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
};

static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS clients("
	"ID BLOB(16) PRIMARY KEY, Name TEXT UNIQUE NOT NULL, "
	"PublicKey BLOB(160), LastSeen TEXT, AESKey BLOB(16));"
	"CREATE TABLE IF NOT EXISTS files("
	"ID BLOB(16) NOT NULL, FileName TEXT NOT NULL, PathName TEXT NOT NULL, "
	"Verified BOOLEAN NOT NULL DEFAULT 0, PRIMARY KEY(ID, FileName));"
	"CREATE TABLE IF NOT EXISTS messages("
	"ID INTEGER PRIMARY KEY AUTOINCREMENT, ToClient BLOB(16) NOT NULL, "
	"FromClient BLOB(16) NOT NULL, Type INTEGER NOT NULL, Content BLOB);";

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
};

/* Logs the connection's last error and turns it into an error value. */
static int
db_err(sqlite3 *db, const char *what)
{
	int ext = sqlite3_extended_errcode(db);

	if ((ext & 0xff) == SQLITE_NOMEM)
		return BW_ENOMEM;
	bw_error("store: %s: %s (sqlite %d)", what, sqlite3_errmsg(db), ext);
	return BW_EDB;
}

/* Resets a statement after use and drops its bindings, so that no pointer
 * bound with SQLITE_STATIC (keys) outlives the call. */
static void
done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

/* Runs a statement that returns no rows. */
static int
run(struct bw_store *s, enum stmt_id id, const char *what)
{
	int rc = sqlite3_step(s->st[id]) == SQLITE_DONE ? 0
							: db_err(s->db, what);

	done(s->st[id]);
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
		return db_err(db, "prepare");
	for (i = 0; arg != NULL && i < 3; i++) {
		if (arg[i] != NULL &&
		    sqlite3_bind_text(st, i + 1, arg[i], -1, SQLITE_STATIC) !=
			    SQLITE_OK) {
			rc = db_err(db, "bind");
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
		rc = db_err(db, sql);
	}
out:
	sqlite3_finalize(st);
	return rc;
}

static int
exec(sqlite3 *db, const char *sql)
{
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
		return db_err(db, sql);
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
	bw_error("store: the clients or files table lacks a required column");
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
	char load[160], insert[160];
	const char *sql;
	int n, i;

	n = snprintf(load, sizeof load,
		     "SELECT ID, %s, PublicKey, LastSeen, AESKey, KeyIssued, "
		     "KeyUsed FROM clients",
		     name_col);
	if (n < 0 || (size_t)n >= sizeof load)
		return BW_EDB;
	n = snprintf(insert, sizeof insert,
		     "INSERT INTO clients(ID, %s, PublicKey, LastSeen, AESKey) "
		     "VALUES(?1, ?2, ?3, ?4, ?5)",
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
			return db_err(s->db, sql);
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
			rc = db_err(s->db, "open");
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
		rc = db_err(s->db, path);
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
	rc = prepare_all(s, name_col);
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
	for (i = 0; i < ST_N; i++)
		sqlite3_finalize(s->st[i]);
	if (s->db != NULL && sqlite3_close(s->db) != SQLITE_OK)
		bw_error("store: close: %s", sqlite3_errmsg(s->db));
	free(s);
}

/* ---- LastSeen: int64 Unix seconds <-> 'YYYY-MM-DD HH:MM:SS' UTC ---- */

/* Formats t into buf[TIME_TEXT_LEN + 1]; BW_ECONFIG if the year does not
 * have four digits. */
static int
format_time(int64_t t, char *buf, size_t cap)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if ((int64_t)tt != t || gmtime_r(&tt, &tm) == NULL ||
	    tm.tm_year < -1900 || tm.tm_year > 9999 - 1900)
		return BW_ECONFIG;
	if (strftime(buf, cap, "%Y-%m-%d %H:%M:%S", &tm) != TIME_TEXT_LEN)
		return BW_ECONFIG;
	return 0;
}

/* Reads n decimal digits at *p, advancing it; -1 if they are not there. */
static int
digits(const unsigned char **p, const unsigned char *end, int n)
{
	int v = 0;

	if (end - *p < n)
		return -1;
	while (n-- > 0) {
		if (**p < '0' || **p > '9')
			return -1;
		v = v * 10 + (**p - '0');
		(*p)++;
	}
	return v;
}

/* Consumes one character of set at *p; 0 if it is there, else -1. */
static int
expect(const unsigned char **p, const unsigned char *end, const char *set)
{
	if (*p == end || **p == '\0' || strchr(set, **p) == NULL)
		return -1;
	(*p)++;
	return 0;
}

/* Parses what SQLite's date functions write and accept: 'YYYY-MM-DD HH:MM'
 * with optional ':SS' and fraction, 'T' for the space, and an optional 'Z'
 * or +-HH:MM zone. Returns 0 and sets *out, or -1. */
static int
parse_time(const unsigned char *p, size_t len, int64_t *out)
{
	const unsigned char *end = p + len;
	struct tm tm = {0};
	int y, mo, d, h, mi, sec = 0, zh = 0, zm = 0, sign = 0;

	if ((y = digits(&p, end, 4)) < 0 || expect(&p, end, "-") != 0 ||
	    (mo = digits(&p, end, 2)) < 0 || expect(&p, end, "-") != 0 ||
	    (d = digits(&p, end, 2)) < 0 || expect(&p, end, " T") != 0 ||
	    (h = digits(&p, end, 2)) < 0 || expect(&p, end, ":") != 0 ||
	    (mi = digits(&p, end, 2)) < 0)
		return -1;
	if (expect(&p, end, ":") == 0) {
		if ((sec = digits(&p, end, 2)) < 0)
			return -1;
		if (expect(&p, end, ".") == 0) {
			while (p != end && *p >= '0' && *p <= '9')
				p++;
		}
	}
	if (p != end && (*p == '+' || *p == '-')) {
		sign = *p++ == '+' ? 1 : -1;
		if ((zh = digits(&p, end, 2)) < 0)
			return -1;
		(void)expect(&p, end, ":");
		if ((zm = digits(&p, end, 2)) < 0)
			return -1;
	} else {
		(void)expect(&p, end, "Z");
	}
	if (p != end || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 ||
	    mi > 59 || sec > 60 || zh > 23 || zm > 59)
		return -1;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	*out = (int64_t)timegm(&tm) - sign * (zh * 3600 + zm * 60);
	return 0;
}

/* LastSeen as written by us (text), or by other implementations: Unix
 * seconds as an integer, a Julian day as a real, or any text parse_time()
 * reads. Returns -1 for a value it cannot read. */
static int
column_time(sqlite3_stmt *st, int col, int64_t *out)
{
	const unsigned char *text;
	double jd;

	*out = 0;
	switch (sqlite3_column_type(st, col)) {
	case SQLITE_NULL:
		return 0;
	case SQLITE_INTEGER:
		*out = sqlite3_column_int64(st, col);
		return 0;
	case SQLITE_FLOAT:
		jd = sqlite3_column_double(st, col);
		if (jd >= 1721059.5 && jd < 5373484.5) /* years 0 to 9999 */
			*out = (int64_t)((jd - 2440587.5) * 86400.0);
		else if (jd >= 0 && jd < 253402300800.0)
			*out = (int64_t)jd;
		else
			return -1;
		return 0;
	default:
		text = sqlite3_column_text(st, col);
		if (text == NULL)
			return -1;
		/* Text padded with NULs (fixed-size fields) ends at the first.
		 */
		return parse_time(
			text,
			strnlen((const char *)text,
				(size_t)sqlite3_column_bytes(st, col)),
			out);
	}
}

/* Binds LastSeen: NULL for 0, else the UTC text. buf must outlive the step. */
static int
bind_time(sqlite3_stmt *st, int idx, int64_t t, char *buf, size_t cap)
{
	int rc;

	if (t == 0)
		return sqlite3_bind_null(st, idx) == SQLITE_OK ? 0 : BW_EDB;
	if ((rc = format_time(t, buf, cap)) != 0)
		return rc;
	return sqlite3_bind_text(st, idx, buf, TIME_TEXT_LEN, SQLITE_STATIC) ==
			       SQLITE_OK
		       ? 0
		       : BW_EDB;
}

/* ---- loading ---- */

/* Copies a text (or blob) column into out[cap] up to its first NUL; -1 if it
 * is NULL or does not fit. */
static int
column_str(sqlite3_stmt *st, int col, char *out, size_t cap)
{
	const unsigned char *p;
	size_t n;

	if (sqlite3_column_type(st, col) == SQLITE_NULL)
		return -1;
	if ((p = sqlite3_column_text(st, col)) == NULL)
		return -1;
	n = strnlen((const char *)p, (size_t)sqlite3_column_bytes(st, col));
	if (n >= cap)
		return -1;
	memcpy(out, p, n);
	out[n] = '\0';
	return 0;
}

static int
column_id(sqlite3_stmt *st, int col, uint8_t out[BW_ID_LEN])
{
	const void *p;

	if (sqlite3_column_type(st, col) != SQLITE_BLOB ||
	    sqlite3_column_bytes(st, col) != BW_ID_LEN ||
	    (p = sqlite3_column_blob(st, col)) == NULL)
		return -1;
	memcpy(out, p, BW_ID_LEN);
	return 0;
}

/* A key column: NULL (or empty) is no key; a blob of at most cap bytes is
 * copied and zero-padded when exact is 0; anything else is -1. */
static int
column_key(sqlite3_stmt *st, int col, uint8_t *out, size_t cap, int exact,
	   int *has)
{
	const void *p;
	size_t n;

	*has = 0;
	memset(out, 0, cap);
	if (sqlite3_column_type(st, col) == SQLITE_NULL)
		return 0;
	if (sqlite3_column_type(st, col) != SQLITE_BLOB)
		return -1;
	p = sqlite3_column_blob(st, col);
	n = (size_t)sqlite3_column_bytes(st, col);
	if (n == 0)
		return 0;
	if (p == NULL || n > cap || (exact && n != cap))
		return -1;
	memcpy(out, p, n);
	*has = 1;
	return 0;
}

/* Verified as 0/1, or booleans written as text by other implementations. */
static int
column_bool(sqlite3_stmt *st, int col)
{
	const unsigned char *text;

	if (sqlite3_column_type(st, col) == SQLITE_TEXT) {
		text = sqlite3_column_text(st, col);
		return text != NULL &&
		       (strcasecmp((const char *)text, "true") == 0 ||
			strcmp((const char *)text, "1") == 0);
	}
	return sqlite3_column_int64(st, col) != 0;
}

int
bw_store_load_clients(struct bw_store *s, bw_store_client_cb cb, void *arg)
{
	sqlite3_stmt *st = s->st[ST_CLIENT_LOAD];
	struct bw_client_rec c;
	unsigned skipped = 0, bad_time = 0;
	int rc, step;

	memset(&c, 0, sizeof c);
	rc = 0;
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		memset(&c, 0, sizeof c);
		if (column_id(st, 0, c.id) != 0 ||
		    column_str(st, 1, c.name, sizeof c.name) != 0 ||
		    column_key(st, 2, c.pubkey, sizeof c.pubkey, 0,
			       &c.has_pubkey) != 0 ||
		    column_key(st, 4, c.aes_key, sizeof c.aes_key, 1,
			       &c.has_aes) != 0) {
			skipped++;
			continue;
		}
		if (column_time(st, 3, &c.last_seen) != 0)
			bad_time++;
		c.key_issued = sqlite3_column_int64(st, 5);
		c.key_used = sqlite3_column_int64(st, 6) != 0;
		if ((rc = cb(arg, &c)) != 0)
			break;
	}
	if (rc == 0 && step != SQLITE_DONE)
		rc = db_err(s->db, "load clients");
	done(st);
	bw_wipe(&c, sizeof c);
	if (skipped > 0)
		bw_warn("store: skipped %u unreadable clients row(s)", skipped);
	if (bad_time > 0)
		bw_warn("store: %u LastSeen value(s) not understood, read as "
			"never",
			bad_time);
	return rc;
}

int
bw_store_load_files(struct bw_store *s, bw_store_file_cb cb, void *arg)
{
	sqlite3_stmt *st = s->st[ST_FILE_LOAD];
	struct bw_file_rec f;
	unsigned skipped = 0;
	int rc = 0, step;

	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		memset(&f, 0, sizeof f);
		if (column_id(st, 0, f.client_id) != 0 ||
		    column_str(st, 1, f.file_name, sizeof f.file_name) != 0 ||
		    column_str(st, 2, f.path_name, sizeof f.path_name) != 0) {
			skipped++;
			continue;
		}
		f.verified = column_bool(st, 3);
		if (column_str(st, 4, f.pending_name, sizeof f.pending_name) !=
			    0 ||
		    column_str(st, 5, f.pending_path, sizeof f.pending_path) !=
			    0)
			f.pending_name[0] = f.pending_path[0] = '\0';
		if ((rc = cb(arg, &f)) != 0)
			break;
	}
	if (rc == 0 && step != SQLITE_DONE)
		rc = db_err(s->db, "load files");
	done(st);
	if (skipped > 0)
		bw_warn("store: skipped %u unreadable files row(s)", skipped);
	return rc;
}

/* ---- clients ---- */

/* Binds a NUL-terminated string held in a char[cap]; BW_ETOOBIG if the
 * array holds no NUL. */
static int
bind_str(sqlite3_stmt *st, int idx, const char *str, size_t cap)
{
	size_t n = strnlen(str, cap);

	if (n >= cap)
		return BW_ETOOBIG;
	return sqlite3_bind_text(st, idx, str, (int)n, SQLITE_STATIC) ==
			       SQLITE_OK
		       ? 0
		       : BW_EDB;
}

static int
bind_blob(sqlite3_stmt *st, int idx, const void *p, int n)
{
	if (p == NULL)
		return sqlite3_bind_null(st, idx) == SQLITE_OK ? 0 : BW_EDB;
	return sqlite3_bind_blob(st, idx, p, n, SQLITE_STATIC) == SQLITE_OK
		       ? 0
		       : BW_EDB;
}

int
bw_store_client_insert(struct bw_store *s, const struct bw_client_rec *c)
{
	sqlite3_stmt *st = s->st[ST_CLIENT_INSERT];
	char when[TIME_TEXT_LEN + 1];
	int rc, ext;

	if ((rc = bind_blob(st, 1, c->id, BW_ID_LEN)) != 0 ||
	    (rc = bind_str(st, 2, c->name, sizeof c->name)) != 0 ||
	    (rc = bind_blob(st, 3, c->has_pubkey ? c->pubkey : NULL,
			    BW_RSA_PUB_LEN)) != 0 ||
	    (rc = bind_time(st, 4, c->last_seen, when, sizeof when)) != 0 ||
	    (rc = bind_blob(st, 5, c->has_aes ? c->aes_key : NULL,
			    BW_AES_KEY_LEN)) != 0)
		goto out;
	if (sqlite3_step(st) != SQLITE_DONE) {
		ext = sqlite3_extended_errcode(s->db);
		if (ext == SQLITE_CONSTRAINT_UNIQUE ||
		    ext == SQLITE_CONSTRAINT_PRIMARYKEY)
			rc = BW_EEXIST;
		else
			rc = db_err(s->db, "insert client");
	}
out:
	done(st);
	return rc;
}

/* Runs an UPDATE or DELETE whose parameters are bound: BW_ENOTFOUND if it
 * changed no row. */
static int
run_change(struct bw_store *s, enum stmt_id id, const char *what)
{
	int rc = run(s, id, what);

	if (rc == 0 && sqlite3_changes(s->db) == 0)
		rc = BW_ENOTFOUND;
	return rc;
}

int
bw_store_client_set_keys(struct bw_store *s, const uint8_t id[BW_ID_LEN],
			 const uint8_t *pubkey,
			 const uint8_t aes_key[BW_AES_KEY_LEN],
			 int64_t last_seen)
{
	sqlite3_stmt *st = s->st[ST_CLIENT_SET_KEYS];
	char when[TIME_TEXT_LEN + 1];
	int rc;

	if (aes_key == NULL)
		return BW_ECONFIG;
	if ((rc = bind_blob(st, 1, id, BW_ID_LEN)) != 0 ||
	    (rc = bind_blob(st, 2, pubkey, BW_RSA_PUB_LEN)) != 0 ||
	    (rc = bind_blob(st, 3, aes_key, BW_AES_KEY_LEN)) != 0 ||
	    (rc = bind_time(st, 4, last_seen, when, sizeof when)) != 0) {
		done(st);
		return rc;
	}
	return run_change(s, ST_CLIENT_SET_KEYS, "set keys");
}

int
bw_store_client_set_key(struct bw_store *s, const uint8_t id[BW_ID_LEN],
			const uint8_t *pubkey, const uint8_t *aes_key,
			int64_t issued, int used, int64_t last_seen)
{
	sqlite3_stmt *st = s->st[ST_CLIENT_SET_KEY];
	char when[TIME_TEXT_LEN + 1];
	int rc;

	if ((rc = bind_blob(st, 1, id, BW_ID_LEN)) != 0 ||
	    (rc = bind_blob(st, 2, pubkey, BW_RSA_PUB_LEN)) != 0 ||
	    (rc = bind_blob(st, 3, aes_key, BW_AES_KEY_LEN)) != 0 ||
	    sqlite3_bind_int64(st, 4, issued) != SQLITE_OK ||
	    sqlite3_bind_int(st, 5, used != 0) != SQLITE_OK ||
	    (rc = bind_time(st, 6, last_seen, when, sizeof when)) != 0) {
		done(st);
		return rc != 0 ? rc : BW_EDB;
	}
	return run_change(s, ST_CLIENT_SET_KEY, "set key");
}

int
bw_store_client_touch(struct bw_store *s, const uint8_t id[BW_ID_LEN],
		      int64_t last_seen)
{
	sqlite3_stmt *st = s->st[ST_CLIENT_TOUCH];
	char when[TIME_TEXT_LEN + 1];
	int rc;

	if ((rc = bind_blob(st, 1, id, BW_ID_LEN)) != 0 ||
	    (rc = bind_time(st, 2, last_seen, when, sizeof when)) != 0) {
		done(st);
		return rc;
	}
	return run_change(s, ST_CLIENT_TOUCH, "touch client");
}

/* ---- files ---- */

int
bw_store_file_upsert(struct bw_store *s, const struct bw_file_rec *f)
{
	sqlite3_stmt *drop = s->st[ST_FILE_DROP_SAME_PATH];
	sqlite3_stmt *up = s->st[ST_FILE_UPSERT];
	int rc;

	if (strnlen(f->file_name, sizeof f->file_name) >= sizeof f->file_name ||
	    strnlen(f->path_name, sizeof f->path_name) >= sizeof f->path_name)
		return BW_ETOOBIG;
	if ((rc = run(s, ST_BEGIN, "begin")) != 0)
		return rc;

	/* Two sent names may sanitise to one stored path: the newest upload
	 * owns the path, the older name's row goes. */
	if ((rc = bind_blob(drop, 1, f->client_id, BW_ID_LEN)) != 0 ||
	    (rc = bind_str(drop, 2, f->path_name, sizeof f->path_name)) != 0 ||
	    (rc = bind_str(drop, 3, f->file_name, sizeof f->file_name)) != 0) {
		done(drop);
		goto out;
	}
	if ((rc = run(s, ST_FILE_DROP_SAME_PATH, "upsert file")) != 0)
		goto out;
	if ((rc = bind_blob(up, 1, f->client_id, BW_ID_LEN)) != 0 ||
	    (rc = bind_str(up, 2, f->file_name, sizeof f->file_name)) != 0 ||
	    (rc = bind_str(up, 3, f->path_name, sizeof f->path_name)) != 0) {
		done(up);
		goto out;
	}
	if ((rc = run(s, ST_FILE_UPSERT, "upsert file")) != 0)
		goto out;
	rc = run(s, ST_COMMIT, "commit");
out:
	if (rc != 0 && !sqlite3_get_autocommit(s->db) &&
	    run(s, ST_ROLLBACK, "rollback") != 0)
		bw_error("store: rollback failed");
	return rc;
}

/* Binds an optional string: NULL for "". */
static int
bind_opt_str(sqlite3_stmt *st, int idx, const char *str, size_t cap)
{
	if (str[0] == '\0')
		return sqlite3_bind_null(st, idx) == SQLITE_OK ? 0 : BW_EDB;
	return bind_str(st, idx, str, cap);
}

int
bw_store_file_set(struct bw_store *s, const uint8_t id[BW_ID_LEN],
		  const char *path, const struct bw_file_rec *rec)
{
	sqlite3_stmt *drop = s->st[ST_FILE_DROP_PATH];
	sqlite3_stmt *ins = s->st[ST_FILE_INSERT];
	int rc;

	if ((rc = run(s, ST_BEGIN, "begin")) != 0)
		return rc;
	if ((rc = bind_blob(drop, 1, id, BW_ID_LEN)) != 0 ||
	    (rc = bind_str(drop, 2, path, BW_PATH_CAP)) != 0 ||
	    (rc = bind_str(drop, 3, rec != NULL ? rec->file_name : "",
			   BW_NAME_CAP)) != 0) {
		done(drop);
		goto out;
	}
	if ((rc = run(s, ST_FILE_DROP_PATH, "set file")) != 0)
		goto out;
	if (rec != NULL) {
		if ((rc = bind_blob(ins, 1, id, BW_ID_LEN)) != 0 ||
		    (rc = bind_str(ins, 2, rec->file_name,
				   sizeof rec->file_name)) != 0 ||
		    (rc = bind_str(ins, 3, rec->path_name,
				   sizeof rec->path_name)) != 0 ||
		    sqlite3_bind_int(ins, 4, rec->verified != 0) != SQLITE_OK ||
		    (rc = bind_opt_str(ins, 5, rec->pending_name,
				       sizeof rec->pending_name)) != 0 ||
		    (rc = bind_opt_str(ins, 6, rec->pending_path,
				       sizeof rec->pending_path)) != 0) {
			done(ins);
			rc = rc != 0 ? rc : BW_EDB;
			goto out;
		}
		if ((rc = run(s, ST_FILE_INSERT, "set file")) != 0)
			goto out;
	}
	rc = run(s, ST_COMMIT, "commit");
out:
	if (rc != 0 && !sqlite3_get_autocommit(s->db) &&
	    run(s, ST_ROLLBACK, "rollback") != 0)
		bw_error("store: rollback failed");
	return rc;
}

int
bw_store_file_set_verified(struct bw_store *s, const uint8_t id[BW_ID_LEN],
			   const char *file_name, int verified)
{
	sqlite3_stmt *st = s->st[ST_FILE_SET_VERIFIED];
	int rc;

	if ((rc = bind_blob(st, 1, id, BW_ID_LEN)) != 0 ||
	    (rc = bind_str(st, 2, file_name, BW_NAME_CAP)) != 0 ||
	    sqlite3_bind_int(st, 3, verified != 0) != SQLITE_OK) {
		done(st);
		return rc != 0 ? rc : BW_EDB;
	}
	return run_change(s, ST_FILE_SET_VERIFIED, "set verified");
}

int
bw_store_file_delete(struct bw_store *s, const uint8_t id[BW_ID_LEN],
		     const char *file_name)
{
	sqlite3_stmt *st = s->st[ST_FILE_DELETE];
	int rc;

	if ((rc = bind_blob(st, 1, id, BW_ID_LEN)) != 0 ||
	    (rc = bind_str(st, 2, file_name, BW_NAME_CAP)) != 0) {
		done(st);
		return rc;
	}
	return run_change(s, ST_FILE_DELETE, "delete file");
}
