/* A connection's life on the engine, beneath every other connection file
 * (each calls down to it, never the other way): holds by worker jobs,
 * what its watch waits for, the list of connections with output to
 * flush, lingering closes, its TLS session's end, and the deferred close
 * and free that keep every pointer valid until the current callback has
 * returned. Reading and the service's callbacks are conn_event.c's, the
 * output conn_out.c's.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "engine/engine_int.h"

#define OUT_HIGH_WATER (256u * 1024u) /* stop reading above this */
#define LINGER_MS      2000u

static void conn_tls_held(void *arg);

/* --- connections ---------------------------------------------------------
 */

/* What a connection's one deferred call does next (c->call_want): free it
 * once dead and unheld, kill it, or start a close a job's hold delayed.
 * One call, embedded in the connection: scheduling cannot fail. */
enum { CALL_RELEASED = 1u, CALL_KILL = 2u, CALL_FREE = 4u };

static void conn_released(struct bw_conn *c);

static void
conn_deferred(void *arg)
{
	struct bw_conn *c = arg;
	unsigned want = c->own->call_want;

	c->own->call_want = 0;
	if (want & CALL_FREE) {
		if (c->own->refs == 0)
			free(c);
		/* else held again meanwhile: the last release schedules it
		 * anew */
		return;
	}
	if (want & CALL_KILL) {
		if (!(c->flags & BW_CONN_DEAD))
			engine_conn_kill(c, NULL);
		return;
	}
	if (want & CALL_RELEASED)
		conn_released(c);
}

static void
conn_schedule(struct bw_conn *c, unsigned what)
{
	c->own->call_want |= what;
	bw_loop_call(c->eng->loop, &c->own->call, conn_deferred, c);
}

/* Frees dead c after the current batch (a hold and release of a dead
 * connection in the same batch schedule one free: the call is queued
 * once). */
static void
conn_free_later(struct bw_conn *c)
{
	if (c->own->refs == 0)
		conn_schedule(c, CALL_FREE);
}

void
engine_conn_kill(struct bw_conn *c, const char *why)
{
	struct bw_engine *e = c->eng;
	int fd = c->own->w.fd;

	if (c->flags & BW_CONN_DEAD)
		return;
	engine_queue_del(c);
	c->flags |= BW_CONN_DEAD;
	if (why != NULL && (c->flags & BW_CONN_QUIET))
		bw_debug("c%llu closed: %s", (unsigned long long)c->id, why);
	else if (why != NULL && c->own->tls != NULL &&
		 !(c->flags & (BW_CONN_TLS_UP | BW_CONN_PROXY_WAIT)))
		/* no request names anyone yet: the address says who stalled
		 * or sent garbage (docs/security.md) */
		bw_info("c%llu closed: %s (TLS handshake unfinished, peer %s)",
			(unsigned long long)c->id, why,
			c->peer[0] != '\0' ? c->peer : "-");
	else if (why != NULL)
		bw_info("c%llu closed: %s", (unsigned long long)c->id, why);
	/* the socket is closed below, and never duplicated */
	bw_loop_unwatch_closing(e->loop, &c->own->w);
	if (c->lis->svc->on_close != NULL && !(c->flags & BW_CONN_PROXY_WAIT))
		c->lis->svc->on_close(c);
	engine_tls_close(c);
	if (fd >= 0)
		close(fd);
	c->state = NULL;
	bw_buf_fini(&c->in);
	bw_buf_fini(&c->out);
	if (c->own->prev != NULL)
		c->own->prev->own->next = c->own->next;
	else
		e->conns = c->own->next;
	if (c->own->next != NULL)
		c->own->next->own->prev = c->own->prev;
	if (c->own->lprev != NULL)
		c->own->lprev->own->lnext = c->own->lnext;
	else
		c->lis->conns = c->own->lnext;
	if (c->own->lnext != NULL)
		c->own->lnext->own->lprev = c->own->lprev;
	c->lis->conns_n--;
	e->conns_n--;
	(void)bw_hash_del(&e->by_id, &c->id, sizeof(c->id));
	if (c->addr != NULL) {
		c->addr->conns--;
		if (c->lis->addr_slot >= 0)
			c->addr->held[c->lis->addr_slot]--;
		c->addr = NULL;
	}
	/* freed after this batch, so a caller up the stack, an event already
	 * fetched or a call deferred earlier never meets freed memory */
	conn_free_later(c);
}

int
bw_conn_dead(const struct bw_conn *c)
{
	return (c->flags & BW_CONN_DEAD) != 0;
}

uint64_t
bw_conn_opened_ms(const struct bw_conn *c)
{
	return c->own->opened_ms;
}

void
bw_conn_hold(struct bw_conn *c)
{
	c->own->refs++;
}

/* Runs after the callback that dropped the last hold: a close asked for
 * while a job held the connection can start now. */
static void
conn_released(struct bw_conn *c)
{
	if (c->flags & BW_CONN_DEAD || c->own->refs > 0)
		return;
	engine_conn_after_output(c);
	engine_conn_update(c);
}

void
bw_conn_release(struct bw_conn *c)
{
	if (--c->own->refs > 0)
		return;
	if (c->flags & BW_CONN_DEAD) {
		conn_free_later(c);
		return;
	}
	if (c->flags & BW_CONN_CLOSING)
		conn_schedule(c, CALL_RELEASED);
}

static void
conn_start_linger(struct bw_conn *c)
{
	c->flags |= BW_CONN_LINGER;
	/* a peer whose FIN was read sends nothing more: the close that
	 * follows (at once, or when the linger reads that end again) sends
	 * ours, and there is no input left for it to reset over */
	if (!(c->flags & BW_CONN_EOF)) {
		engine_tls_close(c); /* its close_notify first */
		(void)shutdown(c->own->w.fd, SHUT_WR);
	}
	c->own->deadline_ms = bw_now_ms() + LINGER_MS;
	c->req_deadline_ms = 0;
	bw_buf_reset(&c->in);
}

void
engine_conn_after_output(struct bw_conn *c)
{
	if (c->out.len > 0 || (c->flags & (BW_CONN_DEAD | BW_CONN_LINGER)))
		return;
	if ((c->flags & BW_CONN_CLOSING) && c->own->refs == 0)
		conn_start_linger(c);
}

void
bw_conn_close_later(struct bw_conn *c, const char *why)
{
	if (c->flags & (BW_CONN_DEAD | BW_CONN_FAILED))
		return;
	c->flags |= BW_CONN_FAILED;
	engine_queue_del(c);
	if (why != NULL)
		bw_info("c%llu closing: %s", (unsigned long long)c->id, why);
	conn_schedule(c, CALL_KILL);
	engine_conn_update(c);
}

void
bw_conn_finish(struct bw_conn *c)
{
	uint64_t until;

	if (c->flags & BW_CONN_DEAD)
		return;
	c->flags |= BW_CONN_CLOSING;
	/* last words the peer does not take do not hold the connection for
	 * the service's whole idle time */
	until = bw_now_ms() + BW_FINISH_MS;
	if (until < c->own->deadline_ms)
		c->own->deadline_ms = until;
	engine_conn_after_output(c);
	engine_conn_update(c);
}

void
bw_conn_proven(struct bw_conn *c)
{
	c->flags |= BW_CONN_PROVEN;
}

void
bw_conn_pause(struct bw_conn *c, int paused)
{
	if (paused)
		c->flags |= BW_CONN_PAUSED;
	else
		c->flags &= ~BW_CONN_PAUSED;
	engine_conn_update(c);
}

size_t
engine_conn_room(const struct bw_conn *c)
{
	size_t want = c->want ? c->want : ENGINE_DEFAULT_WANT;

	if (want > c->lis->cfg.lim.in_max)
		want = c->lis->cfg.lim.in_max;
	return want > c->in.len ? want - c->in.len : 0;
}

void
engine_conn_update(struct bw_conn *c)
{
	unsigned ev = 0;

	if (c->flags & (BW_CONN_DEAD))
		return;
	if (c->flags & BW_CONN_FAILED)
		ev = 0;
	else if (c->flags & BW_CONN_LINGER)
		ev = BW_EV_READ;
	else if (!(c->flags & (BW_CONN_PAUSED | BW_CONN_CLOSING)) &&
		 engine_conn_room(c) > 0 && c->out.len < OUT_HIGH_WATER)
		ev = BW_EV_READ;
	if ((c->flags & BW_CONN_BLOCKED) && !(c->flags & BW_CONN_FAILED))
		ev |= BW_EV_WRITE;
	if (bw_loop_update(c->eng->loop, &c->own->w, ev) != 0)
		bw_conn_close_later(c, "epoll update failed"); /* not inline */
	/* what a TLS session holds wakes no poll: read it after this batch */
	else if ((ev & BW_EV_READ) && !(c->flags & BW_CONN_LINGER) &&
		 c->own->tls != NULL && bw_tls_buffered(c->own->tls))
		bw_loop_call(c->eng->loop, &c->own->tls_call, conn_tls_held, c);
}

static void
conn_tls_held(void *arg)
{
	struct bw_conn *c = arg;

	/* a read event, as the loop would deliver it (conn_event.c) */
	if (!(c->flags & (BW_CONN_DEAD | BW_CONN_FAILED | BW_CONN_PAUSED |
			  BW_CONN_CLOSING | BW_CONN_LINGER)) &&
	    engine_conn_room(c) > 0)
		c->own->w.fn(c->own->w.arg, BW_EV_READ);
}

void
bw_conn_event(const struct bw_conn *c, enum bw_log_level level,
	      const char *event, const char *fmt, ...)
{
	char prefix[128];
	va_list ap;

	snprintf(prefix, sizeof(prefix), "conn=%llu peer=%s",
		 (unsigned long long)c->id, c->peer[0] != '\0' ? c->peer : "-");
	va_start(ap, fmt);
	bw_log_vevent(level, event, prefix, fmt, ap);
	va_end(ap);
}

void
engine_queue_add(struct bw_conn *c)
{
	struct bw_engine *e = c->eng;

	if (c->flags & BW_CONN_QUEUED)
		return;
	c->flags |= BW_CONN_QUEUED;
	c->own->qnext = NULL;
	c->own->qprev = e->queue_tail;
	if (e->queue_tail != NULL)
		e->queue_tail->own->qnext = c;
	else
		e->queue_head = c;
	e->queue_tail = c;
	e->queue_n++;
}

void
engine_queue_del(struct bw_conn *c)
{
	struct bw_engine *e = c->eng;

	if (!(c->flags & BW_CONN_QUEUED))
		return;
	c->flags &= ~BW_CONN_QUEUED;
	if (c->own->qprev != NULL)
		c->own->qprev->own->qnext = c->own->qnext;
	else
		e->queue_head = c->own->qnext;
	if (c->own->qnext != NULL)
		c->own->qnext->own->qprev = c->own->qprev;
	else
		e->queue_tail = c->own->qprev;
	c->own->qprev = c->own->qnext = NULL;
	e->queue_n--;
}

/* The most output c may hold at any moment. */
size_t
engine_out_hard(const struct bw_conn *c)
{
	size_t soft = c->lis->cfg.lim.out_max;

	return soft > SIZE_MAX / BW_OUT_HARD_FACTOR ? SIZE_MAX
						    : soft * BW_OUT_HARD_FACTOR;
}

void
engine_tls_close(struct bw_conn *c)
{
	if (c->own->tls == NULL)
		return;
	/* a last best-effort word: the peer can tell our end from a cut */
	if (c->flags & BW_CONN_TLS_UP) {
		size_t len;
		const uint8_t *p;

		bw_tls_close_notify(c->own->tls);
		if ((p = bw_tls_out(c->own->tls, &len)) != NULL && len > 0)
			(void)send(c->own->w.fd, p, len,
				   MSG_NOSIGNAL | MSG_DONTWAIT);
	}
	bw_tls_free(c->own->tls);
	c->own->tls = NULL;
	engine_tls_bulk_release(c);
	free(c->peer_key);
	c->peer_key = NULL;
	c->peer_key_len = 0;
}

int
engine_addr_full(struct bw_listener *l, const char *peer, struct bw_addr **addr)
{
	char text[BW_ADDR_TEXT];

	*addr = NULL;
	if (l->cfg.max_conns_per_addr == 0 || l->addr_slot < 0)
		return 0;
	bw_addr_of_peer(peer, text);
	/* an address the table has no room for is not counted: the peer
	 * already has that many addresses */
	*addr = bw_addrtab_get(&l->eng->addrs, text, bw_now_ms());
	return *addr != NULL &&
	       (*addr)->held[l->addr_slot] >= l->cfg.max_conns_per_addr;
}
