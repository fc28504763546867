/* The options every command shares and the blocking request/response
 * session used by the client subcommands (identity files: identity.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bulwark/cur.h"
#include "bulwark/err.h"
#include "bulwark/fsutil.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "cli/common.h"
#include "cli/tlsclient.h"
#include "proto/vault_wire.h"

int
bw_cli_timeout_arg(const char *prog, const char *arg, unsigned *ms)
{
	uint64_t s;

	if (bw_parse_u64(arg, 1, 3600, &s) != 0) {
		fprintf(stderr, "%s: --timeout needs 1..3600 seconds\n", prog);
		return BW_ECONFIG;
	}
	*ms = (unsigned)s * 1000u;
	return 0;
}

int
bw_cli_common_opt(const char *prog, int ch, const char *arg,
		  unsigned *timeout_ms, void (*usage)(FILE *f))
{
	if (ch == 't')
		return bw_cli_timeout_arg(prog, arg, timeout_ms) == 0
			       ? BW_CLI_GO_ON
			       : BW_EXIT_USAGE;
	if (ch == BW_CLI_OPT_CA_FILE) {
		if (access(arg, R_OK) != 0) {
			fprintf(stderr, "%s: --ca-file %s: %s\n", prog, arg,
				strerror(errno));
			return BW_EXIT_USAGE;
		}
		bw_cli_ca_file = arg;
		return BW_CLI_GO_ON;
	}
	usage(ch == 'h' ? stdout : stderr);
	return ch == 'h' ? BW_EXIT_OK : BW_EXIT_USAGE;
}

int
bw_cli_server_arg(const char *prog, const char *dflt, const char *given,
		  int argc, char **argv, void (*usage)(FILE *f), char *host,
		  size_t cap, uint16_t *port)
{
	const char *server = dflt;

	if (optind < argc && given != NULL) {
		fprintf(stderr, "%s: the server is given twice (-s and '%s')\n",
			prog, argv[optind]);
		return BW_EXIT_USAGE;
	}
	if (given != NULL)
		server = given;
	else if (optind < argc)
		server = argv[optind++];
	if (optind != argc) {
		usage(stderr);
		return BW_EXIT_USAGE;
	}
	if (bw_cli_parse_server(server, host, cap, port) != 0) {
		fprintf(stderr,
			"%s: '%s' is not HOST:PORT or tls://HOST:PORT\n", prog,
			server);
		return BW_EXIT_USAGE;
	}
	return 0;
}

int
bw_cli_parse_server(const char *text, char *host, size_t cap, uint16_t *port)
{
	const char *rest;
	int tls = bw_tls_addr(text, &rest);
	size_t skip = tls ? strlen(BW_TLS_SCHEME) : 0;

	if (cap <= skip ||
	    bw_parse_hostport(rest, host + skip, cap - skip, port) != 0)
		return BW_ECONFIG;
	if (tls)
		memcpy(host, BW_TLS_SCHEME, skip);
	return 0;
}

void
bw_session_init(struct bw_session *s, const char *host, uint16_t port,
		unsigned timeout_ms, uint8_t version)
{
	memset(s, 0, sizeof(*s));
	s->tls = bw_tls_addr(host, &host);
	snprintf(s->host, sizeof(s->host), "%s", host);
	s->port = port;
	s->timeout_ms = timeout_ms;
	s->version = version;
	s->fd = -1;
}

int
bw_session_connect(struct bw_session *s)
{
	char why[512];
	int rc;

	if (s->fd >= 0)
		return 0;
	if ((rc = bw_net_connect(s->host, s->port, s->timeout_ms, &s->fd)) !=
		    0 ||
	    !s->tls)
		return rc;
	rc = bw_ctls_open(&s->ctls, s->fd, "bulwark", s->host, s->port,
			  s->timeout_ms, 1, s->key, why, sizeof(why));
	if (rc != 0) {
		/* not a failure to retry: no byte of the protocol may go to
		 * a server whose key is in doubt */
		fflush(stdout);
		fprintf(stderr, "bulwark: %s\n", why);
		bw_identity_drop_staged(); /* nothing was sent */
		exit(rc);
	}
	return 0;
}

void
bw_session_close(struct bw_session *s)
{
	bw_ctls_free(s->ctls);
	s->ctls = NULL;
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

/* send() and recv() on the socket, or through its TLS session. */
static ssize_t
sess_send(const struct bw_session *s, const void *p, size_t n)
{
	if (s->ctls != NULL)
		return bw_ctls_send(s->ctls, p, n);
	return send(s->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static ssize_t
sess_recv(const struct bw_session *s, void *p, size_t n)
{
	if (s->ctls != NULL)
		return bw_ctls_recv(s->ctls, p, n);
	return recv(s->fd, p, n, MSG_DONTWAIT);
}

void
bw_session_abort(struct bw_session *s)
{
	struct linger reset = {1, 0};

	if (s->fd >= 0)
		(void)setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &reset,
				 sizeof(reset));
	bw_session_close(s);
}

int
bw_session_reset_on_close(struct bw_session *s)
{
	struct linger reset = {1, 0};

	if (setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)) !=
	    0)
		return -errno;
	return 0;
}

void
bw_session_deadline(struct bw_session *s, uint64_t ms)
{
	s->deadline_ms = bw_now_ms() + ms;
}

/* Milliseconds left to wait for progress: at most timeout_ms, and never past
 * the deadline; 0 when the deadline has passed. */
static uint64_t
time_left(const struct bw_session *s)
{
	uint64_t now = bw_now_ms(), left = s->timeout_ms;

	if (s->deadline_ms == 0)
		return left;
	if (now >= s->deadline_ms)
		return 0;
	return s->deadline_ms - now < left ? s->deadline_ms - now : left;
}

/* Waits until the socket is ready for events: 0, BW_ETIMEDOUT or -errno. */
static int
wait_ready(const struct bw_session *s, short events)
{
	struct pollfd pfd = {.fd = s->fd, .events = events};
	uint64_t left = time_left(s);
	int n;

	if (left == 0)
		return BW_ETIMEDOUT;
	n = poll(&pfd, 1, (int)left);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	return n == 0 ? BW_ETIMEDOUT : 0;
}

int
bw_session_write(const struct bw_session *s, const void *p, size_t n)
{
	const uint8_t *b = p;
	ssize_t r;
	int rc;

	while (n > 0) {
		if (s->deadline_ms != 0 && bw_now_ms() >= s->deadline_ms)
			return BW_ETIMEDOUT;
		r = sess_send(s, b, n);
		if (r >= 0) {
			b += r;
			n -= (size_t)r;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			if ((rc = wait_ready(s, POLLOUT)) != 0)
				return rc;
		} else if (errno != EINTR) {
			return -errno;
		}
	}
	return 0;
}

int
bw_session_read(const struct bw_session *s, void *p, size_t n)
{
	uint8_t *b = p;
	ssize_t r;
	int rc;

	while (n > 0) {
		if (s->deadline_ms != 0 && bw_now_ms() >= s->deadline_ms)
			return BW_ETIMEDOUT;
		r = sess_recv(s, b, n);
		if (r > 0) {
			b += r;
			n -= (size_t)r;
		} else if (r == 0) {
			return BW_ECLOSED;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			if ((rc = wait_ready(s, POLLIN)) != 0)
				return rc;
		} else if (errno != EINTR) {
			return -errno;
		}
	}
	return 0;
}

#define END_DRAIN_MAX (64u * 1024u)
#define END_WAIT_MS   2000u

void
bw_session_end(struct bw_session *s)
{
	uint8_t buf[1024];
	size_t drained = 0;
	ssize_t r = 1;

	struct linger orderly = {0, 0};

	if (s->fd < 0)
		return;
	/* an end in order, whatever bw_session_reset_on_close asked */
	(void)setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &orderly,
			 sizeof(orderly));
	bw_ctls_end(s->ctls);
	if (shutdown(s->fd, SHUT_WR) == 0) {
		s->deadline_ms = bw_now_ms() + (s->timeout_ms < END_WAIT_MS
							? s->timeout_ms
							: END_WAIT_MS);
		while (r != 0 && drained < END_DRAIN_MAX) {
			r = sess_recv(s, buf, sizeof(buf));
			if (r > 0)
				drained += (size_t)r;
			else if (r < 0 && errno != EAGAIN &&
				 errno != EWOULDBLOCK && errno != EINTR)
				break;
			else if (r < 0 && wait_ready(s, POLLIN) != 0)
				break;
		}
	}
	bw_session_close(s);
}

int
bw_session_send_hdr(struct bw_session *s, const uint8_t id[BW_ID_LEN],
		    uint16_t code, uint32_t payload_size)
{
	struct bw_req_hdr h;
	uint8_t hdr[BW_REQ_HDR_LEN];

	memset(&h, 0, sizeof(h));
	if (id != NULL)
		memcpy(h.client_id, id, BW_ID_LEN);
	h.version = s->version;
	h.code = code;
	h.payload_size = payload_size;
	bw_req_hdr_encode(&h, hdr);
	return bw_session_write(s, hdr, sizeof(hdr));
}

void
bw_session_cork(struct bw_session *s, int on)
{
	if (s->fd >= 0)
		(void)setsockopt(s->fd, IPPROTO_TCP, TCP_CORK, &on, sizeof(on));
}

int
bw_session_send(struct bw_session *s, const uint8_t id[BW_ID_LEN],
		uint16_t code, const void *payload, uint32_t len)
{
	int rc;

	bw_session_cork(s, 1);
	if ((rc = bw_session_send_hdr(s, id, code, len)) == 0 && len > 0)
		rc = bw_session_write(s, payload, len);
	bw_session_cork(s, 0);
	return rc;
}

int
bw_session_recv(struct bw_session *s, uint16_t *code, uint8_t *out, size_t cap,
		size_t *len)
{
	uint8_t hdr[BW_RESP_HDR_LEN];
	struct bw_resp_hdr h;
	int rc;

	if ((rc = bw_session_read(s, hdr, sizeof(hdr))) != 0)
		return rc;
	if (bw_resp_hdr_decode(hdr, sizeof(hdr), &h) < 0)
		return BW_EPROTO;
	if (!bw_reply_code_known(h.code)) {
		/* not the shared port: the chat's greeting reads as a reply
		 * of code 27749 and megabytes of payload */
		bw_session_close(s);
		return BW_EFOREIGN;
	}
	if (h.payload_size > cap) {
		bw_session_close(s);
		return BW_ETOOBIG;
	}
	if (h.payload_size > 0 &&
	    (rc = bw_session_read(s, out, h.payload_size)) != 0)
		return rc;
	*code = h.code;
	*len = h.payload_size;
	return 0;
}

/* Records arrived on an idle TLS session: 1 if they were TLS's own and
 * gave no byte of the protocol. */
static int
idle_tls(struct bw_session *s)
{
	uint8_t b;

	return bw_ctls_recv(s->ctls, &b, 1) < 0 && errno == EAGAIN;
}

int
bw_session_idle(struct bw_session *s, unsigned ms)
{
	uint64_t end = bw_now_ms() + ms, now;
	struct pollfd pfd;
	int n;

	while (s->fd >= 0 && (now = bw_now_ms()) < end) {
		pfd = (struct pollfd){.fd = s->fd, .events = POLLIN};
		n = poll(&pfd, 1, (int)(end - now));
		if (n < 0 && errno != EINTR)
			bw_session_close(s);
		if (n > 0 && s->ctls != NULL && idle_tls(s))
			continue; /* a record of TLS's own (a ticket) */
		if (n > 0)	  /* a close, an error or bytes out of turn */
			bw_session_close(s);
	}
	while ((now = bw_now_ms()) < end)
		(void)poll(NULL, 0, (int)(end - now));
	return s->fd < 0;
}
