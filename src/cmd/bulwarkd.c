/* bulwarkd: the Bulwark daemon. Parses options (their table is the
 * daemon's, svc/daemon_opts.c), reads port.info, opens the data directory
 * and serves every service until SIGTERM/SIGINT.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "svc/daemon.h"

/* port.info (the vault's) and myport.info (the messenger's): a port number
 * each, white space ignored. The first valid one is the shared port; a
 * second, different one is listened on too (*second, else 0). */
static uint16_t
port_from_files(const char *dir, uint16_t *second)
{
	static const char *names[] = {"port.info", "myport.info"};
	char path[4200], *text = NULL;
	uint16_t found[2] = {0, 0};
	size_t len, i, n = 0;
	uint64_t port;

	*second = 0;
	for (i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (bw_read_small_file(path, 64, &text, &len) != 0)
			continue;
		if (bw_parse_u64(text, 1, 65535, &port) == 0)
			found[n++] = (uint16_t)port;
		else
			bw_warn("%s does not hold a port number; ignored",
				path);
		free(text);
		text = NULL;
	}
	if (n == 0) {
		bw_warn("no port.info or myport.info in %s; using port "
			"1357",
			dir);
		return 1357;
	}
	if (n == 2 && found[1] != found[0])
		*second = found[1];
	return found[0];
}

#define OPTS_MAX 64

/* getopt_long's table, built from the daemon's option table. */
static void
build_options(struct option *lo, char *shorts, size_t cap)
{
	const char *names[OPTS_MAX];
	char letters[OPTS_MAX], *sp = shorts;
	size_t n = bw_daemon_opts(names, letters, OPTS_MAX), i;

	if (n > OPTS_MAX || n + 3 > cap)
		abort(); /* the table outgrew OPTS_MAX: a build-time fix */
	for (i = 0; i < n; i++) {
		lo[i].name = names[i];
		lo[i].has_arg = bw_daemon_opt_has_value(names[i])
					? required_argument
					: no_argument;
		lo[i].flag = NULL;
		lo[i].val = letters[i] ? letters[i] : 256 + (int)i;
		if (letters[i]) {
			*sp++ = letters[i];
			*sp++ = ':';
		}
	}
	lo[n] = (struct option){"help", no_argument, NULL, 'h'};
	lo[n + 1] = (struct option){"version", no_argument, NULL, 'V'};
	lo[n + 2] = (struct option){NULL, 0, NULL, 0};
	memcpy(sp, "hV", 3);
}

int
main(int argc, char **argv)
{
	static const int levels[] = {BW_LOG_DEBUG, BW_LOG_INFO, BW_LOG_WARN,
				     BW_LOG_ERROR};
	static struct option lo[OPTS_MAX + 3];
	char shorts[2 * OPTS_MAX + 3], why[512];
	struct bw_daemon_cfg cfg;
	static struct bw_daemon d;
	const char *env, *name;
	int ch, idx, rc;
	size_t i;

	bw_daemon_cfg_defaults(&cfg);
	build_options(lo, shorts, OPTS_MAX + 3);
	while ((ch = getopt_long(argc, argv, shorts, lo, &idx)) != -1) {
		if (ch == 'h') {
			bw_daemon_usage(stdout);
			return 0;
		}
		if (ch == 'V') {
			printf("bulwarkd %s (vault protocol 3, messenger 2)\n",
			       BW_VERSION);
			return 0;
		}
		if (ch == '?' || ch == ':') {
			bw_daemon_usage(stderr);
			return 2;
		}
		name = NULL;
		if (ch >= 256) {
			name = lo[ch - 256].name;
		} else {
			for (i = 0; lo[i].name != NULL && name == NULL; i++) {
				if (lo[i].val == ch)
					name = lo[i].name;
			}
		}
		if (name == NULL || bw_daemon_opt_set(&cfg, name, optarg, why,
						      sizeof(why)) != 0) {
			fprintf(stderr, "bulwarkd: --%s\n",
				name != NULL ? why : "?");
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "bulwarkd: unexpected argument '%s'\n",
			argv[optind]);
		return 2;
	}
	bw_log_set_level(levels[cfg.log_level]);
	if (!cfg.port_given)
		cfg.port.port = port_from_files(cfg.data_dir, &cfg.port2);
	if (!cfg.secret_given &&
	    (env = getenv("BULWARK_CONSOLE_SECRET")) != NULL &&
	    env[0] != '\0' &&
	    bw_daemon_opt_set(&cfg, "console-secret", env, why, sizeof(why)) !=
		    0) {
		fprintf(stderr, "bulwarkd: BULWARK_CONSOLE_SECRET: %s\n", why);
		return 2;
	}
	if (cfg.console_enabled &&
	    bw_net_is_loopback(cfg.console_listen.addr) != 1 &&
	    cfg.console.secret[0] == '\0') {
		fprintf(stderr,
			"bulwarkd: the console on %s (not loopback) needs "
			"--console-secret\n",
			cfg.console_listen.addr);
		return 2;
	}
	bw_info("bulwarkd %s starting, data directory %s", BW_VERSION,
		cfg.data_dir);
	rc = bw_daemon_open(&d, &cfg);
	bw_wipe(cfg.console.secret, sizeof(cfg.console.secret));
	if (rc != 0) {
		bw_daemon_close(&d);
		fprintf(stderr, "bulwarkd: cannot start: %s\n",
			bw_strerror(rc));
		return 1;
	}
	rc = bw_daemon_run(&d);
	bw_daemon_close(&d);
	return rc == 0 ? 0 : 1;
}
