/* A connection's life on the engine: reading into its capped input buffer,
 * the service's callbacks, the pass's flush of queued output (the output
 * itself is conn_out.c's), holds by worker jobs, deadlines, lingering
 * closes, and the deferred close and free that keep every pointer valid
 * until the current callback has returned.
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
#define DEFAULT_WANT   2048u
#define LINGER_MS      2000u
#define LINGER_MAX     (1024u * 1024u)

static void conn_update(struct bw_conn *c);
static void conn_read(struct bw_conn *c);
static void conn_tls_held(void *arg);
static void conn_after_output(struct bw_conn *c);

/* Flushes c and runs what follows a write: the service's on_drained, the
 * close of a finished connection, the watch update. */
static void
conn_write(struct bw_conn *c)
{
	int had = c->out.len > 0, rc;

	if ((rc = engine_conn_flush(c)) != 0) {
		engine_conn_kill(c, bw_strerror(rc));
		return;
	}
	if (had && c->out.len == 0 && c->lis->svc->on_drained != NULL &&
	    !(c->flags & (BW_CONN_LINGER | BW_CONN_FAILED)))
		c->lis->svc->on_drained(c);
	if (c->flags & BW_CONN_DEAD)
		return;
	conn_after_output(c);
	conn_update(c);
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
			conn_write(c);
	}
	return e->queue_head != NULL;
}

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
	conn_after_output(c);
	conn_update(c);
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

static void
conn_after_output(struct bw_conn *c)
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
	conn_update(c);
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
	conn_after_output(c);
	conn_update(c);
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
	conn_update(c);
}

static size_t
conn_room(const struct bw_conn *c)
{
	size_t want = c->want ? c->want : DEFAULT_WANT;

	if (want > c->lis->cfg.lim.in_max)
		want = c->lis->cfg.lim.in_max;
	return want > c->in.len ? want - c->in.len : 0;
}

static void
conn_update(struct bw_conn *c)
{
	unsigned ev = 0;

	if (c->flags & (BW_CONN_DEAD))
		return;
	if (c->flags & BW_CONN_FAILED)
		ev = 0;
	else if (c->flags & BW_CONN_LINGER)
		ev = BW_EV_READ;
	else if (!(c->flags & (BW_CONN_PAUSED | BW_CONN_CLOSING)) &&
		 conn_room(c) > 0 && c->out.len < OUT_HIGH_WATER)
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
conn_input(struct bw_conn *c)
{
	int rc;

	if (c->flags &
	    (BW_CONN_DEAD | BW_CONN_PAUSED | BW_CONN_LINGER | BW_CONN_FAILED))
		return;
	rc = c->lis->svc->on_input(c);
	if (c->flags & BW_CONN_DEAD)
		return;
	if (rc < 0) {
		/* not inline: bw_conn_kick runs this under a service's caller
		 */
		bw_conn_close_later(c, bw_strerror(rc));
		return;
	}
	if (c->in.len == 0 && c->in.cap > DEFAULT_WANT * 2 &&
	    c->want <= DEFAULT_WANT)
		bw_buf_fini(&c->in); /* idle: keep idle connections small */
	conn_after_output(c);
	conn_update(c);
}

void
bw_conn_kick(struct bw_conn *c)
{
	conn_input(c);
}

/* The peer's FIN has been read. It is evidence that the peer has all the
 * output only if every byte queued was written and acknowledged by then:
 * a peer that closes with unread data resets instead, so a FIN with
 * nothing unacknowledged means it took everything. */
static void
conn_eof(struct bw_conn *c)
{
	size_t unacked = 1;

	if (c->flags & BW_CONN_EOF)
		return;
	c->flags |= BW_CONN_EOF;
	if (c->out.len == 0 && bw_net_unacked(c->own->w.fd, &unacked) == 0 &&
	    unacked == 0) {
		c->flags |= BW_CONN_EOF_ACKED;
		c->out_acked_total = c->out_total;
	}
}

static void
conn_linger_read(struct bw_conn *c)
{
	uint8_t scratch[4096];
	ssize_t n;

	n = recv(c->own->w.fd, scratch, sizeof(scratch), 0);
	if (n > 0 && c->in.off + (size_t)n < LINGER_MAX) {
		c->in.off += (size_t)n; /* counts bytes discarded */
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n == 0)
		conn_eof(c);
	engine_conn_kill(c, NULL);
}

static void
conn_read(struct bw_conn *c)
{
	size_t room = conn_room(c);
	const char *why;
	uint8_t *p;
	ssize_t n;

	if (room == 0)
		return;
	if ((p = bw_buf_reserve(&c->in, room)) == NULL) {
		engine_conn_kill(c, "out of memory");
		return;
	}
	n = engine_conn_recv(c, p, room, &why);
	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			engine_conn_kill(c, (c->flags & BW_CONN_PROXY_WAIT)
						    ? NULL /* a check's reset */
					    : why != NULL ? why
							  : strerror(errno));
		return;
	}
	if (n == 0 && (c->flags & BW_CONN_PROXY_WAIT)) {
		engine_conn_kill(c, NULL); /* a check that connects, closes */
		return;
	}
	if (n == 0) {
		/* Serve what arrived, then close once replies are out. */
		conn_eof(c);
		c->flags |= BW_CONN_CLOSING;
		conn_input(c);
		if (!(c->flags & (BW_CONN_DEAD | BW_CONN_FAILED)) &&
		    c->out.len == 0 && c->own->refs == 0)
			engine_conn_kill(c, c->lis->svc->busy != NULL &&
							    c->lis->svc->busy(c)
						    ? "peer closed mid-request"
						    : NULL);
		return;
	}
	bw_buf_commit(&c->in, (size_t)n);
	c->in_total += (uint64_t)n;
	c->own->last_read_n = (size_t)n;
	c->own->last_read_ms = bw_now_ms();
	c->own->deadline_ms = c->own->last_read_ms + c->lis->cfg.lim.idle_ms;
	/* The idle look asks whether the peer took output since its last sign
	 * of life, and input is one: what a block on output left as the mark
	 * is measured again now. Otherwise a peer that took a large reply long
	 * ago, then went quiet, was given a second idle time for it. Only a
	 * connection that has blocked pays for the system call. */
	if (c->own->unacked_seen != 0 &&
	    bw_net_unacked(c->own->w.fd, &c->own->unacked_seen) != 0)
		c->own->unacked_seen = 0;
	if (c->lis->cfg.proxy && c->eng->cfg.proxy_from.n > 0 &&
	    !engine_conn_proxy_input(c))
		return; /* the header is awaited, or c was closed for it */
	conn_input(c);
}

static void
conn_tls_held(void *arg)
{
	struct bw_conn *c = arg;

	if (!(c->flags & (BW_CONN_DEAD | BW_CONN_FAILED | BW_CONN_PAUSED |
			  BW_CONN_CLOSING | BW_CONN_LINGER)) &&
	    conn_room(c) > 0)
		conn_read(c);
}

/* The peer is gone (an error or a reset) while its reads were paused: what
 * it sent before and the socket still holds is read into c->in (up to the
 * input cap), so the service's on_close can still act on it (a chat
 * member's last lines). */
static void
conn_salvage(struct bw_conn *c)
{
	const char *why;
	size_t room;
	uint8_t *p;
	ssize_t n;

	while ((room = c->lis->cfg.lim.in_max - c->in.len) > 0 &&
	       (p = bw_buf_reserve(&c->in, room)) != NULL) {
		n = engine_conn_recv(c, p, room, &why);
		if (n <= 0)
			return;
		bw_buf_commit(&c->in, (size_t)n);
		c->in_total += (uint64_t)n;
	}
}

static void
on_conn_io(void *arg, unsigned events)
{
	struct bw_conn *c = arg;

	if (events & BW_EV_WRITE) {
		conn_write(c);
		if (c->flags & BW_CONN_DEAD)
			return;
	}
	if (c->flags & BW_CONN_FAILED)
		return;
	if (events & (BW_EV_READ | BW_EV_ERROR)) {
		if (c->flags & BW_CONN_LINGER)
			conn_linger_read(c);
		else if (!(c->flags & BW_CONN_PAUSED) && conn_room(c) > 0)
			conn_read(c);
		/* an error or a hang-up is reported whatever is watched: one
		 * nothing can be read for now (paused, or its input full)
		 * would come back every pass */
		else if (events & BW_EV_ERROR) {
			conn_salvage(c);
			engine_conn_kill(c, "connection error");
		}
	}
}

void
engine_conn_open(struct bw_listener *l, int fd, const char *peer, int proxied)
{
	struct bw_engine *e = l->eng;
	/* one allocation: the service's view first (freed through it) */
	struct conn_mem {
		struct bw_conn c;
		struct bw_conn_own own;
	} * m;
	struct bw_conn *c;
	uint64_t now = bw_now_ms();

	if ((m = calloc(1, sizeof(*m))) == NULL) {
		close(fd);
		return;
	}
	c = &m->c;
	c->own = &m->own;
	c->eng = e;
	c->lis = l;
	c->id = ++e->next_conn_id;
	snprintf(c->peer, sizeof(c->peer), "%s", peer);
	c->own->opened_ms = c->own->last_read_ms = now;
	bw_buf_init(&c->in, l->cfg.lim.in_max);
	bw_buf_init(&c->out, engine_out_hard(c));
	c->own->w.fd = fd;
	c->own->deadline_ms = now + l->cfg.lim.idle_ms;
	c->req_deadline_ms = now + l->cfg.lim.request_ms;
	if (engine_tls_open(c) != 0 ||
	    bw_hash_put(&e->by_id, &c->id, sizeof(c->id), c) != 0) {
		engine_tls_close(c);
		close(fd);
		free(c);
		return;
	}
	if (bw_loop_watch(e->loop, &c->own->w, fd, BW_EV_READ, on_conn_io, c) !=
	    0) {
		(void)bw_hash_del(&e->by_id, &c->id, sizeof(c->id));
		engine_tls_close(c);
		close(fd);
		free(c);
		return;
	}
	c->own->next = e->conns;
	if (e->conns != NULL)
		e->conns->own->prev = c;
	e->conns = c;
	c->own->lnext = l->conns;
	if (l->conns != NULL)
		l->conns->own->lprev = c;
	l->conns = c;
	e->conns_n++;
	l->conns_n++;
	l->accepted++;
	if (proxied) {
		/* neither counted for an address nor shown to the service
		 * before its header names the client */
		c->flags |= BW_CONN_PROXY_WAIT | BW_CONN_PROXIED;
		bw_debug("c%llu %s connection from %s (PROXY header awaited)",
			 (unsigned long long)c->id, l->name, peer);
		return;
	}
	engine_conn_start(c);
}

void
engine_conn_start(struct bw_conn *c)
{
	struct bw_listener *l = c->lis;
	char addr[BW_ADDR_TEXT];

	bw_addr_of_peer(c->peer, addr);
	if ((c->addr = bw_addrtab_get(&c->eng->addrs, addr, bw_now_ms())) !=
	    NULL) {
		c->addr->conns++;
		if (l->addr_slot >= 0)
			c->addr->held[l->addr_slot]++;
	}
	bw_debug("c%llu %s connection from %s", (unsigned long long)c->id,
		 l->name, c->peer);
	if (l->svc->on_open != NULL && l->svc->on_open(c) != 0)
		engine_conn_kill(c, "service refused the connection");
	else
		(void)engine_tls_addr_budget(c);
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
