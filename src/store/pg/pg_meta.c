/* The PostgreSQL backend of the metadata table (host/meta.h), for
 * "postgresql://" URLs. The loop never waits for the network: requests
 * submitted during a pass are handed, at its end, to a thread of the
 * backend's that owns the connection, and come back through an eventfd
 * watched by the loop, whose pass completes them.
 *
 * The thread takes everything queued since it last looked (so requests
 * that arrive while it waits for the server form the next batch: group
 * commit) and runs each run of consecutive writes as one transaction:
 * BEGIN, each request's statements, COMMIT, with synchronous_commit on, so
 * every write is durable when it completes and BW_META_DURABLE costs
 * nothing more. A request that fails inside a batch (a statement refused,
 * or a caller's callback) rolls the batch back and its requests run again
 * one transaction each, so one bad request undoes only itself. Reads run
 * outside any transaction, after the writes before them have committed:
 * what they see is durable. A read's rows come back a page at a time and
 * are given to its row callback on the loop thread.
 *
 * A connection lost fails what is in flight (BW_EDB: the services answer
 * with the protocol's error), is logged once, and is made again with a
 * backoff; requests meanwhile fail at once rather than wait.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "store/pg/pg_int.h"

#define PAGE 256u /* rows of a read per round trip */

struct pgq {
	struct pg_conn pc;
	struct bw_loop *loop;
	/* the connection's owner: the thread, or start-up work */
	pthread_mutex_t conn_mu;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct bw_meta_req *queue, **queue_tail; /* mu: for the thread */
	struct bw_meta_req *done, **done_tail;	 /* mu: for the loop */
	int quit;				 /* mu */
	pthread_t thread;
	int thread_on;
	int efd;
	struct bw_watch watch;
	/* the reader: rows read again for a shared store, on a connection
	 * of their own, so that they never wait behind a slow write (its
	 * queue under mu, its thread quits with quit) */
	struct pg_conn rpc;
	struct pg_kept kept; /* the reader's: claims kept across sessions */
	struct bw_meta_req *rqueue, **rqueue_tail;
	pthread_cond_t rcv;
	pthread_t rthread;
	int rthread_on;
	/* loop thread: submitted during this pass */
	struct bw_meta_req *pass, **pass_tail;
	struct bw_call pass_call;
	int closing;
};

/* (bw_meta_op_traits says which operations write) */
static int
is_write(const struct bw_meta_req *r)
{
	return bw_meta_op_writes(r->op);
}

/* --- the thread ------------------------------------------------------------
 */

/* the shared store's own reads (and its locks): outside the writers'
 * transactions */
static int
is_get(const struct bw_meta_req *r)
{
	return bw_meta_op_shared_only(r->op) && !bw_meta_op_writes(r->op);
}

/* A read of rows again (the connection's mutex held). */
static int
get(struct pgq *q, struct bw_meta_req *r)
{
	int rc = pg_conn_ready(&q->pc);

	if (rc != 0)
		return rc;
	return pg_get(&q->pc, r);
}

static void
run_list(struct pgq *q, struct bw_meta_req *list)
{
	struct bw_meta_req *r = list, *first;

	while (r != NULL) {
		if (r->op == BW_META_MSG_READ) {
			if ((r->rc = pg_conn_ready(&q->pc)) == 0)
				r->rc = pg_read_page(&q->pc, r, PAGE);
			r = r->next;
			continue;
		}
		if (is_get(r)) {
			r->rc = get(q, r);
			r = r->next;
			continue;
		}
		if (r->op == BW_META_SYNC) {
			/* what came before committed durably, or failed */
			r->rc = 0;
			r = r->next;
			continue;
		}
		first = r;
		while (r != NULL && is_write(r))
			r = r->next;
		pg_write_batch(&q->pc, first, r);
	}
}

static struct timespec *
in_a_second(struct timespec *at)
{
	(void)clock_gettime(CLOCK_REALTIME, at);
	at->tv_sec += 1;
	return at;
}

static void *
reader_main(void *arg)
{
	struct pgq *q = arg;
	struct timespec at;
	struct bw_meta_req *list, *r, *last;
	uint64_t one = 1;

	pthread_mutex_lock(&q->mu);
	for (;;) {
		/* with claims kept, the session is looked at every second:
		 * one that was lost is made again and they are taken again
		 * there, without waiting for a request */
		if (q->rqueue == NULL && !q->quit && q->kept.n == 0)
			pthread_cond_wait(&q->rcv, &q->mu);
		else if (q->rqueue == NULL && !q->quit)
			(void)pthread_cond_timedwait(&q->rcv, &q->mu,
						     in_a_second(&at));
		if ((list = q->rqueue) == NULL && q->quit)
			break;
		q->rqueue = NULL;
		q->rqueue_tail = &q->rqueue;
		pthread_mutex_unlock(&q->mu);
		pg_kept_retake(&q->kept, &q->rpc);
		for (r = list; r != NULL; r = r->next) {
			if ((r->rc = pg_conn_ready(&q->rpc)) == 0)
				r->rc = pg_get(&q->rpc, r);
			pg_kept_note(&q->kept, &q->rpc, r);
			last = r;
		}
		pthread_mutex_lock(&q->mu);
		if (list == NULL)
			continue;
		*q->done_tail = list;
		q->done_tail = &last->next;
		(void)!write(q->efd, &one, sizeof(one));
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

static void *
thread_main(void *arg)
{
	struct pgq *q = arg;
	struct bw_meta_req *list, *last;
	uint64_t one = 1;

	pthread_mutex_lock(&q->mu);
	for (;;) {
		while (q->queue == NULL && !q->quit)
			pthread_cond_wait(&q->cv, &q->mu);
		if ((list = q->queue) == NULL)
			break; /* quit, and nothing left */
		q->queue = NULL;
		q->queue_tail = &q->queue;
		pthread_mutex_unlock(&q->mu);
		pthread_mutex_lock(&q->conn_mu);
		run_list(q, list);
		pthread_mutex_unlock(&q->conn_mu);
		for (last = list; last->next != NULL; last = last->next)
			;
		pthread_mutex_lock(&q->mu);
		*q->done_tail = list;
		q->done_tail = &last->next;
		(void)!write(q->efd, &one, sizeof(one));
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

/* --- the loop's side -------------------------------------------------------
 */

/* list (linked through next, ending in NULL) to the thread. */
static void
hand_over(struct pgq *q, struct bw_meta_req *list,
	  struct bw_meta_req **last_next)
{
	pthread_mutex_lock(&q->mu);
	*q->queue_tail = list;
	q->queue_tail = last_next;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

static void
end_of_pass(void *arg)
{
	struct pgq *q = arg;
	struct bw_meta_req *list = q->pass, *r, *next, *reads = NULL;
	struct bw_meta_req **tail = &list, **rtail = &reads;

	q->pass = NULL;
	q->pass_tail = &q->pass;
	/* reads again to the reader; the rest, in order, to the thread */
	for (r = list; r != NULL; r = next) {
		next = r->next;
		r->next = NULL;
		if (is_get(r) && q->rthread_on) {
			*rtail = r;
			rtail = &r->next;
		} else {
			*tail = r;
			tail = &r->next;
		}
	}
	*tail = NULL;
	if (reads != NULL) {
		pthread_mutex_lock(&q->mu);
		*q->rqueue_tail = reads;
		q->rqueue_tail = rtail;
		pthread_cond_signal(&q->rcv);
		pthread_mutex_unlock(&q->mu);
	}
	if (list != NULL)
		hand_over(q, list, tail);
}

/* r's rows to its callback and, if the read goes on, its next page asked
 * for: 1 if r is not over. */
static int
replay(struct pgq *q, struct bw_meta_req *r)
{
	if (r->op != BW_META_MSG_READ || r->be_res == NULL)
		return 0;
	if (r->rc != 0 || q->closing) {
		PQclear(r->be_res);
		r->be_res = NULL;
		if (r->rc == 0)
			r->rc = BW_ECLOSED;
		return 0;
	}
	if (!pg_read_replay(r, PAGE))
		return 0;
	r->next = NULL;
	hand_over(q, r, &r->next);
	return 1;
}

static void
complete_done(struct pgq *q)
{
	struct bw_meta_req *list, *r, *next;

	pthread_mutex_lock(&q->mu);
	list = q->done;
	q->done = NULL;
	q->done_tail = &q->done;
	pthread_mutex_unlock(&q->mu);
	for (r = list; r != NULL; r = next) {
		next = r->next;
		if (!replay(q, r))
			r->done(r); /* may free r */
	}
}

static void
on_efd(void *arg, unsigned events)
{
	struct pgq *q = arg;
	uint64_t v;

	(void)events;
	(void)!read(q->efd, &v, sizeof(v));
	complete_done(q);
}

static void
pg_submit(void *state, struct bw_meta_req *r)
{
	struct pgq *q = state;

	r->rc = 0;
	r->next = NULL;
	r->be_res = NULL;
	r->be_after = 0;
	r->be_rows = 0;
	if (q->closing) {
		r->rc = BW_ECLOSED;
		r->done(r);
		return;
	}
	*q->pass_tail = r;
	q->pass_tail = &r->next;
	bw_loop_call(q->loop, &q->pass_call, end_of_pass, q);
}

/* --- start-up and the table -------------------------------------------------
 */

static int
pg_run_now(void *state, struct bw_meta_req *r)
{
	struct pgq *q = state;
	int more;

	pthread_mutex_lock(&q->conn_mu);
	r->be_res = NULL;
	r->be_after = 0;
	r->be_rows = 0;
	if (r->op == BW_META_MSG_READ) {
		do {
			if ((r->rc = pg_conn_ready(&q->pc)) != 0 ||
			    (r->rc = pg_read_page(&q->pc, r, PAGE)) != 0)
				break;
			more = pg_read_replay(r, PAGE);
		} while (more);
	} else if (r->op == BW_META_SYNC) {
		r->rc = 0;
	} else if (is_get(r)) {
		r->rc = get(q, r);
	} else {
		r->next = NULL;
		pg_write_alone(&q->pc, r);
	}
	pthread_mutex_unlock(&q->conn_mu);
	return r->rc;
}

#define LOCKED(q, call)                                                        \
	do {                                                                   \
		int rc_;                                                       \
		pthread_mutex_lock(&(q)->conn_mu);                             \
		if ((rc_ = pg_conn_ready(&(q)->pc)) == 0)                      \
			rc_ = (call);                                          \
		pthread_mutex_unlock(&(q)->conn_mu);                           \
		return rc_;                                                    \
	} while (0)

static int
pg_load_clients_(void *state, bw_meta_client_cb cb, void *arg)
{
	struct pgq *q = state;

	LOCKED(q, pg_load_clients(&q->pc, cb, arg));
}

static int
pg_load_files_(void *state, bw_meta_file_cb cb, void *arg)
{
	struct pgq *q = state;

	LOCKED(q, pg_load_files(&q->pc, cb, arg));
}

static int
pg_msg_totals_(void *state, bw_meta_totals_cb cb, void *arg)
{
	struct pgq *q = state;

	LOCKED(q, pg_msg_totals(&q->pc, cb, arg));
}

static int
pg_msg_blobs_(void *state, bw_meta_blobs_cb cb, void *arg)
{
	struct pgq *q = state;

	LOCKED(q, pg_msg_blobs(&q->pc, cb, arg));
}

static int
pg_msg_last_id_(void *state, int64_t *out)
{
	struct pgq *q = state;

	LOCKED(q, pg_msg_last_id(&q->pc, out));
}

static void
pg_stats(const void *state, bw_stat_emit emit, void *arg)
{
	const struct pgq *q = state;

	emit(arg, "store_connected", "connected to PostgreSQL (1) or not (0)",
	     (uint64_t)atomic_load(&q->pc.connected));
	emit(arg, "store_reconnects_total",
	     "attempts to connect to PostgreSQL again after a loss",
	     atomic_load(&q->pc.reconnects));
	emit(arg, "store_refusals_total",
	     "statements PostgreSQL refused (not counting a lost connection)",
	     atomic_load(&q->pc.failures));
	emit(arg, "store_commits_total", "transactions committed",
	     atomic_load(&q->pc.commits));
}

static uint64_t
pg_syncs(const void *state)
{
	const struct pgq *q = state;

	return atomic_load(&q->pc.commits);
}

static void
pg_close(void *state)
{
	struct pgq *q = state;

	if (q == NULL)
		return;
	/* the loop is gone (its last deferred calls handed over what was
	 * submitted): the thread finishes it, then whoever waits is told */
	q->closing = 1;
	end_of_pass(q);
	pthread_mutex_lock(&q->mu);
	q->quit = 1;
	pthread_cond_signal(&q->cv);
	pthread_cond_signal(&q->rcv);
	pthread_mutex_unlock(&q->mu);
	if (q->thread_on)
		pthread_join(q->thread, NULL);
	if (q->rthread_on)
		pthread_join(q->rthread, NULL);
	complete_done(q);
	if (q->efd >= 0)
		close(q->efd);
	pg_conn_close(&q->pc);
	pg_conn_close(&q->rpc);
	pg_kept_free(&q->kept);
	pthread_mutex_destroy(&q->conn_mu);
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->cv);
	pthread_cond_destroy(&q->rcv);
	free(q);
}

/* where: the URL after "postgresql:" (meta.c maps "postgres:" here). */
static int
open_url(const char *scheme, const char *where, struct bw_loop *loop,
	 void **state)
{
	struct pgq *q = calloc(1, sizeof(*q));
	size_t n = strlen(scheme) + 1 + strlen(where) + 1;
	char *url = NULL;
	int rc;

	if (q == NULL || (url = malloc(n)) == NULL) {
		free(q);
		return BW_ENOMEM;
	}
	snprintf(url, n, "%s:%s", scheme, where);
	q->loop = loop;
	q->efd = -1;
	q->queue_tail = &q->queue;
	q->done_tail = &q->done;
	q->pass_tail = &q->pass;
	q->rqueue_tail = &q->rqueue;
	pthread_mutex_init(&q->conn_mu, NULL);
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	pthread_cond_init(&q->rcv, NULL);
	*state = q;
	q->pc.locks_on = &q->rpc;
	rc = pg_conn_open(&q->pc, url);
	if (rc == 0)
		rc = pg_conn_open_quiet(&q->rpc, url);
	bw_wipe(url, n);
	free(url);
	if (rc == 0 && (q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
		rc = -errno;
	if (rc == 0)
		rc = bw_loop_watch(loop, &q->watch, q->efd, BW_EV_READ, on_efd,
				   q);
	if (rc == 0) {
		rc = -pthread_create(&q->thread, NULL, thread_main, q);
		q->thread_on = rc == 0;
	}
	if (rc == 0) {
		rc = -pthread_create(&q->rthread, NULL, reader_main, q);
		q->rthread_on = rc == 0;
	}
	if (rc != 0) {
		if (q->efd >= 0)
			bw_loop_unwatch(loop, &q->watch);
		pg_close(q);
		*state = NULL;
	}
	return rc;
}

static int
check_url(const char *scheme, const char *where, char *msg, size_t cap)
{
	size_t n = strlen(scheme) + 1 + strlen(where) + 1;
	char *url = malloc(n);
	int rc;

	if (url == NULL)
		return BW_ENOMEM;
	snprintf(url, n, "%s:%s", scheme, where);
	rc = pg_conn_check(url, msg, cap);
	bw_wipe(url, n);
	free(url);
	return rc;
}

static int
pg_check_postgresql(const char *where, char *msg, size_t cap)
{
	return check_url("postgresql", where, msg, cap);
}

static int
pg_open_postgresql(const char *where, struct bw_loop *loop, void **state)
{
	return open_url("postgresql", where, loop, state);
}

static void
pg_serving(void *state)
{
	struct pgq *q = state;

	atomic_store(&q->pc.limits_wanted, 1);
	atomic_store(&q->rpc.limits_wanted, 1);
}

const struct bw_meta_backend bw_meta_postgresql = {
	.scheme = "postgresql",
	.shared = 1,
	.open = pg_open_postgresql,
	.check = pg_check_postgresql,
	.close = pg_close,
	.submit = pg_submit,
	.run = pg_run_now,
	.load_clients = pg_load_clients_,
	.load_files = pg_load_files_,
	.msg_totals = pg_msg_totals_,
	.msg_blobs = pg_msg_blobs_,
	.syncs = pg_syncs,
	.stats = pg_stats,
	.msg_last_id = pg_msg_last_id_,
	.serving = pg_serving,
};
