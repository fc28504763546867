/* Text on a terminal, for the chat client: where a UTF-8 character cut by
 * a read ends, and how many columns text takes (East Asian wide characters
 * and emoji two, combining marks none), from a small table of its own
 * rather than wcwidth(), which depends on the locale.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "cli/termtext.h"
#include "proto/text.h"

#define CHUNK	    1024u /* bytes cleaned at a time */
#define WRAP_INDENT "  "

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

size_t
bw_tt_head(const char *p, size_t n, size_t cols)
{
	size_t i = 0, len, used = 0, w;

	while (i < n) {
		w = cp_cols(cp_at(p, n, i, &len));
		if (used + w > cols && i > 0)
			break;
		used += w;
		i += len;
		if (used >= cols)
			break;
	}
	return i;
}

/* --- writing ------------------------------------------------------------ */

size_t
bw_tt_term_cols(void)
{
	struct winsize w;

	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &w) == 0 && w.ws_col >= 20)
		return w.ws_col;
	return 80;
}

void
bw_tt_write(const char *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(STDOUT_FILENO, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

void
bw_tt_write_untabbed(const char *p, size_t n)
{
	const char *t;

	while ((t = memchr(p, '\t', n)) != NULL) {
		bw_tt_write(p, (size_t)(t - p));
		bw_tt_write(" ", 1);
		n -= (size_t)(t - p) + 1;
		p = t + 1;
	}
	bw_tt_write(p, n);
}

/* Clean text onto rows of the terminal's width: the last column is left
 * free (a terminal that wrapped there itself would start the next row at
 * its first column), and each new row starts indented. */
static void
wrapped(struct bw_tt_out *o, const char *p, size_t n)
{
	size_t cols = bw_tt_term_cols(), room, k;

	while (n > 0) {
		room = o->col + 1 < cols ? cols - 1 - o->col : 0;
		k = room > 0 ? bw_tt_head(p, n, room) : 0;
		if (k > 0 && (bw_tt_cols(p, k) <= room || o->col <= 2)) {
			bw_tt_write_untabbed(p, k);
			o->col += bw_tt_cols(p, k);
			p += k;
			n -= k;
			if (n == 0)
				break;
		}
		bw_tt_write("\r\n" WRAP_INDENT, 2 + sizeof(WRAP_INDENT) - 1);
		o->col = sizeof(WRAP_INDENT) - 1;
	}
}

void
bw_tt_text(struct bw_tt_out *o, const uint8_t *p, size_t n)
{
	char clean[BW_TEXT_CAP(CHUNK)];
	size_t k, m;

	while (n > 0) {
		k = n < CHUNK ? n : CHUNK;
		if (k < n && bw_tt_whole(p, k) > 0)
			k = bw_tt_whole(p, k);
		m = bw_text_clean(p, k, clean, sizeof(clean), NULL);
		if (o->tty)
			wrapped(o, clean, m);
		else
			bw_tt_write(clean, m);
		p += k;
		n -= k;
	}
}

void
bw_tt_newline(struct bw_tt_out *o)
{
	bw_tt_write("\n", 1);
	o->col = 0;
}

void
bw_tt_autowrap(int on)
{
	bw_tt_write(on ? "\033[?7h" : "\033[?7l", 5);
}
