/* Capped growable buffers: storage grows by doubling up to the cap fixed at
 * init and never past it; consumed bytes at the front are reclaimed lazily.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/buf.h"
#include "bulwark/crypto.h"
#include "bulwark/err.h"

void
bw_buf_init(struct bw_buf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max;
}

void
bw_buf_secure(struct bw_buf *b)
{
	b->secure = 1;
}

void
bw_buf_fini(struct bw_buf *b)
{
	if (b->secure) {
		bw_buf_fini_wipe(b);
		return;
	}
	free(b->data);
	b->data = NULL;
	b->len = b->off = b->cap = 0;
}

void
bw_buf_fini_wipe(struct bw_buf *b)
{
	bw_secure_free(b->data, b->cap);
	b->data = NULL;
	b->len = b->off = b->cap = 0;
}

uint8_t *
bw_buf_reserve(struct bw_buf *b, size_t n)
{
	size_t need, ncap;
	uint8_t *p;

	if (b->off > 0 && b->off + b->len + n > b->cap) {
		memmove(b->data, b->data + b->off, b->len);
		if (b->secure)
			bw_wipe(b->data + b->len, b->off);
		b->off = 0;
	}
	if (n > b->max || b->len > b->max - n)
		return NULL;
	need = b->len + n;
	if (need > b->cap) {
		ncap = b->cap ? b->cap : 256;
		while (ncap < need)
			ncap *= 2;
		if (ncap > b->max)
			ncap = b->max;
		if (b->secure) {
			/* realloc could leave the old bytes behind */
			if ((p = malloc(ncap)) == NULL)
				return NULL;
			if (b->len > 0)
				memcpy(p, b->data, b->len);
			bw_secure_free(b->data, b->cap);
		} else if ((p = realloc(b->data, ncap)) == NULL) {
			return NULL;
		}
		b->data = p;
		b->cap = ncap;
	}
	return b->data + b->off + b->len;
}

void
bw_buf_commit(struct bw_buf *b, size_t n)
{
	b->len += n;
}

int
bw_buf_append(struct bw_buf *b, const void *p, size_t n)
{
	uint8_t *dst;

	if (n == 0)
		return 0;
	if ((dst = bw_buf_reserve(b, n)) == NULL)
		return n > b->max || b->len > b->max - n ? BW_ETOOBIG
							 : BW_ENOMEM;
	memcpy(dst, p, n);
	b->len += n;
	return 0;
}

void
bw_buf_consume(struct bw_buf *b, size_t n)
{
	if (n >= b->len) {
		b->off = b->len = 0;
		return;
	}
	b->off += n;
	b->len -= n;
}

void
bw_buf_consume_wipe(struct bw_buf *b, size_t n)
{
	bw_wipe(b->data + b->off, n < b->len ? n : b->len);
	bw_buf_consume(b, n);
}

void
bw_buf_reset(struct bw_buf *b)
{
	b->off = b->len = 0;
}

int
bw_buf_printf(struct bw_buf *b, const char *fmt, ...)
{
	va_list ap;
	uint8_t *p;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || (p = bw_buf_reserve(b, (size_t)n + 1)) == NULL)
		return BW_ETOOBIG;
	va_start(ap, fmt);
	n = vsnprintf((char *)p, (size_t)n + 1, fmt, ap);
	va_end(ap);
	bw_buf_commit(b, (size_t)n);
	return 0;
}
