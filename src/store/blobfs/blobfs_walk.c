/* Listing and start-up sweeping of the local-directory blob backend
 * (blobfs.c has the rest).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bulwark/fsutil.h"
#include "bulwark/log.h"
#include "store/blobfs/blobfs_int.h"

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

int
bfs_list(void *state, const char *prefix,
	 int (*cb)(void *arg, const char *key, uint64_t size, int64_t mtime),
	 void *arg)
{
	struct bfs *b = state;
	struct walk w;
	size_t n = strlen(prefix);
	int rc;

	if (n == 0 || prefix[n - 1] != '/' || n >= sizeof(w.key))
		return BW_EPROTO;
	memset(&w, 0, sizeof(w));
	memcpy(w.key, prefix, n - 1);
	w.key[n - 1] = '\0';
	if ((rc = bfs_open_path(b, w.key, 0, &w.dir)) != 0) {
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

int
bfs_sweep(void *state, const char *space, unsigned *n)
{
	struct bfs *b = state;
	char path[BW_BLOB_KEY_CAP];
	struct sweep s = {-1, 0};
	int rc;

	*n = 0;
	if (snprintf(path, sizeof(path), "%s%.*s", space,
		     (int)strlen(BW_BLOB_SCRATCH) - 1,
		     BW_BLOB_SCRATCH) >= (int)sizeof(path))
		return BW_ETOOBIG;
	if ((rc = bfs_open_path(b, path, 1, &s.dir)) != 0)
		return rc;
	rc = bw_fs_each(s.dir, sweep_one, &s);
	close(s.dir);
	*n = s.n;
	return rc;
}
