/* Who may speak for a client on a TLS listener. The handshake proves which
 * key the peer holds (its certificate's, self-signed, made from the key it
 * registered); before each request on the shared port, a request whose
 * header names a registered client is served only when that proven key is
 * the client's, and a registration (the messenger's 600, the vault's 1026)
 * only binds the key proven. Everything else is refused with the
 * protocol's error reply, logged with the address and counted
 * (bulwark_errors_total{kind="auth_..."}). On the plain listeners the seed
 * protocols are served as they always were (nothing is proven there),
 * except to an id whose owner chose TLS only (1103, vault_ext.c).
 *
 * On a shared store the prepare hook (daemon_shared.c) has read the
 * client's row again first, so the key judged is the store's; when that
 * read failed, the request is refused (auth_row_unread), not judged on
 * what RAM held.
 */
#include <string.h>

#include "bulwark/crypto.h"
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "daemon/daemon.h"
#include "proto/msg_wire.h"
#include "proto/vault_wire.h"

static const char *const kind_key[BW_AUTH_KINDS] = {
	[BW_AUTH_NO_CERT] = "auth_no_certificate",
	[BW_AUTH_WRONG_KEY] = "auth_wrong_key",
	[BW_AUTH_OTHER_KEY] = "auth_registration_key",
	[BW_AUTH_PLAIN] = "auth_plain_refused",
	[BW_AUTH_UNREAD] = "auth_row_unread",
};
static const char *const kind_why[BW_AUTH_KINDS] = {
	[BW_AUTH_NO_CERT] = "no client certificate: this client's key is "
			    "not proven",
	[BW_AUTH_WRONG_KEY] = "the key proven is not this client's",
	[BW_AUTH_OTHER_KEY] = "the key registered is not the key proven",
	[BW_AUTH_PLAIN] = "this client is served over TLS only (its "
			  "owner's choice)",
	[BW_AUTH_UNREAD] = "this client's row could not be read from the "
			   "shared store: its key and its owner's choices "
			   "are not known",
};

/* 1 if the proven key (DER, len bytes) is the 160-byte field stored (DER,
 * zero-padded). */
static int
same_key(const uint8_t *key, size_t len, const uint8_t field[BW_RSA_PUB_LEN])
{
	size_t i;

	if (key == NULL || len == 0 || len > BW_RSA_PUB_LEN ||
	    memcmp(key, field, len) != 0)
		return 0;
	for (i = len; i < BW_RSA_PUB_LEN; i++)
		if (field[i] != 0)
			return 0;
	return 1;
}

/* 1 if the proven key (DER, len bytes) is an RSA key a 160-byte field
 * carries, as a 1026's. */
static int
rsa_field(const uint8_t *key, size_t len)
{
	struct bw_rsa *rsa = NULL;
	uint8_t field[BW_RSA_PUB_LEN];
	int ok;

	if (len == 0 || len > BW_RSA_PUB_LEN)
		return 0;
	memset(field, 0, sizeof(field));
	memcpy(field, key, len);
	ok = bw_rsa_from_spki(&rsa, field, BW_RSA_PUB_LEN) == 0;
	bw_rsa_free(rsa);
	return ok;
}

static const char *
refuse(struct bw_daemon *d, struct bw_conn *c, const struct bw_frame_req *r,
       enum bw_auth_kind k)
{
	char hex[2 * BW_ID_LEN + 1];

	d->auth_refused[k]++;
	bw_hex_encode(r->hdr.client_id, BW_ID_LEN, hex);
	bw_conn_event(c, BW_LOG_WARN, "auth_refused",
		      "service=%s code=%u id=%s reason=%s", r->proto->name,
		      r->hdr.code, hex, kind_key[k] + 5);
	return kind_why[k];
}

static const char *
admit(void *arg, struct bw_conn *c, const struct bw_frame_req *r,
      const uint8_t *head, int *for_now)
{
	struct bw_daemon *d = arg;
	uint16_t code = r->hdr.code;
	const struct bw_client *cl;
	const uint8_t *key;
	size_t len;

	if (!bw_conn_tls(c)) {
		/* the seed's protocols, unproven: unless the owner of the id
		 * chose TLS only (a registration names nobody yet; a 1106 is
		 * refused off TLS before its body, whoever it names), or
		 * whether it did could not be read (a shared store's row
		 * that failed to come: RAM may not know yet; never served on
		 * a guess) */
		if (code == BW_VAULT_REQ_REGISTER ||
		    code == BW_MSG_REQ_REGISTER ||
		    code == BW_VAULT_REQ_SEND_CLEAR || /* vault.c closes */
		    (cl = bw_registry_by_id(&d->reg, r->hdr.client_id)) == NULL)
			return NULL;
		/* the store may give the row to a later request */
		if ((*for_now = cl->unread) != 0)
			return refuse(d, c, r, BW_AUTH_UNREAD);
		if (cl->tls_only)
			return refuse(d, c, r, BW_AUTH_PLAIN);
		return NULL;
	}
	key = bw_conn_peer_key(c, &len);
	/* a registration names nobody yet: whoever registers over TLS
	 * registers the key it proves */
	if (code == BW_VAULT_REQ_REGISTER || code == BW_MSG_REQ_REGISTER) {
		if (key == NULL)
			return refuse(d, c, r, BW_AUTH_NO_CERT);
		if (code == BW_MSG_REQ_REGISTER &&
		    !same_key(key, len, head + BW_NAME_FIELD))
			return refuse(d, c, r, BW_AUTH_OTHER_KEY);
		/* the vault's 1025 binds the proven key at once (vault.c):
		 * between a 1025 and its 1026 nobody else's 1026 may bind
		 * one; it must then be a key the protocol can carry */
		if (code == BW_VAULT_REQ_REGISTER && !rsa_field(key, len))
			return refuse(d, c, r, BW_AUTH_OTHER_KEY);
		return NULL;
	}
	if ((cl = bw_registry_by_id(&d->reg, r->hdr.client_id)) == NULL)
		return NULL; /* the service answers an unknown id */
	if (key == NULL)
		return refuse(d, c, r, BW_AUTH_NO_CERT);
	if ((*for_now = cl->unread) != 0)
		return refuse(d, c, r, BW_AUTH_UNREAD);
	if (code == BW_VAULT_REQ_PUBKEY &&
	    !same_key(key, len, head + BW_NAME_FIELD))
		return refuse(d, c, r, BW_AUTH_OTHER_KEY);
	/* a vault client between its 1025 and its 1026 has no key yet: its
	 * 1026 binds the one proven, and nothing else is served before */
	if (!cl->has_pubkey)
		return code == BW_VAULT_REQ_PUBKEY
			       ? NULL
			       : refuse(d, c, r, BW_AUTH_WRONG_KEY);
	if (!same_key(key, len, cl->pubkey))
		return refuse(d, c, r, BW_AUTH_WRONG_KEY);
	return NULL;
}

void
bw_daemon_auth_start(struct bw_daemon *d)
{
	bw_frame_set_admit(d->frame, admit, d);
}

void
bw_daemon_auth_errors(const struct bw_daemon *d, bw_stat_emit emit,
		      void *emit_arg)
{
	int k;

	/* a plain listener refuses too on a shared store: for an owner's
	 * choice of TLS only, or a row it could not read */
	for (k = 0; k < BW_AUTH_KINDS; k++)
		if (d->tls != NULL ||
		    (bw_registry_others_write(&d->reg) &&
		     (k == BW_AUTH_PLAIN || k == BW_AUTH_UNREAD)))
			emit(emit_arg, kind_key[k], kind_why[k],
			     d->auth_refused[k]);
}
