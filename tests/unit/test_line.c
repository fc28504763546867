/* The rooms line framer (proto/line.c): '\n' and "\r\n" endings, pauses
 * that make a partial line a line, the max / max + 1 edges, streams fed one
 * byte at a time, inputs that end at a guard page.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/line.h"
#include "support/guard.h"

/* bw_line_next on s[0..n) placed just before the guard page; checks that a
 * line points at the start of the input. */
static long
next_at_guard(struct guard *g, const void *s, size_t n, size_t max, int flush,
	      size_t *len)
{
	const uint8_t *p = place(g, s, n), *line = NULL;
	long r = bw_line_next(p, n, max, flush, &line, len);

	assert_ptr_equal(line, p);
	if (r <= 0)
		assert_int_equal(*len, 0);
	return r;
}

static void
empty_input_is_need_more_even_after_a_pause(void **state)
{
	const uint8_t *line = NULL;
	size_t len = 7;
	uint8_t b = 'x';

	(void)state;
	assert_int_equal(bw_line_next(&b, 0, 10, 0, &line, &len), 0);
	assert_int_equal(bw_line_next(&b, 0, 10, 1, &line, &len), 0);
	assert_int_equal(bw_line_next(&b, 0, 0, 1, &line, &len), 0);
	assert_int_equal(len, 0);
}

static void
lf_ends_a_line(void **state)
{
	struct guard g;
	size_t len;

	(void)state;
	guard_init(&g);
	assert_int_equal(next_at_guard(&g, "hello\n", 6, 10, 0, &len), 6);
	assert_int_equal(len, 5);
	guard_fini(&g);
}

static void
cr_before_lf_is_dropped(void **state)
{
	const uint8_t *line;
	size_t len;

	(void)state;
	assert_int_equal(bw_line_next((const uint8_t *)"hi\r\nnext", 8, 10, 0,
				      &line, &len),
			 4);
	assert_int_equal(len, 2);
	assert_memory_equal(line, "hi", 2);
}

static void
only_one_cr_before_lf_is_dropped(void **state)
{
	const uint8_t *line;
	size_t len;

	(void)state;
	assert_int_equal(
		bw_line_next((const uint8_t *)"a\r\r\n", 4, 10, 0, &line, &len),
		4);
	assert_int_equal(len, 2);
	assert_memory_equal(line, "a\r", 2);
}

static void
cr_inside_a_line_is_an_ordinary_byte(void **state)
{
	const uint8_t *line;
	size_t len;

	(void)state;
	/* a lone '\r' ends nothing: without a pause this is need more */
	assert_int_equal(
		bw_line_next((const uint8_t *)"a\rb", 3, 10, 0, &line, &len),
		0);
	assert_int_equal(
		bw_line_next((const uint8_t *)"a\rb\n", 4, 10, 0, &line, &len),
		4);
	assert_int_equal(len, 3);
	assert_memory_equal(line, "a\rb", 3);
}

static void
empty_lines_have_length_zero(void **state)
{
	struct guard g;
	size_t len = 9;

	(void)state;
	guard_init(&g);
	assert_int_equal(next_at_guard(&g, "\n", 1, 10, 0, &len), 1);
	assert_int_equal(len, 0);
	len = 9;
	assert_int_equal(next_at_guard(&g, "\r\n", 2, 10, 0, &len), 2);
	assert_int_equal(len, 0);
	len = 9;
	assert_int_equal(next_at_guard(&g, "\n\n", 2, 0, 0, &len), 1);
	assert_int_equal(len, 0);
	guard_fini(&g);
}

static void
nul_bytes_are_ordinary_bytes(void **state)
{
	const uint8_t *line;
	size_t len;

	(void)state;
	assert_int_equal(bw_line_next((const uint8_t *)"a\0b\0\n", 5, 10, 0,
				      &line, &len),
			 5);
	assert_int_equal(len, 4);
	assert_memory_equal(line, "a\0b\0", 4);
}

/* Every prefix of a line short of its '\n' is need more, each read ending
 * at the guard page; the whole is one line. */
static void
line_split_byte_by_byte_is_one_line(void **state)
{
	static const char s[] = "hello, world\r\n";
	size_t n = sizeof(s) - 1, i, len;
	struct guard g;

	(void)state;
	guard_init(&g);
	for (i = 0; i < n; i++)
		assert_int_equal(next_at_guard(&g, s, i, 64, 0, &len), 0);
	assert_int_equal(next_at_guard(&g, s, n, 64, 0, &len), (long)n);
	assert_int_equal(len, n - 2);
	guard_fini(&g);
}

/* A connection's buffer: bytes arrive one at a time, and lines are taken
 * off its front as they complete. */
static void
stream_fed_byte_by_byte_gives_each_line_once(void **state)
{
	static const char s[] = "one\r\n\ntwo\n\r\nthree\r\n";
	static const char *want[] = {"one", "", "two", "", "three"};
	uint8_t buf[64];
	const uint8_t *line;
	size_t have = 0, got = 0, i, len;
	long r;

	(void)state;
	for (i = 0; i < sizeof(s) - 1; i++) {
		buf[have++] = (uint8_t)s[i];
		while ((r = bw_line_next(buf, have, 8, 0, &line, &len)) > 0) {
			assert_true(got < sizeof(want) / sizeof(want[0]));
			assert_int_equal(len, strlen(want[got]));
			assert_memory_equal(line, want[got], len);
			got++;
			memmove(buf, buf + r, have - (size_t)r);
			have -= (size_t)r;
		}
		assert_int_equal(r, 0);
	}
	assert_int_equal(got, sizeof(want) / sizeof(want[0]));
	assert_int_equal(have, 0);
}

static void
pause_makes_a_partial_line_a_line(void **state)
{
	struct guard g;
	size_t len;

	(void)state;
	guard_init(&g);
	assert_int_equal(next_at_guard(&g, "hello", 5, 10, 0, &len), 0);
	assert_int_equal(next_at_guard(&g, "hello", 5, 10, 1, &len), 5);
	assert_int_equal(len, 5);
	guard_fini(&g);
}

static void
pause_drops_one_trailing_cr(void **state)
{
	struct guard g;
	size_t len;

	(void)state;
	guard_init(&g);
	assert_int_equal(next_at_guard(&g, "hi\r", 3, 10, 1, &len), 3);
	assert_int_equal(len, 2);
	assert_int_equal(next_at_guard(&g, "hi\r\r", 4, 10, 1, &len), 4);
	assert_int_equal(len, 3);
	assert_int_equal(next_at_guard(&g, "\r", 1, 10, 1, &len), 1);
	assert_int_equal(len, 0);
	guard_fini(&g);
}

/* A pause makes the bytes after the last '\n' a line, not the '\n' ones. */
static void
pause_takes_complete_lines_first(void **state)
{
	const uint8_t *p = (const uint8_t *)"ab\ncd", *line;
	size_t len;

	(void)state;
	assert_int_equal(bw_line_next(p, 5, 10, 1, &line, &len), 3);
	assert_int_equal(len, 2);
	assert_ptr_equal(line, p);
	assert_int_equal(bw_line_next(p + 3, 2, 10, 1, &line, &len), 2);
	assert_int_equal(len, 2);
	assert_ptr_equal(line, p + 3);
}

static void
max_then_lf_is_accepted(void **state)
{
	struct guard g;
	size_t len;

	(void)state;
	guard_init(&g);
	assert_int_equal(next_at_guard(&g, "abcd\n", 5, 4, 0, &len), 5);
	assert_int_equal(len, 4);
	guard_fini(&g);
}

static void
max_then_crlf_is_accepted(void **state)
{
	struct guard g;
	size_t len;

	(void)state;
	guard_init(&g);
	assert_int_equal(next_at_guard(&g, "abcd\r\n", 6, 4, 0, &len), 6);
	assert_int_equal(len, 4);
	guard_fini(&g);
}

static void
max_then_lone_cr_is_need_more_unless_paused(void **state)
{
	struct guard g;
	size_t len;

	(void)state;
	guard_init(&g);
	assert_int_equal(next_at_guard(&g, "abcd\r", 5, 4, 0, &len), 0);
	assert_int_equal(next_at_guard(&g, "abcd\r", 5, 4, 1, &len), 5);
	assert_int_equal(len, 4);
	/* the '\r' was not before a '\n' after all */
	assert_int_equal(next_at_guard(&g, "abcd\rx", 6, 4, 0, &len),
			 BW_LINE_TOO_LONG);
	guard_fini(&g);
}

static void
max_plus_one_without_newline_is_too_long(void **state)
{
	struct guard g;
	size_t len;

	(void)state;
	guard_init(&g);
	assert_int_equal(next_at_guard(&g, "abcde", 5, 4, 0, &len),
			 BW_LINE_TOO_LONG);
	assert_int_equal(next_at_guard(&g, "abcde", 5, 4, 1, &len),
			 BW_LINE_TOO_LONG);
	assert_int_equal(next_at_guard(&g, "abcd\r\r", 6, 4, 1, &len),
			 BW_LINE_TOO_LONG);
	guard_fini(&g);
}

static void
max_plus_one_then_newline_is_too_long(void **state)
{
	struct guard g;
	size_t len;

	(void)state;
	guard_init(&g);
	assert_int_equal(next_at_guard(&g, "abcde\n", 6, 4, 0, &len),
			 BW_LINE_TOO_LONG);
	assert_int_equal(next_at_guard(&g, "abcde\r\n", 7, 4, 0, &len),
			 BW_LINE_TOO_LONG);
	guard_fini(&g);
}

/* Fed a byte at a time, a long line is need more up to max bytes, and too
 * long at the first byte past them: the server never buffers more. */
static void
too_long_is_reported_as_soon_as_proved(void **state)
{
	uint8_t s[108];
	struct guard g;
	size_t i, len;

	(void)state;
	memset(s, 'z', sizeof(s));
	guard_init(&g);
	for (i = 0; i <= 100; i++)
		assert_int_equal(next_at_guard(&g, s, i, 100, 0, &len), 0);
	for (; i <= sizeof(s); i++)
		assert_int_equal(next_at_guard(&g, s, i, 100, 0, &len),
				 BW_LINE_TOO_LONG);
	guard_fini(&g);
}

/* The rooms default: 4096 bytes then "\r\n" is a line, 4097 are not. */
static void
rooms_default_max_is_4096_bytes(void **state)
{
	uint8_t *s = malloc(BW_LINE_MAX + 3);
	const uint8_t *line;
	size_t len;

	(void)state;
	assert_non_null(s);
	memset(s, 'y', BW_LINE_MAX + 1);
	memcpy(s + BW_LINE_MAX, "\r\n", 2);
	assert_int_equal(
		bw_line_next(s, BW_LINE_MAX + 2, BW_LINE_MAX, 0, &line, &len),
		BW_LINE_MAX + 2);
	assert_int_equal(len, BW_LINE_MAX);
	memcpy(s + BW_LINE_MAX, "y\r\n", 3);
	assert_int_equal(
		bw_line_next(s, BW_LINE_MAX + 3, BW_LINE_MAX, 0, &line, &len),
		BW_LINE_TOO_LONG);
	free(s);
}

static void
max_zero_accepts_only_empty_lines(void **state)
{
	struct guard g;
	size_t len;

	(void)state;
	guard_init(&g);
	assert_int_equal(next_at_guard(&g, "\n", 1, 0, 0, &len), 1);
	assert_int_equal(next_at_guard(&g, "\r\n", 2, 0, 0, &len), 2);
	assert_int_equal(next_at_guard(&g, "\r", 1, 0, 0, &len), 0);
	assert_int_equal(next_at_guard(&g, "\r", 1, 0, 1, &len), 1);
	assert_int_equal(next_at_guard(&g, "a", 1, 0, 0, &len),
			 BW_LINE_TOO_LONG);
	assert_int_equal(next_at_guard(&g, "a\n", 2, 0, 0, &len),
			 BW_LINE_TOO_LONG);
	guard_fini(&g);
}

static void
huge_max_does_not_overflow(void **state)
{
	const uint8_t *line;
	size_t len;

	(void)state;
	assert_int_equal(bw_line_next((const uint8_t *)"abc", 3, SIZE_MAX, 0,
				      &line, &len),
			 0);
	assert_int_equal(bw_line_next((const uint8_t *)"abc", 3, SIZE_MAX, 1,
				      &line, &len),
			 3);
	assert_int_equal(len, 3);
	assert_int_equal(bw_line_next((const uint8_t *)"abc\r\n", 5,
				      SIZE_MAX - 1, 0, &line, &len),
			 5);
	assert_int_equal(len, 3);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(empty_input_is_need_more_even_after_a_pause),
		cmocka_unit_test(lf_ends_a_line),
		cmocka_unit_test(cr_before_lf_is_dropped),
		cmocka_unit_test(only_one_cr_before_lf_is_dropped),
		cmocka_unit_test(cr_inside_a_line_is_an_ordinary_byte),
		cmocka_unit_test(empty_lines_have_length_zero),
		cmocka_unit_test(nul_bytes_are_ordinary_bytes),
		cmocka_unit_test(line_split_byte_by_byte_is_one_line),
		cmocka_unit_test(stream_fed_byte_by_byte_gives_each_line_once),
		cmocka_unit_test(pause_makes_a_partial_line_a_line),
		cmocka_unit_test(pause_drops_one_trailing_cr),
		cmocka_unit_test(pause_takes_complete_lines_first),
		cmocka_unit_test(max_then_lf_is_accepted),
		cmocka_unit_test(max_then_crlf_is_accepted),
		cmocka_unit_test(max_then_lone_cr_is_need_more_unless_paused),
		cmocka_unit_test(max_plus_one_without_newline_is_too_long),
		cmocka_unit_test(max_plus_one_then_newline_is_too_long),
		cmocka_unit_test(too_long_is_reported_as_soon_as_proved),
		cmocka_unit_test(rooms_default_max_is_4096_bytes),
		cmocka_unit_test(max_zero_accepts_only_empty_lines),
		cmocka_unit_test(huge_max_does_not_overflow),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
