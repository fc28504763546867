/* bulwarkd's options as one table: each long option is a field of the
 * daemon's configuration with its bounds, whether SIGHUP may change it, and
 * its line of --help, so the command line, the help text and the keys of
 * the configuration file cannot drift apart (daemon_conf.c assembles the
 * configuration from them).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "bulwark/log.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "daemon/daemon.h"
#include "daemon/daemon_opts_int.h"

#define R 1 /* SIGHUP applies it */

#define F(field)                                                               \
	offsetof(struct bw_daemon_cfg, field),                                 \
		sizeof(((struct bw_daemon_cfg *)0)->field)
#define GIVEN(field) (offsetof(struct bw_daemon_cfg, field) + 1)

static const struct opt opts[] = {
	{"data-dir", 'd', K_STR, 0, F(data_dir), 0, 0, "DIR",
	 "data directory (default: the current directory):\ndefensive.db, "
	 "files/, messages/, port.info",
	 0, 0},
	{"db", 0, K_STR, 0, F(db), 0, 0, "URL",
	 "where clients, keys, files and messages are\nkept: sqlite:PATH "
	 "(default: defensive.db in\nthe data directory) or postgresql://"
	 "USER@HOST\n:PORT/DB (password: PGPASSWORD or ~/.pgpass)",
	 0, 1},
	{"blobs", 0, K_STR, 0, F(blobs), 0, 0, "URL",
	 "where contents are kept: file:DIR (default:\nthe data directory) "
	 "or s3://BUCKET[/PREFIX]\n(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)",
	 0, 0},
	{"s3-endpoint", 0, K_STR, 0, F(s3_endpoint), 0, 0, "URL",
	 "the S3 server (default: AWS)", 0, 0},
	{"s3-region", 0, K_STR, 0, F(s3_region), 0, 0, "REGION",
	 "the S3 region (default: AWS_REGION, us-east-1)", 0, 0},
	{"s3-path-style", 0, K_ON, 0, F(s3_path_style), 0, 0, NULL,
	 "the bucket in the path: HOST/BUCKET/KEY", 0, 0},
	{"s3-credentials-file", 0, K_STR, 0, F(s3_credentials), 0, 0, "FILE",
	 "AWS credentials file (profile AWS_PROFILE)", 0, 0},
	{"s3-timeout", 0, K_NUM, 0, F(s3_timeout_s), 1, 3600, "SECONDS",
	 "a request to S3 that moves nothing this\nlong, tries included, is "
	 "given up (default 30)",
	 0, 0},
	{"blob-grace", 0, K_NUM, 0, F(blob_grace_s), 1, 86400u * 30u, "SECONDS",
	 "in S3, younger objects and uploads are not\nswept (default 3600)", 0,
	 0},
	{"node-name", 0, K_NAME, 0, F(node_name), 0, 0, "NAME",
	 "this node's name in logs, metrics and the\nconsole (default: the "
	 "host name)",
	 GIVEN(node_given), 0},
	{"bus", 0, K_STR, 0, F(bus), 0, 0, "URL",
	 "Redis between the nodes, for rooms across them:\nredis://[:PASSWORD@]"
	 "HOST[:PORT][/DB] (password\nalso REDISCLI_AUTH, "
	 "--bus-password-file)",
	 0, 1},
	{"bus-password-file", 0, K_STR, 0, F(bus_password_file), 0, 0, "FILE",
	 "read the bus's password from FILE (first line)", 0, 0},
	{"proxy-from", 0, K_NETS, 0, F(engine.proxy_from), 0, 0, "ADDRS",
	 "load balancers (ADDR[/BITS],...) whose connections\nto the shared "
	 "and rooms ports start with a PROXY\nheader (v1 or v2): its "
	 "address is the client's",
	 0, 0},
	{"port", 'p', K_NUM, 0, F(port.port), 0, 65535, "N",
	 "the vault's and messenger's port (default:\nport.info and "
	 "myport.info, else 1357; 0 = any)",
	 GIVEN(port_given), 0},
	{"listen", 'l', K_ADDR, 0, F(port.addr), 0, 0, "ADDR",
	 "vault and messenger address (default 0.0.0.0)", 0, 0},
	{"max-conns", 0, K_NUM, 0, F(port.max_conns), 1, 1000000, "N",
	 "simultaneous vault and messenger connections\n(default 16000)", 0, 0},
	{"max-conns-per-addr", 0, K_NUM, 0, F(port.max_conns_per_addr), 1,
	 1000000, "N",
	 "of those, from one address (default 4000; a\nquarter of "
	 "--max-conns, at least 1024)",
	 0, 0},
	{"max-file-size", 0, K_NUM, R, F(vault.max_file_size), 16, 0xFFFFFEF0u,
	 "N",
	 "largest upload in bytes of ciphertext\n(default and maximum "
	 "4294967024)",
	 0, 0},
	{"max-uploads", 0, K_NUM, R, F(vault.max_uploads), 1, 100000, "N",
	 "uploads in progress at once (default 256)", 0, 0},
	{"max-uploads-per-addr", 0, K_NUM, R, F(vault.max_uploads_per_addr), 1,
	 100000, "N", "of those, from one address (default 128)", 0, 0},
	{"min-rate", 0, K_NUM, R, F(vault.min_rate), 0, 1u << 30, "N",
	 "each --timeout window of an upload must bring\nN bytes/s (default "
	 "1024; 0 = off)",
	 0, 0},
	{"key-lifetime", 0, K_NUM, R, F(vault.key_lifetime_s), 0, 86400u * 365u,
	 "SEC",
	 "an AES key is refused this long after it was\nissued "
	 "(default 3600; 0 = never)",
	 0, 0},
	{"key-failures", 0, K_NUM, R, F(vault.key_failures), 1, 1000, "N",
	 "decryption failures that revoke a key (default 3)", 0, 0},
	{"max-reg-per-min", 0, K_NUM, R, F(max_reg_per_min), 0, 1000000, "N",
	 "registrations a minute from one address\n(default 1000; 0 = no "
	 "limit)",
	 0, 0},
	{"max-clients", 0, K_NUM, R, F(max_clients), 1, UINT32_MAX, "N",
	 "registered clients in all (default 1000000)", 0, 0},
	{"max-message-size", 0, K_NUM, R, F(msg.max_content), 0,
	 0xFFFFFFFFu - 25u, "N",
	 "largest message content in bytes (default\n1073741824)", 0, 0},
	{"max-queued", 0, K_NUM, R, F(msg.max_queued_n), 1, UINT32_MAX, "N",
	 "messages waiting for one recipient (default 100000)", 0, 0},
	{"max-queued-bytes", 0, K_NUM, R, F(msg.max_queued_bytes), 1,
	 UINT64_MAX / 2, "N", "their content bytes (default 4294967296)", 0, 0},
	{"pull-cap", 0, K_NUM, R, F(msg.pull_cap), 1024, 0xFFFFFFFFu, "N",
	 "largest answer to a pull (2104) in bytes\n(default 67108864; one "
	 "larger message goes alone)",
	 0, 0},
	{"max-bodies", 0, K_NUM, R, F(msg.max_bodies), 1, 100000, "N",
	 "messages arriving at once, from all clients\n(default 256)", 0, 0},
	{"max-bodies-per-addr", 0, K_NUM, R, F(msg.max_bodies_per_addr), 1,
	 100000, "N", "of those, from one address (default 128)", 0, 0},
	{"pull-max-messages", 0, K_NUM, R, F(msg.pull_max_n), 1, 100000000, "N",
	 "messages in one answer to a pull (default 10000)", 0, 0},
	{"max-pulls-per-client", 0, K_NUM, R, F(msg.max_pulls), 1, 100000, "N",
	 "pulls of one client answered at once; one more\nis refused "
	 "(default 4)",
	 0, 0},
	{"reply-memory", 0, K_NUM, R, F(msg.reply_memory), 65536,
	 UINT64_MAX / 2, "N",
	 "bytes all client lists and pulls being sent may\nhold at once "
	 "(default 67108864)",
	 0, 0},
	{"timeout", 0, K_SEC, 0, F(timeout_ms), 1, 86400, "SEC",
	 "close a vault or messenger connection silent\nthis long (default "
	 "30)",
	 0, 0},
	{"request-timeout", 0, K_SEC, 0, F(request_timeout_ms), 1, 86400, "SEC",
	 "a request header must complete within this\n(default 10)", 0, 0},
	{"shutdown-grace", 0, K_SEC, R, F(engine.shutdown_grace_ms), 0, 86400,
	 "SEC",
	 "on SIGTERM, let requests in progress finish\nfor this long "
	 "(default 10)",
	 0, 0},
	{"workers", 0, K_NUM, 0, F(engine.workers), 1, 16, "N",
	 "threads for the store's blocking calls (fsync,\nrename, S3 requests) "
	 "and password hashing\n(default 2; 16 with an S3 store)",
	 0, 0},
	{"console-port", 0, K_NUM, 0, F(console_listen.port), 0, 65535, "N",
	 "operator console port (default 8820)", 0, 0},
	{"console-listen", 0, K_ADDR, 0, F(console_listen.addr), 0, 0, "ADDR",
	 "console address (default 127.0.0.1)", 0, 0},
	{"console-secret", 0, K_SECRET, R, F(console.secret), 0, 0, "S",
	 "secret a console must send (required off\nloopback); visible to "
	 "local users in ps: prefer\nthe next two",
	 GIVEN(secret_given), 0},
	{"console-secret-file", 0, K_SECRET_FILE, R, F(console.secret), 0, 0,
	 "PATH",
	 "read the secret from PATH (first line);\n"
	 "BULWARK_CONSOLE_SECRET in the environment also\nsets it (the "
	 "options win)",
	 GIVEN(secret_given), 0},
	{"no-console", 0, K_OFF, 0, F(console_enabled), 0, 0, NULL,
	 "do not start the console", 0, 0},
	{"tls-port", 0, K_NUM, 0, F(tls_port), 0, 65535, "N",
	 "the vault and the messenger in TLS 1.3 on this\nport too (default: "
	 "off; 0 = any)",
	 0, 0},
	{"rooms-tls-port", 0, K_NUM, 0, F(rooms_tls_port), 0, 65535, "N",
	 "the group chat in TLS 1.3 on this port too\n(default: off; 0 = any)",
	 0, 0},
	{"tls-cert", 0, K_STR, R, F(tls_cert), 0, 0, "FILE",
	 "the TLS certificate (PEM, chain allowed), given\nwith its key "
	 "(--tls-key); default: a self-\nsigned one made with a P-256 key "
	 "in the data\ndirectory (tls.crt, tls.key); SIGHUP reads\nboth "
	 "again",
	 0, 0},
	{"tls-key", 0, K_STR, R, F(tls_key), 0, 0, "FILE",
	 "the certificate's private key (PEM)", 0, 0},
	{"tls-handshakes", 0, K_NUM, 0, F(engine.tls_rate), 0, 1000000, "N",
	 "TLS handshakes begun a second, in all; past\nit the TLS ports "
	 "accept nothing until the next\nsecond (default 1000; 0 = no "
	 "limit)",
	 0, 0},
	{"tls-handshakes-per-addr", 0, K_NUM, 0, F(engine.tls_rate_per_addr), 0,
	 1000000, "N",
	 "of those, from one address; past it its new\nTLS connections are "
	 "closed (default 100; 0 =\nno limit)",
	 0, 0},
	{"tls-bulk-readers", 0, K_NUM, 0, F(engine.tls_bulk_max), 0, 1000000,
	 "N",
	 "TLS connections that read half a MiB at a\ntime at once (an upload's "
	 "pace; each holds\nthat much while it sends; one address, a\nquarter "
	 "of them); the others read 64 KiB at a\ntime (default 64; 0 = no "
	 "limit)",
	 0, 0},
	{"require-tls", 0, K_ON, 0, F(require_tls), 0, 0, NULL,
	 "no plain listeners: only the TLS ports (and\nthe console and "
	 "metrics) are served",
	 0, 0},
	{"rooms-port", 0, K_NUM, 0, F(rooms_listen.port), 0, 65535, "N",
	 "group chat port (default 5555; 0 = any)", 0, 0},
	{"rooms-listen", 0, K_ADDR, 0, F(rooms_listen.addr), 0, 0, "ADDR",
	 "group chat address (default 0.0.0.0)", 0, 0},
	{"rooms-max-conns", 0, K_NUM, 0, F(rooms_listen.max_conns), 1, 1000000,
	 "N", "simultaneous chat connections (default 10000)", 0, 0},
	{"rooms-max-conns-per-addr", 0, K_NUM, 0,
	 F(rooms_listen.max_conns_per_addr), 1, 1000000, "N",
	 "of those, from one address (default 2500; a\nquarter of "
	 "--rooms-max-conns, at least 1024)",
	 0, 0},
	{"rooms-max-rooms", 0, K_NUM, R, F(rooms.max_rooms), 1, 10000000, "N",
	 "rooms at once (default 10000)", 0, 0},
	{"rooms-max-members", 0, K_NUM, R, F(rooms.max_members), 1, 1000000,
	 "N", "members of one room (default 1000)", 0, 0},
	{"rooms-rate", 0, K_NUM, R, F(rooms.rate), 0, 1000000, "N",
	 "lines a second from one member; past it its\nreads pause "
	 "(default 20; 0 = no limit)",
	 0, 0},
	{"rooms-burst", 0, K_NUM, R, F(rooms.burst), 1, 1000000, "N",
	 "lines a member may send at once (default 40)", 0, 0},
	{"rooms-queue", 0, K_NUM, 0, F(rooms.limits.out_max), 4096, 1u << 30,
	 "N",
	 "bytes queued for one member; past it the member\nis cut off "
	 "(default 262144)",
	 0, 0},
	{"rooms-pause", 0, K_NUM, R, F(rooms.pause_ms), 10, 10000, "MS",
	 "a partial line ends after this silence\n(default 150)", 0, 0},
	{"rooms-max-attempts", 0, K_NUM, R, F(rooms.max_attempts), 1, 1000, "N",
	 "wrong room ids and passwords before a close\n(default 5)", 0, 0},
	{"rooms-menu-timeout", 0, K_SEC, 0, F(rooms.limits.request_ms), 1, 3600,
	 "SEC",
	 "each step of the menu must be answered within\nthis (default 60); "
	 "the whole menu within ten times it",
	 0, 0},
	{"no-rooms", 0, K_OFF, 0, F(rooms_enabled), 0, 0, NULL,
	 "do not start the group chat", 0, 0},
	{"metrics-listen", 0, K_LISTEN, 0, F(metrics_listen), 0, 0, "HOST:PORT",
	 "serve Prometheus metrics at http://HOST:PORT/metrics\n(off by "
	 "default; a PORT alone means 127.0.0.1:PORT)",
	 GIVEN(metrics_enabled), 0},
	{"log-level", 0, K_LEVEL, R, F(log_level), 0, 0, "LEVEL",
	 "debug, info, warn or error (default info)", 0, 0},
	{"log-file", 0, K_STR, 0, F(log_file), 0, 0, "PATH",
	 "log to PATH instead of standard error; SIGHUP\nreopens it "
	 "(after a rotation)",
	 0, 0},
	{"config", 'c', K_CONFIG, 0, F(config_path), 0, 0, "PATH",
	 "read options from PATH first (key = value, one\na line, keys "
	 "the long options; flags win)",
	 0, 0},
};

#define OPTS_N (sizeof(opts) / sizeof(opts[0]))

const struct opt *
daemon_opt_find(const char *name)
{
	size_t i;

	for (i = 0; i < OPTS_N; i++) {
		if (strcmp(opts[i].name, name) == 0)
			return &opts[i];
	}
	return NULL;
}

int
bw_daemon_cfg_check(const struct bw_daemon_cfg *cfg, char *why, size_t why_cap)
{
	if (cfg->console_enabled &&
	    bw_net_is_loopback(cfg->console_listen.addr) != 1 &&
	    cfg->console.secret[0] == '\0') {
		snprintf(why, why_cap,
			 "the console on %s (not loopback) needs "
			 "--console-secret",
			 cfg->console_listen.addr);
		return BW_ECONFIG;
	}
	return bw_daemon_tls_cfg_check(cfg, why, why_cap);
}

static void
silent(void *arg, const char *name, int applied)
{
	(void)arg;
	(void)name;
	(void)applied;
}

int
bw_daemon_reload_check(const struct bw_daemon_cfg *running,
		       const struct bw_daemon_cfg *fresh, char *why,
		       size_t why_cap)
{
	struct bw_daemon_cfg *old = malloc(sizeof(*old)),
			     *next = malloc(sizeof(*next));
	int rc = BW_ENOMEM;

	if (old != NULL && next != NULL) {
		*old = *running;
		*next = *fresh;
		bw_daemon_opts_diff(old, next, silent, NULL);
		rc = bw_daemon_cfg_check(next, why, why_cap);
	} else {
		snprintf(why, why_cap, "out of memory");
	}
	if (old != NULL)
		bw_wipe(old, sizeof(*old));
	if (next != NULL)
		bw_wipe(next, sizeof(*next));
	free(old);
	free(next);
	return rc;
}

void
bw_daemon_opts_diff(struct bw_daemon_cfg *old, struct bw_daemon_cfg *fresh,
		    void (*report)(void *arg, const char *name, int applied),
		    void *arg)
{
	size_t i, k;
	int seen;

	for (i = 0; i < OPTS_N; i++) {
		const struct opt *o = &opts[i];
		uint8_t *a = (uint8_t *)old + o->off,
			*b = (uint8_t *)fresh + o->off;

		if (o->size == 0 || memcmp(a, b, o->size) == 0)
			continue;
		for (seen = 0, k = 0; k < i && !seen; k++)
			seen = opts[k].off == o->off; /* one field, two names */
		if (seen)
			continue;
		if (!o->reload)
			memcpy(b, a, o->size); /* kept: a restart changes it */
		report(arg, o->name, o->reload);
	}
}

int
bw_daemon_opt_is_key(const char *name)
{
	const struct opt *o = daemon_opt_find(name);

	return o != NULL && o->kind != K_CONFIG;
}

int
bw_daemon_opt_url_secret(const char *name)
{
	const struct opt *o = daemon_opt_find(name);

	return o != NULL && o->url_secret;
}

int
bw_daemon_opt_has_value(const char *name)
{
	const struct opt *o = daemon_opt_find(name);

	return o != NULL && o->kind != K_OFF && o->kind != K_ON;
}

size_t
bw_daemon_opts(const char **names, char *letters, size_t cap)
{
	size_t i;

	for (i = 0; i < OPTS_N && i < cap; i++) {
		names[i] = opts[i].name;
		letters[i] = opts[i].letter;
	}
	return OPTS_N;
}

void
bw_daemon_usage(FILE *f)
{
	char left[64];
	const char *h, *nl;
	size_t i;

	fprintf(f, "Usage: bulwarkd [OPTION]...\n"
		   "Bulwark daemon: the file vault and the messenger on one "
		   "port, the group\nchat on another, and the operator "
		   "console on 127.0.0.1.\n\n");
	for (i = 0; i < OPTS_N; i++) {
		const struct opt *o = &opts[i];

		snprintf(left, sizeof(left), "%c%c%c --%s%s%s",
			 o->letter ? '-' : ' ', o->letter ? o->letter : ' ',
			 o->letter ? ',' : ' ', o->name, o->arg ? " " : "",
			 o->arg ? o->arg : "");
		h = o->help;
		if (strlen(left) <= 26)
			fprintf(f, "  %-26s ", left);
		else
			fprintf(f, "  %s\n  %-26s ", left, "");
		while ((nl = strchr(h, '\n')) != NULL) {
			fprintf(f, "%.*s\n  %-26s ", (int)(nl - h), h, "");
			h = nl + 1;
		}
		fprintf(f, "%s\n", h);
	}
	fprintf(f, "  -h, --help                 this help\n"
		   "  -V, --version              version\n\n"
		   "Other forms:\n"
		   "  bulwarkd -t, --check-config [OPTION]...\n"
		   "      reach the data directory and the database the "
		   "options name, say\n      what is wrong, one line each, and "
		   "exit (0: all well)\n"
		   "  bulwarkd --fingerprint [OPTION]...\n"
		   "      print the TLS key's fingerprint (SHA256:..., as "
		   "clients show it)\n"
		   "  bulwarkd migrate --from DATA_DIR [OPTION]...\n"
		   "      copy a single-machine data directory (defensive.db "
		   "and its\n      contents) into the store the options name "
		   "(--db, --data-dir):\n      resumable, verified, the source "
		   "left as it was\n\n"
		   "Logs go to standard error, one line per event. Exit "
		   "status: 0 after a clean\nshutdown, 1 on a start-up "
		   "error, 2 on bad usage.\n");
}
