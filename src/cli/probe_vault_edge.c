/* The vault's conformance cases past the main flow: reconnection, framing
 * (one session per connection, the course sample's padded style,
 * pipelined and split requests), hostile input the server must survive,
 * and what a restart keeps; and the suite's order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "cli/probe_int.h"
#include "cli/probe_vault_int.h"
#include "proto/wire.h"

/* --- 1027 ------------------------------------------------------------- */

static void
reconnect(struct vrun *v, const char *id, const char *clause,
	  const uint8_t *hid, const char *name, int accepted)
{
	struct probe *p = v->p;
	uint8_t n[BW_NAME_FIELD], aes[16];
	struct presp r = {0};

	if (probe_begin(p, id, S_REC, clause, 0))
		return;
	pf_name(n, name);
	if (pf_exchange(p, hid, V, RECONNECT, n, sizeof(n), &r, 512),
	    pf_expect(p, &r, accepted ? R_RECONNECT : R_REFUSED,
		      accepted ? 144 : 16, "1027") != 0)
		;
	else if (memcmp(r.payload, hid, 16) != 0)
		probe_fail(p, "the reply's id is not the header's");
	else if (!accepted)
		probe_pass(p, "2106 with the header's id");
	else if (vp_unwrap(&r, &v->a, aes) != 0)
		probe_fail(p, "2105's key does not unwrap with the key sent "
			      "in 1026");
	else if (memcmp(aes, v->aes, 16) == 0)
		probe_fail(p, "2105 gave the key 2102 gave: keys must be "
			      "fresh on every 1026 and 1027");
	else
		probe_pass(p, "2105 with a fresh AES key");
	presp_free(&r);
}

static void
reconnect_cases(struct vrun *v)
{
	uint8_t rnd[16];

	if (v->keyed)
		reconnect(v, "vault.reconnect.accepted",
			  "1027 with the id and name of a client with a key "
			  "is answered 2105 and a fresh AES key",
			  v->a.id, v->a.name, 1);
	if (bw_random(rnd, sizeof(rnd)) == 0)
		reconnect(v, "vault.reconnect.unknown",
			  "1027 from an unknown id is answered 2106 with the "
			  "header's id",
			  rnd, v->a.name, 0);
	if (v->a.registered && v->b.registered) {
		reconnect(v, "vault.reconnect.other_name",
			  "1027 whose name is another client's is answered "
			  "2106",
			  v->a.id, v->b.name, 0);
		reconnect(v, "vault.reconnect.no_key",
			  "1027 from a client with no public key on record is "
			  "answered 2106",
			  v->b.id, v->b.name, 0);
	}
}

/* --- framing ---------------------------------------------------------- */

/* A 1025 for a new name "<prefix>...", header and payload, at out. */
static void
reg_bytes(struct probe *p, const char *prefix,
	  uint8_t out[BW_REQ_HDR_LEN + BW_NAME_FIELD])
{
	char name[64];

	pf_hdr(out, NULL, V, REGISTER, BW_NAME_FIELD);
	probe_name(p, prefix, name, sizeof(name));
	pf_name(out + BW_REQ_HDR_LEN, name);
}

/* Whether a fresh 1025 gets its 2100 (the server survived). */
static int
serves(struct probe *p)
{
	struct puser u;
	struct presp r = {0};
	struct pconn c = {NULL, -1};
	int ok = 0;

	memset(&u, 0, sizeof(u));
	probe_name(p, "alive", u.name, sizeof(u.name));
	if (pc_open(p, &c) == 0) {
		ok = vp_reg(&c, &u, &r) == 0;
		presp_free(&r);
		pc_close(&c);
	}
	return ok;
}

static void
framing_session(struct probe *p)
{
	struct puser u;
	struct presp r = {0};
	struct pconn c = {NULL, -1};
	char extra[64];
	size_t got = 0;
	int rc;

	if (probe_begin(p, "vault.framing.session", S_FRAME,
			"replies are exactly their size and the connection "
			"stays open for the next request",
			0))
		return;
	memset(&u, 0, sizeof(u));
	probe_name(p, "sess", u.name, sizeof(u.name));
	if (pc_open(p, &c) != 0 || vp_reg(&c, &u, &r) != 0) {
		pf_expect(p, &r, R_REGISTERED, 16, "1025");
	} else {
		rc = pc_recv(&c, extra, sizeof(extra), 1000, &got);
		if (got > 0)
			probe_deviate(p,
				      "%zu bytes followed the 2100 (replies "
				      "padded to a request that was not)",
				      got);
		else if (rc == PC_CLOSED)
			probe_deviate(p, "the server closed after one reply "
					 "(a client sending its session on "
					 "one connection fails)");
		else
			probe_pass(p, "exact, still open");
	}
	presp_free(&r);
	pc_close(&c);
}

static void
framing_padded(struct probe *p)
{
	uint8_t req[BW_PAD_UNIT];
	struct presp r = {0};
	struct pconn c = {NULL, -1};

	if (probe_begin(p, "vault.framing.padded", S_FRAME,
			"a request zero-padded to 1024 bytes is answered "
			"padded to 1024 bytes, then the connection is closed",
			0))
		return;
	memset(req, 0, sizeof(req));
	reg_bytes(p, "pad", req);
	if (pc_open(p, &c) != 0 || pc_send(&c, req, sizeof(req)) != 0) {
		probe_fail(p, "no connection");
		pc_close(&c);
		return;
	}
	pf_response(&c, &r, 64, p->timeout_ms);
	if (pf_expect(p, &r, R_REGISTERED, 16, "padded 1025") == 0)
		pf_padded_end(&c, &r);
	presp_free(&r);
	pc_close(&c);
}

static void
framing_pipelined(struct probe *p)
{
	uint8_t two[2 * (BW_REQ_HDR_LEN + BW_NAME_FIELD)];
	struct presp r1 = {0}, r2 = {0};
	struct pconn c = {NULL, -1};
	int k;

	if (probe_begin(p, "vault.framing.pipelined", S_FRAME,
			"two requests in one write get two replies, in order",
			0))
		return;
	for (k = 0; k < 2; k++)
		reg_bytes(p, "pipe",
			  two + k * (BW_REQ_HDR_LEN + BW_NAME_FIELD));
	if (pc_open(p, &c) != 0 || pc_send(&c, two, sizeof(two)) != 0)
		probe_fail(p, "no connection");
	else {
		pf_response(&c, &r1, 64, p->timeout_ms);
		pf_response(&c, &r2, 64, p->timeout_ms);
		if (pf_expect(p, &r1, R_REGISTERED, 16, "the first") == 0 &&
		    pf_expect(p, &r2, R_REGISTERED, 16, "the second") == 0)
			probe_pass(p, "two 2100s");
	}
	presp_free(&r1);
	presp_free(&r2);
	pc_close(&c);
}

static void
framing_split(struct probe *p)
{
	uint8_t req[BW_REQ_HDR_LEN + BW_NAME_FIELD];
	struct presp r = {0};
	struct pconn c = {NULL, -1};

	if (probe_begin(p, "vault.framing.split", S_FRAME,
			"a request that arrives in pieces (40 bytes, 50 ms "
			"apart) is served",
			0))
		return;
	reg_bytes(p, "split", req);
	if (pc_open(p, &c) != 0 ||
	    pc_send_slowly(&c, req, sizeof(req), 40, 50) != 0)
		probe_fail(p, "no connection");
	else {
		pf_response(&c, &r, 64, p->timeout_ms);
		if (pf_expect(p, &r, R_REGISTERED, 16, "the split 1025") == 0)
			probe_pass(p, "2100");
	}
	presp_free(&r);
	pc_close(&c);
}

static void
framing_unknown(struct probe *p)
{
	uint8_t n[BW_NAME_FIELD];
	struct presp r = {0};
	struct pconn c = {NULL, -1};
	char got[96];

	if (probe_begin(p, "vault.framing.unknown_code", S_FRAME,
			"a request code the spec does not have is answered "
			"2107 or closes the connection",
			0))
		return;
	pf_name(n, "x");
	if (pc_open(p, &c) != 0 ||
	    pf_request(&c, NULL, V, 1099, n, sizeof(n)) != 0)
		probe_fail(p, "no connection");
	else {
		pf_response(&c, &r, 64, p->timeout_ms);
		if (pf_is(&r, R_ERROR, 0) || r.rc == PC_CLOSED)
			probe_pass(p, "%s", presp_str(&r, got, sizeof(got)));
		else
			probe_deviate(p, "1099 got %s",
				      presp_str(&r, got, sizeof(got)));
		presp_free(&r);
	}
	pc_close(&c);
}

/* --- hostile ---------------------------------------------------------- */

/* Sends bytes (n of them, from fill) and then resets; the case passes when
 * a fresh 1025 is served afterwards. */
static void
hostile(struct probe *p, const char *id, const char *clause, const uint8_t *b,
	size_t n)
{
	struct pconn c = {NULL, -1};

	if (probe_begin(p, id, S_HOSTILE, clause, P_HOSTILE))
		return;
	if (pc_open(p, &c) == 0) {
		(void)pc_send(&c, b, n);
		pc_abort(&c);
	}
	if (serves(p))
		probe_pass(p, "still serving");
	else {
		p->stopped = 1;
		probe_fail(p, "the server no longer answers a 1025");
	}
}

static void
hostile_cases(struct vrun *v)
{
	enum { GARBAGE = 64 * 1024 };
	uint8_t *g = malloc(GARBAGE);

	if (g == NULL)
		return;
	memset(g, 0, GARBAGE);
	pf_hdr(g, v->a.id, V, SEND_FILE, 0xffffffffu);
	pf_put_le32(g + BW_REQ_HDR_LEN, 0xffffffffu - 259u);
	pf_name(g + BW_REQ_HDR_LEN + 4, "huge");
	hostile(v->p, "vault.hostile.huge_size",
		"a 1028 announcing 4 GiB, cut off after 64 KiB, leaves the "
		"server serving",
		g, GARBAGE);
	if (bw_random(g, GARBAGE) == 0)
		hostile(v->p, "vault.hostile.garbage",
			"64 KiB of random bytes leave the server serving", g,
			GARBAGE);
	hostile(v->p, "vault.hostile.half_header",
		"half a header and a reset leave the server serving", g, 10);
	free(g);
}

static void
traversal(struct vrun *v)
{
	struct probe *p = v->p;
	struct presp r = {0};
	char fname[96], got[96];

	if (probe_begin(p, "vault.hostile.traversal", S_HOSTILE,
			"a file name of ../../ is never a path: it is stored "
			"sanitised (2103) or refused (2107)",
			P_HOSTILE))
		return;
	snprintf(fname, sizeof(fname), "../../../../tmp/probe-%s", p->tag);
	if (!v->keyed)
		probe_skip(p, "no AES key (1026 failed)");
	else if (vp_session(v) != 0)
		probe_fail(p, "no session: the connection closed and a 1027 on "
			      "a new one got no 2105");
	else if (vp_send_file(&v->c, v->a.id, v->aes, fname, "x", 1, &r),
		 pf_is(&r, R_ERROR, 0))
		probe_pass(p, "2107");
	else if (!pf_is(&r, R_FILE, FILE_ACK_LEN))
		probe_fail(p, "got %s", presp_str(&r, got, sizeof(got)));
	else if (vp_verdict(v, CRC_GIVEUP, fname) != 0)
		probe_fail(p, "the 1031 that gave the file up got no 2104");
	else
		probe_pass(p, "2103, then given up (1031)");
	presp_free(&r);
}

static void
restart_cases(struct vrun *v)
{
	struct probe *p = v->p;
	uint8_t n[BW_NAME_FIELD];
	struct presp r = {0};

	if (probe_begin(p, "vault.restart.registration", S_RESTART,
			"a client registered with a key is known after a "
			"restart: 1027 gets 2105",
			P_RESTART))
		return;
	pf_name(n, v->a.name);
	if (!v->keyed)
		probe_skip(p, "no user with a key");
	else if (pc_close(&v->c), probe_restart(p) != 0)
		probe_fail(p, "the restart failed");
	else if (pf_exchange(p, v->a.id, V, RECONNECT, n, sizeof(n), &r, 512) ==
			 0 &&
		 pf_is(&r, R_RECONNECT, 144))
		probe_pass(p, "2105 after the restart");
	else
		pf_expect(p, &r, R_RECONNECT, 144, "1027 after the restart");
	presp_free(&r);
}

void
probe_vault(struct probe *p)
{
	struct vrun v;
	struct presp r = {0};
	struct pconn c = {NULL, -1};

	memset(&v, 0, sizeof(v));
	v.p = p;
	v.c.fd = -1;
	if (puser_new(p, "probe", &v.a) != 0 ||
	    puser_new(p, "other", &v.b) != 0) {
		fprintf(stderr, "bulwark probe: no RSA key could be made\n");
		return;
	}
	vp_register_cases(&v);
	if (pc_open(p, &c) == 0) {
		(void)vp_reg(&c, &v.b, &r);
		presp_free(&r);
		pc_close(&c);
	}
	vp_key_cases(&v);
	vp_file_cases(&v);
	traversal(&v);
	reconnect_cases(&v);
	framing_session(p);
	framing_padded(p);
	framing_pipelined(p);
	framing_split(p);
	framing_unknown(p);
	hostile_cases(&v);
	restart_cases(&v);
	pc_close(&v.c);
	puser_free(&v.a);
	puser_free(&v.b);
}
