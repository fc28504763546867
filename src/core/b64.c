/* Base64 (standard alphabet, with padding) in constant time: the text is
 * often a private key (me.info, priv.key), so no table index or branch
 * depends on the data.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"

/* Byte-sized masks for base64, on values below 256: 0xff or 0. */
static unsigned int
ct_eq8(unsigned int a, unsigned int b)
{
	return (((a ^ b) - 1u) >> 8) & 0xff;
}

static unsigned int
ct_lt8(unsigned int a, unsigned int b)
{
	return ((a - b) >> 8) & 0xff;
}

static unsigned int
ct_ge8(unsigned int a, unsigned int b)
{
	return ct_lt8(a, b) ^ 0xff;
}

static unsigned int
ct_le8(unsigned int a, unsigned int b)
{
	return ct_lt8(b, a) ^ 0xff;
}

/* The character for a 6-bit value, without a data-dependent table index or
 * branch: the decoded text is often a private key. */
static char
b64_char(unsigned int x)
{
	unsigned int c;

	c = (ct_lt8(x, 26) & (x + 'A')) |
	    (ct_ge8(x, 26) & ct_lt8(x, 52) & (x + ('a' - 26))) |
	    (ct_ge8(x, 52) & ct_lt8(x, 62) & (x - (52 - '0'))) |
	    (ct_eq8(x, 62) & '+') | (ct_eq8(x, 63) & '/');
	return (char)c;
}

/* The 6-bit value of a base64 character, or 0xff. */
static unsigned int
b64_value(unsigned int c)
{
	unsigned int x;

	x = (ct_ge8(c, 'A') & ct_le8(c, 'Z') & (c - 'A')) |
	    (ct_ge8(c, 'a') & ct_le8(c, 'z') & (c - ('a' - 26))) |
	    (ct_ge8(c, '0') & ct_le8(c, '9') & (c + (52 - '0'))) |
	    (ct_eq8(c, '+') & 62) | (ct_eq8(c, '/') & 63);
	return x | (ct_eq8(x, 0) & (ct_eq8(c, 'A') ^ 0xff));
}

static int
is_b64_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' ||
	       c == '\r';
}

int
bw_b64_encode(const uint8_t *in, size_t n, char **out)
{
	char *buf;
	size_t i, o = 0;
	unsigned int v = 0;

	*out = NULL;
	if (n > (SIZE_MAX - 1) / 4 * 3 - 2)
		return BW_ETOOBIG;
	if ((buf = malloc((n + 2) / 3 * 4 + 1)) == NULL)
		return BW_ENOMEM;
	for (i = 0; i + 3 <= n; i += 3) {
		v = (unsigned int)in[i] << 16 | (unsigned int)in[i + 1] << 8 |
		    in[i + 2];
		buf[o++] = b64_char(v >> 18);
		buf[o++] = b64_char((v >> 12) & 63);
		buf[o++] = b64_char((v >> 6) & 63);
		buf[o++] = b64_char(v & 63);
	}
	if (n - i == 1) {
		v = (unsigned int)in[i] << 16;
		buf[o++] = b64_char(v >> 18);
		buf[o++] = b64_char((v >> 12) & 63);
		buf[o++] = '=';
		buf[o++] = '=';
	} else if (n - i == 2) {
		v = (unsigned int)in[i] << 16 | (unsigned int)in[i + 1] << 8;
		buf[o++] = b64_char(v >> 18);
		buf[o++] = b64_char((v >> 12) & 63);
		buf[o++] = b64_char((v >> 6) & 63);
		buf[o++] = '=';
	}
	buf[o] = '\0';
	bw_wipe(&v, sizeof(v));
	*out = buf;
	return 0;
}

int
bw_b64_decode(const char *in, size_t n, uint8_t **out, size_t *out_len)
{
	unsigned int q[4] = {0, 0, 0, 0}, v = 0;
	size_t i, o = 0, nq = 0, npad = 0, cap;
	uint8_t *buf;
	int rc = BW_EPROTO;

	*out = NULL;
	*out_len = 0;
	cap = n / 4 * 3 + 3;
	if ((buf = malloc(cap)) == NULL)
		return BW_ENOMEM;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];

		if (is_b64_space(c))
			continue;
		if (c == '=') {
			/* Padding completes a quantum of 2 or 3 symbols. */
			npad++;
			if (nq < 2 || nq + npad > 4)
				goto out;
			continue;
		}
		if (npad > 0)
			goto out; /* symbols after the padding */
		if ((v = b64_value(c)) == 0xff)
			goto out;
		q[nq++] = v;
		if (nq == 4) {
			buf[o++] = (uint8_t)(q[0] << 2 | q[1] >> 4);
			buf[o++] = (uint8_t)(q[1] << 4 | q[2] >> 2);
			buf[o++] = (uint8_t)(q[2] << 6 | q[3]);
			nq = 0;
		}
	}
	/* Unpadded input is rejected: a lone symbol, or 2-3 without "=". */
	if (nq + npad != 4 && nq + npad != 0)
		goto out;
	if (nq >= 2)
		buf[o++] = (uint8_t)(q[0] << 2 | q[1] >> 4);
	if (nq == 3)
		buf[o++] = (uint8_t)(q[1] << 4 | q[2] >> 2);
	*out = buf;
	*out_len = o;
	buf = NULL;
	rc = 0;
out:
	bw_wipe(q, sizeof(q));
	bw_wipe(&v, sizeof(v));
	bw_secure_free(buf, cap);
	return rc;
}
