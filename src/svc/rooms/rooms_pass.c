/* Room passwords, hashed on the worker pool and never on the loop thread:
 * scrypt with a fresh salt when a room is created, compared in constant
 * time when someone joins. At most as many hashes run at once as there are
 * workers (and never more than HASH_MAX: 16 MiB each), so the vault's and
 * the messenger's fsyncs still find a worker
 * free within one hash; the rest wait, queued per source address, the
 * addresses taking turns.
 */
#include <stdlib.h>
#include <string.h>

#include "bulwark/log.h"
#include "svc/rooms/rooms_int.h"

struct hashjob {
	struct bw_rooms *rs;
	struct rconn *rc;     /* NULL once the connection has gone */
	struct bw_conn *c;    /* held while on a worker */
	struct bw_addr *addr; /* the address slot it holds, or NULL */
	int create, ok, err;
	char pw[PASS_MAX];
	size_t n;
	struct bw_scrypt_cost cost;
	uint8_t salt[SALT_LEN], want[HASH_LEN], got[HASH_LEN];
};

static void
job_free(struct hashjob *j)
{
	bw_wipe(j, sizeof(*j));
	free(j);
}

static void
job_work(void *arg)
{
	struct hashjob *j = arg;

	j->err = bw_scrypt(j->pw, j->n, j->salt, SALT_LEN, &j->cost, j->got,
			   HASH_LEN);
	bw_wipe(j->pw, sizeof(j->pw));
	j->ok = j->err == 0 &&
		(j->create || bw_ct_equal(j->got, j->want, HASH_LEN));
}

static void pump(struct bw_rooms *rs);

static void
addr_release(struct bw_rooms *rs, struct bw_addr **a)
{
	if (*a == NULL)
		return;
	(*a)->held[rs->addr_slot]--;
	*a = NULL;
}

static void
job_done(void *arg)
{
	struct hashjob *j = arg;
	struct bw_rooms *rs = j->rs;
	struct rconn *rc = j->rc;
	struct bw_conn *c = j->c;

	rs->hashing--;
	if (j->err != 0)
		bw_error("rooms: a password could not be hashed: %s",
			 bw_strerror(j->err));
	if (rc != NULL) {
		rc->job = NULL;
		/* told goodbye meanwhile (a shutdown): nothing more is said */
		if (rc->st != R_GONE) {
			menu_hashed(rc, j->create, j->ok, j->salt, j->got);
			rc_resume(rc);
		}
	}
	addr_release(rs, &j->addr);
	job_free(j);
	bw_conn_release(c);
	pump(rs);
}

/* Waiting passwords are queued per source address, and the addresses
 * take turns (round robin): a flood from one address, or from two, waits
 * behind itself, and anyone else's join is the next but one or two. */
struct aq {
	struct bw_addr *addr; /* the key (NULL: connections not tracked) */
	struct rconn *head, *tail;
	struct aq *next; /* the ring of addresses with passwords waiting */
};

static struct aq *
aq_find(struct bw_rooms *rs, const struct bw_addr *a)
{
	return bw_hash_get(&rs->hash_addrs, &a, sizeof(a));
}

static int
enqueue(struct bw_rooms *rs, struct rconn *rc)
{
	struct bw_addr *a = rc->c->addr;
	struct aq *q = aq_find(rs, a);

	if (q == NULL) {
		if ((q = calloc(1, sizeof(*q))) == NULL)
			return BW_ENOMEM;
		q->addr = a;
		if (bw_hash_put(&rs->hash_addrs, &q->addr, sizeof(q->addr),
				q) != 0) {
			free(q);
			return BW_ENOMEM;
		}
		if (rs->ring_tail != NULL)
			rs->ring_tail->next = q;
		else
			rs->ring_head = q;
		rs->ring_tail = q;
	}
	rc->hash_next = NULL;
	if (q->tail != NULL)
		q->tail->hash_next = rc;
	else
		q->head = rc;
	q->tail = rc;
	rc->queued = 1;
	return 0;
}

/* Takes q out of the ring (it has nothing waiting). */
static void
aq_drop(struct bw_rooms *rs, struct aq *q)
{
	struct aq **pp, *prev = NULL;

	for (pp = &rs->ring_head; *pp != NULL; prev = *pp, pp = &(*pp)->next) {
		if (*pp == q) {
			*pp = q->next;
			break;
		}
	}
	if (rs->ring_tail == q)
		rs->ring_tail = prev;
	(void)bw_hash_del(&rs->hash_addrs, &q->addr, sizeof(q->addr));
	free(q);
}

/* The next password to hash: the first of the address whose turn it is;
 * that address goes to the end of the ring. NULL if none waits. */
static struct rconn *
next_ready(struct bw_rooms *rs)
{
	struct aq *q = rs->ring_head;
	struct rconn *rc;

	if (q == NULL)
		return NULL;
	rc = q->head;
	if ((q->head = rc->hash_next) == NULL)
		q->tail = NULL;
	rc->hash_next = NULL;
	rc->queued = 0;
	rs->ring_head = q->next;
	if (rs->ring_head == NULL)
		rs->ring_tail = NULL;
	q->next = NULL;
	if (q->head == NULL) {
		(void)bw_hash_del(&rs->hash_addrs, &q->addr, sizeof(q->addr));
		free(q);
	} else {
		if (rs->ring_tail != NULL)
			rs->ring_tail->next = q;
		else
			rs->ring_head = q;
		rs->ring_tail = q;
	}
	return rc;
}

/* Starts waiting jobs while workers are free, an address with none on a
 * worker first: a flood from one address does not queue ahead of the joins
 * of everyone else. */
static void
pump(struct bw_rooms *rs)
{
	struct rconn *rc;
	struct hashjob *j;

	while (rs->hashing < rs->hash_max && (rc = next_ready(rs)) != NULL) {
		j = rc->job;
		bw_conn_hold(j->c);
		if (bw_loop_submit(rs->eng->loop, job_work, job_done, j) != 0) {
			bw_conn_release(j->c);
			rc->job = NULL;
			job_free(j);
			(void)rc_say(rc,
				     "The server is busy, try again later\n");
			rc_prompt(rc, R_MENU);
			rc_resume(rc);
			continue;
		}
		if ((j->addr = rc->c->addr) != NULL)
			j->addr->held[rs->addr_slot]++;
		rs->hashing++;
	}
}

void
pass_start(struct rconn *rc, int create, const char *pw, size_t n)
{
	struct bw_rooms *rs = rc->rs;
	struct room *r = create ? NULL : room_find(rs, rc->room_id);
	struct hashjob *j;

	if ((j = calloc(1, sizeof(*j))) == NULL ||
	    (create && bw_random(j->salt, SALT_LEN) != 0)) {
		free(j);
		(void)rc_say(rc, "The server is busy, try again later\n");
		rc_prompt(rc, R_MENU);
		return;
	}
	j->rs = rs;
	j->rc = rc;
	j->c = rc->c;
	j->create = create;
	memcpy(j->pw, pw, n);
	j->n = n;
	j->cost = rs->cfg.kdf;
	if (!create && rc->v_have) {
		/* a room of the cluster's: Redis's verifier, never the one
		 * of a room of this node's that may have had the id before */
		memcpy(j->salt, rc->v_salt, SALT_LEN);
		memcpy(j->want, rc->v_hash, HASH_LEN);
	} else if (r != NULL) {
		memcpy(j->salt, r->salt, SALT_LEN);
		memcpy(j->want, r->hash, HASH_LEN);
	}
	if (enqueue(rs, rc) != 0) {
		job_free(j);
		(void)rc_say(rc, "The server is busy, try again later\n");
		rc_prompt(rc, R_MENU);
		return;
	}
	rc->job = j;
	rc->st = R_HASH;
	rc_wait(rc);
	bw_conn_pause(rc->c, 1);
	pump(rs);
}

void
pass_detach(struct rconn *rc)
{
	struct bw_rooms *rs = rc->rs;
	struct rconn **pp, *prev = NULL;
	struct aq *q;

	if (rc->job == NULL)
		return;
	if (!rc->queued) {
		rc->job->rc = NULL; /* on a worker: its done frees it */
		rc->job = NULL;
		return;
	}
	if ((q = aq_find(rs, rc->c->addr)) != NULL) {
		for (pp = &q->head; *pp != NULL;
		     prev = *pp, pp = &(*pp)->hash_next) {
			if (*pp == rc) {
				*pp = rc->hash_next;
				break;
			}
		}
		if (q->tail == rc)
			q->tail = prev;
		if (q->head == NULL)
			aq_drop(rs, q);
	}
	rc->queued = 0;
	job_free(rc->job);
	rc->job = NULL;
}

void
pass_fini(struct bw_rooms *rs)
{
	struct aq *q, *next;

	for (q = rs->ring_head; q != NULL; q = next) {
		next = q->next;
		free(q);
	}
	rs->ring_head = rs->ring_tail = NULL;
	bw_hash_fini(&rs->hash_addrs);
}
