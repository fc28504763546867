/* The bounded read cursor and little-endian helpers every codec uses. */
#include <string.h>

#include "bulwark/cur.h"
#include "bulwark/err.h"

void
bw_cur_init(struct bw_cur *c, const void *p, size_t len)
{
	c->p = p;
	c->len = len;
	c->off = 0;
	c->err = 0;
}

const uint8_t *
bw_cur_take(struct bw_cur *c, size_t n)
{
	const uint8_t *r;

	if (c->err != 0 || n > c->len - c->off) {
		c->err = BW_EMORE;
		return NULL;
	}
	r = c->p + c->off;
	c->off += n;
	return r;
}

void
bw_cur_copy(struct bw_cur *c, void *dst, size_t n)
{
	const uint8_t *p = bw_cur_take(c, n);

	if (p == NULL)
		memset(dst, 0, n);
	else
		memcpy(dst, p, n);
}

uint8_t
bw_cur_u8(struct bw_cur *c)
{
	const uint8_t *p = bw_cur_take(c, 1);

	return p == NULL ? 0 : p[0];
}

uint16_t
bw_cur_u16le(struct bw_cur *c)
{
	const uint8_t *p = bw_cur_take(c, 2);

	return p == NULL ? 0 : bw_get_u16le(p);
}

uint32_t
bw_cur_u32le(struct bw_cur *c)
{
	const uint8_t *p = bw_cur_take(c, 4);

	return p == NULL ? 0 : bw_get_u32le(p);
}

size_t
bw_cur_left(const struct bw_cur *c)
{
	return c->err != 0 ? 0 : c->len - c->off;
}

int
bw_cur_end(const struct bw_cur *c)
{
	if (c->err != 0)
		return c->err;
	return c->off == c->len ? 0 : BW_EPROTO;
}

void
bw_put_u16le(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v & 0xff);
	p[1] = (uint8_t)(v >> 8);
}

void
bw_put_u32le(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v & 0xff);
	p[1] = (uint8_t)((v >> 8) & 0xff);
	p[2] = (uint8_t)((v >> 16) & 0xff);
	p[3] = (uint8_t)(v >> 24);
}

uint16_t
bw_get_u16le(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

uint32_t
bw_get_u32le(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

void
bw_put_u64le(uint8_t *p, uint64_t v)
{
	bw_put_u32le(p, (uint32_t)(v & 0xffffffffu));
	bw_put_u32le(p + 4, (uint32_t)(v >> 32));
}

uint64_t
bw_get_u64le(const uint8_t *p)
{
	return (uint64_t)bw_get_u32le(p) |
	       ((uint64_t)bw_get_u32le(p + 4) << 32);
}
