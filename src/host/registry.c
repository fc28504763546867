/* Clients in RAM, indexed by id and by name, written through the metadata
 * store's requests (host/meta.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "host/registry.h"
#include "proto/text.h"

static void
client_free(struct bw_client *c)
{
	if (c == NULL)
		return;
	if (c->key != NULL && c->key != c->name)
		free(c->key);
	bw_secure_free(c, sizeof(*c));
}

/* c->key from c->name (proto/text.h): BW_EPROTO if nothing of the name
 * is left to read (invisible code points alone: its key is then the name
 * itself, for a row that has it already). */
static int
key_client(struct bw_client *c)
{
	char key[BW_TEXT_CLIENT_KEY_CAP];

	c->key = c->name;
	if (bw_text_client_key(c->name, key, sizeof(key)) == 0)
		return BW_EPROTO;
	if (strcmp(key, c->name) == 0)
		c->key = c->name;
	else if ((c->key = strdup(key)) == NULL)
		return BW_ENOMEM;
	return 0;
}

/* By id, and by its name's key unless another name of that key came
 * first (a row older than the rule, or another node's: c->named is 0,
 * and that name stays taken by the first). */
static int
index_client(struct bw_registry *r, struct bw_client *c)
{
	struct bw_client *holder;
	int rc;

	if (c->key == NULL && (rc = key_client(c)) != 0)
		return rc;
	if ((rc = bw_hash_put(&r->by_id, c->id, BW_ID_LEN, c)) != 0)
		return rc;
	if ((rc = bw_hash_put(&r->by_name, c->key, strlen(c->key), c)) != 0 &&
	    rc != BW_EEXIST) {
		bw_hash_del(&r->by_id, c->id, BW_ID_LEN);
		return rc;
	}
	c->named = rc == 0;
	if (!c->named &&
	    (holder = bw_hash_get(&r->by_name, c->key, strlen(c->key))) !=
		    NULL &&
	    holder->pending)
		holder->shadowing = 1;
	return 0;
}

static void
unindex_client(struct bw_registry *r, struct bw_client *c)
{
	bw_hash_del(&r->by_id, c->id, BW_ID_LEN);
	if (c->named)
		bw_hash_del(&r->by_name, c->key, strlen(c->key));
}

/* c is everyone's now: counted, and listed after those before it. */
static void
publish(struct bw_registry *r, struct bw_client *c)
{
	c->pending = 0;
	r->clients_n++;
	if (r->last_added != NULL)
		r->last_added->added_next = c;
	else
		r->first_added = c;
	r->last_added = c;
}

/* A row older than the rule: both names stay, the later one's is not
 * anyone's to register again. */
static void
look_alike_warn(const struct bw_registry *r, const struct bw_client *c)
{
	const struct bw_client *first =
		bw_hash_get(&r->by_name, c->key, strlen(c->key));
	char a[BW_ESC_CAP], b[BW_ESC_CAP];

	bw_warn("registry: the client '%s' reads as '%s', registered before "
		"it; both are kept",
		bw_escape_display(c->name, a, sizeof(a)),
		first != NULL ? bw_escape_display(first->name, b, sizeof(b))
			      : "");
}

static int
load_client(void *arg, const struct bw_client_rec *rec)
{
	struct bw_registry *r = arg;
	struct bw_client *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return BW_ENOMEM;
	memcpy(c->id, rec->id, BW_ID_LEN);
	memcpy(c->name, rec->name, sizeof(c->name));
	c->has_pubkey = rec->has_pubkey;
	memcpy(c->pubkey, rec->pubkey, sizeof(c->pubkey));
	c->vault.has_aes = rec->has_aes;
	memcpy(c->vault.aes_key, rec->aes_key, sizeof(c->vault.aes_key));
	c->last_seen = rec->last_seen;
	c->vault.key_issued = rec->key_issued;
	c->vault.key_used = rec->key_used;
	c->tls_only = rec->tls_only;
	c->read_ms = bw_now_ms();
	(void)key_client(c); /* a name of no visible character: its bytes */
	if (index_client(r, c) != 0) {
		bw_warn("registry: skipping duplicate client row '%s'",
			rec->name);
		client_free(c);
		return 0;
	}
	if (!c->named)
		look_alike_warn(r, c);
	publish(r, c);
	return 0;
}

/* --- a shared store: rows read again ---------------------------------------
 */

struct refresh {
	struct bw_meta_req req;
	struct bw_registry *r;
	struct bw_client_rec rec;
	bw_registry_fn done;
	void *arg;
};

/* What another daemon changed of c's key state. */
static void
apply(struct bw_client *c, const struct bw_client_rec *rec)
{
	if (c->vault.has_aes != rec->has_aes ||
	    c->vault.key_issued != rec->key_issued ||
	    memcmp(c->vault.aes_key, rec->aes_key, sizeof(c->vault.aes_key)) !=
		    0) {
		/* another key, or none: its own count and clock */
		c->vault.key_failures = 0;
		c->vault.key_issued_ms = 0;
		c->vault.key_seq++;
	}
	c->has_pubkey = rec->has_pubkey;
	memcpy(c->pubkey, rec->pubkey, sizeof(c->pubkey));
	c->vault.has_aes = rec->has_aes;
	memcpy(c->vault.aes_key, rec->aes_key, sizeof(c->vault.aes_key));
	c->vault.key_issued = rec->key_issued;
	c->vault.key_used = rec->key_used;
	c->tls_only |= rec->tls_only; /* never undone */
	c->read_ms = bw_now_ms();
	c->unread = 0;
	if (rec->last_seen > c->last_seen)
		c->last_seen = rec->last_seen;
}

/* A row as the store has it, in RAM: the client added, or its key state
 * brought up to it; NULL if it is not everyone's (a pending insert here,
 * or a name another row holds). */
static struct bw_client *
upsert(struct bw_registry *r, const struct bw_client_rec *rec)
{
	struct bw_client *c = bw_hash_get(&r->by_id, rec->id, BW_ID_LEN);

	if (c == NULL) {
		if (load_client(r, rec) != 0)
			return NULL;
		c = bw_hash_get(&r->by_id, rec->id, BW_ID_LEN);
	} else if (!c->pending) {
		apply(c, rec);
	}
	return c != NULL && !c->pending ? c : NULL;
}

static void
refreshed(struct bw_meta_req *req)
{
	struct refresh *f = (struct refresh *)req;
	struct bw_registry *r = f->r;
	struct bw_client *c = NULL;
	int rc = req->rc;

	if (rc == 0)
		c = upsert(r, &f->rec);
	else if (rc == BW_ENOTFOUND)
		rc = 0; /* no such row: nobody's */
	else if ((c = bw_registry_by_id(r, f->req.u.get.id)) != NULL)
		c->unread = 1; /* until a read succeeds */
	f->done(f->arg, rc, c);
	bw_secure_free(f, sizeof(*f));
}

int
bw_registry_refresh(struct bw_registry *r, const uint8_t id[BW_ID_LEN],
		    bw_registry_fn done, void *arg)
{
	struct refresh *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return BW_ENOMEM;
	f->r = r;
	f->done = done;
	f->arg = arg;
	bw_meta_req_init(&f->req, BW_META_CLIENT_GET, 0, refreshed, f);
	memcpy(f->req.u.get.id, id, BW_ID_LEN);
	f->req.u.get.rec = &f->rec;
	bw_meta_submit(r->meta, &f->req);
	return 0;
}

/* Catching up with the clients others registered, a page at a time. */
#define CATCH_UP_PAGE 1000u

struct bw_catch_up {
	struct bw_catch_up *next;
	void (*done)(void *arg);
	void *arg;
};

static void round_start(struct bw_registry *r);

static void
round_page(struct bw_meta_req *req)
{
	struct bw_registry *r = req->arg;
	struct bw_catch_up *w, *list;
	size_t i, n = req->u.since.n;

	for (i = 0; i < n; i++)
		(void)upsert(r, &req->u.since.recs[i]);
	if (n > 0) {
		bw_wipe(req->u.since.recs, n * sizeof(*req->u.since.recs));
		free(req->u.since.recs);
		req->u.since.recs = NULL;
	}
	if (req->rc == 0 && req->u.since.last > r->seen_seq)
		r->seen_seq = req->u.since.last;
	if (req->rc == 0 && n == CATCH_UP_PAGE) {
		bw_meta_req_init(&r->cu_req, BW_META_CLIENT_SINCE, 0,
				 round_page, r);
		r->cu_req.u.since.after = r->seen_seq;
		r->cu_req.u.since.limit = CATCH_UP_PAGE;
		bw_meta_submit(r->meta, &r->cu_req);
		return;
	}
	if (req->rc != 0)
		bw_debug("registry: the clients added could not be read: %s",
			 bw_strerror(req->rc));
	list = r->cu_run;
	r->cu_run = NULL;
	r->cu_busy = 0;
	while ((w = list) != NULL) {
		list = w->next;
		w->done(w->arg);
		free(w);
	}
	if (!r->cu_busy && r->cu_next != NULL)
		round_start(r);
}

static void
round_start(struct bw_registry *r)
{
	r->cu_run = r->cu_next;
	r->cu_next = NULL;
	r->cu_busy = 1;
	bw_meta_req_init(&r->cu_req, BW_META_CLIENT_SINCE, 0, round_page, r);
	r->cu_req.u.since.after = r->seen_seq;
	r->cu_req.u.since.limit = CATCH_UP_PAGE;
	bw_meta_submit(r->meta, &r->cu_req);
}

int
bw_registry_catch_up(struct bw_registry *r, void (*done)(void *arg), void *arg)
{
	struct bw_catch_up *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return BW_ENOMEM;
	w->done = done;
	w->arg = arg;
	w->next = r->cu_next;
	r->cu_next = w;
	if (!r->cu_busy)
		round_start(r);
	return 0;
}

int
bw_registry_open(struct bw_registry *r, struct bw_meta *meta,
		 struct bw_loop *loop)
{
	int rc;

	memset(r, 0, sizeof(*r));
	r->meta = meta;
	r->loop = loop;
	r->shared = meta->be->shared;
	r->max_clients = 1000000;
	r->max_reg_per_min = 1000;
	if ((rc = bw_hash_init(&r->by_id)) != 0 ||
	    (rc = bw_hash_init(&r->by_name)) != 0 ||
	    (rc = meta->be->load_clients(meta->state, load_client, r)) != 0) {
		bw_registry_close(r);
		return rc;
	}
	return 0;
}

static int
free_one_client(void *arg, void *val)
{
	(void)arg;
	client_free(val);
	return 0;
}

void
bw_registry_close(struct bw_registry *r)
{
	struct bw_catch_up *w;

	while ((w = r->cu_next) != NULL) { /* never started: nobody waits */
		r->cu_next = w->next;
		free(w);
	}
	if (r->by_id.slots != NULL)
		(void)bw_hash_each(&r->by_id, free_one_client, NULL);
	bw_hash_fini(&r->by_id);
	bw_hash_fini(&r->by_name);
	free(r->touch_v);
	r->touch_v = NULL;
}

int
bw_registry_admit(struct bw_registry *r, struct bw_addr *addr, uint64_t now_ms,
		  const char **why)
{
	if (r->clients_n >= r->max_clients) {
		*why = "registered clients at the limit (--max-clients)";
		return BW_ETOOBIG;
	}
	if (addr == NULL ||
	    bw_addr_count_reg(addr, r->max_reg_per_min, now_ms) != 0) {
		*why = "too many registrations a minute from this address "
		       "(--max-reg-per-min)";
		return BW_ETOOBIG;
	}
	return 0;
}

struct bw_client *
bw_registry_by_id(const struct bw_registry *r, const uint8_t id[BW_ID_LEN])
{
	struct bw_client *c = bw_hash_get(&r->by_id, id, BW_ID_LEN);

	return c != NULL && !c->pending ? c : NULL;
}

struct bw_client *
bw_registry_by_name(const struct bw_registry *r, const char *name)
{
	char key[BW_TEXT_CLIENT_KEY_CAP];
	size_t n = bw_text_client_key(name, key, sizeof(key));

	return n != 0 ? bw_hash_get(&r->by_name, key, n) : NULL;
}

/* --- adding a client ------------------------------------------------------
 */

struct add {
	struct bw_meta_req req;
	struct bw_registry *r;
	struct bw_client *c;
	struct bw_client_rec rec;
	bw_registry_fn done;
	void *arg;
};

/* A client left out of the by-name index because a registration in
 * flight held its key (another node's, caught up meanwhile) takes it once
 * that registration is refused. */
static int
name_again(void *arg, void *val)
{
	struct bw_registry *r = arg;
	struct bw_client *c = val;
	size_t n = strlen(c->key);

	if (!c->named && !c->pending &&
	    bw_hash_get(&r->by_name, c->key, n) == NULL &&
	    bw_hash_put(&r->by_name, c->key, n, c) == 0)
		c->named = 1;
	return 0;
}

static void
added(struct bw_meta_req *req)
{
	struct add *a = (struct add *)req;
	struct bw_registry *r = a->r;
	struct bw_client *c = a->c;
	int rc = req->rc;

	if (rc == 0) {
		publish(r, c);
	} else {
		unindex_client(r, c);
		if (c->shadowing) /* a look-alike came in meanwhile */
			(void)bw_hash_each(&r->by_id, name_again, r);
		client_free(c);
		c = NULL;
	}
	a->done(a->arg, rc, c);
	bw_secure_free(a, sizeof(*a));
}

int
bw_registry_add(struct bw_registry *r, const char *name, const uint8_t *pubkey,
		bw_registry_fn done, void *arg)
{
	struct add *a;
	struct bw_client *c;
	int rc, tries;

	if (bw_registry_by_name(r, name) != NULL)
		return BW_EEXIST; /* that name, or one that reads as it */
	if ((a = calloc(1, sizeof(*a))) == NULL)
		return BW_ENOMEM;
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		free(a);
		return BW_ENOMEM;
	}
	snprintf(a->rec.name, sizeof(a->rec.name), "%s", name);
	if (pubkey != NULL) {
		a->rec.has_pubkey = 1;
		a->rec.key_used = 1;
		memcpy(a->rec.pubkey, pubkey, BW_RSA_PUB_LEN);
	}
	a->rec.last_seen = bw_time_s();
	for (tries = 0;; tries++) {
		if ((rc = bw_random(a->rec.id, BW_ID_LEN)) != 0)
			goto fail;
		if (bw_hash_get(&r->by_id, a->rec.id, BW_ID_LEN) == NULL)
			break;
		if (tries == 3) {
			rc = BW_EEXIST;
			goto fail;
		}
	}
	memcpy(c->id, a->rec.id, BW_ID_LEN);
	memcpy(c->name, a->rec.name, sizeof(c->name));
	c->has_pubkey = a->rec.has_pubkey;
	c->vault.key_used = a->rec.key_used;
	memcpy(c->pubkey, a->rec.pubkey, sizeof(c->pubkey));
	c->last_seen = a->rec.last_seen;
	c->pending = 1; /* the name is taken from now on */
	if ((rc = key_client(c)) != 0 || (rc = index_client(r, c)) != 0)
		goto fail;
	if (!c->named) { /* came in meanwhile */
		unindex_client(r, c);
		rc = BW_EEXIST;
		goto fail;
	}
	a->rec.name_key = c->key;
	a->r = r;
	a->c = c;
	a->done = done;
	a->arg = arg;
	bw_meta_req_init(&a->req, BW_META_CLIENT_INSERT, BW_META_DURABLE, added,
			 a);
	a->req.u.client = &a->rec;
	bw_meta_submit(r->meta, &a->req);
	return 0;
fail:
	client_free(c);
	bw_secure_free(a, sizeof(*a));
	return rc;
}

/* --- keys -----------------------------------------------------------------
 */

struct keyset {
	struct bw_meta_req req;
	struct bw_registry *r;
	struct bw_client *c;
	unsigned seq;
	/* what c had before, to put back if the store refuses */
	struct bw_client old;
	uint8_t pubkey[BW_RSA_PUB_LEN], aes[BW_AES_KEY_LEN];
	bw_registry_fn done;
	void *arg;
};

static void
key_stored(struct bw_meta_req *req)
{
	struct keyset *k = (struct keyset *)req;
	struct bw_client *c = k->c;

	if (req->rc != 0) {
		bw_warn("registry: the key state of '%s' was not stored: %s",
			c->name, bw_strerror(req->rc));
		if (c->vault.key_seq == k->seq && k->req.u.key.aes != NULL) {
			/* nothing was asked after it: RAM goes back (but a
			 * revocation holds in RAM whatever the store says) */
			c->has_pubkey = k->old.has_pubkey;
			memcpy(c->pubkey, k->old.pubkey, sizeof(c->pubkey));
			c->vault.has_aes = k->old.vault.has_aes;
			memcpy(c->vault.aes_key, k->old.vault.aes_key,
			       sizeof(c->vault.aes_key));
			c->vault.key_issued = k->old.vault.key_issued;
			c->vault.key_issued_ms = k->old.vault.key_issued_ms;
			c->vault.key_used = k->old.vault.key_used;
		}
	}
	if (k->done != NULL)
		k->done(k->arg, req->rc, c);
	bw_secure_free(k, sizeof(*k));
}

int
bw_registry_set_key(struct bw_registry *r, struct bw_client *c,
		    const uint8_t *pubkey, const uint8_t *aes_key,
		    int64_t issued, int used, bw_registry_fn done, void *arg)
{
	struct keyset *k = calloc(1, sizeof(*k));

	if (k == NULL)
		return BW_ENOMEM;
	k->r = r;
	k->c = c;
	k->old = *c;
	k->seq = ++c->vault.key_seq;
	k->done = done;
	k->arg = arg;
	/* a public key is the client's for good once a key wrapped for it is
	 * delivered: the 2102 must not outlive it (a power cut would leave
	 * the name without a key, and the client locked out of it) */
	bw_meta_req_init(&k->req, BW_META_CLIENT_KEY,
			 pubkey != NULL ? BW_META_DURABLE : 0, key_stored, k);
	memcpy(k->req.u.key.id, c->id, BW_ID_LEN);
	if (pubkey != NULL) {
		memcpy(k->pubkey, pubkey, BW_RSA_PUB_LEN);
		k->req.u.key.pubkey = k->pubkey;
		memcpy(c->pubkey, pubkey, BW_RSA_PUB_LEN);
		c->has_pubkey = 1;
	}
	if (aes_key != NULL) {
		memcpy(k->aes, aes_key, BW_AES_KEY_LEN);
		k->req.u.key.aes = k->aes;
		if (aes_key != c->vault.aes_key) /* never copied onto itself */
			memcpy(c->vault.aes_key, aes_key, BW_AES_KEY_LEN);
	} else {
		bw_wipe(c->vault.aes_key, sizeof(c->vault.aes_key));
	}
	k->req.u.key.issued = issued;
	k->req.u.key.used = used;
	k->req.u.key.last_seen = c->last_seen = bw_time_s();
	c->vault.has_aes = aes_key != NULL;
	if (c->vault.key_issued != issued)
		c->vault.key_issued_ms =
			0; /* the caller sets it for a new key */
	c->vault.key_issued = issued;
	c->vault.key_used = used;
	c->vault.key_failures = 0;
	bw_meta_submit(r->meta, &k->req);
	return 0;
}
