/* CRC throughput: each cksum engine, and bw_cksum_update as dispatched, over a
 * 256 MiB buffer; one warm-up pass, then the median of five timed passes.
 * Prints figures only; not part of the test suite.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_clock.h"
#include "bulwark/crc.h"

#define BUF_LEN (256u * 1024 * 1024)
#define RUNS	5

typedef uint32_t (*engine_fn)(uint32_t crc, const uint8_t *p, size_t n);

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static uint32_t
dispatched(uint32_t crc, const uint8_t *p, size_t n)
{
	struct bw_cksum s;

	bw_cksum_init(&s);
	s.crc = crc;
	bw_cksum_update(&s, p, n);
	return bw_cksum_final(&s);
}

static void
measure(const char *name, engine_fn fn, const uint8_t *buf)
{
	double t[RUNS], t0;
	uint32_t crc;
	int i;

	crc = fn(0, buf, BUF_LEN); /* warm-up: page faults, caches, clocks */
	for (i = 0; i < RUNS; i++) {
		t0 = bench_now_s();
		crc = fn(0, buf, BUF_LEN);
		t[i] = bench_now_s() - t0;
	}
	qsort(t, RUNS, sizeof(t[0]), cmp_double);
	printf("%-24s %7.2f GB/s  (median of %d, %.1f ms; crc %08x)\n", name,
	       (double)BUF_LEN / t[RUNS / 2] / 1e9, RUNS, t[RUNS / 2] * 1e3,
	       crc);
}

int
main(void)
{
	uint8_t *buf = malloc(BUF_LEN);
	uint64_t x = 0x2545f4914f6cdd1dULL;
	size_t i;

	if (buf == NULL) {
		fprintf(stderr, "crc_speed: out of memory\n");
		return 1;
	}
	for (i = 0; i < BUF_LEN; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (uint8_t)x;
	}
	printf("buffer %u MiB, bw_cksum_update uses %s\n", BUF_LEN >> 20,
	       bw_crc_engine());
	measure("slice8", bw_crc32_msb_portable, buf);
	if (bw_crc_have_clmul())
		measure("clmul", bw_crc32_msb_clmul, buf);
	else
		printf("%-24s not available on this CPU\n", "clmul");
	if (bw_crc_have_vpclmul())
		measure("vpclmul", bw_crc32_msb_vpclmul, buf);
	else
		printf("%-24s not available on this CPU\n", "vpclmul");
	measure("bw_cksum_update", dispatched, buf);
	free(buf);
	return 0;
}
