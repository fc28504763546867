/* Clients and files in RAM, indexed by id, by name and by (owner, file name),
 * written through to the store.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "host/registry.h"

static void
client_free(struct bw_client *c)
{
	if (c != NULL)
		bw_secure_free(c, sizeof(*c));
}

static int
index_client(struct bw_registry *r, struct bw_client *c)
{
	int rc;

	if ((rc = bw_hash_put(&r->by_id, c->id, BW_ID_LEN, c)) != 0)
		return rc;
	if ((rc = bw_hash_put(&r->by_name, c->name, strlen(c->name), c)) != 0) {
		bw_hash_del(&r->by_id, c->id, BW_ID_LEN);
		return rc;
	}
	r->clients_n++;
	if (r->last_added != NULL)
		r->last_added->added_next = c;
	else
		r->first_added = c;
	r->last_added = c;
	return 0;
}

static void
file_key(struct bw_file *f)
{
	size_t n = strlen(f->file_name);

	memcpy(f->key, f->owner->id, BW_ID_LEN);
	memcpy(f->key + BW_ID_LEN, f->file_name, n);
	f->key_len = BW_ID_LEN + n;
}

static uint64_t
file_size(const struct bw_registry *r, const char *path_name)
{
	char p[BW_PATH_CAP + 4096];
	struct stat st;

	if (snprintf(p, sizeof(p), "%s/%s", r->data_dir, path_name) >=
	    (int)sizeof(p))
		return 0;
	if (lstat(p, &st) != 0 || !S_ISREG(st.st_mode))
		return 0;
	return (uint64_t)st.st_size;
}

static void
unlink_file(struct bw_registry *r, struct bw_file *f)
{
	bw_hash_del(&r->files, f->key, f->key_len);
	if (f->path_indexed)
		bw_hash_del(&r->by_path, f->path_name, strlen(f->path_name));
	if (f->prev != NULL)
		f->prev->next = f->next;
	else
		f->owner->files = f->next;
	if (f->next != NULL)
		f->next->prev = f->prev;
	f->owner->files_n--;
	r->files_n--;
	r->bytes_stored -= f->size;
	free(f);
}

static int
link_file(struct bw_registry *r, struct bw_client *c,
	  const struct bw_file_rec *rec, uint64_t size)
{
	struct bw_file *f;
	int rc;

	if ((f = calloc(1, sizeof(*f))) == NULL)
		return BW_ENOMEM;
	f->owner = c;
	snprintf(f->file_name, sizeof(f->file_name), "%s", rec->file_name);
	snprintf(f->path_name, sizeof(f->path_name), "%s", rec->path_name);
	snprintf(f->pending_name, sizeof(f->pending_name), "%s",
		 rec->pending_name);
	snprintf(f->pending_path, sizeof(f->pending_path), "%s",
		 rec->pending_path);
	f->verified = rec->verified;
	f->size = size;
	file_key(f);
	if ((rc = bw_hash_put(&r->files, f->key, f->key_len, f)) != 0) {
		free(f);
		return rc;
	}
	/* two rows naming one path (a database made elsewhere): the first
	 * keeps the index */
	rc = bw_hash_put(&r->by_path, f->path_name, strlen(f->path_name), f);
	if (rc == BW_ENOMEM) {
		bw_hash_del(&r->files, f->key, f->key_len);
		free(f);
		return rc;
	}
	f->path_indexed = rc == 0;
	f->prev = NULL;
	f->next = c->files;
	if (c->files != NULL)
		c->files->prev = f;
	c->files = f;
	c->files_n++;
	r->files_n++;
	r->bytes_stored += size;
	return 0;
}

static int
load_client(void *arg, const struct bw_client_rec *rec)
{
	struct bw_registry *r = arg;
	struct bw_client *c;
	int rc;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return BW_ENOMEM;
	memcpy(c->id, rec->id, BW_ID_LEN);
	memcpy(c->name, rec->name, sizeof(c->name));
	c->has_pubkey = rec->has_pubkey;
	memcpy(c->pubkey, rec->pubkey, sizeof(c->pubkey));
	c->has_aes = rec->has_aes;
	memcpy(c->aes_key, rec->aes_key, sizeof(c->aes_key));
	c->last_seen = rec->last_seen;
	c->key_issued = rec->key_issued;
	c->key_used = rec->key_used;
	if ((rc = index_client(r, c)) != 0) {
		bw_warn("registry: skipping duplicate client row '%s'",
			rec->name);
		client_free(c);
	}
	return 0;
}

static int
load_file(void *arg, const struct bw_file_rec *rec)
{
	struct bw_registry *r = arg;
	struct bw_client *c = bw_registry_by_id(r, rec->client_id);

	if (c == NULL) {
		bw_warn("registry: file row '%s' has no client; ignored",
			rec->file_name);
		return 0;
	}
	if (link_file(r, c, rec, file_size(r, rec->path_name)) == BW_ENOMEM)
		return BW_ENOMEM;
	if (rec->pending_path[0] != '\0')
		c->files->pending_size = file_size(r, rec->pending_path);
	return 0;
}

int
bw_registry_open(struct bw_registry *r, struct bw_store *store,
		 const char *data_dir)
{
	int rc;

	memset(r, 0, sizeof(*r));
	r->store = store;
	r->max_clients = 1000000;
	r->max_reg_per_min = 1000;
	if ((r->data_dir = strdup(data_dir)) == NULL)
		return BW_ENOMEM;
	if ((rc = bw_hash_init(&r->by_id)) != 0 ||
	    (rc = bw_hash_init(&r->by_name)) != 0 ||
	    (rc = bw_hash_init(&r->files)) != 0 ||
	    (rc = bw_hash_init(&r->by_path)) != 0)
		goto fail;
	if ((rc = bw_store_load_clients(store, load_client, r)) != 0 ||
	    (rc = bw_store_load_files(store, load_file, r)) != 0)
		goto fail;
	return 0;
fail:
	bw_registry_close(r);
	return rc;
}

static int
free_one_client(void *arg, void *val)
{
	struct bw_client *c = val;
	struct bw_file *f, *next;

	(void)arg;
	for (f = c->files; f != NULL; f = next) {
		next = f->next;
		free(f);
	}
	client_free(c);
	return 0;
}

void
bw_registry_close(struct bw_registry *r)
{
	if (r->by_id.slots != NULL)
		(void)bw_hash_each(&r->by_id, free_one_client, NULL);
	bw_hash_fini(&r->by_id);
	bw_hash_fini(&r->by_name);
	bw_hash_fini(&r->files);
	bw_hash_fini(&r->by_path);
	free(r->data_dir);
	r->data_dir = NULL;
}

int
bw_registry_admit(struct bw_registry *r, struct bw_addr *addr, uint64_t now_ms,
		  const char **why)
{
	if (r->clients_n >= r->max_clients) {
		*why = "registered clients at the limit (--max-clients)";
		return BW_ETOOBIG;
	}
	if (addr == NULL ||
	    bw_addr_count_reg(addr, r->max_reg_per_min, now_ms) != 0) {
		*why = "too many registrations a minute from this address "
		       "(--max-reg-per-min)";
		return BW_ETOOBIG;
	}
	return 0;
}

struct bw_client *
bw_registry_by_id(const struct bw_registry *r, const uint8_t id[BW_ID_LEN])
{
	return bw_hash_get(&r->by_id, id, BW_ID_LEN);
}

struct bw_client *
bw_registry_by_name(const struct bw_registry *r, const char *name)
{
	return bw_hash_get(&r->by_name, name, strlen(name));
}

int
bw_registry_add(struct bw_registry *r, const char *name, const uint8_t *pubkey,
		struct bw_client **out)
{
	struct bw_client_rec rec;
	struct bw_client *c;
	int rc, tries;

	if (bw_registry_by_name(r, name) != NULL)
		return BW_EEXIST;
	memset(&rec, 0, sizeof(rec));
	snprintf(rec.name, sizeof(rec.name), "%s", name);
	if (pubkey != NULL) {
		rec.has_pubkey = 1;
		rec.key_used = 1;
		memcpy(rec.pubkey, pubkey, BW_RSA_PUB_LEN);
	}
	rec.last_seen = bw_time_s();
	for (tries = 0;; tries++) {
		if ((rc = bw_random(rec.id, BW_ID_LEN)) != 0)
			return rc;
		if (bw_registry_by_id(r, rec.id) == NULL)
			break;
		if (tries == 3)
			return BW_EEXIST;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return BW_ENOMEM;
	if ((rc = bw_store_client_insert(r->store, &rec)) != 0) {
		client_free(c);
		return rc;
	}
	memcpy(c->id, rec.id, BW_ID_LEN);
	memcpy(c->name, rec.name, sizeof(c->name));
	c->has_pubkey = rec.has_pubkey;
	c->key_used = rec.key_used;
	memcpy(c->pubkey, rec.pubkey, sizeof(c->pubkey));
	c->last_seen = rec.last_seen;
	if ((rc = index_client(r, c)) != 0) {
		client_free(c);
		return rc;
	}
	*out = c;
	return 0;
}

int
bw_registry_set_key(struct bw_registry *r, struct bw_client *c,
		    const uint8_t *pubkey, const uint8_t *aes_key,
		    int64_t issued, int used)
{
	int64_t now = bw_time_s();
	int rc;

	rc = bw_store_client_set_key(r->store, c->id, pubkey, aes_key, issued,
				     used, now);
	if (rc != 0)
		return rc;
	if (pubkey != NULL) {
		memcpy(c->pubkey, pubkey, BW_RSA_PUB_LEN);
		c->has_pubkey = 1;
	}
	if (aes_key == NULL)
		bw_wipe(c->aes_key, sizeof(c->aes_key));
	else if (aes_key != c->aes_key) /* never copied onto itself */
		memcpy(c->aes_key, aes_key, BW_AES_KEY_LEN);
	c->has_aes = aes_key != NULL;
	if (c->key_issued != issued)
		c->key_issued_ms = 0; /* the caller sets it for a new key */
	c->key_issued = issued;
	c->key_used = used;
	c->key_failures = 0;
	c->last_seen = now;
	return 0;
}

void
bw_registry_touch(struct bw_registry *r, struct bw_client *c)
{
	int64_t now = bw_time_s();
	int rc;

	if (c->last_seen == now)
		return; /* LastSeen has one-second resolution */
	c->last_seen = now;
	if ((rc = bw_store_client_touch(r->store, c->id, now)) != 0)
		bw_warn("registry: LastSeen not saved: %s", bw_strerror(rc));
}

struct bw_file *
bw_registry_file(const struct bw_registry *r, const struct bw_client *c,
		 const char *file_name)
{
	uint8_t key[BW_ID_LEN + BW_NAME_CAP];
	size_t n = strlen(file_name);

	if (n >= BW_NAME_CAP)
		return NULL;
	memcpy(key, c->id, BW_ID_LEN);
	memcpy(key + BW_ID_LEN, file_name, n);
	return bw_hash_get(&r->files, key, BW_ID_LEN + n);
}

struct bw_file *
bw_registry_file_at(const struct bw_registry *r, const struct bw_client *c,
		    const char *path_name)
{
	struct bw_file *f =
		bw_hash_get(&r->by_path, path_name, strlen(path_name));

	return f != NULL && f->owner == c ? f : NULL;
}

void
bw_registry_file_rec(const struct bw_file *f, struct bw_file_rec *rec)
{
	memset(rec, 0, sizeof(*rec));
	memcpy(rec->client_id, f->owner->id, BW_ID_LEN);
	memcpy(rec->file_name, f->file_name, sizeof(rec->file_name));
	memcpy(rec->path_name, f->path_name, sizeof(rec->path_name));
	rec->verified = f->verified;
	memcpy(rec->pending_name, f->pending_name, sizeof(rec->pending_name));
	memcpy(rec->pending_path, f->pending_path, sizeof(rec->pending_path));
}

int
bw_registry_set_file(struct bw_registry *r, struct bw_client *c,
		     const char *path, const struct bw_file_rec *rec,
		     uint64_t size, uint64_t pending_size)
{
	struct bw_file *f, *next;
	char at[BW_PATH_CAP];
	int rc;

	/* path may point into a file this call frees: keep a copy */
	if (snprintf(at, sizeof(at), "%s", path) >= (int)sizeof(at))
		return BW_ETOOBIG;
	path = at;
	if ((rc = bw_store_file_set(r->store, c->id, path, rec)) != 0)
		return rc;
	/* the row at path and the row of the name, by their indexes */
	f = bw_registry_file_at(r, c, path);
	next = rec != NULL ? bw_registry_file(r, c, rec->file_name) : NULL;
	if (f != NULL)
		unlink_file(r, f);
	if (next != NULL && next != f)
		unlink_file(r, next);
	if (rec == NULL)
		return 0;
	if ((rc = link_file(r, c, rec, size)) != 0)
		return rc;
	c->files->pending_size = pending_size;
	return 0;
}

int
bw_registry_each_client(const struct bw_registry *r,
			int (*fn)(void *arg, void *client), void *arg)
{
	return bw_hash_each(&r->by_id, fn, arg);
}

int
bw_registry_each_file(const struct bw_registry *r,
		      int (*fn)(void *arg, void *file), void *arg)
{
	return bw_hash_each(&r->files, fn, arg);
}
