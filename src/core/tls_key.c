/* The server's TLS key when the operator gives none (a P-256 key and a
 * self-signed certificate, made once in the data directory) and the
 * fingerprints by which people compare keys (bulwark/tls.h).
 *
 * P-256 rather than Ed25519: every TLS stack a user may point at the port
 * (Java, Go, browsers' tooling, stunnel, older phones) verifies an ECDSA
 * P-256 certificate, while Ed25519 certificates are still refused by
 * several; a signature costs tens of microseconds either way.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bulwark/fsutil.h"
#include "tls_int.h"

#define CERT_DAYS (100L * 365L)

int
tls_pkey_fingerprint(EVP_PKEY *pk, char fp[BW_TLS_FP_CAP])
{
	unsigned char md[32], b64[48];
	unsigned char *der = NULL;
	unsigned int mdlen = 0;
	int n, len;

	if ((n = i2d_PUBKEY(pk, &der)) <= 0)
		return -1;
	if (EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha256(), NULL) != 1) {
		OPENSSL_free(der);
		return -1;
	}
	OPENSSL_free(der);
	len = EVP_EncodeBlock(b64, md, (int)mdlen);
	while (len > 0 && b64[len - 1] == '=')
		len--; /* OpenSSH prints it unpadded */
	snprintf(fp, BW_TLS_FP_CAP, "SHA256:%.*s", len, (const char *)b64);
	return 0;
}

/* The PEM text of what write() puts in a memory BIO, written to path
 * atomically with mode. */
static int
write_pem(const char *path, mode_t mode, int (*write)(BIO *, void *), void *obj)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p = NULL;
	long n;
	int rc;

	if (b == NULL)
		return BW_ENOMEM;
	if (write(b, obj) != 1 || (n = BIO_get_mem_data(b, &p)) <= 0) {
		BIO_free(b);
		return BW_ECRYPTO;
	}
	rc = bw_fs_write_atomic(path, p, (size_t)n, mode);
	BIO_free(b); /* clears the key's text (BIO_s_mem frees, a PEM is
			not secret enough to need more than the file's mode) */
	return rc;
}

static int
pem_key(BIO *b, void *pk)
{
	return PEM_write_bio_PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL);
}

static int
pem_cert(BIO *b, void *x)
{
	return PEM_write_bio_X509(b, x);
}

static int
add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	if ((ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value)) == NULL)
		return -1;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok == 1 ? 0 : -1;
}

/* A self-signed certificate for pk, named cn: a server's (and localhost,
 * 127.0.0.1 and ::1, so a client on the machine checks it by name too) or
 * a client's. */
static X509 *
self_signed(EVP_PKEY *pk, const char *cn, int client)
{
	unsigned char serial[16];
	char san[300];
	X509 *x = X509_new();
	X509_NAME *name;
	BIGNUM *bn = NULL;

	if (x == NULL || RAND_bytes(serial, sizeof(serial)) != 1)
		goto fail;
	serial[0] &= 0x7f; /* positive */
	if ((bn = BN_bin2bn(serial, sizeof(serial), NULL)) == NULL ||
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL)
		goto fail;
	name = X509_get_subject_name(x);
	snprintf(san, sizeof(san),
		 "DNS:%s,DNS:localhost,IP:127.0.0.1,IP:0:0:0:0:0:0:0:1", cn);
	if (X509_set_version(x, X509_VERSION_3) != 1 ||
	    X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), CERT_DAYS, 0, NULL) ==
		    NULL ||
	    X509_set_pubkey(x, pk) != 1 ||
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
				       (const unsigned char *)cn, -1, -1,
				       0) != 1 ||
	    X509_set_issuer_name(x, name) != 1 ||
	    add_ext(x, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
	    add_ext(x, NID_key_usage, "critical,digitalSignature") != 0 ||
	    add_ext(x, NID_ext_key_usage,
		    client ? "clientAuth" : "serverAuth") != 0 ||
	    (!client && add_ext(x, NID_subject_alt_name, san) != 0) ||
	    X509_sign(x, pk, EVP_sha256()) <= 0)
		goto fail;
	BN_free(bn);
	return x;
fail:
	BN_free(bn);
	X509_free(x);
	return NULL;
}

static EVP_PKEY *
read_key(const char *path)
{
	FILE *f = fopen(path, "r");
	EVP_PKEY *pk;

	if (f == NULL)
		return NULL;
	pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	return pk;
}

int
bw_tls_make_key(const char *key_file, const char *cert_file, const char *cn,
		int *made, char *why, size_t cap)
{
	EVP_PKEY *pk = NULL;
	X509 *x = NULL;
	int rc = BW_ECRYPTO;

	*made = 0;
	ERR_clear_error();
	if (access(key_file, F_OK) == 0 && access(cert_file, F_OK) == 0)
		return 0;
	if (access(key_file, F_OK) == 0) {
		/* the certificate was lost: a new one for the same key keeps
		 * every client's pin */
		if ((pk = read_key(key_file)) == NULL) {
			tls_why(why, cap, "cannot read the TLS key");
			snprintf(why + strlen(why), cap - strlen(why), " (%s)",
				 key_file);
			return BW_ECONFIG;
		}
	} else if ((pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")) ==
		   NULL) {
		tls_why(why, cap, "cannot make a TLS key");
		return BW_ECRYPTO;
	} else if ((rc = write_pem(key_file, 0600, pem_key, pk)) != 0) {
		snprintf(why, cap, "cannot write %s: %s", key_file,
			 bw_strerror(rc));
		EVP_PKEY_free(pk);
		return rc;
	}
	if ((x = self_signed(pk, cn, 0)) == NULL) {
		tls_why(why, cap, "cannot make a certificate");
		EVP_PKEY_free(pk);
		return BW_ECRYPTO;
	}
	rc = write_pem(cert_file, 0644, pem_cert, x);
	if (rc != 0)
		snprintf(why, cap, "cannot write %s: %s", cert_file,
			 bw_strerror(rc));
	else
		*made = 1;
	X509_free(x);
	EVP_PKEY_free(pk);
	ERR_clear_error();
	return rc;
}

int
bw_tls_file_fingerprint(const char *pem_file, char fp[BW_TLS_FP_CAP], char *why,
			size_t cap)
{
	EVP_PKEY *pk = NULL;
	X509 *x;
	FILE *f;
	int rc;

	ERR_clear_error();
	if ((f = fopen(pem_file, "r")) == NULL) {
		snprintf(why, cap, "cannot open %s: %s", pem_file,
			 strerror(errno));
		return BW_ECONFIG;
	}
	/* a certificate, a private key or a public key, whichever it holds
	 */
	if ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
		pk = X509_get_pubkey(x);
		X509_free(x);
	} else {
		rewind(f);
		ERR_clear_error();
		if ((pk = PEM_read_PrivateKey(f, NULL, NULL, NULL)) == NULL) {
			rewind(f);
			ERR_clear_error();
			pk = PEM_read_PUBKEY(f, NULL, NULL, NULL);
		}
	}
	fclose(f);
	if (pk == NULL) {
		snprintf(why, cap, "%s holds no certificate or key in PEM",
			 pem_file);
		ERR_clear_error();
		return BW_ECONFIG;
	}
	rc = tls_pkey_fingerprint(pk, fp) == 0 ? 0 : BW_ECRYPTO;
	if (rc != 0)
		tls_why(why, cap, "cannot hash the key");
	EVP_PKEY_free(pk);
	return rc;
}

int
bw_tls_ctx_identity(struct bw_tls_ctx *x, const uint8_t *pkcs8, size_t len,
		    char *why, size_t cap)
{
	const unsigned char *p = pkcs8;
	EVP_PKEY *pk;
	X509 *cert;
	int ok;

	ERR_clear_error();
	if (len > LONG_MAX ||
	    (pk = d2i_AutoPrivateKey(NULL, &p, (long)len)) == NULL) {
		tls_why(why, cap, "the identity's private key is not usable");
		return BW_ECRYPTO;
	}
	if ((cert = self_signed(pk, "bulwark client", 1)) == NULL) {
		tls_why(why, cap, "cannot make the identity's certificate");
		EVP_PKEY_free(pk);
		return BW_ECRYPTO;
	}
	ok = SSL_CTX_use_certificate(x->ctx, cert) == 1 &&
	     SSL_CTX_use_PrivateKey(x->ctx, pk) == 1;
	if (!ok)
		tls_why(why, cap, "cannot show the identity's certificate");
	X509_free(cert);
	EVP_PKEY_free(pk);
	ERR_clear_error();
	return ok ? 0 : BW_ECRYPTO;
}
