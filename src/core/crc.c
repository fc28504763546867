/* The POSIX cksum checksum (CRC-32, polynomial 0x04C11DB7, MSB first): a
 * portable slice-by-8 engine, a PCLMULQDQ folding engine for x86-64, and the
 * streaming cksum state that picks between them at run time.
 */
#include <stddef.h>
#include <stdint.h>

#include "bulwark/crc.h"
#include "core/crc_table.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_X86_CLMUL 1
#include <immintrin.h>
#else
#define HAVE_X86_CLMUL 0
#endif

/* Below this many bytes the table engine is faster than setting up folding. */
#define CLMUL_MIN 64

static inline uint32_t
load_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static inline uint32_t
crc_byte(uint32_t crc, uint8_t b)
{
	return crc << 8 ^ bw_crc_table[0][(crc >> 24) ^ b];
}

/* Slice-by-8: a register c followed by bytes b0..b7 equals the bytes
 * (c ^ b0..b3), b4..b7 fed into a zero register, and each of those bytes
 * contributes its table entry shifted by the bytes that follow it. */
uint32_t
bw_crc32_msb_portable(uint32_t crc, const uint8_t *p, size_t n)
{
	while (n >= 8) {
		uint32_t a = crc ^ load_be32(p);

		crc = bw_crc_table[7][a >> 24] ^
		      bw_crc_table[6][(a >> 16) & 0xff] ^
		      bw_crc_table[5][(a >> 8) & 0xff] ^
		      bw_crc_table[4][a & 0xff] ^ bw_crc_table[3][p[4]] ^
		      bw_crc_table[2][p[5]] ^ bw_crc_table[1][p[6]] ^
		      bw_crc_table[0][p[7]];
		p += 8;
		n -= 8;
	}
	while (n > 0) {
		crc = crc_byte(crc, *p++);
		n--;
	}
	return crc;
}

#if HAVE_X86_CLMUL
/*
 * Carry-less multiplication folding (Gopal et al., "Fast CRC Computation for
 * Generic Polynomials Using PCLMULQDQ Instruction", Intel, 2009), in the
 * non-reflected domain. Each 16-byte block is byte-swapped so that bit 127 of
 * the register is the first bit of the message, the highest power of x.
 *
 * A 128-bit value R = H x^64 + L followed by D more message bits contributes
 * R x^D, which is congruent mod P to H (x^(D+64) mod P) + L (x^D mod P): two
 * 64x32-bit carry-less products, at most 95 bits, so folding never grows the
 * state. The constants are x^k mod P for the k named beside them.
 */
#define CLMUL_TARGET __attribute__((target("pclmul,sse4.1")))

#define K_576 0x8833794cLL
#define K_512 0xe6228b11LL
#define K_192 0xc5b9cd4cLL
#define K_128 0xe8a45605LL
#define K_96  0xf200aa66LL
#define K_64  0x490d678dLL
#define K_32  0x04c11db7LL  /* x^32 mod P: P without its top bit */
#define MU    0x104d101dfLL /* floor(x^64 / P), for Barrett reduction */

CLMUL_TARGET static inline __m128i
fold(__m128i x, __m128i k)
{
	return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x11),
			     _mm_clmulepi64_si128(x, k, 0x00));
}

CLMUL_TARGET static inline __m128i
load_block(const uint8_t *p, __m128i bswap)
{
	return _mm_shuffle_epi8(
		_mm_loadu_si128((const __m128i *)(const void *)p), bswap);
}

/* The register value for the message R (R x^32 mod P), R at most 128 bits. */
CLMUL_TARGET static inline uint32_t
reduce(__m128i r)
{
	const __m128i k96 = _mm_set_epi64x(K_96, K_32);
	const __m128i k64 = _mm_set_epi64x(0, K_64);
	const __m128i mu = _mm_set_epi64x(0, MU);
	const __m128i poly = _mm_set_epi64x(0, K_32);
	__m128i v, w, t;

	/* v = H (x^96 mod P) + L (x^32 mod P), congruent to R x^32 */
	v = fold(r, k96);
	/* w = A (x^64 mod P) + B where v = A x^64 + B: below 64 bits */
	w = _mm_xor_si128(_mm_clmulepi64_si128(v, k64, 0x01),
			  _mm_move_epi64(v));
	/* Barrett: q = floor(floor(w / x^32) mu / x^32), w mod P = w - q P */
	t = _mm_clmulepi64_si128(_mm_srli_epi64(w, 32), mu, 0x00);
	t = _mm_clmulepi64_si128(_mm_srli_epi64(t, 32), poly, 0x00);
	return (uint32_t)_mm_cvtsi128_si32(_mm_xor_si128(w, t));
}

/* n >= 64. Four independent 128-bit lanes fold 64 bytes per iteration, then
 * merge into one; whole blocks fold one at a time and the last 0..15 bytes go
 * through the table. */
CLMUL_TARGET static uint32_t
crc_clmul(uint32_t crc, const uint8_t *p, size_t n)
{
	const __m128i bswap = _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
					   12, 13, 14, 15);
	const __m128i k512 = _mm_set_epi64x(K_576, K_512);
	const __m128i k128 = _mm_set_epi64x(K_192, K_128);
	__m128i x0, x1, x2, x3;

	/* The incoming register is the same as XOR into the first 32 bits. */
	x0 = _mm_xor_si128(load_block(p, bswap),
			   _mm_set_epi32((int)crc, 0, 0, 0));
	x1 = load_block(p + 16, bswap);
	x2 = load_block(p + 32, bswap);
	x3 = load_block(p + 48, bswap);
	p += 64;
	n -= 64;
	while (n >= 64) {
		x0 = _mm_xor_si128(fold(x0, k512), load_block(p, bswap));
		x1 = _mm_xor_si128(fold(x1, k512), load_block(p + 16, bswap));
		x2 = _mm_xor_si128(fold(x2, k512), load_block(p + 32, bswap));
		x3 = _mm_xor_si128(fold(x3, k512), load_block(p + 48, bswap));
		p += 64;
		n -= 64;
	}
	x0 = _mm_xor_si128(fold(x0, k128), x1);
	x0 = _mm_xor_si128(fold(x0, k128), x2);
	x0 = _mm_xor_si128(fold(x0, k128), x3);
	while (n >= 16) {
		x0 = _mm_xor_si128(fold(x0, k128), load_block(p, bswap));
		p += 16;
		n -= 16;
	}
	return bw_crc32_msb_portable(reduce(x0), p, n);
}

int
bw_crc_have_clmul(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("pclmul") &&
	       __builtin_cpu_supports("sse4.1");
}

uint32_t
bw_crc32_msb_clmul(uint32_t crc, const uint8_t *p, size_t n)
{
	if (n < CLMUL_MIN || !bw_crc_have_clmul())
		return bw_crc32_msb_portable(crc, p, n);
	return crc_clmul(crc, p, n);
}
#else
int
bw_crc_have_clmul(void)
{
	return 0;
}

uint32_t
bw_crc32_msb_clmul(uint32_t crc, const uint8_t *p, size_t n)
{
	return bw_crc32_msb_portable(crc, p, n);
}
#endif

const char *
bw_crc_engine(void)
{
	return bw_crc_have_clmul() ? "clmul" : "slice8";
}

void
bw_cksum_init(struct bw_cksum *s)
{
	s->crc = 0;
	s->len = 0;
}

void
bw_cksum_update(struct bw_cksum *s, const void *p, size_t n)
{
	s->crc = bw_crc32_msb_clmul(s->crc, p, n);
	s->len += n;
}

uint32_t
bw_cksum_final(const struct bw_cksum *s)
{
	uint32_t crc = s->crc;
	uint64_t len = s->len;

	while (len != 0) {
		crc = crc_byte(crc, (uint8_t)len);
		len >>= 8;
	}
	return ~crc;
}

uint32_t
bw_cksum(const void *p, size_t n)
{
	struct bw_cksum s;

	bw_cksum_init(&s);
	bw_cksum_update(&s, p, n);
	return bw_cksum_final(&s);
}
