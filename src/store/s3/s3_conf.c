/* Where the S3 store is and who we are to it: the bucket and prefix out of
 * s3://BUCKET[/PREFIX], the endpoint (AWS's by default), the region, the
 * addressing, and the credentials, from an AWS shared-credentials file
 * (--s3-credentials-file, profile AWS_PROFILE or "default") or else
 * AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN. Nothing
 * secret is logged.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bulwark/log.h"
#include "bulwark/util.h"
#include "store/s3/s3_int.h"

#define CREDS_CAP   (64u * 1024u)
#define PREFIX_CAP  S3_PREFIX_CAP
#define BUCKET_MIN  3u
#define BUCKET_MAX  63u
#define SECRET_CAP  1024u
#define DEFAULT_REG "us-east-1"

static int
bucket_ok(const char *b, size_t n)
{
	size_t i;

	if (n < BUCKET_MIN || n > BUCKET_MAX)
		return 0;
	for (i = 0; i < n; i++) {
		char ch = b[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
		      ch == '-' || ch == '.'))
			return 0;
	}
	return b[0] != '-' && b[0] != '.' && b[n - 1] != '-' && b[n - 1] != '.';
}

/* A prefix: parts of printable ASCII but '\\', none empty, "." or "..". */
static int
prefix_ok(const char *p)
{
	const char *part = p;
	size_t n;

	for (; *p != '\0'; p++) {
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7F ||
		    *p == '\\')
			return 0;
	}
	for (;;) {
		const char *slash = strchr(part, '/');

		n = slash != NULL ? (size_t)(slash - part) : strlen(part);
		if (n == 0 && slash == NULL)
			return 1; /* the '/' at the end */
		if (n == 0 || (n == 1 && part[0] == '.') ||
		    (n == 2 && part[0] == '.' && part[1] == '.'))
			return 0;
		if (slash == NULL)
			return 1;
		part = slash + 1;
	}
}

static int
region_ok(const char *r)
{
	size_t n = strlen(r), i;

	if (n == 0 || n >= 64)
		return 0;
	for (i = 0; i < n; i++) {
		if (!((r[i] >= 'a' && r[i] <= 'z') ||
		      (r[i] >= '0' && r[i] <= '9') || r[i] == '-'))
			return 0;
	}
	return 1;
}

static int
endpoint_ok(const char *e)
{
	const char *host;

	if (strncmp(e, "http://", 7) == 0)
		host = e + 7;
	else if (strncmp(e, "https://", 8) == 0)
		host = e + 8;
	else
		return 0;
	return host[0] != '\0' && strpbrk(host, "/?#@ \t\r\n") == NULL;
}

/* --- credentials -----------------------------------------------------------
 */

static char *
dup_trimmed(const char *p, size_t n)
{
	char *s;

	while (n > 0 && (*p == ' ' || *p == '\t')) {
		p++;
		n--;
	}
	while (n > 0 &&
	       (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r'))
		n--;
	if (n == 0 || n >= SECRET_CAP || memchr(p, '\0', n) != NULL)
		return NULL;
	if ((s = malloc(n + 1)) == NULL)
		return NULL;
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

static void
replace(char **slot, char *v)
{
	if (*slot != NULL)
		bw_secure_free(*slot, strlen(*slot));
	*slot = v;
}

int
s3_creds_parse(const char *text, size_t n, const char *profile, char **access,
	       char **secret, char **token)
{
	const char *line = text, *end = text + n, *nl, *eq;
	size_t len, k, plen = strlen(profile);
	int in = 0;

	*access = *secret = *token = NULL;
	while (line < end) {
		nl = memchr(line, '\n', (size_t)(end - line));
		len = nl != NULL ? (size_t)(nl - line) : (size_t)(end - line);
		while (len > 0 && (line[0] == ' ' || line[0] == '\t')) {
			line++;
			len--;
		}
		while (len > 0 &&
		       (line[len - 1] == '\r' || line[len - 1] == ' ' ||
			line[len - 1] == '\t'))
			len--;
		if (len > 0 && line[0] == '[') {
			/* [name] (or [profile name], as in the config file) */
			const char *name = line + 1;

			k = len >= 2 && line[len - 1] == ']' ? len - 2 : 0;
			if (k > 8 && strncmp(name, "profile ", 8) == 0) {
				name += 8;
				k -= 8;
			}
			while (k > 0 && name[0] == ' ') {
				name++;
				k--;
			}
			while (k > 0 && name[k - 1] == ' ')
				k--;
			in = k == plen && memcmp(name, profile, k) == 0;
		} else if (in && len > 0 && line[0] != '#' && line[0] != ';' &&
			   (eq = memchr(line, '=', len)) != NULL) {
			size_t kn = (size_t)(eq - line);
			const char *v = eq + 1;
			size_t vn = len - kn - 1;

			while (kn > 0 &&
			       (line[kn - 1] == ' ' || line[kn - 1] == '\t'))
				kn--;
#define KEY_IS(s) (kn == strlen(s) && memcmp(line, s, kn) == 0)
			if (KEY_IS("aws_access_key_id"))
				replace(access, dup_trimmed(v, vn));
			else if (KEY_IS("aws_secret_access_key"))
				replace(secret, dup_trimmed(v, vn));
			else if (KEY_IS("aws_session_token"))
				replace(token, dup_trimmed(v, vn));
#undef KEY_IS
		}
		line = nl != NULL ? nl + 1 : end;
	}
	if (*access != NULL && *secret != NULL)
		return 0;
	replace(access, NULL);
	replace(secret, NULL);
	replace(token, NULL);
	return BW_ENOTFOUND;
}

static int
creds_file(struct s3 *s, const char *path)
{
	const char *profile = getenv("AWS_PROFILE");
	char *text = NULL;
	struct stat st;
	ssize_t got;
	size_t n = 0;
	int fd, rc;

	if (profile == NULL || profile[0] == '\0')
		profile = "default";
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
		rc = -errno;
		bw_error("s3: credentials file %s: %s", path, bw_strerror(rc));
		return rc;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
	    st.st_size > (off_t)CREDS_CAP ||
	    (text = malloc((size_t)st.st_size + 1)) == NULL) {
		close(fd);
		bw_error("s3: credentials file %s: not a file of at most %u "
			 "bytes",
			 path, CREDS_CAP);
		return BW_ECONFIG;
	}
	if ((st.st_mode & 077) != 0)
		bw_warn("s3: credentials file %s can be read by others than "
			"its owner",
			path);
	while (n < (size_t)st.st_size &&
	       (got = read(fd, text + n, (size_t)st.st_size - n)) > 0)
		n += (size_t)got;
	close(fd);
	rc = s3_creds_parse(text, n, profile, &s->access, &s->secret,
			    &s->token);
	bw_secure_free(text, (size_t)st.st_size + 1);
	if (rc != 0)
		bw_error("s3: credentials file %s has no profile [%s] with "
			 "aws_access_key_id and aws_secret_access_key",
			 path, profile);
	return rc == 0 ? 0 : BW_ECONFIG;
}

static int
creds_env(struct s3 *s)
{
	const char *a = getenv("AWS_ACCESS_KEY_ID"),
		   *k = getenv("AWS_SECRET_ACCESS_KEY"),
		   *t = getenv("AWS_SESSION_TOKEN");

	if (a == NULL || a[0] == '\0' || k == NULL || k[0] == '\0') {
		bw_error("s3: no credentials: set AWS_ACCESS_KEY_ID and "
			 "AWS_SECRET_ACCESS_KEY, or --s3-credentials-file");
		return BW_ECONFIG;
	}
	s->access = dup_trimmed(a, strlen(a));
	s->secret = dup_trimmed(k, strlen(k));
	if (t != NULL && t[0] != '\0')
		s->token = dup_trimmed(t, strlen(t));
	if (s->access == NULL || s->secret == NULL) {
		bw_error("s3: the credentials in the environment are not "
			 "usable");
		return BW_ECONFIG;
	}
	return 0;
}

/* --- the whole -------------------------------------------------------------
 */

int
s3_conf(struct s3 *s, const struct bw_blob_conf *conf, const char *where)
{
	const char *b, *slash, *region = conf->s3_region;
	size_t bn, pn;
	int rc;

	/* where: "//BUCKET[/PREFIX]" */
	if (strncmp(where, "//", 2) != 0) {
		bw_error("blobs: an S3 store is s3://BUCKET[/PREFIX]");
		return BW_ECONFIG;
	}
	b = where + 2;
	slash = strchr(b, '/');
	bn = slash != NULL ? (size_t)(slash - b) : strlen(b);
	if (!bucket_ok(b, bn)) {
		bw_error("blobs: '%.*s' is not a bucket name (3 to 63 of a-z, "
			 "0-9, '.' and '-')",
			 (int)bn, b);
		return BW_ECONFIG;
	}
	pn = slash != NULL ? strlen(slash + 1) : 0;
	if (pn >= PREFIX_CAP || (s->bucket = malloc(bn + 1)) == NULL ||
	    (s->prefix = malloc(pn + 2)) == NULL)
		return pn >= PREFIX_CAP ? BW_ECONFIG : BW_ENOMEM;
	memcpy(s->bucket, b, bn);
	s->bucket[bn] = '\0';
	s->prefix[0] = '\0';
	if (pn > 0) {
		memcpy(s->prefix, slash + 1, pn + 1);
		if (s->prefix[pn - 1] != '/') {
			s->prefix[pn] = '/';
			s->prefix[pn + 1] = '\0';
		}
		if (!prefix_ok(s->prefix)) {
			bw_error("blobs: '%s' is not a usable prefix", slash);
			return BW_ECONFIG;
		}
	}
	if (region == NULL || region[0] == '\0')
		region = getenv("AWS_REGION");
	if (region == NULL || region[0] == '\0')
		region = getenv("AWS_DEFAULT_REGION");
	if (region == NULL || region[0] == '\0')
		region = DEFAULT_REG;
	if (!region_ok(region)) {
		bw_error("blobs: '%s' is not a region name", region);
		return BW_ECONFIG;
	}
	snprintf(s->region, sizeof(s->region), "%s", region);
	snprintf(s->sigv4, sizeof(s->sigv4), "aws:amz:%s:s3", s->region);
	if (conf->s3_endpoint != NULL && conf->s3_endpoint[0] != '\0') {
		s->endpoint = strdup(conf->s3_endpoint);
		if (s->endpoint != NULL) {
			size_t n = strlen(s->endpoint);

			while (n > 0 && s->endpoint[n - 1] == '/')
				s->endpoint[--n] = '\0';
		}
	} else {
		size_t n = strlen(s->region) + 32;

		if ((s->endpoint = malloc(n)) != NULL)
			snprintf(s->endpoint, n, "https://s3.%s.amazonaws.com",
				 s->region);
	}
	if (s->endpoint == NULL)
		return BW_ENOMEM;
	if (!endpoint_ok(s->endpoint)) {
		bw_error("blobs: --s3-endpoint '%s' is not http[s]://HOST"
			 "[:PORT]",
			 s->endpoint);
		return BW_ECONFIG;
	}
	s->path_style = conf->s3_path_style;
	if (!s->path_style && strchr(s->bucket, '.') != NULL &&
	    strncmp(s->endpoint, "https://", 8) == 0)
		bw_warn("s3: a bucket name with '.' in a host name does not "
			"match a certificate: consider --s3-path-style");
	s->grace_s = conf->grace_s != 0 ? conf->grace_s : 3600u;
	s->timeout_ms =
		1000u * (conf->s3_timeout_s != 0 ? conf->s3_timeout_s : 30u);
	if ((s->spool = strdup(conf->data_dir != NULL && conf->data_dir[0]
				       ? conf->data_dir
				       : ".")) == NULL)
		return BW_ENOMEM;
	if (conf->s3_credentials != NULL && conf->s3_credentials[0] != '\0')
		rc = creds_file(s, conf->s3_credentials);
	else
		rc = creds_env(s);
	return rc;
}

void
s3_conf_free(struct s3 *s)
{
	free(s->endpoint);
	free(s->bucket);
	free(s->prefix);
	free(s->spool);
	replace(&s->access, NULL);
	replace(&s->secret, NULL);
	replace(&s->token, NULL);
}

/* --- figures ----------------------------------------------------------- */

void
s3_stats(const void *state, bw_stat_emit emit, void *arg)
{
	const struct s3 *s = state;

	emit(arg, "s3_requests_total", "requests to S3 (each try counted)",
	     atomic_load(&s->requests));
	emit(arg, "s3_retries_total",
	     "requests to S3 tried again (a 5xx, a timeout, a reset)",
	     atomic_load(&s->retries));
	emit(arg, "s3_failures_total",
	     "requests to S3 that failed after their tries",
	     atomic_load(&s->failures));
	emit(arg, "s3_sent_bytes_total", "bytes sent to S3",
	     atomic_load(&s->bytes_up));
	emit(arg, "s3_received_bytes_total", "bytes received from S3",
	     atomic_load(&s->bytes_down));
	emit(arg, "s3_request_milliseconds_total",
	     "time spent in requests to S3 (divide by s3_requests_total: "
	     "the mean latency)",
	     atomic_load(&s->request_ms));
}
