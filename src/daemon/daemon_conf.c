/* bulwarkd's configuration file: "key = value" lines, each key a long
 * option (see daemon_opts.c), refused with the file name and line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/util.h"
#include "daemon/daemon.h"

/* --- the configuration file ----------------------------------------------
 * "key = value", one a line; blank lines and lines whose first non-blank
 * character is '#' are ignored. Keys are the long options (not config);
 * a flag's value is yes or no. */

#define FILE_MAX (1024u * 1024u)

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
	value = trim(eq + 1);
	if (!bw_daemon_opt_is_key(key)) {
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

int
bw_daemon_read_config(struct bw_daemon_cfg *cfg, const char *path, char *why,
		      size_t why_cap)
{
	char *text = NULL, *line, *next, msg[512];
	size_t len = 0, no = 0;
	int rc;

	if ((rc = bw_read_small_file(path, FILE_MAX, &text, &len)) != 0) {
		snprintf(why, why_cap, "%s: %s", path, bw_strerror(rc));
		return BW_ECONFIG;
	}
	if (memchr(text, '\0', len) != NULL) {
		snprintf(why, why_cap, "%s: not a text file", path);
		rc = BW_ECONFIG;
		goto out;
	}
	for (line = text; line != NULL && rc == 0; line = next) {
		no++;
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		if ((rc = file_line(cfg, line, msg, sizeof(msg))) != 0)
			snprintf(why, why_cap, "%s:%zu: %s", path, no, msg);
	}
out:
	bw_wipe(text, len); /* it may hold the console secret */
	free(text);
	return rc;
}
