/* The periodic sweep of a shared store (S3).
 *
 * In a store other daemons share, an object no row names may be left by a
 * daemon that crashed between object and row and never started again:
 * every quarter of the grace period (at most every 10 minutes) the objects
 * under files/ older than the grace period are listed on a worker and
 * judged here against the rows in RAM. On a database other daemons share
 * too, RAM is not the truth (another node's uploads since this one last
 * read its client's rows are not there): a candidate is removed only
 * once its client's rows, read again from the database, name it nowhere.
 * A candidate whose client cannot be told (an older pending key) or whose
 * rows cannot be read is left for a later round.
 *
 * A commit never leaves an object unnamed for the grace period: the direct
 * path writes the row first, the pending path names its object right
 * after putting it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/vault/vault_int.h"

#define SWEEP_MAX_KEYS 100000u /* a round's bound; the next takes the rest */
#define SWEEP_MAX_MS   600000u
#define SWEEP_MAX_ASK  256u /* clients whose rows a round reads again */

/* A round's keys are judged a slice per loop pass (JUDGE_SLICE), and their
 * owners grouped the same way: 100,000 candidates judged at once held the
 * loop for 150 ms (bench/sweepbench.py). */
#define JUDGE_SLICE 2048u

struct ask;

struct sweep {
	struct bw_vault *v;
	char **keys;
	size_t n, cap;
	int rc;
	unsigned asking; /* clients whose rows are being read */
	/* the slices: the next key, and the pass's call that goes on */
	size_t at;
	struct bw_call step;
	/* grouping the candidates by owner (ask_owners) */
	struct bw_hash by_id;
	int by_id_on;
	struct ask *asks[SWEEP_MAX_ASK];
	unsigned asks_n;
	/* the answers, judged a slice a pass */
	struct ask *answered, **answered_tail;
	struct bw_call ans_step;
};

/* One client's rows, read again for the candidates that are its (their
 * indices in the sweep's keys, found once: an answer judges only its own). */
struct ask {
	struct bw_meta_req req; /* first: the callback's argument */
	struct sweep *sw;
	struct ask *next; /* answered, waiting to be judged */
	uint8_t id[BW_ID_LEN];
	size_t *idx;
	size_t n, cap;
};

static void
sweep_free(struct sweep *sw)
{
	size_t i;

	for (i = 0; i < sw->n; i++)
		free(sw->keys[i]);
	free(sw->keys);
	if (sw->by_id_on)
		bw_hash_fini(&sw->by_id);  /* its keys are the asks' ids */
	for (i = 0; i < sw->asks_n; i++) { /* never submitted */
		if (sw->asks[i] != NULL) {
			free(sw->asks[i]->idx);
			free(sw->asks[i]);
		}
	}
	sw->v->sweeping = 0;
	free(sw);
}

static void
sweep_remove(struct bw_vault *v, const char *key)
{
	char shown[BW_ESC_CAP];

	bw_warn("vault: sweep: removing %s: no row names it",
		bw_escape_display(key, shown, sizeof(shown)));
	vault_remove_later(v, key);
}

static int
collect_settled(void *arg, const char *key, uint64_t size, int64_t mtime)
{
	struct sweep *sw = arg;
	char **grown;

	(void)size;
	if (!bw_blob_settled(sw->v->blobs, mtime) || sw->n == SWEEP_MAX_KEYS)
		return 0;
	if (sw->n == sw->cap) {
		size_t cap = sw->cap ? 2 * sw->cap : 256;

		if ((grown = realloc(sw->keys, cap * sizeof(*grown))) == NULL)
			return BW_ENOMEM;
		sw->keys = grown;
		sw->cap = cap;
	}
	if ((sw->keys[sw->n] = strdup(key)) == NULL)
		return BW_ENOMEM;
	sw->n++;
	return 0;
}

static void
sweep_work(void *arg)
{
	struct sweep *sw = arg;
	const struct bw_blobs *b = sw->v->blobs;

	sw->rc = bw_blob_list(b, FILES_SPACE, collect_settled, sw);
}

/* The keys the client's rows name (each row's file and its pending
 * replacement) into names, whose keys point into recs: once per answer,
 * so that each candidate is judged in constant time (walking every row
 * per candidate was rows x candidates on the loop). */
static int
rows_named(struct bw_hash *names, const struct bw_file_rec *recs, size_t n)
{
	size_t i;
	int rc;

	if ((rc = bw_hash_init(names)) != 0)
		return rc;
	for (i = 0; i < 2 * n; i++) {
		const char *k = i % 2 ? recs[i / 2].pending_path
				      : recs[i / 2].path_name;

		if (k[0] != '\0' &&
		    (rc = bw_hash_put(names, k, strlen(k), (void *)k)) != 0 &&
		    rc != BW_EEXIST)
			return rc;
	}
	return 0;
}

/* One client's answer judged: what its rows name nowhere goes. */
static void
judge_answer(struct ask *a)
{
	struct bw_meta_req *req = &a->req;
	struct sweep *sw = a->sw;
	struct bw_hash names = {0};
	const char *key;
	size_t i;
	int rc = req->rc;

	if (rc == 0)
		rc = rows_named(&names, req->u.files.recs, req->u.files.n);
	if (rc != 0)
		bw_debug("vault: sweep: a client's rows could not be read "
			 "(%s); its objects wait for a later round",
			 bw_strerror(rc));
	for (i = 0; rc == 0 && i < a->n; i++) {
		key = sw->keys[a->idx[i]];
		if (bw_hash_get(&names, key, strlen(key)) == NULL)
			sweep_remove(sw->v, key);
	}
	bw_hash_fini(&names);
	free(req->u.files.recs);
	free(a->idx);
	free(a);
}

/* The answers are judged JUDGE_SLICE rows a pass (a round's 256 answers,
 * come in one pass, held the loop for them all), in the order they came. */
static void
answers_step(void *arg)
{
	struct sweep *sw = arg;
	struct ask *a;
	size_t rows = 0;

	while ((a = sw->answered) != NULL && rows < JUDGE_SLICE) {
		sw->answered = a->next;
		rows += a->req.u.files.n + a->n;
		judge_answer(a);
		sw->asking--;
	}
	if (sw->answered != NULL)
		bw_loop_call(sw->v->eng->loop, &sw->ans_step, answers_step, sw);
	else if (sw->asking == 0)
		sweep_free(sw);
}

static void
asked(struct bw_meta_req *req)
{
	struct ask *a = (struct ask *)req;
	struct sweep *sw = a->sw;

	a->next = NULL;
	*sw->answered_tail = a;
	sw->answered_tail = &a->next;
	if (sw->answered == a) /* the first waiting: a pass goes on */
		bw_loop_call(sw->v->eng->loop, &sw->ans_step, answers_step, sw);
}

/* Adds keys[i] to a's candidates. */
static int
ask_add(struct ask *a, size_t i)
{
	size_t *grown, cap;

	if (a->n == a->cap) {
		cap = a->cap ? 2 * a->cap : 8;
		if ((grown = realloc(a->idx, cap * sizeof(*grown))) == NULL)
			return BW_ENOMEM;
		a->idx = grown;
		a->cap = cap;
	}
	a->idx[a->n++] = i;
	return 0;
}

/* Reads again the rows of each client that owns a candidate (keys[i] !=
 * NULL), once per client and at most SWEEP_MAX_ASK clients a round (the
 * others' candidates wait for the next). The candidates are grouped by
 * client first, a slice of keys a pass: the answers then cost their own
 * candidates only, never all the keys each. */
static void
ask_submit(struct sweep *sw)
{
	struct ask *a;
	unsigned k;

	bw_hash_fini(&sw->by_id); /* its keys are the asks' ids */
	sw->by_id_on = 0;
	sw->asking = 1; /* held while asking (answers never come inside
			 * bw_meta_submit) */
	for (k = 0; k < sw->asks_n; k++) {
		a = sw->asks[k];
		sw->asks[k] = NULL;
		if (a->n == 0) { /* its only candidate could not be added */
			free(a->idx);
			free(a);
			continue;
		}
		bw_meta_req_init(&a->req, BW_META_FILE_GET, 0, asked, a);
		memcpy(a->req.u.files.id, a->id, BW_ID_LEN);
		sw->asking++;
		bw_meta_submit(sw->v->meta, &a->req);
	}
	sw->asks_n = 0;
	if (--sw->asking == 0)
		sweep_free(sw);
}

static void
group_step(void *arg)
{
	struct sweep *sw = arg;
	struct ask *a;
	uint8_t id[BW_ID_LEN];
	size_t i, end = sw->at + JUDGE_SLICE < sw->n ? sw->at + JUDGE_SLICE
						     : sw->n;

	for (i = sw->at; i < end; i++) {
		if (sw->keys[i] == NULL)
			continue;
		a = NULL;
		if (vault_key_owner(sw->keys[i], id) == 0 &&
		    (a = bw_hash_get(&sw->by_id, id, BW_ID_LEN)) == NULL &&
		    sw->asks_n < SWEEP_MAX_ASK &&
		    (a = calloc(1, sizeof(*a))) != NULL) {
			a->sw = sw;
			memcpy(a->id, id, BW_ID_LEN);
			if (bw_hash_put(&sw->by_id, a->id, BW_ID_LEN, a) != 0) {
				free(a);
				a = NULL;
			} else {
				sw->asks[sw->asks_n++] = a;
			}
		}
		if (a == NULL || ask_add(a, i) != 0) {
			free(sw->keys[i]); /* whose, unknown; or next round */
			sw->keys[i] = NULL;
		}
	}
	sw->at = end;
	if (sw->at < sw->n)
		bw_loop_call(sw->v->eng->loop, &sw->step, group_step, sw);
	else
		ask_submit(sw);
}

static void
ask_owners(struct sweep *sw)
{
	if (bw_hash_init(&sw->by_id) != 0) {
		sweep_free(sw);
		return;
	}
	sw->by_id_on = 1;
	sw->at = 0;
	group_step(sw);
}

/* A slice of the keys judged against the rows in RAM: one named there is
 * kept; on a store only this daemon writes, one unnamed goes now (in the
 * pass that judged it, as a commit would need the loop to name it); on a
 * shared one the owners' rows are read again first (ask_owners). */
static void
judge_step(void *arg)
{
	struct sweep *sw = arg;
	struct bw_vault *v = sw->v;
	unsigned char cand[JUDGE_SLICE];
	size_t i,
		k = sw->n - sw->at < JUDGE_SLICE ? sw->n - sw->at : JUDGE_SLICE;
	char **key;

	if (vault_unnamed_keys(v, sw->keys + sw->at, k, cand) != 0) {
		bw_warn("vault: the periodic sweep stops this round: %s",
			bw_strerror(BW_ENOMEM));
		sweep_free(sw);
		return;
	}
	for (i = 0; i < k; i++) {
		key = &sw->keys[sw->at + i];
		if (cand[i] && !bw_meta_others_write(v->meta))
			sweep_remove(v, *key);
		if (!cand[i] || !bw_meta_others_write(v->meta)) {
			free(*key); /* named in RAM: kept; or removed */
			*key = NULL;
		}
	}
	sw->at += k;
	if (sw->at < sw->n)
		bw_loop_call(v->eng->loop, &sw->step, judge_step, sw);
	else if (bw_meta_others_write(v->meta))
		ask_owners(sw);
	else
		sweep_free(sw);
}

static void
sweep_done(void *arg)
{
	struct sweep *sw = arg;

	if (sw->rc != 0)
		bw_warn("vault: the periodic sweep could not list files/: %s",
			bw_strerror(sw->rc));
	if (sw->rc != 0 || sw->n == 0) {
		sweep_free(sw);
		return;
	}
	sw->at = 0;
	judge_step(sw);
}

static unsigned
sweep_every_ms(const struct bw_vault *v)
{
	uint64_t ms = (uint64_t)v->blobs->grace_s * 1000u / 4u + 1000u;

	return ms > SWEEP_MAX_MS ? SWEEP_MAX_MS : (unsigned)ms;
}

static void
sweep_tick(void *arg)
{
	struct bw_vault *v = arg;
	struct sweep *sw;

	if (bw_loop_timer_start(v->eng->loop, &v->sweep_t, sweep_every_ms(v),
				sweep_tick, v) != 0)
		bw_warn("vault: the periodic sweep stops: no memory for its "
			"timer");
	if (v->sweeping || (sw = calloc(1, sizeof(*sw))) == NULL)
		return;
	sw->v = v;
	sw->answered_tail = &sw->answered;
	v->sweeping = 1;
	if (bw_loop_submit(v->eng->loop, sweep_work, sweep_done, sw) != 0) {
		free(sw);
		v->sweeping = 0;
	}
}

int
vault_sweep_start(struct bw_vault *v)
{
	if (!bw_blobs_others_write(v->blobs))
		return 0; /* one daemon's store: start-up's reconcile is all */
	return bw_loop_timer_start(v->eng->loop, &v->sweep_t, sweep_every_ms(v),
				   sweep_tick, v);
}

void
vault_pending_key(const uint8_t id[BW_ID_LEN], char *out, size_t cap)
{
	char hex[2 * BW_ID_LEN + 1], prefix[sizeof(PENDING_DIR) + sizeof(hex)];

	bw_hex_encode(id, BW_ID_LEN, hex);
	snprintf(prefix, sizeof(prefix), PENDING_DIR "%s-", hex);
	bw_unique_name(prefix, out, cap);
}

int
vault_key_owner(const char *key, uint8_t id[BW_ID_LEN])
{
	const char *p;
	size_t n = 2 * BW_ID_LEN;

	if (strncmp(key, PENDING_DIR, strlen(PENDING_DIR)) == 0) {
		p = key + strlen(PENDING_DIR);
		if (strlen(p) <= n || p[n] != '-')
			return BW_ENOTFOUND; /* an older key: whose is unknown
					      */
	} else if (strncmp(key, FILES_SPACE, strlen(FILES_SPACE)) == 0) {
		p = key + strlen(FILES_SPACE);
		if (strlen(p) <= n || p[n] != '/')
			return BW_ENOTFOUND;
	} else {
		return BW_ENOTFOUND;
	}
	return bw_hex_decode(p, n, id, BW_ID_LEN) == 0 ? 0 : BW_ENOTFOUND;
}
