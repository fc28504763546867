/* The vault's start-up: the blob store's scratch under files/ is swept
 * (uploads a run left unfinished), the rows are loaded, and rows and
 * objects made to agree again (a crash can leave either without the
 * other), each change logged with "reconcile:", synchronously. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/vault/vault_int.h"

/* --- rows whose files are missing -------------------------------------- */

struct row {
	uint8_t id[BW_ID_LEN];
	char name[BW_NAME_CAP], path[BW_PATH_CAP];
	char pending_name[BW_NAME_CAP], pending_path[BW_PATH_CAP];
};

struct rows {
	struct row *v;
	size_t n, cap;
};

static int
collect_row(void *arg, void *val)
{
	struct rows *rs = arg;
	const struct vfile *f = val;
	struct row *r;

	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? 2 * rs->cap : 64;
		struct row *nv = realloc(rs->v, cap * sizeof(*nv));

		if (nv == NULL)
			return BW_ENOMEM;
		rs->v = nv;
		rs->cap = cap;
	}
	r = &rs->v[rs->n++];
	memcpy(r->id, f->owner, BW_ID_LEN);
	memcpy(r->name, f->file_name, sizeof(r->name));
	memcpy(r->path, f->path_name, sizeof(r->path));
	memcpy(r->pending_name, f->pending_name, sizeof(r->pending_name));
	memcpy(r->pending_path, f->pending_path, sizeof(r->pending_path));
	return 0;
}

/* The size of the stored object at path (a key, in our layout
 * "files/<hex>/<name>" or "files/.pending/<name>"); -1 if there is none,
 * -2 if the path is not ours or the way to it is not (a link). */
static int64_t
stored_size(struct bw_vault *v, const char *path)
{
	const char *slash;
	uint64_t size;
	int rc;

	if (strncmp(path, PENDING_DIR, strlen(PENDING_DIR)) != 0 &&
	    (strncmp(path, FILES_SPACE, strlen(FILES_SPACE)) != 0 ||
	     (slash = strchr(path + 6, '/')) == NULL ||
	     slash - (path + 6) != 2 * BW_ID_LEN || strchr(slash + 1, '/')))
		return -2;
	rc = vault_object_size(v, path, &size);
	if (rc == BW_ENOTFOUND)
		return -1;
	return rc == 0 ? (int64_t)size : -2;
}

/* A row's path in another form than ours ("/data/files/<hex>/x",
 * "./files/<hex>/x", "files\\<hex>\\x", upper-case hex: a database made
 * by another implementation, or moved) as ours, "files/<hex>/<name>" with
 * the owner's id in lower-case hex, into out: 0, or -1 if it is not one of
 * the owner's stored files in any form. */
static int
canonical_path(const uint8_t id[BW_ID_LEN], const char *path,
	       char out[BW_PATH_CAP])
{
	char p[BW_PATH_CAP], hex[2 * BW_ID_LEN + 1], *q, *at, *name;
	size_t i, n = strlen(path);

	if (n >= sizeof(p))
		return -1;
	for (i = 0; i <= n; i++)
		p[i] = path[i] == '\\' ? '/' : path[i];
	q = p;
	if (q[0] == '/') {
		/* the last ".../files/<hex>/<name>" of an absolute path */
		for (at = NULL, name = q; (name = strstr(name, "/files/"));
		     name++)
			at = name;
		if (at == NULL)
			return -1;
		q = at + 1;
	}
	while (q[0] == '.' && q[1] == '/')
		q += 2;
	if (strncmp(q, "files/", 6) != 0 || strlen(q + 6) < 2 * BW_ID_LEN + 2 ||
	    q[6 + 2 * BW_ID_LEN] != '/')
		return -1;
	name = q + 6 + 2 * BW_ID_LEN + 1;
	bw_hex_encode(id, BW_ID_LEN, hex);
	if (strncasecmp(q + 6, hex, 2 * BW_ID_LEN) != 0 || name[0] == '\0' ||
	    strchr(name, '/') != NULL || strcmp(name, ".") == 0 ||
	    strcmp(name, "..") == 0)
		return -1;
	return snprintf(out, BW_PATH_CAP, "files/%s/%s", hex, name) <
			       BW_PATH_CAP
		       ? 0
		       : -1;
}

/* The row of r names its file in another form: it is rewritten in ours,
 * so that the file is known as the row's (and never removed as a file no
 * row names). 1 rewritten (r->path is ours now), 0 nothing to do, or
 * the store's error: the start-up stops there, since the scan that
 * follows would remove the file as one no row names. */
static int
adopt_path(struct bw_vault *v, struct bw_client *cl, struct row *r)
{
	char canon[BW_PATH_CAP], old[BW_ESC_CAP], shown[BW_ESC_CAP];
	struct vfile *f;
	struct bw_file_rec rec;
	int64_t size;
	int rc;

	if (canonical_path(r->id, r->path, canon) != 0 ||
	    strcmp(canon, r->path) == 0 || (size = stored_size(v, canon)) < 0 ||
	    (f = vfile_by_name(v, cl->id, r->name)) == NULL)
		return 0;
	vfile_rec(f, &rec);
	snprintf(rec.path_name, sizeof(rec.path_name), "%s", canon);
	rc = vfile_set_now(v, cl->id, r->path, &rec, (uint64_t)size,
			   f->pending_size);
	bw_warn("reconcile: the row of %s named its file %s%s",
		bw_escape_display(canon, shown, sizeof(shown)),
		bw_escape_display(r->path, old, sizeof(old)),
		rc == 0 ? "; now in this form" : " (not rewritten)");
	if (rc != 0)
		return rc < 0 ? rc : BW_EDB;
	snprintf(r->path, sizeof(r->path), "%s", canon);
	return 1;
}

static void
unlink_pending(struct bw_vault *v, const char *pending_path)
{
	if (strncmp(pending_path, PENDING_DIR, strlen(PENDING_DIR)) == 0)
		(void)bw_blob_remove(v->blobs, pending_path);
}

/* On a database other daemons share, a row naming no object may be
 * another daemon's commit between its row and its object (a commit
 * writes the row first, under the path's lock across the daemons). The
 * row is dropped only with that lock held here and the object still
 * missing when the store is asked again: the commit that wrote the row
 * then ended without its object (its daemon died, and its session's locks
 * with it). A lock held elsewhere is tried again a few times (a killed
 * daemon's session may take a moment to end), within a budget for the
 * whole start-up; past it the row is left, and a new upload of the name
 * replaces it. */
#define ORPHAN_TRIES	 5
#define ORPHAN_RETRY_MS	 100
#define ORPHAN_TRIES_MAX 50 /* 5 s of one start-up */

/* 1 taken, 0 held elsewhere (or released), or the store's error. */
static int
path_lock(struct bw_vault *v, const char *path, enum bw_meta_op op)
{
	struct bw_meta_req req;
	int rc;

	bw_meta_req_init(&req, op, 0, NULL, NULL);
	req.u.lock.key = bw_lock_key(path);
	if ((rc = bw_meta_run(v->meta, &req)) != 0)
		return rc;
	return op == BW_META_LOCK && req.u.lock.got != 0;
}

/* r's path lock taken, within the start-up's budget of tries: 1, or 0
 * (said why: r is left alone). */
static int
hold_path(struct bw_vault *v, struct row *r, const char *shown, unsigned *tries)
{
	const struct timespec pause = {0, ORPHAN_RETRY_MS * 1000000L};
	int got = 0, i;

	for (i = 0; i < ORPHAN_TRIES && *tries < ORPHAN_TRIES_MAX; i++) {
		if (i > 0)
			(void)nanosleep(&pause, NULL);
		(*tries)++;
		if ((got = path_lock(v, r->path, BW_META_LOCK)) != 0)
			break;
	}
	if (got > 0)
		return 1;
	bw_warn("reconcile: %s names no object; left alone (%s)", shown,
		got < 0	 ? bw_strerror(got)
		: i == 0 ? "the start-up's tries of locks are spent"
			 : "another daemon holds its lock");
	return 0;
}

static int
drop_shared_row(struct bw_vault *v, struct row *r, const char *shown,
		unsigned *tries)
{
	uint64_t size;
	int rc;

	if (!hold_path(v, r, shown, tries))
		return 0;
	rc = bw_blob_size(v->blobs, r->path, &size);
	if (rc == BW_ENOTFOUND)
		rc = vfile_set_now(v, r->id, r->path, NULL, 0, 0);
	else if (rc == 0)
		rc = 1; /* arrived meanwhile: another daemon's commit ended */
	(void)path_lock(v, r->path, BW_META_UNLOCK);
	if (rc == 0)
		bw_warn("reconcile: dropped the row of %s: the file is missing "
			"(no daemon is committing it)",
			shown);
	else if (rc < 0)
		bw_warn("reconcile: %s names no object; left alone (%s)", shown,
			bw_strerror(rc));
	return 0;
}

/* The file is missing beside its pending replacement: an object store's
 * CRC ok (1029, the old file removed first: s3_parts.c) cut before the
 * copy. The replacement goes in place unverified (the next CRC ok confirms
 * it); on a shared database under the path's lock. */
static int
finish_swap(struct bw_vault *v, struct row *r, const char *shown,
	    unsigned *tries)
{
	const struct bw_blobs *b = v->blobs;
	struct bw_file_rec rec;
	uint64_t size;
	int locked = bw_meta_others_write(v->meta), rc;

	if (locked && !hold_path(v, r, shown, tries))
		return 0;
	if ((rc = bw_blob_size(b, r->path, &size)) == BW_ENOTFOUND &&
	    (rc = bw_blob_move(b, r->pending_path, r->path)) == 0 &&
	    (rc = bw_blob_size(b, r->path, &size)) == 0) {
		memset(&rec, 0, sizeof(rec));
		memcpy(rec.client_id, r->id, BW_ID_LEN);
		memcpy(rec.file_name, r->pending_name, sizeof(rec.file_name));
		memcpy(rec.path_name, r->path, sizeof(rec.path_name));
		rec.verified = 0;
		rc = vfile_set_now(v, r->id, r->path, &rec, size, 0);
		bw_warn("reconcile: %s: the file was missing, its replacement "
			"was cut before it took its place; now current, "
			"unverified%s",
			shown, rc != 0 ? " (row not updated)" : "");
	} else if (rc != 0) {
		bw_warn("reconcile: %s: its replacement could not be put in "
			"place: %s",
			shown, bw_strerror(rc));
	}
	if (locked)
		(void)path_lock(v, r->path, BW_META_UNLOCK);
	return 0; /* what is left is said, and the next start-up tries it */
}

static int
reconcile_row(struct bw_vault *v, struct row *r, unsigned *tries)
{
	struct bw_client *cl = bw_registry_by_id(v->reg, r->id);
	struct bw_file_rec rec;
	char shown[BW_ESC_CAP];
	int64_t main_size = stored_size(v, r->path), pend_size = -1;
	int rc = 0;

	if (cl != NULL && main_size == -2 && (rc = adopt_path(v, cl, r)) != 0) {
		if (rc < 0)
			return rc;
		rc = 0;
		main_size = stored_size(v, r->path);
	}
	if (cl == NULL || main_size == -2)
		return 0; /* not ours to judge */
	bw_escape_display(r->path, shown, sizeof(shown));
	if (r->pending_path[0] != '\0')
		pend_size = stored_size(v, r->pending_path);
	if (r->pending_path[0] != '\0' && pend_size == -1 && main_size >= 0) {
		/* a CRC ok's rename happened, its row did not: finish it */
		memset(&rec, 0, sizeof(rec));
		memcpy(rec.client_id, r->id, BW_ID_LEN);
		memcpy(rec.file_name, r->pending_name, sizeof(rec.file_name));
		memcpy(rec.path_name, r->path, sizeof(rec.path_name));
		rec.verified = 1;
		rc = vfile_set_now(v, r->id, r->path, &rec, (uint64_t)main_size,
				   0);
		bw_warn("reconcile: %s: its confirmed replacement is now "
			"current%s",
			shown, rc != 0 ? " (row not updated)" : "");
		return rc;
	}
	if (main_size >= 0)
		return 0;
	if (r->pending_path[0] != '\0' && pend_size >= 0 &&
	    bw_blobs_others_write(v->blobs))
		return finish_swap(v, r, shown, tries);
	if (bw_meta_others_write(v->meta))
		return drop_shared_row(v, r, shown, tries);
	rc = vfile_set_now(v, r->id, r->path, NULL, 0, 0);
	if (r->pending_path[0] != '\0')
		unlink_pending(v, r->pending_path);
	bw_warn("reconcile: dropped the row of %s: the file is missing%s",
		shown, rc != 0 ? " (row not removed)" : "");
	return rc;
}

/* --- objects without rows -------------------------------------------------
 */

struct scan {
	struct bw_vault *v;
	struct bw_hash pending;	      /* pending paths rows name */
	char dir[2 * BW_ID_LEN + 64]; /* the last directory judged */
	int dir_ours;
	int quiet; /* the periodic sweep: what is left alone goes unsaid */
	unsigned removed;
};

/* Whether the objects of files/<d>/ are ours to judge: a known client's
 * id in lower-case hex. Each directory is judged (and logged) once. */
static int
dir_ours(struct scan *sc, const char *d, size_t n)
{
	uint8_t id[BW_ID_LEN];
	char hex[2 * BW_ID_LEN + 1], shown[BW_ESC_CAP], name[BW_PATH_CAP];

	if (n < sizeof(sc->dir) && strlen(sc->dir) == n &&
	    memcmp(sc->dir, d, n) == 0)
		return sc->dir_ours;
	snprintf(sc->dir, sizeof(sc->dir), "%.*s", (int)n, d);
	snprintf(name, sizeof(name), "%.*s", (int)n, d);
	bw_escape_display(name, shown, sizeof(shown));
	sc->dir_ours = 0;
	if (n != 2 * BW_ID_LEN || bw_hex_decode(d, n, id, BW_ID_LEN) != 0 ||
	    bw_registry_by_id(sc->v->reg, id) == NULL) {
		if (!sc->quiet)
			bw_warn("reconcile: files/%s belongs to no client; "
				"left alone",
				shown);
		return 0;
	}
	bw_hex_encode(id, BW_ID_LEN, hex);
	if (memcmp(hex, d, n) != 0) {
		/* not our spelling (upper-case hex): rows may name its files
		 * in it; nothing there is ours to remove */
		if (!sc->quiet)
			bw_warn("reconcile: files/%s is not in lower-case hex; "
				"left alone",
				shown);
		return 0;
	}
	sc->dir_ours = 1;
	return 1;
}

/* Whether key names an object no row names, in a place that is ours. */
static int
unnamed(struct scan *sc, const char *key)
{
	const char *d = key + strlen(FILES_SPACE), *slash = strchr(d, '/');
	uint8_t id[BW_ID_LEN];

	if (strncmp(key, PENDING_DIR, strlen(PENDING_DIR)) == 0)
		return strchr(key + strlen(PENDING_DIR), '/') == NULL &&
		       bw_hash_get(&sc->pending, key, strlen(key)) == NULL;
	if (slash == NULL) {
		(void)dir_ours(sc, d, strlen(d)); /* a file: no client's */
		return 0;
	}
	return strchr(slash + 1, '/') == NULL &&
	       dir_ours(sc, d, (size_t)(slash - d)) &&
	       bw_hex_decode(d, 2 * BW_ID_LEN, id, BW_ID_LEN) == 0 &&
	       vfile_at(sc->v, id, key) == NULL;
}

static int
scan_object(void *arg, const char *key, uint64_t size, int64_t mtime)
{
	struct scan *sc = arg;
	const struct bw_blobs *b = sc->v->blobs;
	char shown[BW_ESC_CAP];
	int rc;

	(void)size;
	if (!bw_blob_settled(b, mtime))
		return 0; /* another daemon's, perhaps, about to be named */
	if (!unnamed(sc, key))
		return 0;
	bw_escape_display(key, shown, sizeof(shown));
	if (sc->v->rows_unread > 0) {
		if (!sc->quiet)
			bw_warn("reconcile: %s has no row, kept: %llu files "
				"row(s) could not be read at start-up and may "
				"name it",
				shown, ULL(sc->v->rows_unread));
		return 0;
	}
	if ((rc = bw_blob_remove(b, key)) != 0) {
		bw_warn("reconcile: %s has no row and cannot be removed: %s",
			shown, bw_strerror(rc));
		return 0;
	}
	bw_warn("reconcile: removed %s: no row names it", shown);
	sc->removed++;
	return 0;
}

static int
note_pending(void *arg, void *val)
{
	struct vfile *f = val;

	if (f->pending_path[0] == '\0')
		return 0;
	return bw_hash_put(arg, f->pending_path, strlen(f->pending_path), f) ==
			       BW_ENOMEM
		       ? BW_ENOMEM
		       : 0;
}

static int
reconcile(struct bw_vault *v)
{
	struct rows rs = {NULL, 0, 0};
	struct scan sc;
	unsigned tries = 0;
	size_t i;
	int rc;

	if ((rc = vfile_each(v, collect_row, &rs)) != 0)
		goto out;
	for (i = 0; i < rs.n && rc == 0; i++)
		rc = reconcile_row(v, &rs.v[i], &tries);
	if (rc != 0)
		goto out;
	memset(&sc, 0, sizeof(sc));
	sc.v = v;
	if ((rc = bw_hash_init(&sc.pending)) != 0)
		goto out;
	rc = vfile_each(v, note_pending, &sc.pending);
	if (rc == 0)
		rc = bw_blob_list(v->blobs, FILES_SPACE, scan_object, &sc);
	bw_hash_fini(&sc.pending);
out:
	free(rs.v);
	return rc;
}

/* The periodic sweep's judge (vault_sweep.c): marks in out[i] each of
 * keys[0..n) that names an object no row in RAM names, in a place that is
 * ours. */
int
vault_unnamed_keys(struct bw_vault *v, char *const *keys, size_t n,
		   unsigned char *out)
{
	struct scan sc;
	size_t i;
	int rc = 0;

	memset(&sc, 0, sizeof(sc));
	sc.v = v;
	sc.quiet = 1;
	if ((rc = bw_hash_init(&sc.pending)) != 0)
		return rc;
	/* the replacements' paths (a walk of every file) if a key may be one */
	for (i = 0; i < n &&
		    strncmp(keys[i], PENDING_DIR, sizeof(PENDING_DIR) - 1) != 0;
	     i++)
		;
	if (i < n)
		rc = vfile_each(v, note_pending, &sc.pending);
	for (i = 0; rc == 0 && i < n; i++)
		out[i] = (unsigned char)unnamed(&sc, keys[i]);
	bw_hash_fini(&sc.pending);
	return rc;
}

/* --- the instance ------------------------------------------------------- */

/* Sweeps the scratch, loads the rows and reconciles them with the
 * objects. */
static int
vault_start(struct bw_vault *v)
{
	unsigned n = 0;
	int rc;

	if ((rc = bw_blob_sweep(v->blobs, FILES_SPACE, &n)) != 0) {
		bw_error("refusing to start: files/ or files/.incoming %s",
			 rc == -ELOOP ? "is a symbolic link or not a directory"
				      : bw_strerror(rc));
		return rc;
	}
	if (n > 0)
		bw_info("removed %u incomplete upload(s) left by a previous "
			"run",
			n);
	/* a shared store: one listing, not a request per object */
	if (bw_blobs_others_write(v->blobs) && (rc = vault_sizes_load(v)) != 0)
		bw_warn("vault: the stored objects could not be listed (%s); "
			"asking each one",
			bw_strerror(rc));
	if ((rc = vfile_load(v)) != 0) {
		vault_sizes_free(v);
		bw_error("vault: cannot load the file rows: %s",
			 bw_strerror(rc));
		return rc;
	}
	rc = reconcile(v);
	vault_sizes_free(v);
	if (rc != 0)
		bw_error("reconcile: %s", bw_strerror(rc));
	else
		bw_info("vault: loaded %llu files, %llu bytes stored",
			ULL(v->files_n), ULL(v->bytes_stored));
	return rc;
}

void
bw_vault_cfg_defaults(struct bw_vault_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	/* input: an upload's 1 MiB chunk; output: replies of a few hundred
	 * bytes, padded to 1 KiB, never more than a few queued */
	cfg->limits = (struct bw_conn_limits){1024u * 1024u, 1024u * 1024u,
					      30000, 10000};
	cfg->max_file_size = BW_MAX_CONTENT_SIZE;
	cfg->max_uploads = 256;
	cfg->max_uploads_per_addr = 128;
	cfg->min_rate = 1024;
	cfg->key_lifetime_s = 3600;
	cfg->key_failures = 3;
	cfg->window_ms = 30000;
}

int
vault_open(const struct bw_host *h, const void *cfg, void **out)
{
	struct bw_vault *v;
	int rc;

	*out = NULL;
	if ((v = calloc(1, sizeof(*v))) == NULL)
		return BW_ENOMEM;
	v->cfg = *(const struct bw_vault_cfg *)cfg;
	v->eng = h->eng;
	v->reg = h->reg;
	v->meta = h->meta;
	v->blobs = h->blobs;
	if ((rc = bw_slots_init(&v->slots, h->eng)) != 0 ||
	    (rc = vault_ext_init(v)) != 0) {
		free(v);
		return rc;
	}
	if ((rc = bw_locks_init(&v->locks, v->meta, h->eng->loop, "vault",
				VAULT_LOCK_WAITERS)) != 0 ||
	    (rc = bw_hash_init(&v->files)) != 0 ||
	    (rc = bw_hash_init(&v->by_path)) != 0 ||
	    (rc = bw_hash_init(&v->by_owner)) != 0 ||
	    (rc = bw_hash_init(&v->rsa_cache)) != 0 ||
	    (rc = vault_start(v)) != 0 || (rc = vault_sweep_start(v)) != 0) {
		vault_close(v);
		return rc;
	}
	*out = v;
	return 0;
}

void
vault_close(void *inst)
{
	struct bw_vault *v = inst;

	if (v == NULL)
		return;
	/* the loop outlives the services (drained, not freed): nothing of
	 * theirs may stay armed on it */
	bw_loop_timer_stop(v->eng->loop, &v->sweep_t);
	bw_locks_disarm(&v->locks);
	vfile_free_all(v);
	vault_rsa_cache_free(v);
	bw_locks_fini(&v->locks);
	free(v);
}
