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

#define ERRORS_LOGGED 10 /* 2107 lines logged per connection */

/* --- replies ------------------------------------------------------------ */

int
vault_reply(struct bw_conn *c, uint16_t code, const void *payload, size_t len)
{
	uint8_t msg[BW_PAD_UNIT];
	struct bw_resp_hdr h = {BW_VAULT_VERSION, code, (uint32_t)len};
	size_t total = BW_RESP_HDR_LEN + len;
	int rc;

	/* every vault reply fits one pad unit */
	if (total > sizeof(msg))
		return BW_ETOOBIG;
	bw_resp_hdr_encode(&h, msg);
	if (len > 0)
		memcpy(msg + BW_RESP_HDR_LEN, payload, len);
	if (VC(c)->padded) {
		memset(msg + total, 0, sizeof(msg) - total);
		total = sizeof(msg);
	}
	rc = bw_conn_send(c, msg, total);
	bw_wipe(msg, sizeof(msg));
	if (rc == 0 && VC(c)->padded)
		bw_conn_finish(c);
	return rc;
}

int
vault_reply_error(struct bw_conn *c, const char *why)
{
	struct vault_conn *vc = VC(c);

	if (vc->errors_logged < ERRORS_LOGGED) {
		vc->errors_logged++;
		bw_info("c%llu %u -> 2107: %s", ULL(c->id), vc->hdr.code, why);
	} else {
		vc->errors_dropped++;
	}
	return vault_reply(c, BW_VAULT_RESP_ERROR, NULL, 0);
}

/* A framing error: the stream cannot be trusted any more. */
int
vault_reply_error_close(struct bw_conn *c, const char *why)
{
	int rc = vault_reply_error(c, why);

	bw_conn_finish(c);
	return rc;
}

int
vault_padding(const struct bw_conn *c, size_t skip, uint64_t req_len)
{
	const uint8_t *p = bw_buf_head(&c->in);
	size_t i, n;

	if (c->in.len <= skip)
		return 0;
	n = c->in.len - skip;
	for (i = skip; i < c->in.len; i++) {
		if (p[i] != 0)
			return 0;
	}
	/* A header of zeros (code 0) is no request, and zeros that end the
	 * request exactly on a pad unit are what a padding client sends. Fewer
	 * zeros may be the start of a pipelined 1025 (its id is zeros). */
	if (n >= BW_REQ_HDR_LEN || (req_len + n) % BW_PAD_UNIT == 0 ||
	    (c->flags & BW_CONN_CLOSING))
		return 1;
	return -1;
}

/* --- keys --------------------------------------------------------------- */

static struct bw_client *
header_client(struct bw_conn *c)
{
	struct bw_client *cl =
		bw_registry_by_id(&c->srv->reg, VC(c)->hdr.client_id);

	if (cl != NULL)
		bw_registry_touch(&c->srv->reg, cl);
	return cl;
}

void
vault_key_used(struct bw_server *s, const uint8_t id[BW_ID_LEN])
{
	struct bw_client *cl = bw_registry_by_id(&s->reg, id);
	int rc;

	if (cl == NULL || cl->key_used)
		return;
	rc = bw_registry_set_key(&s->reg, cl, NULL,
				 cl->has_aes ? cl->aes_key : NULL,
				 cl->key_issued, 1);
	if (rc != 0)
		bw_warn("vault: could not record that '%s' used its key: %s",
			cl->name, bw_strerror(rc));
}

void
vault_key_failed(struct bw_conn *c, const uint8_t id[BW_ID_LEN],
		 const uint8_t key[BW_AES_KEY_LEN])
{
	struct bw_server *s = c->srv;
	struct bw_client *cl = bw_registry_by_id(&s->reg, id);
	char name[BW_ESC_CAP];
	int rc;

	if (VC(c)->has_key && bw_ct_equal(VC(c)->key, key, BW_AES_KEY_LEN)) {
		VC(c)->has_key = 0; /* this connection's key is spent */
		bw_wipe(VC(c)->key, sizeof(VC(c)->key));
	}
	if (cl == NULL || !cl->has_aes ||
	    !bw_ct_equal(cl->aes_key, key, BW_AES_KEY_LEN))
		return;
	if (++cl->key_failures < s->cfg.key_failures)
		return;
	rc = bw_registry_set_key(&s->reg, cl, NULL, NULL, 0, cl->key_used);
	bw_warn("c%llu '%s': AES key revoked after %u decryption failures%s",
		ULL(c->id), bw_escape_display(cl->name, name, sizeof(name)),
		s->cfg.key_failures, rc != 0 ? " (in RAM only)" : "");
	if (rc != 0) {
		cl->has_aes = 0;
		bw_wipe(cl->aes_key, sizeof(cl->aes_key));
	}
}

/* Makes a fresh AES key for cl, records it (with pubkey if not NULL) and
 * sends it wrapped with the client's public key in a 2102/2105. The
 * connection keeps it for its own uploads. */
static int
send_new_key(struct bw_conn *c, struct bw_client *cl, struct bw_rsa *rsa,
	     const uint8_t *pubkey, uint16_t code, int used)
{
	struct vault_conn *vc = VC(c);
	uint8_t aes[BW_AES_KEY_LEN], out[BW_ID_LEN + BW_RSA_CT_LEN];
	char name[BW_ESC_CAP];
	int64_t now = bw_time_s();
	int rc;

	if ((rc = bw_random(aes, sizeof(aes))) != 0 ||
	    (rc = bw_rsa_oaep_encrypt(rsa, aes, sizeof(aes),
				      out + BW_ID_LEN)) != 0 ||
	    (rc = bw_registry_set_key(&c->srv->reg, cl, pubkey, aes, now,
				      used)) != 0) {
		bw_wipe(aes, sizeof(aes));
		return vault_reply_error(c, bw_strerror(rc));
	}
	vc->has_key = 1;
	memcpy(vc->key_id, cl->id, BW_ID_LEN);
	memcpy(vc->key, aes, sizeof(aes));
	vc->key_issued = now;
	bw_wipe(aes, sizeof(aes));
	memcpy(out, cl->id, BW_ID_LEN);
	bw_info("c%llu %u '%s' -> %u: new AES key sent", ULL(c->id),
		vc->hdr.code, bw_escape_display(cl->name, name, sizeof(name)),
		code);
	return vault_reply(c, code, out, sizeof(out));
}

/* The key a 1028 from cl on c decrypts with: the one this connection was
 * given, else the client's; NULL (with *why) if there is none usable. */
static const uint8_t *
upload_key(struct bw_conn *c, const struct bw_client *cl, const char **why)
{
	struct vault_conn *vc = VC(c);
	int64_t now = bw_time_s(), life = c->srv->cfg.key_lifetime_s;

	if (vc->has_key && memcmp(vc->key_id, cl->id, BW_ID_LEN) == 0) {
		if (life == 0 || now - vc->key_issued <= life)
			return vc->key;
		*why = "the connection's AES key has expired";
		return NULL;
	}
	if (!cl->has_aes) {
		*why = "no AES key (send 1026 or 1027 first)";
		return NULL;
	}
	if (life != 0 && now - cl->key_issued > life) {
		*why = "the AES key has expired (send 1027)";
		return NULL;
	}
	return cl->aes_key;
}

/* --- requests with a fixed payload -------------------------------------- */

static int
on_register(struct bw_conn *c, const uint8_t *p, size_t n)
{
	struct bw_server *s = c->srv;
	char name[BW_NAME_CAP], shown[BW_ESC_CAP], hex[2 * BW_ID_LEN + 1];
	struct bw_client *cl;
	int rc;

	if (bw_vault_name_payload_decode(p, n, name) != 0)
		return vault_reply_error(c, "malformed name");
	bw_escape_display(name, shown, sizeof(shown));
	if (s->reg.clients_n >= s->cfg.max_clients) {
		bw_warn("c%llu 1025 registration of '%s' refused: %llu "
			"clients, the limit",
			ULL(c->id), shown, ULL(s->reg.clients_n));
		return vault_reply(c, BW_VAULT_RESP_ERROR, NULL, 0);
	}
	if (c->addr == NULL ||
	    bw_addr_count_reg(c->addr, s->cfg.max_reg_per_min, bw_now_ms()) !=
		    0) {
		bw_warn("c%llu 1025 registration of '%s' refused: more than "
			"%u a minute from %s",
			ULL(c->id), shown, s->cfg.max_reg_per_min, c->peer);
		return vault_reply(c, BW_VAULT_RESP_ERROR, NULL, 0);
	}
	rc = bw_registry_add(&s->reg, name, NULL, &cl);
	if (rc == BW_EEXIST) {
		bw_info("c%llu 1025 register '%s' -> 2101: name taken",
			ULL(c->id), shown);
		return vault_reply(c, BW_VAULT_RESP_REG_FAILED, NULL, 0);
	}
	if (rc != 0)
		return vault_reply_error(c, bw_strerror(rc));
	bw_hex_encode(cl->id, BW_ID_LEN, hex);
	bw_info("c%llu 1025 register '%s' -> 2100 id %s", ULL(c->id), shown,
		hex);
	return vault_reply(c, BW_VAULT_RESP_REGISTERED, cl->id, BW_ID_LEN);
}

/* A 1026 replaces the public key only while it has not been used: a
 * client whose 2102 was lost may send a fresh key pair again, but once an
 * upload decrypted with the key, or a 1027 was answered, the key is the
 * client's and a stranger who knows the id and name cannot take it. */
static int
on_pubkey(struct bw_conn *c, const uint8_t *p, size_t n)
{
	char name[BW_NAME_CAP];
	const uint8_t *key;
	struct bw_client *cl;
	struct bw_rsa *rsa = NULL;
	int rc, same;

	if (bw_vault_pubkey_payload_decode(p, n, name, &key) != 0)
		return vault_reply_error(c, "malformed name");
	cl = header_client(c);
	if (cl == NULL || strcmp(cl->name, name) != 0)
		return vault_reply_error(c, "header id and name are not one "
					    "client");
	same = cl->has_pubkey && memcmp(cl->pubkey, key, BW_RSA_PUB_LEN) == 0;
	if (cl->has_pubkey && cl->key_used && !same)
		return vault_reply_error(c, "the public key on record is in "
					    "use; not replaced");
	if (bw_rsa_from_spki(&rsa, key, BW_RSA_PUB_LEN) != 0)
		return vault_reply_error(c, "not an RSA-1024 public key");
	rc = send_new_key(c, cl, rsa, key, BW_VAULT_RESP_PUBKEY_AES,
			  same && cl->key_used);
	bw_rsa_free(rsa);
	return rc;
}

static int
on_reconnect(struct bw_conn *c, const uint8_t *p, size_t n)
{
	char name[BW_NAME_CAP], shown[BW_ESC_CAP];
	struct bw_client *cl;
	struct bw_rsa *rsa = NULL;
	const char *why = NULL;
	int rc;

	if (bw_vault_name_payload_decode(p, n, name) != 0)
		return vault_reply_error(c, "malformed name");
	cl = header_client(c);
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
		return vault_reply(c, BW_VAULT_RESP_RECONNECT_DENIED,
				   VC(c)->hdr.client_id, BW_ID_LEN);
	}
	rc = send_new_key(c, cl, rsa, NULL, BW_VAULT_RESP_RECONNECT_AES, 1);
	bw_rsa_free(rsa);
	return rc;
}

static int
on_crc(struct bw_conn *c, const uint8_t *p, size_t n)
{
	uint16_t code = VC(c)->hdr.code;
	char name[BW_NAME_CAP];
	struct bw_client *cl;

	if (bw_vault_name_payload_decode(p, n, name) != 0)
		return code == BW_VAULT_REQ_CRC_RETRY
			       ? 0
			       : vault_reply_error(c, "malformed name");
	if ((cl = header_client(c)) == NULL)
		return code == BW_VAULT_REQ_CRC_RETRY
			       ? 0
			       : vault_reply_error(c, "unknown client id");
	return vault_crc_request(c, cl, name);
}

/* The fixed part of a 1028 is in: check sizes and capacity (a failure
 * closes: the body is not worth reading), then identity and key (a failure
 * discards a small body and answers 2107, keeping the connection). */
static int
on_file_prefix(struct bw_conn *c, const uint8_t *p)
{
	struct vault_conn *vc = VC(c);
	struct bw_server *s = c->srv;
	uint32_t content_size = bw_get_u32le(p);
	char name[BW_NAME_CAP];
	const uint8_t *key = NULL;
	struct bw_client *cl = NULL;
	const char *why = NULL;
	int rc, gone = 0;

	if ((uint64_t)vc->hdr.payload_size !=
	    (uint64_t)BW_FILE_PREFIX_LEN + content_size)
		return vault_reply_error_close(c, "payload size and content "
						  "size disagree");
	if (content_size == 0 || content_size % BW_AES_BLOCK != 0)
		return vault_reply_error_close(c, "content size is not a "
						  "positive multiple of 16");
	if (content_size > s->cfg.max_file_size)
		return vault_reply_error_close(c, "file over the size limit");
	if (s->uploads_active + s->swallowing >= s->cfg.max_uploads)
		return vault_reply_error_close(c, "too many uploads in "
						  "progress");
	if (c->addr == NULL || c->addr->uploads >= s->cfg.max_uploads_per_addr)
		return vault_reply_error_close(c, "too many uploads in "
						  "progress from this address");
	if (s->stopping && !vc->awaiting)
		return vault_reply_error_close(c, "shutting down");
	if (bw_vault_file_prefix_decode(p, BW_FILE_PREFIX_LEN, &content_size,
					name) != 0)
		why = "malformed file name";
	else if ((cl = header_client(c)) == NULL)
		why = "unknown client id";
	else if ((key = upload_key(c, cl, &why)) == NULL)
		/* it needs a 1027: closing tells a client to get a fresh key
		 * instead of resending with the dead one */
		gone = cl->has_pubkey;
	else if ((rc = vault_upload_start(c, cl, key, p, content_size, name)) !=
		 0)
		why = rc == BW_EPROTO  ? "file name has no usable base name"
		      : rc == -ELOOP   ? "the client's directory is a link"
		      : rc == -ENOTDIR ? "the client's directory is a link"
				       : bw_strerror(rc);
	if (why == NULL) {
		vc->st = V_BODY;
		return 0;
	}
	if (content_size > SWALLOW_MAX || gone)
		return vault_reply_error_close(c, why);
	bw_info("c%llu 1028 refused, discarding %u bytes: %s", ULL(c->id),
		content_size, why);
	vc->st = V_SWALLOW;
	vc->swallow_left = content_size;
	vc->swallow_counted = 1;
	s->swallowing++;
	c->addr->uploads++;
	return 0;
}

/* --- the state machine -------------------------------------------------- */

static int
on_header(struct bw_conn *c)
{
	struct vault_conn *vc = VC(c);
	long fixed;

	if (bw_req_hdr_decode(bw_buf_head(&c->in), c->in.len, &vc->hdr) < 0)
		return 0;
	bw_buf_consume(&c->in, BW_REQ_HDR_LEN);
	fixed = bw_vault_req_payload_size(vc->hdr.code);
	if (fixed < 0)
		return vault_reply_error_close(c, "unknown request code");
	if (vc->hdr.code == BW_VAULT_REQ_SEND_FILE) {
		if (vc->hdr.payload_size < BW_FILE_PREFIX_LEN)
			return vault_reply_error_close(c, "1028 payload too "
							  "short");
		vc->need = BW_FILE_PREFIX_LEN;
	} else {
		if (vc->hdr.payload_size != (uint32_t)fixed)
			return vault_reply_error_close(c, "payload size is "
							  "wrong for the "
							  "request code");
		vc->need = (size_t)fixed;
	}
	vc->st = V_PAYLOAD;
	return 0;
}

/* Returns 1 to wait for more input (padding not decided yet). */
static int
on_payload(struct bw_conn *c)
{
	struct vault_conn *vc = VC(c);
	const uint8_t *p = bw_buf_head(&c->in);
	size_t n = vc->need;
	int rc, pad;

	/* Course-sample clients pad the request with zeros: decide before
	 * replying, so the reply is padded too. */
	if (vc->hdr.code != BW_VAULT_REQ_SEND_FILE) {
		pad = vault_padding(c, n, BW_REQ_HDR_LEN + n);
		if (pad < 0)
			return 1;
		vc->padded = pad;
	}
	vc->st = V_HDR;
	vc->requests++;
	bw_conn_request_deadline(c, 0);
	if (c->srv->stopping && vc->requests == 1 &&
	    vc->hdr.code != BW_VAULT_REQ_CRC_OK &&
	    vc->hdr.code != BW_VAULT_REQ_CRC_RETRY &&
	    vc->hdr.code != BW_VAULT_REQ_CRC_FAIL) {
		bw_buf_consume(&c->in, n);
		return vault_reply_error_close(c, "shutting down");
	}
	switch (vc->hdr.code) {
	case BW_VAULT_REQ_REGISTER:
		rc = on_register(c, p, n);
		break;
	case BW_VAULT_REQ_PUBKEY:
		rc = on_pubkey(c, p, n);
		break;
	case BW_VAULT_REQ_RECONNECT:
		rc = on_reconnect(c, p, n);
		break;
	case BW_VAULT_REQ_SEND_FILE:
		vc->padded = 0; /* the body follows, not padding */
		vc->body_size = bw_get_u32le(p);
		vc->win_start_ms = bw_now_ms();
		vc->win_left = vc->body_size;
		rc = on_file_prefix(c, p);
		if (vc->st == V_BODY)
			c->want = vc->up->chunk;
		else if (vc->st == V_SWALLOW)
			c->want = SWALLOW_WANT;
		break;
	default:
		rc = on_crc(c, p, n);
		break;
	}
	if (!bw_conn_dead(c))
		bw_buf_consume(&c->in, n);
	return rc;
}

/* Each window of --timeout seconds must bring --min-rate bytes a second of
 * the body: a peer trickling just enough to stay alive, after a fast start
 * or not, cannot hold an upload slot. Time the server itself spent not
 * reading (waiting for the disk) restarts the window. */
static int
body_too_slow(struct bw_conn *c)
{
	struct vault_conn *vc = VC(c);
	const struct bw_server_cfg *cfg = &c->srv->cfg;
	uint64_t now = bw_now_ms(), elapsed = now - vc->win_start_ms, left;

	if (cfg->min_rate == 0 || elapsed < cfg->timeout_ms)
		return 0;
	left = vc->st == V_BODY ? vc->up->left : vc->swallow_left;
	left = left > c->in.len ? left - c->in.len : 0;
	if ((vc->win_left - left) * 1000u < (uint64_t)cfg->min_rate * elapsed)
		return 1;
	vc->win_start_ms = now;
	vc->win_left = left;
	return 0;
}

void
vault_resume(struct bw_conn *c)
{
	struct vault_conn *vc = VC(c);

	if (vc->st == V_BODY || vc->st == V_SWALLOW) {
		vc->win_start_ms = bw_now_ms();
		vc->win_left =
			vc->st == V_BODY ? vc->up->left : vc->swallow_left;
		vc->win_left =
			vc->win_left > c->in.len ? vc->win_left - c->in.len : 0;
	}
	bw_conn_pause(c, 0);
	if (!vc->in_input)
		bw_conn_kick(c);
}

static int
step_all(struct bw_conn *c)
{
	struct vault_conn *vc = VC(c);
	int rc = 0;

	while (rc == 0 && !bw_conn_dead(c)) {
		switch (vc->st) {
		case V_HDR:
			if (c->in.len == 0)
				return 0;
			if (c->req_deadline_ms == 0)
				bw_conn_request_deadline(
					c, c->srv->cfg.request_timeout_ms);
			if (c->in.len < BW_REQ_HDR_LEN)
				return 0;
			if (vc->padded)
				return 0; /* the rest is padding */
			rc = on_header(c);
			break;
		case V_PAYLOAD:
			if (c->in.len < vc->need)
				return 0;
			if ((rc = on_payload(c)) == 1)
				return 0;
			break;
		case V_BODY:
			rc = vault_body_step(c);
			if (vc->st == V_BODY)
				return rc;
			break;
		case V_SWALLOW:
			rc = vault_swallow_step(c);
			if (vc->st == V_SWALLOW)
				return rc;
			break;
		case V_COMMIT:
		case V_CRC:
			return 0;
		}
		if (c->flags & BW_CONN_CLOSING)
			break;
	}
	return rc;
}

static int
vault_input(struct bw_conn *c)
{
	struct vault_conn *vc = VC(c);
	int rc;

	if ((vc->st == V_BODY || vc->st == V_SWALLOW) && body_too_slow(c)) {
		bw_info("c%llu 1028 body slower than %u bytes/s", ULL(c->id),
			c->srv->cfg.min_rate);
		return BW_ETIMEDOUT;
	}
	vc->in_input = 1;
	rc = step_all(c);
	if (!bw_conn_dead(c))
		vc->in_input = 0;
	return rc;
}

static int
vault_open(struct bw_conn *c)
{
	if ((c->state = calloc(1, sizeof(struct vault_conn))) == NULL)
		return BW_ENOMEM;
	c->want = CTRL_WANT;
	return 0;
}

static void
vault_close(struct bw_conn *c)
{
	struct vault_conn *vc = VC(c);

	if (vc == NULL)
		return;
	vault_upload_abort(c, "connection closed");
	vault_crc_abandon(c);
	if (vc->swallow_counted) {
		c->srv->swallowing--;
		if (c->addr != NULL)
			c->addr->uploads--;
	}
	if (vc->errors_dropped > 0)
		bw_info("c%llu %u more 2107 replies not logged", ULL(c->id),
			vc->errors_dropped);
	bw_wipe(vc->key, sizeof(vc->key));
	free(vc);
}

/* In progress: a request, or (while stopping) a session that got its 2103
 * and owes a 1029/1030/1031, or a connection that arrived during the drain
 * and has not had a second to send its request. */
static int
vault_busy(const struct bw_conn *c)
{
	const struct vault_conn *vc = c->state;

	if (vc == NULL)
		return 0;
	return vc->st != V_HDR || c->in.len > 0 || vc->awaiting ||
	       (vc->requests == 0 && bw_now_ms() - c->opened_ms < 1000);
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

/* While stopping, the listener stays open as long as some upload answered
 * 2103 recently still owes its 1029: course-sample clients send it on a new
 * connection. */
static int
vault_draining(struct bw_server *s)
{
	struct awaiting_scan a = {0, 0};
	uint64_t recent = s->cfg.timeout_ms / 1000u;

	a.since_s = (uint64_t)bw_time_s() > recent
			    ? (uint64_t)bw_time_s() - recent
			    : 0;
	(void)bw_registry_each_file(&s->reg, find_awaiting, &a);
	return a.found;
}

const struct bw_service bw_vault_service = {
	.name = "vault",
	.on_open = vault_open,
	.on_input = vault_input,
	.on_drained = NULL,
	.on_close = vault_close,
	.busy = vault_busy,
	.draining = vault_draining,
};
