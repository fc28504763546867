/* A guard page for codec tests: bytes placed so that they end exactly where
 * an unreadable page begins, so a decoder that reads one byte too far
 * crashes. Header-only, for cmocka tests (include cmocka.h first).
 */
#ifndef BULWARK_TESTS_GUARD_H
#define BULWARK_TESTS_GUARD_H

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Two pages, the second unreadable: place() puts n bytes so that their end
 * is the start of the unmapped page. */
struct guard {
	uint8_t *map;
	size_t pg;
};

static void
guard_init(struct guard *g)
{
	g->pg = (size_t)sysconf(_SC_PAGESIZE);
	g->map = mmap(NULL, 2 * g->pg, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(g->map != MAP_FAILED);
	assert_int_equal(mprotect(g->map + g->pg, g->pg, PROT_NONE), 0);
}

static const uint8_t *
place(struct guard *g, const void *p, size_t n)
{
	uint8_t *dst = g->map + g->pg - n;

	assert_true(n <= g->pg);
	memset(g->map, 0xee, g->pg);
	if (n > 0)
		memcpy(dst, p, n);
	return dst;
}

static void
guard_fini(struct guard *g)
{
	munmap(g->map, 2 * g->pg);
}

#endif
