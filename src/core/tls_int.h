/* Between tls.c (connections), tls_queue.c (their byte queues), tls_key.c
 * (keys, certificates and fingerprints) and tls_resume.c. Internal to
 * core.
 */
#ifndef BULWARK_TLS_INT_H
#define BULWARK_TLS_INT_H

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "bulwark/tls.h"

/* Bytes in order, at p[off, off + len) (tls_queue.c). */
struct tls_q {
	uint8_t *p;
	size_t off, len, cap;
};

/* Room for n more bytes at the end: 0 or BW_ENOMEM. */
int tls_q_room(struct tls_q *q, size_t n);
int tls_q_put(struct tls_q *q, const void *p, size_t n);
/* Drops n bytes from the front. */
void tls_q_take(struct tls_q *q, size_t n);
/* Frees the buffer of an empty queue; shrinks a large one holding less
 * than a record. */
void tls_q_trim(struct tls_q *q);
void tls_q_free(struct tls_q *q);
/* A BIO that reads from q or writes to it (never freeing it), or NULL. */
BIO *tls_q_bio(struct tls_q *q);

struct bw_tls {
	SSL *ssl;
	BIO *rb, *wb;	     /* owned by ssl */
	struct tls_q in;     /* from the socket, read through rb */
	struct tls_q out;    /* for the socket, written through wb */
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
