/* The metadata table's front: the backends there are, and the one a URL
 * names. What each backend does is in its own directory (host/sqlite/).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/log.h"
#include "host/meta.h"

extern const struct bw_meta_backend bw_meta_sqlite;
extern const struct bw_meta_backend bw_meta_postgresql;
extern const struct bw_meta_backend bw_meta_postgres;

static const struct bw_meta_backend *const backends[] = {
	&bw_meta_sqlite,
	&bw_meta_postgresql,
	&bw_meta_postgres,
};

int
bw_meta_open(struct bw_meta **out, const char *url, const char *data_dir,
	     struct bw_loop *loop)
{
	char dflt[4096 + 32];
	const char *colon, *where;
	struct bw_meta *m;
	size_t i, n;
	int rc;

	*out = NULL;
	if (url == NULL || url[0] == '\0') {
		if (snprintf(dflt, sizeof(dflt), "sqlite:%s/defensive.db",
			     data_dir) >= (int)sizeof(dflt))
			return BW_ETOOBIG;
		url = dflt;
	}
	if ((colon = strchr(url, ':')) == NULL)
		return BW_ECONFIG;
	n = (size_t)(colon - url);
	where = colon + 1;
	for (i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
		if (strlen(backends[i]->scheme) == n &&
		    strncmp(backends[i]->scheme, url, n) == 0)
			break;
	}
	if (i == sizeof(backends) / sizeof(backends[0])) {
		bw_error("store: no backend for '%.*s:' (known: sqlite:, "
			 "postgresql:)",
			 (int)n, url);
		return BW_ECONFIG;
	}
	if ((m = calloc(1, sizeof(*m))) == NULL)
		return BW_ENOMEM;
	m->be = backends[i];
	if ((rc = m->be->open(where, loop, &m->state)) != 0) {
		free(m);
		return rc;
	}
	*out = m;
	return 0;
}

void
bw_meta_close(struct bw_meta *m)
{
	if (m == NULL)
		return;
	m->be->close(m->state);
	free(m);
}
