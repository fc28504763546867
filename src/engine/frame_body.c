/* One discipline for every streamed request body, whatever the protocol:
 * a minimum rate per window (a body that trickles loses its connection)
 * and the discard of a body refused before it arrived (read and thrown
 * away in a slot of the service's, so the error reply comes in step).
 */
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "engine/frame_int.h"

/* Body bytes still to arrive (what c->in holds has arrived). */
static uint64_t
unarrived(const struct bw_conn *c, const struct frame_conn *fc)
{
	uint64_t consumed = bw_conn_in_offset(c) - fc->body_start;
	uint64_t left = fc->body_size > consumed ? fc->body_size - consumed : 0;

	return left > c->in.len ? left - c->in.len : 0;
}

/* Body bytes not consumed yet. */
static uint64_t
unconsumed(const struct bw_conn *c, const struct frame_conn *fc)
{
	uint64_t consumed = bw_conn_in_offset(c) - fc->body_start;

	return fc->body_size > consumed ? fc->body_size - consumed : 0;
}

void
bw_frame_body_rate(struct bw_conn *c, unsigned min_rate, unsigned window_ms)
{
	struct frame_conn *fc = FC(c);

	if (fc == NULL)
		return;
	fc->min_rate = min_rate;
	fc->window_ms = window_ms;
}

void
frame_body_begin(struct bw_conn *c)
{
	struct frame_conn *fc = FC(c);

	fc->body_start = bw_conn_in_offset(c);
	fc->body_size = fc->req.hdr.payload_size > fc->req.route->head
				? fc->req.hdr.payload_size - fc->req.route->head
				: 0;
	fc->win_start_ms = bw_now_ms();
	fc->win_left = unarrived(c, fc);
}

void
frame_body_resumed(struct bw_conn *c)
{
	struct frame_conn *fc = FC(c);

	fc->win_start_ms = bw_now_ms();
	fc->win_left = unarrived(c, fc);
}

int
frame_body_slow(struct bw_conn *c)
{
	struct frame_conn *fc = FC(c);
	uint64_t now = bw_now_ms(), elapsed = now - fc->win_start_ms, left;

	if (fc->min_rate == 0 || elapsed < fc->window_ms)
		return 0;
	left = unarrived(c, fc);
	if ((fc->win_left - left) * 1000u >= (uint64_t)fc->min_rate * elapsed) {
		fc->win_start_ms = now;
		fc->win_left = left;
		return 0;
	}
	bw_info("c%llu %u body slower than %u bytes/s", ULL(c->id),
		fc->req.hdr.code, fc->min_rate);
	return 1;
}

/* --- discarding -----------------------------------------------------------
 */

void
frame_discard_end(struct bw_conn *c)
{
	struct frame_conn *fc = FC(c);

	if (!fc->discarding)
		return;
	fc->discarding = 0;
	if (fc->discard_n != NULL)
		(*fc->discard_n)--;
	bw_slots_release(fc->slots, &fc->slot);
}

/* A newcomer needs the slot of this discarded body, which trickles. */
static void
evict_discard(struct bw_slot *s)
{
	struct bw_conn *c = s->c;

	frame_discard_end(c);
	(void)bw_frame_fail(c, "refused body too slow for a busy server");
}

int
bw_frame_discard(struct bw_conn *c, uint64_t size, struct bw_slots *slots,
		 uint64_t *counter, const char *why)
{
	struct frame_conn *fc = FC(c);
	const char *slot_why;

	if (fc == NULL)
		return BW_ECLOSED;
	if (size > BW_FRAME_DISCARD_MAX)
		return bw_frame_fail(c, why);
	if (bw_slots_take(slots, &fc->slot, c, size, evict_discard,
			  &slot_why) != 0)
		return bw_frame_fail(c, slot_why);
	bw_info("c%llu %u refused, discarding %llu bytes: %s", ULL(c->id),
		fc->req.hdr.code, ULL(size), why);
	fc->discarding = 1;
	fc->slots = slots;
	fc->discard_n = counter;
	fc->discard_why = why;
	if (counter != NULL)
		(*counter)++;
	c->want = DISCARD_WANT;
	fc->st = F_BODY;
	return 0;
}

int
frame_discard_step(struct bw_conn *c)
{
	struct frame_conn *fc = FC(c);
	uint64_t left = unconsumed(c, fc);
	size_t k = c->in.len < left ? c->in.len : (size_t)left;
	int rc;

	bw_buf_consume(&c->in, k);
	bw_slot_progress(&fc->slot, left - k);
	if (left > k || !bw_frame_body_end(c))
		return 0; /* more to come, or padding still to decide */
	frame_discard_end(c);
	rc = bw_frame_error(c, fc->discard_why);
	bw_frame_done(c);
	return rc;
}
