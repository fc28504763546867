/* The Unicode tables behind proto/text.c's canonical decomposition, made
 * by tools/gen-unicode (unicode_decomp.c, unicode_seq.c, unicode_ccc.c).
 * Internal to src/proto/.
 */
#ifndef BULWARK_PROTO_UNICODE_TAB_H
#define BULWARK_PROTO_UNICODE_TAB_H

#include <stdint.h>

/* bw_uni_decomp_n pairs, by code point: cp, offset << 8 | length of its
 * full canonical decomposition in bw_uni_decomp_seq. */
extern const uint32_t bw_uni_decomp_n;
extern const uint32_t bw_uni_decomp[];
extern const uint32_t bw_uni_decomp_seq[];
/* bw_uni_ccc_n pairs, by first code point: first, last << 8 | class. */
extern const uint32_t bw_uni_ccc_n;
extern const uint32_t bw_uni_ccc[];

#endif
