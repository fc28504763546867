/* What a connection's peer is doing, as the kernel tells it: whether input
 * arrived after output had been written (evidence that a peer speaking in
 * turn had it), whether a slow reader is still taking output, whether it
 * has closed its side; and the deadlines that wait on it.
 */
#include <stdint.h>
#include <sys/socket.h>

#include "bulwark/net.h"
#include "bulwark/util.h"
#include "engine/engine_int.h"

void
bw_conn_note_arrivals(struct bw_conn *c)
{
	c->flags |= BW_CONN_NOTE;
}

void
bw_conn_output_is_activity(struct bw_conn *c)
{
	c->flags |= BW_CONN_OUT_ACTIVE;
}

/* A read this large says the peer sends in bulk (loopback gives 64 KiB
 * segments; a peer trickling gives a few KiB). */
#define LOWAT_BULK (128u * 1024u)
#define LOWAT_MAX  (1024u * 1024u)

static void
conn_lowat(struct bw_conn *c, int v)
{
	if (v == (c->own->lowat > 1 ? c->own->lowat : 1))
		return;
	/* on a failure the kernel keeps the old value, and so do we */
	if (setsockopt(c->own->w.fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(v)) ==
	    0)
		c->own->lowat = v;
}

void
bw_conn_expect(struct bw_conn *c, size_t n)
{
	int v = 1;

	if (c->flags & BW_CONN_DEAD)
		return; /* its descriptor is closing */
	if (n > 1 && c->own->last_read_n >= LOWAT_BULK)
		v = (int)(n < LOWAT_MAX ? n : LOWAT_MAX);
	conn_lowat(c, v);
}

void
engine_conn_lowat_lapse(struct bw_conn *c, uint64_t now)
{
	if (c->own->lowat > 1 && !(c->flags & BW_CONN_DEAD) &&
	    now - c->own->last_read_ms >= ENGINE_TICK_MS)
		conn_lowat(c, 1);
}

/* The input that had arrived by now, read or still in the socket. */
uint64_t
engine_conn_arrived(const struct bw_conn *c)
{
	size_t unread = 0;

	if (bw_net_unread(c->own->w.fd, &unread) != 0)
		unread = SIZE_MAX / 2; /* cannot tell: as if everything had */
	return c->in_total + unread;
}

int
bw_conn_arrived_after(const struct bw_conn *c, uint64_t in_off,
		      uint64_t out_total)
{
	return (c->flags & BW_CONN_NOTE) &&
	       c->own->drained_out_total >= out_total &&
	       in_off >= c->own->drained_in_total;
}

int
bw_conn_peer_shut(const struct bw_conn *c)
{
	return (c->flags & BW_CONN_EOF) != 0 ||
	       (c->own->w.fd >= 0 && bw_net_peer_shut(c->own->w.fd));
}

void
bw_conn_request_deadline(struct bw_conn *c, unsigned ms)
{
	c->req_deadline_ms = ms ? bw_now_ms() + ms : 0;
}

void
bw_conn_idle_deadline(struct bw_conn *c, unsigned ms)
{
	c->own->deadline_ms = bw_now_ms() + ms;
}

uint64_t
bw_conn_out_acked(const struct bw_conn *c)
{
	size_t unacked = 0;
	uint64_t sent = c->out_total - c->out.len;

	if (c->own->w.fd < 0 || bw_net_unacked(c->own->w.fd, &unacked) != 0)
		return UINT64_MAX;
	return unacked < sent ? sent - unacked : 0;
}

int
engine_conn_still_reading(struct bw_conn *c, uint64_t now_ms)
{
	size_t unacked = 0;

	if (c->flags & (BW_CONN_LINGER | BW_CONN_FAILED | BW_CONN_DEAD))
		return 0;
	/* down to 0 counts: the peer took the last of it since the last
	 * look, maybe a moment ago, and has one more idle time from here */
	if (bw_net_unacked(c->own->w.fd, &unacked) != 0 ||
	    unacked == c->own->unacked_seen) {
		c->own->unacked_seen = 0;
		return 0;
	}
	c->own->unacked_seen = unacked;
	c->own->deadline_ms = now_ms + engine_conn_idle_ms(c);
	return 1;
}

/* The idle time c is allowed now: a closing connection has BW_FINISH_MS
 * (renewed by progress) to take its last output. */
uint64_t
engine_conn_idle_ms(const struct bw_conn *c)
{
	uint64_t idle = c->lis->cfg.lim.idle_ms;

	return (c->flags & BW_CONN_CLOSING) && idle > BW_FINISH_MS
		       ? BW_FINISH_MS
		       : idle;
}
