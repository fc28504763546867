/* The blob store: the contents the services keep (the vault's files, the
 * messenger's large message contents), named by keys ("files/<hex>/<name>",
 * "files/.pending/<x>", "messages/<x>"). A table of operations (struct
 * bw_blob_backend) with one backend per kind of storage, chosen at
 * start-up by URL (host/blobfs/ for "file:", the embedded default: the
 * data directory), so that an object store can go behind it without a
 * service knowing.
 *
 * Every operation blocks (a disk, a network): services run them on the
 * loop's workers, or at start-up. The loop thread drops an object with
 * bw_blobs_abort_later, which hands the abort to a worker. A new object is
 * written under no key, then put under its key in one step: a reader sees the
 * key's old object or the whole new one, never a part, and a put that
 * returns 0 is durable. Writes of one object may overlap in time (two
 * buffers in flight on two workers), each at its own offset, together
 * covering the object once; put and abort come after the last write.
 *
 * Keys under "<space>" BW_BLOB_SCRATCH ("files/.incoming/...") are
 * scratch: a service may keep an object there for a while (a backup of
 * one it replaces), never listed, dropped by the next start-up's sweep.
 */
#ifndef BULWARK_HOST_BLOB_H
#define BULWARK_HOST_BLOB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bulwark/err.h"
#include "store/stats.h"

struct bw_blob_w; /* an object being written */
struct bw_loop;
struct bw_blob_r; /* an object being read */

/* A key's longest form (with its NUL). */
#define BW_BLOB_KEY_CAP 512
/* Under a space, the scratch keys' place. */
#define BW_BLOB_SCRATCH ".incoming/"

/* How the store is reached: the URL and what goes with it. */
struct bw_blob_conf {
	const char *url;	 /* "file:DIR", "s3://BUCKET[/PREFIX]"; "" for
				    the embedded default: file:DATA_DIR */
	const char *data_dir;	 /* the daemon's (an S3 store spools there) */
	const char *s3_endpoint; /* "" = AWS */
	const char *s3_region;	 /* "" = AWS_REGION, else us-east-1 */
	const char *s3_credentials; /* a shared-credentials file, or "" */
	int s3_path_style;	    /* http://HOST/BUCKET/KEY */
	uint32_t grace_s; /* a store others share: what is younger than
			     this may be another daemon's work in progress
			     (0 = the default, one hour); unused for file: */
	/* s3: a request that moves nothing this long is given up, and is
	 * not tried again past it (0 = the default, 30 s) */
	uint32_t s3_timeout_s;
};

struct bw_blob_backend {
	const char *scheme; /* of the URL: "file" */
	int (*open)(const struct bw_blob_conf *conf, const char *where,
		    void **state) BW_WUR;
	void (*close)(void *state);
	/* One line into msg: what was reached, or what is wrong. */
	int (*check)(void *state, char *msg, size_t cap) BW_WUR;
	/* A new object that will go under space ("files/", "messages/"),
	 * seen by no one until it is put. It may make a file or a request:
	 * callers run it on a worker (any thread, as every call here). key is
	 * where it will most likely be put (NULL if not known): a backend may
	 * start writing it there (unseen until put); a put under another key
	 * still works. */
	int (*create)(void *state, const char *space, const char *key,
		      struct bw_blob_w **w) BW_WUR;
	/* n bytes at off, each range once and without gaps (the writes
	 * submitted in the order of their offsets). A backend may write p
	 * directly when it is aligned to 4096 bytes (as the vault's buffers
	 * are). */
	int (*write)(struct bw_blob_w *w, uint64_t off, const void *p,
		     size_t n) BW_WUR;
	/* Makes w the object at key, durably: replacing one there (replace
	 * set), else BW_EEXIST if key holds one. w is gone either way; on
	 * failure the key holds its old object or, if the failure came after
	 * the replacement (a directory's sync), possibly w's: a caller that
	 * must know keeps a copy of the old one to put back. An object store
	 * may delete the old object before writing (Swift frees a multipart
	 * object's parts only then): a failure may leave key empty, and a
	 * caller that replaces what it must not lose keeps that copy. */
	int (*put)(void *state, struct bw_blob_w *w, const char *key,
		   int replace) BW_WUR;
	/* Drops w (not put): nothing of it remains. A file's unlink frees
	 * its blocks then (a large one with `discard`: a tenth of a second
	 * per GiB): the loop uses bw_blobs_abort_later. */
	void (*abort)(void *state, struct bw_blob_w *w);
	/* A second key for the object at from, cheaply (a backup a
	 * replacement can be undone with). BW_ENOTFOUND if there is none. */
	int (*copy)(void *state, const char *from, const char *to) BW_WUR;
	/* The object at from becomes the one at to (replacing one there, as
	 * put does: a failure may leave to empty on an object store),
	 * durably. */
	int (*move)(void *state, const char *from, const char *to) BW_WUR;
	/* No object at key any more (none is not an error). Its result may
	 * be ignored where a leftover is swept later. */
	int (*remove)(void *state, const char *key);
	/* The object's size: BW_ENOTFOUND if there is none (or what is there
	 * is not an object: a link), BW_EPROTO if the way to it is not ours
	 * (a link in place of a directory: nothing there is judged). */
	int (*size)(void *state, const char *key, uint64_t *size) BW_WUR;
	int (*read_open)(void *state, const char *key,
			 struct bw_blob_r **r) BW_WUR;
	/* Up to n bytes: the count, 0 at the end, or -errno. */
	ssize_t (*read)(struct bw_blob_r *r, void *p, size_t n);
	void (*read_close)(struct bw_blob_r *r);
	/* Every key under prefix (ending in '/'), at any depth, with its
	 * size and when it was stored (seconds since the epoch), grouped by
	 * the key's last '/': scratch keys are not listed, nor what is not
	 * an object of ours (a link: logged). A non-zero return from cb
	 * stops and is returned. */
	int (*list)(void *state, const char *prefix,
		    int (*cb)(void *arg, const char *key, uint64_t size,
			      int64_t mtime),
		    void *arg) BW_WUR;
	/* Start-up: makes space usable and drops its scratch (objects being
	 * written or kept aside when a run ended; in a shared store, those
	 * older than the grace period); *n says how many went. Fails if
	 * space cannot be used (a link where its places go). */
	int (*sweep)(void *state, const char *space, unsigned *n) BW_WUR;
	/* The backend's own figures (requests, retries, failures, bytes,
	 * time), from any thread; NULL if it has none. */
	void (*stats)(const void *state, bw_stat_emit emit, void *arg);
};

/* The backends: local files (src/host/blobfs/) and S3 (src/host/s3/).
 * Only blob.c picks one, by the URL's scheme. */
extern const struct bw_blob_backend bw_blob_fs;
extern const struct bw_blob_backend bw_blob_s3;

struct bw_blobs {
	const struct bw_blob_backend *be;
	void *state;
	/* Shared with other daemons (an object store): what is younger
	 * than grace_s may be another's work in progress, not an orphan. */
	int shared;
	uint32_t grace_s;
};

/* Other daemons put and remove the same objects (an object store): an
 * object may be another's work in progress, and a listing of the store,
 * not this node's memory, says what exists. */
static inline int
bw_blobs_others_write(const struct bw_blobs *b)
{
	return b->shared;
}

/* Whether url names a store other daemons may share, reached over the
 * network (an object store), not a local directory: what open sets as
 * bw_blobs.shared, known before opening. 0 for a URL no backend takes. */
int bw_blobs_url_shared(const char *url);
/* Opens the store named by conf->url: "file:DIR", "s3://BUCKET[/PREFIX]",
 * or "" for the embedded default (file:DATA_DIR). BW_ECONFIG for an
 * unknown scheme or a bad URL (logged). */
int bw_blobs_open(struct bw_blobs **out,
		  const struct bw_blob_conf *conf) BW_WUR;
/* The embedded default's store in dir (file:DIR). */
int bw_blobs_open_dir(struct bw_blobs **out, const char *dir) BW_WUR;
void bw_blobs_close(struct bw_blobs *b);
/* One line into msg about the store conf names: whether it can be
 * reached, and what is wrong if not. */
int bw_blobs_check(const struct bw_blob_conf *conf, char *msg,
		   size_t cap) BW_WUR;
/* Whether an object stored at mtime may be judged an orphan now: always
 * in a store of one daemon's, past the grace period in a shared one. */
int bw_blob_settled(const struct bw_blobs *b, int64_t mtime);

/* Drops w (its abort) on one of loop's workers, never on the caller's
 * thread, unless no job can be queued (no memory, a loop drained at
 * shutdown): then here. NULL-safe. */
void bw_blobs_abort_later(const struct bw_blobs *b, struct bw_loop *loop,
			  struct bw_blob_w *w);

/* Closes r on one of loop's workers, as bw_blobs_abort_later: the last
 * descriptor of a file removed meanwhile frees its blocks. NULL-safe. */
void bw_blobs_read_close_later(const struct bw_blobs *b, struct bw_loop *loop,
			       struct bw_blob_r *r);

/* A fresh scratch key under space, into key[BW_BLOB_KEY_CAP]: prefix
 * names what it holds (".old-"). */
void bw_blob_scratch_key(const char *space, const char *prefix,
			 char key[BW_BLOB_KEY_CAP]);

/* --- the calls, through one place -------------------------------------
 * Services call the backend through these, never through b->be: one
 * place for a trace, a metric or a fault hook (as the metadata table's
 * bw_meta_submit). Each is the backend operation of the same name, with
 * its state. */

static inline int BW_WUR
bw_blob_create(const struct bw_blobs *b, const char *space, const char *key,
	       struct bw_blob_w **w)
{
	return b->be->create(b->state, space, key, w);
}

static inline int BW_WUR
bw_blob_write(const struct bw_blobs *b, struct bw_blob_w *w, uint64_t off,
	      const void *p, size_t n)
{
	return b->be->write(w, off, p, n);
}

static inline int BW_WUR
bw_blob_put(const struct bw_blobs *b, struct bw_blob_w *w, const char *key,
	    int replace)
{
	return b->be->put(b->state, w, key, replace);
}

static inline void
bw_blob_abort(const struct bw_blobs *b, struct bw_blob_w *w)
{
	b->be->abort(b->state, w);
}

static inline int BW_WUR
bw_blob_copy(const struct bw_blobs *b, const char *from, const char *to)
{
	return b->be->copy(b->state, from, to);
}

static inline int BW_WUR
bw_blob_move(const struct bw_blobs *b, const char *from, const char *to)
{
	return b->be->move(b->state, from, to);
}

static inline int
bw_blob_remove(const struct bw_blobs *b, const char *key)
{
	return b->be->remove(b->state, key);
}

static inline int BW_WUR
bw_blob_size(const struct bw_blobs *b, const char *key, uint64_t *size)
{
	return b->be->size(b->state, key, size);
}

static inline int BW_WUR
bw_blob_read_open(const struct bw_blobs *b, const char *key,
		  struct bw_blob_r **r)
{
	return b->be->read_open(b->state, key, r);
}

static inline ssize_t
bw_blob_read(const struct bw_blobs *b, struct bw_blob_r *r, void *p, size_t n)
{
	return b->be->read(r, p, n);
}

static inline void
bw_blob_read_close(const struct bw_blobs *b, struct bw_blob_r *r)
{
	b->be->read_close(r);
}

static inline int BW_WUR
bw_blob_list(const struct bw_blobs *b, const char *prefix,
	     int (*cb)(void *arg, const char *key, uint64_t size,
		       int64_t mtime),
	     void *arg)
{
	return b->be->list(b->state, prefix, cb, arg);
}

static inline int BW_WUR
bw_blob_sweep(const struct bw_blobs *b, const char *space, unsigned *n)
{
	return b->be->sweep(b->state, space, n);
}

static inline void
bw_blob_stats(const struct bw_blobs *b, bw_stat_emit emit, void *arg)
{
	if (b->be->stats != NULL)
		b->be->stats(b->state, emit, arg);
}

#endif
