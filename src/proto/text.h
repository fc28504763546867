/* Cleaning the text of the rooms protocol before it is relayed or listed:
 * invalid UTF-8 becomes U+FFFD and the code points that could move a
 * terminal's cursor or reorder what it shows are removed. Pure, no I/O.
 */
#ifndef BULWARK_PROTO_TEXT_H
#define BULWARK_PROTO_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/ids.h"

/* Bytes of output that always suffice for n bytes of input, the NUL
 * included: each input byte yields at most one U+FFFD (3 bytes). */
#define BW_TEXT_CAP(n) (3 * (n) + 1)

/* Cleans in[0..n) into out, a buffer of cap bytes (cap >= 1; cap == 0
 * writes nothing and returns 0). The input is read as UTF-8; each invalid
 * sequence becomes one U+FFFD per maximal subpart (Unicode ch. 3 "U+FFFD
 * Substitution of Maximal Subparts", as the WHATWG decoder does): overlong
 * forms, surrogates, code points over U+10FFFF, truncated sequences and
 * stray continuation bytes. Then these are removed: C0 controls except tab
 * (U+0000-U+0008, U+000A-U+001F), DEL, C1 controls (U+0080-U+009F) and the
 * bidi controls U+202A-U+202E and U+2066-U+2069, and the line and paragraph
 * separators U+2028-U+2029. Everything else is kept.
 * The output is valid UTF-8 and NUL-terminated. It is the longest prefix of
 * the cleaned text that fits in cap - 1 bytes: when out is too small it is
 * cut before the first code point that does not fit, never in one; it never
 * needs more than BW_TEXT_CAP(n) bytes. Returns the bytes written, the NUL
 * not counted; *chars (may be NULL) gets the code points written. */
size_t bw_text_clean(const uint8_t *in, size_t n, char *out, size_t cap,
		     size_t *chars);

/* bw_text_clean for names: also without the default-ignorable code points
 * (U+200B zero width space, U+2060 word joiner, U+FEFF, U+00AD soft hyphen,
 * variation selectors...: invisible, so "alice" and "alice" + U+200B would
 * read alike) and without leading and trailing spaces and tabs (only U+0020
 * and U+0009; other blanks are kept). Leading ones use no room in out; if
 * out is too small, the cut text is trimmed again. Returns the bytes
 * written, *chars (may be NULL) the code points. */
size_t bw_text_clean_name(const uint8_t *in, size_t n, char *out, size_t cap,
			  size_t *chars);

/* Bytes that always hold the key of a name of chars code points: a
 * canonical decomposition has at most 4 code points of 4 bytes. */
#define BW_TEXT_KEY_CAP(chars) (16 * (chars) + 1)

/* The key names are compared by: the canonical decomposition (NFD) of
 * name[0..n) (valid UTF-8, as bw_text_clean_name makes it), so that names
 * a reader cannot tell apart because they are canonically equivalent
 * (U+00E9 and e + U+0301) have one key. Into out, NUL-terminated; returns
 * its length, or 0 if it does not fit in cap bytes. */
size_t bw_text_name_key(const char *name, size_t n, char *out, size_t cap);

/* The key a registered client's name (vault and messenger: up to 255
 * bytes, not always UTF-8) is compared by, so that no one registers a
 * name that reads as another's: a UTF-8 name cleaned as bw_text_clean_name
 * does (invisible code points and the blanks around it gone), then
 * canonically decomposed; a name in another encoding, its bytes. Into
 * out (BW_TEXT_CLIENT_KEY_CAP bytes hold any), NUL-terminated; returns
 * its length, 0 if nothing is left of it (a name of invisible code
 * points alone) or it does not fit. */
#define BW_TEXT_CLIENT_KEY_CAP BW_TEXT_KEY_CAP(BW_NAME_CAP)
size_t bw_text_client_key(const char *name, char *out, size_t cap);

#endif
