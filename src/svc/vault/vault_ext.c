/* Bulwark's extensions of the vault (docs/vault-protocol.md, "Bulwark
 * extensions"): an owner lists its files (1100) and gets one back (1101);
 * vault_delete.c has the delete (1102) and TLS only (1103) requests. Served
 * only on a TLS listener, where the daemon has checked that the client
 * proved the key registered for the id it names (daemon_auth.c); on a plain
 * listener anyone may name any id, so these get the general error there.
 *
 * A get streams in bounded memory: a worker reads the stored object a chunk
 * at a time (GET_CHUNK), hashing every byte from the start (SHA-256, sent
 * after the last byte, so that a client resuming from an offset checks the
 * whole file end to end), and the loop queues a chunk only while the
 * connection holds less than a chunk unsent; on_drained brings the next.
 * At most GETS_MAX run at once, GETS_PER_ADDR from one address.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/cur.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "svc/vault/vault_int.h"

#define GET_CHUNK     (256u * 1024u)
#define GETS_MAX      64u
#define GETS_PER_ADDR 8u /* one address cannot hold every get */
#define LISTS_MAX     8u

/* The client an extension names, or NULL with the error replied. */
struct bw_client *
vault_ext_client(struct bw_conn *c, struct bw_frame_req *r)
{
	struct bw_client *cl;

	if (!bw_conn_tls(c)) {
		(void)bw_frame_error(c, "served on a TLS listener only");
		return NULL;
	}
	if ((cl = vault_header_client(r)) == NULL)
		(void)bw_frame_error(c, "unknown client id");
	return cl;
}

int
vault_no_such_file(struct bw_conn *c, const uint8_t *field)
{
	return bw_frame_reply(c, BW_VAULT_RESP_NO_SUCH_FILE, field,
			      BW_NAME_FIELD);
}

const struct vfile *
vault_ext_file(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p,
	       char name[BW_NAME_CAP], struct bw_client **cl, int *ret)
{
	const struct vfile *f;

	*ret = 0;
	if (bw_vault_name_payload_decode(p, BW_NAME_FIELD, name) != 0) {
		*ret = bw_frame_error(c, "malformed name");
		return NULL;
	}
	if ((*cl = vault_ext_client(c, r)) == NULL)
		return NULL;
	if ((f = vfile_by_name(r->ctx, (*cl)->id, name)) == NULL)
		*ret = vault_no_such_file(c, p);
	return f;
}

/* --- the list (1100) and list after (1105) requests, a page at a time ----
 *
 * The owner's files are a list, newest first, each with the sequence
 * number it joined with. A page is up to BW_VAULT_LIST_PAGE of them, copied
 * on the loop; a worker then finds their stored times in one listing of
 * the owner's objects. A list after request goes on after the last entry
 * of a page: found by its name in one step when it is still the same file
 * (its mark), else by the mark, walking from the newest (a file removed or
 * replaced between two pages). A file that comes between pages is not
 * listed; none is listed twice. */

struct lent {
	struct bw_vault_entry e;
	char *key; /* the object's, for its stored time */
};

struct vlist {
	struct bw_vault *v;
	struct bw_conn *c;
	char prefix[BW_PATH_CAP];
	struct lent *ent;
	size_t n;
	struct lent **by_key; /* ent sorted by key (the worker's) */
	int more;
	uint64_t mark; /* the last entry's seq */
	int rc;
};

static int
by_key_cmp(const void *a, const void *b)
{
	return strcmp((*(struct lent *const *)a)->key,
		      (*(struct lent *const *)b)->key);
}

static int
list_one(void *arg, const char *key, uint64_t size, int64_t mtime)
{
	struct vlist *l = arg;
	struct lent want, *w = &want, **hit;

	(void)size;
	want.key = (char *)key;
	hit = bsearch(&w, l->by_key, l->n, sizeof(*l->by_key), by_key_cmp);
	if (hit != NULL)
		(*hit)->e.stored = mtime;
	return 0;
}

/* Listings at once: each lists its owner's objects on a worker. */
static int
l_busy(const struct bw_vault *v)
{
	return v->lists_active >= LISTS_MAX;
}

/* A worker: the page's stored times, from one listing of the owner's
 * objects. */
static void
list_work(void *arg)
{
	struct vlist *l = arg;
	size_t i;

	for (i = 0; i < l->n; i++)
		l->by_key[i] = &l->ent[i];
	qsort(l->by_key, l->n, sizeof(*l->by_key), by_key_cmp);
	if (l->n > 0)
		l->rc = bw_blob_list(l->v->blobs, l->prefix, list_one, l);
}

static void
list_free(struct vlist *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->ent[i].key);
	free(l->ent);
	free(l->by_key);
	free(l);
}

static void
list_done(void *arg)
{
	struct vlist *l = arg;
	struct bw_conn *c = l->c;
	uint8_t cnt[4], e[BW_VAULT_LIST_ENTRY], trailer[BW_VAULT_LIST_TRAILER];
	size_t i;

	if (bw_conn_dead(c))
		goto out;
	if (l->rc != 0)
		bw_warn("c%llu 1100: the stored times could not be listed: %s",
			ULL(c->id), bw_strerror(l->rc));
	bw_put_u32le(cnt, (uint32_t)l->n);
	trailer[0] = (uint8_t)l->more;
	bw_put_u64le(trailer + 1, l->mark);
	(void)bw_frame_reply_begin(c, BW_VAULT_RESP_LIST,
				   (uint32_t)(4u + l->n * BW_VAULT_LIST_ENTRY +
					      BW_VAULT_LIST_TRAILER));
	(void)bw_frame_reply_add(c, cnt, sizeof(cnt));
	for (i = 0; i < l->n; i++) {
		if (bw_vault_entry_encode(&l->ent[i].e, e) != 0)
			memset(e, 0, sizeof(e)); /* it came in a field */
		(void)bw_frame_reply_add(c, e, sizeof(e));
	}
	(void)bw_frame_reply_add(c, trailer, sizeof(trailer));
	(void)bw_frame_reply_end(c);
	bw_frame_done(c);
out:
	l->v->lists_active--;
	bw_conn_release(c);
	list_free(l);
}

/* Copies the page that starts at f into l. */
static int
list_page(struct vlist *l, const struct vfile *f)
{
	struct lent *x;

	for (; f != NULL && l->n < BW_VAULT_LIST_PAGE; f = f->owner_next) {
		x = &l->ent[l->n];
		memset(&x->e, 0, sizeof(x->e));
		snprintf(x->e.name, sizeof(x->e.name), "%s", f->file_name);
		x->e.size = f->size;
		x->e.verified = f->verified;
		x->e.pending = f->pending_path[0] != '\0';
		if ((x->key = strdup(f->path_name)) == NULL)
			return BW_ENOMEM;
		l->n++;
		l->mark = f->seq;
	}
	l->more = f != NULL;
	return 0;
}

/* The first entry after the page whose last entry was name (mark). */
static const struct vfile *
list_resume(struct bw_vault *v, const uint8_t id[BW_ID_LEN], const char *name,
	    uint64_t mark)
{
	const struct vfile *f =
		name[0] != '\0' ? vfile_by_name(v, id, name) : NULL;

	if (f != NULL && f->seq == mark)
		return f->owner_next;
	for (f = vfile_first_of(v, id); f != NULL && f->seq >= mark;
	     f = f->owner_next)
		;
	return f;
}

static int
list_start(struct bw_conn *c, struct bw_frame_req *r, const char *after,
	   uint64_t mark)
{
	struct bw_vault *v = r->ctx;
	struct bw_client *cl;
	struct vlist *l;
	char hex[2 * BW_ID_LEN + 1];

	if ((cl = vault_ext_client(c, r)) == NULL)
		return 0;
	if (l_busy(v))
		return bw_frame_error(c, "too many listings at once");
	if ((l = calloc(1, sizeof(*l))) == NULL ||
	    (l->ent = calloc(BW_VAULT_LIST_PAGE, sizeof(*l->ent))) == NULL ||
	    (l->by_key = calloc(BW_VAULT_LIST_PAGE, sizeof(*l->by_key))) ==
		    NULL ||
	    list_page(l, after != NULL ? list_resume(v, cl->id, after, mark)
				       : vfile_first_of(v, cl->id)) != 0) {
		if (l != NULL && l->ent != NULL)
			list_free(l);
		else
			free(l);
		return bw_frame_error(c, bw_strerror(BW_ENOMEM));
	}
	l->v = v;
	l->c = c;
	v->lists_active++;
	bw_hex_encode(cl->id, BW_ID_LEN, hex);
	snprintf(l->prefix, sizeof(l->prefix), FILES_SPACE "%s/", hex);
	bw_conn_hold(c);
	bw_frame_wait(c);
	if (bw_loop_submit(v->eng->loop, list_work, list_done, l) != 0) {
		l->rc = BW_ENOMEM;
		list_done(l);
	}
	return 0;
}

int
vault_on_list(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	(void)p;
	return list_start(c, r, NULL, 0);
}

int
vault_on_list_after(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	char name[BW_NAME_CAP];

	/* a name that is none (the client could not read the last entry's):
	 * the mark alone says where to go on */
	if (bw_vault_name_payload_decode(p, BW_NAME_FIELD, name) != 0)
		name[0] = '\0';
	return list_start(c, r, name, bw_get_u64le(p + BW_NAME_FIELD));
}

/* --- the get request (1101): a file back ----------------------------------
 */

struct vget {
	struct bw_vault *v;
	struct bw_conn *c; /* NULL once it closed */
	char key[BW_PATH_CAP];
	struct bw_blob_r *r;
	struct bw_sha256_ctx *sha;
	uint64_t size, offset, pos; /* pos: read from the start so far */
	uint8_t *buf;
	size_t n;	     /* bytes of buf to send */
	struct bw_slot slot; /* in v->gets: the reply is its "body" */
	int rc, reading, begun, verified, eof;
};

static void
get_free_work(void *arg)
{
	struct vget *g = arg;

	if (g->r != NULL)
		bw_blob_read_close(g->v->blobs, g->r);
	g->r = NULL;
}

static void
get_free_done(void *arg)
{
	struct vget *g = arg;

	bw_slots_release(&g->v->gets, &g->slot);
	bw_sha256_free(g->sha);
	free(g->buf);
	free(g);
}

/* The reader closed on a worker (an object store's may take a request). */
static void
get_end(struct vget *g)
{
	/* its slot goes now: the connection may be freed before the reader
	 * is closed, and an eviction must never reach it */
	bw_slots_release(&g->v->gets, &g->slot);
	if (bw_loop_submit(g->v->eng->loop, get_free_work, get_free_done, g) !=
	    0) {
		get_free_work(g);
		get_free_done(g);
	}
}

/* A worker: opens the object first, then reads until a chunk to send is
 * in buf (or the end): bytes before the offset are hashed, not sent. */
static void
get_work(void *arg)
{
	struct vget *g = arg;
	ssize_t got;
	size_t skip;

	g->n = 0;
	if (g->r == NULL) {
		if ((g->rc = bw_blob_size(g->v->blobs, g->key, &g->size)) !=
			    0 ||
		    (g->rc = bw_blob_read_open(g->v->blobs, g->key, &g->r)) !=
			    0)
			return;
		if (g->offset > g->size) {
			g->rc = BW_ESIZE;
			return;
		}
	}
	while (g->n == 0 && !g->eof) {
		got = bw_blob_read(g->v->blobs, g->r, g->buf, GET_CHUNK);
		if (got < 0) {
			g->rc = (int)got;
			return;
		}
		if (got == 0 || g->pos + (uint64_t)got > g->size) {
			/* the object is not the size it said: it changed */
			g->eof = 1;
			if (got != 0 || g->pos != g->size)
				g->rc = BW_EPROTO;
			return;
		}
		if ((g->rc = bw_sha256_update(g->sha, g->buf, (size_t)got)) !=
		    0)
			return;
		skip = g->pos >= g->offset ? 0
		       : g->offset - g->pos >= (uint64_t)got
			       ? (size_t)got
			       : (size_t)(g->offset - g->pos);
		g->pos += (uint64_t)got;
		if (skip > 0 && skip < (size_t)got)
			memmove(g->buf, g->buf + skip, (size_t)got - skip);
		g->n = (size_t)got - skip;
		g->eof = g->pos == g->size;
	}
}

static void get_done(void *arg);

/* What the reader has still to take: the file's bytes not yet read from
 * the store, and those queued on its connection. */
static void
get_progress(struct vget *g)
{
	bw_slot_progress(&g->slot, g->size - g->pos + bw_conn_queued(g->c));
}

static void
get_next(struct vget *g)
{
	if (g->size > 0)
		get_progress(g);
	g->reading = 1;
	bw_conn_hold(g->c);
	if (bw_loop_submit(g->v->eng->loop, get_work, get_done, g) != 0) {
		g->rc = BW_ENOMEM;
		get_done(g);
	}
}

static void
get_begin(struct vget *g)
{
	uint8_t head[BW_VAULT_FILE_HEAD];

	bw_put_u64le(head, g->size);
	bw_put_u64le(head + 8, g->offset);
	head[16] = g->verified ? 1 : 0;
	g->begun = 1;
	(void)bw_frame_reply_begin(g->c, BW_VAULT_RESP_FILE,
				   (uint32_t)(BW_VAULT_FILE_HEAD +
					      (g->size - g->offset) +
					      BW_VAULT_FILE_TRAILER));
	(void)bw_frame_reply_add(g->c, head, sizeof(head));
}

static void
get_done(void *arg)
{
	struct vget *g = arg;
	struct bw_conn *c = g->c;
	uint8_t md[BW_SHA256_LEN];

	g->reading = 0;
	bw_conn_release(c);
	if (bw_conn_dead(c)) {
		get_end(g);
		return;
	}
	if (g->rc != 0) {
		VC(c)->get = NULL;
		if (g->begun) /* the size was announced: only a cut says it */
			bw_conn_close_later(c, "the file could not be read "
					       "to its end");
		else
			(void)bw_frame_error(c, g->rc == BW_ESIZE
							? "offset past the end"
							: bw_strerror(g->rc));
		bw_warn("c%llu 1101 %s: %s", ULL(c->id), g->key,
			bw_strerror(g->rc));
		bw_frame_done(c);
		get_end(g);
		return;
	}
	if (!g->begun)
		get_begin(g);
	if (g->n > 0)
		(void)bw_frame_reply_add(c, g->buf, g->n);
	get_progress(g); /* a slow store is not the reader's slowness */
	bw_conn_output_is_activity(c);
	if (!g->eof) {
		if (bw_conn_queued(c) < GET_CHUNK)
			get_next(g);
		return; /* else vault_get_drained */
	}
	if (bw_sha256_final(g->sha, md) != 0) {
		bw_conn_close_later(c, "cannot hash the file");
	} else {
		(void)bw_frame_reply_add(c, md, sizeof(md));
		(void)bw_frame_reply_end(c);
	}
	VC(c)->get = NULL;
	bw_frame_done(c);
	get_end(g);
}

void
vault_get_drained(struct bw_conn *c, struct vault_conn *vc)
{
	struct vget *g = vc->get;

	if (g == NULL || g->reading || g->eof)
		return;
	get_progress(g);
	if (bw_conn_queued(c) < GET_CHUNK)
		get_next(g);
}

/* Every get slot was taken and this reader, slower than --min-rate lately,
 * gives its place to a newcomer: its connection ends (the reply is cut, a
 * client resumes from what it has). */
static void
get_evict(struct bw_slot *s)
{
	struct vget *g =
		(struct vget *)((char *)s - offsetof(struct vget, slot));

	bw_conn_close_later(g->c, "reading a file back too slowly while "
				  "others waited: its slot went to a newcomer");
	bw_slots_release(&g->v->gets, s);
}

int
vault_ext_init(struct bw_vault *v)
{
	int rc = bw_slots_init(&v->gets, v->eng);

	v->gets.max = GETS_MAX;
	v->gets.per_addr = GETS_PER_ADDR;
	return rc;
}

void
vault_get_closed(struct vault_conn *vc)
{
	struct vget *g = vc->get;

	vc->get = NULL;
	if (g != NULL && !g->reading)
		get_end(g); /* else get_done sees the connection dead */
}

int
vault_on_get(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	struct bw_vault *v = r->ctx;
	char name[BW_NAME_CAP];
	const struct vfile *f;
	struct bw_client *cl;
	const char *why = NULL;
	struct vget *g;
	int rc;

	if ((f = vault_ext_file(c, r, p, name, &cl, &rc)) == NULL)
		return rc;
	if ((g = calloc(1, sizeof(*g))) == NULL ||
	    (g->buf = malloc(GET_CHUNK)) == NULL ||
	    bw_sha256_new(&g->sha) != 0) {
		if (g != NULL) {
			free(g->buf);
			free(g);
		}
		return bw_frame_error(c, bw_strerror(BW_ENOMEM));
	}
	/* the reply's size is known once the object is opened: the slot
	 * counts what is left from then (get_progress) */
	v->gets.min_rate = v->cfg.min_rate;
	if (bw_slots_take(&v->gets, &g->slot, c, UINT64_MAX, get_evict, &why) !=
	    0) {
		bw_sha256_free(g->sha);
		free(g->buf);
		free(g);
		return bw_frame_error(c, why);
	}
	g->v = v;
	g->c = c;
	g->offset = bw_get_u64le(p + BW_NAME_FIELD);
	g->verified = f->verified;
	snprintf(g->key, sizeof(g->key), "%s", f->path_name);
	VC(c)->get = g;
	bw_frame_wait(c);
	get_next(g);
	return 0;
}
