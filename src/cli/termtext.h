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

#endif
