/* The blob table's front: the backends there are, the one a URL names,
 * and scratch keys. What each backend does is in its own directory
 * (host/blobfs/).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/log.h"
#include "bulwark/loop.h"
#include "bulwark/util.h"
#include "store/blob.h"

static const struct bw_blob_backend *const backends[] = {
	&bw_blob_fs,
	&bw_blob_s3,
};

#define GRACE_DEFAULT_S 3600u

#define BACKENDS_N (sizeof(backends) / sizeof(backends[0]))

/* The backend url names and where, quietly: BW_ECONFIG if none. */
static int
backend_of(const char *url, const struct bw_blob_backend **be,
	   const char **where)
{
	const char *colon = strchr(url, ':');
	size_t i, n;

	if (colon == NULL)
		return BW_ECONFIG;
	n = (size_t)(colon - url);
	*where = colon + 1;
	for (i = 0; i < BACKENDS_N; i++) {
		if (strlen(backends[i]->scheme) == n &&
		    strncmp(backends[i]->scheme, url, n) == 0) {
			*be = backends[i];
			return 0;
		}
	}
	return BW_ECONFIG;
}

static int
find_backend(const struct bw_blob_conf *conf, const struct bw_blob_backend **be,
	     const char **where)
{
	const char *url = conf->url != NULL ? conf->url : "";

	if (url[0] == '\0') {
		*be = &bw_blob_fs;
		*where = conf->data_dir;
		return 0;
	}
	if (backend_of(url, be, where) == 0)
		return 0;
	if (strchr(url, ':') == NULL)
		bw_error("blobs: '%s' is not a URL (file:DIR or "
			 "s3://BUCKET[/PREFIX])",
			 url);
	else
		bw_error("blobs: no backend for '%.*s:' (known: file:, s3:)",
			 (int)(strchr(url, ':') - url), url);
	return BW_ECONFIG;
}

int
bw_blobs_url_shared(const char *url)
{
	const struct bw_blob_backend *be;
	const char *where;

	return url != NULL && url[0] != '\0' &&
	       backend_of(url, &be, &where) == 0 && be != &bw_blob_fs;
}

int
bw_blobs_open(struct bw_blobs **out, const struct bw_blob_conf *conf)
{
	const struct bw_blob_backend *be;
	const char *where;
	struct bw_blobs *b;
	int rc;

	*out = NULL;
	if ((rc = find_backend(conf, &be, &where)) != 0)
		return rc;
	if ((b = calloc(1, sizeof(*b))) == NULL)
		return BW_ENOMEM;
	b->be = be;
	b->shared = bw_blobs_url_shared(conf->url);
	b->grace_s = conf->grace_s != 0 ? conf->grace_s : GRACE_DEFAULT_S;
	if ((rc = b->be->open(conf, where, &b->state)) != 0) {
		free(b);
		return rc;
	}
	*out = b;
	return 0;
}

int
bw_blobs_open_dir(struct bw_blobs **out, const char *dir)
{
	struct bw_blob_conf conf;

	memset(&conf, 0, sizeof(conf));
	conf.url = "";
	conf.data_dir = dir;
	return bw_blobs_open(out, &conf);
}

int
bw_blobs_check(const struct bw_blob_conf *conf, char *msg, size_t cap)
{
	struct bw_blobs *b;
	char why[512];
	int rc;

	bw_log_take_error(why, sizeof(why));
	if ((rc = bw_blobs_open(&b, conf)) != 0) {
		/* the cause the backend named (no credentials, a bad bucket
		 * name), not only its class */
		bw_log_take_error(why, sizeof(why));
		snprintf(msg, cap, "%s cannot be opened: %s",
			 conf->url != NULL && conf->url[0] != '\0'
				 ? conf->url
				 : "the data directory",
			 why[0] != '\0' ? why : bw_strerror(rc));
		return rc;
	}
	rc = b->be->check(b->state, msg, cap);
	bw_blobs_close(b);
	return rc;
}

int
bw_blob_settled(const struct bw_blobs *b, int64_t mtime)
{
	return !b->shared || mtime + (int64_t)b->grace_s <= bw_time_s();
}

void
bw_blobs_close(struct bw_blobs *b)
{
	if (b == NULL)
		return;
	b->be->close(b->state);
	free(b);
}

void
bw_blob_scratch_key(const char *space, const char *prefix,
		    char key[BW_BLOB_KEY_CAP])
{
	char name[64];

	bw_unique_name(prefix, name, sizeof(name));
	snprintf(key, BW_BLOB_KEY_CAP, "%s" BW_BLOB_SCRATCH "%s", space, name);
}

/* --- an abort off the loop ------------------------------------------------
 */

struct abort_job {
	const struct bw_blobs *b;
	struct bw_blob_w *w;
	struct bw_blob_r *r;
};

static void
abort_work(void *arg)
{
	struct abort_job *j = arg;

	if (j->w != NULL)
		j->b->be->abort(j->b->state, j->w);
	else
		j->b->be->read_close(j->r);
}

static int
later(const struct bw_blobs *b, struct bw_loop *loop, struct bw_blob_w *w,
      struct bw_blob_r *r)
{
	struct abort_job *j;

	if ((j = calloc(1, sizeof(*j))) == NULL)
		return BW_ENOMEM;
	j->b = b;
	j->w = w;
	j->r = r;
	if (bw_loop_submit(loop, abort_work, free, j) != 0) {
		free(j);
		return BW_ECLOSED;
	}
	return 0;
}

void
bw_blobs_abort_later(const struct bw_blobs *b, struct bw_loop *loop,
		     struct bw_blob_w *w)
{
	if (w != NULL && later(b, loop, w, NULL) != 0)
		b->be->abort(b->state, w);
}

void
bw_blobs_read_close_later(const struct bw_blobs *b, struct bw_loop *loop,
			  struct bw_blob_r *r)
{
	if (r != NULL && later(b, loop, NULL, r) != 0)
		b->be->read_close(r);
}
