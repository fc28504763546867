/* Between tls.c (connections) and tls_key.c (keys, certificates and
 * fingerprints). Internal to core.
 */
#ifndef BULWARK_TLS_INT_H
#define BULWARK_TLS_INT_H

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "bulwark/tls.h"

struct bw_tls {
	SSL *ssl;
	BIO *rb, *wb;	     /* owned by ssl */
	SSL_SESSION *ticket; /* a client's newest from the server, or NULL */
	char why[160];
};

struct bw_tls_ctx {
	SSL_CTX *ctx;
	char fp[BW_TLS_FP_CAP]; /* a server's key; "" for a client */
};

/* why = "what: OpenSSL's reason"; the error queue emptied. */
void tls_why(char *why, size_t cap, const char *what);
/* "SHA256:" + unpadded base64 of the SHA-256 of pk's DER SPKI. */
int tls_pkey_fingerprint(EVP_PKEY *pk, char fp[BW_TLS_FP_CAP]);

/* Resumption (tls_resume.c): a server's tickets, a client's keeping. */
int tls_tickets_server(SSL_CTX *ctx);
void tls_tickets_client(SSL_CTX *ctx);

#endif
