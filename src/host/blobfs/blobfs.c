/* The local-directory backend of the blob table (host/blob.h): a key is a
 * path below the directory, every component reached with O_NOFOLLOW from
 * the directory's descriptor, so a symbolic link planted anywhere on the
 * way is refused, never followed. A new object is written in
 * "<space>.incoming/" (whole aligned chunks with O_DIRECT when the file
 * system allows: no copy, and the final fsync has little left to do), then
 * fsync'd and renamed (or linked, when it must not replace) to its key, and
 * the key's directory fsync'd.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bulwark/fsutil.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "host/blob.h"

#define DIRECT_ALIGN 4096u
#define TMP_CAP	     64

struct bfs {
	int data_fd;
	char *dir;
};

struct bw_blob_w {
	int fd;	     /* O_DIRECT if the file system allowed it */
	int fd_tail; /* buffered: the last unaligned bytes (or fd) */
	int stage;   /* "<space>.incoming" */
	char tmp[TMP_CAP];
};

struct bw_blob_r {
	int fd;
};

/* --- keys -----------------------------------------------------------------
 */

/* Whether key is one of ours: relative, no empty, "." or ".." part. */
static int
key_ok(const char *key)
{
	const char *p = key, *slash;
	size_t n;

	if (strlen(key) >= BW_BLOB_KEY_CAP || key[0] == '\0')
		return 0;
	for (;;) {
		slash = strchr(p, '/');
		n = slash != NULL ? (size_t)(slash - p) : strlen(p);
		if (n == 0 || (n == 1 && p[0] == '.') ||
		    (n == 2 && p[0] == '.' && p[1] == '.'))
			return 0;
		if (slash == NULL)
			return 1;
		p = slash + 1;
	}
}

/* Opens the directory path ("a/b", no trailing '/'; "" is the top) below
 * the store, component by component, creating what is missing if create
 * is set. -ELOOP if a link (or a file) is in the way. */
static int
open_path(const struct bfs *b, const char *path, int create, int *out)
{
	char buf[BW_BLOB_KEY_CAP], *p, *slash;
	int cur = b->data_fd, next, rc;

	*out = -1;
	if (strlen(path) >= sizeof(buf))
		return BW_ETOOBIG;
	memcpy(buf, path, strlen(path) + 1);
	for (p = buf; *p != '\0'; p = slash + 1) {
		if ((slash = strchr(p, '/')) != NULL)
			*slash = '\0';
		rc = bw_fs_dir_at(cur, p, create, &next);
		if (cur != b->data_fd)
			close(cur);
		if (rc != 0)
			return rc;
		cur = next;
		if (slash == NULL)
			break;
	}
	if (cur == b->data_fd && (cur = dup(cur)) < 0)
		return -errno;
	*out = cur;
	return 0;
}

/* The directory holding key (opened) and its last component. */
static int
open_parent(const struct bfs *b, const char *key, int create, int *dir,
	    const char **base)
{
	char path[BW_BLOB_KEY_CAP];
	const char *slash;

	*dir = -1;
	if (!key_ok(key))
		return BW_EPROTO;
	if ((slash = strrchr(key, '/')) == NULL) {
		path[0] = '\0';
		*base = key;
	} else {
		memcpy(path, key, (size_t)(slash - key));
		path[slash - key] = '\0';
		*base = slash + 1;
	}
	return open_path(b, path, create, dir);
}

static int
fsync_fd(int fd)
{
	return fsync(fd) == 0 ? 0 : -errno;
}

/* --- writing --------------------------------------------------------------
 */

/* Closes w's descriptors and removes its file. */
static void
drop(struct bw_blob_w *w)
{
	if (w->fd_tail >= 0 && w->fd_tail != w->fd)
		close(w->fd_tail);
	if (w->fd >= 0)
		close(w->fd);
	if (w->tmp[0] != '\0')
		(void)unlinkat(w->stage, w->tmp, 0);
	if (w->stage >= 0)
		close(w->stage);
	free(w);
}

static int
fs_create(void *state, const char *space, const char *key,
	  struct bw_blob_w **out)
{
	struct bfs *b = state;
	char stage[BW_BLOB_KEY_CAP];
	struct bw_blob_w *w;
	int tries, rc;

	(void)key; /* written in the scratch, renamed at put */

	*out = NULL;
	if (snprintf(stage, sizeof(stage), "%s%.*s", space,
		     (int)strlen(BW_BLOB_SCRATCH) - 1,
		     BW_BLOB_SCRATCH) >= (int)sizeof(stage))
		return BW_ETOOBIG;
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return BW_ENOMEM;
	w->fd = w->fd_tail = -1;
	if ((rc = open_path(b, stage, 1, &w->stage)) != 0) {
		free(w);
		return rc;
	}
	for (tries = 0; tries < 4; tries++) {
		bw_unique_name(".up-", w->tmp, sizeof(w->tmp));
		w->fd = openat(w->stage, w->tmp,
			       O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
				       O_CLOEXEC,
			       0600);
		if (w->fd >= 0 || errno != EEXIST)
			break;
	}
	if (w->fd < 0) {
		rc = -errno;
		w->tmp[0] = '\0';
		drop(w);
		return rc;
	}
	w->fd_tail = w->fd;
	if (fcntl(w->fd, F_SETFL, O_DIRECT) == 0 &&
	    (w->fd_tail = openat(w->stage, w->tmp,
				 O_WRONLY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
		rc = -errno;
		w->fd_tail = w->fd;
		drop(w);
		return rc;
	}
	*out = w;
	return 0;
}

static int
fs_write(struct bw_blob_w *w, uint64_t off, const void *p, size_t n)
{
	size_t whole = 0;
	int rc;

	/* whole aligned blocks from an aligned buffer bypass the cache */
	if (w->fd_tail != w->fd && off % DIRECT_ALIGN == 0 &&
	    (uintptr_t)p % DIRECT_ALIGN == 0)
		whole = n & ~(size_t)(DIRECT_ALIGN - 1);
	rc = bw_fs_pwrite_full(w->fd, p, whole, off);
	if (rc == -EINVAL) {
		/* O_DIRECT accepted at open but not this alignment: through
		 * the page cache instead */
		whole = 0;
		rc = 0;
	}
	if (rc == 0 && whole < n)
		rc = bw_fs_pwrite_full(w->fd_tail, (const uint8_t *)p + whole,
				       n - whole, off + whole);
	return rc;
}

static void
fs_abort(void *state, struct bw_blob_w *w)
{
	(void)state;
	if (w != NULL)
		drop(w);
}

static int
fs_put(void *state, struct bw_blob_w *w, const char *key, int replace)
{
	const struct bfs *b = state;
	const char *base;
	int dir = -1, rc;

	rc = fsync_fd(w->fd);
	if (w->fd_tail != w->fd)
		close(w->fd_tail);
	w->fd_tail = -1;
	if (close(w->fd) != 0 && rc == 0)
		rc = -errno;
	w->fd = -1;
	if (rc == 0)
		rc = open_parent(b, key, 1, &dir, &base);
	if (rc == 0 && replace && renameat(w->stage, w->tmp, dir, base) != 0)
		rc = -errno;
	/* a link, not a rename, never replaces what is there */
	if (rc == 0 && !replace && linkat(w->stage, w->tmp, dir, base, 0) != 0)
		rc = errno == EEXIST ? BW_EEXIST : -errno;
	if (rc == 0) {
		if (replace)
			w->tmp[0] = '\0'; /* renamed: nothing to remove */
		if ((rc = fsync_fd(dir)) != 0 && !replace)
			(void)unlinkat(dir, base, 0);
	}
	if (dir >= 0)
		close(dir);
	drop(w);
	return rc;
}

/* --- keys that exist ------------------------------------------------------
 */

static int
fs_copy(void *state, const char *from, const char *to)
{
	const struct bfs *b = state;
	const char *fb, *tb;
	int fdir = -1, tdir = -1, rc;

	if ((rc = open_parent(b, from, 0, &fdir, &fb)) == 0 &&
	    (rc = open_parent(b, to, 1, &tdir, &tb)) == 0 &&
	    linkat(fdir, fb, tdir, tb, 0) != 0)
		rc = -errno;
	if (fdir >= 0)
		close(fdir);
	if (tdir >= 0)
		close(tdir);
	return rc == -ENOENT ? BW_ENOTFOUND : rc;
}

static int
fs_move(void *state, const char *from, const char *to)
{
	const struct bfs *b = state;
	const char *fb, *tb;
	int fdir = -1, tdir = -1, rc;

	if ((rc = open_parent(b, from, 0, &fdir, &fb)) == 0 &&
	    (rc = open_parent(b, to, 1, &tdir, &tb)) == 0 &&
	    renameat(fdir, fb, tdir, tb) != 0)
		rc = -errno;
	if (rc == 0)
		rc = fsync_fd(tdir);
	if (fdir >= 0)
		close(fdir);
	if (tdir >= 0)
		close(tdir);
	return rc == -ENOENT ? BW_ENOTFOUND : rc;
}

static int
fs_remove(void *state, const char *key)
{
	const char *base;
	int dir, rc = open_parent(state, key, 0, &dir, &base);

	if (rc == 0 && unlinkat(dir, base, 0) != 0)
		rc = -errno;
	if (dir >= 0)
		close(dir);
	return rc == -ENOENT ? 0 : rc;
}

static int
fs_size(void *state, const char *key, uint64_t *size)
{
	const char *base;
	struct stat st;
	int dir, rc = open_parent(state, key, 0, &dir, &base);

	*size = 0;
	if (rc == 0 && fstatat(dir, base, &st, AT_SYMLINK_NOFOLLOW) != 0)
		rc = -errno;
	if (dir >= 0)
		close(dir);
	if (rc == -ENOENT)
		return BW_ENOTFOUND;
	if (rc != 0)
		return BW_EPROTO; /* the way there is not ours */
	if (!S_ISREG(st.st_mode))
		return BW_ENOTFOUND;
	*size = (uint64_t)st.st_size;
	return 0;
}

/* --- reading --------------------------------------------------------------
 */

static int
fs_read_open(void *state, const char *key, struct bw_blob_r **out)
{
	const char *base;
	struct bw_blob_r *r;
	int dir, fd = -1, rc = open_parent(state, key, 0, &dir, &base);

	*out = NULL;
	if (rc == 0 &&
	    (fd = openat(dir, base, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		rc = -errno;
	if (dir >= 0)
		close(dir);
	if (rc != 0)
		return rc == -ENOENT ? BW_ENOTFOUND : rc;
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		close(fd);
		return BW_ENOMEM;
	}
	r->fd = fd;
	*out = r;
	return 0;
}

static ssize_t
fs_read(struct bw_blob_r *r, void *p, size_t n)
{
	ssize_t k;

	do {
		k = read(r->fd, p, n);
	} while (k < 0 && errno == EINTR);
	return k < 0 ? -errno : k;
}

static void
fs_read_close(struct bw_blob_r *r)
{
	if (r == NULL)
		return;
	close(r->fd);
	free(r);
}

/* --- listing --------------------------------------------------------------
 */

struct walk {
	int dir;
	char key[BW_BLOB_KEY_CAP]; /* the directory's prefix, with '/' */
	size_t len;
	int (*cb)(void *arg, const char *key, uint64_t size, int64_t mtime);
	void *arg;
	int dirs_pass; /* 0: objects, 1: directories below */
};

static int walk_dir(struct walk *w);

static int
walk_entry(void *arg, const char *name, int type)
{
	struct walk *w = arg, sub;
	struct stat st;
	size_t n = strlen(name);
	int rc;

	(void)type;
	if (w->len + n + 2 > sizeof(w->key))
		return 0; /* no key of ours is that long */
	if (fstatat(w->dir, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
		return 0; /* gone meanwhile */
	memcpy(w->key + w->len, name, n + 1);
	if (S_ISLNK(st.st_mode) && !w->dirs_pass) {
		bw_warn("blobs: %s is a symbolic link, not ours: left alone",
			w->key);
		return 0;
	}
	if (S_ISREG(st.st_mode) && !w->dirs_pass)
		return w->cb(w->arg, w->key, (uint64_t)st.st_size,
			     (int64_t)st.st_mtime);
	if (!S_ISDIR(st.st_mode) || !w->dirs_pass ||
	    strcmp(name, ".incoming") == 0)
		return 0; /* scratch, or not an object */
	memset(&sub, 0, sizeof(sub));
	if (bw_fs_dir_at(w->dir, name, 0, &sub.dir) != 0)
		return 0;
	memcpy(sub.key, w->key, w->len + n);
	sub.key[w->len + n] = '/';
	sub.len = w->len + n + 1;
	sub.key[sub.len] = '\0';
	sub.cb = w->cb;
	sub.arg = w->arg;
	rc = walk_dir(&sub);
	close(sub.dir);
	return rc;
}

/* A directory's objects first, then each directory below: the keys come
 * grouped by their directory. */
static int
walk_dir(struct walk *w)
{
	int rc;

	w->dirs_pass = 0;
	if ((rc = bw_fs_each(w->dir, walk_entry, w)) != 0)
		return rc;
	w->dirs_pass = 1;
	return bw_fs_each(w->dir, walk_entry, w);
}

static int
fs_list(void *state, const char *prefix,
	int (*cb)(void *arg, const char *key, uint64_t size, int64_t mtime),
	void *arg)
{
	const struct bfs *b = state;
	struct walk w;
	size_t n = strlen(prefix);
	int rc;

	if (n == 0 || prefix[n - 1] != '/' || n >= sizeof(w.key))
		return BW_EPROTO;
	memset(&w, 0, sizeof(w));
	memcpy(w.key, prefix, n - 1);
	w.key[n - 1] = '\0';
	if ((rc = open_path(b, w.key, 0, &w.dir)) != 0) {
		if (rc == -ELOOP)
			bw_warn("blobs: %s is a symbolic link, not ours: "
				"left alone",
				w.key);
		return rc == -ENOENT || rc == -ELOOP ? 0 : rc;
	}
	memcpy(w.key, prefix, n + 1);
	w.len = n;
	w.cb = cb;
	w.arg = arg;
	rc = walk_dir(&w);
	close(w.dir);
	return rc;
}

/* --- start-up -------------------------------------------------------------
 */

struct sweep {
	int dir;
	unsigned n;
};

static int
sweep_one(void *arg, const char *name, int type)
{
	struct sweep *s = arg;

	(void)type;
	if (unlinkat(s->dir, name, 0) == 0)
		s->n++;
	return 0;
}

static int
fs_sweep(void *state, const char *space, unsigned *n)
{
	const struct bfs *b = state;
	char path[BW_BLOB_KEY_CAP];
	struct sweep s = {-1, 0};
	int rc;

	*n = 0;
	if (snprintf(path, sizeof(path), "%s%.*s", space,
		     (int)strlen(BW_BLOB_SCRATCH) - 1,
		     BW_BLOB_SCRATCH) >= (int)sizeof(path))
		return BW_ETOOBIG;
	if ((rc = open_path(b, path, 1, &s.dir)) != 0)
		return rc;
	rc = bw_fs_each(s.dir, sweep_one, &s);
	close(s.dir);
	*n = s.n;
	return rc;
}

/* --- the table ------------------------------------------------------------
 */

static int
fs_open(const struct bw_blob_conf *conf, const char *where, void **state)
{
	struct bfs *b = calloc(1, sizeof(*b));
	int rc;

	(void)conf;
	if (b == NULL)
		return BW_ENOMEM;
	if ((b->dir = strdup(where)) == NULL) {
		free(b);
		return BW_ENOMEM;
	}
	b->data_fd = open(where, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (b->data_fd < 0) {
		rc = -errno;
		bw_error("blobs: cannot open %s: %s", where, bw_strerror(rc));
		free(b->dir);
		free(b);
		return rc;
	}
	*state = b;
	return 0;
}

static void
fs_close(void *state)
{
	struct bfs *b = state;

	if (b == NULL)
		return;
	close(b->data_fd);
	free(b->dir);
	free(b);
}

static int
fs_check(void *state, char *msg, size_t cap)
{
	const struct bfs *b = state;

	int rc;

	if (faccessat(b->data_fd, ".", W_OK | X_OK, AT_EACCESS) != 0) {
		rc = -errno;
		snprintf(msg, cap, "files in %s: %s", b->dir, bw_strerror(rc));
		return rc;
	}
	snprintf(msg, cap, "files in %s", b->dir);
	return 0;
}

const struct bw_blob_backend bw_blob_fs = {
	.scheme = "file",
	.open = fs_open,
	.close = fs_close,
	.check = fs_check,
	.create = fs_create,
	.write = fs_write,
	.put = fs_put,
	.abort = fs_abort,
	.copy = fs_copy,
	.move = fs_move,
	.remove = fs_remove,
	.size = fs_size,
	.read_open = fs_read_open,
	.read = fs_read,
	.read_close = fs_read_close,
	.list = fs_list,
	.sweep = fs_sweep,
};
