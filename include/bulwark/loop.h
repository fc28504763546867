/* The event loop: epoll readiness callbacks, periodic ticks, one-shot
 * timers, deferred calls run after the current batch of events, and a
 * small worker-thread pool for
 * blocking work (fsync, rename) whose completion is delivered back on the
 * loop thread. Everything but bw_loop_submit's work function runs on the loop
 * thread.
 */
#ifndef BULWARK_LOOP_H
#define BULWARK_LOOP_H

#include <stdint.h>

enum {
	BW_EV_READ = 1u,
	BW_EV_WRITE = 2u,
	BW_EV_ERROR = 4u, /* error or hang-up; delivered whatever was asked */
};

struct bw_loop;
typedef void (*bw_io_fn)(void *arg, unsigned events);
typedef void (*bw_call_fn)(void *arg);

/* A registration; the caller owns the storage and keeps it alive until
 * bw_loop_unwatch, and (because events already fetched may still name it)
 * until the deferred calls of the current batch have run. */
struct bw_watch {
	int fd;
	unsigned events; /* asked for */
	unsigned kernel; /* registered: reading stays registered after it is
			  * no longer asked for, until an event comes for it
			  * (a request's pause usually ends first) */
	bw_io_fn fn;
	void *arg;
};

int bw_loop_new(struct bw_loop **out, unsigned workers)
	__attribute__((warn_unused_result));
/* Finishes queued work (running its done callbacks), stops the workers and
 * runs the deferred calls until none is left; the loop stays allocated, so
 * that what finishes later (a store's last answers) can still defer calls,
 * run by the next drain or the free. A job submitted afterwards fails.
 * May be called again. NULL-safe. */
void bw_loop_drain(struct bw_loop *l);
/* Drains the loop and frees it. NULL-safe. */
void bw_loop_free(struct bw_loop *l);

int bw_loop_watch(struct bw_loop *l, struct bw_watch *w, int fd,
		  unsigned events, bw_io_fn fn, void *arg)
	__attribute__((warn_unused_result));
int bw_loop_update(struct bw_loop *l, struct bw_watch *w, unsigned events);
/* Stops watching; the fd is not closed. Events of the current batch for w are
 * dropped. */
void bw_loop_unwatch(struct bw_loop *l, struct bw_watch *w);
/* The same for a watch whose fd the caller closes next and never duplicated:
 * closing the only descriptor of a file takes it out of epoll, so the
 * system call that bw_loop_unwatch makes is saved. */
void bw_loop_unwatch_closing(struct bw_loop *l, struct bw_watch *w);

/* A one-shot timer; the caller owns the storage and keeps it alive while it
 * is armed (bw_loop_timer_stop before freeing it). Zero it before first
 * use. */
struct bw_timer {
	uint64_t due_ms;
	bw_call_fn fn;
	void *arg;
	size_t slot; /* its place in the loop's heap + 1; 0: not armed */
};

/* Calls fn(arg) once, ms from now, on the loop thread (after the pass's
 * events). Re-arms a timer already armed. BW_ENOMEM if the heap cannot
 * grow (the timer is then not armed). */
int bw_loop_timer_start(struct bw_loop *l, struct bw_timer *t, unsigned ms,
			bw_call_fn fn, void *arg)
	__attribute__((warn_unused_result));
/* Disarms t (nothing if it is not armed). */
void bw_loop_timer_stop(struct bw_loop *l, struct bw_timer *t);

/* Calls fn(arg) every interval_ms (at most 8 ticks per loop). */
int bw_loop_every(struct bw_loop *l, unsigned interval_ms, bw_call_fn fn,
		  void *arg) __attribute__((warn_unused_result));

/* A deferred call whose storage the caller owns (as libuv's uv_close links
 * the handle itself): queuing it cannot fail, so closing a connection or
 * ending a request never allocates. Zero it before first use. */
struct bw_call {
	struct bw_call *next;
	bw_call_fn fn;
	void *arg;
	unsigned char queued; /* on the loop's list */
};

/* Runs fn(arg) once, after the current batch of events (e.g. to free a
 * connection whose watch may still be named by a fetched event), in order
 * with every other deferred call. Queuing a call already queued changes
 * what it will run and keeps its place. fn may free call. */
void bw_loop_call(struct bw_loop *l, struct bw_call *call, bw_call_fn fn,
		  void *arg);

/* Runs work(arg) on a worker thread, then done(arg) on the loop thread. */
int bw_loop_submit(struct bw_loop *l, bw_call_fn work, bw_call_fn done,
		   void *arg) __attribute__((warn_unused_result));
/* Jobs submitted whose done callback has not run yet. */
unsigned bw_loop_jobs(const struct bw_loop *l);

/* How long the loop's passes took, from the wait's return to the next
 * wait (what every connection waits behind): counts by upper bound (at
 * most 1 ms, 10 ms, 100 ms, 1 s, and over), their sum and the longest,
 * in microseconds. Loop thread. */
#define BW_LOOP_PASS_BOUNDS 4
struct bw_loop_passes {
	uint64_t n[BW_LOOP_PASS_BOUNDS + 1];
	uint64_t sum_us, max_us;
};
void bw_loop_passes(const struct bw_loop *l, struct bw_loop_passes *out);

/* Calls fn(arg) once per pass of the loop, after the batch's events, ticks
 * and deferred calls and before the loop waits again or returns (Redis's
 * beforeSleep): where queued output is flushed, once per connection per pass. A
 * non-zero return says fn has work left, so the loop polls without waiting. One
 * hook; a second call replaces it. */
void bw_loop_prepoll(struct bw_loop *l, int (*fn)(void *arg), void *arg);

/* Dispatches events until bw_loop_stop; returns 0 or -errno. It may be
 * called again after it returns (tests run the loop in slices). */
int bw_loop_run(struct bw_loop *l);
void bw_loop_stop(struct bw_loop *l);

#endif
