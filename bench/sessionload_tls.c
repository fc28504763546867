/* bench/sessionload's TLS (--tls-port): the same vault sessions over the
 * authenticated listener, with the core's TLS (the code `bulwark` runs),
 * each client proving its registered key by the certificate made from it
 * and resuming the session its last full handshake left, as `bulwark`
 * does with its session cache. On blocking sockets with their timeouts.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "bulwark/crypto.h"
#include "sessionload.h"

/* Sends every record the connection holds. */
static int
flush(struct sl_link *l)
{
	const uint8_t *p;
	size_t len;
	ssize_t n;

	while ((p = bw_tls_out(l->t, &len)) != NULL && len > 0) {
		n = send(l->fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		bw_tls_out_consume(l->t, (size_t)n);
	}
	return 0;
}

/* What the socket has (waiting for it) into the connection. */
static int
pull(struct sl_link *l)
{
	uint8_t buf[16384 + 512];
	ssize_t n;

	do
		n = recv(l->fd, buf, sizeof(buf), 0);
	while (n < 0 && errno == EINTR);
	if (n <= 0 || bw_tls_feed(l->t, buf, (size_t)n) != 0)
		return -1;
	return 0;
}

int
sl_tls_ctx(struct bw_tls_ctx **ctx, const struct bw_rsa *key)
{
	uint8_t *der = NULL;
	size_t len = 0;
	char why[256];
	int rc;

	if (bw_tls_client_ctx(ctx, NULL, why, sizeof(why)) != 0)
		return -1;
	if (bw_rsa_to_pkcs8(key, &der, &len) != 0)
		return -1;
	rc = bw_tls_ctx_identity(*ctx, der, len, why, sizeof(why));
	bw_secure_free(der, len);
	return rc == 0 ? 0 : -1;
}

int
sl_tls_open(struct sl_link *l, struct bw_tls_ctx *ctx, struct sl_ticket *tk)
{
	enum bw_tls_rc r;

	if ((l->t = bw_tls_new(ctx, 0, NULL)) == NULL)
		return -1;
	if (tk->der != NULL && bw_tls_resume(l->t, tk->der, tk->len) != 0) {
		free(tk->der); /* unusable: a full handshake, a new ticket */
		tk->der = NULL;
	}
	while ((r = bw_tls_handshake(l->t)) == BW_TLS_WANT)
		if (flush(l) != 0 || pull(l) != 0)
			return -1;
	if (r != BW_TLS_OK || flush(l) != 0)
		return -1;
	tk->resumed += bw_tls_resumed(l->t) ? 1u : 0u;
	return 0;
}

int
sl_tls_io(struct sl_link *l, void *buf, size_t n, int writing)
{
	uint8_t *p = buf;
	size_t k;

	while (n > 0) {
		enum bw_tls_rc r = writing ? bw_tls_write(l->t, p, n, &k)
					   : bw_tls_read(l->t, p, n, &k);

		if (r == BW_TLS_WANT) {
			if (flush(l) != 0 || pull(l) != 0)
				return -1;
			continue;
		}
		if (r != BW_TLS_OK)
			return -1;
		p += k;
		n -= k;
	}
	return writing ? flush(l) : 0;
}

void
sl_tls_close(struct sl_link *l, struct sl_ticket *tk)
{
	uint8_t *der = NULL;
	size_t len = 0;
	int64_t ends;

	if (l->t == NULL)
		return;
	/* the newest ticket (a full handshake's; a resumption gives none) */
	if (bw_tls_ticket(l->t, &der, &len, &ends) == 0) {
		free(tk->der);
		tk->der = der;
		tk->len = len;
	}
	bw_tls_close_notify(l->t);
	(void)flush(l);
	bw_tls_free(l->t);
	l->t = NULL;
}
