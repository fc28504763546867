/* The shared port's frame layer driven by a test protocol on the real
 * engine: payload sizes are checked on the header before a payload byte is
 * read, a route's head reaches its handler and the rest streams, unknown
 * codes get the error of the protocol whose range holds them, and replies
 * of any length are padded to the pad unit for clients that pad.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bulwark/cur.h"
#include "proto/wire.h"
#include "support/enginetest.h"
#include "engine/frame.h"

enum { C_ECHO = 10, C_STREAM = 11, C_BIG = 12, C_EVICT = 13 };
enum { ERR_A = 900, ERR_B = 901 };

static struct {
	unsigned echo_calls, stream_calls, big_calls;
	uint64_t streamed; /* body bytes the stream route consumed */
} seen;

struct sstate {
	uint64_t left;
};

/* 10: replies the 10-byte payload back. */
static int
on_echo(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	(void)r;
	seen.echo_calls++;
	return bw_frame_reply(c, 20, p, 10);
}

/* 11: head is a u32 count; the rest of the payload streams, then a reply
 * with the number of body bytes. */
static int
on_stream(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	struct sstate *st = r->state;

	(void)p;
	seen.stream_calls++;
	st->left = r->hdr.payload_size - 4;
	c->want = 512;
	bw_frame_stream(c);
	return 0;
}

static int
on_stream_body(struct bw_conn *c, struct bw_frame_req *r)
{
	struct sstate *st = r->state;
	size_t k = c->in.len < st->left ? c->in.len : (size_t)st->left;
	uint8_t out[8];

	bw_buf_consume(&c->in, k);
	st->left -= k;
	seen.streamed += k;
	if (st->left > 0 || !bw_frame_body_end(c))
		return 0;
	bw_put_u32le(out, (uint32_t)seen.streamed);
	bw_put_u32le(out + 4, 0);
	(void)bw_frame_reply(c, 21, out, sizeof(out));
	bw_frame_done(c);
	return 0;
}

/* 12: a reply of the u32 size asked for, in pieces. */
static int
on_big(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	uint32_t n = bw_get_u32le(p), i;
	uint8_t b;

	(void)r;
	seen.big_calls++;
	(void)bw_frame_reply_begin(c, 22, n);
	for (i = 0; i < n; i++) {
		b = (uint8_t)(i % 251 + 1);
		(void)bw_frame_reply_add(c, &b, 1);
	}
	return bw_frame_reply_end(c);
}

/* 13: ends the body of the connection in victim, as a newcomer that
 * needs its slot does (bw_frame_fail), and replies. */
static struct bw_conn *victim;

static int
on_evict(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	(void)r;
	(void)p;
	if (victim != NULL)
		(void)bw_frame_fail(victim, "evicted");
	return bw_frame_reply(c, 23, NULL, 0);
}

static const struct bw_frame_route routes_a[] = {
	{C_ECHO, 0, 10, 10, 10, on_echo, NULL, NULL},
	{C_STREAM, 0, 4, 1000, 4, on_stream, on_stream_body, NULL},
	{C_BIG, 0, 4, 4, 4, on_big, NULL, NULL},
	{C_EVICT, 0, 0, 0, 0, on_evict, NULL, NULL},
};

static const struct bw_frame_proto proto_a = {
	.name = "a",
	.version = 7,
	.err_code = ERR_A,
	.code_lo = 1,
	.code_hi = 99,
	.routes = routes_a,
	.routes_n = 4,
	.state_size = sizeof(struct sstate),
};

static const struct bw_frame_proto proto_b = {
	.name = "b",
	.version = 8,
	.err_code = ERR_B,
	.code_lo = 100,
	.code_hi = 199,
	.routes = NULL,
	.routes_n = 0,
};

struct fixture {
	struct bw_engine e;
	struct bw_frame *f;
	struct bw_listener *l;
};

/* a_lim: protocol a's own limits (NULL: the listener's). */
static int
setup_with(void **state, const struct bw_conn_limits *a_lim)
{
	static struct fixture fx;
	struct bw_listen_cfg cfg = et_listen_cfg();

	memset(&seen, 0, sizeof(seen));
	assert_int_equal(et_open(&fx.e), 0);
	assert_int_equal(bw_frame_new(&fx.f), 0);
	assert_int_equal(bw_frame_add(fx.f, &proto_a, NULL, a_lim), 0);
	assert_int_equal(bw_frame_add(fx.f, &proto_b, NULL, NULL), 0);
	cfg.lim.in_max = 4096;
	assert_int_equal(
		bw_engine_listen(&fx.e, &bw_frame_service, fx.f, &cfg, &fx.l),
		0);
	*state = &fx;
	return 0;
}

static int
setup(void **state)
{
	return setup_with(state, NULL);
}

/* Protocol a's replies capped at 10,000 bytes queued, and 300 ms idle
 * after each of its requests; the listener's are 1 MiB and 10 s. */
static int
setup_capped(void **state)
{
	static const struct bw_conn_limits lim = {4096, 10000, 300, 10000};

	return setup_with(state, &lim);
}

static int
teardown(void **state)
{
	struct fixture *fx = *state;

	bw_engine_close(&fx->e);
	bw_frame_free(fx->f);
	return 0;
}

static void
send_hdr(int fd, uint16_t code, uint32_t size)
{
	struct bw_req_hdr h;
	uint8_t b[BW_REQ_HDR_LEN];

	memset(&h, 0, sizeof(h));
	h.version = 1;
	h.code = code;
	h.payload_size = size;
	bw_req_hdr_encode(&h, b);
	assert_int_equal(send(fd, b, sizeof(b), 0), BW_REQ_HDR_LEN);
}

static struct bw_resp_hdr
read_hdr(int fd)
{
	uint8_t b[BW_RESP_HDR_LEN];
	struct bw_resp_hdr h;

	assert_int_equal(et_read(fd, b, sizeof(b)), sizeof(b));
	assert_int_equal(bw_resp_hdr_decode(b, sizeof(b), &h), sizeof(b));
	return h;
}

static void
fixed_request_is_answered_and_the_connection_kept(void **state)
{
	struct fixture *fx = *state;
	int fd = et_connect(fx->l), i;
	struct bw_resp_hdr h;
	char back[10];

	for (i = 0; i < 2; i++) {
		send_hdr(fd, C_ECHO, 10);
		assert_int_equal(send(fd, "0123456789", 10, 0), 10);
		pump(&fx->e, 30);
		h = read_hdr(fd);
		assert_int_equal(h.version, 7);
		assert_int_equal(h.code, 20);
		assert_int_equal(h.payload_size, 10);
		assert_int_equal(et_read(fd, back, 10), 10);
		assert_memory_equal(back, "0123456789", 10);
	}
	assert_false(et_closed(fd, 50));
	assert_int_equal(seen.echo_calls, 2);
	close(fd);
}

/* The admit hook: a request it gives a reason for gets the error reply of
 * its protocol and the connection is finished; the handler never runs. */
static unsigned admit_calls;

static const char *
refuse_second(void *arg, struct bw_conn *c, const struct bw_frame_req *r,
	      const uint8_t *head, int *for_now)
{
	(void)c;
	assert_int_equal(r->hdr.code, C_ECHO);
	assert_memory_equal(head, "0123456789", 10);
	*for_now = arg != NULL; /* a refusal of this request alone */
	return ++admit_calls == 2 ? "not this one" : NULL;
}

static void
a_request_the_admit_hook_refuses_gets_the_error_and_a_close(void **state)
{
	struct fixture *fx = *state;
	int fd = et_connect(fx->l), i;
	struct bw_resp_hdr h;
	char back[10];

	admit_calls = 0;
	bw_frame_set_admit(fx->f, refuse_second, NULL);
	for (i = 0; i < 2; i++) {
		send_hdr(fd, C_ECHO, 10);
		assert_int_equal(send(fd, "0123456789", 10, 0), 10);
		pump(&fx->e, 30);
		h = read_hdr(fd);
		if (i == 0) {
			assert_int_equal(h.code, 20);
			assert_int_equal(et_read(fd, back, 10), 10);
		} else {
			assert_int_equal(h.code, ERR_A);
			assert_int_equal(h.payload_size, 0);
		}
	}
	assert_true(et_closed(fd, 500));
	assert_int_equal(seen.echo_calls, 1);
	bw_frame_set_admit(fx->f, NULL, NULL);
	close(fd);
}

/* A refusal for now (the daemon's: a row the store could not give)
 * answers the request alone: the next one on the connection is served. */
static void
a_request_refused_for_now_keeps_its_connection(void **state)
{
	struct fixture *fx = *state;
	int fd = et_connect(fx->l), i;
	struct bw_resp_hdr h;
	char back[10];

	admit_calls = 0;
	seen.echo_calls = 0;
	bw_frame_set_admit(fx->f, refuse_second, fx);
	for (i = 0; i < 3; i++) {
		send_hdr(fd, C_ECHO, 10);
		assert_int_equal(send(fd, "0123456789", 10, 0), 10);
		pump(&fx->e, 30);
		h = read_hdr(fd);
		if (i != 1) {
			assert_int_equal(h.code, 20);
			assert_int_equal(et_read(fd, back, 10), 10);
		} else {
			assert_int_equal(h.code, ERR_A);
			assert_int_equal(h.payload_size, 0);
		}
	}
	assert_false(et_closed(fd, 100));
	assert_int_equal(seen.echo_calls, 2);
	bw_frame_set_admit(fx->f, NULL, NULL);
	close(fd);
}

/* A payload size outside the route's bounds is refused on the header: the
 * error reply arrives while the payload has not been sent at all. */
static void
size_out_of_bounds_is_refused_before_the_payload(void **state)
{
	struct fixture *fx = *state;
	static const struct {
		uint16_t code;
		uint32_t size;
	} bad[] = {
		{C_ECHO, 9},   {C_ECHO, 11},	 {C_ECHO, 0xFFFFFFFFu},
		{C_STREAM, 3}, {C_STREAM, 1001}, {C_BIG, 0},
	};
	struct bw_resp_hdr h;
	size_t i;
	int fd;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fd = et_connect(fx->l);
		send_hdr(fd, bad[i].code, bad[i].size);
		pump(&fx->e, 30);
		h = read_hdr(fd);
		assert_int_equal(h.code, ERR_A);
		assert_int_equal(h.version, 7);
		assert_int_equal(h.payload_size, 0);
		assert_true(et_closed(fd, 1000));
		close(fd);
	}
	assert_int_equal(seen.echo_calls + seen.stream_calls + seen.big_calls,
			 0);
}

static void
unknown_code_gets_the_error_of_the_protocol_owning_its_range(void **state)
{
	struct fixture *fx = *state;
	static const struct {
		uint16_t code, err;
		uint8_t version;
	} cases[] = {{50, ERR_A, 7}, {150, ERR_B, 8}, {5000, ERR_A, 7}};
	struct bw_resp_hdr h;
	size_t i;
	int fd;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fd = et_connect(fx->l);
		send_hdr(fd, cases[i].code, 0);
		pump(&fx->e, 30);
		h = read_hdr(fd);
		assert_int_equal(h.code, cases[i].err);
		assert_int_equal(h.version, cases[i].version);
		assert_true(et_closed(fd, 1000));
		close(fd);
	}
}

/* The head reaches the handler, the body streams in pieces (here a byte
 * at a time, the loop running between bytes), and the request ends. */
static void
streamed_body_arrives_a_byte_at_a_time(void **state)
{
	struct fixture *fx = *state;
	int fd = et_connect(fx->l), i;
	uint8_t count[4] = {0}, out[8];
	struct bw_resp_hdr h;

	send_hdr(fd, C_STREAM, 4 + 40);
	assert_int_equal(send(fd, count, 4, 0), 4);
	for (i = 0; i < 40; i++) {
		pump(&fx->e, 2);
		assert_int_equal(send(fd, "z", 1, 0), 1);
	}
	pump(&fx->e, 30);
	h = read_hdr(fd);
	assert_int_equal(h.code, 21);
	assert_int_equal(et_read(fd, out, 8), 8);
	assert_int_equal(bw_get_u32le(out), 40);
	assert_int_equal(seen.stream_calls, 1);
	/* and the connection serves the next request */
	send_hdr(fd, C_ECHO, 10);
	assert_int_equal(send(fd, "abcdefghij", 10, 0), 10);
	pump(&fx->e, 30);
	assert_int_equal(read_hdr(fd).code, 20);
	close(fd);
}

/* A body ended by the server (an upload evicted for a newcomer: the
 * newcomer's request, bw_frame_fail) leaves no state for its handler. The
 * victim's last bytes and reset, in the same pass after the newcomer, come
 * as an error event that reads the socket before the 2107 is flushed:
 * none of it may reach the body's handler (the vault's and the
 * messenger's read the upload they had freed). */
static void
a_failed_body_gets_no_more_input(void **state)
{
	struct fixture *fx = *state;
	int fd = et_connect(fx->l), nc;
	uint8_t count[4] = {0}, more[64];
	struct linger lg = {1, 0};

	send_hdr(fd, C_STREAM, 4 + 400);
	assert_int_equal(send(fd, count, 4, 0), 4);
	assert_int_equal(send(fd, "0123456789", 10, 0), 10);
	pump(&fx->e, 30);
	assert_int_equal(seen.streamed, 10);
	assert_non_null(victim = fx->e.conns);
	nc = et_connect(fx->l);
	pump(&fx->e, 10);
	/* ready in this order: the newcomer's request, then the victim's */
	send_hdr(nc, C_EVICT, 0);
	memset(more, 'x', sizeof(more));
	assert_int_equal(send(fd, more, sizeof(more), 0), sizeof(more));
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)),
			 0);
	close(fd);
	pump(&fx->e, 30);
	victim = NULL;
	assert_int_equal(read_hdr(nc).code, 23);
	assert_int_equal(seen.streamed, 10);
	assert_int_equal(seen.stream_calls, 1);
	close(nc);
}

/* A client that pads its request gets every reply padded to a multiple
 * of 1024, whatever its length, and then the connection closed. */
static void
padded_client_gets_replies_of_any_length_padded(void **state)
{
	struct fixture *fx = *state;
	static const uint32_t sizes[] = {0, 1, 1017, 1018, 5000, 70000};
	uint8_t req[BW_PAD_UNIT], *got;
	struct bw_req_hdr hh;
	size_t i, want, n, k;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		int fd = et_connect(fx->l);

		memset(req, 0, sizeof(req));
		memset(&hh, 0, sizeof(hh));
		hh.code = C_BIG;
		hh.payload_size = 4;
		bw_req_hdr_encode(&hh, req);
		bw_put_u32le(req + BW_REQ_HDR_LEN, sizes[i]);
		assert_int_equal(send(fd, req, sizeof(req), 0), sizeof(req));
		pump(&fx->e, 50);
		want = BW_RESP_HDR_LEN + sizes[i];
		want += (BW_PAD_UNIT - want % BW_PAD_UNIT) % BW_PAD_UNIT;
		got = malloc(want + 16);
		assert_non_null(got);
		n = 0;
		while (n < want + 16) {
			pump(&fx->e, 5);
			k = et_read(fd, got + n, want + 16 - n);
			if (k == 0)
				break;
			n += k;
		}
		assert_int_equal(n, want);
		assert_int_equal(bw_get_u32le(got + 3), sizes[i]);
		for (k = 0; k < sizes[i]; k++)
			assert_int_equal(got[BW_RESP_HDR_LEN + k],
					 (uint8_t)(k % 251 + 1));
		for (k = BW_RESP_HDR_LEN + sizes[i]; k < want; k++)
			assert_int_equal(got[k], 0);
		free(got);
		close(fd);
	}
}

/* Zeros too few to be padding may start a pipelined request whose client
 * id is zeros: the frame waits for more before it answers. */
static void
few_zeros_after_a_request_wait_for_evidence(void **state)
{
	struct fixture *fx = *state;
	uint8_t req[BW_REQ_HDR_LEN + 10 + 5];
	struct bw_req_hdr hh;
	int fd = et_connect(fx->l);
	char b;

	memset(req, 0, sizeof(req));
	memset(&hh, 0, sizeof(hh));
	hh.code = C_ECHO;
	hh.payload_size = 10;
	bw_req_hdr_encode(&hh, req);
	assert_int_equal(send(fd, req, sizeof(req), 0), sizeof(req));
	pump(&fx->e, 30);
	assert_int_equal(seen.echo_calls, 0);
	assert_int_equal(recv(fd, &b, 1, MSG_DONTWAIT), -1);
	/* the rest of a header's worth of zeros: padding, answered padded */
	memset(req, 0, sizeof(req));
	assert_int_equal(send(fd, req, 20, 0), 20);
	pump(&fx->e, 30);
	assert_int_equal(seen.echo_calls, 1);
	assert_int_equal(read_hdr(fd).code, 20);
	close(fd);
}

/* A reply past its protocol's output cap (below the listener's) closes the
 * connection after the handler, which finishes its loop of sends; what was
 * queued before the cap still reaches the peer. */
static void
reply_over_the_protocols_cap_closes_after_the_handler(void **state)
{
	struct fixture *fx = *state;
	int fd = et_connect(fx->l);
	uint8_t req[BW_REQ_HDR_LEN + 4], *got;
	struct bw_req_hdr hh;
	size_t n = 0, k;

	memset(&hh, 0, sizeof(hh));
	hh.code = C_BIG;
	hh.payload_size = 4;
	bw_req_hdr_encode(&hh, req);
	bw_put_u32le(req + BW_REQ_HDR_LEN, 50000);
	assert_int_equal(send(fd, req, sizeof(req), 0), sizeof(req));
	pump(&fx->e, 50);
	assert_int_equal(seen.big_calls, 1);
	got = malloc(60000);
	assert_non_null(got);
	while ((k = et_read(fd, got + n, 60000 - n)) > 0)
		n += k;
	/* closed after nothing: the cap stops the queue before the peer
	 * could read; a reply of 50,000 never arrives whole */
	assert_true(n < BW_RESP_HDR_LEN + 50000);
	assert_true(et_closed(fd, 100));
	free(got);
	close(fd);

	/* under the cap: whole */
	fd = et_connect(fx->l);
	bw_put_u32le(req + BW_REQ_HDR_LEN, 5000);
	assert_int_equal(send(fd, req, sizeof(req), 0), sizeof(req));
	pump(&fx->e, 50);
	assert_int_equal(read_hdr(fd).payload_size, 5000);
	close(fd);
}

/* After a request of protocol a, its idle time applies (300 ms), not the
 * listener's (10 s); before any request, the listener's. */
static void
idle_after_a_request_is_its_protocols(void **state)
{
	struct fixture *fx = *state;
	int quiet = et_connect(fx->l), fd = et_connect(fx->l);
	char back[10];

	send_hdr(fd, C_ECHO, 10);
	assert_int_equal(send(fd, "0123456789", 10, 0), 10);
	pump(&fx->e, 30);
	assert_int_equal(read_hdr(fd).code, 20);
	assert_int_equal(et_read(fd, back, 10), 10);
	pump(&fx->e, 800); /* past 300 ms (the tick is 200 ms) */
	assert_true(et_closed(fd, 100));
	assert_false(et_closed(quiet, 50));
	close(fd);
	close(quiet);
}

/* A table that would let payload bytes be read as the next header, or a
 * head that never fits the input kept between requests, is refused when it
 * is added, not found out by a peer. */
static void
invalid_route_tables_are_refused(void **state)
{
	static const struct bw_frame_route bad[][1] = {
		/* no body, but max_size > head: the rest would be a header */
		{{1, 0, 10, 20, 10, on_echo, NULL, NULL}},
		/* head past min_size: a short payload could not fill it */
		{{2, 0, 4, 100, 8, on_stream, on_stream_body, NULL}},
		/* min over max */
		{{3, 0, 20, 10, 10, on_echo, NULL, NULL}},
		/* a head larger than the input kept between requests */
		{{4, 0, 4096, 4096, 4096, on_echo, NULL, NULL}},
		/* no handler */
		{{5, 0, 10, 10, 10, NULL, NULL, NULL}},
	};
	struct bw_frame *f = NULL;
	struct bw_frame_proto p = proto_b;
	size_t i;

	(void)state;
	assert_int_equal(bw_frame_new(&f), 0);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		p.routes = bad[i];
		p.routes_n = 1;
		assert_int_equal(bw_frame_add(f, &p, NULL, NULL), BW_ECONFIG);
	}
	p.routes = routes_a; /* the good table still goes in */
	p.routes_n = 3;
	assert_int_equal(bw_frame_add(f, &p, NULL, NULL), 0);
	bw_frame_free(f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(invalid_route_tables_are_refused),
		cmocka_unit_test_setup_teardown(
			fixed_request_is_answered_and_the_connection_kept,
			setup, teardown),
		cmocka_unit_test_setup_teardown(
			a_request_refused_for_now_keeps_its_connection, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			a_request_the_admit_hook_refuses_gets_the_error_and_a_close,
			setup, teardown),
		cmocka_unit_test_setup_teardown(
			size_out_of_bounds_is_refused_before_the_payload, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			unknown_code_gets_the_error_of_the_protocol_owning_its_range,
			setup, teardown),
		cmocka_unit_test_setup_teardown(
			streamed_body_arrives_a_byte_at_a_time, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			a_failed_body_gets_no_more_input, setup, teardown),
		cmocka_unit_test_setup_teardown(
			padded_client_gets_replies_of_any_length_padded, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			few_zeros_after_a_request_wait_for_evidence, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			reply_over_the_protocols_cap_closes_after_the_handler,
			setup_capped, teardown),
		cmocka_unit_test_setup_teardown(
			idle_after_a_request_is_its_protocols, setup_capped,
			teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
