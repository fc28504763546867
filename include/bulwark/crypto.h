/* Every cryptographic primitive Bulwark uses, behind one header; crypto.c is
 * the only file that includes OpenSSL. RSA-1024 keys with e = 17 (so the SPKI
 * DER is 160 bytes), RSA-OAEP with SHA-1, AES-128-CBC with a zero IV.
 */
#ifndef BULWARK_CRYPTO_H
#define BULWARK_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/err.h"

#define BW_RSA_BITS    1024
#define BW_RSA_PUB_LEN 160 /* public key field on the wire */
#define BW_RSA_CT_LEN  128 /* RSA-OAEP ciphertext of a 1024-bit key */
#define BW_AES_KEY_LEN 16
#define BW_AES_BLOCK   16

struct bw_rsa; /* an RSA key pair or public key */

/* Generates an RSA-1024 key pair with public exponent 17. */
int bw_rsa_generate(struct bw_rsa **out) BW_WUR;
void bw_rsa_free(struct bw_rsa *k);

/* Parses a public-key field: the X.509 SubjectPublicKeyInfo DER of an RSA key
 * with a 1024-bit modulus, followed by nothing but zero bytes up to len.
 * Anything else is BW_EBADKEY. */
int bw_rsa_from_spki(struct bw_rsa **out, const uint8_t *der,
		     size_t len) BW_WUR;
/* Writes the SPKI DER into out[BW_RSA_PUB_LEN], zero-padded; BW_ETOOBIG if
 * it does not fit (e.g. e = 65537). */
int bw_rsa_to_spki(const struct bw_rsa *k, uint8_t out[BW_RSA_PUB_LEN]) BW_WUR;
/* PKCS#8 DER private key. bw_rsa_to_pkcs8 allocates *der; the caller wipes
 * and frees it with bw_secure_free(*der, *len). */
int bw_rsa_from_pkcs8(struct bw_rsa **out, const uint8_t *der,
		      size_t len) BW_WUR;
int bw_rsa_to_pkcs8(const struct bw_rsa *k, uint8_t **der, size_t *len) BW_WUR;

/* RSA-OAEP (SHA-1, MGF1-SHA-1, empty label). Encrypting needs a 1024-bit key
 * and writes exactly BW_RSA_CT_LEN bytes. Decrypting writes at most cap bytes
 * and sets *out_len. A key keeps its encryption set up between calls, so one
 * key is not to be used to encrypt from two threads at once. */
int bw_rsa_oaep_encrypt(const struct bw_rsa *pub, const uint8_t *in, size_t n,
			uint8_t out[BW_RSA_CT_LEN]) BW_WUR;
int bw_rsa_oaep_decrypt(const struct bw_rsa *priv, const uint8_t *in, size_t n,
			uint8_t *out, size_t cap, size_t *out_len) BW_WUR;

/* Raw AES-128-CBC with a zero IV and no padding, chained across calls. */
struct bw_aes;
int bw_aes_new(struct bw_aes **out, const uint8_t key[BW_AES_KEY_LEN],
	       int encrypt) BW_WUR;
void bw_aes_free(struct bw_aes *a);
/* Encrypts or decrypts n bytes in place; n must be a multiple of 16
 * (BW_ESIZE otherwise). */
int bw_aes_cbc(struct bw_aes *a, uint8_t *buf, size_t n) BW_WUR;
/* The same from in to out, which must not overlap. */
int bw_aes_cbc_to(struct bw_aes *a, const uint8_t *in, uint8_t *out,
		  size_t n) BW_WUR;

/* PKCS#7 on the final block: pad fills block[used..15] with 16 - used (used
 * < 16); unpad checks a decrypted final block in constant time and sets *pad
 * to 1..16, or returns BW_EPADDING. */
void bw_pkcs7_pad(uint8_t block[BW_AES_BLOCK], size_t used);
int bw_pkcs7_unpad(const uint8_t block[BW_AES_BLOCK], size_t *pad) BW_WUR;
/* Ciphertext size of n plaintext bytes: 16 * (n / 16 + 1). */
uint64_t bw_aes_cipher_len(uint64_t n);

/* Whole-buffer AES-128-CBC + PKCS#7 for short messages. Encrypt allocates
 * *out (bw_aes_cipher_len(n) bytes); decrypt allocates the plaintext. The
 * caller frees with bw_secure_free. */
int bw_aes_seal(const uint8_t key[BW_AES_KEY_LEN], const uint8_t *in, size_t n,
		uint8_t **out, size_t *out_len) BW_WUR;
int bw_aes_open(const uint8_t key[BW_AES_KEY_LEN], const uint8_t *in, size_t n,
		uint8_t **out, size_t *out_len) BW_WUR;

/* SHA-256 of n bytes (key fingerprints). */
/* scrypt (RFC 7914): N (a power of two), r, p. */
struct bw_scrypt_cost {
	uint64_t n;
	uint32_t r, p;
};
/* Derives out_n bytes from the password and salt. Uses n * r * 128 bytes
 * of memory and the CPU to match: meant for a worker thread. */
int bw_scrypt(const void *pw, size_t n, const uint8_t *salt, size_t salt_n,
	      const struct bw_scrypt_cost *cost, uint8_t *out,
	      size_t out_n) BW_WUR;

#define BW_SHA256_LEN 32
int bw_sha256(const void *p, size_t n, uint8_t out[BW_SHA256_LEN]) BW_WUR;
/* MD5, for S3's ETags only (what a store says a multipart object is):
 * never for anything secret. */
#define BW_MD5_LEN 16
int bw_md5(const void *p, size_t n, uint8_t out[BW_MD5_LEN]) BW_WUR;
/* SHA-256 of a stream (a stored object's part as it is written). */
struct bw_sha256_ctx;
int bw_sha256_new(struct bw_sha256_ctx **out) BW_WUR;
int bw_sha256_update(struct bw_sha256_ctx *c, const void *p, size_t n) BW_WUR;
/* The digest of what was fed since new or the last final; then c starts
 * over. */
int bw_sha256_final(struct bw_sha256_ctx *c, uint8_t out[BW_SHA256_LEN]) BW_WUR;
void bw_sha256_free(struct bw_sha256_ctx *c);

/* Starts OpenSSL, reading its configuration file (openssl.cnf) only if
 * read_config is set. Nothing of Bulwark's is configured there, and a
 * short-lived client spends ~0.3 ms reading and parsing it. Optional: the
 * first OpenSSL call starts it otherwise, with the file.
 *
 * OpenSSL's exit handler is left out: at exit it frees every table it built
 * (0.5 ms of a one-file send), memory the process's end returns anyway.
 * Nothing is lost: it holds no buffered output, and keys are wiped by
 * their owners' bw_rsa_free, not by it. */
void bw_crypto_start(int read_config);

/* Cryptographically secure random bytes. */
int bw_random(void *p, size_t n) BW_WUR;
/* Zeroes memory in a way the compiler keeps. */
void bw_wipe(void *p, size_t n);
/* Wipes n bytes at p, then frees p. NULL-safe. */
void bw_secure_free(void *p, size_t n);
/* 1 if equal, in time independent of the contents. */
int bw_ct_equal(const void *a, const void *b, size_t n);

/* Base64 (standard alphabet, with padding). Encode allocates a NUL-terminated
 * single line. Decode skips ASCII white space anywhere and allocates the
 * bytes; anything else that is not base64 is BW_EPROTO. Free both with
 * bw_secure_free (decoded keys are secrets). */
int bw_b64_encode(const uint8_t *in, size_t n, char **out) BW_WUR;
int bw_b64_decode(const char *in, size_t n, uint8_t **out,
		  size_t *out_len) BW_WUR;

#endif
