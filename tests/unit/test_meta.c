/* The metadata table through its front (host/meta.h) with the SQLite
 * backend, on a real loop with a worker: requests complete on the loop and
 * never inside the submitting call, a failing request undoes only itself,
 * a message is never read before its insert is durable, a deletion gives
 * its contents' keys before it commits and a refusal rolls it back, ids
 * stop at the u32 the wire carries, closing completes what is queued,
 * what arrives while a sync is in flight waits for it (group commit), and
 * a journal past its limit is copied into the database file, by a worker
 * or, on a loop without one, by the commit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "bulwark/err.h"
#include "bulwark/loop.h"
#include "store/meta.h"

#define MAX_DONE 16

struct fx {
	char dir[64], url[160], db[128];
	struct bw_loop *l;
	struct bw_meta *m;
	struct bw_timer guard;
	int timed_out;
	/* completions, in order */
	unsigned done_n, want;
	struct bw_meta_req *order[MAX_DONE];
	int rc[MAX_DONE];
	/* rows a read gave */
	unsigned rows;
	int64_t last_id;
	/* keys a deletion gave, and what its callback answers */
	unsigned keys;
	int key_answer;
};

static struct fx *F;

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/bw_meta_XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	snprintf(f->db, sizeof(f->db), "%s/defensive.db", f->dir);
	snprintf(f->url, sizeof(f->url), "sqlite:%s", f->db);
	if (bw_loop_new(&f->l, 1) != 0 ||
	    bw_meta_open(&f->m, f->url, f->dir, f->l) != 0)
		return -1;
	F = f;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	char cmd[256];

	bw_loop_free(f->l);
	bw_meta_free(f->m);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}

static void
on_done(struct bw_meta_req *r)
{
	struct fx *f = r->arg;

	if (f->done_n < MAX_DONE) {
		f->order[f->done_n] = r;
		f->rc[f->done_n] = r->rc;
	}
	if (++f->done_n == f->want)
		bw_loop_stop(f->l);
}

static void
on_guard(void *arg)
{
	struct fx *f = arg;

	f->timed_out = 1;
	bw_loop_stop(f->l);
}

/* Runs the loop until want completions in all (or 5 s). */
static void
run_until(struct fx *f, unsigned want)
{
	f->want = want;
	if (f->done_n >= want)
		return;
	assert_int_equal(
		bw_loop_timer_start(f->l, &f->guard, 5000, on_guard, f), 0);
	assert_int_equal(bw_loop_run(f->l), 0);
	bw_loop_timer_stop(f->l, &f->guard);
	assert_false(f->timed_out);
	assert_int_equal(f->done_n, want);
}

static void
client(struct bw_client_rec *c, uint8_t id, const char *name)
{
	memset(c, 0, sizeof(*c));
	memset(c->id, id, sizeof(c->id));
	snprintf(c->name, sizeof(c->name), "%s", name);
}

static void
message(struct bw_msg_rec *m, uint8_t to, const char *path, size_t size)
{
	static const uint8_t text[8] = "abcdefg";

	memset(m, 0, sizeof(*m));
	memset(m->to, to, sizeof(m->to));
	memset(m->from, 0x77, sizeof(m->from));
	m->type = 3;
	m->size = size;
	if (path != NULL)
		snprintf(m->path, sizeof(m->path), "%s", path);
	else
		m->content = text;
}

static int
count_row(void *arg, const struct bw_msg_rec *m)
{
	struct fx *f = arg;

	f->rows++;
	f->last_id = m->id;
	return 0;
}

static void
read_req(struct bw_meta_req *r, struct fx *f, uint8_t to)
{
	bw_meta_req_init(r, BW_META_MSG_READ, 0, on_done, f);
	memset(r->u.read.to, to, BW_ID_LEN);
	r->u.read.row = count_row;
	r->u.read.row_arg = f;
}

static void
done_runs_on_the_loop_never_inside_submit(void **state)
{
	struct fx *f = *state;
	struct bw_client_rec c;
	struct bw_meta_req r;

	client(&c, 0x11, "alice");
	bw_meta_req_init(&r, BW_META_CLIENT_INSERT, BW_META_DURABLE, on_done,
			 f);
	r.u.client = &c;
	bw_meta_submit(f->m, &r);
	assert_int_equal(f->done_n, 0);
	run_until(f, 1);
	assert_int_equal(f->rc[0], 0);
	assert_true(f->m->be->syncs(f->m->state) >= 1);
}

static void
a_failing_request_undoes_only_itself(void **state)
{
	struct fx *f = *state;
	struct bw_client_rec a, dup, b;
	struct bw_file_rec rec;
	struct bw_meta_req r[4];

	client(&a, 0x11, "alice");
	client(&dup, 0x22, "alice"); /* the name is taken */
	client(&b, 0x33, "bob");
	memset(&rec, 0, sizeof(rec));
	memset(rec.client_id, 0x11, BW_ID_LEN);
	snprintf(rec.file_name, sizeof(rec.file_name), "f.txt");
	snprintf(rec.path_name, sizeof(rec.path_name), "files/11/f.txt");
	bw_meta_req_init(&r[0], BW_META_CLIENT_INSERT, 0, on_done, f);
	r[0].u.client = &a;
	bw_meta_req_init(&r[1], BW_META_CLIENT_INSERT, 0, on_done, f);
	r[1].u.client = &dup;
	bw_meta_req_init(&r[2], BW_META_FILE_SET, 0, on_done, f);
	memset(r[2].u.file.id, 0x11, BW_ID_LEN);
	r[2].u.file.path = rec.path_name;
	r[2].u.file.rec = &rec;
	bw_meta_req_init(&r[3], BW_META_CLIENT_INSERT, BW_META_DURABLE, on_done,
			 f);
	r[3].u.client = &b;
	for (unsigned i = 0; i < 4; i++)
		bw_meta_submit(f->m, &r[i]);
	run_until(f, 4);
	/* in submission order, all in one batch */
	for (unsigned i = 0; i < 4; i++)
		assert_ptr_equal(f->order[i], &r[i]);
	assert_int_equal(f->rc[0], 0);
	assert_int_equal(f->rc[1], BW_EEXIST);
	assert_int_equal(f->rc[2], 0);
	assert_int_equal(f->rc[3], 0);
}

static unsigned clients_seen;

static int
count_client(void *arg, const struct bw_client_rec *c)
{
	(void)arg;
	(void)c;
	clients_seen++;
	return 0;
}

static void
what_failed_is_not_stored_and_the_rest_is(void **state)
{
	struct fx *f = *state;

	a_failing_request_undoes_only_itself(state);
	clients_seen = 0;
	assert_int_equal(f->m->be->load_clients(f->m->state, count_client, f),
			 0);
	assert_int_equal(clients_seen, 2);
}

static void
a_message_is_read_only_once_durable(void **state)
{
	struct fx *f = *state;
	struct bw_msg_rec m;
	struct bw_meta_req ins, rd, sync, rd2;

	message(&m, 0x11, NULL, 7);
	bw_meta_req_init(&ins, BW_META_MSG_INSERT, 0, on_done, f);
	ins.u.msg = &m;
	read_req(&rd, f, 0x11);
	bw_meta_submit(f->m, &ins);
	bw_meta_submit(f->m, &rd);
	run_until(f, 2);
	assert_int_equal(f->rc[0], 0);
	assert_true(m.id > 0);
	assert_int_equal(f->rc[1], 0);
	assert_int_equal(f->rows, 0); /* committed, not synced: not read */
	bw_meta_req_init(&sync, BW_META_SYNC, BW_META_DURABLE, on_done, f);
	bw_meta_submit(f->m, &sync);
	run_until(f, 3);
	assert_int_equal(f->rc[2], 0);
	read_req(&rd2, f, 0x11);
	bw_meta_submit(f->m, &rd2);
	run_until(f, 4);
	assert_int_equal(f->rows, 1);
	assert_int_equal(f->last_id, m.id);
}

static void
a_durable_insert_is_read_after_its_done(void **state)
{
	struct fx *f = *state;
	struct bw_msg_rec m1, m2;
	struct bw_meta_req a, b, rd;

	message(&m1, 0x22, NULL, 7);
	message(&m2, 0x22, "messages/x", 100000);
	bw_meta_req_init(&a, BW_META_MSG_INSERT, BW_META_DURABLE, on_done, f);
	a.u.msg = &m1;
	bw_meta_req_init(&b, BW_META_MSG_INSERT, BW_META_DURABLE, on_done, f);
	b.u.msg = &m2;
	bw_meta_submit(f->m, &a);
	bw_meta_submit(f->m, &b);
	run_until(f, 2);
	assert_int_equal(f->rc[0], 0);
	assert_int_equal(f->rc[1], 0);
	assert_true(m2.id > m1.id);
	read_req(&rd, f, 0x22);
	bw_meta_submit(f->m, &rd);
	run_until(f, 3);
	assert_int_equal(f->rows, 2);
	assert_int_equal(f->last_id, m2.id);
}

/* Submitted from a deferred call that runs right after the batch that
 * started a sync: that sync is in flight. */
static struct bw_meta_req held_ins, held_rd;
static struct bw_msg_rec held_m;

static void
submit_while_syncing(void *arg)
{
	struct fx *f = arg;

	message(&held_m, 0x44, NULL, 7);
	bw_meta_req_init(&held_ins, BW_META_MSG_INSERT, BW_META_DURABLE,
			 on_done, f);
	held_ins.u.msg = &held_m;
	read_req(&held_rd, f, 0x44);
	bw_meta_submit(f->m, &held_ins);
	bw_meta_submit(f->m, &held_rd);
}

static void
what_arrives_during_a_sync_waits_for_it_and_runs_together(void **state)
{
	struct fx *f = *state;
	struct bw_msg_rec m;
	struct bw_meta_req first, rd;
	struct bw_call later;
	uint64_t syncs;

	memset(&later, 0, sizeof(later));
	message(&m, 0x44, NULL, 7);
	bw_meta_req_init(&first, BW_META_MSG_INSERT, BW_META_DURABLE, on_done,
			 f);
	first.u.msg = &m;
	bw_meta_submit(f->m, &first); /* its batch runs, then the sync starts */
	bw_loop_call(f->l, &later, submit_while_syncing, f);
	run_until(f, 3);
	/* the batch with a durable insert in it was held until the first
	 * sync ended: the read behind it completes after the first insert,
	 * and sees it (synced) but not its own batch's (not yet synced) */
	assert_ptr_equal(f->order[0], &first);
	assert_ptr_equal(f->order[1], &held_rd);
	assert_ptr_equal(f->order[2], &held_ins);
	assert_int_equal(f->rc[0], 0);
	assert_int_equal(f->rc[1], 0);
	assert_int_equal(f->rc[2], 0);
	assert_int_equal(f->rows, 1);
	assert_int_equal(f->last_id, m.id);
	assert_true(held_m.id > m.id);
	syncs = f->m->be->syncs(f->m->state);
	assert_int_equal(syncs, 2);
	/* and once synced, both are read */
	f->rows = 0;
	read_req(&rd, f, 0x44);
	bw_meta_submit(f->m, &rd);
	run_until(f, 4);
	assert_int_equal(f->rows, 2);
	assert_int_equal(f->last_id, held_m.id);
}

static int
give_key(void *arg, const char *key)
{
	struct fx *f = arg;

	assert_string_equal(key, "messages/k");
	f->keys++;
	return f->key_answer;
}

static void
a_deletion_refused_by_its_key_callback_rolls_back(void **state)
{
	struct fx *f = *state;
	struct bw_msg_rec m1, m2;
	struct bw_meta_req a, b, del, del2, rd;

	message(&m1, 0x33, NULL, 7);
	message(&m2, 0x33, "messages/k", 9000);
	bw_meta_req_init(&a, BW_META_MSG_INSERT, 0, on_done, f);
	a.u.msg = &m1;
	bw_meta_req_init(&b, BW_META_MSG_INSERT, BW_META_DURABLE, on_done, f);
	b.u.msg = &m2;
	bw_meta_submit(f->m, &a);
	bw_meta_submit(f->m, &b);
	run_until(f, 2);
	f->key_answer = BW_ENOMEM;
	bw_meta_req_init(&del, BW_META_MSG_DELETE, 0, on_done, f);
	memset(del.u.del.to, 0x33, BW_ID_LEN);
	del.u.del.upto = m2.id;
	del.u.del.path = give_key;
	del.u.del.path_arg = f;
	bw_meta_submit(f->m, &del);
	run_until(f, 3);
	assert_int_equal(f->rc[2], BW_ENOMEM);
	assert_int_equal(f->keys, 1);
	read_req(&rd, f, 0x33);
	bw_meta_submit(f->m, &rd);
	run_until(f, 4);
	assert_int_equal(f->rows, 2); /* nothing went */
	f->key_answer = 0;
	del2 = del;
	bw_meta_req_init(&del2, BW_META_MSG_DELETE, 0, on_done, f);
	memset(del2.u.del.to, 0x33, BW_ID_LEN);
	del2.u.del.upto = m2.id;
	del2.u.del.path = give_key;
	del2.u.del.path_arg = f;
	bw_meta_submit(f->m, &del2);
	run_until(f, 5);
	assert_int_equal(f->rc[4], 0);
	assert_int_equal(del2.u.del.n, 2);
	assert_int_equal(del2.u.del.bytes, 7 + 9000);
}

static void
message_ids_stop_at_the_u32_the_wire_carries(void **state)
{
	struct fx *f = *state;
	struct bw_msg_rec m;
	struct bw_meta_req r;
	char cmd[512];

	/* the largest id recorded, as another run would have left it */
	bw_meta_free(f->m);
	f->m = NULL;
	snprintf(cmd, sizeof(cmd),
		 "sqlite3 '%s' \"INSERT OR REPLACE INTO bulwark_meta(Key, "
		 "Value) VALUES('next_message_id', %lld)\"",
		 f->db, (long long)BW_META_MSG_ID_MAX);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(bw_meta_open(&f->m, f->url, f->dir, f->l), 0);
	message(&m, 0x44, NULL, 7);
	bw_meta_req_init(&r, BW_META_MSG_INSERT, BW_META_DURABLE, on_done, f);
	r.u.msg = &m;
	bw_meta_submit(f->m, &r);
	run_until(f, 1);
	assert_int_equal(f->rc[0], BW_ETOOBIG);
	assert_int_equal(m.id, 0);
}

static void
closing_completes_what_is_queued(void **state)
{
	struct fx *f = *state;
	struct bw_client_rec c;
	struct bw_meta_req r;

	client(&c, 0x55, "carol");
	bw_meta_req_init(&r, BW_META_CLIENT_INSERT, BW_META_DURABLE, on_done,
			 f);
	r.u.client = &c;
	bw_meta_submit(f->m, &r);
	assert_int_equal(f->done_n, 0);
	/* the loop never ran a pass: freeing it runs what is queued, and the
	 * durable request is synced without a worker */
	bw_loop_free(f->l);
	f->l = NULL;
	assert_int_equal(f->done_n, 1);
	assert_int_equal(f->rc[0], 0);
	bw_meta_free(f->m);
	f->m = NULL;
	assert_int_equal(bw_loop_new(&f->l, 1), 0);
	assert_int_equal(bw_meta_open(&f->m, f->url, f->dir, f->l), 0);
	clients_seen = 0;
	assert_int_equal(f->m->be->load_clients(f->m->state, count_client, f),
			 0);
	assert_int_equal(clients_seen, 1);
}

/* At shutdown an answer the close ran, or a job it started, may ask the
 * store again: it is told BW_ECLOSED on the loop, as any answer, and the
 * store is still there to say so (it used to be freed). */
static void
a_request_after_the_close_is_refused_on_the_loop(void **state)
{
	struct fx *f = *state;
	struct bw_client_rec c;
	struct bw_meta_req r;

	bw_meta_close(f->m);
	client(&c, 0x66, "dave");
	bw_meta_req_init(&r, BW_META_CLIENT_INSERT, BW_META_DURABLE, on_done,
			 f);
	r.u.client = &c;
	bw_meta_submit(f->m, &r);
	assert_int_equal(f->done_n, 0); /* never inside submit */
	run_until(f, 1);
	assert_int_equal(f->rc[0], BW_ECLOSED);
	assert_int_equal(bw_meta_run(f->m, &r), BW_ECLOSED);
}

static void
an_unknown_scheme_is_refused(void **state)
{
	struct fx *f = *state;
	struct bw_meta *m = NULL;

	assert_int_equal(bw_meta_open(&m, "nosuch:/x", f->dir, f->l),
			 BW_ECONFIG);
	assert_null(m);
	assert_int_equal(bw_meta_open(&m, "no-colon", f->dir, f->l),
			 BW_ECONFIG);
}

/* A migration's two requests: a message under its own id, and a floor
 * under the ids issued later. */
static void
a_put_keeps_its_id_and_a_floor_lifts_later_ones(void **state)
{
	struct fx *f = *state;
	struct bw_msg_rec m;
	struct bw_meta_req r;
	int64_t last = 0;

	message(&m, 0x22, NULL, 3);
	m.id = 100;
	bw_meta_req_init(&r, BW_META_MSG_PUT, BW_META_DURABLE, NULL, NULL);
	r.u.msg = &m;
	assert_int_equal(bw_meta_run(f->m, &r), 0);
	assert_int_equal(bw_meta_run(f->m, &r), BW_EEXIST); /* id taken */
	m.id = 0;
	bw_meta_req_init(&r, BW_META_MSG_INSERT, BW_META_DURABLE, NULL, NULL);
	r.u.msg = &m;
	assert_int_equal(bw_meta_run(f->m, &r), 0);
	assert_int_equal(m.id, 101);
	bw_meta_req_init(&r, BW_META_MSG_FLOOR, BW_META_DURABLE, NULL, NULL);
	r.u.drop = 500;
	assert_int_equal(bw_meta_run(f->m, &r), 0);
	r.u.drop = 200; /* never back */
	assert_int_equal(bw_meta_run(f->m, &r), 0);
	assert_int_equal(f->m->be->msg_last_id(f->m->state, &last), 0);
	assert_int_equal(last, 500);
	bw_meta_req_init(&r, BW_META_MSG_INSERT, BW_META_DURABLE, NULL, NULL);
	r.u.msg = &m;
	assert_int_equal(bw_meta_run(f->m, &r), 0);
	assert_int_equal(m.id, 501);
	/* and after a reopen, from what was recorded */
	bw_meta_free(f->m);
	assert_int_equal(bw_meta_open(&f->m, f->url, f->dir, f->l), 0);
	assert_int_equal(f->m->be->msg_last_id(f->m->state, &last), 0);
	assert_int_equal(last, 501);
}

/* --- checkpoints ------------------------------------------------------- */

#define BIG_MSG	 16384
#define BIG_MSGS 300 /* some 1,500 pages of journal: past 1,000 */

static off_t
file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : -1;
}

/* n messages of BIG_MSG bytes, submitted ten at a time as the services
 * do, each ten run to their done: a checkpoint that starts on the way
 * runs on the worker while the loop goes on committing. */
static void
insert_big(struct fx *f, unsigned n)
{
	static uint8_t big[BIG_MSG];
	struct bw_msg_rec m[10];
	struct bw_meta_req r[10];
	unsigned i, k;

	memset(big, 0x5a, sizeof(big));
	for (i = 0; i < n; i += 10) {
		for (k = 0; k < 10; k++) {
			message(&m[k], 0x33, NULL, sizeof(big));
			m[k].content = big;
			bw_meta_req_init(&r[k], BW_META_MSG_INSERT, 0, on_done,
					 f);
			r[k].u.msg = &m[k];
			bw_meta_submit(f->m, &r[k]);
		}
		run_until(f, f->done_n + 10);
		for (k = 0; k < 10; k++)
			assert_int_equal(r[k].rc, 0);
	}
}

static void
on_poll(void *arg)
{
	bw_loop_stop(arg);
}

/* Runs the loop for ms: what workers finished meanwhile is done. */
static void
run_for(struct fx *f, unsigned ms)
{
	struct bw_timer t;

	memset(&t, 0, sizeof(t));
	assert_int_equal(bw_loop_timer_start(f->l, &t, ms, on_poll, f->l), 0);
	assert_int_equal(bw_loop_run(f->l), 0);
}

/* Runs the loop in 20 ms slices until the database file holds at least
 * min bytes, for 10 s at most: a worker's checkpoint completes on it. */
static off_t
run_until_file_holds(struct fx *f, off_t min)
{
	struct bw_timer t;
	off_t size = file_size(f->db);
	int i;

	memset(&t, 0, sizeof(t));
	for (i = 0; i < 500 && size < min; i++) {
		assert_int_equal(
			bw_loop_timer_start(f->l, &t, 20, on_poll, f->l), 0);
		assert_int_equal(bw_loop_run(f->l), 0);
		size = file_size(f->db);
	}
	return size;
}

static void
a_journal_past_its_limit_is_copied_into_the_file(void **state)
{
	struct fx *f = *state;
	char wal[160];
	int round;

	snprintf(wal, sizeof(wal), "%s-wal", f->db);
	assert_true(file_size(f->db) < BIG_MSG * BIG_MSGS / 4);
	/* the commits go on while the worker copies; and each round's
	 * journal is copied, and the journal starts over instead of
	 * growing with every round */
	for (round = 1; round <= 4; round++) {
		insert_big(f, BIG_MSGS);
		assert_true(run_until_file_holds(f, (off_t)round * BIG_MSG *
							    BIG_MSGS / 2) >=
			    (off_t)round * BIG_MSG * BIG_MSGS / 2);
	}
	/* four rounds' contents alone would be 20 MB: it started over */
	assert_true(file_size(wal) < (off_t)4 * BIG_MSG * BIG_MSGS);
}

/* A reader that keeps its snapshot keeps the journal from starting over,
 * so a burst makes it long. Once the reader lets go and a checkpoint has
 * copied it all, the next commit cuts the file back to 8 MiB
 * (journal_size_limit): the burst does not hold the disk for good. */
static void
a_long_journal_gives_its_space_back(void **state)
{
	struct fx *f = *state;
	sqlite3 *rd;
	char wal[160];
	int round;

	snprintf(wal, sizeof(wal), "%s-wal", f->db);
	insert_big(f, 10);
	assert_int_equal(
		sqlite3_open_v2(f->db, &rd, SQLITE_OPEN_READONLY, NULL),
		SQLITE_OK);
	assert_int_equal(sqlite3_exec(rd,
				      "BEGIN; SELECT count(*) FROM "
				      "sqlite_schema;",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	insert_big(f, 4 * BIG_MSGS); /* some 20 MB of journal */
	assert_true(file_size(wal) > (off_t)16 << 20);
	assert_int_equal(sqlite3_exec(rd, "COMMIT", NULL, NULL, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_close(rd), SQLITE_OK);
	/* the journal starts over after a checkpoint that copies it all,
	 * which the rounds' commits ask for; the first commit after that
	 * cuts the file */
	for (round = 0; round < 8 && file_size(wal) > (off_t)9 << 20; round++) {
		insert_big(f, BIG_MSGS / 4);
		run_for(f, 50);
	}
	assert_true(file_size(wal) <= (off_t)9 << 20);
}

static void
without_a_worker_the_commit_copies_it(void **state)
{
	struct fx *f = *state;

	/* the same store on a loop with no worker */
	bw_meta_free(f->m);
	bw_loop_free(f->l);
	assert_int_equal(bw_loop_new(&f->l, 0), 0);
	assert_int_equal(bw_meta_open(&f->m, f->url, f->dir, f->l), 0);
	insert_big(f, BIG_MSGS);
	/* copied in the commit that passed the limit: no loop ran */
	assert_true(file_size(f->db) >= (off_t)BIG_MSG * BIG_MSGS / 2);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(done_runs_on_the_loop_never_inside_submit),
		T(a_failing_request_undoes_only_itself),
		T(what_failed_is_not_stored_and_the_rest_is),
		T(a_message_is_read_only_once_durable),
		T(a_durable_insert_is_read_after_its_done),
		T(what_arrives_during_a_sync_waits_for_it_and_runs_together),
		T(a_deletion_refused_by_its_key_callback_rolls_back),
		T(message_ids_stop_at_the_u32_the_wire_carries),
		T(closing_completes_what_is_queued),
		T(a_request_after_the_close_is_refused_on_the_loop),
		T(an_unknown_scheme_is_refused),
		T(a_put_keeps_its_id_and_a_floor_lifts_later_ones),
		T(a_journal_past_its_limit_is_copied_into_the_file),
		T(a_long_journal_gives_its_space_back),
		T(without_a_worker_the_commit_copies_it),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
