/* A connection's events, at the top of the connection files: it is opened
 * and started here, and what the loop reports (readable, writable, an
 * error) is read, handed to its service, or written (conn_out.c). Below
 * it, and never calling up to it: conn_io.c (the socket and its TLS),
 * conn_proxy.c (a balancer's header), conn_out.c (output), conn_watch.c
 * (arrivals and idleness), and conn.c (the lifecycle beneath them all).
 */
#include <errno.h>
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

#define LINGER_MAX (1024u * 1024u) /* input a lingering close discards */

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
	if (c->in.len == 0 && c->in.cap > ENGINE_DEFAULT_WANT * 2 &&
	    c->want <= ENGINE_DEFAULT_WANT)
		bw_buf_fini(&c->in); /* idle: keep idle connections small */
	engine_conn_after_output(c);
	engine_conn_update(c);
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
	size_t room = engine_conn_room(c);
	const char *why;
	uint8_t *p;
	ssize_t n;
	int rc;

	if (room == 0)
		return;
	if ((p = bw_buf_reserve(&c->in, room)) == NULL) {
		engine_conn_kill(c, "out of memory");
		return;
	}
	n = engine_conn_recv(c, p, room, &why);
	if (n < 0) {
		if (errno == ECONNRESET)
			c->flags |= BW_CONN_PEER_RESET;
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
	if (c->lis->cfg.proxy && c->eng->cfg.proxy_from.n > 0) {
		rc = engine_conn_proxy_input(c);
		if (rc == 0)
			return; /* the header is awaited, or c was closed */
		if (rc == 2) {
			engine_conn_start(c); /* the client's now */
			if (bw_conn_dead(c))
				return;
		}
	}
	conn_input(c);
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
		if (n < 0 && errno == ECONNRESET)
			c->flags |= BW_CONN_PEER_RESET;
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
		engine_conn_write(c);
		if (c->flags & BW_CONN_DEAD)
			return;
	}
	if (c->flags & BW_CONN_FAILED)
		return;
	if (events & (BW_EV_READ | BW_EV_ERROR)) {
		if (c->flags & BW_CONN_LINGER)
			conn_linger_read(c);
		else if (!(c->flags & BW_CONN_PAUSED) &&
			 engine_conn_room(c) > 0)
			conn_read(c);
		/* an error or a hang-up is reported whatever is watched: one
		 * nothing can be read for now (paused, or its input full)
		 * would come back every pass */
		else if (events & BW_EV_ERROR) {
			int err = 0;
			socklen_t len = sizeof(err);

			conn_salvage(c);
			if (getsockopt(c->own->w.fd, SOL_SOCKET, SO_ERROR, &err,
				       &len) == 0 &&
			    err == ECONNRESET)
				c->flags |= BW_CONN_PEER_RESET;
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
