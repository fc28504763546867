/* bulwark msg, the requests: each on its own connection, leaving in one
 * write (servers that do a single recv(1024) see it whole) and read without
 * expecting padding or a kept connection, so servers that pad and close and
 * servers that keep the connection both work. Keys are pinned on first use.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/util.h"
#include "cli/msg_cli_int.h"

#define LIST_CAP (64u * 1024u * 1024u)

int
msg_net_failure(const struct msg_ctx *x, int rc)
{
	char why[512];

	if (rc == -ECONNREFUSED) /* only a connection is refused */
		fprintf(stderr, "bulwark msg: %s\n",
			bw_cli_connect_error(why, sizeof(why), x->host, x->port,
					     rc));
	else
		fprintf(stderr, "bulwark msg: %s:%u: %s\n", x->host, x->port,
			bw_strerror(rc));
	return BW_EXIT_FATAL;
}

static int
server_error(void)
{
	printf("%s\n", MSG_ERR_TEXT);
	fflush(stdout);
	return BW_EXIT_FATAL;
}

int
msg_save(struct msg_ctx *x)
{
	int rc = bw_contacts_save(x->contacts_path, &x->cs);

	if (rc != 0) {
		fprintf(stderr, "bulwark msg: cannot write %s: %s\n",
			x->contacts_path, bw_strerror(rc));
		return BW_EXIT_USAGE;
	}
	return 0;
}

/* Sends header and payload with one write on a fresh connection. */
int
msg_open_request(struct msg_ctx *x, struct bw_session *s, uint16_t code,
		 const uint8_t *payload, size_t len, uint32_t announced)
{
	struct bw_req_hdr h;
	uint8_t *buf;
	int rc;

	bw_session_init(s, x->host, x->port, x->timeout_ms, BW_MSG_VERSION);
	s->key = msg_tls_key(x);
	if ((rc = bw_session_connect(s)) != 0)
		return rc;
	if ((buf = malloc(BW_REQ_HDR_LEN + len)) == NULL)
		return BW_ENOMEM;
	memset(&h, 0, sizeof(h));
	if (x->have_me)
		memcpy(h.client_id, x->me.id, BW_ID_LEN);
	h.version = BW_MSG_VERSION;
	h.code = code;
	h.payload_size = announced;
	bw_req_hdr_encode(&h, buf);
	if (len > 0)
		memcpy(buf + BW_REQ_HDR_LEN, payload, len);
	if ((rc = bw_session_write(s, buf, BW_REQ_HDR_LEN + len)) == 0)
		x->sent = 1;
	free(buf);
	return rc;
}

/* Reads the response header: 0 with its payload size, or an exit status
 * after saying what went wrong. */
int
msg_response_head(struct msg_ctx *x, struct bw_session *s, uint16_t want,
		  uint32_t *size)
{
	uint8_t hdr[BW_RESP_HDR_LEN];
	struct bw_resp_hdr h;
	int rc;

	if ((rc = bw_session_read(s, hdr, sizeof(hdr))) != 0)
		return msg_net_failure(x, rc);
	if (bw_resp_hdr_decode(hdr, sizeof(hdr), &h) < 0)
		return msg_net_failure(x, BW_EPROTO);
	if (!bw_reply_code_known(h.code)) {
		x->refused = 1; /* nothing was registered, sent or taken */
		fprintf(stderr, "bulwark msg: " BW_CLI_FOREIGN_FMT "\n",
			x->host, x->port);
		return server_error();
	}
	if (h.code != want)
		x->refused = 1;
	x->error_reply = h.code == BW_MSG_RESP_ERROR;
	if (h.code == BW_MSG_RESP_ERROR)
		return server_error();
	if (h.code != want) {
		fprintf(stderr,
			"bulwark msg: the server answered %u where %u was "
			"expected\n",
			h.code, want);
		return server_error();
	}
	*size = h.payload_size;
	return 0;
}

int
msg_exchange(struct msg_ctx *x, uint16_t code, const uint8_t *payload,
	     size_t len, uint16_t want, uint8_t **body, size_t *body_len,
	     size_t cap)
{
	struct bw_session s;
	uint32_t size = 0;
	uint8_t *b = NULL;
	int rc;

	*body = NULL;
	*body_len = 0;
	if ((rc = msg_open_request(x, &s, code, payload, len, (uint32_t)len)) !=
	    0) {
		bw_session_close(&s);
		return msg_net_failure(x, rc);
	}
	if ((rc = msg_response_head(x, &s, want, &size)) != 0)
		goto out;
	if (size > cap) {
		fprintf(stderr, "bulwark msg: a %u-byte answer is too large\n",
			size);
		rc = BW_EXIT_FATAL;
		goto out;
	}
	if ((b = malloc(size ? size : 1)) == NULL) {
		rc = msg_net_failure(x, BW_ENOMEM);
		goto out;
	}
	if (size > 0 && (rc = bw_session_read(&s, b, size)) != 0) {
		free(b);
		rc = msg_net_failure(x, rc);
		goto out;
	}
	*body = b;
	*body_len = size;
out:
	bw_session_close(&s); /* padding after the payload is left unread */
	return rc;
}

/* The identity is on disk before the server hears of it (me.info staged
 * with a place for the id, fsync'd): a disk that cannot take it fails the
 * registration before the name is taken for a key nobody would keep. */
int
msg_register(struct msg_ctx *x, const char *name)
{
	uint8_t payload[BW_MSG_REGISTER_LEN], spki[BW_RSA_PUB_LEN],
		*body = NULL;
	char hex[2 * BW_ID_LEN + 1];
	struct bw_identity me;
	struct bw_identity_stage st;
	size_t n;
	int rc, keep = 0;

	if (x->have_me || access(x->me_path, F_OK) == 0) {
		fprintf(stderr,
			"bulwark msg: %s exists: this client is registered "
			"already\n",
			x->me_path);
		return BW_EXIT_USAGE;
	}
	memset(&me, 0, sizeof(me));
	if (strlen(name) >= sizeof(me.name)) {
		fprintf(stderr, "bulwark msg: the name is too long\n");
		return BW_EXIT_USAGE;
	}
	memcpy(me.name, name, strlen(name) + 1);
	if ((rc = bw_rsa_generate(&me.key)) != 0 ||
	    (rc = bw_rsa_to_spki(me.key, spki)) != 0) {
		bw_identity_fini(&me);
		return msg_net_failure(x, rc);
	}
	if (bw_msg_register_encode(name, spki, payload) != 0) {
		bw_identity_fini(&me);
		fprintf(stderr, "bulwark msg: a name is 1 to 254 printable "
				"characters\n");
		return BW_EXIT_USAGE;
	}
	if ((rc = bw_identity_stage(&me, x->me_path, NULL, &st)) != 0) {
		fprintf(stderr,
			"bulwark msg: cannot write %s: %s (nothing was sent "
			"to the server)\n",
			x->me_path, bw_strerror(rc));
		bw_identity_fini(&me);
		return BW_EXIT_USAGE;
	}
	x->sent = x->refused = 0;
	x->reg_key = me.key;
	rc = msg_exchange(x, BW_MSG_REQ_REGISTER, payload, sizeof(payload),
			  BW_MSG_RESP_REGISTERED, &body, &n, BW_ID_LEN);
	x->reg_key = NULL;
	if (rc == 0 && n != BW_ID_LEN)
		rc = msg_net_failure(x, BW_EPROTO);
	if (rc == 0)
		memcpy(me.id, body, BW_ID_LEN);
	if (rc != 0 && x->refused && x->error_reply) {
		bw_cli_register_refused("bulwark msg", name, x->host, x->port);
		rc = BW_EXIT_TAKEN;
	}
	if (rc != 0 && x->sent && !x->refused) {
		/* the server may have registered the name with this key (its
		 * answer lost): the staged key is then the only one that can
		 * speak for that client, and the id is not known here */
		fprintf(stderr,
			"bulwark msg: no answer came: the server may have "
			"registered '%s'; its private key is kept in %s\n",
			name, st.tmp);
		keep = 1;
	}
	if (rc == 0) {
		bw_hex_encode(me.id, BW_ID_LEN, hex);
		if ((rc = bw_identity_commit(&st, me.id)) != 0) {
			fprintf(stderr,
				"bulwark msg: registered as %s (id %s), but "
				"%s cannot be put in place: %s; the identity "
				"is in %s\n",
				me.name, hex, x->me_path, bw_strerror(rc),
				st.tmp);
			rc = BW_EXIT_USAGE;
			keep = 1;
		}
	}
	free(body);
	if (rc != 0) {
		if (keep)
			bw_identity_keep(&st); /* said where it is */
		else if (st.fd >= 0)
			bw_identity_abandon(&st); /* the server said no */
		bw_identity_fini(&me);
		return rc;
	}
	x->me = me;
	x->have_me = 1;
	printf("registered as %s (id %s)\n", me.name, hex);
	(void)msg_show_mine(x, 0); /* what contacts pin: compared out of band */
	return 0;
}

int
msg_list(struct msg_ctx *x, int show)
{
	char name[BW_NAME_CAP], named[BW_CLI_NAME_CAP];
	uint8_t *body, id[BW_ID_LEN];
	size_t n, i;
	int rc;

	rc = msg_exchange(x, BW_MSG_REQ_LIST, NULL, 0, BW_MSG_RESP_LIST, &body,
			  &n, LIST_CAP);
	if (rc != 0)
		return rc;
	if (n % BW_MSG_LIST_ENTRY_LEN != 0) {
		free(body);
		return msg_net_failure(x, BW_EPROTO);
	}
	for (i = 0; i < n; i += BW_MSG_LIST_ENTRY_LEN) {
		if (bw_msg_list_entry_decode(body + i, BW_MSG_LIST_ENTRY_LEN,
					     id, name) != 0)
			continue; /* an entry we cannot show */
		(void)bw_contacts_add(&x->cs, id, name);
		if (show)
			printf("%s\n",
			       bw_cli_name_shown(name, named, sizeof(named)));
	}
	if (show && n == 0)
		printf("no other clients\n");
	free(body);
	x->listed = 1;
	return msg_save(x);
}

int
msg_resolve(struct msg_ctx *x, const char *name, struct bw_contact **c)
{
	int rc;

	if ((*c = bw_contacts_by_name(&x->cs, name)) != NULL)
		return 0;
	if ((rc = msg_list(x, 0)) != 0)
		return rc;
	if ((*c = bw_contacts_by_name(&x->cs, name)) != NULL)
		return 0;
	fprintf(stderr, "bulwark msg: no client called '%s'\n", name);
	return BW_EXIT_USAGE;
}

static void
show_fingerprint(const char *label, const uint8_t key[BW_RSA_PUB_LEN])
{
	char fp[BW_FINGERPRINT_CAP];

	if (bw_fingerprint(key, fp) == 0)
		fprintf(stderr, "  %-8s %s\n", label, fp);
}

/* text as one shell word in single quotes (a ' as '\''), cut to fit out:
 * a name suggested in a command the user may paste. */
static const char *
shell_word(const char *text, char *out, size_t cap)
{
	size_t o = 0;

	out[o++] = '\'';
	for (; *text != '\0' && o + 6 < cap; text++) {
		if (*text == '\'') {
			memcpy(out + o, "'\\''", 4);
			o += 4;
		} else {
			out[o++] = *text;
		}
	}
	out[o++] = '\'';
	out[o] = '\0';
	return out;
}

static int key_offered(struct msg_ctx *x, struct bw_contact *c);

/* The server gave c's name to c after another contact, whose key was
 * pinned, had it: as much a key change as a different key. */
static int
name_moved(struct msg_ctx *x, struct bw_contact *c)
{
	char shown[BW_ESC_CAP], hex[2 * BW_ID_LEN + 1], cmd[BW_ESC_CAP];

	bw_escape_display(c->name, shown, sizeof(shown));
	bw_hex_encode(c->id, BW_ID_LEN, hex);
	fprintf(stderr,
		"\nWARNING: the server now gives the name %s to ANOTHER "
		"client (id %s)\nthan the one whose key you pinned under that "
		"name.\nSomeone may be impersonating %s. Nothing will be sent "
		"to it\nuntil you accept it (only after checking with %s):\n"
		"  bulwark msg trust %s\n\n",
		shown, hex, shown, shown, shell_word(shown, cmd, sizeof(cmd)));
	(void)msg_save(x);
	return BW_EXIT_KEY_CHANGED;
}

/* The server offers c a key other than the one pinned. */
static int
key_offered(struct msg_ctx *x, struct bw_contact *c)
{
	char shown[BW_ESC_CAP], cmd[BW_ESC_CAP];

	bw_escape_display(c->name, shown, sizeof(shown));
	fprintf(stderr,
		"\nWARNING: the server gave a DIFFERENT public key for %s.\n",
		shown);
	show_fingerprint("pinned:", c->key);
	show_fingerprint("offered:", c->offered);
	fprintf(stderr,
		"Someone may be impersonating %s. Nothing will be sent to %s\n"
		"until you accept the new key (only after checking it with "
		"%s):\n  bulwark msg trust %s\n\n",
		shown, shown, shown, shell_word(shown, cmd, sizeof(cmd)));
	(void)msg_save(x);
	return BW_EXIT_KEY_CHANGED;
}

int
msg_fetch_key(struct msg_ctx *x, struct bw_contact *c)
{
	uint8_t *body, id[BW_ID_LEN];
	const uint8_t *key;
	char shown[BW_ESC_CAP], fp[BW_FINGERPRINT_CAP];
	struct bw_rsa *rsa = NULL;
	size_t n;
	int rc;

	if (c->moved)
		return name_moved(x, c);
	rc = msg_exchange(x, BW_MSG_REQ_PUBKEY, c->id, BW_ID_LEN,
			  BW_MSG_RESP_PUBKEY, &body, &n, BW_MSG_PUBKEY_LEN);
	if (rc != 0)
		return rc;
	if (bw_msg_pubkey_decode(body, n, id, &key) != 0 ||
	    memcmp(id, c->id, BW_ID_LEN) != 0 ||
	    bw_rsa_from_spki(&rsa, key, BW_RSA_PUB_LEN) != 0) {
		free(body);
		fprintf(stderr, "bulwark msg: the server sent an unusable "
				"key\n");
		return BW_EXIT_FATAL;
	}
	bw_rsa_free(rsa);
	bw_escape_display(c->name, shown, sizeof(shown));
	if (!c->has_key) {
		if (bw_contacts_pin(&x->cs, c, key) != 0) {
			free(body);
			return msg_net_failure(x, BW_ENOMEM);
		}
		if (bw_fingerprint(key, fp) == 0)
			printf("public key of %s: %s (pinned)\n", shown, fp);
	} else if (memcmp(c->key, key, BW_RSA_PUB_LEN) != 0) {
		memcpy(c->offered, key, BW_RSA_PUB_LEN);
		c->has_offered = 1;
		free(body);
		return key_offered(x, c);
	} else {
		c->has_offered = 0; /* the server is back to the pinned key */
		if (bw_fingerprint(key, fp) == 0)
			printf("public key of %s: %s\n", shown, fp);
	}
	free(body);
	return msg_save(x);
}

int
msg_trust(struct msg_ctx *x, struct bw_contact *c)
{
	char shown[BW_ESC_CAP], fp[BW_FINGERPRINT_CAP];
	char hex[2 * BW_ID_LEN + 1];

	bw_escape_display(c->name, shown, sizeof(shown));
	if (c->moved) {
		/* the name's new owner is accepted: its key is pinned on
		 * first use from now on */
		bw_contacts_accept(&x->cs, c);
		bw_hex_encode(c->id, BW_ID_LEN, hex);
		printf("%s is now the client with id %s\n", shown, hex);
		return msg_save(x);
	}
	if (!c->has_offered) {
		printf("no new key is waiting for %s\n", shown);
		return 0;
	}
	if (bw_contacts_pin(&x->cs, c, c->offered) != 0)
		return msg_net_failure(x, BW_ENOMEM);
	c->has_offered = 0;
	c->has_aes = 0; /* a key shared with the old key's owner is void */
	bw_wipe(c->aes, sizeof(c->aes));
	if (bw_fingerprint(c->key, fp) == 0)
		printf("public key of %s is now %s\n", shown, fp);
	return msg_save(x);
}

static int
send_message(struct msg_ctx *x, struct bw_contact *c, uint8_t type,
	     const uint8_t *content, size_t len)
{
	struct bw_msg_send s;
	uint8_t *payload, *body, to[BW_ID_LEN];
	uint32_t msg_id;
	size_t n;
	int rc;

	if (len > BW_MSG_CONTENT_MAX)
		return BW_EXIT_USAGE;
	if ((payload = malloc(BW_MSG_SEND_PREFIX + len)) == NULL)
		return msg_net_failure(x, BW_ENOMEM);
	memcpy(s.to, c->id, BW_ID_LEN);
	s.type = type;
	s.content_size = (uint32_t)len;
	bw_msg_send_encode(&s, payload);
	if (len > 0)
		memcpy(payload + BW_MSG_SEND_PREFIX, content, len);
	rc = msg_exchange(x, BW_MSG_REQ_SEND, payload, BW_MSG_SEND_PREFIX + len,
			  BW_MSG_RESP_STORED, &body, &n, BW_MSG_STORED_LEN);
	bw_secure_free(payload, BW_MSG_SEND_PREFIX + len);
	if (rc != 0)
		return rc;
	rc = bw_msg_stored_decode(body, n, to, &msg_id);
	free(body);
	if (rc != 0)
		return msg_net_failure(x, BW_EPROTO);
	printf("message %u stored\n", msg_id);
	return 0;
}

int
msg_send_key_request(struct msg_ctx *x, struct bw_contact *c)
{
	return send_message(x, c, BW_MSG_KEY_REQUEST, NULL, 0);
}

int
msg_send_sym_key(struct msg_ctx *x, struct bw_contact *c)
{
	uint8_t aes[BW_AES_KEY_LEN], old[BW_AES_KEY_LEN];
	uint8_t wrapped[BW_RSA_CT_LEN];
	struct bw_rsa *rsa = NULL;
	int rc, had = c->has_aes;

	/* the key the server has now, checked against the pinned one */
	if ((rc = msg_fetch_key(x, c)) != 0)
		return rc;
	if ((rc = bw_random(aes, sizeof(aes))) != 0 ||
	    (rc = bw_rsa_from_spki(&rsa, c->key, BW_RSA_PUB_LEN)) != 0 ||
	    (rc = bw_rsa_oaep_encrypt(rsa, aes, sizeof(aes), wrapped)) != 0) {
		bw_rsa_free(rsa);
		bw_wipe(aes, sizeof(aes));
		return msg_net_failure(x, rc);
	}
	bw_rsa_free(rsa);
	/* Kept before it is sent: a key the server stores that this client
	 * then fails to keep (a full disk, an interruption) would make all
	 * the contact sends with it unreadable here. */
	memcpy(old, c->aes, sizeof(old));
	memcpy(c->aes, aes, sizeof(aes));
	c->has_aes = 1;
	bw_wipe(aes, sizeof(aes));
	if ((rc = msg_save(x)) != 0) {
		fprintf(stderr, "bulwark msg: the key was not sent\n");
		goto restore;
	}
	x->sent = x->refused = 0;
	rc = send_message(x, c, BW_MSG_KEY, wrapped, sizeof(wrapped));
	if (rc == 0 || (x->sent && !x->refused)) {
		if (rc != 0)
			fprintf(stderr, "bulwark msg: no answer came: the key "
					"may have been stored, and is kept\n");
		bw_wipe(old, sizeof(old));
		return rc;
	}
	/* refused, or never sent: the contact never gets it, the one before
	 * stays */
	memcpy(c->aes, old, sizeof(old));
	c->has_aes = had;
	(void)msg_save(x);
	bw_wipe(old, sizeof(old));
	return rc;
restore:
	memcpy(c->aes, old, sizeof(old));
	c->has_aes = had;
	bw_wipe(old, sizeof(old));
	return rc;
}

int
msg_may_seal_for(struct msg_ctx *x, struct bw_contact *c)
{
	char shown[BW_ESC_CAP];

	/* a symmetric key received is not authenticated (the protocol signs
	 * nothing): one from an id the name moved to, or kept while another
	 * key is offered, may be an impostor's */
	if (c->moved)
		return name_moved(x, c);
	if (c->has_offered)
		return key_offered(x, c);
	if (c->has_aes)
		return 0;
	bw_escape_display(c->name, shown, sizeof(shown));
	if (x->menu)
		fprintf(stderr,
			"bulwark msg: no symmetric key with %s yet: send one "
			"(152) or ask for one (151)\n",
			shown);
	else
		fprintf(stderr,
			"bulwark msg: no symmetric key with %s yet: send one "
			"(bulwark msg send-key NAME) or ask for one (bulwark "
			"msg request-key NAME)\n",
			shown);
	return BW_EXIT_NO_KEY;
}

int
msg_send_text(struct msg_ctx *x, struct bw_contact *c, const char *text)
{
	uint8_t *ct = NULL;
	size_t n = 0;
	int rc;

	if ((rc = msg_may_seal_for(x, c)) != 0)
		return rc;
	if ((rc = bw_aes_seal(c->aes, (const uint8_t *)text, strlen(text), &ct,
			      &n)) != 0)
		return msg_net_failure(x, rc);
	rc = send_message(x, c, BW_MSG_TEXT, ct, n);
	bw_secure_free(ct, n);
	return rc;
}
