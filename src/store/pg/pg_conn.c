/* The PostgreSQL backend's connection: the URL (its password never
 * logged), the session every statement relies on (synchronous_commit on:
 * a COMMIT that returns is on the server's disk), the schema brought up to
 * date under an advisory lock, the prepared statements, and reconnection
 * with a backoff when the server goes away. The SQL is pg_sql.c's,
 * parameters and columns pg_params.c's, the writes pg_write.c's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "store/pg/pg_int.h"

/* A number any two bulwarkd agree on, for pg_advisory_lock. */
#define SCHEMA_LOCK "7164510361"

#define BACKOFF_MIN_MS 100u
#define BACKOFF_MAX_MS 5000u

/* --- results --------------------------------------------------------------
 */

int
pg_conn_lost(struct pg_conn *pc)
{
	if (pc->c != NULL && PQstatus(pc->c) == CONNECTION_OK)
		return 0;
	if (pc->up && !pc->down_logged && !pc->quiet) {
		bw_error("store: lost the connection to PostgreSQL (%s): %s; "
			 "requests fail until it is back",
			 pc->shown,
			 pc->c != NULL ? PQerrorMessage(pc->c) : "gone");
		pc->down_logged = 1;
	}
	if (pc->up)
		pc->next_try = 0; /* the first attempt at once */
	pc->up = 0;
	atomic_store(&pc->connected, 0);
	atomic_store(&pc->backend_pid, 0);
	return 1;
}

void
pg_conn_drop(struct pg_conn *pc)
{
	if (pc->c != NULL)
		PQfinish(pc->c);
	pc->c = NULL;
	(void)pg_conn_lost(pc);
}

int
pg_result_rc(struct pg_conn *pc, PGresult *res, const char *what)
{
	ExecStatusType st;
	const char *state, *msg;

	st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ||
	    st == PGRES_SINGLE_TUPLE)
		return 0;
	pc->stmt_failed = 1;
	if (pg_conn_lost(pc))
		return BW_EDB;
	state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	if (state != NULL && strcmp(state, "57014") == 0)
		pc->timed_out = 1; /* canceled: a statement timeout */
	if (state != NULL && strcmp(state, "23505") == 0)
		return BW_EEXIST;
	if (state != NULL && strcmp(state, "2200H") == 0)
		return BW_ETOOBIG; /* message_ids reached its end */
	msg = res != NULL ? PQresultErrorMessage(res) : "out of memory";
	atomic_fetch_add(&pc->failures, 1);
	bw_error("store: PostgreSQL refused %s: %s%s%s", what,
		 state != NULL ? state : "", state != NULL ? " " : "", msg);
	return BW_EDB;
}

int
pg_exec(struct pg_conn *pc, const char *sql)
{
	PGresult *res = PQexec(pc->c, sql);
	int rc = pg_result_rc(pc, res, sql);

	PQclear(res);
	return rc;
}

void
pg_stmt_name(enum pg_stmt id, char name[16])
{
	snprintf(name, 16, "bw%d", (int)id);
}

PGresult *
pg_run(struct pg_conn *pc, enum pg_stmt id, const struct pg_params *p)
{
	char name[16];

	pg_stmt_name(id, name);
	return PQexecPrepared(pc->c, name, p->n, p->v, p->len, p->fmt, 1);
}

/* --- the URL -------------------------------------------------------------
 */

/* url with each of its passwords (bw_url_secret_next) replaced by "***". */
static char *
without_password(const char *url)
{
	size_t n = strlen(url), from = 0, at, len;
	char *out = malloc(3 * n + 1), *o = out; /* a "***" per byte at most */

	if (out == NULL)
		return NULL;
	while ((at = bw_url_secret_next(url, from, &len)) != SIZE_MAX) {
		memcpy(o, url + from, at - from);
		o += at - from;
		memcpy(o, "***", 3);
		o += 3;
		from = at + len;
	}
	memcpy(o, url + from, n - from + 1);
	return out;
}

/* --- connecting ------------------------------------------------------------
 */

static int
prepare_all(struct pg_conn *pc)
{
	char name[16];
	PGresult *res;
	int i, rc;

	for (i = 0; i < PS_N; i++) {
		snprintf(name, sizeof(name), "bw%d", i);
		res = pg_sql_prepare(pc->c, name, (enum pg_stmt)i);
		rc = pg_result_rc(pc, res, "a statement");
		PQclear(res);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* One attempt: connected, the session set and (with prepare) the
 * statements prepared. */
static void
notice(void *arg, const char *msg)
{
	(void)arg;
	bw_debug("store: PostgreSQL says: %.*s", (int)strcspn(msg, "\n"), msg);
}

static int
connect_once(struct pg_conn *pc, int prepare)
{
	/* ours first: what the URL says wins (libpq keeps the last value) */
	const char *const keys[] = {"connect_timeout",
				    "application_name",
				    "client_encoding",
				    "keepalives_idle",
				    "tcp_user_timeout",
				    "dbname",
				    NULL};
	const char *const vals[] = {"10",    "bulwarkd",   "UTF8", "30",
				    "30000", pc->conninfo, NULL};
	const char *msg;

	if (pc->c != NULL)
		PQfinish(pc->c);
	pc->limits_set = 0; /* a new session */
	pc->c = PQconnectdbParams(keys, vals, 1);
	if (pc->c == NULL || PQstatus(pc->c) != CONNECTION_OK) {
		msg = pc->c != NULL ? PQerrorMessage(pc->c) : "out of memory";
		snprintf(pc->last_error, sizeof(pc->last_error), "%.*s",
			 (int)strcspn(msg, "\n"), msg);
		return BW_EDB;
	}
	/* the server's notices ("already exists, skipping") go to the log,
	 * not raw to standard error between its lines */
	PQsetNoticeProcessor(pc->c, notice, NULL);
	/* durable when COMMIT returns, whatever the server's default */
	if (pg_exec(pc, "SET synchronous_commit = on") != 0 ||
	    pg_exec(pc, "SET TIME ZONE 'UTC'") != 0 ||
	    (prepare && prepare_all(pc) != 0)) {
		snprintf(pc->last_error, sizeof(pc->last_error), "%s",
			 "the session could not be set up");
		return BW_EDB;
	}
	return 0;
}

static int
schema_version(struct pg_conn *pc, int64_t *v)
{
	PGresult *res;
	int rc;

	res = PQexecParams(pc->c,
			   "SELECT coalesce(max(version), 0)::int8 "
			   "FROM bulwark_schema",
			   0, NULL, NULL, NULL, NULL, 1);
	if ((rc = pg_result_rc(pc, res, "the schema version")) == 0)
		*v = PQntuples(res) == 1 ? pg_col_i64(res, 0, 0) : 0;
	PQclear(res);
	return rc;
}

/* Up to date, once, whoever else starts now. */
static int
migrate(struct pg_conn *pc)
{
	char sql[96];
	int64_t v = 0;
	int rc;

	if ((rc = pg_exec(pc, "SELECT pg_advisory_lock(" SCHEMA_LOCK ")")) != 0)
		return rc;
	rc = pg_exec(pc, "CREATE TABLE IF NOT EXISTS bulwark_schema("
			 "version integer NOT NULL, "
			 "applied timestamptz NOT NULL DEFAULT now())");
	if (rc == 0)
		rc = schema_version(pc, &v);
	if (rc == 0 && v > PG_SCHEMA_VERSION) {
		bw_error("store: the database's schema is version %lld, newer "
			 "than this bulwarkd knows (%d): refusing it",
			 (long long)v, PG_SCHEMA_VERSION);
		rc = BW_ECONFIG;
	}
	for (; rc == 0 && v < PG_SCHEMA_VERSION; v++) {
		snprintf(sql, sizeof(sql),
			 "INSERT INTO bulwark_schema(version) VALUES(%lld)",
			 (long long)v + 1);
		if ((rc = pg_exec(pc, "BEGIN")) != 0)
			break;
		if ((rc = pg_exec(pc, pg_sql_migration(v))) == 0 &&
		    (rc = pg_exec(pc, sql)) == 0)
			rc = pg_exec(pc, "COMMIT");
		if (rc != 0) {
			(void)!pg_exec(pc, "ROLLBACK");
			break;
		}
		bw_info("store: PostgreSQL schema brought to version %lld",
			(long long)v + 1);
	}
	if (pg_exec(pc, "SELECT pg_advisory_unlock(" SCHEMA_LOCK ")") != 0 &&
	    rc == 0)
		rc = BW_EDB;
	return rc;
}

int
pg_conn_open(struct pg_conn *pc, const char *url)
{
	int rc;

	if ((pc->conninfo = strdup(url)) == NULL ||
	    (pc->shown = without_password(url)) == NULL)
		return BW_ENOMEM;
	/* statements need the tables: prepared once the schema is there */
	if (connect_once(pc, 0) != 0) {
		bw_error("store: cannot connect to PostgreSQL at %s: %s",
			 pc->shown, pc->last_error);
		return BW_EDB;
	}
	if ((rc = migrate(pc)) != 0 || (rc = prepare_all(pc)) != 0)
		return rc;
	pc->up = 1;
	atomic_store(&pc->connected, 1);
	atomic_store(&pc->backend_pid, PQbackendPID(pc->c));
	bw_info("store: PostgreSQL at %s, schema version %d", pc->shown,
		PG_SCHEMA_VERSION);
	return 0;
}

int
pg_conn_open_quiet(struct pg_conn *pc, const char *url)
{
	if ((pc->conninfo = strdup(url)) == NULL ||
	    (pc->shown = without_password(url)) == NULL)
		return BW_ENOMEM;
	pc->quiet = 1;
	return 0;
}

void
pg_conn_close(struct pg_conn *pc)
{
	if (pc->c != NULL)
		PQfinish(pc->c);
	pc->c = NULL;
	if (pc->conninfo != NULL)
		bw_wipe(pc->conninfo, strlen(pc->conninfo));
	free(pc->conninfo);
	free(pc->shown);
	pc->conninfo = pc->shown = NULL;
}

/* Once the daemon serves: no statement waits more than 30 s (one waiting
 * on a lock another program holds would stop every request queued behind
 * it), and the server drops the session of a peer that vanished, with the
 * path locks it held, within about a minute. Only where the session's
 * value is the default (0): the URL's options, PGOPTIONS or the server's
 * configuration win. Not at start-up, whose loads and schema changes may
 * take longer. Sent once per session; a failure is logged, not retried. */
static void
limits(struct pg_conn *pc)
{
	PGresult *res;

	if (pc->limits_set || !atomic_load(&pc->limits_wanted))
		return;
	pc->limits_set = 1;
	res = PQexec(pc->c, "SELECT set_config(name, v, false) FROM (VALUES "
			    "('statement_timeout', '30s'), "
			    "('tcp_keepalives_idle', '30'), "
			    "('tcp_keepalives_interval', '10'), "
			    "('tcp_keepalives_count', '3')) AS d(name, v) "
			    "WHERE current_setting(name) = '0'");
	(void)pg_result_rc(pc, res, "the session's time limits");
	PQclear(res);
}

int
pg_conn_ready(struct pg_conn *pc)
{
	uint64_t now;

	/* what the server said while we were idle (a shutdown's goodbye and
	 * its close) is read now, without waiting: a connection it ended is
	 * made again before a batch is sent on it */
	if (pc->up && PQconsumeInput(pc->c) &&
	    PQstatus(pc->c) == CONNECTION_OK) {
		limits(pc);
		return 0;
	}
	(void)pg_conn_lost(pc);
	now = bw_now_ms();
	if (now < pc->next_try)
		return BW_EDB;
	atomic_fetch_add(&pc->reconnects, 1);
	if (connect_once(pc, 1) != 0) {
		pc->backoff_ms = pc->backoff_ms == 0 ? BACKOFF_MIN_MS
				 : pc->backoff_ms * 2 > BACKOFF_MAX_MS
					 ? BACKOFF_MAX_MS
					 : pc->backoff_ms * 2;
		pc->next_try = bw_now_ms() + pc->backoff_ms;
		if (!pc->down_logged && !pc->quiet) {
			bw_error("store: cannot reach PostgreSQL at %s: %s; "
				 "trying again",
				 pc->shown, pc->last_error);
			pc->down_logged = 1;
		}
		return BW_EDB;
	}
	if (!pc->quiet)
		bw_info("store: PostgreSQL at %s is back", pc->shown);
	pc->up = 1;
	atomic_store(&pc->connected, 1);
	atomic_store(&pc->backend_pid, PQbackendPID(pc->c));
	pc->down_logged = 0;
	pc->backoff_ms = 0;
	limits(pc);
	return 0;
}

int
pg_conn_check(const char *url, char *msg, size_t cap)
{
	struct pg_conn pc;
	PGresult *res = NULL;
	int64_t v = 0;
	int rc, has;

	memset(&pc, 0, sizeof(pc));
	if ((pc.conninfo = strdup(url)) == NULL ||
	    (pc.shown = without_password(url)) == NULL) {
		pg_conn_close(&pc);
		return BW_ENOMEM;
	}
	if ((rc = connect_once(&pc, 0)) != 0) {
		snprintf(msg, cap, "PostgreSQL %s: %s", pc.shown,
			 pc.last_error);
		pg_conn_close(&pc);
		return rc;
	}
	res = PQexec(pc.c, "SELECT to_regclass('bulwark_schema') IS NOT NULL");
	has = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
	      PQgetvalue(res, 0, 0)[0] == 't';
	PQclear(res);
	if (has && (rc = schema_version(&pc, &v)) != 0)
		snprintf(msg, cap,
			 "PostgreSQL %s: cannot read the schema "
			 "version",
			 pc.shown);
	else if (v > PG_SCHEMA_VERSION)
		snprintf(msg, cap,
			 "PostgreSQL %s: schema version %lld is newer than "
			 "this bulwarkd knows (%d)",
			 pc.shown, (long long)v, PG_SCHEMA_VERSION);
	else if (!has || v == 0)
		snprintf(msg, cap,
			 "PostgreSQL %s: reached; no tables yet, "
			 "made at the first start",
			 pc.shown);
	else
		snprintf(msg, cap,
			 "PostgreSQL %s: reached, schema version %lld%s",
			 pc.shown, (long long)v,
			 v < PG_SCHEMA_VERSION ? " (upgraded at the next start)"
					       : "");
	if (rc == 0 && v > PG_SCHEMA_VERSION)
		rc = BW_ECONFIG;
	pg_conn_close(&pc);
	return rc;
}
