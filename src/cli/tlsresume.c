/* The client's TLS sessions kept between runs (cli/tlsclient.h), so that a
 * second `bulwark send` to the same server resumes instead of paying a
 * full handshake: one line per server and identity in
 * $BULWARK_TLS_SESSIONS, else $XDG_CACHE_HOME/bulwark/tls-sessions, else
 * ~/.cache/bulwark/tls-sessions (0600 in 0700 directories; an empty
 * BULWARK_TLS_SESSIONS keeps none):
 *
 *   HOST:PORT IDENTITY ENDS SESSION
 *
 * IDENTITY is the hex SHA-256 of the identity's public key (or "-" for a
 * connection that proves none), ENDS when the server stops taking the
 * ticket (Unix seconds), SESSION the ticket's session in hex DER. A
 * session proves the identity to that server until it ends, as the key
 * does: the file is kept as private as priv.key. A line that cannot be
 * read is dropped, never an error: the cost is a full handshake.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bulwark/crypto.h"
#include "bulwark/fsutil.h"
#include "bulwark/util.h"
#include "cli/tlsclient.h"

#define SESSIONS_MAX	64u   /* lines kept; the newest first */
#define SESSION_DER_MAX 8192u /* a ticket's session, as DER */
#define FILE_MAX	(SESSIONS_MAX * (2u * SESSION_DER_MAX + 400u))

int
bw_tls_sessions_path(char *out, size_t cap)
{
	const char *env = getenv("BULWARK_TLS_SESSIONS");
	const char *xdg = getenv("XDG_CACHE_HOME");
	const char *home = getenv("HOME");
	int n;

	if (env != NULL)
		n = env[0] != '\0' ? snprintf(out, cap, "%s", env) : -1;
	else if (xdg != NULL && xdg[0] == '/')
		n = snprintf(out, cap, "%s/bulwark/tls-sessions", xdg);
	else if (home != NULL && home[0] != '\0')
		n = snprintf(out, cap, "%s/.cache/bulwark/tls-sessions", home);
	else
		n = -1;
	if (n < 0)
		return BW_ENOTFOUND; /* none kept */
	return (size_t)n >= cap ? BW_ETOOBIG : 0;
}

int
bw_tls_session_who(const struct bw_rsa *key, char who[BW_TLS_WHO_CAP])
{
	uint8_t spki[BW_RSA_PUB_LEN], h[BW_SHA256_LEN];
	int rc;

	if (key == NULL) {
		snprintf(who, BW_TLS_WHO_CAP, "-");
		return 0;
	}
	if ((rc = bw_rsa_to_spki(key, spki)) != 0 ||
	    (rc = bw_sha256(spki, sizeof(spki), h)) != 0)
		return rc;
	bw_hex_encode(h, sizeof(h), who);
	return 0;
}

struct sess_line {
	const char *name, *who, *hex;
	size_t name_len, who_len, hex_len;
	long long ends;
};

/* A line (without its newline) cut into its four fields: 0, or BW_EPROTO. */
static int
parse_line(const char *line, size_t len, struct sess_line *l)
{
	const char *f[4], *end = line + len, *sp;
	size_t flen[4];
	char num[24];
	int i;

	for (i = 0; i < 4; i++) {
		sp = i < 3 ? memchr(line, ' ', (size_t)(end - line)) : end;
		if (sp == NULL || sp == line)
			return BW_EPROTO;
		f[i] = line;
		flen[i] = (size_t)(sp - line);
		line = sp < end ? sp + 1 : end;
	}
	if (flen[2] >= sizeof(num))
		return BW_EPROTO;
	memcpy(num, f[2], flen[2]);
	num[flen[2]] = '\0';
	*l = (struct sess_line){f[0],
				f[1],
				f[3],
				flen[0],
				flen[1],
				flen[3],
				strtoll(num, NULL, 10)};
	return 0;
}

static int
is_for(const struct sess_line *l, const char *name, const char *who)
{
	return l->name_len == strlen(name) &&
	       memcmp(l->name, name, l->name_len) == 0 &&
	       (who == NULL || (l->who_len == strlen(who) &&
				memcmp(l->who, who, l->who_len) == 0));
}

/* The next line of text at *at (NUL-terminated): its length without the
 * newline, *at moved past it; 0 at the end. */
static size_t
next_line(char **at, const char **line, int *whole)
{
	char *p = *at, *nl;

	if (*p == '\0')
		return 0;
	nl = strchr(p, '\n');
	*whole = nl != NULL;
	*at = nl != NULL ? nl + 1 : p + strlen(p);
	*line = p;
	return nl != NULL ? (size_t)(nl - p) : strlen(p);
}

int
bw_tls_session_load(const char *name, const char *who, uint8_t **der,
		    size_t *len)
{
	char path[4096], *text = NULL, *at;
	const char *line;
	struct sess_line l;
	size_t tlen = 0, n;
	int whole, rc = BW_ENOTFOUND;

	*der = NULL;
	*len = 0;
	if (bw_tls_sessions_path(path, sizeof(path)) != 0 ||
	    bw_read_small_file(path, FILE_MAX, &text, &tlen) != 0)
		return BW_ENOTFOUND;
	for (at = text;
	     rc == BW_ENOTFOUND && (n = next_line(&at, &line, &whole)) != 0;) {
		if (parse_line(line, n, &l) != 0 || !is_for(&l, name, who) ||
		    l.ends <= (long long)time(NULL) || l.hex_len % 2 != 0 ||
		    l.hex_len / 2 > SESSION_DER_MAX)
			continue;
		if ((*der = malloc(l.hex_len / 2)) == NULL) {
			rc = BW_ENOMEM;
		} else if (bw_hex_decode(l.hex, l.hex_len, *der,
					 l.hex_len / 2) != 0) {
			bw_secure_free(*der, l.hex_len / 2);
			*der = NULL;
		} else {
			*len = l.hex_len / 2;
			rc = 0;
		}
	}
	bw_secure_free(text, tlen);
	return rc;
}

/* n bytes in place of path, whole or not at all; not synced: a cache whose
 * loss costs a full handshake is not worth an fsync's wait. */
static int
write_cache(const char *path, const void *p, size_t n)
{
	char tmp[4200];
	int fd, rc;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp-%ld", path, (long)getpid()) >=
	    (int)sizeof(tmp))
		return BW_ETOOBIG;
	(void)unlink(tmp); /* a dead run's of the same pid */
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		  0600);
	if (fd < 0)
		return -errno;
	rc = bw_fs_write_full(fd, p, n);
	if (close(fd) != 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, path) != 0)
		rc = -errno;
	if (rc != 0)
		(void)unlink(tmp);
	return rc;
}

/* The file rewritten: head first (NULL: none), then every line kept but
 * name's (who's only, unless who is NULL) and those past their end, at
 * most SESSIONS_MAX lines in all. */
static int
rewrite(const char *name, const char *who, const char *head)
{
	char path[4096], *text = NULL, *out, *at;
	const char *line;
	struct sess_line l;
	size_t tlen = 0, used = 0, cap, kept = 0, n;
	long long now = (long long)time(NULL);
	int whole, rc;

	if ((rc = bw_tls_sessions_path(path, sizeof(path))) != 0)
		return rc == BW_ENOTFOUND ? 0 : rc;
	rc = bw_read_small_file(path, FILE_MAX, &text, &tlen);
	if (rc != 0 && head == NULL)
		return rc == -ENOENT ? 0 : rc;
	if (rc != 0 && rc != BW_ETOOBIG && rc != -EAGAIN && rc != -ENOENT)
		return rc; /* not a file to replace (a directory, unreadable) */
	if (rc != 0) {
		text = NULL; /* missing, over its cap or changing: begun anew */
		tlen = 0;
	}
	cap = tlen + (head != NULL ? strlen(head) : 0) + 1;
	if ((out = malloc(cap)) == NULL) {
		bw_secure_free(text, tlen);
		return BW_ENOMEM;
	}
	if (head != NULL) {
		used = strlen(head);
		memcpy(out, head, used);
		kept = 1;
	}
	for (at = text != NULL ? text : "";
	     kept < SESSIONS_MAX && (n = next_line(&at, &line, &whole)) != 0;) {
		if (!whole || parse_line(line, n, &l) != 0 || l.ends <= now ||
		    is_for(&l, name, who))
			continue;
		memcpy(out + used, line, n + 1);
		used += n + 1;
		kept++;
	}
	bw_secure_free(text, tlen);
	if ((rc = bw_cli_mkdirs_for(path)) == 0)
		rc = write_cache(path, out, used);
	bw_secure_free(out, cap);
	return rc;
}

int
bw_tls_session_save(const char *name, const char *who, const uint8_t *der,
		    size_t len, int64_t ends)
{
	char *head;
	size_t cap;
	int n, rc;

	if (len == 0 || len > SESSION_DER_MAX)
		return BW_ETOOBIG;
	cap = strlen(name) + strlen(who) + 2 * len + 48;
	if ((head = malloc(cap)) == NULL)
		return BW_ENOMEM;
	n = snprintf(head, cap, "%s %s %lld ", name, who, (long long)ends);
	bw_hex_encode(der, len, head + n);
	memcpy(head + n + 2 * len, "\n", 2);
	rc = rewrite(name, who, head);
	bw_secure_free(head, cap);
	return rc;
}

int
bw_tls_session_forget(const char *name, const char *who)
{
	return rewrite(name, who, NULL);
}
