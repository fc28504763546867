/* bulwarkd: the Bulwark daemon. Its command line is the daemon's to read
 * (daemon_args.c, the option table in daemon_opts.c); this says what the
 * run is: help, a check, a migration, or serving every service until
 * SIGTERM/SIGINT.
 */
#include <malloc.h>
#include <stdio.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "daemon/daemon.h"

/* Each line of text, prefixed (a configuration file's problems, one a
 * line). */
static void
say_lines(FILE *out, const char *prefix, const char *text)
{
	const char *nl;

	for (;;) {
		nl = strchr(text, '\n');
		fprintf(out, "%s%.*s\n", prefix,
			nl != NULL ? (int)(nl - text) : (int)strlen(text),
			text);
		if (nl == NULL)
			break;
		text = nl + 1;
	}
}

int
main(int argc, char **argv)
{
	static struct bw_daemon_args args;
	static struct bw_daemon d;
	struct bw_daemon_cmdline cl;
	struct bw_daemon_cfg cfg;
	char why[4096];
	int rc;

	/* Blocks of 1 MiB and more come from mmap and go back at free: glibc
	 * would otherwise raise its threshold after the first big free and
	 * keep each worker's 16 MiB of scrypt (a room password) resident
	 * for good. */
	(void)mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
	if ((rc = bw_daemon_parse_argv(argc, argv, &args, &cl)) != 0)
		return rc;
	if (cl.mode == BW_MODE_HELP) {
		bw_daemon_usage(stdout);
		return 0;
	}
	if (cl.mode == BW_MODE_VERSION) {
		printf("bulwarkd %s (vault protocol 3, messenger 2)\n",
		       BW_VERSION);
		return 0;
	}
	/* a check's output is its findings, not log lines */
	if (cl.mode == BW_MODE_CHECK || cl.mode == BW_MODE_FINGERPRINT)
		bw_log_set_level(BW_LOG_NONE);
	if (bw_daemon_configure(&cfg, &args, why, sizeof(why)) != 0 ||
	    (cl.mode != BW_MODE_FINGERPRINT &&
	     ((rc = bw_daemon_log_start(&cfg, cl.mode)) != 0 ||
	      bw_daemon_cfg_check(&cfg, why, sizeof(why)) != 0))) {
		if (rc != 0)
			return rc;
		say_lines(cl.mode == BW_MODE_CHECK ? stdout : stderr,
			  cl.mode == BW_MODE_CHECK ? "error: " : "bulwarkd: ",
			  why);
		return 2;
	}
	switch (cl.mode) {
	case BW_MODE_FINGERPRINT:
		return bw_daemon_fingerprint(&cfg, stdout, stderr);
	case BW_MODE_MIGRATE:
		if (cl.from == NULL) {
			fprintf(stderr, "bulwarkd migrate: --from DATA_DIR is "
					"needed\n");
			return 2;
		}
		return bw_daemon_migrate(&cfg, cl.from);
	case BW_MODE_CHECK:
		return bw_daemon_check(&cfg, stdout);
	default:
		break;
	}
	if ((rc = bw_daemon_serve_start(&cfg)) != 0)
		return rc;
	rc = bw_daemon_open(&d, &cfg, &args);
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
