/* The requests about a multipart upload once begun (s3_parts.c begins it
 * and writes its parts): each part, the completion, and the abort. A
 * completion tried again after its answer was lost may find the upload
 * gone; the object is then ours only if its ETag is the one our parts
 * make.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bulwark/log.h"
#include "bulwark/util.h"
#include "store/s3/s3_int.h"

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

int
s3_upload_abort(struct s3 *s, const char *key, const char *upload_id)
{
	struct s3_call c;
	char q[3 * S3_ID_CAP + 32], why[160];
	int rc;

	if ((rc = query(q, sizeof(q), upload_id, 0)) != 0)
		return rc;
	s3_call_init(&c, "DELETE", key);
	c.query = q;
	c.retry = 1;
	if ((rc = s3_do(s, &c)) != 0 && rc != BW_ENOTFOUND)
		bw_warn("s3: aborting the upload of %s: %s (the sweep will)",
			key, s3_why(&c, rc, why, sizeof(why)));
	s3_call_fini(&c);
	return rc == BW_ENOTFOUND ? 0 : rc;
}

/* The upload is given up: told to S3 (else the sweep will). */
void
s3_w_abort_upload(struct s3 *s, struct bw_blob_w *w)
{
	if (w->upload_id[0] == '\0')
		return;
	(void)s3_upload_abort(s, w->key, w->upload_id);
	w->upload_id[0] = '\0';
}

int
s3_send_part(struct s3 *s, struct bw_blob_w *w, unsigned number, uint64_t off,
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

/* The ETag S3 gives the object w's parts make: the MD5 of their MD5s,
 * then "-" and their count ("<hex>-<n>", unquoted). 0, or BW_EPROTO if a
 * part's ETag is not its MD5 in hex (a store that encrypts): then the
 * object cannot be told from another. */
static int
multipart_etag(const struct bw_blob_w *w, char *out, size_t cap)
{
	uint8_t *md5s, sum[BW_MD5_LEN];
	char hex[2 * BW_MD5_LEN + 1];
	const char *e;
	size_t k;
	unsigned i;
	int rc = 0;

	if (w->nparts == 0 ||
	    (md5s = malloc((size_t)w->nparts * BW_MD5_LEN)) == NULL)
		return w->nparts == 0 ? BW_EPROTO : BW_ENOMEM;
	for (i = 0; i < w->nparts && rc == 0; i++) {
		e = w->etag[i];
		k = strlen(e);
		if (k >= 2 && e[0] == '"' && e[k - 1] == '"') {
			e++;
			k -= 2;
		}
		if (k != 2 * BW_MD5_LEN ||
		    bw_hex_decode(e, k, md5s + (size_t)i * BW_MD5_LEN,
				  BW_MD5_LEN) != 0)
			rc = BW_EPROTO;
	}
	if (rc == 0 &&
	    (rc = bw_md5(md5s, (size_t)w->nparts * BW_MD5_LEN, sum)) == 0) {
		bw_hex_encode(sum, BW_MD5_LEN, hex);
		if (snprintf(out, cap, "%s-%u", hex, w->nparts) >= (int)cap)
			rc = BW_ETOOBIG;
	}
	free(md5s);
	return rc;
}

/* Whether the object at w's key is the one w's parts make: after a
 * NoSuchUpload to a completion sent again (its first answer lost), the
 * object is ours only if its ETag says so; its size alone is not enough
 * (an older object of the same size). */
static int
completed_before(struct s3 *s, struct bw_blob_w *w)
{
	char want[2 * BW_MD5_LEN + 16], *got;
	struct s3_call h;
	size_t k;
	int ours = 0;

	if (multipart_etag(w, want, sizeof(want)) != 0)
		return 0;
	s3_call_init(&h, "HEAD", w->key);
	h.retry = 1;
	if (s3_do(s, &h) == 0 && h.total == w->size) {
		got = h.etag;
		k = strlen(got);
		if (k >= 2 && got[0] == '"' && got[k - 1] == '"') {
			got++;
			k -= 2;
		}
		ours = k == strlen(want) && strncasecmp(got, want, k) == 0;
	}
	s3_call_fini(&h);
	return ours;
}

int
s3_upload_complete(struct s3 *s, struct bw_blob_w *w)
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
	/* a retry after a completion whose answer was lost? */
	if (rc == BW_ENOTFOUND && strcmp(c.code, "NoSuchUpload") == 0 &&
	    completed_before(s, w)) {
		bw_info("s3: %s was completed by an earlier try (its ETag is "
			"ours)",
			w->key);
		rc = 0;
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
