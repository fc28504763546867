/* The bus's URL (--bus): what is taken and what is refused with a reason.
 * Its connections, subscriptions and losses are tested against a real
 * Redis with three nodes (tests/integration/test_cluster.py).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bulwark/err.h"
#include "bulwark/loop.h"
#include "store/bus/bus.h"

static int
try_url(const char *url, char *why, size_t cap)
{
	struct bw_bus_cfg cfg = {.url = url, .password = NULL};
	struct bw_loop *loop;
	struct bw_bus *b = NULL;
	int rc;

	assert_int_equal(bw_loop_new(&loop, 0), 0);
	why[0] = '\0';
	rc = bw_bus_open(&b, &cfg, loop, why, cap);
	assert_int_equal(bw_bus_up(b), 0); /* nothing is waited for */
	bw_bus_close(b);
	bw_loop_free(loop);
	return rc;
}

static void
good_urls_are_taken(void **state)
{
	static const char *const good[] = {
		"redis://127.0.0.1",
		"redis://127.0.0.1:6380",
		"redis://:secret@127.0.0.1:6380/2",
		"redis://user:pw@localhost/0",
		"redis://127.0.0.1:1/15",
	};
	char why[200];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_int_equal(try_url(good[i], why, sizeof(why)), 0);
}

static void
bad_urls_are_refused_with_a_reason(void **state)
{
	static const char *const bad[] = {
		"http://127.0.0.1",
		"127.0.0.1:6379",
		"redis://",
		"redis://:6379",
		"redis://h:0",
		"redis://h:65536",
		"redis://h:x",
		"redis://h/db",
		"redis://h/1001",
		"redis://pw@h",
		"redis://h:123456789012345678",
	};
	char why[200];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(try_url(bad[i], why, sizeof(why)), BW_ECONFIG);
		assert_non_null(strstr(why, "--bus"));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(good_urls_are_taken),
		cmocka_unit_test(bad_urls_are_refused_with_a_reason),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
