/* The messenger's start-up: the blob store's scratch under messages/ is
 * swept (contents whose send (603) never got its row), a row whose content
 * is gone is dropped, and a content under messages/ that no row names is
 * removed. Each change is logged with "reconcile:". Nothing serves yet:
 * rows and contents are changed synchronously.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/hash.h"
#include "bulwark/log.h"
#include "svc/msg/msg_int.h"

#define DROP_BATCH 1024

struct name {
	char s[BW_PATH_CAP];
};

struct scan {
	struct bw_msg *m;
	struct bw_hash named; /* content keys rows refer to */
	/* a shared store: the contents there are, from one listing (not a
	 * request per row: a node joining a cluster must not pause) */
	struct bw_hash *present;
	int64_t missing[DROP_BATCH];
	unsigned missing_n;
	int full; /* more missing than one batch holds */
	int rc;
};

/* A size's answer that the content is not there (or not ours to read). */
static int
gone(int rc)
{
	return rc == BW_ENOTFOUND || rc == BW_EPROTO;
}

static int
note_row(void *arg, int64_t id, const char *key)
{
	struct scan *sc = arg;
	const struct bw_blobs *b = sc->m->blobs;
	struct name *n;
	uint64_t size;

	/* On a shared store the listing is older than the rows: another node
	 * may have put a content and committed its row since, so a content
	 * the listing lacks is asked for before its row is dropped (a
	 * content is always put before its row exists); a store that cannot
	 * answer drops nothing. */
	if (strncmp(key, MSG_SPACE, strlen(MSG_SPACE)) != 0 ||
	    ((sc->present == NULL ||
	      bw_hash_get(sc->present, key, strlen(key)) == NULL) &&
	     gone(bw_blob_size(b, key, &size)))) {
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
	memcpy(n->s, key, strlen(key) + 1);
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

/* Drops rows whose content is gone, a batch at a time (rows are not
 * changed under a running read). */
static int
drop_missing(struct scan *sc)
{
	struct bw_meta *meta = sc->m->meta;
	struct bw_meta_req r;
	unsigned i, dropped = 0;
	int rc;

	do {
		sc->missing_n = 0;
		sc->full = 0;
		(void)bw_hash_each(&sc->named, free_name, NULL);
		bw_hash_fini(&sc->named);
		if ((rc = bw_hash_init(&sc->named)) != 0)
			return rc;
		if ((rc = meta->be->msg_blobs(meta->state, note_row, sc)) != 0)
			return rc;
		if (sc->rc != 0)
			return sc->rc;
		for (i = 0; i < sc->missing_n; i++) {
			bw_meta_req_init(&r, BW_META_MSG_DROP, 0, NULL, NULL);
			r.u.drop = sc->missing[i];
			if ((rc = bw_meta_run(meta, &r)) != 0 &&
			    rc != BW_ENOTFOUND)
				return rc;
			dropped += rc == 0;
		}
	} while (sc->full);
	if (dropped > 0)
		bw_warn("reconcile: dropped %u message(s) whose content file "
			"was missing",
			dropped);
	return 0;
}

static int
clear_unnamed(void *arg, const char *key, uint64_t size, int64_t mtime)
{
	struct scan *sc = arg;
	const struct bw_blobs *b = sc->m->blobs;
	const char *base = strrchr(key, '/');

	(void)size;
	base = base != NULL ? base + 1 : key;
	if (!bw_blob_settled(b, mtime) || base[0] == '.' ||
	    bw_hash_get(&sc->named, key, strlen(key)))
		return 0;
	if (bw_blob_remove(b, key) == 0)
		bw_info("reconcile: removed %s, which no message names", key);
	return 0;
}

static int
note_present(void *arg, const char *key, uint64_t size, int64_t mtime)
{
	struct bw_hash *h = arg;
	struct name *n = malloc(sizeof(*n));

	(void)size;
	(void)mtime;
	if (n == NULL)
		return BW_ENOMEM;
	snprintf(n->s, sizeof(n->s), "%s", key);
	if (bw_hash_put(h, n->s, strlen(n->s), n) != 0)
		free(n);
	return 0;
}

static void
present_free(struct scan *sc)
{
	if (sc->present == NULL)
		return;
	(void)bw_hash_each(sc->present, free_name, NULL);
	bw_hash_fini(sc->present);
	free(sc->present);
	sc->present = NULL;
}

static void
present_load(struct scan *sc)
{
	const struct bw_blobs *b = sc->m->blobs;
	int rc;

	if ((sc->present = calloc(1, sizeof(*sc->present))) == NULL)
		return;
	if ((rc = bw_hash_init(sc->present)) != 0) {
		free(sc->present);
		sc->present = NULL;
		return;
	}
	if ((rc = bw_blob_list(b, MSG_SPACE, note_present, sc->present)) != 0) {
		bw_warn("messenger: the stored contents could not be listed "
			"(%s); asking each one",
			bw_strerror(rc));
		present_free(sc);
	}
}

int
msg_reconcile(struct bw_msg *m)
{
	const struct bw_blobs *b = m->blobs;
	struct scan *sc = calloc(1, sizeof(*sc));
	unsigned n = 0;
	int rc;

	if (sc == NULL)
		return BW_ENOMEM;
	sc->m = m;
	if ((rc = bw_blob_sweep(b, MSG_SPACE, &n)) != 0) {
		bw_error("refusing to start: messages/ or its .incoming %s",
			 rc == -ELOOP ? "is a symbolic link or not a directory"
				      : bw_strerror(rc));
		free(sc);
		return rc;
	}
	if (n > 0)
		bw_info("reconcile: removed %u incomplete message content(s)",
			n);
	if (bw_blobs_others_write(b))
		present_load(sc);
	if ((rc = bw_hash_init(&sc->named)) == 0 &&
	    (rc = drop_missing(sc)) == 0)
		rc = bw_blob_list(b, MSG_SPACE, clear_unnamed, sc);
	present_free(sc);
	(void)bw_hash_each(&sc->named, free_name, NULL);
	bw_hash_fini(&sc->named);
	free(sc);
	if (rc != 0)
		bw_error("reconcile: messages: %s", bw_strerror(rc));
	return rc;
}
