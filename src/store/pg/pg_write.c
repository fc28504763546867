/* The PostgreSQL backend's writes (pg_meta.c's thread runs them): a run of
 * consecutive write requests as one transaction, sent as one pipeline when
 * each takes one statement (one round trip), else statement by statement;
 * and a request alone in a transaction of its own, which is what every
 * request of a batch that failed runs again as.
 */
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "store/pg/pg_int.h"

/* BEGIN, reconnecting once at once if the connection was found gone (a
 * server restarted while we were idle): nothing of the batch ran yet. */
static int
begin(struct pg_conn *pc)
{
	int rc;

	if ((rc = pg_conn_ready(pc)) != 0)
		return rc;
	if ((rc = pg_exec(pc, "BEGIN")) != 0 && pg_conn_lost(pc) &&
	    (rc = pg_conn_ready(pc)) == 0)
		rc = pg_exec(pc, "BEGIN");
	pc->stmt_failed = pc->timed_out = 0;
	return rc;
}

/* A COMMIT in a transaction that a failed statement aborted succeeds with
 * the tag ROLLBACK: only the tag COMMIT says the writes are in. */
static int
commit(struct pg_conn *pc)
{
	PGresult *res = PQexec(pc->c, "COMMIT");
	int rc = pg_result_rc(pc, res, "COMMIT");

	if (rc != 0 && pg_conn_lost(pc))
		rc = BW_EDOUBT; /* it may have reached the server */
	if (rc == 0 && strcmp(PQcmdStatus(res), "COMMIT") != 0) {
		bw_error("store: PostgreSQL rolled a transaction back at its "
			 "COMMIT (%s)",
			 PQcmdStatus(res));
		rc = BW_EDB;
	}
	PQclear(res);
	if (rc == 0)
		atomic_fetch_add(&pc->commits, 1);
	return rc;
}

/* r alone in a transaction of its own. */
void
pg_write_alone(struct pg_conn *pc, struct bw_meta_req *r)
{
	int abort = 0;

	if ((r->rc = begin(pc)) != 0)
		return;
	r->rc = pg_op(pc, r, &abort);
	if (r->rc == 0 && !abort) {
		r->rc = commit(pc);
		return;
	}
	(void)!pg_exec(pc, "ROLLBACK");
	if (r->rc == 0)
		r->rc = BW_EDB;
}

#define PIPELINE_MAX 512u /* requests in one pipeline */

/* The next result of a pipeline and the NULL that ends it: the result's
 * status (PGRES_FATAL_ERROR if there is none). */
static ExecStatusType
take(PGconn *c, PGresult **out)
{
	PGresult *res = PQgetResult(c), *rest;
	ExecStatusType st =
		res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;

	if (st != PGRES_PIPELINE_SYNC && res != NULL)
		while ((rest = PQgetResult(c)) != NULL)
			PQclear(rest);
	*out = res;
	return st;
}

static int
send_one(PGconn *c, struct bw_meta_req *r)
{
	struct pg_params p;
	char name[16];
	int id = pg_one_statement(r, &p);

	if (id < 0)
		return 0;
	pg_stmt_name((enum pg_stmt)id, name);
	return PQsendQueryPrepared(c, name, p.n, p.v, p.len, p.fmt, 1);
}

/* BEGIN, every request's one statement and COMMIT sent at once, then their
 * results read: one round trip for the batch. 0 when each request's rc is
 * set; 1 when nothing was committed and the requests must run again (one
 * of them failed, or the pipeline could not be used). */
static int
write_pipelined(struct pg_conn *pc, struct bw_meta_req *first,
		struct bw_meta_req *end)
{
	PGconn *c = pc->c;
	struct bw_meta_req *r;
	PGresult *res = NULL; /* nothing taken when nothing could be sent */
	const char *state;
	int ok, sent;

	pc->timed_out = 0;
	if (!PQenterPipelineMode(c))
		return 1;
	sent = PQsendQueryParams(c, "BEGIN", 0, NULL, NULL, NULL, NULL, 0);
	for (r = first; sent && r != end; r = r->next)
		sent = send_one(c, r);
	sent = sent &&
	       PQsendQueryParams(c, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) &&
	       PQpipelineSync(c);
	ok = sent && take(c, &res) == PGRES_COMMAND_OK;
	PQclear(res);
	for (r = first; sent && r != end; r = r->next) {
		if (take(c, &res) == PGRES_COMMAND_OK ||
		    PQresultStatus(res) == PGRES_TUPLES_OK) {
			r->rc = pg_one_result(r, res);
		} else {
			ok = 0;
			state = res != NULL ? PQresultErrorField(
						      res, PG_DIAG_SQLSTATE)
					    : NULL;
			if (state != NULL && strcmp(state, "57014") == 0)
				pc->timed_out = 1;
		}
		PQclear(res);
	}
	if (sent) {
		ok = take(c, &res) == PGRES_COMMAND_OK && ok; /* COMMIT */
		PQclear(res);
		(void)take(c, &res); /* the sync */
		PQclear(res);
	}
	if (!PQexitPipelineMode(c) || !sent) {
		/* statements may wait for a sync never sent, or results were
		 * left unread: the next batch would be read against this one's.
		 * The connection goes; its server rolls back what it began. */
		pg_conn_drop(pc);
		for (r = first; r != end; r = r->next)
			r->rc = sent ? BW_EDOUBT
				     : BW_EDB; /* not acknowledged */
		return 0;
	}
	if (pg_conn_lost(pc)) {
		for (r = first; r != end; r = r->next)
			r->rc = BW_EDOUBT; /* committed or not: not acknowledged
					    */
		return 0;
	}
	if (ok) {
		atomic_fetch_add(&pc->commits, 1);
		return 0;
	}
	if (PQtransactionStatus(c) != PQTRANS_IDLE)
		(void)!pg_exec(pc, "ROLLBACK");
	return 1;
}

/* The writes from first up to (not including) end, in one transaction. */
void
pg_write_batch(struct pg_conn *pc, struct bw_meta_req *first,
	       struct bw_meta_req *end)
{
	struct pg_params p;
	struct bw_meta_req *r;
	unsigned n = 0;
	int rc, abort = 0, flat = 1;

	if (first->next == end) {
		pg_write_alone(pc, first);
		return;
	}
	for (r = first; r != end && flat; r = r->next, n++)
		flat = pg_one_statement(r, &p) >= 0;
	if (flat && n <= PIPELINE_MAX && pg_conn_ready(pc) == 0) {
		if (write_pipelined(pc, first, end) == 0)
			return;
		for (r = first; r != end; r = r->next) {
			if (pc->timed_out)
				r->rc = BW_EDB; /* each alone would wait too */
			else
				pg_write_alone(pc, r); /* one refused: each */
		}
		return;
	}
	if ((rc = begin(pc)) != 0) {
		for (r = first; r != end; r = r->next)
			r->rc = rc;
		return;
	}
	for (r = first; r != end && !abort; r = r->next)
		r->rc = pg_op(pc, r, &abort);
	if (!abort) {
		if ((rc = commit(pc)) != 0) {
			/* the outcome is not known: not acknowledged */
			for (r = first; r != end; r = r->next)
				if (r->rc == 0)
					r->rc = rc;
		}
		return;
	}
	(void)!pg_exec(pc, "ROLLBACK");
	if (pg_conn_lost(pc) || pc->timed_out) {
		/* gone, or a statement timed out: each alone would wait as
		 * long again */
		for (r = first; r != end; r = r->next)
			r->rc = BW_EDB;
		return;
	}
	/* one request refused: each on its own, so it undoes only itself */
	for (r = first; r != end; r = r->next)
		pg_write_alone(pc, r);
}
