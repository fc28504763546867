/* One S3 request over libcurl: the URL (path-style or virtual-hosted),
 * the signature (CURLOPT_AWS_SIGV4, the access key through
 * CURLOPT_USERNAME so that one holding a colon works), the payload's
 * SHA-256, the body from memory or a range of the spool, the answer's
 * status, ETag, size, time and error code, and retries with backoff on
 * transient errors for requests that may be repeated.
 *
 * Easy handles are reused (their connections with them) through a small
 * pool shared by the threads.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bulwark/log.h"
#include "bulwark/util.h"
#include "store/s3/s3_int.h"

#define CONNECT_TIMEOUT_MS 5000L
#define LOW_SPEED_BYTES                                                        \
	1024L /* a transfer slower than this for                               \
	       * --s3-timeout is given up */
#define BACKOFF_MS 200u
#define EMPTY_SHA                                                              \
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

void
s3_call_init(struct s3_call *c, const char *method, const char *key)
{
	memset(c, 0, sizeof(*c));
	c->method = method;
	c->key = key;
	c->fd = -1;
	c->resp_max = S3_ERR_BODY;
}

void
s3_call_fini(struct s3_call *c)
{
	free(c->resp);
	c->resp = NULL;
	c->resp_n = 0;
}

/* --- handles -------------------------------------------------------------
 */

static CURL *
handle_get(struct s3 *s)
{
	CURL *h = NULL;

	pthread_mutex_lock(&s->mu);
	if (s->n_idle > 0)
		h = s->idle[--s->n_idle];
	pthread_mutex_unlock(&s->mu);
	if (h == NULL)
		h = curl_easy_init();
	else
		curl_easy_reset(h); /* keeps the connection */
	return h;
}

static void
handle_put(struct s3 *s, CURL *h)
{
	pthread_mutex_lock(&s->mu);
	if (s->n_idle < S3_IDLE_CAP && !s->stopping) {
		s->idle[s->n_idle++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&s->mu);
	if (h != NULL)
		curl_easy_cleanup(h);
}

void
s3_handles_free(struct s3 *s)
{
	while (s->n_idle > 0)
		curl_easy_cleanup(s->idle[--s->n_idle]);
}

/* --- the URL ---------------------------------------------------------------
 */

static int
unreserved(unsigned char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
	       (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
	       ch == '.' || ch == '~';
}

static int
encode(const char *in, char *out, size_t cap, size_t *at)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p = (const unsigned char *)in;

	for (; *p != '\0'; p++) {
		if (*at + 4 > cap)
			return BW_ETOOBIG;
		if (unreserved(*p) || *p == '/') {
			out[(*at)++] = (char)*p;
		} else {
			out[(*at)++] = '%';
			out[(*at)++] = hex[*p >> 4];
			out[(*at)++] = hex[*p & 15];
		}
	}
	out[*at] = '\0';
	return 0;
}

int
s3_qenc(const char *v, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p = (const unsigned char *)v;
	size_t at = 0;

	for (; *p != '\0'; p++) {
		if (at + 4 > cap)
			return BW_ETOOBIG;
		if (unreserved(*p)) {
			out[at++] = (char)*p;
		} else {
			out[at++] = '%';
			out[at++] = hex[*p >> 4];
			out[at++] = hex[*p & 15];
		}
	}
	if (at >= cap)
		return BW_ETOOBIG;
	out[at] = '\0';
	return 0;
}

int
s3_path(const struct s3 *s, const char *key, char *out, size_t cap)
{
	char name[3 * BW_BLOB_KEY_CAP];
	size_t at = 0;
	int rc;

	if (cap == 0)
		return BW_ETOOBIG;
	out[0] = '\0';
	if ((rc = encode(s->prefix, out, cap, &at)) != 0 ||
	    (rc = s3_name_of(key, name, sizeof(name))) != 0)
		return rc;
	return encode(name, out, cap, &at);
}

static char *
make_url(const struct s3 *s, const struct s3_call *c)
{
	size_t cap = strlen(s->endpoint) + strlen(s->bucket) + 3 * 1024 +
		     (c->query != NULL ? strlen(c->query) : 0) + 16;
	char *url = malloc(cap), path[3 * 1024];
	const char *rest;
	int n;

	if (url == NULL)
		return NULL;
	path[0] = '\0';
	if (c->key != NULL && s3_path(s, c->key, path, sizeof(path)) != 0) {
		free(url);
		return NULL;
	}
	if (s->path_style) {
		n = snprintf(url, cap, "%s/%s%s%s", s->endpoint, s->bucket,
			     c->key != NULL ? "/" : "", path);
	} else {
		rest = strstr(s->endpoint, "://");
		rest = rest != NULL ? rest + 3 : s->endpoint;
		n = snprintf(url, cap, "%.*s%s.%s/%s",
			     (int)(rest - s->endpoint), s->endpoint, s->bucket,
			     rest, path);
	}
	if (n > 0 && c->query != NULL && (size_t)n < cap)
		n += snprintf(url + n, cap - (size_t)n, "?%s", c->query);
	if (n < 0 || (size_t)n >= cap) {
		free(url);
		return NULL;
	}
	return url;
}

/* --- callbacks -------------------------------------------------------------
 */

struct xfer {
	struct s3_call *c;
	uint64_t sent;
	int overflow;
};

static size_t
on_read(char *buf, size_t size, size_t nitems, void *arg)
{
	struct xfer *x = arg;
	struct s3_call *c = x->c;
	size_t want = size * nitems;
	uint64_t left;
	ssize_t got;

	if (c->fd >= 0) {
		left = c->len - x->sent;
		if (want > left)
			want = (size_t)left;
		if (want == 0)
			return 0;
		do {
			got = pread(c->fd, buf, want,
				    (off_t)(c->off + x->sent));
		} while (got < 0 && errno == EINTR);
		if (got <= 0)
			return CURL_READFUNC_ABORT;
		x->sent += (uint64_t)got;
		return (size_t)got;
	}
	left = c->body_n - x->sent;
	if (want > left)
		want = (size_t)left;
	if (want == 0) /* the end, or an empty body (NULL) */
		return 0;
	memcpy(buf, c->body + x->sent, want);
	x->sent += want;
	return want;
}

static size_t
on_write(char *buf, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	struct s3_call *c = x->c;
	size_t n = size * nmemb;
	char *grown;

	if (c->into != NULL && c->status / 100 == 2) {
		if (n > c->into_cap - c->into_n) {
			x->overflow = 1;
			return 0;
		}
		memcpy(c->into + c->into_n, buf, n);
		c->into_n += n;
		return n;
	}
	if (n > c->resp_max - c->resp_n) {
		x->overflow = 1;
		return 0;
	}
	if ((grown = realloc(c->resp, c->resp_n + n + 1)) == NULL)
		return 0;
	c->resp = grown;
	memcpy(c->resp + c->resp_n, buf, n);
	c->resp_n += n;
	c->resp[c->resp_n] = '\0';
	return n;
}

static int
header_is(const char *line, size_t n, const char *name, const char **value,
	  size_t *vn)
{
	size_t k = strlen(name);

	if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':')
		return 0;
	line += k + 1;
	n -= k + 1;
	while (n > 0 && (*line == ' ' || *line == '\t')) {
		line++;
		n--;
	}
	while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n' ||
			 line[n - 1] == ' '))
		n--;
	*value = line;
	*vn = n;
	return 1;
}

static size_t
on_header(char *buf, size_t size, size_t nitems, void *arg)
{
	struct xfer *x = arg;
	struct s3_call *c = x->c;
	size_t n = size * nitems, vn;
	const char *v, *slash;
	char tmp[128];

	if (n > 5 && strncmp(buf, "HTTP/", 5) == 0) {
		/* a new response (after a 100 Continue): start over */
		c->status = 0;
		c->etag[0] = '\0';
		c->total = 0;
		c->status = s3_status_line(buf, n); /* buf is not a string */
	} else if (header_is(buf, n, "ETag", &v, &vn) && vn < S3_ETAG_CAP) {
		memcpy(c->etag, v, vn);
		c->etag[vn] = '\0';
	} else if (header_is(buf, n, "Content-Range", &v, &vn) &&
		   vn < sizeof(tmp)) {
		memcpy(tmp, v, vn);
		tmp[vn] = '\0';
		if ((slash = strrchr(tmp, '/')) != NULL)
			c->total = strtoull(slash + 1, NULL, 10);
	} else if (header_is(buf, n, "Content-Length", &v, &vn) &&
		   vn < sizeof(tmp) && c->total == 0) {
		memcpy(tmp, v, vn);
		tmp[vn] = '\0';
		c->total = strtoull(tmp, NULL, 10);
	} else if (header_is(buf, n, "Last-Modified", &v, &vn) &&
		   vn < sizeof(tmp)) {
		memcpy(tmp, v, vn);
		tmp[vn] = '\0';
		c->mtime = (int64_t)curl_getdate(tmp, NULL);
	}
	return n;
}

/* --- the request -----------------------------------------------------------
 */

static int
transient(const struct s3_call *c, CURLcode cc)
{
	switch (cc) {
	case CURLE_OK:
		break;
	case CURLE_COULDNT_CONNECT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_PARTIAL_FILE:
	case CURLE_COULDNT_RESOLVE_HOST:
		return 1;
	default:
		return 0;
	}
	return c->status >= 500 || c->status == 429 ||
	       strcmp(c->code, "RequestTimeout") == 0 ||
	       strcmp(c->code, "SlowDown") == 0 ||
	       strcmp(c->code, "InternalError") == 0;
}

static int
result(const struct s3_call *c, CURLcode cc)
{
	if (cc == CURLE_OPERATION_TIMEDOUT)
		return BW_ETIMEDOUT;
	if (cc != CURLE_OK)
		return -EIO;
	if (c->status / 100 == 2)
		return 0;
	switch (c->status) {
	case 404:
		return BW_ENOTFOUND;
	case 403:
		return -EACCES;
	case 412:
		return -ESTALE;
	default:
		return BW_ESERVER;
	}
}

static struct curl_slist *
headers(const struct s3 *s, const struct s3_call *c, const char *sha)
{
	struct curl_slist *l = NULL, *t;
	char line[160 + S3_ETAG_CAP];
	unsigned i;

	snprintf(line, sizeof(line), "x-amz-content-sha256: %s", sha);
	/* (no "Expect:" to save the 100-continue round trip: libcurl
	 * would sign the header it then leaves out) */
	if ((l = curl_slist_append(l, line)) == NULL)
		return NULL;
	if (s->token != NULL) {
		size_t n = strlen(s->token) + 32;
		char *tl = malloc(n);

		if (tl == NULL)
			goto fail;
		snprintf(tl, n, "x-amz-security-token: %s", s->token);
		t = curl_slist_append(l, tl);
		free(tl);
		if (t == NULL)
			goto fail;
		l = t;
	}
	for (i = 0; i < 3 && c->hdr[i] != NULL; i++) {
		if ((t = curl_slist_append(l, c->hdr[i])) == NULL)
			goto fail;
		l = t;
	}
	return l;
fail:
	curl_slist_free_all(l);
	return NULL;
}

static CURLcode
attempt(struct s3 *s, CURL *h, struct s3_call *c, const char *url,
	struct curl_slist *hl)
{
	struct xfer x = {c, 0, 0};
	uint64_t len = c->fd >= 0 ? c->len : c->body_n, t0;
	CURLcode cc;

	c->status = 0;
	c->etag[0] = '\0';
	c->code[0] = '\0';
	c->total = 0;
	c->mtime = 0;
	c->into_n = 0;
	free(c->resp);
	c->resp = NULL;
	c->resp_n = 0;
	c->curl_err[0] = '\0';
	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
	curl_easy_setopt(h, CURLOPT_USERNAME, s->access);
	curl_easy_setopt(h, CURLOPT_PASSWORD, s->secret);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
			 CONNECT_TIMEOUT_MS < (long)s->timeout_ms
				 ? CONNECT_TIMEOUT_MS
				 : (long)s->timeout_ms);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, LOW_SPEED_BYTES);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME,
			 (long)(s->timeout_ms + 999u) / 1000L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->curl_err);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	/* the body follows the headers at once: waiting for a 100 Continue
	 * costs a round trip per part (the spool can always resend) */
	curl_easy_setopt(h, CURLOPT_EXPECT_100_TIMEOUT_MS, 0L);
	if (strcmp(c->method, "HEAD") == 0) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (strcmp(c->method, "PUT") == 0) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, &x);
	} else if (strcmp(c->method, "POST") == 0) {
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)len);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, &x);
	} else if (strcmp(c->method, "GET") != 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, c->method);
	}
	t0 = bw_now_ms();
	cc = curl_easy_perform(h);
	atomic_fetch_add(&s->request_ms, bw_now_ms() - t0);
	if (cc == CURLE_WRITE_ERROR && x.overflow)
		snprintf(c->curl_err, sizeof(c->curl_err),
			 "the answer is longer than expected");
	if (cc == CURLE_OK && c->status / 100 != 2 && c->resp != NULL &&
	    s3_xml_text(c->resp, c->resp_n, "Code", c->code, sizeof(c->code)) !=
		    0)
		c->code[0] = '\0';
	atomic_fetch_add(&s->requests, 1);
	if (cc == CURLE_OK) {
		atomic_fetch_add(&s->bytes_up, len);
		atomic_fetch_add(&s->bytes_down, c->into_n + c->resp_n);
	}
	return cc;
}

int
s3_do(struct s3 *s, struct s3_call *c)
{
	uint8_t digest[BW_SHA256_LEN];
	char sha[2 * BW_SHA256_LEN + 1], *url;
	struct curl_slist *hl = NULL;
	unsigned tries = 0, delay;
	uint64_t start = bw_now_ms();
	CURLcode cc = CURLE_OK;
	CURL *h;
	int rc;

	if (c->sha_hex != NULL) {
		snprintf(sha, sizeof(sha), "%s", c->sha_hex);
	} else if (c->body != NULL && c->body_n > 0) {
		if ((rc = bw_sha256(c->body, c->body_n, digest)) != 0)
			return rc;
		bw_hex_encode(digest, sizeof(digest), sha);
	} else {
		snprintf(sha, sizeof(sha), "%s", EMPTY_SHA);
	}
	if ((url = make_url(s, c)) == NULL)
		return BW_ETOOBIG;
	if ((hl = headers(s, c, sha)) == NULL || (h = handle_get(s)) == NULL) {
		curl_slist_free_all(hl);
		free(url);
		return BW_ENOMEM;
	}
	for (;;) {
		cc = attempt(s, h, c, url, hl);
		tries++;
		if (!c->retry || tries >= S3_TRIES || !transient(c, cc))
			break;
		delay = BACKOFF_MS << (tries - 1);
		delay += (unsigned)(bw_now_ms() % (delay / 2 + 1));
		/* past --s3-timeout, or the next try would start past it: the
		 * caller's client has waited long enough */
		if (bw_now_ms() + delay - start >= s->timeout_ms) {
			bw_warn("s3: %s %s given up after %llu ms "
				"(--s3-timeout)",
				c->method, c->key != NULL ? c->key : "(bucket)",
				(unsigned long long)(bw_now_ms() - start));
			break;
		}
		atomic_fetch_add(&s->retries, 1);
		bw_debug("s3: %s %s: %s; again in %u ms", c->method,
			 c->key != NULL ? c->key : "(bucket)",
			 cc != CURLE_OK ? curl_easy_strerror(cc)
					: (c->code[0] ? c->code : "5xx"),
			 delay);
		(void)usleep(delay * 1000u);
	}
	rc = result(c, cc);
	if (rc == 0 || c->status != 0) {
		if (atomic_exchange(&s->down_logged, 0))
			bw_info("s3: %s answers again", s->endpoint);
	} else if (!atomic_exchange(&s->down_logged, 1)) {
		bw_error("s3: %s does not answer: %s", s->endpoint,
			 c->curl_err[0] ? c->curl_err : curl_easy_strerror(cc));
	}
	if (rc != 0 && rc != BW_ENOTFOUND)
		atomic_fetch_add(&s->failures, 1);
	handle_put(s, h);
	curl_slist_free_all(hl);
	free(url);
	return rc;
}

const char *
s3_why(const struct s3_call *c, int rc, char *buf, size_t cap)
{
	if (c->status != 0)
		snprintf(buf, cap, "HTTP %ld%s%s", c->status,
			 c->code[0] ? " " : "", c->code);
	else if (c->curl_err[0] != '\0')
		snprintf(buf, cap, "%s", c->curl_err);
	else
		snprintf(buf, cap, "%s", bw_strerror(rc));
	return buf;
}
