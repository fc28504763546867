/* The POSIX cksum checksum (CRC-32, polynomial 0x04C11DB7, MSB first): a
 * portable slice-by-8 engine, PCLMULQDQ folding engines for x86-64 (128-bit
 * registers, and 512-bit ones where the CPU has VPCLMULQDQ and AVX-512), and
 * the streaming cksum state that picks among them at run time.
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

/*
 * The same folding four blocks to a register: VPCLMULQDQ multiplies the four
 * 128-bit lanes of a 512-bit register at once, and each lane folds as above.
 * Four registers take 256 bytes an iteration, each lane folded over 2048
 * bits; then the registers merge over 512 bits, and the lanes of the last
 * one over 128, into one 128-bit value for reduce().
 */
#define VPCLMUL_TARGET                                                         \
	__attribute__((target("avx512f,avx512bw,vpclmulqdq,pclmul,sse4.1")))
#define VPCLMUL_MIN 256

#define K_2112 0xcbcf3bcbLL
#define K_2048 0x88fe2237LL

VPCLMUL_TARGET static inline __m512i
fold4(__m512i x, __m512i k, __m512i next)
{
	/* next ^ hi*hi ^ lo*lo, the three in one instruction */
	return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x11),
					 _mm512_clmulepi64_epi128(x, k, 0x00),
					 next, 0x96);
}

VPCLMUL_TARGET static inline __m512i
load_blocks4(const uint8_t *p, __m512i bswap)
{
	return _mm512_shuffle_epi8(_mm512_loadu_si512((const void *)p), bswap);
}

/* n >= VPCLMUL_MIN */
VPCLMUL_TARGET static uint32_t
crc_vpclmul(uint32_t crc, const uint8_t *p, size_t n)
{
	const __m512i bswap = _mm512_broadcast_i32x4(_mm_set_epi8(
		0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
	const __m512i k2048 =
		_mm512_broadcast_i32x4(_mm_set_epi64x(K_2112, K_2048));
	const __m512i k512 =
		_mm512_broadcast_i32x4(_mm_set_epi64x(K_576, K_512));
	const __m128i k128 = _mm_set_epi64x(K_192, K_128);
	__m512i x0, x1, x2, x3;
	__m128i a;

	/* the register goes into the first 32 bits, of the first lane */
	x0 = _mm512_xor_si512(
		load_blocks4(p, bswap),
		_mm512_zextsi128_si512(_mm_set_epi32((int)crc, 0, 0, 0)));
	x1 = load_blocks4(p + 64, bswap);
	x2 = load_blocks4(p + 128, bswap);
	x3 = load_blocks4(p + 192, bswap);
	p += 256;
	n -= 256;
	while (n >= 256) {
		x0 = fold4(x0, k2048, load_blocks4(p, bswap));
		x1 = fold4(x1, k2048, load_blocks4(p + 64, bswap));
		x2 = fold4(x2, k2048, load_blocks4(p + 128, bswap));
		x3 = fold4(x3, k2048, load_blocks4(p + 192, bswap));
		p += 256;
		n -= 256;
	}
	x0 = fold4(x0, k512, x1);
	x0 = fold4(x0, k512, x2);
	x0 = fold4(x0, k512, x3);
	a = _mm512_extracti32x4_epi32(x0, 0);
	a = _mm_xor_si128(fold(a, k128), _mm512_extracti32x4_epi32(x0, 1));
	a = _mm_xor_si128(fold(a, k128), _mm512_extracti32x4_epi32(x0, 2));
	a = _mm_xor_si128(fold(a, k128), _mm512_extracti32x4_epi32(x0, 3));
	while (n >= 16) {
		a = _mm_xor_si128(fold(a, k128),
				  load_block(p, _mm512_castsi512_si128(bswap)));
		p += 16;
		n -= 16;
	}
	return bw_crc32_msb_portable(reduce(a), p, n);
}

/* What the CPU (and the kernel, for the 512-bit registers) offers, asked
 * once: 0 none, 1 PCLMULQDQ, 2 VPCLMULQDQ on 512-bit registers too. */
static int
cpu_level(void)
{
	static int level = -1;
	int l = __atomic_load_n(&level, __ATOMIC_RELAXED);

	if (l < 0) {
		__builtin_cpu_init();
		l = 0;
		if (__builtin_cpu_supports("pclmul") &&
		    __builtin_cpu_supports("sse4.1"))
			l = 1;
		if (l == 1 && __builtin_cpu_supports("avx512f") &&
		    __builtin_cpu_supports("avx512bw") &&
		    __builtin_cpu_supports("vpclmulqdq"))
			l = 2;
		__atomic_store_n(&level, l, __ATOMIC_RELAXED);
	}
	return l;
}

int
bw_crc_have_clmul(void)
{
	return cpu_level() >= 1;
}

int
bw_crc_have_vpclmul(void)
{
	return cpu_level() >= 2;
}

uint32_t
bw_crc32_msb_clmul(uint32_t crc, const uint8_t *p, size_t n)
{
	if (n < CLMUL_MIN || !bw_crc_have_clmul())
		return bw_crc32_msb_portable(crc, p, n);
	return crc_clmul(crc, p, n);
}

uint32_t
bw_crc32_msb_vpclmul(uint32_t crc, const uint8_t *p, size_t n)
{
	if (n < VPCLMUL_MIN || !bw_crc_have_vpclmul())
		return bw_crc32_msb_clmul(crc, p, n);
	return crc_vpclmul(crc, p, n);
}
#else
int
bw_crc_have_clmul(void)
{
	return 0;
}

int
bw_crc_have_vpclmul(void)
{
	return 0;
}

uint32_t
bw_crc32_msb_clmul(uint32_t crc, const uint8_t *p, size_t n)
{
	return bw_crc32_msb_portable(crc, p, n);
}

uint32_t
bw_crc32_msb_vpclmul(uint32_t crc, const uint8_t *p, size_t n)
{
	return bw_crc32_msb_portable(crc, p, n);
}
#endif

const char *
bw_crc_engine(void)
{
	if (bw_crc_have_vpclmul())
		return "vpclmul";
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
	s->crc = bw_crc32_msb_vpclmul(s->crc, p, n);
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
