/* The PROXY protocol's header (versions 1 and 2, as HAProxy sends them)
 * and the --proxy-from list, on known inputs: complete, partial, malformed
 * and oversized headers; networks and IPv4-mapped addresses. The engine's
 * use of them is tested against the real daemon, behind a real HAProxy
 * too (tests/integration/test_proxy.py).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bulwark/err.h"
#include "engine/proxy.h"

#define T(s) (const uint8_t *)(s), strlen(s)

static const uint8_t sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

static size_t
v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *addr, size_t len)
{
	memcpy(out, sig, 12);
	out[12] = ver_cmd;
	out[13] = fam;
	out[14] = (uint8_t)(len >> 8);
	out[15] = (uint8_t)len;
	if (len > 0)
		memcpy(out + 16, addr, len);
	return 16 + len;
}

static void
v1_lines_name_the_client(void **state)
{
	struct bw_proxy_hdr h;
	const char *l4 = "PROXY TCP4 10.1.2.3 192.168.0.1 56324 443\r\nGET";
	const char *l6 = "PROXY TCP6 2001:db8::7 ::1 65535 1357\r\n";

	(void)state;
	assert_int_equal(bw_proxy_parse(T(l4), &h), 43);
	assert_int_equal(h.version, 1);
	assert_int_equal(h.local, 0);
	assert_string_equal(h.peer, "10.1.2.3:56324");
	assert_int_equal(bw_proxy_parse(T(l6), &h), (ssize_t)strlen(l6));
	assert_string_equal(h.peer, "2001:db8::7:65535");
	assert_int_equal(bw_proxy_parse(T("PROXY UNKNOWN\r\n"), &h), 15);
	assert_int_equal(h.local, 1);
	assert_int_equal(
		bw_proxy_parse(T("PROXY UNKNOWN ffff::1 ::1 1 2\r\n"), &h), 31);
	assert_int_equal(h.local, 1);
}

static void
v1_waits_for_the_end_of_its_line_and_no_longer(void **state)
{
	const char *l = "PROXY TCP4 10.1.2.3 10.0.0.1 1 2\r\n";
	struct bw_proxy_hdr h;
	uint8_t big[200];
	size_t i;

	(void)state;
	for (i = 0; i < strlen(l); i++) /* every prefix asks for more */
		assert_int_equal(bw_proxy_parse((const uint8_t *)l, i, &h), 0);
	memset(big, 'x', sizeof(big));
	memcpy(big, "PROXY TCP4 ", 11);
	/* a CR may still come at 105 (LF at 106: 107 bytes), not later */
	assert_int_equal(bw_proxy_parse(big, 105, &h), 0);
	assert_int_equal(bw_proxy_parse(big, 106, &h), BW_EPROTO);
	big[105] = '\r';
	assert_int_equal(bw_proxy_parse(big, 106, &h), 0);
	big[106] = '\n';
	assert_int_equal(bw_proxy_parse(big, 107, &h), BW_EPROTO); /* x..x */
	assert_int_equal(bw_proxy_parse(big, sizeof(big), &h), BW_EPROTO);
}

static void
v1_malformed_lines_are_refused(void **state)
{
	static const char *const bad[] = {
		"PROXY TCP4 10.1.2.3 10.0.0.1 1 2\n",	    /* no CR */
		"PROXY TCP4 10.1.2.3 10.0.0.1 1\r\n",	    /* a field short */
		"PROXY TCP4 10.1.2.3 10.0.0.1 1 2 3\r\n",   /* one too many */
		"PROXY TCP4 10.1.2.3  10.0.0.1 1 2\r\n",    /* two spaces */
		"PROXY TCP4 10.1.2.3 10.0.0.1 1 2 \r\n",    /* trailing space */
		"PROXY TCP4 10.1.2.300 10.0.0.1 1 2\r\n",   /* not an address */
		"PROXY TCP4 ::1 ::1 1 2\r\n",		    /* v6 as TCP4 */
		"PROXY TCP6 10.1.2.3 10.0.0.1 1 2\r\n",	    /* v4 as TCP6 */
		"PROXY TCP4 10.1.2.3 10.0.0.1 65536 2\r\n", /* port range */
		"PROXY TCP4 10.1.2.3 10.0.0.1 01 2\r\n",    /* leading zero */
		"PROXY TCP4 10.1.2.3 10.0.0.1 -1 2\r\n",
		"PROXY UDP4 10.1.2.3 10.0.0.1 1 2\r\n",
		"PROXY TCP4 10.1.2.3 10.0.0.1 1 2\t\r\n",
		"proxy TCP4 10.1.2.3 10.0.0.1 1 2\r\n",
		"GET / HTTP/1.0\r\n\r\n",
	};
	struct bw_proxy_hdr h;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(bw_proxy_parse(T(bad[i]), &h), BW_EPROTO);
}

static void
v2_headers_name_the_client_or_are_the_proxys_own(void **state)
{
	const uint8_t a4[12] = {10, 1, 2, 3, 10, 0, 0, 1, 0xdc, 0x04, 0, 80};
	uint8_t a6[36 + 7] = {0x20, 0x01, 0x0d, 0xb8}, buf[700];
	struct bw_proxy_hdr h;
	size_t n;

	(void)state;
	a6[15] = 7;
	a6[32] = 0x05;
	a6[33] = 0x39; /* 1337 */
	n = v2(buf, 0x21, 0x11, a4, sizeof(a4));
	memcpy(buf + n, "request", 7);
	assert_int_equal(bw_proxy_parse(buf, n + 7, &h), (ssize_t)n);
	assert_int_equal(h.version, 2);
	assert_int_equal(h.local, 0);
	assert_string_equal(h.peer, "10.1.2.3:56324");
	/* TLVs after the addresses are skipped */
	n = v2(buf, 0x21, 0x21, a6, sizeof(a6));
	assert_int_equal(bw_proxy_parse(buf, n, &h), (ssize_t)n);
	assert_string_equal(h.peer, "2001:db8::7:1337");
	/* HAProxy's health check: LOCAL, no address */
	n = v2(buf, 0x20, 0x00, NULL, 0);
	assert_int_equal(bw_proxy_parse(buf, n, &h), 16);
	assert_int_equal(h.local, 1);
	/* PROXY with UNSPEC: the connection's own address */
	n = v2(buf, 0x21, 0x00, NULL, 0);
	assert_int_equal(bw_proxy_parse(buf, n, &h), 16);
	assert_int_equal(h.local, 1);
	/* every prefix asks for more */
	n = v2(buf, 0x21, 0x11, a4, sizeof(a4));
	for (size_t i = 0; i < n; i++)
		assert_int_equal(bw_proxy_parse(buf, i, &h), 0);
}

static void
v2_malformed_headers_are_refused(void **state)
{
	const uint8_t a4[12] = {10, 1, 2, 3, 10, 0, 0, 1, 0, 1, 0, 2};
	uint8_t buf[700];
	struct bw_proxy_hdr h;
	size_t n;

	(void)state;
	n = v2(buf, 0x11, 0x11, a4, sizeof(a4)); /* version 1 */
	assert_int_equal(bw_proxy_parse(buf, n, &h), BW_EPROTO);
	n = v2(buf, 0x22, 0x11, a4, sizeof(a4)); /* command 2 */
	assert_int_equal(bw_proxy_parse(buf, n, &h), BW_EPROTO);
	n = v2(buf, 0x21, 0x11, a4, 11); /* addresses cut short */
	assert_int_equal(bw_proxy_parse(buf, n, &h), BW_EPROTO);
	n = v2(buf, 0x21, 0x21, a4, 12); /* v6 needs 36 */
	assert_int_equal(bw_proxy_parse(buf, n, &h), BW_EPROTO);
	n = v2(buf, 0x21, 0x12, a4, sizeof(a4)); /* UDP */
	assert_int_equal(bw_proxy_parse(buf, n, &h), BW_EPROTO);
	n = v2(buf, 0x21, 0x31, a4, sizeof(a4)); /* unix */
	assert_int_equal(bw_proxy_parse(buf, n, &h), BW_EPROTO);
	/* a length past the cap is refused at once, not waited for */
	v2(buf, 0x21, 0x11, a4, sizeof(a4));
	buf[14] = 0xff;
	assert_int_equal(bw_proxy_parse(buf, 16, &h), BW_EPROTO);
	/* a signature's first bytes then something else */
	memcpy(buf, sig, 12);
	buf[11] = 'x';
	assert_int_equal(bw_proxy_parse(buf, 12, &h), BW_EPROTO);
	assert_int_equal(bw_proxy_looks_like(buf, 11), 1);
	assert_int_equal(bw_proxy_looks_like(buf, 12), 0);
}

static void
the_list_takes_addresses_and_networks(void **state)
{
	struct bw_proxy_nets n;
	char why[200];

	(void)state;
	assert_int_equal(bw_proxy_nets_parse("", &n, why, sizeof(why)), 0);
	assert_int_equal(n.n, 0);
	assert_int_equal(bw_proxy_nets_parse("127.0.0.9, 10.0.0.0/8,fd00::/8",
					     &n, why, sizeof(why)),
			 0);
	assert_int_equal(n.n, 3);
	assert_true(bw_proxy_nets_has(&n, "127.0.0.9"));
	assert_false(bw_proxy_nets_has(&n, "127.0.0.1"));
	assert_true(bw_proxy_nets_has(&n, "10.200.1.1"));
	assert_false(bw_proxy_nets_has(&n, "11.0.0.1"));
	assert_true(bw_proxy_nets_has(&n, "::ffff:127.0.0.9"));
	assert_true(bw_proxy_nets_has(&n, "fd12::1"));
	assert_false(bw_proxy_nets_has(&n, "fe80::1"));
	assert_false(bw_proxy_nets_has(&n, "not an address"));
	assert_int_equal(bw_proxy_nets_parse("10.0.0.0/7", &n, why, 200), 0);
	assert_true(bw_proxy_nets_has(&n, "11.255.0.1"));
	assert_false(bw_proxy_nets_has(&n, "12.0.0.1"));
	assert_int_equal(bw_proxy_nets_parse("0.0.0.0/0", &n, why, 200), 0);
	assert_true(bw_proxy_nets_has(&n, "8.8.8.8"));
	assert_false(bw_proxy_nets_has(&n, "::1"));
}

static void
bad_lists_are_refused_with_a_reason(void **state)
{
	static const char *const bad[] = {
		"localhost",	     "10.0.0.1/33", "::1/129",
		"10.0.0.1/",	     "10.0.0.1/x",  "10.0.0.1,,10.0.0.2",
		"10.0.0.1 10.0.0.2", "10.0.0.1,",
	};
	struct bw_proxy_nets n;
	char why[200];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = '\0';
		assert_int_equal(
			bw_proxy_nets_parse(bad[i], &n, why, sizeof(why)),
			BW_ECONFIG);
		assert_non_null(strstr(why, "not an address"));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(v1_lines_name_the_client),
		cmocka_unit_test(
			v1_waits_for_the_end_of_its_line_and_no_longer),
		cmocka_unit_test(v1_malformed_lines_are_refused),
		cmocka_unit_test(
			v2_headers_name_the_client_or_are_the_proxys_own),
		cmocka_unit_test(v2_malformed_headers_are_refused),
		cmocka_unit_test(the_list_takes_addresses_and_networks),
		cmocka_unit_test(bad_lists_are_refused_with_a_reason),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
