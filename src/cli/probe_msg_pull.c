/* The messenger's conformance cases from the pull on: what 604 hands back
 * and when it deletes, framing, hostile input, what a restart keeps; and
 * the suite's order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "cli/probe_int.h"
#include "cli/probe_msg_int.h"
#include "proto/wire.h"

/* Checks a 2104's records from `from` against what it sent (in order):
 * 0, or -1 with why[cap] said. *n is how many records from `from` it held
 * (records from others are not this check's: a server that stored what
 * the refused-send cases sent has failed those cases already). */
static int
records_match(const struct presp *r, const uint8_t from[16],
	      const struct sent *s, unsigned ns, unsigned *n, char *why,
	      size_t cap)
{
	size_t off = 0;
	unsigned k = 0;

	*n = 0;
	if (r->got < r->size) {
		snprintf(why, cap, "2104 of %u bytes, %zu read", r->size,
			 r->got);
		return -1;
	}
	while (off < r->got) {
		const uint8_t *q = r->payload + off;
		uint32_t size;

		k++;
		if (r->got - off < RECORD_MIN ||
		    (size = pf_le32(q + 21)) > r->got - off - RECORD_MIN) {
			snprintf(why, cap, "record %u is cut short", k);
			return -1;
		}
		off += RECORD_MIN + size;
		if (memcmp(q, from, 16) != 0)
			continue;
		if (*n < ns &&
		    (pf_le32(q + 16) != s[*n].id || q[20] != s[*n].type ||
		     size != s[*n].size ||
		     memcmp(q + RECORD_MIN, s[*n].content, size) != 0)) {
			snprintf(why, cap,
				 "record %u is not message %u as sent (id %u, "
				 "type %u, %u bytes)",
				 k, s[*n].id, pf_le32(q + 16), q[20], size);
			return -1;
		}
		(*n)++;
	}
	if (*n != ns) {
		snprintf(why, cap, "%u records from the sender, %u sent", *n,
			 ns);
		return -1;
	}
	return 0;
}

static void
pull_cases(struct mrun *m)
{
	struct probe *p = m->p;
	struct presp r = {0};
	unsigned n = 0;
	char why[160];

	if (!probe_begin(p, "msg.pull.delivered", S_PULL,
			 "604 is answered 2104 with every message waiting, in "
			 "arrival order, as sent, under the ids 2103 gave",
			 0)) {
		if (m->nsent == 0)
			probe_skip(p, "no message was stored");
		else if (mp_ask(m, &m->cb, &m->b, PULL, NULL, 0, &r,
				PULL_CAP) != 0)
			; /* (failed: the connection is gone) */
		else if (r.rc != 0 || r.code != R_WAITING)
			pf_expect(p, &r, R_WAITING, 0, "604");
		else if (records_match(&r, m->a.id, m->sent, m->nsent, &n, why,
				       sizeof(why)) != 0)
			probe_fail(p, "%s", why);
		else
			probe_pass(p, "%u messages", n);
	}
	presp_free(&r);
	if (!probe_begin(p, "msg.pull.deleted", S_PULL,
			 "messages delivered (the next request on the "
			 "connection is the evidence) are deleted",
			 0)) {
		if (m->nsent == 0)
			probe_skip(p, "no message was stored");
		else if (mp_ask(m, &m->cb, &m->b, PULL, NULL, 0, &r,
				PULL_CAP) == 0 &&
			 pf_expect(p, &r, R_WAITING, 0, "a second 604") == 0)
			probe_pass(p, "2104, empty");
	}
	presp_free(&r);
}

static void
reset_keeps(struct mrun *m)
{
	struct probe *p = m->p;
	struct pconn c = {NULL, -1};
	struct presp r = {0};
	struct sent s = {3, 0, {0}, 16};
	unsigned n = 0;
	char why[160];

	if (probe_begin(p, "msg.pull.reset_keeps", S_PULL,
			"a 2104 its client reset the connection after is no "
			"evidence of delivery: the messages stay queued",
			0))
		return;
	if (!m->a.registered || !m->b.registered) {
		probe_skip(p, "two users are needed");
		return;
	}
	if (bw_random(s.content, s.size) != 0) {
		probe_fail(p, "no randomness");
		goto out;
	}
	mp_send(mp_conn(m, &m->ca), m->a.id, V, m->b.id, 3, s.content, s.size,
		s.size, &r);
	if (pf_expect(p, &r, R_STORED, 20, "603") != 0)
		goto out;
	s.id = pf_le32(r.payload + 16);
	if (pc_open(p, &c) != 0 ||
	    pf_request(&c, m->b.id, V, PULL, NULL, 0) != 0) {
		probe_fail(p, "no connection");
		goto out;
	}
	pf_response(&c, &r, PULL_CAP, p->timeout_ms);
	pc_abort(&c);
	if (pf_expect(p, &r, R_WAITING, RECORD_MIN + 16, "604") != 0)
		goto out;
	if (pf_exchange(p, m->b.id, V, PULL, NULL, 0, &r, PULL_CAP) != 0 ||
	    r.code != R_WAITING)
		pf_expect(p, &r, R_WAITING, RECORD_MIN + 16, "604 again");
	else if (r.size == 0)
		probe_deviate(p, "the message was deleted when it was sent: a "
				 "client whose connection breaks loses it");
	else if (records_match(&r, m->a.id, &s, 1, &n, why, sizeof(why)) != 0)
		probe_fail(p, "%s", why);
	else
		probe_pass(p, "still queued after the reset");
out:
	presp_free(&r);
}

static void
pull_unknown(struct probe *p)
{
	if (!probe_begin(p, "msg.pull.unknown", S_PULL,
			 "604 from an unknown id is answered 9000", 0))
		mp_from_stranger(p, PULL, NULL, 0, 64, "604");
}

/* --- framing ---------------------------------------------------------- */

/* Two 601s in one write (pipelined), or one 601 in pieces: each answered
 * 2101. */
static void
framing_two_ways(struct mrun *m, const char *id, const char *clause,
		 int pipelined)
{
	struct probe *p = m->p;
	uint8_t two[2 * BW_REQ_HDR_LEN];
	struct pconn c = {NULL, -1};
	struct presp r1 = {0}, r2 = {0};
	char got[96];

	if (probe_begin(p, id, S_FRAME, clause, 0))
		return;
	pf_hdr(two, m->a.id, V, LIST, 0);
	pf_hdr(two + BW_REQ_HDR_LEN, m->a.id, V, LIST, 0);
	if (!m->a.registered || pc_open(p, &c) != 0)
		probe_skip(p, "no user or connection");
	else if ((pipelined ? pc_send(&c, two, sizeof(two))
			    : pc_send_slowly(&c, two, BW_REQ_HDR_LEN, 5, 50)) !=
		 0)
		probe_fail(p, "the connection is gone");
	else {
		pf_response(&c, &r1, PULL_CAP, p->timeout_ms);
		if (pipelined)
			pf_response(&c, &r2, PULL_CAP, p->timeout_ms);
		if (r1.rc != 0 || r1.code != 2101)
			probe_fail(p, "%s601 got %s",
				   pipelined ? "the first " : "",
				   presp_str(&r1, got, sizeof(got)));
		else if (pipelined && (r2.rc != 0 || r2.code != 2101))
			probe_fail(p, "the second 601 got %s",
				   presp_str(&r2, got, sizeof(got)));
		else
			probe_pass(p, pipelined ? "two 2101s" : "2101");
	}
	presp_free(&r1);
	presp_free(&r2);
	pc_close(&c);
}

static void
framing_cases(struct mrun *m)
{
	struct probe *p = m->p;
	uint8_t req[BW_PAD_UNIT], rest[64];
	struct pconn c = {NULL, -1};
	struct presp r = {0};
	size_t got = 0;
	int rc;

	if (!probe_begin(p, "msg.framing.session", S_FRAME,
			 "replies are exactly their size and the connection "
			 "stays open for the next request",
			 0)) {
		if (!m->a.registered || pc_open(p, &c) != 0 ||
		    pf_request(&c, m->a.id, V, LIST, NULL, 0) != 0)
			probe_skip(p, "no user or connection");
		else if (pf_response(&c, &r, PULL_CAP, p->timeout_ms),
			 r.rc != 0 || r.code != 2101)
			pf_expect(p, &r, 2101, 0, "601");
		else if (rc = pc_recv(&c, rest, sizeof(rest), 1000, &got),
			 got > 0)
			probe_deviate(p,
				      "%zu bytes followed the 2101 (replies "
				      "padded to a request that was not)",
				      got);
		else if (rc == PC_CLOSED)
			probe_deviate(p, "the server closed after one reply "
					 "(a client keeping its session on "
					 "one connection fails)");
		else
			probe_pass(p, "exact, still open");
		presp_free(&r);
		pc_close(&c);
	}
	framing_two_ways(m, "msg.framing.pipelined",
			 "two requests in one write get two replies, in order",
			 1);
	framing_two_ways(m, "msg.framing.split",
			 "a request that arrives in pieces (5 bytes, 50 ms "
			 "apart) is served",
			 0);
	if (probe_begin(p, "msg.framing.padded", S_FRAME,
			"a request zero-padded to 1024 bytes is answered "
			"padded to 1024 bytes, then the connection is closed",
			0))
		return;
	memset(req, 0, sizeof(req));
	pf_hdr(req, m->a.id, V, LIST, 0);
	if (!m->a.registered || pc_open(p, &c) != 0 ||
	    pc_send(&c, req, sizeof(req)) != 0) {
		probe_skip(p, "no user or connection");
	} else if (pf_response(&c, &r, PULL_CAP, p->timeout_ms),
		   r.rc != 0 || r.code != 2101 || r.got != r.size) {
		pf_expect(p, &r, 2101, 0, "padded 601");
	} else {
		pf_padded_end(&c, &r);
	}
	presp_free(&r);
	pc_close(&c);
}

/* --- hostile and restart ---------------------------------------------- */

static int
serves(struct mrun *m)
{
	struct presp r = {0};
	int ok = pf_exchange(m->p, m->a.id, V, LIST, NULL, 0, &r, PULL_CAP) ==
			 0 &&
		 r.code == 2101;

	presp_free(&r);
	return ok;
}

static void
hostile(struct mrun *m, const char *id, const char *clause, const uint8_t *b,
	size_t n)
{
	struct pconn c = {NULL, -1};

	if (probe_begin(m->p, id, S_HOSTILE, clause, P_HOSTILE))
		return;
	if (pc_open(m->p, &c) == 0) {
		(void)pc_send(&c, b, n);
		pc_abort(&c);
	}
	if (serves(m))
		probe_pass(m->p, "still serving");
	else {
		m->p->stopped = 1;
		probe_fail(m->p, "the server no longer answers a 601");
	}
}

static void
hostile_cases(struct mrun *m)
{
	enum { GARBAGE = 64 * 1024 };
	uint8_t *g = calloc(1, GARBAGE);

	if (g == NULL || !m->a.registered) {
		free(g);
		return;
	}
	pf_hdr(g, m->a.id, V, SEND, 0xffffffffu);
	memcpy(g + BW_REQ_HDR_LEN, m->b.id, 16);
	g[BW_REQ_HDR_LEN + 16] = 4;
	pf_put_le32(g + BW_REQ_HDR_LEN + 17, 0xffffffffu - 21u);
	hostile(m, "msg.hostile.huge_size",
		"a 603 announcing 4 GiB, cut off after 64 KiB, leaves the "
		"server serving",
		g, GARBAGE);
	if (bw_random(g, GARBAGE) == 0)
		hostile(m, "msg.hostile.garbage",
			"64 KiB of random bytes leave the server serving", g,
			GARBAGE);
	free(g);
}

static void
restart_cases(struct mrun *m)
{
	struct probe *p = m->p;
	struct presp r = {0};
	struct sent s = {3, 0, {0}, 16};
	unsigned n = 0;
	char why[160];

	if (probe_begin(p, "msg.restart.queued", S_RESTART,
			"a message stored and not yet pulled is there after a "
			"restart",
			P_RESTART))
		return;
	if (!m->a.registered || !m->b.registered)
		probe_skip(p, "two users are needed");
	else if (bw_random(s.content, s.size) != 0)
		probe_fail(p, "no randomness");
	else if (mp_send(mp_conn(m, &m->ca), m->a.id, V, m->b.id, 3, s.content,
			 s.size, s.size, &r),
		 pf_expect(p, &r, R_STORED, 20, "603") != 0)
		;
	else if (s.id = pf_le32(r.payload + 16), pc_close(&m->ca),
		 pc_close(&m->cb), probe_restart(p) != 0)
		probe_fail(p, "the restart failed");
	else if (pf_exchange(p, m->b.id, V, PULL, NULL, 0, &r, PULL_CAP) != 0 ||
		 r.code != R_WAITING)
		pf_expect(p, &r, R_WAITING, RECORD_MIN + 16, "604");
	else if (records_match(&r, m->a.id, &s, 1, &n, why, sizeof(why)) != 0)
		probe_fail(p, "%s", why);
	else
		probe_pass(p, "message %u pulled after the restart", s.id);
	presp_free(&r);
}

void
probe_msg(struct probe *p)
{
	struct mrun m;

	memset(&m, 0, sizeof(m));
	m.p = p;
	m.ca.fd = m.cb.fd = -1;
	if (puser_new(p, "probe", &m.a) != 0 ||
	    puser_new(p, "peer", &m.b) != 0) {
		fprintf(stderr, "bulwark probe: no RSA key could be made\n");
		return;
	}
	mp_register_cases(&m);
	mp_list_cases(&m);
	mp_key_cases(&m);
	mp_send_cases(&m);
	pull_cases(&m);
	reset_keeps(&m);
	pull_unknown(p);
	framing_cases(&m);
	hostile_cases(&m);
	restart_cases(&m);
	pc_close(&m.ca);
	pc_close(&m.cb);
	puser_free(&m.a);
	puser_free(&m.b);
}
