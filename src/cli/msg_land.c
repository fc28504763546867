/* bulwark msg, where a received file lands: a new private file (0600) in
 * the directory of -o (else $TMPDIR, else /tmp), named after its sender and
 * the time it arrived, from-alice-20261128-094500 (-2, -3... if taken): an
 * unnamed O_TMPFILE given its name once whole, else a mkstemp name; never
 * over another file.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bulwark/err.h"
#include "bulwark/fsutil.h"
#include "bulwark/util.h"
#include "cli/msg_cli_int.h"

#define CHUNK (64u * 1024u)

int
msg_write_full(int fd, const uint8_t *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* A new file of mkstemp's (mode 0600) under dir, named stem-XXXXXX, its
 * name into path. */
static int
plain_mkstemp(const char *dir, const char *stem, char *path, size_t cap)
{
	snprintf(path, cap, "%s/%s-XXXXXX", dir, stem); /* mkstemp's */
	return mkstemp(path);
}

void
msg_land_stem(const char *sender, time_t when, char *out, size_t cap)
{
	struct tm tm;
	size_t i, n;

	n = (size_t)snprintf(out, cap, "from-%s", sender);
	for (i = 5; i < n && i < cap; i++) {
		unsigned char ch = (unsigned char)out[i];

		/* a name a shell and any file system take as it is */
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
		      (ch == '.' && i > 5)))
			out[i] = '_';
	}
	if (n > 64 + 5 && cap > 64 + 5)
		out[n = 64 + 5] = '\0'; /* a long name cut: the time follows */
	if (n < cap && gmtime_r(&when, &tm) != NULL)
		(void)strftime(out + n, cap - n, "-%Y%m%d-%H%M%S", &tm);
}

/* A received file's plaintext goes into an unnamed file (O_TMPFILE) in
 * dir, named only once it is whole and synced: a client killed meanwhile
 * leaves none of it behind. Where the file system or /proc cannot do
 * that, a file named by mkstemp, removed on every failure seen. path gets
 * dir (unnamed) or the file's name; the descriptor, or -1 with errno. */
int
msg_plain_open(const char *dir, const char *stem, char *path, size_t cap,
	       int *unnamed)
{
	int fd;

	*unnamed = 0;
	snprintf(path, cap, "%s", dir);
	if (access("/proc/self/fd", X_OK) == 0) {
		if ((fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)) >=
		    0) {
			*unnamed = 1;
			return fd;
		}
		/* a directory that cannot be written fails either way */
		if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
			return -1;
	}
	return plain_mkstemp(dir, stem, path, cap);
}

/* The unnamed file fd gets the name dir/stem, or stem-2, stem-3...: never
 * one that exists (linkat does not replace). 0, or -errno. */
int
msg_plain_name(int fd, const char *dir, const char *stem, char *path,
	       size_t cap)
{
	char proc[64];
	int n;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	for (n = 1; n <= 1000; n++) {
		if ((size_t)(n == 1 ? snprintf(path, cap, "%s/%s", dir, stem)
				    : snprintf(path, cap, "%s/%s-%d", dir, stem,
					       n)) >= cap)
			return -ENAMETOOLONG;
		if (linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW) ==
		    0)
			return 0;
		if (errno != EEXIST)
			return -errno;
	}
	return -EEXIST;
}

/* Where the unnamed file cannot be linked (a /proc of another namespace):
 * its bytes copied into a file made by mkstemp, synced. 0 or -errno, and
 * no file left on failure. */
int
msg_plain_copy(int fd, const char *dir, const char *stem, char *path,
	       size_t cap)
{
	uint8_t buf[CHUNK];
	ssize_t n;
	int out, rc = 0;

	if ((out = plain_mkstemp(dir, stem, path, cap)) < 0)
		return -errno;
	if (lseek(fd, 0, SEEK_SET) != 0)
		rc = -errno;
	while (rc == 0 && (n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		rc = n < 0 ? -errno : msg_write_full(out, buf, (size_t)n);
	}
	bw_wipe(buf, sizeof(buf));
	if (rc == 0 && fsync(out) != 0)
		rc = -errno;
	if (close(out) != 0 && rc == 0)
		rc = -errno;
	if (rc != 0)
		(void)unlink(path);
	return rc;
}
