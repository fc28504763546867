/* Atomic file creation: everything is written under a temporary name,
 * fsync'd, then renamed, so a reader sees either the old file or the whole
 * new one, never a part.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bulwark/err.h"
#include "bulwark/fsutil.h"

int
bw_fs_sync_dir(const char *path)
{
	char d[PATH_MAX];
	const char *slash = strrchr(path, '/');
	size_t n;
	int fd, rc = 0;

	if (slash == NULL) {
		d[0] = '.';
		n = 1;
	} else {
		n = (size_t)(slash - path);
		if (n == 0)
			n = 1;
		if (n >= sizeof(d))
			return BW_ETOOBIG;
		memcpy(d, path, n);
	}
	d[n] = '\0';
	if ((fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return -errno;
	if (fsync(fd) != 0)
		rc = -errno;
	close(fd);
	return rc;
}

int
bw_fs_commit(int fd, const char *tmp, const char *dst)
{
	int rc = 0;

	if (fsync(fd) != 0)
		rc = -errno;
	if (close(fd) != 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, dst) != 0)
		rc = -errno;
	if (rc != 0) {
		unlink(tmp);
		return rc;
	}
	return bw_fs_sync_dir(dst);
}

int
bw_fs_stage(const char *path, const void *p, size_t n, mode_t mode, char *tmp,
	    size_t tmp_cap, int *fd)
{
	const char *slash = strrchr(path, '/');
	const uint8_t *b = p;
	int f, rc, len;

	*fd = -1;
	if (slash == NULL)
		len = snprintf(tmp, tmp_cap, ".%s.tmp-XXXXXX", path);
	else
		len = snprintf(tmp, tmp_cap, "%.*s/.%s.tmp-XXXXXX",
			       (int)(slash - path), path, slash + 1);
	if (len < 0 || (size_t)len >= tmp_cap)
		return BW_ETOOBIG;
	if ((f = mkostemp(tmp, O_CLOEXEC)) < 0)
		return -errno;
	if (fchmod(f, mode) != 0) {
		rc = -errno;
		goto fail;
	}
	if ((rc = bw_fs_write_full(f, b, n)) != 0)
		goto fail;
	if (fsync(f) != 0) {
		rc = -errno;
		goto fail;
	}
	*fd = f;
	return 0;
fail:
	close(f);
	unlink(tmp);
	return rc;
}

int
bw_fs_write_atomic(const char *path, const void *p, size_t n, mode_t mode)
{
	char tmp[PATH_MAX];
	int fd, rc;

	if ((rc = bw_fs_stage(path, p, n, mode, tmp, sizeof(tmp), &fd)) != 0)
		return rc;
	return bw_fs_commit(fd, tmp, path);
}

int
bw_fs_dir_at(int dir, const char *name, int create, int *out)
{
	int fd;

	*out = -1;
	/* opened first: it is there nearly always, and a mkdirat costs a
	 * lookup of its own */
	fd = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT && create) {
		if (mkdirat(dir, name, 0700) != 0) {
			/* another thread made it: its sync may not be over */
			if (errno != EEXIST || fsync(dir) != 0)
				return -errno;
		} else if (fsync(dir) != 0) {
			/* the new entry must last as the files put in it do;
			 * gone again, so that a retry makes and syncs it */
			int err = errno;

			(void)unlinkat(dir, name, AT_REMOVEDIR);
			return -err;
		}
		fd = openat(dir, name,
			    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	}
	if (fd < 0)
		return errno == ENOTDIR ? -ELOOP : -errno;
	*out = fd;
	return 0;
}

int
bw_fs_each(int dir, int (*fn)(void *arg, const char *name, int type), void *arg)
{
	struct dirent *e;
	DIR *d;
	int fd, rc = 0;

	if ((fd = dup(dir)) < 0)
		return -errno;
	if ((d = fdopendir(fd)) == NULL) {
		rc = -errno;
		close(fd);
		return rc;
	}
	rewinddir(d);
	while (rc == 0 && (e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			rc = fn(arg, e->d_name, e->d_type);
	}
	closedir(d);
	return rc;
}

/* All of n bytes, at off (at_off) or where the file stands. */
static int
write_all(int fd, const uint8_t *b, size_t n, int at_off, uint64_t off)
{
	ssize_t w;

	while (n > 0) {
		w = at_off ? pwrite(fd, b, n, (off_t)off) : write(fd, b, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		b += w;
		n -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

int
bw_fs_write_full(int fd, const void *p, size_t n)
{
	return write_all(fd, p, n, 0, 0);
}

int
bw_fs_pwrite_full(int fd, const void *p, size_t n, uint64_t off)
{
	return write_all(fd, p, n, 1, off);
}

int
bw_fs_lock(const char *dir, const char *name, int *fd, long *holder)
{
	char path[PATH_MAX], text[32];
	ssize_t n;
	int f, len;

	*fd = -1;
	*holder = 0;
	len = snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (len < 0 || (size_t)len >= sizeof(path))
		return BW_ETOOBIG;
	f = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (f < 0)
		return -errno;
	if (flock(f, LOCK_EX | LOCK_NB) != 0) {
		len = errno == EWOULDBLOCK ? BW_EBUSY : -errno;
		if ((n = pread(f, text, sizeof(text) - 1, 0)) > 0) {
			text[n] = '\0';
			*holder = strtol(text, NULL, 10);
		}
		close(f);
		return len;
	}
	len = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
	if (ftruncate(f, 0) != 0 || pwrite(f, text, (size_t)len, 0) != len) {
		len = -errno;
		close(f);
		return len;
	}
	*fd = f;
	return 0;
}

int
bw_fs_parent_writable(const char *path)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		return access(".", W_OK | X_OK) == 0;
	if ((size_t)(slash - path) >= sizeof(dir))
		return 0;
	memcpy(dir, path, (size_t)(slash - path));
	dir[slash - path] = '\0';
	return access(dir[0] != '\0' ? dir : "/", W_OK | X_OK) == 0;
}
