/* The vault's path locks: a commit or a verdict runs under its stored
 * path's lock, taken here. On a store other daemons share, the lock is
 * theirs too (an advisory lock of the store's, asked again until it is
 * free). A released lock passes to its next waiter.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "svc/vault/vault_int.h"

struct vlock {
	char key[BW_PATH_CAP];
	struct vwait *head, **tail; /* waiting for the path */
	unsigned waiting_n;
	/* on a store other daemons share, the path's lock is theirs too: an
	 * advisory lock of the store's, tried until it is free (granted), or
	 * given up (refused: the waiters run and answer 2107) */
	struct bw_vault *v;
	int granted, refused;
	unsigned tries;
	struct bw_meta_req req;
	struct bw_timer retry_t;
};

#define LOCK_RETRY_MS 20u
#define LOCK_TRIES    500u /* 10 s */

/* --- locks --------------------------------------------------------------
 * A released lock passes to its next waiter through a queue run by the
 * outermost release, never inside the releasing call: a waiter that ends
 * at once (its connection gone) releases again, and a chain of thousands
 * must not recurse that deep. */

/* The path's name among the daemons' locks (FNV-1a). */
int64_t
vault_lock_key(const char *path)
{
	uint64_t h = 1469598103934665603ull;

	for (; *path != '\0'; path++)
		h = (h ^ (unsigned char)*path) * 1099511628211ull;
	return (int64_t)h;
}

/* The first waiter takes the lock (granted or refused) and runs. */
static void
pass_first(struct vlock *l)
{
	struct vwait *w = l->head;

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
	struct vlock *l = req->arg;

	if (req->rc == 0 && req->u.lock.got) {
		l->granted = 1;
		pass_first(l);
		return;
	}
	/* tried again only while another daemon holds it: a store that
	 * cannot answer (down, or closing) fails the step at once, as its
	 * writes would */
	if (req->rc != 0 || ++l->tries >= LOCK_TRIES ||
	    bw_loop_timer_start(l->v->eng->loop, &l->retry_t, LOCK_RETRY_MS,
				lock_ask, l) != 0) {
		if (req->rc != 0)
			bw_warn("vault: %s could not be locked: %s", l->key,
				bw_strerror(req->rc));
		else
			bw_warn("vault: %s is held by another node for too "
				"long",
				l->key);
		l->refused = 1;
		pass_first(l);
	}
}

static void
lock_ask(void *arg)
{
	struct vlock *l = arg;

	bw_meta_req_init(&l->req, BW_META_LOCK, 0, lock_answered, l);
	l->req.u.lock.key = vault_lock_key(l->key);
	bw_meta_submit(l->v->meta, &l->req);
}

struct unlock_req {
	struct bw_meta_req req;
};

static void
unlocked(struct bw_meta_req *req)
{
	free(req); /* a lost connection released it anyway */
}

static void
lock_free(struct bw_vault *v, struct vlock *l)
{
	struct unlock_req *u;

	if (l->granted && (u = calloc(1, sizeof(*u))) != NULL) {
		bw_meta_req_init(&u->req, BW_META_UNLOCK, 0, unlocked, NULL);
		u->req.arg = &u->req;
		u->req.u.lock.key = vault_lock_key(l->key);
		bw_meta_submit(v->meta, &u->req);
	}
	bw_hash_del(&v->locks, l->key, strlen(l->key));
	free(l);
}

static int
disarm(void *arg, void *val)
{
	struct vlock *l = val;

	(void)arg;
	if (l->v != NULL)
		bw_loop_timer_stop(l->v->eng->loop, &l->retry_t);
	return 0;
}

void
vault_locks_close(struct bw_vault *v)
{
	/* at the end nothing waits any more (the store answered every try,
	 * its connection gone): a retry still armed is disarmed */
	(void)bw_hash_each(&v->locks, disarm, NULL);
}

int
vault_lock(struct bw_vault *v, const char *path, struct vwait *w)
{
	struct vlock *l = bw_hash_get(&v->locks, path, strlen(path));
	int rc;

	w->next = NULL;
	w->refused = 0;
	if (l != NULL) {
		if (w->verdict && l->waiting_n >= VAULT_LOCK_WAITERS)
			return BW_EBUSY;
		*l->tail = w;
		l->tail = &w->next;
		l->waiting_n++;
		return 0;
	}
	if ((l = calloc(1, sizeof(*l))) == NULL)
		return BW_ENOMEM;
	snprintf(l->key, sizeof(l->key), "%s", path);
	l->tail = &l->head;
	if ((rc = bw_hash_put(&v->locks, l->key, strlen(l->key), l)) != 0) {
		free(l);
		return rc;
	}
	if (!v->meta->be->shared)
		return 1;
	/* the other daemons' turn is asked first; w waits for it */
	l->v = v;
	l->head = w;
	l->tail = &w->next;
	l->waiting_n = 1;
	lock_ask(l);
	return 0;
}

int64_t
vault_lock_held_key(const struct bw_vault *v, const char *path)
{
	const struct vlock *l = bw_hash_get(&v->locks, path, strlen(path));

	return l != NULL && l->granted ? vault_lock_key(path) : 0;
}

int
vault_fence(struct bw_vault *v, const char *path, struct bw_meta_req *req,
	    bw_meta_done_fn done, void *arg)
{
	int64_t key = vault_lock_held_key(v, path);

	if (key == 0)
		return 0;
	bw_meta_req_init(req, BW_META_FENCE, 0, done, arg);
	req->u.lock.key = key;
	bw_meta_submit(v->meta, req);
	return 1;
}

void
vault_unlock(struct bw_vault *v, const char *path)
{
	struct vlock *l = bw_hash_get(&v->locks, path, strlen(path));
	struct vwait *w;

	if (l == NULL)
		return;
	if ((w = l->head) == NULL) {
		lock_free(v, l);
		return;
	}
	if ((l->head = w->next) == NULL)
		l->tail = &l->head;
	l->waiting_n--;
	/* the lock passes to w: run it once the outermost unlock returns */
	w->next = NULL;
	w->refused = l->refused;
	*v->handoff_tail = w;
	v->handoff_tail = &w->next;
	if (v->handing_off)
		return;
	v->handing_off = 1;
	while ((w = v->handoff) != NULL) {
		if ((v->handoff = w->next) == NULL)
			v->handoff_tail = &v->handoff;
		w->next = NULL;
		w->run(w);
	}
	v->handing_off = 0;
}
