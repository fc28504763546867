/* The shared port's replies: a header and its payload (at once, or
 * streamed), error replies (logged up to a count per connection), and the
 * padding a course-style client gets.
 */
#include <stdlib.h>
#include <string.h>

#include "bulwark/log.h"
#include "bulwark/util.h"
#include "engine/frame_int.h"

int
bw_frame_padded(struct bw_conn *c)
{
	struct frame_conn *fc = FC(c);

	return fc != NULL && fc->padded;
}

/* The protocol a reply speaks: the request's, else the previous one's, else
 * the first table's. */
static const struct bw_frame_proto *
reply_proto(struct bw_conn *c)
{
	struct frame_conn *fc = FC(c);
	const struct bw_frame *f = bw_conn_inst(c);

	if (fc->req.proto != NULL)
		return fc->req.proto;
	return fc->last != NULL ? fc->last : f->p[0];
}

/* Queues n bytes of the reply, within the output cap of the protocol that
 * speaks it (the listener's holds every protocol's; this one's may be
 * smaller). */
static int
reply_send(struct bw_conn *c, const void *p, size_t n)
{
	const struct bw_frame *f = bw_conn_inst(c);
	int i = frame_proto_index(f, reply_proto(c));
	size_t cap = i >= 0 ? f->lim[i].out_max : 0;

	if (cap > 0 &&
	    n > cap - (bw_conn_queued(c) < cap ? bw_conn_queued(c) : cap)) {
		bw_conn_close_later(c, "output over the protocol's cap");
		return BW_ETOOBIG;
	}
	return bw_conn_send(c, p, n);
}

int
bw_frame_reply_begin(struct bw_conn *c, uint16_t code, uint32_t total)
{
	struct frame_conn *fc = FC(c);
	struct bw_resp_hdr h = {0, code, total};
	uint8_t hdr[BW_RESP_HDR_LEN];

	if (fc == NULL)
		return BW_ECLOSED;
	if (fc->reply_code != 0)
		return BW_EPROTO; /* the previous reply is not finished */
	h.version = reply_proto(c)->version;
	bw_resp_hdr_encode(&h, hdr);
	frame_req_result(c, code);
	fc->reply_code = code;
	fc->reply_len = BW_RESP_HDR_LEN + (uint64_t)total;
	fc->reply_left = total;
	return reply_send(c, hdr, sizeof(hdr));
}

int
bw_frame_reply_add(struct bw_conn *c, const void *p, size_t n)
{
	struct frame_conn *fc = FC(c);

	if (fc == NULL)
		return BW_ECLOSED;
	if (fc->reply_code == 0 || n > fc->reply_left)
		return BW_ESIZE;
	fc->reply_left -= n;
	return reply_send(c, p, n);
}

int
bw_frame_reply_end(struct bw_conn *c)
{
	static const uint8_t zeros[BW_PAD_UNIT];
	struct frame_conn *fc = FC(c);
	size_t pad;
	int rc = 0;

	if (fc == NULL)
		return BW_ECLOSED;
	if (fc->reply_code == 0)
		return BW_EPROTO;
	fc->reply_code = 0;
	if (fc->reply_left != 0) {
		/* a handler announced more than it wrote: the stream is
		 * broken, the peer must not wait for the rest */
		bw_conn_close_later(c, "reply shorter than announced");
		return BW_ESIZE;
	}
	if (fc->padded) {
		pad = bw_frame_pad_len(fc->reply_len);
		rc = reply_send(c, zeros, pad);
		bw_conn_finish(c);
	}
	return rc;
}

int
bw_frame_reply(struct bw_conn *c, uint16_t code, const void *p, size_t n)
{
	int rc;

	if (n > UINT32_MAX)
		return BW_ETOOBIG;
	if ((rc = bw_frame_reply_begin(c, code, (uint32_t)n)) != 0 ||
	    (rc = bw_frame_reply_add(c, p, n)) != 0) {
		if (FC(c) != NULL)
			FC(c)->reply_code = 0;
		return rc;
	}
	return bw_frame_reply_end(c);
}

int
bw_frame_error(struct bw_conn *c, const char *why)
{
	struct frame_conn *fc = FC(c);
	const struct bw_frame_proto *p;

	if (fc == NULL)
		return BW_ECLOSED;
	p = reply_proto(c);
	if (fc->errors_logged < ERRORS_LOGGED) {
		fc->errors_logged++;
		bw_info("c%llu %u -> %u: %s", ULL(c->id), fc->req.hdr.code,
			p->err_code, why);
	} else {
		fc->errors_dropped++;
	}
	return bw_frame_reply(c, p->err_code, NULL, 0);
}

int
bw_frame_fail(struct bw_conn *c, const char *why)
{
	int rc = bw_frame_error(c, why);

	/* A body ended here (an eviction, a write that failed) leaves its
	 * request's state gone: input that still comes (an error event in
	 * the same pass reads what the socket holds) is not handed to it. */
	if (FC(c) != NULL)
		FC(c)->failed = 1;
	bw_conn_finish(c);
	return rc;
}
