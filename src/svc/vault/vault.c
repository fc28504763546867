/* The file vault service (requests 1025-1031): its routing table, the
 * per-connection state, registration and verdicts, the start of a send file
 * request (1028), and the module's hooks (keys are vault_keys.c's).
 */
#include <stdlib.h>
#include <string.h>

#include "bulwark/cur.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/vault/vault_int.h"

/* --- keys --------------------------------------------------------------- */

/* The client the request's header names, touched; NULL if unknown. */
struct bw_client *
vault_header_client(struct bw_frame_req *r)
{
	return bw_registry_seen(((struct bw_vault *)r->ctx)->reg,
				r->hdr.client_id);
}

/* --- requests with a fixed payload -------------------------------------- */

/* The registered reply (2100) promises the client exists: it leaves once the
 * row is durable. */
static void
registered(void *arg, int rc, struct bw_client *cl)
{
	struct bw_conn *c = arg;
	char shown[BW_ESC_CAP], v[BW_ESC_CAP], hex[2 * BW_ID_LEN + 1];

	if (!vault_stored_begin(c))
		return;
	if (rc == 0 && cl != NULL) {
		bw_hex_encode(cl->id, BW_ID_LEN, hex);
		bw_escape_display(cl->name, shown, sizeof(shown));
		bw_conn_event(c, BW_LOG_INFO, "client_registered",
			      "service=vault client=%s id=%s",
			      bw_log_value(v, sizeof(v), shown), hex);
		(void)bw_frame_reply(c, BW_VAULT_RESP_REGISTERED, cl->id,
				     BW_ID_LEN);
	} else if (rc == BW_EEXIST) {
		bw_conn_event(c, BW_LOG_INFO, "register_refused",
			      "service=vault reason=name_taken");
		(void)bw_frame_reply(c, BW_VAULT_RESP_REG_FAILED, NULL, 0);
	} else {
		(void)bw_frame_error(c, bw_strerror(rc));
	}
	vault_stored_end(c);
}

/* On a TLS listener, the key the client proved (the admit hook checked
 * that a 160-byte field carries it) into field: registered with the name,
 * so that no one else's public key request (1026) can bind another before
 * the owner's. NULL on a plain listener (the seed's public key request
 * binds it). */
static const uint8_t *
proven_key(const struct bw_conn *c, uint8_t field[BW_RSA_PUB_LEN])
{
	const uint8_t *key;
	size_t len;

	if (!bw_conn_tls(c) || (key = bw_conn_peer_key(c, &len)) == NULL ||
	    len > BW_RSA_PUB_LEN)
		return NULL;
	memset(field, 0, BW_RSA_PUB_LEN);
	memcpy(field, key, len);
	return field;
}

static int
on_register(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	struct bw_vault *v = r->ctx;
	uint8_t pk[BW_RSA_PUB_LEN];
	char name[BW_NAME_CAP], shown[BW_ESC_CAP], val[BW_ESC_CAP];
	char w[256];
	const char *why;
	int rc;

	if (bw_vault_name_payload_decode(p, BW_NAME_FIELD, name) != 0)
		return bw_frame_error(c, "malformed name");
	if (!bw_utf8_valid(name))
		bw_conn_deviates(c, NULL, BW_DEV_NAME_NOT_UTF8);
	bw_log_value(val, sizeof(val),
		     bw_escape_display(name, shown, sizeof(shown)));
	if (bw_registry_admit(v->reg, c->addr, bw_now_ms(), &why) != 0) {
		bw_conn_event(c, BW_LOG_WARN, "register_refused",
			      "service=vault client=%s reason=%s", val,
			      bw_log_value(w, sizeof(w), why));
		return bw_frame_reply(c, BW_VAULT_RESP_ERROR, NULL, 0);
	}
	rc = bw_registry_add(v->reg, name, proven_key(c, pk), registered, c);
	if (rc == BW_EEXIST || rc == BW_EPROTO) {
		bw_conn_event(c, BW_LOG_INFO, "register_refused",
			      "service=vault client=%s reason=%s", val,
			      rc == BW_EEXIST ? "name_taken"
					      : "no_visible_character");
		return bw_frame_reply(c, BW_VAULT_RESP_REG_FAILED, NULL, 0);
	}
	if (rc != 0)
		return bw_frame_error(c, bw_strerror(rc));
	vault_store_wait(c);
	return 0;
}

static int
on_crc(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	uint16_t code = r->hdr.code;
	char name[BW_NAME_CAP];
	struct bw_client *cl;

	if (bw_vault_name_payload_decode(p, BW_NAME_FIELD, name) != 0)
		return code == BW_VAULT_REQ_CRC_RETRY
			       ? vault_no_reply(c)
			       : bw_frame_error(c, "malformed name");
	if ((cl = vault_header_client(r)) == NULL)
		return code == BW_VAULT_REQ_CRC_RETRY
			       ? vault_no_reply(c)
			       : bw_frame_error(c, "unknown client id");
	return vault_crc_request(c, r->ctx, code, cl, name);
}

/* --- the send file requests (1028, and 1106 on TLS) ---------------------- */

/* The fixed part of a send file request (1028) is in: check sizes and
 * capacity (a failure closes: the body is not worth reading), then identity
 * and key (a failure discards a small body and answers with a general error
 * (2107), keeping the connection). A clear one (1106, a Bulwark extension)
 * carries the file as it is, inside TLS: no AES key, no padding, served on
 * a TLS listener only, where the handshake proved the header's id. */
static int
file_request(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p,
	     int clear)
{
	struct vault_conn *vc = r->state;
	struct bw_vault *v = r->ctx;
	uint32_t content_size = bw_get_u32le(p);
	char name[BW_NAME_CAP];
	const uint8_t *key = NULL;
	struct bw_client *cl = NULL;
	const char *why = NULL;
	int rc, gone = 0;

	vc->v = v;
	bw_frame_body_rate(c, v->cfg.min_rate, v->cfg.window_ms);
	if ((uint64_t)r->hdr.payload_size !=
	    (uint64_t)BW_FILE_PREFIX_LEN + content_size)
		return bw_frame_fail(c, "payload size and content size "
					"disagree");
	if (clear && !bw_conn_tls(c))
		return bw_frame_fail(c, "served on a TLS listener only");
	if (clear ? content_size == 0
		  : content_size == 0 || content_size % BW_AES_BLOCK != 0)
		return bw_frame_fail(c, clear ? "content size is zero"
					      : "content size is not a "
						"positive multiple of 16");
	if (content_size > v->cfg.max_file_size)
		return bw_frame_fail(c, "file over the size limit");
	v->slots.max = v->cfg.max_uploads;
	v->slots.per_addr = v->cfg.max_uploads_per_addr;
	v->slots.min_rate = v->cfg.min_rate;
	if (bw_engine_stopping(c->eng) && !vc->awaiting)
		return bw_frame_fail(c, "shutting down");
	if (bw_vault_file_prefix_decode(p, BW_FILE_PREFIX_LEN, &content_size,
					name) != 0)
		why = "malformed file name";
	else if ((cl = vault_header_client(r)) == NULL)
		why = "unknown client id";
	else if (!clear && (key = vault_upload_key(r, cl, &why)) == NULL)
		/* it needs a reconnect request (1027): closing tells a client
		 * to get a fresh key instead of resending with the dead one */
		gone = cl->has_pubkey;
	else if ((rc = vault_upload_start(c, v, cl, key, p, content_size, name,
					  &why)) == BW_EBUSY)
		return bw_frame_fail(c, why); /* no slot: not worth reading */
	else if (rc != 0)
		why = rc == BW_EPROTO ? "file name has no usable base name"
				      : bw_strerror(rc);
	if (why == NULL) {
		vc->st = V_BODY;
		c->want = vc->up->chunk;
		bw_frame_stream(c);
		return 0;
	}
	if (gone)
		return bw_frame_fail(c, why);
	/* a body read to be discarded holds a slot too */
	return bw_frame_discard(c, content_size, &v->slots, &v->swallowing,
				why);
}

static int
on_file(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	return file_request(c, r, p, 0);
}

static int
on_file_clear(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	return file_request(c, r, p, 1);
}

static int
on_file_body(struct bw_conn *c, struct bw_frame_req *r)
{
	struct vault_conn *vc = r->state;

	/* its rate, for a newcomer that needs a slot: what has arrived,
	 * decrypted or not */
	bw_slot_progress(&vc->up->slot, vc->up->left > c->in.len
						? vc->up->left - c->in.len
						: 0);
	return vault_body_step(c);
}

/* --- the table ---------------------------------------------------------- */

static void
vault_conn_close(struct bw_conn *c, void *ctx, void *state)
{
	struct vault_conn *vc = state;

	(void)ctx;
	if (vc->up != NULL) {
		if (bw_conn_peer_shut(c) && vc->v != NULL)
			vc->v->uploads_cut++;
		vault_upload_abort(c, bw_conn_peer_shut(c)
					      ? "the client closed its "
						"connection"
					      : "connection closed");
	}
	vault_owes_release(vc->v, vc, c);
	vault_get_closed(vc);
	if (vc->op != NULL)
		vault_crc_closed(vc->op); /* its wait, if any, ends now */
	vc->op = NULL; /* the op holds c and sees it dead when it runs */
	bw_wipe(vc->key, sizeof(vc->key));
}

static void
vault_conn_drained(struct bw_conn *c, void *ctx, void *state)
{
	(void)ctx;
	vault_get_drained(c, state);
}

/* A session that got its file OK reply (2103) owes a CRC verdict
 * (1029/1030/1031): while stopping, it is waited for. */
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
	const struct vfile *f = val;

	if (f->acked_s >= a->since_s && (!f->verified || f->pending_path[0]))
		a->found = 1;
	return a->found;
}

/* While stopping, the listener stays open as long as an upload is in
 * progress or some upload answered with a file OK reply (2103) recently
 * still owes its CRC ok (1029): course-sample clients send it on a new
 * connection. */
static int
vault_draining(void *ctx)
{
	const struct bw_vault *v = ctx;
	struct awaiting_scan a = {0, 0};
	uint64_t recent = v->cfg.window_ms / 1000u;

	/* an upload still arriving will answer with a file OK reply (2103),
	 * and its client may send the CRC ok (1029) on a new connection */
	if (v->uploads_active > 0)
		return 1;
	a.since_s = (uint64_t)bw_time_s() > recent
			    ? (uint64_t)bw_time_s() - recent
			    : 0;
	(void)vfile_each(v, find_awaiting, &a);
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
	emit(arg, "vault_uploads_cut_total",
	     "uploads whose client closed its connection before the whole "
	     "body came",
	     v->uploads_cut);
}

/* What the console's STAT shows among the daemon's own figures, and the
 * metrics as gauges of their own. */
static void
vault_summary(const void *inst, bw_stat_emit emit, void *arg)
{
	const struct bw_vault *v = inst;

	emit(arg, "files",
	     "Stored files this node has loaded or served (on a shared "
	     "store, bulwark_cluster_files counts every node's).",
	     v->files_n);
	emit(arg, "stored_bytes",
	     "Plaintext bytes of those files (this node's view, as "
	     "bulwark_files).",
	     v->bytes_stored);
}

struct file_walk {
	const struct bw_vault *v;
	bw_file_fn fn;
	void *arg;
};

static int
show_file(void *arg, void *val)
{
	const struct file_walk *w = arg;
	const struct vfile *f = val;
	const struct bw_client *cl = bw_registry_by_id(w->v->reg, f->owner);
	struct bw_file_view fv = {cl != NULL ? cl->name : "?", f->file_name,
				  f->size, f->verified};

	return w->fn(w->arg, &fv);
}

static uint64_t
vault_each_file(const void *inst, bw_file_fn fn, void *arg)
{
	const struct bw_vault *v = inst;
	struct file_walk w = {v, fn, arg};

	(void)vfile_each(v, show_file, &w);
	return v->files_n;
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

/* The limits request (1104): what this server takes, so that a client
 * refused can say why (the seed's general error, 2107, says nothing). Anyone
 * may ask, on any listener. */
static int
on_limits(struct bw_conn *c, struct bw_frame_req *r, const uint8_t *p)
{
	struct bw_vault *v = r->ctx;
	uint8_t out[BW_VAULT_LIMITS_FEATURES_LEN];

	(void)p;
	bw_put_u64le(out, v->cfg.max_file_size);
	bw_put_u32le(out + 8, bw_conn_tls(c) ? BW_VAULT_FEATURE_CLEAR : 0);
	return bw_frame_reply(c, BW_VAULT_RESP_LIMITS, out, sizeof(out));
}

static const struct bw_frame_route routes[] = {
	NAME_ROUTE(BW_VAULT_REQ_REGISTER, 0, on_register),
	{BW_VAULT_REQ_PUBKEY, 0, BW_NAME_FIELD + BW_RSA_PUB_LEN,
	 BW_NAME_FIELD + BW_RSA_PUB_LEN, BW_NAME_FIELD + BW_RSA_PUB_LEN,
	 vault_on_pubkey, NULL, NULL},
	NAME_ROUTE(BW_VAULT_REQ_RECONNECT, 0, vault_on_reconnect),
	/* content_size is at least 16, and at most what fits the u32 */
	{BW_VAULT_REQ_SEND_FILE, 0, BW_FILE_PREFIX_LEN,
	 BW_FILE_PREFIX_LEN + BW_MAX_CONTENT_SIZE, BW_FILE_PREFIX_LEN, on_file,
	 on_file_body, NULL},
	NAME_ROUTE(BW_VAULT_REQ_CRC_OK, BW_ROUTE_DURING_DRAIN, on_crc),
	NAME_ROUTE(BW_VAULT_REQ_CRC_RETRY, BW_ROUTE_DURING_DRAIN, on_crc),
	NAME_ROUTE(BW_VAULT_REQ_CRC_FAIL, BW_ROUTE_DURING_DRAIN, on_crc),
	/* the extensions (vault_ext.c) */
	{BW_VAULT_REQ_LIST, 0, 0, 0, 0, vault_on_list, NULL, NULL},
	{BW_VAULT_REQ_GET, 0, BW_VAULT_GET_LEN, BW_VAULT_GET_LEN,
	 BW_VAULT_GET_LEN, vault_on_get, NULL, NULL},
	NAME_ROUTE(BW_VAULT_REQ_DELETE, 0, vault_on_delete),
	{BW_VAULT_REQ_TLS_ONLY, 0, 0, 0, 0, vault_on_tls_only, NULL, NULL},
	{BW_VAULT_REQ_LIMITS, BW_ROUTE_DURING_DRAIN, 0, 0, 0, on_limits, NULL,
	 NULL},
	{BW_VAULT_REQ_LIST_AFTER, 0, BW_VAULT_LIST_AFTER_LEN,
	 BW_VAULT_LIST_AFTER_LEN, BW_VAULT_LIST_AFTER_LEN, vault_on_list_after,
	 NULL, NULL},
	{BW_VAULT_REQ_SEND_CLEAR, 0, BW_FILE_PREFIX_LEN,
	 BW_FILE_PREFIX_LEN + BW_MAX_CONTENT_SIZE, BW_FILE_PREFIX_LEN,
	 on_file_clear, on_file_body, NULL},
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
	.on_drained = vault_conn_drained,
	.busy = vault_conn_busy,
	.draining = vault_draining,
	.sessions = 1,
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
	.summary = vault_summary,
	.each_file = vault_each_file,
	.proto = &bw_vault_proto,
	.refresh = vault_refresh,
};
