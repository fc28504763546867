/* The S3 backend's readers of outside text, on known inputs: the XML of
 * S3's answers (spans, entities, keys listed url-encoded, times) and the
 * AWS shared-credentials file; and the URL's and options' checks. The
 * requests themselves are tested against a real store
 * (tests/integration/test_s3_backend.py).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store/s3/s3_int.h"

#define T(s) (s), strlen(s)

static void
elements_are_found_by_name_not_by_prefix(void **state)
{
	const char *x = "<R><KeyCount>2</KeyCount><Contents><Key>a/b</Key>"
			"<Size>3</Size></Contents><Contents><Key>c</Key>"
			"</Contents><Empty/></R>";
	size_t pos = 0, start, len;
	char out[64];

	(void)state;
	assert_int_equal(s3_xml_text(T(x), "Key", out, sizeof(out)), 0);
	assert_string_equal(out, "a/b");
	assert_int_equal(s3_xml_span(T(x), &pos, "Contents", &start, &len), 0);
	assert_int_equal(s3_xml_text(x + start, len, "Size", out, sizeof(out)),
			 0);
	assert_string_equal(out, "3");
	assert_int_equal(s3_xml_span(T(x), &pos, "Contents", &start, &len), 0);
	assert_int_equal(s3_xml_text(x + start, len, "Key", out, sizeof(out)),
			 0);
	assert_string_equal(out, "c");
	assert_int_equal(s3_xml_span(T(x), &pos, "Contents", &start, &len),
			 BW_ENOTFOUND);
	assert_int_equal(s3_xml_text(T(x), "Empty", out, sizeof(out)), 0);
	assert_string_equal(out, "");
	assert_int_equal(s3_xml_text(T(x), "Missing", out, sizeof(out)),
			 BW_ENOTFOUND);
}

static void
entities_are_decoded_and_bad_ones_refused(void **state)
{
	char out[64];

	(void)state;
	assert_int_equal(s3_xml_text(T("<C>a&amp;b&lt;&#65;&#x42;&#xe9;</C>"),
				     "C", out, sizeof(out)),
			 0);
	assert_string_equal(out, "a&b<AB\xc3\xa9");
	assert_int_equal(s3_xml_text(T("<C>&bogus;</C>"), "C", out, 64),
			 BW_EPROTO);
	assert_int_equal(s3_xml_text(T("<C>&#0;</C>"), "C", out, 64),
			 BW_EPROTO);
	assert_int_equal(s3_xml_text(T("<C>&#xD800;</C>"), "C", out, 64),
			 BW_EPROTO);
	assert_int_equal(s3_xml_text(T("<C>a &amp b</C>"), "C", out, 64),
			 BW_EPROTO);
	assert_int_equal(s3_xml_text(T("<C>unclosed"), "C", out, 64),
			 BW_EPROTO);
	assert_int_equal(s3_xml_text(T("<C>0123456789</C>"), "C", out, 10),
			 BW_ETOOBIG);
	assert_int_equal(s3_xml_text(T("<C><D>x</D></C>"), "C", out, 64),
			 BW_EPROTO);
}

static void
listed_keys_and_times_are_decoded(void **state)
{
	char key[] = "files/a%20b+c%2Bd%C3%A9";
	char nul[] = "a%00b", bad[] = "a%2", worse[] = "a%zz";
	int64_t t;

	(void)state;
	assert_int_equal(s3_url_decode(key), 0);
	assert_string_equal(key, "files/a b c+d\xc3\xa9");
	assert_int_equal(s3_url_decode(nul), BW_EPROTO);
	assert_int_equal(s3_url_decode(bad), BW_EPROTO);
	assert_int_equal(s3_url_decode(worse), BW_EPROTO);
	assert_int_equal(s3_iso_time("2026-11-24T04:13:26.000Z", &t), 0);
	assert_int_equal(t, 1795493606);
	assert_int_equal(s3_iso_time("1970-01-01T00:00:00Z", &t), 0);
	assert_int_equal(t, 0);
	assert_int_equal(s3_iso_time("2026-13-01T00:00:00Z", &t), BW_EPROTO);
	assert_int_equal(s3_iso_time("yesterday", &t), BW_EPROTO);
}

static void
credentials_come_from_the_profile_asked_for(void **state)
{
	const char *f = "# keys\n"
			"[default]\n"
			"aws_access_key_id = AKIADEFAULT\n"
			"aws_secret_access_key=default-secret \r\n"
			"\n"
			"[profile store]\n"
			"  aws_access_key_id\t= test:tester\n"
			"aws_secret_access_key = s3cr3t\n"
			"aws_session_token = tok\n"
			"[half]\n"
			"aws_access_key_id = only\n";
	char *a, *s, *t;

	(void)state;
	assert_int_equal(s3_creds_parse(T(f), "default", &a, &s, &t), 0);
	assert_string_equal(a, "AKIADEFAULT");
	assert_string_equal(s, "default-secret");
	assert_null(t);
	free(a);
	free(s);
	assert_int_equal(s3_creds_parse(T(f), "store", &a, &s, &t), 0);
	assert_string_equal(a, "test:tester");
	assert_string_equal(s, "s3cr3t");
	assert_string_equal(t, "tok");
	free(a);
	free(s);
	free(t);
	assert_int_equal(s3_creds_parse(T(f), "half", &a, &s, &t),
			 BW_ENOTFOUND);
	assert_null(a);
	assert_int_equal(s3_creds_parse(T(f), "none", &a, &s, &t),
			 BW_ENOTFOUND);
}

static void
query_values_are_encoded_for_the_signature(void **state)
{
	char out[64];

	(void)state;
	assert_int_equal(s3_qenc("node/files/a b+c~", out, sizeof(out)), 0);
	assert_string_equal(out, "node%2Ffiles%2Fa%20b%2Bc~");
	assert_int_equal(s3_qenc("0123456789", out, 10), BW_ETOOBIG);
	assert_int_equal(s3_qenc("", out, 1), 0);
	assert_string_equal(out, "");
}

static void
bad_urls_and_options_are_refused(void **state)
{
	static const char *const bad[] = {"s3-bucket",	   "//",
					  "//ab",	   "//UPPER",
					  "//-bucket",	   "//bucket-",
					  "//buck_et",	   "//bucket/../x",
					  "//bucket/a//b", "//bucket/a\\b",
					  "//bucket/a b"};
	struct bw_blob_conf conf;
	struct s3 s;
	size_t i;

	(void)state;
	memset(&conf, 0, sizeof(conf));
	conf.data_dir = "/tmp";
	setenv("AWS_ACCESS_KEY_ID", "a", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "b", 1);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&s, 0, sizeof(s));
		assert_int_equal(s3_conf(&s, &conf, bad[i]), BW_ECONFIG);
		s3_conf_free(&s);
	}
	memset(&s, 0, sizeof(s));
	conf.s3_endpoint = "ftp://x";
	assert_int_equal(s3_conf(&s, &conf, "//bucket"), BW_ECONFIG);
	s3_conf_free(&s);
	memset(&s, 0, sizeof(s));
	conf.s3_endpoint = "http://127.0.0.1:9000/";
	conf.s3_region = "eu-west-3";
	assert_int_equal(s3_conf(&s, &conf, "//my.bucket/a/b"), 0);
	assert_string_equal(s.bucket, "my.bucket");
	assert_string_equal(s.prefix, "a/b/");
	assert_string_equal(s.endpoint, "http://127.0.0.1:9000");
	assert_string_equal(s.sigv4, "aws:amz:eu-west-3:s3");
	s3_conf_free(&s);
	memset(&s, 0, sizeof(s));
	conf.s3_endpoint = "";
	conf.s3_region = "";
	unsetenv("AWS_REGION");
	unsetenv("AWS_DEFAULT_REGION");
	assert_int_equal(s3_conf(&s, &conf, "//bucket"), 0);
	assert_string_equal(s.endpoint, "https://s3.us-east-1.amazonaws.com");
	assert_string_equal(s.prefix, "");
	s3_conf_free(&s);
	unsetenv("AWS_SECRET_ACCESS_KEY");
	memset(&s, 0, sizeof(s));
	assert_int_equal(s3_conf(&s, &conf, "//bucket"), BW_ECONFIG);
	s3_conf_free(&s);
}

/* Status lines as curl hands them over: not NUL-terminated. Each one is
 * copied into a buffer of exactly its length, so a read past it is a
 * sanitizer's error, not a silent pass. */
static long
status_of(const char *text)
{
	size_t n = strlen(text);
	char *p = malloc(n > 0 ? n : 1);
	long st;

	assert_non_null(p);
	memcpy(p, text, n);
	st = s3_status_line(p, n);
	free(p);
	return st;
}

static void
status_lines_are_read_within_their_bytes(void **state)
{
	(void)state;
	assert_int_equal(status_of("HTTP/1.1 200 OK\r\n"), 200);
	assert_int_equal(status_of("HTTP/1.1 404 Not Found\r\n"), 404);
	assert_int_equal(status_of("HTTP/1.1 100 Continue\r\n"), 100);
	assert_int_equal(status_of("HTTP/2 503\r\n"), 503);
	/* a line that ends at the digits */
	assert_int_equal(status_of("HTTP/1.1 204"), 204);
	/* not a status: too short, cut off, not digits, too long, below 100 */
	assert_int_equal(status_of("HTTP/1.1 20"), 0);
	assert_int_equal(status_of("HTTP/1.1 "), 0);
	assert_int_equal(status_of("HTTP/1.1"), 0);
	assert_int_equal(status_of("HTTP/1.1 2x0 OK"), 0);
	assert_int_equal(status_of("HTTP/1.1 2000 OK"), 0);
	assert_int_equal(status_of("HTTP/1.1 099 OK"), 0);
	assert_int_equal(status_of("HTTP/1.1 -20 OK"), 0);
	assert_int_equal(status_of(""), 0);
}

static void
parts_grow_from_8_to_32_mib(void **state)
{
	const size_t mib = 1024u * 1024u;
	uint64_t sum = 0;
	unsigned n;

	(void)state;
	assert_int_equal(s3_part_size(1), 8 * mib); /* S3's least is 5 MiB */
	assert_int_equal(s3_part_size(4), 8 * mib);
	assert_int_equal(s3_part_size(5), 16 * mib);
	assert_int_equal(s3_part_size(8), 16 * mib);
	assert_int_equal(s3_part_size(9), 32 * mib);
	assert_int_equal(s3_part_size(S3_MAX_PARTS), 32 * mib);
	/* 1 GiB is 37 parts; the largest vault file fits S3's 10,000 */
	for (n = 1; sum < 1024 * mib; n++)
		sum += s3_part_size(n);
	assert_int_equal(n - 1, 37);
	for (sum = 0, n = 1; n <= S3_MAX_PARTS; n++)
		sum += s3_part_size(n);
	assert_true(sum >= 0xFFFFFFFFull);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(status_lines_are_read_within_their_bytes),
		cmocka_unit_test(elements_are_found_by_name_not_by_prefix),
		cmocka_unit_test(entities_are_decoded_and_bad_ones_refused),
		cmocka_unit_test(listed_keys_and_times_are_decoded),
		cmocka_unit_test(credentials_come_from_the_profile_asked_for),
		cmocka_unit_test(query_values_are_encoded_for_the_signature),
		cmocka_unit_test(bad_urls_and_options_are_refused),
		cmocka_unit_test(parts_grow_from_8_to_32_mib),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
