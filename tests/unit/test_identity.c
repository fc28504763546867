/* Unit tests for the client's identity files (bw_identity_load/save in
 * src/cli/common.c): me.info and priv.key round trips, file modes, the
 * tolerated variations of me.info (wrapped base64, upper-case hex, CRLF, key
 * only in priv.key) and every way it can be malformed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/util.h"
#include "cli/common.h"

#define PATH_CAP 512
#define TEXT_CAP 8192

static const uint8_t the_id[BW_ID_LEN] = {
	0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78,
	0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0,
};

/* One key pair for the whole group (generation is the slow part); a fresh
 * directory for each test. */
struct fixture {
	struct bw_rsa *key;
	uint8_t spki[BW_RSA_PUB_LEN];
	char *b64; /* base64 of the PKCS#8 key, one line */
	char dir[PATH_CAP];
	char me[PATH_CAP];
	char priv[PATH_CAP];
};

static int
group_setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	uint8_t *der = NULL;
	size_t der_len = 0;

	if (fx == NULL)
		return -1;
	if (bw_rsa_generate(&fx->key) != 0 ||
	    bw_rsa_to_spki(fx->key, fx->spki) != 0 ||
	    bw_rsa_to_pkcs8(fx->key, &der, &der_len) != 0 ||
	    bw_b64_encode(der, der_len, &fx->b64) != 0) {
		bw_secure_free(der, der_len);
		bw_rsa_free(fx->key);
		free(fx);
		return -1;
	}
	bw_secure_free(der, der_len);
	*state = fx;
	return 0;
}

static int
group_teardown(void **state)
{
	struct fixture *fx = *state;

	bw_rsa_free(fx->key);
	bw_secure_free(fx->b64, strlen(fx->b64));
	free(fx);
	return 0;
}

static int
setup(void **state)
{
	struct fixture *fx = *state;
	const char *tmp = getenv("TMPDIR");

	if (tmp == NULL || *tmp == '\0')
		tmp = "/tmp";
	if (snprintf(fx->dir, sizeof(fx->dir), "%s/bw_test_identity_XXXXXX",
		     tmp) >= (int)sizeof(fx->dir) ||
	    mkdtemp(fx->dir) == NULL)
		return -1;
	if (snprintf(fx->me, sizeof(fx->me), "%s/me.info", fx->dir) >=
		    (int)sizeof(fx->me) ||
	    snprintf(fx->priv, sizeof(fx->priv), "%s/priv.key", fx->dir) >=
		    (int)sizeof(fx->priv))
		return -1;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *fx = *state;
	char cmd[PATH_CAP + 32];
	int rc = 0;

	if (snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir) <
	    (int)sizeof(cmd))
		rc = system(cmd);
	(void)rc;
	return 0;
}

static void
write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
	assert_int_equal(fclose(f), 0);
}

/* Formats into text[TEXT_CAP]; the test fails if it does not fit. */
static void __attribute__((format(printf, 2, 3)))
compose(char *text, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(text, TEXT_CAP, fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && n < TEXT_CAP);
}

/* The base64 key wrapped every width characters with eol after each line. */
static void
wrap(char *out, size_t cap, const char *b64, size_t width, const char *eol)
{
	size_t n = strlen(b64), i, o = 0, el = strlen(eol), take;

	for (i = 0; i < n; i += width) {
		take = n - i < width ? n - i : width;
		assert_true(o + take + el < cap);
		memcpy(out + o, b64 + i, take);
		o += take;
		memcpy(out + o, eol, el);
		o += el;
	}
	out[o] = '\0';
}

static void
hex_of_id(char out[2 * BW_ID_LEN + 1], int upper)
{
	size_t i;

	bw_hex_encode(the_id, BW_ID_LEN, out);
	if (upper) {
		for (i = 0; out[i] != '\0'; i++) {
			if (out[i] >= 'a' && out[i] <= 'f')
				out[i] = (char)(out[i] - 'a' + 'A');
		}
	}
}

static void
assert_same_key(const struct bw_rsa *k, const uint8_t spki[BW_RSA_PUB_LEN])
{
	uint8_t got[BW_RSA_PUB_LEN];

	assert_non_null(k);
	assert_int_equal(bw_rsa_to_spki(k, got), 0);
	assert_memory_equal(got, spki, BW_RSA_PUB_LEN);
}

/* Loads fx->me and checks it is alice with the_id and the fixture key. */
static void
assert_loads_alice(struct fixture *fx)
{
	struct bw_identity me;
	const char *why = "unset";

	assert_int_equal(bw_identity_load(&me, fx->me, fx->priv, &why), 0);
	assert_null(why);
	assert_string_equal(me.name, "alice");
	assert_memory_equal(me.id, the_id, BW_ID_LEN);
	assert_same_key(me.key, fx->spki);
	bw_identity_fini(&me);
	assert_null(me.key);
}

/* Loads fx->me, expecting BW_EPROTO with a reason naming what is wrong. */
static void
assert_malformed(struct fixture *fx, const char *why_has)
{
	struct bw_identity me;
	const char *why = NULL;

	assert_int_equal(bw_identity_load(&me, fx->me, fx->priv, &why),
			 BW_EPROTO);
	assert_non_null(why);
	if (why_has != NULL && strstr(why, why_has) == NULL)
		fail_msg("reason \"%s\" does not mention \"%s\"", why, why_has);
	assert_null(me.key);
}

/* What registering does: staged before the server is told, committed with
 * the id it gave. */
static int
save(const struct bw_identity *me, const char *path, const char *priv)
{
	struct bw_identity_stage st;
	int rc;

	if ((rc = bw_identity_stage(me, path, priv, &st)) != 0)
		return rc;
	return bw_identity_commit(&st, me->id);
}

static void
an_abandoned_stage_leaves_no_file(void **state)
{
	struct fixture *fx = *state;
	struct bw_identity me;
	struct bw_identity_stage st;
	struct stat sb;

	memset(&me, 0, sizeof(me));
	snprintf(me.name, sizeof(me.name), "%s", "alice");
	me.key = fx->key;
	assert_int_equal(bw_identity_stage(&me, fx->me, fx->priv, &st), 0);
	assert_int_equal(stat(st.tmp, &sb), 0); /* on disk before the 2100 */
	assert_int_not_equal(stat(fx->me, &sb), 0);
	bw_identity_abandon(&st);
	assert_int_not_equal(stat(fx->me, &sb), 0);
	assert_int_not_equal(stat(fx->priv, &sb), 0);
}

static void
save_then_load_round_trips(void **state)
{
	struct fixture *fx = *state;
	struct bw_identity me, got;
	const char *why = NULL;

	memset(&me, 0, sizeof(me));
	snprintf(me.name, sizeof(me.name), "%s", "Alice Example");
	memcpy(me.id, the_id, BW_ID_LEN);
	me.key = fx->key;
	assert_int_equal(save(&me, fx->me, fx->priv), 0);
	assert_int_equal(bw_identity_load(&got, fx->me, fx->priv, &why), 0);
	assert_string_equal(got.name, "Alice Example");
	assert_memory_equal(got.id, the_id, BW_ID_LEN);
	assert_same_key(got.key, fx->spki);
	/* The loaded key still has its private half. */
	{
		uint8_t *der = NULL;
		size_t der_len = 0;

		assert_int_equal(bw_rsa_to_pkcs8(got.key, &der, &der_len), 0);
		bw_secure_free(der, der_len);
	}
	bw_identity_fini(&got);
}

static void
saved_files_have_mode_0600_and_the_documented_layout(void **state)
{
	struct fixture *fx = *state;
	struct bw_identity me;
	char hex[2 * BW_ID_LEN + 1], want[TEXT_CAP], *text = NULL;
	struct stat st;
	size_t len = 0;
	mode_t old;

	memset(&me, 0, sizeof(me));
	snprintf(me.name, sizeof(me.name), "%s", "alice");
	memcpy(me.id, the_id, BW_ID_LEN);
	me.key = fx->key;
	old = umask(0);
	assert_int_equal(save(&me, fx->me, fx->priv), 0);
	umask(old);
	assert_int_equal(stat(fx->me, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat(fx->priv, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	/* me.info: name, lower-case hex id, the key on one line. */
	hex_of_id(hex, 0);
	compose(want, "alice\n%s\n%s\n", hex, fx->b64);
	assert_int_equal(bw_read_small_file(fx->me, TEXT_CAP, &text, &len), 0);
	assert_string_equal(text, want);
	free(text);
	/* priv.key: the same base64 text. */
	assert_int_equal(bw_read_small_file(fx->priv, TEXT_CAP, &text, &len),
			 0);
	assert_string_equal(text, fx->b64);
	free(text);
	assert_loads_alice(fx);
}

static void
wrapped_base64_upper_hex_and_crlf_are_read(void **state)
{
	struct fixture *fx = *state;
	char hex[2 * BW_ID_LEN + 1], key[TEXT_CAP], text[TEXT_CAP];

	hex_of_id(hex, 1);
	wrap(key, sizeof(key), fx->b64, 64, "\r\n");
	compose(text, "alice\r\n%s\r\n%s", hex, key);
	write_text(fx->me, text);
	assert_loads_alice(fx);
}

static void
wrapped_base64_with_lf_is_read(void **state)
{
	struct fixture *fx = *state;
	char hex[2 * BW_ID_LEN + 1], key[TEXT_CAP], text[TEXT_CAP];

	hex_of_id(hex, 0);
	wrap(key, sizeof(key), fx->b64, 64, "\n");
	compose(text, "alice\n%s\n%s\n\n", hex, key);
	write_text(fx->me, text);
	assert_loads_alice(fx);
	/* 76 columns, no newline at the end of the file. */
	wrap(key, sizeof(key), fx->b64, 76, "\n");
	key[strlen(key) - 1] = '\0';
	compose(text, "alice\n%s\n%s", hex, key);
	write_text(fx->me, text);
	assert_loads_alice(fx);
}

static void
spaces_around_fields_are_ignored(void **state)
{
	struct fixture *fx = *state;
	char hex[2 * BW_ID_LEN + 1], text[TEXT_CAP];

	hex_of_id(hex, 0);
	compose(text, "  alice\t\n %s  \n  %s  \n", hex, fx->b64);
	write_text(fx->me, text);
	assert_loads_alice(fx);
}

static void
me_info_without_line_3_reads_priv_key(void **state)
{
	struct fixture *fx = *state;
	char hex[2 * BW_ID_LEN + 1], text[TEXT_CAP], key[TEXT_CAP];

	hex_of_id(hex, 0);
	compose(text, "alice\n%s\n", hex);
	write_text(fx->me, text);
	write_text(fx->priv, fx->b64);
	assert_loads_alice(fx);
	/* Blank lines after the id are no key either; priv.key wrapped. */
	compose(text, "alice\n%s\n\n  \n", hex);
	write_text(fx->me, text);
	wrap(key, sizeof(key), fx->b64, 64, "\n");
	write_text(fx->priv, key);
	assert_loads_alice(fx);
	/* And with no newline after the id. */
	compose(text, "alice\n%s", hex);
	write_text(fx->me, text);
	assert_loads_alice(fx);
}

static void
me_info_without_key_or_priv_key_is_malformed(void **state)
{
	struct fixture *fx = *state;
	char hex[2 * BW_ID_LEN + 1], text[TEXT_CAP];

	hex_of_id(hex, 0);
	compose(text, "alice\n%s\n", hex);
	write_text(fx->me, text);
	assert_malformed(fx, "priv.key");
	write_text(fx->priv, "not base64 at all!");
	assert_malformed(fx, "priv.key");
}

static void
bad_hex_is_malformed(void **state)
{
	struct fixture *fx = *state;
	char hex[2 * BW_ID_LEN + 1], text[TEXT_CAP];

	hex_of_id(hex, 0);
	hex[5] = 'g';
	compose(text, "alice\n%s\n%s\n", hex, fx->b64);
	write_text(fx->me, text);
	assert_malformed(fx, "line 2");
	/* 31 and 33 digits. */
	hex_of_id(hex, 0);
	compose(text, "alice\n%.31s\n%s\n", hex, fx->b64);
	write_text(fx->me, text);
	assert_malformed(fx, "line 2");
	compose(text, "alice\n%s0\n%s\n", hex, fx->b64);
	write_text(fx->me, text);
	assert_malformed(fx, "line 2");
	/* Two fields on the line. */
	compose(text, "alice\n%.16s %s\n%s\n", hex, hex + 16, fx->b64);
	write_text(fx->me, text);
	assert_malformed(fx, "line 2");
}

static void
missing_lines_are_malformed(void **state)
{
	struct fixture *fx = *state;
	char hex[2 * BW_ID_LEN + 1], text[TEXT_CAP], name[300];

	write_text(fx->me, "");
	assert_malformed(fx, "line 1");
	write_text(fx->me, "\n");
	assert_malformed(fx, "line 1");
	write_text(fx->me, "   \n");
	assert_malformed(fx, "line 1");
	write_text(fx->me, "alice\n");
	assert_malformed(fx, "line 2");
	write_text(fx->me, "alice");
	assert_malformed(fx, "line 2");
	/* The name line missing: the id is taken as the name. */
	hex_of_id(hex, 0);
	compose(text, "%s\n%s\n", hex, fx->b64);
	write_text(fx->me, text);
	assert_malformed(fx, "line 2");
	/* A name longer than a name field holds. */
	memset(name, 'n', 255);
	name[255] = '\0';
	compose(text, "%s\n%s\n%s\n", name, hex, fx->b64);
	write_text(fx->me, text);
	assert_malformed(fx, "line 1");
}

static void
garbage_base64_is_malformed(void **state)
{
	struct fixture *fx = *state;
	char hex[2 * BW_ID_LEN + 1], text[TEXT_CAP], *key;

	hex_of_id(hex, 0);
	key = strdup(fx->b64);
	assert_non_null(key);
	key[40] = '*';
	compose(text, "alice\n%s\n%s\n", hex, key);
	write_text(fx->me, text);
	assert_malformed(fx, "line 3");
	/* Valid base64 that is not the whole key. */
	key[40] = fx->b64[40];
	key[100] = '\0';
	compose(text, "alice\n%s\n%s\n", hex, key);
	write_text(fx->me, text);
	assert_malformed(fx, "line 3");
	/* Valid base64 of something that is not a key. */
	compose(text, "alice\n%s\naGVsbG8gd29ybGQ=\n", hex);
	write_text(fx->me, text);
	assert_malformed(fx, "line 3");
	/* The padding stripped. */
	snprintf(key, strlen(fx->b64) + 1, "%s", fx->b64);
	while (key[strlen(key) - 1] == '=')
		key[strlen(key) - 1] = '\0';
	compose(text, "alice\n%s\n%s\n", hex, key);
	write_text(fx->me, text);
	if (strcmp(key, fx->b64) != 0)
		assert_malformed(fx, "line 3");
	bw_secure_free(key, strlen(fx->b64) + 1);
}

static void
public_key_in_line_3_is_malformed(void **state)
{
	struct fixture *fx = *state;
	char hex[2 * BW_ID_LEN + 1], text[TEXT_CAP], *spki_b64 = NULL;

	hex_of_id(hex, 0);
	assert_int_equal(bw_b64_encode(fx->spki, sizeof(fx->spki), &spki_b64),
			 0);
	compose(text, "alice\n%s\n%s\n", hex, spki_b64);
	write_text(fx->me, text);
	assert_malformed(fx, "line 3");
	bw_secure_free(spki_b64, strlen(spki_b64));
}

static void
missing_me_info_is_enoent(void **state)
{
	struct fixture *fx = *state;
	struct bw_identity me;
	const char *why = NULL;

	assert_int_equal(bw_identity_load(&me, fx->me, fx->priv, &why),
			 -ENOENT);
	assert_null(me.key);
}

int
main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(save_then_load_round_trips),
		T(an_abandoned_stage_leaves_no_file),
		T(saved_files_have_mode_0600_and_the_documented_layout),
		T(wrapped_base64_upper_hex_and_crlf_are_read),
		T(wrapped_base64_with_lf_is_read),
		T(spaces_around_fields_are_ignored),
		T(me_info_without_line_3_reads_priv_key),
		T(me_info_without_key_or_priv_key_is_malformed),
		T(bad_hex_is_malformed),
		T(missing_lines_are_malformed),
		T(garbage_base64_is_malformed),
		T(public_key_in_line_3_is_malformed),
		T(missing_me_info_is_enoent),
	};
#undef T

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
