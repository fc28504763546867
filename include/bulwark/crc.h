/* The POSIX cksum checksum: CRC-32, polynomial 0x04C11DB7, MSB first, initial
 * value 0, the length appended in little-endian bytes, result inverted.
 * Streaming: init, update any number of times, final.
 */
#ifndef BULWARK_CRC_H
#define BULWARK_CRC_H

#include <stddef.h>
#include <stdint.h>

struct bw_cksum {
	uint32_t crc;
	uint64_t len;
};

void bw_cksum_init(struct bw_cksum *s);
void bw_cksum_update(struct bw_cksum *s, const void *p, size_t n);
uint32_t bw_cksum_final(const struct bw_cksum *s);
/* One-shot convenience. */
uint32_t bw_cksum(const void *p, size_t n);

/* Internal engines, exposed for tests and benchmarks: the raw CRC register
 * update (no length, no inversion) with the portable table code and, when the
 * CPU has it, carry-less multiplication. */
uint32_t bw_crc32_msb_portable(uint32_t crc, const uint8_t *p, size_t n);
uint32_t bw_crc32_msb_clmul(uint32_t crc, const uint8_t *p, size_t n);
/* The same on 512-bit registers (VPCLMULQDQ, AVX-512), from 256 bytes; the
 * 128-bit engine below that or without the CPU's support. */
uint32_t bw_crc32_msb_vpclmul(uint32_t crc, const uint8_t *p, size_t n);
int bw_crc_have_clmul(void);
int bw_crc_have_vpclmul(void);
/* Name of the engine bw_cksum_update uses: "vpclmul", "clmul" or "slice8". */
const char *bw_crc_engine(void);

#endif
