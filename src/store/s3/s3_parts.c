/* Objects being written: the spool, the parts sent as they fill, and the
 * put that completes them (host/s3/s3_int.h says why a spool).
 *
 * The writer (a loop worker) appends to the spool and hashes; a full part
 * is queued for the uploader threads, the writer going on unless
 * S3_PARTS_AHEAD parts of its object are queued or being sent already.
 * The put sends what is left (one PUT for a small object, else the last
 * part and the completion) only under the key the parts were sent to;
 * an object is seen under its key only once complete. An abort (from the
 * loop) never waits: the uploader that finishes the object's last part in
 * flight, or an abort job, aborts the upload and frees the object.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bulwark/log.h"
#include "bulwark/util.h"
#include "store/s3/s3_int.h"

/* --- the spool -------------------------------------------------------------
 */

static int
spool_open(const struct s3 *s, int *fd)
{
	char path[4096];
	int rc;

	*fd = open(s->spool, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (*fd >= 0)
		return 0;
	if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
		return -errno;
	/* a file system without O_TMPFILE: a named file, unlinked at once */
	if (snprintf(path, sizeof(path), "%s/.s3-spool-XXXXXX", s->spool) >=
	    (int)sizeof(path))
		return BW_ETOOBIG;
	if ((*fd = mkostemp(path, O_CLOEXEC)) < 0)
		return -errno;
	rc = unlink(path) == 0 ? 0 : -errno;
	if (rc != 0) {
		close(*fd);
		*fd = -1;
	}
	return rc;
}

/* w's upload into the list the sweep leaves alone (a failure to note it
 * leaves it to the grace, as before). */
static void
live_add(struct s3 *s, struct bw_blob_w *w)
{
	struct s3_live *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return;
	memcpy(l->id, w->upload_id, sizeof(l->id));
	pthread_mutex_lock(&s->mu);
	l->next = s->live;
	if (s->live != NULL)
		s->live->prev = l;
	s->live = l;
	pthread_mutex_unlock(&s->mu);
	w->live = l;
}

static void
live_del(struct s3 *s, struct s3_live *l)
{
	pthread_mutex_lock(&s->mu);
	if (l->prev != NULL)
		l->prev->next = l->next;
	else
		s->live = l->next;
	if (l->next != NULL)
		l->next->prev = l->prev;
	pthread_mutex_unlock(&s->mu);
	free(l);
}

int
s3_upload_live(struct s3 *s, const char *upload_id)
{
	struct s3_live *l;
	int found = 0;

	pthread_mutex_lock(&s->mu);
	for (l = s->live; l != NULL && !found; l = l->next)
		found = strcmp(l->id, upload_id) == 0;
	pthread_mutex_unlock(&s->mu);
	return found;
}

void
s3_w_free(struct bw_blob_w *w)
{
	if (w->live != NULL)
		live_del(w->s, w->live);
	if (w->fd >= 0)
		close(w->fd);
	free(w->mem);
	bw_sha256_free(w->sha);
	free(w->etag);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w);
}

int
s3_w_create(struct s3 *s, const char *space, const char *key,
	    struct bw_blob_w **out)
{
	struct bw_blob_w *w = calloc(1, sizeof(*w));
	int rc;

	*out = NULL;
	if (w == NULL)
		return BW_ENOMEM;
	w->s = s;
	w->fd = -1;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	if (key != NULL && key[0] != '\0')
		snprintf(w->key, sizeof(w->key), "%s", key);
	else
		bw_blob_scratch_key(space, ".w-", w->key);
	/* no spool yet: a small object never needs one */
	if ((rc = bw_sha256_new(&w->sha)) != 0) {
		s3_w_free(w);
		return rc;
	}
	*out = w;
	return 0;
}

/* --- beginning an upload (its other requests: s3_upload.c) ----------------
 */

static int
initiate(struct s3 *s, struct bw_blob_w *w)
{
	struct s3_call c;
	char why[160];
	int rc;

	s3_call_init(&c, "POST", w->key);
	c.query = "uploads=";
	c.retry = 1; /* a second upload id at worst: aborted or swept */
	if ((rc = s3_do(s, &c)) == 0 &&
	    (c.resp == NULL ||
	     s3_xml_text(c.resp, c.resp_n, "UploadId", w->upload_id,
			 sizeof(w->upload_id)) != 0 ||
	     w->upload_id[0] == '\0'))
		rc = BW_EPROTO;
	if (rc != 0)
		bw_error("s3: starting the upload of %s: %s", w->key,
			 s3_why(&c, rc, why, sizeof(why)));
	else
		live_add(s, w);
	s3_call_fini(&c);
	return rc;
}

/* --- writing ---------------------------------------------------------------
 */

static int
part_sha(struct bw_blob_w *w, char *hex)
{
	uint8_t d[BW_SHA256_LEN];
	int rc;

	if ((rc = bw_sha256_final(w->sha, d)) != 0)
		return rc;
	bw_hex_encode(d, sizeof(d), hex);
	return 0;
}

static int
grow_etags(struct bw_blob_w *w, unsigned number)
{
	size_t cap = w->etag_cap != 0 ? w->etag_cap : 16;
	char(*grown)[S3_ETAG_CAP];

	if (number > S3_MAX_PARTS)
		return BW_ETOOBIG;
	if (number <= w->etag_cap)
		return 0;
	while (cap < number)
		cap *= 2;
	pthread_mutex_lock(&w->mu);
	grown = realloc(w->etag, cap * S3_ETAG_CAP);
	if (grown != NULL) {
		w->etag = grown;
		w->etag_cap = cap;
	}
	pthread_mutex_unlock(&w->mu);
	return grown != NULL ? 0 : BW_ENOMEM;
}

/* The full part before size goes to the uploaders, once fewer than
 * S3_PARTS_AHEAD of w's are there. */
static int
queue_part(struct s3 *s, struct bw_blob_w *w)
{
	struct s3_job *j;
	int rc;

	if (w->upload_id[0] == '\0' && (rc = initiate(s, w)) != 0)
		return rc;
	if ((rc = grow_etags(w, w->nparts + 1)) != 0)
		return rc;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return BW_ENOMEM;
	j->w = w;
	j->number = ++w->nparts;
	j->off = w->part_start;
	j->len = w->size - w->part_start;
	if ((rc = part_sha(w, j->sha)) != 0) {
		free(j);
		return rc;
	}
	pthread_mutex_lock(&w->mu);
	while (w->queued >= S3_PARTS_AHEAD && w->err == 0)
		pthread_cond_wait(&w->cv, &w->mu);
	rc = w->err;
	if (rc == 0)
		w->queued++;
	pthread_mutex_unlock(&w->mu);
	if (rc != 0) {
		free(j);
		return rc;
	}
	s3_enqueue(s, j);
	w->part_start = w->size;
	return 0;
}

static int
pwrite_all(int fd, const uint8_t *b, size_t n, uint64_t off)
{
	size_t done = 0;
	ssize_t got;

	while (done < n) {
		got = pwrite(fd, b + done, n - done, (off_t)(off + done));
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return got < 0 ? -errno : -EIO;
		done += (size_t)got;
	}
	return 0;
}

/* [off, off + n) into memory (under w->mu): the object is still small. */
static int
mem_put(struct bw_blob_w *w, uint64_t off, const void *p, size_t n)
{
	size_t end = (size_t)off + n, cap;
	uint8_t *m;

	if (n == 0)
		return 0;
	if (end > w->mem_cap) {
		for (cap = w->mem_cap != 0 ? w->mem_cap : 4096u; cap < end;)
			cap *= 2;
		if (cap > S3_MEM_MAX)
			cap = S3_MEM_MAX;
		if ((m = realloc(w->mem, cap)) == NULL)
			return BW_ENOMEM;
		w->mem = m;
		w->mem_cap = cap;
	}
	memcpy(w->mem + off, p, n);
	return 0;
}

/* The object outgrows S3_MEM_MAX at off: a spool, holding what memory had
 * (every write before off's, all in memory). Under w->mu, at off's turn. */
static int
spill(struct bw_blob_w *w, uint64_t off)
{
	int rc = spool_open(w->s, &w->fd);

	if (rc != 0) {
		w->fd = -1;
		bw_error("s3: cannot spool in %s: %s", w->s->spool,
			 bw_strerror(rc));
		return rc;
	}
	rc = pwrite_all(w->fd, w->mem, (size_t)off, 0);
	free(w->mem);
	w->mem = NULL;
	w->mem_cap = 0;
	return rc;
}

/* Two writes of an object may run at once (a writer with two buffers in
 * flight): each goes to memory or the spool at its offset at once (the one
 * that makes the spool waits for its turn), then waits for the ones before
 * it, so that the parts are hashed and sent in order. */
int
s3_w_write(struct bw_blob_w *w, uint64_t off, const void *p, size_t n)
{
	const uint8_t *b = p;
	const size_t len = n;
	size_t take, part;
	int rc = 0, fd = -1;

	pthread_mutex_lock(&w->mu);
	if (w->fd < 0 && off <= S3_MEM_MAX && n <= S3_MEM_MAX - off) {
		rc = mem_put(w, off, p, n);
	} else {
		while (w->fd < 0 && w->err == 0 && w->next_off < off)
			pthread_cond_wait(&w->cv, &w->mu);
		if (w->fd < 0)
			rc = w->err != 0	  ? w->err
			     : w->next_off != off ? BW_EPROTO
						  : spill(w, off);
		fd = w->fd;
	}
	pthread_mutex_unlock(&w->mu);
	if (rc == 0 && fd >= 0)
		rc = pwrite_all(fd, b, n, off);
	pthread_mutex_lock(&w->mu);
	while (rc == 0 && w->err == 0 && w->next_off < off)
		pthread_cond_wait(&w->cv, &w->mu);
	if (rc == 0 && w->next_off != off)
		rc = w->err != 0 ? w->err : BW_EPROTO;
	pthread_mutex_unlock(&w->mu);
	while (rc == 0 && n > 0) {
		part = s3_part_size(w->nparts + 1);
		take = part - (size_t)(w->size - w->part_start);
		if (take > n)
			take = n;
		if ((rc = bw_sha256_update(w->sha, b, take)) != 0)
			break;
		w->size += take;
		b += take;
		n -= take;
		if (w->size - w->part_start == part)
			rc = queue_part(w->s, w);
	}
	pthread_mutex_lock(&w->mu);
	if (rc != 0 && w->err == 0)
		w->err = rc;
	else if (rc == 0)
		w->next_off = off + len;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	return rc;
}

/* --- the put ---------------------------------------------------------------
 */

/* The way to key cleared for a write. Without replace, an object there
 * refuses it (BW_EEXIST). With replace, an object there that was made of
 * parts (its ETag "<md5>-<parts>") is deleted first: Swift frees the parts
 * of a multipart object only on a DELETE, and an overwrite would leave them
 * in the bucket's segments container for good. A caller that replaces
 * holds a copy of what it replaces (blob.h); a copy's source (from, or
 * NULL) is asked for first, so that a copy that cannot happen deletes
 * nothing. */
int
s3_clear_way(struct s3 *s, const char *key, int replace, const char *from)
{
	struct s3_call c;
	int rc, parts;

	s3_call_init(&c, "HEAD", key);
	c.retry = 1;
	rc = s3_do(s, &c);
	parts = rc == 0 && strchr(c.etag, '-') != NULL;
	s3_call_fini(&c);
	if (rc == BW_ENOTFOUND)
		return 0;
	if (rc != 0)
		return rc;
	if (!replace)
		return BW_EEXIST;
	if (!parts)
		return 0;
	if (from != NULL) {
		s3_call_init(&c, "HEAD", from);
		c.retry = 1;
		rc = s3_do(s, &c);
		s3_call_fini(&c);
		if (rc != 0)
			return rc;
	}
	return s3_remove(s, key);
}

static int
put_whole(struct s3 *s, struct bw_blob_w *w, const char *key)
{
	char sha[SHA_HEX], why[160];
	struct s3_call c;
	int rc;

	if ((rc = part_sha(w, sha)) != 0)
		return rc;
	s3_call_init(&c, "PUT", key);
	if (w->fd >= 0) {
		c.fd = w->fd;
		c.off = 0;
		c.len = w->size;
	} else { /* still in memory */
		c.body = w->mem;
		c.body_n = (size_t)w->size;
	}
	c.sha_hex = sha;
	c.retry = 1;
	if ((rc = s3_do(s, &c)) != 0)
		bw_error("s3: storing %s: %s", key,
			 s3_why(&c, rc, why, sizeof(why)));
	s3_call_fini(&c);
	return rc;
}

int
s3_w_put(struct s3 *s, struct bw_blob_w *w, const char *key, int replace)
{
	int rc;

	pthread_mutex_lock(&w->mu);
	while (w->queued > 0)
		pthread_cond_wait(&w->cv, &w->mu);
	rc = w->err;
	pthread_mutex_unlock(&w->mu);
	if (rc != 0)
		goto out;
	if (w->upload_id[0] == '\0') { /* one part: one PUT, any key */
		if ((rc = s3_clear_way(s, key, replace, NULL)) != 0)
			goto out;
		rc = put_whole(s, w, key);
		goto out;
	}
	if (strcmp(key, w->key) != 0) {
		/* the parts went elsewhere and the spool lets them go */
		bw_warn("s3: %s was written for %s: not stored", key, w->key);
		rc = BW_EBUSY;
		goto out;
	}
	if (w->size > w->part_start) {
		char sha[SHA_HEX];
		unsigned number = w->nparts + 1;

		if ((rc = grow_etags(w, number)) != 0 ||
		    (rc = part_sha(w, sha)) != 0 ||
		    (rc = s3_send_part(s, w, number, w->part_start,
				       w->size - w->part_start, sha,
				       w->etag[number - 1])) != 0)
			goto out;
		w->nparts = number;
	}
	if ((rc = s3_clear_way(s, key, replace, NULL)) != 0)
		goto out;
	rc = s3_upload_complete(s, w);
out:
	s3_w_abort_upload(s, w);
	s3_w_free(w);
	return rc;
}

void
s3_w_abort(struct s3 *s, struct bw_blob_w *w)
{
	struct s3_job *j;
	int now;

	pthread_mutex_lock(&w->mu);
	w->aborted = 1;
	now = w->queued == 0;
	pthread_mutex_unlock(&w->mu);
	if (!now)
		return; /* the last part's job frees w */
	/* even without an upload to abort: closing the spool drops its
	 * pages, which is not for the loop thread */
	if ((j = calloc(1, sizeof(*j))) == NULL) {
		s3_w_free(w); /* the sweep aborts the upload */
		return;
	}
	j->w = w;
	j->number = 0;
	s3_enqueue(s, j);
}
