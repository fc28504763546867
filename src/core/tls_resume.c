/* TLS 1.3 session resumption (bulwark/tls.h). A server gives one ticket
 * after a full handshake and none after a resumed one: the client keeps
 * using the ticket it has until it ends, so a resumption costs the server
 * the ticket's decryption and a key exchange, not a signature, a
 * certificate's parsing nor a new ticket's sealing. A ticket is sealed with
 * a key of the server context's: a new context (a SIGHUP that read new
 * files, another node of a cluster) turns it into a full handshake.
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <time.h>

#include "bulwark/tls.h"
#include "tls_int.h"

#define TLS_SESSIONS_KEPT                                                      \
	4096L /* at most 8 KiB of certificate each (a                          \
	       * client's chain is capped), the oldest                         \
	       * dropped */

/* Once the server knows the handshake resumes a session: no new ticket
 * (the client keeps the one it has; a new one would copy the session). */
static void
on_state(const SSL *ssl, int where, int ret)
{
	(void)ret;
	if ((where & SSL_CB_ACCEPT_LOOP) && SSL_session_reused((SSL *)ssl) &&
	    SSL_get_num_tickets(ssl) != 0)
		(void)SSL_set_num_tickets((SSL *)ssl, 0);
}

int
tls_tickets_server(SSL_CTX *ctx)
{
	/* stateful: the ticket names a session kept here, found without
	 * decoding it (a sealed one is decoded twice, its certificate with
	 * it, which costs OpenSSL 3.0 as much as a full handshake) */
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_sess_set_cache_size(ctx, TLS_SESSIONS_KEPT);
	SSL_CTX_set_info_callback(ctx, on_state);
	return SSL_CTX_set_num_tickets(ctx, 1) == 1 ? 0 : -1;
}

/* A ticket arrived on a client's connection: kept by the connection. */
static int
on_ticket(SSL *ssl, SSL_SESSION *sess)
{
	struct bw_tls *t = SSL_get_app_data(ssl);

	if (t == NULL)
		return 0;
	SSL_SESSION_free(t->ticket);
	t->ticket = sess;
	return 1; /* the reference is ours */
}

void
tls_tickets_client(SSL_CTX *ctx)
{
	SSL_CTX_set_session_cache_mode(
		ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, on_ticket);
}

/* When s stops being resumable, in Unix seconds. */
static int64_t
session_ends(const SSL_SESSION *s)
{
	return (int64_t)SSL_SESSION_get_time(s) +
	       (int64_t)SSL_SESSION_get_timeout(s);
}

int
bw_tls_resume(struct bw_tls *t, const uint8_t *der, size_t len)
{
	const unsigned char *p = der;
	SSL_SESSION *s;
	int ok;

	ERR_clear_error();
	if (len > 65536 || (s = d2i_SSL_SESSION(NULL, &p, (long)len)) == NULL) {
		ERR_clear_error();
		return BW_EPROTO;
	}
	ok = p == der + len && SSL_SESSION_is_resumable(s) &&
	     SSL_SESSION_get_protocol_version(s) == TLS1_3_VERSION &&
	     session_ends(s) > (int64_t)time(NULL) &&
	     SSL_set_session(t->ssl, s) == 1;
	SSL_SESSION_free(s);
	ERR_clear_error();
	return ok ? 0 : BW_EPROTO;
}

int
bw_tls_resumed(const struct bw_tls *t)
{
	return SSL_session_reused(t->ssl) == 1;
}

int
bw_tls_ticket(const struct bw_tls *t, uint8_t **der, size_t *len, int64_t *ends)
{
	unsigned char *p;
	int n;

	*der = NULL;
	*len = 0;
	if (t->ticket == NULL || !SSL_SESSION_is_resumable(t->ticket))
		return BW_ENOTFOUND;
	if ((n = i2d_SSL_SESSION(t->ticket, NULL)) <= 0) {
		ERR_clear_error();
		return BW_ECRYPTO;
	}
	if ((*der = malloc((size_t)n)) == NULL)
		return BW_ENOMEM;
	p = *der;
	if (i2d_SSL_SESSION(t->ticket, &p) != n) {
		ERR_clear_error();
		OPENSSL_cleanse(*der, (size_t)n);
		free(*der);
		*der = NULL;
		return BW_ECRYPTO;
	}
	*len = (size_t)n;
	*ends = session_ends(t->ticket);
	return 0;
}
