/* RSA-1024 key pairs (e = 17), their SPKI and PKCS#8 encodings, and
 * RSA-OAEP (SHA-1), on OpenSSL 3 EVP. With crypto.c, the only OpenSSL user.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"

#define RSA_PUB_EXP    17
#define OAEP_SHA1_OVER 42 /* 2 * SHA-1 length + 2 */

struct bw_rsa {
	EVP_PKEY *pkey;
	/* OAEP encryption set up once, on the first use: setting up a context
	 * (fetches, parameters) costs about half the encryption itself */
	EVP_PKEY_CTX *enc;
};

/* Whatever OpenSSL queued about a failure is not reported through this API;
 * drop it so it does not surface later in an unrelated call. */
static int
ossl_fail(int rc)
{
	ERR_clear_error();
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
	k->enc = NULL;
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

/* pkey, a key read from outside, as check_rsa1024 wants it, wrapped into
 * *out; takes ownership of pkey either way. */
static int
rsa_wrap_checked(EVP_PKEY *pkey, struct bw_rsa **out)
{
	int rc = check_rsa1024(pkey);

	if (rc != 0) {
		EVP_PKEY_free(pkey);
		return rc;
	}
	return rsa_wrap(pkey, out);
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
	EVP_PKEY_CTX_free(k->enc);
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
	rc = rsa_wrap_checked(pkey, out);
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

/* One DER element with tag `tag` at *p, within end: its contents in
 * *val and *vlen, *p moved past it. Definite lengths of at most two bytes, in
 * their shortest form; a 1024-bit key needs no more. */
static int
der_take(const uint8_t **p, const uint8_t *end, uint8_t tag,
	 const uint8_t **val, size_t *vlen)
{
	const uint8_t *q = *p;
	size_t n, k, i;

	if (end - q < 2 || q[0] != tag)
		return -1;
	n = q[1];
	q += 2;
	if (n & 0x80) {
		k = n & 0x7f;
		if (k == 0 || k > 2 || (size_t)(end - q) < k)
			return -1;
		for (n = 0, i = 0; i < k; i++)
			n = n << 8 | q[i];
		q += k;
		if (n < 0x80 || (k == 2 && n < 0x100))
			return -1;
	}
	if ((size_t)(end - q) < n)
		return -1;
	*val = q;
	*vlen = n;
	*p = q + n;
	return 0;
}

/* A DER INTEGER that is not negative, as a BIGNUM in secure memory (wiped
 * when freed, and carried into the parameters the same way). */
static BIGNUM *
der_take_uint(const uint8_t **p, const uint8_t *end)
{
	const uint8_t *v;
	size_t n;
	BIGNUM *bn;

	if (der_take(p, end, 0x02, &v, &n) != 0 || n == 0 || n > INT_MAX ||
	    (v[0] & 0x80) != 0 || (n > 1 && v[0] == 0 && (v[1] & 0x80) == 0))
		return NULL;
	if ((bn = BN_secure_new()) == NULL)
		return NULL;
	if (BN_bin2bn(v, (int)n, bn) == NULL) {
		BN_clear_free(bn);
		return NULL;
	}
	return bn;
}

/* RSAPrivateKey (RFC 8017, A.1.2), two primes: version 0, then n, e, d, p,
 * q, d mod (p-1), d mod (q-1), q^-1 mod p, and nothing after. */
static EVP_PKEY *
rsa_from_private_key(const uint8_t *der, size_t len)
{
	static const char *const names[] = {
		OSSL_PKEY_PARAM_RSA_N,	       OSSL_PKEY_PARAM_RSA_E,
		OSSL_PKEY_PARAM_RSA_D,	       OSSL_PKEY_PARAM_RSA_FACTOR1,
		OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
		OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
	};
	enum { NPARTS = sizeof(names) / sizeof(names[0]) };
	const uint8_t *p = der, *end = der + len, *seq, *v;
	BIGNUM *bn[NPARTS] = {NULL};
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;
	size_t seq_len, n, i;

	if (der_take(&p, end, 0x30, &seq, &seq_len) != 0 || p != end)
		return NULL;
	p = seq;
	end = seq + seq_len;
	if (der_take(&p, end, 0x02, &v, &n) != 0 || n != 1 || v[0] != 0)
		return NULL;
	for (i = 0; i < NPARTS; i++) {
		if ((bn[i] = der_take_uint(&p, end)) == NULL)
			goto out;
	}
	if (p != end || (bld = OSSL_PARAM_BLD_new()) == NULL)
		goto out;
	for (i = 0; i < NPARTS; i++) {
		if (!OSSL_PARAM_BLD_push_BN(bld, names[i], bn[i]))
			goto out;
	}
	if ((params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
	    (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL ||
	    EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_KEYPAIR, params) <= 0) {
		EVP_PKEY_free(pkey);
		pkey = NULL;
	}
out:
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	for (i = 0; i < NPARTS; i++)
		BN_clear_free(bn[i]);
	return pkey;
}

/* PKCS#8 PrivateKeyInfo for rsaEncryption, its parameters NULL or absent.
 *
 * Not EVP_PKCS82PKEY: in OpenSSL 3.0 it sets up a decoder for every key
 * type and structure each call: 9.3 of the 20.7 million instructions of a
 * client's whole one-file send, where this takes 4.4 (3.2 of them the
 * process's first fetch of a key manager). OpenSSL still parses the outer
 * structure (and wipes its copy of the key when freed); the RSAPrivateKey
 * inside is nine integers, read above and handed to the key manager. */
int
bw_rsa_from_pkcs8(struct bw_rsa **out, const uint8_t *der, size_t len)
{
	const unsigned char *p = der, *pk;
	PKCS8_PRIV_KEY_INFO *p8 = NULL;
	const X509_ALGOR *alg;
	const ASN1_OBJECT *obj;
	EVP_PKEY *pkey = NULL;
	int pk_len, ptype, rc = BW_EBADKEY;

	*out = NULL;
	if (der == NULL || len == 0 || len > LONG_MAX)
		return BW_EBADKEY;
	if ((p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)len)) == NULL ||
	    (size_t)(p - der) != len)
		goto out;
	if (!PKCS8_pkey_get0(&obj, &pk, &pk_len, &alg, p8) || pk_len <= 0 ||
	    OBJ_obj2nid(obj) != NID_rsaEncryption)
		goto out;
	X509_ALGOR_get0(NULL, &ptype, NULL, alg);
	if (ptype != V_ASN1_NULL && ptype != V_ASN1_UNDEF)
		goto out;
	if ((pkey = rsa_from_private_key(pk, (size_t)pk_len)) == NULL)
		goto out;
	rc = rsa_wrap_checked(pkey, out);
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
 * set explicitly so that a changed default cannot change the wire format.
 * Given as parameters of the operation's init, not as one control call
 * each, which OpenSSL 3 translates to parameters at some cost. */
#define STR_PARAM(key, lit)                                                    \
	OSSL_PARAM_utf8_string(key, (char *)(lit), sizeof(lit) - 1)
static const OSSL_PARAM oaep_params[] = {
	STR_PARAM(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, OSSL_PKEY_RSA_PAD_MODE_OAEP),
	STR_PARAM(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, OSSL_DIGEST_NAME_SHA1),
	STR_PARAM(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, OSSL_DIGEST_NAME_SHA1),
	OSSL_PARAM_END,
};
#undef STR_PARAM

/* k's encryption context, made on the first call. The key is logically
 * const: the context only caches what every call would set up again. */
static EVP_PKEY_CTX *
enc_ctx(const struct bw_rsa *pub)
{
	struct bw_rsa *k = (struct bw_rsa *)pub;
	EVP_PKEY_CTX *ctx;

	if (k->enc != NULL)
		return k->enc;
	if ((ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL)) == NULL)
		return NULL;
	if (EVP_PKEY_encrypt_init_ex(ctx, oaep_params) <= 0) {
		EVP_PKEY_CTX_free(ctx);
		return NULL;
	}
	k->enc = ctx;
	return ctx;
}

int
bw_rsa_oaep_encrypt(const struct bw_rsa *pub, const uint8_t *in, size_t n,
		    uint8_t out[BW_RSA_CT_LEN])
{
	static const uint8_t empty[1];
	EVP_PKEY_CTX *ctx;
	size_t out_len = BW_RSA_CT_LEN;
	int rc = BW_ECRYPTO;

	if (n > BW_RSA_CT_LEN - OAEP_SHA1_OVER)
		return BW_ETOOBIG;
	if (EVP_PKEY_get_bits(pub->pkey) != BW_RSA_BITS)
		return BW_EBADKEY;
	if ((ctx = enc_ctx(pub)) == NULL)
		goto out;
	if (EVP_PKEY_encrypt(ctx, out, &out_len, n > 0 ? in : empty, n) <= 0 ||
	    out_len != BW_RSA_CT_LEN)
		goto out;
	rc = 0;
out:
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
	if (EVP_PKEY_decrypt_init_ex(ctx, oaep_params) <= 0)
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
