/* What is abandoned in a store several daemons may share: scratch objects
 * (<space>.incoming/) and multipart uploads no one will complete (a
 * daemon killed mid-upload), removed only once older than the grace
 * period, at start-up (the blob table's sweep) and then periodically on a
 * thread of the backend's, at every quarter of the grace, at most every 10
 * minutes. Other daemons' prefixes are never listed.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bulwark/log.h"
#include "bulwark/util.h"
#include "store/s3/s3_int.h"

#define JANITOR_MAX_S 600u

/* --- stale uploads ---------------------------------------------------------
 */

/* Whether an upload begun before the grace period is still being sent to
 * (by another daemon: this one's own are known, s3_upload_live): a part
 * of it came after before_s. A listing of its parts that cannot be had,
 * or runs past one page (a thousand parts), says yes: left for a later
 * sweep rather than cut short under a live upload. */
static int
upload_active(struct s3 *s, const char *key, const char *id, int64_t before_s)
{
	static atomic_int said;
	char q[3 * S3_ID_CAP + 32], enc[3 * S3_ID_CAP], when[64], why[160];
	size_t pos = 0, rs, rn, ps, pn;
	const char *body;
	struct s3_call c;
	int64_t t;
	int active = 0, rc;

	if (s3_qenc(id, enc, sizeof(enc)) != 0 ||
	    snprintf(q, sizeof(q), "uploadId=%s", enc) >= (int)sizeof(q))
		return 1;
	s3_call_init(&c, "GET", key);
	c.query = q;
	c.retry = 1;
	c.resp_max = 1024u * 1024u;
	if ((rc = s3_do(s, &c)) != 0 || c.resp == NULL ||
	    s3_xml_span(c.resp, c.resp_n, &pos, "ListPartsResult", &rs, &rn) !=
		    0) {
		if (rc != BW_ENOTFOUND && !atomic_exchange(&said, 1))
			bw_warn("s3: the parts of an upload of %s could not "
				"be listed (%s): uploads older than the grace "
				"period are kept (said once)",
				key, s3_why(&c, rc, why, sizeof(why)));
		s3_call_fini(&c);
		return rc == BW_ENOTFOUND ? 0 : 1; /* gone: nothing to keep */
	}
	body = c.resp + rs;
	if (s3_xml_text(body, rn, "IsTruncated", when, sizeof(when)) == 0 &&
	    strcmp(when, "true") == 0)
		active = 1;
	pos = 0;
	while (!active && s3_xml_span(body, rn, &pos, "Part", &ps, &pn) == 0)
		if (s3_xml_text(body + ps, pn, "LastModified", when,
				sizeof(when)) != 0 ||
		    s3_iso_time(when, &t) != 0 || t >= before_s)
			active = 1;
	s3_call_fini(&c);
	return active;
}

static int
abort_stale(struct s3 *s, const char *prefix, int64_t before_s, unsigned *n)
{
	char q[4096], pre[1024], km[3 * BW_BLOB_KEY_CAP], im[3 * S3_ID_CAP];
	char key[BW_BLOB_KEY_CAP + 256], why[160], when[64], id[S3_ID_CAP];
	char mark[sizeof(km) + sizeof(im) + 2];
	struct bw_hash seen;
	int stopping;
	unsigned pages = 0;
	size_t pos, start, len, plen = strlen(s->prefix);
	struct s3_call c;
	int64_t t;
	int rc, more = 1, qn;

	*n = 0;
	rc = 0;
	km[0] = im[0] = '\0';
	if (snprintf(key, sizeof(key), "%s%s", s->prefix, prefix) >=
		    (int)sizeof(key) ||
	    s3_qenc(key, pre, sizeof(pre)) != 0)
		return BW_ETOOBIG;
	if ((rc = bw_hash_init(&seen)) != 0)
		return rc;
	while (more) {
		pthread_mutex_lock(&s->mu);
		stopping = s->stopping;
		pthread_mutex_unlock(&s->mu);
		if (stopping)
			break;
		if (pages++ > 0 && (snprintf(mark, sizeof(mark), "%s\n%s", km,
					     im) >= (int)sizeof(mark) ||
				    s3_token_new(&seen, mark) != 0)) {
			/* a truncated page that leads to one already read
			 * (or to none): the same pages would come again for
			 * ever */
			bw_warn("s3: the listing of the uploads under %s does "
				"not advance; the rest waits for the next "
				"sweep",
				key);
			break;
		}
		qn = km[0] != '\0' ? snprintf(q, sizeof(q),
					      "key-marker=%s&prefix=%s&"
					      "upload-id-marker=%s&uploads=",
					      km, pre, im)
				   : snprintf(q, sizeof(q),
					      "prefix=%s&uploads=", pre);
		if (qn <= 0 || (size_t)qn >= sizeof(q)) {
			rc = BW_ETOOBIG;
			break;
		}
		s3_call_init(&c, "GET", NULL);
		c.query = q;
		c.retry = 1;
		c.resp_max = 4u * 1024u * 1024u;
		if ((rc = s3_do(s, &c)) != 0) {
			bw_warn("s3: listing the uploads under %s: %s", key,
				s3_why(&c, rc, why, sizeof(why)));
			s3_call_fini(&c);
			break;
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

			if (s3_xml_text(u, len, "Key", key, sizeof(key)) != 0 ||
			    s3_xml_text(u, len, "UploadId", id, sizeof(id)) !=
				    0 ||
			    s3_xml_text(u, len, "Initiated", when,
					sizeof(when)) != 0 ||
			    s3_iso_time(when, &t) != 0)
				continue;
			if (s3_qenc(key, km, sizeof(km)) != 0 ||
			    s3_qenc(id, im, sizeof(im)) != 0)
				more = 0;
			if (t >= before_s ||
			    strncmp(key, s->prefix, plen) != 0 ||
			    s3_upload_live(s, id) ||
			    upload_active(s, key + plen, id, before_s))
				continue;
			if (s3_upload_abort(s, key + plen, id) != 0)
				continue;
			bw_info("s3: aborted an upload of %s abandoned since "
				"%s",
				key + plen, when);
			(*n)++;
		}
		s3_call_fini(&c);
	}
	s3_tokens_free(&seen);
	return rc;
}

struct sweep {
	struct s3 *s;
	int64_t before;
	unsigned n;
};

static int
sweep_one(void *arg, const char *key, uint64_t size, int64_t mtime)
{
	struct sweep *sw = arg;

	(void)size;
	if (mtime < sw->before && s3_remove(sw->s, key) == 0)
		sw->n++;
	return 0;
}

static int
sweep_space(struct s3 *s, const char *space, unsigned *n)
{
	char scratch_p[BW_BLOB_KEY_CAP];
	struct sweep sw = {s, bw_time_s() - (int64_t)s->grace_s, 0};
	unsigned aborted = 0;
	int rc;

	*n = 0;
	if (snprintf(scratch_p, sizeof(scratch_p), "%s" BW_BLOB_SCRATCH,
		     space) >= (int)sizeof(scratch_p))
		return BW_ETOOBIG;
	if ((rc = s3_list(s, scratch_p, 1, sweep_one, &sw)) != 0)
		return rc;
	if ((rc = abort_stale(s, space, sw.before, &aborted)) != 0)
		return rc;
	*n = sw.n + aborted;
	return 0;
}

static void *
janitor(void *arg)
{
	static const char *const spaces[] = {"files/", "messages/"};
	struct s3 *s = arg;
	unsigned every = s->grace_s / 4 > JANITOR_MAX_S ? JANITOR_MAX_S
							: s->grace_s / 4 + 1;
	struct timespec until;
	unsigned i, n;

	pthread_mutex_lock(&s->mu);
	while (!s->stopping) {
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += every;
		(void)pthread_cond_timedwait(&s->janitor_cv, &s->mu, &until);
		if (s->stopping)
			break;
		pthread_mutex_unlock(&s->mu);
		for (i = 0; i < sizeof(spaces) / sizeof(spaces[0]); i++) {
			if (sweep_space(s, spaces[i], &n) == 0 && n > 0)
				bw_info("s3: swept %u abandoned object(s) or "
					"upload(s) under %s%s",
					n, s->prefix, spaces[i]);
		}
		pthread_mutex_lock(&s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* Start-up's sweep; the first one starts the periodic sweep too. */
int
s3_sweep(void *state, const char *space, unsigned *n)
{
	struct s3 *s = state;
	int rc = sweep_space(s, space, n);

	if (rc == 0 && !s->janitor_on &&
	    pthread_create(&s->janitor, NULL, janitor, s) == 0)
		s->janitor_on = 1;
	return rc;
}
