/* The client probe's reading of what a client sends (probe_client_int.h):
 * a small state machine over the byte stream, header, fixed fields,
 * payload skipped, then the zeros that may pad the request to 1024 bytes
 * (or be the zero id of the next one); and the report built from the
 * tally.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "bulwark/util.h"
#include "cli/common.h"
#include "cli/probe_client_int.h"
#include "proto/wire.h"

static const struct {
	const char *id, *section, *clause;
	enum probe_verdict seen; /* the verdict when a connection shows it */
} KINDS[K_KINDS] = {
	{"client.framing.padded", "Framing",
	 "requests are their size (padding to 1024 bytes breaks servers that "
	 "read a session's next request)",
	 P_DEVIATION},
	{"client.framing.size_zero", "Framing",
	 "payload_size counts the payload (0 with the fields following "
	 "breaks exact servers)",
	 P_DEVIATION},
	{"client.framing.size_wrong", "Framing",
	 "payload_size is the request's own size", P_FAIL},
	{"client.framing.one_write", "Framing",
	 "a request leaves the client in one write (servers that recv(1024) "
	 "once miss the rest)",
	 P_DEVIATION},
	{"client.session.one_connection", "Connection",
	 "a vault session stays on one connection (a connection per request "
	 "breaks servers that keep the session per connection)",
	 P_DEVIATION},
	{"client.session.orderly_close", "Connection",
	 "the client closes in order after reading its reply (a reset is no "
	 "evidence of delivery: messages stay queued)",
	 P_DEVIATION},
	{"client.content.version", "Content",
	 "the version byte is the spec's (vault 3, messenger 2)", P_DEVIATION},
	{"client.content.key_request_empty", "Content",
	 "a key request (603 type 1) has empty content", P_DEVIATION},
	{"client.content.name_utf8", "Content",
	 "names are ASCII (UTF-8 at most)", P_DEVIATION},
	{"client.content.name_field", "Content",
	 "a name field is NUL-terminated and zero-padded", P_FAIL},
	{"client.content.known_code", "Content",
	 "every request code is one of the spec's", P_FAIL},
};

static const char *
label(enum ckind kind)
{
	return KINDS[kind].id + 7; /* after "client." */
}

static void
seen(struct ccheck *k, enum ckind kind, const char *fmt, ...)
{
	struct ctally *t = k->t;
	va_list ap;

	if (k->seen & (1u << kind))
		return;
	k->seen |= 1u << kind;
	t->n[kind]++;
	if (t->example[kind][0] == '\0' || t->verbose) {
		char ex[128];
		int n = snprintf(ex, sizeof(ex), "connection %u: ", k->id);

		va_start(ap, fmt);
		vsnprintf(ex + n, sizeof(ex) - (size_t)n, fmt, ap);
		va_end(ap);
		if (t->example[kind][0] == '\0')
			snprintf(t->example[kind], sizeof(t->example[kind]),
				 "%s", ex);
		if (t->verbose)
			fprintf(stderr, "%-14s %s\n", label(kind), ex);
	}
}

void
ccheck_init(struct ccheck *k, unsigned id, struct ctally *t)
{
	memset(k, 0, sizeof(*k));
	k->t = t;
	k->id = id;
	k->st = C_HDR;
	t->conns++;
}

static int
is_vault(uint16_t code)
{
	return code >= 1025 && code <= 1031;
}

/* Bulwark's own vault requests beside the spec's (docs/vault-protocol.md:
 * listing, fetching, deleting, limits, the clear upload): relayed, framed by
 * their size and not looked into. */
static int
is_ext(uint16_t code)
{
	return code >= 1100 && code <= 1106;
}

/* The fixed fields a request starts with (what is read to check it). */
static size_t
head_len(uint16_t code)
{
	switch (code) {
	case 1026:
	case 600:
		return 415;
	case 1028:
		return 4 + 255;
	case 602:
		return 16;
	case 603:
		return 21;
	case 601:
	case 604:
		return 0;
	case 1100:
	case 1101:
	case 1102:
	case 1103:
	case 1104:
	case 1105:
	case 1106:
		return 0; /* is_ext: not looked into */
	default:
		return 255;
	}
}

static void
check_name(struct ccheck *k, const uint8_t *f)
{
	const uint8_t *nul = memchr(f, 0, 255);
	size_t i;

	if (nul == NULL || nul == f) {
		seen(k, K_NAME_MALFORMED, "%u with %s", k->code,
		     nul == NULL ? "no NUL in the name field"
				 : "an empty name");
		return;
	}
	for (i = (size_t)(nul - f); i < 255 && f[i] == 0; i++)
		;
	if (i < 255)
		seen(k, K_NAME_MALFORMED, "%u: bytes after the name's NUL",
		     k->code);
	if (!bw_utf8_valid((const char *)f))
		seen(k, K_NAME_NOT_UTF8, "%u: a name that is not UTF-8",
		     k->code);
}

/* The head is in: checks its fields and sets how much payload follows. */
static void
head_done(struct ccheck *k)
{
	uint64_t want = is_ext(k->code) ? k->size : head_len(k->code);

	if (k->code == 1028)
		want += pf_le32(k->head);
	else if (k->code == 603) {
		want += pf_le32(k->head + 17);
		if (k->head[16] == 1 && pf_le32(k->head + 17) > 0)
			seen(k, K_TYPE1_CONTENT,
			     "603 type 1 with %u bytes of content",
			     pf_le32(k->head + 17));
	}
	if (k->code == 1028)
		check_name(k, k->head + 4);
	else if (k->code != 602 && k->code != 603 && head_len(k->code) > 0)
		check_name(k, k->head);
	if (k->size != 0 && k->size != want)
		seen(k, K_SIZE_WRONG, "%u announcing %u payload bytes for %llu",
		     k->code, k->size, ULL(want));
	k->req_len = k->size != 0 ? k->size : want;
	k->left = k->req_len - k->head_have;
}

static void
request_done(struct ccheck *k)
{
	uint8_t v = is_vault(k->code) || is_ext(k->code) ? 3 : 2;

	k->requests++;
	k->t->requests++;
	if (k->pieces > 1 && BW_REQ_HDR_LEN + k->req_len <= BW_PAD_UNIT)
		seen(k, K_SPLIT, "%u in %u writes", k->code, k->pieces);
	if (k->version != v)
		seen(k, K_VERSION, "%u with version %u", k->code, k->version);
	k->pad_left = bw_frame_pad_len(k->pos);
	k->zeros = 0;
	k->st = k->pad_left > 0 ? C_PAD : C_HDR;
	k->pieces = 0;
	k->last_read = 0;
}

static void
header_done(struct ccheck *k)
{
	struct bw_req_hdr h;

	if (bw_req_hdr_decode(k->hdr, sizeof(k->hdr), &h) < 0) {
		k->st = C_LOST; /* cannot be: the header is whole */
		return;
	}
	k->code = h.code;
	k->version = h.version;
	k->size = h.payload_size;
	k->hdr_have = 0;
	k->head_have = 0;
	if (!is_vault(k->code) && !is_ext(k->code) &&
	    (k->code < 600 || k->code > 604)) {
		seen(k, K_UNKNOWN_CODE, "code %u", k->code);
		k->st = C_LOST; /* nothing past it can be framed */
		return;
	}
	k->vault |= is_vault(k->code);
	k->head_want = head_len(k->code);
	if (k->size == 0 && k->head_want > 0)
		seen(k, K_SIZE_ZERO, "%u with payload size 0", k->code);
	else if (k->size != 0 && k->size < k->head_want)
		k->head_want = k->size; /* short: read what there is */
	k->st = C_HEAD;
	if (k->head_want == 0) {
		head_done(k);
		k->st = k->left > 0 ? C_SKIP : (request_done(k), k->st);
	}
}

/* Zeros after a request: padding when they reach the 1024 boundary, else
 * the zero id of the next request's header. */
static size_t
pad_bytes(struct ccheck *k, const uint8_t *b, size_t n)
{
	size_t i = 0;

	while (i < n && k->zeros < k->pad_left && b[i] == 0) {
		i++;
		k->zeros++;
		k->pos++;
	}
	if (k->zeros == k->pad_left) {
		k->padded = 1;
		seen(k, K_PADDED, "%u padded to %llu bytes", k->code,
		     ULL(k->pos));
		k->st = C_HDR;
	} else if (i < n) {
		/* not padding: those zeros began a header */
		k->hdr_have = k->zeros < sizeof(k->hdr) ? (size_t)k->zeros
							: sizeof(k->hdr);
		memset(k->hdr, 0, k->hdr_have);
		k->st = C_HDR;
		if (k->hdr_have == sizeof(k->hdr))
			header_done(k);
	}
	return i;
}

void
ccheck_bytes(struct ccheck *k, const uint8_t *b, size_t n)
{
	size_t take;

	k->in += n;
	k->reads++;
	while (n > 0 && k->st != C_LOST) {
		if (k->st != C_PAD && k->last_read != k->reads) {
			k->pieces++; /* the request's bytes came in this read */
			k->last_read = k->reads;
		}
		switch (k->st) {
		case C_PAD:
			take = pad_bytes(k, b, n);
			break;
		case C_HDR:
			take = sizeof(k->hdr) - k->hdr_have;
			take = take < n ? take : n;
			k->pos += take;
			memcpy(k->hdr + k->hdr_have, b, take);
			if ((k->hdr_have += take) == sizeof(k->hdr))
				header_done(k);
			break;
		case C_HEAD:
			take = k->head_want - k->head_have;
			take = take < n ? take : n;
			k->pos += take;
			memcpy(k->head + k->head_have, b, take);
			if ((k->head_have += take) == k->head_want) {
				head_done(k);
				if (k->left == 0)
					request_done(k);
				else
					k->st = C_SKIP;
			}
			break;
		default: /* C_SKIP */
			take = k->left < n ? (size_t)k->left : n;
			k->pos += take;
			if ((k->left -= take) == 0)
				request_done(k);
			break;
		}
		b += take;
		n -= take;
	}
}

void
ccheck_end(struct ccheck *k, int reset, struct ctally *t)
{
	(void)t;
	if (k->requests == 1 && k->vault && !k->padded && !reset)
		seen(k, K_ONE_REQUEST, "one %u, then the connection closed",
		     k->code);
	if (reset && k->replies > 0)
		seen(k, K_RESET, "a reset after %llu bytes of replies",
		     ULL(k->replies));
}

int
ctally_report(const struct ctally *t, struct probe *p, int json,
	      const char *html)
{
	unsigned k;

	for (k = 0; k < K_KINDS; k++) {
		if (probe_begin(p, KINDS[k].id, KINDS[k].section,
				KINDS[k].clause, 0))
			continue;
		if (t->conns == 0)
			probe_skip(p, "no client connected");
		else if (t->n[k] == 0)
			probe_pass(p, "never, in %llu connections",
				   ULL(t->conns));
		else
			probe_end(p, KINDS[k].seen,
				  "%llu of %llu connections; %s", ULL(t->n[k]),
				  ULL(t->conns), t->example[k]);
	}
	return probe_report(p, json, html);
}
