/* Named locks (lock.h): a queue of waiters per name in this process, and
 * on a store other daemons share the store's advisory lock of the name
 * too, asked again until it is free or given up.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "host/lock.h"

struct lock {
	struct bw_locks *ls;
	struct bw_lock_wait *head, **tail; /* waiting for the name */
	unsigned waiting_n;
	/* on a shared store: the store's lock, tried until it is free
	 * (granted), or given up (refused: the waiters run refused) */
	int shared, granted, refused;
	unsigned tries;
	struct bw_meta_req req;
	struct bw_timer retry_t;
	char name[]; /* the table's key */
};

#define LOCK_RETRY_MS 20u
#define LOCK_TRIES    500u /* 10 s */

int
bw_locks_init(struct bw_locks *ls, struct bw_meta *meta, struct bw_loop *loop,
	      const char *who, unsigned max_waiters)
{
	memset(ls, 0, sizeof(*ls));
	ls->meta = meta;
	ls->loop = loop;
	ls->who = who;
	ls->max_waiters = max_waiters;
	ls->handoff_tail = &ls->handoff;
	return bw_hash_init(&ls->held);
}

/* The name's lock among the daemons sharing the store (FNV-1a). */
int64_t
bw_lock_key(const char *name)
{
	uint64_t h = 1469598103934665603ull;

	for (; *name != '\0'; name++)
		h = (h ^ (unsigned char)*name) * 1099511628211ull;
	return (int64_t)h;
}

/* --- the store's lock -----------------------------------------------------
 * A released lock passes to its next waiter through a queue run by the
 * outermost release, never inside the releasing call: a waiter that ends
 * at once (its connection gone) releases again, and a chain of thousands
 * must not recurse that deep. */

/* The first waiter takes the lock (granted or refused) and runs. */
static void
pass_first(struct lock *l)
{
	struct bw_lock_wait *w = l->head;

	if ((l->head = w->next) == NULL)
		l->tail = &l->head;
	l->waiting_n--;
	w->next = NULL;
	w->refused = l->refused;
	w->run(w);
}

static void lock_ask(void *arg);

static void
lock_answered(struct bw_meta_req *req)
{
	struct lock *l = req->arg;

	if (req->rc == 0 && req->u.lock.got) {
		l->granted = 1;
		pass_first(l);
		return;
	}
	/* tried again only while another daemon holds it: a store that
	 * cannot answer (down, or closing) fails the step at once, as its
	 * writes would */
	if (req->rc != 0 || ++l->tries >= LOCK_TRIES ||
	    bw_loop_timer_start(l->ls->loop, &l->retry_t, LOCK_RETRY_MS,
				lock_ask, l) != 0) {
		if (req->rc != 0)
			bw_warn("%s: %s could not be locked: %s", l->ls->who,
				l->name, bw_strerror(req->rc));
		else
			bw_warn("%s: %s is held by another node for too long",
				l->ls->who, l->name);
		l->refused = 1;
		pass_first(l);
	}
}

static void
lock_ask(void *arg)
{
	struct lock *l = arg;

	bw_meta_req_init(&l->req, BW_META_LOCK, 0, lock_answered, l);
	l->req.u.lock.key = bw_lock_key(l->name);
	bw_meta_submit(l->ls->meta, &l->req);
}

static void
unlocked(struct bw_meta_req *req)
{
	free(req); /* a lost connection released it anyway */
}

static void
lock_free(struct bw_locks *ls, struct lock *l)
{
	struct bw_meta_req *u;

	if (l->granted && (u = calloc(1, sizeof(*u))) != NULL) {
		bw_meta_req_init(u, BW_META_UNLOCK, 0, unlocked, NULL);
		u->arg = u;
		u->u.lock.key = bw_lock_key(l->name);
		bw_meta_submit(ls->meta, u);
	}
	bw_hash_del(&ls->held, l->name, strlen(l->name));
	free(l);
}

static int
disarm(void *arg, void *val)
{
	struct lock *l = val;

	(void)arg;
	if (l->shared)
		bw_loop_timer_stop(l->ls->loop, &l->retry_t);
	return 0;
}

void
bw_locks_disarm(struct bw_locks *ls)
{
	(void)bw_hash_each(&ls->held, disarm, NULL);
}

static int
drop(void *arg, void *val)
{
	(void)arg;
	free(val);
	return 0;
}

void
bw_locks_fini(struct bw_locks *ls)
{
	/* steps hold no lock once they have all ended: nothing is left
	 * but what an abrupt end kept */
	(void)bw_hash_each(&ls->held, drop, NULL);
	bw_hash_fini(&ls->held);
}

/* --- taking and releasing -------------------------------------------------
 */

int
bw_lock(struct bw_locks *ls, const char *name, struct bw_lock_wait *w)
{
	size_t n = strlen(name);
	struct lock *l = bw_hash_get(&ls->held, name, n);
	int rc;

	w->next = NULL;
	w->refused = 0;
	if (l != NULL) {
		if (w->bounded && l->waiting_n >= ls->max_waiters)
			return BW_EBUSY;
		*l->tail = w;
		l->tail = &w->next;
		l->waiting_n++;
		return 0;
	}
	if ((l = calloc(1, sizeof(*l) + n + 1)) == NULL)
		return BW_ENOMEM;
	memcpy(l->name, name, n + 1);
	l->ls = ls;
	l->tail = &l->head;
	if ((rc = bw_hash_put(&ls->held, l->name, n, l)) != 0) {
		free(l);
		return rc;
	}
	if (!bw_meta_others_write(ls->meta))
		return 1;
	/* the other daemons' turn is asked first; w waits for it */
	l->shared = 1;
	l->head = w;
	l->tail = &w->next;
	l->waiting_n = 1;
	lock_ask(l);
	return 0;
}

void
bw_unlock(struct bw_locks *ls, const char *name)
{
	struct lock *l = bw_hash_get(&ls->held, name, strlen(name));
	struct bw_lock_wait *w;

	if (l == NULL)
		return;
	if ((w = l->head) == NULL) {
		lock_free(ls, l);
		return;
	}
	if ((l->head = w->next) == NULL)
		l->tail = &l->head;
	l->waiting_n--;
	/* the lock passes to w: run it once the outermost unlock returns */
	w->next = NULL;
	w->refused = l->refused;
	*ls->handoff_tail = w;
	ls->handoff_tail = &w->next;
	if (ls->handing_off)
		return;
	ls->handing_off = 1;
	while ((w = ls->handoff) != NULL) {
		if ((ls->handoff = w->next) == NULL)
			ls->handoff_tail = &ls->handoff;
		w->next = NULL;
		w->run(w);
	}
	ls->handing_off = 0;
}

int
bw_lock_busy(const struct bw_locks *ls, const char *name)
{
	return name[0] != '\0' &&
	       bw_hash_get(&ls->held, name, strlen(name)) != NULL;
}

int64_t
bw_lock_held_key(const struct bw_locks *ls, const char *name)
{
	const struct lock *l = bw_hash_get(&ls->held, name, strlen(name));

	return l != NULL && l->granted ? bw_lock_key(name) : 0;
}

int
bw_lock_fence(struct bw_locks *ls, const char *name, struct bw_meta_req *req,
	      bw_meta_done_fn done, void *arg)
{
	int64_t key = bw_lock_held_key(ls, name);

	if (key == 0)
		return 0;
	bw_meta_req_init(req, BW_META_FENCE, 0, done, arg);
	req->u.lock.key = key;
	bw_meta_submit(ls->meta, req);
	return 1;
}
