/* Listening, accepting and connecting sockets, and exact-length blocking I/O
 * with timeouts for the client side.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bulwark/err.h"
#include "bulwark/net.h"
#include "bulwark/util.h"

int
bw_net_listen(const char *addr, uint16_t port, int backlog, int *fd,
	      uint16_t *bound)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	socklen_t sl;
	int s, one = 1, rc;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		sl = sizeof(*sin);
	} else if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		sl = sizeof(*sin6);
	} else {
		return BW_ECONFIG;
	}
	s = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	(void)setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* inherited by every accepted socket: no call per connection */
	(void)setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (bind(s, (struct sockaddr *)&ss, sl) != 0 ||
	    listen(s, backlog) != 0) {
		rc = -errno;
		close(s);
		return rc;
	}
	sl = sizeof(ss);
	if (getsockname(s, (struct sockaddr *)&ss, &sl) != 0) {
		rc = -errno;
		close(s);
		return rc;
	}
	*bound = ntohs(ss.ss_family == AF_INET ? sin->sin_port
					       : sin6->sin6_port);
	*fd = s;
	return 0;
}

int
bw_net_accept(int lfd, int *fd, char *peer, size_t peer_cap)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";
	int s;
	uint16_t port = 0;

	/* TCP_NODELAY comes from the listener (bw_net_listen) */
	s = accept4(lfd, (struct sockaddr *)&ss, &sl,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (s < 0)
		return -errno;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		port = ntohs(a->sin_port);
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		port = ntohs(a->sin6_port);
	}
	if (peer != NULL && peer_cap > 0)
		snprintf(peer, peer_cap, "%s:%u", host, port);
	*fd = s;
	return 0;
}

int
bw_net_is_loopback(const char *addr)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (inet_pton(AF_INET, addr, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, addr, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return BW_ECONFIG;
}

static int
connect_timed(int s, const struct sockaddr *sa, socklen_t sl,
	      unsigned timeout_ms)
{
	struct pollfd pfd;
	socklen_t el = sizeof(int);
	int flags, err = 0, n;

	flags = fcntl(s, F_GETFL);
	if (flags < 0 || fcntl(s, F_SETFL, flags | O_NONBLOCK) != 0)
		return -errno;
	if (connect(s, sa, sl) != 0) {
		if (errno != EINPROGRESS)
			return -errno;
		pfd.fd = s;
		pfd.events = POLLOUT;
		do {
			n = poll(&pfd, 1, (int)timeout_ms);
		} while (n < 0 && errno == EINTR);
		if (n == 0)
			return BW_ETIMEDOUT;
		if (n < 0)
			return -errno;
		if (getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
			return -errno;
		if (err != 0)
			return -err;
	}
	if (fcntl(s, F_SETFL, flags) != 0)
		return -errno;
	return 0;
}

int
bw_net_connect(const char *host, uint16_t port, unsigned timeout_ms, int *fd)
{
	struct addrinfo hints, *res = NULL, *ai;
	struct timeval tv;
	uint64_t end = bw_now_ms() + timeout_ms, now;
	char ps[8];
	int s = -1, rc = -ECONNREFUSED, one = 1;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(ps, sizeof(ps), "%u", port);
	if (getaddrinfo(host, ps, &hints, &res) != 0)
		return -EHOSTUNREACH;
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		/* timeout_ms bounds the connect, whatever the addresses */
		if ((now = bw_now_ms()) >= end) {
			rc = BW_ETIMEDOUT;
			break;
		}
		s = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
			   ai->ai_protocol);
		if (s < 0) {
			rc = -errno;
			continue;
		}
		if ((rc = connect_timed(s, ai->ai_addr, ai->ai_addrlen,
					(unsigned)(end - now))) == 0)
			break;
		close(s);
		s = -1;
	}
	freeaddrinfo(res);
	if (s < 0)
		return rc;
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	(void)setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	(void)setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	(void)setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	*fd = s;
	return 0;
}

int
bw_net_read_full(int fd, void *p, size_t n)
{
	uint8_t *b = p;
	ssize_t r;

	while (n > 0) {
		r = recv(fd, b, n, 0);
		if (r > 0) {
			b += r;
			n -= (size_t)r;
		} else if (r == 0) {
			return BW_ECLOSED;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			return BW_ETIMEDOUT;
		} else if (errno != EINTR) {
			return -errno;
		}
	}
	return 0;
}

int
bw_net_write_full(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;
	ssize_t r;

	while (n > 0) {
		r = send(fd, b, n, MSG_NOSIGNAL);
		if (r >= 0) {
			b += r;
			n -= (size_t)r;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			return BW_ETIMEDOUT;
		} else if (errno != EINTR) {
			return -errno;
		}
	}
	return 0;
}

/* A queue of the socket's, in bytes (SIOCOUTQ, SIOCINQ). */
static int
sock_queue(int fd, unsigned long which, size_t *out)
{
	int n = 0;

	if (ioctl(fd, which, &n) != 0)
		return -errno;
	*out = n > 0 ? (size_t)n : 0;
	return 0;
}

int
bw_net_unacked(int fd, size_t *out)
{
	return sock_queue(fd, SIOCOUTQ, out);
}

int
bw_net_unread(int fd, size_t *out)
{
	return sock_queue(fd, SIOCINQ, out);
}

int
bw_net_peer_shut(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
		return 0;
	return ti.tcpi_state == TCP_CLOSE_WAIT ||
	       ti.tcpi_state == TCP_LAST_ACK || ti.tcpi_state == TCP_CLOSING ||
	       ti.tcpi_state == TCP_CLOSE;
}
