/* The memory of replies streamed to slow readers (2101 lists, 2104 pulls):
 * each stream queues at most MSG_STREAM_CHUNK at a time, refilled as the
 * socket takes it, and all of them together hold at most --reply-memory.
 * When that is spent, the stream whose reader has taken nothing for the
 * longest time (at least a second) is closed, its messages still queued,
 * and the others go on; a stream that finds no such reader waits for
 * room. So a thousand pulls (604) whose replies are never read cost the
 * server --reply-memory, not a thousand times a chunk. "Taken nothing" is
 * judged byte by byte, from what the peer's side has acknowledged: a
 * reader slower than a chunk a second is slow, not stalled, and keeps its
 * pull (judged by whole chunks, any reader below 64 KiB/s was a victim).
 */
#include "bulwark/log.h"
#include "bulwark/util.h"
#include "svc/msg/msg_int.h"

#define STALL_MS 1000u /* a reader that took nothing for this long */

static void stream_wake(void *arg);

/* mc's share of the budget is what c holds queued now, and a chunk for a
 * read in flight (its rows or content arrive later: waking more streams
 * than the budget holds would let them all queue at once). */
void
msg_stream_account(struct bw_conn *c, struct bw_msg *m, struct msg_conn *mc)
{
	size_t q = bw_conn_dead(c) ? 0 : bw_conn_queued(c);

	if (mc->reading)
		q += MSG_STREAM_CHUNK;
	m->reply_held = m->reply_held - mc->held + q;
	mc->held = q;
}

void
msg_stream_begin(struct bw_conn *c, struct bw_msg *m, struct msg_conn *mc)
{
	if (mc->streaming)
		return;
	mc->streaming = 1;
	mc->c = c;
	mc->progress_ms = bw_now_ms();
	mc->acked_seen = bw_conn_out_acked(c);
	mc->sprev = NULL;
	mc->snext = m->streams;
	if (m->streams != NULL)
		m->streams->sprev = mc;
	m->streams = mc;
	m->pulls_active++;
}

void
msg_stream_end(struct bw_msg *m, struct msg_conn *mc)
{
	struct msg_conn **pp;

	if (!mc->streaming)
		return;
	mc->streaming = 0;
	if (mc->sprev != NULL)
		mc->sprev->snext = mc->snext;
	else
		m->streams = mc->snext;
	if (mc->snext != NULL)
		mc->snext->sprev = mc->sprev;
	mc->sprev = mc->snext = NULL;
	if (mc->waiting) {
		for (pp = &m->waiters; *pp != NULL; pp = &(*pp)->wnext) {
			if (*pp == mc) {
				*pp = mc->wnext;
				break;
			}
		}
		mc->waiting = 0;
	}
	m->reply_held -= mc->held;
	mc->held = 0;
	m->pulls_active--;
	if (m->waiters != NULL)
		bw_loop_call(m->eng->loop, &m->wake_call, stream_wake, m);
}

/* The reader of the stream whose output has not moved for the longest
 * time (STALL_MS at least) loses its connection; its share comes back
 * when it closes. */
static int
evict_stalled(struct bw_msg *m, const struct msg_conn *self)
{
	struct msg_conn *s, *worst = NULL;
	uint64_t now = bw_now_ms(), acked;

	for (s = m->streams; s != NULL; s = s->snext) {
		if (s == self || s->held == 0 || s->evicting)
			continue;
		if ((acked = bw_conn_out_acked(s->c)) != s->acked_seen) {
			s->acked_seen = acked; /* it took some since: reading */
			s->progress_ms = now;
		}
		if (now - s->progress_ms < STALL_MS)
			continue;
		if (worst == NULL || s->progress_ms < worst->progress_ms)
			worst = s;
	}
	if (worst == NULL)
		return 0;
	worst->evicting = 1;
	m->evicted++;
	bw_info("c%llu: its reader took nothing of its reply for %llu ms "
		"while others wait for memory (--reply-memory): closing it",
		ULL(worst->c->id), ULL(now - worst->progress_ms));
	bw_conn_close_later(worst->c, NULL);
	return 1;
}

static void
stall_recheck(void *arg)
{
	struct bw_msg *m = arg;

	if (m->waiters != NULL)
		stream_wake(m);
}

int
msg_stream_room(struct bw_conn *c, struct bw_msg *m, struct msg_conn *mc)
{
	size_t q = bw_conn_queued(c);

	if (q >= MSG_STREAM_CHUNK)
		return 0; /* on_drained brings it back */
	if (m->reply_held - mc->held + q < m->cfg.reply_memory)
		return 1;
	/* none stalled yet (one seen moving is judged from then on): look
	 * again once one could have */
	if (!evict_stalled(m, mc) && m->stall_t.slot == 0 &&
	    bw_loop_timer_start(m->eng->loop, &m->stall_t, STALL_MS,
				stall_recheck, m) != 0)
		bw_warn("messenger: no timer to look for stalled readers");
	if (!mc->waiting) {
		mc->waiting = 1;
		mc->wnext = m->waiters;
		m->waiters = mc;
	}
	return 0;
}

void
msg_stream_drained(struct bw_conn *c, struct bw_msg *m, struct msg_conn *mc)
{
	mc->progress_ms = bw_now_ms();
	mc->acked_seen = bw_conn_out_acked(c);
	msg_stream_account(c, m, mc);
	msg_stream_more(c, m, mc);
	if (m->waiters != NULL)
		bw_loop_call(m->eng->loop, &m->wake_call, stream_wake, m);
}

/* Room came back: the waiting streams go on, as long as it lasts. The
 * first always looks again: if there is still no room, it closes the next
 * stalled reader (whose close wakes it again), so a waiter is never left
 * behind readers that will never make room. */
static void
stream_wake(void *arg)
{
	struct bw_msg *m = arg;
	struct msg_conn *mc;
	int first = 1;

	while ((mc = m->waiters) != NULL &&
	       (first || m->reply_held < m->cfg.reply_memory)) {
		first = 0;
		m->waiters = mc->wnext;
		mc->waiting = 0;
		mc->wnext = NULL;
		if (!bw_conn_dead(mc->c))
			msg_stream_more(mc->c, m, mc);
	}
}
