/* Text cleaning for the rooms protocol (proto/text.c): U+FFFD for each
 * maximal subpart of invalid UTF-8, the removed controls, cuts at a code
 * point boundary, name trimming, inputs that end at a guard page.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/text.h"
#include "support/guard.h"

/* U+FFFD in UTF-8; a string literal of its own so that no hex digit after
 * it joins its last escape. */
#define R "\xEF\xBF\xBD"

static struct guard g;

static int
setup(void **state)
{
	(void)state;
	guard_init(&g);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	guard_fini(&g);
	return 0;
}

/* Cleans in[0..n), placed to end at the guard page, into a buffer of
 * exactly BW_TEXT_CAP(n) bytes, and checks the result is want, of chars
 * code points. */
static void
expect(const char *in, size_t n, const char *want, size_t chars)
{
	size_t cap = BW_TEXT_CAP(n), got_chars = 99, len;
	char *out = malloc(cap);

	assert_non_null(out);
	len = bw_text_clean(place(&g, in, n), n, out, cap, &got_chars);
	assert_int_equal(len, strlen(want));
	assert_string_equal(out, want);
	assert_int_equal(got_chars, chars);
	free(out);
}

#define EXPECT(in, want, chars) expect(in, sizeof(in) - 1, want, chars)

static void
plain_ascii_is_unchanged(void **state)
{
	(void)state;
	EXPECT("hello, world", "hello, world", 12);
	EXPECT("", "", 0);
}

static void
tab_is_kept(void **state)
{
	(void)state;
	EXPECT("a\tb\t", "a\tb\t", 4);
}

static void
escape_sequence_loses_its_esc(void **state)
{
	(void)state;
	/* clear screen, cursor home, retitle the terminal (OSC ... BEL) */
	EXPECT("\x1b[2J\x1b[H\x1b]0;owned\x07hi", "[2J[H]0;ownedhi", 15);
}

static void
c0_controls_and_del_are_removed(void **state)
{
	char in[34];
	size_t i;

	(void)state;
	for (i = 0; i < 32; i++)
		in[i] = (char)i; /* NUL, CR, LF, BS, ESC ... all but tab */
	in[32] = 0x7f;
	in[33] = 'x';
	expect(in, sizeof(in), "\tx", 2);
	EXPECT("e\rn\bd\n", "end", 3);
}

static void
c1_controls_are_removed(void **state)
{
	(void)state;
	/* U+0080, U+0085 (NEL), U+009B (CSI), U+009F: removed;
	 * U+00A0 (no-break space) is the first kept after them */
	EXPECT("a\xC2\x80\xC2\x85\xC2\x9B"
	       "2J\xC2\x9F\xC2\xA0z",
	       "a2J\xC2\xA0z", 5);
}

static void
bidi_override_is_removed(void **state)
{
	(void)state;
	/* U+202A-U+202E (LRE RLE PDF LRO RLO) removed, U+2027 and U+202F
	 * around them kept */
	EXPECT("\xE2\x80\xA7\xE2\x80\xAA\xE2\x80\xAB\xE2\x80\xAC\xE2\x80\xAD"
	       "\xE2\x80\xAE\xE2\x80\xAF",
	       "\xE2\x80\xA7\xE2\x80\xAF", 2);
	/* "evil\u202Etxt.exe" would show as "evil" + "exe.txt" */
	EXPECT("evil\xE2\x80\xAEtxt.exe", "eviltxt.exe", 11);
}

/* U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR break a line on
 * some terminals: a member must not start a line of their own making. */
static void
line_and_paragraph_separators_are_removed(void **state)
{
	(void)state;
	EXPECT("hi\xE2\x80\xA8"
	       "bob: fake\xE2\x80\xA9",
	       "hibob: fake", 11);
}

static void
bidi_isolates_are_removed(void **state)
{
	(void)state;
	/* U+2066-U+2069 (LRI RLI FSI PDI) removed, U+2065 and U+206A kept */
	EXPECT("\xE2\x81\xA5\xE2\x81\xA6\xE2\x81\xA7\xE2\x81\xA8\xE2\x81\xA9"
	       "\xE2\x81\xAA",
	       "\xE2\x81\xA5\xE2\x81\xAA", 2);
}

static void
valid_multibyte_text_is_kept(void **state)
{
	(void)state;
	/* U+00E9, U+20AC, U+1F600, U+10FFFF (the last code point), U+FFFD
	 * and the noncharacter U+FFFF: all valid, all kept */
	EXPECT("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF" R
	       "\xEF\xBF\xBF",
	       "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF" R
	       "\xEF\xBF\xBF",
	       6);
	/* the smallest of each length: U+0080 is C1 (removed), so U+00A0 */
	EXPECT("\xC2\xA0\xE0\xA0\x80\xF0\x90\x80\x80",
	       "\xC2\xA0\xE0\xA0\x80\xF0\x90\x80\x80", 3);
}

/* Known answers: each agrees with an independent decoder that follows
 * the same practice, python3's bytes.decode("utf-8", "replace"), e.g.
 * python3 -c 'print(ascii(b"\xC0\xAF".decode("utf-8", "replace")))'. */

static void
overlong_slash_is_two_replacements(void **state)
{
	(void)state;
	/* C0 and C1 never start a sequence: each byte is its own maximal
	 * subpart, and AF is then a stray continuation */
	EXPECT("\xC0\xAF", R R, 2);
	/* E0 needs A0-BF next: 80 ends the subpart at E0 alone */
	EXPECT("\xE0\x80\xAF", R R R, 3);
	/* F0 needs 90-BF next */
	EXPECT("\xF0\x80\x80\xAF", R R R R, 4);
}

static void
surrogate_is_replaced(void **state)
{
	(void)state;
	/* ED needs 80-9F next (U+D800-DFFF would follow): ED alone is the
	 * subpart, A0 and 80 are strays */
	EXPECT("\xED\xA0\x80", R R R, 3);
	EXPECT("\xED\xBF\xBF", R R R, 3);
	/* the last code point before the surrogates is fine */
	EXPECT("\xED\x9F\xBF", "\xED\x9F\xBF", 1);
}

static void
code_point_over_10ffff_is_replaced(void **state)
{
	(void)state;
	/* F4 needs 80-8F next: F4 alone is the subpart */
	EXPECT("\xF4\x90\x80\x80", R R R R, 4);
	/* F5-FF never start a sequence */
	EXPECT("\xF5\x80\x80\x80", R R R R, 4);
	EXPECT("\xFF\xFE", R R, 2);
}

static void
truncated_sequence_is_one_replacement(void **state)
{
	(void)state;
	/* the valid start of a sequence is one subpart, at the end of the
	 * input or before a byte that cannot continue it */
	EXPECT("\xE2\x82", R, 1);
	EXPECT("\xF0\x9F\x98", R, 1);
	EXPECT("\xE2\x82"
	       "A",
	       R "A", 2);
	EXPECT("\xF0\x9F\x98\xF0\x9F\x98\x80", R "\xF0\x9F\x98\x80", 2);
	/* C2 before ESC: the ESC is then removed, as ever */
	EXPECT("\xC2\x1b[2J", R "[2J", 4);
}

static void
stray_continuation_bytes_are_one_replacement_each(void **state)
{
	(void)state;
	EXPECT("\x80\xBF"
	       "a\x80",
	       R R "a" R, 4);
	/* a sequence longer than its lead allows */
	EXPECT("\xC3\xA9\xA9", "\xC3\xA9" R, 2);
}

static void
unicode_table_3_11_example(void **state)
{
	(void)state;
	/* The Unicode Standard's example for maximal subparts:
	 * 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64 */
	EXPECT("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64",
	       "a" R R R "b" R "c" R R "d", 10);
}

/* Every prefix of a mixed input, ending at the guard page: no read past
 * the end, and each truncated sequence becomes one replacement. */
static void
every_prefix_ending_at_a_guard_page_is_cleaned(void **state)
{
	static const char s[] = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";
	static const struct {
		size_t n;
		const char *want;
		size_t chars;
	} v[] = {
		{0, "", 0},
		{1, "a", 1},
		{2, "a" R, 2},
		{3, "a\xC3\xA9", 2},
		{4, "a\xC3\xA9" R, 3},
		{5, "a\xC3\xA9" R, 3},
		{6, "a\xC3\xA9\xE2\x82\xAC", 3},
		{7, "a\xC3\xA9\xE2\x82\xAC" R, 4},
		{8, "a\xC3\xA9\xE2\x82\xAC" R, 4},
		{9, "a\xC3\xA9\xE2\x82\xAC" R, 4},
		{10, "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80", 4},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		expect(s, v[i].n, v[i].want, v[i].chars);
}

/* "a" U+00E9 U+20AC U+1F600: 1 + 2 + 3 + 4 bytes; each cap keeps the code
 * points that fit in cap - 1 bytes, whole. */
static void
output_cut_at_code_point_boundary(void **state)
{
	static const char s[] = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";
	static const size_t fit[] = {0, 0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10, 10};
	static const size_t nch[] = {0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4};
	char out[16];
	size_t cap, len, chars;

	(void)state;
	for (cap = 1; cap < sizeof(fit) / sizeof(fit[0]); cap++) {
		memset(out, 'x', sizeof(out));
		len = bw_text_clean((const uint8_t *)s, sizeof(s) - 1, out, cap,
				    &chars);
		assert_int_equal(len, fit[cap]);
		assert_int_equal(chars, nch[cap]);
		assert_int_equal(out[len], '\0');
		assert_memory_equal(out, s, len);
		assert_int_equal(out[cap], 'x');
	}
	/* cap 0 writes nothing */
	memset(out, 'x', sizeof(out));
	assert_int_equal(bw_text_clean((const uint8_t *)s, 3, out, 0, &chars),
			 0);
	assert_int_equal(chars, 0);
	assert_int_equal(out[0], 'x');
}

/* A cut counts only what is written: removed code points take no room. */
static void
removed_code_points_take_no_room(void **state)
{
	char out[4];
	size_t len, chars;

	(void)state;
	len = bw_text_clean((const uint8_t *)"\x1b\x1b\x1b"
					     "abc",
			    6, out, sizeof(out), &chars);
	assert_int_equal(len, 3);
	assert_string_equal(out, "abc");
	assert_int_equal(chars, 3);
}

static void
output_never_needs_more_than_three_bytes_per_input_byte(void **state)
{
	uint8_t in[64];
	char out[BW_TEXT_CAP(sizeof(in))];
	size_t len, chars;

	(void)state;
	memset(in, 0xFF, sizeof(in)); /* the worst case: each a U+FFFD */
	len = bw_text_clean(in, sizeof(in), out, sizeof(out), &chars);
	assert_int_equal(len, 3 * sizeof(in));
	assert_int_equal(chars, sizeof(in));
	assert_int_equal(out[len], '\0');
	/* one byte less, and the last U+FFFD does not fit */
	len = bw_text_clean(in, sizeof(in), out, sizeof(out) - 1, &chars);
	assert_int_equal(len, 3 * sizeof(in) - 3);
	assert_int_equal(chars, sizeof(in) - 1);
}

static void
chars_may_be_null(void **state)
{
	char out[8];

	(void)state;
	assert_int_equal(bw_text_clean((const uint8_t *)"\xC3\xA9", 2, out,
				       sizeof(out), NULL),
			 2);
	assert_string_equal(out, "\xC3\xA9");
	assert_int_equal(bw_text_clean_name((const uint8_t *)" x ", 3, out,
					    sizeof(out), NULL),
			 1);
	assert_string_equal(out, "x");
}

static void
name_is_trimmed_of_spaces_and_tabs(void **state)
{
	char out[32];
	size_t len, chars;

	(void)state;
	len = bw_text_clean_name((const uint8_t *)" \t al ice\t  ", 12, out,
				 sizeof(out), &chars);
	assert_int_equal(len, 6);
	assert_string_equal(out, "al ice");
	assert_int_equal(chars, 6);
	/* trimmed after cleaning: controls between the blanks go first */
	len = bw_text_clean_name((const uint8_t *)" \x1b[1m bob\r", 10, out,
				 sizeof(out), &chars);
	assert_string_equal(out, "[1m bob");
	assert_int_equal(chars, 7);
	len = bw_text_clean_name((const uint8_t *)" \x07 bob \r\n", 9, out,
				 sizeof(out), &chars);
	assert_string_equal(out, "bob");
	/* other blanks are not trimmed: U+00A0 */
	len = bw_text_clean_name((const uint8_t *)"\xC2\xA0x", 3, out,
				 sizeof(out), &chars);
	assert_int_equal(len, 3);
	assert_int_equal(chars, 2);
}

static void
name_of_only_blanks_and_controls_is_empty(void **state)
{
	char out[8] = "junk";
	size_t chars = 9;

	(void)state;
	assert_int_equal(bw_text_clean_name((const uint8_t *)" \t\x1b \x7f", 5,
					    out, sizeof(out), &chars),
			 0);
	assert_string_equal(out, "");
	assert_int_equal(chars, 0);
}

static void
name_cut_is_trimmed_and_leading_blanks_take_no_room(void **state)
{
	char out[4];
	size_t len, chars;

	(void)state;
	len = bw_text_clean_name((const uint8_t *)"     alice", 10, out,
				 sizeof(out), &chars);
	assert_string_equal(out, "ali");
	assert_int_equal(len, 3);
	assert_int_equal(chars, 3);
	len = bw_text_clean_name((const uint8_t *)"a  bcd", 6, out, sizeof(out),
				 &chars);
	assert_string_equal(out, "a");
	assert_int_equal(len, 1);
	assert_int_equal(chars, 1);
}

static void
client_key_of_look_alikes_is_one(void **state)
{
	char a[BW_TEXT_CLIENT_KEY_CAP], b[BW_TEXT_CLIENT_KEY_CAP];
	static const char *const alike[][2] = {
		{"alice", "alice\xe2\x80\x8b"}, /* U+200B */
		{"alice", " alice "},
		{"jos\xc3\xa9", "jose\xcc\x81"}, /* U+00E9, e U+0301 */
		/* U+0323 (class 220) and U+0302 (230), in either order */
		{"a\xcc\xa3\xcc\x82", "a\xcc\x82\xcc\xa3"},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(alike) / sizeof(alike[0]); i++) {
		assert_int_not_equal(
			bw_text_client_key(alike[i][0], a, sizeof(a)), 0);
		assert_int_not_equal(
			bw_text_client_key(alike[i][1], b, sizeof(b)), 0);
		assert_string_equal(a, b);
	}
	/* another encoding: compared by its bytes */
	assert_int_equal(bw_text_client_key("caf\xe9", a, sizeof(a)), 4);
	assert_int_equal(bw_text_client_key("caf\xe8", b, sizeof(b)), 4);
	assert_string_not_equal(a, b);
	/* nothing visible: no key */
	assert_int_equal(bw_text_client_key("\xe2\x80\x8b", a, sizeof(a)), 0);
	assert_int_equal(bw_text_client_key("", a, sizeof(a)), 0);
	/* too small for the key: none */
	assert_int_equal(bw_text_client_key("alice", a, 5), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(plain_ascii_is_unchanged),
		cmocka_unit_test(tab_is_kept),
		cmocka_unit_test(escape_sequence_loses_its_esc),
		cmocka_unit_test(c0_controls_and_del_are_removed),
		cmocka_unit_test(c1_controls_are_removed),
		cmocka_unit_test(bidi_override_is_removed),
		cmocka_unit_test(bidi_isolates_are_removed),
		cmocka_unit_test(line_and_paragraph_separators_are_removed),
		cmocka_unit_test(valid_multibyte_text_is_kept),
		cmocka_unit_test(overlong_slash_is_two_replacements),
		cmocka_unit_test(surrogate_is_replaced),
		cmocka_unit_test(code_point_over_10ffff_is_replaced),
		cmocka_unit_test(truncated_sequence_is_one_replacement),
		cmocka_unit_test(
			stray_continuation_bytes_are_one_replacement_each),
		cmocka_unit_test(unicode_table_3_11_example),
		cmocka_unit_test(
			every_prefix_ending_at_a_guard_page_is_cleaned),
		cmocka_unit_test(output_cut_at_code_point_boundary),
		cmocka_unit_test(removed_code_points_take_no_room),
		cmocka_unit_test(
			output_never_needs_more_than_three_bytes_per_input_byte),
		cmocka_unit_test(chars_may_be_null),
		cmocka_unit_test(name_is_trimmed_of_spaces_and_tabs),
		cmocka_unit_test(name_of_only_blanks_and_controls_is_empty),
		cmocka_unit_test(
			name_cut_is_trimmed_and_leading_blanks_take_no_room),
		cmocka_unit_test(client_key_of_look_alikes_is_one),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
