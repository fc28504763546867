/* Who owes a verdict, across the nodes of a shared store (vault_int.h,
 * owes.c): each connection's claim, a lock of the store's taken before its
 * first row and given up when it closes, and the probe a verdict from
 * another connection makes of it.
 */
#include <stdlib.h>

#include "bulwark/crypto.h"
#include "bulwark/log.h"
#include "svc/vault/vault_int.h"

/* The tag: 31 random bits, never 0, so that a key is positive and never
 * 0 (a row's "none"), and apart from the path locks' keys (FNV hashes,
 * which a claim key matches by chance once in 2^64). */
static uint32_t
node_tag(struct bw_vault *v)
{
	uint32_t t = 0;

	while (v->node_tag == 0) {
		if (bw_random((uint8_t *)&t, sizeof(t)) != 0)
			t = (uint32_t)bw_now_ms();
		v->node_tag = t & 0x7fffffffu;
	}
	return v->node_tag;
}

int64_t
vault_owes_key(const struct bw_vault *v, const struct bw_conn *c)
{
	/* the tag is drawn before the first key is needed */
	return (int64_t)((uint64_t)node_tag((struct bw_vault *)v) << 32 |
			 (c->id & 0xffffffffu));
}

/* --- giving up ------------------------------------------------------------
 */

struct unclaim {
	struct bw_meta_req req;
};

static void
unclaimed(struct bw_meta_req *req)
{
	free(req); /* a lost connection gave it up anyway */
}

static void
unclaim(struct bw_vault *v, int64_t key)
{
	struct unclaim *u = calloc(1, sizeof(*u));

	if (u == NULL)
		return; /* held until the node's store connection ends */
	bw_meta_req_init(&u->req, BW_META_UNLOCK, 0, unclaimed, NULL);
	u->req.arg = &u->req;
	u->req.u.lock.key = key;
	u->req.u.lock.keep = 1;
	bw_meta_submit(v->meta, &u->req);
}

void
vault_owes_release(struct bw_vault *v, struct vault_conn *vc, struct bw_conn *c)
{
	if (vc->owes == OWES_HELD)
		unclaim(v, vault_owes_key(v, c));
	vc->owes = OWES_NONE; /* one asking sees its connection gone */
}

/* --- taking ---------------------------------------------------------------
 */

static void
taken(struct bw_meta_req *req)
{
	struct upload *u = req->arg;
	struct bw_conn *c = u->conn;
	struct vault_conn *vc = c != NULL && !bw_conn_dead(c) ? VC(c) : NULL;
	int64_t key = req->u.lock.key;

	u->up_key = 0;
	if (req->rc == 0 && req->u.lock.got && vc != NULL &&
	    vc->owes == OWES_ASKING) {
		vc->owes = OWES_HELD;
		u->up_key = key;
	} else {
		if (req->rc == 0 && req->u.lock.got)
			unclaim(u->v, key); /* its connection went meanwhile */
		else
			bw_warn("vault: c%llu's claim to its verdicts could "
				"not be held (%s): another connection with its "
				"client id may decide them",
				ULL(c != NULL ? c->id : 0),
				req->rc != 0 ? bw_strerror(req->rc) : "taken");
		if (vc != NULL)
			vc->owes = OWES_NONE;
	}
	u->up_then(u);
}

void
vault_owes_take(struct upload *u, void (*then)(struct upload *u))
{
	struct bw_conn *c = u->conn;
	struct vault_conn *vc = c != NULL && !bw_conn_dead(c) ? VC(c) : NULL;

	u->up_key = 0;
	if (!bw_meta_others_write(u->v->meta) || vc == NULL ||
	    vc->owes == OWES_ASKING) {
		then(u);
		return;
	}
	if (vc->owes == OWES_HELD) {
		u->up_key = vault_owes_key(u->v, c);
		then(u);
		return;
	}
	vc->owes = OWES_ASKING;
	u->up_then = then;
	bw_meta_req_init(&u->up_req, BW_META_LOCK, 0, taken, u);
	u->up_req.u.lock.key = vault_owes_key(u->v, c);
	/* held until the connection closes: a lost session takes it
	 * again (pg_reads.c) */
	u->up_req.u.lock.keep = 1;
	bw_meta_submit(u->v->meta, &u->up_req);
}

/* --- probing --------------------------------------------------------------
 */

struct probe {
	struct bw_meta_req req;
	struct bw_vault *v;
	void (*done)(void *arg, int open);
	void *arg;
};

static void
probed(struct bw_meta_req *req)
{
	struct probe *p = (struct probe *)req;
	int open = req->rc != 0 ? req->rc : !req->u.lock.got;

	if (req->rc == 0 && req->u.lock.got)
		unclaim(p->v, req->u.lock.key); /* not ours to keep */
	p->done(p->arg, open);
	free(p);
}

void
vault_owes_probe(struct bw_vault *v, int64_t key,
		 void (*done)(void *arg, int open), void *arg)
{
	struct probe *p;
	const struct bw_conn *c;
	uint64_t id = (uint64_t)key & 0xffffffffu;

	if ((uint64_t)key >> 32 == node_tag(v)) {
		/* this node's: its RAM knows (an id past 2^32 is not one
		 * whose key this is) */
		c = bw_engine_conn(v->eng, id);
		done(arg, c != NULL && c->id == id && bw_conn_serving(c));
		return;
	}
	if ((p = calloc(1, sizeof(*p))) == NULL) {
		done(arg, BW_ENOMEM);
		return;
	}
	p->v = v;
	p->done = done;
	p->arg = arg;
	bw_meta_req_init(&p->req, BW_META_LOCK, 0, probed, p);
	p->req.u.lock.key = key;
	bw_meta_submit(v->meta, &p->req);
}
