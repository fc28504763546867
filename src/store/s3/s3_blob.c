/* The S3 backend's table (host/blob.h): a key is an object's name below
 * the configured prefix, holding exactly the bytes stored. Writing is in
 * s3_parts.c; here are the rest: copies (server-side), moves (a copy, then
 * the old key deleted), sizes (HEAD), reads (ranged GETs, each tied to the
 * first's ETag so that a reader never mixes two objects), listings
 * (ListObjectsV2, keys url-encoded) and the check; the sweep is in
 * s3_sweep.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bulwark/hash.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "store/s3/s3_int.h"

#define LIST_BODY_MAX (8u * 1024u * 1024u)

struct bw_blob_r {
	struct s3 *s;
	char key[BW_BLOB_KEY_CAP];
	char etag[S3_ETAG_CAP];
	uint64_t total, pos; /* the object's size; what was fetched */
	uint8_t *buf;
	size_t have, at; /* bytes in buf, of which read */
	int started;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void
curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* --- small requests --------------------------------------------------------
 */

static int
simple(struct s3 *s, const char *method, const char *key, const char **hdr,
       struct s3_call *c)
{
	unsigned i;

	s3_call_init(c, method, key);
	for (i = 0; hdr != NULL && hdr[i] != NULL && i < 3; i++)
		c->hdr[i] = hdr[i];
	c->retry = 1;
	return s3_do(s, c);
}

static int
s3b_size(void *state, const char *key, uint64_t *size)
{
	struct s3_call c;
	int rc = simple(state, "HEAD", key, NULL, &c);

	if (rc == 0)
		*size = c.total;
	s3_call_fini(&c);
	return rc;
}

int
s3_remove(void *state, const char *key)
{
	struct s3_call c;
	char why[160];
	int rc = simple(state, "DELETE", key, NULL, &c);

	if (rc == BW_ENOTFOUND)
		rc = 0;
	if (rc != 0)
		bw_warn("s3: deleting %s: %s", key,
			s3_why(&c, rc, why, sizeof(why)));
	s3_call_fini(&c);
	return rc;
}

static int
s3b_copy(void *state, const char *from, const char *to)
{
	struct s3 *s = state;
	char src[3 * BW_BLOB_KEY_CAP + 1024], hdr[sizeof(src) + 64], why[160];
	const char *hdrs[2] = {hdr, NULL};
	struct s3_call c;
	int rc;

	if ((rc = s3_path(s, from, src, sizeof(src))) != 0)
		return rc;
	if (snprintf(hdr, sizeof(hdr), "x-amz-copy-source: /%s/%s", s->bucket,
		     src) >= (int)sizeof(hdr))
		return BW_ETOOBIG;
	if ((rc = s3_clear_way(s, to, 1, from)) != 0)
		return rc;
	rc = simple(s, "PUT", to, hdrs, &c);
	/* a 200 may still carry an error: the copy failed midway */
	if (rc == 0 && c.resp != NULL &&
	    s3_xml_text(c.resp, c.resp_n, "Code", c.code, sizeof(c.code)) == 0)
		rc = BW_ESERVER;
	if (rc != 0 && rc != BW_ENOTFOUND)
		bw_error("s3: copying %s to %s: %s", from, to,
			 s3_why(&c, rc, why, sizeof(why)));
	s3_call_fini(&c);
	return rc;
}

static int
s3b_move(void *state, const char *from, const char *to)
{
	int rc = s3b_copy(state, from, to);

	if (rc == 0)
		(void)s3_remove(state, from); /* a leftover is swept */
	return rc;
}

/* --- reading ---------------------------------------------------------------
 */

static int
fetch(struct bw_blob_r *r)
{
	char range[64], match[S3_ETAG_CAP + 16], why[160];
	const char *hdr[3] = {range, NULL, NULL};
	struct s3_call c;
	int rc;

	snprintf(range, sizeof(range), "Range: bytes=%llu-%llu",
		 (unsigned long long)r->pos,
		 (unsigned long long)(r->pos + S3_READ_CHUNK - 1));
	if (r->started) {
		snprintf(match, sizeof(match), "If-Match: %s", r->etag);
		hdr[1] = match;
	}
	s3_call_init(&c, "GET", r->key);
	c.hdr[0] = hdr[0];
	c.hdr[1] = hdr[1];
	c.retry = 1;
	c.into = r->buf;
	c.into_cap = S3_READ_CHUNK;
	rc = s3_do(r->s, &c);
	if (rc == BW_ESERVER && c.status == 416 && !r->started) {
		/* an empty object has no byte 0 */
		s3_call_fini(&c);
		r->started = 1;
		r->total = 0;
		r->have = r->at = 0;
		return s3b_size(r->s, r->key, &r->total);
	}
	if (rc == 0 && (c.status != 206 || c.into_n == 0)) {
		if (c.status == 200 && !r->started) {
			/* no range support: the whole answer was the object */
			r->total = c.into_n;
		} else {
			rc = BW_EPROTO;
		}
	}
	if (rc == 0) {
		if (!r->started) {
			r->started = 1;
			snprintf(r->etag, sizeof(r->etag), "%s", c.etag);
			if (c.status == 206)
				r->total = c.total;
		}
		r->have = c.into_n;
		r->at = 0;
		r->pos += c.into_n;
	} else if (rc != BW_ENOTFOUND) {
		bw_error("s3: reading %s: %s", r->key,
			 rc == -ESTALE ? "it was replaced while read"
				       : s3_why(&c, rc, why, sizeof(why)));
	}
	s3_call_fini(&c);
	return rc;
}

static int
s3b_read_open(void *state, const char *key, struct bw_blob_r **out)
{
	struct bw_blob_r *r = calloc(1, sizeof(*r));
	int rc;

	*out = NULL;
	if (r == NULL || (r->buf = malloc(S3_READ_CHUNK)) == NULL) {
		free(r);
		return BW_ENOMEM;
	}
	r->s = state;
	snprintf(r->key, sizeof(r->key), "%s", key);
	if ((rc = fetch(r)) != 0) {
		free(r->buf);
		free(r);
		return rc;
	}
	*out = r;
	return 0;
}

static ssize_t
s3b_read(struct bw_blob_r *r, void *p, size_t n)
{
	int rc;

	if (r->at == r->have) {
		if (r->pos >= r->total)
			return 0;
		if ((rc = fetch(r)) != 0)
			return rc == BW_ENOTFOUND ? -ESTALE : rc;
	}
	if (n > r->have - r->at)
		n = r->have - r->at;
	memcpy(p, r->buf + r->at, n);
	r->at += n;
	return (ssize_t)n;
}

static void
s3b_read_close(struct bw_blob_r *r)
{
	if (r == NULL)
		return;
	free(r->buf);
	free(r);
}

/* --- listing ---------------------------------------------------------------
 */

static int
scratch(const char *key)
{
	const char *p = strstr(key, BW_BLOB_SCRATCH);

	return p != NULL && (p == key || p[-1] == '/');
}

static int
digits(const char *p)
{
	if (*p == '\0' || strlen(p) > 19)
		return 0;
	for (; *p != '\0'; p++)
		if (*p < '0' || *p > '9')
			return 0;
	return 1;
}

/* The body of a listing page: a ListBucketResult whole (its closing tag
 * read: a page cut short is not one), whose keys are url-encoded as asked
 * (a store that ignores encoding-type sends them raw, which would decode
 * into other keys). */
static int
listing_page(const struct s3_call *c, const char **body, size_t *n)
{
	size_t pos = 0, start, len, epos, es, el;
	char enc[16];

	if (s3_xml_span(c->resp, c->resp_n, &pos, "ListBucketResult", &start,
			&len) != 0)
		return BW_EPROTO;
	*body = c->resp + start;
	*n = len;
	epos = 0;
	if (s3_xml_span(*body, *n, &epos, "Contents", &es, &el) == 0 &&
	    (s3_xml_text(*body, *n, "EncodingType", enc, sizeof(enc)) != 0 ||
	     strcmp(enc, "url") != 0))
		return BW_EPROTO;
	return 0;
}

/* The continuation tokens (or markers) a listing was given: one given
 * again would lead round a cycle of pages for ever (a store that
 * misbehaves). */
struct token {
	size_t n;
	char s[];
};

static int
token_free(void *arg, void *val)
{
	(void)arg;
	free(val);
	return 0;
}

void
s3_tokens_free(struct bw_hash *seen)
{
	(void)bw_hash_each(seen, token_free, NULL);
	bw_hash_fini(seen);
}

int
s3_token_new(struct bw_hash *seen, const char *tok)
{
	size_t n = strlen(tok);
	struct token *t;
	int rc;

	if (bw_hash_get(seen, tok, n) != NULL)
		return BW_EPROTO;
	if ((t = malloc(sizeof(*t) + n + 1)) == NULL)
		return BW_ENOMEM;
	t->n = n;
	memcpy(t->s, tok, n + 1);
	if ((rc = bw_hash_put(seen, t->s, n, t)) != 0)
		free(t);
	return rc;
}

/* Every object under prefix (scratch too when all): cb with the key
 * below the store's prefix. A page that is not a whole listing, or an
 * entry that cannot be read, fails the listing: a key left out would be
 * taken for an object that is gone. */
int
s3_list(struct s3 *s, const char *prefix, int all, s3_list_fn cb, void *arg)
{
	char q[8192], pre[3 * 1024], tok[3 * 2048], full[1024];
	/* a key as listed (url-encoded: up to three bytes a byte) */
	char key[3 * (BW_BLOB_KEY_CAP + S3_PREFIX_CAP)], size_s[32], when[64];
	char why[160];
	size_t pos, start, len, plen = strlen(s->prefix), body_n;
	const char *body;
	struct bw_hash seen;
	struct s3_call c;
	int rc = 0, more = 1, qn;
	int64_t t;

	tok[0] = '\0';
	if (snprintf(full, sizeof(full), "%s%s", s->prefix, prefix) >=
		    (int)sizeof(full) ||
	    s3_qenc(full, pre, sizeof(pre)) != 0)
		return BW_ETOOBIG;
	if ((rc = bw_hash_init(&seen)) != 0)
		return rc;
	while (more && rc == 0) {
		qn = tok[0] != '\0'
			     ? snprintf(q, sizeof(q),
					"continuation-token=%s&encoding-type="
					"url&list-type=2&prefix=%s",
					tok, pre)
			     : snprintf(q, sizeof(q),
					"encoding-type=url&list-type=2&"
					"prefix=%s",
					pre);
		if (qn <= 0 || (size_t)qn >= sizeof(q)) {
			rc = BW_ETOOBIG;
			break;
		}
		s3_call_init(&c, "GET", NULL);
		c.query = q;
		c.retry = 1;
		c.resp_max = LIST_BODY_MAX;
		if ((rc = s3_do(s, &c)) != 0 || c.resp == NULL) {
			bw_error("s3: listing %s: %s", full,
				 s3_why(&c, rc, why, sizeof(why)));
			s3_call_fini(&c);
			rc = rc != 0 ? rc : BW_EPROTO;
			break;
		}
		/* a listing is judged whole or not at all: what it leaves
		 * out is taken for gone (a row dropped, an object swept) */
		if ((rc = listing_page(&c, &body, &body_n)) != 0) {
			bw_error("s3: listing %s: not a whole listing of "
				 "url-encoded keys",
				 full);
			s3_call_fini(&c);
			break;
		}
		more = s3_xml_text(body, body_n, "IsTruncated", when,
				   sizeof(when)) == 0 &&
		       strcmp(when, "true") == 0;
		if (more && (s3_xml_text(body, body_n, "NextContinuationToken",
					 key, sizeof(key)) != 0 ||
			     s3_qenc(key, q, sizeof(q)) != 0 ||
			     strlen(q) >= sizeof(tok) ||
			     (rc = s3_token_new(&seen, q)) != 0)) {
			/* a page that leads back to one already read would
			 * be asked for again for ever */
			bw_error("s3: listing %s: a truncated page without a "
				 "new continuation token",
				 full);
			s3_call_fini(&c);
			rc = rc == BW_ENOMEM ? rc : BW_EPROTO;
			break;
		}
		if (more)
			memcpy(tok, q, strlen(q) + 1);
		pos = 0;
		while (rc == 0 && s3_xml_span(body, body_n, &pos, "Contents",
					      &start, &len) == 0) {
			const char *e = body + start;
			int krc = s3_xml_text(e, len, "Key", key, sizeof(key));

			/* encoded longer than three bytes for each of ours and
			 * the prefix's: longer than any key of ours */
			if (krc == BW_ETOOBIG)
				continue;
			if (krc != 0 || s3_url_decode(key) != 0 ||
			    s3_xml_text(e, len, "Size", size_s,
					sizeof(size_s)) != 0 ||
			    !digits(size_s) ||
			    s3_xml_text(e, len, "LastModified", when,
					sizeof(when)) != 0 ||
			    s3_iso_time(when, &t) != 0 ||
			    strncmp(key, s->prefix, plen) != 0) {
				bw_error("s3: listing %s: an entry not "
					 "understood",
					 full);
				rc = BW_EPROTO;
				break;
			}
			if (strlen(key + plen) >= BW_BLOB_KEY_CAP)
				continue; /* longer than any key of ours */
			if (!all && scratch(key + plen))
				continue;
			s3_key_of(key + plen);
			rc = cb(arg, key + plen, strtoull(size_s, NULL, 10), t);
		}
		s3_call_fini(&c);
	}
	s3_tokens_free(&seen);
	return rc;
}

static int
s3b_list(void *state, const char *prefix, s3_list_fn cb, void *arg)
{
	size_t n = strlen(prefix);

	if (n == 0 || prefix[n - 1] != '/')
		return BW_EPROTO;
	return s3_list(state, prefix, 0, cb, arg);
}

/* --- the whole -------------------------------------------------------------
 */

static int
s3b_check(void *state, char *msg, size_t cap)
{
	struct s3 *s = state;
	char q[1024], pre[3 * 300], why[160];
	struct s3_call c;
	int rc;

	if (s3_qenc(s->prefix, pre, sizeof(pre)) != 0)
		return BW_ETOOBIG;
	snprintf(q, sizeof(q), "list-type=2&max-keys=1&prefix=%s", pre);
	s3_call_init(&c, "GET", NULL);
	c.query = q;
	rc = s3_do(s, &c);
	if (rc == 0)
		snprintf(msg, cap, "bucket %s%s%s at %s (region %s)", s->bucket,
			 s->prefix[0] ? ", prefix " : "", s->prefix,
			 s->endpoint, s->region);
	else if (strcmp(c.code, "NoSuchBucket") == 0)
		snprintf(msg, cap, "no such bucket %s at %s", s->bucket,
			 s->endpoint);
	else if (strcmp(c.code, "SignatureDoesNotMatch") == 0)
		snprintf(msg, cap,
			 "%s refused the signature: check the secret key "
			 "and the region (%s)",
			 s->endpoint, s->region);
	else if (strcmp(c.code, "InvalidAccessKeyId") == 0)
		snprintf(msg, cap, "%s does not know the access key",
			 s->endpoint);
	else if (rc == -EACCES)
		snprintf(msg, cap, "%s refused access to bucket %s (%s)",
			 s->endpoint, s->bucket,
			 s3_why(&c, rc, why, sizeof(why)));
	else
		snprintf(msg, cap, "cannot reach bucket %s at %s: %s",
			 s->bucket, s->endpoint,
			 s3_why(&c, rc, why, sizeof(why)));
	s3_call_fini(&c);
	return rc;
}

static void
s3b_close(void *state)
{
	struct s3 *s = state;

	if (s == NULL)
		return;
	s3_uploaders_stop(s); /* sets stopping: the janitor ends too */
	bw_info("s3: %llu requests (%llu tried again, %llu failed), %llu MiB "
		"sent, %llu MiB received",
		(unsigned long long)atomic_load(&s->requests),
		(unsigned long long)atomic_load(&s->retries),
		(unsigned long long)atomic_load(&s->failures),
		(unsigned long long)(atomic_load(&s->bytes_up) >> 20),
		(unsigned long long)(atomic_load(&s->bytes_down) >> 20));
	if (s->janitor_on) {
		pthread_mutex_lock(&s->mu);
		pthread_cond_broadcast(&s->janitor_cv);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->janitor, NULL);
	}
	s3_handles_free(s);
	s3_conf_free(s);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->work);
	pthread_cond_destroy(&s->janitor_cv);
	free(s);
}

static int
s3b_open(const struct bw_blob_conf *conf, const char *where, void **state)
{
	struct s3 *s = calloc(1, sizeof(*s));
	int rc;

	*state = NULL;
	if (s == NULL)
		return BW_ENOMEM;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->work, NULL);
	pthread_cond_init(&s->janitor_cv, NULL);
	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK) {
		bw_error("s3: libcurl: %s", curl_easy_strerror(curl_init_rc));
		s3b_close(s);
		return BW_ECONFIG;
	}
	if ((rc = s3_conf(s, conf, where)) != 0 ||
	    (rc = s3_uploaders_start(s)) != 0) {
		s3b_close(s);
		return rc;
	}
	bw_info("s3: contents in bucket %s%s%s at %s (region %s, %s)",
		s->bucket, s->prefix[0] ? ", prefix " : "", s->prefix,
		s->endpoint, s->region,
		s->path_style ? "path-style" : "virtual-hosted");
	*state = s;
	return 0;
}

static int
s3b_create(void *state, const char *space, const char *key,
	   struct bw_blob_w **w)
{
	return s3_w_create(state, space, key, w);
}

static int
s3b_put(void *state, struct bw_blob_w *w, const char *key, int replace)
{
	return s3_w_put(state, w, key, replace);
}

static void
s3b_abort(void *state, struct bw_blob_w *w)
{
	s3_w_abort(state, w);
}

const struct bw_blob_backend bw_blob_s3 = {
	.scheme = "s3",
	.open = s3b_open,
	.close = s3b_close,
	.check = s3b_check,
	.create = s3b_create,
	.write = s3_w_write,
	.put = s3b_put,
	.abort = s3b_abort,
	.copy = s3b_copy,
	.move = s3b_move,
	.remove = s3_remove,
	.size = s3b_size,
	.read_open = s3b_read_open,
	.read = s3b_read,
	.read_close = s3b_read_close,
	.list = s3b_list,
	.sweep = s3_sweep,
	.stats = s3_stats,
};
