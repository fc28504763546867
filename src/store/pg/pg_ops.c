/* The PostgreSQL backend's requests: each operation of host/meta.h as the
 * statements it takes (most take one round trip), and the reads of
 * messages a page at a time. The start-up loads are pg_load.c.
 */
#include <arpa/inet.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "store/pg/pg_int.h"

/* Runs statement id; its result goes if keep is NULL. *changed: rows. */
static int
step(struct pg_conn *pc, enum pg_stmt id, const struct pg_params *p,
     const char *what, uint64_t *changed, PGresult **keep)
{
	PGresult *res = pg_run(pc, id, p);
	int rc = pg_result_rc(pc, res, what);

	if (rc == 0 && changed != NULL)
		*changed = strtoull(PQcmdTuples(res), NULL, 10);
	if (rc == 0 && keep != NULL) {
		*keep = res;
		return 0;
	}
	PQclear(res);
	return rc;
}

/* --- requests of one statement (a pipeline may carry them) -------------
 */

int
pg_one_statement(const struct bw_meta_req *r, struct pg_params *p)
{
	const struct bw_client_rec *c = r->u.client;
	const struct bw_msg_rec *m = r->u.msg;

	memset(p, 0, sizeof(*p));
	switch (r->op) {
	case BW_META_CLIENT_INSERT:
		pg_p_bytes(p, c->id, BW_ID_LEN);
		pg_p_bytes(p, c->name, strlen(c->name));
		pg_p_bytes(p, c->has_pubkey ? c->pubkey : NULL, BW_RSA_PUB_LEN);
		pg_p_i64(p, c->last_seen);
		pg_p_bytes(p, c->has_aes ? c->aes_key : NULL, BW_AES_KEY_LEN);
		pg_p_i64(p, c->key_issued);
		pg_p_bool(p, c->key_used);
		pg_p_bytes(p, c->name_key,
			   c->name_key != NULL ? strlen(c->name_key) : 0);
		return PS_CLIENT_INSERT;
	case BW_META_CLIENT_KEY:
		pg_p_bytes(p, r->u.key.id, BW_ID_LEN);
		pg_p_bytes(p, r->u.key.pubkey, BW_RSA_PUB_LEN);
		pg_p_bytes(p, r->u.key.aes, BW_AES_KEY_LEN);
		pg_p_i64(p, r->u.key.issued);
		pg_p_bool(p, r->u.key.used);
		pg_p_i64(p, r->u.key.last_seen);
		return PS_CLIENT_SET_KEY;
	case BW_META_CLIENT_TLS_ONLY:
		pg_p_bytes(p, r->u.key.id, BW_ID_LEN);
		return PS_CLIENT_TLS_ONLY;
	case BW_META_MSG_INSERT:
		if (m->size > INT_MAX && m->path[0] == '\0')
			return -1; /* refused by pg_op */
		pg_p_bytes(p, m->to, BW_ID_LEN);
		pg_p_bytes(p, m->from, BW_ID_LEN);
		pg_p_i32(p, (int32_t)m->type);
		if (m->path[0] == '\0')
			pg_p_bytes(p,
				   m->content != NULL ? m->content
						      : (const void *)"",
				   (size_t)m->size);
		else
			pg_p_bytes(p, NULL, 0);
		pg_p_i64(p, (int64_t)m->size);
		pg_p_opt_text(p, m->path);
		return PS_MSG_INSERT;
	case BW_META_MSG_DROP:
		pg_p_i64(p, r->u.drop);
		return PS_MSG_DROP;
	case BW_META_MSG_DROP_PATH:
		pg_p_opt_text(p, r->u.drop_path);
		return PS_MSG_DROP_PATH;
	default:
		return -1;
	}
}

int
pg_one_result(struct bw_meta_req *r, PGresult *res)
{
	uint64_t n = strtoull(PQcmdTuples(res), NULL, 10);

	switch (r->op) {
	case BW_META_CLIENT_INSERT:
		return n == 1 ? 0 : BW_EEXIST; /* ON CONFLICT DO NOTHING */
	case BW_META_CLIENT_KEY:
	case BW_META_CLIENT_TLS_ONLY:
	case BW_META_MSG_DROP:
	case BW_META_MSG_DROP_PATH:
		return n > 0 ? 0 : BW_ENOTFOUND;
	case BW_META_MSG_INSERT:
		r->u.msg->id = PQntuples(res) == 1 ? pg_col_i64(res, 0, 0) : 0;
		if (r->u.msg->id <= 0 || r->u.msg->id > BW_META_MSG_ID_MAX)
			return BW_EDB;
		return 0;
	default:
		return 0;
	}
}

/* A request of one statement, alone. */
static int
one(struct pg_conn *pc, struct bw_meta_req *r, const char *what)
{
	struct pg_params p;
	PGresult *res;
	int id = pg_one_statement(r, &p), rc;

	if (id < 0)
		return BW_ETOOBIG;
	res = pg_run(pc, (enum pg_stmt)id, &p);
	if ((rc = pg_result_rc(pc, res, what)) == 0)
		rc = pg_one_result(r, res);
	PQclear(res);
	return rc;
}

/* PostgreSQL's binary array of n elements of size each (one dimension,
 * no NULLs) into out: 20 bytes of header, then a length and the bytes of
 * each. */
static size_t
array_head(unsigned char *out, uint32_t oid, uint32_t n)
{
	const uint32_t head[5] = {htonl(1), htonl(0), htonl(oid), htonl(n),
				  htonl(1)};

	memcpy(out, head, sizeof(head));
	return sizeof(head);
}

static size_t
array_elem(unsigned char *out, const void *p, uint32_t len)
{
	uint32_t be = htonl(len);

	memcpy(out, &be, 4);
	memcpy(out + 4, p, len);
	return 4 + (size_t)len;
}

#define TOUCH_BATCH 1000u

/* LastSeen of up to TOUCH_BATCH clients per statement; a client dropped
 * meanwhile changes nothing, which is not an error. */
static int
client_touch(struct pg_conn *pc, const struct bw_meta_req *r)
{
	unsigned char *ids = NULL, *times = NULL, t[8];
	struct pg_params p;
	size_t i, j, k, n, oi, ot;
	uint64_t u;
	int rc = 0, b;

	if (r->u.touch.n == 0)
		return 0;
	n = r->u.touch.n < TOUCH_BATCH ? r->u.touch.n : TOUCH_BATCH;
	if ((ids = malloc(20 + n * (4 + BW_ID_LEN))) == NULL ||
	    (times = malloc(20 + n * (4 + 8))) == NULL) {
		free(ids);
		return BW_ENOMEM;
	}
	for (i = 0; i < r->u.touch.n && rc == 0; i += n) {
		k = r->u.touch.n - i < n ? r->u.touch.n - i : n;
		oi = array_head(ids, 17, (uint32_t)k);	 /* bytea */
		ot = array_head(times, 20, (uint32_t)k); /* int8 */
		for (j = 0; j < k; j++) {
			oi += array_elem(ids + oi, r->u.touch.v[i + j].id,
					 BW_ID_LEN);
			u = (uint64_t)r->u.touch.v[i + j].last_seen;
			for (b = 7; b >= 0; b--, u >>= 8)
				t[b] = (unsigned char)(u & 0xff);
			ot += array_elem(times + ot, t, 8);
		}
		memset(&p, 0, sizeof(p));
		pg_p_bytes(&p, ids, oi);
		pg_p_bytes(&p, times, ot);
		rc = step(pc, PS_CLIENT_TOUCH, &p, "LastSeen", NULL, NULL);
	}
	free(ids);
	free(times);
	return rc;
}

/* Whether the reader's session, which takes this daemon's advisory locks,
 * still holds key: 0, or BW_EBUSY when it does not (that session ended,
 * the lock with it, and another daemon may hold it now). Run inside the
 * write it fences: the write is refused with it. */
static int
fence(struct pg_conn *pc, int64_t key)
{
	struct pg_params p = {0};
	PGresult *res;
	int rc, pid = pc->locks_on != NULL
			      ? atomic_load(&pc->locks_on->backend_pid)
			      : 0;

	if (pid == 0)
		rc = BW_EBUSY;
	else {
		pg_p_i64(&p, pid);
		pg_p_i64(&p, (int64_t)(((uint64_t)key >> 32) & 0xffffffffu));
		pg_p_i64(&p, (int64_t)((uint64_t)key & 0xffffffffu));
		res = PQexecParams(pc->c,
				   "SELECT 1 FROM pg_locks WHERE locktype = "
				   "'advisory' AND pid = $1::int8 AND "
				   "classid::int8 = $2::int8 AND objid::int8 = "
				   "$3::int8 AND objsubid = 1 AND granted",
				   p.n, NULL, p.v, p.len, p.fmt, 1);
		rc = pg_result_rc(pc, res, "a lock's holder");
		if (rc == 0 && PQntuples(res) != 1)
			rc = BW_EBUSY;
		PQclear(res);
	}
	if (rc == BW_EBUSY)
		bw_warn("store: a lock of this node's (%lld) went with its "
			"session to PostgreSQL: the change it guards is "
			"refused",
			(long long)key);
	return rc;
}

static int
file_set(struct pg_conn *pc, const struct bw_meta_req *r)
{
	const struct bw_file_rec *f = r->u.file.rec;
	struct pg_params p = {0};
	char path[PG_PATH_STORED], cur[PG_PATH_STORED], pend[PG_PATH_STORED];
	int rc;

	/* a name in Latin-1 (bytes the database would refuse in text) is
	 * kept, in the form pg_col_path reads back */
	if (pg_path_store(r->u.file.path, path) != 0 ||
	    (f != NULL && (pg_path_store(f->path_name, cur) != 0 ||
			   pg_path_store(f->pending_path, pend) != 0)))
		return BW_ETOOBIG;
	pg_p_bytes(&p, r->u.file.id, BW_ID_LEN);
	pg_p_text(&p, path);
	pg_p_bytes(&p, f != NULL ? f->file_name : "",
		   f != NULL ? strlen(f->file_name) : 0);
	if ((rc = step(pc, PS_FILE_DROP, &p, "a file", NULL, NULL)) != 0)
		return rc;
	/* last, just before the commit (a statement may have waited on
	 * another's row lock meanwhile) */
	if (f == NULL)
		return r->u.file.fence != 0 ? fence(pc, r->u.file.fence) : 0;
	memset(&p, 0, sizeof(p));
	pg_p_bytes(&p, r->u.file.id, BW_ID_LEN);
	pg_p_bytes(&p, f->file_name, strlen(f->file_name));
	pg_p_text(&p, cur);
	pg_p_bool(&p, f->verified);
	pg_p_bytes(&p, f->pending_name[0] != '\0' ? f->pending_name : NULL,
		   strlen(f->pending_name));
	pg_p_opt_text(&p, pend);
	pg_p_i64(&p, f->uploader);
	if ((rc = step(pc, PS_FILE_INSERT, &p, "a file", NULL, NULL)) != 0)
		return rc;
	return r->u.file.fence != 0 ? fence(pc, r->u.file.fence) : 0;
}

/* A message under its own id, and ids issued later above it. */
static int
msg_put(struct pg_conn *pc, const struct bw_msg_rec *m)
{
	struct pg_params p = {0};
	uint64_t n = 0;
	int rc;

	if (m->id <= 0 || m->id > BW_META_MSG_ID_MAX ||
	    (m->size > INT_MAX && m->path[0] == '\0'))
		return BW_ETOOBIG;
	pg_p_i64(&p, m->id);
	pg_p_bytes(&p, m->to, BW_ID_LEN);
	pg_p_bytes(&p, m->from, BW_ID_LEN);
	pg_p_i32(&p, (int32_t)m->type);
	if (m->path[0] == '\0')
		pg_p_bytes(&p,
			   m->content != NULL ? m->content : (const void *)"",
			   (size_t)m->size);
	else
		pg_p_bytes(&p, NULL, 0);
	pg_p_i64(&p, (int64_t)m->size);
	pg_p_opt_text(&p, m->path);
	if ((rc = step(pc, PS_MSG_PUT, &p, "a message", &n, NULL)) != 0)
		return rc;
	if (n != 1)
		return BW_EEXIST;
	memset(&p, 0, sizeof(p));
	pg_p_i64(&p, m->id);
	return step(pc, PS_MSG_FLOOR, &p, "the message ids", NULL, NULL);
}

/* ids as an array's text, "{1,2,3}" (heap), or NULL. */
static char *
id_array(const int64_t *ids, size_t n)
{
	size_t i, at = 1, cap;
	char *s;

	/* "," and 20 digits each at most, the braces and the NUL */
	if (n > (SIZE_MAX - 3) / 21 || (s = malloc(cap = n * 21 + 3)) == NULL)
		return NULL;
	s[0] = '{';
	for (i = 0; i < n; i++)
		at += (size_t)snprintf(s + at, cap - at,
				       i > 0 ? ",%lld" : "%lld",
				       (long long)ids[i]);
	snprintf(s + at, cap - at, "}");
	return s;
}

/* The messages a reply carried: those ids only (with several writers a
 * lower id can commit after a higher one was read, and is not among
 * them), or all up to upto. */
static int
msg_delete(struct pg_conn *pc, struct bw_meta_req *r, int *abort)
{
	struct pg_params p = {0};
	PGresult *res = NULL;
	char path[BW_PATH_CAP], *ids = NULL;
	int i, rows, rc;

	r->u.del.n = r->u.del.bytes = 0;
	if (r->u.del.gen != 0) {
		/* a later pull (any node's) may have planned these rows:
		 * they stay, delivered again */
		pg_p_bytes(&p, r->u.del.to, BW_ID_LEN);
		pg_p_i64(&p, r->u.del.gen);
		if ((rc = step(pc, PS_PULL_HOLD, &p, "the client's pulls", NULL,
			       &res)) != 0) {
			*abort = 1; /* the transaction is aborted: the batch
				     * is tried again request by request */
			return rc;
		}
		rows = PQntuples(res);
		PQclear(res);
		res = NULL;
		if (rows != 1)
			return 0;
		memset(&p, 0, sizeof(p));
	}
	if (r->u.del.ids != NULL &&
	    (ids = id_array(r->u.del.ids, r->u.del.ids_n)) == NULL)
		return BW_ENOMEM;
	pg_p_bytes(&p, r->u.del.to, BW_ID_LEN);
	pg_p_i64(&p, r->u.del.upto);
	pg_p_text(&p, ids);
	rc = step(pc, PS_MSG_DELETE, &p, "delivered messages", NULL, &res);
	free(ids);
	if (rc != 0) {
		*abort = 1;
		return rc;
	}
	rows = PQntuples(res);
	for (i = 0; i < rows && rc == 0; i++) {
		r->u.del.bytes += (uint64_t)pg_col_i64(res, i, 1);
		if (pg_col_str(res, i, 0, path, sizeof(path)) == 0 &&
		    r->u.del.path != NULL)
			rc = r->u.del.path(r->u.del.path_arg, path);
	}
	PQclear(res);
	r->u.del.n = (uint64_t)rows;
	if (rc != 0) {
		*abort = 1; /* the caller could not keep the keys: undone */
		r->u.del.n = r->u.del.bytes = 0;
	}
	return rc;
}

static int
client_fail(struct pg_conn *pc, struct bw_meta_req *r)
{
	struct pg_params p = {0};
	PGresult *res = NULL;
	int rc;

	pg_p_bytes(&p, r->u.fail.id, BW_ID_LEN);
	pg_p_bytes(&p, r->u.fail.aes, BW_AES_KEY_LEN);
	r->u.fail.count = 0;
	if ((rc = step(pc, PS_CLIENT_FAIL, &p, "a key's failures", NULL,
		       &res)) != 0)
		return rc;
	if (PQntuples(res) == 1)
		r->u.fail.count = (unsigned)pg_col_i64(res, 0, 0);
	PQclear(res);
	return 0;
}

static int
pull_gen(struct pg_conn *pc, struct bw_meta_req *r)
{
	struct pg_params p = {0};
	PGresult *res = NULL;
	int rc;

	r->u.pull.gen = 0;
	pg_p_bytes(&p, r->u.pull.id, BW_ID_LEN);
	if ((rc = step(pc, PS_PULL_GEN, &p, "the client's pulls", NULL,
		       &res)) != 0)
		return rc;
	if (PQntuples(res) == 1)
		r->u.pull.gen = pg_col_i64(res, 0, 0);
	PQclear(res);
	return r->u.pull.gen > 0 ? 0 : BW_ENOTFOUND;
}

int
pg_op(struct pg_conn *pc, struct bw_meta_req *r, int *abort)
{
	struct pg_params p = {0};
	int rc;

	*abort = 0;
	switch (r->op) {
	case BW_META_CLIENT_INSERT:
		rc = one(pc, r, "a new client");
		break;
	case BW_META_CLIENT_KEY:
		rc = one(pc, r, "a key");
		break;
	case BW_META_CLIENT_TLS_ONLY:
		rc = one(pc, r, "a client's TLS-only mark");
		break;
	case BW_META_CLIENT_TOUCH:
		rc = client_touch(pc, r);
		break;
	case BW_META_FILE_SET:
		rc = file_set(pc, r);
		break;
	case BW_META_MSG_INSERT:
		rc = one(pc, r, "a message");
		break;
	case BW_META_MSG_DROP:
	case BW_META_MSG_DROP_PATH:
		rc = one(pc, r, "a message");
		break;
	case BW_META_MSG_DELETE:
		return msg_delete(pc, r, abort);
	case BW_META_MSG_PUT:
		rc = msg_put(pc, r->u.msg);
		break;
	case BW_META_MSG_FLOOR:
		pg_p_i64(&p, r->u.drop);
		rc = step(pc, PS_MSG_FLOOR, &p, "the message ids", NULL, NULL);
		break;
	case BW_META_CLIENT_FAIL:
		rc = client_fail(pc, r);
		break;
	case BW_META_FENCE:
		rc = fence(pc, r->u.lock.key);
		break;
	case BW_META_MSG_PULL_GEN:
		rc = pull_gen(pc, r);
		break;
	case BW_META_SYNC:
		return 0;
	case BW_META_MSG_READ:
	default:
		return BW_ECONFIG; /* not a write */
	}
	/* a refusal (a name taken, no such client: no statement failed)
	 * changed nothing; any other failure, a unique violation included,
	 * leaves the transaction aborted */
	if (rc != 0 &&
	    (pc->stmt_failed || (rc != BW_EEXIST && rc != BW_ENOTFOUND)))
		*abort = 1;
	return rc;
}

/* --- reads of messages, a page at a time ---------------------------------
 */

int
pg_read_page(struct pg_conn *pc, struct bw_meta_req *r, unsigned page)
{
	struct pg_params p = {0};
	PGresult *res = NULL;
	unsigned want = page;
	int rc;

	if (r->u.read.limit > 0 && r->u.read.limit - r->be_rows < want)
		want = r->u.read.limit - r->be_rows;
	pg_p_bytes(&p, r->u.read.to, BW_ID_LEN);
	pg_p_i64(&p,
		 r->be_after > r->u.read.after ? r->be_after : r->u.read.after);
	pg_p_i64(&p, r->u.read.upto > 0 ? r->u.read.upto : INT64_MAX);
	pg_p_i64(&p, (int64_t)want);
	pg_p_bool(&p, r->u.read.content);
	if ((rc = step(pc, PS_MSG_EACH, &p, "messages", NULL, &res)) != 0)
		return rc;
	r->be_res = res;
	return 0;
}

int
pg_read_replay(struct bw_meta_req *r, unsigned page)
{
	PGresult *res = r->be_res;
	struct bw_msg_rec m;
	int i, rows = PQntuples(res), more;
	unsigned want = page;

	if (r->u.read.limit > 0 && r->u.read.limit - r->be_rows < want)
		want = r->u.read.limit - r->be_rows;
	more = (unsigned)rows == want;
	for (i = 0; i < rows; i++) {
		memset(&m, 0, sizeof(m));
		m.id = pg_col_i64(res, i, 0);
		r->be_after = m.id;
		r->be_rows++;
		memcpy(m.to, r->u.read.to, BW_ID_LEN);
		if (pg_col_exact(res, i, 1, m.from, BW_ID_LEN) != 1 ||
		    pg_col_i64(res, i, 3) < 0)
			continue; /* a row no client can have sent */
		m.type = (unsigned)pg_col_i32(res, i, 2);
		m.size = (uint64_t)pg_col_i64(res, i, 3);
		if (pg_col_str(res, i, 4, m.path, sizeof(m.path)) != 0)
			m.path[0] = '\0';
		if (r->u.read.content && m.path[0] == '\0') {
			m.content = (const uint8_t *)PQgetvalue(res, i, 5);
			m.size = (uint64_t)PQgetlength(res, i, 5);
		}
		if (r->u.read.row(r->u.read.row_arg, &m) != 0) {
			more = 0;
			break;
		}
	}
	PQclear(res);
	r->be_res = NULL;
	if (r->u.read.limit > 0 && r->be_rows >= r->u.read.limit)
		more = 0;
	return more;
}
