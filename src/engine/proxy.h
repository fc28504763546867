/* The PROXY protocol (versions 1 and 2, as HAProxy's send-proxy and
 * send-proxy-v2 send it): a load balancer in front of the daemon opens each
 * connection with a header naming the client's address. Only the addresses
 * given with --proxy-from may send one; from them, one is required.
 *
 * The parser takes bytes as they arrive and never reads past the header:
 * what follows it is the client's first request.
 */
#ifndef BULWARK_ENGINE_PROXY_H
#define BULWARK_ENGINE_PROXY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The longest header accepted: a v1 line is at most 107 bytes; a v2 header
 * is 16 bytes and its addresses and TLVs (HAProxy sends a few dozen). */
#define BW_PROXY_V1_MAX	  107
#define BW_PROXY_V2_MAX	  (16 + 512)
#define BW_PROXY_NETS_MAX 32

struct bw_proxy_hdr {
	/* 1: a v2 LOCAL header (a health check of the proxy's own) or a
	 * v1 UNKNOWN / v2 UNSPEC one: the connection's own address holds */
	int local;
	int version;   /* 1 or 2 */
	char peer[64]; /* the client as "ADDR:PORT" (when !local) */
};

/* Bytes p[0..n) from the start of a connection: the header's length (> 0)
 * once it is complete and valid, 0 while more is needed, BW_EPROTO if it
 * is not a PROXY header or is malformed. */
ssize_t bw_proxy_parse(const uint8_t *p, size_t n, struct bw_proxy_hdr *h);

/* 1 if p[0..n) begins with a PROXY header's signature ("PROXY " or v2's
 * 12 bytes), as far as n reaches; 0 if it cannot be one. */
int bw_proxy_looks_like(const uint8_t *p, size_t n);

/* Addresses (and networks, ADDR/BITS) allowed to send headers. */
struct bw_proxy_net {
	int v6;
	uint8_t addr[16];
	unsigned bits;
};

struct bw_proxy_nets {
	unsigned n;
	struct bw_proxy_net net[BW_PROXY_NETS_MAX];
};

/* "ADDR[/BITS][,ADDR[/BITS]...]" (spaces allowed after commas); "" is the
 * empty list. 0, or BW_ECONFIG with a reason in why. */
int bw_proxy_nets_parse(const char *s, struct bw_proxy_nets *out, char *why,
			size_t cap);

/* 1 if the address text (as in a peer "ADDR:PORT" without the port; an
 * IPv4-mapped IPv6 address counts as its IPv4 address) is in nets. */
int bw_proxy_nets_has(const struct bw_proxy_nets *nets, const char *addr);

#endif
