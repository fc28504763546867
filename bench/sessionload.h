/* bench/sessionload's connection: a socket, plain or carrying TLS
 * (sessionload_tls.c).
 */
#ifndef BULWARK_BENCH_SESSIONLOAD_H
#define BULWARK_BENCH_SESSIONLOAD_H

#include <stddef.h>

#include "bulwark/crypto.h"
#include "bulwark/tls.h"

struct sl_link {
	int fd;
	struct bw_tls *t; /* NULL: plain */
};

/* A client's session to resume (DER from bw_tls_ticket), and how many of
 * its handshakes resumed one. */
struct sl_ticket {
	uint8_t *der;
	size_t len;
	unsigned long resumed;
};

/* A process's settings: the server's key taken as it comes (a bench, not
 * a client that pins), key shown as the client's certificate. */
int sl_tls_ctx(struct bw_tls_ctx **ctx, const struct bw_rsa *key);
/* The handshake on l->fd, offering tk's session if it holds one. */
int sl_tls_open(struct sl_link *l, struct bw_tls_ctx *ctx,
		struct sl_ticket *tk);
/* All of n bytes read or written (and sent) through l->t. */
int sl_tls_io(struct sl_link *l, void *buf, size_t n, int writing);
/* close_notify, the newest ticket into tk, and l->t freed. */
void sl_tls_close(struct sl_link *l, struct sl_ticket *tk);

#endif
