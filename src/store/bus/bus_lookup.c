/* The bus's Redis host, looked up on a worker (bus_int.h). hiredis looks a
 * name up inside redisAsyncConnect, on the calling thread: a slow or dead
 * resolver (often the same incident that took Redis away) would hold the
 * loop for its timeout at every reconnection. Internal to src/host/bus/.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "bulwark/loop.h"
#include "store/bus/bus_int.h"

struct bus_lookup {
	bus_lookup_fn done; /* NULL once cancelled */
	void *arg;
	char host[sizeof(((struct bus_where *)0)->host)];
	char addr[NI_MAXHOST]; /* a scoped IPv6 address too */
	int gai;	       /* getaddrinfo's answer */
};

int
bus_host_numeric(const char *host)
{
	unsigned char a[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, host, a) == 1 ||
	       inet_pton(AF_INET6, host, a) == 1;
}

/* IPv4 first, then IPv6, as hiredis itself looks: "localhost" is ::1
 * first in many an /etc/hosts, and Redis listens on 127.0.0.1 by
 * default. */
static void
lookup_work(void *arg)
{
	static const int families[] = {AF_INET, AF_INET6};
	struct bus_lookup *l = arg;
	struct addrinfo hints, *ai = NULL;
	size_t i;

	for (i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		memset(&hints, 0, sizeof(hints));
		hints.ai_family = families[i];
		hints.ai_socktype = SOCK_STREAM;
		if ((l->gai = getaddrinfo(l->host, NULL, &hints, &ai)) == 0)
			break;
	}
	if (l->gai != 0)
		return;
	if (getnameinfo(ai->ai_addr, ai->ai_addrlen, l->addr, sizeof(l->addr),
			NULL, 0, NI_NUMERICHOST) != 0)
		l->gai = EAI_FAIL;
	freeaddrinfo(ai);
}

static void
lookup_done(void *arg)
{
	struct bus_lookup *l = arg;
	char why[320];

	if (l->done != NULL && l->gai != 0) {
		snprintf(why, sizeof(why), "cannot look up %s: %s", l->host,
			 gai_strerror(l->gai));
		l->done(l->arg, NULL, why);
	} else if (l->done != NULL) {
		l->done(l->arg, l->addr, NULL);
	}
	free(l);
}

int
bus_lookup_start(struct bw_loop *loop, const char *host, bus_lookup_fn done,
		 void *arg, struct bus_lookup **out)
{
	struct bus_lookup *l = calloc(1, sizeof(*l));

	*out = NULL;
	if (l == NULL)
		return BW_ENOMEM;
	if (strlen(host) >= sizeof(l->host)) {
		free(l);
		return BW_ETOOBIG;
	}
	l->done = done;
	l->arg = arg;
	memcpy(l->host, host, strlen(host) + 1);
	if (bw_loop_submit(loop, lookup_work, lookup_done, l) != 0) {
		free(l);
		return BW_ECLOSED;
	}
	*out = l;
	return 0;
}

void
bus_lookup_cancel(struct bus_lookup *l)
{
	if (l != NULL)
		l->done = NULL; /* its end frees it alone */
}
