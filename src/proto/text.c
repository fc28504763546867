/* UTF-8 cleaning for the rooms protocol: a decoder that replaces each
 * maximal subpart of an invalid sequence by U+FFFD, the list of code points
 * removed before text reaches another member's terminal, and name trimming.
 */
#include <string.h>

#include "bulwark/util.h"
#include "proto/text.h"
#include "proto/unicode_tab.h"

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

/* Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt):
 * nothing a reader sees, so a name must not differ by one. */
static int
ignorable(uint32_t cp)
{
	static const uint32_t r[][2] = {
		{0x00ad, 0x00ad},   {0x034f, 0x034f},	{0x061c, 0x061c},
		{0x115f, 0x1160},   {0x17b4, 0x17b5},	{0x180b, 0x180f},
		{0x200b, 0x200f},   {0x202a, 0x202e},	{0x2060, 0x206f},
		{0x3164, 0x3164},   {0xfe00, 0xfe0f},	{0xfeff, 0xfeff},
		{0xffa0, 0xffa0},   {0xfff0, 0xfff8},	{0x1bca0, 0x1bca3},
		{0x1d173, 0x1d17a}, {0xe0000, 0xe0fff},
	};
	size_t i;

	for (i = 0; i < sizeof(r) / sizeof(r[0]); i++) {
		if (cp >= r[i][0] && cp <= r[i][1])
			return 1;
	}
	return 0;
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
		if (removed(cp) || (trim && ignorable(cp)) ||
		    (trim && len == 0 && blank(cp)))
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

/* --- keys: canonical decomposition --------------------------------------
 */

#define HANGUL_S     0xac00u
#define HANGUL_L     0x1100u
#define HANGUL_V     0x1161u
#define HANGUL_T     0x11a7u
#define HANGUL_N     588u /* V count * T count */
#define HANGUL_TN    28u
#define HANGUL_COUNT 11172u

/* A pair table (first word the key, sorted): the pair whose key is cp
 * (exact) or, with ranges, whose range holds it; NULL if none. */
static const uint32_t *
find_pair(const uint32_t *t, uint32_t n, uint32_t cp, int ranges)
{
	uint32_t lo = 0, hi = n, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (t[2 * mid] <= cp)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return NULL;
	t += 2 * (lo - 1);
	if (ranges)
		return cp <= t[1] >> 8 ? t : NULL;
	return t[0] == cp ? t : NULL;
}

static unsigned
ccc(uint32_t cp)
{
	const uint32_t *p;

	if (cp < 0x300)
		return 0;
	p = find_pair(bw_uni_ccc, bw_uni_ccc_n, cp, 1);
	return p != NULL ? p[1] & 0xffu : 0;
}

/* cp's full canonical decomposition into d[4]; returns its length. */
static size_t
decompose(uint32_t cp, uint32_t d[4])
{
	const uint32_t *p;
	uint32_t s, i;

	if (cp >= HANGUL_S && cp < HANGUL_S + HANGUL_COUNT) {
		s = cp - HANGUL_S;
		d[0] = HANGUL_L + s / HANGUL_N;
		d[1] = HANGUL_V + s % HANGUL_N / HANGUL_TN;
		d[2] = HANGUL_T + s % HANGUL_TN;
		return d[2] == HANGUL_T ? 2 : 3;
	}
	if (cp < 0xc0 ||
	    (p = find_pair(bw_uni_decomp, bw_uni_decomp_n, cp, 0)) == NULL) {
		d[0] = cp;
		return 1;
	}
	for (i = 0; i < (p[1] & 0xffu) && i < 4; i++)
		d[i] = bw_uni_decomp_seq[(p[1] >> 8) + i];
	return i;
}

/* Appends cp's UTF-8 to out[0..cap) at *len: 0, or -1 if it does not fit
 * with the NUL. */
static int
put(uint32_t cp, char *out, size_t cap, size_t *len)
{
	uint8_t b[4];
	size_t k = encode(cp, b);

	if (k > cap - 1 - *len)
		return -1;
	memcpy(out + *len, b, k);
	*len += k;
	return 0;
}

/* Writes a run of combining marks in canonical order: sorted by class,
 * stably (marks of one class keep their order). */
static int
put_run(uint32_t *run, size_t *run_n, char *out, size_t cap, size_t *len)
{
	size_t i, j;
	uint32_t m;

	for (i = 1; i < *run_n; i++) {
		m = run[i];
		for (j = i; j > 0 && ccc(run[j - 1]) > ccc(m); j--)
			run[j] = run[j - 1];
		run[j] = m;
	}
	for (i = 0; i < *run_n; i++) {
		if (put(run[i], out, cap, len) != 0)
			return -1;
	}
	*run_n = 0;
	return 0;
}

#define RUN_MAX 256

size_t
bw_text_name_key(const char *name, size_t n, char *out, size_t cap)
{
	const uint8_t *in = (const uint8_t *)name;
	uint32_t cp, d[4], run[RUN_MAX];
	size_t off = 0, len = 0, run_n = 0, dn, i;

	if (cap == 0)
		return 0;
	while (off < n) {
		off += decode(in + off, n - off, &cp);
		dn = decompose(cp, d);
		for (i = 0; i < dn; i++) {
			if (ccc(d[i]) != 0) {
				if (run_n == RUN_MAX)
					return 0;
				run[run_n++] = d[i];
				continue;
			}
			if (put_run(run, &run_n, out, cap, &len) != 0 ||
			    put(d[i], out, cap, &len) != 0)
				return 0;
		}
	}
	if (put_run(run, &run_n, out, cap, &len) != 0)
		return 0;
	out[len] = '\0';
	return len;
}

size_t
bw_text_client_key(const char *name, char *out, size_t cap)
{
	char clean[BW_NAME_CAP];
	size_t n = strlen(name), len;

	if (!bw_utf8_valid(name)) {
		/* bytes of another encoding: only the same bytes look alike */
		if (n == 0 || n >= cap)
			return 0;
		memcpy(out, name, n + 1);
		return n;
	}
	len = bw_text_clean_name((const uint8_t *)name, n, clean, sizeof(clean),
				 NULL);
	if (len == 0)
		return 0;
	return bw_text_name_key(clean, len, out, cap);
}
