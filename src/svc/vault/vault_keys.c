/* The rules that keep a vault client's keys its own (the public key and
 * reconnect requests, 1026 and 1027, and what uploads do to a key): a used
 * public key is never replaced, each connection decrypts with the key it
 * was given, a key expires after --key-lifetime, and a key that fails to
 * decrypt is revoked. A new key is sent once the store has it.
 */
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/vault/vault_int.h"

void
vault_key_used(struct bw_vault *v, const uint8_t id[BW_ID_LEN])
{
	struct bw_client *cl = bw_registry_by_id(v->reg, id);
	int rc;

	if (cl == NULL || cl->vault.key_used)
		return;
	rc = bw_registry_set_key(v->reg, cl, NULL,
				 cl->vault.has_aes ? cl->vault.aes_key : NULL,
				 cl->vault.key_issued, 1, NULL, NULL);
	if (rc != 0)
		bw_warn("vault: could not record that '%s' used its key: %s",
			cl->name, bw_strerror(rc));
}

/* The key's failures reached the limit: it is revoked (in RAM even if
 * the store refuses); done (may be NULL) once the store has it: 1 if it
 * will be called. */
static int
revoke(struct bw_vault *v, uint64_t conn_id, struct bw_client *cl,
       bw_registry_fn done, void *arg)
{
	char name[BW_ESC_CAP];
	int rc;

	rc = bw_registry_set_key(v->reg, cl, NULL, NULL, 0, cl->vault.key_used,
				 done, arg);
	v->err_revoked++;
	bw_warn("c%llu '%s': AES key revoked after %u decryption failures%s",
		ULL(conn_id), bw_escape_display(cl->name, name, sizeof(name)),
		v->cfg.key_failures, rc != 0 ? " (in RAM only)" : "");
	if (rc != 0) {
		cl->vault.has_aes = 0;
		bw_wipe(cl->vault.aes_key, sizeof(cl->vault.aes_key));
	}
	return rc == 0 && done != NULL;
}

/* On a shared store the failures are counted in the client's row: through
 * whichever nodes they come, the key goes at the limit. The connection's
 * general error (2107) waits until the failure is counted (and a
 * revocation stored): a client's next request, on any node, meets the key
 * as it then is. */
struct kfail {
	struct bw_meta_req req;
	struct bw_vault *v;
	struct bw_conn *c;
	const char *why;
};

static void
kfail_end(struct kfail *k)
{
	if (!bw_conn_dead(k->c))
		(void)bw_frame_fail(k->c, k->why);
	bw_conn_release(k->c);
	bw_wipe(k, sizeof(*k));
	free(k);
}

static void
revoked(void *arg, int rc, struct bw_client *cl)
{
	(void)rc;
	(void)cl;
	kfail_end(arg);
}

static void
counted(struct bw_meta_req *req)
{
	struct kfail *k = (struct kfail *)req;
	struct bw_client *cl = bw_registry_by_id(k->v->reg, req->u.fail.id);

	if (req->rc == 0 && req->u.fail.count >= k->v->cfg.key_failures &&
	    cl != NULL && cl->vault.has_aes &&
	    bw_ct_equal(cl->vault.aes_key, req->u.fail.aes, BW_AES_KEY_LEN)) {
		if (revoke(k->v, k->c->id, cl, revoked, k))
			return;
	} else if (req->rc != 0) {
		bw_warn("vault: a decryption failure could not be counted: %s",
			bw_strerror(req->rc));
	}
	kfail_end(k);
}

int
vault_key_failed(struct bw_conn *c, struct bw_vault *v,
		 const uint8_t id[BW_ID_LEN], const uint8_t key[BW_AES_KEY_LEN],
		 const char *why)
{
	struct bw_client *cl = bw_registry_by_id(v->reg, id);

	v->err_decrypt++;
	if (cl != NULL) { /* whichever key it was: vault_commit.c */
		if (bw_now_ms() - cl->vault.undecryptable_ms >= SUSPECT_MS)
			cl->vault.undecryptable = 0;
		cl->vault.undecryptable++;
		cl->vault.undecryptable_ms = bw_now_ms();
	}
	if (VC(c)->has_key && bw_ct_equal(VC(c)->key, key, BW_AES_KEY_LEN)) {
		VC(c)->has_key = 0; /* this connection's key is spent */
		bw_wipe(VC(c)->key, sizeof(VC(c)->key));
	}
	if (cl == NULL || !cl->vault.has_aes ||
	    !bw_ct_equal(cl->vault.aes_key, key, BW_AES_KEY_LEN))
		return 0;
	if (bw_registry_others_write(v->reg)) {
		struct kfail *k = calloc(1, sizeof(*k));

		if (k != NULL) {
			k->v = v;
			k->c = c;
			k->why = why;
			bw_conn_hold(c);
			bw_meta_req_init(&k->req, BW_META_CLIENT_FAIL, 0,
					 counted, k);
			memcpy(k->req.u.fail.id, id, BW_ID_LEN);
			memcpy(k->req.u.fail.aes, key, BW_AES_KEY_LEN);
			bw_meta_submit(v->meta, &k->req);
			return 1;
		}
		/* no memory: counted here, as on one node */
	}
	if (++cl->vault.key_failures < v->cfg.key_failures)
		return 0;
	(void)revoke(v, c->id, cl, NULL, NULL);
	return 0;
}

/* A reply that waits for the store: the connection reads nothing more
 * until it is sent (vault_stored). */
void
vault_store_wait(struct bw_conn *c)
{
	VC(c)->st = V_STORE;
	bw_conn_hold(c);
	bw_frame_wait(c);
}

/* The store answered: 1 if c is still there to be replied to (then its
 * reply follows, and vault_stored_end); 0 if it went meanwhile (the hold
 * is dropped). */
int
vault_stored_begin(struct bw_conn *c)
{
	if (bw_conn_dead(c)) {
		bw_conn_release(c);
		return 0;
	}
	VC(c)->st = V_IDLE;
	return 1;
}

void
vault_stored_end(struct bw_conn *c)
{
	bw_frame_done(c);
	vault_release_and_resume(c);
}

struct key_reply {
	struct bw_conn *c;
	uint16_t req, code;
	int64_t issued;
	uint8_t aes[BW_AES_KEY_LEN];
	uint8_t out[BW_ID_LEN + BW_RSA_CT_LEN];
};

static void
key_stored(void *arg, int rc, struct bw_client *cl)
{
	struct key_reply *k = arg;
	struct bw_conn *c = k->c;
	struct vault_conn *vc;
	char name[BW_ESC_CAP], val[BW_ESC_CAP];

	if (vault_stored_begin(c)) {
		vc = VC(c);
		if (rc == 0 && cl != NULL) {
			vc->has_key = 1;
			memcpy(vc->key_id, cl->id, BW_ID_LEN);
			memcpy(vc->key, k->aes, sizeof(k->aes));
			vc->key_issued = k->issued;
			vc->key_issued_ms = cl->vault.key_issued_ms;
			bw_escape_display(cl->name, name, sizeof(name));
			bw_conn_event(c, BW_LOG_INFO, "key_sent",
				      "client=%s request=%u reply=%u",
				      bw_log_value(val, sizeof(val), name),
				      k->req, k->code);
			(void)bw_frame_reply(c, k->code, k->out,
					     sizeof(k->out));
		} else {
			(void)bw_frame_error(
				c, bw_strerror(rc != 0 ? rc : BW_ENOTFOUND));
		}
		vault_stored_end(c);
	}
	bw_secure_free(k, sizeof(*k));
}

/* --- parsed public keys ---------------------------------------------------
 *
 * A reconnect request (1027) wraps a fresh AES key for the public key on
 * record: parsing its DER (OpenSSL 3's decoders) cost more than the wrap
 * itself. Parsed keys are kept by their DER, RSA_CACHE_MAX of them (about
 * 1.8 KiB each with the encryption context a key keeps: at most 7 MiB);
 * when full, the cache starts again. A key is looked up by all its bytes,
 * so a replaced public key is never taken for the old one.
 */

#define RSA_CACHE_MAX 4096u

struct rsa_entry {
	uint8_t der[BW_RSA_PUB_LEN]; /* the hash's key */
	struct bw_rsa *rsa;
};

static int
rsa_entry_free(void *arg, void *val)
{
	struct rsa_entry *e = val;

	(void)arg;
	bw_rsa_free(e->rsa);
	free(e);
	return 0;
}

void
vault_rsa_cache_free(struct bw_vault *v)
{
	(void)bw_hash_each(&v->rsa_cache, rsa_entry_free, NULL);
	bw_hash_fini(&v->rsa_cache);
}

/* The parsed key of der (the cache's: never freed by the caller). */
static int
rsa_of(struct bw_vault *v, const uint8_t der[BW_RSA_PUB_LEN],
       const struct bw_rsa **out)
{
	struct rsa_entry *e = bw_hash_get(&v->rsa_cache, der, BW_RSA_PUB_LEN);
	int rc;

	if (e != NULL) {
		*out = e->rsa;
		return 0;
	}
	if ((e = calloc(1, sizeof(*e))) == NULL)
		return BW_ENOMEM;
	if ((rc = bw_rsa_from_spki(&e->rsa, der, BW_RSA_PUB_LEN)) != 0) {
		free(e);
		return rc;
	}
	memcpy(e->der, der, BW_RSA_PUB_LEN);
	if (v->rsa_cache.n >= RSA_CACHE_MAX) {
		vault_rsa_cache_free(v);
		if ((rc = bw_hash_init(&v->rsa_cache)) != 0) {
			rsa_entry_free(NULL, e);
			return rc;
		}
	}
	if (bw_hash_put(&v->rsa_cache, e->der, BW_RSA_PUB_LEN, e) != 0) {
		rsa_entry_free(NULL, e);
		return BW_ENOMEM;
	}
	*out = e->rsa;
	return 0;
}

/* Makes a fresh AES key for cl, records it (with pubkey if not NULL) and,
 * once the store has it, sends it wrapped with the client's public key in
 * a public key AES or reconnect AES reply (2102/2105). The connection keeps
 * it for its own uploads. */
static int
send_new_key(struct bw_conn *c, struct bw_frame_req *r, struct bw_client *cl,
	     const struct bw_rsa *rsa, const uint8_t *pubkey, uint16_t code,
	     int used)
{
	struct bw_vault *v = r->ctx;
	struct key_reply *k = calloc(1, sizeof(*k));
	int rc;

	if (k == NULL)
		return bw_frame_error(c, bw_strerror(BW_ENOMEM));
	k->c = c;
	k->req = r->hdr.code;
	k->code = code;
	k->issued = bw_time_s();
	memcpy(k->out, cl->id, BW_ID_LEN);
	if ((rc = bw_random(k->aes, sizeof(k->aes))) != 0 ||
	    (rc = bw_rsa_oaep_encrypt(rsa, k->aes, sizeof(k->aes),
				      k->out + BW_ID_LEN)) != 0 ||
	    (rc = bw_registry_set_key(v->reg, cl, pubkey, k->aes, k->issued,
				      used, key_stored, k)) != 0) {
		bw_secure_free(k, sizeof(*k));
		return bw_frame_error(c, bw_strerror(rc));
	}
	cl->vault.key_issued_ms = bw_now_ms();
	vault_store_wait(c);
	return 0;
}

/* Whether a key issued at wall-clock second issued (and, if it was
 * issued in this run, at monotonic ms issued_ms) is still within its
 * lifetime: its age is measured on the monotonic clock when it can be, so
 * a clock stepped back cannot lengthen it, and a key issued "in the
 * future" (by the wall clock, after a step back) is refused. */
static int
key_alive(const struct bw_vault *v, int64_t issued, uint64_t issued_ms)
{
	int64_t now = bw_time_s(), life = v->cfg.key_lifetime_s;

	if (life == 0)
		return 1;
	if (issued_ms != 0)
		return bw_now_ms() - issued_ms <= (uint64_t)life * 1000u;
	return issued <= now && now - issued <= life;
}

/* The one this connection was given, else the client's. */
const uint8_t *
vault_upload_key(struct bw_frame_req *r, const struct bw_client *cl,
		 const char **why)
{
	struct vault_conn *vc = r->state;
	const struct bw_vault *v = r->ctx;

	if (vc->has_key && memcmp(vc->key_id, cl->id, BW_ID_LEN) == 0) {
		if (key_alive(v, vc->key_issued, vc->key_issued_ms))
			return vc->key;
		*why = "the connection's AES key has expired";
		return NULL;
	}
	if (!cl->vault.has_aes) {
		*why = "no AES key (send 1026 or 1027 first)";
		return NULL;
	}
	if (!key_alive(v, cl->vault.key_issued, cl->vault.key_issued_ms)) {
		*why = "the AES key has expired or was issued in the future "
		       "(send 1027)";
		return NULL;
	}
	return cl->vault.aes_key;
}

/* A public key request (1026) replaces the public key only while no key
 * was ever delivered for it: a client whose public key request got a
 * general error (2107) may send a fresh key pair again, but once a public
 * key AES reply (2102), or a reconnect AES reply (2105), carried an AES key
 * wrapped for the key on record, the key is the client's and a stranger
 * who knows the id and name (both travel in clear) cannot take it. The
 * same key is always taken. */
int
vault_on_pubkey(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	char name[BW_NAME_CAP];
	const uint8_t *key;
	struct bw_client *cl;
	struct bw_rsa *rsa = NULL;
	int rc, same;

	if (bw_vault_pubkey_payload_decode(p, BW_NAME_FIELD + BW_RSA_PUB_LEN,
					   name, &key) != 0)
		return bw_frame_error(c, "malformed name");
	cl = vault_header_client(r);
	if (cl == NULL || strcmp(cl->name, name) != 0)
		return bw_frame_error(c, "header id and name are not one "
					 "client");
	same = cl->has_pubkey && memcmp(cl->pubkey, key, BW_RSA_PUB_LEN) == 0;
	if (cl->has_pubkey && cl->vault.key_used && !same)
		return bw_frame_error(c, "the public key on record is in use; "
					 "not replaced");
	if (bw_rsa_from_spki(&rsa, key, BW_RSA_PUB_LEN) != 0)
		return bw_frame_error(c, "not an RSA-1024 public key");
	/* the public key AES reply (2102) delivers a key wrapped for it:
	 * from now on the key is the client's (a stranger's public key
	 * request (1026) before the owner's first upload completes must not
	 * replace it) */
	rc = send_new_key(c, r, cl, rsa, key, BW_VAULT_RESP_PUBKEY_AES, 1);
	bw_rsa_free(rsa);
	return rc;
}

int
vault_on_reconnect(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	char name[BW_NAME_CAP], shown[BW_ESC_CAP], val[BW_ESC_CAP], w[64];
	struct bw_client *cl;
	const struct bw_rsa *rsa = NULL;
	const char *why = NULL;

	if (bw_vault_name_payload_decode(p, BW_NAME_FIELD, name) != 0)
		return bw_frame_error(c, "malformed name");
	cl = vault_header_client(r);
	if (cl == NULL)
		why = "unknown client id";
	else if (strcmp(cl->name, name) != 0)
		why = "name is not the id's";
	else if (!cl->has_pubkey)
		why = "no public key on record";
	else if (rsa_of(r->ctx, cl->pubkey, &rsa) != 0)
		why = "stored public key unusable";
	if (why != NULL) {
		bw_escape_display(name, shown, sizeof(shown));
		bw_conn_event(c, BW_LOG_INFO, "reconnect_refused",
			      "client=%s reason=%s",
			      bw_log_value(val, sizeof(val), shown),
			      bw_log_value(w, sizeof(w), why));
		return bw_frame_reply(c, BW_VAULT_RESP_RECONNECT_DENIED,
				      r->hdr.client_id, BW_ID_LEN);
	}
	return send_new_key(c, r, cl, rsa, NULL, BW_VAULT_RESP_RECONNECT_AES,
			    1);
}
