/* epoll event loop with periodic ticks, one-shot timers (a binary heap),
 * deferred calls and a worker pool.
 * Worker completions come back through an eventfd so that done callbacks run
 * on the loop thread and need no locking of their own.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/loop.h"
#include "bulwark/util.h"

#define MAX_TICKS   8
#define MAX_EVENTS  256
#define MAX_WORKERS 16

struct job {
	struct job *next;
	bw_call_fn work, done;
	void *arg;
};

struct tick {
	unsigned interval_ms;
	uint64_t next_ms;
	bw_call_fn fn;
	void *arg;
};

struct bw_loop {
	int ep;
	int stop;
	struct tick ticks[MAX_TICKS];
	unsigned ticks_n;
	struct bw_timer **heap; /* soonest first */
	size_t heap_n, heap_cap;
	struct bw_call *deferred, **deferred_tail;
	/* the batch being dispatched, so unwatch can drop its events */
	struct epoll_event *batch;
	int batch_n;

	/* worker pool */
	pthread_t threads[MAX_WORKERS];
	unsigned workers;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *queue, **queue_tail; /* guarded by mu */
	struct job *done, **done_tail;	 /* guarded by mu */
	int quit;			 /* guarded by mu */
	unsigned jobs;			 /* loop thread only */
	int efd;
	struct bw_watch efd_watch;
	int (*prepoll)(void *arg);
	void *prepoll_arg;
	int prepoll_more; /* the hook has work left: do not wait */
	struct bw_loop_passes passes;
};

static void run_deferred(struct bw_loop *l);

static void
push(struct job ***tail, struct job *j)
{
	j->next = NULL;
	**tail = j;
	*tail = &j->next;
}

static void *
worker_main(void *arg)
{
	struct bw_loop *l = arg;
	struct job *j;
	uint64_t one = 1;

	int wake;

	pthread_mutex_lock(&l->mu);
	for (;;) {
		while (l->queue == NULL && !l->quit)
			pthread_cond_wait(&l->cv, &l->mu);
		if ((j = l->queue) == NULL)
			break; /* quit and nothing left */
		if ((l->queue = j->next) == NULL)
			l->queue_tail = &l->queue;
		pthread_mutex_unlock(&l->mu);
		j->work(j->arg);
		pthread_mutex_lock(&l->mu);
		/* Only the first of a batch wakes the loop: the loop takes the
		 * whole list after it reads the eventfd, so a list that is not
		 * empty has a wake-up on its way (at worst a spurious one, when
		 * a drain took the list first). */
		wake = l->done == NULL;
		push(&l->done_tail, j);
		if (wake) {
			pthread_mutex_unlock(&l->mu);
			(void)!write(l->efd, &one, sizeof(one));
			pthread_mutex_lock(&l->mu);
		}
	}
	pthread_mutex_unlock(&l->mu);
	return NULL;
}

static void
run_done(struct bw_loop *l)
{
	struct job *list, *j;

	pthread_mutex_lock(&l->mu);
	list = l->done;
	l->done = NULL;
	l->done_tail = &l->done;
	pthread_mutex_unlock(&l->mu);
	while ((j = list) != NULL) {
		list = j->next;
		l->jobs--;
		if (j->done != NULL)
			j->done(j->arg);
		free(j);
	}
}

static void
on_efd(void *arg, unsigned events)
{
	struct bw_loop *l = arg;
	uint64_t v;

	(void)events;
	(void)!read(l->efd, &v, sizeof(v));
	run_done(l);
}

int
bw_loop_new(struct bw_loop **out, unsigned workers)
{
	struct bw_loop *l;
	unsigned i;
	int rc;

	if (workers > MAX_WORKERS)
		workers = MAX_WORKERS;
	if ((l = calloc(1, sizeof(*l))) == NULL)
		return BW_ENOMEM;
	l->ep = l->efd = -1;
	l->deferred_tail = &l->deferred;
	l->queue_tail = &l->queue;
	l->done_tail = &l->done;
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cv, NULL);
	if ((l->ep = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
	    (l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
		rc = -errno;
		goto fail;
	}
	if ((rc = bw_loop_watch(l, &l->efd_watch, l->efd, BW_EV_READ, on_efd,
				l)) != 0)
		goto fail;
	for (i = 0; i < workers; i++) {
		if ((rc = -pthread_create(&l->threads[i], NULL, worker_main,
					  l)) != 0)
			goto fail;
		l->workers++;
	}
	*out = l;
	return 0;
fail:
	bw_loop_free(l);
	return rc;
}

void
bw_loop_drain(struct bw_loop *l)
{
	unsigned i;

	if (l == NULL)
		return;
	pthread_mutex_lock(&l->mu);
	l->quit = 1;
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->mu);
	for (i = 0; i < l->workers; i++)
		pthread_join(l->threads[i], NULL);
	l->workers = 0; /* a job submitted from here on fails: no one runs it */
	run_done(l);
	while (l->deferred != NULL)
		run_deferred(l); /* calls may defer */
}

void
bw_loop_free(struct bw_loop *l)
{
	if (l == NULL)
		return;
	bw_loop_drain(l);
	if (l->efd >= 0)
		close(l->efd);
	if (l->ep >= 0)
		close(l->ep);
	free(l->heap);
	pthread_mutex_destroy(&l->mu);
	pthread_cond_destroy(&l->cv);
	free(l);
}

static uint32_t
to_epoll(unsigned events)
{
	uint32_t e = 0;

	if (events & BW_EV_READ)
		e |= EPOLLIN | EPOLLRDHUP;
	if (events & BW_EV_WRITE)
		e |= EPOLLOUT;
	return e;
}

int
bw_loop_watch(struct bw_loop *l, struct bw_watch *w, int fd, unsigned events,
	      bw_io_fn fn, void *arg)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	w->fd = fd;
	w->events = w->kernel = events;
	w->fn = fn;
	w->arg = arg;
	ev.events = to_epoll(events);
	ev.data.ptr = w;
	if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) != 0)
		return -errno;
	return 0;
}

static int
reregister(struct bw_loop *l, struct bw_watch *w, unsigned events)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = to_epoll(events);
	ev.data.ptr = w;
	if (epoll_ctl(l->ep, EPOLL_CTL_MOD, w->fd, &ev) != 0)
		return -errno;
	w->kernel = events;
	return 0;
}

/* Dropping only reading is lazy: most pauses (a request handed to a
 * worker) end before the peer sends more, and then neither the pause nor
 * its end costs a system call. Writing is dropped at once: a socket is
 * nearly always writable, so a lazy drop would only cost a wake-up. */
int
bw_loop_update(struct bw_loop *l, struct bw_watch *w, unsigned events)
{
	int rc = 0;

	if ((events & ~w->kernel) != 0 ||
	    ((w->kernel & ~events) & BW_EV_WRITE) != 0)
		rc = reregister(l, w, events);
	if (rc == 0)
		w->events = events;
	return rc;
}

void
bw_loop_unwatch_closing(struct bw_loop *l, struct bw_watch *w)
{
	int i;

	for (i = 0; i < l->batch_n; i++) {
		if (l->batch[i].data.ptr == w)
			l->batch[i].data.ptr = NULL;
	}
	w->fd = -1;
}

void
bw_loop_unwatch(struct bw_loop *l, struct bw_watch *w)
{
	if (w->fd >= 0)
		(void)epoll_ctl(l->ep, EPOLL_CTL_DEL, w->fd, NULL);
	bw_loop_unwatch_closing(l, w);
}

/* --- timers: heap[i]'s children are 2i+1 and 2i+2; t->slot is i + 1 -- */

static void
heap_set(struct bw_loop *l, size_t i, struct bw_timer *t)
{
	l->heap[i] = t;
	t->slot = i + 1;
}

static void
heap_up(struct bw_loop *l, size_t i)
{
	struct bw_timer *t = l->heap[i];
	size_t parent;

	while (i > 0) {
		parent = (i - 1) / 2;
		if (l->heap[parent]->due_ms <= t->due_ms)
			break;
		heap_set(l, i, l->heap[parent]);
		i = parent;
	}
	heap_set(l, i, t);
}

static void
heap_down(struct bw_loop *l, size_t i)
{
	struct bw_timer *t = l->heap[i];
	size_t child;

	for (;;) {
		child = 2 * i + 1;
		if (child >= l->heap_n)
			break;
		if (child + 1 < l->heap_n &&
		    l->heap[child + 1]->due_ms < l->heap[child]->due_ms)
			child++;
		if (t->due_ms <= l->heap[child]->due_ms)
			break;
		heap_set(l, i, l->heap[child]);
		i = child;
	}
	heap_set(l, i, t);
}

void
bw_loop_timer_stop(struct bw_loop *l, struct bw_timer *t)
{
	struct bw_timer *moved;
	size_t i;

	if (t->slot == 0)
		return;
	i = t->slot - 1;
	t->slot = 0;
	if (--l->heap_n == i)
		return; /* it was the last */
	moved = l->heap[l->heap_n];
	heap_set(l, i, moved);
	heap_up(l, i);
	heap_down(l, moved->slot - 1);
}

int
bw_loop_timer_start(struct bw_loop *l, struct bw_timer *t, unsigned ms,
		    bw_call_fn fn, void *arg)
{
	struct bw_timer **grown;
	size_t cap;

	bw_loop_timer_stop(l, t);
	if (l->heap_n == l->heap_cap) {
		cap = l->heap_cap ? l->heap_cap * 2 : 64;
		if ((grown = realloc(l->heap, cap * sizeof(*grown))) == NULL)
			return BW_ENOMEM;
		l->heap = grown;
		l->heap_cap = cap;
	}
	t->due_ms = bw_now_ms() + ms;
	t->fn = fn;
	t->arg = arg;
	heap_set(l, l->heap_n++, t);
	heap_up(l, l->heap_n - 1);
	return 0;
}

/* Fires the timers due by now; one armed again meanwhile waits for the
 * next pass even if it is due at once. */
static void
run_timers(struct bw_loop *l, uint64_t now)
{
	size_t budget = l->heap_n;
	struct bw_timer *t;

	while (budget-- > 0 && l->heap_n > 0 && l->heap[0]->due_ms <= now) {
		t = l->heap[0];
		bw_loop_timer_stop(l, t);
		t->fn(t->arg);
	}
}

int
bw_loop_every(struct bw_loop *l, unsigned interval_ms, bw_call_fn fn, void *arg)
{
	struct tick *t;

	if (l->ticks_n == MAX_TICKS || interval_ms == 0)
		return BW_ETOOBIG;
	t = &l->ticks[l->ticks_n++];
	t->interval_ms = interval_ms;
	t->next_ms = bw_now_ms() + interval_ms;
	t->fn = fn;
	t->arg = arg;
	return 0;
}

void
bw_loop_call(struct bw_loop *l, struct bw_call *call, bw_call_fn fn, void *arg)
{
	call->fn = fn;
	call->arg = arg;
	if (call->queued)
		return;
	call->queued = 1;
	call->next = NULL;
	*l->deferred_tail = call;
	l->deferred_tail = &call->next;
}

int
bw_loop_submit(struct bw_loop *l, bw_call_fn work, bw_call_fn done, void *arg)
{
	struct job *j;

	if (l->workers == 0)
		return -ENOSYS;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return BW_ENOMEM;
	j->work = work;
	j->done = done;
	j->arg = arg;
	l->jobs++;
	pthread_mutex_lock(&l->mu);
	push(&l->queue_tail, j);
	pthread_mutex_unlock(&l->mu);
	/* after the unlock: a worker woken inside it would block on the
	 * mutex at once and have to be woken twice */
	pthread_cond_signal(&l->cv);
	return 0;
}

unsigned
bw_loop_jobs(const struct bw_loop *l)
{
	return l->jobs;
}

void
bw_loop_passes(const struct bw_loop *l, struct bw_loop_passes *out)
{
	*out = l->passes;
}

static uint64_t
mono_us(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* A pass counted (bw_loop_passes). */
static void
pass_count(struct bw_loop *l, uint64_t us)
{
	static const uint64_t bound_us[BW_LOOP_PASS_BOUNDS] = {1000, 10000,
							       100000, 1000000};
	unsigned i;

	for (i = 0; i < BW_LOOP_PASS_BOUNDS && us > bound_us[i]; i++)
		;
	l->passes.n[i]++;
	l->passes.sum_us += us;
	if (us > l->passes.max_us)
		l->passes.max_us = us;
}

static int
next_timeout(struct bw_loop *l, uint64_t now)
{
	uint64_t soonest = UINT64_MAX;
	unsigned i;

	if (l->deferred != NULL || l->prepoll_more)
		return 0;
	for (i = 0; i < l->ticks_n; i++) {
		if (l->ticks[i].next_ms < soonest)
			soonest = l->ticks[i].next_ms;
	}
	if (l->heap_n > 0 && l->heap[0]->due_ms < soonest)
		soonest = l->heap[0]->due_ms;
	if (soonest == UINT64_MAX)
		return 1000;
	return soonest <= now ? 0 : (int)(soonest - now);
}

static void
run_deferred(struct bw_loop *l)
{
	struct bw_call *list = l->deferred, *call;
	bw_call_fn fn;
	void *arg;

	l->deferred = NULL;
	l->deferred_tail = &l->deferred;
	while ((call = list) != NULL) {
		/* nothing of call is read after fn: fn may free it */
		list = call->next;
		fn = call->fn;
		arg = call->arg;
		call->queued = 0;
		fn(arg);
	}
}

void
bw_loop_prepoll(struct bw_loop *l, int (*fn)(void *arg), void *arg)
{
	l->prepoll = fn;
	l->prepoll_arg = arg;
}

int
bw_loop_run(struct bw_loop *l)
{
	struct epoll_event evs[MAX_EVENTS];
	struct bw_watch *w;
	unsigned i, ev;
	uint64_t now, t0;
	int n, k;

	l->stop = 0;
	while (!l->stop) {
		l->prepoll_more =
			l->prepoll != NULL && l->prepoll(l->prepoll_arg);
		n = epoll_wait(l->ep, evs, MAX_EVENTS,
			       next_timeout(l, bw_now_ms()));
		if (n < 0 && errno != EINTR)
			return -errno;
		t0 = mono_us();
		l->batch = evs;
		l->batch_n = n > 0 ? n : 0;
		for (k = 0; k < n; k++) {
			if ((w = evs[k].data.ptr) == NULL)
				continue;
			ev = 0;
			if (evs[k].events & (EPOLLIN | EPOLLRDHUP))
				ev |= BW_EV_READ;
			if (evs[k].events & EPOLLOUT)
				ev |= BW_EV_WRITE;
			if (evs[k].events & (EPOLLERR | EPOLLHUP))
				ev |= BW_EV_ERROR;
			if ((ev & ~w->events & (BW_EV_READ | BW_EV_WRITE)) !=
			    0) {
				/* registered but no longer asked for: now
				 * drop it. A registration that cannot be
				 * changed is the watch's error (it would
				 * wake every pass). */
				ev &= w->events | BW_EV_ERROR;
				if (reregister(l, w, w->events) != 0)
					ev = BW_EV_ERROR;
				if (ev == 0)
					continue;
			}
			w->fn(w->arg, ev);
		}
		l->batch = NULL;
		l->batch_n = 0;
		now = bw_now_ms();
		run_timers(l, now);
		for (i = 0; i < l->ticks_n; i++) {
			if (l->ticks[i].next_ms <= now) {
				l->ticks[i].next_ms =
					now + l->ticks[i].interval_ms;
				l->ticks[i].fn(l->ticks[i].arg);
			}
		}
		run_deferred(l);
		/* at the end of every pass, so a stop loses no output */
		l->prepoll_more =
			l->prepoll != NULL && l->prepoll(l->prepoll_arg);
		pass_count(l, mono_us() - t0);
	}
	return 0;
}

void
bw_loop_stop(struct bw_loop *l)
{
	l->stop = 1;
}
