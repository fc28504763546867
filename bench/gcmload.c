/* The cipher's own work in a TLS upload, alone: AES-128-GCM over SIZE MiB in
 * TLS 1.3 records (16 KiB of data, a nonce, 5 bytes of header as additional
 * data and a 16-byte tag each), through EVP as libssl calls it, encrypting
 * or decrypting. tlsbench.py runs one of each beside a plain upload: what a
 * TLS upload could take on these cores if the records cost nothing but
 * their cipher. Prints the seconds and GB/s; not part of the test suite.
 *
 *   gcmload [--decrypt] SIZE_MIB
 */
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_clock.h"

#define REC	  16384u
#define RECS	  64u /* a 1 MiB ring of records, as a stream passes */
#define TAG_LEN	  16u
#define NONCE_LEN 12u

/* One record: its nonce from seq (as TLS 1.3 makes it), its header as
 * additional data. 0, or -1 if OpenSSL refused (a bad tag). */
static int
record(EVP_CIPHER_CTX *ctx, int enc, uint64_t seq, const uint8_t *in,
       uint8_t *out, uint8_t tag[TAG_LEN])
{
	static const uint8_t iv0[NONCE_LEN] = {1, 2, 3, 4,  5,	6,
					       7, 8, 9, 10, 11, 12};
	uint8_t iv[NONCE_LEN], hdr[5] = {23, 3, 3, (REC + TAG_LEN + 1) >> 8,
					 (REC + TAG_LEN + 1) & 0xff};
	int n, i;

	memcpy(iv, iv0, sizeof(iv));
	for (i = 0; i < 8; i++)
		iv[NONCE_LEN - 1 - i] ^= (uint8_t)(seq >> (8 * i));
	if (EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv, enc) != 1 ||
	    (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN,
					 tag) != 1) ||
	    EVP_CipherUpdate(ctx, NULL, &n, hdr, sizeof(hdr)) != 1 ||
	    EVP_CipherUpdate(ctx, out, &n, in, REC) != 1 ||
	    EVP_CipherFinal_ex(ctx, out + n, &n) != 1)
		return -1;
	if (enc &&
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) != 1)
		return -1;
	return 0;
}

int
main(int argc, char **argv)
{
	static uint8_t plain[RECS][REC], sealed[RECS][REC], out[REC];
	static uint8_t tags[RECS][TAG_LEN];
	static const uint8_t key[16] = {42};
	int dec = argc == 3 && strcmp(argv[1], "--decrypt") == 0;
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	EVP_CIPHER *gcm = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
	uint64_t recs, i;
	double t0, t;
	long mib;

	if (argc != 2 + dec || (mib = strtol(argv[1 + dec], NULL, 10)) <= 0) {
		fprintf(stderr, "usage: gcmload [--decrypt] SIZE_MIB\n");
		return 2;
	}
	if (ctx == NULL || gcm == NULL ||
	    EVP_CipherInit_ex(ctx, gcm, NULL, key, NULL, 1) != 1) {
		fprintf(stderr, "gcmload: no AES-128-GCM\n");
		return 1;
	}
	for (i = 0; i < RECS; i++) {
		memset(plain[i], (int)i, REC);
		if (record(ctx, 1, i, plain[i], sealed[i], tags[i]) != 0)
			return 1;
	}
	recs = (uint64_t)mib * (1024u * 1024u / REC);
	t0 = bench_now_s();
	for (i = 0; i < recs; i++) {
		/* decrypting: the records sealed above, each with its own
		 * sequence number, so that every tag is checked and holds */
		if (dec ? record(ctx, 0, i % RECS, sealed[i % RECS], out,
				 tags[i % RECS])
			: record(ctx, 1, i, plain[i % RECS], sealed[i % RECS],
				 tags[i % RECS])) {
			fprintf(stderr, "gcmload: record %llu refused\n",
				(unsigned long long)i);
			return 1;
		}
	}
	t = bench_now_s() - t0;
	printf("%s %ld MiB in %.3f s (%.2f GB/s)\n",
	       dec ? "decrypt" : "encrypt", mib, t,
	       (double)mib * 1048576.0 / t / 1e9);
	EVP_CIPHER_free(gcm);
	EVP_CIPHER_CTX_free(ctx);
	return 0;
}
