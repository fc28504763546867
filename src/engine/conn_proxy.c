/* A connection from a load balancer (--proxy-from) starts with a PROXY
 * header naming the client: it is read before the service sees the
 * connection, and its address becomes the connection's for every
 * per-address limit, log line and metric. A connection from any other
 * address that starts with one is closed: nobody else may choose the
 * address it is counted under.
 */
#include <stdio.h>

#include "bulwark/log.h"
#include "engine/engine_int.h"

static void
refuse(struct bw_conn *c, const char *why)
{
	c->eng->proxy_refused++;
	c->flags &= ~(unsigned)BW_CONN_PROXY_WAIT;
	engine_conn_kill(c, why);
}

/* Its header has come: c is the client's now, to be started (2). */
static int
header_taken(struct bw_conn *c, const struct bw_proxy_hdr *h, size_t len)
{
	struct bw_listener *l = c->lis;
	struct bw_addr *addr;
	char why[160];

	bw_buf_consume(&c->in, len);
	c->flags &= ~(unsigned)BW_CONN_PROXY_WAIT;
	if (engine_tls_after_proxy(c) != 0) {
		engine_conn_kill(c, "out of memory");
		return 0;
	}
	c->eng->proxy_headers++;
	if (h->local) {
		/* the proxy's own connection (its health check): served
		 * under the proxy's address, its end not logged */
		c->eng->proxy_local++;
		c->flags |= BW_CONN_QUIET;
	} else {
		bw_debug("c%llu PROXY v%d: %s for %s",
			 (unsigned long long)c->id, h->version, c->peer,
			 h->peer);
		snprintf(c->peer, sizeof(c->peer), "%s", h->peer);
	}
	if (engine_addr_full(l, c->peer, &addr)) {
		l->refused++;
		snprintf(why, sizeof(why),
			 "connections from %s at the limit (%u)", c->peer,
			 l->cfg.max_conns_per_addr);
		engine_conn_kill(c, why);
		return 0;
	}
	return 2;
}

int
engine_conn_proxy_input(struct bw_conn *c)
{
	const uint8_t *p = bw_buf_head(&c->in);
	struct bw_proxy_hdr h;
	char why[160];
	ssize_t n;

	if (!(c->flags & BW_CONN_PROXY_WAIT)) {
		/* another address: its first six bytes may not open a header
		 * (a request's first six are a client id's or a line's, never
		 * "PROXY " or v2's signature); looked at once, while the
		 * service has consumed none of them */
		if ((c->flags & BW_CONN_PROXY_LOOKED) || c->in_total < 6)
			return 1;
		c->flags |= BW_CONN_PROXY_LOOKED;
		if (c->in.len == c->in_total &&
		    bw_proxy_looks_like(p, c->in.len)) {
			snprintf(why, sizeof(why),
				 "a PROXY header from %s, not a --proxy-from "
				 "address",
				 c->peer);
			refuse(c, why);
			return 0;
		}
		return 1;
	}
	n = bw_proxy_parse(p, c->in.len, &h);
	if (n == 0)
		return 0;
	if (n < 0) {
		snprintf(why, sizeof(why),
			 "no valid PROXY header from the proxy %s", c->peer);
		refuse(c, why);
		return 0;
	}
	return header_taken(c, &h, (size_t)n);
}
