/* A growable byte buffer with a hard cap fixed at init: appends that would
 * pass the cap fail with BW_ETOOBIG and leave the buffer unchanged.
 */
#ifndef BULWARK_BUF_H
#define BULWARK_BUF_H

#include <stddef.h>
#include <stdint.h>

struct bw_buf {
	uint8_t *data;
	size_t len; /* bytes used, from data[off] */
	size_t off; /* bytes already consumed at the front */
	size_t cap; /* bytes allocated */
	size_t max; /* never allocate more than this */
	int secure; /* bw_buf_secure: no copy of its bytes is left behind */
};

void bw_buf_init(struct bw_buf *b, size_t max);
/* Frees the storage; with wipe set, zeroes it first. Safe on a zeroed or
 * already finished buffer. */
void bw_buf_fini(struct bw_buf *b);
void bw_buf_fini_wipe(struct bw_buf *b);
int bw_buf_append(struct bw_buf *b, const void *p, size_t n)
	__attribute__((warn_unused_result));
/* Appends formatted text (no NUL): 0, or BW_ETOOBIG (b unchanged). */
int bw_buf_printf(struct bw_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Ensures room for n more bytes after the used ones and returns a pointer to
 * it (valid until the next call that changes b), or NULL. */
uint8_t *bw_buf_reserve(struct bw_buf *b, size_t n);
/* Marks n reserved bytes as used. */
void bw_buf_commit(struct bw_buf *b, size_t n);
/* Pointer to the unconsumed bytes. */
static inline uint8_t *
bw_buf_head(const struct bw_buf *b)
{
	return b->data + b->off;
}
/* Drops n bytes from the front (n <= len). */
void bw_buf_consume(struct bw_buf *b, size_t n);
/* The same, zeroing the bytes dropped (they held a secret). */
void bw_buf_consume_wipe(struct bw_buf *b, size_t n);
/* From now on b leaves no copy of what it held in memory it gives back
 * (growing, moving and freeing wipe), for buffers that may hold secrets. */
void bw_buf_secure(struct bw_buf *b);
void bw_buf_reset(struct bw_buf *b);

#endif
