/* The probe's requests and replies of the framed protocols (the vault and
 * the messenger): a request in one write, a reply read whole up to a cap,
 * and the words a report uses for what came back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "cli/probe_int.h"
#include "proto/wire.h"

void
pf_hdr(uint8_t *out, const uint8_t *id, uint8_t version, uint16_t code,
       uint32_t payload_size)
{
	struct bw_req_hdr h;

	memset(&h, 0, sizeof(h));
	if (id != NULL)
		memcpy(h.client_id, id, BW_ID_LEN);
	h.version = version;
	h.code = code;
	h.payload_size = payload_size;
	bw_req_hdr_encode(&h, out);
}

int
pf_request(struct pconn *c, const uint8_t *id, uint8_t version, uint16_t code,
	   const void *payload, uint32_t n)
{
	uint8_t *b = malloc(BW_REQ_HDR_LEN + (size_t)n);
	int rc;

	if (b == NULL)
		return -1;
	pf_hdr(b, id, version, code, n);
	if (n > 0)
		memcpy(b + BW_REQ_HDR_LEN, payload, n);
	probe_say(c->p, "  request %u, payload %u bytes", code, n);
	rc = pc_send(c, b, BW_REQ_HDR_LEN + (size_t)n);
	free(b);
	return rc;
}

void
pf_response(struct pconn *c, struct presp *r, size_t cap, unsigned ms)
{
	uint8_t h[BW_RESP_HDR_LEN];
	struct bw_resp_hdr rh;
	size_t want;

	presp_free(r);
	memset(r, 0, sizeof(*r));
	if ((r->rc = pc_recv(c, h, sizeof(h), ms, NULL)) != 0)
		return;
	if (bw_resp_hdr_decode(h, sizeof(h), &rh) < 0) {
		r->rc = PC_ERROR;
		return;
	}
	r->version = rh.version;
	r->code = rh.code;
	r->size = rh.payload_size;
	want = r->size < cap ? r->size : cap;
	r->capped = r->size > cap;
	if (want == 0)
		return;
	if ((r->payload = malloc(want)) == NULL) {
		r->rc = PC_ERROR;
		return;
	}
	(void)pc_recv(c, r->payload, want, ms, &r->got);
}

void
presp_free(struct presp *r)
{
	free(r->payload);
	r->payload = NULL;
}

const char *
presp_str(const struct presp *r, char *buf, size_t cap)
{
	if (r->rc == PC_CLOSED)
		snprintf(buf, cap, "the connection closed");
	else if (r->rc == PC_TIMEOUT)
		snprintf(buf, cap, "no reply");
	else if (r->rc != 0)
		snprintf(buf, cap,
			 "nothing (the request could not be sent, or "
			 "the connection failed)");
	else if (r->got < r->size && !r->capped)
		snprintf(buf, cap, "%u announcing %u bytes, %zu came", r->code,
			 r->size, r->got);
	else
		snprintf(buf, cap, "%u with %u bytes", r->code, r->size);
	return buf;
}

void
pf_name(uint8_t field[BW_NAME_FIELD], const char *s)
{
	size_t n = strlen(s);

	memset(field, 0, BW_NAME_FIELD);
	memcpy(field, s, n < BW_NAME_FIELD - 1 ? n : BW_NAME_FIELD - 1);
}

int
pf_is(const struct presp *r, uint16_t code, uint32_t size)
{
	return r->rc == 0 && r->code == code && r->size == size &&
	       r->got == size;
}

int
puser_new(struct probe *p, const char *prefix, struct puser *u)
{
	memset(u, 0, sizeof(*u));
	probe_name(p, prefix, u->name, sizeof(u->name));
	if (bw_rsa_generate(&u->key) != 0 ||
	    bw_rsa_to_spki(u->key, u->pub) != 0) {
		probe_say(p, "  no RSA key could be made");
		return -1;
	}
	return 0;
}

void
puser_free(struct puser *u)
{
	bw_rsa_free(u->key);
	u->key = NULL;
}

int
pf_exchange(struct probe *p, const uint8_t *id, uint8_t version, uint16_t code,
	    const void *payload, uint32_t n, struct presp *r, size_t cap)
{
	struct pconn c;

	presp_free(r);
	memset(r, 0, sizeof(*r));
	r->rc = PC_ERROR;
	if (pc_open(p, &c) != 0)
		return -1;
	if (pf_request(&c, id, version, code, payload, n) == 0)
		pf_response(&c, r, cap, p->timeout_ms);
	pc_close(&c);
	return r->rc == 0 ? 0 : -1;
}

int
pf_expect(struct probe *p, const struct presp *r, uint16_t code, uint32_t size,
	  const char *what)
{
	char got[96];

	if (pf_is(r, code, size))
		return 0;
	return probe_fail(p, "%s: expected %u with %u bytes, got %s", what,
			  code, size, presp_str(r, got, sizeof(got)));
}

uint32_t
pf_le32(const uint8_t *b)
{
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
	       (uint32_t)b[3] << 24;
}

void
pf_put_le32(uint8_t *b, uint32_t v)
{
	b[0] = (uint8_t)v;
	b[1] = (uint8_t)(v >> 8);
	b[2] = (uint8_t)(v >> 16);
	b[3] = (uint8_t)(v >> 24);
}

void
pf_padded_end(struct pconn *c, const struct presp *r)
{
	struct probe *p = c->p;
	uint8_t rest[BW_PAD_UNIT];
	size_t want = bw_frame_pad_len(BW_RESP_HDR_LEN + (uint64_t)r->size);
	size_t got = 0, i;
	int rc = want > 0 ? pc_recv(c, rest, want, p->timeout_ms, &got) : 0;

	for (i = 0; i < got && rest[i] == 0; i++)
		;
	if (want > 0 && got == 0)
		probe_deviate(p, "the reply was not padded (a client reading "
				 "1024 bytes waits)");
	else if (rc != 0 || i < got)
		probe_fail(p,
			   "the padding was %zu bytes, %zu of them zero (%zu "
			   "expected)",
			   got, i, want);
	else if (pc_closes(c, p->timeout_ms) != 1)
		probe_deviate(p, "padded, but the connection stayed open");
	else
		probe_pass(p, "padded to 1024, closed");
}
