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

#endif
