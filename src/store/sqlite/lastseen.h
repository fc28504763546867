/* LastSeen as stored in clients.LastSeen: pure conversions between Unix
 * seconds and the text and numbers found in databases. No SQLite here, so
 * the codec is unit-tested on its own.
 */
#ifndef BULWARK_HOST_SQLITE_LASTSEEN_H
#define BULWARK_HOST_SQLITE_LASTSEEN_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/err.h"

#define BW_LASTSEEN_TEXT 19 /* "YYYY-MM-DD HH:MM:SS" */

/* Writes t as UTC text into out (NUL-terminated); BW_ECONFIG if its year
 * does not have four digits. */
int bw_lastseen_format(int64_t t, char out[BW_LASTSEEN_TEXT + 1]) BW_WUR;
/* Reads len bytes of what SQLite's date functions write and accept:
 * 'YYYY-MM-DD HH:MM' with optional ':SS' and fraction, 'T' for the space,
 * an optional 'Z' or +-HH:MM zone. 0 and *out, or -1. */
int bw_lastseen_parse(const char *text, size_t len, int64_t *out) BW_WUR;
/* A REAL column: a Julian day (years 0 to 9999) or Unix seconds. 0 and
 * *out, or -1 for anything else. */
int bw_lastseen_from_real(double v, int64_t *out) BW_WUR;

#endif
