/* bench/chatload: the load client of bench/roomsbench.py. One process
 * drives many connections to a chat server with epoll, in one of two
 * modes and two protocols.
 *
 *   member  K connections join the room (or IRC channel), then only read.
 *           Each delivery carries its send time (CLOCK_MONOTONIC ns: the
 *           same clock in every process of this machine), its sender's id
 *           and a sequence number. Per connection and sender the sequence
 *           must grow by one: a smaller or equal one is an order
 *           violation, a jump is counted as missing. Latency goes into a
 *           fixed histogram. Commands on stdin, one a line:
 *             stat    -> "stat <deliveries since report> <dropped> <joined>"
 *             report  -> one JSON line; the interval's counters restart
 *             quit    -> exit (so does EOF on stdin)
 *   sender  S connections join, then send 100-byte messages at an offered
 *           rate (all S together) for a duration, round robin; then each
 *           sends a marker the server answers only after every earlier
 *           line (IRC: PING, rooms: /who), waits for the answers, prints
 *           one JSON line and exits.
 *
 * Protocols: rooms (bulwarkd's menu: "2\nname\npw\n" creates, answered
 * "The id of the group is:N"; "1\nname\nid\npw\n" joins, answered "You're
 * connected to group chat #N"; deliveries arrive as "name: text") and irc
 * (NICK/USER, 001, [OPER, MODE +F], JOIN, 366; PRIVMSG; PING answered).
 *
 * --tls: every connection is TLS 1.3 (bulwarkd's --rooms-tls-port): the
 * handshake done as it connects (blocking, within the join's time), then
 * the same lines through OpenSSL; the server's key is not checked (the
 * bench measures, it does not trust).
 *
 * Everything is bounded: joins by --join-timeout, the whole process by
 * --max-seconds, output per connection by OUT_CAP, input lines by IN_CAP.
 * Build: cc -O2 -o chatload bench/chatload.c -lm -lssl -lcrypto
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define IN_CAP	     65536u		  /* one connection's partial input */
#define OUT_CAP	     (4u * 1024u * 1024u) /* one connection's unsent output */
#define PAYLOAD	     100		  /* bytes of a message's text */
#define NB	     400		  /* latency buckets: to ~16 s */
#define HIST_BASE_US 16.0		  /* bucket 0: below this */
#define HIST_PER_OCT 20.0		  /* buckets per doubling (3.5%) */
#define MAX_TRACK    256		  /* senders one member tracks */
#define TL_SLOT_NS   50000000ull	  /* receive timeline: 50 ms slots */
#define TL_N	     8192
#define MAX_REASONS  5

enum { P_ROOMS, P_IRC };
enum { M_MEMBER, M_SENDER };
enum { S_NEW, S_CONNECTING, S_JOINING, S_JOINED, S_DONE, S_FAILED, S_CLOSED };

struct track {
	uint32_t sid;
	uint64_t last;
};

struct conn {
	int fd, idx, state, step;
	SSL *ssl; /* --tls */
	char name[48];
	char *in;
	size_t inlen;
	char *out;
	size_t outlen, outcap, outoff;
	struct track *tr;
	int ntr;
	uint32_t sid; /* sender */
	uint64_t seq;
	int marker_sent, marker_seen;
	char last[200]; /* the last line that was not a delivery */
};

static struct {
	int proto, mode;
	const char *host, *password, *channel, *oper;
	int port, count, proc, create, parallel, tls;
	uint32_t room, sid_base;
	double rate, duration, join_timeout, max_seconds, drain_timeout;
} o = {
	.proto = P_ROOMS,
	.mode = M_MEMBER,
	.host = "127.0.0.1",
	.password = "benchpw",
	.channel = "#bench",
	.count = 50,
	.parallel = 32,
	.sid_base = 1,
	.rate = 100,
	.duration = 5,
	.join_timeout = 120,
	.max_seconds = 3600,
	.drain_timeout = 30,
};

static struct conn *conns;
static int ep;
static SSL_CTX *tls_ctx;

/* send() and recv() through the connection's TLS when it has one: bytes,
 * or -1 with errno (EAGAIN: wait for the socket). */
static ssize_t
io_send(struct conn *c, const void *p, size_t n)
{
	size_t done = 0;

	if (c->ssl == NULL)
		return send(c->fd, p, n, MSG_NOSIGNAL);
	ERR_clear_error();
	if (SSL_write_ex(c->ssl, p, n, &done) == 1)
		return (ssize_t)done;
	switch (SSL_get_error(c->ssl, 0)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		errno = EAGAIN;
		return -1;
	default:
		errno = EPROTO;
		return -1;
	}
}

static ssize_t
io_recv(struct conn *c, void *p, size_t n)
{
	size_t got = 0;

	if (c->ssl == NULL)
		return recv(c->fd, p, n, 0);
	ERR_clear_error();
	if (SSL_read_ex(c->ssl, p, n, &got) == 1)
		return (ssize_t)got;
	switch (SSL_get_error(c->ssl, 0)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	default:
		errno = EPROTO;
		return -1;
	}
}

/* The handshake on the connected socket, blocking: 0, or -1. */
static int
tls_start(struct conn *c)
{
	int fl = fcntl(c->fd, F_GETFL);

	if (tls_ctx == NULL || (c->ssl = SSL_new(tls_ctx)) == NULL ||
	    SSL_set_fd(c->ssl, c->fd) != 1)
		return -1;
	SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
				     SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	(void)fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK);
	if (SSL_connect(c->ssl) != 1) {
		ERR_clear_error();
		return -1;
	}
	(void)fcntl(c->fd, F_SETFL, fl);
	return 0;
}
static uint64_t t_begin;

/* figures of the current interval (member) or run (sender) */
static struct {
	uint64_t deliveries, order_viol, dups, missing, hist[NB], lat_max_ns;
	uint64_t tl[TL_N], tl_base, tl_max;
	int tl_set;
	uint32_t sid[MAX_TRACK];
	uint64_t sid_n[MAX_TRACK];
	int nsid;
} f;

static int joined, join_failed, dropped, in_flight, next_to_open, oper_failed;
static char reasons[MAX_REASONS][200];
static int nreasons;

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void
die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "chatload: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

/* stdout is a pipe to the driver: whole lines, flushed at once */
static void
say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fflush(stdout);
}

static void
add_reason(const char *why)
{
	int i;

	for (i = 0; i < nreasons; i++)
		if (strcmp(reasons[i], why) == 0)
			return;
	if (nreasons < MAX_REASONS)
		snprintf(reasons[nreasons++], sizeof(reasons[0]), "%s", why);
}

/* --- output --------------------------------------------------------------- */

static void
watch(struct conn *c)
{
	struct epoll_event ev = {.data.ptr = c};

	ev.events = EPOLLIN | (c->outlen > c->outoff || c->state == S_CONNECTING
				       ? EPOLLOUT
				       : 0);
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_lost(struct conn *c, const char *why);

static void
flush_out(struct conn *c)
{
	int had = c->outlen > c->outoff;
	ssize_t n;

	while (c->outlen > c->outoff) {
		n = io_send(c, c->out + c->outoff, c->outlen - c->outoff);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n < 0) {
			conn_lost(c, strerror(errno));
			return;
		}
		c->outoff += (size_t)n;
	}
	if (c->outoff == c->outlen)
		c->outoff = c->outlen = 0;
	if (had != (c->outlen > c->outoff))
		watch(c);
}

/* Queues text; 0, or -1 when the connection's output is over OUT_CAP. */
static int
queue(struct conn *c, const char *p, size_t n)
{
	if (c->outoff > 0 && c->outoff == c->outlen)
		c->outoff = c->outlen = 0;
	if (c->outlen - c->outoff + n > OUT_CAP)
		return -1;
	if (c->outoff > 0 && c->outlen + n > c->outcap) {
		memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
		c->outlen -= c->outoff;
		c->outoff = 0;
	}
	if (c->outlen + n > c->outcap) {
		size_t cap = c->outcap ? c->outcap : 4096;
		while (cap < c->outlen + n)
			cap *= 2;
		if ((c->out = realloc(c->out, cap)) == NULL)
			die("out of memory");
		c->outcap = cap;
	}
	memcpy(c->out + c->outlen, p, n);
	c->outlen += n;
	return 0;
}

static void
sendf(struct conn *c, const char *fmt, ...)
{
	char buf[600];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > 0 && (size_t)n < sizeof(buf))
		(void)queue(c, buf, (size_t)n);
	flush_out(c);
}

/* --- connections ---------------------------------------------------------- */

static void
conn_close(struct conn *c, int state)
{
	if (c->fd >= 0) {
		epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
		SSL_free(c->ssl);
		c->ssl = NULL;
		close(c->fd);
		c->fd = -1;
	}
	c->state = state;
}

static void
join_done(struct conn *c, int ok, const char *why)
{
	in_flight--;
	if (ok) {
		c->state = S_JOINED;
		joined++;
		return;
	}
	join_failed++;
	if (why != NULL) {
		char buf[200];
		snprintf(buf, sizeof(buf), "join: %s", why);
		add_reason(buf);
	}
	conn_close(c, S_FAILED);
}

static void
conn_lost(struct conn *c, const char *why)
{
	char buf[260];

	if (c->state == S_CONNECTING || c->state == S_JOINING) {
		snprintf(buf, sizeof(buf), "%s (last line: %.150s)", why,
			 c->last);
		join_done(c, 0, buf);
		return;
	}
	if (c->state == S_JOINED) {
		dropped++;
		snprintf(buf, sizeof(buf), "%s (last line: %.150s)", why,
			 c->last);
		add_reason(buf);
	}
	conn_close(c, S_CLOSED);
}

static void
conn_open(struct conn *c)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)o.port)};
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
	int one = 1;

	if (inet_pton(AF_INET, o.host, &sa.sin_addr) != 1)
		die("bad --host %s", o.host);
	in_flight++;
	c->state = S_CONNECTING;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		join_done(c, 0, strerror(errno));
		return;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 &&
	    errno != EINPROGRESS) {
		join_done(c, 0, strerror(errno));
		return;
	}
	if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
		die("epoll_ctl: %s", strerror(errno));
}

/* Opens connections while fewer than --parallel are joining; connection 0
 * of a creating member process goes alone, the others join its room. */
static void
open_more(void)
{
	while (next_to_open < o.count && in_flight < o.parallel) {
		if (o.create && next_to_open > 0 && o.room == 0)
			return;
		conn_open(&conns[next_to_open++]);
	}
}

static void
greet(struct conn *c)
{
	c->state = S_JOINING;
	if (o.proto == P_IRC) {
		sendf(c, "NICK %s\r\nUSER %s 0 * :chatload\r\n", c->name,
		      c->name);
	} else if (o.create && c->idx == 0) {
		sendf(c, "2\n%s\n%s\n", c->name, o.password);
	} else {
		sendf(c, "1\n%s\n%u\n%s\n", c->name, o.room, o.password);
	}
}

/* --- the histogram and the per-sender sequences --------------------------- */

static int
bucket(uint64_t lat_ns)
{
	double us = (double)lat_ns / 1000.0;
	int b;

	if (us < HIST_BASE_US)
		return 0;
	b = 1 + (int)floor(HIST_PER_OCT * log2(us / HIST_BASE_US));
	return b < NB ? b : NB - 1;
}

static int
sid_slot(uint32_t sid)
{
	int i;

	for (i = 0; i < f.nsid; i++)
		if (f.sid[i] == sid)
			return i;
	if (f.nsid == MAX_TRACK)
		return -1;
	f.sid[f.nsid] = sid;
	f.sid_n[f.nsid] = 0;
	return f.nsid++;
}

static void
delivery(struct conn *c, const char *p, size_t n, uint64_t now)
{
	unsigned long long ns = 0, seq = 0;
	unsigned sid = 0;
	uint64_t lat, slot;
	int i, k;

	(void)n;
	if (sscanf(p, "@@%llu,%u,%llu,", &ns, &sid, &seq) != 3)
		return;
	f.deliveries++;
	lat = now > ns ? now - ns : 0;
	f.hist[bucket(lat)]++;
	if (lat > f.lat_max_ns)
		f.lat_max_ns = lat;
	slot = now / TL_SLOT_NS;
	if (!f.tl_set) {
		f.tl_set = 1;
		f.tl_base = f.tl_max = slot;
	}
	if (slot < f.tl_base)
		slot = f.tl_base;
	if (slot - f.tl_base >= TL_N)
		slot = f.tl_base + TL_N - 1;
	f.tl[slot - f.tl_base]++;
	if (slot > f.tl_max)
		f.tl_max = slot;
	if ((k = sid_slot(sid)) >= 0)
		f.sid_n[k]++;
	/* this connection's view of that sender */
	for (i = 0; i < c->ntr && c->tr[i].sid != sid; i++)
		;
	if (i == c->ntr) {
		if (c->ntr == MAX_TRACK)
			return;
		if (c->tr == NULL &&
		    (c->tr = calloc(MAX_TRACK, sizeof(*c->tr))) == NULL)
			die("out of memory");
		c->tr[i].sid = sid;
		c->tr[i].last = 0;
		c->ntr++;
	}
	if (seq == c->tr[i].last)
		f.dups++;
	else if (seq < c->tr[i].last)
		f.order_viol++;
	else {
		f.missing += seq - c->tr[i].last - 1;
		c->tr[i].last = seq;
	}
}

/* --- lines ---------------------------------------------------------------- */

static int
starts(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The IRC command or numeric: the second word after a prefix. */
static const char *
irc_cmd(const char *line, char *buf, size_t cap)
{
	const char *p = line, *e;
	size_t n;

	if (*p == ':') {
		if ((p = strchr(p, ' ')) == NULL)
			return "";
		p++;
	}
	e = strchr(p, ' ');
	n = e ? (size_t)(e - p) : strlen(p);
	if (n >= cap)
		n = cap - 1;
	memcpy(buf, p, n);
	buf[n] = '\0';
	return buf;
}

static void
line_irc(struct conn *c, char *line)
{
	char cmd[32];

	irc_cmd(line, cmd, sizeof(cmd));
	if (strcmp(cmd, "PING") == 0) {
		const char *arg = strchr(line, ' ');
		sendf(c, "PONG%s\r\n", arg ? arg : " :x");
		return;
	}
	if (strcmp(cmd, "PONG") == 0 && strstr(line, "chatload-done")) {
		c->marker_seen = 1;
		return;
	}
	snprintf(c->last, sizeof(c->last), "%s", line);
	if (strcmp(cmd, "ERROR") == 0) {
		conn_lost(c, "ERROR from the server");
		return;
	}
	if (strcmp(cmd, "481") == 0) {
		oper_failed++; /* MODE +F refused: the flood limit stays */
		return;
	}
	if (c->state != S_JOINING)
		return;
	if (strcmp(cmd, "001") == 0) {
		if (o.oper != NULL && o.mode == M_SENDER) {
			const char *colon = strchr(o.oper, ':');
			sendf(c, "OPER %.*s %s\r\n",
			      colon ? (int)(colon - o.oper)
				    : (int)strlen(o.oper),
			      o.oper, colon ? colon + 1 : "");
		} else {
			sendf(c, "JOIN %s\r\n", o.channel);
		}
	} else if (strcmp(cmd, "381") == 0) {
		/* an operator may lift its own flood limit (user mode F) */
		sendf(c, "MODE %s +F\r\nJOIN %s\r\n", c->name, o.channel);
	} else if (strcmp(cmd, "464") == 0 || strcmp(cmd, "491") == 0) {
		oper_failed++;
		sendf(c, "JOIN %s\r\n", o.channel);
	} else if (strcmp(cmd, "366") == 0) {
		join_done(c, 1, NULL);
	} else if (strcmp(cmd, "432") == 0 || strcmp(cmd, "433") == 0 ||
		   strcmp(cmd, "403") == 0 || strcmp(cmd, "405") == 0 ||
		   strcmp(cmd, "471") == 0 || strcmp(cmd, "473") == 0 ||
		   strcmp(cmd, "474") == 0 || strcmp(cmd, "475") == 0) {
		join_done(c, 0, line);
	}
}

static void
line_rooms(struct conn *c, char *line)
{
	unsigned id;

	if (c->marker_sent && starts(line, "Members of group #")) {
		c->marker_seen = 1;
		return;
	}
	snprintf(c->last, sizeof(c->last), "%s", line);
	if (c->state != S_JOINING)
		return;
	if (sscanf(line, "The id of the group is:%u", &id) == 1) {
		o.room = id;
		say("room %u\n", id);
	} else if (starts(line, "You're connected to group chat #")) {
		join_done(c, 1, NULL);
	} else if (starts(line, "There is no group") ||
		   starts(line, "The name ") || starts(line, "This group is") ||
		   starts(line, "Too many") || starts(line, "A name has") ||
		   starts(line, "There are too many") ||
		   starts(line, "The group could not") ||
		   strstr(line, "goodbye") != NULL) {
		join_done(c, 0, line);
	}
}

static void
on_line(struct conn *c, char *line, size_t n, uint64_t now)
{
	const char *at;

	if (n > 0 && line[n - 1] == '\r')
		line[--n] = '\0';
	if (c->state == S_JOINED && (at = memmem(line, n, "@@", 2)) != NULL) {
		if (o.mode == M_MEMBER)
			delivery(c, at, n - (size_t)(at - line), now);
		return;
	}
	if (o.proto == P_IRC)
		line_irc(c, line);
	else
		line_rooms(c, line);
}

static void
conn_read(struct conn *c)
{
	char *nl, *p;
	ssize_t n;
	uint64_t now;
	int rounds;

	if (c->in == NULL && (c->in = malloc(IN_CAP + 1)) == NULL)
		die("out of memory");
	for (rounds = 0; rounds < 8 && c->fd >= 0; rounds++) {
		n = io_recv(c, c->in + c->inlen, IN_CAP - c->inlen);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n < 0) {
			conn_lost(c, strerror(errno));
			return;
		}
		if (n == 0) {
			conn_lost(c, "closed by the server");
			return;
		}
		now = now_ns();
		c->inlen += (size_t)n;
		p = c->in;
		while (c->fd >= 0 &&
		       (nl = memchr(p, '\n', c->inlen - (size_t)(p - c->in)))) {
			*nl = '\0';
			on_line(c, p, (size_t)(nl - p), now);
			p = nl + 1;
		}
		if (c->fd < 0)
			return;
		c->inlen -= (size_t)(p - c->in);
		memmove(c->in, p, c->inlen);
		if (c->inlen == IN_CAP) {
			conn_lost(c, "a line over 64 KiB");
			return;
		}
		if ((size_t)n < IN_CAP / 2 &&
		    (c->ssl == NULL || SSL_pending(c->ssl) == 0))
			return;
	}
}

static void
on_event(struct conn *c, uint32_t ev)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (c->state == S_CONNECTING) {
		if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err != 0) {
			join_done(c, 0, strerror(err));
			return;
		}
		if (o.tls && tls_start(c) != 0) {
			join_done(c, 0, "TLS handshake failed");
			return;
		}
		greet(c);
		if (c->fd >= 0)
			watch(c);
		return;
	}
	if (ev & EPOLLOUT)
		flush_out(c);
	if (c->fd >= 0 && (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)))
		conn_read(c);
}

/* --- reports ----------------------------------------------------------------
 */

static double
cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void
print_json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

static void
print_common(void)
{
	int i;

	printf("\"proc\":%d,\"proto\":\"%s\",\"count\":%d,\"joined\":%d,"
	       "\"join_failed\":%d,\"dropped\":%d,\"cpu_s\":%.3f,\"reasons\":[",
	       o.proc, o.proto == P_IRC ? "irc" : "rooms", o.count, joined,
	       join_failed, dropped, cpu_s());
	for (i = 0; i < nreasons; i++) {
		if (i)
			putchar(',');
		print_json_string(reasons[i]);
	}
	printf("]");
}

static void
report_member(void)
{
	uint64_t s;
	int i;

	printf("{\"mode\":\"member\",");
	print_common();
	printf(",\"still_joined\":%d,\"deliveries\":%llu,\"order_violations\":%"
	       "llu,"
	       "\"duplicates\":%llu,\"missing\":%llu,\"lat_max_us\":%.1f,"
	       "\"hist_base_us\":%g,\"hist_per_octave\":%g,\"hist\":[",
	       joined - dropped, (unsigned long long)f.deliveries,
	       (unsigned long long)f.order_viol, (unsigned long long)f.dups,
	       (unsigned long long)f.missing, f.lat_max_ns / 1000.0,
	       HIST_BASE_US, HIST_PER_OCT);
	for (i = 0; i < NB; i++)
		printf(i ? ",%llu" : "%llu", (unsigned long long)f.hist[i]);
	printf("],\"per_sender\":{");
	for (i = 0; i < f.nsid; i++)
		printf("%s\"%u\":%llu", i ? "," : "", f.sid[i],
		       (unsigned long long)f.sid_n[i]);
	printf("},\"tl_slot_ns\":%llu,\"tl_base\":%llu,\"tl\":[", TL_SLOT_NS,
	       (unsigned long long)f.tl_base);
	if (f.tl_set)
		for (s = f.tl_base; s <= f.tl_max; s++)
			printf(s == f.tl_base ? "%llu" : ",%llu",
			       (unsigned long long)f.tl[s - f.tl_base]);
	printf("]}\n");
	fflush(stdout);
	memset(&f, 0, sizeof(f));
}

/* --- member -----------------------------------------------------------------
 */

static int
stdin_command(void)
{
	static char buf[256];
	static size_t len;
	ssize_t n;
	char *nl;

	n = read(0, buf + len, sizeof(buf) - 1 - len);
	if (n <= 0)
		return -1; /* EOF: the driver is gone */
	len += (size_t)n;
	while ((nl = memchr(buf, '\n', len)) != NULL) {
		*nl = '\0';
		if (strcmp(buf, "stat") == 0)
			say("stat %llu %d %d\n",
			    (unsigned long long)f.deliveries, dropped,
			    joined - dropped);
		else if (strcmp(buf, "report") == 0)
			report_member();
		else if (strcmp(buf, "quit") == 0)
			return -1;
		len -= (size_t)(nl + 1 - buf);
		memmove(buf, nl + 1, len);
	}
	if (len == sizeof(buf) - 1)
		len = 0;
	return 0;
}

static void
run_member(void)
{
	struct epoll_event evs[256];
	struct epoll_event sin = {.events = EPOLLIN, .data.ptr = NULL};
	uint64_t join_deadline = t_begin + (uint64_t)(o.join_timeout * 1e9);
	uint64_t end = t_begin + (uint64_t)(o.max_seconds * 1e9);
	int said_joined = 0, i, n;

	if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sin) != 0)
		die("epoll on stdin: %s", strerror(errno));
	open_more();
	for (;;) {
		uint64_t now = now_ns();
		if (now >= end)
			break;
		if (!said_joined &&
		    (joined + join_failed == o.count || now >= join_deadline)) {
			for (i = 0; i < o.count; i++) {
				if (conns[i].state == S_NEW ||
				    conns[i].state == S_CONNECTING ||
				    conns[i].state == S_JOINING) {
					if (conns[i].state == S_NEW) {
						conns[i].state = S_FAILED;
						join_failed++;
						add_reason(
							"join: not started "
							"before the timeout");
						continue;
					}
					conn_lost(&conns[i], "join timed out");
				}
			}
			said_joined = 1;
			say("joined %d failed %d\n", joined, join_failed);
		}
		n = epoll_wait(ep, evs, 256, 100);
		if (n < 0 && errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		for (i = 0; i < n; i++) {
			if (evs[i].data.ptr == NULL) {
				if (stdin_command() != 0)
					return;
				continue;
			}
			on_event(evs[i].data.ptr, evs[i].events);
		}
		open_more();
	}
	report_member();
}

/* --- sender -----------------------------------------------------------------
 */

static void
run_sender(void)
{
	struct epoll_event evs[256];
	uint64_t join_deadline = t_begin + (uint64_t)(o.join_timeout * 1e9);
	uint64_t end = t_begin + (uint64_t)(o.max_seconds * 1e9);
	uint64_t total = (uint64_t)(o.rate * o.duration + 0.5), produced = 0;
	uint64_t t0 = 0, t_end = 0, t_drained = 0, drain_deadline = 0;
	uint64_t skipped = 0, lag_max = 0, *sent;
	struct itimerspec its = {{0, 1000000}, {0, 1000000}};
	struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
	char msg[PAYLOAD + 64];
	int tfd, i, n, phase = 0; /* 0 joining, 1 sending, 2 draining */

	if ((sent = calloc((size_t)o.count, sizeof(*sent))) == NULL)
		die("out of memory");
	if ((tfd = timerfd_create(CLOCK_MONOTONIC,
				  TFD_NONBLOCK | TFD_CLOEXEC)) < 0)
		die("timerfd: %s", strerror(errno));
	timerfd_settime(tfd, 0, &its, NULL);
	if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev) != 0)
		die("epoll: %s", strerror(errno));
	open_more();
	for (;;) {
		uint64_t now = now_ns();
		if (now >= end)
			break;
		if (phase == 0 && joined + join_failed == o.count) {
			if (join_failed > 0)
				break; /* all or nothing: the load is S senders
					*/
			phase = 1;
			now = t0 = now_ns();
			say("sending %llu\n", (unsigned long long)t0);
		} else if (phase == 0 && now >= join_deadline) {
			for (i = 0; i < o.count; i++)
				if (conns[i].state == S_CONNECTING ||
				    conns[i].state == S_JOINING)
					conn_lost(&conns[i], "join timed out");
			break;
		}
		if (phase == 1) {
			uint64_t due = now <= t0
					       ? 0
					       : (uint64_t)((double)(now - t0) *
							    o.rate / 1e9);
			uint64_t lag;
			if (due > total)
				due = total;
			lag = produced < due ? (due - produced) : 0;
			if (lag > 0 &&
			    (uint64_t)((double)lag * 1e9 / o.rate) > lag_max)
				lag_max =
					(uint64_t)((double)lag * 1e9 / o.rate);
			while (produced < due) {
				struct conn *c =
					&conns[produced % (uint64_t)o.count];
				int len, pad;
				produced++;
				if (c->state != S_JOINED) {
					skipped++;
					continue;
				}
				len = snprintf(
					msg, sizeof(msg), "@@%llu,%u,%llu,",
					(unsigned long long)now_ns(), c->sid,
					(unsigned long long)(c->seq + 1));
				pad = PAYLOAD - len;
				if (pad > 0) {
					memset(msg + len, 'x', (size_t)pad);
					len = PAYLOAD;
				}
				if (o.proto == P_IRC) {
					char line[PAYLOAD + 200];
					int m = snprintf(line, sizeof(line),
							 "PRIVMSG %s :%.*s\r\n",
							 o.channel, len, msg);
					if (queue(c, line, (size_t)m) != 0) {
						skipped++;
						continue;
					}
				} else {
					msg[len] = '\n';
					if (queue(c, msg, (size_t)len + 1) !=
					    0) {
						skipped++;
						continue;
					}
				}
				c->seq++;
				sent[c->idx]++;
				flush_out(c);
			}
			if (produced >= total &&
			    now - t0 >= (uint64_t)(o.duration * 1e9)) {
				t_end = now;
				phase = 2;
				drain_deadline =
					now + (uint64_t)(o.drain_timeout * 1e9);
				for (i = 0; i < o.count; i++) {
					struct conn *c = &conns[i];
					if (c->state != S_JOINED)
						continue;
					c->marker_sent = 1;
					if (o.proto == P_IRC)
						sendf(c, "PING "
							 ":chatload-done\r\n");
					else
						sendf(c, "/who\n");
				}
			}
		}
		if (phase == 2) {
			int waiting = 0;
			for (i = 0; i < o.count; i++)
				if (conns[i].state == S_JOINED &&
				    !conns[i].marker_seen)
					waiting++;
			if (waiting == 0 || now >= drain_deadline) {
				t_drained = now;
				break;
			}
		}
		n = epoll_wait(ep, evs, 256, 100);
		if (n < 0 && errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		for (i = 0; i < n; i++) {
			if (evs[i].data.ptr == NULL) {
				uint64_t ticks;
				if (read(tfd, &ticks, sizeof(ticks)) < 0) {
					/* nothing: the timer only wakes us */
				}
				continue;
			}
			on_event(evs[i].data.ptr, evs[i].events);
		}
		if (phase == 0)
			open_more();
	}
	{
		uint64_t all = 0, unmarked = 0;
		for (i = 0; i < o.count; i++) {
			all += sent[i];
			if (conns[i].state == S_JOINED && !conns[i].marker_seen)
				unmarked++;
		}
		printf("{\"mode\":\"sender\",");
		print_common();
		printf(",\"rate\":%g,\"duration\":%g,\"sent\":%llu,\"skipped\":"
		       "%llu,"
		       "\"lag_max_ms\":%.1f,\"t_start\":%llu,\"t_end\":%llu,"
		       "\"t_drained\":%llu,\"not_drained\":%llu,\"oper_"
		       "failed\":%d,"
		       "\"per_sender\":{",
		       o.rate, o.duration, (unsigned long long)all,
		       (unsigned long long)skipped, lag_max / 1e6,
		       (unsigned long long)t0, (unsigned long long)t_end,
		       (unsigned long long)t_drained,
		       (unsigned long long)unmarked, oper_failed);
		for (i = 0; i < o.count; i++)
			printf("%s\"%u\":%llu", i ? "," : "", conns[i].sid,
			       (unsigned long long)sent[i]);
		printf("}}\n");
		fflush(stdout);
	}
	for (i = 0; i < o.count; i++)
		conn_close(&conns[i], S_CLOSED);
	free(sent);
}

/* --- main
 * --------------------------------------------------------------------- */

static void usage(void);

/* A whole number from lo to hi, or the usage text. */
static long
num(const char *v, long lo, long hi)
{
	char *end;
	long x;

	errno = 0;
	x = strtol(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || x < lo || x > hi)
		usage();
	return x;
}

/* A positive real number, or the usage text. */
static double
real(const char *v)
{
	char *end;
	double x;

	errno = 0;
	x = strtod(v, &end);
	if (errno != 0 || end == v || *end != '\0' || !(x > 0) || x > 1e9)
		usage();
	return x;
}

static void
usage(void)
{
	fprintf(stderr,
		"Usage: chatload --mode member|sender --proto rooms|irc --port "
		"N\n"
		"  [--host 127.0.0.1] [--count N] [--proc N] [--parallel N]\n"
		"  [--join-timeout S] [--max-seconds S] [--tls]\n"
		"  rooms: --room ID | --create; [--password PW]\n"
		"  irc:   [--channel #bench] [--oper NAME:PASS] (senders)\n"
		"  sender: --rate MSGS_PER_S --duration S [--sid-base N]\n"
		"          [--drain-timeout S]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && (v != NULL || (usage(), 0)) && ++i)
		if (strcmp(a, "--create") == 0)
			o.create = 1;
		else if (strcmp(a, "--tls") == 0)
			o.tls = 1;
		else if (ARG("--mode"))
			o.mode = strcmp(v, "sender") == 0   ? M_SENDER
				 : strcmp(v, "member") == 0 ? M_MEMBER
							    : (usage(), 0);
		else if (ARG("--proto"))
			o.proto = strcmp(v, "irc") == 0	    ? P_IRC
				  : strcmp(v, "rooms") == 0 ? P_ROOMS
							    : (usage(), 0);
		else if (ARG("--host"))
			o.host = v;
		else if (ARG("--port"))
			o.port = (int)num(v, 1, 65535);
		else if (ARG("--count"))
			o.count = (int)num(v, 1, 15000);
		else if (ARG("--proc"))
			o.proc = (int)num(v, 0, 1000000);
		else if (ARG("--parallel"))
			o.parallel = (int)num(v, 1, 15000);
		else if (ARG("--room"))
			o.room = (uint32_t)num(v, 1, 4294967295L);
		else if (ARG("--password"))
			o.password = v;
		else if (ARG("--channel"))
			o.channel = v;
		else if (ARG("--oper"))
			o.oper = v;
		else if (ARG("--sid-base"))
			o.sid_base = (uint32_t)num(v, 0, 1000000000L);
		else if (ARG("--rate"))
			o.rate = real(v);
		else if (ARG("--duration"))
			o.duration = real(v);
		else if (ARG("--join-timeout"))
			o.join_timeout = real(v);
		else if (ARG("--max-seconds"))
			o.max_seconds = real(v);
		else if (ARG("--drain-timeout"))
			o.drain_timeout = real(v);
		else
			usage();
#undef ARG
	}
	if (o.port <= 0 || o.port > 65535 || o.count <= 0 || o.count > 15000 ||
	    o.parallel <= 0 || o.rate <= 0 || o.duration <= 0)
		usage();
	if (o.proto == P_ROOMS && !o.create && o.room == 0)
		die("rooms: --room ID or --create");
	if (o.mode == M_SENDER && o.create)
		die("--create is for members");
	signal(SIGPIPE, SIG_IGN);
	if (o.tls) {
		if ((tls_ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
		    SSL_CTX_set_min_proto_version(tls_ctx, TLS1_3_VERSION) != 1)
			die("cannot set up TLS");
		SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
	}
	t_begin = now_ns();
	if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
		die("epoll_create1: %s", strerror(errno));
	if ((conns = calloc((size_t)o.count, sizeof(*conns))) == NULL)
		die("out of memory");
	for (i = 0; i < o.count; i++) {
		conns[i].fd = -1;
		conns[i].idx = i;
		conns[i].sid = o.sid_base + (uint32_t)i;
		if (o.mode == M_MEMBER)
			snprintf(conns[i].name, sizeof(conns[i].name), "m%d_%d",
				 o.proc, i);
		else
			snprintf(conns[i].name, sizeof(conns[i].name), "s%u",
				 conns[i].sid);
	}
	if (o.mode == M_MEMBER)
		run_member();
	else
		run_sender();
	return 0;
}
