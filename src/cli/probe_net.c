/* The probe's connections: plain blocking sockets driven by poll() with a
 * deadline per read, every byte sent and received written into the running
 * case's transcript (the first 64 of each piece, escaped).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bulwark/err.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "cli/probe_int.h"

#define SHOWN 64u

static void
show(struct probe *p, const char *dir, const void *b, size_t n)
{
	const unsigned char *s = b;
	char out[SHOWN * 4 + 8];
	size_t i, o = 0;

	for (i = 0; i < n && i < SHOWN; i++) {
		if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\')
			out[o++] = (char)s[i];
		else
			o += (size_t)snprintf(out + o, sizeof(out) - o,
					      "\\x%02x", s[i]);
	}
	out[o] = '\0';
	probe_say(p, "  %s %zu bytes: %s%s", dir, n, out,
		  n > SHOWN ? " ..." : "");
}

int
pc_open(struct probe *p, struct pconn *c)
{
	int rc;

	c->p = p;
	c->fd = -1;
	rc = bw_net_connect(p->host, p->port, p->timeout_ms, &c->fd);
	if (rc != 0) {
		probe_say(p, "  connect to %s:%u: %s", p->host, p->port,
			  bw_strerror(rc));
		c->fd = -1;
		return -1;
	}
	return 0;
}

void
pc_close(struct pconn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

void
pc_abort(struct pconn *c)
{
	struct linger lg = {1, 0};

	if (c->fd >= 0)
		(void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	pc_close(c);
}

int
pc_send_slowly(struct pconn *c, const void *b, size_t n, size_t piece,
	       unsigned gap_ms)
{
	const unsigned char *s = b;
	size_t off = 0;

	show(c->p, ">", b, n);
	if (c->fd < 0)
		return -1;
	while (off < n) {
		size_t k = piece > 0 && n - off > piece ? piece : n - off;
		int rc = bw_net_write_full(c->fd, s + off, k);

		if (rc != 0) {
			probe_say(c->p, "  send: %s", bw_strerror(rc));
			return -1;
		}
		off += k;
		if (off < n && gap_ms > 0)
			usleep(gap_ms * 1000u);
	}
	return 0;
}

int
pc_send(struct pconn *c, const void *b, size_t n)
{
	return pc_send_slowly(c, b, n, 0, 0);
}

/* Waits for the socket to be readable until the deadline: 1, 0 at the
 * deadline, -1 on an error. */
static int
readable(int fd, uint64_t until)
{
	for (;;) {
		uint64_t now = bw_now_ms();
		struct pollfd pf = {fd, POLLIN, 0};
		int r = poll(&pf, 1, now < until ? (int)(until - now) : 0);

		if (r >= 0)
			return r > 0;
		if (errno != EINTR)
			return -1;
	}
}

int
pc_recv(struct pconn *c, void *b, size_t n, unsigned ms, size_t *got)
{
	uint64_t until = bw_now_ms() + ms;
	size_t have = 0;
	int rc = 0;

	while (have < n) {
		ssize_t r;
		int w = c->fd < 0 ? -1 : readable(c->fd, until);

		if (w <= 0) {
			rc = w == 0 ? PC_TIMEOUT : PC_ERROR;
			break;
		}
		r = recv(c->fd, (char *)b + have, n - have, 0);
		if (r == 0) {
			rc = PC_CLOSED;
			break;
		}
		if (r < 0 && errno != EINTR && errno != EAGAIN) {
			rc = errno == ECONNRESET ? PC_CLOSED : PC_ERROR;
			break;
		}
		if (r > 0)
			have += (size_t)r;
	}
	if (have > 0)
		show(c->p, "<", b, have);
	if (rc == PC_CLOSED)
		probe_say(c->p, "  < the connection closed");
	else if (rc == PC_TIMEOUT)
		probe_say(c->p, "  < nothing more within %u ms", ms);
	if (got != NULL)
		*got = have;
	return rc;
}

long
pc_recv_until(struct pconn *c, char *b, size_t cap, const char *until,
	      unsigned ms, int *eof)
{
	uint64_t end = bw_now_ms() + ms;
	size_t have = 0;

	*eof = 0;
	while (have + 1 < cap) {
		ssize_t r;
		int w = c->fd < 0 ? -1 : readable(c->fd, end);

		if (w < 0)
			return PC_ERROR;
		if (w == 0)
			break;
		r = recv(c->fd, b + have, cap - 1 - have, 0);
		if (r <= 0) {
			if (r < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			*eof = 1;
			break;
		}
		have += (size_t)r;
		b[have] = '\0';
		if (until != NULL && memmem(b, have, until, strlen(until)))
			break;
	}
	b[have] = '\0';
	if (have > 0)
		show(c->p, "<", b, have);
	if (*eof)
		probe_say(c->p, "  < the connection closed");
	return (long)have;
}

int
pc_closes(struct pconn *c, unsigned ms)
{
	char b[256];
	size_t got = 0;
	int rc = pc_recv(c, b, sizeof(b), ms, &got);

	if (got > 0)
		return PC_ERROR;
	if (rc == PC_CLOSED)
		return 1;
	return rc == PC_TIMEOUT ? 0 : PC_ERROR;
}

void
pc_end(struct pconn *c, unsigned ms)
{
	uint64_t until = bw_now_ms() + ms;
	char b[4096];

	if (c->fd >= 0)
		(void)shutdown(c->fd, SHUT_WR);
	while (c->fd >= 0 && readable(c->fd, until) > 0) {
		ssize_t r = recv(c->fd, b, sizeof(b), 0);

		if (r <= 0 && !(r < 0 && errno == EINTR))
			break;
	}
	pc_close(c);
}

int
pc_alive(struct probe *p)
{
	int fd = -1;

	if (bw_net_connect(p->host, p->port, p->timeout_ms, &fd) != 0)
		return 0;
	close(fd);
	return 1;
}
