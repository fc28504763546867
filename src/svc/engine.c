/* The connection engine: accept with a cap, read into capped buffers, hand
 * bytes to the service, queue replies and flush them once per loop pass,
 * enforce deadlines, and drain gracefully on SIGTERM/SIGINT.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bulwark/err.h"
#include "bulwark/log.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "svc/engine.h"

#define OUT_HIGH_WATER	(256u * 1024u) /* stop reading above this */
#define DEFAULT_WANT	2048u
#define LINGER_MS	2000u
#define LINGER_MAX	(1024u * 1024u)
#define ACCEPT_BATCH	64
#define TICK_MS		200u
#define ADDRS_CAP	65536u /* source addresses tracked at once */
#define EMFILE_PAUSE_MS 100u
#define EMFILE_WARN_MS	10000u
#define IDLE_OUT_CAP	(64u * 1024u) /* keep no more buffer when idle */

static void conn_kill(struct bw_conn *c, const char *why);
static void conn_update(struct bw_conn *c);
static void conn_after_output(struct bw_conn *c);

/* --- the output queue ----------------------------------------------------
 * Connections with output wait on one list and are flushed once per loop
 * pass (bw_loop_prepoll), so a callback that sends to a thousand members
 * costs a thousand appends and, later, one send() each. */

static void
queue_add(struct bw_conn *c)
{
	struct bw_engine *e = c->eng;

	if (c->flags & BW_CONN_QUEUED)
		return;
	c->flags |= BW_CONN_QUEUED;
	c->qnext = NULL;
	c->qprev = e->queue_tail;
	if (e->queue_tail != NULL)
		e->queue_tail->qnext = c;
	else
		e->queue_head = c;
	e->queue_tail = c;
	e->queue_n++;
}

static void
queue_del(struct bw_conn *c)
{
	struct bw_engine *e = c->eng;

	if (!(c->flags & BW_CONN_QUEUED))
		return;
	c->flags &= ~BW_CONN_QUEUED;
	if (c->qprev != NULL)
		c->qprev->qnext = c->qnext;
	else
		e->queue_head = c->qnext;
	if (c->qnext != NULL)
		c->qnext->qprev = c->qprev;
	else
		e->queue_tail = c->qprev;
	c->qprev = c->qnext = NULL;
	e->queue_n--;
}

/* Writes what the socket takes: 0 (c->out may still hold bytes, then c is
 * BLOCKED until the socket is writable) or -errno. */
static int
conn_flush(struct bw_conn *c)
{
	ssize_t n;

	c->flags &= ~BW_CONN_BLOCKED;
	while (c->out.len > 0) {
		n = send(c->w.fd, bw_buf_head(&c->out), c->out.len,
			 MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			c->flags |= BW_CONN_BLOCKED;
			return 0;
		}
		if (n < 0)
			return -errno;
		bw_buf_consume(&c->out, (size_t)n);
	}
	if (c->out.cap > IDLE_OUT_CAP)
		bw_buf_fini(&c->out); /* give back a big reply's memory */
	return 0;
}

/* Flushes c and runs what follows a write: the service's on_drained, the
 * close of a finished connection, the watch update. */
static void
conn_write(struct bw_conn *c)
{
	int had = c->out.len > 0, rc;

	if ((rc = conn_flush(c)) != 0) {
		conn_kill(c, bw_strerror(rc));
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
static int
flush_queue(void *arg)
{
	struct bw_engine *e = arg;
	uint64_t n = e->queue_n;
	struct bw_conn *c;

	while (n-- > 0 && (c = e->queue_head) != NULL) {
		queue_del(c);
		if (!(c->flags & (BW_CONN_DEAD | BW_CONN_FAILED)))
			conn_write(c);
	}
	return e->queue_head != NULL;
}

/* --- connections ---------------------------------------------------------
 */

static void
conn_free_deferred(void *arg)
{
	struct bw_conn *c = arg;

	if (c->refs == 0)
		free(c);
}

static void
conn_kill(struct bw_conn *c, const char *why)
{
	struct bw_engine *e = c->eng;
	int fd = c->w.fd;

	if (c->flags & BW_CONN_DEAD)
		return;
	queue_del(c);
	c->flags |= BW_CONN_DEAD;
	if (why != NULL)
		bw_info("c%llu closed: %s", (unsigned long long)c->id, why);
	bw_loop_unwatch(e->loop, &c->w);
	if (c->lis->svc->on_close != NULL)
		c->lis->svc->on_close(c);
	if (fd >= 0)
		close(fd);
	c->state = NULL;
	bw_buf_fini(&c->in);
	bw_buf_fini(&c->out);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		e->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->lis->conns_n--;
	e->conns_n--;
	if (c->addr != NULL) {
		c->addr->conns--;
		if (c->lis->cfg.evict_idle)
			c->addr->console_conns--;
		c->addr = NULL;
	}
	/* freed after this batch, so a caller up the stack, an event already
	 * fetched or a call deferred earlier never meets freed memory */
	if (c->refs == 0 && bw_loop_defer(e->loop, conn_free_deferred, c) != 0)
		c->refs = 0; /* leak rather than free under a live caller */
}

int
bw_conn_dead(const struct bw_conn *c)
{
	return (c->flags & BW_CONN_DEAD) != 0;
}

void
bw_conn_hold(struct bw_conn *c)
{
	c->refs++;
}

/* Runs after the callback that dropped the last hold: a close asked for
 * while a job held the connection can start now. */
static void
conn_released(void *arg)
{
	struct bw_conn *c = arg;

	if (c->flags & BW_CONN_DEAD || c->refs > 0)
		return;
	conn_after_output(c);
	conn_update(c);
}

void
bw_conn_release(struct bw_conn *c)
{
	if (--c->refs > 0)
		return;
	if (c->flags & BW_CONN_DEAD) {
		if (bw_loop_defer(c->eng->loop, conn_free_deferred, c) != 0)
			c->refs = 0; /* leaked: freeing it here is unsafe */
		return;
	}
	if ((c->flags & BW_CONN_CLOSING) &&
	    bw_loop_defer(c->eng->loop, conn_released, c) != 0)
		conn_released(c);
}

void
bw_conn_request_deadline(struct bw_conn *c, unsigned ms)
{
	c->req_deadline_ms = ms ? bw_now_ms() + ms : 0;
}

void
bw_conn_idle_deadline(struct bw_conn *c, unsigned ms)
{
	c->deadline_ms = bw_now_ms() + ms;
}

static void
conn_start_linger(struct bw_conn *c)
{
	c->flags |= BW_CONN_LINGER;
	(void)shutdown(c->w.fd, SHUT_WR);
	c->deadline_ms = bw_now_ms() + LINGER_MS;
	c->req_deadline_ms = 0;
	bw_buf_reset(&c->in);
}

static void
conn_after_output(struct bw_conn *c)
{
	if (c->out.len > 0 || (c->flags & (BW_CONN_DEAD | BW_CONN_LINGER)))
		return;
	if ((c->flags & BW_CONN_CLOSING) && c->refs == 0)
		conn_start_linger(c);
}

static void
conn_kill_later(void *arg)
{
	struct bw_conn *c = arg;

	if (!(c->flags & BW_CONN_DEAD))
		conn_kill(c, NULL);
}

void
bw_conn_close_later(struct bw_conn *c, const char *why)
{
	if (c->flags & (BW_CONN_DEAD | BW_CONN_FAILED))
		return;
	c->flags |= BW_CONN_FAILED;
	queue_del(c);
	if (why != NULL)
		bw_info("c%llu closing: %s", (unsigned long long)c->id, why);
	if (bw_loop_defer(c->eng->loop, conn_kill_later, c) != 0)
		c->deadline_ms = 0; /* the next tick closes it */
	conn_update(c);
}

int
bw_conn_send(struct bw_conn *c, const void *p, size_t n)
{
	if (c->flags & (BW_CONN_DEAD | BW_CONN_LINGER | BW_CONN_FAILED))
		return BW_ECLOSED;
	if (n == 0)
		return 0;
	if (n > c->lis->cfg.out_max - c->out.len) {
		bw_conn_close_later(c, "output over the connection's cap");
		return BW_ETOOBIG;
	}
	if (bw_buf_append(&c->out, p, n) != 0) {
		bw_conn_close_later(c, "out of memory for output");
		return BW_ENOMEM;
	}
	if (!(c->flags & BW_CONN_BLOCKED))
		queue_add(c); /* a blocked one is flushed when writable */
	return 0;
}

void
bw_conn_finish(struct bw_conn *c)
{
	if (c->flags & BW_CONN_DEAD)
		return;
	c->flags |= BW_CONN_CLOSING;
	conn_after_output(c);
	conn_update(c);
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

	if (want > c->lis->cfg.in_max)
		want = c->lis->cfg.in_max;
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
	if (bw_loop_update(c->eng->loop, &c->w, ev) != 0)
		conn_kill(c, "epoll update failed");
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
		conn_kill(c, bw_strerror(rc));
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

static void
conn_linger_read(struct bw_conn *c)
{
	uint8_t scratch[4096];
	ssize_t n;

	n = recv(c->w.fd, scratch, sizeof(scratch), 0);
	if (n > 0 && c->in.off + (size_t)n < LINGER_MAX) {
		c->in.off += (size_t)n; /* counts bytes discarded */
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	conn_kill(c, NULL);
}

static void
conn_read(struct bw_conn *c)
{
	size_t room = conn_room(c);
	uint8_t *p;
	ssize_t n;

	if (room == 0)
		return;
	if ((p = bw_buf_reserve(&c->in, room)) == NULL) {
		conn_kill(c, "out of memory");
		return;
	}
	n = recv(c->w.fd, p, room, 0);
	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			conn_kill(c, strerror(errno));
		return;
	}
	if (n == 0) {
		/* Serve what arrived, then close once replies are out. */
		c->flags |= BW_CONN_CLOSING;
		conn_input(c);
		if (!(c->flags & (BW_CONN_DEAD | BW_CONN_FAILED)) &&
		    c->out.len == 0 && c->refs == 0)
			conn_kill(c, c->lis->svc->busy != NULL &&
						     c->lis->svc->busy(c)
					     ? "peer closed mid-request"
					     : NULL);
		return;
	}
	bw_buf_commit(&c->in, (size_t)n);
	c->last_read_ms = bw_now_ms();
	c->deadline_ms = c->last_read_ms + c->lis->cfg.idle_ms;
	conn_input(c);
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
		else if (!(c->flags & BW_CONN_PAUSED))
			conn_read(c);
		else if (events & BW_EV_ERROR)
			conn_kill(c, "connection error");
	}
}

static void
conn_open(struct bw_listener *l, int fd, const char *peer)
{
	struct bw_engine *e = l->eng;
	struct bw_conn *c;
	char addr[BW_ADDR_TEXT];
	uint64_t now = bw_now_ms();

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		close(fd);
		return;
	}
	c->eng = e;
	c->lis = l;
	c->id = ++e->next_conn_id;
	snprintf(c->peer, sizeof(c->peer), "%s", peer);
	c->opened_ms = c->last_read_ms = now;
	bw_buf_init(&c->in, l->cfg.in_max);
	bw_buf_init(&c->out, l->cfg.out_max);
	c->w.fd = fd;
	c->deadline_ms = now + l->cfg.idle_ms;
	c->req_deadline_ms = now + l->cfg.request_ms;
	if (bw_loop_watch(e->loop, &c->w, fd, BW_EV_READ, on_conn_io, c) != 0) {
		close(fd);
		free(c);
		return;
	}
	c->next = e->conns;
	if (e->conns != NULL)
		e->conns->prev = c;
	e->conns = c;
	e->conns_n++;
	l->conns_n++;
	l->accepted++;
	bw_addr_of_peer(peer, addr);
	if ((c->addr = bw_addrtab_get(&e->addrs, addr, now)) != NULL) {
		c->addr->conns++;
		if (l->cfg.evict_idle)
			c->addr->console_conns++;
	}
	bw_debug("c%llu %s connection from %s", (unsigned long long)c->id,
		 l->name, peer);
	if (l->svc->on_open != NULL && l->svc->on_open(c) != 0)
		conn_kill(c, "service refused the connection");
}

/* Out of descriptors: the pending connection would make epoll report the
 * listener ready for ever (a busy loop). Give up the reserve descriptor to
 * accept it and close it at once, so the peer is told, and pause accepting
 * for a moment; warn once in a while with the count. */
static void
accept_exhausted(struct bw_listener *l)
{
	struct bw_engine *e = l->eng;
	uint64_t now = bw_now_ms();
	int fd;

	if (e->reserve_fd >= 0) {
		close(e->reserve_fd);
		e->reserve_fd = -1;
		if (bw_net_accept(l->fd, &fd, NULL, 0) == 0) {
			close(fd);
			l->refused++;
		}
		e->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	e->emfile_dropped++;
	l->paused_until_ms = now + EMFILE_PAUSE_MS;
	(void)bw_loop_update(e->loop, &l->w, 0);
	if (now - e->emfile_warn_ms >= EMFILE_WARN_MS) {
		e->emfile_warn_ms = now;
		bw_warn("%s: out of file descriptors (%llu open connections): "
			"refused %llu connection(s), accepting paused",
			l->name, (unsigned long long)e->conns_n,
			(unsigned long long)e->emfile_dropped);
		e->emfile_dropped = 0;
	}
}

/* The connection of l idle longest (no input for over a second), or NULL. */
static struct bw_conn *
longest_idle(struct bw_engine *e, struct bw_listener *l)
{
	struct bw_conn *c, *best = NULL;
	uint64_t now = bw_now_ms();

	for (c = e->conns; c != NULL; c = c->next) {
		if (c->lis != l || c->refs > 0 || now - c->last_read_ms < 1000)
			continue;
		if (best == NULL || c->last_read_ms < best->last_read_ms)
			best = c;
	}
	return best;
}

static void
on_accept(void *arg, unsigned events)
{
	struct bw_listener *l = arg;
	struct bw_engine *e = l->eng;
	struct bw_conn *victim;
	char peer[64];
	int fd, i, rc;
	static uint64_t last_warn_ms;

	(void)events;
	for (i = 0; i < ACCEPT_BATCH; i++) {
		rc = bw_net_accept(l->fd, &fd, peer, sizeof(peer));
		if (rc == -EAGAIN || rc == -EWOULDBLOCK)
			return;
		if (rc == -EMFILE || rc == -ENFILE) {
			accept_exhausted(l);
			return;
		}
		if (rc != 0)
			return;
		if (!e->stopping && l->conns_n >= l->cfg.max_conns &&
		    l->cfg.evict_idle && (victim = longest_idle(e, l)) != NULL)
			conn_kill(victim, "idle, closed to admit a new "
					  "connection");
		if (l->conns_n >= l->cfg.max_conns) {
			l->refused++;
			close(fd);
			if (bw_now_ms() - last_warn_ms > 5000) {
				last_warn_ms = bw_now_ms();
				bw_warn("%s: connection limit %u reached, "
					"refusing %s",
					l->name, l->cfg.max_conns, peer);
			}
			continue;
		}
		conn_open(l, fd, peer);
	}
}

/* --- lifecycle -----------------------------------------------------------
 */

/* Closes every listener (all = 1), or those whose service expects no more
 * requests on new connections. Returns how many stay open. */
static unsigned
close_listeners(struct bw_engine *e, int all)
{
	struct bw_listener *l;
	unsigned i, open_n = 0;

	for (i = 0; i < e->lis_n; i++) {
		l = &e->lis[i];
		if (l->fd < 0)
			continue;
		if (!all && l->svc->draining != NULL &&
		    l->svc->draining(l->inst)) {
			open_n++;
			continue;
		}
		bw_loop_unwatch(e->loop, &l->w);
		close(l->fd);
		l->fd = -1;
	}
	return open_n;
}

/* Resumes listeners paused for lack of descriptors. */
static void
resume_listeners(struct bw_engine *e, uint64_t now)
{
	unsigned i;

	for (i = 0; i < e->lis_n; i++) {
		if (e->lis[i].fd < 0 || e->lis[i].paused_until_ms == 0 ||
		    now < e->lis[i].paused_until_ms)
			continue;
		e->lis[i].paused_until_ms = 0;
		(void)bw_loop_update(e->loop, &e->lis[i].w, BW_EV_READ);
	}
}

static void
drain_idle(struct bw_engine *e)
{
	struct bw_conn *c, *next;

	for (c = e->conns; c != NULL; c = next) {
		next = c->next;
		if (c->refs > 0 || (c->flags & BW_CONN_LINGER))
			continue;
		if (c->lis->svc->busy != NULL && c->lis->svc->busy(c))
			continue;
		if (c->out.len > 0)
			bw_conn_finish(c);
		else
			conn_kill(c, NULL);
	}
}

static void
on_tick(void *arg)
{
	struct bw_engine *e = arg;
	struct bw_conn *c, *next;
	uint64_t now = bw_now_ms();
	unsigned listening = 0;

	resume_listeners(e, now);
	for (c = e->conns; c != NULL; c = next) {
		next = c->next;
		if (c->refs > 0)
			continue;
		if (now > c->deadline_ms)
			conn_kill(c,
				  (c->flags & (BW_CONN_LINGER | BW_CONN_FAILED))
					  ? NULL
					  : "timeout");
		else if (c->req_deadline_ms && now > c->req_deadline_ms)
			conn_kill(c, "request deadline passed");
	}
	if (!e->stopping) {
		bw_addrtab_sweep(&e->addrs, now);
		return;
	}
	if (now > e->stop_deadline_ms) {
		close_listeners(e, 1);
		for (c = e->conns; c != NULL; c = next) {
			next = c->next;
			conn_kill(c, "shutting down");
		}
	} else {
		listening = close_listeners(e, 0);
		drain_idle(e);
	}
	if (e->conns_n == 0 && listening == 0 && bw_loop_jobs(e->loop) == 0)
		bw_loop_stop(e->loop);
}

void
bw_engine_stop(struct bw_engine *e)
{
	if (e->stopping) {
		bw_info("second signal: closing every connection now");
		e->stop_deadline_ms = 0;
		return;
	}
	bw_info("shutting down (%llu connections, %u ms grace)",
		(unsigned long long)e->conns_n, e->cfg.shutdown_grace_ms);
	e->stopping = 1;
	e->stop_deadline_ms = bw_now_ms() + e->cfg.shutdown_grace_ms;
	close_listeners(e, 0);
	drain_idle(e);
}

static void
on_signal(void *arg, unsigned events)
{
	struct bw_engine *e = arg;
	struct signalfd_siginfo si;

	(void)events;
	if (read(e->sigfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return;
	bw_info("signal %u", si.ssi_signo);
	bw_engine_stop(e);
}

int
bw_engine_listen(struct bw_engine *e, const struct bw_service *svc, void *inst,
		 const struct bw_listen_cfg *cfg, struct bw_listener **out)
{
	struct bw_listener *l = &e->lis[e->lis_n];
	int rc;

	if (e->lis_n >= BW_MAX_LISTENERS || cfg->in_max == 0 ||
	    cfg->out_max == 0 || cfg->max_conns == 0)
		return BW_ECONFIG;
	memset(l, 0, sizeof(*l));
	l->svc = svc;
	l->inst = inst;
	l->cfg = *cfg;
	l->name = l->cfg.name[0] != '\0' ? l->cfg.name : svc->name;
	l->eng = e;
	if ((rc = bw_net_listen(cfg->addr, cfg->port, 1024, &l->fd,
				&l->port)) != 0) {
		bw_error("%s: cannot listen on %s:%u: %s", l->name, cfg->addr,
			 cfg->port, bw_strerror(rc));
		return rc;
	}
	if ((rc = bw_loop_watch(e->loop, &l->w, l->fd, BW_EV_READ, on_accept,
				l)) != 0) {
		close(l->fd);
		return rc;
	}
	e->lis_n++;
	bw_info("%s listening on %s:%u", l->name, cfg->addr, l->port);
	if (out != NULL)
		*out = l;
	return 0;
}

/* Many idle connections need many descriptors: use all the hard limit
 * allows. */
static void
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		bw_warn("cannot raise the open-file limit: %s",
			strerror(errno));
}

int
bw_engine_open(struct bw_engine *e, const struct bw_engine_cfg *cfg,
	       int signals)
{
	sigset_t mask;
	int rc;

	memset(e, 0, sizeof(*e));
	e->cfg = *cfg;
	e->sigfd = -1;
	e->reserve_fd = -1;
	raise_nofile();
	if ((rc = bw_addrtab_init(&e->addrs, ADDRS_CAP)) != 0)
		return rc;
	e->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (signals) {
		/* Block the signals before the workers start: threads
		 * inherit the mask, and one without it would take SIGTERM's
		 * default action. */
		sigemptyset(&mask);
		sigaddset(&mask, SIGTERM);
		sigaddset(&mask, SIGINT);
		if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0 ||
		    (e->sigfd = signalfd(-1, &mask,
					 SFD_NONBLOCK | SFD_CLOEXEC)) < 0)
			return -errno;
	}
	signal(SIGPIPE, SIG_IGN);
	if ((rc = bw_loop_new(&e->loop, cfg->workers)) != 0)
		return rc;
	bw_loop_prepoll(e->loop, flush_queue, e);
	if (e->sigfd >= 0 &&
	    (rc = bw_loop_watch(e->loop, &e->sig_w, e->sigfd, BW_EV_READ,
				on_signal, e)) != 0)
		return rc;
	return bw_loop_every(e->loop, TICK_MS, on_tick, e);
}

int
bw_engine_run(struct bw_engine *e)
{
	int rc = bw_loop_run(e->loop);

	bw_info("stopped");
	return rc;
}

void
bw_engine_close(struct bw_engine *e)
{
	struct bw_conn *c, *next;

	if (e->loop != NULL) {
		close_listeners(e, 1);
		for (c = e->conns; c != NULL; c = next) {
			next = c->next;
			conn_kill(c, NULL);
		}
	}
	bw_loop_free(e->loop); /* finishes queued jobs and deferred frees */
	e->loop = NULL;
	if (e->sigfd >= 0)
		close(e->sigfd);
	e->sigfd = -1;
	bw_addrtab_fini(&e->addrs);
	if (e->reserve_fd >= 0)
		close(e->reserve_fd);
	e->reserve_fd = -1;
}
