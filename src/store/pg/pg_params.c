/* Parameters and columns of the PostgreSQL backend's statements in libpq's
 * binary format: integers in network order, text and bytea as their bytes,
 * booleans as one byte. No escaping, no parsing of numbers.
 */
#include <arpa/inet.h>
#include <string.h>

#include "bulwark/util.h"
#include "store/pg/pg_int.h"

/* --- parameters and columns ---------------------------------------------
 */

static void
put(struct pg_params *p, const void *v, int len)
{
	p->v[p->n] = v;
	p->len[p->n] = len;
	p->fmt[p->n] = 1;
	p->n++;
}

void
pg_p_bytes(struct pg_params *p, const void *v, size_t len)
{
	static const char empty[1];

	if (v == NULL) {
		put(p, NULL, 0);
		return;
	}
	put(p, len > 0 ? v : empty, (int)len);
}

void
pg_p_text(struct pg_params *p, const char *s)
{
	put(p, s, s != NULL ? (int)strlen(s) : 0);
}

void
pg_p_opt_text(struct pg_params *p, const char *s)
{
	pg_p_text(p, s != NULL && s[0] != '\0' ? s : NULL);
}

void
pg_p_i64(struct pg_params *p, int64_t v)
{
	uint64_t u = (uint64_t)v;
	int i;

	for (i = 7; i >= 0; i--, u >>= 8)
		p->num[p->n][i] = (unsigned char)(u & 0xff);
	put(p, p->num[p->n], 8);
}

void
pg_p_i32(struct pg_params *p, int32_t v)
{
	uint32_t u = htonl((uint32_t)v);

	memcpy(p->num[p->n], &u, 4);
	put(p, p->num[p->n], 4);
}

void
pg_p_bool(struct pg_params *p, int v)
{
	p->num[p->n][0] = v != 0;
	put(p, p->num[p->n], 1);
}

int64_t
pg_col_i64(const PGresult *r, int row, int col)
{
	const unsigned char *v;
	uint64_t u = 0;
	int i;

	if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 8)
		return 0;
	v = (const unsigned char *)PQgetvalue(r, row, col);
	for (i = 0; i < 8; i++)
		u = u << 8 | v[i];
	return (int64_t)u;
}

int32_t
pg_col_i32(const PGresult *r, int row, int col)
{
	uint32_t u;

	if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 4)
		return 0;
	memcpy(&u, PQgetvalue(r, row, col), 4);
	return (int32_t)ntohl(u);
}

int
pg_col_bool(const PGresult *r, int row, int col)
{
	return !PQgetisnull(r, row, col) && PQgetlength(r, row, col) == 1 &&
	       PQgetvalue(r, row, col)[0] != 0;
}

int
pg_col_str(const PGresult *r, int row, int col, char *out, size_t cap)
{
	int n = PQgetlength(r, row, col);

	out[0] = '\0';
	if (PQgetisnull(r, row, col) || n < 0 || (size_t)n >= cap ||
	    memchr(PQgetvalue(r, row, col), 0, (size_t)n) != NULL)
		return -1;
	memcpy(out, PQgetvalue(r, row, col), (size_t)n);
	out[n] = '\0';
	return 0;
}

int
pg_col_exact(const PGresult *r, int row, int col, uint8_t *out, size_t n)
{
	if (PQgetisnull(r, row, col))
		return 0;
	if ((size_t)PQgetlength(r, row, col) != n)
		return -1;
	memcpy(out, PQgetvalue(r, row, col), n);
	return 1;
}

/* --- paths ----------------------------------------------------------------
 */

int
pg_path_store(const char *path, char out[PG_PATH_STORED])
{
	size_t n = strlen(path), h = strlen(PG_PATH_HEX);

	if (n >= BW_PATH_CAP)
		return -1;
	if (path[0] != PG_PATH_HEX[0] && bw_utf8_valid(path)) {
		memcpy(out, path, n + 1);
		return 0;
	}
	memcpy(out, PG_PATH_HEX, h);
	bw_hex_encode((const uint8_t *)path, n, out + h);
	return 0;
}

int
pg_col_path(const PGresult *r, int row, int col, char *out, size_t cap)
{
	char stored[PG_PATH_STORED];
	size_t h = strlen(PG_PATH_HEX), n;

	if (pg_col_str(r, row, col, stored, sizeof(stored)) != 0)
		return -1;
	if (strncmp(stored, PG_PATH_HEX, h) != 0) {
		n = strlen(stored);
		if (n >= cap)
			return -1;
		memcpy(out, stored, n + 1);
		return 0;
	}
	n = (strlen(stored) - h) / 2;
	if (n >= cap ||
	    bw_hex_decode(stored + h, strlen(stored) - h, (uint8_t *)out, n) !=
		    0 ||
	    memchr(out, 0, n) != NULL)
		return -1;
	out[n] = '\0';
	return 0;
}
