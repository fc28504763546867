/* UTF-8 cleaning for the rooms protocol: a decoder that replaces each
 * maximal subpart of an invalid sequence by U+FFFD, the list of code points
 * removed before text reaches another member's terminal, and name trimming.
 */
#include <string.h>

#include "proto/text.h"

#define REPLACEMENT 0xfffdu

/* Decodes the code point at in[0..n), n > 0, into *cp and returns the bytes
 * it takes. An invalid sequence gives U+FFFD and takes its maximal subpart:
 * the longest start of a valid sequence that is there (at least one byte).
 * The ranges are those of Unicode's table 3-7, "Well-Formed UTF-8 Byte
 * Sequences": the second byte's range rules out overlong forms (E0, F0),
 * surrogates (ED) and code points over U+10FFFF (F4). */
static size_t
decode(const uint8_t *in, size_t n, uint32_t *cp)
{
	uint8_t b = in[0], lo = 0x80, hi = 0xbf;
	uint32_t c;
	size_t need, i;

	if (b < 0x80) {
		*cp = b;
		return 1;
	}
	if (b >= 0xc2 && b <= 0xdf) {
		need = 1;
		c = b & 0x1fu;
	} else if (b >= 0xe0 && b <= 0xef) {
		need = 2;
		c = b & 0x0fu;
		if (b == 0xe0)
			lo = 0xa0;
		else if (b == 0xed)
			hi = 0x9f;
	} else if (b >= 0xf0 && b <= 0xf4) {
		need = 3;
		c = b & 0x07u;
		if (b == 0xf0)
			lo = 0x90;
		else if (b == 0xf4)
			hi = 0x8f;
	} else {
		/* 80-C1 and F5-FF never start a sequence */
		*cp = REPLACEMENT;
		return 1;
	}
	for (i = 1; i <= need; i++) {
		if (i == n || in[i] < lo || in[i] > hi) {
			*cp = REPLACEMENT;
			return i;
		}
		c = c << 6 | (in[i] & 0x3fu);
		lo = 0x80;
		hi = 0xbf;
	}
	*cp = c;
	return need + 1;
}

/* Whether cp is one of the code points that never reach a terminal. */
static int
removed(uint32_t cp)
{
	if (cp < 0x20)
		return cp != '\t';
	if (cp >= 0x7f && cp <= 0x9f)
		return 1;
	/* the line and paragraph separators too: some terminals and
	 * clients break a line there, which would let a member start a line
	 * that looks like someone else's */
	return (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

/* Writes cp (a scalar value) as UTF-8 into b; returns its length. */
static size_t
encode(uint32_t cp, uint8_t b[4])
{
	if (cp < 0x80) {
		b[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		b[0] = (uint8_t)(0xc0 | cp >> 6);
		b[1] = (uint8_t)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		b[0] = (uint8_t)(0xe0 | cp >> 12);
		b[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
		b[2] = (uint8_t)(0x80 | (cp & 0x3f));
		return 3;
	}
	b[0] = (uint8_t)(0xf0 | cp >> 18);
	b[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
	b[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
	b[3] = (uint8_t)(0x80 | (cp & 0x3f));
	return 4;
}

static int
blank(uint32_t cp)
{
	return cp == ' ' || cp == '\t';
}

/* bw_text_clean, and with trim set bw_text_clean_name: blanks before the
 * first other code point are skipped, and the output ends after the last
 * other code point written. */
static size_t
clean(const uint8_t *in, size_t n, char *out, size_t cap, size_t *chars,
      int trim)
{
	size_t off = 0, len = 0, nch = 0, keep = 0, keep_nch = 0, k;
	uint8_t b[4];
	uint32_t cp;

	if (chars != NULL)
		*chars = 0;
	if (cap == 0)
		return 0;
	while (off < n) {
		off += decode(in + off, n - off, &cp);
		if (removed(cp) || (trim && len == 0 && blank(cp)))
			continue;
		k = encode(cp, b);
		if (k > cap - 1 - len)
			break;
		memcpy(out + len, b, k);
		len += k;
		nch++;
		if (!trim || !blank(cp)) {
			keep = len;
			keep_nch = nch;
		}
	}
	out[keep] = '\0';
	if (chars != NULL)
		*chars = keep_nch;
	return keep;
}

size_t
bw_text_clean(const uint8_t *in, size_t n, char *out, size_t cap, size_t *chars)
{
	return clean(in, n, out, cap, chars, 0);
}

size_t
bw_text_clean_name(const uint8_t *in, size_t n, char *out, size_t cap,
		   size_t *chars)
{
	return clean(in, n, out, cap, chars, 1);
}
