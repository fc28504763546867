/* The local-directory backend of the blob table (host/blob.h): a key is a
 * path below the directory, every component reached with O_NOFOLLOW from
 * the directory's descriptor, so a symbolic link planted anywhere on the
 * way is refused, never followed. A new object is written in
 * "<space>.incoming/" (whole aligned chunks with O_DIRECT when the file
 * system allows: no copy, and the final fsync has little left to do), then
 * fsync'd and renamed (or linked, when it must not replace) to its key, and
 * the key's directory fsync'd. The directories on the way are kept open
 * between requests (dircache.h).
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
#include "store/blob.h"
#include "store/blobfs/blobfs_int.h"

#define DIRECT_ALIGN 4096u
#define TMP_CAP	     64
#define DIRS_KEPT    256u /* open directories kept between requests */

struct bw_blob_w {
	struct bfs *b;
	int fd;		      /* O_DIRECT if the file system allowed it */
	int direct;	      /* it did */
	int fd_tail;	      /* buffered, for unaligned bytes: opened the
			       * first time there are some (-1 before) */
	struct bfs_dir stage; /* "<space>.incoming" */
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

int
bfs_open_path(struct bfs *b, const char *path, int create, int *out)
{
	struct bfs_dir h;
	int rc;

	*out = -1;
	if ((rc = bfs_dir_get(&b->dirs, path, create, &h)) != 0)
		return rc;
	*out = dup(h.fd);
	rc = *out < 0 ? -errno : 0;
	bfs_dir_put(&b->dirs, &h);
	return rc;
}

/* The directory holding key and its last component. */
static int
open_parent(struct bfs *b, const char *key, int create, struct bfs_dir *dir,
	    const char **base)
{
	char path[BW_BLOB_KEY_CAP];
	const char *slash;

	dir->fd = -1;
	dir->e = NULL;
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
	return bfs_dir_get(&b->dirs, path, create, dir);
}

/* Whether a request that found ENOENT in dir (kept since an earlier one)
 * should run again: the directory was removed behind our back. */
static int
again(struct bfs *b, int rc, struct bfs_dir *dir, int *tries)
{
	if (rc != -ENOENT || (*tries)++ > 0 || !bfs_dir_gone(&b->dirs, dir))
		return 0;
	bfs_dir_put(&b->dirs, dir);
	return 1;
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
	if (w->fd_tail >= 0)
		close(w->fd_tail);
	if (w->fd >= 0)
		close(w->fd);
	if (w->tmp[0] != '\0')
		(void)unlinkat(w->stage.fd, w->tmp, 0);
	bfs_dir_put(&w->b->dirs, &w->stage);
	free(w);
}

/* A new scratch file in w->stage, with O_DIRECT if the file system takes
 * it: -ENOENT if the directory is gone. */
static int
create_in_stage(struct bw_blob_w *w)
{
	int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC |
		    O_DIRECT,
	    tries;

	for (tries = 0; tries < 4; tries++) {
		bw_unique_name(".up-", w->tmp, sizeof(w->tmp));
		w->fd = openat(w->stage.fd, w->tmp, flags, 0600);
		if (w->fd >= 0)
			break;
		if (errno == EINVAL && (flags & O_DIRECT)) {
			/* refused after the file was made: without it */
			(void)unlinkat(w->stage.fd, w->tmp, 0);
			flags &= ~O_DIRECT;
			continue;
		}
		if (errno != EEXIST)
			break;
	}
	if (w->fd < 0) {
		w->tmp[0] = '\0';
		return -errno;
	}
	w->direct = (flags & O_DIRECT) != 0;
	return 0;
}

static int
fs_create(void *state, const char *space, const char *key,
	  struct bw_blob_w **out)
{
	struct bfs *b = state;
	char stage[BW_BLOB_KEY_CAP];
	struct bw_blob_w *w;
	int tries = 0, rc;

	(void)key; /* written in the scratch, renamed at put */

	*out = NULL;
	if (snprintf(stage, sizeof(stage), "%s%.*s", space,
		     (int)strlen(BW_BLOB_SCRATCH) - 1,
		     BW_BLOB_SCRATCH) >= (int)sizeof(stage))
		return BW_ETOOBIG;
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return BW_ENOMEM;
	w->b = b;
	w->fd = w->fd_tail = -1;
	do {
		if ((rc = bfs_dir_get(&b->dirs, stage, 1, &w->stage)) != 0) {
			free(w);
			return rc;
		}
		rc = create_in_stage(w);
	} while (again(b, rc, &w->stage, &tries));
	if (rc != 0) {
		drop(w);
		return rc;
	}
	*out = w;
	return 0;
}

/* The buffered descriptor of a direct w, opened the first time unaligned
 * bytes come (a file of whole blocks never needs it). Writes of two
 * chunks may run on two workers at once: the first to open it wins. */
static int
tail_fd(struct bw_blob_w *w, int *out)
{
	int fd = __atomic_load_n(&w->fd_tail, __ATOMIC_ACQUIRE), none = -1;

	if (fd < 0) {
		fd = openat(w->stage.fd, w->tmp,
			    O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		if (!__atomic_compare_exchange_n(&w->fd_tail, &none, fd, 0,
						 __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE)) {
			close(fd);
			fd = none; /* the other worker's */
		}
	}
	*out = fd;
	return 0;
}

static int
fs_write(struct bw_blob_w *w, uint64_t off, const void *p, size_t n)
{
	size_t whole = 0;
	int rc, tail = w->fd;

	/* whole aligned blocks from an aligned buffer bypass the cache */
	if (w->direct && off % DIRECT_ALIGN == 0 &&
	    (uintptr_t)p % DIRECT_ALIGN == 0)
		whole = n & ~(size_t)(DIRECT_ALIGN - 1);
	rc = bw_fs_pwrite_full(w->fd, p, whole, off);
	if (rc == -EINVAL) {
		/* O_DIRECT accepted at open but not this alignment: through
		 * the page cache instead */
		whole = 0;
		rc = 0;
	}
	if (rc == 0 && whole < n && w->direct)
		rc = tail_fd(w, &tail);
	if (rc == 0 && whole < n)
		rc = bw_fs_pwrite_full(tail, (const uint8_t *)p + whole,
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
	struct bfs *b = state;
	struct bfs_dir dir = {-1, NULL};
	const char *base;
	int tries = 0, rc;

	rc = fsync_fd(w->fd);
	if (w->fd_tail >= 0)
		close(w->fd_tail);
	w->fd_tail = -1;
	if (close(w->fd) != 0 && rc == 0)
		rc = -errno;
	w->fd = -1;
	while (rc == 0) {
		if ((rc = open_parent(b, key, 1, &dir, &base)) != 0)
			break;
		if (replace && renameat(w->stage.fd, w->tmp, dir.fd, base) != 0)
			rc = -errno;
		/* a link, not a rename, never replaces what is there */
		else if (!replace &&
			 linkat(w->stage.fd, w->tmp, dir.fd, base, 0) != 0)
			rc = errno == EEXIST ? BW_EEXIST : -errno;
		if (!again(b, rc, &dir, &tries))
			break;
		rc = 0;
	}
	if (rc == 0) {
		if (replace)
			w->tmp[0] = '\0'; /* renamed: nothing to remove */
		if ((rc = fsync_fd(dir.fd)) != 0 && !replace)
			(void)unlinkat(dir.fd, base, 0);
	}
	bfs_dir_put(&b->dirs, &dir);
	drop(w);
	return rc;
}

/* --- keys that exist ------------------------------------------------------
 */

/* A link (or, with move, a rename) of from to to. */
static int
relink(struct bfs *b, const char *from, const char *to, int move)
{
	struct bfs_dir fdir = {-1, NULL}, tdir = {-1, NULL};
	const char *fb, *tb;
	int tries = 0, rc;

	for (;;) {
		if ((rc = open_parent(b, from, 0, &fdir, &fb)) == 0 &&
		    (rc = open_parent(b, to, 1, &tdir, &tb)) == 0 &&
		    (move ? renameat(fdir.fd, fb, tdir.fd, tb)
			  : linkat(fdir.fd, fb, tdir.fd, tb, 0)) != 0)
			rc = -errno;
		if (rc != -ENOENT || tries++ > 0)
			break;
		/* either kept directory may be the one removed */
		if (!bfs_dir_gone(&b->dirs, &fdir) &&
		    !bfs_dir_gone(&b->dirs, &tdir))
			break;
		bfs_dir_put(&b->dirs, &fdir);
		bfs_dir_put(&b->dirs, &tdir);
	}
	if (rc == 0 && move)
		rc = fsync_fd(tdir.fd);
	bfs_dir_put(&b->dirs, &fdir);
	bfs_dir_put(&b->dirs, &tdir);
	return rc == -ENOENT ? BW_ENOTFOUND : rc;
}

static int
fs_copy(void *state, const char *from, const char *to)
{
	return relink(state, from, to, 0);
}

static int
fs_move(void *state, const char *from, const char *to)
{
	return relink(state, from, to, 1);
}

static int
fs_remove(void *state, const char *key)
{
	struct bfs *b = state;
	struct bfs_dir dir;
	const char *base;
	int tries = 0, rc;

	do {
		rc = open_parent(b, key, 0, &dir, &base);
		if (rc == 0 && unlinkat(dir.fd, base, 0) != 0)
			rc = -errno;
	} while (again(b, rc, &dir, &tries));
	bfs_dir_put(&b->dirs, &dir);
	return rc == -ENOENT ? 0 : rc;
}

static int
fs_size(void *state, const char *key, uint64_t *size)
{
	struct bfs *b = state;
	struct bfs_dir dir;
	const char *base;
	struct stat st;
	int tries = 0, rc;

	*size = 0;
	do {
		rc = open_parent(b, key, 0, &dir, &base);
		if (rc == 0 &&
		    fstatat(dir.fd, base, &st, AT_SYMLINK_NOFOLLOW) != 0)
			rc = -errno;
	} while (again(b, rc, &dir, &tries));
	bfs_dir_put(&b->dirs, &dir);
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
	struct bfs *b = state;
	struct bfs_dir dir;
	const char *base;
	struct bw_blob_r *r;
	int fd = -1, tries = 0, rc;

	*out = NULL;
	do {
		rc = open_parent(b, key, 0, &dir, &base);
		if (rc == 0 &&
		    (fd = openat(dir.fd, base,
				 O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0)
			rc = -errno;
	} while (again(b, rc, &dir, &tries));
	bfs_dir_put(&b->dirs, &dir);
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
	if ((rc = bfs_dirs_init(&b->dirs, b->data_fd, DIRS_KEPT)) != 0) {
		close(b->data_fd);
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
	bfs_dirs_fini(&b->dirs);
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
	.list = bfs_list,
	.sweep = bfs_sweep,
};
