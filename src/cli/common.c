/* Identity files and the blocking request/response session used by the
 * client subcommands.
 */
#include <errno.h>
#include <fcntl.h>
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

#define IDENTITY_MAX (64u * 1024u)

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

/* Returns the next line of text (without \r\n) and advances *pos. */
static char *
next_line(char *text, size_t len, size_t *pos)
{
	char *start;
	size_t i;

	if (*pos >= len)
		return NULL;
	start = text + *pos;
	for (i = *pos; i < len && text[i] != '\n'; i++)
		;
	text[i] = '\0';
	if (i > *pos && text[i - 1] == '\r')
		text[i - 1] = '\0';
	*pos = i + 1;
	return start;
}

static char *
trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		*--e = '\0';
	return s;
}

static int
has_control(const char *s)
{
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
	}
	return 0;
}

static int
key_from_b64(struct bw_identity *me, const char *b64, size_t n)
{
	uint8_t *der = NULL;
	size_t der_len = 0;
	int rc;

	if ((rc = bw_b64_decode(b64, n, &der, &der_len)) != 0)
		return rc;
	rc = bw_rsa_from_pkcs8(&me->key, der, der_len);
	bw_secure_free(der, der_len);
	return rc;
}

int
bw_identity_load(struct bw_identity *me, const char *path,
		 const char *priv_path, const char **why)
{
	char *text = NULL, *priv = NULL, *line, *rest;
	size_t len = 0, plen = 0, pos = 0;
	int rc;

	memset(me, 0, sizeof(*me));
	*why = NULL;
	if ((rc = bw_read_small_file(path, IDENTITY_MAX, &text, &len)) != 0) {
		*why = "cannot be read";
		return rc;
	}
	rc = BW_EPROTO;
	if ((line = next_line(text, len, &pos)) == NULL ||
	    *(line = trim(line)) == '\0' || strlen(line) > 254 ||
	    has_control(line)) {
		*why = "line 1 must be the name";
		goto out;
	}
	snprintf(me->name, sizeof(me->name), "%s", line);
	if ((line = next_line(text, len, &pos)) == NULL ||
	    bw_hex_decode(trim(line), strlen(trim(line)), me->id, BW_ID_LEN) !=
		    0) {
		*why = "line 2 must be the client id as 32 hex digits";
		goto out;
	}
	rest = pos < len ? text + pos : text + len;
	if (strspn(rest, " \t\r\n") != strlen(rest)) {
		if (key_from_b64(me, rest, strlen(rest)) != 0) {
			*why = "line 3 is not a base64 PKCS#8 RSA private key";
			goto out;
		}
	} else {
		if (bw_read_small_file(priv_path, IDENTITY_MAX, &priv, &plen) !=
			    0 ||
		    key_from_b64(me, priv, plen) != 0) {
			*why = "has no private key and priv.key is missing or "
			       "invalid";
			goto out;
		}
	}
	rc = 0;
out:
	bw_secure_free(text, len);
	bw_secure_free(priv, plen);
	if (rc != 0)
		bw_identity_fini(me);
	return rc;
}

/* The temporary files of the identity staged and not yet committed, kept
 * or abandoned: a process that ends at once (a tls:// server whose key is
 * in doubt) removes them first. */
static char pending_tmp[2][4096 + 32];

static void
pending_note(const struct bw_identity_stage *st)
{
	snprintf(pending_tmp[0], sizeof(pending_tmp[0]), "%s",
		 st != NULL ? st->tmp : "");
	snprintf(pending_tmp[1], sizeof(pending_tmp[1]), "%s",
		 st != NULL ? st->priv_tmp : "");
}

static void
pending_remove(void)
{
	unsigned i;

	for (i = 0; i < 2; i++)
		if (pending_tmp[i][0] != '\0')
			(void)unlink(pending_tmp[i]);
	pending_note(NULL);
}

int
bw_identity_stage(const struct bw_identity *me, const char *path,
		  const char *priv_path, struct bw_identity_stage *st)
{
	uint8_t *der = NULL;
	size_t der_len = 0, n = 0;
	char *b64 = NULL, *text = NULL;
	int rc, w;

	memset(st, 0, sizeof(*st));
	st->fd = st->priv_fd = -1;
	st->first = access(path, F_OK) != 0 && errno == ENOENT;
	snprintf(st->path, sizeof(st->path), "%s", path);
	if (priv_path != NULL)
		snprintf(st->priv_path, sizeof(st->priv_path), "%s", priv_path);
	if ((rc = bw_rsa_to_pkcs8(me->key, &der, &der_len)) != 0 ||
	    (rc = bw_b64_encode(der, der_len, &b64)) != 0)
		goto out;
	n = strlen(me->name) + 2 * BW_ID_LEN + strlen(b64) + 4;
	if ((text = malloc(n)) == NULL) {
		rc = BW_ENOMEM;
		goto out;
	}
	/* the id's place, filled in by bw_identity_commit */
	w = snprintf(text, n, "%s\n%0*d\n%s\n", me->name, 2 * BW_ID_LEN, 0,
		     b64);
	if (w < 0 || (size_t)w >= n) {
		rc = BW_ETOOBIG;
		goto out;
	}
	st->id_off = (long)strlen(me->name) + 1;
	if ((rc = bw_fs_stage(path, text, (size_t)w, 0600, st->tmp,
			      sizeof(st->tmp), &st->fd)) != 0)
		goto out;
	if (priv_path != NULL &&
	    (rc = bw_fs_stage(priv_path, b64, strlen(b64), 0600, st->priv_tmp,
			      sizeof(st->priv_tmp), &st->priv_fd)) != 0)
		bw_identity_abandon(st);
	else
		pending_note(st);
out:
	bw_secure_free(der, der_len);
	if (b64 != NULL)
		bw_secure_free(b64, strlen(b64));
	bw_secure_free(text, n);
	return rc;
}

/* tmp renamed to path unless path exists (-EEXIST): renameat2's
 * RENAME_NOREPLACE, or a link and an unlink where the file system has no
 * such rename, or, with no links either (vfat), a look then a rename,
 * which narrows the race to that moment. */
static int
rename_new(const char *tmp, const char *path)
{
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -errno;
	if (link(tmp, path) == 0) {
		(void)unlink(tmp);
		return 0;
	}
	if (errno != EPERM && errno != EOPNOTSUPP && errno != ENOSYS)
		return -errno;
	if (access(path, F_OK) == 0)
		return -EEXIST;
	return rename(tmp, path) == 0 ? 0 : -errno;
}

/* Puts a staged file in place (only if path is not there, when fresh);
 * on failure it stays where it is (it holds a private key the server now
 * knows). */
static int
publish(int *fd, char *tmp, const char *path, int fresh)
{
	int rc = fsync(*fd) != 0 ? -errno : 0;

	if (close(*fd) != 0 && rc == 0)
		rc = -errno;
	*fd = -1;
	if (rc == 0 && fresh)
		rc = rename_new(tmp, path);
	else if (rc == 0 && rename(tmp, path) != 0)
		rc = -errno;
	if (rc == 0)
		tmp[0] = '\0';
	return rc;
}

int
bw_identity_commit(struct bw_identity_stage *st, const uint8_t id[BW_ID_LEN])
{
	char hex[2 * BW_ID_LEN + 1];
	int rc;

	bw_hex_encode(id, BW_ID_LEN, hex);
	if (pwrite(st->fd, hex, 2 * BW_ID_LEN, st->id_off) != 2 * BW_ID_LEN)
		return errno ? -errno : -EIO;
	if ((rc = publish(&st->fd, st->tmp, st->path, st->first)) != 0)
		return rc;
	if (st->priv_fd >= 0 &&
	    (rc = publish(&st->priv_fd, st->priv_tmp, st->priv_path, 0)) != 0)
		return rc;
	pending_note(NULL);
	return bw_fs_sync_dir(st->path);
}

void
bw_identity_keep(struct bw_identity_stage *st)
{
	pending_note(NULL);
	if (st->fd >= 0)
		close(st->fd);
	if (st->priv_fd >= 0)
		close(st->priv_fd);
	st->fd = st->priv_fd = -1;
}

void
bw_identity_abandon(struct bw_identity_stage *st)
{
	bw_identity_keep(st);
	if (st->tmp[0] != '\0')
		(void)unlink(st->tmp);
	if (st->priv_tmp[0] != '\0')
		(void)unlink(st->priv_tmp);
	st->tmp[0] = st->priv_tmp[0] = '\0';
}

void
bw_identity_fini(struct bw_identity *me)
{
	bw_rsa_free(me->key);
	me->key = NULL;
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
			  s->timeout_ms, 1, why, sizeof(why));
	if (rc != 0) {
		/* not a failure to retry: no byte of the protocol may go to
		 * a server whose key is in doubt */
		fflush(stdout);
		fprintf(stderr, "bulwark: %s\n", why);
		pending_remove(); /* nothing was sent: nothing is staged */
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

int
bw_session_send(struct bw_session *s, const uint8_t id[BW_ID_LEN],
		uint16_t code, const void *payload, uint32_t len)
{
	int rc;

	if ((rc = bw_session_send_hdr(s, id, code, len)) != 0)
		return rc;
	if (len > 0)
		rc = bw_session_write(s, payload, len);
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
