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
}

static void
unlink_file(struct bw_vault *v, struct vfile *f)
{
	bw_hash_del(&v->files, f->key, f->key_len);
	if (f->path_indexed)
		bw_hash_del(&v->by_path, f->path_name, strlen(f->path_name));
	v->files_n--;
	v->bytes_stored -= f->size;
	free(f);
}

static int
link_file(struct bw_vault *v, const struct bw_file_rec *rec, uint64_t size,
	  uint64_t pending_size)
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
	if (rc == BW_ENOMEM) {
		bw_hash_del(&v->files, f->key, f->key_len);
		free(f);
		return rc;
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

	named = rec != NULL ? vfile_by_name(v, id, rec->file_name) : NULL;
	if (f != NULL)
		unlink_file(v, f);
	if (named != NULL && named != f)
		unlink_file(v, named);
	return rec != NULL ? link_file(v, rec, size, pending_size) : 0;
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

/* --- start-up and the end -------------------------------------------------
 */

/* The size of the stored object at key; 0 if there is none. */
static uint64_t
object_size(struct bw_vault *v, const char *key)
{
	uint64_t size = 0;

	if (v->blobs->be->size(v->blobs->state, key, &size) != 0)
		return 0;
	return size;
}

static int
load_file(void *arg, const struct bw_file_rec *rec)
{
	struct bw_vault *v = arg;
	uint64_t psize = 0;

	if (bw_registry_by_id(v->reg, rec->client_id) == NULL) {
		bw_warn("vault: file row '%s' has no client; ignored",
			rec->file_name);
		return 0;
	}
	if (rec->pending_path[0] != '\0')
		psize = object_size(v, rec->pending_path);
	return link_file(v, rec, object_size(v, rec->path_name), psize) ==
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

void
vfile_free_all(struct bw_vault *v)
{
	if (v->files.slots != NULL)
		(void)bw_hash_each(&v->files, free_file, NULL);
	bw_hash_fini(&v->files);
	bw_hash_fini(&v->by_path);
	v->files_n = v->bytes_stored = 0;
}

int
vfile_each(const struct bw_vault *v, int (*fn)(void *arg, void *file),
	   void *arg)
{
	return bw_hash_each(&v->files, fn, arg);
}
