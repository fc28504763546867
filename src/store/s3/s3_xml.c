/* The few XML answers S3 gives (a listing, an upload's id, an error's
 * code), read by looking for an element's tags: S3's documents are flat
 * and machine-written, and what is read is checked (lengths, entities,
 * %XX) as any input from the network is. Keys are listed with
 * encoding-type=url, so a key's bytes never depend on XML's rules. Also
 * the status line of a response, read within the bytes curl gives.
 */
#include <stdio.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/util.h"
#include "store/s3/s3_int.h"

static const char *
find(const char *p, size_t n, const char *needle, size_t from)
{
	size_t k = strlen(needle), i;

	if (k == 0 || n < k)
		return NULL;
	for (i = from; i + k <= n; i++) {
		if (p[i] == needle[0] && memcmp(p + i, needle, k) == 0)
			return p + i;
	}
	return NULL;
}

int
s3_xml_span(const char *p, size_t n, size_t *pos, const char *name,
	    size_t *start, size_t *len)
{
	char open[80], close[80];
	const char *o, *c, *gt;
	size_t from;

	if (snprintf(open, sizeof(open), "<%s", name) >= (int)sizeof(open) ||
	    snprintf(close, sizeof(close), "</%s>", name) >= (int)sizeof(close))
		return BW_ETOOBIG;
	for (from = *pos;;) {
		if (from > n || (o = find(p, n, open, from)) == NULL)
			return BW_ENOTFOUND;
		gt = o + strlen(open);
		if (gt >= p + n)
			return BW_ENOTFOUND;
		if (*gt == '>' || *gt == ' ' || *gt == '/')
			break;
		from = (size_t)(gt - p); /* <NameMore>: another element */
	}
	if ((gt = memchr(gt, '>', (size_t)(p + n - gt))) == NULL)
		return BW_EPROTO;
	if (gt[-1] == '/') { /* <Name/>: empty */
		*start = (size_t)(gt + 1 - p);
		*len = 0;
		*pos = *start;
		return 0;
	}
	*start = (size_t)(gt + 1 - p);
	if ((c = find(p, n, close, *start)) == NULL)
		return BW_EPROTO;
	*len = (size_t)(c - p) - *start;
	*pos = (size_t)(c - p) + strlen(close);
	return 0;
}

static size_t
put_utf8(unsigned long cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xC0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xE0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	out[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

/* One entity at p (after '&', up to ';' within n): its bytes into out. */
static int
entity(const char *p, size_t n, char *out, size_t *out_n, size_t *used)
{
	static const struct {
		const char *name;
		char ch;
	} named[] = {{"amp", '&'},
		     {"lt", '<'},
		     {"gt", '>'},
		     {"quot", '"'},
		     {"apos", '\''}};
	const char *semi = memchr(p, ';', n < 12 ? n : 12);
	unsigned long cp = 0;
	size_t k = semi != NULL ? (size_t)(semi - p) : 0, i;

	if (semi == NULL || k == 0)
		return BW_EPROTO;
	*used = k + 1;
	if (p[0] == '#') {
		int hex = k > 1 && (p[1] == 'x' || p[1] == 'X');

		i = hex ? 2 : 1;
		if (i == k)
			return BW_EPROTO;
		for (; i < k; i++) {
			char ch = p[i];
			unsigned d;

			if (ch >= '0' && ch <= '9')
				d = (unsigned)(ch - '0');
			else if (hex && ch >= 'a' && ch <= 'f')
				d = (unsigned)(ch - 'a' + 10);
			else if (hex && ch >= 'A' && ch <= 'F')
				d = (unsigned)(ch - 'A' + 10);
			else
				return BW_EPROTO;
			cp = cp * (hex ? 16u : 10u) + d;
			if (cp > 0x10FFFF)
				return BW_EPROTO;
		}
		if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF))
			return BW_EPROTO;
		*out_n = put_utf8(cp, out);
		return 0;
	}
	for (i = 0; i < sizeof(named) / sizeof(named[0]); i++) {
		if (strlen(named[i].name) == k &&
		    memcmp(p, named[i].name, k) == 0) {
			out[0] = named[i].ch;
			*out_n = 1;
			return 0;
		}
	}
	return BW_EPROTO;
}

int
s3_xml_text(const char *p, size_t n, const char *name, char *out, size_t cap)
{
	size_t pos = 0, start, len, i, o = 0, k, used;
	char bytes[4];
	int rc;

	if (cap == 0)
		return BW_ETOOBIG;
	out[0] = '\0';
	if ((rc = s3_xml_span(p, n, &pos, name, &start, &len)) != 0)
		return rc;
	for (i = 0; i < len;) {
		if (p[start + i] == '&') {
			rc = entity(p + start + i + 1, len - i - 1, bytes, &k,
				    &used);
			if (rc != 0)
				return rc;
			i += used + 1;
		} else if (p[start + i] == '<') {
			return BW_EPROTO; /* an element inside: not text */
		} else {
			bytes[0] = p[start + i++];
			k = 1;
		}
		if (o + k >= cap)
			return BW_ETOOBIG;
		memcpy(out + o, bytes, k);
		o += k;
	}
	out[o] = '\0';
	return 0;
}

static int
hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

int
s3_url_decode(char *s)
{
	char *r = s, *w = s;
	int hi, lo;

	while (*r != '\0') {
		if (*r == '%') {
			if ((hi = hexval(r[1])) < 0 || (lo = hexval(r[2])) < 0)
				return BW_EPROTO;
			if (hi == 0 && lo == 0)
				return BW_EPROTO; /* a NUL in a key */
			*w++ = (char)(hi * 16 + lo);
			r += 3;
		} else if (*r == '+') {
			*w++ = ' ';
			r++;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
	return 0;
}

int
s3_iso_time(const char *s, int64_t *out)
{
	int y, mo, d, h, mi, sec, used = 0;

	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec,
		   &used) != 6 ||
	    used != 19 || y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 ||
	    d > 31 || h > 23 || mi > 59 || sec > 60 || h < 0 || mi < 0 ||
	    sec < 0)
		return BW_EPROTO;
	*out = bw_utc_seconds(y, mo, d, h, mi, sec);
	return 0;
}

long
s3_status_line(const char *line, size_t n)
{
	const char *sp = memchr(line, ' ', n);
	size_t at, i;
	long status = 0;

	if (sp == NULL)
		return 0;
	at = (size_t)(sp - line) + 1;
	if (n - at < 3)
		return 0;
	for (i = 0; i < 3; i++) {
		if (line[at + i] < '0' || line[at + i] > '9')
			return 0;
		status = status * 10 + (line[at + i] - '0');
	}
	if (n - at > 3 && line[at + 3] != ' ' && line[at + 3] != '\r' &&
	    line[at + 3] != '\n')
		return 0; /* four digits or more: not a status */
	return status >= 100 ? status : 0;
}
