/* The names of our keys in S3 (s3_int.h): S3 keys are UTF-8 and ours are
 * bytes, so each byte that begins no UTF-8 sequence is written as a
 * backslash and two hex digits, and read back when a listing names it.
 */
#include <string.h>

#include "bulwark/err.h"
#include "host/s3/s3_int.h"

/* Bytes of the UTF-8 sequence at p (n left): 1 to 4, or 0 where none
 * begins (a stray or cut-short byte, an overlong form, a surrogate, past
 * U+10FFFF). */
static size_t
utf8_len(const unsigned char *p, size_t n)
{
	uint32_t cp;
	size_t len, i;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		len = 2;
		cp = p[0] & 0x1fu;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		len = 3;
		cp = p[0] & 0x0fu;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		len = 4;
		cp = p[0] & 0x07u;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3fu);
	}
	if ((len == 3 && cp < 0x800) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

int
s3_name_of(const char *key, char *out, size_t cap)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)key;
	size_t n = strlen(key), i = 0, at = 0, k;

	while (i < n) {
		if ((k = utf8_len(p + i, n - i)) == 0) {
			if (at + 3 >= cap)
				return BW_ETOOBIG;
			out[at++] = '\\';
			out[at++] = hex[p[i] >> 4];
			out[at++] = hex[p[i] & 15];
			i++;
			continue;
		}
		if (at + k >= cap)
			return BW_ETOOBIG;
		memcpy(out + at, p + i, k);
		at += k;
		i += k;
	}
	if (at >= cap)
		return BW_ETOOBIG;
	out[at] = '\0';
	return 0;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

void
s3_key_of(char *name)
{
	char *r = name, *w = name;
	int hi, lo;

	while (*r != '\0') {
		if (r[0] == '\\' && (hi = hexval(r[1])) >= 0 &&
		    (lo = hexval(r[2])) >= 0) {
			*w++ = (char)(hi << 4 | lo);
			r += 3;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
}
