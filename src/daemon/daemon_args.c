/* bulwarkd's command line (daemon/daemon.h): getopt_long's table made
 * from the daemon's option table, the few options that are not
 * configuration (--help, --version, --check-config, --fingerprint,
 * migrate's --from), passwords in URLs hidden from ps; then what a run
 * needs before it opens anything (the log, the data directory).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bulwark/log.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "daemon/daemon.h"

#define OPTS_MAX 80
#define EXTRA	 6 /* help, version, from, check-config, fingerprint, end */

enum { OPT_FROM = 1, OPT_FINGERPRINT = 2, OPT_TABLE = 256 };

/* getopt_long's table, built from the daemon's option table. */
static void
build_options(struct option *lo, char *shorts)
{
	const char *names[OPTS_MAX];
	char letters[OPTS_MAX], *sp = shorts;
	size_t n = bw_daemon_opts(names, letters, OPTS_MAX), i;

	if (n > OPTS_MAX)
		abort(); /* the table outgrew OPTS_MAX: a build-time fix */
	for (i = 0; i < n; i++) {
		lo[i].name = names[i];
		lo[i].has_arg = bw_daemon_opt_has_value(names[i])
					? required_argument
					: no_argument;
		lo[i].flag = NULL;
		lo[i].val = OPT_TABLE + (int)i;
		if (letters[i]) {
			*sp++ = letters[i];
			*sp++ = ':';
		}
	}
	lo[n] = (struct option){"help", no_argument, NULL, 'h'};
	lo[n + 1] = (struct option){"version", no_argument, NULL, 'V'};
	lo[n + 2] = (struct option){"from", required_argument, NULL, OPT_FROM};
	lo[n + 3] = (struct option){"check-config", no_argument, NULL, 't'};
	lo[n + 4] = (struct option){"fingerprint", no_argument, NULL,
				    OPT_FINGERPRINT};
	lo[n + 5] = (struct option){NULL, 0, NULL, 0};
	memcpy(sp, "hVt", 4); /* -t as nginx -t */
}

/* The long name of what getopt returned: a table option's, by its index
 * or by its letter; NULL for none. */
static const char *
name_of(const struct option *lo, int ch)
{
	const char *names[OPTS_MAX];
	char letters[OPTS_MAX];
	size_t n = bw_daemon_opts(names, letters, OPTS_MAX), i;

	if (ch >= OPT_TABLE)
		return lo[ch - OPT_TABLE].name;
	for (i = 0; i < n && i < OPTS_MAX; i++) {
		if (letters[i] == ch)
			return names[i];
	}
	return NULL;
}

/* The passwords in a URL overwritten in place (ps shows '*'s); the value
 * kept is a copy, for the daemon's life. NULL for want of memory. */
static const char *
hide_password(char *url)
{
	char *copy = strdup(url);
	size_t at = 0, len;

	if (copy == NULL)
		return NULL;
	while ((at = bw_url_secret_next(url, at, &len)) != SIZE_MAX) {
		memset(url + at, '*', len);
		at += len;
	}
	return copy;
}

/* One option of the table: into args. 0 or an exit status. */
static int
take(const struct option *lo, int ch, struct bw_daemon_args *args)
{
	const char *name = name_of(lo, ch), *value = optarg;

	if (name == NULL || args->n == BW_DAEMON_ARGS_MAX) {
		fprintf(stderr, "bulwarkd: too many options\n");
		return 2;
	}
	if (value != NULL && bw_daemon_opt_url_secret(name) &&
	    (value = hide_password(optarg)) == NULL) {
		fprintf(stderr, "bulwarkd: out of memory\n");
		return 1;
	}
	args->name[args->n] = name;
	args->value[args->n++] = value;
	return 0;
}

int
bw_daemon_parse_argv(int argc, char **argv, struct bw_daemon_args *args,
		     struct bw_daemon_cmdline *cl)
{
	static struct option lo[OPTS_MAX + EXTRA];
	char shorts[2 * OPTS_MAX + 4];
	int ch, rc, migrate = 0, check = 0, fingerprint = 0;

	memset(cl, 0, sizeof(*cl));
	build_options(lo, shorts);
	if (argc > 1 && strcmp(argv[1], "migrate") == 0) {
		migrate = 1; /* bulwarkd migrate --from DIR */
		argv[1] = argv[0];
		argv++;
		argc--;
	}
	while ((ch = getopt_long(argc, argv, shorts, lo, NULL)) != -1) {
		switch (ch) {
		case OPT_FROM:
			cl->from = optarg;
			break;
		case 't':
			check = 1;
			break;
		case OPT_FINGERPRINT:
			fingerprint = 1;
			break;
		case 'h':
			cl->mode = BW_MODE_HELP;
			return 0;
		case 'V':
			cl->mode = BW_MODE_VERSION;
			return 0;
		case '?':
		case ':':
			/* getopt said which option, in one line */
			fprintf(stderr, "Try 'bulwarkd --help' for more "
					"information.\n");
			return 2;
		default:
			if ((rc = take(lo, ch, args)) != 0)
				return rc;
		}
	}
	if ((cl->from != NULL && !migrate) || (check && migrate)) {
		fprintf(stderr, "bulwarkd: %s\n",
			cl->from != NULL && !migrate
				? "--from goes with 'bulwarkd migrate'"
				: "--check-config does not go with migrate");
		return 2;
	}
	if (optind != argc) {
		fprintf(stderr, "bulwarkd: unexpected argument '%s'\n",
			argv[optind]);
		return 2;
	}
	/* the fingerprint wins, then a migration, then a check */
	cl->mode = fingerprint ? BW_MODE_FINGERPRINT
		   : migrate   ? BW_MODE_MIGRATE
		   : check     ? BW_MODE_CHECK
			       : BW_MODE_SERVE;
	return 0;
}

/* The data directory must exist: 0, or the exit status (said). */
static int
data_dir_ready(const struct bw_daemon_cfg *cfg)
{
	char where[PATH_MAX];
	struct stat st;
	int rc;

	if (stat(cfg->data_dir, &st) != 0)
		rc = errno;
	else
		rc = S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
	if (rc != 0) {
		fprintf(stderr,
			"bulwarkd: the data directory %s %s (create it, or "
			"name another with --data-dir)\n",
			cfg->data_dir,
			rc == ENOENT	? "does not exist"
			: rc == ENOTDIR ? "is not a directory"
					: bw_strerror(-rc));
		return 1;
	}
	/* where the data goes, whole: "." says nothing in a log */
	if (realpath(cfg->data_dir, where) == NULL)
		snprintf(where, sizeof(where), "%s", cfg->data_dir);
	bw_info("bulwarkd %s starting, data directory %s%s", BW_VERSION, where,
		strcmp(cfg->data_dir, ".") == 0
			? " (the current directory: --data-dir to choose "
			  "another)"
			: "");
	return 0;
}

int
bw_daemon_log_start(const struct bw_daemon_cfg *cfg, enum bw_daemon_mode m)
{
	static const enum bw_log_level levels[] = {BW_LOG_DEBUG, BW_LOG_INFO,
						   BW_LOG_WARN, BW_LOG_ERROR};
	int rc;

	if (m != BW_MODE_CHECK)
		bw_log_set_level(levels[cfg->log_level]);
	bw_log_set_node(cfg->node_name);
	if (cfg->log_file[0] != '\0' &&
	    (rc = bw_log_open(cfg->log_file)) != 0) {
		fprintf(stderr, "bulwarkd: cannot open the log %s: %s\n",
			cfg->log_file, bw_strerror(rc));
		return 1;
	}
	return 0;
}

int
bw_daemon_serve_start(const struct bw_daemon_cfg *cfg)
{
	/* journald (or a pipe) that stops reading must not stop the loop */
	bw_log_never_wait();
	bw_log_detect_journal();
	return data_dir_ready(cfg);
}
