/* libFuzzer harness for the metrics endpoint's HTTP (src/svc/metrics/
 * metrics.c): the real service on the real engine, in-process
 * (engine_fuzz.h), opened on the first input with a host whose registry
 * is a count and whose figures are small fakes. Each input is one
 * connection: the first byte says how the rest is cut into pieces, the
 * second whether 9000 bytes of 'x' follow the client's bytes (odd: a head
 * past the 8 KiB the endpoint reads), the rest is what the client sends
 * before it shuts its write side.
 *
 * Invariants (abort() on a violation), against a model of the endpoint
 * written here from its contract: of the first 8192 bytes, a head ending
 * in an empty line ("\n\n" or "\r\n\r\n") is answered once, by its first
 * line: "GET " or "HEAD " and a path of /metrics (or /metrics?...) is 200
 * with the figures (HEAD: the header alone), another path 404 "try
 * /metrics", another method 405 "GET only"; 8192 bytes without one are
 * 431; fewer, at the end of stream, get nothing. Each answer is exactly
 * the status line, Content-Type, Content-Length, "Connection: close" and
 * the body of that length; a 200's body is Prometheus text (HELP and TYPE
 * comments, "name{labels} value" lines, each ending in a newline, every
 * sample's first label the node's) holding
 * the fakes' figures and a scrape count that goes up by one per answered
 * GET or HEAD of /metrics. Nothing follows the answer: the server closes,
 * and no descriptor or connection is left behind.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/buf.h"
#include "host/module.h"
#include "host/registry.h"
#include "svc/metrics/metrics.h"

#include "engine_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HEAD_MAX 8192u
#define FILLER	 9000u
#define TEXT	 "text/plain; charset=utf-8"
#define PROM	 "text/plain; version=0.0.4; charset=utf-8"

static void
check(int ok)
{
	if (!ok)
		abort();
}

static struct {
	struct bw_engine e;
	struct bw_registry reg; /* only its count is read */
	struct bw_metrics_cfg cfg;
	void *inst;
	struct bw_listener *l;
	uint64_t scrapes; /* answered GET and HEAD of /metrics */
} g;

static void
fake_summary(const void *arg, bw_stat_emit emit, void *emit_arg)
{
	(void)arg;
	emit(emit_arg, "stored_bytes", "Plaintext bytes of the stored files.",
	     123456789);
}

static void
fake_stats(const void *arg, bw_stat_emit emit, void *emit_arg)
{
	(void)arg;
	emit(emit_arg, "vault_uploads_active", "uploads in progress", 3);
	emit(emit_arg, "msg_stored_total", "messages stored since start",
	     18446744073709551615u);
}

static void
fake_errors(const void *arg, bw_stat_emit emit, void *emit_arg)
{
	(void)arg;
	emit(emit_arg, "vault_crc_failed", "uploads whose CRC failed", 7);
}

static int
fake_metrics(const void *arg, struct bw_buf *out)
{
	(void)arg;
	return bw_buf_printf(out, "# HELP bulwark_requests_total Requests.\n"
				  "# TYPE bulwark_requests_total counter\n"
				  "bulwark_requests_total{protocol=\"vault\","
				  "request=\"1025\",result=\"ok\"} 5\n") != 0
		       ? BW_ETOOBIG
		       : 0;
}

static void
setup_once(void)
{
	struct bw_host h;
	struct bw_listen_cfg lc;

	if (g.l != NULL)
		return;
	ef_open(&g.e);
	g.reg.clients_n = 42;
	memset(&h, 0, sizeof(h));
	h.eng = &g.e;
	h.reg = &g.reg;
	h.started_s = 1700000000;
	h.node = "fz-1";
	h.summary = fake_summary;
	h.stats = fake_stats;
	h.errors = fake_errors;
	h.metrics = fake_metrics;
	bw_metrics_cfg_defaults(&g.cfg);
	if (bw_metrics_module.init(&h, &g.cfg, &g.inst) != 0)
		ef_die("cannot start the metrics");
	lc = ef_listen_cfg("metrics", &g.cfg.limits);
	if (bw_engine_listen(&g.e, bw_metrics_module.service, g.inst, &lc,
			     &g.l) != 0)
		ef_die("cannot listen");
}

/* --- the model ------------------------------------------------------------
 */

enum status { S_NONE, S_200, S_404, S_405, S_431 };

struct want {
	enum status st;
	int head; /* HEAD: no body */
};

/* What the endpoint owes the client that sent p[0..n). */
static struct want
model(const uint8_t *p, size_t n)
{
	struct want w = {S_NONE, 0};
	const uint8_t *nl, *sp, *path, *end;
	size_t i, line;
	int found = 0;

	if (n > HEAD_MAX)
		n = HEAD_MAX; /* all it reads */
	for (i = 0; i + 1 < n && !found; i++)
		found = (p[i] == '\n' && p[i + 1] == '\n') ||
			(i + 3 < n && memcmp(p + i, "\r\n\r\n", 4) == 0);
	if (!found) {
		w.st = n == HEAD_MAX ? S_431 : S_NONE;
		return w;
	}
	nl = memchr(p, '\n', n);
	line = (size_t)(nl - p);
	if (line > 0 && p[line - 1] == '\r')
		line--;
	sp = memchr(p, ' ', line);
	if (sp != NULL && sp - p == 3 && memcmp(p, "GET", 3) == 0) {
		w.head = 0;
	} else if (sp != NULL && sp - p == 4 && memcmp(p, "HEAD", 4) == 0) {
		w.head = 1;
	} else {
		w.st = S_405;
		return w;
	}
	path = sp + 1;
	end = memchr(path, ' ', line - (size_t)(path - p));
	if (end == NULL)
		end = p + line;
	w.st = end - path >= 8 && memcmp(path, "/metrics", 8) == 0 &&
			       (end - path == 8 || path[8] == '?')
		       ? S_200
		       : S_404;
	return w;
}

static int
has(const uint8_t *p, size_t n, const char *s)
{
	return memmem(p, n, s, strlen(s)) != NULL;
}

static int
name_char(uint8_t c, int first)
{
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') ||
	       (c >= 'A' && c <= 'Z') || (!first && c >= '0' && c <= '9');
}

/* Prometheus text: comments, or a name, labels in braces, a space and a
 * decimal value (a count, or seconds with a fraction); every line ends in
 * a newline. */
static void
check_prometheus(const uint8_t *p, size_t n)
{
	const uint8_t *end = p + n, *nl, *q;
	char want[64];
	int k;

	check(n > 0 && p[n - 1] == '\n');
	for (; p < end; p = nl + 1) {
		nl = memchr(p, '\n', (size_t)(end - p));
		check(nl != NULL && nl > p);
		if (*p == '#') {
			check((nl - p > 7 && memcmp(p, "# HELP ", 7) == 0) ||
			      (nl - p > 7 && memcmp(p, "# TYPE ", 7) == 0));
			continue;
		}
		for (q = p; q < nl && name_char(*q, q == p); q++)
			;
		check(q > p);
		/* every sample names the node, its first label */
		check(*q == '{' && nl - q > 12 &&
		      memcmp(q, "{node=\"fz-1\"", 12) == 0);
		if (*q == '{') {
			q = memchr(q, '}', (size_t)(nl - q));
			check(q != NULL);
			q++;
		}
		check(q + 1 < nl && *q == ' ');
		/* a decimal value: digits, a fraction (seconds) */
		for (q++; q < nl; q++)
			check((*q >= '0' && *q <= '9') || *q == '.');
	}
	k = snprintf(want, sizeof(want),
		     "\nbulwark_scrapes_total{node=\"fz-1\"} %llu\n",
		     (unsigned long long)g.scrapes);
	check(k > 0 && has(end - n, n, want));
}

static void
check_answer(const struct want *w, const struct ef_out *o)
{
	static const char *const status[] = {
		"", "200 OK", "404 Not Found", "405 Method Not Allowed",
		"431 Request Header Fields Too Large"};
	const char *type = w->st == S_200 ? PROM : TEXT;
	const char *body = w->st == S_404   ? "try /metrics\n"
			   : w->st == S_405 ? "GET only\n"
					    : "";
	char head[256];
	const uint8_t *b, *end = o->p + o->len;
	size_t len = 0, n;
	int k;

	if (w->st == S_NONE) {
		check(o->len == 0);
		return;
	}
	k = snprintf(head, sizeof(head),
		     "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: ",
		     status[w->st], type);
	check(k > 0 && o->len > (size_t)k && memcmp(o->p, head, k) == 0);
	b = o->p + k;
	check(*b >= '0' && *b <= '9');
	for (; b < end && *b >= '0' && *b <= '9'; b++) {
		check(len < 100000000);
		len = len * 10 + (size_t)(*b - '0');
	}
	n = (size_t)(end - b);
	check(n >= 23 && memcmp(b, "\r\nConnection: close\r\n\r\n", 23) == 0);
	b += 23;
	n -= 23;
	if (w->st != S_200) {
		check(len == strlen(body));
		check(n == (w->head ? 0 : len) && memcmp(b, body, n) == 0);
		return;
	}
	g.scrapes++;
	if (w->head) {
		check(n == 0 && len > 0);
		return;
	}
	check(n == len);
	check(n > 40 && memcmp(b, "# HELP bulwark_build_info ", 26) == 0);
	check_prometheus(b, n);
	check(has(b, n, "\nbulwark_clients{node=\"fz-1\"} 42\n"));
	check(has(b, n, "\nbulwark_stored_bytes{node=\"fz-1\"} 123456789\n"));
	check(has(b, n, "\nbulwark_build_info{node=\"fz-1\",version=\""));
	check(has(b, n,
		  "\nprocess_start_time_seconds{node=\"fz-1\"} "
		  "1700000000\n"));
	check(has(b, n,
		  "\nbulwark_start_time_seconds{node=\"fz-1\"} "
		  "1700000000\n"));
	check(has(b, n, "\nbulwark_vault_uploads_active{node=\"fz-1\"} 3\n"));
	check(has(b, n, "\n# TYPE bulwark_msg_stored_total counter\n"));
	check(has(b, n, ",kind=\"vault_crc_failed\"} 7\n"));
	check(has(b, n, ",listener=\"metrics\","));
	check(has(b, n, "request=\"1025\",result=\"ok\"} 5\n"));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ef_out o;
	struct want w;
	uint8_t *in;
	size_t n;

	if (size < 2)
		return 0;
	setup_once();
	n = size - 2;
	if ((in = malloc(n + FILLER + 1)) == NULL)
		abort();
	if (n > 0)
		memcpy(in, data + 2, n);
	if (data[1] & 1) {
		memset(in + n, 'x', FILLER);
		n += FILLER;
	}
	w = model(in, n);
	ef_exchange(&g.e, g.l, data[0], in, n, &o);
	check(o.eof || o.reset);
	check_answer(&w, &o);
	free(o.p);
	free(in);
	check(g.e.conns_n == 0 && g.l->conns_n == 0);
	ef_check_fds();
	return 0;
}
