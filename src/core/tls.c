/* TLS 1.3 connections on memory buffers (bulwark/tls.h): OpenSSL's SSL over
 * two byte queues (tls_queue.c), one for what the socket gave, one for what
 * it is to be given. Each call starts with an empty error queue and leaves one,
 * so a connection's error never shows up as another's.
 */
#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/tls.h"
#include "tls_int.h"

/* The reason of OpenSSL's last error, for a sentence; empties the queue. */
void
tls_why(char *why, size_t cap, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;

	if (cap > 0)
		snprintf(why, cap, "%s%s%s", what, reason != NULL ? ": " : "",
			 reason != NULL ? reason : "");
	ERR_clear_error();
}

/* TLS 1.3 and nothing else, whichever side. */
static int
ctx_common(SSL_CTX *ctx)
{
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1)
		return -1;
	/* AES-128-GCM first: as strong as the rest of the path needs, and
	 * the fastest with AES-NI; ChaCha20 for peers without it */
	if (SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:"
					  "TLS_CHACHA20_POLY1305_SHA256:"
					  "TLS_AES_256_GCM_SHA384") != 1)
		return -1;
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
					 SSL_OP_NO_RENEGOTIATION |
					 SSL_OP_NO_ANTI_REPLAY);
	SSL_CTX_set_max_early_data(ctx, 0);
	SSL_CTX_set_recv_max_early_data(ctx, 0);
	/* a peer's certificate chain is read into memory before it is
	 * judged: one RSA-1024 or P-256 certificate fits many times */
	SSL_CTX_set_max_cert_list(ctx, 32u * 1024u);
	return 0;
}

/* Any certificate is taken: a client's is self-signed, made from the key
 * it registered, and whether it proves anything is the services' to say. */
static int
accept_any(int ok, X509_STORE_CTX *store)
{
	(void)ok;
	(void)store;
	return 1;
}

int
bw_tls_server_ctx(struct bw_tls_ctx **out, const char *cert_file,
		  const char *key_file, char *why, size_t cap)
{
	struct bw_tls_ctx *x;
	EVP_PKEY *pk;
	int bits;

	*out = NULL;
	ERR_clear_error();
	if ((x = calloc(1, sizeof(*x))) == NULL)
		return BW_ENOMEM;
	if ((x->ctx = SSL_CTX_new(TLS_server_method())) == NULL ||
	    ctx_common(x->ctx) != 0) {
		tls_why(why, cap, "cannot set up TLS");
		bw_tls_ctx_free(x);
		return BW_ECRYPTO;
	}
	/* level 0 lets a peer show an RSA-1024 key (the seeds' identities);
	 * our own key is held to level 2's 112 bits below */
	SSL_CTX_set_security_level(x->ctx, 0);
	/* a client shows one self-signed certificate (under 1 KiB for the
	 * seeds' keys), kept with its session in memory: a chain past 8 KiB
	 * is nobody's identity */
	SSL_CTX_set_max_cert_list(x->ctx, 8u * 1024u);
	/* idle connections (thousands of chat members) keep no record
	 * buffers; a client, with one connection, keeps its own */
	SSL_CTX_set_mode(x->ctx, SSL_MODE_RELEASE_BUFFERS);
	/* a client may show a certificate: its key is what it proves it
	 * holds (CertificateVerify), judged by the services against the key
	 * registered for the id it names, not by a chain */
	SSL_CTX_set_verify(x->ctx, SSL_VERIFY_PEER, accept_any);
	/* resumed sessions keep the peer's certificate; OpenSSL refuses to
	 * resume a session that asked for one without a context */
	if (SSL_CTX_set_session_id_context(
		    x->ctx, (const unsigned char *)"bulwark", 7) != 1 ||
	    tls_tickets_server(x->ctx) != 0) {
		tls_why(why, cap, "cannot set up TLS");
		bw_tls_ctx_free(x);
		return BW_ECRYPTO;
	}
	if (SSL_CTX_use_certificate_chain_file(x->ctx, cert_file) != 1) {
		tls_why(why, cap, "the certificate file is not usable");
		snprintf(why + strlen(why), cap - strlen(why), " (%s)",
			 cert_file);
		bw_tls_ctx_free(x);
		return BW_ECONFIG;
	}
	if (SSL_CTX_use_PrivateKey_file(x->ctx, key_file, SSL_FILETYPE_PEM) !=
	    1) {
		if (ERR_GET_REASON(ERR_peek_last_error()) ==
		    X509_R_KEY_VALUES_MISMATCH) {
			snprintf(why, cap,
				 "%s is not the key of the certificate in %s",
				 key_file, cert_file);
			ERR_clear_error();
			bw_tls_ctx_free(x);
			return BW_ECONFIG;
		}
		tls_why(why, cap, "the key file is not usable");
		snprintf(why + strlen(why), cap - strlen(why), " (%s)",
			 key_file);
		bw_tls_ctx_free(x);
		return BW_ECONFIG;
	}
	if (SSL_CTX_check_private_key(x->ctx) != 1) {
		snprintf(why, cap, "%s is not the key of the certificate in %s",
			 key_file, cert_file);
		ERR_clear_error();
		bw_tls_ctx_free(x);
		return BW_ECONFIG;
	}
	pk = SSL_CTX_get0_privatekey(x->ctx);
	if ((bits = EVP_PKEY_get_security_bits(pk)) < 112) {
		snprintf(why, cap,
			 "the key in %s is too weak (%d bits of security; at "
			 "least 112: RSA-2048, P-256 or Ed25519)",
			 key_file, bits);
		bw_tls_ctx_free(x);
		return BW_ECONFIG;
	}
	if (tls_pkey_fingerprint(pk, x->fp) != 0) {
		tls_why(why, cap, "cannot hash the key");
		bw_tls_ctx_free(x);
		return BW_ECRYPTO;
	}
	*out = x;
	return 0;
}

int
bw_tls_client_ctx(struct bw_tls_ctx **out, const char *ca_file, char *why,
		  size_t cap)
{
	struct bw_tls_ctx *x;

	*out = NULL;
	ERR_clear_error();
	if ((x = calloc(1, sizeof(*x))) == NULL)
		return BW_ENOMEM;
	if ((x->ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
	    ctx_common(x->ctx) != 0) {
		tls_why(why, cap, "cannot set up TLS");
		bw_tls_ctx_free(x);
		return BW_ECRYPTO;
	}
	SSL_CTX_set_security_level(x->ctx, 0); /* an RSA-1024 identity */
	/* judged after the handshake: a key not from a CA may be pinned */
	SSL_CTX_set_verify(x->ctx, SSL_VERIFY_NONE, NULL);
	tls_tickets_client(x->ctx);
	if (ca_file != NULL && SSL_CTX_load_verify_file(x->ctx, ca_file) != 1) {
		tls_why(why, cap, "the CA file is not usable");
		snprintf(why + strlen(why), cap - strlen(why), " (%s)",
			 ca_file);
		bw_tls_ctx_free(x);
		return BW_ECONFIG;
	}
	*out = x;
	return 0;
}

void
bw_tls_ctx_system_store(struct bw_tls_ctx *x)
{
	ERR_clear_error();
	(void)SSL_CTX_set_default_verify_paths(x->ctx);
	ERR_clear_error(); /* no system store: every key is pinned */
}

void
bw_tls_ctx_free(struct bw_tls_ctx *x)
{
	if (x == NULL)
		return;
	SSL_CTX_free(x->ctx);
	free(x);
}

const char *
bw_tls_ctx_fingerprint(const struct bw_tls_ctx *x)
{
	return x->fp;
}

static int tls_set_host(SSL *ssl, const char *host);

/* --- one connection ------------------------------------------------------
 */

struct bw_tls *
bw_tls_new(struct bw_tls_ctx *x, int server, const char *host)
{
	struct bw_tls *t;

	ERR_clear_error();
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	t->ssl = SSL_new(x->ctx);
	t->rb = tls_q_bio(&t->in);
	t->wb = tls_q_bio(&t->out);
	if (t->ssl == NULL || t->rb == NULL || t->wb == NULL) {
		SSL_free(t->ssl);
		BIO_free(t->rb);
		BIO_free(t->wb);
		free(t);
		ERR_clear_error();
		return NULL;
	}
	SSL_set_app_data(t->ssl, t);
	SSL_set_bio(t->ssl, t->rb, t->wb);
	if (server) {
		SSL_set_accept_state(t->ssl);
	} else {
		SSL_set_connect_state(t->ssl);
		if (host != NULL && tls_set_host(t->ssl, host) != 0) {
			bw_tls_free(t);
			ERR_clear_error();
			return NULL;
		}
	}
	return t;
}

void
bw_tls_free(struct bw_tls *t)
{
	if (t == NULL)
		return;
	SSL_free(t->ssl); /* and its BIOs */
	SSL_SESSION_free(t->ticket);
	tls_q_free(&t->in);
	tls_q_free(&t->out);
	free(t);
}

int
bw_tls_feed(struct bw_tls *t, const void *p, size_t n)
{
	return tls_q_put(&t->in, p, n);
}

uint8_t *
bw_tls_in_room(struct bw_tls *t, size_t n)
{
	if (tls_q_room(&t->in, n > 0 ? n : 1) != 0)
		return NULL;
	return t->in.p + t->in.off + t->in.len;
}

void
bw_tls_in_fed(struct bw_tls *t, size_t n)
{
	size_t room = t->in.cap - t->in.off - t->in.len;

	t->in.len += n < room ? n : room; /* within the room just given */
}

size_t
bw_tls_in_size(const struct bw_tls *t)
{
	return t->in.cap;
}

size_t
bw_tls_in_len(const struct bw_tls *t)
{
	return t->in.len;
}

void
bw_tls_trim(struct bw_tls *t)
{
	tls_q_trim(&t->in);
	tls_q_trim(&t->out);
}

void
bw_tls_trim_out(struct bw_tls *t)
{
	tls_q_trim(&t->out);
}

/* The name a client sends and checks: an address is checked as one. */
static int
tls_set_host(SSL *ssl, const char *host)
{
	unsigned char a[16];

	if (inet_pton(AF_INET, host, a) == 1 ||
	    inet_pton(AF_INET6, host, a) == 1)
		return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
						     host) == 1
			       ? 0
			       : -1;
	return SSL_set_tlsext_host_name(ssl, host) == 1 &&
			       SSL_set1_host(ssl, host) == 1
		       ? 0
		       : -1;
}

static enum bw_tls_rc
tls_rc(struct bw_tls *t, int ret, const char *what)
{
	switch (SSL_get_error(t->ssl, ret)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE: /* the output queue takes everything */
		ERR_clear_error();
		return BW_TLS_WANT;
	case SSL_ERROR_ZERO_RETURN:
		ERR_clear_error();
		return BW_TLS_EOF;
	default:
		tls_why(t->why, sizeof(t->why), what);
		return BW_TLS_ERROR;
	}
}

enum bw_tls_rc
bw_tls_handshake(struct bw_tls *t)
{
	int ret;

	ERR_clear_error();
	if ((ret = SSL_do_handshake(t->ssl)) == 1)
		return BW_TLS_OK;
	return tls_rc(t, ret, "TLS handshake failed");
}

int
bw_tls_done(const struct bw_tls *t)
{
	return SSL_is_init_finished(t->ssl);
}

enum bw_tls_rc
bw_tls_read(struct bw_tls *t, void *p, size_t cap, size_t *got)
{
	int ret;

	*got = 0;
	ERR_clear_error();
	if ((ret = SSL_read_ex(t->ssl, p, cap, got)) == 1)
		return BW_TLS_OK;
	return tls_rc(t, ret,
		      SSL_is_init_finished(t->ssl) ? "TLS record refused"
						   : "TLS handshake failed");
}

enum bw_tls_rc
bw_tls_write(struct bw_tls *t, const void *p, size_t n, size_t *took)
{
	int ret;

	*took = 0;
	if (n == 0)
		return BW_TLS_OK;
	ERR_clear_error();
	if ((ret = SSL_write_ex(t->ssl, p, n, took)) == 1)
		return BW_TLS_OK;
	return tls_rc(t, ret, "TLS write failed");
}

void
bw_tls_close_notify(struct bw_tls *t)
{
	ERR_clear_error();
	if (SSL_is_init_finished(t->ssl))
		(void)SSL_shutdown(t->ssl);
	ERR_clear_error();
}

const uint8_t *
bw_tls_out(struct bw_tls *t, size_t *len)
{
	*len = t->out.len;
	return t->out.len > 0 ? t->out.p + t->out.off : NULL;
}

void
bw_tls_out_consume(struct bw_tls *t, size_t n)
{
	tls_q_take(&t->out, n);
}

int
bw_tls_buffered(const struct bw_tls *t)
{
	return SSL_pending(t->ssl) > 0 || t->in.len > 0;
}

const char *
bw_tls_why(const struct bw_tls *t)
{
	return t->why;
}

int
bw_tls_peer_fingerprint(const struct bw_tls *t, char fp[BW_TLS_FP_CAP])
{
	X509 *cert = SSL_get0_peer_certificate(t->ssl);
	EVP_PKEY *pk;

	if (cert == NULL || (pk = X509_get0_pubkey(cert)) == NULL)
		return BW_ENOTFOUND;
	return tls_pkey_fingerprint(pk, fp) == 0 ? 0 : BW_ECRYPTO;
}

int
bw_tls_peer_key(const struct bw_tls *t, uint8_t *out, size_t cap, size_t *len)
{
	X509 *cert = SSL_get0_peer_certificate(t->ssl);
	X509_PUBKEY *xpk;
	unsigned char *p = out;
	int n;

	*len = 0;
	if (cert == NULL || (xpk = X509_get_X509_PUBKEY(cert)) == NULL)
		return 0;
	if ((n = i2d_X509_PUBKEY(xpk, NULL)) <= 0) {
		ERR_clear_error();
		return BW_ECRYPTO;
	}
	if ((size_t)n > cap)
		return BW_ETOOBIG;
	if (i2d_X509_PUBKEY(xpk, &p) != n) {
		ERR_clear_error();
		return BW_ECRYPTO;
	}
	*len = (size_t)n;
	return 0;
}

int
bw_tls_verified(const struct bw_tls *t)
{
	return SSL_get0_peer_certificate(t->ssl) != NULL &&
	       SSL_get_verify_result(t->ssl) == X509_V_OK;
}

int
bw_tls_verify_system(const struct bw_tls *t)
{
	X509 *leaf = SSL_get0_peer_certificate(t->ssl);
	X509_STORE_CTX *sc = NULL;
	X509_STORE *st = NULL;
	int ok = 0;

	ERR_clear_error();
	if (leaf == NULL || (st = X509_STORE_new()) == NULL ||
	    X509_STORE_set_default_paths(st) != 1 ||
	    (sc = X509_STORE_CTX_new()) == NULL ||
	    X509_STORE_CTX_init(sc, st, leaf,
				SSL_get_peer_cert_chain(t->ssl)) != 1 ||
	    X509_STORE_CTX_set_default(sc, "ssl_server") != 1 ||
	    X509_VERIFY_PARAM_set1(X509_STORE_CTX_get0_param(sc),
				   SSL_get0_param(t->ssl)) != 1)
		goto done;
	ok = X509_verify_cert(sc) == 1;
done:
	X509_STORE_CTX_free(sc);
	X509_STORE_free(st);
	ERR_clear_error();
	return ok;
}

const char *
bw_tls_version(const struct bw_tls *t)
{
	return SSL_get_version(t->ssl);
}

const char *
bw_tls_cipher(const struct bw_tls *t)
{
	return SSL_get_cipher_name(t->ssl);
}
