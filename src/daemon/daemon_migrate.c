/* bulwarkd migrate --from DATA_DIR: a single-machine data directory (its
 * defensive.db and its contents) copied into the store the options name
 * (--db, the data directory's blobs), through host/migrate.c. The source is
 * only read: its database is copied aside first (so that not even SQLite's
 * recovery or a checkpoint touches it), and a shared lock on its lock file
 * keeps a daemon from starting there meanwhile.
 *
 * The copy aside is a directory bulwark-migrate.XXXXXX under TMPDIR whose
 * "lock" file the migration holds. A migration that was killed cannot
 * remove it; the next one does, once nothing holds its lock.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bulwark/fsutil.h"
#include "bulwark/log.h"
#include "daemon/daemon.h"
#include "store/blob.h"
#include "store/migrate.h"

/* A shared lock on dir's lock file, if it has one: -1 (no file), an fd,
 * or BW_EBUSY while a daemon holds it. */
static int
lock_shared(const char *dir, int *fd)
{
	char path[PATH_MAX];

	*fd = -1;
	if (snprintf(path, sizeof(path), "%s/%s", dir, BW_DAEMON_LOCK) >=
	    (int)sizeof(path))
		return BW_ETOOBIG;
	if ((*fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (flock(*fd, LOCK_SH | LOCK_NB) != 0) {
		close(*fd);
		*fd = -1;
		return BW_EBUSY;
	}
	return 0;
}

static int
copy_file(const char *from, const char *to)
{
	char buf[1 << 16];
	ssize_t n;
	int in, out, rc = 0;

	if ((in = open(from, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return errno == ENOENT ? BW_ENOTFOUND : -errno;
	if ((out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) <
	    0) {
		rc = -errno;
		close(in);
		return rc;
	}
	while ((n = read(in, buf, sizeof(buf))) > 0) {
		if ((rc = bw_fs_write_full(out, buf, (size_t)n)) != 0)
			break;
	}
	if (n < 0)
		rc = -errno;
	close(in);
	if (close(out) != 0 && rc == 0)
		rc = -errno;
	return rc;
}

#define ASIDE_PREFIX "bulwark-migrate."

static const char *const aside_parts[] = {"defensive.db", "defensive.db-wal",
					  "defensive.db-shm",
					  "defensive.db-journal", "lock"};

static const char *
aside_base(void)
{
	const char *base = getenv("TMPDIR");

	return base != NULL && base[0] != '\0' ? base : "/var/tmp";
}

/* The copy's files and its directory (any that are there): 0 once the
 * directory is gone. */
static int
remove_aside(const char *tmp)
{
	char path[PATH_MAX + 32];
	size_t i;

	if (tmp[0] == '\0')
		return 0;
	for (i = 0; i < sizeof(aside_parts) / sizeof(aside_parts[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", tmp, aside_parts[i]);
		(void)unlink(path);
	}
	return rmdir(tmp);
}

/* Copies aside that killed migrations of this user left: those whose lock
 * file nothing holds. A directory without a lock file is left alone (one
 * being made this instant, or not ours to judge). */
static void
sweep_asides(const char *base)
{
	char dir[PATH_MAX], lock[PATH_MAX + 8];
	struct dirent *de;
	struct stat st;
	DIR *d;
	int fd;

	if ((d = opendir(base)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, ASIDE_PREFIX, strlen(ASIDE_PREFIX)) !=
		    0)
			continue;
		if (snprintf(dir, sizeof(dir), "%s/%s", base, de->d_name) >=
		    (int)sizeof(dir))
			continue;
		if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) ||
		    st.st_uid != geteuid())
			continue;
		snprintf(lock, sizeof(lock), "%s/lock", dir);
		fd = open(lock, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (flock(fd, LOCK_EX | LOCK_NB) == 0 &&
		    remove_aside(dir) == 0) {
			printf("migrate: removed %s, the copy aside of a "
			       "migration that was stopped\n",
			       dir);
		}
		close(fd);
	}
	closedir(d);
}

/* FROM's database and journal into a fresh directory under TMPDIR, whose
 * lock (*lock) is held until the copy is removed. */
static int
copy_aside(const char *from, char *tmp, size_t cap, char *db, size_t db_cap,
	   int *lock)
{
	const char *base = aside_base();
	char src[PATH_MAX + 32], dst[PATH_MAX + 32], lockp[PATH_MAX + 48];
	size_t i;
	int rc;

	sweep_asides(base);
	/* made under another name and renamed once locked, so that a sweep
	 * never sees it without its lock held */
	if (snprintf(src, sizeof(src), "%s/.new-" ASIDE_PREFIX "XXXXXX",
		     base) >= (int)sizeof(src) ||
	    strlen(src) - 5 >= cap) {
		tmp[0] = '\0';
		return BW_ETOOBIG;
	}
	if (mkdtemp(src) == NULL) {
		rc = -errno;
		tmp[0] = '\0';
		return rc;
	}
	snprintf(lockp, sizeof(lockp), "%s/lock", src);
	*lock = open(lockp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		     0600);
	snprintf(tmp, cap, "%s/%s", base, strrchr(src, '/') + 6);
	if (*lock < 0 || flock(*lock, LOCK_EX | LOCK_NB) != 0 ||
	    rename(src, tmp) != 0) {
		rc = -errno;
		(void)remove_aside(src);
		tmp[0] = '\0';
		return rc;
	}
	for (i = 0; i < 2; i++) { /* the database, then its journal */
		snprintf(src, sizeof(src), "%s/%s", from, aside_parts[i]);
		snprintf(dst, sizeof(dst), "%s/%s", tmp, aside_parts[i]);
		rc = copy_file(src, dst);
		if (rc == BW_ENOTFOUND && i > 0)
			continue; /* no journal: a clean shutdown */
		if (rc != 0)
			return rc;
	}
	snprintf(db, db_cap, "sqlite:%s/defensive.db", tmp);
	return 0;
}

int
bw_daemon_migrate(const struct bw_daemon_cfg *cfg, const char *from)
{
	char src_real[PATH_MAX], dst_real[PATH_MAX], tmp[PATH_MAX - 64] = "";
	char src_db[PATH_MAX + 16], why[512];
	struct bw_blob_conf bc;
	struct bw_meta *fm = NULL, *tm = NULL;
	struct bw_blobs *fb = NULL, *tb = NULL;
	struct bw_migrate_report rep;
	struct bw_loop *loop = NULL;
	int src_lock = -1, dst_lock = -1, aside_lock = -1, rc, same;
	long holder = 0;

	if (realpath(from, src_real) == NULL) {
		fprintf(stderr, "bulwarkd migrate: %s: %s\n", from,
			strerror(errno));
		return 2;
	}
	if (realpath(cfg->data_dir, dst_real) == NULL) {
		fprintf(stderr, "bulwarkd migrate: %s: %s\n", cfg->data_dir,
			strerror(errno));
		return 2;
	}
	same = strcmp(src_real, dst_real) == 0;
	if (same && cfg->db[0] == '\0' && cfg->blobs[0] == '\0') {
		fprintf(stderr, "bulwarkd migrate: the target (--db, "
				"--data-dir) is the source: nothing to do\n");
		return 2;
	}
	if ((rc = lock_shared(src_real, &src_lock)) != 0) {
		fprintf(stderr, "bulwarkd migrate: %s: %s\n", src_real,
			rc == BW_EBUSY ? "a bulwarkd is using it: stop it first"
				       : bw_strerror(rc));
		return 1;
	}
	if (!same && (rc = bw_fs_lock(dst_real, BW_DAEMON_LOCK, &dst_lock,
				      &holder)) != 0) {
		fprintf(stderr, "bulwarkd migrate: %s: %s\n", dst_real,
			rc == BW_EBUSY ? "a bulwarkd is using it: stop it first"
				       : bw_strerror(rc));
		goto out;
	}
	bw_daemon_blob_conf(cfg, &bc);
	bc.data_dir = dst_real;
	if ((rc = copy_aside(src_real, tmp, sizeof(tmp), src_db, sizeof(src_db),
			     &aside_lock)) != 0) {
		fprintf(stderr,
			"bulwarkd migrate: cannot copy %s/defensive.db "
			"aside: %s\n",
			src_real, bw_strerror(rc));
		goto out;
	}
	if ((rc = bw_loop_new(&loop, 1)) != 0 ||
	    (rc = bw_meta_open(&fm, src_db, src_real, loop)) != 0 ||
	    (rc = bw_blobs_open_dir(&fb, src_real)) != 0 ||
	    (rc = bw_meta_open(&tm, cfg->db, dst_real, loop)) != 0 ||
	    (rc = bw_blobs_open(&tb, &bc)) != 0) {
		fprintf(stderr,
			"bulwarkd migrate: cannot open the stores: %s\n",
			bw_strerror(rc));
		goto out;
	}
	rc = bw_migrate(fm, fb, tm, tb, same && cfg->blobs[0] == '\0', &rep,
			why, sizeof(why));
	printf("migrate: clients: %llu in the source, %llu copied now\n",
	       (unsigned long long)rep.clients,
	       (unsigned long long)rep.clients_new);
	printf("migrate: files: %llu, %llu copied now; contents: %llu, %llu "
	       "copied now (%llu bytes)\n",
	       (unsigned long long)rep.files, (unsigned long long)rep.files_new,
	       (unsigned long long)rep.contents,
	       (unsigned long long)rep.contents_copied,
	       (unsigned long long)rep.bytes_copied);
	printf("migrate: messages: %llu queued, %llu copied now; ids go on "
	       "above %lld\n",
	       (unsigned long long)rep.messages,
	       (unsigned long long)rep.messages_new, (long long)rep.last_id);
	if (rc != 0) {
		fprintf(stderr, "bulwarkd migrate: failed: %s\n",
			why[0] != '\0' ? why : bw_strerror(rc));
		goto out;
	}
	printf("migrate: verified: every row of the source is in the target "
	       "and every content reads back with the source's CRC%s\n",
	       rep.clients_new + rep.files_new + rep.messages_new +
				       rep.contents_copied ==
			       0
		       ? "; nothing was left to do"
		       : "");
	/* the source is the truth of a run: one after the new servers
	 * served would put its older state back */
	printf("migrate: the target holds the source's state; once a daemon "
	       "has served the target, do not run migrate into it again (it "
	       "would put back files replaced and messages delivered since)\n");
out:
	/* the workers' last jobs (a checkpoint, say) end before what they
	 * use is closed, as in the daemon */
	bw_loop_drain(loop);
	bw_meta_free(tm);
	bw_meta_free(fm);
	bw_blobs_close(tb);
	bw_blobs_close(fb);
	bw_loop_free(loop);
	(void)remove_aside(tmp);
	if (aside_lock >= 0)
		close(aside_lock);
	if (src_lock >= 0)
		close(src_lock);
	if (dst_lock >= 0)
		close(dst_lock);
	return rc == 0 ? 0 : 1;
}
