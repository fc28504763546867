/* Inside the local-directory blob backend: its state, shared by blobfs.c
 * (objects) and blobfs_walk.c (listing, sweeping).
 */
#ifndef BULWARK_HOST_BLOBFS_INT_H
#define BULWARK_HOST_BLOBFS_INT_H

#include <stdint.h>

#include "store/blob.h"
#include "store/blobfs/dircache.h"

struct bfs {
	int data_fd;
	char *dir;
	struct bfs_dirs dirs;
};

/* Opens the directory path ("a/b", no trailing '/'; "" is the top) below
 * the store into *out, the caller's to close (a duplicate of the kept
 * one): -ELOOP if a link or a file is in the way. */
int bfs_open_path(struct bfs *b, const char *path, int create, int *out);

int bfs_list(void *state, const char *prefix,
	     int (*cb)(void *arg, const char *key, uint64_t size,
		       int64_t mtime),
	     void *arg);
int bfs_sweep(void *state, const char *space, unsigned *n);

#endif
