/* Unit tests for the cksum CRC (src/core/crc.c): known answers, streaming,
 * the table and carry-less engines against each other, and GNU cksum.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "bulwark/crc.h"
#include "core/crc_table.h"

#define MIB (1024 * 1024)

static uint64_t
next_rand(uint64_t *state)
{
	/* splitmix64: deterministic, so a failure reproduces */
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void
fill_rand(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t state = seed;
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (uint8_t)(next_rand(&state) >> 56);
}

static uint8_t *
rand_buf(size_t n, uint64_t seed)
{
	uint8_t *p = malloc(n > 0 ? n : 1);

	assert_non_null(p);
	fill_rand(p, n, seed);
	return p;
}

/* cksum by its definition, one bit at a time: independent of both engines. */
static uint32_t
ref_feed(uint32_t crc, uint8_t b)
{
	int i;

	crc ^= (uint32_t)b << 24;
	for (i = 0; i < 8; i++)
		crc = crc & 0x80000000u ? crc << 1 ^ 0x04c11db7u : crc << 1;
	return crc;
}

static uint32_t
ref_cksum(const uint8_t *p, size_t n, uint64_t len)
{
	uint32_t crc = 0;
	size_t i;

	for (i = 0; i < n; i++)
		crc = ref_feed(crc, p[i]);
	for (; len != 0; len >>= 8)
		crc = ref_feed(crc, (uint8_t)len);
	return ~crc;
}

static void
empty_input_is_4294967295(void **state)
{
	(void)state;
	assert_int_equal(bw_cksum("", 0), 4294967295u);
	assert_int_equal(bw_cksum(NULL, 0), 4294967295u);
}

static void
letter_a_is_1220704766(void **state)
{
	(void)state;
	assert_int_equal(bw_cksum("a", 1), 1220704766u);
}

static void
digits_123456789_are_930766865(void **state)
{
	(void)state;
	assert_int_equal(bw_cksum("123456789", 9), 930766865u);
}

static void
one_shot_matches_bitwise_reference(void **state)
{
	static const size_t lens[] = {0,  1,   3,   4,	 5,    8,    63,   64,
				      65, 255, 256, 257, 1000, 4096, 65537};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		uint8_t *p = rand_buf(lens[i], 1000 + i);

		assert_int_equal(bw_cksum(p, lens[i]),
				 ref_cksum(p, lens[i], lens[i]));
		free(p);
	}
}

/* Lengths of several bytes (up to eight) are all fed, low byte first. */
static void
final_feeds_every_length_byte_low_first(void **state)
{
	static const uint64_t lens[] = {0xff,
					0x100,
					0xffff,
					0x10000,
					0xffffffffu,
					0x100000000ULL,
					0x123456789abcULL,
					UINT64_MAX};
	uint8_t data[16];
	size_t i;

	(void)state;
	fill_rand(data, sizeof(data), 7);
	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		struct bw_cksum s;

		bw_cksum_init(&s);
		bw_cksum_update(&s, data, sizeof(data));
		s.len = lens[i]; /* as if that many bytes had been fed */
		assert_int_equal(bw_cksum_final(&s),
				 ref_cksum(data, sizeof(data), lens[i]));
	}
}

static void
check_splits(const uint8_t *p, size_t n)
{
	uint32_t want = bw_cksum(p, n);
	size_t i;

	for (i = 0; i <= n; i++) {
		struct bw_cksum s;

		bw_cksum_init(&s);
		bw_cksum_update(&s, p, i);
		bw_cksum_update(&s, p + i, n - i);
		assert_int_equal(s.len, n);
		assert_int_equal(bw_cksum_final(&s), want);
	}
}

static void
streaming_split_at_every_point_equals_one_shot(void **state)
{
	uint8_t *p = rand_buf(4099, 11);
	struct bw_cksum s;
	size_t n, i;

	(void)state;
	for (n = 0; n <= 300; n++)
		check_splits(p, n);
	check_splits(p, 4099);

	/* one byte at a time, and in three uneven pieces */
	bw_cksum_init(&s);
	for (i = 0; i < 4099; i++)
		bw_cksum_update(&s, p + i, 1);
	assert_int_equal(bw_cksum_final(&s), bw_cksum(p, 4099));
	bw_cksum_init(&s);
	bw_cksum_update(&s, p, 65);
	bw_cksum_update(&s, p + 65, 1000);
	bw_cksum_update(&s, p + 1065, 4099 - 1065);
	assert_int_equal(bw_cksum_final(&s), bw_cksum(p, 4099));
	free(p);
}

static void
check_engines(const uint8_t *p, size_t n, uint64_t *rng)
{
	uint32_t init = (uint32_t)next_rand(rng);
	uint32_t a = bw_crc32_msb_portable(init, p, n);
	uint32_t b = bw_crc32_msb_clmul(init, p, n);
	uint32_t c = bw_crc32_msb_vpclmul(init, p, n);

	if (a != b)
		fail_msg("engines differ at length %zu: %08x != %08x", n, a, b);
	if (a != c)
		fail_msg("512-bit engine differs at length %zu: %08x != %08x",
			 n, a, c);
	/* and from a zero register, the way bw_cksum starts */
	assert_int_equal(bw_crc32_msb_portable(0, p, n),
			 bw_crc32_msb_clmul(0, p, n));
	assert_int_equal(bw_crc32_msb_portable(0, p, n),
			 bw_crc32_msb_vpclmul(0, p, n));
}

static void
engines_agree_on_every_length_and_alignment_to_300(void **state)
{
	uint8_t *p = rand_buf(300 + 16, 21);
	uint64_t rng = 5;
	size_t n, off;

	(void)state;
	for (n = 0; n <= 300; n++) {
		for (off = 0; off < 16; off++)
			check_engines(p + off, n, &rng);
	}
	free(p);
}

/* The 512-bit engine's paths: one iteration of 256 bytes or several, the
 * merge, then whole blocks and a tail of every length. */
static void
engines_agree_on_every_length_to_1100(void **state)
{
	uint8_t *p = rand_buf(1100 + 64, 23);
	uint64_t rng = 7;
	size_t n, off;

	(void)state;
	for (n = 250; n <= 1100; n++) {
		for (off = 0; off < 64; off += 13)
			check_engines(p + off, n, &rng);
	}
	free(p);
}

static void
engines_agree_on_large_buffers(void **state)
{
	static const size_t lens[] = {4095, 4096, 4097, MIB + 3};
	uint8_t *p = rand_buf(MIB + 3 + 16, 31);
	uint64_t rng = 6;
	size_t i, off;

	(void)state;
	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		for (off = 0; off < 16; off += 3)
			check_engines(p + off, lens[i], &rng);
	}
	free(p);
}

/* Data that ends right before an unmapped page: neither engine may read
 * past the end, however the length and alignment fall. */
static void
engines_do_not_read_past_the_end(void **state)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t pg = (size_t)page;
	uint8_t *map, *end;
	uint64_t rng = 9;
	size_t n;

	(void)state;
	map = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(map != MAP_FAILED);
	assert_int_equal(mprotect(map + pg, pg, PROT_NONE), 0);
	fill_rand(map, pg, 41);
	end = map + pg;
	for (n = 0; n <= 1024 && n <= pg; n++)
		check_engines(end - n, n, &rng);
	munmap(map, 2 * pg);
}

/* Whether /proc/cpuinfo's first "flags" line names every one of the
 * space-separated flags in want (the kernel drops the AVX-512 ones when it
 * has not enabled their registers); -1 if it cannot be read. */
static int
cpuinfo_has(const char *want)
{
	char line[8192], w[64];
	const char *p = want, *e;
	FILE *f = fopen("/proc/cpuinfo", "r");
	int found = -1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "flags", 5) != 0)
			continue;
		found = 1;
		line[strcspn(line, "\n")] = ' ';
		for (; *p != '\0'; p = *e ? e + 1 : e) {
			e = strchr(p, ' ');
			e = e != NULL ? e : p + strlen(p);
			snprintf(w, sizeof(w), " %.*s ", (int)(e - p), p);
			if (strstr(line, w) == NULL)
				found = 0;
		}
		break;
	}
	fclose(f);
	return found;
}

/* The engines are picked as the CPU allows: on a CPU with them, the 512-bit
 * one is used (else the tests above would compare the 128-bit one twice). */
static void
engines_are_picked_as_the_cpu_allows(void **state)
{
	int has;

	(void)state;
#if defined(__x86_64__)
	has = cpuinfo_has("avx512f avx512bw vpclmulqdq pclmulqdq sse4_1");
	if (has < 0)
		skip();
	assert_int_equal(bw_crc_have_vpclmul(), has);
	has = cpuinfo_has("pclmulqdq sse4_1");
	assert_int_equal(bw_crc_have_clmul(), has);
#else
	skip();
#endif
}

static void
engine_name_matches_cpu_support(void **state)
{
	(void)state;
	if (bw_crc_have_vpclmul())
		assert_string_equal(bw_crc_engine(), "vpclmul");
	else if (bw_crc_have_clmul())
		assert_string_equal(bw_crc_engine(), "clmul");
	else
		assert_string_equal(bw_crc_engine(), "slice8");
}

static uint32_t
gnu_cksum(const uint8_t *p, size_t n)
{
	char path[] = "/tmp/bw_test_crc_XXXXXX";
	char cmd[128], line[256], *end;
	unsigned long v;
	FILE *f;
	int fd;

	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "wb");
	assert_non_null(f);
	if (n > 0)
		assert_int_equal(fwrite(p, 1, n, f), n);
	assert_int_equal(fclose(f), 0);

	assert_true(snprintf(cmd, sizeof(cmd), "cksum < %s", path) <
		    (int)sizeof(cmd));
	f = popen(cmd, "r");
	assert_non_null(f);
	assert_non_null(fgets(line, sizeof(line), f));
	assert_int_equal(pclose(f), 0);
	unlink(path);

	v = strtoul(line, &end, 10);
	assert_true(end != line && *end == ' ');
	assert_true(v <= UINT32_MAX);
	return (uint32_t)v;
}

static void
matches_gnu_cksum_on_pseudo_random_data(void **state)
{
	static const size_t lens[] = {0,  1,  7,  8,  9,    15,	  16,
				      17, 63, 64, 65, 4095, 4096, MIB + 3};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		uint8_t *p = rand_buf(lens[i], 100 + i);
		uint32_t want = gnu_cksum(p, lens[i]);

		if (bw_cksum(p, lens[i]) != want)
			fail_msg("length %zu: bw_cksum %u, cksum %u", lens[i],
				 bw_cksum(p, lens[i]), want);
		free(p);
	}
}

/* The constant tables are what their definition says, bit by bit. */
static void
slice_tables_match_their_definition(void **state)
{
	uint32_t r;
	unsigned b, k, bit;

	(void)state;
	for (b = 0; b < 256; b++) {
		r = (uint32_t)b << 24;
		for (bit = 0; bit < 8; bit++)
			r = r & 0x80000000u ? r << 1 ^ 0x04C11DB7u : r << 1;
		assert_int_equal(bw_crc_table[0][b], r);
		for (k = 1; k < 8; k++) {
			r = bw_crc_table[k - 1][b];
			assert_int_equal(bw_crc_table[k][b],
					 r << 8 ^ bw_crc_table[0][r >> 24]);
		}
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(slice_tables_match_their_definition),
		cmocka_unit_test(empty_input_is_4294967295),
		cmocka_unit_test(letter_a_is_1220704766),
		cmocka_unit_test(digits_123456789_are_930766865),
		cmocka_unit_test(one_shot_matches_bitwise_reference),
		cmocka_unit_test(final_feeds_every_length_byte_low_first),
		cmocka_unit_test(
			streaming_split_at_every_point_equals_one_shot),
		cmocka_unit_test(
			engines_agree_on_every_length_and_alignment_to_300),
		cmocka_unit_test(engines_agree_on_every_length_to_1100),
		cmocka_unit_test(engines_are_picked_as_the_cpu_allows),
		cmocka_unit_test(engines_agree_on_large_buffers),
		cmocka_unit_test(engines_do_not_read_past_the_end),
		cmocka_unit_test(engine_name_matches_cpu_support),
		cmocka_unit_test(matches_gnu_cksum_on_pseudo_random_data),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
