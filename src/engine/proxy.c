/* The PROXY protocol's header, versions 1 (a text line) and 2 (binary),
 * and the list of addresses allowed to send it (proxy.h).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "bulwark/err.h"
#include "engine/proxy.h"

static const uint8_t v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				   0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
static const char v1_sig[] = "PROXY ";

int
bw_proxy_looks_like(const uint8_t *p, size_t n)
{
	size_t k1 = n < 6 ? n : 6, k2 = n < 12 ? n : 12;

	return memcmp(p, v1_sig, k1) == 0 || memcmp(p, v2_sig, k2) == 0;
}

/* --- version 1: "PROXY TCP4 SRC DST SPORT DPORT\r\n" -------------------- */

/* The next space-separated field of line[*at..end): copied to out. */
static int
field(const char *line, size_t end, size_t *at, char *out, size_t cap)
{
	size_t i = *at, n = 0;

	while (i < end && line[i] != ' ') {
		if (n + 1 >= cap)
			return BW_EPROTO;
		out[n++] = line[i++];
	}
	if (n == 0)
		return BW_EPROTO;
	out[n] = '\0';
	*at = i < end ? i + 1 : i; /* past one space */
	return 0;
}

static int
port_of(const char *s, unsigned *port)
{
	unsigned v = 0;
	size_t i;

	/* 1 to 5 digits, no leading zero (as the specification writes
	 * them), at most 65535 */
	if (s[0] == '\0' || strlen(s) > 5 || (s[0] == '0' && s[1] != '\0'))
		return BW_EPROTO;
	for (i = 0; s[i] != '\0'; i++) {
		if (s[i] < '0' || s[i] > '9')
			return BW_EPROTO;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return BW_EPROTO;
	*port = v;
	return 0;
}

static ssize_t
parse_v1(const uint8_t *p, size_t n, struct bw_proxy_hdr *h)
{
	const char *line = (const char *)p;
	char proto[8], src[48], dst[48], sport[8], dport[8];
	uint8_t bin[16];
	size_t end, at = 6;
	unsigned sp, dp;
	int af;

	/* printable up to a CR, then LF; at most 107 bytes with them */
	for (end = 0; end < n; end++) {
		if (p[end] == '\r')
			break;
		if (p[end] < 0x20 || p[end] > 0x7e ||
		    end + 2 >= BW_PROXY_V1_MAX)
			return BW_EPROTO;
	}
	if (end + 1 >= n)
		return 0;
	if (p[end + 1] != '\n')
		return BW_EPROTO;
	h->version = 1;
	if (end >= 13 && memcmp(line + 6, "UNKNOWN", 7) == 0) {
		/* the proxy does not know the source: anything may follow */
		h->local = 1;
		return (ssize_t)(end + 2);
	}
	if (field(line, end, &at, proto, sizeof(proto)) != 0 ||
	    field(line, end, &at, src, sizeof(src)) != 0 ||
	    field(line, end, &at, dst, sizeof(dst)) != 0 ||
	    field(line, end, &at, sport, sizeof(sport)) != 0 ||
	    field(line, end, &at, dport, sizeof(dport)) != 0 || at != end ||
	    line[end - 1] == ' ')
		return BW_EPROTO;
	if (strcmp(proto, "TCP4") == 0)
		af = AF_INET;
	else if (strcmp(proto, "TCP6") == 0)
		af = AF_INET6;
	else
		return BW_EPROTO;
	if (inet_pton(af, src, bin) != 1 || inet_pton(af, dst, bin) != 1 ||
	    port_of(sport, &sp) != 0 || port_of(dport, &dp) != 0)
		return BW_EPROTO;
	h->local = 0;
	snprintf(h->peer, sizeof(h->peer), "%s:%u", src, sp);
	return (ssize_t)(end + 2);
}

/* --- version 2 ------------------------------------------------------------ */

static ssize_t
parse_v2(const uint8_t *p, size_t n, struct bw_proxy_hdr *h)
{
	char host[INET6_ADDRSTRLEN];
	size_t len, total;
	unsigned cmd, fam;

	if (n < 16)
		return 0;
	if ((p[12] >> 4) != 2)
		return BW_EPROTO;
	cmd = p[12] & 0x0f;
	fam = p[13];
	len = (size_t)p[14] << 8 | p[15];
	total = 16 + len;
	if (cmd > 1 || total > BW_PROXY_V2_MAX)
		return BW_EPROTO;
	if (n < total)
		return 0;
	h->version = 2;
	h->local = 1;
	if (cmd == 0)
		return (ssize_t)total; /* LOCAL: the address block is ignored */
	switch (fam) {
	case 0x11: /* TCP over IPv4: src, dst, sport, dport */
		if (len < 12)
			return BW_EPROTO;
		inet_ntop(AF_INET, p + 16, host, sizeof(host));
		snprintf(h->peer, sizeof(h->peer), "%s:%u", host,
			 (unsigned)p[24] << 8 | p[25]);
		h->local = 0;
		break;
	case 0x21: /* TCP over IPv6 */
		if (len < 36)
			return BW_EPROTO;
		inet_ntop(AF_INET6, p + 16, host, sizeof(host));
		snprintf(h->peer, sizeof(h->peer), "%s:%u", host,
			 (unsigned)p[48] << 8 | p[49]);
		h->local = 0;
		break;
	case 0x00: /* UNSPEC: the connection's own address holds */
		break;
	default: /* UDP, unix sockets: not a TCP client of ours */
		return BW_EPROTO;
	}
	return (ssize_t)total;
}

ssize_t
bw_proxy_parse(const uint8_t *p, size_t n, struct bw_proxy_hdr *h)
{
	memset(h, 0, sizeof(*h));
	if (!bw_proxy_looks_like(p, n))
		return BW_EPROTO;
	if (n < 6)
		return 0;
	if (memcmp(p, v1_sig, 6) == 0)
		return parse_v1(p, n, h);
	if (n < 12)
		return 0;
	return parse_v2(p, n, h);
}

/* --- who may send one -------------------------------------------------------
 */

static int
net_parse(const char *s, size_t n, struct bw_proxy_net *net)
{
	char text[INET6_ADDRSTRLEN + 8];
	const char *slash;
	unsigned bits = 0, max;
	size_t alen;

	if (n == 0 || n >= sizeof(text))
		return BW_ECONFIG;
	memcpy(text, s, n);
	text[n] = '\0';
	slash = strchr(text, '/');
	alen = slash != NULL ? (size_t)(slash - text) : n;
	text[alen] = '\0';
	memset(net, 0, sizeof(*net));
	if (inet_pton(AF_INET, text, net->addr) == 1) {
		max = 32;
	} else if (inet_pton(AF_INET6, text, net->addr) == 1) {
		net->v6 = 1;
		max = 128;
	} else {
		return BW_ECONFIG;
	}
	if (slash == NULL) {
		bits = max;
	} else {
		const char *b = slash + 1;

		if (*b == '\0' || strlen(b) > 3)
			return BW_ECONFIG;
		for (; *b != '\0'; b++) {
			if (*b < '0' || *b > '9')
				return BW_ECONFIG;
			bits = bits * 10 + (unsigned)(*b - '0');
		}
		if (bits > max)
			return BW_ECONFIG;
	}
	net->bits = bits;
	return 0;
}

int
bw_proxy_nets_parse(const char *s, struct bw_proxy_nets *out, char *why,
		    size_t cap)
{
	const char *p = s, *comma;
	size_t n;

	memset(out, 0, sizeof(*out));
	while (*p == ' ')
		p++;
	if (*p == '\0')
		return 0; /* none: the protocol is off */
	for (;;) {
		while (*p == ' ')
			p++;
		comma = strchr(p, ',');
		n = comma != NULL ? (size_t)(comma - p) : strlen(p);
		while (n > 0 && p[n - 1] == ' ')
			n--;
		if (out->n == BW_PROXY_NETS_MAX) {
			snprintf(why, cap, "more than %d addresses",
				 BW_PROXY_NETS_MAX);
			return BW_ECONFIG;
		}
		if (net_parse(p, n, &out->net[out->n]) != 0) {
			snprintf(why, cap,
				 "'%.*s' is not an address (ADDR or ADDR/BITS)",
				 (int)(n > 64 ? 64 : n), p);
			return BW_ECONFIG;
		}
		out->n++;
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	return 0;
}

static int
prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned whole = bits / 8, rest = bits % 8;
	uint8_t mask;

	if (memcmp(a, b, whole) != 0)
		return 0;
	if (rest == 0)
		return 1;
	mask = (uint8_t)(0xff << (8 - rest));
	return (a[whole] & mask) == (b[whole] & mask);
}

int
bw_proxy_nets_has(const struct bw_proxy_nets *nets, const char *addr)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0,    0,
					   0, 0, 0, 0, 0xff, 0xff};
	uint8_t a4[4], a6[16];
	int is4 = inet_pton(AF_INET, addr, a4) == 1, is6 = 0;
	unsigned i;

	if (!is4 && inet_pton(AF_INET6, addr, a6) == 1) {
		is6 = 1;
		if (memcmp(a6, mapped, 12) == 0) {
			memcpy(a4, a6 + 12, 4);
			is4 = 1;
		}
	}
	for (i = 0; i < nets->n; i++) {
		const struct bw_proxy_net *n = &nets->net[i];

		if (!n->v6 && is4 && prefix_eq(n->addr, a4, n->bits))
			return 1;
		if (n->v6 && is6 && prefix_eq(n->addr, a6, n->bits))
			return 1;
	}
	return 0;
}
