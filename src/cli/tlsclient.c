/* The client's end of a tls:// address (cli/tlsclient.h): the handshake on
 * a connected socket, the server's key judged (a CA's certificate for the
 * name, else the key pinned on first use, as OpenSSH's known_hosts), and
 * reads and writes that behave as recv() and send() do on the socket.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bulwark/fsutil.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "cli/common.h"
#include "cli/tlsclient.h"

struct bw_ctls {
	struct bw_tls_ctx *ctx;
	struct bw_tls *t;
	int fd;
	unsigned timeout_ms;
	int trusted;		  /* the server's key was judged good */
	int store_later;	  /* the system's store is asked after */
	struct bw_known known;	  /* looked up once, before the handshake */
	int known_rc;		  /* bw_known_lookup's */
	int no_ticket;		  /* keep none from this connection */
	char name[300];		  /* HOST:PORT, for its sessions */
	char who[BW_TLS_WHO_CAP]; /* the identity's; "" for none kept */
};

const char *bw_cli_ca_file; /* --ca-file, or NULL */

int
bw_tls_addr(const char *text, const char **rest)
{
	if (strncmp(text, BW_TLS_SCHEME, strlen(BW_TLS_SCHEME)) == 0) {
		*rest = text + strlen(BW_TLS_SCHEME);
		return 1;
	}
	*rest = text;
	return 0;
}

/* --- the socket ----------------------------------------------------------
 */

static int
wait_fd(int fd, short events, unsigned ms)
{
	struct pollfd pfd = {.fd = fd, .events = events};
	int n;

	do
		n = poll(&pfd, 1, (int)ms);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n == 0 ? BW_ETIMEDOUT : 0;
}

/* Sends every record the session holds, waiting for the socket. */
static int
flush_out(struct bw_ctls *c)
{
	const uint8_t *p;
	size_t len;
	ssize_t n;
	int rc;

	while ((p = bw_tls_out(c->t, &len)) != NULL && len > 0) {
		n = send(c->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			bw_tls_out_consume(c->t, (size_t)n);
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if ((rc = wait_fd(c->fd, POLLOUT, c->timeout_ms)) != 0)
				return rc;
		} else if (n < 0 && errno != EINTR) {
			return -errno;
		}
	}
	return 0;
}

/* Reads what the socket has into the session: 1, 0 at its end, or -errno
 * (-EAGAIN when nothing is there and wait is 0). */
static int
pull_in(struct bw_ctls *c, int wait)
{
	uint8_t buf[16384 + 512];
	ssize_t n;
	int rc;

	for (;;) {
		n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n > 0)
			return bw_tls_feed(c->t, buf, (size_t)n) == 0
				       ? 1
				       : BW_ENOMEM;
		if (n == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		if (!wait)
			return -EAGAIN;
		if ((rc = wait_fd(c->fd, POLLIN, c->timeout_ms)) != 0)
			return rc;
	}
}

static int
handshake(struct bw_ctls *c)
{
	enum bw_tls_rc r;
	int rc;

	for (;;) {
		r = bw_tls_handshake(c->t);
		if ((rc = flush_out(c)) != 0)
			return rc;
		if (r == BW_TLS_OK)
			return 0;
		if (r != BW_TLS_WANT)
			return BW_EPROTO;
		if ((rc = pull_in(c, 1)) <= 0)
			return rc == 0 ? BW_ECLOSED : rc;
	}
}

/* The server's key judged: 0, or a sentence in why and an exit status. */
static int
judge(struct bw_ctls *c, const char *prog, const char *host, uint16_t port,
      char *why, size_t cap)
{
	const struct bw_known *k = &c->known;
	char fp[BW_TLS_FP_CAP];
	int rc;

	if (bw_tls_peer_fingerprint(c->t, fp) != 0) {
		snprintf(why, cap, "the server showed no key");
		return BW_EXIT_FATAL;
	}
	if (bw_tls_verified(c->t))
		return 0; /* a CA vouches for the key under this name */
	if (bw_cli_ca_file != NULL) {
		snprintf(why, cap,
			 "the certificate of %s:%u is not signed for that "
			 "name by the CA in %s (its key: %s)",
			 host, port, bw_cli_ca_file, fp);
		return BW_EXIT_KEY;
	}
	if (c->known_rc == BW_ECONFIG) {
		snprintf(why, cap,
			 "no place for known_servers (set HOME, "
			 "XDG_CONFIG_HOME or BULWARK_KNOWN_SERVERS)");
		return BW_EXIT_USAGE;
	}
	if (c->known_rc != 0) {
		snprintf(why, cap, "cannot read %s: %s", k->path,
			 bw_strerror(c->known_rc));
		return BW_EXIT_USAGE;
	}
	if (k->line != 0 && strcmp(k->old, fp) == 0)
		return 0;
	if (c->store_later && bw_tls_verify_system(c->t)) {
		/* a new key, which a CA vouches for. Its tickets would carry
		 * the handshake's verdict (made without the store) and only
		 * the certificate, not its chain: resumed, the key could not
		 * be vouched for again. Full handshakes until it is pinned. */
		c->no_ticket = 1;
		return 0;
	}
	if (k->line != 0) {
		fprintf(stderr,
			"%s: WARNING: the key of %s%s has changed!\n"
			"  pinned:  %s (%s line %u)\n"
			"  offered: %s\n"
			"Someone may be between you and the server, or its key "
			"was replaced.\nNothing was sent. If the operator "
			"confirms the new key (bulwarkd --fingerprint\non the "
			"server), accept it with:\n  bulwark trust-server "
			"%s%s\n",
			prog, BW_TLS_SCHEME, c->name, k->old, k->path, k->line,
			fp, BW_TLS_SCHEME, c->name);
		snprintf(why, cap, "the server's key is not the one pinned");
		return BW_EXIT_KEY;
	}
	if ((rc = bw_known_servers_pin(k->path, c->name, fp)) != 0) {
		snprintf(why, cap, "cannot pin the key in %s: %s", k->path,
			 bw_strerror(rc));
		return BW_EXIT_USAGE;
	}
	fprintf(stderr, "%s: %s%s is new: its key %s is now pinned in %s\n",
		prog, BW_TLS_SCHEME, c->name, fp, k->path);
	return 0;
}

/* The identity's key, shown to a server that asks for a certificate. */
static int
ctls_identity(struct bw_tls_ctx *ctx, const struct bw_rsa *key, char *why,
	      size_t cap)
{
	uint8_t *der = NULL;
	size_t len = 0;
	int rc;

	if ((rc = bw_rsa_to_pkcs8(key, &der, &len)) != 0) {
		snprintf(why, cap, "cannot read the identity's key: %s",
			 bw_strerror(rc));
		return rc;
	}
	rc = bw_tls_ctx_identity(ctx, der, len, why, cap);
	bw_wipe(der, len);
	free(der);
	return rc;
}

/* The session kept for c->name (HOST:PORT) and this identity, offered to
 * the server (one that no longer takes it makes a full handshake). */
static void
resume(struct bw_ctls *c, const struct bw_rsa *key)
{
	uint8_t *der = NULL;
	size_t len = 0;

	if (bw_tls_session_who(key, c->who) != 0) {
		c->who[0] = '\0'; /* nothing kept for it */
		return;
	}
	if (bw_tls_session_load(c->name, c->who, &der, &len) == 0 &&
	    bw_tls_resume(c->t, der, len) != 0)
		(void)bw_tls_session_forget(c->name, c->who); /* unusable */
	bw_secure_free(der, len);
}

/* A ticket the server gave on a trusted connection, kept for the next. */
static void
keep_ticket(struct bw_ctls *c)
{
	uint8_t *der = NULL;
	size_t len = 0;
	int64_t ends = 0;

	if (!c->trusted || c->no_ticket || c->who[0] == '\0' ||
	    bw_tls_ticket(c->t, &der, &len, &ends) != 0)
		return;
	(void)bw_tls_session_save(c->name, c->who, der, len, ends);
	bw_secure_free(der, len);
}

int
bw_ctls_open(struct bw_ctls **out, int fd, const char *prog, const char *host,
	     uint16_t port, unsigned timeout_ms, int pin,
	     const struct bw_rsa *key, char *why, size_t cap)
{
	struct bw_ctls *c;
	int rc;

	*out = NULL;
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		snprintf(why, cap, "out of memory");
		return BW_EXIT_FATAL;
	}
	c->fd = fd;
	c->timeout_ms = timeout_ms;
	if ((rc = bw_tls_client_ctx(&c->ctx, bw_cli_ca_file, why, cap)) != 0) {
		free(c);
		return rc == BW_ECONFIG ? BW_EXIT_USAGE : BW_EXIT_FATAL;
	}
	/* a pinned key is compared before any CA is asked: the system's
	 * store, which takes a small command's most time to read, is read
	 * only for a server not pinned yet, or for a key that changed */
	snprintf(c->name, sizeof(c->name), "%s:%u", host, port);
	if (pin && bw_cli_ca_file == NULL) {
		c->known_rc = bw_known_lookup(c->name, &c->known);
		if (c->known_rc == 0 && c->known.line != 0)
			c->store_later = 1;
		else
			bw_tls_ctx_system_store(c->ctx);
	}
	if (key != NULL && ctls_identity(c->ctx, key, why, cap) != 0) {
		bw_ctls_free(c);
		return BW_EXIT_FATAL;
	}
	if ((c->t = bw_tls_new(c->ctx, 0, host)) == NULL) {
		snprintf(why, cap, "out of memory");
		bw_ctls_free(c);
		return BW_EXIT_FATAL;
	}
	/* a session keeps the verdict of the trust it was made under: one
	 * made with another --ca-file (or none) is not offered */
	if (pin && bw_cli_ca_file == NULL)
		resume(c, key);
	if ((rc = handshake(c)) != 0) {
		if (rc == BW_EPROTO)
			snprintf(why, cap,
				 "%s:%u does not speak TLS 1.3 (%s; is it the "
				 "plain port?)",
				 host, port, bw_tls_why(c->t));
		else
			snprintf(why, cap, "TLS handshake with %s:%u: %s", host,
				 port, bw_strerror(rc));
		bw_ctls_free(c);
		return BW_EXIT_FATAL;
	}
	if (pin && (rc = judge(c, prog, host, port, why, cap)) != 0) {
		/* the session kept would be refused the same way next time,
		 * where a full handshake may show a chain a CA vouches for */
		if (bw_tls_resumed(c->t) && c->who[0] != '\0')
			(void)bw_tls_session_forget(c->name, c->who);
		bw_ctls_free(c);
		return rc;
	}
	c->trusted = pin;
	*out = c;
	return 0;
}

const char *
bw_ctls_fingerprint(struct bw_ctls *c, char fp[BW_TLS_FP_CAP])
{
	if (bw_tls_peer_fingerprint(c->t, fp) != 0)
		snprintf(fp, BW_TLS_FP_CAP, "(none)");
	return fp;
}

void
bw_ctls_free(struct bw_ctls *c)
{
	if (c == NULL)
		return;
	if (c->t != NULL)
		keep_ticket(c);
	bw_tls_free(c->t);
	bw_tls_ctx_free(c->ctx);
	free(c);
}

void
bw_ctls_end(struct bw_ctls *c)
{
	if (c == NULL)
		return;
	bw_tls_close_notify(c->t);
	(void)flush_out(c);
}

/* Records made at a time and given to the socket together: a send per
 * sixteen records, not four (the kernel's work per call, and a wake-up of
 * the server's loop per call; docs/performance.md, issue 48's sixth
 * round). */
#define CTLS_BATCH (256u * 1024u)

ssize_t
bw_ctls_send(struct bw_ctls *c, const void *p, size_t n)
{
	size_t took = 0;
	int rc;

	if (n > CTLS_BATCH)
		n = CTLS_BATCH;
	if (bw_tls_write(c->t, p, n, &took) != BW_TLS_OK) {
		errno = EPROTO;
		return -1;
	}
	if ((rc = flush_out(c)) != 0) {
		errno = rc == BW_ETIMEDOUT ? ETIMEDOUT : -rc;
		return -1;
	}
	return (ssize_t)took;
}

ssize_t
bw_ctls_recv(struct bw_ctls *c, void *p, size_t n)
{
	size_t got = 0;
	int rc;

	for (;;) {
		switch (bw_tls_read(c->t, p, n, &got)) {
		case BW_TLS_OK:
			return (ssize_t)got;
		case BW_TLS_EOF:
			return 0;
		case BW_TLS_ERROR:
			errno = EPROTO;
			return -1;
		case BW_TLS_WANT:
			break;
		}
		(void)flush_out(c); /* a key update's answer */
		if ((rc = pull_in(c, 0)) == 0)
			return 0;
		if (rc < 0) {
			errno = -rc;
			return -1;
		}
	}
}

int
bw_ctls_pending(const struct bw_ctls *c)
{
	return c != NULL && bw_tls_buffered(c->t);
}
