/* bulwarkd --check-config: the configuration is read as for serving, then
 * what it names is reached without changing anything (the data
 * directory, the database, the contents' store) and each gets one line: "ok"
 * and what was found, or "error" and what is wrong (a bad password, no such
 * database, a schema newer than this daemon).
 */
#include <stdio.h>
#include <unistd.h>

#include "bulwark/err.h"
#include "daemon/daemon.h"
#include "host/blob.h"
#include "host/meta.h"

int
bw_daemon_check(const struct bw_daemon_cfg *cfg, FILE *out)
{
	struct bw_blob_conf bc;
	char msg[1024];
	int bad = 0, rc;

	if (access(cfg->data_dir, W_OK | X_OK) == 0) {
		fprintf(out, "ok: data directory %s\n", cfg->data_dir);
	} else {
		fprintf(out, "error: data directory %s: %s\n", cfg->data_dir,
			bw_strerror(-errno));
		bad = 1;
	}
	rc = bw_meta_check(cfg->db, cfg->data_dir, msg, sizeof(msg));
	fprintf(out, "%s: database: %s\n", rc == 0 ? "ok" : "error", msg);
	bad |= rc != 0;
	bw_daemon_blob_conf(cfg, &bc);
	rc = bw_blobs_check(&bc, msg, sizeof(msg));
	fprintf(out, "%s: contents: %s\n", rc == 0 ? "ok" : "error", msg);
	bad |= rc != 0;
	return bad ? 1 : 0;
}
