/* The PostgreSQL backend's start-up loads: whole tables (clients, files,
 * the messages' totals and contents, the last message id), streamed a row
 * at a time so that a large table is never all in memory.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "store/pg/pg_int.h"

/* --- whole tables ----------------------------------------------------------
 */

typedef int (*row_fn)(void *arg, const PGresult *res);

/* sql's rows one at a time to fn; a non-zero return stops (and the rest
 * of the result is drained) and is returned. */
static int
each_row(struct pg_conn *pc, const char *sql, row_fn fn, void *arg)
{
	PGresult *res;
	int rc = 0, st;

	if (!PQsendQueryParams(pc->c, sql, 0, NULL, NULL, NULL, NULL, 1))
		return pg_result_rc(pc, NULL, sql);
	if (!PQsetSingleRowMode(pc->c)) {
		/* sent: its results must be read before the next command */
		while ((res = PQgetResult(pc->c)) != NULL)
			PQclear(res);
		return pg_result_rc(pc, NULL, sql);
	}
	while ((res = PQgetResult(pc->c)) != NULL) {
		st = (int)PQresultStatus(res);
		if (st == PGRES_SINGLE_TUPLE) {
			if (rc == 0)
				rc = fn(arg, res);
		} else if (st != PGRES_TUPLES_OK && rc == 0) {
			rc = pg_result_rc(pc, res, sql);
		}
		PQclear(res);
	}
	return rc;
}

struct load {
	union {
		bw_meta_client_cb client;
		bw_meta_file_cb file;
		bw_meta_totals_cb totals;
		bw_meta_blobs_cb blobs;
	} cb;
	void *arg;
	unsigned skipped;
};

static int
client_row(void *arg, const PGresult *res)
{
	struct load *l = arg;
	struct bw_client_rec c;
	int rc;

	if (pg_client_rec(res, 0, &c) != 0) {
		l->skipped++;
		return 0;
	}
	rc = l->cb.client(l->arg, &c);
	bw_wipe(&c, sizeof(c));
	return rc;
}

int
pg_load_clients(struct pg_conn *pc, bw_meta_client_cb cb, void *arg)
{
	struct load l = {.cb.client = cb, .arg = arg};
	int rc = each_row(pc,
			  "SELECT ID, Name, PublicKey, "
			  "coalesce(extract(epoch FROM LastSeen)::int8, 0), "
			  "AESKey, KeyIssued, KeyUsed, TlsOnly FROM clients",
			  client_row, &l);

	if (l.skipped > 0)
		bw_warn("store: skipped %u unreadable clients row(s)",
			l.skipped);
	return rc;
}

static int
file_row(void *arg, const PGresult *res)
{
	struct load *l = arg;
	struct bw_file_rec f;

	if (pg_file_rec(res, 0, &f) != 0) {
		l->skipped++;
		memset(&f, 0, sizeof(f));
		f.unreadable = 1;
	}
	return l->cb.file(l->arg, &f);
}

int
pg_load_files(struct pg_conn *pc, bw_meta_file_cb cb, void *arg)
{
	struct load l = {.cb.file = cb, .arg = arg};
	int rc = each_row(pc,
			  "SELECT ID, FileName, PathName, Verified, "
			  "PendingName, PendingPath, Uploader FROM files",
			  file_row, &l);

	if (l.skipped > 0)
		bw_warn("store: skipped %u unreadable files row(s)", l.skipped);
	return rc;
}

static int
totals_row(void *arg, const PGresult *res)
{
	struct load *l = arg;
	uint8_t to[BW_ID_LEN];

	if (pg_col_exact(res, 0, 0, to, BW_ID_LEN) != 1)
		return 0;
	return l->cb.totals(l->arg, to, (uint64_t)pg_col_i64(res, 0, 1),
			    (uint64_t)pg_col_i64(res, 0, 2));
}

int
pg_msg_totals(struct pg_conn *pc, bw_meta_totals_cb cb, void *arg)
{
	struct load l = {.cb.totals = cb, .arg = arg};

	return each_row(pc,
			"SELECT ToClient, count(*)::int8, "
			"sum(coalesce(ContentSize, octet_length(Content), "
			"0))::int8 FROM messages GROUP BY ToClient",
			totals_row, &l);
}

static int
blob_row(void *arg, const PGresult *res)
{
	struct load *l = arg;
	char key[BW_PATH_CAP];

	if (pg_col_str(res, 0, 1, key, sizeof(key)) != 0)
		return 0;
	return l->cb.blobs(l->arg, pg_col_i64(res, 0, 0), key);
}

int
pg_msg_blobs(struct pg_conn *pc, bw_meta_blobs_cb cb, void *arg)
{
	struct load l = {.cb.blobs = cb, .arg = arg};

	return each_row(pc,
			"SELECT ID, ContentPath FROM messages "
			"WHERE ContentPath IS NOT NULL",
			blob_row, &l);
}

int
pg_msg_last_id(struct pg_conn *pc, int64_t *out)
{
	PGresult *res =
		PQexecParams(pc->c,
			     "SELECT CASE WHEN is_called THEN last_value "
			     "ELSE 0 END FROM message_ids",
			     0, NULL, NULL, NULL, NULL, 1);
	int rc = pg_result_rc(pc, res, "the message ids");

	*out = rc == 0 && PQntuples(res) == 1 ? pg_col_i64(res, 0, 0) : 0;
	PQclear(res);
	return rc;
}
