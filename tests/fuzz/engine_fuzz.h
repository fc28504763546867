/* Running a service on the real engine inside a libFuzzer harness: one
 * engine per process (no signals, one worker, logging errors only), a
 * listener on 127.0.0.1 and an ephemeral port, and one exchange per input:
 * a client connects, writes the input in one to three pieces (the loop
 * runs between them, so the service sees each arrive), shuts its write
 * side (unless the server has closed already), and reads everything until
 * the server closes; it closes with a reset. The loop is run a
 * pass at a time, never waiting, so an exchange takes well under a
 * millisecond of loop time. Header-only: each harness includes it once.
 */
#ifndef BULWARK_TESTS_ENGINE_FUZZ_H
#define BULWARK_TESTS_ENGINE_FUZZ_H

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bulwark/log.h"
#include "bulwark/util.h"
#include "engine/engine.h"

/* A server that has not closed this long after the client's end of
 * stream fails the input: it would hold the connection. */
#define EF_CLOSE_MS 2000u
#define EF_OUT_CAP  (8u * 1024u * 1024u)
/* descriptors an input may leave open beyond those of the first one */
#define EF_FD_SLACK 8

struct ef_out {
	uint8_t *p;
	size_t len, cap;
	int eof;   /* the server closed in order */
	int reset; /* or reset the connection */
};

static inline void
ef_die(const char *what)
{
	fprintf(stderr, "engine harness: %s\n", what);
	abort();
}

static inline void
ef_stop(void *arg)
{
	bw_loop_stop(arg);
}

/* One pass of e's loop: the events ready now, timers, deferred calls and
 * the output flush; it does not wait. */
static inline void
ef_pass(struct bw_engine *e)
{
	static struct bw_call stop;

	bw_loop_call(e->loop, &stop, ef_stop, e->loop);
	if (bw_loop_run(e->loop) != 0)
		ef_die("the loop failed");
}

static inline void
ef_open(struct bw_engine *e)
{
	struct bw_engine_cfg cfg = {.workers = 1, .shutdown_grace_ms = 1000};

	bw_log_set_level(BW_LOG_ERROR);
	if (bw_engine_open(e, &cfg, 0) != 0)
		ef_die("cannot open the engine");
}

/* A listener cfg on 127.0.0.1, any port, with lim. */
static inline struct bw_listen_cfg
ef_listen_cfg(const char *name, const struct bw_conn_limits *lim)
{
	struct bw_listen_cfg c;

	memset(&c, 0, sizeof(c));
	snprintf(c.name, sizeof(c.name), "%s", name);
	snprintf(c.addr, sizeof(c.addr), "127.0.0.1");
	c.max_conns = 64;
	c.lim = *lim;
	c.evict = BW_EVICT_UNPROVEN;
	return c;
}

/* Reads what the server sent so far into o. */
static inline void
ef_drain(int fd, struct ef_out *o)
{
	ssize_t r;
	uint8_t *grown;

	while (!o->eof && !o->reset) {
		if (o->cap - o->len < 65536) {
			if (o->cap >= EF_OUT_CAP)
				ef_die("the server sent more than 8 MiB");
			if ((grown = realloc(o->p, o->cap + 262144)) == NULL)
				ef_die("out of memory");
			o->p = grown;
			o->cap += 262144;
		}
		r = recv(fd, o->p + o->len, o->cap - o->len, MSG_DONTWAIT);
		if (r > 0) {
			o->len += (size_t)r;
			continue;
		}
		if (r == 0)
			o->eof = 1;
		else if (errno == ECONNRESET)
			o->reset = 1;
		else if (errno != EAGAIN && errno != EINTR)
			ef_die("recv failed");
		return;
	}
}

/* Writes p[0..n) (as much as the server takes: it may have closed). */
static inline void
ef_write(struct bw_engine *e, int fd, const uint8_t *p, size_t n,
	 struct ef_out *o)
{
	uint64_t until = bw_now_ms() + EF_CLOSE_MS;
	ssize_t w;

	while (n > 0) {
		w = send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno != EAGAIN && errno != EINTR)
			return; /* closed by the server */
		if (bw_now_ms() > until)
			ef_die("the server does not read");
		ef_pass(e);
		ef_drain(fd, o);
	}
}

/* A client socket connected to l (the engine accepts it on the next
 * pass): non-blocking, without Nagle's wait, closed with a reset, and from
 * the next of 64516 loopback addresses (127.1.1.1 to 127.1.254.254), so
 * that tens of thousands of connections a minute find no TIME_WAIT of an
 * earlier one on their address and port (a SYN that meets one may wait a
 * second for its retransmission); -1 if it cannot connect. */
static inline int
ef_connect(const struct bw_listener *l)
{
	static const struct linger abort_close = {1, 0};
	static unsigned next;
	struct sockaddr_in a;
	struct pollfd pfd;
	socklen_t len = sizeof(int);
	int fd, one = 1, err = 0, r;
	unsigned k = next++ % (254u * 254u);

	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
			 0)) < 0)
		return -1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_close,
			 sizeof(abort_close));
	(void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
			 sizeof(one));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr =
		htonl(0x7f010000u | (k / 254u + 1u) << 8 | (k % 254u + 1u));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
		goto fail;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(l->port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		if (errno != EINPROGRESS)
			goto fail;
		pfd.fd = fd;
		pfd.events = POLLOUT;
		do {
			r = poll(&pfd, 1, (int)EF_CLOSE_MS);
		} while (r < 0 && errno == EINTR);
		if (r != 1 ||
		    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
		    err != 0)
			goto fail;
	}
	return fd;
fail:
	perror("engine harness: connect");
	close(fd);
	return -1;
}

/* Where the input is cut: how (the first byte: 1 to 3 pieces, and where)
 * applied to n bytes; returns the number of pieces, cuts[0..pieces-1) the
 * ends of all but the last. */
static inline unsigned
ef_cuts(uint8_t how, size_t n, size_t cuts[2])
{
	unsigned pieces = how % 3u + 1u;
	size_t a = n * (((how >> 2) & 7u) + 1u) / 9u;
	size_t b = a + (n - a) * (((how >> 5) & 7u) + 1u) / 9u;

	cuts[0] = a;
	cuts[1] = b;
	return pieces;
}

/* One exchange with the listener l on e: p[0..n) in pieces as how says,
 * then the end of stream; everything the server sent until it closed is
 * in o (o->p is the caller's to free). Fails the input if the server
 * does not close within EF_CLOSE_MS, or its connection is still open on
 * the engine after that. */
static inline void
ef_exchange(struct bw_engine *e, const struct bw_listener *l, uint8_t how,
	    const uint8_t *p, size_t n, struct ef_out *o)
{
	size_t cuts[2], from = 0, to;
	unsigned pieces = ef_cuts(how, n, cuts), i;
	uint64_t until;
	int fd;

	memset(o, 0, sizeof(*o));
	if ((fd = ef_connect(l)) < 0)
		ef_die("cannot connect");
	ef_pass(e); /* accepted */
	for (i = 0; i < pieces; i++) {
		to = i + 1 < pieces ? cuts[i] : n;
		ef_write(e, fd, p + from, to - from, o);
		from = to;
		ef_pass(e);
		ef_pass(e);
		ef_drain(fd, o);
	}
	/* the end of stream; a server that closed first is reset instead,
	 * so that its side leaves no TIME_WAIT behind either */
	if (!o->eof && !o->reset)
		(void)shutdown(fd, SHUT_WR);
	until = bw_now_ms() + EF_CLOSE_MS;
	while (!o->eof && !o->reset) {
		ef_pass(e);
		ef_drain(fd, o);
		if (!o->eof && !o->reset && bw_now_ms() > until)
			ef_die("the server did not close the connection");
	}
	close(fd);
	while (e->conns_n > 0) {
		ef_pass(e);
		if (e->conns_n > 0 && bw_now_ms() > until + EF_CLOSE_MS)
			ef_die("a connection is still open on the engine");
	}
}

/* Open descriptors of the process. */
static inline unsigned
ef_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	unsigned n = 0;

	if (d == NULL)
		return 0;
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n;
}

/* Fails the input if the process holds more descriptors than after the
 * first input, give or take EF_FD_SLACK (libFuzzer's own come and go). */
static inline void
ef_check_fds(void)
{
	static unsigned first;
	unsigned now = ef_fds();

	if (first == 0)
		first = now;
	else if (now > first + EF_FD_SLACK)
		ef_die("descriptors leak");
}

#endif
