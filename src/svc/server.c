/* The connection engine: accept with a cap, read into capped buffers, hand
 * bytes to the service, flush replies, enforce deadlines, and drain
 * gracefully on SIGTERM/SIGINT.
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
#include "bulwark/fsutil.h"
#include "bulwark/log.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "svc/server.h"

#define IN_MAX		(1024u * 1024u) /* hard cap of a connection's input */
#define OUT_MAX		(16u * 1024u * 1024u)
#define OUT_HIGH_WATER	(256u * 1024u) /* stop reading above this */
#define DEFAULT_WANT	2048u
#define LINGER_MS	2000u
#define LINGER_MAX	(1024u * 1024u)
#define ACCEPT_BATCH	64
#define TICK_MS		200u
#define ADDRS_CAP	65536u /* source addresses tracked at once */
#define EMFILE_PAUSE_MS 100u
#define EMFILE_WARN_MS	10000u

static void conn_kill(struct bw_conn *c, const char *why);
static void conn_update(struct bw_conn *c);
static void conn_after_output(struct bw_conn *c);

void
bw_server_cfg_defaults(struct bw_server_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->data_dir, sizeof(cfg->data_dir), ".");
	snprintf(cfg->listen_addr, sizeof(cfg->listen_addr), "0.0.0.0");
	cfg->port = 1357;
	cfg->max_conns = 16000;
	cfg->max_file_size = 0xFFFFFEF0u;
	cfg->max_uploads = 256;
	cfg->max_uploads_per_addr = 128;
	cfg->min_rate = 1024;
	cfg->key_lifetime_s = 3600;
	cfg->key_failures = 3;
	cfg->max_reg_per_min = 1000;
	cfg->max_clients = 1000000;
	cfg->timeout_ms = 30000;
	cfg->request_timeout_ms = 10000;
	cfg->shutdown_grace_ms = 10000;
	cfg->workers = 2;
	cfg->console_enabled = 1;
	snprintf(cfg->console_addr, sizeof(cfg->console_addr), "127.0.0.1");
	cfg->console_port = 8820;
	cfg->console_max_conns = 128;
}

/* --- connections -------------------------------------------------------- */

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
	struct bw_server *s = c->srv;
	int fd = c->w.fd;

	if (c->flags & BW_CONN_DEAD)
		return;
	c->flags |= BW_CONN_DEAD;
	if (why != NULL)
		bw_info("c%llu closed: %s", (unsigned long long)c->id, why);
	bw_loop_unwatch(s->loop, &c->w);
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
		s->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->lis->conns_n--;
	s->conns_n--;
	if (c->addr != NULL) {
		c->addr->conns--;
		if (c->lis->svc->evict_idle)
			c->addr->console_conns--;
		c->addr = NULL;
	}
	if (c->refs == 0 && bw_loop_defer(s->loop, conn_free_deferred, c) != 0)
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
 * while a job held the connection can start now. A connection killed in
 * between has its free deferred after this call. */
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
		/* freed after this batch, like every connection, so a call
		 * deferred earlier never meets freed memory */
		if (bw_loop_defer(c->srv->loop, conn_free_deferred, c) != 0)
			free(c);
		return;
	}
	if ((c->flags & BW_CONN_CLOSING) &&
	    bw_loop_defer(c->srv->loop, conn_released, c) != 0)
		conn_released(c);
}

void
bw_conn_request_deadline(struct bw_conn *c, unsigned ms)
{
	c->req_deadline_ms = ms ? bw_now_ms() + ms : 0;
}

static int
conn_flush(struct bw_conn *c)
{
	ssize_t n;

	while (c->out.len > 0) {
		n = send(c->w.fd, bw_buf_head(&c->out), c->out.len,
			 MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n < 0)
			return -errno;
		bw_buf_consume(&c->out, (size_t)n);
	}
	if (c->out.cap > 64 * 1024)
		bw_buf_fini(&c->out); /* give back a big reply's memory */
	return 0;
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
	if (c->out.len > 0 || (c->flags & BW_CONN_DEAD))
		return;
	if (c->lis->svc->on_drained != NULL && !(c->flags & BW_CONN_LINGER))
		c->lis->svc->on_drained(c);
	if ((c->flags & BW_CONN_CLOSING) && !(c->flags & BW_CONN_LINGER) &&
	    c->out.len == 0 && c->refs == 0)
		conn_start_linger(c);
}

/* A send failed: the connection closes now that its caller has returned.
 * A connection killed meanwhile has its free deferred after this call. */
static void
conn_kill_failed(void *arg)
{
	struct bw_conn *c = arg;

	if (!(c->flags & BW_CONN_DEAD))
		conn_kill(c, NULL);
}

int
bw_conn_send(struct bw_conn *c, const void *p, size_t n)
{
	int rc;

	if (c->flags & (BW_CONN_DEAD | BW_CONN_LINGER | BW_CONN_FAILED))
		return BW_ECLOSED;
	if ((rc = bw_buf_append(&c->out, p, n)) != 0)
		return rc;
	if ((rc = conn_flush(c)) != 0) {
		/* never close under the caller (it may be looping over its
		 * state): stop all I/O and close after this callback */
		c->flags |= BW_CONN_FAILED;
		bw_info("c%llu send failed: %s", (unsigned long long)c->id,
			bw_strerror(rc));
		if (bw_loop_defer(c->srv->loop, conn_kill_failed, c) != 0)
			c->deadline_ms = 0; /* the next tick closes it */
		conn_update(c);
		return rc;
	}
	conn_update(c);
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

	if (want > IN_MAX)
		want = IN_MAX;
	return want > c->in.len ? want - c->in.len : 0;
}

static void
conn_update(struct bw_conn *c)
{
	unsigned ev = 0;

	if (c->flags & BW_CONN_DEAD)
		return;
	if (c->flags & BW_CONN_FAILED)
		ev = 0;
	else if (c->flags & BW_CONN_LINGER)
		ev = BW_EV_READ;
	else if (!(c->flags & (BW_CONN_PAUSED | BW_CONN_CLOSING)) &&
		 conn_room(c) > 0 && c->out.len < OUT_HIGH_WATER)
		ev = BW_EV_READ;
	if (c->out.len > 0 && !(c->flags & BW_CONN_FAILED))
		ev |= BW_EV_WRITE;
	if (bw_loop_update(c->srv->loop, &c->w, ev) != 0)
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
		if (!(c->flags & BW_CONN_DEAD) && c->out.len == 0 &&
		    c->refs == 0)
			conn_kill(c, c->lis->svc->busy != NULL &&
						     c->lis->svc->busy(c)
					     ? "peer closed mid-request"
					     : NULL);
		return;
	}
	bw_buf_commit(&c->in, (size_t)n);
	c->last_read_ms = bw_now_ms();
	c->deadline_ms = c->last_read_ms + c->srv->cfg.timeout_ms;
	conn_input(c);
}

static void
on_conn_io(void *arg, unsigned events)
{
	struct bw_conn *c = arg;
	int rc;

	if (events & BW_EV_WRITE) {
		if ((rc = conn_flush(c)) != 0) {
			conn_kill(c, bw_strerror(rc));
			return;
		}
		conn_after_output(c);
		conn_update(c);
		if (c->flags & BW_CONN_DEAD)
			return;
	}
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
	struct bw_server *s = l->srv;
	struct bw_conn *c;
	char addr[BW_ADDR_TEXT];
	uint64_t now = bw_now_ms();

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		close(fd);
		return;
	}
	c->srv = s;
	c->lis = l;
	c->id = ++s->next_conn_id;
	snprintf(c->peer, sizeof(c->peer), "%s", peer);
	c->opened_ms = c->last_read_ms = now;
	bw_buf_init(&c->in, IN_MAX);
	bw_buf_init(&c->out, OUT_MAX);
	c->w.fd = fd;
	c->deadline_ms = now + s->cfg.timeout_ms;
	c->req_deadline_ms = now + s->cfg.request_timeout_ms;
	if (bw_loop_watch(s->loop, &c->w, fd, BW_EV_READ, on_conn_io, c) != 0) {
		close(fd);
		free(c);
		return;
	}
	c->next = s->conns;
	if (s->conns != NULL)
		s->conns->prev = c;
	s->conns = c;
	s->conns_n++;
	l->conns_n++;
	l->accepted++;
	bw_addr_of_peer(peer, addr);
	if ((c->addr = bw_addrtab_get(&s->addrs, addr, now)) != NULL) {
		c->addr->conns++;
		if (l->svc->evict_idle)
			c->addr->console_conns++;
	}
	bw_debug("c%llu %s connection from %s", (unsigned long long)c->id,
		 l->svc->name, peer);
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
	struct bw_server *s = l->srv;
	uint64_t now = bw_now_ms();
	int fd;

	if (s->reserve_fd >= 0) {
		close(s->reserve_fd);
		s->reserve_fd = -1;
		if (bw_net_accept(l->fd, &fd, NULL, 0) == 0) {
			close(fd);
			l->refused++;
		}
		s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	s->emfile_dropped++;
	l->paused_until_ms = now + EMFILE_PAUSE_MS;
	(void)bw_loop_update(s->loop, &l->w, 0);
	if (now - s->emfile_warn_ms >= EMFILE_WARN_MS) {
		s->emfile_warn_ms = now;
		bw_warn("%s: out of file descriptors (%llu open connections): "
			"refused %llu connection(s), accepting paused",
			l->svc->name, (unsigned long long)s->conns_n,
			(unsigned long long)s->emfile_dropped);
		s->emfile_dropped = 0;
	}
}

/* The connection of l idle longest (no input for over a second), or NULL. */
static struct bw_conn *
longest_idle(struct bw_server *s, struct bw_listener *l)
{
	struct bw_conn *c, *best = NULL;
	uint64_t now = bw_now_ms();

	for (c = s->conns; c != NULL; c = c->next) {
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
	struct bw_server *s = l->srv;
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
		if (!s->stopping && l->conns_n >= l->max_conns &&
		    l->svc->evict_idle && (victim = longest_idle(s, l)) != NULL)
			conn_kill(victim, "idle, closed to admit a new "
					  "connection");
		if (l->conns_n >= l->max_conns) {
			l->refused++;
			close(fd);
			if (bw_now_ms() - last_warn_ms > 5000) {
				last_warn_ms = bw_now_ms();
				bw_warn("%s: connection limit %u reached, "
					"refusing %s",
					l->svc->name, l->max_conns, peer);
			}
			continue;
		}
		conn_open(l, fd, peer);
	}
}

/* --- lifecycle ---------------------------------------------------------- */

/* Closes every listener (all = 1), or those whose service expects no more
 * requests on new connections. Returns how many stay open. */
static unsigned
close_listeners(struct bw_server *s, int all)
{
	unsigned i, open_n = 0;

	for (i = 0; i < s->lis_n; i++) {
		if (s->lis[i].fd < 0)
			continue;
		if (!all && s->lis[i].svc->draining != NULL &&
		    s->lis[i].svc->draining(s)) {
			open_n++;
			continue;
		}
		bw_loop_unwatch(s->loop, &s->lis[i].w);
		close(s->lis[i].fd);
		s->lis[i].fd = -1;
	}
	return open_n;
}

/* Resumes listeners paused for lack of descriptors. */
static void
resume_listeners(struct bw_server *s, uint64_t now)
{
	unsigned i;

	for (i = 0; i < s->lis_n; i++) {
		if (s->lis[i].fd < 0 || s->lis[i].paused_until_ms == 0 ||
		    now < s->lis[i].paused_until_ms)
			continue;
		s->lis[i].paused_until_ms = 0;
		(void)bw_loop_update(s->loop, &s->lis[i].w, BW_EV_READ);
	}
}

static void
drain_idle(struct bw_server *s)
{
	struct bw_conn *c, *next;

	for (c = s->conns; c != NULL; c = next) {
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
	struct bw_server *s = arg;
	struct bw_conn *c, *next;
	uint64_t now = bw_now_ms();
	unsigned listening = 0;

	resume_listeners(s, now);
	for (c = s->conns; c != NULL; c = next) {
		next = c->next;
		if (c->refs > 0)
			continue;
		if (now > c->deadline_ms)
			conn_kill(c, (c->flags & BW_CONN_LINGER) ? NULL
								 : "timeout");
		else if (c->req_deadline_ms && now > c->req_deadline_ms)
			conn_kill(c, "request deadline passed");
	}
	if (!s->stopping) {
		bw_addrtab_sweep(&s->addrs, now);
		return;
	}
	if (now > s->stop_deadline_ms) {
		close_listeners(s, 1);
		for (c = s->conns; c != NULL; c = next) {
			next = c->next;
			conn_kill(c, "shutting down");
		}
	} else {
		listening = close_listeners(s, 0);
		drain_idle(s);
	}
	if (s->conns_n == 0 && listening == 0 && bw_loop_jobs(s->loop) == 0)
		bw_loop_stop(s->loop);
}

static void
on_signal(void *arg, unsigned events)
{
	struct bw_server *s = arg;
	struct signalfd_siginfo si;

	(void)events;
	if (read(s->sigfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return;
	if (s->stopping) {
		bw_info("second signal: closing every connection now");
		s->stop_deadline_ms = 0;
		return;
	}
	bw_info("signal %u: shutting down (%llu connections, %u ms grace)",
		si.ssi_signo, (unsigned long long)s->conns_n,
		s->cfg.shutdown_grace_ms);
	s->stopping = 1;
	s->stop_deadline_ms = bw_now_ms() + s->cfg.shutdown_grace_ms;
	close_listeners(s, 0);
	drain_idle(s);
}

static int
add_listener(struct bw_server *s, const struct bw_service *svc,
	     const char *addr, uint16_t port, unsigned max_conns)
{
	struct bw_listener *l = &s->lis[s->lis_n];
	int rc;

	if (s->lis_n >= BW_MAX_LISTENERS)
		return BW_ECONFIG;
	memset(l, 0, sizeof(*l));
	l->svc = svc;
	l->srv = s;
	l->max_conns = max_conns;
	if ((rc = bw_net_listen(addr, port, 1024, &l->fd, &l->port)) != 0) {
		bw_error("%s: cannot listen on %s:%u: %s", svc->name, addr,
			 port, bw_strerror(rc));
		return rc;
	}
	if ((rc = bw_loop_watch(s->loop, &l->w, l->fd, BW_EV_READ, on_accept,
				l)) != 0) {
		close(l->fd);
		return rc;
	}
	s->lis_n++;
	bw_info("%s listening on %s:%u", svc->name, addr, l->port);
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
bw_server_open(struct bw_server *s, const struct bw_server_cfg *cfg)
{
	char path[4096 + 64];
	sigset_t mask;
	int rc;

	memset(s, 0, sizeof(*s));
	s->cfg = *cfg;
	s->sigfd = -1;
	s->reserve_fd = -1;
	s->started_s = bw_time_s();
	raise_nofile();
	if ((rc = bw_addrtab_init(&s->addrs, ADDRS_CAP)) != 0)
		return rc;
	s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	snprintf(path, sizeof(path), "%s/defensive.db", cfg->data_dir);
	if ((rc = bw_store_open(&s->store, path)) != 0) {
		bw_error("cannot open database %s: %s", path, bw_strerror(rc));
		return rc;
	}
	if ((rc = bw_registry_open(&s->reg, s->store, cfg->data_dir)) != 0) {
		bw_error("cannot load database %s: %s", path, bw_strerror(rc));
		return rc;
	}
	bw_info("loaded %llu clients and %llu files from %s",
		(unsigned long long)s->reg.clients_n,
		(unsigned long long)s->reg.files_n, path);
	if ((rc = bw_vault_open(s)) != 0)
		return rc;
	/* Block the signals before the workers start: threads inherit the
	 * mask, and one without it would take SIGTERM's default action. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0 ||
	    (s->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) < 0)
		return -errno;
	signal(SIGPIPE, SIG_IGN);
	if ((rc = bw_loop_new(&s->loop, cfg->workers)) != 0)
		return rc;
	if ((rc = add_listener(s, &bw_vault_service, cfg->listen_addr,
			       cfg->port, cfg->max_conns)) != 0)
		return rc;
	if (cfg->console_enabled &&
	    (rc = add_listener(s, &bw_console_service, cfg->console_addr,
			       cfg->console_port, cfg->console_max_conns)) != 0)
		return rc;
	if ((rc = bw_loop_watch(s->loop, &s->sig_w, s->sigfd, BW_EV_READ,
				on_signal, s)) != 0)
		return rc;
	return bw_loop_every(s->loop, TICK_MS, on_tick, s);
}

int
bw_server_run(struct bw_server *s)
{
	int rc = bw_loop_run(s->loop);

	bw_info("stopped");
	return rc;
}

void
bw_server_close(struct bw_server *s)
{
	struct bw_conn *c, *next;

	close_listeners(s, 1);
	if (s->loop != NULL) {
		for (c = s->conns; c != NULL; c = next) {
			next = c->next;
			conn_kill(c, NULL);
		}
	}
	bw_loop_free(s->loop); /* finishes queued jobs first */
	s->loop = NULL;
	if (s->sigfd >= 0)
		close(s->sigfd);
	bw_vault_close(s);
	bw_registry_close(&s->reg);
	bw_store_close(s->store);
	s->store = NULL;
	bw_addrtab_fini(&s->addrs);
	if (s->reserve_fd >= 0)
		close(s->reserve_fd);
	s->reserve_fd = -1;
}
