/* Rows read again on a store several daemons share: a client's row, and
 * every file row of a client, each in one round trip on the backend's
 * thread (host/meta.h's BW_META_CLIENT_GET and BW_META_FILE_GET), and the
 * decoding of those rows that the start-up loads use too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "store/pg/pg_int.h"

int
pg_client_rec(const PGresult *res, int i, struct bw_client_rec *c)
{
	memset(c, 0, sizeof(*c));
	if (pg_col_exact(res, i, 0, c->id, BW_ID_LEN) != 1 ||
	    pg_col_str(res, i, 1, c->name, sizeof(c->name)) != 0 ||
	    (c->has_pubkey = pg_col_exact(res, i, 2, c->pubkey,
					  sizeof(c->pubkey))) < 0 ||
	    (c->has_aes = pg_col_exact(res, i, 4, c->aes_key,
				       sizeof(c->aes_key))) < 0)
		return BW_EDB;
	c->last_seen = pg_col_i64(res, i, 3);
	c->key_issued = pg_col_i64(res, i, 5);
	c->key_used = pg_col_bool(res, i, 6);
	c->tls_only = pg_col_bool(res, i, 7);
	return 0;
}

int
pg_file_rec(const PGresult *res, int i, struct bw_file_rec *f)
{
	memset(f, 0, sizeof(*f));
	if (pg_col_exact(res, i, 0, f->client_id, BW_ID_LEN) != 1 ||
	    pg_col_str(res, i, 1, f->file_name, sizeof(f->file_name)) != 0 ||
	    pg_col_path(res, i, 2, f->path_name, sizeof(f->path_name)) != 0)
		return BW_EDB;
	f->verified = pg_col_bool(res, i, 3);
	if (pg_col_str(res, i, 4, f->pending_name, sizeof(f->pending_name)) !=
		    0 ||
	    pg_col_path(res, i, 5, f->pending_path, sizeof(f->pending_path)) !=
		    0)
		f->pending_name[0] = f->pending_path[0] = '\0';
	f->uploader = pg_col_i64(res, i, 6);
	return 0;
}

/* Statement id with the id as its one parameter: its result, or NULL
 * with *rc set. */
static PGresult *
by_id(struct pg_conn *pc, enum pg_stmt id, const uint8_t who[BW_ID_LEN],
      const char *what, int *rc)
{
	struct pg_params p = {0};
	PGresult *res;

	pg_p_bytes(&p, who, BW_ID_LEN);
	res = pg_run(pc, id, &p);
	if ((*rc = pg_result_rc(pc, res, what)) != 0) {
		PQclear(res);
		return NULL;
	}
	return res;
}

int
pg_client_get(struct pg_conn *pc, struct bw_meta_req *r)
{
	int rc;
	PGresult *res = by_id(pc, PS_CLIENT_GET, r->u.get.id, "a client", &rc);

	if (res == NULL)
		return rc;
	rc = PQntuples(res) == 1 ? pg_client_rec(res, 0, r->u.get.rec)
				 : BW_ENOTFOUND;
	PQclear(res);
	return rc;
}

int
pg_file_get(struct pg_conn *pc, struct bw_meta_req *r)
{
	int rc, n, i;
	PGresult *res =
		by_id(pc, PS_FILE_GET, r->u.files.id, "a client's files", &rc);
	struct bw_file_rec *v;

	r->u.files.recs = NULL;
	r->u.files.n = 0;
	if (res == NULL)
		return rc;
	if ((n = PQntuples(res)) > 0) {
		if ((v = calloc((size_t)n, sizeof(*v))) == NULL) {
			PQclear(res);
			return BW_ENOMEM;
		}
		for (i = 0; i < n; i++)
			if (pg_file_rec(res, i, &v[r->u.files.n]) == 0)
				r->u.files.n++;
		r->u.files.recs = v;
	}
	PQclear(res);
	return 0;
}

int
pg_client_since(struct pg_conn *pc, struct bw_meta_req *r)
{
	struct pg_params p = {0};
	struct bw_client_rec *v;
	PGresult *res;
	int rc, n, i;

	r->u.since.recs = NULL;
	r->u.since.n = 0;
	r->u.since.last = r->u.since.after;
	pg_p_i64(&p, r->u.since.after);
	pg_p_i64(&p,
		 r->u.since.limit > 0 ? (int64_t)r->u.since.limit : INT64_MAX);
	res = pg_run(pc, PS_CLIENT_SINCE, &p);
	if ((rc = pg_result_rc(pc, res, "the clients added")) != 0) {
		PQclear(res);
		return rc;
	}
	if ((n = PQntuples(res)) > 0) {
		if ((v = calloc((size_t)n, sizeof(*v))) == NULL) {
			PQclear(res);
			return BW_ENOMEM;
		}
		for (i = 0; i < n; i++) {
			if (pg_client_rec(res, i, &v[r->u.since.n]) == 0)
				r->u.since.n++;
			r->u.since.last = pg_col_i64(res, i, 8);
		}
		r->u.since.recs = v;
	}
	PQclear(res);
	return 0;
}

static int
totals(struct pg_conn *pc, struct bw_meta_req *r)
{
	PGresult *res = PQexecParams(
		pc->c,
		"SELECT (SELECT count(*) FROM clients)::int8, "
		"(SELECT count(*) FROM files)::int8, "
		"(SELECT count(*) FROM messages)::int8, "
		"(SELECT coalesce(sum(coalesce(ContentSize, "
		"octet_length(Content), 0)), 0) FROM messages)::int8",
		0, NULL, NULL, NULL, NULL, 1);
	int rc = pg_result_rc(pc, res, "the totals");

	if (rc == 0 && PQntuples(res) == 1) {
		r->u.totals.clients = (uint64_t)pg_col_i64(res, 0, 0);
		r->u.totals.files = (uint64_t)pg_col_i64(res, 0, 1);
		r->u.totals.messages = (uint64_t)pg_col_i64(res, 0, 2);
		r->u.totals.message_bytes = (uint64_t)pg_col_i64(res, 0, 3);
	}
	PQclear(res);
	return rc;
}

/* One client's queued messages and their bytes. */
static int
queue(struct pg_conn *pc, struct bw_meta_req *r)
{
	struct pg_params p = {0};
	PGresult *res;
	int rc;

	pg_p_bytes(&p, r->u.queue.id, BW_ID_LEN);
	res = PQexecParams(pc->c,
			   "SELECT count(*)::int8, coalesce(sum(coalesce("
			   "ContentSize, octet_length(Content), 0)), 0)::int8 "
			   "FROM messages WHERE ToClient = $1",
			   p.n, NULL, p.v, p.len, p.fmt, 1);
	rc = pg_result_rc(pc, res, "a client's queue");
	if (rc == 0 && PQntuples(res) == 1) {
		r->u.queue.n = (uint64_t)pg_col_i64(res, 0, 0);
		r->u.queue.bytes = (uint64_t)pg_col_i64(res, 0, 1);
	}
	PQclear(res);
	return rc;
}

/* An advisory lock of the session's, tried or released (never waited
 * for: the thread serves every other read meanwhile). */
static int
lock(struct pg_conn *pc, struct bw_meta_req *r)
{
	const char *sql = r->op == BW_META_LOCK
				  ? "SELECT pg_try_advisory_lock($1::int8)"
				  : "SELECT pg_advisory_unlock($1::int8)";
	struct pg_params p = {0};
	PGresult *res;
	int rc;

	pg_p_i64(&p, r->u.lock.key);
	res = PQexecParams(pc->c, sql, p.n, NULL, p.v, p.len, p.fmt, 1);
	rc = pg_result_rc(pc, res, "an advisory lock");
	r->u.lock.got =
		rc == 0 && PQntuples(res) == 1 && pg_col_bool(res, 0, 0);
	PQclear(res);
	return rc;
}

int
pg_get(struct pg_conn *pc, struct bw_meta_req *r)
{
	switch (r->op) {
	case BW_META_LOCK:
	case BW_META_UNLOCK:
		return lock(pc, r);
	case BW_META_CLIENT_GET:
		return pg_client_get(pc, r);
	case BW_META_FILE_GET:
		return pg_file_get(pc, r);
	case BW_META_CLIENT_SINCE:
		return pg_client_since(pc, r);
	case BW_META_TOTALS:
		return totals(pc, r);
	case BW_META_QUEUE:
		return queue(pc, r);
	default:
		return BW_ECONFIG;
	}
}

/* --- locks kept across sessions ---------------------------------------------
 */

void
pg_kept_note(struct pg_kept *k, const struct pg_conn *pc,
	     const struct bw_meta_req *r)
{
	size_t i;

	if ((r->op != BW_META_LOCK && r->op != BW_META_UNLOCK) ||
	    !r->u.lock.keep)
		return;
	for (i = 0; i < k->n && k->v[i].key != r->u.lock.key; i++)
		;
	if (r->op == BW_META_UNLOCK) {
		/* given up even if the unlock failed: its session, and the
		 * lock with it, is gone; taking it again would hold a closed
		 * connection's claim for good */
		if (i < k->n)
			k->v[i] = k->v[--k->n];
		return;
	}
	if (r->rc != 0 || !r->u.lock.got || i < k->n)
		return;
	if (k->n == k->cap) {
		size_t cap = k->cap != 0 ? 2 * k->cap : 64;
		void *grown = realloc(k->v, cap * sizeof(*k->v));

		if (grown == NULL)
			return; /* held for this session only */
		k->v = grown;
		k->cap = cap;
	}
	k->v[k->n].key = r->u.lock.key;
	k->v[k->n++].session = atomic_load(&pc->reconnects);
}

void
pg_kept_retake(struct pg_kept *k, struct pg_conn *pc)
{
	struct bw_meta_req r;
	size_t i, again = 0, elsewhere = 0;
	uint64_t session;

	if (k->n == 0 || pg_conn_ready(pc) != 0)
		return;
	session = atomic_load(&pc->reconnects);
	for (i = 0; i < k->n; i++) {
		if (k->v[i].session == session)
			continue;
		memset(&r, 0, sizeof(r));
		r.op = BW_META_LOCK;
		r.u.lock.key = k->v[i].key;
		if (lock(pc, &r) != 0)
			return; /* the next round tries again */
		if (r.u.lock.got) {
			k->v[i].session = session;
			again++;
		} else {
			elsewhere++; /* the old session not yet ended on the
				      * server, or a probe: tried again */
		}
	}
	if (again > 0)
		bw_warn("store: the session holding this node's locks was "
			"lost; %zu claims taken again on the new one",
			again);
	if (elsewhere > 0 && elsewhere != k->elsewhere)
		bw_warn("store: %zu claims are held by another session for "
			"now (the lost one not yet ended?); tried every second",
			elsewhere);
	k->elsewhere = elsewhere;
}

void
pg_kept_free(struct pg_kept *k)
{
	free(k->v);
	memset(k, 0, sizeof(*k));
}
