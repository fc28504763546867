/* libFuzzer harness for the rooms line framer and text cleaner: the first
 * byte picks max, the second which calls report a pause; the rest is split
 * into lines as a server would, each checked against a reference framer and
 * cleaned, the output checked by an independent UTF-8 validator. The whole
 * input is cleaned too, at full and at a cut size. Invariants abort().
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/line.h"
#include "proto/text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int ok)
{
	if (!ok)
		abort();
}

/* The framer's contract, written the slow way: the first '\n' anywhere,
 * or else the least the line can still be. */
static long
reference(const uint8_t *p, size_t n, size_t max, int flush, size_t *len)
{
	const uint8_t *nl = n > 0 ? memchr(p, '\n', n) : NULL;
	size_t k;

	*len = 0;
	if (n == 0)
		return 0;
	if (nl != NULL) {
		k = (size_t)(nl - p);
		if (k > 0 && p[k - 1] == '\r')
			k--;
		if (k > max)
			return BW_LINE_TOO_LONG;
		*len = k;
		return (long)(nl - p) + 1;
	}
	k = p[n - 1] == '\r' ? n - 1 : n;
	if (k > max)
		return BW_LINE_TOO_LONG;
	if (!flush)
		return 0;
	*len = k;
	return (long)n;
}

/* The length of the well-formed UTF-8 sequence at s[0..n), its code point
 * in *cp; 0 if it is not one. By lead-byte mask and shortest-form minimum,
 * not by the codec's second-byte ranges. */
static size_t
utf8_one(const uint8_t *s, size_t n, uint32_t *cp)
{
	static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
	size_t len, i;
	uint32_t c;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if ((s[0] & 0xe0) == 0xc0) {
		len = 2;
		c = s[0] & 0x1fu;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		c = s[0] & 0x0fu;
	} else if ((s[0] & 0xf8) == 0xf0) {
		len = 4;
		c = s[0] & 0x07u;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3fu);
	}
	if (c < min[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

static int
must_go(uint32_t c)
{
	return (c < 0x20 && c != '\t') || (c >= 0x7f && c <= 0x9f) ||
	       (c >= 0x2028 && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

/* Checks out[0..len) is NUL-terminated, valid UTF-8 of chars code points,
 * none of them one that must go; for a name, no blank at either end. */
static void
check_clean(const char *out, size_t len, size_t chars, int name)
{
	const uint8_t *s = (const uint8_t *)out;
	size_t off = 0, k, nch = 0;
	uint32_t c = 0;

	check(out[len] == '\0');
	while (off < len) {
		k = utf8_one(s + off, len - off, &c);
		check(k > 0);
		check(!must_go(c));
		if (name && off == 0)
			check(c != ' ' && c != '\t');
		off += k;
		nch++;
	}
	check(nch == chars);
	if (name && len > 0)
		check(c != ' ' && c != '\t');
}

/* Cleans in[0..n) in full and into a cap of cut bytes: the cut output is
 * the longest prefix of the full one, whole code points, that fits. */
static void
fuzz_clean(const uint8_t *in, size_t n, size_t cut, int name)
{
	size_t cap = BW_TEXT_CAP(n), len, chars, len2, chars2, k;
	char *out = malloc(cap), *again = malloc(cap);
	uint32_t c;

	check(out != NULL && again != NULL);
	if (name)
		len = bw_text_clean_name(in, n, out, cap, &chars);
	else
		len = bw_text_clean(in, n, out, cap, &chars);
	check(len <= 3 * n);
	check_clean(out, len, chars, name);
	/* cleaning is idempotent */
	len2 = bw_text_clean((const uint8_t *)out, len, again, cap, &chars2);
	check(len2 == len && chars2 == chars && memcmp(again, out, len) == 0);
	/* a cut */
	cut = cut % (cap + 1);
	if (cut == 0)
		cut = 1;
	if (name)
		len2 = bw_text_clean_name(in, n, again, cut, &chars2);
	else
		len2 = bw_text_clean(in, n, again, cut, &chars2);
	check(len2 < cut && len2 <= len);
	check_clean(again, len2, chars2, name);
	check(memcmp(again, out, len2) == 0);
	if (!name && len2 < len) {
		k = utf8_one((const uint8_t *)out + len2, len - len2, &c);
		check(k > 0 && len2 + k > cut - 1);
	}
	free(out);
	free(again);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p, *line;
	size_t n, max, off = 0, len, rlen, calls = 0;
	unsigned flags;
	const uint8_t *nl;
	long r, want;
	int flush;

	if (size < 2) {
		if (size == 1)
			fuzz_clean(data, size, data[0], data[0] & 1);
		return 0;
	}
	max = data[0] == 0xff ? BW_LINE_MAX : data[0];
	flags = data[1];
	p = data + 2;
	n = size - 2;
	while (off < n) {
		flush = (int)(flags >> (calls++ % 8) & 1);
		r = bw_line_next(p + off, n - off, max, flush, &line, &len);
		want = reference(p + off, n - off, max, flush, &rlen);
		check(r == want && len == rlen);
		check(line == p + off);
		if (r == 0) {
			check(len == 0 && !flush);
			/* the stream ends: what is left is a line or too
			 * long */
			r = bw_line_next(p + off, n - off, max, 1, &line, &len);
			check(r != 0);
		}
		if (r == BW_LINE_TOO_LONG) {
			check(len == 0);
			/* a server closes here; go on after the next '\n'
			 * for coverage */
			nl = memchr(p + off, '\n', n - off);
			if (nl == NULL)
				break;
			off = (size_t)(nl - p) + 1;
			continue;
		}
		check(r > 0 && (size_t)r <= n - off);
		check(len <= max && len <= (size_t)r);
		check((size_t)r - len <= 2);
		check(memchr(line, '\n', len) == NULL);
		fuzz_clean(line, len, (size_t)r * 7 + data[0], 0);
		fuzz_clean(line, len, (size_t)r * 5 + data[1], 1);
		off += (size_t)r;
	}
	fuzz_clean(data, size, data[0] + 256u * data[1], 0);
	return 0;
}
