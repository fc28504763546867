/* Open directories of the local blob store, kept between requests
 * (dircache.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bulwark/err.h"
#include "bulwark/fsutil.h"
#include "bulwark/util.h"
#include "store/blob.h"
#include "store/blobfs/dircache.h"

/* How often a kept directory is checked to still be the one its path
 * names: one renamed away (and another put in its place) is let go
 * within this, though no request finds it wanting. */
#define CHECK_MS 1000u

struct bfs_dent {
	char *path;
	int fd;
	dev_t dev; /* the directory opened, as it was */
	ino_t ino;
	uint64_t checked_ms;
	unsigned refs;
	int dead; /* forgotten while in use: freed by its last put */
	struct bfs_dent *prev, *next; /* in the idle list while refs == 0 */
};

static void
idle_unlink(struct bfs_dirs *d, struct bfs_dent *e)
{
	if (e->prev != NULL)
		e->prev->next = e->next;
	else
		d->idle = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	else
		d->tail = e->prev;
	e->prev = e->next = NULL;
}

static void
idle_push(struct bfs_dirs *d, struct bfs_dent *e)
{
	e->prev = NULL;
	e->next = d->idle;
	if (d->idle != NULL)
		d->idle->prev = e;
	else
		d->tail = e;
	d->idle = e;
}

static void
dent_free(struct bfs_dent *e)
{
	close(e->fd);
	free(e->path);
	free(e);
}

int
bfs_dirs_init(struct bfs_dirs *d, int top, unsigned cap)
{
	int rc;

	memset(d, 0, sizeof(*d));
	d->top = top;
	d->cap = cap;
	if ((rc = bw_hash_init(&d->map)) != 0)
		return rc;
	if ((rc = pthread_mutex_init(&d->mu, NULL)) != 0) {
		bw_hash_fini(&d->map);
		return -rc;
	}
	return 0;
}

static int
free_one(void *arg, void *val)
{
	(void)arg;
	dent_free(val);
	return 0;
}

void
bfs_dirs_fini(struct bfs_dirs *d)
{
	(void)bw_hash_each(&d->map, free_one, NULL);
	bw_hash_fini(&d->map);
	pthread_mutex_destroy(&d->mu);
}

/* Takes e for a caller; d->mu held. */
static void
take(struct bfs_dirs *d, struct bfs_dent *e, struct bfs_dir *out)
{
	if (e->refs++ == 0)
		idle_unlink(d, e);
	out->fd = e->fd;
	out->e = e;
}

/* Keeps fd (path's, just opened) in the cache if there is room, and hands
 * it (or the entry another worker made meanwhile) to the caller. */
static void
keep(struct bfs_dirs *d, const char *path, int fd, struct bfs_dir *out)
{
	struct bfs_dent *e, *old;
	struct stat st;

	out->fd = fd;
	out->e = NULL;
	if ((e = calloc(1, sizeof(*e))) == NULL)
		return;
	if ((e->path = strdup(path)) == NULL || fstat(fd, &st) != 0) {
		free(e->path);
		free(e);
		return;
	}
	e->fd = fd;
	e->dev = st.st_dev;
	e->ino = st.st_ino;
	e->checked_ms = bw_now_ms();
	pthread_mutex_lock(&d->mu);
	if ((old = bw_hash_get(&d->map, path, strlen(path))) != NULL) {
		take(d, old, out);
		pthread_mutex_unlock(&d->mu);
		dent_free(e); /* closes fd: old's is the same directory */
		return;
	}
	if (d->n == d->cap && (old = d->tail) != NULL) {
		idle_unlink(d, old);
		(void)bw_hash_del(&d->map, old->path, strlen(old->path));
		d->n--;
	} else {
		old = NULL;
	}
	if (d->n < d->cap &&
	    bw_hash_put(&d->map, e->path, strlen(e->path), e) == 0) {
		d->n++;
		take(d, e, out);
		e = NULL;
	}
	pthread_mutex_unlock(&d->mu);
	if (old != NULL)
		dent_free(old);
	if (e != NULL) { /* no room: the caller's to close */
		free(e->path);
		free(e);
	}
}

/* Lets e go: a get reaches its path afresh; its last put frees it. */
static void
forget(struct bfs_dirs *d, struct bfs_dent *e)
{
	pthread_mutex_lock(&d->mu);
	if (!e->dead) {
		(void)bw_hash_del(&d->map, e->path, strlen(e->path));
		d->n--;
		e->dead = 1;
	}
	pthread_mutex_unlock(&d->mu);
}

/* Whether path (relative to the top, no link followed at its end) still
 * names the directory e holds. */
static int
still_there(const struct bfs_dirs *d, const struct bfs_dent *e)
{
	struct stat st;

	return fstatat(d->top, e->path, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	       st.st_dev == e->dev && st.st_ino == e->ino;
}

int
bfs_dir_get(struct bfs_dirs *d, const char *path, int create,
	    struct bfs_dir *out)
{
	char parent[BW_BLOB_KEY_CAP];
	const char *slash, *base;
	struct bfs_dent *e;
	struct bfs_dir up;
	size_t n = strlen(path);
	uint64_t now;
	int fd, rc, tries, check;

	out->fd = -1;
	out->e = NULL;
	if (n == 0) {
		out->fd = d->top; /* never closed by a put */
		return 0;
	}
	if (n >= sizeof(parent))
		return BW_ETOOBIG;
	now = bw_now_ms();
	pthread_mutex_lock(&d->mu);
	if ((e = bw_hash_get(&d->map, path, n)) != NULL) {
		take(d, e, out);
		check = now - e->checked_ms >= CHECK_MS;
		if (check)
			e->checked_ms = now; /* one checker at a time */
		pthread_mutex_unlock(&d->mu);
		if (!check || still_there(d, e))
			return 0;
		forget(d, e); /* renamed or removed: reached afresh */
		bfs_dir_put(d, out);
	} else {
		pthread_mutex_unlock(&d->mu);
	}
	/* reached from its parent, itself from the cache when it is there */
	if ((slash = strrchr(path, '/')) != NULL) {
		memcpy(parent, path, (size_t)(slash - path));
		parent[slash - path] = '\0';
		base = slash + 1;
	} else {
		parent[0] = '\0';
		base = path;
	}
	if (base[0] == '\0')
		return BW_EPROTO;
	for (tries = 0;; tries++) {
		if ((rc = bfs_dir_get(d, parent, create, &up)) != 0)
			return rc;
		rc = bw_fs_dir_at(up.fd, base, create, &fd);
		/* a kept parent removed meanwhile: reached afresh, once */
		if (rc != -ENOENT || tries > 0 || !bfs_dir_gone(d, &up))
			break;
		bfs_dir_put(d, &up);
	}
	bfs_dir_put(d, &up);
	if (rc != 0)
		return rc;
	keep(d, path, fd, out);
	return 0;
}

void
bfs_dir_put(struct bfs_dirs *d, struct bfs_dir *h)
{
	struct bfs_dent *e = h->e;

	if (e == NULL) {
		if (h->fd >= 0 && h->fd != d->top)
			close(h->fd);
	} else {
		pthread_mutex_lock(&d->mu);
		if (--e->refs > 0) {
			e = NULL;
		} else if (!e->dead) {
			idle_push(d, e);
			e = NULL;
		}
		pthread_mutex_unlock(&d->mu);
		if (e != NULL)
			dent_free(e);
	}
	h->fd = -1;
	h->e = NULL;
}

int
bfs_dir_gone(struct bfs_dirs *d, const struct bfs_dir *h)
{
	struct bfs_dent *e = h->e;
	struct stat st;

	/* only a kept descriptor can be older than its directory */
	if (e == NULL || fstat(h->fd, &st) != 0 || st.st_nlink > 0)
		return 0;
	forget(d, e);
	return 1;
}
