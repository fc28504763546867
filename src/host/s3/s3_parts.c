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
#include "host/s3/s3_int.h"

#define SHA_HEX (2 * BW_SHA256_LEN + 1)

struct bw_blob_w {
	struct s3 *s;
	int fd;			   /* the spool */
	uint64_t size;		   /* bytes written */
	uint64_t part_start;	   /* the part not sent yet starts here */
	struct bw_sha256_ctx *sha; /* of [part_start, size) */
	char key[BW_BLOB_KEY_CAP]; /* where the parts go */
	char upload_id[S3_ID_CAP]; /* "" until there is a part to send */

	pthread_mutex_t mu;
	pthread_cond_t cv;	   /* a part done, or a write */
	uint64_t next_off;	   /* the write hashed next starts here */
	unsigned queued;	   /* parts handed over, not done */
	unsigned nparts;	   /* parts numbered */
	char (*etag)[S3_ETAG_CAP]; /* each part's, by number - 1 */
	size_t etag_cap;
	int err;     /* a part's failure */
	int aborted; /* the last job frees */
};

struct s3_job {
	struct s3_job *next;
	struct bw_blob_w *w;
	unsigned number; /* 0: abort the upload, free w */
	uint64_t off, len;
	char sha[SHA_HEX];
};

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

static void
w_free(struct bw_blob_w *w)
{
	if (w->fd >= 0)
		close(w->fd);
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
	if ((rc = spool_open(s, &w->fd)) != 0 ||
	    (rc = bw_sha256_new(&w->sha)) != 0) {
		if (rc != BW_ENOMEM && rc != BW_ECRYPTO)
			bw_error("s3: cannot spool in %s: %s", s->spool,
				 bw_strerror(rc));
		w_free(w);
		return rc;
	}
	*out = w;
	return 0;
}

/* --- requests about an upload ---------------------------------------------
 */

static int
query(char *out, size_t cap, const char *id, unsigned number)
{
	char enc[3 * S3_ID_CAP];
	int n;

	if (s3_qenc(id, enc, sizeof(enc)) != 0)
		return BW_ETOOBIG;
	n = number > 0 ? snprintf(out, cap, "partNumber=%u&uploadId=%s", number,
				  enc)
		       : snprintf(out, cap, "uploadId=%s", enc);
	return n > 0 && (size_t)n < cap ? 0 : BW_ETOOBIG;
}

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
	s3_call_fini(&c);
	return rc;
}

/* The upload is given up: told to S3 (else the sweep will). */
static void
abort_upload(struct s3 *s, struct bw_blob_w *w)
{
	struct s3_call c;
	char q[3 * S3_ID_CAP + 32], why[160];
	int rc;

	if (w->upload_id[0] == '\0' || query(q, sizeof(q), w->upload_id, 0))
		return;
	s3_call_init(&c, "DELETE", w->key);
	c.query = q;
	c.retry = 1;
	if ((rc = s3_do(s, &c)) != 0 && rc != BW_ENOTFOUND)
		bw_warn("s3: aborting the upload of %s: %s (the sweep will)",
			w->key, s3_why(&c, rc, why, sizeof(why)));
	s3_call_fini(&c);
	w->upload_id[0] = '\0';
}

static int
send_part(struct s3 *s, struct bw_blob_w *w, unsigned number, uint64_t off,
	  uint64_t len, const char *sha, char *etag)
{
	struct s3_call c;
	char q[3 * S3_ID_CAP + 32], why[160];
	int rc;

	if ((rc = query(q, sizeof(q), w->upload_id, number)) != 0)
		return rc;
	s3_call_init(&c, "PUT", w->key);
	c.query = q;
	c.fd = w->fd;
	c.off = off;
	c.len = len;
	c.sha_hex = sha;
	c.retry = 1;
	if ((rc = s3_do(s, &c)) == 0 && c.etag[0] == '\0')
		rc = BW_EPROTO;
	if (rc == 0)
		memcpy(etag, c.etag, S3_ETAG_CAP);
	else
		bw_error("s3: part %u of %s: %s", number, w->key,
			 s3_why(&c, rc, why, sizeof(why)));
	s3_call_fini(&c);
	return rc;
}

/* --- the uploader threads --------------------------------------------------
 */

static void
run_job(struct s3 *s, struct s3_job *j)
{
	struct bw_blob_w *w = j->w;
	char etag[S3_ETAG_CAP];
	int rc = 0, skip, last;

	if (j->number == 0) { /* an abort */
		abort_upload(s, w);
		w_free(w);
		free(j);
		return;
	}
	pthread_mutex_lock(&w->mu);
	skip = w->aborted || w->err != 0;
	pthread_mutex_unlock(&w->mu);
	if (!skip) {
		rc = send_part(s, w, j->number, j->off, j->len, j->sha, etag);
		/* the part is S3's now: its spool space goes */
		if (rc == 0)
			(void)fallocate(w->fd,
					FALLOC_FL_PUNCH_HOLE |
						FALLOC_FL_KEEP_SIZE,
					(off_t)j->off, (off_t)j->len);
	}
	pthread_mutex_lock(&w->mu);
	if (rc == 0 && !skip)
		memcpy(w->etag[j->number - 1], etag, S3_ETAG_CAP);
	else if (rc != 0 && w->err == 0)
		w->err = rc;
	w->queued--;
	last = w->aborted && w->queued == 0;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	free(j);
	if (last) {
		abort_upload(s, w);
		w_free(w);
	}
}

static void *
uploader(void *arg)
{
	struct s3 *s = arg;
	struct s3_job *j;

	for (;;) {
		pthread_mutex_lock(&s->mu);
		while (s->head == NULL && !s->stopping)
			pthread_cond_wait(&s->work, &s->mu);
		if ((j = s->head) == NULL) {
			pthread_mutex_unlock(&s->mu);
			return NULL;
		}
		s->head = j->next;
		if (s->head == NULL)
			s->tail = NULL;
		pthread_mutex_unlock(&s->mu);
		run_job(s, j);
	}
}

static void
enqueue(struct s3 *s, struct s3_job *j)
{
	pthread_mutex_lock(&s->mu);
	j->next = NULL;
	if (s->tail != NULL)
		s->tail->next = j;
	else
		s->head = j;
	s->tail = j;
	pthread_cond_signal(&s->work);
	pthread_mutex_unlock(&s->mu);
}

int
s3_uploaders_start(struct s3 *s)
{
	int rc;

	for (s->n_th = 0; s->n_th < S3_UPLOADERS; s->n_th++) {
		if ((rc = pthread_create(&s->th[s->n_th], NULL, uploader, s)) !=
		    0) {
			s3_uploaders_stop(s);
			return -rc;
		}
	}
	return 0;
}

/* The queue is run to its end first: aborts still go to S3. */
void
s3_uploaders_stop(struct s3 *s)
{
	unsigned i;

	pthread_mutex_lock(&s->mu);
	s->stopping = 1;
	pthread_cond_broadcast(&s->work);
	pthread_mutex_unlock(&s->mu);
	for (i = 0; i < s->n_th; i++)
		pthread_join(s->th[i], NULL);
	s->n_th = 0;
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
	enqueue(s, j);
	w->part_start = w->size;
	return 0;
}

/* Two writes of an object may run at once (a writer with two buffers in
 * flight): each goes to the spool at its offset at once, then waits for
 * the ones before it, so that the parts are hashed and sent in order. */
int
s3_w_write(struct bw_blob_w *w, uint64_t off, const void *p, size_t n)
{
	const uint8_t *b = p;
	size_t done = 0, take;
	ssize_t got;
	int rc = 0;

	while (done < n) {
		got = pwrite(w->fd, b + done, n - done, (off_t)(off + done));
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			rc = got < 0 ? -errno : -EIO;
			break;
		}
		done += (size_t)got;
	}
	pthread_mutex_lock(&w->mu);
	while (rc == 0 && w->err == 0 && w->next_off < off)
		pthread_cond_wait(&w->cv, &w->mu);
	if (rc == 0 && w->next_off != off)
		rc = w->err != 0 ? w->err : BW_EPROTO;
	pthread_mutex_unlock(&w->mu);
	while (rc == 0 && n > 0) {
		take = S3_PART - (size_t)(w->size - w->part_start);
		if (take > n)
			take = n;
		if ((rc = bw_sha256_update(w->sha, b, take)) != 0)
			break;
		w->size += take;
		b += take;
		n -= take;
		if (w->size - w->part_start == S3_PART)
			rc = queue_part(w->s, w);
	}
	pthread_mutex_lock(&w->mu);
	if (rc != 0 && w->err == 0)
		w->err = rc;
	else if (rc == 0)
		w->next_off = off + done;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	return rc;
}

/* --- the put ---------------------------------------------------------------
 */

static int
exists(struct s3 *s, const char *key)
{
	struct s3_call c;
	int rc;

	s3_call_init(&c, "HEAD", key);
	c.retry = 1;
	rc = s3_do(s, &c);
	s3_call_fini(&c);
	return rc == 0 ? BW_EEXIST : rc == BW_ENOTFOUND ? 0 : rc;
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
	c.fd = w->fd;
	c.off = 0;
	c.len = w->size;
	c.sha_hex = sha;
	c.retry = 1;
	if ((rc = s3_do(s, &c)) != 0)
		bw_error("s3: storing %s: %s", key,
			 s3_why(&c, rc, why, sizeof(why)));
	s3_call_fini(&c);
	return rc;
}

static int
complete(struct s3 *s, struct bw_blob_w *w)
{
	size_t cap = 128 + (size_t)w->nparts * (S3_ETAG_CAP + 64), n;
	char q[3 * S3_ID_CAP + 32], why[160], *xml = malloc(cap);
	struct s3_call c;
	unsigned i;
	int rc;

	if (xml == NULL)
		return BW_ENOMEM;
	if ((rc = query(q, sizeof(q), w->upload_id, 0)) != 0) {
		free(xml);
		return rc;
	}
	n = (size_t)snprintf(xml, cap, "<CompleteMultipartUpload>");
	for (i = 0; i < w->nparts && n < cap; i++)
		n += (size_t)snprintf(xml + n, cap - n,
				      "<Part><PartNumber>%u</PartNumber>"
				      "<ETag>%s</ETag></Part>",
				      i + 1, w->etag[i]);
	if (n < cap)
		n += (size_t)snprintf(xml + n, cap - n,
				      "</CompleteMultipartUpload>");
	if (n >= cap) {
		free(xml);
		return BW_ETOOBIG;
	}
	s3_call_init(&c, "POST", w->key);
	c.query = q;
	c.body = (const uint8_t *)xml;
	c.body_n = n;
	c.hdr[0] = "Content-Type: application/xml";
	c.retry = 1;
	rc = s3_do(s, &c);
	/* a 200 whose body is an error: S3 failed after it began to answer */
	if (rc == 0 && c.resp != NULL &&
	    s3_xml_text(c.resp, c.resp_n, "Code", c.code, sizeof(c.code)) == 0)
		rc = BW_ESERVER;
	if (rc == BW_ENOTFOUND && strcmp(c.code, "NoSuchUpload") == 0) {
		/* a retry after a completion whose answer was lost? */
		struct s3_call h;

		s3_call_init(&h, "HEAD", w->key);
		h.retry = 1;
		if (s3_do(s, &h) == 0 && h.total == w->size)
			rc = 0;
		s3_call_fini(&h);
	}
	if (rc != 0)
		bw_error("s3: completing %s: %s", w->key,
			 s3_why(&c, rc, why, sizeof(why)));
	else
		w->upload_id[0] = '\0'; /* nothing to abort any more */
	s3_call_fini(&c);
	free(xml);
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
		if (!replace && (rc = exists(s, key)) != 0)
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
		    (rc = send_part(s, w, number, w->part_start,
				    w->size - w->part_start, sha,
				    w->etag[number - 1])) != 0)
			goto out;
		w->nparts = number;
	}
	if (!replace && (rc = exists(s, key)) != 0)
		goto out;
	rc = complete(s, w);
out:
	abort_upload(s, w);
	w_free(w);
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
		w_free(w); /* the sweep aborts the upload */
		return;
	}
	j->w = w;
	j->number = 0;
	enqueue(s, j);
}

/* --- stale uploads ---------------------------------------------------------
 */

int
s3_abort_stale(struct s3 *s, const char *prefix, int64_t before_s, unsigned *n)
{
	char q[4096], pre[1024], km[3 * BW_BLOB_KEY_CAP], im[3 * S3_ID_CAP];
	char key[BW_BLOB_KEY_CAP + 256], why[160], when[64];
	struct bw_blob_w dead;
	size_t pos, start, len, plen = strlen(s->prefix);
	struct s3_call c;
	int64_t t;
	int rc, more = 1, qn;

	*n = 0;
	km[0] = im[0] = '\0';
	if (snprintf(key, sizeof(key), "%s%s", s->prefix, prefix) >=
		    (int)sizeof(key) ||
	    s3_qenc(key, pre, sizeof(pre)) != 0)
		return BW_ETOOBIG;
	while (more) {
		qn = km[0] != '\0' ? snprintf(q, sizeof(q),
					      "key-marker=%s&prefix=%s&"
					      "upload-id-marker=%s&uploads=",
					      km, pre, im)
				   : snprintf(q, sizeof(q),
					      "prefix=%s&uploads=", pre);
		if (qn <= 0 || (size_t)qn >= sizeof(q))
			return BW_ETOOBIG;
		s3_call_init(&c, "GET", NULL);
		c.query = q;
		c.retry = 1;
		c.resp_max = 4u * 1024u * 1024u;
		if ((rc = s3_do(s, &c)) != 0) {
			bw_warn("s3: listing the uploads under %s: %s", key,
				s3_why(&c, rc, why, sizeof(why)));
			s3_call_fini(&c);
			return rc;
		}
		pos = 0;
		more = c.resp != NULL &&
		       s3_xml_text(c.resp, c.resp_n, "IsTruncated", when,
				   sizeof(when)) == 0 &&
		       strcmp(when, "true") == 0;
		while (c.resp != NULL &&
		       s3_xml_span(c.resp, c.resp_n, &pos, "Upload", &start,
				   &len) == 0) {
			const char *u = c.resp + start;

			memset(&dead, 0, sizeof(dead));
			if (s3_xml_text(u, len, "Key", key, sizeof(key)) != 0 ||
			    s3_xml_text(u, len, "UploadId", dead.upload_id,
					sizeof(dead.upload_id)) != 0 ||
			    s3_xml_text(u, len, "Initiated", when,
					sizeof(when)) != 0 ||
			    s3_iso_time(when, &t) != 0)
				continue;
			if (s3_qenc(key, km, sizeof(km)) != 0 ||
			    s3_qenc(dead.upload_id, im, sizeof(im)) != 0)
				more = 0;
			if (t >= before_s || strncmp(key, s->prefix, plen) != 0)
				continue;
			snprintf(dead.key, sizeof(dead.key), "%s", key + plen);
			abort_upload(s, &dead);
			bw_info("s3: aborted an upload of %s abandoned since "
				"%s",
				dead.key, when);
			(*n)++;
		}
		s3_call_fini(&c);
	}
	return 0;
}
