/* Between the bus's two files: where Redis is (bus_reply.c parses the URL
 * into it, bus.c connects there). Internal to src/host/bus/.
 */
#ifndef BULWARK_HOST_BUS_INT_H
#define BULWARK_HOST_BUS_INT_H

#include <stddef.h>

#include "host/bus/bus.h"

struct bus_where {
	char host[256], user[128], password[256], shown[320];
	int port, db;
};

/* redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] into b: 0, or BW_ECONFIG
 * with a reason (naming --bus) in why. */
int bus_parse_url(struct bus_where *b, const char *url, char *why,
		  size_t cap) BW_WUR;

/* bus_lookup.c: the host's address, looked up on a worker of loop (not by
 * hiredis, on the loop); done(arg, addr, NULL) or done(arg, NULL, why)
 * follows on the loop, unless cancelled first. */
struct bw_loop;
struct bus_lookup;
typedef void (*bus_lookup_fn)(void *arg, const char *addr, const char *why);
/* Whether host is an address already (IPv4 or IPv6), not a name. */
int bus_host_numeric(const char *host);
int bus_lookup_start(struct bw_loop *loop, const char *host, bus_lookup_fn done,
		     void *arg, struct bus_lookup **out) BW_WUR;
/* done will not be called; l is freed when its job ends. NULL-safe. */
void bus_lookup_cancel(struct bus_lookup *l);

#endif
