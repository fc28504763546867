/* Small helpers with no better home: clocks, hex, bounded number parsing,
 * host:port parsing, reading a small text file.
 */
#ifndef BULWARK_UTIL_H
#define BULWARK_UTIL_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

/* A count as printf's %llu takes it, whatever its width. */
#define ULL(x) ((unsigned long long)(x))

/* Monotonic milliseconds, for deadlines. */
uint64_t bw_now_ms(void);
/* Wall-clock Unix seconds, from the fine clock: never before the time of a
 * file written before the call (the kernel may stamp files from a clock
 * finer than time()'s). */
int64_t bw_time_s(void);

/* Writes 2n lower-case hex characters and a NUL into out[2n + 1]. */
void bw_hex_encode(const uint8_t *in, size_t n, char *out);
/* Decodes exactly 2n hex characters (either case) from in; BW_EPROTO on any
 * other character or length. */
int bw_hex_decode(const char *in, size_t in_len, uint8_t *out, size_t n)
	__attribute__((warn_unused_result));

/* Parses a whole decimal string (surrounding white space allowed) into
 * [min, max]; BW_ECONFIG otherwise. */
int bw_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
	__attribute__((warn_unused_result));

/* Splits "host:port" (or "[v6]:port") into host[host_cap] and port. */
int bw_parse_hostport(const char *s, char *host, size_t host_cap,
		      uint16_t *port) __attribute__((warn_unused_result));
/* Where the next password in a URL (--db, --bus) starts, at from or after:
 * its offset, with its length in *len, or SIZE_MAX if there is none. A
 * password is what libpq or the bus's parser would read as one: the user
 * part's, up to the last '@' before the first '/' ('?' and '@' included),
 * and the value of every parameter whose name, percent-decoded, ends in
 * "password" in any case. Errs on the side of hiding more. */
size_t bw_url_secret_next(const char *url, size_t from, size_t *len);
/* The same for an address to listen on: port 0 (any free port) allowed. */
int bw_parse_listen_addr(const char *s, char *host, size_t host_cap,
			 uint16_t *port);

/* Reads a whole regular file of at most max bytes into a NUL-terminated heap
 * string (*out, *len). BW_ETOOBIG past max; -errno on I/O errors. */
int bw_read_small_file(const char *path, size_t max, char **out, size_t *len)
	__attribute__((warn_unused_result));

/* Copies the NUL-terminated text in into out[cap] (always NUL-terminated,
 * truncated to fit) made safe to show on a terminal or in a log: bytes below
 * 0x20, DEL, backslash, bytes that are not valid UTF-8, and the UTF-8 of C1
 * controls (U+0080-U+009F) and of bidi controls (U+061C, U+200E-U+200F,
 * U+202A-U+202E, U+2066-U+2069) become \xNN; other UTF-8 passes through.
 * Returns out. */
char *bw_escape_display(const char *in, char *out, size_t cap);
/* The length (1 to 4) of the valid UTF-8 sequence that begins at p, in a
 * NUL-terminated string, with its code point in *cp; 0 where none begins
 * (a stray or cut-short byte, an overlong form, a surrogate, past
 * U+10FFFF). Reads no further than the NUL. */
size_t bw_utf8_seq(const unsigned char *p, uint32_t *cp);
/* 1 if the NUL-terminated s is valid UTF-8 (no overlong form, surrogate
 * or code point past U+10FFFF), else 0. */
int bw_utf8_valid(const char *s);
/* Writes in[0..n) to f for a terminal: newline, tab and the code points
 * bw_escape_display shows as they are pass; every other control (C0, DEL,
 * C1, bidi) and every byte that is not valid UTF-8 becomes '?'. */
void bw_put_safe(FILE *f, const char *in, size_t n);
/* The escaped size of a name field (254 bytes, each up to 4 characters). */
#define BW_ESC_CAP (4 * 256 + 1)

/* A name no other call of this process makes, and unlikely in another:
 * prefix, a sequence number and the process's 64 random bits, drawn at its
 * first call ("<prefix>1f-9a3c0e77d41b2c05"), into out[cap]. Thread-safe;
 * a child of fork() would repeat its parent's names (nothing that calls it
 * forks). */
void bw_unique_name(const char *prefix, char *out, size_t cap);
/* Seconds since the epoch of a UTC calendar time (fields as written:
 * month 1-12), checked by the caller. */
int64_t bw_utc_seconds(int y, int mo, int d, int h, int mi, int sec);

#endif
