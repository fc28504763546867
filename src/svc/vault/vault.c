/* The file vault service (requests 1025-1031): the per-connection state
 * machine, the fixed-size requests, and the rules that keep a client's keys
 * its own: a used public key is never replaced, each connection decrypts
 * with the key it was given, and a key that fails to decrypt is revoked.
 */
#include <stdlib.h>
#include <string.h>

#include "bulwark/cur.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/vault/vault_int.h"

/* --- keys --------------------------------------------------------------- */

static struct bw_client *
header_client(struct bw_frame_req *r)
{
	struct bw_vault *v = r->ctx;
	struct bw_client *cl = bw_registry_by_id(v->reg, r->hdr.client_id);

	if (cl != NULL)
		bw_registry_touch(v->reg, cl);
	return cl;
}

void
vault_key_used(struct bw_vault *v, const uint8_t id[BW_ID_LEN])
{
	struct bw_client *cl = bw_registry_by_id(v->reg, id);
	int rc;

	if (cl == NULL || cl->key_used)
		return;
	rc = bw_registry_set_key(v->reg, cl, NULL,
				 cl->has_aes ? cl->aes_key : NULL,
				 cl->key_issued, 1);
	if (rc != 0)
		bw_warn("vault: could not record that '%s' used its key: %s",
			cl->name, bw_strerror(rc));
}

void
vault_key_failed(struct bw_conn *c, struct bw_vault *v,
		 const uint8_t id[BW_ID_LEN], const uint8_t key[BW_AES_KEY_LEN])
{
	struct bw_client *cl = bw_registry_by_id(v->reg, id);
	char name[BW_ESC_CAP];
	int rc;

	v->err_decrypt++;
	if (VC(c)->has_key && bw_ct_equal(VC(c)->key, key, BW_AES_KEY_LEN)) {
		VC(c)->has_key = 0; /* this connection's key is spent */
		bw_wipe(VC(c)->key, sizeof(VC(c)->key));
	}
	if (cl == NULL || !cl->has_aes ||
	    !bw_ct_equal(cl->aes_key, key, BW_AES_KEY_LEN))
		return;
	if (++cl->key_failures < v->cfg.key_failures)
		return;
	rc = bw_registry_set_key(v->reg, cl, NULL, NULL, 0, cl->key_used);
	v->err_revoked++;
	bw_warn("c%llu '%s': AES key revoked after %u decryption failures%s",
		ULL(c->id), bw_escape_display(cl->name, name, sizeof(name)),
		v->cfg.key_failures, rc != 0 ? " (in RAM only)" : "");
	if (rc != 0) {
		cl->has_aes = 0;
		bw_wipe(cl->aes_key, sizeof(cl->aes_key));
	}
}

/* Makes a fresh AES key for cl, records it (with pubkey if not NULL) and
 * sends it wrapped with the client's public key in a 2102/2105. The
 * connection keeps it for its own uploads. */
static int
send_new_key(struct bw_conn *c, struct bw_frame_req *r, struct bw_client *cl,
	     struct bw_rsa *rsa, const uint8_t *pubkey, uint16_t code, int used)
{
	struct vault_conn *vc = r->state;
	struct bw_vault *v = r->ctx;
	uint8_t aes[BW_AES_KEY_LEN], out[BW_ID_LEN + BW_RSA_CT_LEN];
	char name[BW_ESC_CAP];
	int64_t now = bw_time_s();
	int rc;

	if ((rc = bw_random(aes, sizeof(aes))) != 0 ||
	    (rc = bw_rsa_oaep_encrypt(rsa, aes, sizeof(aes),
				      out + BW_ID_LEN)) != 0 ||
	    (rc = bw_registry_set_key(v->reg, cl, pubkey, aes, now, used)) !=
		    0) {
		bw_wipe(aes, sizeof(aes));
		return bw_frame_error(c, bw_strerror(rc));
	}
	vc->has_key = 1;
	memcpy(vc->key_id, cl->id, BW_ID_LEN);
	memcpy(vc->key, aes, sizeof(aes));
	vc->key_issued = now;
	vc->key_issued_ms = cl->key_issued_ms = bw_now_ms();
	bw_wipe(aes, sizeof(aes));
	memcpy(out, cl->id, BW_ID_LEN);
	bw_info("c%llu %u '%s' -> %u: new AES key sent", ULL(c->id),
		r->hdr.code, bw_escape_display(cl->name, name, sizeof(name)),
		code);
	return bw_frame_reply(c, code, out, sizeof(out));
}

/* The key a 1028 from cl on c decrypts with: the one this connection was
 * given, else the client's; NULL (with *why) if there is none usable. */
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

static const uint8_t *
upload_key(struct bw_frame_req *r, const struct bw_client *cl, const char **why)
{
	struct vault_conn *vc = r->state;
	const struct bw_vault *v = r->ctx;

	if (vc->has_key && memcmp(vc->key_id, cl->id, BW_ID_LEN) == 0) {
		if (key_alive(v, vc->key_issued, vc->key_issued_ms))
			return vc->key;
		*why = "the connection's AES key has expired";
		return NULL;
	}
	if (!cl->has_aes) {
		*why = "no AES key (send 1026 or 1027 first)";
		return NULL;
	}
	if (!key_alive(v, cl->key_issued, cl->key_issued_ms)) {
		*why = "the AES key has expired or was issued in the future "
		       "(send 1027)";
		return NULL;
	}
	return cl->aes_key;
}

/* --- requests with a fixed payload -------------------------------------- */

static int
on_register(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	struct bw_vault *v = r->ctx;
	char name[BW_NAME_CAP], shown[BW_ESC_CAP], hex[2 * BW_ID_LEN + 1];
	struct bw_client *cl;
	const char *why;
	int rc;

	if (bw_vault_name_payload_decode(p, BW_NAME_FIELD, name) != 0)
		return bw_frame_error(c, "malformed name");
	bw_escape_display(name, shown, sizeof(shown));
	if (bw_registry_admit(v->reg, c->addr, bw_now_ms(), &why) != 0) {
		bw_warn("c%llu 1025 registration of '%s' from %s refused: %s",
			ULL(c->id), shown, c->peer, why);
		return bw_frame_reply(c, BW_VAULT_RESP_ERROR, NULL, 0);
	}
	rc = bw_registry_add(v->reg, name, NULL, &cl);
	if (rc == BW_EEXIST) {
		bw_info("c%llu 1025 register '%s' -> 2101: name taken",
			ULL(c->id), shown);
		return bw_frame_reply(c, BW_VAULT_RESP_REG_FAILED, NULL, 0);
	}
	if (rc != 0)
		return bw_frame_error(c, bw_strerror(rc));
	bw_hex_encode(cl->id, BW_ID_LEN, hex);
	bw_info("c%llu 1025 register '%s' -> 2100 id %s", ULL(c->id), shown,
		hex);
	return bw_frame_reply(c, BW_VAULT_RESP_REGISTERED, cl->id, BW_ID_LEN);
}

/* A 1026 replaces the public key only while no key was ever delivered
 * for it: a client whose 1026 got 2107 may send a fresh key pair again,
 * but once a 2102 (or a 2105) carried an AES key wrapped for the key on
 * record, the key is the client's and a stranger who knows the id and name
 * (both travel in clear) cannot take it. The same key is always taken. */
static int
on_pubkey(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	char name[BW_NAME_CAP];
	const uint8_t *key;
	struct bw_client *cl;
	struct bw_rsa *rsa = NULL;
	int rc, same;

	if (bw_vault_pubkey_payload_decode(p, BW_NAME_FIELD + BW_RSA_PUB_LEN,
					   name, &key) != 0)
		return bw_frame_error(c, "malformed name");
	cl = header_client(r);
	if (cl == NULL || strcmp(cl->name, name) != 0)
		return bw_frame_error(c, "header id and name are not one "
					 "client");
	same = cl->has_pubkey && memcmp(cl->pubkey, key, BW_RSA_PUB_LEN) == 0;
	if (cl->has_pubkey && cl->key_used && !same)
		return bw_frame_error(c, "the public key on record is in use; "
					 "not replaced");
	if (bw_rsa_from_spki(&rsa, key, BW_RSA_PUB_LEN) != 0)
		return bw_frame_error(c, "not an RSA-1024 public key");
	/* the 2102 delivers a key wrapped for it: from now on the key is
	 * the client's (a stranger's 1026 before the owner's first upload
	 * completes must not replace it) */
	rc = send_new_key(c, r, cl, rsa, key, BW_VAULT_RESP_PUBKEY_AES, 1);
	bw_rsa_free(rsa);
	return rc;
}

static int
on_reconnect(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	char name[BW_NAME_CAP], shown[BW_ESC_CAP];
	struct bw_client *cl;
	struct bw_rsa *rsa = NULL;
	const char *why = NULL;
	int rc;

	if (bw_vault_name_payload_decode(p, BW_NAME_FIELD, name) != 0)
		return bw_frame_error(c, "malformed name");
	cl = header_client(r);
	if (cl == NULL)
		why = "unknown client id";
	else if (strcmp(cl->name, name) != 0)
		why = "name is not the id's";
	else if (!cl->has_pubkey)
		why = "no public key on record";
	else if (bw_rsa_from_spki(&rsa, cl->pubkey, BW_RSA_PUB_LEN) != 0)
		why = "stored public key unusable";
	if (why != NULL) {
		bw_info("c%llu 1027 '%s' -> 2106: %s", ULL(c->id),
			bw_escape_display(name, shown, sizeof(shown)), why);
		return bw_frame_reply(c, BW_VAULT_RESP_RECONNECT_DENIED,
				      r->hdr.client_id, BW_ID_LEN);
	}
	rc = send_new_key(c, r, cl, rsa, NULL, BW_VAULT_RESP_RECONNECT_AES, 1);
	bw_rsa_free(rsa);
	return rc;
}

static int
on_crc(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	uint16_t code = r->hdr.code;
	char name[BW_NAME_CAP];
	struct bw_client *cl;

	if (bw_vault_name_payload_decode(p, BW_NAME_FIELD, name) != 0)
		return code == BW_VAULT_REQ_CRC_RETRY
			       ? 0
			       : bw_frame_error(c, "malformed name");
	if ((cl = header_client(r)) == NULL)
		return code == BW_VAULT_REQ_CRC_RETRY
			       ? 0
			       : bw_frame_error(c, "unknown client id");
	return vault_crc_request(c, r->ctx, code, cl, name);
}

/* --- the 1028 ----------------------------------------------------------- */

/* A newcomer needs the slot of this discarded body, which trickles. */
static void
evict_swallow(struct bw_slot *s)
{
	struct bw_conn *c = s->c;
	struct vault_conn *vc = VC(c);

	vault_swallow_end(vc->v, vc);
	vc->st = V_IDLE;
	(void)bw_frame_fail(c, "refused body too slow for a busy server");
}

/* The fixed part of a 1028 is in: check sizes and capacity (a failure
 * closes: the body is not worth reading), then identity and key (a failure
 * discards a small body and answers 2107, keeping the connection). */
static int
on_file(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	struct vault_conn *vc = r->state;
	struct bw_vault *v = r->ctx;
	uint32_t content_size = bw_get_u32le(p);
	char name[BW_NAME_CAP];
	const uint8_t *key = NULL;
	struct bw_client *cl = NULL;
	const char *why = NULL, *slot_why = NULL;
	int rc, gone = 0;

	vc->v = v;
	vc->body_size = content_size;
	vc->win_start_ms = bw_now_ms();
	vc->win_left = content_size;
	if ((uint64_t)r->hdr.payload_size !=
	    (uint64_t)BW_FILE_PREFIX_LEN + content_size)
		return bw_frame_fail(c, "payload size and content size "
					"disagree");
	if (content_size == 0 || content_size % BW_AES_BLOCK != 0)
		return bw_frame_fail(c, "content size is not a positive "
					"multiple of 16");
	if (content_size > v->cfg.max_file_size)
		return bw_frame_fail(c, "file over the size limit");
	v->slots.max = v->cfg.max_uploads;
	v->slots.per_addr = v->cfg.max_uploads_per_addr;
	v->slots.window_ms = v->cfg.window_ms;
	if (bw_engine_stopping(c->eng) && !vc->awaiting)
		return bw_frame_fail(c, "shutting down");
	if (bw_vault_file_prefix_decode(p, BW_FILE_PREFIX_LEN, &content_size,
					name) != 0)
		why = "malformed file name";
	else if ((cl = header_client(r)) == NULL)
		why = "unknown client id";
	else if ((key = upload_key(r, cl, &why)) == NULL)
		/* it needs a 1027: closing tells a client to get a fresh key
		 * instead of resending with the dead one */
		gone = cl->has_pubkey;
	else if ((rc = vault_upload_start(c, v, cl, key, p, content_size, name,
					  &why)) == BW_EBUSY)
		return bw_frame_fail(c, why); /* no slot: not worth reading */
	else if (rc != 0)
		why = rc == BW_EPROTO  ? "file name has no usable base name"
		      : rc == -ELOOP   ? "the client's directory is a link"
		      : rc == -ENOTDIR ? "the client's directory is a link"
				       : bw_strerror(rc);
	if (why == NULL) {
		vc->st = V_BODY;
		c->want = vc->up->chunk;
		bw_frame_stream(c);
		return 0;
	}
	if (content_size > SWALLOW_MAX || gone)
		return bw_frame_fail(c, why);
	/* a body read to be discarded holds a slot too */
	if (bw_slots_take(&v->slots, &vc->swallow_slot, c, content_size,
			  evict_swallow, &slot_why) != 0)
		return bw_frame_fail(c, slot_why);
	bw_info("c%llu 1028 refused, discarding %u bytes: %s", ULL(c->id),
		content_size, why);
	vc->st = V_SWALLOW;
	vc->swallow_left = content_size;
	v->swallowing++;
	c->want = SWALLOW_WANT;
	bw_frame_stream(c);
	return 0;
}

/* Each window of --timeout seconds must bring --min-rate bytes a second of
 * the body: a peer trickling just enough to stay alive, after a fast start
 * or not, cannot hold an upload slot. Time the server itself spent not
 * reading (waiting for the disk) restarts the window. */
static int
body_too_slow(struct bw_conn *c, struct vault_conn *vc,
	      const struct bw_vault *v)
{
	uint64_t now = bw_now_ms(), elapsed = now - vc->win_start_ms, left;

	if (v->cfg.min_rate == 0 || elapsed < v->cfg.window_ms)
		return 0;
	left = vc->st == V_BODY ? vc->up->left : vc->swallow_left;
	left = left > c->in.len ? left - c->in.len : 0;
	if ((vc->win_left - left) * 1000u < (uint64_t)v->cfg.min_rate * elapsed)
		return 1;
	vc->win_start_ms = now;
	vc->win_left = left;
	return 0;
}

static int
on_file_body(struct bw_conn *c, struct bw_frame_req *r)
{
	struct vault_conn *vc = r->state;
	struct bw_vault *v = r->ctx;

	if (body_too_slow(c, vc, v)) {
		bw_info("c%llu 1028 body slower than %u bytes/s", ULL(c->id),
			v->cfg.min_rate);
		return BW_ETIMEDOUT;
	}
	/* its rate, for a newcomer that needs a slot: what has arrived,
	 * decrypted or not */
	if (vc->st == V_BODY)
		bw_slot_progress(&vc->up->slot,
				 vc->up->left > c->in.len
					 ? vc->up->left - c->in.len
					 : 0);
	return vc->st == V_BODY ? vault_body_step(c)
				: vault_swallow_step(c, r->ctx);
}

void
vault_resume(struct bw_conn *c)
{
	struct vault_conn *vc = VC(c);

	if (vc == NULL)
		return;
	if (vc->st == V_BODY || vc->st == V_SWALLOW) {
		vc->win_start_ms = bw_now_ms();
		vc->win_left =
			vc->st == V_BODY ? vc->up->left : vc->swallow_left;
		vc->win_left =
			vc->win_left > c->in.len ? vc->win_left - c->in.len : 0;
	}
	bw_frame_kick(c);
}

/* --- the table ---------------------------------------------------------- */

static void
vault_conn_close(struct bw_conn *c, void *ctx, void *state)
{
	struct vault_conn *vc = state;
	struct bw_vault *v = ctx;

	if (vc->up != NULL)
		vault_upload_abort(c, "connection closed");
	vc->op = NULL; /* the op holds c and sees it dead when it runs */
	vault_swallow_end(v, vc);
	bw_wipe(vc->key, sizeof(vc->key));
}

/* A session that got its 2103 owes a 1029/1030/1031: while stopping, it
 * is waited for. */
static int
vault_conn_busy(const struct bw_conn *c, const void *state)
{
	const struct vault_conn *vc = state;

	(void)c;
	return vc->awaiting || vc->st != V_IDLE;
}

struct awaiting_scan {
	uint64_t since_s;
	int found;
};

static int
find_awaiting(void *arg, void *val)
{
	struct awaiting_scan *a = arg;
	const struct bw_file *f = val;

	if (f->acked_s >= a->since_s && (!f->verified || f->pending_path[0]))
		a->found = 1;
	return a->found;
}

/* While stopping, the listener stays open as long as an upload is in
 * progress or some upload answered 2103 recently still owes its 1029:
 * course-sample clients send it on a new connection. */
static int
vault_draining(void *ctx)
{
	const struct bw_vault *v = ctx;
	struct awaiting_scan a = {0, 0};
	uint64_t recent = v->cfg.window_ms / 1000u;

	/* an upload still arriving will answer 2103, and its client may
	 * send the 1029 on a new connection */
	if (v->uploads_active > 0)
		return 1;
	a.since_s = (uint64_t)bw_time_s() > recent
			    ? (uint64_t)bw_time_s() - recent
			    : 0;
	(void)bw_registry_each_file(v->reg, find_awaiting, &a);
	return a.found;
}

static void
vault_stats(const void *inst, bw_stat_emit emit, void *arg)
{
	const struct bw_vault *v = inst;

	emit(arg, "vault_uploads_active", "uploads in progress",
	     v->uploads_active);
	emit(arg, "vault_upload_bytes_active",
	     "bytes received by uploads in progress", v->upload_bytes_active);
	emit(arg, "vault_refused_bodies", "refused uploads being discarded",
	     v->swallowing);
	emit(arg, "vault_uploads_total", "uploads stored since start",
	     v->stored_n);
	emit(arg, "vault_upload_bytes_total",
	     "bytes stored by uploads since start", v->stored_bytes);
}

static void
vault_errors(const void *inst, bw_stat_emit emit, void *arg)
{
	const struct bw_vault *v = inst;

	emit(arg, "vault_decrypt", "uploads that did not decrypt",
	     v->err_decrypt);
	emit(arg, "vault_key_revoked", "AES keys revoked after failures",
	     v->err_revoked);
	emit(arg, "vault_store", "uploads that could not be stored",
	     v->err_store);
}

#define NAME_ROUTE(code, flags, fn)                                            \
	{                                                                      \
		(code), (flags), BW_NAME_FIELD, BW_NAME_FIELD, BW_NAME_FIELD,  \
			(fn), NULL, NULL                                       \
	}

static const struct bw_frame_route routes[] = {
	NAME_ROUTE(BW_VAULT_REQ_REGISTER, 0, on_register),
	{BW_VAULT_REQ_PUBKEY, 0, BW_NAME_FIELD + BW_RSA_PUB_LEN,
	 BW_NAME_FIELD + BW_RSA_PUB_LEN, BW_NAME_FIELD + BW_RSA_PUB_LEN,
	 on_pubkey, NULL, NULL},
	NAME_ROUTE(BW_VAULT_REQ_RECONNECT, 0, on_reconnect),
	/* content_size is at least 16, and at most what fits the u32 */
	{BW_VAULT_REQ_SEND_FILE, 0, BW_FILE_PREFIX_LEN,
	 BW_FILE_PREFIX_LEN + BW_MAX_CONTENT_SIZE, BW_FILE_PREFIX_LEN, on_file,
	 on_file_body, NULL},
	NAME_ROUTE(BW_VAULT_REQ_CRC_OK, BW_ROUTE_DURING_DRAIN, on_crc),
	NAME_ROUTE(BW_VAULT_REQ_CRC_RETRY, BW_ROUTE_DURING_DRAIN, on_crc),
	NAME_ROUTE(BW_VAULT_REQ_CRC_FAIL, BW_ROUTE_DURING_DRAIN, on_crc),
};

/* A registration refused (name taken) and a reconnection denied. */
static const uint16_t refusals[] = {BW_VAULT_RESP_REG_FAILED,
				    BW_VAULT_RESP_RECONNECT_DENIED};

const struct bw_frame_proto bw_vault_proto = {
	.name = "vault",
	.version = BW_VAULT_VERSION,
	.err_code = BW_VAULT_RESP_ERROR,
	.refusals = refusals,
	.refusals_n = sizeof(refusals) / sizeof(refusals[0]),
	.code_lo = 1000,
	.code_hi = 1999,
	.routes = routes,
	.routes_n = sizeof(routes) / sizeof(routes[0]),
	.state_size = sizeof(struct vault_conn),
	.on_close = vault_conn_close,
	.busy = vault_conn_busy,
	.draining = vault_draining,
};

static void
vault_reload(void *inst, const void *cfg)
{
	struct bw_vault *v = inst;

	v->cfg = *(const struct bw_vault_cfg *)cfg; /* read per request */
}

const struct bw_module bw_vault_module = {
	.name = "vault",
	.init = vault_open,
	.fini = vault_close,
	.reload = vault_reload,
	.stats = vault_stats,
	.errors = vault_errors,
	.proto = &bw_vault_proto,
};
