/* The messenger's start-up: messages/.incoming is emptied (contents whose
 * 603 never got its row), a row whose content file is gone is dropped, and
 * a file in messages/ that no row names is removed. Each change is logged
 * with "reconcile:".
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bulwark/hash.h"
#include "bulwark/log.h"
#include "svc/msg/msg_int.h"

#define DROP_BATCH 1024

struct name {
	char s[BW_PATH_CAP];
};

struct scan {
	struct bw_msg *m;
	struct bw_hash named; /* file names rows refer to */
	int64_t missing[DROP_BATCH];
	unsigned missing_n;
	int full; /* more missing than one batch holds */
	int rc;
};

static int
note_row(void *arg, int64_t id, const char *path)
{
	struct scan *sc = arg;
	const char *name = path + sizeof(MSG_SPILL_DIR);
	struct name *n;
	struct stat st;

	if (strncmp(path, MSG_SPILL_DIR "/", sizeof(MSG_SPILL_DIR)) != 0 ||
	    fstatat(sc->m->dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
	    !S_ISREG(st.st_mode)) {
		if (sc->missing_n == DROP_BATCH) {
			sc->full = 1;
			return 1;
		}
		sc->missing[sc->missing_n++] = id;
		return 0;
	}
	if ((n = malloc(sizeof(*n))) == NULL) {
		sc->rc = BW_ENOMEM;
		return 1;
	}
	memcpy(n->s, name, strlen(name) + 1);
	if (bw_hash_put(&sc->named, n->s, strlen(n->s), n) != 0)
		free(n); /* named twice: once is enough */
	return 0;
}

static int
free_name(void *arg, void *val)
{
	(void)arg;
	free(val);
	return 0;
}

/* Drops rows whose file is gone, a batch at a time (rows are not changed
 * under a running SELECT). */
static int
drop_missing(struct scan *sc)
{
	unsigned i, dropped = 0;
	int rc;

	do {
		sc->missing_n = 0;
		sc->full = 0;
		bw_hash_each(&sc->named, free_name, NULL);
		bw_hash_fini(&sc->named);
		if ((rc = bw_hash_init(&sc->named)) != 0)
			return rc;
		if ((rc = bw_store_msg_files(sc->m->store, note_row, sc)) != 0)
			return rc;
		if (sc->rc != 0)
			return sc->rc;
		for (i = 0; i < sc->missing_n; i++) {
			if ((rc = bw_store_msg_drop(sc->m->store,
						    sc->missing[i])) != 0)
				return rc;
			dropped++;
		}
	} while (sc->full);
	if (dropped > 0)
		bw_warn("reconcile: dropped %u message(s) whose content file "
			"was missing",
			dropped);
	return 0;
}

/* Calls fn(dir, name) for each entry of dir but . and .. */
static int
each_entry(int dir, struct scan *sc,
	   int (*fn)(int, const char *, struct scan *))
{
	DIR *d;
	struct dirent *e;
	int fd = dup(dir), rc = 0;

	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		rc = -errno;
		if (fd >= 0)
			close(fd);
		return rc;
	}
	rewinddir(d);
	while (rc == 0 && (e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			rc = fn(dir, e->d_name, sc);
	}
	closedir(d);
	return rc;
}

static int
clear_incoming(int dir, const char *name, struct scan *sc)
{
	(void)sc;
	if (unlinkat(dir, name, 0) == 0)
		bw_info("reconcile: removed an incomplete message content %s",
			name);
	return 0;
}

static int
clear_unnamed(int dir, const char *name, struct scan *sc)
{
	if (name[0] == '.' || bw_hash_get(&sc->named, name, strlen(name)))
		return 0;
	if (unlinkat(dir, name, 0) == 0)
		bw_info("reconcile: removed " MSG_SPILL_DIR "/%s, which no "
			"message names",
			name);
	return 0;
}

int
msg_reconcile(struct bw_msg *m)
{
	struct scan *sc = calloc(1, sizeof(*sc));
	int rc;

	if (sc == NULL)
		return BW_ENOMEM;
	sc->m = m;
	if ((rc = bw_hash_init(&sc->named)) == 0 &&
	    (rc = each_entry(m->incoming_fd, sc, clear_incoming)) == 0 &&
	    (rc = drop_missing(sc)) == 0)
		rc = each_entry(m->dir_fd, sc, clear_unnamed);
	bw_hash_each(&sc->named, free_name, NULL);
	bw_hash_fini(&sc->named);
	free(sc);
	if (rc != 0)
		bw_error("reconcile: messages: %s", bw_strerror(rc));
	return rc;
}
