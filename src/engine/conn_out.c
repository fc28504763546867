/* A connection's output: queued by bw_conn_send within the listener's
 * caps, flushed once per loop pass (each connection with output waits on
 * one list), and measured against what its peer fails to read.
 */
#include <errno.h>
#include <stdint.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "engine/engine_int.h"

#define IDLE_OUT_CAP (64u * 1024u) /* keep no more buffer when idle */
#define TRIM_IDLE_MS 1000u /* an input buffer unused this long is freed */

/* c's peer does not read what it is sent: closed after the callback. */
void
engine_conn_overflow(struct bw_conn *c)
{
	if (c->flags & (BW_CONN_DEAD | BW_CONN_FAILED))
		return;
	c->eng->closed_overflow++;
	c->flags |= BW_CONN_OVERFLOW;
	bw_conn_close_later(c, "output over the connection's cap: the peer "
			       "does not read");
}

/* After a flush: output the peer leaves unread above out_max starts (or
 * keeps) its clock; BW_OUT_OVER_MS of it closes the connection. */
void
engine_conn_measure(struct bw_conn *c, uint64_t now)
{
	if (c->out.len <= c->lis->cfg.lim.out_max) {
		c->own->over_since_ms = 0;
		return;
	}
	if (c->own->over_since_ms == 0)
		c->own->over_since_ms = now;
	else if (now - c->own->over_since_ms >= BW_OUT_OVER_MS)
		engine_conn_overflow(c);
}

/* --- the output queue ----------------------------------------------------
 * Connections with output wait on one list and are flushed once per loop
 * pass (bw_loop_prepoll), so a callback that sends to a thousand members
 * costs a thousand appends and, later, one send() each. */

void
engine_conn_trim(struct bw_conn *c, uint64_t now)
{
	if (c->flags & (BW_CONN_DEAD | BW_CONN_FAILED))
		return;
	/* the records' buffers of a connection that has read nothing for a
	 * while (a trim keeps any bytes they hold): a peer that stopped
	 * after a bulk read, a member that only receives */
	if (c->own->tls != NULL && now - c->own->last_read_ms >= TRIM_IDLE_MS) {
		bw_tls_trim(c->own->tls);
		engine_tls_bulk_trimmed(c);
	}
	if (c->flags & BW_CONN_PAUSED)
		return; /* a paused service may still look at its input */
	if (c->in.cap > 0 && c->in.len == 0 &&
	    now - c->own->last_read_ms >= TRIM_IDLE_MS)
		bw_buf_fini(&c->in);
	if (c->out.len != 0 || (c->flags & (BW_CONN_QUEUED | BW_CONN_BLOCKED)))
		return;
	if (c->out.cap > 0 && c->out_total == c->own->trim_out_total)
		bw_buf_fini(&c->out);
	if ((c->flags & (BW_CONN_OUT_ACTIVE | BW_CONN_CLOSING)) ==
		    BW_CONN_OUT_ACTIVE &&
	    c->out_total != c->own->trim_out_total &&
	    c->own->deadline_ms < now + c->lis->cfg.lim.idle_ms)
		c->own->deadline_ms = now + c->lis->cfg.lim.idle_ms;
	c->own->trim_out_total = c->out_total;
}

/* Writes what the socket takes: 0 (c->out may still hold bytes, then c is
 * BLOCKED until the socket is writable) or -errno. A peer that takes more
 * of an output it had blocked on is reading, not idle: a large reply to a
 * slow reader is not cut off by the idle time (a peer that reads nothing
 * still is). */
int
engine_conn_flush(struct bw_conn *c)
{
	int resumed = (c->flags & BW_CONN_BLOCKED) != 0;
	int note = (c->flags & BW_CONN_NOTE) && c->out.len > 0;
	uint64_t until, arrived = 0;
	ssize_t n;

	/* before the first byte leaves: a reply to it cannot be here yet */
	if (note)
		arrived = engine_conn_arrived(c);
	c->flags &= ~BW_CONN_BLOCKED;
	while (engine_conn_has_output(c)) {
		n = engine_conn_push(c);
		if (n == -EINTR)
			continue;
		if (n == -EINPROGRESS)
			return 0; /* flushed again once the handshake ends */
		if (n == -EAGAIN) {
			/* blocked now, not before: the peer has a whole idle
			 * time from here to take some (the tick closes a
			 * connection whose output stays blocked past it) */
			if (!resumed && !(c->flags & BW_CONN_LINGER)) {
				until = bw_now_ms() + engine_conn_idle_ms(c);
				if (until > c->own->deadline_ms)
					c->own->deadline_ms = until;
			}
			c->flags |= BW_CONN_BLOCKED;
			engine_conn_measure(c, bw_now_ms());
			/* what the peer has not acknowledged now: at the idle
			 * look, less means it is still reading */
			if (bw_net_unacked(c->own->w.fd,
					   &c->own->unacked_seen) != 0)
				c->own->unacked_seen = 0;
			return 0;
		}
		if (n < 0)
			return (int)n;
		if (resumed && n > 0 && !(c->flags & BW_CONN_LINGER)) {
			until = bw_now_ms() + engine_conn_idle_ms(c);
			if (until > c->own->deadline_ms)
				c->own->deadline_ms = until;
			resumed = 0;
		}
	}
	c->own->over_since_ms = 0;
	if (note) {
		c->own->drained_out_total = c->out_total;
		c->own->drained_in_total = arrived;
	}
	if (c->out.cap > IDLE_OUT_CAP)
		bw_buf_fini(&c->out); /* give back a big reply's memory */
	if (c->own->tls != NULL)
		bw_tls_trim_out(c->own->tls); /* and its records' */
	return 0;
}

int
bw_conn_send(struct bw_conn *c, const void *p, size_t n)
{
	if (c->flags & (BW_CONN_DEAD | BW_CONN_LINGER | BW_CONN_FAILED))
		return BW_ECLOSED;
	if (n == 0)
		return 0;
	if (n > engine_out_hard(c) - c->out.len) {
		engine_conn_overflow(c);
		return BW_ETOOBIG;
	}
	if (bw_buf_append(&c->out, p, n) != 0) {
		bw_conn_close_later(c, "out of memory for output");
		return BW_ENOMEM;
	}
	c->out_total += n;
	if (!(c->flags & BW_CONN_BLOCKED))
		engine_queue_add(
			c); /* a blocked one is flushed when writable */
	return 0;
}

/* Flushes c and runs what follows a write: the service's on_drained, the
 * close of a finished connection, the watch update. */
void
engine_conn_write(struct bw_conn *c)
{
	int had = c->out.len > 0, rc;

	if ((rc = engine_conn_flush(c)) != 0) {
		if (rc == -ECONNRESET || rc == -EPIPE)
			c->flags |= BW_CONN_PEER_RESET;
		engine_conn_kill(c, bw_strerror(rc));
		return;
	}
	if (had && c->out.len == 0 && c->lis->svc->on_drained != NULL &&
	    !(c->flags & (BW_CONN_LINGER | BW_CONN_FAILED)))
		c->lis->svc->on_drained(c);
	if (c->flags & BW_CONN_DEAD)
		return;
	engine_conn_after_output(c);
	engine_conn_update(c);
}

/* The loop's once-per-pass hook: flush every connection that queued
 * output. Connections that queue again meanwhile wait for the next pass. */
int
bw_engine_flush(void *arg)
{
	struct bw_engine *e = arg;
	uint64_t n = e->queue_n;
	struct bw_conn *c;

	while (n-- > 0 && (c = e->queue_head) != NULL) {
		engine_queue_del(c);
		if (!(c->flags & (BW_CONN_DEAD | BW_CONN_FAILED)))
			engine_conn_write(c);
	}
	return e->queue_head != NULL;
}
