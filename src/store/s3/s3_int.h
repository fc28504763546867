/* Internal to src/host/s3/: the S3 backend of the blob table (host/blob.h),
 * the only code that includes curl/curl.h. Requests are signed by libcurl
 * (CURLOPT_AWS_SIGV4) with the payload's SHA-256 in x-amz-content-sha256,
 * which libcurl does not add by itself.
 *
 * Every operation blocks its caller (a loop worker), never the loop. An
 * object being written is kept in memory while it is at most S3_MEM_MAX
 * (a small file is one PUT from there: no file is made for it), and once
 * it grows past that, spooled to an unlinked file in the data directory
 * and sent as it grows: once a part's worth (s3_part_size) is there,
 * it goes to the backend's uploader threads as one part of a multipart
 * upload, at most S3_PARTS_AHEAD parts of an object ahead of its writer,
 * whose write then waits (the socket behind it is not read meanwhile). A
 * sent part's bytes are punched out of the spool. Memory does not grow
 * with the uploads past S3_MEM_MAX each: the parts are read from the spool
 * by libcurl in its own buffers; the spool's disk is a few parts per object
 * being written.
 */
#ifndef BULWARK_HOST_S3_INT_H
#define BULWARK_HOST_S3_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "bulwark/crypto.h"
#include "bulwark/hash.h"
#include "store/blob.h"

/* Parts grow with the object: S3_PART for the first four (S3's smallest
 * is 5 MiB), twice that for the next four, then S3_PART_MAX. Each part
 * is a request with a fixed cost at the store (Swift spends about 40 ms
 * of CPU on one; S3 bills per request): a 1 GiB upload is 37 parts, not
 * 128, while a small object's spool stays at 8 MiB parts. */
#define S3_PART	       (8u * 1024u * 1024u)
#define S3_PART_MAX    (4u * S3_PART)
#define S3_MEM_MAX     (64u * 1024u) /* an object kept in memory */
#define S3_MAX_PARTS   10000u	     /* S3's limit */
#define S3_PARTS_AHEAD 2u	     /* per object, sent or being sent */
#define S3_UPLOADERS   4u
#define S3_TRIES       4u  /* an idempotent request, on a transient error */
#define S3_IDLE_CAP    32u /* easy handles kept for their connections */
#define S3_ETAG_CAP    128
#define S3_ID_CAP      1024 /* an upload id */
#define S3_ERR_BODY    (64u * 1024u)
#define S3_READ_CHUNK  (256u * 1024u) /* a ranged GET */

/* The size of part NUMBER (from 1) of an upload: every part but the last
 * is exactly this long. */
static inline size_t
s3_part_size(unsigned number)
{
	return number <= 4 ? S3_PART : number <= 8 ? 2u * S3_PART : S3_PART_MAX;
}

struct s3_job;

struct s3 {
	char *endpoint; /* scheme://host[:port], no '/' at the end */
	char *bucket;
	char *prefix; /* "" or ending in '/' */
	char region[64];
	char sigv4[96]; /* "aws:amz:REGION:s3" */
	char *access, *secret, *token;
	int path_style;
	char *spool; /* where spool files go (the data directory) */
	uint32_t grace_s;
	uint32_t timeout_ms; /* --s3-timeout: a request's, tries included */

	pthread_mutex_t mu; /* the idle handles and the job queue */
	CURL *idle[S3_IDLE_CAP];
	unsigned n_idle;
	pthread_cond_t work; /* a job queued, or stopping */
	struct s3_job *head, *tail;
	int stopping;
	pthread_t th[S3_UPLOADERS];
	unsigned n_th;
	/* the periodic sweep of stale uploads and scratch */
	pthread_cond_t janitor_cv;
	pthread_t janitor;
	int janitor_on;
	struct s3_live *live; /* uploads of this process's, open (mu) */

	atomic_uint_fast64_t requests, retries, failures, bytes_up, bytes_down;
	atomic_uint_fast64_t request_ms; /* every try's time, added up */
	atomic_int down_logged; /* "unreachable" said, until a success */
};

/* A request and what came back. */
struct s3_call {
	const char *method; /* GET HEAD PUT POST DELETE */
	const char *key;    /* the object's key below the prefix; NULL: the
			       bucket */
	const char *query;  /* encoded, its parameters in order, or NULL */
	const char *hdr[3]; /* more headers ("Name: value"), NULL-ended */
	/* the body: bytes, or a range of a file */
	const uint8_t *body;
	size_t body_n;
	int fd; /* -1 unless the body is [off, off + len) of fd */
	uint64_t off, len;
	const char *sha_hex; /* the body's SHA-256: NULL to compute it
				(bytes) or for none */
	int retry;	     /* idempotent: tried again on transient errors */
	/* the response */
	uint8_t *into; /* a GET's body goes here (up to into_cap) */
	size_t into_cap, into_n;
	char *resp; /* else collected here, up to resp_max */
	size_t resp_n, resp_max;
	long status;
	char etag[S3_ETAG_CAP];
	char code[64];	/* the error's <Code> */
	uint64_t total; /* Content-Range's total, else Content-Length */
	int64_t mtime;	/* Last-Modified */
	char curl_err[CURL_ERROR_SIZE];
};

/* s3_http.c */
void s3_call_init(struct s3_call *c, const char *method, const char *key);
/* Sends c (again, on a transient error, if c->retry): 0 on a 2xx, else
 * BW_ENOTFOUND (404), -EACCES (403), -ESTALE (412: the object changed),
 * BW_ESERVER (another answer), BW_ETIMEDOUT or -EIO (no answer). */
int s3_do(struct s3 *s, struct s3_call *c) BW_WUR;
void s3_call_fini(struct s3_call *c);
/* What went wrong, for a log line. */
const char *s3_why(const struct s3_call *c, int rc, char *buf, size_t cap);
void s3_handles_free(struct s3 *s);
/* S3 keys are UTF-8, and ours are bytes (the vault takes any name of
 * bytes 0x20-0xff): the object's name is the key with each byte that
 * begins no valid UTF-8 sequence written as '\\' and two hex digits (no
 * key of ours holds a backslash: a file's name is the part after the last
 * one). s3_key_of reads a name back into its key, in place. */
int s3_name_of(const char *key, char *out, size_t cap) BW_WUR;
void s3_key_of(char *name);
/* s3_conf.c: the backend's figures (bw_blob_backend.stats) */
void s3_stats(const void *state, bw_stat_emit emit, void *arg);
/* The key's object name encoded for a URL's path (below the prefix):
 * every byte but the unreserved ones and '/' as %XX. */
int s3_path(const struct s3 *s, const char *key, char *out, size_t cap) BW_WUR;

/* A query parameter's value encoded as SigV4 wants it (all but the
 * unreserved bytes as %XX). */
int s3_qenc(const char *v, char *out, size_t cap) BW_WUR;

/* s3_xml.c: the few answers S3 gives in XML, read without a parser
 * library: the text of an element, entities decoded. */
/* The next element name at or after *pos in [p, p+n): its content's
 * span; *pos moves past it. BW_ENOTFOUND if there is none. */
int s3_xml_span(const char *p, size_t n, size_t *pos, const char *name,
		size_t *start, size_t *len) BW_WUR;
/* A --blobs URL's prefix is shorter than this. */
#define S3_PREFIX_CAP 256u

/* The text of the first element name in [p, p+n), decoded, into out. */
int s3_xml_text(const char *p, size_t n, const char *name, char *out,
		size_t cap) BW_WUR;
/* %XX decoded (a key listed with encoding-type=url), in place. */
int s3_url_decode(char *s) BW_WUR;
/* An ISO 8601 time as S3 lists it ("2026-11-24T03:52:28.000Z"). */
int s3_iso_time(const char *s, int64_t *out) BW_WUR;
/* The status of a response's first line ("HTTP/1.1 200 OK") of n bytes,
 * not NUL-terminated (as curl hands header lines over): the three digits
 * after the first space, 100 to 999, or 0 if they are not there. */
long s3_status_line(const char *line, size_t n);

/* s3_conf.c */
/* Reads the URL's rest ("//BUCKET[/PREFIX]") and the configuration into
 * s; logs what is wrong. */
int s3_conf(struct s3 *s, const struct bw_blob_conf *conf,
	    const char *where) BW_WUR;
void s3_conf_free(struct s3 *s);
/* The profile's keys out of an AWS shared-credentials file's text. */
int s3_creds_parse(const char *text, size_t n, const char *profile,
		   char **access, char **secret, char **token) BW_WUR;

/* An object being written (s3_parts.c) and a job of the uploader
 * threads (s3_uploaders.c). */
#define SHA_HEX (2 * BW_SHA256_LEN + 1)

/* An upload of this process's, until its object is freed: however old,
 * the sweep leaves it (a slow client's upload may take longer than the
 * grace). */
struct s3_live {
	struct s3_live *prev, *next;
	char id[S3_ID_CAP];
};

struct bw_blob_w {
	struct s3 *s;
	int fd;	      /* the spool (-1 while in memory) */
	uint8_t *mem; /* the bytes while size <= S3_MEM_MAX */
	size_t mem_cap;
	uint64_t size;		   /* bytes written */
	uint64_t part_start;	   /* the part not sent yet starts here */
	struct bw_sha256_ctx *sha; /* of [part_start, size) */
	char key[BW_BLOB_KEY_CAP]; /* where the parts go */
	char upload_id[S3_ID_CAP]; /* "" until there is a part to send */
	struct s3_live *live;	   /* its upload, known to the sweep */

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

/* s3_uploaders.c */
int s3_uploaders_start(struct s3 *s) BW_WUR;
/* Runs the queue to its end (aborts still reach S3), then stops. */
void s3_uploaders_stop(struct s3 *s);
void s3_enqueue(struct s3 *s, struct s3_job *j);

/* s3_parts.c: objects being written, their parts and their put */
int s3_w_create(struct s3 *s, const char *space, const char *key,
		struct bw_blob_w **out) BW_WUR;
int s3_w_write(struct bw_blob_w *w, uint64_t off, const void *p,
	       size_t n) BW_WUR;
int s3_w_put(struct s3 *s, struct bw_blob_w *w, const char *key,
	     int replace) BW_WUR;
void s3_w_abort(struct s3 *s, struct bw_blob_w *w);
/* Tells S3 an upload of key will not be completed. */
int s3_upload_abort(struct s3 *s, const char *key, const char *upload_id);
/* Whether upload_id is one of this process's, still open. */
int s3_upload_live(struct s3 *s, const char *upload_id);
/* w's upload, if there is one, aborted (best effort: the sweep). */
void s3_w_abort_upload(struct s3 *s, struct bw_blob_w *w);
void s3_w_free(struct bw_blob_w *w);
/* s3_upload.c: w's upload completed from its parts' ETags (the last part
 * sent): 0, or the store's error (nothing at the key changed then, as far
 * as the store says). */
int s3_upload_complete(struct s3 *s, struct bw_blob_w *w) BW_WUR;
/* Part number of w, [off, off + len) of its spool, into etag. */
int s3_send_part(struct s3 *s, struct bw_blob_w *w, unsigned number,
		 uint64_t off, uint64_t len, const char *sha,
		 char *etag) BW_WUR;

/* s3_blob.c */
typedef int (*s3_list_fn)(void *arg, const char *key, uint64_t size,
			  int64_t mtime);
/* A listing's continuation tokens (s3_blob.c): 0 for one new to seen (now
 * in it), BW_EPROTO for one given before, BW_ENOMEM. seen is bw_hash_init's;
 * s3_tokens_free frees it and its tokens. */
int s3_token_new(struct bw_hash *seen, const char *tok) BW_WUR;
void s3_tokens_free(struct bw_hash *seen);

/* Every object under prefix (below the store's prefix; scratch ones too
 * when all) to cb. */
int s3_list(struct s3 *s, const char *prefix, int all, s3_list_fn cb,
	    void *arg) BW_WUR;
int s3_remove(void *state, const char *key);
/* s3_parts.c: before key is written (see there) */
int s3_clear_way(struct s3 *s, const char *key, int replace,
		 const char *from) BW_WUR;

/* s3_sweep.c: the blob table's sweep, and the periodic one it starts */
int s3_sweep(void *state, const char *space, unsigned *n) BW_WUR;

#endif
