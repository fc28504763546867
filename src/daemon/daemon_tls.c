/* The TLS listeners' key and certificate: the operator's (--tls-cert and
 * --tls-key, from a CA), or a P-256 key and a self-signed certificate made
 * once in the data directory, whose fingerprint clients pin. SIGHUP reads
 * the files again; open connections keep the settings they started with.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bulwark/log.h"
#include "bulwark/tls.h"
#include "daemon/daemon.h"

#define PATH_CAP (4096 + 16)

static int
tls_on(const struct bw_daemon_cfg *cfg)
{
	return cfg->tls_port >= 0 || cfg->rooms_tls_port >= 0;
}

/* Where the key and certificate are: given, or in the data directory. */
static void
paths(const struct bw_daemon_cfg *cfg, char cert[PATH_CAP], char key[PATH_CAP])
{
	if (cfg->tls_cert[0] != '\0') {
		snprintf(cert, PATH_CAP, "%s", cfg->tls_cert);
		snprintf(key, PATH_CAP, "%s", cfg->tls_key);
		return;
	}
	snprintf(cert, PATH_CAP, "%s/" BW_DAEMON_TLS_CERT, cfg->data_dir);
	snprintf(key, PATH_CAP, "%s/" BW_DAEMON_TLS_KEY, cfg->data_dir);
}

static int
load(const struct bw_daemon_cfg *cfg, struct bw_tls_ctx **out, char *why,
     size_t cap)
{
	char cert[PATH_CAP], key[PATH_CAP];

	paths(cfg, cert, key);
	return bw_tls_server_ctx(out, cert, key, why, cap);
}

int
bw_daemon_tls_open(struct bw_daemon *d)
{
	char cert[PATH_CAP], key[PATH_CAP], why[512], host[HOST_NAME_MAX + 1];
	int made = 0, rc;

	if (!tls_on(&d->cfg))
		return 0;
	if (d->cfg.tls_cert[0] == '\0') {
		paths(&d->cfg, cert, key);
		if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
			snprintf(host, sizeof(host), "localhost");
		host[sizeof(host) - 1] = '\0';
		if ((rc = bw_tls_make_key(key, cert, host, &made, why,
					  sizeof(why))) != 0) {
			bw_error("TLS: %s", why);
			return rc;
		}
		if (made)
			bw_info("TLS: made a P-256 key (%s) and a self-signed "
				"certificate (%s)",
				key, cert);
	}
	if ((rc = load(&d->cfg, &d->tls, why, sizeof(why))) != 0) {
		bw_error("TLS: %s", why);
		return rc;
	}
	bw_engine_set_tls(&d->eng, d->tls);
	bw_info("TLS: server key %s", bw_tls_ctx_fingerprint(d->tls));
	return 0;
}

void
bw_daemon_tls_reload(struct bw_daemon *d)
{
	struct bw_tls_ctx *fresh = NULL;
	char why[512];

	if (d->tls == NULL)
		return;
	if (load(&d->cfg, &fresh, why, sizeof(why)) != 0) {
		bw_error("reload: TLS: %s; the old key and certificate are "
			 "kept",
			 why);
		return;
	}
	if (strcmp(bw_tls_ctx_fingerprint(fresh),
		   bw_tls_ctx_fingerprint(d->tls)) != 0)
		bw_warn("reload: TLS: the server key changed, from %s to %s: "
			"clients that pinned the old one refuse the new",
			bw_tls_ctx_fingerprint(d->tls),
			bw_tls_ctx_fingerprint(fresh));
	else
		bw_info("reload: TLS: certificate read again (key %s)",
			bw_tls_ctx_fingerprint(fresh));
	/* open sessions hold what they started with */
	bw_engine_set_tls(&d->eng, fresh);
	bw_tls_ctx_free(d->tls);
	d->tls = fresh;
}

void
bw_daemon_tls_close(struct bw_daemon *d)
{
	bw_engine_set_tls(&d->eng, NULL);
	bw_tls_ctx_free(d->tls);
	d->tls = NULL;
}

int
bw_daemon_fingerprint(const struct bw_daemon_cfg *cfg, FILE *out, FILE *err)
{
	char cert[PATH_CAP], key[PATH_CAP], fp[BW_TLS_FP_CAP], why[512];

	paths(cfg, cert, key);
	if (cfg->tls_cert[0] == '\0' && access(key, F_OK) != 0) {
		fprintf(err,
			"bulwarkd: no TLS key in %s yet: bulwarkd makes it at "
			"its first start with --tls-port or --rooms-tls-port\n",
			cfg->data_dir);
		return 1;
	}
	if (bw_tls_file_fingerprint(cfg->tls_cert[0] != '\0' ? cert : key, fp,
				    why, sizeof(why)) != 0) {
		fprintf(err, "bulwarkd: %s\n", why);
		return 1;
	}
	fprintf(out, "%s\n", fp);
	return 0;
}

int
bw_daemon_tls_check(const struct bw_daemon_cfg *cfg, FILE *out)
{
	char cert[PATH_CAP], key[PATH_CAP], why[512];
	struct bw_tls_ctx *x = NULL;

	if (!tls_on(cfg))
		return 0;
	paths(cfg, cert, key);
	if (cfg->tls_cert[0] == '\0' && access(key, F_OK) != 0) {
		fprintf(out,
			"ok: TLS key: none yet; made at the first start as %s "
			"(and %s)\n",
			key, cert);
		return 0;
	}
	if (bw_tls_server_ctx(&x, cert, key, why, sizeof(why)) != 0) {
		fprintf(out, "error: TLS: %s\n", why);
		return 1;
	}
	fprintf(out, "ok: TLS key %s (%s, %s)\n", bw_tls_ctx_fingerprint(x),
		key, cert);
	bw_tls_ctx_free(x);
	return 0;
}

int
bw_daemon_tls_cfg_check(const struct bw_daemon_cfg *cfg, char *why,
			size_t why_cap)
{
	const char *no = NULL;

	if ((cfg->tls_cert[0] == '\0') != (cfg->tls_key[0] == '\0'))
		no = cfg->tls_cert[0] == '\0' ? "--tls-key needs --tls-cert"
					      : "--tls-cert needs --tls-key";
	else if (cfg->require_tls && cfg->tls_port < 0)
		no = "--require-tls turns the plain port off: give --tls-port";
	else if (cfg->require_tls && cfg->rooms_enabled &&
		 cfg->rooms_tls_port < 0)
		no = "--require-tls turns the plain rooms port off: give "
		     "--rooms-tls-port, or --no-rooms";
	else if (cfg->rooms_tls_port >= 0 && !cfg->rooms_enabled)
		no = "--rooms-tls-port goes with the group chat, which "
		     "--no-rooms turns off";
	if (no == NULL)
		return 0;
	snprintf(why, why_cap, "%s", no);
	return BW_ECONFIG;
}
