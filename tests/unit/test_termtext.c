/* The chat client's terminal text: where a UTF-8 character cut by a read
 * ends, and the columns text takes (wide, combining, emoji, tabs).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cli/termtext.h"

#define W(s) bw_tt_whole((const uint8_t *)(s), sizeof(s) - 1)
#define C(s) bw_tt_cols((s), sizeof(s) - 1)

static void
a_character_cut_at_the_end_is_left_for_the_next_read(void **state)
{
	(void)state;
	assert_int_equal(W("ab"), 2);
	assert_int_equal(W("ab\xD7"), 2);	     /* first of two */
	assert_int_equal(W("ab\xD7\x90"), 4);	     /* א whole */
	assert_int_equal(W("\xE8\xAA"), 0);	     /* two of 語's three */
	assert_int_equal(W("\xE8\xAA\x9E"), 3);	     /* 語 */
	assert_int_equal(W("a\xF0\x9F\x98"), 1);     /* three of four */
	assert_int_equal(W("a\xF0\x9F\x98\x80"), 5); /* 😀 */
	assert_int_equal(W(""), 0);
}

static void
invalid_bytes_count_as_whole(void **state)
{
	(void)state;
	assert_int_equal(W("a\xFF"), 2);     /* never a lead byte */
	assert_int_equal(W("a\x80"), 2);     /* a stray continuation */
	assert_int_equal(W("a\xF8\x80"), 3); /* no 5-byte forms */
}

static void
columns_count_wide_characters_twice_and_marks_not_at_all(void **state)
{
	(void)state;
	assert_int_equal(C("abc"), 3);
	assert_int_equal(C("\xD7\xA9\xD7\x9C\xD7\x95\xD7\x9D"), 4); /* שלום */
	assert_int_equal(C("\xE8\xAA\x9E\xE8\xAA\x9E"), 4);	    /* 語語 */
	assert_int_equal(C("e\xCC\x81"), 1);	    /* é, NFD */
	assert_int_equal(C("\xF0\x9F\x98\x80"), 2); /* 😀 */
	assert_int_equal(C("\xEA\xB0\x80"), 2);	    /* 가 */
	assert_int_equal(C("a\tb"), 3);		    /* tab: 1 */
	assert_int_equal(C("\xE8\xAA"), 1);	    /* cut: one U+FFFD */
}

static void
the_tail_that_fits_starts_on_a_character(void **state)
{
	static const char w[] = "\xE8\xAA\x9E\xE8\xAA\x9E\xE8\xAA\x9E";

	(void)state;
	assert_int_equal(bw_tt_tail("abc", 3, 10), 0);
	assert_int_equal(bw_tt_tail("abc", 3, 2), 1);
	assert_int_equal(bw_tt_tail(w, 9, 4), 3); /* the last two */
	assert_int_equal(bw_tt_tail(w, 9, 5), 3); /* not half of one */
	assert_int_equal(bw_tt_tail(w, 9, 1), 9); /* none fits */
	assert_int_equal(bw_tt_tail("ae\xCC\x81", 4, 1), 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			a_character_cut_at_the_end_is_left_for_the_next_read),
		cmocka_unit_test(invalid_bytes_count_as_whole),
		cmocka_unit_test(
			columns_count_wide_characters_twice_and_marks_not_at_all),
		cmocka_unit_test(the_tail_that_fits_starts_on_a_character),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
