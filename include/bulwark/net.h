/* Sockets: non-blocking listeners and accepts for the daemon, blocking
 * connections with send/receive timeouts and whole-buffer I/O for clients.
 */
#ifndef BULWARK_NET_H
#define BULWARK_NET_H

#include <stddef.h>
#include <stdint.h>

#include "bulwark/err.h"

/* Binds and listens on addr (numeric IPv4 or IPv6; port 0 = ephemeral).
 * The socket is non-blocking and close-on-exec; *bound is the real port. */
int bw_net_listen(const char *addr, uint16_t port, int backlog, int *fd,
		  uint16_t *bound) BW_WUR;
/* Accepts one connection, non-blocking; -EAGAIN when none is waiting. */
int bw_net_accept(int lfd, int *fd, char *peer, size_t peer_cap) BW_WUR;
/* 1 if addr is a loopback address (127.0.0.0/8, ::1), 0 if not, or
 * BW_ECONFIG if it is not a numeric address. */
int bw_net_is_loopback(const char *addr);

/* Blocking connect to host:port (name or number) within timeout_ms, all
 * resolved addresses together (name resolution itself is not bounded); the
 * socket keeps timeout_ms as its send and receive timeout. */
int bw_net_connect(const char *host, uint16_t port, unsigned timeout_ms,
		   int *fd) BW_WUR;
/* Reads exactly n bytes: 0, BW_ECLOSED (end of stream first),
 * BW_ETIMEDOUT, or -errno. */
int bw_net_read_full(int fd, void *p, size_t n) BW_WUR;
/* Writes exactly n bytes (no SIGPIPE): 0, BW_ETIMEDOUT or -errno. */
int bw_net_write_full(int fd, const void *p, size_t n) BW_WUR;
/* Bytes written to the TCP socket fd that the peer has not acknowledged
 * (SIOCOUTQ): 0 once it has everything. -errno if it cannot tell. */
int bw_net_unacked(int fd, size_t *out) BW_WUR;
/* Bytes received on socket fd and not read yet (SIOCINQ). -errno if it
 * cannot tell. */
int bw_net_unread(int fd, size_t *out) BW_WUR;
/* 1 if the peer of TCP socket fd has closed its side (its FIN arrived,
 * read or not), 0 if not or if it cannot tell. */
int bw_net_peer_shut(int fd);

#endif
