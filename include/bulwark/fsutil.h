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

/* fsyncs the directory holding path (a rename in it is then durable). */
int bw_fs_sync_dir(const char *path) __attribute__((warn_unused_result));

/* Writes n bytes to path atomically with mode (temporary file in the same
 * directory, fsync, rename). */
int bw_fs_write_atomic(const char *path, const void *p, size_t n, mode_t mode)
	__attribute__((warn_unused_result));
/* The first half of bw_fs_write_atomic: n bytes in a new temporary file
 * beside path (its name into tmp[tmp_cap]), fsync'd, left open in *fd so
 * bytes already written may still be overwritten in place (no new space
 * needed); bw_fs_commit(*fd, tmp, path) puts it in place, or close and
 * unlink tmp to drop it. */
int bw_fs_stage(const char *path, const void *p, size_t n, mode_t mode,
		char *tmp, size_t tmp_cap, int *fd)
	__attribute__((warn_unused_result));

/* Removes every regular file directly inside dir (for a temporary-file
 * directory at start-up); returns how many were removed or -errno. */
int bw_fs_clear_dir(const char *dir);

/* Takes the lock file dir/name (created 0600 if missing) for this process
 * alone (flock, not waiting) and writes our pid into it: 0 with *fd open
 * (the lock lives as long as it), BW_EBUSY with *holder the pid another
 * process wrote there (0 if none), or -errno. */
int bw_fs_lock(const char *dir, const char *name, int *fd, long *holder)
	__attribute__((warn_unused_result));

#endif
