/* The vault's files: every row of the metadata store's file table, in RAM,
 * indexed by (owner, file name) and by stored path, with the sizes of the
 * stored objects. A change goes to the store first and into RAM once the
 * store has it; the commits that make changes hold the stored path's lock,
 * so nobody acts on the old row meanwhile.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/vault/vault_int.h"

static void
make_key(const uint8_t id[BW_ID_LEN], const char *name, uint8_t *key,
	 size_t *len)
{
	size_t n = strlen(name);

	memcpy(key, id, BW_ID_LEN);
	memcpy(key + BW_ID_LEN, name, n);
	*len = BW_ID_LEN + n;
}

struct vfile *
vfile_by_name(const struct bw_vault *v, const uint8_t id[BW_ID_LEN],
	      const char *name)
{
	uint8_t key[BW_ID_LEN + BW_NAME_CAP];
	size_t len;

	if (strlen(name) >= BW_NAME_CAP)
		return NULL;
	make_key(id, name, key, &len);
	return bw_hash_get(&v->files, key, len);
}

struct vfile *
vfile_at(const struct bw_vault *v, const uint8_t id[BW_ID_LEN],
	 const char *path)
{
	struct vfile *f = bw_hash_get(&v->by_path, path, strlen(path));

	return f != NULL && memcmp(f->owner, id, BW_ID_LEN) == 0 ? f : NULL;
}

void
vfile_rec(const struct vfile *f, struct bw_file_rec *rec)
{
	memset(rec, 0, sizeof(*rec));
	memcpy(rec->client_id, f->owner, BW_ID_LEN);
	memcpy(rec->file_name, f->file_name, sizeof(rec->file_name));
	memcpy(rec->path_name, f->path_name, sizeof(rec->path_name));
	rec->verified = f->verified;
	memcpy(rec->pending_name, f->pending_name, sizeof(rec->pending_name));
	memcpy(rec->pending_path, f->pending_path, sizeof(rec->pending_path));
	rec->uploader = f->up_key;
}

static void
unlink_file(struct bw_vault *v, struct vfile *f)
{
	vault_owner_del(v, f);
	bw_hash_del(&v->files, f->key, f->key_len);
	if (f->path_indexed)
		bw_hash_del(&v->by_path, f->path_name, strlen(f->path_name));
	v->files_n--;
	v->bytes_stored -= f->size;
	free(f);
}

/* rec's file in RAM; at place (where the file it replaces was in its
 * owner's list, keeping its mark) or, NULL, first as a newcomer. */
static int
link_file(struct bw_vault *v, const struct bw_file_rec *rec, uint64_t size,
	  uint64_t pending_size, const struct vplace *place)
{
	struct vfile *f;
	int rc;

	if ((f = calloc(1, sizeof(*f))) == NULL)
		return BW_ENOMEM;
	memcpy(f->owner, rec->client_id, BW_ID_LEN);
	snprintf(f->file_name, sizeof(f->file_name), "%s", rec->file_name);
	snprintf(f->path_name, sizeof(f->path_name), "%s", rec->path_name);
	snprintf(f->pending_name, sizeof(f->pending_name), "%s",
		 rec->pending_name);
	snprintf(f->pending_path, sizeof(f->pending_path), "%s",
		 rec->pending_path);
	f->verified = rec->verified;
	f->up_key = rec->uploader;
	f->size = size;
	f->pending_size = pending_size;
	make_key(f->owner, f->file_name, f->key, &f->key_len);
	if ((rc = bw_hash_put(&v->files, f->key, f->key_len, f)) != 0) {
		free(f);
		return rc;
	}
	/* two rows naming one path (a database made elsewhere): the first
	 * keeps the index */
	rc = bw_hash_put(&v->by_path, f->path_name, strlen(f->path_name), f);
	if (rc == BW_ENOMEM || vault_owner_add(v, f, place) != 0) {
		if (rc == 0)
			bw_hash_del(&v->by_path, f->path_name,
				    strlen(f->path_name));
		bw_hash_del(&v->files, f->key, f->key_len);
		free(f);
		return BW_ENOMEM;
	}
	f->path_indexed = rc == 0;
	v->files_n++;
	v->bytes_stored += size;
	return 0;
}

/* What the store now holds, in RAM: every file of id at path or named
 * rec->file_name goes, then rec (if not NULL) comes. */
static int
apply(struct bw_vault *v, const uint8_t id[BW_ID_LEN], const char *path,
      const struct bw_file_rec *rec, uint64_t size, uint64_t pending_size)
{
	struct vfile *f = vfile_at(v, id, path), *named;
	struct vplace place = {NULL, 0};
	int keep;

	named = rec != NULL ? vfile_by_name(v, id, rec->file_name) : NULL;
	/* the same file changed (a verdict, a replacement waiting): it keeps
	 * its place and mark, so that a listing read a page at a time neither
	 * loses nor repeats it */
	keep = f != NULL && rec != NULL && (named == NULL || named == f) &&
	       strcmp(f->file_name, rec->file_name) == 0;
	if (keep) {
		place.after = f->owner_prev;
		place.seq = f->seq;
	}
	if (f != NULL)
		unlink_file(v, f);
	if (named != NULL && named != f)
		unlink_file(v, named);
	return rec != NULL ? link_file(v, rec, size, pending_size,
				       keep ? &place : NULL)
			   : 0;
}

/* --- changes --------------------------------------------------------------
 */

struct vset {
	struct bw_meta_req req;
	struct bw_vault *v;
	uint8_t id[BW_ID_LEN];
	char path[BW_PATH_CAP];
	int has_rec;
	struct bw_file_rec rec;
	uint64_t size, pending_size;
	vfile_fn done;
	void *arg;
};

static void
set_done(struct bw_meta_req *req)
{
	struct vset *s = (struct vset *)req;
	int rc = req->rc;

	if (rc == 0)
		rc = apply(s->v, s->id, s->path, s->has_rec ? &s->rec : NULL,
			   s->size, s->pending_size);
	s->done(s->arg, rc);
	free(s);
}

static struct vset *
vset_new(struct bw_vault *v, const uint8_t id[BW_ID_LEN], const char *path,
	 const struct bw_file_rec *rec, uint64_t size, uint64_t pending_size)
{
	struct vset *s;

	if (strlen(path) >= sizeof(s->path) ||
	    (s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	s->v = v;
	memcpy(s->id, id, BW_ID_LEN);
	memcpy(s->path, path, strlen(path) + 1);
	if (rec != NULL) {
		s->has_rec = 1;
		s->rec = *rec;
	}
	s->size = size;
	s->pending_size = pending_size;
	bw_meta_req_init(&s->req, BW_META_FILE_SET, 0, set_done, s);
	memcpy(s->req.u.file.id, id, BW_ID_LEN);
	s->req.u.file.path = s->path;
	s->req.u.file.rec = s->has_rec ? &s->rec : NULL;
	s->req.u.file.fence = bw_lock_held_key(&v->locks, path);
	return s;
}

int
vfile_set(struct bw_vault *v, const uint8_t id[BW_ID_LEN], const char *path,
	  const struct bw_file_rec *rec, uint64_t size, uint64_t pending_size,
	  vfile_fn done, void *arg)
{
	struct vset *s = vset_new(v, id, path, rec, size, pending_size);

	if (s == NULL)
		return BW_ENOMEM;
	s->done = done;
	s->arg = arg;
	bw_meta_submit(v->meta, &s->req);
	return 0;
}

int
vfile_set_now(struct bw_vault *v, const uint8_t id[BW_ID_LEN], const char *path,
	      const struct bw_file_rec *rec, uint64_t size,
	      uint64_t pending_size)
{
	struct vset *s = vset_new(v, id, path, rec, size, pending_size);
	int rc;

	if (s == NULL)
		return BW_ENOMEM;
	if ((rc = bw_meta_run(v->meta, &s->req)) == 0)
		rc = apply(v, id, path, rec, size, pending_size);
	free(s);
	return rc;
}

/* --- a shared store: another node's changes --------------------------------
 * Several daemons share the rows: before a request acts on a client's
 * files, RAM is brought to what the store holds, except for a path this
 * node is committing (its lock is held here: its row is this node's to
 * write). The objects' sizes of rows new to RAM are asked on a worker. */

static uint64_t object_size(struct bw_vault *v, const char *key);

struct vref {
	struct bw_meta_req req;
	struct bw_vault *v;
	uint8_t id[BW_ID_LEN];
	uint64_t *size, *psize; /* of rows new to RAM (else 0) */
	unsigned char *need;	/* 1: ask the sizes of row i */
	void (*done)(void *arg);
	void *arg;
};

static int
locked(const struct bw_vault *v, const char *path)
{
	return bw_lock_busy(&v->locks, path);
}

static int
same_row(const struct vfile *f, const struct bw_file_rec *r)
{
	return f->verified == r->verified && f->up_key == r->uploader &&
	       strcmp(f->path_name, r->path_name) == 0 &&
	       strcmp(f->pending_name, r->pending_name) == 0 &&
	       strcmp(f->pending_path, r->pending_path) == 0;
}

static void
vref_end(struct vref *x)
{
	x->done(x->arg);
	free(x->req.u.files.recs);
	free(x->size);
	free(x->psize);
	free(x->need);
	free(x);
}

/* RAM becomes the rows (but for locked paths). */
static void
vref_apply(struct vref *x)
{
	struct bw_vault *v = x->v;
	const struct bw_file_rec *recs = x->req.u.files.recs;
	size_t n = x->req.u.files.n, i;
	struct vfile *f, *next;
	uint64_t size, psize, pass = ++v->refresh_pass;

	/* files another node removed or renamed away: those no row names
	 * (each row marks its file, so a client's thousands of files cost
	 * one lookup each, not a scan of the rows each) */
	for (i = 0; i < n; i++) {
		if ((f = vfile_by_name(v, x->id, recs[i].file_name)) != NULL)
			f->seen = pass;
	}
	for (f = vfile_first_of(v, x->id); f != NULL; f = next) {
		next = f->owner_next;
		if (f->seen != pass && !locked(v, f->path_name) &&
		    !locked(v, f->pending_path))
			unlink_file(v, f);
	}
	for (i = 0; i < n; i++) {
		f = vfile_by_name(v, x->id, recs[i].file_name);
		if (f != NULL &&
		    (same_row(f, &recs[i]) || locked(v, f->path_name) ||
		     locked(v, f->pending_path)))
			continue;
		if ((f = vfile_at(v, x->id, recs[i].path_name)) != NULL &&
		    locked(v, f->path_name))
			continue;
		size = x->size[i];
		psize = x->psize[i];
		if (apply(v, x->id, recs[i].path_name, &recs[i], size, psize) !=
		    0)
			bw_warn("vault: a file row could not be taken into "
				"RAM");
	}
}

static void
sizes_work(void *arg)
{
	struct vref *x = arg;
	const struct bw_file_rec *recs = x->req.u.files.recs;
	size_t i;

	for (i = 0; i < x->req.u.files.n; i++) {
		if (!x->need[i])
			continue;
		x->size[i] = object_size(x->v, recs[i].path_name);
		if (recs[i].pending_path[0] != '\0')
			x->psize[i] = object_size(x->v, recs[i].pending_path);
	}
}

static void
sizes_done(void *arg)
{
	struct vref *x = arg;

	vref_apply(x);
	vref_end(x);
}

static void
vref_got(struct bw_meta_req *req)
{
	struct vref *x = (struct vref *)req;
	struct bw_vault *v = x->v;
	const struct bw_file_rec *recs = req->u.files.recs;
	size_t n = req->u.files.n, i;
	const struct vfile *f;
	int any = 0;

	if (req->rc != 0) {
		bw_debug("vault: the files of a client could not be read "
			 "again: %s",
			 bw_strerror(req->rc));
		vref_end(x); /* the request meets RAM as it is */
		return;
	}
	if (n > 0 && ((x->size = calloc(n, sizeof(*x->size))) == NULL ||
		      (x->psize = calloc(n, sizeof(*x->psize))) == NULL ||
		      (x->need = calloc(n, 1)) == NULL)) {
		vref_end(x);
		return;
	}
	for (i = 0; i < n; i++) {
		f = vfile_by_name(v, x->id, recs[i].file_name);
		if (f != NULL && strcmp(f->path_name, recs[i].path_name) == 0 &&
		    strcmp(f->pending_path, recs[i].pending_path) == 0) {
			x->size[i] = f->size; /* the same objects */
			x->psize[i] = f->pending_size;
		} else if (f == NULL || !same_row(f, &recs[i])) {
			x->need[i] = 1;
			any = 1;
		}
	}
	if (any && bw_loop_submit(v->eng->loop, sizes_work, sizes_done, x) == 0)
		return;
	vref_apply(x);
	vref_end(x);
}

int
vault_refresh(void *inst, const uint8_t id[BW_ID_LEN], const uint8_t *other,
	      uint16_t code, void (*done)(void *arg), void *arg)
{
	struct bw_vault *v = inst;
	struct vref *x;

	(void)other;
	if (!bw_meta_others_write(v->meta) ||
	    !((code >= BW_VAULT_REQ_SEND_FILE &&
	       code <= BW_VAULT_REQ_CRC_FAIL) ||
	      (code >= BW_VAULT_EXT_LO && code <= BW_VAULT_EXT_HI) ||
	      code == BW_VAULT_REQ_LIST_AFTER ||
	      code == BW_VAULT_REQ_SEND_CLEAR) ||
	    (x = calloc(1, sizeof(*x))) == NULL)
		return 0;
	x->v = v;
	memcpy(x->id, id, BW_ID_LEN);
	x->done = done;
	x->arg = arg;
	bw_meta_req_init(&x->req, BW_META_FILE_GET, 0, vref_got, x);
	memcpy(x->req.u.files.id, id, BW_ID_LEN);
	bw_meta_submit(v->meta, &x->req);
	return 1;
}

/* --- start-up and the end: sizes ------------------------------------------
 */

struct objsize {
	uint64_t size;
	char key[]; /* the hash's key */
};

int
vault_object_size(struct bw_vault *v, const char *key, uint64_t *size)
{
	const struct objsize *o;

	/* the start-up's listing says what is there, never what is not (a
	 * store's answer can leave keys out): one it lacks is asked for */
	if (v->sizes == NULL ||
	    (o = bw_hash_get(v->sizes, key, strlen(key))) == NULL)
		return bw_blob_size(v->blobs, key, size);
	*size = o->size;
	return 0;
}

static int
listed(void *arg, const char *key, uint64_t size, int64_t mtime)
{
	struct bw_hash *h = arg;
	size_t n = strlen(key);
	struct objsize *o = malloc(sizeof(*o) + n + 1);

	(void)mtime;
	if (o == NULL)
		return BW_ENOMEM;
	o->size = size;
	memcpy(o->key, key, n + 1);
	if (bw_hash_put(h, o->key, n, o) != 0)
		free(o); /* listed twice: the first holds */
	return 0;
}

static int
free_size(void *arg, void *val)
{
	(void)arg;
	free(val);
	return 0;
}

void
vault_sizes_free(struct bw_vault *v)
{
	if (v->sizes == NULL)
		return;
	(void)bw_hash_each(v->sizes, free_size, NULL);
	bw_hash_fini(v->sizes);
	free(v->sizes);
	v->sizes = NULL;
}

int
vault_sizes_load(struct bw_vault *v)
{
	int rc;

	if ((v->sizes = calloc(1, sizeof(*v->sizes))) == NULL)
		return BW_ENOMEM;
	if ((rc = bw_hash_init(v->sizes)) != 0) {
		free(v->sizes);
		v->sizes = NULL;
		return rc;
	}
	if ((rc = bw_blob_list(v->blobs, FILES_SPACE, listed, v->sizes)) != 0)
		vault_sizes_free(v);
	return rc;
}

/* The size of the stored object at key; 0 if there is none. */
static uint64_t
object_size(struct bw_vault *v, const char *key)
{
	uint64_t size = 0;

	if (vault_object_size(v, key, &size) != 0)
		return 0;
	return size;
}

static int
load_file(void *arg, const struct bw_file_rec *rec)
{
	struct bw_vault *v = arg;
	uint64_t psize = 0;
	char shown[BW_ESC_CAP];

	if (rec->unreadable) {
		v->rows_unread++;
		return 0;
	}
	if (bw_registry_by_id(v->reg, rec->client_id) == NULL) {
		bw_warn("vault: file row '%s' has no client; ignored",
			bw_escape_display(rec->file_name, shown,
					  sizeof(shown)));
		v->rows_unread++;
		return 0;
	}
	if (rec->pending_path[0] != '\0')
		psize = object_size(v, rec->pending_path);
	return link_file(v, rec, object_size(v, rec->path_name), psize, NULL) ==
			       BW_ENOMEM
		       ? BW_ENOMEM
		       : 0;
}

int
vfile_load(struct bw_vault *v)
{
	return v->meta->be->load_files(v->meta->state, load_file, v);
}

static int
free_file(void *arg, void *val)
{
	(void)arg;
	free(val);
	return 0;
}

static int
free_owner(void *arg, void *val)
{
	(void)arg;
	free(val);
	return 0;
}

void
vfile_free_all(struct bw_vault *v)
{
	if (v->files.slots != NULL)
		(void)bw_hash_each(&v->files, free_file, NULL);
	if (v->by_owner.slots != NULL)
		(void)bw_hash_each(&v->by_owner, free_owner, NULL);
	bw_hash_fini(&v->files);
	bw_hash_fini(&v->by_path);
	bw_hash_fini(&v->by_owner);
	v->files_n = v->bytes_stored = 0;
}

int
vfile_each(const struct bw_vault *v, int (*fn)(void *arg, void *file),
	   void *arg)
{
	return bw_hash_each(&v->files, fn, arg);
}
