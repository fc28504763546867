/* The LastSeen codec: Unix seconds to the UTC text we store and back, the
 * forms other tools leave in clients.LastSeen, and what is refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "store/sqlite/lastseen.h"

static void
format_writes_utc_seconds_text(void **state)
{
	char out[BW_LASTSEEN_TEXT + 1];

	(void)state;
	assert_int_equal(bw_lastseen_format(0, out), 0);
	assert_string_equal(out, "1970-01-01 00:00:00");
	assert_int_equal(bw_lastseen_format(1700000123, out), 0);
	assert_string_equal(out, "2023-11-14 22:15:23");
	assert_int_equal(bw_lastseen_format(253402300799, out), 0);
	assert_string_equal(out, "9999-12-31 23:59:59");
}

static void
format_refuses_years_without_four_digits(void **state)
{
	char out[BW_LASTSEEN_TEXT + 1];

	(void)state;
	assert_int_equal(bw_lastseen_format(253402300800, out), BW_ECONFIG);
	assert_int_equal(bw_lastseen_format(-62167219201, out), BW_ECONFIG);
	assert_int_equal(bw_lastseen_format(INT64_MAX, out), BW_ECONFIG);
}

static int64_t
parsed(const char *text)
{
	int64_t t = -1;

	assert_int_equal(bw_lastseen_parse(text, strlen(text), &t), 0);
	return t;
}

static void
parse_reads_every_form_sqlite_writes(void **state)
{
	(void)state;
	assert_int_equal(parsed("2023-11-14 22:15:23"), 1700000123);
	assert_int_equal(parsed("2023-11-14T22:15:23"), 1700000123);
	assert_int_equal(parsed("2023-11-14 22:15"), 1700000100);
	assert_int_equal(parsed("2023-11-14 22:15:23.987"), 1700000123);
	assert_int_equal(parsed("2023-11-14 22:15:23Z"), 1700000123);
	assert_int_equal(parsed("2023-11-15 00:15:23+02:00"), 1700000123);
	assert_int_equal(parsed("2023-11-14 20:15:23-0200"), 1700000123);
}

static void
format_then_parse_is_identity(void **state)
{
	static const int64_t ts[] = {0,		1,	    59,
				     951782400, 1700000123, 253402300799};
	char out[BW_LASTSEEN_TEXT + 1];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) {
		assert_int_equal(bw_lastseen_format(ts[i], out), 0);
		assert_int_equal(parsed(out), ts[i]);
	}
}

static void
parse_refuses_garbage_and_out_of_range_fields(void **state)
{
	static const char *bad[] = {
		"",
		"yesterday",
		"2023-13-01 00:00:00",
		"2023-00-01 00:00:00",
		"2023-01-32 00:00:00",
		"2023-01-01 24:00:00",
		"2023-01-01 00:60:00",
		"2023-01-01 00:00:61",
		"2023-01-01 00:00:00 ",
		"2023-01-01 00:00:00+2",
		"2023/01/01 00:00:00",
		"+023-01-01 00:00:00",
		"2023-01-01 00:00:00x",
		"2023-01-01 00:00:00.",
	};
	int64_t t;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(bw_lastseen_parse(bad[i], strlen(bad[i]), &t),
				 -1);
}

/* Every prefix of a full text is either one of the short forms or refused,
 * and the parser never reads past the length it is given: the text sits
 * without a NUL at the end of a larger buffer of digits. */
static void
parse_of_each_prefix_reads_only_its_length(void **state)
{
	const char *full = "2023-11-15 00:15:23.5+02:00";
	char buf[64];
	size_t n, len = strlen(full);
	int64_t t;
	int rc;

	(void)state;
	for (n = 0; n <= len; n++) {
		memset(buf, '9', sizeof(buf));
		memcpy(buf, full, n);
		rc = bw_lastseen_parse(buf, n, &t);
		/* HH:MM, HH:MM:SS, a fraction, a whole zone: valid forms */
		if (n == 16 || n == 19 || n == 21 || n == 27)
			assert_int_equal(rc, 0);
		else
			assert_int_equal(rc, -1);
	}
	assert_int_equal(bw_lastseen_parse(full, len, &t), 0);
	assert_int_equal(t, 1700000123);
}

static void
real_is_a_julian_day_or_unix_seconds(void **state)
{
	int64_t t = 0;

	(void)state;
	assert_int_equal(bw_lastseen_from_real(2440587.5, &t), 0);
	assert_int_equal(t, 0);
	assert_int_equal(bw_lastseen_from_real(2460263.42734, &t), 0);
	assert_true(t > 1700000000 && t < 1700000200);
	assert_int_equal(bw_lastseen_from_real(1700000123.0, &t), 0);
	assert_int_equal(t, 1700000123);
	assert_int_equal(bw_lastseen_from_real(-1.0, &t), -1);
	assert_int_equal(bw_lastseen_from_real(1e300, &t), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(format_writes_utc_seconds_text),
		cmocka_unit_test(format_refuses_years_without_four_digits),
		cmocka_unit_test(parse_reads_every_form_sqlite_writes),
		cmocka_unit_test(format_then_parse_is_identity),
		cmocka_unit_test(parse_refuses_garbage_and_out_of_range_fields),
		cmocka_unit_test(parse_of_each_prefix_reads_only_its_length),
		cmocka_unit_test(real_is_a_julian_day_or_unix_seconds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
