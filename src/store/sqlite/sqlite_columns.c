/* Binding parameters and reading columns, for every table file: strings
 * that must hold a NUL within their array, keys that must have their size,
 * ids, booleans and LastSeen in whatever form another tool wrote them.
 */
#include <string.h>
#include <strings.h>

#include "bulwark/err.h"
#include "store/sqlite/sqlite_int.h"

/* LastSeen as written by us (text), or by other implementations: Unix
 * seconds as an integer, a Julian day as a real, or any text
 * bw_lastseen_parse() reads. Returns -1 for a value it cannot read. */
int
store_column_time(sqlite3_stmt *st, int col, int64_t *out)
{
	const unsigned char *text;

	*out = 0;
	switch (sqlite3_column_type(st, col)) {
	case SQLITE_NULL:
		return 0;
	case SQLITE_INTEGER:
		*out = sqlite3_column_int64(st, col);
		return 0;
	case SQLITE_FLOAT:
		return bw_lastseen_from_real(sqlite3_column_double(st, col),
					     out);
	default:
		text = sqlite3_column_text(st, col);
		if (text == NULL)
			return -1;
		/* Text padded with NULs (fixed-size fields) ends at the first.
		 */
		return bw_lastseen_parse(
			(const char *)text,
			strnlen((const char *)text,
				(size_t)sqlite3_column_bytes(st, col)),
			out);
	}
}

/* Binds LastSeen: NULL for 0, else the UTC text. buf must outlive the step. */
int
store_bind_time(sqlite3_stmt *st, int idx, int64_t t,
		char buf[BW_LASTSEEN_TEXT + 1])
{
	int rc;

	if (t == 0)
		return sqlite3_bind_null(st, idx) == SQLITE_OK ? 0 : BW_EDB;
	if ((rc = bw_lastseen_format(t, buf)) != 0)
		return rc;
	return sqlite3_bind_text(st, idx, buf, BW_LASTSEEN_TEXT,
				 SQLITE_STATIC) == SQLITE_OK
		       ? 0
		       : BW_EDB;
}

/* Copies a text (or blob) column into out[cap] up to its first NUL; -1 if it
 * is NULL or does not fit. */
int
store_column_str(sqlite3_stmt *st, int col, char *out, size_t cap)
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

int
store_column_id(sqlite3_stmt *st, int col, uint8_t out[BW_ID_LEN])
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
int
store_column_key(sqlite3_stmt *st, int col, uint8_t *out, size_t cap, int exact,
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
int
store_column_bool(sqlite3_stmt *st, int col)
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

/* Binds a NUL-terminated string held in a char[cap]; BW_ETOOBIG if the
 * array holds no NUL. */
int
store_bind_str(sqlite3_stmt *st, int idx, const char *str, size_t cap)
{
	size_t n = strnlen(str, cap);

	if (n >= cap)
		return BW_ETOOBIG;
	return sqlite3_bind_text(st, idx, str, (int)n, SQLITE_STATIC) ==
			       SQLITE_OK
		       ? 0
		       : BW_EDB;
}

int
store_bind_blob(sqlite3_stmt *st, int idx, const void *p, int n)
{
	if (p == NULL)
		return sqlite3_bind_null(st, idx) == SQLITE_OK ? 0 : BW_EDB;
	return sqlite3_bind_blob(st, idx, p, n, SQLITE_STATIC) == SQLITE_OK
		       ? 0
		       : BW_EDB;
}

/* Runs an UPDATE or DELETE whose parameters are bound: BW_ENOTFOUND if it
 * changed no row. */
int
store_run_change(struct sq_store *s, enum stmt_id id, const char *what)
{
	int rc = store_run(s, id, what);

	if (rc == 0 && sqlite3_changes(s->db) == 0)
		rc = BW_ENOTFOUND;
	return rc;
}

/* Binds an optional string: NULL for "". */
int
store_bind_opt_str(sqlite3_stmt *st, int idx, const char *str, size_t cap)
{
	if (str[0] == '\0')
		return sqlite3_bind_null(st, idx) == SQLITE_OK ? 0 : BW_EDB;
	return store_bind_str(st, idx, str, cap);
}
