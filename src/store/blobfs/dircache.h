/* Open directories of the local blob store, kept between requests.
 *
 * Every request of the directory backend works in one or two directories
 * ("files.incoming", "files/<client>", ...). Reaching one from the store's
 * top costs an openat (and a mkdirat when it may be missing) per component,
 * and a close each: about twenty system calls a small upload, for the same
 * few directories. The cache keeps the most recently used ones open.
 *
 * A directory is reached the first time exactly as without the cache, each
 * component with O_NOFOLLOW from its parent's descriptor (the parent from
 * the cache when it is there), so a link planted on the way is refused.
 * Workers share the cache: entries are counted while in use and only
 * unused ones are closed when it is full. Nothing of ours removes or
 * renames a directory. One removed by somebody else is noticed
 * (bfs_dir_gone) by the request that finds it empty of what it looked
 * for; one renamed away (a restore from a backup put in its place) within
 * a second, when its path is found to name another directory. Either is
 * forgotten and reached afresh.
 */
#ifndef BULWARK_HOST_BLOBFS_DIRCACHE_H
#define BULWARK_HOST_BLOBFS_DIRCACHE_H

#include <pthread.h>

#include "bulwark/hash.h"

struct bfs_dent;

struct bfs_dirs {
	pthread_mutex_t mu;
	struct bw_hash map;	      /* path -> struct bfs_dent */
	struct bfs_dent *idle, *tail; /* unused entries, newest first */
	unsigned n, cap;
	int top; /* the store's directory: the caller's, never closed */
};

/* A directory in use: its descriptor, and the entry holding it (NULL when
 * the descriptor is the caller's to close). */
struct bfs_dir {
	int fd;
	struct bfs_dent *e;
};

int bfs_dirs_init(struct bfs_dirs *d, int top, unsigned cap);
void bfs_dirs_fini(struct bfs_dirs *d);

/* The directory path ("a/b", no trailing '/'; "" is the top) below the
 * store, created (with what is missing above it) if create is set. -ELOOP
 * if a link or a file is in the way. Each successful get needs a put. */
int bfs_dir_get(struct bfs_dirs *d, const char *path, int create,
		struct bfs_dir *out);
void bfs_dir_put(struct bfs_dirs *d, struct bfs_dir *h);

/* Whether h's directory has been removed (by somebody else): if so it is
 * forgotten, and a get reaches it afresh. For a request that found ENOENT
 * where it looked. */
int bfs_dir_gone(struct bfs_dirs *d, const struct bfs_dir *h);

#endif
