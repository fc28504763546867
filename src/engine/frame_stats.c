/* What the shared port's requests came to: per protocol and request code,
 * answered or answered with the protocol's error; codes no route has and
 * sizes out of bounds; and a histogram of the time from a request's header
 * to its answer. Written out in the Prometheus text format.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bulwark/err.h"
#include "engine/frame_int.h"

/* upper bounds in microseconds: 1 ms ... 10 s, then +Inf */
static const uint64_t bounds_us[FRAME_BUCKETS] = {
	1000,	2500,	5000,	 10000,	  25000,
	100000, 250000, 1000000, 2500000, 10000000};

static uint64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int
frame_stats_init(struct bw_frame *f, unsigned i)
{
	memset(&f->st[i], 0, sizeof(f->st[i]));
	return 0;
}

void
frame_stats_fini(struct bw_frame *f)
{
	unsigned i;

	for (i = 0; i < f->n; i++) {
		free(f->st[i].ok);
		free(f->st[i].err);
		f->st[i].ok = f->st[i].err = NULL;
	}
}

/* The per-route counters of protocol i, allocated on first use. */
static int
routes_of(struct bw_frame *f, unsigned i)
{
	size_t n = f->p[i]->routes_n ? f->p[i]->routes_n : 1;

	if (f->st[i].ok != NULL)
		return 0;
	f->st[i].ok = calloc(n, sizeof(uint64_t));
	f->st[i].err = calloc(n, sizeof(uint64_t));
	return f->st[i].ok != NULL && f->st[i].err != NULL ? 0 : BW_ENOMEM;
}

/* Whether a reply code says no: the general error, or one of the
 * protocol's refusals. */
static int
refused(const struct bw_frame_proto *p, uint16_t code)
{
	size_t i;

	if (code == 0)
		return 0;
	if (code == p->err_code)
		return 1;
	for (i = 0; i < p->refusals_n; i++) {
		if (p->refusals[i] == code)
			return 1;
	}
	return 0;
}

void
frame_req_start(struct bw_conn *c)
{
	struct frame_conn *fc = FC(c);

	fc->req_start_us = now_us();
	fc->req_counted = 0;
}

void
frame_req_result(struct bw_conn *c, uint16_t reply_code)
{
	struct frame_conn *fc = FC(c);
	struct bw_frame *f = bw_conn_inst(c);
	const struct bw_frame_req *r = &fc->req;
	struct frame_stats *st;
	uint64_t us;
	int i, bulk;
	size_t k, b;

	if (fc->req_counted || r->route == NULL ||
	    (i = frame_proto_index(f, r->proto)) < 0)
		return;
	fc->req_counted = 1;
	st = &f->st[i];
	k = (size_t)(r->route - r->proto->routes);
	if (routes_of(f, (unsigned)i) == 0) {
		if (refused(r->proto, reply_code))
			st->err[k]++;
		else
			st->ok[k]++;
	}
	us = now_us() - fc->req_start_us;
	for (b = 0; b < FRAME_BUCKETS && us > bounds_us[b]; b++)
		;
	bulk = r->hdr.payload_size >= FRAME_BULK;
	st->hist[bulk][b]++;
	st->sum_us[bulk] += us;
	st->count[bulk]++;
}

void
frame_req_refused(struct bw_conn *c, const struct bw_frame_proto *p,
		  int unknown)
{
	struct bw_frame *f = bw_conn_inst(c);
	int i = frame_proto_index(f, p);

	FC(c)->req_counted = 1;
	if (i < 0)
		return;
	if (unknown)
		f->st[i].unknown++;
	else
		f->st[i].framing++;
}

/* One protocol's histogram of one size of request. */
static int
histogram(struct bw_buf *out, const char *proto, const char *size,
	  const struct frame_stats *st, int z)
{
	uint64_t cum = 0;
	size_t b;
	int rc = 0;

	for (b = 0; b <= FRAME_BUCKETS; b++) {
		cum += st->hist[z][b];
		if (b < FRAME_BUCKETS)
			rc |= bw_buf_printf(
				out,
				"bulwark_request_seconds_bucket{protocol="
				"\"%s\",size=\"%s\",le=\"%g\"} %llu\n",
				proto, size, (double)bounds_us[b] / 1e6,
				(unsigned long long)cum);
		else
			rc |= bw_buf_printf(
				out,
				"bulwark_request_seconds_bucket{protocol="
				"\"%s\",size=\"%s\",le=\"+Inf\"} %llu\n",
				proto, size, (unsigned long long)cum);
	}
	rc |= bw_buf_printf(out,
			    "bulwark_request_seconds_sum{protocol=\"%s\","
			    "size=\"%s\"} %.6f\n"
			    "bulwark_request_seconds_count{protocol=\"%s\","
			    "size=\"%s\"} %llu\n",
			    proto, size, (double)st->sum_us[z] / 1e6, proto,
			    size, (unsigned long long)st->count[z]);
	return rc;
}

int
bw_frame_metrics(const struct bw_frame *f, struct bw_buf *out)
{
	static const char *const sizes[2] = {"small", "bulk"};
	const struct frame_stats *st;
	const struct bw_frame_proto *p;
	unsigned i;
	size_t k;
	int rc = 0, z;

	rc |= bw_buf_printf(out,
			    "# HELP bulwark_shared_connections Open "
			    "connections on the shared port by the protocol "
			    "of their last request.\n"
			    "# TYPE bulwark_shared_connections gauge\n");
	for (i = 0; i < f->n; i++)
		rc |= bw_buf_printf(
			out,
			"bulwark_shared_connections{protocol=\"%s\"}"
			" %llu\n",
			f->p[i]->name, (unsigned long long)f->conns[i]);
	rc |= bw_buf_printf(
		out, "bulwark_shared_connections{protocol=\"none\"} %llu\n",
		(unsigned long long)f->conns_none);
	rc |= bw_buf_printf(out,
			    "# HELP bulwark_requests_total Requests on the "
			    "shared port by protocol, request code and "
			    "result.\n"
			    "# TYPE bulwark_requests_total counter\n");
	for (i = 0; i < f->n; i++) {
		p = f->p[i];
		st = &f->st[i];
		for (k = 0; k < p->routes_n; k++) {
			rc |= bw_buf_printf(
				out,
				"bulwark_requests_total{protocol=\"%s\","
				"request=\"%u\",result=\"ok\"} %llu\n"
				"bulwark_requests_total{protocol=\"%s\","
				"request=\"%u\",result=\"error\"} %llu\n",
				p->name, p->routes[k].code,
				(unsigned long long)(st->ok ? st->ok[k] : 0),
				p->name, p->routes[k].code,
				(unsigned long long)(st->err ? st->err[k] : 0));
		}
		rc |= bw_buf_printf(
			out,
			"bulwark_requests_total{protocol=\"%s\","
			"request=\"unknown\",result=\"error\"} %llu\n"
			"bulwark_requests_total{protocol=\"%s\","
			"request=\"bad_size\",result=\"error\"} %llu\n",
			p->name, (unsigned long long)st->unknown, p->name,
			(unsigned long long)st->framing);
	}
	rc |= bw_buf_printf(out,
			    "# HELP bulwark_request_seconds Time from a "
			    "request's header to its answer; size=\"bulk\": "
			    "a payload of 64 KiB or more, whose time holds "
			    "its transfer.\n"
			    "# TYPE bulwark_request_seconds histogram\n");
	for (i = 0; i < f->n; i++)
		for (z = 0; z < 2; z++)
			rc |= histogram(out, f->p[i]->name, sizes[z], &f->st[i],
					z);
	return rc != 0 ? BW_ETOOBIG : 0;
}
