/* Clocks, hex, bounded number parsing, host:port parsing and small-file
 * reading shared by the daemon and the client.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/util.h"

uint64_t
bw_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int64_t
bw_time_s(void)
{
	struct timespec ts;

	/* not time(): it reads the coarse clock, which lags the one the
	 * kernel may stamp files from by up to a tick */
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec;
}

void
bw_hex_encode(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int
bw_hex_decode(const char *in, size_t in_len, uint8_t *out, size_t n)
{
	size_t i;
	int hi, lo;

	if (in_len != 2 * n)
		return BW_EPROTO;
	for (i = 0; i < n; i++) {
		hi = hexval(in[2 * i]);
		lo = hexval(in[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return BW_EPROTO;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int
bw_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	unsigned long long v;
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	if (!isdigit((unsigned char)*s))
		return BW_ECONFIG;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return BW_ECONFIG;
	while (isspace((unsigned char)*end))
		end++;
	if (*end != '\0' || v < min || v > max)
		return BW_ECONFIG;
	*out = (uint64_t)v;
	return 0;
}

static int
hostport(const char *s, char *host, size_t host_cap, uint16_t *port,
	 uint64_t min_port)
{
	const char *colon, *h = s;
	size_t hlen;
	uint64_t p;

	while (isspace((unsigned char)*h))
		h++;
	if (*h == '[') {
		const char *close = strchr(h, ']');

		if (close == NULL || close[1] != ':')
			return BW_ECONFIG;
		hlen = (size_t)(close - h - 1);
		h++;
		colon = close + 1;
	} else {
		if ((colon = strrchr(h, ':')) == NULL)
			return BW_ECONFIG;
		hlen = (size_t)(colon - h);
	}
	if (hlen == 0 || hlen >= host_cap)
		return BW_ECONFIG;
	if (bw_parse_u64(colon + 1, min_port, 65535, &p) != 0)
		return BW_ECONFIG;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	*port = (uint16_t)p;
	return 0;
}

int
bw_parse_hostport(const char *s, char *host, size_t host_cap, uint16_t *port)
{
	return hostport(s, host, host_cap, port, 1);
}

int
bw_parse_listen_addr(const char *s, char *host, size_t host_cap, uint16_t *port)
{
	return hostport(s, host, host_cap, port, 0);
}

/* Is url[0, n), percent-decoded, a parameter name that ends in "password"
 * in any case (libpq's password and sslpassword)? */
static int
names_password(const char *p, size_t n)
{
	static const char tail[] = "password";
	char name[64];
	size_t i, o = 0;
	int hi, lo;

	for (i = 0; i < n; i++) {
		if (o == sizeof(name))
			return 0; /* longer than any name libpq knows */
		if (p[i] == '%' && i + 2 < n && (hi = hexval(p[i + 1])) >= 0 &&
		    (lo = hexval(p[i + 2])) >= 0) {
			name[o++] = (char)tolower(hi << 4 | lo);
			i += 2;
		} else {
			name[o++] = (char)tolower((unsigned char)p[i]);
		}
	}
	return o >= sizeof(tail) - 1 && memcmp(name + o - (sizeof(tail) - 1),
					       tail, sizeof(tail) - 1) == 0;
}

size_t
bw_url_secret_next(const char *url, size_t from, size_t *len)
{
	const char *auth = strstr(url, "://"), *end, *at = NULL, *colon, *p;
	size_t n = strlen(url), best = SIZE_MAX, name, eq, stop;

	/* the user part: to the last '@' before the first '/' (libpq stops
	 * at the first '@' or '/', the bus's parser at the last '@'), its
	 * password after the first ':' */
	if (auth != NULL) {
		auth += 3;
		end = auth + strcspn(auth, "/");
		for (p = auth; p < end; p++)
			at = *p == '@' ? p : at;
		colon = at != NULL ? memchr(auth, ':', (size_t)(at - auth))
				   : NULL;
		if (colon != NULL && at > colon + 1 &&
		    (size_t)(colon + 1 - url) >= from) {
			best = (size_t)(colon + 1 - url);
			*len = (size_t)(at - colon - 1);
		}
	}
	/* parameters, each NAME=VALUE after a '?' or a '&' */
	for (name = 1; name < n && name < best; name++) {
		if (url[name - 1] != '?' && url[name - 1] != '&')
			continue;
		eq = name + strcspn(url + name, "=&");
		if (url[eq] != '=' || !names_password(url + name, eq - name))
			continue;
		stop = eq + 1 + strcspn(url + eq + 1, "&");
		if (eq + 1 >= from && stop > eq + 1 && eq + 1 < best) {
			best = eq + 1;
			*len = stop - best;
		}
	}
	return best;
}

int
bw_read_small_file(const char *path, size_t max, char **out, size_t *len)
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0, cap;
	ssize_t n;
	int fd, rc;

	/* O_NONBLOCK: a FIFO without a writer must be refused below, not
	 * block the caller (the daemon's loop, on a reload) in open() */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) < 0)
		return -errno;
	if (fstat(fd, &st) != 0) {
		rc = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		goto out;
	}
	if ((uint64_t)st.st_size > max) {
		rc = BW_ETOOBIG;
		goto out;
	}
	/* room for what the file holds now, plus one byte to notice growth */
	cap = (uint64_t)st.st_size < max ? (size_t)st.st_size + 1 : max;
	if ((buf = malloc(cap + 1)) == NULL) {
		rc = BW_ENOMEM;
		goto out;
	}
	for (;;) {
		n = read(fd, buf + got, cap - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		if (got == cap) {
			char c;

			if (cap < max) {
				rc = -EAGAIN; /* it grew while we read it */
				goto out;
			}
			if (read(fd, &c, 1) > 0) {
				rc = BW_ETOOBIG;
				goto out;
			}
			break;
		}
	}
	buf[got] = '\0';
	*out = buf;
	*len = got;
	buf = NULL;
	rc = 0;
out:
	if (buf != NULL)
		bw_wipe(buf, got); /* a secret's file, read in part */
	free(buf);
	close(fd);
	return rc;
}

size_t
bw_utf8_seq(const unsigned char *p, uint32_t *cp)
{
	size_t n, i;
	uint32_t v;

	if (p[0] < 0x80) {
		*cp = p[0];
		return 1;
	}
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		n = 2;
		v = p[0] & 0x1fu;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		n = 3;
		v = p[0] & 0x0fu;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		n = 4;
		v = p[0] & 0x07u;
	} else {
		return 0;
	}
	for (i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80) /* also stops at the NUL */
			return 0;
		v = (v << 6) | (p[i] & 0x3fu);
	}
	if ((n == 3 && v < 0x800) || (n == 4 && v < 0x10000) || v > 0x10ffff ||
	    (v >= 0xd800 && v <= 0xdfff))
		return 0; /* overlong, out of range, or a surrogate */
	*cp = v;
	return n;
}

int
bw_utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	uint32_t cp;
	size_t n;

	while (*p != '\0') {
		if ((n = bw_utf8_seq(p, &cp)) == 0)
			return 0;
		p += n;
	}
	return 1;
}

static int
shown_raw(uint32_t cp)
{
	if (cp < 0x20 || cp == 0x7f || cp == '\\')
		return 0;
	if (cp >= 0x80 && cp <= 0x9f)
		return 0;
	if (cp == 0x061c || cp == 0x200e || cp == 0x200f ||
	    (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069))
		return 0;
	return 1;
}

void
bw_put_safe(FILE *f, const char *in, size_t n)
{
	const unsigned char *p = (const unsigned char *)in;
	unsigned char seq[5];
	size_t i = 0, k;
	uint32_t cp;

	while (i < n) {
		if (p[i] == '\n' || p[i] == '\t' || p[i] == '\\') {
			putc(p[i++], f);
			continue;
		}
		/* a bounded copy: bw_utf8_seq reads up to a NUL */
		k = n - i < 4 ? n - i : 4;
		memcpy(seq, p + i, k);
		seq[k] = '\0';
		if ((k = bw_utf8_seq(seq, &cp)) > 0 && shown_raw(cp)) {
			fwrite(p + i, 1, k, f);
			i += k;
			continue;
		}
		putc('?', f);
		i += k > 0 ? k : 1;
	}
}

char *
bw_escape_display(const char *in, char *out, size_t cap)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)in;
	size_t o = 0, n, i;
	uint32_t cp;

	if (cap == 0)
		return out;
	while (*p != '\0') {
		n = bw_utf8_seq(p, &cp);
		if (n > 0 && shown_raw(cp)) {
			if (o + n >= cap)
				break;
			memcpy(out + o, p, n);
			o += n;
			p += n;
			continue;
		}
		if (n == 0)
			n = 1;
		if (o + 4 * n >= cap)
			break;
		for (i = 0; i < n; i++) {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[p[i] >> 4];
			out[o++] = hex[p[i] & 15];
		}
		p += n;
	}
	out[o] = '\0';
	return out;
}

/* The process's part of its unique names: drawn once (a draw per name cost
 * a system call each, OpenSSL's check that the process has not forked). */
static uint64_t run_id;
static pthread_once_t run_id_once = PTHREAD_ONCE_INIT;

static void
draw_run_id(void)
{
	if (bw_random(&run_id, sizeof(run_id)) != 0)
		run_id = (uint64_t)bw_time_s() ^ ((uint64_t)getpid() << 32);
}

void
bw_unique_name(const char *prefix, char *out, size_t cap)
{
	static unsigned long long seq;

	(void)pthread_once(&run_id_once, draw_run_id);
	snprintf(out, cap, "%s%llx-%016llx", prefix,
		 __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED),
		 (unsigned long long)run_id);
}

int64_t
bw_utc_seconds(int y, int mo, int d, int h, int mi, int sec)
{
	struct tm tm = {0};

	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	return (int64_t)timegm(&tm);
}
