/* Files that appear only when complete (temporary file, fsync, rename,
 * fsync of the directory), directories reached without following links,
 * and writes that finish.
 */
#ifndef BULWARK_FSUTIL_H
#define BULWARK_FSUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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

/* Opens dir/name as a directory (creating it with mode 0700 first if
 * create is set, and syncing dir then: the entry is durable), never through
 * a symbolic link: -ELOOP if name is a link or not a directory. */
int bw_fs_dir_at(int dir, const char *name, int create, int *out)
	__attribute__((warn_unused_result));
/* Calls fn(arg, name, type) for each entry of dir but . and .. (type: a
 * DT_* value, DT_UNKNOWN if the file system does not say); a non-zero
 * return stops and is returned. */
int bw_fs_each(int dir, int (*fn)(void *arg, const char *name, int type),
	       void *arg) __attribute__((warn_unused_result));
/* Writes all n bytes (at off, for the p- form), retrying short writes and
 * EINTR: 0 or -errno. */
int bw_fs_write_full(int fd, const void *p, size_t n)
	__attribute__((warn_unused_result));
int bw_fs_pwrite_full(int fd, const void *p, size_t n, uint64_t off)
	__attribute__((warn_unused_result));

/* Takes the lock file dir/name (created 0600 if missing) for this process
 * alone (flock, not waiting) and writes our pid into it: 0 with *fd open
 * (the lock lives as long as it), BW_EBUSY with *holder the pid another
 * process wrote there (0 if none), or -errno. */
int bw_fs_lock(const char *dir, const char *name, int *fd, long *holder)
	__attribute__((warn_unused_result));

/* Whether the directory holding path may be written by this process. */
int bw_fs_parent_writable(const char *path);

#endif
