/* The bus's URL (--bus): what is taken and what is refused with a reason;
 * and, against a Redis of the test's own (redis-server on a free port),
 * the calls of its tenants: each channel's messages reach the callback it
 * was subscribed with and no other, every watcher hears the bus come up,
 * publish and eval answer. Losses and clusters of nodes are tested in
 * tests/integration/test_cluster.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "bulwark/err.h"
#include "bulwark/loop.h"
#include "bulwark/util.h"
#include "store/bus/bus.h"

static int
try_url(const char *url, char *why, size_t cap)
{
	struct bw_bus_cfg cfg = {.url = url, .password = NULL};
	struct bw_loop *loop;
	struct bw_bus *b = NULL;
	int rc;

	assert_int_equal(bw_loop_new(&loop, 0), 0);
	why[0] = '\0';
	rc = bw_bus_open(&b, &cfg, loop, why, cap);
	assert_int_equal(bw_bus_up(b), 0); /* nothing is waited for */
	bw_bus_close(b);
	bw_loop_free(loop);
	return rc;
}

static void
good_urls_are_taken(void **state)
{
	static const char *const good[] = {
		"redis://127.0.0.1",
		"redis://127.0.0.1:6380",
		"redis://:secret@127.0.0.1:6380/2",
		"redis://user:pw@localhost/0",
		"redis://127.0.0.1:1/15",
	};
	char why[200];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_int_equal(try_url(good[i], why, sizeof(why)), 0);
}

static void
bad_urls_are_refused_with_a_reason(void **state)
{
	static const char *const bad[] = {
		"http://127.0.0.1",
		"127.0.0.1:6379",
		"redis://",
		"redis://:6379",
		"redis://h:0",
		"redis://h:65536",
		"redis://h:x",
		"redis://h/db",
		"redis://h/1001",
		"redis://pw@h",
		"redis://h:123456789012345678",
	};
	char why[200];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(try_url(bad[i], why, sizeof(why)), BW_ECONFIG);
		assert_non_null(strstr(why, "--bus"));
	}
}

/* --- tenants, against a real Redis ---------------------------------------
 */

#define REDIS "/usr/bin/redis-server"

struct heard {
	unsigned ups, downs, msgs;
	char last[64];
};

static void
on_state(void *arg, int up)
{
	struct heard *h = arg;

	if (up)
		h->ups++;
	else
		h->downs++;
}

static void
on_msg(void *arg, const char *channel, size_t clen, const uint8_t *p, size_t n)
{
	struct heard *h = arg;

	h->msgs++;
	snprintf(h->last, sizeof(h->last), "%.*s=%.*s", (int)clen, channel,
		 (int)n, (const char *)p);
}

struct answer {
	int got, rc;
	enum bw_bus_type type;
	long long n;
	char s[64];
};

static void
on_answer(void *arg, int rc, const struct bw_bus_reply *r)
{
	struct answer *a = arg;
	const char *v;
	size_t n;

	a->got = 1;
	a->rc = rc;
	if (r == NULL)
		return;
	a->type = bw_bus_type(r);
	if (a->type == BW_BUS_INT)
		a->n = bw_bus_int(r);
	if ((v = bw_bus_str(r, &n)) != NULL)
		snprintf(a->s, sizeof(a->s), "%.*s", (int)n, v);
}

struct done {
	int got, rc;
};

static void
on_done(void *arg, int rc)
{
	struct done *d = arg;

	d->got++;
	d->rc = rc;
}

/* Runs the loop until *flag is set, at most 5 s. */
struct until {
	struct bw_loop *loop;
	struct bw_timer t;
	const int *flag;
	const unsigned *count;
	unsigned want;
	uint64_t end_ms;
};

static void
until_tick(void *arg)
{
	struct until *u = arg;

	if ((u->flag != NULL && *u->flag) ||
	    (u->count != NULL && *u->count >= u->want) ||
	    bw_now_ms() > u->end_ms) {
		bw_loop_stop(u->loop);
		return;
	}
	assert_int_equal(bw_loop_timer_start(u->loop, &u->t, 5, until_tick, u),
			 0);
}

static void
run_until(struct bw_loop *loop, const int *flag, const unsigned *count,
	  unsigned want)
{
	struct until u = {.loop = loop,
			  .flag = flag,
			  .count = count,
			  .want = want,
			  .end_ms = bw_now_ms() + 5000};

	assert_int_equal(bw_loop_timer_start(loop, &u.t, 1, until_tick, &u), 0);
	assert_int_equal(bw_loop_run(loop), 0);
	bw_loop_timer_stop(loop, &u.t);
}

/* d's wait for channel ends well; then text published on it is what h
 * hears next. */
static void
in_effect_then_heard(struct bw_loop *loop, struct bw_bus *bus,
		     const char *channel, struct done *d, struct heard *h,
		     const char *text)
{
	unsigned next = h->msgs + 1;
	char want[64];

	run_until(loop, &d->got, NULL, 0);
	assert_int_equal(d->got, 1);
	assert_int_equal(d->rc, 0);
	assert_int_equal(
		bw_bus_publish(bus, channel, text, strlen(text), NULL, NULL),
		0);
	run_until(loop, NULL, &h->msgs, next);
	snprintf(want, sizeof(want), "%s=%s", channel, text);
	assert_string_equal(h->last, want);
}

static int
free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static pid_t
start_redis(int port)
{
	char ps[16];
	pid_t pid;

	snprintf(ps, sizeof(ps), "%d", port);
	if ((pid = fork()) == 0) {
		/* its notices are not the test's */
		if (freopen("/dev/null", "w", stdout) == NULL ||
		    freopen("/dev/null", "w", stderr) == NULL)
			_exit(126);
		execl(REDIS, REDIS, "--port", ps, "--bind", "127.0.0.1",
		      "--save", "", "--appendonly", "no", "--loglevel",
		      "warning", (char *)NULL);
		_exit(127);
	}
	assert_true(pid > 0);
	return pid;
}

static void
each_tenant_hears_its_own(void **state)
{
	struct heard w1 = {0}, w2 = {0}, a = {0}, b = {0}, c = {0};
	struct done d1 = {0}, d2 = {0}, d3 = {0}, d4 = {0}, d5 = {0};
	struct answer pa = {0}, pb = {0}, ev = {0}, gone = {0};
	struct bw_bus_cfg cfg = {.password = NULL};
	struct bw_loop *loop;
	struct bw_bus *bus = NULL;
	const char *args[BW_BUS_ARGS + 1];
	char url[64], why[200];
	int port = free_port(), i;
	pid_t redis;

	(void)state;
	if (access(REDIS, X_OK) != 0)
		skip(); /* scripts/check installs it */
	redis = start_redis(port);
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
	cfg.url = url;
	assert_int_equal(bw_loop_new(&loop, 1), 0);
	assert_int_equal(bw_bus_open(&bus, &cfg, loop, why, sizeof(why)), 0);
	/* two tenants watch; a third and fourth fill the table; no fifth */
	assert_int_equal(bw_bus_watch(bus, on_state, &w1), 0);
	assert_int_equal(bw_bus_watch(bus, on_state, &w2), 0);
	assert_int_equal(bw_bus_watch(bus, on_state, &a), 0);
	assert_int_equal(bw_bus_watch(bus, on_state, &b), 0);
	assert_int_equal(bw_bus_watch(bus, on_state, &w1), BW_EBUSY);
	bw_bus_unwatch(bus, on_state, &a);
	bw_bus_unwatch(bus, on_state, &b);
	/* a channel is one callback's */
	assert_int_equal(bw_bus_subscribe(bus, "t:a", on_msg, &a), 0);
	assert_int_equal(bw_bus_subscribe(bus, "t:b", on_msg, &b), 0);
	assert_int_equal(bw_bus_subscribe(bus, "t:a", on_msg, &a), 0);
	assert_int_equal(bw_bus_subscribe(bus, "t:a", on_msg, &b), BW_EBUSY);
	/* Redis may take a moment to listen: the bus retries */
	run_until(loop, NULL, &w2.ups, 1);
	assert_int_equal(w1.ups, 1);
	assert_int_equal(w2.ups, 1);
	assert_int_equal(bw_bus_up(bus), 1);

	assert_int_equal(bw_bus_publish(bus, "t:a", "one", 3, on_answer, &pa),
			 0);
	assert_int_equal(bw_bus_publish(bus, "t:b", "two", 3, on_answer, &pb),
			 0);
	run_until(loop, NULL, &b.msgs, 1);
	run_until(loop, NULL, &a.msgs, 1);
	run_until(loop, &pb.got, NULL, 0);
	assert_int_equal(pa.rc, 0);
	assert_int_equal(pa.n, 1); /* one subscriber: this node */
	assert_int_equal(a.msgs, 1);
	assert_string_equal(a.last, "t:a=one");
	assert_int_equal(b.msgs, 1);
	assert_string_equal(b.last, "t:b=two");

	/* a script: its keys first, then its other arguments */
	args[0] = "k";
	args[1] = "v";
	assert_int_equal(bw_bus_eval(bus, "return KEYS[1] .. '/' .. ARGV[1]", 1,
				     2, args, NULL, on_answer, &ev),
			 0);
	run_until(loop, &ev.got, NULL, 0);
	assert_int_equal(ev.rc, 0);
	assert_int_equal(ev.type, BW_BUS_STR);
	assert_string_equal(ev.s, "k/v");
	for (i = 0; i <= BW_BUS_ARGS; i++)
		args[i] = "x";
	assert_int_equal(bw_bus_eval(bus, "return 1", 0, BW_BUS_ARGS + 1, args,
				     NULL, NULL, NULL),
			 BW_ETOOBIG);
	assert_int_equal(
		bw_bus_eval(bus, "return 1", 3, 2, args, NULL, NULL, NULL),
		BW_ESIZE);

	/* unsubscribed: nothing is heard. Redis may still count this node
	 * (the UNSUBSCRIBE goes on the other connection), so a message on
	 * t:b published after it marks the point past which one on t:a
	 * would have come: messages arrive in Redis's order. */
	bw_bus_unsubscribe(bus, "t:a");
	assert_int_equal(
		bw_bus_publish(bus, "t:a", "three", 5, on_answer, &gone), 0);
	assert_int_equal(bw_bus_publish(bus, "t:b", "four", 4, NULL, NULL), 0);
	run_until(loop, NULL, &b.msgs, 2);
	assert_int_equal(gone.got, 1);
	assert_int_equal(gone.rc, 0);
	assert_int_equal(b.msgs, 2);
	assert_string_equal(b.last, "t:b=four");
	assert_int_equal(a.msgs, 1);

	/* a subscription Redis has is in effect: said at once; a new one
	 * once Redis confirms it, and then a message published is heard;
	 * a channel not subscribed is refused */
	assert_int_equal(bw_bus_subscribed(bus, "t:b", on_done, &d1), 0);
	assert_int_equal(d1.got, 1);
	assert_int_equal(d1.rc, 0);
	assert_int_equal(bw_bus_subscribed(bus, "t:a", on_done, &d2),
			 BW_ENOTFOUND);
	assert_int_equal(bw_bus_subscribe(bus, "t:c", on_msg, &c), 0);
	assert_int_equal(bw_bus_subscribed(bus, "t:c", on_done, &d2), 0);
	assert_int_equal(d2.got, 0);
	in_effect_then_heard(loop, bus, "t:c", &d2, &c, "five");
	/* unsubscribed while waited for: told so at once */
	assert_int_equal(bw_bus_subscribe(bus, "t:d", on_msg, &c), 0);
	assert_int_equal(bw_bus_subscribed(bus, "t:d", on_done, &d3), 0);
	bw_bus_unsubscribe(bus, "t:d");
	assert_int_equal(d3.got, 1);
	assert_int_equal(d3.rc, BW_EDB);
	/* subscribed, unsubscribed and subscribed again before Redis
	 * answered: the wait ends, and what is published then is heard */
	assert_int_equal(bw_bus_subscribe(bus, "t:e", on_msg, &c), 0);
	bw_bus_unsubscribe(bus, "t:e");
	assert_int_equal(bw_bus_subscribe(bus, "t:e", on_msg, &c), 0);
	assert_int_equal(bw_bus_subscribed(bus, "t:e", on_done, &d4), 0);
	in_effect_then_heard(loop, bus, "t:e", &d4, &c, "six");
	/* one still waiting when Redis goes is told */
	assert_int_equal(bw_bus_subscribe(bus, "t:f", on_msg, &c), 0);
	assert_int_equal(bw_bus_subscribed(bus, "t:f", on_done, &d5), 0);

	/* Redis gone: every watcher hears it */
	kill(redis, SIGKILL);
	waitpid(redis, NULL, 0);
	run_until(loop, NULL, &w2.downs, 1);
	assert_int_equal(w1.downs, 1);
	assert_int_equal(w2.downs, 1);
	assert_int_equal(d5.got, 1);
	assert_int_equal(d5.rc, BW_EDB);
	assert_int_equal(bw_bus_subscribed(bus, "t:b", on_done, &d1), BW_EDB);

	/* Redis back (empty): the bus is up once every channel is
	 * subscribed again, so a wait on one ends at once; a new one waits
	 * for its confirmation on the new connection, then hears */
	redis = start_redis(port);
	run_until(loop, NULL, &w2.ups, 2);
	assert_int_equal(bw_bus_up(bus), 1);
	d1.got = 0;
	assert_int_equal(bw_bus_subscribed(bus, "t:f", on_done, &d1), 0);
	assert_int_equal(d1.got, 1);
	assert_int_equal(d1.rc, 0);
	assert_int_equal(bw_bus_subscribe(bus, "t:g", on_msg, &c), 0);
	d2.got = 0;
	assert_int_equal(bw_bus_subscribed(bus, "t:g", on_done, &d2), 0);
	in_effect_then_heard(loop, bus, "t:g", &d2, &c, "seven");
	kill(redis, SIGKILL);
	waitpid(redis, NULL, 0);
	bw_bus_close(bus);
	bw_loop_free(loop);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(good_urls_are_taken),
		cmocka_unit_test(bad_urls_are_refused_with_a_reason),
		cmocka_unit_test(each_tenant_hears_its_own),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
