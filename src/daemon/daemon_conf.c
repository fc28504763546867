/* bulwarkd's configuration file: "key = value" lines, each key a long
 * option (see daemon_opts.c), refused with the file name and line; and the
 * configuration's assembly: defaults, the file, the command line, the
 * environment, and port.info.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/log.h"
#include "bulwark/util.h"
#include "daemon/daemon.h"

/* --- the configuration file ----------------------------------------------
 * "key = value", one a line; blank lines and lines whose first non-blank
 * character is '#' are ignored, and so is a '#' after a blank and what
 * follows it on its line (a comment after a value, as nginx, HAProxy and
 * postgresql.conf allow). A value in double quotes is taken as written
 * between them, '#' and blanks included (a secret may hold them). Keys
 * are the long options (not config); a flag's value is yes or no. */

#define FILE_MAX (1024u * 1024u)
#define KEY_NEAR 64 /* keys longer than this get no suggestion */

/* The edit distance of a and b, '_' taken for '-' (a and b shorter than
 * KEY_NEAR). */
static size_t
distance(const char *a, const char *b)
{
	size_t row[KEY_NEAR + 1], i, j, la = strlen(a), lb = strlen(b);
	size_t diag, up, cost;

	for (j = 0; j <= lb; j++)
		row[j] = j;
	for (i = 1; i <= la; i++) {
		diag = row[0];
		row[0] = i;
		for (j = 1; j <= lb; j++) {
			up = row[j];
			cost = (a[i - 1] == '_' ? '-' : a[i - 1]) != b[j - 1];
			row[j] = diag + cost;
			if (up + 1 < row[j])
				row[j] = up + 1;
			if (row[j - 1] + 1 < row[j])
				row[j] = row[j - 1] + 1;
			diag = up;
		}
	}
	return row[lb];
}

/* The key an unknown one was likely meant to be (as git says "did you
 * mean"), NULL if none is near: at most 1 edit in 4 characters, at least
 * 1. */
static const char *
nearest_key(const char *key)
{
	const char *names[256], *best = NULL;
	char letters[256];
	size_t n = bw_daemon_opts(names, letters, 256), i, d;
	size_t best_d = SIZE_MAX, len = strlen(key);
	size_t most = len / 4 > 1 ? len / 4 : 1;

	if (len >= KEY_NEAR)
		return NULL;
	for (i = 0; i < n; i++) {
		if (!bw_daemon_opt_is_key(names[i]) ||
		    strlen(names[i]) >= KEY_NEAR)
			continue;
		if ((d = distance(key, names[i])) < best_d) {
			best_d = d;
			best = names[i];
		}
	}
	return best_d <= most ? best : NULL;
}

static char *
trim(char *p)
{
	char *end = p + strlen(p);

	while (*p == ' ' || *p == '\t')
		p++;
	while (end > p &&
	       (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		*--end = '\0';
	return p;
}

/* value (trimmed) without its trailing comment, or the text between its
 * quotes; NULL if a quote is not closed or something but a comment
 * follows it. */
static char *
unquote(char *value)
{
	char *p, *end;

	if (value[0] == '"') {
		if ((end = strchr(value + 1, '"')) == NULL)
			return NULL;
		*end = '\0';
		p = trim(end + 1);
		return p[0] == '\0' || p[0] == '#' ? value + 1 : NULL;
	}
	for (p = value; *p != '\0'; p++) {
		if (*p == '#' && p > value && (p[-1] == ' ' || p[-1] == '\t')) {
			*p = '\0';
			break;
		}
	}
	return trim(value);
}

static int
file_line(struct bw_daemon_cfg *cfg, char *line, char *why, size_t why_cap)
{
	char *eq, *key, *value;

	line = trim(line);
	if (line[0] == '\0' || line[0] == '#')
		return 0;
	if ((eq = strchr(line, '=')) == NULL) {
		snprintf(why, why_cap, "not \"key = value\"");
		return BW_ECONFIG;
	}
	*eq = '\0';
	key = trim(line);
	if ((value = unquote(trim(eq + 1))) == NULL) {
		snprintf(why, why_cap,
			 "%s: a quote not closed, or more after it", key);
		return BW_ECONFIG;
	}
	if (!bw_daemon_opt_is_key(key)) {
		const char *near = nearest_key(key);

		if (near != NULL)
			snprintf(why, why_cap,
				 "unknown key '%s' (did you mean '%s'?)", key,
				 near);
		else
			snprintf(why, why_cap, "unknown key '%s'", key);
		return BW_ECONFIG;
	}
	if (!bw_daemon_opt_has_value(key)) { /* a flag */
		if (strcmp(value, "yes") == 0 || strcmp(value, "true") == 0)
			return bw_daemon_opt_set(cfg, key, NULL, why, why_cap);
		if (strcmp(value, "no") == 0 || strcmp(value, "false") == 0)
			return 0;
		snprintf(why, why_cap, "%s needs yes or no, not '%s'", key,
			 value);
		return BW_ECONFIG;
	}
	return bw_daemon_opt_set(cfg, key, value, why, why_cap);
}

/* The lines of text[0..len) (text[len] is a NUL; the lines are cut in
 * place) applied to cfg. Every line is read, so that one run names every
 * problem: each says "name:LINE: ...", one a line in why (as many as fit,
 * then how many more). */
static int
parse_text(struct bw_daemon_cfg *cfg, char *text, size_t len, const char *name,
	   char *why, size_t why_cap)
{
	char *line, *next, msg[512];
	size_t no = 0, used = 0, more = 0, room;
	int rc = 0, r, m;

	if (memchr(text, '\0', len) != NULL) {
		snprintf(why, why_cap, "%s: not a text file", name);
		return BW_ECONFIG;
	}
	/* why is written only on a problem */
	for (line = text; line != NULL; line = next) {
		no++;
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		if ((r = file_line(cfg, line, msg, sizeof(msg))) == 0)
			continue;
		if (rc == 0)
			rc = r;
		/* room kept for the count of those that do not fit */
		room = why_cap > used + 48 ? why_cap - used - 48 : 0;
		m = snprintf(why + used, room, "%s%s:%zu: %s",
			     used > 0 ? "\n" : "", name, no, msg);
		if (m > 0 && (size_t)m < room)
			used += (size_t)m;
		else if (used == 0 && room > 0)
			used = strlen(why); /* the first, cut short: kept */
		else
			more++;
	}
	if (more > 0 && used < why_cap)
		snprintf(why + used, why_cap - used,
			 "%s%s: and %zu more problem(s)", used > 0 ? "\n" : "",
			 name, more);
	return rc;
}

int
bw_daemon_parse_config(struct bw_daemon_cfg *cfg, const char *text, size_t len,
		       const char *name, char *why, size_t why_cap)
{
	char *copy;
	int rc;

	if ((copy = malloc(len + 1)) == NULL) {
		snprintf(why, why_cap, "%s: %s", name, bw_strerror(BW_ENOMEM));
		return BW_ENOMEM;
	}
	if (len > 0)
		memcpy(copy, text, len);
	copy[len] = '\0';
	rc = parse_text(cfg, copy, len, name, why, why_cap);
	bw_wipe(copy, len + 1); /* it may hold the console secret */
	free(copy);
	return rc;
}

int
bw_daemon_read_config(struct bw_daemon_cfg *cfg, const char *path, char *why,
		      size_t why_cap)
{
	char *text = NULL;
	size_t len = 0;
	int rc;

	if ((rc = bw_read_small_file(path, FILE_MAX, &text, &len)) != 0) {
		snprintf(why, why_cap, "%s: %s", path, bw_strerror(rc));
		return BW_ECONFIG;
	}
	rc = parse_text(cfg, text, len, path, why, why_cap);
	bw_wipe(text, len); /* it may hold the console secret */
	free(text);
	return rc;
}

/* --- the assembly -------------------------------------------------------- */

/* port.info (the vault's) and myport.info (the messenger's): a port number
 * each, white space ignored. The first valid one is the shared port; a
 * second, different one is listened on too. */
static void
port_from_files(struct bw_daemon_cfg *cfg)
{
	static const char *names[] = {"port.info", "myport.info"};
	char path[4200], *text = NULL;
	uint16_t found[2] = {0, 0};
	size_t len, i, n = 0;
	uint64_t port;

	cfg->port2 = 0;
	for (i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/%s", cfg->data_dir, names[i]);
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
		bw_warn("no port.info or myport.info in %s; using port 1357",
			cfg->data_dir);
		cfg->port.port = 1357;
		return;
	}
	if (n == 2 && found[1] != found[0])
		cfg->port2 = found[1];
	cfg->port.port = found[0];
}

int
bw_daemon_configure(struct bw_daemon_cfg *cfg,
		    const struct bw_daemon_args *args, char *why,
		    size_t why_cap)
{
	char msg[512];
	const char *env;
	unsigned i;
	int rc;

	bw_daemon_cfg_defaults(cfg);
	for (i = 0; i < args->n; i++) {
		if (strcmp(args->name[i], "config") == 0 &&
		    (rc = bw_daemon_read_config(cfg, args->value[i], why,
						why_cap)) != 0)
			return rc;
	}
	for (i = 0; i < args->n; i++) {
		if ((rc = bw_daemon_opt_set(cfg, args->name[i], args->value[i],
					    msg, sizeof(msg))) != 0) {
			snprintf(why, why_cap, "--%s", msg);
			return rc;
		}
	}
	if (!cfg->secret_given &&
	    (env = getenv("BULWARK_CONSOLE_SECRET")) != NULL &&
	    env[0] != '\0' &&
	    (rc = bw_daemon_opt_set(cfg, "console-secret", env, msg,
				    sizeof(msg))) != 0) {
		snprintf(why, why_cap, "BULWARK_CONSOLE_SECRET: %s", msg);
		return rc;
	}
	if (!cfg->port_given)
		port_from_files(cfg);
	return 0;
}
