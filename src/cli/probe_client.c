/* bulwark probe client: a recording server for a vault or messenger client
 * under test. It listens, relays each connection to a real server
 * (--server), and reads the client's side of each: how it frames its
 * requests (payload sizes, padding, one write per request, one connection
 * per session), what it puts in them (version bytes, names, a key request
 * with content), and how it leaves (in order, or with a reset after a
 * reply). When the run ends (--count connections, --duration, or ^C) it
 * prints the same report as the server probe, one case per kind.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bulwark/net.h"
#include "bulwark/util.h"
#include "cli/common.h"
#include "cli/probe.h"
#include "cli/probe_int.h"
#include "cli/probe_client_int.h"
#include "proto/wire.h"

#define PAIRS_MAX 64
#define CHUNK	  16384

struct pair {
	int cfd, sfd; /* the client's, the server's */
	struct ccheck ck;
};

static volatile sig_atomic_t stop;

static void
on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void
usage(FILE *f)
{
	fprintf(f,
		"Usage: bulwark probe client --listen PORT --server HOST:PORT "
		"[OPTION]...\n"
		"Listen on 127.0.0.1:PORT as a vault and messenger server: "
		"each "
		"connection of\nthe client under test is relayed to the real "
		"server at HOST:PORT and the\nclient's requests are read on "
		"the way. At the end, a report of how the\nclient bends the "
		"protocols (each kind a case: PASS, or DEVIATION with an\n"
		"example).\n\n"
		"      --listen PORT     the port the client under test is "
		"pointed at\n"
		"      --server HOST:PORT  the server the requests go on to\n"
		"      --count N         end after N connections have closed\n"
		"      --duration SEC    end after SEC seconds (default: at "
		"^C)\n"
		"      --json            the report as JSON on stdout\n"
		"      --html FILE       also write the report as one HTML "
		"page\n"
		"      --strict          deviations count as failures\n"
		"  -v, --verbose         show each deviation as it is seen\n"
		"  -h, --help            this help\n\n"
		"Exit status: 0 no case failed; 1 a case failed (or, with "
		"--strict,\ndeviated); 2 bad usage.\n");
}

static int
blocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
}

/* Moves what is readable from `from` to `to`: 0, or -1 when either side
 * is done (*reset set when `from` reset). The client's bytes are read on
 * the way. */
static int
relay(struct pair *pr, int from_client, int *reset)
{
	uint8_t b[CHUNK];
	int from = from_client ? pr->cfd : pr->sfd;
	int to = from_client ? pr->sfd : pr->cfd;
	ssize_t n = recv(from, b, sizeof(b), MSG_DONTWAIT);

	*reset = 0;
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0) {
		*reset = n < 0 && errno == ECONNRESET;
		return -1;
	}
	if (from_client)
		ccheck_bytes(&pr->ck, b, (size_t)n);
	else
		pr->ck.replies += (uint64_t)n;
	return bw_net_write_full(to, b, (size_t)n) == 0 ? 0 : -1;
}

static void
end_pair(struct pair *pr, int client_reset, struct ctally *t)
{
	ccheck_end(&pr->ck, client_reset, t);
	close(pr->cfd);
	close(pr->sfd);
	pr->cfd = pr->sfd = -1;
}

static int
accept_one(int lfd, struct pair *pairs, unsigned *n, const char *host,
	   uint16_t port, unsigned id, struct ctally *t)
{
	struct pair *pr = &pairs[*n];
	char peer[64];
	int cfd, sfd;

	if (bw_net_accept(lfd, &cfd, peer, sizeof(peer)) != 0)
		return 0;
	if (*n == PAIRS_MAX || bw_net_connect(host, port, 5000, &sfd) != 0) {
		fprintf(stderr, "bulwark probe client: %s\n",
			*n == PAIRS_MAX ? "too many connections at once"
					: "the server cannot be reached");
		close(cfd);
		return -1;
	}
	if (blocking(cfd) != 0) {
		close(cfd);
		close(sfd);
		return -1;
	}
	pr->cfd = cfd;
	pr->sfd = sfd;
	ccheck_init(&pr->ck, id, t);
	(*n)++;
	return 0;
}

static void
serve(int lfd, const char *host, uint16_t port, unsigned count, uint64_t until,
      struct ctally *t)
{
	struct pair pairs[PAIRS_MAX];
	struct pollfd pf[1 + 2 * PAIRS_MAX];
	unsigned n = 0, i, ids = 0, closed = 0;
	int reset;

	while (!stop && (count == 0 || closed < count) &&
	       (until == 0 || bw_now_ms() < until)) {
		pf[0].fd = lfd;
		pf[0].events = POLLIN;
		for (i = 0; i < n; i++) {
			pf[1 + 2 * i] =
				(struct pollfd){pairs[i].cfd, POLLIN, 0};
			pf[2 + 2 * i] =
				(struct pollfd){pairs[i].sfd, POLLIN, 0};
		}
		if (poll(pf, 1 + 2 * n, 200) <= 0)
			continue;
		for (i = 0; i < n; i++) {
			int cr = pf[1 + 2 * i].revents != 0 &&
				 relay(&pairs[i], 1, &reset) != 0;
			int client_reset = cr && reset;

			if (!cr && pf[2 + 2 * i].revents != 0 &&
			    relay(&pairs[i], 0, &reset) != 0)
				cr = 1;
			if (cr) {
				end_pair(&pairs[i], client_reset, t);
				closed++;
				pairs[i] = pairs[--n];
				pf[1 + 2 * i] = pf[1 + 2 * n];
				pf[2 + 2 * i] = pf[2 + 2 * n];
				i--;
			}
		}
		if (pf[0].revents & POLLIN)
			(void)accept_one(lfd, pairs, &n, host, port, ++ids, t);
	}
	for (i = 0; i < n; i++)
		end_pair(&pairs[i], 0, t);
}

enum {
	O_LISTEN = 0x300,
	O_SERVER,
	O_COUNT,
	O_DURATION,
	O_JSON,
	O_HTML,
	O_STRICT
};

int
bw_cli_probe_client(int argc, char **argv)
{
	static const struct option opts[] = {
		{"listen", required_argument, NULL, O_LISTEN},
		{"server", required_argument, NULL, O_SERVER},
		{"count", required_argument, NULL, O_COUNT},
		{"duration", required_argument, NULL, O_DURATION},
		{"json", no_argument, NULL, O_JSON},
		{"html", required_argument, NULL, O_HTML},
		{"strict", no_argument, NULL, O_STRICT},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	struct probe p;
	struct ctally t;
	const char *html = NULL, *server = NULL;
	uint64_t lport = 0, count = 0, secs = 0;
	unsigned tmo = 0;
	uint16_t bound = 0;
	int ch, json = 0, lfd = -1, rc;

	memset(&p, 0, sizeof(p));
	memset(&t, 0, sizeof(t));
	optind = 1;
	while ((ch = getopt_long(argc, argv, "vh", opts, NULL)) != -1) {
		switch (ch) {
		case O_LISTEN:
			if (bw_parse_u64(optarg, 1, 65535, &lport) != 0)
				goto bad;
			break;
		case O_SERVER:
			server = optarg;
			break;
		case O_COUNT:
			if (bw_parse_u64(optarg, 1, 1000000, &count) != 0)
				goto bad;
			break;
		case O_DURATION:
			if (bw_parse_u64(optarg, 1, 86400, &secs) != 0)
				goto bad;
			break;
		case O_JSON:
			json = 1;
			break;
		case O_HTML:
			html = optarg;
			break;
		case O_STRICT:
			p.strict = 1;
			break;
		case 'v':
			t.verbose = 1;
			break;
		default:
			rc = bw_cli_common_opt("bulwark probe client", ch,
					       optarg, &tmo, usage);
			if (rc != BW_CLI_GO_ON)
				return rc;
		}
	}
	if (lport == 0 || server == NULL || optind != argc ||
	    bw_cli_parse_server(server, p.host, sizeof(p.host), &p.port) != 0 ||
	    strncmp(p.host, "tls://", 6) == 0)
		goto bad;
	if (bw_net_listen("127.0.0.1", (uint16_t)lport, 64, &lfd, &bound) !=
	    0) {
		bw_cli_fatal("cannot listen on 127.0.0.1:%llu", ULL(lport));
		return BW_EXIT_FATAL;
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	fprintf(stderr,
		"bulwark probe client: listening on 127.0.0.1:%u, relaying to "
		"%s:%u\n",
		bound, p.host, p.port);
	serve(lfd, p.host, p.port, (unsigned)count,
	      secs ? bw_now_ms() + secs * 1000u : 0, &t);
	close(lfd);
	p.proto = "client";
	snprintf(p.tag, sizeof(p.tag), "%08x",
		 (unsigned)(bw_now_ms() & 0xffffffffu));
	rc = ctally_report(&t, &p, json, html);
	free(p.cases);
	return rc;
bad:
	usage(stderr);
	return BW_EXIT_USAGE;
}
