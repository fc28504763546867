/* The vault's directories and its start-up: files/, files/.incoming and
 * files/.pending are opened once, refusing symbolic links, and everything
 * below them is reached by descriptor. At start-up the rows and the stored
 * files are made to agree again (a crash can leave either without the
 * other), and every change is logged with "reconcile:".
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/vault/vault_int.h"

/* Opens dir/name as a directory, creating it (mode 0700) if absent, never
 * through a symbolic link. */
static int
open_dir_at(int dir, const char *name, int *out)
{
	int fd;

	if (mkdirat(dir, name, 0700) != 0 && errno != EEXIST)
		return -errno;
	fd = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOTDIR ? -ELOOP : -errno;
	*out = fd;
	return 0;
}

int
vault_client_dir(struct bw_vault *v, const uint8_t id[BW_ID_LEN], int *fd)
{
	char hex[2 * BW_ID_LEN + 1];

	bw_hex_encode(id, BW_ID_LEN, hex);
	return open_dir_at(v->files_fd, hex, fd);
}

void
vault_tmp_name(struct bw_vault *v, const char *prefix, char out[TMP_NAME_CAP])
{
	uint32_t r = 0;

	if (bw_random(&r, sizeof(r)) != 0)
		r = 0;
	snprintf(out, TMP_NAME_CAP, "%s%llx-%08x", prefix, ULL(++v->seq),
		 (unsigned)r);
}

/* Calls fn for each entry of dir but . and ..; fn returns 0 to go on. */
static int
each_entry(int dir, int (*fn)(void *arg, const struct dirent *e), void *arg)
{
	struct dirent *e;
	DIR *d;
	int fd, rc = 0;

	if ((fd = dup(dir)) < 0)
		return -errno;
	if ((d = fdopendir(fd)) == NULL) {
		close(fd);
		return -errno;
	}
	rewinddir(d);
	while (rc == 0 && (e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			rc = fn(arg, e);
	}
	closedir(d);
	return rc;
}

struct clear {
	int dir;
	unsigned n;
};

static int
clear_one(void *arg, const struct dirent *e)
{
	struct clear *cl = arg;

	if (unlinkat(cl->dir, e->d_name, 0) == 0)
		cl->n++;
	return 0;
}

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
	const struct bw_file *f = val;
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
	memcpy(r->id, f->owner->id, BW_ID_LEN);
	memcpy(r->name, f->file_name, sizeof(r->name));
	memcpy(r->path, f->path_name, sizeof(r->path));
	memcpy(r->pending_name, f->pending_name, sizeof(r->pending_name));
	memcpy(r->pending_path, f->pending_path, sizeof(r->pending_path));
	return 0;
}

/* The size of a regular file at path (relative to the data directory,
 * in our layout "files/<hex>/<name>" or "files/.pending/<name>"), reached
 * without following links; -1 if there is none, -2 if the path is not ours
 * or its directory is a link. */
static int64_t
stored_size(struct bw_vault *v, const char *path)
{
	char hex[2 * BW_ID_LEN + 1];
	const char *slash;
	struct stat st;
	int dir, rc;

	if (strncmp(path, PENDING_DIR, strlen(PENDING_DIR)) == 0) {
		if (fstatat(v->pending_fd, path + strlen(PENDING_DIR), &st,
			    AT_SYMLINK_NOFOLLOW) != 0)
			return errno == ENOENT ? -1 : -2;
		return S_ISREG(st.st_mode) ? (int64_t)st.st_size : -1;
	}
	if (strncmp(path, "files/", 6) != 0 ||
	    (slash = strchr(path + 6, '/')) == NULL ||
	    slash - (path + 6) != 2 * BW_ID_LEN || strchr(slash + 1, '/'))
		return -2;
	memcpy(hex, path + 6, 2 * BW_ID_LEN);
	hex[2 * BW_ID_LEN] = '\0';
	dir = openat(v->files_fd, hex,
		     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dir < 0)
		return errno == ENOENT ? -1 : -2;
	rc = fstatat(dir, slash + 1, &st, AT_SYMLINK_NOFOLLOW);
	close(dir);
	if (rc != 0)
		return errno == ENOENT ? -1 : -2;
	return S_ISREG(st.st_mode) ? (int64_t)st.st_size : -1;
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
 * row names). 1 rewritten (r->path is ours now), 0 nothing to do. */
static int
adopt_path(struct bw_vault *v, struct bw_client *cl, struct row *r)
{
	char canon[BW_PATH_CAP], old[BW_ESC_CAP], shown[BW_ESC_CAP];
	struct bw_file *f;
	struct bw_file_rec rec;
	int64_t size;
	int rc;

	if (canonical_path(r->id, r->path, canon) != 0 ||
	    strcmp(canon, r->path) == 0 || (size = stored_size(v, canon)) < 0 ||
	    (f = bw_registry_file(v->reg, cl, r->name)) == NULL)
		return 0;
	bw_registry_file_rec(f, &rec);
	snprintf(rec.path_name, sizeof(rec.path_name), "%s", canon);
	rc = bw_registry_set_file(v->reg, cl, r->path, &rec, (uint64_t)size,
				  f->pending_size);
	bw_warn("reconcile: the row of %s named its file %s%s",
		bw_escape_display(canon, shown, sizeof(shown)),
		bw_escape_display(r->path, old, sizeof(old)),
		rc == 0 ? "; now in this form" : " (not rewritten)");
	if (rc != 0)
		return 0;
	snprintf(r->path, sizeof(r->path), "%s", canon);
	return 1;
}

static void
unlink_pending(struct bw_vault *v, const char *pending_path)
{
	if (strncmp(pending_path, PENDING_DIR, strlen(PENDING_DIR)) == 0)
		(void)unlinkat(v->pending_fd,
			       pending_path + strlen(PENDING_DIR), 0);
}

static int
reconcile_row(struct bw_vault *v, struct row *r)
{
	struct bw_registry *reg = v->reg;
	struct bw_client *cl = bw_registry_by_id(reg, r->id);
	struct bw_file_rec rec;
	char shown[BW_ESC_CAP];
	int64_t main_size = stored_size(v, r->path), pend_size = -1;
	int rc = 0;

	if (cl != NULL && main_size == -2 && adopt_path(v, cl, r))
		main_size = stored_size(v, r->path);
	if (cl == NULL || main_size == -2)
		return 0; /* not ours to judge */
	bw_escape_display(r->path, shown, sizeof(shown));
	if (r->pending_path[0] != '\0')
		pend_size = stored_size(v, r->pending_path);
	if (r->pending_path[0] != '\0' && pend_size == -1 && main_size >= 0) {
		/* the 1029's rename happened, its row did not: finish it */
		memset(&rec, 0, sizeof(rec));
		memcpy(rec.client_id, r->id, BW_ID_LEN);
		memcpy(rec.file_name, r->pending_name, sizeof(rec.file_name));
		memcpy(rec.path_name, r->path, sizeof(rec.path_name));
		rec.verified = 1;
		rc = bw_registry_set_file(reg, cl, r->path, &rec,
					  (uint64_t)main_size, 0);
		bw_warn("reconcile: %s: its confirmed replacement is now "
			"current%s",
			shown, rc != 0 ? " (row not updated)" : "");
		return rc;
	}
	if (main_size >= 0)
		return 0;
	rc = bw_registry_set_file(reg, cl, r->path, NULL, 0, 0);
	if (r->pending_path[0] != '\0')
		unlink_pending(v, r->pending_path);
	bw_warn("reconcile: dropped the row of %s: the file is missing%s",
		shown, rc != 0 ? " (row not removed)" : "");
	return rc;
}

/* --- files without rows ------------------------------------------------- */

struct dirscan {
	struct bw_vault *v;
	struct bw_client *cl;
	const char *hex;
	int dir;
	struct bw_hash *pending; /* referenced pending paths */
	unsigned removed;
};

static int
scan_client_entry(void *arg, const struct dirent *e)
{
	struct dirscan *ds = arg;
	char path[BW_PATH_CAP], shown[BW_ESC_CAP];

	if (snprintf(path, sizeof(path), "files/%s/%s", ds->hex, e->d_name) <
		    (int)sizeof(path) &&
	    bw_registry_file_at(ds->v->reg, ds->cl, path) != NULL)
		return 0;
	bw_escape_display(path, shown, sizeof(shown));
	if (unlinkat(ds->dir, e->d_name, 0) != 0) {
		bw_warn("reconcile: %s has no row and cannot be removed: %s",
			shown, strerror(errno));
		return 0;
	}
	bw_warn("reconcile: removed %s: no row names it", shown);
	ds->removed++;
	return 0;
}

static int
scan_files_entry(void *arg, const struct dirent *e)
{
	struct dirscan *ds = arg;
	uint8_t id[BW_ID_LEN];
	char shown[BW_ESC_CAP], hex[2 * BW_ID_LEN + 1];
	int rc;

	if (strcmp(e->d_name, ".incoming") == 0 ||
	    strcmp(e->d_name, ".pending") == 0)
		return 0;
	bw_escape_display(e->d_name, shown, sizeof(shown));
	if (strlen(e->d_name) != 2 * BW_ID_LEN ||
	    bw_hex_decode(e->d_name, 2 * BW_ID_LEN, id, BW_ID_LEN) != 0 ||
	    (ds->cl = bw_registry_by_id(ds->v->reg, id)) == NULL) {
		bw_warn("reconcile: files/%s belongs to no client; left alone",
			shown);
		return 0;
	}
	bw_hex_encode(id, BW_ID_LEN, hex);
	if (strcmp(hex, e->d_name) != 0) {
		/* not our spelling (upper-case hex): rows may name its files
		 * in it; nothing there is ours to remove */
		bw_warn("reconcile: files/%s is not in lower-case hex; left "
			"alone",
			shown);
		return 0;
	}
	ds->dir = openat(ds->v->files_fd, e->d_name,
			 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (ds->dir < 0) {
		bw_error("reconcile: files/%s is a symbolic link or not a "
			 "directory: refused, its uploads will fail",
			 shown);
		return 0;
	}
	ds->hex = e->d_name;
	rc = each_entry(ds->dir, scan_client_entry, ds);
	close(ds->dir);
	return rc;
}

static int
note_pending(void *arg, void *val)
{
	struct bw_file *f = val;

	if (f->pending_path[0] == '\0')
		return 0;
	return bw_hash_put(arg, f->pending_path, strlen(f->pending_path), f) ==
			       BW_ENOMEM
		       ? BW_ENOMEM
		       : 0;
}

static int
scan_pending_entry(void *arg, const struct dirent *e)
{
	struct dirscan *ds = arg;
	char path[BW_PATH_CAP], shown[BW_ESC_CAP];
	int n = snprintf(path, sizeof(path), PENDING_DIR "%s", e->d_name);

	if (n > 0 && n < (int)sizeof(path) &&
	    bw_hash_get(ds->pending, path, (size_t)n) != NULL)
		return 0;
	(void)unlinkat(ds->v->pending_fd, e->d_name, 0);
	bw_warn("reconcile: removed %s: no row names it",
		bw_escape_display(path, shown, sizeof(shown)));
	ds->removed++;
	return 0;
}

static int
reconcile(struct bw_vault *v)
{
	struct rows rs = {NULL, 0, 0};
	struct dirscan ds;
	struct bw_hash pending;
	size_t i;
	int rc;

	if ((rc = bw_registry_each_file(v->reg, collect_row, &rs)) != 0)
		goto out;
	for (i = 0; i < rs.n && rc == 0; i++)
		rc = reconcile_row(v, &rs.v[i]);
	if (rc != 0)
		goto out;
	memset(&ds, 0, sizeof(ds));
	ds.v = v;
	if ((rc = each_entry(v->files_fd, scan_files_entry, &ds)) != 0)
		goto out;
	if ((rc = bw_hash_init(&pending)) != 0)
		goto out;
	ds.pending = &pending;
	rc = bw_registry_each_file(v->reg, note_pending, &pending);
	if (rc == 0)
		rc = each_entry(v->pending_fd, scan_pending_entry, &ds);
	bw_hash_fini(&pending);
out:
	free(rs.v);
	return rc;
}

/* --- the instance ------------------------------------------------------- */

int
vault_dirs_open(struct bw_vault *v)
{
	const char *dd = v->data_dir;
	struct clear cl = {-1, 0};
	int rc;

	v->data_fd = open(dd, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (v->data_fd < 0) {
		rc = -errno;
		bw_error("cannot open the data directory %s: %s", dd,
			 bw_strerror(rc));
		return rc;
	}
	if ((rc = open_dir_at(v->data_fd, "files", &v->files_fd)) != 0 ||
	    (rc = open_dir_at(v->files_fd, ".incoming", &v->incoming_fd)) !=
		    0 ||
	    (rc = open_dir_at(v->files_fd, ".pending", &v->pending_fd)) != 0) {
		bw_error("refusing to start: %s/files, files/.incoming or "
			 "files/.pending %s",
			 dd,
			 rc == -ELOOP ? "is a symbolic link or not a directory"
				      : bw_strerror(rc));
		return rc;
	}
	cl.dir = v->incoming_fd;
	if ((rc = each_entry(v->incoming_fd, clear_one, &cl)) != 0)
		return rc;
	if (cl.n > 0)
		bw_info("removed %u incomplete upload(s) left by a previous "
			"run",
			cl.n);
	if ((rc = reconcile(v)) != 0)
		bw_error("reconcile: %s", bw_strerror(rc));
	return rc;
}

void
vault_dirs_close(struct bw_vault *v)
{
	int *fds[] = {&v->data_fd, &v->files_fd, &v->incoming_fd,
		      &v->pending_fd};
	size_t i;

	for (i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
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
	v->durable = h->durable;
	v->data_dir = h->data_dir;
	if ((rc = bw_slots_init(&v->slots, h->eng)) != 0) {
		free(v);
		return rc;
	}
	v->data_fd = v->files_fd = v->incoming_fd = v->pending_fd = -1;
	v->handoff_tail = &v->handoff;
	if ((rc = bw_hash_init(&v->locks)) != 0 ||
	    (rc = vault_dirs_open(v)) != 0) {
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
	vault_dirs_close(v);
	bw_hash_fini(&v->locks); /* commits hold no lock once jobs are done */
	free(v);
}
