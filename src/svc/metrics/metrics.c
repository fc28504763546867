/* GET /metrics: the request's head read (bounded), the answer built whole
 * from the live daemon (listeners, the engine's closes, every service's
 * figures, the shared port's requests) and the connection finished. Why
 * not a library such as libmicrohttpd: it would bring threads or a loop of
 * its own beside ours, and the figures live on this loop's thread; one
 * request a scrape needs only these lines, under the engine's caps.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/buf.h"
#include "bulwark/log.h"
#include "svc/metrics/metrics.h"
#include "svc/metrics/metrics_int.h"

#define HEAD_MAX (8u * 1024u)
#define BODY_MAX (4u * 1024u * 1024u)

struct bw_metrics {
	struct bw_metrics_cfg cfg;
	struct bw_host host;
	uint64_t scrapes;
};

void
bw_metrics_cfg_defaults(struct bw_metrics_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->limits = (struct bw_conn_limits){HEAD_MAX, BODY_MAX + 1024, 10000,
					      10000};
}

/* --- the figures -------------------------------------------------------- */

struct out {
	struct bw_buf *b;
	int rc;
};

static void
put_stat(void *arg, const char *key, const char *label, uint64_t value)
{
	struct out *o = arg;
	size_t n = strlen(key);
	const char *type = n > 6 && strcmp(key + n - 6, "_total") == 0
				   ? "counter"
				   : "gauge";

	o->rc |= bw_buf_printf(o->b,
			       "# HELP bulwark_%s %s.\n# TYPE bulwark_%s %s\n"
			       "bulwark_%s %llu\n",
			       key, label, key, type, key,
			       (unsigned long long)value);
}

static int
listeners(const struct bw_engine *e, struct bw_buf *b)
{
	static const char *const fam[][3] = {
		{"connections", "gauge", "Open connections per listener."},
		{"connections_accepted_total", "counter",
		 "Connections accepted per listener."},
		{"connections_refused_total", "counter",
		 "Connections refused at a listener's cap."},
	};
	const struct bw_listener *l;
	unsigned i, k;
	uint64_t v;
	int rc = 0;

	for (k = 0; k < 3; k++) {
		rc |= bw_buf_printf(
			b, "# HELP bulwark_%s %s\n# TYPE bulwark_%s %s\n",
			fam[k][0], fam[k][2], fam[k][0], fam[k][1]);
		for (i = 0; i < e->lis_n; i++) {
			l = &e->lis[i];
			v = k == 0   ? l->conns_n
			    : k == 1 ? l->accepted
				     : l->refused;
			rc |= bw_buf_printf(b,
					    "bulwark_%s{listener=\"%s\","
					    "port=\"%u\"} %llu\n",
					    fam[k][0], l->name, l->port,
					    (unsigned long long)v);
		}
	}
	rc |= bw_buf_printf(
		b,
		"# HELP bulwark_errors_total What went wrong, by kind: the "
		"engine's closes, then each service's.\n"
		"# TYPE bulwark_errors_total counter\n"
		"bulwark_errors_total{kind=\"idle_timeout\"} %llu\n"
		"bulwark_errors_total{kind=\"request_deadline\"} %llu\n"
		"bulwark_errors_total{kind=\"output_overflow\"} %llu\n"
		"bulwark_errors_total{kind=\"out_of_descriptors\"} %llu\n",
		(unsigned long long)e->closed_idle,
		(unsigned long long)e->closed_deadline,
		(unsigned long long)e->closed_overflow,
		(unsigned long long)e->closed_emfile);
	if (e->cfg.proxy_from.n > 0)
		rc |= bw_buf_printf(
			b, "bulwark_errors_total{kind=\"proxy_header\"} %llu\n",
			(unsigned long long)e->proxy_refused);
	if (e->tls != NULL)
		rc |= bw_buf_printf(
			b,
			"bulwark_errors_total{kind=\"tls_handshake\"} %llu\n"
			"bulwark_errors_total{kind=\"tls_handshake_rate\"} "
			"%llu\n",
			(unsigned long long)e->tls_failed,
			(unsigned long long)e->tls_addr_refused);
	return rc;
}

/* The engine's counts beside its errors (after every service's errors:
 * a family's samples stay together). */
static int
engine_counts(const struct bw_engine *e, struct bw_buf *b)
{
	unsigned k;
	int rc = 0;

	if (e->cfg.proxy_from.n > 0)
		rc |= bw_buf_printf(
			b,
			"# HELP bulwark_proxy_headers_total PROXY headers "
			"taken "
			"from the load balancers (--proxy-from).\n"
			"# TYPE bulwark_proxy_headers_total counter\n"
			"bulwark_proxy_headers_total %llu\n"
			"# HELP bulwark_proxy_checks_total Of those, the "
			"balancers' own connections (LOCAL: health checks).\n"
			"# TYPE bulwark_proxy_checks_total counter\n"
			"bulwark_proxy_checks_total %llu\n",
			(unsigned long long)e->proxy_headers,
			(unsigned long long)e->proxy_local);
	if (e->tls != NULL)
		rc |= bw_buf_printf(
			b,
			"# HELP bulwark_tls_handshakes_total TLS handshakes "
			"completed on the TLS listeners (failed ones: "
			"bulwark_errors_total{kind=\"tls_handshake\"}).\n"
			"# TYPE bulwark_tls_handshakes_total counter\n"
			"bulwark_tls_handshakes_total %llu\n"
			"# HELP bulwark_tls_resumed_total TLS handshakes that "
			"resumed a session (a ticket of this process's; among "
			"bulwark_tls_handshakes_total).\n"
			"# TYPE bulwark_tls_resumed_total counter\n"
			"bulwark_tls_resumed_total %llu\n"
			"# HELP bulwark_tls_accept_paused_total Times the TLS "
			"listeners stopped accepting for the rest of a second "
			"(--tls-handshakes).\n"
			"# TYPE bulwark_tls_accept_paused_total counter\n"
			"bulwark_tls_accept_paused_total %llu\n"
			"# HELP bulwark_tls_bulk_readers TLS connections "
			"holding a bulk read's buffer now "
			"(--tls-bulk-readers).\n"
			"# TYPE bulwark_tls_bulk_readers gauge\n"
			"bulwark_tls_bulk_readers %u\n"
			"# HELP bulwark_tls_bulk_refused_total TLS "
			"connections that wanted one while all were held, "
			"and read 64 KiB at a time.\n"
			"# TYPE bulwark_tls_bulk_refused_total counter\n"
			"bulwark_tls_bulk_refused_total %llu\n",
			(unsigned long long)e->tls_handshakes,
			(unsigned long long)e->tls_resumed,
			(unsigned long long)e->tls_paused, e->tls_bulk,
			(unsigned long long)e->tls_bulk_refused);
	rc |= bw_buf_printf(b, "# HELP bulwark_client_deviations_total "
			       "Connections on which a client bent a protocol "
			       "the way the kind says (the clients: the "
			       "console's DEVS).\n"
			       "# TYPE bulwark_client_deviations_total "
			       "counter\n");
	for (k = 0; k < BW_DEV_KINDS; k++)
		rc |= bw_buf_printf(
			b,
			"bulwark_client_deviations_total{kind=\"%s\"} %llu\n",
			bw_dev_kind_name(k),
			(unsigned long long)bw_engine_devs(e)->total[k]);
	return rc;
}

/* One line of bulwark_errors_total per kind a service reports. */
static void
put_error(void *arg, const char *key, const char *label, uint64_t value)
{
	struct out *o = arg;

	(void)label;
	o->rc |= bw_buf_printf(o->b, "bulwark_errors_total{kind=\"%s\"} %llu\n",
			       key, (unsigned long long)value);
}

/* A summary figure: a gauge of its own, its label as its help. */
static void
put_gauge(void *arg, const char *key, const char *label, uint64_t value)
{
	struct out *o = arg;

	o->rc |= bw_buf_printf(o->b,
			       "# HELP bulwark_%s %s\n# TYPE bulwark_%s gauge\n"
			       "bulwark_%s %llu\n",
			       key, label, key, key, (unsigned long long)value);
}

/* The loop's passes: what every connection waits behind (a long one is a
 * stall: a hash, an fsync or a big reply's work on the loop thread). */
static int
loop_passes(const struct bw_loop *l, struct bw_buf *b)
{
	static const char *const le[BW_LOOP_PASS_BOUNDS] = {"0.001", "0.01",
							    "0.1", "1"};
	struct bw_loop_passes p;
	uint64_t below = 0;
	unsigned i;
	int rc;

	bw_loop_passes(l, &p);
	rc = bw_buf_printf(b, "# HELP bulwark_loop_pass_seconds How long the "
			      "event loop's passes took.\n"
			      "# TYPE bulwark_loop_pass_seconds histogram\n");
	for (i = 0; i < BW_LOOP_PASS_BOUNDS; i++) {
		below += p.n[i];
		rc |= bw_buf_printf(
			b,
			"bulwark_loop_pass_seconds_bucket{le=\"%s\"} "
			"%llu\n",
			le[i], (unsigned long long)below);
	}
	below += p.n[BW_LOOP_PASS_BOUNDS];
	rc |= bw_buf_printf(
		b,
		"bulwark_loop_pass_seconds_bucket{le=\"+Inf\"} %llu\n"
		"bulwark_loop_pass_seconds_sum %.6f\n"
		"bulwark_loop_pass_seconds_count %llu\n"
		"# HELP bulwark_loop_pass_max_seconds The longest pass of the "
		"event loop since start.\n"
		"# TYPE bulwark_loop_pass_max_seconds gauge\n"
		"bulwark_loop_pass_max_seconds %.6f\n",
		(unsigned long long)below, (double)p.sum_us / 1e6,
		(unsigned long long)below, (double)p.max_us / 1e6);
	return rc;
}

static int
body(struct bw_metrics *m, struct bw_buf *b)
{
	const struct bw_host *h = &m->host;
	struct out o = {b, 0};

	o.rc |= bw_buf_printf(
		b,
		"# HELP bulwark_build_info The version of bulwarkd serving "
		"(always 1).\n"
		"# TYPE bulwark_build_info gauge\n"
		"bulwark_build_info{version=\"%s\",vault_protocol=\"3\","
		"messenger_protocol=\"2\"} 1\n"
		"# HELP bulwark_start_time_seconds When bulwarkd started.\n"
		"# TYPE bulwark_start_time_seconds gauge\n"
		"bulwark_start_time_seconds %lld\n"
		"# HELP bulwark_clients Registered clients.\n"
		"# TYPE bulwark_clients gauge\nbulwark_clients %llu\n",
		BW_VERSION, (long long)h->started_s,
		(unsigned long long)h->reg->clients_n);
	o.rc |= metrics_process(b, (long long)h->started_s);
	if (h->summary != NULL)
		h->summary(h->stats_arg, put_gauge, &o);
	o.rc |= bw_buf_printf(
		b,
		"# HELP bulwark_scrapes_total Answers to GET /metrics.\n"
		"# TYPE bulwark_scrapes_total counter\n"
		"bulwark_scrapes_total %llu\n",
		(unsigned long long)++m->scrapes);
	o.rc |= listeners(h->eng, b);
	if (h->errors != NULL)
		h->errors(h->stats_arg, put_error, &o);
	o.rc |= engine_counts(h->eng, b);
	o.rc |= bw_buf_printf(
		b,
		"# HELP bulwark_worker_jobs Jobs on or waiting for the worker "
		"threads.\n# TYPE bulwark_worker_jobs gauge\n"
		"bulwark_worker_jobs %u\n",
		bw_loop_jobs(h->eng->loop));
	o.rc |= loop_passes(h->eng->loop, b);
	if (h->stats != NULL)
		h->stats(h->stats_arg, put_stat, &o);
	if (h->metrics != NULL)
		o.rc |= h->metrics(h->metrics_arg, b);
	return o.rc != 0 ? BW_ETOOBIG : 0;
}

/* Every sample of in, labelled with the node: "name{node="N",...} v" (the
 * node's name is a word: nothing in it needs escaping). */
static int
label_node(const struct bw_buf *in, const char *node, struct bw_buf *out)
{
	const char *p = (const char *)bw_buf_head(in), *end = p + in->len;
	const char *nl, *brace, *sp;
	int rc = 0;

	while (p < end && rc == 0) {
		nl = memchr(p, '\n', (size_t)(end - p));
		nl = nl != NULL ? nl + 1 : end;
		sp = memchr(p, ' ', (size_t)(nl - p));
		brace = memchr(p, '{', (size_t)(nl - p));
		if (p[0] == '#' || sp == NULL) {
			rc = bw_buf_append(out, p, (size_t)(nl - p));
		} else if (brace != NULL && brace < sp) {
			rc = bw_buf_printf(out, "%.*snode=\"%s\",%.*s",
					   (int)(brace + 1 - p), p, node,
					   (int)(nl - brace - 1), brace + 1);
		} else {
			rc = bw_buf_printf(out, "%.*s{node=\"%s\"}%.*s",
					   (int)(sp - p), p, node,
					   (int)(nl - sp), sp);
		}
		p = nl;
	}
	return rc != 0 ? BW_ETOOBIG : 0;
}

/* --- HTTP ---------------------------------------------------------------- */

static void
answer(struct bw_conn *c, const char *status, const char *type, const void *p,
       size_t n, int head_only)
{
	char hdr[256];
	int k = snprintf(hdr, sizeof(hdr),
			 "HTTP/1.1 %s\r\nContent-Type: %s\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
			 status, type, n);

	if (k > 0 && bw_conn_send(c, hdr, (size_t)k) == 0 && !head_only &&
	    n > 0 && bw_conn_send(c, p, n) != 0)
		bw_info("c%llu metrics: answer over the cap",
			(unsigned long long)c->id);
	bw_conn_finish(c);
}

static void
serve(struct bw_conn *c, const char *line, size_t n)
{
	static const char text[] = "text/plain; charset=utf-8";
	struct bw_metrics *m = bw_conn_inst(c);
	const char *sp = memchr(line, ' ', n), *path, *end;
	struct bw_buf b, lb;
	int head = 0;

	if (sp != NULL && sp - line == 3 && memcmp(line, "GET", 3) == 0)
		head = 0;
	else if (sp != NULL && sp - line == 4 && memcmp(line, "HEAD", 4) == 0)
		head = 1;
	else {
		answer(c, "405 Method Not Allowed", text, "GET only\n", 9, 0);
		return;
	}
	path = sp + 1;
	end = memchr(path, ' ', n - (size_t)(path - line));
	if (end == NULL)
		end = line + n;
	if ((size_t)(end - path) >= 8 && memcmp(path, "/metrics", 8) == 0 &&
	    (end - path == 8 || path[8] == '?')) {
		bw_buf_init(&b, BODY_MAX);
		bw_buf_init(&lb, BODY_MAX);
		if (body(m, &b) != 0 ||
		    label_node(&b, m->host.node != NULL ? m->host.node : "",
			       &lb) != 0)
			answer(c, "500 Internal Server Error", text,
			       "figures over the cap\n", 21, head);
		else
			answer(c, "200 OK",
			       "text/plain; version=0.0.4; charset=utf-8",
			       bw_buf_head(&lb), lb.len, head);
		bw_buf_fini(&b);
		bw_buf_fini(&lb);
		return;
	}
	answer(c, "404 Not Found", text, "try /metrics\n", 13, head);
}

static int
metrics_open(struct bw_conn *c)
{
	c->want = HEAD_MAX;
	return 0;
}

static int
metrics_input(struct bw_conn *c)
{
	const char *p = (const char *)bw_buf_head(&c->in);
	size_t n = c->in.len, i, eol;

	if (bw_conn_closing(c) && bw_conn_queued(c) > 0)
		return 0; /* answered */
	/* the head ends at an empty line; the request line is its first */
	for (i = 0; i + 1 < n; i++) {
		if ((p[i] == '\n' && p[i + 1] == '\n') ||
		    (i + 3 < n && memcmp(p + i, "\r\n\r\n", 4) == 0)) {
			eol = (size_t)((const char *)memchr(p, '\n', n) - p);
			if (eol > 0 && p[eol - 1] == '\r')
				eol--;
			/* a whole request: no newcomer closes it now (those
			 * still sending theirs go first) */
			bw_conn_proven(c);
			serve(c, p, eol);
			bw_buf_consume(&c->in, n);
			return 0;
		}
	}
	if (n >= HEAD_MAX)
		answer(c, "431 Request Header Fields Too Large",
		       "text/plain; charset=utf-8", "", 0, 0);
	return 0;
}

static const struct bw_service metrics_service = {
	.name = "metrics",
	.on_open = metrics_open,
	.on_input = metrics_input,
};

static int
metrics_init(const struct bw_host *h, const void *cfg, void **out)
{
	struct bw_metrics *m;

	if ((m = calloc(1, sizeof(*m))) == NULL)
		return BW_ENOMEM;
	m->cfg = *(const struct bw_metrics_cfg *)cfg;
	m->host = *h;
	*out = m;
	return 0;
}

static void
metrics_fini(void *inst)
{
	free(inst);
}

const struct bw_module bw_metrics_module = {
	.name = "metrics",
	.init = metrics_init,
	.fini = metrics_fini,
	.service = &metrics_service,
};
