/* bulwarkd --check-config (-t): the configuration is read as for serving,
 * then what it names is reached without changing anything (the data
 * directory, the database, the contents' store) and each gets one line:
 * "ok" and what was found, or "error" and what is wrong (a bad password, no
 * such database, a schema newer than this daemon). The listeners the
 * service would open are said, whole, so that a check of the packaged
 * file shows what the package serves and where.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bulwark/err.h"
#include "daemon/daemon.h"
#include "store/blob.h"
#include "store/meta.h"

static void
listener(FILE *out, const char *what, const struct bw_listen_cfg *l)
{
	int v6 = l->addr[0] != '\0' && l->addr[0] != '[' &&
		 strchr(l->addr, ':') != NULL;

	fprintf(out, "ok: %s on %s%s%s:%u%s\n", what, v6 ? "[" : "", l->addr,
		v6 ? "]" : "", l->port,
		l->port == 0 ? " (a free port the kernel picks)" : "");
}

/* l's address, port in TLS (if on). */
static void
tls_listener(FILE *out, const char *what, const struct bw_listen_cfg *l,
	     int32_t port)
{
	struct bw_listen_cfg t = *l;
	char name[64];

	if (port < 0)
		return;
	t.port = (uint16_t)port;
	snprintf(name, sizeof(name), "%s in TLS", what);
	listener(out, name, &t);
}

int
bw_daemon_check(const struct bw_daemon_cfg *cfg, FILE *out)
{
	struct bw_blob_conf bc;
	char msg[1024], whole[PATH_MAX];
	const char *dir = cfg->data_dir;
	int bad = 0, rc;

	if (realpath(cfg->data_dir, whole) != NULL)
		dir = whole;
	if (access(cfg->data_dir, W_OK | X_OK) == 0) {
		fprintf(out, "ok: data directory %s\n", dir);
	} else {
		fprintf(out, "error: data directory %s: %s\n", dir,
			errno == ENOENT ? "does not exist"
					: bw_strerror(-errno));
		bad = 1;
	}
	rc = bw_meta_check(cfg->db, cfg->data_dir, msg, sizeof(msg));
	fprintf(out, "%s: database: %s\n", rc == 0 ? "ok" : "error", msg);
	bad |= rc != 0;
	bw_daemon_blob_conf(cfg, &bc);
	rc = bw_blobs_check(&bc, msg, sizeof(msg));
	fprintf(out, "%s: contents: %s\n", rc == 0 ? "ok" : "error", msg);
	bad |= rc != 0;
	bad |= bw_daemon_tls_check(cfg, out);
	if (!cfg->require_tls)
		listener(out, "vault and messenger", &cfg->port);
	tls_listener(out, "vault and messenger", &cfg->port, cfg->tls_port);
	if (cfg->port2 != 0 && !cfg->require_tls)
		fprintf(out,
			"ok: vault and messenger also on port %u "
			"(myport.info)\n",
			cfg->port2);
	if (cfg->rooms_enabled && !cfg->require_tls)
		listener(out, "group chat", &cfg->rooms_listen);
	if (cfg->rooms_enabled)
		tls_listener(out, "group chat", &cfg->rooms_listen,
			     cfg->rooms_tls_port);
	if (cfg->console_enabled)
		listener(out, "console", &cfg->console_listen);
	if (cfg->metrics_enabled)
		listener(out, "metrics", &cfg->metrics_listen);
	return bad ? 1 : 0;
}
