/* The rooms line framer: a line ends at '\n' (one '\r' before it dropped) or
 * at a pause, and is refused as soon as it is proved longer than its cap.
 */
#include <string.h>

#include "proto/line.h"

/* The bytes of p[0..n), n > 0, that remain once one trailing '\r' is
 * dropped. */
static size_t
without_cr(const uint8_t *p, size_t n)
{
	return p[n - 1] == '\r' ? n - 1 : n;
}

long
bw_line_next(const uint8_t *p, size_t n, size_t max, int flush,
	     const uint8_t **line, size_t *len)
{
	const uint8_t *nl;
	size_t lim, k;

	*line = p;
	*len = 0;
	if (n == 0)
		return 0;
	/* A line of max bytes ends by its "\r\n" at the latest: a '\n' past
	 * p[max + 1] cannot end an acceptable line, so looking further is
	 * pointless. n - 1 > max is n >= max + 2 without overflowing. */
	lim = n - 1 > max ? max + 2 : n;
	if ((nl = memchr(p, '\n', lim)) != NULL) {
		k = (size_t)(nl - p);
		if (k > 0 && p[k - 1] == '\r')
			k--;
		if (k > max)
			return BW_LINE_TOO_LONG;
		*len = k;
		return (long)(nl - p) + 1;
	}
	/* No '\n' yet: the line holds at least these bytes, less a trailing
	 * '\r' that a '\n' may still follow. */
	k = without_cr(p, n);
	if (k > max)
		return BW_LINE_TOO_LONG;
	if (!flush)
		return 0;
	*len = k;
	return (long)n;
}
