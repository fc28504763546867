/* The event loop's one-shot timers: they fire in due order, once, stopped
 * ones never; the heap stays ordered through thousands of random starts,
 * re-arms and stops; a timer that re-arms itself at 0 ms waits for the next
 * pass instead of spinning the current one. Its watches: reading that is
 * no longer asked for is never delivered (it is dropped lazily), writing
 * is dropped at once, a hang-up still comes. Its workers: every job of
 * many comes back, though only the first of a batch wakes the loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "bulwark/loop.h"
#include "bulwark/util.h"

#define N 2000

struct fired {
	uint64_t at[N];
	unsigned order[N];
	unsigned n;
	struct bw_loop *l;
	unsigned stop_after;
};

static struct fired F;
static struct bw_timer T[N];
static unsigned idx[N];

static void
on_fire(void *arg)
{
	unsigned i = *(unsigned *)arg;

	F.at[F.n] = T[i].due_ms;
	F.order[F.n++] = i;
	if (F.n == F.stop_after)
		bw_loop_stop(F.l);
}

static int
setup(void **state)
{
	struct bw_loop *l;
	unsigned i;

	memset(&F, 0, sizeof(F));
	memset(T, 0, sizeof(T));
	for (i = 0; i < N; i++)
		idx[i] = i;
	assert_int_equal(bw_loop_new(&l, 0), 0);
	F.l = l;
	*state = l;
	return 0;
}

static int
teardown(void **state)
{
	bw_loop_free(*state);
	return 0;
}

static int watch_fd; /* the watched end, for on_io */

/* The stall guard of every_job_of_many_comes_back. */
static void
on_stall(void *arg)
{
	bw_loop_stop(arg);
}

/* A tick that ends the run after ms, whatever fired. */
static uint64_t run_until;
static void
end_tick(void *arg)
{
	if (bw_now_ms() >= run_until)
		bw_loop_stop(arg);
}

static void
run_for(struct bw_loop *l, unsigned ms)
{
	run_until = bw_now_ms() + ms;
	assert_int_equal(bw_loop_run(l), 0);
}

static void
timers_fire_once_in_due_order(void **state)
{
	struct bw_loop *l = *state;
	static const unsigned ms[] = {30, 5, 20, 10, 25, 15};
	unsigned i;

	assert_int_equal(bw_loop_every(l, 5, end_tick, l), 0);
	for (i = 0; i < 6; i++)
		assert_int_equal(
			bw_loop_timer_start(l, &T[i], ms[i], on_fire, &idx[i]),
			0);
	run_for(l, 80);
	assert_int_equal(F.n, 6);
	for (i = 1; i < 6; i++)
		assert_true(ms[F.order[i - 1]] < ms[F.order[i]]);
	for (i = 0; i < 6; i++)
		assert_int_equal(T[i].slot, 0); /* disarmed */
}

static void
stopped_timer_never_fires_and_rearm_moves_it(void **state)
{
	struct bw_loop *l = *state;

	assert_int_equal(bw_loop_every(l, 5, end_tick, l), 0);
	assert_int_equal(bw_loop_timer_start(l, &T[0], 10, on_fire, &idx[0]),
			 0);
	assert_int_equal(bw_loop_timer_start(l, &T[1], 20, on_fire, &idx[1]),
			 0);
	assert_int_equal(bw_loop_timer_start(l, &T[2], 30, on_fire, &idx[2]),
			 0);
	bw_loop_timer_stop(l, &T[1]);
	bw_loop_timer_stop(l, &T[1]); /* twice: nothing */
	/* re-armed: now the last */
	assert_int_equal(bw_loop_timer_start(l, &T[0], 40, on_fire, &idx[0]),
			 0);
	run_for(l, 90);
	assert_int_equal(F.n, 2);
	assert_int_equal(F.order[0], 2);
	assert_int_equal(F.order[1], 0);
}

/* Random starts, re-arms and stops, all due at once: each armed timer
 * fires exactly once and in non-decreasing due order. */
static void
heap_keeps_order_through_random_churn(void **state)
{
	struct bw_loop *l = *state;
	unsigned i, k, armed = 0;
	uint64_t x = 88172645463325252ull;
	static int live[N];

	memset(live, 0, sizeof(live));
	for (k = 0; k < 20000; k++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		i = (unsigned)(x % N);
		if ((x >> 32) % 4 == 0) {
			bw_loop_timer_stop(l, &T[i]);
			live[i] = 0;
		} else {
			assert_int_equal(
				bw_loop_timer_start(l, &T[i],
						    (unsigned)((x >> 20) % 40),
						    on_fire, &idx[i]),
				0);
			live[i] = 1;
		}
	}
	for (i = 0; i < N; i++)
		armed += (unsigned)live[i];
	assert_int_equal(bw_loop_every(l, 5, end_tick, l), 0);
	run_for(l, 120);
	assert_int_equal(F.n, armed);
	for (i = 1; i < F.n; i++)
		assert_true(F.at[i - 1] <= F.at[i]);
}

static unsigned self_runs;
static void
rearm_self(void *arg)
{
	struct bw_loop *l = arg;

	self_runs++;
	assert_int_equal(bw_loop_timer_start(l, &T[0], 0, rearm_self, l), 0);
}

static void
timer_rearming_itself_at_zero_waits_for_the_next_pass(void **state)
{
	struct bw_loop *l = *state;

	self_runs = 0;
	assert_int_equal(bw_loop_every(l, 5, end_tick, l), 0);
	assert_int_equal(bw_loop_timer_start(l, &T[0], 0, rearm_self, l), 0);
	run_for(l, 30); /* returns: the pass is not spun for ever */
	assert_true(self_runs > 1);
	bw_loop_timer_stop(l, &T[0]);
}

struct io_seen {
	unsigned calls;
	unsigned events; /* or'd over the calls */
	size_t bytes;
};

static void
on_io(void *arg, unsigned events)
{
	struct io_seen *io = arg;
	char buf[64];
	ssize_t n;

	io->calls++;
	io->events |= events;
	if (events & BW_EV_READ) {
		while ((n = read(watch_fd, buf, sizeof(buf))) > 0)
			io->bytes += (size_t)n;
	}
}

static void
paused_reading_is_never_delivered_and_resumes(void **state)
{
	struct bw_loop *l = *state;
	struct bw_watch w;
	struct io_seen io;
	int sv[2];

	memset(&io, 0, sizeof(io));
	assert_int_equal(
		socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	watch_fd = sv[0];
	assert_int_equal(bw_loop_every(l, 5, end_tick, l), 0);
	assert_int_equal(bw_loop_watch(l, &w, sv[0], BW_EV_READ, on_io, &io),
			 0);
	assert_int_equal(write(sv[1], "a", 1), 1);
	run_for(l, 20);
	assert_int_equal(io.bytes, 1);

	/* paused: still registered until an event comes for it */
	assert_int_equal(bw_loop_update(l, &w, 0), 0);
	assert_int_equal(w.kernel, BW_EV_READ);
	io.calls = 0;
	assert_int_equal(write(sv[1], "bc", 2), 2);
	run_for(l, 20);
	assert_int_equal(io.calls, 0);
	assert_int_equal(w.kernel, 0); /* dropped when it came */
	run_for(l, 20);
	assert_int_equal(io.calls, 0);

	/* resumed: what waited is read */
	assert_int_equal(bw_loop_update(l, &w, BW_EV_READ), 0);
	assert_int_equal(w.kernel, BW_EV_READ);
	run_for(l, 20);
	assert_int_equal(io.bytes, 3);

	/* writing is dropped at once */
	assert_int_equal(bw_loop_update(l, &w, BW_EV_READ | BW_EV_WRITE), 0);
	assert_int_equal(w.kernel, BW_EV_READ | BW_EV_WRITE);
	assert_int_equal(bw_loop_update(l, &w, BW_EV_READ), 0);
	assert_int_equal(w.kernel, BW_EV_READ);

	/* a hang-up comes while paused, without reading */
	assert_int_equal(bw_loop_update(l, &w, 0), 0);
	assert_int_equal(w.kernel, BW_EV_READ);
	io.calls = io.events = 0;
	assert_int_equal(close(sv[1]), 0);
	run_for(l, 20);
	assert_true(io.calls > 0);
	assert_true(io.events & BW_EV_ERROR);
	assert_false(io.events & BW_EV_READ);
	bw_loop_unwatch(l, &w);
	assert_int_equal(close(sv[0]), 0);
}

#define JOBS 3000u
static unsigned jobs_worked; /* atomically, on the workers */
static unsigned jobs_back;   /* on the loop thread */

static void
job_work(void *arg)
{
	(void)arg;
	__atomic_add_fetch(&jobs_worked, 1, __ATOMIC_RELAXED);
}

static void
job_done(void *arg)
{
	if (++jobs_back == JOBS)
		bw_loop_stop(arg);
}

static void
every_job_of_many_comes_back(void **state)
{
	struct bw_loop *l;
	unsigned i;

	(void)state;
	jobs_worked = jobs_back = 0;
	assert_int_equal(bw_loop_new(&l, 2), 0);
	/* no tick: a job whose wake-up were lost would stall the run
	 * until the 10 s timer, and fail the count */
	assert_int_equal(bw_loop_timer_start(l, &T[0], 10000, on_stall, l), 0);
	for (i = 0; i < JOBS; i++)
		assert_int_equal(bw_loop_submit(l, job_work, job_done, l), 0);
	assert_int_equal(bw_loop_run(l), 0);
	assert_int_equal(jobs_back, JOBS);
	assert_int_equal(__atomic_load_n(&jobs_worked, __ATOMIC_RELAXED), JOBS);
	assert_int_equal(bw_loop_jobs(l), 0);
	bw_loop_timer_stop(l, &T[0]);
	bw_loop_free(l);
}

/* A timer that keeps the loop for 15 ms, then stops it. */
static void
on_slow(void *arg)
{
	const struct timespec ms15 = {0, 15 * 1000 * 1000};

	(void)nanosleep(&ms15, NULL);
	bw_loop_stop(arg);
}

static void
a_slow_pass_is_counted_past_ten_ms_and_is_the_longest(void **state)
{
	struct bw_loop *l = *state;
	struct bw_loop_passes p;
	uint64_t all = 0;
	unsigned i;

	bw_loop_passes(l, &p);
	assert_int_equal(p.max_us, 0); /* nothing ran yet */
	assert_int_equal(bw_loop_timer_start(l, &T[0], 1, on_slow, l), 0);
	assert_int_equal(bw_loop_run(l), 0);
	bw_loop_passes(l, &p);
	/* at least 15 ms (a sleep is never shorter); how much longer is
	 * the scheduler's */
	assert_true(p.max_us >= 15000);
	assert_true(p.sum_us >= 15000);
	assert_true(p.n[2] + p.n[3] + p.n[4] >= 1); /* over 10 ms */
	for (i = 0; i <= BW_LOOP_PASS_BOUNDS; i++)
		all += p.n[i];
	assert_true(all >= 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(timers_fire_once_in_due_order,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			stopped_timer_never_fires_and_rearm_moves_it, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			heap_keeps_order_through_random_churn, setup, teardown),
		cmocka_unit_test_setup_teardown(
			timer_rearming_itself_at_zero_waits_for_the_next_pass,
			setup, teardown),
		cmocka_unit_test_setup_teardown(
			paused_reading_is_never_delivered_and_resumes, setup,
			teardown),
		cmocka_unit_test_setup_teardown(every_job_of_many_comes_back,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			a_slow_pass_is_counted_past_ten_ms_and_is_the_longest,
			setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
