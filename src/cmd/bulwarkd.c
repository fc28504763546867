/* bulwarkd: the Bulwark daemon. Parses options (their table is the
 * daemon's, svc/daemon_opts.c), reads port.info, opens the data directory
 * and serves every service until SIGTERM/SIGINT.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "daemon/daemon.h"

#define OPTS_MAX 80

/* getopt_long's table, built from the daemon's option table. */
static void
build_options(struct option *lo, char *shorts, size_t cap)
{
	const char *names[OPTS_MAX];
	char letters[OPTS_MAX], *sp = shorts;
	size_t n = bw_daemon_opts(names, letters, OPTS_MAX), i;

	if (n > OPTS_MAX || n + 6 > cap)
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
	lo[n + 2] = (struct option){"from", required_argument, NULL, 1};
	lo[n + 3] = (struct option){"check-config", no_argument, NULL, 't'};
	lo[n + 4] = (struct option){"fingerprint", no_argument, NULL, 2};
	lo[n + 5] = (struct option){NULL, 0, NULL, 0};
	memcpy(sp, "hVt", 4); /* -t as nginx -t */
}

/* The passwords in a URL given on the command line overwritten in place,
 * so that ps shows '*'s: the daemon keeps a copy. */
static void
hide_password(char *url)
{
	size_t at = 0, len;

	while ((at = bw_url_secret_next(url, at, &len)) != SIZE_MAX) {
		memset(url + at, '*', len);
		at += len;
	}
}

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
	static const enum bw_log_level levels[] = {BW_LOG_DEBUG, BW_LOG_INFO,
						   BW_LOG_WARN, BW_LOG_ERROR};
	static struct option lo[OPTS_MAX + 6];
	static struct bw_daemon_args args;
	static struct bw_daemon d;
	char shorts[2 * OPTS_MAX + 4], why[4096], where[PATH_MAX];
	struct bw_daemon_cfg cfg;
	struct stat st;
	const char *name, *from = NULL;
	int ch, rc, migrate = 0, check = 0, fingerprint = 0;
	size_t i;

	/* Blocks of 1 MiB and more come from mmap and go back at free: glibc
	 * would otherwise raise its threshold after the first big free and
	 * keep each worker's 16 MiB of scrypt (a room password) resident
	 * for good. */
	(void)mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
	build_options(lo, shorts, OPTS_MAX + 6);
	if (argc > 1 && strcmp(argv[1], "migrate") == 0) {
		migrate = 1; /* bulwarkd migrate --from DIR [options] */
		argv[1] = argv[0];
		argv++;
		argc--;
	}
	while ((ch = getopt_long(argc, argv, shorts, lo, NULL)) != -1) {
		if (ch == 1) {
			from = optarg;
			continue;
		}
		if (ch == 't') {
			check = 1;
			continue;
		}
		if (ch == 2) {
			fingerprint = 1;
			continue;
		}
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
			/* getopt said which option, in one line */
			fprintf(stderr, "Try 'bulwarkd --help' for more "
					"information.\n");
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
		if (name == NULL || args.n == BW_DAEMON_ARGS_MAX) {
			fprintf(stderr, "bulwarkd: too many options\n");
			return 2;
		}
		if ((strcmp(name, "db") == 0 || strcmp(name, "bus") == 0) &&
		    optarg != NULL) {
			char *copy = strdup(optarg);

			if (copy == NULL) {
				fprintf(stderr, "bulwarkd: out of memory\n");
				return 1;
			}
			hide_password(optarg);
			optarg = copy; /* kept for the daemon's life */
		}
		args.name[args.n] = name;
		args.value[args.n++] = optarg;
	}
	if ((from != NULL && !migrate) || (check && migrate)) {
		fprintf(stderr, "bulwarkd: %s\n",
			from != NULL && !migrate
				? "--from goes with 'bulwarkd migrate'"
				: "--check-config does not go with migrate");
		return 2;
	}
	if (optind != argc) {
		fprintf(stderr, "bulwarkd: unexpected argument '%s'\n",
			argv[optind]);
		return 2;
	}
	/* a check's output is its findings, not log lines */
	if (check || fingerprint)
		bw_log_set_level(BW_LOG_NONE);
	if (bw_daemon_configure(&cfg, &args, why, sizeof(why)) != 0) {
		say_lines(check ? stdout : stderr,
			  check ? "error: " : "bulwarkd: ", why);
		return 2;
	}
	if (fingerprint)
		return bw_daemon_fingerprint(&cfg, stdout, stderr);
	if (!check)
		bw_log_set_level(levels[cfg.log_level]);
	bw_log_set_node(cfg.node_name);
	if (cfg.log_file[0] != '\0' && (rc = bw_log_open(cfg.log_file)) != 0) {
		fprintf(stderr, "bulwarkd: cannot open the log %s: %s\n",
			cfg.log_file, bw_strerror(rc));
		return 1;
	}
	if (bw_daemon_cfg_check(&cfg, why, sizeof(why)) != 0) {
		say_lines(check ? stdout : stderr,
			  check ? "error: " : "bulwarkd: ", why);
		return 2;
	}
	if (migrate) {
		if (from == NULL) {
			fprintf(stderr, "bulwarkd migrate: --from DATA_DIR is "
					"needed\n");
			return 2;
		}
		return bw_daemon_migrate(&cfg, from);
	}
	if (check)
		return bw_daemon_check(&cfg, stdout);
	/* the daemon's run: journald (or a pipe) that stops reading must not
	 * stop its loop */
	bw_log_never_wait();
	bw_log_detect_journal();
	if (stat(cfg.data_dir, &st) != 0)
		rc = errno;
	else
		rc = S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
	if (rc != 0) {
		fprintf(stderr,
			"bulwarkd: the data directory %s %s (create it, or "
			"name another with --data-dir)\n",
			cfg.data_dir,
			rc == ENOENT	? "does not exist"
			: rc == ENOTDIR ? "is not a directory"
					: bw_strerror(-rc));
		return 1;
	}
	/* where the data goes, whole: "." says nothing in a log */
	if (realpath(cfg.data_dir, where) == NULL)
		snprintf(where, sizeof(where), "%s", cfg.data_dir);
	bw_info("bulwarkd %s starting, data directory %s%s", BW_VERSION, where,
		strcmp(cfg.data_dir, ".") == 0
			? " (the current directory: --data-dir to choose "
			  "another)"
			: "");
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
