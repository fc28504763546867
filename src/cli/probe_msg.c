/* The messenger's conformance cases (spec/messages.md): register, list,
 * public keys, each message type sent and pulled back, deletion once
 * delivered and only then, the version byte ignored, the course sample's
 * padded style, a restart and a few hostile inputs. Two users, a (sender)
 * and b (recipient), carry the flow.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "cli/probe_int.h"
#include "cli/probe_msg_int.h"
#include "proto/wire.h"

int
mp_reg(struct pconn *c, struct puser *u, struct presp *r)
{
	uint8_t pl[255 + 160];

	pf_name(pl, u->name);
	memcpy(pl + 255, u->pub, 160);
	presp_free(r);
	memset(r, 0, sizeof(*r));
	r->rc = PC_ERROR;
	if (pf_request(c, NULL, V, REGISTER, pl, sizeof(pl)) != 0)
		return -1;
	pf_response(c, r, 64, c->p->timeout_ms);
	if (!pf_is(r, R_REGISTERED, 16))
		return -1;
	memcpy(u->id, r->payload, 16);
	u->registered = 1;
	return 0;
}

void
mp_send(struct pconn *c, const uint8_t *from, uint8_t version,
	const uint8_t to[16], uint8_t type, const uint8_t *content, uint32_t n,
	uint32_t size_field, struct presp *r)
{
	uint8_t pl[16 + 1 + 4 + 128];

	presp_free(r);
	memset(r, 0, sizeof(*r));
	r->rc = PC_ERROR;
	if (n > 128)
		return;
	memcpy(pl, to, 16);
	pl[16] = type;
	pf_put_le32(pl + 17, size_field);
	if (n > 0)
		memcpy(pl + 21, content, n);
	if (pf_request(c, from, version, SEND, pl, 21 + n) == 0)
		pf_response(c, r, 64, c->p->timeout_ms);
}

struct pconn *
mp_conn(struct mrun *m, struct pconn *c)
{
	if (m->per_request || c->fd < 0) {
		pc_end(c, 1000);
		(void)pc_open(m->p, c);
	}
	return c;
}

int
mp_ask(struct mrun *m, struct pconn *c, const struct puser *u, uint16_t code,
       const void *payload, uint32_t n, struct presp *r, size_t cap)
{
	if (pf_request(mp_conn(m, c), u->id, V, code, payload, n) != 0) {
		probe_fail(m->p, "the session's connection is gone");
		return -1;
	}
	pf_response(c, r, cap, m->p->timeout_ms);
	return 0;
}

void
mp_from_stranger(struct probe *p, uint16_t code, const void *payload,
		 uint32_t n, size_t cap, const char *what)
{
	struct presp r = {0};
	uint8_t rnd[16];

	if (bw_random(rnd, 16) == 0 &&
	    pf_exchange(p, rnd, V, code, payload, n, &r, cap) == 0 &&
	    pf_is(&r, R_ERROR, 0))
		probe_pass(p, "9000");
	else
		pf_expect(p, &r, R_ERROR, 0, what);
	presp_free(&r);
}

void
mp_register_cases(struct mrun *m)
{
	struct probe *p = m->p;
	struct presp r = {0};
	struct pconn c = {NULL, -1};

	if (!probe_begin(p, "msg.register.fresh", S_REG,
			 "600 with a new name and a key is answered 2100 with "
			 "the id (16 bytes)",
			 0)) {
		if (pc_open(p, &m->ca) != 0 || mp_reg(&m->ca, &m->a, &r) != 0)
			pf_expect(p, &r, R_REGISTERED, 16, "600");
		else
			probe_pass(p, "2100");
		/* closed, or padding after the reply: msg.framing.session
		 * says so; the flow goes on a connection per request */
		m->per_request = m->a.registered && pc_closes(&m->ca, 300) != 0;
		if (m->per_request)
			probe_say(p, "  the server takes one request per "
				     "connection: so will the probe");
	}
	if (pc_open(p, &m->cb) == 0)
		(void)mp_reg(&m->cb, &m->b, &r);
	if (!probe_begin(p, "msg.register.taken", S_REG,
			 "600 with a name taken is answered 9000", 0)) {
		struct puser again = m->a;

		if (!m->a.registered)
			probe_skip(p, "no user was registered");
		else if (pc_open(p, &c) != 0 || mp_reg(&c, &again, &r) == 0 ||
			 pf_expect(p, &r, R_ERROR, 0, "600 again") == 0)
			probe_end(p, r.code == R_ERROR ? P_PASS : P_FAIL, "%u",
				  r.code);
		pc_close(&c);
	}
	if (!probe_begin(p, "msg.register.printable_name", S_REG,
			 "a name of printable ASCII (a space, an apostrophe, a "
			 "dot) is taken",
			 0)) {
		struct puser u;

		if (puser_new(p, "Ann O'Neil.", &u) != 0 || pc_open(p, &c) != 0)
			probe_skip(p, "no key or connection");
		else if (mp_reg(&c, &u, &r) == 0)
			probe_pass(p, "2100 for '%s'", u.name);
		else if (r.rc == 0 && r.code == R_ERROR)
			probe_deviate(p,
				      "'%s' refused (9000): a server that "
				      "takes letters and digits only",
				      u.name);
		else
			pf_expect(p, &r, R_REGISTERED, 16, "600");
		pc_close(&c);
		puser_free(&u);
	}
	presp_free(&r);
}

void
mp_list_cases(struct mrun *m)
{
	struct probe *p = m->p;
	struct presp r = {0};
	int seen_b = 0, seen_a = 0;
	size_t i;

	if (!probe_begin(
		    p, "msg.list.others", S_LIST,
		    "601 is answered 2101: id + name[255] for every client "
		    "but the one asking",
		    0)) {
		if (!m->a.registered || !m->b.registered)
			probe_skip(p, "two users are needed");
		else if (mp_ask(m, &m->ca, &m->a, LIST, NULL, 0, &r,
				PULL_CAP) != 0)
			; /* (failed: the connection is gone) */
		else if (r.rc != 0 || r.code != R_LIST)
			pf_expect(p, &r, R_LIST, 0, "601");
		else if (r.size % ENTRY_LEN != 0 || r.got != r.size)
			probe_fail(p,
				   "2101 of %u bytes is not whole entries "
				   "of 271",
				   r.size);
		else {
			for (i = 0; i < r.size; i += ENTRY_LEN) {
				const uint8_t *e = r.payload + i;

				seen_a |= memcmp(e, m->a.id, 16) == 0;
				seen_b |= memcmp(e, m->b.id, 16) == 0 &&
					  strncmp((const char *)e + 16,
						  m->b.name, 255) == 0;
			}
			if (!seen_b)
				probe_fail(p, "the other user is not listed "
					      "(by id and name)");
			else if (seen_a)
				probe_fail(p, "the requester is listed");
			else
				probe_pass(p, "%u clients", r.size / ENTRY_LEN);
		}
	}
	presp_free(&r);
	if (!probe_begin(p, "msg.list.unknown", S_LIST,
			 "601 from an unknown id is answered 9000", 0))
		mp_from_stranger(p, LIST, NULL, 0, 64, "601");
}

void
mp_key_cases(struct mrun *m)
{
	struct probe *p = m->p;
	struct presp r = {0};
	uint8_t rnd[16];

	if (!probe_begin(p, "msg.key.known", S_KEY,
			 "602 is answered 2102: the target's id and the key it "
			 "registered (176 bytes)",
			 0)) {
		if (!m->a.registered || !m->b.registered)
			probe_skip(p, "two users are needed");
		else if (mp_ask(m, &m->ca, &m->a, PUBKEY, m->b.id, 16, &r,
				512) != 0 ||
			 pf_expect(p, &r, R_KEY, 176, "602") != 0)
			;
		else if (memcmp(r.payload, m->b.id, 16) != 0 ||
			 memcmp(r.payload + 16, m->b.pub, 160) != 0)
			probe_fail(p, "2102 is not the target's id and key");
		else
			probe_pass(p, "2102");
	}
	presp_free(&r);
	if (!probe_begin(p, "msg.key.unknown_requester", S_KEY,
			 "602 from an unknown id is answered 9000", 0)) {
		if (!m->b.registered)
			probe_skip(p, "no user was registered");
		else
			mp_from_stranger(p, PUBKEY, m->b.id, 16, 512, "602");
	}
	if (!probe_begin(p, "msg.key.unknown", S_KEY,
			 "602 for an unknown target is answered 9000", 0)) {
		if (!m->a.registered)
			probe_skip(p, "no user was registered");
		else if (bw_random(rnd, 16) == 0 &&
			 pf_exchange(p, m->a.id, V, PUBKEY, rnd, 16, &r, 64) ==
				 0 &&
			 pf_is(&r, R_ERROR, 0))
			probe_pass(p, "9000");
		else
			pf_expect(p, &r, R_ERROR, 0, "602");
	}
	presp_free(&r);
}

static void
send_one(struct mrun *m, const char *id, const char *clause, uint8_t type,
	 uint32_t n, uint8_t version)
{
	struct probe *p = m->p;
	struct sent *s = &m->sent[m->nsent];
	struct presp r = {0};

	if (probe_begin(p, id, S_SEND, clause, 0))
		return;
	s->type = type;
	s->size = n;
	if (!m->a.registered || !m->b.registered)
		probe_skip(p, "two users are needed");
	else if (bw_random(s->content, n) != 0)
		probe_fail(p, "no randomness");
	else if (mp_send(mp_conn(m, &m->ca), m->a.id, version, m->b.id, type,
			 s->content, n, n, &r),
		 pf_expect(p, &r, R_STORED, 20, "603") != 0)
		;
	else if (memcmp(r.payload, m->b.id, 16) != 0)
		probe_fail(p, "2103 names another recipient");
	else {
		s->id = pf_le32(r.payload + 16);
		m->nsent++;
		probe_pass(p, "2103, message %u", s->id);
	}
	presp_free(&r);
}

static void
send_refused(struct mrun *m, const char *id, const char *clause,
	     const uint8_t *from, const uint8_t *to, uint32_t size_field)
{
	struct probe *p = m->p;
	struct presp r = {0};
	struct pconn c = {NULL, -1};
	uint8_t body[10] = {0};
	char got[96];

	if (probe_begin(p, id, S_SEND, clause, 0))
		return;
	if (pc_open(p, &c) != 0)
		probe_fail(p, "no connection");
	else if (mp_send(&c, from, V, to, 3, body, sizeof(body), size_field,
			 &r),
		 pf_is(&r, R_ERROR, 0) ||
			 (size_field != sizeof(body) && r.rc == PC_CLOSED))
		probe_pass(p, "%s", presp_str(&r, got, sizeof(got)));
	else
		pf_expect(p, &r, R_ERROR, 0, "603");
	presp_free(&r);
	pc_close(&c);
}

void
mp_send_cases(struct mrun *m)
{
	uint8_t rnd[16];

	send_one(m, "msg.send.text",
		 "603 of a text (type 3) is answered 2103: "
		 "the recipient's id and a message id",
		 3, 32, V);
	send_one(m, "msg.send.key_request",
		 "603 of a key request (type 1) with empty content is stored",
		 1, 0, V);
	send_one(m, "msg.send.key",
		 "603 of a wrapped key (type 2, 128 bytes) "
		 "is stored",
		 2, 128, V);
	send_one(m, "msg.send.version",
		 "a request is not refused for its version byte (603 sent "
		 "as version 1)",
		 4, 48, 1);
	if (bw_random(rnd, 16) != 0)
		return;
	send_refused(m, "msg.send.unknown_recipient",
		     "603 to an unknown recipient is answered 9000", m->a.id,
		     rnd, 10);
	send_refused(m, "msg.send.unknown_sender",
		     "603 from an unknown id is answered 9000", rnd, m->b.id,
		     10);
	/* to the sender itself: a server that stores it anyway leaves the
	 * recipient's queue, which the pull cases check, as it was */
	send_refused(m, "msg.send.size_mismatch",
		     "603 whose content size is not what the payload holds is "
		     "refused (9000, or the connection closed)",
		     m->a.id, m->a.id, 100);
}
