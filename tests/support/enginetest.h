/* Running the real engine inside a unit test: an engine without signal
 * handling, listeners on 127.0.0.1 and ephemeral ports, blocking client
 * sockets, and pump() to run the loop for a slice of time. Header-only:
 * each test binary includes it once.
 */
#ifndef BULWARK_TESTS_ENGINETEST_H
#define BULWARK_TESTS_ENGINETEST_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "bulwark/util.h"
#include "engine/engine.h"

static uint64_t pump_until_ms;
static struct bw_engine *et_engine; /* the one et_open opened last */

static void
pump_tick(void *arg)
{
	struct bw_engine *e = arg;

	if (bw_now_ms() >= pump_until_ms)
		bw_loop_stop(e->loop);
}

/* Opens e with one worker and a 1 ms tick that ends each pump. */
static int
et_open(struct bw_engine *e)
{
	struct bw_engine_cfg cfg = {.workers = 1, .shutdown_grace_ms = 1000};
	int rc;

	if ((rc = bw_engine_open(e, &cfg, 0)) != 0)
		return rc;
	et_engine = e;
	return bw_loop_every(e->loop, 1, pump_tick, e);
}

/* A listener cfg with generous limits; tests narrow what they test. */
static struct bw_listen_cfg
et_listen_cfg(void)
{
	struct bw_listen_cfg c;

	memset(&c, 0, sizeof(c));
	snprintf(c.addr, sizeof(c.addr), "127.0.0.1");
	c.max_conns = 64;
	c.lim.in_max = 64 * 1024;
	c.lim.out_max = 1024 * 1024;
	c.lim.idle_ms = 10000;
	c.lim.request_ms = 10000;
	return c;
}

/* Runs the loop for about ms milliseconds. */
static void
pump(struct bw_engine *e, unsigned ms)
{
	pump_until_ms = bw_now_ms() + ms;
	(void)bw_loop_run(e->loop);
}

/* A blocking client socket connected to l, with a 2 s receive timeout. */
static int
et_connect(const struct bw_listener *l)
{
	struct sockaddr_in a;
	struct timeval tv = {2, 0};
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(l->port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		return -1;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	/* small writes leave at once (no Nagle wait for a delayed ACK) */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Reads until n bytes, end of stream or 3 s, running the loop between
 * tries (the server answers only while it runs); returns the count. */
static size_t
et_read(int fd, void *p, size_t n)
{
	uint64_t until = bw_now_ms() + 3000;
	size_t got = 0;
	ssize_t r;

	while (got < n && bw_now_ms() < until) {
		r = recv(fd, (char *)p + got, n - got, MSG_DONTWAIT);
		if (r == 0)
			break;
		if (r > 0)
			got += (size_t)r;
		else
			pump(et_engine, 2);
	}
	return got;
}

/* 1 if the peer closes (end of stream) within ms of running the loop, 0 if
 * not. */
static int
et_closed(int fd, unsigned ms)
{
	uint64_t until = bw_now_ms() + ms;
	char b;
	ssize_t r;

	do {
		r = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
		if (r == 0 || (r < 0 && errno != EAGAIN))
			return 1;
		if (r > 0)
			return 0;
		pump(et_engine, 2);
	} while (bw_now_ms() < until);
	return 0;
}

#endif
