/* Text on a terminal, for the chat client: where a UTF-8 character cut by
 * a read ends, and how many columns text takes (East Asian wide characters
 * and emoji two, combining marks none), from a small table of its own
 * rather than wcwidth(), which depends on the locale.
 */
#include <stdint.h>
#include <string.h>

#include "cli/termtext.h"

size_t
bw_tt_whole(const uint8_t *p, size_t n)
{
	size_t i = n, k = 0, want;

	while (i > 0 && k < 4 && (p[i - 1] & 0xC0) == 0x80) {
		i--;
		k++;
	}
	if (i == 0)
		return k >= 4 ? n : 0;
	want = p[i - 1] >= 0xF0	  ? 4
	       : p[i - 1] >= 0xE0 ? 3
	       : p[i - 1] >= 0xC0 ? 2
				  : 1;
	return p[i - 1] >= 0xC0 && p[i - 1] < 0xF8 && k + 1 < want ? i - 1 : n;
}

/* The columns a code point takes on a terminal: 0 for combining marks and
 * zero-width ones, 2 for East Asian wide and emoji, else 1 (a tab is drawn
 * as one space). Small and locale-free, as wcwidth() is not. */
static unsigned
cp_cols(uint32_t u)
{
	if ((u >= 0x0300 && u <= 0x036F) || (u >= 0x1AB0 && u <= 0x1AFF) ||
	    (u >= 0x1DC0 && u <= 0x1DFF) || (u >= 0x20D0 && u <= 0x20FF) ||
	    (u >= 0xFE20 && u <= 0xFE2F) || (u >= 0x200B && u <= 0x200F) ||
	    u == 0xFE0F || (u >= 0x0591 && u <= 0x05C7))
		return 0;
	if ((u >= 0x1100 && u <= 0x115F) || (u >= 0x2E80 && u <= 0xA4CF) ||
	    (u >= 0xAC00 && u <= 0xD7A3) || (u >= 0xF900 && u <= 0xFAFF) ||
	    (u >= 0xFE30 && u <= 0xFE4F) || (u >= 0xFF00 && u <= 0xFF60) ||
	    (u >= 0xFFE0 && u <= 0xFFE6) || (u >= 0x1F300 && u <= 0x1F64F) ||
	    (u >= 0x1F900 && u <= 0x1F9FF) || (u >= 0x20000 && u <= 0x3FFFD))
		return 2;
	return 1;
}

/* The code point at p[i] (its first byte), and its length. */
static uint32_t
cp_at(const char *p, size_t n, size_t i, size_t *len)
{
	const unsigned char *s = (const unsigned char *)p + i;
	size_t k, want = s[0] >= 0xF0	? 4
			 : s[0] >= 0xE0 ? 3
			 : s[0] >= 0xC0 ? 2
					: 1;
	uint32_t u = want == 1 ? s[0] : s[0] & (0x7Fu >> want);

	for (k = 1; k < want && i + k < n && (s[k] & 0xC0) == 0x80; k++)
		u = (u << 6) | (s[k] & 0x3Fu);
	*len = k;
	return k == want ? u : 0xFFFD;
}

size_t
bw_tt_cols(const char *p, size_t n)
{
	size_t i, len, c = 0;

	for (i = 0; i < n; i += len)
		c += cp_cols(cp_at(p, n, i, &len));
	return c;
}

size_t
bw_tt_tail(const char *p, size_t n, size_t cols)
{
	size_t i = n, j, len, used = 0, w;

	while (i > 0) {
		j = i - 1;
		while (j > 0 && ((unsigned char)p[j] & 0xC0) == 0x80 &&
		       i - j < 4)
			j--;
		w = cp_cols(cp_at(p, n, j, &len));
		if (used + w > cols)
			break;
		used += w;
		i = j;
	}
	return i;
}
