/* Internal to src/host/pg/: the PostgreSQL backend's connection, its
 * statements and the helpers that bind parameters and read columns in
 * libpq's binary format. With the .c files beside it, the only code that
 * includes libpq-fe.h.
 *
 * One connection, owned by one thread of the backend's (pg_meta.c): the
 * loop never waits for the network. Start-up work (loads, bw_meta_run) runs
 * on the caller's thread, under the same mutex.
 */
#ifndef BULWARK_HOST_PG_INT_H
#define BULWARK_HOST_PG_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "store/meta.h"

/* The schema this code knows; a database with a newer one is refused. */
#define PG_SCHEMA_VERSION 7

enum pg_stmt {
	PS_CLIENT_INSERT,
	PS_CLIENT_SET_KEY,
	PS_CLIENT_TOUCH,
	PS_FILE_DROP,
	PS_FILE_INSERT,
	PS_MSG_INSERT,
	PS_MSG_EACH,
	PS_MSG_DELETE,
	PS_MSG_DROP,
	PS_MSG_PUT,
	PS_MSG_FLOOR,
	PS_CLIENT_GET,
	PS_FILE_GET,
	PS_CLIENT_SINCE,
	PS_CLIENT_FAIL,
	PS_MSG_DROP_PATH,
	PS_PULL_GEN,
	PS_PULL_HOLD,
	PS_CLIENT_TLS_ONLY,
	PS_N
};

struct pg_conn {
	char *conninfo; /* the URL as given: may hold a password */
	char *shown;	/* the same without one, for logs */
	PGconn *c;
	int up;		     /* connected, session set, statements prepared */
	int down_logged;     /* "lost" said; "back" said when up again */
	uint64_t next_try;   /* ms: no new connection attempt before */
	unsigned backoff_ms; /* grows while attempts fail */
	char last_error[256];
	atomic_uint_fast64_t commits, reconnects, failures;
	atomic_int connected;	  /* up, as other threads may read it */
	int quiet;		  /* its loss and return are not logged */
	int stmt_failed;	  /* a statement failed since the last BEGIN:
				   * the transaction is aborted, whatever the
				   * failure is taken to mean */
	int limits_set;		  /* the session's time limits were sent */
	atomic_int limits_wanted; /* the daemon serves: send them */
	int timed_out;		  /* and it was canceled (statement_timeout):
				   * its requests fail, none is run again */
	/* the server process of this session (0: none now): its advisory
	 * locks are its own, and go with it */
	atomic_int backend_pid;
	/* the session whose advisory locks fence this one's writes (the
	 * reader's, which takes them) */
	struct pg_conn *locks_on;
};

/* pg_conn.c */
/* Reads the URL, connects and brings the schema up to date (under an
 * advisory lock: daemons starting together migrate once). Blocking. */
int pg_conn_open(struct pg_conn *pc, const char *url) BW_WUR;
/* A second connection to url, for reads: made at its first use (the
 * schema is the first one's), its loss and return not logged (the first
 * connection's are). */
int pg_conn_open_quiet(struct pg_conn *pc, const char *url) BW_WUR;
void pg_conn_close(struct pg_conn *pc);
/* --check-config: reaches url, reads the schema version, changes
 * nothing; msg says what it found or what is wrong. */
int pg_conn_check(const char *url, char *msg, size_t cap) BW_WUR;
/* Connected and ready, reconnecting if the last failure is older than
 * the backoff; BW_EDB at once while it is not. */
int pg_conn_ready(struct pg_conn *pc) BW_WUR;
/* After a failed call: if the connection is gone, marks it down (logged
 * once) and returns 1. */
int pg_conn_lost(struct pg_conn *pc);
/* The connection is in a state we cannot account for (statements sent
 * without their sync, results unread): closes it (the server rolls back
 * what it began) and marks it down; the next request connects again. */
void pg_conn_drop(struct pg_conn *pc);

/* A result's outcome as an error value: 0, BW_EEXIST (a unique key),
 * BW_ETOOBIG (the message ids are used up), BW_EDB (logged, with what).
 * res may be NULL (libpq out of memory, or the connection gone). */
int pg_result_rc(struct pg_conn *pc, PGresult *res, const char *what);
/* Runs sql with no parameters and no rows wanted: 0 or an error. */
int pg_exec(struct pg_conn *pc, const char *sql) BW_WUR;

/* Parameters of one statement, in binary format. */
#define PG_MAX_PARAMS 8
struct pg_params {
	const char *v[PG_MAX_PARAMS];
	int len[PG_MAX_PARAMS];
	int fmt[PG_MAX_PARAMS];
	unsigned char num[PG_MAX_PARAMS][8];
	int n;
};

void pg_p_bytes(struct pg_params *p, const void *v, size_t len);
void pg_p_text(struct pg_params *p, const char *s); /* NULL: NULL */
/* A stored path (PathName, PendingPath: text columns) as it is kept: as
 * it is when it is UTF-8, else (a file name in Latin-1, say, which the
 * database would refuse) PG_PATH_HEX and its bytes in hex. out holds
 * PG_PATH_STORED; "" stays "". -1 if it does not fit. */
#define PG_PATH_HEX    "\x7fhex:"
#define PG_PATH_STORED (2 * BW_PATH_CAP + 8)
int pg_path_store(const char *path, char out[PG_PATH_STORED]);
void pg_p_opt_text(struct pg_params *p, const char *s); /* "": NULL */
void pg_p_i64(struct pg_params *p, int64_t v);
void pg_p_i32(struct pg_params *p, int32_t v);
void pg_p_bool(struct pg_params *p, int v);

/* Runs prepared statement id with p; the result is the caller's. */
PGresult *pg_run(struct pg_conn *pc, enum pg_stmt id,
		 const struct pg_params *p);

/* Columns of a binary result. */
int64_t pg_col_i64(const PGresult *r, int row, int col);
int32_t pg_col_i32(const PGresult *r, int row, int col);
int pg_col_bool(const PGresult *r, int row, int col);
/* A text column into out: 0, or -1 if NULL or too long. */
int pg_col_str(const PGresult *r, int row, int col, char *out, size_t cap);
/* A stored path column (pg_path_store) into out: 0, or -1 if NULL, too
 * long or not one pg_path_store makes. */
int pg_col_path(const PGresult *r, int row, int col, char *out, size_t cap);
/* A bytea column of exactly n bytes into out: 1 copied, 0 NULL, -1 else. */
int pg_col_exact(const PGresult *r, int row, int col, uint8_t *out, size_t n);

/* pg_write.c: the writes from first up to (not including) end in one
 * transaction; r alone in one of its own. Each request's rc is set. */
void pg_write_batch(struct pg_conn *pc, struct bw_meta_req *first,
		    struct bw_meta_req *end);
void pg_write_alone(struct pg_conn *pc, struct bw_meta_req *r);

/* pg_ops.c: a request that takes one statement (a registration, a key, a
 * message's insert or drop): its statement id and parameters, or -1; and
 * its outcome from that statement's successful result. */
int pg_one_statement(const struct bw_meta_req *r, struct pg_params *p);
int pg_one_result(struct bw_meta_req *r, PGresult *res);
/* The name a statement is prepared under, into name[16]. */
void pg_stmt_name(enum pg_stmt id, char name[16]);
/* pg_sql.c: the schema's step to version v + 1 (v from 0), and id's
 * statement prepared on c under name. */
const char *pg_sql_migration(int64_t v);
PGresult *pg_sql_prepare(PGconn *c, const char *name, enum pg_stmt id);

/* pg_ops.c: one request's statements, inside the caller's transaction (or
 * alone, for reads). *abort is set when the transaction must be rolled
 * back for this request (a statement failed, or it refused itself). */
int pg_op(struct pg_conn *pc, struct bw_meta_req *r, int *abort);
/* A page of a read (MSG_READ): at most page rows after r->be_after, the
 * result kept in r->be_res for the loop thread. */
int pg_read_page(struct pg_conn *pc, struct bw_meta_req *r, unsigned page);
/* Gives the rows of a page kept by pg_read_page to r's row callback: 1 if
 * the read goes on with another page, 0 if it is over. */
int pg_read_replay(struct bw_meta_req *r, unsigned page);

/* Whole tables, streamed one row at a time. */
int pg_load_clients(struct pg_conn *pc, bw_meta_client_cb cb, void *arg) BW_WUR;
/* pg_reads.c: rows read again on a store several daemons share */
/* Row i of a SELECT ID, Name, PublicKey, LastSeen (epoch), AESKey,
 * KeyIssued, KeyUsed FROM clients: 0, or BW_EDB if it cannot be read. */
int pg_client_rec(const PGresult *res, int i, struct bw_client_rec *c) BW_WUR;
/* Row i of a SELECT ID, FileName, PathName, Verified, PendingName,
 * PendingPath FROM files: 0, or BW_EDB. */
int pg_file_rec(const PGresult *res, int i, struct bw_file_rec *f) BW_WUR;
/* BW_META_CLIENT_GET and BW_META_FILE_GET: one round trip each. */
int pg_client_get(struct pg_conn *pc, struct bw_meta_req *r) BW_WUR;
int pg_file_get(struct pg_conn *pc, struct bw_meta_req *r) BW_WUR;
/* BW_META_CLIENT_SINCE: one round trip. */
int pg_client_since(struct pg_conn *pc, struct bw_meta_req *r) BW_WUR;
/* Any of the reads again (CLIENT_GET, FILE_GET, CLIENT_SINCE, TOTALS). */
int pg_get(struct pg_conn *pc, struct bw_meta_req *r) BW_WUR;

/* pg_reads.c: the locks kept across sessions (bw_meta_req.u.lock.keep),
 * the reader thread's: each with the session it is held on (pg_conn's
 * connection attempts when it was taken: a backend pid may be given
 * again). pg_kept_note follows a request's lock or unlock; pg_kept_retake,
 * once pc is a new session, takes the others again there. */
struct pg_kept_lock {
	int64_t key;
	uint64_t session;
};
struct pg_kept {
	struct pg_kept_lock *v;
	size_t n, cap;
	size_t elsewhere; /* held by another session at the last try */
};
void pg_kept_note(struct pg_kept *k, const struct pg_conn *pc,
		  const struct bw_meta_req *r);
void pg_kept_retake(struct pg_kept *k, struct pg_conn *pc);
void pg_kept_free(struct pg_kept *k);
int pg_load_files(struct pg_conn *pc, bw_meta_file_cb cb, void *arg) BW_WUR;
int pg_msg_totals(struct pg_conn *pc, bw_meta_totals_cb cb, void *arg) BW_WUR;
int pg_msg_blobs(struct pg_conn *pc, bw_meta_blobs_cb cb, void *arg) BW_WUR;
int pg_msg_last_id(struct pg_conn *pc, int64_t *out) BW_WUR;

#endif
