/* known_servers (cli/tlsclient.h): where it is, the key pinned for an
 * address, a pin written, and bulwark trust-server, which pins the key a
 * server shows now.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bulwark/fsutil.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "cli/common.h"
#include "cli/tlsclient.h"

#define KNOWN_MAX (1024u * 1024u) /* what is read of known_servers */

int
bw_known_servers_path(char *out, size_t cap)
{
	const char *env = getenv("BULWARK_KNOWN_SERVERS");
	const char *xdg = getenv("XDG_CONFIG_HOME");
	const char *home = getenv("HOME");
	int n;

	if (env != NULL && env[0] != '\0')
		n = snprintf(out, cap, "%s", env);
	else if (xdg != NULL && xdg[0] == '/')
		n = snprintf(out, cap, "%s/bulwark/known_servers", xdg);
	else if (home != NULL && home[0] != '\0')
		n = snprintf(out, cap, "%s/.config/bulwark/known_servers",
			     home);
	else
		return BW_ECONFIG;
	return n < 0 || (size_t)n >= cap ? BW_ETOOBIG : 0;
}

/* The fingerprint pinned for name ("HOST:PORT") in the file's text, into
 * fp; its line number, or 0. */
static unsigned
known_pinned(const char *text, const char *name, char fp[BW_TLS_FP_CAP])
{
	const char *line = text, *nl, *sp;
	size_t nlen = strlen(name);
	unsigned no = 0;

	for (; *line != '\0'; line = nl + 1) {
		no++;
		nl = strchr(line, '\n');
		if (nl == NULL)
			nl = line + strlen(line) - 1;
		if (*line == '#' || strncmp(line, name, nlen) != 0 ||
		    line[nlen] != ' ')
			continue;
		sp = line + nlen + 1;
		snprintf(fp, BW_TLS_FP_CAP, "%.*s", (int)strcspn(sp, " \r\n"),
			 sp);
		return no;
	}
	return 0;
}

int
bw_cli_mkdirs_for(const char *path)
{
	char dir[4096];
	char *p;

	snprintf(dir, sizeof(dir), "%s", path);
	if ((p = strrchr(dir, '/')) == NULL || p == dir)
		return 0;
	*p = '\0';
	for (p = dir + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(dir, 0700) != 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int
bw_known_servers_pin(const char *path, const char *name, const char *fp)
{
	char *text = NULL, *out, *line, *nl;
	size_t len = 0, nlen = strlen(name), cap, used = 0;
	int rc;

	rc = bw_read_small_file(path, KNOWN_MAX, &text, &len);
	if (rc != 0 && rc != -ENOENT)
		return rc;
	cap = len + strlen(name) + strlen(fp) + 64;
	if ((out = malloc(cap)) == NULL) {
		free(text);
		return BW_ENOMEM;
	}
	/* every line kept but name's, then name's new one */
	for (line = text; line != NULL && *line != '\0'; line = nl) {
		nl = strchr(line, '\n');
		nl = nl != NULL ? nl + 1 : line + strlen(line);
		if (strncmp(line, name, nlen) == 0 && line[nlen] == ' ')
			continue;
		memcpy(out + used, line, (size_t)(nl - line));
		used += (size_t)(nl - line);
		if (used > 0 && out[used - 1] != '\n')
			out[used++] = '\n';
	}
	used += (size_t)snprintf(out + used, cap - used, "%s %s\n", name, fp);
	free(text);
	if ((rc = bw_cli_mkdirs_for(path)) == 0)
		rc = bw_fs_write_atomic(path, out, used, 0600);
	free(out);
	return rc;
}

int
bw_known_lookup(const char *name, struct bw_known *k)
{
	char *text = NULL;
	size_t len = 0;
	int rc;

	k->line = 0;
	k->old[0] = '\0';
	if (bw_known_servers_path(k->path, sizeof(k->path)) != 0)
		return BW_ECONFIG;
	rc = bw_read_small_file(k->path, KNOWN_MAX, &text, &len);
	if (rc == 0)
		k->line = known_pinned(text, name, k->old);
	free(text);
	return rc == -ENOENT ? 0 : rc;
}

/* --- bulwark trust-server ------------------------------------------------
 */

static void
trust_usage(FILE *f)
{
	fprintf(f,
		"Usage: bulwark trust-server [tls://]HOST:PORT\n"
		"Pin the key the server at HOST:PORT shows now in "
		"known_servers,\nreplacing the one pinned before (after its "
		"operator confirmed it:\nbulwarkd --fingerprint prints it on "
		"the server).\n\n"
		"  -t, --timeout SEC   connect and handshake within SEC "
		"(default 10)\n"
		"  -h, --help          this help\n\n"
		"known_servers: $BULWARK_KNOWN_SERVERS, else "
		"$XDG_CONFIG_HOME/bulwark/,\nelse ~/.config/bulwark/.\n");
}

int
bw_trust_server_main(int argc, char **argv)
{
	static const struct option lo[] = {
		{"timeout", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	char host[300], fp[BW_TLS_FP_CAP], name[320], why[512];
	unsigned timeout_ms = 10000;
	struct bw_ctls *c = NULL;
	struct bw_known k;
	const char *rest;
	uint16_t port;
	int ch, rc, fd = -1;

	while ((ch = getopt_long(argc, argv, "t:h", lo, NULL)) != -1) {
		if ((rc = bw_cli_common_opt("bulwark trust-server", ch, optarg,
					    &timeout_ms, trust_usage)) !=
		    BW_CLI_GO_ON)
			return rc;
	}
	if (optind + 1 != argc) {
		trust_usage(stderr);
		return BW_EXIT_USAGE;
	}
	(void)bw_tls_addr(argv[optind], &rest);
	if (bw_parse_hostport(rest, host, sizeof(host), &port) != 0) {
		fprintf(stderr,
			"bulwark trust-server: '%s' is not tls://HOST:PORT\n",
			argv[optind]);
		return BW_EXIT_USAGE;
	}
	if (bw_known_servers_path(k.path, sizeof(k.path)) != 0) {
		fprintf(stderr, "bulwark trust-server: no place for "
				"known_servers (set HOME)\n");
		return BW_EXIT_USAGE;
	}
	if ((rc = bw_net_connect(host, port, timeout_ms, &fd)) != 0) {
		fprintf(stderr, "bulwark trust-server: %s\n",
			bw_cli_connect_error(why, sizeof(why), host, port, rc));
		return BW_EXIT_FATAL;
	}
	rc = bw_ctls_open(&c, fd, "bulwark trust-server", host, port,
			  timeout_ms, 0, NULL, why, sizeof(why));
	if (rc != 0) {
		fprintf(stderr, "bulwark trust-server: %s\n", why);
		close(fd);
		return rc;
	}
	bw_ctls_fingerprint(c, fp);
	bw_ctls_end(c);
	bw_ctls_free(c);
	close(fd);
	snprintf(name, sizeof(name), "%s:%u", host, port);
	(void)bw_known_lookup(name, &k); /* unreadable: written anew */
	if ((rc = bw_known_servers_pin(k.path, name, fp)) != 0) {
		fprintf(stderr, "bulwark trust-server: cannot write %s: %s\n",
			k.path, bw_strerror(rc));
		return BW_EXIT_USAGE;
	}
	/* a session kept from the old key's server would show its key */
	(void)bw_tls_session_forget(name, NULL);
	if (k.old[0] != '\0' && strcmp(k.old, fp) != 0)
		printf("%s%s: pinned %s (was %s) in %s\n", BW_TLS_SCHEME, name,
		       fp, k.old, k.path);
	else
		printf("%s%s: pinned %s in %s\n", BW_TLS_SCHEME, name, fp,
		       k.path);
	return BW_EXIT_OK;
}
