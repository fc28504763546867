/* Text on a terminal: whole characters and columns (termtext.c). */
#ifndef BULWARK_CLI_TERMTEXT_H
#define BULWARK_CLI_TERMTEXT_H

#include <stddef.h>
#include <stdint.h>

/* Bytes of p[0..n) up to its last whole character: a UTF-8 sequence cut at
 * the end is left out (for the next read); invalid bytes count as whole. */
size_t bw_tt_whole(const uint8_t *p, size_t n);
/* The columns UTF-8 text p[0..n) takes on a terminal (a tab counts one). */
size_t bw_tt_cols(const char *p, size_t n);
/* Where the longest tail of p[0..n) that fits in cols columns starts (at
 * a character's first byte). */
size_t bw_tt_tail(const char *p, size_t n, size_t cols);

/* Where the longest head of p[0..n) that fits in cols columns ends (at a
 * character's first byte); at least one character if n > 0 and cols > 0. */
size_t bw_tt_head(const char *p, size_t n, size_t cols);

/* --- writing to standard output ---------------------------------------- */

/* The terminal's width (80 if it cannot be told). */
size_t bw_tt_term_cols(void);
/* Writes bytes as they are. */
void bw_tt_write(const char *p, size_t n);
/* Writes text with each tab drawn as a space (its width is one). */
void bw_tt_write_untabbed(const char *p, size_t n);

/* The server's text. On a terminal the client wraps it itself (the
 * terminal's own wrapping is turned off meanwhile, see bw_tt_autowrap):
 * every row after a line's first starts with two spaces, so no row a peer
 * wrote mid-line can pass for a line of its own (another member's
 * "name: "). */
struct bw_tt_out {
	int tty;
	size_t col; /* columns written on the current row */
};
/* Writes p[0..n) cleaned (proto/text.h: nothing drives the terminal), as
 * part of the current line. */
void bw_tt_text(struct bw_tt_out *o, const uint8_t *p, size_t n);
/* Ends the current line. */
void bw_tt_newline(struct bw_tt_out *o);
/* Turns the terminal's automatic wrapping at the right margin on or off
 * (DECAWM); off, text past the margin is cut, never wrapped. */
void bw_tt_autowrap(int on);

#endif
