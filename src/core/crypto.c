/* Every cryptographic primitive Bulwark uses, on OpenSSL 3 EVP: RSA-1024 key
 * pairs and their SPKI/PKCS#8 encodings, RSA-OAEP, AES-128-CBC with PKCS#7,
 * random bytes, wiping, constant-time comparison and base64.
 */
#include <limits.h>
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

#define RSA_PUB_EXP    17
#define OAEP_SHA1_OVER 42	 /* 2 * SHA-1 length + 2 */
#define AES_CHUNK      (1 << 30) /* EVP lengths are int */

struct bw_rsa {
	EVP_PKEY *pkey;
};

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

/* ---- RSA ---- */

/* Takes ownership of pkey, also on failure. */
static int
rsa_wrap(EVP_PKEY *pkey, struct bw_rsa **out)
{
	struct bw_rsa *k;

	if ((k = malloc(sizeof(*k))) == NULL) {
		EVP_PKEY_free(pkey);
		return BW_ENOMEM;
	}
	k->pkey = pkey;
	*out = k;
	return 0;
}

/* An RSA (not RSA-PSS) key with a 1024-bit modulus, an odd modulus and an odd
 * public exponent above 1 (e = 1 would make encryption the identity). */
static int
check_rsa1024(EVP_PKEY *pkey)
{
	BIGNUM *n = NULL, *e = NULL;
	int rc = BW_EBADKEY;

	if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA ||
	    EVP_PKEY_get_bits(pkey) != BW_RSA_BITS)
		goto out;
	if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n) ||
	    !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e))
		goto out;
	if (!BN_is_odd(n) || !BN_is_odd(e) || BN_is_one(e))
		goto out;
	rc = 0;
out:
	BN_free(n);
	BN_free(e);
	return rc == 0 ? 0 : ossl_fail(rc);
}

int
bw_rsa_generate(struct bw_rsa **out)
{
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;
	BIGNUM *e = NULL;
	int rc = BW_ECRYPTO;

	*out = NULL;
	if ((ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL ||
	    (e = BN_new()) == NULL || !BN_set_word(e, RSA_PUB_EXP))
		goto out;
	if (EVP_PKEY_keygen_init(ctx) <= 0 ||
	    EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, BW_RSA_BITS) <= 0 ||
	    EVP_PKEY_CTX_set1_rsa_keygen_pubexp(ctx, e) <= 0 ||
	    EVP_PKEY_generate(ctx, &pkey) <= 0)
		goto out;
	rc = rsa_wrap(pkey, out);
	pkey = NULL;
out:
	EVP_PKEY_free(pkey);
	BN_free(e);
	EVP_PKEY_CTX_free(ctx);
	return rc == 0 ? 0 : ossl_fail(rc);
}

void
bw_rsa_free(struct bw_rsa *k)
{
	if (k == NULL)
		return;
	EVP_PKEY_free(k->pkey);
	free(k);
}

int
bw_rsa_from_spki(struct bw_rsa **out, const uint8_t *der, size_t len)
{
	const unsigned char *p = der;
	EVP_PKEY *pkey = NULL;
	size_t i, used;
	int rc = BW_EBADKEY;

	*out = NULL;
	if (der == NULL || len == 0 || len > LONG_MAX)
		return BW_EBADKEY;
	if ((pkey = d2i_PUBKEY(NULL, &p, (long)len)) == NULL)
		goto out;
	used = (size_t)(p - der);
	if (used > len)
		goto out;
	for (i = used; i < len; i++) {
		if (der[i] != 0)
			goto out;
	}
	if ((rc = check_rsa1024(pkey)) != 0)
		goto out;
	rc = rsa_wrap(pkey, out);
	pkey = NULL;
out:
	EVP_PKEY_free(pkey);
	return rc == 0 ? 0 : ossl_fail(rc);
}

int
bw_rsa_to_spki(const struct bw_rsa *k, uint8_t out[BW_RSA_PUB_LEN])
{
	unsigned char *p = out;
	int len;

	if ((len = i2d_PUBKEY(k->pkey, NULL)) <= 0)
		return ossl_fail(BW_ECRYPTO);
	if (len > BW_RSA_PUB_LEN)
		return BW_ETOOBIG;
	memset(out, 0, BW_RSA_PUB_LEN);
	if (i2d_PUBKEY(k->pkey, &p) != len) {
		memset(out, 0, BW_RSA_PUB_LEN);
		return ossl_fail(BW_ECRYPTO);
	}
	return 0;
}

int
bw_rsa_from_pkcs8(struct bw_rsa **out, const uint8_t *der, size_t len)
{
	const unsigned char *p = der;
	PKCS8_PRIV_KEY_INFO *p8 = NULL;
	EVP_PKEY *pkey = NULL;
	int rc = BW_EBADKEY;

	*out = NULL;
	if (der == NULL || len == 0 || len > LONG_MAX)
		return BW_EBADKEY;
	if ((p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)len)) == NULL ||
	    (size_t)(p - der) != len)
		goto out;
	if ((pkey = EVP_PKCS82PKEY(p8)) == NULL)
		goto out;
	if ((rc = check_rsa1024(pkey)) != 0)
		goto out;
	rc = rsa_wrap(pkey, out);
	pkey = NULL;
out:
	EVP_PKEY_free(pkey);
	PKCS8_PRIV_KEY_INFO_free(p8);
	return rc == 0 ? 0 : ossl_fail(rc);
}

int
bw_rsa_to_pkcs8(const struct bw_rsa *k, uint8_t **der, size_t *len)
{
	PKCS8_PRIV_KEY_INFO *p8 = NULL;
	unsigned char *buf = NULL, *p;
	size_t cap = 0;
	int n, rc = BW_EBADKEY;

	*der = NULL;
	*len = 0;
	/* Fails for a key without its private half. */
	if ((p8 = EVP_PKEY2PKCS8(k->pkey)) == NULL)
		goto out;
	rc = BW_ECRYPTO;
	if ((n = i2d_PKCS8_PRIV_KEY_INFO(p8, NULL)) <= 0)
		goto out;
	cap = (size_t)n;
	if ((buf = malloc(cap)) == NULL) {
		rc = BW_ENOMEM;
		goto out;
	}
	p = buf;
	if (i2d_PKCS8_PRIV_KEY_INFO(p8, &p) != n)
		goto out;
	*der = buf;
	*len = cap;
	buf = NULL;
	rc = 0;
out:
	bw_secure_free(buf, cap);
	PKCS8_PRIV_KEY_INFO_free(p8);
	return rc == 0 ? 0 : ossl_fail(rc);
}

/* SHA-1 for both the label hash and MGF1, empty label: OpenSSL's defaults,
 * set explicitly so that a changed default cannot change the wire format. */
static int
oaep_params(EVP_PKEY_CTX *ctx)
{
	return EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) > 0 &&
	       EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha1()) > 0 &&
	       EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha1()) > 0;
}

int
bw_rsa_oaep_encrypt(const struct bw_rsa *pub, const uint8_t *in, size_t n,
		    uint8_t out[BW_RSA_CT_LEN])
{
	static const uint8_t empty[1];
	EVP_PKEY_CTX *ctx = NULL;
	size_t out_len = BW_RSA_CT_LEN;
	int rc = BW_ECRYPTO;

	if (n > BW_RSA_CT_LEN - OAEP_SHA1_OVER)
		return BW_ETOOBIG;
	if (EVP_PKEY_get_bits(pub->pkey) != BW_RSA_BITS)
		return BW_EBADKEY;
	if ((ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pub->pkey, NULL)) == NULL)
		goto out;
	if (EVP_PKEY_encrypt_init(ctx) <= 0 || !oaep_params(ctx))
		goto out;
	if (EVP_PKEY_encrypt(ctx, out, &out_len, n > 0 ? in : empty, n) <= 0 ||
	    out_len != BW_RSA_CT_LEN)
		goto out;
	rc = 0;
out:
	EVP_PKEY_CTX_free(ctx);
	if (rc != 0)
		memset(out, 0, BW_RSA_CT_LEN);
	return rc == 0 ? 0 : ossl_fail(rc);
}

int
bw_rsa_oaep_decrypt(const struct bw_rsa *priv, const uint8_t *in, size_t n,
		    uint8_t *out, size_t cap, size_t *out_len)
{
	/* OpenSSL wants room for a whole modulus, more than OAEP can carry. */
	uint8_t tmp[BW_RSA_CT_LEN];
	size_t tmp_len = sizeof(tmp);
	EVP_PKEY_CTX *ctx = NULL;
	int rc = BW_ECRYPTO;

	*out_len = 0;
	if (n != BW_RSA_CT_LEN)
		return BW_ECRYPTO;
	if (EVP_PKEY_get_bits(priv->pkey) != BW_RSA_BITS)
		return BW_EBADKEY;
	if ((ctx = EVP_PKEY_CTX_new_from_pkey(NULL, priv->pkey, NULL)) == NULL)
		goto out;
	if (EVP_PKEY_decrypt_init(ctx) <= 0 || !oaep_params(ctx))
		goto out;
	if (EVP_PKEY_decrypt(ctx, tmp, &tmp_len, in, n) <= 0 ||
	    tmp_len > sizeof(tmp))
		goto out;
	if (tmp_len > cap) {
		rc = BW_ETOOBIG;
		goto out;
	}
	if (tmp_len > 0)
		memcpy(out, tmp, tmp_len);
	*out_len = tmp_len;
	rc = 0;
out:
	OPENSSL_cleanse(tmp, sizeof(tmp));
	EVP_PKEY_CTX_free(ctx);
	return rc == 0 ? 0 : ossl_fail(rc);
}

/* ---- AES-128-CBC ---- */

int
bw_aes_new(struct bw_aes **out, const uint8_t key[BW_AES_KEY_LEN], int encrypt)
{
	static const uint8_t zero_iv[BW_AES_BLOCK];
	struct bw_aes *a;
	int ok;

	*out = NULL;
	if ((a = malloc(sizeof(*a))) == NULL)
		return BW_ENOMEM;
	a->encrypt = encrypt != 0;
	if ((a->ctx = EVP_CIPHER_CTX_new()) == NULL) {
		free(a);
		return ossl_fail(BW_ENOMEM);
	}
	if (a->encrypt)
		ok = EVP_EncryptInit_ex2(a->ctx, EVP_aes_128_cbc(), key,
					 zero_iv, NULL);
	else
		ok = EVP_DecryptInit_ex2(a->ctx, EVP_aes_128_cbc(), key,
					 zero_iv, NULL);
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
