/* Named locks for a service's steps that must not overlap (a commit and a
 * verdict on one stored path). One code path for one daemon and for a
 * cluster: the lock is this process's when the store is its own, and also
 * the store's advisory lock when other daemons share it (asked again until
 * it is free, or given up). A waiter runs when the lock is its turn,
 * never inside the releasing call's frame; a released lock passes to the
 * next waiter. Loop thread only.
 */
#ifndef BULWARK_HOST_LOCK_H
#define BULWARK_HOST_LOCK_H

#include <stdint.h>

#include "bulwark/hash.h"
#include "bulwark/loop.h"
#include "store/meta.h"

/* A step waiting for a lock: its storage is the caller's. */
struct bw_lock_wait {
	struct bw_lock_wait *next;
	void (*run)(struct bw_lock_wait *w);
	/* run without the lock: another daemon sharing the store held it
	 * for too long, or the store could not say (the step answers an
	 * error and touches nothing) */
	int refused;
	/* refused at once (BW_EBUSY) when the table's max_waiters already
	 * wait for the name */
	int bounded;
};

struct bw_locks {
	struct bw_meta *meta;
	struct bw_loop *loop;
	const char *who;      /* the service, for the log */
	unsigned max_waiters; /* for bounded waiters */
	struct bw_hash held;  /* name -> lock: held, or being asked for */
	struct bw_lock_wait *handoff, **handoff_tail; /* passed, to run */
	int handing_off;
};

int bw_locks_init(struct bw_locks *ls, struct bw_meta *meta,
		  struct bw_loop *loop, const char *who,
		  unsigned max_waiters) BW_WUR;
/* At the stop: a retry of a lock another daemon held, still armed, is
 * disarmed (nothing waits any more). */
void bw_locks_disarm(struct bw_locks *ls);
/* After the last step ended: frees the table. */
void bw_locks_fini(struct bw_locks *ls);

/* Runs w now if name is free (returns 1), or queues it (returns 0; w->run
 * is called when it is w's turn); BW_EBUSY for a bounded w past
 * max_waiters; BW_ENOMEM. On a shared store w waits (0) for the store's
 * lock too, and runs with w->refused set if it could not be had. */
int bw_lock(struct bw_locks *ls, const char *name,
	    struct bw_lock_wait *w) BW_WUR;
/* The holder is done: the next waiter's turn (run once the outermost
 * release returns). */
void bw_unlock(struct bw_locks *ls, const char *name);
/* 1 while name is held or asked for by a step of this daemon. */
int bw_lock_busy(const struct bw_locks *ls, const char *name);

/* The name's lock among the daemons sharing the store (BW_META_LOCK). */
int64_t bw_lock_key(const char *name);
/* On a shared store the store's lock is held by this node's session to
 * it, which may be lost (and the lock with it) while the node still
 * thinks it holds it. The writes made under the lock are fenced by it: a
 * row's change carries the key (bw_lock_held_key, 0 where the store's
 * lock is not held), and before a step writes where the lock is needed
 * bw_lock_fence asks the store whether it is still this node's: 1 if it
 * submitted req (done gets rc 0, or BW_EBUSY: give the step up, touch
 * nothing more), 0 if there is nothing to ask (run on at once). */
int64_t bw_lock_held_key(const struct bw_locks *ls, const char *name);
int bw_lock_fence(struct bw_locks *ls, const char *name,
		  struct bw_meta_req *req, bw_meta_done_fn done, void *arg);

#endif
