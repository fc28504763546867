/* The rooms protocol's line framer: where a line ends in the bytes a client
 * sent, by '\n' or by a pause, and when a line is too long. Pure, no I/O, no
 * allocation; it never reads past the bytes it is given.
 */
#ifndef BULWARK_PROTO_LINE_H
#define BULWARK_PROTO_LINE_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/err.h"

/* The rooms default for the longest line, in bytes, "\r\n" not counted. */
#define BW_LINE_MAX 4096

/* A line over max bytes: the connection is refused, never resynchronised. */
#define BW_LINE_TOO_LONG BW_ETOOBIG

/* Finds the line at the start of p[0..n). A line ends at '\n'; one '\r' just
 * before it is dropped, any other '\r' is an ordinary byte, as is NUL.
 * Returns:
 *   > 0  the bytes the line takes, terminator included; *line (== p) and
 *        *len give the line without its terminator, len <= max;
 *   0    no complete line yet: feed more bytes (always so when n == 0);
 *   BW_LINE_TOO_LONG as soon as the bytes seen prove that the line is over
 *        max bytes, whatever flush says.
 * flush = 1 means a pause passed since the last byte, or the stream ended:
 * then a partial line is taken whole (all n bytes), one trailing '\r'
 * dropped, provided that leaves at most max bytes. So max bytes then "\r\n"
 * is a line, max bytes then '\r' alone is need more (or, with flush, a line
 * of max bytes), max + 1 bytes without '\n' are too long.
 * On 0 and on BW_LINE_TOO_LONG, *line = p and *len = 0. n must not exceed
 * LONG_MAX (no object does). */
long bw_line_next(const uint8_t *p, size_t n, size_t max, int flush,
		  const uint8_t **line, size_t *len) BW_WUR;

#endif
