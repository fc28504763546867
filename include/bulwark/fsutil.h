/* Files that appear only when complete: temporary file, fsync, rename, fsync
 * of the directory. Plus mkdir -p.
 */
#ifndef BULWARK_FSUTIL_H
#define BULWARK_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

/* Creates dir and any missing parents with mode. */
int bw_fs_mkdirs(const char *dir, mode_t mode)
	__attribute__((warn_unused_result));

/* Creates a new empty file with a unique name in dir, opened for writing;
 * sets *fd and writes its path into path[path_cap]. */
int bw_fs_tmpfile(const char *dir, int *fd, char *path, size_t path_cap)
	__attribute__((warn_unused_result));

/* fsyncs fd, closes it, renames tmp to dst and fsyncs dst's directory. On
 * failure tmp is unlinked. fd is closed in every case. Blocking: the daemon
 * calls it from a worker thread. */
int bw_fs_commit(int fd, const char *tmp, const char *dst)
	__attribute__((warn_unused_result));

/* Writes n bytes to path atomically with mode (temporary file in the same
 * directory, fsync, rename). */
int bw_fs_write_atomic(const char *path, const void *p, size_t n, mode_t mode)
	__attribute__((warn_unused_result));

/* Removes every regular file directly inside dir (for a temporary-file
 * directory at start-up); returns how many were removed or -errno. */
int bw_fs_clear_dir(const char *dir);

#endif
