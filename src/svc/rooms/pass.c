/* Room passwords, hashed on the worker pool and never on the loop thread:
 * scrypt with a fresh salt when a room is created, compared in constant
 * time when someone joins. At most as many hashes run at once as there are
 * workers, so the vault's and the messenger's fsyncs still find a worker
 * free within one hash; the rest wait in order.
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
		menu_hashed(rc, j->create, j->ok, j->salt, j->got);
		rc_resume(rc);
	}
	addr_release(rs, &j->addr);
	job_free(j);
	bw_conn_release(c);
	pump(rs);
}

/* The next password to hash, taken out of the queue: the first whose
 * address has none being hashed, else the first (a lone address uses
 * every worker; with others waiting, they go first). NULL if none. */
static struct rconn *
next_ready(struct bw_rooms *rs)
{
	struct rconn *prev = NULL, *rc;
	struct bw_addr *a;

	for (rc = rs->hash_head; rc != NULL; prev = rc, rc = rc->hash_next) {
		a = rc->c->addr;
		if (a == NULL || a->held[rs->addr_slot] == 0)
			break;
	}
	if (rc == NULL) {
		prev = NULL;
		rc = rs->hash_head;
	}
	if (rc != NULL) {
		if (prev != NULL)
			prev->hash_next = rc->hash_next;
		else
			rs->hash_head = rc->hash_next;
		if (rs->hash_tail == rc)
			rs->hash_tail = prev;
		rc->hash_next = NULL;
		rc->queued = 0;
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
	if (r != NULL) {
		memcpy(j->salt, r->salt, SALT_LEN);
		memcpy(j->want, r->hash, HASH_LEN);
	}
	rc->job = j;
	rc->st = R_HASH;
	rc_wait(rc);
	bw_conn_pause(rc->c, 1);
	rc->queued = 1;
	if (rs->hash_tail != NULL)
		rs->hash_tail->hash_next = rc;
	else
		rs->hash_head = rc;
	rs->hash_tail = rc;
	pump(rs);
}

void
pass_detach(struct rconn *rc)
{
	struct bw_rooms *rs = rc->rs;
	struct rconn **pp;

	if (rc->job == NULL)
		return;
	if (!rc->queued) {
		rc->job->rc = NULL; /* on a worker: its done frees it */
		rc->job = NULL;
		return;
	}
	for (pp = &rs->hash_head; *pp != NULL; pp = &(*pp)->hash_next) {
		if (*pp == rc) {
			*pp = rc->hash_next;
			break;
		}
	}
	if (rs->hash_tail == rc) {
		rs->hash_tail = NULL;
		for (pp = &rs->hash_head; *pp != NULL; pp = &(*pp)->hash_next)
			rs->hash_tail = *pp;
	}
	job_free(rc->job);
	rc->job = NULL;
}
