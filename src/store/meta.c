/* The metadata table's front: the backends there are, and the one a URL
 * names. What each backend does is in its own directory (host/sqlite/).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/log.h"
#include "store/meta.h"

static const struct bw_meta_backend *const backends[] = {
	&bw_meta_sqlite,
	&bw_meta_postgresql,
};

/* The backend url names, and where (the rest of it); dflt holds the
 * embedded default's URL. */
static const struct bw_meta_backend *
find(const char *url, const char *data_dir, char *dflt, size_t cap,
     const char **where)
{
	const char *colon;
	size_t i, n;

	if (url == NULL || url[0] == '\0') {
		if (snprintf(dflt, cap, "sqlite:%s/defensive.db", data_dir) >=
		    (int)cap)
			return NULL;
		url = dflt;
	}
	if ((colon = strchr(url, ':')) == NULL)
		return NULL;
	n = (size_t)(colon - url);
	*where = colon + 1;
	if (n == 8 && strncmp(url, "postgres", 8) == 0) {
		url = "postgresql"; /* libpq takes both spellings */
		n = 10;
	}
	for (i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
		if (strlen(backends[i]->scheme) == n &&
		    strncmp(backends[i]->scheme, url, n) == 0)
			return backends[i];
	}
	return NULL;
}

#define W BW_META_WRITES
#define S BW_META_SHARED_ONLY
static const unsigned op_traits[] = {
	[BW_META_CLIENT_INSERT] = W,   [BW_META_CLIENT_KEY] = W,
	[BW_META_CLIENT_TOUCH] = W,    [BW_META_FILE_SET] = W,
	[BW_META_MSG_INSERT] = W,      [BW_META_MSG_DROP] = W,
	[BW_META_MSG_DROP_PATH] = W,   [BW_META_MSG_DELETE] = W,
	[BW_META_MSG_READ] = 0,	       [BW_META_MSG_PUT] = W,
	[BW_META_MSG_FLOOR] = W,       [BW_META_SYNC] = 0,
	[BW_META_CLIENT_GET] = S,      [BW_META_FILE_GET] = S,
	[BW_META_CLIENT_SINCE] = S,    [BW_META_CLIENT_FAIL] = W | S,
	[BW_META_TOTALS] = S,	       [BW_META_LOCK] = S,
	[BW_META_UNLOCK] = S,	       [BW_META_FENCE] = W | S,
	[BW_META_QUEUE] = S,	       [BW_META_MSG_PULL_GEN] = W | S,
	[BW_META_CLIENT_TLS_ONLY] = W,
};
/* the table reaches the last operation (one added after it without its
 * entry would read as 0: neither a write nor the shared store's) */
_Static_assert(sizeof(op_traits) / sizeof(op_traits[0]) == BW_META_OPS,
	       "bw_meta_op_traits: an operation without its traits");
#undef W
#undef S

unsigned
bw_meta_op_traits(enum bw_meta_op op)
{
	return (unsigned)op < BW_META_OPS ? op_traits[op] : 0;
}

int
bw_meta_check(const char *url, const char *data_dir, char *msg, size_t cap)
{
	char dflt[4096 + 32];
	const struct bw_meta_backend *be;
	const char *where = NULL;

	if ((be = find(url, data_dir, dflt, sizeof(dflt), &where)) == NULL) {
		snprintf(msg, cap,
			 "not a database URL (known: sqlite:PATH, "
			 "postgresql://...)");
		return BW_ECONFIG;
	}
	return be->check(where, msg, cap);
}

int
bw_meta_open(struct bw_meta **out, const char *url, const char *data_dir,
	     struct bw_loop *loop)
{
	char dflt[4096 + 32];
	const struct bw_meta_backend *be;
	const char *where = NULL;
	struct bw_meta *m;
	int rc;

	*out = NULL;
	if ((be = find(url, data_dir, dflt, sizeof(dflt), &where)) == NULL) {
		/* only the scheme: the rest may hold a password */
		bw_error("store: '%.*s:' names no database (known: "
			 "sqlite:PATH, postgresql://...)",
			 url != NULL ? (int)strcspn(url, ":/@") : 0,
			 url != NULL ? url : "");
		return BW_ECONFIG;
	}
	if ((m = calloc(1, sizeof(*m))) == NULL)
		return BW_ENOMEM;
	m->be = be;
	m->loop = loop;
	if ((rc = m->be->open(where, loop, &m->state)) != 0) {
		free(m);
		return rc;
	}
	*out = m;
	return 0;
}

void
bw_meta_serving(struct bw_meta *m)
{
	if (m != NULL && m->be->serving != NULL)
		m->be->serving(m->state);
}

void
bw_meta_close(struct bw_meta *m)
{
	if (m == NULL || m->closed)
		return;
	m->be->close(m->state);
	m->state = NULL;
	m->closed = 1;
}

struct refusal {
	struct bw_call call;
	struct bw_meta_req *r;
};

static void
refused(void *arg)
{
	struct refusal *f = arg;
	struct bw_meta_req *r = f->r;

	free(f);
	r->done(r);
}

void
bw_meta_refuse(struct bw_meta *m, struct bw_meta_req *r)
{
	struct refusal *f;

	r->rc = BW_ECLOSED;
	if (r->done == NULL)
		return;
	if ((f = calloc(1, sizeof(*f))) == NULL) {
		r->done(r); /* at once rather than never */
		return;
	}
	f->r = r;
	bw_loop_call(m->loop, &f->call, refused, f);
}

void
bw_meta_free(struct bw_meta *m)
{
	bw_meta_close(m);
	free(m);
}
