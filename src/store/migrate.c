/* The migration between two stores (host/migrate.h): clients, files with
 * their contents, messages with theirs, the message ids' high-water mark;
 * then a verification of everything against the source. Runs before
 * anything serves: every request goes through bw_meta_run, every blob
 * operation blocks.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crc.h"
#include "bulwark/hash.h"
#include "bulwark/log.h"
#include "store/migrate.h"

#define CHUNK (1u << 20)

struct mig {
	struct bw_meta *from, *to;
	struct bw_blobs *fb, *tb;
	int same;
	struct bw_migrate_report *rep;
	char *why;
	size_t why_cap;
	uint8_t *buf;	   /* CHUNK bytes, 4096-aligned */
	struct bw_hash h;  /* the target's rows, by key */
	int verifying;	   /* second pass: compare, write nothing */
	uint64_t mismatch; /* rows the verification found different */
	int row_rc;	   /* a message's copy failed: the walk stopped
			    * there, which a walk does not count an error */
};

static int
fail(struct mig *g, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(g->why, g->why_cap, fmt, ap);
	va_end(ap);
	return rc != 0 ? rc : BW_ESIZE;
}

/* --- contents ---------------------------------------------------------------
 */

static int
blob_crc(struct mig *g, struct bw_blobs *b, const char *key, uint32_t *crc,
	 uint64_t *size)
{
	struct bw_blob_r *r;
	struct bw_cksum ck;
	ssize_t got;
	int rc;

	*size = 0;
	if ((rc = bw_blob_read_open(b, key, &r)) != 0)
		return rc;
	bw_cksum_init(&ck);
	while ((got = bw_blob_read(b, r, g->buf, CHUNK)) > 0) {
		bw_cksum_update(&ck, g->buf, (size_t)got);
		*size += (uint64_t)got;
	}
	bw_blob_read_close(b, r);
	*crc = bw_cksum_final(&ck);
	return got < 0 ? (int)got : 0;
}

/* The content at key into the target (unless it is there already, same
 * size and CRC), read back and compared. */
static int
copy_blob(struct mig *g, const char *key)
{
	const struct bw_blob_backend *tb = g->tb->be;
	struct bw_blob_w *w = NULL;
	struct bw_blob_r *r = NULL;
	char space[BW_BLOB_KEY_CAP];
	uint32_t sc, tc;
	uint64_t ss, ts, off = 0;
	const char *slash;
	ssize_t got;
	int rc;

	g->rep->contents++;
	if ((rc = blob_crc(g, g->fb, key, &sc, &ss)) != 0)
		return fail(g, rc, "the source's content %s: %s", key,
			    bw_strerror(rc));
	if (g->same)
		return 0;
	if (tb->size(g->tb->state, key, &ts) == 0 && ts == ss &&
	    blob_crc(g, g->tb, key, &tc, &ts) == 0 && tc == sc && ts == ss)
		return 0; /* copied by an earlier run */
	if (g->verifying)
		return fail(g, BW_ESIZE, "the target's content %s differs",
			    key);
	if ((slash = strchr(key, '/')) == NULL ||
	    (size_t)(slash - key) + 2 > sizeof(space))
		return fail(g, BW_EPROTO, "a content key without a space: %s",
			    key);
	snprintf(space, sizeof(space), "%.*s", (int)(slash - key) + 1, key);
	if ((rc = bw_blob_read_open(g->fb, key, &r)) != 0 ||
	    (rc = tb->create(g->tb->state, space, key, &w)) != 0)
		goto out;
	while ((got = bw_blob_read(g->fb, r, g->buf, CHUNK)) > 0) {
		if ((rc = tb->write(w, off, g->buf, (size_t)got)) != 0)
			goto out;
		off += (uint64_t)got;
	}
	if (got < 0) {
		rc = (int)got;
		goto out;
	}
	rc = tb->put(g->tb->state, w, key, 1);
	w = NULL;
out:
	if (w != NULL)
		tb->abort(g->tb->state, w);
	if (r != NULL)
		bw_blob_read_close(g->fb, r);
	if (rc != 0)
		return fail(g, rc, "copying the content %s: %s", key,
			    bw_strerror(rc));
	if ((rc = blob_crc(g, g->tb, key, &tc, &ts)) != 0 || tc != sc ||
	    ts != ss)
		return fail(g, rc,
			    "the content %s read back from the target "
			    "differs from the source's",
			    key);
	g->rep->contents_copied++;
	g->rep->bytes_copied += ss;
	return 0;
}

/* --- clients -----------------------------------------------------------------
 */

struct seen {
	uint8_t key[BW_ID_LEN + BW_NAME_CAP];
	size_t key_len;
	char a[BW_PATH_CAP], b[BW_PATH_CAP]; /* what the row says */
	int flag;
};

static int
put_seen(struct mig *g, const void *key, size_t key_len, const char *a,
	 const char *b, int flag)
{
	struct seen *s = calloc(1, sizeof(*s));
	int rc;

	if (s == NULL)
		return BW_ENOMEM;
	memcpy(s->key, key, key_len);
	s->key_len = key_len;
	snprintf(s->a, sizeof(s->a), "%s", a);
	snprintf(s->b, sizeof(s->b), "%s", b);
	s->flag = flag;
	if ((rc = bw_hash_put(&g->h, s->key, key_len, s)) != 0)
		free(s);
	return rc == BW_EEXIST ? 0 : rc;
}

static int
free_seen(void *arg, void *val)
{
	(void)arg;
	free(val);
	return 0;
}

static void
clear_seen(struct mig *g)
{
	(void)bw_hash_each(&g->h, free_seen, NULL);
	bw_hash_fini(&g->h);
	(void)bw_hash_init(&g->h);
}

static int
target_client(void *arg, const struct bw_client_rec *c)
{
	return put_seen(arg, c->id, BW_ID_LEN, c->name, "", c->has_pubkey);
}

static int
source_client(void *arg, const struct bw_client_rec *c)
{
	struct mig *g = arg;
	struct seen *s = bw_hash_get(&g->h, c->id, BW_ID_LEN);
	struct bw_meta_req r;
	int rc;

	if (s != NULL && strcmp(s->a, c->name) == 0 && s->flag == c->has_pubkey)
		return 0;
	if (g->verifying || s != NULL) {
		g->mismatch++;
		return fail(g, BW_EEXIST,
			    "client '%s': the target holds %s under its id",
			    c->name, s != NULL ? "another row" : "nothing");
	}
	g->rep->clients_new++;
	bw_meta_req_init(&r, BW_META_CLIENT_INSERT, BW_META_DURABLE, NULL,
			 NULL);
	r.u.client = c;
	if ((rc = bw_meta_run(g->to, &r)) != 0)
		return fail(g, rc, "client '%s': %s", c->name,
			    rc == BW_EEXIST ? "its name is another client's in "
					      "the target"
					    : bw_strerror(rc));
	return 0;
}

static int
count_client(void *arg, const struct bw_client_rec *c)
{
	(void)c;
	((struct mig *)arg)->rep->clients++;
	return 0;
}

/* --- files -------------------------------------------------------------------
 */

static size_t
file_key(const struct bw_file_rec *f, uint8_t *out)
{
	size_t n = strlen(f->file_name);

	memcpy(out, f->client_id, BW_ID_LEN);
	memcpy(out + BW_ID_LEN, f->file_name, n);
	return BW_ID_LEN + n;
}

static int
target_file(void *arg, const struct bw_file_rec *f)
{
	uint8_t key[BW_ID_LEN + BW_NAME_CAP];
	size_t n;

	if (f->unreadable)
		return fail(arg, BW_EPROTO,
			    "a files row of the target cannot be read");
	n = file_key(f, key);
	return put_seen(arg, key, n, f->path_name, f->pending_path,
			f->verified != 0);
}

static int
source_file(void *arg, const struct bw_file_rec *f)
{
	struct mig *g = arg;
	uint8_t key[BW_ID_LEN + BW_NAME_CAP];
	size_t n;
	struct seen *s;
	struct bw_meta_req r;
	int rc;

	/* a row left behind is a file lost: the run stops and says so */
	if (f->unreadable)
		return fail(g, BW_EPROTO,
			    "a files row of the source cannot be read (its "
			    "name or path is not text of the schema's "
			    "lengths): mend it, then migrate");
	n = file_key(f, key);
	s = bw_hash_get(&g->h, key, n);
	g->rep->files++;
	if ((rc = copy_blob(g, f->path_name)) != 0 ||
	    (f->pending_path[0] != '\0' &&
	     (rc = copy_blob(g, f->pending_path)) != 0))
		return rc;
	if (s != NULL && strcmp(s->a, f->path_name) == 0 &&
	    strcmp(s->b, f->pending_path) == 0 && s->flag == (f->verified != 0))
		return 0;
	if (g->verifying) {
		g->mismatch++;
		return fail(g, BW_ESIZE, "file '%s': the target's row differs",
			    f->file_name);
	}
	g->rep->files_new++;
	bw_meta_req_init(&r, BW_META_FILE_SET, BW_META_DURABLE, NULL, NULL);
	memcpy(r.u.file.id, f->client_id, BW_ID_LEN);
	r.u.file.path = f->path_name;
	r.u.file.rec = f;
	if ((rc = bw_meta_run(g->to, &r)) != 0)
		return fail(g, rc, "file '%s': %s", f->file_name,
			    bw_strerror(rc));
	return 0;
}

/* --- messages ---------------------------------------------------------------
 */

struct queue {
	uint8_t to[BW_ID_LEN];
	uint64_t n, bytes;
};

struct queues {
	struct queue *v;
	size_t n, cap;
};

static int
add_queue(void *arg, const uint8_t to[BW_ID_LEN], uint64_t n, uint64_t bytes)
{
	struct queues *qs = arg;
	struct queue *grown;

	if (qs->n == qs->cap) {
		qs->cap = qs->cap ? qs->cap * 2 : 64;
		if ((grown = realloc(qs->v, qs->cap * sizeof(*grown))) == NULL)
			return BW_ENOMEM;
		qs->v = grown;
	}
	memcpy(qs->v[qs->n].to, to, BW_ID_LEN);
	qs->v[qs->n].n = n;
	qs->v[qs->n].bytes = bytes;
	qs->n++;
	return 0;
}

static int
source_message(void *arg, const struct bw_msg_rec *m)
{
	struct mig *g = arg;
	struct bw_msg_rec copy = *m;
	struct bw_meta_req r;
	int rc;

	g->rep->messages++;
	if (m->path[0] != '\0' && (rc = copy_blob(g, m->path)) != 0)
		return g->row_rc = rc;
	bw_meta_req_init(&r, BW_META_MSG_PUT, BW_META_DURABLE, NULL, NULL);
	r.u.msg = &copy;
	rc = bw_meta_run(g->to, &r);
	if (rc == 0)
		g->rep->messages_new++;
	else if (rc != BW_EEXIST) /* an earlier run's */
		return g->row_rc = fail(g, rc, "message %lld: %s",
					(long long)m->id, bw_strerror(rc));
	return 0;
}

static int
messages(struct mig *g)
{
	struct queues src = {0}, dst = {0};
	struct bw_meta_req r;
	size_t i, j;
	int rc;

	if ((rc = g->from->be->msg_totals(g->from->state, add_queue, &src)) !=
	    0) {
		rc = fail(g, rc, "the source's messages: %s", bw_strerror(rc));
		goto out;
	}
	for (i = 0; i < src.n; i++) {
		bw_meta_req_init(&r, BW_META_MSG_READ, 0, NULL, NULL);
		memcpy(r.u.read.to, src.v[i].to, BW_ID_LEN);
		r.u.read.content = 1;
		r.u.read.row = source_message;
		r.u.read.row_arg = g;
		g->row_rc = 0;
		if ((rc = bw_meta_run(g->from, &r)) == 0)
			rc = g->row_rc;
		if (rc != 0) {
			if (g->why[0] == '\0')
				rc = fail(g, rc, "the source's messages: %s",
					  bw_strerror(rc));
			goto out;
		}
	}
	if ((rc = g->from->be->msg_last_id(g->from->state, &g->rep->last_id)) !=
	    0) {
		rc = fail(g, rc, "the source's last message id: %s",
			  bw_strerror(rc));
		goto out;
	}
	bw_meta_req_init(&r, BW_META_MSG_FLOOR, BW_META_DURABLE, NULL, NULL);
	r.u.drop = g->rep->last_id;
	if ((rc = bw_meta_run(g->to, &r)) != 0) {
		rc = fail(g, rc, "the target's message ids: %s",
			  bw_strerror(rc));
		goto out;
	}
	/* every recipient's queue, as many and as large */
	if ((rc = g->to->be->msg_totals(g->to->state, add_queue, &dst)) != 0) {
		rc = fail(g, rc, "the target's messages: %s", bw_strerror(rc));
		goto out;
	}
	for (i = 0; i < src.n; i++) {
		for (j = 0; j < dst.n; j++)
			if (memcmp(dst.v[j].to, src.v[i].to, BW_ID_LEN) == 0)
				break;
		if (j == dst.n || dst.v[j].n != src.v[i].n ||
		    dst.v[j].bytes != src.v[i].bytes) {
			rc = fail(g, BW_ESIZE,
				  "a recipient's queue differs in the target "
				  "(%llu messages, %llu bytes in the source)",
				  (unsigned long long)src.v[i].n,
				  (unsigned long long)src.v[i].bytes);
			goto out;
		}
	}
out:
	free(src.v);
	free(dst.v);
	return rc;
}

/* --- the whole
 * -----------------------------------------------------------------
 */

static int
pass(struct mig *g)
{
	int rc;

	/* clients: the target's by id, then each of the source's */
	clear_seen(g);
	if ((rc = g->to->be->load_clients(g->to->state, target_client, g)) != 0)
		return fail(g, rc, "the target's clients: %s", bw_strerror(rc));
	if ((rc = g->from->be->load_clients(g->from->state, source_client,
					    g)) != 0)
		return g->why[0] != '\0'
			       ? rc
			       : fail(g, rc, "the source's clients: %s",
				      bw_strerror(rc));
	clear_seen(g);
	if ((rc = g->to->be->load_files(g->to->state, target_file, g)) != 0)
		return fail(g, rc, "the target's files: %s", bw_strerror(rc));
	if ((rc = g->from->be->load_files(g->from->state, source_file, g)) != 0)
		return g->why[0] != '\0' ? rc
					 : fail(g, rc, "the source's files: %s",
						bw_strerror(rc));
	clear_seen(g);
	return 0;
}

int
bw_migrate(struct bw_meta *from, struct bw_blobs *from_blobs,
	   struct bw_meta *to, struct bw_blobs *to_blobs, int same_blobs,
	   struct bw_migrate_report *rep, char *why, size_t why_cap)
{
	struct mig g = {.from = from,
			.to = to,
			.fb = from_blobs,
			.tb = to_blobs,
			.same = same_blobs,
			.rep = rep,
			.why = why,
			.why_cap = why_cap};
	int rc;

	memset(rep, 0, sizeof(*rep));
	why[0] = '\0';
	if ((g.buf = aligned_alloc(4096, CHUNK)) == NULL)
		return BW_ENOMEM;
	if ((rc = bw_hash_init(&g.h)) != 0) {
		free(g.buf);
		return rc;
	}
	if ((rc = pass(&g)) == 0 && (rc = messages(&g)) == 0) {
		/* again, comparing only: every row is there, every content
		 * reads back with the source's CRC */
		uint64_t contents = rep->contents, files = rep->files;

		g.verifying = 1;
		rc = pass(&g);
		rep->contents = contents;
		rep->files = files;
		if (rc == 0)
			rc = from->be->load_clients(from->state, count_client,
						    &g);
	}
	clear_seen(&g);
	bw_hash_fini(&g.h);
	free(g.buf);
	return rc;
}
