/* bulwark send, the exchanges: one request and its reply with resends and
 * clear refusals, the identity's key, registration and reconnection.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bulwark/crc.h"
#include "bulwark/cur.h"
#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "cli/common.h"
#include "cli/progress.h"
#include "cli/send.h"
#include "proto/vault_wire.h"

#include "cli/send_int.h"

int
send_plain(struct send_ctx *x, const struct req *rq)
{
	return bw_session_send(&x->sess, rq->id, rq->code, rq->payload,
			       rq->len);
}

static int
is_expected(uint16_t code, const uint16_t *ok, size_t ok_n)
{
	size_t i;

	for (i = 0; i < ok_n; i++) {
		if (ok[i] == code)
			return 1;
	}
	return 0;
}

/* What a network error means to the user; never the bare errno text of a
 * write to a closed connection ("Broken pipe"). */
const char *
send_net_text(int rc)
{
	switch (rc) {
	case BW_ECLOSED:
	case -EPIPE:
	case -ECONNRESET:
		return "the server closed the connection";
	case BW_ETIMEDOUT:
		return "timed out";
	case BW_ETOOBIG:
		return "the server's reply is too large";
	case BW_EPROTO:
		return "the server's reply is malformed";
	default:
		return bw_strerror(rc);
	}
}

/* The most content a 1028 may carry on this server (its 1104, a Bulwark
 * extension): 0 with *max, or an error for a server that does not say
 * (another implementation answers 2107 or closes). Asked on a connection
 * of its own, naming nobody (the upload's was closed by its refusal). */
static int
server_limit(struct send_ctx *x, uint64_t *max)
{
	struct bw_session q;
	uint8_t out[RESP_CAP];
	uint16_t code = 0;
	size_t len = 0;
	int rc;

	bw_session_init(&q, x->sess.host, x->sess.port, x->sess.timeout_ms,
			BW_VAULT_VERSION);
	q.tls = x->sess.tls;
	q.key = x->sess.key; /* a TLS session resumes as the identity's */
	if ((rc = bw_session_connect(&q)) == 0) {
		bw_session_deadline(&q, x->sess.timeout_ms);
		if ((rc = bw_session_send(&q, NULL, BW_VAULT_REQ_LIMITS, NULL,
					  0)) == 0)
			rc = bw_session_recv(&q, &code, out, sizeof(out), &len);
	}
	bw_session_close(&q);
	if (rc != 0)
		return rc;
	if (code != BW_VAULT_RESP_LIMITS || len < BW_VAULT_LIMITS_LEN)
		return BW_ENOTFOUND;
	*max = bw_get_u64le(out);
	return 0;
}

/* A 1028 refused with a 2107: 1 if the server says the file is larger than
 * it takes (x->why and x->final set: one try is enough), else 0. */
static int
too_large(struct send_ctx *x)
{
	uint64_t max = 0, most;

	if (x->limit_asked++ || server_limit(x, &max) != 0 ||
	    send_content_len(x) <= max)
		return 0; /* asked once a run */
	/* the largest file whose padded ciphertext fits (a 1106's is the
	 * file) */
	most = x->clear		     ? max
	       : max >= BW_AES_BLOCK ? max / BW_AES_BLOCK * BW_AES_BLOCK - 1
				     : 0;
	snprintf(x->why, sizeof(x->why),
		 "the server takes files up to %llu bytes; this one has %llu",
		 (unsigned long long)most, (unsigned long long)x->plain_len);
	x->final = BW_EXIT_REFUSED;
	return 1;
}

/* Sets x->why for a failed try: wrc is the send's error, rc the receive's,
 * code the reply's when rc is 0. */
static void
explain(struct send_ctx *x, const struct req *rq, int wrc, int rc,
	uint16_t code)
{
	unsigned s = x->sess.timeout_ms / 1000u;

	x->replied = rc == 0;
	if (rc == BW_EFOREIGN) {
		snprintf(x->why, sizeof(x->why), BW_CLI_FOREIGN_FMT,
			 x->sess.host, x->sess.port);
		x->final = BW_EXIT_FATAL; /* trying again changes nothing */
	} else if (rc == 0 && code == BW_VAULT_RESP_ERROR &&
		   rq->code == BW_VAULT_REQ_SEND_FILE && too_large(x)) {
		/* said, once */
	} else if (rc == 0 && code == BW_VAULT_RESP_ERROR &&
		   rq->code == BW_VAULT_REQ_SEND_FILE && wrc != 0) {
		/* refused at the header, the content not even read: over the
		 * server's size limit (bulwarkd --max-file-size), which the
		 * protocol cannot say, or no upload slot free. A second time
		 * is not a chance event: not tried again. */
		if (++x->early >= 2)
			x->final = BW_EXIT_REFUSED;
		snprintf(x->why, sizeof(x->why),
			 "the server refused the file (%llu bytes) before "
			 "reading its content%s",
			 (unsigned long long)x->plain_len,
			 x->early >= 2
				 ? ", twice: it is larger than the server "
				   "takes (its --max-file-size), or the "
				   "server has no upload slot free now"
				 : "");
	} else if (rc == 0 && code == BW_VAULT_RESP_ERROR)
		snprintf(x->why, sizeof(x->why),
			 "the server refused the %s (2107 general error)",
			 rq->what);
	else if (rc == 0)
		snprintf(x->why, sizeof(x->why),
			 "the server answered %u, which is not a reply to %u "
			 "(%s)",
			 code, rq->code, rq->what);
	else if (wrc == BW_ETIMEDOUT)
		snprintf(x->why, sizeof(x->why),
			 "timed out sending the %s (no progress for %u s)",
			 rq->what, s);
	else if (wrc == 0 && rc == BW_ETIMEDOUT)
		snprintf(x->why, sizeof(x->why),
			 "timed out: no complete reply to the %s within %u s",
			 rq->what, s);
	else
		snprintf(x->why, sizeof(x->why), "%s during the %s",
			 send_net_text(wrc != 0 ? wrc : rc), rq->what);
}

/* Over TLS the file goes as it is, in a 1106, when the server's 2115 says
 * it takes one (asked on the session, after the identity's exchanges):
 * TLS's cipher is then the only one, and the seed's AES-CBC, serial and
 * the slowest step of a TLS upload, is not done (docs/performance.md).
 * Anything else (a plain session, --seed-upload, an empty file, a server
 * that does not say) gets the seed's 1028; a server that closed on the
 * question gets it on a new connection, with a fresh key. */
void
send_choose_upload(struct send_ctx *x)
{
	uint8_t out[RESP_CAP];
	uint16_t code = 0;
	size_t len = 0;
	int rc;

	x->clear = 0;
	if (!x->sess.tls || x->seed_upload || x->plain_len == 0 ||
	    bw_session_connect(&x->sess) != 0)
		return; /* the upload's own try says what is wrong */
	bw_session_deadline(&x->sess, x->sess.timeout_ms);
	if ((rc = bw_session_send(&x->sess, NULL, BW_VAULT_REQ_LIMITS, NULL,
				  0)) == 0)
		rc = bw_session_recv(&x->sess, &code, out, sizeof(out), &len);
	if (rc != 0 || code != BW_VAULT_RESP_LIMITS) {
		bw_session_close(&x->sess); /* 2107 to an unknown code closes */
		x->need_rekey = 1;
		return;
	}
	x->clear = len >= BW_VAULT_LIMITS_FEATURES_LEN &&
		   (bw_get_u32le(out + 8) & BW_VAULT_FEATURE_CLEAR) != 0;
}

static int rekey(struct send_ctx *x);

/* One try: connects, first asks for a fresh key if a 1028 needs one, sends
 * the request and reads the reply. 0 with *code one of rq->ok; otherwise an
 * error with x->why set. A reply waiting after a failed send is read, so
 * that a refusal shows as what it is. */
static int
attempt(struct send_ctx *x, const struct req *rq, uint16_t *code, uint8_t *out,
	size_t *len)
{
	unsigned wait = x->sess.timeout_ms;
	int rc, wrc;

	x->replied = 0;
	if ((rc = bw_session_connect(&x->sess)) != 0) {
		(void)bw_cli_connect_error(x->why, sizeof(x->why), x->sess.host,
					   x->sess.port, rc);
		if (rc == -ECONNREFUSED)
			x->final = BW_EXIT_FATAL; /* nothing listens there */
		return rc;
	}
	if (rq->code == BW_VAULT_REQ_SEND_FILE && x->need_rekey && !x->clear &&
	    (rc = rekey(x)) != 0)
		return rc;
	bw_session_deadline(&x->sess, x->sess.timeout_ms);
	if ((wrc = rq->send(x, rq)) != 0 && x->final != 0) {
		bw_session_close(&x->sess);
		return wrc; /* a local failure; x->why says which */
	}
	if (wrc != 0)
		bw_session_deadline(&x->sess, WAITING_REPLY_MS < wait
						      ? WAITING_REPLY_MS
						      : wait);
	rc = bw_session_recv(&x->sess, code, out, RESP_CAP, len);
	if (wrc == 0 && rc == 0 && is_expected(*code, rq->ok, rq->ok_n))
		return 0;
	explain(x, rq, wrc, rc, *code);
	if (rc == 0 && *code == BW_VAULT_RESP_ERROR && x->clear &&
	    rq->code == BW_VAULT_REQ_SEND_FILE && x->final == 0) {
		/* a node that does not serve 1106 after all (another node
		 * behind the same address, mid-upgrade): the seed's 1028
		 * from now on, with a fresh key on a new connection */
		x->clear = 0;
		x->need_rekey = 1;
		bw_session_close(&x->sess);
	}
	if (wrc != 0 || rc != 0 || *code != BW_VAULT_RESP_ERROR)
		bw_session_close(&x->sess); /* broken or out of step */
	return rc == 0 ? BW_ESERVER : rc;
}

/* Sends rq and reads its reply, resending at most MAX_RETRIES times after
 * an error reply, an unexpected reply or a lost connection, with a pause
 * that doubles each time. A 1028 whose connection was lost gets a fresh key
 * (1027) on the next connection before it is resent. Returns 0 with *code
 * one of rq->ok, or a negative error after the last try (x->why says what
 * happened, x->final the exit status if it was not worth retrying). */
int
send_exchange(struct send_ctx *x, const struct req *rq, uint16_t *code,
	      uint8_t *out, size_t *len)
{
	unsigned pause = BACKOFF_MS;
	int tries, rc = BW_ESERVER;

	x->final = 0;
	x->unanswered = 0;
	for (tries = 1; tries <= MAX_RETRIES + 1; tries++) {
		if ((rc = attempt(x, rq, code, out, len)) == 0)
			return 0;
		if (!x->replied)
			x->unanswered = 1;
		/* the last failure is the caller's to say (Fatal: ...),
		 * once */
		if (x->final != 0 || tries > MAX_RETRIES)
			break;
		fprintf(stderr, "%s%s; trying again in %u.%u s\n",
			x->replied ? "server responded with an error: " : "",
			x->why, pause / 1000u, pause % 1000u / 100u);
		if (bw_session_idle(&x->sess, pause) &&
		    rq->code == BW_VAULT_REQ_SEND_FILE)
			x->need_rekey = 1;
		pause *= 2;
	}
	return rc;
}

/* --- identity ------------------------------------------------------------
 */

/* Takes the AES key out of a 2102/2105 payload meant for who. */
static int
unwrap_key(struct send_ctx *x, const struct bw_identity *who,
	   const uint8_t *payload, size_t len)
{
	uint8_t id[BW_ID_LEN];
	const uint8_t *wrapped;
	size_t n = 0;

	if (bw_vault_aes_payload_decode(payload, len, id, &wrapped) != 0 ||
	    memcmp(id, who->id, BW_ID_LEN) != 0)
		return BW_EPROTO;
	if (bw_rsa_oaep_decrypt(who->key, wrapped, BW_RSA_CT_LEN, x->aes_key,
				sizeof(x->aes_key), &n) != 0 ||
	    n != BW_AES_KEY_LEN) {
		bw_wipe(x->aes_key, sizeof(x->aes_key));
		return BW_EBADKEY;
	}
	return 0;
}

/* The reconnect request (1027) with our name in field: 0, or BW_ECONFIG
 * if the name cannot be sent. */
static int
reconnect_req(struct send_ctx *x, struct req *rq, uint8_t *field)
{
	static const uint16_t ok[] = {BW_VAULT_RESP_RECONNECT_AES,
				      BW_VAULT_RESP_RECONNECT_DENIED};

	*rq = (struct req){.what = "reconnect",
			   .send = send_plain,
			   .code = BW_VAULT_REQ_RECONNECT,
			   .id = x->me.id,
			   .payload = field,
			   .len = BW_NAME_FIELD,
			   .ok = ok,
			   .ok_n = 2,
			   .fd = -1};
	return bw_name_encode(x->me.name, field) != 0 ? BW_ECONFIG : 0;
}

/* 1027 on the current connection, one try, for a fresh AES key before a
 * 1028 is resent. 2106 or a key that cannot be unwrapped is final. */
static int
rekey(struct send_ctx *x)
{
	uint8_t field[BW_NAME_FIELD], out[RESP_CAP];
	struct req rq;
	uint16_t code = 0;
	size_t len = 0;
	int rc;

	if (reconnect_req(x, &rq, field) != 0) {
		snprintf(x->why, sizeof(x->why), "our name cannot be sent");
		x->final = BW_EXIT_USAGE;
		return BW_ECONFIG;
	}
	if ((rc = attempt(x, &rq, &code, out, &len)) != 0)
		goto out;
	if (code == BW_VAULT_RESP_RECONNECT_DENIED) {
		snprintf(x->why, sizeof(x->why),
			 "the server no longer knows '%s' (2106 to the "
			 "reconnect for a fresh key)",
			 x->me.name);
		rc = BW_ENOTFOUND;
	} else if ((rc = unwrap_key(x, &x->me, out, len)) != 0) {
		snprintf(x->why, sizeof(x->why),
			 "the server's fresh AES key cannot be decrypted with "
			 "our private key: %s",
			 bw_strerror(rc));
	}
	if (rc != 0) {
		x->replied = 1;
		x->final = BW_EXIT_FATAL;
		bw_session_close(&x->sess);
	} else {
		x->need_rekey = 0;
	}
out:
	bw_wipe(out, sizeof(out));
	return rc;
}

/* nu, registered under its id, into me.info and priv.key: 0, or
 * BW_EXIT_USAGE after saying where the staged files are kept. */
static int
put_in_place(struct bw_identity_stage *st, const struct bw_identity *nu,
	     const char *hex)
{
	int rc;

	if ((rc = bw_identity_commit(st, nu->id)) == 0)
		return 0;
	bw_cli_fatal("registered as '%s' (id %s) but me.info cannot be put in "
		     "place: %s; the identity is in %s",
		     nu->name, hex, bw_strerror(rc),
		     st->tmp[0] != '\0' ? st->tmp : st->priv_tmp);
	bw_identity_keep(st); /* where the message says it is */
	return BW_EXIT_USAGE;
}

/* A first registration's 2100 came and no answer to its 1026 did: the
 * server holds the name for this id, and this key is the only one that may
 * be registered for it (the 1026 arrived, its answer was lost). me.info is
 * put in place, so that the next run reconnects instead of asking for a
 * name that is taken. (A registration again keeps the me.info it had: its
 * key may still be known elsewhere.) Returns the exit status. */
static int
keep_registered(struct bw_identity_stage *st, const struct bw_identity *nu,
		const char *hex)
{
	if (put_in_place(st, nu, hex) != 0)
		return BW_EXIT_USAGE;
	fprintf(stderr,
		"bulwark send: '%s' is registered (id %s) and kept in "
		"me.info: the next run reconnects with it\n",
		nu->name, hex);
	return BW_EXIT_FATAL;
}

/* A new identity: 1025 then 1026. me.info and priv.key are staged on disk
 * (fsync'd temporary files) before the 1025, so a disk that cannot take
 * them fails before a name is taken for a key nobody keeps, and put in
 * place once the server's AES key has been unwrapped, so a failure on the
 * way leaves the old ones untouched; with none before, once the 2100 came
 * (keep_registered). */
int
send_register(struct send_ctx *x, const char *name)
{
	static const uint16_t reg_ok[] = {BW_VAULT_RESP_REGISTERED,
					  BW_VAULT_RESP_REG_FAILED};
	static const uint16_t key_ok[] = {BW_VAULT_RESP_PUBKEY_AES};
	uint8_t field[BW_NAME_FIELD], pk[BW_NAME_FIELD + BW_RSA_PUB_LEN];
	uint8_t out[RESP_CAP];
	char hex[2 * BW_ID_LEN + 1];
	struct bw_identity nu;
	struct bw_identity_stage st;
	struct req rq;
	uint16_t code = 0;
	size_t len = 0;
	int rc, ret = BW_EXIT_FATAL;

	/* name may point into x->me, which stays until nu is complete */
	memset(&nu, 0, sizeof(nu));
	st.fd = st.priv_fd = -1;
	st.tmp[0] = st.priv_tmp[0] = '\0';
	snprintf(nu.name, sizeof(nu.name), "%s", name);
	if (bw_name_encode(nu.name, field) != 0) {
		bw_cli_fatal("the name '%s' cannot be sent", nu.name);
		ret = BW_EXIT_USAGE;
		goto out;
	}
	if ((rc = bw_rsa_generate(&nu.key)) != 0 ||
	    (rc = bw_rsa_to_spki(nu.key, pk + BW_NAME_FIELD)) != 0) {
		bw_cli_fatal("cannot generate an RSA key: %s", bw_strerror(rc));
		goto out;
	}
	/* over TLS the handshake proves the key being registered: a
	 * connection that proved another one (or none) is not reused */
	if (x->sess.tls && x->sess.key != nu.key)
		bw_session_close(&x->sess);
	x->sess.key = nu.key;
	if ((rc = bw_identity_stage(&nu, "me.info", "priv.key", &st)) != 0) {
		bw_cli_fatal("cannot write me.info: %s (nothing was sent to "
			     "the server)",
			     bw_strerror(rc));
		ret = BW_EXIT_USAGE;
		goto out;
	}
	rq = (struct req){.what = "registration",
			  .send = send_plain,
			  .code = BW_VAULT_REQ_REGISTER,
			  .payload = field,
			  .len = BW_NAME_FIELD,
			  .ok = reg_ok,
			  .ok_n = 2,
			  .fd = -1};
	if (send_exchange(x, &rq, &code, out, &len) != 0) {
		bw_cli_fatal("registration of '%s' failed: %s", nu.name,
			     x->why);
		goto out;
	}
	if (code == BW_VAULT_RESP_REG_FAILED) {
		bw_cli_register_refused("bulwark send", nu.name, x->sess.host,
					x->sess.port);
		ret = BW_EXIT_TAKEN;
		goto out;
	}
	if (bw_vault_id_payload_decode(out, len, nu.id) != 0) {
		bw_cli_fatal("the server's registration reply is malformed");
		goto out;
	}
	memcpy(pk, field, BW_NAME_FIELD);
	rq = (struct req){.what = "public key",
			  .send = send_plain,
			  .code = BW_VAULT_REQ_PUBKEY,
			  .id = nu.id,
			  .payload = pk,
			  .len = sizeof(pk),
			  .ok = key_ok,
			  .ok_n = 1,
			  .fd = -1};
	bw_hex_encode(nu.id, BW_ID_LEN, hex);
	if (send_exchange(x, &rq, &code, out, &len) != 0) {
		bw_cli_fatal("the key exchange failed: %s", x->why);
		/* a try with no answer: the key may be the server's now (a
		 * registration again keeps the me.info it had instead) */
		if (x->me.key == NULL && x->unanswered)
			ret = keep_registered(&st, &nu, hex);
		goto out;
	}
	if ((rc = unwrap_key(x, &nu, out, len)) != 0) {
		bw_cli_fatal("the key exchange failed: the server's AES key "
			     "cannot be decrypted with our private key: %s",
			     bw_strerror(rc));
		goto out;
	}
	if ((ret = put_in_place(&st, &nu, hex)) != 0)
		goto out;
	if (!x->quiet)
		printf("registered as '%s' (id %s)\n", nu.name, hex);
	bw_identity_fini(&x->me);
	x->me = nu;
	nu.key = NULL; /* x->me owns it now */
	ret = BW_EXIT_OK;
out:
	if (ret != BW_EXIT_OK && x->sess.key == nu.key && nu.key != NULL) {
		if (x->sess.tls)
			bw_session_close(&x->sess);
		x->sess.key = x->me.key; /* nu's goes below */
	}
	if (ret != BW_EXIT_OK && st.fd >= 0)
		bw_identity_abandon(&st); /* nothing registered to keep */
	bw_wipe(out, sizeof(out));
	bw_identity_fini(&nu);
	return ret;
}

/* 1027 with the id from me.info; 2106 means register again. */
int
send_reconnect(struct send_ctx *x, int *denied)
{
	uint8_t field[BW_NAME_FIELD], out[RESP_CAP];
	struct req rq;
	uint16_t code = 0;
	size_t len = 0;
	int rc;

	*denied = 0;
	if (reconnect_req(x, &rq, field) != 0) {
		bw_cli_fatal("the name in me.info cannot be sent");
		return BW_EXIT_USAGE;
	}
	if (send_exchange(x, &rq, &code, out, &len) != 0) {
		bw_cli_fatal("reconnecting as '%s' failed: %s", x->me.name,
			     x->why);
		return BW_EXIT_FATAL;
	}
	if (code == BW_VAULT_RESP_RECONNECT_DENIED) {
		*denied = 1;
		return BW_EXIT_OK;
	}
	rc = unwrap_key(x, &x->me, out, len);
	bw_wipe(out, sizeof(out));
	if (rc != 0) {
		bw_cli_fatal("the server's AES key cannot be decrypted with "
			     "our private key: %s",
			     bw_strerror(rc));
		return BW_EXIT_FATAL;
	}
	if (!x->quiet)
		printf("reconnected as '%s'\n", x->me.name);
	return BW_EXIT_OK;
}
