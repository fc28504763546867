/* libFuzzer harness for the shared port's frame (src/engine/frame.c,
 * frame_body.c): the real engine runs in-process (opened on the first
 * input) with a listener serving two test protocols, and each input is one
 * connection: the first byte says how the rest is cut into pieces (1 to 3,
 * the loop running between them), the rest is what the client sends
 * before it shuts its write side (engine_fuzz.h).
 *
 * Protocol a (version 7, error 900, codes 1-99; replies capped at 48 KiB
 * queued):
 *   10 echo, 10 bytes, BW_ROUTE_LAX: reply 20 with them
 *   11 stream, 4..3000 bytes, head 4 (a u32), BW_ROUTE_LAX (size from the
 *      head: 4 + its u32): the rest streams; reply 21 (u32 body bytes,
 *      u32 head)
 *   12 big, 4 bytes (u32 n): reply 22 of n % 9000 bytes (byte i is
 *      i % 251 + 1), in pieces
 *   13 refused, 0..2000000 bytes: bw_frame_discard (error 900 in step,
 *      or at once past 1 MiB or without a slot: two slots, one per
 *      address)
 *   14 wait, 2 bytes: bw_frame_wait, answered on the next loop pass with
 *      reply 24 (the 2 bytes), then bw_frame_done and bw_frame_kick
 *   15 close, 0 bytes: the handler returns an error (no reply, a close)
 *   16 error, 1 byte: bw_frame_error (odd byte: bw_frame_fail)
 * Protocol b (version 8, error 901, codes 100-199; per-connection state
 * with on_next, on_close and busy):
 *   100 ping, 0 bytes: reply 120
 *
 * Invariants (abort() on a violation): the server closes the connection
 * after the client's end of stream, and the engine holds no connection
 * afterwards (nor the process more descriptors than after the first
 * input); what it sent is a sequence of replies, each a 7-byte response
 * header (version, u16 code, u32 size) and exactly size bytes, of a code
 * the test protocols answer, with that protocol's version and the payload
 * that code carries (sizes, the big reply's bytes); zeros where a header
 * would start are the padding of the reply before them: fewer than 1024,
 * making that reply a multiple of 1024 bytes, and the last bytes sent.
 * Only a connection the server closed at once (a failed send: the cap)
 * may end inside a reply. Against a model of the frame written here from
 * frame.h (model()): the replies to well-formed, unpadded requests are the
 * ones predicted, in order, with the payloads predicted (echo's bytes, the
 * streamed count and head, ...), every one of them unless the connection
 * was cut, and none after a predicted close. Every protocol state
 * allocated is released at the close, no slot stays taken and a
 * discarded body never reaches the route's body handler; the frame's
 * figures (bw_frame_metrics) are well formed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/buf.h"
#include "bulwark/cur.h"
#include "engine/frame.h"
#include "engine/slots.h"
#include "proto/wire.h"

#include "engine_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
	C_ECHO = 10,
	C_STREAM = 11,
	C_BIG = 12,
	C_REFUSED = 13,
	C_WAIT = 14,
	C_CLOSE = 15,
	C_ERROR = 16,
	C_PING = 100,
};
enum { R_ECHO = 20, R_STREAM = 21, R_BIG = 22, R_WAIT = 24, R_PING = 120 };
enum { ERR_A = 900, ERR_B = 901, V_A = 7, V_B = 8 };

#define STREAM_MAX 3000u
#define BIG_MOD	   9000u
#define A_OUT_MAX  (48u * 1024u)

static void
check(int ok)
{
	if (!ok)
		abort();
}

static struct {
	struct bw_engine e;
	struct bw_frame *f;
	struct bw_listener *l;
	struct bw_slots slots;
	uint64_t discards;
	struct bw_call wait_call;
	uint64_t wait_conn;
	uint8_t wait_bytes[2];
	/* this input's connection */
	int failed;  /* closed at once (a failed send) */
	long states; /* protocol states allocated, not released */
	unsigned inputs;
} g;

struct astate {
	int counted;
	uint64_t left, streamed;
	uint32_t head;
};

struct bstate {
	int counted;
	unsigned nexts;
};

static void
count_state(int *counted)
{
	if (!*counted) {
		*counted = 1;
		g.states++;
	}
}

static void
note_failure(int rc)
{
	if (rc != 0)
		g.failed = 1;
}

/* --- protocol a ----------------------------------------------------------
 */

static int
on_echo(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	count_state(&((struct astate *)r->state)->counted);
	note_failure(bw_frame_reply(c, R_ECHO, p, 10));
	return 0;
}

static int
on_stream(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	struct astate *st = r->state;

	count_state(&st->counted);
	st->head = bw_get_u32le(p);
	st->left = r->hdr.payload_size - 4u;
	st->streamed = 0;
	c->want = 512;
	bw_frame_stream(c);
	return 0;
}

static int
on_stream_body(struct bw_conn *c, struct bw_frame_req *r)
{
	struct astate *st = r->state;
	size_t k = c->in.len < st->left ? c->in.len : (size_t)st->left;
	uint8_t out[8];

	bw_buf_consume(&c->in, k);
	st->left -= k;
	st->streamed += k;
	if (st->left > 0 || !bw_frame_body_end(c))
		return 0;
	bw_put_u32le(out, (uint32_t)st->streamed);
	bw_put_u32le(out + 4, st->head);
	note_failure(bw_frame_reply(c, R_STREAM, out, sizeof(out)));
	bw_frame_done(c);
	return 0;
}

static uint32_t
stream_lax_size(const uint8_t *head)
{
	uint32_t n = bw_get_u32le(head);

	return n > STREAM_MAX ? 0 : 4u + n;
}

static int
on_big(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	uint32_t n = bw_get_u32le(p) % BIG_MOD, i, k;
	uint8_t piece[700];

	count_state(&((struct astate *)r->state)->counted);
	note_failure(bw_frame_reply_begin(c, R_BIG, n));
	for (i = 0; i < n; i += k) {
		k = n - i < sizeof(piece) ? n - i : (uint32_t)sizeof(piece);
		for (uint32_t j = 0; j < k; j++)
			piece[j] = (uint8_t)((i + j) % 251u + 1u);
		note_failure(bw_frame_reply_add(c, piece, k));
	}
	note_failure(bw_frame_reply_end(c));
	return 0;
}

static int
on_refused_body(struct bw_conn *c, struct bw_frame_req *r)
{
	(void)r;
	bw_buf_consume(&c->in, c->in.len); /* never called: discarded */
	abort();
}

static int
on_refused(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	(void)p;
	count_state(&((struct astate *)r->state)->counted);
	return bw_frame_discard(c, r->hdr.payload_size, &g.slots, &g.discards,
				"refused by the test protocol");
}

static void
wait_over(void *arg)
{
	struct bw_conn *c = bw_engine_conn(&g.e, g.wait_conn);

	(void)arg;
	if (c == NULL || bw_conn_dead(c))
		return;
	note_failure(bw_frame_reply(c, R_WAIT, g.wait_bytes, 2));
	bw_frame_done(c);
	bw_frame_kick(c);
}

static int
on_wait(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	count_state(&((struct astate *)r->state)->counted);
	memcpy(g.wait_bytes, p, 2);
	g.wait_conn = c->id;
	bw_frame_wait(c);
	bw_loop_call(g.e.loop, &g.wait_call, wait_over, NULL);
	return 0;
}

static int
on_close(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	(void)c;
	(void)p;
	count_state(&((struct astate *)r->state)->counted);
	g.failed = 1;
	return BW_EPROTO;
}

static int
on_error(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	count_state(&((struct astate *)r->state)->counted);
	if (p[0] & 1)
		(void)bw_frame_fail(c, "told to fail");
	else
		(void)bw_frame_error(c, "told to err");
	return 0;
}

static void
a_close(struct bw_conn *c, void *ctx, void *state)
{
	struct astate *st = state;

	(void)ctx;
	if (c->flags & BW_CONN_FAILED)
		g.failed = 1;
	if (st->counted)
		g.states--;
}

static const struct bw_frame_route routes_a[] = {
	{C_ECHO, BW_ROUTE_LAX, 10, 10, 10, on_echo, NULL, NULL},
	{C_STREAM, BW_ROUTE_LAX, 4, STREAM_MAX, 4, on_stream, on_stream_body,
	 stream_lax_size},
	{C_BIG, 0, 4, 4, 4, on_big, NULL, NULL},
	{C_REFUSED, 0, 0, 2000000, 0, on_refused, on_refused_body, NULL},
	{C_WAIT, 0, 2, 2, 2, on_wait, NULL, NULL},
	{C_CLOSE, 0, 0, 0, 0, on_close, NULL, NULL},
	{C_ERROR, 0, 1, 1, 1, on_error, NULL, NULL},
};

static const struct bw_frame_proto proto_a = {
	.name = "a",
	.version = V_A,
	.err_code = ERR_A,
	.code_lo = 1,
	.code_hi = 99,
	.routes = routes_a,
	.routes_n = sizeof(routes_a) / sizeof(routes_a[0]),
	.state_size = sizeof(struct astate),
	.on_close = a_close,
};

/* --- protocol b ----------------------------------------------------------
 */

static int
on_ping(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	(void)p;
	count_state(&((struct bstate *)r->state)->counted);
	note_failure(bw_frame_reply(c, R_PING, NULL, 0));
	return 0;
}

static void
b_next(struct bw_conn *c, void *ctx, void *state)
{
	struct bstate *st = state;

	(void)c;
	(void)ctx;
	st->nexts++;
}

static void
b_close(struct bw_conn *c, void *ctx, void *state)
{
	struct bstate *st = state;

	(void)ctx;
	if (c->flags & BW_CONN_FAILED)
		g.failed = 1;
	if (st->counted)
		g.states--;
}

static int
b_busy(const struct bw_conn *c, const void *state)
{
	(void)c;
	return ((const struct bstate *)state)->nexts == 0;
}

static const struct bw_frame_route routes_b[] = {
	{C_PING, 0, 0, 0, 0, on_ping, NULL, NULL},
};

static const struct bw_frame_proto proto_b = {
	.name = "b",
	.version = V_B,
	.err_code = ERR_B,
	.code_lo = 100,
	.code_hi = 199,
	.routes = routes_b,
	.routes_n = 1,
	.state_size = sizeof(struct bstate),
	.on_next = b_next,
	.on_close = b_close,
	.busy = b_busy,
};

/* --- the checks ----------------------------------------------------------
 */

static void
setup_once(void)
{
	static const struct bw_conn_limits a_lim = {4096, A_OUT_MAX, 10000,
						    10000};
	static const struct bw_conn_limits b_lim = {4096, 8192, 10000, 10000};
	struct bw_listen_cfg lc;
	struct bw_conn_limits lim;

	if (g.f != NULL)
		return;
	ef_open(&g.e);
	if (bw_slots_init(&g.slots, &g.e) != 0 || bw_frame_new(&g.f) != 0 ||
	    bw_frame_add(g.f, &proto_a, NULL, &a_lim) != 0 ||
	    bw_frame_add(g.f, &proto_b, NULL, &b_lim) != 0)
		ef_die("cannot set up the frame");
	g.slots.max = 2;
	g.slots.per_addr = 1;
	bw_frame_limits(g.f, &lim);
	lc = ef_listen_cfg("shared", &lim);
	if (bw_engine_listen(&g.e, &bw_frame_service, g.f, &lc, &g.l) != 0)
		ef_die("cannot listen");
}

/* A reply's payload against what its code carries. */
static void
check_reply(uint8_t version, uint16_t code, const uint8_t *p, uint32_t n)
{
	uint32_t i;

	switch (code) {
	case R_ECHO:
		check(version == V_A && n == 10);
		break;
	case R_STREAM:
		check(version == V_A && n == 8);
		check(bw_get_u32le(p) <= STREAM_MAX - 4u);
		break;
	case R_BIG:
		check(version == V_A && n < BIG_MOD);
		for (i = 0; i < n; i++)
			check(p[i] == (uint8_t)(i % 251u + 1u));
		break;
	case R_WAIT:
		check(version == V_A && n == 2);
		break;
	case ERR_A:
		check(version == V_A && n == 0);
		break;
	case R_PING:
	case ERR_B:
		check(version == V_B && n == 0);
		break;
	default:
		abort(); /* a code nobody answers */
	}
}

/* A reply as it went on the wire, or as the model expects it. */
struct reply {
	uint16_t code;
	const uint8_t *p; /* payload, n bytes (model: NULL, checked apart) */
	uint32_t n;
	uint8_t body[8]; /* the model's small payloads */
};

#define REPLIES_MAX 256

/* Splits the output into replies (at most REPLIES_MAX are kept; *n counts
 * them all), checking each and the padding; returns 1 if it ends inside a
 * reply. */
static int
split_output(const struct ef_out *o, struct reply *r, size_t *n)
{
	size_t pos = 0, last = 0, i, pad;
	uint32_t len;

	*n = 0;
	while (pos < o->len) {
		if (o->p[pos] == 0) {
			/* padding of the reply before it, the last bytes */
			check(*n > 0);
			for (i = pos; i < o->len; i++)
				check(o->p[i] == 0);
			pad = o->len - pos;
			check(pad < BW_PAD_UNIT);
			check((pos - last + pad) % BW_PAD_UNIT == 0);
			return 0;
		}
		if (o->len - pos < BW_RESP_HDR_LEN)
			return 1;
		len = bw_get_u32le(o->p + pos + 3);
		if (o->len - pos - BW_RESP_HDR_LEN < len)
			return 1;
		if (*n < REPLIES_MAX) {
			r[*n].code = bw_get_u16le(o->p + pos + 1);
			r[*n].p = o->p + pos + BW_RESP_HDR_LEN;
			r[*n].n = len;
		}
		check_reply(o->p[pos], bw_get_u16le(o->p + pos + 1),
			    o->p + pos + BW_RESP_HDR_LEN, len);
		(*n)++;
		last = pos;
		pos += BW_RESP_HDR_LEN + (size_t)len;
	}
	return 0;
}

/* --- the model ------------------------------------------------------------
 * What the frame owes a client whose requests are well formed and not
 * padded, written from frame.h's contract: each request with a code of a
 * table and a payload size within the route's bounds is answered in
 * order; an unknown code gets the error of the protocol whose range holds
 * it (else of the last request's protocol, else a's) and a size out of
 * bounds the route's protocol's error, then the connection is finished; a
 * request the end of stream cuts gets nothing. The model stops (what
 * follows is not predicted) where a zero byte follows a request (padding
 * may be decided by how the bytes arrive) or a lenient route is given a
 * size of 0 (BW_ROUTE_LAX: the fields may or may not have come with the
 * header); a lenient fixed-size route given more than its size, up to
 * BW_ROUTE_LAX_MAX, is answered from its head, the rest ignored. */

enum model_end {
	M_DONE,	   /* every reply predicted; the server may go on */
	M_CLOSED,  /* predicted up to a close */
	M_UNKNOWN, /* predicted up to where the model stops */
};

static void
expect(struct reply *r, size_t *n, uint16_t code, const void *p, uint32_t len)
{
	if (*n < REPLIES_MAX) {
		r[*n].code = code;
		r[*n].p = NULL;
		r[*n].n = len;
		if (p != NULL && len <= sizeof(r[*n].body))
			memcpy(r[*n].body, p, len);
	}
	(*n)++;
}

static const struct bw_frame_route *
model_route(uint16_t code, const struct bw_frame_proto **proto)
{
	size_t k;

	for (k = 0; k < proto_a.routes_n; k++) {
		if (routes_a[k].code == code) {
			*proto = &proto_a;
			return &routes_a[k];
		}
	}
	if (routes_b[0].code == code) {
		*proto = &proto_b;
		return &routes_b[0];
	}
	return NULL;
}

static enum model_end
model(const uint8_t *in, size_t len, struct reply *r, size_t *n)
{
	const struct bw_frame_proto *last = NULL, *proto = NULL;
	const struct bw_frame_route *rt;
	struct bw_req_hdr h;
	const uint8_t *p;
	size_t pos = 0, avail;
	uint32_t size;
	uint8_t out[8];

	*n = 0;
	while (len - pos >= BW_REQ_HDR_LEN) {
		check(bw_req_hdr_decode(in + pos, len - pos, &h) ==
		      BW_REQ_HDR_LEN);
		pos += BW_REQ_HDR_LEN;
		avail = len - pos;
		p = in + pos;
		if ((rt = model_route(h.code, &proto)) == NULL) {
			proto = h.code >= proto_a.code_lo &&
						h.code <= proto_a.code_hi
					? &proto_a
				: h.code >= proto_b.code_lo &&
						h.code <= proto_b.code_hi
					? &proto_b
				: last != NULL ? last
					       : &proto_a;
			expect(r, n, proto->err_code, NULL, 0);
			return M_CLOSED;
		}
		size = h.payload_size;
		if (size < rt->min_size || size > rt->max_size) {
			/* lenience for a size of 0 depends on how the bytes
			 * arrive (the fields in the header's arrival) */
			if ((rt->flags & BW_ROUTE_LAX) && size == 0)
				return M_UNKNOWN;
			if (!(rt->flags & BW_ROUTE_LAX) ||
			    rt->on_body != NULL || size < rt->max_size ||
			    size > BW_ROUTE_LAX_MAX) {
				expect(r, n, proto->err_code, NULL, 0);
				return M_CLOSED;
			}
			/* the head is the request; the rest is ignored */
		}
		if (h.code == C_REFUSED && size > 1024u * 1024u) {
			expect(r, n, ERR_A, NULL, 0); /* at once */
			return M_CLOSED;
		}
		if (avail < size)
			return M_DONE; /* cut by the end of stream */
		pos += size;
		if (pos < len && in[pos] == 0)
			return M_UNKNOWN; /* padding, or a header's zeros */
		switch (h.code) {
		case C_ECHO:
			expect(r, n, R_ECHO, p, 10);
			break;
		case C_STREAM:
			bw_put_u32le(out, size - 4u);
			memcpy(out + 4, p, 4);
			expect(r, n, R_STREAM, out, 8);
			break;
		case C_BIG:
			expect(r, n, R_BIG, NULL, bw_get_u32le(p) % BIG_MOD);
			break;
		case C_REFUSED:
			expect(r, n, ERR_A, NULL, 0);
			break;
		case C_WAIT:
			expect(r, n, R_WAIT, p, 2);
			break;
		case C_CLOSE:
			return M_CLOSED;
		case C_ERROR:
			expect(r, n, ERR_A, NULL, 0);
			if (p[0] & 1)
				return M_CLOSED;
			break;
		default:
			expect(r, n, R_PING, NULL, 0);
			break;
		}
		last = proto;
	}
	return M_DONE;
}

/* The output against the model: the replies predicted, in order, each
 * with the payload predicted; all of them unless the connection was cut
 * (a failed send closes at once, dropping what was queued); nothing after
 * a predicted close. */
static void
check_output(const uint8_t *in, size_t len, const struct ef_out *o, int cut)
{
	static struct reply got[REPLIES_MAX], want[REPLIES_MAX];
	size_t got_n, want_n, i;
	enum model_end end = model(in, len, want, &want_n);

	if (split_output(o, got, &got_n))
		check(cut); /* ends inside a reply */
	for (i = 0; i < got_n && i < want_n && i < REPLIES_MAX; i++) {
		check(got[i].code == want[i].code && got[i].n == want[i].n);
		if (want[i].n <= sizeof(want[i].body) && want[i].code != R_BIG)
			check(memcmp(got[i].p, want[i].body, want[i].n) == 0);
	}
	if (end != M_UNKNOWN)
		check(got_n <= want_n);
	if (!cut && !o->reset && got_n < want_n)
		abort(); /* a request went unanswered */
}

/* The Prometheus text of the frame's figures: comments, or "name{...} N"
 * lines, each ending in a newline. */
static void
check_metrics(void)
{
	struct bw_buf b;
	const char *p, *end, *nl, *sp;
	int rc;

	bw_buf_init(&b, 256u * 1024u);
	rc = bw_frame_metrics(g.f, &b);
	check(rc == 0 || rc == BW_ETOOBIG);
	if (rc == 0 && b.len > 0) {
		p = (const char *)bw_buf_head(&b);
		end = p + b.len;
		check(end[-1] == '\n');
		for (; p < end; p = nl + 1) {
			nl = memchr(p, '\n', (size_t)(end - p));
			check(nl != NULL && nl > p);
			if (*p == '#')
				continue;
			check(*p == '_' || (*p >= 'a' && *p <= 'z'));
			sp = memchr(p, ' ', (size_t)(nl - p));
			check(sp != NULL && sp + 1 < nl);
			for (sp++; sp < nl; sp++)
				check((*sp >= '0' && *sp <= '9') ||
				      *sp == '.' || *sp == 'e' || *sp == '+' ||
				      *sp == '-' || *sp == 'I' || *sp == 'n' ||
				      *sp == 'f');
		}
	}
	bw_buf_fini(&b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t overflow;
	struct ef_out o;

	if (size == 0)
		return 0;
	setup_once();
	g.failed = 0;
	overflow = g.e.closed_overflow;
	ef_exchange(&g.e, g.l, data[0], data + 1, size - 1, &o);
	check(g.states == 0);
	check(g.slots.n == 0 && g.discards == 0);
	check_output(data + 1, size - 1, &o,
		     g.failed || g.e.closed_overflow != overflow);
	free(o.p);
	ef_check_fds();
	if (g.inputs++ % 64 == 0)
		check_metrics();
	return 0;
}
