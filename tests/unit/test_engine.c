/* The engine's contract with services, on real sockets: a send never closes
 * or frees a connection before the callback returns (a loop over many
 * connections finishes even when one of them overflows), output is queued
 * and flushed after the callback, and each listener's caps hold.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "support/enginetest.h"
#include "engine/engine_int.h"

#define MAGIC 0x5e55u

struct tconn {
	unsigned magic;
};

/* What the test service saw. */
static struct {
	unsigned opened, closed;
	unsigned visited;	/* connections the broadcast loop reached */
	unsigned alive_in_loop; /* of which still usable (state intact) */
	int overflow_rc;	/* the send that passed its cap */
	int after_rc;		/* a second send to that connection */
	size_t max_in;		/* largest input buffered at once */
	size_t queued_in_cb;	/* bytes queued, none written, in the loop */
} seen;

static int
t_open(struct bw_conn *c)
{
	struct tconn *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return BW_ENOMEM;
	t->magic = MAGIC;
	c->state = t;
	seen.opened++;
	return 0;
}

static void
t_close(struct bw_conn *c)
{
	struct tconn *t = c->state;

	assert_non_null(t);
	t->magic = 0;
	free(t);
	seen.closed++;
}

/* "B" broadcasts 100 bytes to every connection of the engine; anything
 * else is consumed and counted. */
static int
t_input(struct bw_conn *c)
{
	static const char msg[100] = "hello";
	struct bw_conn *o;
	int rc;

	if (c->in.len > seen.max_in)
		seen.max_in = c->in.len;
	if (bw_buf_head(&c->in)[0] == 'B') {
		for (o = c->eng->conns; o != NULL; o = o->own->next) {
			seen.visited++;
			rc = bw_conn_send(o, msg, sizeof(msg));
			if (rc == BW_ETOOBIG) {
				seen.overflow_rc = rc;
				seen.after_rc = bw_conn_send(o, "x", 1);
			}
			/* the state of every connection, the overflowing
			 * one included, is intact until we return */
			if (!bw_conn_dead(o) && o->state != NULL &&
			    ((struct tconn *)o->state)->magic == MAGIC)
				seen.alive_in_loop++;
			seen.queued_in_cb += bw_conn_queued(o);
		}
	}
	bw_buf_consume(&c->in, c->in.len);
	return 0;
}

static const struct bw_service tsvc = {
	.name = "test",
	.on_open = t_open,
	.on_input = t_input,
	.on_close = t_close,
};

static int
setup(void **state)
{
	static struct bw_engine e;

	memset(&seen, 0, sizeof(seen));
	assert_int_equal(et_open(&e), 0);
	*state = &e;
	return 0;
}

static int
teardown(void **state)
{
	bw_engine_close(*state);
	return 0;
}

static struct bw_listener *
listen_with(struct bw_engine *e, size_t in_max, size_t out_max,
	    unsigned idle_ms)
{
	struct bw_listen_cfg cfg = et_listen_cfg();
	struct bw_listener *l = NULL;

	cfg.lim.in_max = in_max;
	cfg.lim.out_max = out_max;
	cfg.lim.idle_ms = idle_ms;
	assert_int_equal(bw_engine_listen(e, &tsvc, NULL, &cfg, &l), 0);
	return l;
}

static void
broadcast_past_one_cap_finishes_its_loop(void **state)
{
	struct bw_engine *e = *state;
	struct bw_listener *big = listen_with(e, 4096, 1 << 20, 10000);
	/* 100 bytes pass even the hard cap, BW_OUT_HARD_FACTOR x 16 */
	struct bw_listener *small = listen_with(e, 4096, 16, 10000);
	int fds[6], tiny, i;
	char buf[200];

	for (i = 0; i < 6; i++)
		assert_true((fds[i] = et_connect(big)) >= 0);
	assert_true((tiny = et_connect(small)) >= 0);
	pump(e, 50);
	assert_int_equal(seen.opened, 7);

	assert_int_equal(send(fds[0], "B", 1, 0), 1);
	pump(e, 50);
	/* the loop reached all seven and each was usable while it ran */
	assert_int_equal(seen.visited, 7);
	assert_int_equal(seen.alive_in_loop, 7);
	assert_int_equal(seen.overflow_rc, BW_ETOOBIG);
	assert_int_equal(seen.after_rc, BW_ECLOSED);
	/* nothing was written inside the callback: 6 x 100 bytes queued */
	assert_int_equal(seen.queued_in_cb, 600);
	/* afterwards: six got their message, the overflowing one closed */
	for (i = 0; i < 6; i++)
		assert_int_equal(et_read(fds[i], buf, 100), 100);
	assert_true(et_closed(tiny, 1000));
	assert_int_equal(seen.closed, 1);
	assert_int_equal(e->conns_n, 6);
	for (i = 0; i < 6; i++)
		close(fds[i]);
	close(tiny);
	pump(e, 50);
	assert_int_equal(seen.closed, 7);
}

static void
input_never_passes_the_listeners_in_max(void **state)
{
	struct bw_engine *e = *state;
	struct bw_listener *l = listen_with(e, 64, 4096, 10000);
	char data[5000];
	int fd;

	memset(data, 'a', sizeof(data));
	assert_true((fd = et_connect(l)) >= 0);
	assert_int_equal(send(fd, data, sizeof(data), 0),
			 (ssize_t)sizeof(data));
	pump(e, 100);
	assert_true(seen.max_in > 0);
	assert_true(seen.max_in <= 64);
	close(fd);
}

static void
silent_connection_closes_after_the_listeners_idle_time(void **state)
{
	struct bw_engine *e = *state;
	struct bw_listener *quick = listen_with(e, 4096, 4096, 300);
	struct bw_listener *slow = listen_with(e, 4096, 4096, 60000);
	int a, b;

	assert_true((a = et_connect(quick)) >= 0);
	assert_true((b = et_connect(slow)) >= 0);
	pump(e, 800);
	assert_true(et_closed(a, 100));
	assert_false(et_closed(b, 100));
	close(a);
	close(b);
}

static void
close_later_keeps_the_connection_until_the_callback_returns(void **state)
{
	struct bw_engine *e = *state;
	struct bw_listener *l = listen_with(e, 4096, 4096, 10000);
	struct bw_conn *c;
	int fd;

	assert_true((fd = et_connect(l)) >= 0);
	pump(e, 50);
	c = e->conns;
	assert_non_null(c);
	bw_conn_close_later(c, NULL);
	bw_conn_close_later(c, NULL); /* twice is harmless */
	assert_false(bw_conn_dead(c));
	assert_int_equal(((struct tconn *)c->state)->magic, MAGIC);
	assert_int_equal(bw_conn_send(c, "x", 1), BW_ECLOSED);
	assert_int_equal(seen.closed, 0);
	pump(e, 50);
	assert_int_equal(seen.closed, 1);
	assert_true(et_closed(fd, 1000));
	close(fd);
}

/* A job's hold keeps a closed connection's memory; the last release frees
 * it once, even when a hold and release come again before the free runs
 * (a double free would abort here, or under ASan). */
static void
a_dead_connection_held_and_released_twice_is_freed_once(void **state)
{
	struct bw_engine *e = *state;
	struct bw_listener *l = listen_with(e, 4096, 4096, 10000);
	struct linger reset = {1, 0};
	struct bw_conn *c;
	int fd;

	assert_true((fd = et_connect(l)) >= 0);
	pump(e, 50);
	c = e->conns;
	assert_non_null(c);
	bw_conn_hold(c);
	/* the peer resets: c closes while held */
	assert_int_equal(
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)),
		0);
	close(fd);
	pump(e, 50);
	assert_int_equal(seen.closed, 1);
	assert_true(bw_conn_dead(c));
	assert_int_equal(e->conns_n, 0);
	bw_conn_release(c); /* its free is scheduled */
	bw_conn_hold(c);    /* and in the same batch, held again... */
	bw_conn_release(c); /* ...and released: not scheduled twice */
	pump(e, 50);	    /* the one free runs */
	pump(e, 50);
}

/* The connection the engine accepted last (new ones go first). */
static struct bw_conn *
newest(struct bw_engine *e)
{
	return e->conns;
}

static void
a_burst_over_the_cap_that_the_peer_reads_is_not_cut_off(void **state)
{
	struct bw_engine *e = *state;
	struct bw_listener *l = listen_with(e, 4096, 4096, 10000);
	static char burst[12000], got[12000];
	int fd;

	assert_true((fd = et_connect(l)) >= 0);
	pump(e, 50);
	memset(burst, 'b', sizeof(burst));
	/* three times the cap in one callback (forty members' lines at
	 * once), under the hard cap: queued, and taken by a reader */
	assert_int_equal(bw_conn_send(newest(e), burst, sizeof(burst)), 0);
	assert_int_equal(et_read(fd, got, sizeof(got)), sizeof(got));
	pump(e, 300);
	assert_false(et_closed(fd, 50));
	assert_int_equal(e->closed_overflow, 0);
	close(fd);
}

/* A client socket that takes little and reads nothing; the server's side
 * of it buffers little too: what is queued stays in the server. */
static int
connect_tight(struct bw_engine *e, struct bw_listener *l)
{
	int small = 4096, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a;

	assert_true(fd >= 0);
	assert_int_equal(
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)),
		0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(l->port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	pump(e, 50);
	assert_int_equal(setsockopt(newest(e)->own->w.fd, SOL_SOCKET, SO_SNDBUF,
				    &small, sizeof(small)),
			 0);
	return fd;
}

static void
output_left_unread_over_the_cap_closes_it_after_a_while(void **state)
{
	struct bw_engine *e = *state;
	struct bw_listener *l = listen_with(e, 4096, 16384, 60000);
	static char burst[60000];
	int fd = connect_tight(e, l);

	memset(burst, 'u', sizeof(burst));
	assert_int_equal(bw_conn_send(newest(e), burst, sizeof(burst)), 0);
	pump(e, 500);
	assert_int_equal(seen.closed, 0); /* over the cap, not for long */
	pump(e, BW_OUT_OVER_MS + 500);
	assert_int_equal(seen.closed, 1);
	assert_int_equal(e->closed_overflow, 1);
	close(fd);
}

static void
last_words_nobody_reads_hold_the_connection_only_briefly(void **state)
{
	struct bw_engine *e = *state;
	/* a day of idle time, and an output cap the words stay under */
	struct bw_listener *l = listen_with(e, 4096, 65536, 86400000u);
	static char words[60000];
	int fd = connect_tight(e, l);

	memset(words, 'w', sizeof(words));
	assert_int_equal(bw_conn_send(newest(e), words, sizeof(words)), 0);
	bw_conn_finish(newest(e));
	pump(e, 500);
	assert_int_equal(seen.closed, 0);
	/* a window of BW_FINISH_MS, renewed once if the kernel was still
	 * moving bytes toward the peer at the first look */
	pump(e, 2 * BW_FINISH_MS + 500);
	assert_int_equal(seen.closed, 1);
	assert_int_equal(e->closed_overflow, 0);
	close(fd);
}

static void
a_full_listener_closes_its_oldest_unproven_connection_first(void **state)
{
	struct bw_engine *e = *state;
	struct bw_listen_cfg cfg = et_listen_cfg();
	struct bw_listener *l = NULL;
	int a, b, c, d;

	cfg.max_conns = 2;
	cfg.evict = BW_EVICT_UNPROVEN;
	assert_int_equal(bw_engine_listen(e, &tsvc, NULL, &cfg, &l), 0);
	assert_true((a = et_connect(l)) >= 0);
	pump(e, 20);
	assert_true((b = et_connect(l)) >= 0);
	pump(e, 20);
	bw_conn_proven(newest(e)); /* b: an operator */
	assert_true((c = et_connect(l)) >= 0);
	pump(e, 20);
	assert_true(et_closed(a, 500)); /* the oldest unproven gave way */
	assert_false(et_closed(b, 50));
	assert_false(et_closed(c, 50));
	/* b has been busy: c, unproven, gives way to d */
	assert_true((d = et_connect(l)) >= 0);
	pump(e, 20);
	assert_true(et_closed(c, 500));
	assert_false(et_closed(b, 50));
	assert_false(et_closed(d, 50));
	close(a);
	close(b);
	close(c);
	close(d);
}

static int
connect_from(const struct bw_listener *l, const char *from)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a;

	assert_true(fd >= 0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	assert_int_equal(inet_pton(AF_INET, from, &a.sin_addr), 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	a.sin_port = htons(l->port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static void
one_address_holds_no_more_than_its_share(void **state)
{
	struct bw_engine *e = *state;
	struct bw_listen_cfg cfg = et_listen_cfg();
	struct bw_listener *l = NULL;
	int fds[4], i;

	cfg.max_conns = 10;
	cfg.max_conns_per_addr = 2;
	assert_int_equal(bw_engine_listen(e, &tsvc, NULL, &cfg, &l), 0);
	for (i = 0; i < 3; i++)
		fds[i] = connect_from(l, "127.0.0.2");
	fds[3] = connect_from(l, "127.0.0.3");
	pump(e, 50);
	assert_int_equal(seen.opened, 3);
	assert_false(et_closed(fds[0], 50));
	assert_false(et_closed(fds[1], 50));
	assert_true(et_closed(fds[2], 500)); /* over 127.0.0.2's share */
	assert_false(et_closed(fds[3], 50));
	for (i = 0; i < 4; i++)
		close(fds[i]);
}

static void
listener_without_caps_is_refused(void **state)
{
	struct bw_engine *e = *state;
	struct bw_listen_cfg cfg = et_listen_cfg();

	cfg.lim.out_max = 0;
	assert_int_equal(bw_engine_listen(e, &tsvc, NULL, &cfg, NULL),
			 BW_ECONFIG);
	cfg = et_listen_cfg();
	cfg.lim.in_max = 0;
	assert_int_equal(bw_engine_listen(e, &tsvc, NULL, &cfg, NULL),
			 BW_ECONFIG);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
			broadcast_past_one_cap_finishes_its_loop, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			input_never_passes_the_listeners_in_max, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			silent_connection_closes_after_the_listeners_idle_time,
			setup, teardown),
		cmocka_unit_test_setup_teardown(
			close_later_keeps_the_connection_until_the_callback_returns,
			setup, teardown),
		cmocka_unit_test_setup_teardown(
			a_dead_connection_held_and_released_twice_is_freed_once,
			setup, teardown),
		cmocka_unit_test_setup_teardown(
			listener_without_caps_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(
			a_burst_over_the_cap_that_the_peer_reads_is_not_cut_off,
			setup, teardown),
		cmocka_unit_test_setup_teardown(
			output_left_unread_over_the_cap_closes_it_after_a_while,
			setup, teardown),
		cmocka_unit_test_setup_teardown(
			last_words_nobody_reads_hold_the_connection_only_briefly,
			setup, teardown),
		cmocka_unit_test_setup_teardown(
			a_full_listener_closes_its_oldest_unproven_connection_first,
			setup, teardown),
		cmocka_unit_test_setup_teardown(
			one_address_holds_no_more_than_its_share, setup,
			teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
