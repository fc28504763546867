/* Every cryptographic primitive Bulwark uses, on OpenSSL 3 EVP: AES-128-CBC
 * with PKCS#7, SHA-256, scrypt, random bytes, wiping and constant-time
 * comparison here; RSA-1024 key pairs, their SPKI/PKCS#8 encodings and
 * RSA-OAEP in crypto_rsa.c. These two files are the only OpenSSL users.
 */
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"

#define AES_CHUNK (1 << 30) /* EVP lengths are int */

struct bw_aes {
	EVP_CIPHER_CTX *ctx;
	int encrypt;
};

/* Constant-time helpers on values below 2^31: 1 when the relation holds,
 * else 0, with no branch on the operands. */
static unsigned int
ct_lt(unsigned int a, unsigned int b)
{
	return (a - b) >> (sizeof(unsigned int) * CHAR_BIT - 1);
}

static unsigned int
ct_ne(unsigned int a, unsigned int b)
{
	unsigned int x = a ^ b;

	return (x | (0u - x)) >> (sizeof(unsigned int) * CHAR_BIT - 1);
}

/* Whatever OpenSSL queued about a failure is not reported through this API;
 * drop it so it does not surface later in an unrelated call. */
static int
ossl_fail(int rc)
{
	ERR_clear_error();
	return rc;
}

void
bw_crypto_start(int read_config)
{
	uint64_t opts = OPENSSL_INIT_NO_ATEXIT;

	opts |= read_config ? OPENSSL_INIT_LOAD_CONFIG
			    : OPENSSL_INIT_NO_LOAD_CONFIG;
	(void)OPENSSL_init_crypto(opts, NULL);
}

void
bw_wipe(void *p, size_t n)
{
	/* explicit_bzero is memset at memory speed that the compiler may not
	 * drop; OPENSSL_cleanse goes byte by byte. */
	if (p != NULL && n > 0)
		explicit_bzero(p, n);
}

void
bw_secure_free(void *p, size_t n)
{
	if (p == NULL)
		return;
	bw_wipe(p, n);
	free(p);
}

int
bw_ct_equal(const void *a, const void *b, size_t n)
{
	if (n == 0)
		return 1;
	return CRYPTO_memcmp(a, b, n) == 0;
}

int
bw_random(void *p, size_t n)
{
	unsigned char *q = p;

	while (n > 0) {
		int chunk = n > INT_MAX ? INT_MAX : (int)n;

		if (RAND_bytes(q, chunk) != 1)
			return ossl_fail(BW_ECRYPTO);
		q += chunk;
		n -= (size_t)chunk;
	}
	return 0;
}

int
bw_sha256(const void *p, size_t n, uint8_t out[BW_SHA256_LEN])
{
	unsigned int len = 0;

	if (EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) != 1 ||
	    len != BW_SHA256_LEN)
		return ossl_fail(BW_ECRYPTO);
	return 0;
}

int
bw_md5(const void *p, size_t n, uint8_t out[BW_MD5_LEN])
{
	unsigned int len = 0;

	if (EVP_Digest(p, n, out, &len, EVP_md5(), NULL) != 1 ||
	    len != BW_MD5_LEN)
		return ossl_fail(BW_ECRYPTO);
	return 0;
}

struct bw_sha256_ctx {
	EVP_MD_CTX *md;
};

int
bw_sha256_new(struct bw_sha256_ctx **out)
{
	struct bw_sha256_ctx *c = calloc(1, sizeof(*c));

	*out = NULL;
	if (c == NULL)
		return BW_ENOMEM;
	if ((c->md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1) {
		bw_sha256_free(c);
		return ossl_fail(BW_ECRYPTO);
	}
	*out = c;
	return 0;
}

int
bw_sha256_update(struct bw_sha256_ctx *c, const void *p, size_t n)
{
	if (EVP_DigestUpdate(c->md, p, n) != 1)
		return ossl_fail(BW_ECRYPTO);
	return 0;
}

int
bw_sha256_final(struct bw_sha256_ctx *c, uint8_t out[BW_SHA256_LEN])
{
	unsigned int len = 0;

	if (EVP_DigestFinal_ex(c->md, out, &len) != 1 || len != BW_SHA256_LEN ||
	    EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1)
		return ossl_fail(BW_ECRYPTO);
	return 0;
}

void
bw_sha256_free(struct bw_sha256_ctx *c)
{
	if (c == NULL)
		return;
	EVP_MD_CTX_free(c->md);
	free(c);
}

/* ---- passwords ---- */

int
bw_scrypt(const void *pw, size_t n, const uint8_t *salt, size_t salt_n,
	  const struct bw_scrypt_cost *cost, uint8_t *out, size_t out_n)
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL);
	EVP_KDF_CTX *ctx = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
	uint64_t N = cost->n;
	uint32_t r = cost->r, p = cost->p;
	/* N * r * 128 bytes of memory, plus room for the rest */
	uint64_t maxmem = N * r * 128u + 1024u * 1024u;
	OSSL_PARAM params[7], *q = params;
	int rc = 0;

	*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD,
						 (void *)pw, n);
	*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
						 (void *)salt, salt_n);
	*q++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &N);
	*q++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r);
	*q++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &p);
	*q++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM,
					   &maxmem);
	*q = OSSL_PARAM_construct_end();
	if (ctx == NULL || EVP_KDF_derive(ctx, out, out_n, params) != 1)
		rc = ossl_fail(BW_ECRYPTO);
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	return rc;
}

/* ---- AES-128-CBC ---- */

/* AES-128-CBC fetched once for the process: EVP_aes_128_cbc() names it
 * without an implementation, and every init then looks one up again in
 * the provider's store (a lock and a hash lookup per upload). Kept for the
 * process's life; NULL if the fetch failed, and then every init fails. */
static EVP_CIPHER *aes_cbc;
static pthread_once_t aes_cbc_once = PTHREAD_ONCE_INIT;

static void
aes_cbc_fetch(void)
{
	aes_cbc = EVP_CIPHER_fetch(NULL, "AES-128-CBC", NULL);
}

int
bw_aes_new(struct bw_aes **out, const uint8_t key[BW_AES_KEY_LEN], int encrypt)
{
	static const uint8_t zero_iv[BW_AES_BLOCK];
	struct bw_aes *a;
	int ok;

	*out = NULL;
	if (pthread_once(&aes_cbc_once, aes_cbc_fetch) != 0 || aes_cbc == NULL)
		return ossl_fail(BW_ECRYPTO);
	if ((a = malloc(sizeof(*a))) == NULL)
		return BW_ENOMEM;
	a->encrypt = encrypt != 0;
	if ((a->ctx = EVP_CIPHER_CTX_new()) == NULL) {
		free(a);
		return ossl_fail(BW_ENOMEM);
	}
	if (a->encrypt)
		ok = EVP_EncryptInit_ex2(a->ctx, aes_cbc, key, zero_iv, NULL);
	else
		ok = EVP_DecryptInit_ex2(a->ctx, aes_cbc, key, zero_iv, NULL);
	if (ok != 1 || EVP_CIPHER_CTX_set_padding(a->ctx, 0) != 1) {
		bw_aes_free(a);
		return ossl_fail(BW_ECRYPTO);
	}
	*out = a;
	return 0;
}

void
bw_aes_free(struct bw_aes *a)
{
	if (a == NULL)
		return;
	/* Frees and cleanses the expanded key and the chaining block. */
	EVP_CIPHER_CTX_free(a->ctx);
	free(a);
}

int
bw_aes_cbc_to(struct bw_aes *a, const uint8_t *in, uint8_t *out, size_t n)
{
	if (n % BW_AES_BLOCK != 0)
		return BW_ESIZE;
	while (n > 0) {
		/* AES_CHUNK is a multiple of the block size. */
		int chunk = n > AES_CHUNK ? AES_CHUNK : (int)n;
		int done = 0, ok;

		if (a->encrypt)
			ok = EVP_EncryptUpdate(a->ctx, out, &done, in, chunk);
		else
			ok = EVP_DecryptUpdate(a->ctx, out, &done, in, chunk);
		if (ok != 1 || done != chunk)
			return ossl_fail(BW_ECRYPTO);
		in += chunk;
		out += chunk;
		n -= (size_t)chunk;
	}
	return 0;
}

int
bw_aes_cbc(struct bw_aes *a, uint8_t *buf, size_t n)
{
	return bw_aes_cbc_to(a, buf, buf, n);
}

void
bw_pkcs7_pad(uint8_t block[BW_AES_BLOCK], size_t used)
{
	size_t i;

	for (i = used; i < BW_AES_BLOCK; i++)
		block[i] = (uint8_t)(BW_AES_BLOCK - used);
}

int
bw_pkcs7_unpad(const uint8_t block[BW_AES_BLOCK], size_t *pad)
{
	unsigned int p = block[BW_AES_BLOCK - 1];
	unsigned int bad, i;

	bad = ct_lt(p, 1) | ct_lt(BW_AES_BLOCK, p);
	/* Byte i belongs to the padding when 15 - i < p; each must equal p. */
	for (i = 0; i < BW_AES_BLOCK; i++)
		bad |= ct_lt(BW_AES_BLOCK - 1 - i, p) & ct_ne(block[i], p);
	*pad = 0;
	if (bad)
		return BW_EPADDING;
	*pad = p;
	return 0;
}

uint64_t
bw_aes_cipher_len(uint64_t n)
{
	return BW_AES_BLOCK * (n / BW_AES_BLOCK + 1);
}

int
bw_aes_seal(const uint8_t key[BW_AES_KEY_LEN], const uint8_t *in, size_t n,
	    uint8_t **out, size_t *out_len)
{
	struct bw_aes *a = NULL;
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc;

	*out = NULL;
	*out_len = 0;
	if (n > SIZE_MAX - 2 * BW_AES_BLOCK)
		return BW_ETOOBIG;
	len = (size_t)bw_aes_cipher_len(n);
	if ((buf = malloc(len)) == NULL)
		return BW_ENOMEM;
	if (n > 0)
		memcpy(buf, in, n);
	bw_pkcs7_pad(buf + (n - n % BW_AES_BLOCK), n % BW_AES_BLOCK);
	if ((rc = bw_aes_new(&a, key, 1)) != 0)
		goto out;
	if ((rc = bw_aes_cbc(a, buf, len)) != 0)
		goto out;
	*out = buf;
	*out_len = len;
	buf = NULL;
out:
	bw_aes_free(a);
	bw_secure_free(buf, len);
	return rc;
}

int
bw_aes_open(const uint8_t key[BW_AES_KEY_LEN], const uint8_t *in, size_t n,
	    uint8_t **out, size_t *out_len)
{
	struct bw_aes *a = NULL;
	uint8_t *buf = NULL;
	size_t pad = 0;
	int rc;

	*out = NULL;
	*out_len = 0;
	if (n == 0 || n % BW_AES_BLOCK != 0)
		return BW_ESIZE;
	if ((buf = malloc(n)) == NULL)
		return BW_ENOMEM;
	memcpy(buf, in, n);
	if ((rc = bw_aes_new(&a, key, 0)) != 0)
		goto out;
	if ((rc = bw_aes_cbc(a, buf, n)) != 0)
		goto out;
	if ((rc = bw_pkcs7_unpad(buf + n - BW_AES_BLOCK, &pad)) != 0)
		goto out;
	bw_wipe(buf + n - pad, pad);
	*out = buf;
	*out_len = n - pad;
	buf = NULL;
out:
	bw_aes_free(a);
	bw_secure_free(buf, n);
	return rc;
}
