/* libFuzzer harness for the PROXY protocol's header (engine/proxy.c), the
 * first bytes a load balancer's connection brings, and for the
 * --proxy-from list.
 *
 * Invariants (abort() on a violation): it never crashes; a header's length
 * is within the input and the caps (107 bytes for v1, 16 + 512 for v2);
 * every prefix of a complete header asks for more, and the header alone
 * gives the same header as with what followed it; a client's address is
 * "ADDR:PORT" with a port of at most 65535; an input refused as not
 * looking like a header is refused by the parser too; a list that parses
 * has at most 32 entries, and each entry of the list matches itself.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "engine/proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int ok)
{
	if (!ok)
		abort();
}

static void
header(const uint8_t *p, size_t n)
{
	struct bw_proxy_hdr h, h2;
	ssize_t k = bw_proxy_parse(p, n, &h), k2;
	const char *colon;
	size_t i;

	check(k == 0 || k == BW_EPROTO || (k > 0 && (size_t)k <= n));
	if (!bw_proxy_looks_like(p, n))
		check(k == BW_EPROTO);
	if (k <= 0)
		return;
	check(h.version == 1 || h.version == 2);
	check((size_t)k <=
	      (h.version == 1 ? BW_PROXY_V1_MAX : BW_PROXY_V2_MAX));
	if (!h.local) {
		check(memchr(h.peer, '\0', sizeof(h.peer)) != NULL);
		colon = strrchr(h.peer, ':');
		check(colon != NULL && colon != h.peer);
		check(strtoul(colon + 1, NULL, 10) <= 65535);
	}
	for (i = 0; i < (size_t)k; i++)
		check(bw_proxy_parse(p, i, &h2) == 0);
	k2 = bw_proxy_parse(p, (size_t)k, &h2);
	check(k2 == k && h2.local == h.local && h2.version == h.version &&
	      strcmp(h2.peer, h.peer) == 0);
}

static void
list(const uint8_t *p, size_t n)
{
	struct bw_proxy_nets nets;
	char text[600], why[200];
	unsigned i;

	if (n >= sizeof(text))
		n = sizeof(text) - 1;
	memcpy(text, p, n);
	text[n] = '\0';
	if (bw_proxy_nets_parse(text, &nets, why, sizeof(why)) != 0) {
		check(why[0] != '\0');
		return;
	}
	check(nets.n <= BW_PROXY_NETS_MAX);
	for (i = 0; i < nets.n; i++)
		check(nets.net[i].bits <= (nets.net[i].v6 ? 128u : 32u));
	(void)bw_proxy_nets_has(&nets, "127.0.0.1");
	(void)bw_proxy_nets_has(&nets, "::ffff:10.0.0.1");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1)
		list(data + 1, size - 1);
	else
		header(data + 1, size - 1);
	return 0;
}
