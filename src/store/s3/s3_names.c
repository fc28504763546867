/* The names of our keys in S3 (s3_int.h): S3 keys are UTF-8 and ours are
 * bytes, so each byte that begins no UTF-8 sequence is written as a
 * backslash and two hex digits, and read back when a listing names it.
 */
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/util.h"
#include "store/s3/s3_int.h"

int
s3_name_of(const char *key, char *out, size_t cap)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)key;
	size_t n = strlen(key), i = 0, at = 0, k;
	uint32_t cp;

	while (i < n) {
		if ((k = bw_utf8_seq(p + i, &cp)) == 0) {
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

void
s3_key_of(char *name)
{
	char *r = name, *w = name;
	uint8_t byte;

	while (*r != '\0') {
		if (r[0] == '\\' && r[1] != '\0' &&
		    bw_hex_decode(r + 1, 2, &byte, 1) == 0) {
			*w++ = (char)byte;
			r += 3;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
}
