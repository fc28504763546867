/* A request's end on the shared port: its body streamed or waited for, its
 * padding judged, and the connection made ready for the next header.
 * Beneath frame.c (the state machine) and frame_body.c (bodies), which
 * both call it and which it never calls.
 */
#include <string.h>

#include "bulwark/util.h"
#include "engine/frame_int.h"

void
bw_frame_stream(struct bw_conn *c)
{
	if (FC(c) != NULL)
		FC(c)->st = F_BODY;
}

void
bw_frame_wait(struct bw_conn *c)
{
	if (FC(c) == NULL)
		return;
	FC(c)->st = F_WAIT;
	bw_conn_pause(c, 1);
}

void
bw_frame_done(struct bw_conn *c)
{
	struct frame_conn *fc = FC(c);
	const struct bw_frame *f = bw_conn_inst(c);
	int i;

	if (fc == NULL)
		return; /* closed: nothing is left to end */
	i = frame_proto_index(f, fc->req.proto);
	/* until the next input, the idle time of the protocol just served */
	if (i >= 0 && f->lim[i].idle_ms > 0 &&
	    f->lim[i].idle_ms != c->lis->cfg.lim.idle_ms)
		bw_conn_idle_deadline(c, f->lim[i].idle_ms);
	frame_req_result(c, 0); /* answered by no reply (1030) */
	if (fc->last != fc->req.proto) {
		(*frame_conns_of(bw_conn_inst(c), fc->last))--;
		(*frame_conns_of(bw_conn_inst(c), fc->req.proto))++;
	}
	fc->last = fc->req.proto;
	memset(&fc->req, 0, sizeof(fc->req));
	fc->st = F_HDR;
	c->want = CTRL_WANT;
	bw_conn_pause(c, 0);
}

int
bw_frame_body_end(struct bw_conn *c)
{
	struct frame_conn *fc = FC(c);
	int pad = frame_padding(
		c, 0, BW_REQ_HDR_LEN + (uint64_t)fc->req.hdr.payload_size);

	if (pad < 0)
		return 0;
	fc->padded = pad;
	if (pad)
		bw_conn_deviates(c, fc->req.hdr.client_id, BW_DEV_PADDED);
	return 1;
}
