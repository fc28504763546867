/* The vault's conformance cases (spec/files.md): each request and reply, the
 * session on one connection, the course-sample framing, limits at their
 * edges, a restart and a few hostile inputs. One user carries the main
 * flow; a case whose step before it failed is skipped, not failed again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crc.h"
#include "bulwark/crypto.h"
#include "cli/probe_int.h"
#include "cli/probe_vault_int.h"
#include "proto/wire.h"

/* 1025 for u on c: 0 with u->id set, else -1 (the reply in *r). */
int
vp_reg(struct pconn *c, struct puser *u, struct presp *r)
{
	uint8_t name[BW_NAME_FIELD];

	pf_name(name, u->name);
	if (pf_request(c, NULL, V, REGISTER, name, sizeof(name)) != 0) {
		presp_free(r);
		memset(r, 0, sizeof(*r));
		r->rc = PC_ERROR;
		return -1;
	}
	pf_response(c, r, 64, c->p->timeout_ms);
	if (!pf_is(r, R_REGISTERED, BW_ID_LEN))
		return -1;
	memcpy(u->id, r->payload, BW_ID_LEN);
	u->registered = 1;
	return 0;
}

/* The AES key in a 2102/2105 payload, unwrapped with u's key. */
int
vp_unwrap(const struct presp *r, const struct puser *u, uint8_t aes[16])
{
	size_t n = 0;

	return r->got == 144 &&
			       bw_rsa_oaep_decrypt(u->key, r->payload + 16, 128,
						   aes, 16, &n) == 0 &&
			       n == 16
		       ? 0
		       : -1;
}

void
vp_name_key(uint8_t out[NAME_KEY_LEN], const char *name, const uint8_t pub[160])
{
	pf_name(out, name);
	memcpy(out + BW_NAME_FIELD, pub, 160);
}

void
vp_send_file(struct pconn *c, const uint8_t id[16], const uint8_t key[16],
	     const char *fname, const void *plain, size_t n, struct presp *r)
{
	uint8_t *ct = NULL, *pl;
	size_t ctn = 0;
	int rc = -1;

	presp_free(r);
	memset(r, 0, sizeof(*r));
	r->rc = PC_ERROR;
	if (bw_aes_seal(key, plain, n, &ct, &ctn) != 0)
		return;
	if ((pl = malloc(4 + BW_NAME_FIELD + ctn)) != NULL) {
		pf_put_le32(pl, (uint32_t)ctn);
		pf_name(pl + 4, fname);
		memcpy(pl + 4 + BW_NAME_FIELD, ct, ctn);
		rc = pf_request(c, id, V, SEND_FILE, pl,
				(uint32_t)(4 + BW_NAME_FIELD + ctn));
		free(pl);
	}
	bw_secure_free(ct, ctn);
	if (rc == 0)
		pf_response(c, r, 512, c->p->timeout_ms);
}

int
vp_session(struct vrun *v)
{
	uint8_t n[BW_NAME_FIELD], aes[BW_AES_KEY_LEN];
	struct presp r = {0};
	/* the case before this one failed: what it left on the connection
	 * (a reply still to come, a server thread gone) is not trusted */
	int failed = v->p->n >= 2 && v->p->cases[v->p->n - 2].verdict == P_FAIL;
	int rc = -1;

	if (v->c.fd >= 0 && !failed && pc_closes(&v->c, 100) == 0)
		return 0;
	pc_close(&v->c);
	if (!v->keyed)
		return -1;
	probe_say(v->p, "  a new session connection, with 1027");
	if (pc_open(v->p, &v->c) != 0)
		return -1;
	pf_name(n, v->a.name);
	if (pf_request(&v->c, v->a.id, V, RECONNECT, n, sizeof(n)) == 0) {
		pf_response(&v->c, &r, 512, v->p->timeout_ms);
		if (pf_is(&r, R_RECONNECT, 144) &&
		    vp_unwrap(&r, &v->a, aes) == 0) {
			memcpy(v->aes, aes, sizeof(aes));
			rc = 0;
		}
	}
	presp_free(&r);
	bw_wipe(aes, sizeof(aes));
	return rc;
}

int
vp_verdict(struct vrun *v, uint16_t code, const char *fname)
{
	uint8_t n[BW_NAME_FIELD];
	struct presp r = {0};
	int ok;

	pf_name(n, fname);
	if (pf_request(&v->c, v->a.id, V, code, n, sizeof(n)) != 0)
		return -1;
	pf_response(&v->c, &r, 64, v->p->timeout_ms);
	ok = pf_is(&r, R_ACK, 16);
	presp_free(&r);
	return ok ? 0 : -1;
}

/* --- 1025 ------------------------------------------------------------- */

void
vp_register_cases(struct vrun *v)
{
	struct probe *p = v->p;
	struct presp r = {0};
	uint8_t name[BW_NAME_FIELD];
	char big[255];

	if (!probe_begin(p, "vault.register.fresh", S_REG,
			 "1025 with a new name is answered 2100 with the id "
			 "(16 bytes), on a connection that stays open",
			 0)) {
		if (pc_open(p, &v->c) != 0)
			probe_fail(p, "no connection");
		else if (vp_reg(&v->c, &v->a, &r) != 0)
			pf_expect(p, &r, R_REGISTERED, 16, "1025");
		else
			probe_pass(p, "2100");
		presp_free(&r);
	}
	if (!probe_begin(p, "vault.register.taken", S_REG,
			 "1025 with a name taken is answered 2101, no payload",
			 0)) {
		pf_name(name, v->a.name);
		if (!v->a.registered)
			probe_skip(p, "no user was registered");
		else if (pf_exchange(p, NULL, V, REGISTER, name, sizeof(name),
				     &r, 64) == 0 &&
			 pf_is(&r, R_TAKEN, 0))
			probe_pass(p, "2101");
		else
			pf_expect(p, &r, R_TAKEN, 0, "1025 again");
		presp_free(&r);
	}
	if (!probe_begin(p, "vault.register.longest_name", S_REG,
			 "a name of 254 characters (the field's most) is "
			 "taken",
			 0)) {
		memset(big, 'n', 254);
		memcpy(big, v->a.name, strlen(v->a.name));
		big[254] = '\0';
		pf_name(name, big);
		if (pf_exchange(p, NULL, V, REGISTER, name, sizeof(name), &r,
				64) == 0 &&
		    pf_is(&r, R_REGISTERED, 16))
			probe_pass(p, "2100");
		else
			pf_expect(p, &r, R_REGISTERED, 16, "254 characters");
		presp_free(&r);
	}
	if (!probe_begin(p, "vault.register.no_nul", S_REG,
			 "a name field with no NUL in its 255 bytes is "
			 "malformed: 2107",
			 0)) {
		memset(name, 'x', sizeof(name));
		memcpy(name, v->a.name, strlen(v->a.name));
		if (pf_exchange(p, NULL, V, REGISTER, name, sizeof(name), &r,
				64) == 0 &&
		    pf_is(&r, R_ERROR, 0))
			probe_pass(p, "2107");
		else
			pf_expect(p, &r, R_ERROR, 0, "no NUL");
		presp_free(&r);
	}
	if (!probe_begin(p, "vault.register.control", S_REG,
			 "a name with a control character before its NUL is "
			 "malformed: 2107",
			 0)) {
		probe_name(p, "ctl", big, sizeof(big));
		big[2] = '\x1b';
		pf_name(name, big);
		if (pf_exchange(p, NULL, V, REGISTER, name, sizeof(name), &r,
				64) == 0 &&
		    pf_is(&r, R_ERROR, 0))
			probe_pass(p, "2107");
		else
			pf_expect(p, &r, R_ERROR, 0, "ESC in the name");
		presp_free(&r);
	}
}

/* --- 1026 ------------------------------------------------------------- */

void
vp_key_cases(struct vrun *v)
{
	struct probe *p = v->p;
	uint8_t pl[NAME_KEY_LEN];
	struct presp r = {0};
	struct pconn c = {NULL, -1};

	if (!probe_begin(
		    p, "vault.key.stored", S_KEY,
		    "1026 is answered 2102: the id and the AES key wrapped "
		    "with RSA-OAEP (SHA-1) for the key sent, 144 bytes",
		    0)) {
		vp_name_key(pl, v->a.name, v->a.pub);
		if (!v->a.registered)
			probe_skip(p, "no user was registered");
		else if (pf_request(&v->c, v->a.id, V, PUBKEY, pl,
				    sizeof(pl)) != 0)
			probe_fail(p, "the session's connection is gone");
		else {
			pf_response(&v->c, &r, 512, p->timeout_ms);
			if (pf_expect(p, &r, R_KEY, 144, "1026") != 0)
				;
			else if (memcmp(r.payload, v->a.id, 16) != 0)
				probe_fail(p, "2102 names another id");
			else if (vp_unwrap(&r, &v->a, v->aes) != 0)
				probe_fail(p, "the 128 bytes after the id do "
					      "not unwrap to a 16-byte key");
			else
				v->keyed = probe_pass(p, "2102") == 0;
			presp_free(&r);
		}
	}
	if (!probe_begin(p, "vault.key.not_spki", S_KEY,
			 "a public key that is not an RSA SPKI is refused: "
			 "2107",
			 0)) {
		struct puser u;

		if (puser_new(p, "badkey", &u) != 0 || pc_open(p, &c) != 0)
			probe_skip(p, "no user or connection");
		else if (vp_reg(&c, &u, &r) != 0)
			probe_skip(p, "the 1025 before it failed");
		else {
			presp_free(&r);
			memset(u.pub, 0xa5, sizeof(u.pub));
			vp_name_key(pl, u.name, u.pub);
			if (pf_request(&c, u.id, V, PUBKEY, pl, sizeof(pl)) ==
			    0)
				pf_response(&c, &r, 512, p->timeout_ms);
			if (pf_is(&r, R_ERROR, 0))
				probe_pass(p, "2107");
			else
				pf_expect(p, &r, R_ERROR, 0, "garbage key");
		}
		presp_free(&r);
		pc_close(&c);
		puser_free(&u);
	}
	if (!probe_begin(p, "vault.key.other_name", S_KEY,
			 "1026 is taken only when the header's id and the name "
			 "are one client's: another's name gets 2107",
			 0)) {
		if (!v->a.registered || !v->b.registered)
			probe_skip(p, "two users are needed");
		else {
			vp_name_key(pl, v->b.name, v->a.pub);
			if (pf_exchange(p, v->a.id, V, PUBKEY, pl, sizeof(pl),
					&r, 512) == 0 &&
			    pf_is(&r, R_ERROR, 0))
				probe_pass(p, "2107");
			else
				pf_expect(p, &r, R_ERROR, 0,
					  "a's id with b's name");
		}
		presp_free(&r);
	}
}

/* --- 1028 to 1031 ----------------------------------------------------- */

void
vp_file_cases(struct vrun *v)
{
	struct probe *p = v->p;
	static const char data[] = "123456789";
	struct presp r = {0};
	char fname[64];

	probe_name(p, "file", fname, sizeof(fname));
	if (!probe_begin(
		    p, "vault.file.received", S_FILE,
		    "1028 is answered 2103: id, the content size sent, the "
		    "file name and the cksum of the plaintext (279 bytes)",
		    0)) {
		if (!v->keyed)
			probe_skip(p, "no AES key (1026 failed)");
		else if (vp_send_file(&v->c, v->a.id, v->aes, fname, data, 9,
				      &r),
			 pf_expect(p, &r, R_FILE, FILE_ACK_LEN, "1028") != 0)
			;
		else if (memcmp(r.payload, v->a.id, 16) != 0 ||
			 pf_le32(r.payload + 16) != 16 ||
			 strncmp((char *)r.payload + 20, fname, 255) != 0)
			probe_fail(p, "2103's id, content size or file name is "
				      "not the request's");
		else if (pf_le32(r.payload + 275) != 930766865u)
			probe_fail(p,
				   "cksum of \"123456789\" is 930766865, "
				   "2103 says %u",
				   pf_le32(r.payload + 275));
		else
			v->filed = probe_pass(p, "2103, cksum 930766865") == 0;
		presp_free(&r);
	}
	if (!probe_begin(p, "vault.crc.ok", S_CRC,
			 "1029 is answered 2104 with the id", 0)) {
		uint8_t n[BW_NAME_FIELD];

		pf_name(n, fname);
		if (!v->filed)
			probe_skip(p, "no file was received");
		else if (pf_request(&v->c, v->a.id, V, CRC_OK, n, sizeof(n)) !=
			 0)
			probe_fail(p, "the session's connection is gone");
		else {
			pf_response(&v->c, &r, 64, p->timeout_ms);
			if (pf_expect(p, &r, R_ACK, 16, "1029") != 0)
				;
			else if (pc_closes(&v->c, 300) == 1)
				probe_deviate(p,
					      "2104, then the server closed "
					      "the connection (a client that "
					      "sends its next file on it "
					      "fails)");
			else
				probe_pass(p, "2104");
		}
		presp_free(&r);
	}
	if (!probe_begin(p, "vault.crc.retry", S_CRC,
			 "1030 gets no reply, and the 1028 that follows on the "
			 "same connection is served",
			 0)) {
		uint8_t n[BW_NAME_FIELD];
		char got[96];

		probe_name(p, "retry", fname, sizeof(fname));
		pf_name(n, fname);
		if (!v->keyed)
			probe_skip(p, "no AES key (1026 failed)");
		else if (vp_session(v) != 0)
			probe_fail(p, "no session: the connection closed and a "
				      "1027 on a new one got no 2105");
		else if (vp_send_file(&v->c, v->a.id, v->aes, fname, "a", 1,
				      &r),
			 pf_expect(p, &r, R_FILE, FILE_ACK_LEN, "1028") != 0)
			;
		else if (pf_le32(r.payload + 275) != 1220704766u)
			probe_fail(p,
				   "cksum of \"a\" is 1220704766, 2103 says "
				   "%u",
				   pf_le32(r.payload + 275));
		else if (presp_free(&r),
			 pf_request(&v->c, v->a.id, V, CRC_RETRY, n,
				    sizeof(n)) != 0)
			probe_fail(p, "the connection is gone");
		else if (pf_response(&v->c, &r, 64, 1000), r.rc != PC_TIMEOUT)
			probe_fail(p, "1030 was answered: %s",
				   presp_str(&r, got, sizeof(got)));
		else if (vp_send_file(&v->c, v->a.id, v->aes, fname, "a", 1,
				      &r),
			 pf_expect(p, &r, R_FILE, FILE_ACK_LEN,
				   "1028 after 1030") != 0)
			;
		else if (presp_free(&r),
			 pf_request(&v->c, v->a.id, V, CRC_GIVEUP, n,
				    sizeof(n)) != 0)
			probe_fail(p, "the connection is gone");
		else {
			pf_response(&v->c, &r, 64, p->timeout_ms);
			if (pf_expect(p, &r, R_ACK, 16, "1031") == 0)
				probe_pass(p, "no reply to 1030; 2103; 1031 "
					      "answered 2104");
		}
		presp_free(&r);
	}
	if (!probe_begin(p, "vault.file.empty", S_FILE,
			 "an empty file: 16 bytes of ciphertext, cksum "
			 "4294967295",
			 0)) {
		probe_name(p, "empty", fname, sizeof(fname));
		if (!v->keyed)
			probe_skip(p, "no AES key (1026 failed)");
		else if (vp_session(v) != 0)
			probe_fail(p, "no session: the connection closed and a "
				      "1027 on a new one got no 2105");
		else if (vp_send_file(&v->c, v->a.id, v->aes, fname, "", 0, &r),
			 pf_expect(p, &r, R_FILE, FILE_ACK_LEN, "1028") != 0)
			;
		else if (pf_le32(r.payload + 275) != 4294967295u)
			probe_fail(p, "2103 says %u", pf_le32(r.payload + 275));
		else if (vp_verdict(v, CRC_OK, fname) != 0)
			probe_fail(p, "the 1029 that followed got no 2104");
		else
			probe_pass(p, "cksum 4294967295");
		presp_free(&r);
	}
}
