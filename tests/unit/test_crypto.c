/* Unit tests for src/core/crypto.c: key encodings, RSA-OAEP, AES-128-CBC and
 * PKCS#7, base64; known answers come from the openssl and base64 commands.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"

#define PATH_CAP 256
#define CMD_CAP	 1024

/* One key pair for the whole group (generation is the slow part) and a
 * private temporary directory for files handed to the command-line tools. */
struct fixture {
	struct bw_rsa *key;
	uint8_t spki[BW_RSA_PUB_LEN];
	char dir[PATH_CAP];
};

static const uint8_t spki_prefix[] = {
	0x30, 0x81, 0x9d, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48,
	0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00, 0x03, 0x81,
	0x8b, 0x00, 0x30, 0x81, 0x87, 0x02, 0x81, 0x81, 0x00,
};

static const uint8_t aes_key[BW_AES_KEY_LEN] = {
	0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6,
	0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c,
};
static const char aes_key_hex[] = "2b7e151628aed2a6abf7158809cf4f3c";
static const char zero_iv_hex[] = "00000000000000000000000000000000";

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

static void
path_in(const struct fixture *fx, const char *name, char out[PATH_CAP])
{
	int n = snprintf(out, PATH_CAP, "%s/%s", fx->dir, name);

	assert_true(n > 0 && n < PATH_CAP);
}

static void
write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	if (n > 0)
		assert_int_equal(fwrite(p, 1, n, f), n);
	assert_int_equal(fclose(f), 0);
}

/* Reads a whole file into a malloc'd buffer (never NULL). */
static uint8_t *
read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *p = NULL, *grown;
	size_t cap = 0, n = 0, got;

	assert_non_null(f);
	do {
		if (n == cap) {
			cap = cap ? 2 * cap : 4096;
			grown = realloc(p, cap);
			assert_non_null(grown);
			p = grown;
		}
		got = fread(p + n, 1, cap - n, f);
		n += got;
	} while (got > 0);
	assert_int_equal(ferror(f), 0);
	fclose(f);
	*len = n;
	return p;
}

__attribute__((format(printf, 1, 2))) static void
run(const char *fmt, ...)
{
	char cmd[CMD_CAP];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	assert_true(n > 0 && n < (int)sizeof(cmd));
	if (system(cmd) != 0)
		fail_msg("command failed: %s", cmd);
}

static int
setup(void **state)
{
	const char *tmp = getenv("TMPDIR");
	struct fixture *fx = calloc(1, sizeof(*fx));

	if (fx == NULL)
		return -1;
	if (tmp == NULL || *tmp == '\0')
		tmp = "/tmp";
	if (snprintf(fx->dir, sizeof(fx->dir), "%s/bw_test_crypto_XXXXXX",
		     tmp) >= (int)sizeof(fx->dir) ||
	    mkdtemp(fx->dir) == NULL || bw_rsa_generate(&fx->key) != 0 ||
	    bw_rsa_to_spki(fx->key, fx->spki) != 0) {
		bw_rsa_free(fx->key);
		free(fx);
		return -1;
	}
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *fx = *state;
	char cmd[CMD_CAP];
	int rc = -1;

	if (snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir) <
	    (int)sizeof(cmd))
		rc = system(cmd);
	(void)rc;
	bw_rsa_free(fx->key);
	free(fx);
	return 0;
}

/* ---- RSA keys ---- */

static void
keygen_spki_is_160_bytes_with_fixed_prefix_and_e_17(void **state)
{
	struct fixture *fx = *state;
	struct bw_rsa *k = NULL;
	uint8_t spki[BW_RSA_PUB_LEN];

	assert_int_equal(bw_rsa_generate(&k), 0);
	assert_int_equal(bw_rsa_to_spki(k, spki), 0);
	assert_memory_equal(spki, spki_prefix, sizeof(spki_prefix));
	assert_int_equal(spki[157], 0x02);
	assert_int_equal(spki[158], 0x01);
	assert_int_equal(spki[159], 0x11);
	/* the modulus really has its top bit set: 1024 bits, not fewer */
	assert_true(spki[sizeof(spki_prefix)] & 0x80);
	/* two key pairs differ */
	assert_memory_not_equal(spki, fx->spki, sizeof(spki));
	bw_rsa_free(k);
}

static void
spki_round_trip_gives_the_same_bytes(void **state)
{
	struct fixture *fx = *state;
	struct bw_rsa *k = NULL;
	uint8_t again[BW_RSA_PUB_LEN];

	assert_int_equal(bw_rsa_from_spki(&k, fx->spki, sizeof(fx->spki)), 0);
	assert_int_equal(bw_rsa_to_spki(k, again), 0);
	assert_memory_equal(again, fx->spki, sizeof(again));
	bw_rsa_free(k);
}

static void
spki_followed_by_zero_bytes_is_accepted(void **state)
{
	struct fixture *fx = *state;
	struct bw_rsa *k = NULL;
	uint8_t field[200] = {0};

	memcpy(field, fx->spki, sizeof(fx->spki));
	assert_int_equal(bw_rsa_from_spki(&k, field, sizeof(field)), 0);
	bw_rsa_free(k);
}

static void
pkcs8_round_trip_gives_the_same_key(void **state)
{
	struct fixture *fx = *state;
	struct bw_rsa *k = NULL;
	uint8_t *der = NULL, *der2 = NULL, spki[BW_RSA_PUB_LEN];
	uint8_t secret[16], ct[BW_RSA_CT_LEN], pt[BW_RSA_CT_LEN];
	size_t len = 0, len2 = 0, pt_len = 0;

	assert_int_equal(bw_rsa_to_pkcs8(fx->key, &der, &len), 0);
	assert_true(len > 600 && len < 700);
	assert_int_equal(bw_rsa_from_pkcs8(&k, der, len), 0);
	assert_int_equal(bw_rsa_to_spki(k, spki), 0);
	assert_memory_equal(spki, fx->spki, sizeof(spki));
	assert_int_equal(bw_rsa_to_pkcs8(k, &der2, &len2), 0);
	assert_int_equal(len2, len);
	assert_memory_equal(der2, der, len);

	/* the reloaded key decrypts what the public half encrypted */
	fill_rand(secret, sizeof(secret), 3);
	assert_int_equal(
		bw_rsa_oaep_encrypt(fx->key, secret, sizeof(secret), ct), 0);
	assert_int_equal(
		bw_rsa_oaep_decrypt(k, ct, sizeof(ct), pt, sizeof(pt), &pt_len),
		0);
	assert_int_equal(pt_len, sizeof(secret));
	assert_memory_equal(pt, secret, sizeof(secret));

	bw_secure_free(der, len);
	bw_secure_free(der2, len2);
	bw_rsa_free(k);
}

static void
pkcs8_with_trailing_or_missing_bytes_is_rejected(void **state)
{
	struct fixture *fx = *state;
	struct bw_rsa *k = NULL;
	uint8_t *der = NULL, *longer;
	size_t len = 0;

	assert_int_equal(bw_rsa_to_pkcs8(fx->key, &der, &len), 0);
	longer = calloc(1, len + 1);
	assert_non_null(longer);
	memcpy(longer, der, len);
	assert_int_equal(bw_rsa_from_pkcs8(&k, longer, len + 1), BW_EBADKEY);
	assert_null(k);
	assert_int_equal(bw_rsa_from_pkcs8(&k, der, len - 1), BW_EBADKEY);
	assert_int_equal(bw_rsa_from_pkcs8(&k, der, 0), BW_EBADKEY);
	/* a public key is not a PKCS#8 private key */
	assert_int_equal(bw_rsa_from_pkcs8(&k, fx->spki, sizeof(fx->spki)),
			 BW_EBADKEY);
	bw_secure_free(der, len);
	free(longer);
}

/* Makes a key with the openssl command, a writer other than ours, and
 * returns it as DER after `openssl <convert>`. */
static uint8_t *
openssl_der(const struct fixture *fx, const char *genpkey_args,
	    const char *convert, size_t *len)
{
	char der[PATH_CAP];

	path_in(fx, "other.der", der);
	run("openssl genpkey %s 2>/dev/null | "
	    "openssl %s -outform DER -out '%s'",
	    genpkey_args, convert, der);
	return read_file(der, len);
}

/* Its PKCS#8 private key. */
static uint8_t *
openssl_pkcs8(const struct fixture *fx, const char *genpkey_args, size_t *len)
{
	return openssl_der(fx, genpkey_args, "pkcs8 -topk8 -nocrypt", len);
}

/* Its SPKI public key. */
static uint8_t *
openssl_spki(const struct fixture *fx, const char *genpkey_args, size_t *len)
{
	return openssl_der(fx, genpkey_args, "pkey -pubout", len);
}

static void
pkcs8_from_the_openssl_command_is_read_and_decrypts(void **state)
{
	struct fixture *fx = *state;
	struct bw_rsa *k = NULL, *pub = NULL;
	uint8_t spki[BW_RSA_PUB_LEN], secret[16], ct[BW_RSA_CT_LEN],
		pt[BW_RSA_CT_LEN], *der;
	size_t len, pt_len = 0;

	der = openssl_pkcs8(fx,
			    "-algorithm RSA -pkeyopt rsa_keygen_bits:1024 "
			    "-pkeyopt rsa_keygen_pubexp:17",
			    &len);
	assert_int_equal(bw_rsa_from_pkcs8(&k, der, len), 0);
	assert_int_equal(bw_rsa_to_spki(k, spki), 0);
	assert_int_equal(bw_rsa_from_spki(&pub, spki, sizeof(spki)), 0);
	fill_rand(secret, sizeof(secret), 5);
	assert_int_equal(bw_rsa_oaep_encrypt(pub, secret, sizeof(secret), ct),
			 0);
	assert_int_equal(
		bw_rsa_oaep_decrypt(k, ct, sizeof(ct), pt, sizeof(pt), &pt_len),
		0);
	assert_int_equal(pt_len, sizeof(secret));
	assert_memory_equal(pt, secret, sizeof(secret));
	bw_rsa_free(pub);
	bw_rsa_free(k);
	bw_secure_free(der, len);

	/* valid PKCS#8, but the wrong size or kind of key */
	der = openssl_pkcs8(fx,
			    "-algorithm RSA -pkeyopt rsa_keygen_bits:2048 "
			    "-pkeyopt rsa_keygen_pubexp:17",
			    &len);
	assert_int_equal(bw_rsa_from_pkcs8(&k, der, len), BW_EBADKEY);
	bw_secure_free(der, len);
	der = openssl_pkcs8(
		fx, "-algorithm RSA-PSS -pkeyopt rsa_keygen_bits:1024", &len);
	assert_int_equal(bw_rsa_from_pkcs8(&k, der, len), BW_EBADKEY);
	bw_secure_free(der, len);
	der = openssl_pkcs8(
		fx, "-algorithm EC -pkeyopt ec_paramgen_curve:P-256", &len);
	assert_int_equal(bw_rsa_from_pkcs8(&k, der, len), BW_EBADKEY);
	bw_secure_free(der, len);
	assert_null(k);
}

/* PKCS#8 around an RSAPrivateKey, laid out as bw_rsa_to_pkcs8 writes it:
 * lengths in two bytes. The algorithm's parameters: NULL (P_NULL), absent
 * (P_NONE) or an empty OCTET STRING (P_OCTETS). */
enum { P_NULL, P_NONE, P_OCTETS };
#define P8_HEAD 26
static size_t
wrap_pkcs8(const uint8_t *inner, size_t n, int params, uint8_t *out)
{
	static const uint8_t alg[] = {0x30, 0x0d, 0x06, 0x09, 0x2a,
				      0x86, 0x48, 0x86, 0xf7, 0x0d,
				      0x01, 0x01, 0x01, 0x05, 0x00};
	size_t alg_len = params == P_NONE ? sizeof(alg) - 2 : sizeof(alg);
	size_t body = 3 + alg_len + 4 + n, o = 0;

	out[o++] = 0x30;
	out[o++] = 0x82;
	out[o++] = (uint8_t)(body >> 8);
	out[o++] = (uint8_t)body;
	out[o++] = 0x02;
	out[o++] = 0x01;
	out[o++] = 0x00;
	memcpy(out + o, alg, alg_len);
	if (params == P_NONE)
		out[o + 1] = 0x0b;
	if (params == P_OCTETS)
		out[o + alg_len - 2] = 0x04;
	o += alg_len;
	out[o++] = 0x04;
	out[o++] = 0x82;
	out[o++] = (uint8_t)(n >> 8);
	out[o++] = (uint8_t)n;
	memcpy(out + o, inner, n);
	return o + n;
}

static int
load_wrapped(const uint8_t *inner, size_t n, int params)
{
	uint8_t buf[1024];
	struct bw_rsa *k = NULL;
	int rc;

	assert_true(n + P8_HEAD <= sizeof(buf));
	rc = bw_rsa_from_pkcs8(&k, buf, wrap_pkcs8(inner, n, params, buf));
	assert_true(rc == 0 || k == NULL);
	bw_rsa_free(k);
	return rc;
}

/* Where the contents of the ninth and last integer of an RSAPrivateKey
 * start; each integer's length is short or in one byte (81 LL). */
static size_t
last_int_contents(const uint8_t *inner, size_t n)
{
	size_t at = 4, len = 0, i;

	for (i = 0; i < 9; i++) {
		assert_true(at + 3 <= n && inner[at] == 0x02);
		if (inner[at + 1] == 0x81) {
			len = inner[at + 2];
			at += 3;
		} else {
			len = inner[at + 1];
			at += 2;
		}
		if (i < 8)
			at += len;
	}
	assert_true(len >= 2 && at + len == n);
	return at;
}

static void
pkcs8_inner_key_is_read_strictly(void **state)
{
	struct fixture *fx = *state;
	uint8_t *der = NULL, inner[1024], buf[1024], *c;
	size_t len = 0, n, i;

	assert_int_equal(bw_rsa_to_pkcs8(fx->key, &der, &len), 0);
	/* the helper lays it out exactly as OpenSSL does */
	n = (size_t)der[P8_HEAD - 2] << 8 | der[P8_HEAD - 1];
	assert_int_equal(P8_HEAD + n, len);
	memcpy(inner, der + P8_HEAD, n);
	assert_int_equal(wrap_pkcs8(inner, n, P_NULL, buf), len);
	assert_memory_equal(buf, der, len);
	assert_int_equal(load_wrapped(inner, n, P_NULL), 0);
	/* parameters absent, as some writers leave them: still rsaEncryption */
	assert_int_equal(load_wrapped(inner, n, P_NONE), 0);
	/* anything else is not the rsaEncryption this reads */
	assert_int_equal(load_wrapped(inner, n, P_OCTETS), BW_EBADKEY);

	/* inner: 30 82 LL LL | 02 01 00 (version) | 02 81 81 00 (n) ... */
	assert_int_equal(inner[0], 0x30);
	assert_int_equal(inner[1], 0x82);
	assert_memory_equal(inner + 4, "\x02\x01\x00\x02\x81\x81\x00", 7);

	/* version 1 (more than two primes) */
	inner[6] = 0x01;
	assert_int_equal(load_wrapped(inner, n, P_NULL), BW_EBADKEY);
	inner[6] = 0x00;
	/* a negative modulus */
	inner[10] = 0x80;
	assert_int_equal(load_wrapped(inner, n, P_NULL), BW_EBADKEY);
	/* a modulus with a needless leading zero */
	inner[10] = 0x00;
	inner[11] &= 0x7f;
	assert_int_equal(load_wrapped(inner, n, P_NULL), BW_EBADKEY);
	memcpy(inner, der + P8_HEAD, n);
	/* the same two on the last integer, q^-1 mod p, which the key's
	 * size and exponent checks do not look at */
	c = inner + last_int_contents(inner, n);
	c[0] |= 0x80;
	assert_int_equal(load_wrapped(inner, n, P_NULL), BW_EBADKEY);
	c[0] = 0x00;
	c[1] &= 0x7f;
	assert_int_equal(load_wrapped(inner, n, P_NULL), BW_EBADKEY);
	memcpy(inner, der + P8_HEAD, n);
	/* a length in a longer form than it needs: e as 02 81 01 11 */
	assert_memory_equal(inner + 139, "\x02\x01\x11", 3);
	memmove(inner + 141, inner + 140, n - 140);
	inner[140] = 0x81;
	inner[3] = (uint8_t)(inner[3] + 1);
	assert_int_equal(load_wrapped(inner, n + 1, P_NULL), BW_EBADKEY);
	/* the same in its shortest form reads (the edit above is sound) */
	memmove(inner + 140, inner + 141, n - 140);
	inner[3] = (uint8_t)(inner[3] - 1);
	assert_int_equal(load_wrapped(inner, n, P_NULL), 0);
	/* an integer after the ninth, inside the sequence */
	inner[n] = 0x02;
	inner[n + 1] = 0x01;
	inner[n + 2] = 0x05;
	inner[3] = (uint8_t)(inner[3] + 3);
	assert_int_equal(load_wrapped(inner, n + 3, P_NULL), BW_EBADKEY);
	/* and after the sequence, inside the octet string */
	inner[3] = (uint8_t)(inner[3] - 3);
	assert_int_equal(load_wrapped(inner, n + 3, P_NULL), BW_EBADKEY);
	memcpy(inner, der + P8_HEAD, n);
	/* every truncation of the inner key */
	for (i = 0; i < n; i++) {
		uint8_t cut[1024];

		memcpy(cut, inner, i);
		assert_int_equal(load_wrapped(cut, i, P_NULL), BW_EBADKEY);
	}
	bw_secure_free(der, len);
}

static void
public_only_key_has_no_pkcs8(void **state)
{
	struct fixture *fx = *state;
	struct bw_rsa *pub = NULL;
	uint8_t *der = NULL;
	size_t len = 0;

	assert_int_equal(bw_rsa_from_spki(&pub, fx->spki, sizeof(fx->spki)), 0);
	assert_true(bw_rsa_to_pkcs8(pub, &der, &len) < 0);
	assert_null(der);
	bw_rsa_free(pub);
}

static void
spki_of_all_zeros_is_rejected(void **state)
{
	struct bw_rsa *k = NULL;
	uint8_t field[BW_RSA_PUB_LEN] = {0};

	(void)state;
	assert_int_equal(bw_rsa_from_spki(&k, field, sizeof(field)),
			 BW_EBADKEY);
	assert_null(k);
	assert_int_equal(bw_rsa_from_spki(&k, field, 0), BW_EBADKEY);
}

static void
spki_of_random_bytes_is_rejected(void **state)
{
	struct bw_rsa *k = NULL;
	uint8_t field[BW_RSA_PUB_LEN];
	uint64_t seed;

	(void)state;
	for (seed = 1; seed <= 200; seed++) {
		fill_rand(field, sizeof(field), seed);
		assert_int_equal(bw_rsa_from_spki(&k, field, sizeof(field)),
				 BW_EBADKEY);
		/* even with a plausible SEQUENCE header */
		field[0] = 0x30;
		field[1] = 0x81;
		field[2] = 0x9d;
		assert_int_equal(bw_rsa_from_spki(&k, field, sizeof(field)),
				 BW_EBADKEY);
	}
	assert_null(k);
}

static void
spki_with_nonzero_trailing_byte_is_rejected(void **state)
{
	struct fixture *fx = *state;
	struct bw_rsa *k = NULL;
	uint8_t field[200] = {0};

	memcpy(field, fx->spki, sizeof(fx->spki));
	field[199] = 1;
	assert_int_equal(bw_rsa_from_spki(&k, field, sizeof(field)),
			 BW_EBADKEY);
	field[199] = 0;
	field[160] = 0x80;
	assert_int_equal(bw_rsa_from_spki(&k, field, sizeof(field)),
			 BW_EBADKEY);
	assert_null(k);
}

static void
truncated_or_corrupt_spki_is_rejected(void **state)
{
	struct fixture *fx = *state;
	struct bw_rsa *k = NULL;
	uint8_t field[BW_RSA_PUB_LEN];

	assert_int_equal(bw_rsa_from_spki(&k, fx->spki, sizeof(fx->spki) - 1),
			 BW_EBADKEY);
	/* rsaEncryption OID (1.2.840.113549.1.1.1) changed to RSASSA-PSS */
	memcpy(field, fx->spki, sizeof(field));
	field[15] = 0x0a;
	assert_int_equal(bw_rsa_from_spki(&k, field, sizeof(field)),
			 BW_EBADKEY);
	/* even public exponent */
	memcpy(field, fx->spki, sizeof(field));
	field[159] = 0x10;
	assert_int_equal(bw_rsa_from_spki(&k, field, sizeof(field)),
			 BW_EBADKEY);
	/* public exponent 1 */
	field[159] = 0x01;
	assert_int_equal(bw_rsa_from_spki(&k, field, sizeof(field)),
			 BW_EBADKEY);
	assert_null(k);
}

static void
spki_of_2048_bit_key_is_rejected(void **state)
{
	struct fixture *fx = *state;
	struct bw_rsa *k = NULL;
	uint8_t *der;
	size_t len;

	der = openssl_spki(fx,
			   "-algorithm RSA -pkeyopt rsa_keygen_bits:2048 "
			   "-pkeyopt rsa_keygen_pubexp:17",
			   &len);
	assert_true(len > BW_RSA_PUB_LEN);
	/* valid RSA, but the wrong size; and cut to the field it is garbage */
	assert_int_equal(bw_rsa_from_spki(&k, der, len), BW_EBADKEY);
	assert_int_equal(bw_rsa_from_spki(&k, der, BW_RSA_PUB_LEN), BW_EBADKEY);
	assert_null(k);
	free(der);
}

static void
spki_of_512_bit_key_is_rejected(void **state)
{
	struct fixture *fx = *state;
	struct bw_rsa *k = NULL;
	uint8_t field[BW_RSA_PUB_LEN] = {0}, *der;
	size_t len;

	der = openssl_spki(fx,
			   "-algorithm RSA -pkeyopt rsa_keygen_bits:512 "
			   "-pkeyopt rsa_keygen_pubexp:17",
			   &len);
	assert_true(len < BW_RSA_PUB_LEN);
	memcpy(field, der, len);
	assert_int_equal(bw_rsa_from_spki(&k, field, sizeof(field)),
			 BW_EBADKEY);
	assert_null(k);
	free(der);
}

static void
spki_of_ec_key_is_rejected(void **state)
{
	struct fixture *fx = *state;
	struct bw_rsa *k = NULL;
	uint8_t field[BW_RSA_PUB_LEN] = {0}, *der;
	size_t len;

	der = openssl_spki(
		fx, "-algorithm EC -pkeyopt ec_paramgen_curve:prime256v1",
		&len);
	assert_int_equal(len, 91);
	memcpy(field, der, len);
	assert_int_equal(bw_rsa_from_spki(&k, field, sizeof(field)),
			 BW_EBADKEY);
	assert_null(k);
	free(der);
}

/* A 1024-bit key with e = 65537 is valid but its SPKI is 162 bytes. */
static void
key_with_e_65537_does_not_fit_the_field(void **state)
{
	struct fixture *fx = *state;
	struct bw_rsa *k = NULL;
	uint8_t field[BW_RSA_PUB_LEN], *der;
	size_t len;

	der = openssl_spki(fx,
			   "-algorithm RSA -pkeyopt rsa_keygen_bits:1024 "
			   "-pkeyopt rsa_keygen_pubexp:65537",
			   &len);
	assert_int_equal(len, 162);
	assert_int_equal(bw_rsa_from_spki(&k, der, BW_RSA_PUB_LEN), BW_EBADKEY);
	assert_int_equal(bw_rsa_from_spki(&k, der, len), 0);
	assert_int_equal(bw_rsa_to_spki(k, field), BW_ETOOBIG);
	bw_rsa_free(k);
	free(der);
}

/* ---- RSA-OAEP ---- */

static void
oaep_round_trip_returns_the_plaintext(void **state)
{
	struct fixture *fx = *state;
	struct bw_rsa *pub = NULL;
	static const size_t lens[] = {0, 1, 16, 32, 85, 86};
	uint8_t secret[86], ct[BW_RSA_CT_LEN], ct2[BW_RSA_CT_LEN];
	uint8_t pt[BW_RSA_CT_LEN];
	size_t i, n, pt_len;

	/* encrypt with the public key alone, as the server does */
	assert_int_equal(bw_rsa_from_spki(&pub, fx->spki, sizeof(fx->spki)), 0);
	fill_rand(secret, sizeof(secret), 4);
	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		n = lens[i];
		assert_int_equal(bw_rsa_oaep_encrypt(pub, secret, n, ct), 0);
		assert_int_equal(bw_rsa_oaep_decrypt(fx->key, ct, sizeof(ct),
						     pt, sizeof(pt), &pt_len),
				 0);
		assert_int_equal(pt_len, n);
		assert_memory_equal(pt, secret, n);
	}
	/* randomised: the same plaintext twice gives different ciphertexts */
	assert_int_equal(bw_rsa_oaep_encrypt(pub, secret, 16, ct), 0);
	assert_int_equal(bw_rsa_oaep_encrypt(pub, secret, 16, ct2), 0);
	assert_memory_not_equal(ct, ct2, sizeof(ct));
	bw_rsa_free(pub);
}

static void
oaep_plaintext_over_86_bytes_is_too_big(void **state)
{
	struct fixture *fx = *state;
	uint8_t secret[87] = {0}, ct[BW_RSA_CT_LEN];

	assert_int_equal(
		bw_rsa_oaep_encrypt(fx->key, secret, sizeof(secret), ct),
		BW_ETOOBIG);
}

static void
oaep_decrypt_with_the_wrong_key_fails(void **state)
{
	struct fixture *fx = *state;
	struct bw_rsa *other = NULL;
	uint8_t secret[16], ct[BW_RSA_CT_LEN], pt[BW_RSA_CT_LEN];
	size_t pt_len = 99;

	assert_int_equal(bw_rsa_generate(&other), 0);
	fill_rand(secret, sizeof(secret), 5);
	assert_int_equal(
		bw_rsa_oaep_encrypt(fx->key, secret, sizeof(secret), ct), 0);
	assert_int_equal(bw_rsa_oaep_decrypt(other, ct, sizeof(ct), pt,
					     sizeof(pt), &pt_len),
			 BW_ECRYPTO);
	assert_int_equal(pt_len, 0);
	bw_rsa_free(other);
}

static void
oaep_decrypt_rejects_bad_ciphertexts(void **state)
{
	struct fixture *fx = *state;
	struct bw_rsa *pub = NULL;
	uint8_t secret[16], ct[BW_RSA_CT_LEN + 1], pt[BW_RSA_CT_LEN];
	size_t pt_len;

	fill_rand(secret, sizeof(secret), 6);
	assert_int_equal(
		bw_rsa_oaep_encrypt(fx->key, secret, sizeof(secret), ct), 0);
	/* wrong lengths */
	assert_int_equal(bw_rsa_oaep_decrypt(fx->key, ct, BW_RSA_CT_LEN - 1, pt,
					     sizeof(pt), &pt_len),
			 BW_ECRYPTO);
	assert_int_equal(bw_rsa_oaep_decrypt(fx->key, ct, BW_RSA_CT_LEN + 1, pt,
					     sizeof(pt), &pt_len),
			 BW_ECRYPTO);
	/* output buffer too small for the plaintext */
	assert_int_equal(bw_rsa_oaep_decrypt(fx->key, ct, BW_RSA_CT_LEN, pt, 15,
					     &pt_len),
			 BW_ETOOBIG);
	/* a flipped bit */
	ct[100] ^= 0x04;
	assert_int_equal(bw_rsa_oaep_decrypt(fx->key, ct, BW_RSA_CT_LEN, pt,
					     sizeof(pt), &pt_len),
			 BW_ECRYPTO);
	ct[100] ^= 0x04;
	/* a public key cannot decrypt */
	assert_int_equal(bw_rsa_from_spki(&pub, fx->spki, sizeof(fx->spki)), 0);
	assert_true(bw_rsa_oaep_decrypt(pub, ct, BW_RSA_CT_LEN, pt, sizeof(pt),
					&pt_len) < 0);
	bw_rsa_free(pub);
}

static void
oaep_ciphertext_from_openssl_pkeyutl_decrypts(void **state)
{
	struct fixture *fx = *state;
	char pub[PATH_CAP], in[PATH_CAP], out[PATH_CAP];
	uint8_t secret[BW_AES_KEY_LEN], pt[BW_RSA_CT_LEN], *ct;
	size_t ct_len, pt_len;

	path_in(fx, "pub.der", pub);
	path_in(fx, "secret.bin", in);
	path_in(fx, "secret.enc", out);
	write_file(pub, fx->spki, sizeof(fx->spki));
	fill_rand(secret, sizeof(secret), 7);
	write_file(in, secret, sizeof(secret));
	run("openssl pkeyutl -encrypt -pubin -keyform DER -inkey '%s' "
	    "-pkeyopt rsa_padding_mode:oaep -in '%s' -out '%s'",
	    pub, in, out);
	ct = read_file(out, &ct_len);
	assert_int_equal(ct_len, BW_RSA_CT_LEN);
	assert_int_equal(bw_rsa_oaep_decrypt(fx->key, ct, ct_len, pt,
					     sizeof(pt), &pt_len),
			 0);
	assert_int_equal(pt_len, sizeof(secret));
	assert_memory_equal(pt, secret, sizeof(secret));
	free(ct);
}

static void
openssl_pkeyutl_decrypts_our_oaep_ciphertext(void **state)
{
	struct fixture *fx = *state;
	char key[PATH_CAP], in[PATH_CAP], out[PATH_CAP];
	uint8_t secret[BW_AES_KEY_LEN], ct[BW_RSA_CT_LEN], *der, *pt;
	size_t der_len, pt_len;

	path_in(fx, "priv.der", key);
	path_in(fx, "ours.enc", in);
	path_in(fx, "ours.dec", out);
	assert_int_equal(bw_rsa_to_pkcs8(fx->key, &der, &der_len), 0);
	write_file(key, der, der_len);
	bw_secure_free(der, der_len);
	/* the second encryption reuses the key's context: it must still be
	 * OAEP with SHA-1, as an independent implementation reads it */
	fill_rand(secret, sizeof(secret), 9);
	assert_int_equal(
		bw_rsa_oaep_encrypt(fx->key, secret, sizeof(secret), ct), 0);
	fill_rand(secret, sizeof(secret), 8);
	assert_int_equal(
		bw_rsa_oaep_encrypt(fx->key, secret, sizeof(secret), ct), 0);
	write_file(in, ct, sizeof(ct));
	run("openssl pkeyutl -decrypt -keyform DER -inkey '%s' "
	    "-pkeyopt rsa_padding_mode:oaep -in '%s' -out '%s'",
	    key, in, out);
	pt = read_file(out, &pt_len);
	assert_int_equal(pt_len, sizeof(secret));
	assert_memory_equal(pt, secret, sizeof(secret));
	free(pt);
}

/* ---- AES-128-CBC and PKCS#7 ---- */

/* Our AES-CBC of data plus PKCS#7, the way bw_aes_seal composes them. */
static uint8_t *
our_cbc_pkcs7(const uint8_t *p, size_t n, size_t *len)
{
	struct bw_aes *a = NULL;
	size_t full = n - n % BW_AES_BLOCK;
	uint8_t *buf;

	*len = (size_t)bw_aes_cipher_len(n);
	buf = malloc(*len);
	assert_non_null(buf);
	if (n > 0)
		memcpy(buf, p, n);
	bw_pkcs7_pad(buf + full, n % BW_AES_BLOCK);
	assert_int_equal(bw_aes_new(&a, aes_key, 1), 0);
	assert_int_equal(bw_aes_cbc(a, buf, *len), 0);
	bw_aes_free(a);
	return buf;
}

static void
aes_cbc_matches_openssl_enc(void **state)
{
	static const size_t lens[] = {0, 1, 15, 16, 17, 31, 32, 100, 4099};
	struct fixture *fx = *state;
	char in[PATH_CAP], out[PATH_CAP];
	uint8_t data[4099], *want, *got, *sealed;
	size_t i, want_len, got_len, sealed_len;

	path_in(fx, "plain.bin", in);
	path_in(fx, "plain.enc", out);
	fill_rand(data, sizeof(data), 9);
	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		write_file(in, data, lens[i]);
		run("openssl enc -aes-128-cbc -K %s -iv %s -in '%s' -out '%s'",
		    aes_key_hex, zero_iv_hex, in, out);
		want = read_file(out, &want_len);
		got = our_cbc_pkcs7(data, lens[i], &got_len);
		assert_int_equal(want_len, 16 * (lens[i] / 16 + 1));
		assert_int_equal(got_len, want_len);
		assert_memory_equal(got, want, want_len);
		assert_int_equal(bw_aes_seal(aes_key, data, lens[i], &sealed,
					     &sealed_len),
				 0);
		assert_int_equal(sealed_len, want_len);
		assert_memory_equal(sealed, want, want_len);
		bw_secure_free(sealed, sealed_len);
		free(want);
		free(got);
	}
}

static void
openssl_enc_d_recovers_our_ciphertext(void **state)
{
	static const size_t lens[] = {0, 1, 16, 33, 1000};
	struct fixture *fx = *state;
	char in[PATH_CAP], out[PATH_CAP];
	uint8_t data[1000], *ct, *pt;
	size_t i, ct_len, pt_len;

	path_in(fx, "ours.aes", in);
	path_in(fx, "ours.plain", out);
	fill_rand(data, sizeof(data), 10);
	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		assert_int_equal(
			bw_aes_seal(aes_key, data, lens[i], &ct, &ct_len), 0);
		write_file(in, ct, ct_len);
		run("openssl enc -d -aes-128-cbc -K %s -iv %s -in '%s' "
		    "-out '%s'",
		    aes_key_hex, zero_iv_hex, in, out);
		pt = read_file(out, &pt_len);
		assert_int_equal(pt_len, lens[i]);
		assert_memory_equal(pt, data, pt_len);
		bw_secure_free(ct, ct_len);
		free(pt);
	}
}

static void
chained_aes_calls_equal_one_call(void **state)
{
	enum { LEN = 16 * 1000 };
	uint8_t *data = malloc(LEN), *one = malloc(LEN), *many = malloc(LEN);
	struct bw_aes *a = NULL;
	size_t chunk, off, step;
	uint64_t rng = 12;
	int enc;

	(void)state;
	assert_true(data && one && many);
	fill_rand(data, LEN, 11);
	for (enc = 1; enc >= 0; enc--) {
		memcpy(one, data, LEN);
		assert_int_equal(bw_aes_new(&a, aes_key, enc), 0);
		assert_int_equal(bw_aes_cbc(a, one, LEN), 0);
		bw_aes_free(a);

		/* fixed chunk sizes of 1 to 64 blocks */
		for (chunk = 16; chunk <= 1024; chunk += 16) {
			memcpy(many, data, LEN);
			assert_int_equal(bw_aes_new(&a, aes_key, enc), 0);
			for (off = 0; off < LEN; off += step) {
				step = LEN - off < chunk ? LEN - off : chunk;
				assert_int_equal(
					bw_aes_cbc(a, many + off, step), 0);
			}
			bw_aes_free(a);
			assert_memory_equal(many, one, LEN);
		}
		/* random chunk sizes, including empty calls */
		memcpy(many, data, LEN);
		assert_int_equal(bw_aes_new(&a, aes_key, enc), 0);
		for (off = 0; off < LEN; off += step) {
			step = 16 * (size_t)(next_rand(&rng) % 40);
			if (step > LEN - off)
				step = LEN - off;
			assert_int_equal(bw_aes_cbc(a, many + off, step), 0);
		}
		bw_aes_free(a);
		assert_memory_equal(many, one, LEN);
	}
	free(data);
	free(one);
	free(many);
}

static void
aes_cbc_rejects_partial_blocks(void **state)
{
	struct bw_aes *a = NULL;
	uint8_t buf[32] = {0}, copy[32];
	size_t n;

	(void)state;
	assert_int_equal(bw_aes_new(&a, aes_key, 1), 0);
	memcpy(copy, buf, sizeof(buf));
	for (n = 1; n < 32; n++) {
		if (n == 16)
			continue;
		assert_int_equal(bw_aes_cbc(a, buf, n), BW_ESIZE);
	}
	assert_memory_equal(buf, copy, sizeof(buf));
	assert_int_equal(bw_aes_cbc(a, buf, 0), 0);
	bw_aes_free(a);
}

static void
pkcs7_unpad_accepts_1_to_16(void **state)
{
	uint8_t block[BW_AES_BLOCK];
	size_t used, pad;

	(void)state;
	for (used = 0; used < BW_AES_BLOCK; used++) {
		fill_rand(block, sizeof(block), 13 + used);
		bw_pkcs7_pad(block, used);
		assert_int_equal(block[15], 16 - used);
		assert_int_equal(bw_pkcs7_unpad(block, &pad), 0);
		assert_int_equal(pad, 16 - used);
	}
}

static void
pkcs7_unpad_rejects_pad_0_and_above_16(void **state)
{
	uint8_t block[BW_AES_BLOCK];
	size_t pad = 99;
	unsigned int v;

	(void)state;
	memset(block, 0, sizeof(block));
	assert_int_equal(bw_pkcs7_unpad(block, &pad), BW_EPADDING);
	for (v = 17; v < 256; v++) {
		memset(block, (int)v, sizeof(block));
		assert_int_equal(bw_pkcs7_unpad(block, &pad), BW_EPADDING);
	}
}

static void
pkcs7_unpad_rejects_inconsistent_pad_bytes(void **state)
{
	uint8_t block[BW_AES_BLOCK];
	size_t used, i, pad;

	(void)state;
	for (used = 0; used < BW_AES_BLOCK - 1; used++) {
		/* corrupt each padding byte but the last in turn */
		for (i = used; i < BW_AES_BLOCK - 1; i++) {
			memset(block, 0xaa, sizeof(block));
			bw_pkcs7_pad(block, used);
			block[i] ^= 0x01;
			assert_int_equal(bw_pkcs7_unpad(block, &pad),
					 BW_EPADDING);
		}
	}
}

static void
aes_cipher_len_is_16_times_n_over_16_plus_1(void **state)
{
	(void)state;
	assert_int_equal(bw_aes_cipher_len(0), 16);
	assert_int_equal(bw_aes_cipher_len(15), 16);
	assert_int_equal(bw_aes_cipher_len(16), 32);
	assert_int_equal(bw_aes_cipher_len(17), 32);
	assert_int_equal(bw_aes_cipher_len(4000000000ULL), 4000000016ULL);
}

static void
aes_seal_open_round_trip_0_to_100(void **state)
{
	uint8_t data[100], *ct, *pt;
	size_t n, ct_len, pt_len;

	(void)state;
	fill_rand(data, sizeof(data), 14);
	for (n = 0; n <= sizeof(data); n++) {
		assert_int_equal(bw_aes_seal(aes_key, data, n, &ct, &ct_len),
				 0);
		assert_int_equal(ct_len, 16 * (n / 16 + 1));
		assert_int_equal(bw_aes_open(aes_key, ct, ct_len, &pt, &pt_len),
				 0);
		assert_non_null(pt);
		assert_int_equal(pt_len, n);
		assert_memory_equal(pt, data, n);
		bw_secure_free(ct, ct_len);
		bw_secure_free(pt, pt_len);
	}
}

static void
aes_open_rejects_bad_sizes(void **state)
{
	uint8_t ct[48] = {0}, *pt = (uint8_t *)ct;
	size_t pt_len = 99, n;

	(void)state;
	assert_int_equal(bw_aes_open(aes_key, ct, 0, &pt, &pt_len), BW_ESIZE);
	assert_null(pt);
	assert_int_equal(pt_len, 0);
	for (n = 1; n < sizeof(ct); n++) {
		if (n % 16 == 0)
			continue;
		assert_int_equal(bw_aes_open(aes_key, ct, n, &pt, &pt_len),
				 BW_ESIZE);
		assert_null(pt);
	}
}

static void
aes_open_rejects_bad_padding(void **state)
{
	struct bw_aes *a = NULL;
	uint8_t ct[32], *pt = NULL;
	size_t pt_len = 99;

	(void)state;
	/* a final block ending in 0, then one ending in 17 */
	memset(ct, 0x41, sizeof(ct));
	ct[31] = 0;
	assert_int_equal(bw_aes_new(&a, aes_key, 1), 0);
	assert_int_equal(bw_aes_cbc(a, ct, sizeof(ct)), 0);
	bw_aes_free(a);
	assert_int_equal(bw_aes_open(aes_key, ct, sizeof(ct), &pt, &pt_len),
			 BW_EPADDING);
	assert_null(pt);
	assert_int_equal(pt_len, 0);

	memset(ct, 0x41, sizeof(ct));
	ct[31] = 17;
	assert_int_equal(bw_aes_new(&a, aes_key, 1), 0);
	assert_int_equal(bw_aes_cbc(a, ct, sizeof(ct)), 0);
	bw_aes_free(a);
	assert_int_equal(bw_aes_open(aes_key, ct, sizeof(ct), &pt, &pt_len),
			 BW_EPADDING);
	assert_null(pt);
}

/* ---- base64, random, comparison ---- */

static void
b64_matches_rfc4648_vectors(void **state)
{
	static const char *const plain[] = {"",	    "f",     "fo",    "foo",
					    "foob", "fooba", "foobar"};
	static const char *const coded[] = {
		"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	size_t i, len;
	uint8_t *bytes;
	char *text;

	(void)state;
	for (i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
		assert_int_equal(bw_b64_encode((const uint8_t *)plain[i],
					       strlen(plain[i]), &text),
				 0);
		assert_string_equal(text, coded[i]);
		assert_int_equal(
			bw_b64_decode(coded[i], strlen(coded[i]), &bytes, &len),
			0);
		assert_non_null(bytes);
		assert_int_equal(len, strlen(plain[i]));
		assert_memory_equal(bytes, plain[i], len);
		bw_secure_free(text, strlen(text));
		bw_secure_free(bytes, len);
	}
}

static void
b64_round_trip_of_every_byte_value_and_length(void **state)
{
	uint8_t data[300], *back;
	size_t n, len, k;
	char *text;

	(void)state;
	for (k = 0; k < 256; k++)
		data[k] = (uint8_t)k;
	fill_rand(data + 256, sizeof(data) - 256, 15);
	for (n = 0; n <= sizeof(data); n++) {
		assert_int_equal(bw_b64_encode(data, n, &text), 0);
		assert_int_equal(strlen(text), (n + 2) / 3 * 4);
		assert_int_equal(bw_b64_decode(text, strlen(text), &back, &len),
				 0);
		assert_int_equal(len, n);
		assert_memory_equal(back, data, n);
		bw_secure_free(text, strlen(text));
		bw_secure_free(back, len);
	}
}

static void
b64_decode_ignores_white_space(void **state)
{
	uint8_t data[200], *back;
	char *text, spaced[1024];
	size_t i, o, len;

	(void)state;
	fill_rand(data, sizeof(data), 16);
	assert_int_equal(bw_b64_encode(data, sizeof(data), &text), 0);

	/* lines of 64 ending in \n, then \r\n, then spaces and tabs between
	 * every symbol, and white space before, inside and after padding */
	for (int style = 0; style < 3; style++) {
		o = 0;
		spaced[o++] = ' ';
		for (i = 0; text[i] != '\0'; i++) {
			spaced[o++] = text[i];
			if (style == 0 && i % 64 == 63)
				spaced[o++] = '\n';
			if (style == 1 && i % 64 == 63) {
				spaced[o++] = '\r';
				spaced[o++] = '\n';
			}
			if (style == 2)
				spaced[o++] = i % 2 ? ' ' : '\t';
		}
		spaced[o++] = '\r';
		spaced[o++] = '\n';
		assert_true(o < sizeof(spaced));
		assert_int_equal(bw_b64_decode(spaced, o, &back, &len), 0);
		assert_int_equal(len, sizeof(data));
		assert_memory_equal(back, data, len);
		bw_secure_free(back, len);
	}
	assert_int_equal(bw_b64_decode(" Zm 8\n=\r\n \t", 11, &back, &len), 0);
	assert_int_equal(len, 2);
	assert_memory_equal(back, "fo", 2);
	bw_secure_free(back, len);
	assert_int_equal(bw_b64_decode(" \n\t", 3, &back, &len), 0);
	assert_int_equal(len, 0);
	bw_secure_free(back, len);
	bw_secure_free(text, strlen(text));
}

static void
b64_decode_rejects_invalid_input(void **state)
{
	static const char *const bad[] = {
		"Zm9v*",	"Zm9-",	    "Zm9_",
		"Zm.v",		"Zm9vYg=!", "Zg=",
		"Zg",		"Zm8",	    "Z",
		"Z===",		"=",	    "==",
		"Zm9v=",	"Zg==Zg==", "Zm9vY",
		"Zm8==",	"Zg=a",	    "Zm9vYmFy\x01",
		"Zm9v\xc3\xa9",
	};
	uint8_t *out = (uint8_t *)"";
	size_t i, len = 99;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (bw_b64_decode(bad[i], strlen(bad[i]), &out, &len) !=
		    BW_EPROTO)
			fail_msg("accepted \"%s\"", bad[i]);
		assert_null(out);
		assert_int_equal(len, 0);
	}
	/* a NUL inside the counted length is not base64 either */
	assert_int_equal(bw_b64_decode("Zm9v\0Zm9v", 9, &out, &len), BW_EPROTO);
}

/* Decoding reads exactly n bytes: input ending before an unmapped page. */
static void
b64_decode_does_not_read_past_the_end(void **state)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE), len;
	char *map, *end;
	uint8_t *out;

	(void)state;
	map = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(map != MAP_FAILED);
	assert_int_equal(mprotect(map + pg, pg, PROT_NONE), 0);
	end = map + pg;
	memcpy(end - 8, "Zm9vYg==", 8);
	assert_int_equal(bw_b64_decode(end - 8, 8, &out, &len), 0);
	assert_int_equal(len, 4);
	bw_secure_free(out, len);
	memcpy(end - 7, "Zm9vYg=", 7);
	assert_int_equal(bw_b64_decode(end - 7, 7, &out, &len), BW_EPROTO);
	memcpy(end - 3, "Zm9", 3);
	assert_int_equal(bw_b64_decode(end - 3, 3, &out, &len), BW_EPROTO);
	munmap(map, 2 * pg);
}

static void
b64_encode_matches_coreutils_base64(void **state)
{
	static const size_t lens[] = {1, 2, 3, 57, 58, 59, 160, 1000};
	struct fixture *fx = *state;
	char in[PATH_CAP], out[PATH_CAP];
	uint8_t data[1000], *want, *back;
	size_t i, want_len, back_len;
	char *text;

	path_in(fx, "b64.bin", in);
	path_in(fx, "b64.txt", out);
	fill_rand(data, sizeof(data), 17);
	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		write_file(in, data, lens[i]);
		run("base64 -w0 < '%s' > '%s'", in, out);
		want = read_file(out, &want_len);
		assert_int_equal(bw_b64_encode(data, lens[i], &text), 0);
		assert_int_equal(strlen(text), want_len);
		assert_memory_equal(text, want, want_len);
		free(want);
		bw_secure_free(text, strlen(text));

		/* and the default 76-column output decodes to the data */
		run("base64 < '%s' > '%s'", in, out);
		want = read_file(out, &want_len);
		assert_int_equal(bw_b64_decode((const char *)want, want_len,
					       &back, &back_len),
				 0);
		assert_int_equal(back_len, lens[i]);
		assert_memory_equal(back, data, back_len);
		free(want);
		bw_secure_free(back, back_len);
	}
}

static void
random_bytes_differ_between_calls(void **state)
{
	uint8_t a[32], b[32];

	(void)state;
	assert_int_equal(bw_random(a, sizeof(a)), 0);
	assert_int_equal(bw_random(b, sizeof(b)), 0);
	assert_memory_not_equal(a, b, sizeof(a));
	assert_int_equal(bw_random(a, 0), 0);
}

static void
ct_equal_compares_contents(void **state)
{
	uint8_t a[20], b[20];

	(void)state;
	fill_rand(a, sizeof(a), 18);
	memcpy(b, a, sizeof(b));
	assert_true(bw_ct_equal(a, b, sizeof(a)));
	b[19] ^= 0x80;
	assert_false(bw_ct_equal(a, b, sizeof(a)));
	assert_true(bw_ct_equal(a, b, 19));
	assert_true(bw_ct_equal(a, b, 0));
}

static void
wipe_zeroes_and_secure_free_accepts_null(void **state)
{
	uint8_t a[20];

	(void)state;
	memset(a, 0x5a, sizeof(a));
	bw_wipe(a, sizeof(a));
	for (size_t i = 0; i < sizeof(a); i++)
		assert_int_equal(a[i], 0);
	bw_wipe(NULL, 0);
	bw_secure_free(NULL, 10);
	bw_rsa_free(NULL);
	bw_aes_free(NULL);
}

/* RFC 7914 section 12, the second vector: P "password", S "NaCl",
 * N 1024, r 8, p 16. */
static void
scrypt_matches_the_rfc_7914_vector(void **state)
{
	static const uint8_t want[64] = {
		0xfd, 0xba, 0xbe, 0x1c, 0x9d, 0x34, 0x72, 0x00, 0x78, 0x56,
		0xe7, 0x19, 0x0d, 0x01, 0xe9, 0xfe, 0x7c, 0x6a, 0xd7, 0xcb,
		0xc8, 0x23, 0x78, 0x30, 0xe7, 0x73, 0x76, 0x63, 0x4b, 0x37,
		0x31, 0x62, 0x2e, 0xaf, 0x30, 0xd9, 0x2e, 0x22, 0xa3, 0x88,
		0x6f, 0xf1, 0x09, 0x27, 0x9d, 0x98, 0x30, 0xda, 0xc7, 0x27,
		0xaf, 0xb9, 0x4a, 0x83, 0xee, 0x6d, 0x83, 0x60, 0xcb, 0xdf,
		0xa2, 0xcc, 0x06, 0x40};
	const struct bw_scrypt_cost cost = {1024, 8, 16};
	uint8_t got[64];

	(void)state;
	assert_int_equal(bw_scrypt("password", 8, (const uint8_t *)"NaCl", 4,
				   &cost, got, sizeof(got)),
			 0);
	assert_memory_equal(got, want, sizeof(want));
	/* another salt, another key */
	assert_int_equal(bw_scrypt("password", 8, (const uint8_t *)"NaCm", 4,
				   &cost, got, sizeof(got)),
			 0);
	assert_memory_not_equal(got, want, sizeof(want));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			keygen_spki_is_160_bytes_with_fixed_prefix_and_e_17),
		cmocka_unit_test(spki_round_trip_gives_the_same_bytes),
		cmocka_unit_test(spki_followed_by_zero_bytes_is_accepted),
		cmocka_unit_test(pkcs8_round_trip_gives_the_same_key),
		cmocka_unit_test(
			pkcs8_with_trailing_or_missing_bytes_is_rejected),
		cmocka_unit_test(
			pkcs8_from_the_openssl_command_is_read_and_decrypts),
		cmocka_unit_test(pkcs8_inner_key_is_read_strictly),
		cmocka_unit_test(public_only_key_has_no_pkcs8),
		cmocka_unit_test(spki_of_all_zeros_is_rejected),
		cmocka_unit_test(spki_of_random_bytes_is_rejected),
		cmocka_unit_test(spki_with_nonzero_trailing_byte_is_rejected),
		cmocka_unit_test(truncated_or_corrupt_spki_is_rejected),
		cmocka_unit_test(spki_of_2048_bit_key_is_rejected),
		cmocka_unit_test(spki_of_512_bit_key_is_rejected),
		cmocka_unit_test(spki_of_ec_key_is_rejected),
		cmocka_unit_test(key_with_e_65537_does_not_fit_the_field),
		cmocka_unit_test(oaep_round_trip_returns_the_plaintext),
		cmocka_unit_test(oaep_plaintext_over_86_bytes_is_too_big),
		cmocka_unit_test(oaep_decrypt_with_the_wrong_key_fails),
		cmocka_unit_test(oaep_decrypt_rejects_bad_ciphertexts),
		cmocka_unit_test(oaep_ciphertext_from_openssl_pkeyutl_decrypts),
		cmocka_unit_test(openssl_pkeyutl_decrypts_our_oaep_ciphertext),
		cmocka_unit_test(aes_cbc_matches_openssl_enc),
		cmocka_unit_test(openssl_enc_d_recovers_our_ciphertext),
		cmocka_unit_test(chained_aes_calls_equal_one_call),
		cmocka_unit_test(aes_cbc_rejects_partial_blocks),
		cmocka_unit_test(pkcs7_unpad_accepts_1_to_16),
		cmocka_unit_test(pkcs7_unpad_rejects_pad_0_and_above_16),
		cmocka_unit_test(pkcs7_unpad_rejects_inconsistent_pad_bytes),
		cmocka_unit_test(aes_cipher_len_is_16_times_n_over_16_plus_1),
		cmocka_unit_test(aes_seal_open_round_trip_0_to_100),
		cmocka_unit_test(aes_open_rejects_bad_sizes),
		cmocka_unit_test(aes_open_rejects_bad_padding),
		cmocka_unit_test(b64_matches_rfc4648_vectors),
		cmocka_unit_test(b64_round_trip_of_every_byte_value_and_length),
		cmocka_unit_test(b64_decode_ignores_white_space),
		cmocka_unit_test(b64_decode_rejects_invalid_input),
		cmocka_unit_test(b64_decode_does_not_read_past_the_end),
		cmocka_unit_test(b64_encode_matches_coreutils_base64),
		cmocka_unit_test(random_bytes_differ_between_calls),
		cmocka_unit_test(ct_equal_compares_contents),
		cmocka_unit_test(scrypt_matches_the_rfc_7914_vector),
		cmocka_unit_test(wipe_zeroes_and_secure_free_accepts_null),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
