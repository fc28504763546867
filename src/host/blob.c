/* The blob table's front: the backends there are, the one a URL names,
 * and scratch keys. What each backend does is in its own directory
 * (host/blobfs/).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/log.h"
#include "bulwark/util.h"
#include "host/blob.h"

extern const struct bw_blob_backend bw_blob_fs;

static const struct bw_blob_backend *const backends[] = {
	&bw_blob_fs,
};

#define BACKENDS_N (sizeof(backends) / sizeof(backends[0]))

int
bw_blobs_open(struct bw_blobs **out, const char *url, const char *data_dir)
{
	const char *colon, *where;
	struct bw_blobs *b;
	size_t i, n;
	int rc;

	*out = NULL;
	if (url == NULL || url[0] == '\0') {
		url = "file:";
		where = data_dir;
		n = 4;
	} else {
		if ((colon = strchr(url, ':')) == NULL)
			return BW_ECONFIG;
		n = (size_t)(colon - url);
		where = colon + 1;
	}
	for (i = 0; i < BACKENDS_N; i++) {
		if (strlen(backends[i]->scheme) == n &&
		    strncmp(backends[i]->scheme, url, n) == 0)
			break;
	}
	if (i == BACKENDS_N) {
		bw_error("blobs: no backend for '%.*s:' (known: file:)", (int)n,
			 url);
		return BW_ECONFIG;
	}
	if ((b = calloc(1, sizeof(*b))) == NULL)
		return BW_ENOMEM;
	b->be = backends[i];
	if ((rc = b->be->open(where, &b->state)) != 0) {
		free(b);
		return rc;
	}
	*out = b;
	return 0;
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
