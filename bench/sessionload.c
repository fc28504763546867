/* bench/sessionload: full vault sessions, or durable messages, from a few
 * long-lived processes, so that the server, not the start-up of a client
 * process per file (or a client written in Python), is what is measured.
 *
 * Each of --procs processes makes one RSA key (1024 bits, e = 17: a
 * 160-byte public key) and registers --conns clients with it (1025, 1026);
 * then each client, on a thread of its own, runs sessions back to back
 * until --seconds pass: a new connection, 1027 (its name) -> 2105 (a fresh
 * AES key, RSA-OAEP), a 1028 of --size random bytes under a new file name
 * (AES-128-CBC, zero IV, PKCS#7) -> 2103, whose cksum must be the file's,
 * 1029 -> 2104, close. A session that fails in any way is counted, and
 * the run goes on.
 *
 * With --messages, the messenger instead: each process registers a sink
 * and --conns senders (600, the same key), and each sender, on a kept-alive
 * connection, sends a 100-byte text (603, type 3) to the sink and waits for
 * its 2103 (20 bytes: the recipient and the message's id) before the next:
 * each 2103 is the server's word that the message is on disk.
 *
 * With --tls-port, each session is made on the TLS listener instead (the
 * clients still register on --port): the handshake proves the client's
 * registered key by the certificate made from it, and every session after
 * a client's first resumes the one its last full handshake left, as
 * `bulwark` does (sessionload_tls.c).
 *
 * With --server-pid, the server's CPU (utime + stime from /proc) over the
 * measured window is read before and after, and given per session.
 *
 * Output: one line "sessions N errors E seconds S rate R p50_ms A p99_ms B
 * server_cpu_ms_per_session C" (C is -1 without --server-pid); with
 * --messages "messages N errors E seconds S rate R p50_ms A p99_ms B
 * server_cpu_us_per_message C"; plus a readable summary on stderr. Exit 0 if at
 * least one session completed.
 *
 * Bounded: --seconds (at most 600), --procs (64), --conns (256), --size
 * (16 MiB); every socket has a 10 s timeout.
 * Built with the daemon (target sessionload, on the core library's crypto
 * and cksum): bench/run copies it next to bulwarkd.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bulwark/crc.h"
#include "bulwark/crypto.h"
#include "sessionload.h"

#define HDR	    23
#define RHDR	    7
#define NAME	    255
#define PUBKEY	    160
#define WRAPPED	    128
#define MAX_LAT	    (1u << 20) /* latencies kept per process */
#define MAX_PROCS   64
#define MAX_CONNS   256
#define MAX_SIZE    (16u << 20)
#define MAX_SECONDS 600

static const char *host = "127.0.0.1";
static int port, tls_port, procs = 4, conns = 8, seconds = 5;
static size_t size = 4096;
static long server_pid;
static char tag[32];
static int messages;		   /* --messages: the messenger's 603s */
static uint8_t sink[16];	   /* a process's recipient of its 603s */
static struct bw_tls_ctx *tls_ctx; /* a process's, with --tls-port */

#define MSG_TEXT 100 /* bytes of each 603's content */

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --- the wire --------------------------------------------------------------
 */

struct client {
	uint8_t id[16];
	char name[64];
	struct bw_rsa *key;
	unsigned seq;
	struct sl_ticket tk; /* with --tls-port */
};

/* All of n bytes read (a socket or a pipe) or sent (a socket). */
static int
io_all(int fd, void *buf, size_t n, int writing)
{
	uint8_t *p = buf;
	ssize_t k;

	while (n > 0) {
		k = writing ? send(fd, p, n, MSG_NOSIGNAL) : read(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* n bytes through a connection, plain or TLS. */
static int
link_io(struct sl_link *l, void *buf, size_t n, int writing)
{
	return l->t != NULL ? sl_tls_io(l, buf, n, writing)
			    : io_all(l->fd, buf, n, writing);
}

static int
dial_port(int to)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons((uint16_t)to)};
	struct timeval tv = {10, 0};
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	if (fd < 0)
		return -1;
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1 ||
	    connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int
dial(void)
{
	return dial_port(port);
}

static void
header_v(uint8_t *h, const uint8_t id[16], uint8_t version, uint16_t code,
	 uint32_t len)
{
	memcpy(h, id, 16);
	h[16] = version;
	h[17] = (uint8_t)code;
	h[18] = (uint8_t)(code >> 8);
	h[19] = (uint8_t)len;
	h[20] = (uint8_t)(len >> 8);
	h[21] = (uint8_t)(len >> 16);
	h[22] = (uint8_t)(len >> 24);
}

/* The vault's (version 3). */
static void
header(uint8_t *h, const uint8_t id[16], uint16_t code, uint32_t len)
{
	header_v(h, id, 3, code, len);
}

static uint32_t
le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static void
name_field(uint8_t *f, const char *s)
{
	memset(f, 0, NAME);
	memcpy(f, s, strlen(s));
}

/* A request with a fixed payload; the answer's code and payload (up to
 * cap bytes) back. */
static int
ask(struct sl_link *l, const uint8_t id[16], uint16_t code, const uint8_t *pl,
    size_t n, uint8_t *out, size_t cap, uint32_t *got)
{
	uint8_t h[HDR + 512], r[RHDR];
	uint32_t len;

	header(h, id, code, (uint32_t)n);
	memcpy(h + HDR, pl, n);
	if (link_io(l, h, HDR + n, 1) != 0 || link_io(l, r, RHDR, 0) != 0)
		return -1;
	len = le32(r + 3);
	if (len > cap || (len > 0 && link_io(l, out, len, 0) != 0))
		return -1;
	*got = len;
	return r[1] | r[2] << 8;
}

static int
unwrap(const struct bw_rsa *key, const uint8_t *wrapped, uint8_t aes[16])
{
	uint8_t out[WRAPPED];
	size_t n = 0;

	if (bw_rsa_oaep_decrypt(key, wrapped, WRAPPED, out, sizeof(out), &n) !=
		    0 ||
	    n != 16)
		return -1;
	memcpy(aes, out, 16);
	return 0;
}

static int
setup(struct client *cl, struct bw_rsa *key)
{
	uint8_t f[NAME + PUBKEY], out[512], aes[16];
	uint32_t got;
	int code;
	struct sl_link l = {-1, NULL};

	cl->key = key;
	memset(cl->id, 0, 16);
	if ((l.fd = dial()) < 0)
		return -1;
	name_field(f, cl->name);
	code = ask(&l, cl->id, 1025, f, NAME, out, sizeof(out), &got);
	if (code != 2100 || got != 16)
		goto fail;
	memcpy(cl->id, out, 16);
	if (bw_rsa_to_spki(key, f + NAME) != 0)
		goto fail;
	code = ask(&l, cl->id, 1026, f, NAME + PUBKEY, out, sizeof(out), &got);
	if (code != 2102 || got != 16 + WRAPPED ||
	    unwrap(key, out + 16, aes) != 0)
		goto fail;
	close(l.fd);
	return 0;
fail:
	close(l.fd);
	return -1;
}

/* A messenger client (600 -> 2100 and its id). */
static int
setup_msg(uint8_t id[16], struct bw_rsa *key, const char *name)
{
	uint8_t h[HDR + NAME + PUBKEY], r[RHDR + 16], none[16] = {0};
	int fd, rc = -1;

	if ((fd = dial()) < 0)
		return -1;
	header_v(h, none, 2, 600, NAME + PUBKEY);
	name_field(h + HDR, name);
	if (bw_rsa_to_spki(key, h + HDR + NAME) == 0 &&
	    io_all(fd, h, sizeof(h), 1) == 0 && io_all(fd, r, RHDR, 0) == 0 &&
	    r[0] == 2 && (r[1] | r[2] << 8) == 2100 && le32(r + 3) == 16 &&
	    io_all(fd, r + RHDR, 16, 0) == 0) {
		memcpy(id, r + RHDR, 16);
		rc = 0;
	}
	close(fd);
	return rc;
}

/* --- one session -----------------------------------------------------------
 */

static int
session(struct client *cl, uint8_t *plain, uint8_t *body)
{
	uint8_t f[NAME], out[512], aes[16], *ct = NULL;
	char file[64];
	uint32_t got, crc;
	int code, rc = -1;
	size_t clen = 16 * (size / 16 + 1), n = 0;
	struct sl_link l = {-1, NULL};

	snprintf(file, sizeof(file), "f%u.bin", cl->seq++);
	if (bw_random(plain, size) != 0 ||
	    (l.fd = dial_port(tls_port > 0 ? tls_port : port)) < 0)
		return -1;
	if (tls_port > 0 && sl_tls_open(&l, tls_ctx, &cl->tk) != 0)
		goto out;
	name_field(f, cl->name);
	code = ask(&l, cl->id, 1027, f, NAME, out, sizeof(out), &got);
	if (code != 2105 || got != 16 + WRAPPED ||
	    unwrap(cl->key, out + 16, aes) != 0)
		goto out;
	/* the 1028: header, size, name, ciphertext in one write */
	header(body, cl->id, 1028, (uint32_t)(4 + NAME + clen));
	body[HDR] = (uint8_t)clen;
	body[HDR + 1] = (uint8_t)(clen >> 8);
	body[HDR + 2] = (uint8_t)(clen >> 16);
	body[HDR + 3] = (uint8_t)(clen >> 24);
	name_field(body + HDR + 4, file);
	if (bw_aes_seal(aes, plain, size, &ct, &n) != 0 || n != clen)
		goto out;
	memcpy(body + HDR + 4 + NAME, ct, clen);
	if (link_io(&l, body, HDR + 4 + NAME + clen, 1) != 0 ||
	    link_io(&l, out, RHDR, 0) != 0)
		goto out;
	code = out[1] | out[2] << 8;
	got = (uint32_t)out[3] | (uint32_t)out[4] << 8;
	if (code != 2103 || got != 279 || link_io(&l, out, got, 0) != 0)
		goto out;
	crc = (uint32_t)out[275] | (uint32_t)out[276] << 8 |
	      (uint32_t)out[277] << 16 | (uint32_t)out[278] << 24;
	if (crc != bw_cksum(plain, size))
		goto out;
	name_field(f, file);
	code = ask(&l, cl->id, 1029, f, NAME, out, sizeof(out), &got);
	if (code != 2104)
		goto out;
	rc = 0;
out:
	bw_secure_free(ct, n);
	sl_tls_close(&l, &cl->tk);
	close(l.fd);
	return rc;
}

/* --- a process of clients --------------------------------------------------
 */

struct worker {
	struct client cl;
	pthread_t t;
	double until;
	int registered; /* else it runs nothing */
	unsigned long done, failed;
	float *lat;
	size_t lat_n, lat_cap;
};

/* 603s to the process's sink on one kept-alive connection until the end:
 * a failed one is counted, and a new connection made. */
static void
run_messages(struct worker *w)
{
	uint8_t req[HDR + 21 + MSG_TEXT], r[RHDR + 20];
	double t0;
	int fd = -1;

	header_v(req, w->cl.id, 2, 603, 21 + MSG_TEXT);
	memcpy(req + HDR, sink, 16);
	req[HDR + 16] = 3; /* a text */
	req[HDR + 17] = MSG_TEXT;
	memset(req + HDR + 18, 0, 3);
	if (bw_random(req + HDR + 21, MSG_TEXT) != 0)
		return;
	while (now_s() < w->until) {
		if (fd < 0 && (fd = dial()) < 0) {
			w->failed++;
			usleep(10000);
			continue;
		}
		t0 = now_s();
		if (io_all(fd, req, sizeof(req), 1) != 0 ||
		    io_all(fd, r, RHDR, 0) != 0 || r[0] != 2 ||
		    (r[1] | r[2] << 8) != 2103 || le32(r + 3) != 20 ||
		    io_all(fd, r + RHDR, 20, 0) != 0 ||
		    memcmp(r + RHDR, sink, 16) != 0) {
			w->failed++;
			close(fd);
			fd = -1;
			usleep(10000); /* a refusal is not a load to repeat */
			continue;
		}
		w->done++;
		if (w->lat_n < w->lat_cap)
			w->lat[w->lat_n++] = (float)((now_s() - t0) * 1e3);
	}
	if (fd >= 0)
		close(fd);
}

static void *
run(void *arg)
{
	struct worker *w = arg;
	uint8_t *plain, *body;
	double t0;

	if (messages) {
		run_messages(w);
		return NULL;
	}
	plain = malloc(size);
	body = malloc(HDR + 4 + NAME + size + 16);
	while (plain != NULL && body != NULL && now_s() < w->until) {
		t0 = now_s();
		if (session(&w->cl, plain, body) != 0) {
			w->failed++;
			continue;
		}
		w->done++;
		if (w->lat_n < w->lat_cap)
			w->lat[w->lat_n++] = (float)((now_s() - t0) * 1e3);
	}
	free(plain);
	free(body);
	return NULL;
}

/* A child: sets up, waits for the parent's go (a byte on in), runs, and
 * writes its counts and latencies to out. */
static int
child(int p, int in, int out)
{
	struct worker *w = calloc((size_t)conns, sizeof(*w));
	struct bw_rsa *key = NULL;
	unsigned long totals[3] = {0, 0, 0};
	char go;
	int i, ok = 0;

	char name[64];

	if (w == NULL || bw_rsa_generate(&key) != 0) {
		free(w);
		return 1;
	}
	if (tls_port > 0 && sl_tls_ctx(&tls_ctx, key) != 0) {
		fprintf(stderr, "sessionload: no TLS settings for process %d\n",
			p);
		bw_rsa_free(key);
		free(w);
		return 1;
	}
	snprintf(name, sizeof(name), "sl-%s-%d-sink", tag, p);
	if (messages && setup_msg(sink, key, name) != 0) {
		fprintf(stderr, "sessionload: sink %d could not register\n", p);
		bw_rsa_free(key);
		free(w);
		return 1;
	}
	for (i = 0; i < conns; i++) {
		snprintf(w[i].cl.name, sizeof(w[i].cl.name), "sl-%s-%d-%d", tag,
			 p, i);
		w[i].registered =
			messages ? setup_msg(w[i].cl.id, key, w[i].cl.name) == 0
				 : setup(&w[i].cl, key) == 0;
		if (w[i].registered)
			ok++;
		else
			fprintf(stderr,
				"sessionload: client %d-%d could not "
				"register\n",
				p, i);
	}
	if (write(out, &ok, sizeof(ok)) != sizeof(ok) || read(in, &go, 1) != 1)
		return 1;
	for (i = 0; i < conns; i++) {
		w[i].until = w[i].registered ? now_s() + seconds : 0;
		w[i].lat_cap = MAX_LAT / (size_t)conns;
		w[i].lat = calloc(w[i].lat_cap, sizeof(float));
		if (w[i].lat == NULL ||
		    pthread_create(&w[i].t, NULL, run, &w[i]) != 0)
			return 1;
	}
	for (i = 0; i < conns; i++) {
		pthread_join(w[i].t, NULL);
		totals[0] += w[i].done;
		totals[1] += w[i].failed;
		totals[2] += w[i].cl.tk.resumed;
	}
	if (write(out, totals, sizeof(totals)) != sizeof(totals))
		return 1;
	for (i = 0; i < conns; i++) {
		size_t n = w[i].lat_n;

		if (write(out, &n, sizeof(n)) != sizeof(n) ||
		    (n > 0 && write(out, w[i].lat, n * sizeof(float)) !=
				      (ssize_t)(n * sizeof(float))))
			return 1;
	}
	return 0;
}

/* From a child's pipe. */
static int
read_all(int fd, void *buf, size_t n)
{
	return io_all(fd, buf, n, 0);
}

static double
server_cpu_s(void)
{
	char path[64], buf[2048], *p;
	unsigned long ut, st;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%ld/stat", server_pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	if ((p = strrchr(buf, ')')) == NULL ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
		   &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int
cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return (x > y) - (x < y);
}

/* A whole decimal number within [lo, hi], or -1. */
static long
num(const char *v, long lo, long hi)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || n < lo || n > hi)
		return -1;
	return n;
}

static void
usage(FILE *f)
{
	fprintf(f, "usage: sessionload --port P [--host H] [--procs N] "
		   "[--conns C] [--seconds S] [--size BYTES] "
		   "[--server-pid PID] [--tag T] [--messages] "
		   "[--tls-port P]\n");
}

int
main(int argc, char **argv)
{
	int to[MAX_PROCS][2], from[MAX_PROCS][2], i, j, ready = 0, st;
	pid_t pid[MAX_PROCS];
	unsigned long done = 0, failed = 0, resumed = 0, t[3];
	float *lat = malloc(MAX_LAT * sizeof(float) * 2);
	size_t lat_n = 0, n;
	double t0, t1 = 0, c0 = -1, c1 = -1;
	char go = 'g';

	snprintf(tag, sizeof(tag), "%ld", (long)getpid());
	for (i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(argv[i], "--help") == 0 ||
		    strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		}
		if (strcmp(argv[i], "--messages") == 0) {
			messages = 1;
			continue;
		}
		if (v == NULL) {
			usage(stderr);
			return 2;
		}
		if (strcmp(argv[i], "--host") == 0)
			host = v;
		else if (strcmp(argv[i], "--port") == 0)
			port = (int)num(v, 1, 65535);
		else if (strcmp(argv[i], "--tls-port") == 0)
			tls_port = (int)num(v, 1, 65535);
		else if (strcmp(argv[i], "--procs") == 0)
			procs = (int)num(v, 1, MAX_PROCS);
		else if (strcmp(argv[i], "--conns") == 0)
			conns = (int)num(v, 1, MAX_CONNS);
		else if (strcmp(argv[i], "--seconds") == 0)
			seconds = (int)num(v, 1, MAX_SECONDS);
		else if (strcmp(argv[i], "--size") == 0)
			size = (size_t)num(v, 1, MAX_SIZE);
		else if (strcmp(argv[i], "--server-pid") == 0)
			server_pid = num(v, 1, 1L << 30);
		else if (strcmp(argv[i], "--tag") == 0)
			snprintf(tag, sizeof(tag), "%s", v);
		else {
			usage(stderr);
			return 2;
		}
		i++;
	}
	if (port <= 0 || tls_port < 0 || procs < 1 || conns < 1 ||
	    seconds < 1 || size < 1 || size > MAX_SIZE || server_pid < 0 ||
	    lat == NULL) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	for (i = 0; i < procs; i++) {
		if (pipe(to[i]) != 0 || pipe(from[i]) != 0 ||
		    (pid[i] = fork()) < 0)
			return 1;
		if (pid[i] == 0) {
			close(to[i][1]);
			close(from[i][0]);
			_exit(child(i, to[i][0], from[i][1]));
		}
		close(to[i][0]);
		close(from[i][1]);
	}
	for (i = 0; i < procs; i++) {
		if (read_all(from[i][0], &j, sizeof(j)) != 0)
			return 1;
		ready += j;
	}
	fprintf(stderr, "sessionload: %d of %d clients registered\n", ready,
		procs * conns);
	if (server_pid > 0)
		c0 = server_cpu_s();
	t0 = now_s();
	for (i = 0; i < procs; i++)
		if (write(to[i][1], &go, 1) != 1)
			return 1;
	for (i = 0; i < procs; i++) {
		if (read_all(from[i][0], t, sizeof(t)) != 0)
			return 1;
		if (i == procs - 1) {
			t1 = now_s();
			if (server_pid > 0)
				c1 = server_cpu_s();
		}
		done += t[0];
		failed += t[1];
		resumed += t[2];
	}
	/* the last process to report ends the window; the others' figures
	 * came while it ran (each runs exactly --seconds) */
	for (i = 0; i < procs; i++) {
		for (j = 0; j < conns; j++) {
			if (read_all(from[i][0], &n, sizeof(n)) != 0 ||
			    n > MAX_LAT)
				return 1;
			if (lat_n + n > 2 * (size_t)MAX_LAT)
				n = 0;
			if (n > 0 && read_all(from[i][0], lat + lat_n,
					      n * sizeof(float)) != 0)
				return 1;
			lat_n += n;
		}
		waitpid(pid[i], &st, 0);
	}
	qsort(lat, lat_n, sizeof(float), cmp_float);
	{
		double el = t1 - t0, rate = (double)done / el;
		double p50 = lat_n ? lat[lat_n / 2] : 0,
		       p99 = lat_n ? lat[lat_n * 99 / 100] : 0;
		double cpu = c0 >= 0 && c1 >= 0 && done > 0
				     ? (c1 - c0) * 1e3 / (double)done
				     : -1;

		if (messages) {
			printf("messages %lu errors %lu seconds %.2f rate %.1f "
			       "p50_ms %.2f p99_ms %.2f "
			       "server_cpu_us_per_message %.1f\n",
			       done, failed, el, rate, p50, p99,
			       cpu < 0 ? -1 : cpu * 1e3);
			fprintf(stderr,
				"sessionload: %lu durable 603s (%lu failed) "
				"in %.2f s = %.0f/s; p50 %.2f ms, p99 %.2f "
				"ms; server CPU %.1f us per message\n",
				done, failed, el, rate, p50, p99,
				cpu < 0 ? -1 : cpu * 1e3);
			return done > 0 ? 0 : 1;
		}
		printf("sessions %lu errors %lu seconds %.2f rate %.1f p50_ms "
		       "%.2f p99_ms %.2f server_cpu_ms_per_session %.3f "
		       "resumed %lu\n",
		       done, failed, el, rate, p50, p99, cpu, resumed);
		fprintf(stderr,
			"sessionload: %lu sessions (%lu failed%s, %lu "
			"resumed) in %.2f s = %.0f/s; session p50 %.2f ms, "
			"p99 %.2f ms; server CPU %.3f ms per session\n",
			done, failed, tls_port > 0 ? ", over TLS" : "", resumed,
			el, rate, p50, p99, cpu);
	}
	return done > 0 ? 0 : 1;
}
