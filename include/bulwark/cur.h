/* A bounded read cursor over wire bytes and little-endian writers. Every take
 * either succeeds or sets a sticky error; integers are assembled byte by byte.
 */
#ifndef BULWARK_CUR_H
#define BULWARK_CUR_H

#include <stddef.h>
#include <stdint.h>

struct bw_cur {
	const uint8_t *p;
	size_t len;
	size_t off;
	int err; /* 0, or BW_EMORE once a take ran past the end */
};

void bw_cur_init(struct bw_cur *c, const void *p, size_t len);
uint8_t bw_cur_u8(struct bw_cur *c);
uint16_t bw_cur_u16le(struct bw_cur *c);
uint32_t bw_cur_u32le(struct bw_cur *c);
/* Returns a pointer to the next n bytes (valid as long as the input), or NULL
 * with the sticky error set. */
const uint8_t *bw_cur_take(struct bw_cur *c, size_t n);
/* Copies the next n bytes into dst; on failure dst is zeroed. */
void bw_cur_copy(struct bw_cur *c, void *dst, size_t n);
size_t bw_cur_left(const struct bw_cur *c);
/* 0 if no take failed and every byte was consumed; BW_EMORE if a take ran
 * past the end; BW_EPROTO if bytes are left over. */
int bw_cur_end(const struct bw_cur *c) __attribute__((warn_unused_result));

void bw_put_u16le(uint8_t *p, uint16_t v);
void bw_put_u32le(uint8_t *p, uint32_t v);
uint16_t bw_get_u16le(const uint8_t *p);
uint32_t bw_get_u32le(const uint8_t *p);
void bw_put_u64le(uint8_t *p, uint64_t v);
uint64_t bw_get_u64le(const uint8_t *p);

#endif
